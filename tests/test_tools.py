"""A pruned model drops into users' pipelines: the common torch tools work on it as on the original.

For a pruned CNN and a pruned small transformer (token ids and a mask, batch and sequence
dynamic), each tool is called the way deployment scripts call it, and its result must
match the pruned model in PyTorch at another batch size than the example's:
torch.onnx.export with dynamo=False, input names and `dynamic_axes` (no output names: the
call that failed with "'Graph' object has no attribute 'outputs'") and with dynamo=True and
`dynamic_shapes`, both run in ONNX Runtime; torch.jit.trace; torch.compile; torch.export;
state_dict save/load; and the pickled model (torch.save / torch.load), which must still
export.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import call, randomize, with_batch

import graphprune
from fixtures.archs import build as build_cnn
from graphprune.rewrite.pruned import PrunedModule
from models.text_classifier import TextClassifier
from models.text_classifier import example as text_example


def small_text() -> TextClassifier:
    """The reference text classifier at a size that exports in seconds (one layer, width 32)."""
    return TextClassifier(vocab=1000, max_len=32, d_model=32, heads=2, ff=64, layers=1).eval()


def _example(kind: str, batch: int):
    if kind == "cnn":
        return (torch.randn(batch, 3, 8, 8, generator=torch.Generator().manual_seed(batch)),)
    ex = text_example(batch, 12)
    return (ex["input_ids"], ex["attention_mask"])


@pytest.fixture(scope="module", params=["cnn", "transformer"])
def pruned(request):
    """(kind, pruned model) pruned at ratio 0.4 from an example of batch 2."""
    torch.manual_seed(0)
    model = randomize(build_cnn()) if request.param == "cnn" else small_text()
    out, report = graphprune.shrink(model, _example(request.param, 2), 0.4)
    assert report.macs_after < report.macs_before
    return request.param, out


def _names(kind: str) -> list[str]:
    return ["x"] if kind == "cnn" else ["input_ids", "attention_mask"]


def _axes(kind: str) -> dict:
    return {n: ({0: "batch"} if kind == "cnn" else {0: "batch", 1: "sequence"}) for n in _names(kind)}


def _close(got, want) -> None:
    want = want.detach().numpy() if isinstance(want, torch.Tensor) else want
    got = got.detach().numpy() if isinstance(got, torch.Tensor) else got
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(want).max())))


def _ort(path: Path, kind: str, inputs: tuple) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: x.numpy() for i, x in zip(sess.get_inputs(), inputs, strict=True)}
    return sess.run(None, feeds)[0]


def test_pruned_model_is_a_graph_module(pruned):
    _, model = pruned
    assert isinstance(model, PrunedModule) and isinstance(model, torch.fx.GraphModule)


def test_torchscript_onnx_export_with_dynamic_axes(pruned, tmp_path):
    kind, model = pruned
    path = tmp_path / "ts.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, _example(kind, 2), str(path), dynamo=False, input_names=_names(kind),
                          dynamic_axes=_axes(kind))
    other = _example(kind, 3)
    _close(_ort(path, kind, other), call(model, other))


def test_dynamo_onnx_export_with_dynamic_shapes(pruned, tmp_path):
    kind, model = pruned
    path = tmp_path / "dynamo.onnx"
    dims = {0: torch.export.Dim.AUTO} if kind == "cnn" else {0: torch.export.Dim.AUTO, 1: torch.export.Dim.AUTO}
    shapes = {n: dims for n in _names(kind)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, _example(kind, 2), str(path), dynamo=True, dynamic_shapes=shapes, verbose=False)
    other = _example(kind, 3)
    _close(_ort(path, kind, other), call(model, other))


def test_jit_trace(pruned):
    kind, model = pruned
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, _example(kind, 2))
    other = _example(kind, 3)
    _close(call(traced, other), call(model, other))


def test_torch_compile(pruned):
    kind, model = pruned
    compiled = torch.compile(model, backend="aot_eager")
    other = _example(kind, 3)
    _close(call(compiled, other), call(model, other))


def test_torch_export_with_a_dynamic_batch(pruned):
    kind, model = pruned
    batch = torch.export.Dim("batch", min=1, max=64)
    shapes = {n: {0: batch} for n in _names(kind)}
    program = torch.export.export(model, _example(kind, 2), dynamic_shapes=shapes)
    other = _example(kind, 5)
    _close(call(program.module(), other), call(model, other))


def test_state_dict_round_trip(pruned, tmp_path):
    kind, model = pruned
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    fresh = torch.load(_saved(model, tmp_path), weights_only=False)
    with torch.no_grad():
        for p in fresh.parameters():
            p.zero_()
    fresh.load_state_dict(torch.load(tmp_path / "sd.pt", weights_only=True))
    assert fresh.state_dict().keys() == model.state_dict().keys()
    other = _example(kind, 3)
    _close(call(fresh, other), call(model, other))


def _saved(model, tmp_path: Path) -> Path:
    torch.save(model, tmp_path / "model.pt")
    return tmp_path / "model.pt"


def test_pickled_model_reloads_as_pruned_and_still_exports(pruned, tmp_path):
    kind, model = pruned
    loaded = torch.load(_saved(model, tmp_path), weights_only=False)
    assert isinstance(loaded, PrunedModule)
    assert loaded.meta.get("graphprune_dynamic_batch") == model.meta.get("graphprune_dynamic_batch")
    path = tmp_path / "reloaded.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(loaded, _example(kind, 2), str(path), dynamo=False, input_names=_names(kind),
                          dynamic_axes=_axes(kind))
    other = with_batch(_example(kind, 2), 4)
    _close(_ort(path, kind, other), call(model, other))

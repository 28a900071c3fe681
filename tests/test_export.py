"""Stage 5, export: the ONNX model matches PyTorch in ONNX Runtime, takes any batch, and a failure writes nothing."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn
from torch.utils import _pytree as pytree

from graphprune.errors import ExportError, InputError
from graphprune.onnx import files, signature
from graphprune.onnx.export import export_onnx


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(x), 1))


class KeywordNet(nn.Module):
    """Keyword inputs, a non-tensor constant and a nested output structure."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor, *, mask: torch.Tensor, scale: float = 1.0) -> dict:
        feat = self.conv(x).mean((2, 3)) * mask
        return {"logits": self.head(feat) * scale, "feat": [feat]}


class FixedBatch(nn.Module):
    """Reshapes with a literal batch of 2: correct at batch 2 only."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(2, -1) * 2.0


class TokenNet(nn.Module):
    """Token ids and a mask, [batch, sequence]: embedding, masked mean over tokens, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 8)
        self.pos = nn.Parameter(torch.randn(16, 8))
        self.head = nn.Linear(8, 3)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.embed(input_ids) + self.pos[: input_ids.shape[1]]
        mask = attention_mask.unsqueeze(-1).to(x.dtype)
        return self.head((x * mask).sum(1) / mask.sum(1))


class FixedLength(TokenNet):
    """Flattens tokens into features: correct at the example's sequence length only."""

    def __init__(self, length: int) -> None:
        super().__init__()
        self.head = nn.Linear(8 * length, 3)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.embed(input_ids) * attention_mask.unsqueeze(-1)
        return self.head(x.reshape(x.shape[0], -1))


def _tokens(batch: int, length: int) -> dict:
    ids = torch.randint(0, 50, (batch, length), generator=torch.Generator().manual_seed(length))
    mask = torch.ones_like(ids)
    mask[:, length - 1:] = 0 if length > 2 else 1
    return {"input_ids": ids, "attention_mask": mask}


@pytest.fixture(scope="module")
def net() -> ConvNet:
    torch.manual_seed(0)
    model = ConvNet().eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so a wrong fold would show
        model.features[1].running_mean.uniform_(-1, 1)
        model.features[1].running_var.uniform_(0.5, 2)
    return model


def _run(path: Path, feeds: dict) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def _close(got: np.ndarray, want: torch.Tensor, atol: float = 1e-4) -> None:
    want = want.detach().numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=atol * max(1.0, float(np.abs(want).max())))


def test_conv_model_matches_pytorch_and_takes_any_batch(tmp_path: Path, net: ConvNet) -> None:
    path = tmp_path / "net.onnx"
    result = export_onnx(net, (torch.randn(2, 3, 16, 16),), None, path)
    assert result.path == path and path.is_file()
    assert result.exporter == "dynamo" and result.dynamic_batch
    assert result.max_abs_error <= 1e-4 * max(1.0, result.output_scale)
    assert result.file_size_bytes == path.stat().st_size
    assert result.input_names == ("input_0",) and result.output_names == ("output",)
    x3 = torch.randn(3, 3, 16, 16)
    (got,) = _run(path, {"input_0": x3.numpy()})
    _close(got, net(x3))
    assert [p.name for p in tmp_path.iterdir()] == ["net.onnx"]  # the staging folder is gone


def test_graph_module_from_torch_export(tmp_path: Path, net: ConvNet) -> None:
    x = torch.randn(2, 3, 16, 16)
    gm = torch.export.export(net, (x,), strict=False).module()
    result = export_onnx(gm, (x,), None, tmp_path / "gm.onnx")
    assert result.dynamic_batch and result.max_rel_error <= 1e-4
    x3 = torch.randn(3, 3, 16, 16)
    (got,) = _run(result.path, {"input_0": x3.numpy()})
    _close(got, net(x3))  # gm's own guards pin batch 2, so the eager model is the batch-3 oracle


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_keyword_inputs_constants_and_nested_outputs(tmp_path: Path, exporter: str) -> None:
    torch.manual_seed(1)
    model = KeywordNet().eval()
    kwargs = {"mask": torch.rand(2, 8), "scale": 3.0}
    result = export_onnx(model, (torch.randn(2, 3, 8, 8),), kwargs, tmp_path / "kw.onnx", exporters=(exporter,))
    assert result.exporter == exporter
    assert result.input_names == ("input_0", "mask")
    assert result.output_names == ("output_logits", "output_feat_0")
    x3, mask3 = torch.randn(3, 3, 8, 8), torch.rand(3, 8)
    got = _run(result.path, {"input_0": x3.numpy(), "mask": mask3.numpy()})
    want = pytree.tree_leaves(model(x3, mask=mask3, scale=3.0))
    for g, w in zip(got, want, strict=True):
        _close(g, w)


def test_broken_parity_raises_and_leaves_old_file_alone(tmp_path: Path, net: ConvNet, monkeypatch: pytest.MonkeyPatch) -> None:
    real = signature.run_reference

    def shifted(model: nn.Module, args: tuple, kwargs: dict) -> object:
        return pytree.tree_map(lambda t: t + 0.5 if isinstance(t, torch.Tensor) else t, real(model, args, kwargs))

    monkeypatch.setattr(signature, "run_reference", shifted)
    path = tmp_path / "net.onnx"
    path.write_bytes(b"previous export")
    with pytest.raises(ExportError, match="differs from PyTorch"):
        export_onnx(net, (torch.randn(2, 3, 16, 16),), None, path, exporters=("torchscript",))
    assert path.read_bytes() == b"previous export"
    assert [p.name for p in tmp_path.iterdir()] == ["net.onnx"]


def test_exporter_crash_leaves_no_partial_file(tmp_path: Path, net: ConvNet, monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(model: nn.Module, args: tuple, f: str, **kwargs: object) -> None:
        Path(f).write_bytes(b"half a model")
        raise RuntimeError("exporter crashed mid-write")

    monkeypatch.setattr(torch.onnx, "export", crash)
    with pytest.raises(ExportError, match="crashed mid-write"):
        export_onnx(net, (torch.randn(2, 3, 16, 16),), None, tmp_path / "net.onnx")
    assert list(tmp_path.iterdir()) == []


def test_batch_baked_into_the_graph_is_caught(tmp_path: Path) -> None:
    """Rule: a model whose batch is baked in never gets a dynamic-batch ONNX file: strictly it is
    refused (no file); by default it is exported with the fixed batch and the result says so."""
    x = torch.randn(2, 3, 4)
    with pytest.raises(ExportError, match="dynamic_batch=False"):
        export_onnx(FixedBatch(), (x,), None, tmp_path / "fixed.onnx", static_fallback=False)
    assert list(tmp_path.iterdir()) == []
    fallback = export_onnx(FixedBatch(), (x,), None, tmp_path / "fixed.onnx")
    assert not fallback.dynamic_batch
    assert any("fixed batch" in note for note in fallback.notes)
    fallback.path.unlink()
    result = export_onnx(FixedBatch(), (x,), None, tmp_path / "fixed.onnx", dynamic_batch=False, exporters=("torchscript",))
    assert not result.dynamic_batch
    assert _run(result.path, {"input_0": x.numpy()})[0].shape == (2, 12)


def test_simplifier_failure_keeps_the_unsimplified_model(
    tmp_path: Path, net: ConvNet, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import onnxsim

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("simplifier bug")

    monkeypatch.setattr(onnxsim, "simplify", broken)
    with caplog.at_level(logging.WARNING, logger="graphprune.onnx.export"):
        result = export_onnx(net, (torch.randn(2, 3, 16, 16),), None, tmp_path / "net.onnx", exporters=("torchscript",))
    assert result.simplified is False and result.path.is_file()
    assert "simplifier bug" in caplog.text


def test_large_models_use_external_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files, "PROTO_LIMIT", 0)  # every model counts as over the 2 GiB limit
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU()).eval()  # a 16 KB weight: over onnx's 1 KB external-data floor
    path = tmp_path / "mlp.onnx"
    result = export_onnx(model, (torch.randn(2, 64),), None, path, exporters=("torchscript",))
    data = tmp_path / "mlp.onnx.data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlp.onnx", "mlp.onnx.data"]
    assert result.file_size_bytes == path.stat().st_size + data.stat().st_size
    x = torch.randn(4, 64)
    _close(_run(path, {"input_0": x.numpy()})[0], model(x))


def test_bad_requests_are_input_errors(tmp_path: Path, net: ConvNet) -> None:
    x = torch.randn(2, 3, 16, 16)
    with pytest.raises(InputError, match="unknown exporters"):
        export_onnx(net, (x,), None, tmp_path / "n.onnx", exporters=("tflite",))
    with pytest.raises(InputError, match="does not exist"):
        export_onnx(net, (x,), None, tmp_path / "missing" / "n.onnx")
    with pytest.raises(InputError, match="no tensor"):
        export_onnx(net, (3,), None, tmp_path / "n.onnx")


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_token_inputs_keep_batch_and_sequence_dynamic(tmp_path: Path, exporter: str) -> None:
    """Exported from one sentence of 6 tokens, the ONNX model takes 3 sentences of 11."""
    torch.manual_seed(0)
    model = TokenNet().eval()
    result = export_onnx(model, (), _tokens(1, 6), tmp_path / "tokens.onnx", exporters=(exporter,))
    assert result.exporter == exporter and result.dynamic_batch and result.dynamic_sequence
    shapes = {i.name: i.shape for i in ort.InferenceSession(str(result.path)).get_inputs()}
    assert shapes == {"input_ids": ["batch", "sequence"], "attention_mask": ["batch", "sequence"]}
    other = _tokens(3, 11)
    (got,) = _run(result.path, {k: v.numpy() for k, v in other.items()})
    _close(got, model(**other))


def test_a_length_the_model_needs_stays_fixed(tmp_path: Path) -> None:
    """A model that flattens its tokens exports with the example's length (batch still dynamic)."""
    model = FixedLength(6).eval()
    result = export_onnx(model, (), _tokens(2, 6), tmp_path / "fixed.onnx")
    assert result.dynamic_batch and not result.dynamic_sequence
    (got,) = _run(result.path, {k: v.numpy() for k, v in _tokens(4, 6).items()})
    _close(got, model(**_tokens(4, 6)))

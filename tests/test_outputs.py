"""What the CLI writes: every file of an output appears together or not at all, nothing is lost.

* ONNX models over the protobuf limit keep their weights in OUTPUT.data: `export` and
  `shrink --onnx` move the .onnx and its .data together, and the result loads from another
  folder (the limit is patched to 0 so a tiny model takes that path).
* `shrink -o model.pt2` writes a torch.export program that reloads with torch.export.load and
  runs at another batch size (and sequence length for token inputs).
* An unexpected exception, even one with an empty message, ends in one `error:` line, exit
  code 2 and no file; `--verbose` adds the traceback.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import call
from typer.testing import CliRunner

import graphprune
from fixtures.archs import build
from fixtures.cli_cases import SHAPE
from graphprune.cli import app
from graphprune.onnx import files
from graphprune.onnx.files import onnx_files
from models.text_classifier import TextClassifier
from models.text_classifier import example as text_example


def small_text() -> TextClassifier:
    """The reference text classifier at a size that exports in seconds (one layer, width 32)."""
    return TextClassifier(vocab=1000, max_len=32, d_model=32, heads=2, ff=64, layers=1).eval()


@pytest.fixture
def folder(tmp_path):
    torch.manual_seed(0)
    torch.save(build(), tmp_path / "m.pt")
    return tmp_path


def names(path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def _runs_elsewhere(onnx_file, tmp_path) -> np.ndarray:
    """Move the ONNX files to another folder and run them there (the .data must come along)."""
    other = tmp_path / "elsewhere"
    other.mkdir()
    for file in onnx_files(onnx_file):
        shutil.move(file, other / file.name)
    sess = ort.InferenceSession(str(other / onnx_file.name), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: np.ones((3, 3, 8, 8), np.float32)})[0]


def test_export_writes_onnx_and_data_together(folder, monkeypatch):
    monkeypatch.setattr(files, "PROTO_LIMIT", 0)  # every model counts as over the 2 GiB limit
    result = CliRunner().invoke(app, ["export", str(folder / "m.pt"), *SHAPE, "-o", str(folder / "m.onnx")])
    assert result.exit_code == 0, result.output
    assert names(folder) == ["m.onnx", "m.onnx.data", "m.pt"]
    assert [p.name for p in onnx_files(folder / "m.onnx")] == ["m.onnx", "m.onnx.data"]
    want = torch.load(folder / "m.pt", weights_only=False)(torch.ones(3, 3, 8, 8)).detach().numpy()
    np.testing.assert_allclose(_runs_elsewhere(folder / "m.onnx", folder), want, rtol=1e-4, atol=1e-4)


def test_export_force_replaces_onnx_and_data(folder, monkeypatch):
    monkeypatch.setattr(files, "PROTO_LIMIT", 0)
    (folder / "m.onnx").write_text("old model")
    (folder / "m.onnx.data").write_text("old weights")
    refused = CliRunner().invoke(app, ["export", str(folder / "m.pt"), *SHAPE, "-o", str(folder / "m.onnx")])
    assert refused.exit_code == 2 and (folder / "m.onnx.data").read_text() == "old weights"
    result = CliRunner().invoke(app, ["export", str(folder / "m.pt"), *SHAPE, "-o", str(folder / "m.onnx"), "--force"])
    assert result.exit_code == 0, result.output
    assert (folder / "m.onnx.data").read_bytes() != b"old weights"
    assert names(folder) == ["m.onnx", "m.onnx.data", "m.pt"]


def test_shrink_onnx_keeps_the_data_file(folder, monkeypatch):
    monkeypatch.setattr(files, "PROTO_LIMIT", 0)
    result = CliRunner().invoke(app, ["shrink", str(folder / "m.pt"), *SHAPE, "--ratio", "0.5", "--onnx"])
    assert result.exit_code == 0, result.output
    assert names(folder) == ["m.pruned.json", "m.pruned.onnx", "m.pruned.onnx.data", "m.pruned.pt", "m.pt"]
    report = json.loads((folder / "m.pruned.json").read_text())
    assert report["onnx"]["pruned"]["path"] == str(folder / "m.pruned.onnx")
    pruned = torch.load(folder / "m.pruned.pt", weights_only=False)
    want = pruned(torch.ones(3, 3, 8, 8)).detach().numpy()
    np.testing.assert_allclose(_runs_elsewhere(folder / "m.pruned.onnx", folder), want, rtol=1e-4, atol=1e-4)


def test_shrink_writes_a_program_that_runs_at_another_batch(folder):
    for out in ("m.pt2", "same.pt"):  # the same run, saved as a program and as a pickle
        result = CliRunner().invoke(app, ["shrink", str(folder / "m.pt"), *SHAPE, "--ratio", "0.5", "-o", str(folder / out)])
        assert result.exit_code == 0, result.output
    assert names(folder) == ["m.json", "m.pt", "m.pt2", "same.json", "same.pt"]
    program = torch.export.load(str(folder / "m.pt2"))
    expected = torch.load(folder / "same.pt", weights_only=False)
    x = torch.randn(5, 3, 8, 8)
    torch.testing.assert_close(program.module()(x), call(expected, x))
    report = json.loads((folder / "m.json").read_text())
    assert sum(p.numel() for p in program.module().parameters()) == report["params_after"]


def test_program_of_a_token_model_keeps_batch_and_sequence_dynamic(tmp_path):
    from graphprune.io.program import export_program

    pruned, _ = graphprune.shrink(small_text(), text_example(1, 8), 0.3)
    program = export_program(pruned, (), text_example(1, 8))
    path = tmp_path / "text.pt2"
    torch.export.save(program, str(path))
    other = text_example(3, 13)
    torch.testing.assert_close(torch.export.load(str(path)).module()(**other), call(pruned, other))


@pytest.mark.parametrize("verbose", [False, True])
def test_unexpected_exception_with_empty_message_is_one_line(folder, monkeypatch, verbose):
    def broken(*args, **kwargs):
        raise RuntimeError()  # no message: str(exc) is ''

    monkeypatch.setattr(graphprune.api, "shrink", broken)
    result = CliRunner().invoke(app, ["shrink", str(folder / "m.pt"), *SHAPE, *(["--verbose"] if verbose else [])])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "unexpected RuntimeError" in errors[0] and "--verbose" in errors[0]
    assert ("Traceback" in result.output) is verbose
    assert names(folder) == ["m.pt"]

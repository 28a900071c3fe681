"""The `graphprune` command line: refused inputs give exit code 2, one clear line and no
files; good inputs write the pruned model and its JSON report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import ROOT, count_params
from typer.testing import CliRunner

from fixtures.archs import TinyNet, build
from fixtures.cli_cases import BAD, CASES, Case, make_files
from fixtures.cli_cases import SHAPE as _SHAPE
from graphprune.cli import app

GRAPHPRUNE = Path(sys.executable).parent / "graphprune"
SHAPE = list(_SHAPE)


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def files(tmp_path):
    """A tiny conv model in every format the CLI is asked to read (and some it must refuse)."""
    return make_files(tmp_path)


def listing(folder: Path) -> dict:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


def _param(case: Case):
    marks = []
    if case.bug:
        marks.append(pytest.mark.xfail(strict=True, reason=case.bug))
    if case.non_root:
        marks.append(pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions"))
    return pytest.param(case.name, marks=marks)


@pytest.mark.parametrize("case", [_param(c) for c in sorted(CASES, key=lambda c: c.name)])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(case, files, runner, monkeypatch):
    """Rule: a refused input exits with code 2, prints one `error:` line naming the cause,
    no traceback, and leaves the folder exactly as it was. The commands run inside the folder,
    as a user types them (fixtures/cli_cases.py)."""
    argv, words = BAD[case].argv, BAD[case].words
    monkeypatch.chdir(files)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the CLI puts the folder on sys.path
    before = listing(files)
    result = runner.invoke(app, list(argv))
    assert result.exit_code == 2, result.output
    lines = error_lines(result.output)
    assert len(lines) == 1, result.output
    assert all(w in lines[0] for w in words), lines[0]
    assert "Traceback" not in result.output
    assert listing(files) == before


def test_shrink_writes_model_and_report(files, runner):
    """Rule: shrink writes MODEL.pruned.pt and MODEL.pruned.json; the JSON has the counts,
    the MAC ratio and the decisions, and the pruned file loads and runs at another batch size."""
    result = runner.invoke(app, ["shrink", str(files / "m.pt"), *SHAPE, "--ratio", "0.5"])
    assert result.exit_code == 0, result.output
    assert (files / "m.pruned.pt").is_file() and (files / "m.pruned.json").is_file()
    report = json.loads((files / "m.pruned.json").read_text())
    assert report["params_after"] < report["params_before"] == count_params(build())
    assert 0 < report["macs_ratio"] < 1
    assert any(d["removed"] > 0 for d in report["decisions"])
    pruned = torch.load(files / "m.pruned.pt", weights_only=False)
    assert count_params(pruned) == report["params_after"]
    assert pruned(torch.randn(3, 3, 8, 8)).shape == (3, 4, 8, 8)
    assert not [p for p in files.iterdir() if p.name.endswith(".tmp")]


def test_shrink_with_onnx_writes_all_three_outputs(files, runner):
    """Rule: shrink --onnx writes the model, the report and a parity-checked ONNX file (dynamic
    batch) that ONNX Runtime runs; no temporary file or folder is left, files are not private."""
    import onnxruntime as ort

    result = runner.invoke(app, ["shrink", str(files / "m.pt"), *SHAPE, "--ratio", "0.5", "--onnx"])
    assert result.exit_code == 0, result.output
    onnx_file = files / "m.pruned.onnx"
    report = json.loads((files / "m.pruned.json").read_text())
    assert report["onnx"]["pruned"]["max_abs_error"] <= 1e-4 and "staged" not in report["onnx"]
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: torch.randn(3, 3, 8, 8).numpy()})
    assert out.shape == (3, 4, 8, 8)
    assert not [p for p in files.iterdir() if p.name.startswith(".")]
    assert all(p.stat().st_mode & 0o044 for p in (onnx_file, files / "m.pruned.pt", files / "m.pruned.json"))


def test_shrink_ratio_zero_keeps_outputs(files, runner):
    """Rule: --ratio 0 writes a model with the same parameters and outputs as the input."""
    result = runner.invoke(app, ["shrink", str(files / "m.pt"), *SHAPE, "--ratio", "0", "-o", str(files / "same.pt")])
    assert result.exit_code == 0, result.output
    original = torch.load(files / "m.pt", weights_only=False)
    same = torch.load(files / "same.pt", weights_only=False)
    x = torch.randn(2, 3, 8, 8)
    assert count_params(same) == count_params(original)
    with torch.no_grad():
        torch.testing.assert_close(same(x), original(x))


def test_force_replaces_an_existing_output(files, runner):
    """Rule: with --force an existing output (not the input) is replaced by the pruned model."""
    out = files / "list.pt"
    result = runner.invoke(app, ["shrink", str(files / "m.pt"), *SHAPE, "-o", str(out), "--force"])
    assert result.exit_code == 0, result.output
    assert isinstance(torch.load(out, weights_only=False), torch.nn.Module)


def test_inspect_prints_groups(files, runner):
    """Rule: inspect lists the prunable groups and why others are frozen, writes nothing, exits 0."""
    before = listing(files)
    result = runner.invoke(app, ["inspect", str(files / "m.pt"), *SHAPE])
    assert result.exit_code == 0, result.output
    assert "features.0" in result.output and "features.3" in result.output
    assert "model input" in result.output and "model output" in result.output
    assert "dynamic batch: True" in result.output
    assert listing(files) == before


def test_help_warns_that_pickles_run_code(runner):
    """Rule: --help says that loading a pickled module runs code from the file."""
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "pickled module" in text and "RUNS CODE" in text
    assert "--safe" in text


def test_arch_factory_with_state_dict(files):
    """Rule: `--arch fixtures.archs:build` with a state_dict works from the project folder (the
    CLI puts the current folder on sys.path), in a fresh process, in safe mode."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = files / "arch.pt"
    proc = subprocess.run(
        [str(GRAPHPRUNE), "shrink", str(files / "sd.pt"), "--arch", "fixtures.archs:build", *SHAPE, "--safe", "-o", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    pruned = torch.load(out, weights_only=False)
    assert count_params(pruned) < count_params(TinyNet())
    assert pruned(torch.randn(2, 3, 8, 8)).shape == (2, 4, 8, 8)
    assert (files / "arch.json").is_file()


def test_subprocess_bad_input_exit_code(files):
    """Rule: the installed `graphprune` script exits 2 with one error line on stderr."""
    proc = subprocess.run([str(GRAPHPRUNE), "shrink", str(files / "sd.pt"), *SHAPE], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert len(error_lines(proc.stderr)) == 1 and "--arch" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.fixture
def pt2(tmp_path):
    """TinyNet saved with torch.export.save (exported once per session by fixtures/cli_cases.py)."""
    return make_files(tmp_path) / "m.pt2"


def test_pt2_loads_and_shrinks_with_its_own_example(pt2, runner):
    """Rule: a .pt2 from torch.export.save loads (no code runs) and shrinks with the example
    inputs stored in the program when no --input-shape is given."""
    result = runner.invoke(app, ["shrink", str(pt2), "--ratio", "0.5"])
    assert result.exit_code == 0, result.output
    pruned = torch.load(pt2.with_name("m.pruned.pt"), weights_only=False)
    assert pruned(torch.randn(2, 3, 8, 8)).shape == (2, 4, 8, 8)
    assert json.loads(pt2.with_name("m.pruned.json").read_text())["params_after"] < count_params(build())


def test_pt2_inspect(pt2, runner):
    """Rule: inspect reads a .pt2 and lists its groups."""
    result = runner.invoke(app, ["inspect", str(pt2)])
    assert result.exit_code == 0, result.output
    assert "features.0" in result.output


def test_output_named_json_does_not_lose_the_model(files, runner):
    """Rule: whatever -o is, the CLI never reports success while the model file holds
    something else (it must refuse the name or keep the model)."""
    out = files / "pruned.json"
    result = runner.invoke(app, ["shrink", str(files / "m.pt"), *SHAPE, "-o", str(out)])
    if result.exit_code == 0:
        assert zipfile.is_zipfile(out), out.read_bytes()[:40]
        assert isinstance(torch.load(out, weights_only=False), torch.nn.Module)
    else:
        assert result.exit_code == 2 and not out.exists()

"""The data-driven CLI: `shrink --target-macs/--threshold --criterion C --data D` and `eval`.

Rules: a budget lands within 2% through the CLI and the report says what was reached, with which
criterion and loss; bad data or options give exit 2, one `error:` line, and no file written; `eval`
figures equal an independent computation.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from graphprune.cli import app
from models.tabular import DigitsResNet


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli_data")
    torch.manual_seed(0)
    model = DigitsResNet(width=16).eval()
    torch.save(model, d / "m.pt")
    x, y = torch.rand(48, 1, 8, 8), torch.randint(0, 10, (48,))
    np.savez(d / "train.npz", x=x.numpy(), y=y.numpy())
    np.savez(d / "bad_shape.npz", x=np.random.rand(8, 3, 8, 8))
    np.savez(d / "bad_labels.npz", x=x.numpy()[:8], y=np.arange(8) + 5)
    np.savez(d / "empty.npz", x=np.zeros((0, 1, 8, 8)))
    return d


def listing(d: Path) -> dict:
    return {p.name: p.stat().st_mtime_ns for p in d.iterdir()}


def run(folder: Path, *argv: str):
    return CliRunner().invoke(app, [str(a).replace("{d}", str(folder)) for a in argv])


def test_shrink_to_a_macs_budget_with_a_data_criterion(folder):
    out = folder / "taylor.pt"
    result = run(folder, "shrink", "{d}/m.pt", "--input-shape", "1,1,8,8", "--target-macs", "0.5", "--criterion",
                 "taylor", "--data", "{d}/train.npz", "-o", str(out), "--force")
    assert result.exit_code == 0, result.output
    report = json.loads(out.with_suffix(".json").read_text())
    assert abs(report["budget"]["achieved"] / 0.5 - 1) <= 0.02
    assert report["calibration"]["criterion"] == "taylor" and "labels" in report["calibration"]["loss"]
    steps = {s["step"]: s for s in report["fidelity"]["steps"]}  # each judged on held-out data
    assert (steps["BatchNorm re-estimation"]["outcome"] == "kept") == ("recalibrated_batches" in report["calibration"])
    assert report["fidelity"]["held_out"]["samples"] > 0
    assert [c["check"] for c in report["checks"]] == ["runs", "dead channels"]
    if not report["fidelity"]["floor"]["used"]:
        assert sum(a["chosen"] for a in report["allocation"]) == 1
        assert report["reconstruction"] and all(r["after"] <= r["before"] for r in report["reconstruction"])
    pruned = torch.load(out, weights_only=False)
    assert pruned(torch.rand(3, 1, 8, 8)).shape == (3, 10)


def test_no_reconstruct_refits_nothing(folder):
    out = folder / "plain.pt"
    result = run(folder, "shrink", "{d}/m.pt", "--input-shape", "1,1,8,8", "--target-macs", "0.5", "--data",
                 "{d}/train.npz", "--no-reconstruct", "-o", str(out), "--force")
    assert result.exit_code == 0, result.output
    assert json.loads(out.with_suffix(".json").read_text())["reconstruction"] == []


def test_threshold_through_the_cli(folder):
    out = folder / "sigma.pt"
    result = run(folder, "shrink", "{d}/m.pt", "--input-shape", "1,1,8,8", "--threshold", "sigma:0.5", "--global",
                 "-o", str(out), "--force")
    assert result.exit_code == 0, result.output
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["macs_ratio"] < 1.0 and report["options"]["threshold"] == "sigma:0.5"


@pytest.mark.parametrize("extra,words", [
    (("--data", "{d}/bad_shape.npz"), "size 3 on dim 1"),
    (("--data", "{d}/bad_labels.npz"), "outside the model's 10 classes"),
    (("--data", "{d}/empty.npz"), "no samples"),
    (("--data", "{d}/missing.npz"), "no such file"),
    (("--criterion", "magic"), "unknown criterion"),
    (("--criterion", "taylor"), "pass --data"),
    (("--target-macs", "0"), "outside (0, 1)"),
    (("--target-macs", "1.5"), "outside (0, 1)"),
    (("--target-params", "0.5", "--target-macs", "0.5"), "one budget"),
    (("--threshold", "median"), "threshold"),
])
def test_bad_data_and_options_exit_2_with_one_line_and_write_nothing(folder, extra, words):
    before = listing(folder)
    result = run(folder, "shrink", "{d}/m.pt", "--input-shape", "1,1,8,8", "-o", "{d}/never.pt", *extra)
    assert result.exit_code == 2, result.output
    errors = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and words in result.output.replace("\n", " "), result.output
    assert "Traceback" not in result.output
    assert listing(folder) == before


def test_eval_matches_an_independent_computation(folder):
    first = run(folder, "shrink", "{d}/m.pt", "--input-shape", "1,1,8,8", "--ratio", "0.5", "-o", "{d}/half.pt", "--force")
    assert first.exit_code == 0, first.output
    result = run(folder, "eval", "{d}/m.pt", "{d}/half.pt", "--data", "{d}/train.npz", "--json", "{d}/eval.json", "--force")
    assert result.exit_code == 0, result.output
    rows = json.loads((folder / "eval.json").read_text())["models"]
    z = np.load(folder / "train.npz")
    x, y = torch.from_numpy(z["x"]).float(), torch.from_numpy(z["y"])
    original, half = torch.load(folder / "m.pt", weights_only=False), torch.load(folder / "half.pt", weights_only=False)
    with torch.no_grad():
        a, b = original(x), half(x)
    assert rows[0]["accuracy"] == pytest.approx(float((a.argmax(1) == y).float().mean()))
    assert rows[1]["top1_agreement"] == pytest.approx(float((a.argmax(1) == b.argmax(1)).float().mean()))
    assert rows[1]["params"] < rows[0]["params"] and rows[1]["macs"] < rows[0]["macs"]
    assert rows[0]["loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(a, y)), rel=1e-5)
    again = run(folder, "eval", "{d}/m.pt", "--data", "{d}/train.npz", "--json", "{d}/eval.json")
    assert again.exit_code == 2 and "exists" in again.output
    onto_input = run(folder, "eval", "{d}/m.pt", "--data", "{d}/train.npz", "--json", "{d}/m.pt", "--force")
    assert onto_input.exit_code == 2 and "overwrite the input" in onto_input.output

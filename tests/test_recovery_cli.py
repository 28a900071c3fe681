"""`graphprune finetune` from the command line: the happy path writes OUT atomically and leaves
the input alone; refused inputs exit 2 with one line; Ctrl-C exits 130 keeping the checkpoint,
and --resume finishes the run with the weights of an uninterrupted one."""

from __future__ import annotations

import json

import pytest
import torch
from recovery_models import ConvBNDrop, images, npz, pruned_pair
from typer.testing import CliRunner

import graphprune.recovery.loop as loop
from graphprune.cli import app

SHAPE = ["--input-shape", "1,1,8,8"]


@pytest.fixture
def folder(tmp_path, monkeypatch):
    torch.manual_seed(0)
    original, pruned = pruned_pair(ConvBNDrop(), torch.randn(2, 1, 8, 8))
    torch.save(pruned, tmp_path / "pruned.pt")
    torch.save(original, tmp_path / "original.pt")
    x, y = images(64)
    npz(tmp_path / "train.npz", x, y)
    npz(tmp_path / "unlabelled.npz", x)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def invoke(*args):
    return CliRunner().invoke(app, ["finetune", *args])


def errors(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


def test_happy_path(folder):
    before = (folder / "pruned.pt").read_bytes()
    res = invoke("pruned.pt", "--data", "train.npz", "--teacher", "original.pt", "--epochs", "2", *SHAPE)
    assert res.exit_code == 0, res.output
    assert "accuracy" in res.output and "wrote pruned.finetuned.pt" in res.output
    model = torch.load(folder / "pruned.finetuned.pt", weights_only=False)
    assert model(torch.randn(3, 1, 8, 8)).shape == (3, 4)
    assert (folder / "pruned.pt").read_bytes() == before
    assert not (folder / "pruned.finetuned.pt.ckpt").exists()  # removed once the output is written
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no staging files left


def test_label_free_needs_a_teacher(folder):
    res = invoke("pruned.pt", "--data", "unlabelled.npz", *SHAPE)
    assert res.exit_code == 2 and len(errors(res.output)) == 1 and "--teacher" in res.output
    res = invoke("pruned.pt", "--data", "unlabelled.npz", "--teacher", "original.pt", "--epochs", "1", *SHAPE)
    assert res.exit_code == 0 and "top-1 agreement" in res.output


@pytest.mark.parametrize("args, cause", [
    (["--data", "missing.npz"], "no such file"),
    (["--data", "train.npz", "--epochs", "0"], "--epochs 0"),
    (["--data", "train.npz", "--lr", "-1"], "--lr"),
    (["--data", "train.npz", "-o", "pruned.pt"], "refusing to overwrite the input"),
    (["--data", "train.npz", "-o", "train.npz"], "refusing to overwrite the input"),
    (["--data", "train.npz", "--resume"], "no checkpoint"),
    (["--data", "train.npz", "--device", "tpu"], "--device"),
])
def test_bad_inputs_exit_2_with_one_line(folder, args, cause):
    files = sorted(p.name for p in folder.iterdir())
    res = invoke("pruned.pt", *args, *SHAPE)
    assert res.exit_code == 2, res.output
    assert len(errors(res.output)) == 1 and cause in res.output
    assert sorted(p.name for p in folder.iterdir()) == files


def test_existing_output_needs_force(folder):
    (folder / "out.pt").write_text("keep me")
    res = invoke("pruned.pt", "--data", "train.npz", "-o", "out.pt", *SHAPE)
    assert res.exit_code == 2 and "--force" in errors(res.output)[0]
    assert (folder / "out.pt").read_text() == "keep me"
    assert invoke("pruned.pt", "--data", "train.npz", "-o", "out.pt", "--epochs", "1", "--force", *SHAPE).exit_code == 0


def test_ctrl_c_keeps_checkpoint_and_resume_finishes(folder, monkeypatch):
    common = ["pruned.pt", "--data", "train.npz", "--epochs", "3", "--patience", "9", *SHAPE]
    assert invoke(*common, "-o", "whole.pt").exit_code == 0
    real = loop._epoch

    def interrupted(run, data, epoch, *rest):
        if epoch == 2:
            raise KeyboardInterrupt
        return real(run, data, epoch, *rest)

    monkeypatch.setattr(loop, "_epoch", interrupted)
    res = invoke(*common, "-o", "resumed.pt")
    assert res.exit_code == 130 and "--resume" in errors(res.output)[0]
    assert (folder / "resumed.pt.ckpt").exists() and not (folder / "resumed.pt").exists()
    again = invoke(*common, "-o", "resumed.pt")
    assert again.exit_code == 2 and "checkpoint of an earlier run" in again.output
    monkeypatch.setattr(loop, "_epoch", real)
    assert invoke(*common, "-o", "resumed.pt", "--resume").exit_code == 0
    whole = torch.load(folder / "whole.pt", weights_only=False).state_dict()
    resumed = torch.load(folder / "resumed.pt", weights_only=False).state_dict()
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_shrink_finetune_epochs_recovers_and_reports(folder):
    res = CliRunner().invoke(app, ["shrink", "original.pt", *SHAPE, "--ratio", "0.5", "--data", "train.npz",
                                   "--finetune-epochs", "2", "-o", "small.pt"])
    assert res.exit_code == 0, res.output
    report = json.loads((folder / "small.json").read_text())["recovery"]
    assert report["metric"] == "accuracy" and len(report["history"]) == 3
    assert report["after"] >= report["before"]
    assert not (folder / "small.pt.ckpt").exists()
    model = torch.load(folder / "small.pt", weights_only=False)
    assert model(torch.randn(3, 1, 8, 8)).shape == (3, 4)


def test_shrink_recovery_needs_data(folder):
    res = CliRunner().invoke(app, ["shrink", "original.pt", *SHAPE, "--finetune-epochs", "2", "-o", "small.pt"])
    assert res.exit_code == 2 and len(errors(res.output)) == 1 and "--data" in res.output
    assert not (folder / "small.pt").exists()


def test_shrink_steps_reports_every_step(folder):
    res = CliRunner().invoke(app, ["shrink", "original.pt", *SHAPE, "--ratio", "0.5", "--data", "train.npz",
                                   "--steps", "2", "--finetune-epochs", "1", "-o", "small.pt"])
    assert res.exit_code == 0, res.output
    report = json.loads((folder / "small.json").read_text())
    steps = report["recovery"]["steps"]
    assert [s["step"] for s in steps] == [1, 2] and steps[0]["params"] > steps[1]["params"] == report["params_after"]
    assert report["params_before"] == sum(p.numel() for p in torch.load(folder / "original.pt", weights_only=False).parameters())
    assert all(s["recovered_metric"] is not None for s in steps)


def test_finetune_takes_the_example_the_pruned_model_carries(folder):
    """A model from shrink carries its example input's spec: finetune, and finetune of its output,
    need no --example-input; the spec's shape, dtype and dynamic batch come back on load."""
    from graphprune.io import files as io

    _, stored = io.load_model(folder / "pruned.pt")
    assert stored.shape == (2, 1, 8, 8) and stored.dtype == torch.float32
    spec = torch.load(folder / "pruned.pt", weights_only=False).meta["graphprune.example"]
    assert spec["inputs"][0]["dynamic"] == [0]
    res = invoke("pruned.pt", "--data", "train.npz", "--teacher", "original.pt", "--epochs", "1")
    assert res.exit_code == 0, res.output
    res = invoke("pruned.finetuned.pt", "--data", "train.npz", "--epochs", "1", "-o", "again.pt")
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["eval", "pruned.pt", "again.pt", "--data", "train.npz"])
    assert res.exit_code == 0, res.output

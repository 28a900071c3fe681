"""Blocks first, then channels, through `graphprune.shrink(remove_blocks=K)` and `shrink --remove-blocks K`:
the removed blocks' parameters leave the written model, the report lists them with their
scores and costs, a MACs target is measured against the original, and the user's model and
files stay as they were.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import randomize
from typer.testing import CliRunner

import graphprune
from graphprune.cli import app
from graphprune.cost.macs import count_params
from graphprune.data import load_data
from graphprune.errors import InputError
from tests.depth_archs import TinyResNet


def images(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, 12, 12, generator=torch.Generator().manual_seed(n))


def _npz(path, labels: bool = True):
    x = torch.randn(48, 3, 12, 12, generator=torch.Generator().manual_seed(3)).numpy()
    np.savez(path, **({"x": x} | ({"y": np.arange(48) % 4} if labels else {})))
    return path


def _tensors_of(model: torch.nn.Module, block: dict) -> list[str]:
    return [k for k in model.state_dict() if k in block["tensors"]]


def test_shrink_removes_blocks_then_channels_under_one_macs_target(tmp_path):
    model = randomize(TinyResNet())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = load_data(str(_npz(tmp_path / "train.npz")), images(1), batch_size=16)
    pruned, report = graphprune.shrink(model, images(), data=data, remove_blocks=2, target_macs=0.5)
    assert len(report.blocks) == 2
    for block in report.blocks:
        assert block["tensors"] and not _tensors_of(pruned, block)
        assert block["params"] > 0 and block["macs"] > 0 and block["criterion"] == "loss"
    assert report.macs_ratio == pytest.approx(0.5, abs=0.05)  # against the original, blocks included
    assert pruned(images(5)).shape == (5, 4)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_shrink_with_blocks_only_reports_what_they_cost(tmp_path):
    model = randomize(TinyResNet())
    data = load_data(str(_npz(tmp_path / "train.npz", labels=False)), images(1), batch_size=16)
    pruned, report = graphprune.shrink(model, images(), ratio=0.0, data=data, remove_blocks=1)
    (block,) = report.blocks
    assert count_params(model) - count_params(pruned) == block["params"]
    assert report.macs_before - report.macs_after == block["macs"]
    with pytest.raises(InputError, match="--data"):
        graphprune.shrink(model, images(), remove_blocks=1)


def test_cli_remove_blocks_writes_a_working_model_without_their_parameters(tmp_path):
    model = randomize(TinyResNet())
    torch.save(model, tmp_path / "model.pt")
    _npz(tmp_path / "train.npz")
    out = tmp_path / "small.pt"
    runner = CliRunner()
    base = ["shrink", str(tmp_path / "model.pt"), "--input-shape", "1,3,12,12", "-o", str(out)]
    refused = runner.invoke(app, [*base, "--remove-blocks", "2"])
    assert refused.exit_code == 2 and "--data" in refused.output and not out.exists()
    stepped_out = tmp_path / "stepped.pt"
    stepped = runner.invoke(app, [*base[:-1], str(stepped_out), "--remove-blocks", "1", "--data",
                                  str(tmp_path / "train.npz"), "--steps", "2", "--target-macs", "0.5"])
    assert stepped.exit_code == 0, stepped.output
    assert len(json.loads(stepped_out.with_suffix(".json").read_text())["blocks"]) == 1
    result = runner.invoke(app, [*base, "--remove-blocks", "2", "--data", str(tmp_path / "train.npz")])
    assert result.exit_code == 0, result.output
    pruned = torch.load(out, weights_only=False)
    report = json.loads(out.with_suffix(".json").read_text())
    assert len(report["blocks"]) == 2
    for block in report["blocks"]:
        assert not _tensors_of(pruned, block)
    assert pruned.eval()(images(5)).shape == (5, 4)
    assert torch.load(tmp_path / "model.pt", weights_only=False).state_dict().keys() == model.state_dict().keys()


def test_inspect_lists_the_removable_blocks(tmp_path):
    torch.save(TinyResNet().eval(), tmp_path / "model.pt")
    result = CliRunner().invoke(app, ["inspect", str(tmp_path / "model.pt"), "--input-shape", "1,3,12,12"])
    assert result.exit_code == 0, result.output
    assert "4 removable blocks" in result.output
    for name in ("residual(a, b)", "layers.0", "layers.1", "layers.3"):
        assert name in result.output
    assert "layers.2 " not in result.output.split("removable blocks")[1]


def test_blocks_go_in_the_first_of_several_steps(tmp_path):
    from graphprune.pipeline.steps import shrink_in_steps

    model = randomize(TinyResNet())
    data = load_data(str(_npz(tmp_path / "train.npz")), images(1), batch_size=16)
    pruned, report, rows = shrink_in_steps(model, images(), 2, data=data, remove_blocks=2, target_macs=0.5)
    assert len(report.blocks) == 2 and not any(_tensors_of(pruned, b) for b in report.blocks)
    assert [r.step for r in rows] == [1, 2] and rows[1].macs < rows[0].macs  # the second step narrows what is left
    assert report.macs_ratio == pytest.approx(0.5, abs=0.05)
    assert pruned(images(5)).shape == (5, 4)

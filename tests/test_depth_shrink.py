"""Blocks first, then channels, through `graphprune.shrink(remove_blocks=K)` and `shrink --remove-blocks K`:
the removed blocks' parameters leave the written model, the report lists them with their
scores and costs, a MACs target is measured against the original, and the user's model and
files stay as they were. Under a budget, held-out data judges the blocks against widths alone at
that budget (graphprune.pipeline.depth_judged): the better model is returned, and the report's
`fidelity.steps` says which.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import randomize
from typer.testing import CliRunner

import graphprune
from graphprune.capture.trace import capture
from graphprune.cli import app
from graphprune.cost.macs import count_params
from graphprune.data import Data, load_data
from graphprune.data.options import CalibrationOptions
from graphprune.data.shape import Signature
from graphprune.data.sources import Loader
from graphprune.depth.options import DepthOptions
from graphprune.errors import InputError
from graphprune.pipeline import decide, depth_judged
from graphprune.plan.types import PlanOptions
from graphprune.reasons import Outcome
from tests.depth_archs import TinyResNet, blocks_carry_the_signal, blocks_near_identity


def images(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, 12, 12, generator=torch.Generator().manual_seed(n))


def _npz(path, labels: bool = True):
    x = torch.randn(48, 3, 12, 12, generator=torch.Generator().manual_seed(3)).numpy()
    np.savez(path, **({"x": x} | ({"y": np.arange(48) % 4} if labels else {})))
    return path


def _tensors_of(model: torch.nn.Module, block: dict) -> list[str]:
    return [k for k in model.state_dict() if k in block["tensors"]]


def _depth_step(report) -> dict:
    (step,) = [s for s in report.fidelity["steps"] if s["step"] == depth_judged.STEP]
    return step


def _selection_loss(model: torch.nn.Module, example, pruned: torch.nn.Module, data) -> float:
    """`pruned`'s loss on the selection slice shrink judges on (the same split of `data`, the captured original)."""
    cal = CalibrationOptions()
    _, held, _ = decide.split(data, seed=cal.seed)
    return decide.Judge(capture(model, (example,), {}).module, held, cal.batches).loss(pruned)


def _outcome(step: dict, blocks, removed: int) -> Outcome:
    """The depth step's outcome, checked against the blocks listed: kept (KEPT, before >= after; or unjudged)
    with all `removed` listed, or undone (UNDONE, after > before) with none."""
    outcome = Outcome(step["outcome"])
    if outcome is Outcome.UNDONE:
        assert step["after"] > step["before"] and len(blocks) == 0
    else:
        assert outcome is not Outcome.KEPT or step["before"] >= step["after"]
        assert len(blocks) == removed
    return outcome


def _judged(model, example, pruned, report, data, removed: int) -> Outcome:
    """The depth step's outcome, judged (KEPT or UNDONE) and checked against what shrink returned: the kept
    blocks' tensors gone, or every parameter of the original still there; the returned model's selection loss
    is the better of the two (or the floor's, when used)."""
    step = _depth_step(report)
    outcome = _outcome(step, report.blocks, removed)
    assert outcome in (Outcome.KEPT, Outcome.UNDONE)
    if outcome is Outcome.KEPT:
        assert not any(_tensors_of(pruned, b) for b in report.blocks)
    else:
        assert {n for n, _ in model.named_parameters()} <= set(pruned.state_dict())
    floor = report.fidelity.get("floor")
    best = floor["loss"] if floor and floor["used"] else min(step["before"], step["after"])
    assert _selection_loss(model, example, pruned, data) == pytest.approx(best, rel=1e-4, abs=1e-7)
    return outcome


def test_shrink_removes_blocks_then_channels_under_one_macs_target(tmp_path):
    model = randomize(TinyResNet())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = load_data(str(_npz(tmp_path / "train.npz")), images(1), batch_size=16)
    pruned, report = graphprune.shrink(model, images(), data=data, remove_blocks=2, target_macs=0.5)
    # at --round-to 8 the 8-wide groups cannot narrow: widths alone cannot reach half the MACs, so the
    # blocks stay without a comparison
    step = _depth_step(report)
    assert step["outcome"] == Outcome.UNCOMPARED and step["before"] is None and step["after"] is None
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
    assert _depth_step(report)["outcome"] == Outcome.UNCOMPARED  # a ratio: no budget for widths alone to reach
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
    stepped_report = json.loads(stepped_out.with_suffix(".json").read_text())
    (step,) = [s for s in stepped_report["fidelity"]["steps"] if s["step"] == depth_judged.STEP]
    _outcome(step, stepped_report["blocks"], 1)
    result = runner.invoke(app, [*base, "--remove-blocks", "2", "--data", str(tmp_path / "train.npz")])
    assert result.exit_code == 0, result.output
    pruned = torch.load(out, weights_only=False)
    report = json.loads(out.with_suffix(".json").read_text())
    assert len(report["blocks"]) == 2  # no budget (--ratio): kept unjudged
    assert [s["outcome"] for s in report["fidelity"]["steps"] if s["step"] == depth_judged.STEP] == [Outcome.UNCOMPARED]
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
    # judged at the first step's budget, 0.75 of the MACs: the blocks go then or never
    _outcome(_depth_step(report), report.blocks, 2)
    assert not any(_tensors_of(pruned, b) for b in report.blocks)
    assert [r.step for r in rows] == [1, 2] and rows[1].macs < rows[0].macs  # the second step narrows what is left
    assert report.macs_ratio == pytest.approx(0.5, abs=0.05)
    assert pruned(images(5)).shape == (5, 4)


def _vectors(tmp_path) -> tuple[torch.Tensor, object]:
    example = torch.randn(2, 16, generator=torch.Generator().manual_seed(2))
    np.savez(tmp_path / "vectors.npz", x=torch.randn(96, 16, generator=torch.Generator().manual_seed(1)).numpy())
    return example, load_data(str(tmp_path / "vectors.npz"), example[:1], batch_size=16)


def test_blocks_that_carry_the_signal_are_undone_for_widths_alone(tmp_path):
    """At 0.7 of the MACs, one block gone meets the budget; widths alone reach it by dropping hidden units
    that carry nothing. The widths-only model is returned, nothing of the block stays, and it is checked."""
    example, data = _vectors(tmp_path)
    model = blocks_carry_the_signal()
    pruned, report = graphprune.shrink(model, example, data=data, plan=PlanOptions(target_macs=0.7, criterion="l2"),
                                       depth=DepthOptions(blocks=1))
    assert _judged(model, example, pruned, report, data, removed=1) is Outcome.UNDONE
    assert report.macs_ratio <= 0.7 and report.budget["achieved"] == pytest.approx(report.macs_ratio)
    # widths alone went through the same judged data steps as the result with the block removed, listed as its own
    assert {"bias correction (widths only)", "refit (widths only)"} <= {s["step"] for s in report.fidelity["steps"]}
    assert {c["check"] for c in report.checks} == {"runs", "dead channels"}
    assert pruned(example).shape == (2, 4)


def test_near_identity_blocks_are_kept(tmp_path):
    """Two blocks that add nothing: removing them loses nothing, so they stay (widths alone cannot do better)."""
    example, data = _vectors(tmp_path)
    model = blocks_near_identity()
    pruned, report = graphprune.shrink(model, example, data=data, plan=PlanOptions(target_macs=0.7, criterion="l2"),
                                       depth=DepthOptions(blocks=2))
    assert _judged(model, example, pruned, report, data, removed=2) is Outcome.KEPT
    assert sorted(b["name"] for b in report.blocks) == ["blocks.1", "blocks.2"]
    torch.testing.assert_close(pruned(example), model(example))


def test_blocks_without_a_selection_slice_are_kept_unjudged(tmp_path):
    """A DataLoader factory cannot be split: no selection slice, so the depth step is recorded unjudged."""
    example, _ = _vectors(tmp_path)
    x = torch.randn(64, 16, generator=torch.Generator().manual_seed(1))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=16)
    data = Data(Loader(loader, lambda batch: (batch[0], None)), Signature.of(example), 16, "loader")
    _, report = graphprune.shrink(blocks_near_identity(), example, data=data,
                                  plan=PlanOptions(target_macs=0.7, criterion="l2"), depth=DepthOptions(blocks=1))
    step = _depth_step(report)
    assert step["outcome"] == Outcome.UNJUDGED and step["before"] is None and len(report.blocks) == 1

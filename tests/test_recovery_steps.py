"""Iterative pruning (graphprune.pipeline.steps.shrink_in_steps): every step's target is measured
against the original, the model is recovered between steps, and the last step lands where
one-shot pruning lands."""

from __future__ import annotations

import pytest
import torch
from recovery_models import ConvBNDrop, data, images, npz

import graphprune
from graphprune.cost.macs import count_params
from graphprune.errors import InputError
from graphprune.pipeline.steps import shrink_in_steps
from graphprune.recovery import TrainOptions

EXAMPLE = torch.randn(2, 1, 8, 8)


@pytest.fixture
def setup(tmp_path):
    torch.manual_seed(0)
    x, y = images(96)
    return ConvBNDrop(width=32).eval(), data(npz(tmp_path / "train.npz", x, y), EXAMPLE)


def test_ratio_in_steps_reaches_the_one_shot_widths(setup):
    """Step k keeps 1 - r k / N of the original widths: with round_to 1 the last step's model
    has the one-shot model's parameter count, and each step is smaller than the one before."""
    model, train = setup
    one_shot, _ = graphprune.shrink(model, EXAMPLE, 0.5, round_to=1)
    pruned, report, rows = shrink_in_steps(model, EXAMPLE, 2, ratio=0.5, data=train, round_to=1,
                                           train_options=TrainOptions(epochs=1))
    assert [r.aim for r in rows] == [0.25, 0.5]
    assert rows[0].params > rows[1].params == count_params(pruned) == count_params(one_shot)
    assert report.params_before == count_params(model) and report.params_after == rows[1].params
    assert all(r.metric == "accuracy" and r.recovered_metric >= r.pruned_metric for r in rows)


def test_steps_without_recovery_and_refusals(setup):
    model, train = setup
    _, _, rows = shrink_in_steps(model, EXAMPLE, 3, ratio=0.6, round_to=1)
    assert [r.recovered_metric for r in rows] == [None] * 3
    assert rows[0].params > rows[1].params > rows[2].params
    with pytest.raises(InputError, match="--steps 0"):
        shrink_in_steps(model, EXAMPLE, 0)
    with pytest.raises(InputError, match="--data"):
        shrink_in_steps(model, EXAMPLE, 2, train_options=TrainOptions(epochs=1))


def test_budget_in_steps_is_measured_against_the_original(setup):
    """--target-macs 0.5 in 2 steps: step 1 aims at 0.75 of the original's MACs, step 2 at 0.5."""
    model, train = setup
    pruned, report, rows = shrink_in_steps(model, EXAMPLE, 2, data=train, target_macs=0.5,
                                           train_options=TrainOptions(epochs=1))
    base = report.macs_before
    assert [r.aim for r in rows] == [0.75, 0.5]
    assert 0.5 * base < rows[0].macs <= 0.76 * base
    assert rows[1].macs <= 0.51 * base and report.macs_after == rows[1].macs
    achieved = rows[1].macs / base
    assert report.budget | {"why": ""} == {"kind": "macs", "target": 0.5, "achieved": achieved,
                                          "met": 0.49 <= achieved <= 0.5, "why": ""}
    assert report.budget["met"] == (report.budget["why"] == "")

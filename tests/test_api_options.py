"""The public API takes its options as objects; earlier keyword calls still work, with a warning."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

import graphprune
from graphprune import CalibrationOptions, DepthOptions, GraphPruneError, PlanOptions


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 16, 3), nn.ReLU(), nn.Conv2d(16, 4, 1)).eval()


X = torch.randn(2, 3, 12, 12)


def _widths(report) -> list[int]:
    return [d.width_after for d in report.decisions]


def test_keywords_warn_and_match_the_objects():
    model = _model()
    _, new = graphprune.shrink(model, X, plan=PlanOptions(ratio=0.5, round_to=1, criterion="l1"))
    with pytest.warns(DeprecationWarning, match="plan=PlanOptions"):
        _, old = graphprune.shrink(model, X, 0.5, round_to=1, criterion="l1")
    assert _widths(new) == _widths(old) and new.options == old.options


def test_an_option_given_twice_is_refused():
    with pytest.raises(GraphPruneError, match="not both"), pytest.warns(DeprecationWarning):
        graphprune.shrink(_model(), X, plan=PlanOptions(ratio=0.5), round_to=1)
    with pytest.raises(GraphPruneError, match="not both"), pytest.warns(DeprecationWarning):
        graphprune.shrink(_model(), X, calibration=CalibrationOptions(batches=4), calib_batches=8)
    graph = graphprune.analyze(_model(), X)
    with pytest.raises(GraphPruneError, match="not both"):
        graphprune.plan(graph, PlanOptions(ratio=0.5), ratio=0.3)


def test_options_are_checked_once_with_the_flag_named():
    for options, words in ((PlanOptions(ratio=1.0), "--ratio 1.0"), (PlanOptions(target_macs=0.5, threshold="mean"), "--threshold"),
                           (PlanOptions(attention="some"), "attention")):
        with pytest.raises(GraphPruneError, match=words):
            graphprune.shrink(_model(), X, plan=options)
    with pytest.raises(GraphPruneError, match="--calib-batches 0"):
        graphprune.shrink(_model(), X, calibration=CalibrationOptions(batches=0))
    with pytest.raises(GraphPruneError, match="--data"):
        graphprune.shrink(_model(), X, depth=DepthOptions(blocks=1))
    with pytest.raises(GraphPruneError, match="--criterion taylor is measured on data"):
        graphprune.shrink(_model(), X, plan=PlanOptions(criterion="taylor"))


def test_user_scores_are_reported_as_such_and_decide():
    model = _model()

    def first_channels_last(graph):
        return np.arange(graph.num_channels, dtype=np.float64)  # a higher id is more important

    _, report = graphprune.shrink(model, X, plan=PlanOptions(ratio=0.5, round_to=1), scores=first_channels_last)
    assert report.options["criterion"] == "user scores" and report.calibration == {"criterion": "user scores"}
    with pytest.warns(DeprecationWarning):
        _, old = graphprune.shrink(model, X, 0.5, round_to=1, criterion=first_channels_last)
    assert _widths(old) == _widths(report) and old.options["criterion"] == "user scores"


def test_the_public_names_resolve():
    for name in graphprune.__all__:
        assert getattr(graphprune, name) is not None
    with pytest.raises(AttributeError):
        graphprune.no_such_name  # noqa: B018

"""An op without a rule freezes the dims it touches, names itself, and nothing else stops.

The model runs `torch.fft.fft(..., dim=1).real` over the channel dim between two convs:
graphprune has no rule for it, so the channels on both sides must stay, the report must
name the op and this file's line, and the independent branch must still be pruned.
"""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn as nn
from conftest import count_params, randomize

import graphprune
from graphprune.check.oracle import dead_channel_check


class FFTMix(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.b = nn.Conv2d(16, 16, 1)
        self.side = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.head = nn.Conv2d(16, 8, 1)
        self.probe = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        y = torch.fft.fft(self.a(x), dim=1).real
        z = torch.relu(self.b(y))
        return self.head(z + self.side(x)), self.probe(y)


FFT_LINE = next(
    start + k
    for lines, start in [inspect.getsourcelines(FFTMix.forward)]
    for k, text in enumerate(lines)
    if "torch.fft.fft" in text
)
WHERE = f"test_unknown_op.py:{FFT_LINE}"


def decision_for(plan, name: str):
    (found,) = [d for d in plan.decisions if d.group == name]
    return found


def group_of(graph, target: str, dim: int):
    """The group that holds dim `dim` of parameter `target`."""
    for g in graph.groups:
        for (node, _), d in g.spaces:
            if node.op == "get_attr" and node.target == target and d == dim:
                return g
    raise KeyError((target, dim))


@pytest.fixture(scope="module")
def case():
    torch.manual_seed(0)
    model = randomize(FFTMix())
    x = torch.randn(2, 3, 8, 8)
    graph = graphprune.analyze(model, x)
    return model, x, graph


def test_unknown_op_is_named_with_its_source_line(case):
    """Rule: every node without a rule is listed in graph.unknown with its op and the
    user's source line."""
    _, _, graph = case
    fft = [u for u in graph.unknown if "fft" in u]
    assert fft and all(WHERE in u for u in fft)
    assert all(WHERE in u for u in graph.unknown)  # `.real` sits on the same line


def test_groups_coupled_to_the_unknown_op_are_frozen(case):
    """Rule: the conv before the fft (its output channels) and the conv after it (its input
    channels) have no candidates, keep their width, and give a reason naming the op."""
    _, _, graph = case
    plan = graphprune.plan(graph, ratio=0.5)
    before = group_of(graph, "a.0.weight", 0)
    after = group_of(graph, "b.weight", 1)
    for g in (before, after):
        assert len(g.channels) == 0
        assert "no rule for" in g.reason and WHERE in g.reason
        d = decision_for(plan, g.name)
        assert d.removed == 0 and d.width_after == d.width_before == 16 and d.candidates == 0
        assert "frozen" in d.note and WHERE in d.note
    assert "fft" in before.reason
    assert group_of(graph, "probe.weight", 1) is after


def test_independent_groups_are_still_pruned(case):
    """Rule: groups not touched by the unknown op are pruned as usual (the residual group of
    b's output, the side branch and head's input)."""
    _, _, graph = case
    plan = graphprune.plan(graph, ratio=0.5)
    g = group_of(graph, "side.0.weight", 0)
    assert group_of(graph, "b.weight", 0) is g and group_of(graph, "head.weight", 1) is g
    d = decision_for(plan, g.name)
    assert d.candidates == 16 and d.removed == 8 and d.width_after == 8


def test_dead_channel_oracle_holds_around_the_unknown_op():
    """Rule: the dead-channel oracle holds for a plan of a model with an unknown op."""
    model = randomize(FFTMix())
    plan = graphprune.plan(graphprune.analyze(model, torch.randn(2, 3, 8, 8)), ratio=0.5)
    assert plan.removed.any()
    pruned = dead_channel_check(plan)
    assert pruned.get_parameter("a.0.weight").shape[0] == 16
    assert pruned.get_parameter("side.0.weight").shape[0] == 8


def test_shrink_reports_the_op_and_changes_only_the_pruned_output(case):
    """Rule: shrink succeeds with an unknown op; the report names it; the output computed
    only through frozen channels (probe) is unchanged, the pruned one keeps its shape."""
    model, x, _ = case
    pruned, report = graphprune.shrink(model, x, ratio=0.5)
    assert any("fft" in u and WHERE in u for u in report.unknown_ops)
    assert report.params_after < report.params_before == count_params(model)
    feat, spec = pruned(x)
    want_feat, want_spec = model(x)
    torch.testing.assert_close(spec, want_spec)
    assert feat.shape == want_feat.shape
    assert not torch.allclose(feat, want_feat)
    big = torch.randn(3, 3, 8, 8)
    torch.testing.assert_close(pruned(big)[1], model(big)[1])

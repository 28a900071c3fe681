"""Budgets, thresholds and exact plan costs.

Rules: `plan_macs` / `plan_params` of a plan equal count_macs / count_params of the model it makes;
a `target_macs` or `target_params` budget lands within 2% of the target on models of different
kinds; threshold rules remove exactly the channels below their threshold; explicit widths are kept.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

import graphprune
from graphprune.cost.macs import count_macs, count_params, plan_macs, plan_params
from graphprune.errors import GraphPruneError
from graphprune.importance import score
from graphprune.plan.types import PlanOptions


def _models():
    from models.tabular import DigitsMLP, DigitsResNet

    return {
        "resnet18": (torchvision.models.resnet18().eval(), torch.randn(1, 3, 32, 32)),
        "mobilenet_v2": (torchvision.models.mobilenet_v2().eval(), torch.randn(2, 3, 32, 32)),
        "digits_resnet": (DigitsResNet().eval(), torch.randn(1, 1, 8, 8)),
        "mlp": (DigitsMLP().eval(), torch.randn(1, 64)),
    }


@pytest.fixture(scope="module")
def graphs():
    return {name: (graphprune.analyze(m, x), m, x) for name, (m, x) in _models().items()}


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "digits_resnet", "mlp"])
def test_plan_costs_equal_the_rewritten_models(graphs, name):
    graph, _, x = graphs[name]
    for ratio in (0.0, 0.35):
        plan = graphprune.plan(graph, ratio=ratio)
        pruned = graphprune.rewrite(plan)
        assert plan_macs(plan) == count_macs(pruned, (x,))
        assert plan_params(plan) == count_params(pruned)


@pytest.mark.parametrize("name,kind,target", [("resnet18", "macs", 0.5), ("mobilenet_v2", "macs", 0.3),
                                              ("digits_resnet", "macs", 0.5), ("digits_resnet", "params", 0.3),
                                              ("mlp", "macs", 0.5), ("mlp", "params", 0.5)])
def test_budget_lands_within_two_percent_under_the_target(graphs, name, kind, target):
    graph, _, x = graphs[name]
    opts = PlanOptions(**{f"target_{kind}": target})
    plan = graphprune.plan(graph, opts)
    full = graphprune.plan(graph, ratio=0.0)
    measure = plan_macs if kind == "macs" else plan_params
    reached = measure(plan) / measure(full)
    assert 0.98 * target <= reached <= target, reached
    assert plan.budget.met and plan.budget.reached == pytest.approx(reached)
    assert all(d.width_after % 8 == 0 or d.width_after == d.width_before or "multiple" in d.note
               for d in plan.decisions if d.removed)


@pytest.mark.parametrize("name", ["mlp", "digits_resnet"])
@pytest.mark.parametrize("kind", ["macs", "params"])
@pytest.mark.parametrize("global_ranking", [False, True])
def test_a_budget_is_a_ceiling_or_says_why(graphs, name, kind, global_ranking):
    """Every plan costs at most its target; it lands within 2% under it, or its outcome names the
    rounding that stops it (and without rounding it lands)."""
    graph, _, _ = graphs[name]
    measure = plan_macs if kind == "macs" else plan_params
    full = measure(graphprune.plan(graph, PlanOptions(ratio=0.0)))
    for target in (0.3, 0.5, 0.7):
        for round_to in (8, 1):
            opts = PlanOptions(**{f"target_{kind}": target}, global_ranking=global_ranking, round_to=round_to)
            plan = graphprune.plan(graph, opts)
            reached = measure(plan) / full
            assert reached <= target, (target, round_to, reached)
            outcome = plan.budget
            assert outcome.met == (reached >= 0.98 * target), (target, round_to, reached)
            if round_to == 1:
                assert outcome.met, (target, reached, outcome)
            elif not outcome.met:
                assert outcome.limit == "steps" and outcome.above > target and "--round-to 8" in outcome.why()


def test_a_budget_below_what_the_options_allow_says_so(graphs):
    graph, _, _ = graphs["mlp"]
    plan = graphprune.plan(graph, PlanOptions(target_params=0.01))
    full = plan_params(graphprune.plan(graph, PlanOptions(ratio=0.0)))
    outcome = plan.budget
    assert not outcome.met and outcome.limit == "floor"
    assert outcome.floor == pytest.approx(plan_params(plan) / full) and outcome.floor > 0.01
    assert "smallest plan" in outcome.why() and "--round-to" in outcome.why()


def test_the_report_and_its_summary_say_why_a_budget_was_missed():
    from io import StringIO

    from rich.console import Console

    from graphprune.report.report import render
    from models.tabular import DigitsMLP

    model, x = DigitsMLP().eval(), torch.randn(1, 64)
    _, report = graphprune.shrink(model, x, plan=PlanOptions(target_params=0.01))
    budget = report.to_dict()["budget"]
    assert budget["met"] is False and "smallest plan" in budget["why"]
    out = StringIO()
    render(report, Console(file=out, width=200))
    assert "NOT met" in out.getvalue() and "smallest plan" in out.getvalue()
    _, report = graphprune.shrink(model, x, plan=PlanOptions(target_params=0.5, round_to=1))
    assert report.budget["met"] is True and report.budget["why"] == ""
    assert 0.49 <= report.budget["achieved"] <= 0.5


def test_budget_keeps_the_strongest_channels_of_each_group(graphs):
    graph, _, _ = graphs["mlp"]
    scores = score(graph, "l2")
    plan = graphprune.plan(graph, PlanOptions(target_macs=0.5), scores=scores)
    for g in graph.groups:
        gone = g.channels[plan.removed[g.channels]]
        kept = g.channels[~plan.removed[g.channels]]
        if len(gone) and len(kept):
            assert scores[gone].max() <= scores[kept].min()


def test_threshold_rules_remove_the_channels_below_them():
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2)).eval()
    graph = graphprune.analyze(model, torch.randn(1, 4))
    scores = np.arange(graph.num_channels, dtype=np.float64)
    group = next(g for g in graph.groups if len(g.channels) == 16)
    s = scores[group.channels]
    for rule, below in (("mean", s < s.mean()), ("percentile:25", s < np.percentile(s, 25)),
                        ("sigma:0.5", s < s.mean() - 0.5 * s.std())):
        plan = graphprune.plan(graph, PlanOptions(threshold=rule, round_to=1), scores=scores)
        assert plan.removed[group.channels].tolist() == below.tolist(), rule


def test_explicit_widths_are_kept_and_unknown_groups_refused(graphs):
    graph, _, _ = graphs["resnet18"]
    named = [g for g in graph.groups if len(g.channels) > 16][:3]
    plan = graphprune.plan(graph, PlanOptions(widths={g.name: 16 for g in named}))
    after = {d.group: d.width_after for d in plan.decisions}
    assert all(after[g.name] == 16 for g in named)
    with pytest.raises(GraphPruneError, match="no group named"):
        graphprune.plan(graph, PlanOptions(widths={"nope[0]": 4}))


@pytest.mark.parametrize("bad", [dict(target_macs=0.0), dict(target_macs=1.5), dict(target_params=1.0),
                                 dict(target_macs=0.5, target_params=0.5), dict(threshold="median"),
                                 dict(threshold="percentile:100")])
def test_impossible_budgets_are_refused(bad):
    with pytest.raises(GraphPruneError):
        PlanOptions(**bad).check()

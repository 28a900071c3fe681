"""Latency search: every strategy meets its budget against a mocked latency oracle (a known
function of the widths), --max-drop is never exceeded, random search replays from its seed, and
greedy keeps at least the calibration metric of uniform at the same latency.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import graphprune
from graphprune.errors import InputError
from graphprune.search import STRATEGIES, Config, MockOracle, SearchSpace, make_budget, search
from graphprune.search.plot import plot_search
from tests.search_models import Ladder, macs_latency


@pytest.fixture(scope="module")
def ladder():
    torch.manual_seed(0)
    model = Ladder().eval()
    x = torch.randn(4, 3, 12, 12)
    return model, x, graphprune.analyze(model, x)


def mocked(graph):
    space = SearchSpace(graph)
    return MockOracle(macs_latency(space))


@pytest.mark.parametrize("name", sorted(STRATEGIES))
@pytest.mark.parametrize("speedup", [1.5, 2.5])
def test_every_strategy_meets_the_budget_against_the_mocked_oracle(ladder, name, speedup):
    """The chosen configuration's mocked latency is within the budget, and the report's final
    figure is that configuration's latency at the latency batch."""
    _, _, graph = ladder
    oracle = mocked(graph)
    plan, log = search(graph, make_budget(speedup=speedup), name, oracle=oracle, samples=6)
    chosen = Config(tuple(sorted(log.facts["chosen"]["widths"].items())))
    assert log.facts["final"]["latency_ratio"] == pytest.approx(oracle.fn(chosen))
    assert log.facts["final"]["latency_ratio"] <= 1 / speedup
    assert log.facts["final"]["budget_met"]
    widths = {d.group: d.width_after for d in plan.decisions}
    assert all(widths[g] == w for g, w in chosen.widths)
    assert (chosen.key, log.facts["latency_settings"]["batch"]) in oracle.calls


def test_search_leaves_the_captured_model_alone(ladder):
    model, _, graph = ladder
    before = {k: v.clone() for k, v in graph.captured.module.state_dict().items()}
    search(graph, make_budget(target_latency=0.6), "greedy", oracle=mocked(graph))
    after = graph.captured.module.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("name", ["recursive", "greedy"])
def test_search_stops_before_max_drop(ladder, name):
    """A budget only a large drop reaches: the search stops short of it, within --max-drop."""
    _, _, graph = ladder
    max_drop = 0.02  # KL to the original, on random inputs
    plan, log = search(graph, make_budget(speedup=8), name, oracle=mocked(graph), max_drop=max_drop)
    assert log.facts["chosen"]["metric_drop"] <= max_drop
    assert not log.facts["final"]["budget_met"]
    assert any(e.metric is not None and -e.metric > max_drop for e in log.entries), "never tried past the drop"
    assert plan.removed.any()


def test_random_search_replays_from_its_seed(ladder):
    _, _, graph = ladder
    runs = [search(graph, make_budget(speedup=2), "random", oracle=mocked(graph), samples=5, seed=s, round_to=8)[1]
            for s in (3, 3, 4)]
    tried = [[e.config for e in log.entries] for log in runs]
    assert tried[0] == tried[1]
    assert tried[0] != tried[2]
    assert runs[0].facts["chosen"] == runs[1].facts["chosen"]


@pytest.mark.parametrize("name", ["digits_cnn", "digits_resnet", "digits_mlp"])
def test_greedy_keeps_at_least_uniforms_accuracy_at_the_same_latency(name):
    """Trained digits models, labelled calibration data, latency mocked (a function of MACs and widths),
    BatchNorm statistics re-estimated as shrink does: within the budget, greedy keeps at least uniform's
    calibration accuracy (what it optimises), and its held-out accuracy (before fine-tuning) is not below
    uniform's by more than the noise of 360 held-out images (2 points: at budgets 0.5, 0.6 and 0.7 uniform's
    own held-out accuracy on the MLP is 0.928, 0.972, 0.961, not monotone), widths in steps of 8."""
    from graphprune.data import load_data
    from graphprune.rewrite.recalibrate import recalibrate
    from models.digits import accuracy, load_split

    model = torch.load(f"models/{name}.pt", weights_only=False).eval()
    x_train, y_train, x_test, y_test = load_split()
    if name == "digits_mlp":
        x_train, x_test = x_train.flatten(1), x_test.flatten(1)
    graph = graphprune.analyze(model, x_train[:1])
    data = load_data(_npz(x_train[:256], y_train[:256]), x_train[:1], batch_size=128)
    metric, held_out = {}, {}
    for strategy in ("uniform", "greedy"):
        plan, log = search(graph, make_budget(target_latency=0.6), strategy, data, oracle=mocked(graph), round_to=8,
                           recalibrate=True)
        assert log.facts["final"]["budget_met"]
        metric[strategy] = log.facts["chosen"]["metric"]
        pruned = graphprune.rewrite(plan).eval()
        recalibrate(pruned, data)
        held_out[strategy] = accuracy(pruned, x_test, y_test)
    assert metric["greedy"] >= metric["uniform"]
    assert held_out["greedy"] >= held_out["uniform"] - 0.02


def _npz(x, y):
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp()) / "calib.npz"
    np.savez(path, x=x.numpy(), y=y.numpy())
    return str(path)


def test_the_log_and_plot_cover_every_configuration_tried(ladder, tmp_path):
    _, _, graph = ladder
    _, log = search(graph, make_budget(speedup=2), "greedy", oracle=mocked(graph))
    data = json.loads(json.dumps(log.to_dict()))
    assert len(data["tried"]) == len(log.entries) >= data["evaluated"]
    assert any(e["measured_ratio"] is not None for e in data["tried"])
    assert set(data["chosen"]["widths"]) <= set(data["groups"])
    plot_search(data, tmp_path / "search.png")
    assert (tmp_path / "search.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("kwargs, words", [
    ({"speedup": 0.5}, "--speedup"), ({"target_latency": 1.5}, "--target-latency"),
    ({"speedup": 2, "target_latency": 0.5}, "not both"), ({}, "needs"),
])
def test_bad_budgets_are_refused_with_one_line(kwargs, words):
    with pytest.raises(InputError, match=words) as info:
        make_budget(**kwargs)
    assert "\n" not in str(info.value)


def test_unknown_strategy_is_refused(ladder):
    with pytest.raises(InputError, match="--search"):
        search(ladder[2], make_budget(speedup=2), "annealing", oracle=mocked(ladder[2]))


def test_scoring_by_zeroed_channels_equals_scoring_the_pruned_model(ladder):
    """The search scores exact removals on a zeroed copy: same outputs as the rewritten model,
    and the copy is restored after."""
    _, x, graph = ladder
    space = SearchSpace(graph)
    config = space.uniform(0.5)
    pruned = space.build(config)
    with space.evaluating(Config()) as model:
        reference = model(x)
    with space.evaluating(config) as model:
        torch.testing.assert_close(model(x), pruned(x), atol=1e-5, rtol=1e-4)
    with space.evaluating(Config()) as model:
        torch.testing.assert_close(model(x), reference)


def test_blocks_and_widths_are_searched_under_one_budget():
    """With blocks to remove, a removed block is one more move; the plan is made on the graph
    without it and the budget is met."""
    from graphprune.search.depthsteps import DepthSteps
    from tests.search_models import Residual, remove_by_rebuilding

    model = Residual().eval()
    x = torch.randn(2, 3, 10, 10)
    graph = graphprune.analyze(model, x)
    depth = DepthSteps(graph, ("r1", "r2"), remove_by_rebuilding(model))
    space = SearchSpace(graph, depth=depth)
    oracle = MockOracle(lambda c: 0.1 + 0.3 * ("r1" not in c.blocks) + 0.5 * ("r2" not in c.blocks) * macs_latency(space)(
        Config(c.widths)))
    plan, log = search(graph, make_budget(target_latency=0.35), "greedy", oracle=oracle, depth=depth)
    assert log.facts["final"]["budget_met"] and log.facts["blocks"] == ["r1", "r2"]
    assert any(e.config["blocks"] for e in log.entries), "no block removal was tried"
    chosen = log.facts["chosen"]
    if chosen["blocks"]:
        assert plan.graph is depth.graph(tuple(chosen["blocks"]))
    pruned = graphprune.rewrite(plan).eval()
    assert pruned(x).shape == (2, 10)


def test_table_bundles_cover_every_group_once_in_order():
    from graphprune.search.table import _bundles

    rng = np.random.default_rng(0)
    for n, count in [(37, 12), (5, 3), (4, 12), (12, 12), (9, 1)]:
        names = [f"g{i}" for i in range(n)]
        runs = _bundles(names, {k: float(rng.random()) for k in names}, count)
        assert sum(runs, []) == names and all(runs) and len(runs) == min(n, count)


def test_a_confirmation_makes_the_table_exact_at_that_configuration(ladder):
    """After a whole-model measurement of c, the corrected table predicts c's measured ratio."""
    from graphprune.search.table import fit_table

    _, _, graph = ladder
    space = SearchSpace(graph)
    truth = macs_latency(space)
    table = fit_table(space, lambda c: MockOracle(truth).measure(c, 1), max_probes=2)
    config = space.uniform(0.4)
    table.correct(space, config, truth(config))
    assert table.predict(space, config) == pytest.approx(truth(config))
    assert table.predict(space, Config()) == pytest.approx(1.0)


def test_graphprune_depth_blocks_are_search_moves():
    """DepthSteps.found uses graphprune.depth: its blocks can be removed by the search, and the
    chosen plan is on the graph without them."""
    from graphprune.search.depthsteps import DepthSteps
    from tests.search_models import Residual

    model, x = Residual().eval(), torch.randn(2, 3, 10, 10)
    graph = graphprune.analyze(model, x)
    depth = DepthSteps.found(graph)
    assert depth is not None and len(depth.blocks) == 2
    space = SearchSpace(graph, depth=depth)
    full = space.macs(Config())
    oracle = MockOracle(lambda c: 0.2 + 0.8 * space.macs(c) / full)
    plan, log = search(graph, make_budget(speedup=2), "greedy", oracle=oracle, depth=depth)
    assert log.facts["final"]["budget_met"]
    assert graphprune.rewrite(plan).eval()(x).shape == (2, 10)


def test_zeroed_scoring_with_recalibration_equals_the_recalibrated_pruned_model(ladder, tmp_path):
    """With re-estimated BatchNorm statistics, the zeroed copy still computes the pruned model (statistics
    re-estimated the same way), and the copy's own statistics are left as they were for the next candidate."""
    from graphprune.data import load_data
    from graphprune.rewrite.recalibrate import recalibrate

    _, x, graph = ladder
    torch.save(torch.randn(24, 3, 12, 12) * 2 + 1, tmp_path / "x.pt")
    data = load_data(str(tmp_path / "x.pt"), x, batch_size=8)
    space = SearchSpace(graph)
    config = space.uniform(0.5)
    pruned = graphprune.rewrite(space.plan(config)).eval()
    recalibrate(pruned, data)
    with space.evaluating(Config()) as model:
        before = model(x)
    with space.evaluating(config, own_statistics=True) as model:
        recalibrate(model, data)
        torch.testing.assert_close(model(x), pruned(x), atol=1e-5, rtol=1e-4)
    with space.evaluating(Config()) as model:
        torch.testing.assert_close(model(x), before)


def test_candidates_are_scored_as_shrink_delivers_them(ladder, tmp_path):
    """search(recalibrate=True) scores a pruned candidate after re-estimating its statistics on the data,
    as shrink does to the chosen model: the chosen score is the recalibrated model's, not the stale one's."""
    from graphprune.data import load_data
    from graphprune.rewrite.recalibrate import recalibrate
    from graphprune.search.calibration import Calibration

    _, x, graph = ladder
    torch.save(torch.randn(24, 3, 12, 12) * 2 + 1, tmp_path / "x.pt")
    data = load_data(str(tmp_path / "x.pt"), x, batch_size=8)
    scores = {}
    for recal in (False, True):
        plan, log = search(graph, make_budget(speedup=2), "uniform", data, oracle=mocked(graph), recalibrate=recal)
        pruned = graphprune.rewrite(plan).eval()
        if recal:
            recalibrate(pruned, data)
        calibration = Calibration(SearchSpace(graph).build(Config()), graph.captured.args, graph.captured.kwargs, data)
        scores[recal] = (log.facts["chosen"]["loss"], calibration.score(pruned).loss)
    for recal, (searched, delivered) in scores.items():
        assert searched == pytest.approx(delivered, rel=1e-4), recal
    assert scores[True][0] != pytest.approx(scores[False][0], rel=1e-3)


def test_greedy_refinement_spends_the_slack_a_coarse_step_left(ladder):
    """From a configuration measured far below the budget, refine widens groups back: the result still
    meets the budget by measurement, is nowhere narrower than the start, and scores better."""
    from graphprune.search.calibration import Calibration
    from graphprune.search.context import SearchContext
    from graphprune.search.greedy import refine
    from graphprune.search.record import SearchLog
    from graphprune.search.table import fit_table

    _, _, graph = ladder
    space = SearchSpace(graph)
    oracle = mocked(graph)
    calibration = Calibration(space.build(Config()), graph.captured.args, graph.captured.kwargs)
    table = fit_table(space, lambda c: oracle.measure(c, 1))
    ctx = SearchContext(space, calibration, oracle, table, make_budget(target_latency=0.6), SearchLog("greedy"), 4)
    coarse = space.uniform(0.9)
    assert ctx.confirm(coarse) < 0.6 * 0.8
    refined = refine(ctx, coarse)
    assert ctx.meets(refined) and refined != coarse
    assert all(refined.width(k) >= coarse.width(k) for k in space.knobs)
    assert ctx.evaluate(refined).metric > ctx.evaluate(coarse).metric


class _Underrating(MockOracle):
    """The table batch (1) sees a third of the latency the latency batch saves, as a batch of 1 can."""

    def measure(self, config, batch):
        m = super().measure(config, batch)
        if batch != 1:
            return m
        r = 1.0 - (1.0 - m.ratio) / 3
        return type(m)(r, r * self.base_ms, self.base_ms, 0.0, batch, 0.0)


@pytest.mark.parametrize("name", ["uniform", "greedy"])
def test_a_table_that_underrates_savings_is_corrected_by_measuring(ladder, name):
    """When the table says not even the most pruned point fits, the search measures instead of giving up:
    the chosen point meets the budget and is not far below it."""
    _, _, graph = ladder
    oracle = _Underrating(macs_latency(SearchSpace(graph)))
    _, log = search(graph, make_budget(target_latency=0.6), name, oracle=oracle)
    assert log.facts["final"]["budget_met"]
    assert log.facts["final"]["latency_ratio"] >= 0.6 * 0.8

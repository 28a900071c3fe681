"""Budgets: choose every group's width so the pruned model costs a target fraction of the original.

Cost-aware global ranking. A candidate channel c of group g is ranked by

    p(c) = s_norm(c) / delta_g

its normalised score (graphprune.plan.cuts.normalized) over delta_g, what removing one channel of g
saves (MACs or parameters, measured exactly with graphprune.cost.macs on a plan that narrows g
alone). The cheapest importance per unit saved goes first. The number k of channels taken from
that order (each group at most `max_group_ratio`, widths rounded to `round_to`) is found by
bisection on the exact cost of the finished plan. cost(k) falls in steps: when the step across
the target is one group's rounding jump that overshoots, that group is closed at its count before
the step and the bisection repeats; then one-group steps (a group's next width up or down) move
the cost closer to the target while they can.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from graphprune.cost import macs as cost
from graphprune.plan import cuts
from graphprune.plan.constraints import finalize
from graphprune.plan.types import Plan

log = logging.getLogger(__name__)


def _measure(kind: str):
    return cost.plan_macs if kind == "macs" else cost.plan_params


class _Evaluator:
    """cost(picks) of the finished plan, remembered by its removed set."""

    def __init__(self, graph, scores, opts, kind: str):
        self.graph, self.scores, self.opts = graph, scores, opts
        self.measure = _measure(kind)
        self.calls = 0

    def __call__(self, picks: dict) -> tuple[int, np.ndarray, tuple]:
        removed, decisions = finalize(self.graph, picks, self.scores, self.opts)
        self.calls += 1
        return self.measure(Plan(self.graph, self.opts, removed, decisions)), removed, decisions


def _marginal(graph, evaluate: _Evaluator, norm: np.ndarray, full: int) -> dict:
    """Group index -> cost saved per channel when that group alone loses ~10% (at least round_to)."""
    saved = {}
    for g in graph.groups:
        if len(g.channels) == 0:
            continue
        k = max(1, min(len(g.channels) - 1, max(evaluate.opts.round_to, len(g.channels) // 10)))
        order = g.channels[np.argsort(norm[g.channels], kind="stable")]
        c, removed, _ = evaluate({g.index: order[:k]})
        n = int(removed[g.channels].sum())
        saved[g.index] = (full - c) / n if n else 0.0
    return saved


def _counts(graph, removed: np.ndarray) -> dict:
    return {g.index: int(removed[g.channels].sum()) for g in graph.groups if len(g.channels)}


def _polish(graph, counts: dict, scores: np.ndarray, evaluate: _Evaluator, target: float, tol: float,
            rounds: int = 40) -> dict:
    """Move one group a step at a time (its next width up or down) while that brings the cost closer."""
    miss = lambda c: abs(c / target - 1.0)  # noqa: E731
    current = evaluate(cuts.lowest(graph, scores, counts))[0]
    step_limit = 4 * max(evaluate.opts.round_to, 1)
    for _ in range(rounds):
        if miss(current) <= tol:
            break
        best = None
        for g in graph.groups:
            if len(g.channels) == 0:
                continue
            cap = math.floor(evaluate.opts.max_group_ratio * len(g.channels))
            have = counts.get(g.index, 0)
            for sign in (1, -1):
                for j in range(1, step_limit + 1):
                    n = have + sign * j
                    if n < 0 or n > cap:
                        break
                    c = evaluate(cuts.lowest(graph, scores, {**counts, g.index: n}))[0]
                    if c != current:
                        if best is None or miss(c) < best[0]:
                            best = (miss(c), g.index, n, c)
                        break
        if best is None or best[0] >= miss(current):
            break
        _, gi, n, current = best
        counts = {**counts, gi: n}
    return counts


def choose(graph, scores: np.ndarray, opts, allocation: np.ndarray | None = None) -> tuple[np.ndarray, tuple]:
    """(removed, decisions) of the plan whose exact cost is closest to the options' budget.

    With `allocation` scores, those decide how many channels each group loses and `scores` which
    (then one-group steps bring the cost back to the target).
    """
    kind, fraction = opts.budget
    removed = _choose(graph, scores if allocation is None else allocation, opts)
    evaluate = _Evaluator(graph, scores, opts, kind)
    target = fraction * evaluate({})[0]
    counts = _polish(graph, _counts(graph, removed), scores, evaluate, target, opts.tolerance / 4)
    c, removed, decisions = evaluate(cuts.lowest(graph, scores, counts))
    log.info("budget %s %.3f: reached %.4f in %d cost evaluations", kind, fraction, c * fraction / target, evaluate.calls)
    return removed, decisions


def _choose(graph, scores: np.ndarray, opts) -> np.ndarray:
    """Removed mask of the prefix of the cost-aware order whose finished plan is closest to the target.

    cost(prefix) falls in steps; when the step across the target is one group's rounding jump that
    overshoots, that group is closed at its count before the step and the bisection repeats.
    """
    kind, fraction = opts.budget
    evaluate = _Evaluator(graph, scores, opts, kind)
    full, _, _ = evaluate({})
    target = fraction * full
    norm = cuts.normalized(graph, scores, opts.normalize)
    saved = _marginal(graph, evaluate, norm, full)
    priority = np.full(graph.num_channels, np.inf)
    for g in graph.groups:
        if saved.get(g.index, 0.0) > 0:
            priority[g.channels] = norm[g.channels] / saved[g.index] ** opts.cost_power
    channels, owners = cuts.ranked_pool(graph, priority)
    finite = np.isfinite(priority[channels])
    channels, owners = channels[finite], owners[finite]
    miss = lambda c: abs(c / target - 1.0)  # noqa: E731
    closed: dict = {}
    best = None
    for _ in range(len(graph.groups) + 1):
        def prefix(k: int) -> dict:
            return cuts.take(graph, channels, owners, k, opts, caps=closed)

        lo, hi = 0, len(channels)
        while lo < hi:  # smallest prefix whose finished plan costs at most the target
            mid = (lo + hi) // 2
            c, _, _ = evaluate(prefix(mid))
            lo, hi = (lo, mid) if c <= target else (mid + 1, hi)
        under, over = prefix(lo), prefix(max(lo - 1, 0))
        for picks in (under, over):
            c, removed, _ = evaluate(picks)
            if best is None or miss(c) < best[0]:
                best = (miss(c), removed)
        if best[0] <= opts.tolerance:
            break
        jumped = [gi for gi in under if len(under[gi]) != len(over.get(gi, ())) and gi not in closed]
        if not jumped:
            break
        closed[jumped[0]] = len(over.get(jumped[0], ()))
    return best[1]

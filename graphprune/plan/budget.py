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

A budget is a ceiling: the plan costs at most the target, and aims for [(1 - tolerance) target,
target]. Every plan is ranked by `_key`: any plan within the budget before any plan over it, then
the nearest. When no plan lands in that band, `Outcome` says why, as data: the cheapest plan the
options allow (every group at its cap, widths multiples of round_to) still costs more than the
target, or the widths move in steps (round_to) too coarse to land between the band's edges.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from graphprune.cost import macs as cost
from graphprune.plan import cuts
from graphprune.plan.constraints import finalize
from graphprune.plan.types import Plan

log = logging.getLogger(__name__)


def _measure(kind: str):
    return cost.plan_macs if kind == "macs" else cost.plan_params


@dataclass(frozen=True)
class Outcome:
    """What a budget reached, as fractions of the original's cost, and why it missed its band.

    `limit` is '' when the plan lands in [(1 - tolerance) target, target]; 'floor' when the cheapest
    plan the options allow (`floor`) costs more than the target; 'steps' when the nearest plan within
    the budget (`reached`) and the nearest over it (`above`) straddle the band.
    """

    kind: str  # 'macs' | 'params'
    target: float
    reached: float
    round_to: int
    max_group_ratio: float
    limit: str = ""
    floor: float | None = None  # 'floor': the cost of every group at its cap
    above: float | None = None  # 'steps': the cheapest plan seen over the target

    @property
    def met(self) -> bool:
        return not self.limit

    def why(self) -> str:
        """One sentence naming the cause and the fix; '' when the budget was met."""
        if self.limit == "floor":
            return (f"the smallest plan the options allow costs {self.floor:.3f} of the original's {self.kind} "
                    f"(each group keeps at least {1 - self.max_group_ratio:.0%} of its channels, widths multiples of "
                    f"{self.round_to}); ask for more, or lower --round-to")
        if self.limit == "steps":
            above = f" and the next one up {self.above:.3f}" if self.above is not None else ""
            return (f"at --round-to {self.round_to} widths move in steps of {self.round_to}: the nearest plan within "
                    f"the budget costs {self.reached:.3f}{above}; pass a smaller --round-to to land closer")
        return ""

    def to_dict(self) -> dict:
        return {"kind": self.kind, "target": self.target, "achieved": self.reached, "met": self.met,
                "limit": self.limit, "why": self.why()}


def verdict(kind: str, target: float, achieved: float, tolerance: float, outcome: Outcome | None = None) -> dict:
    """The report's budget entry: target and achieved fractions, whether achieved lands in
    [(1 - tolerance) target, target], and if not why (from the planner's Outcome when it has one)."""
    met = (1.0 - tolerance) * target <= achieved <= target
    why = ""
    if not met:
        why = outcome.why() if outcome is not None and not outcome.met else (
            f"the model costs {achieved:.3f} of the original's {kind}, outside [{(1 - tolerance) * target:.3f}, {target:.3f}]")
    return {"kind": kind, "target": target, "achieved": achieved, "met": met, "why": why}


def _key(c: float, target: float) -> tuple[int, float]:
    """Rank of a plan's cost against a ceiling: within the budget first, then the nearest."""
    return (0, target - c) if c <= target else (1, c - target)


class _Evaluator:
    """cost(picks) of the finished plan, remembered by its removed set; every cost seen is kept."""

    def __init__(self, graph, scores, opts, kind: str):
        self.graph, self.scores, self.opts = graph, scores, opts
        self.measure = _measure(kind)
        self.calls = 0
        self.seen: set[int] = set()

    def __call__(self, picks: dict) -> tuple[int, np.ndarray, tuple]:
        removed, decisions = finalize(self.graph, picks, self.scores, self.opts)
        self.calls += 1
        c = self.measure(Plan(self.graph, self.opts, removed, decisions))
        self.seen.add(c)
        return c, removed, decisions


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
    """Move one group a step at a time (its next width up or down) while that ranks better by `_key`."""
    current = evaluate(cuts.lowest(graph, scores, counts))[0]
    step_limit = 4 * max(evaluate.opts.round_to, 1)
    for _ in range(rounds):
        if (1.0 - tol) * target <= current <= target:
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
                        if best is None or _key(c, target) < best[0]:
                            best = (_key(c, target), g.index, n, c)
                        break
        if best is None or best[0] >= _key(current, target):
            break
        _, gi, n, current = best
        counts = {**counts, gi: n}
    return counts


def _outcome(graph, evaluate: _Evaluator, kind: str, fraction: float, full: int, reached: int) -> Outcome:
    """Whether the plan costing `reached` lands in the budget's band, and if not, why (Outcome)."""
    opts = evaluate.opts
    target = fraction * full
    out = Outcome(kind, fraction, reached / full, opts.round_to, opts.max_group_ratio)
    if (1.0 - opts.tolerance) * target <= reached <= target:
        return out
    if reached > target:
        caps = {g.index: math.floor(opts.max_group_ratio * len(g.channels)) for g in graph.groups if len(g.channels)}
        floor = min(evaluate(cuts.lowest(graph, evaluate.scores, caps))[0], reached)
        return Outcome(kind, fraction, reached / full, opts.round_to, opts.max_group_ratio, "floor", floor=floor / full)
    above = min((c for c in evaluate.seen if c > target), default=None)
    return Outcome(kind, fraction, reached / full, opts.round_to, opts.max_group_ratio, "steps",
                   above=None if above is None else above / full)


def choose(graph, scores: np.ndarray, opts, allocation: np.ndarray | None = None) -> tuple[np.ndarray, tuple, Outcome]:
    """(removed, decisions, outcome) of the plan nearest the options' budget without exceeding it.

    With `allocation` scores, those decide how many channels each group loses and `scores` which
    (then one-group steps bring the cost back under the target).
    """
    kind, fraction = opts.budget
    removed = _choose(graph, scores if allocation is None else allocation, opts)
    evaluate = _Evaluator(graph, scores, opts, kind)
    full = evaluate({})[0]
    target = fraction * full
    counts = _polish(graph, _counts(graph, removed), scores, evaluate, target, opts.tolerance / 4)
    c, removed, decisions = evaluate(cuts.lowest(graph, scores, counts))
    outcome = _outcome(graph, evaluate, kind, fraction, full, c)
    log.info("budget %s %.3f: reached %.4f in %d cost evaluations", kind, fraction, c / full, evaluate.calls)
    return removed, decisions, outcome


def _choose(graph, scores: np.ndarray, opts) -> np.ndarray:
    """Removed mask of the prefix of the cost-aware order whose finished plan ranks best by `_key`.

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
            if best is None or _key(c, target) < best[0]:
                best = (_key(c, target), removed)
        if best[0][0] == 0 and best[0][1] <= opts.tolerance * target:
            break
        jumped = [gi for gi in under if len(under[gi]) != len(over.get(gi, ())) and gi not in closed]
        if not jumped:
            break
        closed[jumped[0]] = len(over.get(jumped[0], ()))
    return best[1]

"""Moves shared by the strategies: narrowing groups, and meeting the budget along a family.

A *family* is a function t -> Config, monotone: larger t prunes more (t = 0 is the original).
`settle` finds the smallest t whose predicted latency fits the budget by bisection on the table,
measures that configuration whole, and repeats with the corrected table until a measurement meets
the budget (at most `confirmations` times), so the chosen point always rests on a measurement.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from graphprune.search.space import Config, SearchSpace

BISECTIONS = 14
TOLERANCE = 0.04  # a measured ratio this far below the budget (relative) is close enough


def narrower(space: SearchSpace, config: Config, names, fraction: float) -> Config:
    """`config` with each named group narrowed by `fraction` of its current width (at least one option)."""
    for name in names:
        knob = space.by_name[name]
        width = config.width(knob)
        target = knob.nearest(width * (1.0 - fraction))
        if target == width:
            below = [w for w in knob.options if w < width]
            target = max(below) if below else width
        config = config.narrowed(name, target, knob.full)
    return config


def smallest_fitting(fits: Callable[[float], bool], hi: float) -> float | None:
    """Smallest t in (0, hi] with fits(t), by bisection (fits monotone in t); None if hi does not fit."""
    if not fits(hi):
        return None
    lo = 0.0
    for _ in range(BISECTIONS):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if fits(mid) else (mid, hi)
    return hi


def settle(ctx, family: Callable[[float], Config], hi: float, confirmations: int = 4) -> Config:
    """The least-pruned member of `family` that meets the budget by measurement.

    Keeps a bracket (lo: measured too slow, hi: measured within the budget); each round bisects the
    corrected table inside it, measures the point found, and narrows the bracket. When the table says
    not even the end of the family fits, the end is measured (a table fitted at a small batch can
    underrate what pruning saves at the latency batch) and the bisection runs on the corrected table. It stops at a
    measurement within TOLERANCE below the budget, or after `confirmations` measurements, with the
    best point measured within the budget (the most pruned member if none was).
    """
    lo, top, best = 0.0, hi, None
    for _ in range(confirmations):
        t = smallest_fitting(lambda s, lo=lo: s > lo and ctx.fits(family(s)), top)
        if t is None:  # the table says nothing fits: measure the end once, which corrects the table
            if ctx.measured(family(top)):
                break
            t = top
        ratio = ctx.confirm(family(t))
        if ctx.budget.met(ratio):
            top, best = t, family(t)
            if ratio >= ctx.budget.fraction * (1.0 - TOLERANCE):
                break
        else:
            lo = t
    return best if best is not None else family(hi)


def along(path: list[Config]) -> Callable[[float], Config]:
    """A path of configurations (each pruning more) as a family: t -> path[ceil(t)]."""
    return lambda t: path[min(max(math.ceil(t - 1e-9), 0), len(path) - 1)]

"""`--search uniform`: one ratio for every group, found by bisection on the latency, for comparison.

family(r) = every group at (1 - r) of its width (rounded down to its options); `settle` bisects r
on the measured-and-corrected latency table and confirms the choice with a whole-model measurement.
"""

from __future__ import annotations

from graphprune.search.registry import strategy
from graphprune.search.steps import settle

MAX_RATIO = 0.95


@strategy("uniform")
def uniform(ctx):
    chosen = settle(ctx, ctx.space.uniform, MAX_RATIO)
    ctx.evaluate(chosen, note="uniform ratio")
    return chosen

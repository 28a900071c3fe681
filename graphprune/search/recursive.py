"""`--search recursive`: prune, evaluate, recurse into the surviving structure; never past --max-drop.

One round tries to narrow a set S of groups (first: all of them) by a fraction f of their current
widths, capped so the round does not overshoot the budget by the table. If the metric drop of
the result is within --max-drop it is kept and the next round starts from it (the surviving,
narrower structure). If not, S is split in two halves and each is tried on its own, recursively
down to single groups; a single group that exceeds the drop is left as it is this round. When a
round keeps nothing, f is halved; the search ends when a whole-model measurement meets the
budget, or f falls below MIN_FRACTION (stopping short of the budget rather than past --max-drop).
The rounds form a path, settled on whole-model measurements like greedy's.
Blocks are tried after each round's widths, one at a time, under the same rule.
"""

from __future__ import annotations

from graphprune.search.registry import strategy
from graphprune.search.space import Config
from graphprune.search.steps import along, narrower, settle, smallest_fitting

START_FRACTION = 0.5
MIN_FRACTION = 1 / 32


def _capped(ctx, config: Config, names: list[str], fraction: float) -> Config:
    """Narrow `names` by `fraction`, or by less if less already fits the budget by the table."""
    def step(f: float) -> Config:
        return narrower(ctx.space, config, names, f)

    f = smallest_fitting(lambda s: ctx.fits(step(s)), fraction)
    return step(f if f is not None else fraction)


def _try(ctx, config: Config, names: list[str], fraction: float) -> Config:
    if not names or ctx.fits(config):
        return config
    candidate = _capped(ctx, config, names, fraction)
    if candidate == config:
        return config
    if ctx.within_drop(ctx.evaluate(candidate, note=f"recursive: {len(names)} groups by {fraction:.3g}")):
        return candidate
    if len(names) == 1:
        return config
    half = len(names) // 2
    return _try(ctx, _try(ctx, config, names[:half], fraction), names[half:], fraction)


def _blocks(ctx, config: Config) -> Config:
    for block in ctx.space.blocks:
        if ctx.fits(config) or block in config.blocks:
            continue
        candidate = config.removing(block)
        if ctx.within_drop(ctx.evaluate(candidate, note=f"recursive: remove {block}")):
            config = candidate
    return config


@strategy("recursive")
def recursive(ctx):
    path = [Config()]
    ctx.evaluate(path[0], note="original")
    fraction = START_FRACTION
    names = [k.name for k in ctx.space.knobs]
    while fraction >= MIN_FRACTION:
        if ctx.fits(path[-1]):
            chosen = settle(ctx, along(path), len(path) - 1)
            if ctx.budget.met(ctx.confirm(chosen)):
                return chosen
            continue  # measured too slow: the table is corrected, go on from the end of the path
        nxt = _blocks(ctx, _try(ctx, path[-1], names, fraction))
        if nxt == path[-1]:
            fraction /= 2
        else:
            path.append(nxt)
    return settle(ctx, along(path), len(path) - 1)

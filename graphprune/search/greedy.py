"""`--search greedy`: NetAdapt-like; each step takes the move with the least calibration-loss
increase per unit of latency saved, until a whole-model measurement meets the budget.

A move narrows one group, or removes one block. Each group's move is the smallest narrowing
whose predicted saving reaches delta = (1 - budget) / STEPS of the original latency (or a
quarter of the group's width, whichever comes first), so all moves save about the same and a
search takes about STEPS steps whatever the number of groups; near the budget delta shrinks to
the gap left (plus a quarter step), so the last step does not overshoot by much. Value of a move m at config c:

    v(m) = (loss(c + m) - loss(c)) / (ratio(c) - ratio(c + m))      (lower is better)

Lazy evaluation keeps it frugal: values from earlier steps are kept; each step re-scores the
best stale move, takes it if it is still the best, and re-scores at most RESCORE moves before
taking the best fresh one. Moves that save nothing by the table, or whose metric drop would
exceed --max-drop, are not taken; when none is left the search stops short of the budget.

The steps form a path; once the table says its end fits, `settle` measures along the path
(bisection, whole models) for the shortest prefix that meets the budget; if the measurement says
the end is still too slow, the path goes on.

A last step can be coarse (a group with few options, a block), leaving the measured latency well
below the budget. `refine` then spends that slack: from the chosen configuration it widens one
group by one option (or restores one block) at a time, the move with the most loss recovered per
unit of predicted latency added, among those the corrected table says still fit and that recover
some loss; the widened path is settled on whole-model measurements like the first, and falls back
to the chosen configuration.
"""

from __future__ import annotations

import dataclasses
import logging

from graphprune.search.registry import strategy
from graphprune.search.space import Config
from graphprune.search.steps import TOLERANCE, along, settle

log = logging.getLogger(__name__)
STEPS = 10
RESCORE = 2


def _move(ctx, config: Config, name: str, delta: float) -> Config | None:
    """The narrowing of one group that saves about delta by the table's single-group line (cheap)."""
    knob = ctx.space.by_name[name]
    width = config.width(knob)
    cap = width - knob.full / 4
    best = None
    for w in (w for w in knob.options if w < width):
        best = config.narrowed(name, w, knob.full)
        if ctx.table.alone_latency(knob, width, w) >= delta or w <= cap:
            break
    return best


def moves(ctx, config: Config, delta: float) -> dict[str, Config]:
    gap = ctx.estimate(config) - ctx.budget.fraction  # near the budget, steps shrink to what is left
    delta = min(delta, max(gap, 0.0) + 0.25 * delta)
    found = {k.name: _move(ctx, config, k.name, delta) for k in ctx.space.knobs}
    for block in ctx.space.blocks:
        if block not in config.blocks:
            found[f"block:{block}"] = config.removing(block)
    return {name: c for name, c in found.items() if c is not None}


def _value(ctx, config: Config, loss: float, nxt: Config) -> float | None:
    """Loss increase per latency saved (exact-MACs table); None: saves nothing, or past --max-drop."""
    saved = ctx.estimate(config) - ctx.estimate(nxt)
    if saved <= 0:
        return None
    score = ctx.evaluate(nxt, note="greedy candidate")
    if not ctx.within_drop(score):
        return None
    return (score.loss - loss) / saved


def _widening_value(ctx, config: Config, loss: float, nxt: Config) -> float | None:
    """Minus the loss recovered per latency added (lower is better, as for _value); None: recovers no loss
    (on random-init models a wider group can move the outputs further from the original's), or past --max-drop."""
    added = max(ctx.estimate(nxt) - ctx.estimate(config), 1e-6)
    score = ctx.evaluate(nxt, note="greedy refinement")
    if score.loss >= loss or not ctx.within_drop(score):
        return None
    return (score.loss - loss) / added


def _pick(ctx, config: Config, loss: float, options: dict[str, Config], stale: dict, worth=_value) -> str | None:
    fresh: dict[str, float] = {}
    for name in [n for n in options if n not in stale]:
        value = worth(ctx, config, loss, options[name])
        stale[name] = value if value is not None else float("inf")
        fresh[name] = stale[name]
    for _ in range(RESCORE):
        top = min((n for n in options if stale[n] < float("inf")), key=lambda n: stale[n], default=None)
        if top is None or top in fresh:
            break
        value = worth(ctx, config, loss, options[top])
        stale[top] = fresh[top] = value if value is not None else float("inf")
    usable = {n: v for n, v in fresh.items() if v < float("inf")}
    if not usable:  # the leaders lost their worth since they were scored: score every other one before giving up
        for name in [n for n in options if n not in fresh and stale[n] < float("inf")]:
            value = worth(ctx, config, loss, options[name])
            stale[name] = value if value is not None else float("inf")
            if value is not None:
                usable[name] = value
    return min(usable, key=usable.get) if usable else None


@strategy("greedy")
def greedy(ctx):
    path = [Config()]
    loss = ctx.evaluate(path[0], note="original").loss
    delta = (1.0 - ctx.budget.fraction) / STEPS
    stale: dict[str, float] = {}
    while True:
        while not ctx.fits(path[-1]):
            options = moves(ctx, path[-1], delta)
            name = _pick(ctx, path[-1], loss, options, stale)
            if name is None:
                log.warning("greedy: no move left within --max-drop; stopping short of the budget")
                return settle(ctx, along(path), len(path) - 1)
            path.append(options[name])
            loss = ctx.evaluate(path[-1]).loss
            stale.pop(name)  # its next move is a different narrowing
            ctx.progress(f"greedy step {len(path) - 1}: {name}, latency {ctx.estimate(path[-1]):.3f} (predicted)")
        chosen = settle(ctx, along(path), len(path) - 1)
        if ctx.budget.met(ctx.confirm(chosen)):
            return refine(ctx, chosen)


def widenings(ctx, config: Config) -> dict[str, Config]:
    """Each narrowed group one option wider, each removed block restored: those the table says still fit."""
    found = {}
    for name, width in config.widths:
        knob = ctx.space.by_name.get(name)
        if knob is not None:
            wider = knob.options[max(knob.options.index(width) - 1, 0)] if width in knob.options else knob.full
            found[name] = config.narrowed(name, wider, knob.full)
    for block in config.blocks:
        found[f"block:{block}"] = dataclasses.replace(config, blocks=tuple(b for b in config.blocks if b != block))
    return {name: c for name, c in found.items() if c != config and ctx.fits(c)}


def refine(ctx, chosen: Config) -> Config:
    """Widen `chosen` (measured within the budget) toward the budget while the table says it fits; settled
    on measurements, so the result meets the budget by measurement (`chosen` itself at worst)."""
    if ctx.confirm(chosen) >= ctx.budget.fraction * (1.0 - TOLERANCE):
        return chosen
    path, stale = [chosen], {}
    loss = ctx.evaluate(chosen).loss
    while options := widenings(ctx, path[-1]):
        name = _pick(ctx, path[-1], loss, options, stale, worth=_widening_value)
        if name is None:
            break
        path.append(options[name])
        loss = ctx.evaluate(path[-1]).loss
        stale.pop(name)
        ctx.progress(f"greedy refinement {len(path) - 1}: {name} wider, latency {ctx.estimate(path[-1]):.3f} (predicted)")
    if len(path) == 1:
        return chosen
    widest_first = path[::-1]
    return settle(ctx, along(widest_first[:1] + widest_first), len(path))

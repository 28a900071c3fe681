"""`--search random`: K seeded samples on the budget, each scored on calibration data; the best wins.

Sample k draws a direction: per group a weight v_g ~ U(0, 1), and each block removed with
probability 1/4 (when blocks are searched). Its family is

    t -> group g at (1 - min(t * v_g, 1)) of its width, the drawn blocks removed

and the sample is the family's least-pruned point that fits the budget (bisection on the table).
The best-scoring sample is then settled on a whole-model measurement along its own family.
Everything random comes from numpy's default_rng(seed): the same seed gives the same search.
"""

from __future__ import annotations

import numpy as np

from graphprune.search.registry import strategy
from graphprune.search.space import Config
from graphprune.search.steps import settle, smallest_fitting


def _family(space, weights: dict, blocks: tuple):
    def at(t: float) -> Config:
        config = Config()
        for block in blocks:
            config = config.removing(block)
        for knob in space.knobs:
            config = config.narrowed(knob.name, knob.nearest(knob.full * (1.0 - min(t * weights[knob.name], 1.0))),
                                     knob.full)
        return config

    return at


@strategy("random")
def random_search(ctx):
    rng = np.random.default_rng(ctx.seed)
    best = None
    for k in range(ctx.samples):
        weights = {knob.name: float(rng.uniform(0.05, 1.0)) for knob in ctx.space.knobs}
        blocks = tuple(b for b in ctx.space.blocks if rng.uniform() < 0.25)
        family = _family(ctx.space, weights, blocks)
        hi = 1.0 / min(weights.values(), default=1.0)
        t = smallest_fitting(lambda s, family=family: ctx.fits(family(s)), hi)
        if t is None:
            continue
        score = ctx.evaluate(family(t), note=f"random sample {k}")
        if best is None or score.metric > best[0]:
            best = (score.metric, family, hi)
    if best is None:  # nothing fits even fully narrowed: the narrowest uniform point
        return ctx.space.uniform(0.95)
    chosen = settle(ctx, best[1], best[2])
    ctx.evaluate(chosen, note="best random sample, settled on a measurement")
    return chosen

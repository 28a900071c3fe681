"""Tensors filled with a constant: zeros, ones, full, empty and their `new_*` forms.

Every element is the same value, so any subset of them is the same tensor, smaller:
their dims relate to nothing and may take whatever size their consumers need.
Rewrite: the size argument becomes the new output shape. (`arange` is not here: its
values are indices, so its dims stay frozen.)
"""

from __future__ import annotations

import torch

from graphprune.rules.registry import RewriteContext, RuleContext, rule
from graphprune.rules.spaces import int_size

aten = torch.ops.aten

SIZE_ARG = {
    aten.zeros.default: 0, aten.ones.default: 0, aten.empty.memory_format: 0, aten.full.default: 0,
    aten.new_zeros.default: 1, aten.new_ones.default: 1, aten.new_empty.default: 1, aten.new_full.default: 1,
}


def _size_rewrite(ctx: RewriteContext) -> None:
    index = SIZE_ARG[ctx.old.target]
    old = ctx.old.args[index]
    shape = ctx.new_shape((ctx.old, None))
    new = [int_size(shape[d]) if isinstance(s, int) else ctx.new.args[index][d] for d, s in enumerate(old)]
    ctx.set_arg(index, new)


@rule(*SIZE_ARG, rewrite=_size_rewrite)
def constant_fill(ctx: RuleContext) -> None:
    out = ctx.out()
    for d in range(len(ctx.shape(out))):
        ctx.claim(out, d)
    for value in ctx.inputs():  # new_*(self, ...) reads only self's dtype and device
        for d in range(len(ctx.shape(value))):
            ctx.claim(value, d)

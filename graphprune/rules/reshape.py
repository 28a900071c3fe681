"""view / reshape / flatten / unflatten / squeeze / unsqueeze: indices moved by the reshape's runs
(graphprune.rules.factors), a channel shuffle by its permutation (graphprune.rules.shuffle).

In a run where one dim maps to several, element f of the single dim relates to one factor, the largest
(the channel of a flatten into a Linear: one channel = a block of H*W features); the other factors are
frozen. Runs with several dims on both sides are frozen.

Rewrite: every integer size argument is replaced by the new size of the output dim it names; -1 and
symbolic sizes are left alone.
"""

from __future__ import annotations

import math
import operator

import numpy as np
import torch
import torch.fx as fx

from graphprune.reasons import Cause
from graphprune.rules.factors import factor_plan
from graphprune.rules.registry import RewriteContext, RuleContext, dim_index, rule
from graphprune.rules.shuffle import shuffle_couple, shuffle_of, shuffle_rewrite
from graphprune.rules.spaces import composite, int_size

aten = torch.ops.aten


def _split(ctx: RuleContext, one, d_one: int, many, factors: list) -> None:
    """Relate the single dim `one[d_one]` to one factor among `many`'s (see module docstring)."""
    dims = [d for d, _ in factors]
    sizes = [n for _, n in factors]
    pick = ctx.choose_factor(many, dims, sizes)
    stride = math.prod(sizes[pick + 1:])
    f = np.arange(math.prod(sizes))
    ctx.link(one, d_one, f, many, dims[pick], (f // stride) % sizes[pick])
    for k, d in enumerate(dims):
        if k != pick:
            ctx.freeze(many, d, "a reshape splits this factor off a pruned dim; it is kept whole",
                       cause=Cause.RESHAPE_FACTOR)


def reshape_couple(ctx: RuleContext) -> None:
    shuffle = shuffle_of(ctx.node)
    if shuffle is not None:
        shuffle_couple(ctx, shuffle)
        return
    x, out = ctx.arg(0), ctx.out()
    sx, so = ctx.shape(x), ctx.shape(out)
    layouts = {d: ctx.spaces.layout[(x, d)] for d in range(len(sx)) if (x, d) in ctx.spaces.layout}
    found = factor_plan(sx, so, layouts)
    if found is None:
        return  # unclaimed: frozen
    runs, out_layouts = found
    for d, layout in out_layouts.items():
        ctx.spaces.layout[(out, d)] = layout
    for value, shape in ((x, sx), (out, so)):  # pure batch dims pass through untouched
        for d, size in enumerate(shape):
            if int_size(size) is None and composite(size) is None:
                ctx.claim(value, d)
    for gi, gj in runs:
        if not gi or not gj:
            for d, _ in gi:
                ctx.claim(x, d)
            for d, _ in gj:
                ctx.claim(out, d)
        elif len(gi) == 1 and len(gj) == 1:
            k = np.arange(gi[0][1])
            ctx.link(x, gi[0][0], k, out, gj[0][0], k)
        elif len(gi) == 1:
            _split(ctx, x, gi[0][0], out, gj)
        elif len(gj) == 1:
            _split(ctx, out, gj[0][0], x, gi)
        # several dims on both sides: left unclaimed, frozen


def _batch_merged(ctx: RewriteContext, entry, value, d: int):
    """A size argument for a c * batch dim whose c indices shrank: (entry // c) * c'."""
    comp = composite(ctx.old_shape(value)[d])
    keep = ctx.keep((value, d))
    if comp is None or keep is None or len(keep) == comp[0]:
        return entry
    graph = ctx.new.graph
    with graph.inserting_before(ctx.new):
        batch = graph.call_function(operator.floordiv, (entry, comp[0]))
        return graph.call_function(operator.mul, (batch, len(keep)))


def sizes_rewrite(ctx: RewriteContext, index: int) -> None:
    """Replace the entries of the size list at args[index] with the new output sizes."""
    sizes = ctx.old.args[index]
    if not isinstance(sizes, (list, tuple)):
        return
    out = (ctx.old, None)
    out_shape = ctx.new_shape(out)
    offset = len(out_shape) - len(sizes)
    new_sizes = list(ctx.new.args[index])
    for k, s in enumerate(sizes):
        if isinstance(s, fx.Node):
            new_sizes[k] = _batch_merged(ctx, new_sizes[k], out, offset + k)
        elif isinstance(s, int) and not isinstance(s, bool) and s != -1:
            new = int_size(out_shape[offset + k])
            if new is not None:
                new_sizes[k] = new
    ctx.set_arg(index, new_sizes)


def _view_rewrite(ctx: RewriteContext) -> None:
    shuffle = shuffle_of(ctx.old)
    if shuffle is not None:
        if ctx.old is shuffle.merge:
            shuffle_rewrite(ctx, shuffle)
        return  # the split's sizes do not matter: it is erased with the merge's rewrite
    sizes_rewrite(ctx, 1)


def _flatten_rewrite(ctx: RewriteContext) -> None:
    """flatten(x, start=0, end=-1) carries no sizes: only a channel shuffle's merge changes."""
    shuffle = shuffle_of(ctx.old)
    if shuffle is not None and ctx.old is shuffle.merge:
        shuffle_rewrite(ctx, shuffle)


def _unflatten_rewrite(ctx: RewriteContext) -> None:
    """unflatten(x, dim, sizes): sizes name output dims dim .. dim + len(sizes) - 1."""
    dim = dim_index(ctx.old.args[1], len(ctx.old.args[0].meta["val"].shape))
    out_shape = ctx.new_shape((ctx.old, None))
    sizes = [int_size(out_shape[dim + k]) if s != -1 else -1 for k, s in enumerate(ctx.old.args[2])]
    ctx.set_arg(2, sizes)


rule(aten.view.default, aten.reshape.default, aten._unsafe_view.default,
     rewrite=_view_rewrite)(reshape_couple)
rule(aten.flatten.using_ints, rewrite=_flatten_rewrite)(reshape_couple)
rule(aten.squeeze.dim, aten.squeeze.dims, aten.squeeze.default, aten.unsqueeze.default)(reshape_couple)
rule(aten.unflatten.int, rewrite=_unflatten_rewrite)(reshape_couple)

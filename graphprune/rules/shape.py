"""Shape ops: views, reshapes, flatten, permutes, squeeze/unsqueeze, expand.

A reshape is factorised into runs of input dims and output dims with equal products
(symbolic dims must match one to one). In a run where one dim of size n = s_1 * ... * s_k
maps to several, the flat index f = sum_j i_j * stride_j relates element f of the single
dim to element i_* = (f // stride_*) % s_* of ONE factor, the largest (the channel of a
flatten into a Linear: one channel = a block of H*W features; the 24 of a 2 x 24 channel
shuffle). The other factors are frozen, so they are always kept whole and the kept set
stays a rectangle. Runs with several dims on both sides are frozen.

Rewrite: every integer size argument is replaced by the new size of the output dim it
names; -1 and symbolic sizes are left alone.
"""

from __future__ import annotations

import torch

from graphprune.rules.registry import RewriteContext, RuleContext, dim_index, rule
from graphprune.rules.reshape import reshape_couple, sizes_rewrite
from graphprune.rules.shuffle import shuffle_of

aten = torch.ops.aten




@rule(aten.view_as.default, aten.reshape_as.default)
def reshape_as(ctx: RuleContext) -> None:
    """x.reshape_as(other): as a reshape to other's shape, and other's dim d is out's dim d: the
    rewritten graph reads other's pruned shape at run time (weight standardisation reshapes a
    normalised copy of a conv weight back as the weight)."""
    reshape_couple(ctx)
    other, out = ctx.arg(1), ctx.out()
    for d in range(len(ctx.shape(out))):
        ctx.same(other, d, out, d)


@rule(aten.permute.default)
def permute(ctx: RuleContext) -> None:
    """out.dim(k) = x.dim(perm[k])."""
    x, out = ctx.arg(0), ctx.out()
    rank = len(ctx.shape(x))
    for k, p in enumerate(ctx.node.args[1]):
        ctx.same(x, dim_index(p, rank), out, k)


@rule(aten.transpose.int, aten.swapaxes.default if hasattr(aten, "swapaxes") else None)
def transpose(ctx: RuleContext) -> None:
    """out = x with dims a and b exchanged (inside a channel shuffle, a and b relate to nothing)."""
    x, out = ctx.arg(0), ctx.out()
    rank = len(ctx.shape(x))
    a, b = dim_index(ctx.node.args[1], rank), dim_index(ctx.node.args[2], rank)
    inside = shuffle_of(ctx.node) is not None
    for d in range(rank):
        if inside and d in (a, b):
            ctx.claim(x, d)
            ctx.claim(out, d)
            continue
        ctx.same(x, d, out, b if d == a else a if d == b else d)


@rule(aten.t.default, aten.numpy_T.default if hasattr(aten, "numpy_T") else None)
def t(ctx: RuleContext) -> None:
    x, out = ctx.arg(0), ctx.out()
    rank = len(ctx.shape(x))
    for d in range(rank):
        ctx.same(x, d, out, rank - 1 - d)


def _expand_rewrite(ctx: RewriteContext) -> None:
    sizes_rewrite(ctx, 1)


@rule(aten.expand.default, rewrite=_expand_rewrite)
def expand(ctx: RuleContext) -> None:
    """out[..., i, ...] = x[..., i or 0, ...]: kept dims relate; a broadcast dim holds copies of one
    element, so any subset of it is the same tensor, smaller: it relates to nothing and its size
    argument is rewritten (a padding mask broadcast over attention heads follows the heads)."""
    x, out = ctx.arg(0), ctx.out()
    rx, ro = len(ctx.shape(x)), len(ctx.shape(out))
    for od in range(ro - rx):
        ctx.claim(out, od)
    for d in range(rx):
        od = ro - rx + d
        if ctx.size(x, d) == 1 and ctx.size(out, od) != 1:
            ctx.claim(x, d)
            ctx.claim(out, od)
        else:
            ctx.same(x, d, out, od)


@rule(aten.roll.default)
def roll(ctx: RuleContext) -> None:
    """out = x cyclically shifted along `dims`: the shifted dims are frozen, the others pass."""
    x, out = ctx.arg(0), ctx.out()
    rank = len(ctx.shape(x))
    dims = ctx.node.args[2] if len(ctx.node.args) > 2 else ctx.node.kwargs.get("dims", [])
    dims = [dims] if isinstance(dims, int) else list(dims)
    rolled = {dim_index(d, rank) for d in dims} if dims else set(range(rank))
    for d in range(rank):
        if d not in rolled:
            ctx.same(x, d, out, d)


@rule(aten.constant_pad_nd.default, aten.pad.default)
def pad(ctx: RuleContext) -> None:
    """out = x padded on its last len(pad) // 2 dims (pairs listed from the last dim back):
    a dim padded by (0, 0), or not named, passes; a padded dim is frozen."""
    x, out = ctx.arg(0), ctx.out()
    rank = len(ctx.shape(x))
    amounts = ctx.node.args[1]
    for d in range(rank):
        k = rank - 1 - d
        if 2 * k + 1 >= len(amounts) or (amounts[2 * k] == 0 and amounts[2 * k + 1] == 0):
            ctx.same(x, d, out, d)


@rule(aten.index.Tensor)
def index(ctx: RuleContext) -> None:
    """out = x[idx] with one index tensor on dim 0: out[*i, rest] = x[idx[*i], rest].

    The indexed dim is frozen; the index's dims are out's leading dims; x's other dims pass.
    """
    x, out = ctx.arg(0), ctx.out()
    indices = ctx.node.args[1]
    if len(indices) != 1 or indices[0] is None:
        return
    idx = (indices[0], None)
    lead = len(ctx.shape(idx))
    for d in range(lead):
        ctx.same(idx, d, out, d)
    for d in range(1, len(ctx.shape(x))):
        ctx.same(x, d, out, lead + d - 1)

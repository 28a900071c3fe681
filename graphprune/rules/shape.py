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

import math
import operator

import numpy as np
import torch
import torch.fx as fx

from graphprune.rules.registry import RewriteContext, RuleContext, rule
from graphprune.spaces import composite, int_size

aten = torch.ops.aten


def _int_runs(left: list, right: list) -> list[tuple[list, list]] | None:
    """Pair runs of integer factors (d, n) with equal products; size-1 factors stand alone."""
    runs, i, j = [], 0, 0
    while i < len(left) or j < len(right):
        if i < len(left) and left[i][1] == 1:
            runs.append(([left[i]], []))
            i += 1
            continue
        if j < len(right) and right[j][1] == 1:
            runs.append(([], [right[j]]))
            j += 1
            continue
        if i >= len(left) or j >= len(right):
            return None
        gi, gj, pi, pj = [left[i]], [right[j]], left[i][1], right[j][1]
        i, j = i + 1, j + 1
        while pi != pj:
            if pi < pj:
                if i >= len(left):
                    return None
                pi *= left[i][1]
                gi.append(left[i])
                i += 1
            else:
                if j >= len(right):
                    return None
                pj *= right[j][1]
                gj.append(right[j])
                j += 1
        runs.append((gi, gj))
    return runs


def _factors(shape: tuple, layouts: dict) -> list | None:
    """A shape as a sequence of ('s', d, symbol) and ('i', d, n) factors, major first.

    An integer dim is one factor; the batch symbol is one; c * batch is two, ordered by its
    recorded layout ('sc': batch major). None if a size is any other expression or a
    layout is unknown.
    """
    out = []
    for d, size in enumerate(shape):
        n = int_size(size)
        if n is not None:
            out.append(("i", d, n))
            continue
        comp = composite(size)
        if comp is None:
            if not size.node.expr.is_Symbol:
                return None
            out.append(("s", d, str(size.node.expr)))
            continue
        layout = layouts.get(d)
        if layout is None:
            return None
        pair = [("s", d, str(comp[1])), ("i", d, comp[0])]
        out.extend(pair if layout == "sc" else pair[::-1])
    return out


def _segments(factors: list) -> tuple[list, list]:
    """Split at symbols: (symbols in order, integer factors (d, n) between them)."""
    symbols, segments = [], [[]]
    for kind, d, x in factors:
        if kind == "s":
            symbols.append(x)
            segments.append([])
        else:
            segments[-1].append((d, x))
    return symbols, segments


def factor_plan(src: tuple, dst: tuple, src_layouts: dict) -> tuple[list, dict] | None:
    """Runs of integer factors with equal products between src and dst, and the layouts
    that dst's batch-merged dims must then have; None when the reshape cannot be followed."""
    left = _factors(src, src_layouts)
    if left is None:
        return None
    merged = [d for d, size in enumerate(dst) if composite(size) is not None]
    for choice in range(2 ** len(merged)):
        layouts = {d: ("sc" if (choice >> k) & 1 == 0 else "cs") for k, d in enumerate(merged)}
        right = _factors(dst, layouts)
        if right is None:
            continue
        sym_l, seg_l = _segments(left)
        sym_r, seg_r = _segments(right)
        if sym_l != sym_r:
            continue
        runs = []
        for a, b in zip(seg_l, seg_r, strict=True):
            found = _int_runs(a, b)
            if found is None:
                break
            runs.extend(found)
        else:
            return runs, layouts
    return None


def factor_runs(src: tuple, dst: tuple) -> list[tuple[list[int], list[int]]] | None:
    """Dims of src and dst paired in runs of equal product (no batch-merged dims)."""
    plan = factor_plan(src, dst, {})
    if plan is None:
        return None
    return [([d for d, _ in a], [d for d, _ in b]) for a, b in plan[0]]


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
            ctx.freeze(many, d, "a reshape splits this factor off a pruned dim; it is kept whole")


def reshape_couple(ctx: RuleContext) -> None:
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


def _sizes_rewrite(ctx: RewriteContext, index: int) -> None:
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
    _sizes_rewrite(ctx, 1)


def _unflatten_rewrite(ctx: RewriteContext) -> None:
    """unflatten(x, dim, sizes): sizes name output dims dim .. dim + len(sizes) - 1."""
    dim = ctx.old.args[1] % len(ctx.old.args[0].meta["val"].shape)
    out_shape = ctx.new_shape((ctx.old, None))
    sizes = [int_size(out_shape[dim + k]) if s != -1 else -1 for k, s in enumerate(ctx.old.args[2])]
    ctx.set_arg(2, sizes)


rule(aten.view.default, aten.reshape.default, aten._unsafe_view.default,
     rewrite=_view_rewrite)(reshape_couple)
rule(aten.flatten.using_ints, aten.squeeze.dim, aten.squeeze.dims, aten.squeeze.default,
     aten.unsqueeze.default, aten.view_as.default if hasattr(aten, "view_as") else None,
     aten.reshape_as.default if hasattr(aten, "reshape_as") else None)(reshape_couple)
rule(aten.unflatten.int, rewrite=_unflatten_rewrite)(reshape_couple)


@rule(aten.permute.default)
def permute(ctx: RuleContext) -> None:
    """out.dim(k) = x.dim(perm[k])."""
    x, out = ctx.arg(0), ctx.out()
    rank = len(ctx.shape(x))
    for k, p in enumerate(ctx.node.args[1]):
        ctx.same(x, p % rank, out, k)


@rule(aten.transpose.int, aten.swapaxes.default if hasattr(aten, "swapaxes") else None)
def transpose(ctx: RuleContext) -> None:
    """out = x with dims a and b exchanged."""
    x, out = ctx.arg(0), ctx.out()
    rank = len(ctx.shape(x))
    a, b = ctx.node.args[1] % rank, ctx.node.args[2] % rank
    for d in range(rank):
        ctx.same(x, d, out, b if d == a else a if d == b else d)


@rule(aten.t.default, aten.numpy_T.default if hasattr(aten, "numpy_T") else None)
def t(ctx: RuleContext) -> None:
    x, out = ctx.arg(0), ctx.out()
    rank = len(ctx.shape(x))
    for d in range(rank):
        ctx.same(x, d, out, rank - 1 - d)


def _expand_rewrite(ctx: RewriteContext) -> None:
    _sizes_rewrite(ctx, 1)


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
    rolled = {d % rank for d in dims} if dims else set(range(rank))
    for d in range(rank):
        if d not in rolled:
            ctx.same(x, d, out, d)


@rule(aten.constant_pad_nd.default, aten.pad.default)
def pad(ctx: RuleContext) -> None:
    """out = x padded on its last len(pad) // 2 dims: those are frozen, the others pass."""
    x, out = ctx.arg(0), ctx.out()
    rank = len(ctx.shape(x))
    padded = len(ctx.node.args[1]) // 2
    for d in range(rank - padded):
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

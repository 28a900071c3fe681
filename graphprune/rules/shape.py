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

import numpy as np
import sympy
import torch
import torch.fx as fx

from graphprune.rules.registry import RewriteContext, RuleContext, rule
from graphprune.spaces import int_size

aten = torch.ops.aten


def _expr(size):
    """A size as something products and equality work on: int, or the SymInt's sympy expression."""
    n = int_size(size)
    return n if n is not None else size.node.expr


def _equal(pi, pj) -> bool:
    if isinstance(pi, int) and isinstance(pj, int):
        return pi == pj
    return sympy.simplify(sympy.sympify(pi) - sympy.sympify(pj)) == 0


def _advance_left(pi, pj) -> bool:
    """True if the left run's product should grow next: it lacks a symbol the right has, or is smaller."""
    if isinstance(pi, int) and isinstance(pj, int):
        return pi < pj
    si, sj = sympy.sympify(pi), sympy.sympify(pj)
    if sj.free_symbols - si.free_symbols:
        return True
    if si.free_symbols - sj.free_symbols:
        return False
    ratio = sympy.simplify(sj / si)
    return bool(ratio.is_number and ratio > 1)


def factor_runs(src: tuple, dst: tuple) -> list[tuple[list[int], list[int]]] | None:
    """Pair runs of dims of `src` and `dst` with equal products; None if it cannot.

    Sizes may be symbolic (the batch): products are then compared as sympy expressions.
    """
    runs, i, j = [], 0, 0
    n, m = len(src), len(dst)
    while i < n or j < m:
        si = _expr(src[i]) if i < n else None
        dj = _expr(dst[j]) if j < m else None
        if i < n and si == 1 and dj != 1:
            runs.append(([i], []))
            i += 1
            continue
        if j < m and dj == 1 and si != 1:
            runs.append(([], [j]))
            j += 1
            continue
        if i >= n or j >= m:
            return None
        gi, gj, pi, pj = [i], [j], si, dj
        i, j = i + 1, j + 1
        for _ in range(n + m):
            if _equal(pi, pj):
                break
            if _advance_left(pi, pj):
                if i >= n:
                    return None
                pi = pi * _expr(src[i])
                gi.append(i)
                i += 1
            else:
                if j >= m:
                    return None
                pj = pj * _expr(dst[j])
                gj.append(j)
                j += 1
        else:
            return None
        runs.append((gi, gj))
    return runs


def _split(ctx: RuleContext, one, d_one, many, dims: list[int]) -> None:
    """Relate the single dim `one[d_one]` to one factor among `many[dims]` (see module docstring)."""
    sizes = [ctx.size(many, d) for d in dims]
    if ctx.size(one, d_one) is None or any(s is None for s in sizes):
        for d in dims:  # a run through the symbolic batch: nothing in it is prunable
            ctx.freeze(many, d, "a reshape merges this dim with the batch")
        ctx.freeze(one, d_one, "a reshape merges this dim with the batch")
        return
    pick = ctx.choose_factor(many, dims)
    stride = math.prod(sizes[pick + 1:])
    f = np.arange(math.prod(sizes))
    ctx.link(one, d_one, f, many, dims[pick], (f // stride) % sizes[pick])
    for k, d in enumerate(dims):
        if k != pick:
            ctx.freeze(many, d, "a reshape splits this factor off a pruned dim; it is kept whole")


def reshape_couple(ctx: RuleContext) -> None:
    x, out = ctx.arg(0), ctx.out()
    runs = factor_runs(ctx.shape(x), ctx.shape(out))
    if runs is None:
        return  # unclaimed: frozen
    for gi, gj in runs:
        if not gi or not gj:
            for d in gi:
                ctx.claim(x, d)
            for d in gj:
                ctx.claim(out, d)
        elif len(gi) == 1 and len(gj) == 1:
            ctx.same(x, gi[0], out, gj[0])
        elif len(gi) == 1:
            _split(ctx, x, gi[0], out, gj)
        elif len(gj) == 1:
            _split(ctx, out, gj[0], x, gi)
        # several dims on both sides: left unclaimed, frozen


def _sizes_rewrite(ctx: RewriteContext, index: int) -> None:
    """Replace integer entries of the size list at args[index] with the new output sizes."""
    sizes = ctx.old.args[index]
    if not isinstance(sizes, (list, tuple)):
        return
    out_shape = ctx.new_shape((ctx.old, None))
    rank = len(out_shape)
    offset = rank - len(sizes)
    new_sizes = list(ctx.new.args[index])
    for k, s in enumerate(sizes):
        if isinstance(s, int) and not isinstance(s, bool) and s != -1 and not isinstance(s, fx.Node):
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
    """out[..., i, ...] = x[..., i or 0, ...]: kept dims relate, broadcast dims are new."""
    x, out = ctx.arg(0), ctx.out()
    rx, ro = len(ctx.shape(x)), len(ctx.shape(out))
    for d in range(rx):
        od = ro - rx + d
        if ctx.size(x, d) == 1 and ctx.size(out, od) != 1:
            ctx.claim(x, d)
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

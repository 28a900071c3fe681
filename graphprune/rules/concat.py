"""Concatenation, splitting and indexing along a dim.

    cat        out[..., off_k + i, ...] = x_k[..., i, ...]       off_k = sum_{j<k} n_j
    split      out_k[..., i, ...] = x[..., off_k + i, ...]       (chunk, split, split_with_sizes, tensor_split)
    unbind     out_k[..., i, ...] = x[..., k, i, ...]            (the unbound dim is indexed: frozen)
    slice      out[..., i, ...] = x[..., start + i * step, ...]
    select     out[...] = x[..., index, ...]                     (element `index` is kept)

Rewrite: split sizes become the kept counts of each piece (chunk turns into
split_with_sizes, so pieces may shrink unevenly); slice bounds and select indices are
renumbered to positions among the kept elements.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from graphprune.rules.registry import RewriteContext, RuleContext, dim_index, rule

aten = torch.ops.aten


def _other_dims(ctx: RuleContext, a, b, dim: int) -> None:
    for d in range(len(ctx.shape(a))):
        if d != dim:
            ctx.same(a, d, b, d)


@rule(aten.cat.default, aten.concat.default if hasattr(aten, "concat") else None)
def cat(ctx: RuleContext) -> None:
    out = ctx.out()
    rank = len(ctx.shape(out))
    dim = dim_index(ctx.node.args[1] if len(ctx.node.args) > 1 else ctx.node.kwargs.get("dim", 0), rank)
    offset = 0
    for x in ctx.node.args[0]:
        value = (x, None)
        n = ctx.size(value, dim) if len(ctx.shape(value)) == rank else None
        if len(ctx.shape(value)) != rank:
            continue  # legacy empty tensors: frozen
        _other_dims(ctx, value, out, dim)
        if n is None:
            ctx.freeze(value, dim, "concatenation along a symbolic dim")
            continue
        i = np.arange(n)
        ctx.link(value, dim, i, out, dim, offset + i)
        offset += n


def _pieces(ctx, x, dim: int) -> list[int]:
    return [ctx.size(v, dim) for v in ctx.outputs()]


def _split_rewrite(ctx: RewriteContext) -> None:
    """split/chunk -> split_with_sizes(x, kept counts of each piece, dim).

    Only when that dim lost elements: a split along an untouched dim (RAFT splits its two
    images back apart on the dynamic batch axis) keeps its arguments, symbolic sizes included.
    """
    x = ctx.old.args[0]
    rank = len(x.meta["val"].shape)
    dim = dim_index(_dim_arg(ctx.old), rank)
    if ctx.keep(((x, None), dim)) is None:
        return
    sizes = [int(ctx.new_shape((ctx.old, k))[dim]) for k in range(len(ctx.old.meta["val"]))]
    ctx.new.target = aten.split_with_sizes.default
    ctx.new.args = (ctx.new.args[0], sizes, dim)
    ctx.new.kwargs = {}


def _dim_arg(node) -> int:
    return node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)


@rule(aten.chunk.default, aten.split.Tensor, aten.split_with_sizes.default, aten.tensor_split.indices,
      aten.unsafe_split.Tensor, aten.unsafe_chunk.default, rewrite=_split_rewrite)
def split(ctx: RuleContext) -> None:
    x = ctx.arg(0)
    dim = dim_index(_dim_arg(ctx.node), len(ctx.shape(x)))
    offset = 0
    for out in ctx.outputs():
        n = ctx.size(out, dim)
        _other_dims(ctx, x, out, dim)
        if n is None:
            ctx.freeze(x, dim, "split along a symbolic dim")
            return
        i = np.arange(n)
        ctx.link(x, dim, offset + i, out, dim, i)
        offset += n


@rule(aten.unbind.int)
def unbind(ctx: RuleContext) -> None:
    x = ctx.arg(0)
    rank = len(ctx.shape(x))
    dim = dim_index(ctx.node.args[1] if len(ctx.node.args) > 1 else ctx.node.kwargs.get("dim", 0), rank)
    for out in ctx.outputs():
        for d in range(rank):
            if d != dim:
                ctx.same(x, d, out, d if d < dim else d - 1)
    ctx.freeze(x, dim, "unbind indexes this dim")


def _slice_rewrite(ctx: RewriteContext) -> None:
    """start', end' = number of kept indices below start, end."""
    x = (ctx.old.args[0], None)
    rank = len(ctx.old.args[0].meta["val"].shape)
    dim = dim_index(ctx.old.args[1] if len(ctx.old.args) > 1 else 0, rank)
    keep = ctx.keep((x, dim))
    if keep is None:
        return
    size = int(ctx.old.args[0].meta["val"].shape[dim])
    start, end = _bounds(ctx.old, size)
    args = list(ctx.new.args) + [None] * (4 - len(ctx.new.args))
    args[1] = dim
    args[2] = int(np.searchsorted(keep, start))
    args[3] = int(np.searchsorted(keep, end))
    ctx.new.args = tuple(args[:4]) + tuple(ctx.new.args[4:])


def _bounds(node, size: int) -> tuple[int, int]:
    args = list(node.args) + [None] * (5 - len(node.args))
    start = args[2] if args[2] is not None else 0
    end = args[3] if args[3] is not None else size
    start = start + size if start < 0 else start
    end = end + size if end < 0 else min(end, size)
    return max(0, min(start, size)), max(0, end)


@rule(aten.slice.Tensor, rewrite=_slice_rewrite)
def slice_(ctx: RuleContext) -> None:
    x, out = ctx.arg(0), ctx.out()
    rank = len(ctx.shape(x))
    dim = dim_index(ctx.node.args[1] if len(ctx.node.args) > 1 else 0, rank)
    _other_dims(ctx, x, out, dim)
    size = ctx.size(x, dim)
    step = ctx.node.args[4] if len(ctx.node.args) > 4 else 1
    if size is None or not isinstance(step, int):
        return
    if not all(isinstance(b, int | None) for b in ctx.node.args[2:4]):
        ctx.freeze(x, dim, "sliced with a size known only at run time")
        return
    start, end = _bounds(ctx.node, size)
    if start == 0 and end >= size and step == 1:
        ctx.same(x, dim, out, dim)
        return
    if step != 1:
        return  # strided slices of a channel dim: frozen
    ctx.claim(x, dim)
    i = np.arange(ctx.size(out, dim) or 0)
    ctx.link(x, dim, start + i, out, dim, i)


def _select_rewrite(ctx: RewriteContext) -> None:
    x = (ctx.old.args[0], None)
    rank = len(ctx.old.args[0].meta["val"].shape)
    dim = dim_index(ctx.old.args[1], rank)
    keep = ctx.keep((x, dim))
    if keep is None:
        return
    index = ctx.old.args[2]
    index = index + int(ctx.old.args[0].meta["val"].shape[dim]) if index < 0 else index
    ctx.set_arg(2, int(np.searchsorted(keep, index)))


@rule(aten.select.int, rewrite=_select_rewrite)
def select(ctx: RuleContext) -> None:
    x, out = ctx.arg(0), ctx.out()
    rank = len(ctx.shape(x))
    dim, index = dim_index(ctx.node.args[1], rank), ctx.node.args[2]
    for d in range(rank):
        if d < dim:
            ctx.same(x, d, out, d)
        elif d > dim:
            ctx.same(x, d, out, d - 1)
    size = ctx.size(x, dim)
    if size is not None and isinstance(index, int):
        ctx.freeze(x, dim, "this element is selected by index", np.array([index % size]))


del sys

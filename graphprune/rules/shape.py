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
from dataclasses import dataclass

import numpy as np
import torch
import torch.fx as fx

from graphprune.reasons import Cause
from graphprune.rules.registry import RewriteContext, RuleContext, dim_index, rule
from graphprune.rules.spaces import composite, int_size

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

    An integer dim is one factor; a symbolic size (batch, sequence, sequence + 1) is one,
    and a product of them one per term; c * batch is two, ordered by its recorded layout
    ('sc': batch major). None if a size is an integer times several symbolic terms or a
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
            coeff, rest = size.node.expr.as_coeff_Mul()
            if coeff != 1:
                return None  # c * (several symbols): no recorded layout
            # batch, sequence, sequence + 1 (a class token), or their product: opaque symbolic factors
            out.extend(("s", d, str(a)) for a in (rest.args if rest.is_Mul else (rest,)))
            continue
        layout = layouts.get(d)
        if layout is None:
            return None
        pair = [("s", d, str(comp[1])), ("i", d, comp[0])]
        out.extend(pair if layout == "sc" else pair[::-1])
    return out


def _segments(factors: list) -> tuple[list, list]:
    """Split at symbols: (symbols in order, integer factors (d, n) between them).

    Symbols with no integer factor between them count as one: a view may merge or split
    them (batch and sequence into tokens) without moving any channel."""
    symbols, segments = [], [[]]
    for kind, d, x in factors:
        if kind == "s":
            if symbols and not segments[-1]:  # adjacent symbols (batch * sequence) are one, in any order
                symbols[-1] = "*".join(sorted([*symbols[-1].split("*"), x]))
                continue
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
            ctx.freeze(many, d, "a reshape splits this factor off a pruned dim; it is kept whole",
                       cause=Cause.RESHAPE_FACTOR)


RESHAPES = (aten.view.default, aten.reshape.default, aten._unsafe_view.default)
MERGES = (*RESHAPES, aten.flatten.using_ints)
PASS = (aten.contiguous.default, aten.clone.default)


@dataclass(frozen=True)
class Shuffle:
    """A channel shuffle: split = x.view(.., g, n, ..), transpose(d, d + 1), merge back to g * n.

        out[:, (c mod n) * g + c div n] = x[:, c]      (a permutation of the C = g * n channels)
    """

    split: fx.Node
    chain: tuple  # transpose, then any contiguous/clone, ending at the node the merge reads
    merge: fx.Node
    dim: int
    groups: int
    per_group: int

    def source(self, out_index: np.ndarray) -> np.ndarray:
        """x channel that lands at each output channel."""
        return (out_index % self.groups) * self.per_group + out_index // self.groups


def _only_user(node: fx.Node):
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def _shuffle_from_split(split: fx.Node) -> Shuffle | None:
    if split.op != "call_function" or split.target not in RESHAPES:
        return None
    src, dst = tuple(split.args[0].meta["val"].shape), tuple(split.meta["val"].shape)
    if len(dst) != len(src) + 1:
        return None
    d = next((k for k in range(len(src)) if str(src[k]) != str(dst[k])), None)
    if d is None or src[d + 1:] != dst[d + 2:] or not all(isinstance(v, int) for v in (src[d], dst[d], dst[d + 1])):
        return None
    if dst[d] * dst[d + 1] != src[d] or dst[d] == 1 or dst[d + 1] == 1:
        return None
    t = _only_user(split)
    if t is None or t.target != aten.transpose.int or {dim_index(a, len(dst)) for a in t.args[1:3]} != {d, d + 1}:
        return None
    chain, end = [t], t
    while (nxt := _only_user(end)) is not None and nxt.target in PASS:
        chain.append(nxt)
        end = nxt
    merge = _only_user(end)
    if merge is None or merge.target not in MERGES or tuple(merge.meta["val"].shape) != src:
        return None
    return Shuffle(split, tuple(chain), merge, d, int(dst[d]), int(dst[d + 1]))


def shuffle_of(node: fx.Node) -> Shuffle | None:
    """The shuffle a node belongs to (as its split, transpose, copy or merge), if any."""
    for candidate in (node, node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None):
        while isinstance(candidate, fx.Node) and candidate.target in (*PASS, aten.transpose.int):
            candidate = candidate.args[0]
        if isinstance(candidate, fx.Node):
            found = _shuffle_from_split(candidate)
            if found is not None and (node is found.split or node is found.merge or node in found.chain):
                return found
    return None


def _shuffle_couple(ctx: RuleContext, sh: Shuffle) -> None:
    """Intermediate dims d, d+1 relate to nothing (they vanish on rewrite); the merge relates
    its channels to the split's input through the permutation; other dims pass."""
    node, x, out = ctx.node, ctx.arg(0), ctx.out()
    rank_in, rank_out = len(ctx.shape(x)), len(ctx.shape(out))
    d = sh.dim
    for k in range(rank_in):
        if node is sh.split:
            if k == d:
                ctx.claim(x, k)
                ctx.claim(out, d)
                ctx.claim(out, d + 1)
            else:
                ctx.same(x, k, out, k if k < d else k + 1)
        else:  # merge
            if k in (d, d + 1):
                ctx.claim(x, k)
            else:
                ctx.same(x, k, out, k if k < d else k - 1)
    if node is sh.merge:
        source = (sh.split.args[0], None)
        o = np.arange(sh.groups * sh.per_group)
        ctx.link(out, d, o, source, d, sh.source(o))
    del rank_out


def reshape_couple(ctx: RuleContext) -> None:
    shuffle = shuffle_of(ctx.node)
    if shuffle is not None:
        _shuffle_couple(ctx, shuffle)
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


def _shuffle_rewrite(ctx: RewriteContext, sh: Shuffle) -> None:
    """merge -> index_select(x', d, perm): the pruned permutation, any kept sets allowed."""
    source = (sh.split.args[0], None)
    size = sh.groups * sh.per_group
    kept_in, kept_out = ctx.keep((source, sh.dim)), ctx.keep(((sh.merge, None), sh.dim))
    if kept_in is None and kept_out is None:
        return
    kept_in = np.arange(size) if kept_in is None else kept_in
    kept_out = np.arange(size) if kept_out is None else kept_out
    perm = np.searchsorted(kept_in, sh.source(kept_out))
    index = ctx.constant(torch.as_tensor(perm, dtype=torch.long))
    ctx.new.target = aten.index_select.default
    ctx.new.args = (ctx.mapped(sh.split.args[0]), sh.dim, index)
    ctx.new.kwargs = {}
    graph = ctx.new.graph
    for old in (*reversed(sh.chain), sh.split):
        new = ctx.mapped(old)
        if not new.users:
            graph.erase_node(new)


def _view_rewrite(ctx: RewriteContext) -> None:
    shuffle = shuffle_of(ctx.old)
    if shuffle is not None:
        if ctx.old is shuffle.merge:
            _shuffle_rewrite(ctx, shuffle)
        return  # the split's sizes do not matter: it is erased with the merge's rewrite
    _sizes_rewrite(ctx, 1)


def _flatten_rewrite(ctx: RewriteContext) -> None:
    """flatten(x, start=0, end=-1) carries no sizes: only a channel shuffle's merge changes."""
    shuffle = shuffle_of(ctx.old)
    if shuffle is not None and ctx.old is shuffle.merge:
        _shuffle_rewrite(ctx, shuffle)


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


@rule(aten.view_as.default, aten.reshape_as.default)
def reshape_as(ctx: RuleContext) -> None:
    """x.reshape_as(other): as a reshape to other's shape, and other's dim d is out's dim d: the
    rewritten graph reads other's pruned shape at run time (weight standardisation reshapes a
    normalised copy of a conv weight back as the weight)."""
    reshape_couple(ctx)
    other, out = ctx.arg(1), ctx.out()
    for d in range(len(ctx.shape(out))):
        ctx.same(other, d, out, d)
rule(aten.unflatten.int, rewrite=_unflatten_rewrite)(reshape_couple)


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

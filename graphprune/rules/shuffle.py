"""Channel shuffle: a view to (g, n), a transpose of those two dims and a view back.

The permutation is out[(c mod n) g + c div n] = x[c]. It is coupled element by element and rewritten as one
`index_select` with the pruned permutation, so the g groups prune independently.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.fx as fx

from graphprune.rules.registry import RewriteContext, RuleContext, dim_index

aten = torch.ops.aten

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


def shuffle_couple(ctx: RuleContext, sh: Shuffle) -> None:
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


def shuffle_rewrite(ctx: RewriteContext, sh: Shuffle) -> None:
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



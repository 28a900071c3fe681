"""Scaled dot-product attention.

    q[..., h, l, e], k[..., h_k, s, e], v[..., h_k, s, f] -> out[..., h, l, f]
    out[.., h, l, :] = softmax(q[.., h, l, :] . k[.., h // r, :, :]^T * scale) v[.., h // r]

with r = h / h_k (grouped-query attention when r > 1). Relations: the head dim of q and
out; the head dims of k and v; q head h with k/v head h // r (so a KV head goes with
its whole group of query heads); the contraction dim e of q and k; the value dim f of v
and out; query positions l of q and out. Key positions s are normalised by the softmax
and stay frozen; so does anything a mask does not broadcast over.

Which of these may shrink is an option: whole heads (default) or head dims e and f
(--prune-head-dim), never both at once since each head must keep the same width.

Rewrite: when e shrinks and no scale was given, the original 1 / sqrt(e) is passed
explicitly, so pruning dead head-dims is exact.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from graphprune.rules.registry import RewriteContext, RuleContext, rule

aten = torch.ops.aten


def _sdpa_rewrite(ctx: RewriteContext) -> None:
    q = (ctx.old.args[0], None)
    e_old = int(ctx.old.args[0].meta["val"].shape[-1])
    e_new = int(ctx.new_shape(q)[-1])
    given = ctx.old.args[6] if len(ctx.old.args) > 6 else ctx.old.kwargs.get("scale")
    if e_new != e_old and given is None:
        kwargs = dict(ctx.new.kwargs)
        kwargs["scale"] = 1.0 / math.sqrt(e_old)
        args = list(ctx.new.args)[:6]
        ctx.new.args = tuple(args)
        ctx.new.kwargs = kwargs


def _mask(ctx: RuleContext, mask, q, out) -> None:
    rank_m, rank_o = len(ctx.shape(mask)), len(ctx.shape(out))
    for d in range(rank_m):
        od = rank_o - rank_m + d
        if ctx.size(mask, d) == 1 and ctx.size(out, od) != 1:
            ctx.claim(mask, d)
        elif od == rank_o - 2:
            ctx.same(mask, d, q, rank_o - 2)
        elif od < rank_o - 2:
            ctx.same(mask, d, out, od)


def _sdpa_cost(node, shape) -> int:
    """MACs of q @ k^T and softmax(.) @ v, as torch counts them."""
    from torch.utils.flop_counter import sdpa_flop_count

    q, k, v = (list(shape(a)) for a in node.args[:3])
    if len(q) != 4:  # torch's formula takes [B, H, L, E]; fold extra leading dims into B
        lead = len(q) - 3
        q, k, v = ([_lead(t, lead), *t[lead:]] for t in (q, k, v))
    return sdpa_flop_count(q, k, v) // 2


def _lead(sizes: list, n: int) -> int:
    out = 1
    for s in sizes[:n]:
        out *= int(s)
    return out


@rule(aten.scaled_dot_product_attention.default, rewrite=_sdpa_rewrite, cost=_sdpa_cost)
def sdpa(ctx: RuleContext) -> None:
    q, k, v, out = ctx.arg(0), ctx.arg(1), ctx.arg(2), ctx.out()
    rank = len(ctx.shape(q))
    if rank < 3 or len(ctx.shape(k)) != rank or len(ctx.shape(v)) != rank:
        return
    for d in range(rank - 3):
        ctx.same(q, d, out, d)
        ctx.same(k, d, v, d)
        if ctx.size(q, d) == ctx.size(k, d):
            ctx.same(q, d, k, d)
    h, hk = ctx.size(q, rank - 3), ctx.size(k, rank - 3)
    ctx.same(q, rank - 3, out, rank - 3)
    ctx.same(k, rank - 3, v, rank - 3)
    if h is not None and hk is not None and hk and h % hk == 0:
        heads = np.arange(h)
        ctx.link(q, rank - 3, heads, k, rank - 3, heads // (h // hk))
    ctx.same(q, rank - 2, out, rank - 2)
    ctx.same(q, rank - 1, k, rank - 1)
    ctx.same(v, rank - 1, out, rank - 1)
    mask = ctx.arg(3, "attn_mask")
    if isinstance(mask, tuple):
        _mask(ctx, mask, q, out)
    for value in (q, k, v, out):
        ctx.mark_heads(value, rank - 3)
    if ctx.attention != "heads":
        ctx.freeze(q, rank - 3, "attention heads are not pruned (--prune-heads is off)")
        ctx.freeze(k, rank - 3, "attention heads are not pruned (--prune-heads is off)")
    if ctx.attention != "head-dim":
        ctx.freeze(q, rank - 1, "head dims are not pruned (see --prune-head-dim)")
        ctx.freeze(v, rank - 1, "head dims are not pruned (see --prune-head-dim)")

"""Dense maps: linear, matrix products and embeddings.

    linear     out[..., o] = sum_i w[o, i] * x[..., i] + b[o]
    matmul     out[..., n, m] = sum_k a[..., n, k] * b[..., k, m]   (batch dims broadcast;
               k is inexact when neither operand is a parameter)
    addmm      out[n, m] = c[n?, m] + sum_k a[n, k] * b[k, m]
    embedding  out[..., d] = w[idx[...], d]    (the vocabulary dim is frozen)
"""

from __future__ import annotations

import torch

from graphprune.rules.registry import Role, RuleContext, rule

aten = torch.ops.aten


def _prod(sizes) -> int:
    n = 1
    for s in sizes:
        n *= int(s)
    return n


def _linear_cost(node, shape) -> int:
    """MACs = prod(out.shape) * in_features."""
    return _prod(shape(node)) * int(shape(node.args[1])[-1])


def _matmul_cost(node, shape, first: int = 0) -> int:
    """MACs = prod(out.shape) * k, k the contracted size (a's last dim)."""
    a = shape(node.args[first])
    return _prod(shape(node)) * int(a[-1]) if len(a) else 0


def _addmm_cost(node, shape) -> int:
    return _matmul_cost(node, shape, first=1)


@rule(aten.linear.default, cost=_linear_cost, roles=(Role.REFIT,))
def linear(ctx: RuleContext) -> None:
    x, w, b, out = ctx.arg(0), ctx.arg(1), ctx.arg(2), ctx.out()
    rank = len(ctx.shape(x))
    for d in range(rank - 1):
        ctx.same(x, d, out, d)
    ctx.same(x, rank - 1, w, 1)
    ctx.same(out, rank - 1, w, 0)
    if isinstance(b, tuple):
        ctx.same(b, 0, out, rank - 1)


def _matmul(ctx: RuleContext, a, b, out) -> None:
    ra, rb, ro = len(ctx.shape(a)), len(ctx.shape(b)), len(ctx.shape(out))
    if ra < 2 or rb < 2:
        return  # vector products: left unclaimed, hence frozen
    ctx.same(a, ra - 1, b, rb - 2)
    if a[0].op != "get_attr" and b[0].op != "get_attr":
        # both operands are activations: a dead feature need not be zero here (e.g. after a
        # sigmoid), so removing it from the contraction changes values
        ctx.inexact(a, ra - 1, "a product of two activations contracts over pruned features")
    ctx.same(a, ra - 2, out, ro - 2)
    ctx.same(b, rb - 1, out, ro - 1)
    if ra >= 4 and rb >= 4:  # batched attention products: dims 1..rank-3 index heads
        for d in range(1, ro - 2):
            ctx.mark_heads(out, d)
    for value, rank in ((a, ra), (b, rb)):
        for d in range(rank - 2):
            od = ro - rank + d
            if ctx.size(value, d) == 1 and ctx.size(out, od) != 1:
                ctx.claim(value, d)
            else:
                ctx.same(value, d, out, od)


@rule(aten.matmul.default, aten.mm.default, aten.bmm.default, cost=_matmul_cost)
def matmul(ctx: RuleContext) -> None:
    _matmul(ctx, ctx.arg(0), ctx.arg(1), ctx.out())


@rule(aten.addmm.default, aten.baddbmm.default, cost=_addmm_cost)
def addmm(ctx: RuleContext) -> None:
    c, out = ctx.arg(0), ctx.out()
    _matmul(ctx, ctx.arg(1), ctx.arg(2), out)
    ro, rc = len(ctx.shape(out)), len(ctx.shape(c))
    for d in range(rc):
        od = ro - rc + d
        if ctx.size(c, d) == 1 and ctx.size(out, od) != 1:
            ctx.claim(c, d)
        else:
            ctx.same(c, d, out, od)


@rule(aten.embedding.default)
def embedding(ctx: RuleContext) -> None:
    w, idx, out = ctx.arg(0), ctx.arg(1), ctx.out()
    for d in range(len(ctx.shape(idx))):
        ctx.same(idx, d, out, d)
    ctx.same(w, 1, out, len(ctx.shape(out)) - 1)

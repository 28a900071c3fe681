"""Pooling, resampling and reductions.

Pooling and resampling keep the leading (batch, channel) dims: out[n, c, ...] reads
only in[n, c, ...]. Spatial dims are left unclaimed, hence frozen.

Reductions keep the dims they do not reduce. A reduced dim is frozen, except for sum,
mean, var, std and vector norms: prunable but inexact (the statistic changes, as for LayerNorm, and a
dead channel need not be zero after a nonlinearity); softmax-like ops freeze the dim
they normalise over.
"""

from __future__ import annotations

import torch

from graphprune.rules.registry import RuleContext, dim_index, rule

aten = torch.ops.aten

SPATIAL = {
    aten.max_pool1d.default: 1, aten.max_pool2d.default: 2, aten.max_pool3d.default: 3,
    aten.avg_pool1d.default: 1, aten.avg_pool2d.default: 2, aten.avg_pool3d.default: 3,
    aten.adaptive_avg_pool1d.default: 1, aten.adaptive_avg_pool2d.default: 2,
    aten.adaptive_avg_pool3d.default: 3, aten.adaptive_max_pool1d.default: 1,
    aten.adaptive_max_pool2d.default: 2, aten.adaptive_max_pool3d.default: 3,
    aten.max_pool2d_with_indices.default: 2, aten.max_pool3d_with_indices.default: 3,
    aten.upsample_nearest1d.vec: 1, aten.upsample_nearest2d.vec: 2, aten.upsample_nearest3d.vec: 3,
    aten.upsample_bilinear2d.vec: 2, aten.upsample_bicubic2d.vec: 2,
    aten.upsample_linear1d.vec: 1, aten.upsample_trilinear3d.vec: 3,
    aten.upsample_nearest2d.default: 2, aten.upsample_bilinear2d.default: 2,
    aten.pixel_shuffle.default: 0, aten.pixel_unshuffle.default: 0,
}


@rule(*SPATIAL)
def pool(ctx: RuleContext) -> None:
    """out[n, c, *s'] = pool(in[n, c, *s]) for every output (values and indices)."""
    if ctx.node.target in (aten.pixel_shuffle.default, aten.pixel_unshuffle.default):
        return  # channels are regrouped into space: frozen
    x = ctx.arg(0)
    lead = len(ctx.shape(x)) - SPATIAL[ctx.node.target]
    for out in ctx.outputs():
        for d in range(lead):
            ctx.same(x, d, out, d)


def _reduced(ctx: RuleContext, x, dims) -> list[int]:
    rank = len(ctx.shape(x))
    if dims is None or dims == []:
        return list(range(rank))
    dims = [dims] if isinstance(dims, int) else dims
    return sorted(dim_index(d, rank) for d in dims)


def _reduce(ctx: RuleContext, inexact: str = "", dim_at: int = 1) -> None:
    """`dim_at`: position of the dims argument (keepdim follows it)."""
    x = ctx.arg(0)
    if not isinstance(x, tuple):
        return
    args = ctx.node.args
    dims = args[dim_at] if len(args) > dim_at else ctx.node.kwargs.get("dim")
    keepdim = args[dim_at + 1] if len(args) > dim_at + 1 else ctx.node.kwargs.get("keepdim", False)
    reduced = _reduced(ctx, x, dims)
    for out in ctx.outputs():
        o = 0
        for d in range(len(ctx.shape(x))):
            if d in reduced:
                if inexact:
                    ctx.claim(x, d)
                if inexact:
                    ctx.inexact(x, d, inexact)
                if keepdim:
                    ctx.claim(out, o)
                    o += 1
                continue
            ctx.same(x, d, out, o)
            o += 1


@rule(aten.amax.default, aten.amin.default, aten.max.dim, aten.min.dim, aten.argmax.default,
      aten.argmin.default, aten.logsumexp.default, aten.prod.dim_int, aten.norm.ScalarOpt_dim)
def reduce(ctx: RuleContext) -> None:
    """out[kept dims] = reduce_{reduced dims} in: reduced dims frozen."""
    _reduce(ctx)


@rule(aten.mean.dim, aten.var.correction, aten.std.correction)
def reduce_mean(ctx: RuleContext) -> None:
    """out[kept dims] = mean_{reduced dims} in: prunable, but the statistic changes (inexact),
    as in a hand-written RMSNorm. Spatial dims are frozen by their producers anyway."""
    _reduce(ctx, inexact="a mean or variance over pruned features changes")


@rule(aten.sum.dim_IntList)
def reduce_sum(ctx: RuleContext) -> None:
    """out[kept dims] = sum_{reduced dims} in: prunable, inexact (a dead channel is zero only
    before a nonlinearity: sigmoid(0) = 0.5 still adds up)."""
    _reduce(ctx, inexact="a sum over pruned features changes")


@rule(aten.linalg_vector_norm.default)
def reduce_norm(ctx: RuleContext) -> None:
    """out[kept dims] = ||in||_ord over the reduced dims (F.normalize, cosine attention):
    prunable, inexact like sum (a zero entry adds nothing to a norm of order > 0, but a
    dead channel need not be zero)."""
    _reduce(ctx, inexact="a norm over pruned features changes", dim_at=2)


@rule(aten.softmax.int, aten._softmax.default, aten.log_softmax.int, aten._log_softmax.default,
      aten.cumsum.default)
def softmax(ctx: RuleContext) -> None:
    """out = softmax(in, dim): the normalised dim is frozen, the others pass through."""
    x, out = ctx.arg(0), ctx.outputs()[0]
    dim = dim_index(ctx.node.args[1], len(ctx.shape(x)))
    for d in range(len(ctx.shape(x))):
        if d != dim:
            ctx.same(x, d, out, d)

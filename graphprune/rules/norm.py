"""Normalisation layers and per-channel parameters.

    batch/instance norm   out[:, c] = (x[:, c] - mu_c) / sigma_c * w[c] + b[c]   (exact per channel;
                          with batch statistics the other dims are inexact: weight standardisation)
    group norm            statistics per group of C/G channels: whole groups go together
    layer/rms norm        statistics over the last dims: pruning them is allowed but
                          changes the statistics, so those groups are marked inexact
    prelu                 out[:, c] = max(0, x) + a[c] * min(0, x)
"""

from __future__ import annotations

import numpy as np
import torch

from graphprune.rules.registry import RewriteContext, Role, RuleContext, rule

aten = torch.ops.aten


def _per_channel(ctx: RuleContext, x, out, params) -> None:
    for d in range(len(ctx.shape(x))):
        ctx.same(x, d, out, d)
    for p in params:
        if isinstance(p, tuple):
            ctx.same(p, 0, x, 1)


def _batch_statistics(ctx: RuleContext, x, training) -> None:
    """Statistics of this call are computed over every dim but 1 (training mode, or weight
    standardisation: batch_norm of a conv weight reshaped to [1, C_out, C_in * k * k]), so pruning
    those dims changes them: inexact, like a LayerNorm width."""
    if training is True:
        for d in range(len(ctx.shape(x))):
            if d != 1:
                ctx.inexact(x, d, "batch statistics (or a standardised weight's) change when this dim is pruned")


@rule(aten.instance_norm.default)
# batch_norm(x, w, b, mean, var, training, momentum, eps, cudnn)
@rule(aten.batch_norm.default, train_arg=5, roles=(Role.NORMALIZES,))
def batch_norm(ctx: RuleContext) -> None:
    x = ctx.arg(0)
    _per_channel(ctx, x, ctx.out(), [ctx.arg(i) for i in (1, 2, 3, 4)])
    if ctx.node.target is aten.batch_norm.default:  # instance norm: statistics per sample and channel
        _batch_statistics(ctx, x, ctx.arg(5, "training"))


@rule(aten._native_batch_norm_legit_no_training.default, aten._native_batch_norm_legit.default,
      aten.native_batch_norm.default, roles=(Role.NORMALIZES,))
def native_batch_norm(ctx: RuleContext) -> None:
    x = ctx.arg(0)
    _per_channel(ctx, x, ctx.out(0), [ctx.arg(i) for i in (1, 2, 3, 4)])
    if ctx.node.target is not aten._native_batch_norm_legit_no_training.default:
        _batch_statistics(ctx, x, ctx.arg(5, "training"))


def _group_norm_rewrite(ctx: RewriteContext) -> None:
    """num_groups' = C' / (C / num_groups): whole groups were removed."""
    x = (ctx.old.args[0], None)
    per_group = ctx.old.args[0].meta["val"].shape[1] // ctx.old.args[1]
    ctx.set_arg(1, int(ctx.new_shape(x)[1]) // int(per_group))


@rule(aten.group_norm.default, rewrite=_group_norm_rewrite)
def group_norm(ctx: RuleContext) -> None:
    x, groups, out = ctx.arg(0), ctx.node.args[1], ctx.out()
    _per_channel(ctx, x, out, [ctx.arg(2), ctx.arg(3)])
    channels = ctx.size(x, 1)
    if channels is None:
        return
    per_group = channels // groups
    c = np.arange(channels)
    ctx.link(x, 1, c, x, 1, (c // per_group) * per_group)


def _layer_norm_rewrite(ctx: RewriteContext) -> None:
    """normalized_shape' = the last k dims of the new input shape."""
    x = (ctx.old.args[0], None)
    k = len(ctx.old.args[1])
    ctx.set_arg(1, [int(s) for s in ctx.new_shape(x)[-k:]])


@rule(aten.layer_norm.default, rewrite=_layer_norm_rewrite)
def layer_norm(ctx: RuleContext) -> None:
    x, shape, w, b, out = ctx.arg(0), ctx.node.args[1], ctx.arg(2), ctx.arg(3), ctx.out()
    rank, k = len(ctx.shape(x)), len(ctx.node.args[1])
    for d in range(rank):
        ctx.same(x, d, out, d)
    for j in range(k):
        d = rank - k + j
        ctx.inexact(x, d, "layer norm statistics change when its features are pruned")
        for p in (w, b):
            if isinstance(p, tuple):
                ctx.same(p, j, x, d)
    del shape


@rule(getattr(aten, "rms_norm", None) and aten.rms_norm.default, rewrite=_layer_norm_rewrite)
def rms_norm(ctx: RuleContext) -> None:
    x, w, out = ctx.arg(0), ctx.arg(2), ctx.out()
    rank, k = len(ctx.shape(x)), len(ctx.node.args[1])
    for d in range(rank):
        ctx.same(x, d, out, d)
    for j in range(k):
        d = rank - k + j
        ctx.inexact(x, d, "RMS norm statistics change when its features are pruned")
        if isinstance(w, tuple):
            ctx.same(w, j, x, d)


@rule(aten.prelu.default, aten._prelu_kernel.default, roles=(Role.ACTIVATION,))
def prelu(ctx: RuleContext) -> None:
    x, a, out = ctx.arg(0), ctx.arg(1), ctx.out()
    for d in range(len(ctx.shape(x))):
        ctx.same(x, d, out, d)
    if ctx.size(a, 0) == 1:
        ctx.claim(a, 0)
    else:
        ctx.same(a, 0, x, 1)

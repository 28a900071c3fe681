"""Ops that read shapes or metadata rather than values.

`sym_size(x, d)` hands x.size(d) to the program: that dim must keep its size, the
others are untouched. Assertions on metadata read nothing that pruning changes.
"""

from __future__ import annotations

import torch

from graphprune.rules.registry import RuleContext, dim_index, rule

aten = torch.ops.aten


@rule(aten.sym_size.int)
def sym_size(ctx: RuleContext) -> None:
    x = ctx.arg(0)
    rank = len(ctx.shape(x))
    for d in range(rank):
        if d == dim_index(ctx.node.args[1], rank):
            ctx.freeze(x, d, "its size is read by the program")
        else:
            ctx.claim(x, d)


@rule(aten._assert_tensor_metadata.default, aten._assert_scalar.default,
      getattr(aten, "_assert_async", None) and aten._assert_async.msg)
def assertion(ctx: RuleContext) -> None:
    for value in ctx.inputs():
        for d in range(len(ctx.shape(value))):
            ctx.claim(value, d)

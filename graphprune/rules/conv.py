"""Convolutions, plain, grouped, depthwise and transposed, in 1, 2 and 3 d.

With g groups, ipg = C_in / g input and opg = C_out / g output channels per group:

    plain    w[o, c, *k]          out[:, o] = sum_c w[o, c] * in[:, c]
    grouped  w[o, j, *k]          out[:, o] = sum_j w[o, j] * in[:, (o // opg) * ipg + j]
    transp.  w[c, o, *k] (g = 1)  out[:, o] = sum_c w[c, o] * in[:, c]

A grouped conv stays rectangular in one of two ways. *Whole groups* (chosen when
g >= ipg, which includes depthwise): channels are removed a group at a time, so
in[:, gi*ipg : (gi+1)*ipg] and out[:, gi*opg : (gi+1)*opg] form one unit and `groups`
shrinks. *Offsets* (few wide groups): offset j is removed in every group at once, so
in[:, gi*ipg + j] for all gi is one unit with w[:, j], and `groups` stays.
"""

from __future__ import annotations

import numpy as np
import torch

from graphprune.rules.registry import RewriteContext, Role, RuleContext, rule

aten = torch.ops.aten

# target -> (index of `groups` in args, transposed)
CONVS = {
    aten.conv1d.default: (6, False), aten.conv2d.default: (6, False), aten.conv3d.default: (6, False),
    aten.conv1d.padding: (6, False), aten.conv2d.padding: (6, False), aten.conv3d.padding: (6, False),
    aten.conv_transpose1d.default: (6, True), aten.conv_transpose2d.input: (6, True),
    aten.conv_transpose3d.input: (6, True), aten.convolution.default: (8, None),
}


def _spec(node) -> tuple[int, bool, int]:
    index, transposed = CONVS[node.target]
    if transposed is None:
        transposed = bool(node.args[6])
    groups = node.args[index] if len(node.args) > index else node.kwargs.get("groups", 1)
    return index, transposed, int(groups)


def groups(node) -> int:
    """How many groups a convolution node splits its channels into; 1 for any other op (a linear)."""
    return _spec(node)[2] if node.target in CONVS else 1


def _groups_rewrite(ctx: RewriteContext) -> None:
    """groups' = C'_in / ipg (plain) or C'_out / opg (transposed); ipg, opg never change here."""
    index, transposed, groups = _spec(ctx.old)
    if groups == 1:
        return
    x, w = (ctx.old.args[0], None), (ctx.old.args[1], None)
    per_group = ctx.new_shape(w)[1]
    channels = ctx.new_shape((ctx.old, None))[1] if transposed else ctx.new_shape(x)[1]
    new_groups = int(channels) // int(per_group)
    args = list(ctx.new.args)
    while len(args) <= index:
        args.append(1)
    args[index] = new_groups
    ctx.new.args = tuple(args)


def _conv_cost(node, shape) -> int:
    """MACs = batch * prod(spatial of out, or of in when transposed) * prod(w.shape), as torch counts them."""
    from torch.utils.flop_counter import conv_flop_count

    _, transposed, _ = _spec(node)
    x, w = shape(node.args[0]), shape(node.args[1])
    return conv_flop_count(list(x), list(w), list(shape(node)), transposed) // 2


@rule(aten.conv1d.default, aten.conv2d.default, rewrite=_groups_rewrite, cost=_conv_cost, roles=(Role.REFIT,))
@rule(*(t for t in CONVS if t not in (aten.conv1d.default, aten.conv2d.default)), rewrite=_groups_rewrite, cost=_conv_cost)
def conv(ctx: RuleContext) -> None:
    _, transposed, groups = _spec(ctx.node)
    x, w, b, out = ctx.arg(0), ctx.arg(1), ctx.arg(2), ctx.out()
    if not isinstance(x, tuple) or not isinstance(w, tuple):
        return
    ctx.same(x, 0, out, 0)
    c_in, c_out = ctx.size(x, 1), ctx.size(out, 1)
    if isinstance(b, tuple):
        ctx.same(b, 0, out, 1)
    w_in, w_out = (0, 1) if transposed else (1, 0)
    if groups == 1:
        ctx.same(x, 1, w, w_in)
        ctx.same(out, 1, w, w_out)
        return
    ipg, opg = c_in // groups, c_out // groups
    if transposed:
        ctx.same(x, 1, w, 0)
        ctx.freeze(w, 1, "per-group output offsets of a grouped transposed conv are kept")
    else:
        ctx.same(out, 1, w, 0)
    if groups >= ipg or transposed:
        # whole groups: every channel of group gi joins the group's first output channel
        c = np.arange(c_in)
        ctx.link(x, 1, c, out, 1, (c // ipg) * opg)
        o = np.arange(c_out)
        ctx.link(out, 1, o, out, 1, (o // opg) * opg)
        if not transposed:
            ctx.freeze(w, 1, "whole groups are removed, the per-group width stays")
    else:
        c = np.arange(c_in)
        ctx.link(x, 1, c, w, 1, c % ipg)
        o = np.arange(c_out)
        ctx.link(out, 1, o, out, 1, o % opg)

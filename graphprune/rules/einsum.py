"""einsum: every subscript letter is one index space across the operands and the output.

    out[l_out] = sum_{letters not in out} prod_k x_k[l_k]

A letter kept in the output relates each operand dim it labels to that output dim; a
letter shared by several operands and absent from the output is a contraction, relating
those operand dims to each other (inexact when no operand is a parameter, as for matmul).
A letter summed within one operand, repeated in one subscript (a diagonal) or hidden in an
ellipsis is left unclaimed, hence frozen.
"""

from __future__ import annotations

import torch

from graphprune.rules.registry import RuleContext, rule

aten = torch.ops.aten


def _subscripts(equation: str, count: int) -> tuple[list[str], str] | None:
    """(operand subscripts, output subscript), or None for forms not handled (ellipsis, implicit output)."""
    equation = equation.replace(" ", "")
    if "." in equation or "->" not in equation:
        return None
    inputs, output = equation.split("->")
    subs = inputs.split(",")
    return (subs, output) if len(subs) == count else None


@rule(aten.einsum.default)
def einsum(ctx: RuleContext) -> None:
    equation, operands = ctx.node.args[0], ctx.node.args[1]
    values = [(x, None) for x in operands]
    parsed = _subscripts(equation, len(values))
    if parsed is None or any(len(s) != len(ctx.shape(v)) for s, v in zip(parsed[0], values, strict=True)):
        return
    subs, output = parsed
    out = ctx.out()
    for letter in dict.fromkeys("".join(subs)):
        if output.count(letter) > 1 or any(s.count(letter) > 1 for s in subs):
            continue
        holders = [(v, s.index(letter)) for v, s in zip(values, subs, strict=True) if letter in s]
        if letter in output:
            for v, d in holders:
                ctx.same(v, d, out, output.index(letter))
        elif len(holders) > 1:
            first, d0 = holders[0]
            for v, d in holders[1:]:
                ctx.same(first, d0, v, d)
            if all(v[0].op != "get_attr" for v, _ in holders):
                ctx.inexact(first, d0, "a product of activations contracts over pruned features")

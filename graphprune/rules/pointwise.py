"""Element-wise ops: every dim of every tensor operand is the same index space as the
output dim it lines up with under broadcasting (aligned from the right). A size-1
operand dim that broadcasts is claimed but not related: it cannot be pruned anyway.

    out[i_0, ..., i_n] = f(a[i_0, ..., i_n], b[..., i_k, ...])
"""

from __future__ import annotations

import operator

import torch

from graphprune.rules.registry import RuleContext, rule

aten = torch.ops.aten


def _broadcast(ctx: RuleContext) -> None:
    if not ctx.outputs():
        return  # arithmetic on sizes (SymInts): no tensor dims involved
    out = ctx.outputs()[0]
    rank = len(ctx.shape(out))
    for value in ctx.inputs():
        shape = ctx.shape(value)
        offset = rank - len(shape)
        for d in range(len(shape)):
            if ctx.size(value, d) == 1 and ctx.size(out, offset + d) != 1:
                ctx.claim(value, d)
            else:
                ctx.same(value, d, out, offset + d)


UNARY = [
    "relu", "relu_", "gelu", "gelu_", "silu", "silu_", "sigmoid", "sigmoid_", "tanh", "tanh_",
    "hardswish", "hardswish_", "hardsigmoid", "hardsigmoid_", "hardtanh", "hardtanh_", "relu6",
    "leaky_relu", "leaky_relu_", "elu", "elu_", "selu", "selu_", "celu", "mish", "mish_",
    "softplus", "neg", "abs", "exp", "log", "sqrt", "rsqrt", "reciprocal", "sin", "cos", "erf",
    "clone", "contiguous", "alias",
    "detach", "detach_", "_to_copy", "to", "type_as", "clamp", "clamp_", "clamp_min",
    "clamp_max", "pow", "square", "logit", "log_sigmoid", "glu_never", "sign", "round",
    "floor", "ceil", "trunc", "silu_backward_never", "lift_fresh_copy", "bitwise_not",
    "logical_not", "isnan", "isinf", "nan_to_num", "fill", "fill_", "zero_", "zeros_like", "ones_like",
    "empty_like", "full_like", "rand_like", "randn_like", "masked_fill", "masked_fill_",
]
BINARY = [
    "add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "maximum", "minimum",
    "where", "eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or", "bitwise_and",
    "bitwise_or", "remainder", "fmod", "floor_divide", "rsub", "addcmul", "addcdiv", "lerp",
    "copy", "copy_", "atan2", "hypot", "xlogy", "expand_as",
]


def _targets(names: list[str]) -> list:
    found = []
    for name in names:
        packet = getattr(aten, name, None)
        if packet is None:
            continue
        for overload in packet.overloads():
            found.append(getattr(packet, overload))
    return found


rule(*_targets(UNARY + BINARY), operator.add, operator.mul, operator.sub, operator.truediv)(
    _broadcast
)
# dropout(x, p, train): element-wise; `train` follows the pruned module's mode (graphprune.trainable)
rule(aten.dropout.default, aten.feature_dropout.default, aten.alpha_dropout.default,
     aten.feature_alpha_dropout.default, train_arg=2)(_broadcast)
rule(aten.dropout_.default, aten.feature_dropout_.default, aten.alpha_dropout_.default,
     aten.feature_alpha_dropout_.default)(_broadcast)


@rule(operator.getitem)
def getitem(ctx: RuleContext) -> None:
    """out = src[k] for a node that returns a tuple of tensors: the same tensor."""
    src, k = ctx.node.args
    if not ctx.outputs() or not isinstance(k, int):
        return
    source = (src, k)
    out = ctx.out()
    for d in range(len(ctx.shape(out))):
        ctx.same(source, d, out, d)

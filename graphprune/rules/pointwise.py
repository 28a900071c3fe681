"""Element-wise ops: every dim of every tensor operand is the same index space as the
output dim it lines up with under broadcasting (aligned from the right). A size-1
operand dim that broadcasts is claimed but not related: it cannot be pruned anyway.

    out[i_0, ..., i_n] = f(a[i_0, ..., i_n], b[..., i_k, ...])
"""

from __future__ import annotations

import operator

import torch

from graphprune.rules.registry import Role, RuleContext, rule

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


# The overloads meant, by name: tensor in, tensor out. Not the `out=` variants, nor the
# scalar and list overloads that share a name (`add.t` concatenates lists, `mul.left_t`
# repeats one, `where.default` is nonzero): each listed overload is looked up, so a typo fails.
ACTIVATIONS = """
relu relu_ gelu gelu_ silu silu_ sigmoid sigmoid_ tanh tanh_ hardswish hardswish_
hardtanh hardtanh_ relu6 leaky_relu leaky_relu_ elu elu_ selu selu_ celu mish mish_ softplus
"""
SAME_VALUE = "clone contiguous alias detach _to_copy to.device to.dtype to.dtype_layout"
UNARY = """
hardsigmoid hardsigmoid_ neg abs exp
log sqrt rsqrt reciprocal sin cos erf
detach_ square logit log_sigmoid sign round round.decimals floor ceil trunc lift_fresh_copy
bitwise_not logical_not isnan isinf nan_to_num zero_ zeros_like ones_like empty_like full_like rand_like
randn_like rand_like.generator randn_like.generator clamp clamp.Tensor clamp_ clamp_.Tensor clamp_min
clamp_min.Tensor clamp_max clamp_max.Tensor pow.Tensor_Scalar
fill.Scalar fill_.Scalar masked_fill.Scalar masked_fill_.Scalar
"""
RESIDUAL_ADDS = "add.Tensor add_.Tensor"
BINARY = """
add.Scalar add_.Scalar sub.Tensor sub.Scalar sub_.Tensor sub_.Scalar rsub.Tensor
rsub.Scalar mul.Tensor mul.Scalar mul_.Tensor mul_.Scalar div.Tensor div.Scalar div.Tensor_mode
div.Scalar_mode div_.Tensor div_.Scalar div_.Tensor_mode div_.Scalar_mode pow.Tensor_Tensor pow.Scalar
maximum minimum where.self where.ScalarOther where.ScalarSelf where.Scalar eq.Tensor eq.Scalar ne.Tensor
ne.Scalar lt.Tensor lt.Scalar le.Tensor le.Scalar gt.Tensor gt.Scalar ge.Tensor ge.Scalar logical_and
logical_or bitwise_and.Tensor bitwise_and.Scalar bitwise_and.Scalar_Tensor bitwise_or.Tensor
bitwise_or.Scalar bitwise_or.Scalar_Tensor remainder.Tensor remainder.Scalar remainder.Scalar_Tensor
fmod.Tensor fmod.Scalar floor_divide floor_divide.Scalar addcmul addcdiv lerp.Scalar lerp.Tensor copy
copy_ atan2 hypot xlogy.Tensor xlogy.Scalar_Other xlogy.Scalar_Self expand_as fill.Tensor fill_.Tensor
masked_fill.Tensor masked_fill_.Tensor
"""
LIKE_FIRST = "type_as to.other"  # the second tensor gives only a dtype and device


def _targets(spec: str) -> list:
    """'add.Tensor relu' -> [aten.add.Tensor, aten.relu.default]."""
    found = []
    for item in spec.split():
        name, _, overload = item.partition(".")
        found.append(getattr(getattr(aten, name), overload or "default"))
    return found


rule(*_targets(UNARY + BINARY), operator.add, operator.mul, operator.sub, operator.truediv)(
    _broadcast
)
rule(*_targets(ACTIVATIONS), roles=(Role.ACTIVATION,))(_broadcast)
rule(*_targets(SAME_VALUE), roles=(Role.SAME_VALUE,))(_broadcast)
rule(*_targets(RESIDUAL_ADDS), roles=(Role.RESIDUAL_ADD,))(_broadcast)
# dropout(x, p, train): element-wise; `train` follows the pruned module's mode (graphprune.rewrite.trainable)
rule(aten.dropout.default, aten.feature_dropout.default, aten.alpha_dropout.default,
     aten.feature_alpha_dropout.default, train_arg=2)(_broadcast)
rule(aten.dropout_.default, aten.feature_dropout_.default, aten.alpha_dropout_.default,
     aten.feature_alpha_dropout_.default)(_broadcast)


@rule(*_targets(LIKE_FIRST))
def like_first(ctx: RuleContext) -> None:
    """out = x.to(other's dtype and device): other's shape plays no part."""
    x, other, out = ctx.arg(0), ctx.arg(1), ctx.out()
    for d in range(len(ctx.shape(x))):
        ctx.same(x, d, out, d)
    for d in range(len(ctx.shape(other))):
        ctx.claim(other, d)


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

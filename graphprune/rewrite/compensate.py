"""Data-free bias correction: put back the mean of what the removed input channels carried.

A removed input channel c of a linear or convolution took its mean E[x_c] into every output;
cutting it shifts each output o by  d_o = sum_c E[x_c] sum_k W[o, c, k]  (k: the kernel's taps;
zero padding at the borders is ignored). Without data, E[x_c] comes from the stored statistics of
the BatchNorm that normalised that channel, as data-free quantization's bias correction does
(Nagel et al., ICCV 2019): a batch norm's output is taken as  N(beta_c, gamma_c^2), an element-wise
activation's mean and variance are then integrated by Gauss-Hermite quadrature, a residual add sums
means and variances (independent summands), and pooling, dropout and flattening of [N, C, 1, 1]
keep the mean. Any other op leaves the channel's mean unknown, and no correction is made for it.

The shift goes into the layer's bias (b' = b + d) or, for a layer without one whose only user is a
batch norm, into that norm's running mean (mu' = mu - d). Only ops with groups == 1 are corrected.
The pruned model is changed in place; `correct` returns how many layers were corrected.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import fx

log = logging.getLogger(__name__)

aten = torch.ops.aten
_NORMS = (aten.batch_norm.default, aten._native_batch_norm_legit_no_training.default)
_ACTIVATIONS = {aten.relu.default, aten.relu_.default, aten.relu6.default, aten.hardtanh.default, aten.hardtanh_.default,
                aten.silu.default, aten.silu_.default, aten.gelu.default, aten.sigmoid.default, aten.hardswish.default,
                aten.hardswish_.default, aten.hardsigmoid.default, aten.tanh.default, aten.elu.default,
                aten.leaky_relu.default}
_SAME = {aten.dropout.default, aten.clone.default, aten.alias.default, aten.contiguous.default,
         aten.feature_dropout.default}
_POOL = {aten.mean.dim, aten.adaptive_avg_pool2d.default, aten.avg_pool2d.default, aten.adaptive_avg_pool1d.default,
         aten.flatten.using_ints, aten.view.default, aten.reshape.default, aten._unsafe_view.default}
_LINEAR = (aten.linear.default,)
_CONV = (aten.conv2d.default, aten.conv1d.default)
# also lower the next batch norm's running variance by what the removed inputs added (channels taken as
# independent); off: on EfficientNet-Lite0 it moved outputs further (scripts/fidelity_bench.py)
VARIANCE = False
FLOOR = 0.05  # ... to no less than this fraction of it
_Z, _W = np.polynomial.hermite_e.hermegauss(48)
_Z, _W = torch.as_tensor(_Z), torch.as_tensor(_W / _W.sum())


def _tensor(gm: fx.GraphModule, arg) -> torch.Tensor | None:
    if not isinstance(arg, fx.Node) or arg.op != "get_attr":
        return None
    owner, _, name = arg.target.rpartition(".")
    return getattr(gm.get_submodule(owner) if owner else gm, name).detach().double()


def _channels(node: fx.Node) -> int | None:
    val = node.meta.get("val")
    return int(val.shape[1]) if isinstance(val, torch.Tensor) and val.dim() >= 2 else None


def _norm(gm, node) -> tuple | None:
    c = _channels(node) if node.target is aten.batch_norm.default else _channels(node.args[0])
    if c is None:
        return None
    w, b = _tensor(gm, node.args[1]), _tensor(gm, node.args[2])
    return (b if b is not None else torch.zeros(c, dtype=torch.float64),
            w.abs() if w is not None else torch.ones(c, dtype=torch.float64))


def _activation(node, stat) -> tuple | None:
    mean, std = stat
    if std is None:
        return None
    points = (mean[:, None] + std[:, None] * _Z[None, :]).float()
    values = node.target(points, *node.args[1:], **node.kwargs).double()
    m = (values * _W).sum(1)
    return m, ((values * values * _W).sum(1) - m * m).clamp_min(0).sqrt()


def _stat(gm, node: fx.Node, stats: dict) -> tuple | None:
    """(mean [C], std [C] or None) of `node`'s output over its dim 1, or None when unknown."""
    if node.op != "call_function":
        return None
    t, first = node.target, node.args[0] if node.args else None
    if t in _NORMS:
        return _norm(gm, node)
    if t is __import__("operator").getitem and node.args[1] == 0 and first in stats:
        return stats[first] if first.target in _NORMS else None
    if first not in stats:
        return None
    if t in _ACTIVATIONS:
        return _activation(node, stats[first])
    if t in _SAME:
        return stats[first]
    if t in _POOL and _channels(node) == len(stats[first][0]) and _keeps_channels(node):
        return stats[first][0], None
    if t is aten.add.Tensor and len(node.args) == 2 and node.args[1] in stats and not node.kwargs:
        (m1, s1), (m2, s2) = stats[first], stats[node.args[1]]
        if len(m1) == len(m2) and _same_shape(first, node.args[1]):
            return m1 + m2, None if s1 is None or s2 is None else (s1 * s1 + s2 * s2).sqrt()
    return None


def _same_shape(a: fx.Node, b: fx.Node) -> bool:
    va, vb = a.meta.get("val"), b.meta.get("val")
    return isinstance(va, torch.Tensor) and isinstance(vb, torch.Tensor) and va.shape == vb.shape


def _keeps_channels(node: fx.Node) -> bool:
    """A pooling or reshape whose output is [N, C, ...] with the input's channel count at dim 1 and
    no other dim merged into it (flattening [N, C, 1, 1], pooling spatial dims)."""
    src, out = node.args[0].meta.get("val"), node.meta.get("val")
    if not isinstance(src, torch.Tensor) or not isinstance(out, torch.Tensor) or out.dim() < 2:
        return False
    if node.target is aten.mean.dim:
        return 1 not in [d % src.dim() for d in node.args[1]] and out.shape[1] == src.shape[1]
    if node.target not in (aten.flatten.using_ints, aten.view.default, aten.reshape.default, aten._unsafe_view.default):
        return out.shape[1] == src.shape[1]  # pooling: per channel
    return int(np.prod(src.shape[2:])) == 1 and int(np.prod(out.shape[2:])) == 1 and src.shape[1] == out.shape[1]


def expected_inputs(gm: fx.GraphModule) -> dict:
    """node -> (mean, std) of its output per channel, for every node whose statistics are known."""
    stats = {}
    for node in gm.graph.nodes:
        stat = _stat(gm, node, stats)
        if stat is not None:
            stats[node] = stat
    return stats


def _single_norm_user(node: fx.Node) -> fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 and users[0].op == "call_function" and users[0].target in _NORMS else None


def _variance(plan, gm, node: fx.Node, stat) -> torch.Tensor | None:
    """v [kept outputs]: the variance the removed inputs added to each output, channels and taps taken
    as independent (exact for 1x1 convolutions and linears of independent inputs), or None."""
    w_node = node.args[1]
    weight, kept_in = _tensor(gm, w_node), plan.kept(((w_node, None), 1))
    if stat[1] is None or weight is None or kept_in is None or len(stat[1]) != weight.shape[1]:
        return None
    removed = np.setdiff1d(np.arange(weight.shape[1]), kept_in)
    taps = weight[:, removed].reshape(weight.shape[0], len(removed), -1).pow(2).sum(-1)
    v = taps @ stat[1][removed].pow(2)
    kept_out = plan.kept(((w_node, None), 0))
    return v if kept_out is None else v[torch.as_tensor(kept_out)]


def _shift(plan, gm, node: fx.Node, stat) -> torch.Tensor | None:
    """d [kept outputs] for one linear/conv of the original graph, or None when nothing applies."""
    w_node = node.args[1]
    weight = _tensor(gm, w_node)
    kept_in = plan.kept(((w_node, None), 1))
    if weight is None or kept_in is None or weight.dim() < 2 or len(stat[0]) != weight.shape[1]:
        return None
    removed = np.setdiff1d(np.arange(weight.shape[1]), kept_in)
    taps = weight[:, removed].reshape(weight.shape[0], len(removed), -1).sum(-1)  # [O, removed]
    d = taps @ stat[0][removed]
    kept_out = plan.kept(((w_node, None), 0))
    return d if kept_out is None else d[torch.as_tensor(kept_out)]


def _target(node: fx.Node) -> tuple[str, float] | None:
    """(name of the tensor that absorbs the shift, sign) for one linear/conv."""
    bias = node.args[2] if len(node.args) > 2 else None
    if isinstance(bias, fx.Node) and bias.op == "get_attr":
        return bias.target, 1.0
    norm = _single_norm_user(node)
    if norm is not None and isinstance(norm.args[3], fx.Node) and norm.args[3].op == "get_attr":
        return norm.args[3].target, -1.0
    return None


def _lower_variance(pruned, running_mean: str, v: torch.Tensor | None) -> None:
    """running_var' = max(running_var - v, FLOOR running_var) of the batch norm owning `running_mean`."""
    owner, _, name = running_mean.rpartition(".")
    module = pruned.get_submodule(owner) if owner else pruned
    var = getattr(module, name.replace("mean", "var"), None)
    if v is None or not isinstance(var, torch.Tensor) or var.shape != v.shape:
        return
    var.copy_(torch.maximum(var - v.to(var.dtype), FLOOR * var))


def correct(plan, pruned: torch.nn.Module) -> int:
    """Fold the expected contribution of `plan`'s removed input channels into `pruned` (in place)."""
    gm = plan.graph.captured.module
    stats = expected_inputs(gm)
    done = 0
    for node in gm.graph.nodes:
        if node.op != "call_function" or node.target not in _LINEAR + _CONV or node.args[0] not in stats:
            continue
        if node.target in _CONV and (node.args[6] if len(node.args) > 6 else 1) != 1:
            continue
        if node.target in _LINEAR and (_channels(node.args[0]) is None or node.args[0].meta["val"].dim() != 2):
            continue
        d, target = _shift(plan, gm, node, stats[node.args[0]]), _target(node)
        if d is None or target is None:
            continue
        owner, _, name = target[0].rpartition(".")
        tensor = getattr(pruned.get_submodule(owner) if owner else pruned, name)
        if tensor.shape != d.shape:
            continue
        with torch.no_grad():
            tensor.add_((target[1] * d).to(tensor.dtype))
            if target[1] < 0 and VARIANCE:
                _lower_variance(pruned, target[0], _variance(plan, gm, node, stats[node.args[0]]))
        done += 1
    log.info("bias correction: %d layers", done)
    return done

"""Data-free bias correction: put back the mean of what the removed input channels carried.

A removed input channel c of a linear or convolution took its mean E[x_c] into every output;
cutting it shifts each output o by  d_o = sum_c E[x_c] sum_k W[o, c, k]  (k: the kernel's taps;
zero padding at the borders is ignored). Without data, E[x_c] comes from the stored statistics of
the BatchNorm that normalised that channel, as data-free quantization's bias correction does
(Nagel et al., ICCV 2019), carried through activations, residual adds and pooling by
graphprune.rules.moments. Where the channel's mean is unknown, no correction is made for it.

The shift goes into the layer's bias (b' = b + d) or, for a layer without one whose only user is a
batch norm, into that norm's running mean (mu' = mu - d). Only ops with groups == 1 are corrected.
The pruned model is changed in place; `correct` returns how many layers were corrected.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import fx

from graphprune.rules import conv, moments

log = logging.getLogger(__name__)

aten = torch.ops.aten
_LINEAR = (aten.linear.default,)
_CONV = (aten.conv2d.default, aten.conv1d.default)
# also lower the next batch norm's running variance by what the removed inputs added (channels taken as
# independent); off: on EfficientNet-Lite0 it moved outputs further (scripts/fidelity_bench.py)
VARIANCE = False
FLOOR = 0.05  # ... to no less than this fraction of it


def _single_norm_user(node: fx.Node) -> fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 and users[0].op == "call_function" and users[0].target in moments.NORMS else None


def _variance(plan, gm, node: fx.Node, stat) -> torch.Tensor | None:
    """v [kept outputs]: the variance the removed inputs added to each output, channels and taps taken
    as independent (exact for 1x1 convolutions and linears of independent inputs), or None."""
    w_node = node.args[1]
    weight, kept_in = moments.tensor(gm, w_node), plan.kept(((w_node, None), 1))
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
    weight = moments.tensor(gm, w_node)
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
    stats = moments.expected(gm)
    done = 0
    for node in gm.graph.nodes:
        if node.op != "call_function" or node.target not in _LINEAR + _CONV or node.args[0] not in stats:
            continue
        if conv.groups(node) != 1:
            continue
        if node.target in _LINEAR and (moments.channels(node.args[0]) is None or node.args[0].meta["val"].dim() != 2):
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

"""What an op does to the mean and spread of each channel, read from the statistics a model stores.

A batch norm in eval mode outputs channel c as roughly N(beta_c, gamma_c^2); an element-wise
activation's mean and standard deviation are then integrated by Gauss-Hermite quadrature; a
residual add sums means and variances (summands taken as independent); dropout, copies, pooling and
flattening of [N, C, 1, 1] keep the mean (pooling and flattening lose the spread). Any other op leaves
the channel's moments unknown. Without data this is what graphprune knows of a channel's activations:
the data-free bias correction (graphprune.rewrite.compensate) folds removed channels' means into the
next layer, and the `share` criterion (graphprune.importance.magnitude) weighs channels by their spread.
"""

from __future__ import annotations

import operator

import numpy as np
import torch
from torch import fx

from graphprune.rules.registry import Role, has_role

aten = torch.ops.aten
# normalisations with stored statistics (eval-mode batch norm): weight at arg 1, bias at arg 2
NORMS = (aten.batch_norm.default, aten._native_batch_norm_legit_no_training.default)
_POOL = {aten.mean.dim, aten.adaptive_avg_pool2d.default, aten.avg_pool2d.default, aten.adaptive_avg_pool1d.default,
         aten.flatten.using_ints, aten.view.default, aten.reshape.default, aten._unsafe_view.default}
_DROPOUT = {aten.dropout.default, aten.feature_dropout.default}
_Z, _W = np.polynomial.hermite_e.hermegauss(48)
_Z, _W = torch.as_tensor(_Z), torch.as_tensor(_W / _W.sum())


def tensor(gm: fx.GraphModule, arg) -> torch.Tensor | None:
    """The module tensor a get_attr node names, detached, as float64; None for anything else."""
    if not isinstance(arg, fx.Node) or arg.op != "get_attr":
        return None
    owner, _, name = arg.target.rpartition(".")
    return getattr(gm.get_submodule(owner) if owner else gm, name).detach().double()


def channels(node: fx.Node) -> int | None:
    """The size of dim 1 of the node's value, or None."""
    val = node.meta.get("val")
    return int(val.shape[1]) if isinstance(val, torch.Tensor) and val.dim() >= 2 else None


def expected(gm: fx.GraphModule) -> dict:
    """node -> (mean [C], std [C] or None) of its output per channel (dim 1), for every node whose
    moments the stored statistics tell."""
    stats = {}
    for node in gm.graph.nodes:
        stat = _stat(gm, node, stats)
        if stat is not None:
            stats[node] = stat
    return stats


def _norm(gm, node) -> tuple | None:
    c = channels(node) if node.target is aten.batch_norm.default else channels(node.args[0])
    if c is None:
        return None
    w, b = tensor(gm, node.args[1]), tensor(gm, node.args[2])
    return (b if b is not None else torch.zeros(c, dtype=torch.float64),
            w.abs() if w is not None else torch.ones(c, dtype=torch.float64))


def _activation(node, stat) -> tuple | None:
    mean, std = stat
    if std is None or any(isinstance(a, fx.Node) for a in node.args[1:]):  # prelu's weight: not a constant
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
    if t in NORMS:
        return _norm(gm, node)
    if t is operator.getitem and node.args[1] == 0 and first in stats:
        return stats[first] if first.target in NORMS else None
    if first not in stats:
        return None
    if has_role(node, Role.ACTIVATION):
        return _activation(node, stats[first])
    if has_role(node, Role.SAME_VALUE) or t in _DROPOUT:
        return stats[first]
    if t in _POOL and channels(node) == len(stats[first][0]) and _keeps_channels(node):
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

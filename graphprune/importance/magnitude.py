"""Criteria that need no data: weight magnitudes, BatchNorm scales, random.

    l1      s(c) = sum over the parameter slices of c of sum |W|
    l2      s(c) = sum over the parameter slices of c of sum W^2
    bn      s(c) = sum of |gamma_c| over the BatchNorms that normalise c
    random  s(c) ~ U(0, 1), seeded
"""

from __future__ import annotations

import numpy as np
import torch

from graphprune.errors import PlanError
from graphprune.importance.channels import parameter, power_sums
from graphprune.importance.registry import criterion
from graphprune.rules.registry import Role, has_role

aten = torch.ops.aten
@criterion("l1")
def l1(graph, calibration=None) -> np.ndarray:
    """sum over the channel's parameter slices of |W|"""
    return power_sums(graph, 1)


@criterion("l2")
def l2(graph, calibration=None) -> np.ndarray:
    """sum over the channel's parameter slices of W^2"""
    return power_sums(graph, 2)


@criterion("random")
def random(graph, calibration=None) -> np.ndarray:
    """uniform random scores (seed from the calibration, default 0)"""
    seed = calibration.seed if calibration is not None else 0
    return np.random.default_rng(seed).random(graph.num_channels)


@criterion("bn")
def bn(graph, calibration=None) -> np.ndarray:
    """sum of |gamma| of the BatchNorm weights that normalise the channel (network slimming)"""
    module = graph.captured.module
    scores = np.zeros(graph.num_channels, dtype=np.float64)
    scaled = np.zeros(graph.num_channels, dtype=bool)
    for node in graph.captured.graph.nodes:
        if not has_role(node, Role.NORMALIZES) or len(node.args) < 2:
            continue
        w = node.args[1]
        if w is None or getattr(w, "op", None) != "get_attr":
            continue
        ids = graph.spaces.ids(((w, None), 0))
        if ids is None:
            continue
        channels = graph.labels[ids]
        np.add.at(scores, channels, parameter(module, w.target).detach().abs().double().cpu().numpy())
        scaled[channels] = True
    if not scaled.any():
        raise PlanError("criterion 'bn' needs BatchNorm layers with affine weights and the model has none; "
                        "use --criterion l2, or taylor with --data")
    unscaled = [g for g in graph.groups if len(g.channels) and not scaled[g.channels].any()]
    if unscaled:  # groups with no BatchNorm (a classifier head, say) are ranked by l2 within themselves
        fallback = l2(graph)
        for g in unscaled:
            scores[g.channels] = fallback[g.channels]
        if calibration is not None:
            calibration.notes.append(f"bn: {len(unscaled)} groups without BatchNorm ranked by l2")
    return scores

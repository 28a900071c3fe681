"""Magnitude importance of channels.

The score of channel c is aggregated over every parameter (not buffer) slice that belongs to it,
across the whole group (every conv, norm and linear the channel touches):

    L1:  s(c) = sum_{(W, d, i) in c} sum |W.select(d, i)|
    L2:  s(c) = sum_{(W, d, i) in c} sum  W.select(d, i) ** 2

Data-driven criteria (Taylor, activation statistics) plug in as other functions with
the same signature: (DependencyGraph) -> scores per channel.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from graphprune.depgraph import DependencyGraph


def parameter(module: torch.nn.Module, target: str) -> torch.Tensor:
    obj = module
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _magnitude(graph: DependencyGraph, power: int) -> np.ndarray:
    scores = np.zeros(graph.num_channels, dtype=np.float64)
    module = graph.captured.module
    for space, entry in graph.spaces.base.items():
        (node, _), dim = space
        if entry is None or node.op != "get_attr":
            continue
        w = parameter(module, node.target)
        if not isinstance(w, torch.nn.Parameter):
            continue  # buffers (BN running statistics) and constants say nothing about importance
        w = w.detach().float()
        others = [d for d in range(w.dim()) if d != dim]
        per = (w.abs() if power == 1 else w * w).sum(dim=others) if others else (w.abs() if power == 1 else w * w)
        np.add.at(scores, graph.labels[graph.spaces.ids(space)], per.double().cpu().numpy())
    return scores


def l1(graph: DependencyGraph) -> np.ndarray:
    return _magnitude(graph, 1)


def l2(graph: DependencyGraph) -> np.ndarray:
    return _magnitude(graph, 2)


def random(graph: DependencyGraph, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(graph.num_channels)


CRITERIA: dict[str, Callable[[DependencyGraph], np.ndarray]] = {"l1": l1, "l2": l2, "random": random}

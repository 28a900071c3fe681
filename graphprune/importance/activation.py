"""Criteria from activation statistics, gathered on the captured graph.

Hooks on the user's modules do not fire on the captured graph, so the graph is run by an
`fx.Interpreter` that watches the outputs of its nonlinearities (ReLU, GELU, SiLU, ...). A
channel's statistics come from every watched value it indexes, reduced over all other dims and
accumulated over batches as running sums (memory: a few floats per index; act-entropy also keeps
one value per sample and channel). A group with no nonlinearity output is watched at every
activation value it has instead (noted in the report).

    act-mean     s(c) = E |a_c|
    act-var      s(c) = Var a_c
    act-entropy  s(c) = entropy of the histogram (32 bins) of the per-sample means of a_c
    apoz         s(c) = 1 - APoZ_c, APoZ_c the fraction of zeros in a_c (Hu et al. 2016):
                 a channel that is almost always zero after its activation scores low
"""

from __future__ import annotations

import numpy as np
import torch
import torch.fx as fx
from torch.fx._pytree import tree_flatten_spec

from graphprune.importance.calibration import Calibration
from graphprune.importance.registry import criterion
from graphprune.rules.registry import Role, has_role

aten = torch.ops.aten
BINS = 32


class _Running:
    """Running sums per index of one (value, dim), plus per-sample means for the entropy."""

    def __init__(self, dim: int):
        self.dim = dim
        self.n = 0
        self.abs = self.sq = self.sum = self.zeros = None
        self.samples: list = []

    def update(self, a: torch.Tensor) -> None:
        a = a.detach().float()
        others = [d for d in range(a.dim()) if d != self.dim]
        count = a.numel() // a.shape[self.dim]
        parts = [a.abs().sum(others), (a * a).sum(others), a.sum(others), (a == 0).sum(others).float()]
        parts = [p.double().cpu().numpy() for p in parts]
        if self.abs is None:
            self.abs, self.sq, self.sum, self.zeros = parts
        else:
            self.abs, self.sq, self.sum, self.zeros = (x + p for x, p in zip((self.abs, self.sq, self.sum, self.zeros),
                                                                          parts, strict=True))
        self.n += count
        if self.dim != 0 and a.dim() > 1:
            per = [d for d in range(1, a.dim()) if d != self.dim]
            self.samples.append((a.mean(per) if per else a).double().cpu().numpy())

    def stats(self) -> dict:
        mean = self.sum / self.n
        out = {"act-mean": self.abs / self.n, "act-var": np.maximum(self.sq / self.n - mean ** 2, 0.0),
               "apoz": 1.0 - self.zeros / self.n}
        out["act-entropy"] = _entropy(np.concatenate(self.samples)) if self.samples else np.zeros_like(mean)
        return out


def _entropy(values: np.ndarray) -> np.ndarray:
    """Entropy (nats) of each column's histogram over its own range; a constant column has 0."""
    out = np.zeros(values.shape[1])
    for c in range(values.shape[1]):
        v = values[:, c]
        if not np.isfinite(v).all() or v.max() - v.min() <= 1e-12 * max(1.0, abs(v.max())):
            continue
        p, _ = np.histogram(v, bins=BINS)
        p = p[p > 0] / len(v)
        out[c] = float(-(p * np.log(p)).sum())
    return out


def _watched(graph) -> dict:
    """node -> [(dim, channel of each index)]: nonlinearity outputs, or a group's activations if it has none."""
    spaces, labels = graph.spaces, graph.labels
    candidate = np.zeros(graph.num_channels, dtype=bool)
    for g in graph.groups:
        candidate[g.channels] = True
    found: dict = {}
    covered = np.zeros(graph.num_channels, dtype=bool)
    fallback: dict = {}
    for space, entry in spaces.base.items():
        (node, index), dim = space
        if entry is None or index is not None or node.op != "call_function":
            continue
        channels = labels[spaces.ids(space)]
        if not candidate[channels].any():
            continue
        target = found if has_role(node, Role.ACTIVATION) else fallback
        target.setdefault(node, []).append((dim, channels))
        if has_role(node, Role.ACTIVATION):
            covered[channels] = True
    for node, dims in fallback.items():
        keep = [(d, ch) for d, ch in dims if not covered[ch].any()]
        if keep:
            found.setdefault(node, []).extend(keep)
    return found


class _Watch(fx.Interpreter):
    def __init__(self, module, watched: dict, running: dict):
        super().__init__(module)
        self.watched, self.running = watched, running

    def run_node(self, n):
        out = super().run_node(n)
        for dim, _ in self.watched.get(n, ()):
            if isinstance(out, torch.Tensor):
                self.running.setdefault((n, dim), _Running(dim)).update(out)
        return out


def _stats(graph, calibration: Calibration) -> dict:
    if "activations" in calibration.cache:
        return calibration.cache["activations"]
    module = graph.captured.module
    watched = _watched(graph)
    running: dict = {}
    with torch.no_grad():
        for batch in calibration.batches():
            flat = tree_flatten_spec((batch.args, batch.kwargs), module._in_spec)
            _Watch(module, watched, running).run(*flat)
    totals = {k: np.zeros(graph.num_channels) for k in ("act-mean", "act-var", "act-entropy", "apoz")}
    counts = np.zeros(graph.num_channels)
    for (node, dim), run in running.items():
        channels = dict(watched[node])[dim]
        for k, v in run.stats().items():
            np.add.at(totals[k], channels, v)
        np.add.at(counts, channels, 1.0)
    calibration.cache["activations"] = {k: v / np.maximum(counts, 1.0) for k, v in totals.items()}
    return calibration.cache["activations"]


@criterion("act-mean", needs="activations")
def act_mean(graph, calibration: Calibration) -> np.ndarray:
    """E|a| of the channel's activations after its nonlinearity"""
    return _stats(graph, calibration)["act-mean"]


@criterion("act-var", needs="activations")
def act_var(graph, calibration: Calibration) -> np.ndarray:
    """Var(a) of the channel's activations after its nonlinearity"""
    return _stats(graph, calibration)["act-var"]


@criterion("act-entropy", needs="activations")
def act_entropy(graph, calibration: Calibration) -> np.ndarray:
    """entropy of the histogram of the channel's per-sample mean activations"""
    return _stats(graph, calibration)["act-entropy"]


@criterion("apoz", needs="activations")
def apoz(graph, calibration: Calibration) -> np.ndarray:
    """1 - average percentage of zeros of the channel after its nonlinearity"""
    return _stats(graph, calibration)["apoz"]

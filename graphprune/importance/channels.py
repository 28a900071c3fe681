"""Summing per-index quantities of parameter and activation dims into per-channel scores.

Every parameter dim (W, d) that belongs to the dependency graph maps its indices to channels
(`graph.labels`); a per-index quantity q[i] of that dim is added to its channel:

    s(c) = sum over (W, d, i) in c of q_W,d[i]

so a channel's score sums over every tensor it touches (every conv, norm and linear slice).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from graphprune.errors import InputError


def parameter(module: torch.nn.Module, target: str):
    obj = module
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def parameter_spaces(graph) -> Iterator[tuple[str, int, np.ndarray]]:
    """(target, dim, channel of each index) for every parameter dim in the graph."""
    module = graph.captured.module
    for space, entry in graph.spaces.base.items():
        (node, _), dim = space
        if entry is None or node.op != "get_attr":
            continue
        if not isinstance(parameter(module, node.target), torch.nn.Parameter):
            continue  # buffers (BN running statistics) and constants say nothing about importance
        yield node.target, dim, graph.labels[graph.spaces.ids(space)]


def reduce_to(t: torch.Tensor, dim: int) -> np.ndarray:
    """Sum of t over every dim but `dim`, as float64."""
    others = [d for d in range(t.dim()) if d != dim]
    out = t.sum(dim=others) if others else t
    return out.detach().double().cpu().numpy()


def power_sums(graph, p: int) -> np.ndarray:
    """s(c) = sum over the parameter slices of c of sum |W|^p (p = 1, 2), every parameter read once.

    Each parameter is read in blocks of rows (`_CHUNK` elements) and reduced to each of its dims in
    the graph by torch.linalg.vector_norm, which accumulates in float32 without a float32 copy of the
    block: a large model's half-precision weights are never copied whole.
    """
    scores = np.zeros(graph.num_channels, dtype=np.float64)
    module = graph.captured.module
    dims: dict[str, list] = {}
    for target, dim, channels in parameter_spaces(graph):
        dims.setdefault(target, []).append((dim, channels))
    for target, wanted in dims.items():
        w = parameter(module, target).detach()
        if w.dim() == 0:
            continue
        parts: list[list] = [[] for _ in wanted]  # a tensor read twice (tied weights) is counted twice
        for block in w.split(max(1, _CHUNK // max(1, w[0].numel()))):
            for (dim, _), part in zip(wanted, parts, strict=True):
                part.append(_power_sum(block, p, dim))
        for (dim, channels), part in zip(wanted, parts, strict=True):  # rows come block after block; other dims add up
            np.add.at(scores, channels, np.concatenate(part) if dim == 0 else np.sum(part, axis=0))
    return scores


_CHUNK = 1 << 22  # elements per block of rows read by `power_sums`


def _power_sum(block: torch.Tensor, p: int, dim: int) -> np.ndarray:
    """sum of |block|^p over every dim but `dim` (accumulated in float32), as float64."""
    others = [d for d in range(block.dim()) if d != dim]
    if not others:
        return block.float().abs().pow(p).double().cpu().numpy()
    return torch.linalg.vector_norm(block, p, dim=others, dtype=torch.float32).pow(p).double().cpu().numpy()


def from_parameters(graph, scores: dict) -> np.ndarray:
    """Channel scores from the user's own per-index scores of named parameters.

    `scores` maps a parameter name (state_dict key) to a 1-D tensor or array of scores along its
    dim 0 (output channels, neurons); every channel gets the sum of the scores of its slices.
    """
    out = np.zeros(graph.num_channels, dtype=np.float64)
    for target, dim, channels in parameter_spaces(graph):
        if dim == 0 and target in scores:
            values = np.asarray(torch.as_tensor(scores[target]).double().cpu())
            if values.shape != channels.shape:
                raise InputError(f"scores for {target} have shape {tuple(values.shape)}; "
                                 f"one score per channel, {tuple(channels.shape)}, is needed")
            np.add.at(out, channels, values)
    return out

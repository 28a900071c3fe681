"""Summing per-index quantities of parameter and activation dims into per-channel scores.

Every parameter dim (W, d) that belongs to the dependency graph maps its indices to channels
(`graph.labels`); a per-index quantity q[i] of that dim is added to its channel:

    s(c) = sum over (W, d, i) in c of q_W,d[i]

so a channel's score sums over every tensor it touches (every conv, norm and linear slice).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

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


def per_channel(graph, quantity: Callable[[str, torch.Tensor], torch.Tensor], elementwise: bool = False) -> np.ndarray:
    """s(c) = sum over the parameter slices of c of quantity(target, W) reduced to the slice's index.

    `elementwise`: quantity(W)[i] depends on W[i] alone (|W|, W^2), so it is taken on blocks of
    rows (`_CHUNK` elements), which bounds the temporary float32 copies of a large model's weights.
    """
    scores = np.zeros(graph.num_channels, dtype=np.float64)
    module = graph.captured.module
    last = None  # (target, its quantity): a tensor's dims come one after another, computed once for all
    for target, dim, channels in parameter_spaces(graph):
        w = parameter(module, target).detach()
        if elementwise and w.dim() > 0 and w.numel() > _CHUNK:  # blocks of rows: no whole float32 copy
            rows = max(1, _CHUNK // max(1, w[0].numel()))
            parts = [reduce_to(quantity(target, block.float()), dim) for block in w.split(rows)]
            np.add.at(scores, channels, np.concatenate(parts) if dim == 0 else np.sum(parts, axis=0))
            continue
        if last is None or last[0] != target:
            last = (target, quantity(target, w.float()))
        np.add.at(scores, channels, reduce_to(last[1], dim))
    return scores


_CHUNK = 1 << 22  # elements per block of rows in `per_channel(..., elementwise=True)`: 16 MiB in float32


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

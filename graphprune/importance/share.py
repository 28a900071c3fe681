"""The `share` criterion: how much of what the next layers compute a channel carries, without data.

    share   s(c) = sum over the dense layers that read c (linear; convolution with groups 1) of
                   mean over their outputs o of  v_c |W[o, c]|^2 / sum_c' v_c' |W[o, c']|^2

|W[o, c]|^2 sums the squares over the kernel's taps; v_c is the variance of channel c, from the
statistics a model stores (graphprune.rules.moments: a batch norm's gamma^2 carried through its
activation, residual adds summing) or, where they say nothing, the sum of squares of the weight
rows that produce c (its variance for unit-variance inputs: 0 for a dead channel), scaled to mean 1
over the layer's inputs. s(c) is the fraction of each reading output's variance that c contributes
(inputs taken as independent), so scores of different groups measure the same thing and compare
directly under a budget (`normalize='none'`). Unlike l2, it ignores the weights that produce c
where statistics are known: after a batch norm they say nothing of c's size.

Channels no dense layer reads (only a depthwise convolution or an attention product, say) are
scored by l2, scaled within their group to the median score of the read channels.
"""

from __future__ import annotations

import numpy as np
import torch

from graphprune.importance.magnitude import l2
from graphprune.importance.registry import criterion
from graphprune.rules import conv, moments
from graphprune.rules.registry import Role, has_role


@criterion("share")
def share(graph, calibration=None) -> np.ndarray:
    """sum over the dense layers reading the channel of its mean share of their outputs' variance (BatchNorm statistics)"""
    gm = graph.captured.module
    stats, produced = moments.expected(gm), _produced(graph)
    scores = np.zeros(graph.num_channels, dtype=np.float64)
    read = np.zeros(graph.num_channels, dtype=bool)
    for node in gm.graph.nodes:
        ids = _input_ids(graph, node, 1)
        if ids is None:
            continue
        weight = moments.tensor(gm, node.args[1])
        taps = weight.reshape(weight.shape[0], weight.shape[1], -1).pow(2).sum(-1)  # [O, I]
        stat = stats.get(node.args[0])
        if stat is not None and stat[1] is not None and len(stat[1]) == taps.shape[1]:
            var = stat[1].pow(2)
        else:  # no statistics: the producing weights' rows, scaled to mean 1 over the layer's inputs
            var = torch.as_tensor(produced[graph.labels[ids]]).reshape(taps.shape[1], -1).mean(1)
            var = var / var.mean() if var.mean() > 0 else torch.ones_like(var)
        contribution = taps * var[None, :]
        fraction = (contribution / contribution.sum(1, keepdim=True).clamp_min(1e-30)).mean(0)
        channels = graph.labels[ids]
        np.add.at(scores, channels, fraction.numpy())
        read[channels] = True
    _unread(graph, scores, read, calibration)
    return scores


def _produced(graph) -> np.ndarray:
    """Per channel: the sum of squares of the dense layers' weight rows that produce it (its variance
    for inputs of unit variance; 0 for a channel only biases or nothing feed: a constant)."""
    gm, out = graph.captured.module, np.zeros(graph.num_channels, dtype=np.float64)
    for node in gm.graph.nodes:
        ids = _input_ids(graph, node, 0)
        if ids is not None:
            weight = moments.tensor(gm, node.args[1])
            rows = weight.reshape(weight.shape[0], -1).pow(2).sum(1)
            np.add.at(out, graph.labels[ids], np.repeat(rows.numpy(), len(ids) // len(rows)))
    return out


def _input_ids(graph, node, dim: int) -> np.ndarray | None:
    """Element ids of dim `dim` (0: outputs, 1: inputs) of a dense layer's weight (graph.spaces), or None for
    any other node."""
    if node.op != "call_function" or not has_role(node, Role.REFIT) or len(node.args) < 2:
        return None
    if conv.groups(node) != 1:
        return None  # grouped convolution: each output reads its own group only
    weight = node.args[1]
    if getattr(weight, "op", None) != "get_attr" or getattr(weight.meta.get("val"), "ndim", 0) < 2:
        return None
    return graph.spaces.ids(((weight, None), dim))


def _unread(graph, scores: np.ndarray, read: np.ndarray, calibration) -> None:
    """Score the channels no dense layer reads by l2, scaled to the median read score, in place."""
    if read.all():
        return
    level = float(np.median(scores[read])) if read.any() else 1.0
    fallback, scaled = l2(graph), 0
    for group in graph.groups:
        unread = group.channels[~read[group.channels]] if len(group.channels) else group.channels
        if len(unread):
            mean = float(fallback[unread].mean())
            scores[unread] = fallback[unread] / mean * level if mean > 0 else level
            scaled += 1
    if scaled and calibration is not None:
        calibration.notes.append(f"share: {scaled} groups with channels no dense layer reads, ranked by l2")

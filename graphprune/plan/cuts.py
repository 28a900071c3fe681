"""Cut rules: which candidate channels of each group go, given their scores.

    ratio, local       group g loses round(ratio * |C_g|) of its lowest-scoring candidates
    ratio, global      all candidates ranked by normalised score; the lowest ratio * sum |C_g| go
    threshold          channels with score < t go, t per group or (global) over normalised scores:
                         mean          t = mu
                         percentile:P  t = the P-th percentile
                         sigma:K       t = mu - K * sigma
    widths             group g keeps exactly w_g (its lowest-scoring candidates go)

No rule takes more than `max_group_ratio` of a group's candidates (except explicit widths).
Normalisation makes groups comparable for global rules (`normalize` option):

    mean  s / mean(s_g)      max  s / max(s_g)      sum  s / sum(s_g)      none  s
    lamp  s_i / sum_{j in g, s_j >= s_i} s_j     (LAMP: the weakest of a group scores lowest relative
          to what would remain, and every group's strongest scores 1)

(chosen by measurement: docs/BENCHMARKS.md, "Criteria", and scripts/criteria.py).
"""

from __future__ import annotations

import math

import numpy as np

from graphprune.errors import PlanError

NORMALIZATIONS = ("mean", "max", "sum", "lamp", "none")


def parse_threshold(text: str) -> tuple[str, float]:
    """'mean' | 'percentile:P' (0 < P < 100) | 'sigma:K' -> (rule, parameter)."""
    rule, _, arg = text.partition(":")
    if rule == "mean" and not arg:
        return "mean", 0.0
    try:
        value = float(arg)
    except ValueError:
        value = None
    if rule == "percentile" and value is not None and 0.0 < value < 100.0:
        return rule, value
    if rule == "sigma" and value is not None:
        return rule, value
    raise PlanError(f"threshold {text!r} is not one of mean, percentile:P (0 < P < 100), sigma:K; e.g. --threshold sigma:1")


def _threshold(values: np.ndarray, rule: str, arg: float) -> float:
    if rule == "mean":
        return float(values.mean())
    if rule == "percentile":
        return float(np.percentile(values, arg))
    return float(values.mean() - arg * values.std())


def normalized(graph, scores: np.ndarray, how: str) -> np.ndarray:
    """Scores with every group's candidates divided by that group's mean / max / sum."""
    out = scores.astype(np.float64).copy()
    if how == "none":
        return out
    for g in graph.groups:
        if len(g.channels) == 0:
            continue
        s = scores[g.channels]
        if how == "lamp":
            out[g.channels] = _lamp(s)
            continue
        scale = {"mean": s.mean(), "max": s.max(), "sum": s.sum()}[how]
        out[g.channels] = s / scale if scale > 0 else s
    return out


def _lamp(s: np.ndarray) -> np.ndarray:
    """LAMP (Lee et al. 2021): s_i / sum of the scores not below s_i, so every group's strongest is 1."""
    order = np.argsort(s, kind="stable")
    tail = np.cumsum(s[order][::-1])[::-1]  # tail[k] = sum of the k-th smallest and all above it
    out = np.empty_like(s, dtype=np.float64)
    out[order] = np.where(tail > 0, s[order] / np.where(tail > 0, tail, 1.0), 0.0)
    return out


def _cap(group, opts) -> int:
    return math.floor(opts.max_group_ratio * len(group.channels))


def _lowest(group, scores: np.ndarray, k: int) -> np.ndarray:
    order = group.channels[np.argsort(scores[group.channels], kind="stable")]
    return order[:k]


def lowest(graph, scores: np.ndarray, counts: dict) -> dict:
    """Group index -> its `counts[g]` lowest-scoring candidates."""
    return {g.index: _lowest(g, scores, counts[g.index]) for g in graph.groups if counts.get(g.index)}


def _local(graph, scores: np.ndarray, opts) -> dict:
    picks = {}
    for g in graph.groups:
        k = min(math.floor(opts.ratio * len(g.channels) + 0.5), max(len(g.channels) - 1, 0))
        picks[g.index] = _lowest(g, scores, k)
    return picks


def ranked_pool(graph, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(channel ids, owning group index) of every candidate, in ascending order of `values`."""
    channels = [g.channels for g in graph.groups if len(g.channels)]
    owners = [np.full(len(g.channels), g.index) for g in graph.groups if len(g.channels)]
    if not channels:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    channels, owners = np.concatenate(channels), np.concatenate(owners)
    order = np.argsort(values[channels], kind="stable")
    return channels[order], owners[order]


def take(graph, channels: np.ndarray, owners: np.ndarray, count: int, opts, caps: dict | None = None) -> dict:
    """The first `count` channels of a ranked pool, at most the cap of any group (or `caps[g]`)."""
    caps = {g.index: _cap(g, opts) for g in graph.groups} | (caps or {})
    taken: dict = {g.index: [] for g in graph.groups}
    left = count
    for c, gi in zip(channels.tolist(), owners.tolist(), strict=True):
        if left <= 0:
            break
        if len(taken[gi]) < caps[gi]:
            taken[gi].append(c)
            left -= 1
    return {gi: np.array(v, dtype=np.int64) for gi, v in taken.items()}


def _global(graph, scores: np.ndarray, opts) -> dict:
    channels, owners = ranked_pool(graph, normalized(graph, scores, opts.normalize))
    return take(graph, channels, owners, math.floor(opts.ratio * len(channels)), opts)


def _by_threshold(graph, scores: np.ndarray, opts) -> dict:
    rule, arg = parse_threshold(opts.threshold)
    picks = {}
    if opts.global_ranking:
        norm = normalized(graph, scores, opts.normalize)
        pool = np.concatenate([norm[g.channels] for g in graph.groups if len(g.channels)] or [np.zeros(0)])
        t = _threshold(pool, rule, arg) if len(pool) else 0.0
        for g in graph.groups:
            below = g.channels[norm[g.channels] < t]
            picks[g.index] = _lowest(g, norm, min(len(below), _cap(g, opts)))
        return picks
    for g in graph.groups:
        if len(g.channels) == 0:
            continue
        s = scores[g.channels]
        k = int((s < _threshold(s, rule, arg)).sum())
        picks[g.index] = _lowest(g, scores, min(k, _cap(g, opts)))
    return picks


def choose(graph, scores: np.ndarray, opts) -> dict:
    """Group index -> channels to remove, by the options' ratio or threshold."""
    if opts.threshold is not None:
        return _by_threshold(graph, scores, opts)
    return _global(graph, scores, opts) if opts.global_ranking else _local(graph, scores, opts)


def widths_choice(graph, scores: np.ndarray, widths: dict) -> dict:
    """Group index -> its lowest-scoring candidates, enough that the group keeps `widths[name]`."""
    by_name = {g.name: g for g in graph.groups}
    unknown = sorted(set(widths) - set(by_name))
    if unknown:
        raise PlanError(f"no group named {', '.join(unknown)}; names are the report's group column")
    picks = {}
    for name, width in widths.items():
        g = by_name[name]
        ref = graph.labels[graph.spaces.ids(g.reference)]
        if not 1 <= width <= g.width:
            raise PlanError(f"width {width} for group {name} is outside 1..{g.width}")
        order = _lowest(g, scores, len(g.channels))
        per = np.array([int((ref == c).sum()) for c in order])  # reference elements each channel holds
        k = int(np.searchsorted(np.cumsum(per), g.width - width, side="left")) + 1 if g.width > width else 0
        picks[g.index] = order[:min(k, len(order))]
    return picks

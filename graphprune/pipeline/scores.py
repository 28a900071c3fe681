"""Scores per channel for shrink: a criterion's, measured on calibration data as a counted stage where it
reads data, or the user's own array or callable.
"""

from __future__ import annotations

import numpy as np

from graphprune.capture.depgraph import DependencyGraph
from graphprune.data.progress import Stages, count


def score_channels(graph: DependencyGraph, criterion, data, calib_batches: int | None, seed: int, step: Stages):
    """(scores per channel, calibration info) from a criterion name, a user's array or a callable;
    a criterion that reads data is the counted stage "score" of `step`."""
    from graphprune.importance import CRITERIA

    name = criterion if isinstance(criterion, str) else "user scores"
    if data is None or not isinstance(criterion, str) or not CRITERIA[criterion].needs_data:
        step(f"scoring channels ({name})")
        return _score(graph, criterion, data, calib_batches, seed, None)
    with step.stage("score", count(calib_batches, data), f"scoring ({name})") as tick:
        return _score(graph, criterion, data, calib_batches, seed, tick)


def _score(graph: DependencyGraph, criterion, data, calib_batches: int | None, seed: int, tick):
    from graphprune.importance import LOSSES, Calibration, score

    if isinstance(criterion, str):
        calibration = Calibration(data=data, limit=calib_batches, seed=seed, tick=tick)
        scores = score(graph, criterion, calibration=calibration)
        info = {"criterion": criterion, "notes": calibration.notes}
        if calibration.loss:
            info["loss"] = "; ".join(LOSSES[k] for k in calibration.loss.split("+"))
        if calibration.cache:
            info["batches"] = calib_batches
        return scores, info
    values = criterion(graph) if callable(criterion) else criterion
    return np.asarray(values, dtype=np.float64), {"criterion": "user scores"}



"""Importance of channels: one registry of criteria (graphprune.importance.registry).

    scores = graphprune.importance.score(graph, "taylor", data=data, limit=16)

Weight criteria (`l1`, `l2`, `bn`, `random`) need no data; gradient criteria (`taylor`,
`gradient`, `fisher`) and activation criteria (`act-mean`, `act-var`, `act-entropy`, `apoz`)
need calibration data (graphprune.data). Each module's docstring gives the formulas. A user's
own criterion is a score array per channel (see `from_parameters`), passed in place of a name.
"""

from __future__ import annotations

import numpy as np

from graphprune.errors import PlanError
from graphprune.importance import activation, gradient, magnitude, share  # noqa: F401 - registers the criteria
from graphprune.importance.calibration import LOSSES, Calibration
from graphprune.importance.channels import from_parameters, parameter
from graphprune.importance.magnitude import l1, l2, random
from graphprune.importance.registry import CRITERIA, Criterion, criterion


def score(graph, name: str, data=None, limit: int | None = 16, seed: int = 0,
          calibration: Calibration | None = None) -> np.ndarray:
    """Scores per channel of `graph` under criterion `name` (higher = more important)."""
    if name not in CRITERIA:
        raise PlanError(f"unknown criterion {name!r}; choose from {', '.join(sorted(CRITERIA))}")
    entry = CRITERIA[name]
    calibration = calibration or Calibration(data=data, limit=limit, seed=seed)
    if entry.needs_data and calibration.data is None:
        raise PlanError(f"criterion {name!r} is measured on data; pass --data (e.g. train.npz) or use l1, l2, bn")
    scores = np.asarray(entry.fn(graph, calibration), dtype=np.float64)
    if scores.shape != (graph.num_channels,) or not np.isfinite(scores).all():
        raise PlanError(f"criterion {name!r} gave {scores.shape} scores with non-finite values; "
                        "check the calibration data for NaN or inf")
    return scores


__all__ = ["CRITERIA", "LOSSES", "Calibration", "Criterion", "criterion", "from_parameters", "l1", "l2", "parameter", "random",
           "score"]

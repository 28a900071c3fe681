"""The registry of importance criteria: one small entry each, registered by a decorator.

A criterion maps a dependency graph (and, for data criteria, a `Calibration`) to one score per
channel (graphprune.capture.depgraph: a channel is the set of elements removed together). Higher means
more important; the planner removes the lowest. Each entry's docstring gives its formula.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

CRITERIA: dict = {}


@dataclass(frozen=True)
class Criterion:
    name: str
    fn: Callable  # (graph, calibration) -> np.ndarray [num_channels]
    needs: str  # 'weights' (no data), 'gradients' or 'activations' (calibration data)
    formula: str

    @property
    def needs_data(self) -> bool:
        return self.needs != "weights"


def criterion(name: str, needs: str = "weights"):
    """Register `fn(graph, calibration)` as criterion `name`; its docstring's first line is its formula."""

    def wrap(fn):
        if name in CRITERIA:
            raise RuntimeError(f"two criteria named {name}")
        doc = (fn.__doc__ or "").strip().splitlines()
        CRITERIA[name] = Criterion(name, fn, needs, doc[0] if doc else "")
        return fn

    return wrap

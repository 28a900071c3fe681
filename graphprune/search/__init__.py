"""Search per-group widths (and blocks) under a latency budget measured in ONNX Runtime.

    from graphprune.search import search, make_budget, LatencySettings
    plan, log = search(graph, make_budget(speedup=2), "greedy", data)

One file per piece: budget, space (configurations), latency (the ONNX Runtime oracle), table
(the per-group latency model), calibration (loss and metric), context (what strategies use),
steps (shared moves), one file per strategy registered in registry.STRATEGIES, depthsteps
(blocks as moves), record and plot (the log), request and command (shrink's options), driver.
Names are imported on first use, so `graphprune --help` does not load ONNX Runtime.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "STRATEGIES": "graphprune.search.driver", "search": "graphprune.search.driver",
    "Budget": "graphprune.search.budget", "make_budget": "graphprune.search.budget",
    "LatencySettings": "graphprune.search.latency", "MockOracle": "graphprune.search.latency",
    "OrtOracle": "graphprune.search.latency", "SearchRequest": "graphprune.search.request",
    "Config": "graphprune.search.space", "SearchSpace": "graphprune.search.space",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'graphprune.search' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)

"""Search per-group widths (and blocks) under a latency budget measured in ONNX Runtime.

    from graphprune.search import search, make_budget, LatencySettings
    plan, log = search(graph, make_budget(speedup=2), "greedy", data)

One file per piece: budget, space (configurations), latency (the ONNX Runtime oracle), table
(the per-group latency model), calibration (loss and metric), context (what strategies use),
steps (shared moves), one file per strategy registered in registry.STRATEGIES, plot, driver.
"""

from graphprune.search import greedy, randomized, recursive, uniform  # noqa: F401 - register the strategies
from graphprune.search.budget import Budget, make_budget
from graphprune.search.driver import search
from graphprune.search.latency import LatencySettings, MockOracle, OrtOracle
from graphprune.search.registry import STRATEGIES
from graphprune.search.request import SearchRequest
from graphprune.search.space import Config, SearchSpace

__all__ = ["STRATEGIES", "Budget", "Config", "LatencySettings", "MockOracle", "OrtOracle", "SearchRequest", "SearchSpace",
           "make_budget", "search"]

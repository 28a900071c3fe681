"""What `graphprune.shrink(..., search=SearchRequest(...))` asks of the search (the CLI builds one)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from graphprune.search.budget import Budget
from graphprune.search.latency import LatencySettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchRequest:
    budget: Budget
    strategy: str = "greedy"
    data: Any = None  # graphprune.data.Data, or None: random inputs shaped like the example
    latency: LatencySettings = field(default_factory=LatencySettings)
    max_drop: float | None = None
    samples: int = 16  # random search
    seed: int = 0
    round_to: int | None = None  # None: the provider's channel block
    calib_batches: int = 16
    finetune: Callable | None = None  # short fine-tune of each candidate before it is scored
    depth: Any = None  # graphprune.search.depthsteps.DepthSteps: also remove blocks
    blocks: bool = False  # without `depth`: offer the blocks graphprune.depth finds in the graph

    def run(self, graph, progress: Callable[[str], None] | None = None, scores=None, data=None,
            calib_batches: int | None = None, recalibrate: bool = False):
        """(plan, log) for `graph`; `scores` rank channels within groups, `data` is used where the request
        has none; `recalibrate`: the pruned model's BatchNorm statistics will be re-estimated on the data,
        so candidates are scored that way too. See graphprune.search.driver.search."""
        from graphprune.search.depthsteps import DepthSteps
        from graphprune.search.driver import search

        depth = self.depth
        if depth is None and self.blocks:
            depth = DepthSteps.found(graph)
            if depth is None:
                log.warning("--search-blocks: no removable block found (graphprune inspect lists them); widths only")
        return search(graph, self.budget, self.strategy, self.data if self.data is not None else data,
                      latency=self.latency, max_drop=self.max_drop, samples=self.samples, seed=self.seed,
                      round_to=self.round_to, scores=scores, calib_batches=calib_batches or self.calib_batches, progress=progress,
                      finetune=self.finetune, depth=depth, recalibrate=recalibrate)

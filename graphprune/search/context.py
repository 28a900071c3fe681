"""What a strategy works with: scoring, predicting and measuring configurations, all logged.

    ctx.evaluate(config)  -> Score          calibration loss and metric (cached by key)
    ctx.predict(config)   -> float          latency ratio: measured if it was, else the corrected table's
    ctx.estimate(config)  -> float          the corrected table's prediction
    ctx.confirm(config)   -> float          whole-model latency ratio at the latency batch;
                                            corrects the table (cached by key)
    ctx.fits(config)      -> bool           predicted ratio within the budget
    ctx.meets(config)     -> bool           confirmed ratio within the budget
    ctx.measured(config)  -> bool           whether it has been confirmed
    ctx.within_drop(score) -> bool          metric drop no more than --max-drop

The optional `finetune(model) -> model` hook runs on each candidate before it is scored
(short fine-tunes between search steps, graphprune.recovery).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from graphprune.search.budget import Budget
from graphprune.search.calibration import Calibration, Score
from graphprune.search.latency import Oracle
from graphprune.search.record import Entry, SearchLog
from graphprune.search.space import Config, SearchSpace
from graphprune.search.table import LatencyTable

log = logging.getLogger(__name__)


@dataclass
class SearchContext:
    space: SearchSpace
    calibration: Calibration
    oracle: Oracle
    table: LatencyTable
    budget: Budget
    record: SearchLog
    latency_batch: int
    max_drop: float | None = None
    samples: int = 16
    seed: int = 0
    progress: Callable[[str], None] = lambda text: None
    finetune: Callable | None = None
    _scores: dict = field(default_factory=dict)
    _measured: dict = field(default_factory=dict)
    best: tuple | None = None  # (metric, key) of the best configuration known to fit the budget

    def evaluate(self, config: Config, note: str = "") -> Score:
        if config.key in self._scores:
            return self._scores[config.key]
        if self.finetune is not None:
            score = self.calibration.score(self.finetune(self.space.build(config)).eval())
        else:
            with self.space.evaluating(config, own_statistics=self.calibration.recalibrates) as model:
                score = self.calibration.score(model, pruned=config != Config())
        self._scores[config.key] = score
        ratio = self.predict(config)
        self.record.add(Entry(len(self.record.entries), self.record.strategy, config.to_dict(), ratio,
                              score.loss, score.metric, note=note))
        if self.fits(config) and (self.best is None or score.metric > self.best[0]):
            self.best = (score.metric, config.key)
        self.progress(f"{self.record.strategy}: tried {len(self._scores)}, latency {ratio:.3f} (predicted), "
                      f"metric {score.metric:.4g}" + (f", best fitting {self.best[0]:.4g}" if self.best else ""))
        return score

    def estimate(self, config: Config) -> float:
        """The corrected table's prediction, even for a measured configuration (comparable across moves)."""
        return self.table.predict(self.space, config)

    def predict(self, config: Config) -> float:
        """The measured ratio of a measured configuration, else the table's prediction."""
        if config.key in self._measured:
            return self._measured[config.key]
        return self.table.predict(self.space, config)

    def confirm(self, config: Config) -> float:
        if config.key not in self._measured:
            self.progress(f"{self.record.strategy}: measuring a candidate at batch {self.latency_batch}")
            m = self.oracle.measure(config, self.latency_batch)
            self.table.correct(self.space, config, m.ratio)
            self._measured[config.key] = m.ratio
            score = self._scores.get(config.key)
            self.record.add(Entry(len(self.record.entries), self.record.strategy, config.to_dict(),
                                  self.table.predict(self.space, config), score.loss if score else None,
                                  score.metric if score else None, m.ratio, m.ms, note="whole-model measurement"))
            self.progress(f"{self.record.strategy}: measured latency {m.ratio:.3f} of the original "
                          f"(budget {self.budget.fraction:.3f})")
        return self._measured[config.key]

    def measured(self, config: Config) -> bool:
        """Whether `config` has had its whole-model measurement."""
        return config.key in self._measured

    def fits(self, config: Config) -> bool:
        return self.budget.met(self.predict(config))

    def meets(self, config: Config) -> bool:
        return self.budget.met(self.confirm(config))

    def within_drop(self, score: Score) -> bool:
        return self.max_drop is None or self.calibration.drop(score) <= self.max_drop + 1e-12

"""`search(graph, budget, strategy, data)`: a plan that meets a measured latency budget.

    1. the space: every prunable group's widths (and blocks, with a DepthSteps);
    2. calibration batches (--data, else seeded random inputs shaped like the example) and the
       original's outputs on them;
    3. the latency table: each group narrowed alone, each block removed alone, measured whole in
       ONNX Runtime at the table batch against the original;
    4. the strategy (graphprune.search.STRATEGIES), which evaluates candidates on calibration data,
       predicts their latency from the table, and confirms with whole-model measurements at the
       latency batch (each one corrects the table);
    5. the final figure: the chosen configuration measured whole at the latency batch against
       the original in the same session (and at the table batch, to show how well it predicts).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable

from graphprune.capture.depgraph import DependencyGraph
from graphprune.errors import InputError, PlanError
from graphprune.plan.types import Plan
from graphprune.search import greedy, randomized, recursive, uniform  # noqa: F401 - registers the strategies
from graphprune.search.budget import Budget
from graphprune.search.calibration import Calibration
from graphprune.search.context import SearchContext
from graphprune.search.latency import LatencySettings, Oracle, OrtOracle, channel_block, example_batch
from graphprune.search.record import SearchLog
from graphprune.search.registry import STRATEGIES
from graphprune.search.space import Config, SearchSpace
from graphprune.search.table import fit_table

log = logging.getLogger(__name__)


def search(graph: DependencyGraph, budget: Budget, strategy: str = "greedy", data=None, *,
           latency: LatencySettings | None = None, max_drop: float | None = None, samples: int = 16, seed: int = 0,
           round_to: int | None = None, scores=None, calib_batches: int = 16, random_samples: int = 4,
           progress: Callable[[str], None] | None = None, oracle: Oracle | None = None,
           finetune: Callable | None = None, depth=None, recalibrate: bool = False) -> tuple[Plan, SearchLog]:
    """Search widths (and blocks, given `depth`) under `budget`; returns (plan, log).

    `round_to`: widths move in multiples of it (None: the provider's channel block, 16 on AVX-512
    CPUs, else 8). `oracle` replaces the ONNX Runtime measurements (tests); `finetune(model) -> model` runs on
    each candidate before it is scored; `depth` is a graphprune.search.depthsteps.DepthSteps.
    `recalibrate`: with `data`, each candidate's BatchNorm statistics are re-estimated on it before it is
    scored (as graphprune.shrink does to the chosen model), so the search ranks what it will deliver.
    """
    _check_arguments(strategy, max_drop, samples, round_to)
    say = progress or (lambda text: None)
    start = time.perf_counter()
    args, kwargs = graph.captured.args, graph.captured.kwargs
    settings = (latency or LatencySettings()).resolved(example_batch(args, kwargs))
    round_to = channel_block(settings.provider) if round_to is None else round_to
    space = SearchSpace(graph, scores, round_to, depth)
    if not space.knobs and not space.blocks:
        raise PlanError("nothing to search: no group can be narrowed and no block removed (see graphprune inspect)")
    say("measuring the original and exporting for ONNX Runtime")
    oracle = oracle or OrtOracle(space, settings)
    if settings.table_batch is None:
        settings = dataclasses.replace(settings, table_batch=oracle.table_batch(settings.batch))
    calibration = Calibration(space.build(Config()), args, kwargs, data, calib_batches, random_samples, seed,
                              recalibrate=recalibrate)
    table = fit_table(space, lambda c: oracle.measure(c, settings.table_batch), say)
    t_table = time.perf_counter() - start
    ctx = SearchContext(space, calibration, oracle, table, budget, SearchLog(strategy), settings.batch, max_drop,
                        samples, seed, say, finetune)
    chosen = STRATEGIES[strategy](ctx)
    final = _measure_chosen(ctx, chosen, settings, round_to, start, t_table)
    if not budget.met(final.ratio):
        log.warning("search %s stopped at %.3f of the original latency, short of the budget %.3f",
                    strategy, final.ratio, budget.fraction)
    say(f"{strategy}: chosen latency {final.ratio:.3f} of the original (budget {budget.fraction:.3f})")
    return space.plan(chosen), ctx.record


def _check_arguments(strategy: str, max_drop: float | None, samples: int, round_to: int | None) -> None:
    """The search's own arguments, refused before anything is measured."""
    if strategy not in STRATEGIES:
        raise InputError(f"--search {strategy!r} is not one of {sorted(STRATEGIES)}")
    if max_drop is not None and not max_drop >= 0:
        raise InputError(f"--max-drop {max_drop} must be 0 or more (a metric drop, e.g. 0.01 = 1 accuracy point)")
    if samples < 1:
        raise InputError(f"--samples {samples} must be 1 or more")
    if round_to is not None and round_to < 1:
        raise InputError(f"--round-to {round_to} must be 1 or more (1 turns rounding off)")


def _measure_chosen(ctx: SearchContext, chosen: Config, settings: LatencySettings, round_to: int, started: float,
                    table_seconds: float):
    """The final figure: `chosen` measured whole at the latency batch (and at the table batch, to show
    how well the table predicts) and scored; what the search did goes into `ctx.record.facts`.
    `started`: the search's perf_counter at its start. Returns the measurement at the latency batch."""
    final = ctx.oracle.measure(chosen, settings.batch)
    at_table = ctx.oracle.measure(chosen, settings.table_batch)
    score = ctx.evaluate(chosen, note="chosen")
    budget, calibration, space = ctx.budget, ctx.calibration, ctx.space
    ctx.record.facts = {
        "budget": {"latency_fraction": budget.fraction, "speedup": budget.speedup},
        "latency_settings": {**ctx.oracle.settings, "batch": settings.batch, "threads": settings.threads,
                             "table_batch": settings.table_batch, "round_to": round_to},
        "calibration": calibration.description,
        "max_drop": ctx.max_drop, "seed": ctx.seed,
        "samples": ctx.samples if ctx.record.strategy == "random" else None,
        "groups": {k.name: k.full for k in space.knobs}, "blocks": list(space.blocks),
        "table": ctx.table.to_dict(),
        "chosen": {**chosen.to_dict(), "loss": score.loss, "metric": score.metric,
                   "metric_drop": calibration.drop(score), "baseline_metric": calibration.baseline.metric},
        "final": {"latency_ratio": final.ratio, "speedup": 1.0 / final.ratio, "ms": final.ms, "original_ms": final.base_ms,
                  "noise": final.spread, "batch": final.batch, "budget_met": budget.met(final.ratio),
                  "table_batch_ratio": at_table.ratio, "table_batch_noise": at_table.spread},
        "seconds": {"table": table_seconds, "total": time.perf_counter() - started},
        "evaluated": len(ctx._scores), "measured": len(ctx._measured),
    }
    return final

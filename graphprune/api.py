"""The Python API: `shrink` does everything; the stages are callable one by one.

    pruned, report = graphprune.shrink(model, example, plan=PlanOptions(ratio=0.4))
    pruned, report = graphprune.shrink(model, example, data=data, plan=PlanOptions(criterion="taylor", target_macs=0.5),
                                       calibration=CalibrationOptions(batches=32))

    graph = graphprune.analyze(model, example)        # capture + dependency graph
    plan = graphprune.plan(graph, PlanOptions(ratio=0.4))
    pruned = graphprune.rewrite(plan)

Keyword options of earlier releases (`shrink(model, x, ratio=0.4, criterion="taylor", calib_batches=32)`)
still work: they are turned into the same objects, with a DeprecationWarning.
"""

from __future__ import annotations

from typing import Any

import torch

from graphprune.capture.depgraph import DependencyGraph, build
from graphprune.capture.trace import capture, normalize_inputs
from graphprune.data.options import CalibrationOptions
from graphprune.depth.options import DepthOptions
from graphprune.errors import InputError
from graphprune.pipeline import shrink as pipeline
from graphprune.pipeline.keywords import deprecated, from_keywords
from graphprune.plan.planner import plan as make_plan
from graphprune.plan.types import Plan, PlanOptions
from graphprune.report.report import Report
from graphprune.rewrite.rewriter import rewrite as make_model

__all__ = ["analyze", "plan", "rewrite", "shrink"]


def analyze(model: torch.nn.Module, example: Any, attention: str = "heads") -> DependencyGraph:
    """Capture `model` on `example` (tensor, tuple or dict) and build its dependency graph.

    `attention`: what attention may lose: 'heads' (whole heads), 'head-dim' (every head's
    width), or 'none'.
    """
    args, kwargs = normalize_inputs(example)
    return build(capture(model, args, kwargs), attention=attention)


def plan(graph: DependencyGraph, options: PlanOptions | None = None, scores=None, **kwargs) -> Plan:
    """Choose channels to remove; `scores` per channel (graphprune.importance.score) replace the
    options' criterion. Keyword PlanOptions fields instead of `options` are deprecated."""
    if kwargs:
        if options is not None:
            raise InputError(f"pass the plan's options as PlanOptions or as keywords ({', '.join(kwargs)}), not both")
        deprecated(kwargs)
        options = PlanOptions(**kwargs)
    return make_plan(graph, options or PlanOptions(), scores=scores)


def rewrite(plan: Plan) -> torch.nn.Module:
    """Build the pruned dense model; the input model is not touched."""
    return make_model(plan)


def shrink(model: torch.nn.Module, example: Any, *legacy_args, plan: PlanOptions | None = None, data=None,
           calibration: CalibrationOptions | None = None, depth: DepthOptions | None = None, search=None,
           scores=None, check_dead_channels: bool = True, progress=None, held_out=None, release_model: bool = False,
           **legacy) -> tuple[torch.nn.Module, Report]:
    """Prune `model` and return (pruned model, report); the user's model is not changed.

    `plan` (PlanOptions) says what goes, `data` (graphprune.data.load_data) feeds data criteria and
    the steps that `calibration` (CalibrationOptions) turns on, `depth` (DepthOptions) removes whole
    blocks first, `search` (graphprune.search.SearchRequest) searches widths under a latency budget,
    and `scores` (an array per channel or a callable graph -> array) replace the plan's criterion.
    With `data`, part of it (or `held_out`, a Data) judges every choice and gives the report's
    `fidelity` (graphprune.pipeline.decide). `release_model` frees the model's tensors as the pruned model
    is built (bounded memory for large models; the model is unusable after). See graphprune.pipeline.shrink.
    """
    if legacy_args or legacy:
        plan, calibration, depth, scores = from_keywords(legacy_args, legacy, plan, calibration, depth, scores)
    return pipeline.shrink(model, example, plan=plan, data=data, calibration=calibration, depth=depth, search=search,
                           scores=scores, check_dead_channels=check_dead_channels, progress=progress,
                           held_out=held_out, release_model=release_model)

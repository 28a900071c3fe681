"""The Python API: `shrink` does everything; the stages are callable one by one.

    graph = graphprune.analyze(model, example)        # capture + dependency graph
    plan = graphprune.plan(graph, PlanOptions(ratio=0.4))
    pruned = graphprune.rewrite(plan)
    pruned, report = graphprune.shrink(model, example, ratio=0.4)
"""

from __future__ import annotations

from typing import Any

import torch

from graphprune.capture.depgraph import DependencyGraph, build
from graphprune.capture.trace import capture, normalize_inputs
from graphprune.pipeline.shrink import shrink
from graphprune.plan.planner import plan as make_plan
from graphprune.plan.types import Plan, PlanOptions
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
    """Choose channels to remove; keyword arguments are PlanOptions fields; `scores` per channel
    (graphprune.importance.score) replace the options' criterion."""
    return make_plan(graph, options or PlanOptions(**kwargs), scores=scores)


def rewrite(plan: Plan) -> torch.nn.Module:
    """Build the pruned dense model; the input model is not touched."""
    return make_model(plan)



"""The Python API: `shrink` does everything; the stages are callable one by one.

    graph = graphprune.analyze(model, example)        # capture + dependency graph
    plan = graphprune.plan(graph, PlanOptions(ratio=0.4))
    pruned = graphprune.rewrite(plan)
    pruned, report = graphprune.shrink(model, example, ratio=0.4)
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from graphprune import verify
from graphprune.capture import capture, normalize_inputs
from graphprune.cost import count_macs, count_params
from graphprune.depgraph import DependencyGraph, build
from graphprune.errors import InputError, VerificationError
from graphprune.planner import Plan, PlanOptions
from graphprune.planner import plan as make_plan
from graphprune.report import Report
from graphprune.rewriter import rewrite as make_model

log = logging.getLogger(__name__)


def analyze(model: torch.nn.Module, example: Any, attention: str = "heads") -> DependencyGraph:
    """Capture `model` on `example` (tensor, tuple or dict) and build its dependency graph.

    `attention`: what attention may lose: 'heads' (whole heads), 'head-dim' (every head's
    width), or 'none'.
    """
    args, kwargs = normalize_inputs(example)
    return build(capture(model, args, kwargs), attention=attention)


def plan(graph: DependencyGraph, options: PlanOptions | None = None, **kwargs) -> Plan:
    """Choose channels to remove; keyword arguments are PlanOptions fields."""
    return make_plan(graph, options or PlanOptions(**kwargs))


def rewrite(plan: Plan) -> torch.nn.Module:
    """Build the pruned dense model; the input model is not touched."""
    return make_model(plan)


def verified(plan: Plan, pruned: torch.nn.Module, reference) -> str:
    """Run the pruned model on the example input and check it against the original."""
    captured = plan.graph.captured
    got = verify.run(pruned, captured.args, captured.kwargs)
    if plan.removed.any():
        verify.check_structure(reference, got)
        return "output structure and shapes match the original"
    verify.check_equal(reference, got)
    return "nothing removed; outputs equal the original"


def run_original(model: torch.nn.Module, args: tuple, kwargs: dict):
    """Run the user's model on the example input; a failure is the user's input's fault."""
    try:
        return verify.run(model, args, kwargs)
    except Exception as exc:  # noqa: BLE001 - reported as one line naming the cause
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise InputError(
            f"the model rejects the example input ({type(exc).__name__}: {first}); "
            "pass an input of the shape and dtype the model expects"
        ) from exc


def shrink(model: torch.nn.Module, example: Any, ratio: float = 0.4, *, progress=None, attention: str = "heads",
           **options) -> tuple[torch.nn.Module, Report]:
    """Prune `model` by `ratio` and return (pruned model, report).

    `attention` as in `analyze`; other keyword options are PlanOptions fields.
    """
    opts = PlanOptions(ratio=ratio, **options)
    opts.check()
    step = progress or (lambda name: None)
    seconds = {}
    t0 = time.perf_counter()
    step("capturing the model with torch.export")
    args, kwargs = normalize_inputs(example)
    reference = run_original(model, args, kwargs)
    graph = build(capture(model, args, kwargs), attention=attention)
    seconds["analyze"] = time.perf_counter() - t0
    step("planning")
    chosen = make_plan(graph, opts)
    step("rewriting")
    pruned = make_model(chosen)
    pruned.train(model.training)  # the original's mode: a model saved for inference stays in eval
    seconds["plan_rewrite"] = time.perf_counter() - t0 - seconds["analyze"]
    step("verifying")
    try:
        note = verified(chosen, pruned, reference)
    except VerificationError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to run is a verification failure
        raise VerificationError(f"the pruned model does not run: {str(exc).splitlines()[0][:300]}") from exc
    step("counting MACs")
    report = Report(
        params_before=count_params(model), params_after=count_params(pruned),
        # the captured graph, not the eager model: eager modules may take fused fast paths
        # (nn.TransformerEncoder) that the FLOP counter cannot see
        macs_before=count_macs(graph.captured.module, args, kwargs), macs_after=count_macs(pruned, args, kwargs),
        ratio=ratio, options=opts.__dict__, decisions=chosen.decisions, unknown_ops=graph.unknown,
        dynamic_batch=graph.captured.dynamic_batch,
        dynamic_sequence=graph.captured.dynamic_sequence, verified=note,
        seconds={**seconds, "total": time.perf_counter() - t0},
    )
    return pruned, report

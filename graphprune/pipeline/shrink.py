"""`shrink`: every stage in order, each checked, the report written as it goes.

capture -> (held-out split) -> (depth) -> dependency graph -> scores (or criterion auto) -> plan (or
search, or allocation by measurement) -> rewrite -> checks -> bias correction, refit and BatchNorm
re-estimation, each judged on held-out data -> (the removed blocks judged against widths alone) -> the
data-free floor -> fidelity, costs and report.
A model that torch.export cannot capture whole goes to graphprune.pipeline.parts.

Options come as objects, each field documented where it is defined: PlanOptions (what goes:
ratio, budgets, criterion, rounding, attention), CalibrationOptions (how data is used),
DepthOptions (whole blocks first), a SearchRequest (widths searched under a latency budget).

`progress` hears the steps: a callable taking step names, or a graphprune.data.progress.Stages,
which also counts the stages that read data (score, allocate, refit, recalibrate); the report's
`seconds` gives each of them either way.

With `data`, part of it (or `held_out`, a Data) is held out (graphprune.pipeline.decide): every
choice is judged on a selection slice and the report's `fidelity` comes from a test slice nothing
was chosen on. Criterion 'auto' tries several on it; the bias correction, the refit and BatchNorm
re-estimation are kept only when they do not make it worse, and so are removed blocks, against widths alone
at the same budget (graphprune.pipeline.depth_judged); the data-free plans (L2, share; BatchNorm
re-estimated) are the floor. Without data the bias correction runs from BatchNorm statistics alone.

`release_model`: each of the model's tensors is freed as soon as its slice is made (tensors that
lose nothing are shared), so the peak stays near the model's own size (docs/BENCHMARKS.md, "Large
model"); the model is unusable afterwards. The checks run as without it, the dead-channel oracle
before the rewrite; the bias correction, which reads the original's BatchNorm statistics after the
rewrite, is skipped. Refused with data, whose stages read the original after the rewrite.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import torch

from graphprune import depth as blocks_api
from graphprune.capture.depgraph import DependencyGraph, build
from graphprune.capture.trace import Captured, capture, normalize_inputs
from graphprune.check import verify
from graphprune.check.inputs import check_data
from graphprune.cost.macs import count_macs, count_params, graph_macs
from graphprune.data import Kept, check_labels
from graphprune.data.options import CalibrationOptions
from graphprune.data.progress import stages_of
from graphprune.depth.options import DepthOptions
from graphprune.errors import InputError, TraceError
from graphprune.io import inputspec
from graphprune.pipeline import allocate, decide
from graphprune.pipeline.checks import oracle_checks, run_checks, run_original, stamp
from graphprune.pipeline.depth_judged import judge_blocks
from graphprune.pipeline.judged import data_free_floor, data_steps, fidelity_report
from graphprune.pipeline.run import Run
from graphprune.pipeline.scores import score_channels
from graphprune.plan.budget import verdict
from graphprune.plan.planner import plan as make_plan
from graphprune.plan.types import Plan, PlanOptions
from graphprune.report.report import Report
from graphprune.rewrite.compensate import correct as compensate_biases
from graphprune.rewrite.rewriter import rewrite as make_model

log = logging.getLogger(__name__)


def check(plan: PlanOptions, calibration: CalibrationOptions, depth: DepthOptions, has_data: bool,
          has_scores: bool = False) -> None:
    """Refuse options that cannot work together, before anything is loaded or run (the CLI calls it first)."""
    from graphprune.importance import CRITERIA

    plan.check()
    calibration.check()
    depth.check(has_data)
    if not has_scores and plan.criterion in CRITERIA and CRITERIA[plan.criterion].needs_data and not has_data:
        raise InputError(f"--criterion {plan.criterion} is measured on data; pass --data (e.g. train.npz)")


def shrink(model: torch.nn.Module, example: Any, *, plan: PlanOptions | None = None, data=None,
           calibration: CalibrationOptions | None = None, depth: DepthOptions | None = None, search=None,
           scores=None, check_dead_channels: bool = True, progress=None,
           held_out=None, release_model: bool = False) -> tuple[torch.nn.Module, Report]:
    """Prune `model` and return (pruned model, report). The user's model is not changed, unless
    `release_model` hands its memory over to the pruned one (below).

    `plan` says what goes (graphprune.plan.types.PlanOptions); `scores` (an array with one score per
    channel, or a callable graph -> array) replaces its criterion. `data` (graphprune.data.Data) feeds
    data criteria, the choice of allocation rule, the least-squares refit and BatchNorm re-estimation,
    as `calibration` says. `depth` removes whole blocks first, ranked on `data`; a budget still counts
    from the original, and the blocks stay only if held-out data finds them better than widths alone.
    `search` (a graphprune.search.SearchRequest) replaces the cut options by a search of per-group widths
    under a latency budget measured in ONNX Runtime; the report's `search` logs it.
    `progress`, `held_out` and `release_model`: the module's docstring.
    """
    opts, cal, depth = plan or PlanOptions(), calibration or CalibrationOptions(), depth or DepthOptions()
    check(opts, cal, depth, has_data=data is not None, has_scores=scores is not None)
    if release_model and data is not None:
        raise InputError("release_model frees the original's weights, which pruning with data reads after the "
                         "rewrite (refit, BatchNorm re-estimation); pass release_model=False with data")
    opts = _resolve_auto(opts, data, scores, search)
    run, held, held_note = _start(model, example, opts, cal, data, held_out, progress, release_model)
    run.step("capturing the model with torch.export")
    reference = original_out = _reference(run, model)
    try:
        with run.clock("capture"):
            captured = original = capture(model, run.args, run.kwargs)
    except TraceError as exc:  # e.g. detection models: prune the submodules that do capture
        return _in_parts(run, model, reference, scores, exc)
    if run.data is not None:
        run.step("holding out data to judge every choice on")
        run.judge, run.held_note = decide.Judge(captured.module, held, cal.batches), held_note
    plan_opts, removed_blocks = opts, ()
    if depth.blocks:
        captured, removed_blocks, plan_opts = blocks_api.blocks_first(captured, run.data, depth.blocks, depth.criterion,
                                                                      cal.batches, opts, progress=run.step)
        with run.clock("reference"):  # channels are checked against the model without the blocks
            reference = verify.run(captured.module, run.args, run.kwargs)
    chosen, graph, calibration_info, searched, allocation, l2_trial = _decide(run, captured, plan_opts, scores, search)
    built = _build(run, chosen, reference, check_dead_channels, bool(removed_blocks))
    if removed_blocks and (undone := judge_blocks(run, original, removed_blocks, chosen, built[0], scores, searched,
                                                   original_out, check_dead_channels, depth.reach)):
        # widths alone did better on held-out data: nothing of the blocks stays, the floor plans the original
        chosen, built = undone
        graph, plan_opts, reference, l2_trial, removed_blocks = chosen.graph, opts, original_out, None, ()
    chosen, (pruned, checks, refits, recalibrated), floor = _floor(run, graph, plan_opts, chosen, built, l2_trial,
                                                                   reference, check_dead_channels, searched)
    if floor and floor["used"]:
        allocation = []  # nothing of the chosen plan's choices stays
    run.step("measuring fidelity")
    with run.clock("fidelity"):
        fidelity = fidelity_report(run, pruned, original_out, floor)
    report = _report(run, chosen, graph, pruned, original, checks, scores, calibration_info, recalibrated,
                     searched, allocation, refits, removed_blocks)
    return pruned, dataclasses.replace(report, fidelity=fidelity)


def _reference(run: Run, model: torch.nn.Module):
    """The original's outputs on the example, and the data checked against them."""
    with run.clock("reference"):
        reference = run_original(model, run.args, run.kwargs)
    if run.data is not None:
        check_data([("the model", model)], run.data)
        check_labels(run.data, reference, limit=run.calibration.batches)
    return reference


def _in_parts(run: Run, model: torch.nn.Module, reference, scores, exc: TraceError):
    """A model torch.export cannot capture whole is pruned part by part, with a weight criterion."""
    if run.data is not None or scores is not None:
        raise TraceError(f"{exc}; pruning it part by part takes a weight criterion and no --data") from exc
    from graphprune.pipeline import parts

    return parts.shrink(model, run.args, run.kwargs, reference, run.opts, run.opts.attention, str(exc), run.step)


def _floor(run: Run, graph, plan_opts: PlanOptions, chosen: Plan, built: tuple, l2_trial, reference,
           check_dead_channels: bool, searched) -> tuple:
    """(plan, (model, checks, refits, recalibrated batches), floor record or None): with a held-out selection
    slice, the best data-free plan (BatchNorm re-estimated) replaces the result when it does better there."""
    judged = run.judge is not None and run.judge.selection is not None
    if not judged or searched or run.opts.threshold is not None or not chosen.removed.any():
        return chosen, built, None
    run.step("comparing with the data-free plans (L2, share; BatchNorm re-estimated): the floor")
    better, pruned, floor = data_free_floor(run, graph, plan_opts, chosen, built[0], l2_trial)
    if not floor["used"]:
        return chosen, built, floor
    # the floor's model had its BatchNorm statistics re-estimated: the oracle checks its plan afresh
    checks, run.outputs = run_checks(better, pruned, reference, check_dead_channels, run.clock, as_rewritten=False)
    pruned.train(run.model.training)
    return better, (pruned, checks, [], 0), floor


def _resolve_auto(opts: PlanOptions, data, scores, search) -> PlanOptions:
    """Criterion 'auto' where nothing can be judged: without data, decide.data_free (share); with a search or
    the user's scores, l2 (nothing to choose)."""
    if opts.criterion != "auto" or (data is not None and scores is None and search is None):
        return opts
    if data is None and scores is None and search is None:
        return decide.data_free(opts)
    return dataclasses.replace(opts, criterion="l2")


def _start(model, example, opts: PlanOptions, cal: CalibrationOptions, data, held_out, progress,
           release_model: bool) -> tuple[Run, Any, str]:
    """(the run, the held-out data, why there is none): data split before anything reads it, so the held-out
    slices are never calibration, and read once (every data stage reads the same batches)."""
    held, held_note = None, ""
    if data is not None:
        data, held, held_note = decide.split(data, held_out, seed=cal.seed)
        data = Kept(data, cal.batches)
    args, kwargs = normalize_inputs(example)
    run = Run(model, args, kwargs, opts, cal, data, stages_of(progress), release=release_model,
              params_before=count_params(model))
    return run, held, held_note


def _decide(run: Run, captured: Captured, plan_opts: PlanOptions, scores, search):
    """(plan, graph, calibration info, search result, allocation log, auto's L2 trial or None): score the
    channels and choose the plan, or try every criterion under every allocation rule (auto)."""
    with run.clock("graph"):
        graph = build(captured, attention=run.opts.attention)
    if plan_opts.criterion == "auto" and scores is None:
        run.step("criterion auto: every criterion's plan, under every allocation rule, judged on held-out data")
        with run.clock("auto"):
            tried = decide.auto(graph, plan_opts, run.data, run.calibration.batches, run.calibration.seed, run.judge,
                                run.step)
        allocation = tried.allocation(run.judge.measured_on) if allocate.applies(plan_opts) else []
        return tried.best.plan, graph, tried.info, None, allocation, tried.l2
    criterion = plan_opts.criterion if scores is None else scores
    with run.clock("score"):
        values, calibration_info = score_channels(graph, criterion, run.data, run.calibration.batches,
                                                  run.calibration.seed, run.step)
    run.step("planning")
    with run.clock("plan"):
        searched = None if search is None else search.run(graph, progress=run.step, scores=values, data=run.data,
                                                          calib_batches=run.calibration.batches,
                                                          recalibrate=run.calibration.recalibrate)
    allocation = []
    if searched:
        chosen = searched[0]
    elif run.data is not None and allocate.applies(plan_opts):
        chosen, allocation = allocate.choose(graph, plan_opts, values, run.data, run.calibration.batches, run.step,
                                             judge=run.judge)
    else:
        with run.clock("plan"):
            chosen = make_plan(graph, plan_opts, scores=values)
    return chosen, graph, calibration_info, searched, allocation, None


def _build(run: Run, chosen: Plan, reference, check_dead_channels: bool, blocks_removed: bool):
    """(pruned model, checks, refits, recalibrated batches): rewrite, check, then restore what data can."""
    # release_model: the oracle reads the original's tensors, so it runs before they are freed
    early = oracle_checks(chosen) if run.release and check_dead_channels else []
    run.step("rewriting" + (" (releasing the original's tensors)" if run.release else ""))
    with run.clock("rewrite"):
        pruned = make_model(chosen, release=run.release)
    inputspec.attach(pruned, run.args, run.kwargs)  # later commands (finetune, eval, explain) need not ask again
    run.step("verifying")
    # before re-estimation, so that a plan removing nothing (blocks only) is checked for equal outputs
    checks, outputs = run_checks(chosen, pruned, reference, check_dead_channels and not run.release, run.clock)
    checks, verified_as = checks + early, stamp(pruned)
    refits, recalibrated = data_steps(run, chosen, pruned, blocks_removed)
    if run.data is None and run.calibration.compensate and chosen.removed.any() and not run.release:
        run.step("correcting biases for the removed channels (no data: from BatchNorm statistics)")
        compensate_biases(chosen, pruned)
    run.outputs = outputs if stamp(pruned) == verified_as else None  # fidelity reuses them while they hold
    pruned.train(run.model.training)  # the original's mode: a model saved for inference stays in eval
    return pruned, checks, refits, recalibrated


def _report(run: Run, chosen: Plan, graph: DependencyGraph, pruned, original: Captured, checks: list, scores,
            calibration_info: dict, recalibrated: int, searched, allocation: list, refits: list, blocks: tuple) -> Report:
    run.step("counting MACs")
    opts = run.opts
    with run.clock("macs"):
        params = (run.params_before, count_params(pruned))
        macs = _macs(chosen, original, pruned)
    options = {k: v for k, v in opts.__dict__.items() if v is not None}
    if scores is not None:
        options["criterion"] = "user scores"
    return Report(
        params_before=params[0], params_after=params[1], macs_before=macs[0], macs_after=macs[1],
        ratio=opts.ratio, options=options, decisions=chosen.decisions, unknown_ops=graph.unknown,
        dynamic_batch=graph.captured.dynamic_batch, dynamic_sequence=graph.captured.dynamic_sequence,
        verified=checks[0]["detail"], seconds=run.timings(),
        search=searched[1].to_dict() if searched else None,
        calibration=calibration_info | ({"recalibrated_batches": recalibrated} if recalibrated else {}),
        checks=tuple(checks), budget=_budget(opts, params, macs, chosen.budget),
        blocks=tuple(dataclasses.asdict(b) for b in blocks),
        allocation=tuple(allocation), reconstruction=tuple(dataclasses.asdict(r) for r in refits),
    )


def _macs(chosen: Plan, original: Captured, pruned: torch.nn.Module) -> tuple[int, int]:
    """(MACs before, after) on the captured graph (graphprune.cost.macs.graph_macs), else by counting forward passes.

    Counted on the captured graph, not the eager model: eager modules may take fused fast paths
    (nn.TransformerEncoder) that the FLOP counter cannot see. With blocks removed, `before` is the
    original captured model's (the plan's graph is the one without the blocks)."""
    counted = graph_macs(chosen)
    args, kwargs = chosen.graph.captured.args, chosen.graph.captured.kwargs
    if counted is not None and original is chosen.graph.captured:
        return counted
    before = count_macs(original.module, args, kwargs)
    return before, counted[1] if counted is not None else count_macs(pruned, args, kwargs)


def _budget(opts: PlanOptions, params: tuple, macs: tuple, outcome=None) -> dict | None:
    """The budget asked for and what was reached, from (before, after) counts (graphprune.plan.budget.verdict)."""
    if opts.budget is None:
        return None
    kind, target = opts.budget
    before, after = macs if kind == "macs" else params
    return verdict(kind, target, after / before if before else 1.0, opts.tolerance, outcome)

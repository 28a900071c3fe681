"""Depth judged on held-out data: did removing blocks, then channels, beat channels alone?

`shrink` removes `--remove-blocks K` blocks first and restates the budget for the channels still to
go (graphprune.depth.select.blocks_first). Like every data-driven step (graphprune.pipeline.decide),
that choice is judged on the held-out selection slice, against the model that reaches the same
budget of the original with widths alone:

    before = loss(widths only)    the original captured graph planned at the options' own budget, under
                                  the criterion and allocation rule the result used (auto's choice,
                                  not a second auto), rewritten, then the same judged data steps as
                                  the result (bias correction, refit, BatchNorm re-estimation)
    after  = loss(the result)     blocks removed, then channels, its own data steps judged

The blocks stay when after <= before (KEPT); otherwise (UNDONE) the widths-only model is the result,
checked against the original's outputs, and nothing of the blocks stays. A budget is a ceiling, so
widths alone compete only when they cost at most the target, or no more than the result with the blocks
removed. Otherwise, and with no budget (a ratio or a threshold, a latency search), there is nothing to
compare with at an equal budget; without a selection slice there is nothing to measure on. Either way
the step is recorded unjudged, with the reason.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from graphprune.capture.depgraph import build
from graphprune.capture.trace import Captured
from graphprune.cost.macs import plan_macs, plan_params
from graphprune.pipeline import decide
from graphprune.pipeline.checks import run_checks
from graphprune.pipeline.judged import data_steps
from graphprune.pipeline.run import Run
from graphprune.pipeline.scores import score_channels
from graphprune.plan.planner import plan as make_plan
from graphprune.plan.types import Plan, PlanOptions
from graphprune.reasons import Outcome
from graphprune.rewrite.rewriter import rewrite

log = logging.getLogger(__name__)

STEP = "block removal"  # the StepRecord's name in the report's fidelity.steps


def judge_blocks(run: Run, original: Captured, removed: tuple, chosen: Plan, pruned, scores, searched,
                 reference, check_dead_channels: bool, reach: float | None = None) -> tuple[Plan, tuple] | None:
    """None when the blocks stay; when they are undone, (the widths-only plan, (its model, its checks against
    the original's outputs `reference`, its refits, batches its BatchNorm was re-estimated on)), as `_build` returns.
    The depth step's StepRecord goes to `run.judge.records` either way. `removed`: what blocks_first removed;
    `chosen`, `pruned`: the plan and model built on the graph without them; `scores`: the user's, or None;
    `reach`: DepthOptions.reach, a smaller cost widths alone must also be able to reach (a later step's)."""
    blocks = f"{len(removed)} block{'' if len(removed) == 1 else 's'}: {', '.join(b.name for b in removed)}"
    why = _unjudged(run, scores, searched)
    if why is None:
        run.step("judging the removed blocks against widths alone at the same budget, on held-out data")
        alone, planner = widths_only(run, original, chosen.options, scores)
        why = _costlier(run.opts, alone, chosen) or _short(run.opts, planner, reach)
    if why is not None:
        run.judge.records.append(decide.StepRecord(STEP, why[0], None, None, f"{blocks}; {why[1]}"))
        return None
    with run.clock("depth judged"):
        model, before, (refits, recalibrated), steps = built_alone(run, alone)
        after = run.judge.loss(pruned)
    kept = after <= before
    detail = f"{blocks}; widths only: {alone.options.criterion} on the original graph, with the same data steps"
    run.judge.records.append(decide.StepRecord(STEP, Outcome.KEPT if kept else Outcome.UNDONE, before, after, detail))
    if kept:
        return None
    run.judge.records.extend(steps)  # the returned model's own steps follow, named as such
    log.info("%s undone: held-out loss %.4g with the blocks removed, %.4g with widths alone", blocks, after, before)
    checks, run.outputs = run_checks(alone, model, reference, check_dead_channels, run.clock, as_rewritten=False)
    model.train(run.model.training)  # the original's mode, as shrink leaves every model it returns
    return alone, (model, checks, refits, recalibrated)


def built_alone(run: Run, alone: Plan) -> tuple:
    """(model, selection loss, (refits, batches re-estimated), its step records): the widths-only plan built as
    shrink builds its result, rewritten and then the same judged data steps (bias correction, refit, BatchNorm
    re-estimation), so the two compete on equal terms. The steps are judged by a judge of their own, so their
    records ('... (widths only)') reach the report only if this model is the one returned."""
    model = rewrite(alone).eval()
    main, run.judge = run.judge, run.judge.shadow()
    try:
        done = data_steps(run, alone, model, blocks_removed=False)
        loss, records = run.judge.loss(model), run.judge.records
    finally:
        run.judge = main
    steps = [dataclasses.replace(r, step=f"{r.step} (widths only)") for r in records]
    return model, loss, done, steps


def widths_only(run: Run, original: Captured, used: PlanOptions, scores) -> tuple[Plan, object]:
    """(plan, planner): the original captured graph planned at the options' own budget, under `used`'s criterion
    and allocation rule (normalize, allocate), scored afresh on that graph (timed with shrink's own stages);
    `planner(budget_options)` plans the same scores at another budget."""
    with run.clock("graph"):
        graph = build(original, attention=run.opts.attention)
    with run.clock("score"):
        values, _ = score_channels(graph, used.criterion if scores is None else scores, run.data,
                                   run.calibration.batches, run.calibration.seed, run.step)

    def planner(budget: PlanOptions) -> Plan:
        opts = dataclasses.replace(budget, criterion=used.criterion, normalize=used.normalize, allocate=used.allocate)
        with run.clock("plan"):
            return make_plan(graph, opts, scores=values)

    return planner(run.opts), planner


def _unjudged(run: Run, scores, searched) -> tuple[Outcome, str] | None:
    """(outcome, why) when the blocks cannot be judged, else None."""
    if run.judge.selection is None:
        return Outcome.UNJUDGED, run.held_note or "no held-out selection slice"
    if searched:
        return Outcome.UNCOMPARED, "the widths came from a latency search, which widths alone would have to repeat"
    if run.opts.budget is None:
        return Outcome.UNCOMPARED, ("no --target-macs or --target-params: a ratio or threshold cuts a share of "
                                    "what is left, so widths alone have no equal size to reach")
    if not callable(scores) and scores is not None:
        return Outcome.UNCOMPARED, "the given scores are per channel of the graph without the blocks"
    return None


def _short(opts: PlanOptions, planner, reach: float | None) -> tuple[Outcome, str] | None:
    """(outcome, why) when widths alone cannot reach `reach` of the original's cost (a later step's aim), which
    the blocks make reachable, else None."""
    kind, target = opts.budget
    if reach is None or reach >= target:
        return None
    got = _fraction(planner(dataclasses.replace(opts, **{f"target_{kind}": reach})), kind)
    if got <= reach + opts.tolerance:
        return None
    return Outcome.UNCOMPARED, (f"widths alone reach only {got:.3f} of the original's {kind}, short of the last "
                                f"step's {reach:.3f}: the blocks are kept to get there")


def _costlier(opts: PlanOptions, alone: Plan, chosen: Plan) -> tuple[Outcome, str] | None:
    """(outcome, why) when widths alone cost more than the target and than the result with the blocks removed
    (fractions of the original's cost, as the budget measures them), else None."""
    kind, target = opts.budget
    widths, result = _fraction(alone, kind), _fraction(chosen, kind, of=alone)
    if widths <= max(target, result):
        return None
    return Outcome.UNCOMPARED, (f"widths alone reach only {widths:.3f} of the original's {kind} (target {target:.3f}; "
                                f"with the blocks removed {result:.3f})")


def _fraction(plan: Plan, kind: str, of: Plan | None = None) -> float:
    """What `plan` keeps of the original's MACs or parameters (`kind`), the original being `of`'s graph
    unpruned (default: `plan`'s own)."""
    measure = plan_macs if kind == "macs" else plan_params
    base = of or plan
    return measure(plan) / measure(dataclasses.replace(base, removed=np.zeros_like(base.removed)))

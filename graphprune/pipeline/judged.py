"""The steps of shrink that held-out data judges (graphprune.pipeline.decide.Judge): bias correction,
least-squares refit and BatchNorm re-estimation, each kept only if held-out fidelity allows; the data-free
plans as the floor; the report's `fidelity`.
"""

from __future__ import annotations

import dataclasses

from graphprune.check import verify
from graphprune.data.progress import count
from graphprune.measure.fidelity import on_example
from graphprune.pipeline import decide
from graphprune.pipeline.run import Run
from graphprune.plan.types import Plan, PlanOptions
from graphprune.rewrite.compensate import correct as compensate_biases
from graphprune.rewrite.recalibrate import recalibrate as recalibrate_bn
from graphprune.rewrite.reconstruct import reconstruct as refit_layers


def data_steps(run: Run, chosen: Plan, pruned, blocks_removed: bool) -> tuple[list, int]:
    """Bias correction, refit and BatchNorm re-estimation, each kept only if held-out fidelity allows.
    Returns (the refit's per-layer records, batches the re-estimation ran on, 0 when undone)."""
    if run.data is None:
        return [], 0
    cal, judge, refits, ran = run.calibration, run.judge, [], {"batches": 0}

    def correct():
        n = compensate_biases(chosen, pruned)
        return f"{n} layers corrected" if n else None

    def refit():
        refits.extend(refit_layers(chosen, pruned, run.data, limit=cal.batches, seed=cal.seed, progress=run.step))
        done = [r for r in refits if r.lam is not None]
        return f"{len(done)} of {len(refits)} layers refit" if done else None

    def estimate():
        with run.step.stage("recalibrate", count(cal.batches, run.data), "BatchNorm re-estimation") as tick:
            ran["batches"] = recalibrate_bn(pruned, run.data, limit=cal.batches, tick=tick)
        return f"{ran['batches']} batches" if ran["batches"] else None

    if cal.compensate and chosen.removed.any():
        run.step("correcting biases for the removed channels")
        judge.step("bias correction", pruned, correct)
    if cal.reconstruct and chosen.removed.any():
        judge.step("refit", pruned, refit)
    kept = False
    if cal.recalibrate and (chosen.removed.any() or blocks_removed):
        kept = judge.step("BatchNorm re-estimation", pruned, estimate)
    return refits, ran["batches"] if kept else 0


def data_free_floor(run: Run, graph, opts: PlanOptions, chosen: Plan, pruned, base=None) -> tuple:
    """(plan, model, record): the best on the selection slice of the result and the data-free plans at the
    same budget (L2, and share as `auto` makes it without data: decide.data_free), each with BatchNorm re-estimated
    where that helps; `base`: the L2 plan's trial when auto made it."""
    from graphprune.importance import score

    trials = {}
    for free in (dataclasses.replace(opts, criterion="l2"), decide.data_free(opts)):
        if free.criterion == "l2" and base is not None and base.model is not None:
            trials["l2"] = base
            continue
        trials[free.criterion] = decide.trial(graph, free, score(graph, free.criterion), run.data,
                                              run.calibration.batches, run.judge)
    best = min(trials.values(), key=lambda t: t.loss)
    mine = run.judge.loss(pruned)
    used = best.loss < mine
    record = {"criterion": best.criterion, "steps": "BatchNorm re-estimated (where it helps)", "loss": best.loss,
              "result_loss": mine, "used": used, "candidates": {k: t.loss for k, t in trials.items()}}
    return (best.plan, best.model, record) if used else (chosen, pruned, record)


def fidelity_report(run: Run, pruned, original_out, floor) -> dict:
    """The report's `fidelity`: held-out figures (test slice), the choices made on the selection
    slice, and how far outputs moved on the example input."""
    got = run.outputs if run.outputs is not None else verify.run(pruned, run.args, run.kwargs)
    out = {"data": "none" if run.data is None else run.data.description, "example": on_example(original_out, got)}
    if run.held_note:
        out["note"] = run.held_note
    judge = run.judge
    if judge is None:
        return out
    final = judge.final(pruned)
    if final is not None:
        out["held_out"] = final.to_dict() | _where(judge.test)
        out["selection"] = {"samples": judge.selection.samples} | _where(judge.selection)
    out["steps"] = [r.to_dict() for r in judge.records]
    if floor is not None:
        out["floor"] = floor
    return out


def _where(teacher) -> dict:
    """The slice's name and, for a file, which of its samples were measured (0-based positions), so that
    anyone can recompute the figures from the file."""
    return {"slice": teacher.description} | ({"indices": teacher.indices} if teacher.indices is not None else {})

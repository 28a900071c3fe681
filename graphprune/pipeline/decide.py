"""Data-driven choices, each decided on held-out data that nothing was fitted on.

With `--data`, `split` cuts the data three ways (docs/RECOVERY.md, "Held-out fidelity"):

    calibration   criteria's scores, the refit's normal equations, BatchNorm statistics;
    selection     every choice: the criterion (`auto`), the allocation rule, whether each step
                  (bias correction, refit, re-estimation) is kept, and the floor;
    test          the report's fidelity figures only: nothing is chosen on it.

A given `--val-data` replaces the held-out part of `--data` (halved into selection and test).
`Judge.step` runs one step on the pruned model in place, measures the selection slice before and
after, and undoes the step (restores the state dict) when the figure got worse; every step is a
`StepRecord` in the report. Without a held-out slice (a DataLoader factory cannot be split) steps
run unjudged and the report says so.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

from graphprune.errors import InputError
from graphprune.measure.fidelity import Fidelity, Teacher
from graphprune.pipeline.checks import stamp
from graphprune.reasons import Outcome

log = logging.getLogger(__name__)

HELD_OUT = 0.3  # of --data held out (half for selection, half for test) when no --val-data is given


@dataclass(frozen=True)
class StepRecord:
    step: str  # 'bias correction', 'refit', 'BatchNorm re-estimation', ...
    outcome: Outcome
    before: float | None  # selection-slice loss (Fidelity.loss) before the step
    after: float | None  # ... with the step (before undoing it)
    detail: str = ""

    def to_dict(self) -> dict:
        return {"step": self.step, "outcome": self.outcome.value, "before": self.before, "after": self.after,
                "detail": self.detail}


def split(data, held_out=None, fraction: float = HELD_OUT, seed: int = 0):
    """(calibration data, (selection data, test data) or None, note)."""
    try:
        if held_out is None:
            data, held_out = data.split(fraction, seed)
        name = held_out.description
        selection, test = held_out.split(0.5, seed + 1)
    except InputError as exc:
        return data, None, f"no held-out slice ({exc}); data-driven steps are not judged"
    selection.description, test.description = f"{name}: selection half", f"{name}: test half"
    return data, (selection, test), ""


class Judge:
    """Measures candidates and steps on the selection slice; the test slice gives the final figures."""

    def __init__(self, original: torch.nn.Module, held, limit: int | None = None):
        self.selection = Teacher(original, held[0], limit) if held else None
        self.test = Teacher(original, held[1], limit) if held else None
        self.records: list[StepRecord] = []
        self._last: tuple | None = None  # (model, its stamp, loss): the last figure, while the model is unchanged

    @property
    def measured_on(self) -> str:
        """Where its figures come from: 'held-out selection', or 'calibration' without a held-out slice."""
        return "held-out selection" if self.selection is not None else "calibration"

    def loss(self, model: torch.nn.Module) -> float | None:
        """The selection slice's loss; measured again only when the model's tensors changed since the last
        figure (so a step's 'after' is the next step's 'before' without another pass)."""
        if self.selection is None:
            return None
        if self._last is not None and self._last[0] is model and self._last[1] == stamp(model):
            return self._last[2]
        value = self.selection.measure(model).loss
        self._last = (model, stamp(model), value)
        return value

    def step(self, name: str, model: torch.nn.Module, apply: Callable[[], str | None]) -> bool:
        """Run `apply()` (it changes `model` in place and returns a detail, or None when it did nothing);
        keep it unless the selection loss rose. Returns whether the step's change stands."""
        saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
        before = self.loss(model)
        detail = apply()
        if detail is None:
            self.records.append(StepRecord(name, Outcome.NOTHING, before, before))
            return False
        if before is None:
            self.records.append(StepRecord(name, Outcome.UNJUDGED, None, None, detail))
            return True
        after = self.loss(model)
        if after <= before:
            self.records.append(StepRecord(name, Outcome.KEPT, before, after, detail))
            return True
        model.load_state_dict(saved)
        self._last = (model, stamp(model), before)  # as it was before the step
        self.records.append(StepRecord(name, Outcome.UNDONE, before, after, detail))
        log.info("%s undone: held-out loss %.4g -> %.4g", name, before, after)
        return False

    def shadow(self) -> Judge:
        """A judge on the same slices with records of its own: for a candidate's steps, kept apart from the result's."""
        other = copy.copy(self)
        other.records, other._last = [], None
        return other

    def final(self, model: torch.nn.Module) -> Fidelity | None:
        return self.test.measure(model) if self.test else None


def data_free(opts):
    """What criterion 'auto' is without data: `share`, its scores compared across groups as they are
    (normalize 'none' in place of the default 'mean'; a normalisation the caller chose stays)."""
    import dataclasses

    return dataclasses.replace(opts, criterion="share", normalize="none" if opts.normalize == "mean" else opts.normalize)


AUTO = ("l2", "taylor", "fisher", "gradient", "act-mean", "act-var", "act-entropy", "apoz")  # what `auto` tries


@dataclass
class Trial:
    """One candidate plan, rewritten, its BatchNorm re-estimated on calibration data (kept only when
    that does not make the selection slice worse), and judged. `model` is None for a plan judged
    before under another name (its loss is that one's)."""

    criterion: str
    plan: object
    model: torch.nn.Module | None
    loss: float | None
    rule: dict | None = None  # {normalize, allocate}: how widths were shared out (graphprune.pipeline.allocate)


def trial(graph, opts, scores, data, limit: int | None, judge: Judge, seen: dict | None = None) -> Trial:
    """`opts`' plan under `scores`, judged; `seen` (removed-channel mask bytes -> loss) skips plans judged before."""
    from graphprune.plan.planner import plan as make_plan

    chosen = make_plan(graph, opts, scores=scores)
    rule = {"normalize": opts.normalize, "allocate": opts.allocate or "own"}
    key = chosen.removed.tobytes()
    if seen is not None and key in seen:
        return Trial(opts.criterion, chosen, None, seen[key], rule)
    model, loss = judged_model(chosen, data, limit, judge)
    if seen is not None:
        seen[key] = loss
    return Trial(opts.criterion, chosen, model, loss, rule)


def judged_model(chosen, data, limit: int | None, judge: Judge) -> tuple[torch.nn.Module, float | None]:
    """(model, selection loss): `chosen` rewritten (eval mode), its BatchNorm re-estimated on `data` and
    judged as in shrink: undone when the selection slice gets worse."""
    from graphprune.rewrite.recalibrate import recalibrate
    from graphprune.rewrite.rewriter import rewrite

    model = rewrite(chosen).eval()
    loss = before = judge.loss(model)
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if recalibrate(model, data, limit=limit):
        loss = judge.loss(model)
        if before is not None and loss > before:
            model.load_state_dict(saved)
            loss = before
    return model, loss


@dataclass
class Auto:
    """What `auto` found: the chosen criterion's scores and trial, the data-free L2 trial (the floor's),
    one row per candidate for the report, and the calibration's notes."""

    scores: object
    best: Trial
    l2: Trial | None
    rows: list
    info: dict

    def allocation(self, where: str) -> list[dict]:
        """The chosen criterion's rows in the shape of graphprune.pipeline.allocate.choose's log."""
        return [{"normalize": r["normalize"], "allocate": r["allocate"], "loss": r["loss"], "measured_on": where,
                 "chosen": r["chosen"]} for r in self.rows if r["criterion"] == self.best.criterion and "normalize" in r]


def auto(graph, opts, data, limit: int | None, seed: int, judge: Judge, progress=None) -> Auto:
    """Every criterion of `AUTO` under every allocation rule that applies to the options
    (graphprune.pipeline.allocate.rules: how a budget's widths are shared out decides as much as
    the criterion), each plan's model BatchNorm re-estimated and judged on the selection slice; the
    best pair is kept. The criteria share one `Calibration`, so gradients and activations are
    gathered once for all of them, and a plan two candidates share is built and judged once."""
    import dataclasses

    from graphprune.errors import GraphPruneError
    from graphprune.importance import Calibration, score
    from graphprune.pipeline import allocate

    calibration = Calibration(data=data, limit=limit, seed=seed)
    best, l2, rows, seen, chosen_scores = None, None, [], {}, None
    for name in AUTO:
        if progress:
            progress(f"criterion auto: trying {name}")
        try:
            values = score(graph, name, calibration=calibration)
        except GraphPruneError as exc:
            rows.append({"criterion": name, "loss": None, "chosen": False, "skipped": str(exc)})
            continue
        named = dataclasses.replace(opts, criterion=name)
        for rule in allocate.rules(named) if allocate.applies(named) else [named]:
            t = trial(graph, rule, values, data, limit, judge, seen)
            rows.append({"criterion": name, **t.rule, "loss": t.loss, "chosen": False})
            if name == "l2" and l2 is None:  # the options' own rule comes first: the floor's plan
                l2 = t
            if t.model is not None and (best is None or _better(t.loss, best.loss)):
                best, chosen_scores = t, values
    for row in rows:
        row["chosen"] = row["criterion"] == best.criterion and "normalize" in row and \
            (row["normalize"], row["allocate"]) == (best.rule["normalize"], best.rule["allocate"])
    info = {"criterion": best.criterion, "notes": calibration.notes, "auto": rows}
    if calibration.cache:
        info["batches"] = limit
    return Auto(chosen_scores, best, l2, rows, info)


def _better(loss: float | None, than: float | None) -> bool:
    return loss is not None and (than is None or loss < than)

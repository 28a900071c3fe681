"""The shrink report: what was removed, what was kept and why, and what it cost.

`Report.to_dict()` is the JSON written beside the pruned model; `render()` is the
terminal summary.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.markup import escape

from graphprune.plan.types import Decision
from graphprune.report.depth import removed_table
from graphprune.report.format import human


@dataclass(frozen=True)
class Report:
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    ratio: float
    options: dict
    decisions: tuple = ()
    unknown_ops: tuple = ()
    dynamic_batch: bool = False
    dynamic_sequence: bool = False  # token inputs take any sequence length
    verified: str = ""
    seconds: dict = field(default_factory=dict)
    onnx: dict | None = None
    calibration: dict = field(default_factory=dict)  # criterion, loss its gradients came from, batches, notes
    checks: tuple = ()  # {check, passed, detail} for every check the pruned model passed
    budget: dict | None = None  # {kind: macs | params, target, achieved} fractions of the original
    parts: tuple = ()  # graphprune.pipeline.parts.Part per submodule tried, when the whole model did not capture
    whole_capture: str = ""  # why the whole model did not capture ('' when it did)
    blocks: tuple = ()  # removed blocks, first: {name, kind, module_class, score, criterion, params, macs, tensors}
    search: dict | None = None  # graphprune.search's log: every configuration tried, the final measurement
    allocation: tuple = ()  # graphprune.pipeline.allocate: {normalize, allocate, loss, chosen} per rule tried
    reconstruction: tuple = ()  # graphprune.rewrite.reconstruct.Refit per layer that lost inputs
    fidelity: dict | None = None  # pipeline.shrink: held-out figures, each judged step, the floor, the example input

    @property
    def macs_ratio(self) -> float:
        return self.macs_after / self.macs_before if self.macs_before else 1.0

    @property
    def params_ratio(self) -> float:
        return self.params_after / self.params_before if self.params_before else 1.0

    def to_dict(self) -> dict:
        data = asdict(self)
        data["decisions"] = [asdict(d) for d in self.decisions]
        data["parts"] = [asdict(p) for p in self.parts]
        data["frozen_by_cause"] = frozen_by_cause(self.decisions)
        data["structural"] = structural(self.decisions)
        data["macs_ratio"] = self.macs_ratio
        data["params_ratio"] = self.params_ratio
        return data


def interesting(decisions: tuple[Decision, ...]) -> list[Decision]:
    """Decisions worth showing: groups with candidates, and widths frozen for a reason (not the
    structural dims, a kernel's spatial dims, that no op's rule claims: Decision.structural)."""
    return [d for d in decisions if d.candidates or (d.cause is not None and not d.structural and d.width_before > 1)]


def structural(decisions: tuple[Decision, ...]) -> list[dict]:
    """The dims no op's rule claims (kernel spatial dims), one row per op: never prunable, so not
    frozen groups; listed so that every group of the graph is accounted for."""
    rows: dict = {}
    for d in decisions:
        if not d.structural:
            continue
        row = rows.setdefault(d.cause.op, {"op": d.cause.op, "groups": 0, "example": d.group})
        row["groups"] += 1
    return sorted(rows.values(), key=lambda r: (-r["groups"], r["op"]))


def frozen_by_cause(decisions: tuple[Decision, ...]) -> list[dict]:
    """Wholly frozen widths (channels, features, heads, hidden units), one row per cause and op,
    widest first; structural dims (Decision.structural) are not among them."""
    rows: dict = {}
    for d in decisions:
        if d.candidates or d.cause is None or d.width_before < 2 or d.structural:
            continue
        key = (d.cause.cause, d.cause.op)
        row = rows.setdefault(key, {"cause": d.cause.cause.value, "op": d.cause.op, "groups": 0, "channels": 0,
                                    "example": d.group, "reason": str(d.cause), "where": d.cause.where})
        row["groups"] += 1
        row["channels"] += d.width_before
    return sorted(rows.values(), key=lambda r: (-r["channels"], r["cause"], r["op"]))


def _render_budget(budget: dict | None, console) -> None:
    """The budget asked for and reached, under the summary; when it missed its band, why."""
    if not budget:
        return
    line = f"budget: {budget['kind']} {budget['target']:.3f} of the original, reached {budget['achieved']:.3f}"
    if budget.get("met", True):
        console.print(line)
    else:
        console.print(f"[yellow]{escape(line)}, NOT met:[/yellow] {escape(budget['why'])}")


def _render_parts(report: Report, console) -> None:
    if not report.parts:
        return
    from rich.table import Table

    console.print(f"[yellow]the whole model does not capture:[/yellow] {report.whole_capture}")
    table = Table(title="parts (submodules captured and pruned on their own)")
    for col in ("part", "pruned", "why"):
        table.add_column(col, overflow="fold")
    for p in report.parts:
        table.add_row(p.path, "yes" if p.pruned else "no", p.note)
    console.print(table)


def _render_frozen(report: Report, console, limit: int = 12) -> None:
    from rich.table import Table

    rows = frozen_by_cause(report.decisions)
    if not rows:
        return
    table = Table(title=f"frozen groups by cause ({sum(r['groups'] for r in rows)} groups)")
    for col in ("cause", "groups", "channels", "for example (the op is named in it)"):
        table.add_column(col, overflow="fold")
    for r in rows[:limit]:
        table.add_row(r["cause"], str(r["groups"]), str(r["channels"]), _example(r))
    if len(rows) > limit:
        table.add_row(f"... {len(rows) - limit} more in the JSON report", "", "", "")
    console.print(table)


def _example(row: dict) -> str:
    """A frozen row's example group and reason, its source line on a line of its own (relative to the
    working folder when under it), so that the table reads at 80 columns."""
    where = row.get("where") or ""
    reason = row["reason"].replace(f" at {where}", "") if where else row["reason"]
    if not where:
        return f"{row['example']}: {reason}"
    path, _, line = where.rpartition(":")
    try:
        path = str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        pass
    return f"{row['example']}: {reason},\n{path}:{line}"


def render(report: Report, console, limit: int = 40) -> None:
    from rich.table import Table

    summary = Table(title="graphprune shrink", show_header=True)
    for col in ("", "before", "after", "ratio"):
        summary.add_column(col, justify="right")
    summary.add_row("params", human(report.params_before), human(report.params_after), f"{report.params_ratio:.3f}")
    summary.add_row("MACs", human(report.macs_before), human(report.macs_after), f"{report.macs_ratio:.3f}")
    console.print(summary)
    _render_budget(report.budget, console)
    _render_parts(report, console)
    if report.blocks:
        console.print(removed_table(report.blocks))
    shown = [d for d in report.decisions if d.candidates]
    groups = Table(title=f"prunable groups ({len(shown)} of {len(report.decisions)})")
    for col in ("group", "width", "removed", "note"):
        groups.add_column(col, overflow="fold")
    for d in shown[:limit]:
        groups.add_row(d.group, f"{d.width_before} -> {d.width_after}", str(d.removed), d.note)
    if len(shown) > limit:
        groups.add_row(f"... {len(shown) - limit} more in the JSON report", "", "", "")
    console.print(groups)
    _render_frozen(report, console)
    for op in report.unknown_ops:
        console.print(f"[yellow]no rule, frozen:[/yellow] {op}")
    if report.search:
        f, b = report.search["final"], report.search["budget"]
        console.print(f"search {report.search['strategy']}: {f['speedup']:.2f}x measured at batch {f['batch']} "
                      f"(budget {b['speedup']:.2f}x{'' if f['budget_met'] else ', NOT met'}), "
                      f"{len(report.search['tried'])} configurations tried, {report.search['seconds']['total']:.0f}s")
    for check in report.checks or ({"check": "runs", "detail": report.verified},) if report.verified else ():
        console.print(f"[green]verified ({check['check']}):[/green] {check['detail']}")
    _render_fidelity(report.fidelity, console)
    _render_auto(report.calibration.get("auto"), console)
    _render_criterion(report, console)
    if report.allocation:
        best = next(a for a in report.allocation if a["chosen"])
        where = best.get("measured_on", "calibration")
        console.print(f"widths shared by normalize={best['normalize']}, allocate={best['allocate']}: lowest {where} "
                      f"loss of {len(report.allocation)} rules ({best['loss']:.4g})")
    if report.reconstruction:
        refit = [r for r in report.reconstruction if r["lam"] is not None]
        if refit:
            before = sum(r["before"] for r in refit) / len(refit)
            after = sum(r["after"] for r in refit) / len(refit)
            few = sum(r.get("verdict") == "refused: fewer rows than inputs" for r in report.reconstruction)
            console.print(f"refit {len(refit)} of {len(report.reconstruction)} layers that lost inputs: held-out relative "
                          f"error {before:.3f} -> {after:.3f} (mean)" + (f"; {few} refused, fewer rows than inputs" if few else ""))
    if report.calibration.get("loss"):
        console.print(f"criterion {report.calibration['criterion']}: gradients of {report.calibration['loss']}")


def _figures(d: dict) -> str:
    parts = []
    if "agreement" in d:
        parts.append(f"top-1 agreement {d['agreement']:.3f}")
    if "kl" in d:
        parts.append(f"KL {d['kl']:.3g}")
    if "cosine" in d:
        parts.append(f"cosine {d['cosine']:.4f}")
    if "rel_error" in d:
        parts.append(f"relative error {d['rel_error']:.3g}")
    if "accuracy" in d:
        parts.append(f"accuracy {d['accuracy'][0]:.3f} -> {d['accuracy'][1]:.3f}, macro F1 {d['f1'][0]:.3f} -> {d['f1'][1]:.3f}")
    return ", ".join(parts)


def _render_criterion(report: Report, console) -> None:
    """The criterion a weight-only run used, with its formula (auto and data criteria say more elsewhere)."""
    from graphprune.importance import CRITERIA

    entry = CRITERIA.get(report.options.get("criterion"))
    if entry is not None and not entry.needs_data and not report.calibration.get("auto"):
        console.print(f"criterion {entry.name}: {entry.formula}")


def _render_auto(rows: list | None, console) -> None:
    """criterion auto: the chosen candidate, and each criterion's best held-out loss."""
    judged = [r for r in rows or () if r.get("loss") is not None]
    if not judged:
        return
    chosen = next(r for r in judged if r["chosen"])
    best: dict[str, float] = {}
    for r in judged:
        best[r["criterion"]] = min(best.get(r["criterion"], r["loss"]), r["loss"])
    each = ", ".join(f"{name} {loss:.4g}" for name, loss in best.items())
    console.print(f"criterion auto: {chosen['criterion']} (lowest held-out loss of {len(judged)} candidates; "
                  f"best per criterion: {each})")


def _render_fidelity(fidelity: dict | None, console) -> None:
    """The fidelity lines: held-out figures with data, or plainly that no data was used."""
    if not fidelity:
        return
    for s in fidelity.get("steps", ()):
        change = "" if s["before"] is None else f": held-out loss {s['before']:.4g} -> {s['after']:.4g}"
        console.print(f"step {s['step']} {s['outcome']}{change}" + (f" ({s['detail']})" if s["detail"] else ""))
    floor = fidelity.get("floor")
    if floor and floor["used"]:
        console.print(f"[yellow]the data-free {floor['criterion']} plan with BatchNorm re-estimated did better on held-out data "
                      f"({floor['loss']:.4g} < {floor['result_loss']:.4g}): it is returned instead[/yellow]")
    held = fidelity.get("held_out")
    if held:
        console.print(f"[bold]fidelity on held-out data[/bold] ({held['samples']} samples never used to fit or choose): "
                      + _figures(held))
    elif fidelity["data"] == "none":
        console.print("[yellow]no data used[/yellow]: on the example input the pruned model's output vs the original's: "
                      + _figures(fidelity["example"]) + "; pass --data to measure and guard fidelity")
    else:
        console.print(f"[yellow]fidelity not measured[/yellow]: {fidelity.get('note', '')}; on the example input: "
                      + _figures(fidelity["example"]))

"""`graphprune inspect`: the prunable groups of a model and what froze the others, without pruning."""

from __future__ import annotations

import logging

import typer

from graphprune.cli.app import VerboseOpt, app, console, guard, out_console
from graphprune.cli.groups import ModelSource, with_groups


@app.command()
@guard
@with_groups()
def inspect(
    source: ModelSource,
    show_all: bool = typer.Option(False, "--all", help="also list groups frozen by shape-only dims"),
    verbose: bool = VerboseOpt,
) -> None:
    """Print the prunable groups of MODEL and what froze the others, without pruning."""
    from rich.table import Table

    from graphprune.api import analyze
    from graphprune.check.inputs import check_models
    from graphprune.plan.planner import plan
    from graphprune.plan.types import PlanOptions
    from graphprune.report.report import interesting

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)
    module, example = source.load()
    check_models([(str(source.model), module)], example, same_outputs=False)
    with console.status("capturing and analysing"):
        graph = analyze(module, example)
        decisions = plan(graph, PlanOptions(ratio=0.0)).decisions
    shown = list(decisions) if show_all else interesting(decisions)
    table = Table(title=f"{len(shown)} groups ({len(decisions)} in all); dynamic batch: {graph.captured.dynamic_batch}"
                  + (f"; dynamic sequence: {graph.captured.dynamic_sequence}" if graph.captured.dynamic_sequence else ""))
    for col in ("group", "width", "prunable channels", "frozen channels / why"):
        table.add_column(col, overflow="fold")
    by_name = {g.name: g for g in graph.groups}
    for d in shown:
        g = by_name.get(d.group)
        table.add_row(d.group, str(d.width_before), str(d.candidates),
                      f"{g.frozen_channels}: {g.reason}" if g and g.frozen_channels else "")
    out_console.print(table)
    for op in graph.unknown:
        out_console.print(f"no rule, frozen: {op}")
    from graphprune.depth import listing
    from graphprune.report.depth import removable_table

    blocks = listing(graph.captured)
    out_console.print(removable_table(blocks) if blocks else
                      "0 removable blocks (no repeated residual layers or residual branches)")

"""Tables of blocks for the terminal: what `inspect` found removable, what `shrink` removed."""

from __future__ import annotations

from graphprune.report.format import human as _human


def _label(row: dict) -> str:
    kind = row.get("module_class") or row.get("class") or ""
    return row["name"] + (f" ({kind})" if kind else "")


def removable_table(rows: list[dict]):
    """`graphprune inspect`: rows of graphprune.depth.select.listing."""
    from rich.table import Table

    table = Table(title=f"{len(rows)} removable blocks (shrink --remove-blocks K)")
    for col in ("block", "kind", "params", "MACs"):
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(_label(row), row["kind"], _human(row["params"]), _human(row["macs"]))
    return table


def removed_table(blocks: tuple):
    """`graphprune shrink`: the report's removed blocks (dicts of graphprune.depth.select.Removed)."""
    from rich.table import Table

    table = Table(title=f"blocks removed ({len(blocks)})")
    for col in ("block", "kind", "score", "params", "MACs"):
        table.add_column(col, overflow="fold")
    for b in blocks:
        table.add_row(_label(b), b["kind"], f"{b['criterion']} {b['score']:.4g}", _human(b["params"]), _human(b["macs"]))
    return table

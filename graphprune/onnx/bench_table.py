"""A benchmark's ratios against a baseline and its table at 80 columns.

speed-up = baseline median / median, MACs ratio = MACs / baseline MACs, MACs reduction = baseline MACs / MACs,
efficiency eta = speed-up / MACs reduction (1.0: latency falls as fast as MACs).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich import box
from rich.table import Table

from graphprune.errors import InputError
from graphprune.onnx.bench import BenchResult


def ratio_table(result: BenchResult, baseline_index: int = 0, macs: Sequence[int] | None = None) -> list[dict]:
    """Per row: speed-up over the baseline model and, where MACs are known, MACs ratio and efficiency eta.

    `macs` (one count per model, e.g. from graphprune.cost.macs) wins over the counts the rows
    carry from the ONNX graphs; without either, the MACs fields are None.
    """
    count = len(result.models)
    if not 0 <= baseline_index < count:
        raise InputError(f"baseline_index {baseline_index} is out of range for {count} models")
    if macs is not None and (len(macs) != count or any(m <= 0 for m in macs)):
        raise InputError(f"macs needs one positive count per model ({count}), got {list(macs)}")
    table = []
    for row in result.rows:
        base = result.row(baseline_index, row.provider, row.batch)
        speedup = base.median_ms / row.median_ms
        entry = {
            "model": row.model,
            "provider": row.provider,
            "batch": row.batch,
            "median_ms": row.median_ms,
            "speedup": speedup,
            "size_ratio": row.file_size_bytes / base.file_size_bytes,
            "macs_ratio": None,
            "macs_reduction": None,
            "efficiency": None,
        }
        known = (macs[baseline_index], macs[row.model_index]) if macs is not None else (base.macs, row.macs)
        if all(known):
            reduction = known[0] / known[1]
            entry.update(macs_ratio=1.0 / reduction, macs_reduction=reduction, efficiency=speedup / reduction)
        table.append(entry)
    return table


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _ms(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.2f}" if value < 100 else f"{value:.1f}" if value < 1000 else f"{value:.0f}"


def display_names(paths: Sequence[str]) -> list[str]:
    """The shortest trailing part of each path (file name first) that tells the models apart,
    without the `.onnx` every one of them ends in."""
    parts = [Path(p).with_suffix("").parts if Path(p).suffix == ".onnx" else Path(p).parts for p in paths]
    for depth in range(1, max(len(p) for p in parts) + 1):
        names = [str(Path(*p[-depth:])) for p in parts]
        if len(set(names)) == len(set(paths)):
            return names
    return [str(p) for p in paths]


CAPTION = (
    "ms: median of {repeats} runs (p90 and min in --json). MB: file size. mem: peak MB of a session. "
    "MACs: ratio to the baseline. η: speed-up / MACs reduction (1: latency falls as fast as MACs)."
)


def render(result: BenchResult, macs: Sequence[int] | None = None, baseline_index: int = 0) -> Table:
    """A table of the rows and their ratios against the baseline model that reads at 80 columns:
    short headers explained in the caption, no vertical rules, long model names wrapped, the
    provider in the title when there is one."""
    names = display_names(result.models)
    providers = list(dict.fromkeys(r.provider.removesuffix("ExecutionProvider") for r in result.rows))
    repeats = result.rows[0].repeats if result.rows else 0
    where = f" on {providers[0]}" if len(providers) == 1 else ""
    table = Table(title=f"ONNX Runtime latency{where}, baseline {names[baseline_index]}", box=box.SIMPLE_HEAD,
                  pad_edge=False, caption=CAPTION.format(repeats=repeats), caption_justify="left")
    columns = ["batch", "ms", "MB", "mem", "speed", "MACs", "η"]
    table.add_column("model", overflow="fold", min_width=12, ratio=1)
    if len(providers) > 1:
        table.add_column("EP", no_wrap=True)
    for name in columns:
        table.add_column(name, justify="right", no_wrap=True)
    for row, ratio in zip(result.rows, ratio_table(result, baseline_index, macs), strict=True):
        mem = None if row.peak_mem_bytes is None else row.peak_mem_bytes / 1e6
        provider = [row.provider.removesuffix("ExecutionProvider")] if len(providers) > 1 else []
        table.add_row(
            names[row.model_index],
            *provider,
            str(row.batch),
            _ms(row.median_ms),
            f"{row.file_size_bytes / 1e6:.2f}",
            _fmt(mem, ".1f"),
            f"{ratio['speedup']:.2f}x",
            _fmt(ratio["macs_ratio"], ".3f"),
            _fmt(ratio["efficiency"], ".2f"),
        )
    return table

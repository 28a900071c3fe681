"""Write the report: OUT (HTML) and OUT with .json (every figure on the page), both or neither."""

from __future__ import annotations

import json
import math
from pathlib import Path

from graphprune.io import files as io


def json_path(out: Path) -> Path:
    other = out.with_suffix(".json")
    return other if other != out else out.with_name(out.name + ".report.json")


def _clean(obj):
    """NaN and infinities become null: the file stays strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def files(explanation, sources: tuple[str, str] = ("", "")) -> tuple[str, str]:
    """(HTML page, JSON text) of an explanation."""
    from graphprune.explain.html import render

    return render(explanation, sources=sources), json.dumps(_clean(explanation.to_dict()), indent=1)


def stage(explanation, out: Path, stage_fn, sources: tuple[str, str] = ("", "")) -> None:
    """Write OUT and its JSON through an `io.atomic_outputs()` stage (with the caller's other files)."""
    page, figures = files(explanation, sources)
    stage_fn(out).write_text(page, encoding="utf-8")
    stage_fn(json_path(out)).write_text(figures, encoding="utf-8")


def write(explanation, out: Path, *, force: bool = False, inputs: tuple = (), sources: tuple[str, str] = ("", "")) -> Path:
    """Write OUT and its JSON atomically; refuses to replace an input, or an existing file without `force`."""
    for path in (out, json_path(out)):
        io.check_output(path, list(inputs), force)
    with io.atomic_outputs() as stage_fn:
        stage(explanation, out, stage_fn, sources)
    return json_path(out)

"""Write the report: OUT (HTML) and OUT with .json (every figure on the page), both or neither."""

from __future__ import annotations

import json
import math
from pathlib import Path

from graphprune import io


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


def write(explanation, out: Path, *, force: bool = False, inputs: tuple = (), sources: tuple[str, str] = ("", "")) -> Path:
    """Write OUT and its JSON atomically; refuses to replace an input, or an existing file without `force`."""
    from graphprune.explain.html import render

    other = json_path(out)
    for path in (out, other):
        io.check_output(path, list(inputs), force)
    page = render(explanation, sources=sources)
    figures = json.dumps(_clean(explanation.to_dict()), indent=1)
    with io.atomic_outputs() as stage:
        stage(out).write_text(page, encoding="utf-8")
        stage(other).write_text(figures, encoding="utf-8")
    return other

"""What pruning did to the architecture: widths by parameter name, and the shrink report's figures.

The pruned model keeps the original's parameter names (state_dict keys), so any pair compares
layer by layer: a layer is a parameter of rank 2 or more (weights), its width the size of dim 0
(output channels or features). When `graphprune shrink` wrote a report beside the pruned model
(PRUNED's stem + .json), its groups, importance scores (when it holds them), removed blocks,
params, MACs and latency are shown too; each is optional.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from graphprune.cost.macs import count_macs, count_params

log = logging.getLogger(__name__)


def layer_widths(original: torch.nn.Module, pruned: torch.nn.Module) -> list[dict]:
    """Per weight of the original: its shape before and after, widths (dim 0) before and after."""
    after = dict(pruned.named_parameters(remove_duplicate=False))
    rows = []
    for name, p in original.named_parameters():
        if p.dim() < 2:
            continue
        q = after.get(name)
        rows.append({"name": name.removesuffix(".weight"), "shape_before": list(p.shape),
                     "shape_after": list(q.shape) if q is not None else None,
                     "width_before": int(p.shape[0]), "width_after": int(q.shape[0]) if q is not None else 0})
    return rows


def report_beside(pruned_path: Path | None) -> dict | None:
    """The shrink report next to PRUNED (stem + .json), if there is one that parses."""
    if pruned_path is None:
        return None
    path = pruned_path.with_suffix(".json")
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.warning("ignoring %s: %s", path, exc)
        return None
    return data if isinstance(data, dict) else None


def groups(report: dict | None) -> list[dict]:
    """Pruned groups of the report: name, widths, and (when present) scores with the cut."""
    rows = []
    for d in (report or {}).get("decisions", []):
        if not isinstance(d, dict) or not d.get("removed"):
            continue
        row = {"group": d.get("group", "?"), "width_before": d.get("width_before"), "width_after": d.get("width_after"),
               "removed": d.get("removed")}
        scores = d.get("scores") or (report.get("scores") or {}).get(row["group"])
        if scores:
            s = np.sort(np.asarray(scores, dtype=float))
            k = min(int(d["removed"]), len(s))
            row["scores"] = s.tolist()
            row["cut"] = float((s[k - 1] + s[k]) / 2) if 0 < k < len(s) else float(s[k - 1]) if k else None
        rows.append(row)
    return rows


def _numbers(obj: Any, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out |= _numbers(v, f"{prefix}{k}.")
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        out[prefix.rstrip(".")] = obj
    return out


def summary(original, pruned, sample_args: tuple, sample_kwargs: dict, report: dict | None) -> dict:
    """Params and MACs (the report's when it has them, else counted here on one input) and the rest."""
    rep = report or {}
    out = {"params_before": rep.get("params_before") or count_params(original),
           "params_after": rep.get("params_after") or count_params(pruned), "source": "shrink report" if rep else "counted"}
    if rep.get("macs_before") and rep.get("macs_after"):
        out |= {"macs_before": rep["macs_before"], "macs_after": rep["macs_after"]}
    else:
        out |= {"macs_before": count_macs(original, sample_args, sample_kwargs),
                "macs_after": count_macs(pruned, sample_args, sample_kwargs), "macs_per": "one input"}
    out["removed_blocks"] = list(rep.get("removed_blocks") or rep.get("blocks_removed") or [])
    out["budget"] = rep.get("budget") if isinstance(rep.get("budget"), dict) else None
    latency = rep.get("latency") or (rep.get("onnx") or {}).get("bench")
    out["latency"] = _numbers(latency) if latency else {}
    return out

"""Depth pruning measured: which blocks are found, what removing them costs, and blocks + channels vs channels only.

Models: the bundled digits CNN (models/digits_cnn.pt, trained; held-out accuracy on
models/digits.py's fixed split) and torchvision's resnet18 (random init, 64x64 inputs; no
labels make sense, so fidelity is the cosine of its logits to the original's on held-out
random inputs). No fine-tuning anywhere: these are the raw effects of removal.

1. Blocks found, each block's params and MACs, its scores (influence and loss, on 16
   calibration batches of 32), and the model after removing it alone.
2. Removing the 1 and 2 lowest-ranked blocks (by influence and by loss).
3. At the same MACs target: channels only (`shrink(target_macs=T)`) vs blocks first, then
   channels (`shrink(remove_blocks=K, target_macs=T)`), both with `--data` (BN recalibrated).

Calibration data goes through graphprune.data.load_data (an .npz written to a temporary
folder), as `--data` does. The section between the depth markers of --out is replaced.

    python -m scripts.depth_benchmark
    python -m scripts.depth_benchmark --out /tmp/b.md --json /tmp/depth.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import graphprune
from graphprune.capture.trace import capture
from graphprune.cost.macs import count_macs, count_params
from graphprune.data import load_data
from graphprune.data.options import CalibrationOptions
from graphprune.depth import block_macs, find_blocks, rank_blocks, remove_blocks
from graphprune.depth.options import DepthOptions
from graphprune.plan.types import PlanOptions
from models.digits import accuracy, load_split
from scripts.common import ROOT
from scripts.docsection import BENCHMARKS_HEADER, write_section

SECTION = "depth"
COMMAND = "python -m scripts.depth_benchmark"
CALIB = 16  # calibration batches of 32, as shrink's --calib-batches default
RESNET_CALIB = 4  # resnet18: fewer, to keep the run within a few minutes on 2 cores


def digits_case(tmp: Path) -> dict:
    model = torch.load(ROOT / "models" / "digits_cnn.pt", weights_only=False).eval()
    x_train, y_train, x_test, y_test = load_split()
    np.savez(tmp / "digits.npz", x=x_train.numpy(), y=y_train.numpy())
    data = load_data(str(tmp / "digits.npz"), x_train[:1], batch_size=32)

    def metric(m):
        return accuracy(m, x_test, y_test)

    return {"name": "digits CNN (trained)", "metric": "test accuracy", "model": model, "example": x_train[:2],
            "data": data, "score": metric, "calib": CALIB, "targets": (0.5, 0.25)}


def resnet_case(tmp: Path) -> dict:
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    calib = torch.randn(RESNET_CALIB * 32, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    held = torch.randn(64, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    np.savez(tmp / "resnet.npz", x=calib.numpy())
    data = load_data(str(tmp / "resnet.npz"), held[:1], batch_size=32)
    with torch.no_grad():
        reference = model(held)

    def metric(m):
        with torch.no_grad():
            return F.cosine_similarity(m.eval()(held), reference, dim=1).mean().item()

    return {"name": "resnet18 (random init, 64x64)", "metric": "logit cosine to original", "model": model,
            "example": held[:2], "data": data, "score": metric, "calib": RESNET_CALIB, "targets": (0.5,)}


def per_block(case: dict, captured, ranked: dict) -> list[dict]:
    model, blocks = case["model"], find_blocks(captured)
    macs = block_macs(captured.module, blocks, captured.args, {})
    total = count_macs(captured.module, captured.args, {})
    scores = {c: {r.block.name: r.score for r in ranks} for c, ranks in ranked.items()}
    rows = []
    for b in blocks:
        smaller = remove_blocks(captured, [b]).module
        rows.append({"block": b.describe(), "kind": b.kind, "params": b.num_params,
                     "params_share": b.num_params / count_params(model), "macs_share": macs[b.name] / total,
                     "influence": scores["influence"][b.name], "loss": scores["loss"][b.name],
                     "metric": case["score"](smaller)})
    return rows


def removals(case: dict, captured, ranked: dict) -> list[dict]:
    model, total = case["model"], count_macs(captured.module, captured.args, {})
    rows = []
    for criterion, ranks in ranked.items():
        for k in range(1, min(2, len(ranks)) + 1):
            smaller = remove_blocks(captured, [r.block for r in ranks[:k]]).module
            rows.append({"criterion": criterion, "k": k, "removed": ", ".join(r.block.name for r in ranks[:k]),
                         "params": count_params(smaller) / count_params(model),
                         "macs": count_macs(smaller, captured.args, {}) / total, "metric": case["score"](smaller)})
    return rows


def combined(case: dict, targets: tuple, blocks: int) -> list[dict]:
    model, example, rows = case["model"], case["example"], []
    for target in targets:
        for k in (0, blocks):
            pruned, report = graphprune.shrink(model, example, data=case["data"], plan=PlanOptions(target_macs=target),
                                               depth=DepthOptions(blocks=k),
                                               calibration=CalibrationOptions(batches=case["calib"]))
            judged = next((s for s in report.fidelity.get("steps", []) if s["step"] == "block removal"), None)
            rows.append({"target": target, "blocks": k, "removed": ", ".join(b["name"] for b in report.blocks),
                         "params": report.params_ratio, "macs": report.macs_ratio, "metric": case["score"](pruned),
                         "judged": _judged(judged)})
    return rows


def _judged(step: dict | None) -> str:
    """The block-removal step's outcome with its held-out selection losses (widths alone -> with the blocks)."""
    if step is None:
        return "-"
    if step["before"] is None:
        return step["outcome"]
    return f"{step['outcome'].split(':')[0]} ({step['before']:.3f} -> {step['after']:.3f})"


def measure() -> dict:
    torch.set_num_threads(2)
    t0 = time.time()
    out = {"machine": {"platform": platform.platform(), "cores": os.cpu_count(), "torch": torch.__version__,
                       "python": platform.python_version()}, "cases": []}
    with tempfile.TemporaryDirectory() as tmp:
        for make, blocks in ((digits_case, 1), (resnet_case, 2)):
            case = make(Path(tmp))
            captured = capture(case["model"], (case["example"],))
            ranked = {c: rank_blocks(captured, case["data"], c, limit=case["calib"]) for c in ("influence", "loss")}
            entry = {"name": case["name"], "metric": case["metric"], "original": case["score"](case["model"]),
                     "per_block": per_block(case, captured, ranked), "removals": removals(case, captured, ranked)}
            entry["combined"] = combined(case, case["targets"], blocks)
            print(f"{case['name']}: {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
            out["cases"].append(entry)
    out["seconds"] = time.time() - t0
    return out


def render(data: dict) -> str:
    m = data["machine"]
    lines = ["## Depth: removing blocks (no fine-tuning)", "", f"Produced by `{COMMAND}` "
             f"({m['platform']}, {m['cores']} cores, torch {m['torch']}; {data['seconds']:.0f} s).", "",
             "Blocks are found on the captured graph (graphprune.depth): repeated residual layers, else inline residual "
             "branches. *influence* = 1 - cos(block input, block output), mean over calibration samples; *loss* = "
             "cross-entropy increase when the block alone is bypassed (digits, with labels) or the relative squared "
             "distance to the original's logits (resnet18, no labels). Calibration: 16 batches of 32 (digits), 4 (resnet18).", ""]
    for case in data["cases"]:
        lines += [f"### {case['name']}: {case['metric']} {case['original']:.4f} before", "",
                  "| block | params (share) | MACs share | influence | loss | " + case["metric"] + " without it |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['block']} | {r['params']:,} ({r['params_share']:.3f}) | {r['macs_share']:.3f} | "
                  f"{r['influence']:.4f} | {r['loss']:.4f} | {r['metric']:.4f} |" for r in case["per_block"]]
        lines += ["", "| ranked by | blocks removed | params ratio | MACs ratio | " + case["metric"] + " |",
                  "|---|---|---|---|---|"]
        lines += [f"| {r['criterion']} | {r['removed']} | {r['params']:.3f} | {r['macs']:.3f} | {r['metric']:.4f} |"
                  for r in case["removals"]]
        lines += ["", "Same MACs target, channels only vs blocks first (`remove_blocks=K`, loss criterion) then channels "
                  "(default criterion, BN re-estimated on the data). *judged*: the block removal's outcome on the held-out "
                  "selection slice, its loss with widths alone -> with the blocks removed; an undone removal lists no "
                  "blocks (the widths-only model is returned):", "",
                  "| target MACs | blocks asked | blocks removed | judged | params ratio | MACs ratio | " + case["metric"] + " |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['target']} | {r['blocks']} | {r['removed'] or '-'} | {r.get('judged', '-')} | {r['params']:.3f} | "
                  f"{r['macs']:.3f} | {r['metric']:.4f} |" for r in case["combined"]]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "BENCHMARKS.md")
    parser.add_argument("--json", type=Path, default=None)
    opts = parser.parse_args()
    data = measure()
    if opts.json:
        opts.json.write_text(json.dumps(data, indent=2))
    write_section(opts.out, SECTION, render(data), BENCHMARKS_HEADER)
    print(render(data))


if __name__ == "__main__":
    main()

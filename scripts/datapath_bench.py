"""Time the data stages of `graphprune shrink --data` on pretrained EfficientNet-Lite0 (docs/BENCHMARKS.md).

Usage: python scripts/datapath_bench.py [--folder out/effnet] [--calib-batches 8] [--refit-batch-size 8] [--write]

1. The model and 256 calibration views of scripts/effnet.py (written to --folder if missing).
2. One forward pass of the original over --calib-batches batches of 32 (all 8 by default): the unit
   the stages are given in ("passes").
3. `graphprune shrink effnet.pt --data effnet_calib.npz --target-macs 0.7 --calib-batches N` through
   the command line (a subprocess): its wall time and the per-stage seconds of its JSON report.
4. The refit before and after sharing the passes, on one plan and 2 batches of --refit-batch-size, in
   this process: "before" interprets both graphs from the inputs to every refit layer
   (reconstruct.MEMORY = 0: no paused pass is kept, which is what the refit did before), "after" once
   per batch. Both must give the same layers to the bit (checked).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from scripts import docsection, effnet
from scripts.common import ROOT

SECTION = "datapath"


def prepare(folder: Path) -> dict[str, Path]:
    names = {"model": "effnet.pt", "example": "effnet_example.pt", "calib": "effnet_calib.npz"}
    paths = {k: folder / v for k, v in names.items()}
    if not all(p.exists() for p in paths.values()):
        effnet.write(folder)
    return paths


def one_pass(paths: dict, limit: int, batch_size: int = 32) -> tuple[float, int]:
    """Seconds of one forward pass of the original over `limit` calibration batches, and their count."""
    from graphprune.data import load_data

    model = torch.load(paths["model"], weights_only=False)
    data = load_data(str(paths["calib"]), torch.load(paths["example"]), batch_size=batch_size)
    start, n = time.perf_counter(), 0
    with torch.no_grad():
        for batch in data.batches(limit=limit):
            model(*batch.args)
            n += 1
    return time.perf_counter() - start, n


def shrink_cli(paths: dict, out: Path, limit: int) -> tuple[float, dict]:
    """(wall seconds, JSON report) of the command line's shrink with data."""
    cmd = [sys.executable, "-m", "graphprune.cli", "shrink", str(paths["model"]), "--example-input",
           str(paths["example"]), "--data", str(paths["calib"]), "--target-macs", "0.7", "--calib-batches", str(limit),
           "-o", str(out), "--force"]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start, json.loads(out.with_suffix(".json").read_text())


def refit_before_after(paths: dict, batch_size: int) -> dict:
    """Refit seconds with the passes restarted per layer (before) and shared (after), same plan and data."""
    import importlib

    import graphprune
    from graphprune.data import load_data
    from graphprune.plan.types import PlanOptions

    rc = importlib.import_module("graphprune.rewrite.reconstruct")  # graphprune.rewrite is also a function

    model = torch.load(paths["model"], weights_only=False)
    example = torch.load(paths["example"])
    data = load_data(str(paths["calib"]), example, batch_size=batch_size)
    plan = graphprune.plan(graphprune.analyze(model, example), PlanOptions(target_macs=0.7))
    out, memory = {}, rc.MEMORY
    try:
        for name, limit in (("after", memory), ("before", 0)):
            rc.MEMORY = limit
            pruned = graphprune.rewrite(plan)
            start = time.perf_counter()
            refits = rc.reconstruct(plan, pruned, data, limit=2)
            out[name] = {"seconds": time.perf_counter() - start, "refits": refits, "state": pruned.state_dict()}
    finally:
        rc.MEMORY = memory
    same = out["before"]["refits"] == out["after"]["refits"] and all(
        torch.equal(a, b) for a, b in zip(out["before"]["state"].values(), out["after"]["state"].values(), strict=True))
    return {"before": out["before"]["seconds"], "after": out["after"]["seconds"], "layers": len(out["after"]["refits"]),
            "same": same}


def section(unit: float, batches: int, wall: float, report: dict, refit: dict, refit_batch: int, argv) -> str:
    s = report["seconds"]
    stages = ("capture", "graph", "score", "allocate", "plan", "rewrite", "verify", "oracle", "refit", "recalibrate")
    rows = [(k, s[k]) for k in stages if k in s]
    lines = ["## Data passes: `shrink --data` on pretrained EfficientNet-Lite0, stage by stage", "",
             f"`graphprune shrink effnet.pt --data effnet_calib.npz --target-macs 0.7 --calib-batches {batches}` (views of "
             f"skimage.data photos from scripts/effnet.py, {batches} batches of 32 = {32 * batches} images; default "
             f"criterion l2, refit and BatchNorm re-estimation on): "
             f"**{wall:.0f} s** of wall time for the command; the JSON report's stages below. One forward pass of the "
             f"original over the same batches took {unit:.1f} s in the same run (the unit of the last column).", "",
             "| stage | seconds | forward passes |", "|---|---|---|"]
    lines += [f"| {k} | {v:.1f} | {v / unit:.1f} |" for k, v in rows]
    lines += [f"| total (report) | {s['total']:.1f} | {s['total'] / unit:.1f} |", "",
              f"The refit alone, same plan, 2 batches of {refit_batch}, {refit['layers']} layers: {refit['before']:.1f} s when "
              f"both graphs are interpreted from the inputs to each layer (as before), {refit['after']:.1f} s with one pass "
              f"per batch paused at each layer ({refit['before'] / refit['after']:.1f}x); the same layers to the bit: "
              f"{'yes' if refit['same'] else 'NO'}. The machine was shared with other jobs: compare within a run.", "",
              docsection.produced_by("scripts.datapath_bench", argv)]
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--folder", type=Path, default=ROOT / "out" / "effnet")
    p.add_argument("--calib-batches", type=int, default=8, help="batches of 32 for the pass and shrink (8: all 256 views)")
    p.add_argument("--refit-batch-size", type=int, default=8, help="the refit before/after on 2 batches of this size")
    p.add_argument("--write", action="store_true", help="rewrite the section of docs/BENCHMARKS.md")
    args = p.parse_args()
    paths = prepare(args.folder)
    unit, batches = one_pass(paths, args.calib_batches)
    print(f"one pass over {batches} batches: {unit:.1f} s", flush=True)
    wall, report = shrink_cli(paths, args.folder / "effnet.shrunk.pt", args.calib_batches)
    print(f"shrink: {wall:.1f} s, stages {report['seconds']}", flush=True)
    refit = refit_before_after(paths, args.refit_batch_size)
    text = section(unit, batches, wall, report, refit, args.refit_batch_size, sys.argv[1:])
    print(text)
    if args.write:
        docsection.write_section(ROOT / "docs" / "BENCHMARKS.md", SECTION, text, docsection.BENCHMARKS_HEADER)
    return 0 if refit["same"] else 1


if __name__ == "__main__":
    sys.exit(main())

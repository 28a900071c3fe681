"""How long `graphprune.shrink` takes, stage by stage, beside Torch-Pruning's MetaPruner.

For each torchvision model (random init after torch.manual_seed(0), eval mode, input 1x3x224x224),
in one process, alternating the two tools within every repeat:

* graphprune: `graphprune.shrink(model, x, plan=PlanOptions(ratio=ratio))` with its defaults (L2, round_to 8), every check
  included (the pruned model's run against the original, the dead-channel oracle); the stages are
  the report's `seconds` (capture, dependency graph, scoring, plan, rewrite, verify, oracle, MACs ...);
* Torch-Pruning (TP): `tp.pruner.MetaPruner` (`GroupMagnitudeImportance(p=2)`, local ranking,
  `pruning_ratio=ratio`, `round_to=8`, `ignored_layers=[the final classifier]`): its dependency-graph
  build in the constructor, then `step()`; on a deep copy made outside the timing.

Medians over --repeats; the ratio column is graphprune's median over TP's, measured side by side (the
machine's load hits both alike). The section between the shrink_speed markers of --out is replaced.

    python -m scripts.shrink_speed                              # resnet50 mobilenet_v2 densenet201, 3 repeats
    python -m scripts.shrink_speed --models resnet18 --repeats 1 --out /tmp/speed.md

With --cli-repeats N (3 by default), also the command line's wall time on ResNet-18 beside the bare
imports it cannot avoid (`import torch`, `import torch, torchvision`), each in a fresh process.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch

import graphprune
from scripts.baselines import classifier
from scripts.common import ROOT
from scripts.docsection import BENCHMARKS_HEADER, produced_by, write_section

MODELS = ("resnet50", "mobilenet_v2", "densenet201")
SECTION = "shrink_speed"
STAGES = ("reference", "capture", "graph", "score", "plan", "rewrite", "verify", "oracle", "fidelity", "macs")


def build(name: str) -> tuple[torch.nn.Module, torch.Tensor]:
    import torchvision

    torch.manual_seed(0)
    return getattr(torchvision.models, name)().eval(), torch.randn(1, 3, 224, 224)


def time_graphprune(model: torch.nn.Module, x: torch.Tensor, ratio: float) -> dict:
    t = time.perf_counter()
    _, report = graphprune.shrink(model, x, plan=graphprune.PlanOptions(ratio=ratio))
    wall = time.perf_counter() - t
    return {**report.seconds, "wall": wall, "checks": [c["check"] for c in report.checks]}


def time_tp(model: torch.nn.Module, x: torch.Tensor, ratio: float) -> float:
    import torch_pruning as tp  # only this baseline needs it

    model = copy.deepcopy(model)
    t = time.perf_counter()
    pruner = tp.pruner.MetaPruner(model, x, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                  global_pruning=False, pruning_ratio=ratio, ignored_layers=[classifier(model)],
                                  round_to=8)
    pruner.step()
    return time.perf_counter() - t


def measure(name: str, ratio: float, repeats: int, say) -> dict:
    model, x = build(name)
    gp, tp_s = [], []
    for r in range(repeats):
        for tool in ("gp", "tp") if r % 2 == 0 else ("tp", "gp"):  # alternate who goes first
            gc.collect()
            if tool == "gp":
                gp.append(time_graphprune(model, x, ratio))
            else:
                tp_s.append(time_tp(model, x, ratio))
        say(f"{name} repeat {r + 1}: graphprune {gp[-1]['wall']:.2f}s, TP {tp_s[-1]:.2f}s")
    stages = {k: statistics.median(g.get(k, 0.0) for g in gp) for k in (*STAGES, "wall")}
    return {"model": name, "stages": stages, "tp": statistics.median(tp_s), "checks": gp[0]["checks"],
            "runs": {"graphprune": [g["wall"] for g in gp], "tp": tp_s}}


CLI = {"import torch": ["-c", "import torch"],
       "import torch, torchvision": ["-c", "import torch, torchvision"],
       "graphprune shrink resnet18.pt --ratio 0.4 --input-shape 1,3,224,224": [
           "-m", "graphprune.cli", "shrink", "resnet18.pt", "--ratio", "0.4", "--input-shape", "1,3,224,224", "--force"]}


def cli_walls(repeats: int) -> dict:
    """Median wall seconds of each CLI command, in fresh processes, rotating which goes first; and the
    shrink's own stages (its JSON report) from the last run. The imports are the floor under the CLI:
    unpickling a torchvision model imports torchvision, which imports torch._dynamo."""
    walls: dict = {k: [] for k in CLI}
    with tempfile.TemporaryDirectory(prefix="shrink_speed.") as tmp:
        torch.manual_seed(0)
        torch.save(build("resnet18")[0], Path(tmp) / "resnet18.pt")
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        for r in range(repeats):
            names = list(CLI)
            for name in names[r % len(names):] + names[:r % len(names)]:
                t = time.perf_counter()
                subprocess.run([sys.executable, *CLI[name]], cwd=tmp, env=env, check=True, capture_output=True)
                walls[name].append(time.perf_counter() - t)
        report = json.loads((Path(tmp) / "resnet18.pruned.json").read_text())
    return {"walls": {k: statistics.median(v) for k, v in walls.items()}, "seconds": report["seconds"],
            "repeats": repeats}


def render_cli(cli: dict) -> list[str]:
    lines = ["", f"The command line on ResNet-18 (random init), each command in a fresh process, medians of "
             f"{cli['repeats']}, rotating which goes first; seconds of wall time:", "", "| command | wall s |", "|---|---|"]
    lines += [f"| `{k}` | {v:.2f} |" for k, v in cli["walls"].items()]
    stages = ", ".join(f"{k} {v:.2f}" for k, v in cli["seconds"].items())
    lines += ["", f"The shrink's own stages (its JSON report, last run): {stages}. Everything above the two imports is "
              "the command's own work; the imports are paid before any of it (unpickling the model imports torchvision)."]
    return lines


def render(records: list[dict], argv: Sequence[str], repeats: int, ratio: float, cli: dict | None = None) -> str:
    head = "| model | " + " | ".join(STAGES) + " | other | graphprune total | TP build + step | graphprune / TP |"
    lines = ["## shrink speed: stages, and Torch-Pruning side by side", "",
             f"`graphprune.shrink` at ratio {ratio} (L2, round_to 8, every check) on random-init torchvision models, "
             "input 1x3x224x224, against Torch-Pruning's `MetaPruner` (L2, round_to 8, classifier ignored, "
             f"dependency-graph build included), alternating in one process; medians of {repeats} repeats, seconds. "
             "Stages are the report's `seconds`: reference = the original's forward pass, graph = the dependency "
             "graph, verify = the pruned model's forward pass and output check, oracle = the dead-channel check, "
             "fidelity = the pruned model's run for the report's output drift, macs = counting MACs and parameters "
             "before and after, other = the rest (the bias correction from BatchNorm statistics, bookkeeping).", "",
             head, "|" + "---|" * (len(STAGES) + 5)]
    for rec in records:
        s = rec["stages"]
        cells = " | ".join(f"{s[k]:.2f}" for k in STAGES)
        other = s["wall"] - sum(s[k] for k in STAGES)
        ratio = s["wall"] / rec["tp"]
        lines.append(f"| {rec['model']} | {cells} | {other:.2f} | {s['wall']:.2f} | {rec['tp']:.2f} | {ratio:.2f} |")
    lines += ["", "Checks run by graphprune in every repeat: " + ", ".join(records[0]["checks"]) + ".",
              f"Load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; compare within a row "
              "(same moments), not across runs."]
    lines += render_cli(cli) if cli else []
    lines += ["", produced_by("scripts.shrink_speed", list(argv))]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--ratio", type=float, default=0.4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cli-repeats", type=int, default=3, help="times each command-line run (0: none)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "BENCHMARKS.md")
    opts = parser.parse_args(argv)
    torch.set_num_threads(opts.threads)
    records = [measure(name, opts.ratio, opts.repeats, lambda m: print(m, flush=True)) for name in opts.models]
    cli = cli_walls(opts.cli_repeats) if opts.cli_repeats else None
    text = render(records, argv, opts.repeats, opts.ratio, cli)
    print(text)
    write_section(opts.out, SECTION, text, BENCHMARKS_HEADER)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

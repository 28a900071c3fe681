"""Recovery on the bundled digits CNN: held-out accuracy after pruning and after fine-tuning.

Everything runs through the product's command line, as a user types it: `graphprune shrink`
prunes models/digits_cnn.pt, `graphprune finetune` (with and without the original as teacher),
`shrink --finetune-epochs E` (one shot, the original as teacher) or `shrink --steps 2
--finetune-epochs E/2` (the same number of epochs in all) recovers on the training split, and
the held-out split (models/digits.py `load_split(0)`, 360 images the model never trained on)
gives the accuracy. The splits are written as .npz files
(x, y) to a temporary folder. Each variant is a list of commands; the section between the
recovery_digits markers of --out is replaced, --json gets the raw numbers.

    python -m scripts.recovery_digits
    python -m scripts.recovery_digits --epochs 3 --out /tmp/b.md
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from models.digits import accuracy, load_split
from scripts.common import ROOT, run_cli
from scripts.docsection import BENCHMARKS_HEADER, produced_by, write_section

SECTION = "recovery_digits"
MODEL = "models/digits_cnn.pt"
EXAMPLE = ["--example-input", "models/digits_example.pt"]


def variants(tmp: Path, epochs: int, prune: list[str]) -> dict[str, tuple[list[list[str]], str]]:
    """name -> (commands: graphprune's arguments, the model file the last one writes in T)."""
    t = str(tmp)
    shrink = ["shrink", MODEL, *EXAMPLE, *prune, "--data", f"{t}/train.npz"]
    tune = ["finetune", f"{t}/pruned.pt", "--data", f"{t}/train.npz", *EXAMPLE, "--epochs", str(epochs)]
    half = str(max(1, epochs // 2))
    return {
        "pruned": ([[*shrink, "-o", f"{t}/pruned.pt"]], "pruned.pt"),
        "finetune (cross-entropy)": ([[*tune, "-o", f"{t}/ce.pt"]], "ce.pt"),
        "finetune --teacher (CE + distillation)": ([[*tune, "--teacher", MODEL, "-o", f"{t}/kd.pt"]], "kd.pt"),
        "shrink --finetune-epochs (one shot)": (
            [[*shrink, "--finetune-epochs", str(epochs), "-o", f"{t}/one.pt"]], "one.pt"),
        f"shrink --steps 2 --finetune-epochs {half}": (
            [[*shrink, "--steps", "2", "--finetune-epochs", half, "-o", f"{t}/steps.pt"]],
            "steps.pt"),
    }


def torch_pruning_rows(tmp: Path, epochs: int, macs: float, x_test, y_test) -> list[dict]:
    """Torch-Pruning (Taylor, global, ratio bisected to graphprune's MACs fraction, BatchNorm
    re-estimated), then the same recovery command as graphprune's `finetune --teacher` row."""
    from graphprune.data import load_data
    from scripts.baselines import TP_IGNORED, tp_prune_to

    ignored = TP_IGNORED["digits CNN (bundled)"]

    original = torch.load(ROOT / MODEL, weights_only=False).eval()
    example = torch.load(ROOT / "models/digits_example.pt")
    data = load_data(str(tmp / "train.npz"), example, batch_size=32)
    t0 = time.perf_counter()
    frac, model = tp_prune_to(original, example, data, "Taylor", macs, ignored)
    torch.save(model.eval(), tmp / "tp.pt")
    seconds = time.perf_counter() - t0
    acc, params = held_out(tmp / "tp.pt", x_test, y_test)
    tune = ["finetune", f"{tmp}/tp.pt", "--data", f"{tmp}/train.npz", *EXAMPLE, "--epochs", str(epochs), "--teacher",
            MODEL, "-o", f"{tmp}/tp_kd.pt"]
    tuned_seconds = run_cli(tune)
    tuned, _ = held_out(tmp / "tp_kd.pt", x_test, y_test)
    note = f"Torch-Pruning Taylor at {frac:.3f}x MACs"
    return [{"variant": f"{note} (ignored_layers: final Linear, {', '.join(ignored)})", "accuracy": acc,
             "params": params, "commands": [], "seconds": seconds},
            {"variant": f"{note} + finetune --teacher", "accuracy": tuned, "params": params,
             "commands": [shlex.join(["graphprune", *tune]).replace(str(tmp), "T")], "seconds": tuned_seconds}]


def held_out(path: Path, x, y) -> tuple[float, int]:
    model = torch.load(path, weights_only=False, map_location="cpu")
    return accuracy(model, x, y), sum(p.numel() for p in model.parameters())


def measure(epochs: int, prune: list[str]) -> dict:
    x_train, y_train, x_test, y_test = load_split(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        np.savez(tmp / "train.npz", x=x_train.numpy(), y=y_train.numpy())
        np.savez(tmp / "test.npz", x=x_test.numpy(), y=y_test.numpy())
        acc, params = held_out(ROOT / MODEL, x_test, y_test)
        rows.append({"variant": "original", "accuracy": acc, "params": params, "commands": [], "seconds": 0.0})
        for name, (commands, output) in variants(tmp, epochs, prune).items():
            seconds = sum(run_cli(c) for c in commands)
            acc, params = held_out(tmp / output, x_test, y_test)
            shown = [shlex.join(["graphprune", *c]).replace(str(tmp), "T") for c in commands]
            rows.append({"variant": name, "accuracy": acc, "params": params, "commands": shown, "seconds": seconds})
        report = json.loads((tmp / "pruned.json").read_text())
        rows += torch_pruning_rows(tmp, epochs, report["macs_ratio"], x_test, y_test)
    return {"rows": rows, "macs_ratio": report["macs_ratio"], "params_ratio": report["params_ratio"],
            "n_test": len(y_test), "n_train": len(y_train), "epochs": epochs, "prune": shlex.join(prune)}


def _table(result: dict) -> list[str]:
    lines = [f"`{result['prune']}`: the pruned model has {result['macs_ratio']:.2f}x the MACs and "
             f"{result['params_ratio']:.2f}x the parameters of the original.", "",
             "| variant | params | held-out accuracy | seconds |", "|---|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['variant']} | {r['params']:,} | {r['accuracy']:.4f} | {r['seconds']:.1f} |")
    lines += ["", "```", *[c for r in result["rows"] for c in r["commands"]], "```", ""]
    return lines


def render(results: list[dict], argv: list[str]) -> str:
    first = results[0]
    lines = [
        "## Recovery: the digits CNN after pruning and fine-tuning",
        "",
        f"Held-out accuracy on the {first['n_test']} test images of `models/digits.py` `load_split(0)` "
        f"(fine-tuning on the {first['n_train']} training images, {first['epochs']} epochs, 10% of them held out for "
        "validation and early stopping; the best epoch is kept). `shrink` scores channels and re-estimates "
        "BatchNorm on the training images. Commands below: T is the temporary folder holding train.npz and the outputs.",
        "",
    ]
    for result in results:
        lines += _table(result)
    lines += [produced_by("scripts.recovery_digits", argv)]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--prune", action="append", help="graphprune shrink's pruning options (repeat for several) "
                   "[default: --target-macs 0.5 and 0.25, --criterion taylor]")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "BENCHMARKS.md")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    configs = args.prune or ["--target-macs 0.5 --criterion taylor", "--target-macs 0.25 --criterion taylor"]
    result = [measure(args.epochs, shlex.split(c)) for c in configs]
    body = render(result, sys.argv[1:])
    print(body)
    write_section(args.out, SECTION, body, BENCHMARKS_HEADER)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Issue 9's recovery check on the reference models: prune to half the MACs with data, recover, and
compare held-out accuracy with the original's.

For each model (the bundled digits CNN; models/tabular.py's digits ResNet with BatchNorm, dropout
and residual blocks, and its tabular MLP) the command is exactly

    graphprune shrink MODEL --example-input EX --target-macs 0.5 --criterion taylor \
        --data train.npz --finetune-epochs 10 -o pruned.pt

on the training split of models/digits.py `load_split(0)` (images, or the 64 pixels as features
for the MLP); accuracy is on the 360 held-out images. The check passes when the pruned model is
within 0.5 points of the original, or one test sample, whichever is more. Also checked on the
pruned image model: in `train()` its BatchNorm running statistics move and dropout is active.
The section between the recovery_check markers of --out is replaced.

    python -m scripts.recovery_check
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from models.digits import accuracy, load_split
from models.tabular import features
from scripts.common import ROOT, run_cli
from scripts.docsection import BENCHMARKS_HEADER, produced_by, write_section

SECTION = "recovery_check"
MODELS = {"digits CNN": ("models/digits_cnn.pt", False), "digits ResNet (BN, dropout, residual)":
          ("models/digits_resnet.pt", False), "tabular MLP (dropout)": ("models/digits_mlp.pt", True)}


def trains_like_original(model: torch.nn.Module, x: torch.Tensor) -> str:
    """'BN moves, dropout active' facts of a pruned model in train()."""
    model = model.train()
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running_mean" in k}
    with torch.no_grad():
        a, b = model(x), model(x)
    moved = any(not torch.equal(stats[k], v) for k, v in model.state_dict().items() if k in stats)
    return (f"BN stats {'move' if moved else 'DO NOT move'} ({len(stats)} layers); " if stats else "") + \
        f"two train() passes {'differ (dropout active)' if not torch.equal(a, b) else 'are equal'}"


def measure(epochs: int) -> list[dict]:
    x_train, y_train, x_test, y_test = load_split(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        for name, (path, tabular) in MODELS.items():
            xtr, xte = (features(x_train), features(x_test)) if tabular else (x_train, x_test)
            np.savez(t / "train.npz", x=xtr.numpy(), y=y_train.numpy())
            torch.save(xte[:2], t / "example.pt")
            args = ["shrink", path, "--example-input", f"{t}/example.pt", "--target-macs", "0.5", "--criterion", "taylor",
                    "--data", f"{t}/train.npz", "--finetune-epochs", str(epochs), "-o", f"{t}/pruned.pt", "--force"]
            seconds = run_cli(args)
            original = torch.load(ROOT / path, weights_only=False).eval()
            pruned = torch.load(t / "pruned.pt", weights_only=False).eval()
            before, after = accuracy(original, xte, y_test), accuracy(pruned, xte, y_test)
            allowed = max(0.005, 1.0 / len(y_test))
            rows.append({"model": name, "before": before, "after": after, "passed": after >= before - allowed - 1e-9,
                         "macs": _macs(t / "pruned.json"), "seconds": seconds, "train": trains_like_original(pruned, xte[:32]),
                         "command": shlex.join(["graphprune", *args[:-1]]).replace(str(t), "T")})
    return rows


def _macs(report: Path) -> float:
    import json

    return json.loads(report.read_text())["macs_ratio"]


def render(rows: list[dict], epochs: int, argv: list[str]) -> str:
    lines = ["## Recovery check: half the MACs, taylor on data, 10 epochs of recovery, unseen reference models", "",
             "Held-out accuracy on the 360 test images of `load_split(0)`; passes within 0.5 points of the original "
             f"or one test sample (0.0028), whichever is more. {epochs} epochs, the original as teacher.", "",
             "| model | original | pruned + recovered | MACs ratio | check | in train() | seconds |",
             "|---|---:|---:|---:|---|---|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['before']:.4f} | {r['after']:.4f} | {r['macs']:.3f} | "
                     f"{'pass' if r['passed'] else 'FAIL'} | {r['train']} | {r['seconds']:.0f} |")
    lines += ["", "```", *[r["command"] for r in rows], "```", "",
              produced_by("scripts.recovery_check", argv)]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "BENCHMARKS.md")
    args = p.parse_args()
    rows = measure(args.epochs)
    body = render(rows, args.epochs, sys.argv[1:])
    print(body)
    write_section(args.out, SECTION, body, BENCHMARKS_HEADER)
    return 0 if all(r["passed"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

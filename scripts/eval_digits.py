"""Evaluate saved digits model files on the held-out split.

Usage: python -m scripts.eval_digits ORIGINAL.pt PRUNED.pt [...] [--json OUT]

Each file must hold a whole pickled module (``torch.save(model)``). With
``--finetune-epochs N`` every model is also fine-tuned for N epochs on the training split by
graphprune's own recovery loop (``graphprune.recovery.finetune``: AdamW, warm-up + cosine,
10% of the training split held out for validation, the best epoch kept, seed 0) and its
accuracy after fine-tuning is reported.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from models.digits import accuracy, load_split


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", type=Path, help="model files (.pt)")
    p.add_argument("--json", type=Path, metavar="OUT", help="write results as JSON")
    p.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    p.add_argument("--finetune-epochs", type=int, default=0, help="also report accuracy after N epochs of fine-tuning")
    return p.parse_args()


def finetune(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int) -> torch.nn.Module:
    import tempfile

    import numpy as np

    from graphprune.data import load_data
    from graphprune.recovery import TrainOptions
    from graphprune.recovery import finetune as recover

    with tempfile.TemporaryDirectory() as tmp:
        np.savez(Path(tmp) / "train.npz", x=x.numpy(), y=y.numpy())
        data = load_data(str(Path(tmp) / "train.npz"), x[:2], batch_size=32)
        return recover(model, data, options=TrainOptions(epochs=epochs, device="cpu")).model


def evaluate(path: Path, split: tuple, epochs: int) -> dict:
    x_train, y_train, x, y = split
    model = torch.load(path, weights_only=False, map_location="cpu")
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"{path}: expected a pickled nn.Module, got {type(model).__name__}")
    params = sum(p.numel() for p in model.parameters())
    row = {"file": str(path), "params": params, "accuracy": accuracy(model, x, y)}
    if epochs:
        row["finetuned"] = accuracy(finetune(model, x_train, y_train, epochs), x, y)
    return row


def print_table(rows: list[dict]) -> None:
    width = max(len("file"), *(len(r["file"]) for r in rows))
    tuned = "finetuned" in rows[0]
    print(f"{'file':<{width}}  {'params':>9}  {'accuracy':>8}" + (f"  {'after fine-tuning':>17}" if tuned else ""))
    for r in rows:
        extra = f"  {r['finetuned']:>17.4f}" if tuned else ""
        print(f"{r['file']:<{width}}  {r['params']:>9}  {r['accuracy']:>8.4f}{extra}")


def main() -> int:
    args = parse_args()
    missing = [str(p) for p in args.models if not p.is_file()]
    if missing:
        print(f"error: model file not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    torch.set_num_threads(2)
    split = load_split(args.seed)
    y_test = split[3]
    try:
        rows = [evaluate(p, split, args.finetune_epochs) for p in args.models]
    except TypeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps({"n_test": len(y_test), "results": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

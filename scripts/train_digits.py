"""Train the bundled DigitsCNN and write its files into models/.

Writes ``digits_cnn.pt`` (whole module, eval mode), ``digits_cnn_state.pt``
(state_dict) and ``digits_example.pt`` (one input, [1, 1, 8, 8]).

Usage: python -m scripts.train_digits [--out-dir DIR] [--epochs N]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from models.digits import DigitsCNN, accuracy, load_split
from scripts.common import ROOT


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out-dir", type=Path, default=ROOT / "models")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: fastest for this tiny model)")
    return p.parse_args()


def train(model, x, y, epochs: int, batch_size: int, lr: float) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(y)).split(batch_size):
            opt.zero_grad()
            loss_fn(model(x[idx]), y[idx]).backward()
            opt.step()


def save_atomic(obj, path: Path) -> None:
    """torch.save to a temporary name, then rename over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def main() -> int:
    args = parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    x_train, y_train, x_test, y_test = load_split()
    model = DigitsCNN()
    start = time.perf_counter()
    train(model, x_train, y_train, args.epochs, args.batch_size, args.lr)
    elapsed = time.perf_counter() - start
    model.eval()
    acc = accuracy(model, x_test, y_test)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    save_atomic(model, args.out_dir / "digits_cnn.pt")
    save_atomic(model.state_dict(), args.out_dir / "digits_cnn_state.pt")
    save_atomic(x_test[:1].clone(), args.out_dir / "digits_example.pt")
    n_params = sum(p.numel() for p in model.parameters())
    print(f"params: {n_params}")
    print(f"train time: {elapsed:.1f}s ({args.epochs} epochs)")
    print(f"held-out accuracy: {acc:.4f} ({len(y_test)} examples)")
    print(f"wrote digits_cnn.pt, digits_cnn_state.pt, digits_example.pt to {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Write the digits split (models/digits.py `load_split`) as .npz files that `--data` reads.

Usage: python -m scripts.digits_data OUTDIR [--seed 0]
Writes OUTDIR/digits_train.npz and OUTDIR/digits_test.npz, each with x [N, 1, 8, 8] float32
and y [N] int64: the data the bundled model was trained on, and the held-out images.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from models.digits import load_split


def write(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    x_train, y_train, x_test, y_test = load_split(seed)
    folder.mkdir(parents=True, exist_ok=True)
    train, test = folder / "digits_train.npz", folder / "digits_test.npz"
    np.savez(train, x=x_train.numpy(), y=y_train.numpy())
    np.savez(test, x=x_test.numpy(), y=y_test.numpy())
    return train, test


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    for path in write(args.folder, args.seed):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Write pretrained EfficientNet-Lite0 and natural-photo views of skimage.data for `--data` (scripts/effnet.py).

Usage: python -m scripts.effnet_data OUTDIR [--calibration 256] [--held-out 256] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scripts.effnet import write


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path)
    p.add_argument("--calibration", type=int, default=256, help="views of the calibration photos")
    p.add_argument("--held-out", type=int, default=256, help="views of the held-out photos")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    for path in write(args.folder, args.calibration, args.held_out, args.seed):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

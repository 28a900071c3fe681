"""Independent check of a searched speed-up: the original and the pruned model, exported afresh and
timed interleaved in ONNX Runtime, outside the search.

Both pickles are loaded (torch.load, weights_only=False), exported with graphprune.onnx.export.export_onnx's
defaults (dynamic batch, onnxsim, checked against PyTorch in ONNX Runtime) and timed with
graphprune.onnx.bench.bench (pinned sessions, interleaved rounds with rotating start, medians):

    speed-up = median ms of the original / median ms of the pruned model

    python -m scripts.speedup_check /tmp/resnet50.pt /tmp/resnet50.pruned.pt --input-shape 32,3,224,224
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from graphprune.onnx.bench import bench
from graphprune.onnx.export import export_onnx
from graphprune.onnx.sessions import CPU


def check(original: Path, pruned: Path, shape: tuple[int, ...], threads: int, repeats: int, warmup: int) -> dict:
    """Median latencies of both models at batch shape[0] and the speed-up, exported and timed here."""
    example = torch.randn(*shape)
    with tempfile.TemporaryDirectory(prefix="speedup_check.") as tmp:
        paths = []
        for i, file in enumerate((original, pruned)):
            model = torch.load(file, weights_only=False).eval()
            paths.append(export_onnx(model, (example[:2],), None, Path(tmp) / f"m{i}.onnx").path)
        res = bench(paths, batch_sizes=(shape[0],), providers=[CPU], warmup=warmup, repeats=repeats, threads=threads)
    base, cand = (res.row(i, CPU, shape[0]) for i in (0, 1))
    return {"original_ms": base.median_ms, "pruned_ms": cand.median_ms, "speedup": base.median_ms / cand.median_ms,
            "original_p90_ms": base.p90_ms, "pruned_p90_ms": cand.p90_ms, "batch": shape[0], "threads": threads,
            "repeats": repeats}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("original", type=Path)
    p.add_argument("pruned", type=Path)
    p.add_argument("--input-shape", required=True, type=lambda s: tuple(int(v) for v in s.split(",")))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    opts = p.parse_args(argv)
    torch.set_num_threads(opts.threads)
    result = check(opts.original, opts.pruned, opts.input_shape, opts.threads, opts.repeats, opts.warmup)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

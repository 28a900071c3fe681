"""Prune a 1B-parameter LLaMA-style model (random weights) and measure memory and time.

    python -m scripts.large_model                    # 1.04B params (22 layers), ratio 0.3
    python -m scripts.large_model --layers 4 --out /tmp/large.md     # a quick run

Reports peak resident memory of the whole process (ru_maxrss) against the model's size
in bytes, and the time of each stage, into a section of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

import torch

import graphprune
from graphprune.cost.macs import count_params
from scripts.common import ROOT
from scripts.docsection import write_section


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB -> GiB


def build(layers: int):
    from transformers import LlamaConfig, LlamaModel

    cfg = LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=5504, num_hidden_layers=layers,
                      num_attention_heads=16, num_key_value_heads=4, use_cache=False)
    torch.manual_seed(0)
    with torch.no_grad():
        return LlamaModel(cfg).eval()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=22)
    parser.add_argument("--ratio", type=float, default=0.3)
    parser.add_argument("--seq", type=int, default=16)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "BENCHMARKS.md")
    args = parser.parse_args()
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    model = build(args.layers)
    params = count_params(model)
    size_gib = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30
    base_peak = peak_gib()
    t_build = time.perf_counter() - t0
    print(f"model: {params / 1e9:.3f}B params, {size_gib:.2f} GiB; peak after build {base_peak:.2f} GiB", flush=True)
    ids = torch.randint(0, 32000, (1, args.seq))
    t1 = time.perf_counter()
    pruned, report = graphprune.shrink(model, {"input_ids": ids, "use_cache": False}, args.ratio,
                                       progress=lambda s: print(f"  {time.perf_counter() - t1:7.1f}s {s}", flush=True))
    t_shrink = time.perf_counter() - t1
    peak = peak_gib()
    row = {
        "params": params, "params_after": count_params(pruned), "model_gib": size_gib, "peak_gib": peak,
        "peak_over_model": peak / size_gib, "build_s": t_build, "shrink_s": t_shrink, "stages_s": report.seconds,
        "macs_ratio": report.macs_ratio, "ratio": args.ratio, "layers": args.layers,
    }
    print(json.dumps(row, indent=2), flush=True)
    cmd = "python -m scripts.large_model " + " ".join(sys.argv[1:])
    text = (
        "## Large model: memory and time\n\n"
        f"Command: `{cmd.strip()}`. Machine: {platform.machine()}, {platform.system()}, 2 cores, 24 GiB, CPU only; "
        f"torch {torch.__version__}.\n\n"
        "LLaMA-style `LlamaModel` (hidden 2048, MLP 5504, 16 query / 4 KV heads, vocab 32000, random weights), "
        f"{args.layers} layers, input 1x{args.seq} token ids, `--ratio {args.ratio}`, default options. Peak memory is "
        "the process's resident high-water mark (it includes the original model, the capture, the pruned model "
        "and Python/torch themselves).\n\n"
        "| params | model size | pruned params | MACs ratio | peak RSS | peak / model size | shrink time |\n"
        "|---|---|---|---|---|---|---|\n"
        f"| {params / 1e9:.3f}B | {size_gib:.2f} GiB | {row['params_after'] / 1e9:.3f}B | {report.macs_ratio:.3f} | "
        f"{peak:.2f} GiB | {peak / size_gib:.2f}x | {t_shrink:.0f} s |\n\n"
        f"Stages (s): {', '.join(f'{k} {v:.0f}' for k, v in report.seconds.items())}.\n"
    )
    write_section(args.out, "large_model", text, "# Benchmarks\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

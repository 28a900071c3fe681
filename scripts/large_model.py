"""Prune a LLaMA-style causal LM as a user loads it (random weights); measure memory and time.

    python -m scripts.large_model                              # 1.10B LlamaForCausalLM, float32, ratio 0.3
    python -m scripts.large_model --size 7b --dtype bfloat16   # 6.7B, built on the meta device
    python -m scripts.large_model --layers 2 --out /tmp/large.md   # a quick run

The model is `transformers.LlamaForCausalLM` with its default config apart from the sizes
(`use_cache=True`: the KV cache is among the outputs). It is built on the meta device and
materialised in place (`to_empty`, then each parameter drawn from N(0, 0.02), norms at 1); its
buffers (the rotary frequencies) come from a one-layer build with the same head size on the CPU.
So building it never holds more than the model itself, in its dtype.

`graphprune.shrink(..., release_model=True)` then prunes it, handing the model's memory over to the
pruned one (each tensor freed once sliced). Peak memory is the process's resident high-water mark
(VmHWM of /proc/self/status, reset once the model is loaded, so it is the pruning's peak; it
includes Python, torch and transformers themselves), reported
against the model's size in bytes and against the resident size once the model is loaded. Each run
is one fresh process; the section of docs/BENCHMARKS.md it writes is named after the size and dtype.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

import graphprune
from graphprune.cost.macs import count_params
from graphprune.plan.types import PlanOptions
from scripts.common import ROOT
from scripts.docsection import produced_by, write_section

SIZES = {  # TinyLlama-1.1B's and LLaMA-2-7B's shapes
    "1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
               num_key_value_heads=4),
    "7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=32),
}


def status_gib(field: str) -> float:
    """VmRSS / VmHWM of this process in GiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 2**20
    raise KeyError(field)


def build(size: str, layers: int | None, dtype: torch.dtype):
    from transformers import LlamaConfig, LlamaForCausalLM

    shape = dict(SIZES[size], **({"num_hidden_layers": layers} if layers else {}))
    config = LlamaConfig(vocab_size=32000, **shape)
    with torch.device("meta"):
        model = LlamaForCausalLM(config).to(dtype)
    model.to_empty(device="cpu")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.fill_(1.0) if "norm" in name else p.normal_(0.0, 0.02, generator=gen)
        head = shape["hidden_size"] // shape["num_attention_heads"]  # the rotary buffers depend on the head size only
        small = LlamaForCausalLM(LlamaConfig(vocab_size=8, hidden_size=head, intermediate_size=8, num_hidden_layers=1,
                                             num_attention_heads=1, num_key_value_heads=1))
        real = dict(small.named_buffers())
        for name, b in model.named_buffers():
            b.copy_(real[name] if name in real else real[name.replace(name.split(".")[2], "0", 1)])
    return model.eval()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="1b")
    parser.add_argument("--layers", type=int, default=None, help="override the number of decoder layers")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument("--ratio", type=float, default=0.3)
    parser.add_argument("--seq", type=int, default=16)
    parser.add_argument("--keep-original", action="store_true", help="release_model=False (the original stays usable)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "BENCHMARKS.md")
    args = parser.parse_args()
    torch.set_num_threads(2)
    base = status_gib("VmRSS")
    t0 = time.perf_counter()
    model = build(args.size, args.layers, getattr(torch, args.dtype))
    params = count_params(model)
    size_gib = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30
    loaded = status_gib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM: the peak below is the pruning's, from the loaded model
    t_build = time.perf_counter() - t0
    print(f"model: {params / 1e9:.3f}B params, {size_gib:.2f} GiB; RSS {base:.2f} GiB before, {loaded:.2f} GiB loaded "
          f"({t_build:.0f} s)", flush=True)
    ids = torch.randint(0, 32000, (1, args.seq), generator=torch.Generator().manual_seed(0))
    t1 = time.perf_counter()
    def progress(text: str) -> None:
        print(f"  {time.perf_counter() - t1:7.1f}s peak {status_gib('VmHWM'):.2f} GiB: {text}", flush=True)

    pruned, report = graphprune.shrink(model, {"input_ids": ids}, plan=PlanOptions(ratio=args.ratio),
                                       release_model=not args.keep_original,
                                       progress=progress)
    t_shrink = time.perf_counter() - t1
    peak = status_gib("VmHWM")
    out = pruned(input_ids=ids)
    row = {
        "params": params, "params_after": count_params(pruned), "model_gib": size_gib, "rss_before_gib": base,
        "rss_loaded_gib": loaded, "peak_gib": peak, "peak_over_model": peak / size_gib, "peak_over_loaded": peak / loaded,
        "build_s": t_build, "shrink_s": t_shrink, "stages_s": report.seconds, "macs_ratio": report.macs_ratio,
        "cache": type(out.past_key_values).__name__, "checks": [c["check"] for c in report.checks],
    }
    print(json.dumps(row, indent=2), flush=True)
    layers = args.layers or SIZES[args.size]["num_hidden_layers"]
    text = (
        f"## Large model: {args.size.upper()}-shaped LlamaForCausalLM, {args.dtype}\n\n"
        f"`LlamaForCausalLM` ({json.dumps(dict(SIZES[args.size], num_hidden_layers=layers))}, vocab 32000, "
        f"default config: `use_cache=True`, random weights), input 1x{args.seq} token ids, `--ratio {args.ratio}`, "
        f"`release_model={not args.keep_original}`. Peak = VmHWM of the process, reset once the model is "
        f"loaded (Python, torch and transformers included); the machine was shared with other jobs, load average "
        f"{os.getloadavg()[0]:.0f} on 2 cores at the start, so the times are not comparable with an idle machine's.\n\n"
        "| params | model size | RSS loaded | pruned params | MACs ratio | peak RSS | peak / model size | "
        "peak / RSS loaded | shrink time |\n|---|---|---|---|---|---|---|---|---|\n"
        f"| {params / 1e9:.3f}B | {size_gib:.2f} GiB | {loaded:.2f} GiB | {row['params_after'] / 1e9:.3f}B | "
        f"{report.macs_ratio:.3f} | {peak:.2f} GiB | {peak / size_gib:.2f}x | {peak / loaded:.2f}x | {t_shrink:.0f} s |\n\n"
        f"Stages (s): {', '.join(f'{k} {v:.1f}' for k, v in report.seconds.items())}. Checks passed: "
        f"{', '.join(row['checks'])}; the pruned model returns a {row['cache']}.\n\n"
        + produced_by("scripts.large_model", sys.argv[1:]) + "\n"
    )
    write_section(args.out, f"large_model_{args.size}_{args.dtype}", text, "# Benchmarks\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""graphprune against Torch-Pruning: size, MACs, prune time and ONNX Runtime latency per model.

For each torchvision model (random init after torch.manual_seed(0), eval mode, input 1x3x224x224):

* original;
* graphprune: `graphprune.shrink` at --ratio with its default options, no per-model
  configuration; one more variant per --gp-round-to value;
* Torch-Pruning (TP): `tp.pruner.MetaPruner` with the same criterion (L2 magnitude,
  `GroupMagnitudeImportance(p=2)`), local ranking, `pruning_ratio=--ratio` and the
  configuration TP needs, `ignored_layers=[the final classifier Linear]`; once with its
  default `round_to=None` and once with `round_to=8`.

Every variant is pruned from its own deep copy, must run with the original's output shape,
and is exported with `graphprune.onnx.export.export_onnx` (checked against PyTorch in ONNX
Runtime). One `graphprune.onnx.bench.bench` call per model then times all its variants
interleaved on the CPU provider, and `graphprune.onnx.bench_table.ratio_table` gives, per batch:

    speed-up = original median / median
    MACs reduction = original MACs / MACs          (MACs: graphprune.cost.macs.count_macs, batch 1)
    eta = speed-up / MACs reduction                 (1.0: latency falls as fast as MACs)

A failure (pruning, forward, export) is one line in the variant's row; a model that fails
as a whole is one row. The Markdown section between the compare_torch_pruning markers of
--out is replaced (the rest of the file is kept); --json gets the raw numbers.

    python -m scripts.compare_torch_pruning                    # the 7 default models
    python -m scripts.compare_torch_pruning --quick --out /tmp/bench.md --json /tmp/bench.json
    python -m scripts.compare_torch_pruning --models resnet50 --gp-round-to 8 --repeats 30
"""

from __future__ import annotations

import argparse
import copy
import json
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

import graphprune
from graphprune.cost.macs import count_macs, count_params
from graphprune.onnx.bench import BenchResult, bench
from graphprune.onnx.bench_table import ratio_table
from graphprune.onnx.export import export_onnx
from graphprune.onnx.sessions import CPU
from scripts.baselines import classifier
from scripts.common import ROOT, error_line, machine
from scripts.docsection import BENCHMARKS_HEADER, write_section

MODELS = ("resnet50", "mobilenet_v2", "efficientnet_b0", "densenet121", "convnext_tiny", "regnet_y_800mf", "shufflenet_v2_x1_0")
QUICK = {"models": ("resnet18", "mobilenet_v3_small"), "batch": (1, 4), "repeats": 3}
DEFAULTS = {"models": MODELS, "batch": (1, 32), "repeats": 10}
SECTION = "compare_torch_pruning"  # docs section this script owns
TP_CONFIG = "yes (ignored_layers=[classifier])"


@dataclass(frozen=True)
class Spec:
    """One variant: its name, the per-model configuration it needs, and how it is pruned."""

    name: str
    needs_config: str
    # (model, example) -> (pruned model, extra facts for the JSON); None: the original
    prune: Callable[[torch.nn.Module, torch.Tensor], tuple[torch.nn.Module, dict]] | None


def build(name: str) -> tuple[torch.nn.Module, torch.Tensor]:
    import torchvision  # imported here: the rendering half of this script (and its test) needs none of it

    torch.manual_seed(0)
    model = getattr(torchvision.models, name)().eval()
    return model, torch.randn(1, 3, 224, 224)


def graphprune_pruner(ratio: float, **options) -> Callable:
    def prune(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.nn.Module, dict]:
        pruned, report = graphprune.shrink(model, x, ratio, **options)
        # shrink's own split of its wall time: capture, plan + rewrite, and the total with verification
        return pruned, {"seconds": report.seconds, "unknown_ops": list(report.unknown_ops)}

    return prune


def tp_pruner(ratio: float, round_to: int | None) -> Callable:
    def prune(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.nn.Module, dict]:
        import torch_pruning as tp  # imported here: only this baseline needs it

        pruner = tp.pruner.MetaPruner(
            model,
            x,
            importance=tp.importance.GroupMagnitudeImportance(p=2),
            global_pruning=False,
            pruning_ratio=ratio,
            ignored_layers=[classifier(model)],
            round_to=round_to,
        )
        pruner.step()  # prunes `model` in place (it is already a deep copy)
        return model, {}

    return prune


def specs(ratio: float, gp_round_to: Sequence[int]) -> list[Spec]:
    default_round_to = graphprune.PlanOptions().round_to
    extra = [r for r in dict.fromkeys(gp_round_to) if r != default_round_to]
    return [
        Spec("original", "-", None),
        Spec("graphprune (defaults)", "no", graphprune_pruner(ratio)),
        *[Spec(f"graphprune round_to={r}", "no", graphprune_pruner(ratio, round_to=r)) for r in extra],
        Spec("TP", TP_CONFIG, tp_pruner(ratio, None)),
        Spec("TP round_to=8", TP_CONFIG, tp_pruner(ratio, 8)),
    ]


def make_variant(spec: Spec, model: torch.nn.Module, x: torch.Tensor, onnx_path: Path, say: Callable) -> dict:
    """Prune a deep copy, check it runs with the original's output shape, count it, export it."""
    record = {"variant": spec.name, "needs_config": spec.needs_config, "error": None, "onnx": None, "latency": {}}
    stage = "prune"
    try:
        pruned, seconds = model, None
        if spec.prune is not None:
            candidate = copy.deepcopy(model)
            start = time.perf_counter()
            pruned, record["prune_info"] = spec.prune(candidate, x)
            seconds = time.perf_counter() - start
        record["prune_s"] = seconds
        stage = "forward"
        with torch.no_grad():
            want, got = model(x).shape, pruned(x).shape
        if got != want:
            raise ValueError(f"output shape {tuple(got)}, the original's is {tuple(want)}")
        record.update(params=count_params(pruned), macs=count_macs(pruned, (x,)))
        stage = "export"
        say(f"{spec.name}: exporting ({record['macs'] / 1e6:.0f}M MACs)")
        result = export_onnx(pruned, (x,), None, onnx_path)
        record["onnx"] = {
            "path": str(onnx_path), "exporter": result.exporter, "simplified": result.simplified,
            "max_abs_error": result.max_abs_error, "max_rel_error": result.max_rel_error,
            "output_scale": result.output_scale, "notes": list(result.notes),
        }
    except Exception as exc:  # noqa: BLE001 - a failed variant is one line in its row, not the end of the model
        record["error"] = f"{stage}: {error_line(exc)}"
        say(f"{spec.name}: FAILED {record['error']}")
    return record


def attach_latency(variants: list[dict], result: BenchResult) -> None:
    """Fill `latency[batch]` of the variants `result` timed (models in the order of `variants`)."""
    macs = [v["macs"] for v in variants]
    for entry, row in zip(ratio_table(result, 0, macs), result.rows, strict=True):
        variants[row.model_index]["latency"][str(row.batch)] = {
            "median_ms": row.median_ms, "p90_ms": row.p90_ms, "speedup": entry["speedup"],
            "macs_reduction": entry["macs_reduction"], "eta": entry["efficiency"],
        }


def compare_model(name: str, opts: argparse.Namespace, workdir: Path, say: Callable) -> dict:
    model, x = build(name)
    variants = []
    for i, spec in enumerate(specs(opts.ratio, opts.gp_round_to)):
        say(f"{spec.name}: pruning" if spec.prune else "original: counting")
        variants.append(make_variant(spec, model, x, workdir / f"{name}-{i}.onnx", say))
    if variants[0]["error"]:
        raise RuntimeError(f"the original model failed ({variants[0]['error']})")
    timed = [v for v in variants if v["onnx"] is not None]
    say(f"benchmarking {len(timed)} variants interleaved, batch {list(opts.batch)}, repeats {opts.repeats}")
    record = {"model": name, "error": None, "variants": variants, "bench_settings": None}
    try:
        result = bench([v["onnx"]["path"] for v in timed], batch_sizes=opts.batch, providers=[CPU],
                       warmup=opts.warmup, repeats=opts.repeats, threads=opts.threads)
    except Exception as exc:  # noqa: BLE001 - the model keeps its size and MACs rows
        record["error"] = f"bench: {error_line(exc)}"
        say(f"FAILED {record['error']}")
        return record
    attach_latency(timed, result)
    record["bench_settings"] = result.settings
    return record


# ---- Markdown --------------------------------------------------------------------------------------


def _row(model: str, v: dict, original: dict, batches: Sequence[int], failures: list[str]) -> str:
    if v["error"] and "macs" not in v:
        failures.append(f"{model} / {v['variant']}: {v['error']}")
        stage = v["error"].split(":")[0]
        return f"| {model} | {v['variant']} | {v['needs_config']} | FAILED ({stage}, see below) |" + " |" * (2 + 3 * len(batches))
    if v["error"]:
        failures.append(f"{model} / {v['variant']}: {v['error']}")
    params = f"{v['params'] / 1e6:.2f}M" + ("" if v is original else f" ({v['params'] / original['params']:.2f})")
    cells = [model, v["variant"], v["needs_config"], params, f"{v['macs'] / original['macs']:.3f}",
             "-" if v["prune_s"] is None else f"{v['prune_s']:.1f}"]
    for b in batches:
        lat = v["latency"].get(str(b))
        if lat is None:
            cells += ["not timed", "", ""]
        else:
            cells += [f"{lat['median_ms']:.2f}", f"{lat['speedup']:.2f}x", f"{lat['eta']:.2f}"]
    return "| " + " | ".join(cells) + " |"


def table(records: list[dict], batches: Sequence[int]) -> tuple[list[str], list[str]]:
    """The Markdown table lines and the failure lines listed under it."""
    head = ["model", "variant", "needs config", "params", "MACs ratio", "prune s"]
    for i, b in enumerate(batches):
        head += [f"ORT CPU b{b} ms (median)" if i == 0 else f"b{b} ms", f"b{b} speed-up", f"b{b} η"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    failures: list[str] = []
    for rec in records:
        variants = rec.get("variants") or []
        if not variants or "macs" not in variants[0]:
            failures.append(f"{rec['model']}: {rec['error']}")
            lines.append(f"| {rec['model']} | - | - | FAILED (see below) |" + " |" * (2 + 3 * len(batches)))
            continue
        if rec["error"]:
            failures.append(f"{rec['model']}: {rec['error']}")
        lines += [_row(rec["model"], v, variants[0], batches, failures) for v in variants]
    return lines, failures


def render_section(data: dict) -> str:
    """The Markdown section (without its markers) from the JSON record `data`."""
    m, s = data["machine"], data["settings"]
    lines, failures = table(data["models"], s["batch_sizes"])
    text = [
        "## graphprune vs Torch-Pruning: ONNX Runtime CPU latency",
        "",
        "Produced by:",
        "",
        "```",
        data["command"],
        "```",
        "",
        f"Machine: {m['platform']}, CPU {m['cpu']}, {m['cores']} cores; onnxruntime {m['onnxruntime']} "
        f"(CPUExecutionProvider, {m['threads']} intra-op threads, interleaved timing, warm-up {s['warmup']}, "
        f"{s['repeats']} repeats), torch {m['torch']}, torchvision {m['torchvision']}, "
        f"torch-pruning {m['torch_pruning']}, graphprune {m['graphprune']}, Python {m['python']}. "
        f"Run took {data['seconds'] / 60:.1f} min.",
        "",
        f"Random-init weights (`torch.manual_seed(0)`), eval mode, input 1x3x224x224, ratio {s['ratio']}, "
        "local L2 magnitude ranking for both tools (graphprune: sum of squares over the group's tensors; "
        "TP: `GroupMagnitudeImportance(p=2)`, mean over the group's layers). graphprune runs with its "
        "defaults; TP is `MetaPruner` with `ignored_layers=[final Linear]`, `round_to` None or 8.",
        "",
        "Columns: *params* = count (ratio to the original); *MACs ratio* = MACs / original MACs at batch 1 "
        "(`graphprune.cost.macs.count_macs`); *prune s* = wall time of the pruning call (graphprune's includes "
        "its own verification and MAC count); latency = median of the interleaved runs of the ONNX file "
        "(exported and parity-checked by `graphprune.onnx.export.export_onnx`); *speed-up* = original ms / ms; "
        "*η* = speed-up / (original MACs / MACs), 1.0 when latency falls as fast as MACs.",
        "",
        *lines,
    ]
    if failures:
        text += ["", "Failures:", "", *[f"- {f}" for f in failures]]
    return "\n".join(text) + "\n"


# ---- command line ----------------------------------------------------------------------------------


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", help=f"torchvision model names (default: {' '.join(MODELS)})")
    parser.add_argument("--ratio", type=float, default=0.4)
    parser.add_argument("--gp-round-to", type=int, nargs="+", default=[], metavar="N",
                        help="extra graphprune variants with round_to=N (the default round_to is always run)")
    parser.add_argument("--batch", type=int, nargs="+", help="batch sizes to time (default: 1 32)")
    parser.add_argument("--repeats", type=int, help="timed runs per model and batch (default: 10)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="ORT intra-op threads (and torch threads)")
    parser.add_argument("--quick", action="store_true", help="smoke run: resnet18 + mobilenet_v3_small, batch 1 4, repeats 3")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "BENCHMARKS.md")
    parser.add_argument("--json", type=Path, default=ROOT / "docs" / "benchmarks" / "compare_torch_pruning.json")
    parser.add_argument("--onnx-dir", type=Path, help="keep the ONNX files here (default: a temporary folder)")
    opts = parser.parse_args(argv)
    for key, value in (QUICK if opts.quick else DEFAULTS).items():
        if getattr(opts, key) is None:  # explicit options win over --quick
            setattr(opts, key, value)
    return opts


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    opts = parse(argv)
    torch.set_num_threads(opts.threads)
    t0 = time.perf_counter()
    records = []
    with tempfile.TemporaryDirectory(prefix="compare_tp.") as tmp:
        workdir = opts.onnx_dir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        for name in opts.models:
            def say(msg: str, name: str = name) -> None:
                print(f"[{time.perf_counter() - t0:7.1f}s] {name}: {msg}", flush=True)

            try:
                records.append(compare_model(name, opts, workdir, say))
            except Exception as exc:  # noqa: BLE001 - a failed model is a row, not the end of the sweep
                say(f"FAILED {error_line(exc)}")
                records.append({"model": name, "error": error_line(exc), "variants": [], "bench_settings": None})
    data = {
        "command": "python -m " + shlex.join(["scripts.compare_torch_pruning", *argv]),
        "machine": machine(opts.threads, ("torchvision", "torch-pruning")),
        "settings": {"ratio": opts.ratio, "gp_round_to": opts.gp_round_to, "batch_sizes": list(opts.batch),
                     "repeats": opts.repeats, "warmup": opts.warmup, "threads": opts.threads, "provider": CPU},
        "seconds": time.perf_counter() - t0,
        "models": records,
    }
    opts.json.parent.mkdir(parents=True, exist_ok=True)
    opts.json.write_text(json.dumps(data, indent=2) + "\n")
    write_section(opts.out, SECTION, render_section(data), BENCHMARKS_HEADER)
    print(f"wrote {opts.out} and {opts.json} in {data['seconds']:.0f}s", flush=True)
    # TP failing is a finding, not a failed run; the original or graphprune failing is.
    ours = [v for r in records for v in r["variants"] if v["needs_config"] != TP_CONFIG]
    return 0 if all(not r["error"] for r in records) and not any(v["error"] for v in ours) else 1


if __name__ == "__main__":
    raise SystemExit(main())

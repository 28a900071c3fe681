"""Latency search benchmark: uniform / greedy / random / recursive at one measured budget, with
Torch-Pruning's uniform configuration at that latency beside.

Per model, one latency oracle (graphprune.search.OrtOracle, ONNX Runtime CPU) is shared by the
four searches, so the per-group table is measured once (its time is reported on its own) and every
search after the first reuses it; each search's own time is its wall time on top of that.

Torch-Pruning (TP) runs as in scripts/compare_torch_pruning.py (MetaPruner, L2 group magnitude,
`ignored_layers=[final Linear]`, round_to=8, local ranking) at the uniform ratio found by
bisection on measured latency (table batch), then checked at the latency batch.

Independent check: every result is exported again with graphprune.export.export_onnx's defaults
and timed with graphprune.bench.bench (interleaved, medians) beside the original; that speed-up is
the *independent* column. Metrics: the digits CNN gives held-out accuracy (test split, no
fine-tuning) and calibration accuracy on 512 training images; torchvision models (random init)
give the calibration loss (KL to the original's logits on random inputs).

    python scripts/search_bench.py --models digits
    python scripts/search_bench.py --models resnet50 mobilenet_v2 --input-shape 32,3,224,224 --speedup 2
"""

from __future__ import annotations

import argparse
import copy
import json
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import graphprune  # noqa: E402
from graphprune.bench import CPU, bench  # noqa: E402
from graphprune.cost import count_macs  # noqa: E402
from graphprune.export import export_onnx  # noqa: E402
from graphprune.search import LatencySettings, OrtOracle, SearchSpace, make_budget, search  # noqa: E402
from graphprune.search.calibration import Calibration  # noqa: E402
from graphprune.search.space import Config  # noqa: E402
from scripts.compare_torch_pruning import classifier, machine  # noqa: E402
from scripts.docsection import write_section  # noqa: E402

STRATEGIES = ("uniform", "greedy", "random", "recursive")
SECTION = "search_bench"
HEADER = "# Benchmarks\n\nMeasured numbers; each section records the command and machine that produced it.\n"


def load(name: str, shape: tuple | None, workdir: Path):
    """(model, example, data or None, held-out (x, y) or None, table batch or None)."""
    if name == "digits":
        from graphprune.data import load_data
        from models.digits import load_split

        x_train, y_train, x_test, y_test = load_split()
        model = torch.load(ROOT / "models" / "digits_cnn.pt", weights_only=False).eval()
        example = x_train[: (shape or (256,))[0]]
        path = workdir / "digits_calib.npz"
        np.savez(path, x=x_train[:512].numpy(), y=y_train[:512].numpy())
        return model, example, load_data(str(path), example, batch_size=128), (x_test, y_test), example.shape[0]
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, name)().eval()
    return model, torch.randn(*(shape or (32, 3, 224, 224))), None, None, None


def tp_prune(model, example, ratio: float):
    import torch_pruning as tp

    candidate = copy.deepcopy(model)
    tp.pruner.MetaPruner(candidate, example[:1], importance=tp.importance.GroupMagnitudeImportance(p=2),
                         global_pruning=False, pruning_ratio=ratio, ignored_layers=[classifier(candidate)],
                         round_to=8).step()
    return candidate.eval()


def tp_at_budget(model, example, oracle: OrtOracle, settings: LatencySettings, fraction: float, say) -> tuple:
    """TP's uniform ratio meeting the budget: bisection at the table batch, then checked at the latency batch."""
    def ratio_of(r: float, batch: int) -> float:
        return oracle.measure_model(lambda: tp_prune(model, example, r), f"tp:{r:.4f}", batch).ratio

    lo, hi = 0.0, 0.9
    for _ in range(5):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if ratio_of(mid, settings.table_batch) <= fraction else (mid, hi)
        say(f"TP bisection: ratio {mid:.3f}")
    r = hi
    for _ in range(3):
        if ratio_of(r, settings.batch) <= fraction:
            break
        r = min(r + 0.05, 0.95)
    return r, tp_prune(model, example, r)


def held_out(model, data) -> float | None:
    if data is None:
        return None
    from models.digits import accuracy

    return accuracy(model, *data)


def run_model(name: str, opts, workdir: Path, say) -> dict:
    model, example, data, test, table_batch = load(name, opts.input_shape, workdir)
    budget = make_budget(speedup=opts.speedup)
    graph = graphprune.analyze(model, example)
    settings = LatencySettings(threads=opts.threads, table_batch=table_batch).resolved(example.shape[0])
    start = time.perf_counter()
    oracle = OrtOracle(SearchSpace(graph), settings)
    rows, models = [], {"original": model}
    for k, strategy in enumerate(opts.strategies):
        t0 = time.perf_counter()
        plan, log = search(graph, budget, strategy, data, latency=settings, oracle=oracle, samples=opts.samples,
                           round_to=opts.round_to,
                           progress=lambda text: say(text) if opts.verbose else None)
        seconds = time.perf_counter() - t0
        facts = log.facts
        pruned = graphprune.rewrite(plan).eval()
        models[strategy] = pruned
        rows.append({"variant": f"graphprune --search {strategy}", "search_s": seconds,
                     "table_s": facts["seconds"]["table"] if k == 0 else 0.0,
                     "measured_speedup": facts["final"]["speedup"], "noise": facts["final"]["noise"],
                     "table_batch_ratio": facts["final"]["table_batch_ratio"],
                     "latency_ratio": facts["final"]["latency_ratio"],
                     "metric": facts["chosen"]["metric"], "loss": facts["chosen"]["loss"],
                     "held_out": held_out(pruned, test), "evaluated": facts["evaluated"], "measured": facts["measured"],
                     "widths": facts["chosen"]["widths"], "calibration": facts["calibration"],
                     "round_to": facts["latency_settings"]["round_to"]})
        say(f"{strategy}: {seconds:.0f}s, speed-up {facts['final']['speedup']:.2f}, metric {facts['chosen']['metric']:.4g}")
    t0 = time.perf_counter()
    try:
        r, tp_model = tp_at_budget(model, example, oracle, settings, budget.fraction, say)
    except Exception as exc:  # noqa: BLE001 - TP failing on a model is a result: one line in the table
        rows.append({"variant": "Torch-Pruning", "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"})
        say(f"TP failed: {rows[-1]['error']}")
    else:
        calibration = Calibration(SearchSpace(graph).build(Config()), graph.captured.args, graph.captured.kwargs, data)
        score = calibration.score(tp_model)
        tp_ratio = oracle.measure_model(lambda: tp_model, f"tp:{r:.4f}", settings.batch)
        models["tp"] = tp_model
        rows.append({"variant": f"Torch-Pruning uniform ratio {r:.3f}, round_to=8", "search_s": time.perf_counter() - t0,
                     "table_s": 0.0, "measured_speedup": 1 / tp_ratio.ratio, "noise": tp_ratio.spread,
                     "latency_ratio": tp_ratio.ratio, "metric": score.metric, "loss": score.loss,
                     "held_out": held_out(tp_model, test), "evaluated": None, "measured": None})
    oracle.close()
    independent(models, rows, example, settings, opts, workdir, say)
    return {"model": name, "input_shape": list(example.shape), "budget": budget.fraction, "settings": oracle.settings,
            "original_held_out": held_out(model, test), "search_wall_s": time.perf_counter() - start, "rows": rows,
            "original_macs": count_macs(model, (example[:1],)), "round_to": rows[1].get("round_to")}


def independent(models: dict, rows: list, example, settings, opts, workdir: Path, say) -> None:
    say("independent check: export_onnx defaults, graphprune.bench interleaved")
    paths = []
    for i, (name, m) in enumerate(models.items()):
        paths.append(export_onnx(m, (example[:2],), None, workdir / f"ind-{i}.onnx").path)
        if name != "original":
            [r for r in rows if not r.get("error")][i - 1]["macs"] = count_macs(m, (example[:1],))
    res = bench(paths, batch_sizes=(settings.batch,), providers=[CPU], warmup=1, repeats=opts.repeats,
                threads=settings.threads)
    base = res.row(0, CPU, settings.batch).median_ms
    for i, row in enumerate(r for r in rows if not r.get("error")):
        got = res.row(i + 1, CPU, settings.batch)
        row["independent_speedup"], row["independent_ms"] = base / got.median_ms, got.median_ms
        row["independent_p90_ms"] = got.p90_ms
    rows.insert(0, {"variant": "original", "independent_ms": base})


def render(data: dict) -> str:
    out = ["## Latency search: uniform / greedy / random / recursive at one budget", "", "Produced by:", "", "```",
           data["command"], "```", "", f"Machine: {data['machine']['cpu']}, {data['machine']['cores']} cores, shared "
           f"with other jobs (load varies); onnxruntime {data['machine']['onnxruntime']}, torch {data['machine']['torch']}, "
           f"torch-pruning {data['machine']['torch_pruning']}. Run took {data['seconds'] / 60:.1f} min.", ""]
    for rec in data["models"]:
        s = rec["settings"]
        out += [f"### {rec['model']} (input {'x'.join(map(str, rec['input_shape']))}, budget {rec['budget']:.3f} "
                f"of the original's latency)", "",
                f"ONNX Runtime {s['execution_provider']}, latency batch {s['batch']}, {s['threads']} threads, "
                f"table batch {s['table_batch']}, widths in multiples of {rec['round_to']}. "
                f"Calibration: {rec['rows'][1].get('calibration', '')}."
                + (f" Original held-out accuracy {rec['original_held_out']:.4f}." if rec["original_held_out"] else ""), "",
                "| variant | speed-up (search's measurement) | speed-up (independent) | calibration metric | "
                "held-out acc | MACs ratio | search s | evaluated / measured |", "|---|---|---|---|---|---|---|---|"]
        for row in rec["rows"][1:]:
            if row.get("error"):
                out.append(f"| {row['variant']} | FAILED: {row['error']} |" + " |" * 6)
                continue
            held = "-" if row["held_out"] is None else f"{row['held_out']:.4f}"
            counts = "-" if row["evaluated"] is None else f"{row['evaluated']} / {row['measured']}"
            secs = f"{row['search_s']:.0f}" + (f" (+{row['table_s']:.0f} table)" if row["table_s"] else "")
            out.append(f"| {row['variant']} | {row['measured_speedup']:.2f}x (+-{row['noise']:.2f}) | "
                       f"{row['independent_speedup']:.2f}x | {row['metric']:.4g} | {held} | "
                       f"{row['macs'] / rec['original_macs']:.3f} | {secs} | {counts} |")
        out.append("")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["digits"])
    p.add_argument("--speedup", type=float, default=2.0)
    p.add_argument("--input-shape", type=lambda s: tuple(int(v) for v in s.split(",")))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    p.add_argument("--samples", type=int, default=8, help="random search samples")
    p.add_argument("--round-to", type=int, help="width quantum (default: the CPU's channel block, 16 on AVX-512)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs of the independent check")
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "BENCHMARKS.md")
    p.add_argument("--json", type=Path, default=ROOT / "docs" / "benchmarks" / "search_bench.json")
    opts = p.parse_args(argv)
    torch.set_num_threads(opts.threads)
    t0 = time.perf_counter()
    records = []
    with tempfile.TemporaryDirectory(prefix="search_bench.") as tmp:
        for name in opts.models:
            def say(msg: str, name: str = name) -> None:
                print(f"[{time.perf_counter() - t0:7.1f}s] {name}: {msg}", flush=True)

            records.append(run_model(name, opts, Path(tmp), say))
    data = {"command": "python scripts/search_bench.py " + shlex.join(argv), "machine": machine(opts.threads),
            "seconds": time.perf_counter() - t0, "models": records}
    opts.json.parent.mkdir(parents=True, exist_ok=True)
    opts.json.write_text(json.dumps(data, indent=2, default=str))
    write_section(opts.out, SECTION, render(data), HEADER)
    print(render(data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

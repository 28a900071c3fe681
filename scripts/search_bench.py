"""Latency search benchmark: uniform / greedy / random / recursive at one measured budget, with
Torch-Pruning's uniform configuration at that latency beside.

Per model, one latency oracle (graphprune.search.OrtOracle, ONNX Runtime CPU) is shared by the
four searches, so the per-group table is measured once (its time is reported on its own) and every
search after the first reuses it; each search's own time is its wall time on top of that.

Torch-Pruning (TP) runs as in scripts/compare_torch_pruning.py (MetaPruner, L2 group magnitude,
`ignored_layers=[final Linear]`, local ranking, round_to = the search's width quantum) at the uniform
ratio found by bisection on measured latency (table batch), then checked at the latency batch.
Where TP's pruned model does not run (TP mis-indexes the digits CNN's concat -> pool -> flatten ->
Linear), the convolutions nearest the head are added to `ignored_layers`, one more at a time, until
it runs; the row says which were ignored.

With labelled data (the digits models) every search scores candidates with BatchNorm statistics
re-estimated on the calibration data, and every result, TP's included, is re-estimated the same
way before its held-out accuracy is taken, as `graphprune shrink --data` delivers it.

Independent check: every result is exported again with graphprune.onnx.export.export_onnx's defaults
and timed with graphprune.onnx.bench.bench (interleaved, medians) beside the original; that speed-up is
the *independent* column. Metrics: the digits CNN gives held-out accuracy (test split, no
fine-tuning) and calibration accuracy on 512 training images; torchvision models (random init)
give the calibration loss (KL to the original's logits on random inputs).

    python -m scripts.search_bench --models digits digits_resnet digits_mlp --target-latency 0.65
    python -m scripts.search_bench --models resnet50 mobilenet_v2 --input-shape 32,3,224,224 --speedup 2
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

import graphprune
from graphprune.cost.macs import count_macs
from graphprune.onnx.bench import bench
from graphprune.onnx.export import export_onnx
from graphprune.onnx.sessions import CPU
from graphprune.rewrite.recalibrate import recalibrate
from graphprune.search import LatencySettings, OrtOracle, SearchSpace, make_budget, search
from graphprune.search.calibration import Calibration
from graphprune.search.space import Config
from scripts.baselines import classifier
from scripts.common import ROOT, machine
from scripts.docsection import BENCHMARKS_HEADER, write_section

STRATEGIES = ("uniform", "greedy", "random", "recursive")
SECTION = "search_bench"


DIGITS = {"digits": "digits_cnn", "digits_resnet": "digits_resnet", "digits_mlp": "digits_mlp"}


def load(name: str, shape: tuple | None, workdir: Path):
    """(model, example, data or None, held-out (x, y) or None)."""
    if name in DIGITS:
        from graphprune.data import load_data
        from models.digits import load_split

        x_train, y_train, x_test, y_test = load_split()
        if name == "digits_mlp":  # the tabular MLP reads the 64 pixels as features
            x_train, x_test = x_train.flatten(1), x_test.flatten(1)
        model = torch.load(ROOT / "models" / f"{DIGITS[name]}.pt", weights_only=False).eval()
        example = x_train[: (shape or (256,))[0]]
        path = workdir / f"{name}_calib.npz"
        np.savez(path, x=x_train[:512].numpy(), y=y_train[:512].numpy())
        return model, example, load_data(str(path), example, batch_size=128), (x_test, y_test)
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, name)().eval()
    return model, torch.randn(*(shape or (32, 3, 224, 224))), None, None


def tp_prune(model, example, ratio: float, round_to: int, ignored: int = 0):
    """TP at `ratio`, its classifier and the `ignored` convolutions nearest the head left alone."""
    import torch_pruning as tp

    candidate = copy.deepcopy(model)
    convs = [m for m in candidate.modules() if isinstance(m, torch.nn.Conv2d)]
    skip = [classifier(candidate), *convs[len(convs) - ignored:]] if ignored else [classifier(candidate)]
    tp.pruner.MetaPruner(candidate, example[:1], importance=tp.importance.GroupMagnitudeImportance(p=2),
                         global_pruning=False, pruning_ratio=ratio, ignored_layers=skip, round_to=round_to).step()
    candidate.eval()
    with torch.no_grad():
        candidate(example[:2])  # TP's result must run
    return candidate


def tp_ignored(model, example, round_to: int, most: int = 4) -> int:
    """The fewest convolutions nearest the head that TP must leave alone for its result to run."""
    for ignored in range(most):
        try:
            tp_prune(model, example, 0.3, round_to, ignored)
            return ignored
        except RuntimeError:
            continue
    tp_prune(model, example, 0.3, round_to, most)  # the last try: TP's own error, if any, is the row's
    return most


def reestimate(model, data) -> None:
    """BatchNorm running statistics of a plain torch model re-estimated on `data` (cumulative average)."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if data is None or not norms:
        return
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    with torch.no_grad():
        for batch in data.batches(limit=16):
            model(*batch.args, **batch.kwargs)
    model.eval()


def tp_at_budget(model, example, oracle: OrtOracle, settings: LatencySettings, fraction: float, say,
                 round_to: int, ignored: int) -> tuple:
    """TP's uniform ratio meeting the budget: bisection at the table batch, then checked at the latency batch."""
    def ratio_of(r: float, batch: int) -> float:
        return oracle.measure_model(lambda: tp_prune(model, example, r, round_to, ignored), f"tp:{r:.4f}", batch).ratio

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
    return r, tp_prune(model, example, r, round_to, ignored)


def held_out(model, data) -> float | None:
    """Accuracy on the held-out split (None without one)."""
    if data is None:
        return None
    from models.digits import accuracy

    return accuracy(model, *data)


def run_model(name: str, opts, workdir: Path, say) -> dict:
    model, example, data, test = load(name, opts.input_shape, workdir)
    budget = make_budget(target_latency=opts.target_latency) if opts.target_latency else make_budget(speedup=opts.speedup)
    graph = graphprune.analyze(model, example)
    settings = LatencySettings(threads=opts.threads).resolved(example.shape[0])
    start = time.perf_counter()
    oracle = OrtOracle(SearchSpace(graph), settings)
    settings = dataclasses.replace(settings, table_batch=oracle.table_batch(settings.batch))
    rows, models = [], {"original": model}
    for k, strategy in enumerate(opts.strategies):
        t0 = time.perf_counter()
        plan, log = search(graph, budget, strategy, data, latency=settings, oracle=oracle, samples=opts.samples,
                           round_to=opts.round_to, recalibrate=data is not None,
                           progress=lambda text: say(text) if opts.verbose else None)
        seconds = time.perf_counter() - t0
        facts = log.facts
        pruned = graphprune.rewrite(plan).eval()
        if data is not None:
            recalibrate(pruned, data, limit=16)
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
    round_to = rows[0]["round_to"]
    try:
        ignored = tp_ignored(model, example, round_to)
        r, tp_model = tp_at_budget(model, example, oracle, settings, budget.fraction, say, round_to, ignored)
        reestimate(tp_model, data)
    except Exception as exc:  # noqa: BLE001 - TP failing on a model is a result: one line in the table
        rows.append({"variant": "Torch-Pruning", "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"})
        say(f"TP failed: {rows[-1]['error']}")
    else:
        calibration = Calibration(SearchSpace(graph).build(Config()), graph.captured.args, graph.captured.kwargs, data)
        ignore_note = f", {ignored} convs nearest the head ignored" if ignored else ""
        score = calibration.score(tp_model)
        tp_ratio = oracle.measure_model(lambda: tp_model, f"tp:{r:.4f}", settings.batch)
        models["tp"] = tp_model
        rows.append({"variant": f"Torch-Pruning uniform ratio {r:.3f}, round_to={round_to}{ignore_note}",
                     "search_s": time.perf_counter() - t0,
                     "table_s": 0.0, "measured_speedup": 1 / tp_ratio.ratio, "noise": tp_ratio.spread,
                     "latency_ratio": tp_ratio.ratio, "metric": score.metric, "loss": score.loss,
                     "held_out": held_out(tp_model, test), "evaluated": None, "measured": None})
    oracle.close()
    independent(models, rows, example, settings, opts, workdir, say)
    return {"model": name, "input_shape": list(example.shape), "budget": budget.fraction,
            "settings": {**oracle.settings, "table_batch": settings.table_batch},
            "original_held_out": held_out(model, test), "search_wall_s": time.perf_counter() - start, "rows": rows,
            "original_macs": count_macs(model, (example[:1],)), "round_to": rows[1].get("round_to")}


def independent(models: dict, rows: list, example, settings, opts, workdir: Path, say) -> None:
    say("independent check: export_onnx defaults, graphprune.onnx.bench interleaved")
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
    strategies = ", ".join(data["strategies"])
    out = [f"## Latency search: {strategies} at one budget, Torch-Pruning beside", "", "Produced by:", "", "```",
           data["command"], "```", "", f"Machine: {data['machine']['cpu']}, {data['machine']['cores']} cores, every "
           f"measurement under the shared CPU lock (no other heavy job at the same time); "
           f"onnxruntime {data['machine']['onnxruntime']}, torch {data['machine']['torch']}, "
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
    p.add_argument("--target-latency", type=float, help="budget as a fraction of the original's latency (instead of --speedup)")
    p.add_argument("--input-shape", type=lambda s: tuple(int(v) for v in s.split(",")))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    p.add_argument("--samples", type=int, default=8, help="random search samples")
    p.add_argument("--round-to", type=int, help="width quantum (default: the CPU's channel block, 16 on AVX-512)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs of the independent check")
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--section", default=SECTION, help="the docs section (between its markers) the tables replace")
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
    data = {"command": "python -m scripts.search_bench " + shlex.join(argv),
            "machine": machine(opts.threads, ("torchvision", "torch-pruning")),
            "strategies": opts.strategies,
            "seconds": time.perf_counter() - t0, "models": records}
    opts.json.parent.mkdir(parents=True, exist_ok=True)
    opts.json.write_text(json.dumps(data, indent=2, default=str))
    write_section(opts.out, opts.section, render(data), BENCHMARKS_HEADER)
    print(render(data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

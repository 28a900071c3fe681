"""scripts/compare_torch_pruning.py, structurally: fake numbers in, table out.

No pruning, export or timing: a hand-made BenchResult stands in for `bench`, so the
test checks the script's arithmetic (eta = speed-up / MACs reduction), its mapping of
benchmark rows to variants and batch columns (writing the section: tests/test_docsection.py).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from graphprune.onnx.bench import BenchResult, BenchRow
from graphprune.onnx.sessions import CPU

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "compare_torch_pruning.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("compare_torch_pruning", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def _variant(name: str, macs: int, params: int, config: str = "no", prune_s: float | None = 1.0) -> dict:
    return {"variant": name, "needs_config": config, "error": None, "onnx": {}, "latency": {},
            "params": params, "macs": macs, "prune_s": prune_s}


def _fake_bench(medians: list[dict[int, float]]) -> BenchResult:
    rows = tuple(
        BenchRow(model_index=i, model=f"m{i}.onnx", provider=CPU, batch=b, median_ms=ms, p90_ms=ms, min_ms=ms,
                 file_size_bytes=1000, peak_mem_bytes=None, repeats=3)
        for b in (1, 32) for i, per_batch in enumerate(medians) for ms in [per_batch[b]]
    )
    return BenchResult(rows=rows, models=tuple(f"m{i}.onnx" for i in range(len(medians))))


def _data(script, records: list[dict]) -> dict:
    machine = {"platform": "Linux-test", "cpu": "Fake CPU", "cores": 2, "threads": 2, "python": "3.11",
               "onnxruntime": "1.0", "torch": "2.0", "torchvision": "0.1", "torch_pruning": "1.6.1", "graphprune": "0.1.0"}
    settings = {"ratio": 0.4, "gp_round_to": [], "batch_sizes": [1, 32], "repeats": 3, "warmup": 1, "threads": 2,
                "provider": CPU}
    return {"command": "python -m scripts.compare_torch_pruning --fake", "machine": machine, "settings": settings,
            "seconds": 60.0, "models": records}


def _cells(section: str, variant: str) -> list[str]:
    (line,) = [ln for ln in section.splitlines() if ln.startswith("| net |") and f"| {variant} |" in ln]
    return [c.strip() for c in line.strip("|").split("|")]


def test_eta_is_speedup_over_macs_reduction(script):
    """original 100 MACs / 10 ms; pruned 40 MACs (reduction 2.5) / 5 ms (speed-up 2): eta = 0.8."""
    variants = [_variant("original", 100, 1000, "-", None), _variant("graphprune (defaults)", 40, 500),
                _variant("TP", 50, 600, script.TP_CONFIG)]
    script.attach_latency(variants, _fake_bench([{1: 10.0, 32: 200.0}, {1: 5.0, 32: 50.0}, {1: 8.0, 32: 100.0}]))
    gp = variants[1]["latency"]
    assert gp["1"]["speedup"] == pytest.approx(2.0) and gp["1"]["macs_reduction"] == pytest.approx(2.5)
    assert gp["1"]["eta"] == pytest.approx(0.8)
    assert gp["32"]["eta"] == pytest.approx(4.0 / 2.5)
    assert variants[2]["latency"]["1"]["eta"] == pytest.approx(1.25 / 2.0)

    section = script.render_section(_data(script, [{"model": "net", "error": None, "variants": variants}]))
    (header,) = [ln for ln in section.splitlines() if ln.startswith("| model | variant |")]
    head = [c.strip() for c in header.strip("|").split("|")]
    assert head[0] == "model" and head[-1] == "b32 η" and len(head) == 12
    assert _cells(section, "graphprune (defaults)")[3:] == ["0.00M (0.50)", "0.400", "1.0", "5.00", "2.00x", "0.80",
                                                          "50.00", "4.00x", "1.60"]
    assert _cells(section, "original")[4:] == ["1.000", "-", "10.00", "1.00x", "1.00", "200.00", "1.00x", "1.00"]
    assert _cells(section, "TP")[2] == "yes (ignored_layers=[classifier])"
    assert "python -m scripts.compare_torch_pruning --fake" in section and "Fake CPU" in section


def test_failures_are_rows_and_listed(script):
    failed = {"variant": "TP", "needs_config": script.TP_CONFIG, "error": "prune: RuntimeError: boom", "onnx": None,
              "latency": {}}
    variants = [_variant("original", 100, 1000, "-", None), failed]
    records = [{"model": "net", "error": None, "variants": variants},
               {"model": "broken", "error": "TraceError: no", "variants": []}]
    section = script.render_section(_data(script, records))
    rows = [ln for ln in section.splitlines() if ln.startswith("| net |") or ln.startswith("| broken |")]
    assert all(row.count("|") == 13 for row in rows), rows  # 12 cells, like the header
    assert "- net / TP: prune: RuntimeError: boom" in section and "- broken: TraceError: no" in section

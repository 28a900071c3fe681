"""The ONNX Runtime benchmark: structure and arithmetic only, never timing thresholds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from rich.console import Console

import graphprune.onnx.bench as bench_mod
import graphprune.onnx.sessions as sessions_mod
from graphprune.errors import InputError
from graphprune.onnx.bench import BenchResult, BenchRow, bench
from graphprune.onnx.bench_table import ratio_table, render
from graphprune.onnx.sessions import CPU, CUDA, available_providers


def _matmul_model(path: Path, width: int, dims: list) -> Path:
    """y = relu(x @ W): x is [dims..., 16], W is [16, width]."""
    weight = numpy_helper.from_array(np.random.default_rng(width).standard_normal((16, width)).astype(np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        "mm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [*dims, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [*dims, width])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.checker.check_model(model)
    onnx.save_model(model, str(path))
    return path


@pytest.fixture()
def models(tmp_path: Path) -> list[Path]:
    return [_matmul_model(tmp_path / "big.onnx", 64, ["batch"]), _matmul_model(tmp_path / "small.onnx", 16, ["batch"])]


def _row(index: int, median: float, provider: str = CPU, batch: int = 1) -> BenchRow:
    return BenchRow(index, f"m{index}.onnx", provider, batch, median, median * 1.1, median * 0.9, 1000 * (index + 1), None, 3)


def test_rows_cover_every_model_batch_and_provider(models: list[Path]) -> None:
    result = bench(models, batch_sizes=(1, 4), providers=[CPU], warmup=1, repeats=3, threads=1)
    keys = [(r.model_index, r.provider, r.batch) for r in result.rows]
    assert sorted(keys) == sorted((i, CPU, b) for i in range(2) for b in (1, 4))
    for row in result.rows:
        assert row.model == str(models[row.model_index])
        assert 0 < row.min_ms <= row.median_ms <= row.p90_ms
        assert row.repeats == 3
        assert row.file_size_bytes == models[row.model_index].stat().st_size
        assert isinstance(row.peak_mem_bytes, int) and row.peak_mem_bytes >= 0
    assert json.loads(json.dumps(result.to_dict()))["rows"][0].keys() == result.to_dict()["rows"][0].keys()
    assert result.settings["threads"] == 1 and result.settings["allow_spinning"] is False


def test_efficiency_from_given_numbers() -> None:
    result = BenchResult(rows=(_row(0, 10.0), _row(1, 4.0), _row(2, 5.0)), models=("m0.onnx", "m1.onnx", "m2.onnx"))
    base, equal, worse = ratio_table(result, baseline_index=0, macs=[100, 40, 25])
    assert base["speedup"] == 1.0 and base["efficiency"] == 1.0
    # 2.5x faster for 2.5x fewer MACs: eta = 1; 2x faster for 4x fewer MACs: eta = 0.5.
    assert equal["speedup"] == pytest.approx(2.5) and equal["macs_ratio"] == pytest.approx(0.4)
    assert equal["macs_reduction"] == pytest.approx(2.5) and equal["efficiency"] == pytest.approx(1.0)
    assert worse["speedup"] == pytest.approx(2.0) and worse["efficiency"] == pytest.approx(0.5)
    assert worse["size_ratio"] == pytest.approx(3.0)
    assert ratio_table(result, baseline_index=1)[0]["speedup"] == pytest.approx(0.4)
    assert ratio_table(result)[1]["efficiency"] is None
    with pytest.raises(InputError, match="one positive count per model"):
        ratio_table(result, macs=[1, 2])
    with pytest.raises(InputError, match="out of range"):
        ratio_table(result, baseline_index=3)


def test_render_has_a_row_per_result_row() -> None:
    result = BenchResult(rows=(_row(0, 10.0), _row(1, 4.0)), models=("m0.onnx", "m1.onnx"))
    table = render(result, macs=[100, 40])
    assert table.row_count == 2
    console = Console(record=True, width=200)
    console.print(table)
    assert "2.50x" in console.export_text()


def test_models_run_interleaved_with_rotating_start() -> None:
    calls: list[str] = []

    class Fake:
        def __init__(self, name: str) -> None:
            self.name = name

        def run(self, outputs: object, feeds: dict) -> None:
            calls.append(self.name)

    times = bench_mod._interleaved([Fake("A"), Fake("B")], [{}, {}], repeats=3)
    assert calls == ["A", "B", "B", "A", "A", "B"]
    assert [len(t) for t in times] == [3, 3]


class _RecordingSession:
    """Stands in for ort.InferenceSession on a GPU: records what it was given, runs on the CPU."""

    made: list[tuple] = []
    real = ort.InferenceSession

    def __init__(self, path: str, options: ort.SessionOptions, providers: list) -> None:
        self.made.append((options, providers))
        self._providers = [providers[0][0], CPU]
        self._sess = self.real(path, options, providers=[CPU])

    def get_providers(self) -> list[str]:
        return self._providers

    def get_inputs(self) -> list:
        return self._sess.get_inputs()

    def run(self, outputs: object, feeds: dict) -> list:
        return self._sess.run(outputs, feeds)


def test_cuda_path_with_mocked_provider(models: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_mod, "available_providers", lambda: [CPU, CUDA])
    monkeypatch.setattr(ort, "InferenceSession", _RecordingSession)
    _RecordingSession.made.clear()
    result = bench(models, batch_sizes=(2,), warmup=1, repeats=3, threads=2)
    assert sorted((r.model_index, r.provider) for r in result.rows) == [(0, CPU), (0, CUDA), (1, CPU), (1, CUDA)]
    assert all(r.peak_mem_bytes is None for r in result.rows if r.provider == CUDA)
    cuda = [(opts, p) for opts, p in _RecordingSession.made if p[0][0] == CUDA]
    assert len(cuda) == 2
    for options, providers in cuda:
        assert providers[0][1]["cudnn_conv_algo_search"] == "EXHAUSTIVE"
        assert options.intra_op_num_threads == 2 and options.inter_op_num_threads == 1
        assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
        assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL


def test_silent_fallback_to_cpu_is_refused(models: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    class FallsBack(_RecordingSession):
        def get_providers(self) -> list[str]:
            return [CPU]

    monkeypatch.setattr(bench_mod, "available_providers", lambda: [CPU, CUDA])
    monkeypatch.setattr(ort, "InferenceSession", FallsBack)
    with pytest.raises(InputError, match="instead of CUDAExecutionProvider"):
        bench(models, batch_sizes=(1,), providers=[CUDA], warmup=0, repeats=1)


def test_provider_discovery(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    monkeypatch.setattr(sessions_mod, "_gpu_present", lambda: False)
    assert available_providers() == [CPU]
    monkeypatch.setattr(sessions_mod, "_gpu_present", lambda: True)
    assert available_providers() == [CPU, CUDA]


def test_unavailable_provider_is_an_input_error(models: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_mod, "available_providers", lambda: [CPU])
    with pytest.raises(InputError, match="not available"):
        bench(models, providers=[CUDA], repeats=1)


def test_symbolic_dims_need_concrete_inputs(tmp_path: Path) -> None:
    path = _matmul_model(tmp_path / "seq.onnx", 8, ["batch", "seq"])
    with pytest.raises(InputError, match="symbolic dim 1"):
        bench([path], batch_sizes=(2,), providers=[CPU], warmup=0, repeats=1)
    result = bench([path], batch_sizes=(3,), providers=[CPU], warmup=0, repeats=3, inputs={"x": np.ones((1, 5, 16))})
    assert [(r.batch, r.repeats) for r in result.rows] == [(3, 3)]


def test_fixed_batch_model_is_refused_at_another_batch(tmp_path: Path) -> None:
    path = _matmul_model(tmp_path / "fixed.onnx", 8, [2])
    assert bench([path], batch_sizes=(2,), providers=[CPU], warmup=0, repeats=1).rows[0].batch == 2
    with pytest.raises(InputError, match="fixed batch of 2"):
        bench([path], batch_sizes=(4,), providers=[CPU], warmup=0, repeats=1)

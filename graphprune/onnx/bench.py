"""ONNX Runtime latency benchmark of models that should be compared fairly.

Fairness: every model gets the same conditions, so the ratios mean something.

- Pinned sessions: `intra_op_num_threads=threads`, `inter_op_num_threads=1`,
  sequential execution, `ORT_ENABLE_ALL` graph optimisation, and thread spinning
  off, so one session's idle threads never spin on cores while the next model
  runs. CUDA pins `cudnn_conv_algo_search` (EXHAUSTIVE) so cuDNN's choice of
  algorithm is not left to a heuristic that differs between runs.
- Same data: every model gets the same arrays for an input of the same name
  (graphprune.onnx.feeds: seeded from the name, or `inputs=` tiled along the batch axis).
- Interleaved timing: after warm-up each round runs every model once, A B, then
  B A, rotating who goes first, so drift (heat, frequency, other load) and
  cache order affect all models alike. Median and p90 of the per-run wall times.
- One session per (model, provider, batch). CUDA timings are `session.run` on
  host arrays, so they include the host/device copies of inputs and outputs.
- Memory: peak resident-set growth from creating the session and running warm-up
  (at least one run), less the input arrays, measured in a child forked before
  the timing sessions exist: every model starts from the same process state,
  with no other model's session alive, freed or counted in the high-water
  mark. Linux only (it relies on ru_maxrss starting at the current RSS after
  fork); None elsewhere and for CUDA, whose device memory RSS does not see.

Ratios against a baseline (`ratio_table`): speed-up = baseline median / median,
MACs ratio = MACs / baseline MACs, MACs reduction = baseline MACs / MACs, and
efficiency eta = speed-up / MACs reduction (1.0: latency falls as fast as MACs).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from graphprune.cost.onnx_macs import count_onnx_macs
from graphprune.errors import InputError, first_line
from graphprune.onnx.feeds import check_fillable, graph_inputs, make_feeds
from graphprune.onnx.files import onnx_size_bytes
from graphprune.onnx.memory import isolated_peak, release_freed_memory
from graphprune.onnx.sessions import PROVIDER_OPTIONS, available_providers, make_session

log = logging.getLogger(__name__)

# Options pinned per provider; a provider not listed runs with ORT's defaults.
@dataclass(frozen=True)
class BenchRow:
    """Latency of one model on one provider at one batch size."""

    model_index: int
    model: str
    provider: str
    batch: int
    median_ms: float
    p90_ms: float
    min_ms: float
    file_size_bytes: int
    peak_mem_bytes: int | None
    repeats: int
    macs: int | None = None  # counted from the ONNX graph at this batch (graphprune.cost.onnx_macs); None: unknown


@dataclass(frozen=True)
class BenchResult:
    """All rows, the models in the order given, and the settings they ran under."""

    rows: tuple[BenchRow, ...]
    models: tuple[str, ...]
    settings: dict = field(default_factory=dict)

    def row(self, model_index: int, provider: str, batch: int) -> BenchRow:
        for r in self.rows:
            if (r.model_index, r.provider, r.batch) == (model_index, provider, batch):
                return r
        raise KeyError((model_index, provider, batch))

    def to_dict(self) -> dict:
        """Plain JSON-ready data."""
        return {"models": list(self.models), "settings": dict(self.settings), "rows": [asdict(r) for r in self.rows]}


def _interleaved(sessions: list, feeds: list[dict], repeats: int) -> list[list[float]]:
    """Milliseconds per run; round r starts at model r mod n (A B, B A, ...)."""
    times: list[list[float]] = [[] for _ in sessions]
    count = len(sessions)
    for round_ in range(repeats):
        for k in range(count):
            i = (round_ + k) % count
            start = time.perf_counter_ns()
            sessions[i].run(None, feeds[i])
            times[i].append((time.perf_counter_ns() - start) / 1e6)
    return times


def _bench_group(paths: list[Path], sizes: list[int], provider: str, batch: int, opts: dict) -> list[BenchRow]:
    """Sessions for every model at one (provider, batch), warmed up, then timed interleaved."""
    release_freed_memory()
    memory = [isolated_peak(path, provider, batch, opts) for path in paths]
    sessions, feeds = [], []
    for path in paths:
        sess = make_session(path, provider, opts["threads"])
        feed = make_feeds(sess, path, batch, opts["inputs"])
        try:
            for _ in range(opts["warmup"]):
                sess.run(None, feed)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own types: the model or the inputs are wrong
            raise InputError(f"onnxruntime fails to run {path.name} at batch {batch} ({first_line(exc)}); "
                             "check the inputs (--example-input) match the model") from exc
        sessions.append(sess)
        feeds.append(feed)
    times = _interleaved(sessions, feeds, opts["repeats"])
    return [
        BenchRow(
            model_index=i,
            model=str(path),
            provider=provider,
            batch=batch,
            median_ms=float(np.median(t)),
            p90_ms=float(np.percentile(t, 90)),
            min_ms=float(np.min(t)),
            file_size_bytes=sizes[i],
            peak_mem_bytes=memory[i],
            repeats=len(t),
            macs=_macs(path, feeds[i], opts["macs"]),
        )
        for i, (path, t) in enumerate(zip(paths, times, strict=True))
    ]


def _macs(path: Path, feed: dict, cache: dict) -> int | None:
    """MACs of one run on `feed`, counted once per model and input shapes (every provider runs the same)."""
    shapes = {name: tuple(array.shape) for name, array in feed.items()}
    key = (path, tuple(sorted(shapes.items())))
    if key not in cache:
        cache[key] = count_onnx_macs(path, shapes)
    return cache[key]


def _check_request(paths: list[Path], batch_sizes: Sequence[int], providers: list[str], counts: dict) -> None:
    if not paths:
        raise InputError("bench needs at least one ONNX file")
    if missing := [str(p) for p in paths if not p.is_file()]:
        raise InputError(f"no such ONNX file: {', '.join(missing)}")
    if not batch_sizes or any(not isinstance(b, int) or b < 1 for b in batch_sizes):
        raise InputError(f"batch sizes must be positive integers, got {tuple(batch_sizes)}")
    if counts["repeats"] < 1 or counts["warmup"] < 0 or counts["threads"] < 1:
        raise InputError(
            f"need repeats >= 1, warmup >= 0 and threads >= 1, got {counts['repeats']}, {counts['warmup']}, {counts['threads']}"
        )
    available = available_providers()
    if unknown := [p for p in providers if p not in available]:
        raise InputError(f"providers {unknown} are not available here; available: {available}")
    for path in paths:
        check_fillable(path, counts["inputs"])
    if counts["inputs"]:
        known = set().union(*(graph_inputs(p) for p in paths))
        if unused := sorted(set(counts["inputs"]) - known):
            raise InputError(f"inputs {unused} match no model input; the models take {sorted(known)}")


def bench(
    paths: Sequence[str | Path],
    *,
    batch_sizes: Sequence[int] = (1, 32),
    providers: Sequence[str] | None = None,
    warmup: int = 5,
    repeats: int = 30,
    threads: int = 2,
    inputs: Mapping[str, np.ndarray] | None = None,
) -> BenchResult:
    """Time every model on every provider and batch size under the same pinned settings."""
    files = [Path(p) for p in paths]
    chosen = list(providers) if providers is not None else available_providers()
    counts = {"warmup": warmup, "repeats": repeats, "threads": threads}
    opts = {**counts, "inputs": inputs, "macs": {}}
    _check_request(files, batch_sizes, chosen, opts)
    sizes = [onnx_size_bytes(p) for p in files]
    rows = [row for provider in chosen for batch in batch_sizes for row in _bench_group(files, sizes, provider, batch, opts)]
    settings = {
        **counts,
        "inter_op_threads": 1,
        "execution_mode": "ORT_SEQUENTIAL",
        "graph_optimization_level": "ORT_ENABLE_ALL",
        "allow_spinning": False,
        "order": "interleaved, rotating start",
        "providers": chosen,
        "batch_sizes": list(batch_sizes),
        "provider_options": {p: PROVIDER_OPTIONS.get(p, {}) for p in chosen},
        "onnxruntime": ort.__version__,
    }
    return BenchResult(rows=tuple(rows), models=tuple(str(p) for p in files), settings=settings)



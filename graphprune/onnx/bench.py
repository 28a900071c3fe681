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

import contextlib
import ctypes
import gc
import logging
import multiprocessing
import os
import resource
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
import onnxruntime as ort
from rich import box
from rich.table import Table

from graphprune.cost.onnx_macs import count_onnx_macs
from graphprune.errors import InputError, first_line
from graphprune.onnx.feeds import check_fillable, graph_inputs, make_feeds
from graphprune.onnx.files import onnx_size_bytes

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
# Options pinned per provider; a provider not listed runs with ORT's defaults.
PROVIDER_OPTIONS: dict[str, dict[str, str]] = {
    CUDA: {"device_id": "0", "cudnn_conv_algo_search": "EXHAUSTIVE", "do_copy_in_default_stream": "1"},
}
# ru_maxrss restarts at the current RSS in a forked child on Linux; the memory column relies on it.
_CAN_FORK = sys.platform.startswith("linux")
_MEMORY_TIMEOUT_S = 300.0
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


def _gpu_present() -> bool:
    import torch  # imported here: only needed to see whether a GPU exists

    return torch.cuda.device_count() > 0


def available_providers() -> list[str]:
    """CPU always; CUDA when this onnxruntime build has it and a GPU is present."""
    found = [CPU]
    if CUDA in ort.get_available_providers() and _gpu_present():
        found.append(CUDA)
    return found


def session_options(threads: int) -> ort.SessionOptions:
    """The pinned options every benchmarked session gets."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


def make_session(path: Path, provider: str, threads: int) -> ort.InferenceSession:
    """A pinned session on `provider`; refuses ORT's silent fallback to another provider."""
    providers = [(provider, PROVIDER_OPTIONS.get(provider, {}))]
    try:
        sess = ort.InferenceSession(str(path), session_options(threads), providers=providers)
    except Exception as exc:  # noqa: BLE001 - ORT raises its own types: the file is the user's input
        raise InputError(f"onnxruntime cannot load {path.name} ({first_line(exc)}); check it with onnx.checker") from exc
    if sess.get_providers()[:1] != [provider]:
        raise InputError(
            f"onnxruntime ran {path.name} on {sess.get_providers()} instead of {provider}; "
            "check the provider's install (e.g. onnxruntime-gpu and CUDA libraries) or drop it from providers"
        )
    return sess


def _rss_bytes() -> int:
    """Current resident set size (Linux)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _release_freed_memory() -> None:
    """Return freed heap to the OS before forking, so children start lean (glibc only)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _peak_child(send: Connection, path: Path, provider: str, batch: int, opts: dict) -> None:
    """In a forked child: ru_maxrss starts at the current RSS, so peak - start is this model's growth."""
    try:
        start = _rss_bytes()
        sess = make_session(path, provider, opts["threads"])
        feed = make_feeds(sess, path, batch, opts["inputs"])
        for _ in range(max(1, opts["warmup"])):
            sess.run(None, feed)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        send.send(max(0, peak - start - sum(a.nbytes for a in feed.values())))
    except InputError as exc:  # the model or its inputs are unusable: the parent refuses them
        send.send(exc)
    except Exception as exc:  # noqa: BLE001 - sent to the parent, which reports it and times the model anyway
        send.send(f"{type(exc).__name__}: {exc}")


def _isolated_peak(path: Path, provider: str, batch: int, opts: dict) -> int | None:
    """Peak memory of one model on the CPU provider, measured in a forked child; None where not measurable."""
    if provider != CPU or not _CAN_FORK:
        return None
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_peak_child, args=(send, path, provider, batch, opts), daemon=True)
    child.start()
    send.close()
    answer: int | str | InputError = "no answer in time"
    with contextlib.suppress(EOFError):
        if receive.poll(_MEMORY_TIMEOUT_S):
            answer = receive.recv()
    child.join(5)
    if child.is_alive():
        child.kill()
    if isinstance(answer, int):
        return answer
    if isinstance(answer, InputError):  # the timed sessions would fail the same way: refuse now, one line
        raise answer
    log.warning("peak memory of %s at batch %d not measured: %s", path.name, batch, answer)
    return None


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
    _release_freed_memory()
    memory = [_isolated_peak(path, provider, batch, opts) for path in paths]
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


def ratio_table(result: BenchResult, baseline_index: int = 0, macs: Sequence[int] | None = None) -> list[dict]:
    """Per row: speed-up over the baseline model and, where MACs are known, MACs ratio and efficiency eta.

    `macs` (one count per model, e.g. from graphprune.cost.macs) wins over the counts the rows
    carry from the ONNX graphs; without either, the MACs fields are None.
    """
    count = len(result.models)
    if not 0 <= baseline_index < count:
        raise InputError(f"baseline_index {baseline_index} is out of range for {count} models")
    if macs is not None and (len(macs) != count or any(m <= 0 for m in macs)):
        raise InputError(f"macs needs one positive count per model ({count}), got {list(macs)}")
    table = []
    for row in result.rows:
        base = result.row(baseline_index, row.provider, row.batch)
        speedup = base.median_ms / row.median_ms
        entry = {
            "model": row.model,
            "provider": row.provider,
            "batch": row.batch,
            "median_ms": row.median_ms,
            "speedup": speedup,
            "size_ratio": row.file_size_bytes / base.file_size_bytes,
            "macs_ratio": None,
            "macs_reduction": None,
            "efficiency": None,
        }
        known = (macs[baseline_index], macs[row.model_index]) if macs is not None else (base.macs, row.macs)
        if all(known):
            reduction = known[0] / known[1]
            entry.update(macs_ratio=1.0 / reduction, macs_reduction=reduction, efficiency=speedup / reduction)
        table.append(entry)
    return table


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _ms(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.2f}" if value < 100 else f"{value:.1f}" if value < 1000 else f"{value:.0f}"


def display_names(paths: Sequence[str]) -> list[str]:
    """The shortest trailing part of each path (file name first) that tells the models apart,
    without the `.onnx` every one of them ends in."""
    parts = [Path(p).with_suffix("").parts if Path(p).suffix == ".onnx" else Path(p).parts for p in paths]
    for depth in range(1, max(len(p) for p in parts) + 1):
        names = [str(Path(*p[-depth:])) for p in parts]
        if len(set(names)) == len(set(paths)):
            return names
    return [str(p) for p in paths]


CAPTION = (
    "ms: median of {repeats} runs (p90 and min in --json). MB: file size. mem: peak MB of a session. "
    "MACs: ratio to the baseline. η: speed-up / MACs reduction (1: latency falls as fast as MACs)."
)


def render(result: BenchResult, macs: Sequence[int] | None = None, baseline_index: int = 0) -> Table:
    """A table of the rows and their ratios against the baseline model that reads at 80 columns:
    short headers explained in the caption, no vertical rules, long model names wrapped, the
    provider in the title when there is one."""
    names = display_names(result.models)
    providers = list(dict.fromkeys(r.provider.removesuffix("ExecutionProvider") for r in result.rows))
    repeats = result.rows[0].repeats if result.rows else 0
    where = f" on {providers[0]}" if len(providers) == 1 else ""
    table = Table(title=f"ONNX Runtime latency{where}, baseline {names[baseline_index]}", box=box.SIMPLE_HEAD,
                  pad_edge=False, caption=CAPTION.format(repeats=repeats), caption_justify="left")
    columns = ["batch", "ms", "MB", "mem", "speed", "MACs", "η"]
    table.add_column("model", overflow="fold", min_width=12, ratio=1)
    if len(providers) > 1:
        table.add_column("EP", no_wrap=True)
    for name in columns:
        table.add_column(name, justify="right", no_wrap=True)
    for row, ratio in zip(result.rows, ratio_table(result, baseline_index, macs), strict=True):
        mem = None if row.peak_mem_bytes is None else row.peak_mem_bytes / 1e6
        provider = [row.provider.removesuffix("ExecutionProvider")] if len(providers) > 1 else []
        table.add_row(
            names[row.model_index],
            *provider,
            str(row.batch),
            _ms(row.median_ms),
            f"{row.file_size_bytes / 1e6:.2f}",
            _fmt(mem, ".1f"),
            f"{ratio['speedup']:.2f}x",
            _fmt(ratio["macs_ratio"], ".3f"),
            _fmt(ratio["efficiency"], ".2f"),
        )
    return table

"""The latency oracle: real exported models timed in ONNX Runtime against the original.

Each measurement exports a configuration's model (graphprune.onnx.export.export_onnx, checked
against PyTorch in ONNX Runtime), opens a pinned session (graphprune.onnx.sessions.make_session) and
times it interleaved with the original's session at one batch size:

    round r:  original, candidate   (r even)     candidate, original   (r odd)
    ratio  = median over rounds of  t_candidate(r) / t_original(r)
    ms     = median of t_candidate

Pairing each run with an original run from the same moment cancels most drift and load of a
shared machine. Results are cached by (configuration key, batch): nothing is timed twice.
`MockOracle` answers from a function of the configuration, for tests.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from graphprune.errors import InputError
from graphprune.onnx.export import export_onnx
from graphprune.onnx.feeds import make_feeds
from graphprune.onnx.sessions import CPU, CUDA, available_providers, make_session
from graphprune.search.space import Config

log = logging.getLogger(__name__)
PROVIDERS = {"cpu": CPU, "cuda": CUDA}
# the search exports many models: TorchScript first (seconds for a ResNet-50, dynamo takes ~4x as long),
# unsimplified (ONNX Runtime's ORT_ENABLE_ALL folds what onnxsim would)
EXPORTERS = ("torchscript", "dynamo")
MIN_ROUNDS = 3
STEADY = 0.01
TABLE_MS = 50.0  # default table batch: the largest whose original run takes about this long


def physical_cores() -> int:
    """Cores, not hardware threads (/proc/cpuinfo's physical id and core id pairs); os.cpu_count() elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return os.cpu_count() or 1
    pairs, phys = set(), "0"
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "physical id":
            phys = value.strip()
        elif key.strip() == "core id":
            pairs.add((phys, value.strip()))
    return len(pairs) or os.cpu_count() or 1


def channel_block(provider: str) -> int:
    """Widths the provider runs fastest in multiples of: ONNX Runtime CPU's blocked (NCHWc) convolutions
    use 16 channels with AVX-512, else 8; 8 on CUDA (tensor-core friendly)."""
    if provider != "cpu":
        return 8
    try:
        flags = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")), "")
    except OSError:
        return 8
    return 16 if "avx512f" in flags.split() else 8


@dataclass(frozen=True)
class LatencySettings:
    provider: str = "cpu"  # 'cpu' or 'cuda'
    batch: int | None = None  # None: the example input's batch
    threads: int | None = None  # None: the machine's physical cores
    table_batch: int | None = None  # batch of the per-group table; None: the oracle's `table_batch` (about TABLE_MS)
    rounds: int = 64  # interleaved rounds (pairs) per measurement, at most (fewer once the median is steady)
    warmup: int = 1
    seconds: float = 30.0  # time per whole-model confirmation at the latency batch (at least MIN_ROUNDS pairs)
    table_seconds: float = 4.0  # time per table probe

    def resolved(self, example_batch: int) -> LatencySettings:
        if self.provider not in PROVIDERS:
            raise InputError(f"--provider {self.provider!r} is not one of {sorted(PROVIDERS)}")
        batch = self.batch or example_batch
        threads = self.threads or physical_cores()
        if batch < 1 or threads < 1 or self.rounds < 1 or self.warmup < 0:
            raise InputError(f"--latency-batch {batch} and --threads {threads} must be 1 or more")
        table = None if self.table_batch is None else min(self.table_batch, batch)
        return LatencySettings(self.provider, batch, threads, table, self.rounds, self.warmup, self.seconds,
                               self.table_seconds)


@dataclass(frozen=True)
class Measurement:
    ratio: float  # candidate / original, median of paired rounds
    ms: float  # candidate's median milliseconds
    base_ms: float  # the original's median milliseconds in the same rounds
    spread: float  # (p90 - p10) / 2 of the per-round ratios: the noise of `ratio`
    batch: int
    seconds: float  # wall time to export and time


class Oracle:
    """Interface: `measure(config, batch) -> Measurement` and `settings` (a dict for the report)."""

    settings: dict

    def measure(self, config: Config, batch: int) -> Measurement:
        raise NotImplementedError

    def table_batch(self, batch: int) -> int:
        """The default batch of the per-group table (at most `batch`, the latency batch)."""
        return 1


class MockOracle(Oracle):
    """Latency as a known function of the configuration (`fn(config) -> ratio`), for tests."""

    def __init__(self, fn: Callable[[Config], float], base_ms: float = 10.0):
        self.fn, self.base_ms, self.calls = fn, base_ms, []
        self.settings = {"provider": "mock", "batch": 1, "threads": 1, "table_batch": 1}

    def measure(self, config: Config, batch: int) -> Measurement:
        self.calls.append((config.key, batch))
        r = float(self.fn(config))
        return Measurement(r, r * self.base_ms, self.base_ms, 0.0, batch, 0.0)


def example_batch(args, kwargs) -> int:
    """dim 0 of the first tensor input (1 for inputs without a batch)."""
    import torch
    from torch.utils import _pytree as pytree

    first = next((t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor) and t.dim()), None)
    return int(first.shape[0]) if first is not None else 1


def take(tree, n: int, batch: int):
    """`tree` with every tensor whose dim 0 is the example's `batch` tiled or cut to n samples."""
    import torch
    from torch.utils import _pytree as pytree

    def fit(t):
        if not isinstance(t, torch.Tensor) or t.dim() == 0 or t.shape[0] != batch:
            return t
        return t[torch.arange(n) % batch]

    return pytree.tree_map(fit, tree)


def _paired(base, cand, rounds: int, warmup: int, seconds: float) -> tuple[list[float], list[float]]:
    """Interleaved pairs until the median ratio is steady (or `seconds` pass), MIN_ROUNDS to `rounds` of them.

    Steady: after 8 pairs, the interquartile range of the ratios over sqrt(pairs) is under STEADY.
    A loaded machine gets more pairs (up to `rounds`) where they are cheap, a big model fewer.
    """
    (bs, bf), (cs, cf) = base, cand
    for _ in range(warmup):
        cs.run(None, cf)
        bs.run(None, bf)
    tb, tc = [], []
    start = time.perf_counter()
    for r in range(rounds):
        for sess, feed, sink in ((bs, bf, tb), (cs, cf, tc)) if r % 2 == 0 else ((cs, cf, tc), (bs, bf, tb)):
            t0 = time.perf_counter_ns()
            sess.run(None, feed)
            sink.append((time.perf_counter_ns() - t0) / 1e6)
        n = r + 1
        if n < MIN_ROUNDS:
            continue
        ratios = np.asarray(tc) / np.asarray(tb)
        steady = n >= 8 and (np.percentile(ratios, 75) - np.percentile(ratios, 25)) / np.sqrt(n) < STEADY
        if steady or time.perf_counter() - start > seconds:
            break
    return tb, tc


class OrtOracle(Oracle):
    """Whole-model measurements of a SearchSpace's configurations in ONNX Runtime."""

    def __init__(self, space, settings: LatencySettings, build: Callable[[Config], object] | None = None):
        captured = space.graph.captured
        self.args, self.kwargs = captured.args, captured.kwargs
        self.build = build or space.build
        self.original = captured.module
        self.config = settings
        self.provider = PROVIDERS[settings.provider]
        if self.provider not in available_providers():
            raise InputError(f"--provider {settings.provider}: ONNX Runtime cannot use {self.provider} here "
                             f"(available: {available_providers()}); install the gpu extra on a machine with a GPU")
        self._dir = tempfile.TemporaryDirectory(prefix="graphprune-search-")
        self._cache: dict = {}
        self._base: dict = {}
        self._base_paths: dict = {}
        self._dynamic: bool | None = None
        self.example_batch = example_batch(self.args, self.kwargs)
        self.settings = {**asdict(settings), "execution_provider": self.provider}

    def _export(self, model, name: str, batch: int) -> Path:
        """Export traced on 2 samples (cheap); a model that cannot keep a dynamic batch is traced at `batch`."""
        path = Path(self._dir.name) / f"{name}.onnx"
        b0 = self.example_batch
        n = 2 if self._dynamic is not False else batch
        result = export_onnx(model, take(self.args, n, b0), take(self.kwargs, n, b0), path, simplify=False,
                             exporters=EXPORTERS)
        self._dynamic = result.dynamic_batch
        if not result.dynamic_batch and n != batch:
            export_onnx(model, take(self.args, batch, b0), take(self.kwargs, batch, b0), path, simplify=False,
                        exporters=EXPORTERS)
        return path

    def _session(self, path: Path, batch: int):
        sess = make_session(path, self.provider, self.config.threads)
        return sess, make_feeds(sess, path, batch)

    def measure(self, config: Config, batch: int) -> Measurement:
        return self.measure_model(None if config == Config() else lambda: self.build(config), config.key, batch)

    def table_batch(self, batch: int) -> int:
        """The largest batch (at most `batch`) whose run of the original takes about TABLE_MS, from the
        original's median time at `batch`: the table then sees what the latency batch sees (a batch of 1
        is mostly fixed overhead for a small model) while each probe stays cheap."""
        sess, feed = self._original(batch)
        sess.run(None, feed)  # warm-up
        times = []
        for _ in range(3):
            t0 = time.perf_counter_ns()
            sess.run(None, feed)
            times.append((time.perf_counter_ns() - t0) / 1e6)
        per_sample = float(np.median(times)) / batch
        return int(min(batch, max(1, TABLE_MS // max(per_sample, 1e-6))))

    def _original(self, batch: int):
        """The original's session and feeds at `batch`, exported once (a dynamic-batch export serves every batch)."""
        if batch not in self._base:
            reuse = self._dynamic and self._base_paths
            self._base_paths[batch] = next(iter(self._base_paths.values())) if reuse else \
                self._export(self.original, f"original-{batch}", batch)
            self._base[batch] = self._session(self._base_paths[batch], batch)
        return self._base[batch]

    def measure_model(self, make: Callable | None, key: str, batch: int) -> Measurement:
        """Time the model `make()` (the original when None) against the original; cached by (key, batch)."""
        key = (key, batch)
        if key in self._cache:
            return self._cache[key]
        start = time.perf_counter()
        base = self._original(batch)
        base_path = self._base_paths[batch]
        path = self._export(make(), f"c{len(self._cache)}", batch) if make is not None else base_path
        seconds = self.config.seconds if batch == self.config.batch else self.config.table_seconds
        tb, tc = _paired(base, self._session(path, batch), self.config.rounds, self.config.warmup, seconds)
        if path != base_path:
            for p in path.parent.glob(path.name + "*"):
                p.unlink()
        ratios = np.asarray(tc) / np.asarray(tb)
        spread = float(np.percentile(ratios, 90) - np.percentile(ratios, 10)) / 2
        m = Measurement(float(np.median(ratios)), float(np.median(tc)), float(np.median(tb)), spread, batch,
                        time.perf_counter() - start)
        log.info("measured %s at batch %d: ratio %.3f +- %.3f", key[0][:80], batch, m.ratio, m.spread)
        self._cache[key] = m
        return m

    def close(self) -> None:
        self._base.clear()
        self._dir.cleanup()

"""The ONNX Runtime latency oracle: real measurements are ratios against the original taken in the
same session and cached; settings default to the example's batch and the physical cores; the CUDA
execution provider is requested where asked (mocked here; a real run where a GPU is present)."""

from __future__ import annotations

import pytest
import torch

import graphprune
from graphprune.errors import InputError
from graphprune.onnx.sessions import CPU, CUDA, available_providers
from graphprune.search import Config, LatencySettings, OrtOracle, SearchSpace, make_budget, search
from graphprune.search import latency as latency_mod
from tests.search_models import Ladder


@pytest.fixture(scope="module")
def space():
    torch.manual_seed(0)
    return SearchSpace(graphprune.analyze(Ladder().eval(), torch.randn(3, 3, 12, 12)))


FAST = LatencySettings(threads=1, rounds=4, seconds=0.2, table_seconds=0.2)


def test_settings_default_to_the_example_batch_and_physical_cores():
    s = LatencySettings().resolved(example_batch=3)
    assert (s.provider, s.batch, s.threads, s.table_batch) == ("cpu", 3, latency_mod.physical_cores(), None)
    assert LatencySettings(batch=8, table_batch=16).resolved(3).table_batch == 8  # never above the latency batch
    with pytest.raises(InputError, match="--provider"):
        LatencySettings(provider="tpu").resolved(1)
    assert latency_mod.channel_block("cpu") in (8, 16)


def test_measurements_are_paired_ratios_and_cached(space):
    oracle = OrtOracle(space, FAST.resolved(3))
    knob = space.knobs[0]
    narrow = Config().narrowed(knob.name, knob.options[-1], knob.full)
    first = oracle.measure(narrow, 2)
    assert first.ratio > 0 and first.ms > 0 and first.base_ms > 0 and first.batch == 2
    assert oracle.measure(narrow, 2) is first
    assert oracle.measure(Config(), 2).ratio == pytest.approx(1.0, rel=0.5)  # the original against itself
    oracle.close()


def test_the_default_table_batch_follows_the_originals_time_per_sample(space, monkeypatch):
    """Unset, the table batch is the largest batch (at most the latency batch) whose original run takes
    about TABLE_MS: the whole batch for a model of microseconds, 1 when a single sample takes longer."""
    oracle = OrtOracle(space, FAST.resolved(3))
    assert oracle.table_batch(3) == 3
    monkeypatch.setattr(latency_mod, "TABLE_MS", 1e-6)
    assert oracle.table_batch(3) == 1
    oracle.close()


@pytest.mark.skipif(CUDA in available_providers(), reason="a GPU is present: the real CUDA test runs instead")
def test_cuda_without_a_gpu_is_refused_in_one_line(space):
    with pytest.raises(InputError, match="--provider cuda") as info:
        OrtOracle(space, LatencySettings(provider="cuda").resolved(3))
    assert "\n" not in str(info.value)


def test_cuda_provider_is_what_the_sessions_ask_for(space, monkeypatch):
    """Mocked GPU: the oracle requests CUDAExecutionProvider for every session it opens."""
    asked = []
    real = latency_mod.make_session

    def fake_session(path, provider, threads):
        asked.append(provider)
        return real(path, CPU, threads)  # run on the CPU: there is no GPU in CI

    monkeypatch.setattr(latency_mod, "available_providers", lambda: [CPU, CUDA])
    monkeypatch.setattr(latency_mod, "make_session", fake_session)
    settings = LatencySettings(provider="cuda", threads=1, rounds=3, seconds=0.1, table_seconds=0.1)
    plan, log = search(space.graph, make_budget(speedup=1.5), "uniform", latency=settings)
    assert asked and set(asked) == {CUDA}
    assert log.facts["latency_settings"]["execution_provider"] == CUDA
    assert log.facts["latency_settings"]["round_to"] == 8


@pytest.mark.skipif(CUDA not in available_providers(), reason="no GPU with onnxruntime-gpu here")
def test_cuda_search_on_a_real_gpu(space):
    settings = LatencySettings(provider="cuda", threads=1)
    _, log = search(space.graph, make_budget(speedup=1.2), "greedy", latency=settings)
    assert log.facts["latency_settings"]["execution_provider"] == CUDA
    assert log.facts["final"]["latency_ratio"] > 0

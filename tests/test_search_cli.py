"""`graphprune shrink --speedup / --target-latency`: the happy path with a mocked latency oracle
writes the model, a report that logs the search, and the plot, all at once and never over
existing files; bad budgets exit 2 with one line (fixtures/cli_cases.py holds those cases)."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from graphprune.cli import app
from graphprune.search import MockOracle, driver
from tests.search_models import Ladder, macs_latency


@pytest.fixture
def mocked_oracle(monkeypatch):
    """Every search in the test measures with a known function of the widths, not ONNX Runtime."""
    made = []

    def oracle(space, settings):
        made.append(MockOracle(macs_latency(space)))
        made[-1].settings = {"provider": "mock", "execution_provider": "mock"}
        return made[-1]

    monkeypatch.setattr(driver, "OrtOracle", oracle)
    return made


def test_shrink_with_a_speedup_writes_model_report_and_plot(tmp_path, mocked_oracle):
    torch.manual_seed(0)
    torch.save(Ladder().eval(), tmp_path / "m.pt")
    argv = ["shrink", str(tmp_path / "m.pt"), "--input-shape", "2,3,12,12", "--speedup", "1.5", "--search", "greedy"]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "m.pruned.json").read_text())
    search = report["search"]
    assert search["strategy"] == "greedy" and search["final"]["budget_met"]
    assert search["final"]["latency_ratio"] <= 1 / 1.5
    assert search["tried"] and all("widths" in e["config"] for e in search["tried"])
    assert (tmp_path / "m.pruned.search.png").read_bytes()[:4] == b"\x89PNG"
    pruned = torch.load(tmp_path / "m.pruned.pt", weights_only=False)
    widths = {d["group"]: d["width_after"] for d in report["decisions"]}
    assert widths == {**widths, **search["chosen"]["widths"]}
    assert pruned(torch.randn(2, 3, 12, 12)).shape == (2, 10)
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    again = CliRunner().invoke(app, argv)  # the outputs exist: refused without --force, nothing touched
    assert again.exit_code == 2 and "--force" in again.output
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before


@pytest.mark.parametrize("given", [None, 4])
def test_a_given_round_to_sets_the_search_quantum(tmp_path, mocked_oracle, given):
    """--round-to N makes the search move widths in multiples of N; without it, the provider's channel block."""
    from graphprune.search.latency import channel_block

    torch.manual_seed(0)
    torch.save(Ladder().eval(), tmp_path / "m.pt")
    argv = ["shrink", str(tmp_path / "m.pt"), "--input-shape", "2,3,12,12", "--speedup", "1.5"]
    result = CliRunner().invoke(app, argv + ([] if given is None else ["--round-to", str(given)]))
    assert result.exit_code == 0, result.output
    search = json.loads((tmp_path / "m.pruned.json").read_text())["search"]
    quantum = channel_block("cpu") if given is None else given
    assert search["latency_settings"]["round_to"] == quantum
    tried = {w for e in search["tried"] for w in e["config"]["widths"].values()}
    assert tried and all(w % quantum == 0 for w in tried)
    if given is not None:
        assert any(w % 8 for w in tried), "a quantum of 4 never took a width off the multiples of 8"


def test_search_blocks_offers_the_blocks_the_model_has(tmp_path, mocked_oracle):
    from tests.search_models import Residual

    torch.save(Residual().eval(), tmp_path / "r.pt")
    argv = ["shrink", str(tmp_path / "r.pt"), "--input-shape", "2,3,10,10", "--speedup", "1.5", "--search-blocks"]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.output
    search = json.loads((tmp_path / "r.pruned.json").read_text())["search"]
    assert len(search["blocks"]) == 2 and search["final"]["budget_met"]
    assert any(e["config"]["blocks"] for e in search["tried"]), "no block removal was tried"


def test_search_finetune_epochs_tunes_every_scored_candidate(tmp_path, mocked_oracle, monkeypatch):
    import numpy as np

    import graphprune.recovery as recovery

    real, calls = recovery.finetune, []

    def counting(model, data, **kwargs):
        calls.append(kwargs["options"].epochs)
        return real(model, data, **kwargs)

    monkeypatch.setattr(recovery, "finetune", counting)
    torch.manual_seed(0)
    torch.save(Ladder().eval(), tmp_path / "m.pt")
    np.savez(tmp_path / "d.npz", x=np.random.rand(32, 3, 12, 12).astype("float32"), y=np.arange(32) % 10)
    base = ["shrink", str(tmp_path / "m.pt"), "--input-shape", "2,3,12,12", "--speedup", "1.5"]
    no_data = CliRunner().invoke(app, [*base, "--search-finetune-epochs", "1"])
    assert no_data.exit_code == 2 and "--data" in no_data.output
    no_budget = CliRunner().invoke(app, [*base[:4], "--search-blocks"])
    assert no_budget.exit_code == 2 and "--speedup" in no_budget.output
    result = CliRunner().invoke(app, [*base, "--data", str(tmp_path / "d.npz"), "--search-finetune-epochs", "1"])
    assert result.exit_code == 0, result.output
    search = json.loads((tmp_path / "m.pruned.json").read_text())["search"]
    assert calls and set(calls) == {1} and len(calls) >= search["evaluated"] - 1  # the original needs no tuning

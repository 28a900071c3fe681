"""`graphprune bench` and `shrink --bench` on the inputs users have, with tables that read at 80 columns.

* Token models (2-D integer inputs with a symbolic sequence) bench with the example input
  (`shrink --onnx --bench`, `bench --example-input`), tiled to each batch size.
* MACs are counted from the ONNX graph and agree with graphprune.cost.macs's count in PyTorch;
  the table fills MACs and η from them.
* At 80 columns no cell is cut ("mv2.…"), the MACs and η columns are filled.
"""

from __future__ import annotations

import functools
import json

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

import graphprune.onnx.bench as bench_mod
from fixtures.archs import build
from fixtures.cli_cases import make_files
from graphprune.cli import app
from graphprune.cost.macs import count_macs
from graphprune.cost.onnx_macs import count_onnx_macs
from graphprune.onnx.bench import BenchResult, BenchRow
from graphprune.onnx.bench_table import render
from graphprune.onnx.export import export_onnx
from graphprune.onnx.sessions import CPU
from models.text_classifier import TextClassifier
from models.text_classifier import example as text_example

FAST = {"repeats": 2, "warmup": 1}


def small_text() -> TextClassifier:
    """The reference text classifier at a size that exports in seconds (one layer, width 32)."""
    return TextClassifier(vocab=1000, max_len=32, d_model=32, heads=2, ff=64, layers=1).eval()


@pytest.fixture
def fast_bench(monkeypatch):
    """shrink --bench with two timed runs per model at batches 1 and 3 (the numbers are not checked)."""
    monkeypatch.setattr(bench_mod, "bench", functools.partial(bench_mod.bench, batch_sizes=(1, 3), **FAST))


def test_bench_json_has_counted_macs_and_force_replaces_it(tmp_path):
    files = make_files(tmp_path)
    argv = ["bench", str(files / "m.onnx"), "-b", "1", "-b", "4", "--repeats", "2", "--warmup", "0",
            "--json", str(files / "r.json")]
    assert CliRunner().invoke(app, argv).exit_code == 0
    rows = json.loads((files / "r.json").read_text())["rows"]
    assert [(r["batch"], r["macs"]) for r in rows] == [(1, 16 * 8), (4, 4 * 16 * 8)]  # y = x @ W, W is 16 x 8
    (files / "r.json").write_text("old")
    assert CliRunner().invoke(app, argv).exit_code == 2 and (files / "r.json").read_text() == "old"
    assert CliRunner().invoke(app, [*argv, "--force"]).exit_code == 0
    assert json.loads((files / "r.json").read_text())["rows"][0]["macs"] == 16 * 8


def test_token_model_shrinks_with_onnx_and_bench_then_benches_with_its_example(tmp_path, fast_bench):
    torch.save(small_text(), tmp_path / "text.pt")
    torch.save(text_example(1, 16), tmp_path / "ex.pt")
    result = CliRunner().invoke(app, ["shrink", str(tmp_path / "text.pt"), "--example-input", str(tmp_path / "ex.pt"),
                                      "--ratio", "0.3", "--onnx", "--bench"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "text.pruned.json").read_text())
    rows = report["onnx"]["bench"]["rows"]
    assert report["onnx"]["bench"]["models"][1] == str(tmp_path / "text.pruned.onnx")  # the file kept, not the staged one
    assert sorted((r["model_index"], r["batch"]) for r in rows) == [(0, 1), (0, 3), (1, 1), (1, 3)]
    pruned_at_1 = next(r["macs"] for r in rows if (r["model_index"], r["batch"]) == (1, 1))
    assert pruned_at_1 == report["macs_after"] < report["macs_before"]

    argv = ["bench", str(tmp_path / "text.pruned.onnx"), "--example-input", str(tmp_path / "ex.pt"), "-b", "2",
            "--repeats", "2", "--json", str(tmp_path / "bench.json")]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.output
    (row,) = json.loads((tmp_path / "bench.json").read_text())["rows"]
    assert row["batch"] == 2 and row["macs"] == 2 * report["macs_after"]  # two rows of the example: twice the MACs


@pytest.mark.parametrize("kind", ["cnn", "transformer"])
def test_onnx_macs_match_pytorch(kind, tmp_path):
    model, args, kwargs = (build(), (torch.randn(2, 3, 8, 8),), {}) if kind == "cnn" else (small_text(), (), text_example(2, 10))
    result = export_onnx(model, args, kwargs, tmp_path / "m.onnx")
    shapes = {n: tuple(t.shape) for n, t in zip(result.input_names, [*args, *kwargs.values()], strict=True)}
    captured = torch.export.export(model, args, kwargs).module()  # eager fast paths hide MACs from the counter
    assert count_onnx_macs(result.path, shapes) == count_macs(captured, args, kwargs) > 0


def test_uncounted_ops_make_macs_unknown(tmp_path):
    model = torch.nn.LSTM(4, 8, batch_first=True).eval()
    result = export_onnx(model, (torch.randn(2, 5, 4),), {}, tmp_path / "lstm.onnx", exporters=("torchscript",))
    assert count_onnx_macs(result.path, {"input_0": (2, 5, 4)}) is None


def _result(names: list[str], macs: list[int | None]) -> BenchResult:
    rows = tuple(
        BenchRow(i, name, CPU, batch, 10.0 / (i + 1), 11.0, 9.0, 13_900_000, 68_700_000, 30,
                 None if m is None else m * batch)
        for batch in (1, 32) for i, (name, m) in enumerate(zip(names, macs, strict=True))
    )
    return BenchResult(rows=rows, models=tuple(names))


def _text(table, width: int = 80) -> str:
    console = Console(width=width, record=True)
    console.print(table)
    return console.export_text()


def _model_cells(text: str) -> list[str]:
    """The model column of a rendered table, a cell wrapped over lines put back together."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if "────" in line) + 1
    cells: list[str] = []
    for line in lines[start:]:
        words = line.split()
        if not words:  # the end of the body
            break
        if len(words) == 1:  # the rest of a wrapped name
            cells[-1] += words[0]
        else:
            cells.append(words[0])
    return cells


def test_table_reads_at_80_columns():
    names = ["out/mobilenet_v2.onnx", "out/mobilenet_v2.pruned.onnx", "other/mobilenet_v2.pruned.onnx"]
    text = _text(render(_result(names, [300, 100, 150])))
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80
    assert set(_model_cells(text)) == {"out/mobilenet_v2", "out/mobilenet_v2.pruned", "other/mobilenet_v2.pruned"}
    for header in ("batch", "ms", "MB", "mem", "speed", "MACs", "η"):
        assert header in text
    assert "0.333" in text and "1.50" in text  # MACs ratio of the 2nd model; eta = 2x faster / 3x fewer MACs


def test_table_leaves_macs_empty_only_when_unknown():
    text = _text(render(_result(["a.onnx", "b.onnx"], [300, None])))
    row = next(line for line in text.splitlines() if line.split()[:1] == ["b"])
    assert row.split()[-2:] == ["-", "-"]
    given = _text(render(_result(["a.onnx", "b.onnx"], [300, None]), macs=[300, 100]))
    assert "0.333" in given


def test_bench_command_prints_a_table_that_fits_80_columns(tmp_path):
    files = make_files(tmp_path)
    argv = ["bench", str(files / "m.onnx"), str(files / "m.onnx"), "-b", "2", "--repeats", "2", "--warmup", "0"]
    result = CliRunner().invoke(app, argv, env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "…" not in result.output and max(len(line) for line in result.output.splitlines()) <= 80
    assert "1.000" in result.output  # the MACs column, counted from the graph

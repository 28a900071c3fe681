"""Interrupt safety: a write cut short (Ctrl-C, a crash, a full disk) leaves no partial or
temporary file behind, and never replaces an existing output with a broken one.

Each test replaces `torch.save` (or `Path.write_text`) by a writer that puts the first bytes
into graphprune's temporary file and then raises, as a Ctrl-C or a full disk would half way
through a real write. Writes to other paths go through unchanged.
"""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from fixtures.archs import build
from fixtures.cli_cases import SHAPE
from graphprune.cli import app
from graphprune.io import files as io

FAILURES = {
    "keyboard_interrupt": KeyboardInterrupt(),
    "crash": RuntimeError("simulated crash in the middle of a write"),
    "disk_full": OSError(errno.ENOSPC, "No space left on device"),
}
REPORT_FIRST = (
    "cli.shrink writes the model, then the report, each atomic on its own: a failure in the "
    "report write leaves the new model in place"
)
ONNX_FIRST = "cli.shrink writes the .onnx file before the model and does not remove it when the model write fails"


def _temp(path) -> bool:
    return Path(path).name.endswith(".tmp")  # io.atomic_path's temporary files


@pytest.fixture
def cut_short(monkeypatch):
    """`cut_short(step, failure)`: make the next write of `step` ('model' or 'report') into a
    temporary file write half its bytes and raise FAILURES[failure]; returns the paths it cut."""
    cut: list[Path] = []
    real_save, real_write_text = torch.save, Path.write_text

    def arm(step: str, failure: str) -> list[Path]:
        exc = FAILURES[failure]

        def save(obj, f, *args, **kwargs):
            if not _temp(f):
                return real_save(obj, f, *args, **kwargs)
            cut.append(Path(f))
            Path(f).write_bytes(b"PK\x03\x04 the first bytes of a zip")
            raise exc

        def write_text(self, data, *args, **kwargs):
            if not _temp(self):
                return real_write_text(self, data, *args, **kwargs)
            cut.append(self)
            real_write_text(self, data[: len(data) // 2])
            raise exc

        if step == "model":
            monkeypatch.setattr(torch, "save", save)
        else:
            monkeypatch.setattr(Path, "write_text", write_text)
        return cut

    return arm


@pytest.fixture
def folder(tmp_path):
    torch.manual_seed(0)
    torch.save(build(), tmp_path / "m.pt")
    return tmp_path


def names(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def shrink(folder: Path, *extra: str):
    return CliRunner().invoke(app, ["shrink", str(folder / "m.pt"), *SHAPE, *extra])


@pytest.mark.parametrize("failure", ["keyboard_interrupt", "crash"])
def test_save_model_cut_short_leaves_no_file(failure, tmp_path, cut_short):
    """Rule: io.save_model interrupted or crashing half way through the write leaves neither
    the output nor its temporary file in the folder, and lets the exception through."""
    model = build()
    cut = cut_short("model", failure)
    with pytest.raises(type(FAILURES[failure])):
        io.save_model(model, tmp_path / "out.pt")
    assert len(cut) == 1 and cut[0].parent == tmp_path  # the bytes went into the folder itself
    assert names(tmp_path) == []


@pytest.mark.parametrize("failure", ["keyboard_interrupt", "crash"])
def test_save_text_cut_short_leaves_no_file(failure, tmp_path, cut_short):
    """Rule: the same for io.save_text (the JSON report)."""
    cut = cut_short("report", failure)
    with pytest.raises(type(FAILURES[failure])):
        io.save_text('{"params_before": 1}', tmp_path / "out.json")
    assert len(cut) == 1 and cut[0].parent == tmp_path
    assert names(tmp_path) == []


@pytest.mark.parametrize(
    ("step", "extra"),
    [
        pytest.param("model", (), id="model"),
        pytest.param("report", (), id="report"),
        pytest.param("model", ("--onnx",), id="model_with_onnx"),
    ],
)
def test_shrink_interrupted_while_saving_exits_130_and_writes_nothing(step, extra, folder, cut_short):
    """Rule: Ctrl-C during the save step of `graphprune shrink` exits 130 with one
    'interrupted' error line and leaves only the input: no pruned model, no JSON report,
    no ONNX file, no temporary file."""
    cut = cut_short(step, "keyboard_interrupt")
    result = shrink(folder, *extra)
    assert cut, "the save step was not reached"
    assert result.exit_code == 130, result.output
    assert [line for line in result.output.splitlines() if line.startswith("error:")] == [
        "error: interrupted; nothing was written"
    ]
    assert names(folder) == ["m.pt"]


@pytest.mark.parametrize(
    ("step", "failure"),
    [
        ("model", "keyboard_interrupt"),
        ("model", "disk_full"),
        pytest.param("report", "disk_full"),
    ],
)
def test_force_run_failing_mid_write_keeps_the_old_outputs(step, failure, folder, cut_short):
    """Rule: when a `--force` run fails half way through writing, the outputs it was to
    replace still hold their old bytes, and no temporary file is left."""
    out, report = folder / "out.pt", folder / "out.json"
    out.write_bytes(b"the previous pruned model")
    report.write_text('{"previous": "report"}')
    cut = cut_short(step, failure)
    result = shrink(folder, "-o", str(out), "--force")
    assert cut, "the save step was not reached"
    assert result.exit_code != 0, result.output
    assert out.read_bytes() == b"the previous pruned model"
    assert report.read_text() == '{"previous": "report"}'
    assert names(folder) == ["m.pt", "out.json", "out.pt"]

"""The passes over calibration data in `shrink` (graphprune.data.progress): every stage that reads
data is counted and timed, reads at most `calib_batches` batches per pass, and is drawn as a bar on a
terminal (nothing when stderr is not one)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from rich.console import Console
from torch import nn

import graphprune
from graphprune.data import Data, load_data
from graphprune.data.options import CalibrationOptions
from graphprune.data.progress import Stages
from graphprune.plan.types import PlanOptions
from graphprune.recovery.progress import StageBar


class _Counted(Stages):
    """Records each counted stage's total and the units ticked in it."""

    def __init__(self):
        super().__init__()
        self.totals, self.ticked, self.current = {}, {}, None

    def begin(self, name, total, text):
        self.current = name
        self.totals[name] = self.totals.get(name, 0) + total

    def advance(self, n=1):
        self.ticked[self.current] = self.ticked.get(self.current, 0) + n


class _Reads(Data):
    """Data that records how many batches each pass read."""

    def __init__(self, data: Data):
        super().__init__(data._source, data.signature, data.batch_size, data.description)
        self.passes: list[int] = []

    def batches(self, limit=None, shuffle=False, seed=0):
        self.passes.append(0)
        for b in super().batches(limit, shuffle, seed):
            self.passes[-1] += 1
            yield b


def _model():
    torch.manual_seed(5)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1),
                         nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5)).eval()


@pytest.fixture
def passes(monkeypatch) -> list[int]:
    """Batches read by each pass over any slice of any data source (held-out slices included)."""
    from graphprune.data.sources import Samples

    seen: list[int] = []
    batches = Samples.batches

    def counted(self, *args, **kwargs):
        seen.append(0)
        for b in batches(self, *args, **kwargs):
            seen[-1] += 1
            yield b

    monkeypatch.setattr(Samples, "batches", counted)
    return seen


@pytest.fixture
def data(tmp_path):
    x = torch.randn(48, 3, 8, 8, generator=torch.Generator().manual_seed(6))
    np.savez(tmp_path / "x.npz", x=x.numpy())
    return _Reads(load_data(str(tmp_path / "x.npz"), x[:1], batch_size=8))  # 6 batches


def test_every_data_stage_counted_bounded_and_timed(data, passes):
    stages = _Counted()
    _, report = graphprune.shrink(_model(), torch.randn(2, 3, 8, 8), plan=PlanOptions(criterion="taylor", target_macs=0.5),
                                  data=data, calibration=CalibrationOptions(batches=2), progress=stages)
    assert {"score", "allocate", "refit", "recalibrate"} <= set(stages.totals)
    assert stages.ticked == stages.totals  # every unit announced is done, no more
    assert stages.totals["score"] == 2 and stages.totals["recalibrate"] == 2
    assert stages.totals["refit"] == 2 * len(report.reconstruction)
    assert passes and max(passes) <= 2  # --calib-batches bounds every pass, held-out slices included
    for name in ("allocate", "refit", "recalibrate"):
        assert report.seconds[name] > 0
    assert report.seconds["total"] >= sum(v for k, v in report.seconds.items() if k != "total")


def test_no_data_no_counted_stage():
    stages = _Counted()
    _, report = graphprune.shrink(_model(), torch.randn(2, 3, 8, 8), plan=PlanOptions(ratio=0.5), progress=stages)
    assert stages.totals == {} and not {"allocate", "refit", "recalibrate"} & set(report.seconds)


@pytest.mark.parametrize("terminal", [True, False])
def test_stage_bar_drawn_only_on_a_terminal(terminal):
    out = io.StringIO()
    bar = StageBar(Console(file=out, force_terminal=terminal, width=100))
    with bar.stage("refit", 3, "refitting 3 layers") as tick:
        for _ in range(3):
            tick()
    text = out.getvalue()
    assert ("refitting 3 layers" in text and "3/3" in text) if terminal else text == ""
    assert bar.seconds["refit"] >= 0


def test_kept_reads_the_calibration_batches_once(data):
    from graphprune.data import Kept

    kept = Kept(data, 2)
    first = [b.args[0] for b in kept.batches(limit=2)]
    again = [b.args[0] for b in kept.batches(limit=1)]
    assert data.passes == [2]  # read once, served twice
    assert torch.equal(first[0], again[0]) and first[0] is not again[0]  # copies: writes do not carry over
    first[0].zero_()
    assert not torch.equal(next(kept.batches(limit=1)).args[0], first[0])
    assert len(list(kept.batches(limit=3))) == 3 and data.passes == [2, 3]  # past the limit: read from the data
    assert kept.has_labels is False and len(kept) == 6


def test_nested_stage_timed_not_drawn_and_prefixed_steps():
    from graphprune.data.progress import within

    outer = _Counted()
    said = []
    outer.say = said.append
    inner = within(outer, "step 1 of 2: ")
    with inner.stage("allocate", 4, "allocation") as tick:
        with inner.stage("recalibrate", 2) as inner_tick:
            inner_tick(2)  # not the outer stage's units
        tick(4)
    assert outer.totals == {"allocate": 4} and outer.ticked == {"allocate": 4}
    assert said == ["step 1 of 2: allocation"]
    assert set(inner.seconds) == {"allocate", "recalibrate"} and outer.seconds == {}


def test_block_ranking_counted_and_bounded(data, passes):
    from graphprune.depth.options import DepthOptions
    from tests.depth_archs import TinyResNet

    stages = _Counted()
    torch.manual_seed(7)
    _, report = graphprune.shrink(TinyResNet().eval(), torch.randn(2, 3, 8, 8), plan=PlanOptions(ratio=0.0), data=data,
                                  calibration=CalibrationOptions(batches=2), depth=DepthOptions(blocks=1), progress=stages)
    assert len(report.blocks) == 1 and stages.ticked["blocks"] == stages.totals["blocks"]
    assert stages.totals["blocks"] % 2 == 0 and stages.totals["blocks"] >= 2 * 3  # (1 + blocks found) runs of 2 batches
    assert passes and max(passes) <= 2 and report.seconds["blocks"] > 0

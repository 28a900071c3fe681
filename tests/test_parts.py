"""Models torch.export cannot capture whole are pruned part by part (graphprune.pipeline.parts).

The toy detector below branches on a tensor value (so the whole model does not capture),
calls one head on two feature sizes, and hands a plain object (not a pytree) to a module
whose own child does capture: the walk must go one level down there.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from conftest import randomize
from torch.utils import _pytree as pytree

import graphprune
from graphprune.cost.macs import count_macs
from graphprune.pipeline import parts


class Boxes:
    """Not a pytree container: a module called with one cannot be captured."""

    def __init__(self, t: torch.Tensor) -> None:
        self.t = t


class Picker(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8))

    def forward(self, boxes: Boxes) -> torch.Tensor:
        return self.proj(boxes.t)


def _block(cin: int, cout: int) -> torch.nn.Sequential:
    return torch.nn.Sequential(torch.nn.Conv2d(cin, cout, 3, padding=1), torch.nn.BatchNorm2d(cout), torch.nn.ReLU())


class Detector(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = torch.nn.Sequential(_block(3, 32), _block(32, 48), _block(48, 16))
        self.head = torch.nn.Sequential(_block(16, 64), torch.nn.Conv2d(64, 16, 1))
        self.picker = Picker()

    def forward(self, x: torch.Tensor) -> dict:
        f = self.backbone(x)
        levels = [self.head(f), self.head(F.max_pool2d(f, 2))]
        if levels[0].sum() > levels[1].sum():  # data-dependent: the whole model does not capture
            levels = levels[::-1]
        pooled = levels[0].mean(dim=(2, 3))
        scores = self.picker(Boxes(pooled))
        return {"scores": scores, "kept": scores[scores > 0], "levels": levels}


def _detector() -> Detector:
    return randomize(Detector()).eval()


def _structure(a, b) -> bool:
    la, sa = pytree.tree_flatten(a)
    lb, sb = pytree.tree_flatten(b)
    return str(sa) == str(sb) and all(x.dtype == y.dtype and x.dim() == y.dim() for x, y in zip(la, lb, strict=True))


def test_whole_capture_fails_so_parts_are_pruned_and_named():
    model, x = _detector(), torch.randn(2, 3, 32, 32)
    before = copy.deepcopy(model.state_dict())
    pruned, report = graphprune.shrink(model, x, 0.5)
    notes = {p.path: p for p in report.parts}
    assert notes["backbone"].pruned and notes["head"].pruned and notes["picker.proj"].pruned
    assert not notes["picker"].pruned and "not captured" in notes["picker"].note
    assert "called 2 times" in notes["head"].note
    assert "data-dependent" in report.whole_capture
    assert report.macs_after < report.macs_before and report.params_after < report.params_before
    assert report.macs_after == count_macs(pruned, (x,))  # counted on the original's data path, which is this one
    assert all(d.group.split(": ")[0] in notes for d in report.decisions)
    with torch.no_grad():
        assert _structure(model(x), pruned(x))
        assert _structure(model(torch.randn(3, 3, 40, 40)), pruned(torch.randn(3, 3, 40, 40)))  # other sizes
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert not model.training and isinstance(pruned.picker, Picker)  # uncaptured code stays the user's


def test_ratio_zero_changes_nothing():
    model, x = _detector(), torch.randn(2, 3, 32, 32)
    pruned, report = graphprune.shrink(model, x, 0.0)
    assert not any(p.pruned for p in report.parts)
    with torch.no_grad():
        ref, got = pytree.tree_leaves(model(x)), pytree.tree_leaves(pruned(x))
    assert all(torch.equal(a, b) for a, b in zip(ref, got, strict=True))


def test_each_part_passes_the_dead_channel_oracle(monkeypatch):
    checked = []
    real = parts.dead_channel_check
    monkeypatch.setattr(parts, "dead_channel_check", lambda plan, **kw: checked.append(real(plan, **kw)))
    graphprune.shrink(_detector(), torch.randn(2, 3, 32, 32), 0.5)
    assert len(checked) == 3  # backbone, head, picker.proj


def test_a_part_that_fails_its_check_is_left_as_it_was(monkeypatch):
    real = parts.dead_channel_check

    def broken_backbone(plan, **kwargs):
        if any(p.shape == (32, 3, 3, 3) for p in plan.graph.captured.module.parameters()):  # the backbone
            raise graphprune.errors.VerificationError("output 0 changed by up to 1")
        return real(plan, **kwargs)

    monkeypatch.setattr(parts, "dead_channel_check", broken_backbone)
    model, x = _detector(), torch.randn(2, 3, 32, 32)
    pruned, report = graphprune.shrink(model, x, 0.5)
    notes = {p.path: p for p in report.parts}
    assert not notes["backbone"].pruned and "failed a check" in notes["backbone"].note
    assert notes["head"].pruned
    assert all(torch.equal(a, b) for a, b in zip(pruned.backbone.state_dict().values(),
                                                  model.backbone.state_dict().values(), strict=True))


def test_nothing_prunable_in_any_part_is_still_refused():
    class Gate(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return y.relu() if y.sum() > 0 else -y

    with pytest.raises(graphprune.errors.TraceError, match="no part of it could be pruned"):
        graphprune.shrink(Gate().eval(), torch.randn(1, 3, 8, 8), 0.5)


@pytest.mark.parametrize("name", [
    "fasterrcnn_mobilenet_v3_large_320_fpn",
    pytest.param("ssdlite320_mobilenet_v3_large", marks=pytest.mark.slow),  # 30 s on 2 cores
])
def test_torchvision_detection(name):
    model = getattr(torchvision.models.detection, name)(weights=None, weights_backbone=None).eval()
    images = [torch.rand(3, 160, 160)]
    pruned, report = graphprune.shrink(model, (images,), 0.4)
    assert "backbone" in {p.path for p in report.parts if p.pruned}
    assert report.macs_after < 0.8 * report.macs_before
    with torch.no_grad():
        assert _structure(model(images), pruned(images))


def test_cli_shrinks_a_model_in_parts(tmp_path):
    import json

    from typer.testing import CliRunner

    from graphprune.cli import app

    torch.save(_detector(), tmp_path / "det.pt")
    result = CliRunner().invoke(app, ["shrink", str(tmp_path / "det.pt"), "--input-shape", "2,3,32,32", "-r", "0.5"])
    assert result.exit_code == 0, result.output
    assert "does not capture" in result.output and "picker.proj" in result.output
    report = json.loads((tmp_path / "det.pruned.json").read_text())
    assert {p["path"] for p in report["parts"] if p["pruned"]} == {"backbone", "head", "picker.proj"}
    pruned = torch.load(tmp_path / "det.pruned.pt", weights_only=False)
    with torch.no_grad():
        assert _structure(_detector()(torch.randn(2, 3, 32, 32)), pruned(torch.randn(2, 3, 32, 32)))


def test_a_module_shared_under_two_names_is_one_part():
    model = _detector()
    model.picker.head = model.head  # one module, two names at different depths
    pruned, report = graphprune.shrink(model, torch.randn(2, 3, 32, 32), 0.5)
    notes = {p.path: p for p in report.parts}
    assert notes["head"].pruned and notes["picker.head"].note == "the same module as head"
    assert pruned.head is pruned.picker.head and not isinstance(pruned.head, torch.nn.Sequential)

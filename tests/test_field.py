"""The models people prune in the field (issue 19): the op patterns that broke, and a CI-sized slice
of the field families of scripts/coverage_field.py (the full sweep is in docs/COVERAGE.md)."""

from __future__ import annotations

import pytest
import torch

import graphprune
from graphprune.cost.macs import count_macs


class _TokenBlock(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(8, 8)

    def forward(self, x: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.cat([token, x], dim=1))


class _ClassToken(torch.nn.Module):
    """PiT/CaiT pattern: a parameter expanded to the batch and handed to a submodule as an argument."""

    def __init__(self) -> None:
        super().__init__()
        self.token = torch.nn.Parameter(torch.randn(1, 1, 8))
        self.block = _TokenBlock()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x, self.token.expand(x.shape[0], -1, -1))


def test_macs_count_a_parameter_view_passed_to_a_submodule():
    """torch's FlopCounterMode attributes FLOPs to modules through autograd hooks on their inputs,
    which fail on a view of a parameter taken under no_grad; count_macs reads totals only."""
    model = _ClassToken()
    x = torch.randn(2, 5, 8)
    assert count_macs(model, (x,)) == 2 * 6 * 8 * 8  # one Linear over 2 x 6 tokens


def test_pruned_class_token_model_reports_macs():
    """shrink counts the pruned model's MACs, whose graph calls the block with the expanded token."""
    torch.manual_seed(0)
    model = _ClassTokenNet()
    pruned, report = graphprune.shrink(model, torch.randn(1, 5, 16), 0.5)
    assert 0 < report.macs_ratio < 1
    assert pruned(torch.randn(3, 5, 16)).shape == (3, 10)


class _Blocks(torch.nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.up, self.down = torch.nn.Linear(width, 4 * width), torch.nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
        h = torch.cat([token, x], dim=1)
        return h + self.down(torch.relu(self.up(h)))


class _ClassTokenNet(torch.nn.Module):
    """Embedding, a block called with the tokens and the expanded class token, head on the class token."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = torch.nn.Linear(16, 32)
        self.token = torch.nn.Parameter(torch.randn(1, 1, 32))
        self.blocks = _Blocks(32)
        self.head = torch.nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.inp(x), self.token.expand(x.shape[0], -1, -1))
        return self.head(h[:, 0])


# -- the CI-sized slice of scripts/coverage_field.py ------------------------------------------------


def _pruned_checked(model: torch.nn.Module, example, ratio: float = 0.4):
    """shrink with zero configuration: the pruned model passed the dead-channel oracle, removed
    MACs, and gives the original's output structure and shapes."""
    from torch.utils import _pytree as pytree

    pruned, report = graphprune.shrink(model, example, ratio)
    assert "dead channels" in [c["check"] for c in report.checks]
    assert report.macs_ratio < 0.75
    call = (lambda m: m(**example)) if isinstance(example, dict) else (lambda m: m(example))
    with torch.no_grad():
        want, got = pytree.tree_flatten(call(model)), pytree.tree_flatten(call(pruned))
    assert str(want[1]) == str(got[1])
    assert [t.shape for t in want[0] if isinstance(t, torch.Tensor)] == [t.shape for t in got[0] if isinstance(t, torch.Tensor)]
    return pruned, report


def _ultralytics(cfg: str, size: int):
    from scripts.coverage_field import _ultralytics as build  # sets the offline and settings-dir env first

    pytest.importorskip("ultralytics")

    model, _ = build(cfg)
    return model, torch.rand(1, 3, size, size)


@pytest.fixture(scope="module")
def yolov8n_pruned():
    """YOLOv8n (C2f: a chunk whose halves feed a concat, then a bottleneck chain) at ratio 0.4."""
    model, x = _ultralytics("yolov8n", 160)
    pruned, report = _pruned_checked(model, x)
    return pruned, report, x


def test_yolov8n_detect_prunes(yolov8n_pruned):
    _, report, _ = yolov8n_pruned
    assert report.macs_ratio < 0.5  # zero configuration reaches the ratio on the whole network


@pytest.mark.slow
def test_yolov8n_detect_exports(yolov8n_pruned, tmp_path):
    from graphprune.onnx.export import export_onnx

    pruned, _, x = yolov8n_pruned
    res = export_onnx(pruned, (x,), {}, tmp_path / "m.onnx", exporters=("dynamo",))
    assert res.max_abs_error <= 1e-3 * max(1.0, res.output_scale)


@pytest.mark.slow
@pytest.mark.parametrize("cfg", ["yolo11n-seg", "yolov8n-pose", "yolov10n"])
def test_yolo_tasks_prune(cfg):
    _pruned_checked(*_ultralytics(cfg, 160))


def test_diffusers_unet_prunes():
    """A UNet2DModel: GroupNorm, timestep embedding broadcast over H and W, attention, skip concats."""
    pytest.importorskip("diffusers")
    from scripts.coverage_field import unet2d

    _pruned_checked(*unet2d(block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8))


def test_openclip_text_tower_prunes():
    """OpenCLIP's text tower: causal attention, pooling at the end-of-text token found by argmax."""
    pytest.importorskip("open_clip")
    from scripts.coverage_field import openclip_tower

    cfg = {"context_length": 16, "vocab_size": 1000, "width": 64, "heads": 4, "layers": 2}
    pruned, report = _pruned_checked(*openclip_tower("ViT-B-32", "text", text_cfg=cfg))
    # its causal mask is a [16, 16] buffer: export pins the length, and the report and model say so
    assert report.dynamic_batch and not report.dynamic_sequence
    with pytest.raises(RuntimeError, match=r"Expected: \[2, 16\], Got: \[2, 8\]"):
        pruned(torch.randint(0, 1000, (2, 8)))


class _QuerySelect(torch.nn.Module):
    """RT-DETR's query selection: score every position, keep the top k, gather their features.

    The scores come through a prunable hidden layer and are nearly tied (inputs equal up to 1e-6),
    so the rounding of a pruned sum reorders them."""

    def __init__(self) -> None:
        super().__init__()
        self.score1, self.score2 = torch.nn.Linear(8, 64), torch.nn.Linear(64, 1)
        self.feat, self.head = torch.nn.Linear(8, 16), torch.nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.score2(torch.relu(self.score1(x[..., :8]))).squeeze(-1)
        f = self.feat(x[..., 8:])
        idx = s.topk(50, dim=1).indices
        return self.head(torch.gather(f, 1, idx[..., None].expand(-1, -1, f.shape[-1])))


def _near_ties() -> torch.Tensor:
    x = torch.randn(1, 400, 16)
    x[..., :8] = torch.randn(1, 1, 8) + 1e-6 * torch.randn(1, 400, 8)
    return x


def test_dead_channel_check_follows_the_reference_selection_among_ties():
    """Pruning the score layer's dead channels reorders near-ties in topk; the oracle checks the
    values topk picks and then gathers what the reference gathered, so the prune is accepted."""
    torch.manual_seed(0)
    pruned, report = graphprune.shrink(_QuerySelect().eval(), _near_ties(), 0.5)
    assert "dead channels" in [c["check"] for c in report.checks]
    assert pruned.score1.weight.shape[0] < 64


def test_selection_that_picks_other_values_fails_the_check():
    """Following the reference's choice hides nothing upstream: scores that changed fail at the topk."""
    from graphprune.check.selections import Pinned
    from graphprune.errors import VerificationError

    torch.manual_seed(0)
    model, x = _QuerySelect().eval(), _near_ties()
    plan = graphprune.plan(graphprune.analyze(model, x), ratio=0.0)
    gm = plan.graph.captured.module
    first = Pinned(gm)
    first.outputs((x,), {})
    assert first.picks  # the topk was recorded
    shifted = {"score2.bias": model.score2.bias.detach() + 1.0}
    with pytest.raises(VerificationError, match="topk"):
        Pinned(gm, tensors=shifted, recorded=first.picks, plan=plan).outputs((x,), {})

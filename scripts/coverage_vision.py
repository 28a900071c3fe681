"""The `vision` suite of scripts/coverage.py: detection, optical flow and video models.

torch.export cannot capture the detection models whole (NMS and proposal filtering are
data-dependent), so graphprune prunes their capturable parts (graphprune.pipeline.parts); RAFT and
the video models capture whole. Each row: `graphprune.shrink` at --ratio with default
options, then the pruned model runs on the example with the original output structure
(pytree, dtypes, ranks: how many boxes survive NMS is data-dependent), MACs and params,
`torch.save`/`torch.load` round trip, and ONNX parity where the original exports.
"""

from __future__ import annotations

import io
import tempfile
import time
from pathlib import Path

import torch
import torchvision
from torch.utils import _pytree as pytree

import graphprune

DETECTION = [
    "fasterrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn_v2", "fasterrcnn_mobilenet_v3_large_fpn",
    "fasterrcnn_mobilenet_v3_large_320_fpn", "maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2",
    "keypointrcnn_resnet50_fpn", "retinanet_resnet50_fpn", "retinanet_resnet50_fpn_v2", "fcos_resnet50_fpn",
    "ssd300_vgg16", "ssdlite320_mobilenet_v3_large",
]
FLOW = ["raft_small", "raft_large"]
VIDEO = ["swin3d_t", "mvit_v2_s"]
VISION = DETECTION + FLOW + VIDEO
SMALL = {"min_size": 320, "max_size": 320}  # R-CNN, RetinaNet and FCOS resize to 800 by default
FIXED_SIZE = ("ssd300_vgg16", "ssdlite320_mobilenet_v3_large", "fasterrcnn_mobilenet_v3_large_320_fpn")
SETUP = ("batch 1; detection: one 3x224x224 image, resized by the model's own transform to 320 "
         "(`min_size=max_size=320` for the models that default to 800; SSD300/SSDlite320 and the 320 R-CNN at "
         "their own sizes), 91 classes; RAFT: two 3x128x128 images; swin3d_t: 3x8x112x112 clips; "
         "mvit_v2_s: 3x16x224x224 clips (its position tables fix the size)")


def build(name: str):
    """(model in eval mode, example as a tuple of positional inputs)."""
    torch.manual_seed(0)
    if name in DETECTION:
        kwargs = {} if name in FIXED_SIZE else SMALL
        factory = getattr(torchvision.models.detection, name)
        return factory(weights=None, weights_backbone=None, **kwargs).eval(), ([torch.rand(3, 224, 224)],)
    if name in FLOW:
        model = getattr(torchvision.models.optical_flow, name)(weights=None).eval()
        return model, (torch.rand(1, 3, 128, 128), torch.rand(1, 3, 128, 128))
    size = (8, 112, 112) if name == "swin3d_t" else (16, 224, 224)
    return getattr(torchvision.models.video, name)(weights=None).eval(), (torch.randn(1, 3, *size),)


def _run(model, example):
    with torch.no_grad():
        return model(*example)


def same_structure(a, b) -> bool:
    la, sa = pytree.tree_flatten(a)
    lb, sb = pytree.tree_flatten(b)
    if str(sa) != str(sb):
        return False
    return all(not isinstance(x, torch.Tensor) or (x.dtype == y.dtype and x.dim() == y.dim()) for x, y in zip(la, lb, strict=True))


def _equal(a, b) -> bool:
    la, lb = pytree.tree_leaves(a), pytree.tree_leaves(b)
    return len(la) == len(lb) and all(
        not isinstance(x, torch.Tensor) or (x.shape == y.shape and torch.allclose(x, y)) for x, y in zip(la, lb, strict=True))


def _onnx(model, pruned, example) -> str:
    from graphprune.onnx.export import export_onnx

    with tempfile.TemporaryDirectory() as tmp:
        try:
            export_onnx(model, example, {}, Path(tmp) / "original.onnx", exporters=("dynamo",))
        except graphprune.GraphPruneError as exc:
            return f"original does not export ({str(exc)[:60]}...)"
        try:
            res = export_onnx(pruned, example, {}, Path(tmp) / "m.onnx", exporters=("dynamo",))
        except graphprune.GraphPruneError as exc:
            return f"FAILED: {str(exc)[:100]}"
        return f"{res.max_abs_error / max(1.0, res.output_scale):.1e} of scale {res.output_scale:.2g} ({res.exporter})"


def check(name: str, ratio: float, onnx: bool) -> dict:
    model, example = build(name)
    reference = _run(model, example)
    t0 = time.perf_counter()
    pruned, report = graphprune.shrink(model, example, ratio)
    seconds = time.perf_counter() - t0
    got = _run(pruned, example)
    buf = io.BytesIO()
    torch.save(pruned, buf)
    buf.seek(0)
    row = {
        "model": name, "ok": same_structure(reference, got) and report.macs_ratio < 1.0,
        "macs": report.macs_ratio, "params": report.params_ratio, "seconds": seconds,
        "parts": f"{sum(p.pruned for p in report.parts)} of {len(report.parts)}" if report.parts else "whole",
        "reload": _equal(_run(torch.load(buf, weights_only=False), example), got),
        "unknown": len(report.unknown_ops),
    }
    if onnx and report.parts:  # the dynamo exporter starts from torch.export, which refused the whole model
        row["onnx"] = "original does not export (torch.export cannot capture it)"
    elif onnx:
        row["onnx"] = _onnx(model, pruned, example)
    return row


def markdown(rows: list[dict], argv: list[str], ratio: float) -> str:
    lines = [
        "## detection, optical flow and video models",
        "",
        "Produced by:",
        "",
        "```",
        "python -m " + " ".join(["scripts.coverage", *argv]),
        "```",
        "",
        f"graphprune {graphprune.__version__}, torch {torch.__version__}, torchvision {torchvision.__version__}, CPU. "
        f"Random-init weights (`weights=None, weights_backbone=None`), {SETUP}, `--ratio {ratio}`, default options, "
        "zero per-model configuration.",
        "",
        "Columns: *runs* = the pruned model runs on the example and returns the original output structure "
        "(pytree, dtypes, ranks; the number of detections is data-dependent) with fewer MACs; *parts* = "
        "submodules pruned of those tried when torch.export cannot capture the whole model (detection: "
        "NMS and proposal filtering), *whole* when it can; *MACs* and *params* = pruned / original; *reload* = "
        "`torch.save` then `torch.load` gives equal outputs; *ONNX* = max abs error of ONNX Runtime against "
        "PyTorch divided by max(1, output scale), run only where the original model exports (dynamo); "
        "*no rule* = ops frozen for lack of a rule.",
        "",
        "| model | runs | parts | MACs | params | reload | ONNX parity | no rule | prune time (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | FAILED: {r['error']} | | | | | | | |")
            continue
        lines.append(
            f"| {r['model']} | {'yes' if r['ok'] else 'NO'} | {r['parts']} | {r['macs']:.3f} | {r['params']:.3f} | "
            f"{'yes' if r['reload'] else 'NO'} | {r.get('onnx', 'not run')} | {r['unknown']} | {r['seconds']:.1f} |"
        )
    return "\n".join(lines) + "\n"

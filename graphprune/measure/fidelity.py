"""Fidelity: how closely a pruned model answers like the original, on data it was not pruned on.

The compared output is the first floating-point tensor of each model's output (a classifier's
logits, an encoder's last hidden state). Its kind decides the figures (each a mean over samples):

    class scores, y [N, C], C > 1:  agreement = mean 1[argmax s = argmax t]
                                    kl        = KL(softmax(t) || softmax(s))
    embeddings,   y [N, L, D]:     cosine    = cos(e_s, e_t), e = mean over the attention mask's
                                                tokens (graphprune.measure.objective.embedding)
    anything else:                 rel_error = |s - t|^2 / |t|^2   (per sample, flattened)
                                    cosine    = cos(flatten(s), flatten(t))
    with labels (class scores):    accuracy of both models, macro F1 of both

`Fidelity.loss` is the one figure decisions compare (lower is better): kl for class scores,
1 - cosine for embeddings, rel_error otherwise. `Teacher` caches the original's outputs on a slice,
so a pipeline that measures many candidates runs the original once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from graphprune.measure.objective import embedding, first_tensor


@dataclass(frozen=True)
class Fidelity:
    kind: str  # 'class scores', 'embeddings' or 'outputs'
    samples: int
    loss: float  # what decisions compare, lower is better (see `measure`)
    measure: str  # what `loss` is: 'kl', '1 - cosine', 'relative error'
    agreement: float | None = None  # top-1 agreement with the original
    kl: float | None = None
    cosine: float | None = None
    rel_error: float | None = None
    accuracy: tuple | None = None  # (original, pruned), with labels
    f1: tuple | None = None  # macro F1 (original, pruned), with labels

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def kind_of(y: torch.Tensor) -> str:
    if y.dim() == 2 and y.shape[1] > 1:
        return "class scores"
    return "embeddings" if y.dim() == 3 else "outputs"


@torch.no_grad()
def run(model: torch.nn.Module, batch) -> torch.Tensor:
    return first_tensor(model(*batch.args, **batch.kwargs)).detach().float()


class Teacher:
    """The original's outputs on a list of batches (a held-out slice), computed once."""

    def __init__(self, original: torch.nn.Module, data, limit: int | None = None):
        self.batches = list(data.batches(limit=limit))
        was = original.training
        original.eval()
        try:
            self.outputs = [run(original, b) for b in self.batches]
        finally:
            original.train(was)
        self.description = getattr(data, "description", "")
        where = getattr(data, "indices", None)  # the measured samples' positions in the user's file, to check by
        self.indices = None if where is None else [int(i) for i in where[:self.samples]]

    @property
    def samples(self) -> int:
        return sum(b.size for b in self.batches)

    def measure(self, model: torch.nn.Module) -> Fidelity:
        """Fidelity of `model` (run in eval mode, its mode restored) to the original on these batches."""
        was = model.training
        model.eval()
        try:
            return _compare([run(model, b) for b in self.batches], self.outputs, self.batches)
        finally:
            model.train(was)


def _compare(student: list, teacher: list, batches: list) -> Fidelity:
    s, t = torch.cat([x.reshape(len(x), *x.shape[1:]) for x in student]), torch.cat(teacher)
    kind, n = kind_of(t), len(t)
    if kind == "class scores":
        log_s, log_t = F.log_softmax(s, -1), F.log_softmax(t, -1)
        kl = float((log_t.exp() * (log_t - log_s)).sum(-1).mean())
        agreement = float((s.argmax(-1) == t.argmax(-1)).float().mean())
        labels = [b.labels for b in batches]
        acc = f1 = None
        if all(lab is not None for lab in labels):
            y = torch.cat(labels)
            acc = (_accuracy(t, y), _accuracy(s, y))
            f1 = (_macro_f1(t.argmax(-1), y, t.shape[1]), _macro_f1(s.argmax(-1), y, t.shape[1]))
        return Fidelity(kind, n, kl, "kl", agreement=agreement, kl=kl, accuracy=acc, f1=f1)
    if kind == "embeddings":
        es = torch.cat([embedding(x, b.kwargs) for x, b in zip(student, batches, strict=True)])
        et = torch.cat([embedding(x, b.kwargs) for x, b in zip(teacher, batches, strict=True)])
        cos = float(F.cosine_similarity(es, et, dim=-1).mean())
        return Fidelity(kind, n, 1.0 - cos, "1 - cosine", cosine=cos)
    fs, ft = s.reshape(n, -1), t.reshape(n, -1)
    rel = float(((fs - ft).pow(2).sum(1) / ft.pow(2).sum(1).clamp_min(1e-30)).mean())
    cos = float(F.cosine_similarity(fs, ft, dim=-1).mean())
    return Fidelity(kind, n, rel, "relative error", cosine=cos, rel_error=rel)


def _accuracy(scores: torch.Tensor, labels: torch.Tensor) -> float:
    return float((scores.argmax(-1) == labels).float().mean())


def _macro_f1(pred: torch.Tensor, labels: torch.Tensor, classes: int) -> float:
    """Mean F1 over the classes present in the labels or the predictions."""
    f1s = []
    for c in torch.unique(torch.cat([pred, labels])).tolist():
        tp = float(((pred == c) & (labels == c)).sum())
        fp, fn = float(((pred == c) & (labels != c)).sum()), float(((pred != c) & (labels == c)).sum())
        f1s.append(2 * tp / max(2 * tp + fp + fn, 1e-12))
    return sum(f1s) / max(len(f1s), 1)


def on_example(original_out, pruned_out) -> dict:
    """How far outputs moved on the example input: cosine of the flattened first outputs, and KL
    with top-1 agreement when they are class scores."""
    s, t = first_tensor(pruned_out).detach().float(), first_tensor(original_out).detach().float()
    n = len(t) if t.dim() > 1 else 1
    out = {"cosine": float(F.cosine_similarity(s.reshape(n, -1), t.reshape(n, -1), dim=-1).mean())}
    if kind_of(t) == "class scores":
        log_s, log_t = F.log_softmax(s, -1), F.log_softmax(t, -1)
        out["kl"] = float((log_t.exp() * (log_t - log_s)).sum(-1).mean())
        out["agreement"] = float((s.argmax(-1) == t.argmax(-1)).float().mean())
    return out

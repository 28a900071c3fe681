"""The training objective and the validation metric, chosen from the data and the teacher.

Which output is compared: the first floating-point tensor of the model's output pytree (a
classifier's logits; a Hugging Face encoder's `last_hidden_state`). Its *embedding* is

    e = y                                    for y of shape [N, D]
    e = sum_l m[n, l] y[n, l] / sum_l m[n, l]  for y of shape [N, L, D], m = the batch's attention_mask
                                             (all ones when the batch has none): mean pooling
    e = flatten(y, 1)                        otherwise

Losses (each a mean over the batch's samples):

    ce      = cross_entropy(s, labels)
    kl      = T^2 KL(softmax(t / T) || softmax(s / T)), over the last dim (class scores)
    cosine  = 1 - cos(e_s, e_t)                  (+ for [N, L, D]: the masked mean over tokens of
                                                1 - cos(s[n, l], t[n, l]): every token is a target,
                                                which a few sentences need to generalise)
    mse     = |e_s - e_t|^2 / D                  (+ for [N, L, D]: the same per token)

With labels: ce, or (1 - w) ce + w distill with a teacher. Without labels: distill alone.
'auto' distillation is kl with labels or for [N, C] outputs, and cosine for anything else (pass 'cosine' or
'mse' for an encoder whose output is already a pooled [N, D] embedding).

Validation metric (higher is better): accuracy with labels; without, top-1 agreement with
the teacher (kl) or the mean cosine of the embeddings (cosine, mse).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils import _pytree as pytree

from graphprune.errors import InputError


def first_tensor(output: Any) -> torch.Tensor:
    for leaf in pytree.tree_flatten(output)[0]:
        if isinstance(leaf, torch.Tensor) and leaf.is_floating_point():
            return leaf
    raise InputError("the model's output has no floating-point tensor to train on; return logits or embeddings")


def _mask(y: torch.Tensor, kwargs: dict) -> torch.Tensor:
    """[N, L] weights of a [N, L, D] output's tokens: the batch's attention_mask, else ones."""
    mask = kwargs.get("attention_mask")
    if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != tuple(y.shape[:2]):
        return torch.ones(y.shape[:2], device=y.device, dtype=y.dtype)
    return mask.to(y.dtype)


def embedding(y: torch.Tensor, kwargs: dict) -> torch.Tensor:
    if y.dim() == 2:
        return y
    if y.dim() == 3:
        m = _mask(y, kwargs).unsqueeze(-1)
        return (y * m).sum(1) / m.sum(1).clamp_min(1e-9)
    return y.flatten(1)


def _distance(kind: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-row distance over the last dim: 1 - cosine, or the mean squared error."""
    if kind == "cosine":
        return 1.0 - F.cosine_similarity(a, b, dim=-1)
    return (a - b).pow(2).mean(-1)


def _kl(s: torch.Tensor, t: torch.Tensor, temperature: float) -> torch.Tensor:
    c = s.shape[-1]
    log_s = F.log_softmax(s.reshape(-1, c) / temperature, dim=-1)
    log_t = F.log_softmax(t.reshape(-1, c) / temperature, dim=-1)
    return F.kl_div(log_s, log_t, log_target=True, reduction="batchmean") * temperature**2


@dataclass(frozen=True)
class Objective:
    labels: bool  # cross-entropy on the batch's labels
    distill: str | None  # 'kl', 'cosine', 'mse', or None (no teacher)
    weight: float  # weight of the distillation term when both are present
    temperature: float

    @property
    def metric(self) -> str:
        if self.labels:
            return "accuracy"
        return "top-1 agreement" if self.distill == "kl" else "cosine to teacher"

    def _distill(self, s: torch.Tensor, t: torch.Tensor, kwargs: dict) -> torch.Tensor:
        if self.distill == "kl":
            return _kl(s, t, self.temperature)
        pooled = _distance(self.distill, embedding(s, kwargs), embedding(t, kwargs))
        if s.dim() != 3:
            return pooled.mean()
        m = _mask(s, kwargs)
        tokens = (_distance(self.distill, s, t) * m).sum(1) / m.sum(1).clamp_min(1e-9)
        return (pooled + tokens).mean()

    def loss(self, student: Any, teacher: Any, batch) -> torch.Tensor:
        s = first_tensor(student)
        if self.labels and self.distill is None:
            return F.cross_entropy(s, batch.labels)
        d = self._distill(s, first_tensor(teacher).detach(), batch.kwargs)
        if not self.labels:
            return d
        return (1.0 - self.weight) * F.cross_entropy(s, batch.labels) + self.weight * d

    @torch.no_grad()
    def score(self, student: Any, teacher: Any, batch) -> tuple[float, int]:
        """(sum of the metric over the batch's samples, number of samples)."""
        s = first_tensor(student)
        if self.labels:
            return float((s.argmax(-1) == batch.labels).sum()), len(batch.labels)
        t = first_tensor(teacher)
        if self.distill == "kl":
            agree = (s.argmax(-1) == t.argmax(-1)).float().reshape(len(s), -1).mean(1)
            return float(agree.sum()), len(s)
        cos = F.cosine_similarity(embedding(s, batch.kwargs), embedding(t, batch.kwargs), dim=-1)
        return float(cos.sum()), len(s)


def choose(has_labels: bool, has_teacher: bool, output: Any, distill: str, weight: float,
           temperature: float) -> Objective:
    """The objective for this data and teacher; `output` is the student's output on one batch."""
    if not has_labels and not has_teacher:
        raise InputError("the data has no labels, so fine-tuning needs a teacher to distil from; pass --teacher ORIGINAL")
    if not has_teacher:
        return Objective(True, None, 0.0, temperature)
    y = first_tensor(output)
    kind = distill if distill != "auto" else ("kl" if has_labels or y.dim() == 2 else "cosine")
    return Objective(has_labels, kind, weight, temperature)

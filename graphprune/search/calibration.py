"""Calibration loss and metric of a candidate model, on fixed batches.

With labelled --data: loss = cross-entropy, metric = top-1 accuracy. Otherwise (unlabelled data,
or no data: random inputs shaped like the example, seeded) the candidate is compared with the
original's outputs on the same inputs; per output tensor

    logits-like ([N, C], C > 1, float):  KL(softmax(original / T) || softmax(candidate / T)), batch mean,
                                         T = the original's logit standard deviation (so random-init
                                         models, whose logits are tiny, still rank candidates)
    anything else (embeddings, maps):     mean squared error / mean square of the original

summed over outputs, and metric = -loss (0 for the original itself). `drop` is always
metric(original) - metric(candidate): accuracy points lost, or the loss gained.

With `recalibrate` (and --data), a pruned candidate's BatchNorm statistics are re-estimated on the
calibration batches before it is scored (graphprune.rewrite.recalibrate), as shrink re-estimates the chosen
model's: candidates are ranked as they will be delivered, not with statistics the pruning made stale.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils import _pytree as pytree

from graphprune.search.latency import example_batch, take


@dataclass(frozen=True)
class Score:
    loss: float
    metric: float


def _tensors(out) -> list[torch.Tensor]:
    return [t.float() for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor) and t.is_floating_point()]


def _random_batches(args, kwargs, samples: int, seed: int) -> list:
    gen = torch.Generator().manual_seed(seed)
    b0 = example_batch(args, kwargs)

    def fresh(t):
        if isinstance(t, torch.Tensor) and t.is_floating_point():
            return torch.randn(t.shape, generator=gen, dtype=t.dtype)
        return t

    args, kwargs = take(args, samples, b0), take(kwargs, samples, b0)
    return [(pytree.tree_map(fresh, args), pytree.tree_map(fresh, kwargs), None)]


class Calibration:
    """The batches, the original's outputs on them, and how a candidate is scored."""

    def __init__(self, original: torch.nn.Module, args: tuple, kwargs: dict, data=None, batches: int = 16,
                 random_samples: int = 4, seed: int = 0, recalibrate: bool = False):
        self.recalibrates = recalibrate and data is not None
        self._data, self._limit = data, batches
        if data is not None:
            self.batches = [(b.args, b.kwargs, b.labels) for b in data.batches(limit=batches)]
            labelled = data.has_labels
            n = sum(example_batch(a, k) for a, k, _ in self.batches)
            self.description = (f"{'cross-entropy and accuracy on labels' if labelled else 'distance to the original'}"
                                f" on {n} samples of {data.description}"
                                + (", BatchNorm statistics (if any) re-estimated on them" if self.recalibrates else ""))
        else:
            self.batches = _random_batches(args, kwargs, random_samples, seed)
            labelled = False
            self.description = (f"distance to the original's outputs (KL on logits scaled by their std, relative MSE "
                                f"otherwise) on "
                                f"{random_samples} random inputs shaped like the example (no --data)")
        self.labelled = labelled
        self.reference = [self._run(original, a, k) for a, k, _ in self.batches]
        self.baseline = self.score(original)

    @staticmethod
    @torch.no_grad()
    def _run(model, args, kwargs) -> list[torch.Tensor]:
        return _tensors(model(*args, **kwargs))

    def score(self, model: torch.nn.Module, pruned: bool = False) -> Score:
        """Loss and metric of `model`; a `pruned` one first has its statistics re-estimated when recalibrating
        (in place: pass a model whose statistics are the search's own, see SearchSpace.evaluating)."""
        if pruned and self.recalibrates:
            from graphprune.rewrite.recalibrate import recalibrate

            recalibrate(model, self._data, limit=self._limit)
        total, correct, count = 0.0, 0, 0
        for (args, kwargs, labels), ref in zip(self.batches, self.reference, strict=True):
            out = self._run(model, args, kwargs)
            if self.labelled and labels is not None:
                total += float(F.cross_entropy(out[0], labels, reduction="sum"))
                correct += int((out[0].argmax(-1) == labels).sum())
            else:
                total += _distance(ref, out) * example_batch(args, kwargs)
            count += example_batch(args, kwargs)
        loss = total / max(count, 1)
        return Score(loss, correct / max(count, 1) if self.labelled else -loss)

    def drop(self, score: Score) -> float:
        return self.baseline.metric - score.metric


def _distance(ref: list[torch.Tensor], out: list[torch.Tensor]) -> float:
    total = 0.0
    for r, o in zip(ref, out, strict=True):
        if r.dim() == 2 and r.shape[1] > 1:
            t = float(r.std()) or 1.0
            total += float(F.kl_div(F.log_softmax(o / t, -1), F.log_softmax(r / t, -1), log_target=True,
                                    reduction="batchmean"))
        else:
            total += float(((o - r) ** 2).mean() / ((r**2).mean() + 1e-12))
    return total

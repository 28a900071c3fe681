"""What data criteria share: the calibration batches, the loss their gradients come from, and notes.

The loss (`loss_of`), chosen once per batch and named in the report:

* labels given: cross-entropy of the model's class scores against them;
* no labels, a causal LM (an output with `logits` [N, L, V] for `input_ids` [N, L]): the next-token
  cross-entropy on the text itself, masked by `attention_mask`;
* no labels, class scores (a floating [N, C] output, C > 1): cross-entropy against the model's own
  top-1 predictions (the original is being scored, so a loss against its exact outputs would have
  zero gradient);
* `fisher` on class scores, always: cross-entropy against labels drawn from the model's own softmax,
  so that its squared gradients estimate the true Fisher information E_{y~p(y|x)}[g^2]. The data's
  labels would give the empirical Fisher, which vanishes on the many samples a trained model
  already fits (measured: docs/BENCHMARKS.md, "Criteria design");
* no labels, other outputs (embeddings, feature maps): L = <y, r> / N with a fresh Gaussian r per
  batch. Its gradient is a random projection J^T r of the output Jacobian, so E[(dL/dw)^2] is the
  diagonal of J^T J: the expected change of the squared output error, label-free.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch.utils import _pytree as pytree

from graphprune.errors import InputError

LOSSES = {
    "labels": "cross-entropy on the data's labels",
    "pseudo": "cross-entropy on the model's own top-1 predictions (no labels)",
    "projection": "random projections of the outputs (no labels; Fisher/Taylor of the output change)",
    "sampled": "cross-entropy on labels drawn from the model's own predictions (the true Fisher)",
    "next-token": "next-token cross-entropy of a causal LM on the text (no labels)",
}


@dataclass
class Calibration:
    """Calibration data for criteria; caches what several criteria share (gradients, activations)."""

    data: object = None  # graphprune.data.Data
    limit: int | None = 16  # batches used
    seed: int = 0
    grad_batch: int | None = None  # samples per gradient (graphprune.importance.gradient); None: whole batches
    notes: list = field(default_factory=list)
    loss: str = ""  # key of LOSSES, set once gradients are taken
    cache: dict = field(default_factory=dict)
    tick: object = None  # called after each batch a criterion reads (graphprune.data.progress)

    def batches(self):
        for batch in self.data.batches(limit=self.limit):
            yield batch
            if self.tick is not None:
                self.tick()


def first_output(out) -> torch.Tensor:
    """The first floating tensor among the model's outputs (logits, last hidden state, ...)."""
    for leaf in pytree.tree_flatten(out)[0]:
        if isinstance(leaf, torch.Tensor) and leaf.is_floating_point():
            return leaf
    raise InputError("the model returns no floating-point tensor to take a loss on; "
                     "data criteria need one (pass a weight criterion: l1, l2, bn)")


def is_class_scores(y: torch.Tensor) -> bool:
    return y.dim() == 2 and y.shape[1] > 1


def next_token_logits(out, inputs: dict | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """(logits [N, L-1, V], targets [N, L-1], weights [N, L-1]) when `out` is a causal LM's: an output
    mapping with `logits` [N, L, V] (Hugging Face's convention) for keyword `input_ids` [N, L]; the
    targets are the next tokens, weighted by the attention mask where there is one. Else None."""
    logits = out.get("logits") if isinstance(out, Mapping) else None
    ids = (inputs or {}).get("input_ids")
    if not isinstance(logits, torch.Tensor) or not isinstance(ids, torch.Tensor) or logits.dim() != 3:
        return None
    if tuple(logits.shape[:2]) != tuple(ids.shape) or ids.shape[1] < 2 or int(ids.max()) >= logits.shape[2]:
        return None
    mask = (inputs or {}).get("attention_mask")
    weights = mask[:, 1:].float() if isinstance(mask, torch.Tensor) and mask.shape == ids.shape else torch.ones(ids[:, 1:].shape)
    return logits[:, :-1], ids[:, 1:], weights.to(logits.device)


def next_token_loss(out, inputs: dict | None) -> tuple[torch.Tensor, int] | None:
    """(mean next-token cross-entropy, tokens counted) of a causal LM's output, else None."""
    found = next_token_logits(out, inputs)
    if found is None:
        return None
    logits, targets, weights = found
    each = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")
    count = float(weights.sum())
    return (each * weights.flatten()).sum() / max(count, 1.0), int(count)


def loss_of(out, labels: torch.Tensor | None, seed: int, sampled: bool = False,
            inputs: dict | None = None) -> tuple[torch.Tensor, str]:
    """(loss, LOSSES key) for one batch, as the module docstring says; `sampled`: labels drawn from the
    model's own predictive distribution (the true Fisher), whatever the data's labels. `inputs`: the
    batch's keyword inputs, for a causal LM's next-token loss."""
    causal = None if sampled or labels is not None else next_token_loss(out, inputs)
    if causal is not None:
        return causal[0], "next-token"
    y = first_output(out)
    if sampled and is_class_scores(y):
        gen = torch.Generator().manual_seed(seed)
        drawn = torch.multinomial(torch.softmax(y.detach().float(), 1).cpu(), 1, generator=gen).squeeze(1).to(y.device)
        return torch.nn.functional.cross_entropy(y.float(), drawn), "sampled"
    if labels is not None and is_class_scores(y):
        return torch.nn.functional.cross_entropy(y.float(), labels), "labels"
    if is_class_scores(y):
        return torch.nn.functional.cross_entropy(y.float(), y.detach().argmax(1)), "pseudo"
    gen = torch.Generator().manual_seed(seed)
    r = torch.randn(y.shape, generator=gen, dtype=torch.float32).to(y.device)
    return (y.float() * r).sum() / max(int(y.shape[0]), 1), "projection"

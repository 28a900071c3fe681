"""Did the pruned model decide as the original did, on every input of the data set?

Class scores (`Readout.kind == 'classes'`), with p = softmax(original), q = softmax(pruned):

    top1_agreement = mean_i [argmax p_i == argmax q_i]
    kl_divergence  = mean_i sum_c p_ic (log p_ic - log q_ic)          (nats)
    accuracy       = mean_i [argmax == label_i]   for both models, when the data has labels
    flips          = counts of (original right?, pruned right?) pairs
    recall change  = per class: recall(pruned) - recall(original)

Embeddings (`'embedding'`): no decision to agree on, so `top1_agreement` is None and the figures
are the cosine between the two models' pooled embeddings of each input, and
`neighbour_agreement`: how often an input's nearest other input (by cosine) is the same under
both models, the decision a retrieval system makes with the embeddings.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from graphprune.errors import InputError
from graphprune.explain.inputs import Caller, Readout


@dataclass(frozen=True)
class Decisions:
    kind: str  # 'classes' or 'embedding'
    num_inputs: int
    top1_agreement: float | None
    kl_divergence: float | None
    accuracy: dict | None  # {'original': a, 'pruned': b}
    flips: dict | None  # right_to_wrong, wrong_to_right, right_to_right, wrong_to_wrong
    recall: tuple  # per class: {'class', 'support', 'original', 'pruned', 'change'}
    changed: tuple  # inputs whose decision changed, largest change first (embeddings: nearest neighbour)
    pred_original: tuple
    pred_pruned: tuple
    kl_per_input: tuple = ()
    cosine_mean: float | None = None
    cosine_min: float | None = None
    cosine_per_input: tuple = ()
    neighbour_agreement: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def outputs(original, pruned, data, readout: Readout | None = None, requested: str = "auto"):
    """Both models' readouts over every input (in data order), the labels (or None) and the readout."""
    first, second, labels = [], [], []
    for batch in data.batches():
        caller = Caller.of(_whole(batch))
        mask = caller.mask(caller.other_tensors)
        a, b = _run(original, batch, "ORIGINAL"), _run(pruned, batch, "PRUNED")
        readout = readout or Readout.infer(a, requested)
        first.append(readout.read(a, mask))
        second.append(readout.read(b, mask))
        if batch.labels is not None:
            labels.append(batch.labels)
    y = torch.cat(labels) if labels and data.has_labels else None
    return torch.cat(first), torch.cat(second), y, readout


def _run(model, batch, which: str):
    try:
        return model(*batch.args, **batch.kwargs)
    except Exception as exc:  # noqa: BLE001 - the user's model rejecting the data is one line
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{which} rejects a batch of {batch.size} inputs of the data ({type(exc).__name__}: {first}); "
                         "a model exported with a fixed batch needs --batch-size of that size") from exc


def _whole(batch):
    from graphprune.explain.inputs import Sample

    return Sample(batch.args, batch.kwargs, None, 0)


def compare(a: torch.Tensor, b: torch.Tensor, labels: torch.Tensor | None, kind: str) -> Decisions:
    """The figures above from the two readouts ([N, C] scores or [N, D] embeddings)."""
    if kind == "embedding":
        return _embeddings(a, b)
    pa, pb = a.argmax(1), b.argmax(1)
    logp, logq = torch.log_softmax(a, 1), torch.log_softmax(b, 1)
    kl = (logp.exp() * (logp - logq)).sum(1)
    accuracy = flips = None
    recall = ()
    if labels is not None:
        ra, rb = pa == labels, pb == labels
        accuracy = {"original": ra.float().mean().item(), "pruned": rb.float().mean().item()}
        flips = {"right_to_wrong": int((ra & ~rb).sum()), "wrong_to_right": int((~ra & rb).sum()),
                 "right_to_right": int((ra & rb).sum()), "wrong_to_wrong": int((~ra & ~rb).sum())}
        recall = tuple(_recall(labels, ra, rb))
    changed = torch.nonzero(pa != pb).flatten()
    changed = changed[torch.argsort(kl[changed], descending=True)]  # the largest disagreements first
    return Decisions(
        kind="classes", num_inputs=len(a), top1_agreement=(pa == pb).float().mean().item(),
        kl_divergence=kl.mean().item(), accuracy=accuracy, flips=flips, recall=recall,
        changed=tuple(int(i) for i in changed), pred_original=tuple(pa.tolist()), pred_pruned=tuple(pb.tolist()),
        kl_per_input=tuple(kl.tolist()),
    )


def _recall(labels, ra, rb):
    for c in sorted(set(labels.tolist())):
        of = labels == c
        n = int(of.sum())
        before, after = ra[of].float().mean().item(), rb[of].float().mean().item()
        yield {"class": int(c), "support": n, "original": before, "pruned": after, "change": after - before}


def _nearest(e: torch.Tensor) -> torch.Tensor:
    e = torch.nn.functional.normalize(e, dim=1)
    sim = e @ e.T
    sim.fill_diagonal_(-np.inf)
    return sim.argmax(1)


def _embeddings(a: torch.Tensor, b: torch.Tensor) -> Decisions:
    if a.shape != b.shape:
        cos = torch.full((len(a),), float("nan"))
    else:
        cos = torch.nn.functional.cosine_similarity(a, b, dim=1)
    neighbours, changed = None, ()
    if len(a) > 2 and a.shape == b.shape:
        same = _nearest(a) == _nearest(b)
        neighbours = same.float().mean().item()
        changed = tuple(int(i) for i in torch.argsort(cos) if not same[i])
    return Decisions(
        kind="embedding", num_inputs=len(a), top1_agreement=None, kl_divergence=None, accuracy=None, flips=None,
        recall=(), changed=changed, pred_original=(), pred_pruned=(),
        cosine_mean=cos.mean().item(), cosine_min=cos.min().item(), cosine_per_input=tuple(cos.tolist()),
        neighbour_agreement=neighbours,
    )

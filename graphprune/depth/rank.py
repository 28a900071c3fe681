"""Rank removable blocks on calibration data: the least important first.

Two criteria, both measured on the captured (eval-mode) graph:

* `influence`: how much a block changes what flows through it,
      BI(b) = 1 - mean over samples of cos(flatten(x_b), flatten(y_b))
  with x_b, y_b the block's input and output for one sample (the whole batch tensor when
  dim 0 is not the batch). One pass over the data for all blocks; labels are not needed.
  A block that computes an identity (a zeroed residual branch) scores 0.
* `loss` (default): how much worse the model gets when the block alone is bypassed,
      with labels:    CE(f_without_b(x), y) - CE(f(x), y)        (mean over batches)
      without labels: sum ||f_without_b(x) - f(x)||^2 / sum ||f(x)||^2  (floating outputs)
  One pass per block (plus one): slower, but it measures what removal does to the model's
  outputs, downstream amplification and compensation included. It is the default because it
  picks better: on resnet18 its first pick keeps the logits at cosine 0.974 to the original's,
  influence's first pick (layer4.1, the block that changes its input least) at 0.932
  (random init; docs/BENCHMARKS.md, depth section). With labels a score can be < 0
  (removing the block lowers the loss on that data).

Scores are deterministic for a given data order (no sampling).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from graphprune.capture.trace import Captured
from graphprune.depth.find import Block, find_blocks
from graphprune.depth.probe import Probe
from graphprune.errors import InputError

log = logging.getLogger(__name__)

CRITERIA = ("influence", "loss")


@dataclass(frozen=True)
class Ranked:
    block: Block
    score: float  # lower: less important, removed first
    criterion: str


def rank_blocks(captured: Captured, data, criterion: str = "loss", limit: int | None = 16,
                blocks: Iterable[Block] | None = None, progress=None) -> list[Ranked]:
    """Blocks of `captured` (all found, or `blocks`) with their scores, least important first.

    `data`: a graphprune.data.Data (anything with `batches(limit=)` yielding Batch-like objects).
    `progress`: a graphprune.data.progress.Stages (stage "blocks", one unit per batch run).
    """
    from graphprune.data.progress import stages_of

    if criterion not in CRITERIA:
        raise InputError(f"unknown block criterion {criterion!r}; use one of: {', '.join(CRITERIA)}")
    blocks = list(find_blocks(captured) if blocks is None else blocks)
    batches = [_on(b, _device(captured.module)) for b in data.batches(limit=limit)]
    if not batches:
        raise InputError("the calibration data gave no batches; pass a data set with at least one sample")
    if not blocks:
        return []
    runs = len(batches) * (1 if criterion == "influence" else 1 + len(blocks))
    try:
        with stages_of(progress).stage("blocks", runs, f"ranking {len(blocks)} blocks ({criterion})") as tick:
            scores = (_influence(captured, blocks, batches, tick) if criterion == "influence"
                      else _loss(captured, blocks, batches, tick))
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - a batch the captured graph cannot run is the data's fault
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        hint = "" if captured.dynamic_batch else "; the model was captured with a fixed batch: use the example's batch size"
        raise InputError(f"a calibration batch does not run on the captured model ({type(exc).__name__}: {first})"
                         f"{hint}") from exc
    ranked = [Ranked(b, float(scores[b.name]), criterion) for b in blocks]
    ranked.sort(key=lambda r: r.score)
    log.info("blocks by %s: %s", criterion, ", ".join(f"{r.block.name}={r.score:.4g}" for r in ranked))
    return ranked


def _influence(captured: Captured, blocks: list[Block], batches: list, tick) -> dict[str, float]:
    total = {b.name: 0.0 for b in blocks}
    count = {b.name: 0 for b in blocks}

    def record(block: Block, x: torch.Tensor, y: torch.Tensor) -> None:
        n = x.shape[0] if x.dim() > 1 and x.shape[0] == size else 1
        cos = F.cosine_similarity(x.reshape(n, -1).double(), y.reshape(n, -1).double(), dim=1, eps=1e-12)
        total[block.name] += float((1.0 - cos).sum())
        count[block.name] += n

    probe = Probe(captured.module, watch=blocks, on_block=record)
    for batch in batches:  # the captured graph is an eval-mode trace: no mode to set
        size = batch.size
        probe(batch.args, batch.kwargs)
        tick()
    return {name: total[name] / max(count[name], 1) for name in total}


def _loss(captured: Captured, blocks: list[Block], batches: list, tick) -> dict[str, float]:
    gm = captured.module
    plain = Probe(gm)

    def run(probe, b):
        out = probe(b.args, b.kwargs)
        tick()
        return out

    reference = [run(plain, b) for b in batches]
    measure = _cross_entropy if batches[0].labels is not None else _distance
    base = measure(reference, reference, batches)
    scores = {}
    for block in blocks:
        bypassed = Probe(gm, bypass=[block])
        scores[block.name] = measure([run(bypassed, b) for b in batches], reference, batches) - base
    return scores


def _cross_entropy(outputs: list, reference: list, batches: list) -> float:
    losses = []
    for out, batch in zip(outputs, batches, strict=True):
        logits = _first_float(out)
        labels = batch.labels.to(logits.device)
        if logits.dim() != 2 or logits.shape[0] != labels.shape[0] or int(labels.max()) >= logits.shape[1]:
            raise InputError(
                f"labels do not fit the model's first output (shape {tuple(logits.shape)}): the loss criterion "
                "needs class logits [N, C]; use --block-criterion influence or data without labels"
            )
        losses.append(float(F.cross_entropy(logits.double(), labels)))
    return sum(losses) / len(losses)


def _distance(outputs: list, reference: list, batches: list) -> float:
    num = den = 0.0
    for out, ref in zip(outputs, reference, strict=True):
        for a, b in zip(out, ref, strict=True):
            if isinstance(a, torch.Tensor) and a.is_floating_point():
                num += float((a.double() - b.double()).pow(2).sum())
                den += float(b.double().pow(2).sum())
    return num / den if den else num


def _first_float(leaves: list) -> torch.Tensor:
    for leaf in leaves:
        if isinstance(leaf, torch.Tensor) and leaf.is_floating_point():
            return leaf
    raise InputError("the model returns no floating-point tensor; the loss criterion needs logits")


def _device(module: torch.nn.Module) -> torch.device:
    first = next(iter(module.parameters()), None)
    return first.device if first is not None else torch.device("cpu")


def _on(batch, device: torch.device):
    """The batch with its tensors on `device` (a Batch-like object: args, kwargs, labels, size)."""
    def move(v):
        return v.to(device) if isinstance(v, torch.Tensor) else v

    return _Batch(tuple(move(a) for a in batch.args), {k: move(v) for k, v in batch.kwargs.items()},
                  None if batch.labels is None else batch.labels.to(device), batch.size)


@dataclass(frozen=True)
class _Batch:
    args: tuple
    kwargs: dict
    labels: torch.Tensor | None
    size: int

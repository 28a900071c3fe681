"""Re-estimate BatchNorm running statistics of a pruned model on data.

Removing a layer's input channels changes the distribution of its outputs, so the running mean
and variance of the BatchNorm after it no longer describe what it sees; that, more than the
lost channels, is why a pruned model collapses before fine-tuning. On each batch norm of the
pruned model (graphprune.rewrite.trainable.TrainSwitch) the statistics are reset and re-estimated as a
cumulative average over the batches, the rest of the model in eval mode (dropout off), with no
gradients. The model is changed in place and left in the mode it had.
"""

from __future__ import annotations

import logging

import torch

from graphprune.rewrite.trainable import TrainSwitch

log = logging.getLogger(__name__)


def _norms(model: torch.nn.Module) -> list[TrainSwitch]:
    return [m for m in model.modules() if isinstance(m, TrainSwitch) and m.statistics]


def recalibrate(model: torch.nn.Module, data, limit: int | None = 16, tick=None) -> int:
    """Re-estimate the running statistics of every batch norm of `model`; returns how many batches ran.
    `tick()` is called after each batch (graphprune.data.progress)."""
    norms = _norms(model)
    if not norms:
        return 0
    was_training = model.training
    with torch.no_grad():
        model.eval()
        for m in norms:
            m.train()
            m.cumulative = m.reset = True
        batches = 0
        try:
            for batch in data.batches(limit=limit):
                model(*batch.args, **batch.kwargs)
                batches += 1
                if tick is not None:
                    tick()
        finally:
            for m in norms:
                m.cumulative = m.reset = False
            model.train(was_training)
    log.info("re-estimated %d batch norms on %d batches", len(norms), batches)
    return batches

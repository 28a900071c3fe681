"""AdamW and a learning-rate schedule: linear warm-up, then cosine decay to zero.

For step s of S in all, with W = round(warmup * S) warm-up steps:

    lr(s) = lr * (s + 1) / W                                  for s < W
    lr(s) = lr * (1 + cos(pi * (s - W) / max(1, S - W))) / 2  otherwise
"""

from __future__ import annotations

import math

import torch

from graphprune.errors import InputError


def optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and norm weights (1-D parameters)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() > 1]
    other = [p for p in model.parameters() if p.requires_grad and p.dim() <= 1]
    if not decay and not other:
        raise InputError("the model has no trainable parameters (all have requires_grad=False); unfreeze some")
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": other, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr)


def warmup_cosine(opt: torch.optim.Optimizer, total: int, warmup: float) -> torch.optim.lr_scheduler.LambdaLR:
    w = round(warmup * total)

    def factor(step: int) -> float:
        if step < w:
            return (step + 1) / w
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - w) / max(1, total - w))))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)

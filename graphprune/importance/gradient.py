"""Criteria from the gradient of the calibration loss (graphprune.importance.calibration).

For each calibration batch b (or micro-batches of `Calibration.grad_batch` samples; whole batches
by default, which measured best: docs/BENCHMARKS.md), with g = dL_b/dW for every parameter W of
the captured graph:

    taylor    s(c) = sum_b | sum over the parameter slices of c of sum W * g |
              (first-order estimate of the loss change when the whole channel is removed)
    gradient  s(c) = sum_b sum over the slices of c of sum |g|
    fisher    s(c) = sum_b sum over the slices of c of sum g^2, g from labels drawn from the model's
              own predictions (the true diagonal Fisher, the Hessian approximation of Optimal
              Brain Damage; graphprune.importance.calibration)

Gradients are taken through `torch.func.functional_call` with leaf tensors of our own that share
storage with the captured parameters: nothing is written to the user's parameters or their
`.grad`, and no parameter is copied.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.func import functional_call

from graphprune.importance.calibration import Calibration, loss_of
from graphprune.importance.channels import parameter, parameter_spaces, reduce_to
from graphprune.importance.registry import criterion


def _micro(batches, size: int | None):
    """Calibration batches cut into micro-batches of `size` samples: more, less averaged gradients."""
    from graphprune.data import Batch

    for b in batches:
        n = b.size
        step = size or n
        for start in range(0, n, step):
            cut = slice(start, start + step)
            yield Batch(tuple(a[cut] for a in b.args), {k: v[cut] for k, v in b.kwargs.items()},
                        None if b.labels is None else b.labels[cut])


def _stats(graph, calibration: Calibration, sampled: bool = False) -> dict:
    key = "gradients-sampled" if sampled else "gradients"
    if key in calibration.cache:
        return calibration.cache[key]
    module = graph.captured.module
    names = dict(module.named_parameters())  # one name per tensor; functional_call ties the others
    own = {n: p.detach().requires_grad_(True) for n, p in names.items()}
    by_id = {id(p): n for n, p in module.named_parameters(remove_duplicate=False)}
    spaces = [(by_id[id(parameter(module, t))], t, d, ch) for t, d, ch in parameter_spaces(graph)
              if id(parameter(module, t)) in by_id]
    taylor, grad, fisher = (np.zeros(graph.num_channels) for _ in range(3))
    kinds = set()
    for k, batch in enumerate(_micro(calibration.batches(), calibration.grad_batch)):
        out = functional_call(module, own, batch.args, batch.kwargs, strict=False)
        loss, kind = loss_of(out, batch.labels, calibration.seed + k, sampled=sampled, inputs=batch.kwargs)
        kinds.add(kind)
        grads = dict(zip(own, torch.autograd.grad(loss, list(own.values()), allow_unused=True), strict=True))
        signed = np.zeros(graph.num_channels)
        for name, _, dim, channels in spaces:
            g = grads.get(name)
            if g is None:
                continue
            w = own[name].detach()
            np.add.at(signed, channels, reduce_to(w.float() * g.float(), dim))
            np.add.at(grad, channels, reduce_to(g.abs().float(), dim))
            np.add.at(fisher, channels, reduce_to(g.float() * g.float(), dim))
        taylor += np.abs(signed)
    calibration.loss = "+".join(sorted(set(calibration.loss.split("+")) - {""} | kinds))
    calibration.cache[key] = {"taylor": taylor, "gradient": grad, "fisher": fisher}
    return calibration.cache[key]


@criterion("taylor", needs="gradients")
def taylor(graph, calibration: Calibration) -> np.ndarray:
    """sum over batches of |sum over the channel's parameter slices of W * dL/dW|"""
    return _stats(graph, calibration)["taylor"]


@criterion("gradient", needs="gradients")
def gradient(graph, calibration: Calibration) -> np.ndarray:
    """sum over batches and the channel's parameter slices of |dL/dW|"""
    return _stats(graph, calibration)["gradient"]


@criterion("fisher", needs="gradients")
def fisher(graph, calibration: Calibration) -> np.ndarray:
    """sum over batches and the channel's parameter slices of (dL/dW)^2, labels drawn from the model (true Fisher / OBD)"""
    return _stats(graph, calibration, sampled=True)["fisher"]

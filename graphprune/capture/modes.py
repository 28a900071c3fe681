"""Running a model as it was captured: in eval mode, without gradients, its own mode restored after."""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module):
    """Put `model` in eval mode for the block and restore its mode after.

    Modules from `ExportedProgram.module()` refuse mode switches; they are already fixed.
    """
    was_training = model.training
    try:
        model.eval()
    except NotImplementedError:
        yield model
        return
    try:
        yield model
    finally:
        model.train(was_training)


def run(model: torch.nn.Module, args: tuple, kwargs: dict | None = None):
    with eval_mode(model), torch.no_grad():
        return model(*args, **(kwargs or {}))

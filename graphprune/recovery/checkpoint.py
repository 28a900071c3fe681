"""The training state, written atomically after every epoch so that a run can resume.

A checkpoint holds the model's and the best model's state_dicts, the optimizer's and the
scheduler's states, the epoch, the validation history, early-stopping counters, the torch
RNG states (CPU and CUDA: dropout) and the options that must agree on resume. It loads
with `weights_only=True`: resuming runs no code from the file. The file replaces the
previous one only once it is completely written (graphprune.io.files.atomic_path), so an
interrupted run always leaves the last good checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from graphprune.errors import InputError, LoadError
from graphprune.io.files import atomic_path

VERSION = 1


@dataclass
class State:
    """What changes during a run (mutable on purpose: the loop advances it)."""

    epoch: int = 0  # epochs completed
    best_metric: float = float("-inf")
    best_loss: float = float("inf")  # validation loss at the best metric: breaks ties
    best_epoch: int = 0
    best_state: dict | None = None
    bad_epochs: int = 0
    history: list = field(default_factory=list)  # dicts: epoch, loss, metric


def rng_states() -> dict:
    states = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["cpu"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _cpu(tree):
    if isinstance(tree, torch.Tensor):
        return tree.detach().cpu().clone()
    if isinstance(tree, dict):
        return {k: _cpu(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_cpu(v) for v in tree)
    return tree


def save(path: Path, model, opt, sched, state: State, fingerprint: dict) -> None:
    blob = {
        "version": VERSION, "fingerprint": fingerprint, "model": _cpu(model.state_dict()),
        "optimizer": _cpu(opt.state_dict()), "scheduler": sched.state_dict(), "rng": rng_states(),
        "epoch": state.epoch, "best_metric": state.best_metric, "best_loss": state.best_loss, "best_epoch": state.best_epoch,
        "best_state": state.best_state, "bad_epochs": state.bad_epochs, "history": state.history,
    }
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)


def load(path: Path, model, opt, sched, fingerprint: dict) -> State:
    """Restore everything into `model`, `opt`, `sched` and the RNGs; return the run's State."""
    if not path.is_file():
        raise InputError(f"--resume: no checkpoint at {path}; run without --resume to start afresh")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint gets one message
        raise LoadError(f"--resume: {path} is not a graphprune checkpoint ({type(exc).__name__}); "
                        "delete it and run without --resume") from exc
    if not isinstance(blob, dict) or blob.get("version") != VERSION:
        raise LoadError(f"--resume: {path} is not a graphprune checkpoint; delete it and run without --resume")
    if blob["fingerprint"] != fingerprint:
        diff = sorted(k for k in fingerprint if blob["fingerprint"].get(k) != fingerprint[k])
        raise InputError(f"--resume: {path} was written with other options ({', '.join(diff)}); "
                         "pass the same options or run without --resume")
    try:
        model.load_state_dict(blob["model"])
    except RuntimeError as exc:
        raise InputError(f"--resume: {path} belongs to another model; pass the same PRUNED model") from exc
    opt.load_state_dict(blob["optimizer"])
    sched.load_state_dict(blob["scheduler"])
    set_rng_states(blob["rng"])
    return State(blob["epoch"], blob["best_metric"], blob["best_loss"], blob["best_epoch"], blob["best_state"],
                 blob["bad_epochs"], list(blob["history"]))

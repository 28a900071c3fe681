"""Torch-Pruning, the baseline several scripts compare with: what it must leave alone, and pruning to a
MACs fraction (criteria.py, recovery_digits.py) with BatchNorm re-estimated as graphprune does.
"""

from __future__ import annotations

import copy

import torch

from graphprune.cost.macs import count_macs

# what Torch-Pruning must be told to leave alone when its result fails to run without: on the digits CNN it
# mis-maps concat -> pool -> flatten -> Linear unless the convolutions feeding the concat stay (graphprune needs no list)
TP_IGNORED = {"digits CNN (bundled)": ("branch_a.0", "branch_b.0")}


def _tp_prune(model, example, importance, ratio: float, ignored: tuple[str, ...] = ()):
    import torch_pruning as tp  # only this baseline needs it

    m = copy.deepcopy(model)
    last = [x for x in m.modules() if isinstance(x, torch.nn.Linear)][-1]
    pruner = tp.pruner.MetaPruner(m, example, importance=importance, global_pruning=True, pruning_ratio=ratio,
                                  ignored_layers=[last, *(m.get_submodule(n) for n in ignored)])
    if isinstance(importance, tp.importance.GroupTaylorImportance):
        return m, pruner, True
    pruner.step()
    return m, pruner, False


def tp_prune_to(model, example, data, name: str, target: float, ignored: tuple[str, ...] = ()):
    """(MACs fraction, model): Torch-Pruning with `name` importance, its ratio bisected to our MACs
    fraction `target`, BatchNorm re-estimated on `data`; `ignored`: more layers TP must leave alone."""
    import torch_pruning as tp

    make = {"Magnitude": lambda: tp.importance.GroupMagnitudeImportance(p=2), "BN scale": tp.importance.BNScaleImportance,
            "Taylor": tp.importance.GroupTaylorImportance, "LAMP": lambda: tp.importance.LAMPImportance(p=2)}[name]
    base = count_macs(model, (example,))
    lo, hi, best = 0.0, 0.95, None
    for _ in range(14):
        mid = (lo + hi) / 2
        m, pruner, taylor = _tp_prune(model, example, make(), mid, ignored)
        if taylor:  # gradients on the calibration data first, as TP's examples do
            m.zero_grad()
            for batch in data.batches(limit=16):
                torch.nn.functional.cross_entropy(m(*batch.args), batch.labels).backward()
            pruner.step()
            m.zero_grad(set_to_none=True)
        frac = count_macs(m, (example,)) / base
        if best is None or abs(frac - target) < abs(best[0] - target):
            best = (frac, m)
        if abs(frac - target) <= 0.01 * target:
            break
        lo, hi = (mid, hi) if frac > target else (lo, mid)
    frac, m = best
    _recalibrate_eager(m, data)
    return frac, m


def _recalibrate_eager(model: torch.nn.Module, data) -> None:
    """The same BatchNorm re-estimation graphprune does, for an eager (Torch-Pruning) model."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.eval()
    for m in norms:
        m.train()
    with torch.no_grad():
        for batch in data.batches(limit=16):
            model(*batch.args)
    model.eval()


def classifier(model: torch.nn.Module) -> torch.nn.Linear:
    """The final classifier: the last nn.Linear (torchvision defines it last in every family here)."""
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    if not linears:
        raise ValueError("no nn.Linear in the model, so there is no classifier for TP's ignored_layers")
    return linears[-1]

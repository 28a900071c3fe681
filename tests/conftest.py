"""Shared fixtures for graphprune's tests.

* Every test starts from `torch.manual_seed(0)` and runs on two threads.
* `randomize(model)` gives every norm layer non-trivial running statistics and affine
  parameters, so that a zeroed (dead) channel is only dead because the oracle killed it,
  never because a fresh norm layer happened to map it to zero.
* `check_prunes(model, example, ratio)` is the standard oracle run of the rule tests;
  test modules import it and the other helpers with `from conftest import ...`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch.utils import _pytree as pytree

import graphprune
from graphprune.check.oracle import dead_channel_check

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `fixtures.archs` must import as it does for the CLI's --arch
    sys.path.insert(0, str(ROOT))

torch.set_num_threads(2)

NORMS = (
    torch.nn.modules.batchnorm._BatchNorm,
    torch.nn.GroupNorm,
    torch.nn.modules.instancenorm._InstanceNorm,
    torch.nn.LayerNorm,
)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give norm layers random running stats and affine params; return the model in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if not isinstance(m, NORMS):
                continue
            if getattr(m, "weight", None) is not None:
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=gen))
            if getattr(m, "bias", None) is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.3)
            if getattr(m, "running_mean", None) is not None:
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.3)
            if getattr(m, "running_var", None) is not None:
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))
    return model.eval()


def leaves(out) -> list[torch.Tensor]:
    """The tensors of a (nested) model output, in pytree order."""
    return [x for x in pytree.tree_leaves(out) if isinstance(x, torch.Tensor)]


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def with_batch(example, n: int):
    """The example input with every tensor's batch dim resized to n (rows repeated)."""

    def resize(x):
        if isinstance(x, torch.Tensor) and x.dim() > 0:
            reps = -(-n // x.shape[0])
            return x.repeat(reps, *([1] * (x.dim() - 1)))[:n].clone()
        return x

    return pytree.tree_map(resize, example)


def call(model: torch.nn.Module, example):
    """Run a model on an example given as a tensor, a tuple (positional) or a dict (keyword)."""
    with torch.no_grad():
        if isinstance(example, dict):
            return model(**example)
        if isinstance(example, tuple):
            return model(*example)
        return model(example)


def param_node(plan_or_graph, target: str):
    """The get_attr node that reads parameter `target` in a plan's (or graph's) captured graph."""
    graph = getattr(plan_or_graph, "graph", plan_or_graph)
    for node in graph.captured.graph.nodes:
        if node.op == "get_attr" and node.target == target:
            return node
    raise KeyError(target)


def kept(plan, target: str, dim: int):
    """Kept indices of dim `dim` of parameter `target` (all of them when untouched)."""
    node = param_node(plan, target)
    keep = plan.kept(((node, None), dim))
    size = node.meta["val"].shape[dim]
    return list(range(size)) if keep is None else keep.tolist()


def _snapshot(module: torch.nn.Module) -> dict:
    """Copies of every tensor the graph reads by get_attr, with their requires_grad flags;
    names of one tensor (tied weights) share one copy."""
    saved, copies = {}, {}
    for node in module.graph.nodes:
        value = _attr(module, node.target) if node.op == "get_attr" else None
        if isinstance(value, torch.Tensor):
            copy = copies.setdefault(id(value), value.detach().clone())
            saved[node.target] = (copy, value.requires_grad)
    return saved


def _attr(module: torch.nn.Module, target: str):
    obj = module
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _restore(module: torch.nn.Module, saved: dict) -> None:
    """Put back tensors the oracle replaced with zeroed copies (tied names stay tied)."""
    fresh: dict = {}
    for target, (tensor, grad) in saved.items():
        path, _, name = target.rpartition(".")
        owner = module.get_submodule(path) if path else module
        if name in owner._parameters:
            owner._parameters[name] = fresh.setdefault(id(tensor), torch.nn.Parameter(tensor.clone(), requires_grad=grad))
        elif name in owner._buffers:
            owner._buffers[name] = fresh.setdefault(id(tensor), tensor.clone())
        else:
            setattr(owner, name, fresh.setdefault(id(tensor), tensor.clone()))


def check_prunes(model: torch.nn.Module, example, ratios=(0.3, 0.5), **options) -> dict:
    """Analyze once; for each ratio plan, run the dead-channel oracle and check the invariants.

    Returns {ratio: (plan, pruned model)}. Asserts for every ratio: something was removed,
    the pruned model has fewer parameters, its outputs keep their shapes, and it accepts
    batch 3 when the capture was dynamic.
    """
    options.setdefault("round_to", 1)  # rule mechanics, not hardware rounding (tested on its own)
    model = model.eval()
    original_params = count_params(model)
    reference = [tuple(t.shape) for t in leaves(call(model, example))]
    graph = graphprune.analyze(model, example)
    saved = _snapshot(graph.captured.module)
    bigger = with_batch(example, 3)
    bigger_shapes = [tuple(t.shape) for t in leaves(call(model, bigger))]
    results = {}
    for ratio in ratios:
        _restore(graph.captured.module, saved)
        plan = graphprune.plan(graph, ratio=ratio, **options)
        assert plan.removed.any(), [d for d in plan.decisions if d.candidates]
        pruned = dead_channel_check(plan)
        assert count_params(pruned) < original_params
        assert [tuple(t.shape) for t in leaves(call(pruned, example))] == reference
        if graph.captured.dynamic_batch:
            assert [tuple(t.shape) for t in leaves(call(pruned, bigger))] == bigger_shapes
        results[ratio] = (plan, pruned)
    _restore(graph.captured.module, saved)
    return results

"""Pruning a model that torch.export cannot capture whole, one capturable part at a time.

Detection models branch on tensor values (proposal filtering, NMS): the whole model has
no static graph. Their backbone, feature pyramid and heads do. So, with no configuration:

1. *record*: a copy of the model runs once eagerly on the example; forward hooks record
   the inputs and outputs of every call of the submodules being tried;
2. *find*: the module tree is walked top-down; a submodule with parameters is captured
   on its first recorded call (every input dim dynamic where export allows, else the
   batch only) and must reproduce every recorded call; if it does not capture, its
   children are tried instead;
3. *prune*: each captured part is planned and rewritten on its own. Its inputs and
   outputs are its graph's inputs and outputs, which the dependency graph freezes, so
   the part is the same function of the same shapes for the rest of the model: parts
   never couple, and pruning one cannot break another. Each pruned part must give the
   recorded output shapes on every recorded call (the values when nothing is removed),
   and passes the dead-channel oracle;
4. *assemble*: the pruned parts replace their submodules in a copy of the user's model,
   which must run on the example with its output structure (pytree, dtypes, ranks) kept.
   Output sizes may change only through the uncaptured, data-dependent code between the
   parts (how many boxes survive NMS), since every part's output shapes are unchanged.

MACs after pruning are counted on the original model's data path: the whole model's MACs
less what each part saves on the calls the original made. Counting the pruned model's own
run would measure how many boxes a random-init model happens to keep, not the pruning.

Channels shared across parts (a backbone's output width read by every head) stay: proving
that coupling needs the uncaptured code between the parts, which has no graph.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch.utils import _pytree as pytree

from graphprune.capture.depgraph import build
from graphprune.capture.trace import Captured, capture
from graphprune.check import verify
from graphprune.check.oracle import dead_channel_check
from graphprune.cost.macs import count_macs, count_params
from graphprune.errors import GraphPruneError, TraceError, VerificationError, first_line
from graphprune.plan.planner import plan as make_plan
from graphprune.plan.types import Plan, PlanOptions
from graphprune.report.report import Report
from graphprune.rewrite.rewriter import rewrite as make_model

log = logging.getLogger(__name__)

CALLS_KEPT = 8  # recorded calls per part; a part called more often is checked on these


@dataclass(frozen=True)
class Call:
    """One recorded call of a submodule: its inputs and its output (detached copies)."""

    args: tuple
    kwargs: dict
    output: Any


@dataclass(frozen=True)
class Part:
    """A submodule the walk reached: pruned, or left as it was and why."""

    path: str
    pruned: bool
    note: str


@dataclass(frozen=True, eq=False)
class PrunedPart:
    path: str
    plan: Plan
    module: torch.nn.Module
    macs: tuple  # (before, after): MACs of the part over the calls the original model made


def _macs(module: torch.nn.Module, calls: list[Call], count: int) -> int:
    """MACs of `module` over `count` calls, measured on the recorded ones."""
    return round(sum(count_macs(module, c.args, c.kwargs) for c in calls) * count / len(calls))


def _copied(tree: Any) -> Any:
    return pytree.tree_map(lambda x: x.detach().clone() if isinstance(x, torch.Tensor) else x, tree)


def record(model: torch.nn.Module, args: tuple, kwargs: dict, paths: list[str]) -> tuple[dict, dict]:
    """Run `model` once eagerly; (path -> up to CALLS_KEPT calls, path -> number of calls)."""
    calls: dict = {}
    counts: dict = {}
    handles = []
    for path in paths:
        def hook(_module, a, kw, out, path=path):
            counts[path] = counts.get(path, 0) + 1
            if len(calls.setdefault(path, [])) < CALLS_KEPT:
                calls[path].append(Call(_copied(a), _copied(kw), _copied(out)))

        handles.append(model.get_submodule(path).register_forward_hook(hook, with_kwargs=True))
    try:
        verify.run(model, args, kwargs)
    finally:
        for h in handles:
            h.remove()
    return calls, counts


def _has_params(module: torch.nn.Module) -> bool:
    return any(True for _ in module.parameters())


def _children(model: torch.nn.Module, path: str) -> list[str]:
    module = model.get_submodule(path) if path else model
    prefix = f"{path}." if path else ""
    return [prefix + name for name, child in module.named_children() if _has_params(child)]


def _first_line(exc: BaseException) -> str:
    """The cause alone: a capture failure's own detail, else the exception's first line."""
    return exc.detail[:200] if isinstance(exc, TraceError) else first_line(exc, 200)


def capture_part(module: torch.nn.Module, calls: list[Call]) -> Captured:
    """Capture `module` on its first call; it must reproduce every recorded call (TraceError if not)."""
    first = calls[0]
    captured = capture(module, first.args, first.kwargs, every_dim=True)
    for k, call in enumerate(calls):
        try:
            verify.check_equal(call.output, verify.run(captured.module, call.args, call.kwargs), atol=1e-4, rtol=1e-3)
        except Exception as exc:  # noqa: BLE001 - a capture that does not generalise is not a part
            raise TraceError(f"the captured graph does not reproduce call {k + 1}: {_first_line(exc)}") from exc
    return captured


def _scale(output: Any) -> float:
    """max(1, largest |value|) of an output: float error grows with it (random-init heads without norms)."""
    values = [x.detach().abs().max().item() for x in pytree.tree_leaves(output)
              if isinstance(x, torch.Tensor) and x.is_floating_point() and x.numel()]
    return max([1.0, *values])


def _check_calls(plan: Plan, pruned: torch.nn.Module, calls: list[Call]) -> None:
    for call in calls:
        got = verify.run(pruned, call.args, call.kwargs)
        if plan.removed.any():
            verify.check_structure(call.output, got)
        else:
            verify.check_equal(call.output, got, atol=1e-4, rtol=1e-3)


def prune_part(path: str, captured: Captured, calls: list[Call], count: int, opts: PlanOptions,
               attention: str) -> PrunedPart:
    """Plan and rewrite one captured part; check it on its recorded calls and with the oracle."""
    chosen = make_plan(build(captured, attention=attention), opts)
    pruned = make_model(chosen)
    _check_calls(chosen, pruned, calls)
    macs = (_macs(captured.module, calls, count), _macs(pruned, calls, count)) if chosen.removed.any() else (0, 0)
    if chosen.exact().removed.any():  # zeroes channels in the captured copy, which is not used again
        dead_channel_check(chosen, atol=1e-5 * _scale(calls[0].output))
    return PrunedPart(path, chosen, pruned, macs)


def find_and_prune(work: torch.nn.Module, args: tuple, kwargs: dict, opts: PlanOptions,
                   attention: str) -> tuple[list[PrunedPart], list[Part]]:
    """Walk `work`'s module tree top-down, pruning the largest parts that capture."""
    done: list[PrunedPart] = []
    notes: list[Part] = []
    frontier = _children(work, "")
    seen: dict = {}  # id of a submodule -> the first path it was tried under (a shared module is one part)
    while frontier:
        fresh = [p for p in frontier if seen.setdefault(id(work.get_submodule(p)), p) == p]
        notes += [Part(p, False, f"the same module as {seen[id(work.get_submodule(p))]}") for p in frontier if p not in fresh]
        frontier = fresh
        calls, counts = record(work, args, kwargs, frontier)
        deeper = []
        for path in frontier:
            if path not in calls:
                notes.append(Part(path, False, "not called on the example input"))
                continue
            try:
                captured = capture_part(work.get_submodule(path), calls[path])
            except TraceError as exc:
                inner = _children(work, path)
                deeper += inner
                tail = "; its submodules were tried" if inner else ""
                notes.append(Part(path, False, f"not captured: {_first_line(exc)}{tail}"))
                continue
            try:
                part = prune_part(path, captured, calls[path], counts[path], opts, attention)
            except GraphPruneError as exc:
                log.warning("part %s left as it was: %s", path, exc)
                notes.append(Part(path, False, f"captured, but pruning it failed a check: {_first_line(exc)}"))
                continue
            removed = int(part.plan.removed.sum())
            times = f" (called {counts[path]} times)" if counts[path] > 1 else ""
            if removed:
                done.append(part)
                notes.append(Part(path, True, f"captured and pruned: {removed} channels removed{times}"))
            else:
                notes.append(Part(path, False, f"captured; nothing prunable with its inputs and outputs fixed{times}"))
        frontier = deeper
    return done, notes


def assemble(model: torch.nn.Module, parts: list[PrunedPart]) -> torch.nn.Module:
    """A deepcopy of `model` with each part's submodule (under every name it has) replaced."""
    out = copy.deepcopy(model)
    originals = {id(model.get_submodule(p.path)): p.module for p in parts}
    names = [(name, mod) for name, mod in model.named_modules(remove_duplicate=False) if name]
    for name, mod in names:
        new = originals.get(id(mod))
        if new is not None:
            out.set_submodule(name, new)
    return out


def check_whole(reference: Any, got: Any, exact: bool) -> str:
    """The assembled model's output keeps the original's structure, dtypes and ranks."""
    if exact:
        verify.check_equal(reference, got)
        return "nothing removed; outputs equal the original"
    ref, ref_spec = pytree.tree_flatten(reference)
    new, new_spec = pytree.tree_flatten(got)
    if str(ref_spec) != str(new_spec):
        raise VerificationError("the pruned model's output structure differs from the original; "
                                "this is a graphprune bug, please report it")
    for k, (a, b) in enumerate(zip(ref, new, strict=True)):
        if isinstance(a, torch.Tensor) != isinstance(b, torch.Tensor) or (
                isinstance(a, torch.Tensor) and (a.dtype != b.dtype or a.dim() != b.dim())):
            raise VerificationError(f"output {k} changed type, dtype or rank after pruning; "
                                    "this is a graphprune bug, please report it")
    sizes = [k for k, (a, b) in enumerate(zip(ref, new, strict=True))
             if isinstance(a, torch.Tensor) and a.shape != b.shape]
    what = "output structure, dtypes and ranks match the original"
    return what + (f"; {len(sizes)} outputs have data-dependent sizes that changed" if sizes else "")


def _prefixed(path: str, decisions: tuple) -> tuple:
    return tuple(replace(d, group=f"{path}: {d.group}") for d in decisions)


def shrink(model: torch.nn.Module, args: tuple, kwargs: dict, reference: Any, opts: PlanOptions, attention: str,
           why: str, step=None) -> tuple[torch.nn.Module, Report]:
    """Prune `model` part by part (the whole did not capture: `why`); the pruned copy and its report."""
    step = step or (lambda name: None)
    t0 = time.perf_counter()
    step("the whole model does not capture: pruning the submodules that do")
    work = copy.deepcopy(model)
    done, notes = find_and_prune(work, args, kwargs, opts, attention)
    if not done and opts.ratio > 0:
        tried = "; ".join(f"{p.path}: {p.note}" for p in notes[:3]) or "it has no submodule with parameters"
        raise TraceError(f"{why}; no part of it could be pruned on its own either ({tried[:300]})")
    seconds = {"parts": time.perf_counter() - t0}
    step("verifying the assembled model")
    pruned = assemble(work, done)
    try:
        note = check_whole(reference, verify.run(pruned, args, kwargs), exact=not done)
    except VerificationError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to run is a verification failure
        raise VerificationError(f"the pruned model does not run: {_first_line(exc)}") from exc
    step("counting MACs")
    macs_before = count_macs(model, args, kwargs)
    decisions = tuple(d for p in done for d in _prefixed(p.path, p.plan.decisions))
    unknown = tuple(f"{p.path}: {u}" for p in done for u in p.plan.graph.unknown)
    report = Report(
        params_before=count_params(model), params_after=count_params(pruned),
        # on the original's data path: how many boxes reach a head after NMS is data-dependent
        macs_before=macs_before, macs_after=macs_before - sum(p.macs[0] - p.macs[1] for p in done),
        ratio=opts.ratio, options=opts.__dict__, decisions=decisions, unknown_ops=unknown,
        dynamic_batch=bool(done) and all(p.plan.graph.captured.dynamic_batch for p in done),
        verified=f"{note}; {len(done)} parts pruned, each checked on its recorded calls and by the dead-channel oracle",
        checks=({"check": "runs", "passed": True, "detail": note},
                {"check": "parts", "passed": True, "detail": f"{len(done)} parts pruned, each giving the recorded output "
                 "shapes on every recorded call and passing the dead-channel oracle"}),
        seconds={**seconds, "total": time.perf_counter() - t0}, parts=tuple(notes), whole_capture=why,
    )
    return pruned, report

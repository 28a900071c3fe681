"""Containers of tensors that libraries return, made known to torch's pytree.

torch.export flattens a model's inputs and outputs with `torch.utils._pytree`; a type it does
not know ends the capture ("Found <class DynamicCache> in output, which is not a known type").
Hugging Face causal LMs return their key/value cache as such a type by default
(`use_cache=True` -> `transformers.cache_utils.DynamicCache`).

Why registration and not `use_cache=False` on a copy of the config: the pruned model must keep the
user's calling convention, and a model loaded as it is returns its cache. Registered, the cache is
an output like any other: its key/value tensors are graph outputs (their KV-head dim is frozen as
every output dim is, so the cache a pruned model returns has the pruned model's KV heads only where
the planner may prune them: see docs/DESIGN.md), the pruned model returns a `DynamicCache` again,
the ONNX export has the key/value tensors as outputs, and the checks compare them.

The registration is the library's own (`transformers.integrations.executorch.
register_dynamic_cache_export_support`, the one transformers uses for its torch.export path),
done once per process and only when the model or a loaded spec comes from transformers: graphprune
adds no flatten rule of its own for a library's type. A pickled pruned model whose output spec
names a transformers type registers it again when it is loaded (graphprune.pruned).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from torch.utils import _pytree as pytree

log = logging.getLogger(__name__)
_DONE: set[str] = set()
# Containers of state the model reads back on its next call (key/value caches): their tensors' widths
# belong to the model, not to the caller, so they may narrow with it (graphprune.depgraph).
STATE_TYPES: set[type] = set()


def _transformers_caches() -> None:
    """Register transformers' cache types (DynamicCache) with the library's own function."""
    if "transformers" in _DONE:
        return
    _DONE.add("transformers")
    try:
        from transformers.integrations.executorch import register_dynamic_cache_export_support
    except ImportError:  # an older or newer transformers without it: capture then reports the type
        log.info("transformers has no register_dynamic_cache_export_support; caches stay unknown to pytree")
        return
    register_dynamic_cache_export_support()
    from transformers.cache_utils import Cache

    STATE_TYPES.add(Cache)


_LIBRARIES = {"transformers": _transformers_caches}


def _library(cls: type) -> str:
    return (getattr(cls, "__module__", "") or "").split(".")[0]


def register_for_model(model: Any) -> None:
    """Register the pytree support of the library `model`'s class comes from, if graphprune knows it."""
    for cls in type(model).__mro__:
        register = _LIBRARIES.get(_library(cls))
        if register is not None and _library(cls) in sys.modules:
            register()
            return


def register_for_spec(spec: pytree.TreeSpec | None) -> None:
    """Register the libraries whose types a (loaded) TreeSpec names, so the spec unflattens."""
    if spec is None:
        return
    stack = [spec]
    while stack:
        node = stack.pop()
        register = _LIBRARIES.get(_library(node.type)) if node.type is not None else None
        if register is not None:
            register()
        stack.extend(node.children())


def state_leaves(spec: pytree.TreeSpec) -> list[bool]:
    """Per leaf of `spec`, in flattening order: is it inside a state container (a KV cache)?"""
    out: list[bool] = []

    def visit(node: pytree.TreeSpec, inside: bool) -> None:
        inside = inside or (node.type is not None and any(issubclass(node.type, t) for t in STATE_TYPES))
        if node.is_leaf():
            out.append(inside)
        for child in node.children():
            visit(child, inside)

    visit(spec, False)
    return out


"""The example input's spec, carried in the pruned model so later commands need not ask for it again.

    spec = {"layout": "tensor" | "tuple" | "dict",
            "inputs": [{"name", "shape", "dtype", "dynamic": [dims]}, ...]}

`shrink` stores it in the pruned GraphModule's `meta` (a pickle keeps `meta`,
graphprune.pruned); a `.pt2` program carries its example inputs itself. `example(spec)` builds
an input of the stored shapes and dtypes: floating inputs standard normal (seeded), integer
inputs zeros (token id 0 and token type 0 exist in every vocabulary), booleans True. `dynamic`
lists the dims the captured graph kept symbolic (the batch, a token input's sequence).
Non-tensor inputs are not carried: a model that takes them needs --example-input.
"""

from __future__ import annotations

from typing import Any

import torch

KEY = "graphprune.example"


def _leaf(name: str, x: torch.Tensor, dynamic: set[int]) -> dict:
    return {"name": name, "shape": list(x.shape), "dtype": str(x.dtype).removeprefix("torch."),
            "dynamic": sorted(dynamic)}


def spec_of(example: Any, dynamic: list[set[int]] | None = None) -> dict | None:
    """The spec of `example` (a tensor, tuple or dict of tensors); None when it holds anything else."""
    if isinstance(example, torch.Tensor):
        layout, named = "tensor", [("input", example)]
    elif isinstance(example, dict):
        layout, named = "dict", list(example.items())
    elif isinstance(example, (tuple, list)):
        layout, named = "tuple", [(f"input {i}", x) for i, x in enumerate(example)]
    else:
        return None
    if not all(isinstance(x, torch.Tensor) for _, x in named):
        return None
    dynamic = dynamic if dynamic is not None and len(dynamic) == len(named) else [set() for _ in named]
    return {"layout": layout, "inputs": [_leaf(n, x, d) for (n, x), d in zip(named, dynamic, strict=True)]}


def example(spec: dict) -> Any:
    """An input of the spec's layout, shapes and dtypes (values as the module docstring says)."""
    gen = torch.Generator().manual_seed(0)
    tensors = []
    for leaf in spec["inputs"]:
        dtype = getattr(torch, leaf["dtype"])
        shape = tuple(leaf["shape"])
        if dtype.is_floating_point:
            tensors.append(torch.randn(shape, generator=gen).to(dtype))
        elif dtype is torch.bool:
            tensors.append(torch.ones(shape, dtype=dtype))
        else:
            tensors.append(torch.zeros(shape, dtype=dtype))
    if spec["layout"] == "tensor":
        return tensors[0]
    if spec["layout"] == "dict":
        return {leaf["name"]: t for leaf, t in zip(spec["inputs"], tensors, strict=True)}
    return tuple(tensors)


def attach(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
    """Store the spec of the example input (args, kwargs) in `module.meta` (an fx.GraphModule's), with
    the dims its graph keeps symbolic; a module without `meta` or inputs of other types are left as they are."""
    example_input = dict(kwargs) if kwargs and not args else args[0] if len(args) == 1 and not kwargs else tuple(args)
    if kwargs and args:
        return
    meta = getattr(module, "meta", None)
    found = _symbolic(module)
    if isinstance(example_input, dict) and found is not None:
        by_name = dict(found)
        dynamic = [by_name.get(k, set()) for k in example_input]
    else:
        dynamic = None if found is None else [dims for _, dims in found]
    spec = spec_of(example_input, dynamic)
    if isinstance(meta, dict) and spec is not None:
        meta[KEY] = spec


def stored(module: Any) -> Any:
    """The example input built from the spec `module` carries, or None."""
    meta = getattr(module, "meta", None)
    spec = meta.get(KEY) if isinstance(meta, dict) else None
    return example(spec) if spec else None


def _symbolic(module: torch.nn.Module) -> list[tuple[str, set[int]]] | None:
    """(placeholder name, its symbolic dims) per input of a graph module's graph; None without one."""
    graph = getattr(module, "graph", None)
    if graph is None or not hasattr(graph, "find_nodes"):
        return None
    dims = []
    for node in graph.find_nodes(op="placeholder"):
        val = node.meta.get("val")
        shape = val.shape if isinstance(val, torch.Tensor) else ()
        dims.append((node.name, {d for d, size in enumerate(shape) if not isinstance(size, int)}))
    return dims

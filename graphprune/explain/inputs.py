"""What explain feeds the two models and what it reads from their outputs.

* A `Sample` is one input of the data set (batch of one), its label and its index in the data.
* A `Caller` rebuilds a sample's `(args, kwargs)` around the tensor being explained, so that an
  attribution library can call `forward(explained, *others)` with its own (expanded) tensors.
* `Readout` turns a model output into what the two models are compared on: class scores
  ([N, C]: the first output tensor when it is 2-D) or a pooled embedding (a [N, L, D] output
  averaged over the positions its attention mask keeps, as sentence encoders do; any other
  output flattened to [N, -1]).
* `example_of_graph` recovers an example input from a model graphprune captured, for when
  neither file carries one (pickled models do not).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch.utils import _pytree as pytree

from graphprune.errors import InputError

MASK_NAMES = ("attention_mask",)
TOKENS = 128  # sequence length of an example made from a tokenizer


@dataclass(frozen=True)
class Sample:
    args: tuple
    kwargs: dict
    label: int | None
    index: int


def slice_batch(batch, row: int, index: int) -> Sample:
    """Row `row` of a data batch as a batch of one."""
    def take(v):
        return v[row:row + 1] if isinstance(v, torch.Tensor) and v.dim() > 0 else v

    args = tuple(take(a) for a in batch.args)
    kwargs = {k: take(v) for k, v in batch.kwargs.items()}
    label = int(batch.labels[row]) if batch.labels is not None else None
    return Sample(args, kwargs, label, index)


def _name(path) -> str:
    return str(getattr(path[-1], "key", getattr(path[-1], "idx", ""))) if path else ""


@dataclass(frozen=True)
class Caller:
    """Calls a model on a sample with the explained tensor (and the other tensors) swapped in."""

    spec: Any
    leaves: tuple
    names: tuple
    explained: int  # position of the explained tensor among the leaves
    others: tuple  # positions of the other tensor leaves, in the order forward() takes them

    @staticmethod
    def of(sample: Sample) -> Caller:
        flat, spec = pytree.tree_flatten_with_path((sample.args, sample.kwargs))
        leaves = tuple(v for _, v in flat)
        names = tuple(_name(p) for p, _ in flat)
        tensors = [k for k, v in enumerate(leaves) if isinstance(v, torch.Tensor)]
        if not tensors:
            raise InputError("the data gives the model no tensor to explain")
        tokens = [k for k in tensors if _is_tokens(leaves[k])]
        floats = [k for k in tensors if leaves[k].is_floating_point()]
        named = [k for k in tokens if names[k] == "input_ids"]
        explained = (named or tokens or floats or tensors)[0]
        return Caller(pytree.tree_structure((sample.args, sample.kwargs)), leaves, names, explained,
                      tuple(k for k in tensors if k != explained))

    @property
    def kind(self) -> str:
        """'tokens', 'image' (a float tensor of rank 3 or more) or 'tabular'."""
        x = self.leaves[self.explained]
        return "tokens" if _is_tokens(x) else "image" if x.dim() >= 3 else "tabular"

    @property
    def tensor(self) -> torch.Tensor:
        return self.leaves[self.explained]

    @property
    def other_tensors(self) -> tuple:
        return tuple(self.leaves[k] for k in self.others)

    def call(self, model, explained: torch.Tensor, *others):
        leaves = list(self.leaves)
        leaves[self.explained] = explained
        for k, value in zip(self.others, others, strict=True):
            leaves[k] = value
        args, kwargs = pytree.tree_unflatten(leaves, self.spec)
        return model(*args, **kwargs)

    def mask(self, others: tuple) -> torch.Tensor | None:
        """The attention mask among `others` (same order as `self.others`), if the model takes one."""
        for k, value in zip(self.others, others, strict=True):
            if self.names[k] in MASK_NAMES:
                return value
        return None


def _is_tokens(t: torch.Tensor) -> bool:
    return t.dim() == 2 and not t.is_floating_point() and not t.is_complex()


def first_tensor(output: Any) -> torch.Tensor:
    leaves = [t for t in pytree.tree_leaves(output) if isinstance(t, torch.Tensor)]
    if not leaves:
        raise InputError("the model's output holds no tensor; explain compares tensor outputs")
    return leaves[0]


@dataclass(frozen=True)
class Readout:
    """'classes': the first output tensor is [N, C] scores; 'embedding': pooled per input."""

    kind: str

    @staticmethod
    def infer(output: Any, requested: str = "auto") -> Readout:
        if requested not in ("auto", "classes", "embedding"):
            raise InputError(f"output kind {requested!r} is not one of auto, classes, embedding")
        if requested != "auto":
            return Readout(requested)
        t = first_tensor(output)
        return Readout("classes" if t.dim() == 2 and t.is_floating_point() and t.shape[1] > 1 else "embedding")

    def read(self, output: Any, mask: torch.Tensor | None = None) -> torch.Tensor:
        t = first_tensor(output).float()
        if self.kind == "classes":
            return t.reshape(t.shape[0], -1)
        if t.dim() == 3:
            keep = mask.to(t.dtype)[..., None] if mask is not None and mask.shape == t.shape[:2] else torch.ones_like(t[..., :1])
            return (t * keep).sum(1) / keep.sum(1).clamp_min(1.0)
        return t.reshape(t.shape[0], -1)


def example_of_graph(model: torch.nn.Module, tokenizer=None) -> Any | None:
    """An example input for a module graphprune captured: its placeholders, sized by its input asserts.

    Symbolic sizes (the batch, a token sequence) become 2. The dtype is the one export asserts, else
    int64 for a placeholder read as embedding indices or 2-D with a symbolic dim 1 (capture makes
    only token inputs' sequence dynamic), else float32. A placeholder without an assert (every dim symbolic: token ids and
    masks) takes the tokenizer's output of the same name, when a tokenizer is given. None when
    `model` is not such a graph.
    """
    graph = getattr(model, "graph", None)
    spec = getattr(model, "_in_spec", None)
    if graph is None or spec is None:
        return None
    sizes, dtypes = {}, {}
    for node in graph.nodes:
        asserts = (torch.ops.aten._assert_tensor_metadata.default, getattr(torch, "_assert_tensor_metadata", None))
        if node.target in asserts and node.args and isinstance(node.args[0], fx.Node):
            name, size = node.args[0].name, node.kwargs.get("size")
            if isinstance(node.kwargs.get("dtype"), torch.dtype):
                dtypes.setdefault(name, node.kwargs["dtype"])
            if size is not None:
                sizes[name] = [s if isinstance(s, int) else 2 for s in size]
                if len(size) == 2 and not isinstance(size[1], int):
                    dtypes.setdefault(name, torch.int64)
        if node.op == "call_function" and node.target is torch.ops.aten.embedding.default:
            dtypes.setdefault(getattr(node.args[1], "name", ""), torch.int64)
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    encoded = {}
    if tokenizer is not None:  # as long as the text loader's default, which follows the example's length
        encoded = dict(tokenizer(["a"], padding="max_length", max_length=TOKENS, truncation=True, return_tensors="pt"))
    leaves = []
    for n in placeholders:
        if n.name in sizes:
            leaves.append(torch.zeros(sizes[n.name], dtype=dtypes.get(n.name, torch.float32)))
        elif n.name in encoded:
            leaves.append(encoded[n.name].repeat(2, 1))
        else:
            return None
    if not leaves:
        return None
    try:
        args, kwargs = pytree.tree_unflatten(leaves, spec)
    except (ValueError, TypeError):
        return None
    return kwargs if kwargs and not args else tuple(args)


def example_of_data(spec: str, model: torch.nn.Module, tokenizer: str | None = None) -> Any | None:
    """One sample of the data as the example (graphprune.data.infer_example), floating inputs cast to
    the model's floating dtype (an .npz of float64 for a float32 model); None when the data does not say."""
    from graphprune.data import infer_example

    found = infer_example(spec, tokenizer)
    if found is None:
        return None
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    return pytree.tree_map(lambda t: t.to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() else t, found)

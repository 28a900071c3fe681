"""What the model's inputs look like, and fitting a data set's batches to it.

A `Signature` is taken from the example input: positional tensors or named (keyword) tensors,
each with its dtype and shape. A batch fits when it has the same inputs (names or count), the
same rank, the same kind of dtype (floating vs integer) and the same sizes on every dim but the
batch (dim 0) and, for token inputs (2-D integer tensors), the sequence (dim 1). Floating inputs
are cast to the example's dtype, integer inputs to the example's integer dtype.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from graphprune.errors import InputError


@dataclass(frozen=True)
class Leaf:
    name: str
    dtype: torch.dtype
    shape: tuple

    @property
    def token(self) -> bool:
        return len(self.shape) == 2 and not self.dtype.is_floating_point and not self.dtype.is_complex

    def free(self, dim: int) -> bool:
        """Dims whose size may differ from the example's: the batch, and a token input's sequence."""
        return dim == 0 or (dim == 1 and self.token)


@dataclass(frozen=True)
class Signature:
    keyword: bool  # the model takes keyword inputs (the example was a dict)
    leaves: tuple  # Leaf per input, in order

    @staticmethod
    def of(example: Any) -> Signature:
        if isinstance(example, torch.Tensor):
            return Signature(False, (Leaf("input", example.dtype, tuple(example.shape)),))
        if isinstance(example, dict):
            return Signature(True, tuple(Leaf(k, v.dtype, tuple(v.shape)) for k, v in example.items()
                                         if isinstance(v, torch.Tensor)))
        if isinstance(example, (tuple, list)):
            return Signature(False, tuple(Leaf(f"input {k}", v.dtype, tuple(v.shape)) for k, v in enumerate(example)
                                          if isinstance(v, torch.Tensor)))
        raise InputError(f"example input of type {type(example).__name__} is not supported")

    @property
    def names(self) -> list[str]:
        return [leaf.name for leaf in self.leaves]

    def _tensors(self, inputs: Any) -> list:
        """The batch's tensors in the signature's order (KeyError/ValueError when they do not line up)."""
        if self.keyword:
            if not isinstance(inputs, dict):
                raise ValueError("the model takes named inputs " + ", ".join(self.names) + "; give the data those names")
            missing = [n for n in self.names if n not in inputs]
            if missing:
                raise ValueError(f"the data has no input named {', '.join(missing)} (it has {', '.join(map(str, inputs))})")
            return [inputs[n] for n in self.names]
        if isinstance(inputs, torch.Tensor):
            inputs = (inputs,)
        if isinstance(inputs, dict):
            raise ValueError("the data has named inputs but the model takes positional ones")
        if len(inputs) != len(self.leaves):
            raise ValueError(f"the data has {len(inputs)} inputs per sample, the model takes {len(self.leaves)}")
        return list(inputs)

    def check(self, inputs: Any, spec: str) -> None:
        """Refuse a batch that does not fit, naming the input and dim."""
        try:
            tensors = self._tensors(inputs)
        except ValueError as exc:
            raise InputError(f"--data {spec} does not fit the model: {exc}") from exc
        for leaf, t in zip(self.leaves, tensors, strict=True):
            if not isinstance(t, torch.Tensor):
                raise InputError(f"--data {spec}: {leaf.name} is a {type(t).__name__}, not a tensor")
            where = f"--data {spec}: {leaf.name}"
            if t.dim() != len(leaf.shape):
                raise InputError(f"{where} has shape {tuple(t.shape)} per batch, the model takes {leaf.shape} "
                                 f"(batch first); reshape the data to [N, {', '.join(map(str, leaf.shape[1:]))}]")
            if t.is_floating_point() != leaf.dtype.is_floating_point:
                want = "floating-point" if leaf.dtype.is_floating_point else "integer"
                raise InputError(f"{where} is {t.dtype}, the model takes {want} inputs ({leaf.dtype}); convert the data")
            for d, (got, want) in enumerate(zip(t.shape, leaf.shape, strict=True)):
                if not leaf.free(d) and got != want:
                    raise InputError(f"{where} has size {got} on dim {d}, the model takes {want} "
                                     f"(data shape {tuple(t.shape)}, example {leaf.shape})")

    def fit(self, inputs: Any) -> tuple[tuple, dict]:
        """(args, kwargs) for the model, dtypes cast to the example's."""
        tensors = [t.to(leaf.dtype) if t.dtype != leaf.dtype else t for leaf, t in zip(self.leaves, self._tensors(inputs),
                                                                                        strict=True)]
        if self.keyword:
            return (), dict(zip(self.names, tensors, strict=True))
        return tuple(tensors), {}

"""One data path for every command that takes `--data`.

    data = load_data("train.npz", example, batch_size=32)
    for batch in data.batches(limit=8):
        out = model(*batch.args, **batch.kwargs)      # shaped like the example input
        loss = cross_entropy(out, batch.labels)        # labels: int64 [N], or None

Formats (graphprune.data.sources reads them, graphprune.data.shape fits them to the example):

* `.npz` with an array `x` (inputs, [N, ...]) and optionally `y` (integer labels, [N]); for a
  model with keyword inputs, arrays named like the example's keys instead of `x`;
* a folder of images in class subfolders (the ImageFolder layout; needs torchvision), resized and
  centre-cropped to `image_size` (default: the example's H x W) and normalised with `mean`/`std`
  (default: ImageNet's 0.485,0.456,0.406 / 0.229,0.224,0.225);
* a `torch.save`'d tensor (inputs), tuple (inputs, then optionally labels), list of such
  batches, or dict of named inputs (plus `labels`/`label`/`y`), loaded with `weights_only=True`;
* a text file, one sentence per line, with `tokenizer` (a Hugging Face tokenizer folder): the
  tokenizer's outputs are matched to the example's input names;
* `package.module:factory` returning a torch `Dataset` or `DataLoader` (this runs that code).

Criteria, fine-tuning, search and explain never read files themselves; they take a `Data`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from graphprune.data.shape import Signature


@dataclass(frozen=True)
class Batch:
    """One batch of model inputs, shaped like the example, and its labels (int64 [N]) or None."""

    args: tuple
    kwargs: dict
    labels: torch.Tensor | None

    @property
    def size(self) -> int:
        first = next(t for t in (*self.args, *self.kwargs.values()) if isinstance(t, torch.Tensor))
        return int(first.shape[0])


class Data:
    """Batches from one source, fitted to a model's example input. Iterate with `batches()`."""

    def __init__(self, source, signature: Signature, batch_size: int, description: str):
        self._source = source
        self.signature = signature
        self.batch_size = batch_size
        self.description = description

    @property
    def num_samples(self) -> int | None:
        return self._source.num_samples

    @property
    def has_labels(self) -> bool:
        return self._source.has_labels

    @property
    def indices(self):
        """The samples' positions in the source, in the order `batches()` reads them unshuffled; None for a DataLoader."""
        return getattr(self._source, "indices", None)

    def __len__(self) -> int:
        """Number of batches in one pass."""
        return self._source.num_batches(self.batch_size)

    def batches(self, limit: int | None = None, shuffle: bool = False, seed: int = 0) -> Iterator[Batch]:
        """Up to `limit` batches (all by default); shuffled reproducibly from `seed` if asked."""
        source = self._source.batches(self.batch_size, shuffle, seed)
        for inputs, labels in source if limit is None else itertools.islice(source, limit):  # no batch past limit is read
            args, kwargs = self.signature.fit(inputs)
            yield Batch(args, kwargs, labels)

    def split(self, fraction: float, seed: int = 0) -> tuple[Data, Data]:
        """(rest, held out): a reproducible random split of the samples, `fraction` held out."""
        rest, held = self._source.split(fraction, seed)
        return (Data(rest, self.signature, self.batch_size, self.description),
                Data(held, self.signature, self.batch_size, self.description + f" (held-out {fraction:g})"))

    def __repr__(self) -> str:
        n = self.num_samples
        return f"Data({self.description}, {n if n is not None else '?'} samples, labels={self.has_labels})"


class Kept:
    """`data` (a Data, or anything with its `batches`) whose first `limit` batches are read once and
    kept: the calibration batches that every data stage of `shrink` reads (an image folder is decoded,
    a text file tokenized, once, not once per stage). Each pass gets copies, so a model that writes
    into its inputs cannot change later passes. Other passes (shuffled, or longer than `limit`) read
    `data` itself; every other attribute is `data`'s."""

    def __init__(self, data, limit: int | None):
        self._data, self.limit = data, limit
        self._kept: list | None = None

    def __getattr__(self, name: str):
        return getattr(self._data, name)

    def __len__(self) -> int:
        return len(self._data)

    def batches(self, limit: int | None = None, shuffle: bool = False, seed: int = 0) -> Iterator[Batch]:
        inside = self.limit is None or (limit is not None and limit <= self.limit)
        if shuffle or not inside:
            yield from self._data.batches(limit=limit, shuffle=shuffle, seed=seed)
            return
        if self._kept is None:
            self._kept = list(self._data.batches(limit=self.limit))
        for batch in self._kept[:limit]:
            yield _copy(batch)


def _copy(batch: Batch) -> Batch:
    def clone(v):
        return v.clone() if isinstance(v, torch.Tensor) else v

    return Batch(tuple(clone(a) for a in batch.args), {k: clone(v) for k, v in batch.kwargs.items()},
                 None if batch.labels is None else batch.labels.clone())


def load_data(spec: str, example: Any, *, batch_size: int = 32, tokenizer: str | None = None,
              image_size: int | None = None, mean: tuple | None = None, std: tuple | None = None,
              max_length: int | None = None) -> Data:
    """Open `spec` (a path or `package.module:factory`) as batches fitted to `example`.

    Refuses, with one line, data that does not fit the example (structure, rank, dtype kind,
    sizes of static dims), an empty set, and a missing file; nothing is run on the model.
    """
    from graphprune.data import sources
    from graphprune.errors import InputError

    if batch_size < 1:
        raise InputError(f"--batch-size {batch_size} must be 1 or more")
    signature = Signature.of(example)
    source = sources.open_source(spec, signature, tokenizer=tokenizer, image_size=image_size, mean=mean, std=std,
                                 max_length=max_length)
    data = Data(source, signature, batch_size, str(spec))
    first = next(iter(source.batches(min(batch_size, 2), False, 0)), None)
    if first is None:
        raise InputError(f"--data {spec} holds no samples; pass a non-empty data set")
    signature.check(first[0], str(spec))
    leaves = torch.utils._pytree.tree_leaves(first[0])
    if any(isinstance(t, torch.Tensor) and t.is_floating_point() and not torch.isfinite(t).all() for t in leaves):
        raise InputError(f"--data {spec}: the first samples hold NaN or infinite values; clean the data")
    if first[1] is not None:
        sources.check_label_tensor(first[1], str(spec))
    return data




def infer_example(spec: str, tokenizer: str | None = None):
    """One sample of the data as an example input, for commands given no --input-shape.

    Works for .npz, saved tensors / tuples / dicts and text with a tokenizer; None otherwise.
    Floating inputs are given as float32 (a model's usual dtype; the data is cast to it), text as
    128 tokens so the loader does not cut sentences to the first line's length.
    """
    example = _infer_example(spec, tokenizer)
    return torch.utils._pytree.tree_map(
        lambda t: t.float() if isinstance(t, torch.Tensor) and t.is_floating_point() else t, example)


def taken_by(model: Any, example: Any) -> Any:
    """A dict example without the keys `model.forward` does not take (a tokenizer's token_type_ids, say);
    anything else, or a forward that takes **kwargs, as it is."""
    import inspect

    if not isinstance(example, dict):
        return example
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return example
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return example
    return {k: v for k, v in example.items() if k in params} or example


def _infer_example(spec: str, tokenizer: str | None):
    from pathlib import Path

    import numpy as np

    from graphprune.data import sources

    path = Path(spec)
    if not path.is_file():
        return None
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            if "x" in z.files:
                return torch.from_numpy(z["x"][:1])
            return {k: torch.from_numpy(z[k][:1]) for k in z.files if k not in sources.LABEL_KEYS}
    if path.suffix in (".txt", ".text"):
        if tokenizer is None:
            return None
        line = next((ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()), "")
        return dict(sources._tokenizer(tokenizer)([line], padding="max_length", max_length=128, truncation=True,
                                                   return_tensors="pt"))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - not a tensor file: no example from it
        return None
    if isinstance(obj, list) and obj:
        obj = obj[0]
    if isinstance(obj, torch.Tensor):
        return obj[:1]
    if isinstance(obj, dict):
        return {k: v[:1] for k, v in obj.items() if k not in sources.LABEL_KEYS and isinstance(v, torch.Tensor)}
    if isinstance(obj, tuple) and obj and isinstance(obj[0], torch.Tensor):
        return obj[0][:1]
    return None


def check_labels(data: Data, output: Any, limit: int | None = None) -> None:
    """Refuse labels outside the model's classes (the last dim of its first output)."""
    from graphprune.errors import InputError

    if not data.has_labels:
        return
    leaves = [t for t in torch.utils._pytree.tree_flatten(output)[0] if isinstance(t, torch.Tensor)]
    if not leaves or leaves[0].dim() < 1 or not leaves[0].is_floating_point():
        raise InputError(f"--data {data.description} has labels but the model's output is not class scores; "
                         "drop the labels to use a label-free loss")
    classes = int(leaves[0].shape[-1])
    top = max((int(b.labels.max()) for b in data.batches(limit) if b.labels is not None and len(b.labels)), default=-1)
    if top >= classes:
        raise InputError(f"--data {data.description}: label {top} is outside the model's {classes} classes (0..{classes - 1})")


__all__ = ["Batch", "Data", "Kept", "check_labels", "infer_example", "load_data", "taken_by"]

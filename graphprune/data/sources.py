"""Readers for each `--data` format, all giving the same `Source`: batches of (inputs, labels).

A `Samples` source can be indexed (in-memory tensors, a map-style Dataset, sentences), so it
can be shuffled and split; a `Loader` source is a user's DataLoader, taken as it batches.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from graphprune.data.shape import Signature
from graphprune.errors import InputError, LoadError

LABEL_KEYS = ("labels", "label", "y")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def check_label_tensor(labels: torch.Tensor, spec: str) -> None:
    if labels.is_floating_point() or labels.dim() != 1:
        raise InputError(f"--data {spec}: labels must be integer class indices of shape [N], got "
                         f"{labels.dtype} {tuple(labels.shape)}")
    if len(labels) and int(labels.min()) < 0:
        raise InputError(f"--data {spec}: label {int(labels.min())} is negative; labels are class indices 0..C-1")


class Samples:
    """An indexable set of samples; `take(indices)` returns one batch (inputs, labels or None)."""

    def __init__(self, n: int, take: Callable[[np.ndarray], tuple], has_labels: bool, index: np.ndarray | None = None):
        self._n, self._take, self.has_labels = n, take, has_labels
        self.indices = np.arange(n) if index is None else index  # positions in the source (.npz row, text line), in order

    @property
    def num_samples(self) -> int:
        return len(self.indices)

    def num_batches(self, batch_size: int) -> int:
        return -(-len(self.indices) // batch_size)

    def batches(self, batch_size: int, shuffle: bool, seed: int) -> Iterator[tuple]:
        order = np.random.default_rng(seed).permutation(self.indices) if shuffle else self.indices
        for start in range(0, len(order), batch_size):
            yield self._take(order[start:start + batch_size])

    def split(self, fraction: float, seed: int) -> tuple[Samples, Samples]:
        if not 0.0 < fraction < 1.0:
            raise InputError(f"a held-out fraction must be in (0, 1), got {fraction}")
        order = np.random.default_rng(seed).permutation(self.indices)
        k = max(1, int(round(fraction * len(order))))
        if k >= len(order):
            raise InputError(f"{len(order)} samples are too few to hold out {fraction:g} of them")
        return (Samples(self._n, self._take, self.has_labels, np.sort(order[k:])),
                Samples(self._n, self._take, self.has_labels, np.sort(order[:k])))


class Loader:
    """A user's DataLoader: batches as it makes them (no shuffle or split of ours; no `indices`)."""

    def __init__(self, loader, interpret: Callable[[Any], tuple]):
        self._loader, self._interpret = loader, interpret
        self.num_samples = len(loader.dataset) if hasattr(loader, "dataset") and hasattr(loader.dataset, "__len__") else None
        first = next(iter(loader), None)
        self.has_labels = first is not None and interpret(first)[1] is not None

    def num_batches(self, batch_size: int) -> int:
        return len(self._loader)

    def batches(self, batch_size: int, shuffle: bool, seed: int) -> Iterator[tuple]:
        for batch in self._loader:
            yield self._interpret(batch)

    def split(self, fraction: float, seed: int):
        raise InputError("a DataLoader from a factory cannot be split; pass held-out data separately")


# -- interpreting samples -------------------------------------------------------------------
def _labels_of(obj: Any) -> torch.Tensor | None:
    if obj is None:
        return None
    t = torch.as_tensor(obj)
    return t.long() if not t.is_floating_point() else t


def interpret(obj: Any, signature: Signature) -> tuple[Any, Any]:
    """(inputs, labels or None) from a tensor, a tuple (inputs..., [labels]) or a dict (+ label key)."""
    if isinstance(obj, torch.Tensor):
        return obj, None
    if isinstance(obj, dict):
        labels = next((obj[k] for k in LABEL_KEYS if k in obj), None)
        if signature.keyword:
            return {k: v for k, v in obj.items() if k not in LABEL_KEYS}, labels
        if "x" in obj:
            return obj["x"], labels
        raise InputError("the data is a dict but the model takes positional inputs; name the inputs 'x' (labels 'y')")
    if isinstance(obj, (tuple, list)):
        n = len(signature.leaves)
        if signature.keyword and len(obj) == 2 and isinstance(obj[0], dict):
            return obj[0], obj[1]
        if len(obj) == n:
            return tuple(obj), None
        if len(obj) == n + 1:
            return tuple(obj[:n]), obj[n]
        raise InputError(f"a sample of {len(obj)} items does not fit a model of {n} inputs (inputs, then optionally labels)")
    raise InputError(f"a sample of type {type(obj).__name__} is not supported; use tensors, tuples or dicts")


def _select(tree: Any, idx: np.ndarray) -> Any:
    if isinstance(tree, torch.Tensor):
        return tree[torch.as_tensor(idx)]
    if isinstance(tree, dict):
        return {k: _select(v, idx) for k, v in tree.items()}
    return tuple(_select(v, idx) for v in tree)


def _first_len(tree: Any) -> int:
    if isinstance(tree, torch.Tensor):
        return int(tree.shape[0]) if tree.dim() else 0
    values = list(tree.values()) if isinstance(tree, dict) else list(tree)
    return _first_len(values[0]) if values else 0


def tensors(inputs: Any, labels: Any) -> Samples:
    """In-memory inputs [N, ...] (and labels [N])."""
    n = _first_len(inputs)
    lab = _labels_of(labels)
    if lab is not None and len(lab) != n:
        raise InputError(f"{len(lab)} labels for {n} samples; give one label per sample")
    return Samples(n, lambda idx: (_select(inputs, idx), None if lab is None else lab[torch.as_tensor(idx)]), lab is not None)


def dataset(ds, signature: Signature) -> Samples:
    """A map-style torch Dataset: items collated into batches."""
    from torch.utils.data import default_collate

    def take(idx: np.ndarray) -> tuple:
        return interpret(default_collate([ds[int(i)] for i in idx]), signature)

    first = interpret(ds[0], signature) if len(ds) else (None, None)
    return Samples(len(ds), take, first[1] is not None)


# -- formats ----------------------------------------------------------------------------
def _npz(path: Path, signature: Signature) -> Samples:
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    labels = arrays.get("y")
    if signature.keyword and "x" not in arrays:
        return tensors({k: torch.from_numpy(v) for k, v in arrays.items() if k in signature.names}, labels)
    if "x" not in arrays:
        raise InputError(f"--data {path}: an .npz needs an array 'x' (inputs) and optionally 'y' (labels); "
                         f"it has {', '.join(arrays) or 'none'}")
    return tensors(torch.from_numpy(arrays["x"]), labels)


def _saved(path: Path, signature: Signature) -> Samples:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets one message
        raise LoadError(f"--data {path} is not a tensor file that loads with weights_only=True; save tensors, "
                        "tuples, lists or dicts of tensors") from exc
    if isinstance(obj, list) and obj and all(isinstance(b, (torch.Tensor, tuple, list, dict)) for b in obj) \
            and not all(isinstance(b, torch.Tensor) and b.dim() == 0 for b in obj):
        if isinstance(obj[0], (tuple, list, dict)) or (isinstance(obj[0], torch.Tensor) and len(signature.leaves) == 1
                                                       and obj[0].dim() == len(signature.leaves[0].shape)):
            return _batches(obj, signature)
    inputs, labels = interpret(tuple(obj) if isinstance(obj, list) else obj, signature)
    return tensors(inputs, labels)


def _batches(items: list, signature: Signature) -> Samples:
    """A list of batches, joined along dim 0 (they must agree on every other dim)."""
    parts = [interpret(b, signature) for b in items]
    leaves = [torch.utils._pytree.tree_flatten(p[0]) for p in parts]
    spec = leaves[0][1]
    try:
        joined = [torch.cat([flat[k] for flat, _ in leaves]) for k in range(len(leaves[0][0]))]
    except RuntimeError as exc:
        raise InputError(f"the saved batches differ in shape beyond the batch dim ({str(exc).splitlines()[0]})") from exc
    inputs = torch.utils._pytree.tree_unflatten(joined, spec)
    labels = None if parts[0][1] is None else torch.cat([torch.as_tensor(p[1]) for p in parts])
    return tensors(inputs, labels)


def _text(path: Path, signature: Signature, tokenizer: str | None, max_length: int | None) -> Samples:
    if tokenizer is None:
        raise InputError(f"--data {path} is a text file; pass --tokenizer DIR (a Hugging Face tokenizer folder)")
    if not signature.keyword and len(signature.leaves) != 1:
        raise InputError("text data needs a model taking token ids (one positional input or named inputs)")
    tok = _tokenizer(tokenizer)
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    fixed = [leaf.shape[1] for leaf in signature.leaves if leaf.token]
    length = max_length or (max(fixed) if fixed else 128)

    def take(idx: np.ndarray) -> tuple:
        enc = tok([lines[int(i)] for i in idx], padding=True, truncation=True, max_length=length, return_tensors="pt")
        enc = dict(enc)
        return (enc if signature.keyword else enc["input_ids"]), None

    return Samples(len(lines), take, False)


def _tokenizer(folder: str):
    if not Path(folder).is_dir():
        raise InputError(f"--tokenizer {folder} is not a folder; pass a Hugging Face tokenizer folder")
    try:
        import transformers
    except ImportError as exc:
        raise InputError("text data needs the transformers package: pip install transformers") from exc
    try:
        return transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - transformers raises many types
        raise InputError(f"--tokenizer {folder} holds no tokenizer that loads ({type(exc).__name__})") from exc


def _images(path: Path, signature: Signature, size: int | None, mean, std) -> Samples:
    try:
        from torchvision import datasets, transforms
    except ImportError as exc:
        raise InputError("an image folder needs torchvision: pip install torchvision") from exc
    leaf = signature.leaves[0]
    if len(signature.leaves) != 1 or len(leaf.shape) != 4:
        raise InputError(f"--data {path} is an image folder but the model does not take one [N, C, H, W] input")
    channels, h, w = leaf.shape[1], leaf.shape[2], leaf.shape[3]
    side = (size, size) if size else (h, w)
    steps = [transforms.Grayscale(1)] if channels == 1 else [transforms.Lambda(lambda im: im.convert("RGB"))]
    mean = mean if mean is not None else IMAGENET_MEAN[:channels] if channels == 3 else (0.5,) * channels
    std = std if std is not None else IMAGENET_STD[:channels] if channels == 3 else (0.5,) * channels
    steps += [transforms.Resize(min(side)), transforms.CenterCrop(side), transforms.ToTensor(),
              transforms.Normalize(mean, std)]
    try:
        ds = datasets.ImageFolder(str(path), transform=transforms.Compose(steps))
    except (FileNotFoundError, RuntimeError) as exc:
        raise InputError(f"--data {path}: no images found in class subfolders (the ImageFolder layout)") from exc
    return dataset(ds, signature)


def _factory(spec: str, signature: Signature):
    from graphprune.data.imports import import_attr

    mod_name, fn_name = spec.split(":", 1)
    try:
        fn = import_attr(mod_name, fn_name)
    except (ImportError, AttributeError) as exc:
        raise InputError(f"--data {spec}: cannot import {fn_name} from {mod_name} ({exc})") from exc
    obj = fn()
    if isinstance(obj, torch.utils.data.DataLoader):
        return Loader(obj, lambda b: interpret(b, signature))
    if isinstance(obj, torch.utils.data.Dataset) and hasattr(obj, "__len__"):
        return dataset(obj, signature)
    raise InputError(f"--data {spec} returned a {type(obj).__name__}; return a torch Dataset or DataLoader")


# which format each data option applies to (graphprune.cli_options names the flags)
APPLIES = {"tokenizer": ("--tokenizer", "text"), "image_size": ("--image-size", "images"), "mean": ("--mean", "images"),
           "std": ("--std", "images")}
KINDS = {"text": "a text file", "images": "an image folder", "npz": "an .npz file", "saved": "a torch.save'd file",
         "factory": "a package.module:factory"}


def _kind(path: Path, spec: str) -> str:
    if not path.exists():
        return "factory"
    if path.is_dir():
        return "images"
    return {".npz": "npz", ".txt": "text", ".text": "text"}.get(path.suffix, "saved")


def _refuse_options(spec: str, kind: str, **given) -> None:
    """An option that does not apply to this kind of data is refused, never ignored."""
    for name, value in given.items():
        flag, applies = APPLIES[name]
        if value is not None and applies != kind:
            raise InputError(f"{flag} applies to {KINDS[applies]} only; --data {spec} is {KINDS[kind]}, whose inputs are "
                             f"used as they are: drop {flag}" + (" (normalise the arrays beforehand)"
                                                                 if name in ("mean", "std") else ""))


def open_source(spec: str, signature: Signature, *, tokenizer=None, image_size=None, mean=None, std=None,
                max_length=None):
    path = Path(spec)
    if not path.exists() and not FACTORY.match(str(spec)):
        raise LoadError(f"--data {spec}: no such file or folder")
    _refuse_options(spec, _kind(path, spec), tokenizer=tokenizer, image_size=image_size, mean=mean, std=std)
    if not path.exists():
        return _factory(str(spec), signature)
    if path.is_dir():
        return _images(path, signature, image_size, mean, std)
    if path.suffix == ".npz":
        return _npz(path, signature)
    if path.suffix in (".txt", ".text"):
        return _text(path, signature, tokenizer, max_length)
    return _saved(path, signature)

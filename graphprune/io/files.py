"""Loading models and example inputs, and writing results without partial files.

Formats:
  * `torch.export.save` programs (.pt2): safe, no code runs on load.
  * `--arch module:factory` plus a state_dict: the factory builds the model, the weights
    load with `weights_only=True`: safe.
  * `torch.save(model)` pickles: loading one runs code from the file. Refused by `safe=True`.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from graphprune.data.imports import cwd_importable, import_attr
from graphprune.errors import InputError, LoadError, first_line
from graphprune.io import inputspec


def _existing(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists():
        raise LoadError(f"no such file: {p}")
    if not p.is_file():
        raise LoadError(f"{p} is not a file")
    if not os.access(p, os.R_OK):
        raise LoadError(f"{p} is not readable; check its permissions")
    return p


def is_exported_program(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.endswith("serialized_exported_program.json") or "/models/" in n for n in zf.namelist())


def _factory(spec: str) -> Callable[[], torch.nn.Module]:
    if ":" not in spec:
        raise InputError(f"--arch {spec!r} must look like package.module:factory")
    mod_name, fn_name = spec.split(":", 1)
    try:
        fn = import_attr(mod_name, fn_name)
    except ImportError as exc:
        raise InputError(f"--arch: cannot import {mod_name!r} ({exc}); add its folder to PYTHONPATH") from exc
    except AttributeError:
        fn = None
    if not callable(fn):
        raise InputError(f"--arch: {mod_name} has no callable {fn_name!r}")
    return fn


def _truncated(path: Path) -> bool:
    """A torch zip archive (it starts like one) whose central directory cannot be read."""
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04" and not zipfile.is_zipfile(path)


def _torch_load(path: Path, weights_only: bool) -> Any:
    if _truncated(path):
        raise LoadError(f"cannot read {path} as a torch file (the file is truncated or damaged); "
                        "is it a model saved with torch.save?")
    try:
        with cwd_importable():  # a pickled model's classes may live beside it
            return torch.load(path, map_location="cpu", weights_only=weights_only)
    except ModuleNotFoundError as exc:
        raise LoadError(
            f"{path}: the pickled model needs module {exc.name!r}, which cannot be imported; "
            "run from the folder that contains it or add that folder to PYTHONPATH"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - every unreadable file gets the same clear message
        first = first_line(exc, 200)
        if weights_only and isinstance(exc, pickle.UnpicklingError):  # what torch raises for a refused pickle
            raise LoadError(
                f"{path} is a pickled object, refused in safe mode; save a .pt2 with torch.export.save "
                "or pass --arch module:factory with a state_dict"
            ) from exc
        raise LoadError(f"cannot read {path} as a torch file ({first}); is it a model saved with torch.save?") from exc


def _intact(p: Path) -> None:
    """torch's zip files carry CRCs that torch.load does not check: a damaged file loads as garbage."""
    if not zipfile.is_zipfile(p):
        return
    try:
        with zipfile.ZipFile(p) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError) as exc:
        raise LoadError(f"{p} is damaged ({exc}); save the model again") from exc
    if bad is not None:
        raise LoadError(f"{p} is damaged: {bad} fails its checksum; save the model again")


def load_model(path: str | Path, *, arch: str | None = None, safe: bool = False) -> tuple[torch.nn.Module, Any]:
    """Load a model file; returns (module, example input stored with it or None)."""
    p = _existing(path)
    _intact(p)
    if is_exported_program(p):
        try:
            ep = torch.export.load(str(p))
        except Exception as exc:  # noqa: BLE001
            raise LoadError(f"cannot read {p} as a torch.export program: {first_line(exc, 200)}") from exc
        example = None
        if getattr(ep, "example_inputs", None):
            args, kwargs = ep.example_inputs
            example = kwargs if kwargs and not args else tuple(args)
        return ep.module(), example
    if arch is not None:
        state = _torch_load(p, weights_only=True)
        if not isinstance(state, dict):
            raise LoadError(f"{p} does not hold a state_dict, which --arch needs")
        model = _factory(arch)()
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            detail = " ".join(line.strip() for line in str(exc).splitlines()[1:3])
            raise LoadError(f"{p} does not fit {arch}: {detail[:300]}") from exc
        return model, None
    obj = _torch_load(p, weights_only=safe)
    if isinstance(obj, torch.nn.Module):
        return obj, inputspec.stored(obj)  # a model from `graphprune shrink` carries its example's spec
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise LoadError(f"{p} holds a state_dict, not a model; pass --arch package.module:factory to build the model")
    raise LoadError(f"{p} holds a {type(obj).__name__}, not a torch.nn.Module; save the model with torch.save(model)")


def check_onnx(path: str | Path) -> Path:
    """An existing file that parses as an ONNX model."""
    import onnx

    p = _existing(path)
    try:
        onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises its own types
        raise LoadError(f"{p} is not an ONNX model ({type(exc).__name__}); pass files written by graphprune export") from exc
    return p


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(x) for x in text.replace("x", ",").split(","))
    except ValueError:
        dims = ()
    if not dims or any(d <= 0 for d in dims):
        raise InputError(f"--input-shape {text!r} is not a list of positive integers such as 1,3,224,224")
    return dims


def load_example(path: str | Path | None, shape: str | None, fallback: Any = None) -> Any:
    if path and shape:
        raise InputError("pass either --example-input or --input-shape, not both")
    if shape:
        gen = torch.Generator().manual_seed(0)
        return torch.randn(parse_shape(shape), generator=gen)
    if path:
        p = _existing(path)
        obj = _torch_load(p, weights_only=True)
        if not isinstance(obj, (torch.Tensor, tuple, list, dict)):
            raise InputError(f"{p} holds a {type(obj).__name__}; save a tensor, a tuple or a dict of inputs")
        return tuple(obj) if isinstance(obj, list) else obj
    if fallback is not None:
        return fallback
    raise InputError("the model needs an example input: pass --input-shape 1,3,224,224 or --example-input x.pt")


def check_output(out: Path, inputs: list[Path | None], force: bool, option: str = "-o") -> None:
    """Refuse to write `out` over an input (even with --force), over an existing file without
    --force, or into a missing folder; `option` names the command-line option that chose `out`."""
    for p in inputs:
        if p is not None and out.resolve() == Path(p).resolve():
            raise InputError(f"refusing to overwrite the input {p}; choose another {option}")
    if out.exists() and not force:
        raise InputError(f"{out} exists; pass --force to replace it or choose another {option}")
    if not out.parent.exists():
        raise InputError(f"folder {out.parent} does not exist")


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_outputs():
    """Stage several outputs; all of them replace their targets only if the block succeeds.

    `stage(out)` returns a temporary path beside `out`. On success each is given the usual
    file mode and renamed onto its target (renames last, after every write has finished);
    on any failure or Ctrl-C every temporary file is removed and no target is touched.
    """
    staged: list[tuple[Path, Path]] = []

    def stage(out: Path) -> Path:
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        os.close(fd)
        staged.append((Path(tmp), out))
        return Path(tmp)

    try:
        yield stage
        for tmp, _ in staged:
            os.chmod(tmp, _umask_mode())
        for tmp, out in staged:
            os.replace(tmp, out)
    finally:
        for tmp, _ in staged:
            if tmp.exists():
                tmp.unlink()


@contextlib.contextmanager
def atomic_path(out: Path):
    """Yield a temporary path beside `out`; it replaces `out` only if the block succeeds."""
    with atomic_outputs() as stage:
        yield stage(out)


def save_model(model: torch.nn.Module, out: Path) -> None:
    with atomic_path(out) as tmp:
        torch.save(model, tmp)


def save_text(text: str, out: Path) -> None:
    with atomic_path(out) as tmp:
        tmp.write_text(text)

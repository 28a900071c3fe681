"""ONNX files on disk: the external-data file beside a model over the protobuf limit, sizes, staging and
publishing both files together.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx

from graphprune.io.files import atomic_outputs

# Above this many bytes of initializers, weights go to `<name>.data` (protobuf caps a file at 2 GiB).
PROTO_LIMIT = 1_500_000_000


def _tensor_bytes(t: onnx.TensorProto) -> int:
    if t.HasField("raw_data"):
        return len(t.raw_data)
    itemsize = onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    return int(np.prod(t.dims, dtype=np.int64)) * itemsize


def save(proto: onnx.ModelProto, file: Path) -> Path:
    """Save `proto`; its weights go to `<file>.data` when they would pass the 2 GiB limit."""
    file.parent.mkdir(parents=True, exist_ok=True)
    large = sum(_tensor_bytes(t) for t in proto.graph.initializer) > PROTO_LIMIT
    onnx.save_model(
        proto,
        str(file),
        save_as_external_data=large,
        all_tensors_to_one_file=True,
        location=f"{file.name}.data",
        size_threshold=1024,
    )
    return file


def data_path(path: Path) -> Path:
    """Where `export_onnx(..., path)` puts the weights of a model over the protobuf limit."""
    return path.with_name(f"{path.name}.data")


def onnx_files(path: str | Path) -> list[Path]:
    """An ONNX file and the external data files it references (they must move together)."""
    path = Path(path)
    proto = onnx.load(str(path), load_external_data=False)
    locations = {e.value for t in proto.graph.initializer for e in t.external_data if e.key == "location"}
    return [path, *(path.parent / loc for loc in sorted(locations))]


def stage_onnx(src: Path, dst: Path, stage: Callable[[Path], Path]) -> None:
    """Move the ONNX model at `src` and its data files into `stage`d files for `dst` (io.atomic_outputs)."""
    for file in onnx_files(src):
        os.replace(file, stage(dst.parent / file.relative_to(src.parent)))


def onnx_size_bytes(path: str | Path) -> int:
    """Bytes of an ONNX file plus the external data files it references."""
    return sum(file.stat().st_size for file in onnx_files(path))


def publish(src: Path, dst: Path) -> None:
    """Move the checked model and its `.data`, if any, onto `dst`: all files or none."""
    with atomic_outputs() as stage:
        stage_onnx(src, dst, stage)



"""Multiply-accumulates (MACs) of an ONNX model, counted from its graph at given input shapes.

The ops counted are the ones graphprune.cost.macs counts in PyTorch (torch's FlopCounterMode:
matrix products and convolutions), so the two counts of one model agree:

    Conv           prod(Y.shape) * prod(W.shape[1:])     W = [M, C/g, k...]
    ConvTranspose  prod(X.shape) * prod(W.shape[1:])     W = [C, M/g, k...]
    Gemm           prod(Y.shape) * K                     K = A.shape[0] if transA else A.shape[1]
    MatMul         prod(Y.shape) * K                     K = A.shape[-1] (1-D A: its length)

Shapes come from ONNX Runtime's symbolic shape inference (it follows the shapes that
Shape/Gather/Concat compute for Reshape, where onnx's own inference stops), run after
every input dim is fixed to the size it is fed with. The count is None, unknown, when a
counted op has a shape inference cannot give, or the graph holds an op whose cost is not
counted here (recurrent layers, fused attention, einsum, quantised products, control
flow, functions): a number is given only when it is the whole count.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import onnx

from graphprune.errors import first_line

log = logging.getLogger(__name__)

Shapes = dict[str, tuple[int, ...]]
UNCOUNTED = frozenset({
    "LSTM", "GRU", "RNN", "Attention", "MultiHeadAttention", "Einsum", "ConvInteger", "MatMulInteger",
    "QLinearConv", "QLinearMatMul", "If", "Loop", "Scan",
})


def _conv(node: onnx.NodeProto, shapes: Shapes) -> int | None:
    out, weight = shapes.get(node.output[0]), shapes.get(node.input[1])
    return None if out is None or weight is None else math.prod(out) * math.prod(weight[1:])


def _conv_transpose(node: onnx.NodeProto, shapes: Shapes) -> int | None:
    x, weight = shapes.get(node.input[0]), shapes.get(node.input[1])
    return None if x is None or weight is None else math.prod(x) * math.prod(weight[1:])


def _gemm(node: onnx.NodeProto, shapes: Shapes) -> int | None:
    out, a = shapes.get(node.output[0]), shapes.get(node.input[0])
    if out is None or a is None or len(a) != 2:
        return None
    trans_a = next((attr.i for attr in node.attribute if attr.name == "transA"), 0)
    return math.prod(out) * a[0 if trans_a else 1]


def _matmul(node: onnx.NodeProto, shapes: Shapes) -> int | None:
    out, a = shapes.get(node.output[0]), shapes.get(node.input[0])
    return None if out is None or not a else math.prod(out) * a[-1]


FORMULAS: dict[str, Callable[[onnx.NodeProto, Shapes], int | None]] = {
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "Gemm": _gemm,
    "MatMul": _matmul,
}


def _static(value: onnx.ValueInfoProto) -> tuple[int, ...] | None:
    tensor = value.type.tensor_type
    if not tensor.HasField("shape") or any(not d.HasField("dim_value") for d in tensor.shape.dim):
        return None
    return tuple(d.dim_value for d in tensor.shape.dim)


def _fix_inputs(graph: onnx.GraphProto, sizes: Mapping[str, Sequence[int]]) -> None:
    for value in graph.input:
        shape = sizes.get(value.name)
        if shape is None:
            continue
        dims = value.type.tensor_type.shape.dim
        for dim, size in zip(dims, shape, strict=False):
            dim.Clear()
            dim.dim_value = int(size)


def _known_shapes(model: onnx.ModelProto) -> Shapes:
    graph = model.graph
    shapes: Shapes = {t.name: tuple(t.dims) for t in graph.initializer}
    for value in (*graph.input, *graph.value_info, *graph.output):
        shape = _static(value)
        if shape is not None:
            shapes[value.name] = shape
    for node in graph.node:
        if node.op_type == "Constant":
            tensor = next((a.t for a in node.attribute if a.name == "value"), None)
            if tensor is not None:
                shapes[node.output[0]] = tuple(tensor.dims)
    return shapes


def count_onnx_macs(path: str | Path, input_shapes: Mapping[str, Sequence[int]]) -> int | None:
    """MACs of one run of the ONNX model at `path` on inputs of `input_shapes`; None if not knowable."""
    model = onnx.load(str(path), load_external_data=False)
    functions = {(f.domain, f.name) for f in model.functions}
    nodes = model.graph.node
    if any(n.op_type in UNCOUNTED or (n.domain, n.op_type) in functions for n in nodes):
        return None
    _fix_inputs(model.graph, input_shapes)
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    try:
        inferred = SymbolicShapeInference.infer_shapes(model, auto_merge=False, guess_output_rank=False)
    except Exception as exc:  # noqa: BLE001 - onnx raises its own types; unknown, not an error
        log.info("shape inference failed on %s (%s); MACs unknown", Path(path).name, first_line(exc))
        return None
    shapes = _known_shapes(inferred)
    total = 0
    for node in inferred.graph.node:
        formula = FORMULAS.get(node.op_type)
        if formula is None:
            continue
        macs = formula(node, shapes)
        if macs is None:
            log.info("%s: no static shape for %s %s; MACs unknown", Path(path).name, node.op_type, node.name)
            return None
        total += macs
    return total

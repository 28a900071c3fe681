"""The inputs the `graphprune` CLI must refuse, shared by tests/test_cli.py and scripts/errors_table.py.

Each `Case` is a command as a user types it, run in a folder that holds the files `make_files`
writes, plus the key words its single `error:` line must contain. The rule every case is held to:
exit code 2, one `error:` line with the key words, no traceback, and the folder left as it was.

A case whose `bug` is set documents a known graphprune defect: the test is `xfail(strict=True)`
with that reason, so it starts failing (and must be unmarked) once the defect is fixed.
"""

from __future__ import annotations

import functools
import inspect
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from tests.archs import build

SHAPE = ("--input-shape", "1,3,8,8")
TEST = "tests/test_cli.py::test_bad_input_exits_2_with_one_line_and_writes_nothing"


class Untraceable(nn.Module):
    """A conv whose forward branches on a tensor value, which torch.export cannot capture."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        if y.sum() > 0:
            return y.relu()
        return -y


def _line_of(fn, text: str) -> int:
    lines, start = inspect.getsourcelines(fn)
    return start + next(i for i, line in enumerate(lines) if text in line)


BRANCH = f"{Path(__file__).name}:{_line_of(Untraceable.forward, 'if y.sum() > 0')}"


@dataclass(frozen=True)
class Case:
    name: str
    title: str  # what the user did, in words
    argv: tuple[str, ...]  # the command line after `graphprune`, run inside the folder
    words: tuple[str, ...]  # key words of the expected `error:` line
    bug: str = ""  # a known graphprune defect that breaks the rule for this case
    non_root: bool = False  # root ignores file permissions: the case holds only for other users


CASES: tuple[Case, ...] = (
    Case("missing_path", "model path does not exist", ("shrink", "nope.pt", *SHAPE), ("no such file", "nope.pt")),
    Case("unreadable", "model file not readable (chmod 000)", ("shrink", "locked.pt", *SHAPE),
         ("not readable", "permissions"), non_root=True),
    Case("text_file", "a text file, not a torch file", ("shrink", "notes.txt", *SHAPE), ("cannot read", "torch file")),
    Case("truncated", "a .pt cut in half", ("shrink", "trunc.pt", *SHAPE), ("cannot read", "trunc.pt")),
    Case("corrupted", "a .pt with 64 bytes of a weight zeroed", ("shrink", "corrupt.pt", *SHAPE), ("is damaged", "checksum")),
    Case("truncated_pt2", "a .pt2 cut in half", ("shrink", "trunc.pt2"), ("cannot read", "trunc.pt2")),
    Case("corrupted_pt2", "a .pt2 with 64 bytes of a weight zeroed", ("shrink", "corrupt.pt2"), ("is damaged", "checksum")),
    Case("state_dict", "a state_dict without --arch", ("shrink", "sd.pt", *SHAPE), ("state_dict", "--arch")),
    Case("pickled_list", "a pickled list, not a module", ("shrink", "list.pt", *SHAPE), ("list", "not a torch.nn.Module")),
    Case("ratio_one", "--ratio 1.0", ("shrink", "m.pt", *SHAPE, "--ratio", "1.0"), ("--ratio 1.0", "[0, 1)")),
    Case("ratio_negative", "--ratio -0.1", ("shrink", "m.pt", *SHAPE, "--ratio", "-0.1"), ("--ratio -0.1", "[0, 1)")),
    Case("ratio_above_one", "--ratio 1.5", ("shrink", "m.pt", *SHAPE, "--ratio", "1.5"), ("--ratio 1.5", "[0, 1)")),
    Case("shape_with_letter", "--input-shape 1,3,x", ("shrink", "m.pt", "--input-shape", "1,3,x"),
         ("--input-shape", "'1,3,x'", "positive integers")),
    Case("shape_letters", "--input-shape a,b", ("shrink", "m.pt", "--input-shape", "a,b"),
         ("--input-shape", "'a,b'", "positive integers")),
    Case("shape_zero", "--input-shape with a zero size", ("shrink", "m.pt", "--input-shape", "0,3,8,8"),
         ("--input-shape", "'0,3,8,8'", "positive integers")),
    Case("wrong_channels", "example input the model rejects (4 channels for a 3-channel conv)",
         ("shrink", "m.pt", "--input-shape", "1,4,8,8"), ("rejects the example input", "channels")),
    Case("no_example", "no example input at all", ("shrink", "m.pt"), ("example input", "--input-shape")),
    Case("untraceable", "model that branches on a tensor value (`if y.sum() > 0:`)", ("shrink", "untraceable.pt", *SHAPE),
         ("cannot capture the model", "data-dependent", BRANCH)),
    Case("output_exists", "output exists, no --force", ("shrink", "m.pt", *SHAPE, "-o", "list.pt"), ("exists", "--force")),
    Case("output_is_input", "-o is the input, with --force", ("shrink", "m.pt", *SHAPE, "-o", "m.pt", "--force"),
         ("refusing to overwrite the input",)),
    Case("output_folder_missing", "-o in a folder that does not exist", ("shrink", "m.pt", *SHAPE, "-o", "nodir/out.pt"),
         ("folder", "nodir", "does not exist")),
    Case("safe_refuses_pickle", "--safe with a pickled model", ("shrink", "m.pt", *SHAPE, "--safe"),
         ("refused in safe mode", "--arch")),
    Case("arch_not_importable", "--arch module that cannot be imported", ("shrink", "sd.pt", *SHAPE, "--arch", "no_such_pkg:build"),
         ("--arch", "cannot import")),
    Case("arch_mismatch", "--arch factory whose model does not fit the state_dict",
         ("shrink", "other_sd.pt", *SHAPE, "--arch", "tests.archs:build"), ("other_sd.pt", "does not fit", "tests.archs:build")),
    Case("criterion_unknown", "--criterion that does not exist", ("shrink", "m.pt", *SHAPE, "--criterion", "l7"),
         ("unknown criterion", "'l7'")),
    Case("target_macs_zero", "--target-macs 0", ("shrink", "m.pt", *SHAPE, "--target-macs", "0"), ("--target-macs 0", "(0, 1)")),
    Case("target_macs_above_one", "--target-macs 1.5", ("shrink", "m.pt", *SHAPE, "--target-macs", "1.5"),
         ("--target-macs 1.5", "(0, 1)")),
    Case("data_criterion_without_data", "--criterion taylor without --data", ("shrink", "m.pt", *SHAPE, "--criterion", "taylor"),
         ("taylor", "--data")),
    Case("data_missing", "--data naming a file that does not exist", ("shrink", "m.pt", *SHAPE, "--data", "nope.npz"),
         ("--data nope.npz", "no such file")),
    Case("threshold_unknown", "--threshold that is not a rule", ("shrink", "m.pt", *SHAPE, "--threshold", "median"),
         ("threshold 'median'", "sigma:K")),
    Case("round_to_zero", "--round-to 0", ("shrink", "m.pt", *SHAPE, "--round-to", "0"), ("--round-to 0", "1 or more")),
    Case("inspect_missing_path", "`inspect` with a missing file", ("inspect", "nope.pt", *SHAPE), ("no such file",)),
    Case("export_missing_path", "`export` with a missing file", ("export", "nope.pt", *SHAPE), ("no such file", "nope.pt")),
    Case("bench_missing_path", "`bench` with a missing file", ("bench", "nope.onnx"), ("no such file", "nope.onnx")),
    Case("bench_not_onnx", "`bench` with a text file", ("bench", "notes.txt"), ("notes.txt", "ONNX")),
    Case("speedup_below_one", "--speedup 0.5", ("shrink", "m.pt", *SHAPE, "--speedup", "0.5"), ("--speedup 0.5", "more than 1")),
    Case("target_latency_above_one", "--target-latency 1.5", ("shrink", "m.pt", *SHAPE, "--target-latency", "1.5"),
         ("--target-latency 1.5", "(0, 1)")),
    Case("both_budgets", "--speedup and --target-latency together",
         ("shrink", "m.pt", *SHAPE, "--speedup", "2", "--target-latency", "0.5"), ("--target-latency", "--speedup", "not both")),
    Case("unknown_search", "--search annealing", ("shrink", "m.pt", *SHAPE, "--speedup", "2", "--search", "annealing"),
         ("--search", "annealing", "greedy")),
    Case("search_without_budget", "--search greedy without a budget", ("shrink", "m.pt", *SHAPE, "--search", "greedy"),
         ("--search", "--speedup")),
    Case("search_blocks_without_budget", "--search-blocks without a budget",
         ("shrink", "m.pt", *SHAPE, "--search-blocks"), ("--search-blocks", "--speedup")),
    Case("search_finetune_without_data", "--search-finetune-epochs without --data",
         ("shrink", "m.pt", *SHAPE, "--speedup", "2", "--search-finetune-epochs", "1"), ("--search-finetune-epochs", "--data")),
    Case("bench_json_is_input", "`bench --json` naming the input model", ("bench", "m.onnx", "--json", "m.onnx"),
         ("refusing to overwrite the input", "m.onnx", "--json")),
    Case("bench_json_is_input_forced", "`bench --json` naming the input model, with --force",
         ("bench", "m.onnx", "--json", "m.onnx", "--force"), ("refusing to overwrite the input", "m.onnx")),
    Case("bench_json_exists", "`bench --json` to an existing file, no --force", ("bench", "m.onnx", "--json", "notes.txt"),
         ("notes.txt exists", "--force")),
    Case("bench_tokens_no_example", "`bench` of a token model (symbolic sequence) without --example-input",
         ("bench", "tokens.onnx"), ("tokens.onnx", "symbolic dim 1", "--example-input")),
    Case("bench_example_mismatch", "`bench --example-input` whose names the model does not take",
         ("bench", "tokens.onnx", "--example-input", "wrong_keys.pt"), ("example input gives", "pixels", "input_ids")),
    Case("bench_unloadable", "`bench` of an ONNX file onnxruntime cannot load (an op that does not exist)",
         ("bench", "bad_op.onnx"), ("onnxruntime cannot load", "bad_op.onnx")),
    Case("export_data_exists", "`export` whose OUTPUT.data exists, no --force", ("export", "m.pt", *SHAPE, "-o", "stale.onnx"),
         ("stale.onnx.data exists", "--force")),
    Case("shrink_onnx_data_exists", "`shrink --onnx` whose ONNX .data file exists, no --force",
         ("shrink", "m.pt", *SHAPE, "-o", "stale.pt", "--onnx"), ("stale.onnx.data exists", "--force")),
    Case("explain_no_data", "`explain` with --data that does not exist", ("explain", "m.pt", "m.pt", *SHAPE, "--data", "nope.npz"),
         ("--data nope.npz", "no such file")),
    Case("explain_output_exists", "`explain` onto an existing file, no --force",
         ("explain", "m.pt", "m.pt", "--data", "nope.npz", "-o", "notes.txt"), ("exists", "--force")),
    Case("explain_output_is_input", "`explain -o` an input, with --force",
         ("explain", "m.pt", "m.pt", "--data", "nope.npz", "-o", "m.pt", "--force"), ("refusing to overwrite the input",)),
    Case("explain_no_example", "`explain` with data that does not tell the input layout",
         ("explain", "m.pt", "m.pt", "--data", "notes.txt"), ("--example-input", "--input-shape")),
)
BAD = {case.name: case for case in CASES}


def _zero_bytes(data: bytes, tensor: torch.Tensor, count: int = 64) -> bytes:
    """`data` with the first `count` bytes of `tensor`'s raw storage, as stored in the zip, set to zero."""
    at = data.find(tensor.detach().numpy().tobytes())
    if at < 0:
        raise ValueError("tensor bytes not found in the file")
    return data[:at] + bytes(count) + data[at + count :]


@functools.cache
def _program_bytes() -> bytes:
    """TinyNet saved with torch.export.save (exported once per process: it takes seconds)."""
    torch.manual_seed(0)
    ep = torch.export.export(build(), (torch.randn(2, 3, 8, 8),))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.pt2"
        torch.export.save(ep, str(path))
        return path.read_bytes()


def _onnx_model(path: Path, nodes: list, inputs: list, outputs: list, weights: list) -> None:
    import onnx
    from onnx import helper

    graph = helper.make_graph(nodes, path.stem, inputs, outputs, weights)
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), str(path))


def _onnx_files(folder: Path) -> None:
    """m.onnx (y = x @ W, dynamic batch), tokens.onnx (an embedding of ids [batch, sequence]) and
    bad_op.onnx (a node of an op no runtime has): small ONNX files written without an exporter."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((16, 8)).astype(np.float32), "W")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])
    _onnx_model(folder / "m.onnx", [helper.make_node("MatMul", ["x", "W"], ["y"])], [x], [y], [weight])
    _onnx_model(folder / "bad_op.onnx", [helper.make_node("NoSuchOp", ["x", "W"], ["y"])], [x], [y], [weight])
    table = numpy_helper.from_array(rng.standard_normal((50, 8)).astype(np.float32), "E")
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", "sequence", 8])
    _onnx_model(folder / "tokens.onnx", [helper.make_node("Gather", ["E", "input_ids"], ["out"])], [ids], [out], [table])


def make_files(folder: Path) -> Path:
    """Write into `folder` a tiny conv model in every format the CLI reads, and the files it must refuse."""
    torch.manual_seed(0)
    model = build()
    torch.save(model, folder / "m.pt")
    torch.save(model.state_dict(), folder / "sd.pt")
    torch.save(Untraceable().state_dict(), folder / "other_sd.pt")
    torch.save(Untraceable().eval(), folder / "untraceable.pt")
    torch.save([1, 2, 3], folder / "list.pt")
    (folder / "notes.txt").write_text("not a model\n")
    data = (folder / "m.pt").read_bytes()
    (folder / "trunc.pt").write_bytes(data[: len(data) // 2])
    weight = model.features[3].weight
    (folder / "corrupt.pt").write_bytes(_zero_bytes(data, weight))
    (folder / "locked.pt").write_bytes(data)
    os.chmod(folder / "locked.pt", 0)
    program = _program_bytes()
    (folder / "m.pt2").write_bytes(program)
    (folder / "trunc.pt2").write_bytes(program[: len(program) // 2])
    (folder / "corrupt.pt2").write_bytes(_zero_bytes(program, weight))
    _onnx_files(folder)
    torch.save({"pixels": torch.zeros(1, 4, dtype=torch.long)}, folder / "wrong_keys.pt")
    (folder / "stale.onnx.data").write_bytes(b"weights of another model")
    return folder

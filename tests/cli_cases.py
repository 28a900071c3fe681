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

from tests.archs import TinyClassifier, build

SHAPE = ("--input-shape", "1,3,8,8")
FT = ("finetune", "pruned_cls.pt", "--data", "cls.npz")  # a pruned classifier (it carries its example) and its data
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
    Case("finetune_teacher_mismatch", "`finetune --teacher` a model whose outputs are not the student's (10 classes, not 4)",
         (*FT, "--teacher", "cls10.pt"), ("teacher's outputs", "do not match", "--teacher")),
    Case("finetune_mean_with_npz", "`finetune --mean` with .npz data (it normalises image folders only)",
         (*FT, "--mean", "0.5,0.5,0.5"), ("--mean", "image folder", "drop --mean")),
    Case("finetune_tokenizer_with_npz", "`finetune --tokenizer` with .npz data", (*FT, "--tokenizer", "nodir"),
         ("--tokenizer", "text file", "drop --tokenizer")),
    Case("finetune_distill_without_teacher", "`finetune --distill-loss kl` without --teacher",
         (*FT, "--distill-loss", "kl"), ("--distill-loss", "--teacher")),
    Case("finetune_arch_without_teacher", "`finetune --arch` (it builds the teacher) without --teacher",
         (*FT, "--arch", "tests.archs:build"), ("--arch", "--teacher")),
    Case("finetune_example_dtype", "`finetune --example-input` of float64 for a float32 model",
         (*FT, "--example-input", "f64.pt"), ("rejects the example input", "dtype")),
    Case("finetune_nan_data", "`finetune` on data holding NaN", ("finetune", "pruned_cls.pt", "--data", "nan.npz"),
         ("nan.npz", "NaN")),
    Case("finetune_labels_out_of_range", "`finetune` on labels beyond the model's classes",
         ("finetune", "pruned_cls.pt", "--data", "oob.npz"), ("label 13", "outside", "4 classes")),
    Case("finetune_empty_data", "`finetune` on an empty data set", ("finetune", "pruned_cls.pt", "--data", "empty.npz"),
         ("no samples",)),
    Case("finetune_wrong_shape_data", "`finetune` on images of another size", ("finetune", "pruned_cls.pt", "--data",
         "big.npz"), ("size 16 on dim 2", "takes 8")),
    Case("finetune_missing_teacher", "`finetune --teacher` naming no file", (*FT, "--teacher", "nope.pt"),
         ("no such file", "nope.pt")),
    Case("finetune_output_exists", "`finetune -o` onto an existing file, no --force", (*FT, "-o", "notes.txt"),
         ("exists", "--force")),
    Case("eval_mismatched_models", "`eval` of two models whose outputs differ (4 and 10 classes)",
         ("eval", "cls.pt", "cls10.pt", "--data", "cls.npz"), ("cls10.pt gives outputs", "same outputs")),
    Case("eval_labels_out_of_range", "`eval` on labels beyond the model's classes", ("eval", "cls.pt", "--data", "oob.npz"),
         ("label 13", "outside", "4 classes")),
    Case("eval_example_dtype", "`eval --example-input` of float64 for a float32 model",
         ("eval", "cls.pt", "--data", "cls.npz", "--example-input", "f64.pt"), ("cls.pt rejects the example input",)),
    Case("eval_mean_with_npz", "`eval --std` with .npz data", ("eval", "cls.pt", "--data", "cls.npz", "--std", "0.5"),
         ("--std", "image folder")),
    Case("eval_json_exists", "`eval --json` onto an existing file, no --force",
         ("eval", "cls.pt", "--data", "cls.npz", "--json", "notes.txt"), ("exists", "--force")),
    Case("eval_missing_model", "`eval` of a file that does not exist", ("eval", "nope.pt", "--data", "cls.npz"),
         ("no such file", "nope.pt")),
    Case("explain_mismatched_models", "`explain` of two models whose outputs differ",
         ("explain", "cls.pt", "cls10.pt", "--data", "cls.npz"), ("cls10.pt gives outputs", "same outputs")),
    Case("explain_labels_out_of_range", "`explain` on labels beyond the model's classes",
         ("explain", "cls.pt", "pruned_cls.pt", "--data", "oob.npz"), ("label 13", "outside")),
    Case("explain_image_size_with_npz", "`explain --image-size` with .npz data",
         ("explain", "cls.pt", "pruned_cls.pt", "--data", "cls.npz", "--image-size", "8"), ("--image-size", "image folder")),
    Case("inspect_example_dtype", "`inspect --example-input` of float64 for a float32 model",
         ("inspect", "cls.pt", "--example-input", "f64.pt"), ("cls.pt rejects the example input", "dtype")),
    Case("export_example_dtype", "`export --example-input` of float64 for a float32 model",
         ("export", "cls.pt", "--example-input", "f64.pt"), ("cls.pt rejects the example input",)),
    Case("export_not_onnx_name", "`export -o out.pt` (export writes ONNX)", ("export", "m.pt", *SHAPE, "-o", "out.pt"),
         ("writes an ONNX model", ".onnx")),
    Case("shrink_onnx_name", "`shrink -o out.onnx` (shrink writes a PyTorch model)",
         ("shrink", "m.pt", *SHAPE, "-o", "out.onnx"), ("not ONNX", "--onnx")),
    Case("shrink_mean_without_data", "`shrink --mean` without --data", ("shrink", "m.pt", *SHAPE, "--mean", "0.5"),
         ("--mean", "no --data")),
    Case("shrink_ratio_and_budget", "`shrink --ratio 0.3 --target-macs 0.5` (two rules for how much goes)",
         ("shrink", "m.pt", *SHAPE, "--ratio", "0.3", "--target-macs", "0.5"), ("--ratio", "--target-macs", "pass one")),
    Case("shrink_budget_and_speedup", "`shrink --target-macs 0.5 --speedup 2`",
         ("shrink", "m.pt", *SHAPE, "--target-macs", "0.5", "--speedup", "2"), ("--target-macs", "--speedup", "pass one")),
    Case("shrink_bench_without_onnx", "`shrink --bench` without --onnx", ("shrink", "m.pt", *SHAPE, "--bench"),
         ("--bench", "--onnx")),
    Case("shrink_training_option_without_recovery", "`shrink --lr 0.1` without --finetune-epochs",
         ("shrink", "m.pt", *SHAPE, "--lr", "0.1"), ("--lr", "--finetune-epochs")),
    Case("shrink_provider_without_search", "`shrink --provider cuda` without a latency budget",
         ("shrink", "m.pt", *SHAPE, "--provider", "cuda"), ("--provider", "--speedup")),
    Case("shrink_samples_without_random", "`shrink --speedup 2 --samples 3` (greedy search samples nothing)",
         ("shrink", "m.pt", *SHAPE, "--speedup", "2", "--samples", "3"), ("--samples", "--search random")),
    Case("depth_block_criterion_without_blocks", "`shrink --block-criterion influence` without --remove-blocks",
         ("shrink", "m.pt", *SHAPE, "--block-criterion", "influence"), ("--block-criterion", "--remove-blocks")),
    Case("depth_no_blocks", "`shrink --remove-blocks 1` of a model without removable blocks",
         ("shrink", "cls.pt", *SHAPE, "--remove-blocks", "1", "--data", "cls.npz"), ("no removable blocks",)),
    Case("shrink_labels_out_of_range", "`shrink --data` with labels beyond the model's classes",
         ("shrink", "cls.pt", *SHAPE, "--criterion", "taylor", "--data", "oob.npz"), ("label 13", "outside")),
    Case("text_without_tokenizer", "text --data without --tokenizer", ("shrink", "cls.pt", *SHAPE, "--data", "notes.txt"),
         ("notes.txt", "text file", "--tokenizer")),
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


@functools.cache
def _classifier_bytes() -> tuple[bytes, bytes, bytes]:
    """TinyClassifier (4 classes), one of 10 classes, and the 4-class one pruned by graphprune (which
    carries its example input), pickled once per process."""
    import io

    import graphprune

    torch.manual_seed(0)
    cls, cls10 = TinyClassifier().eval(), TinyClassifier(10).eval()
    pruned, _ = graphprune.shrink(cls, torch.randn(1, 3, 8, 8), plan=graphprune.PlanOptions(ratio=0.5))
    out = []
    for model in (cls, cls10, pruned):
        buf = io.BytesIO()
        torch.save(model, buf)
        out.append(buf.getvalue())
    return tuple(out)


def _classifier_files(folder: Path) -> None:
    """cls.pt, cls10.pt, pruned_cls.pt, its data (cls.npz) and the data it must refuse, f64.pt."""
    import numpy as np

    for name, data in zip(("cls.pt", "cls10.pt", "pruned_cls.pt"), _classifier_bytes(), strict=True):
        (folder / name).write_bytes(data)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((24, 3, 8, 8)).astype(np.float32), rng.integers(0, 4, 24)
    np.savez(folder / "cls.npz", x=x, y=y)
    np.savez(folder / "oob.npz", x=x, y=y + 10)
    np.savez(folder / "nan.npz", x=x * np.nan, y=y)
    np.savez(folder / "empty.npz", x=x[:0], y=y[:0])
    np.savez(folder / "big.npz", x=rng.standard_normal((24, 3, 16, 16)).astype(np.float32), y=y)
    torch.save(torch.randn(1, 3, 8, 8, dtype=torch.float64), folder / "f64.pt")


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
    _classifier_files(folder)
    return folder

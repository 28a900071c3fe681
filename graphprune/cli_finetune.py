"""`graphprune finetune`, and the training options it shares with `shrink --finetune-epochs`.

    graphprune finetune PRUNED --data train.npz [--teacher ORIGINAL] [--epochs 3] [-o OUT]

`training_options` adds the same options (--lr, --weight-decay, --warmup, --seed, --patience,
--val-data, --val-split, --resume, --checkpoint, --device, distillation) to any command and
hands the command one `Recovery` value, so `shrink` needs no copy of them.
"""

from __future__ import annotations

import functools
import inspect
import logging
from dataclasses import dataclass
from pathlib import Path

import typer

from graphprune import io
from graphprune.errors import InputError
from graphprune.recovery.options import TrainOptions

log = logging.getLogger(__name__)
_cli = None  # graphprune.cli, set by register(): its console, _fail and _guard (no import cycle, works under -m)


def register(cli) -> None:
    """Add `finetune` to `cli.app` (cli: the graphprune.cli module)."""
    global _cli
    _cli = cli
    cli.app.command("finetune")(cli._guard(training_options(finetune)))

# name, type, default, flag, help
TRAINING = (
    ("lr", float, 1e-3, "--lr", "AdamW learning rate (peak, after warm-up)"),
    ("weight_decay", float, 0.01, "--weight-decay", "AdamW weight decay (not on biases and norm weights)"),
    ("warmup", float, 0.05, "--warmup", "fraction of the steps spent warming the learning rate up; then cosine decay"),
    ("seed", int, 0, "--seed", "seed of the shuffle, the validation split and dropout"),
    ("patience", int, 3, "--patience", "stop after N epochs without a better validation metric"),
    ("val_data", Path | None, None, "--val-data", "validation data (same formats as --data)"),
    ("val_split", float, 0.1, "--val-split", "without --val-data: the fraction of --data held out for validation"),
    ("distill_loss", str, "auto", "--distill-loss", "auto, kl (logits), cosine or mse (embeddings)"),
    ("distill_weight", float, 0.5, "--distill-weight", "with labels and a teacher: weight of distillation vs cross-entropy"),
    ("temperature", float, 2.0, "--temperature", "softmax temperature of the KL distillation"),
    ("feature_layers", str | None, None, "--feature-layers", "comma-separated submodule names whose outputs are matched"),
    ("device", str, "auto", "--device", "auto (CUDA when present), cpu, cuda or cuda:K"),
    ("resume", bool, False, "--resume", "continue from the checkpoint of an interrupted run"),
    ("checkpoint", Path | None, None, "--checkpoint", "checkpoint file [default: OUT.ckpt]"),
)


@dataclass(frozen=True)
class Recovery:
    """What the training options of a command asked for; `options(epochs, out)` makes TrainOptions."""

    lr: float
    weight_decay: float
    warmup: float
    seed: int
    patience: int
    val_data: Path | None
    val_split: float
    distill_loss: str
    distill_weight: float
    temperature: float
    feature_layers: str | None
    device: str
    resume: bool
    checkpoint: Path | None

    def checkpoint_for(self, out: Path) -> Path:
        return self.checkpoint or out.with_name(out.name + ".ckpt")

    def options(self, epochs: int, out: Path) -> TrainOptions:
        layers = tuple(n.strip() for n in (self.feature_layers or "").split(",") if n.strip())
        fields = {k: v for k, v in self.__dict__.items() if k not in ("val_data", "feature_layers", "checkpoint")}
        opts = TrainOptions(epochs=epochs, feature_layers=layers, checkpoint=self.checkpoint_for(out), **fields)
        opts.check()
        return opts


def training_options(fn):
    """Give command `fn` the training options; it receives them as `recovery: Recovery`."""
    extra = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=kind,
                               default=typer.Option(default, flag, help=text)) for name, kind, default, flag, text in TRAINING]
    names = [p.name for p in extra]

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        picked = {n: kwargs.pop(n) for n in names}
        return fn(*args, recovery=Recovery(**picked), **kwargs)

    sig = inspect.signature(fn, eval_str=True)
    wrapper.__signature__ = sig.replace(parameters=[p for p in sig.parameters.values() if p.name != "recovery"] + extra)
    return wrapper


def floats(text: str | None, flag: str) -> tuple | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"{flag} {text!r} is not a comma-separated list of numbers such as 0.5,0.5,0.5") from None


def data_sets(data: Path, recovery: Recovery, example, batch_size: int, tokenizer, image_size, mean, std):
    """(training data, validation data or None) through graphprune.data."""
    from graphprune.data import load_data

    kw = dict(batch_size=batch_size, tokenizer=tokenizer, image_size=image_size, mean=floats(mean, "--mean"),
              std=floats(std, "--std"))
    train = load_data(str(data), example, **kw)
    val = load_data(str(recovery.val_data), example, **kw) if recovery.val_data else None
    return train, val


def check_checkpoint(path: Path, recovery: Recovery, force: bool) -> None:
    if path.exists() and not recovery.resume and not force:
        raise InputError(f"{path} is the checkpoint of an earlier run; pass --resume to continue it or --force to start afresh")


def run_recovery(student, train, val, teacher, opts: TrainOptions, title: str):
    """Fine-tune with a progress bar; Ctrl-C exits 130 naming the checkpoint left behind."""
    from graphprune.recovery import finetune as train_model
    from graphprune.recovery.progress import Bar

    try:
        return train_model(student, train, teacher=teacher, val=val, options=opts, progress=Bar(_cli.console, title))
    except KeyboardInterrupt:
        left = opts.checkpoint if opts.checkpoint and opts.checkpoint.exists() else None
        _cli._fail("interrupted; " + (f"the last good checkpoint is {left}: rerun with --resume" if left
                                 else "no epoch had finished, nothing was written"), 130)


def summary(result) -> str:
    return (f"{result.metric} {result.initial:.4f} -> {result.best:.4f} (best epoch {result.best_epoch} of "
            f"{len(result.history) - 1}{', stopped early' if result.stopped_early else ''})")


def finetune(
    pruned: Path = typer.Argument(..., help="pruned model file (from graphprune shrink)"),
    data: Path = typer.Option(..., "--data", help="training data: .npz (x, y), image folder, saved tensors, text"),
    teacher: Path | None = typer.Option(None, "--teacher", help="the original model: distil from it"),
    epochs: int = typer.Option(3, "--epochs", help="passes over the data"),
    output: Path | None = typer.Option(None, "-o", "--output", help="fine-tuned model [default: PRUNED.finetuned.pt]"),
    batch_size: int = typer.Option(32, "--batch-size"),
    tokenizer: Path | None = typer.Option(None, "--tokenizer", help="Hugging Face tokenizer folder, for text data"),
    image_size: int | None = typer.Option(None, "--image-size", help="image folder data: resize to N x N"),
    mean: str | None = typer.Option(None, "--mean", help="image folder data: per-channel mean, e.g. 0.5,0.5,0.5"),
    std: str | None = typer.Option(None, "--std", help="image folder data: per-channel std"),
    input_shape: str | None = typer.Option(None, "--input-shape", help="shape of one float example input, e.g. 1,3,8,8"),
    example_input: Path | None = typer.Option(None, "--example-input", help="torch.save'd example input (tensor, tuple, dict)"),
    arch: str | None = typer.Option(None, "--arch", help="package.module:factory that builds TEACHER from a state_dict"),
    safe: bool = typer.Option(False, "--safe", help="refuse pickled models (they run code when loaded)"),
    force: bool = typer.Option(False, "--force", help="replace OUTPUT (and a stale checkpoint); never the input"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
    recovery: Recovery = None,
) -> None:
    """Fine-tune a pruned model on data: with labels, cross-entropy (plus distillation with --teacher);
    without labels, distillation from --teacher. Writes the best epoch's model by the validation metric."""
    import torch

    from graphprune.recovery.distributed import setup

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)
    out = output or pruned.with_name(pruned.name.rsplit(".", 1)[0] + ".finetuned.pt")
    io.check_output(out, [pruned, teacher, data], force)
    opts = recovery.options(epochs, out)
    check_checkpoint(opts.checkpoint, recovery, force)
    student, stored = io.load_model(pruned, safe=safe)
    original, teacher_example = io.load_model(teacher, arch=arch, safe=safe) if teacher else (None, None)
    example = io.load_example(example_input, input_shape, fallback=stored if stored is not None else teacher_example)
    train, val = data_sets(data, recovery, example, batch_size, tokenizer, image_size, mean, std)
    world, _ = setup(opts.device)
    result = run_recovery(student, train, val, original, opts, "fine-tuning")
    if world.main:  # under torchrun only rank 0 writes
        io.save_model(result.model, out)
        opts.checkpoint.unlink(missing_ok=True)
        _cli.out_console.print(f"{summary(result)}; wrote {out}")
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


# -- shrink --finetune-epochs / --steps ------------------------------------------------------
def recover_in_shrink(original, example, pruned, report, data, recovery: Recovery, epochs: int, steps: int,
                      out: Path, force: bool, shrink_kwargs: dict, say=None):
    """What `shrink` does after (one step) or instead of (--steps N) its one-shot pruning.

    Returns (pruned model, report, {"recovery": ...} for the JSON report). The teacher is always
    the original; `shrink_kwargs` are graphprune.shrink's options (for the later steps).
    """
    from dataclasses import asdict

    from graphprune.recovery import finetune as train_model
    from graphprune.recovery import shrink_in_steps
    from graphprune.recovery.progress import Bar

    if (epochs or steps > 1) and data is None:
        raise InputError("--finetune-epochs and --steps recover on data; pass --data")
    opts = recovery.options(max(epochs, 1), out) if epochs else None
    if opts is not None:
        check_checkpoint(opts.checkpoint, recovery, force)
    val = _val_data(recovery, example, data)
    if steps > 1:
        pruned, report, rows = shrink_in_steps(original, example, steps, data=data, val=val, train_options=opts,
                                               progress=say, bar=lambda k: Bar(_cli.console, f"step {k}: recovering"),
                                               **shrink_kwargs)
        return pruned, report, {"recovery": {"steps": [asdict(r) for r in rows]}}
    if opts is None:
        return pruned, report, {}
    try:
        result = train_model(pruned, data, teacher=original, val=val, options=opts, progress=Bar(_cli.console, "recovering"))
    except KeyboardInterrupt:
        _cli._fail(f"interrupted; nothing was written; the last good checkpoint is {opts.checkpoint}: rerun with --resume"
                   if opts.checkpoint.exists() else "interrupted; nothing was written", 130)
    opts.checkpoint.unlink(missing_ok=True)
    _cli.out_console.print("recovery: " + summary(result))
    return result.model, report, {"recovery": {"metric": result.metric, "before": result.initial, "after": result.best,
                                               "best_epoch": result.best_epoch, "history": list(result.history)}}


def _val_data(recovery: Recovery, example, data):
    if recovery.val_data is None:
        return None
    from graphprune.data import load_data

    return load_data(str(recovery.val_data), example, batch_size=data.batch_size)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def render_steps(rows: list[dict], console) -> None:
    from rich.table import Table

    table = Table(title="pruning in steps (targets measured against the original)")
    for col in ("step", "aim", "MACs", "params", "metric after pruning", "after recovery"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r["step"]), f"{r['aim']:.3f}", f"{r['macs']:,}", f"{r['params']:,}", _fmt(r["pruned_metric"]),
                      _fmt(r["recovered_metric"]) + (f" ({r['metric']})" if r["metric"] else ""))
    console.print(table)

"""`graphprune finetune`, and what `shrink --finetune-epochs E` / `--steps N` share with it.

    graphprune finetune PRUNED --data train.npz [--teacher ORIGINAL] [--epochs 3] [-o OUT]
    graphprune shrink MODEL ... --data train.npz --finetune-epochs 5 [--steps 3]

`training_options` adds the data options (--data, --batch-size, --tokenizer, --image-size, --mean,
--std) and the training options (--lr, --weight-decay, --warmup, --seed, --patience, --val-data,
--val-split, --resume, --checkpoint, --device, distillation) to a command, keeping those it
defines itself, and hands it one `Recovery` value; `shrink_and_recover` is shrink's pruning
step with recovery. See docs/RECOVERY.md.
"""

from __future__ import annotations

import functools
import inspect
import logging
from dataclasses import dataclass
from pathlib import Path

import typer

from graphprune.cli import options as cli_options
from graphprune.cli.app import app, console, fail, guard, out_console
from graphprune.errors import InputError
from graphprune.io import files as io
from graphprune.recovery.options import TrainOptions
from graphprune.recovery.progress import Bar, StageBar

log = logging.getLogger(__name__)
# name, type, option. A command that defines one of these itself (shrink's --data, --batch-size,
# ...) keeps its own; training_options reads the value from it. Data options: graphprune.cli.options.
DATA = (
    ("data", str | None, cli_options.DataOpt),
    ("batch_size", int, cli_options.BatchOpt),
    ("tokenizer", Path | None, cli_options.TokenizerOpt),
    ("image_size", int | None, cli_options.ImageSizeOpt),
    ("mean", str | None, cli_options.MeanOpt),
    ("std", str | None, cli_options.StdOpt),
)
# name, type, default, flag, help
TRAINING = (
    ("lr", float, 1e-4, "--lr", "AdamW learning rate (peak, after warm-up)"),
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
    """What the data and training options of a command asked for; `options(epochs, out)` makes
    TrainOptions, `data_sets(example)` the training and validation data."""

    data: str | None
    batch_size: int
    tokenizer: Path | None
    image_size: int | None
    mean: str | None
    std: str | None
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
        fields = {name: getattr(self, name) for name, *_ in TRAINING if name not in ("val_data", "feature_layers", "checkpoint")}
        opts = TrainOptions(epochs=epochs, feature_layers=layers, checkpoint=self.checkpoint_for(out), **fields)
        opts.check()
        return opts

    def load(self, spec, example):
        return cli_options.open_data(spec, example, batch_size=self.batch_size, tokenizer=self.tokenizer,
                                     image_size=self.image_size, mean=self.mean, std=self.std)

    def data_sets(self, example, train=None):
        """(training data: `train` or --data, validation data: --val-data or None) through graphprune.data."""
        if train is None and self.data is None:
            raise InputError("recovery (--finetune-epochs, --steps) trains on data; pass --data train.npz")
        train = train if train is not None else self.load(self.data, example)
        return train, (self.load(self.val_data, example) if self.val_data else None)


def training_options(fn):
    """Give command `fn` the data and training options; it receives them as `recovery: Recovery`
    (and keeps any of them it defines itself)."""
    sig = inspect.signature(fn, eval_str=True)
    own = set(sig.parameters)
    options = [*DATA, *((name, kind, typer.Option(default, flag, help=text)) for name, kind, default, flag, text in TRAINING)]
    extra = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=kind, default=option)
             for name, kind, option in options if name not in own]
    names = [name for name, *_ in options]

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        picked = {n: kwargs[n] if n in own else kwargs.pop(n) for n in names}
        return fn(*args, recovery=Recovery(**picked), **kwargs)

    wrapper.__signature__ = sig.replace(parameters=[p for p in sig.parameters.values() if p.name != "recovery"] + extra)
    return wrapper


def _changed(recovery: Recovery, names: tuple) -> list[str]:
    """The flags of `names` whose value differs from the option's default: what the user asked for."""
    return [flag for name, _, default, flag, _ in TRAINING if name in names and getattr(recovery, name) != default]


def check_teacher_options(recovery: Recovery, arch: str | None) -> None:
    """Without --teacher, the options that only shape distillation (and --arch, which builds the
    teacher) would be ignored: refused instead."""
    given = _changed(recovery, ("distill_loss", "distill_weight", "temperature", "feature_layers"))
    given += ["--arch"] if arch else []
    if given:
        raise InputError(f"{' and '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to distillation from --teacher, "
                         "and no --teacher was given; pass --teacher ORIGINAL or drop " + " and ".join(given))


def check_training_options(recovery: Recovery) -> None:
    """`shrink` without recovery (no --finetune-epochs, no --steps) would ignore training options: refused."""
    given = _changed(recovery, tuple(name for name, *_ in TRAINING if name != "seed"))
    if given:
        raise InputError(f"{' and '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to recovery; add "
                         "--finetune-epochs E (or --steps N) with --data, or drop " + " and ".join(given))


def check_example(model, example, name: str) -> None:
    """The model must run on the example input (data batches are cast to its dtypes)."""
    from graphprune.check.inputs import check_models

    check_models([(name, model)], example, same_outputs=False)


def check_checkpoint(path: Path, recovery: Recovery, force: bool) -> None:
    if path.exists() and not recovery.resume and not force:
        raise InputError(f"{path} is the checkpoint of an earlier run; pass --resume to continue it or --force to start afresh")


def run_recovery(student, train, val, teacher, opts: TrainOptions, title: str, status=None):
    """Fine-tune with a progress bar; Ctrl-C exits 130 naming the checkpoint left behind."""
    from graphprune.recovery import finetune as train_model

    try:
        return train_model(student, train, teacher=teacher, val=val, options=opts, progress=Bar(console, title, status))
    except KeyboardInterrupt:
        left = opts.checkpoint if opts.checkpoint and opts.checkpoint.exists() else None
        fail("interrupted; " + (f"the last good checkpoint is {left}: rerun with --resume" if left
                                 else "no epoch had finished, nothing was written"), 130)


def summary(result) -> str:
    return (f"{result.metric} {result.initial:.4f} -> {result.best:.4f} (best epoch {result.best_epoch} of "
            f"{len(result.history) - 1}{', stopped early' if result.stopped_early else ''})")


def finetune(
    pruned: Path = typer.Argument(..., help="pruned model file (from graphprune shrink)"),
    data: str = typer.Option(..., "--data", help="training data: .npz (x, y), image folder, saved tensors, text, "
                             "package.module:factory"),
    teacher: Path | None = typer.Option(None, "--teacher", help="the original model: distil from it"),
    epochs: int = typer.Option(3, "--epochs", help="passes over the data"),
    output: Path | None = typer.Option(None, "-o", "--output", help="fine-tuned model [default: PRUNED.finetuned.pt]"),
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

    from graphprune.check.inputs import check_data
    from graphprune.recovery.distributed import setup

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)
    out = output or pruned.with_name(pruned.name.rsplit(".", 1)[0] + ".finetuned.pt")
    io.check_output(out, [pruned, teacher, Path(data), recovery.val_data], force)
    opts = recovery.options(epochs, out)
    if teacher is None:
        check_teacher_options(recovery, arch)
    check_checkpoint(opts.checkpoint, recovery, force)
    student, stored = io.load_model(pruned, safe=safe)
    original, teacher_example = io.load_model(teacher, arch=arch, safe=safe) if teacher else (None, None)
    example = io.load_example(example_input, input_shape, fallback=stored if stored is not None else teacher_example)
    check_example(student, example, f"PRUNED {pruned}")
    train, val = recovery.data_sets(example)
    check_data([(f"PRUNED {pruned}", student)] + ([(f"--teacher {teacher}", original)] if original is not None else []),
               train)
    world, _ = setup(opts.device)
    result = run_recovery(student, train, val, original, opts, "fine-tuning")
    if world.main:  # under torchrun only rank 0 writes
        io.save_model(result.model, out)
        opts.checkpoint.unlink(missing_ok=True)
        out_console.print(f"{summary(result)}; wrote {out}")
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


# -- shrink --finetune-epochs / --steps ------------------------------------------------------
def shrink_and_recover(original, example, shrink_options: dict, recovery: Recovery, epochs: int, steps: int, out: Path,
                       force: bool, status=None):
    """`shrink`'s pruning: one-shot, then `epochs` of recovery; or in `steps` with recovery between.

    `shrink_options` are graphprune.api.shrink's keyword options as objects (plan, data, calibration,
    depth, search; a `data` there is also the training data). The teacher is always the original.
    Returns (pruned, report, extra JSON for the report).
    """
    from dataclasses import asdict

    from graphprune.api import shrink
    from graphprune.pipeline.steps import shrink_in_steps

    if steps < 1:
        raise InputError(f"--steps {steps} must be 1 or more")
    if epochs < 0:
        raise InputError(f"--finetune-epochs {epochs} must be 0 or more")
    if not epochs and steps == 1:
        check_training_options(recovery)
    opts = recovery.options(epochs, out) if epochs else None
    train = val = None
    if opts is not None or steps > 1:
        train, val = recovery.data_sets(example, shrink_options.get("data"))
    if opts is not None:
        check_checkpoint(opts.checkpoint, recovery, force)
    say = StageBar(console, status)  # step names on the spinner, data stages as bars with an estimate
    if steps > 1:
        kwargs = {k: v for k, v in shrink_options.items() if k not in ("data", "search", "held_out")}
        pruned, report, rows = shrink_in_steps(original, example, steps, data=train, val=val,
                                               train_options=opts, progress=say,
                                               bar=lambda k: Bar(console, f"step {k} of {steps}: recovering", status),
                                               **kwargs)
        rows = [asdict(r) for r in rows]
        render_steps(rows, out_console)
        return pruned, report, {"recovery": {"steps": rows}}
    pruned, report = shrink(original, example, progress=say, **shrink_options)
    if opts is None:
        return pruned, report, {}
    result = run_recovery(pruned, train, val, original, opts, "recovering", status)
    opts.checkpoint.unlink(missing_ok=True)
    out_console.print("recovery: " + summary(result))
    return result.model, report, {"recovery": {"metric": result.metric, "before": result.initial, "after": result.best,
                                               "best_epoch": result.best_epoch, "history": list(result.history)}}


def other_rank() -> bool:
    """True in a torchrun worker other than rank 0 (it trained its share; rank 0 writes and prints)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return False
    if dist.get_rank() == 0:
        return False
    dist.destroy_process_group()
    return True


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


app.command("finetune")(guard(training_options(finetune)))

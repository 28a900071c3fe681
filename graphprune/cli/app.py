"""What every command shares: the typer app, the consoles, common options, and the error guard.

Exit codes: 0 success, 2 a refused input or a check that failed (one line on stderr
names the cause and the fix), 130 interrupted. Nothing is written unless the whole
step succeeds.
"""

from __future__ import annotations

import functools
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from graphprune.errors import GraphPruneError, first_line
from graphprune.io import files as io

PICKLE_WARNING = (
    "MODEL is a file written by torch.save(model) or torch.export.save (.pt2). Loading a pickled "
    "module (torch.save) RUNS CODE FROM THE FILE: only use files you trust. Safe formats: .pt2, or "
    "--arch package.module:factory with a state_dict; --safe refuses pickles."
)

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Structured pruning for PyTorch models. " + PICKLE_WARNING)
console = Console(stderr=True)
out_console = Console()

ModelArg = typer.Argument(..., help="model file (.pt from torch.save, or .pt2 from torch.export.save)")
ShapeOpt = typer.Option(None, "--input-shape", help="shape of one float example input, e.g. 1,3,224,224")
ExampleOpt = typer.Option(None, "--example-input", help="torch.save'd tensor, tuple (positional) or dict (keyword) of inputs")
ArchOpt = typer.Option(None, "--arch", help="package.module:factory that builds the model; MODEL is then a state_dict (safe)")
SafeOpt = typer.Option(False, "--safe", help="refuse pickled models (they run code when loaded)")
VerboseOpt = typer.Option(False, "--verbose", "-v", help="log progress; on an unexpected error, print its traceback")


def fail(message: str, code: int = 2) -> None:
    console.print("[bold red]error:[/bold red] " + escape(message), highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def load_inputs(model: Path, arch, safe, example, shape):
    module, stored = io.load_model(model, arch=arch, safe=safe)
    return module, io.load_example(example, shape, fallback=stored)


def beside(out: Path, suffix: str) -> Path:
    """OUT with another suffix, never OUT itself (-o model.json keeps its report apart)."""
    other = out.with_suffix(suffix)
    return other if other != out else out.with_name(out.name + ".report" + suffix)


def default_out(model: Path, suffix: str) -> Path:
    return model.with_name(model.name.rsplit(".", 1)[0] + suffix)


def guard(fn):
    """Every failure ends in one `error:` line and exit code 2 (Ctrl-C: 130), nothing written.

    graphprune's own errors say the cause and the fix; any other exception is a graphprune bug,
    named by its type and first line. `--verbose` prints its traceback first.
    """
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except GraphPruneError as exc:
            fail(" ".join(str(exc).split()) or type(exc).__name__)
        except KeyboardInterrupt:
            fail("interrupted; nothing was written", 130)
        except OSError as exc:
            fail(f"cannot write or read a file: {first_line(exc)}; check the path and free disk space")
        except Exception as exc:  # noqa: BLE001 - anything else is a bug: still one line, exit 2
            if kwargs.get("verbose"):
                console.print_exception()
            fail(f"unexpected {type(exc).__name__}: {first_line(exc)}; nothing was written. This is a graphprune bug: "
                  "rerun with --verbose for the traceback and report it")

    return wrapper



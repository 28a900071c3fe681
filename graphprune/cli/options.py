"""Command-line options shared by every command that takes `--data`, and opening the data.

Commands declare the options with these objects (or take them as one `DataFlags` group) and call
`open_data(...)`, so `shrink`, `eval`, `finetune`, `explain` and the search read data the same way
(graphprune.data).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer

from graphprune.cli.groups import flag

DataOpt = typer.Option(None, "--data", help="data: .npz (x, y), image folder, torch.save'd tensors, text file "
                       "(with --tokenizer) or package.module:factory")
BatchOpt = typer.Option(32, "--batch-size", help="samples per batch")
CalibOpt = typer.Option(16, "--calib-batches", help="batches of --data read by every stage that uses data: "
                        "scoring, allocation, refit, BatchNorm re-estimation")
TokenizerOpt = typer.Option(None, "--tokenizer", help="Hugging Face tokenizer folder, for text data")
ImageSizeOpt = typer.Option(None, "--image-size", help="image folders: resize and centre-crop to N x N "
                            "[default: the example input's H x W]")
MeanOpt = typer.Option(None, "--mean", help="image folders: per-channel mean, e.g. 0.485,0.456,0.406 [default: ImageNet's]")
StdOpt = typer.Option(None, "--std", help="image folders: per-channel std, e.g. 0.229,0.224,0.225 [default: ImageNet's]")


def _floats(text: str | None, name: str) -> tuple | None:
    from graphprune.errors import InputError

    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"{name} {text!r} is not a comma-separated list of numbers such as 0.5,0.5,0.5") from None


def open_data(spec: str | None, example, *, batch_size: int = 32, tokenizer: Path | None = None,
              image_size: int | None = None, mean: str | None = None, std: str | None = None):
    """graphprune.data.Data for `--data SPEC` fitted to `example`, or None when no data was given."""
    if spec is None:
        given = [flag for flag, value in (("--tokenizer", tokenizer), ("--image-size", image_size), ("--mean", mean),
                                          ("--std", std)) if value is not None]
        if given:
            from graphprune.errors import InputError

            raise InputError(f"{', '.join(given)} shape{'s' if len(given) == 1 else ''} the --data it reads, and no --data "
                             "was given; pass --data or drop " + " and ".join(given))
        return None
    from graphprune.data import load_data

    return load_data(str(spec), example, batch_size=batch_size, tokenizer=str(tokenizer) if tokenizer else None,
                     image_size=image_size, mean=_floats(mean, "--mean"), std=_floats(std, "--std"))


@dataclasses.dataclass(frozen=True)
class DataFlags:
    """The data a command reads (graphprune.cli.groups): --data and how its files are read."""

    data: str | None = flag(DataOpt)
    batch_size: int = flag(BatchOpt)
    tokenizer: Path | None = flag(TokenizerOpt)
    image_size: int | None = flag(ImageSizeOpt)
    mean: str | None = flag(MeanOpt)
    std: str | None = flag(StdOpt)

    def open(self, example):
        """graphprune.data.Data fitted to `example`, or None without --data (`open_data`)."""
        return open_data(self.data, example, batch_size=self.batch_size, tokenizer=self.tokenizer,
                         image_size=self.image_size, mean=self.mean, std=self.std)

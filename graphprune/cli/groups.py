"""Option groups: the flags of one concern declared once, and handed to a command as one object.

A group is a frozen dataclass whose fields are flags, `name: type = flag(typer.Option(...))`. A
command takes a group as a parameter annotated with its class (`source: ModelSource`);
`with_groups` puts the group's flags in that parameter's place and calls the command with one
instance of the group built from them:

    @with_groups("model input_shape example_input output")
    def export(source: ModelSource, output: Path | None = ..., force: bool = ..., verbose: bool = ...): ...

The names given to `with_groups` come first in --help, in that order, and the rest follow as
declared: a command's --help order is what users and scripts already know, and a group's flags
need not be neighbours in it.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from pathlib import Path

from graphprune.cli.app import ArchOpt, ExampleOpt, ModelArg, SafeOpt, ShapeOpt, load_inputs

_FLAG = "graphprune.flag"


def flag(option):
    """A group's field declared by its typer option (the option holds the default)."""
    return dataclasses.field(metadata={_FLAG: option})


def flags(group: type) -> list[inspect.Parameter]:
    """The group's fields as the command parameters typer reads: name, type and option."""
    types = typing.get_type_hints(group)
    return [inspect.Parameter(f.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=types[f.name],
                              default=f.metadata[_FLAG]) for f in dataclasses.fields(group)]


def _is_group(annotation) -> bool:
    return dataclasses.is_dataclass(annotation) and all(_FLAG in f.metadata for f in dataclasses.fields(annotation))


def with_groups(order: str = ""):
    """Give the decorated command its groups' flags; `order`: the names --help lists first (see above)."""

    def decorate(fn):
        sig = inspect.signature(fn, eval_str=True)
        groups = {name: p.annotation for name, p in sig.parameters.items() if _is_group(p.annotation)}
        params = []
        for p in sig.parameters.values():
            params += flags(groups[p.name]) if p.name in groups else [p]
        names, first = [p.name for p in params], order.split()
        if wrong := {n for n in names if names.count(n) > 1} | (set(groups) & set(names)) | (set(first) - set(names)):
            raise TypeError(f"{fn.__name__}: {sorted(wrong)}: a flag declared twice, a group named as a flag, "
                            "or an `order` name that is no flag")
        by_name = dict(zip(names, params, strict=True))
        params = [by_name[n] for n in first] + [p for p in params if p.name not in first]

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            for name, group in groups.items():
                kwargs[name] = group(**{f.name: kwargs.pop(f.name) for f in dataclasses.fields(group)})
            return fn(*args, **kwargs)

        wrapper.__signature__ = sig.replace(parameters=params)
        wrapper.__annotations__ = {p.name: p.annotation for p in params if p.annotation is not p.empty}
        return wrapper

    return decorate


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """The model file and its example input: what inspect, export and shrink load first."""

    model: Path = flag(ModelArg)
    input_shape: str | None = flag(ShapeOpt)
    example_input: Path | None = flag(ExampleOpt)
    arch: str | None = flag(ArchOpt)
    safe: bool = flag(SafeOpt)

    def load(self):
        """(module, example input) as every command loads them."""
        return load_inputs(self.model, self.arch, self.safe, self.example_input, self.input_shape)

"""Option groups (graphprune.cli.groups): a group's flags take its parameter's place, `order` puts
the named flags first, and the command receives one built group."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import typer
from typer.testing import CliRunner

from graphprune.cli.groups import flag, with_groups


@dataclasses.dataclass(frozen=True)
class Pair:
    left: int = flag(typer.Option(1, "--left"))
    right: str | None = flag(typer.Option(None, "--right"))


def test_a_group_is_built_from_its_flags_in_its_place():
    seen = {}

    @with_groups()
    def command(pair: Pair, last: bool = typer.Option(False, "--last")) -> None:
        seen.update(pair=pair, last=last)

    assert list(inspect.signature(command).parameters) == ["left", "right", "last"]
    app = typer.Typer()
    app.command()(command)
    result = CliRunner().invoke(app, ["--left", "3", "--last"])
    assert result.exit_code == 0, result.output
    assert seen == {"pair": Pair(3, None), "last": True}


def test_order_puts_the_named_flags_first():
    @with_groups("last right")
    def command(pair: Pair, last: bool = typer.Option(False, "--last")) -> None: ...

    assert list(inspect.signature(command).parameters) == ["last", "right", "left"]


def test_a_misspelt_order_name_is_refused():
    with pytest.raises(TypeError, match="lfet"):
        @with_groups("lfet")
        def command(pair: Pair) -> None: ...


def test_a_flag_declared_twice_is_refused():
    with pytest.raises(TypeError, match="left"):
        @with_groups()
        def command(pair: Pair, left: int = typer.Option(0, "--left-again")) -> None: ...


def test_a_group_named_as_a_flag_is_refused():
    with pytest.raises(TypeError, match="right"):
        @with_groups()
        def command(right: Pair) -> None: ...

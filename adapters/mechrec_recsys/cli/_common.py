"""Helpers shared by the ``mechrec`` sub-commands: one-line errors, wide rich consoles and the
options that every command opening a run or a dataset takes.

The options are ``Annotated`` types; a command declares e.g.
``data_dir: DataDirOption = None, download: DownloadOption = True, device: DeviceOption = "cpu"``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

#: ``--data-dir``: where the dataset is (default: ``None``, the loaders' lookup order).
DataDirOption = Annotated[
    Path | None, typer.Option("--data-dir", help="folder holding the dataset")
]
#: ``--download/--no-download``: fetch the dataset when no local copy exists (default ``True``).
DownloadOption = Annotated[
    bool,
    typer.Option("--download/--no-download",
                 help="download the dataset when no local copy exists"),
]
#: ``--device``: where the model runs (default ``"cpu"``).
DeviceOption = Annotated[str, typer.Option("--device", help="where the model runs: cpu | cuda")]
#: ``--progress/--no-progress``: show progress on stderr (default ``True``); bars are drawn
#: only on a terminal, logs and pipes get plain lines.
ProgressOption = Annotated[
    bool,
    typer.Option("--progress/--no-progress",
                 help="show progress on stderr (bars on a terminal, plain lines otherwise)"),
]


def fail(message: str) -> NoReturn:
    """Print a one-line error to stderr and exit with code 2 (bad input, never a traceback)."""
    typer.echo("error: " + " ".join(str(message).split()), err=True)
    raise typer.Exit(code=2)


def wide_console(min_width: int = 160) -> Console:
    """A rich console that, when output is not a terminal (logs, pipes), is at least
    ``min_width`` columns wide so table rows stay on one line."""
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, min_width)
    return console


class _ConventionalArgument(TyperArgument):
    """A positional argument shown in the usage line as ``RUN_DIR`` (``[NAME]`` when
    optional), the usual convention, instead of typer's ``{run_dir}``."""

    def get_usage_pieces(self, ctx: typer.Context) -> list[str]:
        """The argument's piece of the usage line."""
        name = self.metavar or self.name.upper()
        name = name if self.required else f"[{name}]"
        return [name + ("..." if self.nargs != 1 else "")]

    def display_type_rich(self, ctx: typer.Context) -> str | None:
        """The type shown in the help panel, the click way (``PATH``, ``TEXT``, ...)."""
        return _type_metavar(self, ctx)


def conventional_metavars(command: TyperCommand | TyperGroup) -> None:
    """Give every parameter of ``command`` and its sub-commands a conventional metavar.

    Flags (``--quick``, ``--progress/--no-progress``, ``--help``) show none (typer 0.29 shows
    ``<bool>``); valued options show their type the click way (``INTEGER``, ``FLOAT``,
    ``PATH``, ``TEXT``); positional arguments their upper-case name (``RUN_DIR``).
    """
    ctx = typer.Context(command)
    for param in command.params:
        _tidy_param(param, ctx)
    help_option = command.get_help_option(ctx)
    if help_option is not None:
        _tidy_param(help_option, ctx)
    for sub in getattr(command, "commands", {}).values():
        conventional_metavars(sub)


_TYPE_METAVARS = {"int": "INTEGER", "float": "FLOAT", "str": "TEXT", "path": "PATH"}


def _tidy_param(param: TyperArgument | TyperOption, ctx: typer.Context) -> None:
    if isinstance(param, TyperArgument):
        param.__class__ = _ConventionalArgument
        param.metavar = param.metavar or (param.name or "").upper()
    elif param.is_flag:
        param.metavar = ""
    elif param.metavar is None:
        param.metavar = _type_metavar(param, ctx)


def _type_metavar(param: TyperArgument | TyperOption, ctx: typer.Context) -> str:
    label = param.display_type(ctx).strip("<>")
    return _TYPE_METAVARS.get(label.lower(), label.upper())


class ConventionalGroup(TyperGroup):
    """The ``mechrec`` root group: on creation it applies :func:`conventional_metavars` to
    every command, so ``--help`` pages read the usual way."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        conventional_metavars(self)

    def get_params(self, ctx: typer.Context) -> list:
        """The group's own options (shell completion, help), with conventional metavars."""
        params = super().get_params(ctx)
        for param in params:
            _tidy_param(param, ctx)
        return params

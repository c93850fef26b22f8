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
DeviceOption = Annotated[str, typer.Option("--device", help="cpu | cuda")]


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

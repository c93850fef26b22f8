"""Helpers shared by the ``mechrec`` sub-commands: one-line errors and wide rich consoles."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console


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

"""``mechrec data``: load a dataset and inspect it.

Bad input (unknown dataset, missing files, malformed rows, a time split on data without
timestamps, ...) prints one line ``error: ...`` to stderr and exits with code 2.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

from mechrec_recsys.data import DATASET_NAMES, load_dataset
from mechrec_recsys.data.splits import SPLIT_KINDS, make_split
from mechrec_recsys.data.stats import dataset_statistics

data_app = typer.Typer(
    name="data",
    help="Load datasets (downloading them if needed) and print their statistics.",
    no_args_is_help=True,
)

BAD_INPUT = (ValueError, FileNotFoundError, OSError, KeyError)


def fail(message: str) -> None:
    """Print a one-line error to stderr and exit with code 2."""
    line = " ".join(str(message).split())
    typer.echo(f"error: {line}", err=True)
    raise typer.Exit(code=2)


def _format(value: float, statistic: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if statistic.startswith("genre "):
        return f"{100 * value:.1f}%"
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.1f}"


def render_statistics(table: pd.DataFrame, title: str) -> Table:
    """A rich table of :func:`~mechrec_recsys.data.stats.dataset_statistics` output."""
    out = Table(title=title, show_lines=False)
    out.add_column("statistic", style="bold")
    for column in table.columns:
        out.add_column(str(column), justify="right")
    for statistic, row in table.iterrows():
        out.add_row(str(statistic), *(_format(v, str(statistic)) for v in row.tolist()))
    return out


@data_app.command("stats")
def stats(
    name: str = typer.Argument(..., help=f"dataset: {', '.join(DATASET_NAMES)}"),
    data_dir: Path | None = typer.Option(
        None, "--data-dir", help="folder holding the dataset (else $MECHREC_DATA, the cache, "
        "or a download)"),
    split: str | None = typer.Option(
        None, "--split", help=f"also split the data: {' | '.join(SPLIT_KINDS)}"),
    seed: int = typer.Option(0, "--seed", help="seed of the split and of timestamp tie-breaks"),
    max_len: int = typer.Option(200, "--max-len", help="keep the last N items of a sequence"),
    download: bool = typer.Option(True, "--download/--no-download",
                                  help="download the official zip when no local copy exists"),
) -> None:
    """Print users, items, interactions, sequence lengths and genre shares of a dataset."""
    if split is not None and split not in SPLIT_KINDS:
        fail(f"unknown split {split!r}; choose one of {', '.join(SPLIT_KINDS)}")
    if max_len < 1:
        fail(f"--max-len must be a positive integer, got {max_len}")
    try:
        dataset = load_dataset(name, data_dir, download=download)
        parts = make_split(dataset, split, seed=seed, max_len=max_len) if split else None
        table = dataset_statistics(dataset, parts)
    except BAD_INPUT as exc:
        fail(str(exc))
        return
    console = Console()
    title = f"{dataset.name}" + (f" - {split} split, seed {seed}, max_len {max_len}"
                                 if split else "")
    console.print(render_statistics(table, title))
    console.print("load: " + "; ".join(dataset.report.summary_lines()), highlight=False)
    if parts is not None:
        info = parts.info
        console.print(
            f"split: {info['users_dropped_short']:,} users with < {info['min_interactions']} "
            f"interactions dropped; {info['test_targets_unseen_dropped']:,} test and "
            f"{info['validation_targets_unseen_dropped']:,} validation targets never seen in "
            f"training dropped; {info['truncated_sequences']:,} sequences truncated to "
            f"{max_len}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add the ``data`` command group to the ``mechrec`` application."""
    app.add_typer(data_app, name="data")

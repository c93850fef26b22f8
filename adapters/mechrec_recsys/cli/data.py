"""``mechrec data``: download, list and inspect datasets.

Commands:

* ``mechrec data stats NAME``: load a dataset (optionally split it) and print its statistics.
* ``mechrec data download NAME [--cache-dir DIR]``: download, verify and unpack an official
  MovieLens zip into the cache, unless a local copy already exists.
* ``mechrec data list``: the known datasets with their URL, size, checksum kind and the local
  copy found, if any.
* ``mechrec data synth --size ml-1m --out DIR``: generate a synthetic world with planted
  structure over a real catalog (see ``docs/synthetic.md``).

Bad input (unknown dataset, missing files, malformed rows, a time split on data without
timestamps, no network, a checksum mismatch, ...) prints one line ``error: ...`` to stderr and
exits with code 2.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from mechrec_recsys.cli._common import fail
from mechrec_recsys.configs import SPLIT_KINDS
from mechrec_recsys.data.download import (
    ENV_DATA,
    MANIFEST,
    default_cache_dir,
    download_dataset,
    find_local_copy,
)
from mechrec_recsys.data.registry import (
    DATASET_NAMES,
    LOCAL_DATASETS,
    RELEASES,
    LocalDataset,
    MovieLensRelease,
    get_release,
)

if TYPE_CHECKING:
    import pandas as pd

data_app = typer.Typer(
    name="data",
    help="Download, list and load datasets, and print their statistics.",
    no_args_is_help=True,
)


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
    from mechrec_recsys.data import load_dataset
    from mechrec_recsys.data.splits import make_split
    from mechrec_recsys.data.stats import dataset_statistics

    dataset = load_dataset(name, data_dir, download=download)
    parts = make_split(dataset, split, seed=seed, max_len=max_len) if split else None
    table = dataset_statistics(dataset, parts)
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


def checksum_kind(release: MovieLensRelease) -> str:
    """How a download of ``release`` is verified: ``"sha256"``, ``"md5"`` or ``"none"``."""
    if release.sha256 is not None:
        return "sha256"
    if release.md5 is not None:
        return "md5"
    return "none"


def format_size(size: int | None) -> str:
    """A published archive size for people, e.g. ``"4.9 MB"``; ``"unknown"`` when none is
    published."""
    if size is None:
        return "unknown"
    return f"{size / 1e6:,.1f} MB"


def local_copy(
    release: MovieLensRelease | LocalDataset, data_dir: Path | None, cache_dir: Path | None
) -> tuple[Path, str] | None:
    """Where a local copy of ``release`` is found, in the loaders' order of precedence
    (``cache_dir=None`` for a local-only dataset, which is never in the cache).

    Returns:
        ``(folder, where)`` with ``where`` one of ``"--data-dir"``, ``"$MECHREC_DATA"`` and
        ``"cache"``, or ``None`` when there is no complete copy.
    """
    env = os.environ.get(ENV_DATA)
    places: list[tuple[Path | str | None, str]] = [
        (data_dir, "--data-dir"), (env or None, f"${ENV_DATA}"), (cache_dir, "cache")]
    for root, where in places:
        if root is None:
            continue
        found = find_local_copy(root, release)
        if found is not None:
            return found, where
    return None


@data_app.command("download")
def download(
    name: str = typer.Argument(..., help=f"dataset: {', '.join(DATASET_NAMES)}"),
    cache_dir: Path | None = typer.Option(
        None, "--cache-dir", help="download into this folder instead of the user cache "
        "($XDG_CACHE_HOME/mechrec/datasets)"),
) -> None:
    """Download, verify and unpack an official MovieLens zip into the cache.

    Without --cache-dir, a copy already in $MECHREC_DATA or the cache is reported and nothing
    is downloaded. With --cache-dir, the dataset is placed in that folder unless it is already
    there.
    """
    try:
        release = get_release(name)
        cache = (cache_dir if cache_dir is not None else default_cache_dir()).expanduser()
        existing = local_copy(release, None, cache)
        if existing is not None and (cache_dir is None or existing[1] == "cache"):
            folder, where = existing
            typer.echo(f"{name} is already available in {folder} ({where}); nothing to "
                       "download")
            return
        folder = download_dataset(name, cache)
    except FileNotFoundError:
        raise  # no copy and no download: the app's error funnel prints its message
    except OSError as exc:  # the cache folder cannot be created or written
        fail(f"cannot write the download into {cache}: {exc}. Fix: pass --cache-dir with a "
             "writable folder")
        return
    verified = "unknown"
    manifest = folder / MANIFEST
    if manifest.is_file():
        try:
            verified = json.loads(manifest.read_text()).get("verified_with", verified)
        except (ValueError, OSError):
            verified = "unknown"
    check = ("checksum verified with " + verified.upper() if verified in ("sha256", "md5")
             else "NOT verified: no published checksum")
    typer.echo(f"downloaded {release.url} into {folder} ({check})")


@data_app.command("list")
def list_datasets(
    data_dir: Path | None = typer.Option(
        None, "--data-dir", help="also look for local copies in this folder (checked first)"),
    cache_dir: Path | None = typer.Option(
        None, "--cache-dir", help="the cache folder to look in (default: the user cache)"),
) -> None:
    """List the known datasets: URL, size, checksum kind and the local copy found, if any."""
    cache = (cache_dir if cache_dir is not None else default_cache_dir()).expanduser()
    rows = []
    for name, release in RELEASES.items():
        found = local_copy(release, data_dir.expanduser() if data_dir else None, cache)
        copy = f"{found[0]} ({found[1]})" if found else "not found"
        rows.append((name, format_size(release.size), checksum_kind(release), release.url,
                     copy))
    for name, spec in LOCAL_DATASETS.items():
        found = local_copy(spec, data_dir.expanduser() if data_dir else None, None)
        copy = f"{found[0]} ({found[1]})" if found else "not found"
        rows.append((name, "-", "-", "local only, never downloaded", copy))
    header = ("dataset", "size", "checksum", "url", "local copy")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        typer.echo("  ".join([*cells, row[-1]]).rstrip())
    env = os.environ.get(ENV_DATA)
    order = ([f"--data-dir {data_dir}"] if data_dir else []) + [
        f"${ENV_DATA} ({env if env else 'unset'})", f"cache ({cache})",
        "download (mechrec data download NAME)"]
    typer.echo("lookup order: " + " > ".join(order))


@data_app.command("synth")
def synth(
    out: Path = typer.Option(..., "--out", help="folder to write the world into"),
    size: str = typer.Option("ml-1m", "--size", help="users x mean length of a MovieLens "
                             "release: ml-100k | ml-1m | ml-10m | ml-20m | ml-25m | 100m"),
    seed: int = typer.Option(0, "--seed", help="seed of every draw"),
    catalog: Path | None = typer.Option(
        None, "--catalog", help="item table with ids, titles and genres (default: "
        "$MECHREC_DATA/ml-20m-catalog/movies.csv)"),
    users: int | None = typer.Option(None, "--users", help="number of users (default: the "
                                     "size's)"),
    items: int | None = typer.Option(None, "--items", help="catalog items to use, the most "
                                     "popular (default: the size's; 0 for all)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace a world already in "
                                   "--out"),
) -> None:
    """Generate a synthetic world with planted tastes, drift, popularity and franchises."""
    from mechrec_recsys.synthetic import (
        PRESETS,
        SynthConfig,
        default_catalog_path,
        generate_world,
        read_catalog,
    )

    if size not in PRESETS:
        fail(f"unknown --size {size!r}; choose one of {', '.join(PRESETS)}")
    if users is not None and users < 1:
        fail(f"--users must be a positive integer, got {users}")
    if items is not None and items < 0:
        fail(f"--items must be 0 (all) or a positive integer, got {items}")
    overrides: dict = {"seed": seed}
    if users is not None:
        overrides["users"] = users
    if items is not None:
        overrides["items"] = items or None
    step = 10

    def progress(done: int, total: int, events: int) -> None:
        nonlocal step
        if done < total and 100 * done < step * total:
            return
        step = 100 * done // total + 10
        typer.echo(f"synth: {done:,}/{total:,} users, {events:,} events", err=True)

    config = SynthConfig.preset(size, **overrides)
    path = catalog if catalog is not None else default_catalog_path()
    table = read_catalog(path)
    summary = generate_world(config, table, out, catalog_source=str(path),
                             overwrite=overwrite, progress=progress)
    typer.echo(f"wrote {summary.folder}: {summary.line()}")


def register(app: typer.Typer) -> None:
    """Add the ``data`` command group to the ``mechrec`` application."""
    app.add_typer(data_app, name="data")

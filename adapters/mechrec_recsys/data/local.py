"""Named datasets that live only on local disk (``LOCAL_DATASETS``), e.g. ``ml-1m-ordered``.

They are found in an explicit ``data_dir`` or under ``$MECHREC_DATA`` and nowhere else: they
are not official GroupLens releases, so there is nothing to download. Each loads through
:func:`~mechrec_recsys.data.load_generic` with the official item file of the release it copies,
and with an explicit ``order`` column where the copy records the time order more finely than
its timestamps (``ml-1m-ordered``'s ``position``): sequences then follow that column exactly.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.parquet as pq

from mechrec_recsys.data.dataset import Dataset
from mechrec_recsys.data.download import ENV_DATA, find_local_copy
from mechrec_recsys.data.errors import DataFormatError, DatasetNotFoundError
from mechrec_recsys.data.generic import load_generic
from mechrec_recsys.data.movielens import read_movielens_catalog
from mechrec_recsys.data.registry import LOCAL_DATASETS, LocalDataset
from mechrec_recsys.data.report import LoadReport


def resolve_local_dir(spec: LocalDataset, data_dir: str | Path | None = None) -> Path:
    """The folder holding a local-only dataset: ``data_dir`` if given, else ``$MECHREC_DATA``.

    Raises:
        DatasetNotFoundError: the files are in neither place; the message says where it looked.
    """
    roots = [Path(data_dir)] if data_dir is not None else (
        [Path(os.environ[ENV_DATA])] if os.environ.get(ENV_DATA) else [])
    for root in roots:
        found = find_local_copy(root, spec)
        if found is not None:
            return found
    where = (f"in {roots[0]} (and {roots[0] / spec.folder_aliases[0]})" if roots
             else f"anywhere: {ENV_DATA} is not set and no data_dir was given")
    raise DatasetNotFoundError(
        f"{spec.name} not found {where}; it is a local-only copy ({spec.description}) and is "
        f"never downloaded. Fix: set {ENV_DATA} to the folder holding {spec.folder_aliases[0]}/"
        f" (with {', '.join(spec.required_files)}) or pass --data-dir; for the official data "
        f"use '{spec.catalog_release}'")


def _count_flag(path: Path, column: str) -> int:
    """Number of true values of a boolean column of a parquet file."""
    try:
        values = pq.read_table(path, columns=[column]).column(column).to_numpy()
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise DataFormatError(path, f"has no readable boolean column {column!r} ({exc})",
                              f"restore the original {path.name}") from None
    return int(values.sum())


def load_local_dataset(name: str, data_dir: str | Path | None = None, *,
                       on_bad_rows: str = "error", unknown_items: str = "drop",
                       duplicates: str = "drop", unknown_genres: str = "keep") -> Dataset:
    """Load the local-only dataset ``name`` (see ``LOCAL_DATASETS``).

    Args:
        name: e.g. ``"ml-1m-ordered"``.
        data_dir: the folder holding it (or its parent); else ``$MECHREC_DATA``.
        on_bad_rows, unknown_items, duplicates, unknown_genres: as for
            :func:`~mechrec_recsys.data.load_movielens`.
    """
    spec = LOCAL_DATASETS[name]
    folder = resolve_local_dir(spec, data_dir)
    report = LoadReport(source=name)
    catalog = read_movielens_catalog(folder / spec.item_file, spec.catalog_release,
                                     report=report, on_bad_rows=on_bad_rows,
                                     unknown_genres=unknown_genres)
    interactions = folder / spec.interactions_file
    dataset = load_generic(interactions, columns=dict(spec.columns), catalog=catalog, name=name,
                           on_bad_rows=on_bad_rows, unknown_items=unknown_items,
                           duplicates=duplicates)
    dataset.report.files[:0] = report.files
    for note in report.notes:
        dataset.report.add_note(note)
    if spec.imputed_flag is not None:
        imputed = _count_flag(interactions, spec.imputed_flag)
        dataset.report.add_note(
            f"{imputed:,} timestamps are imputed (column {spec.imputed_flag}: the user's "
            "nearest earlier known timestamp); sequence order follows the order column, and "
            "only each user's last timestamp enters the paper split")
    return dataset

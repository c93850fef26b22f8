"""``load_generic``: interactions and item attributes from CSV, TSV or parquet files.

This is how non-MovieLens data comes in, e.g. Music4All-style listening events with track
genres, or interaction pairs without timestamps plus an official MovieLens item file::

    catalog = read_movielens_catalog("ml-1m-unordered/movies.dat", "ml-1m")
    dataset = load_generic("ml-1m-unordered/ratings_user_item_pairs.parquet",
                           columns={"user_id": "userID", "item_id": "movieID"},
                           catalog=catalog, name="ml-1m-unordered")

File types follow the extension: ``.parquet``/``.pq``; ``.csv`` (comma, quoted fields);
``.tsv``/``.tab`` (tab); ``.dat`` (``::``); anything else needs ``sep``. Text files need a header
unless ``header=False``, in which case columns are given as 0-based positions.

Timestamps may be numbers (seconds, or ``time_unit``) or date-time strings (ISO 8601; without a
zone they are taken as UTC); they are stored as int64 seconds. Rows keep file order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from mechrec_recsys.data.catalog import ItemCatalog, multi_hot, parse_year
from mechrec_recsys.data.cleaning import check_policies, finish_interactions
from mechrec_recsys.data.dataset import Dataset
from mechrec_recsys.data.errors import DataFormatError
from mechrec_recsys.data.readers import (
    LINE,
    TIME_UNITS,
    Field,
    TextFormat,
    check_on_bad_rows,
    read_parquet_table,
    read_rows,
    read_table,
    require_file,
    rows_to_frame,
)
from mechrec_recsys.data.report import LoadReport

INTERACTION_FIELDS = {"user_id": "int", "item_id": "int", "timestamp": "time", "rating": "float",
                      "order": "int"}
ITEM_FIELDS = {"item_id": "int", "title": "str", "year": "int"}
_BY_EXTENSION = {".csv": ",", ".tsv": "\t", ".tab": "\t", ".dat": "::"}
_PARQUET = (".parquet", ".pq")


def _check_mapping(mapping: Mapping[str, str | int], allowed: dict[str, str],
                   required: Sequence[str], what: str) -> None:
    unknown = set(mapping) - set(allowed)
    if unknown:
        raise ValueError(f"{what} has unknown keys {sorted(unknown)}; allowed: {list(allowed)}")
    missing = [k for k in required if k not in mapping]
    if missing:
        raise ValueError(f"{what} must map {missing} to a column of the file")


def _text_format(path: Path, sep: str | None, header: bool, encoding: str) -> TextFormat:
    if sep is None:
        sep = _BY_EXTENSION.get(path.suffix.lower())
        if sep is None:
            raise ValueError(f"cannot tell the separator of {path.name} from its extension; "
                             "pass sep=',' (or '\\t', '::', ...)")
    return TextFormat(sep=sep, header=header, quoting=sep == ",", encodings=(encoding,))


def _read_any(
    path: Path, fields: list[Field], *, sep: str | None, header: bool, encoding: str,
    on_bad_rows: str, report: LoadReport, fix: str, time_unit: str, item_file: bool,
) -> tuple[pd.DataFrame, str]:
    """Read ``fields`` from a parquet or text file; returns the frame and the unit of LINE."""
    if not header and any(isinstance(f.source, str) for f in fields):
        raise ValueError("with header=False give columns as 0-based positions, not names")
    if path.suffix.lower() in _PARQUET:
        frame = read_parquet_table(
            path, fields, on_bad_rows=on_bad_rows, report=report, fix=fix, time_unit=time_unit,
            count_rows=not item_file,
            drop_reason="malformed_item_row" if item_file else "malformed_row")
        return frame, "row"
    fmt = _text_format(path, sep, header, encoding)
    if item_file:
        report.files.append(str(path))
        raw = read_rows(path, fmt, report)
        frame = rows_to_frame(raw, fmt, fields, on_bad_rows=on_bad_rows, report=report, fix=fix,
                              time_unit=time_unit, count_rows=False,
                              drop_reason="malformed_item_row")
        return frame, "line"
    return read_table(path, fmt, fields, on_bad_rows=on_bad_rows, report=report, fix=fix,
                      time_unit=time_unit), "line"


def _split_labels(values: pd.Series, list_sep: str) -> list[list[str]]:
    out = []
    for value in values.astype("object").tolist():
        if isinstance(value, str):
            out.append([v.strip() for v in value.split(list_sep) if v.strip()])
        else:
            out.append([])
    return out


def _read_items(
    path: Path,
    *,
    item_columns: Mapping[str, str | int],
    genre_column: str | int | None,
    categorical: Sequence[str | int],
    multi_valued: Sequence[str | int],
    list_sep: str,
    sep: str | None,
    header: bool,
    encoding: str,
    on_bad_rows: str,
    report: LoadReport,
    year_from_title: bool,
) -> ItemCatalog:
    fields = [Field("item_id", item_columns["item_id"], "int")]
    if "title" in item_columns:
        fields.append(Field("title", item_columns["title"], "str", optional=True))
    if "year" in item_columns:
        fields.append(Field("year", item_columns["year"], "int", optional=True))
    attribute_sources = ([genre_column] if genre_column is not None else []) + list(
        categorical) + list(multi_valued)
    for source in attribute_sources:
        fields.append(Field(f"attr:{source}", source, "str", optional=True))
    fix = (f"each row of {path.name} needs an integer item id in column "
           f"{item_columns['item_id']!r}; repair or delete the row, or pass on_bad_rows='drop'")
    frame, unit = _read_any(path, fields, sep=sep, header=header, encoding=encoding,
                            on_bad_rows=on_bad_rows, report=report, fix=fix, time_unit="s",
                            item_file=True)
    repeated = frame["item_id"].duplicated(keep=False)
    if repeated.any():
        item = int(frame.loc[repeated, "item_id"].iloc[0])
        where = frame.loc[frame["item_id"] == item, LINE].tolist()
        raise DataFormatError(path, f"item id {item} appears on {unit}s "
                              f"{', '.join(map(str, where))}", "keep one row per item id",
                              line=int(where[1]), unit=unit)
    index = pd.Index(frame["item_id"].to_numpy(dtype=np.int64), name="item_id")
    if "title" in frame.columns:
        titles = pd.Series(frame["title"].to_numpy(), index=index, dtype="string")
    else:
        titles = pd.Series(pd.NA, index=index, dtype="string")
    if "year" in frame.columns:
        years = pd.array(frame["year"].to_numpy(), dtype="Int64")
    elif year_from_title and "title" in frame.columns:
        years = pd.array([parse_year(t) if isinstance(t, str) else None for t in titles],
                         dtype="Int64")
    else:
        years = pd.array([None] * len(index), dtype="Int64")
    items = pd.DataFrame({"title": titles, "year": years}, index=index)
    if genre_column is not None:
        labels = _split_labels(frame[f"attr:{genre_column}"], list_sep)
        names = sorted({g for item_labels in labels for g in item_labels})
        genres = multi_hot(labels, index, names)
        empty = int((~genres.any(axis=1)).sum())
        if empty:
            report.add_note(f"{path.name}: {empty} item(s) have no genre")
    else:
        genres = pd.DataFrame(index=index)
    extra = {str(c): pd.Series(frame[f"attr:{c}"].to_numpy(), index=index, dtype="string")
             for c in categorical}
    tables = {}
    for column in multi_valued:
        labels = _split_labels(frame[f"attr:{column}"], list_sep)
        tables[str(column)] = multi_hot(labels, index,
                                        sorted({v for item in labels for v in item}))
    return ItemCatalog(items=items, genres=genres, extra=extra, multi_hot=tables)


def load_generic(
    interactions_path: str | Path,
    items_path: str | Path | None = None,
    *,
    columns: Mapping[str, str | int],
    item_columns: Mapping[str, str | int] | None = None,
    genre_column: str | int | None = None,
    categorical: Sequence[str | int] = (),
    multi_valued: Sequence[str | int] = (),
    list_sep: str = "|",
    catalog: ItemCatalog | None = None,
    name: str | None = None,
    sep: str | None = None,
    items_sep: str | None = None,
    header: bool = True,
    encoding: str = "utf-8",
    time_unit: str = "s",
    year_from_title: bool = True,
    on_bad_rows: str = "error",
    unknown_items: str = "drop",
    duplicates: str = "drop",
) -> Dataset:
    """Load interactions (and optionally item attributes) through a column mapping.

    Args:
        interactions_path: CSV/TSV/parquet file with one event per row.
        items_path: optional item file (CSV/TSV/parquet) with one row per item.
        columns: maps ``user_id``, ``item_id`` (required), ``timestamp``, ``rating`` and
            ``order`` (optional) to columns of the interactions file (names, or positions when
            ``header=False``). Without ``timestamp`` only order-free splits are possible.
            ``order`` is each event's position in its user's sequence (any increasing
            integers): sequences then follow it exactly instead of a timestamp sort with a
            tie-break, which keeps a known order inside same-second ties. It must not repeat
            within a user and, with timestamps, must never run against them.
        item_columns: maps ``item_id`` (default: the interactions' item column name),
            ``title`` and ``year`` to columns of the item file.
        genre_column: item column with multi-valued genres (``"rock|pop"``): one bool genre
            column per distinct label, sorted by name.
        categorical: item columns kept as single-valued categorical attributes
            (``catalog.extra``).
        multi_valued: other multi-valued item columns (``catalog.multi_hot``).
        list_sep: separator of multi-valued cells.
        catalog: a ready catalog instead of ``items_path`` (e.g. from
            :func:`~mechrec_recsys.data.movielens.read_movielens_catalog`). With neither, the
            catalog is the set of interacted items, without attributes.
        name: dataset name (default: the interactions file's stem).
        sep, items_sep: separators of the text files (default: from the extension).
        header: whether text files start with a header line.
        encoding: text encoding; a file that does not decode is an error naming the line.
        time_unit: unit of numeric timestamps: ``"s"``, ``"ms"``, ``"us"`` or ``"ns"``.
        year_from_title: parse the year from titles ending in ``"(1995)"`` when no year
            column is mapped.
        on_bad_rows: ``"error"`` (default) or ``"drop"`` (counted) for malformed rows.
        unknown_items: ``"drop"`` (default, counted) or ``"error"`` for events whose item is
            not in the catalog.
        duplicates: ``"drop"`` (default, counted), ``"keep"`` or ``"error"`` for repeated
            events (same user, item and timestamp; same user and item without timestamps).

    Returns:
        The dataset; ``dataset.report`` tells what was read and dropped.
    """
    check_on_bad_rows(on_bad_rows)
    check_policies(unknown_items, duplicates)
    if time_unit not in TIME_UNITS:
        raise ValueError(f"time_unit must be one of {list(TIME_UNITS)}, got {time_unit!r}")
    _check_mapping(columns, INTERACTION_FIELDS, ("user_id", "item_id"), "columns")
    if items_path is not None and catalog is not None:
        raise ValueError("pass either items_path or catalog, not both")
    interactions_path = Path(interactions_path)
    require_file(interactions_path, "interactions file",
                 "check the path (interactions_path)")
    report = LoadReport(source=name or interactions_path.stem)
    if items_path is not None:
        items_path = Path(items_path)
        require_file(items_path, "item file", "check the path (items_path)")
        item_columns = dict(item_columns or {"item_id": columns["item_id"]})
        _check_mapping(item_columns, ITEM_FIELDS, ("item_id",), "item_columns")
        catalog = _read_items(
            items_path, item_columns=item_columns, genre_column=genre_column,
            categorical=categorical, multi_valued=multi_valued, list_sep=list_sep,
            sep=items_sep, header=header, encoding=encoding, on_bad_rows=on_bad_rows,
            report=report, year_from_title=year_from_title)
    elif item_columns or genre_column is not None or categorical or multi_valued:
        raise ValueError("item_columns, genre_column, categorical and multi_valued describe "
                         "an item file: pass items_path too")
    fields = [Field(key, source, INTERACTION_FIELDS[key]) for key, source in columns.items()]
    fix = (f"each row of {interactions_path.name} needs integer user and item ids"
           + (", a timestamp" if "timestamp" in columns else "")
           + (" and a numeric rating" if "rating" in columns else "")
           + " in the mapped columns; repair or delete the row")
    frame, unit = _read_any(interactions_path, fields, sep=sep, header=header,
                            encoding=encoding, on_bad_rows=on_bad_rows, report=report, fix=fix,
                            time_unit=time_unit, item_file=False)
    if catalog is None:
        catalog = ItemCatalog.from_item_ids(frame["item_id"].to_numpy())
        report.add_note("no item file: the catalog is the set of interacted items, without "
                        "attributes")
    interactions = finish_interactions(frame, catalog, report, path=interactions_path,
                                       unknown_items=unknown_items, duplicates=duplicates,
                                       unit=unit)
    return Dataset(name=name or interactions_path.stem, interactions=interactions,
                   catalog=catalog, report=report)

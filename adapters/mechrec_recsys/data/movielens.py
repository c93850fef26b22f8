"""Loaders for the official MovieLens layouts.

=================  ==========================================  ==========================
release            files                                       format
=================  ==========================================  ==========================
ml-100k            ``u.data``, ``u.item``, ``u.genre``         tab / ``|``, latin-1
ml-1m, ml-10m      ``ratings.dat``, ``movies.dat``             ``::``, latin-1 (ml-1m)
ml-20m, ml-25m,    ``ratings.csv``, ``movies.csv``             CSV with header, UTF-8
ml-latest(-small)
=================  ==========================================  ==========================

Catalog conventions:

* ``title`` is the title exactly as written in the file (year included, no stripping).
* ``year`` is parsed from a trailing ``"(1995)"`` in the title (a range ``"(2006–2007)"`` gives
  its first year); ml-100k falls back to the year of its release-date column when the title has
  none. Titles without any year give a missing year.
* Genres are one bool column per official label, in the official order: the 19 of
  ``u.genre`` for ml-100k (with ``"unknown"``), the 18 of ml-1m, and for ml-10m and later the
  19 labels plus ``"(no genres listed)"``, kept as a column of its own like ml-100k's
  ``"unknown"``. Labels outside the official list follow ``unknown_genres``: ``"keep"``
  (default; an extra column, counted in ``report.unknown_genres`` and logged), ``"drop"`` (the
  label is removed and counted) or ``"error"``.
* Text files are decoded as UTF-8 when they are valid UTF-8, else as latin-1 (the official
  ml-100k and ml-1m files are latin-1; a copy re-saved as UTF-8 still loads correctly). The
  encoding used is recorded in the report.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import numpy as np
import pandas as pd

from mechrec_recsys.data.catalog import ItemCatalog, multi_hot, parse_year
from mechrec_recsys.data.cleaning import check_policies, finish_interactions
from mechrec_recsys.data.dataset import Dataset
from mechrec_recsys.data.download import find_local_copy, resolve_dataset_dir
from mechrec_recsys.data.errors import DataFormatError, DatasetNotFoundError
from mechrec_recsys.data.readers import (
    LINE,
    Field,
    TextFormat,
    check_on_bad_rows,
    read_rows,
    read_table,
    require_file,
    rows_to_frame,
)
from mechrec_recsys.data.registry import LOCAL_DATASETS, RELEASES, MovieLensRelease, get_release
from mechrec_recsys.data.report import LoadReport

UNKNOWN_GENRES = ("keep", "drop", "error")
_TEXT = ("utf-8", "latin-1")

ML100K_RATINGS = TextFormat(sep="\t", header=False, n_fields=4, final_newline=True)
ML100K_GENRE = TextFormat(sep="|", header=False, encodings=_TEXT, official_encoding="latin-1")
DAT_RATINGS = TextFormat(sep="::", header=False, n_fields=4, encodings=_TEXT,
                          final_newline=True)
CSV_RATINGS = TextFormat(sep=",", header=True, quoting=True,
                         expected_header=("userId", "movieId", "rating", "timestamp"),
                         final_newline=True)
CSV_MOVIES = TextFormat(sep=",", header=True, quoting=True, encodings=_TEXT,
                        expected_header=("movieId", "title", "genres"))

_RATING_FIELDS = [Field("user_id", 0, "int"), Field("item_id", 1, "int"),
                  Field("rating", 2, "float"), Field("timestamp", 3, "int")]


def _ratings_fix(release: MovieLensRelease, file_name: str, layout_line: str) -> str:
    return (f"each line of {file_name} must be {layout_line} with integer ids and timestamp; "
            f"repair or delete the line, or re-download {release.url}")


def _dat_movies_format(release: MovieLensRelease) -> TextFormat:
    official = "latin-1" if release.name == "ml-1m" else "utf-8"
    return TextFormat(sep="::", header=False, n_fields=3, encodings=_TEXT,
                      official_encoding=official)


def check_unknown_genres(unknown_genres: str) -> None:
    """Validate an ``unknown_genres`` argument."""
    if unknown_genres not in UNKNOWN_GENRES:
        raise ValueError(f"unknown_genres must be one of {UNKNOWN_GENRES}, got {unknown_genres!r}")


def genre_table(
    labels: list[list[str]],
    lines: np.ndarray,
    index: pd.Index,
    official: tuple[str, ...],
    *,
    path: Path,
    unknown_genres: str,
    report: LoadReport,
) -> pd.DataFrame:
    """Multi-hot genres from per-item label lists, checked against the official labels.

    Args:
        labels: the genre labels of each item (order of ``index``).
        lines: the file line of each item, for messages.
        index: item ids.
        official: the official labels, in column order.
        path: the item file, for messages.
        unknown_genres: ``"keep"``, ``"drop"`` or ``"error"`` for labels outside ``official``.
        report: receives unknown labels and drops.
    """
    check_unknown_genres(unknown_genres)
    known = set(official)
    unknown: dict[str, int] = {}
    first_line: dict[str, int] = {}
    for item_labels, line in zip(labels, lines.tolist(), strict=True):
        for label in item_labels:
            if label not in known:
                unknown[label] = unknown.get(label, 0) + 1
                first_line.setdefault(label, line)
    columns = list(official)
    if unknown:
        label = min(unknown, key=lambda g: first_line[g])
        close = difflib.get_close_matches(label, official, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        if unknown_genres == "error":
            raise DataFormatError(
                path, f"genre {label!r}{hint} is not one of the official labels "
                f"{', '.join(official)}",
                "correct the label, or pass unknown_genres='keep' (extra genre column) or "
                "unknown_genres='drop' (remove the label, counted)",
                line=first_line[label])
        report.unknown_genres.update(unknown)
        if unknown_genres == "keep":
            columns += sorted(unknown)
            report.add_note(f"{path.name}: kept {len(unknown)} genre label(s) outside the "
                            f"official list as extra columns: {sorted(unknown)}{hint}")
        else:
            examples = [f"{path.name} line {first_line[g]}: genre {g!r}" for g in sorted(unknown)]
            report.add_drop("unknown_genre", sum(unknown.values()), examples)
            labels = [[g for g in item_labels if g in known] for item_labels in labels]
    table = multi_hot(labels, index, columns)
    empty = int((~table.any(axis=1)).sum())
    if empty:
        report.add_note(f"{path.name}: {empty} item(s) have no genre label")
    return table


def _check_unique_ids(frame: pd.DataFrame, path: Path) -> None:
    repeated = frame["item_id"].duplicated(keep=False)
    if repeated.any():
        item = int(frame.loc[repeated, "item_id"].iloc[0])
        lines = frame.loc[frame["item_id"] == item, LINE].tolist()
        raise DataFormatError(
            path, f"item id {item} appears on lines {', '.join(map(str, lines))}",
            "keep one line per item id", line=int(lines[1]))


def _read_ml100k_catalog(
    folder: Path, report: LoadReport, *, on_bad_rows: str, unknown_genres: str,
    release: MovieLensRelease,
) -> ItemCatalog:
    genre_path = require_file(folder / "u.genre", "ml-100k genre list u.genre",
                              f"restore it from {release.url}")
    item_path = require_file(folder / "u.item", "ml-100k item file u.item",
                             f"restore it from {release.url}")
    report.files.append(str(genre_path))
    genre_rows = read_rows(genre_path, ML100K_GENRE, report)
    names: list[str] = []
    for row, line in zip(genre_rows.rows, genre_rows.lines, strict=True):
        if len(row) != 2 or row[1].strip() != str(len(names)) or not row[0].strip():
            raise DataFormatError(
                genre_path, f"expected 'name|{len(names)}', found {'|'.join(row)!r}",
                "restore the official u.genre: one 'name|index' line per genre, indices "
                "0, 1, 2, ... in order", line=line)
        names.append(row[0].strip())
    if not names:
        raise DataFormatError(genre_path, "lists no genres",
                              f"restore the official u.genre from {release.url}")
    n_genres = len(names)
    fmt = TextFormat(sep="|", header=False, n_fields=5 + n_genres, encodings=_TEXT,
                     official_encoding="latin-1")
    fields = [Field("item_id", 0, "int"), Field("title", 1, "str"),
              Field("release_date", 2, "str", optional=True)]
    fields += [Field(f"genre_{j}", 5 + j, "int") for j in range(n_genres)]
    fix = (f"each line of u.item must be 'id|title|release date|video date|IMDb URL' followed "
           f"by {n_genres} genre flags (0 or 1), one per genre of u.genre; repair or delete the "
           f"line, or re-download {release.url}")
    report.files.append(str(item_path))
    raw = read_rows(item_path, fmt, report)
    frame = rows_to_frame(raw, fmt, fields, on_bad_rows=on_bad_rows, report=report, fix=fix,
                          count_rows=False, drop_reason="malformed_item_row")
    flags = frame[[f"genre_{j}" for j in range(n_genres)]].to_numpy()
    bad_flag = ~np.isin(flags, (0, 1)).all(axis=1)
    if bad_flag.any():
        lines = frame.loc[bad_flag, LINE].tolist()
        if on_bad_rows == "error":
            raise DataFormatError(item_path, "a genre flag is neither 0 nor 1", fix,
                                  line=int(lines[0]))
        report.add_drop("malformed_item_row", len(lines),
                        [f"u.item line {n}: a genre flag is neither 0 nor 1" for n in lines[:5]])
        frame = frame.loc[~bad_flag].reset_index(drop=True)
        flags = flags[~bad_flag]
    _check_unique_ids(frame, item_path)
    index = pd.Index(frame["item_id"].to_numpy(dtype=np.int64), name="item_id")
    titles = frame["title"].astype("str")
    years = [parse_year(t) for t in titles]
    fallback = 0
    for i, date in enumerate(frame["release_date"].tolist()):
        if years[i] is None and isinstance(date, str) and date.strip()[-4:].isdigit():
            years[i] = int(date.strip()[-4:])
            fallback += 1
    if fallback:
        report.add_note(f"u.item: {fallback} title(s) without a year; took the year of the "
                        "release date")
    items = pd.DataFrame({"title": titles.to_numpy(), "year": pd.array(years, dtype="Int64")},
                         index=index)
    genres = pd.DataFrame(flags.astype(bool), index=index, columns=names)
    return ItemCatalog(items=items, genres=genres)


def _read_listed_catalog(
    path: Path, fmt: TextFormat, release: MovieLensRelease, report: LoadReport, *,
    on_bad_rows: str, unknown_genres: str,
) -> ItemCatalog:
    layout = ("'movieId,title,genres' (title quoted when it contains a comma)"
              if fmt.sep == "," else "'MovieID::Title::Genres'")
    fix = (f"each line of {path.name} must be {layout} with genres separated by '|'; repair or "
           f"delete the line, or re-download {release.url}")
    report.files.append(str(path))
    raw = read_rows(path, fmt, report)
    fields = [Field("item_id", 0, "int"), Field("title", 1, "str"),
              Field("genres", 2, "str", optional=True)]
    frame = rows_to_frame(raw, fmt, fields, on_bad_rows=on_bad_rows, report=report, fix=fix,
                          count_rows=False, drop_reason="malformed_item_row")
    _check_unique_ids(frame, path)
    index = pd.Index(frame["item_id"].to_numpy(dtype=np.int64), name="item_id")
    titles = frame["title"].astype("str")
    labels = [[g.strip() for g in str(text).split("|") if g.strip()] if isinstance(text, str)
              else [] for text in frame["genres"].astype("object").tolist()]
    assert release.genres is not None
    genres = genre_table(labels, frame[LINE].to_numpy(), index, release.genres, path=path,
                         unknown_genres=unknown_genres, report=report)
    years = pd.array([parse_year(t) for t in titles], dtype="Int64")
    items = pd.DataFrame({"title": titles.to_numpy(), "year": years}, index=index)
    return ItemCatalog(items=items, genres=genres)


def read_movielens_catalog(
    path: str | Path,
    name: str,
    *,
    report: LoadReport | None = None,
    on_bad_rows: str = "error",
    unknown_genres: str = "keep",
) -> ItemCatalog:
    """Parse the item file of an official MovieLens release.

    Args:
        path: ``movies.dat`` / ``movies.csv``; for ml-100k the folder holding ``u.item`` and
            ``u.genre`` (or the ``u.item`` file itself).
        name: the release whose layout the file has, e.g. ``"ml-1m"``.
        report: receives encodings, drops and notes (a fresh one if ``None``).
        on_bad_rows: ``"error"`` or ``"drop"`` for malformed item rows.
        unknown_genres: ``"keep"``, ``"drop"`` or ``"error"`` for labels outside the
            official list.
    """
    release = get_release(name)
    check_on_bad_rows(on_bad_rows)
    check_unknown_genres(unknown_genres)
    report = report if report is not None else LoadReport(source=f"{name} catalog")
    path = Path(path)
    if release.layout == "ml-100k":
        folder = path.parent if path.is_file() else path
        return _read_ml100k_catalog(folder, report, on_bad_rows=on_bad_rows,
                                    unknown_genres=unknown_genres, release=release)
    fmt = CSV_MOVIES if release.layout == "csv" else _dat_movies_format(release)
    require_file(path, f"{name} item file", f"restore {release.required_files[-1]} from "
                 f"{release.url}")
    return _read_listed_catalog(path, fmt, release, report, on_bad_rows=on_bad_rows,
                                unknown_genres=unknown_genres)


def load_movielens(
    folder: str | Path,
    name: str,
    *,
    on_bad_rows: str = "error",
    unknown_items: str = "drop",
    duplicates: str = "drop",
    unknown_genres: str = "keep",
) -> Dataset:
    """Load an official MovieLens release from a folder holding its files.

    Args:
        folder: the release's folder (e.g. the unzipped ``ml-1m/``) or its parent.
        name: the release, e.g. ``"ml-1m"``; decides the layout.
        on_bad_rows: ``"error"`` (default) raises on the first malformed row, naming file and
            line; ``"drop"`` drops malformed rows and counts them in the report.
        unknown_items: ``"drop"`` (default, counted) or ``"error"`` for ratings of items
            missing from the item file.
        duplicates: ``"drop"`` (default, counted), ``"keep"`` or ``"error"`` for exact
            duplicate events.
        unknown_genres: ``"keep"`` (default), ``"drop"`` or ``"error"``, see module docs.
    """
    release = get_release(name)
    check_on_bad_rows(on_bad_rows)
    check_policies(unknown_items, duplicates)
    check_unknown_genres(unknown_genres)
    located = find_local_copy(folder, release)
    if located is None:
        missing = [f for f in release.required_files if not (Path(folder) / f).is_file()]
        raise DatasetNotFoundError(
            f"{name} files missing in {folder}: {', '.join(missing)}. Fix: download "
            f"{release.url} and unzip it there")
    report = LoadReport(source=name)
    catalog = read_movielens_catalog(
        located if release.layout == "ml-100k" else located / release.required_files[-1],
        name, report=report, on_bad_rows=on_bad_rows, unknown_genres=unknown_genres)
    if release.layout == "ml-100k":
        path, fmt = located / "u.data", ML100K_RATINGS
        fix = _ratings_fix(release, "u.data", "'user id<TAB>item id<TAB>rating<TAB>timestamp'")
    elif release.layout == "dat":
        path, fmt = located / "ratings.dat", DAT_RATINGS
        fix = _ratings_fix(release, "ratings.dat", "'UserID::MovieID::Rating::Timestamp'")
    else:
        path, fmt = located / "ratings.csv", CSV_RATINGS
        fix = _ratings_fix(release, "ratings.csv", "'userId,movieId,rating,timestamp'")
    fields = _RATING_FIELDS
    if fmt.header:
        fields = [Field(f.name, fmt.expected_header[i], f.kind)  # type: ignore[index]
                  for i, f in enumerate(_RATING_FIELDS)]
    frame = read_table(path, fmt, fields, on_bad_rows=on_bad_rows, report=report, fix=fix)
    interactions = finish_interactions(frame, catalog, report, path=path,
                                       unknown_items=unknown_items, duplicates=duplicates)
    return Dataset(name=name, interactions=interactions, catalog=catalog, report=report)


def _world_folder(name: str) -> Path | None:
    """The synthetic world ``name`` names (a folder holding ``world.json``), else ``None``.

    Raises:
        DatasetNotFoundError: ``name`` is a folder that is neither a world nor a release name.
    """
    if name in RELEASES or name in LOCAL_DATASETS:
        return None
    folder = Path(name).expanduser()
    if (folder / "world.json").is_file():
        return folder
    if folder.is_dir():
        raise DatasetNotFoundError(
            f"{name} is a folder but not a finished synthetic world: it has no world.json "
            "(the generator writes it last, so the world may be unfinished). Generate it with "
            "`mechrec data synth --out FOLDER`, or name a release such as ml-1m")
    return None


def dataset_key(name: str) -> str:
    """The name a run records for dataset ``name``: a synthetic world's absolute folder (so
    the run reopens from any working directory), any other name unchanged."""
    world = _world_folder(name)
    return str(world.resolve()) if world is not None else name


def is_world(name: str) -> bool:
    """Whether ``name`` is the folder of a finished synthetic world (``False`` for any other
    name or folder)."""
    try:
        return _world_folder(name) is not None
    except DatasetNotFoundError:
        return False


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    download: bool = True,
    cache_dir: str | Path | None = None,
    on_bad_rows: str = "error",
    unknown_items: str = "drop",
    duplicates: str = "drop",
    unknown_genres: str = "keep",
) -> Dataset:
    """Load a MovieLens dataset by name, finding or downloading its files.

    Args:
        name: an official release, ``"ml-100k"``, ``"ml-1m"``, ``"ml-10m"``, ``"ml-20m"``,
            ``"ml-25m"``, ``"ml-latest"``, ``"ml-latest-small"``, a local-only copy such as
            ``"ml-1m-ordered"`` (read from ``data_dir`` or ``$MECHREC_DATA`` only, never
            downloaded; see :mod:`mechrec_recsys.data.local`), or the folder of a synthetic
            world made by ``mechrec data synth`` (the folder holding ``world.json``).
        data_dir: explicit folder (holding ``<name>/`` or the files themselves); takes
            precedence over ``$MECHREC_DATA``, then the cache, then a download.
        download: whether to download the official zip into the cache when no local copy
            exists (never when ``data_dir`` is given).
        cache_dir: cache folder (default ``$XDG_CACHE_HOME/mechrec/datasets``).
        on_bad_rows, unknown_items, duplicates, unknown_genres: see :func:`load_movielens`.

    Raises:
        DatasetNotFoundError: no local copy and no download possible; names URL and folder.
        DataFormatError: a file does not match its layout; names file, line and fix.
    """
    world = _world_folder(name)
    if world is not None:
        from mechrec_recsys.synthetic.files import load_world  # it builds on this package

        return load_world(world, name=world.name)
    if name in LOCAL_DATASETS:
        from mechrec_recsys.data.local import load_local_dataset  # it builds on this module

        return load_local_dataset(name, data_dir, on_bad_rows=on_bad_rows,
                                  unknown_items=unknown_items, duplicates=duplicates,
                                  unknown_genres=unknown_genres)
    folder = resolve_dataset_dir(name, data_dir, download=download, cache_dir=cache_dir)
    return load_movielens(folder, name, on_bad_rows=on_bad_rows, unknown_items=unknown_items,
                          duplicates=duplicates, unknown_genres=unknown_genres)


__all__ = ["RELEASES", "dataset_key", "is_world", "load_dataset", "load_movielens",
           "read_movielens_catalog"]

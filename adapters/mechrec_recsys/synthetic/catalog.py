"""Reading the catalog a world is drawn over: any item table with ids, titles, genres (and
optionally years).

* An official MovieLens item file: ``movies.dat`` (ml-1m layout) or ``u.item`` (ml-100k).
* Any CSV/TSV/parquet table with a header: an id column (``item_id``, ``movieId``,
  ``movie_id``, ``MovieID``, ``itemId`` or ``id``), ``title``, ``genres`` (``|``-separated)
  and optionally ``year`` (else parsed from titles ending in ``"(1995)"``). The default is
  ``$MECHREC_DATA/ml-20m-catalog/movies.csv`` (27,278 movies).
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from mechrec_recsys.data.catalog import ItemCatalog
from mechrec_recsys.data.download import ENV_DATA

# The generic loader's item-file reader (header, id, title, year and genre parsing with errors
# that name the file and row); the generator reads item tables exactly as load_generic does.
from mechrec_recsys.data.generic import _read_items
from mechrec_recsys.data.movielens import read_movielens_catalog
from mechrec_recsys.data.readers import require_file
from mechrec_recsys.data.report import LoadReport

#: Where the default catalog lives under ``$MECHREC_DATA``.
DEFAULT_CATALOG = Path("ml-20m-catalog") / "movies.csv"
_ID_COLUMNS = ("item_id", "movieId", "movie_id", "MovieID", "itemId", "id")
_GENRE_COLUMNS = ("genres", "genre", "Genres")
_TEXT = {".csv": ",", ".tsv": "\t", ".tab": "\t"}


def default_catalog_path() -> Path:
    """``$MECHREC_DATA/ml-20m-catalog/movies.csv``.

    Raises:
        FileNotFoundError: ``$MECHREC_DATA`` is not set.
    """
    root = os.environ.get(ENV_DATA)
    if not root:
        raise FileNotFoundError(f"no catalog given and ${ENV_DATA} is not set; pass a catalog "
                                f"(--catalog PATH) or set ${ENV_DATA} to a folder holding "
                                f"{DEFAULT_CATALOG}")
    return Path(root).expanduser() / DEFAULT_CATALOG


def _header(path: Path) -> list[str]:
    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            import pyarrow.parquet as pq

            return list(pq.read_schema(path).names)
        except Exception as exc:  # pyarrow raises several unrelated types for a bad file
            raise ValueError(f"{path} is not a readable parquet file ({exc})") from None
    sep = _TEXT.get(path.suffix.lower())
    if sep is None:
        raise ValueError(f"cannot read a catalog from {path.name}: use movies.dat, u.item, or a "
                         ".csv/.tsv/.parquet table with a header")
    try:
        return [str(c) for c in pd.read_csv(path, sep=sep, nrows=0).columns]
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the header of {path}: {exc}") from None


def _pick(header: list[str], names: tuple[str, ...], what: str, path: Path) -> str:
    for name in names:
        if name in header:
            return name
    raise ValueError(f"{path.name} has no {what} column (looked for {', '.join(names)}); its "
                     f"columns are {header}")


def read_catalog(path: str | Path) -> ItemCatalog:
    """The item catalog at ``path`` (see the module documentation for the formats).

    Raises:
        FileNotFoundError: no such file.
        ValueError: an unknown format, a missing id, title or genre column, malformed rows.
    """
    path = Path(path).expanduser()
    require_file(path, "catalog file", "check --catalog")
    if path.name == "u.item":
        return read_movielens_catalog(path, "ml-100k")
    if path.suffix.lower() == ".dat":
        return read_movielens_catalog(path, "ml-1m")
    header = _header(path)
    columns = {"item_id": _pick(header, _ID_COLUMNS, "item id", path),
               "title": _pick(header, ("title", "Title"), "title", path)}
    if "year" in header:
        columns["year"] = "year"
    genre = _pick(header, _GENRE_COLUMNS, "genre", path)
    return _read_items(path, item_columns=columns, genre_column=genre, categorical=(),
                       multi_valued=(), list_sep="|", sep=_TEXT.get(path.suffix.lower()),
                       header=True, encoding="utf-8", on_bad_rows="error",
                       report=LoadReport(source=path.name), year_from_title=True)

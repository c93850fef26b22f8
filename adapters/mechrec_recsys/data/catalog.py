"""``ItemCatalog``: item titles, release years and attributes (multi-hot genres and more).

The catalog is indexed by the raw item id. Attributes line up with model tokens through
:meth:`ItemCatalog.attribute_matrix`, which takes the :class:`~mechrec_recsys.vocab.ItemVocab`
of a model and returns one row per token (row 0, padding, all zeros).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mechrec_recsys.vocab import ItemVocab

# "(1995)" at the end of a title; a range such as "(2006–2007)" or "(2006-)" gives its start.
_YEAR_AT_END = re.compile(r"\((\d{4})(?:\s*[-–]\s*(?:\d{4})?)?\)\s*$")


def parse_year(title: str | None) -> int | None:
    """The release year written at the end of a MovieLens title, e.g. ``"Heat (1995)"``.

    A year range such as ``"(2006–2007)"`` gives its first year. Titles without a trailing
    year (``"unknown"``, some TV series in newer MovieLens releases) give ``None``.
    """
    if not isinstance(title, str):
        return None
    match = _YEAR_AT_END.search(title)
    return int(match.group(1)) if match else None


def multi_hot(
    labels: Sequence[Iterable[str]], index: pd.Index, columns: Sequence[str]
) -> pd.DataFrame:
    """A boolean item x label table from one list of labels per item.

    Args:
        labels: the labels of each item, in the order of ``index``.
        index: the item ids.
        columns: every label, in the column order wanted; a label not listed raises KeyError.
    """
    position = {name: j for j, name in enumerate(columns)}
    table = np.zeros((len(index), len(columns)), dtype=bool)
    for row, item_labels in enumerate(labels):
        for label in item_labels:
            table[row, position[label]] = True
    return pd.DataFrame(table, index=index, columns=list(columns))


@dataclass
class ItemCatalog:
    """Items and their attributes.

    Attributes:
        items: index ``item_id`` (int64, unique); columns ``title`` (str, may be missing for
            catalogs built from interactions alone) and ``year`` (nullable Int64).
        genres: same index; one bool column per genre (multi-hot). May have no columns.
        extra: extra single-valued categorical attributes (e.g. language), each a Series
            indexed by item id; items without a value hold a missing value.
        multi_hot: extra multi-valued attributes (e.g. tags), each a bool item x value table
            with the same index as ``items``.
    """

    items: pd.DataFrame
    genres: pd.DataFrame
    extra: dict[str, pd.Series] = field(default_factory=dict)
    multi_hot: dict[str, pd.DataFrame] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.items = self.items.copy()
        if "title" not in self.items.columns or "year" not in self.items.columns:
            raise ValueError("ItemCatalog.items needs the columns 'title' and 'year'")
        if not self.items.index.is_unique:
            dup = self.items.index[self.items.index.duplicated()][0]
            raise ValueError(f"ItemCatalog.items has item id {dup} more than once")
        self.items.index = pd.Index(self.items.index.astype("int64"), name="item_id")
        self.items["year"] = self.items["year"].astype("Int64")
        if not self.genres.index.equals(self.items.index):
            raise ValueError("ItemCatalog.genres must have exactly the index of ItemCatalog.items")
        self.genres = self.genres.astype(bool)  # a copy: the caller's frame is left alone
        self.genres.index = self.items.index
        for name, series in self.extra.items():
            if not series.index.isin(self.items.index).all():
                raise ValueError(f"extra attribute {name!r} mentions items not in the catalog")
        tables = {}
        for name, table in self.multi_hot.items():
            if not table.index.equals(self.items.index):
                raise ValueError(f"multi-valued attribute {name!r} must share the items' index")
            tables[name] = table.astype(bool)
        self.multi_hot = tables

    @classmethod
    def from_item_ids(cls, item_ids: Iterable[int]) -> ItemCatalog:
        """A catalog of bare items (no titles, years or attributes), e.g. for data without an
        item file."""
        index = pd.Index(np.unique(np.fromiter((int(i) for i in item_ids), dtype=np.int64)),
                         name="item_id")
        items = pd.DataFrame({"title": pd.Series(pd.NA, index=index, dtype="string"),
                              "year": pd.Series(pd.NA, index=index, dtype="Int64")})
        return cls(items=items, genres=pd.DataFrame(index=index))

    def __len__(self) -> int:
        return len(self.items)

    @property
    def item_ids(self) -> np.ndarray:
        """The raw item ids, sorted ascending (int64)."""
        return np.sort(self.items.index.to_numpy(dtype=np.int64))

    @property
    def genre_names(self) -> list[str]:
        """Genre column names, in their catalog order."""
        return [str(c) for c in self.genres.columns]

    def vocab(self) -> ItemVocab:
        """A vocabulary over every catalog item (tokens follow ascending item id)."""
        return ItemVocab(self.item_ids)

    def attribute_names(self) -> list[str]:
        """Every name :meth:`attribute_matrix` accepts: genres, then ``"column=value"`` for the
        extra categorical and multi-valued attributes."""
        names = self.genre_names
        for column, series in self.extra.items():
            values = sorted(series.dropna().astype(str).unique())
            names.extend(f"{column}={value}" for value in values)
        for column, table in self.multi_hot.items():
            names.extend(f"{column}={value}" for value in table.columns)
        return names

    def _attribute_column(self, name: str) -> pd.Series:
        if name in self.genres.columns:
            return self.genres[name]
        column, sep, value = name.partition("=")
        if sep and column in self.extra:
            series = self.extra[column].reindex(self.items.index)
            return series.astype("string").eq(value).fillna(False).astype(bool)
        if sep and column in self.multi_hot and value in self.multi_hot[column].columns:
            return self.multi_hot[column][value]
        available = self.attribute_names()
        shown = ", ".join(available[:30]) + (" ..." if len(available) > 30 else "")
        raise ValueError(
            f"unknown attribute {name!r}; use a genre name or 'column=value' for an extra "
            f"attribute. Available: {shown or '(this catalog has no attributes)'}"
        )

    def attribute_frame(self, names: Sequence[str] | None = None) -> pd.DataFrame:
        """Item x attribute table of 0/1 floats (index: item id).

        Args:
            names: attribute names (see :meth:`attribute_names`); default: every genre.
        """
        names = self.genre_names if names is None else list(names)
        if not names:
            return pd.DataFrame(index=self.items.index, dtype=np.float32)
        columns = {name: self._attribute_column(name).to_numpy(dtype=np.float32)
                   for name in names}
        return pd.DataFrame(columns, index=self.items.index)

    def attribute_matrix(self, vocab: ItemVocab, names: Sequence[str] | None = None) -> np.ndarray:
        """Attributes aligned with model tokens.

        Args:
            vocab: the model's vocabulary; token ``t`` is item ``vocab.item_ids[t - 1]``.
            names: attribute names (see :meth:`attribute_names`); default: every genre.

        Returns:
            ``(vocab.size, A)`` float32 array; row 0 (padding) and rows of vocabulary items the
            catalog does not describe are all zeros.
        """
        frame = self.attribute_frame(names)
        out = np.zeros((vocab.size, frame.shape[1]), dtype=np.float32)
        if frame.shape[1] == 0 or vocab.num_items == 0:
            return out
        aligned = frame.reindex(vocab.item_ids).to_numpy(dtype=np.float32)
        out[1:] = np.nan_to_num(aligned, nan=0.0)
        return out

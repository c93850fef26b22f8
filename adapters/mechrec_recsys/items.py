"""Item labels of model tokens: the catalog's genres, release decades and custom predicates.

Every recipe of the core labels an activation row by its input token through a token
attribute table (:meth:`mechrec.study.Study.attribute_table`). For GPTRec a token is an item,
so the table comes from the catalog:

- :func:`item_table`: one row per token with ``item_id``, ``title``, ``year`` and ``genres``;
- :func:`token_attribute_table`: genres, one-hot release decades and custom item predicates
  per token, with each attribute's group (``genre``, ``decade``, ``custom``);
- :func:`title_contains`, :func:`year_between`: item predicates for that table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # pragma: no cover - typing only
    from mechrec_recsys.experiment import Experiment

__all__ = [
    "GROUPS",
    "ItemPredicate",
    "item_table",
    "title_contains",
    "token_attribute_table",
    "token_predicate_table",
    "year_between",
]

GROUPS: tuple[str, ...] = ("genre", "decade", "custom")
"""Kinds of item attributes: catalog genres (and other catalog attributes), release decades,
custom item predicates."""

ItemPredicate = Callable[[pd.DataFrame], Any]
"""Maps the :func:`item_table` (one row per token) to one boolean per token."""


def item_table(experiment: Experiment) -> pd.DataFrame:
    """One row per model token: ``item_id``, ``title``, ``year`` and ``genres`` (joined by ``|``).

    Indexed by token ``0..V-1``; row 0 is padding (item id -1, empty title, no year, no genre).
    """
    vocab = experiment.vocab
    catalog = experiment.dataset.catalog
    items = catalog.items.reindex(vocab.item_ids)
    titles = (items["title"] if "title" in items.columns
              else pd.Series(pd.NA, index=items.index, dtype=object))
    years = (items["year"] if "year" in items.columns
             else pd.Series(pd.NA, index=items.index, dtype="Int64"))
    genres = catalog.genres.reindex(vocab.item_ids).fillna(False).astype(bool)
    names = np.array(catalog.genre_names, dtype=object)
    genre_text = ["|".join(names[row]) for row in genres.to_numpy(dtype=bool)]
    table = pd.DataFrame({
        "item_id": np.concatenate([[-1], np.asarray(vocab.item_ids, dtype=np.int64)]),
        "title": ["", *titles.fillna("").astype(str).tolist()],
        "year": pd.array([pd.NA, *years.tolist()], dtype="Int64"),
        "genres": ["", *genre_text],
    })
    table.index.name = "token"
    return table


def title_contains(text: str, *, case: bool = False) -> ItemPredicate:
    """Item predicate: the title contains ``text`` (plain substring; case-insensitive by
    default), e.g. ``title_contains("Star Wars")``."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"title_contains needs a non-empty string, got {text!r}")

    def predicate(items: pd.DataFrame) -> np.ndarray:
        return items["title"].fillna("").str.contains(text, case=case, regex=False).to_numpy()

    return predicate


def year_between(first: int, last: int) -> ItemPredicate:
    """Item predicate: release year in ``[first, last]`` (inclusive); unknown years are False."""
    if int(first) > int(last):
        raise ValueError(f"year range {first}-{last} is empty: the first year must be <= the last")

    def predicate(items: pd.DataFrame) -> np.ndarray:
        years = items["year"]
        return (years.ge(int(first)) & years.le(int(last))).fillna(False).to_numpy(dtype=bool)

    return predicate


def token_predicate_table(
    experiment: Experiment, predicates: Mapping[str, ItemPredicate]
) -> pd.DataFrame:
    """``(V, P)`` float32 0/1 table: each item predicate evaluated on every token (row 0: 0)."""
    items = item_table(experiment)
    columns: dict[str, np.ndarray] = {}
    for name, predicate in predicates.items():
        if not callable(predicate):
            raise ValueError(f"predicate {name!r} must be callable on the item table, got "
                             f"{type(predicate).__name__}")
        got = np.asarray(predicate(items))
        if got.shape != (len(items),):
            raise ValueError(f"predicate {name!r} returned shape {got.shape} for {len(items)} "
                             "tokens: return one boolean per row of the item table")
        values = got.astype(bool).astype(np.float32)
        values[0] = 0.0
        columns[str(name)] = values
    return pd.DataFrame(columns, index=items.index)


def token_attribute_table(
    experiment: Experiment,
    *,
    names: Sequence[str] | None = None,
    decades: bool = True,
    predicates: Mapping[str, ItemPredicate] | None = None,
) -> tuple[pd.DataFrame, pd.Series]:
    """Attributes of every token and the group of each attribute.

    Args:
        experiment: the run.
        names: catalog attributes (default: every genre).
        decades: add one-hot release decades (``decade=1990s``, ...).
        predicates: custom item predicates, name -> :data:`ItemPredicate`.

    Returns:
        ``(table, groups)``: ``table`` is ``(V, A)`` float32 indexed by token with attribute
        columns; ``groups`` maps each attribute to ``"genre"``, ``"decade"`` or ``"custom"``.
    """
    matrix, attr_names = experiment.token_attributes(
        None if names is None else list(names), decades=decades)
    table = pd.DataFrame(matrix, columns=attr_names)
    base = len(attr_names) - (sum(n.startswith("decade=") for n in attr_names) if decades else 0)
    groups = ["genre"] * base + ["decade"] * (len(attr_names) - base)
    if predicates:
        custom = token_predicate_table(experiment, predicates)
        clash = sorted(set(custom.columns) & set(table.columns))
        if clash:
            raise ValueError(f"custom predicate names {clash} clash with catalog attributes: "
                             "rename them")
        table = pd.concat([table, custom.reset_index(drop=True)], axis=1)
        groups += ["custom"] * custom.shape[1]
    table.index.name = "token"
    return table, pd.Series(groups, index=pd.Index(table.columns, name="attribute"),
                            name="group")

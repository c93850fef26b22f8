"""``Dataset``: interactions plus the item catalog they refer to, plus the load report."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from mechrec_recsys.data.catalog import ItemCatalog
from mechrec_recsys.data.report import LoadReport
from mechrec_recsys.vocab import ItemVocab

#: Column dtypes of :attr:`Dataset.interactions` (``timestamp`` and ``rating`` are optional).
INTERACTION_DTYPES = {
    "user_id": "int64",
    "item_id": "int64",
    "timestamp": "int64",
    "rating": "float64",
    "order": "int64",
}


@dataclass
class Dataset:
    """A loaded dataset.

    Attributes:
        name: short name, e.g. ``"ml-100k"``.
        interactions: one row per event, in file order; columns ``user_id`` (int64),
            ``item_id`` (int64), optionally ``timestamp`` (int64, seconds since the epoch) and
            ``rating`` (float64), and ``order`` (int64): an explicit position of the event in
            its user's sequence, for data whose time order is known more finely than its
            timestamps (see :mod:`mechrec_recsys.data.ordering`). Every ``item_id`` is in the
            catalog.
        catalog: the items and their attributes. It may hold items nobody interacted with.
        report: what the loader read, kept and dropped.
    """

    name: str
    interactions: pd.DataFrame
    catalog: ItemCatalog
    report: LoadReport

    def __post_init__(self) -> None:
        missing = {"user_id", "item_id"} - set(self.interactions.columns)
        if missing:
            raise ValueError(f"interactions lack the columns {sorted(missing)}")
        unexpected = set(self.interactions.columns) - set(INTERACTION_DTYPES)
        if unexpected:
            raise ValueError(
                f"interactions have unexpected columns {sorted(unexpected)}; allowed: "
                f"{list(INTERACTION_DTYPES)}"
            )
        for column in self.interactions.columns:
            wanted = INTERACTION_DTYPES[column]
            if str(self.interactions[column].dtype) != wanted:
                raise ValueError(
                    f"interactions column {column!r} has dtype {self.interactions[column].dtype}, "
                    f"expected {wanted}"
                )
        unknown = ~self.interactions["item_id"].isin(self.catalog.items.index)
        if unknown.any():
            item = int(self.interactions.loc[unknown, "item_id"].iloc[0])
            raise ValueError(
                f"{int(unknown.sum())} interactions refer to items missing from the catalog "
                f"(e.g. item {item}); load through a loader, which drops and reports them"
            )

    @property
    def has_timestamps(self) -> bool:
        """Whether the interactions carry timestamps (time-based splits need them)."""
        return "timestamp" in self.interactions.columns

    @property
    def has_order(self) -> bool:
        """Whether the interactions carry an explicit sequence order column."""
        return "order" in self.interactions.columns

    @property
    def num_users(self) -> int:
        """Number of distinct users with at least one interaction."""
        return int(self.interactions["user_id"].nunique())

    @property
    def num_items(self) -> int:
        """Number of distinct items with at least one interaction (see ``len(catalog)`` for
        the whole catalog)."""
        return int(self.interactions["item_id"].nunique())

    @property
    def num_interactions(self) -> int:
        """Number of interaction rows."""
        return len(self.interactions)

    def vocab(self) -> ItemVocab:
        """The item vocabulary of this dataset: every catalog item, tokens in item-id order.

        The vocabulary covers the whole catalog rather than the items seen in training, so that
        every item that can appear as a model input or target has a token; items nobody rated
        simply keep their initial embedding.
        """
        return self.catalog.vocab()

    def user_ids(self) -> np.ndarray:
        """Sorted distinct user ids."""
        return np.unique(self.interactions["user_id"].to_numpy(dtype=np.int64))

    def __repr__(self) -> str:
        time = "with timestamps" if self.has_timestamps else "without timestamps"
        return (
            f"Dataset({self.name!r}: {self.num_users:,} users, {self.num_items:,} items "
            f"({len(self.catalog):,} in catalog), {self.num_interactions:,} interactions, {time})"
        )

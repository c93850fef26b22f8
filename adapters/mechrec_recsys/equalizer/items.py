"""What the page shows about items: title, year and genres per model token, and genre shares.

:class:`ItemTable` is built once per session from the run's catalog and vocabulary; describing a
top-K list or measuring its genre shares is then a lookup.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from mechrec_recsys.experiment import Experiment


def plain(value: Any) -> Any:
    """A numpy scalar as the Python value JSON can carry (other values unchanged)."""
    return value.item() if isinstance(value, np.generic) else value


class ItemTable:
    """Item descriptions and genre flags aligned with the model's tokens.

    Args:
        experiment: the run; its catalog gives titles, years and the multi-hot genres, its
            vocabulary the token of each item.
    """

    def __init__(self, experiment: Experiment) -> None:
        vocab = experiment.vocab
        catalog = experiment.dataset.catalog
        matrix, names = experiment.token_attributes()
        self.genre_names: list[str] = list(names)
        self._flags = np.asarray(matrix, dtype=bool)  # (vocab.size, G); row 0 = padding
        self._column = {name: i for i, name in enumerate(self.genre_names)}
        tokens = np.arange(1, vocab.size, dtype=np.int64)
        item_ids = vocab.to_items(tokens)
        titles = catalog.items["title"].reindex(item_ids)
        years = catalog.items["year"].reindex(item_ids)
        self._item_ids: list[Any] = [None, *(plain(i) for i in item_ids)]
        self._titles: list[str] = ["", *("" if pd.isna(t) else str(t) for t in titles.tolist())]
        self._years: list[int | None] = [None, *(None if pd.isna(y) else int(y)
                                                 for y in years.tolist())]

    @property
    def size(self) -> int:
        """Number of tokens (padding included)."""
        return len(self._item_ids)

    def item_id(self, token: int) -> Any:
        """The raw item id of a token."""
        return self._item_ids[int(token)]

    def genres_of(self, token: int) -> list[str]:
        """Genre names of a token's item, in catalog order."""
        return [self.genre_names[g] for g in np.flatnonzero(self._flags[int(token)])]

    def describe(self, tokens: Sequence[int]) -> list[dict[str, Any]]:
        """One dict per real token (padding 0 skipped): ``rank, item_id, title, year, genres``.

        ``rank`` counts from 1 in the order given.
        """
        out = []
        for rank, token in enumerate((int(t) for t in tokens if int(t) != 0), start=1):
            out.append({
                "rank": rank,
                "item_id": self._item_ids[token],
                "title": self._titles[token],
                "year": self._years[token],
                "genres": self.genres_of(token),
            })
        return out

    def shares(self, tokens: Sequence[int], genres: Sequence[str]) -> dict[str, float]:
        """Share of the list's items that carry each genre (padding skipped; 0 for no items).

        Genres are multi-hot, so shares of different genres do not add up to 1.
        """
        real = np.asarray([int(t) for t in tokens if int(t) != 0], dtype=np.int64)
        out: dict[str, float] = {}
        for genre in genres:
            column = self._column[genre]
            out[genre] = float(self._flags[real, column].mean()) if real.size else 0.0
        return out


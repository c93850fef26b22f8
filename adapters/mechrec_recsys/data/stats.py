"""``dataset_statistics``: a table of sizes, sequence lengths and genre shares."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from mechrec_recsys.data.dataset import Dataset
from mechrec_recsys.data.splits import Split
from mechrec_recsys.sequences import SequenceSet

QUANTILES: tuple[float, ...] = (0.25, 0.5, 0.75, 0.9)


def _length_rows(lengths: np.ndarray, quantiles: Sequence[float]) -> dict[str, float]:
    if len(lengths) == 0:
        return {}
    rows = {"length min": float(lengths.min())}
    for q in quantiles:
        rows[f"length p{round(q * 100):d}"] = float(np.quantile(lengths, q))
    rows["length max"] = float(lengths.max())
    rows["length mean"] = float(lengths.mean())
    return rows


def _genre_rows(genres: np.ndarray, names: list[str], tokens: np.ndarray) -> dict[str, float]:
    if len(tokens) == 0:
        return {}
    shares = genres[tokens].mean(axis=0)
    return {f"genre {name}": float(share) for name, share in zip(names, shares, strict=True)}


def _part_column(part: SequenceSet, genres: np.ndarray, names: list[str],
                 quantiles: Sequence[float]) -> dict[str, float]:
    lengths = part.lengths()
    tokens = np.concatenate(part.sequences) if len(part) else np.zeros(0, dtype=np.int64)
    if part.targets is not None:
        tokens = np.concatenate([tokens, np.asarray(part.targets, dtype=np.int64)])
    column = {
        "users": float(len(part)),
        "items": float(len(np.unique(tokens))),
        "interactions": float(len(tokens)),
    }
    if part.targets is not None:
        column["targets"] = float(len(part.targets))
    column.update(_length_rows(lengths, quantiles))
    column.update(_genre_rows(genres, names, tokens))
    return column


def dataset_statistics(
    dataset: Dataset, split: Split | None = None, *, quantiles: Sequence[float] = QUANTILES
) -> pd.DataFrame:
    """Users, items, interactions, sequence-length quantiles and genre shares.

    Args:
        dataset: the dataset.
        split: a split of it; adds one column per part.
        quantiles: sequence-length quantiles to report.

    Returns:
        A float table: one row per statistic (index ``statistic``), one column ``"all"`` for
        the dataset and one per split part (``train``, ``validation``, ``sae_train``,
        ``test``). For ``"all"``, lengths are events per user before truncation and ``items``
        counts distinct interacted items (``catalog items`` the whole catalog). For a part,
        lengths are its (truncated) input sequences, and ``items``, ``interactions`` and genre
        shares count input items plus targets. ``genre X`` is the share of those interactions
        whose item carries genre X (items have several genres, so shares need not sum to 1).
        Statistics that do not apply to a column are NaN.
    """
    vocab = split.vocab if split is not None else dataset.vocab()
    names = dataset.catalog.genre_names
    genres = dataset.catalog.attribute_matrix(vocab, names)
    frame = dataset.interactions
    tokens = np.searchsorted(vocab.item_ids, frame["item_id"].to_numpy(dtype=np.int64)) + 1
    lengths = frame.groupby("user_id", sort=False).size().to_numpy()
    columns: dict[str, dict[str, float]] = {"all": {
        "users": float(dataset.num_users),
        "items": float(dataset.num_items),
        "catalog items": float(len(dataset.catalog)),
        "interactions": float(dataset.num_interactions),
        **_length_rows(lengths, quantiles),
        **_genre_rows(genres, names, tokens),
    }}
    if split is not None:
        for part_name, part in split.parts().items():
            columns[part_name] = _part_column(part, genres, names, quantiles)
    order: list[str] = []
    for column in columns.values():
        order.extend(key for key in column if key not in order)
    genre_rows = [row for row in order if row.startswith("genre ")]
    order = [row for row in order if not row.startswith("genre ")] + genre_rows
    table = pd.DataFrame(columns).reindex(order)
    table.index.name = "statistic"
    return table.astype("float64")

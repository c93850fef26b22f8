"""Top activating examples of a feature and p_top-k, the share of its top activation mass.

Rows are addressed by index; nothing here knows what a row is. An adapter attaches meaning with
``row_info`` (arrays such as sequence index, position, token, one entry per row) and ``context``
(a callable receiving the chosen row indices and returning, e.g., the preceding items), and
expresses "title contains Star Wars" as a boolean array over rows or a callable over row indices.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from mechrec.alignment._validation import (
    DegenerateInputWarning,
    check_positive_int,
    to_numpy,
)
from mechrec.alignment.sources import ActivationsLike, as_reader

__all__ = ["Predicate", "p_top_k", "p_top_k_table", "top_activating_rows", "top_examples"]

Predicate = np.ndarray | Sequence[bool] | Callable[[np.ndarray], Any]
"""A boolean array with one entry per row, or a callable mapping row indices to booleans."""

_CHUNK_BYTES = 64 * 2**20


def _feature_list(features: int | Sequence[int], n_features: int) -> list[int]:
    items = [features] if isinstance(features, (int, np.integer)) else list(features)
    if not items:
        raise ValueError("features must name at least one feature")
    out = []
    for f in items:
        if isinstance(f, bool) or not isinstance(f, (int, np.integer)):
            raise ValueError(f"features must be integer positions, got {f!r}")
        if not 0 <= f < n_features:
            raise ValueError(f"feature {f} is out of range for {n_features} features")
        out.append(int(f))
    return out


def _merge_top(
    best_v: np.ndarray, best_r: np.ndarray, vals: np.ndarray, rows: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Keep the k largest values; ties go to the lower row index."""
    if vals.size > k:
        kth = np.partition(vals, vals.size - k)[vals.size - k]
        greater = np.flatnonzero(vals > kth)
        equal = np.flatnonzero(vals == kth)[: k - greater.size]
        keep = np.concatenate([greater, equal])
        vals, rows = vals[keep], rows[keep]
    v = np.concatenate([best_v, vals])
    r = np.concatenate([best_r, rows])
    order = np.lexsort((r, -v))[:k]
    return v[order], r[order]


def top_activating_rows(
    activations: ActivationsLike, features: int | Sequence[int], k: int = 100
) -> pd.DataFrame:
    """The ``k`` rows with the largest activation of each feature.

    Returns a long DataFrame with columns ``feature, rank, row, activation`` (ranks from 1;
    ties go to the lower row index). Works in row chunks on any supported activations input.
    """
    k = check_positive_int(k, "k")
    reader = as_reader(activations)
    feats = _feature_list(features, reader.n_features)
    lo, hi = min(feats), max(feats) + 1
    chunk_rows = max(1, _CHUNK_BYTES // (8 * (hi - lo)))
    k = min(k, reader.n_rows)
    best = {f: (np.empty(0), np.empty(0, np.int64)) for f in set(feats)}
    for r0, chunk in reader.dense_chunks(lo, hi, chunk_rows):
        row_idx = np.arange(r0, r0 + chunk.shape[0], dtype=np.int64)
        for f in best:
            col = np.asarray(chunk[:, f - lo], dtype=np.float64)
            best[f] = _merge_top(*best[f], col, row_idx, k)
    records = []
    for f in feats:
        v, r = best[f]
        for rank, (row, val) in enumerate(zip(r, v, strict=True), start=1):
            records.append((f, rank, int(row), float(val)))
    return pd.DataFrame(records, columns=["feature", "rank", "row", "activation"])


def _take_rows(values: object, rows: np.ndarray, n_rows: int, name: str) -> np.ndarray:
    arr = to_numpy(values, f"row_info[{name!r}]")
    if arr.shape[:1] != (n_rows,):
        raise ValueError(
            f"row_info[{name!r}] has shape {tuple(arr.shape)} but activations have {n_rows} rows"
        )
    return arr[rows]


def top_examples(
    activations: ActivationsLike,
    feature: int,
    k: int = 10,
    *,
    row_info: Mapping[str, object] | pd.DataFrame | None = None,
    context: Callable[[np.ndarray], Any] | None = None,
    min_activation: float | None = 0.0,
) -> pd.DataFrame:
    """The top ``k`` activating rows of one feature, with whatever describes each row.

    Args:
        activations: ``(N, F)`` activations (any supported input).
        feature: feature position.
        k: number of rows.
        row_info: per-row arrays (length N) or a DataFrame with N rows, e.g. ``{"sequence": ...,
            "position": ..., "token": ...}``; their values at the chosen rows become columns.
        context: called once with the chosen row indices (1-D int64 array, best first); returns a
            DataFrame, a mapping of column name to values, or a sequence (one ``context`` column),
            with one entry per chosen row, e.g. the preceding items of each sequence.
        min_activation: keep only rows whose activation is ``> min_activation`` (``None`` keeps
            all ``k``).

    Returns:
        DataFrame with ``rank, row, activation`` and the ``row_info`` / ``context`` columns.
    """
    reader = as_reader(activations)
    top = top_activating_rows(reader, feature, k).drop(columns="feature")
    if min_activation is not None:
        top = top[top["activation"] > float(min_activation)].reset_index(drop=True)
    rows = top["row"].to_numpy(dtype=np.int64)
    n_rows = reader.n_rows
    if row_info is not None:
        if isinstance(row_info, pd.DataFrame):
            if len(row_info) != n_rows:
                raise ValueError(
                    f"row_info has {len(row_info)} rows but activations have {n_rows} rows"
                )
            extra = row_info.iloc[rows].reset_index(drop=True)
            for col in extra.columns:
                top[col] = extra[col].to_numpy()
        else:
            for name, values in row_info.items():
                top[name] = _take_rows(values, rows, n_rows, name)
    if context is not None:
        got = context(rows.copy())
        if isinstance(got, pd.DataFrame):
            frame = got.reset_index(drop=True)
        elif isinstance(got, Mapping):
            frame = pd.DataFrame(dict(got))
        else:
            frame = pd.DataFrame({"context": list(got)})
        if len(frame) != len(top):
            raise ValueError(
                f"context returned {len(frame)} entries for {len(top)} rows: return one per row"
            )
        for col in frame.columns:
            top[col] = frame[col].to_numpy()
    return top


def _evaluate(predicate: Predicate, rows: np.ndarray, n_rows: int, name: str) -> np.ndarray:
    if callable(predicate):
        got = np.asarray(to_numpy(predicate(rows.copy()), f"predicate {name!r}"))
        if got.shape != rows.shape:
            raise ValueError(
                f"predicate {name!r} returned shape {got.shape} for {rows.size} rows: "
                "return one boolean per row"
            )
        return got.astype(bool)
    arr = np.asarray(to_numpy(predicate, f"predicate {name!r}"))
    if arr.shape != (n_rows,):
        raise ValueError(
            f"predicate {name!r} has shape {arr.shape} but activations have {n_rows} rows: give "
            "one boolean per row or a callable over row indices"
        )
    return arr[rows].astype(bool)


def _named_predicates(predicates: object) -> dict[str, Predicate]:
    if isinstance(predicates, pd.DataFrame):
        return {str(c): predicates[c].to_numpy() for c in predicates.columns}
    if isinstance(predicates, Mapping):
        return {str(name): p for name, p in predicates.items()}
    arr = to_numpy(predicates, "predicates")
    if arr.ndim == 1:
        return {"predicate": arr}
    if arr.ndim == 2:
        return {f"p{j}": arr[:, j] for j in range(arr.shape[1])}
    raise ValueError(f"predicates must be 1-D or 2-D, got shape {arr.shape}")


def p_top_k_table(
    activations: ActivationsLike,
    features: int | Sequence[int],
    predicates: Mapping[str, Predicate] | pd.DataFrame | np.ndarray,
    k: int = 100,
) -> pd.DataFrame:
    """p_top-k for each feature and predicate: share of top-``k`` activation mass on matching rows.

    For a feature, take its ``k`` most activating rows; p_top-k is the sum of their (positive)
    activations on rows where the predicate holds divided by the sum over all ``k`` rows (paper
    section 7.2.2). NaN, with one warning, for features whose top rows carry no positive mass.

    Args:
        activations: ``(N, F)`` activations (any supported input).
        features: feature positions.
        predicates: name -> predicate (boolean array over rows, or callable over row indices), a
            boolean DataFrame with N rows, or an ``(N, P)`` boolean array.
        k: number of top rows.

    Returns:
        DataFrame indexed by feature with one column per predicate.
    """
    reader = as_reader(activations)
    named = _named_predicates(predicates)
    if not named:
        raise ValueError("predicates must contain at least one predicate")
    feats = _feature_list(features, reader.n_features)
    top = top_activating_rows(reader, feats, k)
    out = pd.DataFrame(index=pd.Index(feats, name="feature"), columns=list(named), dtype=float)
    empty = []
    for f, group in top.groupby("feature", sort=False):
        rows = group["row"].to_numpy(dtype=np.int64)
        mass = np.maximum(group["activation"].to_numpy(dtype=np.float64), 0.0)
        total = mass.sum()
        for name, pred in named.items():
            hit = _evaluate(pred, rows, reader.n_rows, name)
            out.loc[f, name] = float(mass[hit].sum() / total) if total > 0 else np.nan
        if total <= 0:
            empty.append(f)
    if empty:
        warnings.warn(
            f"p_top_k is NaN for features whose top {k} rows have no positive activation: "
            f"{empty[:10]}{' ...' if len(empty) > 10 else ''}",
            DegenerateInputWarning,
            stacklevel=2,
        )
    return out


def p_top_k(
    activations: ActivationsLike, feature: int, predicate: Predicate, k: int = 100
) -> float:
    """p_top-k of one feature for one predicate (see :func:`p_top_k_table`)."""
    if isinstance(feature, bool) or not isinstance(feature, (int, np.integer)):
        raise ValueError(f"feature must be an integer position, got {feature!r}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DegenerateInputWarning)
        table = p_top_k_table(activations, [int(feature)], {"predicate": predicate}, k)
    for w in caught:
        warnings.warn(w.message, w.category, stacklevel=2)
    return float(table.iloc[0, 0])

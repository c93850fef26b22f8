"""Input validation shared by the alignment modules: attributes, names, thresholds, warnings."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

__all__ = ["AttributeTable", "DegenerateInputWarning", "as_attribute_table"]


class DegenerateInputWarning(UserWarning):
    """Some statistics are undefined (NaN) because a feature or an attribute is degenerate.

    Raised at most once per call, listing every constant feature, never-active feature and
    attribute without positives (or without negatives) that produced NaN values.
    """


@dataclass(frozen=True)
class AttributeTable:
    """Validated attributes: one float64 column per attribute, one row per activation row."""

    values: np.ndarray
    """(N, A) float64, C-contiguous. Binary columns hold exactly 0.0 / 1.0."""
    names: pd.Index
    """(A,) attribute names, unique."""
    is_binary: np.ndarray
    """(A,) bool: True where every value of the column is 0 or 1."""

    @property
    def n_rows(self) -> int:
        """Number of rows N."""
        return int(self.values.shape[0])

    @property
    def n_attributes(self) -> int:
        """Number of attributes A."""
        return int(self.values.shape[1])


def to_numpy(x: object, what: str) -> np.ndarray:
    """A numpy view of a numpy array, torch tensor or array-like (copies only when needed)."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, (pd.DataFrame, pd.Series)):
        return x.to_numpy()
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"{what} must be a numpy array or torch tensor, got {type(x).__name__}"
        ) from err


def _names(
    given: Sequence[object] | pd.Index | None, count: int, default_prefix: str | None, what: str
) -> pd.Index:
    """Validated names: the given ones (length and uniqueness checked) or defaults."""
    if given is None:
        if default_prefix is None:
            return pd.RangeIndex(count)
        return pd.Index([f"{default_prefix}{i}" for i in range(count)])
    index = pd.Index(list(given))
    if len(index) != count:
        raise ValueError(f"{what} has {len(index)} names but the data has {count} columns")
    if not index.is_unique:
        dupes = index[index.duplicated()].unique().tolist()[:5]
        raise ValueError(f"{what} must be unique; duplicated: {dupes}")
    return index


def feature_index(names: Sequence[object] | pd.Index | None, n_features: int) -> pd.Index:
    """Feature names: the given ones or ``0..F-1``."""
    return _names(names, n_features, None, "feature_names")


def as_attribute_table(
    attributes: object, n_rows: int, names: Sequence[object] | pd.Index | None = None
) -> AttributeTable:
    """Validate an (N, A) attribute matrix (numpy, torch, pandas; bool, int or float).

    A 1-D input is one attribute. A DataFrame supplies its column names unless ``names`` is given.
    Missing or non-finite values raise ``ValueError`` naming the column.
    """
    frame_names = None
    if isinstance(attributes, pd.DataFrame):
        frame_names = attributes.columns
        bad = [c for c in attributes.columns if attributes[c].isna().any()]
        if bad:
            raise ValueError(
                f"attributes have missing values in columns {bad[:5]}: fill or drop them first"
            )
        arr = attributes.to_numpy(dtype=np.float64)
    elif isinstance(attributes, pd.Series):
        frame_names = [attributes.name if attributes.name is not None else "attr_0"]
        if attributes.isna().any():
            raise ValueError("attributes have missing values: fill or drop them first")
        arr = attributes.to_numpy(dtype=np.float64)
    else:
        arr = to_numpy(attributes, "attributes")
    if arr.dtype == object:
        raise ValueError("attributes must be numeric or boolean, got dtype object")
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"attributes must be 2-D (N, A), got shape {tuple(arr.shape)}")
    if arr.shape[0] != n_rows:
        raise ValueError(
            f"attributes have {arr.shape[0]} rows (shape {tuple(arr.shape)}) but activations "
            f"have {n_rows} rows: both need one row per activation row"
        )
    if arr.shape[1] == 0:
        raise ValueError(f"attributes have no columns (shape {tuple(arr.shape)})")
    values = np.ascontiguousarray(arr, dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.all():
        col = int(np.flatnonzero(~finite.all(axis=0))[0])
        row = int(np.flatnonzero(~finite[:, col])[0])
        raise ValueError(
            f"attributes contain a non-finite value at row {row}, column {col}: "
            "attributes must be finite numbers"
        )
    is_binary = ((values == 0.0) | (values == 1.0)).all(axis=0)
    index = _names(
        names if names is not None else frame_names, values.shape[1], "attr_", "attribute_names"
    )
    return AttributeTable(values=values, names=index, is_binary=np.asarray(is_binary, dtype=bool))


def check_threshold(threshold: float) -> float:
    """A finite float threshold."""
    try:
        value = float(threshold)
    except (TypeError, ValueError) as err:
        raise ValueError(f"threshold must be a number, got {threshold!r}") from err
    if not np.isfinite(value):
        raise ValueError(f"threshold must be finite, got {threshold!r}")
    return value


def check_positive_int(value: object, what: str) -> int:
    """A strictly positive integer (bools rejected)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def _preview(labels: Sequence[object], limit: int = 5) -> str:
    items = [str(x) for x in list(labels)[:limit]]
    more = len(labels) - len(items)
    return ", ".join(items) + (f", ... ({more} more)" if more > 0 else "")


def warn_degenerate(problems: dict[str, Sequence[object]], stacklevel: int = 3) -> None:
    """Emit one :class:`DegenerateInputWarning` describing every non-empty problem list."""
    parts = [
        f"{what} ({len(labels)}): {_preview(labels)}"
        for what, labels in problems.items()
        if len(labels)
    ]
    if parts:
        warnings.warn(
            "some statistics are NaN because inputs are degenerate; " + "; ".join(parts),
            DegenerateInputWarning,
            stacklevel=stacklevel,
        )

"""Feature x attribute statistics: correlation, exact ROC AUC, sensitivity, precision, means.

:func:`alignment_stats` turns activations ``(N, F)`` (SAE features or raw neurons) and attributes
``(N, A)`` into :class:`AlignmentStats`, a set of ``F x A`` matrices.

How it stays exact and fast
---------------------------
Each feature is reduced to its non-zero entries (values and row indices); every statistic is then
a weighted sum of attribute rows over those entries, plus a closed-form correction for the
zeros. For one feature with ``n`` non-zero entries the weights are

- ``x - mean`` (covariance, conditional mean), ``1`` (positives among non-zero rows),
  ``[x > threshold]`` (active positives), and
- the exact mid-rank of ``x`` among all ``N`` rows (ROC AUC).

The four weight columns times the gathered attribute rows ``Y[rows]`` give all ``A`` attributes
in one matrix product, so the work per feature is ``O(n log n + n A)``, not ``O(N A)``.

Exact ROC AUC with ties (Mann-Whitney U). Sort the feature's non-zero values; give every group
of equal values its mid-rank (the mean of the positions it occupies). The ``N - n`` zeros form one
more tie group sitting between the negative and positive values, with mid-rank
``n_neg + (N - n + 1) / 2``; positive values shift up by ``N - n``. The rank sum of the positives
of attribute ``a`` is ``R_a = sum_{non-zero i} rank_i * y_ia + rank_zero * (n1_a - P_a)`` where
``P_a`` counts positives among the non-zero rows, and ``AUC_a = (R_a - n1_a (n1_a + 1) / 2) /
(n1_a n0_a)``, which equals ``sklearn.metrics.roc_auc_score`` with ties counted one half.

Memory stays bounded: features are processed in blocks sized from ``max_memory`` and the
observed density of non-zeros; dense inputs are read in row chunks; a
:class:`~mechrec.alignment.sources.LazyActivations` computes features chunk by chunk.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mechrec.alignment._validation import (
    AttributeTable,
    as_attribute_table,
    check_positive_int,
    check_threshold,
    feature_index,
    warn_degenerate,
)
from mechrec.alignment.metric_names import BINARY_METRICS, METRICS
from mechrec.alignment.sources import ActivationsLike, as_reader

__all__ = ["BINARY_METRICS", "METRICS", "AlignmentStats", "alignment_stats"]

_GATHER_BYTES = 8 * 2**20  # size of one gathered slice of attribute rows


@dataclass(frozen=True, eq=False)
class AlignmentStats:
    """``F x A`` alignment statistics between features and attributes on one set of rows.

    Get a labelled table with :meth:`table` (features as rows, attribute names as columns) or
    the raw matrices in :attr:`values`.
    """

    values: dict[str, np.ndarray]
    """metric name -> ``(F, A)`` float64 matrix (NaN where undefined)."""
    feature_names: pd.Index
    """``(F,)`` feature labels (``0..F-1`` unless given)."""
    attribute_names: pd.Index
    """``(A,)`` attribute labels."""
    n_rows: int
    """Number of rows N the statistics were computed on."""
    threshold: float
    """A feature is *active* on a row when its activation is ``> threshold``."""
    attribute_prevalence: np.ndarray
    """``(A,)`` mean of each attribute column (the share of positive rows for binary ones)."""
    attribute_is_binary: np.ndarray
    """``(A,)`` True for 0/1 attributes; binary-only metrics are NaN for the others."""
    feature_mean: np.ndarray
    """``(F,)`` mean activation of each feature."""
    feature_active_rate: np.ndarray
    """``(F,)`` share of rows on which each feature is active."""

    @property
    def metrics(self) -> tuple[str, ...]:
        """Names of the computed metrics."""
        return tuple(self.values)

    @property
    def n_features(self) -> int:
        """Number of features F."""
        return len(self.feature_names)

    @property
    def n_attributes(self) -> int:
        """Number of attributes A."""
        return len(self.attribute_names)

    def matrix(self, metric: str) -> np.ndarray:
        """The ``(F, A)`` matrix of one metric; ``ValueError`` if it was not computed."""
        if metric not in self.values:
            raise ValueError(
                f"metric {metric!r} is not available; computed metrics: {list(self.values)}"
            )
        return self.values[metric]

    def table(self, metric: str = "correlation") -> pd.DataFrame:
        """One metric as a DataFrame: features as rows, attribute names as columns."""
        return pd.DataFrame(
            self.matrix(metric), index=self.feature_names, columns=self.attribute_names
        ).rename_axis(index="feature", columns="attribute")

    def to_long(self) -> pd.DataFrame:
        """All metrics in long form: one row per (feature, attribute) pair."""
        index = pd.MultiIndex.from_product(
            [self.feature_names, self.attribute_names], names=["feature", "attribute"]
        )
        frame = pd.DataFrame({m: v.reshape(-1) for m, v in self.values.items()}, index=index)
        return frame.reset_index()

    def attribute_summary(self) -> pd.DataFrame:
        """Per attribute: prevalence and whether it is binary."""
        return pd.DataFrame(
            {"prevalence": self.attribute_prevalence, "binary": self.attribute_is_binary},
            index=self.attribute_names,
        ).rename_axis(index="attribute")

    def feature_summary(self) -> pd.DataFrame:
        """Per feature: mean activation and active rate."""
        return pd.DataFrame(
            {"mean": self.feature_mean, "active_rate": self.feature_active_rate},
            index=self.feature_names,
        ).rename_axis(index="feature")

    def check_compatible(self, other: AlignmentStats, what: str = "other") -> None:
        """Raise ``ValueError`` unless ``other`` has the same features and attributes."""
        if not isinstance(other, AlignmentStats):
            raise ValueError(f"{what} must be AlignmentStats, got {type(other).__name__}")
        if not self.feature_names.equals(other.feature_names):
            raise ValueError(
                f"{what} has {other.n_features} features that differ from these "
                f"{self.n_features}: select and score the same set of features"
            )
        if not self.attribute_names.equals(other.attribute_names):
            raise ValueError(
                f"{what} has attributes {list(other.attribute_names)[:5]}... but these are "
                f"{list(self.attribute_names)[:5]}...: use the same attribute columns"
            )


def _midranks_sorted(sorted_values: np.ndarray) -> np.ndarray:
    """1-based mid-ranks of an ascending array: tied values share the mean of their positions."""
    n = sorted_values.size
    if n == 0:
        return np.empty(0, np.float64)
    new_group = np.empty(n, dtype=bool)
    new_group[0] = True
    np.not_equal(sorted_values[1:], sorted_values[:-1], out=new_group[1:])
    if new_group.all():
        return np.arange(1, n + 1, dtype=np.float64)
    starts = np.flatnonzero(new_group)
    ends = np.append(starts[1:], n)
    return np.repeat((starts + ends + 1) / 2.0, ends - starts)


class _FeatureEngine:
    """Per-feature computation against one fixed attribute matrix."""

    def __init__(self, table: AttributeTable, threshold: float, metrics: tuple[str, ...]) -> None:
        n, a = table.values.shape
        self.n_rows = n
        self.threshold = threshold
        self.metrics = metrics
        self.want_auc = "roc_auc" in metrics
        self.binary = table.is_binary
        # Work on a copy whose continuous columns are centred (binary ones stay 0/1): sums of
        # products then carry no large offsets, which keeps the correlation accurate.
        y = table.values
        self.col_mean = y.mean(axis=0)
        cont = ~self.binary
        if cont.any():
            y = y.copy()
            y[:, cont] -= self.col_mean[cont]
        y = np.ascontiguousarray(y)
        # Gathering rows is the memory-bound step: gather 0/1 attributes as bytes (8x less traffic).
        self.y_gather = y.astype(np.uint8) if self.binary.all() else y
        self.n_attributes = a
        self.ysum = y.sum(axis=0)
        self.ymean = self.ysum / n
        self.y_ss = np.zeros(a)
        step = max(1, _GATHER_BYTES // (8 * a))
        for r0 in range(0, n, step):
            d = y[r0 : r0 + step] - self.ymean
            self.y_ss += np.einsum("ij,ij->j", d, d)
        self.y_constant = table.values.min(axis=0) == table.values.max(axis=0)
        self.n1 = np.where(self.binary, self.ysum, np.nan)
        self.n0 = n - self.n1
        self.slice_rows = step

    def __call__(self, entries: tuple[np.ndarray, np.ndarray]) -> dict[str, np.ndarray | float]:
        """Statistics of one feature from its non-zero (values, rows)."""
        vals, rows = entries
        vals = np.asarray(vals, dtype=np.float64)
        n_rows, t = self.n_rows, self.threshold
        n = vals.size
        n_zero = n_rows - n
        if self.want_auc and n:
            order = np.argsort(vals)
            vals, rows = vals[order], rows[order]
        m = float(vals.sum()) / n_rows
        dev = vals - m
        ss_x = float(dev @ dev) + n_zero * m * m
        if n == 0:
            constant = True
        elif n_zero > 0:
            constant = False
        else:
            constant = bool(vals.min() == vals.max())
        active = vals > t
        n_active = int(np.count_nonzero(active)) + (n_zero if t < 0.0 else 0)

        k = 4 if self.want_auc else 3
        if self.want_auc:
            ranks = _midranks_sorted(vals)
            n_neg = int(np.searchsorted(vals, 0.0, side="left"))
            ranks[n_neg:] += n_zero
            zero_rank = n_neg + (n_zero + 1) / 2.0
        q = np.zeros((k, self.n_attributes))
        for s0 in range(0, n, self.slice_rows):
            s1 = min(n, s0 + self.slice_rows)
            w = np.empty((s1 - s0, k))
            w[:, 0] = dev[s0:s1]
            w[:, 1] = 1.0
            w[:, 2] = active[s0:s1]
            if self.want_auc:
                w[:, 3] = ranks[s0:s1]
            g = np.take(self.y_gather, rows[s0:s1], axis=0)
            q += w.T @ g.astype(np.float64, copy=False)
        q_dev, q_one, q_act = q[0], q[1], q[2]

        out: dict[str, np.ndarray | float] = {
            "mean": m,
            "active_rate": n_active / n_rows,
            "constant": constant,
            "never_active": n_active == 0,
        }
        with np.errstate(divide="ignore", invalid="ignore"):
            if "correlation" in self.metrics:
                sum_dev = float(dev.sum()) - n_zero * m  # ~0; kept for exactness
                cov = q_dev - m * (self.ysum - q_one) - self.ymean * sum_dev
                corr = cov / np.sqrt(ss_x * self.y_ss)
                corr = np.clip(corr, -1.0, 1.0)
                if constant:
                    corr[:] = np.nan
                corr[self.y_constant] = np.nan
                out["correlation"] = corr
            n1, n0 = self.n1, self.n0
            if "mean_given_attribute" in self.metrics:
                out["mean_given_attribute"] = np.where(n1 > 0, (q_dev + m * q_one) / n1, np.nan)
            if "sensitivity" in self.metrics or "precision" in self.metrics:
                act_pos = q_act + ((n1 - q_one) if t < 0.0 else 0.0)
                if "sensitivity" in self.metrics:
                    out["sensitivity"] = np.where(n1 > 0, act_pos / n1, np.nan)
                if "precision" in self.metrics:
                    prec = act_pos / n_active if n_active else np.full_like(act_pos, np.nan)
                    out["precision"] = np.where(self.binary, prec, np.nan)
            if self.want_auc:
                r = q[3] + zero_rank * (n1 - q_one)
                auc = (r - n1 * (n1 + 1) / 2.0) / (n1 * n0)
                out["roc_auc"] = np.where((n1 > 0) & (n0 > 0), auc, np.nan)
        return out


def _check_metrics(metrics: Sequence[str] | None) -> tuple[str, ...]:
    if metrics is None:
        return METRICS
    if isinstance(metrics, str):
        metrics = [metrics]
    chosen = tuple(dict.fromkeys(metrics))
    unknown = [m for m in chosen if m not in METRICS]
    if unknown or not chosen:
        raise ValueError(f"unknown metrics {unknown}; choose from {list(METRICS)}")
    return tuple(m for m in METRICS if m in chosen)


def alignment_stats(
    activations: ActivationsLike,
    attributes: object,
    *,
    attribute_names: Sequence[object] | None = None,
    feature_names: Sequence[object] | None = None,
    threshold: float = 0.0,
    metrics: Sequence[str] | None = None,
    max_memory: int = 256 * 2**20,
    n_jobs: int = 1,
) -> AlignmentStats:
    """Compute ``F x A`` alignment statistics between activations and attributes.

    Args:
        activations: ``(N, F)`` SAE features or raw neurons: numpy array (or memmap), torch
            tensor, ``scipy.sparse`` matrix, or :class:`~mechrec.alignment.LazyActivations`.
        attributes: ``(N, A)`` attributes, one row per activation row: numpy, torch or pandas
            (a DataFrame supplies names); bool, int or float. Columns holding only 0/1 are binary;
            others are continuous (only the correlation is defined for them).
        attribute_names: names for the attribute columns (default: DataFrame columns or
            ``attr_0..``).
        feature_names: names for the features (default ``0..F-1``).
        threshold: a feature is active on a row when its activation is ``> threshold``.
        metrics: subset of :data:`METRICS` to compute (default all; leaving out ``"roc_auc"``
            skips sorting and is faster).
        max_memory: soft budget in bytes for the working set of a block of features (the
            attribute matrix, held as float64, comes on top).
        n_jobs: threads working on features in parallel (the heavy numpy calls release the GIL;
            limit BLAS threads, e.g. ``OPENBLAS_NUM_THREADS=1``, to avoid oversubscription).

    Returns:
        :class:`AlignmentStats` with these ``(F, A)`` matrices:

        - ``correlation``: Pearson (point-biserial for binary attributes); NaN for constant
          features or constant attributes.
        - ``roc_auc``: exact ROC AUC with ties counted one half; NaN for attributes without
          positives or without negatives (a constant feature scores 0.5, as in scikit-learn).
        - ``sensitivity``: P(active | attribute); NaN when the attribute has no positives.
        - ``precision``: P(attribute | active); NaN when the feature is never active.
        - ``mean_given_attribute``: mean activation over rows with the attribute.

        A single :class:`~mechrec.alignment.DegenerateInputWarning` lists whatever made values NaN.

    Raises:
        ValueError: shapes differ, values are not finite, or arguments are invalid.
    """
    reader = as_reader(activations)
    table = as_attribute_table(attributes, reader.n_rows, attribute_names)
    features = feature_index(feature_names, reader.n_features)
    threshold = check_threshold(threshold)
    chosen = _check_metrics(metrics)
    max_memory = check_positive_int(max_memory, "max_memory")
    n_jobs = check_positive_int(n_jobs, "n_jobs")

    engine = _FeatureEngine(table, threshold, chosen)
    n_rows, n_features, n_attr = reader.n_rows, reader.n_features, table.n_attributes
    is_binary, attribute_names = table.is_binary, table.names
    del table  # the engine holds what it needs (0/1 attributes as bytes)
    results: list[dict[str, np.ndarray | float]] = []

    # Bytes held per non-zero entry of a block (value + row index, plus chunk copies).
    per_entry = 24
    density = max(reader.density_hint(), 1.0 / n_rows)
    executor = ThreadPoolExecutor(n_jobs) if n_jobs > 1 else None
    try:
        start = 0
        total_nnz = 0
        while start < n_features:
            if reader.entries_are_views:
                width = min(n_features - start, 256)
            else:
                width = int(max_memory // max(per_entry * n_rows * density, 1.0))
                width = max(1, min(n_features - start, width))
            chunk_rows = max(1, min(n_rows, max_memory // (4 * 8 * width)))
            entries = reader.column_entries(start, start + width, chunk_rows)
            if executor is None:
                results.extend(engine(e) for e in entries)
            else:
                results.extend(executor.map(engine, entries))
            total_nnz += sum(int(e[0].size) for e in entries)
            start += width
            if not reader.entries_are_views:
                observed = total_nnz / (n_rows * start)
                density = min(max(observed, density / 2.0, 1.0 / n_rows), 1.0)
            del entries
    finally:
        if executor is not None:
            executor.shutdown()

    values = {
        m: np.vstack([r[m] for r in results]) if results else np.empty((0, n_attr)) for m in chosen
    }
    for m in BINARY_METRICS:
        if m in values:
            values[m][:, ~is_binary] = np.nan
    constant = np.array([bool(r["constant"]) for r in results])
    never = np.array([bool(r["never_active"]) for r in results])
    stats = AlignmentStats(
        values=values,
        feature_names=features,
        attribute_names=attribute_names,
        n_rows=n_rows,
        threshold=threshold,
        attribute_prevalence=engine.col_mean.copy(),
        attribute_is_binary=is_binary.copy(),
        feature_mean=np.array([float(r["mean"]) for r in results]),
        feature_active_rate=np.array([float(r["active_rate"]) for r in results]),
    )
    _warn_about(stats, engine, constant, never, chosen)
    return stats


def _warn_about(
    stats: AlignmentStats,
    engine: _FeatureEngine,
    constant: np.ndarray,
    never_active: np.ndarray,
    metrics: tuple[str, ...],
) -> None:
    problems: dict[str, list[object]] = {}
    names = stats.attribute_names
    if "correlation" in metrics:
        problems["constant features (correlation NaN)"] = list(stats.feature_names[constant])
        cont_const = engine.y_constant & ~engine.binary
        problems["constant continuous attributes (correlation NaN)"] = list(names[cont_const])
    if "precision" in metrics:
        problems["features never active (precision NaN)"] = list(stats.feature_names[never_active])
    if set(metrics) - {"precision"}:
        no_pos = engine.binary & (engine.ysum == 0)
        all_pos = engine.binary & (engine.ysum == stats.n_rows)
        problems["attributes without positive rows"] = list(names[no_pos])
        if {"correlation", "roc_auc"} & set(metrics):
            problems["attributes without negative rows (correlation, ROC AUC NaN)"] = list(
                names[all_pos]
            )
    warn_degenerate(problems, stacklevel=4)

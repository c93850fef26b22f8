"""Bootstrap confidence intervals for alignment scores of a fixed feature selection.

The interpretability numbers of :mod:`mechrec.alignment.ranking` (e.g. the mean over attributes
of the best feature's correlation) are point values on one set of scored rows. Whether "SAE
0.110 vs neurons 0.108" is a real difference depends on how much those values move under
resampling of the scored rows. :func:`bootstrap_alignment` answers that:

- The features are **fixed**: one feature per attribute and source, chosen beforehand on other
  rows (the honest protocol, e.g. :func:`~mechrec.alignment.best_features` of the selection
  rows). Only the *scoring* is resampled. The intervals are therefore conditional on the
  selection; they do not cover the chance of having selected another feature. With an in-sample
  selection (chosen on the scored rows themselves) they would be too optimistic, which is one
  more reason to select on other rows.
- Rows are resampled with replacement, or, when ``groups`` is given (e.g. the user or sequence
  of each row), whole groups are: the positions of one sequence are correlated, and resampling
  them one by one gives intervals that are too narrow.
- Every source (SAE, neurons, a random control) is scored on the **same** resamples, so the
  paired differences (e.g. SAE - neurons) have their own, usually much narrower, intervals.
  The difference of a source with itself is exactly 0 on every resample.
- Intervals are percentile intervals of the resampled statistic.

How it stays exact and fast
---------------------------
A resample is a vector of counts ``c`` (how often each group was drawn); every row of a group
gets its group's count as weight. Each statistic of :func:`~mechrec.alignment.alignment_stats`
has a weighted form that equals the statistic on the resample written out row by row:

- correlation, sensitivity, precision and mean given the attribute are ratios of weighted sums;
  the sums are computed once per group, so a resample costs ``O(G)`` per attribute
  (``counts @ group_sums``);
- ROC AUC (ties counted one half) is, with few groups, a quadratic form ``c^T M c`` in the
  counts (``M[g, h]``: correctly ordered positive-of-g / negative-of-h pairs), ``O(G^2)`` per
  resample; otherwise it sums positive and negative weights per tie group of the sorted values,
  ``O(N)`` per resample via a sparse (tie x group) count matrix.

Resamples are processed in blocks sized from ``max_memory``. Besides that budget, the selected
columns (``N x k`` for ``k`` distinct selected features, in the activations' float type) and the
attribute matrix are held in memory; the full ``N x F`` activations never are.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from mechrec.alignment._validation import (
    DegenerateInputWarning,
    as_attribute_table,
    check_positive_int,
    check_threshold,
    feature_index,
    to_numpy,
)
from mechrec.alignment.ranking import MEAN_ROW
from mechrec.alignment.sources import ActivationsLike, as_reader
from mechrec.alignment.stats import BINARY_METRICS, METRICS, alignment_stats

__all__ = [
    "AlignmentBootstrap",
    "FewGroupsWarning",
    "bootstrap_alignment",
    "selected_columns",
]

MIN_GROUPS_WITHOUT_WARNING = 20
"""Below this many groups (rows when ungrouped) :func:`bootstrap_alignment` warns."""


class FewGroupsWarning(UserWarning):
    """The bootstrap resamples fewer than :data:`MIN_GROUPS_WITHOUT_WARNING` groups.

    Percentile intervals from so few independent units are unreliable (usually too narrow).
    """


def _check_confidence(confidence: float) -> float:
    try:
        value = float(confidence)
    except (TypeError, ValueError) as err:
        raise ValueError(f"confidence must be a number in (0, 1), got {confidence!r}") from err
    if not 0.0 < value < 1.0:
        raise ValueError(f"confidence must be in (0, 1), e.g. 0.95, got {confidence!r}")
    return value


def _check_metrics(metrics: Sequence[str] | str) -> tuple[str, ...]:
    chosen = (metrics,) if isinstance(metrics, str) else tuple(dict.fromkeys(metrics))
    unknown = [m for m in chosen if m not in METRICS]
    if unknown or not chosen:
        raise ValueError(f"unknown metrics {unknown}; choose from {list(METRICS)}")
    return chosen


def _percentiles(samples: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over axis 0, ignoring NaN resamples (NaN if fewer than 2 remain)."""
    alpha = (1.0 - confidence) / 2.0
    valid = (~np.isnan(samples)).sum(axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
        lower = np.nanquantile(samples, alpha, axis=0)
        upper = np.nanquantile(samples, 1.0 - alpha, axis=0)
    lower = np.where(valid >= 2, lower, np.nan)
    upper = np.where(valid >= 2, upper, np.nan)
    return lower, upper


def _std(samples: np.ndarray) -> np.ndarray:
    valid = (~np.isnan(samples)).sum(axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        std = np.nanstd(samples, axis=0, ddof=1)
    return np.where(valid >= 2, std, np.nan)


@dataclass(frozen=True, eq=False)
class AlignmentBootstrap:
    """Resampled alignment scores of fixed feature selections, from :func:`bootstrap_alignment`.

    All sources were scored on the same resamples, so :meth:`differences` are paired.
    """

    estimates: dict[str, pd.DataFrame]
    """source -> point values on all scored rows: indexed by attribute, one column per metric
    (equal to :func:`~mechrec.alignment.score_features` on ``alignment_stats`` of the rows)."""
    samples: dict[str, dict[str, np.ndarray]]
    """source -> metric -> ``(n_resamples, A)`` resampled values (NaN where undefined)."""
    selections: dict[str, pd.Series]
    """source -> attribute -> selected feature label (``None``: no feature, NaN scores)."""
    attribute_names: pd.Index
    """``(A,)`` attribute labels, in column order of the samples."""
    metrics: tuple[str, ...]
    """Metrics that were resampled."""
    n_rows: int
    """Number of scored rows N."""
    n_groups: int
    """Number of independent units resampled (groups, or rows when ungrouped)."""
    grouped: bool
    """True when whole groups were resampled."""
    n_resamples: int
    """Number of bootstrap resamples B."""
    seed: int
    """Seed of the resampling."""

    @property
    def sources(self) -> list[str]:
        """Names of the scored sources, in input order."""
        return list(self.samples)

    def _check(self, source: str, metric: str) -> None:
        if source not in self.samples:
            raise ValueError(f"unknown source {source!r}; choose one of {self.sources}")
        if metric not in self.metrics:
            raise ValueError(f"metric {metric!r} was not resampled; resampled: "
                             f"{list(self.metrics)}")

    def _positions(self, attributes: Sequence[object] | None) -> np.ndarray:
        if attributes is None:
            return np.arange(len(self.attribute_names))
        pos = self.attribute_names.get_indexer(list(attributes))
        if (pos < 0).any():
            missing = [a for a, p in zip(attributes, pos, strict=True) if p < 0]
            raise ValueError(f"unknown attributes {missing[:5]}; known: "
                             f"{list(self.attribute_names)[:10]}")
        return pos

    def mean_estimate(
        self, source: str, metric: str = "correlation", attributes: Sequence[object] | None = None
    ) -> float:
        """Mean over attributes of the point values (attributes with NaN left out), as in
        :func:`~mechrec.alignment.interpretability_score`."""
        self._check(source, metric)
        values = self.estimates[source][metric].to_numpy(dtype=float)[self._positions(attributes)]
        return float(np.nanmean(values)) if (~np.isnan(values)).any() else float("nan")

    def mean_samples(
        self, source: str, metric: str = "correlation", attributes: Sequence[object] | None = None
    ) -> np.ndarray:
        """``(n_resamples,)`` mean over attributes of each resample's values.

        The mean runs over the attributes whose point value is defined; a resample in which one
        of them is undefined (e.g. a rare attribute drew no positive row) gives NaN and is left
        out of the intervals (see ``n_valid`` in :meth:`intervals`).
        """
        self._check(source, metric)
        pos = self._positions(attributes)
        point = self.estimates[source][metric].to_numpy(dtype=float)[pos]
        keep = pos[~np.isnan(point)]
        if keep.size == 0:
            return np.full(self.n_resamples, np.nan)
        return self.samples[source][metric][:, keep].mean(axis=1)

    def intervals(
        self,
        confidence: float = 0.95,
        *,
        attributes: Sequence[object] | None = None,
        metrics: Sequence[str] | None = None,
        per_attribute: bool = True,
    ) -> pd.DataFrame:
        """Percentile confidence intervals, per attribute and for the mean over attributes.

        Args:
            confidence: coverage of the two-sided interval, e.g. 0.95.
            attributes: attributes to report and average (default all).
            metrics: metrics to report (default all resampled).
            per_attribute: include one row per attribute (else only the mean rows).

        Returns:
            Long DataFrame with columns ``source, attribute, metric, feature, estimate, lower,
            upper, std_error, n_valid``; the mean over attributes has attribute
            :data:`~mechrec.alignment.MEAN_ROW` and feature ``None``. ``n_valid`` counts the
            resamples where the value is defined.
        """
        confidence = _check_confidence(confidence)
        pos = self._positions(attributes)
        chosen = self.metrics if metrics is None else _check_metrics(metrics)
        rows: list[dict[str, object]] = []
        for source in self.samples:
            for metric in chosen:
                self._check(source, metric)
                blocks = []
                labels: list[object] = []
                features: list[object] = []
                points: list[float] = []
                if per_attribute:
                    blocks.append(self.samples[source][metric][:, pos])
                    labels += list(self.attribute_names[pos])
                    features += [self.selections[source].get(a) for a in self.attribute_names[pos]]
                    points += list(self.estimates[source][metric].to_numpy(dtype=float)[pos])
                blocks.append(self.mean_samples(source, metric, attributes)[:, None])
                labels.append(MEAN_ROW)
                features.append(None)
                points.append(self.mean_estimate(source, metric, attributes))
                samples = np.concatenate(blocks, axis=1)
                lower, upper = _percentiles(samples, confidence)
                std = _std(samples)
                valid = (~np.isnan(samples)).sum(axis=0)
                for j, label in enumerate(labels):
                    rows.append({
                        "source": source, "attribute": label, "metric": metric,
                        "feature": features[j], "estimate": float(points[j]),
                        "lower": float(lower[j]), "upper": float(upper[j]),
                        "std_error": float(std[j]), "n_valid": int(valid[j]),
                    })
        columns = ["source", "attribute", "metric", "feature", "estimate", "lower", "upper",
                   "std_error", "n_valid"]
        frame = pd.DataFrame(rows, columns=columns)
        frame["feature"] = pd.Series([r["feature"] for r in rows], index=frame.index,
                                     dtype=object)
        return frame

    def differences(
        self,
        pairs: Sequence[tuple[str, str]] | None = None,
        confidence: float = 0.95,
        *,
        attributes: Sequence[object] | None = None,
        metrics: Sequence[str] | None = None,
        per_attribute: bool = True,
    ) -> pd.DataFrame:
        """Paired intervals for ``source - versus`` computed on the same resamples.

        Args:
            pairs: ``(source, versus)`` pairs (default every pair in input order, e.g.
                ``("SAE", "neurons")``, ``("SAE", "random")``, ``("neurons", "random")``).
            confidence: coverage of the two-sided interval.
            attributes: attributes to report and average (default all).
            metrics: metrics to report (default all resampled).
            per_attribute: include one row per attribute (else only the mean rows).

        Returns:
            Long DataFrame with ``source, versus, attribute, metric, estimate, lower, upper,
            std_error, n_valid, share_positive``; ``estimate`` is the difference of the point
            values, ``share_positive`` the share of valid resamples where the difference is
            > 0. The mean row (:data:`~mechrec.alignment.MEAN_ROW`) is the difference of the
            two sources' means over attributes, each over its own defined attributes.
        """
        confidence = _check_confidence(confidence)
        pos = self._positions(attributes)
        chosen = self.metrics if metrics is None else _check_metrics(metrics)
        if pairs is None:
            names = self.sources
            pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
        rows: list[dict[str, object]] = []
        for pair in pairs:
            if len(pair) != 2:
                raise ValueError(f"pairs must be (source, versus) tuples, got {pair!r}")
            a, b = pair
            for metric in chosen:
                self._check(a, metric)
                self._check(b, metric)
                blocks = []
                labels: list[object] = []
                points: list[float] = []
                if per_attribute:
                    blocks.append(self.samples[a][metric][:, pos]
                                  - self.samples[b][metric][:, pos])
                    labels += list(self.attribute_names[pos])
                    points += list(self.estimates[a][metric].to_numpy(dtype=float)[pos]
                                   - self.estimates[b][metric].to_numpy(dtype=float)[pos])
                blocks.append((self.mean_samples(a, metric, attributes)
                               - self.mean_samples(b, metric, attributes))[:, None])
                labels.append(MEAN_ROW)
                points.append(self.mean_estimate(a, metric, attributes)
                              - self.mean_estimate(b, metric, attributes))
                samples = np.concatenate(blocks, axis=1)
                lower, upper = _percentiles(samples, confidence)
                std = _std(samples)
                valid = (~np.isnan(samples)).sum(axis=0)
                with np.errstate(invalid="ignore", divide="ignore"):
                    positive = np.where(valid > 0, np.nansum(samples > 0, axis=0) / valid,
                                        np.nan)
                for j, label in enumerate(labels):
                    rows.append({
                        "source": a, "versus": b, "attribute": label, "metric": metric,
                        "estimate": float(points[j]), "lower": float(lower[j]),
                        "upper": float(upper[j]), "std_error": float(std[j]),
                        "n_valid": int(valid[j]), "share_positive": float(positive[j]),
                    })
        columns = ["source", "versus", "attribute", "metric", "estimate", "lower", "upper",
                   "std_error", "n_valid", "share_positive"]
        return pd.DataFrame(rows, columns=columns)


# ------------------------------------------------------------------------------ inputs
def selected_columns(
    activations: ActivationsLike,
    features: Sequence[int] | np.ndarray,
    *,
    max_memory: int = 256 * 2**20,
) -> np.ndarray:
    """The ``(N, k)`` columns at feature positions ``features`` of any activations input.

    Reads the input in row chunks (a sparse matrix by column slicing), so the full ``N x F``
    activations are never densified. Keeps a float32 input float32 (other types become float64).
    """
    reader = as_reader(activations)
    max_memory = check_positive_int(max_memory, "max_memory")
    pos = np.asarray(features, dtype=np.int64).reshape(-1)
    if pos.size and (pos.min() < 0 or pos.max() >= reader.n_features):
        raise ValueError(f"feature positions {pos.tolist()[:5]} are outside "
                         f"0..{reader.n_features - 1}")
    n = reader.n_rows
    if pos.size == 0:
        return np.empty((n, 0), dtype=np.float64)
    csc = getattr(reader, "csc", None)
    if csc is not None:
        out = csc[:, pos].toarray()
        return out if out.dtype == np.float32 else out.astype(np.float64)
    lo, hi = int(pos.min()), int(pos.max()) + 1
    chunk_rows = max(1, min(n, max_memory // (16 * (hi - lo))))
    out: np.ndarray | None = None
    for r0, chunk in reader.dense_chunks(lo, hi, chunk_rows):
        if out is None:
            dtype = np.float32 if chunk.dtype == np.float32 else np.float64
            out = np.empty((n, pos.size), dtype=dtype)
        out[r0:r0 + chunk.shape[0]] = chunk[:, pos - lo]
    assert out is not None
    return out


def _group_codes(groups: object | None, n_rows: int) -> tuple[np.ndarray, int, bool]:
    """Integer codes ``0..G-1`` of the groups (rows as groups when ``None``)."""
    if groups is None:
        return np.arange(n_rows, dtype=np.int64), n_rows, False
    arr = to_numpy(groups, "groups")
    if arr.ndim != 1:
        raise ValueError(f"groups must be 1-D (one id per scored row), got shape {arr.shape}")
    if arr.shape[0] != n_rows:
        raise ValueError(f"groups have {arr.shape[0]} ids but there are {n_rows} scored rows: "
                         "give one group id (e.g. user or sequence index) per row")
    codes, uniques = pd.factorize(pd.Series(arr), sort=True, use_na_sentinel=True)
    if (codes < 0).any():
        row = int(np.flatnonzero(codes < 0)[0])
        raise ValueError(f"groups contain a missing id at row {row}: every row needs a group")
    return codes.astype(np.int64), len(uniques), True


def _check_selection(
    source: str, selection: object, attribute_names: pd.Index, feature_names: pd.Index
) -> tuple[pd.Series, np.ndarray]:
    """(selection over all attributes, feature position per attribute with -1 for none)."""
    if not isinstance(selection, (pd.Series, Mapping)):
        raise ValueError(f"selections[{source!r}] must map attribute -> feature label (a dict or "
                         f"the Series of best_features), got {type(selection).__name__}")
    series = pd.Series(selection, dtype=object)
    unknown = [a for a in series.index if a not in attribute_names]
    if unknown:
        raise ValueError(f"selections[{source!r}] names unknown attributes {unknown[:5]}; "
                         f"known: {list(attribute_names)[:10]}")
    full = series.reindex(attribute_names)
    full = full.astype(object).where(full.notna(), None)
    positions = np.full(len(attribute_names), -1, dtype=np.int64)
    for a, feature in enumerate(full.to_numpy()):
        if feature is None:
            continue
        p = feature_names.get_indexer([feature])[0]
        if p < 0:
            raise ValueError(f"selections[{source!r}] chooses feature {feature!r} for "
                             f"{attribute_names[a]!r}, which is not a feature of that source "
                             f"({len(feature_names)} features)")
        positions[a] = p
    return full, positions


# ------------------------------------------------------------------------------ resampling
class _Resampler:
    """Counts of each group in each resample, reproducible per resample whatever the blocking."""

    def __init__(self, n_groups: int, n_resamples: int, seed: int, max_memory: int) -> None:
        self.n_groups = n_groups
        self.n_resamples = n_resamples
        self.seeds = np.random.SeedSequence(seed).spawn(n_resamples)
        self.cache: np.ndarray | None = None
        if n_resamples * n_groups * 8 <= max_memory // 2:
            self.cache = self._draw(0, n_resamples)

    def _draw(self, start: int, stop: int) -> np.ndarray:
        out = np.empty((stop - start, self.n_groups), dtype=np.float64)
        for i, b in enumerate(range(start, stop)):
            drawn = np.random.default_rng(self.seeds[b]).integers(0, self.n_groups,
                                                                  size=self.n_groups)
            out[i] = np.bincount(drawn, minlength=self.n_groups)
        return out

    def counts(self, start: int, stop: int) -> np.ndarray:
        """``(stop - start, G)`` float64 counts of resamples ``start..stop-1`` (read only)."""
        if self.cache is not None:
            return self.cache[start:stop]
        return self._draw(start, stop)


_SUMS = ("one", "x", "y", "xx", "yy", "xy", "pos", "pos_active", "active", "pos_x")
"""Per-group sums behind every metric except ROC AUC (x, y centred on their means)."""


class _SumStatistics:
    """Every metric but ROC AUC for all (feature column, attribute) pairs of one source.

    Holds ``(G, K, P)`` group sums of the ``P`` pairs; a block of resamples costs one matrix
    product ``counts @ sums``.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, binary: np.ndarray, codes: np.ndarray,
                 n_groups: int, threshold: float) -> None:
        """``x``, ``y``: ``(N, P)`` feature and attribute column of each pair (any float)."""
        n_pairs = x.shape[1]
        self.n_pairs = n_pairs
        self.binary = binary
        self.x_mean = np.zeros(n_pairs)
        self.var_x = np.zeros(n_pairs)
        self.var_y = np.zeros(n_pairs)
        self.sums = np.zeros((n_groups, len(_SUMS), n_pairs))
        order = np.argsort(codes, kind="stable")
        starts = np.flatnonzero(np.r_[True, np.diff(codes[order]) != 0])
        self.limits = np.zeros((4, n_groups, n_pairs))  # x min, x max, y min, y max per group
        for j in range(n_pairs):
            xj = np.asarray(x[:, j], dtype=np.float64)
            yj = np.asarray(y[:, j], dtype=np.float64)
            self.x_mean[j] = xj.mean()
            xc, yc = xj - self.x_mean[j], yj - yj.mean()
            self.var_x[j], self.var_y[j] = float(xc @ xc), float(yc @ yc)
            active = (xj > threshold).astype(np.float64)
            values = (np.ones_like(xj), xc, yc, xc * xc, yc * yc, xc * yc, yj, yj * active,
                      active, yj * xc)
            for k, v in enumerate(values):
                self.sums[:, k, j] = np.bincount(codes, weights=v, minlength=n_groups)
            for k, v in enumerate((xj, yj)):
                self.limits[2 * k, :, j] = np.minimum.reduceat(v[order], starts)
                self.limits[2 * k + 1, :, j] = np.maximum.reduceat(v[order], starts)
        self.var_x /= x.shape[0]
        self.var_y /= x.shape[0]
        self.flat = self.sums.reshape(n_groups, -1)

    def per_resample_bytes(self) -> int:
        """Working bytes per resample of a block."""
        return 8 * (3 * self.flat.shape[1] + 4 * self.n_pairs)

    def _constant(self, counts: np.ndarray, candidates: np.ndarray, lo: int) -> np.ndarray:
        """Exact check, for the flagged (resample, pair) cells, that a column is constant on the
        drawn groups (``lo``: 0 for x, 2 for y)."""
        out = np.zeros(candidates.shape, dtype=bool)
        for b, j in zip(*np.nonzero(candidates), strict=True):
            present = counts[b] > 0
            out[b, j] = (self.limits[lo, present, j].min() == self.limits[lo + 1, present, j].max())
        return out

    def __call__(self, counts: np.ndarray, metrics: tuple[str, ...]) -> dict[str, np.ndarray]:
        """metric -> ``(b, P)`` values under each row of ``counts`` (``(b, G)``)."""
        r = (counts @ self.flat).reshape(counts.shape[0], len(_SUMS), self.n_pairs)
        col = {name: r[:, k, :] for k, name in enumerate(_SUMS)}
        w = col["one"]
        out: dict[str, np.ndarray] = {}
        with np.errstate(divide="ignore", invalid="ignore"):
            if "correlation" in metrics:
                mx, my = col["x"] / w, col["y"] / w
                vx = col["xx"] / w - mx * mx
                vy = col["yy"] / w - my * my
                corr = np.clip((col["xy"] / w - mx * my) / np.sqrt(vx * vy), -1.0, 1.0)
                # a constant column has variance 0 up to rounding: confirm exactly when tiny
                tiny_x = vx <= 1e-9 * self.var_x
                tiny_y = vy <= 1e-9 * self.var_y
                undefined = ((tiny_x & self._constant(counts, tiny_x, 0))
                             | (tiny_y & self._constant(counts, tiny_y, 2))
                             | (vx <= 0) | (vy <= 0))
                out["correlation"] = np.where(undefined, np.nan, corr)
            n1 = col["pos"]
            if "sensitivity" in metrics:
                out["sensitivity"] = np.where(n1 > 0, col["pos_active"] / n1, np.nan)
            if "precision" in metrics:
                out["precision"] = np.where(col["active"] > 0, col["pos_active"] / col["active"],
                                            np.nan)
            if "mean_given_attribute" in metrics:
                out["mean_given_attribute"] = np.where(n1 > 0, col["pos_x"] / n1 + self.x_mean,
                                                       np.nan)
        for m in BINARY_METRICS:
            if m in out:
                out[m][:, ~self.binary] = np.nan
        return out


class _AucStatistics:
    """Exact ROC AUC (ties one half) of one feature column for one binary attribute.

    With few groups the Mann-Whitney count is a quadratic form in the group counts,
    ``U = c^T M c`` where ``M[g, h]`` counts (positive row of g, negative row of h) pairs ordered
    correctly (ties one half): a resample then costs ``O(G^2)``. Otherwise each resample sums
    positive and negative weights per tie group of the sorted values: ``O(N)``.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, codes: np.ndarray, n_groups: int,
                 max_memory: int, quadratic: bool | None = None) -> None:
        _, tie = np.unique(np.asarray(x, dtype=np.float64), return_inverse=True)
        tie = tie.reshape(-1)
        self.n_ties = int(tie.max()) + 1
        is_pos = np.asarray(y) == 1.0

        def tie_matrix(mask: np.ndarray) -> sp.csr_matrix:
            data = np.ones(int(mask.sum()))
            return sp.csr_matrix((data, (tie[mask], codes[mask])), shape=(self.n_ties, n_groups))

        self.pos = tie_matrix(is_pos)  # weight of positive rows per (tie group, group)
        self.neg = tie_matrix(~is_pos)
        self.n_pos = np.asarray(self.pos.sum(axis=0)).reshape(-1)
        self.n_neg = np.asarray(self.neg.sum(axis=0)).reshape(-1)
        if quadratic is None:
            quadratic = (n_groups * n_groups <= self.n_ties + codes.size
                         and 8 * self.n_ties * n_groups <= max_memory // 2)
        self.pairs: np.ndarray | None = None
        if quadratic:
            below = self.neg.toarray()  # (T, G)
            below = np.cumsum(below, axis=0) - 0.5 * below  # negatives below + half the ties
            self.pairs = np.asarray(self.pos.T @ below)  # (G, G)

    def per_resample_bytes(self) -> int:
        """Working bytes per resample of a block."""
        if self.pairs is not None:
            return 8 * 2 * self.pairs.shape[0]
        return 8 * 5 * self.n_ties

    def __call__(self, counts: np.ndarray) -> np.ndarray:
        """``(b,)`` AUC under each row of ``counts``."""
        w1, w0 = counts @ self.n_pos, counts @ self.n_neg
        if self.pairs is not None:
            u = np.einsum("bg,bg->b", counts @ self.pairs, counts)
        else:
            c_t = np.ascontiguousarray(counts.T)
            pos = np.asarray(self.pos @ c_t)  # (T, b) positive weight per tie group
            neg = np.asarray(self.neg @ c_t)
            below = np.cumsum(neg, axis=0)
            below -= 0.5 * neg
            u = np.einsum("tb,tb->b", pos, below)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where((w1 > 0) & (w0 > 0), u / (w1 * w0), np.nan)


def _blocks(n_resamples: int, per_resample: int, max_memory: int) -> list[tuple[int, int]]:
    """Consecutive ``(start, stop)`` blocks of resamples that fit ``max_memory``."""
    size = max(1, min(n_resamples, max_memory // max(per_resample, 1)))
    return [(b0, min(n_resamples, b0 + size)) for b0 in range(0, n_resamples, size)]


def bootstrap_alignment(
    scored: Mapping[str, ActivationsLike],
    attributes: object,
    selections: Mapping[str, Mapping[object, object] | pd.Series],
    *,
    groups: object | None = None,
    attribute_names: Sequence[object] | None = None,
    feature_names: Mapping[str, Sequence[object]] | None = None,
    metrics: Sequence[str] = ("correlation", "roc_auc", "sensitivity"),
    threshold: float = 0.0,
    n_resamples: int = 1000,
    seed: int = 0,
    max_memory: int = 256 * 2**20,
) -> AlignmentBootstrap:
    """Bootstrap the scores of fixed feature selections on the scored rows.

    Args:
        scored: source name -> ``(N, F_s)`` activations on the scored rows (e.g. test rows),
            anything :func:`~mechrec.alignment.alignment_stats` accepts, e.g.
            ``{"SAE": features, "neurons": raw, "random": control}``. All on the same N rows.
        attributes: ``(N, A)`` attributes of those rows (numpy, torch or pandas).
        selections: source -> {attribute -> feature label}, chosen on *other* rows, e.g.
            ``best_features(alignment_stats(select_rows, ...))``. Attributes not named, or
            mapped to ``None``, get NaN scores. Every source needs a selection.
        groups: optional ``(N,)`` group id of every row (user, sequence): whole groups are
            resampled. Default: rows are resampled independently.
        attribute_names: names of the attribute columns (default: DataFrame columns or
            ``attr_0..``).
        feature_names: source -> feature labels (default ``0..F_s-1``), as in the statistics
            the selections come from.
        metrics: metrics to resample, any of :data:`~mechrec.alignment.METRICS`.
        threshold: a feature is active on a row when its activation is ``> threshold``.
        n_resamples: number of bootstrap resamples B (>= 200 for 95% intervals is sensible).
        seed: seed of the resampling; the same seed gives the same resamples whatever
            ``max_memory`` is.
        max_memory: soft budget in bytes for a block of resamples.

    Returns:
        :class:`AlignmentBootstrap` with the point values, every resample's values, and
        :meth:`~AlignmentBootstrap.intervals` / :meth:`~AlignmentBootstrap.differences`.

    Raises:
        ValueError: sources of different row counts, attributes or groups of the wrong
            length, fewer than 2 groups, unknown attributes or features in a selection,
            unknown metrics, or invalid numbers.

    Warns:
        FewGroupsWarning: fewer than :data:`MIN_GROUPS_WITHOUT_WARNING` groups.
    """
    if not isinstance(scored, Mapping) or not scored:
        raise ValueError("scored must map at least one source name to activations, e.g. "
                         "{'SAE': features}")
    if not isinstance(selections, Mapping):
        raise ValueError("selections must map each source name to its attribute -> feature "
                         "selection")
    missing = [s for s in scored if s not in selections]
    extra = [s for s in selections if s not in scored]
    if missing or extra:
        raise ValueError(f"selections must name exactly the scored sources {list(scored)}; "
                         f"missing: {missing}, unknown: {extra}")
    chosen = _check_metrics(metrics)
    threshold = check_threshold(threshold)
    n_resamples = check_positive_int(n_resamples, "n_resamples")
    max_memory = check_positive_int(max_memory, "max_memory")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    feature_names = dict(feature_names or {})
    unknown_names = [s for s in feature_names if s not in scored]
    if unknown_names:
        raise ValueError(f"feature_names names unknown sources {unknown_names}")

    readers = {}
    n_rows = None
    for name, acts in scored.items():
        reader = as_reader(acts)
        if n_rows is None:
            n_rows = reader.n_rows
        elif reader.n_rows != n_rows:
            raise ValueError(f"scored[{name!r}] has {reader.n_rows} rows but "
                             f"scored[{next(iter(scored))!r}] has {n_rows}: score every source "
                             "on the same rows")
        readers[name] = reader
    assert n_rows is not None
    table = as_attribute_table(attributes, n_rows, attribute_names)
    codes, n_groups, grouped = _group_codes(groups, n_rows)
    unit = "groups" if grouped else "rows"
    if n_groups < 2:
        raise ValueError(f"the bootstrap needs at least 2 {unit} to resample, got {n_groups}")
    if n_groups < MIN_GROUPS_WITHOUT_WARNING:
        warnings.warn(f"only {n_groups} {unit} to resample: bootstrap intervals from fewer than "
                      f"{MIN_GROUPS_WITHOUT_WARNING} are unreliable (usually too narrow)",
                      FewGroupsWarning, stacklevel=2)

    resampler = _Resampler(n_groups, n_resamples, int(seed), max_memory)
    estimates: dict[str, pd.DataFrame] = {}
    samples: dict[str, dict[str, np.ndarray]] = {}
    selected: dict[str, pd.Series] = {}
    n_attr = table.n_attributes
    for name, reader in readers.items():
        names = feature_index(feature_names.get(name), reader.n_features)
        selection, positions = _check_selection(name, selections[name], table.names, names)
        selected[name] = selection
        unique = np.unique(positions[positions >= 0])
        columns = selected_columns(reader, unique, max_memory=max_memory)
        column_of = {int(p): j for j, p in enumerate(unique)}

        point = pd.DataFrame(np.nan, index=table.names, columns=list(chosen))
        if unique.size:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DegenerateInputWarning)
                stats = alignment_stats(columns, table.values, attribute_names=table.names,
                                        threshold=threshold, metrics=chosen)
            for a, p in enumerate(positions):
                if p >= 0:
                    for j, m in enumerate(chosen):
                        point.iloc[a, j] = stats.values[m][column_of[int(p)], a]
        estimates[name] = point

        draws = {m: np.full((n_resamples, n_attr), np.nan) for m in chosen}
        pairs = np.flatnonzero(positions >= 0)
        if pairs.size:
            cols = [column_of[int(positions[a])] for a in pairs]
            counts_bytes = 0 if resampler.cache is not None else 8 * n_groups
            summed = [m for m in chosen if m != "roc_auc"]
            if summed:
                sums = _SumStatistics(columns[:, cols], table.values[:, pairs],
                                      table.is_binary[pairs], codes, n_groups, threshold)
                for b0, b1 in _blocks(n_resamples, sums.per_resample_bytes() + counts_bytes,
                                      max_memory):
                    values = sums(resampler.counts(b0, b1), tuple(summed))
                    for m in summed:
                        draws[m][b0:b1, pairs] = values[m]
            if "roc_auc" in chosen:
                for a, col in zip(pairs, cols, strict=True):
                    if not table.is_binary[a]:
                        continue
                    auc = _AucStatistics(columns[:, col], table.values[:, a], codes, n_groups,
                                         max_memory)
                    for b0, b1 in _blocks(n_resamples, auc.per_resample_bytes() + counts_bytes,
                                          max_memory):
                        draws["roc_auc"][b0:b1, a] = auc(resampler.counts(b0, b1))
        samples[name] = draws

    return AlignmentBootstrap(
        estimates=estimates, samples=samples, selections=selected,
        attribute_names=table.names, metrics=chosen, n_rows=int(n_rows), n_groups=n_groups,
        grouped=grouped, n_resamples=n_resamples, seed=int(seed))

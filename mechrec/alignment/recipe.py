"""Honest alignment on any model: choose each attribute's best feature on one row set, score it
on another, beside raw neurons, a random control and probes, with a grouped bootstrap.

This is the paper's alignment recipe written against :class:`mechrec.study.Study`, so it runs
on a recommender's ``Experiment`` and on a language model wrapped in
:class:`~mechrec.study.TokenStudy` alike. Every activation row (one real position of one
sequence) is labelled by the attributes of its input token (the study's token attribute
table). Feature sources compared on the same rows and labels:

- ``SAE``: the SAE's features (``encode`` of the raw activations, chunked and sparse:
  :func:`encode_sparse`);
- ``neurons``: the raw activations at the SAE's hook;
- ``random``: a random-projection control with as many directions as the SAE has features,
  through a ReLU on the SAE's normalised inputs, each direction firing as often as the SAE
  feature of the same index on the select rows;
- ``probes`` (opt-in): one logistic probe per attribute fitted on the select rows; its logit is
  one "feature" per attribute (an upper reference for a single linear direction);
- ``mean_difference`` (opt-in): per attribute, the projection on the difference of the class
  means of the select rows (the steering-vectors convention);
- ``k_sparse_probes`` (opt-in): per attribute, a k-sparse probe (Gurnee et al. 2023): the ``k``
  neurons that best separate the attribute on the select rows, then a logistic probe on them;
- ``pca`` (opt-in): per attribute, the projection on the principal component of the select
  rows (sign included) that correlates best with it there.

Every probe-like source is fitted on the select rows only, like the choice of SAE features.

Honest selection: the best feature per attribute is chosen on the ``select`` rows and scored
on the ``score`` rows. Choosing the best of thousands of features and scoring it on the same
rows flatters a wide dictionary, so every table shows that in-sample variant beside the honest
one.

:class:`FeatureAlignment` is the estimator (``fit`` on the select rows, ``score`` on the score
rows); :func:`align` does both. The result, :class:`AlignmentRun`, builds the per-attribute
table, the source comparison, profiles, monosemanticity, top features, bootstrap intervals and
paired differences, and writes them all (:meth:`AlignmentRun.write`).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from mechrec._io import atomic_write_bytes, atomic_write_json
from mechrec.activations import ActivationSet
from mechrec.alignment._validation import DegenerateInputWarning
from mechrec.alignment.bootstrap import AlignmentBootstrap, bootstrap_alignment, selected_columns
from mechrec.alignment.controls import RandomProjection
from mechrec.alignment.grouping import group_means
from mechrec.alignment.labels import token_attributes
from mechrec.alignment.metric_names import METRICS
from mechrec.alignment.ranking import (
    MEAN_ROW,
    best_feature_table,
    best_features,
    feature_profiles,
    monosemanticity,
    top_features,
)
from mechrec.alignment.sources import LazyActivations
from mechrec.alignment.stats import AlignmentStats, alignment_stats
from mechrec.hooks import check_sae_fits
from mechrec.study import RowAttributes, Study, check_attribute_table, check_study

__all__ = [
    "ALL_SOURCES",
    "BOOTSTRAP_PAIRS",
    "REPORTED_METRICS",
    "SELECTIONS",
    "SOURCES",
    "UNITS",
    "AlignmentRun",
    "FeatureAlignment",
    "ScoredRows",
    "align",
    "encode_sparse",
]

SOURCES: tuple[str, ...] = ("SAE", "neurons", "random")
"""The default feature sets: SAE features, raw neurons at the hook, random-projection control."""

PROBE_SOURCES: dict[str, str] = {"probes": "logistic", "mean_difference": "mean_difference",
                                 "k_sparse_probes": "k_sparse", "pca": "pca"}
"""Probe-like sources and the :func:`mechrec.probes.fit_probes` method each fits."""

FEATURE_PROBE_SOURCES: tuple[str, ...] = ("sae_k_sparse_probes",)
"""Probes on the SAE's features (:func:`mechrec.feature_probes.fit_feature_probes`)."""

ALL_SOURCES: tuple[str, ...] = (*SOURCES, *PROBE_SOURCES, *FEATURE_PROBE_SOURCES)
"""Every feature set :class:`FeatureAlignment` can compare."""

SELECTIONS: tuple[str, ...] = ("honest", "in-sample")
"""``honest``: choose on the select rows, score on the score rows; ``in-sample``: choose and
score on the score rows (flattering to wide dictionaries)."""

UNITS: tuple[str, ...] = ("positions", "tokens")
"""What one data point is: a position, or a distinct token (its activations averaged over the
positions where it occurs)."""

REPORTED_METRICS: tuple[str, ...] = ("correlation", "roc_auc", "sensitivity")
"""Metrics shown for every chosen feature (the paper's Table 2 columns)."""

BOOTSTRAP_PAIRS: tuple[tuple[str, str], ...] = (
    ("SAE", "neurons"), ("SAE", "random"), ("neurons", "random"))
"""Paired differences reported by :meth:`AlignmentRun.difference_table` (first - second)."""

_ENCODE_ROWS = 4096


def encode_sparse(sae: Any, raw: torch.Tensor, chunk_rows: int = _ENCODE_ROWS) -> sp.csr_matrix:
    """SAE features of raw activations ``(N, d_in)`` as a sparse ``(N, d_sae)`` float32 matrix.

    Encodes ``chunk_rows`` rows at a time on the SAE's device, so millions of rows never need a
    dense ``N x d_sae`` matrix. ``sae`` is anything with ``encode``, ``d_sae`` and ``device``
    (a :class:`~mechrec.saes.NormalizedSAE`).
    """
    parts = []
    with torch.no_grad():
        for r0 in range(0, raw.shape[0], chunk_rows):
            chunk = raw[r0:r0 + chunk_rows].to(sae.device, torch.float32)
            feats = sae.encode(chunk).float().cpu().numpy()
            parts.append(sp.csr_matrix(feats))
    if not parts:
        return sp.csr_matrix((0, sae.d_sae), dtype=np.float32)
    return sp.vstack(parts, format="csr")


def normaliser_note(sae: Any, raw: torch.Tensor) -> str | None:
    """A note when the SAE's normaliser clearly does not fit these activations (``None`` when
    it does, or when the SAE does not normalise)."""
    normalizer = getattr(sae, "normalizer", None)
    if normalizer is None or normalizer.mode == "none":
        return None
    with torch.no_grad():
        z = normalizer.normalize(raw[: 50_000].to(torch.float32))
        mean = float(z.mean(dim=0).abs().max())
        std = z.std(dim=0)
    lo, hi = float(std.min()), float(std.max())
    if mean > 1.0 or lo < 0.25 or hi > 4.0:
        return (f"the SAE's normaliser does not match these activations (after normalising: "
                f"largest |mean| {mean:.2f}, std range {lo:.2f}-{hi:.2f}): was the SAE trained "
                "on this model?")
    return None


def _normalised(sae: Any, raw: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        x = raw.to(torch.float32)
        normalizer = getattr(sae, "normalizer", None)
        return (normalizer.normalize(x) if normalizer is not None else x).cpu().numpy()


@dataclass(frozen=True, eq=False)
class ScoredRows:
    """What the bootstrap of :meth:`AlignmentRun.bootstrap` resamples: the score rows' values
    of the features chosen on the select rows, their attributes and their groups.

    Only the honestly chosen columns are kept (at most one per attribute and source), never
    the full feature matrices.
    """

    columns: dict[str, np.ndarray]
    """source -> ``(N, k)`` values on the score rows of the ``k`` distinct chosen features."""
    features: dict[str, list[Any]]
    """source -> the labels of those ``k`` columns (feature indices of the source)."""
    selections: dict[str, pd.Series]
    """source -> attribute -> feature chosen on the select rows (``None`` when undefined)."""
    labels: pd.DataFrame
    """``(N, A)`` attributes of the score rows."""
    groups: np.ndarray
    """``(N,)`` group of each score row (the study's ``row_groups``, e.g. a user): the
    bootstrap resamples whole groups (with ``unit="tokens"`` each row is one token and this
    holds it: tokens are resampled)."""
    metric: str
    """Metric that chose the features."""

    @property
    def n_rows(self) -> int:
        """Number of score rows N."""
        return int(self.labels.shape[0])

    @property
    def n_groups(self) -> int:
        """Number of distinct groups among the score rows."""
        return int(pd.unique(self.groups).size)


def scored_rows(stats: Mapping[str, Mapping[str, AlignmentStats]],
                score_sources: Mapping[str, Any], labels: pd.DataFrame, groups: np.ndarray,
                metric: str) -> ScoredRows:
    """Keep the score rows' columns of each source's features chosen on the select rows."""
    columns: dict[str, np.ndarray] = {}
    features: dict[str, list[Any]] = {}
    selections: dict[str, pd.Series] = {}
    for source, acts in score_sources.items():
        chosen = best_features(stats[source]["select"], metric)
        labels_used = list(dict.fromkeys(f for f in chosen.to_numpy() if f is not None))
        names = stats[source]["score"].feature_names
        positions = names.get_indexer(labels_used)
        columns[source] = selected_columns(acts, positions)
        features[source] = labels_used
        selections[source] = chosen
    return ScoredRows(columns=columns, features=features, selections=selections,
                      labels=labels.reset_index(drop=True), groups=np.asarray(groups),
                      metric=metric)


@dataclass(eq=False)
class AlignmentRun:
    """Alignment statistics of several feature sources on two row sets.

    Build it with :func:`align` (or :class:`FeatureAlignment`). ``stats[source][part]`` holds
    the :class:`~mechrec.alignment.AlignmentStats` of ``source`` (e.g. ``SAE``, ``neurons``,
    ``random``, ``probes``) on the ``"select"`` rows (that choose features) or the ``"score"``
    rows (that score them).
    """

    stats: dict[str, dict[str, AlignmentStats]]
    """source -> {"select": stats on the select part, "score": stats on the score part}."""
    groups: pd.Series
    """attribute -> group (e.g. ``genre``, ``decade``, ``custom``); tables list groups in
    their order of first appearance."""
    metric: str
    """Metric that chooses the best feature per attribute."""
    hook_name: str
    """Hook the features read."""
    select_part: str = "select"
    """Row set whose rows choose features."""
    score_part: str = "score"
    """Row set whose rows score them."""
    seed: int = 0
    """Seed of the random-projection control."""
    unit: str = "positions"
    """What one data point is: a position (``"positions"``) or a distinct token whose
    activations are averaged over its positions; see :func:`align`."""
    group_unit: str = "group"
    """What one bootstrap group is, in words (``user`` for a recommender)."""
    table_stems: dict[str, str] = field(default_factory=dict)
    """File-name changes :meth:`write` applies (e.g. ``{"per_attribute": "per_genre"}``)."""
    notes: list[str] = field(default_factory=list)
    """Warnings collected while computing (degenerate features or attributes, ...)."""
    scored: ScoredRows | None = None
    """The score rows' values of the honestly chosen features, for :meth:`bootstrap`
    (``None`` when the run was built without them)."""
    saved_bootstrap: AlignmentBootstrap | None = None
    """The bootstrap :meth:`save` wrote beside the tables, as :meth:`load` reads it back
    (``None`` when saved without one); turn it into tables with :meth:`interval_table`,
    :meth:`difference_table` and :meth:`bootstrap_meta` at :attr:`saved_confidence`."""
    saved_confidence: float = 0.95
    """Coverage of the intervals written with :attr:`saved_bootstrap`."""

    @property
    def sources(self) -> list[str]:
        """The feature sources, in order."""
        return list(self.stats)

    @property
    def attribute_names(self) -> pd.Index:
        """Attribute names, in table order."""
        return self._first.attribute_names

    @property
    def _first(self) -> AlignmentStats:
        return next(iter(self.stats.values()))["score"]

    @property
    def group_order(self) -> list[str]:
        """Attribute groups in order of first appearance."""
        return list(pd.unique(self.groups.to_numpy()))

    @property
    def reported(self) -> list[str]:
        """Metrics reported for each chosen feature: the selecting metric, then Table 2's."""
        return list(dict.fromkeys([self.metric, *REPORTED_METRICS]))

    def _pair(self, source: str, selection: str) -> tuple[AlignmentStats, AlignmentStats]:
        if source not in self.stats:
            raise ValueError(f"unknown feature set {source!r}; choose one of {list(self.stats)}")
        if selection not in SELECTIONS:
            raise ValueError(f"unknown selection {selection!r}; choose one of {list(SELECTIONS)}")
        score = self.stats[source]["score"]
        select = self.stats[source]["select"] if selection == "honest" else score
        return select, score

    def best_table(self, source: str = "SAE", selection: str = "honest") -> pd.DataFrame:
        """Per attribute, the best feature of ``source`` chosen on the ``selection``'s rows and
        scored on the score rows; columns ``feature``, reported metrics, ``prevalence``.

        Indexed by attribute in attribute order (not sorted).
        """
        select, score = self._pair(source, selection)
        table = best_feature_table(score, self.metric, select_on=select, metrics=self.reported)
        return table.reindex(self.attribute_names)

    def per_attribute_table(self, source: str = "SAE") -> pd.DataFrame:
        """The paper's Table 2, honest and in-sample side by side, one row per attribute.

        Columns: ``group``, ``share`` (share of score rows with the attribute, the paper's
        "genre popularity"), ``feature`` (chosen on the select rows), the reported metrics of
        that feature on the score rows, ``<metric>_on_select`` (its value on the rows that chose
        it), then ``feature_in_sample`` and ``<m>_in_sample`` for the feature chosen and scored
        on the score rows. Sorted by group, then by the honest metric (descending, NaN last).
        Attributes without positives (ml-100k's ``unknown``) have NaN metrics.
        """
        select, _ = self._pair(source, "honest")
        honest = self.best_table(source, "honest")
        in_sample = self.best_table(source, "in-sample")
        chosen = honest["feature"]
        on_select = []
        for attribute, feature in chosen.items():
            if feature is None:
                on_select.append(np.nan)
                continue
            f = select.feature_names.get_loc(feature)
            a = select.attribute_names.get_loc(attribute)
            on_select.append(float(select.values[self.metric][f, a]))
        frame = pd.DataFrame(index=self.attribute_names)
        frame["group"] = self.groups.reindex(self.attribute_names).to_numpy()
        frame["share"] = honest["prevalence"].to_numpy(dtype=float)
        frame["feature"] = _feature_labels(chosen.tolist())
        for m in self.reported:
            frame[m] = honest[m].to_numpy(dtype=float)
        frame[f"{self.metric}_on_select"] = on_select
        frame["feature_in_sample"] = _feature_labels(in_sample["feature"].tolist())
        for m in self.reported:
            frame[f"{m}_in_sample"] = in_sample[m].to_numpy(dtype=float)
        frame = frame.rename_axis("attribute")  # a new index: the stats' own stays unnamed
        order = {g: i for i, g in enumerate(self.group_order)}
        frame["_g"] = frame["group"].map(order).fillna(len(order))
        frame["_m"] = -frame[self.metric].fillna(-np.inf)
        frame = frame.sort_values(["_g", "_m"], kind="stable").drop(columns=["_g", "_m"])
        return frame

    def comparison(self, selection: str = "honest") -> pd.DataFrame:
        """Per attribute, the best feature's metrics for every feature set (paper Fig. 4).

        Columns ``group``, ``share``, then ``<source>_feature`` and ``<source>_<metric>`` for
        each source and reported metric.
        """
        frame = pd.DataFrame(index=self.attribute_names)
        frame["group"] = self.groups.reindex(self.attribute_names).to_numpy()
        frame["share"] = self._first.attribute_prevalence
        for source in self.stats:
            table = self.best_table(source, selection)
            frame[f"{source}_feature"] = _feature_labels(table["feature"].tolist())
            for m in self.reported:
                frame[f"{source}_{m}"] = table[m].to_numpy(dtype=float)
        return frame.rename_axis("attribute")  # not in place: the index is the stats' own

    def summary(self) -> pd.DataFrame:
        """Every feature source, honest and in-sample, per attribute group.

        One row per (group, features, selection) with ``n_features``, ``attributes`` (how many
        have a defined metric), min/mean/max over attributes of the best feature's selecting
        metric, and the means of the other reported metrics (the paper's section 7.1.3 numbers
        and Table 2's mean row). Groups: each present group, plus ``all`` when there are
        several.
        """
        group_sets = self._group_sets()
        rows = []
        for source in self.stats:
            for selection in SELECTIONS:
                table = self.best_table(source, selection)
                for group, members in group_sets:
                    sub = table.loc[members]
                    values = sub[self.metric].to_numpy(dtype=float)
                    defined = values[~np.isnan(values)]
                    row: dict[str, Any] = {
                        "group": group,
                        "features": source,
                        "selection": selection,
                        "n_features": self.stats[source]["score"].n_features,
                        "attributes": int(defined.size),
                        f"{self.metric}_min": float(defined.min()) if defined.size else np.nan,
                        f"{self.metric}_mean": float(defined.mean()) if defined.size else np.nan,
                        f"{self.metric}_max": float(defined.max()) if defined.size else np.nan,
                    }
                    for m in self.reported[1:]:
                        col = sub[m].to_numpy(dtype=float)
                        row[f"{m}_mean"] = (float(np.nanmean(col)) if (~np.isnan(col)).any()
                                            else np.nan)
                    rows.append(row)
        frame = pd.DataFrame(rows)
        order = {g: i for i, g in enumerate([*self.group_order, "all"])}
        frame["_g"] = frame["group"].map(order)
        return (frame.sort_values("_g", kind="stable").drop(columns="_g")
                .reset_index(drop=True))

    def profiles(self, source: str = "SAE") -> pd.DataFrame:
        """Fig. 2: each attribute's honestly chosen feature, its ``metric`` on the score rows
        across every attribute (rows: ``selected_for``; first column ``feature``)."""
        select, score = self._pair(source, "honest")
        return feature_profiles(score, best_features(select, self.metric), self.metric)

    def monosemanticity(self, source: str = "SAE") -> pd.DataFrame:
        """For each attribute's honestly chosen feature: its best and second-best attribute by
        ``metric`` on the score rows, margin and ratio (second / best)."""
        select, score = self._pair(source, "honest")
        chosen = best_features(select, self.metric).dropna()
        if chosen.empty:
            return pd.DataFrame(columns=["feature", "best_attribute", "best", "second_attribute",
                                         "second", "margin", "ratio"],
                                index=pd.Index([], name="selected_for"))
        mono = monosemanticity(score, self.metric, features=list(dict.fromkeys(chosen)))
        out = mono.reindex(list(chosen.to_numpy()))
        out.insert(0, "feature", list(chosen.to_numpy()))
        out.index = pd.Index(chosen.index, name="selected_for")
        return out

    def top_features(self, source: str = "SAE", k: int = 5) -> pd.DataFrame:
        """The ``k`` best features per attribute chosen on the select rows, with
        ``<metric>_on_select`` and the reported metrics on the score rows."""
        select, score = self._pair(source, "honest")
        top = top_features(select, self.metric, k)
        out = top[["attribute", "rank", "feature"]].copy()
        out[f"{self.metric}_on_select"] = top[self.metric].to_numpy(dtype=float)
        if len(out):
            f = score.feature_names.get_indexer(out["feature"])
            a = score.attribute_names.get_indexer(out["attribute"])
            for m in self.reported:
                out[m] = score.values[m][f, a]
        else:
            for m in self.reported:
                out[m] = pd.Series(dtype=float)
        return out

    # -------------------------------------------------------------------------- uncertainty
    def bootstrap(self, n_resamples: int = 200, *, seed: int = 0,
                  metrics: Sequence[str] | None = None) -> AlignmentBootstrap:
        """Resample the score rows' groups to get the uncertainty of the honest scores.

        The best feature per attribute stays the one chosen on the select rows; whole groups
        (e.g. users) are drawn with replacement (a group's positions are correlated) and every
        source is scored on the same resamples, so differences between sources are paired. See
        :func:`mechrec.alignment.bootstrap_alignment`.

        Args:
            n_resamples: number of resamples.
            seed: seed of the resampling.
            metrics: metrics to resample (default :attr:`reported`).

        Returns:
            :class:`~mechrec.alignment.AlignmentBootstrap`; turn it into tables with
            :meth:`interval_table` and :meth:`difference_table`.

        Raises:
            ValueError: the run holds no score rows (not built by :func:`align`) or bad
                arguments.
        """
        if self.scored is None:
            raise ValueError("this AlignmentRun holds no score rows to resample: build it with "
                             "mechrec.alignment.align(...)")
        if self.scored.metric != self.metric:
            raise ValueError(f"the score rows kept features chosen by {self.scored.metric!r} but "
                             f"the run reports {self.metric!r}: rebuild it with align(metric=...)")
        rows = self.scored
        return bootstrap_alignment(
            {s: rows.columns[s] for s in self.stats},
            rows.labels,
            {s: rows.selections[s] for s in self.stats},
            groups=rows.groups,
            feature_names={s: rows.features[s] for s in self.stats},
            metrics=list(self.reported if metrics is None else metrics),
            threshold=self._first.threshold,
            n_resamples=n_resamples,
            seed=seed,
        )

    def _group_sets(self) -> list[tuple[str, pd.Index]]:
        present = self.group_order
        sets = [(g, self.groups.index[self.groups == g]) for g in present]
        if len(present) > 1:
            sets.append(("all", self.groups.index))
        return sets

    def interval_table(self, boot: AlignmentBootstrap, confidence: float = 0.95
                       ) -> pd.DataFrame:
        """Confidence intervals of the honest scores, per attribute and per group mean.

        One row per (group, features, attribute, metric): ``feature`` (chosen on the select
        rows), ``estimate`` (the value in :meth:`comparison` / :meth:`summary`), percentile
        ``lower`` / ``upper``, ``std_error`` and ``n_valid`` (resamples where the value is
        defined). Each group ends with its mean row (attribute ``(mean)``, the interval of the
        ``<metric>_mean`` of :meth:`summary`); group ``all`` has only the mean row.
        """
        parts = []
        for group, members in self._group_sets():
            frame = boot.intervals(confidence, attributes=list(members),
                                   per_attribute=group != "all")
            frame.insert(0, "group", group)
            parts.append(frame)
        out = pd.concat(parts, ignore_index=True).rename(columns={"source": "features"})
        out["feature"] = _feature_labels(out["feature"].tolist())
        out["confidence"] = confidence
        return out

    def difference_table(self, boot: AlignmentBootstrap, confidence: float = 0.95,
                         pairs: Sequence[tuple[str, str]] | None = None) -> pd.DataFrame:
        """Paired intervals of ``features - versus`` (e.g. SAE - neurons) on the same
        resamples, per attribute and per group mean; ``share_positive`` is the share of
        resamples where the difference is > 0. Default pairs: those of
        :data:`BOOTSTRAP_PAIRS` whose sources this run has, then each other source against
        ``SAE``."""
        if pairs is None:
            pairs = self.default_pairs()
        parts = []
        for group, members in self._group_sets():
            frame = boot.differences(pairs, confidence, attributes=list(members),
                                     per_attribute=group != "all")
            frame.insert(0, "group", group)
            parts.append(frame)
        out = pd.concat(parts, ignore_index=True).rename(columns={"source": "features"})
        out["confidence"] = confidence
        return out

    def bootstrap_meta(self, boot: AlignmentBootstrap, confidence: float = 0.95
                       ) -> dict[str, Any]:
        """Settings and headline intervals of a bootstrap (what ``bootstrap.json`` holds):
        per group, each source's mean ``metric`` and each pair's difference with its interval."""
        m = self.metric
        intervals = self.interval_table(boot, confidence)
        diffs = self.difference_table(boot, confidence)
        unit = self.group_unit
        headline: dict[str, Any] = {}
        for group, _ in self._group_sets():
            sel = intervals[(intervals["group"] == group) & (intervals["attribute"] == MEAN_ROW)
                            & (intervals["metric"] == m)]
            dsel = diffs[(diffs["group"] == group) & (diffs["attribute"] == MEAN_ROW)
                         & (diffs["metric"] == m)]
            headline[group] = {
                "mean": {r.features: {"estimate": r.estimate, "lower": r.lower,
                                      "upper": r.upper} for r in sel.itertuples()},
                "difference": {f"{r.features} - {r.versus}": {
                    "estimate": r.estimate, "lower": r.lower, "upper": r.upper,
                    "share_positive": r.share_positive} for r in dsel.itertuples()},
            }
        return {
            "method": "percentile bootstrap of the honest scores; features fixed (chosen on "
                      f"the {self.select_part} {unit}s), whole {self.score_part} {unit}s "
                      "resampled, all feature sets on the same resamples (paired differences)",
            "n_resamples": boot.n_resamples,
            "confidence": confidence,
            "seed": boot.seed,
            "resampled_unit": f"{self.score_part} {unit}" if boot.grouped else "row",
            "n_units": boot.n_groups,
            "n_rows": boot.n_rows,
            "metric": m,
            "headline": headline,
        }

    def long_table(self, source: str) -> pd.DataFrame:
        """Every metric of every (feature, attribute) pair of ``source`` on both row sets, in
        long form with a ``part`` column (``select`` / ``score``)."""
        if source not in self.stats:
            raise ValueError(f"unknown feature set {source!r}; choose one of {list(self.stats)}")
        parts = []
        for part, stats in self.stats[source].items():
            frame = stats.to_long()
            frame.insert(0, "part", part)
            parts.append(frame)
        return pd.concat(parts, ignore_index=True)

    def default_pairs(self) -> list[tuple[str, str]]:
        """Source pairs compared by default: :data:`BOOTSTRAP_PAIRS` among this run's sources,
        then every other source against ``SAE`` (e.g. ``probes - SAE``)."""
        have = set(self.stats)
        pairs = [p for p in BOOTSTRAP_PAIRS if set(p) <= have]
        pairs += [(s, "SAE") for s in self.stats
                  if s not in SOURCES and "SAE" in have]
        return pairs

    def tables(self, top_k: int = 5, *, stems: Mapping[str, str] | None = None
               ) -> dict[str, pd.DataFrame]:
        """Every table :meth:`write` saves, by file stem.

        ``stems`` renames files (on top of :attr:`table_stems`); each source's long
        table is stored under its lower-cased name (``random`` as ``control``).
        """
        main = "SAE" if "SAE" in self.stats else next(iter(self.stats))
        tables: dict[str, pd.DataFrame] = {}
        for source in self.stats:
            stem = {"SAE": "sae", "random": "control"}.get(source, source.lower())
            tables[stem] = self.long_table(source)
        tables.update({
            "per_attribute": self.per_attribute_table(main),
            "summary": self.summary(),
            "comparison": self.comparison("honest"),
            "profiles": self.profiles(main),
            "monosemanticity": self.monosemanticity(main),
            "top_features": self.top_features(main, top_k),
        })
        renames = {**self.table_stems, **(stems or {})}
        return {renames.get(stem, stem): table for stem, table in tables.items()}

    def save(self, out_dir: str | Path, *, keep_rows: bool = True,
             bootstrap: AlignmentBootstrap | int | None = None,
             confidence: float | None = None, **write_options: Any) -> dict[str, Path]:
        """:meth:`write` the tables, plus ``run.npz``, from which :meth:`load` rebuilds this
        run (statistics, groups, settings, the bootstrap written beside the tables and, with
        ``keep_rows``, the score rows' values of the chosen features, so a loaded run
        bootstraps exactly like this one).

        ``bootstrap`` and ``confidence`` are :meth:`write`'s; ``None`` keeps
        :attr:`saved_bootstrap` and :attr:`saved_confidence` (a loaded run saves again
        whole), ``0`` saves no bootstrap.
        """
        from mechrec.alignment.persist import RUN_FILE, save_run_state

        if confidence is None:
            confidence = self.saved_confidence
        if bootstrap is None:
            bootstrap = self.saved_bootstrap
        boot = self._resolve_bootstrap(bootstrap)
        written = self.write(out_dir, bootstrap=boot, confidence=confidence, **write_options)
        written["run"] = save_run_state(self, Path(out_dir) / RUN_FILE, keep_rows=keep_rows,
                                        bootstrap=boot, confidence=confidence)
        return written

    def _resolve_bootstrap(self, bootstrap: AlignmentBootstrap | int | None
                           ) -> AlignmentBootstrap | None:
        """A bootstrap given as a number of resamples, run (at :attr:`seed`); ``None`` or 0:
        none."""
        if isinstance(bootstrap, bool):
            raise ValueError("bootstrap must be an AlignmentBootstrap, a number of resamples "
                             "or None")
        if isinstance(bootstrap, (int, np.integer)):
            if bootstrap < 0:
                raise ValueError(f"bootstrap must be >= 0 resamples, got {bootstrap}")
            return self.bootstrap(int(bootstrap), seed=self.seed) if bootstrap else None
        return bootstrap

    @classmethod
    def load(cls, out_dir: str | Path) -> AlignmentRun:
        """The run :meth:`save` wrote to ``out_dir`` (see :mod:`mechrec.alignment.persist`)."""
        from mechrec.alignment.persist import load_run

        return load_run(out_dir)

    def write(self, out_dir: str | Path, *, top_k: int = 5,
              provenance: Mapping[str, Any] | None = None,
              bootstrap: AlignmentBootstrap | int | None = None,
              confidence: float = 0.95, stems: Mapping[str, str] | None = None
              ) -> dict[str, Path]:
        """Write every table as ``STEM.csv`` and ``STEM.parquet`` plus ``alignment.json``.

        With ``bootstrap`` (a result of :meth:`bootstrap`, or a number of resamples > 0) also
        ``bootstrap_intervals`` (:meth:`interval_table`), ``bootstrap_differences``
        (:meth:`difference_table`) and ``bootstrap.json`` (:meth:`bootstrap_meta`).

        Files are written atomically. Returns stem (and ``"alignment"``, ``"bootstrap"``) ->
        path of the CSV (the JSON for those two).
        """
        out = Path(out_dir)
        bootstrap = self._resolve_bootstrap(bootstrap)
        tables = self.tables(top_k, stems=stems)
        if bootstrap is not None:
            tables["bootstrap_intervals"] = self.interval_table(bootstrap, confidence)
            tables["bootstrap_differences"] = self.difference_table(bootstrap, confidence)
        out.mkdir(parents=True, exist_ok=True)
        written: dict[str, Path] = {}
        for stem, table in tables.items():
            frame = table.reset_index() if table.index.name is not None else table
            atomic_write_bytes(out / f"{stem}.csv", frame.to_csv(index=False).encode())
            buffer = io.BytesIO()
            frame.to_parquet(buffer, index=False)
            atomic_write_bytes(out / f"{stem}.parquet", buffer.getvalue())
            written[stem] = out / f"{stem}.csv"
        meta = {
            "format": "mechrec.alignment/1",
            "hook_name": self.hook_name,
            "metric": self.metric,
            "select_part": self.select_part,
            "score_part": self.score_part,
            "rows": {part: next(iter(self.stats.values()))[part].n_rows
                     for part in ("select", "score")},
            "features": {s: self.stats[s]["score"].n_features for s in self.stats},
            "seed": self.seed,
            "unit": self.unit,
            "attributes": {str(a): str(g) for a, g in self.groups.items()},
            "notes": self.notes,
            **({"provenance": dict(provenance)} if provenance else {}),
        }
        atomic_write_json(out / "alignment.json", meta)
        written["alignment"] = out / "alignment.json"
        if bootstrap is not None:
            atomic_write_json(out / "bootstrap.json", self.bootstrap_meta(bootstrap, confidence))
            written["bootstrap"] = out / "bootstrap.json"
        return written

    def plot(self, kind: str = "comparison", **kwargs: Any) -> Any:
        """A plotly figure: ``"comparison"`` (Fig. 4; pass ``boot=run.bootstrap()`` for
        intervals), ``"profiles"`` (Fig. 2) or ``"histogram"`` (Fig. 5); see
        :func:`mechrec.plots.alignment_figure`."""
        from mechrec.plots import alignment_figure

        return alignment_figure(self, kind, **kwargs)




def _feature_labels(values: Sequence[Any]) -> Any:
    """Chosen features as a column: nullable integers for indexed features (SAE, neurons,
    control), their text otherwise (probes are named by their attribute; a column mixing both
    holds text, so it stays one type in parquet)."""
    missing = [v is None or (isinstance(v, float) and np.isnan(v)) for v in values]
    present = [v for v, m in zip(values, missing, strict=True) if not m]
    if all(isinstance(v, (int, np.integer)) or (isinstance(v, float) and v.is_integer())
           for v in present):
        return pd.array([None if m else int(v) for v, m in zip(values, missing, strict=True)],
                        dtype="Int64")
    return pd.array([None if m else str(v) for v, m in zip(values, missing, strict=True)],
                    dtype=object)


def _stats(name: str, notes: list[str], activations: Any, labels: pd.DataFrame,
           feature_names: Sequence[Any] | None = None) -> AlignmentStats:
    """``alignment_stats`` with its degenerate-input warning turned into a note."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DegenerateInputWarning)
        stats = alignment_stats(activations, labels, metrics=METRICS,
                                feature_names=feature_names)
    for w in caught:
        if issubclass(w.category, DegenerateInputWarning):
            notes.append(f"{name}: {w.message}")
        else:
            warnings.warn(w.message, w.category, stacklevel=2)
    return stats


def _check_sources(sources: Sequence[str], sae: Any) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(str(s) for s in sources))
    unknown = [s for s in chosen if s not in ALL_SOURCES]
    if unknown or not chosen:
        raise ValueError(f"unknown feature sources {unknown or '(none)'}; choose from "
                         f"{', '.join(ALL_SOURCES)}")
    if sae is None and {"SAE", "random", *FEATURE_PROBE_SOURCES} & set(chosen):
        raise ValueError("the SAE, random and sae_k_sparse_probes sources need an SAE (the "
                         "control matches its width and sparsity); pass sae=..., or "
                         "sources=('neurons', 'probes')")
    return chosen


class FeatureAlignment:
    """Honest alignment as an estimator: :meth:`fit` chooses, :meth:`score` scores.

    ``fit(study, rows)`` computes every source's statistics on the select rows (and fits the
    random control and the probes there); ``score(study, rows)`` computes them on other rows
    and returns an :class:`AlignmentRun` whose honest tables use features chosen on the
    select rows.

    Args:
        sae: the SAE whose features are aligned (anything with ``encode``, ``hook_name``,
            ``d_in``, ``d_sae``, ``device`` and optionally ``normalizer``). ``None`` aligns
            neurons and probes only, at ``hook_name``.
        metric: metric that chooses the best feature per attribute (one of
            :data:`mechrec.alignment.METRICS`; the paper uses ``correlation``).
        sources: feature sources to compare, from :data:`ALL_SOURCES` (default
            :data:`SOURCES`; add ``"probes"`` for logistic probes, ``"mean_difference"``
            for difference-of-means directions, ``"k_sparse_probes"`` for k-sparse probes and
            ``"pca"`` for the best principal component per attribute; see
            :data:`PROBE_SOURCES`; ``"sae_k_sparse_probes"`` for k-sparse probes on the SAE's
            features, :mod:`mechrec.feature_probes`).
        seed: seed of the random control and of the probes.
        unit: ``"positions"`` (every real position is a data point, labelled by its input
            token) or ``"tokens"`` (each distinct token of a row set is one data point, its
            activations averaged over its positions; the bootstrap then resamples tokens).
            The random control is fitted on positions either way.
        hook_name: the hook to read when ``sae`` is ``None``.
        probe_rows: fit probes on at most this many select rows (``None``: all).
        probe_k: neurons per k-sparse probe (``k_sparse_probes``), and SAE features per
            probe of ``sae_k_sparse_probes`` (default ``min(mechrec.probes.DEFAULT_K, d)``).
        pca_components: principal components the ``pca`` source chooses from (default
            ``min(mechrec.probes.DEFAULT_N_COMPONENTS, d)``).
    """

    def __init__(self, sae: Any = None, *, metric: str = "correlation",
                 sources: Sequence[str] = SOURCES, seed: int = 0, unit: str = "positions",
                 hook_name: str | None = None, probe_rows: int | None = 50_000,
                 probe_k: int | None = None, pca_components: int | None = None) -> None:
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
        if unit not in UNITS:
            raise ValueError(f"unknown unit {unit!r}; choose one of {', '.join(UNITS)}")
        self.sources = _check_sources(sources, sae)
        if sae is None and hook_name is None:
            raise ValueError("without an SAE, name the hook to align: hook_name=...")
        self.sae = sae
        self.metric = metric
        self.seed = int(seed)
        self.unit = unit
        self.hook_name = str(sae.hook_name if sae is not None else hook_name)
        self.probe_rows = probe_rows
        self.probe_options: dict[str, dict[str, Any]] = {
            "k_sparse": {} if probe_k is None else {"k": probe_k},
            "pca": {} if pca_components is None else {"n_components": pca_components},
        }
        self.notes: list[str] = []
        self.stats_: dict[str, dict[str, AlignmentStats]] | None = None
        self.select_rows_: str | None = None
        self._encoded_rows: dict[str, Any] = {}

    # ------------------------------------------------------------------------------ helpers
    def _attributes(self, study: Study, attributes: Any
                    ) -> tuple[pd.DataFrame | None, pd.Series | None]:
        if isinstance(attributes, RowAttributes):
            if self.unit == "tokens":
                raise ValueError(f"{attributes.name} label activation rows, not tokens: align "
                                 "them with unit='positions'")
            return None, None  # the groups follow from the first row set's labels
        if attributes is None:
            table, groups = study.attribute_table()
        elif isinstance(attributes, tuple):
            table, groups = attributes
        else:
            table, groups = attributes, None
        return check_attribute_table(table, groups, int(study.model.cfg.d_vocab))

    def _features(self, part: str, acts: ActivationSet) -> dict[str, Any]:
        """Each source's features on one row set, in the chosen unit (before the control)."""
        by_token = self.unit == "tokens"

        def unit_rows(values: Any) -> Any:
            return group_means(values, acts.token)[1] if by_token else values

        out: dict[str, Any] = {}
        sparse = self._encoded(part, acts)
        if "SAE" in self.sources:
            if part == "select":
                self._active_rate = sparse.getnnz(axis=0) / max(sparse.shape[0], 1)
            out["SAE"] = unit_rows(sparse)
        raw = acts.activations.detach().cpu().numpy().astype(np.float32, copy=False)
        if "neurons" in self.sources:
            out["neurons"] = unit_rows(raw)
        for source in PROBE_SOURCES:
            if source not in self.sources:
                continue
            probes = self.probes_[source]
            out[source] = unit_rows(np.stack(
                [probes.probes[a].decision_function(raw) for a in self.probe_names_[source]],
                axis=1).astype(np.float32))
        for source in FEATURE_PROBE_SOURCES:
            if source in self.sources:
                out[source] = unit_rows(self.probes_[source].decision_matrix(
                    sparse, self.probe_names_[source]))
        self._encoded_rows.pop(part, None)  # each row set is encoded once, then released
        return out

    def _encoded(self, part: str, acts: ActivationSet) -> Any:
        """The SAE's sparse features of a row set (encoded once per fit / score), or
        ``None`` when no source needs them."""
        if not {"SAE", *FEATURE_PROBE_SOURCES} & set(self.sources):
            return None
        if part not in self._encoded_rows:
            self._encoded_rows[part] = encode_sparse(self.sae, acts.activations)
        return self._encoded_rows[part]

    def _row_labels(self, rows: str, acts: ActivationSet) -> pd.DataFrame:
        """One label row per activation row (row attributes, or each row's token's)."""
        if self.row_attributes_ is not None:
            known = None if self.groups_ is None else list(self.groups_.index)
            return self.row_attributes_.table(rows, acts, known)
        return token_attributes(acts.token, self.table_)

    def _labels(self, rows: str, acts: ActivationSet) -> pd.DataFrame:
        """The labels of the data points of the chosen unit (positions or tokens)."""
        if self.unit == "tokens":
            return token_attributes(np.unique(acts.token.cpu().numpy()), self.table_)
        return self._row_labels(rows, acts)

    # ------------------------------------------------------------------------------ fit
    def fit(self, study: Study, rows: str, *, attributes: Any = None) -> FeatureAlignment:
        """Compute every source's statistics on row set ``rows`` (the rows that choose).

        Args:
            study: the model and its row sets (:class:`~mechrec.study.Study`).
            rows: the row set that chooses the best feature per attribute.
            attributes: ``(table, groups)`` or a table overriding ``study.attribute_table()``,
                or :class:`~mechrec.study.RowAttributes` labelling activation rows directly
                (e.g. a planted truth per event; ``unit="positions"`` only).

        Returns:
            ``self``, fitted.
        """
        study = check_study(study)
        if self.sae is not None:
            check_sae_fits(study.model, self.sae)
        self.row_attributes_ = attributes if isinstance(attributes, RowAttributes) else None
        self.table_, self.groups_ = self._attributes(study, attributes)
        acts = study.activations(rows, self.hook_name)
        if self.sae is not None:
            if acts.activations.shape[1] != self.sae.d_in:
                raise ValueError(f"the SAE expects {self.sae.d_in}-dimensional activations at "
                                 f"{self.hook_name!r} but row set {rows!r} has "
                                 f"{acts.activations.shape[1]}")
            note = normaliser_note(self.sae, acts.activations)
            if note:
                self.notes.append(note)
        labels = self._labels(rows, acts)
        if self.row_attributes_ is not None:
            self.groups_ = self.row_attributes_.attribute_groups(list(labels.columns))
        self.probes_: dict[str, Any] = {}
        self.probe_names_: dict[str, list[str]] = {}
        for source, method in PROBE_SOURCES.items():
            if source not in self.sources:
                continue
            from mechrec.probes import fit_probes

            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                self.probes_[source] = fit_probes(
                    acts, self._row_labels(rows, acts) if self.unit == "tokens" else labels,
                    test_fraction=0.0,
                    max_train_rows=self.probe_rows, seed=self.seed, hook_name=self.hook_name,
                    method=method, **self.probe_options.get(method, {}))
            self.notes.extend(f"{source}, {rows} rows: {w.message}" for w in caught)
            self.probe_names_[source] = list(self.probes_[source].probes)
        self._encoded_rows: dict[str, Any] = {}
        for source in FEATURE_PROBE_SOURCES:
            if source not in self.sources:
                continue
            from mechrec.feature_probes import fit_feature_probes

            fitted = fit_feature_probes(
                self._encoded("select", acts),
                self._row_labels(rows, acts) if self.unit == "tokens" else labels,
                k=self.probe_options["k_sparse"].get("k"), max_train_rows=self.probe_rows,
                seed=self.seed)
            self.notes.extend(f"{source}, {rows} rows: probe for {a!r} skipped: {why}"
                              for a, why in fitted.skipped.items())
            self.probes_[source] = fitted
            self.probe_names_[source] = list(fitted.probes)
        self.stats_ = {s: {} for s in self.sources}
        where = f"select rows ({rows})"
        for source, values in self._features("select", acts).items():
            self.stats_[source]["select"] = _stats(
                f"{source}, {where}", self.notes, values, labels,
                self.probe_names_.get(source))
        if "random" in self.sources:
            inputs = _normalised(self.sae, acts.activations)
            rate = (self._active_rate if self.unit == "tokens"
                    else self.stats_["SAE"]["select"].feature_active_rate)
            self.projection_ = RandomProjection.fit(inputs, self.sae.d_sae, seed=self.seed,
                                                    active_fraction=rate)
            lazy = self._control(inputs, acts)
            self.stats_["random"]["select"] = _stats(f"random control, {where}", self.notes,
                                                     lazy, labels)
        self.select_rows_ = rows
        return self

    def _control(self, inputs: np.ndarray, acts: ActivationSet) -> Any:
        lazy = LazyActivations(inputs, self.projection_, self.projection_.width,
                               column_transform=self.projection_.columns)
        return group_means(lazy, acts.token)[1] if self.unit == "tokens" else lazy

    # ------------------------------------------------------------------------------ score
    def score(self, study: Study, rows: str) -> AlignmentRun:
        """Score the features chosen by :meth:`fit` on row set ``rows`` (other rows).

        Returns:
            :class:`AlignmentRun` with every source's statistics on both row sets and the
            score rows' values of the chosen features (for :meth:`AlignmentRun.bootstrap`).

        Raises:
            ValueError: not fitted, or ``rows`` is the row set that chose the features.
        """
        if self.stats_ is None:
            raise ValueError("call fit(study, rows) on the rows that choose features first")
        if rows == self.select_rows_:
            raise ValueError(f"fit and score both use row set {rows!r}: choose the best "
                             "features on other rows than those that score them")
        study = check_study(study)
        acts = study.activations(rows, self.hook_name)
        labels = self._labels(rows, acts)
        where = f"score rows ({rows})"
        scored: dict[str, Any] = {}
        for source, values in self._features("score", acts).items():
            self.stats_[source]["score"] = _stats(
                f"{source}, {where}", self.notes, values, labels,
                self.probe_names_.get(source))
            scored[source] = values
        if "random" in self.sources:
            lazy = self._control(_normalised(self.sae, acts.activations), acts)
            self.stats_["random"]["score"] = _stats(f"random control, {where}", self.notes,
                                                    lazy, labels)
            scored["random"] = lazy
        stats = {s: self.stats_[s] for s in self.sources}
        groups = (np.unique(acts.token.cpu().numpy()) if self.unit == "tokens"
                  else np.asarray(study.row_groups(rows))[acts.sequence_index.cpu().numpy()])
        kept = scored_rows(stats, {s: scored[s] for s in self.sources}, labels, groups,
                           self.metric)
        return AlignmentRun(stats=stats, groups=self.groups_, metric=self.metric,
                            hook_name=self.hook_name, select_part=str(self.select_rows_),
                            score_part=rows, seed=self.seed, unit=self.unit,
                            notes=list(self.notes), scored=kept)


def align(study: Study, sae: Any = None, *, select: str, score: str,
          metric: str = "correlation", attributes: Any = None,
          sources: Sequence[str] = SOURCES, seed: int = 0, unit: str = "positions",
          hook_name: str | None = None, probe_k: int | None = None,
          pca_components: int | None = None) -> AlignmentRun:
    """Honest alignment in one call: choose on ``select`` rows, score on ``score`` rows.

    ``FeatureAlignment(sae, ...).fit(study, select).score(study, score)``; see
    :class:`FeatureAlignment` for the arguments.

    >>> run = align(study, sae, select="fit", score="eval")
    >>> run.summary()                        # SAE vs neurons vs random, honest and in-sample
    >>> run.difference_table(run.bootstrap(200))   # paired intervals over groups

    Raises:
        ValueError: ``select == score``, the SAE does not fit the model, unknown sources,
            metric or unit, a missing row set.
    """
    if select == score:
        raise ValueError(f"select and score are both {select!r}: choose the best features on "
                         "other rows than those that score them")
    estimator = FeatureAlignment(sae, metric=metric, sources=sources, seed=seed, unit=unit,
                                 hook_name=hook_name, probe_k=probe_k,
                                 pca_components=pca_components)
    return estimator.fit(study, select, attributes=attributes).score(study, score)

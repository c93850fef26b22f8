"""Attribute alignment of a trained GPTRec run and an SAE: the paper's section 4.2 and 7.

Thin glue over :mod:`mechrec.alignment`. Every activation row (one real position of one user's
sequence) is labelled by the item at that position: its genres, its release decade, and any
custom item predicates (title contains "Star Wars", release year in a range). Three feature sets
are compared on the same rows and labels:

- ``SAE``: the SAE's features (``NormalizedSAE.encode`` of the raw activations);
- ``neurons``: the raw activations at the SAE's hook (the paper's section 7.1.3 baseline);
- ``random``: a random-projection control, as many random directions as the SAE has features,
  through a ReLU on the same normalised inputs, with each direction's firing rate matched to the
  SAE feature of the same index (so the control is as sparse as the SAE).

Honest selection. "The best feature for a genre" is chosen on the SAE-training users' rows
(``select``, split part ``sae_train``) and scored on the test users' rows (``score``, part
``test``). Picking the best of 2048 candidates and scoring it on the same rows flatters a wide
dictionary against 64 neurons; the tables report that in-sample variant (select and score on
test) beside the honest one so the difference is visible.

Entry points:

- :func:`align` -> :class:`AlignmentRun`, whose methods build the per-attribute table (paper
  Table 2), the SAE vs neurons vs control summary (Fig. 4 / 7.1.3), the top-feature profiles
  (Fig. 2), monosemanticity and top features; :meth:`AlignmentRun.write` saves them.
- :func:`feature_examples`: the top activating positions of a feature with the titles of the
  items before it; :func:`feature_p_top_k`: p_top-k of features for genres and predicates.
- :func:`title_contains`, :func:`year_between`: item predicates.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from mechrec.activations import ActivationSet
from mechrec.alignment import (
    MEAN_ROW,
    METRICS,
    AlignmentBootstrap,
    AlignmentStats,
    DegenerateInputWarning,
    LazyActivations,
    RandomProjection,
    alignment_stats,
    best_feature_table,
    best_features,
    bootstrap_alignment,
    feature_profiles,
    group_means,
    monosemanticity,
    p_top_k_table,
    selected_columns,
    token_attributes,
    top_examples,
    top_features,
)
from mechrec.hooks import validate_hook_name
from mechrec.saes import NormalizedSAE
from mechrec_recsys.checkpoint import atomic_write_bytes, atomic_write_json
from mechrec_recsys.configs import UNITS, parse_year_range
from mechrec_recsys.experiment import Experiment

__all__ = [
    "BOOTSTRAP_PAIRS",
    "GROUPS",
    "REPORTED_METRICS",
    "SELECTIONS",
    "SOURCES",
    "UNITS",
    "AlignmentRun",
    "ItemPredicate",
    "ScoredRows",
    "align",
    "check_sae_fits",
    "encode_sparse",
    "feature_examples",
    "feature_p_top_k",
    "item_table",
    "parse_year_range",
    "title_contains",
    "token_attribute_table",
    "token_predicate_table",
    "year_between",
]

SOURCES: tuple[str, ...] = ("SAE", "neurons", "random")
"""The feature sets compared: SAE features, raw neurons at the hook, random-projection control."""

SELECTIONS: tuple[str, ...] = ("honest", "in-sample")
"""``honest``: choose on the select part, score on the score part; ``in-sample``: choose and
score on the score part (the paper's procedure, flattering to wide dictionaries)."""

GROUPS: tuple[str, ...] = ("genre", "decade", "custom")
"""Kinds of attributes: catalog genres (and other catalog attributes), release decades, custom
item predicates."""

REPORTED_METRICS: tuple[str, ...] = ("correlation", "roc_auc", "sensitivity")
"""Metrics shown for every chosen feature (the paper's Table 2 columns)."""

BOOTSTRAP_PAIRS: tuple[tuple[str, str], ...] = (
    ("SAE", "neurons"), ("SAE", "random"), ("neurons", "random"))
"""Paired differences reported by :meth:`AlignmentRun.difference_table` (first - second)."""

ItemPredicate = Callable[[pd.DataFrame], Any]
"""Maps the :func:`item_table` (one row per token) to one boolean per token."""

_ENCODE_ROWS = 4096


# ------------------------------------------------------------------------------ item labels
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


# ------------------------------------------------------------------------------ features
def check_sae_fits(experiment: Experiment, sae: NormalizedSAE,
                   activations: ActivationSet | None = None) -> None:
    """Raise ``ValueError`` unless ``sae`` reads a hook of the run's model with its width.

    Checks that the model has ``sae.hook_name`` (suggesting close names otherwise) and, when
    ``activations`` at that hook are given, that their width equals ``sae.d_in``.
    """
    try:
        validate_hook_name(experiment.model, sae.hook_name)
    except ValueError as exc:
        raise ValueError(f"the SAE reads hook {sae.hook_name!r}, which this run's model does "
                         f"not have: {exc}") from None
    if activations is not None and activations.activations.shape[1] != sae.d_in:
        raise ValueError(
            f"the SAE expects {sae.d_in}-dimensional activations at {sae.hook_name!r} but this "
            f"run's model has {activations.activations.shape[1]} there: the SAE was trained on "
            "another model; train one on this run (mechrec.saes.train_sae on "
            "Experiment.activations('sae_train', hook))")


def _normaliser_note(sae: NormalizedSAE, raw: torch.Tensor) -> str | None:
    """A note when the SAE's normaliser clearly does not fit these activations."""
    if sae.normalizer.mode == "none":
        return None
    with torch.no_grad():
        z = sae.normalizer.normalize(raw[: 50_000].to(torch.float32))
        mean = float(z.mean(dim=0).abs().max())
        std = z.std(dim=0)
    lo, hi = float(std.min()), float(std.max())
    if mean > 1.0 or lo < 0.25 or hi > 4.0:
        return (f"the SAE's normaliser does not match these activations (after normalising: "
                f"largest |mean| {mean:.2f}, std range {lo:.2f}-{hi:.2f}): was the SAE trained "
                "on this run's model?")
    return None


def encode_sparse(sae: NormalizedSAE, raw: torch.Tensor, chunk_rows: int = _ENCODE_ROWS
                  ) -> sp.csr_matrix:
    """SAE features of raw activations ``(N, d_in)`` as a sparse ``(N, d_sae)`` float32 matrix."""
    parts = []
    with torch.no_grad():
        for r0 in range(0, raw.shape[0], chunk_rows):
            chunk = raw[r0:r0 + chunk_rows].to(sae.device, torch.float32)
            feats = sae.encode(chunk).float().cpu().numpy()
            parts.append(sp.csr_matrix(feats))
    if not parts:
        return sp.csr_matrix((0, sae.d_sae), dtype=np.float32)
    return sp.vstack(parts, format="csr")


def _normalised(sae: NormalizedSAE, raw: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return sae.normalizer.normalize(raw.to(torch.float32)).cpu().numpy()


# ------------------------------------------------------------------------------ the run
@dataclass(frozen=True, eq=False)
class ScoredRows:
    """What the bootstrap of :meth:`AlignmentRun.bootstrap` resamples: the score rows' values
    of the features chosen on the select rows, their attributes and their users.

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
    users: np.ndarray
    """``(N,)`` raw user id of each score row: the bootstrap resamples whole users (with
    ``unit="items"`` each row is one item and this holds its token: items are resampled)."""
    metric: str
    """Metric that chose the features."""

    @property
    def n_rows(self) -> int:
        """Number of score rows N."""
        return int(self.labels.shape[0])

    @property
    def n_users(self) -> int:
        """Number of distinct users among the score rows."""
        return int(pd.unique(self.users).size)


def scored_rows(stats: Mapping[str, Mapping[str, AlignmentStats]],
                score_sources: Mapping[str, Any], labels: pd.DataFrame, users: np.ndarray,
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
                      labels=labels.reset_index(drop=True), users=np.asarray(users),
                      metric=metric)


@dataclass(eq=False)
class AlignmentRun:
    """Alignment statistics of SAE features, neurons and a random control on two row sets.

    Build it with :func:`align`. ``stats[source][part]`` holds the
    :class:`~mechrec.alignment.AlignmentStats` of ``source`` (one of :data:`SOURCES`) on the
    ``"select"`` rows (SAE-training users) or the ``"score"`` rows (test users).
    """

    stats: dict[str, dict[str, AlignmentStats]]
    """source -> {"select": stats on the select part, "score": stats on the score part}."""
    groups: pd.Series
    """attribute -> group (``genre``, ``decade``, ``custom``)."""
    metric: str
    """Metric that chooses the best feature per attribute."""
    hook_name: str
    """Hook the SAE reads."""
    select_part: str = "sae_train"
    """Split part whose rows choose features."""
    score_part: str = "test"
    """Split part whose rows score them."""
    seed: int = 0
    """Seed of the random-projection control."""
    unit: str = "positions"
    """What one data point is: a position (``"positions"``) or a distinct item whose
    activations are averaged over its positions (``"items"``); see :func:`align`."""
    notes: list[str] = field(default_factory=list)
    """Warnings collected while computing (degenerate features or attributes, ...)."""
    scored: ScoredRows | None = None
    """The score rows' values of the honestly chosen features, for :meth:`bootstrap`
    (``None`` when the run was built without them)."""

    @property
    def attribute_names(self) -> pd.Index:
        """Attribute names, in table order."""
        return self.stats["SAE"]["score"].attribute_names

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
        frame["feature"] = pd.array(chosen.tolist(), dtype="Int64")
        for m in self.reported:
            frame[m] = honest[m].to_numpy(dtype=float)
        frame[f"{self.metric}_on_select"] = on_select
        frame["feature_in_sample"] = pd.array(in_sample["feature"].tolist(), dtype="Int64")
        for m in self.reported:
            frame[f"{m}_in_sample"] = in_sample[m].to_numpy(dtype=float)
        frame.index.name = "attribute"
        order = {g: i for i, g in enumerate(GROUPS)}
        frame["_g"] = frame["group"].map(order).fillna(len(GROUPS))
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
        frame["share"] = self.stats["SAE"]["score"].attribute_prevalence
        for source in self.stats:
            table = self.best_table(source, selection)
            frame[f"{source}_feature"] = pd.array(table["feature"].tolist(), dtype="Int64")
            for m in self.reported:
                frame[f"{source}_{m}"] = table[m].to_numpy(dtype=float)
        frame.index.name = "attribute"
        return frame

    def summary(self) -> pd.DataFrame:
        """SAE vs neurons vs random control, honest and in-sample, per attribute group.

        One row per (group, features, selection) with ``n_features``, ``attributes`` (how many
        have a defined metric), min/mean/max over attributes of the best feature's selecting
        metric, and the means of the other reported metrics (the paper's section 7.1.3 numbers
        and Table 2's mean row). Groups: each present group, plus ``all`` when there are
        several.
        """
        present = [g for g in GROUPS if (self.groups == g).any()]
        group_sets: list[tuple[str, pd.Index]] = [
            (g, self.groups.index[self.groups == g]) for g in present]
        if len(present) > 1:
            group_sets.append(("all", self.groups.index))
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
        order = {g: i for i, g in enumerate([*GROUPS, "all"])}
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
        """Resample the test users to get the uncertainty of the honest scores.

        The best feature per attribute stays the one chosen on the select rows; whole score
        users are drawn with replacement (a user's positions are correlated) and every source is
        scored on the same resamples, so differences between sources are paired. See
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
                             "mechrec_recsys.alignment.align(...)")
        if self.scored.metric != self.metric:
            raise ValueError(f"the score rows kept features chosen by {self.scored.metric!r} but "
                             f"the run reports {self.metric!r}: rebuild it with align(metric=...)")
        rows = self.scored
        return bootstrap_alignment(
            {s: rows.columns[s] for s in self.stats},
            rows.labels,
            {s: rows.selections[s] for s in self.stats},
            groups=rows.users,
            feature_names={s: rows.features[s] for s in self.stats},
            metrics=list(self.reported if metrics is None else metrics),
            threshold=self.stats["SAE"]["score"].threshold,
            n_resamples=n_resamples,
            seed=seed,
        )

    def _group_sets(self) -> list[tuple[str, pd.Index]]:
        present = [g for g in GROUPS if (self.groups == g).any()]
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
        out["feature"] = pd.array([None if pd.isna(f) else int(f) for f in out["feature"]],
                                  dtype="Int64")
        out["confidence"] = confidence
        return out

    def difference_table(self, boot: AlignmentBootstrap, confidence: float = 0.95,
                         pairs: Sequence[tuple[str, str]] = BOOTSTRAP_PAIRS) -> pd.DataFrame:
        """Paired intervals of ``features - versus`` (e.g. SAE - neurons) on the same
        resamples, per attribute and per group mean; ``share_positive`` is the share of
        resamples where the difference is > 0."""
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
                      f"the {self.select_part} users), whole {self.score_part} users resampled, "
                      "all feature sets on the same resamples (paired differences)",
            "n_resamples": boot.n_resamples,
            "confidence": confidence,
            "seed": boot.seed,
            "resampled_unit": f"{self.score_part} user" if boot.grouped else "row",
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

    def tables(self, top_k: int = 5) -> dict[str, pd.DataFrame]:
        """Every table :meth:`write` saves, by file stem."""
        return {
            "sae": self.long_table("SAE"),
            "neurons": self.long_table("neurons"),
            "control": self.long_table("random"),
            "per_genre": self.per_attribute_table("SAE"),
            "summary": self.summary(),
            "comparison": self.comparison("honest"),
            "profiles": self.profiles("SAE"),
            "monosemanticity": self.monosemanticity("SAE"),
            "top_features": self.top_features("SAE", top_k),
        }

    def write(self, out_dir: str | Path, *, top_k: int = 5,
              provenance: Mapping[str, Any] | None = None,
              bootstrap: AlignmentBootstrap | int | None = None,
              confidence: float = 0.95) -> dict[str, Path]:
        """Write every table as ``STEM.csv`` and ``STEM.parquet`` plus ``alignment.json``.

        With ``bootstrap`` (a result of :meth:`bootstrap`, or a number of resamples > 0) also
        ``bootstrap_intervals`` (:meth:`interval_table`), ``bootstrap_differences``
        (:meth:`difference_table`) and ``bootstrap.json`` (:meth:`bootstrap_meta`).

        Files are written atomically. Returns stem (and ``"alignment"``, ``"bootstrap"``) ->
        path of the CSV (the JSON for those two).
        """
        out = Path(out_dir)
        if isinstance(bootstrap, bool):
            raise ValueError("bootstrap must be an AlignmentBootstrap, a number of resamples "
                             "or None")
        if isinstance(bootstrap, (int, np.integer)):
            if bootstrap < 0:
                raise ValueError(f"bootstrap must be >= 0 resamples, got {bootstrap}")
            bootstrap = self.bootstrap(int(bootstrap), seed=self.seed) if bootstrap else None
        tables = self.tables(top_k)
        if bootstrap is not None:
            tables["bootstrap_intervals"] = self.interval_table(bootstrap, confidence)
            tables["bootstrap_differences"] = self.difference_table(bootstrap, confidence)
        out.mkdir(parents=True, exist_ok=True)
        written: dict[str, Path] = {}
        for stem, table in tables.items():
            frame = table.reset_index() if _has_named_index(table) else table
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
            "rows": {part: self.stats["SAE"][part].n_rows for part in ("select", "score")},
            "features": {s: self.stats[s]["score"].n_features for s in self.stats},
            "seed": self.seed,
            "unit": self.unit,
            "attributes": {str(a): str(g) for a, g in self.groups.items()},
            "notes": self.notes,
            **({"provenance": dict(provenance)} if provenance else {}),
        }
        atomic_write_json(out / "alignment.json", _json_safe(meta))
        written["alignment"] = out / "alignment.json"
        if bootstrap is not None:
            atomic_write_json(out / "bootstrap.json",
                              _json_safe(self.bootstrap_meta(bootstrap, confidence)))
            written["bootstrap"] = out / "bootstrap.json"
        return written


def _has_named_index(frame: pd.DataFrame) -> bool:
    return frame.index.name is not None


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return value


def _stats(name: str, notes: list[str], activations: Any, labels: pd.DataFrame
           ) -> AlignmentStats:
    """``alignment_stats`` with its degenerate-input warning turned into a note."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DegenerateInputWarning)
        stats = alignment_stats(activations, labels, metrics=METRICS)
    for w in caught:
        if issubclass(w.category, DegenerateInputWarning):
            notes.append(f"{name}: {w.message}")
        else:
            warnings.warn(w.message, w.category, stacklevel=2)
    return stats


def align(
    experiment: Experiment,
    sae: NormalizedSAE,
    *,
    metric: str = "correlation",
    decades: bool = True,
    names: Sequence[str] | None = None,
    predicates: Mapping[str, ItemPredicate] | None = None,
    seed: int = 0,
    select_part: str = "sae_train",
    score_part: str = "test",
    unit: str = "positions",
) -> AlignmentRun:
    """Alignment of an SAE's features, the raw neurons and a random control with item labels.

    Args:
        experiment: the trained run (its split and model).
        sae: an SAE trained on a hook of that model (``sae.hook_name``).
        metric: metric that chooses the best feature per attribute (one of
            :data:`mechrec.alignment.METRICS`; the paper uses ``correlation``).
        decades: label rows with the item's release decade too.
        names: catalog attributes to use (default: every genre).
        predicates: custom item predicates, e.g. ``{"Star Wars": title_contains("Star Wars")}``.
        seed: seed of the random-projection control.
        select_part: split part whose rows choose the best features (SAE-training users).
        score_part: split part whose rows score them (test users).
        unit: ``"positions"`` (the paper: every position of every sequence is a data point,
            labelled by its item) or ``"items"`` (each distinct item of a part is one data
            point, its activations averaged over the positions where it occurs; the bootstrap
            then resamples items). The random control is fitted on positions either way.

    Returns:
        :class:`AlignmentRun` with statistics of ``SAE``, ``neurons`` and ``random`` on both
        parts.

    Raises:
        ValueError: the SAE does not fit the model, a part is missing, or bad arguments.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    if select_part == score_part:
        raise ValueError(f"select_part and score_part are both {select_part!r}: choose the "
                         "best features on other rows than those that score them")
    if unit not in UNITS:
        raise ValueError(f"unknown unit {unit!r}; choose one of {', '.join(UNITS)}")
    check_sae_fits(experiment, sae)
    hook = sae.hook_name
    acts = {"select": experiment.activations(select_part, hook),
            "score": experiment.activations(score_part, hook)}
    check_sae_fits(experiment, sae, acts["select"])
    notes: list[str] = []
    note = _normaliser_note(sae, acts["select"].activations)
    if note:
        notes.append(note)
    token_table, groups = token_attribute_table(experiment, names=names, decades=decades,
                                                predicates=predicates)
    labels = {part: token_attributes(a.token, token_table) for part, a in acts.items()}

    by_item = unit == "items"
    keys: dict[str, np.ndarray] = {}
    if by_item:
        for part, a in acts.items():
            keys[part] = np.unique(a.token.cpu().numpy())
            labels[part] = token_attributes(keys[part], token_table)

    def unit_rows(part: str, values: Any) -> Any:
        """The rows of ``values`` in the chosen unit (item means for ``items``)."""
        return group_means(values, acts[part].token)[1] if by_item else values

    stats: dict[str, dict[str, AlignmentStats]] = {s: {} for s in SOURCES}
    active_rate = None
    for part, a in acts.items():
        where = f"{part} rows ({select_part if part == 'select' else score_part})"
        sparse = encode_sparse(sae, a.activations)
        if part == "select":
            active_rate = sparse.getnnz(axis=0) / max(sparse.shape[0], 1)
        features = unit_rows(part, sparse)
        stats["SAE"][part] = _stats(f"SAE, {where}", notes, features, labels[part])
        raw = unit_rows(part, a.activations.detach().cpu().numpy().astype(np.float32,
                                                                          copy=False))
        stats["neurons"][part] = _stats(f"neurons, {where}", notes, raw, labels[part])
        if part == "score":
            score_features, score_raw = features, raw
    # The control sees what the SAE sees (normalised inputs) and fires as often as the SAE's
    # features do on the select positions, direction by direction.
    inputs = {part: _normalised(sae, a.activations) for part, a in acts.items()}
    projection = RandomProjection.fit(
        inputs["select"], sae.d_sae, seed=seed,
        active_fraction=active_rate if by_item else stats["SAE"]["select"].feature_active_rate)
    lazy_score = None
    for part in acts:
        where = f"{part} rows ({select_part if part == 'select' else score_part})"
        lazy = unit_rows(part, LazyActivations(inputs[part], projection, projection.width,
                                               column_transform=projection.columns))
        stats["random"][part] = _stats(f"random control, {where}", notes, lazy, labels[part])
        if part == "score":
            lazy_score = lazy
    score = acts["score"]
    users = keys["score"] if by_item else experiment.part(score_part).users[
        score.sequence_index.cpu().numpy()]
    kept = scored_rows(stats, {"SAE": score_features, "neurons": score_raw,
                               "random": lazy_score}, labels["score"], users, metric)
    return AlignmentRun(stats=stats, groups=groups, metric=metric, hook_name=hook,
                        select_part=select_part, score_part=score_part, seed=seed, unit=unit,
                        notes=notes, scored=kept)


# ------------------------------------------------------------------------------ examples
def _check_feature(sae: NormalizedSAE, feature: int) -> int:
    if isinstance(feature, bool) or not isinstance(feature, (int, np.integer)):
        raise ValueError(f"feature must be an integer, got {feature!r}")
    if not 0 <= int(feature) < sae.d_sae:
        raise ValueError(f"feature {feature} is out of range: this SAE has features "
                         f"0..{sae.d_sae - 1}")
    return int(feature)


def feature_examples(
    experiment: Experiment,
    sae: NormalizedSAE,
    feature: int,
    *,
    k: int = 10,
    part: str = "sae_train",
    context: int = 5,
) -> pd.DataFrame:
    """The top ``k`` activating positions of one SAE feature, with the items before them.

    Args:
        experiment: the run.
        sae: its SAE.
        feature: feature index.
        k: number of positions.
        part: split part whose rows are searched.
        context: how many preceding items' titles to show.

    Returns:
        DataFrame with ``rank, activation, user, position, item_id, title, year, genres`` and
        ``context`` (the titles of up to ``context`` preceding items, oldest first, joined by
        `` | ``). Only positions with a positive activation are kept.
    """
    feature = _check_feature(sae, feature)
    if context < 0:
        raise ValueError(f"context must be >= 0, got {context}")
    check_sae_fits(experiment, sae)
    acts = experiment.activations(part, sae.hook_name)
    check_sae_fits(experiment, sae, acts)
    features = encode_sparse(sae, acts.activations)
    items = item_table(experiment)
    seq_index = acts.sequence_index.cpu().numpy()
    position = acts.position.cpu().numpy()
    token = acts.token.cpu().numpy()
    sequences = experiment.part(part).sequences
    users = experiment.part(part).users
    n_ctx = experiment.model.cfg.n_ctx
    titles = items["title"].to_numpy()

    def describe(rows: np.ndarray) -> pd.DataFrame:
        before = []
        for r in rows:
            seq = np.asarray(sequences[seq_index[r]])[-n_ctx:]
            p = int(position[r])
            before.append(" | ".join(titles[seq[max(0, p - context):p]]) if context else "")
        tok = token[rows]
        return pd.DataFrame({
            "user": users[seq_index[rows]],
            "position": position[rows],
            "item_id": items["item_id"].to_numpy()[tok],
            "title": titles[tok],
            "year": items["year"].to_numpy()[tok],
            "genres": items["genres"].to_numpy()[tok],
            "context": before,
        })

    top = top_examples(features, feature, k, context=describe)
    top["year"] = pd.array(top["year"].tolist(), dtype="Int64") if len(top) else pd.array(
        [], dtype="Int64")
    return top.drop(columns="row")


def feature_p_top_k(
    experiment: Experiment,
    sae: NormalizedSAE,
    features: int | Sequence[int],
    *,
    predicates: Mapping[str, ItemPredicate] | None = None,
    decades: bool = True,
    k: int = 100,
    part: str = "sae_train",
) -> pd.DataFrame:
    """p_top-k (paper section 7.2.2) of SAE features for every genre, decade and predicate.

    The share of a feature's top-``k`` activation mass (on ``part``'s rows) that falls on items
    with the attribute. Returns a DataFrame indexed by feature with one column per attribute.
    """
    feats = [features] if isinstance(features, (int, np.integer)) else list(features)
    feats = [_check_feature(sae, f) for f in feats]
    check_sae_fits(experiment, sae)
    acts = experiment.activations(part, sae.hook_name)
    check_sae_fits(experiment, sae, acts)
    table, _ = token_attribute_table(experiment, decades=decades, predicates=predicates)
    labels = token_attributes(acts.token, table).astype(bool)
    return p_top_k_table(encode_sparse(sae, acts.activations), feats, labels, k)

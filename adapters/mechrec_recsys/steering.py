"""Genre steering on a trained GPTRec: the paper's control experiments (sections 4.3 and 8).

Thin glue between an :class:`~mechrec_recsys.experiment.Experiment` (split, model, catalog),
an SAE (:class:`~mechrec.saes.NormalizedSAE`) and the generic core
(:mod:`mechrec.alignment`, :mod:`mechrec.probes`, :mod:`mechrec.steering`, :mod:`mechrec.sweep`).

What it does
------------
1. **Genres.** Requested genre names are matched to the dataset's genre columns exactly, else
   by a key that ignores case, punctuation, spaces and a possessive ``'s``: ``Children`` finds
   ml-100k/ml-1m's ``Children's``, ``scifi`` finds ``Sci-Fi`` (:func:`resolve_genres`). A
   MovieLens genre that this dataset lacks (``IMAX`` on ml-100k) is skipped with a warning; a
   name that is no MovieLens genre and no column of this dataset is an error.
2. **Features.** For each genre, the SAE feature with the largest correlation with the genre
   on the *SAE-training* users' activations (never on the test users, so that picking the best
   of thousands of features does not flatter the SAE); its correlation on the test users'
   activations is reported beside it (:func:`select_genre_features`).
3. **Sweep** (:func:`run_genre_sweep`, paper 8.2.1-8.2.3). At the last position of every test
   user, for each value of the grid (default ``[-10, 10]`` step 1), one curve per genre and
   method:

   - ``sae_feature`` / ``replace``: encode, set the feature, decode and *replace* the activation
     (the paper's procedure, Fig. 8). Even the value the feature already has is not the
     unsteered model here, because the SAE's reconstruction error is dropped: the table carries
     a ``sae_reconstruction`` row (replace with an unedited reconstruction) beside the
     ``unsteered`` one.
   - ``sae_feature`` / ``keep-error``: the same edit with the SAE's error term kept, so only the
     feature's change reaches the model.
   - ``sae_direction`` / ``add``: add ``value x`` the feature's decoder direction scaled to unit
     variance of the SAE-training activations (the SAE side of Fig. 9).
   - ``probe_direction`` / ``add``: add ``value x`` a logistic probe's direction (fitted on the
     SAE-training activations with genre labels), scaled the same way (Fig. 9).
   - ``random_feature`` / ``replace``: the control. The ``replace`` edit of a feature drawn at
     random (seeded) among those alive on the SAE-training users: what moving *some* feature
     does to the genre's share, beside what moving the genre's best feature does.

   Each (curve, value) records the share of every genre in the top-10, NDCG@10 (with its
   standard error over users), HR@10, MRR@10, Coverage@10 and inter-list diversity@10. All
   last-position curves use the core's fast path (prefix once, re-run the last position).
4. **Users** (:func:`user_recommendations`, Fig. 7): before/after top-10 lists with titles and
   genres for chosen users and values; :func:`user_shares` gives every test user's target share
   per value, for paired comparisons between values.
5. **Fast path check** (:func:`compare_fast_naive`): times the last-position fast path against
   full forward passes and reports the largest logit difference.

Results are tidy tables (:class:`GenreSweep`) written as CSV/JSON by :meth:`GenreSweep.save`.
"""

from __future__ import annotations

import math
import re
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mechrec._io import json_safe
from mechrec.activations import ActivationSet
from mechrec.alignment import alignment_stats, best_features, encode_sparse, token_attributes
from mechrec.probes import ProbeSet, fit_probes
from mechrec.saes import NormalizedSAE
from mechrec.steering import FeatureEdit, SAELike, steered_last_logits
from mechrec.steering.validation import (
    check_feature_index,
    check_finite_scores,
    check_finite_values,
)
from mechrec.sweep import (
    SteeringTarget,
    direction_target,
    feature_direction_target,
    feature_target,
    run_sweep,
    value_grid,
)
from mechrec_recsys.checkpoint import atomic_write_bytes, atomic_write_json
from mechrec_recsys.configs import DEFAULT_GENRES, MODES
from mechrec_recsys.data.registry import ML1M_GENRES, MODERN_GENRES
from mechrec_recsys.experiment import Experiment
from mechrec_recsys.metrics import attribute_share_at_k, mean_and_se
from mechrec_recsys.saes import check_sae_fits

__all__ = [
    "DEFAULT_GENRES",
    "EVAL_PART",
    "METHODS",
    "MODES",
    "PAPER_VALUES",
    "SELECT_PART",
    "GenreSweep",
    "compare_fast_naive",
    "example_users",
    "fit_genre_probes",
    "genre_key",
    "genre_targets",
    "monotonicity",
    "resolve_genres",
    "run_genre_sweep",
    "select_genre_features",
    "steering_values",
    "user_recommendations",
    "user_shares",
]

#: The paper's grid of feature values: -10..10 step 1 (section 8.2.1).
PAPER_VALUES: list[float] = value_grid(-10.0, 10.0, 1.0)
#: Steering methods in the tables.
METHODS: tuple[str, ...] = ("sae_feature", "sae_direction", "probe_direction")
#: Users whose activations choose features and fit probes (the paper's SAE users).
SELECT_PART = "sae_train"
#: Users whose top-K lists are scored (their held-out targets give NDCG/HR).
EVAL_PART = "test"

#: Genre labels of every MovieLens release (ml-100k adds "unknown", ml-1m spells
#: "Children's"); a requested name among these but absent from a dataset is skipped.
KNOWN_GENRES: tuple[str, ...] = tuple(
    dict.fromkeys((*ML1M_GENRES, *MODERN_GENRES, "Children's", "unknown"))
)
_SHARE_DECIMALS = 9
#: Stream id of the random control feature's draw (independent of other seeded draws).
_CONTROL_STREAM = 3
_BASELINE = "unsteered"
_RECONSTRUCTION = "sae_reconstruction"
_KEY_COLUMNS = ["curve", "genre", "column", "method", "mode", "feature", "value"]


# --------------------------------------------------------------------------------------------
# Input parsing
# --------------------------------------------------------------------------------------------


def genre_key(name: str) -> str:
    """Matching key of a genre name: lower case, possessive ``'s`` and punctuation removed.

    ``"Children's" -> "children"``, ``"Sci-Fi" -> "scifi"``, ``"Film-Noir" -> "filmnoir"``.
    """
    text = str(name).strip().lower().replace("\u2019", "'")
    text = re.sub(r"'s\b", "", text)
    return re.sub(r"[^0-9a-z]+", "", text)


def resolve_genres(
    requested: Sequence[str], available: Sequence[str], *, warn: bool = True,
    notes: list[str] | None = None,
) -> dict[str, str]:
    """Map requested genre names to the dataset's genre columns.

    A name matches a column exactly, else when both have the same :func:`genre_key` (so
    ``Children`` finds ml-100k's ``Children's``). A name that matches no column but is a
    MovieLens genre (e.g. ``IMAX`` on ml-100k) is skipped with a warning.

    Args:
        requested: genre names as the user wrote them.
        available: the dataset's genre columns.
        warn: warn about skipped genres (unless ``notes`` collects them).
        notes: if given, a line about skipped genres is appended to it instead of warning.

    Returns:
        ``{requested name: dataset column}`` in request order (duplicates collapse).

    Raises:
        ValueError: a name that is neither a column of this dataset nor a MovieLens genre, or
            nothing left to steer.
    """
    names = [str(g).strip() for g in requested if str(g).strip()]
    if not names:
        raise ValueError("no genres given: pass genre names such as 'Action,Sci-Fi'")
    by_key: dict[str, list[str]] = {}
    for column in available:
        by_key.setdefault(genre_key(column), []).append(str(column))
    known_keys = {genre_key(g) for g in KNOWN_GENRES}
    resolved: dict[str, str] = {}
    skipped: list[str] = []
    for name in names:
        if name in available:
            resolved.setdefault(name, name)
            continue
        matches = by_key.get(genre_key(name), [])
        if len(matches) == 1:
            resolved.setdefault(name, matches[0])
        elif len(matches) > 1:
            raise ValueError(
                f"genre {name!r} matches several columns {matches}; give the exact column name"
            )
        elif genre_key(name) in known_keys:
            skipped.append(name)
        else:
            raise ValueError(
                f"unknown genre {name!r}; this dataset's genres are: {', '.join(available)}"
            )
    if skipped:
        message = (f"genres {skipped} are not in this dataset and are skipped (its genres: "
                   f"{', '.join(available)})")
        if notes is not None:
            notes.append(message)
        elif warn:
            warnings.warn(message, stacklevel=2)
    if not resolved:
        raise ValueError(
            f"none of the genres {names} is in this dataset; its genres are: "
            f"{', '.join(available)}"
        )
    return resolved


def steering_values(values: Sequence[float]) -> list[float]:
    """``values`` as a list of floats: at least one, each finite (NaN or infinite is an error).

    Text such as ``"-10:10:1"`` is read by the command line (``mechrec_recsys.cli.params``),
    not here: pass numbers, e.g. :func:`mechrec.sweep.value_grid`'s.
    """
    if isinstance(values, str):
        raise TypeError(f"steering values must be numbers, got the text {values!r}: pass a "
                        "list such as value_grid(-10, 10, 1) or [0, 2, 5]")
    out = check_finite_values(list(values))
    if not out:
        raise ValueError("no steering values given: pass at least one, e.g. [0, 2, 5]")
    return out


# --------------------------------------------------------------------------------------------
# Checks, features and probes
# --------------------------------------------------------------------------------------------


def _labels(experiment: Experiment, acts: ActivationSet, columns: Sequence[str]) -> pd.DataFrame:
    matrix, names = experiment.token_attributes(list(columns))
    return token_attributes(acts.token, matrix, names=names)


def select_genre_features(
    experiment: Experiment,
    sae: NormalizedSAE,
    genres: Mapping[str, str],
    *,
    overrides: Mapping[str, int] | None = None,
    notes: list[str] | None = None,
    control_seed: int = 0,
) -> pd.DataFrame:
    """The best SAE feature per genre by correlation, chosen on the SAE-training users.

    Args:
        experiment: the run.
        sae: an SAE at one of the model's hooks.
        genres: ``{genre: dataset column}`` from :func:`resolve_genres`.
        overrides: ``{genre: feature index}`` to use instead of the automatic choice.
        notes: if given, one line per genre left out (with the reason) is appended to this
            list instead of being warned about.
        control_seed: seeds the draw of each genre's control feature.

    Returns:
        One row per genre with a feature: ``genre, column, feature, chosen_by,
        correlation_select`` (on the SAE-training users), ``correlation_test`` (the same feature
        on the test users), ``prevalence_select``, and ``control_feature``: a feature drawn at
        random (``control_seed``) among those alive on the SAE-training users (active on at
        least one row), other than ``feature``, with its ``control_correlation_select`` - the
        random-feature control of the steering curves. Genres whose correlation is undefined for
        every feature (no positive rows) are dropped with a warning (or a line in ``notes``).

    Raises:
        ValueError: a bad override, or no genre left.
    """
    overrides = dict(overrides or {})
    unknown = [g for g in overrides if g not in genres]
    if unknown:
        raise ValueError(f"feature choices for genres {unknown} that are not being steered "
                         f"({', '.join(genres)})")
    for genre, index in overrides.items():
        overrides[genre] = check_feature_index(sae, index)
    columns = list(dict.fromkeys(genres.values()))
    hook = sae.hook_name
    stats = {}
    for part in (SELECT_PART, EVAL_PART):
        acts = experiment.activations(part, hook)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # dead features: reported by the SAE's own metrics
            stats[part] = alignment_stats(
                encode_sparse(sae, acts.activations), _labels(experiment, acts, columns),
                metrics=("correlation",),
            )
    best = best_features(stats[SELECT_PART], "correlation")
    alive = np.flatnonzero(stats[SELECT_PART].feature_active_rate > 0)
    rng = np.random.default_rng(np.random.SeedSequence([int(control_seed), _CONTROL_STREAM]))
    rows = []
    for genre, column in genres.items():
        a = stats[SELECT_PART].attribute_names.get_loc(column)
        feature = overrides.get(genre, best[column])
        if feature is None:
            message = (f"genre {genre!r} has no SAE feature with a defined correlation on the "
                       "SAE-training users (no item of the genre there?); skipped")
            if notes is not None:
                notes.append(message)
            else:
                warnings.warn(message, stacklevel=2)
            continue
        feature = int(feature)
        candidates = alive[alive != feature]
        control = int(rng.choice(candidates)) if len(candidates) else -1
        rows.append({
            "genre": genre,
            "column": column,
            "feature": feature,
            "chosen_by": "user" if genre in overrides else f"max correlation on {SELECT_PART}",
            "correlation_select": float(stats[SELECT_PART].values["correlation"][feature, a]),
            "correlation_test": float(stats[EVAL_PART].values["correlation"][feature, a]),
            "prevalence_select": float(stats[SELECT_PART].attribute_prevalence[a]),
            "control_feature": control,
            "control_correlation_select": float(
                stats[SELECT_PART].values["correlation"][control, a]) if control >= 0
            else math.nan,
        })
    if not rows:
        raise ValueError(f"no SAE feature could be chosen for any of {list(genres)}")
    return pd.DataFrame(rows)


def fit_genre_probes(
    experiment: Experiment,
    hook_name: str,
    columns: Sequence[str],
    *,
    seed: int = 0,
    max_train_rows: int | None = None,
    notes: list[str] | None = None,
) -> ProbeSet:
    """Logistic probes per genre on the SAE-training users' activations at ``hook_name``.

    Fitted on every SAE-training row (class-balanced), evaluated on the test users' rows; the
    directions are scaled to unit variance of the SAE-training activations (paper 8.2.3).

    Args:
        experiment: the run.
        hook_name: the hook whose activations the probes read.
        columns: genre columns of the catalog.
        seed: seed of the fit (and of the row sample).
        max_train_rows: fit each probe on at most this many SAE-training rows drawn at random
            (:func:`mechrec.probes.fit_probes`); the unit-variance scale and the training
            metrics still use every row. ``None`` (default): fit on every row.
        notes: if given, one line per genre whose probe was skipped (with the reason) is
            appended to it instead of being warned about.

    Raises:
        ValueError: ``max_train_rows`` is not a positive whole number.
    """
    if max_train_rows is not None and (isinstance(max_train_rows, bool)
                                       or not isinstance(max_train_rows, int | np.integer)
                                       or max_train_rows < 1):
        raise ValueError(
            f"max_train_rows must be a positive whole number or None (every row), got "
            f"{max_train_rows!r}"
        )
    columns = list(dict.fromkeys(columns))
    train = experiment.activations(SELECT_PART, hook_name)
    test = experiment.activations(EVAL_PART, hook_name)
    with warnings.catch_warnings():
        if notes is not None:  # reported below from the probes' own status column
            warnings.filterwarnings("ignore", message=r"probe for .* skipped")
        probes = fit_probes(
            train, _labels(experiment, train, columns), columns,
            test_activations=test.activations, test_labels=_labels(experiment, test, columns),
            seed=seed, hook_name=hook_name,
            max_train_rows=None if max_train_rows is None else int(max_train_rows),
        )
    if notes is not None:
        for row in probes.metrics.itertuples(index=False):
            if row.attribute not in probes.probes:
                notes.append(f"probe for {row.attribute!r} {row.status}")
    return probes


@dataclass(frozen=True)
class _Curve:
    genre: str
    column: str
    method: str
    mode: str
    feature: int | None


def genre_targets(
    experiment: Experiment,
    sae: SAELike,
    features: pd.DataFrame,
    *,
    modes: Sequence[str] = MODES,
    probes: ProbeSet | None = None,
    sae_directions: bool = True,
    random_control: bool = False,
) -> tuple[list[SteeringTarget], dict[str, dict[str, Any]]]:
    """Sweep targets for the chosen features (and probes), with what each curve is.

    Args:
        experiment: the run.
        sae: the SAE the features belong to.
        features: :func:`select_genre_features` output.
        modes: SAE feature edit modes to include (``"replace"``, ``"keep-error"``).
        probes: probe directions to include (genres without a probe are skipped with a
            warning), or ``None``.
        sae_directions: include the unit-variance decoder direction of each feature.
        random_control: include, per genre, the same edit (``replace`` mode) of the random
            alive ``control_feature``: how much of a curve any feature edit would give.

    Returns:
        ``(targets, curves)`` where ``curves[name]`` holds ``genre, column, method, mode,
        feature`` for the target of that name.
    """
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise ValueError(f"unknown modes {bad}; choose from {', '.join(MODES)}")
    targets: list[SteeringTarget] = []
    curves: dict[str, dict[str, Any]] = {}

    def add(target: SteeringTarget, curve: _Curve) -> None:
        targets.append(target)
        curves[target.name] = curve.__dict__.copy()

    select_rows = None
    for row in features.itertuples(index=False):
        genre, column, feature = row.genre, row.column, int(row.feature)
        for mode in modes:
            keep = mode == "keep-error"
            name = f"sae{'+error' if keep else ''}:{genre}"
            add(feature_target(sae, feature, name=name, keep_error=keep),
                _Curve(genre, column, "sae_feature", mode, feature))
        control = int(getattr(row, "control_feature", -1))
        if random_control and control >= 0:
            add(feature_target(sae, control, name=f"random-feature:{genre}", keep_error=False),
                _Curve(genre, column, "random_feature", "replace", control))
        if sae_directions:
            if select_rows is None:
                select_rows = experiment.activations(SELECT_PART, sae.hook_name).activations
            add(feature_direction_target(sae, feature, select_rows,
                                         name=f"sae-direction:{genre}"),
                _Curve(genre, column, "sae_direction", "add", feature))
        if probes is not None:
            if column not in probes.probes:
                warnings.warn(f"no probe for {column!r}; its probe curve is skipped",
                              stacklevel=2)
                continue
            add(direction_target(probes.direction(column), name=f"probe:{genre}",
                                 hook_name=sae.hook_name, kind="probe_direction"),
                _Curve(genre, column, "probe_direction", "add", None))
    return targets, curves


# --------------------------------------------------------------------------------------------
# Evaluation plumbing
# --------------------------------------------------------------------------------------------


class _TestBatches:
    """The test users' batches; remembers the current batch's full histories so that each
    collected batch can mask every item its users have seen (not only the last ``n_ctx``).

    :func:`mechrec.sweep.run_sweep` iterates the batches once, in order, and collects every
    result of a batch before drawing the next one, so "the current batch" is well defined.
    """

    def __init__(self, experiment: Experiment, k: int, exclude_seen: bool = True) -> None:
        self.experiment = experiment
        self.sequences = experiment.part(EVAL_PART).sequences
        self.k = k
        self.exclude_seen = exclude_seen
        self.current: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return math.ceil(len(self.sequences) / self.experiment.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        start = 0
        for tokens, mask in self.experiment.batches(EVAL_PART):
            self.current = self.sequences[start:start + tokens.shape[0]]
            start += tokens.shape[0]
            yield tokens, mask
        self.current = None

    def collect(self, logits: torch.Tensor, tokens: torch.Tensor,
                mask: torch.Tensor | None) -> np.ndarray:
        """Top-``k`` tokens of one batch's last-position logits, seen items masked."""
        if self.current is None or len(self.current) != logits.shape[0]:
            raise RuntimeError("top-K collection out of step with the test batches")
        return self.experiment.top_k_from_last_scores(logits, self.current, self.k,
                                                      exclude_seen=self.exclude_seen)


def _evaluator(experiment: Experiment, k: int) -> Callable[[np.ndarray], dict[str, float]]:
    """Scores of test top-K lists: the experiment's metrics plus ``share_se:<genre>``, the
    standard error over users of each genre's share."""
    attributes = experiment.token_attributes()
    matrix, names = attributes

    def evaluate(top_k: np.ndarray) -> dict[str, float]:
        scores = experiment.evaluate_top_k(top_k, k=k, attributes=attributes)
        per_user = attribute_share_at_k(top_k, matrix, k)
        for name, column in zip(names, per_user.T, strict=True):
            scores[f"share_se:{name}"] = mean_and_se(column).se
        return scores

    return evaluate


# --------------------------------------------------------------------------------------------
# The sweep
# --------------------------------------------------------------------------------------------


def monotonicity(table: pd.DataFrame, *, tolerance: float = 0.01) -> pd.DataFrame:
    """How monotonically each curve's target-genre share rises with the steering value.

    Args:
        table: :attr:`GenreSweep.table` (rows with a ``curve`` and a numeric ``value``).
        tolerance: a step down by more than this share counts as a violation beyond noise
            (0.01 = one item in ten for a tenth of the users).

    Returns:
        One row per curve: ``n_steps``, ``decreases`` (steps where the share went down at all,
        e.g. by one item of one user's list),
        ``violations`` (steps down by more than ``tolerance``), ``largest_drop``, ``spearman``
        (rank correlation of share with value), the share at the lowest and highest value.
    """
    rows = []
    steered = table[table["value"].notna() & table["curve"].notna()]
    for curve, group in steered.groupby("curve", sort=False):
        group = group.sort_values("value")
        # equal shares whose means over users differ in the last bits count as equal
        share = np.round(group["target_share"].to_numpy(dtype=float), _SHARE_DECIMALS)
        steps = np.round(np.diff(share), _SHARE_DECIMALS)
        first = group.iloc[0]
        rows.append({
            "curve": curve,
            "genre": first["genre"],
            "method": first["method"],
            "mode": first["mode"],
            "n_steps": int(steps.size),
            "decreases": int((steps < 0).sum()),
            "violations": int((steps < -tolerance).sum()),
            "tolerance": tolerance,
            "largest_drop": float(max(0.0, -steps.min())) if steps.size else 0.0,
            "spearman": float(pd.Series(share).corr(pd.Series(group["value"].to_numpy()),
                                                    method="spearman"))
            if share.size > 1 else float("nan"),
            "share_at_min_value": float(share[0]),
            "share_at_max_value": float(share[-1]),
        })
    return pd.DataFrame(rows)


@dataclass
class GenreSweep:
    """A genre steering sweep's tables.

    Attributes:
        table: one row per (curve, value) plus reference rows. Columns: ``curve`` (target
            name, e.g. ``sae:Sci-Fi``), ``genre`` (as requested), ``column`` (the dataset's genre
            column), ``method`` (``sae_feature``, ``sae_direction``, ``probe_direction``;
            ``unsteered`` / ``sae_reconstruction`` for the reference rows), ``mode``
            (``replace``, ``keep-error``, ``add``; ``none`` / ``replace`` for the references),
            ``feature``, ``value`` (NaN for references), ``target_share`` (share of the curve's
            own genre in the top-K), ``ndcg``, ``ndcg_se``, ``hit_rate``, ``hit_rate_se``,
            ``mrr``, ``mrr_se``, ``coverage``, ``diversity`` and ``share:<genre>`` for every
            genre of the dataset.
        features: :func:`select_genre_features` output.
        probe_metrics: the probes' accuracy/AUC table (``None`` without probes).
        metadata: values, k, hook, modes, per-curve method (fast/naive), SAE, run.
    """

    table: pd.DataFrame
    features: pd.DataFrame
    probe_metrics: pd.DataFrame | None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def curves(self) -> pd.DataFrame:
        """The steered rows only (no reference rows)."""
        return self.table[self.table["value"].notna()]

    def reference(self, method: str = _BASELINE) -> pd.Series:
        """The ``unsteered`` or ``sae_reconstruction`` reference row."""
        rows = self.table[self.table["method"] == method]
        if rows.empty:
            raise KeyError(f"no {method!r} row in this sweep")
        return rows.iloc[0]

    def target_share_table(self) -> pd.DataFrame:
        """Compact table for plots: one row per (curve, value) with the target share and the
        headline metrics."""
        cols = [*_KEY_COLUMNS, "target_share", "target_share_se", "ndcg", "ndcg_se", "hit_rate",
                "hit_rate_se", "coverage", "diversity"]
        return self.curves[cols].reset_index(drop=True)

    def long(self) -> pd.DataFrame:
        """Every metric in long form: ``curve, genre, column, method, mode, feature, value,
        metric, score`` (reference rows included)."""
        return self.table.melt(id_vars=_KEY_COLUMNS, var_name="metric", value_name="score")

    def monotonicity(self, tolerance: float = 0.01) -> pd.DataFrame:
        """See :func:`monotonicity`."""
        return monotonicity(self.table, tolerance=tolerance)

    def summary(self, at: Sequence[float] = (-10, -2, 0, 2, 10)) -> pd.DataFrame:
        """Target share and NDCG at chosen values, one row per curve (values absent from the
        grid are left out)."""
        values = [float(v) for v in at]
        present = [v for v in values if v in set(self.curves["value"].tolist())]
        rows = []
        for _, group in self.curves.groupby("curve", sort=False):
            by_value = group.set_index("value")
            row = {c: group.iloc[0][c] for c in ("curve", "genre", "method", "mode", "feature")}
            for v in present:
                row[f"share@{v:+g}"] = float(by_value.loc[v, "target_share"])
            for v in present:
                row[f"ndcg@{v:+g}"] = float(by_value.loc[v, "ndcg"])
            rows.append(row)
        return pd.DataFrame(rows)

    def save(self, out_dir: str | Path, *, users: pd.DataFrame | None = None,
             extra: Mapping[str, Any] | None = None) -> dict[str, Path]:
        """Write the tables (atomically) to ``out_dir``.

        Files: ``sweep.csv`` / ``sweep.json`` (the full table), ``sweep_long.csv``,
        ``target_share.csv``, ``monotonicity.csv``, ``features.csv``, ``probes.csv`` (with
        probes), ``users.csv`` (when ``users`` is given) and ``summary.json`` (metadata,
        reference rows, monotonicity, plus ``extra``).
        """
        out = Path(out_dir)
        written: dict[str, Path] = {}

        def csv(name: str, frame: pd.DataFrame) -> None:
            path = out / name
            atomic_write_bytes(path, frame.to_csv(index=False).encode())
            written[name] = path

        csv("sweep.csv", self.table)
        csv("sweep_long.csv", self.long())
        csv("target_share.csv", self.target_share_table())
        mono = self.monotonicity()
        csv("monotonicity.csv", mono)
        csv("features.csv", self.features)
        if self.probe_metrics is not None:
            csv("probes.csv", self.probe_metrics)
        if users is not None:
            csv("users.csv", users)
        rows = _json_records(self.table)
        atomic_write_json(out / "sweep.json", {"metadata": self.metadata, "rows": rows})
        written["sweep.json"] = out / "sweep.json"
        summary = {
            "metadata": self.metadata,
            "features": _json_records(self.features),
            "references": _json_records(self.table[self.table["value"].isna()]),
            "monotonicity": _json_records(mono),
            "summary": _json_records(self.summary()),
        }
        if extra:
            summary.update(extra)
        atomic_write_json(out / "summary.json", summary)
        written["summary.json"] = out / "summary.json"
        return written


def _json_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    clean = frame.astype(object).where(frame.notna(), None)
    return [{k: json_safe(v) for k, v in row.items()} for row in clean.to_dict(orient="records")]


def run_genre_sweep(
    experiment: Experiment,
    sae: NormalizedSAE,
    *,
    genres: Sequence[str] = DEFAULT_GENRES,
    values: Sequence[float] = PAPER_VALUES,
    modes: Sequence[str] = MODES,
    probes: bool = True,
    sae_directions: bool | None = None,
    features: Mapping[str, int] | None = None,
    k: int = 10,
    method: str = "auto",
    progress: bool = False,
    random_control: bool = True,
    control_seed: int = 0,
) -> GenreSweep:
    """Steer each genre's best SAE feature (and probe) at the last position over ``values``.

    Args:
        experiment: the run (model, split, catalog).
        sae: an SAE trained on one of the model's hooks (e.g. ``blocks.0.hook_resid_post``).
        genres: genre names (see :func:`resolve_genres`; missing MovieLens genres are skipped
            with a warning).
        values: steering values (the paper: -10..10 step 1).
        modes: SAE feature edit modes (``"replace"``: paper; ``"keep-error"``).
        probes: add probe-direction curves (fitted on the SAE-training users).
        sae_directions: add the unit-variance SAE decoder-direction curves, the probes'
            counterpart in Fig. 9 (default: the same as ``probes``).
        features: ``{genre: feature index}`` overriding the automatic choice.
        k: list length (the paper: 10).
        method: ``"auto"`` (fast last-position path), ``"fast"`` or ``"naive"``.
        progress: show a progress bar.
        random_control: add, per genre, a ``random_feature`` curve: the ``replace`` edit of a
            random feature alive on the SAE-training users (the control of Fig. 8).
        control_seed: seeds the control features' draw.

    Returns:
        a :class:`GenreSweep`; the ``unsteered`` row is the model as trained, the
        ``sae_reconstruction`` row replaces the last position by its unedited SAE
        reconstruction (the reference for ``replace`` curves).
    """
    values = steering_values(values)
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    check_sae_fits(experiment, sae)
    resolved = resolve_genres(genres, experiment.genre_names)
    chosen = select_genre_features(experiment, sae, resolved, overrides=features,
                                   control_seed=control_seed)
    probe_set = fit_genre_probes(experiment, sae.hook_name, list(chosen["column"])) \
        if probes else None
    with_directions = probes if sae_directions is None else sae_directions
    targets, curves = genre_targets(experiment, sae, chosen, modes=modes, probes=probe_set,
                                    sae_directions=with_directions,
                                    random_control=random_control)
    batches = _TestBatches(experiment, k)
    evaluate = _evaluator(experiment, k)
    started = time.perf_counter()
    result = run_sweep(experiment.model, batches, targets, values, evaluate,
                       collect=batches.collect, method=method, progress=progress)
    seconds = time.perf_counter() - started
    reconstruction = SteeringTarget(_RECONSTRUCTION, sae.hook_name,
                                    lambda value: FeatureEdit(sae, {}), kind=_RECONSTRUCTION)
    recon = run_sweep(experiment.model, batches, [reconstruction], [0.0], evaluate,
                      collect=batches.collect, include_baseline=False, method=method,
                      progress=False)
    table = _tidy(result.frame, recon.frame, curves)
    metadata = {
        "run": experiment.spec.__dict__,
        "hook_name": sae.hook_name,
        "sae": {"d_in": int(sae.d_in), "d_sae": int(sae.d_sae),
                "architecture": getattr(sae, "architecture", None)},
        "values": values,
        "k": int(k),
        "positions": "last",
        "modes": list(modes),
        "genres": resolved,
        "n_test_users": len(experiment.part(EVAL_PART)),
        "selection": f"max correlation on the {SELECT_PART} users' activations",
        "probes": probe_set.settings if probe_set is not None else None,
        "unit_variance_on": f"{SELECT_PART} activations",
        "curve_methods": {t["name"]: t["method"] for t in result.metadata["targets"]},
        "sweep_seconds": seconds,
        "notes": {
            "replace": "the activation at the last position is replaced by the edited SAE "
                       "reconstruction (paper 4.3); compare with the sae_reconstruction row, "
                       "not only with unsteered",
            "keep-error": "the SAE's error term is kept: only the feature's change reaches the "
                          "model",
            "add": "value x a unit-variance direction is added to the activation",
            "random_feature": "control: the replace edit of a random feature alive on the "
                              f"{SELECT_PART} users (seed {control_seed}), one per genre",
        },
    }
    return GenreSweep(table=table, features=chosen,
                      probe_metrics=None if probe_set is None else probe_set.metrics,
                      metadata=metadata)


def _tidy(frame: pd.DataFrame, recon: pd.DataFrame,
          curves: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Curve descriptions and the target share in front of the sweep's metric columns."""
    metrics = [c for c in frame.columns if c not in ("target", "kind", "hook_name", "value")]
    rows = []
    for record in frame.to_dict(orient="records"):
        name = record["target"]
        if name == _BASELINE:
            info = {"curve": None, "genre": None, "column": None, "method": _BASELINE,
                    "mode": "none", "feature": None}
        else:
            info = {"curve": name, **curves[name]}
        row = {**info, "value": record["value"]}
        column = info["column"]
        row["target_share"] = record.get(f"share:{column}", np.nan) if column else np.nan
        row["target_share_se"] = record.get(f"share_se:{column}", np.nan) if column else np.nan
        row.update({m: record[m] for m in metrics})
        rows.append(row)
    for record in recon.to_dict(orient="records"):
        row = {"curve": None, "genre": None, "column": None, "method": _RECONSTRUCTION,
               "mode": "replace", "feature": None, "value": np.nan, "target_share": np.nan,
               "target_share_se": np.nan}
        row.update({m: record[m] for m in metrics})
        rows.append(row)
    table = pd.DataFrame(rows)
    table["feature"] = table["feature"].astype("Int64")
    return table


# --------------------------------------------------------------------------------------------
# Users (Fig. 7)
# --------------------------------------------------------------------------------------------


def user_recommendations(
    experiment: Experiment,
    target: SteeringTarget,
    users: Sequence[Any],
    values: Sequence[float],
    *,
    genre_column: str | None = None,
    k: int = 10,
) -> pd.DataFrame:
    """Before/after top-``k`` lists of chosen users under a steering target (paper Fig. 7).

    Args:
        experiment: the run.
        target: e.g. ``feature_target(sae, feature)`` (replace mode) or a probe direction.
        users: raw user ids (searched in the test users first, then the other parts; see
            :meth:`Experiment.find_user <mechrec_recsys.experiment.Experiment.find_user>`).
        values: steering values; the unsteered list comes first as ``setting == "before"``.
        genre_column: the target genre's column, flagged per item in ``has_target_genre``.
        k: list length.

    Returns:
        One row per (user, setting, rank): ``user_id, part, curve, setting, value, rank,
        token, item_id, title, genres, has_target_genre, in_before``. Seen items are excluded.
    """
    values = steering_values(values)
    if not users:
        raise ValueError("no users given")
    catalog = experiment.dataset.catalog
    genre_matrix, genre_names = experiment.token_attributes()
    if genre_column is not None and genre_column not in genre_names:
        raise ValueError(f"unknown genre column {genre_column!r}")
    model, vocab = experiment.model, experiment.vocab
    device = next(model.parameters()).device
    rows = []
    for user in users:
        part, index = experiment.find_user(user)
        history = experiment.part(part).sequences[index]
        user_id = json_safe(experiment.part(part).users[index])
        window = history[-model.cfg.n_ctx:]
        tokens = torch.as_tensor(window, dtype=torch.long, device=device)[None, :]
        mask = torch.ones_like(tokens)
        edits = [None] + [target.make_edit(v) for v in values]
        logits = steered_last_logits(model, tokens, mask, target.hook_name, edits,
                                     positions=target.positions)
        for value, scores in zip(values, logits[1:], strict=True):
            check_finite_scores(scores, value)
        before: set[int] = set()
        for setting, value, scores in zip(["before", *[f"{v:+g}" for v in values]],
                                          [np.nan, *values], logits, strict=True):
            top = experiment.top_k_from_last_scores(scores, [history], k)[0]
            if setting == "before":
                before = set(top.tolist())
            for rank, token in enumerate(top.tolist(), start=1):
                if token == 0:
                    continue
                item = int(vocab.to_items(np.array([token]))[0])
                flags = genre_matrix[token]
                rows.append({
                    "user_id": user_id,
                    "part": part,
                    "curve": target.name,
                    "setting": setting,
                    "value": value,
                    "rank": rank,
                    "token": token,
                    "item_id": item,
                    "title": str(catalog.items["title"].get(item, "")),
                    "genres": "|".join(n for n, f in zip(genre_names, flags, strict=True) if f),
                    "has_target_genre": bool(genre_matrix[token, genre_names.index(genre_column)])
                    if genre_column is not None else None,
                    "in_before": token in before,
                })
    return pd.DataFrame(rows)


def example_users(experiment: Experiment, genre_column: str, *, k: int = 10,
                  n: int = 1) -> list[Any]:
    """Test users to show for a genre (as in Fig. 7): the ``n`` whose unsteered top-``k``
    holds the most items of the genre, then the ``n`` (others) holding the fewest."""
    matrix, _ = experiment.token_attributes([genre_column])
    top = experiment.recommend(EVAL_PART, k=k)
    share = matrix[top, 0].mean(axis=1)
    users = experiment.part(EVAL_PART).users
    order = np.argsort(-share, kind="stable")
    most = [users[i] for i in order[:n]]
    fewest = [users[i] for i in order[::-1] if users[i] not in most][:n]
    return [json_safe(u) for u in [*most, *fewest]]


def user_shares(
    experiment: Experiment,
    target: SteeringTarget,
    genre_column: str,
    values: Sequence[float],
    *,
    k: int = 10,
) -> pd.DataFrame:
    """Per test user, the share of ``genre_column`` in the top-``k`` at each value.

    Returns a DataFrame indexed by user id with one column per value plus ``"unsteered"``;
    differences between two columns are paired over users (same users, same lists otherwise),
    so their standard error is far smaller than that of two separate means.
    """
    values = steering_values(values)
    matrix, _ = experiment.token_attributes([genre_column])
    batches = _TestBatches(experiment, k)
    parts: list[np.ndarray] = []
    for tokens, mask in batches:
        edits = [None] + [target.make_edit(v) for v in values]
        logits = steered_last_logits(experiment.model, tokens, mask, target.hook_name, edits,
                                     positions=target.positions)
        for value, scores in zip(values, logits[1:], strict=True):
            check_finite_scores(scores, value)
        tops = [batches.collect(scores, tokens, mask) for scores in logits]
        parts.append(np.stack([attribute_share_at_k(top, matrix, k)[:, 0] for top in tops],
                              axis=1))
    table = np.concatenate(parts)
    users = pd.Index(experiment.part(EVAL_PART).users, name="user_id")
    return pd.DataFrame(table, index=users, columns=[_BASELINE, *values])


# --------------------------------------------------------------------------------------------
# Fast path check
# --------------------------------------------------------------------------------------------


def compare_fast_naive(
    experiment: Experiment,
    target: SteeringTarget,
    values: Sequence[float],
    *,
    naive_values: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Time the fast last-position path against full forward passes on the test users.

    The fast path runs every value of ``values`` (its prefix pass included in its time); the
    naive path runs ``naive_values`` (default: the first two values), each a full forward pass.
    Both are compared on the values they share.

    Returns:
        ``fast_seconds``, ``fast_seconds_per_value``, ``naive_seconds``,
        ``naive_seconds_per_value``, ``speedup`` (naive per value / fast per value),
        ``max_abs_logit_diff`` over the shared values and ``same_top_k`` (identical top-10
        lists), plus the batch shape.
    """
    values = steering_values(values)
    naive_values = steering_values(naive_values) if naive_values is not None else values[:2]
    shared = [v for v in naive_values if v in values]
    if not shared:
        raise ValueError("naive_values must be among values, to compare the two paths")
    model = experiment.model
    with torch.no_grad():  # warm-up, so neither path pays for first-call initialisation
        tokens, mask = next(iter(experiment.batches(EVAL_PART)))
        model(tokens, attention_mask=mask)
    fast_time = naive_time = 0.0
    max_diff = 0.0
    same = True
    max_len = 0
    batches = _TestBatches(experiment, 10)
    for tokens, mask in batches:
        max_len = max(max_len, int(tokens.shape[1]))
        edits = [target.make_edit(v) for v in values]
        start = time.perf_counter()
        fast = steered_last_logits(model, tokens, mask, target.hook_name, edits, method="fast")
        fast_time += time.perf_counter() - start
        naive_edits = [target.make_edit(v) for v in naive_values]
        start = time.perf_counter()
        naive = steered_last_logits(model, tokens, mask, target.hook_name, naive_edits,
                                    method="naive")
        naive_time += time.perf_counter() - start
        for v in shared:
            a, b = fast[values.index(v)], naive[naive_values.index(v)]
            max_diff = max(max_diff, float((a - b).abs().max()))
            same &= bool(np.array_equal(batches.collect(a, tokens, mask),
                                        batches.collect(b, tokens, mask)))
    fast_per = fast_time / len(values)
    naive_per = naive_time / len(naive_values)
    return {
        "target": target.name,
        "n_users": len(batches.sequences),
        "batch_size": experiment.batch_size,
        "max_len": max_len,
        "values": values,
        "naive_values": naive_values,
        "fast_seconds": fast_time,
        "fast_seconds_per_value": fast_per,
        "naive_seconds": naive_time,
        "naive_seconds_per_value": naive_per,
        "speedup": naive_per / fast_per if fast_per > 0 else float("nan"),
        "max_abs_logit_diff": max_diff,
        "same_top_k": same,
        "device": str(next(model.parameters()).device),
    }

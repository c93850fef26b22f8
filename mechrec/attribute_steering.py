"""Attribute steering on any model: the paper's control experiment as a core recipe.

For each attribute (a column of the study's token attribute table), :func:`attribute_sweep`

1. chooses the SAE feature with the largest correlation with the attribute on the ``select``
   rows (never on the rows that are scored), reports its correlation on the ``score`` rows
   beside it, and draws a random alive feature as the control
   (:func:`select_attribute_features`);
2. optionally fits a probe per attribute on the select rows (:func:`fit_attribute_probes`:
   logistic, difference of means, k-sparse or best principal component, :data:`PROBE_CURVES`);
3. steers the last position of every ``score`` sequence over a grid of values, one curve per
   attribute and method (:func:`attribute_targets`):

   - ``sae_feature`` / ``replace``: encode, set the feature, decode and replace the
     activation (the paper's procedure: even the feature's own value is not the unsteered
     model, so a ``sae_reconstruction`` reference row is added);
   - ``sae_feature`` / ``keep-error``: the same edit with the SAE's error term kept;
   - ``sae_direction`` / ``add``: add ``value x`` the feature's decoder direction, scaled to
     unit variance of the select rows' activations;
   - ``probe_direction`` / ``add``: add ``value x`` the probe's direction, scaled the same way
     (``mean_difference_direction``, ``k_sparse_direction`` and ``pca_direction`` for the other
     probe methods);
   - ``random_feature`` / ``replace``: the control, a random alive feature's replace edit;

4. scores each (curve, value) with ``evaluate`` on what ``collect`` kept of every batch: by
   default the share of each attribute among the top-``k`` next tokens
   (:func:`top_k_collector`, :func:`attribute_share_evaluator`). A recommender passes its own
   (seen items masked through the batch's row ids; NDCG, coverage, diversity).

With a transcoder, features are chosen on its input hook's activations and every curve
steers its output hook (where its features write); probes are fitted there too, so that
probe and feature directions are compared at the same hook.

The result, :class:`AttributeSweep`, holds one tidy row per (curve, value) plus the reference
rows, the per-curve monotonicity (:func:`monotonicity`) and a compact summary, and saves them
(:meth:`AttributeSweep.save`).
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mechrec._io import atomic_write_bytes, atomic_write_json, json_safe
from mechrec.alignment import alignment_stats, best_features, encode_sparse, token_attributes
from mechrec.hooks import check_sae_fits, output_hook
from mechrec.probes import (
    DEFAULT_K,
    DEFAULT_N_COMPONENTS,
    ProbeSet,
    check_width_count,
    fit_probes,
)
from mechrec.steering import FeatureEdit, SAELike
from mechrec.steering.validation import check_feature_index, check_finite_values
from mechrec.study import Study, check_attribute_table, check_study
from mechrec.sweep import (
    Collect,
    Evaluate,
    SteeringTarget,
    direction_target,
    feature_direction_target,
    feature_target,
    run_sweep,
)

__all__ = [
    "MODES",
    "AttributeSweep",
    "attribute_share_evaluator",
    "attribute_sweep",
    "attribute_targets",
    "fit_attribute_probes",
    "monotonicity",
    "select_attribute_features",
    "top_k_collector",
]

MODES: tuple[str, ...] = ("replace", "keep-error")
"""SAE feature edit modes: ``replace`` the activation by the edited reconstruction (the
paper), or ``keep-error`` (keep the SAE's error term, so only the feature's change acts)."""

BASELINE = "unsteered"
SWEEP_FORMAT = "mechrec.attribute_sweep/1"
"""Format of a saved sweep's ``sweep.json``."""
RECONSTRUCTION = "sae_reconstruction"
_SHARE_DECIMALS = 9
PROBE_CURVES: dict[str, tuple[str, str]] = {
    "logistic": ("probe_direction", "probe"),
    "mean_difference": ("mean_difference_direction", "mean-diff"),
    "k_sparse": ("k_sparse_direction", "k-sparse"),
    "pca": ("pca_direction", "pca"),
}
"""Probe method -> (curve method, curve name prefix) of its steering curves."""
#: Stream id of the random control feature's draw (independent of other seeded draws).
_CONTROL_STREAM = 3


def _columns_of(study: Study, attributes: Sequence[str] | Mapping[str, str]
                ) -> dict[str, str]:
    """``{label: table column}`` of the attributes to steer, checked against the table."""
    pairs = (dict(attributes) if isinstance(attributes, Mapping)
             else {str(a): str(a) for a in attributes})
    if not pairs:
        raise ValueError("no attributes to steer: name at least one column of the study's "
                         "attribute table")
    table, _ = study.attribute_table()
    missing = [c for c in pairs.values() if c not in table.columns]
    if missing:
        raise ValueError(f"attributes {missing} are not columns of the study's attribute "
                         f"table (it has {', '.join(map(str, table.columns[:12]))}"
                         f"{', ...' if table.shape[1] > 12 else ''})")
    return pairs


class _Labels:
    """Token labels from a study's attribute table, which is validated
    (:func:`~mechrec.study.check_attribute_table`) on first use and reused after: one sweep
    labels the rows of several row sets and scores with the same table."""

    def __init__(self, study: Study) -> None:
        self.study = study
        self._table: pd.DataFrame | None = None

    @property
    def table(self) -> pd.DataFrame:
        """The validated ``(d_vocab, A)`` float32 table."""
        if self._table is None:
            table, groups = self.study.attribute_table()
            self._table, _ = check_attribute_table(table, groups,
                                                   int(self.study.model.cfg.d_vocab))
        return self._table

    def __call__(self, tokens: torch.Tensor, columns: Sequence[str]) -> pd.DataFrame:
        """The ``columns`` attributes of each row's token."""
        return token_attributes(tokens, self.table[list(columns)])


def select_attribute_features(
    study: Study,
    sae: Any,
    attributes: Sequence[str] | Mapping[str, str],
    *,
    select: str,
    score: str,
    overrides: Mapping[str, int] | None = None,
    notes: list[str] | None = None,
    control_seed: int = 0,
) -> pd.DataFrame:
    """The best SAE feature per attribute by correlation, chosen on the ``select`` rows.

    Args:
        study: the model and its row sets.
        sae: an SAE at one of the model's hooks.
        attributes: attribute columns, or ``{label: column}``.
        select: row set that chooses the features.
        score: row set on which each chosen feature's correlation is also reported.
        overrides: ``{label: feature index}`` to use instead of the automatic choice.
        notes: if given, one line per attribute left out is appended here instead of warned.
        control_seed: seeds each attribute's random control feature.

    Returns:
        One row per attribute with a feature: ``attribute, column, feature, chosen_by,
        correlation_select, correlation_score, prevalence_select, control_feature,
        control_correlation_select``. The control is a feature drawn at random among those
        active on at least one select row, other than the chosen one.

    Raises:
        ValueError: a bad override, an unknown attribute, or no attribute left.
    """
    return _select_features(_Labels(study), sae, attributes, select=select, score=score,
                            overrides=overrides, notes=notes, control_seed=control_seed,
                            stacklevel=3)


def _select_features(
    labels: _Labels,
    sae: Any,
    attributes: Sequence[str] | Mapping[str, str],
    *,
    select: str,
    score: str,
    overrides: Mapping[str, int] | None,
    notes: list[str] | None,
    control_seed: int,
    stacklevel: int,
) -> pd.DataFrame:
    """:func:`select_attribute_features` on ``labels``' study; skipped attributes are warned
    about at ``stacklevel``."""
    study = labels.study
    pairs = _columns_of(study, attributes)
    overrides = dict(overrides or {})
    unknown = [g for g in overrides if g not in pairs]
    if unknown:
        raise ValueError(f"feature choices for {unknown} that are not being steered "
                         f"({', '.join(pairs)})")
    for label, index in overrides.items():
        overrides[label] = check_feature_index(sae, index)
    columns = list(dict.fromkeys(pairs.values()))
    stats = {}
    for part in (select, score):
        acts = study.activations(part, sae.hook_name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # dead features: reported by the SAE's own metrics
            stats[part] = alignment_stats(
                encode_sparse(sae, acts.activations), labels(acts.token, columns),
                metrics=("correlation",))
    best = best_features(stats[select], "correlation")
    alive = np.flatnonzero(stats[select].feature_active_rate > 0)
    rng = np.random.default_rng(np.random.SeedSequence([int(control_seed), _CONTROL_STREAM]))
    rows = []
    for label, column in pairs.items():
        a = stats[select].attribute_names.get_loc(column)
        feature = overrides.get(label, best[column])
        if feature is None:
            message = (f"{label!r} has no SAE feature with a defined correlation on the "
                       f"{select} rows (no positive row there?); skipped")
            if notes is not None:
                notes.append(message)
            else:
                warnings.warn(message, stacklevel=stacklevel)
            continue
        feature = int(feature)
        candidates = alive[alive != feature]
        control = int(rng.choice(candidates)) if len(candidates) else -1
        correlation = stats[select].values["correlation"]
        rows.append({
            "attribute": label,
            "column": column,
            "feature": feature,
            "chosen_by": "user" if label in overrides else f"max correlation on {select}",
            "correlation_select": float(correlation[feature, a]),
            "correlation_score": float(stats[score].values["correlation"][feature, a]),
            "prevalence_select": float(stats[select].attribute_prevalence[a]),
            "control_feature": control,
            "control_correlation_select": (float(correlation[control, a]) if control >= 0
                                           else math.nan),
        })
    if not rows:
        raise ValueError(f"no SAE feature could be chosen for any of {list(pairs)}")
    return pd.DataFrame(rows)


def fit_attribute_probes(
    study: Study,
    hook_name: str,
    columns: Sequence[str],
    *,
    select: str,
    score: str | None = None,
    seed: int = 0,
    max_train_rows: int | None = None,
    notes: list[str] | None = None,
    method: str = "logistic",
    probe_k: int | None = None,
    pca_components: int | None = None,
) -> ProbeSet:
    """Probes per attribute on the ``select`` rows' activations at ``hook_name``: logistic, or
    ``method="mean_difference"`` (difference of means), ``"k_sparse"`` (a logistic probe on the
    ``probe_k`` best-separating neurons) or ``"pca"`` (the best of the top ``pca_components``
    principal components); see :func:`mechrec.probes.fit_probes`.

    Class-balanced, evaluated on the ``score`` rows when given; directions are scaled to unit
    variance of the select activations (:func:`mechrec.probes.fit_probes`).

    Args:
        study: the model and its row sets.
        hook_name: the hook whose activations the probes read.
        columns: attribute columns.
        select: row set the probes are fitted on.
        score: row set they are evaluated on (``None``: a held-out fifth of the select rows).
        seed: seed of the fit (and of the row sample).
        max_train_rows: fit each probe on at most this many select rows drawn at random.
        notes: if given, one line per skipped probe is appended here instead of warned.
        method: one of :data:`mechrec.probes.PROBE_METHODS`.
        probe_k: with ``method="k_sparse"``, neurons per probe (default ``min(8, d)``).
        pca_components: with ``method="pca"``, components to choose from (default
            ``min(64, d)``).

    Raises:
        ValueError: ``max_train_rows`` is not a positive whole number; ``probe_k`` or
            ``pca_components`` out of ``[1, d]``.
    """
    return _fit_probes(_Labels(study), hook_name, columns, select=select, score=score,
                       seed=seed, max_train_rows=max_train_rows, notes=notes, method=method,
                       probe_k=probe_k, pca_components=pca_components)


def _fit_probes(
    labels: _Labels,
    hook_name: str,
    columns: Sequence[str],
    *,
    select: str,
    score: str | None,
    seed: int,
    max_train_rows: int | None,
    notes: list[str] | None,
    method: str,
    probe_k: int | None = None,
    pca_components: int | None = None,
) -> ProbeSet:
    """:func:`fit_attribute_probes` on ``labels``' study."""
    study = labels.study
    if max_train_rows is not None and (isinstance(max_train_rows, bool)
                                       or not isinstance(max_train_rows, int | np.integer)
                                       or max_train_rows < 1):
        raise ValueError(
            f"max_train_rows must be a positive whole number or None (every row), got "
            f"{max_train_rows!r}")
    columns = list(dict.fromkeys(columns))
    train = study.activations(select, hook_name)
    test = study.activations(score, hook_name) if score is not None else None
    with warnings.catch_warnings():
        if notes is not None:  # reported below from the probes' own status column
            warnings.filterwarnings("ignore", message=r"probe for .* skipped")
        probes = fit_probes(
            train, labels(train.token, columns), columns,
            test_activations=None if test is None else test.activations,
            test_labels=None if test is None else labels(test.token, columns),
            seed=seed, hook_name=hook_name, method=method,
            max_train_rows=None if max_train_rows is None else int(max_train_rows),
            **_probe_options(method, probe_k, pca_components))
    if notes is not None:
        for row in probes.metrics.itertuples(index=False):
            if row.attribute not in probes.probes:
                notes.append(f"probe for {row.attribute!r} {row.status}")
    return probes


def _probe_options(method: str, probe_k: int | None, pca_components: int | None
                   ) -> dict[str, int]:
    """The :func:`~mechrec.probes.fit_probes` keywords of ``method`` (``k``, ``n_components``)."""
    if method == "k_sparse" and probe_k is not None:
        return {"k": probe_k}
    if method == "pca" and pca_components is not None:
        return {"n_components": pca_components}
    return {}


def attribute_targets(
    study: Study,
    sae: SAELike,
    features: pd.DataFrame,
    *,
    select: str,
    modes: Sequence[str] = MODES,
    probes: ProbeSet | Mapping[str, ProbeSet] | None = None,
    sae_directions: bool = True,
    random_control: bool = False,
) -> tuple[list[SteeringTarget], dict[str, dict[str, Any]]]:
    """Sweep targets for the chosen features (and probes), with what each curve is.

    Args:
        study: the model and its row sets.
        sae: the SAE the features belong to.
        features: :func:`select_attribute_features` output.
        select: row set whose activations scale the directions to unit variance.
        modes: SAE feature edit modes (:data:`MODES`).
        probes: probe directions to include (attributes without a probe are skipped with a
            warning): one :class:`~mechrec.probes.ProbeSet`, ``{method: ProbeSet}`` for
            several methods (:data:`PROBE_CURVES`), or ``None``.
        sae_directions: include each feature's unit-variance decoder direction.
        random_control: include each attribute's random ``control_feature`` (replace mode).

    Returns:
        ``(targets, curves)``; ``curves[name]`` holds ``attribute, column, method, mode,
        feature`` of the target of that name.
    """
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise ValueError(f"unknown modes {bad}; choose from {', '.join(MODES)}")
    if probes is None:
        probe_sets: dict[str, ProbeSet] = {}
    elif isinstance(probes, ProbeSet):
        probe_sets = {probes.settings.get("method", "logistic"): probes}
    else:
        probe_sets = dict(probes)
    targets: list[SteeringTarget] = []
    curves: dict[str, dict[str, Any]] = {}

    def add(target: SteeringTarget, label: str, column: str, method: str, mode: str,
            feature: int | None) -> None:
        targets.append(target)
        curves[target.name] = {"attribute": label, "column": column, "method": method,
                               "mode": mode, "feature": feature}

    select_rows = None
    for row in features.itertuples(index=False):
        label, column, feature = row.attribute, row.column, int(row.feature)
        for mode in modes:
            keep = mode == "keep-error"
            name = f"sae{'+error' if keep else ''}:{label}"
            add(feature_target(sae, feature, name=name, keep_error=keep), label, column,
                "sae_feature", mode, feature)
        control = int(getattr(row, "control_feature", -1))
        if random_control and control >= 0:
            add(feature_target(sae, control, name=f"random-feature:{label}", keep_error=False),
                label, column, "random_feature", "replace", control)
        if sae_directions:
            if select_rows is None:
                select_rows = study.activations(select, output_hook(sae)).activations
            add(feature_direction_target(sae, feature, select_rows,
                                         name=f"sae-direction:{label}"),
                label, column, "sae_direction", "add", feature)
        for probe_method, probe_set in probe_sets.items():
            method, prefix = PROBE_CURVES[probe_method]
            if column not in probe_set.probes:
                warnings.warn(f"no {probe_method} probe for {column!r}; its curve is skipped",
                              stacklevel=2)
                continue
            add(direction_target(probe_set.direction(column), name=f"{prefix}:{label}",
                                 hook_name=output_hook(sae), kind=method),
                label, column, method, "add", None)
    return targets, curves


# ------------------------------------------------------------------------------ scoring
def top_k_collector(k: int, *, exclude: Sequence[int] = (0,)) -> Collect:
    """``collect`` for :func:`~mechrec.sweep.run_sweep`: the top-``k`` token ids of each
    row's last-position logits, never one of ``exclude`` (default: the padding token 0)."""
    banned = [int(t) for t in exclude]

    def collect(logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor | None,
                rows: np.ndarray) -> np.ndarray:
        scores = logits.float().clone()
        if banned:
            scores[:, banned] = -torch.inf
        return scores.topk(k, dim=-1).indices.cpu().numpy()

    return collect


def attribute_share_evaluator(table: pd.DataFrame, k: int) -> Evaluate:
    """``evaluate`` for top-``k`` token lists: per attribute column of ``table`` (``(d_vocab,
    A)``, 0/1), ``share:<attribute>`` (mean share of list tokens with it) and
    ``share_se:<attribute>`` (its standard error over rows)."""
    matrix = table.to_numpy(dtype=np.float32)
    names = [str(c) for c in table.columns]

    def evaluate(top_k: np.ndarray) -> dict[str, float]:
        shares = matrix[np.asarray(top_k)[:, :k]].mean(axis=1)  # (rows, A)
        n = shares.shape[0]
        out: dict[str, float] = {}
        for name, column in zip(names, shares.T, strict=True):
            out[f"share:{name}"] = float(column.mean())
            out[f"share_se:{name}"] = float(column.std(ddof=1) / math.sqrt(n)) if n > 1 \
                else math.nan
        return out

    return evaluate


def monotonicity(table: pd.DataFrame, *, tolerance: float = 0.01,
                 label: str = "attribute") -> pd.DataFrame:
    """How monotonically each curve's target share rises with the steering value.

    Args:
        table: an :attr:`AttributeSweep.table` (rows with a ``curve`` and a numeric ``value``).
        tolerance: a step down by more than this share counts as a violation beyond noise
            (0.01 = one token in ten for a tenth of the rows).
        label: the table's attribute column (``genre`` in a recommender's sweep).

    Returns:
        One row per curve: ``n_steps``, ``decreases`` (steps where the share went down at
        all), ``violations`` (steps down by more than ``tolerance``), ``largest_drop``,
        ``spearman`` (rank correlation of share with value), the share at the lowest and
        highest value.
    """
    rows = []
    steered = table[table["value"].notna() & table["curve"].notna()]
    for curve, group in steered.groupby("curve", sort=False):
        group = group.sort_values("value")
        # equal shares whose means over rows differ in the last bits count as equal
        share = np.round(group["target_share"].to_numpy(dtype=float), _SHARE_DECIMALS)
        steps = np.round(np.diff(share), _SHARE_DECIMALS)
        first = group.iloc[0]
        rows.append({
            "curve": curve,
            label: first[label],
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


# ------------------------------------------------------------------------------ the result
@dataclass
class AttributeSweep:
    """An attribute steering sweep's tables.

    Attributes:
        table: one row per (curve, value) plus reference rows. Columns: ``curve`` (target
            name, e.g. ``sae:Sci-Fi``), the attribute label (``attribute``, or
            :attr:`label`), ``column`` (its table column), ``method`` (``sae_feature``,
            ``sae_direction``, ``probe_direction``, ``random_feature``; ``unsteered`` /
            ``sae_reconstruction`` for the reference rows), ``mode`` (``replace``,
            ``keep-error``, ``add``; ``none`` / ``replace`` for the references), ``feature``,
            ``value`` (NaN for references), ``target_share`` and ``target_share_se`` (share
            of the curve's own attribute in the top-K and its standard error), then every
            metric ``evaluate`` returned.
        features: :func:`select_attribute_features` output.
        probe_metrics: the probes' accuracy/AUC table (``None`` without probes).
        metadata: values, k, hook, modes, row sets, per-curve method (fast/naive), SAE.
        label: the name of the attribute-label column.
        headline: metrics shown beside the target share in :meth:`target_share_table` and
            :meth:`summary` (those the table has).
    """

    table: pd.DataFrame
    features: pd.DataFrame
    probe_metrics: pd.DataFrame | None
    metadata: dict[str, Any] = field(default_factory=dict)
    label: str = "attribute"
    headline: tuple[str, ...] = ()

    @property
    def key_columns(self) -> list[str]:
        """The columns that name a row: curve, label, column, method, mode, feature, value."""
        return ["curve", self.label, "column", "method", "mode", "feature", "value"]

    @property
    def curves(self) -> pd.DataFrame:
        """The steered rows only (no reference rows)."""
        return self.table[self.table["value"].notna()]

    def reference(self, method: str = BASELINE) -> pd.Series:
        """The ``unsteered`` or ``sae_reconstruction`` reference row."""
        rows = self.table[self.table["method"] == method]
        if rows.empty:
            raise KeyError(f"no {method!r} row in this sweep")
        return rows.iloc[0]

    def target_share_table(self) -> pd.DataFrame:
        """Compact table for plots: one row per (curve, value) with the target share and the
        headline metrics."""
        cols = [*self.key_columns, "target_share", "target_share_se",
                *[m for m in self.headline if m in self.table.columns]]
        return self.curves[cols].reset_index(drop=True)

    def long(self) -> pd.DataFrame:
        """Every metric in long form: the key columns, ``metric`` and ``score`` (reference
        rows included)."""
        return self.table.melt(id_vars=self.key_columns, var_name="metric", value_name="score")

    def monotonicity(self, tolerance: float = 0.01) -> pd.DataFrame:
        """See :func:`monotonicity`."""
        return monotonicity(self.table, tolerance=tolerance, label=self.label)

    def summary(self, at: Sequence[float] = (-10, -2, 0, 2, 10)) -> pd.DataFrame:
        """Target share (and the first headline metric) at chosen values, one row per curve
        (values absent from the grid are left out)."""
        values = [float(v) for v in at]
        present = [v for v in values if v in set(self.curves["value"].tolist())]
        second = next((m for m in self.headline if m in self.table.columns), None)
        rows = []
        for _, group in self.curves.groupby("curve", sort=False):
            by_value = group.set_index("value")
            row = {c: group.iloc[0][c] for c in ("curve", self.label, "method", "mode",
                                                 "feature")}
            for v in present:
                row[f"share@{v:+g}"] = float(by_value.loc[v, "target_share"])
            if second is not None:
                for v in present:
                    row[f"{second}@{v:+g}"] = float(by_value.loc[v, second])
            rows.append(row)
        return pd.DataFrame(rows)

    @classmethod
    def load(cls, out_dir: str | Path) -> AttributeSweep:
        """The sweep :meth:`save` wrote to ``out_dir``: the full table (from ``sweep.json``),
        the chosen features and the probe metrics, with its label and headline columns.

        Raises:
            FileNotFoundError: no ``sweep.json`` in ``out_dir``.
            ValueError: a damaged file or another format.
        """
        folder = Path(out_dir)
        path = folder / "sweep.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: save the sweep with "
                                    "AttributeSweep.save(directory)")
        try:
            payload = json.loads(path.read_text())
            rows = payload["rows"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path} is not a saved sweep ({exc}): save it again") from None
        if payload.get("format", SWEEP_FORMAT) != SWEEP_FORMAT:
            raise ValueError(f"{path} has format {payload.get('format')!r}, not "
                             f"{SWEEP_FORMAT!r}")
        table = pd.DataFrame(rows)
        if "columns" in payload:
            table = table.reindex(columns=payload["columns"])
        table["value"] = table["value"].astype(float)
        table["feature"] = table["feature"].astype("Int64")
        probes = folder / "probes.csv"
        options: dict[str, Any] = {}
        if "label" in payload:
            options["label"] = payload["label"]
        if "headline" in payload:
            options["headline"] = tuple(payload["headline"])
        return cls(table=table, features=pd.read_csv(folder / "features.csv"),
                   probe_metrics=pd.read_csv(probes) if probes.is_file() else None,
                   metadata=payload.get("metadata", {}), **options)

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
        atomic_write_json(out / "sweep.json", {
            "format": SWEEP_FORMAT, "label": self.label, "headline": list(self.headline),
            "columns": [str(c) for c in self.table.columns],
            "metadata": self.metadata, "rows": _json_records(self.table)})
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

    def plot(self, kind: str = "share", **kwargs: Any) -> Any:
        """A plotly figure: ``"share"`` (Fig. 8), ``"directions"`` (Fig. 9) or a metric
        column such as ``"ndcg"``; see :func:`mechrec.plots.sweep_figure`."""
        from mechrec.plots import sweep_figure

        return sweep_figure(self, kind, **kwargs)


def _json_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    clean = frame.astype(object).where(frame.notna(), None)
    return [{k: json_safe(v) for k, v in row.items()} for row in clean.to_dict(orient="records")]


def _tidy(frame: pd.DataFrame, recon: pd.DataFrame,
          curves: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Curve descriptions and the target share in front of the sweep's metric columns."""
    metrics = [c for c in frame.columns if c not in ("target", "kind", "hook_name", "value")]
    empty = {"curve": None, "attribute": None, "column": None}
    rows = []
    for record in frame.to_dict(orient="records"):
        name = record["target"]
        info = ({**empty, "method": BASELINE, "mode": "none", "feature": None}
                if name == BASELINE else {"curve": name, **curves[name]})
        row = {**info, "value": record["value"]}
        column = info["column"]
        row["target_share"] = record.get(f"share:{column}", np.nan) if column else np.nan
        row["target_share_se"] = record.get(f"share_se:{column}", np.nan) if column else np.nan
        row.update({m: record[m] for m in metrics})
        rows.append(row)
    for record in recon.to_dict(orient="records"):
        row = {**empty, "method": RECONSTRUCTION, "mode": "replace", "feature": None,
               "value": np.nan, "target_share": np.nan, "target_share_se": np.nan}
        row.update({m: record[m] for m in metrics})
        rows.append(row)
    table = pd.DataFrame(rows)
    table["feature"] = table["feature"].astype("Int64")
    return table


class _RowBatches:
    """A row set's batches, re-iterable and sized (for the progress bar)."""

    def __init__(self, study: Study, rows: str) -> None:
        self.study, self.rows = study, rows

    def __iter__(self):
        return iter(self.study.batches(self.rows))

    def __len__(self) -> int:
        n_batches = getattr(self.study, "n_batches", None)
        if callable(n_batches):
            return int(n_batches(self.rows))
        return sum(1 for _ in self.study.batches(self.rows))


def attribute_sweep(
    study: Study,
    sae: Any,
    attributes: Sequence[str] | Mapping[str, str],
    *,
    select: str,
    score: str,
    values: Sequence[float],
    modes: Sequence[str] = MODES,
    probes: bool = True,
    sae_directions: bool | None = None,
    features: Mapping[str, int] | None = None,
    k: int = 10,
    collect: Collect | None = None,
    evaluate: Evaluate | None = None,
    method: str = "auto",
    progress: bool = False,
    random_control: bool = True,
    control_seed: int = 0,
    probe_score: bool = True,
    headline: Sequence[str] = (),
    probe_methods: Sequence[str] = ("logistic",),
    probe_k: int | None = None,
    pca_components: int | None = None,
) -> AttributeSweep:
    """Steer each attribute's best SAE feature (and probe) at the last position over ``values``.

    Args:
        study: the model and its row sets (:class:`~mechrec.study.Study`).
        sae: an SAE at one of the model's hooks.
        attributes: attribute columns of the study's table, or ``{label: column}``.
        select: row set that chooses features, fits probes and scales directions.
        score: row set whose last positions are steered and scored.
        values: steering values, e.g. :func:`mechrec.grids.value_grid` ``(-10, 10, 1)``.
        modes: SAE feature edit modes (:data:`MODES`).
        probes: add probe-direction curves.
        sae_directions: add the unit-variance decoder-direction curves (default: as
            ``probes``).
        features: ``{label: feature index}`` overriding the automatic choice.
        k: list length for the default ``collect`` / ``evaluate``.
        collect: reduces a batch's last-position logits, given ``(logits, tokens, mask,
            rows)``; default :func:`top_k_collector` ``(k)``.
        evaluate: scores everything collected for one (curve, value); must return
            ``share:<column>`` (and may return ``share_se:<column>``) for the steered
            columns; default :func:`attribute_share_evaluator` on the attribute table.
        method: ``"auto"`` (fast last-position path), ``"fast"`` or ``"naive"``.
        progress: show a progress bar.
        random_control: add a ``random_feature`` curve per attribute.
        control_seed: seeds the control features' draw.
        probe_score: evaluate the probes on the ``score`` rows (else on a held-out fifth of
            the select rows).
        headline: metrics shown beside the target share in the compact tables.
        probe_methods: with ``probes``, the probe kinds steered by (:data:`PROBE_CURVES`:
            ``"logistic"`` gives ``probe:`` curves, ``"mean_difference"`` ``mean-diff:``,
            ``"k_sparse"`` ``k-sparse:`` and ``"pca"`` ``pca:``).
        probe_k: neurons per ``k_sparse`` probe (default ``min(8, d)``); unlike ``k``, which
            is the length of the top-``k`` lists.
        pca_components: principal components a ``pca`` probe chooses from (default
            ``min(64, d)``).

    Returns:
        :class:`AttributeSweep`; its ``unsteered`` row is the model as is, its
        ``sae_reconstruction`` row replaces the last position by the unedited SAE
        reconstruction (the reference of ``replace`` curves).
    """
    study = check_study(study)
    values = check_finite_values(list(values))
    if not values:
        raise ValueError("no steering values given: pass at least one, e.g. [0, 2, 5]")
    if isinstance(k, bool) or int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if select == score:
        raise ValueError(f"select and score are both {select!r}: choose features on other "
                         "rows than those that are steered and scored")
    check_sae_fits(study.model, sae)
    unknown = [m for m in probe_methods if m not in PROBE_CURVES]
    if unknown or (probes and not probe_methods):
        raise ValueError(f"unknown probe methods {unknown}; choose from "
                         f"{', '.join(PROBE_CURVES)}")
    if probes:  # before the (slower) feature choice: a k or a component count the width lacks
        width = int(getattr(sae, "d_out", sae.d_in))  # probes live where the SAE writes
        if "k_sparse" in probe_methods and probe_k is not None:
            check_width_count(probe_k, DEFAULT_K, width, "probe_k", "k-sparse probe neurons")
        if "pca" in probe_methods and pca_components is not None:
            check_width_count(pca_components, DEFAULT_N_COMPONENTS, width, "pca_components",
                              "principal components")
    labels = _Labels(study)  # the attribute table, validated once for every use below
    chosen = _select_features(labels, sae, attributes, select=select, score=score,
                              overrides=features, notes=None, control_seed=control_seed,
                              stacklevel=2)
    probe_sets = {method: _fit_probes(labels, output_hook(sae), list(chosen["column"]),
                                      select=select, score=score if probe_score else None,
                                      seed=0, max_train_rows=None, notes=None, method=method,
                                      probe_k=probe_k, pca_components=pca_components)
                  for method in dict.fromkeys(probe_methods)} if probes else {}
    if len(probe_sets) > 1:
        probe_metrics = pd.concat([m.metrics.assign(method=name) for name, m in
                                   probe_sets.items()], ignore_index=True)
        probe_settings: Any = {name: m.settings for name, m in probe_sets.items()}
    else:
        only = next(iter(probe_sets.values()), None)
        probe_metrics = None if only is None else only.metrics
        probe_settings = None if only is None else only.settings
    with_directions = probes if sae_directions is None else sae_directions
    targets, curves = attribute_targets(study, sae, chosen, select=select, modes=modes,
                                        probes=probe_sets, sae_directions=with_directions,
                                        random_control=random_control)
    if evaluate is None:
        evaluate = attribute_share_evaluator(labels.table, int(k))
    collect = collect or top_k_collector(int(k))
    batches = _RowBatches(study, score)
    started = time.perf_counter()
    result = run_sweep(study.model, batches, targets, values, evaluate, collect=collect,
                       method=method, progress=progress)
    seconds = time.perf_counter() - started
    reconstruction = SteeringTarget(RECONSTRUCTION, output_hook(sae),
                                    lambda value: FeatureEdit(sae, {}), kind=RECONSTRUCTION)
    recon = run_sweep(study.model, batches, [reconstruction], [0.0], evaluate, collect=collect,
                      include_baseline=False, method=method, progress=False)
    metadata = {
        "hook_name": sae.hook_name,
        **({"hook_name_out": output_hook(sae)} if output_hook(sae) != sae.hook_name else {}),
        "sae": {"d_in": int(sae.d_in), "d_sae": int(sae.d_sae),
                "architecture": getattr(sae, "architecture", None)},
        "values": values,
        "k": int(k),
        "positions": "last",
        "modes": list(modes),
        "select": select,
        "score": score,
        "selection": f"max correlation on the {select} rows' activations",
        "probes": probe_settings,
        "unit_variance_on": f"{select} activations",
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
                              f"{select} rows (seed {control_seed}), one per attribute",
        },
    }
    return AttributeSweep(table=_tidy(result.frame, recon.frame, curves), features=chosen,
                          probe_metrics=probe_metrics,
                          metadata=metadata, headline=tuple(headline))


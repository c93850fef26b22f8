"""Summaries of alignment statistics: top features, monosemanticity, interpretability scores.

Selecting "the best feature for an attribute" on the same rows that score it flatters a wide
dictionary: the maximum of 2048 noisy correlations is larger than the maximum of 64. Every
function that picks features therefore takes ``select_on=``: statistics computed on other rows
(e.g. the SAE-training activations) that choose the feature, which is then scored on ``stats``
(e.g. the test activations). With ``select_on=None`` selection and scoring use the same rows, as
in the paper.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from mechrec.alignment._validation import check_positive_int
from mechrec.alignment.stats import AlignmentStats

__all__ = [
    "MEAN_ROW",
    "best_feature_table",
    "best_features",
    "compare_interpretability",
    "feature_profiles",
    "interpretability_score",
    "interpretability_summary",
    "monosemanticity",
    "score_features",
    "top_features",
]

MEAN_ROW = "(mean)"
"""Label of the row holding the mean over attributes in comparison tables."""


def _attribute_positions(stats: AlignmentStats, attributes: Sequence[object] | None) -> np.ndarray:
    if attributes is None:
        return np.arange(stats.n_attributes)
    pos = stats.attribute_names.get_indexer(list(attributes))
    if (pos < 0).any():
        missing = [a for a, p in zip(attributes, pos, strict=True) if p < 0]
        raise ValueError(f"unknown attributes {missing[:5]}; known: {list(stats.attribute_names)}")
    return pos


def _feature_positions(stats: AlignmentStats, features: Sequence[object] | pd.Index) -> np.ndarray:
    pos = stats.feature_names.get_indexer(list(features))
    if (pos < 0).any():
        missing = [f for f, p in zip(features, pos, strict=True) if p < 0]
        raise ValueError(
            f"unknown features {missing[:5]}: feature labels must come from stats.feature_names"
        )
    return pos


def top_features(
    stats: AlignmentStats,
    metric: str = "correlation",
    k: int = 5,
    *,
    attributes: Sequence[object] | None = None,
) -> pd.DataFrame:
    """The ``k`` features with the largest ``metric`` for each attribute.

    Returns a long DataFrame with columns ``attribute, rank, feature`` and one column per computed
    metric (values at that feature-attribute pair). Ranks start at 1; NaN values never rank; ties
    go to the lower feature position.
    """
    k = check_positive_int(k, "k")
    values = stats.matrix(metric)
    rows = []
    for a in _attribute_positions(stats, attributes):
        col = values[:, a]
        valid = np.flatnonzero(~np.isnan(col))
        order = valid[np.lexsort((valid, -col[valid]))][:k]
        for rank, f in enumerate(order, start=1):
            row = {
                "attribute": stats.attribute_names[a],
                "rank": rank,
                "feature": stats.feature_names[f],
            }
            row.update({m: float(v[f, a]) for m, v in stats.values.items()})
            rows.append(row)
    columns = ["attribute", "rank", "feature", *stats.metrics]
    return pd.DataFrame(rows, columns=columns)


def best_features(stats: AlignmentStats, metric: str = "correlation") -> pd.Series:
    """For each attribute, the label of the feature with the largest ``metric``.

    Returns a Series indexed by attribute; attributes whose metric is NaN for every feature map to
    ``None``. Ties go to the lower feature position.
    """
    values = stats.matrix(metric)
    chosen: list[object] = []
    for a in range(stats.n_attributes):
        col = values[:, a]
        if np.isnan(col).all():
            chosen.append(None)
        else:
            chosen.append(stats.feature_names[int(np.nanargmax(col))])
    return pd.Series(chosen, index=stats.attribute_names, name="feature", dtype=object)


def score_features(
    stats: AlignmentStats,
    selection: Mapping[object, object] | pd.Series,
    *,
    metrics: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Metrics of chosen features on ``stats``: one row per attribute of ``selection``.

    Args:
        stats: the statistics to score on (e.g. test rows).
        selection: attribute -> feature label, e.g. :func:`best_features` of other rows. A feature
            of ``None`` gives NaN metrics.
        metrics: metrics to report (default all computed ones).

    Returns:
        DataFrame indexed by attribute with columns ``feature``, the metrics, and ``prevalence``.
    """
    selection = pd.Series(selection, dtype=object)
    report = list(stats.metrics if metrics is None else metrics)
    for m in report:
        stats.matrix(m)  # validates the name
    a_pos = _attribute_positions(stats, list(selection.index))
    rows = []
    for attr, a in zip(selection.index, a_pos, strict=True):
        feat = selection[attr]
        row: dict[str, object] = {"feature": feat}
        if feat is None or (isinstance(feat, float) and np.isnan(feat)):
            row.update({m: np.nan for m in report})
        else:
            f = _feature_positions(stats, [feat])[0]
            row.update({m: float(stats.values[m][f, a]) for m in report})
        row["prevalence"] = float(stats.attribute_prevalence[a])
        rows.append(row)
    frame = pd.DataFrame(rows, index=pd.Index(selection.index, name="attribute"))
    frame["feature"] = pd.Series([r["feature"] for r in rows], index=frame.index, dtype=object)
    return frame[["feature", *report, "prevalence"]]


def best_feature_table(
    stats: AlignmentStats,
    metric: str = "correlation",
    *,
    select_on: AlignmentStats | None = None,
    metrics: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Per attribute, the best feature by ``metric`` and all its metrics (paper Table 2).

    The feature is chosen on ``select_on`` (default: ``stats`` itself) and scored on ``stats``.
    Rows are sorted by the scored ``metric``, descending; add the mean row with
    :func:`interpretability_summary` or ``table.mean(numeric_only=True)``.
    """
    chooser = stats if select_on is None else select_on
    if select_on is not None:
        stats.check_compatible(select_on, "select_on")
    table = score_features(stats, best_features(chooser, metric), metrics=metrics)
    if metric in table.columns:
        table = table.sort_values(metric, ascending=False, kind="stable", na_position="last")
    return table


def interpretability_score(
    stats: AlignmentStats,
    metric: str = "correlation",
    *,
    select_on: AlignmentStats | None = None,
) -> float:
    """Mean over attributes of the best feature's ``metric``: the paper's overall number.

    Attributes where the metric is undefined (NaN) are left out of the mean; NaN if none remain.
    """
    table = best_feature_table(stats, metric, select_on=select_on, metrics=[metric])
    values = table[metric].to_numpy(dtype=float)
    return float(np.nanmean(values)) if (~np.isnan(values)).any() else float("nan")


def feature_profiles(
    stats: AlignmentStats,
    features: Sequence[object] | pd.Series,
    metric: str = "correlation",
) -> pd.DataFrame:
    """Rows of the ``metric`` matrix for the given features across all attributes (paper Fig. 2).

    ``features`` may be the Series returned by :func:`best_features`: the result is then indexed
    by attribute (the attribute the feature was chosen for) with the feature label in a column.
    """
    values = stats.matrix(metric)
    if isinstance(features, pd.Series):
        chosen = features.dropna()
        pos = _feature_positions(stats, list(chosen.to_numpy()))
        frame = pd.DataFrame(
            values[pos],
            index=pd.Index(chosen.index, name="selected_for"),
            columns=stats.attribute_names,
        )
        frame.insert(0, "feature", list(chosen.to_numpy()))
        return frame
    pos = _feature_positions(stats, list(features))
    return pd.DataFrame(
        values[pos],
        index=pd.Index(stats.feature_names[pos], name="feature"),
        columns=stats.attribute_names,
    )


def monosemanticity(
    stats: AlignmentStats,
    metric: str = "correlation",
    *,
    features: Sequence[object] | None = None,
) -> pd.DataFrame:
    """How much each feature prefers its best attribute over its second best.

    Returns a DataFrame indexed by feature with ``best_attribute, best, second_attribute, second,
    margin`` (best - second) and ``ratio`` (second / best; near 0 means monosemantic, near 1
    means shared between two attributes). NaN values are ignored; with fewer than two defined
    attributes the second-best columns are empty.
    """
    values = stats.matrix(metric)
    pos = np.arange(stats.n_features) if features is None else _feature_positions(stats, features)
    rows = []
    for f in pos:
        row = values[f]
        valid = np.flatnonzero(~np.isnan(row))
        order = valid[np.lexsort((valid, -row[valid]))]
        best = order[0] if order.size else None
        second = order[1] if order.size > 1 else None
        b = float(row[best]) if best is not None else np.nan
        s = float(row[second]) if second is not None else np.nan
        rows.append(
            {
                "best_attribute": stats.attribute_names[best] if best is not None else None,
                "best": b,
                "second_attribute": stats.attribute_names[second] if second is not None else None,
                "second": s,
                "margin": b - s,
                "ratio": s / b if b > 0 else np.nan,
            }
        )
    return pd.DataFrame(rows, index=pd.Index(stats.feature_names[pos], name="feature"))


def _check_sources(
    scored: Mapping[str, AlignmentStats], select_on: Mapping[str, AlignmentStats] | None
) -> None:
    if not scored:
        raise ValueError("scored must name at least one AlignmentStats, e.g. {'SAE': stats}")
    names = None
    for name, st in scored.items():
        if not isinstance(st, AlignmentStats):
            raise ValueError(f"scored[{name!r}] must be AlignmentStats, got {type(st).__name__}")
        if names is None:
            names = st.attribute_names
        elif not st.attribute_names.equals(names):
            raise ValueError(
                f"scored[{name!r}] has attributes {list(st.attribute_names)[:5]}... but others "
                f"have {list(names)[:5]}...: compare on the same attributes"
            )
    if select_on is not None:
        extra = set(select_on) - set(scored)
        if extra:
            raise ValueError(
                f"select_on names {sorted(extra)} that are not in scored {list(scored)}"
            )
        for name, sel in select_on.items():
            scored[name].check_compatible(sel, f"select_on[{name!r}]")


def compare_interpretability(
    scored: Mapping[str, AlignmentStats],
    metric: str = "correlation",
    *,
    select_on: Mapping[str, AlignmentStats] | None = None,
    report: Sequence[str] = ("correlation", "roc_auc", "sensitivity"),
) -> pd.DataFrame:
    """Best feature per attribute for several feature sets side by side (paper Fig. 4).

    Args:
        scored: name -> statistics to score on, e.g. ``{"SAE": ..., "neurons": ...,
            "random": ...}``, all over the same attributes and rows.
        metric: the metric that chooses the best feature.
        select_on: name -> statistics that choose the feature for that entry (e.g. computed on the
            SAE-training rows); entries not named here choose on their scored statistics.
        report: metrics to show for each chosen feature.

    Returns:
        DataFrame indexed by attribute plus a final :data:`MEAN_ROW`, with two-level columns
        ``(name, "feature")`` and ``(name, metric)`` for each reported metric, and
        ``("attribute", "prevalence")`` first.
    """
    _check_sources(scored, select_on)
    select_on = dict(select_on or {})
    parts = {}
    prevalence = None
    for name, st in scored.items():
        available = [m for m in report if m in st.values]
        table = best_feature_table(st, metric, select_on=select_on.get(name), metrics=available)
        table = table.reindex(st.attribute_names)
        prevalence = table["prevalence"] if prevalence is None else prevalence
        part = table[["feature", *available]].copy()
        part["feature"] = part["feature"].astype(object)
        parts[name] = part
    frame = pd.concat(parts, axis=1)
    frame.insert(0, ("attribute", "prevalence"), prevalence)
    numeric = [c for c in frame.columns if c[1] != "feature"]
    mean_row = frame[numeric].astype(float).mean(axis=0, skipna=True)
    frame.loc[MEAN_ROW] = [mean_row[c] if c in mean_row.index else None for c in frame.columns]
    frame.index.name = "attribute"
    return frame


def interpretability_summary(
    scored: Mapping[str, AlignmentStats],
    metric: str = "correlation",
    *,
    select_on: Mapping[str, AlignmentStats] | None = None,
    report: Sequence[str] = ("correlation", "roc_auc", "sensitivity"),
) -> pd.DataFrame:
    """Mean over attributes of each reported metric of the best features, one row per name.

    The headline comparison (paper Table 2's last row, per feature set): e.g. SAE vs neurons vs a
    random-projection control. Same arguments as :func:`compare_interpretability`.
    """
    frame = compare_interpretability(scored, metric, select_on=select_on, report=report)
    mean = frame.loc[MEAN_ROW]
    rows = {
        name: {m: float(mean[(name, m)]) for m in report if (name, m) in frame.columns}
        for name in scored
    }
    out = pd.DataFrame.from_dict(rows, orient="index").reindex(columns=list(report))
    out.index.name = "features"
    out.insert(0, "n_features", [scored[n].n_features for n in scored])
    out.insert(
        1, "selected_on", ["other rows" if n in (select_on or {}) else "same rows" for n in scored]
    )
    return out

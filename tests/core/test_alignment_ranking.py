"""mechrec.alignment.ranking: top features, selection vs scoring, summaries and comparisons."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mechrec.alignment import (
    MEAN_ROW,
    AlignmentStats,
    alignment_stats,
    best_feature_table,
    best_features,
    compare_interpretability,
    feature_profiles,
    interpretability_score,
    interpretability_summary,
    monosemanticity,
    score_features,
    top_features,
)


def make_stats(corr: np.ndarray, **extra: np.ndarray) -> AlignmentStats:
    """Hand-made statistics with the given correlation matrix (F x A)."""
    f, a = corr.shape
    values = {"correlation": corr, **extra}
    return AlignmentStats(
        values=values,
        feature_names=pd.RangeIndex(f),
        attribute_names=pd.Index([f"g{j}" for j in range(a)]),
        n_rows=100,
        threshold=0.0,
        attribute_prevalence=np.linspace(0.1, 0.5, a),
        attribute_is_binary=np.ones(a, bool),
        feature_mean=np.zeros(f),
        feature_active_rate=np.zeros(f),
    )


CORR = np.array(
    [
        [0.9, 0.1, np.nan],
        [0.5, 0.6, np.nan],
        [0.5, 0.2, np.nan],
        [-0.2, 0.6, np.nan],
    ]
)


def test_top_features_orders_and_breaks_ties_by_position() -> None:
    stats = make_stats(CORR, roc_auc=CORR + 1)
    top = top_features(stats, "correlation", k=3)
    g0 = top[top.attribute == "g0"]
    assert g0.feature.tolist() == [0, 1, 2]  # 0.5 tie between features 1 and 2 -> lower first
    assert g0["rank"].tolist() == [1, 2, 3]
    g1 = top[top.attribute == "g1"]
    assert g1.feature.tolist() == [1, 3, 2]
    assert g1.roc_auc.tolist() == pytest.approx([1.6, 1.6, 1.2])
    assert top[top.attribute == "g2"].empty  # all NaN: nothing ranks
    assert list(top.columns) == ["attribute", "rank", "feature", "correlation", "roc_auc"]
    only = top_features(stats, k=1, attributes=["g1"])
    assert only.feature.tolist() == [1]
    with pytest.raises(ValueError, match="unknown attributes"):
        top_features(stats, attributes=["nope"])
    with pytest.raises(ValueError, match="k must be a positive integer"):
        top_features(stats, k=0)


def test_best_features_and_score() -> None:
    stats = make_stats(CORR)
    best = best_features(stats)
    assert best.to_dict() == {"g0": 0, "g1": 1, "g2": None}
    table = score_features(stats, best)
    assert table.loc["g0", "correlation"] == 0.9
    assert np.isnan(table.loc["g2", "correlation"])
    assert list(table.columns) == ["feature", "correlation", "prevalence"]
    assert table.loc["g1", "prevalence"] == pytest.approx(0.3)
    with pytest.raises(ValueError, match="unknown features"):
        score_features(stats, {"g0": 17})


def test_select_on_other_rows_scores_the_selected_feature() -> None:
    train = make_stats(CORR)
    test_corr = CORR.copy()
    test_corr[0, 0] = 0.1  # the feature chosen on train collapses on test
    test_corr[2, 0] = 0.8
    test = make_stats(test_corr)
    honest = best_feature_table(test, select_on=train)
    assert honest.loc["g0", "feature"] == 0
    assert honest.loc["g0", "correlation"] == pytest.approx(0.1)
    in_sample = best_feature_table(test)
    assert in_sample.loc["g0", "feature"] == 2
    assert interpretability_score(test, select_on=train) == pytest.approx((0.1 + 0.6) / 2)
    assert interpretability_score(test) == pytest.approx((0.8 + 0.6) / 2)
    # sorted by the scored metric, NaN last
    assert in_sample.index.tolist() == ["g0", "g1", "g2"]
    other = make_stats(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="select_on has 3 features"):
        best_feature_table(test, select_on=other)


def test_select_on_removes_the_selection_bias_on_noise() -> None:
    """Pure noise: the in-sample best of many features looks aligned, the honest one does not."""
    rng = np.random.default_rng(0)
    n, width = 400, 256
    y = rng.random((2 * n, 4)) < 0.3
    x = rng.normal(size=(2 * n, width))
    train = alignment_stats(x[:n], y[:n], metrics=["correlation"])
    test = alignment_stats(x[n:], y[n:], metrics=["correlation"])
    flattering = interpretability_score(test)
    honest = interpretability_score(test, select_on=train)
    assert flattering > 0.1
    assert abs(honest) < 0.1


def test_monosemanticity_and_profiles() -> None:
    stats = make_stats(CORR)
    mono = monosemanticity(stats)
    assert mono.loc[0, "best_attribute"] == "g0"
    assert mono.loc[0, "second_attribute"] == "g1"
    assert mono.loc[0, "margin"] == pytest.approx(0.8)
    assert mono.loc[0, "ratio"] == pytest.approx(0.1 / 0.9)
    assert mono.loc[3, "best_attribute"] == "g1"
    one_attr = make_stats(np.array([[0.3, np.nan]]))
    lone = monosemanticity(one_attr)
    assert lone.loc[0, "second_attribute"] is None and np.isnan(lone.loc[0, "margin"])
    assert monosemanticity(stats, features=[2]).index.tolist() == [2]

    prof = feature_profiles(stats, best_features(stats))
    assert prof.index.tolist() == ["g0", "g1"]  # g2 has no feature
    assert prof.loc["g1", "feature"] == 1
    assert prof.loc["g1", "g0"] == 0.5
    plain = feature_profiles(stats, [3, 0])
    assert plain.index.tolist() == [3, 0]
    np.testing.assert_array_equal(plain.to_numpy(), CORR[[3, 0]])


def test_compare_and_summary_side_by_side() -> None:
    sae = make_stats(CORR, roc_auc=np.full_like(CORR, 0.7))
    neurons = make_stats(CORR[:2] / 2, roc_auc=np.full((2, 3), 0.6))
    sae_train = make_stats(CORR[[1, 0, 2, 3]], roc_auc=np.full_like(CORR, 0.7))
    frame = compare_interpretability(
        {"SAE": sae, "neurons": neurons},
        select_on={"SAE": sae_train},
        report=("correlation", "roc_auc"),
    )
    assert frame.index.tolist() == ["g0", "g1", "g2", MEAN_ROW]
    # SAE chooses on train rows with features 0 and 1 swapped: g0 -> 1, g1 -> 0 (tie -> lower)
    assert frame.loc["g0", ("SAE", "feature")] == 1
    assert frame.loc["g1", ("SAE", "feature")] == 0
    assert frame.loc["g0", ("SAE", "correlation")] == pytest.approx(0.5)
    assert frame.loc["g1", ("SAE", "correlation")] == pytest.approx(0.1)
    assert frame.loc[MEAN_ROW, ("SAE", "correlation")] == pytest.approx(0.3)
    assert frame.loc[MEAN_ROW, ("SAE", "roc_auc")] == pytest.approx(0.7)
    assert frame.loc["g1", ("neurons", "feature")] == 1
    assert frame.loc[MEAN_ROW, ("neurons", "correlation")] == pytest.approx((0.45 + 0.3) / 2)
    assert frame.loc["g1", ("attribute", "prevalence")] == pytest.approx(0.3)

    summary = interpretability_summary(
        {"SAE": sae, "neurons": neurons}, select_on={"SAE": sae_train}, report=("correlation",)
    )
    assert summary.index.tolist() == ["SAE", "neurons"]
    assert summary.loc["SAE", "correlation"] == pytest.approx(0.3)
    assert summary.loc["neurons", "n_features"] == 2
    assert summary.selected_on.tolist() == ["other rows", "same rows"]

    with pytest.raises(ValueError, match="not in scored"):
        compare_interpretability({"SAE": sae}, select_on={"random": sae})
    with pytest.raises(ValueError, match="at least one"):
        compare_interpretability({})

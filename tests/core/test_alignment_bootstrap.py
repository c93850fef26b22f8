"""mechrec.alignment.bootstrap: exact resampled statistics, intervals, pairing, grouping, errors."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from scipy.stats import norm

from mechrec.alignment import (
    MEAN_ROW,
    METRICS,
    AlignmentBootstrap,
    FewGroupsWarning,
    LazyActivations,
    alignment_stats,
    bootstrap_alignment,
    score_features,
    selected_columns,
)
from mechrec.alignment.bootstrap import _AucStatistics, _Resampler


def shifted(n: int, delta: float, p: float, rng: np.random.Generator
            ) -> tuple[np.ndarray, np.ndarray]:
    """y ~ Bernoulli(p), x = delta * y + N(0, 1): true correlation and AUC known in closed form."""
    y = (rng.random(n) < p).astype(np.float64)
    x = delta * y + rng.normal(size=n)
    return x, y


def true_correlation(delta: float, p: float) -> float:
    v = p * (1 - p)
    return delta * np.sqrt(v) / np.sqrt(delta**2 * v + 1.0)


def toy(n: int = 400, seed: int = 0) -> tuple[np.ndarray, pd.DataFrame]:
    """Two features (0: related to g0, sparse ReLU; 1: noise) and two binary attributes."""
    rng = np.random.default_rng(seed)
    y0 = (rng.random(n) < 0.3).astype(float)
    y1 = (rng.random(n) < 0.5).astype(float)
    f0 = np.maximum(0.0, y0 + rng.normal(size=n) - 0.5).round(1)  # ties and zeros
    f1 = rng.normal(size=n)
    return np.stack([f0, f1], axis=1), pd.DataFrame({"g0": y0, "g1": y1})


def test_resampled_statistics_equal_alignment_stats_on_the_written_out_resample() -> None:
    acts, labels = toy(300)
    labels["score"] = np.random.default_rng(5).normal(size=len(labels))  # continuous column
    groups = np.random.default_rng(1).integers(0, 40, size=len(labels))
    selection = {"g0": 0, "g1": 1, "score": 0}
    boot = bootstrap_alignment({"f": acts}, labels, {"f": selection}, groups=groups,
                               metrics=METRICS, n_resamples=6, seed=3)
    codes, _ = pd.factorize(pd.Series(groups), sort=True)
    counts = _Resampler(boot.n_groups, 6, 3, 2**20).counts(0, 6)
    for b in range(6):
        rows = np.repeat(np.arange(len(labels)), counts[b][codes].astype(int))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = alignment_stats(acts[rows], labels.iloc[rows], metrics=METRICS)
        for a, (attr, feature) in enumerate(selection.items()):
            for m in METRICS:
                expected = ref.values[m][feature, a]
                got = boot.samples["f"][m][b, a]
                assert (np.isnan(expected) and np.isnan(got)) or got == pytest.approx(
                    expected, abs=1e-10), (m, attr, b)
    # point values are exactly those of the ranking functions on all rows
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = alignment_stats(acts, labels, metrics=METRICS)
    table = score_features(full, selection, metrics=list(METRICS))
    for m in METRICS:
        np.testing.assert_allclose(boot.estimates["f"][m].to_numpy(dtype=float),
                                   table[m].to_numpy(dtype=float), rtol=0, atol=0)


@pytest.mark.parametrize("rounding", [1, 6])  # many ties / almost none
def test_both_auc_paths_give_the_auc_of_the_written_out_resample(rounding: int) -> None:
    rng = np.random.default_rng(rounding)
    n, n_groups = 240, 30
    y = (rng.random(n) < 0.4).astype(float)
    x = np.maximum(0.0, rng.normal(size=n) + 0.6 * y - 0.3).round(rounding)
    codes = rng.integers(0, n_groups, size=n)
    counts = _Resampler(n_groups, 5, 0, 2**20).counts(0, 5)
    quadratic = _AucStatistics(x, y, codes, n_groups, 2**20, quadratic=True)(counts)
    linear = _AucStatistics(x, y, codes, n_groups, 2**20, quadratic=False)(counts)
    np.testing.assert_allclose(quadratic, linear, atol=1e-12)
    for b in range(5):
        rows = np.repeat(np.arange(n), counts[b][codes].astype(int))
        ref = alignment_stats(x[rows, None], y[rows], metrics=["roc_auc"]).values["roc_auc"]
        assert linear[b] == pytest.approx(ref[0, 0], abs=1e-12)


def test_a_related_feature_excludes_zero_and_a_noise_feature_includes_it() -> None:
    acts, labels = toy(600)
    boot = bootstrap_alignment({"f": acts}, labels, {"f": {"g0": 0, "g1": 1}},
                               n_resamples=300, seed=0)
    ci = boot.intervals(0.95).set_index(["attribute", "metric"])
    related, noise = ci.loc[("g0", "correlation")], ci.loc[("g1", "correlation")]
    assert related["lower"] > 0.1 and related["lower"] <= related["estimate"] <= related["upper"]
    assert noise["lower"] < 0 < noise["upper"]
    assert ci.loc[("g1", "roc_auc"), "lower"] < 0.5 < ci.loc[("g1", "roc_auc"), "upper"]
    assert ci.loc[("g0", "roc_auc"), "lower"] > 0.5
    assert (ci["n_valid"] == 300).all() and (ci["std_error"] > 0).all()
    mean = ci.loc[(MEAN_ROW, "correlation")]
    assert mean["estimate"] == pytest.approx(ci.loc[["g0", "g1"]].xs(
        "correlation", level="metric")["estimate"].mean())


def test_interval_coverage_is_roughly_nominal_on_repeated_draws() -> None:
    delta, p, n, draws = 0.5, 0.3, 400, 80
    rho, auc = true_correlation(delta, p), float(norm.cdf(delta / np.sqrt(2)))
    rng = np.random.default_rng(2024)
    hits = {"correlation": 0, "roc_auc": 0}
    for d in range(draws):
        x, y = shifted(n, delta, p, rng)
        boot = bootstrap_alignment({"f": x[:, None]}, y, {"f": {"attr_0": 0}},
                                   metrics=("correlation", "roc_auc"), n_resamples=200, seed=d)
        ci = boot.intervals(0.9, per_attribute=False).set_index("metric")
        hits["correlation"] += ci.loc["correlation", "lower"] <= rho <= ci.loc[
            "correlation", "upper"]
        hits["roc_auc"] += ci.loc["roc_auc", "lower"] <= auc <= ci.loc["roc_auc", "upper"]
    for metric, count in hits.items():  # nominal 0.9; binomial sd ~0.034 at 80 draws
        assert 0.75 <= count / draws <= 0.99, (metric, count)


def test_grouped_resampling_of_copies_equals_row_resampling_of_the_originals() -> None:
    acts, labels = toy(200)
    copies = 5
    dup_acts = np.repeat(acts, copies, axis=0)
    dup_labels = labels.loc[labels.index.repeat(copies)].reset_index(drop=True)
    groups = np.repeat(np.arange(200), copies)
    selection = {"f": {"g0": 0, "g1": 1}}
    rows = bootstrap_alignment({"f": acts}, labels, selection, n_resamples=100, seed=7)
    grouped = bootstrap_alignment({"f": dup_acts}, dup_labels, selection, groups=groups,
                                  n_resamples=100, seed=7)
    naive = bootstrap_alignment({"f": dup_acts}, dup_labels, selection, n_resamples=100, seed=7)
    assert grouped.grouped and grouped.n_groups == 200 and not naive.grouped
    for m in grouped.metrics:
        np.testing.assert_allclose(grouped.samples["f"][m], rows.samples["f"][m], atol=1e-12)
    # treating the correlated copies as independent rows gives intervals ~sqrt(5) too narrow
    width = {name: (b.intervals().query("attribute == 'g0' and metric == 'correlation'")
                    .eval("upper - lower").iloc[0]) for name, b in
             (("grouped", grouped), ("naive", naive))}
    assert width["grouped"] > 1.6 * width["naive"]


def test_paired_difference_of_a_source_with_itself_is_exactly_zero() -> None:
    acts, labels = toy(300)
    groups = np.arange(300) // 3
    other = np.random.default_rng(9).normal(size=(300, 4))
    sel = {"g0": 0, "g1": 1}
    boot = bootstrap_alignment({"A": acts, "B": acts.copy(), "C": other}, labels,
                               {"A": sel, "B": sel, "C": {"g0": 2, "g1": 3}}, groups=groups,
                               n_resamples=50, seed=1)
    same = boot.differences([("A", "B")])
    assert (same[["estimate", "lower", "upper", "std_error"]].to_numpy() == 0).all()
    assert (same["share_positive"] == 0).all()
    diff = boot.differences(per_attribute=False)
    assert list(zip(diff["source"], diff["versus"], strict=True))[::3] == [
        ("A", "B"), ("A", "C"), ("B", "C")]
    a_c = diff[(diff["source"] == "A") & (diff["versus"] == "C")
               & (diff["metric"] == "correlation")].iloc[0]
    expected = boot.mean_samples("A") - boot.mean_samples("C")
    assert a_c["estimate"] == pytest.approx(boot.mean_estimate("A") - boot.mean_estimate("C"))
    assert a_c["lower"] == pytest.approx(np.quantile(expected, 0.025))
    assert a_c["share_positive"] == pytest.approx((expected > 0).mean())
    # pairing: the difference varies less than either source alone would suggest when correlated
    assert a_c["lower"] > 0


def test_same_seed_same_resamples_whatever_the_memory_budget_and_input_type() -> None:
    acts, labels = toy(250)
    groups = np.arange(250) % 37
    sel = {"f": {"g0": 0, "g1": 1}}
    base = bootstrap_alignment({"f": acts}, labels, sel, groups=groups, n_resamples=40, seed=4)
    small = bootstrap_alignment({"f": acts}, labels, sel, groups=groups, n_resamples=40, seed=4,
                                max_memory=4096)  # no count cache, one resample per block
    other_seed = bootstrap_alignment({"f": acts}, labels, sel, groups=groups, n_resamples=40,
                                     seed=5)
    inputs = {
        "sparse": sp.csr_matrix(acts),
        "torch": torch.from_numpy(acts),
        "lazy": LazyActivations(acts, lambda chunk: chunk, 2, chunk_rows=64),
    }
    for m in base.metrics:
        # same resamples; blocks of another size may round the last bit differently
        np.testing.assert_allclose(small.samples["f"][m], base.samples["f"][m], atol=1e-12)
        assert not np.array_equal(other_seed.samples["f"][m], base.samples["f"][m])
    for kind, data in inputs.items():
        got = bootstrap_alignment({"f": data}, labels, sel, groups=groups, n_resamples=40,
                                  seed=4)
        for m in base.metrics:
            np.testing.assert_allclose(got.samples["f"][m], base.samples["f"][m], atol=1e-12,
                                       err_msg=kind)


def test_feature_labels_missing_selections_and_undefined_attributes() -> None:
    acts, labels = toy(200)
    labels["never"] = 0.0
    boot = bootstrap_alignment({"f": acts}, labels, {"f": {"g0": "a", "never": "b"}},
                               feature_names={"f": ["a", "b"]}, n_resamples=30)
    est = boot.estimates["f"]
    assert np.isnan(est.loc["g1"]).all()  # not selected
    assert np.isnan(est.loc["never", "correlation"])  # no positives
    assert np.isnan(boot.samples["f"]["correlation"][:, 2]).all()
    # the mean runs over defined attributes only, so it stays defined on every resample
    mean = boot.intervals(per_attribute=False).set_index("metric")
    assert mean.loc["correlation", "estimate"] == pytest.approx(est.loc["g0", "correlation"])
    assert mean.loc["correlation", "n_valid"] == 30
    ci = boot.intervals().set_index(["attribute", "metric"])
    assert ci.loc[("g0", "correlation"), "feature"] == "a"
    assert ci.loc[("g1", "correlation"), "feature"] is None
    assert ci.loc[("never", "correlation"), "n_valid"] == 0


def test_selected_columns_reads_only_the_chosen_features() -> None:
    acts = np.random.default_rng(0).normal(size=(50, 6)).astype(np.float32)
    for data in (acts, sp.csc_matrix(acts), torch.from_numpy(acts)):
        got = selected_columns(data, [4, 1, 4], max_memory=64)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, acts[:, [4, 1, 4]])
    with pytest.raises(ValueError, match="outside"):
        selected_columns(acts, [6])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda kw: kw.update(selections={"g": {}}), "selections must name exactly"),
        (lambda kw: kw.update(scored={"f": np.zeros((10, 2)), "g": np.zeros((9, 2))},
                              selections={"f": {}, "g": {}}), "on the same rows"),
        (lambda kw: kw.update(attributes=np.zeros((9, 1))), "attributes have 9 rows"),
        (lambda kw: kw.update(groups=np.zeros(9)), "groups have 9 ids"),
        (lambda kw: kw.update(groups=np.zeros(10)), "at least 2 groups"),
        (lambda kw: kw.update(groups=np.r_[np.arange(9), np.nan]), "missing id at row 9"),
        (lambda kw: kw.update(groups=np.zeros((10, 2))), "1-D"),
        (lambda kw: kw.update(selections={"f": {"nope": 0}}), "unknown attributes"),
        (lambda kw: kw.update(selections={"f": {"attr_0": 5}}), "not a feature"),
        (lambda kw: kw.update(selections={"f": [0]}), "must map attribute"),
        (lambda kw: kw.update(metrics=("accuracy",)), "unknown metrics"),
        (lambda kw: kw.update(n_resamples=0), "n_resamples"),
        (lambda kw: kw.update(seed=-1), "seed"),
        (lambda kw: kw.update(scored={}), "at least one source"),
        (lambda kw: kw.update(feature_names={"g": [0, 1]}), "unknown sources"),
    ],
)
def test_bad_input_raises_a_clear_error(change, message: str) -> None:
    rng = np.random.default_rng(0)
    kwargs = {"scored": {"f": rng.normal(size=(10, 2))}, "attributes": rng.random(10) < 0.5,
              "selections": {"f": {"attr_0": 0}}, "n_resamples": 5}
    change(kwargs)
    with pytest.raises(ValueError, match=message), warnings.catch_warnings():
        warnings.simplefilter("ignore", FewGroupsWarning)
        bootstrap_alignment(kwargs.pop("scored"), kwargs.pop("attributes"),
                            kwargs.pop("selections"), **kwargs)


def test_few_groups_warn_and_bad_confidence_or_names_raise() -> None:
    acts, labels = toy(60)
    with pytest.warns(FewGroupsWarning, match="only 6 groups"):
        boot = bootstrap_alignment({"f": acts}, labels, {"f": {"g0": 0}},
                                   groups=np.arange(60) % 6, n_resamples=10)
    assert isinstance(boot, AlignmentBootstrap)
    for bad in (0.0, 1.0, 95, "x"):
        with pytest.raises(ValueError, match="confidence"):
            boot.intervals(bad)
    with pytest.raises(ValueError, match="unknown source"):
        boot.differences([("f", "g")])
    with pytest.raises(ValueError, match="unknown attributes"):
        boot.intervals(attributes=["zzz"])
    with pytest.raises(ValueError, match="was not resampled"):
        boot.intervals(metrics=["precision"])

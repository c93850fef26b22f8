"""mechrec.alignment.stats: exactness against scipy/sklearn, degenerate inputs, input kinds."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.stats import pearsonr
from sklearn.metrics import roc_auc_score

from mechrec.alignment import (
    METRICS,
    AlignmentStats,
    DegenerateInputWarning,
    LazyActivations,
    alignment_stats,
)


def reference(x: np.ndarray, y: np.ndarray, threshold: float = 0.0) -> dict[str, float]:
    """Per-pair metrics from scipy / sklearn / plain numpy."""
    binary = bool(np.isin(y, [0.0, 1.0]).all())
    out = {}
    if x.min() == x.max() or y.min() == y.max():
        out["correlation"] = np.nan
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy warns on nearly constant input
            out["correlation"] = float(pearsonr(x, y).statistic)
    if not binary:
        out.update(roc_auc=np.nan, sensitivity=np.nan, precision=np.nan)
        out["mean_given_attribute"] = np.nan
        return out
    pos = y == 1
    active = x > threshold
    out["roc_auc"] = float(roc_auc_score(y, x)) if 0 < pos.sum() < y.size else np.nan
    out["sensitivity"] = float(active[pos].mean()) if pos.any() else np.nan
    out["precision"] = float(pos[active].mean()) if active.any() else np.nan
    out["mean_given_attribute"] = float(x[pos].mean()) if pos.any() else np.nan
    return out


def assert_matches_reference(
    stats: AlignmentStats, x: np.ndarray, y: np.ndarray, threshold: float = 0.0
) -> None:
    for f in range(x.shape[1]):
        for a in range(y.shape[1]):
            ref = reference(x[:, f].astype(np.float64), y[:, a].astype(np.float64), threshold)
            for metric, expected in ref.items():
                got = stats.values[metric][f, a]
                if np.isnan(expected):
                    assert np.isnan(got), (metric, f, a, got)
                else:
                    assert got == pytest.approx(expected, abs=1e-6), (metric, f, a)


def quiet_stats(*args, **kwargs) -> AlignmentStats:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateInputWarning)
        return alignment_stats(*args, **kwargs)


# Activations: heavy ties (small integers), sparse non-negative (SAE-like) or general floats.
@st.composite
def activation_matrix(draw: st.DrawFn) -> np.ndarray:
    n = draw(st.integers(2, 40))
    f = draw(st.integers(1, 4))
    kind = draw(st.sampled_from(["ties", "sparse", "floats"]))
    if kind == "ties":
        elems = st.integers(-2, 2).map(float)
    elif kind == "sparse":
        elems = st.one_of(
            st.just(0.0),
            st.just(0.0),
            st.just(0.0),
            st.floats(0.0, 50.0, allow_subnormal=False, width=32),
        )
    else:
        elems = st.floats(-1e3, 1e3, allow_subnormal=False, width=32)
    return draw(hnp.arrays(np.float64, (n, f), elements=elems))


@st.composite
def data(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    x = draw(activation_matrix())
    a = draw(st.integers(1, 3))
    y = draw(hnp.arrays(np.float64, (x.shape[0], a), elements=st.sampled_from([0.0, 1.0])))
    return x, y


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data())
def test_matches_scipy_and_sklearn(xy: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = xy
    assert_matches_reference(quiet_stats(x, y), x, y)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data(), st.sampled_from([-1.0, 0.0, 0.5, 2.0]))
def test_sparse_and_chunked_paths_agree(xy: tuple[np.ndarray, np.ndarray], t: float) -> None:
    x, y = xy
    dense = quiet_stats(x, y, threshold=t)
    assert_matches_reference(dense, x, y, threshold=t)
    for other in (
        quiet_stats(sp.csr_matrix(x), y, threshold=t),
        quiet_stats(x, y, threshold=t, max_memory=64),  # one feature per block, tiny chunks
        quiet_stats(LazyActivations(x, lambda c: c, x.shape[1], chunk_rows=3), y, threshold=t),
    ):
        for m in METRICS:
            np.testing.assert_allclose(other.values[m], dense.values[m], atol=1e-12, equal_nan=True)


@settings(max_examples=60, deadline=None)
@given(
    activation_matrix(),
    st.floats(-100, 100, allow_subnormal=False),
    st.floats(0.01, 10, allow_subnormal=False),
)
def test_continuous_attribute_correlation(x: np.ndarray, offset: float, scale: float) -> None:
    rng = np.random.default_rng(x.shape[0])
    y = offset + scale * rng.normal(size=(x.shape[0], 1))
    stats = quiet_stats(x, y)
    assert not stats.attribute_is_binary[0]
    assert_matches_reference(stats, x, y)


def test_sae_like_data_against_loop() -> None:
    rng = np.random.default_rng(0)
    n, f, a = 3000, 12, 5
    y = (rng.random((n, a)) < [0.02, 0.1, 0.3, 0.5, 0.05]).astype(np.int8)
    fire = rng.random((n, f)) < 0.05 + 0.4 * y[:, rng.integers(0, a, f)]
    x = (rng.exponential(size=(n, f)) * fire).astype(np.float32)
    stats = alignment_stats(x, y)
    assert_matches_reference(stats, x, y)
    assert stats.values["correlation"].shape == (f, a)
    assert stats.feature_active_rate == pytest.approx((x > 0).mean(axis=0))
    assert stats.attribute_prevalence == pytest.approx(y.mean(axis=0))


def test_degenerate_inputs_give_nan_and_one_warning() -> None:
    rng = np.random.default_rng(1)
    n = 200
    x = rng.exponential(size=(n, 4)) * (rng.random((n, 4)) < 0.3)
    x[:, 1] = 0.0  # dead feature
    x[:, 2] = 3.5  # constant non-zero feature
    y = np.zeros((n, 3))
    y[:, 0] = rng.random(n) < 0.2
    y[:, 2] = 1.0  # no positives in column 1, all positives in column 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stats = alignment_stats(x, y, attribute_names=["ok", "empty", "all"])
    degenerate = [w for w in caught if issubclass(w.category, DegenerateInputWarning)]
    assert len(degenerate) == 1
    message = str(degenerate[0].message)
    for part in ("constant features", "never active", "without positive rows", "without negative"):
        assert part in message
    corr = stats.table("correlation")
    assert corr.loc[[1, 2]].isna().all().all()
    assert corr[["empty", "all"]].isna().all().all()
    assert np.isfinite(corr.loc[[0, 3], "ok"]).all()
    auc = stats.table("roc_auc")
    assert auc[["empty", "all"]].isna().all().all()
    assert auc.loc[1, "ok"] == 0.5 and auc.loc[2, "ok"] == 0.5  # constant features: chance
    assert stats.table("precision").loc[1].isna().all()  # never active
    assert stats.table("sensitivity")["empty"].isna().all()
    assert stats.table("sensitivity").loc[2, "all"] == 1.0
    assert stats.table("mean_given_attribute")["empty"].isna().all()


def test_no_warning_on_clean_data() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(50, 3))
    y = rng.random((50, 2)) < 0.5
    y[0] = [True, False]
    y[1] = [False, True]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        alignment_stats(x, y)


def test_continuous_columns_only_get_correlation() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(100, 2))
    frame = pd.DataFrame({"genre": rng.random(100) < 0.3, "year": rng.integers(1950, 2020, 100)})
    stats = alignment_stats(x, frame)
    assert list(stats.attribute_names) == ["genre", "year"]
    assert stats.attribute_is_binary.tolist() == [True, False]
    for m in ("roc_auc", "sensitivity", "precision", "mean_given_attribute"):
        assert np.isnan(stats.table(m)["year"]).all()
        assert np.isfinite(stats.table(m)["genre"]).all()
    expected = pearsonr(x[:, 1], frame["year"].to_numpy(float)).statistic
    assert stats.table("correlation").loc[1, "year"] == pytest.approx(expected, abs=1e-9)


def test_input_kinds_agree() -> None:
    rng = np.random.default_rng(4)
    n, f = 500, 6
    x = (rng.exponential(size=(n, f)) * (rng.random((n, f)) < 0.2)).astype(np.float32)
    y = rng.random((n, 3)) < 0.3
    base = alignment_stats(x, y)
    coo = sp.coo_matrix(x)
    # a non-canonical COO: the same entries split into two duplicates that must be summed
    dup = sp.coo_matrix(
        (np.concatenate([coo.data / 2, coo.data / 2]), (np.tile(coo.row, 2), np.tile(coo.col, 2))),
        shape=x.shape,
    )
    csc_dup = sp.csc_matrix(dup, copy=True)
    csc_dup.has_canonical_format = False
    before = csc_dup.data.copy()
    others = {
        "float64": alignment_stats(x.astype(np.float64), y),
        "torch": alignment_stats(torch.from_numpy(x), torch.from_numpy(y)),
        "csr": alignment_stats(sp.csr_matrix(x), y),
        "csc_array": alignment_stats(sp.csc_array(x), y),
        "coo_duplicates": alignment_stats(dup, y),
        "fortran_order": alignment_stats(np.asfortranarray(x), y.astype(np.int64)),
        "lazy_torch": alignment_stats(
            LazyActivations(torch.from_numpy(x), lambda c: c.clone(), f, chunk_rows=64), y
        ),
        "lazy_columns": alignment_stats(
            LazyActivations(
                x, lambda c: c, f, column_transform=lambda c, a, b: c[:, a:b], chunk_rows=77
            ),
            y,
            max_memory=1000,
        ),
        "threads": alignment_stats(x, y, n_jobs=2, max_memory=5000),
    }
    for name, other in others.items():
        for m in METRICS:
            np.testing.assert_allclose(
                other.values[m], base.values[m], atol=1e-12, equal_nan=True, err_msg=name
            )
    alignment_stats(csc_dup, y)
    np.testing.assert_array_equal(csc_dup.data, before)  # the caller's matrix is not modified


def test_metric_subset_and_tables() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(60, 3))
    y = rng.random((60, 2)) < 0.5
    stats = alignment_stats(
        x, y, metrics=["sensitivity", "correlation"], feature_names=["a", "b", "c"]
    )
    assert stats.metrics == ("correlation", "sensitivity")
    assert list(stats.table("sensitivity").index) == ["a", "b", "c"]
    assert list(stats.table("sensitivity").columns) == ["attr_0", "attr_1"]
    with pytest.raises(ValueError, match="not available"):
        stats.table("roc_auc")
    long = stats.to_long()
    assert list(long.columns) == ["feature", "attribute", "correlation", "sensitivity"]
    assert len(long) == 6
    row = long[(long.feature == "b") & (long.attribute == "attr_1")].iloc[0]
    assert row.correlation == stats.table("correlation").loc["b", "attr_1"]
    assert list(stats.feature_summary().columns) == ["mean", "active_rate"]
    assert list(stats.attribute_summary().columns) == ["prevalence", "binary"]


def test_validation_errors_name_the_problem() -> None:
    x = np.zeros((10, 3))
    y = np.zeros((9, 2))
    with pytest.raises(ValueError, match=r"9 rows \(shape \(9, 2\)\).*10 rows"):
        alignment_stats(x, y)
    bad = np.ones((10, 3))
    bad[4, 2] = np.nan
    with pytest.raises(ValueError, match="row 4, feature 2"):
        alignment_stats(bad, np.zeros((10, 1)))
    with pytest.raises(ValueError, match="row 4, feature 2"):
        alignment_stats(sp.csr_matrix(bad), np.zeros((10, 1)))
    ybad = np.zeros((10, 2))
    ybad[3, 1] = np.inf
    with pytest.raises(ValueError, match="row 3, column 1"):
        alignment_stats(x, ybad)
    with pytest.raises(ValueError, match="missing values"):
        alignment_stats(x, pd.DataFrame({"g": [1.0] * 9 + [None]}))
    with pytest.raises(ValueError, match="unknown metrics"):
        alignment_stats(x, np.zeros((10, 1)), metrics=["auc"])
    with pytest.raises(ValueError, match="attribute_names has 3 names"):
        alignment_stats(x, np.zeros((10, 2)), attribute_names=["a", "b", "c"])
    with pytest.raises(ValueError, match="unique"):
        alignment_stats(x, np.zeros((10, 2)), attribute_names=["a", "a"])
    with pytest.raises(ValueError, match="threshold must be finite"):
        alignment_stats(x, np.zeros((10, 1)), threshold=float("nan"))
    with pytest.raises(ValueError, match="2-D"):
        alignment_stats(np.zeros(10), np.zeros((10, 1)))
    with pytest.raises(ValueError, match="numpy array, torch tensor"):
        alignment_stats("activations", np.zeros((10, 1)))
    lazy = LazyActivations(np.zeros((10, 2)), lambda c: np.zeros((c.shape[0], 5)), 3)
    with pytest.raises(ValueError, match=r"returned shape \(10, 5\).*expected \(10, 3\)"):
        alignment_stats(lazy, np.zeros((10, 1)))

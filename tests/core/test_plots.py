"""The core's plotly figures (``mechrec.plots``) on real results of the tiny HookedTransformer.

An alignment run and an attribute sweep of a small SAE on the tiny model feed every figure;
each test checks that the traces hold exactly the numbers of the tables they were drawn from
(bars, error bars, heatmap cells, curves, histogram counts) and that hover texts carry the
exact values.
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from tiny_model import parity_range_study

from mechrec import plots
from mechrec.alignment import AlignmentRun, align
from mechrec.attribute_steering import AttributeSweep, attribute_sweep
from mechrec.saes import SAETrainingConfig, train_sae
from mechrec.study import TokenStudy

HOOK = "blocks.0.hook_resid_post"
VALUES = [-4.0, 0.0, 4.0]


@pytest.fixture(scope="module")
def study() -> TokenStudy:
    return parity_range_study()


@pytest.fixture(scope="module")
def sae(study: TokenStudy):
    config = SAETrainingConfig(architecture="topk", d_sae=32, k=4, steps=60, batch_size=64,
                               lr_warm_up_steps=0, seed=0)
    return train_sae(study.activations("fit", HOOK), config).sae


@pytest.fixture(scope="module")
def run(study: TokenStudy, sae) -> AlignmentRun:
    return align(study, sae, select="fit", score="eval")


@pytest.fixture(scope="module")
def sweep(study: TokenStudy, sae) -> AttributeSweep:
    return attribute_sweep(study, sae, ["even", "low"], select="fit", score="eval",
                           values=VALUES, k=5)


def test_importing_the_module_does_not_import_plotly() -> None:
    import subprocess

    code = ("import sys, mechrec.plots, mechrec.alignment, mechrec.attribute_steering; "
            "print('plotly' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_exact_hover_text() -> None:
    assert plots.exact(0.1 + 0.2) == "0.30000000000000004"
    assert plots.exact(np.int64(7)) == "7" and plots.exact(3.0) == "3"
    assert plots.exact(None) == "–" and plots.exact(float("nan")) == "–"
    assert plots.exact(pd.NA) == "–" and plots.exact(True) == "True"


def test_comparison_bars_hold_the_comparison_and_its_intervals(run: AlignmentRun) -> None:
    boot = run.bootstrap(30, seed=0)
    fig = run.plot("comparison", boot=boot)
    assert isinstance(fig, go.Figure)
    comparison = run.comparison()
    intervals = run.interval_table(boot)
    assert [t.name for t in fig.data] == ["SAE feature", "neuron", "random control"]
    for trace, source in zip(fig.data, ("SAE", "neurons", "random"), strict=True):
        attrs = list(trace.x)
        assert set(attrs) == set(comparison.index)
        np.testing.assert_array_equal(trace.y, comparison.loc[attrs, f"{source}_correlation"])
        sel = intervals[(intervals["features"] == source)
                        & (intervals["metric"] == "correlation")].drop_duplicates("attribute")
        sel = sel.set_index("attribute").loc[attrs]
        np.testing.assert_allclose(np.asarray(trace.y) + trace.error_y.array, sel["upper"],
                                   rtol=0, atol=1e-12)
        np.testing.assert_allclose(np.asarray(trace.y) - trace.error_y.arrayminus,
                                   sel["lower"], rtol=0, atol=1e-12)
        assert trace.customdata[0][1] == plots.exact(trace.y[0])
    # most frequent attribute first
    shares = comparison.loc[list(fig.data[0].x), "share"].to_numpy()
    assert (np.diff(shares) <= 0).all()
    # one group only, no intervals
    only = run.plot("comparison", group="range")
    assert set(only.data[0].x) == {"low", "high"} and only.data[0].error_y.array is None


def test_profile_heatmap_is_the_profiles_table(run: AlignmentRun) -> None:
    profiles = run.profiles()
    fig = run.plot("profiles")
    heat = fig.data[0]
    shown = profiles[profiles["feature"].notna()]
    np.testing.assert_array_equal(np.asarray(heat.z, dtype=float),
                                  shown.drop(columns="feature").to_numpy(dtype=float))
    assert list(heat.x) == list(shown.columns[1:])
    assert heat.y[0] == f"{shown.index[0]} (#{shown['feature'].iloc[0]})"
    assert heat.text[0][0] == plots.exact(shown.iloc[0, 1])
    # the same figure from the table read back from a CSV (selected_for as a column)
    again = plots.profile_heatmap(profiles.reset_index(), attributes=["high", "low"])
    assert list(again.data[0].x) == ["high", "low"]


def test_activation_histogram_counts_each_group(run: AlignmentRun) -> None:
    fig = run.plot("histogram", attributes=["even", "low"], bins=10)
    rows = run.scored
    assert len(fig.data) == 4  # with / without, two panels
    for panel, attribute in enumerate(("even", "low")):
        feature = rows.selections["SAE"][attribute]
        values = rows.columns["SAE"][:, rows.features["SAE"].index(feature)]
        mask = rows.labels[attribute].to_numpy() == 1.0
        with_, without = fig.data[2 * panel], fig.data[2 * panel + 1]
        counts = [c[2] for c in with_.customdata]
        assert sum(counts) == mask.sum()
        assert sum(c[2] for c in without.customdata) == (~mask).sum()
        np.testing.assert_allclose(with_.y, np.asarray(counts) / mask.sum())
    # a plain array and mask, zeros left out
    values = np.array([0.0, 0.0, 1.0, 2.0, 3.0, 4.0])
    fig = plots.activation_histogram(values, np.array([0, 1, 1, 1, 0, 0]), attribute="x",
                                     bins=2, drop_zeros=True)
    assert [c[2] for c in fig.data[0].customdata] == [2, 0]
    assert [c[2] for c in fig.data[1].customdata] == [0, 2]
    with pytest.raises(ValueError, match="boolean"):
        plots.activation_histogram(values, np.arange(6.0))
    with pytest.raises(ValueError, match="mask rows"):
        plots.activation_histogram(values, np.ones(4, dtype=bool))


def test_binned_activation_histogram_draws_counts_as_the_raw_one() -> None:
    values = np.array([0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 4.5])
    mask = np.array([0, 1, 1, 1, 0, 0, 1], dtype=bool)
    raw = plots.activation_histogram(values, mask, attribute="x", bins=3, feature=7)
    edges = np.histogram_bin_edges(values, bins=3)
    binned = plots.binned_activation_histogram(
        {"x": {"edges": edges.tolist(),
               "with_attribute": np.histogram(values[mask], bins=edges)[0].tolist(),
               "without_attribute": np.histogram(values[~mask], bins=edges)[0].tolist()}},
        feature=7)
    for a, b in zip(raw.data, binned.data, strict=True):
        np.testing.assert_array_equal(a.x, b.x)
        np.testing.assert_array_equal(a.y, b.y)
        assert [list(c) for c in a.customdata] == [list(c) for c in b.customdata]
    assert raw.layout.title.text == binned.layout.title.text
    # several panels, each split by its own attribute; a feature that never fired is empty
    fig = plots.binned_activation_histogram(
        {"Horror": {"attribute": "Thriller", "edges": [0.0, 1.0, 2.0],
                    "with_attribute": [1, 3], "without_attribute": [4, 0]},
         "Comedy": {"edges": [], "with_attribute": [], "without_attribute": []}},
        feature={"Horror": 3, "Comedy": 9}, attribute={"Horror": "Thriller"}, title="Fig. 5")
    assert [a.text for a in fig.layout.annotations] == [
        "Horror (feature #3), split by Thriller", "Comedy (feature #9)"]
    assert list(fig.data[0].y) == [0.25, 0.75] and list(fig.data[1].y) == [1.0, 0.0]
    assert len(fig.data[2].y) == 0 and fig.layout.title.text == "Fig. 5"
    with pytest.raises(ValueError, match="one count fewer"):
        plots.binned_activation_histogram(
            {"x": {"edges": [0, 1], "with_attribute": [1, 2], "without_attribute": [1]}})
    with pytest.raises(ValueError, match="no histogram"):
        plots.binned_activation_histogram({})


def test_steering_curves_hold_the_sweep_table(sweep: AttributeSweep) -> None:
    fig = sweep.plot("share")
    curves = sweep.curves
    assert len(fig.data) == curves["curve"].nunique()
    for trace in fig.data:
        attribute = trace.hovertemplate.split(",")[0]
        rows = curves[(curves["attribute"] == attribute)
                      & (curves["curve"].map(lambda c, a=attribute: c.endswith(a)))]
        match = [r for _, r in rows.groupby("curve")
                 if plots._curve_label(r["method"].iloc[0], r["mode"].iloc[0]) == trace.name]
        assert len(match) == 1
        rows = match[0].sort_values("value")
        np.testing.assert_array_equal(trace.x, rows["value"])
        np.testing.assert_array_equal(trace.y, rows["target_share"])
        np.testing.assert_array_equal(trace.error_y.array, rows["target_share_se"])
    # the unsteered share of each attribute is a dotted line
    unsteered = sweep.reference()
    assert len(fig.layout.shapes) == 2
    want = {float(unsteered[f"share:{c}"]) for c in ("even", "low")}
    assert {s.y0 for s in fig.layout.shapes} == want
    # Fig. 9: SAE direction vs probe direction only
    directions = sweep.plot("directions")
    assert {t.name for t in directions.data} <= {"SAE direction (add)",
                                                 "probe direction (add)"}
    assert any(t.line.dash == "dash" for t in directions.data)
    with pytest.raises(ValueError, match="unknown figure"):
        sweep.plot("nope")


def test_metric_lines_and_errors(run: AlignmentRun) -> None:
    rows = [{"l1": 0.5, "ev": 0.7, "ev_std": 0.01}, {"l1": 0.1, "ev": 0.9, "ev_std": None}]
    fig = plots.metric_lines(rows, "l1", {"explained variance": "ev"},
                             err={"explained variance": "ev_std"}, log_x=True,
                             references={"original": 0.95, "none": None})
    np.testing.assert_array_equal(fig.data[0].x, [0.1, 0.5])  # sorted by the setting
    np.testing.assert_array_equal(fig.data[0].y, [0.9, 0.7])
    assert fig.layout.xaxis.type == "log" and len(fig.layout.shapes) == 1
    with pytest.raises(ValueError, match="unknown figure"):
        run.plot("nope")


def test_table1_figure_panels_per_metric_and_sweep() -> None:
    rows = pd.DataFrame([
        {"sweep": "original", "l1_coefficient": None, "d_sae": None, "n_seeds": None,
         "ndcg_mean": 0.12, "ndcg_std": None, "l0_mean": None, "l0_std": None},
        {"sweep": "l1", "l1_coefficient": 0.5, "d_sae": 64, "n_seeds": 2, "ndcg_mean": 0.08,
         "ndcg_std": 0.01, "l0_mean": 5.0, "l0_std": 1.0},
        {"sweep": "l1", "l1_coefficient": 0.1, "d_sae": 64, "n_seeds": 2, "ndcg_mean": 0.1,
         "ndcg_std": 0.02, "l0_mean": 20.0, "l0_std": 2.0},
        {"sweep": "d_sae", "l1_coefficient": 0.1, "d_sae": 32, "n_seeds": 2, "ndcg_mean": 0.09,
         "ndcg_std": 0.0, "l0_mean": 12.0, "l0_std": 0.5},
    ])
    runs = [{"l1_coefficient": l1, "d_sae": d, "seed": s, "ndcg": 0.1 + s, "l0": 10.0 + s}
            for l1, d in ((0.5, 64), (0.1, 64), (0.1, 32)) for s in (0, 1)]
    fig = plots.table1_figure(rows, runs=runs, metrics=["l0", "ndcg"], k=5)
    assert [(t.meta["metric"], t.meta["sweep"], t.meta["kind"]) for t in fig.data] == [
        (m, s, kind) for m in ("l0", "ndcg") for s in ("l1", "d_sae") for kind in ("mean", "seeds")]
    mean = fig.data[0]
    np.testing.assert_array_equal(mean.x, [0.1, 0.5])  # sorted by the L1 weight
    np.testing.assert_array_equal(mean.y, [20.0, 5.0])
    np.testing.assert_array_equal(mean.error_y.array, [2.0, 1.0])
    assert sorted(fig.data[1].y) == [10.0, 10.0, 11.0, 11.0]  # both seeds of both points
    assert list(fig.data[3].y) == [10.0, 11.0]  # the size sweep's one point
    assert fig.data[4].name == "NDCG@5"
    assert [s.y0 for s in fig.layout.shapes] == [0.12, 0.12]  # the original, NDCG panels only
    assert "L0 vs L1 weight (dictionary 64)" in [a.text for a in fig.layout.annotations]
    # one seed: no per-seed markers; only one sweep: one column of panels
    single = plots.table1_figure(rows[rows["sweep"] != "d_sae"], runs=runs[::2],
                                 metrics=["l0"])
    assert [t.meta["kind"] for t in single.data] == ["mean"]
    with pytest.raises(ValueError, match="unknown metric"):
        plots.table1_figure(rows, metrics=["rmse"])
    with pytest.raises(ValueError, match="no sweep line"):
        plots.table1_figure(rows[rows["sweep"] == "original"], metrics=["ndcg"])

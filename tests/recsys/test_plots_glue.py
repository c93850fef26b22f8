"""The core's plotly figures on the recommender's results: the session's ml-100k GPTRec and
SAE, a genre alignment run and a genre steering sweep (paper Figs. 2, 4, 5, 8 and 9)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mechrec_recsys.alignment import align
from mechrec_recsys.experiment import Experiment
from mechrec_recsys.steering import GenreSweep, run_genre_sweep

from mechrec.alignment import AlignmentRun
from mechrec.plots import exact

GENRES = ["Horror", "Sci-Fi"]
VALUES = [-5.0, 0.0, 5.0]


@pytest.fixture(scope="module")
def run(paper_experiment: Experiment, paper_sae) -> AlignmentRun:
    return align(paper_experiment, paper_sae, decades=False, seed=0)


@pytest.fixture(scope="module")
def sweep(paper_experiment: Experiment, paper_sae) -> GenreSweep:
    return run_genre_sweep(paper_experiment, paper_sae, genres=GENRES, values=VALUES)


def test_genre_figures_of_the_alignment_run(run: AlignmentRun) -> None:
    genres = [a for a, g in run.groups.items() if g == "genre"]
    heat = run.plot("profiles", group="genre").data[0]
    profiles = run.profiles()
    shown = [g for g in genres if pd.notna(profiles.at[g, "feature"])]
    assert list(heat.x) == genres and len(heat.y) == len(shown)
    np.testing.assert_array_equal(np.asarray(heat.z, dtype=float),
                                  profiles.loc[shown, genres].to_numpy(dtype=float))

    bars = run.plot("comparison", group="genre")
    comparison = run.comparison()
    for trace in bars.data:
        source = {"SAE feature": "SAE", "neuron": "neurons", "random control": "random"}[
            trace.name]
        np.testing.assert_array_equal(
            trace.y, comparison.loc[list(trace.x), f"{source}_correlation"])

    hist = run.plot("histogram", attributes=GENRES, bins=20)
    rows = run.scored
    for panel, genre in enumerate(GENRES):
        has = rows.labels[genre].to_numpy() == 1.0
        with_, without = hist.data[2 * panel], hist.data[2 * panel + 1]
        assert sum(c[2] for c in with_.customdata) == has.sum() > 0
        assert sum(c[2] for c in without.customdata) == (~has).sum()
        assert f"feature #{exact(rows.selections['SAE'][genre])}" in \
            hist.layout.annotations[panel].text


def test_genre_sweep_figures_hold_its_table(sweep: GenreSweep) -> None:
    curves = sweep.curves
    for metric in ("target_share", "ndcg"):
        fig = sweep.plot("share" if metric == "target_share" else metric)
        assert len(fig.data) == curves["curve"].nunique()
        for trace in fig.data:
            genre = trace.hovertemplate.split(",")[0]
            rows = curves[curves["genre"] == genre]
            found = False
            for _, group in rows.groupby("curve"):
                group = group.sort_values("value")
                if np.array_equal(trace.y, group[metric].to_numpy(dtype=float)):
                    np.testing.assert_array_equal(trace.error_y.array, group[f"{metric}_se"])
                    found = True
            assert found, (genre, trace.name)
        unsteered = sweep.reference()
        want = ({float(unsteered[f"share:{c}"]) for c in sweep.features["column"]}
                if metric == "target_share" else {float(unsteered["ndcg"])})
        assert {s.y0 for s in fig.layout.shapes} == want
    directions = sweep.plot("directions")
    assert {t.name for t in directions.data} == {"SAE direction (add)", "probe direction (add)"}

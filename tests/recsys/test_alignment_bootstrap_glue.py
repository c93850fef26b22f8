"""Bootstrap intervals of an AlignmentRun on a trained ml-100k run: test users resampled."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mechrec_recsys.alignment import BOOTSTRAP_PAIRS, SOURCES, AlignmentRun, align
from mechrec_recsys.cli.main import app
from mechrec_recsys.experiment import Experiment
from typer.testing import CliRunner

from mechrec.alignment import MEAN_ROW
from mechrec.saes import NormalizedSAE

PAPER_HOOK = "blocks.0.hook_resid_post"  # the hook of the session fixture paper_sae


@pytest.fixture(scope="module")
def run(paper_experiment: Experiment, paper_sae: NormalizedSAE) -> AlignmentRun:
    return align(paper_experiment, paper_sae, seed=0)


def test_bootstrap_resamples_test_users_and_matches_the_point_tables(
    run: AlignmentRun, paper_experiment: Experiment
) -> None:
    acts = paper_experiment.activations("test", PAPER_HOOK)
    users = paper_experiment.part("test").users[acts.sequence_index.numpy()]
    assert run.scored is not None and run.scored.n_rows == acts.activations.shape[0]
    np.testing.assert_array_equal(run.scored.groups, users)
    boot = run.bootstrap(40, seed=1)
    assert boot.grouped and boot.n_groups == len(np.unique(users)) and boot.n_resamples == 40
    assert boot.sources == list(SOURCES) and boot.metrics == tuple(run.reported)

    intervals = run.interval_table(boot)
    comparison = run.comparison("honest")
    per_attr = intervals[(intervals["attribute"] != MEAN_ROW) & (intervals["metric"] ==
                                                                  "correlation")]
    for source in SOURCES:
        rows = per_attr[per_attr["features"] == source].set_index("attribute")
        np.testing.assert_allclose(rows["estimate"].to_numpy(dtype=float),
                                   comparison.loc[rows.index, f"{source}_correlation"]
                                   .to_numpy(dtype=float), atol=1e-7)
        assert (rows["feature"].astype("Int64") == comparison.loc[rows.index, f"{source}_feature"]
                ).fillna(True).all()
    # mean rows carry the summary's honest means, with an interval around them
    summary = run.summary().set_index(["group", "features", "selection"])
    means = intervals[(intervals["attribute"] == MEAN_ROW) & (intervals["metric"] ==
                                                               "correlation")]
    assert set(means["group"]) == {"genre", "decade", "all"}
    for row in means.itertuples():
        assert row.estimate == pytest.approx(
            summary.loc[(row.group, row.features, "honest"), "correlation_mean"], abs=1e-7)
        # a resample without any position of a rare decade leaves that mean undefined
        assert row.lower < row.upper and 30 <= row.n_valid <= 40
    # "all" only has its mean row; genres have one row per attribute
    assert not ((intervals["group"] == "all") & (intervals["attribute"] != MEAN_ROW)).any()

    diffs = run.difference_table(boot)
    pairs = set(zip(diffs["features"], diffs["versus"], strict=True))
    assert pairs == set(BOOTSTRAP_PAIRS)
    head = diffs[(diffs["group"] == "genre") & (diffs["attribute"] == MEAN_ROW)
                 & (diffs["metric"] == "correlation")].set_index(["features", "versus"])
    expected = (summary.loc[("genre", "SAE", "honest"), "correlation_mean"]
                - summary.loc[("genre", "neurons", "honest"), "correlation_mean"])
    assert head.loc[("SAE", "neurons"), "estimate"] == pytest.approx(expected, abs=1e-7)


def test_write_adds_bootstrap_tables_and_json(run: AlignmentRun, tmp_path: Path) -> None:
    written = run.write(tmp_path, top_k=1, bootstrap=25, confidence=0.9)
    for stem in ("bootstrap_intervals", "bootstrap_differences"):
        csv = pd.read_csv(written[stem])
        assert len(csv) == len(pd.read_parquet(tmp_path / f"{stem}.parquet")) > 0
        assert (csv["confidence"] == 0.9).all()
    meta = json.loads(written["bootstrap"].read_text())
    assert meta["n_resamples"] == 25 and meta["resampled_unit"] == "test user"
    assert set(meta["headline"]["genre"]["mean"]) == set(SOURCES)
    assert "SAE - neurons" in meta["headline"]["all"]["difference"]
    plain = run.write(tmp_path / "plain", top_k=1)
    assert "bootstrap" not in plain and not (tmp_path / "plain" / "bootstrap.json").exists()
    with pytest.raises(ValueError, match=">= 0"):
        run.write(tmp_path, bootstrap=-1)
    bare = AlignmentRun(stats=run.stats, groups=run.groups, metric=run.metric,
                        hook_name=run.hook_name)
    with pytest.raises(ValueError, match="no score rows"):
        bare.bootstrap(10)


def test_cli_tables_prints_intervals_and_rejects_bad_options(
    paper_run_dir: Path, paper_sae: NormalizedSAE, data_dir: Path, tmp_path: Path
) -> None:
    sae_dir = paper_sae.save(tmp_path / "sae")
    base = ["align", "tables", str(paper_run_dir), str(sae_dir), "--data-dir",
            str(data_dir / "ml-100k"), "--no-download", "--no-decades"]
    result = CliRunner().invoke(app, [*base, "--bootstrap", "20", "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert "Uncertainty of the honest scores" in result.output
    assert "SAE - neurons" in result.output and "20 resamples" in result.output
    assert (tmp_path / "o" / "bootstrap_differences.csv").exists()
    for option, value in (("--bootstrap", "-1"), ("--confidence", "1.5")):
        bad = CliRunner().invoke(app, [*base, option, value])
        assert bad.exit_code == 2 and option in bad.output

"""Genre steering glue on the session's trained ml-100k GPTRec and SAE (paper section 8)."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from mechrec_recsys.experiment import Experiment
from mechrec_recsys.steering import (
    DEFAULT_GENRES,
    GenreSweep,
    compare_fast_naive,
    fit_genre_probes,
    genre_key,
    genre_targets,
    monotonicity,
    resolve_genres,
    run_genre_sweep,
    select_genre_features,
    steering_values,
    user_recommendations,
    user_shares,
)

from mechrec.sweep import feature_target

PAPER_HOOK = "blocks.0.hook_resid_post"
VALUES = [-10.0, -2.0, 0.0, 2.0, 10.0]
# Horror and Fantasy have strong SAE features even in the session's small model; Children
# exercises the ml-100k spelling "Children's".
GENRES = ["Horror", "Children", "Fantasy"]


@pytest.fixture(scope="module")
def sweep(paper_experiment: Experiment, paper_sae) -> GenreSweep:
    return run_genre_sweep(paper_experiment, paper_sae, genres=GENRES, values=VALUES)


# ------------------------------------------------------------------------------- input parsing


def test_genre_names_map_across_movielens_spellings():
    ml100k = ["unknown", "Action", "Children's", "Sci-Fi", "Western"]
    assert resolve_genres(["Children", "scifi", "Action"], ml100k) == {
        "Children": "Children's", "scifi": "Sci-Fi", "Action": "Action"}
    assert genre_key("Children's") == genre_key("Children") == "children"
    with pytest.warns(UserWarning, match=r"\['IMAX'\] are not in this dataset"):
        assert resolve_genres(["IMAX", "Western"], ml100k) == {"Western": "Western"}
    with pytest.raises(ValueError, match="unknown genre 'Horrorr'"):
        resolve_genres(["Horrorr"], ml100k)
    with pytest.raises(ValueError, match="none of the genres"), pytest.warns(UserWarning):
        resolve_genres(["IMAX"], ml100k)
    assert set(DEFAULT_GENRES) == {"Action", "Children", "Fantasy", "Sci-Fi", "Western",
                                   "Horror"}


def test_steering_values_are_typed_finite_and_non_empty():
    assert steering_values((0, 2.5, -1)) == [0.0, 2.5, -1.0]
    for bad, error, message in (([0.0, math.nan], ValueError, "finite"),
                                ([math.inf], ValueError, "finite"),
                                ([], ValueError, "no steering values"),
                                ("-10:10:1", TypeError, "must be numbers")):
        with pytest.raises(error, match=message):
            steering_values(bad)


def test_monotonicity_counts_steps_down():
    table = pd.DataFrame({
        "curve": ["a"] * 4, "genre": "G", "method": "sae_feature", "mode": "replace",
        "value": [-1.0, 0.0, 1.0, 2.0], "target_share": [0.1, 0.3, 0.295, 0.2]})
    row = monotonicity(table, tolerance=0.01).iloc[0]
    assert (row["n_steps"], row["decreases"], row["violations"]) == (3, 2, 1)
    assert row["largest_drop"] == pytest.approx(0.095)
    # shares equal up to float rounding (means over users) are not steps down
    table["target_share"] = [0.1, 0.3, 0.3 - 5e-17, 0.4]
    row = monotonicity(table).iloc[0]
    tied = pd.Series([0.1, 0.3, 0.3, 0.4]).corr(table["value"], method="spearman")
    assert (row["decreases"], row["spearman"]) == (0, pytest.approx(tied))


# ------------------------------------------------------------------------------- the sweep


def test_sweep_table_has_every_curve_value_and_metric(sweep: GenreSweep, paper_experiment):
    table = sweep.table
    curves = sweep.curves
    assert len(curves) == len(GENRES) * 5 * len(VALUES)
    assert set(curves["method"] + "/" + curves["mode"]) == {
        "sae_feature/replace", "sae_feature/keep-error", "sae_direction/add",
        "probe_direction/add", "random_feature/replace"}
    assert set(curves["column"]) == {"Horror", "Children's", "Fantasy"}
    assert table["method"].tolist().count("unsteered") == 1
    assert table["method"].tolist().count("sae_reconstruction") == 1
    for genre in paper_experiment.genre_names:
        assert f"share:{genre}" in table.columns and f"share_se:{genre}" in table.columns
    for column in ("ndcg", "ndcg_se", "hit_rate", "hit_rate_se", "coverage", "diversity",
                   "target_share", "target_share_se"):
        assert curves[column].between(0, 1).all(), column  # NaN fails between()
    assert table["ndcg"].notna().all() and table["coverage"].notna().all()
    assert np.allclose(curves["target_share"],
                       [r[f"share:{r['column']}"] for _, r in curves.iterrows()])
    assert set(sweep.metadata["curve_methods"].values()) == {"fast"}
    assert sweep.metadata["values"] == VALUES and sweep.metadata["modes"] == [
        "replace", "keep-error"]
    assert (sweep.features["chosen_by"] == "max correlation on sae_train").all()
    assert sweep.target_share_table().shape[0] == len(curves)
    summary = sweep.summary()
    assert {"share@-10", "share@+10", "ndcg@+0"} <= set(summary.columns)


def test_random_control_is_an_alive_other_feature_steered_like_the_best(sweep: GenreSweep,
                                                                         paper_experiment,
                                                                         paper_sae):
    features = sweep.features
    assert (features["control_feature"] != features["feature"]).all()
    acts = paper_experiment.activations("sae_train", paper_sae.hook_name).activations
    with torch.no_grad():
        fires = torch.stack([(paper_sae.encode(chunk) > 0).any(dim=0)
                             for chunk in acts.split(8192)]).any(dim=0)
    assert fires[features["control_feature"].to_numpy()].all()  # alive on the SAE users
    control = sweep.curves[sweep.curves["method"] == "random_feature"]
    assert (control["mode"] == "replace").all()
    assert dict(zip(control["genre"], control["feature"], strict=False)) == dict(
        zip(features["genre"], features["control_feature"], strict=False))
    again = select_genre_features(paper_experiment, paper_sae,
                                  dict(zip(features["genre"], features["column"],
                                           strict=False)))
    assert again["control_feature"].tolist() == features["control_feature"].tolist()


def test_adding_zero_times_a_direction_is_the_unsteered_model(sweep: GenreSweep):
    base = sweep.reference("unsteered")
    metrics = ["ndcg", "hit_rate", "coverage", "diversity", "share:Horror"]
    at_zero = sweep.curves[(sweep.curves["mode"] == "add") & (sweep.curves["value"] == 0.0)]
    assert len(at_zero) == 2 * len(GENRES)
    for _, row in at_zero.iterrows():
        assert [row[m] for m in metrics] == pytest.approx([base[m] for m in metrics])


def test_steering_a_genre_feature_moves_that_genre_in_the_lists(paper_experiment, paper_sae,
                                                                sweep: GenreSweep):
    """Real effect, not noise: a paired test over the same test users at +10 and at -10."""
    t_stats = {}
    for row in sweep.features.itertuples(index=False):
        curve = sweep.curves[sweep.curves["curve"] == f"sae:{row.genre}"].set_index("value")
        target = feature_target(paper_sae, int(row.feature))
        shares = user_shares(paper_experiment, target, row.column, [-10.0, 10.0])
        assert len(shares) == len(paper_experiment.part("test"))
        assert shares[10.0].mean() == pytest.approx(curve.loc[10.0, "target_share"])
        assert shares["unsteered"].mean() == pytest.approx(
            sweep.reference("unsteered")[f"share:{row.column}"])
        diff = shares[10.0] - shares[-10.0]
        t_stats[row.genre] = (diff.mean(), diff.mean() / (diff.std(ddof=1) / math.sqrt(len(diff))
                                                          + 1e-12))
    assert any(mean > 0.01 and t > 3 for mean, t in t_stats.values()), t_stats


def test_probe_curves_and_unit_variance_directions(paper_experiment, paper_sae,
                                                   sweep: GenreSweep):
    probes = sweep.probe_metrics.set_index("attribute")
    assert set(probes.index) == {"Horror", "Children's", "Fantasy"}
    assert (probes["status"] == "ok").all() and (probes["test_roc_auc"] > 0.5).all()
    for genre in GENRES:
        curve = sweep.curves[sweep.curves["curve"] == f"probe:{genre}"]
        assert curve["value"].tolist() == VALUES and curve["feature"].isna().all()
    # Both directions of Fig. 9 move an activation by one standard deviation per unit.
    probe_set = fit_genre_probes(paper_experiment, PAPER_HOOK, ["Horror"])
    targets, curves = genre_targets(paper_experiment, paper_sae, sweep.features.iloc[:1],
                                    modes=["replace"], probes=probe_set)
    acts = paper_experiment.activations("sae_train", PAPER_HOOK).activations.double()
    by_method = {info["method"]: t for t, info in
                 ((t, curves[t.name]) for t in targets)}
    for method in ("sae_direction", "probe_direction"):
        vector = by_method[method].make_edit(1.0).direction.vector.double()
        spread = (acts @ (vector / vector.norm())).std(unbiased=False)
        assert float(vector.norm()) == pytest.approx(float(spread), rel=1e-4)


def test_fast_path_matches_naive_on_the_trained_gptrec(paper_experiment, paper_sae,
                                                       sweep: GenreSweep):
    feature = int(sweep.features.iloc[0]["feature"])
    probe_set = fit_genre_probes(paper_experiment, PAPER_HOOK, ["Horror"])
    targets, _ = genre_targets(paper_experiment, paper_sae, sweep.features.iloc[:1],
                               probes=probe_set)
    assert {t.kind for t in targets} == {"sae_feature", "sae_feature+error", "sae_direction",
                                         "probe_direction"}
    for target in [*targets, feature_target(paper_sae, feature, mode="add")]:
        report = compare_fast_naive(paper_experiment, target, [-10.0, 3.0],
                                    naive_values=[-10.0, 3.0])
        assert report["max_abs_logit_diff"] < 1e-5, (target.name, report)
        assert report["same_top_k"], target.name
        assert report["n_users"] == len(paper_experiment.part("test"))


def test_sweep_tables_are_written(sweep: GenreSweep, tmp_path):
    written = sweep.save(tmp_path, extra={"note": "test"})
    assert {"sweep.csv", "sweep.json", "sweep_long.csv", "target_share.csv",
            "monotonicity.csv", "features.csv", "probes.csv", "summary.json"} <= set(written)
    frame = pd.read_csv(tmp_path / "sweep.csv")
    assert frame.shape == sweep.table.shape
    payload = json.loads((tmp_path / "sweep.json").read_text())
    assert len(payload["rows"]) == len(sweep.table)
    assert payload["rows"][0]["method"] == "unsteered" and payload["rows"][0]["value"] is None
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["note"] == "test" and len(summary["monotonicity"]) == len(GENRES) * 5
    long = pd.read_csv(tmp_path / "sweep_long.csv")
    assert {"curve", "method", "mode", "value", "metric", "score"} <= set(long.columns)


# ------------------------------------------------------------------------------- users (Fig. 7)


def test_user_lists_show_titles_and_genres(paper_experiment, paper_sae, sweep: GenreSweep):
    test = paper_experiment.part("test")
    user = test.users[0]
    feature = int(sweep.features.set_index("genre").loc["Horror", "feature"])
    lists = user_recommendations(paper_experiment, feature_target(paper_sae, feature),
                                 [user], [0.0, 10.0], genre_column="Horror")
    assert lists["setting"].tolist() == ["before"] * 10 + ["+0"] * 10 + ["+10"] * 10
    before = lists[lists["setting"] == "before"]
    assert before["token"].tolist() == paper_experiment.recommend("test")[0].tolist()
    titles = paper_experiment.dataset.catalog.items["title"]
    assert lists["title"].tolist() == [titles[i] for i in lists["item_id"]]
    assert lists["title"].str.len().gt(0).all() and lists["genres"].str.len().gt(0).all()
    assert not lists["token"].isin(test.sequences[0]).any()
    assert lists["has_target_genre"].tolist() == [
        "Horror" in g.split("|") for g in lists["genres"]]
    assert before["in_before"].all()
    with pytest.raises(ValueError, match="unknown user"):
        user_recommendations(paper_experiment, feature_target(paper_sae, feature), [10**9],
                             [1.0])


def test_feature_choice_is_made_on_sae_training_users(paper_experiment, paper_sae):
    chosen = select_genre_features(paper_experiment, paper_sae, {"Horror": "Horror"})
    row = chosen.iloc[0]
    acts = paper_experiment.activations("sae_train", PAPER_HOOK)
    with torch.no_grad():
        feats = paper_sae.encode(acts.activations).numpy()
    labels, _ = paper_experiment.token_attributes(["Horror"])
    y = labels[acts.token.numpy(), 0]
    corr = [np.corrcoef(feats[:, j], y)[0, 1] if feats[:, j].std() > 0 else -np.inf
            for j in range(feats.shape[1])]
    assert row["feature"] == int(np.nanargmax(corr))
    assert row["correlation_select"] == pytest.approx(max(corr), abs=1e-6)
    forced = select_genre_features(paper_experiment, paper_sae, {"Horror": "Horror"},
                                   overrides={"Horror": 3})
    assert forced.iloc[0]["feature"] == 3 and forced.iloc[0]["chosen_by"] == "user"
    with pytest.raises(ValueError, match="out of range"):
        select_genre_features(paper_experiment, paper_sae, {"Horror": "Horror"},
                              overrides={"Horror": paper_sae.d_sae})


# ------------------------------------------------------------------------------- notes, probe rows


def _without_genre(experiment: Experiment, column: str) -> Experiment:
    """The same run with no item of ``column`` (so no positive row anywhere)."""
    import dataclasses

    catalog = experiment.dataset.catalog
    genres = catalog.genres.copy()
    genres[column] = False
    dataset = dataclasses.replace(experiment.dataset,
                                  catalog=dataclasses.replace(catalog, genres=genres))
    return dataclasses.replace(experiment, dataset=dataset)


def test_skipped_genres_go_to_notes_instead_of_warnings(paper_experiment, paper_sae):
    ml100k = paper_experiment.genre_names
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert resolve_genres(["IMAX", "Western"], ml100k, notes=notes) == {"Western": "Western"}
        no_horror = _without_genre(paper_experiment, "Horror")
        chosen = select_genre_features(no_horror, paper_sae,
                                       {"Horror": "Horror", "Western": "Western"}, notes=notes)
    assert not [w for w in caught if "IMAX" in str(w.message) or "Horror" in str(w.message)]
    assert list(chosen["genre"]) == ["Western"]
    assert len(notes) == 2
    assert "['IMAX'] are not in this dataset" in notes[0]
    assert "'Horror' has no SAE feature with a defined correlation" in notes[1]
    # without a notes list the same genre is still a warning, as before
    with pytest.warns(UserWarning, match="'Horror' has no SAE feature"):
        select_genre_features(no_horror, paper_sae, {"Horror": "Horror", "Western": "Western"})


def test_probe_rows_are_passed_to_the_core_probes(paper_experiment):
    from mechrec.probes import fit_probes

    columns = ["Horror", "Comedy"]
    full = fit_genre_probes(paper_experiment, PAPER_HOOK, columns)
    assert full.settings["max_train_rows"] is None
    sampled = fit_genre_probes(paper_experiment, PAPER_HOOK, columns, max_train_rows=2000)
    assert sampled.settings["max_train_rows"] == 2000
    # the same probes as the core's own sampled fit on the same rows and labels
    train = paper_experiment.activations("sae_train", PAPER_HOOK)
    test = paper_experiment.activations("test", PAPER_HOOK)
    matrix, _ = paper_experiment.token_attributes(columns)
    reference = fit_probes(train, matrix[train.token.numpy()], columns,
                           test_activations=test.activations,
                           test_labels=matrix[test.token.numpy()], max_train_rows=2000,
                           hook_name=PAPER_HOOK)
    n_rows = len(train)
    assert n_rows > 2000
    for column in columns:
        assert np.allclose(sampled.probes[column].weight, reference.probes[column].weight)
        assert not np.allclose(sampled.probes[column].weight, full.probes[column].weight)
    # the metrics still cover every training row
    assert (sampled.metrics["n_train"] == n_rows).all()
    for bad in (0, -5, 1.5, True):
        with pytest.raises(ValueError, match="max_train_rows must be a positive whole number"):
            fit_genre_probes(paper_experiment, PAPER_HOOK, columns, max_train_rows=bad)


def test_skipped_probes_go_to_notes(paper_experiment):
    # ml-100k's "unknown" genre has a single SAE-training row: a 100-row sample misses it
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        probes = fit_genre_probes(paper_experiment, PAPER_HOOK, ["unknown", "Horror"],
                                  max_train_rows=100, notes=notes)
    assert "unknown" not in probes.probes and "Horror" in probes.probes
    assert notes == ["probe for 'unknown' skipped: no positive training examples"]
    assert not [w for w in caught if "probe for" in str(w.message)]

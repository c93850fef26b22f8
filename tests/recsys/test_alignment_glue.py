"""Alignment glue on a trained ml-100k run: honest selection, NaN-safe labels, tables, examples."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from mechrec_recsys.alignment import (
    SELECTIONS,
    SOURCES,
    AlignmentRun,
    align,
    encode_sparse,
    feature_examples,
    feature_p_top_k,
    item_table,
    parse_year_range,
    title_contains,
    token_attribute_table,
    year_between,
)
from mechrec_recsys.experiment import Experiment
from mechrec_recsys.saes import check_sae_fits

from mechrec.activations import ActivationSet
from mechrec.saes import NormalizedSAE, SAETrainingConfig, train_sae

PAPER_HOOK = "blocks.0.hook_resid_post"  # the hook of the session fixture paper_sae
PREDICATES = {"Star Wars": title_contains("Star Wars"), "1980s films": year_between(1980, 1989)}


@pytest.fixture(scope="module")
def run(paper_experiment: Experiment, paper_sae: NormalizedSAE) -> AlignmentRun:
    return align(paper_experiment, paper_sae, predicates=PREDICATES, seed=0)


def _labels(experiment: Experiment, part: str) -> pd.DataFrame:
    table, _ = token_attribute_table(experiment, decades=True, predicates=PREDICATES)
    tokens = experiment.activations(part, PAPER_HOOK).token.numpy()
    return table.iloc[tokens].reset_index(drop=True)


def _corr(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.corrcoef(x.astype(np.float64), y.astype(np.float64))[0, 1])


def test_best_feature_is_chosen_on_sae_users_and_scored_on_test_users(
    run: AlignmentRun, paper_experiment: Experiment, paper_sae: NormalizedSAE
) -> None:
    select_acts = paper_experiment.activations("sae_train", PAPER_HOOK)
    test_acts = paper_experiment.activations("test", PAPER_HOOK)
    assert run.stats["SAE"]["select"].n_rows == select_acts.activations.shape[0]
    assert run.stats["SAE"]["score"].n_rows == test_acts.activations.shape[0]
    select_f = encode_sparse(paper_sae, select_acts.activations).toarray()
    test_f = encode_sparse(paper_sae, test_acts.activations).toarray()
    select_y, test_y = _labels(paper_experiment, "sae_train"), _labels(paper_experiment, "test")
    table = run.per_attribute_table("SAE")
    checked = 0
    for genre in ("Comedy", "Drama", "Horror", "Action"):
        row = table.loc[genre]
        # chosen by the largest correlation on the SAE-training users' rows ...
        corr_select = np.array([_corr(select_f[:, f], select_y[genre].to_numpy())
                                if select_f[:, f].std() > 0 else -np.inf
                                for f in range(paper_sae.d_sae)])
        assert row["feature"] == int(np.argmax(corr_select))
        assert row["correlation_on_select"] == pytest.approx(corr_select.max(), abs=1e-6)
        # ... and scored on the test users' rows
        assert row["correlation"] == pytest.approx(
            _corr(test_f[:, row["feature"]], test_y[genre].to_numpy()), abs=1e-6)
        assert row["share"] == pytest.approx(test_y[genre].to_numpy(np.float64).mean(), abs=1e-12)
        # the in-sample variant picks the test-rows maximum, so it can only look better
        assert row["correlation_in_sample"] >= row["correlation"] - 1e-12
        checked += 1
    assert checked == 4
    defined = table.dropna(subset=["correlation"])
    assert (defined["correlation_in_sample"] >= defined["correlation"] - 1e-12).all()
    # the in-sample choice differs from the honest one for some attributes on these data
    assert (defined["feature_in_sample"] != defined["feature"]).any()


def test_unknown_genre_without_positives_gives_nan_not_a_crash(run: AlignmentRun) -> None:
    table = run.per_attribute_table("SAE")
    assert "unknown" in table.index
    assert table.loc["unknown", "share"] == 0.0  # no test position holds an 'unknown' movie
    for column in ("correlation", "roc_auc", "sensitivity", "correlation_in_sample"):
        assert np.isnan(table.loc["unknown", column])
    assert pd.isna(table.loc["unknown", "feature_in_sample"])
    genres = table[table["group"] == "genre"]
    assert genres.index[-1] == "unknown"  # NaN sorts last in its group
    summary = run.summary()
    honest = summary[(summary.group == "genre") & (summary.features == "SAE")
                     & (summary.selection == "honest")].iloc[0]
    assert honest["attributes"] == len(genres) - 1
    assert np.isfinite(honest["correlation_mean"])
    assert any("unknown" in note for note in run.notes)


def test_tables_have_the_expected_shapes_and_columns(
    run: AlignmentRun, paper_experiment: Experiment, paper_sae: NormalizedSAE
) -> None:
    n_attr = len(run.attribute_names)
    genres = paper_experiment.genre_names
    assert list(run.attribute_names[: len(genres)]) == genres
    assert {"Star Wars", "1980s films", "decade=1990s"} <= set(run.attribute_names)
    tables = run.tables(top_k=3)
    assert set(tables) == {"sae", "neurons", "control", "per_genre", "summary", "comparison",
                           "profiles", "monosemanticity", "top_features"}
    d_model = paper_experiment.model.cfg.d_model
    for stem, width in (("sae", paper_sae.d_sae), ("neurons", d_model),
                        ("control", paper_sae.d_sae)):
        long = tables[stem]
        assert len(long) == 2 * width * n_attr
        assert list(long.columns) == ["part", "feature", "attribute", "correlation", "roc_auc",
                                      "sensitivity", "precision", "mean_given_attribute"]
        assert set(long["part"]) == {"select", "score"}
    per_genre = tables["per_genre"]
    assert list(per_genre.columns) == [
        "group", "share", "feature", "correlation", "roc_auc", "sensitivity",
        "correlation_on_select", "feature_in_sample", "correlation_in_sample",
        "roc_auc_in_sample", "sensitivity_in_sample"]
    assert sorted(per_genre.index) == sorted(run.attribute_names)
    assert list(dict.fromkeys(per_genre["group"])) == ["genre", "decade", "custom"]
    summary = tables["summary"]
    assert len(summary) == 4 * len(SOURCES) * len(SELECTIONS)  # genre, decade, custom, all
    assert set(summary["features"]) == set(SOURCES)
    assert list(summary.columns) == [
        "group", "features", "selection", "n_features", "attributes", "correlation_min",
        "correlation_mean", "correlation_max", "roc_auc_mean", "sensitivity_mean"]
    ok = summary.dropna(subset=["correlation_mean"])
    assert (ok["correlation_min"] <= ok["correlation_mean"]).all()
    assert (ok["correlation_mean"] <= ok["correlation_max"]).all()
    comparison = tables["comparison"]
    assert {"SAE_correlation", "neurons_correlation", "random_correlation"} <= set(
        comparison.columns)
    assert len(comparison) == n_attr
    profiles = tables["profiles"]
    assert profiles.shape == (n_attr, 1 + n_attr)  # one chosen feature per attribute
    mono = tables["monosemanticity"]
    assert list(mono.columns) == ["feature", "best_attribute", "best", "second_attribute",
                                  "second", "margin", "ratio"]
    assert (mono["margin"].dropna() >= 0).all()
    top = tables["top_features"]
    assert len(top) == 3 * n_attr and list(top["rank"].unique()) == [1, 2, 3]
    first = top[top["rank"] == 1].set_index("attribute")["feature"]
    assert (first.reindex(per_genre.index) == per_genre["feature"]).all()


def test_random_control_and_neurons_are_real_baselines(
    run: AlignmentRun, paper_experiment: Experiment, paper_sae: NormalizedSAE
) -> None:
    sae_rate = run.stats["SAE"]["select"].feature_active_rate
    random_rate = run.stats["random"]["select"].feature_active_rate
    n_rows = run.stats["SAE"]["select"].n_rows
    # each random direction fires as often as its SAE feature on the rows it was fitted on, up
    # to tied rows at its threshold (the same first item gives the same activation)
    gap = np.abs(sae_rate - random_rate)
    assert np.median(gap) <= 1.0 / n_rows and gap.max() < 0.01
    assert sae_rate.std() > 0 and np.corrcoef(sae_rate, random_rate)[0, 1] > 0.99
    assert run.stats["neurons"]["score"].n_features == paper_experiment.model.cfg.d_model
    raw = paper_experiment.activations("test", PAPER_HOOK).activations.numpy()
    y = _labels(paper_experiment, "test")["Drama"].to_numpy()
    neuron_corr = run.stats["neurons"]["score"].table("correlation")["Drama"].to_numpy()
    expected = np.array([_corr(raw[:, j], y) for j in range(raw.shape[1])])
    np.testing.assert_allclose(neuron_corr, expected, atol=1e-6)


def test_written_tables_load_back(run: AlignmentRun, tmp_path) -> None:
    written = run.write(tmp_path / "out", top_k=2, provenance={"run_dir": "somewhere"})
    tables = run.tables(top_k=2)
    for stem, table in tables.items():
        csv = pd.read_csv(tmp_path / "out" / f"{stem}.csv")
        parquet = pd.read_parquet(tmp_path / "out" / f"{stem}.parquet")
        expected_columns = (["attribute" if stem in ("per_genre", "comparison") else
                             "selected_for" if stem in ("profiles", "monosemanticity") else None]
                            if table.index.name else [])
        expected_columns = [c for c in expected_columns if c] + [str(c) for c in table.columns]
        assert list(csv.columns) == expected_columns, stem
        assert list(parquet.columns) == expected_columns, stem
        assert len(csv) == len(parquet) == len(table), stem
    per_genre = pd.read_parquet(tmp_path / "out" / "per_genre.parquet").set_index("attribute")
    pd.testing.assert_series_equal(per_genre["correlation"],
                                   tables["per_genre"]["correlation"], check_names=False)
    meta = json.loads(written["alignment"].read_text())
    assert meta["rows"]["select"] == run.stats["SAE"]["select"].n_rows
    assert meta["hook_name"] == PAPER_HOOK and meta["provenance"]["run_dir"] == "somewhere"
    assert meta["attributes"]["unknown"] == "genre"


def test_item_predicates_and_year_ranges(paper_experiment: Experiment) -> None:
    items = item_table(paper_experiment)
    assert len(items) == paper_experiment.vocab.size and items.loc[0, "title"] == ""
    star = title_contains("star wars")(items)
    assert items.loc[star, "title"].tolist() == ["Star Wars (1977)"]
    eighties = year_between(1980, 1989)(items)
    assert eighties.sum() > 0 and (items.loc[eighties, "year"].between(1980, 1989)).all()
    assert not eighties[0]
    assert parse_year_range("1980-1989") == (1980, 1989)
    assert parse_year_range(" 1995 ") == (1995, 1995)
    with pytest.raises(ValueError, match="expected FIRST-LAST"):
        parse_year_range("eighties")
    with pytest.raises(ValueError, match="empty"):
        parse_year_range("1990-1980")
    with pytest.raises(ValueError, match="non-empty"):
        title_contains("")


def test_top_examples_show_real_titles_in_context(
    run: AlignmentRun, paper_experiment: Experiment, paper_sae: NormalizedSAE
) -> None:
    feature = int(run.per_attribute_table("SAE").loc["Comedy", "feature"])
    examples = feature_examples(paper_experiment, paper_sae, feature, k=5, part="test",
                                context=3)
    assert list(examples.columns) == ["rank", "activation", "user", "position", "item_id",
                                      "title", "year", "genres", "context"]
    assert len(examples) == 5 and examples["activation"].is_monotonic_decreasing
    catalog = paper_experiment.dataset.catalog.items
    test = paper_experiment.part("test")
    n_ctx = paper_experiment.model.cfg.n_ctx
    for _, row in examples.iterrows():
        assert row["title"] == catalog.loc[row["item_id"], "title"] and "(" in row["title"]
        seq = test.sequences[int(np.flatnonzero(test.users == row["user"])[0])][-n_ctx:]
        item_ids = paper_experiment.vocab.item_ids[seq - 1]
        assert item_ids[row["position"]] == row["item_id"]
        before = item_ids[max(0, row["position"] - 3):row["position"]]
        assert row["context"] == " | ".join(catalog.loc[before, "title"])
    acts = paper_experiment.activations("test", PAPER_HOOK).activations
    top = np.sort(encode_sparse(paper_sae, acts).toarray()[:, feature])[::-1][:5]
    np.testing.assert_allclose(examples["activation"].to_numpy(), top, rtol=1e-6)


def test_p_top_k_for_genres_and_predicates(
    run: AlignmentRun, paper_experiment: Experiment, paper_sae: NormalizedSAE
) -> None:
    feature = int(run.per_attribute_table("SAE").loc["Star Wars", "feature"])
    shares = feature_p_top_k(paper_experiment, paper_sae, [feature], predicates=PREDICATES,
                             k=50, part="sae_train")
    assert shares.shape == (1, len(run.attribute_names))
    acts = paper_experiment.activations("sae_train", PAPER_HOOK)
    values = encode_sparse(paper_sae, acts.activations).toarray()[:, feature]
    order = np.lexsort((np.arange(values.size), -values))[:50]
    star = _labels(paper_experiment, "sae_train")["Star Wars"].to_numpy()[order] > 0
    mass = np.maximum(values[order], 0)
    assert shares.loc[feature, "Star Wars"] == pytest.approx(mass[star].sum() / mass.sum())
    assert ((shares.to_numpy() >= 0) & (shares.to_numpy() <= 1)).all()


def test_sae_from_another_hook_or_model_is_a_clear_error(
    paper_experiment: Experiment, paper_sae: NormalizedSAE, tmp_path
) -> None:
    paper_sae.save(tmp_path / "sae")
    wrong_hook = NormalizedSAE.load(tmp_path / "sae", hook_name="blocks.7.hook_resid_post")
    with pytest.raises(ValueError, match=r"blocks\.7\.hook_resid_post.*cannot give"):
        align(paper_experiment, wrong_hook)
    other = ActivationSet.from_tensor(torch.randn(512, 16), PAPER_HOOK)
    narrow = train_sae(other, SAETrainingConfig(d_sae=32, steps=5, batch_size=64,
                                                   lr_warm_up_steps=1)).sae
    with pytest.raises(ValueError, match=r"width 16 .* width 32 there"):
        align(paper_experiment, narrow)
    with pytest.raises(ValueError, match="out of range"):
        feature_examples(paper_experiment, paper_sae, paper_sae.d_sae)
    with pytest.raises(ValueError, match="unknown metric"):
        align(paper_experiment, paper_sae, metric="f1")
    with pytest.raises(ValueError, match="other rows"):
        align(paper_experiment, paper_sae, select_part="test", score_part="test")
    check_sae_fits(paper_experiment, paper_sae)  # fits: no error


def test_items_unit_averages_each_item_over_its_positions(
    paper_experiment: Experiment, paper_sae: NormalizedSAE, run: AlignmentRun
) -> None:
    items = align(paper_experiment, paper_sae, predicates=PREDICATES, seed=0, unit="items",
                  decades=True)
    assert items.unit == "items" and run.unit == "positions"
    acts = paper_experiment.activations("test", PAPER_HOOK)
    tokens = acts.token.numpy()
    distinct = np.unique(tokens)
    assert items.stats["SAE"]["score"].n_rows == len(distinct) < len(tokens)
    # neurons: correlation of each neuron's per-item mean with the item's genre, by hand
    raw = pd.DataFrame(acts.activations.numpy()).groupby(tokens).mean()
    labels = _labels(paper_experiment, "test").groupby(tokens).first()
    expected = [_corr(raw[j].to_numpy(), labels["Drama"].to_numpy())
                for j in range(raw.shape[1])]
    np.testing.assert_allclose(items.stats["neurons"]["score"].table("correlation")["Drama"],
                               expected, atol=1e-6)
    # the bootstrap resamples items, the random control still matches the SAE's firing rates
    assert items.scored is not None and items.scored.n_groups == len(distinct)
    boot = items.bootstrap(20, seed=0)
    assert len(items.interval_table(boot)) > 0
    with pytest.raises(ValueError, match="unknown unit 'users'"):
        align(paper_experiment, paper_sae, unit="users")

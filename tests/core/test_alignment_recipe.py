"""The core's honest alignment recipe (``mechrec.alignment.align``) on a non-recommender model.

A :class:`~mechrec.study.TokenStudy` wraps the tiny HookedTransformer, two row sets of token
sequences and a table of token attributes; the recipe is checked against the primitives it
is built from (statistics on each row set, the choice on the select rows, the grouped
bootstrap) and against its input checks.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from tiny_model import TINY_VOCAB, make_tiny_model, random_tokens

from mechrec.activations import collect_activations
from mechrec.alignment import (
    AlignmentRun,
    FeatureAlignment,
    align,
    alignment_stats,
    best_features,
    encode_sparse,
    token_attributes,
)
from mechrec.saes import SAETrainingConfig, train_sae
from mechrec.study import Study, TokenStudy, check_attribute_table

HOOK = "blocks.0.hook_resid_post"


_tokens = random_tokens


def _attributes() -> tuple[pd.DataFrame, pd.Series]:
    tok = np.arange(TINY_VOCAB)
    table = pd.DataFrame({"even": tok % 2 == 0, "low": tok < 8, "high": tok >= 18,
                          "seven": tok == 7}).astype(np.float32)
    table.iloc[0] = 0.0  # padding carries nothing
    groups = pd.Series({"even": "parity", "low": "range", "high": "range", "seven": "token"})
    return table, groups


@pytest.fixture(scope="module")
def study() -> TokenStudy:
    table, groups = _attributes()
    return TokenStudy(make_tiny_model(), {"fit": _tokens(0), "eval": _tokens(1)}, table, groups,
                      batch_size=16)


@pytest.fixture(scope="module")
def sae(study: TokenStudy):
    acts = study.activations("fit", HOOK)
    config = SAETrainingConfig(architecture="topk", d_sae=32, k=4, steps=60, batch_size=64,
                               lr_warm_up_steps=0, seed=0)
    return train_sae(acts, config).sae


@pytest.fixture(scope="module")
def run(study: TokenStudy, sae) -> AlignmentRun:
    return align(study, sae, select="fit", score="eval", sources=("SAE", "neurons", "random",
                                                                  "probes"))


def test_token_study_is_a_study_and_collects_every_real_position(study: TokenStudy) -> None:
    assert isinstance(study, Study)
    acts = study.activations("fit", HOOK)
    expected = collect_activations(study.model, [(_tokens(0), None)], HOOK)
    torch.testing.assert_close(acts.activations, expected.activations)
    assert study.activations("fit", HOOK) is acts  # cached
    assert study.row_groups("eval").tolist() == list(range(48))
    assert "fit: 48x12" in repr(study)


def test_choice_on_select_rows_scored_on_score_rows(study: TokenStudy, sae,
                                                    run: AlignmentRun) -> None:
    table, _ = study.attribute_table()
    select = study.activations("fit", HOOK)
    score = study.activations("eval", HOOK)
    by_hand = {part: alignment_stats(encode_sparse(sae, a.activations),
                                     token_attributes(a.token, table))
               for part, a in (("select", select), ("score", score))}
    chosen = best_features(by_hand["select"], "correlation")
    best = run.best_table("SAE", "honest")
    for attribute, feature in chosen.items():
        if feature is None:
            assert pd.isna(best.loc[attribute, "feature"])
            continue
        assert best.loc[attribute, "feature"] == feature
        expected = by_hand["score"].table("correlation").loc[feature, attribute]
        assert best.loc[attribute, "correlation"] == pytest.approx(expected, abs=1e-6)
    # in-sample chooses on the score rows themselves: never worse on them than honest
    in_sample = run.best_table("SAE", "in-sample")["correlation"]
    assert (in_sample.fillna(-1) >= best["correlation"].fillna(-1) - 1e-9).all()


def test_sources_groups_and_probes(run: AlignmentRun) -> None:
    assert run.sources == ["SAE", "neurons", "random", "probes"]
    assert run.group_order == ["parity", "range", "token"]
    summary = run.summary()
    assert set(summary["group"]) == {"parity", "range", "token", "all"}
    assert summary.loc[summary["features"] == "random", "n_features"].iloc[0] == 32
    # a probe per attribute (named by it): the probe fitted for an attribute is chosen for it
    probes = run.best_table("probes", "honest")
    assert probes["feature"].tolist() == list(probes.index)
    assert (probes["correlation"] > 0.1).all()
    assert ("probes", "SAE") in run.default_pairs()


def test_k_sparse_and_pca_sources_choose_on_select_rows(study: TokenStudy, tmp_path) -> None:
    from mechrec.probes import fit_probes

    run = align(study, None, hook_name=HOOK, select="fit", score="eval",
                sources=("neurons", "k_sparse_probes", "pca"), probe_k=2, pca_components=6)
    assert run.sources == ["neurons", "k_sparse_probes", "pca"]
    assert {("k_sparse_probes", "SAE"), ("pca", "SAE")}.isdisjoint(run.default_pairs())
    table, _ = study.attribute_table()
    select, score = study.activations("fit", HOOK), study.activations("eval", HOOK)
    score_labels = token_attributes(score.token, table)
    for source, method, options in (("k_sparse_probes", "k_sparse", {"k": 2}),
                                    ("pca", "pca", {"n_components": 6})):
        best = run.best_table(source, "honest")
        # the probes are fitted on the select rows; the score rows only evaluate them
        probes = fit_probes(select, token_attributes(select.token, table), test_fraction=0.0,
                            max_train_rows=50_000, seed=0, method=method, **options)
        assert set(best["feature"].dropna()) <= set(probes.probes)  # named by attribute

        def logits(acts, probes=probes):
            raw = acts.activations.numpy().astype(np.float32)
            return pd.DataFrame({a: p.decision_function(raw) for a, p in probes.probes.items()})

        on_select = alignment_stats(logits(select).to_numpy(),
                                    token_attributes(select.token, table),
                                    feature_names=list(probes.probes))
        correlation = on_select.table("correlation")
        for attribute in ("even", "low", "high"):
            feature = best.loc[attribute, "feature"]
            # chosen on the select rows (two attributes may share a PCA component: a tie)
            assert correlation.loc[feature, attribute] == pytest.approx(
                correlation[attribute].max(), abs=1e-6)
            expected = np.corrcoef(logits(score)[feature], score_labels[attribute])[0, 1]
            assert best.loc[attribute, "correlation"] == pytest.approx(expected, abs=1e-4)
        if method == "k_sparse":
            assert all(np.count_nonzero(p.weight) == 2 for p in probes.probes.values())
    written = run.write(tmp_path)
    assert {"k_sparse_probes", "pca"} <= set(written)
    with pytest.raises(ValueError, match=r"k=17 is larger than the activation width d=16"):
        align(study, None, hook_name=HOOK, select="fit", score="eval",
              sources=("k_sparse_probes",), probe_k=17)
    with pytest.raises(ValueError, match=r"unknown feature sources.*k_sparse_probes, pca"):
        FeatureAlignment(None, hook_name=HOOK, sources=("sparse",))


def test_bootstrap_resamples_whole_sequences(run: AlignmentRun) -> None:
    assert run.scored is not None and run.scored.n_groups == 48
    boot = run.bootstrap(30, seed=0)
    assert boot.grouped and boot.n_groups == 48
    diffs = run.difference_table(boot)
    assert {("SAE", "neurons"), ("probes", "SAE")} <= set(zip(diffs["features"],
                                                              diffs["versus"], strict=True))
    meta = run.bootstrap_meta(boot)
    assert meta["resampled_unit"] == "eval group"


def test_write_saves_every_table_and_strict_json(run: AlignmentRun, tmp_path) -> None:
    written = run.write(tmp_path, bootstrap=10)
    assert {"sae", "neurons", "control", "probes", "per_attribute", "summary",
            "bootstrap_intervals", "alignment", "bootstrap"} <= set(written)
    meta = json.loads((tmp_path / "alignment.json").read_text())
    assert meta["select_part"] == "fit" and meta["score_part"] == "eval"
    assert meta["attributes"]["seven"] == "token"


def test_estimator_fit_then_score_and_token_unit(study: TokenStudy, sae) -> None:
    estimator = FeatureAlignment(sae, unit="tokens", seed=3).fit(study, "fit")
    run = estimator.score(study, "eval")
    distinct = np.unique(study.activations("eval", HOOK).token.numpy())
    assert run.stats["SAE"]["score"].n_rows == len(distinct)
    assert run.scored is not None and run.scored.n_groups == len(distinct)
    with pytest.raises(ValueError, match="other rows"):
        estimator.score(study, "fit")
    neurons_only = align(study, select="fit", score="eval", sources=("neurons",),
                         hook_name="blocks.1.hook_mlp_out")
    assert neurons_only.sources == ["neurons"] and neurons_only.hook_name.startswith("blocks.1")


def test_bad_input_is_named(study: TokenStudy, sae) -> None:
    with pytest.raises(ValueError, match="other rows"):
        align(study, sae, select="fit", score="fit")
    with pytest.raises(ValueError, match="unknown row set 'test'"):
        align(study, sae, select="fit", score="test")
    with pytest.raises(ValueError, match="need an SAE"):
        align(study, select="fit", score="eval", hook_name=HOOK)
    with pytest.raises(ValueError, match="unknown feature sources"):
        align(study, sae, select="fit", score="eval", sources=("SAE", "ica"))
    with pytest.raises(TypeError, match="is not a Study"):
        align(object(), sae, select="fit", score="eval")
    other = make_tiny_model(d_model=8, d_head=4)
    with pytest.raises(ValueError, match=r"width 16 .* width 8 there"):
        align(TokenStudy(other, {"a": _tokens(0), "b": _tokens(1)}, _attributes()[0]), sae,
              select="a", score="b")
    table, groups = _attributes()
    with pytest.raises(ValueError, match="one row per token id"):
        check_attribute_table(table.iloc[:5], groups, TINY_VOCAB)
    with pytest.raises(ValueError, match="only 0/1"):
        check_attribute_table(table * 2, groups, TINY_VOCAB)
    with pytest.raises(ValueError, match="no group for"):
        check_attribute_table(table, groups.drop("seven"), TINY_VOCAB)
    with pytest.raises(ValueError, match=r"outside 0\.\.23"):
        TokenStudy(study.model, {"a": torch.full((2, 3), 99)}, table)


def test_save_and_load_round_trip(run: AlignmentRun, tmp_path) -> None:
    written = run.save(tmp_path, bootstrap=10)
    assert written["run"].name == "run.npz"
    loaded = AlignmentRun.load(tmp_path)
    assert loaded.sources == run.sources and loaded.group_order == run.group_order
    for method in ("summary", "comparison", "per_attribute_table", "monosemanticity"):
        pd.testing.assert_frame_equal(getattr(loaded, method)(), getattr(run, method)())
    pd.testing.assert_frame_equal(loaded.difference_table(loaded.bootstrap(25, seed=4)),
                                  run.difference_table(run.bootstrap(25, seed=4)))
    # the bootstrap written beside the tables comes back without resampling
    boot, kept = run.bootstrap(10, seed=run.seed), loaded.saved_bootstrap
    assert kept is not None and loaded.saved_confidence == 0.95
    assert (kept.n_resamples, kept.seed, kept.metrics) == (10, run.seed, boot.metrics)
    pd.testing.assert_frame_equal(loaded.interval_table(kept, loaded.saved_confidence),
                                  run.interval_table(boot))
    pd.testing.assert_frame_equal(loaded.difference_table(kept), run.difference_table(boot))
    assert loaded.bootstrap_meta(kept) == run.bootstrap_meta(boot)
    # a loaded run saves again whole, at its confidence; 0 saves none
    run.save(tmp_path / "ninety", bootstrap=boot, confidence=0.9)
    again = AlignmentRun.load(tmp_path / "ninety")
    again.save(tmp_path / "again")
    resaved = AlignmentRun.load(tmp_path / "again")
    assert resaved.saved_confidence == 0.9
    pd.testing.assert_frame_equal(
        resaved.interval_table(resaved.saved_bootstrap, 0.9), run.interval_table(boot, 0.9))
    assert AlignmentRun.load(tmp_path / "ninety").saved_bootstrap is not None
    again.save(tmp_path / "none", bootstrap=0)
    assert AlignmentRun.load(tmp_path / "none").saved_bootstrap is None
    bare = tmp_path / "bare"
    run.save(bare, keep_rows=False)
    assert AlignmentRun.load(bare).saved_bootstrap is None
    with pytest.raises(ValueError, match="holds no score rows"):
        AlignmentRun.load(bare).bootstrap(5)
    with pytest.raises(FileNotFoundError, match=r"AlignmentRun\.save"):
        AlignmentRun.load(tmp_path / "nothing")


def test_row_attributes_that_copy_the_token_table_give_the_same_run(study: TokenStudy, sae,
                                                                    run: AlignmentRun) -> None:
    """Labels given per activation row go through the same choice, scoring and bootstrap:
    row labels equal to the token table's reproduce the token-table run exactly."""
    from mechrec.study import RowAttributes

    table, groups = _attributes()
    calls: list[str] = []

    def label(rows: str, acts) -> pd.DataFrame:
        calls.append(rows)
        return token_attributes(acts.token, table)

    rows = RowAttributes(label, groups, name="copied labels")
    again = align(study, sae, select="fit", score="eval", attributes=rows,
                  sources=("SAE", "neurons", "random", "probes"))
    assert set(calls) == {"fit", "eval"}
    pd.testing.assert_frame_equal(again.summary(), run.summary())
    pd.testing.assert_frame_equal(again.best_table("SAE"), run.best_table("SAE"))
    assert again.groups.to_dict() == run.groups.to_dict()


def test_row_attributes_label_events_a_token_table_cannot(study: TokenStudy, sae) -> None:
    """A label that depends on the position, not the token (here: the first half of each
    sequence), is aligned per row; the same token gets different labels."""
    from mechrec.study import RowAttributes

    def label(rows: str, acts) -> pd.DataFrame:
        return pd.DataFrame({"early": acts.position.numpy() < 6})

    run = align(study, sae, select="fit", score="eval", attributes=RowAttributes(label),
                sources=("SAE", "neurons", "random"))
    assert list(run.attribute_names) == ["early"]
    assert run.groups.to_dict() == {"early": "attribute"}
    acts = study.activations("eval", HOOK)
    by_hand = alignment_stats(acts.activations.numpy(), label("eval", acts))
    chosen = best_features(run.stats["neurons"]["select"], "correlation")["early"]
    honest = run.best_table("neurons").loc["early"]
    assert int(honest["feature"]) == int(chosen)
    assert float(honest["correlation"]) == pytest.approx(
        float(by_hand.table("correlation").loc[chosen, "early"]), abs=1e-5)


def test_row_attributes_are_checked(study: TokenStudy, sae) -> None:
    from mechrec.study import RowAttributes

    short = RowAttributes(lambda rows, acts: pd.DataFrame({"a": np.zeros(3)}), name="short")
    with pytest.raises(ValueError, match=r"short: label.*gave 3 rows for .* activation rows"):
        align(study, sae, select="fit", score="eval", attributes=short)
    graded = RowAttributes(lambda rows, acts: pd.DataFrame(
        {"a": np.full(len(acts.token), 0.5)}))
    with pytest.raises(ValueError, match="0/1 or booleans"):
        align(study, sae, select="fit", score="eval", attributes=graded)
    shifting = RowAttributes(lambda rows, acts: pd.DataFrame(
        {rows: acts.position.numpy() < 6}), name="shifting")
    with pytest.raises(ValueError, match="row set 'eval' is labelled with columns"):
        align(study, sae, select="fit", score="eval", attributes=shifting)
    rows = RowAttributes(lambda rows, acts: pd.DataFrame({"a": acts.position.numpy() < 6}))
    with pytest.raises(ValueError, match="unit='positions'"):
        align(study, sae, select="fit", score="eval", attributes=rows, unit="tokens")


def test_k_sparse_probes_on_sae_features(study: TokenStudy, sae) -> None:
    """The probe reads exactly k SAE features chosen on the select rows; its score-row
    logits are those features' activations times its weights (checked by hand)."""
    from mechrec.feature_probes import fit_feature_probes

    run = align(study, sae, select="fit", score="eval",
                sources=("SAE", "neurons", "random", "sae_k_sparse_probes"))
    assert "sae_k_sparse_probes" in run.sources
    fit_acts, eval_acts = study.activations("fit", HOOK), study.activations("eval", HOOK)
    table, _ = _attributes()
    fit_features = encode_sparse(sae, fit_acts.activations)
    by_hand = fit_feature_probes(fit_features, token_attributes(fit_acts.token, table), k=8)
    probe = by_hand.probes["even"]
    assert len(probe.features) == 8 and list(probe.features) == sorted(probe.features)
    eval_features = encode_sparse(sae, eval_acts.activations)
    logits = probe.decision_function(eval_features)
    dense = eval_features.toarray()[:, probe.features].astype(np.float64)
    np.testing.assert_allclose(logits, dense @ probe.weight + probe.bias, rtol=1e-6)
    honest = run.best_table("sae_k_sparse_probes").loc["even"]
    labels = token_attributes(eval_acts.token, table)["even"].to_numpy()
    assert float(honest["correlation"]) == pytest.approx(
        float(np.corrcoef(logits, labels)[0, 1]), abs=1e-4)
    # k = 1 reads the single most separating feature
    one = fit_feature_probes(fit_features, token_attributes(fit_acts.token, table), k=1)
    assert len(one.probes["even"].features) == 1
    with pytest.raises(ValueError, match=r"k=33 is larger than the SAE.s d_sae=32"):
        fit_feature_probes(fit_features, token_attributes(fit_acts.token, table), k=33)
    with pytest.raises(ValueError, match="need an SAE"):
        FeatureAlignment(None, hook_name=HOOK, sources=("neurons", "sae_k_sparse_probes"))

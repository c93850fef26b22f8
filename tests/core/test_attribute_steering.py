"""The core's attribute steering recipe on the tiny non-recommender model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from tiny_model import TINY_VOCAB, make_tiny_model

from mechrec.attribute_steering import AttributeSweep, attribute_sweep, top_k_collector
from mechrec.saes import SAETrainingConfig, train_sae
from mechrec.study import TokenStudy

HOOK = "blocks.0.hook_resid_post"
VALUES = [-4.0, 0.0, 4.0]


def _tokens(seed: int) -> torch.Tensor:
    return torch.randint(1, TINY_VOCAB, (40, 10), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def study() -> TokenStudy:
    tok = np.arange(TINY_VOCAB)
    table = pd.DataFrame({"even": tok % 2 == 0, "low": tok < 8}).astype(np.float32)
    table.iloc[0] = 0.0
    return TokenStudy(make_tiny_model(), {"fit": _tokens(0), "eval": _tokens(1)}, table)


@pytest.fixture(scope="module")
def sweep(study: TokenStudy) -> AttributeSweep:
    config = SAETrainingConfig(architecture="topk", d_sae=32, k=4, steps=60, batch_size=64,
                               seed=0)
    sae = train_sae(study.activations("fit", HOOK), config).sae
    return attribute_sweep(study, sae, {"Even": "even", "low": "low"}, select="fit",
                           score="eval", values=VALUES, k=5)


def test_curves_references_and_shares(study: TokenStudy, sweep: AttributeSweep) -> None:
    table = sweep.table
    assert set(table["method"]) == {"unsteered", "sae_reconstruction", "sae_feature",
                                    "sae_direction", "probe_direction", "random_feature"}
    assert set(sweep.curves["attribute"]) == {"Even", "low"}
    # the unsteered share is the attribute's share among the top-5 next tokens, by hand
    logits = []
    with torch.no_grad():
        for tokens, _ in study.batches("eval"):
            logits.append(study.model(tokens)[:, -1])
    scores = torch.cat(logits)
    scores[:, 0] = -torch.inf
    top = scores.topk(5, dim=-1).indices.numpy()
    even = study.attribute_table()[0]["even"].to_numpy()
    assert sweep.reference()["share:even"] == pytest.approx(float(even[top].mean()))
    mono = sweep.monotonicity()
    assert set(mono["curve"]) == set(sweep.curves["curve"])
    assert {"share@-4", "share@+4"} <= set(sweep.summary(at=VALUES).columns)


def test_rows_reach_collect_without_state(study: TokenStudy) -> None:
    seen_rows: list[np.ndarray] = []
    base = top_k_collector(3)

    def collect(logits, tokens, mask, rows):
        seen_rows.append(rows)
        return base(logits, tokens, mask, rows)

    from mechrec.sweep import feature_target, run_sweep

    config = SAETrainingConfig(architecture="topk", d_sae=16, k=2, steps=20, batch_size=64)
    sae = train_sae(study.activations("fit", HOOK), config).sae
    run_sweep(study.model, study.batches("eval"), [feature_target(sae, 0)], [1.0],
              lambda top: {"n": float(len(top))}, collect=collect, progress=False)
    ids = np.concatenate(seen_rows[::2])  # one steered and one baseline call per batch
    assert ids.tolist() == list(range(40))


def test_save_and_load_round_trip(sweep: AttributeSweep, tmp_path) -> None:
    sweep.save(tmp_path)
    loaded = AttributeSweep.load(tmp_path)
    assert loaded.label == sweep.label
    pd.testing.assert_frame_equal(loaded.table, sweep.table, check_dtype=False)
    pd.testing.assert_frame_equal(loaded.monotonicity(), sweep.monotonicity())
    with pytest.raises(FileNotFoundError, match="AttributeSweep"):
        AttributeSweep.load(tmp_path / "missing")


def test_bad_input_is_named(study: TokenStudy, sweep: AttributeSweep) -> None:
    sae = None
    with pytest.raises(ValueError, match="other rows"):
        attribute_sweep(study, sae, ["even"], select="fit", score="fit", values=[1.0])
    with pytest.raises(ValueError, match="no steering values"):
        attribute_sweep(study, sae, ["even"], select="fit", score="eval", values=[])


def test_mean_difference_probes_steer_and_align(study: TokenStudy) -> None:
    from mechrec.alignment import align

    config = SAETrainingConfig(architecture="topk", d_sae=32, k=4, steps=40, batch_size=64)
    sae = train_sae(study.activations("fit", HOOK), config).sae
    sweep = attribute_sweep(study, sae, ["even"], select="fit", score="eval", values=[0.0, 4.0],
                            probe_methods=("logistic", "mean_difference"), k=5)
    methods = set(sweep.curves["method"])
    assert {"probe_direction", "mean_difference_direction"} <= methods
    assert set(sweep.probe_metrics["method"]) == {"logistic", "mean_difference"}
    run = align(study, sae, select="fit", score="eval",
                sources=("SAE", "neurons", "probes", "mean_difference"))
    assert ("mean_difference", "SAE") in run.default_pairs()
    # the difference of means on the fit rows, by hand, is the probe's direction
    acts = study.activations("fit", HOOK)
    even = study.attribute_table()[0]["even"].to_numpy()[acts.token.numpy()] > 0
    x = acts.activations.double().numpy()
    from mechrec.probes import fit_probes

    probe = fit_probes(acts, pd.DataFrame({"even": even}), test_fraction=0.0,
                       method="mean_difference").probes["even"]
    np.testing.assert_allclose(probe.weight, x[even].mean(0) - x[~even].mean(0), rtol=1e-9)
    with pytest.raises(ValueError, match="unknown probe method"):
        fit_probes(acts, pd.DataFrame({"even": even}), method="nope")


def test_k_sparse_and_pca_probes_steer(study: TokenStudy) -> None:
    from mechrec.probes import fit_probes

    config = SAETrainingConfig(architecture="topk", d_sae=32, k=4, steps=40, batch_size=64)
    sae = train_sae(study.activations("fit", HOOK), config).sae
    with pytest.raises(ValueError, match=r"probe_k=17 is larger than the activation width "
                                         r"d=16: pass probe_k <= 16"):
        attribute_sweep(study, sae, ["even"], select="fit", score="eval", values=[1.0],
                        probe_methods=("k_sparse",), probe_k=17)
    sweep = attribute_sweep(study, sae, {"Even": "even", "low": "low"}, select="fit",
                            score="eval", values=[0.0, 4.0], k=5, random_control=False,
                            probe_methods=("k_sparse", "pca"), probe_k=3, pca_components=6)
    curves = sweep.curves
    assert {"k_sparse_direction", "pca_direction"} <= set(curves["method"])
    assert {"k-sparse:Even", "k-sparse:low", "pca:Even", "pca:low"} <= set(curves["curve"])
    assert set(curves.loc[curves["method"] == "pca_direction", "mode"]) == {"add"}
    assert set(sweep.probe_metrics["method"]) == {"k_sparse", "pca"}
    settings = sweep.metadata["probes"]
    assert settings["k_sparse"]["k"] == 3 and settings["pca"]["n_components"] == 6
    assert all(len(v) == 3 for v in settings["k_sparse"]["neurons"].values())
    # the directions are the probes fitted on the select rows only, with k nonzero entries
    table = study.attribute_table()[0]

    def rows(part: str):
        acts = study.activations(part, HOOK)
        return acts, pd.DataFrame({"even": table["even"].to_numpy()[acts.token.numpy()] > 0})

    (fit_acts, fit_labels), (eval_acts, eval_labels) = rows("fit"), rows("eval")
    by_hand = fit_probes(fit_acts, fit_labels, test_activations=eval_acts.activations,
                         test_labels=eval_labels, method="k_sparse", k=3)
    assert np.count_nonzero(by_hand.probes["even"].weight) == 3
    assert settings["k_sparse"]["neurons"]["even"] == by_hand.settings["neurons"]["even"]
    # value 0 adds nothing: every direction's curve starts at the unsteered share
    base = sweep.reference()["share:even"]
    at_zero = curves[(curves["value"] == 0.0) & (curves["column"] == "even")
                     & curves["method"].isin(["k_sparse_direction", "pca_direction"])]
    assert len(at_zero) == 2
    np.testing.assert_allclose(at_zero["target_share"], base)


def test_the_attribute_table_is_validated_once_per_call(study: TokenStudy, monkeypatch) -> None:
    import mechrec.attribute_steering as steering
    from mechrec.attribute_steering import fit_attribute_probes, select_attribute_features

    config = SAETrainingConfig(architecture="topk", d_sae=16, k=2, steps=20, batch_size=64,
                               seed=0)
    sae = train_sae(study.activations("fit", HOOK), config).sae
    checks = []
    real = steering.check_attribute_table

    def counted(*args):
        checks.append(args)
        return real(*args)

    monkeypatch.setattr(steering, "check_attribute_table", counted)
    attribute_sweep(study, sae, ["even"], select="fit", score="eval", values=[0.0, 4.0], k=5,
                    probe_methods=("logistic", "mean_difference"))
    assert len(checks) == 1
    checks.clear()
    select_attribute_features(study, sae, ["even"], select="fit", score="eval")
    assert len(checks) == 1
    checks.clear()
    fit_attribute_probes(study, HOOK, ["even"], select="fit", score="eval")
    assert len(checks) == 1


def test_a_skipped_attribute_is_warned_about_where_it_was_asked_for(study: TokenStudy) -> None:
    from mechrec.attribute_steering import select_attribute_features

    table, _ = study.attribute_table()
    with_empty = TokenStudy(study.model, {"fit": _tokens(0), "eval": _tokens(1)},
                            table.assign(never=0.0))
    config = SAETrainingConfig(architecture="topk", d_sae=16, k=2, steps=20, batch_size=64,
                               seed=0)
    sae = train_sae(with_empty.activations("fit", HOOK), config).sae
    with pytest.warns(UserWarning, match="'never' has no SAE feature") as caught:
        select_attribute_features(with_empty, sae, ["even", "never"], select="fit",
                                  score="eval")
    assert [w.filename for w in caught if "'never'" in str(w.message)] == [__file__]
    with pytest.warns(UserWarning, match="'never' has no SAE feature") as caught:
        attribute_sweep(with_empty, sae, ["even", "never"], select="fit", score="eval",
                        values=[0.0], k=5, probes=False)
    assert {w.filename for w in caught if "'never'" in str(w.message)} == {steering_file()}


def steering_file() -> str:
    import mechrec.attribute_steering as steering

    return steering.__file__

"""Splice quality on a trained ml-100k run: loss / NDCG recovered, KL, density, absorption."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_checks import run_cli
from mechrec_recsys.experiment import Experiment
from mechrec_recsys.metrics import ndcg_at_k
from mechrec_recsys.sae_quality import (
    QUALITY_KEYS,
    absorption_table,
    feature_density_table,
    splice_quality,
)

from mechrec.saes import NormalizedSAE


@pytest.fixture
def data_args(data_dir: Path) -> list[str]:
    return ["--data-dir", str(data_dir / "ml-100k"), "--no-download"]


def test_splice_quality_against_direct_computations(paper_experiment: Experiment,
                                                    paper_sae: NormalizedSAE) -> None:
    scores = splice_quality(paper_experiment, paper_sae)
    assert list(scores) == list(QUALITY_KEYS)
    assert all(np.isfinite(v) for v in scores.values())
    # the original loss: next-item cross-entropy of each test target, by hand
    test = paper_experiment.part("test")
    logits = []
    with torch.no_grad():
        for tokens, mask in paper_experiment.batches("test"):
            logits.append(paper_experiment.model(tokens, attention_mask=mask)[:, -1])
    scores_all = torch.cat(logits).double()
    scores_all[:, 0] = -torch.inf
    expected = -torch.log_softmax(scores_all, -1)[torch.arange(len(test)),
                                                  torch.as_tensor(test.targets)].mean()
    assert scores["loss_original"] == pytest.approx(float(expected), rel=1e-5)
    top = paper_experiment.recommend("test", 10)
    assert scores["ndcg_original"] == pytest.approx(float(ndcg_at_k(top, test.targets, 10)
                                                          .mean()))
    for mode in ("zero", "mean"):
        recovered = ((scores[f"loss_{mode}"] - scores["loss_sae"])
                     / (scores[f"loss_{mode}"] - scores["loss_original"]))
        assert scores[f"loss_recovered_{mode}"] == pytest.approx(recovered)
    assert scores["loss_zero"] > scores["loss_original"]  # the hook carries information
    assert scores["kl"] >= 0
    with pytest.raises(ValueError, match="other users"):
        splice_quality(paper_experiment, paper_sae, part="test", mean_part="test")


def test_density_and_absorption_tables(paper_experiment: Experiment,
                                       paper_sae: NormalizedSAE) -> None:
    density = feature_density_table(paper_experiment, paper_sae)
    assert density["features"].sum() == paper_sae.d_sae
    table = absorption_table(paper_experiment, paper_sae)
    assert {"Children's", "Thriller", "Drama"} <= set(table["parent"])
    assert ((table["absorption_rate"] >= 0) & (table["absorption_rate"] <= 1)).all()


def test_cli_quality_prints_and_writes(paper_run_dir: Path, paper_sae: NormalizedSAE,
                                       data_args: list[str], tmp_path: Path) -> None:
    paper_sae.save(paper_run_dir / "saes" / "quality-test")
    out = tmp_path / "quality"
    result = run_cli("sae", "quality", paper_run_dir, "quality-test", "--out", out, *data_args)
    assert result.exit_code == 0, result.output
    for label in ("next-item loss", "NDCG@10", "recovered vs zero", "KL(original || SAE)"):
        assert label in result.output, label
    saved = json.loads((out / "quality.json").read_text())
    assert set(QUALITY_KEYS) <= set(saved)
    assert (out / "density.csv").is_file() and (out / "absorption.csv").is_file()


def test_feature_page_and_output_effects(paper_experiment: Experiment,
                                         paper_sae: NormalizedSAE) -> None:
    from mechrec_recsys.feature_pages import feature_dashboard, feature_output_effects

    from mechrec.splice_quality import feature_density

    feature = int(np.argmax(feature_density(
        paper_sae, paper_experiment.activations("sae_train", paper_sae.hook_name))))
    effects = feature_output_effects(paper_experiment, paper_sae, feature, k=3)
    for frame in effects.values():
        assert frame["side"].tolist() == ["promotes"] * 3 + ["demotes"] * 3
        assert frame["title"].map(len).gt(0).all()
        promoted = frame[frame.side == "promotes"]["effect"].to_numpy()
        assert (np.diff(promoted) <= 0).all()
    page = feature_dashboard(paper_experiment, paper_sae, feature, k=4, context=3)
    assert page["index"] == feature and 0 < page["frac_nonzero"] <= 1
    assert 0 < len(page["activations"]) <= 4
    first = page["activations"][0]
    assert len(first["tokens"]) == len(first["values"]) <= 4
    assert first["values"][first["maxValueTokenIndex"]] == pytest.approx(first["maxValue"])
    assert len(page["pos_str"]) == len(page["neg_str"]) == 4
    hist = page["histogram"]
    assert sum(hist["with_attribute"]) + sum(hist["without_attribute"]) == pytest.approx(
        page["frac_nonzero"] * len(paper_experiment.activations("sae_train",
                                                                paper_sae.hook_name)))
    json.dumps(page, allow_nan=False)  # strict JSON as exported


def test_feature_pages_reuse_features_encoded_once(paper_experiment: Experiment,
                                                   paper_sae: NormalizedSAE) -> None:
    """Pages built from features encoded once by the caller (as the report's steer step does
    for every steered genre) equal the pages that encode the part themselves."""
    from mechrec_recsys.alignment import encode_sparse, feature_p_top_k
    from mechrec_recsys.feature_pages import feature_dashboard

    from mechrec.splice_quality import feature_density

    acts = paper_experiment.activations("sae_train", paper_sae.hook_name)
    encoded = encode_sparse(paper_sae, acts.activations)
    density = feature_density(paper_sae, acts)
    features = [int(f) for f in np.argsort(-density, kind="stable")[:2]]
    for matrix in (encoded, encoded.tocsc()):
        for feature in features:
            shared = feature_dashboard(paper_experiment, paper_sae, feature, k=3, context=2,
                                       encoded=matrix)
            alone = feature_dashboard(paper_experiment, paper_sae, feature, k=3, context=2)
            assert json.dumps(shared, allow_nan=False) == json.dumps(alone, allow_nan=False)
        pd_shared = feature_p_top_k(paper_experiment, paper_sae, features, encoded=matrix)
        pd_alone = feature_p_top_k(paper_experiment, paper_sae, features)
        assert pd_shared.equals(pd_alone)
    with pytest.raises(ValueError, match="encode this part's activations with this SAE"):
        feature_dashboard(paper_experiment, paper_sae, features[0], encoded=encoded[:10])


def test_feature_pages_refuse_a_bad_feature_index(paper_experiment: Experiment,
                                                  paper_sae: NormalizedSAE) -> None:
    from mechrec_recsys.feature_pages import feature_dashboard, feature_output_effects

    last = paper_sae.d_sae - 1
    for page in (feature_dashboard, feature_output_effects):
        for bad in (paper_sae.d_sae, -1):
            with pytest.raises(ValueError, match=f"feature index {bad} is out of range .*"
                                                 f"use 0..{last}"):
                page(paper_experiment, paper_sae, bad)
        for bad in (1.0, True, "3"):
            with pytest.raises(ValueError, match="feature index must be an integer"):
                page(paper_experiment, paper_sae, bad)


def test_absorption_pairs_match_genre_names_loosely(paper_experiment: Experiment,
                                                    paper_sae: NormalizedSAE) -> None:
    """Pair names match the dataset's genres as steering does (``Children`` finds
    ``Children's``); pairs with a genre the dataset lacks are left out."""
    table = absorption_table(paper_experiment, paper_sae,
                             pairs=[("children", "Animation"), ("Drama", "IMAX"),
                                    ("Thriller", "no such genre")])
    assert table[["parent", "child"]].values.tolist() == [["Children's", "Animation"]]
    empty = absorption_table(paper_experiment, paper_sae, pairs=[("IMAX", "War")])
    assert empty.empty

"""The experiment glue: a run folder reopens into the same split, model and evaluation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from mechrec_recsys.experiment import Experiment, RunSpec, decade_label
from mechrec_recsys.metrics import recommend_top_k


def test_reopened_model_recommends_like_the_library(paper_experiment: Experiment):
    test = paper_experiment.part("test")
    ours = paper_experiment.recommend("test", k=10)
    reference = recommend_top_k(paper_experiment.model, test, k=10)
    assert np.array_equal(ours, reference)
    for row, seen in zip(ours, test.sequences, strict=True):
        assert not np.isin(row, seen).any()
        assert (row > 0).all()


def test_evaluation_has_ranking_and_share_metrics(paper_experiment: Experiment):
    top_k = paper_experiment.recommend("test", k=10)
    metrics = paper_experiment.evaluate_top_k(top_k)
    assert 0.0 <= metrics["ndcg"] <= metrics["hit_rate"] <= 1.0
    assert metrics["ndcg_se"] > 0
    assert 0.0 < metrics["coverage"] <= 1.0
    assert 0.0 < metrics["diversity"] <= 1.0
    shares = {k: v for k, v in metrics.items() if k.startswith("share:")}
    assert set(shares) == {f"share:{g}" for g in paper_experiment.genre_names}
    # every recommended ml-100k movie has at least one genre, so shares sum to >= 1
    assert sum(shares.values()) >= 1.0


def test_activations_cover_every_real_position(paper_experiment: Experiment):
    acts = paper_experiment.activations("test", "blocks.0.hook_resid_post")
    n_ctx = paper_experiment.model.cfg.n_ctx
    expected = sum(min(len(s), n_ctx) for s in paper_experiment.part("test").sequences)
    assert acts.activations.shape == (expected, paper_experiment.model.cfg.d_model)
    assert (acts.token > 0).all()
    assert paper_experiment.activations("test", "blocks.0.hook_resid_post") is acts


def test_token_attributes_with_decades(paper_experiment: Experiment):
    matrix, names = paper_experiment.token_attributes(decades=True)
    assert matrix.shape == (paper_experiment.vocab.size, len(names))
    assert not matrix[0].any()
    decade_columns = [i for i, n in enumerate(names) if n.startswith("decade=")]
    assert "decade=1990s" in names
    known_year = paper_experiment.dataset.catalog.items["year"].reindex(
        paper_experiment.vocab.item_ids).notna().to_numpy()
    assert np.array_equal(matrix[1:, decade_columns].sum(axis=1), known_year.astype(np.float32))
    assert decade_label(1994) == "decade=1990s"


def test_unknown_part_and_missing_run_are_clear(paper_experiment: Experiment, tmp_path):
    with pytest.raises(ValueError, match="unknown split part"):
        paper_experiment.part("holdout")
    with pytest.raises(FileNotFoundError, match="not a mechrec run folder"):
        RunSpec.load(tmp_path)
    (tmp_path / "run.json").write_text("{bad json")
    with pytest.raises(ValueError, match="line 1, column 2"):
        RunSpec.load(tmp_path)
    (tmp_path / "run.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a mechrec run spec"):
        RunSpec.load(tmp_path)


def test_batches_are_left_padded_to_the_model_context(paper_experiment: Experiment):
    tokens, mask = next(paper_experiment.batches("sae_train"))
    assert tokens.shape[1] <= paper_experiment.model.cfg.n_ctx
    assert torch.equal(mask[:, -1], torch.ones_like(mask[:, -1]))

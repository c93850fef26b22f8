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


# ------------------------------------------------------------------------------- user lookup


def test_find_user_searches_test_users_first_and_accepts_any_spelling(
        paper_experiment: Experiment):
    parts = paper_experiment.user_parts
    assert parts == ["test", "validation", "sae_train", "train"]
    index = paper_experiment.user_index()
    with pytest.raises(TypeError):  # read-only
        index["x"] = ("test", 0)  # type: ignore[index]
    # every user of every part is found, in the first part (search order) that holds it
    for part in parts:
        users = paper_experiment.part(part).users
        for row in (0, len(users) - 1):
            user = users[row]
            found_part, found_row = paper_experiment.find_user(user)
            first = next(p for p in parts if user in set(paper_experiment.part(p).users))
            assert found_part == first
            assert paper_experiment.part(found_part).users[found_row] == user
    user = int(paper_experiment.part("test").users[3])
    where = paper_experiment.find_user(user)
    assert where == ("test", 3)
    for spelling in (str(user), f" {user} ", np.int64(user), float(user), f"0{user}",
                     f"+{user}"):
        assert paper_experiment.find_user(spelling) == where, spelling
    # the index is built once and shared by every lookup
    assert paper_experiment._user_index is not None
    cached = paper_experiment._user_index
    paper_experiment.find_user(user)
    assert paper_experiment._user_index is cached
    assert len(index) == len(set().union(*(set(paper_experiment.part(p).users.tolist())
                                           for p in parts)))


def test_unknown_user_error_names_the_parts_searched(paper_experiment: Experiment):
    with pytest.raises(ValueError, match=r"unknown user 999999999: .*searched the test, "
                                         r"validation, sae_train, train users"):
        paper_experiment.find_user(999999999)
    with pytest.raises(ValueError, match="unknown user 'nobody'"):
        paper_experiment.find_user("nobody")
    with pytest.raises(ValueError, match=r"unknown user 7\.5"):
        paper_experiment.find_user(7.5)

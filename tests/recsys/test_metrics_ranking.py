"""Ranking metrics checked against brute-force implementations."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from mechrec_recsys.metrics import (
    PopularityRecommender,
    attribute_share_at_k,
    bootstrap_se,
    compare_with_popularity,
    coverage_at_k,
    diversity_at_k,
    evaluate_top_k,
    expand_last_targets,
    hit_rate_at_k,
    mask_seen,
    mean_and_se,
    mrr_at_k,
    ndcg_all_positions,
    ndcg_at_k,
    paired_difference,
    recommend_top_k,
    target_ranks,
    top_k_from_scores,
)
from mechrec_recsys.model import GPTRecConfig, build_gptrec, last_position_scores
from mechrec_recsys.sequences import SequenceSet, left_pad


@st.composite
def lists_and_targets(draw, max_items: int = 30):
    """Top-K lists of distinct items (0 = empty slot at the end) and one target per user."""
    n_items = draw(st.integers(3, max_items))
    k = draw(st.integers(1, min(8, n_items)))
    users = draw(st.integers(1, 12))
    rows, targets = [], []
    for _ in range(users):
        length = draw(st.integers(0, k))
        items = draw(st.permutations(range(1, n_items + 1)))[:length]
        rows.append(list(items) + [0] * (k - length))
        targets.append(draw(st.integers(1, n_items)))
    return np.array(rows, dtype=np.int64), np.array(targets, dtype=np.int64), n_items


def brute_rank(row, target):
    for position, item in enumerate(row, start=1):
        if item == target:
            return position
    return 0


@settings(max_examples=150, deadline=None)
@given(data=lists_and_targets(), cut=st.integers(1, 8))
def test_per_user_metrics_match_brute_force(data, cut) -> None:
    top, targets, _ = data
    k = min(cut, top.shape[1])
    ranks = [brute_rank(row[:k], t) for row, t in zip(top, targets, strict=True)]
    assert target_ranks(top, targets, k).tolist() == ranks
    assert np.allclose(ndcg_at_k(top, targets, k),
                       [1 / math.log2(r + 1) if r else 0.0 for r in ranks])
    assert np.allclose(hit_rate_at_k(top, targets, k), [1.0 if r else 0.0 for r in ranks])
    assert np.allclose(mrr_at_k(top, targets, k), [1 / r if r else 0.0 for r in ranks])


@settings(max_examples=150, deadline=None)
@given(data=lists_and_targets(), train_seed=st.integers(0, 1000))
def test_coverage_matches_set_arithmetic(data, train_seed) -> None:
    top, _, n_items = data
    rng = np.random.default_rng(train_seed)
    train = rng.integers(1, n_items + 1, rng.integers(1, 40))
    recommended = {int(i) for i in top.ravel() if i != 0}
    expected = len(recommended & set(train.tolist())) / len(set(train.tolist()))
    assert coverage_at_k(top, train) == pytest.approx(expected)


@settings(max_examples=150, deadline=None)
@given(data=lists_and_targets())
def test_diversity_matches_explicit_pairwise_cosine(data) -> None:
    top, _, n_items = data
    vectors = np.zeros((len(top), n_items + 1))
    for u, row in enumerate(top):
        vectors[u, row[row != 0]] = 1.0
    vectors = vectors[vectors.sum(1) > 0]
    if len(vectors) < 2:
        with pytest.raises(ValueError, match="at least two users"):
            diversity_at_k(top)
        return
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    distances = [1 - unit[a] @ unit[b] for a, b in itertools.combinations(range(len(unit)), 2)]
    assert diversity_at_k(top) == pytest.approx(np.mean(distances), abs=1e-12)


def test_diversity_extremes() -> None:
    same = np.tile(np.arange(1, 6), (4, 1))
    assert diversity_at_k(same) == pytest.approx(0.0)
    disjoint = np.arange(1, 21).reshape(4, 5)
    assert diversity_at_k(disjoint) == pytest.approx(1.0)


@settings(max_examples=100, deadline=None)
@given(data=lists_and_targets(), n_attr=st.integers(1, 5), seed=st.integers(0, 1000))
def test_attribute_shares_match_loops(data, n_attr, seed) -> None:
    top, _, n_items = data
    rng = np.random.default_rng(seed)
    attributes = (rng.random((n_items + 1, n_attr)) < 0.4).astype(np.float32)
    attributes[0] = 0
    shares = attribute_share_at_k(top, attributes)
    for u, row in enumerate(top):
        items = [i for i in row if i != 0]
        for a in range(n_attr):
            if not items:
                assert math.isnan(shares[u, a])
            else:
                assert shares[u, a] == pytest.approx(np.mean([attributes[i, a] for i in items]))


@settings(max_examples=100, deadline=None)
@given(n_items=st.integers(2, 25), k=st.integers(1, 30), seed=st.integers(0, 10**6))
def test_top_k_with_seen_masking_matches_argsort(n_items, k, seed) -> None:
    rng = np.random.default_rng(seed)
    users = 4
    scores = torch.from_numpy(rng.integers(0, 5, (users, n_items + 1)).astype(np.float64))
    seen = [rng.choice(np.arange(1, n_items + 1), rng.integers(0, n_items + 1), replace=False)
            for _ in range(users)]
    top = top_k_from_scores(mask_seen(scores.clone(), seen), k)
    for u in range(users):
        allowed = [i for i in range(1, n_items + 1) if i not in set(seen[u].tolist())]
        expected = sorted(allowed, key=lambda i: (-scores[u, i].item(), i))[:k]
        assert top[u].tolist() == expected + [0] * (k - len(expected))


def test_popularity_baseline_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    train = [rng.integers(1, 30, rng.integers(1, 15)) for _ in range(40)]
    pop = PopularityRecommender.fit(SequenceSet(np.arange(40), train), vocab_size=30)
    counts = {i: sum(int((s == i).sum()) for s in train) for i in range(1, 30)}
    order = sorted(counts, key=lambda i: (-counts[i], i))
    history = [rng.integers(1, 30, 6) for _ in range(5)]
    top = pop.recommend(history, k=7)
    for row, seen in zip(top, history, strict=True):
        assert row.tolist() == [i for i in order if i not in set(seen.tolist())][:7]
    assert pop.recommend(history, k=7, exclude_seen=False)[0].tolist() == order[:7]
    with pytest.raises(ValueError, match="outside the item range"):
        PopularityRecommender.fit([np.array([1, 30])], vocab_size=30)


def test_standard_errors() -> None:
    values = np.array([0.0, 1.0, 1.0, 0.5, 0.25])
    est = mean_and_se(values)
    assert est.mean == pytest.approx(values.mean())
    assert est.se == pytest.approx(values.std(ddof=1) / math.sqrt(5))
    assert math.isnan(mean_and_se(np.array([1.0])).se)
    diff = paired_difference(values, values * 0.5)
    assert diff.mean == pytest.approx(values.mean() / 2)
    assert diff.se == pytest.approx((values * 0.5).std(ddof=1) / math.sqrt(5))
    se = bootstrap_se(lambda idx: float(values[idx].mean()), 5, n_resamples=2000, seed=1)
    assert se == pytest.approx(values.std(ddof=0) / math.sqrt(5), rel=0.1)


def test_evaluate_top_k_report() -> None:
    top = np.array([[1, 2, 3], [2, 3, 4], [5, 1, 2]])
    targets = np.array([2, 9, 5])
    attributes = np.zeros((10, 2))
    attributes[[1, 2], 0] = 1
    report = evaluate_top_k(top, targets, train_items=np.arange(1, 10), k=2,
                            attributes=attributes, attribute_names=["a", "b"])
    assert report.metrics["hit_rate"].mean == pytest.approx(2 / 3)
    assert report.metrics["ndcg"].mean == pytest.approx((1 / math.log2(3) + 1) / 3)
    assert report.metrics["coverage"].mean == pytest.approx(4 / 9)  # {1, 2, 3, 5}
    assert report.metrics["share:a"].mean == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert report.to_json()["metrics"]["ndcg"]["se"] is not None
    with pytest.raises(ValueError, match="k=4"):
        evaluate_top_k(top, targets, train_items=np.arange(1, 10), k=4)
    with pytest.raises(ValueError, match="one each"):
        ndcg_at_k(top, targets[:2])
    with pytest.raises(ValueError, match="empty"):
        ndcg_at_k(np.zeros((0, 3), dtype=np.int64), np.zeros(0, dtype=np.int64))
    with pytest.raises(ValueError, match="padding token"):
        ndcg_at_k(top, np.array([0, 1, 2]))


def test_model_recommendations_exclude_seen_items_and_padding() -> None:
    model = build_gptrec(21, GPTRecConfig(n_layers=1, d_model=8, d_mlp=16, max_len=6))
    rng = np.random.default_rng(0)
    sequences = [rng.integers(1, 21, n) for n in (2, 9, 15, 4)]
    top = recommend_top_k(model, sequences, k=10, batch_size=3)
    for row, seq in zip(top, sequences, strict=True):
        assert 0 not in row[: 20 - len(set(seq.tolist()))]
        assert not set(row.tolist()) & set(seq.tolist())
    unmasked = recommend_top_k(model, sequences, k=20, exclude_seen=False)
    assert (unmasked != 0).all()
    tokens, mask = left_pad(sequences, max_len=6)
    expected = last_position_scores(model, tokens, mask)[:, 1:].argsort(-1, descending=True) + 1
    assert unmasked[:, 0].tolist() == expected[:, 0].tolist()
    with pytest.raises(ValueError, match="empty"):
        recommend_top_k(model, [], k=3)


def test_all_position_ndcg_matches_prefix_by_prefix_ranking() -> None:
    model = build_gptrec(21, GPTRecConfig(n_layers=1, d_model=8, d_mlp=16, max_len=5))
    rng = np.random.default_rng(3)
    inputs = [rng.permutation(np.arange(1, 21))[:n] for n in (1, 4, 9)]
    targets = np.array([7, 3, 20])
    sequences = SequenceSet(np.arange(3), inputs, targets)
    for exclude_seen in (True, False):
        got = ndcg_all_positions(model, sequences, k=3, exclude_seen=exclude_seen, batch_size=2)
        expected = []
        for seq, target in zip(inputs, targets, strict=True):
            whole = np.append(seq, target)
            start = max(0, len(whole) - 6)  # one window of max_len + 1 items per sequence
            for i in range(max(1, start + 1), len(whole)):
                tokens, mask = left_pad([whole[start:i]])
                scores = last_position_scores(model, tokens, mask).double()
                top = top_k_from_scores(mask_seen(scores, [whole[:i]] if exclude_seen else None), 3)
                expected.append(ndcg_at_k(top, whole[i:i + 1])[0])
        assert np.allclose(got, expected, atol=1e-9)
    assert len(got) == 1 + 4 + 5


def test_several_targets_per_user_are_averaged_per_user() -> None:
    test = SequenceSet(np.array([10, 20]), [np.array([1, 2, 3]), np.array([4])],
                       np.array([5, 6]))
    rows, owners = expand_last_targets(test, 3)
    assert [r.tolist() for r in rows.sequences] == [[1], [1, 2], [1, 2, 3], [4]]
    assert rows.targets.tolist() == [2, 3, 5, 6] and owners.tolist() == [0, 0, 0, 1]
    assert rows.users.tolist() == [10, 10, 10, 20]
    top = np.array([[7, 8], [3, 9], [9, 5], [1, 2]])
    report = evaluate_top_k(top, rows.targets, train_items=np.arange(1, 10), k=2, groups=owners)
    first_user = (0.0 + 1.0 + 1 / math.log2(3)) / 3
    assert report.per_user["ndcg"].tolist() == pytest.approx([first_user, 0.0])
    assert report.n_users == 2
    assert report.metrics["coverage"].mean == pytest.approx(4 / 9)  # lists [9, 5] and [1, 2]
    model = build_gptrec(21, GPTRecConfig(n_layers=1, d_model=8, d_mlp=16, max_len=6))
    one = compare_with_popularity(model, test, test, k=3)
    same = compare_with_popularity(model, test, test, k=3, targets_per_user=1)
    assert one.to_json() == same.to_json() and one.info["test_users"] == 2
    several = compare_with_popularity(model, test, test, k=3, targets_per_user=3)
    assert several.info["test_users"] == 2 and several.reports["GPTRec"].n_users == 2
    with pytest.raises(ValueError, match="n must be"):
        expand_last_targets(test, 0)

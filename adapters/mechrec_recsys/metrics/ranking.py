"""Per-user ranking metrics for one held-out target, and set-level metrics of top-K lists.

A top-K array is ``(S, K)`` int64 tokens, best first; 0 marks an empty slot.
"""

from __future__ import annotations

import math

import numpy as np

from mechrec_recsys.vocab import PAD_TOKEN

__all__ = [
    "attribute_share_at_k",
    "coverage_at_k",
    "diversity_at_k",
    "hit_rate_at_k",
    "mrr_at_k",
    "ndcg_at_k",
    "target_ranks",
]


def _check_top_k(top_k: np.ndarray, k: int | None) -> np.ndarray:
    top_k = np.asarray(top_k)
    if top_k.ndim != 2:
        raise ValueError(f"top_k must be (users, K), got shape {top_k.shape}")
    if top_k.shape[0] == 0:
        raise ValueError("no users to evaluate (empty top-K array)")
    if k is not None:
        if k < 1 or k > top_k.shape[1]:
            raise ValueError(f"k={k} must be in 1..{top_k.shape[1]} (the width of top_k)")
        top_k = top_k[:, :k]
    return top_k


def target_ranks(top_k: np.ndarray, targets: np.ndarray, k: int | None = None) -> np.ndarray:
    """1-based rank of each user's target within its top-``k`` list, 0 when absent."""
    top_k = _check_top_k(top_k, k)
    targets = np.asarray(targets, dtype=np.int64)
    if targets.shape != (top_k.shape[0],):
        raise ValueError(f"{targets.shape} targets for {top_k.shape[0]} users: one each expected")
    if (targets == PAD_TOKEN).any():
        raise ValueError("a target is the padding token 0; targets must be item tokens")
    hits = top_k == targets[:, None]
    return np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, 0)


def ndcg_at_k(top_k: np.ndarray, targets: np.ndarray, k: int | None = None) -> np.ndarray:
    """Per-user NDCG@k: ``1 / log2(rank + 1)`` if the target is ranked within k, else 0."""
    ranks = target_ranks(top_k, targets, k)
    return np.where(ranks > 0, 1.0 / np.log2(np.maximum(ranks, 1) + 1.0), 0.0)


def hit_rate_at_k(top_k: np.ndarray, targets: np.ndarray, k: int | None = None) -> np.ndarray:
    """Per-user HitRate@k: 1 if the target is ranked within k, else 0."""
    return (target_ranks(top_k, targets, k) > 0).astype(np.float64)


def mrr_at_k(top_k: np.ndarray, targets: np.ndarray, k: int | None = None) -> np.ndarray:
    """Per-user MRR@k: ``1 / rank`` if the target is ranked within k, else 0."""
    ranks = target_ranks(top_k, targets, k)
    return np.where(ranks > 0, 1.0 / np.maximum(ranks, 1), 0.0)


def coverage_at_k(top_k: np.ndarray, train_items: np.ndarray, k: int | None = None) -> float:
    """Distinct recommended items that occur in training / distinct training items."""
    top_k = _check_top_k(top_k, k)
    train = np.unique(np.asarray(train_items, dtype=np.int64))
    train = train[train != PAD_TOKEN]
    if train.size == 0:
        raise ValueError("coverage needs at least one training item")
    recommended = np.unique(top_k[top_k != PAD_TOKEN])
    return float(np.isin(recommended, train, assume_unique=True).sum() / train.size)


def diversity_at_k(top_k: np.ndarray, k: int | None = None) -> float:
    """Mean pairwise cosine distance between users' binary top-k vectors, computed exactly.

    With ``a_u = 1 / sqrt(|list_u|)`` the cosine similarity of users u, v is
    ``sum_i [i in u][i in v] a_u a_v``; summed over unordered pairs this is
    ``sum_i ((sum_{u ∋ i} a_u)^2 - sum_{u ∋ i} a_u^2) / 2``, an O(S·K) sum over item counts, so
    no S x S matrix is formed. Users with an empty list are ignored; fewer than two users raise.
    """
    top_k = _check_top_k(top_k, k)
    lists = [np.unique(row[row != PAD_TOKEN]) for row in top_k]
    lists = [row for row in lists if row.size]
    n = len(lists)
    if n < 2:
        raise ValueError("diversity needs at least two users with a non-empty list")
    items = np.concatenate(lists)
    weight = np.concatenate([np.full(row.size, 1.0 / math.sqrt(row.size)) for row in lists])
    size = int(items.max()) + 1
    first = np.bincount(items, weights=weight, minlength=size)
    second = np.bincount(items, weights=weight**2, minlength=size)
    similarity_sum = float(((first**2 - second) / 2.0).sum())
    return 1.0 - similarity_sum / (n * (n - 1) / 2.0)


def attribute_share_at_k(
    top_k: np.ndarray, attributes: np.ndarray, k: int | None = None
) -> np.ndarray:
    """Per-user share of top-k items having each attribute: ``(S, A)``.

    Args:
        top_k: ``(S, K)`` tokens.
        attributes: ``(V, A)`` 0/1 (or weights) per token, row 0 (padding) all zeros, e.g.
            ``ItemCatalog.attribute_matrix(vocab)``.

    Users with an empty list get NaN rows. Average over users (``nanmean``) for the share@k.
    """
    top_k = _check_top_k(top_k, k)
    attributes = np.asarray(attributes, dtype=np.float64)
    if attributes.ndim != 2:
        raise ValueError(f"attributes must be (vocab, n_attributes), got {attributes.shape}")
    if int(top_k.max()) >= attributes.shape[0]:
        raise ValueError(
            f"token {int(top_k.max())} has no attribute row ({attributes.shape[0]} rows)"
        )
    valid = (top_k != PAD_TOKEN).astype(np.float64)
    counts = valid.sum(axis=1, keepdims=True)
    totals = np.einsum("sk,ska->sa", valid, attributes[top_k])
    with np.errstate(invalid="ignore", divide="ignore"):
        return totals / counts

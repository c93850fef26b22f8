"""Top-K recommendation and ranking metrics for next-item prediction.

Conventions: tokens as in :mod:`mechrec_recsys.vocab` (0 is padding, items ``1..N``). A top-K
array is ``(S, K)`` int64, best first; a slot holding 0 means "no item" (fewer than K items
could be recommended, e.g. after masking seen items in a tiny catalog). Every user has one
held-out target token and relevance is binary, so per-user NDCG@K is ``1 / log2(rank + 1)``
when the target is at 1-based ``rank <= K`` and 0 otherwise.

Test sets are small (the paper's split of ml-100k has about 94 users), so every ranking metric
comes with a standard error: analytic (sample standard deviation / sqrt(S)) for per-user means,
bootstrap over users for set-level metrics (coverage, diversity).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from transformer_lens import HookedTransformer

from mechrec_recsys.model import final_hidden, item_scores, last_position_scores
from mechrec_recsys.sequences import SequenceSet, left_pad
from mechrec_recsys.vocab import PAD_TOKEN

__all__ = [
    "Comparison",
    "Estimate",
    "PopularityRecommender",
    "RankingReport",
    "attribute_share_at_k",
    "bootstrap_se",
    "compare_with_popularity",
    "coverage_at_k",
    "diversity_at_k",
    "evaluate_top_k",
    "expand_last_targets",
    "hit_rate_at_k",
    "mask_seen",
    "mean_and_se",
    "mrr_at_k",
    "ndcg_all_positions",
    "ndcg_at_k",
    "paired_difference",
    "recommend_top_k",
    "target_ranks",
    "top_k_from_scores",
]


# --------------------------------------------------------------------------------------------
# Recommendation
# --------------------------------------------------------------------------------------------


def mask_seen(scores: torch.Tensor, seen: Sequence[np.ndarray] | None) -> torch.Tensor:
    """Set the padding column and, per row, the ``seen`` tokens to ``-inf`` (in place).

    Args:
        scores: ``(B, V)`` float scores.
        seen: one token array per row (items to exclude), or ``None`` to mask padding only.
    """
    if scores.dim() != 2:
        raise ValueError(f"scores must be (batch, vocab), got shape {tuple(scores.shape)}")
    scores[:, PAD_TOKEN] = -math.inf
    if seen is None:
        return scores
    if len(seen) != scores.shape[0]:
        raise ValueError(f"{len(seen)} seen-item lists for {scores.shape[0]} score rows")
    lengths = [len(s) for s in seen]
    if sum(lengths) == 0:
        return scores
    rows = torch.from_numpy(np.repeat(np.arange(len(seen)), lengths))
    cols = torch.from_numpy(np.concatenate([np.asarray(s, dtype=np.int64) for s in seen]))
    if int(cols.min()) < 0 or int(cols.max()) >= scores.shape[1]:
        raise ValueError(
            f"a seen token lies outside the vocabulary 0..{scores.shape[1] - 1}"
        )
    scores[rows.to(scores.device), cols.to(scores.device)] = -math.inf
    return scores


def top_k_from_scores(scores: torch.Tensor, k: int) -> np.ndarray:
    """Indices of the ``k`` highest scores per row, best first; ``-inf`` slots become 0.

    Ties are broken towards the lower token (the sort is stable over ascending tokens).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k_eff = min(k, scores.shape[1])
    order = torch.sort(scores, dim=1, descending=True, stable=True)
    values, indices = order.values[:, :k_eff], order.indices[:, :k_eff]
    indices = torch.where(torch.isneginf(values), torch.zeros_like(indices), indices)
    out = np.zeros((scores.shape[0], k), dtype=np.int64)
    out[:, :k_eff] = indices.cpu().numpy()
    return out


@torch.no_grad()
def recommend_top_k(
    model: HookedTransformer,
    sequences: SequenceSet | Sequence[np.ndarray],
    k: int = 10,
    *,
    exclude_seen: bool = True,
    batch_size: int = 256,
) -> np.ndarray:
    """Top-``k`` next items of a GPTRec model for every sequence: ``(S, k)`` tokens.

    Each sequence is its full history; the model reads its last ``max_len`` items, and with
    ``exclude_seen`` every item of the full history is excluded from the list.
    """
    seqs = sequences.sequences if isinstance(sequences, SequenceSet) else list(sequences)
    if len(seqs) == 0:
        raise ValueError("no sequences to recommend for (empty set)")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    try:
        for start in range(0, len(seqs), batch_size):
            chunk = seqs[start:start + batch_size]
            tokens, mask = left_pad(chunk, model.cfg.n_ctx)
            scores = last_position_scores(model, tokens.to(device), mask.to(device)).float()
            mask_seen(scores, chunk if exclude_seen else None)
            out.append(top_k_from_scores(scores, k))
    finally:
        model.train(was_training)
    return np.concatenate(out)


@torch.no_grad()
def ndcg_all_positions(
    model: HookedTransformer,
    sequences: SequenceSet,
    k: int = 10,
    *,
    exclude_seen: bool = True,
    batch_size: int = 32,
) -> np.ndarray:
    """NDCG@k of the next-item predictions along each sequence (its input plus its target).

    Position ``i`` of a sequence ``t_1 .. t_n`` (the target appended) predicts ``t_{i+1}`` from
    ``t_1 .. t_i``; with ``exclude_seen`` the items ``t_1 .. t_i`` are excluded from its
    ranking. One forward pass over the last ``max_len + 1`` items of each sequence gives its
    last ``max_len`` predictions, each made from the window's items up to that position (as in
    training); older predictions are skipped. Ties rank the lower token first, as in
    :func:`top_k_from_scores`. Returns one value per prediction, sequence by sequence. Meant for
    held-out users: their many predictions make a far less noisy validation signal than one
    target each.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if len(sequences) == 0:
        raise ValueError("no sequences to evaluate (empty set)")
    full = [np.asarray(s, dtype=np.int64) for s in sequences.sequences]
    if sequences.targets is not None:
        full = [np.append(s, t) for s, t in zip(full, sequences.targets, strict=True)]
    full = [s for s in full if len(s) >= 2]
    if not full:
        raise ValueError("every sequence has fewer than 2 items: nothing to predict")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    vocab = model.cfg.d_vocab
    context = model.cfg.n_ctx
    out = []
    try:
        for start in range(0, len(full), batch_size):
            windows = [s[-(context + 1):] for s in full[start:start + batch_size]]
            tokens, mask = left_pad([w[:-1] for w in windows])
            hidden = final_hidden(model, tokens.to(device), mask.to(device))
            scores = item_scores(model, hidden[mask.to(device).bool()]).float()
            nexts = torch.from_numpy(np.concatenate([w[1:] for w in windows])).to(device)
            if exclude_seen:
                seen = []
                for whole, window in zip(full[start:start + batch_size], windows, strict=True):
                    first = np.full(vocab, len(window), dtype=np.int64)
                    first[whole[: len(whole) - len(window)]] = -1  # older than the window
                    inputs = window[:-1]
                    np.minimum.at(first, inputs, np.arange(len(inputs)))
                    seen.append(first[None, :] <= np.arange(len(inputs))[:, None])
                scores[torch.from_numpy(np.concatenate(seen)).to(device)] = -math.inf
            scores[:, PAD_TOKEN] = -math.inf
            target = scores.gather(1, nexts[:, None])
            lower = torch.arange(vocab, device=device)[None, :] < nexts[:, None]
            rank = (scores > target).sum(1) + ((scores == target) & lower).sum(1) + 1
            hit = torch.isfinite(target[:, 0]) & (rank <= k)
            ndcg = torch.where(hit, 1.0 / torch.log2(rank.double() + 1.0), 0.0)
            out.append(ndcg.cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(out)


@dataclass
class PopularityRecommender:
    """Recommends the items most often seen in training, most popular first.

    Attributes:
        counts: ``(V,)`` occurrences of each token in the training sequences (index 0 unused).
    """

    counts: np.ndarray

    @classmethod
    def fit(
        cls, train: SequenceSet | Sequence[np.ndarray], vocab_size: int
    ) -> PopularityRecommender:
        """Count item occurrences in the training sequences."""
        seqs = train.sequences if isinstance(train, SequenceSet) else list(train)
        if len(seqs) == 0:
            raise ValueError("cannot fit popularity on an empty training set")
        flat = np.concatenate([np.asarray(s, dtype=np.int64) for s in seqs])
        if flat.size and (flat.min() < 1 or flat.max() >= vocab_size):
            raise ValueError(
                f"training token outside the item range 1..{vocab_size - 1}"
            )
        return cls(np.bincount(flat, minlength=vocab_size).astype(np.int64))

    def scores(self, batch: int = 1) -> torch.Tensor:
        """``(batch, V)`` float64 scores: counts, ties broken towards the lower token."""
        vocab = len(self.counts)
        tiebreak = 0.5 * (1.0 - np.arange(vocab) / vocab)  # in (0, 0.5]: keeps count order
        row = torch.from_numpy(self.counts.astype(np.float64) + tiebreak)
        return row.unsqueeze(0).repeat(batch, 1)

    def recommend(
        self,
        sequences: SequenceSet | Sequence[np.ndarray],
        k: int = 10,
        *,
        exclude_seen: bool = True,
        batch_size: int = 1024,
    ) -> np.ndarray:
        """Top-``k`` popular items per sequence, optionally excluding its seen items."""
        seqs = sequences.sequences if isinstance(sequences, SequenceSet) else list(sequences)
        if len(seqs) == 0:
            raise ValueError("no sequences to recommend for (empty set)")
        out = []
        for start in range(0, len(seqs), batch_size):
            chunk = seqs[start:start + batch_size]
            scores = self.scores(len(chunk))
            mask_seen(scores, chunk if exclude_seen else None)
            out.append(top_k_from_scores(scores, k))
        return np.concatenate(out)


# --------------------------------------------------------------------------------------------
# Per-user ranking metrics (one held-out target per user)
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Set-level metrics
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Uncertainty
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """A metric value with its standard error (``se`` is NaN when it cannot be estimated)."""

    mean: float
    se: float

    def __str__(self) -> str:
        return f"{self.mean:.4f} ± {self.se:.4f}"

    def to_json(self) -> dict[str, float | None]:
        """``{"mean": ..., "se": ...}`` (NaN becomes ``None``)."""
        return {
            "mean": None if math.isnan(self.mean) else self.mean,
            "se": None if math.isnan(self.se) else self.se,
        }


def mean_and_se(values: np.ndarray) -> Estimate:
    """Mean of per-user values and its standard error ``std(ddof=1) / sqrt(n)``."""
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return Estimate(math.nan, math.nan)
    se = float(values.std(ddof=1) / math.sqrt(values.size)) if values.size > 1 else math.nan
    return Estimate(float(values.mean()), se)


def paired_difference(a: np.ndarray, b: np.ndarray) -> Estimate:
    """Mean of ``a - b`` over the same users, with the paired standard error."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values must have one shape, got {a.shape} and {b.shape}")
    return mean_and_se(a - b)


def bootstrap_se(
    statistic: Callable[[np.ndarray], float],
    n_users: int,
    *,
    n_resamples: int = 200,
    seed: int = 0,
) -> float:
    """Bootstrap standard error of ``statistic(user_index)`` under resampling users.

    ``statistic`` receives an index array (with repeats) into the users.
    """
    if n_users < 2 or n_resamples < 2:
        return math.nan
    rng = np.random.default_rng(seed)
    values = [statistic(rng.integers(0, n_users, n_users)) for _ in range(n_resamples)]
    return float(np.std(values, ddof=1))


# --------------------------------------------------------------------------------------------
# One call for a whole evaluation
# --------------------------------------------------------------------------------------------


@dataclass
class RankingReport:
    """Metrics of one recommender on one test set.

    Attributes:
        k: list length.
        metrics: name -> :class:`Estimate` (``ndcg``, ``hit_rate``, ``mrr``, ``coverage``,
            ``diversity``; with attributes also ``share:<name>``).
        per_user: name -> per-user values (``ndcg``, ``hit_rate``, ``mrr``) for paired tests.
        n_users: number of evaluated users.
    """

    k: int
    metrics: dict[str, Estimate]
    per_user: dict[str, np.ndarray] = field(repr=False)
    n_users: int

    def to_json(self) -> dict:
        """JSON-serialisable summary (no per-user arrays)."""
        return {
            "k": self.k,
            "n_users": self.n_users,
            "metrics": {name: est.to_json() for name, est in self.metrics.items()},
        }


def evaluate_top_k(
    top_k: np.ndarray,
    targets: np.ndarray,
    *,
    train_items: np.ndarray,
    k: int = 10,
    attributes: np.ndarray | None = None,
    attribute_names: Sequence[str] | None = None,
    n_bootstrap: int = 200,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> RankingReport:
    """NDCG/HitRate/MRR/Coverage/Diversity@k (and attribute shares) with standard errors.

    Args:
        top_k: ``(S, >=k)`` recommended tokens.
        targets: ``(S,)`` held-out target tokens.
        train_items: tokens occurring in training (the coverage denominator).
        k: list length to evaluate.
        attributes: optional ``(V, A)`` attribute matrix for share@k.
        attribute_names: names of the ``A`` attributes (default ``attr0..``).
        n_bootstrap: resamples for the set-level metrics' standard errors (0 disables).
        seed: bootstrap seed.
        groups: for several targets per user (:func:`expand_last_targets`), the user of each
            row, rows of a user contiguous and their last row the user's own list. Per-user
            metrics are then averaged within each user before the mean and standard error
            over users; coverage, diversity and attribute shares use each user's last row.
    """
    top_k = _check_top_k(top_k, k)
    per_row = {
        "ndcg": ndcg_at_k(top_k, targets),
        "hit_rate": hit_rate_at_k(top_k, targets),
        "mrr": mrr_at_k(top_k, targets),
    }
    if groups is None:
        per_user = per_row
    else:
        groups = np.asarray(groups)
        if groups.shape != (top_k.shape[0],):
            raise ValueError(f"{groups.shape} group labels for {top_k.shape[0]} rows")
        ends = np.flatnonzero(np.append(groups[1:] != groups[:-1], True))
        starts = np.append(0, ends[:-1] + 1)
        counts = ends - starts + 1
        per_user = {name: np.add.reduceat(values, starts) / counts
                    for name, values in per_row.items()}
        top_k = top_k[ends]
    metrics = {name: mean_and_se(values) for name, values in per_user.items()}
    n = top_k.shape[0]
    cov = coverage_at_k(top_k, train_items)
    cov_se = bootstrap_se(lambda idx: coverage_at_k(top_k[idx], train_items), n,
                          n_resamples=n_bootstrap, seed=seed)
    metrics["coverage"] = Estimate(cov, cov_se)
    if n >= 2:
        div = diversity_at_k(top_k)
        div_se = bootstrap_se(lambda idx: diversity_at_k(top_k[idx]), n,
                              n_resamples=n_bootstrap, seed=seed)
        metrics["diversity"] = Estimate(div, div_se)
    if attributes is not None:
        shares = attribute_share_at_k(top_k, attributes)
        names = list(attribute_names) if attribute_names is not None else [
            f"attr{i}" for i in range(shares.shape[1])
        ]
        if len(names) != shares.shape[1]:
            raise ValueError(f"{len(names)} attribute names for {shares.shape[1]} attributes")
        for i, name in enumerate(names):
            metrics[f"share:{name}"] = mean_and_se(shares[:, i])
    return RankingReport(k=k, metrics=metrics, per_user=per_user, n_users=n)


def expand_last_targets(sequences: SequenceSet, n: int) -> tuple[SequenceSet, np.ndarray]:
    """Turn each user's last ``n`` items into ``n`` held-out targets (one row each).

    For a user with input ``t_1 .. t_m`` and target ``t_{m+1}``, the rows predict
    ``t_{m+2-n} .. t_{m+1}``, each from all the items before it; the user's last row is the
    original one. Averaging a user's rows first (``evaluate_top_k(..., groups=...)``) keeps one
    value per user, so standard errors stay honest, while each value is far less noisy: a
    remedy for tiny test sets such as the paper split of ml-100k.

    Returns:
        The rows and, for each row, the index of its user in ``sequences``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if sequences.targets is None:
        raise ValueError("the sequences have no targets")
    inputs, targets, owners, users = [], [], [], []
    for index, (seq, target) in enumerate(zip(sequences.sequences, sequences.targets,
                                             strict=True)):
        full = np.append(np.asarray(seq, dtype=np.int64), target)
        for cut in range(max(1, len(full) - n), len(full)):
            inputs.append(full[:cut])
            targets.append(full[cut])
            owners.append(index)
            users.append(sequences.users[index])
    rows = SequenceSet(np.asarray(users), inputs, np.asarray(targets, dtype=np.int64))
    return rows, np.asarray(owners, dtype=np.int64)


@dataclass
class Comparison:
    """A model and the popularity baseline on the same test users.

    Attributes:
        k: list length.
        reports: ``{"GPTRec": ..., "Popularity": ...}``.
        paired: per-user metric -> paired difference model - popularity (mean, se).
        info: counts (users, training items, whether seen items were excluded).
    """

    k: int
    reports: dict[str, RankingReport]
    paired: dict[str, Estimate]
    info: dict

    def to_json(self) -> dict:
        """JSON-serialisable summary."""
        return {
            "k": self.k,
            "reports": {name: rep.to_json() for name, rep in self.reports.items()},
            "paired_difference": {name: est.to_json() for name, est in self.paired.items()},
            "info": self.info,
        }


def compare_with_popularity(
    model: HookedTransformer,
    train: SequenceSet,
    test: SequenceSet,
    *,
    k: int = 10,
    exclude_seen: bool = True,
    attributes: np.ndarray | None = None,
    attribute_names: Sequence[str] | None = None,
    batch_size: int = 256,
    model_name: str = "GPTRec",
    targets_per_user: int = 1,
) -> Comparison:
    """Evaluate a model and the popularity baseline (fit on ``train``) on ``test``'s targets.

    Coverage counts items occurring in ``train``; with ``exclude_seen`` both recommenders skip
    each user's history. ``targets_per_user > 1`` scores each test user's last that many items
    (see :func:`expand_last_targets`); the default is the usual single held-out target.
    """
    if test.targets is None:
        raise ValueError("the test set has no targets")
    if len(test) == 0:
        raise ValueError("the test set is empty")
    groups = None
    if targets_per_user > 1:
        test, groups = expand_last_targets(test, targets_per_user)
    vocab_size = model.cfg.d_vocab
    train_items = np.unique(np.concatenate([np.asarray(s, dtype=np.int64)
                                            for s in train.sequences]))
    popularity = PopularityRecommender.fit(train, vocab_size)
    tops = {
        model_name: recommend_top_k(model, test, k, exclude_seen=exclude_seen,
                                    batch_size=batch_size),
        "Popularity": popularity.recommend(test, k, exclude_seen=exclude_seen),
    }
    reports = {
        name: evaluate_top_k(top, test.targets, train_items=train_items, k=k,
                             attributes=attributes, attribute_names=attribute_names,
                             groups=groups)
        for name, top in tops.items()
    }
    paired = {
        metric: paired_difference(reports[model_name].per_user[metric],
                                  reports["Popularity"].per_user[metric])
        for metric in ("ndcg", "hit_rate", "mrr")
    }
    info = {"test_users": len(test) if groups is None else int(groups.max()) + 1,
            "targets_per_user": targets_per_user, "train_items": int(train_items.size),
            "exclude_seen": exclude_seen}
    return Comparison(k=k, reports=reports, paired=paired, info=info)

"""Whole evaluations: every metric with its standard error, and GPTRec vs popularity.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from transformer_lens import HookedTransformer

from mechrec_recsys.metrics.ranking import (
    _check_top_k,
    attribute_share_at_k,
    coverage_at_k,
    diversity_at_k,
    hit_rate_at_k,
    mrr_at_k,
    ndcg_at_k,
)
from mechrec_recsys.metrics.recommend import PopularityRecommender, recommend_top_k
from mechrec_recsys.metrics.uncertainty import (
    Estimate,
    bootstrap_se,
    mean_and_se,
    paired_difference,
)
from mechrec_recsys.sequences import SequenceSet

__all__ = [
    "Comparison",
    "RankingReport",
    "compare_with_popularity",
    "evaluate_top_k",
    "expand_last_targets",
]


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

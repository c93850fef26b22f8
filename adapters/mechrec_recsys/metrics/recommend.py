"""Top-K recommendation with seen-item masking: GPTRec and the popularity baseline.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformer_lens import HookedTransformer

from mechrec_recsys.model import final_hidden, item_scores, last_position_scores
from mechrec_recsys.sequences import SequenceSet, left_pad
from mechrec_recsys.vocab import PAD_TOKEN

__all__ = [
    "PopularityRecommender",
    "mask_seen",
    "ndcg_all_positions",
    "recommend_top_k",
    "top_k_excluding",
    "top_k_from_scores",
]


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


def top_k_excluding(scores: torch.Tensor, seen: Sequence[np.ndarray] | None, k: int
                    ) -> np.ndarray:
    """The one top-K scorer: the ``k`` best tokens per row of a copy of ``scores`` with the
    padding token and, per row, the ``seen`` tokens excluded (``None``: padding only).

    Every list in mechrec_recsys (GPTRec, popularity, steering, the equalizer, the SAE
    metrics) comes from here, so they all mask and break ties the same way.
    """
    masked = scores.detach().clone()
    mask_seen(masked, seen)
    return top_k_from_scores(masked, k)


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
            out.append(top_k_excluding(scores, chunk if exclude_seen else None, k))
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
            out.append(top_k_excluding(self.scores(len(chunk)),
                                       chunk if exclude_seen else None, k))
        return np.concatenate(out)

"""Containers for user item sequences and the left-padded batches fed to a model.

Invariants (see DESIGN.md): token 0 is padding; batches are left-padded and always carry an
attention mask, so position -1 is every sequence's last real item.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mechrec_recsys.vocab import PAD_TOKEN


@dataclass(frozen=True)
class SequenceSet:
    """Time-ordered token sequences, one per user, with optional held-out targets.

    Attributes:
        users: raw user id of each sequence, shape ``(S,)``.
        sequences: token arrays (int64, values >= 1), oldest interaction first.
        targets: the held-out next token of each sequence (evaluation sets), or ``None``.
    """

    users: np.ndarray
    sequences: list[np.ndarray]
    targets: np.ndarray | None = None

    def __post_init__(self) -> None:
        if len(self.users) != len(self.sequences):
            raise ValueError(
                f"{len(self.users)} users but {len(self.sequences)} sequences: one each expected"
            )
        if self.targets is not None and len(self.targets) != len(self.sequences):
            raise ValueError(
                f"{len(self.targets)} targets for {len(self.sequences)} sequences"
            )

    def __len__(self) -> int:
        return len(self.sequences)

    def lengths(self) -> np.ndarray:
        """Length of every sequence."""
        return np.fromiter((len(s) for s in self.sequences), dtype=np.int64, count=len(self))

    def subset(self, index: Sequence[int] | np.ndarray) -> SequenceSet:
        """The sequences at the given positions, in that order."""
        idx = np.asarray(index, dtype=np.int64)
        return SequenceSet(
            users=self.users[idx],
            sequences=[self.sequences[i] for i in idx.tolist()],
            targets=None if self.targets is None else self.targets[idx],
        )


def left_pad(
    sequences: Sequence[np.ndarray], max_len: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token sequences into a batch.

    Sequences longer than ``max_len`` keep their last ``max_len`` tokens.

    Returns:
        ``(tokens, attention_mask)``, both ``(B, L)`` int64 tensors; ``L`` is the longest
        (truncated) sequence; the mask is 1 on real items and 0 on padding.
    """
    if len(sequences) == 0:
        raise ValueError("cannot build a batch from zero sequences")
    trimmed = [np.asarray(s, dtype=np.int64)[-max_len:] if max_len else np.asarray(s)
               for s in sequences]
    width = max(len(s) for s in trimmed)
    if width == 0:
        raise ValueError("every sequence in the batch is empty; each needs at least one item")
    tokens = np.full((len(trimmed), width), PAD_TOKEN, dtype=np.int64)
    mask = np.zeros((len(trimmed), width), dtype=np.int64)
    for row, seq in enumerate(trimmed):
        if len(seq) == 0:
            raise ValueError(f"sequence {row} of the batch is empty; drop empty sequences first")
        if seq.min() < 1:
            raise ValueError(
                f"sequence {row} contains token {int(seq.min())}; item tokens start at 1 "
                "(0 is padding)"
            )
        tokens[row, width - len(seq):] = seq
        mask[row, width - len(seq):] = 1
    return torch.from_numpy(tokens), torch.from_numpy(mask)


def iter_batches(
    sequences: Sequence[np.ndarray], batch_size: int, max_len: int | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield left-padded ``(tokens, attention_mask)`` batches in order."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, len(sequences), batch_size):
        yield left_pad(sequences[start:start + batch_size], max_len)

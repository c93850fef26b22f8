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
        # plain lists would break fancy indexing in :meth:`subset`
        object.__setattr__(self, "users", np.asarray(self.users))
        if self.targets is not None:
            object.__setattr__(self, "targets", np.asarray(self.targets))
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


def _as_tokens(sequence: object, row: int) -> np.ndarray:
    """One sequence as a 1-D int64 array; non-integer tokens are an error, not truncated."""
    array = np.asarray(sequence)
    if array.ndim != 1:
        raise ValueError(f"sequence {row} of the batch has shape {array.shape}; each sequence "
                         "must be one-dimensional")
    if array.size == 0 or array.dtype.kind in "iu":
        return array.astype(np.int64, copy=False)
    if array.dtype.kind == "f" and np.all(np.isfinite(array)) and np.all(np.mod(array, 1) == 0):
        return array.astype(np.int64)
    raise ValueError(f"sequence {row} of the batch holds non-integer tokens "
                     f"(dtype {array.dtype}); tokens are integers >= 1")


def left_pad(
    sequences: Sequence[np.ndarray], max_len: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token sequences into a batch.

    Sequences longer than ``max_len`` keep their last ``max_len`` tokens.

    Args:
        sequences: one-dimensional integer token sequences (arrays, lists or tensors).
        max_len: a positive integer, or ``None`` for no truncation.

    Returns:
        ``(tokens, attention_mask)``, both ``(B, L)`` int64 tensors; ``L`` is the longest
        (truncated) sequence; the mask is 1 on real items and 0 on padding.

    Raises:
        ValueError: no sequences, an empty sequence, a token below 1, a non-integer token, a
            sequence that is not one-dimensional, or a ``max_len`` that is not a positive
            integer.
    """
    if len(sequences) == 0:
        raise ValueError("cannot build a batch from zero sequences")
    if max_len is not None and (
        not isinstance(max_len, (int, np.integer)) or isinstance(max_len, bool) or max_len < 1
    ):
        raise ValueError(f"max_len must be a positive integer or None, got {max_len!r}")
    trimmed = [_as_tokens(s, row) for row, s in enumerate(sequences)]
    if max_len is not None:
        trimmed = [s[-int(max_len):] for s in trimmed]
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
    """Yield left-padded ``(tokens, attention_mask)`` batches in order.

    Each batch holds ``batch_size`` consecutive sequences (the last one may hold fewer) and is
    built by :func:`left_pad`, so its width is that of its own longest (truncated) sequence.
    Zero sequences yield no batch.
    """
    if isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, len(sequences), batch_size):
        yield left_pad(sequences[start:start + batch_size], max_len)

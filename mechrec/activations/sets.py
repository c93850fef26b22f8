"""In-memory activations (`ActivationSet`) and what every activation source offers.

An *activation source* is anything with a ``hook_name``, a width ``d``, a row count and
numbered chunks that each fit in memory: an :class:`ActivationSet` is one chunk; an
:class:`~mechrec.activations.store.ActivationStore` has one chunk per shard on disk. SAE
training, normalisation statistics and reconstruction metrics only use this interface, so
they work the same on both.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch

from mechrec.normalization import Normalizer, RunningMoments, check_finite


@runtime_checkable
class ActivationSource(Protocol):
    """Rows of activations at one hook, readable chunk by chunk."""

    hook_name: str

    @property
    def d(self) -> int:
        """Width of one row."""
        ...

    @property
    def n_chunks(self) -> int:
        """Number of chunks."""
        ...

    def __len__(self) -> int: ...

    def chunk(self, i: int) -> ActivationSet:
        """The ``i``-th chunk, loaded in memory."""
        ...

    def moments(self) -> RunningMoments:
        """Per-dimension count/mean/variance over all rows (streamed)."""
        ...


@dataclass
class ActivationSet:
    """Activations at one hook, one row per non-padding position, kept in memory.

    Attributes:
        hook_name: the TransformerLens hook the rows were read at.
        activations: ``(R, d)`` float32.
        sequence_index: ``(R,)`` int64, index of the batch row in the whole input stream.
        position: ``(R,)`` int64, position from the start of the *real* sequence (0 = first
            real item, whatever the padding).
        token: ``(R,)`` int64, the input token at that position.
    """

    hook_name: str
    activations: torch.Tensor
    sequence_index: torch.Tensor
    position: torch.Tensor
    token: torch.Tensor
    _moments: RunningMoments | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.activations.ndim != 2:
            raise ValueError(
                f"activations must be (rows, d); got shape {tuple(self.activations.shape)}"
            )
        n = self.activations.shape[0]
        for name in ("sequence_index", "position", "token"):
            value = getattr(self, name)
            if value.shape != (n,):
                raise ValueError(f"{name} must have shape ({n},), got {tuple(value.shape)}")

    @classmethod
    def from_tensor(cls, activations: torch.Tensor, hook_name: str) -> ActivationSet:
        """Wrap a bare ``(R, d)`` tensor (indices: one sequence per row, position 0, token 0)."""
        check_finite(activations, f"activations for {hook_name}")
        n = activations.shape[0]
        zeros = torch.zeros(n, dtype=torch.long)
        return cls(hook_name, activations.float(), torch.arange(n), zeros, zeros.clone())

    def __len__(self) -> int:
        return int(self.activations.shape[0])

    @property
    def d(self) -> int:
        """Width of one row."""
        return int(self.activations.shape[1])

    @property
    def n_chunks(self) -> int:
        """Always 1: an in-memory set is a single chunk."""
        return 1

    def chunk(self, i: int) -> ActivationSet:
        """The set itself (``i`` must be 0)."""
        if i != 0:
            raise IndexError(f"an ActivationSet has one chunk, asked for chunk {i}")
        return self

    def moments(self) -> RunningMoments:
        """Per-dimension statistics of the rows (computed once, then cached)."""
        if self._moments is None:
            moments = RunningMoments()
            moments.update(self.activations)
            self._moments = moments
        return self._moments

    def select(self, index: torch.Tensor) -> ActivationSet:
        """The rows at ``index`` (a bool mask or integer indices)."""
        return ActivationSet(
            self.hook_name,
            self.activations[index],
            self.sequence_index[index],
            self.position[index],
            self.token[index],
        )

    @staticmethod
    def concat(sets: list[ActivationSet]) -> ActivationSet:
        """Concatenate sets collected at the same hook."""
        if not sets:
            raise ValueError("nothing to concatenate: the list of activation sets is empty")
        names = {s.hook_name for s in sets}
        if len(names) != 1:
            raise ValueError(f"cannot concatenate activations from different hooks: {names}")
        return ActivationSet(
            sets[0].hook_name,
            torch.cat([s.activations for s in sets]),
            torch.cat([s.sequence_index for s in sets]),
            torch.cat([s.position for s in sets]),
            torch.cat([s.token for s in sets]),
        )


def check_not_empty(source: ActivationSource) -> None:
    """Raise a clear ``ValueError`` if ``source`` has no rows."""
    if len(source) == 0:
        raise ValueError(
            f"the activation source for {source.hook_name!r} is empty (0 rows): collect "
            "activations from batches with at least one non-padding position (attention mask 1)"
        )


def fit_normalizer(source: ActivationSource, mode: str = "per_dim") -> Normalizer:
    """Normaliser over all rows of ``source``, computed chunk by chunk (streaming)."""
    check_not_empty(source)
    return Normalizer.from_moments(source.moments(), mode)


def iter_chunks(source: ActivationSource) -> Iterator[ActivationSet]:
    """Every chunk of ``source`` in order."""
    for i in range(source.n_chunks):
        yield source.chunk(i)


def iter_batches(
    source: ActivationSource,
    batch_size: int,
    *,
    shuffle: bool = True,
    seed: int = 0,
    normalizer: Normalizer | None = None,
    repeat: bool = True,
) -> Iterator[torch.Tensor]:
    """Batches of exactly ``batch_size`` rows ``(batch_size, d)`` (float32) from ``source``.

    With ``shuffle``, every pass visits the chunks in a random order and the rows of each
    chunk in a random order (an exact shuffle for an in-memory set; shard-local for a store,
    which keeps one shard in memory at a time). Rows left over at the end of a chunk are
    carried into the next one, so no row is dropped. With ``repeat`` the passes never end
    (what a training loop wants); otherwise iteration stops after one pass, the last batch
    possibly shorter.

    Args:
        source: an :class:`ActivationSet` or :class:`ActivationStore`.
        batch_size: rows per batch.
        shuffle: randomise the order (reproducibly, from ``seed``).
        seed: seed of the shuffling generator.
        normalizer: if given, batches are normalised with it.
        repeat: cycle forever (``True``) or stop after one pass (``False``).
    """
    check_not_empty(source)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    gen = torch.Generator().manual_seed(seed)

    def out(batch: torch.Tensor) -> torch.Tensor:
        return normalizer.normalize(batch) if normalizer is not None else batch

    carry = torch.zeros(0, source.d)
    while True:
        order = (
            torch.randperm(source.n_chunks, generator=gen).tolist()
            if shuffle
            else range(source.n_chunks)
        )
        for i in order:
            rows = source.chunk(i).activations
            check_finite(rows, f"activations at {source.hook_name!r} (chunk {i})")
            if shuffle:
                rows = rows[torch.randperm(rows.shape[0], generator=gen)]
            if carry.shape[0]:
                need = batch_size - carry.shape[0]
                if rows.shape[0] < need:
                    carry = torch.cat([carry, rows])
                    continue
                yield out(torch.cat([carry, rows[:need]]))
                rows = rows[need:]
            n_full = rows.shape[0] // batch_size * batch_size
            for start in range(0, n_full, batch_size):
                yield out(rows[start : start + batch_size])
            carry = rows[n_full:].clone()
        if not repeat:
            if carry.shape[0]:
                yield out(carry)
            return

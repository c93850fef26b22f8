"""Ordering each user's events into a sequence, with an explicit tie-break.

Timestamps tie often (in ml-100k about three quarters of ratings share a second with another
rating of the same user; in ml-latest-small tied rows sit in movieId order), so the tie-break
decides sequence order - and with it which item is a user's "last" - for many users. It is
never left to the sort algorithm:

* ``"random"`` (default): events with equal timestamps are put in a random order drawn from
  ``seed``. Nothing about file order (often item-id order) leaks into sequences, and the
  order is reproducible.
* ``"stable"``: equal timestamps keep file order.
* ``"item"``: equal timestamps are ordered by item id.

Data with an explicit ``order`` column (e.g. ``ml-1m-ordered``, whose ``position`` records
the time order inside same-second ties) follows that column exactly: no tie-break is drawn and
nothing is re-sorted by timestamp. Data without timestamps or order keeps each user's file
order (the only order there is); such sequences are only fit for order-free experiments.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mechrec_recsys.data.dataset import Dataset

TIE_BREAKS = ("random", "stable", "item")

#: Stream ids for :func:`rng_for`: the tie-break and the user assignment draw from
#: independent generators, so changing one never shifts the other.
TIE_STREAM = 1
USER_STREAM = 2


def rng_for(seed: int, stream: int) -> np.random.Generator:
    """An independent random generator for one purpose (``stream``) under ``seed``."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(stream)]))


@dataclass(frozen=True)
class UserHistories:
    """Every user's events in sequence order, stored flat.

    Attributes:
        users: user ids, ascending, shape ``(U,)``.
        offsets: ``(U + 1,)``; user ``u``'s events are ``items[offsets[u]:offsets[u + 1]]``.
        items: raw item ids, oldest first within each user.
        timestamps: the matching timestamps, or ``None`` for data without them.
    """

    users: np.ndarray
    offsets: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray | None

    def __len__(self) -> int:
        return len(self.users)

    def lengths(self) -> np.ndarray:
        """Number of events of each user."""
        return np.diff(self.offsets)

    def last_timestamps(self) -> np.ndarray:
        """Timestamp of each user's last event (requires timestamps)."""
        if self.timestamps is None:
            raise ValueError("these histories have no timestamps")
        return self.timestamps[self.offsets[1:] - 1]

    def history(self, index: int) -> np.ndarray:
        """Raw item ids of the user at position ``index``, oldest first."""
        return self.items[self.offsets[index]:self.offsets[index + 1]]

    def select(self, mask: np.ndarray) -> UserHistories:
        """The histories of the users where ``mask`` is true."""
        keep = np.flatnonzero(mask)
        lengths = self.lengths()[keep]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        rows = np.arange(offsets[-1], dtype=np.int64) + np.repeat(
            self.offsets[keep] - offsets[:-1], lengths)
        return UserHistories(
            users=self.users[keep], offsets=offsets, items=self.items[rows],
            timestamps=None if self.timestamps is None else self.timestamps[rows],
        )


def order_events(dataset: Dataset, *, tie_break: str = "random", seed: int = 0
                 ) -> UserHistories:
    """Group a dataset's events by user and order them by time with the given tie-break.

    Args:
        dataset: the dataset.
        tie_break: ``"random"`` (seeded), ``"stable"`` (file order) or ``"item"`` (item id);
            see the module documentation. Ignored with an explicit ``order`` column (which is
            followed exactly) and without timestamps (file order is kept).
        seed: seed of the ``"random"`` tie-break.
    """
    if tie_break not in TIE_BREAKS:
        raise ValueError(f"tie_break must be one of {TIE_BREAKS}, got {tie_break!r}")
    frame = dataset.interactions
    users = frame["user_id"].to_numpy(dtype=np.int64)
    items = frame["item_id"].to_numpy(dtype=np.int64)
    n = len(users)
    file_order = np.arange(n, dtype=np.int64)
    times = frame["timestamp"].to_numpy(dtype=np.int64) if dataset.has_timestamps else None
    if dataset.has_order:
        order = np.lexsort((frame["order"].to_numpy(dtype=np.int64), users))
    elif times is not None:
        if tie_break == "random":
            ties = rng_for(seed, TIE_STREAM).permutation(n)
        elif tie_break == "item":
            ties = items
        else:
            ties = file_order
        order = np.lexsort((file_order, ties, times, users))
    else:
        order = np.lexsort((file_order, users))
    users, items = users[order], items[order]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if n else np.zeros(0, int)
    offsets = np.append(starts, n).astype(np.int64)
    return UserHistories(
        users=users[starts], offsets=offsets, items=items,
        timestamps=None if times is None else times[order],
    )

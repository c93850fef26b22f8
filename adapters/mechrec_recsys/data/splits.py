"""Train / validation / SAE / test splits of a dataset into token sequences.

Every split shares these rules:

* **Vocabulary**: the whole catalog (``dataset.vocab()``), so every item that can appear as a
  model input or target has a token; catalog items nobody rated keep their initial embedding.
* **Order**: each user's events are ordered by time with an explicit, seeded tie-break
  (:mod:`mechrec_recsys.data.ordering`); data without timestamps keeps file order.
* **Truncation**: every sequence keeps its last ``max_len`` items (inputs of held-out parts
  are truncated *after* removing the target).
* **Unseen targets**: a held-out target that never occurs in the recommender-training
  sequences cannot be ranked meaningfully (its embedding was never trained). With
  ``drop_unseen_targets=True`` (default) such users are dropped from the held-out part and
  counted in ``info`` (``test_targets_unseen_dropped``, ``validation_targets_unseen_dropped``).

Schemes:

``paper_split`` (time- and user-based, the paper's protocol)
    Users with fewer than 2 events are dropped. The test users are the ``test_fraction`` (10%)
    of users whose last event is most recent (ties in that last timestamp broken at random from
    ``seed``). Every other user's events all happen at or before the earliest last event of a
    test user (``info["time_threshold"]``), so no training, validation or SAE event is newer
    than any test target. The remaining users are shuffled (``seed``) into 60%
    recommender-training and ``sae_fraction`` (40%) SAE-training users. The validation users
    for early stopping are carved from the recommender-training users the same way the test
    users are chosen: the ``validation_fraction`` (10%) of them with the most recent last event.
    Validation thus mimics the test situation (unseen users, their latest item) and stays
    time-correct with respect to the remaining training users. Test and validation users: the
    target is the last item, the input the items before it.

``random_user_split`` (for data without timestamps)
    Like the paper split, but the test and validation users are drawn at random (``seed``);
    the target is the last item in sequence order (file order without timestamps).

``leave_one_out_split``
    Users with fewer than 3 events are dropped. Each user's last item is the test target (input:
    everything before it), the second-to-last item the validation target (input: everything
    before that), and the rest the training sequence. There is no SAE part.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from mechrec_recsys.configs import SPLIT_KINDS
from mechrec_recsys.data.dataset import Dataset
from mechrec_recsys.data.errors import EmptyDatasetError, MissingTimestampsError
from mechrec_recsys.data.ordering import USER_STREAM, UserHistories, order_events, rng_for
from mechrec_recsys.sequences import SequenceSet
from mechrec_recsys.vocab import ItemVocab


@dataclass
class Split:
    """A dataset cut into token sequences over one shared vocabulary.

    Attributes:
        vocab: the vocabulary of every part (whole catalog).
        train: recommender-training sequences (no targets).
        validation: held-out inputs and targets for early stopping, or ``None``.
        sae_train: the paper's SAE-training users (full sequences, no targets), or ``None``.
        test: held-out inputs and targets.
        info: the scheme and its parameters, user counts per part, dropped users and targets.
    """

    vocab: ItemVocab
    train: SequenceSet
    validation: SequenceSet | None
    sae_train: SequenceSet | None
    test: SequenceSet
    info: dict = field(default_factory=dict)

    def parts(self) -> dict[str, SequenceSet]:
        """The parts that exist, in the order train, validation, sae_train, test."""
        parts = {"train": self.train, "validation": self.validation,
                 "sae_train": self.sae_train, "test": self.test}
        return {name: part for name, part in parts.items() if part is not None}


def _check_args(max_len: int, fractions: dict[str, float]) -> None:
    if not isinstance(max_len, (int, np.integer)) or isinstance(max_len, bool) or max_len < 1:
        raise ValueError(f"max_len must be a positive integer, got {max_len!r}")
    for name, value in fractions.items():
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {value!r}")


def _share(n: int, fraction: float) -> int:
    """``round(n * fraction)`` with halves rounded up (no banker's rounding)."""
    return math.floor(n * fraction + 0.5)


def _require_timestamps(dataset: Dataset, scheme: str) -> None:
    if not dataset.has_timestamps:
        raise MissingTimestampsError(
            f"{scheme} orders events by time, but dataset {dataset.name!r} has no timestamps. "
            "Fix: use random_user_split (make_split(dataset, 'random') / --split random), or "
            "load the data with a timestamp column")


def _drop_short(hist: UserHistories, minimum: int, dataset: Dataset) -> tuple[UserHistories, int]:
    long_enough = hist.lengths() >= minimum
    kept = hist.select(long_enough)
    if len(kept) == 0:
        raise EmptyDatasetError(
            f"dataset {dataset.name!r}: no user has {minimum} or more interactions. Fix: "
            "check the user id column; a split needs users with at least that many events")
    return kept, int((~long_enough).sum())


def _tokens(vocab: ItemVocab, items: np.ndarray) -> np.ndarray:
    tokens = np.searchsorted(vocab.item_ids, items) + 1
    if len(items) and (tokens.max() > vocab.num_items
                       or np.any(vocab.item_ids[np.minimum(tokens, vocab.num_items) - 1]
                                 != items)):
        raise ValueError("interactions mention items outside the vocabulary")
    return tokens.astype(np.int64)


class _Builder:
    """Cuts sequences out of ordered histories."""

    def __init__(self, dataset: Dataset, hist: UserHistories, max_len: int,
                 drop_unseen: bool) -> None:
        self.hist = hist
        self.vocab = dataset.vocab()
        self.tokens = _tokens(self.vocab, hist.items)
        self.max_len = int(max_len)
        self.drop_unseen = drop_unseen
        self.seen = np.zeros(self.vocab.size, dtype=bool)
        self.truncated = 0

    def _slice(self, user: int, cut: int) -> np.ndarray:
        start, end = self.hist.offsets[user], self.hist.offsets[user + 1] - cut
        if end - start > self.max_len:
            self.truncated += 1
            start = end - self.max_len
        return self.tokens[start:end].copy()

    def full(self, index: np.ndarray, cut: int = 0, training: bool = False) -> SequenceSet:
        """Sequences without targets (dropping the last ``cut`` items of each user)."""
        index = np.sort(index)
        sequences = [self._slice(u, cut) for u in index.tolist()]
        if training and sequences:
            self.seen[np.concatenate(sequences)] = True
        return SequenceSet(users=self.hist.users[index], sequences=sequences)

    def held_out(self, index: np.ndarray, back: int = 1) -> tuple[SequenceSet, int]:
        """Inputs and targets: the ``back``-th item from the end is the target, the items
        before it the input. Returns the set and the number of users dropped because their
        target never occurs in training."""
        index = np.sort(index)
        targets = self.tokens[self.hist.offsets[index + 1] - back]
        keep = self.seen[targets] if self.drop_unseen else np.ones(len(index), dtype=bool)
        kept = index[keep]
        sequences = [self._slice(u, back) for u in kept.tolist()]
        part = SequenceSet(users=self.hist.users[kept], sequences=sequences,
                           targets=targets[keep].astype(np.int64))
        return part, int((~keep).sum())


def _start_user_split(
    dataset: Dataset,
    kind: str,
    *,
    seed: int,
    max_len: int,
    tie_break: str,
    drop_unseen_targets: bool,
    fractions: dict[str, float],
    require_timestamps: bool,
) -> tuple[UserHistories, dict]:
    """Check the arguments, order the events and drop users with fewer than 2 of them.

    Returns the histories and the split's ``info`` so far (common entries, then
    ``fractions``).
    """
    _check_args(max_len, fractions)
    if require_timestamps:
        _require_timestamps(dataset, f"the {kind} split")
    ordered = order_events(dataset, tie_break=tie_break, seed=seed)
    hist, dropped = _drop_short(ordered, 2, dataset)
    info = _base_info(kind, dataset, seed, max_len, tie_break, 2, len(ordered), dropped,
                      drop_unseen_targets)
    info.update(fractions)
    return hist, info


def _user_split(
    dataset: Dataset,
    hist: UserHistories,
    info: dict,
    *,
    test_idx: np.ndarray,
    recommender: np.ndarray,
    sae_idx: np.ndarray,
    max_len: int,
    drop_unseen_targets: bool,
) -> Split:
    """Cut a split whose parts are sets of users: the first ``info["validation_fraction"]``
    of ``recommender`` validate, the rest train the recommender; ``sae_idx`` train SAEs
    (when ``info["sae_fraction"] > 0``)."""
    n_val = _share(len(recommender), info["validation_fraction"])
    val_idx, train_idx = recommender[:n_val], recommender[n_val:]
    with_sae = info["sae_fraction"] > 0
    if with_sae and len(sae_idx) == 0:
        raise EmptyDatasetError(f"dataset {dataset.name!r} has too few users ({len(hist)}) for "
                                "an SAE part. Fix: use more data or sae_fraction=0")
    if len(train_idx) == 0 or len(test_idx) == 0:
        raise EmptyDatasetError(
            f"dataset {dataset.name!r} has too few users ({len(hist)}) for a {info['kind']} "
            "split: the training and test parts would be empty. Fix: use more data or smaller "
            "fractions")
    builder = _Builder(dataset, hist, max_len, drop_unseen_targets)
    train = builder.full(train_idx, training=True)
    validation, val_unseen = builder.held_out(val_idx) if len(val_idx) else (None, 0)
    test, test_unseen = builder.held_out(test_idx)
    sae = builder.full(sae_idx) if with_sae else None
    if len(test) == 0:
        raise EmptyDatasetError(
            f"dataset {dataset.name!r}: every test target is an item never seen in training "
            f"({test_unseen} users). Fix: use more data, or drop_unseen_targets=False")
    return _finish(builder, info, train=train, validation=validation, val_unseen=val_unseen,
                   sae=sae, test=test, test_unseen=test_unseen, test_selected=len(test_idx))


def _finish(
    builder: _Builder,
    info: dict,
    *,
    train: SequenceSet,
    validation: SequenceSet | None,
    val_unseen: int,
    sae: SequenceSet | None,
    test: SequenceSet,
    test_unseen: int,
    test_selected: int,
) -> Split:
    """Add the parts' sizes, dropped targets and truncations to ``info``; the split."""
    info.update({
        "train_users": len(train),
        "validation_users": 0 if validation is None else len(validation),
        "sae_users": 0 if sae is None else len(sae),
        "test_users": len(test),
        "test_users_selected": test_selected,
        "test_targets_unseen_dropped": test_unseen,
        "validation_targets_unseen_dropped": val_unseen,
        "items_in_train": int(builder.seen.sum()),
        "truncated_sequences": builder.truncated,
    })
    return Split(vocab=builder.vocab, train=train, validation=validation, sae_train=sae,
                 test=test, info=info)


def _tie_break_info(dataset: Dataset, tie_break: str) -> str:
    """How the split ordered same-timestamp events, for ``info``."""
    if dataset.has_order:
        return "explicit order column (no tie-break)"
    return tie_break if dataset.has_timestamps else "file order (no timestamps)"


def _base_info(kind: str, dataset: Dataset, seed: int, max_len: int, tie_break: str,
               minimum: int, users_total: int, dropped: int, drop_unseen: bool) -> dict:
    return {
        "kind": kind, "dataset": dataset.name, "seed": int(seed), "max_len": int(max_len),
        "tie_break": _tie_break_info(dataset, tie_break),
        "min_interactions": minimum, "users_total": users_total,
        "users_dropped_short": dropped, "drop_unseen_targets": drop_unseen,
        "vocab_size": len(dataset.catalog) + 1,
    }


def _partition_rest(rest: np.ndarray, sae_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    n_sae = _share(len(rest), sae_fraction)
    return rest[: len(rest) - n_sae], rest[len(rest) - n_sae:]


def paper_split(
    dataset: Dataset,
    *,
    seed: int = 0,
    max_len: int = 200,
    test_fraction: float = 0.1,
    sae_fraction: float = 0.4,
    validation_fraction: float = 0.1,
    tie_break: str = "random",
    drop_unseen_targets: bool = True,
) -> Split:
    """The paper's split: most recent users for test, the rest 60/40 into recommender and SAE
    training (with validation users carved from the recommender part).

    Args:
        dataset: a dataset with timestamps.
        seed: seeds the tie-break of equal timestamps and the random user assignment.
        max_len: sequences keep their last ``max_len`` items.
        test_fraction: share of users in the test part (by recency of their last event).
        sae_fraction: share of the non-test users given to SAE training (0 for none).
        validation_fraction: share of recommender-training users held out for validation
            (the most recent ones; 0 for no validation part).
        tie_break: ``"random"``, ``"stable"`` or ``"item"``, see
            :mod:`mechrec_recsys.data.ordering`.
        drop_unseen_targets: drop held-out users whose target never occurs in training.

    Raises:
        MissingTimestampsError: the dataset has no timestamps.
    """
    hist, info = _start_user_split(
        dataset, "paper", seed=seed, max_len=max_len, tie_break=tie_break,
        drop_unseen_targets=drop_unseen_targets, require_timestamps=True,
        fractions={"test_fraction": test_fraction, "sae_fraction": sae_fraction,
                   "validation_fraction": validation_fraction})
    rng = rng_for(seed, USER_STREAM)
    last = hist.last_timestamps()
    recency = np.lexsort((rng.permutation(len(hist)), -last))  # most recent first
    n_test = max(1, _share(len(hist), test_fraction))
    test_idx = recency[:n_test]
    rest = recency[n_test:]
    recommender, sae_idx = _partition_rest(rest[rng.permutation(len(rest))], sae_fraction)
    rank = np.empty(len(hist), dtype=np.int64)
    rank[recency] = np.arange(len(hist))
    recommender = recommender[np.argsort(rank[recommender], kind="stable")]
    non_test = np.concatenate([recommender, sae_idx])
    info.update({
        "time_threshold": int(last[test_idx].min()),
        "latest_non_test_event": int(last[non_test].max()) if len(non_test) else None,
    })
    return _user_split(dataset, hist, info, test_idx=test_idx, recommender=recommender,
                       sae_idx=sae_idx, max_len=max_len, drop_unseen_targets=drop_unseen_targets)


def random_user_split(
    dataset: Dataset,
    *,
    seed: int = 0,
    max_len: int = 200,
    test_fraction: float = 0.1,
    sae_fraction: float = 0.4,
    validation_fraction: float = 0.1,
    tie_break: str = "random",
    drop_unseen_targets: bool = True,
) -> Split:
    """Users split at random into test, recommender-training (with validation) and SAE parts.

    Works with or without timestamps (without them, sequence order is file order). Arguments
    as in :func:`paper_split`; here test and validation users are drawn at random.
    """
    hist, info = _start_user_split(
        dataset, "random", seed=seed, max_len=max_len, tie_break=tie_break,
        drop_unseen_targets=drop_unseen_targets, require_timestamps=False,
        fractions={"test_fraction": test_fraction, "sae_fraction": sae_fraction,
                   "validation_fraction": validation_fraction})
    shuffled = rng_for(seed, USER_STREAM).permutation(len(hist))
    n_test = max(1, _share(len(hist), test_fraction))
    test_idx, rest = shuffled[:n_test], shuffled[n_test:]
    recommender, sae_idx = _partition_rest(rest, sae_fraction)
    return _user_split(dataset, hist, info, test_idx=test_idx, recommender=recommender,
                       sae_idx=sae_idx, max_len=max_len, drop_unseen_targets=drop_unseen_targets)


def leave_one_out_split(
    dataset: Dataset,
    *,
    max_len: int = 200,
    seed: int = 0,
    tie_break: str = "random",
    drop_unseen_targets: bool = True,
) -> Split:
    """Leave-one-out: last item test, second-to-last validation, the rest training.

    Args:
        dataset: a dataset with timestamps.
        max_len: sequences keep their last ``max_len`` items.
        seed: seeds the tie-break of equal timestamps.
        tie_break: ``"random"``, ``"stable"`` or ``"item"``.
        drop_unseen_targets: drop held-out targets that never occur in training.

    Raises:
        MissingTimestampsError: the dataset has no timestamps.
    """
    _check_args(max_len, {})
    _require_timestamps(dataset, "the leave-one-out split")
    ordered = order_events(dataset, tie_break=tie_break, seed=seed)
    hist, dropped = _drop_short(ordered, 3, dataset)
    builder = _Builder(dataset, hist, max_len, drop_unseen_targets)
    everyone = np.arange(len(hist))
    train = builder.full(everyone, cut=2, training=True)
    validation, val_unseen = builder.held_out(everyone, back=2)
    test, test_unseen = builder.held_out(everyone, back=1)
    if len(test) == 0:
        raise EmptyDatasetError(
            f"dataset {dataset.name!r}: every test target is an item never seen in training. "
            "Fix: use more data, or drop_unseen_targets=False")
    info = _base_info("loo", dataset, seed, max_len, tie_break, 3, len(ordered), dropped,
                      drop_unseen_targets)
    return _finish(builder, info, train=train, validation=validation, val_unseen=val_unseen,
                   sae=None, test=test, test_unseen=test_unseen, test_selected=len(hist))


def make_split(dataset: Dataset, kind: str, **kwargs) -> Split:
    """Dispatch to a split by name: ``"paper"``, ``"loo"`` or ``"random"``.

    Keyword arguments go to the chosen function (``seed`` and ``max_len`` suit all three).
    """
    functions = {"paper": paper_split, "loo": leave_one_out_split,
                 "leave-one-out": leave_one_out_split, "random": random_user_split}
    if kind not in functions:
        raise ValueError(f"unknown split {kind!r}; choose one of {', '.join(SPLIT_KINDS)}")
    return functions[kind](dataset, **kwargs)

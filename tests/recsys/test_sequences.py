"""SequenceSet, left_pad and iter_batches: left padding, masks, truncation, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from mechrec_recsys.sequences import SequenceSet, iter_batches, left_pad
from mechrec_recsys.vocab import PAD_TOKEN

SEQUENCES = st.lists(
    st.lists(st.integers(1, 10_000), min_size=1, max_size=40).map(
        lambda s: np.array(s, dtype=np.int64)),
    min_size=1, max_size=12)
MAX_LEN = st.one_of(st.none(), st.integers(1, 50))


def test_left_pad_puts_real_items_at_the_end_with_mask_one():
    tokens, mask = left_pad([np.array([4, 5, 6]), np.array([7]), np.array([1, 2])])
    assert tokens.dtype == torch.int64 and mask.dtype == torch.int64
    assert tokens.tolist() == [[4, 5, 6], [0, 0, 7], [0, 1, 2]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 1, 1]]
    # position -1 is every sequence's last real item
    assert tokens[:, -1].tolist() == [6, 7, 2]
    assert torch.all(tokens[mask == 0] == PAD_TOKEN)


def test_truncation_keeps_the_last_items():
    tokens, mask = left_pad([np.arange(1, 11), np.array([3, 4])], max_len=4)
    assert tokens.tolist() == [[7, 8, 9, 10], [0, 0, 3, 4]]
    assert mask.tolist() == [[1, 1, 1, 1], [0, 0, 1, 1]]


def test_width_is_the_longest_sequence_when_max_len_is_larger():
    tokens, mask = left_pad([np.array([1, 2]), np.array([3])], max_len=100)
    assert tokens.shape == mask.shape == (2, 2)


def test_max_len_one_keeps_only_the_last_item():
    tokens, mask = left_pad([np.array([1, 2, 3]), np.array([9])], max_len=1)
    assert tokens.tolist() == [[3], [9]] and mask.tolist() == [[1], [1]]


@pytest.mark.parametrize("make", [list, np.array, torch.tensor])
def test_left_pad_accepts_lists_arrays_and_tensors(make):
    tokens, _ = left_pad([make([2, 3]), make([5])])
    assert tokens.tolist() == [[2, 3], [0, 5]]


def test_integral_float_tokens_are_accepted():
    tokens, _ = left_pad([np.array([2.0, 3.0])])
    assert tokens.tolist() == [[2, 3]] and tokens.dtype == torch.int64


def test_left_pad_does_not_modify_its_input():
    sequence = np.array([1, 2, 3])
    tokens, _ = left_pad([sequence], max_len=2)
    tokens[0, 0] = 99
    assert sequence.tolist() == [1, 2, 3]


@pytest.mark.parametrize(("sequences", "message"), [
    ([], "zero sequences"),
    ([np.array([1, 2]), np.array([], dtype=np.int64)], "sequence 1 of the batch is empty"),
    ([np.array([], dtype=np.int64), []], "every sequence in the batch is empty"),
    ([np.array([3, 0, 4])],
     r"sequence 0 contains token 0; item tokens start at 1 \(0 is padding\)"),
    ([np.array([1]), np.array([-2, 5])], "sequence 1 contains token -2"),
    ([np.array([1.5, 2.0])], "sequence 0 of the batch holds non-integer tokens"),
    ([np.array([1.0, np.nan])], "non-integer tokens"),
    ([np.array(["1", "2"])], "non-integer tokens"),
    ([np.array([[1, 2], [3, 4]])], r"sequence 0 of the batch has shape \(2, 2\)"),
    ([np.int64(3)], "must be one-dimensional"),
])
def test_left_pad_bad_input(sequences, message):
    with pytest.raises(ValueError, match=message):
        left_pad(sequences)


@pytest.mark.parametrize("max_len", [0, -1, -3, 1.5, True, "4"])
def test_left_pad_rejects_a_bad_max_len(max_len):
    # a negative max_len used to drop the *first* items silently; 0 meant "no truncation"
    with pytest.raises(ValueError, match="max_len must be a positive integer or None"):
        left_pad([np.array([1, 2, 3, 4])], max_len=max_len)


def test_numpy_integer_max_len_is_fine():
    tokens, _ = left_pad([np.array([1, 2, 3])], max_len=np.int64(2))
    assert tokens.tolist() == [[2, 3]]


def test_iter_batches_yields_consecutive_left_padded_batches():
    sequences = [np.arange(1, n + 1) for n in (3, 1, 5, 2, 4)]
    batches = list(iter_batches(sequences, batch_size=2, max_len=3))
    assert [tuple(t.shape) for t, _ in batches] == [(2, 3), (2, 3), (1, 3)]
    assert batches[0][0].tolist() == [[1, 2, 3], [0, 0, 1]]
    assert batches[1][0].tolist() == [[3, 4, 5], [0, 1, 2]]
    assert batches[2][0].tolist() == [[2, 3, 4]]
    for start, (tokens, mask) in zip(range(0, 5, 2), batches, strict=True):
        expected_tokens, expected_mask = left_pad(sequences[start:start + 2], 3)
        assert torch.equal(tokens, expected_tokens) and torch.equal(mask, expected_mask)


def test_iter_batches_width_is_per_batch():
    sequences = [np.array([1]), np.array([2]), np.arange(1, 9)]
    widths = [tokens.shape[1] for tokens, _ in iter_batches(sequences, batch_size=2)]
    assert widths == [1, 8]


def test_iter_batches_of_nothing_yields_nothing():
    assert list(iter_batches([], batch_size=4)) == []


@pytest.mark.parametrize("batch_size", [0, -1, False])
def test_iter_batches_rejects_a_bad_batch_size(batch_size):
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        list(iter_batches([np.array([1])], batch_size=batch_size))


def test_iter_batches_reports_bad_sequences():
    batches = iter_batches([np.array([1]), np.array([0, 2])], batch_size=1)
    next(batches)
    with pytest.raises(ValueError, match="contains token 0"):
        next(batches)


def test_sequence_set_basics():
    part = SequenceSet(users=np.array([10, 20, 30]),
                       sequences=[np.array([1, 2]), np.array([3]), np.array([4, 5, 6])],
                       targets=np.array([7, 8, 9]))
    assert len(part) == 3
    assert part.lengths().tolist() == [2, 1, 3] and part.lengths().dtype == np.int64
    picked = part.subset([2, 0])
    assert picked.users.tolist() == [30, 10]
    assert [s.tolist() for s in picked.sequences] == [[4, 5, 6], [1, 2]]
    assert picked.targets.tolist() == [9, 7]
    empty = part.subset(np.array([], dtype=np.int64))
    assert len(empty) == 0 and empty.lengths().tolist() == [] and len(empty.targets) == 0


def test_sequence_set_without_targets():
    part = SequenceSet(users=np.arange(2), sequences=[np.array([1]), np.array([2, 3])])
    assert part.targets is None and part.subset([1]).targets is None


def test_sequence_set_accepts_plain_lists():
    part = SequenceSet(users=[5, 6], sequences=[[1, 2], [3]], targets=[4, 5])
    assert isinstance(part.users, np.ndarray) and isinstance(part.targets, np.ndarray)
    picked = part.subset([1])
    assert picked.users.tolist() == [6] and picked.targets.tolist() == [5]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"users": np.arange(3), "sequences": [np.array([1])] * 2}, "3 users but 2 sequences"),
    ({"users": np.arange(2), "sequences": [np.array([1])] * 2, "targets": np.array([1])},
     "1 targets for 2 sequences"),
])
def test_sequence_set_rejects_mismatched_parts(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SequenceSet(**kwargs)


def test_sequence_set_feeds_iter_batches():
    part = SequenceSet(users=np.arange(3), sequences=[np.array([1, 2]), np.array([3]),
                                                      np.array([4, 5, 6])])
    rows = sum(tokens.shape[0] for tokens, _ in iter_batches(part.sequences, batch_size=2))
    assert rows == len(part)


@settings(max_examples=150, deadline=None)
@given(SEQUENCES, MAX_LEN)
def test_property_left_padding(sequences, max_len):
    tokens, mask = left_pad(sequences, max_len)
    kept = [s if max_len is None else s[-max_len:] for s in sequences]
    width = max(len(s) for s in kept)
    assert tokens.shape == mask.shape == (len(sequences), width)
    assert mask.sum(dim=1).tolist() == [len(s) for s in kept]
    # the mask is 0...0 1...1 on every row: padding on the left only
    assert torch.all(mask[:, 1:] >= mask[:, :-1])
    assert torch.all(tokens[mask == 0] == PAD_TOKEN) and torch.all(tokens[mask == 1] >= 1)
    for row, sequence in enumerate(kept):
        assert tokens[row][mask[row] == 1].tolist() == sequence.tolist()
    assert tokens[:, -1].tolist() == [int(s[-1]) for s in sequences]


@settings(max_examples=100, deadline=None)
@given(SEQUENCES, st.integers(1, 5), MAX_LEN)
def test_property_iter_batches_covers_every_sequence_once_in_order(sequences, batch_size,
                                                                   max_len):
    batches = list(iter_batches(sequences, batch_size, max_len))
    assert len(batches) == -(-len(sequences) // batch_size)
    last_items = [int(t) for tokens, _ in batches for t in tokens[:, -1]]
    assert last_items == [int(s[-1]) for s in sequences]
    assert all(tokens.shape[0] <= batch_size for tokens, _ in batches)

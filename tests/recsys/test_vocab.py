"""ItemVocab: raw item ids <-> tokens 1..N (0 is padding), JSON save/load, errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from mechrec_recsys.vocab import PAD_TOKEN, ItemVocab, UnknownItemError

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
# narrow ranges exercise the lookup-table path, full int64 ranges the binary-search path
ITEM_IDS = st.lists(st.one_of(st.integers(-50, 50), INT64), min_size=1, max_size=60)


def test_padding_is_token_zero_and_items_follow_ascending_id():
    vocab = ItemVocab.from_items([30, 10, 20, 10, 30])
    assert PAD_TOKEN == 0
    assert vocab.item_ids.tolist() == [10, 20, 30]
    assert vocab.num_items == 3 and vocab.size == 4
    assert vocab.to_tokens([10, 20, 30]).tolist() == [1, 2, 3]
    assert vocab.item_ids.dtype == np.int64


def test_round_trip_keeps_shape_and_dtype():
    vocab = ItemVocab.from_items(range(100, 200, 7))
    ids = np.array([[100, 191], [114, 100], [142, 156]])
    tokens = vocab.to_tokens(ids)
    assert tokens.shape == (3, 2) and tokens.dtype == np.int64
    assert np.array_equal(vocab.to_items(tokens), ids)
    back = vocab.to_items(np.arange(1, vocab.size))
    assert np.array_equal(back, vocab.item_ids)


@pytest.mark.parametrize("container", [list, tuple, np.array, torch.tensor, iter])
def test_to_tokens_accepts_common_containers(container):
    vocab = ItemVocab.from_items([5, 7, 9])
    assert vocab.to_tokens(container([9, 5, 7])).tolist() == [3, 1, 2]


def test_to_tokens_of_nothing_is_empty():
    vocab = ItemVocab.from_items([1, 2])
    out = vocab.to_tokens([])
    assert out.shape == (0,) and out.dtype == np.int64
    assert vocab.to_items([]).shape == (0,)


def test_integral_floats_map_like_integers():
    vocab = ItemVocab.from_items([1, 2, 3])
    assert vocab.to_tokens(np.array([3.0, 1.0])).tolist() == [3, 1]


def test_unknown_id_names_the_first_one_in_row_major_order():
    vocab = ItemVocab.from_items([1, 2, 3])
    with pytest.raises(UnknownItemError) as info:
        vocab.to_tokens(np.array([[1, 2], [7, 9]]))
    message = str(info.value)
    assert message.startswith("item id 7 is not in the vocabulary (3 items)")
    assert "2 of 4 ids are unknown" in message
    assert isinstance(info.value, KeyError)


def test_a_single_unknown_id_gets_no_count():
    vocab = ItemVocab.from_items([1, 2, 3])
    with pytest.raises(UnknownItemError, match=r"^item id 0 is not in the vocabulary \(3 items\);"):
        vocab.to_tokens([1, 0, 2])


@pytest.mark.parametrize(("bad", "shown"), [
    (1.5, "item id 1.5 "), (float("nan"), "item id nan "), ("2", "item id '2' "),
    (True, "item id True "), (2**64 - 1, "item id 18446744073709551615 "),
])
def test_non_integer_ids_are_unknown_not_truncated(bad, shown):
    vocab = ItemVocab.from_items([1, 2, 3])
    with pytest.raises(UnknownItemError) as info:
        vocab.to_tokens(np.array([bad]) if not isinstance(bad, bool) else [bad])
    assert str(info.value).startswith(shown)


def test_unsigned_ids_beyond_int64_are_unknown():
    vocab = ItemVocab.from_items([1, 2])
    ids = np.array([1, 2**63 + 1], dtype=np.uint64)
    with pytest.raises(UnknownItemError, match="9223372036854775809"):
        vocab.to_tokens(ids)
    assert vocab.to_tokens(np.array([2, 1], dtype=np.uint64)).tolist() == [2, 1]


def test_empty_vocabulary_knows_no_item():
    vocab = ItemVocab.from_items([])
    assert vocab.num_items == 0 and vocab.size == 1
    assert 1 not in vocab
    with pytest.raises(UnknownItemError, match=r"\(0 items\)"):
        vocab.to_tokens([1])


@pytest.mark.parametrize("ids", [
    [0, 10**12, 5 * 10**12],                 # sparse: binary search
    list(range(-5, 40)),                     # dense, negative ids included
    [-(2**63), 0, 2**63 - 1],                # the extremes of int64
])
def test_lookup_is_exact_for_dense_sparse_and_extreme_ids(ids):
    vocab = ItemVocab(np.array(ids, dtype=np.int64))
    assert vocab.to_tokens(ids[::-1]).tolist() == list(range(len(ids), 0, -1))
    for neighbour in (ids[0] + 1, ids[-1] - 1):
        if neighbour not in ids:
            with pytest.raises(UnknownItemError):
                vocab.to_tokens([neighbour])


@pytest.mark.parametrize("token", [0, -1, 4, 1.5])
def test_to_items_rejects_padding_and_out_of_range_tokens(token):
    vocab = ItemVocab.from_items([10, 20, 30])
    with pytest.raises(ValueError, match=rf"token {token} is not an item token \(valid: 1..3"):
        vocab.to_items([1, token])


def test_contains():
    vocab = ItemVocab.from_items([3, 5, 2**62])
    assert 3 in vocab and np.int32(5) in vocab and 2**62 in vocab
    assert 4 not in vocab and 6 not in vocab and -1 not in vocab
    assert 2**70 not in vocab
    assert "3" not in vocab and 3.0 not in vocab and True not in vocab and None not in vocab


def test_equality_and_hash_follow_the_item_ids():
    a = ItemVocab.from_items([1, 2, 3])
    b = ItemVocab(np.array([1, 2, 3]))
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != ItemVocab.from_items([1, 2]) and a != ItemVocab.from_items([1, 2, 4])
    assert a != [1, 2, 3]


def test_vocabulary_keeps_a_private_copy_of_its_ids():
    ids = np.array([1, 2, 3], dtype=np.int64)
    vocab = ItemVocab(ids)
    ids[0] = 99
    assert vocab.item_ids.tolist() == [1, 2, 3]
    assert vocab.to_tokens([1]).tolist() == [1]


@pytest.mark.parametrize(("ids", "message"), [
    (np.array([[1, 2]]), "one-dimensional"),
    (np.array([2, 1]), "strictly increasing"),
    (np.array([1, 1, 2]), "strictly increasing"),
    (np.array([1.0, 1.5]), "must be integers, got 1.5"),
    (np.array(["a", "b"]), "must be integers, got 'a'"),
])
def test_invalid_item_ids_are_rejected(ids, message):
    with pytest.raises(ValueError, match=message):
        ItemVocab(ids)


def test_from_items_rejects_non_integer_ids():
    with pytest.raises(ValueError, match=r"must be integers, got 2\.5"):
        ItemVocab.from_items(i for i in [1, 2.5])


def test_json_round_trip():
    vocab = ItemVocab.from_items([7, -3, 12, 2**40])
    data = vocab.to_json()
    assert data == {"format": "mechrec.item_vocab/1", "item_ids": [-3, 7, 12, 2**40]}
    assert ItemVocab.from_json(json.loads(json.dumps(data))) == vocab


def test_save_and_load(tmp_path):
    vocab = ItemVocab.from_items([5, 1, 9])
    path = tmp_path / "vocab.json"
    vocab.save(path)
    assert json.loads(path.read_text())["item_ids"] == [1, 5, 9]
    loaded = ItemVocab.load(path)
    assert loaded == vocab
    assert loaded.to_tokens([9, 1]).tolist() == [3, 1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vocab.json"]  # no temp file left
    ItemVocab.from_items([2]).save(str(path))  # overwrites, str paths work
    assert ItemVocab.load(str(path)).item_ids.tolist() == [2]


def test_save_is_atomic_when_the_rename_fails(tmp_path, monkeypatch):
    path = tmp_path / "vocab.json"
    ItemVocab.from_items([1, 2]).save(path)
    before = path.read_bytes()

    def broken_replace(src: str | Path, dst: str | Path) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        ItemVocab.from_items([3, 4, 5]).save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["vocab.json"]


def test_save_creates_its_folder_like_every_atomic_writer(tmp_path):
    path = tmp_path / "missing" / "vocab.json"
    ItemVocab.from_items([1]).save(path)
    assert ItemVocab.load(path).size == ItemVocab.from_items([1]).size
    assert [p.name for p in path.parent.iterdir()] == ["vocab.json"]  # no temp file left


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="item vocabulary file not found"):
        ItemVocab.load(tmp_path / "nope.json")


@pytest.mark.parametrize(("content", "message"), [
    ('{"format": "mechrec.item_vocab/1",\n "item_ids": [1, 2', r"line 2, column \d+: invalid JSON"),
    ('{"item_ids": [1, 2]}', "not a mechrec item vocabulary"),
    ('{"format": "other/1", "item_ids": [1]}', "not a mechrec item vocabulary"),
    ("[1, 2, 3]", "not a mechrec item vocabulary"),
    ('{"format": "mechrec.item_vocab/1", "item_ids": 3}', "must be a list of integers"),
    ('{"format": "mechrec.item_vocab/1", "item_ids": [1, "x"]}', "must be integers"),
    ('{"format": "mechrec.item_vocab/1", "item_ids": [1.5]}', "must be integers, got 1.5"),
    ('{"format": "mechrec.item_vocab/1", "item_ids": [3, 1]}', "strictly increasing"),
    ('{"format": "mechrec.item_vocab/1", "item_ids": [[1], [2, 3]]}', "invalid 'item_ids'"),
])
def test_load_bad_files_names_the_file_and_problem(tmp_path, content, message):
    path = tmp_path / "vocab.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        ItemVocab.load(path)
    assert str(path) in str(info.value)


def test_load_non_utf8_file(tmp_path):
    path = tmp_path / "vocab.json"
    path.write_bytes(b"\xff\xfe{}")
    with pytest.raises(ValueError, match="not UTF-8"):
        ItemVocab.load(path)


def test_empty_vocabulary_round_trips(tmp_path):
    path = tmp_path / "empty.json"
    ItemVocab.from_items([]).save(path)
    assert ItemVocab.load(path).num_items == 0


def test_a_million_ids_round_trip():
    vocab = ItemVocab(np.arange(0, 2_000_000, 2, dtype=np.int64))
    ids = np.random.default_rng(0).choice(vocab.item_ids, 1_000_000)
    tokens = vocab.to_tokens(ids)
    assert np.array_equal(tokens, ids // 2 + 1)
    assert np.array_equal(vocab.to_items(tokens), ids)


@settings(max_examples=150, deadline=None)
@given(ITEM_IDS)
def test_property_round_trip_and_order(ids):
    vocab = ItemVocab.from_items(ids)
    tokens = vocab.to_tokens(ids)
    assert tokens.min() >= 1 and tokens.max() <= vocab.num_items
    assert vocab.to_items(tokens).tolist() == ids
    # tokens follow the order of raw ids
    order = np.argsort(ids, kind="stable")
    assert np.all(np.diff(tokens[order]) >= 0)
    assert ItemVocab.from_json(json.loads(json.dumps(vocab.to_json()))) == vocab


@settings(max_examples=150, deadline=None)
@given(ITEM_IDS, st.one_of(st.integers(-60, 60), INT64))
def test_property_membership_matches_lookup(ids, probe):
    vocab = ItemVocab.from_items(ids)
    assert (probe in vocab) == (probe in set(ids))
    if probe in vocab:
        assert vocab.to_items(vocab.to_tokens([probe])).tolist() == [probe]
    else:
        with pytest.raises(UnknownItemError, match=f"item id {probe} "):
            vocab.to_tokens([*ids, probe])

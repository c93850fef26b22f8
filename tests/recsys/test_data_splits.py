"""Splits: the paper's time/user split, leave-one-out and the user-random split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mechrec_recsys.data import (
    Dataset,
    ItemCatalog,
    LoadReport,
    MissingTimestampsError,
    load_dataset,
    read_movielens_catalog,
)
from mechrec_recsys.data.generic import load_generic
from mechrec_recsys.data.ordering import order_events
from mechrec_recsys.data.splits import (
    leave_one_out_split,
    make_split,
    paper_split,
    random_user_split,
)


@pytest.fixture(scope="module")
def ml100k(data_dir):
    return load_dataset("ml-100k", data_dir, download=False)


@pytest.fixture(scope="module")
def paper(ml100k):
    return paper_split(ml100k, seed=0)


@pytest.fixture(scope="module")
def ml1m_pairs(data_dir):
    folder = data_dir / "ml-1m-unordered"
    return load_generic(folder / "ratings_user_item_pairs.parquet",
                        columns={"user_id": "userID", "item_id": "movieID"},
                        catalog=read_movielens_catalog(folder / "movies.dat", "ml-1m"),
                        name="ml-1m-unordered")


def _small_dataset(rows, *, timestamps=True) -> Dataset:
    """rows: (user, item, timestamp) tuples."""
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).astype("int64")
    if not timestamps:
        frame = frame.drop(columns="timestamp")
    catalog = ItemCatalog.from_item_ids(range(1, 40))
    return Dataset("small", frame, catalog, LoadReport("small"))


def _users(part):
    return set(part.users.tolist())


def test_paper_split_sizes_ml100k_seed0(paper):
    info = paper.info
    assert info["users_total"] == 943 and info["users_dropped_short"] == 0
    assert info["test_users_selected"] == 94                 # 10% of 943
    assert len(paper.sae_train) == info["sae_users"] == 340  # 40% of the other 849
    assert info["train_users"] + info["validation_users"] + \
        info["validation_targets_unseen_dropped"] == 509     # 60% of 849
    assert info["validation_users"] + info["validation_targets_unseen_dropped"] == 51
    assert len(paper.train) == 458
    assert info["test_targets_unseen_dropped"] == 14
    assert len(paper.test) == 80 == 94 - 14
    assert info["validation_targets_unseen_dropped"] == 1 and len(paper.validation) == 50
    assert paper.vocab.num_items == 1682                   # whole catalog


def test_paper_split_parts_are_disjoint_by_user(paper):
    parts = [_users(p) for p in paper.parts().values()]
    assert sum(len(p) for p in parts) == len(set().union(*parts))


def test_paper_split_test_users_are_the_most_recent(ml100k, paper):
    last = ml100k.interactions.groupby("user_id")["timestamp"].max()
    selected_test = last.sort_values(ascending=False).index[:94]
    assert _users(paper.test) <= set(selected_test)
    threshold = paper.info["time_threshold"]
    assert threshold == last.loc[list(selected_test)].min()


def test_paper_split_is_time_correct_and_leak_free(ml100k, paper):
    frame = ml100k.interactions
    test_users = _users(paper.test)
    training_users = _users(paper.train) | _users(paper.validation) | _users(paper.sae_train)
    training_events = frame[frame["user_id"].isin(training_users)]
    # no event of a training / validation / SAE user is newer than any test target
    last = frame.groupby("user_id")["timestamp"].max()
    earliest_test_target = last.loc[list(test_users)].min()
    assert training_events["timestamp"].max() <= earliest_test_target
    assert training_events["timestamp"].max() <= paper.info["time_threshold"]
    # validation (carved from recommender users, most recent first) is time-correct too
    val_last = last.loc[list(_users(paper.validation))].min()
    assert frame[frame["user_id"].isin(_users(paper.train))]["timestamp"].max() <= val_last
    # no test-user event anywhere in the training parts
    assert test_users.isdisjoint(training_users)


def test_paper_split_targets_and_inputs(ml100k, paper):
    vocab = paper.vocab
    history = order_events(ml100k, tie_break="random", seed=0)
    position = {int(u): i for i, u in enumerate(history.users)}
    seen = np.zeros(vocab.size, dtype=bool)
    seen[np.concatenate(paper.train.sequences)] = True
    for user, sequence, target in zip(paper.test.users, paper.test.sequences,
                                      paper.test.targets, strict=True):
        items = history.history(position[int(user)])
        assert vocab.to_items([target])[0] == items[-1]
        assert vocab.to_items(sequence).tolist() == items[:-1][-200:].tolist()
        assert seen[target]
    for user, sequence in zip(paper.train.users, paper.train.sequences, strict=True):
        items = history.history(position[int(user)])
        assert vocab.to_items(sequence).tolist() == items[-200:].tolist()
    assert max(len(s) for p in paper.parts().values() for s in p.sequences) == 200


def test_paper_split_is_deterministic_and_seed_dependent(ml100k, paper):
    again = paper_split(ml100k, seed=0)
    for name, part in paper.parts().items():
        other = again.parts()[name]
        assert part.users.tolist() == other.users.tolist()
        assert all(np.array_equal(a, b) for a, b in zip(part.sequences, other.sequences,
                                                        strict=True))
    different = paper_split(ml100k, seed=1)
    assert _users(different.sae_train) != _users(paper.sae_train)


def test_paper_split_requires_timestamps(ml1m_pairs):
    with pytest.raises(MissingTimestampsError, match="random_user_split"):
        paper_split(ml1m_pairs)
    with pytest.raises(MissingTimestampsError):
        make_split(ml1m_pairs, "loo")


def test_random_split_on_pairs_without_timestamps(ml1m_pairs):
    split = random_user_split(ml1m_pairs, seed=3, max_len=50)
    info = split.info
    assert info["users_total"] == 6040 and info["users_dropped_short"] == 0
    assert info["test_users_selected"] == 604
    assert info["sae_users"] == round(0.4 * 5436)
    parts = [_users(p) for p in split.parts().values()]
    assert sum(len(p) for p in parts) == len(set().union(*parts))
    assert info["tie_break"].startswith("file order")
    # without timestamps the target is the last pair in file order
    frame = ml1m_pairs.interactions
    user = int(split.test.users[0])
    assert split.vocab.to_items([split.test.targets[0]])[0] == \
        frame.loc[frame["user_id"] == user, "item_id"].iloc[-1]
    assert max(len(s) for s in split.train.sequences) == 50
    again = random_user_split(ml1m_pairs, seed=3, max_len=50)
    assert again.test.users.tolist() == split.test.users.tolist()


def test_leave_one_out(ml100k):
    split = leave_one_out_split(ml100k, max_len=200, seed=0)
    assert split.sae_train is None
    assert len(split.train) == 943
    history = order_events(ml100k, seed=0)
    position = {int(u): i for i, u in enumerate(history.users)}
    vocab = split.vocab
    for part, back in ((split.test, 1), (split.validation, 2)):
        for user, sequence, target in zip(part.users[:50], part.sequences[:50],
                                          part.targets[:50], strict=True):
            items = history.history(position[int(user)])
            assert vocab.to_items([target])[0] == items[-back]
            assert vocab.to_items(sequence).tolist() == items[:-back][-200:].tolist()
    train_of = dict(zip(split.train.users.tolist(), split.train.sequences, strict=True))
    seen = np.zeros(vocab.size, dtype=bool)
    seen[np.concatenate(split.train.sequences)] = True
    for user, target in zip(split.test.users.tolist(), split.test.targets, strict=True):
        items = history.history(position[user])
        # training holds everything but the last two items; the targets are never in it
        assert vocab.to_items(train_of[user]).tolist() == items[:-2][-200:].tolist()
        assert vocab.to_items([target])[0] not in items[:-2]
        assert seen[target]
    info = split.info
    assert info["test_users"] + info["test_targets_unseen_dropped"] == 943


def test_tie_break_is_explicit_and_seeded():
    # user 1 rates items 1..6 all in the same second, then item 7 later
    rows = [(1, item, 100) for item in range(1, 7)] + [(1, 7, 200)] + \
        [(2, item, 50 + item) for item in range(1, 8)]
    dataset = _small_dataset(rows)
    stable = order_events(dataset, tie_break="stable").history(0).tolist()
    assert stable == [1, 2, 3, 4, 5, 6, 7]
    by_item = order_events(_small_dataset(rows[::-1]), tie_break="item").history(0).tolist()
    assert by_item == [1, 2, 3, 4, 5, 6, 7]
    orders = {tuple(order_events(dataset, tie_break="random", seed=s).history(0).tolist())
              for s in range(6)}
    assert len(orders) > 1                                      # the seed matters
    assert all(order[-1] == 7 for order in orders)              # time still rules
    assert order_events(dataset, seed=4).history(0).tolist() == \
        order_events(dataset, seed=4).history(0).tolist()       # and is reproducible
    with pytest.raises(ValueError, match="tie_break"):
        order_events(dataset, tie_break="sorted")


def test_short_users_are_dropped_and_counted():
    rows = [(1, 1, 10)] + [(u, i, 10 * i + u) for u in range(2, 30) for i in range(1, 6)]
    split = paper_split(_small_dataset(rows), seed=0, drop_unseen_targets=False)
    assert split.info["users_dropped_short"] == 1
    assert 1 not in set().union(*[_users(p) for p in split.parts().values()])
    loo = leave_one_out_split(_small_dataset([*rows, (40, 1, 1), (40, 2, 2)]),
                              drop_unseen_targets=False)
    assert loo.info["users_dropped_short"] == 2


def test_unseen_targets_kept_when_asked(ml100k):
    kept = paper_split(ml100k, seed=0, drop_unseen_targets=False)
    assert len(kept.test) == 94 and kept.info["test_targets_unseen_dropped"] == 0


def test_split_argument_errors(ml100k):
    with pytest.raises(ValueError, match="unknown split 'time'"):
        make_split(ml100k, "time")
    with pytest.raises(ValueError, match="max_len"):
        paper_split(ml100k, max_len=0)
    with pytest.raises(ValueError, match="test_fraction"):
        paper_split(ml100k, test_fraction=1.5)


def test_too_few_users_is_a_clear_error():
    rows = [(1, 1, 1), (1, 2, 2)]
    with pytest.raises(ValueError, match="too few users"):
        paper_split(_small_dataset(rows))


def test_random_tie_break_removes_item_id_order_of_ml_latest_small(data_dir):
    """Tied rows of ml-latest-small sit in movieId order; file order would leak it."""
    dataset = load_dataset("ml-latest-small", data_dir, download=False)

    def ascending_share(tie_break: str) -> float:
        history = order_events(dataset, tie_break=tie_break, seed=0)
        items, times = history.items, history.timestamps
        same_user = np.ones(len(items) - 1, dtype=bool)
        same_user[history.offsets[1:-1] - 1] = False
        tied = same_user & (times[1:] == times[:-1])
        return float((items[1:][tied] > items[:-1][tied]).mean())

    assert ascending_share("stable") > 0.99
    assert 0.4 < ascending_share("random") < 0.6
    assert ascending_share("item") == 1.0

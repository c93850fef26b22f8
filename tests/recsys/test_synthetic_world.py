"""The synthetic world: determinism, the planted distributions, loading and splitting it,
and bad input (small worlds over the real ml-20m catalog, a second or so each)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from mechrec_recsys.data import ItemCatalog, load_generic, paper_split
from mechrec_recsys.synthetic import (
    INTERACTION_COLUMNS,
    KIND_FRANCHISE,
    KIND_POPULAR,
    KIND_TASTE,
    SynthConfig,
    generate_world,
    load_world,
    read_catalog,
    read_truth,
)
from mechrec_recsys.synthetic.world import chunk_count
from scipy import stats

SMALL = {"users": 300, "items": 3000, "chunk_users": 128}


@pytest.fixture(scope="module")
def catalog(data_dir: Path) -> ItemCatalog:
    return read_catalog(data_dir / "ml-20m-catalog" / "movies.csv")


def _world(catalog: ItemCatalog, folder: Path, **overrides) -> Path:
    config = SynthConfig.preset("ml-1m", **{**SMALL, **overrides})
    generate_world(config, catalog, folder)
    return folder


@pytest.fixture(scope="module")
def world(catalog: ItemCatalog, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _world(catalog, tmp_path_factory.mktemp("world"), seed=0)


@pytest.fixture(scope="module")
def truth(world: Path):
    return read_truth(world)


@pytest.fixture(scope="module")
def interactions(world: Path) -> pd.DataFrame:
    return pd.read_parquet(world / "interactions.parquet")


def _tables(folder: Path) -> dict[str, pd.DataFrame]:
    names = ("interactions", "events", "users", "items")
    return {name: pd.read_parquet(folder / f"{name}.parquet") for name in names}


def test_same_seed_same_world_other_seed_other_world(catalog, world, tmp_path):
    again = _tables(_world(catalog, tmp_path / "again", seed=0))
    for name, table in _tables(world).items():
        pd.testing.assert_frame_equal(table, again[name], check_exact=True)
    info, info_again = (json.loads((f / "world.json").read_text())
                        for f in (world, tmp_path / "again"))
    info.pop("seconds"), info_again.pop("seconds")
    assert info == info_again
    other = _tables(_world(catalog, tmp_path / "other", seed=1))["interactions"]
    first = _tables(world)["interactions"]
    assert len(other) != len(first) or not other["item_id"].equals(first["item_id"])


def test_more_users_keep_the_earlier_chunks(catalog, world, tmp_path):
    smaller = _tables(_world(catalog, tmp_path / "small", seed=0, users=256))["interactions"]
    bigger = _tables(world)["interactions"]
    pd.testing.assert_frame_equal(smaller, bigger[bigger["user_id"] <= 256])


def test_files_are_chunked_and_rows_line_up(world, truth, interactions):
    config = SynthConfig.from_dict(truth.info["config"])
    for name in ("interactions", "events", "users"):
        assert pq.ParquetFile(world / f"{name}.parquet").num_row_groups == chunk_count(config)
    assert len(truth.events) == len(interactions) == truth.info["counts"]["events"]
    assert (truth.events["user_id"].to_numpy() == interactions["user_id"].to_numpy()).all()
    assert (truth.events["order"].to_numpy() == interactions["order"].to_numpy()).all()
    assert truth.taste_start.shape == (300, len(truth.genres))
    assert truth.era_taste.shape == (300, len(truth.info["eras"]))
    np.testing.assert_allclose(truth.taste_start.sum(axis=1), 1, atol=1e-5)
    lengths = interactions.groupby("user_id").size()
    assert (lengths.to_numpy() == truth.users["length"].to_numpy()).all()


def test_loads_through_the_generic_loader_and_the_paper_split_runs(world, interactions):
    dataset = load_world(world)
    assert dataset.num_interactions == len(interactions) and dataset.has_order
    assert dataset.report.dropped == {}
    direct = load_generic(world / "interactions.parquet", world / "items.parquet",
                          columns=INTERACTION_COLUMNS, genre_column="genres")
    assert direct.num_interactions == dataset.num_interactions
    split = paper_split(dataset, seed=0, max_len=50)
    info = split.info
    assert info["tie_break"] == "explicit order column (no tie-break)"
    assert info["test_users_selected"] + info["train_users"] + info["validation_users"] \
        + info["validation_targets_unseen_dropped"] + info["sae_users"] == 300
    assert info["latest_non_test_event"] <= info["time_threshold"]


def test_truth_rows_line_up_with_split_sequences(world, truth, interactions):
    split = paper_split(load_world(world), seed=0, max_len=50)
    vocab = split.vocab
    lengths = truth.users["length"].to_numpy()
    for part, held_out in ((split.train, False), (split.test, True)):
        for user, tokens in list(zip(part.users, part.sequences, strict=True))[:20]:
            first = lengths[user - 1] - len(tokens) - (1 if held_out else 0)
            rows = truth.rows(np.full(len(tokens), user), first + np.arange(len(tokens)))
            items = interactions["item_id"].to_numpy()[rows]
            assert (vocab.item_ids[np.asarray(tokens) - 1] == items).all()
    assert truth.events["genre"].to_numpy()[truth.rows([1], [0])][0] >= -1
    with pytest.raises(IndexError):
        truth.rows([1], [lengths[0]])
    with pytest.raises(IndexError):
        truth.rows([0], [0])


def test_timestamps_strictly_increase_inside_the_window(interactions, truth):
    config = truth.info["config"]
    same_user = interactions["user_id"].diff() == 0
    assert (interactions["timestamp"].diff()[same_user] > 0).all()
    assert (interactions["order"].diff()[same_user] == 1).all()
    assert interactions["timestamp"].min() >= config["start_time"]
    assert interactions["timestamp"].max() <= config["end_time"]


def test_no_user_sees_an_item_twice(interactions):
    assert not interactions.duplicated(["user_id", "item_id"]).any()


def test_lengths_follow_the_truncated_lognormal(truth):
    lengths = truth.users["length"]
    config = truth.info["config"]
    assert lengths.min() >= config["min_len"] and lengths.max() <= config["max_len"]
    mean = truth.info["length_distribution"]["target_mean"]
    assert abs(lengths.mean() - mean) < 4 * lengths.std() / np.sqrt(len(lengths))


def test_latent_genres_follow_the_users_tastes(truth, interactions):
    events = truth.events
    taste = events["kind"].to_numpy() == KIND_TASTE
    user_row = events["user_id"].to_numpy() - 1
    genre = events["genre"].to_numpy()
    assert (genre[taste] >= 0).all() and (genre[~taste] == -1).all()
    own = truth.taste_at(user_row[taste], events["order"].to_numpy()[taste])
    shuffled = np.random.default_rng(0).permutation(300)[user_row[taste]]
    other = truth.taste_at(shuffled, events["order"].to_numpy()[taste])
    rows = np.arange(taste.sum())
    assert own[rows, genre[taste]].mean() > 2 * other[rows, genre[taste]].mean()
    # the items carry the latent genre, and their era is the latent era
    items = truth.items.set_index("item_id")
    chosen = np.asarray(truth.genres)[genre[taste]]
    labels = items.loc[interactions["item_id"].to_numpy()[taste], "genres"].to_numpy()
    assert all(g in label.split("|") for g, label in zip(chosen, labels, strict=True))
    eras = items.loc[interactions["item_id"].to_numpy()[taste], "era"].to_numpy()
    assert (eras == events["era"].to_numpy()[taste]).all()
    # observable: a user's share of items per genre tracks the user's mean taste
    share = np.zeros_like(truth.taste_start)
    np.add.at(share, (user_row[taste], genre[taste]), 1)
    share /= share.sum(axis=1, keepdims=True)
    mean_taste = (truth.taste_start + truth.taste_end) / 2
    assert np.corrcoef(share.ravel(), mean_taste.ravel())[0, 1] > 0.9


def test_taste_drifts_from_start_to_end(catalog, tmp_path):
    truth = read_truth(_world(catalog, tmp_path / "drift", drift=1.0, users=200))
    events = truth.events[truth.events["kind"] == KIND_TASTE]
    row = events["user_id"].to_numpy() - 1
    lengths = truth.users["length"].to_numpy()[row]
    w = events["order"].to_numpy() / (lengths - 1)
    genre = events["genre"].to_numpy()
    start, end = truth.taste_start[row, genre], truth.taste_end[row, genre]
    early, late = w < 0.2, w > 0.8
    assert start[early].mean() > 1.5 * end[early].mean()
    assert end[late].mean() > 1.5 * start[late].mean()


def test_popularity_is_long_tailed(truth, interactions):
    counts = interactions["item_id"].value_counts()
    items = truth.items.set_index("item_id")
    top = counts.iloc[: len(items) // 10].sum() / counts.sum()
    assert top > 0.3  # the top 10% of items take a third of the events (ml-1m: 44%)
    assert truth.info["counts"]["item_gini"] > 0.4
    popularity = items["popularity"].reindex(counts.index)
    assert stats.spearmanr(popularity, counts).statistic > 0.5
    assert (items["events"].sum() == len(interactions))


def test_franchise_parts_follow_in_order(catalog, tmp_path):
    folder = _world(catalog, tmp_path / "franchise", continue_prob=1.0, users=200)
    truth = read_truth(folder)
    frame = pd.read_parquet(folder / "interactions.parquet").join(
        truth.events[["kind", "continued"]])
    items = truth.items.set_index("item_id")
    frame["franchise"] = items.loc[frame["item_id"], "franchise"].to_numpy()
    frame["part"] = items.loc[frame["item_id"], "part"].to_numpy()
    continued = frame["continued"].to_numpy()
    assert continued.sum() > 50
    assert (frame["kind"].to_numpy()[continued] == KIND_FRANCHISE).all()
    before = np.flatnonzero(continued) - 1
    assert (frame["user_id"].to_numpy()[before] == frame["user_id"].to_numpy()[continued]).all()
    assert (frame["franchise"].to_numpy()[before]
            == frame["franchise"].to_numpy()[continued]).all()
    assert (frame["part"].to_numpy()[before] + 1 == frame["part"].to_numpy()[continued]).all()
    # with continue_prob=1, an item whose next part exists is followed by it unless the user's
    # sequence ends there or the user has that part elsewhere (earlier, or later when the
    # check ran: a later event may still be replaced by another continuation, so allow a few)
    next_of = {(f, p): i for i, f, p in zip(items.index, items["franchise"], items["part"],
                                            strict=True) if f >= 0}
    seen = set(zip(frame["user_id"], frame["item_id"], strict=True))
    users, item_ids = frame["user_id"].to_numpy(), frame["item_id"].to_numpy()
    chances = missed = 0
    for j in np.flatnonzero(frame["franchise"].to_numpy() >= 0):
        nxt = next_of.get((frame["franchise"].iat[j], frame["part"].iat[j] + 1))
        if nxt is None or j + 1 == len(frame) or users[j + 1] != users[j]:
            continue
        chances += 1
        missed += item_ids[j + 1] != nxt and (users[j], nxt) not in seen
    assert chances > 50 and missed <= 0.02 * chances


def test_kinds_and_their_latents(truth):
    events = truth.events
    kinds = events["kind"].to_numpy()
    assert set(np.unique(kinds)) <= {KIND_TASTE, KIND_FRANCHISE, KIND_POPULAR}
    popular = (kinds == KIND_POPULAR).mean()
    assert 0.05 < popular < 0.35  # popular_share 0.1, plus redraws settled by popularity
    assert ((events["era"] == -1) == (events["genre"] == -1)).all()
    counts = truth.info["counts"]["kinds"]
    assert sum(counts.values()) == len(events)


def test_bad_input_is_a_clear_error(catalog, world, tmp_path):
    with pytest.raises(ValueError, match="unknown size"):
        SynthConfig.preset("ml-2m")
    with pytest.raises(ValueError, match="drift must be in"):
        generate_world(SynthConfig(drift=2.0), catalog, tmp_path / "a")
    with pytest.raises(ValueError, match="mean_length must lie"):
        generate_world(SynthConfig(mean_length=10), catalog, tmp_path / "a")
    bare = ItemCatalog.from_item_ids(range(1, 5000))
    with pytest.raises(ValueError, match="no genre to plant"):
        generate_world(SynthConfig(users=5), bare, tmp_path / "a")
    with pytest.raises(ValueError, match="too few for"):
        generate_world(SynthConfig(users=5, items=100), catalog, tmp_path / "a")
    with pytest.raises(ValueError, match="already holds a world"):
        generate_world(SynthConfig.preset("ml-1m", **SMALL), catalog, world)
    with pytest.raises(FileNotFoundError, match="not a finished synthetic world"):
        read_truth(tmp_path)
    with pytest.raises(ValueError, match="unknown synthetic config keys"):
        SynthConfig.from_dict({"users": 3, "colour": "red"})


def test_config_round_trips_through_json(truth):
    config = SynthConfig.from_dict(truth.info["config"])
    assert config == SynthConfig.preset("ml-1m", **SMALL)

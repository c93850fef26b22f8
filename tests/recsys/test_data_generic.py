"""The generic loader: Music4All-style listening logs, parquet, positions, time units."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mechrec_recsys.data.generic import load_generic
from mechrec_recsys.data.splits import paper_split


@pytest.fixture
def music(tmp_path):
    """Listening events with ISO timestamps and a track table with multi-valued genres."""
    events = tmp_path / "listening_history.tsv"
    events.write_text(
        "user\ttrack\ttimestamp\n"
        + "".join(f"{u}\t{t}\t2019-0{1 + (u % 9)}-{10 + t:02d} 12:00:00\n"
                  for u in range(1, 21) for t in range(1, 8))
        + "3\t99\t2019-03-01 00:00:00\n"          # a track missing from the track table
    )
    tracks = tmp_path / "tracks.tsv"
    tracks.write_text(
        "track\tname\tgenres\tlanguage\ttags\n"
        "1\tSong One\trock|indie\ten\tupbeat|guitar\n"
        "2\tSong Two\tpop\ten\tupbeat\n"
        "3\tCanción\tpop|latin\tes\t\n"
        "4\tLied\telectronic\tde\tdance\n"
        "5\tChanson (1995)\tchanson\tfr\t\n"
        "6\tSong Six\t\ten\t\n"
        "7\tSong Seven\trock\t\tguitar\n"
        "8\tNever Played\tjazz\ten\t\n"
    )
    return events, tracks


def test_music4all_style_load(music):
    events, tracks = music
    dataset = load_generic(
        events, tracks, name="music",
        columns={"user_id": "user", "item_id": "track", "timestamp": "timestamp"},
        item_columns={"item_id": "track", "title": "name"},
        genre_column="genres", categorical=["language"], multi_valued=["tags"])
    assert dataset.num_users == 20 and dataset.num_interactions == 140
    assert len(dataset.catalog) == 8 and dataset.num_items == 7
    assert dataset.report.dropped == {"unknown_item": 1}
    catalog = dataset.catalog
    assert catalog.genre_names == ["chanson", "electronic", "indie", "jazz", "latin", "pop",
                                   "rock"]
    assert catalog.genres.loc[1, ["rock", "indie"]].all()
    assert not catalog.genres.loc[6].any()
    assert catalog.items.loc[3, "title"] == "Canción"
    assert catalog.items.loc[5, "year"] == 1995 and pd.isna(catalog.items.loc[1, "year"])
    assert catalog.extra["language"].loc[4] == "de" and pd.isna(catalog.extra["language"].loc[7])
    assert catalog.multi_hot["tags"].loc[1, "guitar"]
    assert "language=es" in catalog.attribute_names() and "tags=upbeat" in \
        catalog.attribute_names()
    vocab = dataset.vocab()
    matrix = catalog.attribute_matrix(vocab, ["pop", "language=en", "tags=guitar"])
    token = {int(i): t for t, i in enumerate(vocab.item_ids, start=1)}
    assert matrix[token[1]].tolist() == [0.0, 1.0, 1.0]
    assert matrix[token[3]].tolist() == [1.0, 0.0, 0.0]
    # ISO timestamps become int64 seconds (UTC)
    first = dataset.interactions.iloc[0]
    assert first["timestamp"] == int(pd.Timestamp("2019-02-11 12:00:00", tz="UTC").timestamp())
    split = paper_split(dataset, seed=0, max_len=5)
    assert split.info["test_users_selected"] == 2


def test_parquet_pairs_with_string_ids_and_ms_timestamps(tmp_path):
    path = tmp_path / "events.parquet"
    pd.DataFrame({"u": ["1", "1", "2"], "i": ["10", "11", "10"],
                  "ms": [1_000_000, 2_000_500, 3_000_000]}).to_parquet(path)
    dataset = load_generic(path, columns={"user_id": "u", "item_id": "i", "timestamp": "ms"},
                           time_unit="ms")
    assert dataset.interactions["timestamp"].tolist() == [1000, 2000, 3000]
    assert dataset.interactions["user_id"].dtype == np.int64
    assert dataset.catalog.item_ids.tolist() == [10, 11]
    assert any("no item file" in note for note in dataset.report.notes)


def test_headerless_file_with_positions(tmp_path):
    path = tmp_path / "events.txt"
    path.write_text("7;1;4.5\n7;2;3\n8;1;5\n")
    dataset = load_generic(path, columns={"user_id": 0, "item_id": 1, "rating": 2}, sep=";",
                           header=False)
    assert dataset.interactions["rating"].tolist() == [4.5, 3.0, 5.0]
    assert not dataset.has_timestamps
    with pytest.raises(ValueError, match="0-based positions"):
        load_generic(path, columns={"user_id": "u", "item_id": 1}, sep=";", header=False)


def test_duplicates_without_timestamps_are_same_user_and_item(tmp_path):
    path = tmp_path / "plays.csv"
    path.write_text("u,i\n1,5\n1,5\n1,6\n")
    assert load_generic(path, columns={"user_id": "u", "item_id": "i"}).num_interactions == 2
    kept = load_generic(path, columns={"user_id": "u", "item_id": "i"}, duplicates="keep")
    assert kept.num_interactions == 3


def test_mapping_errors(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("u,i\n1,2\n")
    with pytest.raises(ValueError, match="unknown keys \\['user'\\]"):
        load_generic(path, columns={"user": "u", "item_id": "i"})
    with pytest.raises(ValueError, match="must map \\['user_id'\\]"):
        load_generic(path, columns={"item_id": "i"})
    with pytest.raises(ValueError, match="pass items_path too"):
        load_generic(path, columns={"user_id": "u", "item_id": "i"}, genre_column="g")
    odd = tmp_path / "events.xyz"
    odd.write_text("u,i\n1,2\n")
    with pytest.raises(ValueError, match="pass sep="):
        load_generic(odd, columns={"user_id": "u", "item_id": "i"})


def test_duplicate_item_rows_are_an_error(tmp_path):
    events = tmp_path / "e.csv"
    events.write_text("u,i\n1,2\n")
    items = tmp_path / "items.csv"
    items.write_text("i,title\n2,A\n3,B\n2,C\n")
    with pytest.raises(ValueError, match=r"items.csv, line 4: item id 2 appears on lines 2, 4"):
        load_generic(events, items, columns={"user_id": "u", "item_id": "i"},
                     item_columns={"item_id": "i", "title": "title"})

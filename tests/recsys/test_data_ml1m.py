"""MovieLens 1M on real rows: the official reader on ``ml-1m-official-head/ratings.dat``, the
local-only ``ml-1m-ordered`` copy with its explicit order column, and the paper split on it."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from cli_checks import run_cli
from mechrec_recsys.cli.main import app
from mechrec_recsys.data import (
    DataFormatError,
    DatasetNotFoundError,
    load_dataset,
    load_generic,
    load_movielens,
    order_events,
    paper_split,
    read_movielens_catalog,
)
from mechrec_recsys.data.registry import ML1M_GENRES
from typer.testing import CliRunner

runner = CliRunner()


@pytest.fixture(scope="module")
def head(data_dir):
    return load_movielens(data_dir / "ml-1m-official-head", "ml-1m")


@pytest.fixture(scope="module")
def ordered(data_dir):
    return load_dataset("ml-1m-ordered", data_dir)


@pytest.fixture(scope="module")
def raw_ordered(data_dir):
    return pd.read_parquet(data_dir / "ml-1m-ordered" / "interactions.parquet")


def test_official_head_counts_and_encoding(head):
    assert head.num_interactions == 487_650
    users = head.user_ids()
    assert len(users) == 2999 and users[0] == 1 and users[-1] == 2999
    first = head.interactions.iloc[0]
    assert (first["user_id"], first["item_id"], first["rating"], first["timestamp"]) == (
        1, 1193, 5.0, 978300760)
    assert len(head.catalog) == 3883
    assert list(head.catalog.genres.columns) == list(ML1M_GENRES)
    # movies.dat is latin-1: accented titles decode, not mangled into replacement characters
    assert head.catalog.items.loc[73, "title"] == "Misérables, Les (1995)"
    assert head.catalog.items.loc[73, "year"] == 1995


def test_official_head_ties_are_broken_explicitly(head):
    times = head.interactions[["user_id", "timestamp"]]
    tied = times.duplicated(keep=False).mean()
    assert tied == pytest.approx(0.775, abs=0.001)  # most ratings share their second
    stable = order_events(head, tie_break="stable")
    shuffled = order_events(head, tie_break="random", seed=0)
    reshuffled = order_events(head, tie_break="random", seed=1)
    # ties decide the order of most users, so the tie-break is visible ...
    assert not np.array_equal(stable.items, shuffled.items)
    assert not np.array_equal(shuffled.items, reshuffled.items)
    # ... but only inside ties: the timestamp sequence is identical, and stable keeps file order
    assert np.array_equal(stable.timestamps, shuffled.timestamps)
    user = head.interactions[head.interactions["user_id"] == 1]
    expected = user.sort_values("timestamp", kind="stable")["item_id"].to_numpy()
    assert np.array_equal(stable.history(0), expected)


def test_ordered_copy_loads_offline_with_its_counts(ordered):
    assert ordered.num_interactions == 1_000_209
    assert ordered.num_users == 6040
    assert ordered.num_items == 3706
    assert len(ordered.catalog) == 3883
    assert ordered.has_order and ordered.has_timestamps
    assert any("198,417 timestamps are imputed" in note for note in ordered.report.notes)


def test_ordered_sequences_follow_position_not_a_timestamp_sort(ordered, raw_ordered):
    hist = order_events(ordered, tie_break="random", seed=0)
    other = order_events(ordered, tie_break="random", seed=7)
    assert np.array_equal(hist.items, other.items)  # no tie-break is drawn
    expected = raw_ordered.sort_values(["user_id", "position"])["item_id"].to_numpy()
    assert np.array_equal(hist.items, expected)
    # user 1: items 1721, 1022 and 1270 share a second; they keep their recorded order
    assert hist.history(0)[:4].tolist() == [3186, 1721, 1022, 1270]
    lengths = hist.lengths()
    same_user = np.ones(len(hist.items) - 1, dtype=bool)
    same_user[hist.offsets[1:-1] - 1] = False
    assert np.all(np.diff(hist.timestamps)[same_user] >= 0)  # never backwards in time
    assert lengths.sum() == 1_000_209


def test_ordered_copy_agrees_with_the_official_file(ordered, head):
    """Users 1-2999 have real timestamps in both: same events, same times."""
    key = ["user_id", "item_id", "timestamp"]
    official = head.interactions[key].sort_values(key).reset_index(drop=True)
    part = ordered.interactions[ordered.interactions["user_id"] <= 2999]
    copy = part[key].sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(official, copy)


def test_paper_split_of_the_ordered_copy(ordered):
    split = paper_split(ordered, seed=0)
    info = split.info
    assert info["tie_break"] == "explicit order column (no tie-break)"
    assert (info["train_users"], info["validation_users"], info["sae_users"]) == (
        2936, 326, 2174)
    assert info["test_users_selected"] == 604
    assert info["test_users"] + info["test_targets_unseen_dropped"] == 604
    assert info["latest_non_test_event"] <= info["time_threshold"]
    # the test target is each test user's last item by position
    hist = order_events(ordered)
    index = np.searchsorted(hist.users, split.test.users)
    last = hist.items[hist.offsets[index + 1] - 1]
    assert np.array_equal(split.vocab.to_tokens(last), split.test.targets)


def _write(tmp_path, frame: pd.DataFrame):
    path = tmp_path / "events.parquet"
    frame.to_parquet(path)
    return path


def test_order_column_that_repeats_within_a_user_is_rejected(tmp_path, data_dir):
    catalog = read_movielens_catalog(data_dir / "ml-1m-ordered" / "movies.dat", "ml-1m")
    frame = pd.DataFrame({"u": [1, 1, 1, 2], "i": [1, 2, 3, 1], "t": [5, 6, 7, 5],
                          "p": [0, 1, 1, 0]})
    with pytest.raises(DataFormatError, match="user 1 has order value 1 on rows 2 and 3"):
        load_generic(_write(tmp_path, frame), catalog=catalog,
                     columns={"user_id": "u", "item_id": "i", "timestamp": "t", "order": "p"})


def test_order_column_that_runs_against_timestamps_is_rejected(tmp_path, data_dir):
    catalog = read_movielens_catalog(data_dir / "ml-1m-ordered" / "movies.dat", "ml-1m")
    frame = pd.DataFrame({"u": [1, 1, 1], "i": [1, 2, 3], "t": [5, 9, 7], "p": [0, 1, 2]})
    with pytest.raises(DataFormatError, match="earlier timestamp"):
        load_generic(_write(tmp_path, frame), catalog=catalog,
                     columns={"user_id": "u", "item_id": "i", "timestamp": "t", "order": "p"})
    # the same rows load when the order agrees with the timestamps, and sequences follow it
    frame["p"] = [0, 2, 1]
    dataset = load_generic(_write(tmp_path, frame), catalog=catalog,
                           columns={"user_id": "u", "item_id": "i", "timestamp": "t",
                                    "order": "p"})
    assert order_events(dataset).history(0).tolist() == [1, 3, 2]


def test_ordered_copy_is_never_downloaded(monkeypatch, tmp_path):
    monkeypatch.delenv("MECHREC_DATA", raising=False)
    with pytest.raises(DatasetNotFoundError, match=r"never downloaded.*MECHREC_DATA"):
        load_dataset("ml-1m-ordered")
    with pytest.raises(DatasetNotFoundError, match=str(tmp_path)):
        load_dataset("ml-1m-ordered", tmp_path)
    result = runner.invoke(app, ["data", "download", "ml-1m-ordered"])
    assert result.exit_code == 2
    assert "cannot be downloaded" in result.output and "Traceback" not in result.output


def test_cli_stats_of_the_ordered_copy_with_the_paper_split(data_dir):
    result = runner.invoke(app, ["data", "stats", "ml-1m-ordered", "--split", "paper",
                                 "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    assert "2,936" in result.output and "2,174" in result.output
    assert "198,417 timestamps are imputed" in " ".join(result.output.split())


@pytest.mark.slow
def test_quick_reproduction_runs_on_the_ordered_copy(data_dir, tmp_path):
    """The whole pipeline at toy size on all of ml-1m-ordered (75 s to 3 min on 2 cores)."""
    run_dir = tmp_path / "run"
    result = run_cli("reproduce", "--quick", "--dataset", "ml-1m-ordered", "--split", "paper",
                     "--out", run_dir, "--no-progress", "--data-dir", data_dir)
    assert result.exit_code == 0, result.output
    split = json.loads((run_dir / "reproduce" / "split.json").read_text())
    assert split["info"]["tie_break"] == "explicit order column (no tie-break)"
    assert split["info"]["sae_users"] == 2174
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "ml-1m-ordered" in html

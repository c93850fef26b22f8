"""MovieLens 1M in real time order: load ``ml-1m-ordered``, split it the paper's way, and
measure how much its imputed timestamps could move the split.

``ml-1m-ordered`` records every user's time order in a ``position`` column; sequences follow it
exactly. Its timestamps are real for 80% of the rows; the rest (users 3000-6040, ratings <= 3)
carry the user's nearest earlier known timestamp. Only each user's *last* timestamp enters the
paper split (test users = the 10% whose last event is most recent), so an imputed timestamp can
matter only where it is a user's last one, and only by making that user look older.

How much that matters is measured where the truth is known: users 1-2999 have real timestamps
in the official ``ratings.dat`` (``ml-1m-official-head``). The script hides their timestamps the
way the copy's are hidden (each rating <= 3 with the rate observed in users 3000-6040), imputes
them the same way, and counts how many of those users change side of the test/non-test cut.

Run: ``python examples/04_ml1m_ordered.py [DATA_DIR]`` (default: ``$MECHREC_DATA``). It needs
the local copies ``ml-1m-ordered/`` and ``ml-1m-official-head/`` (see docs/data.md).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pandas as pd
from mechrec_recsys.data import (
    DataError,
    dataset_statistics,
    load_dataset,
    load_movielens,
    paper_split,
)

QUICK = os.environ.get("MECHREC_EXAMPLE_QUICK") == "1"


def imputed_last_times(frame: pd.DataFrame, hidden: np.ndarray) -> np.ndarray:
    """Each user's last timestamp after hiding ``hidden`` rows and imputing them with the
    nearest earlier known timestamp of the user (the next known one where none is earlier).

    ``frame`` is sorted by user and position and has ``user_id`` and ``timestamp``.
    """
    times = frame["timestamp"].where(~hidden)
    users = frame["user_id"]
    filled = times.groupby(users).ffill()
    filled = filled.fillna(times.groupby(users).bfill())
    return filled.groupby(users).last().to_numpy()


def test_users(last: np.ndarray, fraction: float = 0.1) -> set[int]:
    """Indices of the ``fraction`` of users whose last event is most recent (ties by index)."""
    n_test = int(np.floor(len(last) * fraction + 0.5))
    return set(np.lexsort((np.arange(len(last)), -last))[:n_test].tolist())


def main(data_dir: str | None) -> None:
    """Print the split table of ml-1m-ordered and the imputation check."""
    ordered = load_dataset("ml-1m-ordered", data_dir)
    print(ordered)
    for line in ordered.report.summary_lines():
        print("  load:", line)
    split = paper_split(ordered, seed=0)
    table = dataset_statistics(ordered, split)
    print(table.loc[["users", "items", "interactions", "length p50"]].to_string())
    info = split.info
    print(f"split: {info['tie_break']}; {info['test_targets_unseen_dropped']} test targets "
          f"never seen in training dropped; {info['truncated_sequences']:,} sequences truncated "
          f"to {info['max_len']}")

    root = data_dir or os.environ["MECHREC_DATA"]
    frame = ordered.interactions.sort_values(["user_id", "order"]).reset_index(drop=True)
    raw = pd.read_parquet(os.path.join(root, "ml-1m-ordered", "interactions.parquet"),
                          columns=["user_id", "item_id", "rating", "timestamp_imputed"])
    frame = frame.merge(raw, on=["user_id", "item_id"], how="left", validate="one_to_one")
    late = frame[frame["user_id"] >= 3000]
    last_imputed = late.groupby("user_id")["timestamp_imputed"].last()
    in_test = last_imputed[last_imputed].index.isin(split.test.users)
    print(f"users whose last timestamp is imputed: {int(last_imputed.sum())} of "
          f"{len(last_imputed)} users 3000-6040; {int(in_test.sum())} of them are test users")

    # The copy hides the timestamps of this share of the ratings <= 3 of users 3000-6040.
    imputed = int(late["timestamp_imputed"].sum())
    rate = imputed / (imputed + int((late["rating"] <= 3).sum()))
    # Where the truth is known (users 1-2999), hide timestamps the same way and compare.
    official = load_movielens(os.path.join(root, "ml-1m-official-head"), "ml-1m")
    head = frame[frame["user_id"] <= 2999][["user_id", "item_id", "timestamp"]].merge(
        official.interactions[["user_id", "item_id", "rating"]], on=["user_id", "item_id"],
        validate="one_to_one")
    low = head["rating"].to_numpy() <= 3
    truth = test_users(head.groupby("user_id")["timestamp"].last().to_numpy())
    changes = []
    for seed in range(3 if QUICK else 10):
        hidden = low & (np.random.default_rng(seed).random(len(head)) < rate)
        changes.append(len(truth ^ test_users(imputed_last_times(head, hidden))) // 2)
    print(f"simulation on users 1-2999 (real timestamps), hiding {rate:.1%} of ratings <= 3: "
          f"{np.mean(changes):.1f} of {len(truth)} test users change side on average "
          f"(min {min(changes)}, max {max(changes)}, {len(changes)} draws)")


if __name__ == "__main__":
    try:
        main(sys.argv[1] if len(sys.argv) > 1 else None)
    except (DataError, KeyError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)

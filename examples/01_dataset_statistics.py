"""Load MovieLens 100K, make the paper's split and print its statistics.

Usage::

    python examples/01_dataset_statistics.py              # $MECHREC_DATA, cache or download
    python examples/01_dataset_statistics.py /data/movies # a folder holding ml-100k/
    python examples/01_dataset_statistics.py --dataset ml-latest-small --seed 1

The paper's split puts the 10% of users whose last interaction is most recent into the test
part and shares the other users 60/40 between recommender training and SAE training
(validation users are carved from the recommender part). See docs/data.md for the details.
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd
from mechrec_recsys.data import DATASET_NAMES, dataset_statistics, load_dataset, paper_split


def readable(table: pd.DataFrame) -> pd.DataFrame:
    """The statistics table as text: counts with thousands separators, genre rows as shares."""

    def cell(value: float, statistic: str) -> str:
        if pd.isna(value):
            return ""
        if statistic.startswith("genre "):
            return f"{value:.1%}"
        return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"

    return table.apply(lambda row: row.map(lambda v: cell(v, str(row.name))), axis=1)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, load and split the dataset, print the tables; returns an exit code."""
    parser = argparse.ArgumentParser(
        description="Print the statistics of a MovieLens dataset and of its paper split.")
    parser.add_argument("data_dir", nargs="?", default=None,
                        help="folder holding the dataset (default: $MECHREC_DATA, then the "
                             "cache, then a download)")
    parser.add_argument("--dataset", default="ml-100k", choices=DATASET_NAMES)
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the timestamp tie-break and the user assignment")
    parser.add_argument("--max-len", type=int, default=200,
                        help="sequences keep their last MAX_LEN items")
    args = parser.parse_args(argv)

    try:
        dataset = load_dataset(args.dataset, args.data_dir)
        split = paper_split(dataset, seed=args.seed, max_len=args.max_len)
    except (ValueError, FileNotFoundError) as exc:  # the messages name the fix
        print(f"error: {exc}", file=sys.stderr)
        return 2

    print(dataset)
    print("load report:", "; ".join(dataset.report.summary_lines()))
    print()
    print(readable(dataset_statistics(dataset, split)).to_string())
    print()
    print(f"paper split (seed {args.seed}, max_len {args.max_len}):")
    for key, value in split.info.items():
        print(f"  {key:<36} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

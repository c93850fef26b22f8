"""Benchmark: GPTRec vs the popularity baseline, NDCG@10 / HR@10 / Coverage@10 with standard errors.

For every dataset and split it trains GPTRec (the paper's size unless overridden) with early
stopping on the split's validation users and evaluates both recommenders on the same test users,
seen items excluded. Runs are written to ``--out/<dataset>-<split>`` and resume after an
interruption (run the same command again). Data comes from ``$MECHREC_DATA`` or
``../shared/data``; nothing is downloaded.

Run:  OMP_NUM_THREADS=1 python benchmarks/bench_gptrec_quality.py --out runs/quality
      [--datasets ml-100k ml-latest-small] [--splits loo paper] [--epochs 200] [--lr 2e-3]
      [--dropout 0.2] [--eval-last 20]

Besides the usual single held-out target per test user, the script scores each test user's
last ``--eval-last`` items (averaged per user, so standard errors stay per user): the paper
split of ml-100k has only 80 scorable test users, and one target each leaves the comparison
at the mercy of noise.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from mechrec_recsys.data import load_dataset
from mechrec_recsys.data.splits import make_split
from mechrec_recsys.metrics import Comparison, compare_with_popularity
from mechrec_recsys.model import GPTRecConfig
from mechrec_recsys.training import TrainConfig, train_and_evaluate

FULL_HISTORY = 10**9


def data_root() -> Path:
    """``$MECHREC_DATA`` or the shared test copies beside the repository."""
    env = os.environ.get("MECHREC_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    """Train and evaluate every (dataset, split) pair and print one table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--datasets", nargs="+", default=["ml-100k", "ml-latest-small"])
    parser.add_argument("--splits", nargs="+", default=["loo", "paper"])
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--patience", type=int, default=TrainConfig.patience)
    parser.add_argument("--lr", type=float, default=TrainConfig.lr)
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--n-layers", type=int, default=3)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--max-len", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-last", type=int, default=20,
                        help="also score each test user's last N items (1 disables)")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args()

    model_config = GPTRecConfig(n_layers=args.n_layers, d_model=args.d_model,
                                max_len=args.max_len, dropout=args.dropout, init_seed=args.seed)
    train_config = TrainConfig(epochs=args.epochs, patience=args.patience, lr=args.lr,
                               batch_size=args.batch_size, seed=args.seed,
                               progress=args.progress)
    rows = []
    splits = {}
    for name in args.datasets:
        dataset = load_dataset(name, data_root(), download=False)
        for kind in args.splits:
            split = make_split(dataset, kind, seed=args.seed, max_len=FULL_HISTORY)
            started = time.perf_counter()
            run = train_and_evaluate(split, model_config=model_config, train_config=train_config,
                                     out_dir=args.out / f"{name}-{kind}")
            minutes = (time.perf_counter() - started) / 60
            rows.append((name, kind, split.info["test_users"], run, minutes))
            splits[(name, kind)] = split
            print(f"done {name} {kind}: best epoch {run.result.best_epoch} "
                  f"({minutes:.1f} min)", flush=True)

    print(f"\nGPTRec {model_config}\n{train_config}")
    print_table("one held-out target per test user (the usual protocol)",
                [(name, kind, run.comparison) for name, kind, _, run, _ in rows])
    if args.eval_last > 1:
        steadier = []
        for name, kind, _, run, _ in rows:
            split = splits[(name, kind)]
            if np.intersect1d(split.test.users, split.train.users).size:
                continue  # leave-one-out: a test user's earlier items are training data
            steadier.append((name, kind, compare_with_popularity(
                run.result.model, split.train, split.test, targets_per_user=args.eval_last)))
        print_table(f"each test user's last {args.eval_last} items, averaged per user (splits "
                    "whose test users are not training users)",
                    steadier)


def print_table(title: str, rows: list[tuple[str, str, Comparison]]) -> None:
    """GPTRec and popularity rows with mean ± SE, the NDCG ratio and the paired difference."""
    print(f"\n{title}")
    print(f"{'dataset':<16} {'split':<6} {'users':>5} {'model':<10} {'NDCG@10':>17} "
          f"{'HR@10':>17} {'Coverage@10':>17}  NDCG ratio  paired ΔNDCG@10")
    for name, kind, comparison in rows:
        reports = comparison.reports
        gptrec, popularity = (reports[n].metrics["ndcg"].mean for n in ("GPTRec", "Popularity"))
        ratio = f"{gptrec / popularity:.2f}" if popularity > 0 else "inf"
        users = comparison.info["test_users"]
        for model_name, report in reports.items():
            m = report.metrics
            extra = (f"  {ratio:>10}  {comparison.paired['ndcg']}"
                     if model_name == "GPTRec" else "")
            print(f"{name:<16} {kind:<6} {users:>5} {model_name:<10} {m['ndcg']!s:>17} "
                  f"{m['hit_rate']!s:>17} {m['coverage']!s:>17}{extra}")


if __name__ == "__main__":
    main()

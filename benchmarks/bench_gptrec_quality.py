"""Benchmark: GPTRec vs the popularity baseline, NDCG@10 / HR@10 / Coverage@10 with standard errors.

For every dataset, split and seed it trains GPTRec (the paper's size unless overridden) with
early stopping on the split's validation users and evaluates both recommenders on the same test
users, seen items excluded. Runs are written to ``--out/<dataset>-<split>-seed<seed>`` and
resume after an interruption (run the same command again). Data comes from ``$MECHREC_DATA`` or
``../shared/data``; nothing is downloaded.

Run:  OMP_NUM_THREADS=1 python benchmarks/bench_gptrec_quality.py --out runs/quality
      [--datasets ml-100k ml-latest-small] [--splits loo paper] [--seeds 0 1 2]
      [--epochs 200] [--lr 1e-3] [--dropout 0.2] [--eval-last 20]

Several seeds matter on the paper split: its seed draws which users train the recommender
(and which the SAE), and on ml-100k only 80 test users can be scored, so one run's ratio moves
a lot. Besides the usual single held-out target per test user, the script scores each test
user's last ``--eval-last`` items (averaged per user, so standard errors stay per user).
The last table gives, per dataset and split, the mean over seeds and the ratio of the means.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from _bench_common import data_root
from mechrec_recsys.data import load_dataset
from mechrec_recsys.data.splits import Split, make_split
from mechrec_recsys.experiment import FULL_HISTORY
from mechrec_recsys.metrics import Comparison, compare_with_popularity
from mechrec_recsys.model import GPTRecConfig
from mechrec_recsys.training import SplitRun, TrainConfig, train_and_evaluate

METRICS = ("ndcg", "hit_rate", "coverage")


@dataclass
class Row:
    """One trained (dataset, split, seed) with its comparisons."""

    dataset: str
    split: str
    seed: int
    run: SplitRun
    steadier: Comparison | None
    minutes: float


def parse_args() -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--datasets", nargs="+", default=["ml-100k", "ml-latest-small"])
    parser.add_argument("--splits", nargs="+", default=["loo", "paper"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--patience", type=int, default=TrainConfig.patience)
    parser.add_argument("--lr", type=float, default=TrainConfig.lr)
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--dropout", type=float, default=GPTRecConfig.dropout)
    parser.add_argument("--n-layers", type=int, default=GPTRecConfig.n_layers)
    parser.add_argument("--d-model", type=int, default=GPTRecConfig.d_model)
    parser.add_argument("--max-len", type=int, default=GPTRecConfig.max_len)
    parser.add_argument("--eval-last", type=int, default=20,
                        help="also score each test user's last N items (1 disables)")
    parser.add_argument("--progress", action="store_true")
    return parser.parse_args()


def run_one(split: Split, name: str, kind: str, seed: int, args: argparse.Namespace) -> Row:
    """Train (or resume) one run and compare it with popularity under both protocols."""
    model_config = GPTRecConfig(n_layers=args.n_layers, d_model=args.d_model,
                                d_mlp=4 * args.d_model, max_len=args.max_len,
                                dropout=args.dropout, init_seed=seed)
    train_config = TrainConfig(epochs=args.epochs, patience=args.patience, lr=args.lr,
                               batch_size=args.batch_size, seed=seed, progress=args.progress)
    started = time.perf_counter()
    run = train_and_evaluate(split, model_config=model_config, train_config=train_config,
                             out_dir=args.out / f"{name}-{kind}-seed{seed}")
    minutes = (time.perf_counter() - started) / 60
    steadier = None
    disjoint = not np.intersect1d(split.test.users, split.train.users).size
    if args.eval_last > 1 and disjoint:  # leave-one-out: earlier test items are training data
        steadier = compare_with_popularity(run.result.model, split.train, split.test,
                                           targets_per_user=args.eval_last)
    print(f"done {name} {kind} seed {seed}: best epoch {run.result.best_epoch} "
          f"({minutes:.1f} min)", flush=True)
    return Row(name, kind, seed, run, steadier, minutes)


def safe_ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``; inf (or NaN for 0/0) when the denominator is 0."""
    if denominator > 0:
        return numerator / denominator
    return float("inf") if numerator > 0 else float("nan")


def ratio(comparison: Comparison, metric: str = "ndcg") -> float:
    """GPTRec's mean over popularity's mean (inf when popularity scores 0)."""
    reports = comparison.reports
    return safe_ratio(*(reports[n].metrics[metric].mean for n in ("GPTRec", "Popularity")))


def print_runs(title: str, rows: list[tuple[Row, Comparison]]) -> None:
    """GPTRec and popularity rows with mean ± SE, the NDCG ratio and the paired difference."""
    print(f"\n{title}")
    print(f"{'dataset':<16} {'split':<6} {'seed':>4} {'users':>5} {'model':<10} "
          f"{'NDCG@10':>17} {'HR@10':>17} {'Coverage@10':>17}  NDCG ratio  paired ΔNDCG@10")
    for row, comparison in rows:
        users = comparison.info["test_users"]
        for model_name, report in comparison.reports.items():
            m = report.metrics
            extra = (f"  {ratio(comparison):>10.2f}  {comparison.paired['ndcg']}"
                     if model_name == "GPTRec" else "")
            print(f"{row.dataset:<16} {row.split:<6} {row.seed:>4} {users:>5} {model_name:<10} "
                  f"{m['ndcg']!s:>17} {m['hit_rate']!s:>17} {m['coverage']!s:>17}{extra}")


def print_seed_means(rows: list[Row]) -> None:
    """Per dataset and split: means over seeds of both protocols and the ratio of the means."""
    print("\nmean over seeds (ratio = mean GPTRec / mean popularity; min-max of per-seed ratios)")
    print(f"{'dataset':<16} {'split':<6} {'protocol':<10} {'seeds':>5} {'GPTRec NDCG':>12} "
          f"{'pop NDCG':>9} {'ratio':>6} {'range':>11} {'HR ratio':>9} {'Cov ratio':>9}")
    groups: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        groups.setdefault((row.dataset, row.split), []).append(row)
    for (name, kind), group in groups.items():
        protocols = {"last item": [r.run.comparison for r in group]}
        if all(r.steadier is not None for r in group):
            protocols["last N"] = [r.steadier for r in group]
        for protocol, comparisons in protocols.items():
            means = {(model, metric): float(np.mean(
                [c.reports[model].metrics[metric].mean for c in comparisons]))
                for model in ("GPTRec", "Popularity") for metric in METRICS}
            ratios = [ratio(c) for c in comparisons]
            cells = [safe_ratio(means[("GPTRec", m)], means[("Popularity", m)]) for m in METRICS]
            print(f"{name:<16} {kind:<6} {protocol:<10} {len(group):>5} "
                  f"{means[('GPTRec', 'ndcg')]:>12.4f} {means[('Popularity', 'ndcg')]:>9.4f} "
                  f"{cells[0]:>6.2f} {min(ratios):>5.2f}-{max(ratios):<5.2f} "
                  f"{cells[1]:>9.2f} {cells[2]:>9.2f}")


def main() -> None:
    """Train and evaluate every (dataset, split, seed) and print the tables."""
    args = parse_args()
    rows: list[Row] = []
    for name in args.datasets:
        dataset = load_dataset(name, data_root(), download=False)
        for kind in args.splits:
            for seed in args.seeds:
                split = make_split(dataset, kind, seed=seed, max_len=FULL_HISTORY)
                rows.append(run_one(split, name, kind, seed, args))
    print(f"\nGPTRec n_layers={args.n_layers} d_model={args.d_model} dropout={args.dropout} "
          f"max_len={args.max_len}; lr={args.lr} batch={args.batch_size} "
          f"patience={args.patience}")
    print_runs("one held-out target per test user (the usual protocol)",
               [(row, row.run.comparison) for row in rows])
    if any(row.steadier is not None for row in rows):
        print_runs(f"each test user's last {args.eval_last} items, averaged per user (splits "
                   "whose test users are not training users)",
                   [(row, row.steadier) for row in rows if row.steadier is not None])
    print_seed_means(rows)


if __name__ == "__main__":
    main()

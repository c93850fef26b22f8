"""Quality per unit of training time: GPTRec runs trained to convergence, side by side.

Reads the per-epoch history every ``mechrec train`` run keeps in ``train_state.json``
(validation NDCG@10 and seconds of each epoch) and the test metrics in ``metrics.json``, and
prints, per run: epochs trained, the best epoch and its validation NDCG, the test NDCG@10, and
how much training it took to reach given fractions of the best validation NDCG among the runs.

Epoch seconds recorded during a run depend on what else the machine was doing, so training
time is also given in "idle seconds": epochs times the idle cost of one epoch of that loss,
measured in one run by ``bench_gptrec_epoch.py`` (``--epoch-costs FILE``, its ``--json``
output; configurations with ``threads`` and ``loaded`` as given).

Run:
    python benchmarks/gptrec_convergence.py runs/ml1m-conv-s0 runs/ml1m-sampled-s0 \\
        --epoch-costs runs/bench_gptrec_epoch.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

FRACTIONS = (0.8, 0.9, 0.95, 0.99)


def load_run(run_dir: Path) -> dict[str, Any]:
    """A run's training history, loss and test NDCG@10 (``None`` before it finished)."""
    state_path = run_dir / "train_state.json"
    if not state_path.is_file():
        sys.exit(f"{run_dir} has no train_state.json: give folders written by 'mechrec train'")
    state = json.loads(state_path.read_text())
    metrics_path = run_dir / "metrics.json"
    test = None
    if metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text())
        test = metrics["comparison"]["reports"]["GPTRec"]["metrics"]["ndcg"]
    return {"name": run_dir.name, "loss": state["train_config"]["loss"],
            "history": state["history"], "best_epoch": state["best_epoch"],
            "best_val": state["best_metric"], "stopped_early": state["stopped_early"],
            "test": test}


def idle_epoch_costs(path: Path | None, threads: int) -> dict[str, float]:
    """Median idle seconds of one epoch per loss, from ``bench_gptrec_epoch.py --json``."""
    if path is None:
        return {}
    rows = json.loads(path.read_text())
    return {loss: statistics.median(s for row in rows if row["loss"] == loss
                                    and row["threads"] == threads and not row["loaded"]
                                    for s in row["seconds"])
            for loss in {row["loss"] for row in rows}}


def epochs_to_reach(history: list[dict[str, Any]], target: float) -> int | None:
    """The first epoch whose validation NDCG is at least ``target``."""
    return next((h["epoch"] for h in history if h["val_ndcg"] >= target), None)


def main(argv: list[str] | None = None) -> None:
    """Print the comparison table (markdown) and optionally write it as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders of 'mechrec train'")
    parser.add_argument("--epoch-costs", type=Path, help="bench_gptrec_epoch.py --json output")
    parser.add_argument("--threads", type=int, default=1, help="thread count of the costs")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    runs = [load_run(path) for path in args.runs]
    costs = idle_epoch_costs(args.epoch_costs, args.threads)
    best = max(run["best_val"] for run in runs)
    rows = []
    for run in runs:
        recorded = sum(h["seconds"] for h in run["history"])
        cost = costs.get(run["loss"])
        row = {"run": run["name"], "loss": run["loss"], "epochs": len(run["history"]),
               "best_epoch": run["best_epoch"], "best_val_ndcg": run["best_val"],
               "stopped_early": run["stopped_early"], "test_ndcg": run["test"],
               "recorded_hours": recorded / 3600,
               "idle_epoch_seconds": cost}
        for fraction in FRACTIONS:
            epoch = epochs_to_reach(run["history"], fraction * best)
            row[f"epochs_to_{fraction:g}"] = epoch
            row[f"idle_minutes_to_{fraction:g}"] = (
                None if epoch is None or cost is None else epoch * cost / 60)
        rows.append(row)

    def cell(value: Any, digits: int = 1) -> str:
        if value is None:
            return "—"
        return f"{value:.{digits}f}" if isinstance(value, float) else str(value)

    print(f"fractions of the best validation NDCG@10 among these runs ({best:.4f}); idle "
          f"minutes at {args.threads} thread(s)")
    head = ["run", "loss", "epochs", "best epoch", "best val NDCG", "stopped early",
            "test NDCG@10", "hours recorded"]
    head += [f"epochs (idle min) to {f:g}" for f in FRACTIONS]
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    for row in rows:
        test = row["test_ndcg"]
        cells = [row["run"], row["loss"], str(row["epochs"]), str(row["best_epoch"]),
                 f"{row['best_val_ndcg']:.4f}", str(row["stopped_early"]),
                 "—" if test is None else f"{test['mean']:.4f} ± {test['se']:.4f}",
                 f"{row['recorded_hours']:.2f}"]
        cells += [f"{cell(row[f'epochs_to_{f:g}'])} ({cell(row[f'idle_minutes_to_{f:g}'])})"
                  for f in FRACTIONS]
        print("| " + " | ".join(cells) + " |")
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

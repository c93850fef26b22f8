"""The whole pipeline on synthetic worlds of growing size: cost per stage and alignment against
the planted truth.

For every size, each stage runs as its own ``mechrec`` command under ``/usr/bin/time``, so
its wall time and peak RSS are that stage's alone:

1. ``data synth`` (the world), 2. ``data stats --split paper`` (load + split),
3. ``train`` (GPTRec, full cross-entropy, ``--epochs``; seconds per epoch from its history),
4. ``train --loss sampled --epochs 1`` (one epoch of sampled cross-entropy, timing only),
5. ``sae train`` (the paper's SAE: 2048 features, L1 0.1, ``--sae-steps`` x 1024 rows),
6. ``align tables`` (catalog genres and decades, 200 bootstrap resamples),
7. ``align tables --planted genre`` (the genre each event's taste chose),
8. ``steer sweep`` (two genres x three values, replace mode).

Every stage's record goes to ``OUT/results.jsonl`` as it finishes (a rerun skips finished
stages); ``--summary`` prints the cost table with growth exponents (slope of log time on log
events between the smallest and largest size) and the alignment table.

Run (2 cores; threads pinned by OMP_NUM_THREADS; an ml-1m-size world takes most of an hour):
    OMP_NUM_THREADS=1 python benchmarks/bench_world_sizes.py --out runs/worlds \
        --size ml-100k --size ml-1m:3000 --size ml-1m
    python benchmarks/bench_world_sizes.py --out runs/worlds --summary
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

SAE_NAME = "paper"
STEER = ["--genres", "Horror,Sci-Fi", "--values=-3:3:3", "--mode", "replace"]


def _mechrec(*args: str) -> list[str]:
    return [sys.executable, "-m", "mechrec_recsys.cli.main", *args]


def run_stage(stage: str, size: str, command: list[str], log: Path) -> dict:
    """Run ``command`` under ``/usr/bin/time``; return wall seconds and peak RSS (MiB)."""
    timing = log.with_suffix(".time")
    began = time.perf_counter()
    with log.open("w") as out:
        code = subprocess.call(["/usr/bin/time", "-f", "%e %M", "-o", str(timing), *command],
                               stdout=out, stderr=subprocess.STDOUT)
    if code != 0:
        raise SystemExit(f"{stage} ({size}) failed with exit code {code}; see {log}")
    wall, kib = timing.read_text().split()[-2:]
    return {"size": size, "stage": stage, "wall_s": float(wall), "peak_mib": int(kib) / 1024,
            "elapsed_s": time.perf_counter() - began}


def _size_args(size: str) -> tuple[str, list[str]]:
    """``ml-1m:3000`` -> the ml-1m preset with 3,000 users."""
    preset, _, users = size.partition(":")
    return preset, (["--users", users] if users else [])


def stages(size: str, root: Path, epochs: int, sae_steps: int, loss: str = "full",
           memory_budget: float | None = None,
           max_users: int | None = None) -> list[tuple[str, list[str]]]:
    """The commands of one size, in order (``loss``: of the main training run;
    ``memory_budget``: MB of activations ``sae train`` may hold, the rest spills to disk)."""
    world, run = root / f"world-{size}", root / f"run-{size}"
    preset, extra = _size_args(size)
    sae = run / "saes" / SAE_NAME
    budget = [] if memory_budget is None else ["--memory-budget", str(memory_budget)]
    sample = [] if max_users is None else ["--max-users", str(max_users)]
    return [
        ("synth", _mechrec("data", "synth", "--size", preset, *extra, "--seed", "0",
                           "--out", str(world), "--overwrite")),
        ("load_split", _mechrec("data", "stats", str(world), "--split", "paper")),
        (f"train_{loss}", _mechrec("train", str(world), "--split", "paper", "--out", str(run),
                                   "--epochs", str(epochs), "--loss", loss, "--no-progress")),
        ("train_sampled_1_epoch", _mechrec("train", str(world), "--split", "paper", "--out",
                                           str(root / f"run-{size}-sampled"), "--epochs", "1",
                                           "--loss", "sampled", "--no-resume",
                                           "--no-progress")),
        ("sae_train", _mechrec("sae", "train", str(run), "--architecture", "standard",
                               "--d-sae", "2048", "--l1", "0.1", "--steps", str(sae_steps),
                               "--batch-size", "1024", "--name", SAE_NAME, "--overwrite",
                               *budget, "--no-progress")),
        ("align_catalog", _mechrec("align", "tables", str(run), SAE_NAME, "--bootstrap", "200",
                                   *sample, "--out", str(sae / "alignment"))),
        ("align_planted", _mechrec("align", "tables", str(run), SAE_NAME, "--planted", "genre",
                                   "--bootstrap", "200", *sample, "--out",
                                   str(sae / "alignment-planted"))),
        ("steer_sweep", _mechrec("steer", "sweep", str(run), SAE_NAME, *STEER, *sample,
                                 "--no-progress")),
    ]


def _done(results: Path) -> set[tuple[str, str]]:
    if not results.is_file():
        return set()
    return {(r["size"], r["stage"]) for r in map(json.loads, results.read_text().splitlines())}


def run_sizes(sizes: list[str], root: Path, epochs: int, sae_steps: int, *, loss: str = "full",
              memory_budget: float | None = None, skip: tuple[str, ...] = (),
              max_users: int | None = None) -> None:
    """Run every stage of every size not yet in ``root/results.jsonl`` (but ``skip``)."""
    root.mkdir(parents=True, exist_ok=True)
    results = root / "results.jsonl"
    for size in sizes:
        for stage, command in stages(size, root, epochs, sae_steps, loss, memory_budget,
                                     max_users):
            if (size, stage) in _done(results) or stage in skip:
                continue
            record = run_stage(stage, size, command, root / f"{size}.{stage}.log")
            record.update(_extra(stage, root / f"run-{size}", root / f"run-{size}-sampled"))
            record["threads"] = os.environ.get("OMP_NUM_THREADS", "default")
            with results.open("a") as out:
                out.write(json.dumps(record) + "\n")
            print(json.dumps(record), flush=True)


def _extra(stage: str, run: Path, sampled: Path) -> dict:
    """Per-stage details read from what the stage wrote (epoch times, rows, events)."""
    if stage in ("train_full", "train_sampled", "train_sampled_1_epoch"):
        metrics = json.loads(((run if stage != "train_sampled_1_epoch" else sampled)
                              / "metrics.json").read_text())
        seconds = [h["seconds"] for h in metrics["history"]]
        gptrec = metrics["comparison"]["reports"]["GPTRec"]["metrics"]
        return {"epochs": len(seconds), "epoch_s_median": float(pd.Series(seconds).median()),
                "best_epoch": metrics["best_epoch"], "test_ndcg": gptrec["ndcg"]["mean"],
                "users": metrics["split"]["users_total"]}
    if stage == "sae_train":
        info = json.loads((run / "saes" / SAE_NAME / "mechrec.json").read_text())
        return {"l0": info["test_metrics"]["l0"],
                "explained_variance": info["test_metrics"]["explained_variance"]}
    return {}


def _alignment(root: Path, size: str, folder: str) -> dict:
    """Honest mean best-feature correlation per source over the genres (catalog genres, or
    the planted genre), and the paired bootstrap differences with their intervals."""
    path = root / f"run-{size}" / "saes" / SAE_NAME / folder
    group = "planted genre" if folder.endswith("planted") else "genre"
    summary = pd.read_csv(path / "summary.csv")
    honest = summary[(summary["selection"] == "honest") & (summary["group"] == group)]
    out: dict = {"size": size, "labels": group}
    for _, row in honest.iterrows():
        out[str(row["features"])] = round(float(row["correlation_mean"]), 3)
    differences = pd.read_csv(path / "bootstrap_differences.csv")
    mean = differences[(differences["group"] == group) & (differences["attribute"] == "(mean)")
                       & (differences["metric"] == "correlation")]
    for _, row in mean.iterrows():
        out[f"{row['features']} - {row['versus']}"] = (
            f"{row['estimate']:+.3f} [{row['lower']:+.3f}, {row['upper']:+.3f}]")
    return out


def catalog_ceiling(run: Path) -> float:
    """Mean over planted genres of the correlation between an event's planted genre and its
    item's catalog label of that genre, on the test users' positions: what a feature that
    knew the input item's genres exactly, and nothing more, would score against the truth."""
    import numpy as np
    from mechrec_recsys.experiment import Experiment
    from mechrec_recsys.synthetic.planted import PlantedTruth

    from mechrec.alignment import token_attributes

    experiment = Experiment.open(run)
    acts = experiment.activations("test", "blocks.0.hook_resid_post")
    planted = PlantedTruth(experiment).labels("test", acts, ("genre",))
    catalog = token_attributes(acts.token, experiment.attribute_table()[0])
    values = [np.corrcoef(planted[g].to_numpy(), catalog[g].to_numpy())[0, 1]
              for g in planted.columns if g in catalog.columns and planted[g].any()]
    return float(np.mean(values))


def _exponent(values: pd.Series, events: dict[str, int]) -> float:
    """Slope of log(value) on log(events) over the sizes that have a value (NaN if < 2)."""
    have = values.dropna()
    if len(have) < 2:
        return float("nan")
    x = [math.log(events[size]) for size in have.index]
    y = [math.log(v) for v in have.to_numpy()]
    mx, my = sum(x) / len(x), sum(y) / len(y)
    return sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True)) / sum(
        (a - mx) ** 2 for a in x)


def summary(root: Path) -> None:
    """Print the cost table (with growth exponents) and the alignment table."""
    records = pd.DataFrame(map(json.loads, (root / "results.jsonl").read_text().splitlines()))
    events = {}
    for size in records["size"].unique():
        info = json.loads((root / f"world-{size}" / "world.json").read_text())
        events[size] = int(info["counts"]["events"])
    records["events"] = records["size"].map(events)
    cost = records.pivot_table(index="stage", columns="size", values="wall_s", sort=False)
    memory = records.pivot_table(index="stage", columns="size", values="peak_mib", sort=False)
    sizes = sorted(events, key=events.get)
    cost = cost.reindex(columns=sizes)
    memory = memory.reindex(columns=sizes)
    cost["exponent"] = [_exponent(cost.loc[stage, sizes], events) for stage in cost.index]
    memory["exponent"] = [_exponent(memory.loc[stage, sizes], events) for stage in memory.index]
    print("events:", {s: f"{events[s]:,}" for s in sizes})
    print("wall seconds per stage (exponent: least-squares slope of log time on log events)\n",
          cost.round(2).to_string())
    print("peak RSS (MiB) per stage\n", memory.round(2).to_string())
    train = records[records["stage"].str.startswith("train_")]
    print(train[["size", "stage", "epochs", "epoch_s_median", "best_epoch", "test_ndcg"]]
          .round(4).to_string(index=False))
    rows = [_alignment(root, s, f) for s in sizes for f in ("alignment", "alignment-planted")
            if (root / f"run-{s}" / "saes" / SAE_NAME / f / "summary.csv").is_file()]
    print(pd.DataFrame(rows).to_string(index=False))
    for size in sizes:
        if (root / f"run-{size}" / "saes" / SAE_NAME / "alignment-planted").is_dir():
            print(f"{size}: catalog-label ceiling against the planted genre "
                  f"{catalog_ceiling(root / f'run-{size}'):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for worlds and runs")
    parser.add_argument("--size", action="append", default=[],
                        help="ml-100k, ml-1m, ml-20m, or PRESET:USERS (repeatable)")
    parser.add_argument("--epochs", type=int, default=15, help="GPTRec epochs (full CE)")
    parser.add_argument("--sae-steps", type=int, default=3000, help="SAE steps of 1024 rows")
    parser.add_argument("--loss", default="full", help="loss of the main training run: full "
                        "| sampled")
    parser.add_argument("--memory-budget", type=float, default=None,
                        help="MB of activations sae train may hold (the rest spills to disk)")
    parser.add_argument("--skip", default="", help="comma-separated stages to leave out")
    parser.add_argument("--max-users", type=int, default=None,
                        help="align and steer on at most this many users of each part")
    parser.add_argument("--summary", action="store_true", help="print the tables and stop")
    args = parser.parse_args()
    if args.summary:
        summary(args.out)
        return
    run_sizes(args.size or ["ml-100k"], args.out, args.epochs, args.sae_steps, loss=args.loss,
              memory_budget=args.memory_budget,
              skip=tuple(s for s in args.skip.split(",") if s), max_users=args.max_users)


if __name__ == "__main__":
    main()

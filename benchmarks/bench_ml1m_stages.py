"""The ml-1m pipeline's stages on a trained run, each against the alternative a user would pick.

On a ``mechrec train`` run of ml-1m (default ``runs/ml1m-s0``), in one process, one torch
thread by default, with the repeats interleaved (every case of repeat 1, then every case of
repeat 2, ...) so that load drift on a shared machine hits all sides alike:

1. **Activation collection** at the paper hook (``blocks.0.hook_resid_post``) over the SAE
   users' sequences: ``collect_activations`` (what ``Experiment.activations`` runs; the
   forward pass stops after the hook's block) vs ``run_with_cache`` on the full model + the
   real positions picked with the mask, on the same prebuilt batches. Both must give the same
   rows (allclose) before anything is timed. If one pass over all SAE users takes more than
   a minute, a fixed sample of ``--subset-users`` users is timed instead.
2. **SAE training** on the SAE users' activations (normalised per dimension): the paper SAE
   (standard, dictionary 2048, L1 0.1, batch 1024) and TopK (k 32), ``--steps`` steps each,
   ``train_sae(engine="fast")`` (the default) vs ``engine="sae-lens"`` (``SAETrainer.step``),
   beside the plain-PyTorch loop of ``bench_saes.py`` (same weights, batches, loss and
   optimiser). No learning-rate warm-up, so the three compute the same thing. Before timing,
   one untimed run of each engine logs the loss every 10 steps: the curves must agree to
   float tolerance (``LOSS_RTOL``) until, possibly, a top-k choice between two activations
   equal within rounding flips (TopK; see docs/performance.md, "Same results"), after which
   they agree statistically, not bitwise; the step where they part is reported.
3. **Steering**: seconds per steering value on the test users for one genre's SAE feature
   (the ``replace`` edit at the last position): the fast last-position path (prefix once,
   re-run the last position; all 21 values -10..10, its prefix pass included) vs a full
   forward pass per value (3 of the values), via ``compare_fast_naive``, the check
   ``mechrec steer sweep --compare-naive`` runs.

Writes a JSON file (``--out``) and prints a Markdown table.

Run (from the repository root):
    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/bench_ml1m_stages.py --run runs/ml1m-s0
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from _bench_common import markdown, plain_pytorch_loop, run_with_cache_rows
from mechrec_recsys.configs import PAPER_HOOK

from mechrec.activations import collect_activations, fit_normalizer
from mechrec.saes import SAETrainingConfig, train_sae
from mechrec.sweep import feature_target

REPO = Path(__file__).resolve().parents[1]
TRAIN_COMMAND = "mechrec train ml-1m-ordered --split paper --out runs/ml1m-s0"
#: Relative tolerance between the two SAE engines' logged losses (float rounding only).
LOSS_RTOL = 1e-4


def check_run(run_dir: Path) -> None:
    """Exit with one line naming the command that makes the run when it is not there."""
    if not (run_dir / "run.json").is_file() or not (run_dir / "model").is_dir():
        sys.exit(f"error: no trained ml-1m run at {run_dir}: make it with '{TRAIN_COMMAND}' "
                 "(or pass --run DIR)")


def load() -> float:
    """The 1-minute load average."""
    return os.getloadavg()[0]


# --------------------------------------------------------------------------------------
# 1. activation collection


def collection_case(experiment, subset_users: int, time_limit_s: float) -> dict:
    """Prebuilt batches of the SAE users (or a fixed sample) and the allclose check."""
    part = experiment.part("sae_train")
    batches = list(experiment.batches("sae_train"))
    with torch.no_grad():
        start = time.perf_counter()
        ours = collect_activations(experiment.model, batches, PAPER_HOOK).activations
        first_pass = time.perf_counter() - start
    users = len(part)
    if first_pass > time_limit_s and users > subset_users:
        print(f"  one collection pass over {users} SAE users took {first_pass:.0f} s > "
              f"{time_limit_s:.0f} s: timing a fixed sample of {subset_users}", file=sys.stderr)
        sample = experiment.sample_users(subset_users, parts=("sae_train",), seed=0)
        batches = list(sample.batches("sae_train"))
        users = subset_users
        with torch.no_grad():
            ours = collect_activations(experiment.model, batches, PAPER_HOOK).activations
    theirs = run_with_cache_rows(experiment.model, batches, PAPER_HOOK)
    if ours.shape != theirs.shape or not torch.allclose(ours, theirs, rtol=1e-5, atol=1e-5):
        raise AssertionError(
            f"collect_activations and run_with_cache disagree: shapes {tuple(ours.shape)} vs "
            f"{tuple(theirs.shape)}")
    return {
        "users": users,
        "of_users": len(part),
        "rows": int(ours.shape[0]),
        "batches": batches,
        "max_abs_diff": float((ours - theirs).abs().max()),
        "first_pass_s": first_pass,
    }


def time_collection(model, batches) -> tuple[float, float]:
    """Rows/s of ``collect_activations`` and of ``run_with_cache`` + mask, one after the other."""
    with torch.no_grad():
        start = time.perf_counter()
        n = len(collect_activations(model, batches, PAPER_HOOK))
        ours = n / (time.perf_counter() - start)
    start = time.perf_counter()
    n = len(run_with_cache_rows(model, batches, PAPER_HOOK))
    return ours, n / (time.perf_counter() - start)


# --------------------------------------------------------------------------------------
# 2. SAE training


def sae_configs(steps: int) -> dict[str, SAETrainingConfig]:
    """The paper SAE and TopK k=32, ``steps`` steps, no warm-up."""
    paper = SAETrainingConfig(steps=steps, lr_warm_up_steps=0)
    return {
        "standard, 2048, L1 0.1": paper,
        "topk, 2048, k 32": paper.with_overrides(architecture="topk", k=32),
    }


def loss_curves(cfg: SAETrainingConfig, acts, normalizer, every: int = 10) -> dict:
    """Untimed check: both engines' losses every ``every`` steps, and where they part."""
    fast = train_sae(acts, cfg, normalizer=normalizer, log_every=every)
    ref = train_sae(acts, cfg, normalizer=normalizer, log_every=every, engine="sae-lens")
    steps = [int(h["step"]) for h in ref.history]
    a = [h["loss"] for h in fast.history]
    b = [h["loss"] for h in ref.history]
    rel = [abs(x - y) / abs(y) for x, y in zip(a, b, strict=True)]
    parted = [step for step, r in zip(steps, rel, strict=True) if r > LOSS_RTOL]
    return {
        "every": every,
        "steps": steps,
        "fast": a,
        "sae-lens": b,
        "relative_difference": rel,
        "final_relative_difference": rel[-1],
        "first_step_beyond_tolerance": parted[0] if parted else None,
        "agree": not parted,
    }


def time_sae(cfg: SAETrainingConfig, acts, normalizer) -> dict[str, float]:
    """Rows/s and last loss of the plain loop, the fast engine and sae-lens' step."""
    plain, plain_loss = plain_pytorch_loop(cfg, acts, normalizer, PAPER_HOOK)
    fast = train_sae(acts, cfg, normalizer=normalizer, log_every=cfg.steps)
    ref = train_sae(acts, cfg, normalizer=normalizer, log_every=cfg.steps, engine="sae-lens")
    return {
        "plain": plain,
        "fast": fast.rows_per_second,
        "sae-lens": ref.rows_per_second,
        "plain loss": plain_loss,
        "fast loss": fast.history[-1]["loss"],
        "sae-lens loss": ref.history[-1]["loss"],
    }


# --------------------------------------------------------------------------------------
# 3. steering


def steering_target(experiment, sae, sae_name: str, genre: str):
    """The genre's SAE feature: the one the run's steering sweep chose, else chosen here."""
    import pandas as pd
    from mechrec_recsys.steering import resolve_genres, select_genre_features

    chosen = experiment.run_dir / "steering" / sae_name / "features.csv"
    features = pd.read_csv(chosen) if chosen.is_file() else None
    if features is None or genre not in set(features["genre"]):
        genres = resolve_genres([genre], experiment.genre_names)
        features = select_genre_features(experiment, sae, genres)
        chosen = "select_genre_features on the SAE users"
    row = features[features["genre"] == genre].iloc[0]
    feature = int(row["feature"])
    return feature_target(sae, feature, name=f"sae:{genre}"), feature, str(chosen)


# --------------------------------------------------------------------------------------


def median(runs: Sequence[dict], key: str) -> float:
    """Median of ``key`` over the repeats."""
    return statistics.median(r[key] for r in runs)


def main(argv: Sequence[str] | None = None) -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=REPO / "runs" / "ml1m-s0",
                        help="trained ml-1m run folder (default: runs/ml1m-s0)")
    parser.add_argument("--sae", default="paper", help="SAE name under RUN/saes, or a folder")
    parser.add_argument("--genre", default="Action", help="genre whose feature is steered")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=200,
                        help="SAE training steps per case (batch 1024)")
    parser.add_argument("--subset-users", type=int, default=500,
                        help="users timed when one pass over all SAE users exceeds a minute")
    parser.add_argument("--naive-values", type=int, default=3,
                        help="steering values run as full forward passes (of 21)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" /
                        "ml1m_stages.json")
    args = parser.parse_args(argv)
    check_run(args.run)

    from mechrec_recsys.experiment import Experiment
    from mechrec_recsys.steering import PAPER_VALUES, compare_fast_naive

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    loads = {"start": load()}
    experiment = Experiment.open(args.run)
    model = experiment.model

    print("checking collect_activations against run_with_cache ...", file=sys.stderr)
    case = collection_case(experiment, args.subset_users, time_limit_s=60.0)
    batches = case.pop("batches")
    sae_acts = experiment.activations("sae_train", PAPER_HOOK)
    normalizer = fit_normalizer(sae_acts)
    configs = sae_configs(args.steps)
    print("checking the SAE engines' loss curves against each other ...", file=sys.stderr)
    curves = {name: loss_curves(cfg, sae_acts, normalizer) for name, cfg in configs.items()}
    for name, c in curves.items():
        print(f"  {name}: final rel. diff {c['final_relative_difference']:.1e}, beyond "
              f"{LOSS_RTOL} from step {c['first_step_beyond_tolerance']}", file=sys.stderr)
    sae = experiment.sae(args.sae)
    target, feature, chosen_by = steering_target(experiment, sae, Path(args.sae).name, args.genre)
    step = max(1, (len(PAPER_VALUES) - 1) // max(1, args.naive_values - 1))
    naive_values = PAPER_VALUES[::step][: args.naive_values]

    collection: list[dict] = []
    saes: dict[str, list[dict]] = {name: [] for name in configs}
    steering: list[dict] = []
    for repeat in range(args.repeats):
        ours, theirs = time_collection(model, batches)
        collection.append({"collect_activations": ours, "run_with_cache": theirs,
                           "ratio": ours / theirs})
        print(f"  repeat {repeat + 1} collection: {collection[-1]}", file=sys.stderr)
        for name, cfg in configs.items():
            r = time_sae(cfg, sae_acts, normalizer)
            r["ratio"] = r["fast"] / r["sae-lens"]
            r["plain ratio"] = r["fast"] / r["plain"]
            saes[name].append(r)
            print(f"  repeat {repeat + 1} {name}: {r}", file=sys.stderr)
        s = compare_fast_naive(experiment, target, PAPER_VALUES, naive_values=naive_values)
        steering.append(s)
        print(f"  repeat {repeat + 1} steering: fast {s['fast_seconds_per_value']:.3f} s/value, "
              f"naive {s['naive_seconds_per_value']:.3f} s/value", file=sys.stderr)
        loads[f"after repeat {repeat + 1}"] = load()

    losses = {}
    for name, runs in saes.items():
        last = runs[-1]
        rel = abs(last["fast loss"] - last["sae-lens loss"]) / abs(last["sae-lens loss"])
        losses[name] = {"fast": last["fast loss"], "sae-lens": last["sae-lens loss"],
                        "plain": last["plain loss"], "relative_difference": rel}
    result = {
        "date": datetime.date.today().isoformat(),
        "run": str(args.run),
        "dataset": experiment.spec.dataset,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "repeats": args.repeats,
        "load_average_1min": loads,
        "wall_seconds": None,
        "activation_collection": {
            "hook": PAPER_HOOK, **case,
            "rows_per_second": {k: median(collection, k) for k in collection[0]},
            "repeats": collection,
        },
        "sae_training": {
            "steps": args.steps, "batch_size": 1024, "rows": len(sae_acts),
            "configs": {name: cfg.to_dict(tracking=False) for name, cfg in configs.items()},
            "median": {name: {k: median(runs, k) for k in runs[0]} for name, runs in saes.items()},
            "last_losses": losses,
            "loss_rtol": LOSS_RTOL,
            "loss_curves": curves,
            "repeats": saes,
        },
        "steering": {
            "sae": args.sae, "genre": args.genre, "feature": feature, "chosen_by": chosen_by,
            "users": steering[0]["n_users"], "batch_size": steering[0]["batch_size"],
            "values": list(PAPER_VALUES), "naive_values": list(naive_values),
            "fast_seconds_per_value": median(steering, "fast_seconds_per_value"),
            "naive_seconds_per_value": median(steering, "naive_seconds_per_value"),
            "speedup": median(steering, "speedup"),
            "max_abs_logit_diff": max(s["max_abs_logit_diff"] for s in steering),
            "same_top_k": all(s["same_top_k"] for s in steering),
            "repeats": steering,
        },
    }
    result["wall_seconds"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")

    col = result["activation_collection"]
    rows = [{
        "stage": f"activation collection, {PAPER_HOOK}, {col['users']:,} SAE users "
                 f"({col['rows']:,} rows)",
        "mechrec": "`collect_activations`",
        "alternative": "`run_with_cache` + mask",
        "mechrec value": f"{col['rows_per_second']['collect_activations']:,.0f} rows/s",
        "alternative value": f"{col['rows_per_second']['run_with_cache']:,.0f} rows/s",
        "speed ratio": f"{col['rows_per_second']['ratio']:.2f}x",
        "check": f"same rows, max abs diff {col['max_abs_diff']:.1e}",
    }]
    for name, m in result["sae_training"]["median"].items():
        loss = losses[name]
        parted = curves[name]["first_step_beyond_tolerance"]
        agreement = (f"curves within {LOSS_RTOL:.0e} rel. for all {args.steps} steps"
                     if parted is None else
                     f"curves within {LOSS_RTOL:.0e} rel. until step {parted}, then apart")
        rows.append({
            "stage": f"SAE training, {name}, {args.steps} x 1,024 rows",
            "mechrec": '`engine="fast"`',
            "alternative": '`engine="sae-lens"`',
            "mechrec value": f"{m['fast']:,.0f} rows/s",
            "alternative value": f"{m['sae-lens']:,.0f} rows/s",
            "speed ratio": f"{m['ratio']:.2f}x",
            "check": f"last loss {loss['fast']:.5f} vs {loss['sae-lens']:.5f} "
                     f"(rel. diff {loss['relative_difference']:.1e}); {agreement}",
        })
        rows.append({
            "stage": "",
            "mechrec": '`engine="fast"`',
            "alternative": "plain PyTorch loop",
            "mechrec value": f"{m['fast']:,.0f} rows/s",
            "alternative value": f"{m['plain']:,.0f} rows/s",
            "speed ratio": f"{m['plain ratio']:.2f}x",
            "check": f"plain last loss {loss['plain']:.5f}",
        })
    st = result["steering"]
    rows.append({
        "stage": f"steering, {args.genre} feature {feature} (replace), {st['users']} test "
                 "users",
        "mechrec": f"fast last position ({len(PAPER_VALUES)} values)",
        "alternative": f"full forward ({len(naive_values)} values)",
        "mechrec value": f"{st['fast_seconds_per_value']:.3f} s/value",
        "alternative value": f"{st['naive_seconds_per_value']:.3f} s/value",
        "speed ratio": f"{st['speedup']:.1f}x",
        "check": f"max abs logit diff {st['max_abs_logit_diff']:.1e}, same top-10: "
                 f"{st['same_top_k']}",
    })
    print(
        f"{result['dataset']} run {args.run}; torch threads {result['torch_threads']}, "
        f"{result['cpu_count']} CPU cores; medians of {args.repeats} interleaved repeats; "
        f"1-minute load average {min(loads.values()):.1f}-{max(loads.values()):.1f}; "
        f"{result['wall_seconds']:.0f} s in all\n"
    )
    print(markdown(rows, list(rows[0])))
    print(f"\nwritten to {args.out}")
    for name, c in curves.items():
        if not c["agree"]:
            print(f"note: {name}: the engines' losses part beyond {LOSS_RTOL} relative from "
                  f"step {c['first_step_beyond_tolerance']} (final rel. diff "
                  f"{c['final_relative_difference']:.1e})", file=sys.stderr)


if __name__ == "__main__":
    main()

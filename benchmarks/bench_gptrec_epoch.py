"""One GPTRec epoch on ml-1m (paper split): full vs sampled cross-entropy, 1 vs 2 threads,
with and without a competing CPU-bound process.

Each configuration runs in a fresh process (threads set before torch does any work) and
trains the paper-size model (3 layers, d_model 64, max_len 200, batch 128) for ``--epochs``
epochs through ``train_and_evaluate``, so an epoch's seconds are what ``mechrec train``
reports: the training steps plus the validation NDCG. "Loaded" runs start a competing
process first (a one-thread matrix-multiply loop, standing in for another job on the
machine) and stop it after. Configurations run in interleaved rounds so slow phases of the
machine hit all alike.

Run (needs $MECHREC_DATA with ml-1m-ordered; about 10 minutes on 2 cores):
    python benchmarks/bench_gptrec_epoch.py [--rounds 1] [--epochs 1] [--json OUT]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import time

_CHILD = """
import json, sys, time
import torch
threads, loss, epochs, name = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
torch.set_num_threads(threads)
from mechrec_recsys.configs import GPTRecConfig, TrainConfig
from mechrec_recsys.data import load_dataset
from mechrec_recsys.data.splits import make_split
from mechrec_recsys.experiment import FULL_HISTORY
from mechrec_recsys.training import train_and_evaluate
split = make_split(load_dataset(name), "paper", seed=0, max_len=FULL_HISTORY)
began = time.perf_counter()
run = train_and_evaluate(split, model_config=GPTRecConfig(init_seed=0),
                         train_config=TrainConfig(epochs=epochs, loss=loss, seed=0,
                                                  progress=False))
print(json.dumps({"seconds": [h["seconds"] for h in run.result.history],
                  "val_ndcg": [h["val_ndcg"] for h in run.result.history],
                  "total_s": time.perf_counter() - began}))
"""

_LOAD = ("import torch; torch.set_num_threads(1); a = torch.randn(512, 512)\n"
         "while True: a = torch.tanh(a @ a)")


def run_config(threads: int, loss: str, loaded: bool, epochs: int,
               dataset: str = "ml-1m-ordered") -> dict:
    """One configuration in a fresh process; returns its epoch seconds."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    competitor = subprocess.Popen([sys.executable, "-c", _LOAD]) if loaded else None
    try:
        time.sleep(1.0 if loaded else 0.0)
        result = subprocess.run([sys.executable, "-c", _CHILD, str(threads), loss, str(epochs),
                                 dataset],
                                check=True, capture_output=True, text=True, env=env)
    finally:
        if competitor is not None:
            competitor.kill()
            competitor.wait()
    out = json.loads(result.stdout.strip().splitlines()[-1])
    return {"threads": threads, "loss": loss, "loaded": loaded, **out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--json", default=None, help="also write every run here")
    parser.add_argument("--dataset", default="ml-1m-ordered", help="e.g. ml-100k for a smoke run")
    args = parser.parse_args()
    configs = list(itertools.product((1, 2), ("full", "sampled"), (False, True)))
    runs = []
    for _ in range(args.rounds):
        for threads, loss, loaded in configs:
            record = run_config(threads, loss, loaded, args.epochs, args.dataset)
            runs.append(record)
            print(json.dumps(record), flush=True)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(runs, out, indent=1)
    base = statistics.median(r["seconds"][0] for r in runs
                             if (r["threads"], r["loss"], r["loaded"]) == (1, "full", False))
    print(f"\n{'threads':>7} {'loss':>8} {'machine':>8} {'epoch s':>8} "
          f"{'vs 1 thread full idle':>22}")
    for threads, loss, loaded in configs:
        key = (threads, loss, loaded)
        mine = [s for r in runs if (r["threads"], r["loss"], r["loaded"]) == key
                for s in r["seconds"]]
        epoch = statistics.median(mine)
        print(f"{threads:>7} {loss:>8} {'loaded' if loaded else 'idle':>8} {epoch:>8.1f} "
              f"{base / epoch:>21.2f}x")


if __name__ == "__main__":
    main()

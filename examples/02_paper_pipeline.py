"""The paper's pipeline in Python: GPTRec -> SAE -> genre alignment -> steering.

Usage::

    python examples/02_paper_pipeline.py                 # ml-100k from $MECHREC_DATA/cache
    python examples/02_paper_pipeline.py --out runs/demo # keep the run folder

Steps (each one is also a CLI command: ``mechrec train``, ``mechrec sae train``,
``mechrec align tables``, ``mechrec steer sweep``):

1. train GPTRec on the paper's split of MovieLens 100K (a ``HookedTransformer``);
2. train a standard (L1) SAE on the SAE users' activations at ``blocks.0.hook_resid_post``;
3. find each genre's best SAE feature on the SAE users and score it on the test users,
   beside the raw neurons and a random-projection control;
4. steer the Sci-Fi feature at the last position and watch the Sci-Fi share of the top-10.

With ``MECHREC_EXAMPLE_QUICK=1`` every step runs at toy size (seconds, not minutes).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from mechrec_recsys.alignment import align
from mechrec_recsys.data import load_dataset
from mechrec_recsys.data.splits import make_split
from mechrec_recsys.experiment import FULL_HISTORY, Experiment, RunSpec
from mechrec_recsys.model import GPTRecConfig
from mechrec_recsys.saes import train_run_sae
from mechrec_recsys.steering import run_genre_sweep
from mechrec_recsys.training import TrainConfig, train_and_evaluate

from mechrec.saes import SAETrainingConfig

QUICK = os.environ.get("MECHREC_EXAMPLE_QUICK") == "1"
HOOK = "blocks.0.hook_resid_post"


def main(out: Path, data_dir: str | None) -> None:
    """Run the four steps into the run folder ``out`` and print what each one found."""
    spec = RunSpec(dataset="ml-100k", split="paper", seed=0)
    dataset = load_dataset(spec.dataset, data_dir)
    split = make_split(dataset, spec.split, seed=spec.seed, max_len=FULL_HISTORY)

    # 1. GPTRec (the paper: 3 layers, 2 heads, hidden 64)
    model_config = (GPTRecConfig(n_layers=2, d_model=32, d_mlp=64, max_len=50)
                    if QUICK else GPTRecConfig())
    train_config = TrainConfig(epochs=3 if QUICK else 200, patience=20, lr=3e-3 if QUICK
                               else 1e-3, progress=not QUICK)
    run = train_and_evaluate(split, model_config=model_config, train_config=train_config,
                             out_dir=out, resume=False, log=lambda message: None)
    spec.save(out)
    for name, report in run.comparison.reports.items():
        print(f"{name:>10}: NDCG@10 {report.metrics['ndcg']}  HR@10 "
              f"{report.metrics['hit_rate']}")

    # 2. SAE on the SAE users' activations (the paper: 2048 features, L1 0.1)
    experiment = Experiment.open(out, data_dir=data_dir)
    sae_config = SAETrainingConfig(architecture="standard", d_sae=256 if QUICK else 2048,
                                   l1_coefficient=0.1, steps=300 if QUICK else 3000)
    trained = train_run_sae(experiment, sae_config, hook=HOOK, run_dir=out, name="demo")
    metrics = trained.test_metrics
    print(f"SAE: explained variance {metrics.explained_variance:.3f}, "
          f"L0 {metrics.l0:.1f}, dead {metrics.dead_fraction:.1%}")

    # 3. Alignment: selected on SAE users, scored on test users
    alignment = align(experiment, trained.sae, decades=False)
    table = alignment.per_attribute_table()
    print(table.head(8).to_string())
    print(alignment.summary().to_string())

    # 4. Steering the Sci-Fi feature (replace mode, the paper's)
    values = [-5.0, 0.0, 5.0] if QUICK else [float(v) for v in range(-10, 11)]
    sweep = run_genre_sweep(experiment, trained.sae, genres=["Sci-Fi"], values=values,
                            modes=["replace"], probes=not QUICK)
    print(sweep.target_share_table().to_string())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", nargs="?", help="folder holding ml-100k/ (optional)")
    parser.add_argument("--out", type=Path, help="run folder to keep (default: temporary)")
    args = parser.parse_args()
    try:
        if args.out is not None:
            main(args.out, args.data_dir)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                main(Path(tmp) / "run", args.data_dir)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)

"""``mechrec train``: train GPTRec on a dataset split and print GPTRec vs popularity.

Example::

    mechrec train ml-100k --split loo --out runs/ml100k-loo
    torchrun --nproc_per_node 2 -m mechrec_recsys.cli.main train ml-100k --split loo --out r

The output folder receives the run state (resumable: run the same command again after an
interruption), the best model (``DIR/model``: safetensors + JSON config with the item
vocabulary) and ``DIR/metrics.json``. Bad input prints one line ``error: ...`` to stderr and
exits with code 2.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from mechrec_recsys.cli._common import (
    NOTHING_KEPT,
    DataDirOption,
    DeviceOption,
    DownloadOption,
    ProgressOption,
    fail,
    on_interrupt,
    rerun_command,
    wide_console,
)
from mechrec_recsys.configs import GPTRecConfig, TrainConfig

if TYPE_CHECKING:
    from mechrec_recsys.metrics import Comparison

SPLITS = ("paper", "loo")
METRIC_LABELS = (("ndcg", "NDCG"), ("hit_rate", "HR"), ("mrr", "MRR"), ("coverage", "Coverage"))


def comparison_table(comparison: Comparison, title: str) -> Table:
    """A rich table: one row per recommender plus the paired difference, mean ± SE cells."""
    table = Table(title=title)
    table.add_column("model", style="bold")
    for _, label in METRIC_LABELS:
        table.add_column(f"{label}@{comparison.k}", justify="right")
    for name, report in comparison.reports.items():
        table.add_row(name, *(str(report.metrics[key]) for key, _ in METRIC_LABELS))
    model_name = next(iter(comparison.reports))
    table.add_row(f"{model_name} − Popularity (paired)",
                  *(str(comparison.paired[key]) if key in comparison.paired else ""
                    for key, _ in METRIC_LABELS))
    return table


def train_command(
    name: str = typer.Argument(..., help="dataset name (e.g. ml-100k, ml-1m, ml-1m-ordered) "
                               "or a synthetic world's folder"),
    split: str = typer.Option(..., "--split", help="paper (time + user split) | loo"),
    out: Path = typer.Option(..., "--out", help="output folder (resumable run state, model)"),
    data_dir: DataDirOption = None,
    download: DownloadOption = True,
    epochs: int = typer.Option(TrainConfig.epochs, "--epochs", help="maximum epochs"),
    patience: int = typer.Option(
        TrainConfig.patience, "--patience",
        help="evaluations without a better validation NDCG tolerated before stopping"),
    batch_size: int = typer.Option(TrainConfig.batch_size, "--batch-size",
                                   help="training sequences per optimiser step"),
    lr: float = typer.Option(TrainConfig.lr, "--lr", help="Adam learning rate"),
    loss: str = typer.Option("full", "--loss", help="full | sampled"),
    negatives: int = typer.Option(1024, "--negatives", help="negatives for --loss sampled"),
    n_layers: int = typer.Option(GPTRecConfig.n_layers, "--n-layers",
                                 help="transformer blocks"),
    n_heads: int = typer.Option(GPTRecConfig.n_heads, "--n-heads",
                                help="attention heads per block"),
    d_model: int = typer.Option(GPTRecConfig.d_model, "--d-model",
                                help="width of the residual stream and item embeddings"),
    d_mlp: int = typer.Option(GPTRecConfig.d_mlp, "--d-mlp",
                              help="hidden width of each block's MLP"),
    max_len: int = typer.Option(GPTRecConfig.max_len, "--max-len",
                                help="items of history the model reads"),
    dropout: float = typer.Option(GPTRecConfig.dropout, "--dropout",
                                  help="dropout probability during training"),
    seed: int = typer.Option(0, "--seed", help="seed of the split, initialisation and training"),
    k: int = typer.Option(10, "--k", help="length of the recommendation lists"),
    eval_last: int = typer.Option(
        1, "--eval-last", help="score each test user's last N items (averaged per user) "
        "instead of only the last one: steadier metrics on the small test sets of the paper "
        "split (not for loo, whose test users are training users)"),
    include_seen: bool = typer.Option(False, "--include-seen",
                                      help="allow recommending items already in the history"),
    device: DeviceOption = "cpu",
    resume: bool = typer.Option(True, "--resume/--no-resume",
                                help="continue the run found in --out"),
    progress: ProgressOption = True,
) -> None:
    """Train GPTRec on a dataset split and print its metrics next to popularity's."""
    if eval_last < 1:
        fail(f"--eval-last must be at least 1, got {eval_last}")
    if split not in SPLITS:
        fail(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    with on_interrupt(lambda: _kept_state(out, epochs), rerun_command(drop=("--no-resume",))):
        from mechrec_recsys.data import load_dataset
        from mechrec_recsys.data.movielens import dataset_key
        from mechrec_recsys.data.splits import make_split
        from mechrec_recsys.experiment import FULL_HISTORY, RUN_SPEC_FILE, RunSpec
        from mechrec_recsys.training import train_and_evaluate

        model_config = GPTRecConfig(n_layers=n_layers, n_heads=n_heads, d_model=d_model,
                                    d_mlp=d_mlp, max_len=max_len, dropout=dropout,
                                    init_seed=seed)
        train_config = TrainConfig(epochs=epochs, patience=patience, batch_size=batch_size,
                                   lr=lr, loss=loss, num_negatives=negatives, seed=seed,
                                   eval_k=k, exclude_seen=not include_seen, progress=progress)
        if progress and int(os.environ.get("RANK", "0")) == 0:
            typer.echo(f"loading {name} and making the {split} split ...", err=True)
        dataset = load_dataset(name, data_dir, download=download)
        parts = make_split(dataset, split, seed=seed, max_len=FULL_HISTORY)
        spec = RunSpec(dataset=dataset_key(name), split=split, seed=seed)
        if resume and (out / RUN_SPEC_FILE).is_file() and RunSpec.load(out) != spec:
            raise ValueError(
                f"{out} holds a run of {RunSpec.load(out)}, not {spec}: use a new --out or "
                "--no-resume"
            )
        out.mkdir(parents=True, exist_ok=True)
        spec.save(out)
        run = train_and_evaluate(parts, model_config=model_config, train_config=train_config,
                                 out_dir=out, resume=resume, device=device, k=k,
                                 exclude_seen=not include_seen, targets_per_user=eval_last)
    if int(os.environ.get("RANK", "0")) != 0:
        return
    console = wide_console(120)
    info = parts.info
    targets = "" if eval_last == 1 else f" (last {eval_last} items each)"
    title = (f"{name}, {split} split: {info['test_users']} test users{targets}, "
             f"{info['train_users']} training users; best epoch {run.result.best_epoch}")
    console.print(comparison_table(run.comparison, title))
    seen = "included" if include_seen else "excluded"
    console.print(f"mean ± standard error over test users (coverage: bootstrap); seen items "
                  f"{seen}; model and metrics in {out}", highlight=False)


def _kept_state(out: Path, epochs: int) -> str:
    """What an interrupted ``mechrec train`` left in ``out``: the epoch its state was saved
    after (training resumes from there), or that nothing was kept yet."""
    from mechrec_recsys.checkpoint import RUN_STATE_JSON, read_json

    try:
        info = read_json(out / RUN_STATE_JSON)
        epoch, best = int(info["epoch"]), info.get("best_epoch")
    except (OSError, ValueError, KeyError, TypeError):
        return f"{NOTHING_KEPT} (interrupted before the first epoch ended)"
    return (f"kept the run state after epoch {epoch} of at most {epochs} (best so far: epoch "
            f"{best}) in {out}")


def register(app: typer.Typer) -> None:
    """Add the ``train`` command to the ``mechrec`` application."""
    app.command("train")(train_command)

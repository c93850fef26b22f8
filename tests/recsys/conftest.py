"""Fixtures for adapter tests: a small GPTRec trained on ml-100k's paper split.

Training takes a few seconds (small model, few epochs); the run folder is shared by every
test of the session that needs a trained model (the glue of SAEs, alignment and steering).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mechrec_recsys.data import load_dataset
from mechrec_recsys.data.splits import make_split
from mechrec_recsys.experiment import FULL_HISTORY, Experiment, RunSpec
from mechrec_recsys.model import GPTRecConfig
from mechrec_recsys.training import TrainConfig, train_and_evaluate

SMALL_MODEL = GPTRecConfig(n_layers=2, n_heads=2, d_model=32, d_mlp=64, max_len=50,
                           dropout=0.1, init_seed=0)
SHORT_TRAINING = TrainConfig(epochs=4, patience=4, batch_size=64, lr=3e-3, seed=0,
                             progress=False)


@pytest.fixture(scope="session")
def paper_run_dir(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``mechrec train``-style run folder for ml-100k, paper split, seed 0."""
    run_dir = tmp_path_factory.mktemp("ml100k_paper_run")
    spec = RunSpec(dataset="ml-100k", split="paper", seed=0)
    dataset = load_dataset(spec.dataset, data_dir / "ml-100k", download=False)
    split = make_split(dataset, spec.split, seed=spec.seed, max_len=FULL_HISTORY)
    train_and_evaluate(split, model_config=SMALL_MODEL, train_config=SHORT_TRAINING,
                       out_dir=run_dir, resume=False, log=lambda message: None)
    spec.save(run_dir)
    return run_dir


@pytest.fixture(scope="session")
def paper_experiment(paper_run_dir: Path, data_dir: Path) -> Experiment:
    """The experiment of :func:`paper_run_dir`, reopened from disk."""
    return Experiment.open(paper_run_dir, data_dir=data_dir / "ml-100k", download=False,
                           batch_size=128)


PAPER_HOOK = "blocks.0.hook_resid_post"


@pytest.fixture(scope="session")
def paper_sae(paper_experiment: Experiment):
    """A small standard (L1) SAE trained on the SAE users' activations at the first block's
    output, as in the paper (dictionary 256, few steps: enough for real, non-dead features)."""
    from mechrec.saes import SAETrainingConfig, train_sae

    source = paper_experiment.activations("sae_train", PAPER_HOOK)
    config = SAETrainingConfig(architecture="standard", d_sae=256, l1_coefficient=0.1,
                               steps=600, batch_size=256, seed=0)
    return train_sae(source, config).sae

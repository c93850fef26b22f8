"""Sparse autoencoders through sae-lens: configs, training, sweeps, save/load with normaliser.

- :class:`SAETrainingConfig`: one dataclass selecting the architecture (standard, topk,
  batchtopk, jumprelu, gated) and every hyperparameter; its module docstring states the L1
  convention.
- :func:`train_sae`: train through sae-lens' ``SAETrainer`` on an activation source, each
  step by :func:`fast_train_step` (sae-lens' math with few passes over the feature tensors);
  resumable with a :class:`TrainingCheckpoint`.
- :class:`NormalizedSAE`: an sae-lens SAE plus its normaliser; ``save``/``load`` in the
  sae-lens directory format (``SAE.load_from_disk`` reads it) plus ``normalizer.safetensors``.
- :func:`sweep_saes` / :func:`summarize_sweep`: grids of values x seeds, resumable.
"""

from mechrec.saes.architectures import build_training_sae, to_inference_sae
from mechrec.saes.checkpoint import ResumedState, TrainingCheckpoint
from mechrec.saes.config import ARCHITECTURES, SAETrainingConfig
from mechrec.saes.fast_step import Workspace, fast_train_step
from mechrec.saes.normalized import NormalizedSAE
from mechrec.saes.sweeps import (
    PAPER_DICT_SIZES,
    PAPER_L1_GRID,
    grid,
    run_name,
    summarize_sweep,
    sweep_saes,
)
from mechrec.saes.training import (
    TrainingResult,
    norm_reconstruction_loss,
    resample_dead_features,
    train_sae,
)

__all__ = [
    "ARCHITECTURES",
    "PAPER_DICT_SIZES",
    "PAPER_L1_GRID",
    "NormalizedSAE",
    "ResumedState",
    "SAETrainingConfig",
    "TrainingCheckpoint",
    "TrainingResult",
    "Workspace",
    "build_training_sae",
    "fast_train_step",
    "grid",
    "norm_reconstruction_loss",
    "resample_dead_features",
    "run_name",
    "summarize_sweep",
    "sweep_saes",
    "to_inference_sae",
    "train_sae",
]

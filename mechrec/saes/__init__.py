"""Sparse autoencoders through sae-lens: configs, training, sweeps, save/load with normaliser.

- :class:`SAETrainingConfig`: one dataclass selecting the architecture (standard, topk,
  batchtopk, jumprelu, gated) and every hyperparameter; its module docstring states the L1
  convention.
- :func:`train_sae`: train through sae-lens' ``SAETrainer`` on an activation source, each
  step by :func:`fast_train_step` (sae-lens' math with few passes over the feature tensors);
  resumable with a :class:`TrainingCheckpoint`; optionally logged to wandb through sae-lens'
  own trainer logging or to MLflow (``SAETrainingConfig.log_to``, :mod:`.tracking`).
- :class:`NormalizedSAE`: an sae-lens SAE plus its normaliser; ``save``/``load`` in the
  sae-lens directory format with the normaliser folded into the weights, so plain
  ``SAE.load_from_disk`` gives an exact SAE on raw activations (:mod:`.folding`), plus
  ``normalizer.safetensors``.
- :func:`load_foreign_sae`: other libraries' checkpoints (dictionary_learning, sparsify) as
  the equivalent sae-lens SAE; :meth:`NormalizedSAE.from_sae_lens` wraps plain sae-lens SAEs;
  :meth:`NormalizedSAE.load` opens any of them.
- :func:`sweep_saes` / :func:`summarize_sweep`: grids of values x seeds, resumable; tracked
  sweeps log one run per SAE with its evaluation as the run's summary.
"""

from mechrec._lazy import lazy_exports

#: Public name -> the submodule defining it; each is imported on first use, so importing
#: this package (or one light submodule of it) does not load torch.
_EXPORTS: dict[str, str] = {
    "build_training_sae": "architectures",
    "to_inference_sae": "architectures",
    "ResumedState": "checkpoint",
    "TrainingCheckpoint": "checkpoint",
    "ARCHITECTURES": "config",
    "SAETrainingConfig": "config",
    "TRACKERS": "config",
    "Workspace": "fast_step",
    "fast_train_step": "fast_step",
    "MissingHookNameError": "normalized",
    "NormalizedSAE": "normalized",
    "detect_format": "foreign",
    "load_foreign_sae": "foreign",
    "PAPER_DICT_SIZES": "config",
    "PAPER_L1_GRID": "config",
    "grid": "sweeps",
    "run_name": "sweeps",
    "summarize_sweep": "sweeps",
    "sweep_saes": "sweeps",
    "TrackedRun": "tracking",
    "log_run_summary": "tracking",
    "TrainingResult": "training",
    "norm_reconstruction_loss": "training",
    "resample_dead_features": "training",
    "train_sae": "training",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)

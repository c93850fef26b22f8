"""The one configuration object that selects an SAE architecture and its training run.

Loss convention (what an ``l1_coefficient`` means)
--------------------------------------------------
Every SAE sees *normalised* activations (see :mod:`mechrec.normalization`). For the
``standard`` (ReLU + L1) and ``gated`` architectures the training loss per batch is

    reconstruction + l1_coefficient * mean_over_rows( sum_i f_i * ||W_dec[i]||_2 )

- the L1 term is sae-lens' own: each feature activation is weighted by the norm of its
  decoder row, which makes the penalty independent of how the decoder is scaled, and equals
  the plain ``||f||_1`` of an SAE whose decoder rows have unit norm (the constraint used by
  the ``dictionary_learning`` trainer that the paper used). Saved SAEs have the decoder norms
  folded into the encoder, so their feature activations are in those unit-decoder units.
- the reconstruction term depends on ``reconstruction_loss``:

  ``"norm"`` (default, the paper's convention)
      ``mean_over_rows ||x - x_hat||_2``: the Euclidean norm of the error, *not* squared,
      averaged over rows, as in ``dictionary_learning``'s standard trainer.
  ``"squared"`` (sae-lens' default)
      ``mean_over_rows ||x - x_hat||_2^2``: squared error summed over dimensions.

Both terms of the ``"norm"`` loss scale linearly with the activations, so λ does not depend
on their scale. The mapping is the identity: the paper's λ is our ``l1_coefficient``.
Measured with ``benchmarks/bench_saes.py l1-grid`` (standard SAE, 2048 features, 3000 steps
of 1024 rows, lr 1e-3, one seed; activations at ``blocks.0.hook_resid_post`` of a GPTRec-sized
model trained on MovieLens-100k, normalised per dimension; metrics on held-out users):

=====  ======  =====  =====  ====  =============================
λ      L0      EV     RMSE   dead  paper's Table 1: L0 / EV / RMSE
=====  ======  =====  =====  ====  =============================
0.001  1073.8  0.999  0.025  0.00  821.5 / 1 / 0.02
0.05   634.0   0.994  0.074  0.00  137.3 / 1 / 0.008
0.1    300.4   0.968  0.179  0.00  102.1 / 0.958 / 0.178
0.2    84.1    0.839  0.399  0.00  29.0 / 0.850 / 0.340
0.3    36.8    0.671  0.570  0.00  9.3 / 0.676 / 0.501
0.4    24.6    0.455  0.734  0.05  2.7 / 0.337 / 0.724
0.5    10.9    0.182  0.899  0.07  0.6 / 0.060 / 0.880
1.0    0.8     -0.01  0.996  0.12  0.5 / 0.0001 / 0.922
=====  ======  =====  =====  ====  =============================

("dead": share of features that never fire on the held-out users.)
Reconstruction (EV, RMSE) follows the paper at every λ; L0 spans the same three orders of
magnitude (~1000 at 0.001 down to <1 at 1) but sits 3-9x above the paper's between 0.05 and
0.5 on these stand-in activations (longer training lowers it slowly: 277 after 5000 steps
at λ=0.1). A squared loss weighs the L1 term against ``||e||^2``, whose gradient is
``2 ||e||`` times larger, and that factor changes with λ itself: no constant factor maps the
paper's grid onto it. Measured the same way with ``reconstruction_loss="squared"``, the
grid stays dense: L0 494.6 / 210.9 / 94.6 and EV 0.989 / 0.944 / 0.852 at λ = 0.1 / 0.4 / 1.

TopK/BatchTopK fix sparsity directly (``k``); JumpReLU uses an L0 penalty
(``l0_coefficient``) or a target L0 (``target_l0``). Their auxiliary losses (aux-k, pre-act,
gated's auxiliary reconstruction) are sae-lens' own and stay squared.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from mechrec._config import config_from_dict, config_to_dict

ARCHITECTURES: tuple[str, ...] = ("standard", "topk", "batchtopk", "jumprelu", "gated")
#: The paper's L1 weights (Table 1, dictionary size 2048).
PAPER_L1_GRID: tuple[float, ...] = (0.001, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 1.0)
#: The paper's dictionary sizes (Figure 3, L1 weight 0.1).
PAPER_DICT_SIZES: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048, 4096, 8192)
Architecture = Literal["standard", "topk", "batchtopk", "jumprelu", "gated"]
ReconstructionLoss = Literal["norm", "squared"]
#: Resampling interval that ``resample_dead_every="auto"`` gives TopK SAEs.
AUTO_RESAMPLE_EVERY = 500
#: Where :func:`~mechrec.saes.train_sae` can send its per-step metrics
#: (``SAETrainingConfig.log_to``): ``"wandb"`` through sae-lens' own trainer logging,
#: ``"mlflow"`` (needs ``pip install mlflow``) from mechrec's log records.
TRACKERS: tuple[str, ...] = ("wandb", "mlflow")
#: The tracking fields of :class:`SAETrainingConfig` with their defaults: they choose where
#: metrics and sae-lens checkpoints go, never what is trained, so ``to_dict`` records them
#: only when set and mechrec's resumable training checkpoints ignore them.
TRACKING_DEFAULTS: dict[str, Any] = {
    "log_to": None, "wandb_project": "mechrec", "run_name": None, "wandb_log_frequency": 10,
    "mlflow_experiment": "mechrec", "n_checkpoints": 0, "checkpoint_path": None,
}
#: The longest automatic learning-rate warm-up (``lr_warm_up_steps="auto"``: a tenth of the
#: steps, at most this many).
AUTO_WARM_UP_STEPS = 100


@dataclass
class SAETrainingConfig:
    """Architecture, hyperparameters and training run of one SAE.

    Attributes:
        architecture: ``"standard"`` (ReLU + L1), ``"topk"``, ``"batchtopk"``,
            ``"jumprelu"`` or ``"gated"``; or any other architecture registered in
            sae-lens' training registry (e.g. ``"matryoshka_batchtopk"``; see
            :mod:`mechrec.saes.registry`), which gets the fields below its sae-lens config
            shares (``k``, ``l1_coefficient``, ``aux_loss_coefficient``...) and is trained
            with sae-lens' own step.
        architecture_options: fields of the architecture's sae-lens training config class,
            passed to it as they are and overriding what mechrec derives (e.g.
            ``{"matryoshka_widths": [64, 256, 2048]}``); unknown names are an error listing
            the valid ones. Recorded in ``to_dict`` only when not empty.
        d_sae: dictionary size (number of features).
        l1_coefficient: L1 weight λ for ``standard`` and ``gated`` (see the module docstring
            for its exact meaning).
        k: active features per row for ``topk`` (rounded to an int) and the average number
            per row across a batch for ``batchtopk``.
        l0_coefficient: weight of the L0 (step-function) sparsity loss for ``jumprelu``.
        target_l0: ``jumprelu`` only: if set, penalise ``(L0 - target_l0)^2`` (Gemma Scope 2
            style) instead of ``l0_coefficient * L0``; ``l0_coefficient`` then scales it.
        reconstruction_loss: ``"norm"`` (the paper's, non-squared error norm) or
            ``"squared"`` (sae-lens' squared error).
        lr: Adam learning rate (the paper: 1e-3).
        adam_beta1: Adam first-moment decay.
        adam_beta2: Adam second-moment decay.
        steps: number of optimisation steps.
        batch_size: activation rows per step.
        lr_warm_up_steps: steps of linear learning-rate warm-up from ~0 to ``lr``;
            ``"auto"`` (default): a tenth of ``steps``, at most 100 (:attr:`warm_up_steps`),
            so a short run needs no hand tuning and a long one warms up as the paper's.
        lr_decay_steps: steps of linear learning-rate decay to 0 at the end of training.
        sparsity_warm_up_steps: steps over which the sparsity coefficient (L1 or L0) grows
            linearly from 0 to its value; lets features find data before being pushed to 0.
        dead_feature_window: a feature that has not fired for this many steps counts as dead
            during training (feeds aux-k, pre-act loss and resampling).
        resample_dead_every: every this many steps, re-initialise dead features towards
            badly reconstructed inputs (any architecture); ``None``: never; ``"auto"``: every
            500 steps for ``topk``, never otherwise. Measured on MovieLens-100k activations
            (dictionary 2048, 2000 steps; share of features never firing on held-out users):
            TopK k=32 17.6% with resampling vs 52.5% with aux-k alone; BatchTopK 47.4% with
            vs 17.8% without; L1 at λ=0.5 8.9% with vs 1.5% without; L1 at λ=0.1, JumpReLU
            and Gated had no dead features to resample.
        resample_until: fraction of training after which no more resampling happens, so
            re-initialised features have time to settle.
        aux_loss_coefficient: weight of the aux-k loss that trains dead features of
            ``topk``/``batchtopk`` on the residual error.
        jumprelu_bandwidth: width of the straight-through estimator window for ``jumprelu``.
        jumprelu_init_threshold: initial ``jumprelu`` threshold.
        pre_act_loss_coefficient: ``jumprelu`` only: weight of the pre-activation loss that
            pulls dead features' pre-activations up to the threshold; ``None`` disables it.
        decoder_init_norm: norm of each decoder row at initialisation (encoder = decoder^T).
        normalization: normalisation fitted on the training activations when no normaliser is
            passed to training: ``"per_dim"`` (the paper), ``"scalar"`` or ``"none"``.
        seed: seed of the weight initialisation, batch order and resampling.
        device: torch device to train on.
        log_to: where to log training metrics: ``None`` (nowhere, the default) or
            ``"wandb"``: a Weights & Biases run (``wandb.init`` with this config; an active
            run is used as it is) receives what sae-lens' ``SAETrainer.fit`` logs, through
            its own methods: the train-step dict (``losses/*``, ``metrics/l0``,
            ``metrics/explained_variance``, ``sparsity/dead_features``, learning rate, ...)
            every ``wandb_log_frequency`` steps, the feature-density log of every sparsity
            window and the weight histograms. It changes nothing in training: the SAE is
            identical with and without it. Offline: ``WANDB_MODE=offline``.
            ``"mlflow"``: an MLflow run (in experiment ``mlflow_experiment``, at
            ``$MLFLOW_TRACKING_URI``; an active run is used as it is) gets this config as
            parameters and mechrec's own log records (``loss``, each loss term, ``l0``,
            ``dead_features``, every ``log_every`` steps of ``train_sae``) as metrics;
            sae-lens has no MLflow support and mechrec does not depend on ``mlflow``: without
            it, training stops at once with an error saying ``pip install mlflow``.
        wandb_project: the wandb project of the run (``log_to="wandb"``).
        run_name: the run's name (default: the tracker's).
        mlflow_experiment: the MLflow experiment of the run (``log_to="mlflow"``).
        wandb_log_frequency: log the train-step metrics every this many steps (sae-lens'
            ``LoggingConfig.wandb_log_frequency``).
        n_checkpoints: save this many evenly spaced checkpoints during training through
            sae-lens' own ``SAETrainer.save_checkpoint`` (its training SAE, which reads
            normalised activations, its feature sparsity and the trainer state, in a folder
            named after the samples seen), under ``checkpoint_path`` and, with
            ``log_to="wandb"``, as wandb artifacts. They are snapshots for inspection;
            resuming an interrupted run is mechrec's own ``TrainingCheckpoint``.
        checkpoint_path: folder of those checkpoints (``None``: wandb artifacts only).
    """

    architecture: str = "standard"
    architecture_options: dict[str, Any] = field(default_factory=dict)
    d_sae: int = 2048
    l1_coefficient: float = 0.1
    k: float = 32
    l0_coefficient: float = 1e-3
    target_l0: float | None = None
    reconstruction_loss: str = "norm"
    lr: float = 1e-3
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    steps: int = 3000
    batch_size: int = 1024
    lr_warm_up_steps: int | str = "auto"
    lr_decay_steps: int = 0
    sparsity_warm_up_steps: int = 0
    dead_feature_window: int = 200
    resample_dead_every: int | str | None = "auto"
    resample_until: float = 0.7
    aux_loss_coefficient: float = 1.0
    jumprelu_bandwidth: float = 0.05
    jumprelu_init_threshold: float = 0.01
    pre_act_loss_coefficient: float | None = 3e-6
    decoder_init_norm: float = 0.1
    normalization: str = "per_dim"
    seed: int = 0
    device: str = "cpu"
    log_to: str | None = None
    wandb_project: str = "mechrec"
    run_name: str | None = None
    wandb_log_frequency: int = 10
    mlflow_experiment: str = "mechrec"
    n_checkpoints: int = 0
    checkpoint_path: str | None = None

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES or self.architecture_options:
            from mechrec.saes.registry import check_options, training_classes

            training_classes(self.architecture)  # unknown: an error naming the known ones
            check_options(self.architecture, self.architecture_options)
        if self.reconstruction_loss not in ("norm", "squared"):
            raise ValueError(
                f"reconstruction_loss must be 'norm' or 'squared', got {self.reconstruction_loss!r}"
            )
        if self.normalization not in ("per_dim", "scalar", "none"):
            raise ValueError(
                f"normalization must be 'per_dim', 'scalar' or 'none', got {self.normalization!r}"
            )
        positive = {
            "d_sae": self.d_sae,
            "steps": self.steps,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "dead_feature_window": self.dead_feature_window,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        for name in ("l1_coefficient", "l0_coefficient", "aux_loss_coefficient"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.architecture in ("topk", "batchtopk") and not 0 < self.k <= self.d_sae:
            raise ValueError(f"k must be in (0, d_sae={self.d_sae}], got {self.k}")
        if self.target_l0 is not None and not 0 < self.target_l0 <= self.d_sae:
            raise ValueError(f"target_l0 must be in (0, d_sae={self.d_sae}], got {self.target_l0}")
        warm = self.lr_warm_up_steps
        if warm != "auto" and (isinstance(warm, (str, bool)) or not isinstance(warm, int)
                               or warm < 0):
            raise ValueError(f"lr_warm_up_steps must be 'auto' or a whole number >= 0, got "
                             f"{warm!r}")
        if self.warm_up_steps + self.lr_decay_steps > self.steps:
            raise ValueError(
                f"lr_warm_up_steps + lr_decay_steps ({self.warm_up_steps} + "
                f"{self.lr_decay_steps}) exceed steps ({self.steps})"
            )
        if self.log_to is not None and self.log_to not in TRACKERS:
            raise ValueError(f"log_to must be None or one of {', '.join(TRACKERS)}, got "
                             f"{self.log_to!r}")
        if isinstance(self.wandb_log_frequency, bool) or not (
                isinstance(self.wandb_log_frequency, int) and self.wandb_log_frequency >= 1):
            raise ValueError(f"wandb_log_frequency must be a whole number >= 1, got "
                             f"{self.wandb_log_frequency!r}")
        if isinstance(self.n_checkpoints, bool) or not (
                isinstance(self.n_checkpoints, int) and self.n_checkpoints >= 0):
            raise ValueError(f"n_checkpoints must be a whole number >= 0, got "
                             f"{self.n_checkpoints!r}")
        if self.n_checkpoints and self.checkpoint_path is None and self.log_to != "wandb":
            raise ValueError("n_checkpoints needs a checkpoint_path to save them in (or "
                             "log_to='wandb', which keeps them as artifacts)")
        every = self.resample_dead_every
        if every is not None and every != "auto" and (isinstance(every, str) or every < 1):
            raise ValueError(f"resample_dead_every must be >= 1, None or 'auto', got {every!r}")

    @property
    def warm_up_steps(self) -> int:
        """Learning-rate warm-up steps (``"auto"``: ``min(100, steps // 10)``)."""
        if self.lr_warm_up_steps == "auto":
            return min(AUTO_WARM_UP_STEPS, self.steps // 10)
        return int(self.lr_warm_up_steps)

    @property
    def resample_interval(self) -> int | None:
        """Steps between resamplings of dead features (``"auto"`` resolved), or ``None``."""
        if self.resample_dead_every == "auto":
            return AUTO_RESAMPLE_EVERY if self.architecture == "topk" else None
        return self.resample_dead_every  # type: ignore[return-value]

    @property
    def sparsity_parameter(self) -> tuple[str, float]:
        """The hyperparameter that sets sparsity for this architecture, with its value."""
        if self.architecture in ("standard", "gated"):
            return "l1_coefficient", self.l1_coefficient
        if self.architecture in ("topk", "batchtopk"):
            return "k", self.k
        if self.architecture not in ARCHITECTURES:
            from mechrec.saes.registry import has_field

            for name in ("k", "l1_coefficient", "l0_coefficient"):
                if has_field(self.architecture, name):
                    return name, self.architecture_options.get(name, getattr(self, name))
        if self.target_l0 is not None:
            return "target_l0", self.target_l0
        return "l0_coefficient", self.l0_coefficient

    def to_dict(self, *, tracking: bool = True) -> dict[str, Any]:
        """All fields as a JSON-able dict (``architecture_options`` and the tracking fields
        only when set, so that configs written before they existed keep their identity).

        Args:
            tracking: include the tracking fields that are set (``False``: never, e.g. for
                the identity of a training checkpoint, which a run resumes with or without
                tracking).
        """
        data = config_to_dict(self)
        if not data["architecture_options"]:
            del data["architecture_options"]
        for name, default in TRACKING_DEFAULTS.items():
            if not tracking or data[name] == default:
                del data[name]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SAETrainingConfig:
        """Build a config from a dict; unknown keys are an error naming the valid ones."""
        return config_from_dict(cls, data, what="SAE config")

    def with_overrides(self, **overrides: Any) -> SAETrainingConfig:
        """A copy with some fields changed (validated like a new config)."""
        names = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ValueError(f"unknown SAE config keys {unknown}; valid keys: {sorted(names)}")
        return replace(self, **overrides)

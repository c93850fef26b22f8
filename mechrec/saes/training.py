"""Train one SAE through sae-lens' ``SAETrainer`` on our activation sources.

The trainer gets our own data provider (shuffled, normalised batches from an
``ActivationSet`` or ``ActivationStore``): no language model, no sae-lens activation store,
no hub; wandb only when ``SAETrainingConfig.log_to="wandb"`` asks for it (sae-lens' own
``LoggingConfig`` and logging methods, called where ``fit()`` calls them), and MLflow (which
sae-lens does not support) when ``log_to="mlflow"`` does (see :mod:`mechrec.saes.tracking`;
a resumed training logs into the run it started).
The loop is driven through ``SAETrainer``'s public per-step methods
(``maybe_reset_sparsity`` / ``step`` / ``set_final_sae_metadata``, the seams sae-lens
exposes for external coordinators) instead of ``fit()``, so that we can

- resample dead features between steps (sae-lens has no resampling),
- report progress through a callback instead of a tqdm bar,
- stop with a clear error as soon as the loss stops being finite.

Each step itself is :func:`~mechrec.saes.fast_step.fast_train_step` by default: sae-lens'
math, optimiser, schedulers and bookkeeping on the same ``TrainingSAE``, with the
``(batch, d_sae)`` work done in place in reused buffers (2-4x the rows/s of
``SAETrainer.step`` on one CPU thread; see docs/performance.md). ``engine="sae-lens"`` runs
``SAETrainer.step`` instead, the reference it matches up to float rounding.

Dead features are fought per architecture: TopK/BatchTopK use sae-lens' aux-k loss, JumpReLU
its pre-activation loss, and any architecture can resample dead features towards badly
reconstructed inputs (Anthropic's "Towards Monosemanticity" recipe). By default only TopK
resamples: measured on MovieLens activations it helps TopK and hurts BatchTopK and
high-λ L1 SAEs (see ``SAETrainingConfig.resample_dead_every``).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from sae_lens import SAETrainer, TrainingSAE
from sae_lens.config import LoggingConfig, SAETrainerConfig

from mechrec.activations.sets import (
    ActivationSource,
    check_not_empty,
    fit_normalizer,
    iter_batches,
)
from mechrec.distributed import DistContext, all_reduce_sum
from mechrec.normalization import Normalizer
from mechrec.saes.architectures import FEATURE_AXES, build_training_sae, to_inference_sae
from mechrec.saes.checkpoint import TrainingCheckpoint
from mechrec.saes.config import SAETrainingConfig
from mechrec.saes.fast_step import Workspace, fast_train_step, supports_fast_step
from mechrec.saes.folding import FOLDABLE_ARCHITECTURES
from mechrec.saes.normalized import NormalizedSAE
from mechrec.saes.tracking import MlflowLogger, TrackedRun, WandbLogger, tracking

#: How :func:`train_sae` runs each step: ``"fast"`` (:func:`fast_train_step`, the default) or
#: ``"sae-lens"`` (``SAETrainer.step``, the reference the fast step is tested against).
ENGINES: tuple[str, ...] = ("fast", "sae-lens")


def norm_reconstruction_loss(preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-element terms whose sum over the last dimension is ``||target - preds||_2``.

    sae-lens reduces its ``mse_loss_fn`` output as ``.sum(dim=-1).mean()``. Returning
    ``e_j^2 / ||e||`` makes that reduction the mean Euclidean norm of the error (the paper's
    ``dictionary_learning`` convention) with the exact gradient ``e / ||e||``.
    """
    sq = (preds - target).pow(2)
    return sq / sq.sum(dim=-1, keepdim=True).clamp_min(1e-12).sqrt()


@dataclass
class TrainingResult:
    """What :func:`train_sae` returns.

    Attributes:
        sae: the trained SAE with its normaliser, ready to use and to save.
        config: the configuration it was trained with.
        history: one dict per logged step (step, losses, l0, dead features in the window).
        n_resampled: total number of dead features re-initialised during training.
        dead_fraction_train: fraction of features that did not fire during the last
            ``dead_feature_window`` steps of training.
        seconds: wall-clock training time.
        rows_per_second: activation rows processed per second of training.
        tracked_run: the wandb / MLflow run it logged to (``None``: not tracked);
            :func:`~mechrec.saes.tracking.log_run_summary` adds results to it.
    """

    sae: NormalizedSAE
    config: SAETrainingConfig
    history: list[dict[str, float]] = field(default_factory=list)
    n_resampled: int = 0
    dead_fraction_train: float = 0.0
    seconds: float = 0.0
    rows_per_second: float = 0.0
    tracked_run: TrackedRun | None = None


@torch.no_grad()
def resample_dead_features(
    trainer: SAETrainer,
    batch: torch.Tensor,
    dead: torch.Tensor,
    generator: torch.Generator,
    init_threshold: float = 0.0,
) -> int:
    """Re-initialise dead features towards inputs the SAE reconstructs badly.

    Inputs are drawn with probability proportional to their squared reconstruction error;
    each dead feature's decoder row becomes the (centred, unit-norm) input scaled to the
    mean live decoder norm, its encoder column the same direction scaled to 0.2 x the mean
    live encoder norm; its biases (and JumpReLU threshold) are reset, as are Adam's moments
    for all of these, and its "steps since fired" counter.

    Returns:
        the number of features re-initialised (at most ``batch_size``).
    """
    sae: TrainingSAE = trainer.sae
    idx = dead.nonzero().squeeze(1)
    if idx.numel() == 0:
        return 0
    idx = idx[torch.randperm(idx.numel(), generator=generator)[: batch.shape[0]]]
    alive = ~dead
    x = batch.to(sae.W_dec.device)
    err = (sae.decode(sae.encode(x)) - x).pow(2).sum(-1)
    rows = torch.multinomial(err.cpu() + 1e-12, idx.numel(), replacement=False, generator=generator)
    dirs = x[rows] - sae.b_dec
    dirs = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    dec_norm = sae.W_dec[alive].norm(dim=1).mean() if alive.any() else torch.tensor(1.0)
    enc_norm = sae.W_enc[:, alive].norm(dim=0).mean() if alive.any() else torch.tensor(1.0)
    sae.W_dec.data[idx] = dirs * dec_norm
    sae.W_enc.data[:, idx] = dirs.T * enc_norm * 0.2
    for name, axis in FEATURE_AXES.items():
        param = getattr(sae, name, None)
        if not isinstance(param, torch.nn.Parameter):
            continue
        if name not in ("W_enc", "W_dec"):
            param.data[idx] = init_threshold if name == "threshold" else 0.0
        state = trainer.optimizer.state.get(param, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in state:
                state[key].index_fill_(axis, idx.to(state[key].device), 0.0)
    trainer.n_forward_passes_since_fired[idx] = 0
    return int(idx.numel())


def _trainer_config(cfg: SAETrainingConfig, *, log: bool = False,
                    main: bool = True) -> SAETrainerConfig:
    """sae-lens' trainer config of ``cfg``; ``log``: wandb logging on; ``main``: this process
    saves sae-lens checkpoints (rank 0 only under ``torchrun``)."""
    return SAETrainerConfig(
        total_training_samples=cfg.steps * cfg.batch_size,
        train_batch_size_samples=cfg.batch_size,
        lr=cfg.lr,
        lr_end=cfg.lr,
        lr_scheduler_name="constant",
        lr_warm_up_steps=cfg.warm_up_steps,
        lr_decay_steps=cfg.lr_decay_steps,
        adam_beta1=cfg.adam_beta1,
        adam_beta2=cfg.adam_beta2,
        device=cfg.device,
        dead_feature_window=cfg.dead_feature_window,
        feature_sampling_window=cfg.dead_feature_window,
        n_checkpoints=cfg.n_checkpoints if main else 0,
        checkpoint_path=cfg.checkpoint_path,
        save_final_checkpoint=False,
        logger=LoggingConfig(log_to_wandb=log, wandb_project=cfg.wandb_project,
                             run_name=cfg.run_name,
                             wandb_log_frequency=cfg.wandb_log_frequency),
    )


def _step_record(step: int, out: Any, trainer: SAETrainer) -> dict[str, float]:
    record: dict[str, float] = {"step": step, "loss": out.loss.item()}
    for name, value in out.losses.items():
        record[name] = float(value.item())
    acts = out.feature_acts
    if acts.is_sparse:  # the fast TopK step's (rows, d_sae) COO activations
        record["l0"] = float((acts.coalesce().values() != 0).sum()) / acts.shape[0]
    else:
        record["l0"] = float((acts != 0).sum(-1).float().mean())
    record["dead_features"] = int(trainer.dead_neurons.sum())
    return record


def _global_record(
    record: dict[str, float], dist: DistContext, device: torch.device
) -> dict[str, float]:
    """A log record of the global batch: losses and L0 averaged over the ranks' equal shares
    (step and dead features are already the same on every rank). ``device``: where the
    backend reduces (the SAE's device: nccl reduces CUDA tensors only)."""
    keys = [k for k in record if k not in ("step", "dead_features")]
    local = torch.tensor([record[k] for k in keys], dtype=torch.float64, device=device)
    mean = all_reduce_sum(local, dist).cpu() / dist.world_size
    return {**record, **{k: float(v) for k, v in zip(keys, mean.tolist(), strict=True)}}


def _check_parallel(config: SAETrainingConfig, dist: DistContext | None) -> DistContext | None:
    """The process group if training is data-parallel, after checking the config allows it."""
    if dist is None or not dist.enabled:
        return None
    if config.batch_size % dist.world_size:
        raise ValueError(
            f"batch_size {config.batch_size} does not divide by the {dist.world_size} "
            "processes: each rank takes an equal share of every global batch"
        )
    if "batchtopk" in config.architecture:
        raise ValueError(
            f"{config.architecture} SAEs cannot be trained data-parallel: their threshold is "
            "the k-th largest activation over the whole batch; train them in one process"
        )
    return dist


def _rank_rows(batch: torch.Tensor, dist: DistContext) -> torch.Tensor:
    """This rank's contiguous share of a global batch."""
    share = batch.shape[0] // dist.world_size
    return batch[dist.rank * share : (dist.rank + 1) * share]


def _average_gradients(sae: TrainingSAE, dist: DistContext) -> None:
    """Average every parameter's gradient over ranks as soon as backward has produced it.

    The hooks run inside ``backward()``, so gradient clipping and the optimiser step (in the
    fast step and in ``SAETrainer.step`` alike) see the global-batch gradient.
    """

    def hook(param: torch.Tensor) -> None:
        assert param.grad is not None
        torch.distributed.all_reduce(param.grad, op=torch.distributed.ReduceOp.SUM)
        param.grad.div_(dist.world_size)

    for param in sae.parameters():
        if param.requires_grad:
            param.register_post_accumulate_grad_hook(hook)


def _firing_state(trainer: SAETrainer) -> tuple[torch.Tensor, torch.Tensor]:
    return (trainer.n_forward_passes_since_fired.clone(), trainer.act_freq_scores.clone())


@torch.no_grad()
def _merge_firing_state(
    trainer: SAETrainer,
    before: tuple[torch.Tensor, torch.Tensor],
    local_rows: int,
    dist: DistContext,
) -> None:
    """Make the step's firing statistics those of the global batch on every rank."""
    since_before, freq_before = before
    fired_here = (trainer.n_forward_passes_since_fired == 0).float()
    fired = all_reduce_sum(fired_here, dist) > 0
    trainer.n_forward_passes_since_fired.copy_(
        torch.where(fired, torch.zeros_like(since_before), since_before + 1)
    )
    trainer.act_freq_scores.copy_(
        freq_before + all_reduce_sum(trainer.act_freq_scores - freq_before, dist)
    )
    trainer.n_training_samples += local_rows * (dist.world_size - 1)


def _warn_if_unsaveable(training_sae: TrainingSAE, normalizer: Normalizer) -> None:
    """Warn before training an SAE that :meth:`NormalizedSAE.save` will refuse: one whose
    inference architecture (e.g. sae-lens' ``abstopk``) cannot take a folded normaliser."""
    inference = str(training_sae.cfg.get_inference_sae_cfg_dict()["architecture"])
    if normalizer.mode != "none" and inference not in FOLDABLE_ARCHITECTURES:
        warnings.warn(
            f"this SAE is saved as a sae-lens {inference!r} SAE, into which mechrec cannot "
            f"fold its {normalizer.mode!r} normaliser: it works in memory but save() will "
            "refuse it; train with normalization='none' to be able to save it",
            UserWarning, stacklevel=3,
        )


def train_sae(
    source: ActivationSource,
    config: SAETrainingConfig,
    *,
    normalizer: Normalizer | None = None,
    hook_name: str | None = None,
    log_every: int = 100,
    progress: Callable[[dict[str, float]], None] | None = None,
    checkpoint: TrainingCheckpoint | None = None,
    engine: str = "fast",
    dist: DistContext | None = None,
) -> TrainingResult:
    """Train one SAE on the activations of ``source``.

    Args:
        source: raw activations (``ActivationSet`` / ``ActivationStore``) at one hook.
        config: architecture and hyperparameters.
        normalizer: normalisation to train behind; ``None`` fits ``config.normalization`` on
            ``source`` (streamed). Pass one to share it across a sweep.
        hook_name: hook the SAE belongs to (default: ``source.hook_name``).
        log_every: record losses, L0 and dead features every this many steps.
        progress: called with each record (a dict) as it is made.
        checkpoint: save the whole training state every ``checkpoint.every`` steps and resume
            from a saved one (exactly: the result equals an uninterrupted run's); the caller
            clears it once the finished SAE is saved.
        engine: ``"fast"`` runs each step with :func:`~mechrec.saes.fast_step.fast_train_step`
            (sae-lens' math and state, fewer passes over the ``(batch, d_sae)`` tensors;
            architectures it has no step for, e.g. ones from sae-lens' registry, use
            ``SAETrainer.step``);
            ``"sae-lens"`` with ``SAETrainer.step``, the slower reference. Both give the
            same results up to float rounding.
        dist: the process group under ``torchrun``
            (:func:`mechrec.distributed.setup_distributed`). With ``W > 1`` processes every
            rank draws the same global batch of ``config.batch_size`` rows from ``source``
            (the same seeded order), runs the step on its own contiguous ``1/W`` of it and
            the gradients are averaged over ranks before clipping and the optimiser step;
            the firing statistics behind dead features are merged (a feature fired if it
            fired on any rank). Parameters, optimiser state, resampling and the result are
            therefore the same on every rank and equal a one-process run up to float
            rounding. ``batch_size`` must divide by ``W``; ``batchtopk`` (whose threshold
            is taken over the whole batch) is refused. Only rank 0 saves checkpoints.

    Returns:
        a :class:`TrainingResult` whose ``sae`` is a ready :class:`NormalizedSAE`.
    """
    check_not_empty(source)
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    hook_name = hook_name or source.hook_name
    parallel = _check_parallel(config, dist)
    if normalizer is None:
        normalizer = fit_normalizer(source, config.normalization)
    if normalizer.d != source.d:
        raise ValueError(
            f"the normaliser has {normalizer.d} dimensions but the activations have "
            f"{source.d}: fit it on activations from the same hook ({hook_name!r})"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        training_sae = build_training_sae(config, source.d, hook_name)
    _warn_if_unsaveable(training_sae, normalizer)
    if config.reconstruction_loss == "norm":
        training_sae.mse_loss_fn = norm_reconstruction_loss
    provider = iter_batches(source, config.batch_size, seed=config.seed, normalizer=normalizer)
    main = parallel is None or parallel.is_main
    resume = checkpoint.tracked_run() if checkpoint is not None and checkpoint.exists() else None
    with tracking(config, hook_name, normalizer.mode, main, resume=resume) as (module, run):
        if run is not None and checkpoint is not None:
            checkpoint.save_tracked_run(run)  # an interrupted run resumes into this one
        to_wandb = module is not None and config.log_to == "wandb"
        trainer = SAETrainer(cfg=_trainer_config(config, log=to_wandb, main=main),
                             sae=training_sae, data_provider=provider)
        logger = (None if module is None else WandbLogger(trainer) if to_wandb
                  else MlflowLogger(module))
        result = _train_loop(trainer, provider, config, normalizer, hook_name,
                             log_every, progress, checkpoint, engine, parallel, logger)
        result.tracked_run = run
        return result


def _train_loop(
    trainer: SAETrainer, provider: Iterator[torch.Tensor],
    config: SAETrainingConfig, normalizer: Normalizer, hook_name: str, log_every: int,
    progress: Callable[[dict[str, float]], None] | None, checkpoint: TrainingCheckpoint | None,
    engine: str, parallel: DistContext | None, tracker: WandbLogger | MlflowLogger | None,
) -> TrainingResult:
    """:func:`train_sae`'s loop once the trainer is built."""
    training_sae = trainer.sae
    generator = torch.Generator().manual_seed(config.seed + 1)
    resample_every = config.resample_interval
    resample_stop = int(config.resample_until * config.steps)
    history: list[dict[str, float]] = []
    n_resampled, first_step, seconds_before = 0, 1, 0.0
    if checkpoint is not None:
        checkpoint.identity = {**checkpoint.identity, "config": config.to_dict(tracking=False),
                               "hook_name": hook_name, "normalization": normalizer.mode}
        resumed = checkpoint.restore(trainer, generator)
        if resumed is not None:
            history, n_resampled, seconds_before = (resumed.history, resumed.n_resampled,
                                                    resumed.seconds)
            first_step = resumed.step + 1
            while (trainer.checkpoint_thresholds  # sae-lens checkpoints already passed
                   and trainer.n_training_samples > trainer.checkpoint_thresholds[0]):
                trainer.checkpoint_thresholds.pop(0)
            for _ in range(resumed.step):  # the seeded provider replays the batches used
                next(provider)
    if parallel is not None:
        _average_gradients(training_sae, parallel)
    workspace = Workspace()
    # architectures only sae-lens knows (its registry) train with its own step
    fast = engine == "fast" and supports_fast_step(training_sae)
    start = time.perf_counter()
    training_sae.train()
    for step in range(first_step, config.steps + 1):
        sparsity_log = trainer.maybe_reset_sparsity()
        if tracker is not None:
            tracker.sparsity(sparsity_log)
        batch = next(provider)
        local = batch if parallel is None else _rank_rows(batch, parallel)
        before = _firing_state(trainer) if parallel is not None else None
        out = fast_train_step(trainer, local, workspace) if fast else trainer.step(local)
        if tracker is not None:
            tracker.step(out)
        trainer._checkpoint_if_needed()  # sae-lens' own (n_checkpoints), as fit() does
        trainer.n_training_steps += 1
        loss = out.loss.item()
        if parallel is not None and before is not None:
            _merge_firing_state(trainer, before, local.shape[0], parallel)
            loss = float(all_reduce_sum(out.loss.detach().reshape(1), parallel)) / (
                parallel.world_size
            )
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"SAE training diverged at step {step} (loss {loss}): lower lr "
                f"(now {config.lr}) or check the activations for extreme values"
            )
        if resample_every is not None and step % resample_every == 0 and step <= resample_stop:
            n_resampled += resample_dead_features(
                trainer,
                batch,
                trainer.dead_neurons,
                generator,
                init_threshold=config.jumprelu_init_threshold,
            )
        if step % log_every == 0 or step == config.steps:
            record = _step_record(step, out, trainer)
            if parallel is not None:
                record = _global_record(record, parallel, training_sae.W_dec.device)
            history.append(record)
            if tracker is not None:
                tracker.record(record)
            if progress is not None:
                progress(record)
        if (
            checkpoint is not None
            and checkpoint.due(step, config.steps)
            and (parallel is None or parallel.is_main)
        ):
            checkpoint.save(step, trainer, generator, history, n_resampled,
                            seconds_before + time.perf_counter() - start)
    seconds = seconds_before + time.perf_counter() - start
    if tracker is not None:  # the last window is not reset, so not logged yet (as fit())
        tracker.sparsity(trainer.full_sparsity_window_log())
    trainer.set_final_sae_metadata()
    dead_fraction = float(trainer.dead_neurons.float().mean())
    inference = to_inference_sae(training_sae, config.architecture)
    provenance = {"training_config": config.to_dict(), "normalization": normalizer.mode}
    nsae = NormalizedSAE(inference, normalizer, hook_name=hook_name, provenance=provenance)
    return TrainingResult(
        sae=nsae,
        config=config,
        history=history,
        n_resampled=n_resampled,
        dead_fraction_train=dead_fraction,
        seconds=seconds,
        rows_per_second=config.steps * config.batch_size / seconds,
    )

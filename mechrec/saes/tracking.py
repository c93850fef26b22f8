"""Where an SAE training's metrics go: a wandb run through sae-lens' own trainer logging, or
an MLflow run (which sae-lens does not support) over mechrec's log records.

:func:`tracking` opens the run :func:`~mechrec.saes.train_sae` logs to and names it by a
:class:`TrackedRun` (tracker and run id). That id makes two things possible:

- an interrupted training that resumes from its :class:`~mechrec.saes.TrainingCheckpoint`
  logs into the same run, not a new one (the checkpoint keeps the id beside its state);
- a sweep adds each SAE's evaluation (alignment, splice quality...) to the run that trained
  it, with :func:`log_run_summary`, so one tracker table lines up hyperparameters and results.

A run that was already active when training started (the caller's own ``wandb.init`` or
``mlflow.start_run``) is used and left open; it is then shared by every SAE trained inside
it, so :func:`log_run_summary` prefixes the keys with the SAE's run name.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

from sae_lens import SAETrainer

from mechrec.saes.config import SAETrainingConfig

__all__ = ["TrackedRun", "child_run_name", "import_mlflow", "log_run_summary", "tracking"]


@dataclass(frozen=True)
class TrackedRun:
    """The tracker run a training logged to.

    Attributes:
        tracker: ``"wandb"`` or ``"mlflow"``.
        run_id: the run's id in that tracker.
        owned: whether the training started the run (``False``: the caller's active run).
        name: the run name the training asked for (``SAETrainingConfig.run_name``).
    """

    tracker: str
    run_id: str
    owned: bool = True
    name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (:meth:`from_dict` reads it)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrackedRun:
        """The run :meth:`to_dict` described."""
        return cls(tracker=str(data["tracker"]), run_id=str(data["run_id"]),
                   owned=bool(data.get("owned", True)), name=data.get("name"))


def child_run_name(parent: str | None, name: str) -> str:
    """The tracked run name of one part of a larger job (a sweep's SAE, a pipeline step):
    ``<parent>/<name>``, or ``name`` when the job has no run name."""
    return f"{parent}/{name}" if parent else name


def import_mlflow() -> Any:
    """The ``mlflow`` module, or a ``ModuleNotFoundError`` saying how to install it (mechrec
    does not depend on it)."""
    try:
        import mlflow
    except ImportError:
        raise ModuleNotFoundError(
            "log_to='mlflow' needs the mlflow package, which is not installed: pip install "
            "mlflow (or log to wandb, which sae-lens brings)", name="mlflow") from None
    return mlflow


@contextmanager
def tracking(config: SAETrainingConfig, hook_name: str, normalization: str, main: bool,
             resume: TrackedRun | None = None) -> Iterator[tuple[Any, TrackedRun | None]]:
    """Open the run ``config.log_to`` asks for on the main process and finish it afterwards.

    Args:
        config: the training config (its tracking fields choose the tracker and names).
        hook_name: recorded with the run's parameters.
        normalization: recorded with the run's parameters.
        main: whether this process logs (rank 0 under ``torchrun``).
        resume: a run to continue (the one an interrupted training logged to): wandb
            reopens it by id (``resume="allow"``), MLflow by ``run_id``. Ignored when it
            belongs to another tracker than ``config.log_to``.

    Yields:
        ``(module, run)``: the tracker's module (``wandb``, ``mlflow``) and the
        :class:`TrackedRun`, or ``(None, None)`` when nothing is logged here. A run already
        active is used and left open.
    """
    if config.log_to is None or not main:
        yield None, None
        return
    if resume is not None and (resume.tracker != config.log_to or not resume.owned):
        resume = None
    params = {**config.to_dict(), "hook_name": hook_name, "normalization": normalization}
    if config.log_to == "mlflow":
        mlflow = import_mlflow()
        started = mlflow.active_run() is None
        if started:
            mlflow.set_experiment(config.mlflow_experiment)
            if resume is not None:
                mlflow.start_run(run_id=resume.run_id)
            else:
                mlflow.start_run(run_name=config.run_name)
                mlflow.log_params({k: json.dumps(v) if isinstance(v, (dict, list)) else v
                                   for k, v in params.items()})
        run = TrackedRun("mlflow", mlflow.active_run().info.run_id, started, config.run_name)
        try:
            yield mlflow, run
        finally:
            if started:
                mlflow.end_run()
        return
    import wandb

    started = wandb.run is None
    if started:
        if resume is not None:
            wandb.init(project=config.wandb_project, name=config.run_name, config=params,
                       id=resume.run_id, resume="allow")
        else:
            wandb.init(project=config.wandb_project, name=config.run_name, config=params)
    run = TrackedRun("wandb", wandb.run.id, started, config.run_name)
    try:
        yield wandb, run
    finally:
        if started:
            wandb.finish()


def log_run_summary(run: TrackedRun, config: SAETrainingConfig,
                    metrics: Mapping[str, Any]) -> dict[str, float]:
    """Add ``metrics`` (e.g. a sweep row's evaluation) to the run that trained an SAE.

    Only finite numbers are sent (text, ``None`` and NaN are left out). An owned run is
    reopened by id and closed again: wandb gets them as the run's summary, MLflow as metrics.
    A shared run (``owned=False``, still active) gets them under ``<run name>/``.

    Args:
        run: the training's :class:`TrackedRun` (``TrainingResult.tracked_run``).
        config: the SAE's training config (project / experiment of the run).
        metrics: name -> value.

    Returns:
        what was sent, by key.
    """
    values = {str(k): float(v) for k, v in metrics.items()
              if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
    if not run.owned:
        values = {f"{run.name or 'sae'}/{k}": v for k, v in values.items()}
    if run.tracker == "mlflow":
        mlflow = import_mlflow()
        if run.owned:
            with mlflow.start_run(run_id=run.run_id):
                mlflow.log_metrics(values)
        else:
            mlflow.log_metrics(values)
        return values
    import wandb

    if run.owned:
        wandb.init(project=config.wandb_project, id=run.run_id, resume="allow")
        try:
            wandb.run.summary.update(values)
        finally:
            wandb.finish()
    else:
        wandb.run.summary.update(values)
    return values


class WandbLogger:
    """The wandb side of a training run with ``log_to="wandb"``: what sae-lens'
    ``SAETrainer.fit`` logs, by the trainer's own methods at the same points of each step
    (mechrec's loop drives the steps itself)."""

    def __init__(self, trainer: SAETrainer) -> None:
        import wandb

        self.trainer, self.wandb = trainer, wandb

    def sparsity(self, log: dict[str, Any]) -> None:
        """A sparsity window's log (``maybe_reset_sparsity`` / ``full_sparsity_window_log``)."""
        if log:
            self.wandb.log(log, step=self.trainer.n_training_steps)

    def step(self, out: Any) -> None:
        """After a step, before ``n_training_steps`` moves on: the train-step dict every
        ``wandb_log_frequency`` steps, the evaluations (weight histograms) less often."""
        self.trainer._log_train_step(out)
        self.trainer._run_and_log_evals()

    def record(self, record: dict[str, float]) -> None:
        """mechrec's own log records go to the progress callback only."""


class MlflowLogger:
    """The MLflow side of a training run with ``log_to="mlflow"``: a thin tracker over
    mechrec's own log records, the dicts the ``progress`` callback receives every
    ``log_every`` steps (``loss``, each loss term, ``l0``, ``dead_features``), logged as
    metrics at their step."""

    def __init__(self, mlflow: Any) -> None:
        self.mlflow = mlflow

    def sparsity(self, log: dict[str, Any]) -> None:
        """sae-lens' sparsity logs hold wandb histograms: not sent to MLflow."""

    def step(self, out: Any) -> None:
        """Nothing per step: MLflow gets the log records."""

    def record(self, record: dict[str, float]) -> None:
        """One log record as MLflow metrics at its step."""
        self.mlflow.log_metrics({k: float(v) for k, v in record.items() if k != "step"},
                                step=int(record["step"]))

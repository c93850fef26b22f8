"""Resumable SAE training: :func:`~mechrec.saes.train_sae` saves its whole state every few
steps, and a rerun continues from the last save exactly as if it had not stopped.

The state is one file, written atomically: the training SAE's weights, sae-lens' trainer state
(Adam moments, learning-rate and coefficient schedules, the counters behind dead features), the
resampling generator, torch's RNG, the log history and the step. Batches are not saved: the
data provider is seeded, so a resumed run skips the batches already used. A checkpoint made
with other settings is refused (it would silently mix two runs). A tracked training (wandb,
MLflow) also leaves its run's id beside the state, so that the resumed training logs into the
same run.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from sae_lens import SAETrainer

from mechrec._io import atomic_write, atomic_write_json
from mechrec.saes.tracking import TrackedRun

__all__ = ["CHECKPOINT_FILE", "TRACKED_RUN_FILE", "ResumedState", "TrainingCheckpoint"]

#: The state file inside a checkpoint folder.
CHECKPOINT_FILE = "training_state.pt"
#: The tracked run's id (JSON) inside a checkpoint folder.
TRACKED_RUN_FILE = "tracked_run.json"


@dataclass
class ResumedState:
    """What :meth:`TrainingCheckpoint.restore` gives back besides the restored trainer.

    Attributes:
        step: the last completed step.
        history: the log records made up to ``step``.
        n_resampled: features re-initialised up to ``step``.
        seconds: training time spent before the interruption.
    """

    step: int
    history: list[dict[str, float]] = field(default_factory=list)
    n_resampled: int = 0
    seconds: float = 0.0


@dataclass
class TrainingCheckpoint:
    """Where and how often :func:`~mechrec.saes.train_sae` saves its state.

    Attributes:
        directory: folder of the state file (created on the first save).
        every: save after every this many steps (never after the last one: the caller saves
            the finished SAE itself and then calls :meth:`clear`).
        identity: what must match for a saved state to be resumed (e.g. the training config,
            the hook, the number of activation rows); :func:`~mechrec.saes.train_sae` adds
            its config.
    """

    directory: Path
    every: int = 250
    identity: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)
        if self.every < 1:
            raise ValueError(f"every must be >= 1, got {self.every}")

    @property
    def path(self) -> Path:
        """The state file."""
        return self.directory / CHECKPOINT_FILE

    def exists(self) -> bool:
        """Whether a saved state is there to resume."""
        return self.path.is_file()

    def saved_step(self) -> int | None:
        """The step of the saved state, or ``None`` when there is none."""
        if not self.exists():
            return None
        return int(torch.load(self.path, map_location="cpu", weights_only=True)["step"])

    def tracked_run(self) -> TrackedRun | None:
        """The wandb / MLflow run the interrupted training logged to, if it was tracked."""
        path = self.directory / TRACKED_RUN_FILE
        if not path.is_file():
            return None
        return TrackedRun.from_dict(json.loads(path.read_text()))

    def save_tracked_run(self, run: TrackedRun) -> Path:
        """Record the run a tracked training logs to (read back by :meth:`tracked_run`)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        return atomic_write_json(self.directory / TRACKED_RUN_FILE, run.to_dict())

    def due(self, step: int, total: int) -> bool:
        """Whether to save after ``step`` of ``total``."""
        return step % self.every == 0 and step < total

    def save(self, step: int, trainer: SAETrainer, generator: torch.Generator,
             history: list[dict[str, float]], n_resampled: int, seconds: float) -> Path:
        """Write the state after ``step`` atomically; returns the file."""
        state = {
            "identity": json.dumps(self.identity, sort_keys=True, default=str),
            "step": step,
            "sae": trainer.sae.state_dict(),
            "optimizer": trainer.optimizer.state_dict(),
            "lr_scheduler": trainer.lr_scheduler.state_dict(),
            "coefficient_schedulers": {name: scheduler.state_dict() for name, scheduler
                                       in trainer.coefficient_schedulers.items()},
            "n_training_samples": trainer.n_training_samples,
            "n_training_steps": trainer.n_training_steps,
            "act_freq_scores": trainer.act_freq_scores,
            "n_forward_passes_since_fired": trainer.n_forward_passes_since_fired,
            "n_frac_active_samples": trainer.n_frac_active_samples,
            "started_fine_tuning": trainer.started_fine_tuning,
            "generator": generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "history": json.dumps(history),
            "n_resampled": n_resampled,
            "seconds": seconds,
        }
        return atomic_write(self.path, lambda tmp: torch.save(state, tmp))

    def restore(self, trainer: SAETrainer, generator: torch.Generator) -> ResumedState | None:
        """Load the saved state into ``trainer`` and ``generator``; ``None`` if there is none.

        Raises:
            ValueError: the state was saved by a training with other settings.
        """
        if not self.exists():
            return None
        state = torch.load(self.path, map_location=trainer.sae.device, weights_only=True)
        saved = json.loads(state["identity"])
        current = json.loads(json.dumps(self.identity, sort_keys=True, default=str))
        if saved != current:
            diffs = [f"{k}: {saved.get(k)!r} -> {current.get(k)!r}"
                     for k in sorted(set(saved) | set(current)) if saved.get(k) != current.get(k)]
            raise ValueError(
                f"{self.directory} holds an interrupted SAE training with other settings "
                f"({'; '.join(diffs[:4])}): rerun with the same settings to resume it, or "
                "delete that folder to start over"
            )
        trainer.sae.load_state_dict(state["sae"])
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.lr_scheduler.load_state_dict(state["lr_scheduler"])
        for name, scheduler_state in state["coefficient_schedulers"].items():
            trainer.coefficient_schedulers[name].load_state_dict(scheduler_state)
        for name in ("n_training_samples", "n_training_steps", "act_freq_scores",
                     "n_forward_passes_since_fired", "n_frac_active_samples",
                     "started_fine_tuning"):
            setattr(trainer, name, state[name])
        generator.set_state(state["generator"].cpu())
        torch.set_rng_state(state["torch_rng"].cpu())
        return ResumedState(step=int(state["step"]), history=json.loads(state["history"]),
                            n_resampled=int(state["n_resampled"]),
                            seconds=float(state["seconds"]))

    def clear(self) -> None:
        """Delete the checkpoint folder (after the finished SAE is saved)."""
        shutil.rmtree(self.directory, ignore_errors=True)

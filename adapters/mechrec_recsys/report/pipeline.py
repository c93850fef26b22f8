"""Run the paper's steps into one run folder, resumably, and record how each one went.

:func:`run_pipeline` walks :data:`~mechrec_recsys.report.steps.STEPS` in order. A step is
skipped when its output files exist, its record in ``reproduce/steps.json`` was made with the
same settings (:func:`~mechrec_recsys.report.settings.step_digest`) and its upstream steps
have not been redone since; otherwise it runs and its record (settings, wall time, finish
time, a fresh completion token) is written as soon as it finishes. Killing the process
therefore loses at most the step in progress, and the library's own resume (GPTRec's run
state, the Table-1 sweep's saved SAEs) keeps most of that one too.

A run folder whose records were made with *other* settings is refused before anything runs
(the error names the differing settings): results of two configurations never mix. A setting
a step's record lacks (added to :data:`~mechrec_recsys.report.settings.STEP_FIELDS` after the
step ran, like ``align_bootstrap``) is no conflict: that step reruns with it.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from mechrec_recsys.checkpoint import atomic_write_json
from mechrec_recsys.data import Dataset, Split
from mechrec_recsys.experiment import FULL_HISTORY
from mechrec_recsys.report.layout import RunLayout
from mechrec_recsys.report.settings import ReproduceSettings, step_digest, step_settings
from mechrec_recsys.report.steps import STEPS, StepContext, preflight

STEPS_FORMAT = "mechrec.reproduce_steps/1"
PROVENANCE_FORMAT = "mechrec.reproduce_provenance/1"
#: Distributions whose versions are recorded for provenance.
VERSIONED_PACKAGES: tuple[str, ...] = ("mechrec", "torch", "transformer-lens", "sae-lens",
                                       "numpy", "pandas", "scikit-learn")


@dataclass
class StepStatus:
    """What happened to one step in one invocation.

    Attributes:
        name: the step.
        status: ``"ran"`` or ``"skipped"``.
        seconds: wall time of this invocation's run (``None`` when skipped).
    """

    name: str
    status: str
    seconds: float | None = None


@dataclass
class PipelineResult:
    """Outcome of :func:`run_pipeline`.

    Attributes:
        layout: the run folder's paths.
        settings: the settings it ran with.
        statuses: one entry per step, in order.
    """

    layout: RunLayout
    settings: ReproduceSettings
    statuses: list[StepStatus] = field(default_factory=list)

    @property
    def ran(self) -> list[str]:
        """Names of the steps that ran in this invocation."""
        return [s.name for s in self.statuses if s.status == "ran"]


def package_versions(names: tuple[str, ...] = VERSIONED_PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution (``None`` when not installed)."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def provenance(device: str = "cpu") -> dict[str, Any]:
    """Versions, interpreter, platform and thread count of this process."""
    return {
        "format": PROVENANCE_FORMAT,
        "versions": package_versions(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "command": " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:]) if sys.argv else "",
    }


def read_steps(layout: RunLayout) -> dict[str, dict[str, Any]]:
    """The step records of a run folder (empty when it has none).

    Raises:
        ValueError: the file exists but is not a step record file.
    """
    path = layout.steps
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: line {exc.lineno}, column {exc.colno}: invalid JSON "
                         f"({exc.msg}); delete it to rerun every step") from None
    if not isinstance(data, dict) or data.get("format") != STEPS_FORMAT:
        raise ValueError(f"{path}: not a step record file (expected format {STEPS_FORMAT})")
    return dict(data.get("steps", {}))


def _write_steps(layout: RunLayout, records: dict[str, dict[str, Any]]) -> None:
    atomic_write_json(layout.steps, {"format": STEPS_FORMAT, "steps": records})


def settings_conflicts(settings: ReproduceSettings, records: dict[str, dict[str, Any]]
                       ) -> list[str]:
    """One line per recorded step whose settings differ from ``settings``.

    Settings the record lacks (added since the step ran) are no conflict: :func:`run_pipeline`
    reruns such a step.
    """
    lines = []
    for step in STEPS:
        record = records.get(step.name)
        if record is None or record.get("digest") == step_digest(settings, step.name):
            continue
        old = record.get("settings")
        new = step_settings(settings, step.name)
        if isinstance(old, dict) and old and all(old[key] == new[key] for key in new
                                                 if key in old):
            continue
        old = old if isinstance(old, dict) else {}
        diffs = [f"{key} {old.get(key)!r} -> {new[key]!r}" for key in new
                 if old.get(key) != new[key]]
        lines.append(f"{step.name} ({', '.join(diffs[:3]) or 'settings changed'})")
    return lines


def _check_loaded(settings: ReproduceSettings, dataset: Dataset | None,
                  split: Split | None) -> None:
    """Refuse a preloaded dataset or split other than the one ``settings`` names."""
    if dataset is not None and dataset.name != settings.dataset:
        raise ValueError(f"the dataset given is {dataset.name!r} but the settings name "
                         f"{settings.dataset!r}")
    if split is None:
        return
    info = dict(split.info)
    expected = {"dataset": settings.dataset, "kind": settings.split, "seed": settings.seed,
                "max_len": FULL_HISTORY}
    differs = {key: info.get(key) for key, value in expected.items() if info.get(key) != value}
    if differs:
        raise ValueError(f"the split given is not the one the settings name ({expected}): it "
                         f"has {differs}; make it with mechrec_recsys.report.budget.load_split")


def run_pipeline(
    settings: ReproduceSettings,
    run_dir: str | Path,
    *,
    data_dir: str | Path | None = None,
    download: bool = True,
    device: str = "cpu",
    log: Callable[[str], None] | None = None,
    dataset: Dataset | None = None,
    split: Split | None = None,
    extra_provenance: Mapping[str, Any] | None = None,
    tracking: Mapping[str, Any] | None = None,
) -> PipelineResult:
    """Run every step of the paper into ``run_dir``, skipping the ones already done.

    Args:
        settings: sizes, seeds and grids (:class:`ReproduceSettings`).
        run_dir: the run folder (created if missing).
        data_dir: folder holding the dataset (default: ``$MECHREC_DATA``, cache, download).
        download: allow downloading the dataset when no local copy exists.
        device: torch device.
        log: receives progress lines (default: none).
        dataset: the dataset ``settings`` names, when the caller has loaded it (e.g.
            :func:`~mechrec_recsys.report.budget.load_split` for a budget); default: loaded
            when a step needs it.
        split: likewise, its split as :func:`~mechrec_recsys.report.budget.load_split` makes
            it (checked against the settings).
        extra_provenance: more to record in ``reproduce/provenance.json`` (e.g. the
            command's options and config file).
        tracking: log every SAE training (Table 1's and the analysis SAE) to wandb or
            MLflow: ``SAETrainingConfig`` tracking fields (``log_to``, ``wandb_project``,
            ``mlflow_experiment``, ``run_name`` as the runs' name prefix...); each run's
            summary gets the SAE's results. Does not change any result.

    Returns:
        What ran and what was skipped.

    Raises:
        ValueError: the folder holds steps made with other settings, bad settings/data, or
            a ``dataset`` / ``split`` other than the one ``settings`` names.
        FileNotFoundError: the dataset cannot be found.
    """
    log = log or (lambda message: None)
    layout = RunLayout(run_dir, settings.sae_name)
    records = read_steps(layout)
    conflicts = settings_conflicts(settings, records)
    if conflicts:
        raise ValueError(
            f"{layout.run_dir} holds results made with other settings: "
            f"{'; '.join(conflicts)}. Use a new --out folder (or delete "
            f"{layout.steps} to redo every step)"
        )
    _check_loaded(settings, dataset, split)
    ctx = StepContext(settings=settings, layout=layout, data_dir=data_dir, download=download,
                      device=device, log=log, tracking=dict(tracking or {}),
                      _dataset=dataset, _split=split)
    if "steer" not in records:
        preflight(ctx)
    layout.reproduce_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(layout.settings, settings.to_json())
    extra = dict(extra_provenance or {})
    atomic_write_json(layout.provenance, {**provenance(device), **extra})
    result = PipelineResult(layout=layout, settings=settings)
    for number, step in enumerate(STEPS, start=1):
        prefix = f"[{number}/{len(STEPS)}] {step.name}: {step.title}"
        record = records.get(step.name)
        upstream = {name: records[name]["token"] for name in step.after}
        outputs_present = all(path.exists() for path in step.outputs(layout, settings))
        same_settings = record is not None and \
            record.get("digest") == step_digest(settings, step.name)
        if same_settings and outputs_present and record.get("upstream") == upstream:
            log(f"{prefix}: done before, skipped")
            result.statuses.append(StepStatus(step.name, "skipped"))
            continue
        fresh_upstream = record is not None and record.get("upstream") != upstream
        if record is not None and not same_settings:
            added = [key for key in step_settings(settings, step.name)
                     if key not in (record.get("settings") or {})]
            log(f"{prefix}: made without the newer setting(s) {', '.join(added)}, rerun ...")
        else:
            log(f"{prefix} ...")
        started = time.perf_counter()
        summary = step.run(ctx, fresh_upstream)
        seconds = time.perf_counter() - started
        records[step.name] = {
            "digest": step_digest(settings, step.name),
            "settings": step_settings(settings, step.name),
            "token": uuid.uuid4().hex[:12],
            "upstream": upstream,
            "seconds": seconds,
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "summary": summary,
        }
        _write_steps(layout, records)
        log(f"{prefix}: finished in {seconds:.1f} s")
        result.statuses.append(StepStatus(step.name, "ran", seconds))
    atomic_write_json(layout.provenance, {
        **provenance(device),
        **extra,
        "invocation": [{"name": s.name, "status": s.status, "seconds": s.seconds}
                       for s in result.statuses],
    })
    return result

"""SAEs for a recommender run: train at any hook, save, evaluate the Table-1 way, sweep.

Glue between the generic SAE engine (:mod:`mechrec.saes`, :mod:`mechrec.reconstruction`) and
an :class:`~mechrec_recsys.experiment.Experiment` (a ``mechrec train`` run folder: the split
and the trained GPTRec):

- :func:`train_run_sae` trains an SAE on the SAE users' activations (the paper's 40% of
  training users, split part ``sae_train``) at any hook and saves it under
  ``RUN_DIR/saes/<name>/`` (sae-lens format plus ``normalizer.safetensors``, see
  :meth:`mechrec.saes.NormalizedSAE.save`);
- :func:`evaluate_sae` gives an SAE's rows of the paper's Table 1: RMSE, explained variance,
  L0 and dead fraction on the *test* users' activations (normalised space, as in the paper),
  and NDCG@10 / HitRate@10 / Coverage@10 with standard errors of the model whose hook output
  is replaced by the de-normalised reconstruction, in both modes: ``"replace"`` (the paper's
  Table 1) and ``"keep-error"`` (labelled "replace + error": reconstruction plus the SAE's
  error term, which gives back the original model's recommendations exactly; the same two
  modes as steering). The first row is the original model; Table-1 sweep rows keep the
  "keep-error" metrics under the file columns ``replace_error_*``;
- :func:`run_table1` runs the paper's sweep (L1 weights at dictionary 2048, dictionary sizes
  at L1 0.1, several seeds) through :func:`mechrec.saes.sweep_saes`, which saves every SAE
  with its row and skips it on a rerun, so an interrupted sweep continues where it stopped
  (the sweep's folder is tied to the hash of the model's weights, so SAEs cached for a model
  since retrained in the same run folder are never reused). Beside Table 1's metrics every
  SAE gets the field's splice-quality numbers on the test users (:func:`table1_quality`:
  next-item loss and NDCG@10 recovered against zero and mean ablation of the hook, KL of the
  next-item distribution; the ablated and original runs are computed once per sweep). It
  returns a :class:`Table1`,
  a typed result that :meth:`Table1.save` writes as ``table1.json`` (everything: the rows,
  every run, the settings and grid it was run with, the seeds) and ``table1.csv`` (the table
  as users read it), :meth:`Table1.load` reads back equal, and :meth:`Table1.plot` draws
  (:func:`mechrec.plots.table1_figure`). :func:`write_table1` is :meth:`Table1.save`.

Standard errors: NDCG and HitRate are means over test users (``std / sqrt(n)``); Coverage is
a set-level metric, so its standard error is a bootstrap over test users
(:func:`mechrec_recsys.metrics.evaluate_top_k`). Across seeds the sweep reports the standard
deviation of every metric (the paper averages 5 runs per point).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import shutil
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mechrec._io import (
    atomic_write_json,
    atomic_write_text,
    exclusive_claim,
    json_safe,
    json_sha256,
)
from mechrec.activations import ActivationSource, collect_activations
from mechrec.alignment import (
    DegenerateInputWarning,
    alignment_stats,
    encode_sparse,
    interpretability_score,
    token_attributes,
)
from mechrec.distributed import DistContext, barrier
from mechrec.hooks import check_sae_fits as fits
from mechrec.hooks import resolve_hook
from mechrec.reconstruction import (
    REPLACE_MODES,
    ReconstructionMetrics,
    evaluate_with_reconstruction,
    reconstruction_metrics,
)
from mechrec.saes import (
    PAPER_DICT_SIZES,
    PAPER_L1_GRID,
    MissingHookNameError,
    NormalizedSAE,
    SAETrainingConfig,
    TrainingCheckpoint,
    TrainingResult,
    run_name,
    summarize_sweep,
    sweep_saes,
    train_sae,
)
from mechrec_recsys.checkpoint import (
    checkpoint_sha256,
    read_json,
    state_dict_sha256,
)
from mechrec_recsys.configs import PAPER_HOOK
from mechrec_recsys.experiment import MODEL_DIR, Experiment, RunSpec
from mechrec_recsys.metrics import RankingReport, paired_difference
from mechrec_recsys.metrics import evaluate_top_k as ranking_report
from mechrec_recsys.sae_quality import splice_baselines, splice_quality

#: Sub-folder of a run folder holding its SAEs.
SAES_DIR = "saes"
#: Shard size (MB) of the activation store the ranks share when an SAE trains under torchrun;
#: it bounds the memory each rank holds while collecting.
SHARD_MB = 256.0
#: Sub-folder of ``RUN_DIR/saes`` holding the Table-1 sweeps.
TABLE1_DIR = "table1"
SWEEP_SPEC_FILE = "sweep.json"
SWEEP_SPEC_FORMAT = "mechrec.table1_sweep/1"
#: Format of ``table1.json``; version 2 adds the grid and the original model's full row,
#: version 3 the splice-quality columns (:data:`QUALITY_COLUMN_KEYS`).
TABLE1_FORMAT = "mechrec.table1/3"
#: Earlier formats :meth:`Table1.load` still reads (their grid comes from the rows; columns
#: they lack are ``None``).
TABLE1_OLD_FORMATS: tuple[str, ...] = ("mechrec.table1/1", "mechrec.table1/2")
#: File names of a saved Table 1 in a folder (a run folder: ``RUN_DIR/table1.csv``).
TABLE1_CSV = "table1.csv"
TABLE1_JSON = "table1.json"
#: Labels of the evaluation modes, in table order.
MODE_LABELS: dict[str, str] = {"replace": "replace", "keep-error": "replace + error"}
#: Downstream metrics of a row, each with ``<name>_se`` beside it.
RANKING_KEYS: tuple[str, ...] = ("ndcg", "hit_rate", "coverage")
#: Reconstruction metrics of a row.
RECONSTRUCTION_KEYS: tuple[str, ...] = ("rmse", "explained_variance", "l0", "dead_fraction")
#: Figure 3's interpretability numbers of a row (see :func:`genre_interpretability`).
INTERPRETABILITY_KEYS: tuple[str, ...] = ("genre_corr_honest", "genre_corr_in_sample")
#: The splice-quality numbers of a row (:func:`mechrec_recsys.sae_quality.splice_quality` on
#: the test users): the share of the next-item loss and of NDCG@k that the SAE recovers
#: against a zero and a mean ablation of the hook, and the KL of the next-item distribution.
QUALITY_COLUMN_KEYS: tuple[str, ...] = ("loss_recovered_zero", "loss_recovered_mean",
                                        "ndcg_recovered_zero", "ndcg_recovered_mean", "kl")
#: Columns of the Table-1 CSV (``*_std``: over seeds; ``*_se``: over test users).
TABLE1_COLUMNS: tuple[str, ...] = (
    "sweep", "l1_coefficient", "d_sae", "n_seeds",
    *(f"{key}_{stat}" for key in RECONSTRUCTION_KEYS for stat in ("mean", "std")),
    *(f"{key}_{stat}" for key in RANKING_KEYS for stat in ("mean", "std", "se")),
    "ndcg_delta_mean", "ndcg_delta_se", "dead_fraction_train_mean", "replace_error_identical",
    "seconds_mean",
    *(f"{key}_{stat}" for key in INTERPRETABILITY_KEYS for stat in ("mean", "std")),
    *(f"{key}_{stat}" for key in QUALITY_COLUMN_KEYS for stat in ("mean", "std")),
)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=,+-]*$")


# -------------------------------------------------------------------------------- run folders
def check_hook(experiment: Experiment, hook: str) -> int:
    """Check the run's model has ``hook`` with one vector per position; return its width
    (:func:`mechrec.hooks.resolve_hook`).

    Raises:
        HookNameError: unknown hook (the message suggests close matches) or a hook holding
            attention patterns.
    """
    return resolve_hook(experiment.model, hook).width


def check_sae_fits(experiment: Experiment, nsae: NormalizedSAE, where: str = "the SAE") -> None:
    """Check ``nsae`` reads a hook of the run's model, with the width the model has there
    (:func:`mechrec.hooks.check_sae_fits`, with the CLI command that trains a fitting SAE).

    Raises:
        ValueError: the SAE's hook does not exist in the model, or its ``d_in`` differs
            from the width of the model's activations at that hook.
    """
    fits(experiment.model, nsae, where=where,
         fix=f"train one for this run with 'mechrec sae train RUN_DIR --hook {nsae.hook_name}'")


def sae_directory(run_dir: str | os.PathLike, name: str) -> Path:
    """``RUN_DIR/saes/<name>``; ``name`` must be one plain folder name."""
    if not _NAME_RE.match(name) or ".." in name:
        raise ValueError(
            f"invalid SAE name {name!r}: use letters, digits and . _ = , + - (no path "
            "separators), e.g. 'standard-d2048-l1=0.1'"
        )
    return Path(run_dir) / SAES_DIR / name


def resolve_sae_directory(run_dir: str | os.PathLike, sae: str | os.PathLike) -> Path:
    """An SAE folder given as a path, or as a name under ``RUN_DIR/saes/``; also a
    dictionary_learning ``ae.pt`` file given as a path.

    Raises:
        FileNotFoundError: neither exists; the message names both places looked at, the SAEs
            the run has, and the command that trains one.
    """
    path = Path(sae)
    if path.is_dir() or (path.is_file() and path.suffix == ".pt"):
        return path
    candidate = Path(run_dir) / SAES_DIR / str(sae)
    if candidate.is_dir():
        return candidate
    saes = Path(run_dir) / SAES_DIR
    have = sorted(p.name for p in saes.iterdir()
                  if p.is_dir() and p.name != TABLE1_DIR and not p.name.startswith(".")) \
        if saes.is_dir() else []
    known = f"this run's SAEs: {', '.join(have)}" if have else "this run has no SAE yet"
    places = list(dict.fromkeys(str(p) for p in (candidate, path)))
    raise FileNotFoundError(
        f"SAE {str(sae)!r} not found: {' and '.join(places)} "
        f"{'does' if len(places) == 1 else 'do'} not exist ({known}); train one with "
        f"'mechrec sae train {run_dir} --name {path.name}'"
    )


#: Save the state of ``mechrec sae train`` every this many steps.
CHECKPOINT_EVERY = 100


def sae_checkpoint(run_dir: str | os.PathLike, name: str) -> TrainingCheckpoint:
    """Where an unfinished SAE ``name`` of a run keeps its training state:
    ``RUN_DIR/saes/.NAME.partial/`` (hidden; deleted once the SAE is saved)."""
    sae_directory(run_dir, name)  # checks the name
    return TrainingCheckpoint(Path(run_dir) / SAES_DIR / f".{name}.partial",
                              every=CHECKPOINT_EVERY)


def default_sae_name(config: SAETrainingConfig, hook: str) -> str:
    """A readable folder name, e.g. ``blocks.0.hook_resid_post-standard-d2048-l1=0.1-seed0``."""
    parameter, value = config.sparsity_parameter
    short = {"l1_coefficient": "l1", "k": "k", "target_l0": "target_l0",
             "l0_coefficient": "l0_coefficient"}[parameter]
    value_text = f"{value:g}" if isinstance(value, float) else str(value)
    return f"{hook}-{config.architecture}-d{config.d_sae}-{short}={value_text}-seed{config.seed}"


def sae_source(experiment: Experiment, hook: str) -> dict[str, str]:
    """What an SAE trained on ``experiment``'s activations at ``hook`` records as its source:
    the SHA-256 of the model's weights (as in its checkpoint) and the hook."""
    return {"model_sha256": model_weights_sha256(experiment), "hook_name": hook}


def check_sae_source(experiment: Experiment, nsae: NormalizedSAE,
                     where: str = "the SAE") -> None:
    """Refuse an SAE whose recorded source is another model (or another hook).

    SAEs that record no source (plain sae-lens saves, or SAEs saved without one) cannot be
    checked this way; :func:`check_sae_fits` still checks their hook and width.

    Raises:
        ValueError: the recorded model hash or hook differs from the run's; the message names
            both and the way out (``allow_other_model`` / ``--allow-other-model``).
    """
    source = nsae.source or {}
    recorded = source.get("model_sha256")
    if recorded is not None:
        digest = model_weights_sha256(experiment)
        if recorded != digest:
            raise ValueError(
                f"{where} was trained on another model (weights {str(recorded)[:12]}..., this "
                f"run's model is {digest[:12]}...), even if its width fits: train an SAE for "
                "this run with 'mechrec sae train', or pass --allow-other-model if you really "
                "mean to use it with this model"
            )
    hook = source.get("hook_name")
    if hook is not None and hook != nsae.hook_name:
        raise ValueError(
            f"{where} was trained at hook {hook!r} but is set to read {nsae.hook_name!r}: use "
            f"it at {hook!r}, or pass --allow-other-model if you really mean to move it"
        )


def load_run_sae(
    experiment: Experiment, directory: str | os.PathLike, *, device: str = "cpu",
    allow_other_model: bool = False, hook_name: str | None = None,
) -> NormalizedSAE:
    """Load a saved SAE (with its normaliser; file hashes checked) and check that it fits the
    run's model: hook and width always, the recorded source model and hook unless
    ``allow_other_model``.

    A plain sae-lens folder (``cfg.json`` and ``sae_weights.safetensors`` only, e.g. one
    trained elsewhere) is used as it is, reading raw activations
    (:meth:`NormalizedSAE.from_sae_lens`); its hook comes from ``metadata.hook_name`` in its
    ``cfg.json``, or from ``hook_name``. Other libraries' checkpoints (a sparsify folder, a
    dictionary_learning ``ae.pt`` or its folder) are converted to the equivalent sae-lens
    SAE (:func:`mechrec.saes.load_foreign_sae`); they name no TransformerLens hook, so
    ``hook_name`` (the CLI's ``--hook``) is needed.

    Raises:
        MissingHookNameError: the SAE records no hook and ``hook_name`` is not given; the
            message names the CLI option too."""
    try:
        nsae = NormalizedSAE.load(directory, device=device, hook_name=hook_name)
    except MissingHookNameError as exc:
        raise MissingHookNameError(
            f"{' '.join(str(exc).split())}. On the command line: --hook HOOK, e.g. --hook "
            f"{PAPER_HOOK}") from None
    where = f"the SAE in {directory}"
    check_sae_fits(experiment, nsae, where=where)
    if not allow_other_model:
        check_sae_source(experiment, nsae, where=where)
    return nsae


# -------------------------------------------------------------------------------- training
@dataclass
class RunSAE:
    """An SAE trained for a run.

    Attributes:
        sae: the trained SAE with its normaliser.
        training: what :func:`mechrec.saes.train_sae` returned (history, dead fraction in
            the last training window, resampled features, time).
        test_metrics: reconstruction metrics on the test users' activations.
        directory: where it was saved (``None`` if not saved).
    """

    sae: NormalizedSAE
    training: TrainingResult
    test_metrics: ReconstructionMetrics
    directory: Path | None = None


def train_run_sae(
    experiment: Experiment,
    config: SAETrainingConfig,
    *,
    hook: str = PAPER_HOOK,
    run_dir: str | os.PathLike | None = None,
    name: str | None = None,
    overwrite: bool = False,
    progress: Callable[[dict[str, float]], None] | None = None,
    dist: DistContext | None = None,
    memory_budget_mb: float | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> RunSAE:
    """Train an SAE on the SAE users' activations at ``hook`` and (optionally) save it.

    Args:
        experiment: the run (its split must have a ``sae_train`` part: paper or random split).
        config: architecture and hyperparameters.
        hook: TransformerLens hook name (default: the first block's output).
        run_dir: if given, save to ``run_dir/saes/<name>/``.
        name: folder name (default: :func:`default_sae_name`).
        overwrite: replace an SAE already saved under that name (and start afresh).
        progress: called with every training log record.
        dist: the process group under ``torchrun`` (:func:`mechrec.distributed.setup_distributed`).
            With several processes ``run_dir`` is required: each rank collects its slice of
            the SAE users' activations into a sharded store shared by all ranks
            (``RUN_DIR/saes/.<name>.activations/``, removed once the SAE is saved), the SAE
            is trained data-parallel on it (:func:`mechrec.saes.train_sae`) and only rank 0
            claims the name, writes checkpoints and saves the SAE.
        memory_budget_mb: hold at most this many MB of activations in memory (one process;
            needs ``run_dir``): the SAE users' and the test users' activations are written
            to sharded stores beside the SAE (``RUN_DIR/saes/.<name>.activations/``,
            ``.<name>.test-activations/``, removed once the SAE is saved) and read back
            shard by shard, so memory is bounded by the budget, not by the number of users.
            ``None``: both in memory.
        provenance: more to record in the saved SAE's ``mechrec.json`` (e.g. the command's
            settings), next to the training config and the test metrics.

    The name is claimed for the whole run (an OS lock on ``RUN_DIR/saes/.<name>.lock``, gone
    when the process ends), so two overlapping runs of the same name cannot both write it: the
    second stops at once. Without ``overwrite`` the save also refuses a folder that appeared
    meanwhile. The saved SAE records the model's weight hash and the hook as its source.

    With ``run_dir`` the training state is saved every :data:`CHECKPOINT_EVERY` steps
    (:func:`sae_checkpoint`); after an interruption the same call resumes it exactly
    (``overwrite`` starts afresh).

    Raises:
        HookNameError: unknown hook; FileExistsError: the folder exists and not ``overwrite``,
        or another process is training an SAE of that name.
    """
    check_hook(experiment, hook)
    parallel = dist if dist is not None and dist.enabled else None
    if memory_budget_mb is not None and (run_dir is None or memory_budget_mb <= 0):
        raise ValueError(f"a memory budget ({memory_budget_mb} MB) needs a positive number of "
                         "MB and a run folder to spill the activations into (run_dir=...)")
    if run_dir is None:
        if parallel is not None:
            raise ValueError(
                "training an SAE under torchrun needs a run folder: the ranks share the "
                "activations through a store in it"
            )
        return _train_run_sae(experiment, config, hook, None, None, overwrite, progress, None,
                              None, provenance)
    directory = sae_directory(run_dir, name or default_sae_name(config, hook))
    if parallel is not None and not parallel.is_main:
        return _train_run_sae(experiment, config, hook, Path(run_dir), directory, overwrite,
                              progress, parallel, memory_budget_mb, provenance)
    with exclusive_claim(directory.with_name(f".{directory.name}.lock"),
                         f"the SAE {directory}"):
        return _train_run_sae(experiment, config, hook, Path(run_dir), directory, overwrite,
                              progress, parallel, memory_budget_mb, provenance)


def _train_run_sae(
    experiment: Experiment, config: SAETrainingConfig, hook: str, run_dir: Path | None,
    directory: Path | None, overwrite: bool,
    progress: Callable[[dict[str, float]], None] | None, dist: DistContext | None,
    memory_budget_mb: float | None,
    provenance: Mapping[str, Any] | None = None,
) -> RunSAE:
    """:func:`train_run_sae` once the name is claimed (by rank 0 under ``torchrun``)."""
    main = dist is None or dist.is_main
    if directory is not None and directory.exists() and not overwrite:
        raise FileExistsError(
            f"{directory} already exists: choose another name (--name) or replace it "
            "(--overwrite)"
        )
    checkpoint = None
    if run_dir is not None and directory is not None:
        checkpoint = sae_checkpoint(run_dir, directory.name)
        if overwrite and main:
            checkpoint.clear()
    store_dir = test_dir = None
    source: ActivationSource
    if (dist is not None or memory_budget_mb is not None) and directory is not None:
        if dist is not None:
            barrier(dist)  # rank 0 has cleared what --overwrite replaces
        store_dir = directory.with_name(f".{directory.name}.activations")
        source = collect_activations(experiment.model, experiment.batches("sae_train"), hook,
                                     memory_budget_mb=memory_budget_mb or SHARD_MB,
                                     store_dir=store_dir, overwrite=True, dist=dist)
    else:
        source = experiment.activations("sae_train", hook)
    if checkpoint is not None:
        checkpoint.identity = {"rows": len(source),
                               "model_sha256": state_dict_sha256(experiment.model)}
    result = train_sae(source, config, hook_name=hook, progress=progress, checkpoint=checkpoint,
                       dist=dist)
    if memory_budget_mb is not None and directory is not None:
        rank = "" if dist is None else f"-r{dist.rank:03d}"  # each rank reads its own copy
        test_dir = directory.with_name(f".{directory.name}.test-activations{rank}")
        test: ActivationSource = collect_activations(
            experiment.model, experiment.batches("test"), hook,
            memory_budget_mb=memory_budget_mb, store_dir=test_dir, overwrite=True)
    else:
        test = experiment.activations("test", hook)
    metrics = reconstruction_metrics(result.sae, test)
    result.sae.source = sae_source(experiment, hook)
    if directory is not None and run_dir is not None:
        result.sae.provenance = {
            **(result.sae.provenance or {}),
            "run": {"run_dir": str(run_dir.resolve()), **_spec_dict(experiment.spec),
                    "trained_on": "sae_train"},
            "test_metrics": json_safe(metrics.as_dict()),
            "dead_fraction_train": result.dead_fraction_train,
            "n_resampled": result.n_resampled,
            "seconds": result.seconds,
            **(provenance or {}),
        }
        if main:
            result.sae.save(directory, overwrite=overwrite)
            if checkpoint is not None:
                checkpoint.clear()
    if dist is not None:
        barrier(dist)  # every rank is done reading the shared store
    if test_dir is not None:
        shutil.rmtree(test_dir, ignore_errors=True)
    if main and store_dir is not None:
        shutil.rmtree(store_dir, ignore_errors=True)
    return RunSAE(sae=result.sae, training=result, test_metrics=metrics, directory=directory)


# -------------------------------------------------------------------------------- evaluation
@dataclass
class Downstream:
    """Top-K lists of the test users and their ranking report."""

    top_k: np.ndarray
    report: RankingReport

    def row(self) -> dict[str, float]:
        """``ndcg``, ``ndcg_se``, ``hit_rate``, ``hit_rate_se``, ``coverage``, ``coverage_se``."""
        out: dict[str, float] = {}
        for key in RANKING_KEYS:
            estimate = self.report.metrics[key]
            out[key] = estimate.mean
            out[f"{key}_se"] = estimate.se
        return out


def downstream(
    experiment: Experiment,
    nsae: NormalizedSAE | None = None,
    *,
    mode: str = "replace",
    k: int = 10,
    n_bootstrap: int = 200,
) -> Downstream:
    """Recommend top-``k`` for the test users and score them, optionally with the SAE's hook
    output replaced by its reconstruction (``mode``: ``"replace"`` / ``"keep-error"``)."""
    if nsae is None:
        top_k = experiment.recommend("test", k)
    else:
        top_k = evaluate_with_reconstruction(
            experiment.model, nsae, lambda model: experiment.recommend("test", k), mode=mode)
    report = ranking_report(top_k, experiment.part("test").targets,
                            train_items=experiment.train_items(), k=k,
                            n_bootstrap=n_bootstrap)
    return Downstream(top_k=top_k, report=report)


def evaluate_sae(
    experiment: Experiment,
    nsae: NormalizedSAE,
    *,
    modes: Sequence[str] = REPLACE_MODES,
    k: int = 10,
    original: Downstream | None = None,
) -> list[dict[str, Any]]:
    """The SAE's Table-1 rows; the first row is the original model.

    Every row has ``model`` (``"original"``, ``"replace"`` or ``"replace + error"``),
    ``mode``, the ranking metrics with standard errors (:meth:`Downstream.row`) and, for SAE
    rows, the reconstruction metrics on the test users' activations (``rmse``,
    ``explained_variance``, ``l0``, ``dead_fraction``, ``n_dead``, ``n_rows``, ``space``),
    ``ndcg_delta`` / ``ndcg_delta_se`` (paired difference with the original over test users)
    and ``identical_top_k`` (the top-K lists equal the original's).

    Args:
        experiment: the run.
        nsae: the SAE (checked against the run's model).
        modes: evaluation modes (see :mod:`mechrec.reconstruction`).
        k: list length.
        original: the original model's result, if already computed.
    """
    for mode in modes:
        if mode not in REPLACE_MODES:
            raise ValueError(f"unknown mode {mode!r}; choose from {REPLACE_MODES}")
    check_sae_fits(experiment, nsae)
    original = original if original is not None else downstream(experiment, k=k)
    recon = reconstruction_on_test(experiment, nsae)
    rows: list[dict[str, Any]] = [{"model": "original", "mode": "original", **original.row()}]
    for row in _replaced_rows(experiment, nsae, modes, k, original):
        rows.append({"model": row["model"], "mode": row["mode"], **recon.as_dict(), **row})
    return rows


def reconstruction_on_test(experiment: Experiment, nsae: NormalizedSAE
                                ) -> ReconstructionMetrics:
    """:func:`mechrec.reconstruction.reconstruction_metrics` on the test users' activations
    (a transcoder's prediction compared with the activations at its output hook)."""
    target = (experiment.activations("test", nsae.hook_name_out) if nsae.is_transcoder
              else None)
    return reconstruction_metrics(nsae, experiment.activations("test", nsae.hook_name),
                                  target=target)


def _replaced_rows(experiment: Experiment, nsae: NormalizedSAE, modes: Sequence[str], k: int,
                   original: Downstream) -> list[dict[str, Any]]:
    rows = []
    for mode in modes:
        result = downstream(experiment, nsae, mode=mode, k=k)
        delta = paired_difference(result.report.per_user["ndcg"], original.report.per_user["ndcg"])
        rows.append({
            "model": MODE_LABELS[mode], "mode": mode, **result.row(),
            "ndcg_delta": delta.mean, "ndcg_delta_se": delta.se,
            "identical_top_k": bool(np.array_equal(result.top_k, original.top_k)),
        })
    return rows


# -------------------------------------------------------------------------------- Table 1
def table1_points(
    l1_values: Iterable[float] = PAPER_L1_GRID,
    d_sae_values: Iterable[int] = PAPER_DICT_SIZES,
    *,
    l1_d_sae: int = 2048,
    d_sae_l1: float = 0.1,
) -> list[dict[str, Any]]:
    """The sweep's points without repeats: every L1 weight at dictionary ``l1_d_sae``, then
    every dictionary size at L1 ``d_sae_l1`` (their common point is trained once)."""
    points: list[dict[str, Any]] = []
    for d_sae, l1 in [(l1_d_sae, v) for v in l1_values] + [(d, d_sae_l1) for d in d_sae_values]:
        point = {"d_sae": int(d_sae), "l1_coefficient": float(l1)}
        if point not in points:
            points.append(point)
    return points


@dataclass
class Table1:
    """The result of :func:`run_table1`: Table 1's lines, every SAE run behind them and the
    settings they were run with.

    Save it with :meth:`save` (``table1.json`` and ``table1.csv``), read it back with
    :meth:`load` (equal to the saved object; non-finite numbers are stored as JSON ``null``
    and read back as ``None``), look at it with :meth:`frame` / :meth:`runs_frame` and draw
    it with :meth:`plot`.

    Attributes:
        hook: the hook the SAEs read.
        k: list length of the ranking metrics.
        seeds: seeds each point was trained with.
        base_config: training configuration shared by every run (as a dict).
        original: the original model's row (ranking metrics with standard errors).
        runs: one row per (point, seed), as returned by :func:`mechrec.saes.sweep_saes`.
        summary: one row per table line (columns :data:`TABLE1_COLUMNS`): ``sweep`` is
            ``"l1"`` (the L1 weights at one dictionary size) or ``"d_sae"`` (the dictionary
            sizes at one L1 weight); means and standard deviations over seeds.
        directory: where the sweep's SAEs are saved.
        info: the run (dataset, split, seed), the model's weight hash and the row counts.
        l1_values: L1 weights swept at dictionary size ``l1_d_sae``.
        d_sae_values: dictionary sizes swept at L1 weight ``d_sae_l1``.
        l1_d_sae: dictionary size of the L1 sweep (``None``: unknown, no L1 sweep).
        d_sae_l1: L1 weight of the dictionary-size sweep (``None``: unknown, no size sweep).
    """

    hook: str
    k: int
    seeds: list[int]
    base_config: dict[str, Any]
    original: dict[str, Any]
    runs: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    directory: Path
    info: dict[str, Any] = field(default_factory=dict)
    l1_values: list[float] = field(default_factory=list)
    d_sae_values: list[int] = field(default_factory=list)
    l1_d_sae: int | None = None
    d_sae_l1: float | None = None

    @property
    def grid(self) -> dict[str, Any]:
        """The swept grid: ``l1_values``, ``d_sae_values``, ``l1_d_sae``, ``d_sae_l1``."""
        return {"l1_values": list(self.l1_values), "d_sae_values": list(self.d_sae_values),
                "l1_d_sae": self.l1_d_sae, "d_sae_l1": self.d_sae_l1}

    def rows(self) -> list[dict[str, Any]]:
        """The table's lines, the original model first, with the columns of the CSV."""
        original = {column: None for column in TABLE1_COLUMNS}
        original["sweep"] = "original"
        for key in RANKING_KEYS:
            original[f"{key}_mean"] = self.original.get(key)
            original[f"{key}_se"] = self.original.get(f"{key}_se")
        return [original, *self.summary]

    def frame(self) -> pd.DataFrame:
        """The table as a data frame (:meth:`rows`; columns :data:`TABLE1_COLUMNS`)."""
        return pd.DataFrame(self.rows(), columns=list(TABLE1_COLUMNS))

    def runs_frame(self) -> pd.DataFrame:
        """Every SAE run (one row per point and seed) as a data frame."""
        return pd.DataFrame(self.runs)

    def plot(self, metrics: Sequence[str] = ("explained_variance", "l0", "ndcg"),
             **kwargs: Any) -> Any:
        """A plotly figure of the grid: each metric vs the L1 weight and vs the dictionary
        size, mean ± std over seeds and, with several seeds, each seed's value; ranking
        metrics with the original model as a dotted line. See
        :func:`mechrec.plots.table1_figure` (``kwargs`` go to it)."""
        from mechrec.plots import table1_figure

        return table1_figure(self.rows(), runs=self.runs, metrics=metrics, k=self.k, **kwargs)

    def to_json(self) -> dict[str, Any]:
        """What :meth:`save` writes to ``table1.json`` (format :data:`TABLE1_FORMAT`)."""
        return json_safe({
            "format": TABLE1_FORMAT, "hook": self.hook, "k": self.k, "seeds": self.seeds,
            "base_config": self.base_config, "grid": self.grid,
            "sweep_directory": str(self.directory), "info": self.info,
            "original": self.original, "rows": self.rows(), "runs": self.runs,
        })

    def to_csv(self) -> str:
        """The table as CSV text (columns :data:`TABLE1_COLUMNS`, missing values empty)."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(TABLE1_COLUMNS), lineterminator="\n")
        writer.writeheader()
        for row in self.rows():
            writer.writerow({key: "" if _missing(value) else value for key, value in row.items()})
        return buffer.getvalue()

    def save(self, path: str | os.PathLike) -> tuple[Path, Path]:
        """Write the table atomically as JSON (everything :meth:`load` needs) and CSV.

        Args:
            path: a folder (files ``table1.json`` and ``table1.csv`` in it, e.g. the run
                folder) or the CSV's or the JSON's path (the other is written beside it,
                same name).

        Returns:
            ``(csv_path, json_path)``.
        """
        csv_path, json_path = table1_paths(path)
        atomic_write_text(csv_path, self.to_csv())
        atomic_write_json(json_path, self.to_json(), sort_keys=False)  # rows in column order
        return csv_path, json_path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Table1:
        """The table :meth:`save` wrote (or :func:`write_table1` of an earlier version).

        Args:
            path: as for :meth:`save`: a folder holding ``table1.json``, or the JSON's or the
                CSV's path (the JSON beside it is read).

        Raises:
            FileNotFoundError: no ``table1.json`` (the message says whether a CSV alone was
                found, which holds too little to rebuild the result, and how to write both).
            ValueError: a damaged file or an unknown format; the message says how to
                rewrite it.
        """
        csv_path, json_path = table1_paths(path)
        rerun = ("re-run 'mechrec sae table1 RUN_DIR' (or the reproduce step table1): the "
                 "sweep's SAEs are cached, so it only re-evaluates them")
        if not json_path.is_file():
            if csv_path.is_file():
                raise FileNotFoundError(
                    f"{json_path} is missing: {csv_path} alone holds only the table's numbers, "
                    f"not the settings, seeds and runs a Table1 is made of; {rerun}")
            raise FileNotFoundError(f"{json_path} is missing: write Table 1 with "
                                    "'mechrec sae table1 RUN_DIR' (or mechrec reproduce)")
        try:
            payload = json.loads(json_path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ValueError(f"{json_path} is not a readable Table 1 "
                             f"({' '.join(str(exc).split())}); {rerun}") from None
        fmt = payload.get("format") if isinstance(payload, dict) else None
        if fmt != TABLE1_FORMAT and fmt not in TABLE1_OLD_FORMATS:
            raise ValueError(f"{json_path} has format {fmt!r}, not {TABLE1_FORMAT!r}; {rerun}")
        try:
            return cls._from_json(payload)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise ValueError(f"{json_path} is not a complete Table 1 ({type(exc).__name__}: "
                             f"{exc}); {rerun}") from None

    @classmethod
    def _from_json(cls, payload: dict[str, Any]) -> Table1:
        rows = [dict(row) for row in payload["rows"]]
        if not rows or rows[0]["sweep"] != "original":
            raise ValueError("its first row is not the original model's")
        # columns an earlier format did not have (e.g. the splice quality of format 2): None
        summary = [{column: row.get(column) for column in TABLE1_COLUMNS} for row in rows[1:]]
        if "original" in payload:
            original = dict(payload["original"])
        else:  # format 1: the original model's metrics only in its row
            original = {}
            for key in RANKING_KEYS:
                original[key] = rows[0][f"{key}_mean"]
                original[f"{key}_se"] = rows[0][f"{key}_se"]
        if "grid" in payload:
            grid = dict(payload["grid"])
        else:  # format 1: the grid is what the rows show
            l1_rows = [r for r in summary if r["sweep"] == "l1"]
            size_rows = [r for r in summary if r["sweep"] == "d_sae"]
            grid = {"l1_values": [r["l1_coefficient"] for r in l1_rows],
                    "d_sae_values": [r["d_sae"] for r in size_rows],
                    "l1_d_sae": l1_rows[0]["d_sae"] if l1_rows else None,
                    "d_sae_l1": size_rows[0]["l1_coefficient"] if size_rows else None}
        return cls(
            hook=str(payload["hook"]), k=int(payload["k"]),
            seeds=[int(seed) for seed in payload["seeds"]],
            base_config=dict(payload["base_config"]), original=original,
            runs=[dict(run) for run in payload["runs"]], summary=summary,
            directory=Path(payload["sweep_directory"]), info=dict(payload.get("info", {})),
            l1_values=list(grid["l1_values"]), d_sae_values=list(grid["d_sae_values"]),
            l1_d_sae=grid["l1_d_sae"], d_sae_l1=grid["d_sae_l1"])


def table1_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """``(csv_path, json_path)`` of a saved Table 1: ``path`` is a folder (``table1.csv``
    and ``table1.json`` in it) or the CSV's or the JSON's path (the other one beside it)."""
    path = Path(path)
    if path.suffix.lower() in (".csv", ".json"):
        return path.with_suffix(".csv"), path.with_suffix(".json")
    return path / TABLE1_CSV, path / TABLE1_JSON


def sweep_directory(run_dir: str | os.PathLike, hook: str, base: SAETrainingConfig,
                    k: int, *, model_sha256: str | None = None) -> Path:
    """Folder of a Table-1 sweep: one per trained model, hook and shared training
    configuration, so a rerun with the same model and settings resumes, and one with other
    settings or a retrained model never mixes with (or reuses) SAEs cached for another.
    Tracking settings (``log_to``, run names...) do not change the folder.

    Args:
        run_dir: the run folder.
        hook: the hook the SAEs read.
        base: the training configuration shared by the sweep.
        k: list length of the ranking metrics.
        model_sha256: SHA-256 of the model's weights (:func:`model_weights_sha256`);
            default: the one recorded in the run's checkpoint (``RUN_DIR/model/config.json``).

    Raises:
        FileNotFoundError: ``model_sha256`` not given and the run has no trained model.
    """
    if model_sha256 is None:
        model_sha256 = checkpoint_sha256(Path(run_dir) / MODEL_DIR)
    shared = {key: value for key, value in base.to_dict(tracking=False).items()
              if key not in ("seed", "d_sae", "l1_coefficient")}
    digest = json_sha256({"hook": hook, "k": k, "config": shared,
                          "model_sha256": model_sha256})[:8]
    tag = (f"{base.architecture}-steps{base.steps}-batch{base.batch_size}-lr{base.lr:g}-"
           f"model{model_sha256[:8]}-{digest}")
    return Path(run_dir) / SAES_DIR / TABLE1_DIR / hook / tag


def model_weights_sha256(experiment: Experiment) -> str:
    """SHA-256 of the experiment's model weights.

    For a model loaded from a run folder it equals the ``weights_sha256`` recorded in its
    checkpoint (see :func:`mechrec_recsys.checkpoint.state_dict_sha256`).
    """
    return state_dict_sha256(experiment.model)


def _check_sweep_owner(directory: Path, digest: str) -> None:
    """Refuse a sweep folder whose SAEs were made for another model (or by an older version
    that did not record the model), instead of silently reusing them."""
    spec_path = directory / SWEEP_SPEC_FILE
    if not spec_path.is_file():
        return
    recorded = read_json(spec_path)
    recorded = recorded.get("model_sha256") if isinstance(recorded, dict) else None
    if recorded != digest:
        raise ValueError(
            f"{directory} holds SAEs cached for another model (its {SWEEP_SPEC_FILE} records "
            f"model weights {str(recorded)[:12]}..., this run's model is {digest[:12]}...): "
            "delete that folder to rerun the sweep for this model"
        )


def run_table1(
    experiment: Experiment,
    run_dir: str | os.PathLike,
    *,
    hook: str = PAPER_HOOK,
    l1_values: Sequence[float] = PAPER_L1_GRID,
    d_sae_values: Sequence[int] = PAPER_DICT_SIZES,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    l1_d_sae: int = 2048,
    d_sae_l1: float = 0.1,
    base: SAETrainingConfig | None = None,
    k: int = 10,
    progress: Callable[[int, int, dict[str, Any]], None] | None = None,
    workers: int = 1,
) -> Table1:
    """The paper's Table 1 sweep on a run: standard (ReLU + L1) SAEs on the SAE users'
    activations, measured on the test users.

    Every SAE is saved with its row under :func:`sweep_directory`, a folder tied to the
    SHA-256 of the model's weights; a rerun with the same model loads those instead of
    retraining them, so an interrupted sweep continues where it stopped, while a retrained
    model gets a new folder and fresh SAEs.

    Args:
        experiment: the run.
        run_dir: its folder (the SAEs go under ``run_dir/saes/table1/``).
        hook: hook to train on (the paper: the first block's output).
        l1_values: L1 weights swept at dictionary size ``l1_d_sae``.
        d_sae_values: dictionary sizes swept at L1 weight ``d_sae_l1``.
        seeds: seeds per point (the paper: 5).
        l1_d_sae: dictionary size of the L1 sweep (the paper: 2048).
        d_sae_l1: L1 weight of the dictionary-size sweep (the paper: 0.1).
        base: shared training configuration (default :class:`SAETrainingConfig`'s, i.e.
            the standard architecture, lr 1e-3, the paper's loss convention).
        k: list length of the ranking metrics.
        progress: called as ``progress(done, total, row)`` after every run.
        workers: SAEs trained at a time, each in its own single-threaded process (see
            :func:`mechrec.saes.sweep_saes`); this process evaluates them in grid order.

    Raises:
        ValueError: bad settings, or the sweep folder holds SAEs recorded for another model.
    """
    base = base if base is not None else SAETrainingConfig()
    if base.architecture != "standard":
        raise ValueError(
            f"Table 1 sweeps the L1 weight of standard SAEs; got architecture "
            f"{base.architecture!r}"
        )
    seeds = [int(s) for s in seeds]
    if not seeds or not (list(l1_values) or list(d_sae_values)):
        raise ValueError("the sweep needs at least one seed and one L1 weight or dictionary size")
    check_hook(experiment, hook)
    points = table1_points(l1_values, d_sae_values, l1_d_sae=l1_d_sae, d_sae_l1=d_sae_l1)
    for point in points:
        base.with_overrides(**point)  # validate every point before training anything
    weights = model_weights_sha256(experiment)
    directory = sweep_directory(run_dir, hook, base, k, model_sha256=weights)
    _check_sweep_owner(directory, weights)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_json(directory / SWEEP_SPEC_FILE, {
        "format": SWEEP_SPEC_FORMAT, "hook": hook, "k": k, "base_config": base.to_dict(),
        "model_sha256": weights})

    original = downstream(experiment, k=k)
    baselines = splice_baselines(experiment, hook)  # shared by every SAE's splice quality
    total = len(points) * len(seeds)
    done = 0

    def evaluate(nsae: NormalizedSAE) -> dict[str, float]:
        row: dict[str, float] = dict(genre_interpretability(experiment, nsae))
        row.update(table1_quality(experiment, nsae, k=k, baselines=baselines))
        for mode_row in _replaced_rows(experiment, nsae, REPLACE_MODES, k, original):
            if mode_row["mode"] == "replace":
                row.update({key: mode_row[key] for key in
                            (*(f"{m}{s}" for m in RANKING_KEYS for s in ("", "_se")),
                             "ndcg_delta", "ndcg_delta_se")})
            else:
                row.update({f"replace_error_{m}": mode_row[m] for m in RANKING_KEYS})
                row["replace_error_identical"] = float(mode_row["identical_top_k"])
        return row

    def report(row: dict[str, Any]) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total, row)

    runs = sweep_saes(
        experiment.activations("sae_train", hook), base, points, seeds=seeds,
        eval_source=experiment.activations("test", hook), evaluate=evaluate,
        out_dir=directory, progress=report, workers=workers,
    )
    # SAEs saved by a sweep from before Figure 3's or the splice-quality numbers existed:
    # measure them now.
    for row, name in zip(runs, [run_name(p, s) for p in points for s in seeds], strict=True):
        if any(key not in row for key in (*INTERPRETABILITY_KEYS, *QUALITY_COLUMN_KEYS)):
            nsae = NormalizedSAE.load(directory / name)
            if any(key not in row for key in INTERPRETABILITY_KEYS):
                row.update(genre_interpretability(experiment, nsae))
            if any(key not in row for key in QUALITY_COLUMN_KEYS):
                row.update(table1_quality(experiment, nsae, k=k, baselines=baselines))
    summary = _summarize(runs, l1_values, d_sae_values, l1_d_sae, d_sae_l1)
    return Table1(hook=hook, k=k, seeds=seeds, base_config=base.to_dict(),
                  original=original.row(), runs=runs, summary=summary, directory=directory,
                  info={"run": _spec_dict(experiment.spec), "model_sha256": weights,
                        "test_users": len(experiment.part("test")),
                        "test_rows": len(experiment.activations("test", hook)),
                        "sae_train_rows": len(experiment.activations("sae_train", hook))},
                  l1_values=[float(v) for v in l1_values],
                  d_sae_values=[int(d) for d in d_sae_values],
                  l1_d_sae=int(l1_d_sae), d_sae_l1=float(d_sae_l1))


def _summarize(runs: list[dict[str, Any]], l1_values: Sequence[float],
               d_sae_values: Sequence[int], l1_d_sae: int, d_sae_l1: float
               ) -> list[dict[str, Any]]:
    # a splice-quality number saved as null (NaN: the ablation changed nothing) averages as NaN
    runs = [{**run, **{key: math.nan for key in QUALITY_COLUMN_KEYS
                       if key in run and run[key] is None}} for run in runs]
    by_point = {(int(s["d_sae"]), float(s["l1_coefficient"])): s
                for s in summarize_sweep(runs, by=["d_sae", "l1_coefficient"])}
    lines = [("l1", (int(l1_d_sae), float(v))) for v in l1_values]
    lines += [("d_sae", (int(d), float(d_sae_l1))) for d in d_sae_values]
    out = []
    for sweep, key in lines:
        s = by_point[key]
        line: dict[str, Any] = {"sweep": sweep, "d_sae": key[0], "l1_coefficient": key[1],
                                "n_seeds": s["n_seeds"]}
        for metric in RECONSTRUCTION_KEYS:
            line[f"{metric}_mean"] = s[f"{metric}_mean"]
            line[f"{metric}_std"] = s[f"{metric}_std"]
        for metric in RANKING_KEYS:
            line[f"{metric}_mean"] = s[f"{metric}_mean"]
            line[f"{metric}_std"] = s[f"{metric}_std"]
            line[f"{metric}_se"] = s[f"{metric}_se_mean"]
        line["ndcg_delta_mean"] = s["ndcg_delta_mean"]
        line["ndcg_delta_se"] = s["ndcg_delta_se_mean"]
        line["dead_fraction_train_mean"] = s["dead_fraction_train_mean"]
        line["replace_error_identical"] = s["replace_error_identical_mean"]
        line["seconds_mean"] = s["seconds_mean"]
        for metric in INTERPRETABILITY_KEYS:
            line[f"{metric}_mean"] = s[f"{metric}_mean"]
            line[f"{metric}_std"] = s[f"{metric}_std"]
        for metric in QUALITY_COLUMN_KEYS:
            line[f"{metric}_mean"] = s.get(f"{metric}_mean")
            line[f"{metric}_std"] = s.get(f"{metric}_std")
        out.append({column: line.get(column) for column in TABLE1_COLUMNS})
    return out


def genre_interpretability(experiment: Experiment, nsae: NormalizedSAE) -> dict[str, float]:
    """Figure 3's number for one SAE: the mean over genres of the best feature's correlation.

    ``genre_corr_honest`` chooses each genre's feature on the SAE-training users' positions
    and scores it on the test users' (what Figure 3 plots here); ``genre_corr_in_sample``
    chooses and scores on the test users (the paper's procedure, which flatters wide
    dictionaries). Genres without positive rows are left out of the mean.
    """
    table, names = experiment.token_attributes()
    stats = {}
    for part in ("sae_train", "test"):
        acts = experiment.activations(part, nsae.hook_name)
        labels = token_attributes(acts.token, table, names=names)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DegenerateInputWarning)  # dead features, empty genres
            stats[part] = alignment_stats(encode_sparse(nsae, acts.activations), labels,
                                          metrics=("correlation",))
    return {
        "genre_corr_honest": interpretability_score(stats["test"], select_on=stats["sae_train"]),
        "genre_corr_in_sample": interpretability_score(stats["test"]),
    }


def table1_quality(experiment: Experiment, nsae: NormalizedSAE, *, k: int = 10,
                   baselines: dict[str, Any] | None = None) -> dict[str, float]:
    """The splice-quality columns of one SAE's Table-1 run (:data:`QUALITY_COLUMN_KEYS`):
    :func:`mechrec_recsys.sae_quality.splice_quality` on the test users, mean ablation from
    the SAE users; ``baselines``: :func:`mechrec_recsys.sae_quality.splice_baselines` of the
    SAE's hook, shared by the sweep's SAEs."""
    scores = splice_quality(experiment, nsae, k=k, baselines=baselines)
    return {key: scores[key] for key in QUALITY_COLUMN_KEYS}


def write_table1(table: Table1, path: str | os.PathLike) -> tuple[Path, Path]:
    """Write the table as CSV at ``path`` and, beside it, JSON (``.json``) with every run:
    :meth:`Table1.save` (``path`` may also be a folder). Returns ``(csv_path, json_path)``."""
    return table.save(path)


# -------------------------------------------------------------------------------- helpers
def _spec_dict(spec: RunSpec) -> dict[str, Any]:
    return {"dataset": spec.dataset, "split": spec.split, "seed": spec.seed}


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))

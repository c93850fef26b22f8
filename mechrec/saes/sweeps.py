"""Sweeps: train one SAE per (hyperparameter point, seed), measure each, resume if interrupted.

>>> rows = sweep_saes(train_acts, SAETrainingConfig(d_sae=2048),
...                   grid(l1_coefficient=PAPER_L1_GRID), seeds=range(5),
...                   eval_source=test_acts, out_dir="runs/l1")
>>> table = summarize_sweep(rows, by=["l1_coefficient"])   # mean and std over the 5 seeds

A point is a dict of :class:`SAETrainingConfig` overrides; :func:`grid` builds the Cartesian
product of lists of values. With ``out_dir`` every trained SAE is saved in its own
sub-directory together with its metrics, and a rerun skips the runs already there.

All runs share one activation source (collected once, e.g. by the caller's cache) and one
normaliser. With ``workers > 1`` independent runs train in parallel in that many processes
(``spawn``), each with ``threads_per_worker`` torch threads: the source is handed to every
worker once (tensors through shared memory), the workers return trained weights, and this
process measures, evaluates and saves each SAE in grid order while the workers train the
next ones. A run's results do not depend on which process trained it (up to float rounding
when the thread counts differ, as matrix products split their sums by thread).
"""

from __future__ import annotations

import itertools
import math
import os
import statistics
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing
from sae_lens import SAE

from mechrec.activations.sets import ActivationSource, fit_normalizer
from mechrec.normalization import Normalizer
from mechrec.reconstruction import reconstruction_metrics
from mechrec.saes.config import SAETrainingConfig
from mechrec.saes.io import read_provenance
from mechrec.saes.normalized import NormalizedSAE
from mechrec.saes.tracking import TrackedRun, child_run_name, log_run_summary
from mechrec.saes.training import TrainingResult, train_sae

Row = dict[str, Any]


def grid(**values: Sequence[Any]) -> list[dict[str, Any]]:
    """Cartesian product of config overrides: ``grid(d_sae=[1024, 2048], k=[8, 16])``."""
    names = list(values)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*values.values())]


def run_name(point: Mapping[str, Any], seed: int) -> str:
    """Directory name of one run, e.g. ``l1_coefficient=0.1,seed=0``."""
    parts = [f"{k}={v}" for k, v in point.items()] + [f"seed={seed}"]
    return ",".join(parts).replace(os.sep, "_")


def sweep_saes(
    train_source: ActivationSource,
    base: SAETrainingConfig,
    points: Iterable[Mapping[str, Any]],
    *,
    seeds: Iterable[int] = (0,),
    eval_source: ActivationSource | None = None,
    normalizer: Normalizer | None = None,
    evaluate: Callable[[NormalizedSAE], Mapping[str, float]] | None = None,
    out_dir: str | os.PathLike | None = None,
    progress: Callable[[Row], None] | None = None,
    workers: int = 1,
    threads_per_worker: int = 1,
) -> list[Row]:
    """Train and measure one SAE per point and seed.

    Args:
        train_source: activations to train on.
        base: configuration every point starts from. With ``base.log_to`` set, every SAE
            trained logs to its own run, named ``<base.run_name>/<run name>`` (or its run
            name), whose summary then gets the SAE's row (reconstruction and ``evaluate``'s
            numbers: :func:`~mechrec.saes.tracking.log_run_summary`).
        points: config overrides, one dict per point (see :func:`grid`).
        seeds: seeds to repeat each point with (the paper averages 5).
        eval_source: activations to measure reconstruction on (default: ``train_source``).
        normalizer: shared normaliser (default: fitted once on ``train_source`` with
            ``base.normalization``), so all runs see the same inputs.
        evaluate: extra measurement per SAE (e.g. downstream metrics with the layer replaced
            via :func:`mechrec.reconstruction.evaluate_with_reconstruction`); its dict is
            merged into the row.
        out_dir: save every SAE (with metrics in ``mechrec.json``) under
            ``out_dir/<run_name>``; runs already saved there are loaded, not retrained.
        progress: called with each finished row.
        workers: train this many runs at a time, each in its own process (1: all in this
            process, one after the other).
        threads_per_worker: torch threads of each worker process (with ``workers > 1``).

    Returns:
        one row per run: ``architecture``, ``d_sae`` and the sparsity hyperparameter of its
        config (so that rows of different grids line up), the point's overrides, ``seed``,
        reconstruction metrics on
        ``eval_source`` (``rmse``, ``explained_variance``, ``l0``, ``dead_fraction``...),
        ``dead_fraction_train``, ``n_resampled``, ``seconds`` and ``evaluate``'s keys.
    """
    points = [dict(p) for p in points]
    seeds = list(seeds)
    if workers < 1 or threads_per_worker < 1:
        raise ValueError(
            f"workers and threads_per_worker must be >= 1, got {workers}, {threads_per_worker}"
        )
    for point in points:
        base.with_overrides(**point)  # fail fast on unknown keys
    if normalizer is None:
        normalizer = fit_normalizer(train_source, base.normalization)
    eval_source = eval_source if eval_source is not None else train_source
    root = Path(out_dir) if out_dir is not None else None
    runs = [(point, seed, run_name(point, seed)) for point in points for seed in seeds]
    saved = {
        name: provenance["row"]
        for _, _, name in runs
        if root is not None
        and (provenance := read_provenance(root / name)) is not None
        and "row" in provenance
    }
    to_train = [
        base.with_overrides(**point, seed=seed, **_tracked_name(base, name))
        for point, seed, name in runs if name not in saved
    ]
    trained = _train_all(train_source, to_train, normalizer, workers, threads_per_worker)
    rows: list[Row] = []
    try:
        for point, seed, name in runs:
            if name in saved:
                row = saved[name]
            else:
                result = next(trained)
                config = result.config
                metrics = reconstruction_metrics(result.sae, eval_source)
                sparsity_name, sparsity_value = config.sparsity_parameter
                row = {
                    "architecture": config.architecture,
                    "d_sae": config.d_sae,
                    sparsity_name: sparsity_value,
                    **point,
                    "seed": seed,
                    **metrics.as_dict(),
                    "dead_fraction_train": result.dead_fraction_train,
                    "n_resampled": result.n_resampled,
                    "seconds": result.seconds,
                }
                if evaluate is not None:
                    row.update(evaluate(result.sae))
                if result.tracked_run is not None:
                    log_run_summary(result.tracked_run, config, row)
                if root is not None:
                    result.sae.provenance = {**(result.sae.provenance or {}), "row": row}
                    result.sae.save(root / name)
            rows.append(row)
            if progress is not None:
                progress(row)
    finally:
        trained.close()  # stops the worker processes, if any
    return rows


def _tracked_name(base: SAETrainingConfig, name: str) -> dict[str, Any]:
    """The tracked run name of one SAE of a sweep: ``<base run name>/<run name>`` (or the
    run name alone); nothing when the sweep is not tracked."""
    if base.log_to is None:
        return {}
    return {"run_name": child_run_name(base.run_name, name)}


#: What a worker process of a parallel sweep holds: the source and normaliser of the sweep.
_WORKER: dict[str, Any] = {}


def _train_all(
    source: ActivationSource,
    configs: list[SAETrainingConfig],
    normalizer: Normalizer,
    workers: int,
    threads: int,
) -> Iterator[TrainingResult]:
    """Train one SAE per config, yielding the results in order (in ``workers`` processes)."""
    if workers == 1 or len(configs) <= 1:
        for config in configs:
            yield train_sae(source, config, normalizer=normalizer)
        return
    context = torch.multiprocessing.get_context("spawn")
    n_processes = min(workers, len(configs))
    with context.Pool(
        n_processes, initializer=_init_worker, initargs=(source, normalizer, threads)
    ) as pool:
        for packed in pool.imap(_train_in_worker, configs):
            yield _unpack(packed, normalizer)


def _init_worker(source: ActivationSource, normalizer: Normalizer, threads: int) -> None:
    torch.set_num_threads(threads)
    _WORKER.update(source=source, normalizer=normalizer)


def _train_in_worker(config: SAETrainingConfig) -> dict[str, Any]:
    result = train_sae(_WORKER["source"], config, normalizer=_WORKER["normalizer"])
    nsae = result.sae
    return {
        # sae-lens SAEs hold lambdas, so they travel as config + weights
        "sae_cfg": nsae.sae.cfg.to_dict(),
        "state": nsae.sae.state_dict(),
        "hook_name": nsae.hook_name,
        "provenance": nsae.provenance,
        "config": config.to_dict(),
        "history": result.history,
        "n_resampled": result.n_resampled,
        "dead_fraction_train": result.dead_fraction_train,
        "seconds": result.seconds,
        "rows_per_second": result.rows_per_second,
        "tracked_run": None if result.tracked_run is None else result.tracked_run.to_dict(),
    }


def _unpack(packed: dict[str, Any], normalizer: Normalizer) -> TrainingResult:
    sae = SAE.from_dict(packed["sae_cfg"])
    sae.load_state_dict(packed["state"])
    nsae = NormalizedSAE(sae, normalizer, packed["hook_name"], packed["provenance"])
    return TrainingResult(
        sae=nsae,
        config=SAETrainingConfig.from_dict(packed["config"]),
        history=packed["history"],
        n_resampled=packed["n_resampled"],
        dead_fraction_train=packed["dead_fraction_train"],
        seconds=packed["seconds"],
        rows_per_second=packed["rows_per_second"],
        tracked_run=(None if packed["tracked_run"] is None
                     else TrackedRun.from_dict(packed["tracked_run"])),
    )


def summarize_sweep(rows: Sequence[Row], by: Sequence[str]) -> list[Row]:
    """Mean and standard deviation over seeds of every numeric column, per ``by`` group.

    Columns named like :class:`SAETrainingConfig` fields are hyperparameters, not
    metrics: they are copied when constant within a group and never averaged.

    Returns one row per group, in first-seen order, with the ``by`` keys, ``n_seeds``, and
    ``<col>_mean`` / ``<col>_std`` (0 for a single seed) for every numeric metric column.
    """
    groups: dict[tuple[Any, ...], list[Row]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in by), []).append(row)
    out: list[Row] = []
    hyperparameters = {f.name for f in fields(SAETrainingConfig)}
    for key, members in groups.items():
        summary: Row = dict(zip(by, key, strict=True))
        summary["n_seeds"] = len(members)
        for col, value in members[0].items():
            if col in summary or col == "seed":
                continue
            if col in hyperparameters:
                if all(m.get(col) == value for m in members):
                    summary[col] = value
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            values = [float(m[col]) for m in members]
            summary[f"{col}_mean"] = statistics.fmean(values)
            summary[f"{col}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
            if any(math.isnan(v) for v in values):
                summary[f"{col}_mean"] = float("nan")
        out.append(summary)
    return out

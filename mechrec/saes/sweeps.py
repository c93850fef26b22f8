"""Sweeps: train one SAE per (hyperparameter point, seed), measure each, resume if interrupted.

>>> rows = sweep_saes(train_acts, SAETrainingConfig(d_sae=2048),
...                   grid(l1_coefficient=PAPER_L1_GRID), seeds=range(5),
...                   eval_source=test_acts, out_dir="runs/l1")
>>> table = summarize_sweep(rows, by=["l1_coefficient"])   # mean and std over the 5 seeds

A point is a dict of :class:`SAETrainingConfig` overrides; :func:`grid` builds the Cartesian
product of lists of values. With ``out_dir`` every trained SAE is saved in its own
sub-directory together with its metrics, and a rerun skips the runs already there.
"""

from __future__ import annotations

import itertools
import math
import os
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from mechrec.activations.sets import ActivationSource, fit_normalizer
from mechrec.normalization import Normalizer
from mechrec.reconstruction import reconstruction_metrics
from mechrec.saes.config import SAETrainingConfig
from mechrec.saes.io import read_provenance
from mechrec.saes.normalized import NormalizedSAE
from mechrec.saes.training import train_sae

#: The paper's L1 weights (Table 1, dictionary size 2048).
PAPER_L1_GRID: tuple[float, ...] = (0.001, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 1.0)
#: The paper's dictionary sizes (Figure 3, L1 weight 0.1).
PAPER_DICT_SIZES: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048, 4096, 8192)

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
) -> list[Row]:
    """Train and measure one SAE per point and seed.

    Args:
        train_source: activations to train on.
        base: configuration every point starts from.
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

    Returns:
        one row per run: ``architecture``, ``d_sae`` and the sparsity hyperparameter of its
        config (so that rows of different grids line up), the point's overrides, ``seed``,
        reconstruction metrics on
        ``eval_source`` (``rmse``, ``explained_variance``, ``l0``, ``dead_fraction``...),
        ``dead_fraction_train``, ``n_resampled``, ``seconds`` and ``evaluate``'s keys.
    """
    points = [dict(p) for p in points]
    seeds = list(seeds)
    for point in points:
        base.with_overrides(**point)  # fail fast on unknown keys
    if normalizer is None:
        normalizer = fit_normalizer(train_source, base.normalization)
    eval_source = eval_source if eval_source is not None else train_source
    root = Path(out_dir) if out_dir is not None else None
    rows: list[Row] = []
    for point in points:
        for seed in seeds:
            name = run_name(point, seed)
            saved = read_provenance(root / name) if root is not None else None
            if saved is not None and "row" in saved:
                row = saved["row"]
            else:
                config = base.with_overrides(**point, seed=seed)
                result = train_sae(train_source, config, normalizer=normalizer)
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
                if root is not None:
                    result.sae.provenance = {**(result.sae.provenance or {}), "row": row}
                    result.sae.save(root / name)
            rows.append(row)
            if progress is not None:
                progress(row)
    return rows


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

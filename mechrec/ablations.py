"""Ablation rows: how much of an SAE's alignment edge survives when one setting changes.

The paper's claim is "SAE features align with attributes better than neurons". Two controls
make it honest (:func:`mechrec.alignment.align`): the best feature is chosen on other rows than
those that score it, and a random ReLU projection of the same width shows how much of the
edge is width rather than learning. An *ablation row* reruns that comparison with one thing
changed and reports the SAE, the neurons, the random control and the paired bootstrap
interval of SAE − random and SAE − neurons, so each driver of the headline number is one row:

- ``tokens``: the correlation's unit is the distinct token (activations averaged per token)
  instead of the position; no retraining;
- ``topk`` / ``jumprelu``: the same dictionary trained as a TopK SAE with ``k`` = the base
  SAE's L0, or as a JumpReLU SAE with that target L0 (L0 measured on the *select* rows, never
  on the rows that score);
- ``no-norm``: the SAE trained on raw activations (``normalization="none"``);
- ``layers``: the same SAE at every other block's ``hook_resid_post``;
- ``mlp-out``: at the base block's ``hook_mlp_out``.

Works on any :class:`~mechrec.study.Study` (any HookedTransformer with two row sets and a
token attribute table)::

    table = run_ablations(study, sae, config, standard_ablations(study.model, sae.hook_name),
                          select="fit", score="eval", bootstrap=200, out_dir="ablations")
    table.frame()          # one row per variant, the base recipe first

With ``out_dir`` every finished row (and its SAE) is saved as it completes and reused by a
rerun with the same model, base SAE and settings, so an interrupted run loses one row at most.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mechrec._io import (
    atomic_write_bytes,
    atomic_write_json,
    json_safe,
    json_sha256,
    state_dict_sha256,
)

__all__ = ["ABLATION_KINDS", "Ablation", "AblationTable", "base_run_mismatch", "run_ablations",
           "standard_ablations"]

#: Kinds :func:`standard_ablations` knows, in the order rows are made.
ABLATION_KINDS: tuple[str, ...] = ("tokens", "topk", "jumprelu", "no-norm", "layers", "mlp-out")
TABLE_FORMAT = "mechrec.ablations/1"
ROW_FILE = "row.json"
TABLE_CSV = "ablations.csv"
TABLE_JSON = "ablations.json"
#: Name of the row that runs the base recipe unchanged.
BASE_ROW = "base"


@dataclass(frozen=True)
class Ablation:
    """One variant of the base recipe.

    Attributes:
        name: row label (also its folder name under ``out_dir``).
        description: what changed, in words.
        hook: train the SAE at this hook instead of the base SAE's.
        overrides: :class:`~mechrec.saes.SAETrainingConfig` fields to change, as pairs.
        match_l0: set this config field (``k`` or ``target_l0``) to the base SAE's L0 on the
            select rows (rounded to an integer for ``k``).
        unit: the alignment's unit (``positions`` or ``tokens``: distinct tokens).
    """

    name: str
    description: str
    hook: str | None = None
    overrides: tuple[tuple[str, Any], ...] = ()
    match_l0: str | None = None
    unit: str = "positions"

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise ValueError(f"an ablation's name must be a plain folder name, got "
                             f"{self.name!r}")
        if self.match_l0 not in (None, "k", "target_l0"):
            raise ValueError(f"match_l0 must be 'k', 'target_l0' or None, got "
                             f"{self.match_l0!r}")

    @property
    def retrains(self) -> bool:
        """Whether the row trains an SAE of its own (otherwise it reuses the base SAE)."""
        return bool(self.hook or self.overrides or self.match_l0)


def standard_ablations(model: Any, hook: str, kinds: Iterable[str] = ABLATION_KINDS
                       ) -> list[Ablation]:
    """The ablations of ``kinds`` (see the module docstring) for an SAE at ``hook``.

    Args:
        model: the HookedTransformer (its blocks give the ``layers`` rows).
        hook: the base SAE's hook.
        kinds: any of :data:`ABLATION_KINDS`.

    Raises:
        ValueError: an unknown kind, or ``layers`` / ``mlp-out`` for a hook outside a block.
    """
    from mechrec.hooks import hook_layer, validate_hook_name

    kinds = list(kinds)
    unknown = [k for k in kinds if k not in ABLATION_KINDS]
    if unknown:
        raise ValueError(f"unknown ablation {unknown[0]!r}; choose from "
                         f"{', '.join(ABLATION_KINDS)}")
    layer = hook_layer(hook)
    rows: list[Ablation] = []
    for kind in ABLATION_KINDS:
        if kind not in kinds:
            continue
        if kind == "tokens":
            rows.append(Ablation("tokens", "unit = distinct tokens (activations averaged per "
                                           "token)", unit="tokens"))
        elif kind == "topk":
            rows.append(Ablation("topk", "TopK SAE, k = the base SAE's L0",
                                 overrides=(("architecture", "topk"),), match_l0="k"))
        elif kind == "jumprelu":
            rows.append(Ablation("jumprelu", "JumpReLU SAE, target L0 = the base SAE's L0",
                                 overrides=(("architecture", "jumprelu"),),
                                 match_l0="target_l0"))
        elif kind == "no-norm":
            rows.append(Ablation("no-norm", "no input normalisation",
                                 overrides=(("normalization", "none"),)))
        elif layer is None or layer < 0:
            raise ValueError(f"ablation {kind!r} moves the SAE to other blocks, but {hook!r} "
                             "is not a block's hook: leave it out")
        elif kind == "layers":
            for block in range(model.cfg.n_layers):
                other = f"blocks.{block}.hook_resid_post"
                if other != hook:
                    rows.append(Ablation(f"resid-post-{block}", f"layer: {other}",
                                         hook=validate_hook_name(model, other)))
        else:
            other = f"blocks.{layer}.hook_mlp_out"
            if other != hook:
                rows.append(Ablation(f"mlp-out-{layer}", f"layer: {other}",
                                     hook=validate_hook_name(model, other)))
    return rows


@dataclass
class AblationTable:
    """Ablation rows and how they were made.

    Attributes:
        rows: one dict per row (the base recipe first): ``name``, ``description``, ``hook``,
            ``architecture``, ``d_sae``, ``unit``, ``l0`` and ``explained_variance`` (on the
            score rows), ``SAE`` / ``neurons`` / ``random`` (honest mean best-attribute
            metric of the group), ``SAE_in_sample``, ``SAE - random`` and ``SAE - neurons``
            with ``… lower`` / ``… upper``, ``train_seconds``, ``seconds``.
        meta: group, metric, select / score rows, bootstrap resamples, confidence, seed.
    """

    rows: list[dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)

    def frame(self) -> pd.DataFrame:
        """The rows as a DataFrame indexed by ``name``."""
        return pd.DataFrame(self.rows).set_index("name")

    def save(self, out_dir: str | Path) -> Path:
        """Write ``ablations.csv`` and ``ablations.json`` (rows and meta) into ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out / TABLE_CSV, self.frame().to_csv().encode())
        atomic_write_json(out / TABLE_JSON, json_safe({"format": TABLE_FORMAT,
                                                       "meta": self.meta, "rows": self.rows}),
                          sort_keys=False)
        return out

    @classmethod
    def load(cls, out_dir: str | Path) -> AblationTable:
        """Read what :meth:`save` wrote.

        Raises:
            FileNotFoundError: no ``ablations.json`` in ``out_dir``.
            ValueError: the file is not an ablation table.
        """
        path = Path(out_dir) / TABLE_JSON
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: make it with run_ablations(..., "
                                    "out_dir=...) or 'mechrec align ablations'")
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or data.get("format") != TABLE_FORMAT:
            raise ValueError(f"{path}: not an ablation table (expected format {TABLE_FORMAT})")
        rows = [{key: np.nan if value is None else value for key, value in row.items()}
                for row in data["rows"]]
        return cls(rows=rows, meta=dict(data.get("meta", {})))


def _row_from_run(run: Any, group: str, boot: Any, confidence: float) -> dict[str, Any]:
    summary = run.summary()
    mean = f"{run.metric}_mean"

    def value(source: str, selection: str) -> float:
        sel = summary[(summary["group"] == group) & (summary["features"] == source)
                      & (summary["selection"] == selection)]
        return float(sel[mean].iloc[0]) if len(sel) else np.nan

    row: dict[str, Any] = {source: value(source, "honest") for source in run.sources}
    row["SAE_in_sample"] = value("SAE", "in-sample")
    difference = {}
    if boot is not None:
        meta = run.bootstrap_meta(boot, confidence)
        difference = meta["headline"].get(group, {}).get("difference", {})
    for versus in ("random", "neurons"):
        key = f"SAE - {versus}"
        row[key] = row.get("SAE", np.nan) - row.get(versus, np.nan)
        found = difference.get(key, {})
        row[f"{key} lower"] = found.get("lower", np.nan)
        row[f"{key} upper"] = found.get("upper", np.nan)
    return row


def run_ablations(
    study: Any,
    sae: Any,
    config: Any,
    ablations: Sequence[Ablation],
    *,
    select: str,
    score: str,
    bootstrap: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
    group: str | None = None,
    metric: str = "correlation",
    out_dir: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
    base_run: Any = None,
) -> AblationTable:
    """The base recipe and each ablation of it, one row each (see the module docstring).

    Args:
        study: the model and its row sets (:class:`~mechrec.study.Study`).
        sae: the base SAE (:class:`~mechrec.saes.NormalizedSAE`) at its hook.
        config: the :class:`~mechrec.saes.SAETrainingConfig` it was trained with; retrained
            rows change only what their :class:`Ablation` says (same seed, steps, size...).
        ablations: the variants (e.g. :func:`standard_ablations`).
        select: row set that trains the variant SAEs, matches L0 and chooses the best
            features.
        score: row set that scores them (never used to choose anything).
        bootstrap: resamples of the score rows' groups for the paired intervals (0: none).
        confidence: coverage of the intervals.
        seed: seed of the random control and of the bootstrap.
        group: attribute group whose mean is reported (default: the first group).
        metric: metric that chooses the best feature (the paper: correlation).
        out_dir: save every finished row (and its SAE) here and reuse rows saved by an
            earlier call with the same model, base SAE and settings; the table is written
            there at the end.
        progress: receives one line per row.
        base_run: the base SAE's :class:`~mechrec.alignment.AlignmentRun`, made earlier with
            the same ``select``, ``score``, ``metric`` and ``seed`` (e.g. ``AlignmentRun.load``
            of a saved alignment): the base row reads it instead of aligning again, and reads
            its saved bootstrap when that has ``bootstrap`` resamples at ``seed``. The caller
            vouches that it was made with ``sae`` on ``study`` (compare
            :meth:`~mechrec.saes.NormalizedSAE.weights_sha256`); its numbers are then those a
            fresh base row would give.

    Raises:
        ValueError: ``select == score``, duplicate row names, bad ablation settings, a
            transcoder as the base, a ``base_run`` made with other settings.
    """
    from mechrec.alignment import align
    from mechrec.reconstruction import reconstruction_metrics
    from mechrec.saes import train_sae

    if select == score:
        raise ValueError(f"select and score are both {select!r}: the variants must be chosen "
                         "on other rows than those that score them")
    if bootstrap < 0:
        raise ValueError(f"bootstrap must be >= 0, got {bootstrap}")
    if getattr(sae, "is_transcoder", False):
        raise ValueError("the base is a transcoder: ablation rows retrain an SAE that reads and "
                         "writes one hook, and transcoders cannot be trained here; use an SAE")
    if base_run is not None:
        problem = base_run_mismatch(base_run, sae, select=select, score=score, metric=metric,
                                    seed=seed, group=group, bootstrap=bootstrap)
        if problem:
            raise ValueError(f"base_run cannot stand for the base row: {problem}; align the "
                             "base SAE with these settings or leave base_run out")
    names = [BASE_ROW, *(a.name for a in ablations)]
    if len(set(names)) != len(names):
        raise ValueError(f"ablation names must be unique and not {BASE_ROW!r}: {names}")
    log = progress or (lambda message: None)
    out = Path(out_dir) if out_dir is not None else None
    # what a saved row must have been made with to be reused (only needed with out_dir)
    identity = None if out is None else {
                "model": state_dict_sha256(study.model), "sae": sae.weights_sha256(),
                "hook": sae.hook_name, "config": config.to_dict(tracking=False),
                "select": select, "score": score, "bootstrap": bootstrap,
                "confidence": confidence, "seed": seed, "group": group, "metric": metric}
    base_l0: float | None = None

    def l0_on_select() -> float:
        nonlocal base_l0
        if base_l0 is None:
            base_l0 = reconstruction_metrics(sae, study.activations(select, sae.hook_name)).l0
        return base_l0

    rows = []
    for ablation in [Ablation(BASE_ROW, "the base recipe"), *ablations]:
        folder = out / ablation.name if out is not None else None
        digest = None if identity is None else json_sha256({**identity,
                                                        "ablation": asdict(ablation)})
        saved = _saved_row(folder, digest)
        if saved is not None:
            log(f"{ablation.name}: done before, reused")
            rows.append(saved)
            continue
        started = time.perf_counter()
        variant, train_seconds, variant_config = sae, 0.0, config
        if ablation.retrains:
            hook = ablation.hook or sae.hook_name
            changes = dict(ablation.overrides)
            if ablation.match_l0 is not None:
                l0 = l0_on_select()
                changes[ablation.match_l0] = max(1, round(l0)) if ablation.match_l0 == "k" \
                    else float(l0)
            variant_config = config.with_overrides(**changes)
            trained = train_sae(study.activations(select, hook), variant_config,
                                hook_name=hook)
            variant, train_seconds = trained.sae, trained.seconds
        if base_run is not None and ablation.name == BASE_ROW:
            run = base_run
            log(f"{BASE_ROW}: the saved alignment of the base SAE, not aligned again")
        else:
            run = align(study, variant, select=select, score=score, metric=metric, seed=seed,
                        unit=ablation.unit)
        chosen_group = group or run.group_order[0]
        quality = reconstruction_metrics(variant, study.activations(score, variant.hook_name))
        row = {"name": ablation.name, "description": ablation.description,
               "hook": variant.hook_name, "architecture": variant.architecture,
               "d_sae": variant.d_sae, "unit": ablation.unit,
               "changes": _changes(config, variant_config),
               "l0": quality.l0, "explained_variance": quality.explained_variance,
               "dead_fraction": quality.dead_fraction,
               **_row_from_run(run, chosen_group, _bootstrap_of(run, bootstrap, seed),
                               confidence),
               "group": chosen_group, "train_seconds": train_seconds,
               "seconds": time.perf_counter() - started}
        if folder is not None:
            if ablation.retrains:
                variant.save(folder / "sae")
            atomic_write_json(folder / ROW_FILE, json_safe({"digest": digest,
                                                            "row": row}), sort_keys=False)
        log(f"{ablation.name}: SAE {row.get('SAE', np.nan):.3f}, neurons "
            f"{row.get('neurons', np.nan):.3f}, random {row.get('random', np.nan):.3f}, "
            f"SAE - random {row['SAE - random']:+.3f} ({row['seconds']:.0f} s)")
        rows.append(row)
    meta = {"select": select, "score": score, "metric": metric,
            "group": rows[0]["group"], "bootstrap": bootstrap, "confidence": confidence,
            "seed": seed, "base_hook": sae.hook_name, "config": config.to_dict(tracking=False)}
    table = AblationTable(rows=rows, meta=meta)
    if out is not None:
        table.save(out)
    return table


def base_run_mismatch(run: Any, sae: Any, *, select: str, score: str,
                      metric: str = "correlation", seed: int = 0, group: str | None = None,
                      bootstrap: int = 0) -> str | None:
    """Why ``run`` cannot stand for the base row of :func:`run_ablations` with these
    settings (``None``: it can). The base row, made afresh, aligns ``sae`` with the SAE,
    neurons and random sources on ``select`` / ``score`` positions.

    It checks the settings a saved alignment records; that the run was made with this very
    SAE and model is the caller's to check (compare
    :meth:`~mechrec.saes.NormalizedSAE.weights_sha256`).
    """
    from mechrec.alignment.recipe import SOURCES

    expected = {"hook": sae.hook_name, "select rows": select, "score rows": score,
                "metric": metric, "seed": seed, "unit": "positions",
                "sources": list(SOURCES)}
    found = {"hook": run.hook_name, "select rows": run.select_part,
             "score rows": run.score_part, "metric": run.metric, "seed": run.seed,
             "unit": run.unit, "sources": list(run.sources)}
    differ = [f"{key} {found[key]!r} (expected {value!r})" for key, value in expected.items()
              if found[key] != value]
    if differ:
        return f"it was made with other settings: {'; '.join(differ)}"
    if group is not None and group not in run.group_order:
        return f"it has no attribute group {group!r} (it has {run.group_order})"
    if bootstrap and not _saved_bootstrap_fits(run, bootstrap, seed) and run.scored is None:
        return (f"it has neither a saved bootstrap of {bootstrap} resamples at seed {seed} "
                "nor the score rows to make one (save it with keep_rows=True)")
    return None


def _saved_bootstrap_fits(run: Any, bootstrap: int, seed: int) -> bool:
    boot = getattr(run, "saved_bootstrap", None)
    return boot is not None and boot.n_resamples == bootstrap and boot.seed == seed


def _bootstrap_of(run: Any, bootstrap: int, seed: int) -> Any:
    """``run``'s paired bootstrap with ``bootstrap`` resamples at ``seed`` (the saved one
    when it has those), or ``None`` without resamples."""
    if not bootstrap:
        return None
    if _saved_bootstrap_fits(run, bootstrap, seed):
        return run.saved_bootstrap
    return run.bootstrap(bootstrap, seed=seed)


def _changes(base: Any, variant: Any) -> str:
    """The config fields ``variant`` changes, as ``name=value`` (floats to 4 digits)."""
    before, after = base.to_dict(tracking=False), variant.to_dict(tracking=False)
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in after.items() if before.get(k) != v)


def _saved_row(folder: Path | None, digest: str | None) -> dict[str, Any] | None:
    """The row saved in ``folder`` when it was made with the same ``digest``."""
    if folder is None or not (folder / ROW_FILE).is_file():
        return None
    try:
        data = json.loads((folder / ROW_FILE).read_text())
    except json.JSONDecodeError:
        return None
    if not isinstance(data, Mapping) or data.get("digest") != digest:
        return None
    return {key: np.nan if value is None else value for key, value in data["row"].items()}

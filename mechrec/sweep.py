"""Sweeps: evaluate a model under a grid of steering values, for several targets.

A *target* is one curve: something to steer (an SAE feature, a direction, any edit factory) at
a hook. :func:`run_sweep` runs every batch once per hook, steers it at every value of every
target, reduces the last-position logits of each batch with ``collect`` and, after the last
batch, scores each (target, value) with ``evaluate`` on everything collected. The result is a
tidy table, one row per (target, value): columns ``target, kind, hook_name, value`` and one
column per metric, plus an ``unsteered`` baseline row (``value`` NaN).

Last-position targets use the fast path (:class:`~mechrec.steering.LastPositionSteerer`): the
prefix of each batch is computed once per hook and shared by all values and targets.

>>> result = run_sweep(model, batches, [feature_target(sae, 12, name="Sci-Fi")],
...                    value_grid(-10, 10, 1), evaluate=share_of_scifi_in_top10,
...                    collect=lambda logits, tokens, mask, rows: logits.topk(10).indices)
>>> result.to_csv("sweep.csv")
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from rich.progress import Progress
from transformer_lens import HookedTransformer

from mechrec._io import atomic_write_json, atomic_write_text
from mechrec.grids import value_grid as value_grid  # re-exported: its home before
from mechrec.hooks import output_hook
from mechrec.steering import (
    Direction,
    DirectionEdit,
    EditSpec,
    FeatureEdit,
    LastPositionSteerer,
    PositionSpec,
    SAELike,
    fast_path_problem,
    last_real_logits,
    sae_feature_direction,
    steered_last_logits,
    unit_variance_direction,
)
from mechrec.steering.positions import normalize_positions
from mechrec.steering.validation import (
    check_feature_index,
    check_finite_scores,
    check_finite_values,
    check_hook_name,
)

Collect = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None, np.ndarray], Any]
"""``collect(logits, tokens, attention_mask, rows)``: reduces one batch's last-position logits;
``rows`` holds the batch's row ids (``i`` for the ``i``-th sequence of the batches), so
per-row data (e.g. items to mask) is looked up without state kept between calls."""
Evaluate = Callable[[Any], Mapping[str, float]]
BASELINE = "unsteered"
_KEY_COLUMNS = ["target", "kind", "hook_name", "value"]


@dataclass(frozen=True, eq=False)
class SteeringTarget:
    """One curve of a sweep.

    Attributes:
        name: label in the result table (unique within a sweep).
        hook_name: where the edit applies.
        make_edit: steering value -> edit (or list of edits).
        kind: free-form label for the table (``"sae_feature"``, ``"direction"``, ...).
        positions: where the edit applies (``"last"`` uses the fast path).
    """

    name: str
    hook_name: str
    make_edit: Callable[[float], EditSpec]
    kind: str = "custom"
    positions: PositionSpec = "last"


def feature_target(
    sae: SAELike,
    feature: int,
    *,
    name: str | None = None,
    mode: str = "set",
    keep_error: bool = False,
    positions: PositionSpec = "last",
) -> SteeringTarget:
    """Steer SAE feature ``feature``: ``value -> FeatureEdit(sae, {feature: value}, ...)``.

    ``keep_error=False`` is the paper's "replace with reconstruction" mode, in which even the
    value a feature already has is not the unsteered model; ``keep_error=True`` keeps the SAE's
    error term so only the feature's change reaches the model. A transcoder's feature is
    steered at its output hook (its features encoded from its input hook).
    """
    feature = check_feature_index(sae, feature)
    kind = "sae_feature" + ("+error" if keep_error else "")

    def make(value: float) -> FeatureEdit:
        return FeatureEdit(sae, {feature: value}, mode=mode, keep_error=keep_error)  # type: ignore[arg-type]

    return SteeringTarget(
        name or f"feature:{feature}", output_hook(sae), make, kind,
        normalize_positions(positions)
    )


def direction_target(
    direction: Direction | torch.Tensor,
    *,
    name: str | None = None,
    hook_name: str | None = None,
    positions: PositionSpec = "last",
    kind: str = "direction",
) -> SteeringTarget:
    """Add ``value * direction`` (use a unit-variance :class:`Direction`, e.g. a probe's)."""
    if not isinstance(direction, Direction):
        direction = Direction(direction, name=name or "direction", hook_name=hook_name)
    hook = hook_name or direction.hook_name
    if hook is None:
        raise ValueError("the direction has no hook_name: pass hook_name='blocks.0.hook_...'")
    if direction.hook_name is not None and direction.hook_name != hook:
        raise ValueError(
            f"the direction belongs to {direction.hook_name!r}, not {hook!r}: steer at "
            f"hook_name={direction.hook_name!r}"
        )

    def make(value: float) -> DirectionEdit:
        return DirectionEdit(direction, value)

    return SteeringTarget(
        name or direction.name or "direction", hook, make, kind, normalize_positions(positions)
    )


def feature_direction_target(
    sae: SAELike,
    feature: int,
    activations: torch.Tensor,
    *,
    name: str | None = None,
    positions: PositionSpec = "last",
) -> SteeringTarget:
    """Add ``value *`` the SAE feature's decoder direction, scaled to unit variance.

    This is the SAE side of the paper's comparison with probes (section 8.2.3, Fig. 9): both
    are directions in raw activation space scaled with
    :func:`~mechrec.steering.unit_variance_direction` on ``activations`` (rows at the hook the
    SAE writes, e.g. the SAE training activations; a transcoder's output hook).
    """
    direction = unit_variance_direction(sae_feature_direction(sae, feature), activations)
    return direction_target(
        direction,
        name=name or f"feature-direction:{feature}",
        hook_name=output_hook(sae),
        positions=positions,
        kind="sae_direction",
    )


@dataclass
class SweepResult:
    """A sweep's tidy table and how it was made.

    Attributes:
        frame: one row per (target, value); columns ``target, kind, hook_name, value`` then the
            metrics returned by ``evaluate``.
        metadata: values, targets (name, kind, hook, positions, method), batch count.
    """

    frame: pd.DataFrame
    metadata: dict[str, Any]

    def long(self) -> pd.DataFrame:
        """The table in long form: ``target, kind, hook_name, value, metric, score``."""
        return self.frame.melt(id_vars=_KEY_COLUMNS, var_name="metric", value_name="score")

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Write the table as CSV (atomically); metadata goes to ``<path>.meta.json``."""
        path = Path(path)
        atomic_write_text(path, self.frame.to_csv(index=False))
        meta_path = path.with_name(path.name + ".meta.json")
        atomic_write_json(meta_path, self.metadata, sort_keys=False)
        return path

    def to_json(self, path: str | os.PathLike) -> Path:
        """Write ``{"metadata": ..., "rows": [...]}`` as JSON (atomically)."""
        rows = json.loads(self.frame.to_json(orient="records"))
        payload = {"metadata": self.metadata, "rows": rows}
        return atomic_write_json(Path(path), payload, sort_keys=False)

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> SweepResult:
        """Read a file written by :meth:`to_json`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no sweep result at {path}")
        payload = json.loads(path.read_text())
        if not isinstance(payload, dict) or "rows" not in payload:
            raise ValueError(f"{path} is not a sweep result (expected keys 'metadata', 'rows')")
        frame = pd.DataFrame(payload["rows"])
        frame["value"] = frame["value"].astype(float)
        return cls(frame, payload.get("metadata", {}))


def run_sweep(
    model: HookedTransformer,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor | None]],
    targets: Sequence[SteeringTarget],
    values: Sequence[float],
    evaluate: Evaluate,
    *,
    collect: Collect | None = None,
    include_baseline: bool = True,
    method: str = "auto",
    progress: bool = True,
) -> SweepResult:
    """Evaluate ``model`` steered by every target at every value.

    Args:
        model: any HookedTransformer.
        batches: ``(tokens, attention_mask)`` pairs, left-padded; iterated once.
        targets: the curves (see :func:`feature_target`, :func:`direction_target`).
        values: steering values (finite), e.g. :func:`value_grid`.
        evaluate: scores everything collected for one (target, value) over all batches and
            returns ``{metric: number}``.
        collect: reduces one batch's last-position logits ``(B, d_vocab)`` given the batch's
            ``tokens``, ``attention_mask`` and row ids ``rows`` (``(B,)`` int64: the position
            of each sequence in the whole stream of batches) (e.g. to top-k item ids, seen
            items masked); tensors / arrays are
            concatenated along the first axis over batches, anything else is passed to
            ``evaluate`` as a list. Default: keep the logits (on the CPU).
        include_baseline: add an ``unsteered`` row (``value`` NaN).
        method: ``"auto"`` (fast path for last-position targets), ``"fast"`` or ``"naive"``.
        progress: show a progress bar.
    """
    values = check_finite_values(values)
    if not targets:
        raise ValueError("no steering targets: pass at least one (feature_target(...), ...)")
    names = [t.name for t in targets]
    if len(set(names)) != len(names) or BASELINE in names:
        raise ValueError(f"target names must be unique and not {BASELINE!r}: {names}")
    for target in targets:
        check_hook_name(model, target.hook_name)
    collect = collect or _keep_logits
    edits = {(t.name, v): t.make_edit(v) for t in targets for v in values}
    hooks: dict[str, list[SteeringTarget]] = {}
    for target in targets:
        hooks.setdefault(target.hook_name, []).append(target)

    buckets: dict[tuple[str, float], list[Any]] = {key: [] for key in edits}
    baseline: list[Any] = []
    used: dict[str, str] = {}
    n_batches = 0
    total = len(batches) * len(hooks) if hasattr(batches, "__len__") else None  # type: ignore[arg-type]
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("steering sweep", total=total)
        offset = 0
        for tokens, mask in batches:
            n_batches += 1
            rows = np.arange(offset, offset + tokens.shape[0], dtype=np.int64)
            offset += tokens.shape[0]
            base_logits = None
            for hook_name, group in hooks.items():
                out, base = _run_hook_group(
                    model,
                    tokens,
                    mask,
                    hook_name,
                    group,
                    values,
                    edits,
                    method,
                    used,
                    need_baseline=base_logits is None,
                )
                base_logits = base if base_logits is None else base_logits
                for key, logits in out.items():
                    buckets[key].append(collect(logits, tokens, mask, rows))
                bar.advance(task)
            if include_baseline:
                if base_logits is None:
                    base_logits = _plain_last_logits(model, tokens, mask)
                baseline.append(collect(base_logits, tokens, mask, rows))
    if n_batches == 0:
        raise ValueError("batches is empty: nothing to evaluate")

    rows = []
    if include_baseline:
        rows.append(_row(BASELINE, "none", None, float("nan"), evaluate(_merge(baseline))))
    for target in targets:
        for v in values:
            scores = evaluate(_merge(buckets[(target.name, v)]))
            rows.append(_row(target.name, target.kind, target.hook_name, v, scores))
    frame = pd.DataFrame(rows)
    metadata = {
        "values": values,
        "n_batches": n_batches,
        "targets": [
            {
                "name": t.name,
                "kind": t.kind,
                "hook_name": t.hook_name,
                "positions": t.positions if isinstance(t.positions, str) else "explicit",
                "method": used.get(t.name, "naive"),
            }
            for t in targets
        ],
    }
    return SweepResult(frame, metadata)


def _run_hook_group(
    model: HookedTransformer,
    tokens: torch.Tensor,
    mask: torch.Tensor | None,
    hook_name: str,
    group: list[SteeringTarget],
    values: list[float],
    edits: dict[tuple[str, float], EditSpec],
    method: str,
    used: dict[str, str],
    need_baseline: bool,
) -> tuple[dict[tuple[str, float], torch.Tensor], torch.Tensor | None]:
    """Steer one batch at one hook for all its targets; optionally the unsteered logits too."""
    last = [t for t in group if isinstance(t.positions, str) and t.positions == "last"]
    other = [t for t in group if t not in last]
    fast = method == "fast" or (method == "auto" and fast_path_problem(model, tokens, mask) is None)
    if method == "fast" and other:
        raise ValueError(
            f"method='fast' steers only the last position but targets "
            f"{[t.name for t in other]} use other positions; use method='auto'"
        )
    out: dict[tuple[str, float], torch.Tensor] = {}
    baseline = None
    if fast and last:
        steerer = LastPositionSteerer(model, tokens, mask, hook_name)
        keys = [(t.name, v) for t in last for v in values]
        runs = [edits[k] for k in keys] + ([None] if need_baseline else [])
        logits = steerer.run(runs)
        for (name, value), scores in zip(keys, logits[: len(keys)], strict=True):
            check_finite_scores(scores, value, f"steering value of {name!r}")
        out.update(zip(keys, logits[: len(keys)], strict=True))
        baseline = logits[len(keys)] if need_baseline else None
        used.update({t.name: "fast" for t in last})
    else:
        other = group
    for target in other:
        per_value = steered_last_logits(
            model,
            tokens,
            mask,
            hook_name,
            [edits[(target.name, v)] for v in values],
            positions=target.positions,
            method="naive",
        )
        for value, scores in zip(values, per_value, strict=True):
            check_finite_scores(scores, value, f"steering value of {target.name!r}")
        out.update(zip([(target.name, v) for v in values], per_value, strict=True))
        used[target.name] = "naive"
    return out, baseline


def _plain_last_logits(
    model: HookedTransformer, tokens: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    with torch.no_grad():
        logits = model(tokens.to(model.cfg.device), attention_mask=mask)
    return last_real_logits(logits, mask)


def _keep_logits(logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor | None,
                 rows: np.ndarray) -> Any:
    return logits.detach().cpu()


def _merge(parts: list[Any]) -> Any:
    if parts and all(isinstance(p, torch.Tensor) for p in parts):
        return torch.cat(parts, dim=0)
    if parts and all(isinstance(p, np.ndarray) for p in parts):
        return np.concatenate(parts, axis=0)
    return parts


def _row(
    target: str, kind: str, hook_name: str | None, value: float, scores: Mapping[str, float]
) -> dict[str, Any]:
    if not isinstance(scores, Mapping):
        raise TypeError(
            f"evaluate must return a mapping {{metric: number}}, got {type(scores).__name__}"
        )
    row: dict[str, Any] = {"target": target, "kind": kind, "hook_name": hook_name, "value": value}
    for metric, score in scores.items():
        if metric in row:
            raise ValueError(f"metric name {metric!r} clashes with a key column; rename it")
        try:
            row[str(metric)] = float(score)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"metric {metric!r} is not a number: {score!r}") from exc
    return row


"""Save and load an :class:`~mechrec.alignment.AlignmentRun` as one versioned file.

:meth:`AlignmentRun.save <mechrec.alignment.AlignmentRun.save>` writes the tables
(:meth:`~mechrec.alignment.AlignmentRun.write`) and ``run.npz``: every source's statistics on
both row sets, the attribute groups, the settings and, unless left out, the score rows'
values of the chosen features (what :meth:`~mechrec.alignment.AlignmentRun.bootstrap`
resamples), and the bootstrap it was saved with (its resampled scores and confidence, so the
intervals written beside it are read back without resampling again). :func:`load_run` reads it
back into an equal run: the same tables, the same bootstrap for the same seed. Only numbers and
text are stored (``np.load`` with ``allow_pickle=False``).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mechrec._io import atomic_write_bytes, json_safe
from mechrec.alignment.bootstrap import AlignmentBootstrap
from mechrec.alignment.stats import AlignmentStats

if TYPE_CHECKING:  # pragma: no cover - typing only
    from mechrec.alignment.recipe import AlignmentRun

__all__ = ["RUN_FILE", "RUN_FORMAT", "load_run", "save_run_state"]

RUN_FILE = "run.npz"
RUN_FORMAT = "mechrec.alignment_run/1"
_STATS_VECTORS = ("attribute_prevalence", "attribute_is_binary", "feature_mean",
                  "feature_active_rate")


def _labels(values: Any) -> tuple[np.ndarray, str]:
    """Feature labels as text plus how to read them back (``int`` or ``str``)."""
    items = list(values)
    if all(isinstance(v, (int, np.integer)) for v in items):
        return np.asarray(items, dtype=np.int64).astype(str), "int"
    return np.asarray([str(v) for v in items], dtype=str), "str"


def _read_labels(text: np.ndarray, kind: str) -> list[Any]:
    return [int(v) for v in text] if kind == "int" else [str(v) for v in text]


def _chosen(selection: pd.Series) -> tuple[np.ndarray, np.ndarray, str]:
    """A selection (attribute -> feature or ``None``) as text: features ("" for none), their
    attributes, and how to read the features back."""
    values = [None if v is None or (isinstance(v, float) and np.isnan(v)) else v
              for v in selection.to_numpy()]
    _, kind = _labels([v for v in values if v is not None])
    return (np.asarray(["" if v is None else str(v) for v in values], dtype=str),
            np.asarray([str(a) for a in selection.index], dtype=str), kind)


def _read_chosen(text: np.ndarray, attributes: np.ndarray, kind: str) -> pd.Series:
    return pd.Series([None if v == "" else (int(v) if kind == "int" else str(v)) for v in text],
                     index=[str(a) for a in attributes], dtype=object)


def _save_bootstrap(boot: AlignmentBootstrap, confidence: float,
                    arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Put ``boot``'s arrays into ``arrays``; return its settings for the metadata."""
    arrays["boot.attributes"] = np.asarray([str(a) for a in boot.attribute_names], dtype=str)
    sources: dict[str, Any] = {}
    for i, source in enumerate(boot.samples):
        estimates = boot.estimates[source].reindex(index=boot.attribute_names,
                                                   columns=list(boot.metrics))
        arrays[f"boot.{i}.estimates"] = estimates.to_numpy(dtype=np.float64)
        for metric in boot.metrics:
            arrays[f"boot.{i}.samples.{metric}"] = np.asarray(boot.samples[source][metric],
                                                              dtype=np.float64)
        chosen, chosen_for, kind = _chosen(boot.selections[source])
        arrays[f"boot.{i}.chosen"], arrays[f"boot.{i}.chosen_for"] = chosen, chosen_for
        sources[source] = {"index": i, "feature_kind": kind}
    return {"sources": sources, "metrics": list(boot.metrics), "n_rows": boot.n_rows,
            "n_groups": boot.n_groups, "grouped": boot.grouped,
            "n_resamples": boot.n_resamples, "seed": boot.seed, "confidence": confidence}


def _load_bootstrap(data: Any, info: dict[str, Any]) -> AlignmentBootstrap:
    attributes = pd.Index([str(a) for a in data["boot.attributes"]])
    metrics = tuple(info["metrics"])
    estimates, samples, selections = {}, {}, {}
    for source, entry in info["sources"].items():
        i = entry["index"]
        estimates[source] = pd.DataFrame(data[f"boot.{i}.estimates"], index=attributes,
                                         columns=list(metrics))
        samples[source] = {m: data[f"boot.{i}.samples.{m}"] for m in metrics}
        selections[source] = _read_chosen(data[f"boot.{i}.chosen"],
                                          data[f"boot.{i}.chosen_for"], entry["feature_kind"])
    return AlignmentBootstrap(
        estimates=estimates, samples=samples, selections=selections,
        attribute_names=attributes, metrics=metrics, n_rows=int(info["n_rows"]),
        n_groups=int(info["n_groups"]), grouped=bool(info["grouped"]),
        n_resamples=int(info["n_resamples"]), seed=int(info["seed"]))


def save_run_state(run: AlignmentRun, path: Path, *, keep_rows: bool = True,
                   bootstrap: AlignmentBootstrap | None = None,
                   confidence: float = 0.95) -> Path:
    """Write ``run`` to ``path`` (``run.npz``) atomically, with ``bootstrap`` (and the
    ``confidence`` of its written intervals) when given; see the module docstring."""
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {
        "format": RUN_FORMAT, "metric": run.metric, "hook_name": run.hook_name,
        "select_part": run.select_part, "score_part": run.score_part, "seed": run.seed,
        "unit": run.unit, "group_unit": run.group_unit, "table_stems": run.table_stems,
        "notes": run.notes, "sources": list(run.stats), "stats": {}, "scored": None,
        "bootstrap": None,
    }
    arrays["attributes"] = np.asarray([str(a) for a in run.groups.index], dtype=str)
    arrays["attribute_groups"] = np.asarray([str(g) for g in run.groups], dtype=str)
    for s_index, (source, parts) in enumerate(run.stats.items()):
        for part, stats in parts.items():
            key = f"s{s_index}.{part}"
            labels, kind = _labels(stats.feature_names)
            arrays[f"{key}.features"] = labels
            arrays[f"{key}.stat_attributes"] = np.asarray(
                [str(a) for a in stats.attribute_names], dtype=str)
            for metric, matrix in stats.values.items():
                arrays[f"{key}.metric.{metric}"] = np.asarray(matrix)
            for name in _STATS_VECTORS:
                arrays[f"{key}.{name}"] = np.asarray(getattr(stats, name))
            meta["stats"][key] = {"source": source, "part": part, "feature_kind": kind,
                                  "n_rows": int(stats.n_rows),
                                  "threshold": float(stats.threshold),
                                  "metrics": list(stats.values)}
    scored = run.scored
    if keep_rows and scored is not None:
        groups = np.asarray(scored.groups)
        meta["scored"] = {"metric": scored.metric, "sources": {},
                          "groups_kind": "int" if groups.dtype.kind in "iu" else "str"}
        arrays["scored.labels"] = scored.labels.to_numpy(dtype=np.float32)
        arrays["scored.label_names"] = np.asarray([str(c) for c in scored.labels.columns],
                                                  dtype=str)
        arrays["scored.groups"] = groups if groups.dtype.kind in "iu" else groups.astype(str)
        for s_index, source in enumerate(scored.columns):
            labels, kind = _labels(scored.features[source])
            arrays[f"scored.{s_index}.values"] = np.asarray(scored.columns[source], np.float32)
            arrays[f"scored.{s_index}.features"] = labels
            chosen = scored.selections[source]
            arrays[f"scored.{s_index}.chosen"] = np.asarray(
                ["" if v is None else str(v) for v in chosen.to_numpy()], dtype=str)
            arrays[f"scored.{s_index}.chosen_for"] = np.asarray(
                [str(a) for a in chosen.index], dtype=str)
            meta["scored"]["sources"][source] = {"index": s_index, "feature_kind": kind}
    if bootstrap is not None:
        meta["bootstrap"] = _save_bootstrap(bootstrap, float(confidence), arrays)
    arrays["meta"] = np.asarray(json.dumps(json_safe(meta)))
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return atomic_write_bytes(path, buffer.getvalue())


def load_run(directory: str | Path) -> AlignmentRun:
    """Read an :class:`~mechrec.alignment.AlignmentRun` saved by ``AlignmentRun.save``.

    Raises:
        FileNotFoundError: no ``run.npz`` in ``directory``.
        ValueError: the file is damaged or of another format.
    """
    from mechrec.alignment.recipe import AlignmentRun, ScoredRows

    path = Path(directory) / RUN_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: save the run with AlignmentRun.save(directory) (write() keeps "
            "only the tables)")
    try:
        data = np.load(path, allow_pickle=False)
        meta = json.loads(str(data["meta"]))
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"{path} is not a readable alignment run ({exc}): save it again") \
            from None
    if meta.get("format") != RUN_FORMAT:
        raise ValueError(f"{path} has format {meta.get('format')!r}, not {RUN_FORMAT!r}")
    stats: dict[str, dict[str, AlignmentStats]] = {s: {} for s in meta["sources"]}
    for key, info in meta["stats"].items():
        stats[info["source"]][info["part"]] = AlignmentStats(
            values={m: data[f"{key}.metric.{m}"] for m in info["metrics"]},
            feature_names=pd.Index(_read_labels(data[f"{key}.features"],
                                                info["feature_kind"])),
            attribute_names=pd.Index([str(a) for a in data[f"{key}.stat_attributes"]]),
            n_rows=int(info["n_rows"]), threshold=float(info["threshold"]),
            **{name: data[f"{key}.{name}"] for name in _STATS_VECTORS})
    groups = pd.Series([str(g) for g in data["attribute_groups"]],
                       index=pd.Index([str(a) for a in data["attributes"]], name="attribute"),
                       name="group")
    scored = None
    if meta.get("scored"):
        info = meta["scored"]
        columns, features, selections = {}, {}, {}
        for source, entry in info["sources"].items():
            i, kind = entry["index"], entry["feature_kind"]
            columns[source] = data[f"scored.{i}.values"]
            features[source] = _read_labels(data[f"scored.{i}.features"], kind)
            selections[source] = _read_chosen(data[f"scored.{i}.chosen"],
                                              data[f"scored.{i}.chosen_for"], kind)
        label_names = [str(c) for c in data["scored.label_names"]]
        groups_rows = data["scored.groups"]
        scored = ScoredRows(columns=columns, features=features, selections=selections,
                            labels=pd.DataFrame(data["scored.labels"], columns=label_names),
                            groups=groups_rows, metric=info["metric"])
    boot_info = meta.get("bootstrap")  # absent in files saved before the bootstrap was kept
    saved = {} if not boot_info else {
        "saved_bootstrap": _load_bootstrap(data, boot_info),
        "saved_confidence": float(boot_info["confidence"])}
    return AlignmentRun(stats=stats, groups=groups, metric=meta["metric"],
                        hook_name=meta["hook_name"], select_part=meta["select_part"],
                        score_part=meta["score_part"], seed=int(meta["seed"]),
                        unit=meta["unit"], group_unit=meta["group_unit"],
                        notes=list(meta["notes"]), scored=scored,
                        table_stems=dict(meta["table_stems"]), **saved)

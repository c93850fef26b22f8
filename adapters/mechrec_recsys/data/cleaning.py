"""Turning parsed interaction rows into a dataset's interactions table.

Shared by every loader. Rules (all counted in the :class:`LoadReport`, never silent):

* **Duplicate events** - rows with the same user, item and timestamp (same user and item when
  there are no timestamps) - are dropped keeping the first (``duplicates="drop"``, default),
  kept (``"keep"``, e.g. for listening logs without timestamps where repeats are real), or
  rejected (``"error"``). Repeated (user, item) pairs at *different* times are distinct events
  and always kept.
* **Unknown items** - rows whose item is not in the catalog - are dropped
  (``unknown_items="drop"``, default) or rejected (``"error"``).
* **An explicit order** (``order`` column) must be unique within each user and, with
  timestamps, agree with them (a later position never has an earlier timestamp); otherwise
  the load fails naming the user and the rows.
* **An empty result** is always an error naming the file and what removed the rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mechrec_recsys.data.catalog import ItemCatalog
from mechrec_recsys.data.errors import DataFormatError, EmptyDatasetError
from mechrec_recsys.data.readers import LINE
from mechrec_recsys.data.report import LoadReport

UNKNOWN_ITEMS = ("drop", "error")
DUPLICATES = ("drop", "keep", "error")


def check_policies(unknown_items: str, duplicates: str) -> None:
    """Validate the ``unknown_items`` and ``duplicates`` arguments of a loader."""
    if unknown_items not in UNKNOWN_ITEMS:
        raise ValueError(f"unknown_items must be one of {UNKNOWN_ITEMS}, got {unknown_items!r}")
    if duplicates not in DUPLICATES:
        raise ValueError(f"duplicates must be one of {DUPLICATES}, got {duplicates!r}")


def finish_interactions(
    frame: pd.DataFrame,
    catalog: ItemCatalog,
    report: LoadReport,
    *,
    path: Path,
    unknown_items: str = "drop",
    duplicates: str = "drop",
    unit: str = "line",
) -> pd.DataFrame:
    """Apply the duplicate and unknown-item rules and return the final interactions.

    Args:
        frame: parsed rows with ``user_id``, ``item_id``, optional ``timestamp``/``rating``
            and the :data:`~mechrec_recsys.data.readers.LINE` column.
        catalog: the item catalog.
        report: receives the drops and ``rows_kept``.
        path: the interactions file, named in errors.
        unknown_items: ``"drop"`` or ``"error"``.
        duplicates: ``"drop"``, ``"keep"`` or ``"error"``.
        unit: ``"line"`` for text files, ``"row"`` for parquet.

    Returns:
        The interactions in file order, index ``0..n-1``, typed as
        :data:`~mechrec_recsys.data.dataset.INTERACTION_DTYPES`.
    """
    check_policies(unknown_items, duplicates)
    name = Path(path).name
    if len(frame) == 0:
        raise EmptyDatasetError(f"{path}: contains no interactions. Fix: check that this is the "
                                "interactions file and that it is not empty")
    key = ["user_id", "item_id"] + (["timestamp"] if "timestamp" in frame.columns else [])
    if duplicates != "keep":
        repeated = frame.duplicated(subset=key, keep="first").to_numpy()
        if repeated.any():
            rows = frame.loc[repeated]
            first = rows.iloc[0]
            original = frame.loc[(frame[key] == first[key]).all(axis=1), LINE].iloc[0]
            what = ", ".join(f"{k} {int(first[k])}" for k in key)
            if duplicates == "error":
                raise DataFormatError(
                    path, f"repeats the event on {unit} {int(original)} ({what}); "
                    f"{int(repeated.sum()):,} rows repeat an earlier one",
                    "remove the repeated rows, or pass duplicates='drop' (drop and count them) "
                    "or duplicates='keep' (repeats are real events)",
                    line=int(first[LINE]), unit=unit)
            examples = [f"{name} {unit} {int(r[LINE])}: " + ", ".join(
                f"{k} {int(r[k])}" for k in key) for _, r in rows.head(5).iterrows()]
            report.add_drop("duplicate_event", int(repeated.sum()), examples)
            frame = frame.loc[~repeated]
    unknown = ~frame["item_id"].isin(catalog.items.index).to_numpy()
    if unknown.any():
        rows = frame.loc[unknown]
        if unknown_items == "error":
            first = rows.iloc[0]
            raise DataFormatError(
                path, f"item {int(first['item_id'])} is not in the item catalog "
                f"({int(unknown.sum()):,} rows refer to unknown items)",
                "add the item to the item file, delete the row, or pass unknown_items='drop' "
                "to drop and count such rows",
                line=int(first[LINE]), unit=unit)
        examples = [f"{name} {unit} {int(r[LINE])}: item {int(r['item_id'])}"
                    for _, r in rows.head(5).iterrows()]
        report.add_drop("unknown_item", int(unknown.sum()), examples)
        frame = frame.loc[~unknown]
    if len(frame) == 0:
        reasons = ", ".join(f"{n:,} {reason}" for reason, n in report.dropped.items())
        raise EmptyDatasetError(
            f"{path}: no interactions left after filtering ({reasons}). Fix: check that the "
            "interactions and the item file belong together (same item ids)")
    out = pd.DataFrame({
        "user_id": frame["user_id"].to_numpy(dtype=np.int64),
        "item_id": frame["item_id"].to_numpy(dtype=np.int64),
    })
    if "timestamp" in frame.columns:
        out["timestamp"] = frame["timestamp"].to_numpy(dtype=np.int64)
    if "rating" in frame.columns:
        out["rating"] = frame["rating"].to_numpy(dtype=np.float64)
    if "order" in frame.columns:
        out["order"] = frame["order"].to_numpy(dtype=np.int64)
        _check_order(out, frame[LINE].to_numpy(), path, unit)
    report.rows_kept = len(out)
    return out


def _check_order(out: pd.DataFrame, lines: np.ndarray, path: str | Path, unit: str) -> None:
    """Reject an ``order`` column that repeats within a user or runs against timestamps."""
    users = out["user_id"].to_numpy()
    order = out["order"].to_numpy()
    by = np.lexsort((order, users))
    same_user = users[by][1:] == users[by][:-1]
    repeated = same_user & (order[by][1:] == order[by][:-1])
    if repeated.any():
        i = int(np.flatnonzero(repeated)[0])
        rows = sorted(int(lines[by][j]) for j in (i, i + 1))
        raise DataFormatError(
            path, f"user {int(users[by][i])} has order value {int(order[by][i])} on {unit}s "
            f"{rows[0]} and {rows[1]}", "give every event of a user its own order value "
            "(e.g. its 0-based position in the user's sequence)", line=rows[1], unit=unit)
    if "timestamp" in out.columns:
        times = out["timestamp"].to_numpy()[by]
        backwards = same_user & (times[1:] < times[:-1])
        if backwards.any():
            i = int(np.flatnonzero(backwards)[0])
            raise DataFormatError(
                path, f"user {int(users[by][i])}: the event at order {int(order[by][i + 1])} "
                f"has an earlier timestamp ({int(times[i + 1])}) than the one at order "
                f"{int(order[by][i])} ({int(times[i])})",
                "fix the order or the timestamps, or load without the order column (events "
                "are then sorted by timestamp with a tie-break)",
                line=int(lines[by][i + 1]), unit=unit)

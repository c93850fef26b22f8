"""``LoadReport``: what a loader read, what it dropped and why.

Loaders never drop rows silently: every row that does not make it into a
:class:`~mechrec_recsys.data.dataset.Dataset` is counted here under a reason, with a few
examples that point at the file and line, and the loader logs a warning.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

LOGGER = logging.getLogger("mechrec_recsys.data")

#: Reasons under which rows can be dropped (keys of :attr:`LoadReport.dropped`).
#: ``malformed_item_row`` and ``unknown_genre`` count item-file rows and genre labels; the
#: others count interaction rows.
DROP_REASONS = {
    "malformed_row": "malformed rows (wrong number of fields, non-integer ids, bad values)",
    "malformed_item_row": "malformed rows of the item file (their items become unknown)",
    "duplicate_event": "exact duplicate events (same user, item and timestamp)",
    "unknown_item": "interactions whose item is not in the item catalog",
    "unknown_genre": "genre labels outside the layout's official list (dropped labels)",
}

MAX_EXAMPLES = 5


@dataclass
class LoadReport:
    """Counts of what a loader read, kept and dropped.

    Attributes:
        source: dataset name or layout the report belongs to.
        files: the files read, in order.
        encodings: text encoding used for each text file (``str(path) -> encoding``).
        rows_read: interaction rows read from the interactions file (blank lines excluded).
        rows_kept: interaction rows in the final dataset.
        blank_lines: blank lines skipped in any text file.
        dropped: number of dropped rows (or labels) per reason, see :data:`DROP_REASONS`.
        examples: up to five examples per reason, each naming file and line.
        unknown_genres: genre labels outside the official list and how many items carry
            each; they are kept as extra genre columns unless the loader was told otherwise.
        notes: other facts worth knowing (fallbacks used, items without genres, ...).
    """

    source: str
    files: list[str] = field(default_factory=list)
    encodings: dict[str, str] = field(default_factory=dict)
    rows_read: int = 0
    rows_kept: int = 0
    blank_lines: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    unknown_genres: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add_drop(self, reason: str, count: int, examples: list[str] | None = None) -> None:
        """Record ``count`` dropped rows under ``reason`` and log a warning."""
        if count <= 0:
            return
        if reason not in DROP_REASONS:
            raise ValueError(f"unknown drop reason {reason!r}; expected one of "
                             f"{sorted(DROP_REASONS)}")
        self.dropped[reason] = self.dropped.get(reason, 0) + int(count)
        kept = self.examples.setdefault(reason, [])
        for example in examples or []:
            if len(kept) >= MAX_EXAMPLES:
                break
            kept.append(example)
        first = f" (e.g. {examples[0]})" if examples else ""
        LOGGER.warning("%s: dropped %d %s%s", self.source, count, DROP_REASONS[reason], first)

    def add_note(self, note: str) -> None:
        """Record a fact about the load and log it."""
        self.notes.append(note)
        LOGGER.info("%s: %s", self.source, note)

    @property
    def total_dropped(self) -> int:
        """Total number of dropped interaction rows (item-file rows and labels excluded)."""
        item_level = {"unknown_genre", "malformed_item_row"}
        return sum(n for reason, n in self.dropped.items() if reason not in item_level)

    def summary_lines(self) -> list[str]:
        """Human-readable lines describing the load, for logs and the CLI."""
        lines = [f"read {self.rows_read:,} interaction rows, kept {self.rows_kept:,}"]
        if self.blank_lines:
            lines.append(f"skipped {self.blank_lines:,} blank line(s)")
        for reason, count in self.dropped.items():
            example = self.examples.get(reason)
            suffix = f" (e.g. {example[0]})" if example else ""
            lines.append(f"dropped {count:,} {DROP_REASONS[reason]}{suffix}")
        if self.unknown_genres:
            labels = ", ".join(f"{g!r} x{n}" for g, n in sorted(self.unknown_genres.items()))
            lines.append(f"genre labels outside the official list: {labels}")
        lines.extend(self.notes)
        return lines

    def to_dict(self) -> dict:
        """A JSON-serialisable copy of the report."""
        return {
            "source": self.source,
            "files": list(self.files),
            "encodings": dict(self.encodings),
            "rows_read": self.rows_read,
            "rows_kept": self.rows_kept,
            "blank_lines": self.blank_lines,
            "dropped": dict(self.dropped),
            "examples": {k: list(v) for k, v in self.examples.items()},
            "unknown_genres": dict(self.unknown_genres),
            "notes": list(self.notes),
        }

    def __str__(self) -> str:
        return f"{self.source}: " + "; ".join(self.summary_lines())

"""Exceptions raised by the data layer.

Every error names the problem and the fix. They subclass the built-in types the rest of
mechrec (and the CLI) catches: bad file contents are :class:`ValueError`, missing data is
:class:`FileNotFoundError`.
"""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """Bad input data: a file or table that cannot be turned into a dataset as it stands."""


class DataFormatError(DataError):
    """A file whose contents do not match the expected format.

    The message reads ``"<file>, line <n>: <problem>. Fix: <fix>"`` so that a person can open
    the file at the right place.

    Attributes:
        path: the offending file.
        line: 1-based line number (or row number for parquet files), ``None`` if not applicable.
        problem: what is wrong.
        fix: how to repair it.
    """

    def __init__(
        self, path: str | Path, problem: str, fix: str, *, line: int | None = None,
        unit: str = "line",
    ) -> None:
        self.path = Path(path)
        self.line = line
        self.problem = problem
        self.fix = fix
        where = f"{self.path}" if line is None else f"{self.path}, {unit} {line}"
        super().__init__(f"{where}: {problem}. Fix: {fix}")


class MissingTimestampsError(DataError):
    """A time-based operation was asked of a dataset that has no timestamps."""


class EmptyDatasetError(DataError):
    """Nothing is left of a dataset after filtering (or there was nothing to begin with)."""


class ChecksumError(DataError):
    """A downloaded archive does not match its published size or checksum."""


class DatasetNotFoundError(FileNotFoundError):
    """The files of a dataset are neither on disk nor downloadable right now.

    The message names the files looked for, the folders searched, the official URL and the
    folder in which to place the files by hand.
    """

"""Reading delimited text and parquet tables with errors that name file, line and fix.

Two paths share one set of rules:

* a fast path hands a well-formed file to pandas' C parser;
* when that fails in any way (a row with the wrong number of fields, a non-integer id, a blank
  line, an undecodable byte, ...), a careful path re-reads the file with the :mod:`csv` module,
  checks every row and either raises :class:`DataFormatError` naming the first bad line and the
  fix (``on_bad_rows="error"``, the default) or drops the bad rows and counts them in the
  :class:`LoadReport` (``on_bad_rows="drop"``).

A file in which every row is bad is always an error: that is a wrong format (for example a
wrong separator), not a few damaged rows.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mechrec_recsys.data.errors import DataFormatError, DatasetNotFoundError
from mechrec_recsys.data.report import LoadReport

ON_BAD_ROWS = ("error", "drop")
KINDS = ("int", "float", "str", "time")
TIME_UNITS = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
_UNIT_SEP = "\x1f"
#: Name of the column holding each row's 1-based line (text) or row (parquet) number.
LINE = "_line"
_CHUNK_ROWS = 500_000
_SEPARATOR_NAMES = {",": "comma", "\t": "tab", "|": "'|'", ";": "';'", "::": "'::'"}


@dataclass(frozen=True)
class TextFormat:
    """How a delimited text file is laid out.

    Attributes:
        sep: field separator (one or more characters, e.g. ``"\\t"``, ``","``, ``"::"``).
        header: whether the first line names the columns.
        quoting: whether fields may be quoted with ``"`` (CSV files); otherwise quotes are
            ordinary characters (MovieLens ``.dat`` and ``u.item`` titles contain them).
        encodings: encodings to try, in order; the first that decodes the whole file wins.
        n_fields: exact number of fields of every row, or ``None`` (then: as many as the header).
        expected_header: for official layouts, the header the file must have.
        official_encoding: the encoding the official file uses (default: the first of
            ``encodings``); decoding a non-ASCII file differently is noted in the report.
        final_newline: the official file ends with a line break, so a last line without one
            was cut (a truncated download or copy) and is reported as a malformed row, even
            when its fields still parse (a timestamp cut from ``881250949`` to ``88``).
    """

    sep: str
    header: bool
    quoting: bool = False
    encodings: tuple[str, ...] = ("utf-8",)
    n_fields: int | None = None
    expected_header: tuple[str, ...] | None = None
    official_encoding: str | None = None
    final_newline: bool = False

    @property
    def sep_name(self) -> str:
        """Readable name of the separator, for messages."""
        return _SEPARATOR_NAMES.get(self.sep, repr(self.sep))


@dataclass(frozen=True)
class Field:
    """One column to take from a table.

    Attributes:
        name: the column name in the result.
        source: the column in the file: a header name, or a 0-based position.
        kind: ``"int"`` (int64), ``"float"`` (float64), ``"str"`` or ``"time"`` (int64
            seconds since the epoch, from numbers in ``time_unit`` or from date-time strings).
    """

    name: str
    source: str | int
    kind: str
    optional: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"field kind must be one of {KINDS}, got {self.kind!r}")


@dataclass
class RawRows:
    """Rows of a text file as strings, with the line each row ends on."""

    path: Path
    header: list[str] | None
    header_line: int | None
    rows: list[list[str]]
    lines: list[int]
    encoding: str


def require_file(path: Path, what: str, fix: str) -> Path:
    """Return ``path`` if it is a file; otherwise raise :class:`DatasetNotFoundError`."""
    if not path.is_file():
        raise DatasetNotFoundError(f"{what} not found: {path}. Fix: {fix}")
    return path


def check_on_bad_rows(on_bad_rows: str) -> None:
    """Validate an ``on_bad_rows`` argument."""
    if on_bad_rows not in ON_BAD_ROWS:
        raise ValueError(f"on_bad_rows must be one of {ON_BAD_ROWS}, got {on_bad_rows!r}")


def decode_text(
    path: Path, encodings: tuple[str, ...], report: LoadReport, official: str | None = None
) -> tuple[str, str]:
    """Decode a whole file with the first encoding that works.

    A non-ASCII file decoded with an encoding other than ``official`` (default: the first of
    ``encodings``) gets a note in the report.

    Returns:
        ``(text, encoding)``; a UTF-8 byte-order mark is removed.

    Raises:
        DataFormatError: no encoding decodes the file; names the first undecodable line.
    """
    data = path.read_bytes()
    failure: UnicodeDecodeError | None = None
    for encoding in encodings:
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError as exc:
            failure = failure or exc
            continue
        report.encodings[str(path)] = encoding
        expected = official or encodings[0]
        if encoding != expected and not text.isascii():
            report.add_note(f"{path.name} is not {expected} like the official file; decoded it "
                            f"as {encoding}")
        return text.removeprefix("\ufeff"), encoding
    assert failure is not None
    line = data[: failure.start].count(b"\n") + 1
    raise DataFormatError(
        path,
        f"byte {data[failure.start:failure.start + 1]!r} cannot be decoded as "
        f"{' or '.join(encodings)}",
        "save the file in one of those encodings (or pass the file's real encoding, e.g. "
        "encoding='latin-1')",
        line=line,
    )


def _split_text(text: str, fmt: TextFormat, path: Path) -> Any:
    sep = fmt.sep
    if len(sep) > 1:
        if _UNIT_SEP in text:
            raise DataFormatError(path, "contains the control character \\x1f",
                                  "remove it; it is not valid in MovieLens files")
        text = text.replace(sep, _UNIT_SEP)
        sep = _UNIT_SEP
    return csv.reader(
        io.StringIO(text, newline=""),
        delimiter=sep,
        quoting=csv.QUOTE_MINIMAL if fmt.quoting else csv.QUOTE_NONE,
        strict=False,
    )


@dataclass
class RowStream:
    """Rows of a text file as they are read: the header, then ``(fields, line)`` pairs."""

    path: Path
    header: list[str] | None
    header_line: int | None
    rows: Iterator[tuple[list[str], int]]
    encoding: str


def stream_rows(path: Path, fmt: TextFormat, report: LoadReport) -> RowStream:
    """Open a delimited text file for row-by-row reading (blank lines skipped and counted).

    Raises:
        DataFormatError: the file cannot be decoded, or its header differs from
            ``fmt.expected_header``.
    """
    text, encoding = decode_text(path, fmt.encodings, report, fmt.official_encoding)
    reader = _split_text(text, fmt, path)
    del text

    def _rows() -> Iterator[tuple[list[str], int]]:
        try:
            for row in reader:
                if not row or (len(row) == 1 and not row[0].strip()):
                    report.blank_lines += 1
                    continue
                yield row, reader.line_num
        except csv.Error as exc:  # e.g. a NUL byte
            raise DataFormatError(path, f"cannot be parsed ({exc})",
                                  "repair the line or re-download the file",
                                  line=reader.line_num) from None

    stream = _rows()
    header: list[str] | None = None
    header_line: int | None = None
    if fmt.header:
        first = next(stream, None)
        if first is not None:
            header, header_line = [h.strip() for h in first[0]], first[1]
    if fmt.header and fmt.expected_header is not None and header != list(fmt.expected_header):
        found = fmt.sep.join(header) if header else "(empty file)"
        raise DataFormatError(
            path,
            f"header is {found!r}, expected {fmt.sep.join(fmt.expected_header)!r}",
            "use the official file (re-download it) or load it with load_generic and a "
            "column mapping",
            line=header_line or 1,
        )
    return RowStream(path, header, header_line, stream, encoding)


def read_rows(path: Path, fmt: TextFormat, report: LoadReport) -> RawRows:
    """Read a whole delimited text file into rows of strings (for small files such as item
    tables); see :func:`stream_rows`."""
    stream = stream_rows(path, fmt, report)
    rows: list[list[str]] = []
    lines: list[int] = []
    for row, line in stream.rows:
        rows.append(row)
        lines.append(line)
    return RawRows(path, stream.header, stream.header_line, rows, lines, stream.encoding)


def _guess_separator(raw_line: list[str], fmt: TextFormat, expected: int) -> str:
    joined = fmt.sep.join(raw_line)
    for candidate in (",", "\t", "|", ";", "::"):
        if candidate != fmt.sep and len(joined.split(candidate)) == expected:
            return f"; the line looks {_SEPARATOR_NAMES[candidate]}-separated"
    return ""


def convert_values(values: pd.Series, kind: str, time_unit: str = "s") -> tuple[
    pd.Series, np.ndarray, str
]:
    """Convert a column of raw values to ``kind``.

    Returns:
        ``(converted, bad, problem)``: the converted column (bad entries hold a placeholder),
        a boolean mask of entries that could not be converted, and a description of the
        problem used in messages.
    """
    if kind == "str":
        text = values.astype("string")
        return text, text.isna().to_numpy(), "missing value"
    if kind == "time":
        return _convert_time(values, time_unit)
    numbers = pd.to_numeric(values, errors="coerce")
    if kind == "float":
        bad = numbers.isna().to_numpy()
        return numbers.astype("float64").fillna(0.0), bad, "not a number"
    if pd.api.types.is_integer_dtype(numbers.dtype) and not numbers.isna().any():
        ints = numbers.to_numpy(dtype="int64")
        return pd.Series(ints, index=values.index), np.zeros(len(ints), dtype=bool), \
            "not an integer"
    floats = numbers.to_numpy(dtype="float64", na_value=np.nan)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(floats) | (np.mod(floats, 1.0) != 0) | (np.abs(floats) >= 2.0**63)
    ints = np.where(bad, 0.0, floats).astype("int64")
    return pd.Series(ints, index=values.index), bad, "not an integer"


def convert_field(values: pd.Series, field: Field, time_unit: str = "s") -> tuple[
    pd.Series, np.ndarray, str
]:
    """:func:`convert_values` for one :class:`Field`, honouring ``field.optional``."""
    converted, bad, problem = convert_values(values, field.kind, time_unit)
    if not field.optional:
        return converted, bad, problem
    missing = values.isna().to_numpy()
    bad = bad & ~missing
    if field.kind in ("int", "time"):
        converted = converted.astype("Int64").mask(missing)
    elif field.kind == "float":
        converted = converted.mask(missing)
    return converted, bad, problem


def _convert_time(values: pd.Series, time_unit: str) -> tuple[pd.Series, np.ndarray, str]:
    if time_unit not in TIME_UNITS:
        raise ValueError(f"time_unit must be one of {list(TIME_UNITS)}, got {time_unit!r}")
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        stamps = pd.to_datetime(values, utc=True)
        bad = stamps.isna().to_numpy()
        seconds = (stamps - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
        return seconds.fillna(0).astype("int64"), bad, "unparsable timestamp"
    present = values.dropna()
    numeric = pd.to_numeric(present, errors="coerce")
    if len(present) and numeric.notna().all():
        converted, bad, _ = convert_values(values, "int")
        return converted // TIME_UNITS[time_unit], bad, "unparsable timestamp"
    stamps = pd.to_datetime(values.astype("string"), errors="coerce", utc=True,
                            format="ISO8601")
    bad = stamps.isna().to_numpy()
    seconds = (stamps - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    return seconds.fillna(0).astype("int64"), bad, "unparsable timestamp"


def _resolve_positions(
    path: Path, header: list[str] | None, header_line: int | None, fields: list[Field]
) -> list[int]:
    positions = []
    for f in fields:
        if isinstance(f.source, int):
            positions.append(f.source)
            continue
        if header is None:
            raise ValueError(f"field {f.name!r} names column {f.source!r} but the file has no "
                             "header; give a 0-based position instead")
        if f.source not in header:
            hint = ""
            if len(header) == 1:
                for candidate in ("\t", ",", ";", "|", "::"):
                    if candidate in header[0]:
                        hint = (f"; the header looks {_SEPARATOR_NAMES[candidate]}-separated, "
                                f"pass sep={candidate!r}")
                        break
            raise DataFormatError(
                path,
                f"has no column {f.source!r} (for {f.name}); its columns are {header}{hint}",
                "map each field to one of those columns (columns={...}) or fix the header",
                line=header_line or 1,
            )
        positions.append(header.index(f.source))
    return positions


def _fast_read(path: Path, fmt: TextFormat, fields: list[Field], time_unit: str
               ) -> pd.DataFrame | None:
    """pandas' C parser on a well-formed file; ``None`` at the first sign of trouble."""
    source: Path | io.StringIO = path
    sep = fmt.sep
    if len(sep) > 1:  # the C parser takes one character: swap "::" for an unused one
        try:
            text = path.read_bytes().decode(fmt.encodings[0])
        except UnicodeDecodeError:
            return None
        if _UNIT_SEP in text:
            return None
        source, sep = io.StringIO(text.replace(fmt.sep, _UNIT_SEP)), _UNIT_SEP
        del text
    dtypes = {"int": "int64", "float": "float64", "str": "str", "time": None}
    try:
        frame = pd.read_csv(
            source, sep=sep, header=0 if fmt.header else None, engine="c",
            encoding=fmt.encodings[0], skip_blank_lines=False,
            quoting=csv.QUOTE_MINIMAL if fmt.quoting else csv.QUOTE_NONE,
            dtype={f.source: dtypes[f.kind] for f in fields
                   if dtypes[f.kind] and not f.optional},
            keep_default_na=False, na_values=[""],
        )
    except (ValueError, TypeError, UnicodeDecodeError, pd.errors.ParserError, OverflowError):
        return None
    if fmt.header:
        header = [str(c) for c in frame.columns]
        if fmt.expected_header is not None and header != list(fmt.expected_header):
            return None
        if any(isinstance(f.source, str) and f.source not in header for f in fields):
            return None
    if fmt.n_fields is not None and frame.shape[1] != fmt.n_fields:
        return None
    out = {}
    for f in fields:
        column = frame[f.source] if isinstance(f.source, str) or not fmt.header \
            else frame.iloc[:, f.source]
        converted, bad, _ = convert_field(column, f, time_unit)
        if bad.any():
            return None
        out[f.name] = converted.to_numpy()
    out[LINE] = np.arange(len(frame), dtype=np.int64) + (2 if fmt.header else 1)
    return pd.DataFrame(out)


def read_table(
    path: Path,
    fmt: TextFormat,
    fields: list[Field],
    *,
    on_bad_rows: str,
    report: LoadReport,
    fix: str,
    time_unit: str = "s",
) -> pd.DataFrame:
    """Read the given fields of a delimited text file into a typed DataFrame.

    Args:
        path: the file.
        fmt: its layout.
        fields: the columns to take and their kinds.
        on_bad_rows: ``"error"`` to raise on the first malformed row, ``"drop"`` to drop
            malformed rows and count them in ``report``.
        report: receives the encoding, blank lines and dropped rows.
        fix: how to repair a malformed row of this file, quoted in errors.
        time_unit: unit of numeric ``"time"`` fields.

    Returns:
        One column per field (named ``Field.name``), typed by kind, plus :data:`LINE` (the
        1-based line of each row); index ``0..n-1``.
    """
    check_on_bad_rows(on_bad_rows)
    report.files.append(str(path))
    cut = _unterminated_last_line(path) if fmt.final_newline else None
    fast = _fast_read(path, fmt, fields, time_unit) if cut is None else None
    if fast is not None:
        report.encodings[str(path)] = fmt.encodings[0]
        report.rows_read += len(fast)
        return fast
    stream = stream_rows(path, fmt, report)
    flagged = {cut: TRUNCATED_LAST_LINE} if cut is not None else None
    return _checked_frame(stream, fmt, fields, on_bad_rows=on_bad_rows, report=report, fix=fix,
                          time_unit=time_unit, count_rows=True, drop_reason="malformed_row",
                          flagged=flagged)


#: The problem reported for a last line without a line break (``TextFormat.final_newline``).
TRUNCATED_LAST_LINE = ("is the last line and has no line break at its end: the file looks "
                       "truncated (cut inside this row), so its fields cannot be trusted")


def _unterminated_last_line(path: Path) -> int | None:
    """The 1-based number of a non-empty file's last line if it lacks a final line break."""
    with open(path, "rb") as handle:
        handle.seek(0, 2)
        if handle.tell() == 0:
            return None
        handle.seek(-1, 2)
        if handle.read(1) == b"\n":
            return None
        handle.seek(0)
        return sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20), b"")) + 1


def rows_to_frame(
    raw: RawRows,
    fmt: TextFormat,
    fields: list[Field],
    *,
    on_bad_rows: str,
    report: LoadReport,
    fix: str,
    time_unit: str = "s",
    count_rows: bool = True,
    drop_reason: str = "malformed_row",
) -> pd.DataFrame:
    """Check and convert :class:`RawRows`; see :func:`read_table` for the arguments.

    Every row needs exactly ``fmt.n_fields`` fields (or as many as the header), and every
    field must convert to its kind (fields with ``optional=True`` may be empty).
    ``count_rows`` adds the rows to ``report.rows_read``; dropped rows are counted under
    ``drop_reason``.
    """
    check_on_bad_rows(on_bad_rows)
    stream = RowStream(raw.path, raw.header, raw.header_line,
                       iter(zip(raw.rows, raw.lines, strict=True)), raw.encoding)
    return _checked_frame(stream, fmt, fields, on_bad_rows=on_bad_rows, report=report, fix=fix,
                          time_unit=time_unit, count_rows=count_rows, drop_reason=drop_reason)


def _check_chunk(
    rows: list[list[str]], lines: list[int], fmt: TextFormat, fields: list[Field],
    positions: list[int], expected: int | None, time_unit: str,
    flagged: dict[int, str] | None = None,
) -> tuple[pd.DataFrame, dict[int, str]]:
    """Convert one chunk of rows; returns the frame and ``{row index: problem}``.

    ``flagged`` maps line numbers known to be bad (e.g. a cut last line) to their problem.
    """
    problems: dict[int, str] = {}
    if flagged:
        for i, line in enumerate(lines):
            if line in flagged:
                problems[i] = flagged[line]
    if expected is not None:
        for i, row in enumerate(rows):
            if len(row) != expected:
                problems[i] = (f"has {len(row)} fields, expected {expected} separated by "
                               f"{fmt.sep_name}{_guess_separator(row, fmt, expected)}")
    columns: dict[str, np.ndarray] = {}
    for f, pos in zip(fields, positions, strict=True):
        # text fields keep their exact characters; others lose surrounding blanks
        keep = f.kind == "str"
        values = pd.Series(
            [None if pos >= len(row) or not row[pos].strip()
             else (row[pos] if keep else row[pos].strip()) for row in rows],
            dtype="object")
        converted, bad, problem = convert_field(values, f, time_unit)
        for i in np.flatnonzero(bad).tolist():
            if i not in problems:
                shown = values.iloc[i]
                what = "is missing" if pd.isna(shown) else f"{shown!r} is {problem}"
                problems[i] = f"{f.name} (column {f.source!r}) {what}"
        columns[f.name] = converted.to_numpy()
    frame = pd.DataFrame(columns)
    frame[LINE] = np.asarray(lines, dtype=np.int64)
    return frame, problems


def _malformed_rows_error(
    path: Path, problem: str, *, line: int, bad_count: int, n: int, on_bad_rows: str, fix: str,
    unit: str = "line", explain_all_bad: bool = False,
) -> DataFormatError:
    """The error for a file with ``bad_count`` malformed rows of ``n``, naming the first one
    (``problem`` at ``line``). In ``"error"`` mode with some good rows the fix also offers
    ``on_bad_rows='drop'``; with ``explain_all_bad`` and every row bad (``"drop"`` mode) it says
    that the file's format itself is wrong."""
    more = f" ({bad_count:,} of {n:,} rows are malformed)" if bad_count > 1 else ""
    advice = fix
    if explain_all_bad and on_bad_rows != "error":
        advice += "; every row is malformed, so the file's format itself is wrong"
    if on_bad_rows == "error" and bad_count < n:
        advice += "; or pass on_bad_rows='drop' to drop and count such rows"
    return DataFormatError(path, problem + more, advice, line=line, unit=unit)


def _checked_frame(
    stream: RowStream, fmt: TextFormat, fields: list[Field], *, on_bad_rows: str,
    report: LoadReport, fix: str, time_unit: str, count_rows: bool, drop_reason: str,
    flagged: dict[int, str] | None = None,
) -> pd.DataFrame:
    """Check every row of a stream, chunk by chunk (bounded memory on large files), and apply
    ``on_bad_rows``. In ``"error"`` mode rows are still counted to the end, so the message
    can say how many are malformed. ``flagged``: see :func:`_check_chunk`."""
    path = stream.path
    expected = fmt.n_fields or (len(stream.header) if stream.header else None)
    positions = _resolve_positions(path, stream.header, stream.header_line, fields)
    frames: list[pd.DataFrame] = []
    n = bad_count = 0
    first: tuple[int, str] | None = None
    examples: list[str] = []
    while chunk := list(islice(stream.rows, _CHUNK_ROWS)):
        rows = [row for row, _ in chunk]
        lines = [line for _, line in chunk]
        del chunk
        frame, problems = _check_chunk(rows, lines, fmt, fields, positions, expected, time_unit,
                                       flagged)
        n += len(rows)
        if problems:
            bad = sorted(problems)
            bad_count += len(bad)
            if first is None:
                first = (lines[bad[0]], problems[bad[0]])
            examples.extend(f"{path.name} line {lines[i]}: {problems[i]}"
                            for i in bad[: max(0, 5 - len(examples))])
            keep = np.ones(len(rows), dtype=bool)
            keep[bad] = False
            frame = frame.loc[keep]
        if on_bad_rows == "drop" or bad_count == 0:
            frames.append(frame)
    if count_rows:
        report.rows_read += n
    if first is not None and (on_bad_rows == "error" or bad_count == n):
        raise _malformed_rows_error(path, first[1], line=first[0], bad_count=bad_count, n=n,
                                    on_bad_rows=on_bad_rows, fix=fix, explain_all_bad=True)
    if bad_count:
        report.add_drop(drop_reason, bad_count, examples)
    if not frames:
        empty = {f.name: pd.Series([], dtype="object") for f in fields}
        return pd.DataFrame({**empty, LINE: pd.Series([], dtype="int64")})
    return pd.concat(frames, ignore_index=True)


def read_parquet_table(
    path: Path,
    fields: list[Field],
    *,
    on_bad_rows: str,
    report: LoadReport,
    fix: str,
    time_unit: str = "s",
    count_rows: bool = True,
    drop_reason: str = "malformed_row",
) -> pd.DataFrame:
    """Read the given fields of a parquet file; malformed rows are named by 1-based row number.

    See :func:`read_table` and :func:`rows_to_frame` for the arguments.
    """
    check_on_bad_rows(on_bad_rows)
    report.files.append(str(path))
    try:
        table = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise DataFormatError(path, f"is not a readable parquet file ({exc})",
                              "write it with pandas.DataFrame.to_parquet or pyarrow") from None
    header = [str(c) for c in table.columns]
    table.columns = header
    n = len(table)
    if count_rows:
        report.rows_read += n
    problems: dict[int, str] = {}
    columns: dict[str, np.ndarray] = {}
    for f in fields:
        if isinstance(f.source, int):
            if f.source >= len(header):
                raise DataFormatError(path, f"has {len(header)} columns, no position {f.source}",
                                      f"map {f.name} to one of {header}")
            source = header[f.source]
        elif f.source not in header:
            raise DataFormatError(path, f"has no column {f.source!r} (for {f.name}); its "
                                        f"columns are {header}",
                                  "map each field to one of those columns (columns={...})")
        else:
            source = f.source
        values = table[source].reset_index(drop=True)
        if f.optional and (pd.api.types.is_string_dtype(values.dtype) or values.dtype == object):
            blank = values.astype("string").str.strip().eq("").fillna(True)
            values = values.astype("object").mask(blank.to_numpy(dtype=bool), None)
        converted, bad, problem = convert_field(values, f, time_unit)
        for i in np.flatnonzero(bad).tolist():
            problems.setdefault(i, f"{f.name} (column {source!r}) {values.iloc[i]!r} is {problem}")
        columns[f.name] = converted.to_numpy()
    frame = pd.DataFrame(columns)
    frame[LINE] = np.arange(1, n + 1, dtype=np.int64)
    if not problems:
        return frame
    bad_rows = sorted(problems)
    if on_bad_rows == "error" or len(bad_rows) == n:
        raise _malformed_rows_error(path, problems[bad_rows[0]], line=bad_rows[0] + 1,
                                    bad_count=len(bad_rows), n=n, on_bad_rows=on_bad_rows,
                                    fix=fix, unit="row")
    examples = [f"{path.name} row {i + 1}: {problems[i]}" for i in bad_rows[:5]]
    report.add_drop(drop_reason, len(bad_rows), examples)
    keep = np.ones(n, dtype=bool)
    keep[bad_rows] = False
    return frame.loc[keep].reset_index(drop=True)

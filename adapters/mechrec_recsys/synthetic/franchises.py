"""Franchises (film series) found in a catalog from its titles alone.

A title is a **sequel** when, after cleaning, it ends in a part number written after a stem:
``"Die Hard 2"``, ``"Rocky IV"``, ``"Godfather: Part II"``, ``"Kill Bill: Vol. 2"``,
``"Star Wars: Episode V - The Empire Strikes Back"``, ``"Terminator 2: Judgment Day"``
(a number 1-19 or a Roman numeral I-XIX, optionally after ``Part``, ``Chapter``, ``Vol.``,
``Volume`` or ``Episode``, followed by the end of the title or by a subtitle after ``:`` or
``" - "``). A title is the **original** (part 1) of a stem when, cleaned, it equals the stem:
``"Die Hard"``, ``"Terminator, The"``. Cleaning drops alternative titles in parentheses
(``"Seven (a.k.a. Se7en"``) and a trailing article (``", The"``, ``" The"``, ``" A"``,
``" An"``, as MovieLens writes them), and compares stems case-, punctuation- and
``&``/``and``-insensitively.

A series is every title of one stem, ordered by part number (story order: Star Wars episodes
I-VI in that order, although IV-VI came out first). When two titles claim the same part
(remakes: ``"Halloween"`` 1978 and 2007, ``"Halloween II"`` 1981 and 2009), the original is the
latest one released no later than the first sequel, and a sequel the earliest one released no
earlier than the part before it; the others are left out. A series needs at least two parts.
Items without a release year are never part of a series (remakes could not be told apart).

This misses series without part numbers (``"Harry Potter and the ..."``, ``"Die Hard: With a
Vengeance"``) and a series whose first film has a different title (``"Star Trek: The Motion
Picture"``): the series then starts at the first numbered part. The series found are written
with the world (``items.parquet``) so they can be checked.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

_PARENTHESES = re.compile(r"\s*\(.*$")
_TRAILING_ARTICLE = re.compile(r",?\s+(?:The|A|An)$")
_ROMAN = {"I": 1, "V": 5, "X": 10}
_SEQUEL = re.compile(
    r"^(?P<stem>.+?)[\s:,]+(?:(?:Part|Chapter|Vol\.?|Volume|Episode)\s+)?"
    r"(?P<number>1[0-9]|[1-9]|[IVX]{1,5})"
    r"(?:\s*:.*|\s+[-–]\s.*)?$")


def _roman(text: str) -> int | None:
    """The value of a Roman numeral written in canonical form, else ``None``."""
    total = 0
    for i, char in enumerate(text):
        value = _ROMAN[char]
        following = _ROMAN[text[i + 1]] if i + 1 < len(text) else 0
        total += -value if value < following else value
    canonical = ("X" * (total // 10) + ["", "I", "II", "III", "IV", "V", "VI", "VII", "VIII",
                                         "IX"][total % 10])
    return total if canonical == text and total >= 1 else None


def clean_title(title: str) -> str:
    """A title without alternative titles in parentheses and without a trailing article."""
    text = _PARENTHESES.sub("", title).strip()
    return _TRAILING_ARTICLE.sub("", text).strip()


def stem_key(text: str) -> str:
    """The comparison key of a stem: lower case, ``&`` as ``and``, letters and digits only."""
    text = text.lower().replace("&", " and ")
    return " ".join(re.sub(r"[^0-9a-z]+", " ", text).split())


def parse_part(title: str) -> tuple[str, int] | None:
    """``(stem, part)`` of a sequel title (``"Rocky IV"`` gives ``("Rocky", 4)``), else
    ``None``."""
    match = _SEQUEL.match(clean_title(title))
    if match is None:
        return None
    number = match.group("number")
    part = int(number) if number.isdigit() else _roman(number)
    stem = match.group("stem").strip(" :,-–")
    if part is None or not stem_key(stem):
        return None
    return stem, part


def find_franchises(titles: pd.Series, years: pd.Series) -> pd.DataFrame:
    """Series of items found from their titles (see the module documentation).

    Args:
        titles: item titles, indexed by item id (missing titles are skipped).
        years: release years (nullable), same index; items without a year are skipped.

    Returns:
        One row per item in a series, indexed by item id, with ``franchise`` (series number,
        0-based, series sorted by stem), ``part`` (0-based position in the series, in viewing
        order) and ``stem`` (the series' name as written in its first part's title), sorted
        by franchise then part.
    """
    members: dict[str, list[tuple[int, int, int, str]]] = {}  # key -> (part, year, item, stem)
    originals: dict[str, list[tuple[int, int, str]]] = {}  # key -> (year, item, stem)
    for item, title, year in zip(titles.index.tolist(), titles.tolist(), years.tolist(),
                                 strict=True):
        if not isinstance(title, str) or year is None or pd.isna(year):
            continue
        cleaned = clean_title(title)
        originals.setdefault(stem_key(cleaned), []).append((int(year), int(item), cleaned))
        parsed = parse_part(title)
        if parsed is not None:
            stem, part = parsed
            members.setdefault(stem_key(stem), []).append((part, int(year), int(item), stem))
    original_of: dict[str, tuple[int, int, str]] = {}  # key -> (year, item, stem)
    for key, candidates in members.items():
        if key in originals and all(part > 1 for part, *_ in candidates):
            first_sequel = min(year for _, year, _, _ in candidates)
            before = [o for o in originals[key] if o[0] <= first_sequel]
            if before:
                original_of[key] = max(before)
    taken = {item for _, item, _ in original_of.values()}
    rows = []
    franchise = 0
    for key in sorted(members):
        candidates = sorted(c for c in members[key] if c[2] not in taken)
        if key in original_of:
            year, item, stem = original_of[key]
            candidates.insert(0, (1, year, item, stem))
        chosen: list[tuple[int, str]] = []  # (item, stem)
        last_year = -1
        for part in sorted({c[0] for c in candidates}):
            claims = [c for c in candidates if c[0] == part]  # several: remakes
            later = [c for c in claims if c[1] >= last_year]
            _, year, item, stem = min(later or claims, key=lambda c: (c[1], c[2]))
            chosen.append((item, stem))
            last_year = year
        if len(chosen) < 2:
            continue
        for part, (item, _) in enumerate(chosen):
            rows.append((item, franchise, part, chosen[0][1]))
        franchise += 1
    out = pd.DataFrame(rows, columns=["item_id", "franchise", "part", "stem"])
    out = out.set_index("item_id")
    out["franchise"] = out["franchise"].astype(np.int64)
    out["part"] = out["part"].astype(np.int64)
    return out

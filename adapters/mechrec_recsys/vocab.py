"""Item vocabulary: a reversible mapping between raw item ids and model tokens.

Token 0 is reserved for padding; items take the contiguous tokens ``1..N`` in ascending
order of their raw id, so the mapping is deterministic for a given catalog.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from mechrec._io import atomic_write_text

PAD_TOKEN = 0
_INT64_MIN, _INT64_MAX = int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max)
#: A direct lookup table is used when the id range is at most this many times the item count
#: (plus a small constant); sparser ids fall back to binary search.
_DENSE_FACTOR = 8


class UnknownItemError(KeyError):
    """Raised when an item id is not part of the vocabulary."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else "unknown item"


def _integer_ids(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flatten ``values`` to int64 ids, with a mask of the entries that are exact integers.

    Entries that are not integers (``1.5``, ``nan``, strings, booleans) or do not fit in int64
    are marked invalid and hold 0 in the returned ids.
    """
    flat = values.reshape(-1)
    kind = flat.dtype.kind
    if kind == "i":
        return flat.astype(np.int64, copy=False), np.ones(flat.shape, dtype=bool)
    if kind == "u":
        valid = flat <= _INT64_MAX
        return np.where(valid, flat, 0).astype(np.int64), valid
    if kind == "f":
        with np.errstate(invalid="ignore"):
            valid = np.isfinite(flat) & (np.mod(flat, 1.0) == 0) & (np.abs(flat) < 2.0**63)
        return np.where(valid, flat, 0).astype(np.int64), valid
    ids = np.zeros(flat.shape, dtype=np.int64)
    valid = np.zeros(flat.shape, dtype=bool)
    for n, value in enumerate(flat.tolist()):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool) and (
                _INT64_MIN <= value <= _INT64_MAX):
            ids[n], valid[n] = value, True
    return ids, valid


def _plain(value: object) -> object:
    """A numpy scalar as the Python value it holds (for readable messages)."""
    return value.item() if isinstance(value, np.generic) else value


def _as_array(values: Iterable[int] | np.ndarray) -> np.ndarray:
    """``values`` as a numpy array without a round trip through a Python list when avoidable."""
    if isinstance(values, np.ndarray):
        return values
    if hasattr(values, "__array__") or isinstance(values, (list, tuple)):
        return np.asarray(values)
    return np.asarray(list(values))


@dataclass(frozen=True, eq=False)
class ItemVocab:
    """Maps raw item ids (any integers) to tokens ``1..N``; token 0 is padding.

    Two vocabularies are equal when they hold the same item ids; a vocabulary is hashable.

    Attributes:
        item_ids: sorted unique raw item ids; ``item_ids[t - 1]`` is the item of token ``t``.
    """

    item_ids: np.ndarray

    def __post_init__(self) -> None:
        raw = np.asarray(self.item_ids)
        if raw.ndim != 1:
            raise ValueError(f"item_ids must be one-dimensional, got shape {raw.shape}")
        ids, valid = _integer_ids(raw)
        if not valid.all():
            bad = _plain(raw[np.flatnonzero(~valid)[0]])
            raise ValueError(f"item_ids must be integers, got {bad!r}")
        if len(ids) and np.any(ids[1:] <= ids[:-1]):  # np.diff could overflow
            raise ValueError("item_ids must be strictly increasing (sorted, unique)")
        # a private copy: later changes to the caller's array cannot alter the vocabulary
        object.__setattr__(self, "item_ids", np.array(ids, dtype=np.int64))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ItemVocab):
            return NotImplemented
        return bool(np.array_equal(self.item_ids, other.item_ids))

    def __hash__(self) -> int:
        return hash(self.item_ids.tobytes())

    @classmethod
    def from_items(cls, items: Iterable[int]) -> ItemVocab:
        """Build a vocabulary from any iterable of raw item ids (duplicates allowed).

        Raises:
            ValueError: an id is not an integer.
        """
        raw = _as_array(items)
        ids, valid = _integer_ids(raw)
        if not valid.all():
            bad = _plain(raw.reshape(-1)[np.flatnonzero(~valid)[0]])
            raise ValueError(f"item ids must be integers, got {bad!r}")
        return cls(np.unique(ids))

    @property
    def num_items(self) -> int:
        """Number of real items N (padding excluded)."""
        return len(self.item_ids)

    @property
    def size(self) -> int:
        """Vocabulary size including the padding token (``N + 1``)."""
        return len(self.item_ids) + 1

    def __contains__(self, item_id: object) -> bool:
        if not isinstance(item_id, (int, np.integer)) or isinstance(item_id, (bool, np.bool_)):
            return False
        if not _INT64_MIN <= int(item_id) <= _INT64_MAX or self.num_items == 0:
            return False
        position = int(np.searchsorted(self.item_ids, int(item_id)))
        return position < self.num_items and int(self.item_ids[position]) == int(item_id)

    def to_tokens(self, item_ids: Iterable[int] | np.ndarray) -> np.ndarray:
        """Map raw item ids to tokens, keeping the input's shape (vectorised).

        Raises:
            UnknownItemError: an id is not in the vocabulary (or is not an integer); the
                message names the first such id in row-major order.
        """
        ids = _as_array(item_ids)
        values, valid = _integer_ids(ids)
        table = self._dense_table
        if self.num_items == 0:
            tokens = np.zeros(values.shape, dtype=np.int64)
        elif table is not None:
            low, high = self.item_ids[0], self.item_ids[-1]
            inside = valid & (values >= low) & (values <= high)
            tokens = table[np.where(inside, values - low, 0)].astype(np.int64)
            tokens[~inside] = 0
        else:
            # sorted queries make binary search cache-friendly (about twice as fast)
            order = np.argsort(values, kind="stable")
            positions = np.empty(values.shape, dtype=np.int64)
            positions[order] = np.searchsorted(self.item_ids, values[order])
            hit = valid & (positions < self.num_items) & (
                self.item_ids[np.minimum(positions, self.num_items - 1)] == values)
            tokens = np.where(hit, positions + 1, 0).astype(np.int64)
        found = tokens > 0
        if not found.all():
            missing = np.flatnonzero(~found)
            item = _plain(ids.reshape(-1)[missing[0]])
            item = repr(item) if isinstance(item, (str, bytes)) else item
            more = f" ({len(missing):,} of {len(values):,} ids are unknown)" if len(
                missing) > 1 else ""
            raise UnknownItemError(
                f"item id {item} is not in the vocabulary ({self.num_items} items){more}; "
                "map only items of the catalog the model was trained on"
            )
        return tokens.reshape(ids.shape)

    @cached_property
    def _dense_table(self) -> np.ndarray | None:
        """``table[id - min_id]`` is the token of ``id`` (0: not an item), built on first use
        when ids are dense enough; ``None`` for sparse ids (binary search is used then)."""
        if self.num_items == 0:
            return None
        span = int(self.item_ids[-1]) - int(self.item_ids[0]) + 1
        if span > _DENSE_FACTOR * self.num_items + 1024:
            return None
        dtype = np.int32 if self.num_items < 2**31 - 1 else np.int64
        table = np.zeros(span, dtype=dtype)
        table[self.item_ids - self.item_ids[0]] = np.arange(1, self.num_items + 1, dtype=dtype)
        return table

    def to_items(self, tokens: Iterable[int] | np.ndarray) -> np.ndarray:
        """Map tokens back to raw item ids, keeping the input's shape.

        Raises:
            ValueError: a token is padding (0), out of range, or not an integer.
        """
        raw = _as_array(tokens)
        toks, valid = _integer_ids(raw)
        bad = ~valid | (toks < 1) | (toks > self.num_items)
        if bad.any():
            first = _plain(raw.reshape(-1)[np.flatnonzero(bad)[0]])
            raise ValueError(
                f"token {first!r} is not an item token (valid: 1..{self.num_items}; "
                "0 is padding)"
            )
        return self.item_ids[toks - 1].reshape(raw.shape)

    def to_json(self) -> dict:
        """A JSON-serialisable description of the vocabulary."""
        return {"format": "mechrec.item_vocab/1", "item_ids": self.item_ids.tolist()}

    @classmethod
    def from_json(cls, data: dict) -> ItemVocab:
        """Rebuild a vocabulary written by :meth:`to_json`."""
        if (not isinstance(data, dict) or data.get("format") != "mechrec.item_vocab/1"
                or "item_ids" not in data):
            raise ValueError(
                "not a mechrec item vocabulary: expected a JSON object with keys 'format' = "
                "'mechrec.item_vocab/1' and 'item_ids'"
            )
        item_ids = data["item_ids"]
        if not isinstance(item_ids, list):
            raise ValueError(
                f"'item_ids' must be a list of integers, got {type(item_ids).__name__}")
        try:
            return cls(np.asarray(item_ids))
        except (ValueError, TypeError, OverflowError) as exc:
            raise ValueError(f"invalid 'item_ids': {exc}") from None

    def save(self, path: str | Path) -> None:
        """Write the vocabulary as JSON (atomically, :func:`mechrec._io.atomic_write_text`: a
        failed write leaves any earlier file untouched and no temp file)."""
        atomic_write_text(Path(path), json.dumps(self.to_json()))

    @classmethod
    def load(cls, path: str | Path) -> ItemVocab:
        """Read a vocabulary written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"item vocabulary file not found: {path}")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"{path}: line {exc.lineno}, column {exc.colno}: invalid JSON ({exc.msg})"
            ) from None
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}: not UTF-8 text ({exc.reason}); expected the JSON "
                             "written by ItemVocab.save") from None
        try:
            return cls.from_json(data)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None

"""Item vocabulary: a reversible mapping between raw item ids and model tokens.

Token 0 is reserved for padding; items take the contiguous tokens ``1..N`` in ascending
order of their raw id, so the mapping is deterministic for a given catalog.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

PAD_TOKEN = 0


class UnknownItemError(KeyError):
    """Raised when an item id is not part of the vocabulary."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else "unknown item"


@dataclass(frozen=True)
class ItemVocab:
    """Maps raw item ids (any integers) to tokens ``1..N``; token 0 is padding.

    Attributes:
        item_ids: sorted unique raw item ids; ``item_ids[t - 1]`` is the item of token ``t``.
    """

    item_ids: np.ndarray
    _index: dict[int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ids = np.asarray(self.item_ids, dtype=np.int64)
        if ids.ndim != 1:
            raise ValueError(f"item_ids must be one-dimensional, got shape {ids.shape}")
        if len(ids) and np.any(np.diff(ids) <= 0):
            raise ValueError("item_ids must be strictly increasing (sorted, unique)")
        object.__setattr__(self, "item_ids", ids)
        object.__setattr__(self, "_index", {int(i): t + 1 for t, i in enumerate(ids)})

    @classmethod
    def from_items(cls, items: Iterable[int]) -> ItemVocab:
        """Build a vocabulary from any iterable of raw item ids (duplicates allowed)."""
        return cls(np.unique(np.fromiter((int(i) for i in items), dtype=np.int64)))

    @property
    def num_items(self) -> int:
        """Number of real items N (padding excluded)."""
        return len(self.item_ids)

    @property
    def size(self) -> int:
        """Vocabulary size including the padding token (``N + 1``)."""
        return len(self.item_ids) + 1

    def __contains__(self, item_id: object) -> bool:
        return isinstance(item_id, (int, np.integer)) and int(item_id) in self._index

    def to_tokens(self, item_ids: Iterable[int] | np.ndarray) -> np.ndarray:
        """Map raw item ids to tokens; raises :class:`UnknownItemError` on unknown ids."""
        ids = np.asarray(list(item_ids) if not isinstance(item_ids, np.ndarray) else item_ids)
        flat = ids.reshape(-1)
        out = np.empty(flat.shape, dtype=np.int64)
        for n, item in enumerate(flat.tolist()):
            token = self._index.get(int(item))
            if token is None:
                raise UnknownItemError(
                    f"item id {item} is not in the vocabulary ({self.num_items} items); "
                    "map only items of the catalog the model was trained on"
                )
            out[n] = token
        return out.reshape(ids.shape)

    def to_items(self, tokens: Iterable[int] | np.ndarray) -> np.ndarray:
        """Map tokens back to raw item ids; padding or out-of-range tokens raise ValueError."""
        toks = np.asarray(tokens, dtype=np.int64)
        if toks.size and (toks.min() < 1 or toks.max() > self.num_items):
            bad = toks[(toks < 1) | (toks > self.num_items)].reshape(-1)[0]
            raise ValueError(
                f"token {int(bad)} is not an item token (valid: 1..{self.num_items}; 0 is padding)"
            )
        return self.item_ids[toks - 1]

    def to_json(self) -> dict:
        """A JSON-serialisable description of the vocabulary."""
        return {"format": "mechrec.item_vocab/1", "item_ids": self.item_ids.tolist()}

    @classmethod
    def from_json(cls, data: dict) -> ItemVocab:
        """Rebuild a vocabulary written by :meth:`to_json`."""
        if data.get("format") != "mechrec.item_vocab/1" or "item_ids" not in data:
            raise ValueError(
                "not a mechrec item vocabulary: expected keys 'format' = "
                "'mechrec.item_vocab/1' and 'item_ids'"
            )
        return cls(np.asarray(data["item_ids"], dtype=np.int64))

    def save(self, path: str | Path) -> None:
        """Write the vocabulary as JSON (atomically: temp file then rename)."""
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_json()))
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> ItemVocab:
        """Read a vocabulary written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"item vocabulary file not found: {path}")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"{path}: line {exc.lineno}, column {exc.colno}: invalid JSON ({exc.msg})"
            ) from None
        return cls.from_json(data)

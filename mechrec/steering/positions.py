"""Which positions of a ``(batch, pos, ...)`` activation an intervention edits.

A position spec is one of:

- ``"last"`` (default): each sequence's last real item. With the project's left padding this is
  position ``-1``; with an attention mask it is the last column where the mask is 1, so right
  padded batches work too.
- ``"all"``: every real position (mask == 1); padding is never edited.
- a sequence of ints: explicit columns of the batch tensor (negative counts from the end, so
  ``[-1]`` equals ``"last"`` under left padding). Padding cells among them are skipped.
- a boolean tensor ``(batch, pos)``: exactly those cells (padding cells are still skipped).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

PositionSpec = str | Sequence[int] | torch.Tensor


def normalize_positions(spec: PositionSpec) -> str | tuple[int, ...] | torch.Tensor:
    """Validate a position spec and return its canonical form (see the module docstring)."""
    if isinstance(spec, str):
        if spec not in ("last", "all"):
            raise ValueError(
                f"unknown positions {spec!r}: use 'last', 'all', a list of ints or a "
                "boolean (batch, pos) tensor"
            )
        return spec
    if isinstance(spec, torch.Tensor):
        if spec.dtype != torch.bool or spec.ndim != 2:
            raise ValueError(
                "a positions tensor must be boolean with shape (batch, pos); got "
                f"dtype {spec.dtype} and shape {tuple(spec.shape)}"
            )
        return spec
    try:
        cols = tuple(int(p) for p in spec)
    except TypeError as exc:
        raise ValueError(
            f"positions must be 'last', 'all', ints or a bool tensor; got {spec!r}"
        ) from exc
    if any(int(p) != p for p in spec):
        raise ValueError(f"explicit positions must be integers, got {list(spec)!r}")
    if not cols:
        raise ValueError("explicit positions are empty: give at least one column index")
    return cols


def resolve_positions(
    spec: PositionSpec,
    batch: int,
    seq_len: int,
    attention_mask: torch.Tensor | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Turn a position spec into a boolean ``(batch, seq_len)`` selection of cells to edit.

    Args:
        spec: see the module docstring.
        batch, seq_len: the leading dimensions of the activation being edited.
        attention_mask: ``(batch, seq_len)`` with 1 on real positions, or ``None`` when every
            position is real.
        device: where to build the selection.
    """
    spec = normalize_positions(spec)
    real = _real_cells(batch, seq_len, attention_mask, device)
    if isinstance(spec, torch.Tensor):
        if tuple(spec.shape) != (batch, seq_len):
            raise ValueError(
                f"positions tensor has shape {tuple(spec.shape)} but the activation is "
                f"(batch={batch}, pos={seq_len}); build it for this batch"
            )
        return spec.to(real.device) & real
    if spec == "all":
        return real
    if spec == "last":
        if attention_mask is None:
            sel = torch.zeros(batch, seq_len, dtype=torch.bool, device=real.device)
            sel[:, -1] = True
            return sel
        cols = torch.arange(seq_len, device=real.device)
        last = torch.where(real, cols, -1).max(dim=1).values  # -1 for an all-padding row
        return (cols[None, :] == last[:, None]) & real
    bad = [p for p in spec if not -seq_len <= p < seq_len]
    if bad:
        raise ValueError(
            f"positions {bad} are out of range for sequences of length {seq_len}: use indices "
            f"in [-{seq_len}, {seq_len - 1}]"
        )
    sel = torch.zeros(batch, seq_len, dtype=torch.bool, device=real.device)
    sel[:, [p % seq_len for p in spec]] = True
    return sel & real


def _real_cells(
    batch: int, seq_len: int, attention_mask: torch.Tensor | None, device: torch.device | str | None
) -> torch.Tensor:
    if attention_mask is None:
        return torch.ones(batch, seq_len, dtype=torch.bool, device=device)
    if tuple(attention_mask.shape) != (batch, seq_len):
        raise ValueError(
            f"attention_mask has shape {tuple(attention_mask.shape)} but the activation is "
            f"(batch={batch}, pos={seq_len}); pass the mask of the batch being run"
        )
    return attention_mask.to(device if device is not None else attention_mask.device).bool()

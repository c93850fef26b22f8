"""Row labels from token-level attribute tables.

Activation rows usually inherit their attributes from the token at their position (an item's
genres, a word's part of speech). :func:`token_attributes` does that lookup with validation, so
an adapter only has to supply a ``(V, A)`` table aligned with its vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from mechrec.alignment._validation import to_numpy

__all__ = ["token_attributes"]


def token_attributes(
    tokens: np.ndarray | torch.Tensor | Sequence[int],
    table: np.ndarray | torch.Tensor | pd.DataFrame,
    *,
    names: Sequence[object] | None = None,
) -> pd.DataFrame:
    """Label each activation row with the attributes of its token.

    Args:
        tokens: ``(R,)`` token id of each activation row (e.g. ``ActivationSet.token``).
        table: ``(V, A)`` attributes per token id ``0..V-1`` (numpy, torch, or a DataFrame whose
            index is ``0..V-1`` in any order and whose columns are attribute names).
        names: attribute names (default: the DataFrame's columns or ``attr_0..``).

    Returns:
        ``(R, A)`` DataFrame, one row per activation row, ready for
        :func:`~mechrec.alignment.alignment_stats`.
    """
    tok = np.asarray(to_numpy(tokens, "tokens"))
    if tok.ndim != 1:
        raise ValueError(f"tokens must be 1-D (one token per row), got shape {tok.shape}")
    if tok.size and tok.dtype.kind not in "iu":
        raise ValueError(f"tokens must be integer ids, got dtype {tok.dtype}")
    if isinstance(table, pd.DataFrame):
        if not pd.api.types.is_integer_dtype(table.index) or not table.index.is_unique:
            raise ValueError("a DataFrame table must be indexed by unique integer token ids")
        vocab = int(table.index.max()) + 1 if len(table) else 0
        full = table.reindex(pd.RangeIndex(vocab))
        missing = full.index[full.isna().any(axis=1)]
        columns = list(table.columns) if names is None else list(names)
        values = full.to_numpy()
    else:
        values = np.asarray(to_numpy(table, "table"))
        if values.ndim == 1:
            values = values[:, None]
        if values.ndim != 2:
            raise ValueError(f"table must be 2-D (V, A), got shape {values.shape}")
        vocab = values.shape[0]
        missing = pd.Index([])
        columns = [f"attr_{j}" for j in range(values.shape[1])] if names is None else list(names)
    if len(columns) != values.shape[1]:
        raise ValueError(
            f"names has {len(columns)} entries but the table has {values.shape[1]} columns"
        )
    if tok.size:
        lo, hi = int(tok.min()), int(tok.max())
        if lo < 0 or hi >= vocab:
            bad = lo if lo < 0 else hi
            raise ValueError(f"token {bad} is outside the table's token ids 0..{vocab - 1}")
        used_missing = np.intersect1d(np.asarray(missing, dtype=np.int64), tok)
        if used_missing.size:
            raise ValueError(
                f"tokens {used_missing[:5].tolist()} appear in the rows but have no (complete) row "
                "in the table"
            )
    return pd.DataFrame(values[tok.astype(np.int64)], columns=columns)

"""Activation inputs for alignment: dense arrays, sparse matrices and lazily computed features.

Every alignment function accepts activations as

- a dense ``(N, F)`` numpy array (``np.memmap`` included) or torch tensor (any device; it is read
  in row chunks, so a memory-mapped file or a GPU tensor is never copied whole);
- a ``scipy.sparse`` matrix or array ``(N, F)`` (converted once to CSC; the fast path for SAE
  features, whose cost then scales with the number of non-zeros);
- a :class:`LazyActivations`: features computed on demand from row chunks of an input matrix, e.g.
  an SAE's ``encode`` applied to raw hook activations, so ``N x F`` is never held in memory.

Internally each input is wrapped in a reader that yields, for a range of features, either the
non-zero entries of each feature or dense row chunks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from mechrec.alignment._validation import check_positive_int, to_numpy

__all__ = ["ActivationsLike", "LazyActivations"]

Entries = tuple[np.ndarray, np.ndarray]
"""Non-zero entries of one feature: (values, row indices), both 1-D and of equal length."""


class LazyActivations:
    """Features computed on demand from row chunks of an input matrix.

    Use it when ``N x F`` features do not fit in memory, e.g. SAE features of millions of rows:
    ``LazyActivations(raw, sae.encode, sae.d_sae)``. Alignment reads features in blocks and may
    call the transform several times per row (once per block of features); a
    ``column_transform`` that computes only the requested features avoids computing all ``F`` on
    every pass (any encoder of the form ``relu(x @ W + b)`` can provide one).

    Args:
        inputs: ``(N, d)`` numpy array or torch tensor, e.g. raw hook activations.
        transform: maps a row chunk ``inputs[i:j]`` (same type as ``inputs``) to its ``(j - i, F)``
            features (numpy array or torch tensor). Called under ``torch.no_grad()``.
        n_features: ``F``, the number of features the transform returns.
        column_transform: optional ``(chunk, start, stop) -> (rows, stop - start)`` computing only
            features ``start:stop``.
        chunk_rows: rows per transform call.
    """

    def __init__(
        self,
        inputs: np.ndarray | torch.Tensor,
        transform: Callable[[Any], Any],
        n_features: int,
        *,
        column_transform: Callable[[Any, int, int], Any] | None = None,
        chunk_rows: int = 8192,
    ) -> None:
        if not isinstance(inputs, (np.ndarray, torch.Tensor)):
            raise ValueError(
                f"inputs must be a numpy array or torch tensor, got {type(inputs).__name__}"
            )
        if inputs.ndim != 2:
            raise ValueError(f"inputs must be 2-D (N, d), got shape {tuple(inputs.shape)}")
        if inputs.shape[0] == 0:
            raise ValueError(f"inputs have no rows (shape {tuple(inputs.shape)})")
        if not callable(transform):
            raise ValueError("transform must be callable: chunk (rows, d) -> features (rows, F)")
        if column_transform is not None and not callable(column_transform):
            raise ValueError("column_transform must be callable or None")
        self.inputs = inputs
        self.transform = transform
        self.column_transform = column_transform
        self.n_features = check_positive_int(n_features, "n_features")
        self.chunk_rows = check_positive_int(chunk_rows, "chunk_rows")

    @property
    def n_rows(self) -> int:
        """Number of rows N."""
        return int(self.inputs.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        """``(N, F)``."""
        return (self.n_rows, self.n_features)

    def _compute(self, chunk: Any, start: int, stop: int) -> np.ndarray:
        with torch.no_grad():
            if self.column_transform is not None and (start, stop) != (0, self.n_features):
                out = self.column_transform(chunk, start, stop)
                expected = (chunk.shape[0], stop - start)
                who = "column_transform"
            else:
                out = self.transform(chunk)
                expected = (chunk.shape[0], self.n_features)
                who = "transform"
        arr = to_numpy(out, f"{who} output")
        if tuple(arr.shape) != expected:
            raise ValueError(
                f"{who} returned shape {tuple(arr.shape)} for a chunk of shape "
                f"{tuple(chunk.shape)}; expected {expected}"
            )
        if who == "transform" and (start, stop) != (0, self.n_features):
            arr = arr[:, start:stop]
        return arr

    def iter_chunks(
        self, start: int = 0, stop: int | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(row_offset, features[rows, start:stop])`` for consecutive row chunks."""
        stop = self.n_features if stop is None else stop
        if not 0 <= start < stop <= self.n_features:
            raise ValueError(f"feature range {start}:{stop} is outside 0:{self.n_features}")
        for r0 in range(0, self.n_rows, self.chunk_rows):
            chunk = self.inputs[r0 : r0 + self.chunk_rows]
            yield r0, self._compute(chunk, start, stop)

    def materialize(self) -> np.ndarray:
        """All features as one dense ``(N, F)`` numpy array (only for data that fits in memory)."""
        parts = [chunk for _, chunk in self.iter_chunks()]
        return np.concatenate(parts, axis=0)


ActivationsLike = np.ndarray | torch.Tensor | sp.spmatrix | sp.sparray | LazyActivations
"""Anything the alignment functions accept as ``(N, F)`` activations."""


def _check_finite(values: np.ndarray, row_offset: int, col_offset: int) -> None:
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        bad = np.argwhere(~np.isfinite(values))[0]
        raise ValueError(
            f"activations contain a non-finite value at row {row_offset + int(bad[0])}, "
            f"feature {col_offset + int(bad[1])}: activations must be finite"
        )


def _as_float(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "f":
        return values
    if values.dtype.kind in "biu":
        return values.astype(np.float64)
    raise ValueError(f"activations must be numeric, got dtype {values.dtype}")


class _Reader:
    """Common interface of the internal readers."""

    n_rows: int
    n_features: int
    # True when column_entries() returns views that need no memory budget.
    entries_are_views: bool = False

    def dense_chunks(
        self, start: int, stop: int, chunk_rows: int
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(row_offset, dense (rows, stop - start) float array)``."""
        raise NotImplementedError

    def column_entries(self, start: int, stop: int, chunk_rows: int) -> list[Entries]:
        """Non-zero (values, rows) of each feature in ``start:stop``, rows ascending."""
        vals: list[list[np.ndarray]] = [[] for _ in range(stop - start)]
        rows: list[list[np.ndarray]] = [[] for _ in range(stop - start)]
        width = stop - start
        col_dtype = np.int16 if width <= np.iinfo(np.int16).max else np.int64
        for r0, chunk in self.dense_chunks(start, stop, chunk_rows):
            # Scan in memory order and group the non-zeros by column: a stable (radix) sort of
            # their column indices costs O(nnz), where transposing the chunk costs O(rows x width).
            r, c = np.nonzero(chunk)
            v = chunk[r, c]
            order = np.argsort(c.astype(col_dtype), kind="stable")
            bounds = np.searchsorted(c[order], np.arange(width + 1))
            r += r0
            for j in range(width):
                seg = order[bounds[j] : bounds[j + 1]]
                vals[j].append(v[seg])
                rows[j].append(r[seg])
        return [
            (
                np.concatenate(v) if v else np.empty(0, np.float64),
                np.concatenate(r) if r else np.empty(0, np.int64),
            )
            for v, r in zip(vals, rows, strict=True)
        ]

    def density_hint(self) -> float:
        """Share of non-zero values in a first sample of rows (for planning memory)."""
        for _, chunk in self.dense_chunks(0, self.n_features, max(1, min(self.n_rows, 4096))):
            return float(np.count_nonzero(chunk)) / max(chunk.size, 1)
        return 1.0


class _DenseReader(_Reader):
    def __init__(self, data: np.ndarray | torch.Tensor) -> None:
        if data.ndim != 2:
            raise ValueError(f"activations must be 2-D (N, F), got shape {tuple(data.shape)}")
        if isinstance(data, np.ndarray):
            _as_float(data[:0])  # dtype check
        elif data.dtype in (torch.complex64, torch.complex128):
            raise ValueError(f"activations must be real numbers, got dtype {data.dtype}")
        self.data = data
        self.n_rows, self.n_features = int(data.shape[0]), int(data.shape[1])

    def dense_chunks(
        self, start: int, stop: int, chunk_rows: int
    ) -> Iterator[tuple[int, np.ndarray]]:
        for r0 in range(0, self.n_rows, chunk_rows):
            block = self.data[r0 : r0 + chunk_rows, start:stop]
            arr = _as_float(to_numpy(block, "activations"))
            _check_finite(arr, r0, start)
            yield r0, arr


class _SparseReader(_Reader):
    entries_are_views = True

    def __init__(self, data: sp.spmatrix | sp.sparray) -> None:
        if data.ndim != 2:
            raise ValueError(f"activations must be 2-D (N, F), got shape {tuple(data.shape)}")
        csc = sp.csc_matrix(data)  # a new object; it may share arrays with ``data``
        if not csc.has_canonical_format:  # duplicates or unsorted indices: fix a private copy
            csc = csc.copy()
            csc.sum_duplicates()
        csc.data = _as_float(csc.data)
        _check_finite_sparse(csc)
        self.csc = csc
        self.n_rows, self.n_features = int(csc.shape[0]), int(csc.shape[1])

    def column_entries(self, start: int, stop: int, chunk_rows: int) -> list[Entries]:
        out = []
        indptr, indices, data = self.csc.indptr, self.csc.indices, self.csc.data
        for f in range(start, stop):
            lo, hi = indptr[f], indptr[f + 1]
            vals, rows = data[lo:hi], indices[lo:hi]
            if vals.size and not vals.all():  # explicit zeros stored in the matrix
                keep = vals != 0
                vals, rows = vals[keep], rows[keep]
            out.append((vals, rows))
        return out

    def dense_chunks(
        self, start: int, stop: int, chunk_rows: int
    ) -> Iterator[tuple[int, np.ndarray]]:
        sub = self.csc[:, start:stop].tocsr()
        for r0 in range(0, self.n_rows, chunk_rows):
            yield r0, sub[r0 : r0 + chunk_rows].toarray()

    def density_hint(self) -> float:
        return self.csc.nnz / max(self.n_rows * self.n_features, 1)


def _check_finite_sparse(csc: sp.csc_matrix) -> None:
    if csc.data.size and not np.isfinite(csc.data).all():
        k = int(np.flatnonzero(~np.isfinite(csc.data))[0])
        col = int(np.searchsorted(csc.indptr, k, side="right") - 1)
        raise ValueError(
            f"activations contain a non-finite value at row {int(csc.indices[k])}, feature {col}: "
            "activations must be finite"
        )


class _LazyReader(_Reader):
    def __init__(self, lazy: LazyActivations) -> None:
        self.lazy = lazy
        self.n_rows, self.n_features = lazy.n_rows, lazy.n_features
        self._density: float | None = None

    def dense_chunks(
        self, start: int, stop: int, chunk_rows: int
    ) -> Iterator[tuple[int, np.ndarray]]:
        # The lazy source owns its chunk size (its transform's memory depends on it).
        for r0, arr in self.lazy.iter_chunks(start, stop):
            arr = _as_float(arr)
            _check_finite(arr, r0, start)
            yield r0, arr

    def density_hint(self) -> float:
        if self._density is None:
            chunk = self.lazy.inputs[: min(self.lazy.chunk_rows, 1024)]
            arr = self.lazy._compute(chunk, 0, self.n_features)
            self._density = float(np.count_nonzero(arr)) / max(arr.size, 1)
        return self._density


def as_reader(activations: object) -> _Reader:
    """Wrap any supported activations input in a reader; raise ``ValueError`` for anything else."""
    if isinstance(activations, _Reader):
        return activations
    if isinstance(activations, LazyActivations):
        reader: _Reader = _LazyReader(activations)
    elif sp.issparse(activations):
        reader = _SparseReader(activations)
    elif isinstance(activations, (np.ndarray, torch.Tensor)):
        reader = _DenseReader(activations)
    else:
        try:
            arr = to_numpy(activations, "activations")
        except ValueError:
            arr = None
        if arr is None or arr.dtype.kind not in "biuf":
            raise ValueError(
                "activations must be a numpy array, torch tensor, scipy.sparse matrix or "
                f"LazyActivations, got {type(activations).__name__}"
            )
        reader = _DenseReader(arr)
    if reader.n_rows == 0 or reader.n_features == 0:
        raise ValueError(
            f"activations must have at least one row and one feature, got shape "
            f"({reader.n_rows}, {reader.n_features})"
        )
    return reader

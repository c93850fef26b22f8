"""Averaging activation rows by a key, e.g. one row per distinct token instead of per position.

Alignment usually treats every position as a data point, so frequent tokens weigh more and
each row mixes the token's own signal with its context. Averaging rows by token first
(:func:`group_means`) gives one data point per distinct token: the unit the question "does this
feature mean *this kind of item*?" is about. Comparing both units shows how much of a score is
context noise and how much is popularity weighting.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from mechrec.alignment._validation import to_numpy
from mechrec.alignment.sources import ActivationsLike, LazyActivations

__all__ = ["group_means"]

_CHUNK_ROWS = 16384


def _indicator(inverse: np.ndarray, n_groups: int, start: int, stop: int) -> sp.csr_matrix:
    """``(K, stop - start)`` 0/1 matrix putting row ``i`` into group ``inverse[i]``."""
    rows = inverse[start:stop]
    return sp.csr_matrix((np.ones(len(rows), dtype=np.float64),
                          (rows, np.arange(len(rows)))), shape=(n_groups, len(rows)))


def group_means(activations: ActivationsLike, keys: np.ndarray | torch.Tensor
                ) -> tuple[np.ndarray, np.ndarray]:
    """Mean activation of every feature over the rows of each distinct key.

    Args:
        activations: ``(N, F)`` activations in any form the alignment functions accept (dense
            numpy/torch, scipy sparse, :class:`~mechrec.alignment.LazyActivations`); read in
            row chunks, so ``N x F`` never needs to be dense in memory.
        keys: ``(N,)`` integer key of each row (e.g. ``ActivationSet.token``).

    Returns:
        ``(unique_keys, means)``: the ``K`` distinct keys in ascending order and the ``(K, F)``
        float64 means (row ``k`` averages the rows whose key is ``unique_keys[k]``).

    Raises:
        ValueError: shapes disagree, keys are not integers, or there are no rows.
    """
    key = np.asarray(to_numpy(keys, "keys"))
    if key.ndim != 1 or (key.size and key.dtype.kind not in "iu"):
        raise ValueError(f"keys must be a 1-D integer array, got shape {key.shape} and dtype "
                         f"{key.dtype}")
    n_rows = activations.n_rows if isinstance(activations, LazyActivations) else int(
        activations.shape[0])
    if n_rows != key.size:
        raise ValueError(f"keys has {key.size} entries for {n_rows} activation rows")
    if n_rows == 0:
        raise ValueError("no activation rows to average")
    unique, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    n_groups = len(unique)
    if isinstance(activations, LazyActivations):
        sums = None
        for r0, chunk in activations.iter_chunks():
            part = _indicator(inverse, n_groups, r0, r0 + chunk.shape[0]) @ chunk
            sums = part if sums is None else sums + part
    elif sp.issparse(activations):
        sums = _indicator(inverse, n_groups, 0, n_rows) @ sp.csr_matrix(activations)
        sums = sums.toarray()
    else:
        sums = None
        for r0 in range(0, n_rows, _CHUNK_ROWS):
            chunk = np.asarray(to_numpy(activations[r0:r0 + _CHUNK_ROWS], "activations"),
                               dtype=np.float64)
            part = _indicator(inverse, n_groups, r0, r0 + chunk.shape[0]) @ chunk
            sums = part if sums is None else sums + part
    means = np.asarray(sums, dtype=np.float64) / counts[:, None]
    return unique, means

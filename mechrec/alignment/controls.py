"""Random-projection control: does an SAE align with attributes better than chance directions?

The control replaces the SAE encoder by ``width`` random unit directions through the same ReLU:
``relu((x - offset) @ W + b)`` on the same inputs and rows as the SAE. Scoring it with the same
alignment statistics tells how much of "the best feature correlates 0.4 with Horror" a wide
dictionary gets for free. Biases can match the SAE's per-feature firing rates, so the control is
as sparse as the SAE it checks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mechrec.alignment._validation import check_positive_int, to_numpy
from mechrec.alignment.sources import LazyActivations

__all__ = ["RandomProjection", "random_projection_control"]

_SORT_BYTES = 64 * 2**20  # working memory for the per-direction quantiles


def _project(x: np.ndarray, offset: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``(x - offset) @ weight`` in float32: plenty for a control, twice as fast as float64.

    Fitting the biases uses the same arithmetic, so firing rates hold on the fitted rows.
    """
    return (x - offset).astype(np.float32) @ weight.astype(np.float32)


def _as_float_chunk(x: np.ndarray | torch.Tensor) -> np.ndarray:
    arr = to_numpy(x, "inputs")
    if arr.ndim != 2:
        raise ValueError(f"inputs must be 2-D (N, d), got shape {tuple(arr.shape)}")
    return arr.astype(np.float64, copy=False)


@dataclass(frozen=True, eq=False)
class RandomProjection:
    """``relu((x - offset) @ weight + bias)`` with random unit-norm directions as columns."""

    weight: np.ndarray
    """``(d_in, width)`` float64; every column has unit norm."""
    bias: np.ndarray
    """``(width,)`` float64."""
    offset: np.ndarray
    """``(d_in,)`` float64 subtracted from inputs first (their mean when centring)."""
    seed: int
    """Seed that drew the directions (and the rows used to fit the biases)."""

    def __post_init__(self) -> None:
        w, b, o = self.weight, self.bias, self.offset
        if w.ndim != 2 or b.shape != (w.shape[1],) or o.shape != (w.shape[0],):
            raise ValueError(
                f"inconsistent shapes: weight {w.shape}, bias {b.shape}, offset {o.shape}; "
                "expected (d_in, width), (width,), (d_in,)"
            )

    @property
    def d_in(self) -> int:
        """Input dimension."""
        return int(self.weight.shape[0])

    @property
    def width(self) -> int:
        """Number of random directions (features)."""
        return int(self.weight.shape[1])

    def columns(self, x: np.ndarray | torch.Tensor, start: int, stop: int) -> np.ndarray:
        """Features ``start:stop`` of the rows ``x`` (``(rows, d_in)``), as float32."""
        arr = _as_float_chunk(x)
        if arr.shape[1] != self.d_in:
            raise ValueError(
                f"inputs have shape {tuple(arr.shape)} but the projection expects d_in={self.d_in}"
            )
        pre = _project(arr, self.offset, self.weight[:, start:stop])
        pre += self.bias[start:stop].astype(np.float32)
        return np.maximum(pre, 0.0, out=pre)

    def __call__(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """All ``width`` features of the rows ``x``, as float32."""
        return self.columns(x, 0, self.width)

    @classmethod
    def fit(
        cls,
        inputs: np.ndarray | torch.Tensor,
        width: int,
        *,
        seed: int = 0,
        active_fraction: float | Sequence[float] | np.ndarray | None = None,
        center: bool = True,
        sample_rows: int = 50_000,
        chunk_rows: int = 8192,
    ) -> RandomProjection:
        """Draw ``width`` random directions for ``inputs`` and set offset and biases.

        Args:
            inputs: ``(N, d_in)`` activations, the same ones the SAE encodes (normalised if the
                SAE normalises).
            width: number of directions, normally the SAE's ``d_sae``.
            seed: seeds the directions and the rows sampled to fit the biases.
            active_fraction: ``None`` for zero biases (each direction of centred inputs fires on
                about half the rows); a float in ``[0, 1]`` for one firing rate; or ``width`` rates,
                e.g. ``sae_stats.feature_active_rate``, so the control is as sparse as the SAE.
                Biases are set on a seeded sample of ``sample_rows`` rows.
            center: subtract the inputs' mean before projecting.
            sample_rows: rows sampled to fit the biases.
            chunk_rows: rows per chunk when computing the mean.
        """
        width = check_positive_int(width, "width")
        sample_rows = check_positive_int(sample_rows, "sample_rows")
        chunk_rows = check_positive_int(chunk_rows, "chunk_rows")
        if not isinstance(inputs, (np.ndarray, torch.Tensor)) or inputs.ndim != 2:
            shape = getattr(inputs, "shape", None)
            raise ValueError(f"inputs must be a 2-D array or tensor (N, d_in), got shape {shape}")
        n, d = int(inputs.shape[0]), int(inputs.shape[1])
        if n == 0 or d == 0:
            raise ValueError(f"inputs must be non-empty, got shape {(n, d)}")
        rates = _check_rates(active_fraction, width)
        rng = np.random.default_rng(seed)
        weight = rng.standard_normal((d, width))
        weight /= np.linalg.norm(weight, axis=0, keepdims=True)

        offset = np.zeros(d)
        if center:
            total = np.zeros(d)
            for r0 in range(0, n, chunk_rows):
                total += _as_float_chunk(inputs[r0 : r0 + chunk_rows]).sum(axis=0)
            offset = total / n
            if not np.isfinite(offset).all():
                raise ValueError("inputs contain non-finite values: activations must be finite")

        bias = np.zeros(width)
        if rates is not None:
            m = min(n, sample_rows)
            idx = np.sort(rng.choice(n, size=m, replace=False))
            idx_t = torch.from_numpy(idx) if isinstance(inputs, torch.Tensor) else idx
            sample = _as_float_chunk(inputs[idx_t])
            if not np.isfinite(sample).all():
                raise ValueError("inputs contain non-finite values: activations must be finite")
            step = max(1, _SORT_BYTES // (4 * m))
            for c0 in range(0, width, step):
                c1 = min(width, c0 + step)
                proj = np.sort(_project(sample, offset, weight[:, c0:c1]), axis=0)
                k = np.rint(rates[c0:c1] * m).astype(np.int64)  # rows that should fire
                # Fire strictly above the (k+1)-th largest value: k sample rows when no ties.
                cut_idx = np.clip(m - k - 1, 0, m - 1)
                cut = proj[cut_idx, np.arange(c1 - c0)]
                cut = np.where(k >= m, np.nextafter(proj[0], np.float32(-np.inf)), cut)
                bias[c0:c1] = -cut.astype(np.float64)
        return cls(weight=weight, bias=bias, offset=offset, seed=int(seed))


def _check_rates(
    active_fraction: float | Sequence[float] | np.ndarray | None, width: int
) -> np.ndarray | None:
    if active_fraction is None:
        return None
    rates = np.asarray(to_numpy(active_fraction, "active_fraction"), dtype=np.float64)
    if rates.ndim == 0:
        rates = np.full(width, float(rates))
    if rates.shape != (width,):
        raise ValueError(
            f"active_fraction has shape {rates.shape} but width is {width}: give one rate or "
            f"{width} rates"
        )
    if not np.isfinite(rates).all() or (rates < 0).any() or (rates > 1).any():
        raise ValueError("active_fraction values must lie in [0, 1]")
    return rates


def random_projection_control(
    inputs: np.ndarray | torch.Tensor,
    width: int,
    *,
    seed: int = 0,
    active_fraction: float | Sequence[float] | np.ndarray | None = None,
    center: bool = True,
    sample_rows: int = 50_000,
    chunk_rows: int = 8192,
) -> LazyActivations:
    """Random-projection control features over the same rows as an SAE, computed lazily.

    Fits a :class:`RandomProjection` (see :meth:`RandomProjection.fit` for the arguments) and
    returns :class:`~mechrec.alignment.LazyActivations` ``(N, width)`` to pass to
    :func:`~mechrec.alignment.alignment_stats` beside the SAE's and the neurons' activations.
    The projection is available as ``result.transform``.
    """
    projection = RandomProjection.fit(
        inputs,
        width,
        seed=seed,
        active_fraction=active_fraction,
        center=center,
        sample_rows=sample_rows,
        chunk_rows=chunk_rows,
    )
    return LazyActivations(
        inputs,
        projection,
        projection.width,
        column_transform=projection.columns,
        chunk_rows=chunk_rows,
    )

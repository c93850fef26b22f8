"""Normalisation of activations before they reach an SAE, and back.

A :class:`Normalizer` is an affine map ``z = (x - mean) / std`` applied per dimension. Three
modes exist:

- ``"per_dim"``: each dimension is centred and divided by its own standard deviation (the
  paper's choice: "we normalize activations by subtracting the mean and dividing by the
  standard deviation");
- ``"scalar"``: each dimension is centred, then every dimension is divided by one shared scale
  ``sqrt(mean_j var_j)``, so that the mean squared norm of a normalised row is ``d``; this keeps
  the geometry of the activation space (no dimension is stretched more than another);
- ``"none"``: the identity (mean 0, std 1).

Statistics are computed in float64, either from one tensor (:meth:`Normalizer.fit`) or in a
streaming way over many chunks (:class:`RunningMoments`, then :meth:`Normalizer.from_moments`),
so that a sharded activation store never has to be loaded whole. A normaliser is saved as one
safetensors file (``mean``, ``std``, JSON metadata in the header) and travels with every SAE
trained on it (see :mod:`mechrec.saes.io`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from safetensors import SafetensorError, safe_open

from mechrec._io import save_safetensors_atomically

NormalizationMode = Literal["per_dim", "scalar", "none"]
MODES: tuple[str, ...] = ("per_dim", "scalar", "none")

#: Standard deviations below this are treated as zero variance and replaced by 1, so that a
#: constant dimension is centred to 0 instead of being blown up.
MIN_STD = 1e-6

#: File name of a normaliser saved beside an SAE.
NORMALIZER_FILENAME = "normalizer.safetensors"
_FORMAT = "mechrec.normalizer/1"


def check_finite(x: torch.Tensor, what: str) -> None:
    """Raise a ``ValueError`` naming ``what`` if ``x`` holds NaN or infinite values."""
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        n_nan = int(torch.isnan(x).sum())
        n_inf = int(torch.isinf(x).sum())
        raise ValueError(
            f"{what} contain {n_nan} NaN and {n_inf} infinite values; activations must be "
            "finite. Check the model's weights and inputs (a diverged model or an fp16 "
            "overflow are the usual causes), or drop the offending rows before training."
        )


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown normalisation mode {mode!r}; expected one of {MODES}")


@dataclass
class RunningMoments:
    """Streaming per-dimension count, mean and sum of squared deviations (float64).

    Chunks are merged with the parallel update of Chan et al., which is numerically stable
    for large counts, so statistics over a sharded store equal those over the whole tensor
    up to float64 rounding.

    Attributes:
        d: number of dimensions, fixed by the first chunk (``None`` before any update).
        count: number of rows seen.
        mean: per-dimension running mean, shape ``(d,)``.
        m2: per-dimension sum of squared deviations from the mean, shape ``(d,)``.
    """

    d: int | None = None
    count: int = 0
    mean: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.float64))
    m2: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.float64))

    def update(self, x: torch.Tensor) -> None:
        """Add a chunk of rows ``(n, d)`` (any float dtype) to the statistics."""
        if x.ndim != 2:
            raise ValueError(f"expected a (rows, d) tensor, got shape {tuple(x.shape)}")
        check_finite(x, "activations given to the normaliser")
        if self.d is None:
            self.d = x.shape[1]
            self.mean = torch.zeros(self.d, dtype=torch.float64)
            self.m2 = torch.zeros(self.d, dtype=torch.float64)
        elif x.shape[1] != self.d:
            raise ValueError(f"chunk has {x.shape[1]} dimensions, earlier chunks had {self.d}")
        n = x.shape[0]
        if n == 0:
            return
        x64 = x.detach().to("cpu", torch.float64)
        chunk_mean = x64.mean(0)
        self._combine(n, chunk_mean, ((x64 - chunk_mean) ** 2).sum(0))

    def merge(self, other: RunningMoments) -> None:
        """Add the statistics of rows summarised elsewhere (another process, another store)."""
        if other.count == 0:
            return
        if self.d is None:
            self.d = other.d
            self.mean = torch.zeros_like(other.mean)
            self.m2 = torch.zeros_like(other.m2)
        elif other.d != self.d:
            raise ValueError(f"cannot merge statistics of {other.d} dimensions into {self.d}")
        self._combine(other.count, other.mean, other.m2)

    def _combine(self, n: int, chunk_mean: torch.Tensor, chunk_m2: torch.Tensor) -> None:
        total = self.count + n
        delta = chunk_mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + chunk_m2 + delta**2 * (self.count * n / total)
        self.count = total

    @property
    def variance(self) -> torch.Tensor:
        """Per-dimension population variance (divides by ``count``)."""
        if self.count == 0:
            raise ValueError("no rows were added to the running statistics")
        return self.m2 / self.count


@dataclass
class Normalizer:
    """Affine per-dimension normalisation ``z = (x - mean) / std`` and its inverse.

    Attributes:
        mode: ``"per_dim"``, ``"scalar"`` or ``"none"`` (see the module docstring).
        mean: ``(d,)`` float32; zeros for ``"none"``.
        std: ``(d,)`` float32; ones for ``"none"``; one value repeated for ``"scalar"``.
        n_rows: number of rows the statistics were computed on (0 for ``"none"``).
    """

    mode: str
    mean: torch.Tensor
    std: torch.Tensor
    n_rows: int = 0

    def __post_init__(self) -> None:
        _check_mode(self.mode)
        self.mean = torch.as_tensor(self.mean, dtype=torch.float32).detach().clone()
        self.std = torch.as_tensor(self.std, dtype=torch.float32).detach().clone()
        if self.mean.ndim != 1 or self.mean.shape != self.std.shape:
            raise ValueError(
                f"mean and std must both be (d,) vectors; got {tuple(self.mean.shape)} and "
                f"{tuple(self.std.shape)}"
            )
        check_finite(self.mean, "normaliser mean")
        check_finite(self.std, "normaliser std")
        if bool((self.std <= 0).any()):
            raise ValueError("normaliser std must be strictly positive in every dimension")

    @property
    def d(self) -> int:
        """Number of dimensions."""
        return int(self.mean.shape[0])

    @classmethod
    def identity(cls, d: int) -> Normalizer:
        """The ``"none"`` normaliser for ``d`` dimensions."""
        return cls("none", torch.zeros(d), torch.ones(d))

    @classmethod
    def fit(cls, activations: torch.Tensor, mode: str = "per_dim") -> Normalizer:
        """Compute the statistics of ``activations`` ``(rows, d)`` for the given mode."""
        moments = RunningMoments()
        moments.update(activations.reshape(-1, activations.shape[-1]))
        return cls.from_moments(moments, mode)

    @classmethod
    def from_moments(cls, moments: RunningMoments, mode: str = "per_dim") -> Normalizer:
        """Build a normaliser from streaming statistics (see :class:`RunningMoments`)."""
        _check_mode(mode)
        if moments.d is None or moments.count == 0:
            raise ValueError(
                "cannot fit a normaliser on zero rows: the activation source is empty. "
                "Collect activations from at least one non-padding position first."
            )
        if mode == "none":
            out = cls.identity(moments.d)
            out.n_rows = moments.count
            return out
        var = moments.variance
        std = var.sqrt() if mode == "per_dim" else var.mean().sqrt().expand(moments.d).clone()
        std = torch.where(std < MIN_STD, torch.ones_like(std), std)
        return cls(mode, moments.mean, std, n_rows=moments.count)

    def _cast(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[-1] != self.d:
            raise ValueError(
                f"activations have {x.shape[-1]} dimensions but the normaliser was fitted on "
                f"{self.d}: use the normaliser saved with this SAE and the same hook point"
            )
        return self.mean.to(x.device, x.dtype), self.std.to(x.device, x.dtype)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Map raw activations ``(..., d)`` to normalised ones."""
        if self.mode == "none":
            self._cast(x)
            return x
        mean, std = self._cast(x)
        return (x - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Map normalised activations ``(..., d)`` back to raw ones."""
        if self.mode == "none":
            self._cast(x)
            return x
        mean, std = self._cast(x)
        return x * std + mean

    def to_metadata(self) -> dict[str, str]:
        """JSON-able metadata stored in the safetensors header."""
        return {"format": _FORMAT, "mode": self.mode, "n_rows": str(self.n_rows)}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the normaliser to ``path`` (a ``.safetensors`` file) atomically."""
        return save_safetensors_atomically(
            Path(path), {"mean": self.mean, "std": self.std}, self.to_metadata()
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> Normalizer:
        """Read a normaliser written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"normaliser file {path} not found: it is written by Normalizer.save / "
                "NormalizedSAE.save beside the SAE weights"
            )
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                if meta.get("format") != _FORMAT:
                    raise ValueError(
                        f"{path} is not a mechrec normaliser (header format "
                        f"{meta.get('format')!r}, expected {_FORMAT!r})"
                    )
                mean = f.get_tensor("mean")
                std = f.get_tensor("std")
            return cls(meta["mode"], mean, std, n_rows=int(meta.get("n_rows", "0")))
        except (SafetensorError, KeyError, TypeError, ValueError, RuntimeError) as exc:
            message = exc.args[0] if isinstance(exc, ValueError) and exc.args else exc
            if str(path) in str(message):
                raise ValueError(str(message)) from None
            raise ValueError(
                f"{path} is not a readable mechrec normaliser ({type(exc).__name__}: "
                f"{' '.join(str(exc).split())[:200]}): it is damaged; re-save the SAE with "
                "NormalizedSAE.save or restore it from a good copy"
            ) from None

"""Standard errors: analytic for per-user means, paired differences, bootstrap over users.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Estimate",
    "bootstrap_se",
    "mean_and_se",
    "paired_difference",
]


@dataclass(frozen=True)
class Estimate:
    """A metric value with its standard error (``se`` is NaN when it cannot be estimated)."""

    mean: float
    se: float

    def __str__(self) -> str:
        return f"{self.mean:.4f} ± {self.se:.4f}"

    def to_json(self) -> dict[str, float | None]:
        """``{"mean": ..., "se": ...}`` (NaN becomes ``None``)."""
        return {
            "mean": None if math.isnan(self.mean) else self.mean,
            "se": None if math.isnan(self.se) else self.se,
        }


def mean_and_se(values: np.ndarray) -> Estimate:
    """Mean of per-user values and its standard error ``std(ddof=1) / sqrt(n)``."""
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return Estimate(math.nan, math.nan)
    se = float(values.std(ddof=1) / math.sqrt(values.size)) if values.size > 1 else math.nan
    return Estimate(float(values.mean()), se)


def paired_difference(a: np.ndarray, b: np.ndarray) -> Estimate:
    """Mean of ``a - b`` over the same users, with the paired standard error."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values must have one shape, got {a.shape} and {b.shape}")
    return mean_and_se(a - b)


def bootstrap_se(
    statistic: Callable[[np.ndarray], float],
    n_users: int,
    *,
    n_resamples: int = 200,
    seed: int = 0,
) -> float:
    """Bootstrap standard error of ``statistic(user_index)`` under resampling users.

    ``statistic`` receives an index array (with repeats) into the users.
    """
    if n_users < 2 or n_resamples < 2:
        return math.nan
    rng = np.random.default_rng(seed)
    values = [statistic(rng.integers(0, n_users, n_users)) for _ in range(n_resamples)]
    return float(np.std(values, ddof=1))

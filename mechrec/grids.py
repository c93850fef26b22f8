"""Value grids of sweeps, in a module free of heavy imports (a command line builds a grid from
its arguments before it loads torch); :mod:`mechrec.sweep` re-exports :func:`value_grid`."""

from __future__ import annotations

import math

__all__ = ["value_grid"]


def value_grid(start: float = -10.0, stop: float = 10.0, step: float = 1.0) -> list[float]:
    """Values ``start, start+step, ..., stop`` (inclusive; the paper's grid is the default)."""
    if step <= 0 or not all(math.isfinite(v) for v in (start, stop, step)) or stop < start:
        raise ValueError(f"need finite start <= stop and step > 0, got {start}, {stop}, {step}")
    n = math.floor((stop - start) / step + 1e-9) + 1
    return [round(start + i * step, 12) for i in range(n)]

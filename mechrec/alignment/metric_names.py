"""Names of the alignment metrics, in a module free of heavy imports (front ends such as the
command line list them in their help before loading numpy, pandas or torch)."""

from __future__ import annotations

__all__ = ["BINARY_METRICS", "METRICS"]

METRICS: tuple[str, ...] = (
    "correlation",
    "roc_auc",
    "sensitivity",
    "precision",
    "mean_given_attribute",
)
"""Every metric :func:`alignment_stats` can compute, in its default order."""

BINARY_METRICS: tuple[str, ...] = ("roc_auc", "sensitivity", "precision", "mean_given_attribute")
"""Metrics defined only for binary (0/1) attributes; NaN for continuous attribute columns."""

"""One check for "these two SAEs give the same features", shared by the tests that compare
a folded or reloaded SAE with the one it came from."""

from __future__ import annotations

import torch


def assert_same_features(got: torch.Tensor, expected: torch.Tensor, tol: float = 1e-5) -> None:
    """Assert that two feature-activation tensors agree within ``tol`` and fire on the same
    entries, except where both are within ``tol`` of zero.

    A fold (normaliser into weights) changes float rounding, so a pre-activation that sits
    on the threshold can land on either side of it; such an entry is ``<= tol`` in both
    tensors. Any other disagreement in the active set fails."""
    torch.testing.assert_close(got, expected, rtol=tol, atol=tol)
    flips = (got > 0) != (expected > 0)
    near_zero = (got.abs() <= tol) & (expected.abs() <= tol)
    assert not (flips & ~near_zero).any(), (
        f"{int((flips & ~near_zero).sum())} entries fire in one tensor only, away from zero")
    # the threshold flips are rare: a handful of entries, not a shifted active set
    assert int(flips.sum()) <= max(1, flips.numel() // 10_000), int(flips.sum())

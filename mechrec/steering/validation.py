"""Input checks for steering, each raising an error that names the problem and the fix."""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable

import torch
from transformer_lens import HookedTransformer

from mechrec.hooks import check_per_position, validate_hook_name


def check_hook_name(model: HookedTransformer, hook_name: str) -> str:
    """Return ``hook_name`` if ``model`` has that hook point and it can be steered.

    Raises :class:`mechrec.hooks.HookNameError` (a ``ValueError``) naming the closest existing
    hooks for a typo such as ``blocks.0.hook_resid_pots``, and refuses attention patterns and
    scores, whose activations have no position axis at dimension 1.
    """
    validate_hook_name(model, hook_name)
    check_per_position(hook_name)
    return hook_name


def check_finite(value: float, what: str) -> float:
    """Return ``value`` as a float if it is a finite real number, else raise ``ValueError``."""
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be a real number, got {value!r}") from exc
    if not math.isfinite(number):
        raise ValueError(
            f"{what} is {number}; steering values must be finite numbers "
            "(replace NaN/inf with a finite value such as 0.0)"
        )
    return number


def check_finite_values(values: Iterable[float], what: str = "steering value") -> list[float]:
    """Check every value with :func:`check_finite`; return them as a list of floats."""
    return [check_finite(v, f"{what} #{i} ({v!r})") for i, v in enumerate(values)]


def check_vector(vector: torch.Tensor, what: str) -> torch.Tensor:
    """Return a 1-D, finite, non-zero float tensor or raise ``ValueError``."""
    vec = torch.as_tensor(vector)
    if vec.ndim != 1:
        raise ValueError(
            f"{what} must be a 1-D vector of length d_in, got shape {tuple(vec.shape)}"
        )
    if not vec.is_floating_point():
        vec = vec.float()
    if not torch.isfinite(vec).all():
        raise ValueError(f"{what} contains NaN or infinite entries; recompute it from finite data")
    if not bool((vec != 0).any()):
        raise ValueError(f"{what} is all zeros and has no direction")
    return vec


def check_width(width: int, expected: int, what: str, hook_name: str | None) -> None:
    """Raise ``ValueError`` if an activation of ``width`` cannot be edited by ``what``."""
    if width != expected:
        where = f" at {hook_name!r}" if hook_name else ""
        raise ValueError(
            f"{what} expects activations of width {expected} but the activation{where} has "
            f"width {width}: use an SAE/direction built for this hook (d_in={width})"
        )


def check_feature_index(sae: object, feature: object) -> int:
    """Return ``feature`` as an int if it indexes one of the SAE's ``d_sae`` features."""
    d_sae = int(sae.d_sae)  # type: ignore[attr-defined]
    if isinstance(feature, bool) or not hasattr(feature, "__index__"):
        raise ValueError(f"feature index must be an integer, got {feature!r}")
    index = operator.index(feature)  # type: ignore[arg-type]
    if not 0 <= index < d_sae:
        raise ValueError(
            f"feature index {index} is out of range for an SAE with {d_sae} features "
            f"(hook {getattr(sae, 'hook_name', '?')!r}): use 0..{d_sae - 1}"
        )
    return index

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


def check_tokens(model: HookedTransformer, tokens: torch.Tensor) -> torch.Tensor:
    """Return ``tokens`` if it is a non-empty ``(batch, pos)`` integer tensor of ids the model
    has (``0 <= id < d_vocab``); else a ``ValueError`` naming the problem.

    A negative id would silently read another token's embedding (Python indexing from the
    end) and an id past the vocabulary would fail deep inside the model.
    """
    if not isinstance(tokens, torch.Tensor) or tokens.ndim != 2:
        raise ValueError(
            "tokens must be a (batch, pos) integer tensor, got "
            f"{type(tokens).__name__} with shape {tuple(getattr(tokens, 'shape', ()))}"
        )
    if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
        raise ValueError(f"tokens must be integer token ids, got dtype {tokens.dtype}")
    if tokens.shape[0] == 0 or tokens.shape[1] == 0:
        raise ValueError(
            f"tokens has shape {tuple(tokens.shape)}: give at least one sequence of at least "
            "one token (an empty history has nothing to steer)"
        )
    d_vocab = int(model.cfg.d_vocab)
    low, high = int(tokens.min()), int(tokens.max())
    if low < 0 or high >= d_vocab:
        bad = low if low < 0 else high
        raise ValueError(
            f"token id {bad} is out of range for a model with d_vocab={d_vocab}: token ids "
            f"must be in 0..{d_vocab - 1} (map items through the model's vocabulary)"
        )
    return tokens


def check_attention_mask(attention_mask: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Return ``attention_mask`` if it matches ``tokens``' shape, holds only 0 and 1 and marks
    at least one real position in every row; else a ``ValueError`` naming the problem."""
    if not isinstance(attention_mask, torch.Tensor):
        raise ValueError(
            f"attention_mask must be a tensor, got {type(attention_mask).__name__}"
        )
    if tuple(attention_mask.shape) != tuple(tokens.shape):
        raise ValueError(
            f"attention_mask shape {tuple(attention_mask.shape)} does not match tokens shape "
            f"{tuple(tokens.shape)}; pass the mask built with the batch"
        )
    if not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
        raise ValueError("attention_mask must hold only 0 (padding) and 1 (real position)")
    empty = (attention_mask == 0).all(dim=1).nonzero().flatten().tolist()
    if empty:
        raise ValueError(
            f"rows {empty[:10]} of the batch have no real position (all-zero attention_mask): "
            "drop empty histories before steering"
        )
    return attention_mask


def check_finite_scores(scores: torch.Tensor, value: object,
                        what: str = "steering value") -> torch.Tensor:
    """Return ``scores`` if every entry is finite; else a ``ValueError`` naming ``value``.

    An edit far beyond the activations' scale (e.g. a feature set to 1e30) overflows the
    model, and a top-K of NaN scores is an arbitrary list: it must never pass as a result.
    """
    if scores.is_floating_point() and not bool(torch.isfinite(scores).all()):
        raise ValueError(
            f"{what} {value!r} makes the model's scores NaN or infinite (the edited "
            "activation overflows): use values on the scale of the activations, e.g. within "
            "-100..100 (the paper steers within -10..10)"
        )
    return scores


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

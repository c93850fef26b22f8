"""How much of the model an SAE keeps: the field's standard splice metrics, on any model.

Beside reconstruction error (:mod:`mechrec.reconstruction`), an SAE is judged by what the
model does when its activation is replaced by the reconstruction, measured against what it
does when the hook carries no information at all:

- :func:`ablation_hooks`: a context in which a hook's activation is replaced by zeros
  (``"zero"``) or by a fixed mean vector (``"mean"``, the mean over other rows);
- :func:`fraction_recovered`: ``(ablated - spliced) / (ablated - original)``, the share of the
  ablation's damage the SAE undoes (sae-lens' "CE loss recovered"; 1 = as good as the
  original, 0 = as bad as the ablation). The formula is the same for a loss (lower is better)
  and for a score such as NDCG (higher is better);
- :func:`next_token_kl`: per row, ``KL(p_original || p_spliced)`` of the next-token
  distributions;
- :func:`feature_density` and :func:`density_histogram`: how often each feature fires, binned
  on a log10 scale (dead features in their own bin);
- :func:`absorption`: whether a child attribute's feature "absorbs" its parent's (the parent
  feature stays silent on child rows where the child feature fires).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd
import torch
from transformer_lens import HookedTransformer

from mechrec.activations.sets import ActivationSource, check_not_empty, iter_chunks
from mechrec.hooks import resolve_hook

__all__ = [
    "ABLATIONS",
    "ablation_hooks",
    "absorption",
    "density_histogram",
    "feature_density",
    "fraction_recovered",
    "next_token_kl",
]

ABLATIONS: tuple[str, ...] = ("zero", "mean")
"""What an ablated hook carries: zeros, or the mean activation of other rows."""


@contextmanager
def ablation_hooks(model: HookedTransformer, hook_name: str, mode: str = "zero",
                   mean: torch.Tensor | np.ndarray | None = None) -> Iterator[HookedTransformer]:
    """Context manager: inside it, ``hook_name``'s activation is zeros or ``mean`` at every
    position (the hook is removed on exit, even after an error).

    Args:
        model: any HookedTransformer.
        hook_name: the hook to ablate (one vector per position).
        mode: ``"zero"`` or ``"mean"``.
        mean: ``(width,)`` vector for ``"mean"`` (e.g. the mean over the rows that trained
            the SAE).

    Raises:
        ValueError: unknown mode, a missing or wrongly sized mean, an unknown hook.
    """
    if mode not in ABLATIONS:
        raise ValueError(f"unknown ablation {mode!r}; choose one of {', '.join(ABLATIONS)}")
    point = resolve_hook(model, hook_name)
    vector = None
    if mode == "mean":
        if mean is None:
            raise ValueError("a mean ablation needs mean=...: the (width,) mean activation of "
                             "rows other than those evaluated")
        vector = torch.as_tensor(np.asarray(mean), dtype=torch.float32).reshape(-1)
        if vector.numel() != point.width:
            raise ValueError(f"the mean has {vector.numel()} values but {hook_name!r} has "
                             f"width {point.width}")

    def hook(act: torch.Tensor, hook: object = None) -> torch.Tensor:
        if vector is None:
            return torch.zeros_like(act)
        return vector.to(act.device, act.dtype).reshape(act.shape[2:]).expand_as(act).clone()

    with model.hooks(fwd_hooks=[(hook_name, hook)]):
        yield model


def fraction_recovered(original: float, spliced: float, ablated: float) -> float:
    """``(ablated - spliced) / (ablated - original)``: the share of an ablation's effect that
    the spliced SAE undoes (NaN when the ablation changes nothing)."""
    gap = float(ablated) - float(original)
    if not math.isfinite(gap) or abs(gap) < 1e-12:
        return math.nan
    return (float(ablated) - float(spliced)) / gap


def next_token_kl(reference: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """Per row, ``KL(softmax(reference) || softmax(other))`` in nats, over the last axis.

    Entries that are ``-inf`` in both (masked tokens) are ignored; a token masked in ``other``
    only is an infinite divergence.
    """
    if reference.shape != other.shape:
        raise ValueError(f"logit shapes differ: {tuple(reference.shape)} vs "
                         f"{tuple(other.shape)}")
    log_p = torch.log_softmax(reference.double(), dim=-1)
    log_q = torch.log_softmax(other.double(), dim=-1)
    p = log_p.exp()
    terms = torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p))
    return terms.sum(dim=-1)


@torch.no_grad()
def feature_density(sae: Any, source: ActivationSource, *, batch_size: int = 8192
                    ) -> np.ndarray:
    """``(d_sae,)`` share of rows of ``source`` on which each feature fires (> 0)."""
    check_not_empty(source)
    counts = torch.zeros(int(sae.d_sae), dtype=torch.float64)
    n = 0
    for chunk in iter_chunks(source):
        for start in range(0, len(chunk), batch_size):
            rows = chunk.activations[start:start + batch_size].to(sae.device, torch.float32)
            counts += (sae.encode(rows) > 0).sum(dim=0).double().cpu()
            n += rows.shape[0]
    return (counts / max(n, 1)).numpy()


def density_histogram(density: np.ndarray, *, low: float = -6.0, width: float = 0.5
                      ) -> pd.DataFrame:
    """Features per log10-density bin: one ``dead`` row (never fired), then bins of ``width``
    decades from ``low`` up to 0 (densities below ``10**low`` fall in the first bin).

    Returns ``bin`` (label), ``lower`` / ``upper`` (log10 edges; NaN for ``dead``) and
    ``features``.
    """
    density = np.asarray(density, dtype=float)
    edges = np.arange(low, 0.0 + width / 2, width)
    alive = density[density > 0]
    logs = np.clip(np.log10(alive), low, 0.0)
    index = np.minimum(((logs - low) // width).astype(int), len(edges) - 2)
    counts = np.bincount(index, minlength=len(edges) - 1)
    rows = [{"bin": "dead", "lower": np.nan, "upper": np.nan,
             "features": int((density <= 0).sum())}]
    for i, count in enumerate(counts):
        rows.append({"bin": f"[{edges[i]:.1f}, {edges[i + 1]:.1f})", "lower": edges[i],
                     "upper": edges[i + 1], "features": int(count)})
    return pd.DataFrame(rows)


def absorption(parent_values: np.ndarray, child_values: np.ndarray, parent: np.ndarray,
               child: np.ndarray) -> dict[str, float]:
    """Feature absorption for a parent attribute and a child attribute (e.g. Children's and
    Animation), given the activations of the parent's and the child's chosen features.

    On rows with the parent attribute, a healthy parent feature fires whether or not the
    child attribute is present; "absorption" is the parent feature staying silent on child
    rows where the child feature fires instead.

    Args:
        parent_values: ``(N,)`` activations of the feature chosen for the parent attribute.
        child_values: ``(N,)`` activations of the feature chosen for the child attribute.
        parent: ``(N,)`` bool, rows with the parent attribute.
        child: ``(N,)`` bool, rows with the child attribute.

    Returns:
        ``rows_parent_only`` / ``rows_both`` (row counts), ``parent_recall_parent_only``
        (share of parent-without-child rows where the parent feature fires),
        ``parent_recall_with_child`` (the same on rows with both), ``absorption_rate`` (share
        of rows with both where the parent feature is silent and the child feature fires)
        and ``recall_gap`` (``parent_recall_parent_only - parent_recall_with_child``).
    """
    parent = np.asarray(parent, dtype=bool)
    child = np.asarray(child, dtype=bool)
    p_on = np.asarray(parent_values) > 0
    c_on = np.asarray(child_values) > 0
    only = parent & ~child
    both = parent & child

    def share(mask: np.ndarray, among: np.ndarray) -> float:
        return float(mask[among].mean()) if among.any() else math.nan

    recall_only = share(p_on, only)
    recall_both = share(p_on, both)
    return {
        "rows_parent_only": int(only.sum()),
        "rows_both": int(both.sum()),
        "parent_recall_parent_only": recall_only,
        "parent_recall_with_child": recall_both,
        "absorption_rate": share(~p_on & c_on, both),
        "recall_gap": recall_only - recall_both,
    }

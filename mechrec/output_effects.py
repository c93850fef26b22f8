"""What a feature does to the model's output: the tokens it promotes and demotes.

Two measures, for any HookedTransformer and any SAE feature (or direction) at a hook:

- :func:`direct_effects`: the feature's decoder direction read straight through the
  unembedding, ``W_U^T d`` (the "logit lens" of a direction). Exact for the last layer's
  residual stream; for earlier hooks it ignores the later blocks and the final layer norm, so
  it is a first look, not the effect.
- :func:`mean_logit_change`: the measured effect: the mean change of the last-position logits
  over real sequences when the feature is set to a value (the same edit steering uses, through
  the fast last-position path), later blocks and layer norms included.

:func:`top_effects` turns either into the ``k`` most promoted and most demoted tokens.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from transformer_lens import HookedTransformer

from mechrec.hooks import output_hook, resolve_hook
from mechrec.steering import FeatureEdit, sae_feature_direction, steered_last_logits

__all__ = ["direct_effects", "mean_logit_change", "top_effects"]


def direct_effects(model: HookedTransformer, sae: Any, feature: int) -> np.ndarray:
    """``(d_vocab,)``: feature ``feature``'s raw-space decoder direction times the unembedding.

    The direction is written at the hook the SAE writes (a transcoder's output hook).

    Raises:
        ValueError: the SAE's hook is not ``d_model`` wide (not a residual-stream hook), so
            its directions cannot be read through the unembedding.
    """
    hook = output_hook(sae)
    point = resolve_hook(model, hook)
    if point.width != model.cfg.d_model:
        raise ValueError(
            f"{hook!r} has width {point.width}, not d_model={model.cfg.d_model}: "
            "only residual-stream directions can be read through the unembedding; use "
            "mean_logit_change for the measured effect")
    direction = sae_feature_direction(sae, feature).vector.to(model.W_U.dtype)
    with torch.no_grad():
        return (direction.to(model.W_U.device) @ model.W_U).double().cpu().numpy()


@torch.no_grad()
def mean_logit_change(model: HookedTransformer, batches: Iterable[tuple[torch.Tensor, Any]],
                      sae: Any, feature: int, value: float) -> np.ndarray:
    """``(d_vocab,)``: the mean over sequences of the last-position logits with feature
    ``feature`` set to ``value`` (a replace edit) minus the logits with the unedited
    reconstruction, so only the feature's change is measured (at the hook the SAE writes: a
    transcoder's output hook, its features encoded from its input hook)."""
    total: torch.Tensor | None = None
    n = 0
    edits = [FeatureEdit(sae, {}), FeatureEdit(sae, {int(feature): float(value)})]
    for tokens, mask in batches:
        base, steered = steered_last_logits(model, tokens, mask, output_hook(sae), edits)
        change = (steered.double() - base.double()).sum(dim=0).cpu()
        total = change if total is None else total + change
        n += tokens.shape[0]
    if total is None or n == 0:
        raise ValueError("no batches: give at least one (tokens, mask) batch")
    return (total / n).numpy()


def top_effects(effects: np.ndarray, k: int = 10, *, exclude: Sequence[int] = (0,),
                names: pd.DataFrame | None = None) -> pd.DataFrame:
    """The ``k`` most promoted and ``k`` most demoted tokens of ``effects`` ``(d_vocab,)``.

    Args:
        effects: one number per token (e.g. :func:`direct_effects`).
        k: tokens per side.
        exclude: token ids never listed (default: the padding token 0).
        names: optional table indexed by token id whose columns are joined to the rows
            (titles, genres, ...).

    Returns:
        ``side`` (``promotes`` / ``demotes``), ``rank``, ``token``, ``effect``, then the
        ``names`` columns.
    """
    effects = np.asarray(effects, dtype=float)
    order = np.argsort(-effects, kind="stable")
    banned = {int(t) for t in exclude}
    order = np.array([t for t in order if int(t) not in banned], dtype=np.int64)
    rows = []
    for side, tokens in (("promotes", order[:k]), ("demotes", order[::-1][:k])):
        for rank, token in enumerate(tokens, start=1):
            rows.append({"side": side, "rank": rank, "token": int(token),
                         "effect": float(effects[token])})
    frame = pd.DataFrame(rows, columns=["side", "rank", "token", "effect"])
    if names is not None and len(frame):
        frame = frame.join(names.reset_index(drop=True), on="token")
    return frame

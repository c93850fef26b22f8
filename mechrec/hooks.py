"""Hook names: validate them against a model, suggest close matches, find what to compute.

Hook names are TransformerLens names such as ``blocks.0.hook_resid_post``. Everything in
mechrec addresses an activation by one.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any

import torch
from transformer_lens import HookedTransformer

#: Hooks whose activations are not one vector per position (attention patterns/scores).
_NOT_PER_POSITION = ("hook_pattern", "hook_attn_scores")
_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.")


class HookNameError(ValueError):
    """A hook name that the model does not have (or cannot be used as asked)."""


def hook_names(model: HookedTransformer) -> list[str]:
    """All hook names of ``model``, in the model's order."""
    return list(model.hook_dict.keys())


def suggest_hook_names(model: HookedTransformer, hook_name: str, n: int = 3) -> list[str]:
    """Up to ``n`` hook names of ``model`` closest to ``hook_name`` (difflib ratio)."""
    return difflib.get_close_matches(hook_name, hook_names(model), n=n, cutoff=0.5)


def validate_hook_name(model: HookedTransformer, hook_name: str) -> str:
    """Return ``hook_name`` if ``model`` has it; otherwise raise :class:`HookNameError`.

    The error names the closest existing hooks, e.g. ``blocks.0.hook_resid_post`` for
    ``blocks.0.hook_resid_pos``.
    """
    if not isinstance(hook_name, str):
        raise HookNameError(f"a hook name must be a string, got {type(hook_name).__name__}")
    if hook_name in model.hook_dict:
        return hook_name
    close = suggest_hook_names(model, hook_name)
    hint = (
        f"did you mean {', '.join(repr(c) for c in close)}?"
        if close
        else f"examples: {', '.join(hook_names(model)[:4])}"
    )
    raise HookNameError(
        f"the model has no hook named {hook_name!r} ({model.cfg.n_layers} layers, "
        f"{len(model.hook_dict)} hooks); {hint} List them with mechrec.hooks.hook_names(model)."
    )


def hook_layer(hook_name: str) -> int | None:
    """Block index of a ``blocks.{i}.`` hook, ``-1`` for embedding hooks, ``None`` otherwise."""
    match = _BLOCK_RE.match(hook_name)
    if match:
        return int(match.group(1))
    if hook_name.startswith(("hook_embed", "hook_pos_embed", "hook_tokens")):
        return -1
    return None


def stop_layer_for(model: HookedTransformer, hook_name: str) -> int | None:
    """``stop_at_layer`` that still computes ``hook_name`` (``None``: run the whole model).

    Block ``i``'s hooks need blocks ``0..i``, i.e. ``stop_at_layer=i+1``; embedding hooks
    need no block (``0``); ``ln_final``/``unembed`` hooks need the full forward pass.
    """
    layer = hook_layer(hook_name)
    if layer is None:
        return None
    stop = layer + 1
    return None if stop >= model.cfg.n_layers else stop


def check_per_position(hook_name: str) -> None:
    """Reject hooks whose activations are not one vector per (sequence, position)."""
    if hook_name.endswith(_NOT_PER_POSITION):
        raise HookNameError(
            f"{hook_name!r} holds attention patterns (batch, head, query, key), not one "
            "vector per position; use hook_z, hook_result, hook_attn_out or a residual hook"
        )


@torch.no_grad()
def hook_width(model: HookedTransformer, hook_name: str) -> int:
    """Width of one position's activation at ``hook_name`` (trailing dims flattened).

    Runs the model on a single token (and only as far as needed) to find out.
    """
    validate_hook_name(model, hook_name)
    check_per_position(hook_name)
    seen: dict[str, int] = {}

    def grab(act: torch.Tensor, hook) -> None:
        seen["width"] = int(act[0, 0].numel())

    device = next(model.parameters()).device
    tokens = torch.ones(1, 1, dtype=torch.long, device=device)
    model.run_with_hooks(
        tokens,
        fwd_hooks=[(hook_name, grab)],
        stop_at_layer=stop_layer_for(model, hook_name),
        return_type=None,
    )
    return seen["width"]


@dataclass(frozen=True)
class HookPoint:
    """A hook of a model that mechrec can read or steer: one vector per position."""

    name: str
    """The TransformerLens hook name, e.g. ``blocks.0.hook_resid_post``."""
    width: int
    """Width of one position's activation there (trailing dims flattened)."""
    layer: int | None
    """Block index (``-1`` for embedding hooks, ``None`` for ``ln_final``/``unembed``)."""


def resolve_hook(model: HookedTransformer, hook_name: str) -> HookPoint:
    """The one hook check: ``hook_name`` exists in ``model`` and holds one vector per position.

    Returns its :class:`HookPoint` (name, width, layer). Every recipe, CLI command and
    steering call checks hooks through this function.

    Raises:
        HookNameError: unknown hook (the message suggests close names) or a hook holding
            attention patterns or scores.
    """
    validate_hook_name(model, hook_name)
    check_per_position(hook_name)
    return HookPoint(name=hook_name, width=hook_width(model, hook_name),
                     layer=hook_layer(hook_name))


def check_sae_fits(model: HookedTransformer, sae: Any, *, where: str = "the SAE",
                   fix: str | None = None) -> HookPoint:
    """The one "does this SAE fit this model" check: the model has the SAE's hook, with the
    SAE's input width there; for a transcoder (``hook_name_out`` differs from ``hook_name``)
    also its output hook, with its output width ``d_out`` there.

    Args:
        model: the model the SAE will read.
        sae: anything with ``hook_name`` and ``d_in`` (a :class:`~mechrec.saes.NormalizedSAE`;
            a transcoder also has ``hook_name_out`` and ``d_out``).
        where: how errors name the SAE (e.g. its directory).
        fix: what the error suggests when the widths differ (default: train an SAE on this
            model's activations with :func:`mechrec.saes.train_sae`).

    Returns:
        The SAE's (input) :class:`HookPoint` in ``model``.

    Raises:
        ValueError: the model has no such hook, or another width there.
    """
    hint = fix or "train one on this model's activations at that hook (mechrec.saes.train_sae)"
    try:
        point = resolve_hook(model, sae.hook_name)
    except HookNameError as exc:
        raise ValueError(f"{where} reads hook {sae.hook_name!r}, which this model cannot "
                         f"give: {exc}") from None
    if point.width != int(sae.d_in):
        raise ValueError(
            f"{where} was trained on activations of width {sae.d_in} at {sae.hook_name!r}, "
            f"but this model has width {point.width} there: it belongs to another model; "
            f"{hint}")
    out = output_hook(sae)
    if out != sae.hook_name:
        try:
            out_point = resolve_hook(model, out)
        except HookNameError as exc:
            raise ValueError(
                f"{where} is a transcoder writing hook {out!r}, which this model does not "
                f"have: {exc} Fix its output hook: load it with hook_name_out=... (or set "
                "metadata.hook_name_out in its cfg.json)") from None
        if out_point.width != int(sae.d_out):
            raise ValueError(
                f"{where} is a transcoder writing activations of width {sae.d_out} at "
                f"{out!r}, but this model has width {out_point.width} there: it belongs to "
                f"another model or another output hook")
    return point


def output_hook(sae: Any) -> str:
    """The hook an SAE writes: a transcoder's ``hook_name_out``, else its ``hook_name``.

    Splicing, steering and ablations act there; activations to encode are read at
    ``sae.hook_name``.
    """
    return str(getattr(sae, "hook_name_out", None) or sae.hook_name)

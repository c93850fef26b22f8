"""Interventions on any HookedTransformer: TransformerLens hook functions and context managers.

>>> with steer(model, "blocks.0.hook_resid_post", FeatureEdit(sae, {12: 5.0}),
...            attention_mask=mask):
...     logits = model(tokens, attention_mask=mask)

The hook flattens the trailing dimensions of the activation (``(batch, pos, d)`` or
``(batch, pos, head, d_head)``) into ``d_in``, edits the selected cells and leaves every other
cell, padding included, untouched.

Edits of a transcoder's features (input hook ≠ output hook) apply at the output hook and
read the input hook's activation of the same forward pass: :meth:`SteeringHook.fwd_hooks`
gives the :class:`InputCapture` hooks that keep it, then the steering hook (``steer`` uses
them all).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
from transformer_lens import HookedTransformer
from transformer_lens.hook_points import HookPoint

from mechrec.steering.edits import (
    Edit,
    EditSpec,
    apply_edits,
    as_edit_list,
    check_edits_for_hook,
)
from mechrec.steering.positions import PositionSpec, normalize_positions, resolve_positions
from mechrec.steering.validation import check_hook_name


class InputCapture:
    """A forward hook that keeps the activation at a transcoder's input hook for the hook at
    its output hook later in the same forward pass (it returns the activation unchanged).

    Args:
        hook_name: the input hook it is attached to.
    """

    def __init__(self, hook_name: str) -> None:
        self.hook_name = hook_name
        self.value: torch.Tensor | None = None

    def __call__(self, activation: torch.Tensor, hook: HookPoint | None = None) -> torch.Tensor:
        """Keep ``activation``; return it unchanged."""
        self.value = activation
        return activation

    def take(self, leading: tuple[int, ...], output_hook: str | None) -> torch.Tensor:
        """The kept activation as ``(*leading, width)`` (``leading``: the output activation's
        batch and position axes), forgotten once taken so that no later pass reuses it.

        Raises:
            RuntimeError: the input hook did not fire before the output hook in this pass.
        """
        value, self.value = self.value, None
        if value is None:
            raise RuntimeError(
                f"the transcoder's input hook {self.hook_name!r} did not fire before its output "
                f"hook {output_hook!r} in this forward pass: the input hook must come first in "
                "the model and be attached too (use SteeringHook.fwd_hooks())")
        if tuple(value.shape[:len(leading)]) != tuple(leading):
            raise RuntimeError(
                f"the activation at {self.hook_name!r} has shape {tuple(value.shape)} but the "
                f"one at {output_hook!r} has leading axes {tuple(leading)}")
        return value.reshape(*leading, -1)


def capture_hooks(edits: Sequence[Edit]) -> dict[str, InputCapture]:
    """One :class:`InputCapture` per other hook the ``edits`` read (transcoder input hooks)."""
    return {edit.input_hook_name: InputCapture(edit.input_hook_name)
            for edit in edits if edit.input_hook_name is not None}


class SteeringHook:
    """A TransformerLens forward hook ``(activation, hook) -> activation`` applying edits.

    Args:
        edits: one :class:`~mechrec.steering.edits.Edit`, a list applied in order, or ``None``.
        positions: see :mod:`mechrec.steering.positions`; default ``"last"``.
        attention_mask: ``(batch, pos)`` mask of the batch that will run (1 = real), or ``None``
            when there is no padding. Needed for ``"all"`` to skip padding and for ``"last"``
            with right padding.
        hook_name: if given, edits belonging to another hook are refused.

    Attributes:
        calls: how many times the hook has run (0 after a forward pass means the hook point never
            fired, e.g. ``hook_result`` without ``cfg.use_attn_result``).
    """

    def __init__(
        self,
        edits: EditSpec,
        positions: PositionSpec = "last",
        attention_mask: torch.Tensor | None = None,
        hook_name: str | None = None,
    ) -> None:
        self.edits: list[Edit] = as_edit_list(edits)
        if hook_name is not None:
            check_edits_for_hook(self.edits, hook_name)
        self.positions = normalize_positions(positions)
        self.attention_mask = attention_mask
        self.hook_name = hook_name
        self.captures = capture_hooks(self.edits)
        self.calls = 0

    def __call__(self, activation: torch.Tensor, hook: HookPoint | None = None) -> torch.Tensor:
        """Return the activation with the selected cells edited."""
        self.calls += 1
        if not self.edits:
            return activation
        name = getattr(hook, "name", None) or self.hook_name
        inputs = {key: capture.take(tuple(activation.shape[:2]), name)
                  for key, capture in self.captures.items()}
        return edit_cells(activation, self.edits, self.positions, self.attention_mask, name,
                          inputs)

    def fwd_hooks(self, hook_name: str | None = None
                  ) -> list[tuple[str, Callable[..., torch.Tensor]]]:
        """``(name, hook)`` pairs for ``model.hooks(fwd_hooks=...)``: the input captures of
        transcoder edits, then this hook at ``hook_name`` (default: the one it was made for)."""
        name = hook_name or self.hook_name
        if name is None:
            raise ValueError("name the hook to steer: fwd_hooks(hook_name=...)")
        return [*((key, capture) for key, capture in self.captures.items()), (name, self)]


def edit_cells(
    activation: torch.Tensor,
    edits: Sequence[Edit],
    positions: PositionSpec,
    attention_mask: torch.Tensor | None,
    hook_name: str | None = None,
    inputs: Mapping[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Apply ``edits`` to the ``positions`` cells of a ``(batch, pos, ...)`` activation
    (``inputs``: ``(batch, pos, width)`` activations at the other hooks the edits read, by
    name; the same cells are taken from them)."""
    if activation.ndim < 3:
        raise ValueError(
            f"cannot steer the activation at {hook_name!r} with shape {tuple(activation.shape)}: "
            "expected (batch, pos, ...) with feature dimensions after the position axis"
        )
    if not activation.is_floating_point():
        raise ValueError(f"cannot steer {hook_name!r}: its activation is not floating point")
    batch, seq_len = activation.shape[:2]
    flat = activation.reshape(batch, seq_len, -1)
    sel = resolve_positions(positions, batch, seq_len, attention_mask, activation.device)
    if not bool(sel.any()):
        return activation
    out = flat.clone()
    picked = {key: value[sel] for key, value in (inputs or {}).items()}
    out[sel] = apply_edits(flat[sel], edits, picked)
    return out.reshape(activation.shape)


def make_steering_hook(
    model: HookedTransformer,
    hook_name: str,
    edits: EditSpec,
    positions: PositionSpec = "last",
    attention_mask: torch.Tensor | None = None,
) -> tuple[str, SteeringHook]:
    """Validate ``hook_name`` against ``model`` and return a ``(name, hook)`` pair.

    The pair goes straight into ``model.run_with_hooks(..., fwd_hooks=[pair])`` or
    ``model.hooks(fwd_hooks=[pair])``; for edits of transcoder features use
    ``hook.fwd_hooks()``, which adds the capture of their input hook.
    """
    check_hook_name(model, hook_name)
    hook = SteeringHook(edits, positions, attention_mask, hook_name=hook_name)
    for name in hook.captures:
        check_hook_name(model, name)
    return hook_name, hook


@contextmanager
def steer(
    model: HookedTransformer,
    hook_name: str,
    edits: EditSpec,
    positions: PositionSpec = "last",
    attention_mask: torch.Tensor | None = None,
) -> Iterator[SteeringHook]:
    """Context manager: every forward pass of ``model`` inside it is steered.

    Args:
        model: any HookedTransformer.
        hook_name: TransformerLens hook name, e.g. ``"blocks.0.hook_resid_post"``.
        edits: a :class:`~mechrec.steering.edits.FeatureEdit`, a
            :class:`~mechrec.steering.edits.DirectionEdit`, or a list applied in order.
        positions: ``"last"`` (default), ``"all"``, explicit ints or a bool ``(batch, pos)``.
        attention_mask: the mask of the batch you will run (see :class:`SteeringHook`).

    Yields:
        The :class:`SteeringHook` (its ``calls`` counter shows whether it fired).
    """
    _, hook = make_steering_hook(model, hook_name, edits, positions, attention_mask)
    with model.hooks(fwd_hooks=hook.fwd_hooks()):
        yield hook

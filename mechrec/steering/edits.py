"""Edits applied to the activation rows selected for steering.

An :class:`Edit` maps rows ``(N, d_in)`` of raw activations to edited rows. Two kinds:

- :class:`FeatureEdit`: encode with an SAE, set (or add to) one or several features, decode and
  de-normalise. With ``keep_error=False`` the rows are *replaced* by the edited reconstruction
  (the paper's section 4.3 procedure); then even an edit that changes nothing is not the
  unsteered model, because the SAE's reconstruction error is dropped. With ``keep_error=True``
  the SAE's error term ``x - decode(encode(x))`` is kept, i.e. the result is
  ``x + decode(f') - decode(f)`` (computed as ``x + sum_j (f'_j - f_j) * d_j`` with
  ``d_j = decode(e_j) - decode(0)``, exact for affine decoders), so an edit that changes
  nothing returns ``x`` exactly.
- :class:`DirectionEdit`: add ``value * direction`` (use a unit-variance
  :class:`~mechrec.steering.directions.Direction` to make values comparable).

Several edits (a list) are applied in order; a :class:`FeatureEdit` with several ``values`` is
the "equalizer": all those features are edited in one encode/decode.

A :class:`FeatureEdit` of a transcoder (an SAE whose ``hook_name_out`` differs from its
``hook_name``) edits the rows at its output hook and encodes the rows at the same cells of
its input hook (:attr:`Edit.input_hook_name`), which the caller passes as ``inputs``
(:class:`~mechrec.steering.interventions.SteeringHook` captures them in the same forward
pass). Replacing gives ``decode(f') + skip(x_in)``; keeping the error gives
``y + decode(f') - decode(f)``, and adding to features with the error kept needs no encoding
at all: it adds the features' decoder directions at the output hook.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

from mechrec.hooks import output_hook
from mechrec.steering.directions import Direction
from mechrec.steering.protocols import SAELike, check_sae, sae_dtype_device
from mechrec.steering.validation import (
    check_feature_index,
    check_finite,
    check_vector,
    check_width,
)


class Edit(ABC):
    """An edit of activation rows ``(N, d_in) -> (N, d_in)`` at one hook."""

    @property
    @abstractmethod
    def hook_name(self) -> str | None:
        """The hook this edit belongs to, or ``None`` if it fits any hook of width ``d_in``."""

    @property
    @abstractmethod
    def d_in(self) -> int:
        """Width of the rows the edit accepts."""

    @property
    def input_hook_name(self) -> str | None:
        """Another hook whose rows (at the same cells) the edit reads, passed to
        :meth:`apply` as ``inputs``: a transcoder's input hook; ``None`` for most edits."""
        return None

    @abstractmethod
    def apply(self, rows: torch.Tensor, inputs: torch.Tensor | None = None) -> torch.Tensor:
        """Return edited copies of ``rows`` ``(N, d_in)`` (``inputs``: the rows at
        :attr:`input_hook_name`, for the edits that read one)."""


@dataclass(frozen=True, eq=False)
class FeatureEdit(Edit):
    """Set or shift SAE features, then write the decoded activation back.

    Attributes:
        sae: an :class:`~mechrec.steering.protocols.SAELike` (e.g. ``NormalizedSAE``).
        values: ``{feature_index: value}``; an empty mapping edits nothing (useful to measure
            the pure "replace with reconstruction" effect).
        mode: ``"set"`` the features to the values (paper 8.2.1) or ``"add"`` the values to them.
        keep_error: keep the SAE's reconstruction error (see the module docstring).
    """

    sae: SAELike
    values: Mapping[int, float] = field(default_factory=dict)
    mode: Literal["set", "add"] = "set"
    keep_error: bool = False

    def __post_init__(self) -> None:
        check_sae(self.sae)
        if self.mode not in ("set", "add"):
            raise ValueError(f"mode must be 'set' or 'add', got {self.mode!r}")
        clean = {
            check_feature_index(self.sae, j): check_finite(v, f"value for feature {j}")
            for j, v in dict(self.values).items()
        }
        object.__setattr__(self, "values", clean)

    @property
    def hook_name(self) -> str | None:
        """The hook the SAE writes (a transcoder's output hook), where the edit applies."""
        return output_hook(self.sae)

    @property
    def input_hook_name(self) -> str | None:
        """A transcoder's input hook (its features are encoded from the rows there)."""
        return None if self.sae.hook_name == self.hook_name else self.sae.hook_name

    @property
    def d_in(self) -> int:
        """Width of the rows edited: the SAE's input width, a transcoder's output width."""
        return int(self.sae.d_out if self.input_hook_name else self.sae.d_in)

    def apply(self, rows: torch.Tensor, inputs: torch.Tensor | None = None) -> torch.Tensor:
        """Encode, edit the features, decode; keep the error term if asked.

        ``inputs``: for a transcoder, the rows at its input hook (same cells as ``rows``),
        needed unless the error is kept and the values are added (or there are none).
        """
        check_width(rows.shape[-1], self.d_in, "this SAE", self.hook_name)
        dtype, device = sae_dtype_device(self.sae)
        x = rows.to(device=device, dtype=dtype)
        if self.keep_error and (not self.values or self.mode == "add"):
            if not self.values:
                return rows.clone()
            vals = torch.tensor(list(self.values.values()), dtype=x.dtype, device=x.device)
            out = x + vals.expand(len(x), -1) @ self.feature_directions().to(x.dtype)
            return out.to(device=rows.device, dtype=rows.dtype)
        source = x if self.input_hook_name is None else self._inputs(inputs, len(x), device,
                                                                      dtype)
        feats = self.sae.encode(source)
        idx = torch.tensor(list(self.values), dtype=torch.long, device=feats.device)
        vals = torch.tensor(list(self.values.values()), dtype=feats.dtype, device=feats.device)
        if self.keep_error:
            change = vals - feats[:, idx] if self.mode == "set" else vals.expand(len(x), -1)
            out = x + change @ self.feature_directions().to(x.dtype)
        else:
            edited = feats.clone()
            edited[:, idx] = vals if self.mode == "set" else edited[:, idx] + vals
            if self.input_hook_name is None:
                out = self.sae.decode(edited).reshape(x.shape)
            else:  # a transcoder: its skip term reads the input rows
                out = self.sae.decode(edited, skip_input=source).reshape(x.shape)  # type: ignore[call-arg]
        return out.to(device=rows.device, dtype=rows.dtype)

    def _inputs(self, inputs: torch.Tensor | None, n: int, device: torch.device,
                dtype: torch.dtype) -> torch.Tensor:
        if inputs is None:
            raise ValueError(
                f"this transcoder reads {self.input_hook_name!r} and writes {self.hook_name!r}: "
                "editing its features needs the rows at its input hook in the same forward "
                "pass; steer with mechrec.steering.steer (or SteeringHook.fwd_hooks()), which "
                "captures them")
        check_width(inputs.shape[-1], int(self.sae.d_in), "this transcoder's encoder",
                    self.input_hook_name)
        if inputs.shape[0] != n:
            raise ValueError(f"{inputs.shape[0]} input rows for {n} rows to edit: they must be "
                             "the same cells of the input and output hooks")
        return inputs.to(device=device, dtype=dtype)

    def feature_directions(self) -> torch.Tensor:
        """``(k, d_in)``: ``decode(e_j) - decode(0)`` for the edited features, in ``values`` order.

        With ``keep_error=True`` the edit is ``x + sum_j (f'_j - f_j) * direction_j``, which
        equals ``x + decode(f') - decode(f)`` for an affine decoder (every sae-lens
        architecture's ``W_dec f + b_dec`` behind a :class:`~mechrec.normalization.Normalizer`)
        without the float32 cancellation of subtracting two full reconstructions.
        """
        cached = self.__dict__.get("_directions")
        if cached is None:
            dtype, device = sae_dtype_device(self.sae)
            basis = torch.zeros(len(self.values) + 1, self.sae.d_sae, dtype=dtype, device=device)
            for row, feature in enumerate(self.values, start=1):
                basis[row, feature] = 1.0
            with torch.no_grad():
                decoded = self.sae.decode(basis).reshape(len(basis), -1)
            cached = (decoded[1:] - decoded[:1]).detach()
            object.__setattr__(self, "_directions", cached)
        return cached


@dataclass(frozen=True, eq=False)
class DirectionEdit(Edit):
    """Add ``value * direction`` to the rows.

    Attributes:
        direction: a :class:`Direction` (its ``hook_name`` is enforced when set) or a raw
            ``(d_in,)`` tensor.
        value: the steering factor (finite).
    """

    direction: Direction | torch.Tensor
    value: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.direction, Direction):
            object.__setattr__(
                self, "direction", Direction(check_vector(self.direction, "direction"))
            )
        object.__setattr__(self, "value", check_finite(self.value, "direction value"))

    @property
    def hook_name(self) -> str | None:
        """The direction's hook, if recorded."""
        return self.direction.hook_name  # type: ignore[union-attr]

    @property
    def d_in(self) -> int:
        """Length of the direction."""
        return self.direction.d_in  # type: ignore[union-attr]

    def apply(self, rows: torch.Tensor, inputs: torch.Tensor | None = None) -> torch.Tensor:
        """Return ``rows + value * direction`` (``inputs`` is not used)."""
        check_width(rows.shape[-1], self.d_in, f"direction {self.direction.name!r}", self.hook_name)  # type: ignore[union-attr]
        vec = self.direction.vector.to(device=rows.device, dtype=rows.dtype)  # type: ignore[union-attr]
        return rows + self.value * vec


EditSpec = Edit | Sequence[Edit] | None


def as_edit_list(edits: EditSpec) -> list[Edit]:
    """Normalise ``None`` / one edit / a sequence of edits to a list, checking the types."""
    if edits is None:
        return []
    items = [edits] if isinstance(edits, Edit) else list(edits)
    for item in items:
        if not isinstance(item, Edit):
            raise TypeError(
                f"expected FeatureEdit/DirectionEdit (an Edit), got {type(item).__name__}; wrap "
                "SAEs as FeatureEdit(sae, {feature: value}) and vectors as DirectionEdit(v, value)"
            )
    return items


def check_edits_for_hook(edits: Sequence[Edit], hook_name: str) -> None:
    """Refuse edits that belong to another hook (an SAE or direction from another layer)."""
    for edit in edits:
        if edit.hook_name is not None and edit.hook_name != hook_name:
            what = "SAE" if isinstance(edit, FeatureEdit) else "direction"
            raise ValueError(
                f"the {what} was trained on {edit.hook_name!r} but is applied at {hook_name!r}: "
                f"steer at hook_name={edit.hook_name!r} or use an {what} trained on {hook_name!r}"
            )


def apply_edits(rows: torch.Tensor, edits: Sequence[Edit],
                inputs: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Apply ``edits`` in order to ``rows`` ``(N, d_in)``; no edits returns ``rows`` itself.

    ``inputs``: rows at other hooks (same cells), by hook name, for edits with an
    :attr:`Edit.input_hook_name` (transcoder features).
    """
    for edit in edits:
        name = edit.input_hook_name
        rows = edit.apply(rows, None if name is None else (inputs or {}).get(name))
    return rows

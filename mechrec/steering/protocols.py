"""The small interface steering needs from a sparse autoencoder.

:class:`mechrec.saes.NormalizedSAE` satisfies it, and so does any object with the same five
members (test doubles, other SAE wrappers). Steering never looks inside the SAE: it encodes raw
activations, edits features and decodes back to raw (de-normalised) activations.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class SAELike(Protocol):
    """An SAE that maps *raw* activations to features and back.

    Attributes:
        hook_name: the TransformerLens hook the SAE was trained on.
        d_in: width of the activation (trailing dimensions of the hook flattened).
        d_sae: number of features.

    A transcoder also has ``hook_name_out`` (the hook it writes, where steering edits apply)
    and ``d_out`` (the width there); ``decode`` then gives activations at ``hook_name_out``.
    """

    hook_name: str
    d_in: int
    d_sae: int

    def encode(self, x_raw: torch.Tensor) -> torch.Tensor:
        """Raw activations ``(..., d_in)`` to feature activations ``(..., d_sae)``."""
        ...

    def decode(self, features: torch.Tensor) -> torch.Tensor:
        """Features ``(..., d_sae)`` to raw (de-normalised) activations ``(..., d_in)``."""
        ...


def check_sae(sae: object) -> SAELike:
    """Return ``sae`` if it has the members of :class:`SAELike`, else raise ``TypeError``."""
    missing = [
        name
        for name in ("hook_name", "d_in", "d_sae", "encode", "decode")
        if not hasattr(sae, name)
    ]
    if missing:
        raise TypeError(
            f"{type(sae).__name__} cannot be used for steering: it lacks {', '.join(missing)}. "
            "Pass a mechrec.saes.NormalizedSAE (or any object with hook_name, d_in, d_sae, "
            "encode(x_raw) and decode(features))."
        )
    return sae  # type: ignore[return-value]


def sae_dtype_device(sae: object) -> tuple[torch.dtype, torch.device]:
    """The dtype and device of an SAE's parameters (float32 on CPU if it exposes none).

    Looks at ``sae.parameters()`` and, for wrappers such as ``NormalizedSAE``, at
    ``sae.sae.parameters()``.
    """
    for holder in (sae, getattr(sae, "sae", None)):
        params = getattr(holder, "parameters", None)
        if callable(params):
            for p in params():
                return p.dtype, p.device
    return torch.float32, torch.device("cpu")

"""Folding a per-dimension :class:`~mechrec.normalization.Normalizer` into sae-lens weights.

mechrec trains SAEs on normalised activations ``z = (x - mean) / std`` and decodes back with
``x_hat = z_hat * std + mean``. Both maps are affine and per dimension, so they can be
absorbed into the SAE's own weights: the *folded* SAE reads raw activations ``x`` and gives
exactly the same feature activations and raw-space reconstructions. With ``s = std`` and
``m = mean`` (``W_enc`` is ``(d_in, d_sae)``, ``W_dec`` is ``(d_sae, d_in)``)::

    W_enc' = W_enc / s[:, None]          W_dec' = W_dec * s[None, :]
    b_dec' = b_dec * s + m

When ``apply_b_dec_to_input`` is true (sae-lens' default and every SAE mechrec trains) the
encoder input is ``x - b_dec' = (z - b_dec) * s``, so ``(x - b_dec') @ W_enc' =
(z - b_dec) @ W_enc`` and no encoder bias changes. Otherwise ``z @ W_enc = x @ W_enc' -
m @ W_enc'``, so the encoder biases absorb ``-m @ W_enc'``: ``b_enc`` (standard, TopK,
JumpReLU) and ``b_gate`` directly, and ``b_mag`` scaled by ``exp(r_mag)`` because the gated
magnitude path reads ``W_enc * exp(r_mag)``. ``r_mag`` and the JumpReLU ``threshold`` act on
pre-activations, which are unchanged, so they stay as they are. This is the diagonal case of
sae-lens' own ``SAE.fold_activation_whitening`` (``M = diag(1 / std)``); the tests check the
two agree.

TopK SAEs with ``rescale_acts_by_decoder_norm`` scale pre-activations by the decoder-row
norms, which the fold changes; their norms are first folded into the encoder (exactly what
``fold_W_dec_norm`` does; it leaves the SAE's output unchanged) and the flag is turned off.

All arithmetic is done in float64 and rounded once to the SAE's dtype. :func:`unfold_normalizer`
is the inverse; the original TopK flag is kept in the folded SAE's metadata so that unfolding
restores it.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from sae_lens import SAE

from mechrec.normalization import Normalizer

#: Key of the record of the fold in a folded SAE's ``cfg.metadata`` (and so in ``cfg.json``).
FOLD_METADATA_KEY = "mechrec_normalizer_fold"
#: Version of the folded format, stored in that record.
FOLD_FORMAT = "mechrec.sae_lens_folded/1"
#: Parameters each foldable sae-lens inference architecture has.
_PARAMETERS: dict[str, frozenset[str]] = {
    "standard": frozenset({"W_enc", "b_enc", "W_dec", "b_dec"}),
    "topk": frozenset({"W_enc", "b_enc", "W_dec", "b_dec"}),
    "jumprelu": frozenset({"W_enc", "b_enc", "W_dec", "b_dec", "threshold"}),
    "gated": frozenset({"W_enc", "W_dec", "b_dec", "b_gate", "b_mag", "r_mag"}),
}
#: sae-lens inference architectures a normaliser can be folded into.
FOLDABLE_ARCHITECTURES: frozenset[str] = frozenset(_PARAMETERS)


def _check(sae: SAE, normalizer: Normalizer) -> str:
    arch = str(sae.cfg.architecture())
    expected = _PARAMETERS.get(arch)
    if expected is None or set(sae.state_dict()) != expected:
        have = sorted(sae.state_dict())
        raise ValueError(
            f"cannot fold a normaliser into a sae-lens {arch!r} SAE with parameters {have}: "
            f"only {sorted(_PARAMETERS)} (the architectures mechrec trains) are supported"
        )
    if normalizer.d != sae.cfg.d_in:
        raise ValueError(f"the normaliser has {normalizer.d} dimensions but the SAE's d_in "
                         f"is {sae.cfg.d_in}")
    if sae.cfg.normalize_activations != "none":
        raise ValueError(f"the SAE already normalises its input itself "
                         f"(normalize_activations={sae.cfg.normalize_activations!r}): "
                         "mechrec SAEs use 'none' and a Normalizer outside the SAE")
    return arch


def _affine(normalizer: Normalizer) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean, std)`` in float64 of the map the normaliser applies (the identity for mode
    ``"none"``, whatever statistics it holds)."""
    if normalizer.mode == "none":
        return (torch.zeros(normalizer.d, dtype=torch.float64),
                torch.ones(normalizer.d, dtype=torch.float64))
    return normalizer.mean.to(torch.float64), normalizer.std.to(torch.float64)


def can_fold(sae: SAE) -> bool:
    """Whether :func:`fold_normalizer` supports ``sae`` (the architectures mechrec trains,
    with no input normalisation of sae-lens' own)."""
    try:
        _check(sae, Normalizer.identity(int(sae.cfg.d_in)))
    except ValueError:
        return False
    return True


def _float64_state(sae: SAE) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", torch.float64).clone() for k, v in sae.state_dict().items()}


def _store(sae: SAE, state: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, param in sae.named_parameters():
            param.copy_(state[name].to(param.device, param.dtype))


def _encoder_bias_shift(state: dict[str, torch.Tensor], arch: str, shift: torch.Tensor,
                        sign: float) -> None:
    """Add ``sign * shift`` to the encoder biases (``b_mag`` scaled by ``exp(r_mag)``)."""
    if arch == "gated":
        state["b_gate"] += sign * shift
        state["b_mag"] += sign * shift * state["r_mag"].exp()
    else:
        state["b_enc"] += sign * shift


@torch.no_grad()
def fold_normalizer(sae: SAE, normalizer: Normalizer) -> SAE:
    """A new SAE that reads raw activations and equals ``normalizer`` followed by ``sae``.

    ``folded.encode(x) == sae.encode(normalizer.normalize(x))`` and ``folded.decode(f) ==
    normalizer.denormalize(sae.decode(f))`` up to float rounding; ``sae`` is not modified.
    The fold is recorded under ``cfg.metadata[FOLD_METADATA_KEY]`` (replacing any record
    ``sae`` carries), so that :func:`unfold_normalizer` gives ``sae`` back.

    Raises:
        ValueError: an architecture mechrec does not train, a width mismatch, or an SAE
            that normalises its input itself.
    """
    arch = _check(sae, normalizer)
    folded = copy.deepcopy(sae)  # not SAE.from_dict: its random init would use the global RNG
    # An SAE loaded with plain sae-lens from a folded folder carries an earlier record; as an
    # object it simply reads raw activations, so the record describes nothing left to undo.
    folded.cfg.metadata.__dict__.pop(FOLD_METADATA_KEY, None)
    record: dict[str, Any] = {"format": FOLD_FORMAT}
    if arch == "topk" and folded.cfg.rescale_acts_by_decoder_norm:
        folded.fold_W_dec_norm()
        folded.cfg.rescale_acts_by_decoder_norm = False
        record["rescale_acts_by_decoder_norm"] = True
    state = _float64_state(folded)
    mean, std = _affine(normalizer)
    state["W_enc"] = state["W_enc"] / std[:, None]
    state["W_dec"] = state["W_dec"] * std[None, :]
    state["b_dec"] = state["b_dec"] * std + mean
    if not folded.cfg.apply_b_dec_to_input:
        _encoder_bias_shift(state, arch, mean @ state["W_enc"], -1.0)
    _store(folded, state)
    folded.cfg.metadata[FOLD_METADATA_KEY] = record
    folded.eval()
    return folded


def is_folded(sae: SAE) -> bool:
    """Whether ``sae`` (e.g. loaded from a directory) has a mechrec normaliser folded in."""
    return FOLD_METADATA_KEY in sae.cfg.metadata


@torch.no_grad()
def unfold_normalizer(sae: SAE, normalizer: Normalizer) -> SAE:
    """Undo :func:`fold_normalizer` in place: ``sae`` then reads normalised activations.

    Removes the fold record from ``cfg.metadata`` and restores the TopK
    ``rescale_acts_by_decoder_norm`` flag. Returns ``sae``.

    Raises:
        ValueError: ``sae`` has no fold record, or one of an unknown format.
    """
    record = sae.cfg.metadata.get(FOLD_METADATA_KEY)
    if not isinstance(record, dict) or record.get("format") != FOLD_FORMAT:
        raise ValueError(
            f"the SAE's cfg.metadata.{FOLD_METADATA_KEY} is {record!r}, not a record of "
            f"format {FOLD_FORMAT!r}: it was not saved by this version of mechrec"
        )
    arch = _check(sae, normalizer)
    state = _float64_state(sae)
    mean, std = _affine(normalizer)
    if not sae.cfg.apply_b_dec_to_input:
        _encoder_bias_shift(state, arch, mean @ state["W_enc"], 1.0)
    state["W_enc"] = state["W_enc"] * std[:, None]
    state["W_dec"] = state["W_dec"] / std[None, :]
    state["b_dec"] = (state["b_dec"] - mean) / std
    _store(sae, state)
    if record.get("rescale_acts_by_decoder_norm"):
        sae.cfg.rescale_acts_by_decoder_norm = True
    del sae.cfg.metadata.__dict__[FOLD_METADATA_KEY]
    return sae

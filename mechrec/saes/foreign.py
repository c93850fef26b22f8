"""Other libraries' SAE checkpoints, converted to the equivalent sae-lens SAE and wrapped.

:func:`load_foreign_sae` reads a checkpoint written by another SAE library, builds the
sae-lens SAE that computes the same function (same feature activations, same
reconstructions, on the same activations) and wraps it in a
:class:`~mechrec.saes.normalized.NormalizedSAE` with the identity normaliser. Nothing of
those libraries is imported: their files are read with ``safetensors`` and ``torch.load``
(``weights_only=True``: tensors only, never arbitrary pickled objects).

===========================  ==============================================  ================
format                       files                                           sae-lens SAE
===========================  ==============================================  ================
``"sae_lens"``               ``cfg.json`` + ``sae_weights.safetensors``      as saved
``"dictionary_learning"``    ``ae.pt`` (``AutoEncoder``: ``encoder.weight``,  ``standard``
                             ``encoder.bias``, ``decoder.weight``, ``bias``)
                             ``ae.pt`` + ``config.json`` naming               ``topk``
                             ``AutoEncoderTopK`` (``b_dec``, ``k``)
                             ``ae.pt`` + ``config.json`` naming               ``jumprelu``
                             ``BatchTopKSAE`` or ``MatryoshkaBatchTopKSAE``
                             (their inference ``threshold``)
                             ``ae.pt`` (``JumpReluAutoEncoder``: ``W_enc``,   ``jumprelu``
                             ``b_enc``, ``W_dec``, ``b_dec``, ``threshold``)
``"sparsify"``               ``cfg.json`` (``k``, ``d_in``) +                 ``topk``
                             ``sae.safetensors`` (``encoder.weight``,
                             ``encoder.bias``, ``W_dec``, ``b_dec``)
===========================  ==============================================  ================

The maps (``W_enc`` is ``(d_in, d_sae)`` in sae-lens, ``nn.Linear`` weights are
``(out, in)``):

- dictionary_learning ``AutoEncoder``: ``f = relu(encoder(x - bias))``,
  ``x_hat = decoder(f) + bias``: ``W_enc = encoder.weight.T``, ``b_enc = encoder.bias``,
  ``W_dec = decoder.weight.T``, ``b_dec = bias``. Its ``from_pretrained`` rescales the
  decoder columns to unit norm by default (same reconstructions, features in unit-decoder
  units); here the weights are taken as stored.
- ``AutoEncoderTopK``: the ``k`` largest of ``relu(encoder(x - b_dec))``, decoded with
  ``decoder`` and ``b_dec``; ``BatchTopKSAE`` at inference keeps
  ``relu(pre) * (relu(pre) > threshold)`` (one scalar threshold): a JumpReLU SAE with that
  threshold for every feature. ``MatryoshkaBatchTopKSAE`` (``W_enc``/``W_dec`` as
  parameters, a ``group_sizes`` buffer) encodes the same way at inference (all its groups
  are active), so it converts to the same JumpReLU SAE; the groups are kept in
  ``provenance``.
- ``JumpReluAutoEncoder``: ``relu(pre * (pre > threshold))`` with
  ``pre = x @ W_enc + b_enc`` (no ``b_dec`` subtracted from the input), decoded as
  ``f @ W_dec + b_dec``: sae-lens' JumpReLU with ``apply_b_dec_to_input=False`` and the
  same tensors.
- sparsify ``SparseCoder`` (``activation="topk"``, not a transcoder, no skip connection):
  the ``k`` largest of ``relu(encoder(x - b_dec))``, decoded as ``acts @ W_dec + b_dec``.

Other libraries name hook points their own way (``layers.6``, ``resid_post_layer_3``...),
so the TransformerLens hook usually has to be given as ``hook_name``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from sae_lens import (
    SAE,
    JumpReLUSAE,
    JumpReLUSAEConfig,
    StandardSAE,
    StandardSAEConfig,
    TopKSAE,
    TopKSAEConfig,
)
from sae_lens.saes.sae import SAEMetadata
from safetensors import SafetensorError
from safetensors.torch import load_file

from mechrec.normalization import Normalizer
from mechrec.saes.io import SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME
from mechrec.saes.normalized import MissingHookNameError, NormalizedSAE

#: Formats :func:`load_foreign_sae` reads (``"auto"`` detects one from the files).
FORMATS: tuple[str, ...] = ("auto", "sae_lens", "dictionary_learning", "sparsify")
DICTIONARY_LEARNING_FILE = "ae.pt"
DICTIONARY_LEARNING_CONFIG = "config.json"
SPARSIFY_CFG_FILE = "cfg.json"
SPARSIFY_WEIGHTS_FILE = "sae.safetensors"

_DL_KEYS = {
    "AutoEncoder": {"encoder.weight", "encoder.bias", "decoder.weight", "bias"},
    "AutoEncoderTopK": {"encoder.weight", "encoder.bias", "decoder.weight", "b_dec", "k"},
    "BatchTopKSAE": {"encoder.weight", "encoder.bias", "decoder.weight", "b_dec", "k",
                     "threshold"},
    "MatryoshkaBatchTopKSAE": {"W_enc", "b_enc", "W_dec", "b_dec", "k", "threshold",
                               "group_sizes"},
    "JumpReluAutoEncoder": {"W_enc", "b_enc", "W_dec", "b_dec", "threshold"},
}
#: dictionary_learning classes that store ``W_enc (d_in, d_sae)``/``W_dec (d_sae, d_in)``
#: parameters instead of ``nn.Linear`` encoder/decoder weights.
_DL_PARAMETER_CLASSES = ("MatryoshkaBatchTopKSAE", "JumpReluAutoEncoder")
_SPARSIFY_KEYS = {"encoder.weight", "encoder.bias", "W_dec", "b_dec"}
_EXPECTED = (
    f"expected one of: a sae-lens folder ({SAE_CFG_FILENAME} + {SAE_WEIGHTS_FILENAME}); a "
    f"dictionary_learning {DICTIONARY_LEARNING_FILE} (or its folder, with its "
    f"{DICTIONARY_LEARNING_CONFIG}); a sparsify folder ({SPARSIFY_CFG_FILE} + "
    f"{SPARSIFY_WEIGHTS_FILE})"
)


def detect_format(path: str | os.PathLike) -> str:
    """The checkpoint format of ``path`` (a file or folder): one of :data:`FORMATS` but
    ``"auto"``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: no known format; the message lists what was found and what is expected.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p} does not exist; {_EXPECTED}")
    if p.is_file():
        if p.suffix == ".pt":
            return "dictionary_learning"
        raise ValueError(f"{p} is a file but not a dictionary_learning "
                         f"{DICTIONARY_LEARNING_FILE}; {_EXPECTED}")
    names = {c.name for c in p.iterdir()}
    if {SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME} <= names:
        return "sae_lens"
    if {SPARSIFY_CFG_FILE, SPARSIFY_WEIGHTS_FILE} <= names:
        return "sparsify"
    if DICTIONARY_LEARNING_FILE in names:
        return "dictionary_learning"
    inner = sorted(c.name for c in p.iterdir()
                   if c.is_dir() and ((c / SPARSIFY_WEIGHTS_FILE).is_file()
                                      or (c / DICTIONARY_LEARNING_FILE).is_file()
                                      or (c / SAE_WEIGHTS_FILENAME).is_file()))
    hint = (f" It holds SAE folders ({', '.join(inner[:8])}): pass one of them (e.g. "
            f"{p / inner[0]})." if inner else "")
    found = ", ".join(sorted(names)[:12]) or "nothing"
    raise ValueError(f"{p} is no SAE checkpoint mechrec knows (found: {found}); "
                     f"{_EXPECTED}.{hint}")


def load_foreign_sae(
    path: str | os.PathLike,
    *,
    hook_name: str | None = None,
    format: str = "auto",  # the natural name for the caller
    device: str = "cpu",
    hook_name_out: str | None = None,
) -> NormalizedSAE:
    """Load an SAE checkpoint of another library as an equivalent sae-lens SAE, wrapped.

    Args:
        path: the checkpoint: a folder, or a dictionary_learning ``ae.pt`` file.
        hook_name: the TransformerLens hook the SAE reads; required unless the checkpoint
            records one (sae-lens ``cfg.json`` metadata).
        format: one of :data:`FORMATS`; ``"auto"`` detects it (:func:`detect_format`).
        device: where to put the SAE.
        hook_name_out: a sae-lens transcoder's output hook, when its ``cfg.json`` records
            none (the other formats hold no transcoders mechrec converts).

    Returns:
        a :class:`NormalizedSAE` with the identity normaliser whose ``encode``/``decode``
        equal the foreign SAE's forward on raw activations; ``provenance`` records the
        format, class and path it came from; ``save`` writes it as a plain sae-lens folder.

    Raises:
        FileNotFoundError: the checkpoint or one of its files is missing.
        ValueError: unknown format, unreadable files, keys or shapes other than expected
            (the message names what was found and what is expected), an unsupported variant
            (sparsify transcoders, skip connections, groupmax), or no hook name.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown SAE checkpoint format {format!r}; choose one of {FORMATS}")
    p = Path(path)
    fmt = detect_format(p) if format == "auto" else format
    if fmt == "sae_lens":  # a plain sae-lens folder, or one mechrec saved (its normaliser)
        return NormalizedSAE.load(p, hook_name=hook_name, device=device,
                                  hook_name_out=hook_name_out)
    extra: dict[str, Any] = {}
    if fmt == "dictionary_learning":
        sae, cls_name, extra = _from_dictionary_learning(p, hook_name)
    else:
        sae, cls_name = _from_sparsify(p, hook_name)
    if not sae.cfg.metadata.hook_name:
        raise MissingHookNameError(
            f"the {fmt} SAE in {p} does not name a TransformerLens hook: pass "
            "hook_name='blocks.0.hook_resid_post' (whichever hook it was trained on)"
            + _hook_hint(fmt, p)
        )
    provenance = {"converted_from": {"format": fmt, "class": cls_name, "path": str(p),
                                     **extra}}
    sae.to(device)
    return NormalizedSAE(sae, _identity(sae), provenance=provenance,
                         hook_name_out=hook_name_out)


def _hook_hint(fmt: str, path: Path) -> str:
    """Where the checkpoint says it was trained, in its library's words, with the
    TransformerLens hook that usually is (never used as the hook without the caller)."""
    import re

    if fmt == "sparsify":
        match = re.fullmatch(r"(?:.*\.)?layers\.(\d+)", path.name)
        if match:
            return (f"; sparsify names the place {path.name!r}, the output of block "
                    f"{match.group(1)}: hook_name='blocks.{match.group(1)}.hook_resid_post' "
                    "in TransformerLens")
        return ""
    config = (path if path.is_dir() else path.parent) / DICTIONARY_LEARNING_CONFIG
    try:
        trainer = _read_json(config).get("trainer") if config.is_file() else None
    except ValueError:
        return ""
    if isinstance(trainer, dict) and isinstance(trainer.get("layer"), int):
        what = trainer.get("submodule_name") or "a submodule"
        return (f"; its {DICTIONARY_LEARNING_CONFIG} says layer {trainer['layer']}, "
                f"{what} (the residual stream after block {trainer['layer']} is "
                f"'blocks.{trainer['layer']}.hook_resid_post')")
    return ""


def _identity(sae: SAE) -> Normalizer:
    return Normalizer.identity(int(sae.cfg.d_in))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds {type(data).__name__}, not a JSON object")
    return data


def _check_keys(state: dict[str, torch.Tensor], expected: set[str], where: Path,
                what: str, optional: set[str] | None = None) -> None:
    optional = optional or set()
    have = set(state)
    if not expected <= have or not have <= expected | optional:
        raise ValueError(
            f"{where} has tensors {sorted(have)}, not those of a {what} (expected "
            f"{sorted(expected | optional)})"
        )


def _shapes(where: Path, what: str, enc_w: torch.Tensor, dec: torch.Tensor,
            dec_is_linear: bool, vectors: dict[str, torch.Tensor]) -> tuple[int, int]:
    """``(d_in, d_sae)`` after checking every shape; ``dec_is_linear``: the decoder is an
    ``nn.Linear`` weight ``(d_in, d_sae)``, else a ``(d_sae, d_in)`` matrix."""
    if enc_w.ndim != 2:
        raise ValueError(f"{where}: encoder.weight of the {what} must be 2-D, got shape "
                         f"{tuple(enc_w.shape)}")
    d_sae, d_in = (int(n) for n in enc_w.shape)
    want = (d_in, d_sae) if dec_is_linear else (d_sae, d_in)
    if tuple(dec.shape) != want:
        raise ValueError(f"{where}: the {what}'s decoder weight has shape {tuple(dec.shape)}, "
                         f"expected {want} for encoder.weight {tuple(enc_w.shape)}")
    for name, tensor in vectors.items():
        size = d_sae if name.startswith("encoder") else d_in
        if tuple(tensor.shape) != (size,):
            raise ValueError(f"{where}: the {what}'s {name} has shape {tuple(tensor.shape)}, "
                             f"expected ({size},)")
    return d_in, d_sae


def _build(cls: type[SAE], cfg: Any, params: dict[str, torch.Tensor]) -> SAE:
    sae = cls(cfg)
    with torch.no_grad():
        for name, value in params.items():
            getattr(sae, name).copy_(value.to(torch.float32))
    return sae.eval()


def _from_dictionary_learning(path: Path, hook_name: str | None
                              ) -> tuple[SAE, str, dict[str, Any]]:
    file = path / DICTIONARY_LEARNING_FILE if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"{file} is missing; {_EXPECTED}")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unpickling failure means "not tensors"
        raise ValueError(
            f"{file} cannot be read as a dictionary_learning state dict of tensors "
            f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); mechrec only reads "
            "tensors (weights_only), never pickled objects"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{file} holds {type(state).__name__}, not a state dict of tensors "
                         "(save ae.state_dict())")
    config_file = file.parent / DICTIONARY_LEARNING_CONFIG
    dict_class = None
    if config_file.is_file():
        trainer = _read_json(config_file).get("trainer")
        if isinstance(trainer, dict) and isinstance(trainer.get("dict_class"), str):
            dict_class = trainer["dict_class"]
    if dict_class is None:
        dict_class = _guess_dictionary_learning_class(state, file)
    if dict_class not in _DL_KEYS:
        raise ValueError(f"{config_file} names dict_class {dict_class!r}; mechrec converts "
                         f"{sorted(_DL_KEYS)}")
    optional = {"threshold"} if dict_class == "AutoEncoderTopK" else set()
    _check_keys(state, _DL_KEYS[dict_class], file, f"dictionary_learning {dict_class}",
                optional)
    if dict_class in _DL_PARAMETER_CLASSES:
        w_enc, enc_b, w_dec, b_dec = (state[k] for k in ("W_enc", "b_enc", "W_dec", "b_dec"))
        # check as nn.Linear-shaped encoder weight (d_sae, d_in) and (d_sae, d_in) decoder
        d_in, d_sae = _shapes(file, dict_class, w_enc.T, w_dec, False,
                              {"encoder.bias": enc_b, "b_dec": b_dec})
        params = {"W_enc": w_enc, "b_enc": enc_b, "W_dec": w_dec, "b_dec": b_dec}
    else:
        enc_w, enc_b, dec_w = (state[k] for k in ("encoder.weight", "encoder.bias",
                                                  "decoder.weight"))
        b_dec = state["bias"] if dict_class == "AutoEncoder" else state["b_dec"]
        d_in, d_sae = _shapes(file, dict_class, enc_w, dec_w, True,
                              {"encoder.bias": enc_b, "b_dec": b_dec})
        params = {"W_enc": enc_w.T, "b_enc": enc_b, "W_dec": dec_w.T, "b_dec": b_dec}
    common: dict[str, Any] = {"d_in": d_in, "d_sae": d_sae,
                              "metadata": SAEMetadata(hook_name=hook_name)}
    if dict_class == "AutoEncoder":
        return _build(StandardSAE, StandardSAEConfig(**common), params), dict_class, {}
    if dict_class == "JumpReluAutoEncoder":
        threshold = state["threshold"].reshape(-1)
        if threshold.shape != (d_sae,):
            raise ValueError(f"{file}: the JumpReluAutoEncoder's threshold has shape "
                             f"{tuple(state['threshold'].shape)}, expected ({d_sae},)")
        # relu(pre * (pre > t)) == relu(pre) * (pre > t) for a 0/1 mask, any t
        params["threshold"] = threshold
        cfg = JumpReLUSAEConfig(apply_b_dec_to_input=False, **common)
        return _build(JumpReLUSAE, cfg, params), dict_class, {}
    k = int(state["k"].reshape(-1)[0])
    if dict_class == "AutoEncoderTopK":
        cfg = TopKSAEConfig(k=k, rescale_acts_by_decoder_norm=False, **common)
        return _build(TopKSAE, cfg, params), dict_class, {}
    threshold = float(state["threshold"].reshape(-1)[0])
    # relu(pre) * (relu(pre) > t) == relu(pre) * (pre > max(t, 0))
    params["threshold"] = torch.full((d_sae,), max(threshold, 0.0))
    extra: dict[str, Any] = {"k": k, "threshold": threshold}
    if dict_class == "MatryoshkaBatchTopKSAE":
        groups = [int(g) for g in state["group_sizes"].reshape(-1)]
        if sum(groups) != d_sae:
            raise ValueError(f"{file}: the MatryoshkaBatchTopKSAE's group_sizes {groups} do not "
                             f"add up to its {d_sae} latents")
        extra["group_sizes"] = groups
    return _build(JumpReLUSAE, JumpReLUSAEConfig(**common), params), dict_class, extra


def _guess_dictionary_learning_class(state: dict[str, torch.Tensor], file: Path) -> str:
    """The dictionary_learning class of a state dict without its config.json, when its keys
    say it unambiguously."""
    if "bias" in state:
        return "AutoEncoder"
    if "group_sizes" in state:
        return "MatryoshkaBatchTopKSAE"
    if "W_enc" in state and "k" not in state:
        return "JumpReluAutoEncoder"
    if "k" in state:
        raise ValueError(
            f"{file} holds top-k weights (b_dec, k), which dictionary_learning's "
            "AutoEncoderTopK and BatchTopKSAE share but use differently: put the "
            f"{DICTIONARY_LEARNING_CONFIG} dictionary_learning wrote beside it (its "
            "trainer.dict_class says which)"
        )
    return "AutoEncoder"  # the key check names what is wrong


def _from_sparsify(path: Path, hook_name: str | None) -> tuple[SAE, str]:
    cfg_file, weights_file = path / SPARSIFY_CFG_FILE, path / SPARSIFY_WEIGHTS_FILE
    for file in (cfg_file, weights_file):
        if not file.is_file():
            raise FileNotFoundError(f"{file} is missing: {path} is not a sparsify checkpoint "
                                    f"(expected {SPARSIFY_CFG_FILE} and {SPARSIFY_WEIGHTS_FILE})")
    cfg = _read_json(cfg_file)
    unsupported = {key: cfg.get(key) for key, ok in (("activation", "topk"), ("transcode", False),
                                                      ("skip_connection", False))
                   if cfg.get(key, ok) != ok}
    if unsupported:
        raise ValueError(f"{cfg_file} describes a sparsify {unsupported} coder; mechrec converts "
                         "plain TopK SAEs (activation 'topk', no transcoder, no skip connection): "
                         "sae-lens has no TopK transcoder to convert a sparsify transcoder to. "
                         "Transcoders load from sae-lens folders (Transcoder, SkipTranscoder, "
                         "JumpReLUTranscoder, JumpReLUSkipTranscoder)")
    if not isinstance(cfg.get("k"), int) or cfg["k"] < 1:
        raise ValueError(f"{cfg_file} has k={cfg.get('k')!r}; expected a whole number >= 1")
    try:
        state = load_file(str(weights_file))
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"{weights_file} cannot be read as safetensors ({exc})") from None
    _check_keys(state, _SPARSIFY_KEYS, weights_file, "sparsify SparseCoder")
    enc_w, enc_b, w_dec, b_dec = (state[k] for k in ("encoder.weight", "encoder.bias", "W_dec",
                                                     "b_dec"))
    d_in, d_sae = _shapes(weights_file, "SparseCoder", enc_w, w_dec, False,
                          {"encoder.bias": enc_b, "b_dec": b_dec})
    if "d_in" in cfg and cfg["d_in"] != d_in:
        raise ValueError(f"{cfg_file} says d_in={cfg['d_in']} but the weights have {d_in}")
    if cfg["k"] > d_sae:
        raise ValueError(f"{cfg_file} has k={cfg['k']} but the SAE has {d_sae} latents")
    sae_cfg = TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=cfg["k"],
                            rescale_acts_by_decoder_norm=False,
                            metadata=SAEMetadata(hook_name=hook_name))
    params = {"W_enc": enc_w.T, "b_enc": enc_b, "W_dec": w_dec, "b_dec": b_dec}
    return _build(TopKSAE, sae_cfg, params), "SparseCoder"

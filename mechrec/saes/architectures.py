"""From our :class:`SAETrainingConfig` to sae-lens training SAEs, and back to inference SAEs.

Architecture name -> sae-lens training class:

==============  =========================  ============================  =======================
ours            sae-lens training SAE      sparsity hyperparameter       saved (inference) as
==============  =========================  ============================  =======================
``standard``    ``StandardTrainingSAE``    ``l1_coefficient``            ``standard``
``topk``        ``TopKTrainingSAE``        ``k`` (per row)               ``topk``
``batchtopk``   ``BatchTopKTrainingSAE``   ``k`` (mean per row)          ``jumprelu``
``jumprelu``    ``JumpReLUTrainingSAE``    ``l0_coefficient``/target L0  ``jumprelu``
``gated``       ``GatedTrainingSAE``       ``l1_coefficient``            ``gated``
==============  =========================  ============================  =======================

Any other architecture in sae-lens' training registry (e.g. ``matryoshka_batchtopk``,
saved as ``jumprelu``) is built from ``sae_lens.registry.get_sae_training_class``; see
:mod:`mechrec.saes.registry`.
"""

from __future__ import annotations

from typing import Any

import torch
from sae_lens import (
    SAE,
    BatchTopKTrainingSAE,
    BatchTopKTrainingSAEConfig,
    GatedTrainingSAE,
    GatedTrainingSAEConfig,
    JumpReLUTrainingSAE,
    JumpReLUTrainingSAEConfig,
    StandardTrainingSAE,
    StandardTrainingSAEConfig,
    TopKTrainingSAE,
    TopKTrainingSAEConfig,
    TrainingSAE,
)
from sae_lens.saes.sae import SAEMetadata

from mechrec.saes.config import ARCHITECTURES, SAETrainingConfig
from mechrec.saes.registry import option_fields, training_classes

#: Parameters indexed by feature, and along which axis (for resampling dead features).
FEATURE_AXES: dict[str, int] = {
    "W_enc": 1,
    "W_dec": 0,
    "b_enc": 0,
    "b_gate": 0,
    "b_mag": 0,
    "r_mag": 0,
    "threshold": 0,
}
#: Architectures whose inference SAE gets its decoder norms folded into the encoder after
#: training (TopK/BatchTopK are folded by sae-lens when converting to inference).
_FOLD_AFTER_TRAINING = ("standard", "gated", "jumprelu")


def _common(cfg: SAETrainingConfig, d_in: int, hook_name: str) -> dict[str, Any]:
    return {
        "d_in": d_in,
        "d_sae": cfg.d_sae,
        "device": cfg.device,
        "decoder_init_norm": cfg.decoder_init_norm,
        "metadata": SAEMetadata(hook_name=hook_name),
    }


def _mechrec_kwargs(cfg: SAETrainingConfig) -> tuple[type[TrainingSAE], type, dict[str, Any]]:
    """sae-lens classes and config arguments of one of mechrec's five architectures."""
    arch = cfg.architecture
    if arch in ("standard", "gated"):
        kwargs: dict[str, Any] = {"l1_coefficient": cfg.l1_coefficient,
                                  "l1_warm_up_steps": cfg.sparsity_warm_up_steps}
        if arch == "standard":
            return StandardTrainingSAE, StandardTrainingSAEConfig, kwargs
        return GatedTrainingSAE, GatedTrainingSAEConfig, kwargs
    if arch in ("topk", "batchtopk"):
        kwargs = {"aux_loss_coefficient": cfg.aux_loss_coefficient,
                  "rescale_acts_by_decoder_norm": True}
        if arch == "topk":
            return TopKTrainingSAE, TopKTrainingSAEConfig, {**kwargs, "k": max(1, round(cfg.k))}
        return BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig, {**kwargs, "k": float(cfg.k)}
    if arch == "jumprelu":
        return JumpReLUTrainingSAE, JumpReLUTrainingSAEConfig, {
            "l0_coefficient": cfg.l0_coefficient,
            "l0_warm_up_steps": cfg.sparsity_warm_up_steps,
            "jumprelu_bandwidth": cfg.jumprelu_bandwidth,
            "jumprelu_init_threshold": cfg.jumprelu_init_threshold,
            "jumprelu_sparsity_loss_mode": "quadratic" if cfg.target_l0 is not None else "step",
            "target_l0": cfg.target_l0,
            "pre_act_loss_coefficient": cfg.pre_act_loss_coefficient,
        }
    raise ValueError(f"unknown SAE architecture {arch!r}")


#: Fields of :class:`SAETrainingConfig` passed to a registry architecture's sae-lens config
#: when it has a field of that name (its own name there, if different).
_SHARED_FIELDS: dict[str, str] = {
    "k": "k",
    "l1_coefficient": "l1_coefficient",
    "l0_coefficient": "l0_coefficient",
    "aux_loss_coefficient": "aux_loss_coefficient",
    "jumprelu_bandwidth": "jumprelu_bandwidth",
    "jumprelu_init_threshold": "jumprelu_init_threshold",
    "pre_act_loss_coefficient": "pre_act_loss_coefficient",
    "target_l0": "target_l0",
    "sparsity_warm_up_steps": "l1_warm_up_steps",
}


def _registry_kwargs(cfg: SAETrainingConfig) -> tuple[type[TrainingSAE], type, dict[str, Any]]:
    """sae-lens classes and config arguments of an architecture from sae-lens' registry."""
    training_cls, config_cls = training_classes(cfg.architecture)
    valid = option_fields(cfg.architecture)
    kwargs: dict[str, Any] = {}
    for ours, theirs in _SHARED_FIELDS.items():
        if theirs in valid:
            value = getattr(cfg, ours)
            if theirs == "k" and "int" in str(valid[theirs].type) and "float" not in str(
                    valid[theirs].type):
                value = max(1, round(value))
            kwargs[theirs] = value
    if "l0_warm_up_steps" in valid:
        kwargs["l0_warm_up_steps"] = cfg.sparsity_warm_up_steps
    if "rescale_acts_by_decoder_norm" in valid:  # as mechrec's TopK/BatchTopK
        kwargs["rescale_acts_by_decoder_norm"] = True
    return training_cls, config_cls, kwargs


def build_training_sae(cfg: SAETrainingConfig, d_in: int, hook_name: str) -> TrainingSAE:
    """A freshly initialised sae-lens training SAE for ``cfg`` (uses the global torch RNG).

    mechrec's five architectures get the arguments in the table above; any other name is
    looked up in sae-lens' training registry (:mod:`mechrec.saes.registry`) and gets the
    fields of ``cfg`` its config class shares. ``cfg.architecture_options`` then override.

    Raises:
        ValueError: an unknown architecture, or the sae-lens config refuses the arguments
            (e.g. a required option missing); the message says which.
    """
    if cfg.architecture in ARCHITECTURES:
        training_cls, config_cls, kwargs = _mechrec_kwargs(cfg)
    else:
        training_cls, config_cls, kwargs = _registry_kwargs(cfg)
    kwargs = {**_common(cfg, d_in, hook_name), **kwargs, **cfg.architecture_options}
    try:
        return training_cls(config_cls(**kwargs))
    except (TypeError, ValueError, AssertionError) as exc:
        raise ValueError(
            f"sae-lens' {config_cls.__name__} refuses these settings for {cfg.architecture!r} "
            f"({type(exc).__name__}: {' '.join(str(exc).split())[:300]}); set its options "
            f"in architecture_options (valid: {', '.join(sorted(option_fields(cfg.architecture)))})"
        ) from None


@torch.no_grad()
def to_inference_sae(training_sae: TrainingSAE, architecture: str) -> SAE:
    """The inference sae-lens SAE equivalent to ``training_sae``, decoder rows of unit norm.

    Uses sae-lens' own conversion (``process_state_dict_for_saving_inference`` and
    ``get_inference_sae_cfg_dict``: BatchTopK becomes JumpReLU with the learnt global
    threshold; TopK gets its decoder norms folded), then folds the decoder norms of the
    other architectures, which leaves reconstructions unchanged and puts feature activations
    in unit-decoder units.
    """
    state = {k: v.detach().clone() for k, v in training_sae.state_dict().items()}
    training_sae.process_state_dict_for_saving_inference(state)
    cfg_dict = training_sae.cfg.get_inference_sae_cfg_dict()
    sae = SAE.from_dict(cfg_dict)
    sae.load_state_dict(state)
    if architecture in _FOLD_AFTER_TRAINING:
        sae.fold_W_dec_norm()
    sae.eval()
    return sae

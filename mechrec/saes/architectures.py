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

from mechrec.saes.config import SAETrainingConfig

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


def build_training_sae(cfg: SAETrainingConfig, d_in: int, hook_name: str) -> TrainingSAE:
    """A freshly initialised sae-lens training SAE for ``cfg`` (uses the global torch RNG)."""
    common = _common(cfg, d_in, hook_name)
    arch = cfg.architecture
    if arch == "standard":
        return StandardTrainingSAE(
            StandardTrainingSAEConfig(
                l1_coefficient=cfg.l1_coefficient,
                l1_warm_up_steps=cfg.sparsity_warm_up_steps,
                **common,
            )
        )
    if arch == "gated":
        return GatedTrainingSAE(
            GatedTrainingSAEConfig(
                l1_coefficient=cfg.l1_coefficient,
                l1_warm_up_steps=cfg.sparsity_warm_up_steps,
                **common,
            )
        )
    if arch == "topk":
        return TopKTrainingSAE(
            TopKTrainingSAEConfig(
                k=max(1, round(cfg.k)),
                aux_loss_coefficient=cfg.aux_loss_coefficient,
                rescale_acts_by_decoder_norm=True,
                **common,
            )
        )
    if arch == "batchtopk":
        return BatchTopKTrainingSAE(
            BatchTopKTrainingSAEConfig(
                k=float(cfg.k),
                aux_loss_coefficient=cfg.aux_loss_coefficient,
                rescale_acts_by_decoder_norm=True,
                **common,
            )
        )
    if arch == "jumprelu":
        return JumpReLUTrainingSAE(
            JumpReLUTrainingSAEConfig(
                l0_coefficient=cfg.l0_coefficient,
                l0_warm_up_steps=cfg.sparsity_warm_up_steps,
                jumprelu_bandwidth=cfg.jumprelu_bandwidth,
                jumprelu_init_threshold=cfg.jumprelu_init_threshold,
                jumprelu_sparsity_loss_mode="quadratic" if cfg.target_l0 is not None else "step",
                target_l0=cfg.target_l0,
                pre_act_loss_coefficient=cfg.pre_act_loss_coefficient,
                **common,
            )
        )
    raise ValueError(f"unknown SAE architecture {arch!r}")


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

"""SAE architectures through sae-lens' own registry of training classes.

Besides mechrec's five names (:data:`mechrec.saes.config.ARCHITECTURES`), an
:class:`~mechrec.saes.config.SAETrainingConfig` may name any architecture registered in
``sae_lens.registry.SAE_TRAINING_CLASS_REGISTRY`` (e.g. ``"matryoshka_batchtopk"``,
``"abstopk"``, ``"matching_pursuit"`` in sae-lens 6.x, or one registered by the user with
``sae_lens.registry.register_sae_training_class``). Its ``architecture_options`` are
fields of that architecture's sae-lens training config class (e.g. ``matryoshka_widths``),
checked by name. sae-lens is imported only when these functions run.
"""

from __future__ import annotations

import dataclasses
from typing import Any

#: Fields of sae-lens training configs that mechrec sets itself, from the activations and
#: the run, so they cannot be options.
RESERVED_OPTIONS: frozenset[str] = frozenset({"d_in", "d_sae", "device", "dtype", "metadata"})


def registered_architectures() -> tuple[str, ...]:
    """Names of the training architectures sae-lens has registered (sorted)."""
    import sae_lens  # noqa: F401 - registers the built-in architectures on import
    from sae_lens.registry import SAE_TRAINING_CLASS_REGISTRY

    return tuple(sorted(SAE_TRAINING_CLASS_REGISTRY))


def training_classes(architecture: str) -> tuple[type, type]:
    """``(training SAE class, training config class)`` sae-lens registers for ``architecture``.

    Raises:
        ValueError: sae-lens registers no such architecture; the message lists those it has.
    """
    from sae_lens.registry import SAE_TRAINING_CLASS_REGISTRY

    known = registered_architectures()
    if "transcoder" in str(architecture) and architecture not in SAE_TRAINING_CLASS_REGISTRY:
        raise ValueError(
            f"mechrec cannot train a {architecture!r}: transcoders are load-and-analyse only "
            "(sae-lens registers no transcoder training class, and mechrec's trainer reads "
            "one hook). Train it elsewhere, save it as a sae-lens folder (save_model) and "
            "load it with NormalizedSAE.load(path), which reads its hook_name and "
            "hook_name_out"
        )
    if architecture not in SAE_TRAINING_CLASS_REGISTRY:
        raise ValueError(
            f"unknown SAE architecture {architecture!r}; choose one of mechrec's (standard, "
            f"topk, batchtopk, jumprelu, gated) or one sae-lens registers: {', '.join(known)}"
        )
    return SAE_TRAINING_CLASS_REGISTRY[architecture]


def option_fields(architecture: str) -> dict[str, dataclasses.Field[Any]]:
    """The settable fields of ``architecture``'s sae-lens training config, by name."""
    _, config_cls = training_classes(architecture)
    return {f.name: f for f in dataclasses.fields(config_cls)
            if f.init and f.name not in RESERVED_OPTIONS}


def check_options(architecture: str, options: dict[str, Any]) -> None:
    """Check ``options`` are fields of ``architecture``'s sae-lens training config.

    Raises:
        ValueError: an unknown or reserved option; the message lists the valid ones.
    """
    if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
        raise ValueError(f"architecture_options must be a dict of option names, got "
                         f"{options!r}")
    valid = option_fields(architecture)
    reserved = sorted(set(options) & RESERVED_OPTIONS)
    if reserved:
        raise ValueError(f"architecture_options {reserved} are set by mechrec (d_sae is a "
                         "field of SAETrainingConfig; the rest come from the activations)")
    unknown = sorted(set(options) - set(valid))
    if unknown:
        _, config_cls = training_classes(architecture)
        raise ValueError(
            f"unknown architecture_options {unknown} for {architecture!r} (sae-lens "
            f"{config_cls.__name__}); valid options: {', '.join(sorted(valid))}"
        )


def has_field(architecture: str, name: str) -> bool:
    """Whether ``architecture``'s sae-lens training config has a field ``name``."""
    return name in option_fields(architecture)

"""mechrec: mechanistic interpretability for any TransformerLens ``HookedTransformer``.

The core collects activations at any hook point, trains sparse autoencoders through
sae-lens, measures how features align with attributes, and steers the model by editing
features or adding directions. It knows nothing about any application domain; adapters
such as :mod:`mechrec_recsys` supply data, models and task metrics.

The whole recipe on any model (``tokens_*``: token tensors, ``attributes``: a 0/1 table with
one row per token id)::

    from mechrec import SAETrainingConfig, TokenStudy, align, attribute_sweep, train_sae

    study = TokenStudy(model, {"fit": tokens_a, "eval": tokens_b}, attributes)
    sae = train_sae(study.activations("fit", hook), SAETrainingConfig(architecture="topk")).sae
    run = align(study, sae, select="fit", score="eval")      # honest: chosen on fit rows
    sweep = attribute_sweep(study, sae, ["topic=food"], select="fit", score="eval",
                            values=[-8, 0, 8])
"""

from mechrec._lazy import lazy_exports

__version__ = "0.1.0"

#: The front door: what a first script needs, imported on first use (``import mechrec`` stays
#: light). Everything else lives in the subpackages (``mechrec.alignment``, ``mechrec.saes``,
#: ``mechrec.steering``, ...).
_EXPORTS: dict[str, str] = {
    "Study": "study",
    "TokenStudy": "study",
    "collect_activations": "activations",
    "SAETrainingConfig": "saes",
    "NormalizedSAE": "saes",
    "train_sae": "saes",
    "align": "alignment",
    "FeatureAlignment": "alignment",
    "attribute_sweep": "attribute_steering",
    "resolve_hook": "hooks",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)

"""mechrec: mechanistic interpretability for any TransformerLens ``HookedTransformer``.

The core collects activations at any hook point, trains sparse autoencoders through
sae-lens, measures how features align with attributes, and steers the model by editing
features or adding directions. It knows nothing about any application domain; adapters
such as :mod:`mechrec_recsys` supply data, models and task metrics.
"""

__version__ = "0.1.0"

"""Activations at a hook point: collection, in-memory sets, sharded on-disk stores.

>>> acts = collect_activations(model, batches, "blocks.0.hook_resid_post")
>>> normalizer = fit_normalizer(acts, "per_dim")
"""

from mechrec.activations.collect import (
    DEFAULT_SHARD_ROWS,
    collect_activations,
    iter_batch_activations,
)
from mechrec.activations.sets import (
    ActivationSet,
    ActivationSource,
    check_not_empty,
    fit_normalizer,
    iter_batches,
    iter_chunks,
)
from mechrec.activations.store import ActivationStore, bytes_per_row

__all__ = [
    "DEFAULT_SHARD_ROWS",
    "ActivationSet",
    "ActivationSource",
    "ActivationStore",
    "bytes_per_row",
    "check_not_empty",
    "collect_activations",
    "fit_normalizer",
    "iter_batch_activations",
    "iter_batches",
    "iter_chunks",
]

"""Synthetic worlds with planted structure: interaction sequences over a real catalog whose
generating factors are known and saved with the data.

Typical use::

    from mechrec_recsys.synthetic import SynthConfig, generate_world, load_world, read_truth
    from mechrec_recsys.synthetic import read_catalog

    catalog = read_catalog("ml-20m-catalog/movies.csv")
    generate_world(SynthConfig.preset("ml-1m", seed=0), catalog, "worlds/ml-1m-s0")
    dataset = load_world("worlds/ml-1m-s0")          # a Dataset: splits, training, ...
    truth = read_truth("worlds/ml-1m-s0")            # latent genre per event, tastes per user

See ``docs/synthetic.md`` for the generative model, the files and measured costs.
"""

from mechrec_recsys.synthetic.catalog import default_catalog_path, read_catalog
from mechrec_recsys.synthetic.config import (
    PRESETS,
    SizePreset,
    SynthConfig,
    fit_length_distribution,
    solve_length_mu,
)
from mechrec_recsys.synthetic.files import (
    INTERACTION_COLUMNS,
    WorldSummary,
    WorldTruth,
    generate_world,
    load_world,
    read_info,
    read_truth,
)
from mechrec_recsys.synthetic.franchises import find_franchises
from mechrec_recsys.synthetic.world import (
    KIND_FRANCHISE,
    KIND_NAMES,
    KIND_POPULAR,
    KIND_TASTE,
    WorldCatalog,
    prepare_catalog,
)

__all__ = [
    "INTERACTION_COLUMNS",
    "KIND_FRANCHISE",
    "KIND_NAMES",
    "KIND_POPULAR",
    "KIND_TASTE",
    "PRESETS",
    "SizePreset",
    "SynthConfig",
    "WorldCatalog",
    "WorldSummary",
    "WorldTruth",
    "default_catalog_path",
    "find_franchises",
    "fit_length_distribution",
    "generate_world",
    "load_world",
    "prepare_catalog",
    "read_catalog",
    "read_info",
    "read_truth",
    "solve_length_mu",
]

"""The recommender data layer: MovieLens and generic loaders, download, splits, statistics.

See ``docs/architecture.md`` for the contract. Typical use::

    from mechrec_recsys.data import load_dataset, paper_split, dataset_statistics

    dataset = load_dataset("ml-100k")          # data_dir > $MECHREC_DATA > cache > download
    split = paper_split(dataset, seed=0, max_len=200)
    print(dataset_statistics(dataset, split))
"""

from mechrec._lazy import lazy_exports

#: Public name -> the submodule defining it; each is imported on first use, so importing
#: this package (or one light submodule of it) does not load torch.
_EXPORTS: dict[str, str] = {
    "ItemCatalog": "catalog",
    "parse_year": "catalog",
    "Dataset": "dataset",
    "default_cache_dir": "download",
    "download_dataset": "download",
    "resolve_dataset_dir": "download",
    "ChecksumError": "errors",
    "DataError": "errors",
    "DataFormatError": "errors",
    "DatasetNotFoundError": "errors",
    "EmptyDatasetError": "errors",
    "MissingTimestampsError": "errors",
    "load_generic": "generic",
    "load_local_dataset": "local",
    "load_dataset": "movielens",
    "load_movielens": "movielens",
    "read_movielens_catalog": "movielens",
    "TIE_BREAKS": "ordering",
    "UserHistories": "ordering",
    "order_events": "ordering",
    "DATASET_NAMES": "registry",
    "LOCAL_DATASETS": "registry",
    "LocalDataset": "registry",
    "MovieLensRelease": "registry",
    "RELEASES": "registry",
    "LoadReport": "report",
    "SPLIT_KINDS": "splits",
    "Split": "splits",
    "leave_one_out_split": "splits",
    "make_split": "splits",
    "paper_split": "splits",
    "random_user_split": "splits",
    "dataset_statistics": "stats",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)

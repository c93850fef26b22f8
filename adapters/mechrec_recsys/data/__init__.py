"""The recommender data layer: MovieLens and generic loaders, download, splits, statistics.

See ``docs/architecture.md`` for the contract. Typical use::

    from mechrec_recsys.data import load_dataset, paper_split, dataset_statistics

    dataset = load_dataset("ml-100k")          # data_dir > $MECHREC_DATA > cache > download
    split = paper_split(dataset, seed=0, max_len=200)
    print(dataset_statistics(dataset, split))
"""

from mechrec_recsys.data.catalog import ItemCatalog, parse_year
from mechrec_recsys.data.dataset import Dataset
from mechrec_recsys.data.download import (
    default_cache_dir,
    download_dataset,
    resolve_dataset_dir,
)
from mechrec_recsys.data.errors import (
    ChecksumError,
    DataError,
    DataFormatError,
    DatasetNotFoundError,
    EmptyDatasetError,
    MissingTimestampsError,
)
from mechrec_recsys.data.generic import load_generic
from mechrec_recsys.data.local import load_local_dataset
from mechrec_recsys.data.movielens import load_dataset, load_movielens, read_movielens_catalog
from mechrec_recsys.data.ordering import TIE_BREAKS, UserHistories, order_events
from mechrec_recsys.data.registry import (
    DATASET_NAMES,
    LOCAL_DATASETS,
    RELEASES,
    LocalDataset,
    MovieLensRelease,
)
from mechrec_recsys.data.report import LoadReport
from mechrec_recsys.data.splits import (
    SPLIT_KINDS,
    Split,
    leave_one_out_split,
    make_split,
    paper_split,
    random_user_split,
)
from mechrec_recsys.data.stats import dataset_statistics

__all__ = [
    "DATASET_NAMES",
    "LOCAL_DATASETS",
    "RELEASES",
    "SPLIT_KINDS",
    "TIE_BREAKS",
    "ChecksumError",
    "DataError",
    "DataFormatError",
    "Dataset",
    "DatasetNotFoundError",
    "EmptyDatasetError",
    "ItemCatalog",
    "LoadReport",
    "LocalDataset",
    "MissingTimestampsError",
    "MovieLensRelease",
    "Split",
    "UserHistories",
    "dataset_statistics",
    "default_cache_dir",
    "download_dataset",
    "leave_one_out_split",
    "load_dataset",
    "load_generic",
    "load_local_dataset",
    "load_movielens",
    "make_split",
    "order_events",
    "paper_split",
    "parse_year",
    "random_user_split",
    "read_movielens_catalog",
    "resolve_dataset_dir",
]

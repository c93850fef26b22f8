"""The official MovieLens releases: files, layouts, download URLs and published checksums.

Checksum sources (looked up, never computed from our own copies):

* SHA-256 and sizes of ml-100k, ml-1m, ml-20m, ml-25m and ml-latest-small: the
  ``url_checksums/movielens.txt`` file of TensorFlow Datasets (tensorflow/datasets).
* ml-10m: no published SHA-256 was found. GroupLens publishes an MD5 beside each zip
  (``ml-10m.zip.md5``); its value ``ce571fd55effeba0271552578f2648bd`` is quoted identically by
  independent projects, and the archive is verified against it.
* ml-latest: GroupLens regenerates this archive from time to time, so no fixed checksum can
  exist. It is downloaded unverified with a warning, and the SHA-256 it had is recorded in the
  cache (``.mechrec-download.json``) so later runs can tell which version they read.
"""

from __future__ import annotations

from dataclasses import dataclass

BASE_URL = "https://files.grouplens.org/datasets/movielens"

TFDS_SOURCE = "TensorFlow Datasets, tensorflow_datasets/url_checksums/movielens.txt"
GROUPLENS_MD5_SOURCE = "GroupLens' published ml-10m.zip.md5 (no SHA-256 published)"

#: Genres of ml-1m (README of ml-1m; "Children's" with an apostrophe, no IMAX).
ML1M_GENRES: tuple[str, ...] = (
    "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)

#: Genre labels of ml-10m and later releases, including "IMAX" and the label
#: "(no genres listed)", which is kept as a column of its own (like ml-100k's "unknown").
MODERN_GENRES: tuple[str, ...] = (
    "Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "IMAX", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western", "(no genres listed)",
)


@dataclass(frozen=True)
class MovieLensRelease:
    """One official MovieLens release.

    Attributes:
        name: our name for it, e.g. ``"ml-100k"``.
        layout: ``"ml-100k"`` (``u.data``/``u.item``/``u.genre``), ``"dat"`` (``::``-separated
            ``ratings.dat``/``movies.dat``) or ``"csv"`` (``ratings.csv``/``movies.csv``).
        required_files: files a local copy must contain.
        url: the official zip.
        archive_folder: the top-level folder inside the zip.
        folder_aliases: folder names accepted for a local copy (the first is the cache name).
        sha256: published SHA-256 of the zip, or ``None`` where none is published.
        md5: published MD5 of the zip, used only where no SHA-256 is known.
        size: published size of the zip in bytes, or ``None``.
        checksum_source: where the checksum comes from.
        genres: the official genre labels (``None`` for ml-100k, whose ``u.genre`` lists them).
    """

    name: str
    layout: str
    required_files: tuple[str, ...]
    url: str
    archive_folder: str
    folder_aliases: tuple[str, ...]
    sha256: str | None
    md5: str | None
    size: int | None
    checksum_source: str
    genres: tuple[str, ...] | None


def _csv_release(name: str, sha256: str | None, size: int | None, source: str
                 ) -> MovieLensRelease:
    return MovieLensRelease(
        name=name, layout="csv", required_files=("ratings.csv", "movies.csv"),
        url=f"{BASE_URL}/{name}.zip", archive_folder=name, folder_aliases=(name,),
        sha256=sha256, md5=None, size=size, checksum_source=source, genres=MODERN_GENRES,
    )


RELEASES: dict[str, MovieLensRelease] = {
    "ml-100k": MovieLensRelease(
        name="ml-100k", layout="ml-100k", required_files=("u.data", "u.item", "u.genre"),
        url=f"{BASE_URL}/ml-100k.zip", archive_folder="ml-100k", folder_aliases=("ml-100k",),
        sha256="50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229", md5=None,
        size=4924029, checksum_source=TFDS_SOURCE, genres=None,
    ),
    "ml-1m": MovieLensRelease(
        name="ml-1m", layout="dat", required_files=("ratings.dat", "movies.dat"),
        url=f"{BASE_URL}/ml-1m.zip", archive_folder="ml-1m", folder_aliases=("ml-1m",),
        sha256="a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20", md5=None,
        size=5917549, checksum_source=TFDS_SOURCE, genres=ML1M_GENRES,
    ),
    "ml-10m": MovieLensRelease(
        name="ml-10m", layout="dat", required_files=("ratings.dat", "movies.dat"),
        url=f"{BASE_URL}/ml-10m.zip", archive_folder="ml-10M100K",
        folder_aliases=("ml-10m", "ml-10M100K"), sha256=None,
        md5="ce571fd55effeba0271552578f2648bd", size=None,
        checksum_source=GROUPLENS_MD5_SOURCE, genres=MODERN_GENRES,
    ),
    "ml-20m": _csv_release(
        "ml-20m", "96f243c338a8665f6bcc89c53edf6ee39162a846940de6b7c8c48aeada765ff3",
        198702078, TFDS_SOURCE),
    "ml-25m": _csv_release(
        "ml-25m", "8b21cfb7eb1706b4ec0aac894368d90acf26ebdfb6aced3ebd4ad5bd1eb9c6aa",
        261978986, TFDS_SOURCE),
    "ml-latest": _csv_release(
        "ml-latest", None, None,
        "none: GroupLens regenerates ml-latest, so no fixed checksum exists"),
    "ml-latest-small": _csv_release(
        "ml-latest-small", "696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436",
        978202, TFDS_SOURCE),
}



@dataclass(frozen=True)
class LocalDataset:
    """A named dataset that is read from a local folder only and never downloaded.

    Such copies are not official GroupLens releases (so there is nothing to download and no
    published checksum); they load through :func:`~mechrec_recsys.data.load_generic`.

    Attributes:
        name: our name for it, e.g. ``"ml-1m-ordered"``.
        interactions_file: the parquet file with one event per row.
        item_file: the official item file the catalog is read from.
        catalog_release: the official release whose item-file layout ``item_file`` has.
        columns: ``load_generic``'s column mapping for ``interactions_file``.
        imputed_flag: a boolean column of ``interactions_file`` marking imputed timestamps
            (counted in the load report), or ``None``.
        folder_aliases: folder names accepted for the copy (the first is the canonical one).
        description: one line for ``mechrec data list``.
    """

    name: str
    interactions_file: str
    item_file: str
    catalog_release: str
    columns: tuple[tuple[str, str], ...]
    imputed_flag: str | None
    folder_aliases: tuple[str, ...]
    description: str

    @property
    def required_files(self) -> tuple[str, ...]:
        """Files a local copy must contain."""
        return (self.interactions_file, self.item_file)


LOCAL_DATASETS: dict[str, LocalDataset] = {
    "ml-1m-ordered": LocalDataset(
        name="ml-1m-ordered", interactions_file="interactions.parquet", item_file="movies.dat",
        catalog_release="ml-1m",
        columns=(("user_id", "user_id"), ("item_id", "item_id"), ("timestamp", "timestamp"),
                 ("order", "position")),
        imputed_flag="timestamp_imputed", folder_aliases=("ml-1m-ordered",),
        description="all 1,000,209 ml-1m ratings in each user's time order ('position'), "
                    "from $MECHREC_DATA or --data-dir only (never downloaded)",
    ),
}

#: Every dataset name :func:`~mechrec_recsys.data.load_dataset` knows: the official releases,
#: then the local-only copies.
DATASET_NAMES: tuple[str, ...] = tuple(RELEASES) + tuple(LOCAL_DATASETS)


def get_release(name: str) -> MovieLensRelease:
    """The official release called ``name``; raises ValueError listing the known names
    otherwise (and saying so when ``name`` is a local-only dataset, which has no release)."""
    try:
        return RELEASES[name]
    except KeyError:
        if name in LOCAL_DATASETS:
            raise ValueError(
                f"{name} is a local-only copy, not an official GroupLens release, so it cannot "
                "be downloaded. Fix: put its folder under $MECHREC_DATA (or pass --data-dir / "
                "data_dir); for the official data use 'ml-1m'") from None
        raise ValueError(
            f"unknown dataset {name!r}; known datasets: {', '.join(DATASET_NAMES)} "
            "(other data loads through load_generic)"
        ) from None

"""Loading the real MovieLens files in ../shared/data through the official-layout loaders."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mechrec_recsys.data import (
    RELEASES,
    DatasetNotFoundError,
    ItemCatalog,
    load_dataset,
    parse_year,
    read_movielens_catalog,
)
from mechrec_recsys.data.generic import load_generic
from mechrec_recsys.data.registry import ML1M_GENRES, MODERN_GENRES
from mechrec_recsys.vocab import ItemVocab

ML100K_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
]


@pytest.fixture(scope="module")
def ml100k(data_dir):
    return load_dataset("ml-100k", data_dir, download=False)


@pytest.fixture(scope="module")
def latest_small(data_dir):
    return load_dataset("ml-latest-small", data_dir, download=False)


@pytest.fixture(scope="module")
def ml1m_pairs(data_dir):
    folder = data_dir / "ml-1m-unordered"
    catalog = read_movielens_catalog(folder / "movies.dat", "ml-1m")
    return load_generic(folder / "ratings_user_item_pairs.parquet",
                        columns={"user_id": "userID", "item_id": "movieID"},
                        catalog=catalog, name="ml-1m-unordered")


def test_ml100k_counts(ml100k):
    assert ml100k.num_users == 943
    assert ml100k.num_items == 1682
    assert ml100k.num_interactions == 100_000
    assert len(ml100k.catalog) == 1682
    assert ml100k.catalog.genre_names == ML100K_GENRES
    assert ml100k.has_timestamps
    assert list(ml100k.interactions.columns) == ["user_id", "item_id", "timestamp", "rating"]
    assert ml100k.report.rows_read == ml100k.report.rows_kept == 100_000
    assert ml100k.report.total_dropped == 0


def test_ml100k_catalog_values(ml100k):
    items = ml100k.catalog.items
    assert items.loc[1, "title"] == "Toy Story (1995)"
    assert items.loc[1, "year"] == 1995
    genres = ml100k.catalog.genres
    assert set(genres.columns[genres.loc[1]]) == {"Animation", "Children's", "Comedy"}
    # latin-1 characters survive (u.item is latin-1, not UTF-8)
    assert any("é" in t for t in items["title"])
    assert ml100k.report.encodings[str(next(p for p in ml100k.report.files
                                            if p.endswith("u.item")))] == "latin-1"
    # item 267 is titled "unknown" with no date: missing year, kept title
    assert items.loc[267, "title"] == "unknown"
    assert pd.isna(items.loc[267, "year"])
    # item 1412's title is cut before its year: the release date supplies it, and says so
    assert items.loc[1412, "year"] == 1995
    assert any("release date" in note for note in ml100k.report.notes)
    assert int(genres["unknown"].sum()) >= 1


def test_ml100k_interactions_values(ml100k):
    first = ml100k.interactions.iloc[0]
    assert (first["user_id"], first["item_id"], first["rating"], first["timestamp"]) == (
        196, 242, 3.0, 881250949)
    assert ml100k.interactions["rating"].between(1, 5).all()


def test_latest_small_counts_and_genres(latest_small):
    assert latest_small.num_users == 610
    assert len(latest_small.catalog) == 9742
    assert latest_small.num_items == 9724
    assert latest_small.num_interactions == 100_836
    assert latest_small.catalog.genre_names == list(MODERN_GENRES)
    assert len(latest_small.catalog.genre_names) == 20
    assert latest_small.report.unknown_genres == {}
    counts = latest_small.catalog.genres.sum()
    assert counts["IMAX"] == 158 and counts["(no genres listed)"] == 34
    assert counts["Drama"] == 4361


def test_latest_small_titles_not_mangled(latest_small):
    titles = latest_small.catalog.items["title"]
    # the comma inside a quoted CSV title is kept, and so is a trailing space
    assert titles.loc[11] == "American President, The (1995)"
    assert (titles.str.endswith(" ")).sum() > 0
    years = latest_small.catalog.items["year"]
    assert years.loc[1] == 1995
    no_year = titles[years.isna()]
    assert "Babylon 5" in set(no_year)
    assert int(years.isna().sum()) == 12  # "Death Note: Desu nôto (2006–2007)" parses to 2006


def test_ml1m_pairs_through_generic_loader(ml1m_pairs):
    assert ml1m_pairs.num_users == 6040
    assert ml1m_pairs.num_items == 3706
    assert ml1m_pairs.num_interactions == 1_000_209
    assert len(ml1m_pairs.catalog) == 3883
    assert ml1m_pairs.catalog.genre_names == list(ML1M_GENRES)
    assert not ml1m_pairs.has_timestamps
    assert list(ml1m_pairs.interactions.columns) == ["user_id", "item_id"]
    # original file order is kept: user 1's first pair is movie 1193
    assert tuple(ml1m_pairs.interactions.iloc[0]) == (1, 1193)
    titles = ml1m_pairs.catalog.items["title"]
    assert titles.loc[73] == "Misérables, Les (1995)"


def test_attribute_matrix_aligns_with_tokens(ml100k):
    vocab = ml100k.vocab()
    assert vocab.num_items == 1682
    matrix = ml100k.catalog.attribute_matrix(vocab)
    assert matrix.shape == (1683, 19) and matrix.dtype == np.float32
    assert not matrix[0].any()
    token = int(vocab.to_tokens([1])[0])
    assert matrix[token].tolist() == ml100k.catalog.genres.loc[1].astype(float).tolist()
    two = ml100k.catalog.attribute_matrix(vocab, ["Comedy", "Drama"])
    assert two.shape == (1683, 2)
    assert np.array_equal(two[:, 0], matrix[:, ML100K_GENRES.index("Comedy")])
    with pytest.raises(ValueError, match="unknown attribute 'Comdy'"):
        ml100k.catalog.attribute_matrix(vocab, ["Comdy"])


def test_attribute_matrix_zero_rows_for_items_outside_catalog(ml100k):
    vocab = ItemVocab.from_items([1, 2, 99999])
    matrix = ml100k.catalog.attribute_matrix(vocab)
    assert matrix.shape == (4, 19)
    assert not matrix[3].any() and matrix[1].any()


def test_catalog_from_item_ids_has_no_attributes():
    catalog = ItemCatalog.from_item_ids([5, 3, 3])
    assert catalog.item_ids.tolist() == [3, 5]
    assert catalog.genre_names == []
    assert catalog.attribute_matrix(catalog.vocab()).shape == (3, 0)


@pytest.mark.parametrize(("title", "year"), [
    ("Toy Story (1995)", 1995),
    ("Scream of Stone (Schrei aus Stein) (1991)", 1991),
    ("From Dusk Till Dawn 2: Texas Blood Money (1999) ", 1999),
    ("Death Note: Desu nôto (2006–2007)", 2006),
    ("Babylon 5", None),
    ("unknown", None),
    ("1984 (1956)", 1956),
])
def test_parse_year(title, year):
    assert parse_year(title) == year


def test_release_registry_is_complete():
    assert set(RELEASES) == {"ml-100k", "ml-1m", "ml-10m", "ml-20m", "ml-25m", "ml-latest",
                             "ml-latest-small"}
    for release in RELEASES.values():
        assert release.url.startswith("https://files.grouplens.org/datasets/movielens/")
        assert release.url.endswith(f"/{release.name}.zip")
        if release.sha256 is not None:
            assert len(release.sha256) == 64
    assert RELEASES["ml-10m"].archive_folder == "ml-10M100K"


def test_unknown_dataset_name_lists_known_ones(data_dir):
    with pytest.raises(ValueError, match=r"known datasets: ml-100k.*ml-1m-ordered"):
        load_dataset("ml-3m", data_dir)


def test_explicit_data_dir_without_files_is_an_error_naming_url(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("ml-1m", tmp_path)
    message = str(info.value)
    assert "https://files.grouplens.org/datasets/movielens/ml-1m.zip" in message
    assert str(tmp_path / "ml-1m" / "ratings.dat") in message


def test_dataset_folder_itself_is_accepted(data_dir):
    dataset = load_dataset("ml-100k", data_dir / "ml-100k")
    assert dataset.num_interactions == 100_000

"""Bad input: every problem is a clear error naming file, line and fix, or a counted drop."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest
from mechrec_recsys.data import (
    DataFormatError,
    DatasetNotFoundError,
    EmptyDatasetError,
    load_movielens,
    read_movielens_catalog,
)
from mechrec_recsys.data.generic import load_generic

GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
          "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
          "Romance", "Sci-Fi", "Thriller", "War", "Western"]

GOOD_DATA = ["1\t10\t4\t100", "1\t11\t3\t101", "2\t10\t5\t102", "2\t12\t2\t103",
             "3\t11\t4\t104", "3\t12\t1\t105"]


def _flags(*names: str) -> str:
    return "|".join("1" if g in names else "0" for g in GENRES)


def write_ml100k(folder: Path, data_lines=GOOD_DATA, item_lines=None, genre_lines=None,
                 item_encoding="latin-1") -> Path:
    """A tiny ml-100k-layout folder: items 10, 11, 12 and the given u.data lines."""
    folder.mkdir(parents=True, exist_ok=True)
    if genre_lines is None:
        genre_lines = [f"{g}|{i}" for i, g in enumerate(GENRES)] + [""]
    (folder / "u.genre").write_text("\n".join(genre_lines) + "\n", encoding="latin-1")
    if item_lines is None:
        item_lines = [
            f"10|Café Society (1995)|01-Jan-1995||http://x|{_flags('Comedy', 'Drama')}",
            f"11|GoldenEye (1995)|01-Jan-1995||http://x|{_flags('Action')}",
            f"12|Heat (1995)|01-Jan-1995||http://x|{_flags('Crime', 'Thriller')}",
        ]
    (folder / "u.item").write_bytes(("\n".join(item_lines) + "\n").encode(item_encoding))
    (folder / "u.data").write_text("\n".join(data_lines) + "\n")
    return folder


def write_csv_layout(folder: Path, ratings: list[str], movies: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.csv").write_text("\n".join(ratings) + "\n")
    (folder / "movies.csv").write_text("\n".join(movies) + "\n", encoding="utf-8")
    return folder


MOVIES_CSV = ["movieId,title,genres", "1,Toy Story (1995),Adventure|Animation|Children",
              '2,"American President, The (1995)",Comedy|Drama|Romance',
              "3,Hyena Road,(no genres listed)"]
RATINGS_CSV = ["userId,movieId,rating,timestamp", "1,1,4.0,964982703", "1,2,3.5,964982704",
               "2,3,5.0,964982705", "2,1,1.0,964982706"]


def test_well_formed_tiny_copy_loads(tmp_path):
    dataset = load_movielens(write_ml100k(tmp_path / "ml-100k"), "ml-100k")
    assert dataset.num_interactions == 6 and dataset.report.total_dropped == 0
    assert dataset.catalog.items.loc[10, "title"] == "Café Society (1995)"
    assert dataset.catalog.genres.loc[12, "Thriller"]


def test_missing_file_names_it_and_the_url(tmp_path):
    folder = write_ml100k(tmp_path / "ml-100k")
    (folder / "u.item").unlink()
    with pytest.raises(DatasetNotFoundError) as info:
        load_movielens(folder, "ml-100k")
    assert "u.item" in str(info.value) and "ml-100k.zip" in str(info.value)
    with pytest.raises(FileNotFoundError, match="interactions file not found"):
        load_generic(tmp_path / "nope.csv", columns={"user_id": "u", "item_id": "i"})


def test_wrong_separator_is_named(tmp_path):
    folder = write_ml100k(tmp_path / "ml-100k", [line.replace("\t", ",") for line in GOOD_DATA])
    with pytest.raises(DataFormatError) as info:
        load_movielens(folder, "ml-100k")
    message = str(info.value)
    assert "u.data, line 1" in message and "expected 4 separated by tab" in message
    assert "looks comma-separated" in message and "Fix:" in message
    # dropping rows does not hide a wrong format: every row is bad
    with pytest.raises(DataFormatError, match="every row is malformed"):
        load_movielens(folder, "ml-100k", on_bad_rows="drop")


def test_generic_wrong_separator_in_header(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("user\titem\n1\t2\n")
    with pytest.raises(DataFormatError, match="looks tab-separated, pass sep='\\\\t'"):
        load_generic(path, columns={"user_id": "user", "item_id": "item"})


def test_non_integer_id_raises_with_line_then_drops_when_asked(tmp_path, caplog):
    lines = [*GOOD_DATA[:2], "x7\t10\t4\t100", *GOOD_DATA[2:]]
    folder = write_ml100k(tmp_path / "ml-100k", lines)
    with pytest.raises(DataFormatError) as info:
        load_movielens(folder, "ml-100k")
    message = str(info.value)
    assert "u.data, line 3" in message and "'x7' is not an integer" in message
    assert "on_bad_rows='drop'" in message
    with caplog.at_level(logging.WARNING, logger="mechrec_recsys.data"):
        dataset = load_movielens(folder, "ml-100k", on_bad_rows="drop")
    assert dataset.num_interactions == 6
    assert dataset.report.dropped == {"malformed_row": 1}
    assert "u.data line 3" in dataset.report.examples["malformed_row"][0]
    assert "dropped 1 malformed rows" in caplog.text


def test_missing_column_in_a_row(tmp_path):
    folder = write_ml100k(tmp_path / "ml-100k", [*GOOD_DATA, "4\t10\t3"])
    with pytest.raises(DataFormatError, match=r"u.data, line 7: has 3 fields, expected 4"):
        load_movielens(folder, "ml-100k")


def test_missing_column_in_csv_header(tmp_path):
    folder = write_csv_layout(tmp_path / "ml-latest-small",
                              ["userId,movieId,rating", "1,1,4.0"], MOVIES_CSV)
    with pytest.raises(DataFormatError) as info:
        load_movielens(folder, "ml-latest-small")
    assert "ratings.csv, line 1: header is 'userId,movieId,rating'" in str(info.value)
    assert "userId,movieId,rating,timestamp" in str(info.value)


def test_generic_mapping_to_absent_column(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("user,item,when\n1,2,3\n")
    with pytest.raises(DataFormatError, match=r"has no column 'time' \(for timestamp\); its "
                                              r"columns are \['user', 'item', 'when'\]"):
        load_generic(path, columns={"user_id": "user", "item_id": "item", "timestamp": "time"})


def test_unparsable_timestamps(tmp_path):
    folder = write_ml100k(tmp_path / "ml-100k", [*GOOD_DATA[:4], "3\t11\t4\t2001-05-12"])
    with pytest.raises(DataFormatError, match=r"u.data, line 5: timestamp .*'2001-05-12' is not "
                                              r"an integer"):
        load_movielens(folder, "ml-100k")
    path = tmp_path / "events.tsv"
    path.write_text("user\titem\twhen\n1\t2\t2020-01-01T10:00:00\n1\t3\tyesterday\n")
    with pytest.raises(DataFormatError, match=r"events.tsv, line 3: timestamp .*'yesterday' is "
                                              "unparsable timestamp"):
        load_generic(path, columns={"user_id": "user", "item_id": "item", "timestamp": "when"})


def test_undecodable_text_names_line_and_encoding(tmp_path):
    path = tmp_path / "events.csv"
    path.write_bytes("user,item,title\n1,2,ok\n1,3,Café\n".encode("latin-1"))
    with pytest.raises(DataFormatError) as info:
        load_generic(path, columns={"user_id": "user", "item_id": "item"})
    assert "events.csv, line 3" in str(info.value)
    assert "encoding='latin-1'" in str(info.value)
    dataset = load_generic(path, columns={"user_id": "user", "item_id": "item"},
                           encoding="latin-1")
    assert dataset.num_interactions == 2


def test_utf8_copy_of_a_latin1_file_still_reads_right(tmp_path):
    folder = write_ml100k(tmp_path / "ml-100k", item_encoding="utf-8")
    dataset = load_movielens(folder, "ml-100k")
    assert dataset.catalog.items.loc[10, "title"] == "Café Society (1995)"
    assert any("decoded it as utf-8" in note for note in dataset.report.notes)


def test_duplicate_events_dropped_counted_or_rejected(tmp_path):
    folder = write_ml100k(tmp_path / "ml-100k", [*GOOD_DATA, GOOD_DATA[1]])
    dataset = load_movielens(folder, "ml-100k")
    assert dataset.num_interactions == 6
    assert dataset.report.dropped == {"duplicate_event": 1}
    assert "u.data line 7: user_id 1, item_id 11, timestamp 101" in \
        dataset.report.examples["duplicate_event"][0]
    with pytest.raises(DataFormatError, match=r"u.data, line 7: repeats the event on line 2"):
        load_movielens(folder, "ml-100k", duplicates="error")
    assert load_movielens(folder, "ml-100k", duplicates="keep").num_interactions == 7
    # the same pair at another time is a distinct event
    again = write_ml100k(tmp_path / "again", [*GOOD_DATA, "1\t11\t3\t999"])
    assert load_movielens(again, "ml-100k").num_interactions == 7


def test_items_missing_from_catalog(tmp_path):
    folder = write_ml100k(tmp_path / "ml-100k", [*GOOD_DATA, "999\t999999\t5\t1"])
    dataset = load_movielens(folder, "ml-100k")
    assert dataset.num_interactions == 6
    assert dataset.report.dropped == {"unknown_item": 1}
    assert dataset.report.examples["unknown_item"] == ["u.data line 7: item 999999"]
    assert any("999999" in line for line in dataset.report.summary_lines())
    with pytest.raises(DataFormatError, match=r"u.data, line 7: item 999999 is not in the item "
                                              "catalog"):
        load_movielens(folder, "ml-100k", unknown_items="error")


def test_empty_after_filtering_and_empty_file(tmp_path):
    folder = write_ml100k(tmp_path / "ml-100k", ["1\t50\t4\t1", "2\t51\t4\t2"])
    with pytest.raises(EmptyDatasetError, match=r"no interactions left after filtering \(2 "
                                                "unknown_item\\)"):
        load_movielens(folder, "ml-100k")
    path = tmp_path / "events.csv"
    path.write_text("user,item\n")
    with pytest.raises(EmptyDatasetError, match="contains no interactions"):
        load_generic(path, columns={"user_id": "user", "item_id": "item"})


def test_blank_lines_are_counted(tmp_path):
    folder = write_ml100k(tmp_path / "ml-100k", [*GOOD_DATA[:3], "", *GOOD_DATA[3:]])
    dataset = load_movielens(folder, "ml-100k")
    assert dataset.num_interactions == 6
    assert dataset.report.blank_lines >= 1


def test_unknown_genre_kept_dropped_or_rejected(tmp_path):
    movies = [*MOVIES_CSV, "4,Alien (1979),Horror|Sci-fi"]
    folder = write_csv_layout(tmp_path / "ml-latest-small", RATINGS_CSV, movies)
    kept = load_movielens(folder, "ml-latest-small")
    assert kept.report.unknown_genres == {"Sci-fi": 1}
    assert kept.catalog.genre_names[-1] == "Sci-fi" and kept.catalog.genres.loc[4, "Sci-fi"]
    assert any("did you mean 'Sci-Fi'" in note for note in kept.report.notes)
    dropped = load_movielens(folder, "ml-latest-small", unknown_genres="drop")
    assert "Sci-fi" not in dropped.catalog.genre_names
    assert dropped.report.dropped == {"unknown_genre": 1}
    with pytest.raises(DataFormatError, match=r"movies.csv, line 5: genre 'Sci-fi' \(did you "
                                              r"mean 'Sci-Fi'\?\)"):
        load_movielens(folder, "ml-latest-small", unknown_genres="error")


def test_csv_layout_details(tmp_path):
    folder = write_csv_layout(tmp_path / "ml-latest-small", RATINGS_CSV, MOVIES_CSV)
    dataset = load_movielens(folder, "ml-latest-small")
    assert dataset.catalog.items.loc[2, "title"] == "American President, The (1995)"
    assert dataset.catalog.genres.loc[3, "(no genres listed)"]
    assert pd.isna(dataset.catalog.items.loc[3, "year"])
    assert dataset.interactions["rating"].tolist() == [4.0, 3.5, 5.0, 1.0]


def test_dat_layout_and_its_errors(tmp_path):
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    movies = ["1::Toy Story (1995)::Animation|Children's|Comedy",
              "2::Misérables, Les (1995)::Drama|Musical"]
    (folder / "movies.dat").write_bytes(("\n".join(movies) + "\n").encode("latin-1"))
    (folder / "ratings.dat").write_text("1::1::5::978300760\n1::2::3::978302109\n"
                                        "2::1::4::978301968\n")
    dataset = load_movielens(folder, "ml-1m")
    assert dataset.num_interactions == 3 and len(dataset.catalog) == 2
    assert dataset.catalog.items.loc[2, "title"] == "Misérables, Les (1995)"
    (folder / "ratings.dat").write_text("1::1::5::978300760\n1::2::3\n")
    with pytest.raises(DataFormatError, match=r"ratings.dat, line 2: has 3 fields, expected 4 "
                                              "separated by '::'"):
        load_movielens(folder, "ml-1m")
    (folder / "movies.dat").write_text("1::Toy Story (1995)::Comedy\n1::Again (1996)::Drama\n")
    with pytest.raises(DataFormatError, match=r"movies.dat, line 2: item id 1 appears on lines "
                                              "1, 2"):
        read_movielens_catalog(folder / "movies.dat", "ml-1m")


def test_bad_u_genre_and_genre_flags(tmp_path):
    folder = write_ml100k(tmp_path / "a", genre_lines=["unknown|0", "Action|2"])
    with pytest.raises(DataFormatError, match=r"u.genre, line 2: expected 'name\|1'"):
        load_movielens(folder, "ml-100k")
    items = [f"10|Heat (1995)|01-Jan-1995||http://x|{_flags('Crime').replace('1', '2')}"]
    folder = write_ml100k(tmp_path / "b", ["1\t10\t3\t5", "1\t10\t4\t6"], item_lines=items)
    with pytest.raises(DataFormatError, match=r"u\.item, line 1: a genre flag is neither 0 nor 1"):
        load_movielens(folder, "ml-100k")
    short = ["10|Heat (1995)|01-Jan-1995||http://x|0|1"]
    folder = write_ml100k(tmp_path / "c", ["1\t10\t3\t5"], item_lines=short)
    with pytest.raises(DataFormatError, match=r"u.item, line 1: has 7 fields, expected 24"):
        load_movielens(folder, "ml-100k")


def test_bad_parquet_rows_named_by_row(tmp_path):
    path = tmp_path / "pairs.parquet"
    pd.DataFrame({"u": ["1", "2", "abc"], "i": ["5", "6", "7"]}).to_parquet(path)
    with pytest.raises(DataFormatError, match=r"pairs.parquet, row 3: user_id .*'abc' is not an "
                                              "integer"):
        load_generic(path, columns={"user_id": "u", "item_id": "i"})
    dataset = load_generic(path, columns={"user_id": "u", "item_id": "i"}, on_bad_rows="drop")
    assert dataset.num_interactions == 2 and dataset.report.dropped == {"malformed_row": 1}


def test_policy_arguments_are_validated(tmp_path):
    folder = write_ml100k(tmp_path / "ml-100k")
    for kwargs in ({"on_bad_rows": "skip"}, {"unknown_items": "keep"},
                   {"duplicates": "merge"}, {"unknown_genres": "ignore"}):
        with pytest.raises(ValueError, match="must be one of"):
            load_movielens(folder, "ml-100k", **kwargs)


def test_latin1_movies_csv_is_decoded_and_noted(tmp_path):
    folder = tmp_path / "ml-latest-small"
    folder.mkdir()
    (folder / "ratings.csv").write_text("\n".join(RATINGS_CSV[:2]) + "\n")
    (folder / "movies.csv").write_bytes("movieId,title,genres\n1,Amélie (2001),Comedy\n"
                                        .encode("latin-1"))
    dataset = load_movielens(folder, "ml-latest-small")
    assert dataset.catalog.items.loc[1, "title"] == "Amélie (2001)"
    assert any("movies.csv is not utf-8" in note for note in dataset.report.notes)


def test_dataset_checks_its_own_invariants():
    from mechrec_recsys.data import Dataset, ItemCatalog, LoadReport

    catalog = ItemCatalog.from_item_ids([1, 2])
    good = pd.DataFrame({"user_id": [1], "item_id": [1]}).astype("int64")
    Dataset("ok", good, catalog, LoadReport("ok"))
    with pytest.raises(ValueError, match="refer to items missing from the catalog"):
        Dataset("x", good.assign(item_id=[7]), catalog, LoadReport("x"))
    with pytest.raises(ValueError, match="dtype float64, expected int64"):
        Dataset("x", good.astype("float64"), catalog, LoadReport("x"))
    with pytest.raises(ValueError, match="lack the columns"):
        Dataset("x", good.drop(columns="user_id"), catalog, LoadReport("x"))

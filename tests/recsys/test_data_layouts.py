"""Every official layout loads from a tiny hand-written copy in its own format."""

from __future__ import annotations

import pytest
from mechrec_recsys.data import load_dataset
from mechrec_recsys.data.registry import MODERN_GENRES


def test_ml10m_folder_name_and_layout(tmp_path):
    folder = tmp_path / "ml-10M100K"        # the folder name inside the official zip
    folder.mkdir()
    (folder / "movies.dat").write_text(
        "1::Toy Story (1995)::Adventure|Animation|Children|Comedy|Fantasy\n"
        "8606::Pull My Daisy (1958)::(no genres listed)\n"
        "2::Jumanji (1995)::Adventure|Children|Fantasy|IMAX\n", encoding="utf-8")
    (folder / "ratings.dat").write_text("1::1::5::838985046\n1::2::4.5::838983525\n"
                                        "2::8606::3::868245777\n")
    dataset = load_dataset("ml-10m", tmp_path, download=False)
    assert dataset.num_interactions == 3
    assert dataset.interactions["rating"].tolist() == [5.0, 4.5, 3.0]
    assert dataset.catalog.genre_names == list(MODERN_GENRES)
    assert dataset.catalog.genres.loc[8606, "(no genres listed)"]
    assert dataset.catalog.genres.loc[2, "IMAX"]
    assert dataset.report.unknown_genres == {}


@pytest.mark.parametrize("name", ["ml-20m", "ml-25m", "ml-latest"])
def test_csv_releases(tmp_path, name):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "movies.csv").write_text(
        'movieId,title,genres\n1,Toy Story (1995),Adventure|Animation\n'
        '2,"Lock, Stock & Two Smoking Barrels (1998)",Comedy|Crime|Thriller\n')
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,2,3.5,1112486027\n"
                                        "1,1,4.0,1112484676\n2,1,5.0,1112484580\n")
    dataset = load_dataset(name, tmp_path, download=False)
    assert dataset.name == name and dataset.num_interactions == 3
    assert dataset.catalog.items.loc[2, "title"] == "Lock, Stock & Two Smoking Barrels (1998)"
    assert dataset.catalog.items.loc[2, "year"] == 1998
    assert dataset.catalog.genres.loc[2, ["Comedy", "Crime", "Thriller"]].all()

"""Parts of the synthetic generator: franchises from titles, the length distribution, the
catalog reader and the ``mechrec data synth`` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_checks import assert_one_line_error, run_cli
from mechrec_recsys.synthetic import (
    PRESETS,
    SynthConfig,
    find_franchises,
    fit_length_distribution,
    read_catalog,
    solve_length_mu,
)
from mechrec_recsys.synthetic.config import draw_lengths, truncated_mean
from mechrec_recsys.synthetic.franchises import clean_title, parse_part


def _series(found: pd.DataFrame, titles: pd.Series) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item, row in found.iterrows():
        out.setdefault(row["stem"], []).append(titles[item])
    return out


def test_parse_part_and_clean_title():
    assert parse_part("Rocky IV") == ("Rocky", 4)
    assert parse_part("Godfather: Part II The") == ("Godfather", 2)
    assert parse_part("Star Wars: Episode V - The Empire Strikes Back") == ("Star Wars", 5)
    assert parse_part("Terminator 2: Judgment Day") == ("Terminator", 2)
    assert parse_part("Kill Bill: Vol. 1") == ("Kill Bill", 1)
    for title in ("Menace II Society", "2 Days in the Valley", "Friday the 13th",
                  "Apollo 13 (1995)", "Naked Gun 33 1/3: The Final Insult", "Heat"):
        assert parse_part(title) is None or title == "Apollo 13 (1995)"
    assert parse_part("Rocky IIII") is None  # not a canonical Roman numeral
    assert clean_title("Seven (a.k.a. Se7en") == "Seven"
    assert clean_title("Terminator, The") == "Terminator"


def test_find_franchises_orders_parts_and_resolves_remakes():
    rows = [
        (1, "Die Hard", 1988), (2, "Die Hard 2", 1990), (3, "Rocky III", 1982),
        (4, "Rocky", 1976), (5, "Rocky II", 1979), (6, "Halloween", 1978),
        (7, "Halloween", 2007), (8, "Halloween II", 1981), (9, "Halloween II", 2009),
        (10, "Friday the 13th", 1980), (11, "Friday the 13th Part 2", 1981),
        (12, "Malcolm X", 1992), (13, "Heat", 1995), (14, "Godfather The", 1972),
        (15, "Godfather: Part II The", 1974), (16, "Sequel 2", 1990), (17, "Sequel", 1995),
    ]
    frame = pd.DataFrame(rows, columns=["item_id", "title", "year"]).set_index("item_id")
    found = find_franchises(frame["title"], frame["year"].astype("Int64"))
    series = _series(found, frame["title"])
    assert series == {
        "Die Hard": ["Die Hard", "Die Hard 2"],
        "Friday the 13th": ["Friday the 13th", "Friday the 13th Part 2"],
        "Godfather": ["Godfather The", "Godfather: Part II The"],
        "Halloween": ["Halloween", "Halloween II"],
        "Rocky": ["Rocky", "Rocky II", "Rocky III"],
    }
    assert found.loc[6, "part"] == 0 and found.loc[8, "part"] == 1  # 1978 and 1981 versions
    assert list(found.loc[[4, 5, 3], "part"]) == [0, 1, 2]


def test_franchises_of_the_ml20m_catalog(data_dir: Path):
    catalog = read_catalog(data_dir / "ml-20m-catalog" / "movies.csv")
    found = find_franchises(catalog.items["title"], catalog.items["year"])
    assert 300 < found["franchise"].nunique() < 600
    titles = catalog.items["title"]
    series = _series(found, titles)
    assert series["Toy Story"] == ["Toy Story", "Toy Story 2", "Toy Story 3"]
    assert series["Star Wars"][:3] == ["Star Wars: Episode I - The Phantom Menace",
                                       "Star Wars: Episode II - Attack of the Clones",
                                       "Star Wars: Episode III - Revenge of the Sith"]
    assert series["Star Wars"][3:] == ["Star Wars: Episode IV - A New Hope",
                                       "Star Wars: Episode V - The Empire Strikes Back",
                                       "Star Wars: Episode VI - Return of the Jedi"]
    assert series["Halloween"][:2] == ["Halloween", "Halloween II"]
    halloween = found[found["stem"] == "Halloween"].index[:2]
    assert catalog.items.loc[halloween, "year"].tolist() == [1978, 1981]
    assert found.groupby("franchise")["part"].apply(
        lambda p: list(p) == list(range(len(p)))).all()


def test_length_distribution_fits_and_hits_the_preset_means():
    rng = np.random.default_rng(0)
    lengths = draw_lengths(rng, 20_000, 4.2, 1.27, 20, 2314)
    assert lengths.min() >= 20 and lengths.max() <= 2314
    mu, sigma = fit_length_distribution(lengths, 20, 2314)
    assert mu == pytest.approx(4.2, abs=0.06) and sigma == pytest.approx(1.27, abs=0.04)
    for preset in PRESETS.values():
        mu = solve_length_mu(preset.mean_length, 1.27, 20, preset.max_len)
        assert truncated_mean(mu, 1.27, 20, preset.max_len) == pytest.approx(
            preset.mean_length, rel=1e-6)
    with pytest.raises(ValueError, match="strictly between"):
        solve_length_mu(10, 1.27, 20, 100)


def test_ml1m_lengths_give_the_stated_fit(data_dir: Path):
    frame = pd.read_parquet(data_dir / "ml-1m-ordered" / "interactions.parquet",
                            columns=["user_id"])
    mu, sigma = fit_length_distribution(frame.groupby("user_id").size().to_numpy())
    assert mu == pytest.approx(4.26, abs=0.01) and sigma == pytest.approx(1.27, abs=0.01)


def test_read_catalog_formats(data_dir: Path, tmp_path: Path):
    ml1m = read_catalog(data_dir / "ml-1m-ordered" / "movies.dat")
    assert len(ml1m) == 3883 and "Drama" in ml1m.genre_names
    table = tmp_path / "tracks.csv"
    table.write_text("id,title,genres\n1,Song (2001),rock|pop\n2,Other,jazz\n")
    tracks = read_catalog(table)
    assert tracks.genre_names == ["jazz", "pop", "rock"]
    assert tracks.items.loc[1, "year"] == 2001
    (tmp_path / "bad.csv").write_text("id,name\n1,x\n")
    with pytest.raises(ValueError, match="no title column"):
        read_catalog(tmp_path / "bad.csv")
    (tmp_path / "items.txt").write_text("x")
    with pytest.raises(ValueError, match="cannot read a catalog"):
        read_catalog(tmp_path / "items.txt")
    with pytest.raises(FileNotFoundError):
        read_catalog(tmp_path / "missing.csv")


def test_cli_synth_writes_a_world(data_dir: Path, tmp_path: Path):
    out = tmp_path / "world"
    result = run_cli("data", "synth", "--size", "ml-100k", "--users", 40, "--seed", 3,
                     "--out", out, "--catalog", data_dir / "ml-20m-catalog" / "movies.csv")
    assert result.exit_code == 0, result.output
    assert "synth: 40/40 users" in result.output and f"wrote {out}" in result.output
    info = json.loads((out / "world.json").read_text())
    assert info["seed"] == 3 and info["counts"]["users"] == 40
    assert SynthConfig.from_dict(info["config"]) == SynthConfig.preset("ml-100k", users=40,
                                                                       seed=3)


def test_cli_synth_default_catalog_comes_from_mechrec_data(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MECHREC_DATA", str(data_dir))
    result = run_cli("data", "synth", "--size", "ml-100k", "--users", 5, "--items", 0,
                     "--out", tmp_path / "w")
    assert result.exit_code == 0, result.output
    info = json.loads((tmp_path / "w" / "world.json").read_text())
    assert info["catalog"]["source"].endswith("ml-20m-catalog/movies.csv")
    assert info["counts"]["items"] > 26_000


@pytest.mark.parametrize(("args", "message"), [
    (("--size", "ml-2m"), "unknown --size 'ml-2m'"),
    (("--users", 0), "--users must be a positive integer"),
    (("--items", -1), "--items must be 0 (all)"),
    (("--catalog", "/no/such/movies.csv"), "catalog file not found"),
    (("--items", 500), "too few for sequences"),
])
def test_cli_synth_bad_input(data_dir, tmp_path, args, message):
    result = run_cli("data", "synth", "--out", tmp_path / "w", "--users", 5, *args)
    assert_one_line_error(result, message)


def test_cli_synth_refuses_an_occupied_folder_and_a_missing_catalog(data_dir, tmp_path,
                                                                      monkeypatch):
    catalog = data_dir / "ml-20m-catalog" / "movies.csv"
    args = ("data", "synth", "--size", "ml-100k", "--users", 5, "--out", tmp_path / "w",
            "--catalog", catalog)
    assert run_cli(*args).exit_code == 0
    assert_one_line_error(run_cli(*args), "already holds a world")
    assert run_cli(*args, "--overwrite").exit_code == 0
    monkeypatch.delenv("MECHREC_DATA", raising=False)
    assert_one_line_error(run_cli("data", "synth", "--out", tmp_path / "v"),
                          "MECHREC_DATA is not set")


def test_a_catalog_in_any_row_order_gives_the_same_world(data_dir: Path, tmp_path: Path):
    from mechrec_recsys.synthetic import generate_world, load_world

    source = pd.read_csv(data_dir / "ml-20m-catalog" / "movies.csv").head(3000)
    source.to_csv(tmp_path / "sorted.csv", index=False)
    source.iloc[::-1].to_csv(tmp_path / "reversed.csv", index=False)
    config = SynthConfig.preset("ml-100k", users=30, items=None)
    worlds = []
    for name in ("sorted", "reversed"):
        generate_world(config, read_catalog(tmp_path / f"{name}.csv"), tmp_path / name)
        worlds.append(pd.read_parquet(tmp_path / name / "interactions.parquet"))
        info = json.loads((tmp_path / name / "world.json").read_text())
        assert sum(pd.read_parquet(tmp_path / name / "items.parquet")["events"]) == \
            info["counts"]["events"]
        assert load_world(tmp_path / name).num_interactions == info["counts"]["events"]
    pd.testing.assert_frame_equal(worlds[0], worlds[1])


def test_any_catalog_works_even_without_years(tmp_path: Path):
    from mechrec_recsys.synthetic import generate_world, read_truth

    rng = np.random.default_rng(0)
    genres = np.array(["rock", "pop", "jazz", "folk"])
    rows = [(i, f"Track {i}", "|".join(rng.choice(genres, size=rng.integers(1, 3),
                                                      replace=False)))
            for i in range(1, 401)]
    pd.DataFrame(rows, columns=["track_id", "title", "genre"]).rename(
        columns={"track_id": "id", "genre": "genres"}).to_csv(tmp_path / "tracks.csv",
                                                              index=False)
    config = SynthConfig(users=40, mean_length=40, max_len=120, seed=5)
    summary = generate_world(config, read_catalog(tmp_path / "tracks.csv"), tmp_path / "w")
    truth = read_truth(tmp_path / "w")
    assert truth.genres == ["folk", "jazz", "pop", "rock"]
    assert truth.info["eras"][-1] == "unknown"
    assert set(truth.events.loc[truth.events["era"] >= 0, "era"]) == {6}
    assert summary.info["franchises"]["series"] == 0
    assert truth.info["counts"]["kinds"]["franchise"] == 0

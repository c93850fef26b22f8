"""The statistics table and the ``mechrec data stats`` command."""

from __future__ import annotations

import numpy as np
import pytest
from mechrec_recsys.cli.main import app
from mechrec_recsys.data import load_dataset
from mechrec_recsys.data.splits import paper_split
from mechrec_recsys.data.stats import dataset_statistics
from typer.testing import CliRunner

runner = CliRunner()


@pytest.fixture(scope="module")
def ml100k(data_dir):
    return load_dataset("ml-100k", data_dir, download=False)


def test_statistics_of_a_dataset(ml100k):
    table = dataset_statistics(ml100k)
    assert list(table.columns) == ["all"]
    column = table["all"]
    assert column["users"] == 943 and column["items"] == 1682
    assert column["interactions"] == 100_000 and column["catalog items"] == 1682
    assert column["length min"] == 20 and column["length max"] == 737
    assert column["length p50"] == 65
    assert column["genre Drama"] == pytest.approx(
        ml100k.interactions["item_id"].map(ml100k.catalog.genres["Drama"]).mean())
    assert column["genre unknown"] == pytest.approx(10 / 100_000)
    genre_rows = [row for row in table.index if row.startswith("genre ")]
    assert len(genre_rows) == 19


def test_statistics_per_split_part(ml100k):
    split = paper_split(ml100k, seed=0)
    table = dataset_statistics(ml100k, split)
    assert list(table.columns) == ["all", "train", "validation", "sae_train", "test"]
    assert table.loc["users", "test"] == len(split.test) == 80
    assert table.loc["targets", "test"] == 80
    assert table.loc["length max", "train"] == 200
    lengths = sum(len(s) for s in split.test.sequences)
    assert table.loc["interactions", "test"] == lengths + 80
    assert np.isnan(table.loc["catalog items", "train"])
    assert np.isnan(table.loc["targets", "train"])


def test_cli_stats_prints_the_table(data_dir):
    result = runner.invoke(app, ["data", "stats", "ml-100k", "--data-dir", str(data_dir),
                                 "--split", "paper", "--seed", "0"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    for text in ("ml-100k", "paper split", "users", "943", "100,000", "sae_train",
                 "genre Drama", "14 test", "never seen in training"):
        assert text in out


def test_cli_stats_without_split(data_dir):
    result = runner.invoke(app, ["data", "stats", "ml-latest-small", "--data-dir",
                                 str(data_dir)])
    assert result.exit_code == 0, result.output
    assert "9,742" in result.stdout and "100,836" in result.stdout
    assert "(no genres listed)" in result.stdout


@pytest.mark.parametrize(("arguments", "message"), [
    (["ml-3m"], "unknown dataset 'ml-3m'"),
    (["ml-1m", "--no-download"], "ml-1m not found in"),
    (["ml-100k", "--split", "time"], "unknown split 'time'"),
    (["ml-100k", "--max-len", "0"], "--max-len must be a positive integer"),
])
def test_cli_bad_input_is_one_line_and_exit_code_2(data_dir, arguments, message):
    result = runner.invoke(app, ["data", "stats", *arguments, "--data-dir", str(data_dir)])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.output


def test_cli_malformed_file_is_reported_without_traceback(tmp_path):
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    genres = ["unknown", "Action"]
    (folder / "u.genre").write_text("".join(f"{g}|{i}\n" for i, g in enumerate(genres)))
    (folder / "u.item").write_text("1|A (1990)|||x|0|1\n")
    (folder / "u.data").write_text("1\t1\t3\t100\n1\tone\t3\t101\n")
    result = runner.invoke(app, ["data", "stats", "ml-100k", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "u.data, line 2" in result.stderr and "'one' is not an integer" in result.stderr
    assert result.stderr.count("\n") == 1


def test_cli_split_of_too_little_data_is_bad_input(tmp_path):
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    (folder / "u.genre").write_text("unknown|0\nAction|1\n")
    (folder / "u.item").write_text("1|A (1990)|||x|0|1\n2|B (1991)|||x|1|0\n")
    (folder / "u.data").write_text("1\t1\t3\t100\n1\t2\t3\t100\n2\t1\t3\t100\n2\t2\t3\t100\n")
    result = runner.invoke(app, ["data", "stats", "ml-100k", "--data-dir", str(tmp_path),
                                 "--split", "paper"])
    # two users are too few for a 10% test part plus training parts
    assert result.exit_code == 2
    assert "too few users" in result.stderr

"""``mechrec data download`` and ``mechrec data list``, with the network replaced."""

from __future__ import annotations

import dataclasses
import urllib.error
from pathlib import Path

import pytest
from download_doubles import fake_fetch, isolate_cache, official_ml100k_zip, release_for
from mechrec_recsys.cli.main import app
from mechrec_recsys.data import RELEASES
from mechrec_recsys.data import download as download_module
from typer.testing import CliRunner

runner = CliRunner()
URL = "https://files.grouplens.org/datasets/movielens/{}.zip"


@pytest.fixture
def isolated(monkeypatch, tmp_path) -> Path:
    """No MECHREC_DATA, a cache inside tmp_path, and a network that must not be used."""

    def no_network(url: str, destination: Path) -> None:
        raise AssertionError(f"the test tried to download {url}")

    monkeypatch.setattr(download_module, "fetch_url", no_network)
    return isolate_cache(monkeypatch, tmp_path)


@pytest.fixture
def ml100k_zip(data_dir, tmp_path) -> Path:
    """A zip laid out like the official ml-100k.zip, built from the shared test copy."""
    return official_ml100k_zip(data_dir, tmp_path / "source")


@pytest.fixture
def serve(monkeypatch, ml100k_zip):
    """Replace the network by the local zip and publish its checksum; returns the URLs
    fetched."""
    calls: list[str] = []
    monkeypatch.setattr(download_module, "fetch_url", fake_fetch(ml100k_zip, calls))
    monkeypatch.setitem(RELEASES, "ml-100k", release_for(ml100k_zip))
    return calls


def _one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert lines[-1].startswith("error: ")
    assert sum("error" in line for line in lines) == 1
    return lines[-1]


def test_download_verifies_and_caches(isolated, serve):
    result = runner.invoke(app, ["data", "download", "ml-100k"])
    assert result.exit_code == 0, result.output
    folder = isolated / "ml-100k"
    assert f"downloaded {URL.format('ml-100k')} into {folder}" in result.stdout
    assert "checksum verified with SHA256" in result.stdout
    assert (folder / "u.data").is_file() and (folder / "u.genre").is_file()
    again = runner.invoke(app, ["data", "download", "ml-100k"])
    assert again.exit_code == 0
    assert f"ml-100k is already available in {folder} (cache); nothing to download" in \
        again.stdout
    assert serve == [URL.format("ml-100k")]


def test_download_into_an_explicit_cache_dir(isolated, serve, tmp_path):
    cache = tmp_path / "elsewhere"
    result = runner.invoke(app, ["data", "download", "ml-100k", "--cache-dir", str(cache)])
    assert result.exit_code == 0, result.output
    assert (cache / "ml-100k" / "u.item").is_file()
    assert not isolated.exists()


def test_download_skips_a_copy_in_mechrec_data(isolated, data_dir, monkeypatch):
    monkeypatch.setenv("MECHREC_DATA", str(data_dir))
    result = runner.invoke(app, ["data", "download", "ml-100k"])
    assert result.exit_code == 0, result.output
    assert f"already available in {data_dir / 'ml-100k'} ($MECHREC_DATA)" in result.stdout
    assert not isolated.exists()


def test_explicit_cache_dir_is_filled_even_when_mechrec_data_has_a_copy(
        isolated, serve, data_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("MECHREC_DATA", str(data_dir))
    cache = tmp_path / "shared-cache"
    result = runner.invoke(app, ["data", "download", "ml-100k", "--cache-dir", str(cache)])
    assert result.exit_code == 0, result.output
    assert (cache / "ml-100k" / "u.data").is_file()
    assert len(serve) == 1


def test_download_offline_is_a_one_line_error(isolated, monkeypatch):
    def offline(url: str, destination: Path) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(download_module, "fetch_url", offline)
    result = runner.invoke(app, ["data", "download", "ml-1m"])
    line = _one_line_error(result)
    assert line.startswith(f"error: could not download {URL.format('ml-1m')}")
    assert str(isolated / "ml-1m" / "ratings.dat") in line
    assert list(isolated.iterdir()) == []


def test_download_checksum_mismatch_is_a_one_line_error(isolated, serve, monkeypatch):
    monkeypatch.setitem(RELEASES, "ml-100k", dataclasses.replace(
        RELEASES["ml-100k"], sha256="0" * 64))
    line = _one_line_error(runner.invoke(app, ["data", "download", "ml-100k"]))
    assert "SHA-256 is" in line and "expected " + "0" * 64 in line
    assert not (isolated / "ml-100k").exists()


def test_download_without_published_checksum_says_so(isolated, serve, monkeypatch):
    monkeypatch.setitem(RELEASES, "ml-100k", dataclasses.replace(
        RELEASES["ml-100k"], sha256=None, md5=None, size=None))
    result = runner.invoke(app, ["data", "download", "ml-100k"])
    assert result.exit_code == 0, result.output
    assert "NOT verified: no published checksum" in result.stdout


def test_download_unknown_dataset(isolated):
    line = _one_line_error(runner.invoke(app, ["data", "download", "ml-3m"]))
    assert "unknown dataset 'ml-3m'" in line and "ml-latest-small" in line


def test_download_into_an_unusable_folder(isolated, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    line = _one_line_error(runner.invoke(app, ["data", "download", "ml-100k", "--cache-dir",
                                               str(blocker)]))
    assert line.startswith(f"error: cannot write the download into {blocker}")
    assert "pass --cache-dir with a writable folder" in line


def _rows(stdout: str) -> dict[str, str]:
    return {line.split()[0]: line for line in stdout.splitlines()[1:]
            if line and line.split()[0] in RELEASES}


def test_list_shows_every_dataset_with_url_size_and_checksum(isolated):
    result = runner.invoke(app, ["data", "list"])
    assert result.exit_code == 0, result.output
    header = result.stdout.splitlines()[0].split()
    assert header == ["dataset", "size", "checksum", "url", "local", "copy"]
    rows = _rows(result.stdout)
    assert set(rows) == set(RELEASES)
    for name, row in rows.items():
        assert URL.format(name) in row and row.endswith("not found")
    assert rows["ml-100k"].split()[1:4] == ["4.9", "MB", "sha256"]
    assert rows["ml-10m"].split()[1:3] == ["unknown", "md5"]
    assert rows["ml-latest"].split()[1:3] == ["unknown", "none"]
    assert rows["ml-20m"].split()[1:4] == ["198.7", "MB", "sha256"]
    assert f"$MECHREC_DATA (unset) > cache ({isolated})" in result.stdout


def test_list_finds_local_copies_in_precedence_order(isolated, data_dir, monkeypatch,
                                                     tmp_path):
    cached = isolated / "ml-1m"
    cached.mkdir(parents=True)
    for name in ("ratings.dat", "movies.dat"):
        (cached / name).write_text("")
    monkeypatch.setenv("MECHREC_DATA", str(data_dir))
    rows = _rows(runner.invoke(app, ["data", "list"]).stdout)
    assert rows["ml-100k"].endswith(f"{data_dir / 'ml-100k'} ($MECHREC_DATA)")
    assert rows["ml-latest-small"].endswith("($MECHREC_DATA)")
    assert rows["ml-1m"].endswith(f"{cached} (cache)")
    assert rows["ml-25m"].endswith("not found")
    # an explicit --data-dir is looked at first
    explicit = tmp_path / "mine" / "ml-latest-small"
    explicit.mkdir(parents=True)
    for name in ("ratings.csv", "movies.csv"):
        (explicit / name).write_text("")
    result = runner.invoke(app, ["data", "list", "--data-dir", str(explicit.parent)])
    rows = _rows(result.stdout)
    assert rows["ml-latest-small"].endswith(f"{explicit} (--data-dir)")
    assert rows["ml-100k"].endswith("($MECHREC_DATA)")
    assert f"lookup order: --data-dir {explicit.parent} > $MECHREC_DATA" in result.stdout


def test_list_with_another_cache_dir(isolated, tmp_path):
    cache = tmp_path / "other-cache"
    (cache / "ml-latest-small").mkdir(parents=True)
    for name in ("ratings.csv", "movies.csv"):
        (cache / "ml-latest-small" / name).write_text("")
    result = runner.invoke(app, ["data", "list", "--cache-dir", str(cache)])
    rows = _rows(result.stdout)
    assert rows["ml-latest-small"].endswith(f"{cache / 'ml-latest-small'} (cache)")
    assert f"cache ({cache})" in result.stdout

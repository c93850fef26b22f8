"""Finding and downloading datasets, with the network replaced by a local zip."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import urllib.error
import zipfile
from pathlib import Path

import pytest
from download_doubles import (
    fake_fetch,
    isolate_cache,
    official_ml100k_zip,
    release_for,
)
from mechrec_recsys.data import (
    RELEASES,
    ChecksumError,
    DataError,
    DatasetNotFoundError,
    default_cache_dir,
    download_dataset,
    load_dataset,
    resolve_dataset_dir,
)
from mechrec_recsys.data import download as download_module
from mechrec_recsys.data.download import MANIFEST, verify_archive


@pytest.fixture
def ml100k_zip(data_dir, tmp_path) -> Path:
    """A zip laid out like the official ml-100k.zip, built from the shared test copy."""
    return official_ml100k_zip(data_dir, tmp_path / "source")


@pytest.fixture
def isolated(monkeypatch, tmp_path) -> Path:
    """No MECHREC_DATA, and a cache inside tmp_path; returns the cache folder."""
    return isolate_cache(monkeypatch, tmp_path)


def test_cache_dir_respects_xdg(isolated):
    assert default_cache_dir() == isolated


def test_cache_dir_defaults_to_home(monkeypatch, tmp_path):
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / ".cache" / "mechrec" / "datasets"


def test_download_verifies_extracts_and_caches(isolated, ml100k_zip, monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(download_module, "fetch_url", fake_fetch(ml100k_zip, calls))
    monkeypatch.setitem(RELEASES, "ml-100k", release_for(ml100k_zip))
    dataset = load_dataset("ml-100k")
    assert dataset.num_interactions == 100_000 and dataset.num_users == 943
    assert calls == ["https://files.grouplens.org/datasets/movielens/ml-100k.zip"]
    folder = isolated / "ml-100k"
    assert (folder / "u.data").is_file()
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["verified_with"] == "sha256"
    assert manifest["sha256"] == hashlib.sha256(ml100k_zip.read_bytes()).hexdigest()
    # nothing else is left in the cache (the temporary download folder is gone)
    assert [p.name for p in isolated.iterdir()] == ["ml-100k"]
    # a second load reads the cache and does not fetch
    load_dataset("ml-100k")
    assert len(calls) == 1


def test_checksum_mismatch_leaves_nothing_behind(isolated, ml100k_zip, monkeypatch):
    calls: list[str] = []
    wrong = dataclasses.replace(release_for(ml100k_zip), sha256="0" * 64)
    with pytest.raises(ChecksumError) as info:
        download_dataset("ml-100k", isolated, fetch=fake_fetch(ml100k_zip, calls),
                         release=wrong)
    assert "expected " + "0" * 64 in str(info.value)
    assert "ml-100k.zip" in str(info.value)
    assert list(isolated.iterdir()) == []


def test_published_checksum_rejects_a_different_zip(isolated, ml100k_zip, monkeypatch):
    # our rebuilt zip is not byte-identical to GroupLens' archive: the real value rejects it
    monkeypatch.setattr(download_module, "fetch_url", fake_fetch(ml100k_zip, []))
    with pytest.raises(ChecksumError, match="expected 4,924,029"):
        load_dataset("ml-100k")
    assert not (isolated / "ml-100k").exists()


def test_md5_only_release_is_checked(tmp_path, ml100k_zip):
    data = ml100k_zip.read_bytes()
    release = dataclasses.replace(RELEASES["ml-100k"], sha256=None, size=None,
                                  md5=hashlib.md5(data).hexdigest())
    assert verify_archive(ml100k_zip, release)["verified_with"] == "md5"
    with pytest.raises(ChecksumError, match="MD5"):
        verify_archive(ml100k_zip, dataclasses.replace(release, md5="f" * 32))
    unverified = dataclasses.replace(release, md5=None)
    assert verify_archive(ml100k_zip, unverified)["verified_with"] == "none"


def test_offline_error_names_url_and_folder(isolated, monkeypatch):
    def offline(url: str, destination: Path) -> None:
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(download_module, "fetch_url", offline)
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("ml-1m")
    message = str(info.value)
    assert "https://files.grouplens.org/datasets/movielens/ml-1m.zip" in message
    assert str(isolated / "ml-1m" / "ratings.dat") in message
    assert list(isolated.iterdir()) == []
    with pytest.raises(DatasetNotFoundError, match="downloading is off"):
        load_dataset("ml-1m", download=False)


def test_precedence_data_dir_env_cache(isolated, data_dir, tmp_path, monkeypatch):
    def no_network(url, destination):
        raise AssertionError("must not download")
    monkeypatch.setattr(download_module, "fetch_url", no_network)
    # the environment variable is used when no data_dir is given
    monkeypatch.setenv("MECHREC_DATA", str(data_dir))
    assert resolve_dataset_dir("ml-100k") == data_dir / "ml-100k"
    # an explicit data_dir wins over the environment, and must hold the files
    with pytest.raises(DatasetNotFoundError):
        resolve_dataset_dir("ml-100k", tmp_path / "empty")
    # a dataset absent from MECHREC_DATA falls through to the cache
    cached = isolated / "ml-1m"
    cached.mkdir(parents=True)
    for name in ("ratings.dat", "movies.dat"):
        (cached / name).write_text("")
    assert resolve_dataset_dir("ml-1m") == cached


def test_unsafe_archive_is_refused(isolated, tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("../outside.txt", "x")
    release = release_for(archive)
    with pytest.raises(DataError, match="unsafe path"):
        download_dataset("ml-100k", isolated, fetch=fake_fetch(archive, []), release=release)
    assert not (tmp_path / "outside.txt").exists()


def test_archive_without_the_files_is_refused(isolated, tmp_path):
    archive = tmp_path / "other.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("ml-100k/README", "x")
    release = release_for(archive)
    with pytest.raises(DataError, match=r"does not contain u\.data"):
        download_dataset("ml-100k", isolated, fetch=fake_fetch(archive, []), release=release)
    assert not (isolated / "ml-100k").exists()


def test_fetch_url_streams_a_file_url(ml100k_zip, tmp_path):
    destination = tmp_path / "copy.zip"
    download_module.fetch_url(ml100k_zip.as_uri(), destination)
    assert destination.read_bytes() == ml100k_zip.read_bytes()
    with pytest.raises(OSError):
        download_module.fetch_url((tmp_path / "missing.zip").as_uri(), tmp_path / "x.zip")

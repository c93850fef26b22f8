"""Stand-ins for the network in the dataset download tests (library and CLI).

Imported by name (``from download_doubles import ...``); a unique module name, unlike
``conftest``, cannot collide with another test folder's helpers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from mechrec_recsys.data import RELEASES
from mechrec_recsys.data.registry import MovieLensRelease


def official_ml100k_zip(data_dir: Path, folder: Path) -> Path:
    """``folder/ml-100k.zip``, laid out like the official ml-100k.zip, built from the shared
    test copy under ``data_dir``."""
    archive = folder / "ml-100k.zip"
    folder.mkdir()
    with zipfile.ZipFile(archive, "w") as bundle:
        for name in ("u.data", "u.item", "u.genre"):
            bundle.write(data_dir / "ml-100k" / name, f"ml-100k/{name}")
    return archive


def isolate_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No MECHREC_DATA, and a cache inside ``tmp_path``; returns the cache folder."""
    monkeypatch.delenv("MECHREC_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "mechrec" / "datasets"


def fake_fetch(archive: Path, calls: list[str]) -> Callable[[str, Path], None]:
    """A ``fetch_url`` stand-in that records each URL in ``calls`` and delivers ``archive``."""

    def fetch(url: str, destination: Path) -> None:
        calls.append(url)
        destination.write_bytes(archive.read_bytes())

    return fetch


def release_for(archive: Path) -> MovieLensRelease:
    """The ml-100k release with ``archive``'s SHA-256 and size as the published ones."""
    data = archive.read_bytes()
    return dataclasses.replace(RELEASES["ml-100k"], sha256=hashlib.sha256(data).hexdigest(),
                               size=len(data))

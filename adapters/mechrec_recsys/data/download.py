"""Finding a dataset on disk, and downloading it into the user cache when it is not there.

Where a dataset is looked for, in order (the first that holds the release's files wins):

1. an explicit ``data_dir`` (the folder holding ``ml-100k/``, or the ``ml-100k`` folder itself);
   if the files are not there, that is an error, never a silent download;
2. the folder in the ``MECHREC_DATA`` environment variable (same two forms);
3. the cache, ``$XDG_CACHE_HOME/mechrec/datasets`` (default ``~/.cache/mechrec/datasets``);
4. a download of the official GroupLens zip into the cache.

A download is atomic: the zip goes to a temporary folder inside the cache, is checked against
the published size and checksum, is extracted there, and only then is its folder renamed into
place. An interrupted or corrupt download leaves nothing behind that a later run could mistake
for data.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import time
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from mechrec._io import atomic_write_json
from mechrec_recsys.data.errors import ChecksumError, DataError, DatasetNotFoundError
from mechrec_recsys.data.registry import LocalDataset, MovieLensRelease, get_release

LOGGER = logging.getLogger("mechrec_recsys.data")
ENV_DATA = "MECHREC_DATA"
MANIFEST = ".mechrec-download.json"
_CHUNK = 1 << 20

Fetch = Callable[[str, Path], None]


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/mechrec/datasets``, or ``~/.cache/mechrec/datasets``."""
    base = os.environ.get("XDG_CACHE_HOME")
    root = Path(base) if base else Path.home() / ".cache"
    return root / "mechrec" / "datasets"


def find_local_copy(root: str | Path, release: MovieLensRelease | LocalDataset) -> Path | None:
    """The folder under ``root`` (or ``root`` itself) holding every file of ``release``."""
    root = Path(root).expanduser()
    for candidate in [root / alias for alias in release.folder_aliases] + [root]:
        if all((candidate / f).is_file() for f in release.required_files):
            return candidate
    return None


def _placement_hint(release: MovieLensRelease, folder: Path) -> str:
    return (f"download {release.url} and unzip it so that "
            f"{folder / release.required_files[0]} exists")


def resolve_dataset_dir(
    name: str,
    data_dir: str | Path | None = None,
    *,
    download: bool = True,
    cache_dir: str | Path | None = None,
) -> Path:
    """The folder holding the files of MovieLens release ``name``, downloading it if needed.

    Args:
        name: a release name, e.g. ``"ml-100k"``.
        data_dir: an explicit folder; when given, the files must be there.
        download: whether a missing dataset may be downloaded into the cache.
        cache_dir: the cache folder (default :func:`default_cache_dir`).

    Raises:
        DatasetNotFoundError: not found and not downloadable; the message names the URL and
            the folder in which to put the files.
        ChecksumError: a download did not match its published checksum.
    """
    release = get_release(name)
    if data_dir is not None:
        found = find_local_copy(data_dir, release)
        if found is None:
            folder = Path(data_dir).expanduser() / release.folder_aliases[0]
            raise DatasetNotFoundError(
                f"{name} not found in {data_dir} (looked for {', '.join(release.required_files)}"
                f" in {folder} and in {data_dir}). Fix: {_placement_hint(release, folder)}, or "
                "leave data_dir unset to use the download cache"
            )
        return found
    env = os.environ.get(ENV_DATA)
    if env:
        found = find_local_copy(env, release)
        if found is not None:
            return found
        LOGGER.info("%s not under %s=%s; trying the cache", name, ENV_DATA, env)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    found = find_local_copy(cache, release)
    if found is not None:
        return found
    if not download:
        folder = cache / release.folder_aliases[0]
        raise DatasetNotFoundError(
            f"{name} is not on this machine and downloading is off. Fix: "
            f"{_placement_hint(release, folder)} (or set {ENV_DATA} to a folder holding "
            f"{release.folder_aliases[0]}/)"
        )
    return download_dataset(name, cache)


def fetch_url(url: str, destination: Path) -> None:
    """Download ``url`` to ``destination`` (streamed, with progress in the log).

    Raises:
        OSError: on any network failure (``urllib.error.URLError`` is an OSError).
    """
    with urllib.request.urlopen(url, timeout=60) as response, open(destination, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0)
        done, last_log = 0, time.monotonic()
        while chunk := response.read(_CHUNK):
            out.write(chunk)
            done += len(chunk)
            if time.monotonic() - last_log > 5:
                last_log = time.monotonic()
                share = f" ({100 * done / total:.0f}%)" if total else ""
                LOGGER.warning("downloading %s: %.1f MB%s", url, done / 1e6, share)


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_archive(path: Path, release: MovieLensRelease) -> dict:
    """Check a downloaded zip against the release's published size and checksum.

    Returns:
        A record of what was checked (``sha256`` of the file, ``verified_with``).

    Raises:
        ChecksumError: size or checksum differ from the published values.
    """
    size = path.stat().st_size
    sha256 = file_digest(path, "sha256")
    fix = (f"retry (the bad download was discarded); if it fails again, the file changed "
           f"upstream or the connection is being tampered with: download {release.url} by "
           "hand, check it, and unzip it into a folder passed as data_dir")
    if release.size is not None and size != release.size:
        raise ChecksumError(
            f"{release.url}: downloaded {size:,} bytes, expected {release.size:,} "
            f"(published by {release.checksum_source}). Fix: {fix}")
    if release.sha256 is not None:
        if sha256 != release.sha256:
            raise ChecksumError(
                f"{release.url}: SHA-256 is {sha256}, expected {release.sha256} (published by "
                f"{release.checksum_source}). Fix: {fix}")
        verified = "sha256"
    elif release.md5 is not None:
        md5 = file_digest(path, "md5")
        if md5 != release.md5:
            raise ChecksumError(
                f"{release.url}: MD5 is {md5}, expected {release.md5} (published by "
                f"{release.checksum_source}). Fix: {fix}")
        verified = "md5"
    else:
        LOGGER.warning(
            "%s has no published checksum (%s); it was NOT verified. Its SHA-256 is %s and is "
            "recorded in %s", release.url, release.checksum_source, sha256, MANIFEST)
        verified = "none"
    return {"url": release.url, "sha256": sha256, "size": size, "verified_with": verified,
            "checksum_source": release.checksum_source}


def extract_archive(archive: Path, destination: Path) -> None:
    """Extract a zip, refusing members that would land outside ``destination``."""
    try:
        with zipfile.ZipFile(archive) as bundle:
            for member in bundle.namelist():
                parts = PurePosixPath(member.replace("\\", "/")).parts
                if member.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
                    raise DataError(f"{archive}: refusing to extract unsafe path {member!r}. "
                                    "Fix: use the official archive")
            bundle.extractall(destination)
    except zipfile.BadZipFile as exc:
        raise DataError(f"{archive}: not a valid zip ({exc}). Fix: retry the download") from None


def download_dataset(
    name: str,
    cache_dir: str | Path | None = None,
    *,
    fetch: Fetch | None = None,
    release: MovieLensRelease | None = None,
) -> Path:
    """Download, verify and extract an official MovieLens zip into the cache.

    Args:
        name: release name, e.g. ``"ml-100k"``.
        cache_dir: the cache folder (default :func:`default_cache_dir`).
        fetch: ``fetch(url, destination)`` that writes the zip (default :func:`fetch_url`).
        release: override of the release description (e.g. another mirror).

    Returns:
        The dataset folder, ``cache_dir / name``.

    Raises:
        DatasetNotFoundError: the download failed (offline); names the URL and the folder.
        ChecksumError: the zip does not match its published size or checksum.
    """
    release = release or get_release(name)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache / release.folder_aliases[0]
    if find_local_copy(cache, release) == target:
        return target
    if target.exists():
        raise DatasetNotFoundError(
            f"{target} exists but lacks {', '.join(release.required_files)}. Fix: delete that "
            f"folder and retry, or {_placement_hint(release, target)}")
    fetch = fetch or fetch_url
    cache.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f".{release.name}-download-", dir=cache))
    try:
        archive = workdir / f"{release.name}.zip"
        LOGGER.warning("downloading %s into %s", release.url, cache)
        try:
            fetch(release.url, archive)
        except OSError as exc:
            raise DatasetNotFoundError(
                f"could not download {release.url} ({exc}). Fix: when offline, "
                f"{_placement_hint(release, target)}, or pass data_dir / set {ENV_DATA}"
            ) from exc
        record = verify_archive(archive, release)
        extracted = workdir / "extracted"
        extract_archive(archive, extracted)
        source = find_local_copy(extracted, release) or find_local_copy(
            extracted / release.archive_folder, release)
        if source is None or not str(source).startswith(str(extracted)):
            raise DataError(
                f"{release.url}: the archive does not contain {', '.join(release.required_files)}"
                f" under {release.archive_folder}/. Fix: use the official archive")
        record["downloaded_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        atomic_write_json(source / MANIFEST, record, sort_keys=False)
        try:
            os.replace(source, target)
        except OSError:
            if find_local_copy(cache, release) != target:  # not a concurrent download winning
                raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return target

"""Atomic file writes, content hashes and exclusive claims shared by every ``save``.

Every writer puts its bytes into a temporary file beside the target (same folder, so the final
``os.replace`` is an atomic rename), flushes it to disk and removes the temporary file if
anything fails: a failed write leaves any earlier file untouched and no stray ``.tmp`` file
behind.

Content hashes (SHA-256 of a file's bytes) are how a saved artefact proves it is whole: the
hash is recorded beside the file when it is written and checked when it is read
(:func:`read_verified_bytes`), so truncation, flipped bits or a file swapped in from elsewhere
are refused instead of being loaded. Model checkpoints, SAEs and their normalisers all use it.

:func:`exclusive_claim` lets one process at a time write a named artefact (an OS file lock,
released even when the process is killed).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover - typing only; torch loads when tensors are saved
    import torch


def _umask() -> int:
    """The process's file-creation mask (read without changing it for long)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[str], None]) -> Path:
    """Create ``path``'s folder, call ``write(tmp)`` on a temp file beside it, then rename.

    Args:
        path: the file to (re)place.
        write: writes the whole content to the temporary path it is given.

    Returns:
        ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # as open() would create it, not mkstemp's 0600
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`); returns ``path``."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            handle.write(data)

    return atomic_write(Path(path), write)


def sha256_bytes(data: bytes) -> str:
    """The hex SHA-256 of ``data``: the content hash recorded beside saved files."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """The hex SHA-256 of a file's bytes (read in blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_verified_bytes(path: str | os.PathLike, expected_sha256: str | None, *,
                        fix: str = "re-create it") -> bytes:
    """The bytes of ``path``, checked against ``expected_sha256`` when it is given.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the bytes do not have the recorded hash (interrupted write, corruption or
            tampering); the message names the file and ends with ``fix``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path}")
    data = path.read_bytes()
    if expected_sha256 is not None and sha256_bytes(data) != expected_sha256:
        raise ValueError(
            f"{path} does not match the hash recorded beside it (interrupted write, corruption "
            f"or tampering); {fix}"
        )
    return data


@contextmanager
def exclusive_claim(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (created if needed) for the ``with`` body.

    The lock belongs to this process and goes away when it exits, even when it is killed, so
    a crash never leaves a stale claim. The lock file itself stays (it is empty).

    Raises:
        FileExistsError: another process holds the claim; the message names ``what``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+b")  # noqa: SIM115 - held open for the lock's lifetime
    try:
        try:
            _lock(handle)
        except OSError:
            raise FileExistsError(
                f"{what} is being written by another process right now (it holds {path}): "
                "wait for it to finish, or choose another name"
            ) from None
        try:
            yield
        finally:
            _unlock(handle)
    finally:
        handle.close()


def _lock(handle: object) -> None:
    """Take a non-blocking exclusive lock on an open file; ``OSError`` if it is held."""
    if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
        import msvcrt

        handle.seek(0)  # type: ignore[attr-defined]
        msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
    else:
        import fcntl

        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # type: ignore[attr-defined]


def _unlock(handle: object) -> None:
    if sys.platform == "win32":  # pragma: no cover
        import msvcrt

        handle.seek(0)  # type: ignore[attr-defined]
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)  # type: ignore[attr-defined]
    else:
        import fcntl

        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)  # type: ignore[attr-defined]


def atomic_write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`); returns ``path``."""

    def write(tmp: str) -> None:
        with open(tmp, "w") as handle:
            handle.write(text)

    return atomic_write(path, write)


def json_safe(value: Any) -> Any:
    """``value`` with only plain JSON types: the one conversion every saved JSON goes through.

    Mappings become dicts with text keys, tuples and lists become lists, numpy scalars become
    Python numbers, and non-finite floats (NaN, inf) become ``None`` so the JSON stays strict
    (readable by any parser, ``allow_nan=False``).
    """
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def json_sha256(value: Any) -> str:
    """The hex SHA-256 of ``value`` as canonical JSON (through :func:`json_safe`, keys
    sorted): the one digest of settings that decides whether saved work can be reused."""
    return sha256_bytes(json.dumps(json_safe(value), sort_keys=True).encode())


def atomic_write_json(path: str | os.PathLike, data: Any, *, sort_keys: bool = True) -> Path:
    """Write ``data`` as strict, indented JSON to ``path`` atomically (through
    :func:`json_safe`: NaN/inf are written as ``null``); returns ``path``."""
    text = json.dumps(json_safe(data), indent=2, sort_keys=sort_keys, allow_nan=False) + "\n"
    return atomic_write_text(Path(path), text)


def safetensors_bytes(tensors: Mapping[str, torch.Tensor],
                      metadata: dict[str, str] | None = None) -> bytes:
    """The bytes of a safetensors file holding ``tensors`` with header ``metadata``.

    Tensors are moved to the CPU and made contiguous; one that shares memory with an earlier
    one (tied weights, which safetensors refuses) is copied, so any state dict can be written.
    """
    from safetensors.torch import save

    plain: dict[str, torch.Tensor] = {}
    storages: set[int] = set()
    for name, tensor in tensors.items():
        tensor = tensor.detach().cpu()
        pointer = tensor.untyped_storage().data_ptr()
        if pointer in storages:
            tensor = tensor.clone()
        storages.add(pointer)
        plain[name] = tensor.contiguous()
    return save(plain, metadata=metadata)


def state_dict_sha256(weights: torch.nn.Module | Mapping[str, torch.Tensor],
                      metadata: dict[str, str] | None = None) -> str:
    """The SHA-256 of a module's weights (or of named tensors) as a safetensors file with
    header ``metadata``.

    It is the content hash of the file :func:`save_safetensors_atomically` writes for
    ``module.state_dict()``, so one module has one hash in memory and on disk. Give
    ``metadata`` at most one key: safetensors writes several in no fixed order, and the hash
    would then change from call to call.
    """
    if metadata is not None and len(metadata) > 1:
        raise ValueError(f"a reproducible hash takes at most one metadata key, got "
                         f"{sorted(metadata)}: join them into one (e.g. as JSON)")
    tensors = weights.state_dict() if hasattr(weights, "state_dict") else weights
    return sha256_bytes(safetensors_bytes(tensors, metadata))


def save_safetensors_atomically(
    path: Path, tensors: Mapping[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> Path:
    """Write ``tensors`` (see :func:`safetensors_bytes`) with header ``metadata`` to ``path``
    atomically.

    Returns:
        ``path``.
    """
    return atomic_write_bytes(path, safetensors_bytes(tensors, metadata))

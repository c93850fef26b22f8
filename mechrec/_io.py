"""Atomic file writes shared by the core's ``save`` methods.

Every writer puts its bytes into a temporary file beside the target (same folder, so the final
``os.replace`` is an atomic rename) and removes the temporary file if anything fails: a failed
write leaves any earlier file untouched and no stray ``.tmp`` file behind.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from safetensors.torch import save_file


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
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`); returns ``path``."""

    def write(tmp: str) -> None:
        with open(tmp, "w") as handle:
            handle.write(text)

    return atomic_write(path, write)


def save_safetensors_atomically(
    path: Path, tensors: Mapping[str, torch.Tensor], metadata: dict[str, str]
) -> Path:
    """Write ``tensors`` (made contiguous) with header ``metadata`` to ``path`` atomically.

    Returns:
        ``path``.
    """
    contiguous = {name: tensor.contiguous() for name, tensor in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(contiguous, tmp, metadata=metadata))

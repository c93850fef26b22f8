"""Saving and loading SAEs in the sae-lens directory format, with our normaliser beside them.

A saved SAE is a directory holding

- ``cfg.json`` and ``sae_weights.safetensors``: written by sae-lens itself
  (:meth:`sae_lens.SAE.save_model`), so ``sae_lens.SAE.load_from_disk(directory)`` loads it;
  ``cfg.json`` carries ``metadata.hook_name``;
- ``normalizer.safetensors``: the :class:`~mechrec.normalization.Normalizer` the SAE was
  trained behind (the SAE itself sees normalised activations);
- ``mechrec.json`` (optional): provenance, i.e. the training configuration and the metrics
  measured at the end of training.

Directories are written atomically: everything goes to a temporary sibling directory that is
then renamed into place, so an interrupted save never leaves a half-written SAE.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mechrec.normalization import NORMALIZER_FILENAME

#: sae-lens file names (kept equal to ``sae_lens.constants``).
SAE_CFG_FILENAME = "cfg.json"
SAE_WEIGHTS_FILENAME = "sae_weights.safetensors"
#: Our provenance file.
PROVENANCE_FILENAME = "mechrec.json"


def write_directory_atomically(directory: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_dir)`` then move ``tmp_dir`` to ``directory``, replacing it if present."""
    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    old: Path | None = None
    try:
        write(tmp)
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists():
            shutil.rmtree(old, ignore_errors=True)
    return target


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` as indented JSON (strict: no NaN)."""
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, allow_nan=False) + "\n")


def read_provenance(directory: str | os.PathLike) -> dict[str, Any] | None:
    """The ``mechrec.json`` provenance of a saved SAE, or ``None`` if it has none."""
    path = Path(directory) / PROVENANCE_FILENAME
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def check_sae_directory(directory: str | os.PathLike, *, need_normalizer: bool = True) -> Path:
    """Check a saved-SAE directory has its files; raise a clear error naming what is missing."""
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(
            f"SAE directory {root} does not exist: pass the folder that NormalizedSAE.save "
            "(or sae_lens' save_model) wrote, holding cfg.json and sae_weights.safetensors"
        )
    for name in (SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME):
        if not (root / name).is_file():
            raise FileNotFoundError(
                f"{root / name} is missing: {root} is not a saved sae-lens SAE (expected "
                f"{SAE_CFG_FILENAME} and {SAE_WEIGHTS_FILENAME})"
            )
    if need_normalizer and not (root / NORMALIZER_FILENAME).is_file():
        raise FileNotFoundError(
            f"{root / NORMALIZER_FILENAME} is missing: the SAE in {root} was saved without the "
            "normalisation statistics it was trained with, so raw activations cannot be fed to "
            "it. Re-save it with NormalizedSAE.save, or, if it was trained on raw activations, "
            "load it with NormalizedSAE.load(directory, normalizer=Normalizer.identity(d_in))."
        )
    return root

"""Saving and loading SAEs in the sae-lens directory format, with our normaliser beside them.

A saved SAE is a directory holding

- ``cfg.json`` and ``sae_weights.safetensors``: written by sae-lens itself
  (:meth:`sae_lens.SAE.save_model`), so ``sae_lens.SAE.load_from_disk(directory)`` loads it;
  ``cfg.json`` carries ``metadata.hook_name``. The weights have the normaliser folded in
  (:mod:`mechrec.saes.folding`): the sae-lens SAE reads *raw* activations and its features,
  reconstructions and ``HookedSAETransformer.add_sae`` splice equal mechrec's up to float
  rounding; ``cfg.json`` says ``normalize_activations: "none"``, which is then true, and
  records the fold under ``metadata.mechrec_normalizer_fold``;
- ``normalizer.safetensors``: the :class:`~mechrec.normalization.Normalizer` the SAE was
  trained behind. mechrec keeps working in normalised space (training, unit-norm decoder
  rows, feature units), so :meth:`~mechrec.saes.normalized.NormalizedSAE.load` unfolds the
  saved weights with it;
- ``mechrec.json`` (optional): provenance, i.e. the training configuration and the metrics
  measured at the end of training;
- ``mechrec.sae.json``: the integrity record: the SHA-256 of every other file (the content
  hash model checkpoints use, :mod:`mechrec._io`) and, when known, the ``source`` of the
  activations the SAE was trained on (e.g. the hash of the model's weights and the hook).
  Loading checks every hash, so a truncated, bit-flipped or swapped file is refused instead
  of giving silently wrong features. sae-lens ignores the extra files.

One source of truth. The weights are stored once, folded: there is no second, normalised
copy that could drift from what sae-lens users load. The normaliser file holds only the
affine map needed to unfold them (float64 arithmetic, rounded once; the unfolded SAE equals
the saved one to about one float32 ulp). Folders written before the fold (normalised-space
weights; their ``cfg.json`` has no fold record) still load in mechrec unchanged; plain
sae-lens must be given ``normalizer.normalize(x)`` for those.

Directories are written atomically: everything goes to a temporary sibling directory that is
then renamed into place, so an interrupted save never leaves a half-written SAE.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mechrec._io import atomic_write_json, sha256_file
from mechrec.normalization import NORMALIZER_FILENAME

#: sae-lens file names (kept equal to ``sae_lens.constants``).
SAE_CFG_FILENAME = "cfg.json"
SAE_WEIGHTS_FILENAME = "sae_weights.safetensors"
#: Our provenance file.
PROVENANCE_FILENAME = "mechrec.json"
#: Our integrity record (file hashes and the SAE's source).
MANIFEST_FILENAME = "mechrec.sae.json"
MANIFEST_FORMAT = "mechrec.sae_files/1"


def write_directory_atomically(directory: str | os.PathLike, write: Callable[[Path], None],
                               *, overwrite: bool = True) -> Path:
    """Call ``write(tmp_dir)`` then move ``tmp_dir`` to ``directory``.

    With ``overwrite`` an existing ``directory`` is replaced; without it the move refuses to
    replace one, even one that appeared while ``write`` ran.

    Raises:
        FileExistsError: ``directory`` exists and ``overwrite`` is false.
    """
    target = Path(directory)
    if not overwrite and target.exists():
        raise _exists(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    old: Path | None = None
    try:
        write(tmp)
        if not overwrite:
            try:  # rename(2) refuses to replace a non-empty folder; an empty one is refused too
                if target.exists():
                    raise _exists(target)
                os.rename(tmp, target)
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    raise _exists(target) from None
                raise
            return target
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


def _exists(target: Path) -> FileExistsError:
    return FileExistsError(
        f"{target} already exists (another run may have saved it meanwhile): choose another "
        "name, or pass overwrite=True (--overwrite) to replace it"
    )


def write_manifest(directory: Path, source: dict[str, Any] | None = None) -> Path:
    """Record the SHA-256 of every file in ``directory`` (and ``source``) in its manifest."""
    files = {path.name: sha256_file(path) for path in sorted(directory.iterdir())
             if path.is_file() and path.name != MANIFEST_FILENAME}
    payload: dict[str, Any] = {"format": MANIFEST_FORMAT, "sha256": files}
    if source is not None:
        payload["source"] = source
    path = directory / MANIFEST_FILENAME
    atomic_write_json(path, payload)
    return path


def verify_manifest(directory: str | os.PathLike) -> dict[str, Any] | None:
    """Check every file hash recorded in a saved SAE's manifest; return the manifest.

    Returns ``None`` when the directory has no manifest (an SAE saved by plain sae-lens or an
    older mechrec, which cannot be checked).

    Raises:
        ValueError: the manifest is unreadable, a recorded file is missing, or a file's bytes
            do not have the recorded hash; the message names the file and the fix.
    """
    root = Path(directory)
    path = root / MANIFEST_FILENAME
    if not path.is_file():
        return None
    fix = ("the SAE is damaged (interrupted copy, corruption or tampering): train it again or "
           "restore the folder from a good copy")
    try:
        manifest = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); {fix}") from None
    if not isinstance(manifest, dict):
        manifest = {}
    hashes = manifest.get("sha256")
    if manifest.get("format") != MANIFEST_FORMAT or not isinstance(hashes, dict) or not all(
            isinstance(v, str) for v in hashes.values()):
        raise ValueError(f"{path} is not a mechrec SAE manifest (format {MANIFEST_FORMAT}); "
                         f"{fix}")
    for name, expected in hashes.items():
        file = root / name
        if Path(name).name != name or not file.is_file():
            raise ValueError(f"{file} is missing but {path.name} records it; {fix}")
        if sha256_file(file) != expected:
            raise ValueError(f"{file} does not match the hash recorded in {path.name} "
                             f"(interrupted write, corruption or tampering); {fix}")
    for required in (SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME):
        if required not in hashes:
            raise ValueError(f"{path} records no hash for {required}; {fix}")
    return manifest


def read_provenance(directory: str | os.PathLike) -> dict[str, Any] | None:
    """The ``mechrec.json`` provenance of a saved SAE, or ``None`` if it has none."""
    path = Path(directory) / PROVENANCE_FILENAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}): the SAE's provenance is damaged; "
                         "train it again or restore the folder from a good copy") from None


def is_mechrec_directory(directory: str | os.PathLike) -> bool:
    """Whether mechrec wrote this SAE folder (it has mechrec's manifest or provenance), as
    opposed to plain sae-lens (``cfg.json`` and weights only)."""
    root = Path(directory)
    return (root / MANIFEST_FILENAME).is_file() or (root / PROVENANCE_FILENAME).is_file()


def check_sae_directory(directory: str | os.PathLike, *, need_normalizer: bool = True) -> Path:
    """Check a saved-SAE directory has its files; raise a clear error naming what is missing."""
    root = Path(directory)
    if root.is_file():
        raise FileNotFoundError(
            f"{root} is a file, not an SAE folder: pass the folder holding "
            f"{SAE_CFG_FILENAME} and {SAE_WEIGHTS_FILENAME} (or a dictionary_learning ae.pt)"
        )
    if not root.is_dir():
        raise FileNotFoundError(
            f"SAE directory {root} does not exist: pass the folder that NormalizedSAE.save "
            "(or sae_lens' save_model) wrote, holding cfg.json and sae_weights.safetensors"
        )
    for name in (SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME):
        if not (root / name).is_file():
            found = ", ".join(sorted(p.name for p in root.iterdir())[:12]) or "nothing"
            raise FileNotFoundError(
                f"{root / name} is missing: {root} is not a saved sae-lens SAE (expected "
                f"{SAE_CFG_FILENAME} and {SAE_WEIGHTS_FILENAME}; found: {found}). mechrec also "
                "reads sparsify folders (cfg.json + sae.safetensors) and dictionary_learning "
                "ae.pt checkpoints"
            )
    if need_normalizer and not (root / NORMALIZER_FILENAME).is_file():
        raise FileNotFoundError(
            f"{root / NORMALIZER_FILENAME} is missing: the SAE in {root} was saved by mechrec "
            "but without the normalisation statistics it was trained with, so raw activations "
            "cannot be fed to it. Re-save it with NormalizedSAE.save, or, if it was trained on "
            "raw activations, load it with NormalizedSAE.load(directory, "
            "normalizer=Normalizer.identity(d_in)). (A plain sae-lens folder, with only "
            f"{SAE_CFG_FILENAME} and {SAE_WEIGHTS_FILENAME}, loads without one.)"
        )
    return root

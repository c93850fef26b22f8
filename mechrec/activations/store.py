"""Activations sharded to disk: safetensors shards plus a JSON manifest.

Layout of a store directory::

    store.json                 manifest: format, hook name, width, row count, shard list
    moments.safetensors        per-dimension count/mean/M2 (float64), for normalisation
    shard-00000.safetensors    activations (n, d) float32, sequence_index/position/token (n,) int64
    shard-00001.safetensors
    ...

The manifest is written last: a directory without ``store.json`` is an interrupted
collection and is refused. Shards are read one at a time, so using a store never needs more
memory than one shard.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from mechrec._io import atomic_write_json
from mechrec.activations.sets import ActivationSet
from mechrec.normalization import RunningMoments

MANIFEST_FILENAME = "store.json"
MOMENTS_FILENAME = "moments.safetensors"
STORE_FORMAT = "mechrec.activations/1"
_INDEX_KEYS = ("sequence_index", "position", "token")


def bytes_per_row(d: int) -> int:
    """Memory of one stored row: ``d`` float32 values plus three int64 indices."""
    return 4 * d + 8 * len(_INDEX_KEYS)


class ActivationStore:
    """A read-only view of a store directory (see the module docstring).

    Use :meth:`open` to read one; :func:`mechrec.activations.collect_activations` writes them.
    """

    def __init__(self, directory: Path, manifest: dict[str, Any]) -> None:
        self.directory = directory
        self.manifest = manifest
        self.hook_name: str = manifest["hook_name"]
        self._shards: list[dict[str, Any]] = manifest["shards"]
        self._moments: RunningMoments | None = None

    @classmethod
    def open(cls, directory: str | os.PathLike) -> ActivationStore:
        """Open an existing store; raise a clear error if it is missing or incomplete."""
        root = Path(directory)
        path = root / MANIFEST_FILENAME
        if not path.is_file():
            what = "does not exist" if not root.exists() else f"has no {MANIFEST_FILENAME}"
            raise FileNotFoundError(
                f"activation store {root} {what}: write one with "
                "collect_activations(..., memory_budget_mb=..., store_dir=...); a directory "
                "without a manifest is an interrupted collection and must be collected again"
            )
        manifest = json.loads(path.read_text())
        if manifest.get("format") != STORE_FORMAT:
            raise ValueError(
                f"{path} is not a mechrec activation store (format "
                f"{manifest.get('format')!r}, expected {STORE_FORMAT!r})"
            )
        for shard in manifest["shards"]:
            if not (root / shard["file"]).is_file():
                raise FileNotFoundError(
                    f"shard {root / shard['file']} listed in {path} is missing: the store is "
                    "damaged, collect the activations again"
                )
        return cls(root, manifest)

    def __len__(self) -> int:
        return int(self.manifest["n_rows"])

    @property
    def d(self) -> int:
        """Width of one row."""
        return int(self.manifest["d"])

    @property
    def n_chunks(self) -> int:
        """Number of shards."""
        return len(self._shards)

    def chunk(self, i: int) -> ActivationSet:
        """Load shard ``i`` into memory."""
        tensors = load_file(str(self.directory / self._shards[i]["file"]))
        return ActivationSet(
            self.hook_name,
            tensors["activations"],
            tensors["sequence_index"],
            tensors["position"],
            tensors["token"],
        )

    def moments(self) -> RunningMoments:
        """Per-dimension statistics saved at collection time (streamed, float64)."""
        if self._moments is None:
            with safe_open(str(self.directory / MOMENTS_FILENAME), framework="pt") as f:
                self._moments = RunningMoments(
                    d=self.d,
                    count=len(self),
                    mean=f.get_tensor("mean"),
                    m2=f.get_tensor("m2"),
                )
        return self._moments

    def load(self) -> ActivationSet:
        """Every shard concatenated in memory (only for stores that fit)."""
        return ActivationSet.concat([self.chunk(i) for i in range(self.n_chunks)])

    def __repr__(self) -> str:
        return (
            f"ActivationStore({str(self.directory)!r}, hook_name={self.hook_name!r}, "
            f"rows={len(self)}, d={self.d}, shards={self.n_chunks})"
        )


class ShardWriter:
    """Accumulates rows in one preallocated buffer and writes it out as shards when full.

    The buffer holds ``shard_rows`` rows, so the rows held in memory never exceed that
    number however many rows pass through (``peak_rows`` records the largest count held).

    Args:
        hook_name: hook the rows come from.
        d: row width.
        shard_rows: capacity of the buffer (and size of every shard but the last).
        directory: where to write shards; ``None`` until a spill is needed.
        prefix: start of the shard file names (``shard-r001-`` for rank 1 of a collection
            under ``torchrun``, so that ranks never write the same file).
    """

    def __init__(
        self,
        hook_name: str,
        d: int,
        shard_rows: int,
        directory: Path | None,
        prefix: str = "shard-",
    ) -> None:
        if shard_rows < 1:
            raise ValueError(
                f"the memory budget holds less than one row of {bytes_per_row(d)} bytes; "
                "raise memory_budget_mb"
            )
        self.hook_name = hook_name
        self.d = d
        self.shard_rows = shard_rows
        self.directory = directory
        self.prefix = prefix
        # torch.empty does not touch its pages: only rows actually written cost memory.
        self.acts = torch.empty(shard_rows, d, dtype=torch.float32)
        self.index = {k: torch.empty(shard_rows, dtype=torch.long) for k in _INDEX_KEYS}
        self.fill = 0
        self.peak_rows = 0
        self.shards: list[dict[str, Any]] = []
        self.n_rows = 0

    def add(self, chunk: ActivationSet) -> None:
        """Copy ``chunk``'s rows into the buffer, writing shards whenever it is full."""
        start = 0
        n = len(chunk)
        while start < n:
            if self.fill == self.shard_rows:
                self.flush()
            take = min(n - start, self.shard_rows - self.fill)
            end = self.fill + take
            self.acts[self.fill : end] = chunk.activations[start : start + take]
            for key in _INDEX_KEYS:
                self.index[key][self.fill : end] = getattr(chunk, key)[start : start + take]
            self.fill = end
            self.peak_rows = max(self.peak_rows, self.fill)
            start += take
            self.n_rows += take

    def flush(self) -> None:
        """Write the buffered rows as the next shard and empty the buffer."""
        if self.fill == 0:
            return
        if self.directory is None:
            raise ValueError(
                f"the activations exceed the memory budget ({self.shard_rows} rows of "
                f"{bytes_per_row(self.d)} bytes): pass store_dir=... to stream them to disk in "
                "shards, or raise memory_budget_mb"
            )
        name = f"{self.prefix}{len(self.shards):05d}.safetensors"
        tensors = {"activations": self.acts[: self.fill]}
        tensors.update({k: v[: self.fill] for k, v in self.index.items()})
        save_file(tensors, str(self.directory / name))
        self.shards.append({"file": name, "n_rows": self.fill})
        self.fill = 0

    def in_memory(self) -> ActivationSet:
        """The buffered rows as an :class:`ActivationSet` (views, no copy)."""
        return ActivationSet(
            self.hook_name,
            self.acts[: self.fill],
            *(self.index[k][: self.fill] for k in _INDEX_KEYS),
        )

    def finish(self, moments: RunningMoments, extra: dict[str, Any]) -> ActivationStore:
        """Write the last shard, the moments and the manifest; return the opened store."""
        assert self.directory is not None
        self.flush()
        return write_manifest(
            self.directory,
            self.hook_name,
            self.d,
            self.shards,
            moments,
            {"shard_rows": self.shard_rows, "peak_rows_in_memory": self.peak_rows, **extra},
        )


def write_manifest(
    directory: Path,
    hook_name: str,
    d: int,
    shards: list[dict[str, Any]],
    moments: RunningMoments,
    extra: dict[str, Any],
) -> ActivationStore:
    """Write the moments, then the manifest (last, atomically) of shards already on disk.

    Args:
        directory: the store directory holding the shards.
        hook_name: hook the rows come from.
        d: row width.
        shards: ``{"file", "n_rows"}`` of every shard, in the store's row order.
        moments: statistics over all the rows.
        extra: further manifest fields (provenance, shard size...).
    """
    save_file(
        {"mean": moments.mean.contiguous(), "m2": moments.m2.contiguous()},
        str(directory / MOMENTS_FILENAME),
    )
    manifest = {
        "format": STORE_FORMAT,
        "hook_name": hook_name,
        "d": d,
        "n_rows": sum(int(s["n_rows"]) for s in shards),
        "dtype": "float32",
        "shards": shards,
        **extra,
    }
    atomic_write_json(directory / MANIFEST_FILENAME, manifest, sort_keys=False)
    return ActivationStore(directory, manifest)


def prepare_store_dir(directory: str | os.PathLike, overwrite: bool) -> Path:
    """Create an empty store directory; refuse to clobber an existing one unless asked."""
    root = Path(directory)
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"store directory {root} is not empty: pass overwrite=True to replace it, or "
                "choose another directory"
            )
        if not (root / MANIFEST_FILENAME).is_file() and not any(
            p.name.startswith("shard-") for p in root.iterdir()
        ):
            raise FileExistsError(
                f"{root} holds files that are not an activation store; refusing to delete them"
            )
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    return root

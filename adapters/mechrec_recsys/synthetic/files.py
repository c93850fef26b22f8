"""Writing a world to a folder in bounded memory, and reading it back.

A world folder holds (parquet files have one row group per chunk of users):

* ``interactions.parquet``: ``user_id``, ``item_id``, ``timestamp`` (int64 seconds, strictly
  increasing along each user), ``order`` (0-based position in the user's sequence), in user
  then sequence order. Read it with :func:`load_world` (or ``load_generic`` directly).
* ``items.parquet``: the world's catalog: ``item_id``, ``title``, ``year``, ``genres`` (the
  catalog's labels, ``|``-separated), ``era``, ``popularity``, ``franchise``, ``part``,
  ``franchise_stem``.
* ``events.parquet``: the planted truth per event, **row for row** with
  ``interactions.parquet``: ``user_id``, ``order``, ``kind`` (0 taste, 1 franchise,
  2 popular), ``genre`` (index of the latent genre choice into ``world.json``'s
  ``genres``; -1 for franchise and popular events), ``era`` (latent era index; -1 likewise),
  ``franchise`` (series of the event's item, -1 if none) and ``continued`` (the event is the
  next part of the series of the event before it).
* ``users.parquet``: ``user_id``, ``length``, ``first_timestamp``, ``last_timestamp``,
  ``taste_start`` and ``taste_end`` (genre taste vectors, order of ``genres``; event ``t``
  of ``L`` used ``(1 - t/(L-1)) * start + t/(L-1) * end``) and ``era_taste`` (order of
  ``eras``).
* ``world.json``: format version, the generator config and seed, the catalog path and its
  size, the planted genres and eras, the franchises found, the length distribution and the
  counts. Written last: a folder without it is an unfinished world.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mechrec._io import atomic_write_json
from mechrec_recsys.data.catalog import ItemCatalog
from mechrec_recsys.data.dataset import Dataset
from mechrec_recsys.data.generic import load_generic
from mechrec_recsys.synthetic.config import SynthConfig
from mechrec_recsys.synthetic.world import (
    KIND_NAMES,
    Chunk,
    ProgressFn,
    WorldCatalog,
    _Sampler,
    chunk_count,
    generate_chunk,
    length_mu,
    prepare_catalog,
)

FORMAT_VERSION = 1
WORLD_FILES = ("interactions.parquet", "items.parquet", "events.parquet", "users.parquet",
               "world.json")
#: The column mapping of ``interactions.parquet`` for ``load_generic``.
INTERACTION_COLUMNS = {"user_id": "user_id", "item_id": "item_id", "timestamp": "timestamp",
                       "order": "order"}

_EVENT_COLUMNS = ("user_id", "order", "kind", "genre", "era", "franchise", "continued")


def _table(columns: dict[str, np.ndarray]) -> pa.Table:
    arrays = {}
    for name, values in columns.items():
        if values.ndim == 2:
            flat = pa.array(values.ravel())
            arrays[name] = pa.FixedSizeListArray.from_arrays(flat, values.shape[1])
        else:
            arrays[name] = pa.array(values)
    return pa.table(arrays)


class _Writers:
    """One parquet writer per chunked file, opened on the first chunk."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.writers: dict[str, pq.ParquetWriter] = {}

    def write(self, name: str, columns: dict[str, np.ndarray]) -> None:
        table = _table(columns)
        if name not in self.writers:
            self.writers[name] = pq.ParquetWriter(self.folder / name, table.schema,
                                                  compression="zstd")
        self.writers[name].write_table(table, row_group_size=max(1, table.num_rows))

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()


@dataclass
class WorldSummary:
    """What :func:`generate_world` made.

    Attributes:
        folder: the world folder.
        info: the contents of ``world.json``.
    """

    folder: Path
    info: dict

    @property
    def events(self) -> int:
        """Number of events written."""
        return int(self.info["counts"]["events"])

    def line(self) -> str:
        """One line for people: users, events, items, franchises, kinds, time."""
        counts = self.info["counts"]
        kinds = ", ".join(f"{100 * counts['kinds'][k] / max(counts['events'], 1):.1f}% {k}"
                          for k in KIND_NAMES)
        return (f"{counts['users']:,} users, {counts['events']:,} events "
                f"(mean length {counts['mean_length']:.1f}) over {counts['items']:,} items "
                f"({self.info['franchises']['series']:,} franchises); {kinds}; "
                f"{self.info['seconds']:.1f} s")


def _check_folder(folder: Path, overwrite: bool) -> None:
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder} exists and is not a folder; choose another --out")
    present = [name for name in WORLD_FILES if (folder / name).exists()]
    if present and not overwrite:
        raise ValueError(f"{folder} already holds a world ({', '.join(present)}); choose "
                         "another folder or overwrite it (--overwrite)")
    folder.mkdir(parents=True, exist_ok=True)
    for name in present:
        (folder / name).unlink()


def generate_world(
    config: SynthConfig,
    catalog: ItemCatalog,
    out_dir: str | Path,
    *,
    catalog_source: str | None = None,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
) -> WorldSummary:
    """Generate a world and write it to ``out_dir`` chunk by chunk (memory: one chunk plus the
    catalog, whatever the number of users).

    Args:
        config: the generator's parameters and seed.
        catalog: the items to draw from (titles, years and genres).
        out_dir: the world folder (created; see the module documentation for its files).
        catalog_source: where the catalog came from, for ``world.json``.
        overwrite: replace a world already in ``out_dir`` (else that is an error).
        progress: called after each chunk with ``(users done, users, events written)``.

    Raises:
        ValueError: a bad config, a catalog unfit for it, or an occupied ``out_dir``.
    """
    began = time.perf_counter()
    config.validate()
    world = prepare_catalog(catalog, config)
    mu = length_mu(config)
    folder = Path(out_dir)
    _check_folder(folder, overwrite)
    sampler = _Sampler(world)
    writers = _Writers(folder)
    counts = {"events": 0, "kinds": dict.fromkeys(KIND_NAMES, 0), "continued": 0,
              "repeats_filled_by_popularity": 0, "min_length": None,
              "max_length": 0}
    item_counts = np.zeros(len(world), dtype=np.int64)
    try:
        for index in range(chunk_count(config)):
            chunk = generate_chunk(world, sampler, config, index, mu)
            _write_chunk(writers, chunk)
            _count(counts, chunk, world, item_counts)
            if progress is not None:
                progress(min((index + 1) * config.chunk_users, config.users), config.users,
                         counts["events"])
    finally:
        writers.close()
    world.table.assign(events=item_counts).to_parquet(folder / "items.parquet", index=False)
    info = _world_info(config, world, mu, counts, item_counts, catalog_source,
                       time.perf_counter() - began)
    atomic_write_json(folder / "world.json", info, sort_keys=False)
    return WorldSummary(folder=folder, info=info)


def _write_chunk(writers: _Writers, chunk: Chunk) -> None:
    events = chunk.events
    writers.write("interactions.parquet", {k: events[k] for k in INTERACTION_COLUMNS})
    writers.write("events.parquet", {k: events[k] for k in _EVENT_COLUMNS})
    writers.write("users.parquet", chunk.users)


def _count(counts: dict, chunk: Chunk, world: WorldCatalog, item_counts: np.ndarray) -> None:
    events = chunk.events
    counts["events"] += len(events["kind"])
    for code, name in enumerate(KIND_NAMES):
        counts["kinds"][name] += int((events["kind"] == code).sum())
    counts["continued"] += int(events["continued"].sum())
    for key, value in chunk.counts.items():
        counts[key] += value
    lengths = chunk.users["length"]
    low = int(lengths.min())
    counts["min_length"] = low if counts["min_length"] is None else min(counts["min_length"],
                                                                        low)
    counts["max_length"] = max(counts["max_length"], int(lengths.max()))
    index = np.searchsorted(world.item_ids, events["item_id"])
    np.add.at(item_counts, index, 1)


def _gini(counts: np.ndarray) -> float:
    values = np.sort(counts.astype(np.float64))
    n = len(values)
    if n == 0 or values.sum() == 0:
        return 0.0
    return float(((2 * np.arange(1, n + 1) - n - 1) @ values) / (n * values.sum()))


def _world_info(config: SynthConfig, world: WorldCatalog, mu: float, counts: dict,
                item_counts: np.ndarray, catalog_source: str | None, seconds: float) -> dict:
    seen = np.sort(item_counts[item_counts > 0])[::-1]
    top = max(1, len(seen) // 10)
    counts = dict(counts)
    counts.update({
        "users": config.users,
        "items": len(world),
        "items_seen": int((item_counts > 0).sum()),
        "mean_length": counts["events"] / config.users,
        "item_gini": _gini(item_counts[item_counts > 0]),
        "top10pct_items_share": float(seen[:top].sum() / max(seen.sum(), 1)),
    })
    sizes = np.bincount(world.franchise[world.franchise >= 0])
    return {
        "format_version": FORMAT_VERSION,
        "generator": "mechrec_recsys.synthetic",
        "seed": config.seed,
        "config": config.to_dict(),
        "catalog": {"source": catalog_source, "items": world.catalog_items,
                    "items_without_planted_genre": world.no_genre_items,
                    "items_used": len(world)},
        "genres": world.genre_names,
        "eras": world.era_names,
        "kinds": list(KIND_NAMES),
        "length_distribution": {
            "family": "log-normal truncated to [min_len, max_len], rounded",
            "mu": mu, "sigma": config.length_sigma, "min_len": config.min_len,
            "max_len": config.max_len, "target_mean": config.mean_length},
        "franchises": {"series": len(world.franchise_stems),
                       "items": int((world.franchise >= 0).sum()),
                       "largest": int(sizes.max()) if len(sizes) else 0},
        "counts": counts,
        "seconds": round(seconds, 2),
        "files": list(WORLD_FILES),
        "load": "mechrec_recsys.synthetic.load_world(folder)",
    }


def read_info(folder: str | Path) -> dict:
    """The ``world.json`` of a world folder.

    Raises:
        FileNotFoundError: no ``world.json`` (not a world, or an unfinished one).
    """
    path = Path(folder) / "world.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {folder} is not a finished synthetic world "
                                "(generate one with `mechrec data synth`)")
    return json.loads(path.read_text())


def load_world(folder: str | Path, name: str | None = None) -> Dataset:
    """The world's interactions and catalog as a :class:`Dataset`, through ``load_generic``
    (timestamps and the explicit ``order`` column; genres are the catalog's labels)."""
    folder = Path(folder)
    read_info(folder)
    return load_generic(folder / "interactions.parquet", folder / "items.parquet",
                        columns=INTERACTION_COLUMNS,
                        item_columns={"item_id": "item_id", "title": "title", "year": "year"},
                        genre_column="genres", name=name or folder.name)


@dataclass
class WorldTruth:
    """The planted structure of a world.

    Attributes:
        info: ``world.json``.
        events: per event, row for row with ``interactions.parquet`` (columns as asked).
        users: per user: ``user_id``, ``length``, ``first_timestamp``, ``last_timestamp``.
        taste_start: ``(users, genres)`` genre taste at each user's first event.
        taste_end: ``(users, genres)`` genre taste at the last event.
        era_taste: ``(users, eras)``.
        items: ``items.parquet`` (era, popularity, franchise and part of every world item).
    """

    info: dict
    events: pd.DataFrame
    users: pd.DataFrame
    taste_start: np.ndarray
    taste_end: np.ndarray
    era_taste: np.ndarray
    items: pd.DataFrame

    @property
    def genres(self) -> list[str]:
        """The planted genres, in the order of ``events.genre`` and the taste columns."""
        return list(self.info["genres"])

    def rows(self, user_ids: np.ndarray, order: np.ndarray) -> np.ndarray:
        """Rows of :attr:`events` (and of ``interactions.parquet``) of the events at positions
        ``order`` of users ``user_ids``, e.g. to look up the latent genre of every position of
        split sequences (a sequence truncated to its last ``n`` items starts at order
        ``length - n``; a held-out input of ``n`` items at ``length - 1 - n``).

        Raises:
            IndexError: a user id or position the world does not have.
        """
        user_ids = np.asarray(user_ids, dtype=np.int64)
        order = np.asarray(order, dtype=np.int64)
        lengths = self.users["length"].to_numpy(dtype=np.int64)
        index = user_ids - 1
        if np.any((index < 0) | (index >= len(lengths))):
            raise IndexError(f"user ids must be in 1..{len(lengths)}")
        if np.any((order < 0) | (order >= lengths[index])):
            raise IndexError("a position is past its user's sequence")
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        return starts[index] + order

    def taste_at(self, user_index: np.ndarray, order: np.ndarray) -> np.ndarray:
        """The genre taste used by events at positions ``order`` of users at rows
        ``user_index`` of :attr:`users` (``(n, genres)``)."""
        lengths = self.users["length"].to_numpy()[user_index]
        w = (np.asarray(order) / np.maximum(lengths - 1, 1))[:, None]
        return (1 - w) * self.taste_start[user_index] + w * self.taste_end[user_index]


def _matrix(column: pd.Series) -> np.ndarray:
    return np.stack(column.to_numpy()).astype(np.float32)


def read_truth(folder: str | Path, event_columns: list[str] | None = None) -> WorldTruth:
    """The planted structure saved with a world (for scoring features against it).

    Args:
        folder: a world folder.
        event_columns: columns of ``events.parquet`` to read (default: all); a world of
            ml-20m size has 20M rows, so read only what is needed.
    """
    folder = Path(folder)
    info = read_info(folder)
    events = pd.read_parquet(folder / "events.parquet", columns=event_columns)
    users = pd.read_parquet(folder / "users.parquet")
    tastes = {k: _matrix(users.pop(k)) for k in ("taste_start", "taste_end", "era_taste")}
    items = pd.read_parquet(folder / "items.parquet")
    return WorldTruth(info=info, events=events, users=users, items=items, **tastes)

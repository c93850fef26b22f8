"""Reading what wandb logged offline, for the tracking tests: the runs under ``WANDB_DIR``
and the rows of a run's ``.wandb`` file. Imported by name (``from wandb_offline import
...``); the ``offline_wandb`` fixture (tests/conftest.py) points wandb at a test folder."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path


def run_dirs(directory: Path) -> list[Path]:
    """The offline runs wandb wrote under ``directory`` (``WANDB_DIR``)."""
    return sorted(directory.glob("wandb/offline-run-*"))


def run_id_of(run_dir: Path) -> str:
    """The wandb run id in an offline run folder's name, ``offline-run-<time>-<id>``; wandb
    appends ``-1``, ``-2``... when a second session of the same run starts within the same
    second, so the id is the fourth dash-separated part, not the last."""
    return run_dir.name.split("-")[3]


def wandb_records(path: Path) -> list:
    """wandb's protobuf records in an offline run's ``.wandb`` file (a LevelDB-style log: a
    7-byte header, then 32 KiB blocks of chunks, each ``crc32 (4) | length (2) | type (1)``,
    type 1 a whole record, 2/3/4 its first/middle/last part)."""
    from wandb.proto import wandb_internal_pb2

    raw = path.read_bytes()
    assert raw[:4] == b":W&B"
    block, pos, chunk, records = 32768, 7, b"", []
    while pos + 7 <= len(raw):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos:pos + 7])
        if length == 0 and kind == 0:  # padding to the end of the block
            pos += left
            continue
        chunk += raw[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            records.append(record)
            chunk = b""
    return records


def wandb_history(run_dir: Path, timeout: float = 60.0) -> list[dict]:
    """The rows ``wandb.log`` wrote to an offline run. wandb's core process may still be
    writing the file when ``wandb.finish()`` returns: wait for the run's exit record."""
    path = next(run_dir.glob("*.wandb"))
    deadline = time.monotonic() + timeout
    while True:
        records = wandb_records(path)
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            break
        assert time.monotonic() < deadline, f"{path} has no exit record after {timeout} s"
        time.sleep(0.2)
    return [{item.key or "/".join(item.nested_key): json.loads(item.value_json)
             for item in record.history.item}
            for record in records if record.WhichOneof("record_type") == "history"]

"""Checkpoints: what a task has committed, kept inside its own RocksDB instance.

The checkpoint lives in a column family of its own (``META_CF``) and is written in the same
WriteBatch as the state changes it describes, so after a crash (kill -9 included) state,
changelog positions, source offsets and the caller's extra data are always from the same
commit. (Kafka Streams keeps changelog offsets in a ``.checkpoint`` file beside the store; a
file cannot be updated atomically with RocksDB, a column family can.)

Entries of the meta column family:

    b"commit"                 commit sequence number (8 bytes big-endian)
    b"offsets"                source offsets: JSON [[topic, partition, next offset], ...]
    b"extra"                  the caller's extra data, JSON
    b"pos/" + store name      changelog position: next changelog offset covered by the store
    b"time/" + store name     observed stream time of a windowed store (a key.encode_ts)
    b"restoring/" + store name  present while a replay is under way (its target offset):
                              a position short of the changelog end is then a restore to
                              finish, not an uncommitted tail

``snapshot`` copies a task's committed state elsewhere (a RocksDB checkpoint: hard links,
cheap), e.g. for backups or tests of restore-from-checkpoint.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import orjson
import rocksdict

from .keys import MIN_TS, decode_ts

__all__ = ["META_CF", "TaskCheckpoint", "decode_offsets", "encode_offsets", "position_key",
           "read_checkpoint", "read_positions", "restoring_key", "snapshot", "stream_time_key"]

META_CF = "__streamsql_meta"
COMMIT_KEY = b"commit"
OFFSETS_KEY = b"offsets"
EXTRA_KEY = b"extra"
_U64 = struct.Struct(">Q")


def position_key(store: str) -> bytes:
    return b"pos/" + store.encode()


def stream_time_key(store: str) -> bytes:
    return b"time/" + store.encode()


def restoring_key(store: str) -> bytes:
    return b"restoring/" + store.encode()


def encode_u64(n: int) -> bytes:
    return _U64.pack(n)


def decode_u64(data: bytes) -> int:
    return _U64.unpack(data)[0]


def encode_offsets(offsets: Mapping[tuple[str, int], int]) -> bytes:
    return orjson.dumps(sorted([t, p, o] for (t, p), o in offsets.items()))


def decode_offsets(data: bytes) -> dict[tuple[str, int], int]:
    return {(t, p): o for t, p, o in orjson.loads(data)}


@dataclass(frozen=True)
class TaskCheckpoint:
    """A task's last commit as read back from RocksDB. ``commit_id`` is 0 (and everything
    empty) for a task that never committed."""

    commit_id: int = 0
    source_offsets: Mapping[tuple[str, int], int] = field(default_factory=dict)
    extra: Any = None
    changelog_positions: Mapping[str, int] = field(default_factory=dict)
    stream_times: Mapping[str, int] = field(default_factory=dict)


def read_checkpoint(meta: rocksdict.Rdict, stores: list[str]) -> TaskCheckpoint:
    """The checkpoint in a meta column family, for the named stores."""
    raw = meta.get(COMMIT_KEY)
    commit_id = decode_u64(raw) if raw is not None else 0
    raw = meta.get(OFFSETS_KEY)
    offsets = decode_offsets(raw) if raw is not None else {}
    raw = meta.get(EXTRA_KEY)
    extra = orjson.loads(raw) if raw is not None else None
    positions: dict[str, int] = {}
    times: dict[str, int] = {}
    for name in stores:
        raw = meta.get(position_key(name))
        if raw is not None:
            positions[name] = decode_u64(raw)
        raw = meta.get(stream_time_key(name))
        times[name] = decode_ts(raw) if raw is not None else MIN_TS
    return TaskCheckpoint(commit_id, offsets, extra, positions, times)


def snapshot(db: rocksdict.Rdict, path: str | Path) -> None:
    """Copy the committed state of ``db`` to ``path`` (which must not exist), as a RocksDB
    checkpoint. Uncommitted batch writes are not in RocksDB, so they are not in the copy."""
    ck = rocksdict.Checkpoint(db)
    try:
        ck.create_checkpoint(str(path))
    finally:
        del ck


def read_positions(path: str | Path) -> dict[str, int] | None:
    """The changelog positions (store name -> offset) a closed task directory's last commit
    covers, read without opening it for writing (None: no RocksDB instance there). What a
    node reports of its local state when its consumer group assigns tasks."""
    path = Path(path)
    if not (path / "CURRENT").exists():
        return None
    if META_CF not in rocksdict.Rdict.list_cf(str(path)):
        return {}
    options = rocksdict.Options(raw_mode=True)
    db = rocksdict.Rdict(str(path), options, column_families={META_CF: options},
                         access_type=rocksdict.AccessType.read_only())
    try:
        meta = db.get_column_family(META_CF)
        found: dict[str, int] = {}
        for key, value in meta.items(from_key=b"pos/"):
            if not key.startswith(b"pos/"):
                break
            found[key[4:].decode()] = decode_u64(value)
        del meta
        return found
    finally:
        db.close()

"""State store interfaces: what an operator sees of its state.

Three kinds of store live in a task's RocksDB instance (see ``streamsql.state.task``):

* ``KeyValueStore``: bytes key -> value. Keys are the operator's already-serialized key bytes,
  so ordering (``range``/``prefix``) is bytewise.
* ``WindowStore``: (key, window start ms) -> value, for tumbling/hopping windows and stream-stream
  joins; one key's windows come back in start-time order.
* ``SessionStore``: (key, session start, session end) -> value, for session windows.

Values are serialized by the store with the spec's ``ValueSerde``: ``JSON`` (orjson,
JSON-compatible Python data: None, bool, int, float, str, list, dict with str keys) or
``BYTES`` (raw bytes kept as they are). ``put(..., None)`` deletes.

Reads see every write of the current batch (read-your-writes), before it is committed.
Iterators are lazy (they walk RocksDB iterators); do not keep one across ``commit``. While
iterating, updates and deletes of keys not reached yet are seen; keys inserted meanwhile may
not be.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import orjson

__all__ = [
    "BYTES", "JSON", "KeyValueStore", "KeyValueStoreSpec", "SessionStore", "SessionStoreSpec",
    "StateStore", "StoreSpec", "ValueSerde", "WindowStore", "WindowStoreSpec",
]


@dataclass(frozen=True)
class ValueSerde:
    """How a store turns values into the bytes it keeps (and writes to its changelog)."""

    name: str
    dumps: Callable[[Any], bytes]
    loads: Callable[[bytes], Any]


_orjson_dumps = orjson.dumps


def _json_dumps(value: Any) -> bytes:
    # Each bytes object orjson returns keeps its ~4 KiB write buffer allocated (measured:
    # 100k small results = 390 MB RSS), which a batch overlay holds until commit; a
    # right-sized copy is cheaper than the page faults.
    return bytes(memoryview(_orjson_dumps(value)))


# orjson: JSON-compatible data, at C speed. ``bytes`` on bytes returns the object itself.
JSON = ValueSerde("json", _json_dumps, orjson.loads)
BYTES = ValueSerde("bytes", bytes, bytes)


@dataclass(frozen=True)
class KeyValueStoreSpec:
    """A key-value store: ``name`` unique in its task; ``changelog`` the compacted changelog
    topic (None: no changelog, the store is local only and is not restored)."""

    name: str
    changelog: str | None = None
    values: ValueSerde = JSON


@dataclass(frozen=True)
class WindowStoreSpec:
    """A window store. Windows whose start is at or before ``observed stream time -
    retention_ms`` are invisible to reads and deleted (with changelog tombstones) at the next
    commit; observed stream time is the latest window start ever put."""

    name: str
    retention_ms: int
    changelog: str | None = None
    values: ValueSerde = JSON


@dataclass(frozen=True)
class SessionStoreSpec:
    """A session store. Sessions whose end is at or before ``observed stream time -
    retention_ms`` are invisible to reads and deleted (with changelog tombstones) at the next
    commit; observed stream time is the latest session end ever put."""

    name: str
    retention_ms: int
    changelog: str | None = None
    values: ValueSerde = JSON


StoreSpec = KeyValueStoreSpec | WindowStoreSpec | SessionStoreSpec


class StateStore(ABC):
    """What every store has: its spec (name, changelog topic, value serde)."""

    __slots__ = ()

    spec: StoreSpec

    @property
    def name(self) -> str:
        return self.spec.name


class KeyValueStore(StateStore):
    """bytes key -> value, ordered bytewise by key."""

    __slots__ = ()

    @abstractmethod
    def get(self, key: bytes) -> Any | None:
        """The value of ``key``, or None."""

    @abstractmethod
    def put(self, key: bytes, value: Any) -> None:
        """Set ``key`` to ``value`` (None deletes)."""

    @abstractmethod
    def delete(self, key: bytes) -> None:
        """Remove ``key`` (a tombstone in the changelog)."""

    @abstractmethod
    def range(self, start: bytes | None = None, end: bytes | None = None,
              reverse: bool = False) -> Iterator[tuple[bytes, Any]]:
        """(key, value) for ``start <= key < end`` (None: unbounded), in key order, or in
        reverse key order with ``reverse``."""

    @abstractmethod
    def prefix(self, prefix: bytes) -> Iterator[tuple[bytes, Any]]:
        """(key, value) for every key starting with ``prefix``, in key order."""

    def all(self) -> Iterator[tuple[bytes, Any]]:
        """Every (key, value), in key order."""
        return self.range()


class WindowStore(StateStore):
    """(key, window start) -> value; start times in epoch ms."""

    __slots__ = ()

    @property
    @abstractmethod
    def observed_stream_time(self) -> int:
        """The latest window start put (or restored); -2**63 when nothing was."""

    @abstractmethod
    def get(self, key: bytes, start: int) -> Any | None:
        """The value of ``key``'s window starting at ``start``, or None."""

    @abstractmethod
    def put(self, key: bytes, start: int, value: Any) -> None:
        """Set the window's value (None deletes); advances observed stream time."""

    @abstractmethod
    def delete(self, key: bytes, start: int) -> None:
        """Remove the window."""

    @abstractmethod
    def fetch(self, key: bytes, time_from: int, time_to: int,
              reverse: bool = False) -> Iterator[tuple[int, Any]]:
        """(start, value) of ``key``'s windows with ``time_from <= start <= time_to``, in
        start order (descending with ``reverse``)."""

    @abstractmethod
    def fetch_all(self, time_from: int, time_to: int) -> Iterator[tuple[bytes, int, Any]]:
        """(key, start, value) of every window with ``time_from <= start <= time_to``, in
        start order (then key order)."""

    @abstractmethod
    def all(self) -> Iterator[tuple[bytes, int, Any]]:
        """Every live (key, start, value), in store key order (``key || start`` bytewise:
        one key's windows in start order, keys not necessarily contiguous when one key is a
        prefix of another)."""


class SessionStore(StateStore):
    """(key, session start, session end) -> value; times in epoch ms, both ends inclusive."""

    __slots__ = ()

    @property
    @abstractmethod
    def observed_stream_time(self) -> int:
        """The latest session end put (or restored); -2**63 when nothing was."""

    @abstractmethod
    def get(self, key: bytes, start: int, end: int) -> Any | None:
        """The value of exactly this session, or None."""

    @abstractmethod
    def put(self, key: bytes, start: int, end: int, value: Any) -> None:
        """Set the session's value (None removes); advances observed stream time."""

    @abstractmethod
    def remove(self, key: bytes, start: int, end: int) -> None:
        """Remove the session."""

    @abstractmethod
    def find_sessions(self, key: bytes, earliest_end: int,
                      latest_start: int) -> Iterator[tuple[int, int, Any]]:
        """(start, end, value) of ``key``'s sessions with ``end >= earliest_end`` and
        ``start <= latest_start``, ordered by end then start. For a record at ``t`` with
        inactivity gap ``g`` the sessions to merge are ``find_sessions(key, t - g, t + g)``."""

    @abstractmethod
    def fetch(self, key: bytes) -> Iterator[tuple[int, int, Any]]:
        """(start, end, value) of every live session of ``key``, ordered by end."""

    @abstractmethod
    def fetch_all(self, earliest_end: int, latest_start: int
                  ) -> Iterator[tuple[bytes, int, int, Any]]:
        """(key, start, end, value) of every session with ``end >= earliest_end`` and
        ``start <= latest_start``, ordered by end, then start, then key."""

    @abstractmethod
    def all(self) -> Iterator[tuple[bytes, int, int, Any]]:
        """Every live (key, start, end, value), in store key order (``key || end || start``
        bytewise: one key's sessions in end order)."""

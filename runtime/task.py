"""Tasks of stateful queries in service mode: RocksDB state per partition, exactly-once.

A stage of a stateful query (an aggregation, a materialized table) runs as one *task* per
partition of the topic it reads, as in Kafka Streams. Each task has a ``TaskState`` (one
RocksDB instance, ``streamsql.state``) under ``<state dir>/<query id>/<stage>/<partition>/``
holding that partition's share of every store of the stage; each store writes a compacted
changelog topic ``_streamsql_<service id>query_<query id>-<store>-changelog`` (partition = task partition).

Stages see their stores through ``PartitionedStore`` objects: the runner binds them to the
task whose batch is being processed, so a stage's code reads and writes plain ``get``/``put``
and never sees partitions. Readers outside the stage (pull queries) read every task's data.

Exactly-once on the embedded log (``StageTasks``): in one process the engine owns the input
positions, the state, the changelogs and the outputs, so a stage commits them together. After
processing one batch (one partition) and producing its output, ONE ``TaskState.commit`` writes
the state changes, the changelog positions, the batch's input offset and, as ``extra``, the
end offsets of the topics the stage writes (its sink or repartition topic, which only it
writes) with a stage-wide commit sequence number. Batches run one at a time, so every output
record before the latest commit's end offsets is committed and at most one batch is not. On
restart each task resumes from its own committed input offset (not the consumer group's),
its changelogs are reverted past their committed positions (``TaskState``), and the output
topics are cut back (``EmbeddedLog.truncate``) to the end offsets of the stage's latest commit:
the crashed batch is processed again from the same state and writes its output once.

Because output past the latest commit may be cut, other stages read such a topic only up to
its committed end offsets (``OutputFences``, Kafka's read_committed): the aggregate stage
reading the repartition topic, and queries reading a table that a stateful query writes.

Stateless queries (CREATE STREAM AS SELECT, INSERT INTO) keep the at-least-once runner:
offsets are committed to the consumer group after their output is written, so a crash can
write a batch's output twice. INSERT INTO sinks have other writers, so they can never be cut
back. So are queries with a stage that does not declare ``exactly_once`` (its state is not all
in its stores) or with several stages writing one topic: their stages with stores
still commit state and input offsets together, but their output is at-least-once. Records produced into a stateful query's output topic by anything else (INSERT VALUES
into a CTAS table) while a batch is uncommitted would be cut with that batch if the process
dies then: only the query should write its table's topic.

A stage may read several co-partitioned topics (``source_topics``: a join step reads both
re-keyed sides): task p then reads partition p of each, and commits each batch's offset for
its own topic (the committed offsets of a task are merged).
"""
from __future__ import annotations

import asyncio
import json
import logging
import pickle
import struct
from bisect import bisect_left
from pathlib import Path
from typing import Any, Callable, Iterator

from streamsql.functions.registry import Aggregator
from streamsql.runtime.log.base import Log, RecordBatch
from streamsql.runtime.standby import StandbyTasks
from streamsql.state import (BYTES, JSON, KeyValueStoreSpec, RocksDBConfig,
                             SessionStoreSpec, StoreSpec, TaskState, ValueSerde,
                             WindowStoreSpec, destroy_state_dir)

log = logging.getLogger(__name__)

_LONG = struct.Struct(">q")
_TS = struct.Struct(">q")


def _table_dumps(row: tuple[bytes, int]) -> bytes:
    value, ts = row
    return _TS.pack(ts) + value


def _table_loads(data: bytes) -> tuple[bytes, int]:
    return data[8:], _TS.unpack_from(data)[0]


# A materialized table row: (value bytes, timestamp) as 8 bytes of timestamp + the value.
TABLE_ROW = ValueSerde("table-row", _table_dumps, _table_loads)
# Any picklable Python value (stores asked for without a kind: their values are unknown).
PICKLE = ValueSerde("pickle", pickle.dumps, pickle.loads)


def _acc_dumps(value: Any) -> bytes:
    try:
        return JSON.dumps(value)
    except TypeError:
        # An aggregator whose to_state leaves bytes or Decimal in its state: kept, as pickle.
        return pickle.dumps(value)


def _acc_loads(data: bytes) -> Any:
    # JSON never starts with 0x80, every pickle (protocol 2 on) does.
    return pickle.loads(data) if data[:1] == b"\x80" else JSON.loads(data)


# Accumulator states: JSON (what Aggregator.to_state promises), pickle for the states that
# are not JSON data after all.
ACCUMULATORS = ValueSerde("json-accumulators", _acc_dumps, _acc_loads)


def _stage_extra(metadata: str | None) -> Any:
    """A stage's task extra from an offset's metadata (None when there is none)."""
    if not metadata:
        return None
    try:
        return json.loads(metadata)
    except ValueError:
        log.warning("offset metadata that is not a task's extra: %.80r", metadata)
        return None


def changelog_topic(query_base: str, store: str) -> str:
    """The changelog topic of a query's store (DESIGN.md: ``<query>-<store>-changelog``;
    ``query_base`` is ``Engine.internal_name(query id)``)."""
    return f"{query_base}-{store}-changelog"


def _unbound(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("store is not bound to a task (used outside its stage's runner?)")


class PartitionedStore:
    """One named store of a stage, split like the stage's input: one RocksDB store per task.
    ``bind`` points the stage-facing methods at one task's store; ``tasks`` are every open
    task's state by partition (for readers outside the stage)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.tasks: dict[int, TaskState] = {}

    def spec(self, changelog: str | None) -> StoreSpec:
        raise NotImplementedError

    def attach(self, partition: int, state: TaskState) -> None:
        self.tasks[partition] = state

    def detach(self, partition: int) -> None:
        self.tasks.pop(partition, None)

    def bind(self, state: TaskState) -> None:
        raise NotImplementedError


class KeyValueStore(PartitionedStore):
    """bytes key -> value (serialized by ``values``): ``get``, ``put``, ``delete`` on the bound
    task; ``items`` over every task."""

    get: Callable[[bytes], Any] = staticmethod(_unbound)
    put: Callable[[bytes, Any], None] = staticmethod(_unbound)
    delete: Callable[[bytes], None] = staticmethod(_unbound)

    def __init__(self, name: str, values: ValueSerde = PICKLE) -> None:
        super().__init__(name)
        self.values = values

    def spec(self, changelog: str | None) -> StoreSpec:
        return KeyValueStoreSpec(self.name, changelog, self.values)

    def bind(self, state: TaskState) -> None:
        # Bound methods as instance attributes: the per-record call goes straight to RocksDB's.
        s = state.kv(self.name)
        self.get = s.get  # type: ignore[method-assign]
        self.put = s.put  # type: ignore[method-assign]
        self.delete = s.delete  # type: ignore[method-assign]

    def items(self) -> Iterator[tuple[bytes, Any]]:
        """Every (key, value) of every task."""
        for p in sorted(self.tasks):
            yield from self.tasks[p].kv(self.name).all()

    def items_of(self, partition: int) -> Iterator[tuple[bytes, Any]]:
        """Every (key, value) of one task."""
        return self.tasks[partition].kv(self.name).all()


class TableStore(KeyValueStore):
    """A materialized table: key bytes -> (value bytes, timestamp), what pull queries read:
    its committed rows (read committed: not those of a batch in flight, which may yet be
    rolled back)."""

    def __init__(self, name: str) -> None:
        super().__init__(name, TABLE_ROW)

    def row(self, key: bytes, partitions: set[int] | None = None) -> tuple[bytes, int] | None:
        """The (value, timestamp) of ``key``, from whichever task (of ``partitions``) holds it."""
        for p, state in self.tasks.items():
            if partitions is not None and p not in partitions:
                continue
            got = state.kv(self.name).committed_get(key)
            if got is not None:
                return got
        return None

    def rows(self, prefix: bytes | None = None, partitions: set[int] | None = None
             ) -> Iterator[tuple[bytes, bytes, int]]:
        """(key, value, timestamp) of every row (whose key starts with ``prefix``) of the
        tasks (of ``partitions``), read lazily from RocksDB, task by task."""
        for p in sorted(self.tasks):
            if partitions is not None and p not in partitions:
                continue
            for k, (v, ts) in self.tasks[p].kv(self.name).committed_prefix(prefix):
                yield k, v, ts

    def detached(self) -> "TableStore":
        """An empty store of the same kind and name, for a reader to attach other tasks to
        (a pull query from standby copies)."""
        return TableStore(self.name)


def _flip_times(key: bytes, suffix: int) -> bytes:
    """A windowed table key with its window times' sign bits flipped: the sink's windowed key
    (``key || start`` or ``key || end || start``, signed big-endian, Kafka Streams' layout) to
    the window or session store's primary key (biased times, ``streamsql.state.keys``), and
    back. Flipping the top bit of a signed 64-bit number adds 2**63 modulo 2**64."""
    n = len(key)
    b = bytearray(key)
    b[n - 8] ^= 0x80
    if suffix == 16:
        b[n - 16] ^= 0x80
    return bytes(b)


class WindowedTableStore(TableStore):
    """A materialized windowed table (``key || window`` -> (value, timestamp)) kept in a
    window store (TUMBLING, HOPPING) or session store (SESSION) that drops windows past
    ``retention_ms`` (the window's RETENTION, else size + grace, as ksqlDB) with changelog
    tombstones, so the table and its changelog stay bounded. Pull queries do not see expired
    windows (as ksqlDB: a window past retention is simply not there)."""

    def __init__(self, name: str, session: bool, retention_ms: int) -> None:
        super().__init__(name)
        self.session = session
        self.retention_ms = retention_ms
        self._suffix = 16 if session else 8

    def spec(self, changelog: str | None) -> StoreSpec:
        if self.session:
            return SessionStoreSpec(self.name, self.retention_ms, changelog, TABLE_ROW)
        return WindowStoreSpec(self.name, self.retention_ms, changelog, TABLE_ROW)

    def _store(self, state: TaskState) -> Any:
        return state.session(self.name) if self.session else state.window(self.name)

    def bind(self, state: TaskState) -> None:
        s = self._store(state)
        if self.session:
            def put(wk: bytes, row: Any) -> None:
                n = len(wk)
                s.put(wk[:-16], _LONG.unpack_from(wk, n - 8)[0], _LONG.unpack_from(wk, n - 16)[0], row)

            def delete(wk: bytes) -> None:
                n = len(wk)
                s.remove(wk[:-16], _LONG.unpack_from(wk, n - 8)[0], _LONG.unpack_from(wk, n - 16)[0])

            def get(wk: bytes) -> Any:
                n = len(wk)
                return s.get(wk[:-16], _LONG.unpack_from(wk, n - 8)[0], _LONG.unpack_from(wk, n - 16)[0])
        else:
            def put(wk: bytes, row: Any) -> None:
                s.put(wk[:-8], _LONG.unpack_from(wk, len(wk) - 8)[0], row)

            def delete(wk: bytes) -> None:
                s.delete(wk[:-8], _LONG.unpack_from(wk, len(wk) - 8)[0])

            def get(wk: bytes) -> Any:
                return s.get(wk[:-8], _LONG.unpack_from(wk, len(wk) - 8)[0])
        self.put = put  # type: ignore[method-assign]
        self.delete = delete  # type: ignore[method-assign]
        self.get = get  # type: ignore[method-assign]

    def row(self, key: bytes, partitions: set[int] | None = None) -> tuple[bytes, int] | None:
        if len(key) < self._suffix:
            return None
        pk = _flip_times(key, self._suffix)
        for p, state in self.tasks.items():
            if partitions is None or p in partitions:
                got = self._store(state).committed_get_raw(pk)
                if got is not None:
                    return got
        return None

    def rows(self, prefix: bytes | None = None, partitions: set[int] | None = None
             ) -> Iterator[tuple[bytes, bytes, int]]:
        # ``prefix`` is the key without its window: a prefix of the primary keys too.
        suffix = self._suffix
        for p in sorted(self.tasks):
            if partitions is not None and p not in partitions:
                continue
            for pk, (v, ts) in self._store(self.tasks[p]).committed_prefix_raw(prefix):
                yield _flip_times(pk, suffix), v, ts

    def items(self) -> Iterator[tuple[bytes, Any]]:
        for k, v, ts in self.rows():
            yield k, (v, ts)

    def items_of(self, partition: int) -> Iterator[tuple[bytes, Any]]:
        for k, v, ts in self.rows(None, {partition}):
            yield k, (v, ts)

    def detached(self) -> "TableStore":
        return WindowedTableStore(self.name, self.session, self.retention_ms)


# Aggregate state in a compact binary form: a tag byte (JSON starts with ``[``, pickle with
# 0x80), then ``>q?`` (max timestamp, shown) and the accumulators as fixed-width numbers.
# One struct call each way, where the JSON path walks to_state/from_state and orjson.
_BINARY_TAG = 1
# Accumulator layouts by aggregator class name (streamsql.functions.aggregates): struct
# codes of the accumulator, a tuple when there are several. Accumulators of any other
# aggregator (lists, maps, decimals, strings) are kept as JSON.
_BINARY_LAYOUTS = {"_CountRows": "q", "_CountValues": "q", "_SumInt": "q",
                   "_SumDouble": "d", "_Avg": "qq", "_AvgDouble": "dq"}


def _binary_codec(aggregators: list[Aggregator]
                  ) -> tuple[Callable[[list, int, bool], bytes], Callable[[bytes], list]] | None:
    """(encode(accs, max_ts, shown), decode(data) -> [accs, max_ts, shown]) for aggregators
    whose accumulators are all fixed-width numbers, generated for their layout; else None.
    ``encode`` raises struct.error for a value the layout cannot hold (the caller keeps JSON)."""
    codes = []
    for a in aggregators:
        code = _BINARY_LAYOUTS.get(type(a).__name__)
        if code is None or type(a).__module__ != "streamsql.functions.aggregates":
            return None
        codes.append(code)
    if not codes:
        return None
    # Accumulator i is ``a{i}`` (its parts ``a{i}[j]`` when it is a tuple) when encoding,
    # its parts are ``v{i}_{j}`` when decoding.
    flat = [f"a{i}[{j}]" if len(code) > 1 else f"a{i}" for i, code in enumerate(codes)
            for j in range(len(code))]
    parts = [[f"v{i}_{j}" for j in range(len(code))] for i, code in enumerate(codes)]
    accs = [f"({', '.join(p)},)" if len(p) > 1 else p[0] for p in parts]
    src = (f"def encode(accs, m, s):\n"
           f"    {''.join(f'a{i}, ' for i in range(len(codes)))}= accs\n"
           f"    return _tag + _pack(m, s, {', '.join(flat)})\n"
           f"def decode(data):\n"
           f"    m, s, {', '.join(n for p in parts for n in p)}, = _unpack_from(data, 1)\n"
           f"    return [[{', '.join(accs)}], m, s]\n")
    st = struct.Struct(">q?" + "".join(codes))
    env: dict[str, Any] = {"_tag": bytes((_BINARY_TAG,)), "_pack": st.pack,
                           "_unpack_from": st.unpack_from}
    exec(compile(src, "<aggregate state codec>", "exec"), env)  # noqa: S102 - generated source
    return env["encode"], env["decode"]


class _AggregateCodec:
    """Aggregate state ``(accumulators, max timestamp, shown)`` to and from the bytes a store
    keeps: the compact binary form when every accumulator is a fixed-width number (see
    ``_binary_codec``), else JSON through ``Aggregator.to_state``/``from_state`` (skipped when
    every aggregator keeps the defaults). Either form is read back, whichever wrote it (state
    and changelogs written before the binary form existed are JSON)."""

    def __init__(self) -> None:
        self.convert = False
        self.to_state: list[Callable[[Any], Any]] = []
        self.from_state: list[Callable[[Any], Any]] = []
        self._binary: tuple[Callable[[list, int, bool], bytes], Callable[[bytes], list]] | None = None

    def set_aggregators(self, aggregators: list[Aggregator]) -> None:
        self.to_state = [a.to_state for a in aggregators]
        self.from_state = [a.from_state for a in aggregators]
        self.convert = any(type(a).to_state is not Aggregator.to_state
                           or type(a).from_state is not Aggregator.from_state for a in aggregators)
        self._binary = _binary_codec(aggregators)

    def dump(self, accs: list) -> list:
        return [f(x) for f, x in zip(self.to_state, accs)] if self.convert else accs

    def load(self, data: list) -> list:
        return [f(x) for f, x in zip(self.from_state, data)] if self.convert else data

    def encode(self, accs: list, max_ts: int, shown: bool) -> bytes:
        """The stored bytes of an aggregate state."""
        if self._binary is not None:
            try:
                return self._binary[0](accs, max_ts, shown)
            except struct.error:
                pass  # (a number the layout cannot hold: JSON, which holds any)
        return _acc_dumps((self.dump(accs), max_ts, shown))

    def decode(self, data: bytes) -> list:
        """``[accumulators, max timestamp, shown]`` from stored bytes (a fresh list)."""
        if data[0] == _BINARY_TAG:
            if self._binary is None:
                raise ValueError("binary aggregate state for aggregators without a binary layout")
            return self._binary[1](data)
        v = _acc_loads(data)
        if type(v) is not list:
            v = list(v)  # (pickled, the state is the tuple it was written from)
        if self.convert:
            v[0] = self.load(v[0])
        return v


class AggregateStore(_AggregateCodec, PartitionedStore):
    """``AggregateStage``'s store for an unwindowed aggregation: group key bytes ->
    ``(accumulators, max timestamp, shown)`` in a key-value store (see ``_AggregateCodec``).
    ``load_many``/``store_many`` read and write a batch's keys at once (raw bytes: the stage
    decodes and encodes them, keeping their bytes in its cache)."""

    biased_keys = False  # (see WindowAggregateStore)

    def __init__(self, name: str) -> None:
        _AggregateCodec.__init__(self)
        PartitionedStore.__init__(self, name)
        self._raw: Any = None

    def spec(self, changelog: str | None) -> StoreSpec:
        return KeyValueStoreSpec(self.name, changelog, ACCUMULATORS)

    def bind(self, state: TaskState) -> None:
        self._raw = state.kv(self.name)

    def get(self, key: bytes) -> list | None:
        v = self._raw.get_many_raw([key])[0]
        return None if v is None else self.decode(v)

    def put(self, key: bytes, value: tuple) -> None:
        self._raw.put_many_raw([key], [self.encode(*value)])

    def load_many(self, keys: list[bytes]) -> list[bytes | None]:
        """The stored bytes of each key (None: absent), one RocksDB multi-get."""
        return self._raw.get_many_raw(keys)

    def store_many(self, keys: list[bytes], data: list[bytes]) -> None:
        """Write encoded states (``encode``) of ``keys``."""
        self._raw.put_many_raw(keys, data)


_BIASED = struct.Struct(">Q")
_BIAS = 1 << 63


def _window_pk(skey: bytes) -> bytes:
    """The window store's primary key of ``group key || start`` (signed big-endian)."""
    n = len(skey) - 8
    return skey[:n] + _BIASED.pack(_LONG.unpack_from(skey, n)[0] + _BIAS)


class WindowAggregateStore(AggregateStore):
    """``AggregateStage``'s store for TUMBLING and HOPPING windows: keys ``group key ||
    window start`` (8 bytes, big endian signed; ``load_many``/``store_many``: the store's
    keys, see ``biased_keys``) in a window store. Windows are kept ``retention_ms``
    (window size + grace) past the latest window start, then expired with changelog
    tombstones: a window that old is closed, no record can update it any more."""

    def __init__(self, name: str, retention_ms: int) -> None:
        super().__init__(name)
        self.retention_ms = retention_ms

    def spec(self, changelog: str | None) -> StoreSpec:
        return WindowStoreSpec(self.name, self.retention_ms, changelog, ACCUMULATORS)

    def bind(self, state: TaskState) -> None:
        self._raw = state.window(self.name)

    def get(self, skey: bytes) -> list | None:
        v = self._raw.get_many_raw([_window_pk(skey)])[0]
        return None if v is None else self.decode(v)

    def put(self, skey: bytes, value: tuple) -> None:
        self._raw.put_many_raw([_window_pk(skey)], [self.encode(*value)])

    # ``load_many`` and ``store_many`` take the window store's own keys (``group key ||
    # biased start``, see ``streamsql.state.keys``): the batched stage builds them so.
    biased_keys = True


class SessionAggregateStore(_AggregateCodec, PartitionedStore):
    """``AggregateStage``'s store for SESSION windows: a session store of (group key, start,
    end) -> ``(accumulators, max timestamp)``. ``get(key)`` gives the key's sessions as
    ``[start, end, accumulators, max timestamp]`` lists in start order, as the stage keeps them.
    Sessions that ended ``retention_ms`` (gap + grace) before the latest session end are
    expired, as Kafka Streams' session stores: no record that is not late can reach them."""

    def __init__(self, name: str, retention_ms: int) -> None:
        _AggregateCodec.__init__(self)
        PartitionedStore.__init__(self, name)
        self.retention_ms = retention_ms
        self._store: Any = None

    def spec(self, changelog: str | None) -> StoreSpec:
        return SessionStoreSpec(self.name, self.retention_ms, changelog, ACCUMULATORS)

    def bind(self, state: TaskState) -> None:
        self._store = state.session(self.name)

    def get(self, key: bytes) -> list[list] | None:
        found = [[s, e, self.load(v[0]), v[1]] for s, e, v in self._store.fetch(key)]
        if not found:
            return None
        found.sort(key=lambda s: s[0])
        return found

    def replace_sessions(self, key: bytes, keep: list[list], merged: list[list],
                         new: list) -> None:
        """Remove the ``merged`` sessions and add ``new`` (``keep`` is the key's full list,
        which only an in-memory store needs)."""
        store = self._store
        for s in merged:
            store.remove(key, s[0], s[1])
        store.put(key, new[0], new[1], (self.dump(new[2]), new[3]))


def make_store(name: str, kind: str, retention_ms: int | None = None) -> PartitionedStore:
    """A partitioned store of ``kind``: ``kv`` (any picklable values), ``bytes``, ``json``,
    ``table`` (materialized rows), ``window-table`` and ``session-table`` (materialized
    windowed rows, expired past ``retention_ms``), ``aggregate``, ``window-aggregate`` (needs
    ``retention_ms``), ``session-aggregate``."""
    if kind == "kv":
        return KeyValueStore(name, PICKLE)
    if kind == "bytes":
        return KeyValueStore(name, BYTES)
    if kind == "json":
        return KeyValueStore(name, JSON)
    if kind == "table":
        return TableStore(name)
    if kind in ("window-table", "session-table"):
        if retention_ms is None:
            raise ValueError(f"a {kind} store needs retention_ms")
        return WindowedTableStore(name, kind == "session-table", retention_ms)
    if kind == "aggregate":
        return AggregateStore(name)
    if kind == "window-aggregate":
        if retention_ms is None:
            raise ValueError("a window-aggregate store needs retention_ms")
        return WindowAggregateStore(name, retention_ms)
    if kind == "session-aggregate":
        if retention_ms is None:
            raise ValueError("a session-aggregate store needs retention_ms")
        return SessionAggregateStore(name, retention_ms)
    raise ValueError(f"unknown store kind {kind!r}")


def stage_stores(stage: Any) -> list[PartitionedStore]:
    """The partitioned stores a stage (and the stage it wraps, if any) keeps as attributes."""
    found: list[PartitionedStore] = []
    seen: set[int] = set()
    todo = [stage]
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        for value in vars(obj).values():
            if isinstance(value, PartitionedStore):
                if value not in found:
                    found.append(value)
            elif hasattr(value, "process") and hasattr(value, "sink_topic"):
                todo.append(value)  # a wrapped stage
    return found


class OutputFences:
    """Committed end offsets of topics written by exactly-once stages: while the writer has
    a batch's records written and not committed, readers of such a topic stop there
    (read_committed; Kafka's last stable offset). Between batches everything on the topic
    is committed, records other writers put there too: nothing is held back. A claimed
    topic whose writer has not opened yet is read up to nothing."""

    def __init__(self) -> None:
        self._ends: dict[str, list[int] | None] = {}
        self._events: dict[str, asyncio.Event] = {}
        self._writing: set[str] = set()

    def writing(self, topic: str) -> None:
        """The writer is about to write records it has not committed (until ``advance``)."""
        if topic in self._ends:
            self._writing.add(topic)

    def claim(self, topic: str) -> None:
        self._ends[topic] = None

    def release(self, topic: str) -> None:
        self._ends.pop(topic, None)
        self._writing.discard(topic)
        ev = self._events.pop(topic, None)
        if ev is not None:
            ev.set()

    def fenced(self, topic: str) -> bool:
        return topic in self._ends

    def advance(self, topic: str, ends: list[int]) -> None:
        if topic not in self._ends:
            return
        self._ends[topic] = ends
        self._writing.discard(topic)
        ev = self._events.pop(topic, None)
        if ev is not None:
            ev.set()

    def limit(self, topic: str, partition: int) -> int | None:
        """The offset readers stop before (None: the topic is not fenced; -1: nothing yet)."""
        if topic not in self._ends:
            return None
        ends = self._ends[topic]
        if ends is None or partition >= len(ends):
            return -1
        if topic not in self._writing:
            return None  # (its writer is between batches)
        return ends[partition]

    def event(self, topic: str) -> asyncio.Event:
        """Set at the topic's next advance (take it before checking ``limit``)."""
        ev = self._events.get(topic)
        if ev is None:
            ev = self._events[topic] = asyncio.Event()
        return ev

    def cut(self, batches: list[RecordBatch], seek: Callable[[str, int, int], None]
            ) -> tuple[list[RecordBatch], list[asyncio.Event]]:
        """``batches`` without records past their topic's fence; the consumer is moved back
        (``seek``) to the first record held back. Also returns the events to wait for when
        records were held back."""
        out: list[RecordBatch] = []
        waits: list[asyncio.Event] = []
        for b in batches:
            lim = self.limit(b.topic, b.partition)
            if lim is None or b.offsets[-1] < lim:
                out.append(b)
                continue
            waits.append(self.event(b.topic))
            n = bisect_left(b.offsets, lim) if lim >= 0 else 0
            seek(b.topic, b.partition, b.offsets[n])
            if n:
                out.append(RecordBatch(b.topic, b.partition, b.offsets[:n], b.timestamps[:n],
                                       b.keys[:n], b.values[:n],
                                       b.headers[:n] if b.headers is not None else None))
        return out, waits


class StageTasks:
    """The tasks of one stage of a stateful query: opening (restore, cutting uncommitted
    output back), binding stores per batch, and the exactly-once commit. See the module
    docstring. With ``exactly_once`` False (a query whose outputs are shared, or whose
    stages keep state elsewhere) state and input offsets are still committed together, but
    the output is not fenced nor cut back: at-least-once output.

    Tasks are opened and closed as the stage's consumer is assigned and revoked partitions
    (``open``/``close``). With ``group_positions`` (Kafka, where another node may have
    processed a partition since this one last did) the consumer group's committed offsets
    are where reading resumes and changelog records past the local checkpoint are replayed
    into the store; otherwise (the embedded log) the task's own committed offsets are, and
    such records are reverted. ``state_log`` is the Log the stores write their changelogs
    through (a transaction's view under exactly_once_v2)."""

    def __init__(self, log_: Log, path: Path, query_id: str, stage: Any, group: str,
                 fences: OutputFences, config: RocksDBConfig | None = None,
                 exactly_once: bool = True, group_positions: bool = False,
                 state_log: Log | None = None) -> None:
        self.log = log_
        self.state_log = state_log or log_
        self.path = path
        self.query_id = query_id
        self.stage = stage
        self.group = group
        self.fences = fences
        self.config = config
        self.group_positions = group_positions
        self.stores = stage_stores(stage)
        self.specs = [s.spec(changelog_topic(query_id, s.name)) for s in self.stores]
        self.outputs: tuple[str, ...] = (stage.sink_topic,) if exactly_once else ()
        self.tasks: dict[int, TaskState] = {}
        # Restores under way, by (partition, store): (from offset, restored up to, end offset).
        self.restoring: dict[tuple[int, str], tuple[int, int, int]] = {}
        # Warm copies of tasks that run on other nodes (a cluster on Kafka): set by the engine.
        self.standby: StandbyTasks | None = None
        self.seq = 0
        self._task_extra = getattr(stage, "task_extra", None)

    def claim_outputs(self) -> None:
        """Fence the stage's outputs now (before any reader starts), until ``open``."""
        for topic in self.outputs:
            self.fences.claim(topic)

    async def open(self, partitions: set[int], reset: str,
                   group: dict[str, dict[int, int]] | None = None,
                   metadata: dict[tuple[str, int], str] | None = None
                   ) -> dict[tuple[str, int], int]:
        """Open (restore) the tasks of ``partitions`` not open yet, cut the outputs back to
        the latest commit, and return where to read each of their input partitions from.
        With ``group_positions``, ``group`` holds the group's stable offsets of them (by
        topic, by partition: ``Log.stable_committed``): reading resumes there unless a
        task's own state is further; ``metadata`` the metadata committed with them (the
        stage's extra of the task, as JSON, from the node that had it last), which the
        stage then resumes with (its stream time: a window closed before the task moved
        stays closed)."""
        sources = self.sources
        counts = await self._partition_counts()
        total = max(counts.values())
        specs = self.specs
        tail = "replay" if self.group_positions else "revert"
        opening = sorted(p for p in partitions if p not in self.tasks and p < total)
        if self.standby is not None:
            # A task kept warm here becomes active: the standby gives its directory up.
            await self.standby.release(set(opening))
        groups: dict[str, dict[int, int]] = dict(group or {})
        if self.group_positions and opening:
            # Another node may have had these partitions until now: its last transaction
            # must have landed in the changelogs, as in the (stable) offsets, before they
            # are restored, or state and offsets could disagree.
            for spec in specs:
                await self.log.settle(spec.changelog, opening)
        try:
            for p in opening:
                try:
                    state = await TaskState.open(self.path / str(p), specs, log=self.state_log,
                                                 partition=p, partitions=total,
                                                 uncommitted_tail=tail, config=self.config,
                                                 on_restore=self._restore_progress(p))
                finally:
                    for key in [k for k in self.restoring if k[0] == p]:
                        del self.restoring[key]
                self.tasks[p] = state
                for s in self.stores:
                    s.attach(p, state)
                log.info("%s: task %d opened: %s", self.stage.name, p, ", ".join(
                    f"{st.store} {st.from_offset}->{st.to_offset} ({st.replayed} replayed) "
                    f"in {st.seconds:.3f}s" for st in state.restore_stats.values()) or "no changelog")
        except BaseException:
            self.close(set(opening))
            raise
        latest: dict[str, Any] | None = None
        for state in self.tasks.values():
            extra = state.committed_extra()
            if isinstance(extra, dict) and (latest is None or extra.get("seq", 0) > latest.get("seq", 0)):
                latest = extra
        if latest is not None:
            self.seq = max(self.seq, int(latest.get("seq", 0)))
            await self._cut_outputs(latest.get("ends") or {})
        ends = {t: await self.log.end_offsets(t) for t in self.outputs}
        for t, e in ends.items():
            self.fences.advance(t, e)
        opened = getattr(self.stage, "task_opened", None)
        fresh: dict[str, list[int]] = {}
        if not self.group_positions:
            for source in sources:
                groups[source] = await self.log.committed(self.group, source)
                if reset == "latest":
                    fresh[source] = await self.log.end_offsets(source)
                else:
                    fresh[source] = await self.log.begin_offsets(source)
        positions: dict[tuple[str, int], int] = {}
        for p in opening:
            state = self.tasks.get(p)
            if state is None:
                continue  # closed meanwhile (the stage stopped)
            committed = state.committed_offsets()
            extra = state.committed_extra()
            stage_extra = extra.get("stage") if isinstance(extra, dict) else None
            new: dict[tuple[str, int], int] = {}
            for source in sources:
                if p >= counts[source]:
                    continue
                if self.group_positions:
                    # The group's offset, unless this task's own state is further. Under
                    # exactly_once_v2 the local commit follows the transaction: never ahead.
                    # At least once the group's commit follows the local one, and a crash
                    # between leaves it behind: reading from it would count records twice.
                    mine, theirs = committed.get((source, p)), groups.get(source, {}).get(p)
                    if mine is not None and (theirs is None or mine > theirs):
                        log.warning("%s: task %d resumes %s at its own committed offset %d "
                                    "(the group's: %s)", self.stage.name, p, source, mine, theirs)
                        positions[(source, p)] = mine
                    elif theirs is not None:
                        positions[(source, p)] = theirs
                        carried = _stage_extra((metadata or {}).get((source, p)))
                        if carried is not None:
                            stage_extra = carried
                    continue
                off = committed.get((source, p))
                if off is None:
                    # Never committed: the group's offset (state of an older version), else
                    # auto.offset.reset; committed now so a restart starts from the same place.
                    off = new[(source, p)] = groups[source].get(p, fresh[source][p])
                positions[(source, p)] = off
            if new:
                extra = {"seq": self.seq, "ends": ends}
                await state.commit(new, extra)
            if opened is not None:
                self.bind(p)
                opened(p, stage_extra)
        return positions

    def _restore_progress(self, partition: int) -> Callable[[str, int, int, int], None]:
        def progress(store: str, start: int, at: int, end: int) -> None:
            self.restoring[(partition, store)] = (start, at, end)
        return progress

    @property
    def sources(self) -> tuple[str, ...]:
        """The topics the stage reads. A stage may read several co-partitioned topics (a
        join): task p reads partition p of each."""
        return tuple(getattr(self.stage, "source_topics", None) or (self.stage.source_topic,))

    async def _partition_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for source in self.sources:
            info = await self.log.describe_topic(source)
            counts[source] = info.partitions if info is not None else 1
        return counts

    async def task_count(self) -> int:
        """How many tasks the stage has (partitions of its widest input)."""
        return max((await self._partition_counts()).values())

    async def _cut_outputs(self, committed: dict[str, list[int]]) -> None:
        for topic in self.outputs:
            ends = committed.get(topic)
            if ends is None:
                continue
            truncate = getattr(self.log, "truncate", None)
            current = await self.log.end_offsets(topic)
            for p, (end, cur) in enumerate(zip(ends, current)):
                if cur > end:
                    if truncate is None:
                        log.warning("%s: %d uncommitted records in %s-%d cannot be removed "
                                    "(the log cannot truncate)", self.stage.name, cur - end,
                                    topic, p)
                        continue
                    log.warning("%s: removing %d uncommitted records from %s-%d (offsets "
                                "%d..%d) written before a crash", self.stage.name, cur - end,
                                topic, p, end, cur - 1)
                    await truncate(topic, p, end)
                elif cur < end:
                    log.warning("%s: %s-%d ends at %d, before its committed end %d",
                                self.stage.name, topic, p, cur, end)

    def bind(self, partition: int) -> None:
        """Point the stage's stores at the task of ``partition``."""
        state = self.tasks[partition]
        for s in self.stores:
            s.bind(state)

    async def prepare(self, partition: int) -> None:
        """Send the changelog records of the task's batch (inside the transaction, under
        exactly_once_v2: ``commit`` follows once the transaction committed)."""
        await self.tasks[partition].prepare_commit()

    def writing(self) -> None:
        """The stage is about to write a batch's output (fenced from readers until
        ``commit``)."""
        for topic in self.outputs:
            self.fences.writing(topic)

    async def commit(self, partition: int, offsets: dict[tuple[str, int], int]) -> None:
        """Commit the task's batch just processed (its output already produced): state,
        changelog positions, the next ``offsets`` of its inputs and the outputs' end
        offsets, atomically."""
        self.seq += 1
        ends = {t: await self.log.end_offsets(t) for t in self.outputs}
        extra: dict[str, Any] = {"seq": self.seq, "ends": ends}
        if self._task_extra is not None:
            extra["stage"] = self._task_extra(partition)
        await self.tasks[partition].commit(offsets, extra)
        for t, e in ends.items():
            self.fences.advance(t, e)

    def seal(self, partition: int) -> tuple[Any, Any]:
        """The task's batch as of now (its changelog flushed: ``prepare``) and the stage's
        extra then, for ``commit_sealed`` once the Kafka transaction holding them has
        committed; what the task processes meanwhile goes into its next batch."""
        extra = self._task_extra(partition) if self._task_extra is not None else None
        return self.tasks[partition].seal(), extra

    def commit_sealed(self, partition: int, sealed: tuple[Any, Any],
                      offsets: dict[tuple[str, int], int]) -> None:
        """``commit`` of a batch ``seal``ed by a Kafka transaction that has committed (the
        broker has its output: no output ends to keep). Nothing if the task was closed
        since (its next owner restores it from the changelogs)."""
        batch, stage_extra = sealed
        if self.tasks.get(partition) is not batch.state:
            return
        self.seq += 1
        extra: dict[str, Any] = {"seq": self.seq, "ends": {}}
        if stage_extra is not None:
            extra["stage"] = stage_extra
        batch.state.commit_sealed(batch, offsets, extra)

    def close(self, partitions: set[int] | None = None) -> None:
        """Close the tasks of ``partitions`` (every task when None); uncommitted work is
        discarded, as a crash would."""
        closing = list(self.tasks) if partitions is None else [p for p in partitions if p in self.tasks]
        for p in closing:
            for s in self.stores:
                s.detach(p)
            state = self.tasks.pop(p)
            if self.standby is not None:
                self.standby.remember(p, state)  # (reported to the group's next assignment)
            state.close()

    def release(self) -> None:
        """Stop fencing the outputs (the stage no longer runs)."""
        for topic in self.outputs:
            self.fences.release(topic)

    def destroy(self) -> None:
        """Close and delete the stage's state directories (the query was terminated)."""
        self.close()
        if self.path.exists():
            for child in self.path.iterdir():
                destroy_state_dir(child)
            try:
                self.path.rmdir()
            except OSError:
                pass

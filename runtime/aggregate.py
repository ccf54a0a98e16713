"""GROUP BY: re-keying into a repartition topic, then aggregating into a table.

An aggregation runs as two stages, as in ksqlDB:

1. *Group-by* (``PipelineStage`` for a stream source, ``TableGroupByStage`` for a table
   source): filter, evaluate the grouping expressions and the aggregate arguments, and write
   them to the internal ``<query>-Aggregate-GroupBy-repartition`` topic keyed by the group.
   A table source also sends the *retraction* of the row's previous value (header ``op=undo``)
   so that an update moves its contribution between groups.
2. *Aggregate* (``AggregateStage``): per group (and window), fold the arguments into the
   accumulators kept in a state store, project the aggregated row (HAVING, SELECT), and write
   the table's upsert or tombstone. Windows (TUMBLING, HOPPING, SESSION) with grace periods;
   late records are dropped and counted; EMIT FINAL holds results until the window closes.

A stream already partitioned by what it groups on (GROUP BY its key columns, in order, see
``streamsql.analyzer.groups_by_source_key``) is aggregated where it is, as ksqlDB does through
Kafka Streams' ``groupByKey``: one ``KeyedAggregateStage`` reads the source topic and runs both
steps in one pass, with no repartition topic (the same stores and changelogs).

Windowed keys are written as Kafka Streams writes them: the key, then the window start as an
8-byte big-endian long (time windows), or the end then the start (session windows).
"""
from __future__ import annotations

import copy
import heapq
import logging
import struct
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator

from streamsql.analyzer import AggregatePlan, OutputColumn, QueryPlan, groups_by_source_key
from streamsql.catalog import DataSource
from streamsql.codegen import ExpressionCompiler, Scope, ScopeColumn
from streamsql.errors import KsqlException, QueryFailedError
from streamsql.functions.aggregates import AggregateFunctionError
from streamsql.functions.registry import Aggregator
from streamsql.formats.base import Codec, FormatOptions
from streamsql.runtime.log.base import ProducerRecord, RecordBatch
from streamsql.runtime.projection import filter_lines, projection_lines
from streamsql.runtime.pipeline import Outputs, build_pipeline
from streamsql.runtime.query import PipelineStage, Stage
from streamsql.schema import Column, LogicalSchema
from streamsql.types import BIGINT

if TYPE_CHECKING:
    from streamsql.engine import Engine

log = logging.getLogger(__name__)

_LONG = struct.Struct(">q")
_BIASED = struct.Struct(">Q")
_BIAS = 1 << 63
UNDO = (("op", b"undo"),)
UPDATE = (("op", b"update"),)
_LEN = struct.Struct(">I")
# Kafka Streams' default grace for windows declared without one (24 hours).
DEFAULT_GRACE_MS = 24 * 3600 * 1000
# ksqlDB's default ``ksql.streams.cache.max.bytes.buffering``: 10 MB.
DEFAULT_CACHE_BYTES = 10_000_000
# What a cached aggregate state costs beyond its key and stored bytes (the dict slot and
# two bytes objects' headers), counted against the cache size so that the setting bounds
# real memory.
CACHE_ENTRY_OVERHEAD = 160
# What a dirty state costs beyond its key (its slot in the dirty dict, its decoded lists and
# numbers, the group key and offset it keeps for the flush), counted the same way.
DIRTY_ENTRY_OVERHEAD = 500
# Aggregators (streamsql.functions.aggregates) whose accumulators are immutable values: a
# cached state can be folded into a copy of its list alone. Others (lists, maps) are
# deep-copied first, so that a record that fails half-way leaves the cached state as it was.
_IMMUTABLE_ACCUMULATORS = frozenset({
    "_CountRows", "_CountValues", "_SumInt", "_SumDouble", "_SumDecimal", "_Avg", "_AvgDouble",
    "_Extreme", "_ExtremeBytes", "_ExtremeDouble"})


def cache_setting(config: dict[str, Any] | None) -> int | None:
    """``cache.max.bytes.buffering`` (or ``ksql.streams.cache.max.bytes.buffering``) of a
    query's properties, None when not given."""
    if not config:
        return None
    value = config.get("cache.max.bytes.buffering",
                       config.get("ksql.streams.cache.max.bytes.buffering"))
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise KsqlException(f"Invalid value {value!r} for configuration cache.max.bytes.buffering: "
                            "Not a number of type LONG") from None


def commit_interval_ms(config: dict[str, Any] | None) -> int:
    """How long (ms) an aggregation's task keeps updates in its record cache before it
    flushes and commits them: ``commit.interval.ms`` (or ``ksql.streams.commit.interval.ms``),
    else 2000 ms at least once (ksqlDB's default) and 100 ms exactly once (Kafka Streams',
    which keeps transactions short: their output is seen only once they commit)."""
    config = config or {}
    value = config.get("commit.interval.ms", config.get("ksql.streams.commit.interval.ms"))
    if value is None:
        guarantee = str(config.get("processing.guarantee", "")).lower()
        return 100 if guarantee in ("exactly_once_v2", "exactly_once") else 2000
    try:
        return max(int(value), 0)
    except (TypeError, ValueError):
        raise KsqlException(f"Invalid value {value!r} for configuration commit.interval.ms: "
                            "Not a number of type LONG") from None


def internal_codec(columns: tuple[Column, ...]) -> Codec:
    """JSON codec for internal topics (repartition): any SQL type round-trips through it."""
    from streamsql.formats.registry import get_format

    return get_format("JSON").codec(columns, FormatOptions(wrap_single_value=True), False)


@dataclass
class WindowSpec:
    """A window clause in milliseconds."""

    kind: str  # 'TUMBLING', 'HOPPING', 'SESSION'
    size: int
    advance: int
    grace: int

    def windows_for(self, ts: int) -> list[tuple[int, int]]:
        """[start, end) windows a record at ``ts`` falls in (time windows)."""
        if self.kind == "TUMBLING":
            start = ts - ts % self.size
            return [(start, start + self.size)]
        first = ts - ts % self.advance
        out = []
        start = first
        while start > ts - self.size and start >= 0:
            out.append((start, start + self.size))
            start -= self.advance
        out.reverse()
        return out


class MemoryStore:
    """A key-value store in a dict: the test driver's store (one record at a time, tiny), and
    service mode's when the Log keeps nothing on disk. Service mode on disk uses RocksDB
    (``streamsql.runtime.task``) through the same calls."""

    def __init__(self) -> None:
        self._data: dict[bytes, Any] = {}

    def get(self, key: bytes) -> Any:
        return self._data.get(key)

    def put(self, key: bytes, value: Any) -> None:
        self._data[key] = value

    def delete(self, key: bytes) -> None:
        self._data.pop(key, None)

    def items(self):
        return self._data.items()

    def replace_sessions(self, key: bytes, keep: list, merged: list, new: list) -> None:
        """Set a key's session list (``keep`` already lacks ``merged`` and has ``new``)."""
        self._data[key] = keep


class MemoryWindowStore(MemoryStore):
    """``MemoryStore`` for TUMBLING and HOPPING window aggregates (keys end in the window's
    start, 8 bytes): windows starting more than ``retention_ms`` (size + grace) before the
    latest start are dropped, as the RocksDB window store's segments are, so that a
    transient push aggregation holds flat memory however long it runs."""

    def __init__(self, retention_ms: int) -> None:
        super().__init__()
        self.retention_ms = retention_ms
        self._by_start: dict[int, list[bytes]] = {}
        self._starts: list[int] = []  # heap of the starts in _by_start
        self._latest: int | None = None

    def put(self, key: bytes, value: Any) -> None:
        if key not in self._data:
            start = _LONG.unpack_from(key, len(key) - 8)[0]
            bucket = self._by_start.get(start)
            if bucket is None:
                bucket = self._by_start[start] = []
                heapq.heappush(self._starts, start)
            bucket.append(key)
            if self._latest is None or start > self._latest:
                self._latest = start
                self._expire(start - self.retention_ms)
        self._data[key] = value

    def _expire(self, limit: int) -> None:
        starts, data = self._starts, self._data
        while starts and starts[0] < limit:
            for key in self._by_start.pop(heapq.heappop(starts)):
                data.pop(key, None)


class MemorySessionStore(MemoryStore):
    """``MemoryStore`` for SESSION aggregates (key -> its sessions ``[start, end, accs,
    max_ts]``): sessions ending more than ``retention_ms`` (gap + grace, or the window's
    RETENTION) before the latest session end seen are dropped, as the RocksDB session store's
    segments are, so that a transient push aggregation over sessions holds flat memory.
    A key is dropped once its last session is; older sessions of a key still active go when
    the key's list is next written."""

    def __init__(self, retention_ms: int) -> None:
        super().__init__()
        self.retention_ms = retention_ms
        self._ends: list[tuple[int, bytes]] = []  # heap of (a key's latest end, key), lazily
        self._latest: int | None = None

    def replace_sessions(self, key: bytes, keep: list, merged: list, new: list) -> None:
        # Expired by the latest end before this record: a session expiring now closed at
        # an earlier record, so EMIT FINAL has emitted it (it reads it from here).
        previous = self._latest
        if previous is None or new[1] > previous:
            self._latest = new[1]
        self._data[key] = keep
        if previous is None:
            heapq.heappush(self._ends, (max(x[1] for x in keep), key))
            return
        limit = previous - self.retention_ms
        if keep[0][1] < limit:
            keep = self._data[key] = [x for x in keep if x[1] >= limit] or [new]
        heapq.heappush(self._ends, (max(x[1] for x in keep), key))
        self._expire(limit)

    def _expire(self, limit: int) -> None:
        ends, data = self._ends, self._data
        while ends and ends[0][0] < limit:
            _, key = heapq.heappop(ends)
            sessions = data.get(key)
            # (a stale heap entry: the key got a later session since; its own entry stays)
            if sessions is not None and max(x[1] for x in sessions) < limit:
                del data[key]


class _TaskContext:
    """What ``AggregateStage`` keeps per input partition (per task, as Kafka Streams): stream
    time, EMIT FINAL's windows waiting to close, and the record cache: store key -> its
    stored bytes, least recently used first, and the states updated since the last flush
    (``dirty``: store key -> [accumulators, max timestamp, shown, group key, offset of its
    last update]), the stream time and input offsets as of the last flush (what a commit
    may take: see ``AggregateStage.committable``) and when that flush was."""

    __slots__ = ("stream_time", "pending", "cache", "dirty", "flushed_stream_time",
                 "held_offsets", "flushed_at")

    def __init__(self, pending: dict) -> None:
        self.stream_time = -1
        self.pending = pending
        self.cache: dict[bytes, bytes] = {}
        self.dirty: dict[bytes, tuple] = {}
        self.flushed_stream_time = -1
        self.held_offsets: dict[tuple[str, int], int] = {}
        self.flushed_at = time.monotonic()


class _StoredPending(dict):
    """EMIT FINAL's pending windows (skey -> (key, start, end, store key)), mirrored into a
    state store as skey -> [start, end] so that they survive a restart."""

    __slots__ = ("store",)

    def __init__(self, store: Any) -> None:
        super().__init__()
        self.store = store

    def __setitem__(self, skey: bytes, entry: tuple) -> None:
        dict.__setitem__(self, skey, entry)
        self.store.put(skey, [entry[1], entry[2]])

    def pop(self, skey: bytes, *default: Any) -> Any:  # type: ignore[override]
        if skey in self:
            self.store.delete(skey)
        return dict.pop(self, skey, *default)


def _compile_fold(aggregators: list[Any], arg_slices: list[tuple[int, int]]) -> Callable[..., list]:
    """``fold(accs, args, undo)``: ``accs`` (changed in place) after taking, or with ``undo``
    giving back, one record's aggregate arguments; unrolled for these aggregators, each
    one's add (undo) called with its own arguments, with no loop, slicing or star-args."""
    env: dict[str, Any] = {}
    adds, undos = [], []
    for j, (agg, (lo, hi)) in enumerate(zip(aggregators, arg_slices)):
        env[f"add{j}"], env[f"undo{j}"] = agg.add, agg.undo
        values = "".join(f", args[{i}]" for i in range(lo, hi))
        adds.append(f"    accs[{j}] = add{j}(accs[{j}]{values})")
        undos.append(f"        accs[{j}] = undo{j}(accs[{j}]{values})")
    src = "\n".join(["def fold(accs, args, undo):", "    if undo:", *undos, "        return accs",
                      *adds, "    return accs"]) + "\n"
    exec(compile(src, "<aggregate fold>", "exec"), env)  # noqa: S102 - generated source
    return env["fold"]


class AggregationError(Exception):
    """One record could not be aggregated or its result not written; the message says why
    (for the processing log)."""


class AggregateStage:
    """Folds re-keyed records into accumulators and writes the aggregated table.

    On RocksDB (service mode) TUMBLING, HOPPING and unwindowed aggregations without EMIT
    FINAL run a batch at a time through a record cache, as Kafka Streams' caching stores:
    the batch's keys not in the cache are read in one multi-get, and records fold into
    decoded states kept in memory, dirty. A task's dirty states are flushed (each one
    encoded once, compactly, see ``streamsql.runtime.task``, written to the store, so to its
    changelog, kept in the cache as clean bytes, and its latest result forwarded to the
    table's topic, in one pass) once its commit interval is over
    (``commit.interval.ms``: 2000 ms at least once, 100 ms exactly once; counted from the
    first update held) or when the caches outgrow ``cache.max.bytes.buffering``
    (ksqlDB's ``ksql.streams.cache.max.bytes.buffering``, 10 MB by default, shared by the
    stage's tasks; clean states are then evicted, least recently used first). The runner
    commits a task's input offsets only with a flush (``committable``), and flushes tasks
    whose input went idle (``due``). So the updates of a key within an interval reach the
    topic, the changelog and pull queries as one. With ``cache.max.bytes.buffering=0``
    every update is forwarded and every batch flushed (what ksqlDB's tests run with).
    Test mode (the test driver, transient queries: in-memory stores) runs one record at a
    time, uncached.

    The table's pull queries read this stage's store (``AggregateTableView``, as ksqlDB's
    materialization): the table keeps no store of its own.
    """

    # All its state is in its stores and task contexts: it can run exactly-once.
    exactly_once = True
    # Topics only this stage reads, purged as it commits (StageRunner._purge): its
    # repartition topic.
    purged_inputs: tuple[str, ...] = ()

    def __init__(self, name: str, source_topic: str, sink_topic: str, plan: AggregatePlan,
                 key_codec: Codec, value_codec: Codec, sink_key_codec: Codec, sink_value_codec: Codec,
                 project: Callable[..., Any], plog: Callable[[str, int, int, str], None],
                 store: Any, window: WindowSpec | None, config: dict[str, Any] | None = None,
                 pending_store: Any = None) -> None:
        self.name = name
        self.source_topic = source_topic
        self.sink_topic = sink_topic
        self.key_codec = key_codec
        self.value_codec = value_codec
        self.sink_key_codec = sink_key_codec
        self.sink_value_codec = sink_value_codec
        self.aggregators = [a.aggregator(config) for a in plan.aggregates]
        # Per aggregate: the slice of the repartition value holding its arguments.
        self.arg_slices = []
        pos = 0
        for a in plan.aggregates:
            self.arg_slices.append((pos, pos + len(a.args)))
            pos += len(a.args)
        self._fold = _compile_fold(self.aggregators, self.arg_slices)
        self.project = project
        self.plog = plog
        self.store = store
        # A RocksDB-backed store keeps accumulators as JSON, through to_state/from_state.
        set_aggregators = getattr(store, "set_aggregators", None)
        if set_aggregators is not None:
            set_aggregators(self.aggregators)
        self.window = window
        # How long the session store keeps a session past the latest one's end (its reads
        # do not find older ones): the window's RETENTION, else gap + grace.
        self.session_retention = window_retention(plan) if window is not None and window.kind == "SESSION" else 0
        self.emit_final = plan.emit_final
        self.late_dropped = 0
        # Stream time and pending windows are per input partition (task); ``process`` loads
        # the batch's into these attributes.
        self.pending_store = pending_store
        self._contexts: dict[int, _TaskContext] = {}
        self.stream_time = -1
        # EMIT FINAL: windows whose results wait for the window to close.
        self.pending: dict[bytes, tuple[tuple, int, int, bytes]] = {}
        setting = cache_setting(config)
        self.cache_max_bytes = DEFAULT_CACHE_BYTES if setting is None else max(setting, 0)
        # ksqlDB's semantics: with a cache, a key's updates are forwarded as its latest
        # result when the cache flushes (at commit, or evicting); with 0, every update.
        self.suppress = self.cache_max_bytes > 0
        self.flush_interval = commit_interval_ms(config) / 1000
        self.cache_bytes = 0  # counted over every task's cache (see CACHE_ENTRY_OVERHEAD)
        # The batched path needs a store that reads and writes a batch at once (RocksDB).
        self._batched = (hasattr(store, "load_many") and not self.emit_final
                         and (window is None or window.kind != "SESSION")
                         and getattr(store, "biased_keys", False) == (window is not None))
        # Every aggregator's result is its accumulator (COUNT, SUM, MIN, MAX...).
        self._plain_results = all(getattr(a.result, "__func__", None) is Aggregator.result
                                  for a in self.aggregators)
        self._copy_accs = not all(
            type(a).__name__ in _IMMUTABLE_ACCUMULATORS
            and type(a).__module__ == "streamsql.functions.aggregates" for a in self.aggregators)

    def input_key(self, key: tuple) -> bytes | None:
        """The key bytes the records of the table's row ``key`` have in the topic this stage
        reads (so its partition there; None for windowed tables, keyed by window too)."""
        return None if self.window is not None else self.key_codec.encode(key)

    # ------------------------------------------------------------------------ task state
    def _context(self, partition: int) -> _TaskContext:
        ctx = self._contexts.get(partition)
        if ctx is None:
            persist = self.pending_store is not None and not isinstance(self.pending_store, MemoryStore)
            pending = _StoredPending(self.pending_store) if persist else {}
            ctx = self._contexts[partition] = _TaskContext(pending)
        return ctx

    def task_extra(self, partition: int) -> dict[str, Any]:
        """What a task commits beside its stores (JSON): its stream time as of its last
        flush (a commit takes only flushed updates, see ``committable``)."""
        return {"stream_time": self._context(partition).flushed_stream_time}

    def task_opened(self, partition: int, extra: Any) -> None:
        """A task's state was opened (stores bound to it): reload its stream time and its
        pending windows."""
        # Its cached states may be of updates that were never committed: gone with them.
        self._drop_context(partition)
        ctx = self._context(partition)
        if isinstance(extra, dict):
            ctx.stream_time = ctx.flushed_stream_time = int(extra.get("stream_time", -1))
        if isinstance(ctx.pending, _StoredPending):
            session = self.window is not None and self.window.kind == "SESSION"
            for skey, (start, end) in self.pending_store.items_of(partition):
                kb = skey[:-8]
                try:
                    key = self.key_codec.decode(kb)
                except Exception as exc:  # noqa: BLE001 - written by this stage; log and go on
                    log.warning("dropping unreadable pending window %r: %s", skey, exc)
                    continue
                dict.__setitem__(ctx.pending, skey, (key, start, end, kb if session else skey))

    # -------------------------------------------------------------- the cache and commits
    def committable(self, partition: int, offsets: dict[tuple[str, int], int]
                    ) -> dict[tuple[str, int], int]:
        """The input offsets the task of ``partition`` may commit after a run that read up
        to ``offsets``: none while its cache holds updates not flushed yet (they would be
        lost with a crash; the runner commits nothing of the task then), else every offset
        read so far (those of the runs held back too)."""
        ctx = self._contexts.get(partition)
        if ctx is None:
            return offsets
        if ctx.dirty:
            ctx.held_offsets.update(offsets)
            return {}
        ctx.flushed_stream_time = ctx.stream_time  # (all it processed is flushed)
        if ctx.held_offsets:
            offsets = {**ctx.held_offsets, **offsets}
            ctx.held_offsets = {}
        return offsets

    def due(self, force: bool = False) -> list[int]:
        """The tasks holding updates whose commit interval has passed (all holding any,
        with ``force``): the runner hands them an empty batch when its input is idle (or
        the stage stops), which flushes them."""
        now = time.monotonic()
        interval = self.flush_interval
        open_tasks = getattr(self.store, "tasks", None)
        due = []
        for p, ctx in list(self._contexts.items()):
            if open_tasks is not None and p not in open_tasks:
                # The task was closed (its partition revoked): its updates go with it,
                # read again from its last commit by whoever has the partition now.
                self._drop_context(p)
            elif ctx.dirty and (force or now - ctx.flushed_at >= interval):
                due.append(p)
        return due

    def _drop_context(self, partition: int) -> None:
        old = self._contexts.pop(partition, None)
        if old is not None:
            self.cache_bytes -= sum(len(k) + len(v) + CACHE_ENTRY_OVERHEAD
                                    for k, v in old.cache.items())
            self.cache_bytes -= sum(len(k) + DIRTY_ENTRY_OVERHEAD for k in old.dirty)

    # ----------------------------------------------------------------------- processing
    def process(self, batch: RecordBatch) -> list[ProducerRecord]:
        ctx = self._contexts.get(batch.partition)
        if ctx is None:
            ctx = self._context(batch.partition)
        self.stream_time = ctx.stream_time
        self.pending = ctx.pending
        try:
            if self._batched:
                return self._process_batched(batch, ctx)
            out = self._process(batch)
            ctx.flushed_stream_time = self.stream_time  # (every batch is flushed)
            return out
        finally:
            ctx.stream_time = self.stream_time

    def _process_batched(self, batch: RecordBatch, ctx: _TaskContext) -> list[ProducerRecord]:
        """``_process`` a batch at a time through the task's record cache (see the class
        docstring): read the keys the cache lacks in one multi-get, fold the records in
        order into the task's dirty states; flush them when its commit interval is over or
        the caches are full."""
        out: list[ProducerRecord] = []
        cache = ctx.cache
        plog, topic, partition = self.plog, batch.topic, batch.partition
        window = self.window
        # 1. The store keys the batch may touch (a window's, late or not), from the key
        # bytes and timestamps alone; the ones not cached are read in ONE multi-get. The
        # cache keeps stored bytes, not decoded states: bytes are invisible to the garbage
        # collector, which otherwise walks every cached state at each full collection.
        # A window's key is the window store's own (its start biased, ``streamsql.state.keys``).
        pack = _BIASED.pack
        if window is None:
            wanted = dict.fromkeys(batch.keys)
        elif window.kind == "TUMBLING":
            size = window.size
            wanted = dict.fromkeys(kb + pack(ts - ts % size + _BIAS)
                                   for kb, ts in zip(batch.keys, batch.timestamps) if kb is not None)
        else:
            windows_for = window.windows_for
            wanted = dict.fromkeys(kb + pack(start + _BIAS) for kb, ts in zip(batch.keys, batch.timestamps)
                                   if kb is not None for start, _ in windows_for(ts))
        wanted.pop(None, None)
        store = self.store
        dirty = ctx.dirty
        need = [sk for sk in wanted if sk not in dirty and sk not in cache]
        if need:
            added = 0
            overhead = CACHE_ENTRY_OVERHEAD
            for sk, raw in zip(need, store.load_many(need)):
                if raw is not None:
                    cache[sk] = raw
                    added += len(sk) + len(raw) + overhead
            self.cache_bytes += added
        # 2. Records in order, folded into the task's dirty states ([accumulators, max
        # timestamp, shown, group key, offset of the last update], decoded from the cache's
        # bytes at their first update since the last flush), kept until the task flushes.
        held = bool(dirty)
        added = 0
        dirty_overhead = DIRTY_ENTRY_OVERHEAD
        decode = store.decode
        aggregators = self.aggregators
        suppress, copy_accs = self.suppress, self._copy_accs
        headers = batch.headers
        key_decode, value_decode = self.key_codec.decode, self.value_codec.decode
        for i, (kb, vb, ts, off) in enumerate(zip(batch.keys, batch.values, batch.timestamps,
                                                  batch.offsets)):
            if kb is None or vb is None:
                continue
            op = headers[i] if headers is not None else ()
            try:
                key = key_decode(kb)
                if op == UPDATE:
                    n = _LEN.unpack_from(vb)[0]
                    old_args = value_decode(vb[4:4 + n])
                    args = value_decode(vb[4 + n:])
                else:
                    old_args = None
                    args = value_decode(vb)
            except Exception as exc:  # noqa: BLE001 - that record's failure, logged
                plog(topic, partition, off, f"Failed to read repartitioned record: {exc}")
                continue
            if ts > self.stream_time:
                self.stream_time = ts
            undo = op == UNDO
            if window is None:
                targets: Any = ((kb, None),)
            else:
                # (A windowed table aggregation folds no retraction of an UPDATE's old
                # value, as ``_process`` does not.)
                old_args = None
                targets = []
                for start, end in window.windows_for(ts):
                    if end + window.grace <= self.stream_time:
                        self.late_dropped += 1
                        plog(topic, partition, off, f"Record dropped: window [{start}, {end}) closed (late record)")
                        continue
                    targets.append((kb + pack(start + _BIAS), (start, end)))
            for sk, win in targets:
                try:
                    state = dirty.get(sk)
                    if state is not None:
                        # (A copy: a record that fails half-way leaves the state as it was.)
                        accs = copy.deepcopy(state[0]) if copy_accs else state[0][:]
                        max_ts = state[1] if state[1] > ts else ts
                        shown = state[2]
                    else:
                        raw = cache.get(sk)
                        if raw is None:
                            accs = [a.initialize() for a in aggregators]
                            max_ts, shown = ts, False
                        else:
                            try:
                                accs, max_ts, shown = decode(raw)  # (fresh lists)
                            except Exception as exc:
                                raise AggregationError(f"Failed to read the aggregate state: {exc}") from exc
                            if ts > max_ts:
                                max_ts = ts
                    try:
                        if old_args is not None:
                            accs = self._fold(accs, old_args, True)
                        accs = self._fold(accs, args, undo)
                    except (AggregateFunctionError, AggregationError):
                        raise
                    except Exception as exc:
                        raise AggregationError(f"Aggregation failed: {exc!r}") from exc
                    if not suppress:
                        record = self._result_record(key, accs, max_ts, win, "time")
                        # HAVING's tombstone only retracts a row the table showed.
                        if record.value is not None or shown:
                            out.append(record)
                        shown = record.value is not None
                except AggregateFunctionError as exc:
                    # A UDAF's own failure stops the query (see ``_process``).
                    raise QueryFailedError(
                        f"Exception caught in process. topic={topic}, partition={partition}, "
                        f"offset={off}: {exc}") from exc
                except Exception as exc:  # noqa: BLE001 - that record's failure: its state
                    # is left as it was, the record goes to the processing log.
                    plog(topic, partition, off, str(exc) or repr(exc))
                    continue
                if state is None:
                    dirty[sk] = [accs, max_ts, shown, key, off]
                    added += len(sk) + dirty_overhead
                else:
                    state[0], state[1], state[2], state[4] = accs, max_ts, shown, off
        self.cache_bytes += added
        if dirty and not held:
            ctx.flushed_at = time.monotonic()  # (an update waits one interval at most)
        if (not suppress or self.cache_bytes > self.cache_max_bytes
                or time.monotonic() - ctx.flushed_at >= self.flush_interval):
            self._flush(ctx, out, topic, partition)
            if self.cache_bytes > self.cache_max_bytes:
                self._evict()
        return out

    def _flush(self, ctx: _TaskContext, out: list[ProducerRecord], topic: str, partition: int) -> None:
        """Flush the task's dirty states: each one's to the store (and so to its changelog
        at the commit that follows) and, as clean bytes, to the cache, and, with a cache,
        its latest result to ``out``, in the order of their first update since the last
        flush."""
        dirty = ctx.dirty
        if dirty:
            cache = ctx.cache
            keys = list(dirty)
            data: list[bytes] = []
            encode = self.store.encode
            suppress = self.suppress
            window = self.window
            size = window.size if window is not None else 0
            unpack_from = _BIASED.unpack_from
            overhead = CACHE_ENTRY_OVERHEAD
            grown = 0
            for sk, state in dirty.items():
                if suppress:
                    if window is None:
                        win = None
                    else:
                        start = unpack_from(sk, len(sk) - 8)[0] - _BIAS
                        win = (start, start + size)
                    try:
                        record = self._result_record(state[3], state[0], state[1], win, "time")
                    except AggregationError as exc:
                        # The state is kept (Kafka Streams stores before it forwards).
                        self.plog(topic, partition, state[4], str(exc))
                    else:
                        shown = record.value is not None
                        # HAVING's tombstone only retracts a row the table showed.
                        if shown or state[2]:
                            out.append(record)
                        state[2] = shown
                raw = encode(state[0], state[1], state[2])
                data.append(raw)
                old = cache.pop(sk, None)  # (re-inserted: most recently used last)
                cache[sk] = raw
                grown += len(raw) - len(old) if old is not None else len(sk) + len(raw) + overhead
                grown -= len(sk) + DIRTY_ENTRY_OVERHEAD
            self.cache_bytes += grown
            self.store.store_many(keys, data)
            dirty.clear()
        ctx.flushed_at = time.monotonic()
        ctx.flushed_stream_time = self.stream_time

    def _evict(self) -> None:
        """Drop least recently used clean states from the caches until they fit their
        size (a task's dirty states stay until it flushes)."""
        limit = self.cache_max_bytes
        overhead = CACHE_ENTRY_OVERHEAD
        for ctx in self._contexts.values():
            cache = ctx.cache
            excess = self.cache_bytes - limit
            if excess <= 0:
                return
            victims = []
            for sk, raw in cache.items():
                victims.append(sk)
                excess -= len(sk) + len(raw) + overhead
                if excess <= 0:
                    break
            freed = 0
            for sk in victims:
                freed += len(sk) + len(cache.pop(sk)) + overhead
            self.cache_bytes -= freed

    def _process(self, batch: RecordBatch) -> list[ProducerRecord]:
        out: list[ProducerRecord] = []
        headers = batch.headers
        for i, (kb, vb, ts, off) in enumerate(zip(batch.keys, batch.values, batch.timestamps, batch.offsets)):
            if kb is None or vb is None:
                continue
            op = headers[i] if headers is not None else ()
            undo = op == UNDO
            try:
                key = self.key_codec.decode(kb)
                if op == UPDATE:
                    n = _LEN.unpack_from(vb)[0]
                    old_args = self.value_codec.decode(vb[4:4 + n])
                    args = self.value_codec.decode(vb[4 + n:])
                else:
                    old_args = None
                    args = self.value_codec.decode(vb)
            except Exception as exc:
                self.plog(batch.topic, batch.partition, off, f"Failed to read repartitioned record: {exc}")
                continue
            observed = self.stream_time  # (before this record: what the session store has seen)
            if ts > self.stream_time:
                self.stream_time = ts
            try:
                if self.window is None:
                    self._update(kb, key, args, ts, undo, None, out, old_args)
                elif self.window.kind == "SESSION":
                    self._update_session(kb, key, args, ts, out, batch, off, observed)
                else:
                    for start, end in self.window.windows_for(ts):
                        if end + self.window.grace <= self.stream_time:
                            self.late_dropped += 1
                            self.plog(batch.topic, batch.partition, off,
                                      f"Record dropped: window [{start}, {end}) closed (late record)")
                            continue
                        self._update(kb + _LONG.pack(start), key, args, ts, undo, (start, end), out)
                if self.emit_final:
                    self._emit_closed(out)
            except AggregateFunctionError as exc:
                # A UDAF's own failure (a DECIMAL SUM outgrowing its precision) stops the
                # query, as ksqlDB's KsqlFunctionException stops Kafka Streams.
                raise QueryFailedError(
                    f"Exception caught in process. topic={batch.topic}, partition={batch.partition}, "
                    f"offset={off}: {exc}") from exc
            except Exception as exc:  # noqa: BLE001 - one record's failure is that record's
                # (an aggregate that cannot take the value, a result the sink's format
                # cannot write): it goes to the processing log and the stage goes on.
                self.plog(batch.topic, batch.partition, off, str(exc) or repr(exc))
        return out

    def _update(self, skey: bytes, key: tuple, args: tuple, ts: int, undo: bool,
                window: tuple[int, int] | None, out: list[ProducerRecord],
                old_args: tuple | None = None) -> None:
        stored = self.store.get(skey)
        if stored is None:
            accs = [a.initialize() for a in self.aggregators]
            max_ts, shown = ts, False
        else:
            accs, max_ts, shown = stored
            max_ts = max(max_ts, ts)
        try:
            if old_args is not None:
                accs = self._fold(accs, old_args, True)
            accs = self._fold(accs, args, undo)
        except AggregateFunctionError:
            raise  # fatal: see process()
        except Exception as exc:
            raise AggregationError(f"Aggregation failed: {exc!r}") from exc
        if self.emit_final:
            assert window is not None
            self.store.put(skey, (accs, max_ts, shown))
            self.pending[skey] = (key, window[0], window[1], skey)
            return
        record = self._result_record(key, accs, max_ts, window, "time")
        # Stored before it is emitted: a state that cannot be stored emits nothing.
        self.store.put(skey, (accs, max_ts, record.value is not None))
        # HAVING's tombstone only retracts a row the table showed (Kafka Streams' KTable filter).
        if record.value is not None or shown:
            out.append(record)

    def _result_record(self, key: tuple, accs: list, ts: int, window: tuple[int, int] | None,
                       kind: str) -> ProducerRecord:
        if self._plain_results:
            results = tuple(accs)
        else:
            results = tuple([a.result(x) for a, x in zip(self.aggregators, accs)])
        wstart, wend = window if window is not None else (None, None)
        projected = self.project(key, results, wstart, wend)
        try:
            if projected is None:
                out_key, value = key, None
            else:
                out_key, row = projected
                value = self.sink_value_codec.encode(row)
            return self._sink_record(out_key, window, kind, value, ts)
        except Exception as exc:
            raise AggregationError(
                f"Error serializing message to topic: {self.sink_topic}. {exc}") from exc

    def stored_row(self, skey: bytes, raw: bytes) -> tuple[bytes, bytes, int] | None:
        """The table's row (key bytes as in its topic, value bytes, timestamp) that the state
        ``raw`` stored under ``skey`` (the store's key: a window's start biased) stands for;
        None when HAVING hides it. What a pull query reads (``AggregateTableView``)."""
        state = self.store.decode(raw)
        window = self.window
        if window is None:
            kb, win = skey, None
        else:
            kb = skey[:-8]
            start = _BIASED.unpack_from(skey, len(skey) - 8)[0] - _BIAS
            win = (start, start + window.size)
        record = self._result_record(self.key_codec.decode(kb), state[0], state[1], win, "time")
        if record.value is None:
            return None
        return record.key or b"", record.value, record.timestamp

    def _sink_record(self, key: tuple, window: tuple[int, int] | None, kind: str, value: bytes | None,
                     ts: int) -> ProducerRecord:
        """The sink's record; a windowed key is partitioned by the key without its window
        (Kafka Streams' WindowedStreamPartitioner), so every window of a key shares a partition."""
        kb = self.sink_key_codec.encode(key)
        if window is None:
            return ProducerRecord(kb, value, ts)
        kb = kb or b""
        if kind == "session":
            return ProducerRecord(kb + _LONG.pack(window[1]) + _LONG.pack(window[0]), value, ts, (), None, kb)
        return ProducerRecord(kb + _LONG.pack(window[0]), value, ts, (), None, kb)

    def _emit_closed(self, out: list[ProducerRecord]) -> None:
        assert self.window is not None
        # A time window closes at end + grace (its end exclusive); a session once no record
        # can join it any more (see _update_session): end + grace + gap < stream time.
        if self.window.kind == "SESSION":
            bound = self.stream_time - self.window.grace - self.window.size - 1
        else:
            bound = self.stream_time - self.window.grace
        closed = [(end, skey) for skey, (_, _, end, _) in self.pending.items() if end <= bound]
        # Windows older than the store's retention (size + grace) are gone by the time they
        # would be emitted, as in Kafka Streams: they are never emitted.
        retention_start = self.stream_time - (self.window.size + self.window.grace)
        kind = "session" if self.window.kind == "SESSION" else "time"
        for _, skey in sorted(closed):
            key, start, end, store_key = self.pending.pop(skey)
            if kind == "time" and start < retention_start:
                continue
            if kind == "session":
                sessions = self.store.get(store_key) or []
                match = [s for s in sessions if s[0] == start and s[1] == end]
                if not match:
                    continue
                accs, max_ts = match[0][2], match[0][3]
            else:
                stored = self.store.get(store_key)
                if stored is None:
                    continue
                accs, max_ts, _ = stored
            out.append(self._result_record(key, accs, max_ts, (start, end), kind))

    # -------------------------------------------------------------------------- sessions
    def _update_session(self, kb: bytes, key: tuple, args: tuple, ts: int, out: list[ProducerRecord],
                        batch: RecordBatch, off: int, observed: int) -> None:
        assert self.window is not None
        gap, grace = self.window.size, self.window.grace
        # Sessions past the store's retention are not found, whether or not they are purged
        # yet: Kafka Streams' session store reads from ``observedStreamTime - retention + 1``
        # on (its time, the latest session end it stored, is the stream time before this
        # record, as every record that moves stream time is stored).
        visible = observed - self.session_retention + 1
        sessions = [s for s in self.store.get(kb) or () if s[1] >= visible]
        start, end = ts, ts
        merged = []
        keep = []
        for s in sessions:
            s_start, s_end = s[0], s[1]
            if s_start - gap <= ts <= s_end + gap:
                merged.append(s)
                start, end = min(start, s_start), max(end, s_end)
            else:
                keep.append(s)
        # A session's end is inclusive, and it could still grow by a gap: it closes once
        # stream time passes end + grace + gap (Kafka Streams' ``mergedWindow.end() <
        # observedStreamTime - gracePeriod - inactivityGap``), a time window at end + grace.
        if end + grace + gap < self.stream_time:
            self.late_dropped += 1
            self.plog(batch.topic, batch.partition, off, "Record dropped: session closed (late record)")
            return
        accs = [a.initialize() for a in self.aggregators]
        max_ts = ts
        for s in merged:
            accs = [a.merge(x, y) for a, x, y in zip(self.aggregators, accs, s[2])]
            max_ts = max(max_ts, s[3])
        try:
            accs = self._fold(accs, args, False)
        except AggregateFunctionError:
            raise  # fatal: see process()
        except Exception as exc:
            raise AggregationError(f"Aggregation failed: {exc!r}") from exc
        new = [start, end, accs, max_ts]
        keep.append(new)
        keep.sort(key=lambda s: s[0])
        self.store.replace_sessions(kb, keep, merged, new)
        if self.emit_final:
            # Merged-away sessions were never emitted; only the final session will be.
            for s in merged:
                self.pending.pop(kb + _LONG.pack(s[0]), None)
            self.pending[kb + _LONG.pack(start)] = (key, start, end, kb)
            return
        for s in merged:
            # The merged-away session is deleted from the table.
            out.append(self._sink_record(key, (s[0], s[1]), "session", None, s[3]))
        out.append(self._result_record(key, accs, max_ts, (start, end), "session"))


class AggregateTableView:
    """The table an aggregation builds, as pull queries read it (``table_row``,
    ``table_rows``), computed from the aggregate store's committed states as ksqlDB's
    materialization reads its aggregate store: the final projection (HAVING, SELECT) applied
    to each state read. The table keeps no store (nor changelog) of its own: each update is
    written once. Keys are the table topic's (windowed: the key, then the window start as 8
    bytes, signed), translated to the store's (the grouping key in the internal format)."""

    # (``MaterializingStage`` writes no rows into it: they are the stage's own state.)
    derived = True

    def __init__(self, stage: AggregateStage, tasks: dict[int, Any] | None = None) -> None:
        self.stage = stage
        self.name = stage.store.name
        self._tasks = tasks

    @property
    def tasks(self) -> dict[int, Any]:
        """The task states read (by partition): the stage's open tasks, unless set (a view
        of standby copies, see ``detached``)."""
        return self.stage.store.tasks if self._tasks is None else self._tasks

    @tasks.setter
    def tasks(self, tasks: dict[int, Any]) -> None:
        self._tasks = tasks

    def detached(self) -> "AggregateTableView":
        """A view of no task, for a reader to attach others to (standby copies)."""
        return AggregateTableView(self.stage, {})

    def _store_key(self, key: bytes) -> bytes | None:
        try:
            group = self.stage.sink_key_codec.decode(key)
            return None if group is None else self.stage.key_codec.encode(group)
        except Exception:  # noqa: BLE001 - a key the table cannot hold has no row
            return None

    def _row(self, pk: bytes, raw: bytes) -> tuple[bytes, bytes, int] | None:
        try:
            return self.stage.stored_row(pk, raw)
        except Exception as exc:  # noqa: BLE001 - a state that cannot be shown is left out
            log.warning("%s: aggregate state %r cannot be read as a row: %s", self.stage.name, pk, exc)
            return None

    def row(self, key: bytes, partitions: set[int] | None = None) -> tuple[bytes, int] | None:
        """The (value, timestamp) of the row of table key ``key``."""
        if self.stage.window is not None:
            if len(key) < 8:
                return None
            base = self._store_key(key[:-8])
            pk = None if base is None else base + _BIASED.pack(_LONG.unpack_from(key, len(key) - 8)[0] + _BIAS)
        else:
            pk = self._store_key(key)
        if pk is None:
            return None
        for p, state in self.tasks.items():
            if partitions is not None and p not in partitions:
                continue
            raw = state.store(self.name).committed_bytes(pk)
            if raw is not None:
                row = self._row(pk, raw)
                return None if row is None else (row[1], row[2])
        return None

    def rows(self, prefix: bytes | None = None, partitions: set[int] | None = None
             ) -> Iterator[tuple[bytes, bytes, int]]:
        """(key, value, timestamp) of every row (whose table key starts with ``prefix``, the
        key without its window), task by task, each task's in the order of the table's key
        bytes (as a store keyed by them gives them: what a LIMIT keeps; the store's own
        keys are in the internal format, ordered otherwise)."""
        sprefix = None
        if prefix:
            sprefix = self._store_key(prefix)
            if sprefix is None:
                return
        for p in sorted(self.tasks):
            if partitions is not None and p not in partitions:
                continue
            got = []
            for pk, raw in self.tasks[p].store(self.name).committed_bytes_prefix(sprefix):
                row = self._row(pk, raw)
                if row is not None:
                    got.append(row)
            got.sort(key=lambda r: r[0])
            yield from got

    def items(self) -> Iterator[tuple[bytes, Any]]:
        for k, v, ts in self.rows():
            yield k, (v, ts)


def table_view(stage: Any) -> AggregateTableView | None:
    """The table ``stage`` builds read from its own aggregate state, when it is an
    aggregation kept in RocksDB that can be (TUMBLING, HOPPING or unwindowed, without EMIT
    FINAL); else None (its table is materialized in a store of its own)."""
    from streamsql.runtime.task import AggregateStore, WindowAggregateStore

    if not isinstance(stage, AggregateStage) or stage.emit_final:
        return None
    if type(stage.store) not in (AggregateStore, WindowAggregateStore):
        return None
    return AggregateTableView(stage)


class KeyedAggregateStage(AggregateStage):
    """An aggregation over a stream already partitioned by what it groups on (GROUP BY the
    source's key, see ``streamsql.analyzer.groups_by_source_key``): one stage reading the
    source topic, as Kafka Streams' ``groupByKey`` runs, with no repartition topic. The
    group-by pipeline (filter, grouping key, aggregate arguments) runs in the same pass and
    hands its records to the aggregation in memory, so stores, changelogs and results are
    those of the two-stage plan."""

    def __init__(self, *args: Any, pipeline: Any, source_key_codec: Codec, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pipeline = pipeline
        self.source_key_codec = source_key_codec
        self.outputs = Outputs()

    def input_key(self, key: tuple) -> bytes | None:
        """The key bytes of the table row ``key``'s records in the source topic (their
        partition holds the row); None for windowed tables."""
        return None if self.window is not None else self.source_key_codec.encode(key)

    def process(self, batch: RecordBatch) -> list[ProducerRecord]:
        out = self.outputs
        out.clear()
        self.pipeline.process(batch, out)
        if not out.keys and not self._batched:
            return []  # (a cached stage still sees the batch: its commit interval may be over)
        # Failures are logged at the source record's offset. No headers: the source's own
        # are not the op=undo/update markers of a table's group-by.
        grouped = RecordBatch(batch.topic, batch.partition, out.offsets, out.timestamps,
                              out.keys, out.values, None)
        return super().process(grouped)


class TableGroupByStage:
    """Group-by over a TABLE source: keeps each source row's last value so an update or a
    delete first retracts the old row's contribution (sent with header ``op=undo``)."""

    exactly_once = True

    def __init__(self, name: str, source_topic: str, sink_topic: str, mapper: Any,
                 key_codec: Codec, value_codec: Codec, store: Any,
                 plog: Callable[[str, int, int, str], None] | None = None) -> None:
        self.name = name
        # Where a row that cannot be grouped is reported (the query's processing log).
        self.plog = plog or (lambda topic, partition, offset, message: log.warning(
            "%s-%d@%d: %s", topic, partition, offset, message))
        self.source_topic = source_topic
        self.sink_topic = sink_topic
        self.mapper = mapper  # a rows-mode pipeline: record -> (group key..., args...)
        self.key_codec = key_codec
        self.value_codec = value_codec
        self.store = store
        self.outputs = Outputs()
        self.n_keys = 0

    def _map(self, topic: str, partition: int, offset: int, kb: bytes | None, vb: bytes | None,
             ts: int) -> tuple | None:
        out = self.outputs
        out.clear()
        self.mapper.process(RecordBatch(topic, partition, [offset], [ts], [kb], [vb]), out)
        return out.rows[0] if out.rows else None

    def _grouped(self, row: tuple | None) -> tuple[bytes, bytes] | None:
        if row is None or all(v is None for v in row[: self.n_keys]):
            return None
        return self.key_codec.encode(row[: self.n_keys]), self.value_codec.encode(row[self.n_keys:])

    def process(self, batch: RecordBatch) -> list[ProducerRecord]:
        records: list[ProducerRecord] = []
        for kb, vb, ts, off in zip(batch.keys, batch.values, batch.timestamps, batch.offsets):
            if kb is None:
                continue
            old_vb = self.store.get(kb)
            old = self._grouped(self._map(batch.topic, batch.partition, off, kb, old_vb, ts)) \
                if old_vb is not None else None
            try:
                new = self._grouped(self._map(batch.topic, batch.partition, off, kb, vb, ts)) \
                    if vb is not None else None
            except Exception as exc:  # noqa: BLE001 - the row cannot be written to the repartition
                # topic: it goes to the processing log and leaves the table, as a delete would
                # (so the row kept here is always one that can be grouped again).
                self.plog(batch.topic, batch.partition, off, f"Error serializing record: {exc}")
                new = vb = None
            if vb is None:
                self.store.delete(kb)
            else:
                self.store.put(kb, vb)
            if old is not None and new is not None and old[0] == new[0]:
                # Same group: one update, so the table changes once, as Kafka Streams emits it.
                records.append(ProducerRecord(new[0], _LEN.pack(len(old[1])) + old[1] + new[1], ts, UPDATE))
                continue
            if old is not None:
                records.append(ProducerRecord(old[0], old[1], ts, UNDO))
            if new is not None:
                records.append(ProducerRecord(new[0], new[1], ts))
        return records


def _window_spec(plan: AggregatePlan) -> WindowSpec | None:
    w = plan.window
    if w is None:
        return None
    grace = w.grace if w.grace is not None else DEFAULT_GRACE_MS
    return WindowSpec(w.kind, w.size, w.advance or w.size, grace)


def window_retention(plan: AggregatePlan) -> int | None:
    """How long the windowed table ``plan`` builds keeps each window (ms past the latest
    window start, or session end, seen): the window's RETENTION, else size + grace (for
    SESSION, gap + grace), as ksqlDB. None when ``plan`` is not windowed. A RETENTION shorter
    than size + grace is refused, as Kafka Streams refuses such a window store."""
    spec = _window_spec(plan)
    if spec is None:
        return None
    least = spec.size + spec.grace
    retention = plan.window.retention if plan.window is not None else None
    if retention is None:
        return least
    if retention < least:
        raise KsqlException(
            "The retention period of the window store must be no smaller than its window size "
            f"plus the grace period. Got size=[{spec.size}], grace=[{spec.grace}], "
            f"retention=[{retention}]")
    return retention


def build_projection(engine: "Engine", plan: AggregatePlan, query_id: str,
                     plog: Callable[[str, int, int, str], None]) -> Callable[..., Any]:
    """Generate ``project(group_key, results, windowstart, windowend)``: the aggregated row's
    (key tuple, value tuple), or None when HAVING rejects it."""
    scope = Scope()
    for i, g in enumerate(plan.groups):
        scope.columns[g.name] = ScopeColumn(f"g{i}", g.type)
    for i, a in enumerate(plan.aggregates):
        scope.columns[f"KSQL_AGG_VARIABLE_{i}"] = ScopeColumn(f"a{i}", a.return_type)
    scope.columns["WINDOWSTART"] = ScopeColumn("windowstart", BIGINT)
    scope.columns["WINDOWEND"] = ScopeColumn("windowend", BIGINT)
    env: dict[str, Any] = {"_plog": plog, "_topic": query_id}
    comp = ExpressionCompiler(engine.registry, scope, env, clause="SELECT")
    lines = ["def project(g, a, windowstart, windowend):"]
    ng, na = len(plan.groups), len(plan.aggregates)
    if ng:
        lines.append(f"    {''.join(f'g{i}, ' for i in range(ng))}= g")
    if na:
        lines.append(f"    {''.join(f'a{i}, ' for i in range(na))}= a")
    if plan.having is not None:
        lines += filter_lines(comp, plan.having, "HAVING")
    lines += projection_lines(comp, list(plan.key) + list(plan.value), len(plan.key))
    src = "\n".join(lines) + "\n"
    exec(compile(src, f"<projection {query_id}>", "exec"), env)  # noqa: S102 - generated source
    return env["project"]


async def build_aggregate_stages(engine: "Engine", query_id: str, plan: AggregatePlan, sink: DataSource,
                                 props: dict[str, Any], internal_source: bool = False) -> list[Stage]:
    """The group-by stage and the aggregate stage of ``plan`` (see the module docstring), or
    one ``KeyedAggregateStage`` when the source is already partitioned by the grouping
    (``groups_by_source_key``). ``internal_source``: ``plan.source`` is a query's internal
    topic (a join's rows, in the internal format), not a source of the catalog."""
    source = plan.source
    if internal_source:
        in_key, in_value = internal_codec(source.schema.key), internal_codec(source.schema.value)
    else:
        in_key, in_value = engine.codec(source, "key"), engine.codec(source, "value")
    if "DELIMITED" in (sink.value_format.name, source.value_format.name):
        # ksqlDB keeps intermediate aggregates in the value format; DELIMITED has no structs.
        for a in plan.aggregates:
            it = getattr(a.aggregator(props), "intermediate_type", None)
            if it is not None and not it.is_primitive:
                raise KsqlException(
                    "One of the functions used in the statement has an intermediate type that the value "
                    "format can not handle. Please remove the function or change the format.")
    repartition = f"{engine.internal_name(query_id)}-Aggregate-GroupBy-repartition"
    # A push query's result keeps the source's key format (its sink here is only a decoder).
    transient = query_id in engine.transient_queries
    by_key = not internal_source and groups_by_source_key(plan, None if transient else sink.key_format)
    if by_key and await engine.log.describe_topic(repartition) is not None:
        # The query ran before with a repartition topic (planned so by an earlier version,
        # its statement replayed now): it keeps that plan, the records in the topic are its.
        by_key = False
    if not by_key:
        info = await engine.log.describe_topic(source.topic)
        await engine.ensure_repartition_topic(repartition, info.partitions if info else 1)
    arg_cols: list[OutputColumn] = []
    for i, a in enumerate(plan.aggregates):
        for j, (x, ty) in enumerate(zip(a.args, a.arg_types)):
            arg_cols.append(OutputColumn(f"A{i}_{j}", x, ty))
    key_columns = tuple(Column(g.name, g.type, "KEY") for g in plan.groups)
    value_columns = tuple(Column(c.name, c.type, "VALUE") for c in arg_cols)
    key_codec, value_codec = internal_codec(key_columns), internal_codec(value_columns)
    plog = engine._processing_logger(query_id)
    pre = QueryPlan(source, plan.alias, plan.where, plan.groups, tuple(arg_cols),
                    LogicalSchema(key_columns, value_columns), rekeyed=True, drop_null_key=True)
    first: Stage | None = None  # (None: aggregated where the records are, see below)
    if by_key:
        pipeline = build_pipeline(pre, engine.registry, in_key, in_value, key_codec, value_codec, plog,
                                  timestamp_parser=engine._timestamp_parser(source), offsets=True)
    elif source.is_table:
        mapper = build_pipeline(pre, engine.registry, in_key, in_value, None, None, plog, rows=True,
                                timestamp_parser=engine._timestamp_parser(source))
        grouper = TableGroupByStage(f"{query_id}-groupby", source.topic, repartition, mapper,
                                    key_codec, value_codec,
                                    engine.new_store(query_id, "source", "bytes"), plog)
        grouper.n_keys = len(plan.groups)
        first = grouper
    else:
        pipeline = build_pipeline(pre, engine.registry, in_key, in_value, key_codec, value_codec, plog,
                                  timestamp_parser=engine._timestamp_parser(source))
        first = PipelineStage(f"{query_id}-groupby", source.topic, repartition, pipeline)
    project = build_projection(engine, plan, query_id, plog)
    window = _window_spec(plan)
    if window is None:
        store = engine.new_store(query_id, "aggregate", "aggregate")
    elif window.kind == "SESSION":
        # Sessions ending gap + grace (or RETENTION) before the latest end are not found
        # any more (see KeyedAggregateStage._update_session).
        store = engine.new_store(query_id, "aggregate", "session-aggregate",
                                 retention_ms=(window_retention(plan) or 0) + 1)
    else:
        # Windows past size + grace are closed: no record can reach them any more. Pull
        # queries read the table from this store (``table_view``): kept for the window's
        # RETENTION when that is longer.
        store = engine.new_store(query_id, "aggregate", "window-aggregate",
                                 retention_ms=max(window.size + window.grace + 1,
                                                  window_retention(plan) or 0))
    pending = engine.new_store(query_id, "aggregate-pending", "json") if plan.emit_final else None
    if first is None:
        # One stage: named as the two-stage plan's aggregate stage, for the same stores.
        return [KeyedAggregateStage(
            f"{query_id}-aggregate", source.topic, sink.topic, plan, key_codec, value_codec,
            engine.codec(sink, "key"), engine.codec(sink, "value"), project, plog, store, window,
            props, pending_store=pending, pipeline=pipeline, source_key_codec=in_key)]
    second = AggregateStage(f"{query_id}-aggregate", repartition, sink.topic, plan, key_codec, value_codec,
                            engine.codec(sink, "key"), engine.codec(sink, "value"), project, plog,
                            store, window, props, pending_store=pending)
    second.purged_inputs = (repartition,)
    return [first, second]

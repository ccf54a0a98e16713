"""Joins: one join stage per join step that reads both sides (each re-keyed by its join
expression, in an internal topic or in the stage itself), keeps both sides' state and emits
joined rows.

- stream-stream: both sides kept for the WITHIN window (plus grace) in window stores keyed
  by join key and record time; a record joins the other side's records whose time is within
  range; the result's time is the later of the two. Without a GRACE PERIOD, an outer join
  emits the unmatched record at once (ksqlDB's older, eager semantics); with one, unmatched
  records wait in an "outer" store ordered by time and are emitted when their window closes
  (a later match removes them from it).
- stream-table: the table side is the latest row per key (key-value store); a stream record
  looks it up.
- table-table: both sides are the latest row per key; a change on either side emits the new
  joined row, or a tombstone when the join no longer has a row for the key (a "shown" store
  remembers which keys the output table currently has).
- foreign key (table-table): the left is keyed by its primary key and carries the foreign key
  as a last column; an index store (foreign key, primary key) re-joins the left rows of a
  right-side change.

The joined row is projected by a generated function over both sides' columns and ROWKEY.

State and exactly-once. All of a step's state is in stores from ``Engine.new_store`` (or this
module's own partitioned stores for the window, outer and index kinds): RocksDB per task in
service mode with a state directory, dicts otherwise (test mode). Both inputs of a step go
through ONE ``JoinStage`` with ``source_topics = (left, right)``: one runner consumes both
inputs (sources or repartition topics), which have the same number of partitions and are
partitioned alike by the join key, so partition p of each lands in the same task p. One writer of the output topic, one task state per
partition and one commit per batch (state, the batch's input offset, the output's end
offsets, plus stream time and the outer-store sequence as the task's extra) make the step
exactly-once through the same machinery as aggregations (``streamsql.runtime.task``): on
restart uncommitted output is cut back and the batch is processed again from the committed
state. (Two stages, one per side, writing one topic could not be cut back exactly: one side's
commit would cover the other side's uncommitted output.) A foreign-key step re-joins across
keys of both sides, so its two re-keyed topics have one partition (one task).

As ksqlDB, only a side whose join expression is not its key is repartitioned
(``_direct_sides``): a source keyed by the join key (in a plain key format, as many partitions
as the other side) is read by the join stage itself, its re-key pipeline run inside the stage.
Both sides keyed alike: one stage, no repartition topic. One side keyed: the other is
re-keyed into a repartition topic partitioned as the keyed source (``SideRekeyStage``; with
two keyed sides in different key formats, the right one is re-keyed, as ksqlDB re-keys it
into the left's format). Sources of different partition counts are refused before the query
starts, with ksqlDB's error (``check_join_partitions``). Either way the stage's runner hands
it each task's records in timestamp order across both inputs (``streamsql.runtime.ordering``).

After the join (``streamsql.join_post``): PARTITION BY is the last step's projection (its key
the PARTITION BY expressions); GROUP BY over a stream join runs the group-by pipeline on the
joined rows inside the join stage (``JoinGroupByStage``), which writes the aggregation's
repartition topic, as ksqlDB's plan; over a table join the last step writes the whole joined
row to an internal topic ``<query>-Join-<n>``, the source of the table group-by and aggregate
stages (``streamsql.runtime.aggregate``).

In test mode the test driver delivers records by topic to ``stage.source_topic``, so the
right-hand input is also given as a small ``JoinInput`` stage forwarding to the join stage
(through its ``MaterializingStage`` wrapper when the sink is a table).
"""
from __future__ import annotations

import heapq
import logging
import struct
from dataclasses import replace
from functools import partial
from itertools import repeat
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Callable, Iterator

from streamsql.analyzer import OutputColumn, QueryPlan
from streamsql.catalog import DataSource
from streamsql.codegen import ExpressionCompiler
from streamsql.errors import KsqlStatementException
from streamsql.join_analyzer import JoinPlan, JoinSide, joined_scope
from streamsql.runtime.aggregate import DEFAULT_GRACE_MS, internal_codec
from streamsql.runtime.log.base import ProducerRecord, RecordBatch
from streamsql.runtime.pipeline import Outputs, Pipeline, build_pipeline
from streamsql.runtime.projection import filter_lines, projection_lines
from streamsql.runtime.query import PipelineStage, Stage
from streamsql.runtime.task import PICKLE, PartitionedStore
from streamsql.schema import Column, LogicalSchema
from streamsql.state import BYTES, MIN_TS, KeyValueStoreSpec, StoreSpec, TaskState, WindowStoreSpec
from streamsql.state.keys import decode_ts, encode_ts
from streamsql import expressions as e

if TYPE_CHECKING:
    from streamsql.engine import Engine

log = logging.getLogger(__name__)

_LEN = struct.Struct(">I")
_SEQ = struct.Struct(">Q")
_BY_TIME = itemgetter(0)


def _unbound(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("join store is not bound to a task (used outside its stage's runner?)")


# ------------------------------------------------------------------------------- stores
class MemoryWindowStore:
    """(key, time) -> value kept ``retention_ms`` past the latest time put, in dicts: the
    stream-stream store of test mode, with the reads of ``RocksDBWindowStore`` (``get``,
    ``put``, ``fetch`` in time order; expired times are invisible and dropped)."""

    def __init__(self, retention_ms: int) -> None:
        self.retention_ms = retention_ms
        self.observed = MIN_TS
        self.cutoff = MIN_TS
        self.data: dict[bytes, dict[int, Any]] = {}

    def get(self, key: bytes, ts: int) -> Any:
        if ts < self.cutoff:
            return None
        times = self.data.get(key)
        return times.get(ts) if times else None

    def put(self, key: bytes, ts: int, value: Any) -> None:
        if ts > self.observed:
            self.observed = ts
            self.cutoff = ts - self.retention_ms + 1
        elif ts < self.cutoff:
            return  # expired already, as RocksDB's store drops it
        times = self.data.get(key)
        if times is None:
            times = self.data[key] = {}
        else:
            # A key's expired times go when the key is written again (bounded per key).
            for t in [t for t in times if t < self.cutoff]:
                del times[t]
        times[ts] = value

    def fetch(self, key: bytes, time_from: int, time_to: int) -> list[tuple[int, Any]]:
        times = self.data.get(key)
        if not times:
            return []
        lo = max(time_from, self.cutoff)
        return sorted(((t, v) for t, v in times.items() if lo <= t <= time_to), key=_BY_TIME)


class JoinWindowStore(PartitionedStore):
    """A partitioned window store (pickled values) for one side of a stream-stream join."""

    get: Callable[[bytes, int], Any] = staticmethod(_unbound)
    put: Callable[[bytes, int, Any], None] = staticmethod(_unbound)
    fetch: Callable[[bytes, int, int], Iterator[tuple[int, Any]]] = staticmethod(_unbound)

    def __init__(self, name: str, retention_ms: int) -> None:
        super().__init__(name)
        self.retention_ms = retention_ms

    def spec(self, changelog: str | None) -> StoreSpec:
        return WindowStoreSpec(self.name, self.retention_ms, changelog, PICKLE)

    def bind(self, state: TaskState) -> None:
        s = state.window(self.name)
        self.get = s.get  # type: ignore[method-assign]
        self.put = s.put  # type: ignore[method-assign]
        self.fetch = s.fetch  # type: ignore[method-assign]


class MemoryOuterStore:
    """Unmatched outer-join records waiting for their window to close, by ``time || seq``
    key (test mode): ``put``, ``delete``, ``pop_below(bound)``."""

    def __init__(self) -> None:
        self.data: dict[bytes, Any] = {}
        self.heap: list[bytes] = []

    def put(self, key: bytes, value: Any) -> None:
        self.data[key] = value
        heapq.heappush(self.heap, key)

    def delete(self, key: bytes) -> None:
        self.data.pop(key, None)

    def pop_below(self, bound: bytes) -> list[tuple[bytes, Any]]:
        """Remove and return the entries whose key is below ``bound``, in key order."""
        out = []
        heap, data = self.heap, self.data
        while heap and heap[0] < bound:
            key = heapq.heappop(heap)
            value = data.pop(key, None)
            if value is not None:
                out.append((key, value))
        return out


class JoinOuterStore(PartitionedStore):
    """``MemoryOuterStore``'s calls on a partitioned RocksDB key-value store."""

    put: Callable[[bytes, Any], None] = staticmethod(_unbound)
    delete: Callable[[bytes], None] = staticmethod(_unbound)

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._range: Callable[..., Iterator[tuple[bytes, Any]]] = _unbound

    def spec(self, changelog: str | None) -> StoreSpec:
        return KeyValueStoreSpec(self.name, changelog, PICKLE)

    def bind(self, state: TaskState) -> None:
        s = state.kv(self.name)
        self.put = s.put  # type: ignore[method-assign]
        self.delete = s.delete  # type: ignore[method-assign]
        self._range = s.range

    def pop_below(self, bound: bytes) -> list[tuple[bytes, Any]]:
        out = list(self._range(None, bound))
        for key, _ in out:
            self.delete(key)
        return out


class MemoryIndex:
    """Foreign key bytes -> the left primary keys (bytes) that refer to it (test mode)."""

    def __init__(self) -> None:
        self.data: dict[bytes, dict[bytes, None]] = {}

    def add(self, fk: bytes, pk: bytes) -> None:
        self.data.setdefault(fk, {})[pk] = None

    def remove(self, fk: bytes, pk: bytes) -> None:
        members = self.data.get(fk)
        if members is not None:
            members.pop(pk, None)
            if not members:
                del self.data[fk]

    def members(self, fk: bytes) -> list[bytes]:
        return list(self.data.get(fk, ()))


class JoinIndexStore(PartitionedStore):
    """``MemoryIndex`` on a partitioned RocksDB key-value store: keys ``len(fk) || fk || pk``
    (4-byte length, so one foreign key's entries are one prefix)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._put: Callable[[bytes, Any], None] = _unbound
        self._delete: Callable[[bytes], None] = _unbound
        self._prefix: Callable[[bytes], Iterator[tuple[bytes, Any]]] = _unbound

    def spec(self, changelog: str | None) -> StoreSpec:
        return KeyValueStoreSpec(self.name, changelog, BYTES)

    def bind(self, state: TaskState) -> None:
        s = state.kv(self.name)
        self._put, self._delete, self._prefix = s.put, s.delete, s.prefix

    def add(self, fk: bytes, pk: bytes) -> None:
        self._put(_LEN.pack(len(fk)) + fk + pk, b"")

    def remove(self, fk: bytes, pk: bytes) -> None:
        self._delete(_LEN.pack(len(fk)) + fk + pk)

    def members(self, fk: bytes) -> list[bytes]:
        n = 4 + len(fk)
        return [k[n:] for k, _ in self._prefix(_LEN.pack(len(fk)) + fk)]


class _TaskContext:
    """What a join stage keeps per task besides its stores: stream time (stream-stream), the
    next outer-store sequence number, and whether the outer stores need a look."""

    __slots__ = ("stream_time", "seq", "scan")

    def __init__(self, stream_time: int = -1, seq: int = 0) -> None:
        self.stream_time = stream_time
        self.seq = seq
        self.scan = True


class _WindowedKeyCodec:
    """Decodes a windowed side's re-keyed key: the join key's bytes, then the window's."""

    def __init__(self, inner: Any, window_len: int) -> None:
        self.inner = inner
        self.window_len = window_len

    def decode(self, data: bytes | None) -> Any:
        return self.inner.decode(data[:-self.window_len] or None if data is not None else None)

    def encode(self, key: Any) -> Any:
        return self.inner.encode(key)


# ---------------------------------------------------------------------------- the stage
class JoinError(Exception):
    """A join result could not be written; the message says why (for the processing log)."""


class JoinStage:
    """One join step: reads both sides' topics (``source_topics``), writes ``sink_topic``.
    See the module docstring."""

    # All its state is in its stores and task contexts: it can run exactly-once.
    exactly_once = True
    # Topics only this stage reads, purged as it commits (StageRunner._purge): its
    # repartition topics.
    purged_inputs: tuple[str, ...] = ()

    def __init__(self, name: str, left_topic: str, right_topic: str, sink_topic: str, plan: JoinPlan,
                 codecs: tuple[Any, Any, Any, Any], sink_key_codec: Any, sink_value_codec: Any,
                 project: Callable[..., Any], stores: dict[str, Any], per_task: bool,
                 rekey: dict[str, Pipeline] | None = None,
                 plog: Callable[[str, int, int, str], None] | None = None) -> None:
        self.name = name
        self.plog = plog
        self.source_topic = left_topic
        self.right_topic = right_topic
        self.source_topics = (left_topic, right_topic)
        self.sink_topic = sink_topic
        self.plan = plan
        self.left_key, self.left_value, self.right_key, self.right_value = codecs
        self.sink_key_codec = sink_key_codec
        self.sink_value_codec = sink_value_codec
        self.project = project
        w = plan.within
        self.before = w.before if w else 0
        self.after = w.after if w else 0
        self.grace = w.grace if w and w.grace is not None else None
        self.sink_ts_index: int | None = None
        # Windowed sources (a stream-stream join of windowed streams): the re-keyed keys end
        # with the window's bytes (8: a time window's start, 16: a session's end and start),
        # so records join only within the same window, and the result keeps that window.
        self.window_len = 0
        self._window_suffix = b""
        # The headers of the record being joined: its results carry them, as Kafka Streams
        # forwards the triggering record's context (the foreign-key join's results carry none).
        self._headers: Any = ()
        # A foreign-key join's left table may have several key columns: its rows are keyed
        # (and the result too) by all of them, the tuple of their values.
        self.fk_key_width = 1
        # Stores as attributes (the runner finds and binds them); None when the kind has none.
        self.left_store = stores.get("left")
        self.right_store = stores.get("right")
        self.shown_store = stores.get("shown")
        self.fk_index = stores.get("index")
        self.left_outer = stores.get("left_outer")
        self.right_outer = stores.get("right_outer")
        # Per task in service mode (stores are per task); one context otherwise.
        self.per_task = per_task
        self._contexts: dict[int, _TaskContext] = {}
        # What records go through: this stage, or the MaterializingStage wrapping it.
        self.entry: Any = self
        # Inputs read from a source as it is (no repartition topic): topic -> the side's
        # re-key pipeline, run here (see ``_direct_sides``).
        self._rekey = {t: (p, Outputs()) for t, p in (rekey or {}).items()}
        kind = plan.kind
        if kind == "STREAM_STREAM":
            self._on_left = partial(self._stream_stream, "L")
            self._on_right = partial(self._stream_stream, "R")
        elif kind == "STREAM_TABLE":
            self._on_left, self._on_right = self._stream_table_stream, self._stream_table_table
        elif kind == "FOREIGN_KEY":
            self._on_left, self._on_right = self._fk_left, self._fk_right
        else:
            self._on_left = partial(self._table_table, "L")
            self._on_right = partial(self._table_table, "R")

    def wrapped_by(self, outer: Any) -> None:
        """``outer`` (a ``MaterializingStage``) wraps this stage: the right-hand input goes
        through it too."""
        self.entry = outer

    # ------------------------------------------------------------------------ task state
    def _context(self, partition: int) -> _TaskContext:
        p = partition if self.per_task else 0
        ctx = self._contexts.get(p)
        if ctx is None:
            ctx = self._contexts[p] = _TaskContext()
        return ctx

    def task_extra(self, partition: int) -> dict[str, Any]:
        """What a task commits beside its stores (JSON)."""
        ctx = self._context(partition)
        return {"stream_time": ctx.stream_time, "seq": ctx.seq}

    def task_opened(self, partition: int, extra: Any) -> None:
        """A task's state was opened: reload its stream time and outer sequence."""
        ctx = self._contexts[partition] = _TaskContext()
        if isinstance(extra, dict):
            ctx.stream_time = int(extra.get("stream_time", -1))
            ctx.seq = int(extra.get("seq", 0))

    # ----------------------------------------------------------------------- processing
    def process(self, batch: RecordBatch) -> list[ProducerRecord]:
        out: list[ProducerRecord] = []
        ctx = self._context(batch.partition)
        if self._rekey:
            rekey = self._rekey.get(batch.topic)
            if rekey is not None:
                pipeline, keyed = rekey
                keyed.clear()
                pipeline.process(batch, keyed)
                batch = RecordBatch(batch.topic, batch.partition, keyed.offsets, keyed.timestamps,
                                    keyed.keys, keyed.values, keyed.headers if any(keyed.headers) else None)
        self._headers = ()
        if batch.topic == self.right_topic:
            self._on_right(batch, ctx, out)
        else:
            self._on_left(batch, ctx, out)
        return out

    def _failed(self, batch: RecordBatch, offset: int, exc: Exception) -> None:
        """One record could not be joined or its result not written (a value the sink's
        format cannot hold): it goes to the processing log, and the stage goes on. (The
        state it changed before failing stays: the join is as if the result was filtered.)"""
        if self.plog is None:
            raise exc
        self.plog(batch.topic, batch.partition, offset, str(exc) or repr(exc))

    def _emit(self, out: list[ProducerRecord], jk: Any, left: tuple | None, right: tuple | None, ts: int) -> None:
        projected = self.project(jk, left, right)
        if projected is None:
            return
        key, row = projected
        try:
            kb = None if not key or key[0] is None else self.sink_key_codec.encode(key)
            base = None
            if self.window_len and kb is not None:
                # (partitioned by the key without its window: WindowedStreamPartitioner)
                base, kb = kb, kb + self._window_suffix
            vb = self.sink_value_codec.encode(row)
        except Exception as exc:
            raise JoinError(f"Error serializing message to topic: {self.sink_topic}. {exc}") from exc
        if self.sink_ts_index is not None and row[self.sink_ts_index] is not None:
            ts = row[self.sink_ts_index]  # the sink's TIMESTAMP column
        out.append(ProducerRecord(kb, vb, ts, self._headers or (), None, base))

    def _tombstone(self, out: list[ProducerRecord], jk: Any, ts: int) -> None:
        try:
            kb = self.sink_key_codec.encode(jk if self.fk_key_width > 1 else (jk,))
        except Exception as exc:
            raise JoinError(f"Error serializing message to topic: {self.sink_topic}. {exc}") from exc
        out.append(ProducerRecord(kb, None, ts, self._headers or ()))

    # ---------------------------------------------------------------------- stream-table
    def _stream_table_table(self, batch: RecordBatch, ctx: _TaskContext, out: list[ProducerRecord]) -> None:
        store = self.right_store
        put, delete = store.put, store.delete
        for kb, vb in zip(batch.keys, batch.values):
            if kb is None:
                continue
            if vb is None:
                delete(kb)
            else:
                put(kb, vb)

    def _stream_table_stream(self, batch: RecordBatch, ctx: _TaskContext, out: list[ProducerRecord]) -> None:
        get = self.right_store.get
        kdec, ldec, rdec = self.left_key.decode, self.left_value.decode, self.right_value.decode
        left_join = self.plan.join_type == "LEFT"
        emit = self._emit
        for kb, vb, ts, off, self._headers in zip(batch.keys, batch.values, batch.timestamps, batch.offsets,
                                                  _headers_of(batch)):
            if vb is None:
                continue
            try:
                jk = kdec(kb)[0] if kb is not None else None
                rvb = get(kb) if jk is not None else None
                if rvb is not None:
                    emit(out, jk, ldec(vb), rdec(rvb), ts)
                elif left_join:
                    emit(out, jk, ldec(vb), None, ts)
            except Exception as exc:  # noqa: BLE001 - see _failed
                self._failed(batch, off, exc)

    # ----------------------------------------------------------------------- table-table
    def _table_table(self, side: str, batch: RecordBatch, ctx: _TaskContext, out: list[ProducerRecord]) -> None:
        lget, rget = self.left_store.get, self.right_store.get
        mine = self.left_store if side == "L" else self.right_store
        mput, mdel = mine.put, mine.delete
        shown = self.shown_store
        sget, sput, sdel = shown.get, shown.put, shown.delete
        kdec = (self.left_key if side == "L" else self.right_key).decode
        ldec, rdec = self.left_value.decode, self.right_value.decode
        jt = self.plan.join_type
        for kb, vb, ts, off, self._headers in zip(batch.keys, batch.values, batch.timestamps, batch.offsets,
                                                  _headers_of(batch)):
            if kb is None:
                continue
            try:
                jk = kdec(kb)[0]
                if jk is None:
                    continue
                if vb is None:
                    mdel(kb)
                else:
                    mput(kb, (vb, ts))
                left = lget(kb)
                right = rget(kb)
                if jt == "INNER":
                    present = left is not None and right is not None
                elif jt == "LEFT":
                    present = left is not None
                elif jt == "RIGHT":
                    present = right is not None
                else:
                    present = left is not None or right is not None
                if present:
                    out_ts = max(x[1] for x in (left, right) if x is not None)
                    self._emit(out, jk, ldec(left[0]) if left else None, rdec(right[0]) if right else None, out_ts)
                    if not sget(kb):
                        sput(kb, True)
                elif sget(kb):
                    sdel(kb)
                    self._tombstone(out, jk, ts)
            except Exception as exc:  # noqa: BLE001 - see _failed
                self._failed(batch, off, exc)

    # ----------------------------------------------------------------------- foreign key
    def _fk_left(self, batch: RecordBatch, ctx: _TaskContext, out: list[ProducerRecord]) -> None:
        """Left rows arrive keyed by their primary key with the foreign key as a last column."""
        lstore, index = self.left_store, self.fk_index
        lget, lput, ldel = lstore.get, lstore.put, lstore.delete
        rget = self.right_store.get
        kdec, ldec = self.left_key.decode, self.left_value.decode
        fkenc, rdec = self.right_key.encode, self.right_value.decode
        inner = self.plan.join_type == "INNER"
        for kb, vb, ts, off in zip(batch.keys, batch.values, batch.timestamps, batch.offsets):
            if kb is None:
                continue
            try:
                jk = self._left_pk(kdec(kb))
                if jk is None:
                    continue
                old = lget(kb)
                old_fk = ldec(old)[-1] if old is not None else None
                if vb is None:
                    if old is not None:
                        ldel(kb)
                        if old_fk is not None:
                            index.remove(fkenc((old_fk,)), kb)
                    self._tombstone(out, jk, ts)
                    self.shown_store.delete(kb)
                    continue
                row = ldec(vb)
                fk, left = row[-1], row[:-1]
                lput(kb, vb)
                if old_fk is not None and old_fk != fk:
                    index.remove(fkenc((old_fk,)), kb)
                right = None
                if fk is not None:
                    fkb = fkenc((fk,))
                    if old_fk != fk:
                        index.add(fkb, kb)
                    rvb = rget(fkb)
                    right = rdec(rvb) if rvb is not None else None
                self._fk_emit(out, jk, kb, left, right, ts, inner)
            except Exception as exc:  # noqa: BLE001 - see _failed
                self._failed(batch, off, exc)

    def _fk_right(self, batch: RecordBatch, ctx: _TaskContext, out: list[ProducerRecord]) -> None:
        """Right rows arrive keyed by their key; the index gives the left rows to re-join."""
        rstore, index = self.right_store, self.fk_index
        rput, rdel = rstore.put, rstore.delete
        lget = self.left_store.get
        lkdec, ldec = self.left_key.decode, self.left_value.decode
        rkdec, rdec = self.right_key.decode, self.right_value.decode
        inner = self.plan.join_type == "INNER"
        for kb, vb, ts, off in zip(batch.keys, batch.values, batch.timestamps, batch.offsets):
            if kb is None or rkdec(kb)[0] is None:
                continue
            try:
                if vb is None:
                    rdel(kb)
                    right = None
                else:
                    rput(kb, vb)
                    right = rdec(vb)
                members = index.members(kb)
                if not members:
                    continue
                pks = sorted(((self._left_pk(lkdec(pkb)), pkb) for pkb in members),
                             key=lambda x: tuple((str(type(v)), v) for v in (
                                 x[0] if self.fk_key_width > 1 else (x[0],))))
                for pk, pkb in pks:
                    lvb = lget(pkb)
                    if lvb is None:
                        continue
                    self._fk_emit(out, pk, pkb, ldec(lvb)[:-1], right, ts, inner)
            except Exception as exc:  # noqa: BLE001 - see _failed
                self._failed(batch, off, exc)

    def _left_pk(self, key: tuple) -> Any:
        """A foreign-key join's left primary key from its decoded key: the value, or the tuple
        of values of several key columns (None when all are NULL)."""
        if self.fk_key_width == 1:
            return key[0]
        return None if all(v is None for v in key) else tuple(key)

    def _fk_emit(self, out: list[ProducerRecord], pk: Any, pkb: bytes, left: tuple, right: tuple | None,
                 ts: int, inner: bool) -> None:
        shown = self.shown_store
        if right is None and inner:
            if shown.get(pkb):
                shown.delete(pkb)
                self._tombstone(out, pk, ts)
            return
        self._emit(out, pk, left, right, ts)
        if not shown.get(pkb):
            shown.put(pkb, True)

    # --------------------------------------------------------------------- stream-stream
    def _stream_stream(self, side: str, batch: RecordBatch, ctx: _TaskContext, out: list[ProducerRecord]) -> None:
        if side == "L":
            mine, other = self.left_store, self.right_store
            my_outer, other_outer = self.left_outer, self.right_outer
            kdec, mdec, odec = self.left_key.decode, self.left_value.decode, self.right_value.decode
            before, after = self.before, self.after
        else:
            mine, other = self.right_store, self.left_store
            my_outer, other_outer = self.right_outer, self.left_outer
            kdec, mdec, odec = self.right_key.decode, self.right_value.decode, self.left_value.decode
            before, after = self.after, self.before
        jt = self.plan.join_type
        outer_mine = (side == "L" and jt in ("LEFT", "FULL")) or (side == "R" and jt in ("RIGHT", "FULL"))
        mget, mput = mine.get, mine.put
        ofetch, oput = other.fetch, other.put
        # Unmatched records wait for their window to close only with a grace period.
        waiting = self.grace is not None and (self.left_outer is not None or self.right_outer is not None)
        emit_side = self._emit_left if side == "L" else self._emit_right
        # (An unmatched record emitted as its window closes carries the headers of the record
        # whose time closed it, as in Kafka Streams.)
        for kb, vb, ts, off, self._headers in zip(batch.keys, batch.values, batch.timestamps, batch.offsets,
                                                  _headers_of(batch)):
            if vb is None:
                continue
            try:
                if ts > ctx.stream_time:
                    ctx.stream_time = ts
                    ctx.scan = True
                if waiting and ctx.scan:
                    self._emit_closed(ctx, out)
                if self.window_len and kb is not None:
                    self._window_suffix = kb[-self.window_len:]
                jk = kdec(kb)[0] if kb is not None else None
                if jk is None:
                    if outer_mine:
                        emit_side(out, jk, mdec(vb), None, ts)
                    continue
                row = None  # decoded when first needed: most records of an inner join match nothing
                matched = False
                for o_ts, entries in ofetch(kb, ts - before, ts + after):
                    changed = False
                    if row is None:
                        row = mdec(vb)
                    for entry in entries:
                        matched = True
                        emit_side(out, jk, row, odec(entry[0]), max(ts, o_ts))
                        if entry[1] is not None:
                            # Matched at last: no longer waiting to be emitted unmatched.
                            other_outer.delete(entry[1])
                            entry[1] = None
                            changed = True
                    if changed:
                        oput(kb, o_ts, entries)
                okey = None
                if not matched and outer_mine:
                    if my_outer is None:
                        emit_side(out, jk, mdec(vb), None, ts)
                    else:
                        okey = encode_ts(ts) + _SEQ.pack(ctx.seq)
                        ctx.seq += 1
                        my_outer.put(okey, (kb, vb))
                        ctx.scan = True  # a late record's window may be closed already
                entries = mget(kb, ts)
                entry = [vb, okey]
                mput(kb, ts, [entry] if entries is None else entries + [entry])
            except Exception as exc:  # noqa: BLE001 - see _failed
                self._failed(batch, off, exc)

    def _emit_left(self, out: list[ProducerRecord], jk: Any, mine: tuple | None, other: tuple | None,
                   ts: int) -> None:
        self._emit(out, jk, mine, other, ts)

    def _emit_right(self, out: list[ProducerRecord], jk: Any, mine: tuple | None, other: tuple | None,
                    ts: int) -> None:
        self._emit(out, jk, other, mine, ts)

    def _emit_closed(self, ctx: _TaskContext, out: list[ProducerRecord]) -> None:
        """Emit the unmatched records whose window closed (time + span + grace < stream time)."""
        ctx.scan = False
        grace = self.grace or 0
        if self.left_outer is not None:
            bound = encode_ts(ctx.stream_time - self.after - grace)
            kdec, vdec = self.left_key.decode, self.left_value.decode
            for okey, (kb, vb) in self.left_outer.pop_below(bound):
                self._window_suffix = kb[-self.window_len:] if self.window_len else b""
                self._emit(out, kdec(kb)[0], vdec(vb), None, decode_ts(okey))
        if self.right_outer is not None:
            bound = encode_ts(ctx.stream_time - self.before - grace)
            kdec, vdec = self.right_key.decode, self.right_value.decode
            for okey, (kb, vb) in self.right_outer.pop_below(bound):
                self._window_suffix = kb[-self.window_len:] if self.window_len else b""
                self._emit(out, kdec(kb)[0], None, vdec(vb), decode_ts(okey))


def _headers_of(batch: RecordBatch) -> Any:
    """Each record's headers (the batch holds None where no record has any)."""
    return batch.headers if batch.headers is not None else repeat((), len(batch.offsets))


class SideRekeyStage(PipelineStage):
    """A join side re-keyed by its join expression into its repartition topic while the
    other side is read from its source as it is: each record goes to the partition the other
    source holds the same key in, i.e. partitioned by the join key in that source's key
    format (``partition_codec``), as ksqlDB re-keys the side into that format."""

    def __init__(self, name: str, source_topic: str, sink_topic: str, pipeline: Pipeline, *,
                 key_codec: Any, partition_codec: Any) -> None:
        super().__init__(name, source_topic, sink_topic, pipeline)
        self._decode = key_codec.decode
        self._partition_encode = partition_codec.encode
        # Key bytes -> partition key bytes: keys repeat, and a lookup costs less than a
        # decode and an encode. Bounded: cleared when full.
        self._partition_keys: dict[bytes, bytes] = {}

    def process(self, batch: RecordBatch) -> list[ProducerRecord]:
        out = self.outputs
        out.clear()
        self.pipeline.process(batch, out)
        known = self._partition_keys
        if len(known) > 100_000:
            known.clear()
        keys = out.keys
        pks = list(map(known.get, keys))
        if None in pks:  # new keys (or null ones, which the partitioner spreads)
            for i, k in enumerate(keys):
                if pks[i] is None and k is not None:
                    pks[i] = known[k] = self._partition_encode(self._decode(k))
        return [ProducerRecord(k, v, ts, h or (), None, pk)
                for k, v, ts, h, pk in zip(keys, out.values, out.timestamps, out.headers, pks)]


class JoinGroupByStage:
    """A stream join step and the group-by of its rows (GROUP BY over a join) as one stage:
    each batch's joined rows go to the group-by pipeline in memory and on to the aggregation's
    repartition topic, with no internal topic between them. The join keeps its stores and
    task state; the group-by is stateless."""

    exactly_once = True

    def __init__(self, join: JoinStage, grouping: PipelineStage) -> None:
        self.join = join
        self.grouping = grouping
        self.name = join.name
        self.source_topic = join.source_topic
        self.right_topic = join.right_topic
        self.source_topics = join.source_topics
        self.sink_topic = grouping.sink_topic
        self.purged_inputs = join.purged_inputs
        self.plog = join.plog
        # The join's right-hand input (test mode's JoinInput) comes through here too.
        join.wrapped_by(self)

    def wrapped_by(self, outer: Any) -> None:
        self.join.wrapped_by(outer)

    def task_extra(self, partition: int) -> dict[str, Any]:
        return self.join.task_extra(partition)

    def task_opened(self, partition: int, extra: Any) -> None:
        self.join.task_opened(partition, extra)

    def process(self, batch: RecordBatch) -> list[ProducerRecord]:
        joined = self.join.process(batch)
        if not joined:
            return []
        # (A failure in the group-by is logged at the last offset of the input batch: the
        # joined rows have no offsets of their own.)
        last = batch.offsets[-1]
        rows = RecordBatch(self.join.sink_topic, batch.partition, [last] * len(joined),
                           [r.timestamp for r in joined], [r.key for r in joined],
                           [r.value for r in joined])
        return self.grouping.process(rows)


class JoinInput:
    """Test mode: a join stage's right-hand input as a stage of its own (the test driver
    delivers records to stages by ``source_topic``); forwards to the join stage's entry."""

    def __init__(self, join: JoinStage) -> None:
        self.join = join
        self.name = join.name + "-right"
        self.source_topic = join.right_topic
        self.sink_topic = join.sink_topic

    def process(self, batch: RecordBatch) -> list[ProducerRecord]:
        return self.join.entry.process(batch)


def build_projection(engine: "Engine", plan: JoinPlan, query_id: str) -> Callable[..., Any]:
    """Generate ``project(jk, left_row, right_row)``: (key tuple, value tuple), or None when
    WHERE rejects the joined row."""
    scope = joined_scope(plan.left, plan.right, plan.key_type, plan.source_names)
    plog = engine._processing_logger(query_id)
    env: dict[str, Any] = {"_plog": plog, "_topic": query_id}
    comp = ExpressionCompiler(engine.registry, scope, env, clause="SELECT")
    nl, nr = len(plan.left.row), len(plan.right.row)
    lines = ["def project(jk, lrow, rrow):"]
    lines.append("    if lrow is None:")
    lines.append(f"        {' = '.join(f'l{i}' for i in range(nl))} = None")
    lines.append("    else:")
    lines.append(f"        {''.join(f'l{i}, ' for i in range(nl))}= lrow")
    lines.append("    if rrow is None:")
    lines.append(f"        {' = '.join(f'r{i}' for i in range(nr))} = None")
    lines.append("    else:")
    lines.append(f"        {''.join(f'r{i}, ' for i in range(nr))}= rrow")
    if plan.where is not None:
        lines += filter_lines(comp, plan.where, "WHERE")
    lines += projection_lines(comp, list(plan.key) + list(plan.value), len(plan.key))
    src = "\n".join(lines) + "\n"
    exec(compile(src, f"<join projection {query_id}>", "exec"), env)  # noqa: S102 - generated source
    return env["project"]


def _combined(nl: int, nr: int) -> Callable[..., Any]:
    """``project`` for an intermediate join step: the key and both sides' rows, NULL-padded."""
    left_nulls, right_nulls = (None,) * nl, (None,) * nr

    def project(jk: Any, lrow: tuple | None, rrow: tuple | None) -> tuple:
        return (jk,), (lrow if lrow is not None else left_nulls) + (rrow if rrow is not None else right_nulls)
    return project


async def check_join_partitions(engine: "Engine", plan: JoinPlan) -> None:
    """Refuse a join whose sides have different partition counts, with ksqlDB's error
    (``JoinNode.ensureMatchingPartitionCounts``), before any topic is made. ksqlDB checks
    every join but a foreign-key one, whether or not a side is repartitioned (a repartition
    topic takes its source's count); a later step's left side counts as its previous step's
    right source, and each side is named by its leftmost source's alias."""
    steps: list[JoinPlan] = []
    step: JoinPlan | None = plan
    while step is not None:
        steps.insert(0, step)
        step = step.previous
    for step in steps:
        if step.kind == "FOREIGN_KEY":
            continue
        left_src = step.left.source if step.previous is None else step.previous.right.source
        left_n = await _partitions(engine, left_src)
        right_n = await _partitions(engine, step.right.source)
        if left_n != right_n:
            left, right = step.left.aliases[0], step.right.aliases[0]
            raise KsqlStatementException(
                f"Can't join `{left}` with `{right}` since the number of partitions don't match. "
                f"`{left}` partitions = {left_n}; `{right}` partitions = {right_n}. Please repartition "
                "either one so that the number of partitions match.")


async def build_join_stages(engine: "Engine", query_id: str, plan: JoinPlan, sink: DataSource,
                            props: dict[str, Any]) -> list[Stage]:
    """The stages of a join chain ending at ``sink`` (see the module docstring). A GROUP BY
    over the join (``plan.then``, see ``streamsql.join_post``): the last step writes the joined
    rows to an internal topic, the source of the usual group-by and aggregate stages."""
    if plan.then is None:
        return await _build_step(engine, query_id, plan, sink.topic, engine.codec(sink, "key"),
                                 engine.codec(sink, "value"), sink.timestamp_column)
    from streamsql.runtime.aggregate import build_aggregate_stages

    joined = plan.then.source
    topic = f"{engine.internal_name(query_id)}-Join-{plan.index}"
    # A stream of joined rows goes straight into the group-by (ksqlDB's plan: no hop between
    # the join and the GROUP BY's repartition). A table's rows need the table group-by's
    # retractions, read from the topic; and a query planned with the topic (by an earlier
    # version, its statement replayed now) keeps it: the records in it are its.
    fused = plan.kind in ("STREAM_STREAM", "STREAM_TABLE") and await engine.log.describe_topic(topic) is None
    if not fused:
        await engine.ensure_repartition_topic(topic, await _partitions(engine, plan.source))
    stages = await _build_step(engine, query_id, plan, topic, internal_codec(joined.schema.key),
                               internal_codec(joined.schema.value), None)
    aggregate = replace(plan.then, source=replace(joined, topic=topic))
    grouping = await build_aggregate_stages(engine, query_id, aggregate, sink, props, internal_source=True)
    if fused and isinstance(grouping[0], PipelineStage):
        stages[-1] = JoinGroupByStage(stages[-1], grouping[0])  # type: ignore[arg-type]
        return stages + grouping[1:]
    if fused:  # (a group-by of another kind reads the topic after all)
        await engine.ensure_repartition_topic(topic, await _partitions(engine, plan.source))
    # The group-by stage is the internal topic's only reader: it purges what it committed.
    grouping[0].purged_inputs = (topic,)  # type: ignore[union-attr]
    return stages + grouping


def _step_stores(engine: "Engine", query_id: str, plan: JoinPlan) -> dict[str, Any]:
    """The stores of one join step, by role (see ``JoinStage``)."""
    memory = engine.state_in_memory(query_id)
    prefix = f"Join-{plan.index}"
    kind = plan.kind
    if kind == "STREAM_STREAM":
        w = plan.within
        before, after = (w.before, w.after) if w else (0, 0)
        grace = w.grace if w and w.grace is not None else None
        # A side's records can match until the other side's time passes them by before +
        # after, and late ones until grace more (Kafka Streams' join window retention).
        retention = before + after + (grace if grace is not None else DEFAULT_GRACE_MS)
        stores: dict[str, Any] = {}
        for side in ("left", "right"):
            name = f"{prefix}-{side.capitalize()}-window"
            stores[side] = MemoryWindowStore(retention) if memory else JoinWindowStore(name, retention)
        jt = plan.join_type
        if grace is not None:
            for side, outer in (("left", jt in ("LEFT", "FULL")), ("right", jt in ("RIGHT", "FULL"))):
                if outer:
                    name = f"{prefix}-{side.capitalize()}-outer"
                    stores[side + "_outer"] = MemoryOuterStore() if memory else JoinOuterStore(name)
        return stores
    if kind == "STREAM_TABLE":
        return {"right": engine.new_store(query_id, f"{prefix}-Right-table", "bytes")}
    if kind == "FOREIGN_KEY":
        return {"left": engine.new_store(query_id, f"{prefix}-Left-table", "bytes"),
                "right": engine.new_store(query_id, f"{prefix}-Right-table", "bytes"),
                "shown": engine.new_store(query_id, f"{prefix}-shown", "json"),
                "index": MemoryIndex() if memory else JoinIndexStore(f"{prefix}-fk-index")}
    return {"left": engine.new_store(query_id, f"{prefix}-Left-table", "table"),
            "right": engine.new_store(query_id, f"{prefix}-Right-table", "table"),
            "shown": engine.new_store(query_id, f"{prefix}-shown", "json")}


async def _build_step(engine: "Engine", query_id: str, plan: JoinPlan, out_topic: str, out_key: Any,
                      out_value: Any, sink_ts_column: str | None) -> list[Stage]:
    stages: list[Stage] = []
    left_input: str | None = None
    if plan.previous is not None:
        # The previous step writes its joined rows, keyed by its join key, to an internal topic.
        prev = plan.previous
        left_input = f"{engine.internal_name(query_id)}-Join-{prev.index}"
        prev_src = plan.left.source
        await engine.ensure_repartition_topic(left_input, await _partitions(engine, prev.source))
        stages += await _build_step(engine, query_id, prev, left_input,
                                    internal_codec(prev_src.schema.key), internal_codec(prev_src.schema.value),
                                    None)
    fk = plan.kind == "FOREIGN_KEY"
    prefix = f"{engine.internal_name(query_id)}-Join-{plan.index}"
    direct_sides = await _direct_sides(engine, plan, left_input, prefix)
    # The last step projects the result (its key may be empty: PARTITION BY NULL), unless an
    # aggregation over the join follows (it reads the whole joined row).
    final = bool(plan.key or plan.value) and plan.then is None
    project = build_projection(engine, plan, query_id) if final else _combined(len(plan.left.row), len(plan.right.row))
    # Both re-keyed topics get one partition count, so that a key's records from either side
    # meet in the same task; a foreign-key join needs every key of both sides in one task.
    if fk:
        partitions = 1
    else:
        left_src = plan.source if left_input is not None else plan.left.source
        partitions = max(await _partitions(engine, left_src), await _partitions(engine, plan.right.source))
    topics: list[str] = []
    codecs: list[Any] = []
    rekey: dict[str, Pipeline] = {}
    # Windowed sides (the analyzer allows them joined on their keys only) keep their window
    # in the re-keyed key: see JoinStage.window_len.
    window = plan.left.source.window if left_input is None and plan.kind == "STREAM_STREAM" else None
    window_len = 0 if window is None else (16 if window.kind == "SESSION" else 8)
    purged: list[str] = []
    for side_name, side, side_direct, other in (("L", plan.left, direct_sides[0], plan.right),
                                                ("R", plan.right, direct_sides[1], plan.left)):
        src = side.source
        synthetic = side_name == "L" and left_input is not None
        topic = f"{prefix}-{'Left' if side_name == 'L' else 'Right'}-repartition"
        if not side_direct:
            await engine.ensure_repartition_topic(topic, partitions)
            purged.append(topic)
        value_columns = tuple(Column(f"C{i}", c.type, "VALUE") for i, (_, c) in enumerate(side.row))
        # The side's whole row (key, value and pseudo columns), keyed by its join expression.
        row_cols = tuple(OutputColumn(f"C{i}", e.ColumnRef(name), c.type)
                         for i, (name, (_, c)) in enumerate(zip(side.row_source_columns, side.row)))
        key_out = OutputColumn("JOINKEY", side.key_expr, plan.key_type)
        if synthetic and plan.kind == "TABLE_TABLE":
            # A table joins on its key: the previous step's key, which a tombstone (no value
            # to compute the join expression from) still has.
            key_out = OutputColumn("JOINKEY", e.ColumnRef("JOINKEY"), plan.key_type)
        if fk:
            # Foreign-key join: the left stays keyed by its primary key and carries the foreign
            # key as a last column; the right is keyed by its own key.
            if side_name == "L":
                pk = src.schema.key[0]
                fk_type = plan.right.source.schema.key[0].type
                row_cols += (OutputColumn("FK", side.key_expr, fk_type),)
                value_columns += (Column("FK", fk_type, "VALUE"),)
                key_out = OutputColumn("JOINKEY", e.ColumnRef(pk.name), pk.type)
            else:
                rk = src.schema.key[0]
                key_out = OutputColumn("JOINKEY", e.ColumnRef(rk.name), rk.type)
        key_outs: tuple[OutputColumn, ...] = (key_out,)
        if fk and side_name == "L" and len(src.schema.key) > 1:
            key_outs = tuple(OutputColumn(f"JOINKEY{i}", e.ColumnRef(c.name), c.type)
                             for i, c in enumerate(src.schema.key))
        key_columns = tuple(Column(k.name, k.type, "KEY") for k in key_outs)
        key_codec = internal_codec(key_columns)
        value_codec = internal_codec(value_columns)
        # (Not marked re-keyed, a windowed side's pipeline appends the window to the key.)
        pre = QueryPlan(src, src.name, None, key_outs, row_cols, LogicalSchema(key_columns, value_columns),
                        rekeyed=not window_len)
        if synthetic:
            in_key, in_value, ts_parser = internal_codec(src.schema.key), internal_codec(src.schema.value), None
            in_topic = left_input
        else:
            in_key, in_value = engine.codec(src, "key"), engine.codec(src, "value")
            ts_parser, in_topic = engine._timestamp_parser(src), src.topic
        pipeline = build_pipeline(pre, engine.registry, in_key, in_value, key_codec, value_codec,
                                  engine._processing_logger(query_id), timestamp_parser=ts_parser,
                                  offsets=side_direct)
        if side_direct:
            # Keyed by the join key already: the join reads the source and re-keys in place.
            rekey[in_topic] = pipeline
            topic = in_topic
        elif any(direct_sides) and partitions > 1:
            # The other side is read as it is: this one's records must land in the partition
            # its source has the same key in (ksqlDB re-keys into that side's key format).
            stages.append(SideRekeyStage(f"{query_id}-{plan.index}-{side_name}-rekey", in_topic, topic,
                                         pipeline, key_codec=key_codec,
                                         partition_codec=engine.codec(other.source, "key")))
        else:
            stages.append(PipelineStage(f"{query_id}-{plan.index}-{side_name}-rekey", in_topic, topic, pipeline))
        topics.append(topic)
        codecs += [_WindowedKeyCodec(key_codec, window_len) if window_len else key_codec, value_codec]
    join = JoinStage(f"{query_id}-join-{plan.index}", topics[0], topics[1], out_topic, plan,
                     (codecs[0], codecs[1], codecs[2], codecs[3]), out_key, out_value, project,
                     _step_stores(engine, query_id, plan), per_task=not engine.state_in_memory(query_id),
                     rekey=rekey, plog=engine._processing_logger(query_id))
    join.window_len = window_len
    if fk:
        join.fk_key_width = len(plan.left.source.schema.key)
    join.purged_inputs = tuple(purged)
    if final and sink_ts_column is not None:
        names = [c.name for c in plan.value]
        if sink_ts_column in names:
            join.sink_ts_index = names.index(sink_ts_column)
    stages.append(join)
    if engine.mode != "service":
        # The test driver delivers by ``source_topic``: the right input needs a stage too.
        # It comes first so that the join stage stays last (a table sink wraps the last one).
        stages.insert(len(stages) - 1, JoinInput(join))  # type: ignore[arg-type]
    return stages


# Key formats whose bytes depend on the key's value alone: equal keys of two sources in one
# of them are equal bytes, and so land in the same partition number.
_PLAIN_KEY_FORMATS = frozenset({"KAFKA", "JSON", "DELIMITED"})


def _keyed_by_join_key(plan: JoinPlan, side: JoinSide) -> bool:
    """Whether a side's source is partitioned by the join key already: it joins on its one
    key column (of the join's type), unwindowed, in a key format whose bytes are the value's
    alone (equal keys, equal bytes, same partition)."""
    src = side.source
    key = src.schema.key
    return (src.window is None and len(key) == 1 and key[0].type == plan.key_type
            and isinstance(side.key_expr, e.ColumnRef) and side.key_expr.name == key[0].name
            and src.key_format.name in _PLAIN_KEY_FORMATS)


async def _direct_sides(engine: "Engine", plan: JoinPlan, left_input: str | None,
                        prefix: str) -> tuple[bool, bool]:
    """Which sides of a join step are read from their source as it is, as ksqlDB decides
    (only a side whose join expression is not its key is repartitioned): both, when both
    are keyed by the join key in one key format over as many partitions; when their key
    formats differ, the left (the right is re-keyed into the left's format); when only one
    is keyed, that one (the other is re-keyed into its format, see ``SideRekeyStage``).
    Besides a hop saved, a side read directly is seen in its records' own order: a join reads
    its inputs in timestamp order (``streamsql.runtime.ordering``), and records still on
    their way through a re-key stage cannot be waited for.

    A query planned with repartition topics (by an earlier version: its statement replayed
    now) keeps them: the records in them are its."""
    left, right = plan.left.source, plan.right.source
    if left_input is not None or plan.kind == "FOREIGN_KEY" or left.topic == right.topic \
            or left.window is not None or right.window is not None:
        return False, False
    if await _partitions(engine, left) != await _partitions(engine, right):
        return False, False
    left_keyed, right_keyed = _keyed_by_join_key(plan, plan.left), _keyed_by_join_key(plan, plan.right)
    sides = (left_keyed, right_keyed and (left.key_format == right.key_format or not left_keyed))
    for side, direct in zip(("Left", "Right"), sides):
        if direct and await engine.log.describe_topic(f"{prefix}-{side}-repartition") is not None:
            return False, False
    return sides


async def _partitions(engine: "Engine", source: DataSource) -> int:
    info = await engine.log.describe_topic(source.topic)
    return info.partitions if info else 1

"""Transient queries: a SELECT statement is a pull query (answered once from a table's state,
``streamsql.exec.pull``) unless it says EMIT CHANGES, which makes it a push query: rows
stream to the client as records arrive, from the start of the source's topic or its end
(``auto.offset.reset``, 'latest' by default), until its LIMIT or until the client goes.
Push queries keep no state, but for an aggregation (GROUP BY, or aggregates alone) and a
join: those are real topologies with their own state, ``TransientQuery`` (see there). With
``ksql.query.push.v2.enabled``, a plain projection/filter from 'latest' over what a
persistent query writes is a scalable push query (``ScalablePushQuery``): a subscriber on
that query's runner, not a reader of the topic.
"""
from __future__ import annotations

import asyncio
import logging
import random
import re
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, AsyncIterator

from streamsql import ast
from streamsql.analyzer import AggregatePlan, QueryPlan, select_columns
from streamsql.errors import KsqlStatementException
from streamsql.exec.persistent import positions_taken, start_reset
from streamsql.exec.pull import pull_statement
from streamsql.join_analyzer import JoinPlan
from streamsql.results import Result
from streamsql.runtime.log.base import RecordBatch, UnknownTopicError
from streamsql.runtime.pipeline import Outputs, Pipeline, build_pipeline

if TYPE_CHECKING:  # pragma: no cover - imports only for type hints
    from streamsql.engine import Engine, Session


async def query_statement(engine: Engine, stmt: ast.QueryStatement, props: dict[str, Any],
                          session: Session, seq: int | None) -> Result:
    query = stmt.query
    if query.emit is None:  # a pull query (streamsql.exec.pull checks and answers it)
        return await pull_statement(engine, stmt, props)
    plan = engine.analyzer(props).analyze(query, None, persistent=False)
    # A push query's columns come in SELECT order (ksqlDB's), its rows likewise.
    columns = tuple(c.name for c in select_columns(plan))
    # The engine's default is 'latest', as ksqlDB's (a session may SET it to 'earliest').
    reset = str(props.get("auto.offset.reset", "latest"))
    runner = _scalable_runner(engine, plan, query, props, reset)
    if runner is not None:
        scalable = ScalablePushQuery(engine, plan, runner, query.limit)
        return Result(stmt.text, "stream", columns=columns, stream=scalable,
                      query_id=scalable.query_id)
    if isinstance(plan, (AggregatePlan, JoinPlan)):
        transient = await start_transient_query(engine, plan, stmt.text, props, reset, query.limit)
        return Result(stmt.text, "stream", columns=columns, stream=transient,
                      query_id=transient.query_id)
    # Its positions are taken now, before the client hears of the query: records written
    # once it has answered are seen.
    topic = plan.source.topic
    try:
        positions = await (engine.log.begin_offsets(topic) if reset == "earliest"
                           else engine.log.end_offsets(topic))
    except UnknownTopicError:  # deleted under the stream (ksqlDB's text)
        raise KsqlStatementException(f"Kafka topic does not exist: {topic}") from None
    return Result(stmt.text, "stream", columns=columns,
                  stream=_push_query(engine, plan, positions, query.limit))


async def _push_query(engine: Engine, plan: QueryPlan, positions: list[int],
                      limit: int | None) -> AsyncIterator[tuple]:
    pipeline = build_pipeline(plan, engine.registry, engine.codec(plan.source, "key"),
                              engine.codec(plan.source, "value"), None, None,
                              engine._processing_logger("transient"), rows=True, push=True,
                              timestamp_parser=engine._timestamp_parser(plan.source))
    topic = plan.source.topic
    out = Outputs()
    emitted = 0
    while True:
        got = False
        for p, off in enumerate(positions):
            batch = await engine.log.fetch(topic, p, off, 1000)
            if not len(batch):
                continue
            got = True
            positions[p] = batch.offsets[-1] + 1
            out.clear()
            pipeline.process(batch, out)
            for row in out.rows:
                yield row
                emitted += 1
                if limit is not None and emitted >= limit:
                    return
        if not got:
            await asyncio.sleep(0.1)


# ================================================================ scalable push queries
# A scalable push query's rows waiting for its client (records of the persistent query not
# yet read, counted before its filter): past this the query is ended (it fell behind).
SCALABLE_QUEUE_LIMIT = 10_000


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() == "true"


def _scalable_runner(engine: Engine, plan: Any, query: ast.Query, props: dict[str, Any],
                     reset: str) -> Any:
    """The runner of the persistent query stage whose output a push query can be served
    from as a scalable push query (ksqlDB's ``ksql.query.push.v2.enabled``), or None (the
    query reads the topic, as push queries otherwise do). Like ksqlDB's
    ``ScalablePushUtil``: a plain projection/filter (no GROUP BY, JOIN, WINDOW, PARTITION
    BY, table functions) with ``auto.offset.reset`` latest, over a stream or table that one
    persistent query writes, running here. (On a cluster each node sees only its own
    partitions' output: there the topic path stays.)"""
    if not _truthy(props.get("ksql.query.push.v2.enabled", "false")) or reset != "latest":
        return None
    if not isinstance(plan, QueryPlan) or isinstance(plan, (AggregatePlan, JoinPlan)):
        return None
    if query.window is not None or query.group_by or query.partition_by or query.having is not None \
            or plan.table_functions or plan.partition_by:
        return None
    if engine.mode != "service" or engine.distributed:
        return None
    writers = engine.catalog.queries_writing(plan.source.name)
    if len(writers) != 1:
        return None
    runners = engine.runners.get(writers[0].query_id) or []
    last = runners[-1] if runners else None
    if last is None or not last.started or last.stage.sink_topic != plan.source.topic:
        return None
    return last


class ScalablePushQuery:
    """A push query served from a persistent query's output as it is produced: a
    subscriber on the runner of the query's last stage (``StageRunner.subscribers``), not a
    consumer of the topic. The runner hands it each committed run's records (``offer``:
    a queue append, nothing more); they are decoded, filtered and projected here, as the
    client reads. More than ``SCALABLE_QUEUE_LIMIT`` records waiting ends the query with
    an error (it fell behind) and unsubscribes it. Whatever ends it (its LIMIT, the client,
    ``aclose``) unsubscribes it."""

    def __init__(self, engine: Engine, plan: QueryPlan, runner: Any, limit: int | None,
                 queue_limit: int | None = None) -> None:
        self.query_id = f"SCALABLE_PUSH_QUERY_{_UNSAFE.sub('_', plan.source.name)[:60]}_{random.getrandbits(62)}"
        self.pipeline = build_pipeline(plan, engine.registry, engine.codec(plan.source, "key"),
                                       engine.codec(plan.source, "value"), None, None,
                                       engine._processing_logger("transient"), rows=True,
                                       push=True, timestamp_parser=engine._timestamp_parser(plan.source))
        self.topic = plan.source.topic
        self.runner = runner
        self.limit = limit
        self.queue_limit = SCALABLE_QUEUE_LIMIT if queue_limit is None else queue_limit
        self.pending: deque[tuple[int, list[Any]]] = deque()
        self.pending_records = 0
        self.rows: deque[tuple] = deque()
        self.outputs = Outputs()
        self.wakeup = asyncio.Event()
        self.emitted = 0
        self.error: str | None = None
        self.closed = False
        self._offset = 0
        runner.subscribers.append(self)

    # -- the runner's side (in its task: must not block) --------------------------------
    def offer(self, partition: int, records: list[Any]) -> None:
        if self.closed or self.error is not None:
            return
        self.pending_records += len(records)
        if self.pending_records > self.queue_limit:
            self.error = (f"Scalable push query {self.query_id} fell behind: more than "
                          f"{self.queue_limit} rows were waiting for the client. "
                          "The query was ended.")
            self.pending.clear()
            self.pending_records = 0
            self._unsubscribe()
        else:
            self.pending.append((partition, records))
        self.wakeup.set()

    def source_stopped(self, message: str) -> None:
        """The persistent query stopped (TERMINATE, engine close): rows already given
        are still read, then the query ends with ``message`` as its error."""
        if self.error is None:
            self.error = message
        self._unsubscribe()
        self.wakeup.set()

    def _unsubscribe(self) -> None:
        subs = self.runner.subscribers
        if self in subs:
            subs.remove(self)

    # -- the client's side ----------------------------------------------------------------
    def __aiter__(self) -> "ScalablePushQuery":
        return self

    async def __anext__(self) -> tuple:
        while True:
            if self.closed or (self.limit is not None and self.emitted >= self.limit):
                await self.aclose()
                raise StopAsyncIteration
            if self.rows:
                self.emitted += 1
                return self.rows.popleft()
            if self.pending:
                self._decode(*self.pending.popleft())
                continue
            if self.error is not None:
                await self.aclose()
                raise KsqlStatementException(self.error)
            self.wakeup.clear()
            await self.wakeup.wait()

    def _decode(self, partition: int, records: list[Any]) -> None:
        self.pending_records -= len(records)
        n = len(records)
        headers = [r.headers for r in records]
        start = self._offset
        self._offset += n
        out = self.outputs
        out.clear()
        self.pipeline.process(RecordBatch(
            self.topic, partition, list(range(start, start + n)),
            [r.timestamp for r in records], [r.key for r in records],
            [r.value for r in records], headers if any(headers) else None), out)
        self.rows.extend(out.rows)

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._unsubscribe()
        self.pending.clear()
        self.rows.clear()
        self.wakeup.set()


# ================================================================ transient topologies
log = logging.getLogger(__name__)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


async def start_transient_query(engine: Engine, plan: AggregatePlan | JoinPlan, sql: str,
                                props: dict[str, Any], reset: str,
                                limit: int | None) -> "TransientQuery":
    """Build and start a push aggregation or join: the stages a CREATE ... AS SELECT of
    ``plan`` would run (``build_aggregate_stages``: group-by into a repartition topic,
    aggregate; ``build_join_stages``: re-keys, join), under a transient query id, with
    in-memory state (``Engine.new_store``); the result's records, instead of going to a
    sink topic, are decoded by a push pipeline into rows (SELECT order, tombstones for a
    table's deletes) for the client. Whatever ends the query (``TransientQuery.aclose``)
    stops its runners and deletes its internal topics and consumer groups."""
    from streamsql.catalog import DataSource, FormatInfo, WindowInfo
    from streamsql.formats.base import FormatOptions
    from streamsql.runtime.query import StageRunner

    query_id = f"transient_{_UNSAFE.sub('_', plan.source.name)[:60]}_{random.getrandbits(62)}"
    base = engine.internal_name(query_id)
    aggregation = plan if isinstance(plan, AggregatePlan) else plan.then  # (GROUP BY over a join)
    if aggregation is not None:
        w = aggregation.window
        window = WindowInfo(w.kind, w.size if w.kind != "SESSION" else None) if w is not None else None
        kind = "TABLE"
    else:  # a join of windowed sources is keyed by its left side's window
        window = plan.source.window
        kind = "TABLE" if plan.produces_table else "STREAM"
    # The result, never created as a topic: its records are decoded where they are made
    # (the JSON codecs of internal topics: any SQL type round-trips).
    sink = DataSource(
        name=query_id, kind=kind, schema=plan.schema, topic=f"{base}-transient-sink",
        key_format=FormatInfo("JSON", FormatOptions()),
        value_format=FormatInfo("JSON", FormatOptions(wrap_single_value=True)), window=window)
    transient = TransientQuery(engine, query_id, sql, sink.topic, limit)
    engine.transient_queries[query_id] = transient  # (its stores are in memory from here)
    try:
        if isinstance(plan, AggregatePlan):
            from streamsql.runtime.aggregate import build_aggregate_stages

            stages = await build_aggregate_stages(engine, query_id, plan, sink, props)
        else:
            from streamsql.runtime.join import build_join_stages, check_join_partitions

            await check_join_partitions(engine, plan)
            stages = await build_join_stages(engine, query_id, plan, sink, props)
        out_plan = QueryPlan(sink, sink.name, None, _columns(sink.schema.key),
                             _columns(sink.schema.value), sink.schema, projection=plan.projection)
        rows = build_pipeline(out_plan, engine.registry, engine.codec(sink, "key"),
                              engine.codec(sink, "value"), None, None,
                              engine._processing_logger(query_id), rows=True, push=True)
        stages[-1] = _RowsStage(stages[-1], rows, transient.queue)
        for i, stage in enumerate(stages):
            group = base + (f"_{i}" if i else "")
            transient.groups.append(group)
            transient.runners.append(StageRunner(
                stage, group, engine.log, start_reset(stage, base, reset),
                after_batch=engine.flush_processing_log))
        for runner in transient.runners:
            runner.start()
        # (Before the client hears of the query: records written after its header are seen.)
        await positions_taken(transient.runners, query_id)
    except BaseException:
        await transient.aclose()
        raise
    return transient


def _columns(columns: tuple[Any, ...]) -> tuple[Any, ...]:
    from streamsql import expressions as e
    from streamsql.analyzer import OutputColumn

    return tuple(OutputColumn(c.name, e.ColumnRef(c.name), c.type) for c in columns)


class _RowsStage:
    """The aggregate stage of a transient query: its table's records become the client's
    rows (queued) instead of a sink topic's records."""

    def __init__(self, inner: Any, pipeline: Pipeline, queue: "asyncio.Queue[tuple]") -> None:
        self.inner = inner
        self.pipeline = pipeline
        self.queue = queue
        self.outputs = Outputs()
        self.name = inner.name
        self.source_topic = inner.source_topic
        self.sink_topic = inner.sink_topic

    def __getattr__(self, name: str) -> Any:  # purged_inputs, task_extra, ...
        return getattr(self.inner, name)

    def process(self, batch: RecordBatch) -> list:
        records = self.inner.process(batch)
        if records:
            out = self.outputs
            out.clear()
            self.pipeline.process(RecordBatch(
                self.sink_topic, batch.partition, list(range(len(records))),
                [r.timestamp for r in records], [r.key for r in records],
                [r.value for r in records]), out)
            put = self.queue.put_nowait
            for row in out.rows:
                put(row)
        return []


@dataclass(eq=False)
class TransientQuery:
    """A running push aggregation or join: an async iterator of its rows (up to its LIMIT) whose
    ``aclose`` (at the LIMIT, when the client goes, at engine close; safe to call more than
    once, and before the first row) stops its runners and deletes its internal topics and
    consumer groups."""

    engine: Any
    query_id: str
    sql: str
    sink_topic: str
    limit: int | None
    queue: "asyncio.Queue[tuple]" = field(default_factory=asyncio.Queue)
    runners: list[Any] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    emitted: int = 0
    closed: bool = False

    def __aiter__(self) -> "TransientQuery":
        return self

    async def __anext__(self) -> tuple:
        if self.closed or (self.limit is not None and self.emitted >= self.limit):
            await self.aclose()
            raise StopAsyncIteration
        row = await self.queue.get()
        self.emitted += 1
        return row

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        engine = self.engine
        try:
            for runner in self.runners:
                await runner.stop()
            prefix = engine.internal_name(self.query_id) + "-"
            for topic in [t for t in await engine.log.list_topics() if t.startswith(prefix)]:
                try:
                    await engine.log.delete_topic(topic)
                except UnknownTopicError:
                    pass
            for group in self.groups:
                await engine.log.delete_group(group)
        finally:
            engine.transient_queries.pop(self.query_id, None)
            # The codecs made for its sink (cached by topic) would stay forever.
            for key in [k for k in engine._codecs if k[3] == self.sink_topic]:
                del engine._codecs[key]
            self.runners.clear()
            while not self.queue.empty():
                self.queue.get_nowait()

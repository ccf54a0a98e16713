"""Persistent queries: CREATE STREAM/TABLE ... AS SELECT, INSERT INTO ... SELECT, TERMINATE
and PAUSE/RESUME, and the machinery that builds, runs and stops them.

A query is built before its statement enters the command log (a query that cannot run must
not be replayed at every start), then run: its stages (``streamsql.runtime.query``) are
subscribed to their input topics for the test driver and, in service mode, each gets a
``StageRunner``, a member of the stage's consumer group, with tasks holding its state
(RocksDB per input partition) and, on a cluster, the placement of those tasks and their
standbys. TERMINATE stops the runners, destroys the query's local state and deletes its
internal topics. The ``Engine`` owns what runs (``queries``, ``runners``, ``subscribers``);
this module only changes it.
"""
from __future__ import annotations

import asyncio
import logging
import re
import shutil
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from streamsql import ast
from streamsql.analyzer import AggregatePlan, QueryPlan, sink_source
from streamsql.catalog import DataSource, QueryInfo, WindowInfo
from streamsql.errors import KsqlStatementException
from streamsql.exec.ddl import check_existing, topic_config
from streamsql.join_analyzer import JoinPlan
from streamsql.results import Result
from streamsql.runtime.log.base import TaskPlacement, UnknownTopicError
from streamsql.runtime.pipeline import build_pipeline
from streamsql.runtime.query import (MaterializingStage, PersistentQuery, PipelineStage,
                                     SourceTableStage, Stage, StageRunner)
from streamsql.schemaregistry.ksql import register_source_schemas

if TYPE_CHECKING:  # pragma: no cover - imports only for type hints
    from streamsql.engine import Engine, Session

log = logging.getLogger(__name__)

# A query's id names its internal topics, consumer groups and state directory: characters a
# topic name may not have (spaces, '/', any non-ASCII) become '_' in the sink's name there.
_QUERY_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
# Kafka's longest topic name, and room for the longest suffix the runtime gives a query's
# internal topics ("-Aggregate-GroupBy-repartition", "-Join-<n>-Right-table-changelog").
_MAX_TOPIC_NAME = 249
_INTERNAL_SUFFIX_ROOM = 40


# RocksDB's memory for an engine's tasks: one block cache, the memtables charged to it.
ROCKSDB_CACHE_BYTES = 64 * 1024 * 1024
ROCKSDB_MEMTABLE_BYTES = 32 * 1024 * 1024


def _streams_prop(props: dict[str, Any], name: str, default: Any) -> Any:
    """A Kafka Streams setting, given as ``name`` or as ksqlDB's ``ksql.streams.<name>``."""
    return props.get(name, props.get(f"ksql.streams.{name}", default))


# ------------------------------------------------------------------------- statements
async def create_as_select(engine: Engine, stmt: ast.CreateAsSelect, props: dict[str, Any],
                           session: Session, seq: int | None) -> Result:
    existing, answer = check_existing(engine, stmt)
    if answer is not None:
        return answer
    if stmt.query.limit is not None:  # a persistent query does not end (ksqlDB's rule)
        raise KsqlStatementException(
            f"CREATE {stmt.kind} AS SELECT statements don't support LIMIT clause.")
    plan = engine.analyzer(props).analyze(stmt.query, stmt.name)
    produces_table = isinstance(plan, AggregatePlan) or (
        plan.produces_table if isinstance(plan, JoinPlan) else plan.source.is_table)
    if stmt.kind == "TABLE" and not produces_table:
        raise KsqlStatementException(
            "Invalid result type. Your SELECT query produces a STREAM. "
            "Please use CREATE STREAM AS SELECT statement instead.")
    if stmt.kind == "STREAM" and produces_table:
        raise KsqlStatementException(
            "Invalid result type. Your SELECT query produces a TABLE. "
            "Please use CREATE TABLE AS SELECT statement instead.")
    src_info = await engine.log.describe_topic(plan.source.topic)
    sink = sink_source(stmt, plan, props, src_info.partitions if src_info else 1,
                       src_info.replicas if src_info else 1)
    aggregation = _aggregation(plan)
    if aggregation is not None:
        w = aggregation.window
        sink = replace(sink, window=WindowInfo(w.kind, w.size if w.kind != "SESSION" else None)
                       if w is not None else None)
    prefix = "CSAS" if stmt.kind == "STREAM" else "CTAS"
    query_id = f"{prefix}_{_QUERY_ID_UNSAFE.sub('_', stmt.name)}_{engine.next_seq(seq)}"
    if sink.is_table or isinstance(plan, (AggregatePlan, JoinPlan)):
        _check_internal_names(engine, query_id, stmt.name)  # before the sink topic is made
    if isinstance(plan, JoinPlan) and seq is None:
        # As ksqlDB, before any topic is made; a command already in the log was checked.
        from streamsql.runtime.join import check_join_partitions

        await check_join_partitions(engine, plan)
    partitions = await engine.ensure_topic(sink.topic, sink.partitions, sink.replicas,
                                           config=topic_config(stmt.properties))
    sink = replace(sink, partitions=partitions)
    register_source_schemas(sink, engine.schema_registry, is_sink=True)
    # Build before recording: a query that cannot run must not enter the command log.
    stages = await _build_stages(engine, query_id, plan, sink, props)
    await engine.record_command(stmt, props, seq)
    if existing is not None:
        for q in engine.catalog.queries_writing(stmt.name):
            await _stop_query(engine, q.query_id)
    engine.catalog.sources[sink.name] = sink
    _run_query(engine, query_id, stmt.text, plan, sink, prefix, props, stages)
    await _positions_taken(engine, query_id)
    return Result(stmt.text, "currentStatus",
                  f"Created query with ID {query_id}", query_id=query_id)


async def insert_into(engine: Engine, stmt: ast.InsertInto, props: dict[str, Any],
                      session: Session, seq: int | None) -> Result:
    target = engine.catalog.source(stmt.target)
    if target is None:
        where = f"Line: {stmt.target_location[0]}, Col: {stmt.target_location[1]}: " \
            if stmt.target_location else ""
        raise KsqlStatementException(f"{where}Source `{stmt.target}` does not exist.")
    if target.is_source:
        raise KsqlStatementException(
            f"Cannot insert into read-only {target.kind.lower()}: {target.name}")
    if target.is_table:
        raise KsqlStatementException(
            f"INSERT INTO can only be used to insert into a stream. {target.name} is a table.")
    plan = engine.analyzer(props).analyze(stmt.query, stmt.target)
    if plan.source.is_table:
        raise KsqlStatementException(
            f"INSERT INTO can only be used to insert into a stream. {target.name} is a table.")
    if any(c.namespace in ("HEADER", "HEADERS") for c in target.schema.columns):
        # A query's rows carry no headers to write (ksqlDB's rule, checked with the sink).
        raise KsqlStatementException(f"Cannot insert into {target.name} because it has header columns")
    if [(c.name, c.type) for c in plan.schema.columns] != [(c.name, c.type) for c in target.schema.columns
                                                          if c.namespace in ("KEY", "VALUE")]:
        raise KsqlStatementException(
            f"Incompatible schema between results and sink.\n"
            f"Result schema is {plan.schema}\nSink schema is {target.schema}")
    if isinstance(plan, JoinPlan) and seq is None:
        from streamsql.runtime.join import check_join_partitions

        await check_join_partitions(engine, plan)
    query_id = f"INSERTQUERY_{engine.next_seq(seq)}"
    stages = await _build_stages(engine, query_id, plan, target, props)
    await engine.record_command(stmt, props, seq)
    _run_query(engine, query_id, stmt.text, plan, target, "INSERT", props, stages)
    await _positions_taken(engine, query_id)
    return Result(stmt.text, "currentStatus", f"Created query with ID {query_id}", query_id=query_id)


async def terminate_query(engine: Engine, stmt: ast.TerminateQuery, props: dict[str, Any],
                          session: Session, seq: int | None) -> Result:
    ids = _query_ids(engine, stmt.query_id)
    await engine.record_command(stmt, props, seq)
    for qid in ids:
        await _stop_query(engine, qid)
        await _delete_internal_topics(engine, qid)
    return Result(stmt.text, "currentStatus", "Query terminated.")


def _query_ids(engine: Engine, query_id: str | None) -> list[str]:
    """The persistent queries a TERMINATE/PAUSE/RESUME names: one, or ALL (``None``)."""
    if query_id is None:
        return list(engine.catalog.queries)
    if query_id.upper() not in engine.catalog.queries:
        raise KsqlStatementException(f"Unknown queryId: {query_id}")
    return [query_id.upper()]


async def pause_resume_query(engine: Engine, stmt: ast.PauseResumeQuery, props: dict[str, Any],
                             session: Session, seq: int | None) -> Result:
    """PAUSE stops a query's processing and RESUME takes it up again where it stopped: its
    runners keep their partitions, positions and state meanwhile (``StageRunner.halt``;
    the test driver's subscriptions are dropped). SHOW QUERIES and DESCRIBE say PAUSED in
    between. Through the command log, so every node and a restart see it."""
    ids = _query_ids(engine, stmt.query_id)
    await engine.record_command(stmt, props, seq)
    pause = stmt.action == "PAUSE"
    for qid in ids:
        info = engine.catalog.queries[qid]
        query = engine.queries.get(qid)
        if query is None or (info.state == "PAUSED") == pause:
            continue
        info.state = "PAUSED" if pause else "RUNNING"
        for runner in engine.runners.get(qid, []):
            runner.halt(pause)
        for stage in query.stages:
            subs = engine.subscribers.setdefault(stage.source_topic, [])
            if pause and stage in subs:
                subs.remove(stage)
            elif not pause and stage not in subs:
                subs.append(stage)
    return Result(stmt.text, "currentStatus", "Query paused." if pause else "Query resumed.")


# ------------------------------------------------------------------------ source tables
def source_table_query_id(name: str, seq: int) -> str:
    """The id of the query materializing source table ``name`` (ksqlDB's ``CST_`` prefix)."""
    return f"CST_{_QUERY_ID_UNSAFE.sub('_', name)}_{seq}"


def materialize_source_table(engine: Engine, source: DataSource, query_id: str,
                             props: dict[str, Any]) -> None:
    """Start the query that materializes a source table (``CREATE SOURCE TABLE``, as ksqlDB
    0.22+ does) so that pull queries can read it: one stage from the table's topic, from
    its beginning, into a table store (``SourceTableStage``). It is internal: not in the
    catalog's queries (SHOW QUERIES, TERMINATE), and dropped with its table
    (``stop_source_table``)."""
    store = engine.new_store(query_id, "materialized", "table")
    stage = SourceTableStage(query_id, source.topic, store, engine.codec(source, "key"))
    query = PersistentQuery(query_id, source, source, [stage])
    engine.queries[query_id] = query
    engine.subscribers.setdefault(stage.source_topic, []).append(stage)
    if engine.mode == "service":
        engine.runners[query_id] = runners = _runners(engine, query, {**props, "auto.offset.reset": "earliest"})
        for runner in runners:
            if engine.replaying:
                engine.deferred_runners.append(runner)
            else:
                runner.start()


async def stop_source_table(engine: Engine, name: str) -> None:
    """Stop the query materializing source table ``name`` (it is being dropped), drop its
    state and its changelog topic."""
    for query_id, query in list(engine.queries.items()):
        if query.sink.name == name and isinstance(query.stages[-1], SourceTableStage):
            await _stop_query(engine, query_id)
            await _delete_internal_topics(engine, query_id)


# ---------------------------------------------------------------------- internal names
def _check_internal_names(engine: Engine, query_id: str, sink: str) -> None:
    """Refuse a stateful query whose internal topics' names (its id, from the sink's
    name, and a suffix such as ``-Aggregate-GroupBy-repartition``) would be longer than
    Kafka allows; each topic is checked again when it is named
    (``streamsql.engine._check_internal_topic``)."""
    longest = len(engine.internal_name(query_id)) + _INTERNAL_SUFFIX_ROOM
    if longest > _MAX_TOPIC_NAME:
        raise KsqlStatementException(
            f"The name {sink} is too long for a stateful query: its internal topics "
            f"({engine.internal_name(query_id)}-...) would be longer than Kafka's limit of "
            f"{_MAX_TOPIC_NAME} characters. Give the stream or table a shorter name.")


# ------------------------------------------------------------------------------ running
def start_reset(stage: Stage, base: str, reset: str) -> str:
    """Where a stage of query ``base`` (its internal name) starts reading with no committed
    offsets: the query's sources where ``reset`` (auto.offset.reset) says, both sides of a
    join alike; its internal topics from their start."""
    return "earliest" if stage.source_topic.startswith(base + "-") else reset


async def positions_taken(runners: list[StageRunner], query_id: str, timeout: float = 10.0) -> None:
    """Wait until those of a new query's ``runners`` reading from 'latest' have taken their
    sources' end offsets: records written once the statement has answered are the query's."""
    latest = [r for r in runners if r.reset == "latest"]
    if not latest:
        return
    try:
        await asyncio.wait_for(asyncio.gather(*(r.ready.wait() for r in latest)), timeout)
    except asyncio.TimeoutError:
        log.warning("query %s: no assignment of its sources after %.0f s", query_id, timeout)


async def _positions_taken(engine: Engine, query_id: str) -> None:
    await positions_taken([r for r in engine.runners.get(query_id, [])
                           if r not in engine.deferred_runners], query_id)


def _run_query(engine: Engine, query_id: str, sql: str, plan: QueryPlan, sink: DataSource, kind: str,
               props: dict[str, Any], stages: list[Stage]) -> None:
    query = PersistentQuery(query_id, plan.source, sink, stages)
    engine.queries[query_id] = query
    sources = (plan.left.source.name, plan.right.source.name) if isinstance(plan, JoinPlan) \
        else (plan.source.name,)
    engine.catalog.queries[query_id] = QueryInfo(query_id, sql, sink.name, sources, kind)
    for stage in stages:
        engine.subscribers.setdefault(stage.source_topic, []).append(stage)
    if engine.mode == "service":
        engine.runners[query_id] = runners = _runners(engine, query, props)
        for runner in runners:
            if engine.replaying:
                engine.deferred_runners.append(runner)
            else:
                runner.start()


def _runners(engine: Engine, query: PersistentQuery, props: dict[str, Any]) -> list[StageRunner]:
    """A runner per stage, each a member of the stage's consumer group. Stages with state
    get tasks (RocksDB per input partition). Guarantees: on the embedded log, a query
    whose every stage can, and whose stages each write a topic of their own, is
    exactly-once (all its stages commit state, input offsets and output ends together,
    see ``streamsql.runtime.task``); on Kafka, ``processing.guarantee=exactly_once_v2``
    runs every stage in transactions; other queries are at-least-once."""
    from streamsql.runtime.task import StageTasks, stage_stores

    stages = query.stages
    stateful = [bool(stage_stores(s)) for s in stages]
    sinks = [s.sink_topic for s in stages]
    local_exactly_once = (any(stateful) and engine.state_dir is not None
                          and not engine.distributed
                          and all(getattr(s, "exactly_once", False) for s in stages)
                          and len(set(sinks)) == len(sinks)
                          and hasattr(engine.log, "truncate"))
    transactions = (engine.distributed
                    and str(props.get("processing.guarantee", "")).lower()
                    in ("exactly_once_v2", "exactly_once"))
    if (any(stateful) or local_exactly_once) and engine.rocksdb_config is None:
        import rocksdict

        from streamsql.state import RocksDBConfig
        # One block cache for every task of the engine, which the memtables of every task
        # are charged to (as ksqlDB's bounded-memory RocksDB config): RocksDB's memory stays
        # the same however many keys the stores hold.
        cache = rocksdict.Cache(ROCKSDB_CACHE_BYTES)
        engine.rocksdb_config = RocksDBConfig(
            block_cache=cache, write_buffer_manager=rocksdict.WriteBufferManager
            .new_write_buffer_manager_with_cache(ROCKSDB_MEMTABLE_BYTES, False, cache))
    # Kafka Streams' max.task.idle.ms: how long a join task waits for a caught-up input.
    idle_ms = int(_streams_prop(props, "max.task.idle.ms", 0))
    # Kafka Streams' repartition.purge.interval.ms (30 s: each purge is a broker request);
    # the embedded log's is a local check, so it purges at every commit.
    purge_ms = int(_streams_prop(props, "repartition.purge.interval.ms",
                                 30_000 if engine.distributed else 0))
    # How long a stage's transaction stays open over its polls under exactly-once: the
    # same setting, read the same way, as how long an aggregation holds its updates.
    from streamsql.runtime.aggregate import commit_interval_ms

    commit_ms = commit_interval_ms(props)
    runners = []
    base = engine.internal_name(query.query_id)
    for i, stage in enumerate(stages):
        group = base + (f"_{i}" if i else "")
        txn = engine.log.transactional(f"{group}-{engine.stable_node_id()}") if transactions else None
        tasks = None
        if local_exactly_once or stateful[i]:
            assert engine.state_dir is not None
            name = stage.name.removeprefix(query.query_id).lstrip("-") or "main"
            tasks = StageTasks(engine.log, engine.state_dir / query.query_id / name, base,
                               stage, group, engine.fences, engine.rocksdb_config,
                               exactly_once=local_exactly_once,
                               group_positions=engine.distributed,
                               state_log=txn.log if txn is not None else None)
        placement = _placement(engine, props, stage, tasks) if engine.distributed else None
        reset = start_reset(stage, base, str(props.get("auto.offset.reset", "latest")))
        runners.append(StageRunner(stage, group, engine.log, reset,
                                   after_batch=engine.flush_processing_log, tasks=tasks,
                                   fences=engine.fences, transaction=txn, idle_ms=idle_ms,
                                   placement=placement, purge_interval_ms=purge_ms,
                                   commit_interval_ms=commit_ms))
    return runners


def _placement(engine: Engine, props: dict[str, Any], stage: Stage, tasks: Any) -> TaskPlacement:
    """Kafka Streams' high-availability settings for a stage's group on a cluster, and
    the standby tasks that keep warm copies of its state here
    (``streamsql.runtime.standby``)."""
    from streamsql.runtime.standby import StandbyTasks

    acceptable_lag = int(_streams_prop(props, "acceptable.recovery.lag", 10_000))
    offsets = None
    if tasks is not None and tasks.specs:
        tasks.standby = StandbyTasks(engine.log, tasks.path, tasks.specs, stage.name,
                                     tasks.task_count, engine.rocksdb_config,
                                     acceptable_lag=acceptable_lag)
        offsets = tasks.standby.offsets
    return TaskPlacement(int(_streams_prop(props, "num.standby.replicas", 0)),
                         int(_streams_prop(props, "max.warmup.replicas", 2)),
                         acceptable_lag, offsets)


# ----------------------------------------------------------------------------- building
def _aggregation(plan: QueryPlan) -> AggregatePlan | None:
    """The aggregation a query runs: its own, or the one over its join (GROUP BY over a join)."""
    if isinstance(plan, AggregatePlan):
        return plan
    if isinstance(plan, JoinPlan):
        return plan.then
    return None


async def _build_stages(engine: Engine, query_id: str, plan: QueryPlan, sink: DataSource,
                        props: dict[str, Any]) -> list[Stage]:
    retention = None
    aggregation = _aggregation(plan)
    if aggregation is not None:
        from streamsql.runtime.aggregate import window_retention

        retention = window_retention(aggregation)  # refuses a RETENTION shorter than size + grace
    stages = await _build_plain_stages(engine, query_id, plan, sink, props)
    if sink.is_table:
        # Tables made by a query are materialized: pull queries read them. An aggregation's
        # (in RocksDB) is read from its own state, as ksqlDB's. Else a store of the table's
        # rows; a windowed aggregation's drops windows past their retention, as ksqlDB's
        # window stores.
        from streamsql.runtime.aggregate import table_view

        view = table_view(stages[-1])
        if view is not None:
            stages[-1] = MaterializingStage(stages[-1], view)
            return stages
        if retention is None:
            store = engine.new_store(query_id, "materialized", "table")
        else:
            kind = "session-table" if aggregation.window.kind == "SESSION" else "window-table"
            store = engine.new_store(query_id, "materialized", kind, retention_ms=retention)
        stages[-1] = MaterializingStage(stages[-1], store)
    return stages


async def _build_plain_stages(engine: Engine, query_id: str, plan: QueryPlan, sink: DataSource,
                              props: dict[str, Any]) -> list[Stage]:
    if isinstance(plan, AggregatePlan):
        from streamsql.runtime.aggregate import build_aggregate_stages

        return await build_aggregate_stages(engine, query_id, plan, sink, props)
    if isinstance(plan, JoinPlan):
        from streamsql.runtime.join import build_join_stages

        return await build_join_stages(engine, query_id, plan, sink, props)
    pipeline = build_pipeline(
        plan, engine.registry, engine.codec(plan.source, "key"), engine.codec(plan.source, "value"),
        engine.codec(sink, "key"), engine.codec(sink, "value"), engine._processing_logger(query_id),
        sink=sink, timestamp_parser=engine._timestamp_parser(plan.source),
        sink_timestamp_parser=engine._timestamp_parser(sink))
    return [PipelineStage(query_id, plan.source.topic, sink.topic, pipeline)]


# ----------------------------------------------------------------------------- stopping
async def _stop_query(engine: Engine, query_id: str) -> None:
    query = engine.queries.pop(query_id, None)
    engine.catalog.queries.pop(query_id, None)
    if query is not None:
        for stage in query.stages:
            subs = engine.subscribers.get(stage.source_topic, [])
            if stage in subs:
                subs.remove(stage)
    for runner in engine.runners.pop(query_id, []):
        await runner.stop()
        if runner in engine.deferred_runners:
            engine.deferred_runners.remove(runner)
    if engine.state_dir is not None and (engine.state_dir / query_id).exists():
        # A terminated query never runs again: its state goes (changelog topics stay).
        from streamsql.state import destroy_state_dir

        for stage_dir in (engine.state_dir / query_id).iterdir():
            for task_dir in stage_dir.iterdir():
                destroy_state_dir(task_dir)
        shutil.rmtree(engine.state_dir / query_id, ignore_errors=True)


async def _delete_internal_topics(engine: Engine, query_id: str) -> None:
    """Delete a terminated query's changelog and repartition topics, as ksqlDB's query
    cleanup does: nothing will read them again, and kept they would hold their disk
    forever. Every node of a cluster runs the TERMINATE; the first to get there deletes."""
    prefix = engine.internal_name(query_id) + "-"
    for topic in [t for t in await engine.log.list_topics() if t.startswith(prefix)]:
        try:
            await engine.log.delete_topic(topic)
        except UnknownTopicError:
            pass

"""The engine: executes statements against a catalog, a Log and running queries.

Statements that change the catalog (CREATE, DROP, INSERT INTO ... SELECT, TERMINATE, CREATE
TYPE) are appended to the command log (the single-partition topic
``_streamsql_<service id>_command_topic``, ksqlDB's naming); ``Engine.start`` replays it, so a restarted engine
has the same streams, tables, types and running queries, and the queries resume from their
committed offsets.

On a Log shared by several nodes (Kafka: ``Log.distributed``) the engines with one
``ksql.service.id`` form a cluster: each follows the command topic and applies what the others
append, so all run the same persistent queries, and each query's consumer group spreads its
partitions over them (``streamsql.runtime.query.StageRunner``).

Two modes: ``service`` runs each persistent query as an asyncio task (``QueryRunner``);
``test`` runs nothing by itself: the test driver delivers records one at a time through
``Engine.subscribers`` (see ``streamsql.testing.driver``).
"""
from __future__ import annotations

import asyncio
import logging
import re
import shutil
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any, AsyncIterator

import orjson

from streamsql import ast
from streamsql import expressions as e
from streamsql.analyzer import (AggregatePlan, QueryAnalyzer, QueryPlan, analyze_create_source,
                                resolve_type, sink_source)
from streamsql.catalog import Catalog, DataSource, QueryInfo, WindowInfo
from streamsql.codegen import ExpressionCompiler, Scope
from streamsql.errors import (KsqlException, KsqlStatementException, StreamSqlError,
                             WriteFailedError)
from streamsql.join_analyzer import JoinPlan
from streamsql.formats.base import Codec, CodecContext
from streamsql.schemaregistry.ksql import register_source_schemas
from streamsql.functions import default_registry
from streamsql.functions.registry import FunctionRegistry
from streamsql.results import Result
from streamsql.runtime.log.base import (Log, ProducerRecord, RecordBatch, TaskPlacement,
                                        TopicExistsError, murmur2)
from streamsql.runtime.pipeline import Outputs, build_pipeline
from streamsql.runtime.query import (MaterializingStage, PersistentQuery, PipelineStage, Stage,
                                     StageRunner, table_row, table_rows)
from streamsql.types import BaseType
from streamsql.variables import substitute

log = logging.getLogger(__name__)

PROCESSING_LOG_TOPIC = "streamsql_processing_log"
PROCESSING_LOG_STREAM = "KSQL_PROCESSING_LOG"
# A query's id names its internal topics, consumer groups and state directory: characters a
# topic name may not have (spaces, '/', any non-ASCII) become '_' in the sink's name there.
_QUERY_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
# Kafka's longest topic name, and room for the longest suffix the runtime gives a query's
# internal topics ("-Aggregate-GroupBy-repartition", "-Join-<n>-Right-table-changelog").
_MAX_TOPIC_NAME = 249
_INTERNAL_SUFFIX_ROOM = 40

DEFAULT_CONFIG: dict[str, Any] = {
    "auto.offset.reset": "earliest",
    # ksqlDB's default; its internal names append to it without a separator.
    "ksql.service.id": "default_",
    "processing.guarantee": "at_least_once",
    "ksql.persistence.default.format.key": "KAFKA",
}


def _streams_prop(props: dict[str, Any], name: str, default: Any) -> Any:
    """A Kafka Streams setting, given as ``name`` or as ksqlDB's ``ksql.streams.<name>``."""
    return props.get(name, props.get(f"ksql.streams.{name}", default))


class Session:
    """Per-client state: SET properties and DEFINE variables."""

    def __init__(self) -> None:
        self.properties: dict[str, Any] = {}
        self.variables: dict[str, str] = {}


class Engine:
    """See the module docstring."""

    def __init__(self, log_: Log, config: dict[str, Any] | None = None,
                 registry: FunctionRegistry | None = None, mode: str = "service",
                 auto_create_topics: bool = False, schema_registry: Any = None,
                 state_dir: str | Path | None = None) -> None:
        from streamsql.schemaregistry.ksql import make_registry
        from streamsql.runtime.task import OutputFences

        self.log = log_
        self.config = {**DEFAULT_CONFIG, **(config or {})}
        self.service_id = str(self.config["ksql.service.id"])
        self.command_topic = f"_streamsql_{self.service_id}_command_topic"
        # Told apart from the other nodes' in the command topic (a new one per process).
        self.node_id = uuid.uuid4().hex[:12]
        self.distributed = bool(getattr(log_, "distributed", False))
        self.node_name = str(getattr(log_, "node_name", "local"))
        # One schema registry per engine: the built-in one on this Log unless configured.
        self.schema_registry = schema_registry or make_registry(log_, self.config)
        self.registry = registry or default_registry()
        self.mode = mode
        self.auto_create_topics = auto_create_topics
        self.catalog = Catalog()
        self.queries: dict[str, PersistentQuery] = {}
        self.runners: dict[str, list[StageRunner]] = {}
        # Stages by the topic they read: the test driver delivers records through this.
        self.subscribers: dict[str, list[Stage]] = {}
        self.session = Session()
        self._query_counter = 0
        self._replaying = False
        self._codecs: dict[tuple, Codec] = {}
        # Processing errors waiting to be written to the processing-log topic (bounded).
        self._processing_errors: list[tuple[str, str, int, int, str]] = []
        # Service mode keeps query state in RocksDB under this directory: ``state_dir``, else
        # ``<data dir>/state`` of an on-disk embedded log; None keeps it in memory.
        self.state_dir = self._default_state_dir(state_dir)
        # Committed ends of topics written by exactly-once stages (read_committed readers).
        self.fences = OutputFences()
        self._rocksdb_config: Any = None
        # Runners of queries replayed at start: started once the whole catalog is known.
        self._deferred: list[StageRunner] = []
        # Pull queries' generated pipelines by plan (a key lookup's plan without its key).
        self._pull_pipelines: dict[QueryPlan, Any] = {}
        # The command topic: the next offset to apply, and who applies (one at a time).
        self._command_offset = 0
        self._command_lock = asyncio.Lock()
        self._follower: asyncio.Task[None] | None = None

    # ----------------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Replay the command log: rebuild the catalog and restart persistent queries."""
        await self.schema_registry.start()
        topics = await self.log.list_topics()
        if self.mode == "service":
            await self._declare_processing_log()
        if self.command_topic not in topics:
            try:
                await self.log.create_topic(self.command_topic, 1,
                                            config={"cleanup.policy": "delete",
                                                    "retention.ms": "-1"})
            except TopicExistsError:  # another node of the cluster was first
                pass
        self._replaying = True
        try:
            async with self._command_lock:
                await self._apply_commands(replay=True)
        finally:
            self._replaying = False
            deferred, self._deferred = self._deferred, []
            for runner in deferred:
                runner.start()
        if self.distributed and self.mode == "service":
            self._follower = asyncio.create_task(self._follow_commands(), name="command-follower")

    async def _apply_commands(self, replay: bool = False) -> None:
        """Apply the command topic's records from ``_command_offset`` to its end (on replay,
        this node's own too; afterwards only the other nodes')."""
        end = (await self.log.end_offsets(self.command_topic))[0]
        while self._command_offset < end:
            batch = await self.log.fetch(self.command_topic, 0, self._command_offset)
            if not len(batch):
                break
            for value in batch.values:
                if value is None:
                    continue
                cmd = orjson.loads(value)
                self._query_counter = max(self._query_counter, cmd.get("seq", 0))
                if not replay and cmd.get("node") == self.node_id:
                    continue
                try:
                    await self._execute_text(cmd["sql"], cmd.get("properties") or {},
                                             Session(), seq=cmd.get("seq"))
                except StreamSqlError as exc:
                    log.warning("command %r failed to apply: %s", cmd["sql"], exc)
                except Exception:  # noqa: BLE001 - last resort: one command must not stop the start
                    log.exception("internal error applying command %r; skipped", cmd["sql"])
            self._command_offset = batch.offsets[-1] + 1

    async def _follow_commands(self) -> None:
        """Apply the statements other nodes of the cluster append to the command topic."""
        while True:
            try:
                async with self._command_lock:
                    await self._apply_commands()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("following the command topic failed; retrying")
                await asyncio.sleep(2)
            await asyncio.sleep(0.5)

    async def close(self) -> None:
        """Stop every query (their state is closed; exactly-once queries take up an
        unfinished batch again at the next start)."""
        if self._follower is not None:
            self._follower.cancel()
            try:
                await self._follower
            except (asyncio.CancelledError, Exception):
                pass
            self._follower = None
        await asyncio.gather(*(runner.stop() for runners in self.runners.values()
                               for runner in runners))
        self.runners.clear()

    # ----------------------------------------------------------------------- execution
    async def execute(self, text: str, properties: dict[str, Any] | None = None,
                      session: Session | None = None) -> list[Result]:
        """Execute a script of statements; stops at the first failing one (earlier ones stay
        applied) by raising its error."""
        return await self._execute_text(text, properties or {}, session or self.session)

    async def _execute_text(self, text: str, properties: dict[str, Any], session: Session,
                            seq: int | None = None) -> list[Result]:
        from streamsql.parser import NO_LIMITS, StatementLimits, parse

        text = self._substitute(text, session)
        # A command replayed from the log was accepted once: a lower limit since must not
        # lose it.
        limits = StatementLimits.from_config(self.config) if seq is None else NO_LIMITS
        results = []
        for stmt in parse(text, limits):
            if self._follower is not None and seq is None \
                    and not isinstance(stmt, ast.QueryStatement):
                # A cluster node: apply what the others appended first, then this statement,
                # one at a time with the follower (queries only read: they skip the round trip).
                async with self._command_lock:
                    await self._apply_commands()
                    results.append(await self.execute_statement(stmt, properties, session))
            else:
                results.append(await self.execute_statement(stmt, properties, session, seq=seq))
        return results

    def _substitute(self, text: str, session: Session) -> str:
        return substitute(text, session.variables)

    async def execute_statement(self, stmt: ast.Statement, properties: dict[str, Any] | None = None,
                                session: Session | None = None, seq: int | None = None) -> Result:
        session = session or self.session
        props = {**self.config, **session.properties, **(properties or {})}
        handler = getattr(self, "_exec_" + type(stmt).__name__, None)
        if handler is None:
            raise KsqlStatementException(f"Unsupported statement: {stmt.text}", stmt.text)
        try:
            return await handler(stmt, props, session, seq)
        except KsqlStatementException as exc:
            if not exc.statement:
                exc.statement = stmt.text
            raise
        except KsqlException as exc:
            raise KsqlStatementException(str(exc), stmt.text) from exc
        finally:
            # Schemas registered by the statement are persisted before it returns.
            await self.schema_registry.flush()

    async def _record_command(self, stmt: ast.Statement, props: dict[str, Any], seq: int | None) -> int:
        """Append a catalog-changing statement to the command log; returns its sequence."""
        if seq is not None:
            return seq
        self._query_counter += 1
        seq = self._query_counter
        if not self._replaying:
            overrides = {k: v for k, v in props.items() if k not in self.config or self.config[k] != v}
            payload = orjson.dumps({"seq": seq, "sql": stmt.text + ";", "properties": overrides,
                                    "node": self.node_id}, default=str)
            await self.log.produce(self.command_topic,
                                   [ProducerRecord(None, payload, _now_ms(), (), 0)])
        return seq

    # ------------------------------------------------------------------------- helpers
    def _default_state_dir(self, state_dir: str | Path | None) -> Path | None:
        if self.mode != "service":
            return None
        if state_dir is not None:
            return Path(state_dir)
        data_dir = getattr(self.log, "path", None)
        if data_dir is None and self.distributed:
            # Tasks on a shared Log need RocksDB state; it is rebuilt from the changelogs.
            return Path(tempfile.mkdtemp(prefix="streamsql-state-"))
        return Path(data_dir) / "state" if data_dir is not None else None

    async def ensure_repartition_topic(self, name: str, partitions: int) -> int:
        """A query's internal repartition topic: kept without a time limit (as Kafka Streams
        does), so records of old event times are not deleted before they are processed."""
        _check_internal_topic(name)
        return await self._ensure_topic(name, partitions,
                                        config={"cleanup.policy": "delete", "retention.ms": "-1"})

    def _check_internal_names(self, query_id: str, sink: str) -> None:
        """Refuse a stateful query whose internal topics' names (its id, from the sink's
        name, and a suffix such as ``-Aggregate-GroupBy-repartition``) would be longer than
        Kafka allows; each topic is checked again when it is named (``_check_internal_topic``)."""
        longest = len(self.internal_name(query_id)) + _INTERNAL_SUFFIX_ROOM
        if longest > _MAX_TOPIC_NAME:
            raise KsqlStatementException(
                f"The name {sink} is too long for a stateful query: its internal topics "
                f"({self.internal_name(query_id)}-...) would be longer than Kafka's limit of "
                f"{_MAX_TOPIC_NAME} characters. Give the stream or table a shorter name.")

    def internal_name(self, query_id: str) -> str:
        """The prefix of a query's internal topics and consumer groups, named as ksqlDB's
        ``_confluent-ksql-<service id>query_<query id>``: with the default service id
        ``default_``, ``_streamsql_default_query_<query id>``."""
        return f"_streamsql_{self.service_id}query_{query_id}"

    def new_store(self, query_id: str, name: str, kind: str = "kv", *,
                  retention_ms: int | None = None) -> Any:
        """A state store ``name`` for a stage of query ``query_id``. In service mode with a
        state directory it is a RocksDB store split by the stage's input partitions, with a
        changelog topic (``streamsql.runtime.task.make_store`` lists the kinds: ``kv`` holds
        any picklable value; ``bytes``, ``json``, ``table`` and the aggregate kinds are
        typed); the query's runner opens and binds it. Otherwise a ``MemoryStore``."""
        from streamsql.runtime.task import changelog_topic

        # Checked in memory too, so a query is refused alike wherever it runs.
        _check_internal_topic(changelog_topic(self.internal_name(query_id), name))
        if self.state_dir is None:
            from streamsql.runtime.aggregate import MemoryStore

            return MemoryStore()
        from streamsql.runtime.task import make_store

        return make_store(name, kind, retention_ms)

    def _name_hint(self, name: str) -> str:
        """ksqlDB's hint when a source name differs only by case from an existing one."""
        for existing in self.catalog.sources:
            if existing.upper() == name.upper() and existing != name:
                if existing == existing.upper():
                    return f"\nDid you mean {existing}? Hint: try removing double quotes from the source name."
                return (f"\nDid you mean \"{existing}\"? Hint: wrap the source name in double quotes "
                        "to make it case-sensitive.")
        return ""

    def codec(self, source: DataSource, which: str) -> Codec:
        from streamsql.formats.registry import get_format

        info = source.key_format if which == "key" else source.value_format
        cols = source.schema.key if which == "key" else source.schema.value_format_columns
        cache_key = (info, cols, which, source.topic)
        c = self._codecs.get(cache_key)
        if c is None:
            fmt = get_format(info.name)
            if fmt.uses_context:
                ctx = CodecContext(source.topic, self.schema_registry)
                c = fmt.codec(cols, info.options, which == "key", context=ctx)  # type: ignore[call-arg]
            else:
                c = fmt.codec(cols, info.options, which == "key")
            self._codecs[cache_key] = c
        return c

    async def _ensure_topic(self, name: str, partitions: int, replicas: int = 1,
                            must_exist: bool = False, config: dict[str, str] | None = None) -> int:
        info = await self.log.describe_topic(name)
        if info is not None:
            return info.partitions
        if must_exist and partitions <= 0 and not self.auto_create_topics:
            raise KsqlException(
                f"Topic '{name}' does not exist. If you want to create a new topic for the stream/table "
                "please re-run the statement providing the required 'PARTITIONS' configuration in the "
                "WITH clause (and optionally 'REPLICAS'). For example: CREATE STREAM FOO (ID INT, VALUE "
                "STRING) WITH (KAFKA_TOPIC='foo', PARTITIONS=1, REPLICAS=1, VALUE_FORMAT='JSON');")
        try:
            created = await self.log.create_topic(name, max(partitions, 1), replicas, config)
            return created.partitions
        except TopicExistsError:
            info = await self.log.describe_topic(name)
            return info.partitions if info else max(partitions, 1)

    def _processing_logger(self, query_id: str):
        def plog(topic: str, partition: int, offset: int, reason: str) -> None:
            log.debug("processing error in %s at %s/%s@%s: %s", query_id, topic, partition, offset, reason)
            errors = self._processing_errors
            if len(errors) >= 10000:
                del errors[:5000]
            errors.append((query_id, topic, partition, offset, reason))
        return plog

    async def _declare_processing_log(self) -> None:
        """The processing log is a stream users can query, like ksqlDB's KSQL_PROCESSING_LOG;
        it is built in, so it is declared at every start rather than in the command log."""
        from streamsql.parser import parse_statement

        await self._ensure_topic(PROCESSING_LOG_TOPIC, 1)
        stmt = parse_statement(
            f"CREATE STREAM {PROCESSING_LOG_STREAM} (LOGGER STRING, LEVEL STRING, TIME BIGINT, "
            "MESSAGE STRUCT<TYPE INT, QUERY_ID STRING, TOPIC STRING, PARTITION INT, `OFFSET` BIGINT, "
            f"ERRORMESSAGE STRING>) WITH (KAFKA_TOPIC='{PROCESSING_LOG_TOPIC}', VALUE_FORMAT='JSON')")
        assert isinstance(stmt, ast.CreateSource)
        self.catalog.sources[PROCESSING_LOG_STREAM] = analyze_create_source(stmt, self.catalog, self.config)

    async def flush_processing_log(self) -> None:
        errs = self._processing_errors
        if not errs:
            return
        now = _now_ms()
        records = [ProducerRecord(None, orjson.dumps({
            "LOGGER": f"processing.{q}", "LEVEL": "ERROR", "TIME": now,
            "MESSAGE": {"TYPE": 0, "QUERY_ID": q, "TOPIC": _text(t), "PARTITION": p, "OFFSET": o,
                        "ERRORMESSAGE": _text(r)}}), now) for q, t, p, o, r in errs]
        errs.clear()
        await self._ensure_topic(PROCESSING_LOG_TOPIC, 1)
        await self.log.produce(PROCESSING_LOG_TOPIC, records)

    def _timestamp_parser(self, source: DataSource):
        if source.timestamp_column is None or source.timestamp_format is None:
            return None
        from streamsql.types import STRING
        resolved = self.registry.resolve("STRINGTOTIMESTAMP", [STRING, STRING])
        fn = resolved.implementation()
        fmt = source.timestamp_format
        return lambda value: fn(value, fmt)

    # ------------------------------------------------------------------ CREATE sources
    async def _exec_CreateSource(self, stmt: ast.CreateSource, props, session, seq) -> Result:
        existing = self.catalog.source(stmt.name)
        if existing is not None:
            if stmt.if_not_exists:
                return Result(stmt.text, "currentStatus", f"{stmt.kind.title()} {stmt.name} already exists")
            if not stmt.or_replace:
                kind = "table" if existing.is_table else "stream"
                raise KsqlStatementException(
                    f"Cannot add {stmt.kind.lower()} '{stmt.name}': A {kind} with the same name already exists")
            if existing.is_source:
                raise KsqlStatementException(
                    f"Cannot add {stmt.kind.lower()} '{stmt.name}': CREATE OR REPLACE is not supported on "
                    f"source {existing.kind.lower()}s.")
        source = analyze_create_source(stmt, self.catalog, props, schema_registry=self.schema_registry)
        partitions = await self._ensure_topic(source.topic, source.partitions, source.replicas,
                                              must_exist=True, config=_topic_config(stmt.properties))
        register_source_schemas(source, self.schema_registry, is_sink=False)
        source = replace(source, partitions=partitions)
        await self._record_command(stmt, props, seq)
        self.catalog.sources[source.name] = source
        return Result(stmt.text, "currentStatus",
                      f"{'Stream' if stmt.kind == 'STREAM' else 'Table'} created")

    # ------------------------------------------------------------ persistent queries
    def _analyzer(self, props: dict[str, Any]) -> QueryAnalyzer:
        return QueryAnalyzer(self.catalog, self.registry, props)

    async def _exec_CreateAsSelect(self, stmt: ast.CreateAsSelect, props, session, seq) -> Result:
        existing = self.catalog.source(stmt.name)
        if existing is not None:
            if stmt.if_not_exists:
                return Result(stmt.text, "currentStatus", f"{stmt.kind.title()} {stmt.name} already exists")
            if not stmt.or_replace:
                kind = "table" if existing.is_table else "stream"
                raise KsqlStatementException(
                    f"Cannot add {stmt.kind.lower()} '{stmt.name}': A {kind} with the same name already exists")
        plan = self._analyzer(props).analyze(stmt.query, stmt.name)
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
        src_info = await self.log.describe_topic(plan.source.topic)
        sink = sink_source(stmt, plan, props, src_info.partitions if src_info else 1,
                           src_info.replicas if src_info else 1)
        if isinstance(plan, AggregatePlan):
            w = plan.window
            sink = replace(sink, window=WindowInfo(w.kind, w.size if w.kind != "SESSION" else None)
                           if w is not None else None)
        prefix = "CSAS" if stmt.kind == "STREAM" else "CTAS"
        query_id = f"{prefix}_{_QUERY_ID_UNSAFE.sub('_', stmt.name)}_{self._next_seq(seq)}"
        if sink.is_table or isinstance(plan, (AggregatePlan, JoinPlan)):
            self._check_internal_names(query_id, stmt.name)  # before the sink topic is made
        partitions = await self._ensure_topic(sink.topic, sink.partitions, sink.replicas,
                                              config=_topic_config(stmt.properties))
        sink = replace(sink, partitions=partitions)
        register_source_schemas(sink, self.schema_registry, is_sink=True)
        # Build before recording: a query that cannot run must not enter the command log.
        stages = await self._build_stages(query_id, plan, sink, props)
        await self._record_command(stmt, props, seq)
        if existing is not None:
            for q in self.catalog.queries_writing(stmt.name):
                await self._stop_query(q.query_id)
        self.catalog.sources[sink.name] = sink
        self._run_query(query_id, stmt.text, plan, sink, prefix, props, stages)
        return Result(stmt.text, "currentStatus",
                      f"Created query with ID {query_id}", query_id=query_id)

    async def _exec_InsertInto(self, stmt: ast.InsertInto, props, session, seq) -> Result:
        target = self.catalog.source(stmt.target)
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
        plan = self._analyzer(props).analyze(stmt.query, stmt.target)
        if plan.source.is_table:
            raise KsqlStatementException(
                f"INSERT INTO can only be used to insert into a stream. {target.name} is a table.")
        if [(c.name, c.type) for c in plan.schema.columns] != [(c.name, c.type) for c in target.schema.columns
                                                              if c.namespace in ("KEY", "VALUE")]:
            raise KsqlStatementException(
                f"Incompatible schema between results and sink.\n"
                f"Result schema is {plan.schema}\nSink schema is {target.schema}")
        query_id = f"INSERTQUERY_{self._next_seq(seq)}"
        stages = await self._build_stages(query_id, plan, target, props)
        await self._record_command(stmt, props, seq)
        self._run_query(query_id, stmt.text, plan, target, "INSERT", props, stages)
        return Result(stmt.text, "currentStatus", f"Created query with ID {query_id}", query_id=query_id)

    def _next_seq(self, seq: int | None) -> int:
        """The sequence number the next recorded command gets (its own, on replay)."""
        return seq if seq is not None else self._query_counter + 1

    def _run_query(self, query_id: str, sql: str, plan: QueryPlan, sink: DataSource, kind: str,
                   props: dict[str, Any], stages: list[Stage]) -> None:
        query = PersistentQuery(query_id, plan.source, sink, stages)
        self.queries[query_id] = query
        sources = (plan.left.source.name, plan.right.source.name) if isinstance(plan, JoinPlan) \
            else (plan.source.name,)
        self.catalog.queries[query_id] = QueryInfo(query_id, sql, sink.name, sources, kind)
        for stage in stages:
            self.subscribers.setdefault(stage.source_topic, []).append(stage)
        if self.mode == "service":
            self.runners[query_id] = runners = self._runners(query, props)
            for runner in runners:
                if self._replaying:
                    self._deferred.append(runner)
                else:
                    runner.start()

    def _runners(self, query: PersistentQuery, props: dict[str, Any]) -> list[StageRunner]:
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
        local_exactly_once = (any(stateful) and self.state_dir is not None
                              and not self.distributed
                              and all(getattr(s, "exactly_once", False) for s in stages)
                              and len(set(sinks)) == len(sinks)
                              and hasattr(self.log, "truncate"))
        transactions = (self.distributed
                        and str(props.get("processing.guarantee", "")).lower()
                        in ("exactly_once_v2", "exactly_once"))
        if (any(stateful) or local_exactly_once) and self._rocksdb_config is None:
            import rocksdict

            from streamsql.state import RocksDBConfig
            # One block cache for every task of the engine.
            self._rocksdb_config = RocksDBConfig(block_cache=rocksdict.Cache(64 * 1024 * 1024))
        # Kafka Streams' max.task.idle.ms: how long a join task waits for a caught-up input.
        idle_ms = int(_streams_prop(props, "max.task.idle.ms", 0))
        # Kafka Streams' repartition.purge.interval.ms (30 s: each purge is a broker request);
        # the embedded log's is a local check, so it purges at every commit.
        purge_ms = int(_streams_prop(props, "repartition.purge.interval.ms",
                                     30_000 if self.distributed else 0))
        runners = []
        base = self.internal_name(query.query_id)
        for i, stage in enumerate(stages):
            group = base + (f"_{i}" if i else "")
            txn = self.log.transactional(f"{group}-{self.stable_node_id()}") if transactions else None
            tasks = None
            if local_exactly_once or stateful[i]:
                assert self.state_dir is not None
                name = stage.name.removeprefix(query.query_id).lstrip("-") or "main"
                tasks = StageTasks(self.log, self.state_dir / query.query_id / name, base,
                                   stage, group, self.fences, self._rocksdb_config,
                                   exactly_once=local_exactly_once,
                                   group_positions=self.distributed,
                                   state_log=txn.log if txn is not None else None)
            placement = self._placement(props, stage, tasks) if self.distributed else None
            reset = str(props.get("auto.offset.reset", "earliest")) if i == 0 else "earliest"
            runners.append(StageRunner(stage, group, self.log, reset,
                                       after_batch=self.flush_processing_log, tasks=tasks,
                                       fences=self.fences, transaction=txn, idle_ms=idle_ms,
                                       placement=placement, purge_interval_ms=purge_ms))
        return runners

    def _placement(self, props: dict[str, Any], stage: Stage, tasks: Any) -> TaskPlacement:
        """Kafka Streams' high-availability settings for a stage's group on a cluster, and
        the standby tasks that keep warm copies of its state here
        (``streamsql.runtime.standby``)."""
        from streamsql.runtime.standby import StandbyTasks

        acceptable_lag = int(_streams_prop(props, "acceptable.recovery.lag", 10_000))
        offsets = None
        if tasks is not None and tasks.specs:
            tasks.standby = StandbyTasks(self.log, tasks.path, tasks.specs, stage.name,
                                         tasks.task_count, self._rocksdb_config,
                                         acceptable_lag=acceptable_lag)
            offsets = tasks.standby.offsets
        return TaskPlacement(int(_streams_prop(props, "num.standby.replicas", 0)),
                             int(_streams_prop(props, "max.warmup.replicas", 2)),
                             acceptable_lag, offsets)

    def stable_node_id(self) -> str:
        """This node's id across restarts (kept in the state directory, as Kafka Streams keeps
        its process id): a restarted node's transactional producers fence the ones it had
        before a crash, instead of waiting for their transactions to time out."""
        if self.state_dir is None:
            return self.node_id
        path = self.state_dir / "node.id"
        try:
            return path.read_text().strip()
        except OSError:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(self.node_id)
            return self.node_id

    async def _build_stages(self, query_id: str, plan: QueryPlan, sink: DataSource,
                            props: dict[str, Any]) -> list[Stage]:
        retention = None
        if isinstance(plan, AggregatePlan):
            from streamsql.runtime.aggregate import window_retention

            retention = window_retention(plan)  # refuses a RETENTION shorter than size + grace
        stages = await self._build_plain_stages(query_id, plan, sink, props)
        if sink.is_table:
            # Tables made by a query are materialized: pull queries read them. A windowed
            # aggregation's table drops windows past their retention, as ksqlDB's window stores.
            if retention is None:
                store = self.new_store(query_id, "materialized", "table")
            else:
                kind = "session-table" if plan.window.kind == "SESSION" else "window-table"
                store = self.new_store(query_id, "materialized", kind, retention_ms=retention)
            stages[-1] = MaterializingStage(stages[-1], store)
        return stages

    async def _build_plain_stages(self, query_id: str, plan: QueryPlan, sink: DataSource,
                                  props: dict[str, Any]) -> list[Stage]:
        if isinstance(plan, AggregatePlan):
            from streamsql.runtime.aggregate import build_aggregate_stages

            return await build_aggregate_stages(self, query_id, plan, sink, props)
        if isinstance(plan, JoinPlan):
            from streamsql.runtime.join import build_join_stages

            return await build_join_stages(self, query_id, plan, sink, props)
        pipeline = build_pipeline(
            plan, self.registry, self.codec(plan.source, "key"), self.codec(plan.source, "value"),
            self.codec(sink, "key"), self.codec(sink, "value"), self._processing_logger(query_id),
            sink=sink, timestamp_parser=self._timestamp_parser(plan.source),
            sink_timestamp_parser=self._timestamp_parser(sink))
        return [PipelineStage(query_id, plan.source.topic, sink.topic, pipeline)]

    async def _stop_query(self, query_id: str) -> None:
        query = self.queries.pop(query_id, None)
        self.catalog.queries.pop(query_id, None)
        if query is not None:
            for stage in query.stages:
                subs = self.subscribers.get(stage.source_topic, [])
                if stage in subs:
                    subs.remove(stage)
        for runner in self.runners.pop(query_id, []):
            await runner.stop()
            if runner in self._deferred:
                self._deferred.remove(runner)
        if self.state_dir is not None and (self.state_dir / query_id).exists():
            # A terminated query never runs again: its state goes (changelog topics stay).
            from streamsql.state import destroy_state_dir

            for stage_dir in (self.state_dir / query_id).iterdir():
                for task_dir in stage_dir.iterdir():
                    destroy_state_dir(task_dir)
            shutil.rmtree(self.state_dir / query_id, ignore_errors=True)

    async def _exec_TerminateQuery(self, stmt: ast.TerminateQuery, props, session, seq) -> Result:
        if stmt.query_id is None:
            ids = list(self.catalog.queries)
        else:
            qid = stmt.query_id.upper()
            if qid not in self.catalog.queries:
                raise KsqlStatementException(f"Unknown queryId: {stmt.query_id}")
            ids = [qid]
        await self._record_command(stmt, props, seq)
        for qid in ids:
            await self._stop_query(qid)
            await self._delete_internal_topics(qid)
        return Result(stmt.text, "currentStatus", "Query terminated.")

    async def _delete_internal_topics(self, query_id: str) -> None:
        """Delete a terminated query's changelog and repartition topics, as ksqlDB's query
        cleanup does: nothing will read them again, and kept they would hold their disk
        forever. Every node of a cluster runs the TERMINATE; the first to get there deletes."""
        prefix = self.internal_name(query_id) + "-"
        for topic in [t for t in await self.log.list_topics() if t.startswith(prefix)]:
            try:
                await self.log.delete_topic(topic)
            except UnknownTopicError:
                pass

    # ------------------------------------------------------------------------ INSERT VALUES
    async def _exec_InsertValues(self, stmt: ast.InsertValues, props, session, seq) -> Result:
        target = self.catalog.source(stmt.target)
        if target is None:
            raise KsqlStatementException(
                f"Cannot insert values into an unknown stream/table: `{stmt.target}`"
                + self._name_hint(stmt.target))
        if target.is_source:
            raise KsqlStatementException(f"Cannot insert values into read-only {target.kind.lower()}: {target.name}")
        writable = [c for c in target.schema.columns if c.namespace in ("KEY", "VALUE")]
        columns = list(stmt.columns) or [c.name for c in writable]
        if not stmt.columns and len(stmt.values) != len(writable):
            raise KsqlStatementException(
                f"Expected a value for each column. Expected Columns: {[c.name for c in writable]}. "
                f"Got {list(stmt.values)}")
        if len(columns) != len(stmt.values):
            raise KsqlStatementException("Expected number columns and values to match: "
                                         f"{list(columns)}, {list(stmt.values)}")
        compiler = ExpressionCompiler(self.registry, Scope())
        values: dict[str, Any] = {}
        rowtime = None
        for name, expr in zip(columns, stmt.values):
            if name == "ROWTIME":
                rowtime = _insert_step(target, _eval_constant, compiler, expr)
                continue
            col = target.schema.find(name)
            if col is None:
                raise KsqlStatementException(f"Column name {name} does not exist.")
            values[name] = _insert_step(target, _coerce_value, compiler, expr, col.type, name)
        key = tuple(values.get(c.name) for c in target.schema.key)
        value = tuple(values.get(c.name) for c in target.schema.value_format_columns)
        kb = _insert_step(target, self.codec(target, "key").encode, key) \
            if target.schema.key and any(v is not None for v in key) else None
        vb = _insert_step(target, self.codec(target, "value").encode, value)
        ts = rowtime if rowtime is not None else _now_ms()
        if target.timestamp_column and values.get(target.timestamp_column) is not None \
                and target.timestamp_format is None:
            ts = values[target.timestamp_column]
        try:
            await self.log.produce(target.topic, [ProducerRecord(kb, vb, ts)])
        except OSError as exc:  # the embedded log took nothing of the failed write
            raise WriteFailedError(f"Failed to insert values into '{target.name}'. "
                                   f"{exc.strerror or exc}") from exc
        return Result(stmt.text, "currentStatus", None)

    # -------------------------------------------------------------------------- DROP
    async def _exec_DropSource(self, stmt: ast.DropSource, props, session, seq) -> Result:
        source = self.catalog.source(stmt.name)
        if source is None:
            if stmt.if_exists:
                return Result(stmt.text, "currentStatus", f"Source `{stmt.name}` does not exist.")
            raise KsqlStatementException(f"Source {stmt.name} does not exist.")
        if source.is_table != (stmt.kind == "TABLE"):
            actual = "table" if source.is_table else "stream"
            raise KsqlStatementException(
                f"Incompatible data source type is {actual.upper()}, but statement was DROP {stmt.kind}")
        if source.is_source and stmt.delete_topic:
            raise KsqlStatementException(f"Cannot delete topic for read-only source: {stmt.name}")
        readers = [q.query_id for q in self.catalog.queries_reading(stmt.name)]
        writers = [q.query_id for q in self.catalog.queries_writing(stmt.name)]
        if readers or writers:
            raise KsqlStatementException(
                f"Cannot drop {stmt.name}.\nThe following queries read from this source: "
                f"[{', '.join(readers)}].\nThe following queries write into this source: "
                f"[{', '.join(writers)}].\nYou need to terminate them before dropping {stmt.name}.")
        await self._record_command(stmt, props, seq)
        del self.catalog.sources[stmt.name]
        if stmt.delete_topic and not any(s.topic == source.topic for s in self.catalog.sources.values()):
            await self.log.delete_topic(source.topic)
        return Result(stmt.text, "currentStatus", f"Source `{stmt.name}` (topic: {source.topic}) was dropped.")

    # --------------------------------------------------------------------------- types
    async def _exec_CreateType(self, stmt: ast.CreateType, props, session, seq) -> Result:
        if stmt.name in self.catalog.types:
            if stmt.if_not_exists:
                return Result(stmt.text, "currentStatus", f"Type {stmt.name} already exists")
            raise KsqlStatementException(
                f"Cannot register custom type '{stmt.name}' since it is already registered with type: "
                f"{self.catalog.types[stmt.name]}")
        resolved = resolve_type(stmt.type, self.catalog)
        await self._record_command(stmt, props, seq)
        self.catalog.types[stmt.name] = resolved
        return Result(stmt.text, "currentStatus", f"Registered custom type with name '{stmt.name}' and SQL type {resolved}")

    async def _exec_DropType(self, stmt: ast.DropType, props, session, seq) -> Result:
        if stmt.name not in self.catalog.types:
            if stmt.if_exists:
                return Result(stmt.text, "currentStatus", f"Type {stmt.name} does not exist")
            raise KsqlStatementException(f"Type {stmt.name} does not exist.")
        await self._record_command(stmt, props, seq)
        del self.catalog.types[stmt.name]
        return Result(stmt.text, "currentStatus", f"Dropped type '{stmt.name}'")

    # ------------------------------------------------------------------ session state
    async def _exec_SetProperty(self, stmt: ast.SetProperty, props, session, seq) -> Result:
        session.properties[stmt.name] = stmt.value
        return Result(stmt.text, "currentStatus", f"Successfully changed local property '{stmt.name}' to '{stmt.value}'.")

    async def _exec_UnsetProperty(self, stmt: ast.UnsetProperty, props, session, seq) -> Result:
        session.properties.pop(stmt.name, None)
        return Result(stmt.text, "currentStatus", f"Successfully unset local property '{stmt.name}'.")

    async def _exec_DefineVariable(self, stmt: ast.DefineVariable, props, session, seq) -> Result:
        session.variables[stmt.name] = stmt.value
        return Result(stmt.text, "currentStatus", None)

    async def _exec_UndefineVariable(self, stmt: ast.UndefineVariable, props, session, seq) -> Result:
        session.variables.pop(stmt.name, None)
        return Result(stmt.text, "currentStatus", None)

    async def _exec_RunScript(self, stmt: ast.RunScript, props, session, seq) -> Result:
        raise KsqlStatementException("line 1:1: Syntax Error\nUnknown statement 'RUN'")

    # ---------------------------------------------------------------------- listings
    async def _exec_ShowStatement(self, stmt: ast.ShowStatement, props, session, seq) -> Result:
        from streamsql import describe

        return await describe.show(self, stmt, props, session)

    async def _exec_DescribeSource(self, stmt: ast.DescribeSource, props, session, seq) -> Result:
        from streamsql import describe

        runtime = None
        if stmt.extended:
            source = self.catalog.source(stmt.name)
            if source is not None:
                ids = [q.query_id for q in self.catalog.queries_reading(source.name)]
                ids += [q.query_id for q in self.catalog.queries_writing(source.name)
                        if q.query_id not in ids]
                runtime = [r for r in [await self.query_runtime(q) for q in ids] if r]
        return await describe.describe_source(self, stmt, runtime)

    def query_state(self, query_id: str) -> tuple[str, list[tuple[int, str]]]:
        """A persistent query's state on this node as ksqlDB names them (ERROR while one of
        its stages is failing and restarting, REBALANCING while partitions move, else the
        catalog's RUNNING) and its stages' last errors ((epoch ms, message), oldest first)."""
        runners = self.runners.get(query_id) or []
        states = {r.state for r in runners}
        errors = sorted(e for r in runners for e in r.errors)
        for state in ("ERROR", "REBALANCING"):
            if state in states:
                return state, errors
        info = self.catalog.queries.get(query_id)
        return (info.state if info is not None else "RUNNING"), errors

    async def query_runtime(self, query_id: str) -> dict[str, Any] | None:
        """Where a persistent query runs, read from the cluster: the partitions of its source
        each node is assigned (the consumer group's members), its lag (records of the source
        not yet committed) and this node's throughput."""
        runners = self.runners.get(query_id)
        if not runners:
            return None
        first = runners[0]
        members = await self.log.group_members(first.group)
        if members is None:
            members = {self.node_name: first.assignment()}
        lag = 0
        for topic in first.topics:
            committed = await self.log.committed(first.group, topic)
            begins = await self.log.begin_offsets(topic)
            for p, end in enumerate(await self.log.end_offsets(topic)):
                lag += max(end - committed.get(p, begins[p]), 0)
        return {"queryId": query_id,
                "partitionsByNode": {node: [f"{t}-{p}" for t, p in sorted(parts)]
                                     for node, parts in sorted(members.items())},
                "lag": lag,
                "localMessagesPerSec": round(first.messages_per_sec(), 1),
                "localProcessed": first.processed}

    async def _exec_DescribeSources(self, stmt: ast.DescribeSources, props, session, seq) -> Result:
        from streamsql import describe

        return await describe.describe_sources(self, stmt)

    async def _exec_DescribeFunction(self, stmt: ast.DescribeFunction, props, session, seq) -> Result:
        from streamsql import describe

        return describe.describe_function(self, stmt)

    async def _exec_Explain(self, stmt: ast.Explain, props, session, seq) -> Result:
        from streamsql import describe

        return describe.explain(self, stmt, props)

    # ----------------------------------------------------------------- transient queries
    async def _exec_QueryStatement(self, stmt: ast.QueryStatement, props, session, seq) -> Result:
        query = stmt.query
        plan = self._analyzer(props).analyze(query, None, persistent=False)
        columns = tuple(c.name for c in plan.key) + tuple(c.name for c in plan.value)
        if query.emit is None:
            rows, _ = self._pull_query(plan, query.limit)
            return Result(stmt.text, "rows", columns=columns, rows=rows)
        if isinstance(plan, JoinPlan):
            raise KsqlStatementException(
                "Push queries with JOIN are not supported yet: create the join with "
                "CREATE STREAM/TABLE ... AS SELECT and query it.")
        if isinstance(plan, AggregatePlan):
            raise KsqlStatementException(
                "Push queries with GROUP BY are not supported yet: create the table with "
                "CREATE TABLE ... AS SELECT and query it.")
        # The engine's default is 'earliest' (a session may SET 'auto.offset.reset'='latest').
        reset = str(props.get("auto.offset.reset", "earliest"))
        return Result(stmt.text, "stream", columns=columns,
                      stream=self._push_query(plan, reset, query.limit))

    async def pull(self, stmt: ast.QueryStatement, session: Session, partitions: set[int],
                   standby_lag: int | None = None) -> tuple[Result, set[int]]:
        """A pull query answered from this node's tasks of ``partitions`` only (in a cluster,
        the partitions the consumer group gives this node: see ``streamsql.server.cluster``),
        and which of them have no task open here (moved, or not restored yet). With
        ``standby_lag``, from this node's standby copies of those partitions instead, those
        within ``standby_lag`` changelog records of their active task's."""
        props = {**self.config, **session.properties}
        try:
            plan = self._analyzer(props).analyze(stmt.query, None, persistent=False)
            columns = tuple(c.name for c in plan.key) + tuple(c.name for c in plan.value)
            store = None
            if standby_lag is not None:
                store = await self._standby_view(plan.source, partitions, standby_lag)
            rows, missing = self._pull_query(plan, stmt.query.limit, partitions, store)
        except KsqlStatementException as exc:
            if not exc.statement:
                exc.statement = stmt.text
            raise
        return Result(stmt.text, "rows", columns=columns, rows=rows), missing

    async def _standby_view(self, source: DataSource, partitions: set[int], max_lag: int) -> Any:
        """The rows of table ``source`` that this node's standby tasks of ``partitions`` keep,
        of those within ``max_lag`` records of their changelogs' ends (ksqlDB's
        ``ksql.query.pull.max.allowed.offset.lag``), as a store pull queries read."""
        query_id = self.materializing(source.name)
        if query_id is None:
            return None
        runners = self.runners.get(query_id) or []
        standby = getattr(runners[-1].tasks, "standby", None) if runners else None
        view = self.queries[query_id].materialized.detached()
        if standby is not None:
            lags = await standby.lags()
            view.tasks = {p: standby.open[p] for p in partitions
                          if p in standby.open and lags.get(p, max_lag + 1) <= max_lag}
        return view

    def materializing(self, table: str) -> str | None:
        """The id of the query that materializes ``table`` (keeps the rows pull queries
        read); None when no query does."""
        for query_id, q in self.queries.items():
            if q.sink.name == table and q.materialized is not None:
                return query_id
        return None

    def _pull_query(self, plan: QueryPlan, limit: int | None, partitions: set[int] | None = None,
                    store: Any = None) -> tuple[list[tuple], set[int]]:
        """Rows of a materialized table, filtered and projected by ``plan`` (from the tasks
        of ``partitions`` only, when given; of ``store`` instead of the table's own when
        given), and the partitions of those with no open task."""
        source = plan.source
        if isinstance(plan, AggregatePlan):
            raise KsqlStatementException(
                "Pull queries don't support GROUP BY clauses: query the table the aggregation builds.")
        if not source.is_table:
            raise KsqlStatementException(
                f"Pull queries are not supported on streams: {source.name} is a stream. Use a push "
                f"query instead: SELECT ... FROM {source.name} EMIT CHANGES;")
        if store is None:
            query_id = self.materializing(source.name)
            store = self.queries[query_id].materialized if query_id is not None else None
        if store is None:
            raise KsqlStatementException(
                f"The {source.name} table isn't queryable: it is not materialized. Pull queries read "
                "tables built by CREATE TABLE ... AS SELECT. Query it with a push query "
                f"(SELECT ... FROM {source.name} EMIT CHANGES;), or make a queryable copy: "
                f"CREATE TABLE {source.name}_QUERYABLE AS SELECT * FROM {source.name};")
        missing: set[int] = set()
        if partitions is not None:
            missing = partitions - set(getattr(store, "tasks", partitions))
        # The pipeline applies the WHERE; a key lookup only narrows what it reads.
        key, rest = self._pull_key(source, plan.where)
        if key is not None and source.window is None:
            # An exact key read makes the key condition true: without it the plan (and its
            # generated pipeline, cached) is the same for every key.
            plan = replace(plan, where=rest)
        pipeline = self._pull_pipeline(plan)
        if key is None:
            rows: Any = table_rows(store, None, partitions)
        elif source.window is not None:
            rows = table_rows(store, key, partitions)  # the key's windows: key bytes || window
        else:
            found = table_row(store, key, partitions)
            rows = [(key, found[0], found[1])] if found is not None else []
        out = Outputs()
        batch = RecordBatch(source.topic, 0)
        # Chunks through the pipeline: nothing holds the whole table, LIMIT stops the read.
        for i, (k, value, ts) in enumerate(rows):
            batch.offsets.append(i)
            batch.keys.append(k)
            batch.values.append(value)
            batch.timestamps.append(ts)
            if len(batch.offsets) >= 1024:
                pipeline.process(batch, out)
                batch = RecordBatch(source.topic, 0)
                if limit is not None and len(out.rows) >= limit:
                    break
        else:
            if batch.offsets:
                pipeline.process(batch, out)
        return (out.rows[:limit] if limit is not None else out.rows), missing

    def _pull_pipeline(self, plan: QueryPlan) -> Any:
        """The row pipeline of a pull query's plan, generated once per distinct plan."""
        cache = self._pull_pipelines
        try:
            pipeline = cache.get(plan)
        except TypeError:  # an unhashable plan: not cached
            cache, pipeline = {}, None
        if pipeline is None:
            source = plan.source
            pipeline = build_pipeline(plan, self.registry, self.codec(source, "key"),
                                      self.codec(source, "value"), None, None,
                                      self._processing_logger("pull"), rows=True)
            if len(cache) >= 256:
                cache.pop(next(iter(cache)))
            cache[plan] = pipeline
        return pipeline

    def pull_partition(self, source: DataSource, where: e.Expression | None,
                       partitions: int) -> int | None:
        """The partition of its table's state that holds the row a pull query's WHERE pins
        (``key = literal``; Kafka's default partitioner over the key of the table's input
        records), when the query and the stage keeping the table say; else None."""
        key = self.pull_key(source, where)
        query_id = self.materializing(source.name)
        if key is None or query_id is None or partitions <= 0:
            return None
        decoded = self.codec(source, "key").decode(key)
        raw = self.queries[query_id].stages[-1].input_key(decoded) if decoded is not None else None
        return None if raw is None else (murmur2(raw) & 0x7FFFFFFF) % partitions

    def pull_key(self, source: DataSource, where: e.Expression | None) -> bytes | None:
        """The key bytes a pull query's WHERE pins (a key lookup: the rows it asks for are
        in one partition), or None (see ``_pull_key``)."""
        return self._pull_key(source, where)[0]

    def _pull_key(self, source: DataSource, where: e.Expression | None
                  ) -> tuple[bytes | None, e.Expression | None]:
        """The key bytes a pull query's WHERE pins (``key = literal``, alone or AND-ed with
        other conditions) for a single STRING or integer key column, and the WHERE without
        that condition; (None, where) otherwise."""
        if where is None or len(source.schema.key) != 1:
            return None, where
        col = source.schema.key[0]
        base = col.type.base
        if base is BaseType.STRING:
            wanted: tuple[type, ...] = (e.StringLiteral,)
        elif base in (BaseType.INTEGER, BaseType.BIGINT):
            wanted = (e.IntegerLiteral,)
        else:
            return None, where
        conjuncts: list[e.Expression] = []
        todo = [where]
        while todo:
            x = todo.pop()
            if isinstance(x, e.And):
                todo += [x.right, x.left]
            else:
                conjuncts.append(x)
        for i, x in enumerate(conjuncts):
            if not (isinstance(x, e.Comparison) and x.op == "="):
                continue
            for ref, lit in ((x.left, x.right), (x.right, x.left)):
                if isinstance(ref, e.ColumnRef) and ref.name == col.name and isinstance(lit, wanted):
                    try:
                        key = self.codec(source, "key").encode((lit.value,))
                    except Exception:  # noqa: BLE001 - fall back to a scan
                        return None, where
                    rest: e.Expression | None = None
                    for other in conjuncts[:i] + conjuncts[i + 1:]:
                        rest = other if rest is None else e.And(rest, other)
                    return key, rest
        return None, where

    async def _push_query(self, plan: QueryPlan, reset: str, limit: int | None) -> AsyncIterator[tuple]:
        pipeline = build_pipeline(plan, self.registry, self.codec(plan.source, "key"),
                                  self.codec(plan.source, "value"), None, None,
                                  self._processing_logger("transient"), rows=True,
                                  timestamp_parser=self._timestamp_parser(plan.source))
        topic = plan.source.topic
        if reset == "earliest":
            positions = await self.log.begin_offsets(topic)
        else:
            positions = await self.log.end_offsets(topic)
        out = Outputs()
        emitted = 0
        while True:
            got = False
            for p, off in enumerate(positions):
                batch = await self.log.fetch(topic, p, off, 1000)
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

    async def _exec_PrintTopic(self, stmt: ast.PrintTopic, props, session, seq) -> Result:
        from streamsql import describe

        return await describe.print_topic(self, stmt, props)

    async def _exec_PauseResumeQuery(self, stmt: ast.PauseResumeQuery, props, session, seq) -> Result:
        raise KsqlStatementException(f"{stmt.action} is not supported yet.")


def _text(s: str) -> str:
    """``s`` as valid UTF-8: a reason may quote the bad value itself (a lone surrogate), which
    would make the processing log's own record unwritable."""
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return s.encode("utf-8", "backslashreplace").decode("utf-8")


def _topic_config(properties: ast.Properties) -> dict[str, str] | None:
    """The config of a topic a statement creates: ksqlDB's ``RETENTION_MS`` as the topic's
    ``retention.ms`` (the log deletes older records), else the log's defaults."""
    retention = properties.get("RETENTION_MS")
    if retention is None:
        return None
    try:
        millis = int(retention)
    except (TypeError, ValueError):
        raise KsqlException(f"Invalid value {retention} for property RETENTION_MS: "
                            "Not a number of type BIGINT") from None
    return {"retention.ms": str(millis)}


def _check_internal_topic(name: str) -> None:
    """An internal topic's name is made of the query's id (from the sink's name): one that
    Kafka would refuse (too long) fails the statement while it is built, before it is run."""
    from streamsql.analyzer import check_topic_name

    check_topic_name(name, "\nThe query's internal topics are named after its sink: give the "
                           "stream or table a shorter name.")


def _now_ms() -> int:
    return int(time.time() * 1000)


def _insert_step(target: DataSource, step: Any, *args: Any) -> Any:
    """``step(*args)`` of INSERT VALUES: evaluating a value, converting it to its column's
    type, serializing the row. A value that cannot be computed (``1/0``), does not fit its
    column (a DECIMAL's precision) or its format fails the statement as ksqlDB's
    InsertValuesExecutor reports it: "Failed to insert values into 'S'. <why>"."""
    try:
        return step(*args)
    except StreamSqlError:
        raise
    except (ArithmeticError, ValueError) as exc:  # decimal.InvalidOperation, OverflowError too
        raise KsqlStatementException(f"Failed to insert values into '{target.name}'. {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    """An evaluation error as ksqlDB words it (Java's ArithmeticException for a division)."""
    if isinstance(exc, ZeroDivisionError):
        return "/ by zero"
    return str(exc) or type(exc).__name__


def _eval_constant(compiler: ExpressionCompiler, expr: e.Expression, c: Any = None) -> Any:
    """A constant expression's value (``c``: its code, if compiled already); a function that
    fails on it fails the statement (in a query it would give NULL and a processing-log entry;
    here there is no record to skip)."""
    c = c if c is not None else compiler.compile(expr)
    errors = compiler.env["_errs"]
    try:
        value = eval(c.src, compiler.env)  # noqa: S307 - generated from a constant expression
    except (ArithmeticError, ValueError) as exc:
        raise ValueError(f"Error evaluating expression {expr}: {_reason(exc)}") from None
    if errors:
        what, exc = errors[0]
        errors.clear()
        raise ValueError(f"Error evaluating expression {expr}: {what}: {_reason(exc)}")
    return value


class _NotCoercible(Exception):
    """An INSERT VALUES value that its column's type cannot take."""


def _coerce_value(compiler: ExpressionCompiler, expr: e.Expression, type_, name: str) -> Any:
    """An INSERT VALUES expression converted to its column's type (numeric widening, string
    literals for temporal columns), or a ksqlDB-style error."""
    from streamsql.casts import cast_function
    from streamsql.types import ArrayType, MapType, StructType, can_implicitly_cast

    c = compiler.compile(expr)
    value = _eval_constant(compiler, expr, c)

    def coerce(v: Any, src: Any, dst: Any) -> Any:
        # Literals are coerced inside collections too (STRUCT(c := 5) into STRUCT<c BIGINT>),
        # as ksqlDB's value coercer does: field by field, item by item.
        if v is None or src == dst:
            return v
        if isinstance(src, StructType) and isinstance(dst, StructType) and isinstance(v, dict):
            fields = {f.name: f.type for f in src.fields}
            out = {}
            for f in dst.fields:
                out[f.name] = coerce(v.get(f.name), fields[f.name], f.type) if f.name in fields else None
            if any(n not in out for n in fields):
                raise _NotCoercible
            return out
        if isinstance(src, ArrayType) and isinstance(dst, ArrayType) and isinstance(v, list):
            return [coerce(x, src.item, dst.item) for x in v]
        if isinstance(src, MapType) and isinstance(dst, MapType) and isinstance(v, dict):
            return {coerce(k, src.key, dst.key): coerce(x, src.value, dst.value) for k, x in v.items()}
        if can_implicitly_cast(src, dst) or (
                src.base is BaseType.STRING and dst.base in (BaseType.DATE, BaseType.TIME, BaseType.TIMESTAMP)) or (
                src.base is BaseType.DECIMAL and dst.base is BaseType.DECIMAL):
            fn = cast_function(src, dst)
            if fn is not None:
                return fn(v)
        raise _NotCoercible

    try:
        return coerce(value, c.type, type_)
    except _NotCoercible:
        raise KsqlStatementException(
            f"Expected type {type_} for field {name} but got {value!r}({c.type})") from None

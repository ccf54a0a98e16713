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

Two modes: ``service`` runs each stage of a persistent query as an asyncio task
(``StageRunner``, made by ``streamsql.exec.persistent``); ``test`` runs nothing by itself:
the test driver delivers records one at a time through ``Engine.subscribers`` (see
``streamsql.testing.driver``).

``Engine`` is the dispatcher: each statement type has a handler in ``streamsql.exec``, one
module per statement family (``streamsql.exec.HANDLERS``). The engine owns what the handlers
change and share: the catalog, the Log, the function registry, the config, the running
queries and their runners, the command log (start, replay, follow, record), and the services
the handlers and the runtime's stage builders use (codecs, state stores, internal topic
names, the processing log, timestamp parsers, which query materializes a table).
"""
from __future__ import annotations

import asyncio
import logging
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from streamsql import ast
from streamsql import expressions as e
from streamsql.analyzer import QueryAnalyzer, QueryPlan, analyze_create_source
from streamsql.catalog import Catalog, DataSource
from streamsql.errors import KsqlException, KsqlStatementException, QueryFailedError, StreamSqlError
from streamsql.exec import HANDLERS
from streamsql.exec import pull as pull_exec
from streamsql.formats.base import Codec, CodecContext
from streamsql.functions import default_registry
from streamsql.functions.registry import FunctionRegistry
from streamsql.results import Result
from streamsql.runtime.connect.worker import worker_for
from streamsql.runtime.log.base import Log, ProducerRecord, TopicExistsError
from streamsql.runtime.query import PersistentQuery, Stage, StageRunner
from streamsql.variables import substitute

log = logging.getLogger(__name__)

PROCESSING_LOG_TOPIC = "streamsql_processing_log"
PROCESSING_LOG_STREAM = "KSQL_PROCESSING_LOG"

DEFAULT_CONFIG: dict[str, Any] = {
    # ksqlDB's default: queries read what arrives after they start (SET it to
    # 'earliest' to read a topic from its start).
    "auto.offset.reset": "latest",
    # ksqlDB's default; its internal names append to it without a separator.
    "ksql.service.id": "default_",
    "processing.guarantee": "at_least_once",
    "ksql.persistence.default.format.key": "KAFKA",
}


def _streams_names(props: dict[str, Any]) -> dict[str, Any]:
    """``props`` with each ``ksql.streams.<name>`` also given as ``<name>`` (unless that is
    set beside it): ksqlDB's name for a Kafka Streams property, as clients send it
    (``ksql.streams.auto.offset.reset``), overrides the default of a layer below."""
    extra = {k[13:]: v for k, v in props.items()
             if k.startswith("ksql.streams.") and k[13:] not in props}
    return {**props, **extra} if extra else props


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
        # True while start() replays the command log: nothing is recorded again, and runners
        # wait in ``deferred_runners`` (started once the whole catalog is known).
        self.replaying = False
        self._codecs: dict[tuple, Codec] = {}
        self._source_codecs: dict[tuple[int, str], tuple[DataSource, Codec]] = {}
        # Processing errors waiting to be written to the processing-log topic (bounded).
        self._processing_errors: list[tuple[str, str, int, int, str]] = []
        # Processing errors so far by query id (the buffer above is emptied; GET /metrics reads this).
        self.processing_error_counts: dict[str, int] = {}
        # Service mode keeps query state in RocksDB under this directory: ``state_dir``, else
        # ``<data dir>/state`` of an on-disk embedded log; None keeps it in memory.
        self.state_dir = self._default_state_dir(state_dir)
        # Committed ends of topics written by exactly-once stages (read_committed readers).
        self.fences = OutputFences()
        # The RocksDB settings (one block cache) of every task of the engine, made with the
        # first stateful query (``streamsql.exec.persistent``).
        self.rocksdb_config: Any = None
        # Runners of queries replayed at start: started once the whole catalog is known.
        self.deferred_runners: list[StageRunner] = []
        # Running transient push aggregations by id (``streamsql.exec.push``): their state
        # is in memory, their internal topics and groups go when they end.
        self.transient_queries: dict[str, Any] = {}
        # Pull queries' generated pipelines by plan (a key lookup's plan without its key).
        self.pull_pipelines: dict[QueryPlan, Any] = {}
        self.pull_plans: dict[Any, Any] = {}  # (see streamsql.exec.pull._pull_plan)
        # The command topic: the next offset to apply, and who applies (one at a time).
        self._command_offset = 0
        self._command_lock = asyncio.Lock()
        self._follower: asyncio.Task[None] | None = None
        # Runs the connectors (CREATE SOURCE|SINK CONNECTOR) once the command log is replayed.
        self.connect_worker = worker_for(log_, self.config, self.schema_registry)

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
        if self.mode == "service" and not self.distributed:
            # The connectors' offsets are read (and a source batch a crash cut short settled:
            # ``streamsql.runtime.connect.exactly_once``) before any query reads a topic.
            await self.connect_worker.load()
        self.replaying = True
        try:
            async with self._command_lock:
                await self._apply_commands(replay=True)
        finally:
            self.replaying = False
            deferred, self.deferred_runners = self.deferred_runners, []
            for runner in deferred:
                runner.start()
        if self.mode == "service":
            await self.connect_worker.start()
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
        await self.connect_worker.close()
        for transient in list(self.transient_queries.values()):
            await transient.aclose()
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
        """Run one statement through its family's handler (``streamsql.exec.HANDLERS``)."""
        session = session or self.session
        props = {**_streams_names(self.config), **_streams_names(session.properties),
                 **_streams_names(properties or {})}
        handler = HANDLERS.get(type(stmt))
        if handler is None:
            raise KsqlStatementException(f"Unsupported statement: {stmt.text}", stmt.text)
        try:
            return await handler(self, stmt, props, session, seq)
        except KsqlStatementException as exc:
            if not exc.statement:
                exc.statement = stmt.text
            raise
        except KsqlException as exc:
            raise KsqlStatementException(str(exc), stmt.text) from exc
        finally:
            # Schemas registered by the statement are persisted before it returns.
            await self.schema_registry.flush()

    async def record_command(self, stmt: ast.Statement, props: dict[str, Any], seq: int | None) -> int:
        """Append a catalog-changing statement to the command log; returns its sequence."""
        if seq is not None:
            return seq
        self._query_counter += 1
        seq = self._query_counter
        if not self.replaying:
            overrides = {k: v for k, v in props.items() if k not in self.config or self.config[k] != v}
            payload = orjson.dumps({"seq": seq, "sql": stmt.text + ";", "properties": overrides,
                                    "node": self.node_id}, default=str)
            await self.log.produce(self.command_topic,
                                   [ProducerRecord(None, payload, _now_ms(), (), 0)])
        return seq

    def next_seq(self, seq: int | None) -> int:
        """The sequence number the next recorded command gets (its own, on replay)."""
        return seq if seq is not None else self._query_counter + 1

    # ------------------------------------------------------------------------- services
    def analyzer(self, props: dict[str, Any]) -> QueryAnalyzer:
        """An analyzer of queries over this engine's catalog and functions."""
        return QueryAnalyzer(self.catalog, self.registry, props)

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
        return await self.ensure_topic(name, partitions,
                                       config={"cleanup.policy": "delete", "retention.ms": "-1"})

    def internal_name(self, query_id: str) -> str:
        """The prefix of a query's internal topics and consumer groups, named as ksqlDB's
        ``_confluent-ksql-<service id>query_<query id>``: with the default service id
        ``default_``, ``_streamsql_default_query_<query id>``."""
        return f"_streamsql_{self.service_id}query_{query_id}"

    def state_in_memory(self, query_id: str) -> bool:
        """Whether query ``query_id`` keeps its state in memory: with no state directory
        (the test driver), and for transient queries (their state ends with them)."""
        return self.state_dir is None or query_id in self.transient_queries

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
        if self.state_in_memory(query_id):
            from streamsql.runtime.aggregate import MemorySessionStore, MemoryStore, MemoryWindowStore

            if kind == "window-aggregate" and retention_ms is not None:
                return MemoryWindowStore(retention_ms)
            if kind == "session-aggregate" and retention_ms is not None:
                return MemorySessionStore(retention_ms)
            return MemoryStore()
        from streamsql.runtime.task import make_store

        return make_store(name, kind, retention_ms)

    def codec(self, source: DataSource, which: str) -> Codec:
        from streamsql.formats.registry import get_format

        # By the source entry's identity first: a key lookup asks twice per request, and
        # the key below hashes the whole schema. (The entry holds the source: its id stays.)
        known = self._source_codecs.get((id(source), which))
        if known is not None:
            return known[1]
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
        if len(self._source_codecs) >= 1024:
            self._source_codecs.clear()
        self._source_codecs[(id(source), which)] = (source, c)
        return c

    async def ensure_topic(self, name: str, partitions: int, replicas: int = 1,
                           must_exist: bool = False, config: dict[str, str] | None = None) -> int:
        """The partitions of topic ``name``, created (with ``config``) when missing; with
        ``must_exist``, a missing topic and no partition count is an error unless the engine
        auto-creates topics (CREATE STREAM/TABLE over a topic)."""
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
        counts = self.processing_error_counts

        def plog(topic: str, partition: int, offset: int, reason: str) -> None:
            log.debug("processing error in %s at %s/%s@%s: %s", query_id, topic, partition, offset, reason)
            errors = self._processing_errors
            if len(errors) >= 10000:
                del errors[:5000]
            errors.append((query_id, topic, partition, offset, reason))
            counts[query_id] = counts.get(query_id, 0) + 1
        return plog

    async def _declare_processing_log(self) -> None:
        """The processing log is a stream users can query, like ksqlDB's KSQL_PROCESSING_LOG;
        it is built in, so it is declared at every start rather than in the command log."""
        from streamsql.parser import parse_statement

        await self.ensure_topic(PROCESSING_LOG_TOPIC, 1)
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
        await self.ensure_topic(PROCESSING_LOG_TOPIC, 1)
        await self.log.produce(PROCESSING_LOG_TOPIC, records)

    def _timestamp_parser(self, source: DataSource):
        if source.timestamp_column is None or source.timestamp_format is None:
            return None
        from streamsql.types import STRING
        resolved = self.registry.resolve("STRINGTOTIMESTAMP", [STRING, STRING])
        fn = resolved.implementation()
        fmt = source.timestamp_format
        if str(self.config.get("ksql.timestamp.throw.on.invalid", "false")).lower() != "true":
            return lambda value: fn(value, fmt)

        def fatal(value: Any) -> int:
            # ksqlDB's extractor rethrows, and Kafka Streams stops the query.
            try:
                return fn(value, fmt)
            except Exception as exc:
                raise QueryFailedError(
                    f"Fatal user code error in TimestampExtractor callback for record: {exc}") from exc
        return fatal

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

    # ----------------------------------------------------------------- running queries
    def materializing(self, table: str) -> str | None:
        """The id of the query that materializes ``table`` (keeps the rows pull queries
        read); None when no query does."""
        for query_id, q in self.queries.items():
            if q.sink.name == table and q.materialized is not None:
                return query_id
        return None

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

    # ------------------------------------------------------------------- pull queries
    # The REST layer's routing (``streamsql.server.cluster``) calls these; the code is in
    # ``streamsql.exec.pull``.
    async def pull(self, stmt: ast.QueryStatement, session: Session, partitions: set[int],
                   standby_lag: int | None = None) -> tuple[Result, set[int]]:
        """See ``streamsql.exec.pull.pull``."""
        return await pull_exec.pull(self, stmt, session, partitions, standby_lag)

    def pull_partition(self, source: DataSource, where: e.Expression | None,
                       partitions: int) -> int | None:
        """See ``streamsql.exec.pull.pull_partition``."""
        return pull_exec.pull_partition(self, source, where, partitions)

    def pull_key(self, source: DataSource, where: e.Expression | None) -> bytes | None:
        """See ``streamsql.exec.pull.pull_key``."""
        return pull_exec.pull_key(self, source, where)


def _text(s: str) -> str:
    """``s`` as valid UTF-8: a reason may quote the bad value itself (a lone surrogate), which
    would make the processing log's own record unwritable."""
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return s.encode("utf-8", "backslashreplace").decode("utf-8")


def _check_internal_topic(name: str) -> None:
    """An internal topic's name is made of the query's id (from the sink's name): one that
    Kafka would refuse (too long) fails the statement while it is built, before it is run."""
    from streamsql.analyzer import check_topic_name

    check_topic_name(name, "\nThe query's internal topics are named after its sink: give the "
                           "stream or table a shorter name.")


def _now_ms() -> int:
    return int(time.time() * 1000)

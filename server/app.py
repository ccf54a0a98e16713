"""The ksqlDB-compatible REST API as an ASGI application (served by hypercorn, see ``main``).

Endpoints (ksqlDB's paths, fields, status codes and error bodies):

``POST /ksql``            statements; one entity each (``currentStatus``, ``streams``, ...)
``POST /query``           one SELECT or PRINT, ksqlDB's original streaming format
``POST /query-stream``    one SELECT; delimited lines (default) or a JSON array; HTTP/1.1 or 2
``POST /close-query``     stop a push query by id
``POST /inserts-stream``  rows into a stream, acked one by one
``GET /info``, ``GET /healthcheck``, ``GET /clusterStatus``, ``GET /status[/{commandId}]``
``GET /metrics``          Prometheus' text format (``streamsql.server.metrics``)
``/schema-registry/...``  Confluent Schema Registry's API over the engine's registry
``GET /``, ``/console/...``  the web console (``streamsql.server.console``)

Statements of one ``/ksql`` request run in order, each substituted (``${var}``) and parsed
just before it runs, so a DEFINE applies to the statements after it. The first failing one
ends the request with a ``statement_error`` naming it (``statementText``) and listing the
entities of the statements before it, which stay applied. Statements that change the catalog
are serialized across requests (one lock); queries are not.

Per-request state is a fresh ``Session`` built from the body's ``streamsProperties`` and
``sessionVariables``: the REST API is stateless, as ksqlDB's is (its CLI, like our shell,
keeps SET and DEFINE on the client side and sends them along).
"""
from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qsl, unquote

import orjson

from streamsql import __version__, ast
from streamsql.errors import (AssertionFailedException, ParseError, ServiceRestError, StreamSqlError,
                              WriteFailedError)
from streamsql.masking import mask_message, mask_statement
from streamsql.parser import StatementLimits
from streamsql.server.auth import BasicAuth
from streamsql.server.cluster import (FORWARDED_HEADER, PARTITIONS_HEADER, STANDBY_HEADER,
                                      ClusterAnswer, PullUnavailable, active_standby_per_node,
                                      partitions_asked)
from streamsql.server.connect_api import ConnectApi, is_connect_path
from streamsql.server.console import Console
from streamsql.server.entities import command_id, statement_entity
from streamsql.server.errors import (
    ASSERTION_FAILED,
    METHOD_NOT_ALLOWED,
    QUERY_ENDPOINT,
    SERVER_ERROR,
    HttpError,
    bad_request,
    bad_statement,
    generic_error,
    not_found,
    statement_error,
    unauthorized,
)
from streamsql.server.http import Disconnected, Exchange, Receive, Send, parse_json_object
from streamsql.server.inserts import AckStream, ack, resolve_target, row_error
from streamsql.server.metrics import ServerMetrics
from streamsql.server.statements import StatementCache
from streamsql.variables import substitute
from streamsql.server.queries import (
    DelimitedWriter,
    JsonArrayWriter,
    PROTOBUF,
    LegacyWriter,
    PreparedQuery,
    PrintWriter,
    ProtobufWriter,
    PushQueries,
    Writer,
    new_query_id,
    send_pull,
    stream_push,
)

log = logging.getLogger(__name__)

KSQLDB_API_VERSION = "0.29.0"
_STREAMS_PREFIX = re.compile(r"^ksql\.streams\.")
# Properties a request may not override (ksqlDB's server setting of the same name).
_DENYLIST = "ksql.properties.overrides.denylist"
_QUERY_ENDPOINT_MESSAGE = ("The following statement types should be issued to the websocket endpoint "
                           "'/query':\n\t* PRINT\n\t* SELECT")


@dataclass(frozen=True)
class ServerSettings:
    """What the app needs to know about the node it runs on."""

    max_request_bytes: int = 10 * 1024 * 1024
    auth: BasicAuth | None = None
    advertised_url: str = "http://localhost:8088"
    schema_registry_prefix: str | None = "/schema-registry"
    cluster_id: str = "streamsql-embedded"


@functools.lru_cache(maxsize=16)
def _denylist(listed: str) -> frozenset[str]:
    """The names of a comma-separated denylist (read per request: kept per text)."""
    return frozenset(p.strip() for p in listed.split(",") if p.strip())


def split_text(text: str) -> list[str]:
    """The statements of a request, without their ``;`` (a last one may lack it)."""
    from streamsql.shell import split_statements, strip_comments

    body = text.strip().rstrip(";")
    if ";" not in body and "--" not in body and "/*" not in body:
        return [body.strip()] if body.strip() else []  # one statement: the common case
    pieces, rest = split_statements(text)
    if strip_comments(rest).strip():
        pieces.append(rest.strip())
    return pieces


class KsqlApp:
    """The ASGI application; see the module docstring."""

    def __init__(self, engine: Any, settings: ServerSettings | None = None, router: Any = None) -> None:
        self.engine = engine
        self.settings = settings or ServerSettings()
        # A PullRouter in a cluster (pull queries gather what other nodes hold), else None.
        self.router = router
        self.push_queries = PushQueries()
        self._ddl_lock = asyncio.Lock()
        self._seq = 0
        self._statuses: OrderedDict[str, dict[str, str]] = OrderedDict()
        self._schemas: dict[Any, tuple[tuple[tuple[Any, ...], int], tuple[Any, ...]]] = {}
        self._statements = StatementCache()
        # Kafka Connect's /connectors and /connector-plugins, on the ksqlDB listeners too.
        self.connect_api = ConnectApi(engine, self.settings.cluster_id, self.settings.max_request_bytes, router)
        self.metrics = ServerMetrics(engine)
        # The web console: its page at /, its assets and JSON endpoints under /console.
        self.console = Console(engine)
        self._routes: dict[str, tuple[str, Callable[[Exchange], Awaitable[None]]]] = {
            "/ksql": ("POST", self._ksql),
            "/ksql/terminate": ("POST", self._terminate_cluster),
            "/is_valid_property": ("GET", self._is_valid_property),
            "/query": ("POST", self._query),
            "/query-stream": ("POST", self._query_stream),
            "/close-query": ("POST", self._close_query),
            "/inserts-stream": ("POST", self._inserts_stream),
            "/info": ("GET", self._info),
            "/healthcheck": ("GET", self._healthcheck),
            "/clusterStatus": ("GET", self._cluster_status),
            "/status": ("GET", self._status),
            "/metrics": ("GET", self._metrics),
        }

    # ------------------------------------------------------------------------ ASGI entry
    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        ex = Exchange(scope, receive, send)
        try:
            await self._dispatch(ex)
        except HttpError as exc:
            if not ex.started:
                await ex.error(exc)
        except Disconnected:
            pass
        except Exception as exc:  # noqa: BLE001 - a request gets an answer, not a dropped socket
            log.exception("%s %s failed", ex.method, ex.path)
            if not ex.started:
                await ex.error(HttpError(500, generic_error(SERVER_ERROR, f"Internal error: {exc}")))
        finally:
            if ex.status:  # (0: the client left before any answer)
                self.metrics.request(self._endpoint(ex.path), ex.status)

    def _endpoint(self, raw: str) -> str:
        """The route a path belongs to, as the ``endpoint`` label of GET /metrics: a bounded
        set (``/status/{id}`` is ``/status``, unknown paths are ``other``)."""
        path = raw.rstrip("/") or "/"
        if path in self._routes:
            return path
        if is_connect_path(path):
            return "/" + path.split("/", 2)[1]  # /connectors or /connector-plugins
        if Console.handles(path):
            return "/console"
        prefix = self.settings.schema_registry_prefix
        if prefix and (path == prefix or path.startswith(prefix + "/")):
            return prefix
        for route in ("/status", "/is_valid_property"):
            if path.startswith(route + "/"):
                return route
        return "other"

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.push_queries.close_all()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _dispatch(self, ex: Exchange) -> None:
        auth = self.settings.auth
        if auth is not None and auth.check(ex.headers.get(b"authorization")) is None:
            raise unauthorized()
        path = ex.path.rstrip("/") or "/"
        if is_connect_path(path):
            await self.connect_api.handle(ex)
            return
        if Console.handles(path):
            await self.console.handle(ex, path)
            return
        prefix = self.settings.schema_registry_prefix
        if prefix and (path == prefix or path.startswith(prefix + "/")):
            await self._schema_registry(ex, path[len(prefix):] or "/")
            return
        route = self._routes.get(path)
        if route is None and path.startswith("/status/"):
            route = self._routes["/status"]
        if route is None and path.startswith("/is_valid_property/"):
            route = self._routes["/is_valid_property"]
        if route is None:
            raise not_found(f"Unknown endpoint: {ex.method} {ex.path}")
        method, handler = route
        if ex.method != method:
            raise HttpError(405, generic_error(METHOD_NOT_ALLOWED,
                                               f"Method {ex.method} is not allowed on {path}; use {method}"),
                            ((b"allow", method.encode()),))
        await handler(ex)

    # -------------------------------------------------------------------------- helpers
    def _session(self, body: dict[str, Any], props_key: str) -> Any:
        from streamsql.engine import Session

        props = body.get(props_key)
        variables = body.get("sessionVariables")
        if props is not None and not isinstance(props, dict):
            raise bad_request(f"Invalid JSON in request: '{props_key}' must be an object")
        if variables is not None and not isinstance(variables, dict):
            raise bad_request("Invalid JSON in request: 'sessionVariables' must be an object")
        session = Session()
        session.properties = {}
        denied = self._denied_overrides()
        for key, value in (props or {}).items():
            if denied and (str(key) in denied or _STREAMS_PREFIX.sub("", str(key)) in denied):
                raise bad_request(f"Cannot override property '{key}'")
            # ksqlDB passes 'ksql.streams.X' to Kafka Streams as X (auto.offset.reset, ...).
            session.properties[_STREAMS_PREFIX.sub("", str(key))] = value
        session.variables = {str(k): str(v) for k, v in (variables or {}).items()}
        return session

    def _denied_overrides(self) -> frozenset[str]:
        """The properties no request may set (``ksql.properties.overrides.denylist``)."""
        return _denylist(str(self.engine.config.get(_DENYLIST) or ""))

    def _text(self, body: dict[str, Any], key: str) -> str:
        text = body.get(key)
        if not isinstance(text, str) or not text.strip():
            raise bad_request(f"No {key} in arguments" if key == "sql" else f"Request has no '{key}' statement text")
        return text

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _record_status(self, cmd: str, message: str) -> None:
        self._statuses[cmd] = {"status": "SUCCESS", "message": message}
        self._statuses.move_to_end(cmd)
        while len(self._statuses) > 1000:
            self._statuses.popitem(last=False)

    # ------------------------------------------------------------------------------ /ksql
    async def _ksql(self, ex: Exchange) -> None:
        body = await ex.json_body(self.settings.max_request_bytes)
        text = self._text(body, "ksql")
        session = self._session(body, "streamsProperties")
        entities: list[dict[str, Any]] = []
        for piece in split_text(text):
            shown = mask_statement(piece) + ";"  # (a connector's secrets: ksqlDB's QueryMask)
            try:
                stmt = _parse(substitute(piece, session.variables), self.engine.config)
            except ParseError as exc:
                raise bad_statement(mask_message(str(exc), piece), shown, entities) from None
            if isinstance(stmt, (ast.QueryStatement, ast.PrintTopic)):
                raise HttpError(400, statement_error(_QUERY_ENDPOINT_MESSAGE, shown, entities, QUERY_ENDPOINT))
            entity = await self._run_statement(stmt, shown, session, entities)
            if entity is not None:
                entities.append(entity)
        await ex.json(200, entities)

    async def _run_statement(self, stmt: ast.Statement, shown: str, session: Any,
                             entities: list[dict[str, Any]]) -> dict[str, Any] | None:
        cmd = command_id(stmt)
        if isinstance(stmt, ast.InsertValues):
            shown = masked_insert(stmt)  # an error must not echo the values (ksqlDB's QueryMask)
        if isinstance(stmt, ast.TerminateQuery) and stmt.query_id is not None \
                and self.push_queries.close(stmt.query_id):
            # ksqlDB's TERMINATE also stops a transient (push) query.
            return statement_entity(_terminated(stmt), stmt, self._seq)
        try:
            if cmd is None:
                result = await self.engine.execute_statement(stmt, None, session)
            else:
                async with self._ddl_lock:
                    result = await self.engine.execute_statement(stmt, None, session)
        except WriteFailedError as exc:  # nothing written: the server's trouble, not the statement's
            raise HttpError(503, statement_error(str(exc), shown, entities, SERVER_ERROR)) from None
        except AssertionFailedException as exc:  # ksqlDB's Errors.assertionFailedError
            raise HttpError(417, statement_error(str(exc), shown, entities, ASSERTION_FAILED)) from None
        except ServiceRestError as exc:  # ksqlDB's KsqlRestException: the service's own status
            raise HttpError(exc.status, generic_error(exc.status * 100, str(exc))) from None
        except StreamSqlError as exc:
            raise bad_statement(str(exc), shown, entities) from None
        except Exception as exc:  # an engine bug: still say which statement and keep the rest
            log.exception("statement failed: %s", shown)
            raise HttpError(500, statement_error(f"Internal error: {type(exc).__name__}: {exc}", shown,
                                                 entities, SERVER_ERROR)) from None
        seq = self._next_seq() if cmd is not None else self._seq
        entity = statement_entity(result, stmt, seq)
        if cmd is not None:
            self._record_status(cmd, result.message or "")
        if entity is not None and entity.get("@type") == "queries":
            entity["queries"] = list(entity.get("queries", [])) + self.push_queries.entities()
        return entity

    # --------------------------------------------------------------------------- queries
    async def _prepare(self, text: str, session: Any, ex: Exchange) -> PreparedQuery:
        pieces = split_text(text)
        if len(pieces) != 1:
            raise bad_statement(f"Expected exactly one KSQL statement; found {len(pieces)} instead", text)
        shown = pieces[0] + ";"
        try:
            stmt = self._statements.parse(substitute(pieces[0], session.variables),
                                          StatementLimits.from_config(self.engine.config))
        except ParseError as exc:
            raise bad_statement(str(exc), shown) from None
        if isinstance(stmt, ast.PrintTopic):
            result = await self._execute_query(stmt, shown, session)
            return PreparedQuery(stmt, result, new_query_id(None, True), ("PRINT",), (), 0, is_print=True)
        if not isinstance(stmt, ast.QueryStatement):
            raise bad_statement(f"Statement type `{type(stmt).__name__}' not supported for this resource", shown)
        clustered = None
        if self.router is not None and stmt.query.emit is None:
            clustered = await self._cluster_pull(stmt, shown, session, ex)
        result = clustered.result if clustered is not None else await self._execute_query(stmt, shown, session)
        try:
            types, keys = self._query_types(stmt, session)
        except Exception:
            if result.stream is not None:
                await result.stream.aclose()  # type: ignore[attr-defined]
            raise
        source = _source_name(stmt.query)
        push = result.kind == "stream"
        # (A push aggregation runs under the id the engine gave it: its groups and topics.)
        query_id = result.query_id if push and result.query_id else new_query_id(source, push)
        query = PreparedQuery(stmt, result, query_id, tuple(result.columns), types, keys)
        if clustered is not None:
            query.remote_rows = clustered.remote_rows
            query.missing = clustered.missing
        return query

    async def _cluster_pull(self, stmt: ast.QueryStatement, shown: str, session: Any,
                            ex: Exchange) -> ClusterAnswer | None:
        """A pull query in a cluster: from every partition of the table (``PullRouter``), or,
        forwarded by another node, from the partitions it asks this node for (an error line
        names those not open here). None: answered locally as usual."""
        try:
            if FORWARDED_HEADER.encode() not in ex.headers:
                return await self.router.answer(stmt, session, ex.headers.get(b"authorization"))
            asked = partitions_asked(ex.headers.get(PARTITIONS_HEADER.encode()))
            if asked is None:
                return None
            lag = ex.headers.get(STANDBY_HEADER.encode())
            result, not_open = await self.engine.pull(stmt, session, asked,
                                                      standby_lag=int(lag) if lag else None)
        except StreamSqlError as exc:
            raise bad_statement(str(exc), shown) from None
        except PullUnavailable as exc:
            raise HttpError(503, statement_error(str(exc), shown, error_code=SERVER_ERROR)) from None
        missing = None
        if not_open:
            missing = (f"partitions {', '.join(map(str, sorted(not_open)))} are not open on node "
                       f"{self.engine.node_name}" if not lag else
                       f"partitions {', '.join(map(str, sorted(not_open)))} have no standby copy "
                       f"within {int(lag)} records of their active on node {self.engine.node_name}")
        return ClusterAnswer(result, [], missing)

    async def _execute_query(self, stmt: ast.Statement, shown: str, session: Any) -> Any:
        try:
            return await self.engine.execute_statement(stmt, None, session)
        except StreamSqlError as exc:
            raise bad_statement(str(exc), shown) from None

    def _query_types(self, stmt: ast.QueryStatement, session: Any) -> tuple[tuple[Any, ...], int]:
        """The result columns' types and the number of key columns. The analysis depends only
        on the projection and the sources (not on WHERE or LIMIT), so it is cached by those
        and by the identity of the sources' catalog entries (a replaced or re-created source,
        by any node, is a new entry): key lookups that differ only by key reuse it. The
        projection and relation are keyed by identity too (the statement cache hands every
        query of one template the same objects; hashing them cost more than the lookup's
        read): the entry holds them, so their ids stay theirs while it is cached."""
        from streamsql.analyzer import QueryAnalyzer, select_columns

        q = stmt.query
        sources = tuple(self.engine.catalog.source(n) for n in _source_names(q.from_))
        cache_key = (tuple(id(s) for s in sources), id(q.select), id(q.from_), q.window, q.group_by,
                     q.partition_by, q.emit, tuple(sorted(session.properties.items())))
        try:
            found = self._schemas.get(cache_key)
        except TypeError:  # something unhashable in the statement: no caching
            cache_key, found = None, None
        if found is not None:
            return found[0]
        props = {**self.engine.config, **session.properties}
        plan = QueryAnalyzer(self.engine.catalog, self.engine.registry, props).analyze(q, None, persistent=False)
        # (a pull query over a stream shows its columns as a push query does)
        if q.emit is None and getattr(getattr(plan, "source", None), "is_table", True):
            types = (tuple(c.type for c in plan.key) + tuple(c.type for c in plan.value), len(plan.key))
        else:  # a push query's columns, in SELECT order, none marked KEY (ksqlDB's header)
            types = (tuple(c.type for c in select_columns(plan)), 0)
        if cache_key is not None:
            if len(self._schemas) >= 512:
                self._schemas.clear()
            # The entry holds the sources, so their ids stay theirs while it is cached.
            self._schemas[cache_key] = (types, (sources, q.select, q.from_))
        return types

    async def _answer_query(self, ex: Exchange, query: PreparedQuery, writer: Writer) -> None:
        if query.push:
            await stream_push(ex, query, writer, self.push_queries)
        else:
            await send_pull(ex, query, writer)

    async def _query(self, ex: Exchange) -> None:
        t0 = time.perf_counter()
        body = await ex.json_body(self.settings.max_request_bytes)
        text = self._text(body, "ksql")
        session = self._session(body, "streamsProperties")
        query = await self._prepare(text, session, ex=ex)
        if query.is_print:
            writer: Writer = PrintWriter()
        else:
            writer = _protobuf_writer(ex, query) or LegacyWriter()
        await self._answer_query(ex, query, writer)
        self._observe_pull(query, t0)

    def _observe_pull(self, query: PreparedQuery, t0: float) -> None:
        """A pull query answered (all its rows sent): into the latency histogram."""
        if not query.push and not query.is_print:
            self.metrics.pull_latency.observe(time.perf_counter() - t0)

    async def _query_stream(self, ex: Exchange) -> None:
        t0 = time.perf_counter()
        body = await ex.json_body(self.settings.max_request_bytes)
        text = self._text(body, "sql")
        session = self._session(body, "properties")
        query = await self._prepare(text, session, ex=ex)
        if query.is_print:  # PRINT's lines, as on /query
            await self._answer_query(ex, query, PrintWriter())
            return
        accept = ex.headers.get(b"accept", b"")
        json_array = b"application/json" in accept and b"delimited" not in accept
        writer = _protobuf_writer(ex, query) or (JsonArrayWriter() if json_array else DelimitedWriter())
        await self._answer_query(ex, query, writer)
        self._observe_pull(query, t0)

    async def _close_query(self, ex: Exchange) -> None:
        body = await ex.json_body(self.settings.max_request_bytes)
        query_id = body.get("queryId")
        if not isinstance(query_id, str) or not query_id:
            raise bad_request("No queryId in arguments")
        if not self.push_queries.close(query_id):
            raise bad_request(f"No query with id {query_id}")
        await ex.respond(200, b"")

    # -------------------------------------------------------------------- inserts-stream
    async def _inserts_stream(self, ex: Exchange) -> None:
        limit = self.settings.max_request_bytes
        accept = ex.headers.get(b"accept", b"")
        acks = AckStream(ex, b"application/json" in accept and b"delimited" not in accept)
        buffer = b""
        target = None
        seq = 0
        more = True
        while more:
            message = await ex.receive()
            if message["type"] == "http.disconnect":
                return
            buffer += message.get("body", b"")
            more = message.get("more_body", False)
            lines = buffer.split(b"\n")
            buffer = lines.pop() if more else b""
            if len(buffer) > limit:
                raise_or_end = _too_large_line(limit)
                if not ex.started:
                    raise raise_or_end
                await acks.end(row_error(seq, raise_or_end.body["message"]))
                return
            records = []
            for line in lines:
                if not line.strip():
                    continue
                if target is None:
                    target = resolve_target(self.engine, parse_json_object(line))
                    await ex.start(200, acks.content_type)
                    continue
                try:
                    records.append(target.record_of(line))
                except (ValueError, StreamSqlError) as exc:
                    failed = await self._produce(target, records)
                    if failed is not None:
                        await acks.end(row_error(seq, failed, SERVER_ERROR))
                        return
                    written = b"".join(ack(s) for s in range(seq, seq + len(records)))
                    await acks.end(written + row_error(seq + len(records), str(exc)))
                    return
            if records:
                failed = await self._produce(target, records)
                if failed is not None:
                    await acks.end(row_error(seq, failed, SERVER_ERROR))
                    return
                await acks.send(b"".join(ack(s) for s in range(seq, seq + len(records))))
                seq += len(records)
        if target is None:
            raise bad_request("No target in arguments")
        await acks.end()

    async def _produce(self, target: Any, records: list[Any]) -> str | None:
        """Produce rows; returns why the write failed (then none of them was written), to be
        answered as an error for the first of them: never an ack for a row that is not in
        the log, and never a silently ended response."""
        if records:
            try:
                await self.engine.log.produce(target.topic, records)
            except OSError as exc:
                log.warning("inserts-stream into %s: write failed: %s", target.source.name, exc)
                return (f"Failed to insert values into '{target.source.name}'. "
                        f"{exc.strerror or exc}")
        return None

    # ---------------------------------------------------------------------- server info
    async def _info(self, ex: Exchange) -> None:
        await ex.json(200, {"KsqlServerInfo": {
            "version": KSQLDB_API_VERSION, "kafkaClusterId": self.settings.cluster_id,
            "ksqlServiceId": str(self.engine.config.get("ksql.service.id", "default_")),
            "serverStatus": "RUNNING", "streamsqlVersion": __version__}})

    async def _healthcheck(self, ex: Exchange) -> None:
        try:
            await asyncio.wait_for(self.engine.log.list_topics(), 5)
            log_ok = True
        except Exception:  # noqa: BLE001 - any failure to reach the log is "unhealthy"
            log.warning("health check: the log is unreachable", exc_info=True)
            log_ok = False
        body = {"isHealthy": log_ok, "details": {
            "metastore": {"isHealthy": True}, "kafka": {"isHealthy": log_ok},
            "commandRunner": {"isHealthy": True}}}
        await ex.json(200 if log_ok else 503, body)

    async def _cluster_status(self, ex: Exchange) -> None:
        if self.router is not None:
            await ex.json(200, await self.router.cluster_status())
            return
        now = int(time.time() * 1000)
        host = self.settings.advertised_url.split("://", 1)[-1]
        # One node: every group member is this node (the embedded log's is "local").
        per_query: dict[str, Any] = {}
        for queries in (await active_standby_per_node(self.engine)).values():
            per_query.update(queries)
        await ex.json(200, {"clusterStatus": {host: {
            "hostAlive": True, "lastStatusUpdateMs": now,
            "activeStandbyPerQuery": per_query, "hostStoreLags": {"stateStoreLags": {}, "updateTimeMs": now}}}})

    async def _status(self, ex: Exchange) -> None:
        if ex.path.rstrip("/") == "/status":
            await ex.json(200, {"commandStatuses": {k: v["status"] for k, v in self._statuses.items()}})
            return
        cmd = ex.path[len("/status/"):]
        status = self._statuses.get(cmd)
        if status is None:
            raise not_found(f"Command not found: {cmd}")
        await ex.json(200, status)

    async def _metrics(self, ex: Exchange) -> None:
        """``GET /metrics``: see ``streamsql.server.metrics`` (on the engine's loop, whose
        objects the collector reads)."""
        from prometheus_client import CONTENT_TYPE_LATEST

        await ex.respond(200, self.metrics.render(), CONTENT_TYPE_LATEST.encode())

    async def _is_valid_property(self, ex: Exchange) -> None:
        """ksqlDB's CLI asks before each SET whether the server lets a request override the
        property: any may, but those of ``ksql.properties.overrides.denylist``."""
        name = unquote(ex.path.rstrip("/")[len("/is_valid_property/"):])
        if not name:
            raise not_found(f"Unknown endpoint: {ex.method} {ex.path}")
        denied = self._denied_overrides()
        if _STREAMS_PREFIX.sub("", name) in denied or name in denied:
            raise bad_request(f"Cannot override property '{name}'")
        await ex.json(200, True)

    async def _terminate_cluster(self, ex: Exchange) -> None:
        """``POST /ksql/terminate``: ksqlDB's cluster termination. Every persistent query is
        terminated (its state and internal topics deleted), every stream and table dropped,
        and the topics of those whose topic matches a regular expression of
        ``deleteTopicList`` deleted. The server keeps running, empty."""
        raw = await ex.body(self.settings.max_request_bytes)
        patterns = parse_json_object(raw).get("deleteTopicList", []) if raw.strip() else []
        if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
            raise bad_request("Invalid JSON in request: 'deleteTopicList' must be a list of strings")
        try:
            compiled = [re.compile(p) for p in patterns]
        except re.error as exc:
            raise bad_request(f"Invalid pattern in deleteTopicList: {exc}") from None
        async with self._ddl_lock:
            engine = self.engine
            if engine.catalog.queries:
                await engine.execute("TERMINATE ALL;")
            for name, source in list(engine.catalog.sources.items()):
                delete = not source.is_source and any(c.fullmatch(source.topic) for c in compiled)
                kind = "TABLE" if source.is_table else "STREAM"
                quoted = name.replace("`", "``")
                await engine.execute(f"DROP {kind} `{quoted}`{' DELETE TOPIC' if delete else ''};")
        seq = self._next_seq()
        self._record_status("cluster/TERMINATE/CLUSTER", "Cluster terminated.")
        await ex.json(200, [{"@type": "currentStatus", "statementText": "TERMINATE CLUSTER;",
                             "commandId": "cluster/TERMINATE/CLUSTER",
                             "commandStatus": {"status": "SUCCESS", "message": "Cluster terminated.",
                                               "queryId": None},
                             "commandSequenceNumber": seq, "warnings": []}])

    # -------------------------------------------------------------------- schema registry
    async def _schema_registry(self, ex: Exchange, path: str) -> None:
        from streamsql.schemaregistry import rest

        raw = await ex.body(self.settings.max_request_bytes)
        try:
            body = orjson.loads(raw) if raw.strip() else None
        except orjson.JSONDecodeError as exc:
            await ex.respond(400, orjson.dumps({"error_code": 400, "message": f"Unexpected character: {exc}"}),
                             rest.CONTENT_TYPE.encode())
            return
        query = dict(parse_qsl(ex.scope.get("query_string", b"").decode("latin-1")))
        registry = self.engine.schema_registry
        status, out = rest.handle(registry, ex.method, path, query, body)
        if ex.method in ("POST", "PUT", "DELETE") and status < 300:
            await registry.flush()  # acknowledged only once it is in the registry's topic
        await ex.respond(status, orjson.dumps(out), rest.CONTENT_TYPE.encode())


def _protobuf_writer(ex: Exchange, query: PreparedQuery) -> Writer | None:
    """ksqlDB's protobuf answer (``Accept: application/vnd.ksql.v1+protobuf``, on ``/query``
    and ``/query-stream`` alike: a JSON array of a header with the ``protoSchema`` and rows of
    ``protobufBytes``), for a pull query; None when not asked for or not a pull query."""
    if query.push or PROTOBUF not in ex.headers.get(b"accept", b""):
        return None
    try:
        return ProtobufWriter(query)
    except StreamSqlError as exc:  # a column protobuf cannot hold
        raise bad_statement(str(exc), query.stmt.text + ";") from None


def _parse(text: str, config: dict[str, Any]) -> ast.Statement:
    from streamsql.parser import parse_statement

    return parse_statement(text, StatementLimits.from_config(config))


def masked_insert(stmt: ast.InsertValues) -> str:
    """An INSERT VALUES as ksqlDB shows it in an error: names quoted, every value masked
    (values may be personal data; the statement text goes to clients and logs)."""
    def quoted(name: str) -> str:
        return "`" + name.replace("`", "``") + "`"

    columns = f" ({', '.join(quoted(c) for c in stmt.columns)})" if stmt.columns else ""
    values = ", ".join("'[value]'" for _ in stmt.values)
    return f"INSERT INTO {quoted(stmt.target)}{columns} VALUES ({values});"


def _source_name(query: ast.Query) -> str | None:
    rel = query.from_
    return rel.name if isinstance(rel, ast.AliasedRelation) else None


def _source_names(rel: ast.Relation) -> list[str]:
    if isinstance(rel, ast.AliasedRelation):
        return [rel.name]
    if isinstance(rel, ast.Join):
        return [rel.left.name] + [j.right.name for j in rel.joins]
    return []


def _terminated(stmt: ast.TerminateQuery) -> Any:
    from streamsql.results import Result

    return Result(stmt.text, "currentStatus", "Query terminated.", query_id=stmt.query_id)


def _too_large_line(limit: int) -> HttpError:
    return bad_request(f"A row of the request is larger than the server's limit of {limit} bytes")

"""Pull and push queries over HTTP: ``/query`` (ksqlDB's original streaming format) and
``/query-stream`` (the newer one: delimited lines or a JSON array).

A query request runs one SELECT (or, on ``/query``, one PRINT). A pull query answers with a
header and all its rows; a push query streams rows until its LIMIT, until the client goes
away, or until ``/close-query`` (or TERMINATE) names it. Each running push query is in the
``PushQueries`` registry while it runs; whatever ends it, the engine's row iterator is closed
(its fetch loop stops and nothing it held stays referenced).

Wire formats (ksqlDB's):

* ``/query``: ``[{"header":{"queryId":..,"schema":"`ID` STRING KEY, ..."}}`` then
  ``,\\n{"row":{"columns":[...]}}`` per row, ``,\\n{"finalMessage":"Limit Reached"}`` at a LIMIT,
  ``,\\n{"errorMessage":{...}}`` on failure, and ``]``: a valid JSON array once complete.
* ``/query-stream`` delimited (``application/vnd.ksqlapi.delimited.v1``, the default):
  ``{"queryId":..,"columnNames":[..],"columnTypes":[..]}`` then one JSON array per row, one
  per line; an error is a ``generic_error`` object line.
* ``/query-stream`` JSON (``Accept: application/json``): ``[{header},[row],...]``.
* ``/query`` with ``Accept: application/vnd.ksql.v1+protobuf``, for pull queries (ksqlDB
  0.29): as ``/query`` but the header also has ``protoSchema`` and rows are
  ``{"row":{"protobufBytes":"<base64>"}}`` (``streamsql.server.protobuf_rows``).
"""
from __future__ import annotations

import asyncio
import base64
import itertools
import json
import logging
import random
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, AsyncIterator, Callable, Sequence

import orjson

from streamsql import ast
from streamsql.casts import parse_date, parse_time, parse_timestamp
from streamsql.results import Result, Tombstone
from streamsql.server.entities import RowEncoder, schema_text
from streamsql.server.errors import SERVER_ERROR, generic_error
from streamsql.server.http import Disconnected, Exchange, first_done
from streamsql.server.protobuf_rows import RowMessages
from streamsql.types import ArrayType, BaseType, MapType, SqlType, StructType

log = logging.getLogger(__name__)

DELIMITED = b"application/vnd.ksqlapi.delimited.v1"
PROTOBUF = b"application/vnd.ksql.v1+protobuf"


# =============================================================================== writers
class Writer:
    """How one endpoint frames a query's header, rows, end and errors."""

    content_type = b"application/json"

    def header(self, query: "PreparedQuery") -> bytes:
        raise NotImplementedError

    def row(self, data: bytes) -> bytes:
        raise NotImplementedError

    def tombstone(self, data: bytes) -> bytes:
        """A push query's row saying a table's row was deleted (a plain row but on /query)."""
        return self.row(data)

    def limit_reached(self) -> bytes:
        return b""

    def final_message(self, message: str) -> bytes:
        """How a bounded query (a pull query over a stream) ended (only /query says)."""
        return b""

    def failure(self, message: str) -> bytes:
        raise NotImplementedError

    def end(self) -> bytes:
        return b""

    def pull_rows(self, query: "PreparedQuery") -> Callable[[Sequence[Any]], bytes]:
        """How a pull query's local rows (values) are written."""
        encoder = RowEncoder(query.types)
        return lambda row: self.row(encoder.encode(row))

    def remote_row(self, query: "PreparedQuery", data: bytes) -> bytes:
        """A row another node of the cluster sent (a JSON array)."""
        return self.row(data)


class LegacyWriter(Writer):
    """``/query``: ksqlDB's StreamedRow objects in one JSON array."""

    def header(self, query: "PreparedQuery") -> bytes:
        return b'[{"header":' + orjson.dumps(
            {"queryId": query.query_id, "schema": schema_text(query.columns, query.types, query.keys)}) + b"}"

    def row(self, data: bytes) -> bytes:
        return b',\n{"row":{"columns":' + data + b"}}"

    def tombstone(self, data: bytes) -> bytes:
        return b',\n{"row":{"columns":' + data + b',"tombstone":true}}'

    def limit_reached(self) -> bytes:
        return b',\n{"finalMessage":"Limit Reached"}'

    def final_message(self, message: str) -> bytes:
        return b',\n{"finalMessage":' + orjson.dumps(message) + b"}"

    def failure(self, message: str) -> bytes:
        return b',\n{"errorMessage":' + orjson.dumps(generic_error(SERVER_ERROR, message)) + b"}"

    def end(self) -> bytes:
        return b"]\n"


class ProtobufWriter(LegacyWriter):
    """``/query`` answering a pull query as ``application/vnd.ksql.v1+protobuf``: ksqlDB's
    StreamedRow array with the rows as protobuf messages of the header's ``protoSchema``."""

    content_type = PROTOBUF

    def __init__(self, query: "PreparedQuery") -> None:
        self.messages = RowMessages(query.columns, query.types)

    def header(self, query: "PreparedQuery") -> bytes:
        return b'[{"header":' + orjson.dumps(
            {"queryId": query.query_id, "schema": schema_text(query.columns, query.types, query.keys),
             "protoSchema": self.messages.schema}) + b"}"

    def pull_rows(self, query: "PreparedQuery") -> Callable[[Sequence[Any]], bytes]:
        encode = self.messages.encode
        return lambda row: (b',\n{"row":{"protobufBytes":"' + base64.b64encode(encode(row)) + b'"}}')

    def remote_row(self, query: "PreparedQuery", data: bytes) -> bytes:
        values = json.loads(data, parse_float=Decimal)
        return self.pull_rows(query)(tuple(map(_from_json, query.types, values)))


def _from_json(t: SqlType, v: Any) -> Any:
    """A value of ``t`` as the JSON of a row has it (``RowEncoder``) back to the engine's form."""
    if v is None:
        return None
    if t.base is BaseType.DOUBLE:
        return float(v)
    if t.base in _PARSE_TEMPORAL:
        return _PARSE_TEMPORAL[t.base](v)
    if t.base is BaseType.BYTES:
        return base64.b64decode(v)
    if isinstance(t, ArrayType):
        return [_from_json(t.item, x) for x in v]
    if isinstance(t, MapType):
        return {k: _from_json(t.value, x) for k, x in v.items()}
    if isinstance(t, StructType):
        return {f.name: _from_json(f.type, v.get(f.name)) for f in t.fields}
    return v


_PARSE_TEMPORAL = {BaseType.TIMESTAMP: parse_timestamp, BaseType.DATE: parse_date, BaseType.TIME: parse_time}


class DelimitedWriter(Writer):
    """``/query-stream`` as ``application/vnd.ksqlapi.delimited.v1``: one JSON value a line."""

    content_type = DELIMITED

    def header(self, query: "PreparedQuery") -> bytes:
        return orjson.dumps(query.header_json()) + b"\n"

    def row(self, data: bytes) -> bytes:
        return data + b"\n"

    def failure(self, message: str) -> bytes:
        return orjson.dumps(generic_error(SERVER_ERROR, message)) + b"\n"


class JsonArrayWriter(Writer):
    """``/query-stream`` as ``application/json``: ``[header, row, row, ...]``."""

    def header(self, query: "PreparedQuery") -> bytes:
        return b"[" + orjson.dumps(query.header_json())

    def row(self, data: bytes) -> bytes:
        return b"," + data

    def failure(self, message: str) -> bytes:
        return b"," + orjson.dumps(generic_error(SERVER_ERROR, message))

    def end(self) -> bytes:
        return b"]"


class PrintWriter(Writer):
    """PRINT on ``/query``: the lines ksqlDB's PRINT shows, as plain text."""

    content_type = b"text/plain; charset=utf-8"

    def header(self, query: "PreparedQuery") -> bytes:
        return b""

    def row(self, data: bytes) -> bytes:
        return data + b"\n"

    def failure(self, message: str) -> bytes:
        return message.encode() + b"\n"


# =============================================================================== queries
_ids = itertools.count(1)


def new_query_id(source: str | None, push: bool) -> str:
    """ksqlDB-style ids: ``transient_PAGEVIEWS_4284457913456787645`` for push queries,
    ``query_<ms>_<n>`` for pull queries."""
    if push:
        return f"transient_{source or 'QUERY'}_{random.getrandbits(62)}"
    return f"query_{int(time.time() * 1000)}_{next(_ids)}"


@dataclass
class PreparedQuery:
    """A query the engine accepted: its result (rows, or a row stream) and its schema."""

    stmt: ast.Statement
    result: Result
    query_id: str
    columns: tuple[str, ...]
    types: tuple[SqlType, ...]
    keys: int
    is_print: bool = False
    # Rows other nodes of the cluster sent (JSON arrays), and what they could not send.
    remote_rows: list[bytes] = field(default_factory=list)
    missing: str | None = None

    @property
    def push(self) -> bool:
        return self.result.kind == "stream"

    def header_json(self) -> dict[str, Any]:
        return {"queryId": self.query_id, "columnNames": list(self.columns),
                "columnTypes": [str(t) for t in self.types]}


@dataclass
class PushHandle:
    """A running push query: what SHOW QUERIES lists and what /close-query stops."""

    query_id: str
    sql: str
    sink_topic: str | None
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    rows_sent: int = 0
    started_ms: int = field(default_factory=lambda: int(time.time() * 1000))


class PushQueries:
    """The push queries running on this server, by id."""

    def __init__(self) -> None:
        self.running: dict[str, PushHandle] = {}

    def close(self, query_id: str) -> bool:
        handle = self.running.get(query_id)
        if handle is None:  # TERMINATE upper-cases unquoted ids
            handle = next((h for qid, h in self.running.items() if qid.upper() == query_id.upper()), None)
        if handle is None:
            return False
        # Unlisted at once; the streaming task ends the response and frees the rest.
        del self.running[handle.query_id]
        handle.closed.set()
        return True

    def close_all(self) -> None:
        for handle in list(self.running.values()):
            handle.closed.set()

    def entities(self) -> list[dict[str, Any]]:
        """Running push queries as ksqlDB's RunningQuery entries (queryType PUSH)."""
        return [{"queryString": h.sql, "sinks": [], "sinkKafkaTopics": [], "id": h.query_id,
                 "statusCount": {"RUNNING": 1}, "queryType": "PUSH", "state": "RUNNING"}
                for h in self.running.values()]


async def _close_stream(stream: AsyncIterator[Any] | None) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:  # noqa: BLE001 - the iterator may already be finished or broken
            log.debug("closing a push query's iterator failed", exc_info=True)


async def send_pull(ex: Exchange, query: PreparedQuery, writer: Writer) -> None:
    """A pull query's whole answer: local rows, then rows from other nodes (up to the LIMIT),
    then, if some node did not answer, an error saying what is missing. Over HTTP/2 the
    header and each row are separate DATA frames (clients that read one JSON value per frame,
    as ksqlDB sends them, keep working); over HTTP/1.1 it is one body."""
    encode = writer.pull_rows(query)
    parts = [writer.header(query)]
    parts += [encode(row) for row in query.result.rows]
    parts += [writer.remote_row(query, line) for line in query.remote_rows]
    limit = getattr(getattr(query.stmt, "query", None), "limit", None)
    if limit is not None:
        del parts[1 + limit:]
    if query.result.final_message:
        parts.append(writer.final_message(query.result.final_message))
    if query.missing:
        parts.append(writer.failure(query.missing))
    parts.append(writer.end())
    if ex.http2:
        await ex.start(200, writer.content_type)
        for part in parts[:-1]:
            await ex.chunk(part)
            await asyncio.sleep(0)  # let the HTTP/2 sender frame it before the next one
        await ex.end(parts[-1])
        return
    await ex.respond(200, b"".join(parts), writer.content_type)


async def stream_push(ex: Exchange, query: PreparedQuery, writer: Writer, registry: PushQueries) -> None:
    """Stream a push query until LIMIT, client disconnect, /close-query or failure."""
    stream = query.result.stream
    assert stream is not None
    handle = PushHandle(query.query_id, query.stmt.text, None)
    registry.running[query.query_id] = handle
    encoder = RowEncoder(query.types)
    is_print = query.is_print
    outcome: list[bytes] = []

    async def pump() -> None:
        async for row in stream:
            if type(row) is Tombstone:  # (orjson writes only plain tuples as arrays)
                await ex.chunk(writer.tombstone(encoder.encode(tuple(row))))
            else:
                await ex.chunk(writer.row(row[0].encode() if is_print else encoder.encode(row)))
            handle.rows_sent += 1
            if ex.http2:
                await asyncio.sleep(0)  # one DATA frame per row (see send_pull)
        outcome.append(writer.limit_reached())

    try:
        await ex.start(200, writer.content_type)
        header = writer.header(query)
        if header:
            await ex.chunk(header)
            if ex.http2:
                await asyncio.sleep(0)
        pumping = asyncio.ensure_future(pump())
        gone = asyncio.ensure_future(ex.wait_disconnect())
        closing = asyncio.ensure_future(handle.closed.wait())
        try:
            done = await first_done(pumping, gone, closing)
        finally:
            for task in (pumping, gone, closing):
                task.cancel()
        if gone in done:
            log.info("push query %s closed: the client disconnected after %d rows",
                     query.query_id, handle.rows_sent)
            return
        if pumping in done and not pumping.cancelled() and pumping.exception() is not None:
            exc = pumping.exception()
            if not isinstance(exc, Exception) or isinstance(exc, Disconnected) or ex.finished:
                raise exc  # type: ignore[misc]
            log.info("push query %s failed: %s", query.query_id, exc)
            outcome.append(writer.failure(str(exc)))
        await ex.end(b"".join(outcome) + writer.end())
    finally:
        registry.running.pop(query.query_id, None)
        await _close_stream(stream)


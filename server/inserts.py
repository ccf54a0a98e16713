"""``POST /inserts-stream``: rows as JSON objects, one a line, into a stream (or table).

The body's first JSON object names the target (``{"target": "S"}``); each following object is
a row whose fields are column names (exact, else matched upper-cased, as the JSON format reads
them). Values are coerced to the columns' types as the JSON format coerces them, encoded with
the target's key and value formats and produced to its topic. The response streams one ack a
row, ``{"status":"ok","seq":N}``; a row that cannot be inserted gets
``{"status":"error","seq":N,"error_code":40000,"message":...}`` and ends the request, rows
before it staying inserted (ksqlDB's behaviour).

Rows that arrive together (one chunk of the request body) are produced in one call.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable

import orjson

from streamsql.casts import parse_date, parse_time, parse_timestamp
from streamsql.catalog import DataSource
from streamsql.errors import StreamSqlError
from streamsql.formats.json import coercer, exact_loads
from streamsql.runtime.log.base import ProducerRecord
from streamsql.server.errors import BAD_REQUEST, bad_request, bad_statement
from streamsql.types import BaseType, SqlType, any_type

log = logging.getLogger(__name__)

_MISSING = object()
_TEMPORAL_TEXT = {BaseType.TIMESTAMP: parse_timestamp, BaseType.DATE: parse_date, BaseType.TIME: parse_time}


class InsertTarget:
    """A target's columns, coercions and codecs, resolved once per request."""

    def __init__(self, engine: Any, source: DataSource) -> None:
        self.source = source
        self.topic = source.topic
        schema = source.schema
        self.key_columns = tuple(c.name for c in schema.key)
        self.value_columns = tuple(c.name for c in schema.value_format_columns)
        self.coercers: dict[str, Callable[[Any], Any]] = {
            c.name: _coercer(c.type) for c in schema.key + schema.value_format_columns}
        self.types = {c.name: c.type for c in schema.key + schema.value_format_columns}
        # DECIMAL columns need numbers' exact text (orjson reads them as floats).
        self.loads: Callable[[bytes], Any] = exact_loads if any(
            any_type(t, lambda x: x.base is BaseType.DECIMAL) for t in self.types.values()) else orjson.loads
        self.key_codec = engine.codec(source, "key")
        self.value_codec = engine.codec(source, "value")
        ts_col = source.timestamp_column if source.timestamp_format is None else None
        self.timestamp_column = ts_col

    def record_of(self, line: bytes) -> ProducerRecord:
        """The record for one line of the request; ValueError when it does not fit."""
        return self.record(self.loads(line))

    def record(self, row: Any) -> ProducerRecord:
        """The record for one row object; ValueError (ksqlDB's message) when it does not fit."""
        if not isinstance(row, dict):
            raise ValueError("Row is not a JSON object")
        upper: dict[str, Any] | None = None
        values: dict[str, Any] = {}
        for name, coerce in self.coercers.items():
            v = row.get(name, _MISSING)
            if v is _MISSING:
                if upper is None:
                    upper = {k.upper(): x for k, x in row.items()}
                v = upper.get(name)
            if v is not None:
                try:
                    v = coerce(v)
                except (ValueError, TypeError, OverflowError, ArithmeticError):
                    raise ValueError(f"Can't coerce a field of type {_json_type(v)} ({v}) into type "
                                     f"{self.types[name]} (column {name})") from None
            values[name] = v
        key = tuple(values[c] for c in self.key_columns)
        key_bytes = self.key_codec.encode(key) if key and any(v is not None for v in key) else None
        value_bytes = self.value_codec.encode(tuple(values[c] for c in self.value_columns))
        ts = int(time.time() * 1000)
        if self.timestamp_column is not None and values.get(self.timestamp_column) is not None:
            ts = values[self.timestamp_column]
        return ProducerRecord(key_bytes, value_bytes, ts)


def _coercer(t: SqlType) -> Callable[[Any], Any]:
    """The JSON format's coercion, plus ISO text for DATE, TIME and TIMESTAMP (what ksqlDB's
    clients send for those types)."""
    base = coercer(t)
    parse = _TEMPORAL_TEXT.get(t.base)
    if parse is None:
        return base

    def coerce(v: Any) -> Any:
        if isinstance(v, str) and not v.strip().lstrip("-").isdigit():
            return parse(v)
        return base(v)

    return coerce


def _json_type(v: Any) -> str:
    return {str: "STRING", bool: "BOOLEAN", int: "INTEGER", float: "DOUBLE", list: "ARRAY",
            dict: "OBJECT"}.get(type(v), type(v).__name__)


def resolve_target(engine: Any, args: dict[str, Any]) -> InsertTarget:
    """The target named by the request's first object, or ksqlDB's error."""
    target = args.get("target")
    if not isinstance(target, str) or not target:
        raise bad_request("No target in arguments")
    source = engine.catalog.source(target) or engine.catalog.source(target.upper())
    if source is None:
        raise bad_statement(f"Cannot insert values into an unknown stream/table: `{target}`", "")
    if source.is_source:
        raise bad_statement(f"Cannot insert values into read-only {source.kind.lower()}: {source.name}", "")
    try:
        return InsertTarget(engine, source)
    except StreamSqlError as exc:
        raise bad_statement(str(exc), "") from None


def ack(seq: int) -> bytes:
    return b'{"status":"ok","seq":%d}\n' % seq


def row_error(seq: int, message: str, error_code: int = BAD_REQUEST) -> bytes:
    return orjson.dumps({"status": "error", "seq": seq, "error_code": error_code, "message": message}) + b"\n"


class AckStream:
    """The acks of an ``/inserts-stream`` response as they are written: newline-delimited
    JSON objects, or, for a client that asked for ``Accept: application/json``, one JSON
    array of them (``[{"status":"ok","seq":0},...]``, as ksqlDB answers such clients)."""

    def __init__(self, ex: Any, json_array: bool) -> None:
        self.ex = ex
        self.json_array = json_array
        self._first = True

    @property
    def content_type(self) -> bytes:
        return b"application/json" if self.json_array else b"application/vnd.ksqlapi.delimited.v1"

    def _framed(self, lines: bytes) -> bytes:
        if not self.json_array or not lines:
            return lines
        out = []
        for line in lines.splitlines():
            out.append((b"[" if self._first else b",") + line)
            self._first = False
        return b"".join(out)

    async def send(self, lines: bytes) -> None:
        """Write newline-terminated ack (or error) objects."""
        data = self._framed(lines)
        if data:
            await self.ex.chunk(data)

    async def end(self, lines: bytes = b"") -> None:
        """Write the last objects and end the response (closing the array)."""
        data = self._framed(lines)
        if self.json_array:
            data += b"[]" if self._first else b"]"
        await self.ex.end(data)

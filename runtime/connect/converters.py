"""Converters: Connect data (``Schema`` + value) <-> record bytes, as Kafka Connect's.

``JsonConverter`` writes what ``org.apache.kafka.connect.json.JsonConverter`` writes, byte for
byte: with ``schemas.enable`` (the default) an envelope ``{"schema":...,"payload":...}`` whose
schema object lists its keys in Connect's order (type, then items/keys/values/fields, optional,
name, version, doc, parameters, default), compact, doubles as Java's ``Double.toString``.
``StringConverter`` and ``ByteArrayConverter`` are Connect's too; Confluent's AvroConverter,
ProtobufConverter and JsonSchemaConverter are in ``registry_converters``.

The worker converts with ``Converter.writer(topic, schema)``: a batch writer made once per
schema (found by the Schema object's identity, which a source hands out for many records).
JsonConverter's is generated code (``_JsonWriter``) writing the same bytes as
``from_connect_data``, which stays the reference and handles whatever the fast path does not.

A connector reads its converters from ``key.converter``/``value.converter`` (else the worker's)
and configures each with the ``key.converter.*``/``value.converter.*`` keys, prefix removed, as
Connect's ``Plugins.newConverter`` does.
"""
from __future__ import annotations

import base64
import binascii
import datetime
import struct
from abc import ABC, abstractmethod
from array import array
from decimal import Decimal
from functools import partial
from itertools import repeat, starmap
from operator import attrgetter, floordiv, is_not, sub
from typing import Any, Callable, Mapping, Sequence

import msgspec
import orjson

from streamsql.casts import java_double_str
from streamsql.runtime.connect.api import (
    ARRAY, BOOLEAN, BYTES, DATE, DECIMAL, FLOAT32, FLOAT64, INT8, INT16, INT32, INT64, MAP,
    STRING, STRUCT, TIME, TIMESTAMP, ConnectException, Field, Schema, Struct)
from streamsql.runtime.log.base import PackedValues


class DataException(ConnectException):
    """Connect's DataException: a value that does not convert."""


class Converter(ABC):
    """Connect's Converter: configured once per key or value, then used per record."""

    def configure(self, configs: Mapping[str, str], is_key: bool) -> None:
        self.is_key = is_key

    @abstractmethod
    def from_connect_data(self, topic: str, schema: Schema | None, value: Any) -> bytes | None: ...

    @abstractmethod
    def to_connect_data(self, topic: str, data: bytes | None) -> tuple[Schema | None, Any]: ...

    # Whether ``flush`` has something to do (a schema registered): checked per write.
    pending = False
    # Whether its writers may run on a source task's thread (pure computation, no I/O, no
    # event loop): the worker then converts a task's batches there, beside its reads.
    thread_safe = False

    async def flush(self) -> None:
        """Make durable what the conversions so far depend on (a registered schema)."""

    def batch_writer(self, topic: str, schema: Schema | None) -> Callable[[Sequence[Any]], list[bytes | None]]:
        """Values of ``schema`` -> their bytes, a batch at a time: what the worker calls. Made
        once per (topic, schema) and kept (``writer``); converters compile theirs."""
        convert = self.from_connect_data
        return lambda values: [convert(topic, schema, v) for v in values]

    def rows_writer(self, topic: str, schema: Schema) -> Callable[[Sequence[tuple]], Sequence[bytes | None]]:
        """For a STRUCT ``schema``: its values' field tuples (``Struct.values``) -> bytes."""
        write = self.writer(topic, schema)
        return lambda rows: write([_struct(schema, r) for r in rows])

    def writer(self, topic: str, schema: Schema | None, rows: bool = False
               ) -> Callable[[Sequence[Any]], Sequence[bytes | None]]:
        """``batch_writer`` (``rows_writer`` with ``rows``), made once per schema: found by
        the schema's identity (a source hands one Schema object out for many records, and
        the cache keeps it alive, so its id is not reused), else by equality."""
        cache: dict[Any, tuple[Any, Callable[[Sequence[Any]], Sequence[bytes | None]]]]
        cache = self.__dict__.setdefault("_writers", {})
        hit = cache.get((topic, id(schema), rows))
        if hit is not None and hit[0] is schema:
            return hit[1]
        try:
            hit = cache.get((topic, schema, rows))
        except TypeError:  # a schema with an unhashable default
            hit = None
        write = hit[1] if hit is not None else (self.rows_writer(topic, schema) if rows  # type: ignore[arg-type]
                                                else self.batch_writer(topic, schema))
        if len(cache) >= 2000:
            cache.clear()
        cache[(topic, id(schema), rows)] = (schema, write)
        if hit is None:
            try:
                cache[(topic, schema, rows)] = (schema, write)
            except TypeError:
                pass
        return write


def _struct(schema: Schema, values: tuple) -> Struct:
    # A Struct without the frozen dataclass's guarded __init__ (equal to a constructed one).
    s = _new(Struct)
    _set(s, "__dict__", {"schema": schema, "values": values})
    return s


_new = object.__new__
_set = object.__setattr__


OPTIONAL_STRING = Schema(STRING, optional=True)
OPTIONAL_BYTES = Schema(BYTES, optional=True)


class StringConverter(Converter):
    """``org.apache.kafka.connect.storage.StringConverter``: a value's text in UTF-8
    (``converter.encoding``); reads back as an optional string."""

    thread_safe = True

    encoding = "utf-8"

    def configure(self, configs: Mapping[str, str], is_key: bool) -> None:
        super().configure(configs, is_key)
        which = "key" if is_key else "value"
        self.encoding = configs.get(f"converter.encoding.{which}") or configs.get("converter.encoding") or "UTF8"
        self.encoding = self.encoding.replace("UTF8", "utf-8")

    def from_connect_data(self, topic: str, schema: Schema | None, value: Any) -> bytes | None:
        return None if value is None else java_string(value).encode(self.encoding)

    def to_connect_data(self, topic: str, data: bytes | None) -> tuple[Schema | None, Any]:
        return OPTIONAL_STRING, None if data is None else bytes(data).decode(self.encoding)


class ByteArrayConverter(Converter):
    """``org.apache.kafka.connect.converters.ByteArrayConverter``: bytes as they are."""

    thread_safe = True

    def from_connect_data(self, topic: str, schema: Schema | None, value: Any) -> bytes | None:
        if schema is not None and schema.type != BYTES:
            raise DataException(f"Invalid schema type for ByteArrayConverter: {schema.type.upper()}")
        if value is not None and not isinstance(value, (bytes, bytearray, memoryview)):
            raise DataException(f"ByteArrayConverter is not compatible with objects of type {type(value).__name__}")
        return None if value is None else bytes(value)

    def to_connect_data(self, topic: str, data: bytes | None) -> tuple[Schema | None, Any]:
        return OPTIONAL_BYTES, None if data is None else bytes(data)


class JsonConverter(Converter):
    """``org.apache.kafka.connect.json.JsonConverter`` (``schemas.enable``, default true;
    ``decimal.format`` BASE64 or NUMERIC)."""

    thread_safe = True

    schemas_enabled = True
    decimal_numeric = False

    def configure(self, configs: Mapping[str, str], is_key: bool) -> None:
        super().configure(configs, is_key)
        self.schemas_enabled = str(configs.get("schemas.enable", "true")).strip().lower() == "true"
        self.decimal_numeric = str(configs.get("decimal.format", "BASE64")).strip().upper() == "NUMERIC"

    # -------------------------------------------------------------------------- writing
    def from_connect_data(self, topic: str, schema: Schema | None, value: Any) -> bytes | None:
        if schema is None and value is None:
            return None
        try:
            if schema is not None and schema.type == STRING and schema.name is None and type(value) is str:
                payload = orjson.dumps(value)  # the common case (a file's lines), straight
            else:
                payload = self._to_json(schema, value)
            if self.schemas_enabled:
                return self._envelope(schema) + payload + b"}"
            return payload
        except DataException as exc:
            raise DataException(f"Converting Kafka Connect data to byte[] failed due to serialization "
                                f"error of topic {topic}: {exc}") from exc

    def _envelope(self, schema: Schema | None) -> bytes:
        """``{"schema":<schema>,"payload":`` for ``schema``, made once per schema: found by
        identity first (hashing a frozen Schema walks all of it), kept alive with it."""
        by_id = self.__dict__.setdefault("_envelope_ids", {})
        hit = by_id.get(id(schema))
        if hit is not None and hit[0] is schema:
            return hit[1]
        cache = self.__dict__.setdefault("_envelopes", {})
        try:
            head = cache.get(schema)
        except TypeError:  # a schema with an unhashable default: not cached
            return b'{"schema":' + orjson.dumps(json_schema(schema)) + b',"payload":'  # type: ignore[arg-type]
        if head is None:
            head = b'{"schema":' + (orjson.dumps(json_schema(schema)) if schema is not None else b"null") + \
                b',"payload":'
            if len(cache) < 1000:
                cache[schema] = head
        if len(by_id) < 1000:
            by_id[id(schema)] = (schema, head)
        return head

    def batch_writer(self, topic: str, schema: Schema | None) -> Callable[[Sequence[Any]], list[bytes | None]]:
        if schema is None:
            return super().batch_writer(topic, schema)
        return _JsonWriter(self, topic, schema).compile(rows=False)

    def rows_writer(self, topic: str, schema: Schema) -> Callable[[Sequence[tuple]], Sequence[bytes | None]]:
        if schema.type != STRUCT:
            return super().rows_writer(topic, schema)
        fast = _JsonWriter(self, topic, schema).compile(rows=True)
        columns = _JsonColumns.build(self, schema)
        if columns is None:
            return fast

        def write(rows: Sequence[tuple]) -> Sequence[bytes | None]:
            try:
                out = columns(rows)
            except Exception:  # noqa: BLE001 - whatever the column path did not foresee: the row path decides
                out = None
            return fast(rows) if out is None else out
        return write

    def _to_json(self, schema: Schema | None, value: Any) -> bytes:
        return orjson.dumps(self._json_value(schema, value), default=_fragment_default)

    def _json_value(self, schema: Schema | None, value: Any) -> Any:
        if value is None:
            if schema is None:
                return None
            if schema.default is not None:
                return self._json_value(schema, schema.default)
            if schema.optional:
                return None
            raise DataException("Conversion error: null value for field that is required and has no default value")
        if schema is None:
            return self._schemaless(value)
        t = schema.type
        if schema.name == DECIMAL:
            if self.decimal_numeric:
                return orjson.Fragment(format(Decimal(value), "f").encode())
            return base64.b64encode(_decimal_bytes(Decimal(value), int(dict(schema.parameters).get("scale", 0)))).decode()
        if schema.name == DATE and isinstance(value, datetime.date):
            return (value - datetime.date(1970, 1, 1)).days
        if schema.name == TIME and isinstance(value, datetime.time):
            return ((value.hour * 60 + value.minute) * 60 + value.second) * 1000 + value.microsecond // 1000
        if schema.name == TIMESTAMP and isinstance(value, datetime.datetime):
            # Exact milliseconds, as Java's Date.getTime (a float's *1000 can land one below).
            return (value - (_EPOCH if value.tzinfo is None else _EPOCH_UTC)) // _ONE_MS
        if t in (INT8, INT16, INT32, INT64):
            if isinstance(value, bool) or not isinstance(value, int):
                raise DataException(f"Invalid Java object for schema type {t.upper()}: {type(value).__name__}")
            return value
        if t in (FLOAT32, FLOAT64):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise DataException(f"Invalid Java object for schema type {t.upper()}: {type(value).__name__}")
            return orjson.Fragment((java_float_str(value) if t == FLOAT32 else java_double_str(float(value))).encode())
        if t == BOOLEAN:
            if not isinstance(value, bool):
                raise DataException(f"Invalid Java object for schema type BOOLEAN: {type(value).__name__}")
            return value
        if t == STRING:
            if not isinstance(value, str):
                raise DataException(f"Invalid Java object for schema type STRING: {type(value).__name__}")
            return value
        if t == BYTES:
            return base64.b64encode(bytes(value)).decode()
        if t == ARRAY:
            return [self._json_value(schema.value_schema, v) for v in value]
        if t == MAP:
            key_schema = schema.key_schema
            if key_schema is not None and key_schema.type == STRING:
                return {k: self._json_value(schema.value_schema, v) for k, v in value.items()}
            return [[self._json_value(key_schema, k), self._json_value(schema.value_schema, v)]
                    for k, v in value.items()]
        if t == STRUCT:
            if not isinstance(value, Struct):
                raise DataException(f"Invalid Java object for schema type STRUCT: {type(value).__name__}")
            return {f.name: self._json_value(f.schema, value.values[f.index]) for f in schema.fields}
        raise DataException(f"Couldn't convert {value!r} to JSON.")

    def _schemaless(self, value: Any) -> Any:
        if isinstance(value, Struct):
            return self._json_value(value.schema, value)
        if isinstance(value, float):
            return orjson.Fragment(java_double_str(value).encode())
        if isinstance(value, (bytes, bytearray, memoryview)):
            return base64.b64encode(bytes(value)).decode()
        if isinstance(value, Decimal):
            return orjson.Fragment(format(value, "f").encode())
        if isinstance(value, dict):
            if all(isinstance(k, str) for k in value):
                return {k: self._schemaless(v) for k, v in value.items()}
            return [[self._schemaless(k), self._schemaless(v)] for k, v in value.items()]
        if isinstance(value, (list, tuple)):
            return [self._schemaless(v) for v in value]
        return value

    # -------------------------------------------------------------------------- reading
    def to_connect_data(self, topic: str, data: bytes | None) -> tuple[Schema | None, Any]:
        if data is None:
            return None, None
        try:
            node = orjson.loads(data) if len(data) else None
        except orjson.JSONDecodeError as exc:
            raise DataException(f"Converting byte[] to Kafka Connect data failed due to serialization "
                                f"error: {exc}") from exc
        if not self.schemas_enabled:
            # Schemaless: the JSON as it is (Connect infers the types the same way).
            return None, node
        if not isinstance(node, dict) or set(node) != {"schema", "payload"}:
            raise DataException(
                "JsonConverter with schemas.enable requires \"schema\" and \"payload\" fields and may "
                "not contain additional fields. If you are trying to deserialize plain JSON data, set "
                "schemas.enable=false in your converter configuration.")
        schema = self._schema(node["schema"]) if node["schema"] is not None else None
        return schema, self._from_json(schema, node["payload"])

    def _schema(self, node: Any) -> Schema:
        """``schema_from_json``, remembered by the schema's JSON text (records of a topic
        mostly share one schema)."""
        cache = self.__dict__.setdefault("_schemas", {})
        text = orjson.dumps(node)
        schema = cache.get(text)
        if schema is None:
            schema = schema_from_json(node)
            if len(cache) < 1000:
                cache[text] = schema
        return schema

    def _from_json(self, schema: Schema | None, node: Any) -> Any:
        if schema is None:
            return node
        if node is None:
            if schema.default is not None:
                return schema.default
            if schema.optional:
                return None
            raise DataException(f"Invalid null value for required {schema.type.upper()} field")
        if schema.name == DECIMAL:
            scale = int(dict(schema.parameters).get("scale", 0))
            if isinstance(node, str):
                raw = base64.b64decode(node)
                return Decimal(int.from_bytes(raw, "big", signed=True)).scaleb(-scale)
            return Decimal(str(node))
        t = schema.type
        if t == BYTES:
            return base64.b64decode(node)
        if t == ARRAY:
            return [self._from_json(schema.value_schema, v) for v in node]
        if t == MAP:
            if isinstance(node, dict):
                return {k: self._from_json(schema.value_schema, v) for k, v in node.items()}
            return {self._from_json(schema.key_schema, k): self._from_json(schema.value_schema, v) for k, v in node}
        if t == STRUCT:
            return Struct(schema, tuple(self._from_json(f.schema, node.get(f.name)) for f in schema.fields))
        if t in (FLOAT32, FLOAT64):
            return float(node)
        return node


_EPOCH = datetime.datetime(1970, 1, 1)
_EPOCH_UTC = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
_EPOCH_DATE = datetime.date(1970, 1, 1)
_ONE_MS = datetime.timedelta(milliseconds=1)


class _JsonWriter:
    """JsonConverter's writer for one schema, generated and compiled once: a loop over a
    batch that unpacks each STRUCT row into locals, checks each value is of the Python type
    the fast path expects (the same test ``_json_value`` makes), and writes the record with
    one ``orjson.dumps`` of a dict built in place. A record whose values are of other types
    (or null where required) goes through ``from_connect_data``, which writes or rejects it
    exactly as Connect; so does a whole batch that raises, so errors name the record."""

    def __init__(self, converter: JsonConverter, topic: str, schema: Schema) -> None:
        self.converter = converter
        self.topic = topic
        self.schema = schema
        self.ns: dict[str, Any] = {
            "dumps": orjson.dumps, "fd": _fragment_default, "Fragment": orjson.Fragment, "Decimal": Decimal,
            "Struct": Struct, "date_t": datetime.date, "time_t": datetime.time, "datetime_t": datetime.datetime,
            "EPOCH": _EPOCH, "EPOCH_UTC": _EPOCH_UTC, "UTC": datetime.timezone.utc, "EPOCH_DATE": _EPOCH_DATE, "MS": _ONE_MS,
            "b2a": base64.b64encode, "jds": java_double_str, "jfs": java_float_str, "jv": converter._json_value}

    def _const(self, value: Any) -> str:
        name = f"c{len(self.ns)}"
        self.ns[name] = value
        return name

    def _value(self, schema: Schema, v: str) -> tuple[str, str]:
        """(guard, expression) for the JSON value of ``v`` under ``schema``: the expression
        is right wherever the guard holds, nulls included."""
        t, name = schema.type, schema.name
        if name == DECIMAL and t == BYTES:
            guard = f"type({v}) is Decimal"
            if self.converter.decimal_numeric:
                expr = f'Fragment(format({v}, "f").encode())'
            else:
                # The encoder's cache looked up in line: a call less per value (amounts repeat).
                encode = _decimal_base64(int(dict(schema.parameters).get('scale', 0)))
                expr = f"({self._const(encode.cache.get)}(str({v})) or {self._const(encode)}({v}))"  # type: ignore[attr-defined]
        elif name == DATE and t == INT32:
            guard, expr = f"type({v}) is date_t", f"({v} - EPOCH_DATE).days"
        elif name == TIME and t == INT32:
            guard = f"type({v}) is time_t"
            expr = f"(({v}.hour * 60 + {v}.minute) * 60 + {v}.second) * 1000 + {v}.microsecond // 1000"
        elif name == TIMESTAMP and t == INT64:
            guard = f"type({v}) is datetime_t"
            # (UTC first: what the JDBC source hands out; the same tzinfo subtracts naively.)
            # Milliseconds from the timedelta's fields: exact, as ``// MS``, and cheaper.
            expr = (f"((t{v} := ({v} - EPOCH_UTC) if {v}.tzinfo is UTC else ({v} - (EPOCH if {v}.tzinfo is None "
                    f"else EPOCH_UTC))).days * 86400000 + t{v}.seconds * 1000 + t{v}.microseconds // 1000)")
        elif name in (DECIMAL, DATE, TIME, TIMESTAMP) or t in (ARRAY, MAP, STRUCT):
            # Nested or unusual: the generic conversion, which handles nulls itself.
            return "True", f"jv({self._const(schema)}, {v})"
        elif t in (INT8, INT16, INT32, INT64):
            guard, expr = f"type({v}) is int", v
        elif t == FLOAT64:
            guard, expr = f"type({v}) is float", f"Fragment(jds({v}).encode())"
        elif t == FLOAT32:
            guard, expr = f"type({v}) is float", f"Fragment(jfs({v}).encode())"
        elif t == BOOLEAN:
            guard, expr = f"type({v}) is bool", v
        elif t == STRING:
            guard, expr = f"type({v}) is str", v
        elif t == BYTES:
            guard, expr = f"type({v}) is bytes", f"b2a({v}).decode()"
        else:
            return "False", "None"
        if schema.default is not None:
            try:
                default = self._const(self.converter._json_value(schema, None))
            except Exception:  # noqa: BLE001 - a default that does not convert: the slow path says so
                return guard, expr
            return f"({v} is None or {guard})", f"({default} if {v} is None else {expr})"
        if schema.optional:
            return f"({v} is None or {guard})", (expr if expr == v else f"(None if {v} is None else {expr})")
        return guard, expr

    def compile(self, rows: bool) -> Callable[[Sequence[Any]], list[bytes | None]]:
        conv, schema, topic = self.converter, self.schema, self.topic
        slow_one = conv.from_connect_data
        if rows:
            def slow(row: Any) -> bytes | None:
                return slow_one(topic, schema, _struct(schema, row))
        else:
            def slow(row: Any) -> bytes | None:
                return slow_one(topic, schema, row)
        self.ns["slow"] = slow
        # The envelope written by the same dumps, its schema as a Fragment: no copies of the
        # payload to wrap it (the bytes are the same as ``_envelope(schema) + payload + b"}"``).
        if conv.schemas_enabled:
            self.ns["SCHEMA"] = orjson.Fragment(conv._envelope(schema)[len(b'{"schema":'):-len(b',"payload":')])

            def dump(e: str) -> str:
                return f'dumps({{"schema": SCHEMA, "payload": {e}}}, default=fd)'
        else:
            def dump(e: str) -> str:
                return f"dumps({e}, default=fd)"
        lines = ["def fast(batch):", "    out = []", "    ap = out.append"]
        if schema.type == STRUCT:
            names = [f"v{i}" for i in range(len(schema.fields))]
            guards, items = [], []
            for f, v in zip(schema.fields, names):
                g, e = self._value(f.schema, v)
                if g != "True":
                    guards.append(g)
                items.append(f"{self._const(f.name)}: {e}")
            unpack = (", ".join(names) + ("," if len(names) == 1 else "")) if names else "_"
            lines.append("    for row in batch:")
            if not rows:
                lines += ["        if type(row) is not Struct:", "            ap(slow(row))", "            continue",
                          "        struct, row = row, row.values"]
            lines.append(f"        {unpack} = row" if names else "        pass")
            lines.append(f"        if {' and '.join(guards) or 'True'}:")
            lines.append(f"            ap({dump('{' + ', '.join(items) + '}')})")
            lines += ["        else:", f"            ap(slow({'row' if rows else 'struct'}))"]
        else:
            g, e = self._value(schema, "v")
            lines += ["    for v in batch:", f"        if {g}:", f"            ap({dump(e)})",
                      "        else:", "            ap(slow(v))"]
        lines.append("    return out")
        exec(compile("\n".join(lines), f"<json writer {schema.name or schema.type}>", "exec"), self.ns)  # noqa: S102
        fast = self.ns["fast"]

        def write(batch: Sequence[Any]) -> list[bytes | None]:
            try:
                return fast(batch)
            except Exception:  # noqa: BLE001 - again one by one: the bad record's own error
                return [slow(x) for x in batch]
        return write


def _decimal_base64(scale: int) -> Callable[[Decimal], str]:
    """A Decimal -> base64 of its unscaled value at ``scale`` (as ``_decimal_bytes``),
    remembered by the value's text: amounts and prices repeat, and ``str`` is the cheapest
    key (a Decimal's own hash costs more than the conversion's arithmetic)."""
    quantum = Decimal(1).scaleb(scale)
    b2a = binascii.b2a_base64
    cache: dict[str, str] = {}

    def encode(value: Decimal) -> str:
        key = str(value)
        text = cache.get(key)
        if text is None:
            scaled = value * quantum
            unscaled = int(scaled)
            if unscaled != scaled:  # more digits than the scale: rounded as _decimal_bytes does
                unscaled = int(scaled.to_integral_value())
            text = b2a(unscaled.to_bytes((unscaled + (unscaled < 0)).bit_length() // 8 + 1, "big", signed=True),
                       newline=False).decode()
            if len(cache) < 65536:
                cache[key] = text
        return text
    encode.cache = cache  # type: ignore[attr-defined]
    return encode


_NONE_TYPE = type(None)
_not_none = partial(is_not, None)
_JSON_INT_MIN, _JSON_INT_MAX = -(1 << 63), (1 << 64) - 1  # orjson's range (msgspec's is wider)
_days = attrgetter("days")


def _raws(texts: Any) -> list[msgspec.Raw]:
    return list(map(msgspec.Raw, map(str.encode, texts)))


def _time_ms(v: datetime.time) -> int:
    return ((v.hour * 60 + v.minute) * 60 + v.second) * 1000 + v.microsecond // 1000


def _timestamp_ms(v: datetime.datetime) -> int:
    return (v - (_EPOCH if v.tzinfo is None else _EPOCH_UTC)) // _ONE_MS


def _timestamps_ms(col: Sequence[datetime.datetime]) -> list[int]:
    try:  # aware values (a JDBC source's): C loops only
        return list(map(floordiv, map(sub, col, repeat(_EPOCH_UTC)), repeat(_ONE_MS)))
    except TypeError:  # naive ones among them
        return list(map(_timestamp_ms, col))


def _decimals_base64(encode: Callable[[Decimal], str]) -> Callable[[Sequence[Decimal]], list[str]]:
    """A column of Decimals -> their base64 texts, from ``encode``'s cache (keyed by the
    text: a fresh Decimal's hash costs more) by C loops, the values not in it (few:
    amounts repeat) one at a time."""
    get = encode.cache.get  # type: ignore[attr-defined]

    def many(col: Sequence[Decimal]) -> list[str]:
        out = list(map(get, map(str, col)))
        if None in out:
            for i, v in enumerate(out):
                if v is None:
                    out[i] = encode(col[i])
        return out
    return many


class _JsonColumns:
    """JsonConverter's writer for the rows of a flat STRUCT schema (what a JDBC source hands
    out), a batch at a time as columns: each column's types are checked and its values
    converted by C loops (``map`` over C functions; floats, TIME and logical columns holding
    nulls call a function per value), the rows become msgspec Structs named by the schema's
    fields and are encoded by one call (``encode_lines``: JSON holds no raw newline, so the
    lines are the records), handed out as ``PackedValues``: the payloads back to back, their
    lengths, the schema's envelope as the prefix and suffix around each (no bytes object
    per value; the embedded log frames them as they are, the envelope once): no Python code
    runs per row. The bytes are ``_JsonWriter``'s
    (the tests compare them over every type); a batch holding a value of another type than
    that path expects, a null where the schema allows none or an integer beyond 64 bits is
    not written here (None) but by ``_JsonWriter``, which decides record by record."""

    def __init__(self, converter: JsonConverter, schema: Schema,
                 checks: list[tuple[int, frozenset[type], Any, Any, bool]]) -> None:
        self.width = len(schema.fields)
        self.checks = checks
        names = [f.name for f in schema.fields]
        # Not tracked by the garbage collector: a Row holds scalars only (no cycles).
        self.row = msgspec.defstruct("Row", [(f"f{i}", object) for i in range(self.width)],
                                     rename={f"f{i}": n for i, n in enumerate(names)}, gc=False)
        self.encode_lines = msgspec.json.Encoder().encode_lines
        self.head = converter._envelope(schema) if converter.schemas_enabled else None
        # A value is the envelope's head + its payload + "}".
        self.prefix, self.suffix = (self.head, b"}") if self.head is not None else (b"", b"")

    @classmethod
    def build(cls, converter: JsonConverter, schema: Schema) -> "_JsonColumns | None":
        """The writer for ``schema``, or None where it has a field this path leaves to
        ``_JsonWriter`` (nested types, defaults, names msgspec cannot write)."""
        if not schema.fields:
            return None
        checks = []
        for f in schema.fields:
            s, t, name = f.schema, f.schema.type, f.schema.name
            if s.default is not None or any(c in f.name for c in '"\\') or any(ord(c) < 0x20 for c in f.name):
                return None
            many: Any = None  # the column (no nulls) -> its JSON values; None: as they are
            one: Any = None   # a value -> its JSON value (for a column with nulls)
            ints = False
            if name == DECIMAL and t == BYTES:
                types: set[type] = {Decimal}
                if converter.decimal_numeric:
                    many = lambda col: _raws(map(format, col, repeat("f")))  # noqa: E731
                    one = lambda v: msgspec.Raw(format(v, "f").encode())  # noqa: E731
                else:
                    one = _decimal_base64(int(dict(s.parameters).get("scale", 0)))
                    many = _decimals_base64(one)
            elif name == DATE and t == INT32:
                types = {datetime.date}
                many = lambda col: list(map(_days, map(sub, col, repeat(_EPOCH_DATE))))  # noqa: E731
                one = lambda v: (v - _EPOCH_DATE).days  # noqa: E731
            elif name == TIME and t == INT32:
                types, one = {datetime.time}, _time_ms
            elif name == TIMESTAMP and t == INT64:
                types, many, one = {datetime.datetime}, _timestamps_ms, _timestamp_ms
            elif name in (DECIMAL, DATE, TIME, TIMESTAMP):
                return None
            elif t in (INT8, INT16, INT32, INT64):
                types, ints = {int}, True
            elif t == FLOAT64:
                types = {float}
                many = lambda col: _raws(map(java_double_str, col))  # noqa: E731
                one = lambda v: msgspec.Raw(java_double_str(v).encode())  # noqa: E731
            elif t == FLOAT32:
                types = {float}
                many = lambda col: _raws(map(java_float_str, col))  # noqa: E731
                one = lambda v: msgspec.Raw(java_float_str(v).encode())  # noqa: E731
            elif t == BOOLEAN:
                types = {bool}
            elif t == STRING:
                types = {str}
            elif t == BYTES:
                types = {bytes}  # msgspec writes bytes as their base64 text, as b64encode
            else:
                return None
            if s.optional:
                types.add(_NONE_TYPE)
            if one is not None and many is None:
                many = partial(_mapped, one)
            checks.append((f.index, frozenset(types), many, one, ints))
        return cls(converter, schema, checks)

    def __call__(self, rows: Sequence[tuple]) -> Sequence[bytes | None] | None:
        if not rows:
            return []
        if len(set(map(len, rows))) != 1 or len(rows[0]) != self.width:
            return None
        cols: list[Any] = list(zip(*rows))
        for i, types, many, one, ints in self.checks:
            col = cols[i]
            seen = set(map(type, col))
            if not seen <= types:
                return None
            nulls = _NONE_TYPE in seen
            if ints:
                present = list(filter(_not_none, col)) if nulls else col
                if present and (min(present) < _JSON_INT_MIN or max(present) > _JSON_INT_MAX):
                    return None
            elif many is not None:
                cols[i] = list(map(partial(_or_null, one), col)) if nulls else many(col)
        lines = self.encode_lines(list(starmap(self.row, zip(*cols))))
        # The payloads' lengths from the lines (small objects, freed at once); the values
        # are never made one by one: the payloads back to back, in the envelope's affixes.
        payloads = lines.split(b"\n")
        payloads.pop()  # (after the last newline: nothing)
        return PackedValues(lines.replace(b"\n", b""), array("i", map(len, payloads)), self.prefix, self.suffix)


def _mapped(one: Callable[[Any], Any], col: Sequence[Any]) -> list[Any]:
    return list(map(one, col))


def _or_null(one: Callable[[Any], Any], v: Any) -> Any:
    return None if v is None else one(v)


# ================================================================================= schemas
_TYPE_NAMES = frozenset({INT8, INT16, INT32, INT64, FLOAT32, FLOAT64, BOOLEAN, STRING, BYTES, ARRAY, MAP, STRUCT})


def json_schema(schema: Schema) -> dict[str, Any]:
    """Connect's JSON form of a schema, keys in JsonConverter.asJsonSchema's order."""
    out: dict[str, Any] = {"type": schema.type}
    if schema.type == ARRAY:
        out["items"] = json_schema(schema.value_schema) if schema.value_schema else None
    elif schema.type == MAP:
        out["keys"] = json_schema(schema.key_schema) if schema.key_schema else None
        out["values"] = json_schema(schema.value_schema) if schema.value_schema else None
    elif schema.type == STRUCT:
        out["fields"] = [{**json_schema(f.schema), "field": f.name} for f in schema.fields]
    out["optional"] = schema.optional
    if schema.name is not None:
        out["name"] = schema.name
    if schema.version is not None:
        out["version"] = schema.version
    if schema.doc is not None:
        out["doc"] = schema.doc
    if schema.parameters:
        out["parameters"] = dict(schema.parameters)
    if schema.default is not None:
        out["default"] = orjson.Fragment(JsonConverter()._to_json(Schema(schema.type, name=schema.name,
                                                                         parameters=schema.parameters,
                                                                         fields=schema.fields,
                                                                         key_schema=schema.key_schema,
                                                                         value_schema=schema.value_schema),
                                                                  schema.default))
    return out


def schema_from_json(node: Any) -> Schema:
    """A schema from its JSON form (JsonConverter.asConnectSchema)."""
    if not isinstance(node, dict) or node.get("type") not in _TYPE_NAMES:
        raise DataException(f"Unknown schema type: {node.get('type') if isinstance(node, dict) else node}")
    t = node["type"]
    fields: tuple[Field, ...] = ()
    key_schema = value_schema = None
    if t == STRUCT:
        fields = tuple(Field(f["field"], i, schema_from_json(f)) for i, f in enumerate(node.get("fields") or []))
    elif t == ARRAY:
        value_schema = schema_from_json(node.get("items"))
    elif t == MAP:
        key_schema = schema_from_json(node.get("keys"))
        value_schema = schema_from_json(node.get("values"))
    params = node.get("parameters") or {}
    return Schema(t, optional=bool(node.get("optional", False)), name=node.get("name"),
                  version=node.get("version"), doc=node.get("doc"), default=node.get("default"),
                  parameters=tuple(params.items()), fields=fields, key_schema=key_schema,
                  value_schema=value_schema)


# ================================================================================== helpers
def _fragment_default(o: Any) -> Any:
    if isinstance(o, Decimal):
        return orjson.Fragment(format(o, "f").encode())
    raise TypeError


def _decimal_bytes(value: Decimal, scale: int) -> bytes:
    """A decimal's unscaled value as Java's BigInteger.toByteArray (big-endian two's
    complement, shortest)."""
    unscaled = int(value.scaleb(scale).to_integral_value())
    length = max(1, (unscaled + (unscaled < 0)).bit_length() // 8 + 1)
    return unscaled.to_bytes(length, "big", signed=True)


def java_float_str(value: float) -> str:
    """Java's Float.toString: the shortest digits that read back as the same 32-bit float."""
    f32 = struct.unpack("f", struct.pack("f", value))[0]
    for digits in range(1, 10):
        text = f"{f32:.{digits}g}"
        if struct.unpack("f", struct.pack("f", float(text)))[0] == f32:
            return java_double_str(float(text))
    return java_double_str(f32)


def java_string(value: Any) -> str:
    """A value as Java's ``String.valueOf`` prints it (what StringConverter and the file
    sink write): Struct{a=1}, {k=v}, [a, b], true, null."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return java_double_str(value)
    if isinstance(value, Struct):
        parts = [f"{f.name}={java_string(value.values[f.index])}" for f in value.schema.fields
                 if value.values[f.index] is not None]
        return "Struct{" + ",".join(parts) + "}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{java_string(k)}={java_string(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(java_string(v) for v in value) + "]"
    if isinstance(value, (bytes, bytearray)):
        return "[B@" + format(id(value) & 0xFFFFFFF, "x")
    return str(value)


# ================================================================================ registry
CONVERTERS: dict[str, type[Converter]] = {
    "org.apache.kafka.connect.json.JsonConverter": JsonConverter,
    "org.apache.kafka.connect.storage.StringConverter": StringConverter,
    "org.apache.kafka.connect.converters.ByteArrayConverter": ByteArrayConverter,
}

DEFAULT_CONVERTER = "org.apache.kafka.connect.json.JsonConverter"


def make_converter(config: Mapping[str, str], worker: Mapping[str, str], which: str,
                   registries: Callable[[str], Any] | None = None) -> Converter:
    """The ``which`` ('key' or 'value') converter of a connector: its own ``<which>.converter``
    with its ``<which>.converter.*`` keys, else the worker's, else JsonConverter.
    ``registries`` gives the schema registry client of a ``schema.registry.url`` (the
    worker's: the engine's own registry for its URLs)."""
    prefix = f"{which}.converter"
    source = config if config.get(prefix) else worker
    name = (source.get(prefix) or DEFAULT_CONVERTER).strip()
    cls = CONVERTERS.get(name) or next((c for n, c in CONVERTERS.items() if n.rsplit(".", 1)[1] == name), None)
    if cls is None:
        raise ConnectException(f"Invalid value {name} for configuration {prefix}: Class {name} could not be found.")
    subs = {k[len(prefix) + 1:]: str(v) for k, v in source.items() if k.startswith(prefix + ".")}
    converter = cls()
    if registries is not None:
        converter.registries = registries  # type: ignore[attr-defined]
    converter.configure(subs, which == "key")
    return converter


# Confluent's schema-registry converters (they build on the classes above).
from streamsql.runtime.connect.registry_converters import (  # noqa: E402
    AvroConverter, JsonSchemaConverter, ProtobufConverter)

CONVERTERS.update({
    "io.confluent.connect.avro.AvroConverter": AvroConverter,
    "io.confluent.connect.protobuf.ProtobufConverter": ProtobufConverter,
    "io.confluent.connect.json.JsonSchemaConverter": JsonSchemaConverter,
})

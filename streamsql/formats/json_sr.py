"""The JSON_SR format: JSON with a schema registry, in Confluent's wire format.

A payload is the magic byte 0, the 4-byte id of a JSON schema registered under
``<topic>-key``/``<topic>-value``, then JSON text. Reading decodes the JSON exactly as the
JSON format does (ksqlDB's JSON_SR deserializer is its JSON deserializer after the header),
after checking the magic byte and that the schema id is known. Writing registers (once) the
JSON schema ksqlDB derives from the columns, Kafka Connect style::

    {"type":"object","properties":{"FOO":{"connect.index":0,
        "oneOf":[{"type":"null"},{"type":"integer","connect.type":"int32"}]}}}

Inference maps JSON schema types back: ``integer`` is BIGINT unless ``connect.type`` says
int8/16/32, ``number`` DOUBLE, Connect's Decimal/Date/Time/Timestamp titles their types,
``object`` with ``properties`` a STRUCT (ordered by ``connect.index``), with only
``additionalProperties`` a MAP, ``oneOf`` with null is nullable.
"""
from __future__ import annotations

import json
from typing import Any, Sequence

import orjson

from streamsql.errors import KsqlException
from streamsql.formats.base import Codec, CodecContext, FormatOptions, SerdeError
from streamsql.formats.common import topic_of
from streamsql.formats.connect import (
    CompiledSchema,
    RegistryCodec,
    RegistryFormat,
    header,
    json_to_sql,
    schema_id_of,
    sql_to_json,
)
from streamsql.formats.json import JsonCodec, _check_map_keys, _default
from streamsql.schema import Column
from streamsql.types import (
    BIGINT,
    BOOLEAN,
    BYTES,
    DATE,
    DOUBLE,
    INTEGER,
    STRING,
    TIME,
    TIMESTAMP,
    ArrayType,
    BaseType,
    DecimalType,
    Field,
    MapType,
    SqlType,
    StructType,
)

_DECIMAL = "org.apache.kafka.connect.data.Decimal"
_TITLES = {
    "org.apache.kafka.connect.data.Date": DATE,
    "org.apache.kafka.connect.data.Time": TIME,
    "org.apache.kafka.connect.data.Timestamp": TIMESTAMP,
}
_CONNECT_TYPES = {
    "int8": INTEGER, "int16": INTEGER, "int32": INTEGER, "int64": BIGINT, "float32": DOUBLE,
    "float64": DOUBLE, "boolean": BOOLEAN, "string": STRING, "bytes": BYTES,
}


# ============================================================================ schema -> SQL
# Deeper than this, a JSON schema is taken for a recursive one (a $ref cycle). Above what the
# deepest SQL type a statement may declare (streamsql.parser.MAX_NESTING_DEPTH, 64 levels)
# takes in its own schema (two levels a type: a nullable type is a oneOf), so a type reads
# back from its schema as it was declared.
_MAX_SCHEMA_DEPTH = 4 * 64 + 8


def json_schema_to_sql(node: Any, root: Any, depth: int = 0) -> SqlType:
    """The SQL type of a JSON schema node."""
    if depth > _MAX_SCHEMA_DEPTH:
        raise KsqlException("Recursive JSON schema not supported")
    if node is True or node == {} or not isinstance(node, dict):
        return STRING
    ref = node.get("$ref")
    if isinstance(ref, str):
        return json_schema_to_sql(_resolve_ref(ref, root), root, depth + 1)
    for comb in ("oneOf", "anyOf", "allOf"):
        branches = node.get(comb)
        if isinstance(branches, list):
            rest = [b for b in branches if not (isinstance(b, dict) and b.get("type") == "null")]
            if rest:
                return json_schema_to_sql(rest[0], root, depth + 1)
    t = node.get("type")
    if isinstance(t, list):
        rest = [x for x in t if x != "null"]
        t = rest[0] if rest else "null"
    title = node.get("title")
    connect = node.get("connect.type")
    if title == _DECIMAL:
        params = node.get("connect.parameters") or {}
        return DecimalType(int(params.get("connect.decimal.precision", 64)), int(params.get("scale", 0)))
    if title in _TITLES:
        return _TITLES[title]
    if t == "object":
        props = node.get("properties")
        if isinstance(props, dict) and props:
            items = list(props.items())
            if all(isinstance(v, dict) and "connect.index" in v for _, v in items):
                items.sort(key=lambda kv: kv[1]["connect.index"])
            return StructType(tuple(Field(k, json_schema_to_sql(v, root, depth + 1)) for k, v in items))
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            return MapType(STRING, json_schema_to_sql(extra, root, depth + 1))
        if connect == "map":
            return MapType(STRING, STRING)
        return StructType(())
    if t == "array":
        items = node.get("items")
        if connect == "map" and isinstance(items, dict):
            props = items.get("properties") or {}
            if "key" in props and "value" in props:
                return MapType(json_schema_to_sql(props["key"], root, depth + 1),
                               json_schema_to_sql(props["value"], root, depth + 1))
        return ArrayType(json_schema_to_sql(items if isinstance(items, dict) else {}, root, depth + 1))
    if connect in _CONNECT_TYPES:
        return _CONNECT_TYPES[connect]
    if t == "integer":
        return BIGINT
    if t == "number":
        return DOUBLE
    if t == "boolean":
        return BOOLEAN
    if t == "string":
        return STRING
    if t == "null":
        raise KsqlException("JSON schema of type null is not supported")
    return STRING


def _resolve_ref(ref: str, root: Any) -> Any:
    if not ref.startswith("#"):
        raise KsqlException(f"Unsupported JSON schema reference: {ref}")
    node = root
    for part in ref[1:].split("/"):
        if not part:
            continue
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            raise KsqlException(f"Unresolvable JSON schema reference: {ref}")
        node = node[part]
    return node


# ============================================================================ SQL -> schema
def _json_type(t: SqlType, optional: bool = True) -> dict:
    base = t.base
    if isinstance(t, DecimalType):
        out: dict = {"type": "number", "title": _DECIMAL, "connect.version": 1, "connect.type": "bytes",
                     "connect.parameters": {"scale": str(t.scale), "connect.decimal.precision": str(t.precision)}}
    elif base is BaseType.DATE:
        out = {"type": "integer", "title": "org.apache.kafka.connect.data.Date", "connect.version": 1,
               "connect.type": "int32"}
    elif base is BaseType.TIME:
        out = {"type": "integer", "title": "org.apache.kafka.connect.data.Time", "connect.version": 1,
               "connect.type": "int32"}
    elif base is BaseType.TIMESTAMP:
        out = {"type": "integer", "title": "org.apache.kafka.connect.data.Timestamp", "connect.version": 1,
               "connect.type": "int64"}
    elif isinstance(t, ArrayType):
        out = {"type": "array", "items": _json_type(t.item)}
    elif isinstance(t, MapType):
        out = {"type": "object", "additionalProperties": _json_type(t.value), "connect.type": "map"}
    elif isinstance(t, StructType):
        out = _object([(f.name, f.type) for f in t.fields])
    else:
        out = {BaseType.BOOLEAN: {"type": "boolean"},
               BaseType.INTEGER: {"type": "integer", "connect.type": "int32"},
               BaseType.BIGINT: {"type": "integer", "connect.type": "int64"},
               BaseType.DOUBLE: {"type": "number", "connect.type": "float64"},
               BaseType.STRING: {"type": "string"},
               BaseType.BYTES: {"type": "string", "connect.type": "bytes"}}[base]
    if optional:
        return {"oneOf": [{"type": "null"}, out]}
    return out


def _object(fields: Sequence[tuple[str, SqlType]]) -> dict:
    props = {}
    for i, (n, t) in enumerate(fields):
        props[n] = {"connect.index": i, **_json_type(t)}
    return {"type": "object", "properties": props}


def json_schema_for(columns: Sequence[Column], unwrapped: bool) -> dict:
    """The JSON schema ksqlDB registers for these columns."""
    if unwrapped:
        return _json_type(columns[0].type)
    return _object([(c.name, c.type) for c in columns])


# ================================================================================== format
class JsonSrCodec(RegistryCodec):
    """JSON with a schema-registry header: JSON decoding of the declared columns after the
    header; the registered schema is needed only to check the id and for inference."""

    def __init__(self, fmt: RegistryFormat, columns: Sequence[Column], options: FormatOptions,
                 is_key: bool, context: CodecContext | None) -> None:
        super().__init__(fmt, columns, options, is_key, context)
        topic = context.topic if context is not None else topic_of(options.extra)
        self._json = JsonCodec(columns, self.unwrapped, is_key, topic)
        self._known: set[int] = set()
        self._prefix: bytes | None = None

    def decode(self, data: bytes | None) -> tuple | None:
        if data is None:
            return None
        if self._empty_key:
            return ()
        sid = schema_id_of(data)
        if sid not in self._known:
            self._check_id(sid)
        return self._json.decode(data[5:])

    def _check_id(self, sid: int) -> None:
        if self.registry is None:
            raise SerdeError("No schema registry is configured")
        from streamsql.schemaregistry.client import SchemaRegistryError

        try:
            self.registry.get_by_id(sid)
        except SchemaRegistryError as e:
            raise SerdeError(f"Error retrieving JSON schema for id {sid}: {e}") from e
        self._known.add(sid)

    def encode(self, values: tuple | None) -> bytes | None:
        if values is None or self._empty_key:
            return None
        body = self._json.encode(values)
        if body is None:
            return None
        prefix = self._prefix
        if prefix is None:
            prefix = self._prefix = header(self.writer_id())
        return prefix + body

    def writer_id(self) -> int:
        if self.options.schema_id is not None:
            return self.options.schema_id
        text = self.derived_text()
        if self.registry is None or self.subject is None:
            raise SerdeError("No schema registry is configured")
        from streamsql.schemaregistry.client import SchemaRegistryError

        try:
            return self.registry.register(self.subject, "JSON", text)
        except SchemaRegistryError as e:
            raise SerdeError(f"Could not register schema for subject {self.subject}: {e}") from e

    def to_json_form(self, data: bytes | None) -> Any:
        if data is None:
            return None
        schema_id_of(data)
        return self._json.to_json_form(data[5:])

    def from_json_form(self, obj: Any) -> bytes | None:
        if obj is None:
            return None
        if self.options.schema_id is not None:
            sid = self.options.schema_id
        else:
            latest = self.registry.latest_or_none(self.subject) if self.registry and self.subject else None
            sid = latest.schema_id if latest is not None and latest.schema_type == "JSON" else self.writer_id()
        return header(sid) + orjson.dumps(obj, default=_default)


class JsonSrFormat(RegistryFormat):
    """ksqlDB's JSON_SR format."""

    name = "JSON_SR"
    schema_type = "JSON"
    supports_unwrap = True

    def check_type(self, t: SqlType) -> None:
        _check_map_keys(t)

    def codec(self, columns: Sequence[Column], options: FormatOptions, is_key: bool,
              context: CodecContext | None = None) -> Codec:
        return JsonSrCodec(self, columns, options, is_key, context)

    def derive(self, columns: Sequence[Column], options: FormatOptions, is_key: bool,
               unwrapped: bool) -> str:
        return json.dumps(json_schema_for(columns, unwrapped), separators=(",", ":"))

    def compile(self, schema: str, schema_id: int | None, references: dict[str, str],
                options: FormatOptions, is_key: bool) -> CompiledSchema:
        root = json.loads(schema)
        t = json_schema_to_sql(root, root)
        prefix = header(schema_id) if schema_id is not None else b""
        if isinstance(t, StructType) and t.fields:
            fields = tuple((f.name, f.type) for f in t.fields)
            convs = [json_to_sql(ft) for _, ft in fields]
            outs = [sql_to_json(ft) for _, ft in fields]
            names = [n for n, _ in fields]

            def read(data: bytes) -> Any:
                obj = orjson.loads(data[5:])
                if obj is None:
                    return None
                return tuple(c(obj.get(n)) for n, c in zip(names, convs))

            def write(values: Any) -> bytes:
                return prefix + orjson.dumps({n: o(v) for n, o, v in zip(names, outs, values)})
            return CompiledSchema(schema_id, fields, None, read, write)
        conv, out = json_to_sql(t), sql_to_json(t)

        def read_one(data: bytes) -> Any:
            return conv(orjson.loads(data[5:]))

        def write_one(value: Any) -> bytes:
            return prefix + orjson.dumps(out(value))
        return CompiledSchema(schema_id, None, t, read_one, write_one)

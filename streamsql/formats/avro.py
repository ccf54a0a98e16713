"""The AVRO format: Confluent's wire format (magic byte, schema id, Avro binary) via fastavro.

Type mapping (ksqlDB's, through Kafka Connect's AvroData):

=============== =====================================================================
BOOLEAN         boolean
INTEGER         int
BIGINT          long
DOUBLE          double (float reads as DOUBLE)
STRING          string (enum reads as STRING)
BYTES           bytes (fixed reads as BYTES)
DECIMAL(p, s)   bytes with logicalType decimal, precision p, scale s
DATE            int with logicalType date (days)
TIME            int with logicalType time-millis
TIMESTAMP       long with logicalType timestamp-millis
ARRAY<T>        array of T
MAP<STRING, V>  written as ksqlDB writes it: an array of ``{key, value}`` records marked
                ``"connect.internal.type": "MapEntry"``; Avro maps read as MAP<STRING, V>
STRUCT          record named after its column (``<parent>_<FIELD>``)
=============== =====================================================================

Everything ksqlDB writes is nullable (``["null", T]`` with ``"default": null``). Values are
records named ``io.confluent.ksql.avro_schemas.KsqlDataSourceSchema`` unless
``VALUE_SCHEMA_FULL_NAME`` says otherwise; a single key column and WRAP_SINGLE_VALUE=false
values are written bare. Unions of several non-null types read as a STRUCT with one field
per branch, as Connect does.

Payloads are read and written by code generated once per schema (``avro_codegen``): bytes go
straight to row tuples. Recursive schemas go through fastavro instead, with date/time logical
types stripped from the schema it sees (their encoding is plain int/long, and streamsql's
values are those ints).
"""
from __future__ import annotations

import copy
import io
import json
from decimal import Decimal
from typing import Any, Callable, Sequence

import fastavro

from streamsql.errors import KsqlException
from streamsql.formats import avro_codegen
from streamsql.formats.base import FormatOptions
from streamsql.formats.connect import CompiledSchema, RegistryFormat, header
from streamsql.schema import Column
from streamsql.schemaregistry.compat import parse_avro
from streamsql.types import (
    BIGINT,
    DECIMAL_CONTEXT,
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


DEFAULT_FULL_NAME = "io.confluent.ksql.avro_schemas.KsqlDataSourceSchema"
MAP_ENTRY = "MapEntry"
_STRIP_LOGICAL = frozenset({"date", "time-millis", "time-micros", "timestamp-millis",
                            "timestamp-micros", "local-timestamp-millis", "local-timestamp-micros",
                            "uuid"})
_CONNECT_NAMES = {
    "org.apache.kafka.connect.data.Date": DATE,
    "org.apache.kafka.connect.data.Time": TIME,
    "org.apache.kafka.connect.data.Timestamp": TIMESTAMP,
}
Conv = Callable[[Any], Any]


# =========================================================================== schema -> SQL
def _is_map_entry(node: dict) -> bool:
    items = node.get("items")
    if not isinstance(items, dict) or items.get("type") != "record":
        return False
    names = [f["name"] for f in items.get("fields", ())]
    return names == ["key", "value"] and (
        items.get("connect.internal.type") == MAP_ENTRY
        or items.get("fullname") == "io.confluent.connect.avro.MapEntry")


def _non_null(node: dict) -> list[dict]:
    return [b for b in node["branches"] if b["type"] != "null"]


def avro_to_sql(node: dict, seen: tuple = ()) -> SqlType:
    """The SQL type a (parsed, resolved) Avro schema node reads as."""
    if any(node is s for s in seen):
        raise KsqlException(f"Recursive Avro schema not supported: {node.get('fullname')}")
    t = node["type"]
    logical = node.get("logicalType")
    connect = node.get("connect.name")
    if t == "union":
        branches = _non_null(node)
        if len(branches) == 1:
            return avro_to_sql(branches[0], seen)
        return StructType(tuple(Field(_branch_name(b), avro_to_sql(b, seen)) for b in branches))
    if t in ("bytes", "fixed") and (logical == "decimal" or connect == "org.apache.kafka.connect.data.Decimal"):
        params = node.get("connect.parameters") or {}
        precision = node.get("precision", params.get("connect.decimal.precision", 64))
        scale = node.get("scale", params.get("scale", 0))
        return DecimalType(int(precision), int(scale))
    if connect in _CONNECT_NAMES:
        return _CONNECT_NAMES[connect]
    if t == "int":
        return {"date": DATE, "time-millis": TIME}.get(logical, INTEGER)
    if t == "long":
        return TIMESTAMP if logical == "timestamp-millis" else BIGINT
    if t in ("float", "double"):
        return DOUBLE
    if t == "boolean":
        return BOOLEAN
    if t in ("string", "enum"):
        return STRING
    if t in ("bytes", "fixed"):
        return BYTES
    if t == "array":
        if _is_map_entry(node):
            key, value = node["items"]["fields"]
            return MapType(avro_to_sql(key["type"], seen + (node,)), avro_to_sql(value["type"], seen + (node,)))
        return ArrayType(avro_to_sql(node["items"], seen + (node,)))
    if t == "map":
        return MapType(STRING, avro_to_sql(node["values"], seen + (node,)))
    if t == "record":
        return StructType(tuple(Field(f["name"], avro_to_sql(f["type"], seen + (node,)))
                                for f in node["fields"]))
    if t == "null":
        raise KsqlException("Avro schema of type null is not supported")
    raise KsqlException(f"Unsupported Avro type: {t}")


def _branch_name(b: dict) -> str:
    if b["type"] in ("record", "enum", "fixed"):
        return b["shortname"]
    return b["type"]


# ====================================================================== raw <-> SQL values
def _reader(node: dict) -> Conv | None:
    """fastavro's value of ``node`` -> SQL value (None: identity). Applied to non-null values."""
    t = node["type"]
    if t == "union":
        branches = _non_null(node)
        if len(branches) == 1:
            return _reader(branches[0])
        return _union_reader(branches)
    if t == "array":
        if _is_map_entry(node):
            kf, vf = node["items"]["fields"]
            kc, vc = _reader(kf["type"]), _reader(vf["type"])
            if kc is None and vc is None:
                return lambda v: {e["key"]: e["value"] for e in v}
            kc = kc or _ident
            vc = vc or _ident
            return lambda v: {(None if e["key"] is None else kc(e["key"])):
                              (None if e["value"] is None else vc(e["value"])) for e in v}
        item = _reader(node["items"])
        if item is None:
            return None
        return lambda v: [None if x is None else item(x) for x in v]
    if t == "map":
        value = _reader(node["values"])
        if value is None:
            return None
        return lambda v: {k: (None if x is None else value(x)) for k, x in v.items()}
    if t == "record":
        convs = [(f["name"], _reader(f["type"])) for f in node["fields"]]
        if all(c is None for _, c in convs):
            return None
        return lambda v: {n: (v[n] if c is None or v[n] is None else c(v[n])) for n, c in convs}
    return None


def _ident(v: Any) -> Any:
    return v


_PY_TYPES = {
    "boolean": (bool,), "int": (int,), "long": (int,), "float": (float, int), "double": (float, int),
    "string": (str,), "enum": (str,), "bytes": (bytes,), "fixed": (bytes,), "array": (list,),
    "map": (dict,), "record": (dict,),
}


def _union_reader(branches: list[dict]) -> Conv:
    """A multi-type union as Connect reads it: a struct with the matching branch's field set."""
    names = [_branch_name(b) for b in branches]
    convs = [(_reader(b) or _ident, _PY_TYPES.get(b["type"], (object,))) for b in branches]

    def read(v: Any) -> dict:
        out = dict.fromkeys(names)
        for name, (conv, types) in zip(names, convs):
            if isinstance(v, types) and not (isinstance(v, bool) and bool not in types):
                out[name] = conv(v)
                break
        return out
    return read


def _writer(node: dict) -> Conv | None:
    """SQL value -> what fastavro writes for ``node`` (None: identity). Non-null values."""
    t = node["type"]
    if t == "union":
        branches = _non_null(node)
        if len(branches) == 1:
            return _writer(branches[0])
        names = [_branch_name(b) for b in branches]
        convs = [_writer(b) or _ident for b in branches]

        def union(v: Any) -> Any:
            for name, conv in zip(names, convs):
                x = v.get(name)
                if x is not None:
                    return conv(x)
            return None
        return union
    if t == "array":
        if _is_map_entry(node):
            kf, vf = node["items"]["fields"]
            kc, vc = _writer(kf["type"]) or _ident, _writer(vf["type"]) or _ident
            return lambda v: [{"key": kc(k) if k is not None else None,
                               "value": vc(x) if x is not None else None} for k, x in v.items()]
        item = _writer(node["items"])
        if item is None:
            return None
        return lambda v: [None if x is None else item(x) for x in v]
    if t == "map":
        value = _writer(node["values"])
        if value is None:
            return None
        return lambda v: {k: (None if x is None else value(x)) for k, x in v.items()}
    if t == "record":
        fields = []
        for f in node["fields"]:
            default = f.get("default") if "default" in f and not _nullable(f["type"]) else None
            fields.append((f["name"], _writer(f["type"]), default))

        def record(v: Any) -> dict:
            out = {}
            for name, conv, default in fields:
                x = v.get(name)
                out[name] = default if x is None else (x if conv is None else conv(x))
            return out
        return record
    if t in ("bytes", "fixed") and node.get("logicalType") == "decimal":
        scale = int(node.get("scale", 0))
        quantum = Decimal(1).scaleb(-scale)
        return lambda v: v.quantize(quantum, context=DECIMAL_CONTEXT)
    if t in ("float", "double"):
        return lambda v: float(v)
    return None


def _nullable(node: dict) -> bool:
    return node["type"] == "null" or (node["type"] == "union" and any(b["type"] == "null" for b in node["branches"]))


def _strip(doc: Any) -> Any:
    """The schema fastavro sees: logical types whose values streamsql keeps as ints removed."""
    if isinstance(doc, list):
        return [_strip(x) for x in doc]
    if isinstance(doc, dict):
        out = {k: _strip(v) for k, v in doc.items()}
        if out.get("logicalType") in _STRIP_LOGICAL:
            del out["logicalType"]
        return out
    return doc


# ================================================================================ SQL -> schema
def _avro_type(t: SqlType, name: str, optional: bool = True) -> Any:
    base = t.base
    if isinstance(t, DecimalType):
        out: Any = {"type": "bytes", "scale": t.scale, "precision": t.precision,
                    "connect.version": 1,
                    "connect.parameters": {"scale": str(t.scale), "connect.decimal.precision": str(t.precision)},
                    "connect.name": "org.apache.kafka.connect.data.Decimal", "logicalType": "decimal"}
    elif base is BaseType.DATE:
        out = {"type": "int", "connect.version": 1, "connect.name": "org.apache.kafka.connect.data.Date",
               "logicalType": "date"}
    elif base is BaseType.TIME:
        out = {"type": "int", "connect.version": 1, "connect.name": "org.apache.kafka.connect.data.Time",
               "logicalType": "time-millis"}
    elif base is BaseType.TIMESTAMP:
        out = {"type": "long", "connect.version": 1,
               "connect.name": "org.apache.kafka.connect.data.Timestamp", "logicalType": "timestamp-millis"}
    elif isinstance(t, ArrayType):
        out = {"type": "array", "items": _avro_type(t.item, name)}
    elif isinstance(t, MapType):
        out = {"type": "array", "items": {
            "type": "record", "name": _short(name), **_ns(name),
            "fields": [{"name": "key", "type": _avro_type(t.key, name + "_key"), "default": None},
                       {"name": "value", "type": _avro_type(t.value, name + "_value"), "default": None}],
            "connect.internal.type": MAP_ENTRY}}
    elif isinstance(t, StructType):
        out = _record(name, [(f.name, f.type) for f in t.fields])
    else:
        out = {BaseType.BOOLEAN: "boolean", BaseType.INTEGER: "int", BaseType.BIGINT: "long",
               BaseType.DOUBLE: "double", BaseType.STRING: "string", BaseType.BYTES: "bytes"}[base]
    return ["null", out] if optional else out


def _short(full: str) -> str:
    return full.rsplit(".", 1)[-1]


def _ns(full: str) -> dict:
    return {"namespace": full.rsplit(".", 1)[0]} if "." in full else {}


def _record(full_name: str, fields: Sequence[tuple[str, SqlType]]) -> dict:
    return {"type": "record", "name": _short(full_name), **_ns(full_name),
            "fields": [{"name": n, "type": _avro_type(t, f"{full_name}_{n}"), "default": None}
                       for n, t in fields]}


def avro_schema_for(columns: Sequence[Column], full_name: str | None, unwrapped: bool) -> Any:
    """The Avro schema ksqlDB writes for these columns (parsed JSON form)."""
    name = full_name or DEFAULT_FULL_NAME
    if unwrapped:
        return _avro_type(columns[0].type, name)
    return _record(name, [(c.name, c.type) for c in columns])


# ==================================================================================== format
def _check_map_keys(t: SqlType) -> None:
    if isinstance(t, MapType):
        if t.key.base is not BaseType.STRING:
            raise KsqlException("Avro only supports MAPs with STRING keys")
        _check_map_keys(t.value)
    elif isinstance(t, ArrayType):
        _check_map_keys(t.item)
    elif isinstance(t, StructType):
        for f in t.fields:
            _check_map_keys(f.type)


class AvroFormat(RegistryFormat):
    """ksqlDB's AVRO format."""

    name = "AVRO"
    schema_type = "AVRO"
    supports_unwrap = True
    supports_schema_full_name = True

    def check_type(self, t: SqlType) -> None:
        _check_map_keys(t)

    def derive(self, columns: Sequence[Column], options: FormatOptions, is_key: bool,
               unwrapped: bool) -> str:
        return json.dumps(avro_schema_for(columns, options.schema_name, unwrapped), separators=(",", ":"))

    def compile(self, schema: str, schema_id: int | None, references: dict[str, str],
                options: FormatOptions, is_key: bool) -> CompiledSchema:
        try:
            doc = json.loads(schema)
        except ValueError:
            doc = schema.strip()
        node = parse_avro(doc)
        if node["type"] == "record":
            fields = tuple((f["name"], avro_to_sql(f["type"], (node,))) for f in node["fields"])
            single = None
        else:
            fields = None
            single = avro_to_sql(node)
        prefix = header(schema_id) if schema_id is not None else b""
        try:
            read = avro_codegen.row_reader(node, len(prefix))
            write = avro_codegen.row_writer(node, prefix)
        except avro_codegen.Unsupported:
            read, write = _fastavro_codec(doc, node, fields is not None, prefix)
        return CompiledSchema(schema_id, fields, single, read, write)


def _fastavro_codec(doc: Any, node: dict, wrapped: bool, prefix: bytes) -> tuple[Callable, Callable]:
    """Reader and writer through fastavro, for schemas the generated code does not handle
    (recursive types)."""
    parsed = fastavro.parse_schema(_strip(copy.deepcopy(doc)))
    skip = len(prefix)
    read_raw = fastavro.schemaless_reader
    write_raw = fastavro.schemaless_writer
    BytesIO = io.BytesIO
    if wrapped:
        names = [f["name"] for f in node["fields"]]
        convs = [_reader(f["type"]) for f in node["fields"]]
        wconvs = []
        for f in node["fields"]:
            default = f.get("default") if "default" in f and not _nullable(f["type"]) else None
            wconvs.append((f["name"], _writer(f["type"]), default))
        read_row = _row_reader(names, convs)
        write_row = _row_writer(wconvs)

        def read(data: bytes) -> Any:
            bio = BytesIO(data)
            bio.seek(skip)
            return read_row(read_raw(bio, parsed, None))

        def write(values: Any) -> bytes:
            bio = BytesIO()
            bio.write(prefix)
            write_raw(bio, parsed, write_row(values))
            return bio.getvalue()
        return read, write
    conv = _reader(node)
    wconv = _writer(node)

    def read_one(data: bytes) -> Any:
        bio = BytesIO(data)
        bio.seek(skip)
        v = read_raw(bio, parsed, None)
        return v if conv is None or v is None else conv(v)

    def write_one(value: Any) -> bytes:
        bio = BytesIO()
        bio.write(prefix)
        write_raw(bio, parsed, value if wconv is None or value is None else wconv(value))
        return bio.getvalue()
    return read_one, write_one


def _row_reader(names: list[str], convs: list[Conv | None]) -> Callable[[dict], tuple]:
    """Generated: a fastavro record dict -> tuple of field values."""
    ns: dict[str, Any] = {}
    items = []
    for i, (n, c) in enumerate(zip(names, convs)):
        ns[f"n{i}"] = n
        if c is None:
            items.append(f"g(n{i})")
        else:
            ns[f"c{i}"] = c
            items.append(f"(None if (x := g(n{i})) is None else c{i}(x))")
    src = "def read_row(r):\n    g = r.get\n    return (" + "".join(x + ", " for x in items) + ")"
    exec(src, ns)  # noqa: S102 - generated from field names bound as constants
    return ns["read_row"]


def _row_writer(fields: list[tuple[str, Conv | None, Any]]) -> Callable[[tuple], dict]:
    """Generated: a tuple of field values -> the record dict fastavro writes."""
    ns: dict[str, Any] = {}
    items = []
    for i, (n, c, default) in enumerate(fields):
        ns[f"n{i}"] = n
        ns[f"d{i}"] = default
        if c is None:
            items.append(f"n{i}: (d{i} if v[{i}] is None else v[{i}])")
        else:
            ns[f"c{i}"] = c
            items.append(f"n{i}: (d{i} if v[{i}] is None else c{i}(v[{i}]))")
    src = "def write_row(v):\n    return {" + ", ".join(items) + "}"
    exec(src, ns)  # noqa: S102 - generated from field names bound as constants
    return ns["write_row"]

"""The PROTOBUF and PROTOBUF_NOSR formats: protobuf messages built from schemas at run time.

PROTOBUF payloads are Confluent-framed: magic byte 0, the 4-byte schema id, the message
indexes (zigzag varints: a count then the path of the message in the file; ``[0]`` is the
single byte 0), then the protobuf bytes. PROTOBUF_NOSR payloads are the bare protobuf bytes of
the schema derived from the columns; no registry is involved.

Schemas are .proto text (parsed by ``schemaregistry.protoparse``), turned into message classes
once per schema through a private ``DescriptorPool`` (many schemas declare the same names).
Keys and values are always messages (no unwrapped singles). Type mapping, as Confluent's
ProtobufConverter and ksqlDB use it:

=============== ==================================================================
BOOLEAN         bool
INTEGER         int32 (sint32, sfixed32 read as INTEGER)
BIGINT          int64 (uint32, uint64, sint64, fixed*, sfixed64 read as BIGINT)
DOUBLE          double (float reads as DOUBLE)
STRING          string (enums read as their value names)
BYTES           bytes
DECIMAL(p, s)   confluent.type.Decimal with ``(confluent.field_meta)`` precision/scale
DATE            google.type.Date
TIME            google.type.TimeOfDay
TIMESTAMP       google.protobuf.Timestamp
ARRAY<T>        repeated T
MAP<STRING, V>  map<string, V>
STRUCT          a nested message ``ConnectDefault<n>``
=============== ==================================================================

proto3 has no nulls: a NULL scalar is written as unset and reads back as its default (0,
"", false, []), a NULL message reads back as NULL. With
``VALUE_PROTOBUF_NULLABLE_REPRESENTATION='WRAPPER'`` primitives are written as
``google.protobuf.*Value`` wrappers, with ``'OPTIONAL'`` as proto3 ``optional`` fields, and
NULL survives.
"""
from __future__ import annotations

import datetime
from decimal import Decimal
from typing import Any, Callable, Sequence

from streamsql.errors import KsqlException
from streamsql.formats.base import FormatOptions, SerdeError
from streamsql.formats.connect import (
    CompiledSchema,
    RegistryFormat,
    decimal_from_unscaled,
    header,
    match_name,
    unscaled_bytes,
)
from streamsql.schema import Column
from streamsql.schemaregistry.protoparse import ProtoFile, build_pool
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

Conv = Callable[[Any], Any]
DEFAULT_MESSAGE = "ConnectDefault"
NULLABLE_REPRESENTATION = "NULLABLE_REPRESENTATION"

# FieldDescriptor.TYPE_* numbers.
_T_DOUBLE, _T_FLOAT, _T_INT64, _T_UINT64, _T_INT32, _T_FIXED64, _T_FIXED32, _T_BOOL, _T_STRING = range(1, 10)
_T_GROUP, _T_MESSAGE, _T_BYTES, _T_UINT32, _T_ENUM, _T_SFIXED32, _T_SFIXED64, _T_SINT32, _T_SINT64 = range(10, 19)
_SCALAR_SQL = {
    _T_DOUBLE: DOUBLE, _T_FLOAT: DOUBLE, _T_INT64: BIGINT, _T_UINT64: BIGINT, _T_INT32: INTEGER,
    _T_FIXED64: BIGINT, _T_FIXED32: BIGINT, _T_BOOL: BOOLEAN, _T_STRING: STRING, _T_BYTES: BYTES,
    _T_UINT32: BIGINT, _T_ENUM: STRING, _T_SFIXED32: INTEGER, _T_SFIXED64: BIGINT, _T_SINT32: INTEGER,
    _T_SINT64: BIGINT,
}
_WRAPPERS = {
    "google.protobuf.BoolValue": BOOLEAN, "google.protobuf.Int32Value": INTEGER,
    "google.protobuf.UInt32Value": BIGINT, "google.protobuf.Int64Value": BIGINT,
    "google.protobuf.UInt64Value": BIGINT, "google.protobuf.FloatValue": DOUBLE,
    "google.protobuf.DoubleValue": DOUBLE, "google.protobuf.StringValue": STRING,
    "google.protobuf.BytesValue": BYTES,
}
_WRAPPER_FOR = {
    BaseType.BOOLEAN: "google.protobuf.BoolValue", BaseType.INTEGER: "google.protobuf.Int32Value",
    BaseType.BIGINT: "google.protobuf.Int64Value", BaseType.DOUBLE: "google.protobuf.DoubleValue",
    BaseType.STRING: "google.protobuf.StringValue", BaseType.BYTES: "google.protobuf.BytesValue",
}
_TIMESTAMP = "google.protobuf.Timestamp"
_DATE = "google.type.Date"
_TIME = "google.type.TimeOfDay"
_DECIMAL = "confluent.type.Decimal"
_EPOCH_ORDINAL = datetime.date(1970, 1, 1).toordinal()


# ================================================================================== indexes
def _zigzag_varint(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        b = z & 0x7F
        z >>= 7
        if z:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def encode_indexes(path: Sequence[int]) -> bytes:
    """Confluent's message-index prefix for a message path ([0] is the single byte 0)."""
    if list(path) == [0]:
        return b"\x00"
    return _zigzag_varint(len(path)) + b"".join(_zigzag_varint(i) for i in path)


def decode_indexes(data: bytes, pos: int) -> tuple[list[int], int]:
    """The message path after the 5-byte header and the offset of the message bytes."""
    values = []
    count = None
    while count is None or len(values) < count:
        z = shift = 0
        while True:
            if pos >= len(data):
                raise SerdeError("Invalid message indexes")
            b = data[pos]
            pos += 1
            z |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        n = (z >> 1) ^ -(z & 1)
        if count is None:
            if n == 0:
                return [0], pos
            if n < 0 or n > 100:
                raise SerdeError("Invalid message indexes")
            count = n
        else:
            values.append(n)
    return values, pos


# ============================================================================ descriptors
def _meta_params(pf_field: Any) -> dict[str, str]:
    meta = pf_field.options.get("(confluent.field_meta)") if pf_field is not None else None
    params = meta.get("params") if isinstance(meta, dict) else None
    out = {}
    if isinstance(params, dict):
        params = [params]
    for p in params or ():
        if isinstance(p, dict) and "key" in p:
            out[str(p["key"])] = str(p.get("value"))
    return out


class _Translator:
    """Builds, for one message descriptor, the SQL types and value converters of its fields."""

    def __init__(self, pf: ProtoFile | None) -> None:
        self.pf = pf
        self._proto_fields: dict[str, dict[str, Any]] = {}

    def proto_field(self, msg_desc: Any, name: str) -> Any:
        if self.pf is None:
            return None
        fields = self._proto_fields.get(msg_desc.full_name)
        if fields is None:
            m = self.pf.find_message(msg_desc.full_name)
            fields = {f.name: f for f in m.fields} if m is not None else {}
            self._proto_fields[msg_desc.full_name] = fields
        return fields.get(name)

    # ------------------------------------------------------------------------ types
    def message_type(self, desc: Any, seen: tuple = ()) -> StructType:
        if desc.full_name in seen:
            raise KsqlException(f"Recursive protobuf schema not supported: {desc.full_name}")
        return StructType(tuple(Field(f.name, self.field_type(desc, f, seen + (desc.full_name,)))
                                for f in desc.fields))

    def field_type(self, msg: Any, f: Any, seen: tuple = ()) -> SqlType:
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            kf, vf = f.message_type.fields_by_name["key"], f.message_type.fields_by_name["value"]
            return MapType(self.single_type(f.message_type, kf, seen), self.single_type(f.message_type, vf, seen))
        t = self.single_type(msg, f, seen)
        return ArrayType(t) if f.is_repeated else t

    def single_type(self, msg: Any, f: Any, seen: tuple) -> SqlType:
        if f.type == _T_MESSAGE or f.type == _T_GROUP:
            name = f.message_type.full_name
            if name in _WRAPPERS:
                return _WRAPPERS[name]
            if name == _TIMESTAMP:
                return TIMESTAMP
            if name == _DATE:
                return DATE
            if name == _TIME:
                return TIME
            if name == _DECIMAL:
                params = _meta_params(self.proto_field(msg, f.name))
                return DecimalType(int(params.get("precision", 64)), int(params.get("scale", 0)))
            return self.message_type(f.message_type, seen)
        return _SCALAR_SQL[f.type]

    # ------------------------------------------------------------------------ reading
    def message_reader(self, desc: Any) -> Callable[[Any], tuple]:
        """message -> tuple of its field values (generated straight-line code)."""
        ns: dict[str, Any] = {}
        items = []
        for i, f in enumerate(desc.fields):
            ns[f"n{i}"] = f.name
            conv = self.field_reader(desc, f)
            ns[f"c{i}"] = conv
            if f.is_repeated:
                items.append(f"c{i}(getattr(m, n{i}))")
            elif f.type == _T_MESSAGE or f.has_presence:
                items.append(f"(c{i}(getattr(m, n{i})) if m.HasField(n{i}) else None)")
            elif conv is _ident:
                items.append(f"getattr(m, n{i})")
            else:
                items.append(f"c{i}(getattr(m, n{i}))")
        src = "def read(m):\n    return (" + "".join(x + ", " for x in items) + ")"
        exec(src, ns)  # noqa: S102 - generated from field names bound as constants
        return ns["read"]

    def field_reader(self, msg: Any, f: Any) -> Conv:
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            vf = f.message_type.fields_by_name["value"]
            vc = self.value_reader(f.message_type, vf)
            if vc is _ident:
                return lambda v: dict(v)
            return lambda v: {k: vc(x) for k, x in v.items()}
        one = self.value_reader(msg, f)
        if f.is_repeated:
            if one is _ident:
                return list
            return lambda v: [one(x) for x in v]
        return one

    def value_reader(self, msg: Any, f: Any) -> Conv:
        if f.type == _T_ENUM:
            names = {v.number: v.name for v in f.enum_type.values}
            return lambda v: names.get(v, str(v))
        if f.type != _T_MESSAGE:
            return _ident
        name = f.message_type.full_name
        if name in _WRAPPERS:
            return _wrapper_value
        if name == _TIMESTAMP:
            return lambda v: v.seconds * 1000 + v.nanos // 1_000_000
        if name == _DATE:
            return _date_days
        if name == _TIME:
            return lambda v: ((v.hours * 60 + v.minutes) * 60 + v.seconds) * 1000 + v.nanos // 1_000_000
        if name == _DECIMAL:
            params = _meta_params(self.proto_field(msg, f.name))
            default_scale = int(params.get("scale", 0))
            return lambda v: decimal_from_unscaled(v.value, v.scale if v.scale or not default_scale else default_scale)
        read = self.message_reader(f.message_type)
        names = [sub.name for sub in f.message_type.fields]
        return lambda v: dict(zip(names, read(v)))

    # ------------------------------------------------------------------------ writing
    def message_writer(self, desc: Any) -> Callable[[tuple], dict]:
        """tuple of field values -> constructor keywords (None fields left unset)."""
        parts = [(f.name, self.field_writer(desc, f)) for f in desc.fields]

        def write(values: Sequence[Any]) -> dict:
            kw = {}
            for (name, conv), v in zip(parts, values):
                if v is not None:
                    kw[name] = conv(v)
            return kw
        return write

    def field_writer(self, msg: Any, f: Any) -> Conv:
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            vf = f.message_type.fields_by_name["value"]
            vc = self.value_writer(f.message_type, vf)
            default = _default_of(vf)
            return lambda v: {k: (default if x is None else vc(x)) for k, x in v.items() if k is not None}
        one = self.value_writer(msg, f)
        if f.is_repeated:
            default = _default_of(f)
            return lambda v: [default if x is None else one(x) for x in v]
        return one

    def value_writer(self, msg: Any, f: Any) -> Conv:
        if f.type in (_T_DOUBLE, _T_FLOAT):
            return float
        if f.type != _T_MESSAGE:
            return _ident
        name = f.message_type.full_name
        if name in _WRAPPERS:
            return lambda v: {"value": v}
        if name == _TIMESTAMP:
            return lambda v: {"seconds": v // 1000, "nanos": (v % 1000) * 1_000_000}
        if name == _DATE:
            return _date_message
        if name == _TIME:
            return lambda v: {"hours": v // 3_600_000, "minutes": v // 60_000 % 60,
                              "seconds": v // 1000 % 60, "nanos": v % 1000 * 1_000_000}
        if name == _DECIMAL:
            params = _meta_params(self.proto_field(msg, f.name))
            precision = int(params["precision"]) if "precision" in params else None

            def dec(v: Decimal) -> dict:
                scale = max(0, -int(v.as_tuple().exponent))
                out = {"value": unscaled_bytes(v, scale), "scale": scale}
                if precision is not None:
                    out["precision"] = precision
                return out
            return dec
        write = self.message_writer(f.message_type)
        names = [sub.name for sub in f.message_type.fields]
        return lambda v: write([v.get(n) for n in names])


def _ident(v: Any) -> Any:
    return v


def _wrapper_value(v: Any) -> Any:
    return v.value


def _date_days(v: Any) -> int | None:
    if not v.year:
        return None
    return datetime.date(v.year, v.month or 1, v.day or 1).toordinal() - _EPOCH_ORDINAL


def _date_message(days: int) -> dict:
    d = datetime.date.fromordinal(days + _EPOCH_ORDINAL)
    return {"year": d.year, "month": d.month, "day": d.day}


def _default_of(f: Any) -> Any:
    if f.type == _T_MESSAGE:
        return {}
    if f.type in (_T_DOUBLE, _T_FLOAT):
        return 0.0
    if f.type == _T_BOOL:
        return False
    if f.type == _T_STRING:
        return ""
    if f.type == _T_BYTES:
        return b""
    return 0


# ============================================================================ SQL -> .proto
class _ProtoWriter:
    """Renders the .proto text ksqlDB registers for a list of columns."""

    def __init__(self, representation: str | None, map_entries: bool = False) -> None:
        self.counter = 1
        self.imports: set[str] = set()
        self.representation = (representation or "").upper()
        # Maps as ``repeated <Name>Entry`` with the entry message spelt out, as Confluent's
        # ProtobufData builds them (what ksqlDB's protobuf query answers show).
        self.map_entries = map_entries

    def message(self, name: str, fields: Sequence[tuple[str, SqlType]], indent: str) -> list[str]:
        lines = [f"{indent}message {name} {{"]
        nested: list[list[str]] = []
        for i, (fname, t) in enumerate(fields, 1):
            decl, sub = self.field(fname, t, indent + "  ")
            lines.append(f"{indent}  {decl} = {i}{self.field_options(t)};")
            nested.extend(sub)
        for sub in nested:
            lines.append("")
            lines.extend(sub)
        lines.append(f"{indent}}}")
        return lines

    def field_options(self, t: SqlType) -> str:
        if isinstance(t, DecimalType):
            return (' [(confluent.field_meta) = { params: [{ key: "precision", value: "%d" }, '
                    '{ key: "scale", value: "%d" }] }]' % (t.precision, t.scale))
        return ""

    def field(self, name: str, t: SqlType, indent: str) -> tuple[str, list[list[str]]]:
        if isinstance(t, ArrayType):
            if isinstance(t.item, (ArrayType, MapType)):
                raise KsqlException(f"PROTOBUF cannot hold nested collections: {t}")
            tname, sub = self.type_name(t.item, indent, wrap=False)
            return f"repeated {tname} {name}", sub
        if isinstance(t, MapType):
            if self.map_entries:  # (an entry is a message: its value may be a collection)
                self.counter += 1
                entry = f"{DEFAULT_MESSAGE}{self.counter}Entry"
                return f"repeated {entry} {name}", [self.message(entry, [("key", t.key), ("value", t.value)],
                                                                 indent)]
            if isinstance(t.value, (ArrayType, MapType)):
                raise KsqlException(f"PROTOBUF cannot hold nested collections: {t}")
            tname, sub = self.type_name(t.value, indent, wrap=False)
            return f"map<string, {tname}> {name}", sub
        tname, sub = self.type_name(t, indent, wrap=True)
        if self.representation == "OPTIONAL" and t.is_primitive and not isinstance(t, DecimalType) \
                and t.base not in (BaseType.DATE, BaseType.TIME, BaseType.TIMESTAMP):
            return f"optional {tname} {name}", sub
        return f"{tname} {name}", sub

    def type_name(self, t: SqlType, indent: str, wrap: bool) -> tuple[str, list[list[str]]]:
        base = t.base
        if isinstance(t, DecimalType):
            self.imports.add("confluent/meta.proto")
            self.imports.add("confluent/type/decimal.proto")
            return _DECIMAL, []
        if base is BaseType.DATE:
            self.imports.add("google/type/date.proto")
            return _DATE, []
        if base is BaseType.TIME:
            self.imports.add("google/type/timeofday.proto")
            return _TIME, []
        if base is BaseType.TIMESTAMP:
            self.imports.add("google/protobuf/timestamp.proto")
            return _TIMESTAMP, []
        if isinstance(t, StructType):
            self.counter += 1
            name = f"{DEFAULT_MESSAGE}{self.counter}"
            return name, [self.message(name, [(f.name, f.type) for f in t.fields], indent)]
        if wrap and self.representation == "WRAPPER" and base in _WRAPPER_FOR:
            self.imports.add("google/protobuf/wrappers.proto")
            return _WRAPPER_FOR[base], []
        return {BaseType.BOOLEAN: "bool", BaseType.INTEGER: "int32", BaseType.BIGINT: "int64",
                BaseType.DOUBLE: "double", BaseType.STRING: "string", BaseType.BYTES: "bytes"}[base], []


def proto_schema_for(columns: Sequence[Column], full_name: str | None, representation: str | None,
                     map_entries: bool = False) -> str:
    """The .proto text ksqlDB writes for these columns (``map_entries``: maps as repeated
    entry messages, as in the ``protoSchema`` of ksqlDB's protobuf query answers)."""
    w = _ProtoWriter(representation, map_entries)
    package, _, name = (full_name or "").rpartition(".")
    name = name or f"{DEFAULT_MESSAGE}1"
    body = w.message(name, [(c.name, c.type) for c in columns], "")
    lines = ['syntax = "proto3";', ""]
    if package:
        lines += [f"package {package};", ""]
    if w.imports:
        lines += [f'import "{i}";' for i in sorted(w.imports)] + [""]
    return "\n".join(lines + body) + "\n"


# ==================================================================================== format
def _check_map_keys(t: SqlType) -> None:
    if isinstance(t, MapType):
        if t.key.base is not BaseType.STRING:
            raise KsqlException("PROTOBUF format only supports MAP types with STRING keys")
        _check_map_keys(t.value)
    elif isinstance(t, ArrayType):
        _check_map_keys(t.item)
    elif isinstance(t, StructType):
        for f in t.fields:
            _check_map_keys(f.type)


def _representation(options: FormatOptions) -> str | None:
    for k, v in options.extra:
        if k == NULLABLE_REPRESENTATION:
            return str(v)
    return None


class ProtobufFormat(RegistryFormat):
    """ksqlDB's PROTOBUF format."""

    name = "PROTOBUF"
    schema_type = "PROTOBUF"
    supports_unwrap = False
    supports_schema_full_name = True

    def check_type(self, t: SqlType) -> None:
        _check_map_keys(t)

    def derive(self, columns: Sequence[Column], options: FormatOptions, is_key: bool,
               unwrapped: bool) -> str:
        return proto_schema_for(columns, options.schema_name, _representation(options))

    def compile(self, schema: str, schema_id: int | None, references: dict[str, str],
                options: FormatOptions, is_key: bool) -> CompiledSchema:
        from google.protobuf import message_factory

        try:
            pool, pf = build_pool(schema, f"schema_{schema_id or 0}.proto", references.get)
        except KsqlException:
            raise
        except Exception as e:
            raise KsqlException(f"Invalid protobuf schema: {e}") from None
        if options.schema_name:
            target = pf.find_message(options.schema_name)
            if target is None:
                raise KsqlException(f"Schema does not contain the message '{options.schema_name}'")
        else:
            target = pf.first_message()
            if target is None:
                raise KsqlException("Protobuf schema has no message")
        path = pf.message_path(target.full_name) or [0]
        desc = pool.FindMessageTypeByName(target.full_name)
        tr = _Translator(pf)
        struct = tr.message_type(desc)
        fields = tuple((f.name, f.type) for f in struct.fields)
        cls = message_factory.GetMessageClass(desc)
        read_msg = tr.message_reader(desc)
        write_kw = tr.message_writer(desc)
        parse = cls.FromString
        if self.uses_registry:
            assert schema_id is not None
            prefix = header(schema_id) + encode_indexes(path)
            own = path
            others: dict[tuple[int, ...], Callable[[bytes], tuple]] = {}

            def read_other(idx: list[int], body: bytes) -> tuple:
                key = tuple(idx)
                fn = others.get(key)
                if fn is None:
                    m = pf.message_at(idx)
                    if m is None:
                        raise SerdeError(f"Invalid message indexes: {idx}")
                    odesc = pool.FindMessageTypeByName(m.full_name)
                    ocls = message_factory.GetMessageClass(odesc)
                    oread = tr.message_reader(odesc)
                    onames = [f.name for f in odesc.fields]
                    picks = [match_name(n, onames) for n, _ in fields]
                    positions = [None if p is None else onames.index(p) for p in picks]

                    def fn(b: bytes) -> tuple:
                        r = oread(ocls.FromString(b))
                        return tuple(None if p is None else r[p] for p in positions)
                    others[key] = fn
                return fn(body)

            def read(data: bytes) -> Any:
                if len(data) > 5 and data[5] == 0 and own == [0]:
                    return read_msg(parse(data[6:]))
                idx, pos = decode_indexes(data, 5)
                if idx == own:
                    return read_msg(parse(data[pos:]))
                return read_other(idx, data[pos:])
        else:
            prefix = b""

            def read(data: bytes) -> Any:
                return read_msg(parse(data))

        def write(values: Any) -> bytes:
            return prefix + cls(**write_kw(values)).SerializeToString()
        return CompiledSchema(schema_id, fields, None, read, write)


class ProtobufNoSrFormat(ProtobufFormat):
    """PROTOBUF_NOSR: protobuf bytes of the schema derived from the columns, no registry."""

    name = "PROTOBUF_NOSR"
    supports_inference = False
    supports_schema_full_name = False
    uses_registry = False

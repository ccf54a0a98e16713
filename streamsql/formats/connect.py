"""What AVRO, PROTOBUF and JSON_SR share: registry codecs and ksqlDB's type translation.

A registered schema is compiled once per schema id (per message for protobuf) into a
``CompiledSchema``: the SQL view of what it holds (``fields`` for a record/message, or one
``single`` type for an anonymous value), ``read`` (whole payload -> a tuple of physical field
values, or the single value) and ``write`` (the inverse, header included). The formats build
these; everything else is shared here:

- ``RegistryCodec`` speaks Confluent's wire format (magic byte 0, 4-byte big-endian schema
  id, the format's payload). Decoding looks the writer schema up by id (once per id) and maps
  its fields to the declared columns: by exact name, else case-insensitively, converting types
  the way ksqlDB's connect translation does (INT into BIGINT, anything into STRING, ...);
  columns the schema lacks read as NULL. Encoding uses the schema derived from the columns,
  registered under ``<topic>-key``/``<topic>-value`` (idempotent), or the one named by
  KEY_SCHEMA_ID/VALUE_SCHEMA_ID, whose field names then win.
- ``json_to_sql`` / ``sql_to_json``: the JSON form QTT cases use (numbers, base64 bytes, ints
  for DATE/TIME/TIMESTAMP), coerced leniently as ksqlDB's test serializers do.
- ``adapter``: conversion of values between two SQL types, decided once.
- ``inferred_name`` / ``infer_columns``: columns of CREATE statements without elements.

Bad payloads raise ``SerdeError`` with the reason (unknown magic byte, unknown schema id,
bytes that do not decode); the pipeline logs and skips the record.
"""
from __future__ import annotations

import base64
import json
import logging
import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Callable, Sequence

from streamsql.errors import KsqlException
from streamsql.formats.base import Codec, CodecContext, Format, FormatOptions, SerdeError
from streamsql.formats.common import (
    CoercionError,
    b64decode,
    check_no_map_keys,
    check_wrapping,
    decimal_fitter,
    java_double_str,
    schema_not_supported,
    wrap_int32,
)
from streamsql.schema import Column
from streamsql.types import (
    DECIMAL_CONTEXT,
    ArrayType,
    BaseType,
    DecimalType,
    Field,
    MapType,
    SqlType,
    StructType,
)


log = logging.getLogger(__name__)

MAGIC_BYTE = 0
Conv = Callable[[Any], Any]


class AdaptError(Exception):
    """Values of one type cannot be read as another."""


# =============================================================================== compiled
@dataclass
class CompiledSchema:
    """A registered (or derived) schema ready for the hot path; see the module docstring."""

    schema_id: int | None
    fields: tuple[tuple[str, SqlType], ...] | None
    single: SqlType | None
    read: Callable[[bytes], Any]
    write: Callable[[Any], bytes]

    @property
    def wrapped(self) -> bool:
        return self.fields is not None

    def struct_type(self) -> SqlType:
        if self.fields is not None:
            return StructType(tuple(Field(n, t) for n, t in self.fields))
        assert self.single is not None
        return self.single


def header(schema_id: int) -> bytes:
    """Confluent's 5-byte prefix."""
    return bytes((MAGIC_BYTE,)) + schema_id.to_bytes(4, "big")


def schema_id_of(data: bytes) -> int:
    """The schema id of a Confluent-framed payload; SerdeError for anything else."""
    if len(data) < 5:
        raise SerdeError("Unknown magic byte!" if not data or data[0] != MAGIC_BYTE
                         else "Payload too short for the schema registry wire format")
    if data[0] != MAGIC_BYTE:
        raise SerdeError("Unknown magic byte!")
    return int.from_bytes(data[1:5], "big")


# ============================================================================ JSON form
def _java_text(v: Any) -> str:
    cls = v.__class__
    if cls is str:
        return v
    if cls is bool:
        return "true" if v else "false"
    if cls is float:
        return java_double_str(v)
    if cls is Decimal:
        return str(v)
    if cls in (dict, list):
        return json.dumps(v, separators=(",", ":"))
    return str(v)


def json_to_sql(t: SqlType) -> Conv:
    """Lenient JSON-form -> SQL value conversion (None stays None)."""
    base = t.base
    if isinstance(t, DecimalType):
        quantum = Decimal(1).scaleb(-t.scale)

        def dec(v: Any) -> Any:
            if v is None:
                return None
            if isinstance(v, bool):
                raise CoercionError(f"Can't convert {v!r} to {t}")
            try:
                d = Decimal(repr(v)) if isinstance(v, float) else Decimal(str(v))
                return d.quantize(quantum, rounding=ROUND_HALF_UP, context=DECIMAL_CONTEXT)
            except (InvalidOperation, ValueError):
                raise CoercionError(f"Can't convert {v!r} to {t}") from None
        return dec
    if isinstance(t, ArrayType):
        item = json_to_sql(t.item)

        def arr(v: Any) -> Any:
            if v is None:
                return None
            if not isinstance(v, list):
                raise CoercionError(f"Can't convert {v!r} to {t}")
            return [item(x) for x in v]
        return arr
    if isinstance(t, MapType):
        key, value = json_to_sql(t.key), json_to_sql(t.value)

        def mp(v: Any) -> Any:
            if v is None:
                return None
            if not isinstance(v, dict):
                raise CoercionError(f"Can't convert {v!r} to {t}")
            return {key(k): value(x) for k, x in v.items()}
        return mp
    if isinstance(t, StructType):
        fields = [(f.name, json_to_sql(f.type)) for f in t.fields]

        def st(v: Any) -> Any:
            if v is None:
                return None
            if not isinstance(v, dict):
                raise CoercionError(f"Can't convert {v!r} to {t}")
            return {n: c(lookup(v, n)) for n, c in fields}
        return st
    if base is BaseType.BOOLEAN:
        def boolean(v: Any) -> Any:
            if v is None or isinstance(v, bool):
                return v
            if isinstance(v, str) and v.lower() in ("true", "false"):
                return v.lower() == "true"
            raise CoercionError(f"Can't convert {v!r} to BOOLEAN")
        return boolean
    if base in (BaseType.INTEGER, BaseType.BIGINT, BaseType.DATE, BaseType.TIME, BaseType.TIMESTAMP):
        def integer(v: Any) -> Any:
            if v is None or v.__class__ is int:
                return v
            if isinstance(v, (float, Decimal)):
                return int(v)
            if isinstance(v, str):
                try:
                    return int(v)
                except ValueError:
                    raise CoercionError(f"Can't convert {v!r} to {base.value}") from None
            raise CoercionError(f"Can't convert {v!r} to {base.value}")
        return integer
    if base is BaseType.DOUBLE:
        def double(v: Any) -> Any:
            if v is None or v.__class__ is float:
                return v
            if isinstance(v, (int, Decimal)) and not isinstance(v, bool):
                return float(v)
            if isinstance(v, str):
                try:
                    return float(v)
                except ValueError:
                    raise CoercionError(f"Can't convert {v!r} to DOUBLE") from None
            raise CoercionError(f"Can't convert {v!r} to DOUBLE")
        return double
    if base is BaseType.STRING:
        return lambda v: None if v is None else _java_text(v)
    if base is BaseType.BYTES:
        def byt(v: Any) -> Any:
            if v is None or isinstance(v, bytes):
                return v
            if isinstance(v, str):
                return b64decode(v)
            raise CoercionError(f"Can't convert {v!r} to BYTES")
        return byt
    return lambda v: v


def lookup(obj: dict, name: str) -> Any:
    """A field of a JSON object by exact name, else case-insensitively."""
    if name in obj:
        return obj[name]
    upper = name.upper()
    for k, v in obj.items():
        if k.upper() == upper:
            return v
    return None


def sql_to_json(t: SqlType) -> Conv:
    """SQL value -> the JSON form tests compare (DECIMAL as a number, BYTES as base64)."""
    if isinstance(t, DecimalType):
        return lambda v: None if v is None else (int(v) if t.scale <= 0 else float(v))
    if t.base is BaseType.BYTES:
        return lambda v: None if v is None else base64.b64encode(v).decode("ascii")
    if isinstance(t, ArrayType):
        item = sql_to_json(t.item)
        return lambda v: None if v is None else [item(x) for x in v]
    if isinstance(t, MapType):
        value = sql_to_json(t.value)
        return lambda v: None if v is None else {k: value(x) for k, x in v.items()}
    if isinstance(t, StructType):
        fields = [(f.name, sql_to_json(f.type)) for f in t.fields]
        return lambda v: None if v is None else {n: c(v.get(n)) for n, c in fields}
    return lambda v: v


# ============================================================================== adapting
def _fail(message: str) -> Conv:
    def fail(v: Any) -> Any:
        if v is None:
            return None
        raise CoercionError(message)
    return fail


def adapter(src: SqlType, dst: SqlType) -> Conv | None:
    """A function converting non-null-safe values of ``src`` into ``dst`` (None: identity),
    following ksqlDB's connect translation (integers widen, numbers to DOUBLE, anything to
    STRING, decimals refitted, structs matched by field name). AdaptError when no value of
    ``src`` can be a ``dst``."""
    if src == dst:
        return None
    sb, db = src.base, dst.base
    ints = (BaseType.INTEGER, BaseType.BIGINT)
    if sb in ints and db in ints + (BaseType.TIMESTAMP,):
        if sb is BaseType.BIGINT and db is BaseType.INTEGER:
            return lambda v: None if v is None else wrap_int32(v)
        return None
    if sb in (BaseType.DATE, BaseType.TIME) and db in ints:
        return None
    if sb is BaseType.TIMESTAMP and db is BaseType.BIGINT:
        return None
    if db is BaseType.DOUBLE and (sb in ints or sb is BaseType.DECIMAL):
        return lambda v: None if v is None else float(v)
    if db is BaseType.STRING and src.is_primitive:
        if sb is BaseType.BYTES:
            raise AdaptError(f"Cannot read {src} as {dst}")
        return lambda v: None if v is None else _java_text(v)
    if isinstance(dst, DecimalType):
        fit = decimal_fitter(dst)
        if sb is BaseType.DECIMAL:
            return lambda v: None if v is None else fit(v)
        if sb in ints:
            return lambda v: None if v is None else fit(Decimal(v))
    if isinstance(src, ArrayType) and isinstance(dst, ArrayType):
        item = adapter(src.item, dst.item)
        if item is None:
            return None
        return lambda v: None if v is None else [item(x) for x in v]
    if isinstance(src, MapType) and isinstance(dst, MapType):
        key = adapter(src.key, dst.key)
        value = adapter(src.value, dst.value)
        if key is None and value is None:
            return None
        key = key or (lambda k: k)
        value = value or (lambda x: x)
        return lambda v: None if v is None else {key(k): value(x) for k, x in v.items()}
    if isinstance(src, StructType) and isinstance(dst, StructType):
        src_names = [f.name for f in src.fields]
        parts = []
        same = [f.name for f in dst.fields] == src_names
        for f in dst.fields:
            found = match_name(f.name, src_names)
            if found is None:
                parts.append((f.name, None, None))
                same = False
                continue
            conv = adapter(src.field(found).type, f.type)  # type: ignore[union-attr]
            if conv is not None:
                same = False
            parts.append((f.name, found, conv))
        if same:
            return None

        def struct(v: Any) -> Any:
            if v is None:
                return None
            out = {}
            for name, src_name, conv in parts:
                x = None if src_name is None else v.get(src_name)
                out[name] = x if conv is None or x is None else conv(x)
            return out
        return struct
    raise AdaptError(f"Cannot read {src} as {dst}")


def match_name(name: str, candidates: Sequence[str]) -> str | None:
    """``name`` among ``candidates``: exactly, else case-insensitively."""
    if name in candidates:
        return name
    upper = name.upper()
    for c in candidates:
        if c.upper() == upper:
            return c
    return None


def row_mapper(src: Sequence[tuple[str, SqlType]], dst: Sequence[Column]) -> Callable[[tuple], tuple] | None:
    """Maps a tuple of ``src`` field values to the declared columns (None: identity).
    Conversions that cannot work fail per record with the reason."""
    names = [n for n, _ in src]
    types = dict(src)
    plan: list[tuple[int | None, Conv | None]] = []
    identity = len(src) == len(dst)
    for i, c in enumerate(dst):
        found = match_name(c.name, names)
        if found is None:
            plan.append((None, None))
            identity = False
            continue
        idx = names.index(found)
        try:
            conv = adapter(types[found], c.type)
        except AdaptError as e:
            conv = _fail(f"Field {found}: {e}")
        if conv is not None or idx != i:
            identity = False
        plan.append((idx, conv))
    if identity:
        return None
    ns: dict[str, Any] = {}
    items = []
    for j, (idx, conv) in enumerate(plan):
        if idx is None:
            items.append("None")
        elif conv is None:
            items.append(f"r[{idx}]")
        else:
            ns[f"c{j}"] = conv
            items.append(f"(None if r[{idx}] is None else c{j}(r[{idx}]))")
    src_code = "def m(r):\n    return (" + "".join(x + ", " for x in items) + ")"
    exec(src_code, ns)  # noqa: S102 - generated from column positions only
    return ns["m"]


def single_mapper(src: SqlType, dst: SqlType) -> Conv | None:
    """Maps one anonymous value to a column type (None: identity)."""
    try:
        return adapter(src, dst)
    except AdaptError as e:
        return _fail(str(e))


# ================================================================================ naming
_PLAIN = re.compile(r"[A-Z_][A-Z0-9_@]*")


def inferred_name(name: str, preserve: bool) -> str:
    """A column name from a schema field: as written with an explicit schema id; otherwise as
    ksqlDB's statement rewrite leaves it (plain identifiers upper-cased, others kept)."""
    if preserve:
        return name
    from streamsql.formatter import RESERVED_WORDS

    upper = name.upper()
    if _PLAIN.fullmatch(upper) and upper not in RESERVED_WORDS:
        return upper
    return name


def rename_type(t: SqlType, preserve: bool) -> SqlType:
    """Struct field names renamed as ``inferred_name`` does, recursively."""
    if preserve:
        return t
    if isinstance(t, StructType):
        return StructType(tuple(Field(inferred_name(f.name, False), rename_type(f.type, False))
                                for f in t.fields))
    if isinstance(t, ArrayType):
        return ArrayType(rename_type(t.item, False))
    if isinstance(t, MapType):
        return MapType(t.key, rename_type(t.value, False))
    return t


# =============================================================================== format
class RegistryFormat(Format):
    """Base of the schema-registry formats. Subclasses compile schemas (``compile``) and
    derive them from columns (``derive``)."""

    schema_type = "AVRO"
    supports_inference = True
    uses_context = True
    # Whether a single key/value may be written bare (AVRO, JSON_SR) or always as a record.
    supports_unwrap = True
    uses_registry = True

    # ------------------------------------------------------------------ to implement
    def compile(self, schema: str, schema_id: int | None, references: dict[str, str],
                options: FormatOptions, is_key: bool) -> CompiledSchema:
        raise NotImplementedError

    def derive(self, columns: Sequence[Column], options: FormatOptions, is_key: bool,
               unwrapped: bool) -> str:
        """The schema text ksqlDB registers for these columns."""
        raise NotImplementedError

    def check_type(self, t: SqlType) -> None:
        """Raise KsqlException if a column type cannot be carried."""

    # ------------------------------------------------------------------ shared
    def unwrapped(self, columns: Sequence[Column], options: FormatOptions, is_key: bool) -> bool:
        if len(columns) != 1 or not self.supports_unwrap:
            return False
        return True if is_key else options.wrap_single_value is False

    def features(self, columns: Sequence[Column], options: FormatOptions, is_key: bool) -> tuple[str, ...]:
        if is_key:
            return ("UNWRAP_SINGLES",) if len(columns) == 1 and self.supports_unwrap else ()
        if options.wrap_single_value is None:
            return ()
        return ("WRAP_SINGLES",) if options.wrap_single_value else ("UNWRAP_SINGLES",)

    def validate(self, columns: Sequence[Column], options: FormatOptions, is_key: bool) -> None:
        if is_key:
            check_no_map_keys(columns)
        else:
            check_wrapping(self.name, columns, options.wrap_single_value, True, self.supports_unwrap)
        for c in columns:
            try:
                self.check_type(c.type)
            except KsqlException as e:
                raise schema_not_supported(self.name, columns, self.features(columns, options, is_key),
                                           is_key, str(e)) from None

    def supports_type(self, type_: SqlType) -> bool:
        try:
            self.check_type(type_)
        except KsqlException:
            return False
        return type_.base not in (BaseType.NULL, BaseType.LAMBDA)

    def codec(self, columns: Sequence[Column], options: FormatOptions, is_key: bool,
              context: CodecContext | None = None) -> Codec:
        return RegistryCodec(self, columns, options, is_key, context)

    def compile_registered(self, registry: Any, schema_id: int, options: FormatOptions,
                           is_key: bool) -> CompiledSchema:
        """Compile the registered schema with this id (references resolved)."""
        rs = registry.get_by_id(schema_id)
        if rs.schema_type != self.schema_type:
            raise KsqlException(f"Schema with id {schema_id} is a {rs.schema_type} schema, "
                                f"not {self.schema_type}")
        refs = {n: r.schema for n, r in registry.resolve_references(rs.references).items()}
        return self.compile(rs.schema, schema_id, refs, options, is_key)


class RegistryCodec(Codec):
    """Codec of a schema-registry format for one list of columns (see module docstring)."""

    def __init__(self, fmt: RegistryFormat, columns: Sequence[Column], options: FormatOptions,
                 is_key: bool, context: CodecContext | None) -> None:
        self.fmt = fmt
        self.columns = tuple(columns)
        self.options = options
        self.is_key = is_key
        self.context = context
        self.registry = context.registry if context is not None else None
        self.subject = (f"{context.topic}-{'key' if is_key else 'value'}" if context is not None else None)
        self.unwrapped = fmt.unwrapped(self.columns, options, is_key)
        self._readers: dict[int, Callable[[bytes], Any]] = {}
        self._compiled: dict[int, CompiledSchema] = {}
        self._encode: Callable[[tuple], bytes] | None = None
        self._empty_key = is_key and not self.columns

    # ---------------------------------------------------------------------- schemas
    def compiled(self, schema_id: int) -> CompiledSchema:
        c = self._compiled.get(schema_id)
        if c is None and not self.fmt.uses_registry:
            return self._nosr()
        if c is None:
            if self.registry is None:
                raise SerdeError("No schema registry is configured")
            from streamsql.schemaregistry.client import SchemaRegistryError

            try:
                c = self.fmt.compile_registered(self.registry, schema_id, self.options, self.is_key)
            except SchemaRegistryError as e:
                raise SerdeError(f"Error retrieving {self.fmt.schema_type} schema for id {schema_id}: {e}") from e
            except KsqlException as e:
                raise SerdeError(str(e)) from e
            self._compiled[schema_id] = c
        return c

    def derived_text(self) -> str:
        return self.fmt.derive(self.columns, self.options, self.is_key, self.unwrapped)

    def writer_schema(self) -> CompiledSchema:
        """The schema this codec writes with: KEY/VALUE_SCHEMA_ID's, else the derived one
        (registered under the subject, idempotently)."""
        if not self.fmt.uses_registry:
            return self._nosr()
        if self.options.schema_id is not None:
            return self.compiled(self.options.schema_id)
        text = self.derived_text()
        if self.registry is None or self.subject is None:
            return self.fmt.compile(text, None, {}, self.options, self.is_key)
        from streamsql.schemaregistry.client import SchemaRegistryError

        try:
            sid = self.registry.register(self.subject, self.fmt.schema_type, text)
        except SchemaRegistryError as e:
            raise SerdeError(f"Could not register schema for subject {self.subject}: {e}") from e
        return self.compiled(sid)

    # ---------------------------------------------------------------------- decode
    def _reader_for(self, schema_id: int) -> Callable[[bytes], Any]:
        c = self.compiled(schema_id)
        read = c.read
        if self.unwrapped and c.fields is not None:
            # A record read as one STRUCT column.
            names = tuple(n for n, _ in c.fields)
            raw_read = read

            def read(data: bytes) -> Any:
                r = raw_read(data)
                return None if r is None else dict(zip(names, r))
        if self.unwrapped:
            conv = single_mapper(c.struct_type(), self.columns[0].type)
            if conv is None:
                def reader(data: bytes) -> Any:
                    v = read(data)
                    return (v,)
            else:
                def reader(data: bytes) -> Any:
                    v = read(data)
                    return (None if v is None else conv(v),)
        elif c.fields is None:
            message = (f"Expected a {'key' if self.is_key else 'value'} with fields "
                       f"{[col.name for col in self.columns]} but the schema is {c.single}")

            def reader(data: bytes) -> Any:
                raise SerdeError(message)
        else:
            mapper = row_mapper(c.fields, self.columns)
            if mapper is None:
                reader = read
            else:
                def reader(data: bytes) -> Any:
                    r = read(data)
                    return None if r is None else mapper(r)
        self._readers[schema_id] = reader
        return reader

    def decode(self, data: bytes | None) -> tuple | None:
        if data is None:
            return None
        if self._empty_key:
            return ()
        sid = schema_id_of(data) if self.fmt.uses_registry else 0
        reader = self._readers.get(sid)
        try:
            if reader is None:
                reader = self._reader_for(sid)
            return reader(data)
        except SerdeError:
            raise
        except Exception as e:  # the library's reason for bytes that do not decode
            raise SerdeError(f"Error deserializing {self.fmt.name} message for id {sid}: "
                             f"{type(e).__name__}: {e}") from e

    # ---------------------------------------------------------------------- encode
    def _make_encoder(self) -> Callable[[tuple], bytes]:
        c = self.writer_schema()
        write = c.write
        if self.unwrapped and c.fields is not None:
            # One STRUCT column written as the record itself.
            names = tuple(n for n, _ in c.fields)
            raw_write = write

            def write(v: Any) -> bytes:
                return raw_write(tuple(v.get(n) for n in names))
        if self.unwrapped:
            conv = single_mapper(self.columns[0].type, c.struct_type())
            if conv is None:
                return lambda values: None if values[0] is None else write(values[0])
            return lambda values: None if values[0] is None else write(conv(values[0]))
        if c.fields is None:
            message = f"The schema {c.schema_id} is not a record; it cannot hold columns"

            def fail(values: tuple) -> bytes:
                raise SerdeError(message)
            return fail
        src = [(col.name, col.type) for col in self.columns]
        dst = [Column(n, t) for n, t in c.fields]
        mapper = row_mapper(src, dst)
        if mapper is None:
            return write
        return lambda values: write(mapper(values))

    def encode(self, values: tuple | None) -> bytes | None:
        if values is None:
            return None
        if self._empty_key:
            return None
        enc = self._encode
        if enc is None:
            enc = self._encode = self._make_encoder()
        try:
            return enc(values)
        except SerdeError:
            raise
        except Exception as e:
            raise SerdeError(f"Error serializing {self.fmt.name} message: {type(e).__name__}: {e}") from e

    # ---------------------------------------------------------------------- JSON form
    def to_json_form(self, data: bytes | None) -> Any:
        if data is None:
            return None
        sid = schema_id_of(data) if self.fmt.uses_registry else 0
        c = self.compiled(sid)
        v = c.read(data)
        if v is None:
            return None
        if c.fields is not None:
            return {n: sql_to_json(t)(x) for (n, t), x in zip(c.fields, v)}
        assert c.single is not None
        return sql_to_json(c.single)(v)

    def _nosr(self) -> CompiledSchema:
        """The derived schema, for formats without a registry (PROTOBUF_NOSR)."""
        c = self._compiled.get(0)
        if c is None:
            try:
                c = self.fmt.compile(self.derived_text(), None, {}, self.options, self.is_key)
            except KsqlException as e:
                raise SerdeError(str(e)) from e
            self._compiled[0] = c
        return c

    def input_schema(self) -> CompiledSchema:
        """The schema test inputs are written with: the id given, else the subject's latest,
        else the derived one."""
        if not self.fmt.uses_registry:
            return self._nosr()
        if self.options.schema_id is not None:
            return self.compiled(self.options.schema_id)
        if self.registry is not None and self.subject is not None:
            latest = self.registry.latest_or_none(self.subject)
            if latest is not None and latest.schema_type == self.fmt.schema_type:
                return self.compiled(latest.schema_id)
        return self.writer_schema()

    def from_json_form(self, obj: Any) -> bytes | None:
        if obj is None:
            return None
        c = self.input_schema()
        if c.fields is not None:
            if not isinstance(obj, dict):
                if len(c.fields) == 1 and self.unwrapped:
                    obj = {c.fields[0][0]: obj}
                else:
                    raise SerdeError(f"Expected a JSON object for a record, got {obj!r}")
            values = tuple(json_to_sql(t)(lookup(obj, n)) for n, t in c.fields)
            return c.write(values)
        assert c.single is not None
        return c.write(json_to_sql(c.single)(obj))


def decimal_from_unscaled(unscaled: bytes, scale: int) -> Decimal:
    """A decimal from big-endian two's-complement unscaled bytes (Avro, Confluent protobuf)."""
    return Decimal(int.from_bytes(unscaled, "big", signed=True)).scaleb(-scale)


def unscaled_bytes(d: Decimal, scale: int) -> bytes:
    """Minimal big-endian two's-complement bytes of a decimal's unscaled value."""
    n = int(d.scaleb(scale).to_integral_value())
    length = max(1, (n.bit_length() + 8) // 8)
    return n.to_bytes(length, "big", signed=True)


__all__ = [
    "AdaptError", "CodecContext", "CompiledSchema", "RegistryCodec", "RegistryFormat", "adapter",
    "decimal_from_unscaled", "header", "inferred_name", "json_to_sql", "lookup",
    "match_name", "rename_type", "row_mapper", "schema_id_of", "single_mapper", "sql_to_json",
    "unscaled_bytes",
]

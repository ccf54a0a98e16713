"""Confluent's schema-registry converters: ``io.confluent.connect.avro.AvroConverter``,
``io.confluent.connect.protobuf.ProtobufConverter`` and
``io.confluent.connect.json.JsonSchemaConverter``.

Each writes what Confluent's does: the record's Connect schema translated to the format's
schema, registered under ``<topic>-value`` (``<topic>-key`` for keys; Confluent's default
TopicNameStrategy), and the value in Confluent's wire format (magic byte 0, the 4-byte schema
id, the payload). The Avro schema is AvroData's translation (``avro_data_schema``: records
named after the struct, ``connect.name``/``connect.version``/``connect.parameters``, optional
fields as ``["null", T]`` with a null default, Connect's logical types); Protobuf and JSON
Schema use the schemas ksqlDB derives through the same Confluent classes. The bytes are
written by the engine's own AVRO, PROTOBUF and JSON_SR formats (``streamsql.formats``), so a
stream declared over the topic with ``value_format='AVRO'`` (columns inferred from the
registry) reads exactly what was written.

``schema.registry.url`` is read as Connect does (``value.converter.schema.registry.url``).
A URL ending in ``/schema-registry`` (where ``streamsql server`` serves its built-in
registry), or the engine's own ``ksql.schema.registry.url``, is the engine's registry, used
in process; any other is a Confluent Schema Registry reached over HTTP (a blocking call from
the worker's loop, once per new schema, as Confluent's client caches). A writer is made once
per (topic, schema): the translation, the registration and the format's compiled writer are
paid once, and a batch of values costs one generated conversion per record.
"""
from __future__ import annotations

import datetime
import logging
from typing import Any, Callable, Mapping, Sequence

import orjson

from streamsql.runtime.connect.api import (
    ARRAY, BOOLEAN, BYTES, DATE, DECIMAL, FLOAT32, FLOAT64, INT8, INT16, INT32, INT64, MAP, STRING, STRUCT,
    TIME, TIMESTAMP, ConnectException, Field, Schema, Struct)
from streamsql.runtime.connect.converters import Converter, DataException

log = logging.getLogger(__name__)

SCHEMA_REGISTRY_URL = "schema.registry.url"
BUILTIN_REGISTRY_PATH = "/schema-registry"   # where streamsql server mounts its registry
_AVRO_NAMESPACE = "io.confluent.connect.avro"
_PRECISION = "connect.decimal.precision"
_EPOCH = datetime.datetime(1970, 1, 1)
_EPOCH_UTC = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
_EPOCH_DATE = datetime.date(1970, 1, 1)
_ONE_MS = datetime.timedelta(milliseconds=1)
Conv = Callable[[Any], Any]


# ====================================================================== Connect -> Avro
def avro_data_schema(schema: Schema) -> Any:
    """The Avro schema (JSON form) Confluent's AvroData makes of a Connect schema
    (``connect.meta.data`` on, enhanced schema support off: the converter's defaults)."""
    return _AvroData().optional(schema)


class _AvroData:
    def __init__(self) -> None:
        self.defaults = 0  # unnamed records: ConnectDefault, ConnectDefault2, ...

    def optional(self, schema: Schema) -> Any:
        out = self.schema(schema)
        if schema.optional:
            return ["null", out] if schema.default is None else [out, "null"]
        return out

    def schema(self, schema: Schema) -> Any:
        t, name = schema.type, schema.name
        props: dict[str, Any] = {}
        if t == STRUCT:
            if name:
                namespace, _, short = name.rpartition(".")
            else:
                self.defaults += 1
                namespace, short = _AVRO_NAMESPACE, "ConnectDefault" + ("" if self.defaults == 1 else str(self.defaults))
            out: dict[str, Any] = {"type": "record", "name": short}
            if namespace:
                out["namespace"] = namespace
            if schema.doc:
                out["doc"] = schema.doc
            fields = []
            for f in schema.fields:
                field: dict[str, Any] = {"name": f.name, "type": self.optional(f.schema)}
                if f.schema.default is not None:
                    field["default"] = _avro_default(f.schema.default)
                elif f.schema.optional:
                    field["default"] = None
                fields.append(field)
            out["fields"] = fields
        elif t == ARRAY:
            assert schema.value_schema is not None
            out = {"type": "array", "items": self.optional(schema.value_schema)}
        elif t == MAP:
            assert schema.key_schema is not None and schema.value_schema is not None
            if schema.key_schema.type == STRING and not schema.key_schema.optional:
                out = {"type": "map", "values": self.optional(schema.value_schema)}
            else:
                out = {"type": "array", "items": {
                    "type": "record", "name": "MapEntry", "namespace": _AVRO_NAMESPACE,
                    "fields": [{"name": "key", "type": self.optional(schema.key_schema)},
                               {"name": "value", "type": self.optional(schema.value_schema)}]}}
        else:
            base = {INT8: "int", INT16: "int", INT32: "int", INT64: "long", FLOAT32: "float", FLOAT64: "double",
                    BOOLEAN: "boolean", STRING: "string", BYTES: "bytes"}.get(t)
            if base is None:
                raise DataException(f"Unknown schema type: {t}")
            out = {"type": base}
            if t in (INT8, INT16):
                out["connect.type"] = t
            if name == DECIMAL and t == BYTES:
                params = dict(schema.parameters)
                out["scale"] = int(params.get("scale", 0))
                out["precision"] = int(params.get(_PRECISION, 64))
        # Connect's metadata, in AvroData's order; records carry only their name.
        if t != STRUCT:
            if schema.doc:
                props["connect.doc"] = schema.doc
            if schema.version is not None:
                props["connect.version"] = schema.version
            if schema.parameters:
                props["connect.parameters"] = dict(schema.parameters)
            if schema.default is not None:
                props["connect.default"] = _avro_default(schema.default)
        if name:
            props["connect.name"] = name
        logical = {DECIMAL: "decimal", DATE: "date", TIME: "time-millis", TIMESTAMP: "timestamp-millis"}.get(name or "")
        if logical and t != STRUCT:
            props["logicalType"] = logical
        out.update(props)
        if len(out) == 1:
            return out["type"]  # a bare primitive is written as its name
        return out


def _avro_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("latin-1")  # Avro's JSON form of bytes
    if isinstance(value, Struct):
        return {f.name: _avro_default(v) for f, v in zip(value.schema.fields, value.values)}
    return value


# ====================================================================== Connect -> SQL
def sql_type(schema: Schema) -> Any:
    """The SQL type a Connect schema's values are written as by the engine's formats."""
    from streamsql import types as T

    t, name = schema.type, schema.name
    if name == DECIMAL and t == BYTES:
        params = dict(schema.parameters)
        return T.DecimalType(int(params.get(_PRECISION, 64)), int(params.get("scale", 0)))
    if name == DATE and t == INT32:
        return T.DATE
    if name == TIME and t == INT32:
        return T.TIME
    if name == TIMESTAMP and t == INT64:
        return T.TIMESTAMP
    if t in (INT8, INT16, INT32):
        return T.INTEGER
    if t == INT64:
        return T.BIGINT
    if t in (FLOAT32, FLOAT64):
        return T.DOUBLE
    if t == BOOLEAN:
        return T.BOOLEAN
    if t == STRING:
        return T.STRING
    if t == BYTES:
        return T.BYTES
    if t == ARRAY:
        return T.ArrayType(sql_type(schema.value_schema))  # type: ignore[arg-type]
    if t == MAP:
        return T.MapType(sql_type(schema.key_schema), sql_type(schema.value_schema))  # type: ignore[arg-type]
    if t == STRUCT:
        return T.StructType(tuple(T.Field(f.name, sql_type(f.schema)) for f in schema.fields))
    raise DataException(f"Unknown schema type: {t}")


def _ms_of_day(v: datetime.time) -> int:
    return ((v.hour * 60 + v.minute) * 60 + v.second) * 1000 + v.microsecond // 1000


def sql_value(schema: Schema) -> Conv | None:
    """Connect value -> the engine's value of ``sql_type(schema)`` (None: the same value).
    Applied to non-null values."""
    t, name = schema.type, schema.name
    if name == DATE and t == INT32:
        return lambda v: (v - _EPOCH_DATE).days if isinstance(v, datetime.date) else v
    if name == TIME and t == INT32:
        return lambda v: _ms_of_day(v) if isinstance(v, datetime.time) else v
    if name == TIMESTAMP and t == INT64:
        return lambda v: ((v - (_EPOCH if v.tzinfo is None else _EPOCH_UTC)) // _ONE_MS
                          if isinstance(v, datetime.datetime) else v)
    if t in (FLOAT32, FLOAT64):
        return float
    if t == BYTES and name != DECIMAL:
        return lambda v: v if type(v) is bytes else bytes(v)
    if t == ARRAY:
        item = sql_value(schema.value_schema)  # type: ignore[arg-type]
        return None if item is None else (lambda v: [None if x is None else item(x) for x in v])
    if t == MAP:
        kc, vc = sql_value(schema.key_schema), sql_value(schema.value_schema)  # type: ignore[arg-type]
        if kc is None and vc is None:
            return None
        kf, vf = kc or _same, vc or _same
        return lambda v: {(None if k is None else kf(k)): (None if x is None else vf(x)) for k, x in v.items()}
    if t == STRUCT:
        names = [f.name for f in schema.fields]
        convs = [sql_value(f.schema) or _same for f in schema.fields]

        def struct(v: Struct) -> dict[str, Any]:
            return {n: (None if x is None else c(x)) for n, c, x in zip(names, convs, v.values)}
        return struct
    return None


def _same(v: Any) -> Any:
    return v


def rows_to_sql(schema: Schema) -> Callable[[tuple], tuple] | None:
    """A STRUCT's field tuple -> the engine's row tuple (None: the same tuple); generated."""
    convs = [sql_value(f.schema) for f in schema.fields]
    if all(c is None for c in convs):
        return None
    ns: dict[str, Any] = {}
    items = []
    for i, c in enumerate(convs):
        if c is None:
            items.append(f"r[{i}]")
        else:
            ns[f"c{i}"] = c
            items.append(f"(None if r[{i}] is None else c{i}(r[{i}]))")
    src = "def convert(r):\n    return (" + "".join(x + ", " for x in items) + ")"
    exec(compile(src, "<connect row to sql>", "exec"), ns)  # noqa: S102 - generated from field positions
    return ns["convert"]


# ======================================================================== converters
class RegistryConverter(Converter):
    """What the three share; ``FORMAT`` names the engine's format that writes the bytes."""

    FORMAT = "AVRO"
    pending = False  # a schema registered since the last ``flush``

    def configure(self, configs: Mapping[str, str], is_key: bool) -> None:
        super().configure(configs, is_key)
        url = str(configs.get(SCHEMA_REGISTRY_URL) or "").strip()
        if not url:
            raise ConnectException(f'Missing required configuration "{SCHEMA_REGISTRY_URL}" which has no '
                                   "default value.")
        self.url = url.split(",")[0].strip().rstrip("/")
        self.auto_register = str(configs.get("auto.register.schemas", "true")).strip().lower() == "true"
        self.use_latest = str(configs.get("use.latest.version", "false")).strip().lower() == "true"
        self._registry: Any = None
        from streamsql.formats.registry import get_format

        self.fmt: Any = get_format(self.FORMAT)

    # The worker sets ``registries`` (url -> client) before ``configure``; without it (a
    # converter made on its own) every URL is reached over HTTP.
    registries: Callable[[str], Any] | None = None

    @property
    def registry(self) -> Any:
        if self._registry is None:
            if self.registries is not None:
                self._registry = self.registries(self.url)
            else:
                from streamsql.schemaregistry.http import HttpSchemaRegistryClient

                self._registry = HttpSchemaRegistryClient(self.url)
        return self._registry

    async def flush(self) -> None:
        """Persist what was registered (the built-in registry writes its topic on flush):
        the worker calls this before producing records that use a new schema id."""
        if self.pending:
            self.pending = False
            await self.registry.flush()

    def schema_text(self, schema: Schema, columns: Sequence[Any], unwrapped: bool, options: Any) -> str:
        return self.fmt.derive(columns, options, self.is_key, unwrapped)

    def _compiled(self, topic: str, schema: Schema) -> tuple[Any, bool]:
        """(the format's compiled writer, whether the value is written bare) for ``schema``
        on ``topic``: its schema registered under the topic's subject."""
        from streamsql.formats.base import FormatOptions
        from streamsql.schema import Column
        from streamsql.schemaregistry.client import SchemaRegistryError

        subject = f"{topic}-{'key' if self.is_key else 'value'}"
        if schema.type == STRUCT:
            columns = [Column(f.name, sql_type(f.schema)) for f in schema.fields]
            unwrapped = False
        else:
            if not self.fmt.supports_unwrap:
                raise DataException(f"{type(self).__name__} writes STRUCT values only, not {schema.type.upper()}")
            columns = [Column("value", sql_type(schema))]
            unwrapped = True
        options = FormatOptions(schema_name=schema.name if schema.type == STRUCT else None)
        registry = self.registry
        try:
            if self.auto_register and not self.use_latest:
                text = self.schema_text(schema, columns, unwrapped, options)
                schema_id = registry.register(subject, self.fmt.schema_type, text)
                self.pending = True
            else:
                latest = registry.latest_or_none(subject)
                if latest is None:
                    raise DataException(f"Subject '{subject}' not found.")
                schema_id = latest.schema_id
            compiled = self.fmt.compile_registered(registry, schema_id, options, self.is_key)
        except SchemaRegistryError as exc:
            raise DataException(f"Failed to access {self.fmt.schema_type} data from topic {topic} : {exc}") from exc
        return compiled, unwrapped

    def batch_writer(self, topic: str, schema: Schema | None) -> Callable[[Sequence[Any]], list[bytes | None]]:
        if schema is None:
            def schemaless(values: Sequence[Any]) -> list[bytes | None]:
                if any(v is not None for v in values):
                    raise DataException(f"{type(self).__name__} needs a schema for the data of topic {topic}")
                return [None] * len(values)
            return schemaless
        compiled, unwrapped = self._compiled(topic, schema)
        write = compiled.write
        if unwrapped:
            conv = sql_value(schema) or _same
            return lambda values: [None if v is None else write(conv(v)) for v in values]
        order = _reorder(compiled.fields, schema)
        to_sql = rows_to_sql(schema)

        def write_structs(values: Sequence[Any]) -> list[bytes | None]:
            out: list[bytes | None] = []
            for v in values:
                if v is None:
                    out.append(None)
                    continue
                if not isinstance(v, Struct):
                    raise DataException(f"Invalid Java object for schema type STRUCT: {type(v).__name__}")
                row = v.values if to_sql is None else to_sql(v.values)
                out.append(write(row if order is None else order(row)))
            return out
        return write_structs

    def rows_writer(self, topic: str, schema: Schema) -> Callable[[Sequence[tuple]], list[bytes | None]]:
        compiled, _ = self._compiled(topic, schema)
        write = compiled.write
        order = _reorder(compiled.fields, schema)
        to_sql = rows_to_sql(schema)
        if to_sql is None and order is None:
            return lambda rows: list(map(write, rows))
        if order is None:
            return lambda rows: [write(to_sql(r)) for r in rows]  # type: ignore[misc]
        convert = to_sql or _same
        return lambda rows: [write(order(convert(r))) for r in rows]

    def from_connect_data(self, topic: str, schema: Schema | None, value: Any) -> bytes | None:
        if value is None:
            return None
        try:
            return self.writer(topic, schema)([value])[0]
        except DataException:
            raise
        except Exception as exc:  # noqa: BLE001 - the format's reason, as Connect wraps it
            raise DataException(f"Converting Kafka Connect data to byte[] failed due to serialization error "
                                f"of topic {topic}: {exc}") from exc

    # -------------------------------------------------------------------------- reading
    def to_connect_data(self, topic: str, data: bytes | None) -> tuple[Schema | None, Any]:
        if data is None:
            return None, None
        from streamsql.formats.connect import schema_id_of

        try:
            schema_id = schema_id_of(data)
        except Exception as exc:  # noqa: BLE001
            raise DataException(f"Failed to deserialize data for topic {topic} to {self.fmt.schema_type}: "
                                f"{exc}") from exc
        readers = self.__dict__.setdefault("_readers", {})
        reader = readers.get(schema_id)
        if reader is None:
            reader = readers[schema_id] = self._reader(topic, schema_id)
        return reader(data)

    def _reader(self, topic: str, schema_id: int) -> Callable[[bytes], tuple[Schema | None, Any]]:
        from streamsql.formats.base import FormatOptions
        from streamsql.schemaregistry.client import SchemaRegistryError

        try:
            compiled = self.fmt.compile_registered(self.registry, schema_id, FormatOptions(), self.is_key)
        except SchemaRegistryError as exc:
            raise DataException(f"Failed to deserialize data for topic {topic} to {self.fmt.schema_type}: "
                                f"Error retrieving schema ID {schema_id}: {exc}") from exc
        read = compiled.read
        if compiled.fields is None:
            one = connect_schema(compiled.single, True)
            back = connect_value(one)
            return lambda data: (one, None if (v := read(data)) is None else back(v))
        schema = Schema(STRUCT, optional=True, fields=tuple(
            Field(n, i, connect_schema(t, True)) for i, (n, t) in enumerate(compiled.fields)))
        convs = [connect_value(f.schema) for f in schema.fields]

        def struct(data: bytes) -> tuple[Schema | None, Any]:
            row = read(data)
            if row is None:
                return schema, None
            return schema, Struct(schema, tuple(None if x is None else c(x) for c, x in zip(convs, row)))
        return struct


def _reorder(fields: Sequence[tuple[str, Any]] | None, schema: Schema) -> Callable[[tuple], tuple] | None:
    """The registered schema's field order from the Connect struct's (None: the same)."""
    if fields is None:
        raise DataException("The registered schema is not a record; it cannot hold a STRUCT")
    names = [f.name for f in schema.fields]
    want = [n for n, _ in fields]
    if want == names:
        return None
    lower = {n.lower(): i for i, n in enumerate(names)}
    idx = [lower.get(n.lower()) for n in want]
    return lambda row: tuple(None if i is None else row[i] for i in idx)


def connect_schema(t: Any, optional: bool) -> Schema:
    """The Connect schema of values read as SQL type ``t`` (as Confluent's converters read
    the formats' schemas back)."""
    from streamsql.types import ArrayType, BaseType, DecimalType, MapType, StructType

    if isinstance(t, DecimalType):
        return Schema(BYTES, optional, DECIMAL, 1, parameters=(("scale", str(t.scale)),
                                                               (_PRECISION, str(t.precision))))
    if isinstance(t, ArrayType):
        return Schema(ARRAY, optional, value_schema=connect_schema(t.item, True))
    if isinstance(t, MapType):
        return Schema(MAP, optional, key_schema=connect_schema(t.key, True), value_schema=connect_schema(t.value, True))
    if isinstance(t, StructType):
        return Schema(STRUCT, optional, fields=tuple(Field(f.name, i, connect_schema(f.type, True))
                                                     for i, f in enumerate(t.fields)))
    simple = {BaseType.BOOLEAN: (BOOLEAN, None), BaseType.INTEGER: (INT32, None), BaseType.BIGINT: (INT64, None),
              BaseType.DOUBLE: (FLOAT64, None), BaseType.STRING: (STRING, None), BaseType.BYTES: (BYTES, None),
              BaseType.DATE: (INT32, DATE), BaseType.TIME: (INT32, TIME), BaseType.TIMESTAMP: (INT64, TIMESTAMP)}
    kind, name = simple[t.base]
    return Schema(kind, optional, name, 1 if name else None)


def connect_value(schema: Schema) -> Conv:
    """The engine's value -> Connect's for ``connect_schema``'s schemas (non-null values)."""
    t, name = schema.type, schema.name
    if name == DATE:
        return lambda v: _EPOCH_DATE + datetime.timedelta(days=v)
    if name == TIME:
        return lambda v: (datetime.datetime.min + datetime.timedelta(milliseconds=v)).time()
    if name == TIMESTAMP:
        return lambda v: _EPOCH + datetime.timedelta(milliseconds=v)
    if t == ARRAY:
        item = connect_value(schema.value_schema)  # type: ignore[arg-type]
        return lambda v: [None if x is None else item(x) for x in v]
    if t == MAP:
        kc, vc = connect_value(schema.key_schema), connect_value(schema.value_schema)  # type: ignore[arg-type]
        return lambda v: {(None if k is None else kc(k)): (None if x is None else vc(x)) for k, x in v.items()}
    if t == STRUCT:
        fields = [(f.name, connect_value(f.schema)) for f in schema.fields]
        return lambda v: Struct(schema, tuple(None if (x := v.get(n)) is None else c(x) for n, c in fields))
    return _same


class AvroConverter(RegistryConverter):
    """``io.confluent.connect.avro.AvroConverter``: AvroData's schema, Avro binary."""

    FORMAT = "AVRO"

    def schema_text(self, schema: Schema, columns: Sequence[Any], unwrapped: bool, options: Any) -> str:
        return orjson.dumps(avro_data_schema(schema)).decode()


class ProtobufConverter(RegistryConverter):
    """``io.confluent.connect.protobuf.ProtobufConverter``: a message named after the struct
    (``ConnectDefault1`` for an unnamed one), fields numbered in order."""

    FORMAT = "PROTOBUF"


class JsonSchemaConverter(RegistryConverter):
    """``io.confluent.connect.json.JsonSchemaConverter``: a JSON Schema object, JSON payload."""

    FORMAT = "JSON_SR"


__all__ = ["AvroConverter", "JsonSchemaConverter", "ProtobufConverter", "RegistryConverter", "avro_data_schema"]

"""How PRINT shows a topic's raw records (ksqlDB's ``RecordFormatter``): the formats a key or
value could be in, named as ksqlDB names them (``KAFKA_STRING``, ``KAFKA_INT``,
``KAFKA_BIGINT or KAFKA_DOUBLE``, ``JSON or KAFKA_STRING``, ``AVRO or KAFKA_STRING``, ...),
and the record's text in the first of them.

The formats come from the bytes, not from a stream or table declared over the topic (PRINT
reads topics, which may have no source, or several): a schema-registry frame (magic byte 0
and a schema id the registry knows) is AVRO, PROTOBUF or JSON_SR, decoded with that schema
and shown as JSON; 4 and 8 bytes that are not printable text are the KAFKA integer and
double formats; JSON objects and arrays are JSON; UTF-8 text is KAFKA_STRING. A source
declared over the topic only breaks the tie between KAFKA_BIGINT and KAFKA_DOUBLE.
"""
from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
from typing import Any, Callable

import orjson

from streamsql.types import BaseType

log = logging.getLogger(__name__)

NO_DATA = "¯\\_(ツ)_/¯ - no data processed"
_REGISTRY_FORMATS = {"AVRO": "AVRO", "PROTOBUF": "PROTOBUF", "JSON": "JSON_SR"}
_DOUBLE = struct.Struct(">d")


@dataclass(frozen=True)
class Rendering:
    """What one side (key or value) of a topic's records looks like: the format names to
    show, and how to turn bytes into text."""

    formats: str
    text: Callable[[bytes], str]


def _utf8(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _string_text(data: bytes) -> str:
    text = _utf8(data)
    if text is None:
        return data.hex()
    return text if text.isprintable() else repr(text)[1:-1]


def _int_text(data: bytes) -> str:
    return str(int.from_bytes(data, "big", signed=True)) if len(data) in (4, 8) else _string_text(data)


def _double_text(data: bytes) -> str:
    return repr(_DOUBLE.unpack(data)[0]) if len(data) == 8 else _string_text(data)


class RecordFormatter:
    """Detects a topic's key and value formats from its first record and renders records;
    ``registry`` is the schema registry (None: no registry formats), ``topic`` the topic
    printed. ``declared_key`` and
    ``declared_value``: the SQL type of a single KAFKA-format column declared over the topic,
    if any."""

    def __init__(self, registry: Any, topic: str, declared_key: BaseType | None = None,
                 declared_value: BaseType | None = None) -> None:
        self.registry = registry
        self.topic = topic
        self._declared = {True: declared_key, False: declared_value}
        self._decoders: dict[tuple[int, bool], Callable[[bytes], str] | None] = {}

    def detect(self, data: bytes | None, is_key: bool) -> Rendering:
        """The formats ``data`` could be in, and the renderer of the first."""
        if data is None:
            return Rendering(NO_DATA, _string_text)
        text = _utf8(data)
        as_string = " or KAFKA_STRING" if text is not None else ""
        framed = self._registry_format(data, is_key)
        if framed is not None:
            name, _ = framed
            return Rendering(name + as_string, lambda b: self._registry_text(b, is_key))
        printable = text is not None and text.isprintable()
        if not printable and len(data) == 4:
            return Rendering("KAFKA_INT" + as_string, _int_text)
        if not printable and len(data) == 8:
            double = self._declared[is_key] is BaseType.DOUBLE
            return Rendering("KAFKA_BIGINT or KAFKA_DOUBLE" + as_string,
                             _double_text if double else _int_text)
        if text is not None and text.lstrip()[:1] in ("{", "["):
            try:
                orjson.loads(data)
                return Rendering("JSON or KAFKA_STRING", _string_text)
            except orjson.JSONDecodeError:
                pass
        if text is not None:
            return Rendering("KAFKA_STRING", _string_text)
        return Rendering("KAFKA_BYTES", _string_text)

    # ------------------------------------------------------------------ schema registry
    def _registry_format(self, data: bytes, is_key: bool) -> tuple[str, int] | None:
        """(format name, schema id) of a schema-registry framed record, else None."""
        if self.registry is None or len(data) < 5 or data[0] != 0:
            return None
        schema_id = int.from_bytes(data[1:5], "big")
        try:
            registered = self.registry.get_by_id(schema_id)
        except Exception:  # noqa: BLE001 - an id the registry does not know: not framed
            return None
        name = _REGISTRY_FORMATS.get(str(getattr(registered, "schema_type", "AVRO") or "AVRO").upper())
        return (name, schema_id) if name is not None else None

    def _registry_text(self, data: bytes, is_key: bool) -> str:
        framed = self._registry_format(data, is_key)
        if framed is None:
            return _string_text(data)
        decode = self._decoder(framed, is_key)
        if decode is None:
            return _string_text(data)
        try:
            return decode(data)
        except Exception as exc:  # noqa: BLE001 - a record its schema cannot read: shown raw
            log.debug("PRINT: record not readable with schema %s: %s", framed[1], exc)
            return _string_text(data)

    def _decoder(self, framed: tuple[str, int], is_key: bool) -> Callable[[bytes], str] | None:
        """Bytes -> JSON text through the registered schema's columns (cached per id)."""
        name, schema_id = framed
        cached = (schema_id, is_key)
        if cached in self._decoders:
            return self._decoders[cached]
        decoder: Callable[[bytes], str] | None = None
        try:
            from streamsql.formats.base import CodecContext, FormatOptions
            from streamsql.formats.registry import get_format
            from streamsql.schemaregistry.ksql import infer_columns

            options = FormatOptions(schema_id=schema_id, wrap_single_value=False)
            columns = tuple(infer_columns(name, self.registry, schema_id, is_key, options))
            codec = get_format(name).codec(columns, options, is_key,  # type: ignore[call-arg]
                                           context=CodecContext(self.topic, self.registry))
            as_json = get_format("JSON").codec(columns, FormatOptions(wrap_single_value=False), is_key)
            wrapped = len(columns) == 1 and columns[0].name in ("ROWKEY", "ROWVAL")

            def decode_json(data: bytes) -> str:
                row = codec.decode(data)
                if row is None:
                    return "<null>"
                if not wrapped:
                    return as_json.encode(row).decode("utf-8")
                if isinstance(row[0], str):
                    return row[0]  # a primitive string schema: the string, as ksqlDB shows it
                return orjson.dumps(_plain(row[0]), default=str).decode("utf-8")

            decoder = decode_json
        except Exception as exc:  # noqa: BLE001 - a schema we cannot read: records shown raw
            log.debug("PRINT: cannot decode with schema %s: %s", schema_id, exc)
            decoder = None
        self._decoders[cached] = decoder
        return decoder


def _plain(value: Any) -> Any:
    """A decoded value as JSON data (structs are dicts already; bytes as text)."""
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    return value

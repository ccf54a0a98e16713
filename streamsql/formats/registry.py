"""Formats by name: ``get_format('json')`` -> the JSON ``Format``.

Names are case-insensitive. The schema-registry formats (AVRO, JSON_SR, PROTOBUF) and
PROTOBUF_NOSR take a ``CodecContext`` (``Format.uses_context``).
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

from streamsql.errors import KsqlException
from streamsql.formats.avro import AvroFormat
from streamsql.formats.base import Format
from streamsql.formats.delimited import DelimitedFormat
from streamsql.formats.json import JsonFormat
from streamsql.formats.json_sr import JsonSrFormat
from streamsql.formats.kafka import KafkaFormat
from streamsql.formats.none import NoneFormat
from streamsql.formats.protobuf import ProtobufFormat, ProtobufNoSrFormat

# Formats are stateless, so one shared instance each.
_FORMATS: Mapping[str, Format] = MappingProxyType({
    "JSON": JsonFormat(),
    "DELIMITED": DelimitedFormat(),
    "KAFKA": KafkaFormat(),
    "NONE": NoneFormat(),
    "AVRO": AvroFormat(),
    "JSON_SR": JsonSrFormat(),
    "PROTOBUF": ProtobufFormat(),
    "PROTOBUF_NOSR": ProtobufNoSrFormat(),
})

# Known to ksqlDB, not built yet: a clear message rather than "Unknown format".
_NOT_YET_SUPPORTED: frozenset[str] = frozenset()


def get_format(name: str) -> Format:
    """The format called ``name`` (any case); KsqlException 'Unknown format: X' otherwise."""
    key = name.strip().upper()
    fmt = _FORMATS.get(key)
    if fmt is not None:
        return fmt
    if key in _NOT_YET_SUPPORTED:
        raise KsqlException(f"The '{key}' format is not supported yet")
    raise KsqlException(f"Unknown format: {key}")


def format_names() -> tuple[str, ...]:
    """Names of the formats available now."""
    return tuple(_FORMATS)

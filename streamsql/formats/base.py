"""The Format seam: bytes <-> column values, for a key or a value, one codec per schema.

A ``Format`` is stateless and knows which SQL types it can carry and which properties it
takes. ``Format.codec(columns, options)`` builds a ``Codec`` for one concrete list of columns
once, at plan time; on the hot path only ``Codec.decode`` and ``Codec.encode`` run.

``decode(bytes)`` returns a tuple with one value per column, in column order, or None for a
null payload (a tombstone). ``encode(tuple)`` is the inverse. Failures raise ``SerdeError``
with a reason that goes to the processing log.

The JSON forms (``to_json_form`` / ``from_json_form``) are what the QTT cases and the test
runner write: JSON objects for JSON values, strings for DELIMITED, plain numbers or strings for
KAFKA keys.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Sequence

from streamsql.schema import Column
from streamsql.types import SqlType


class SerdeError(Exception):
    """A payload could not be (de)serialized; the message is the reason."""


@dataclass(frozen=True)
class FormatOptions:
    """Per-source options that affect a codec.

    ``wrap_single_value``: None means the format's default (wrapped for JSON/AVRO/...).
    ``delimiter``: DELIMITED's single-character delimiter.
    ``schema_name``, ``schema_id``: for schema-registry formats (later).
    ``extra``: anything else a format needs, by upper-case property name.
    """

    wrap_single_value: bool | None = None
    delimiter: str = ","
    schema_name: str | None = None
    schema_id: int | None = None
    extra: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class CodecContext:
    """Where a codec's data lives, for formats that need it (``Format.uses_context``): the
    topic (schema-registry subjects are ``<topic>-key``/``<topic>-value``), the schema
    registry client (None when none is configured) and whether the codec serves a sink."""

    topic: str
    registry: Any = None
    is_sink: bool = False


class Codec(ABC):
    """Encoder/decoder for one list of columns."""

    @abstractmethod
    def decode(self, data: bytes | None) -> tuple | None: ...

    @abstractmethod
    def encode(self, values: tuple | None) -> bytes | None: ...

    @abstractmethod
    def to_json_form(self, data: bytes | None) -> Any:
        """The payload as the QTT cases write it."""

    @abstractmethod
    def from_json_form(self, obj: Any) -> bytes | None:
        """Bytes for a payload written as the QTT cases write it."""


class Format(ABC):
    """One serialization format (JSON, DELIMITED, KAFKA, NONE, ...)."""

    name: str = ""
    # Whether an unwrapped single value is the default (JSON/AVRO/...: wrapped).
    supports_wrapping: bool = True
    # Whether columns can be read from a schema registry when a CREATE declares none.
    supports_inference: bool = False
    # Whether ``codec`` takes the ``context`` keyword (a CodecContext); others ignore it.
    uses_context: bool = False
    # Whether KEY_/VALUE_SCHEMA_FULL_NAME apply (AVRO, PROTOBUF).
    supports_schema_full_name: bool = False

    @abstractmethod
    def validate(self, columns: Sequence[Column], options: FormatOptions, is_key: bool) -> None:
        """Raise KsqlException with ksqlDB's message when the format cannot carry these
        columns with these options (unsupported type, several columns where one is allowed,
        WRAP_SINGLE_VALUE where not supported, ...)."""

    @abstractmethod
    def codec(self, columns: Sequence[Column], options: FormatOptions, is_key: bool) -> Codec:
        """A codec for these columns. Formats with ``uses_context`` also take a keyword
        ``context: CodecContext | None``."""

    def supports_type(self, type_: SqlType) -> bool:
        return True

"""The KAFKA format: Kafka's own primitive serializers, one column at most.

INTEGER is 4 bytes big-endian, BIGINT 8 bytes, DOUBLE an 8-byte IEEE 754 double, STRING
UTF-8 text (invalid bytes become U+FFFD, as Java decodes them), BYTES the raw bytes. No other
type is supported. With no columns at all (a keyless stream's key) the payload is ignored and
nothing is written.

JSON form (how QTT cases write KAFKA keys and values): a plain number or string.
"""
from __future__ import annotations

import base64
import binascii
import struct
from typing import Any, Callable, Sequence

from streamsql.errors import KsqlException
from streamsql.formats.base import Codec, Format, FormatOptions, SerdeError
from streamsql.formats.common import (
    CoercionError,
    b64decode,
    b64encode,
    check_no_map_keys,
    check_wrapping,
    column_list,
    deserialize_prefix,
    schema_not_supported,
    serialize_prefix,
    topic_of,
)
from streamsql.schema import Column
from streamsql.types import BaseType, SqlType

_SUPPORTED = (BaseType.INTEGER, BaseType.BIGINT, BaseType.DOUBLE, BaseType.STRING, BaseType.BYTES)

# Per type: struct, Kafka deserializer name (for the size message).
_FIXED: dict[BaseType, tuple[struct.Struct, str]] = {
    BaseType.INTEGER: (struct.Struct(">i"), "IntegerDeserializer"),
    BaseType.BIGINT: (struct.Struct(">q"), "LongDeserializer"),
    BaseType.DOUBLE: (struct.Struct(">d"), "DoubleDeserializer"),
}


def _decoder(t: SqlType) -> Callable[[bytes], Any]:
    if t.base in _FIXED:
        st, deser = _FIXED[t.base]
        unpack = st.unpack
        message = f"Size of data received by {deser} is not {st.size}"

        def decode_fixed(data: bytes) -> Any:
            try:
                return unpack(data)[0]
            except struct.error:
                raise CoercionError(message) from None
        return decode_fixed
    if t.base is BaseType.STRING:
        return lambda data: data.decode("utf-8", "replace")
    return bytes  # BYTES


def _encoder(t: SqlType) -> Callable[[Any], bytes]:
    if t.base in _FIXED:
        return _FIXED[t.base][0].pack
    if t.base is BaseType.STRING:
        return lambda v: v.encode("utf-8")
    return bytes  # BYTES


def _from_json(t: SqlType, obj: Any) -> Any:
    """A QTT JSON-form scalar to the SQL value of ``t`` (lenient: the runner's input)."""
    if t.base in (BaseType.INTEGER, BaseType.BIGINT):
        if isinstance(obj, bool):
            raise CoercionError(f"Can't write {obj!r} as {t}")
        return int(obj)
    if t.base is BaseType.DOUBLE:
        return float(obj)
    if t.base is BaseType.STRING:
        if isinstance(obj, str):
            return obj
        if isinstance(obj, bool):
            return "true" if obj else "false"
        return str(obj)
    # BYTES: base64 text, as JSON carries bytes.
    return obj if isinstance(obj, (bytes, bytearray)) else b64decode(obj)


class KafkaCodec(Codec):
    """KAFKA codec for zero or one column."""

    def __init__(self, columns: Sequence[Column], is_key: bool, topic: str | None = None) -> None:
        self.columns = tuple(columns)
        self._type = self.columns[0].type if self.columns else None
        if self._type is not None:
            if self._type.base not in _SUPPORTED:
                raise KsqlException(
                    f"The 'KAFKA' format does not support type '{self._type.base.value}'")
            self._decode = _decoder(self._type)
            self._encode = _encoder(self._type)
        self._de_prefix = deserialize_prefix(is_key, topic)
        self._ser_prefix = serialize_prefix(is_key, topic)

    def decode(self, data: bytes | None) -> tuple | None:
        if data is None:
            return None
        if self._type is None:
            return ()
        try:
            return (self._decode(data),)
        except CoercionError as e:
            raise SerdeError(self._de_prefix + str(e)) from e

    def encode(self, values: tuple | None) -> bytes | None:
        if values is None or self._type is None:
            return None
        (v,) = values
        if v is None:
            return None
        try:
            return self._encode(v)
        except (struct.error, TypeError, AttributeError, UnicodeError) as e:
            raise SerdeError(self._ser_prefix + str(e)) from e

    def to_json_form(self, data: bytes | None) -> Any:
        if data is None:
            return None
        t = self._type
        if t is None or t.base is BaseType.STRING:
            return data.decode("utf-8", "replace")
        if t.base is BaseType.BYTES:
            return b64encode(data)
        try:
            return self._decode(data)
        except CoercionError:
            # Not a well-formed number: show the bytes rather than hide the record.
            return base64.b64encode(data).decode("ascii")

    def from_json_form(self, obj: Any) -> bytes | None:
        if obj is None:
            return None
        t = self._type
        if t is None:
            # Keyless: the payload is ignored, but write something faithful.
            return (obj if isinstance(obj, str) else str(obj)).encode("utf-8")
        try:
            return self._encode(_from_json(t, obj))
        except (CoercionError, ValueError, TypeError, struct.error, binascii.Error) as e:
            raise SerdeError(f"Cannot write {obj!r} as KAFKA {t}: {e}") from e


class KafkaFormat(Format):
    """ksqlDB's KAFKA format."""

    name = "KAFKA"
    supports_wrapping = False

    def supports_type(self, type_: SqlType) -> bool:
        return type_.base in _SUPPORTED

    def validate(self, columns: Sequence[Column], options: FormatOptions, is_key: bool) -> None:
        features: tuple[str, ...] = ()
        if is_key:
            check_no_map_keys(columns)
        else:
            check_wrapping(self.name, columns, options.wrap_single_value, False, True)
            if options.wrap_single_value is False:
                features = ("UNWRAP_SINGLES",)
        if len(columns) > 1:
            raise schema_not_supported(
                self.name, columns, features, is_key,
                f"The 'KAFKA' format only supports a single field. Got: "
                f"{column_list(columns, is_key)}")
        for c in columns:
            if not self.supports_type(c.type):
                raise schema_not_supported(
                    self.name, columns, features, is_key,
                    f"The 'KAFKA' format does not support type '{c.type.base.value}'")

    def codec(self, columns: Sequence[Column], options: FormatOptions, is_key: bool) -> Codec:
        return KafkaCodec(columns, is_key, topic_of(options.extra))

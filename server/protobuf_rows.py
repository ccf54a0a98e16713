"""Query rows as protobuf messages, for ``/query`` with ``Accept: application/vnd.ksql.v1+protobuf``.

ksqlDB 0.29 answers a pull query asked for in that media type with its usual JSON array of
``StreamedRow`` objects, except that the header also carries ``protoSchema`` (the result's
columns, key columns included, as one proto3 message ``ConnectDefault1``, the schema
Confluent's ProtobufData derives from them) and each row is ``{"row":{"protobufBytes":"..."}}``:
the bare protobuf bytes of that message (no Confluent framing), base64.

``RowMessages(types, names)`` gives both: ``schema`` (the .proto text) and ``encode(row)``
(the bytes). The encoder writes the wire format straight from the SQL types, proto3 style:
a scalar equal to its default (0, "", false) or NULL is left out, repeated numbers are packed,
a STRUCT is a nested message, a MAP is a repeated ``ConnectDefault<n>Entry`` message
(``key`` = 1, ``value`` = 2), TIMESTAMP/DATE/TIME/DECIMAL are google.protobuf.Timestamp,
google.type.Date, google.type.TimeOfDay and confluent.type.Decimal.

Map entries come in the order ksqlDB's maps (``java.util.HashMap``) iterate them: by hash
bucket of the key's ``String.hashCode``, then in insertion order, so the bytes (and the text
a Java client prints from them) are the ones ksqlDB's server sends.
"""
from __future__ import annotations

import datetime
import struct
from decimal import Decimal
from typing import Any, Callable, Sequence

from streamsql.formats.connect import unscaled_bytes
from streamsql.formats.protobuf import proto_schema_for
from streamsql.schema import Column
from streamsql.types import STRING, ArrayType, BaseType, DecimalType, MapType, SqlType, StructType

__all__ = ["RowMessages", "java_hashmap_order"]

Encode = Callable[[Any], bytes]          # a non-null value -> its encoded payload
_VARINT, _FIXED64, _LEN = 0, 1, 2
_EPOCH_ORDINAL = datetime.date(1970, 1, 1).toordinal()


# =============================================================================== wire bits
def _varint(n: int) -> bytes:
    """A varint; negative numbers as their 64-bit two's complement (int32 and int64 alike)."""
    n &= 0xFFFF_FFFF_FFFF_FFFF
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _tag(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _len_field(number: int, payload: bytes) -> bytes:
    return _tag(number, _LEN) + _varint(len(payload)) + payload


def _double(v: float) -> bytes:
    return struct.pack("<d", float(v))


_ZERO_DOUBLE = _double(0.0)


def _message(fields: Sequence[tuple[int, Any]]) -> bytes:
    """A message of scalar int fields (number, value), defaults left out."""
    return b"".join(_tag(n, _VARINT) + _varint(v) for n, v in fields if v)


# ========================================================================== map entry order
def _java_hash(k: Any, t: SqlType) -> int:
    """``k.hashCode()`` of the Java object a key of SQL type ``t`` is, as an unsigned int."""
    if k is None:
        return 0
    if t.base is BaseType.BOOLEAN:
        return 1231 if k else 1237
    if t.base is BaseType.INTEGER:
        return int(k) & 0xFFFF_FFFF
    if t.base is BaseType.BIGINT:
        v = int(k) & 0xFFFF_FFFF_FFFF_FFFF
        return (v ^ (v >> 32)) & 0xFFFF_FFFF
    if t.base is BaseType.DOUBLE:
        bits = struct.unpack("<Q", _double(k))[0]
        return (bits ^ (bits >> 32)) & 0xFFFF_FFFF
    h = 0
    data = str(k).encode("utf-16-be")
    for i in range(0, len(data), 2):
        h = (31 * h + (data[i] << 8 | data[i + 1])) & 0xFFFF_FFFF
    return h


def java_hashmap_order(keys: Sequence[Any], key_type: SqlType = STRING) -> list[int]:
    """Positions of ``keys`` (inserted in this order) in the order a ``java.util.HashMap``
    that received them one by one iterates them: by bucket (the spread hash masked by the
    table size, 16 doubled while more than 3/4 full), then insertion order within a bucket."""
    capacity = 16
    while len(keys) > capacity * 3 // 4:
        capacity *= 2

    def bucket(i: int) -> int:
        h = _java_hash(keys[i], key_type)
        return (h ^ (h >> 16)) & (capacity - 1)
    return sorted(range(len(keys)), key=lambda i: (bucket(i), i))


# ============================================================================== the encoder
class _Field:
    """How one field of a message is written: ``write(value) -> bytes`` (b"" when left out)."""

    def __init__(self, number: int, t: SqlType) -> None:
        self.number = number
        self.write = self._writer(number, t)

    @staticmethod
    def _writer(number: int, t: SqlType) -> Callable[[Any], bytes]:
        if isinstance(t, ArrayType):
            item = _payload(t.item)
            default = _default(t.item)
            if _packed(t.item):
                def packed(v: Any) -> bytes:
                    if v is None:
                        return b""
                    body = b"".join(item(default if x is None else x) for x in v)
                    return _len_field(number, body) if body else b""
                return packed
            wire = _wire(t.item)

            def repeated(v: Any) -> bytes:
                if v is None:
                    return b""
                return b"".join(_with_tag(number, wire, item(default if x is None else x)) for x in v)
            return repeated
        if isinstance(t, MapType):
            key, value = _Field(1, t.key), _Field(2, t.value)

            def entries(v: dict | None) -> bytes:
                if v is None:
                    return b""
                items = list(v.items())
                order = java_hashmap_order([k for k, _ in items], t.key)
                return b"".join(_len_field(number, key.write(items[i][0]) + value.write(items[i][1]))
                                for i in order)
            return entries
        one = _payload(t)
        wire = _wire(t)
        is_message = wire == _LEN and t.base not in (BaseType.STRING, BaseType.BYTES)

        def single(v: Any) -> bytes:
            if v is None:
                return b""
            # proto3: a scalar at its default is not written; a message always is
            # (-0.0 is not the default: Java compares the bits).
            if not is_message and (_double(v) == _ZERO_DOUBLE if isinstance(v, float) else not v):
                return b""
            return _with_tag(number, wire, one(v))
        return single


def _with_tag(number: int, wire: int, payload: bytes) -> bytes:
    if wire == _LEN:
        return _len_field(number, payload)
    return _tag(number, wire) + payload


def _wire(t: SqlType) -> int:
    if t.base is BaseType.DOUBLE:
        return _FIXED64
    if t.base in (BaseType.BOOLEAN, BaseType.INTEGER, BaseType.BIGINT):
        return _VARINT
    return _LEN


def _packed(t: SqlType) -> bool:
    return _wire(t) != _LEN


def _default(t: SqlType) -> Any:
    """What a NULL element of a repeated field is written as (protobuf has no null there)."""
    if t.base in (BaseType.BOOLEAN, BaseType.INTEGER, BaseType.BIGINT):
        return 0
    if t.base is BaseType.DOUBLE:
        return 0.0
    if t.base is BaseType.STRING:
        return ""
    if t.base is BaseType.BYTES:
        return b""
    if isinstance(t, StructType):
        return {}
    return None


def _payload(t: SqlType) -> Encode:
    """The encoded payload of a non-null value of ``t`` (without tag or length)."""
    base = t.base
    if base is BaseType.BOOLEAN:
        return lambda v: b"\x01" if v else b"\x00"
    if base in (BaseType.INTEGER, BaseType.BIGINT):
        return lambda v: _varint(int(v))
    if base is BaseType.DOUBLE:
        return _double
    if base is BaseType.STRING:
        return lambda v: str(v).encode("utf-8")
    if base is BaseType.BYTES:
        return bytes
    if base is BaseType.TIMESTAMP:
        # google.protobuf.Timestamp: seconds = 1, nanos = 2 (nanos never negative)
        return lambda ms: _message(((1, ms // 1000), (2, ms % 1000 * 1_000_000)))
    if base is BaseType.DATE:
        def date(days: int) -> bytes:
            d = datetime.date.fromordinal(days + _EPOCH_ORDINAL)
            return _message(((1, d.year), (2, d.month), (3, d.day)))  # google.type.Date
        return date
    if base is BaseType.TIME:
        # google.type.TimeOfDay: hours, minutes, seconds, nanos
        return lambda ms: _message(((1, ms // 3_600_000), (2, ms // 60_000 % 60), (3, ms // 1000 % 60),
                                    (4, ms % 1000 * 1_000_000)))
    if isinstance(t, DecimalType):
        precision, scale = t.precision, t.scale

        def decimal(v: Decimal) -> bytes:
            # confluent.type.Decimal: value = 1 (unscaled, big-endian), precision = 2, scale = 3
            return (_len_field(1, unscaled_bytes(Decimal(v), scale))
                    + _message(((2, precision), (3, scale))))
        return decimal
    if isinstance(t, StructType):
        fields = tuple((f.name, _Field(i, f.type)) for i, f in enumerate(t.fields, 1))

        def message(v: dict) -> bytes:
            return b"".join(field.write(v.get(name)) for name, field in fields)
        return message
    raise ValueError(f"no protobuf form for {t}")


class RowMessages:
    """The protobuf form of one query's rows: ``schema`` (.proto text of message
    ``ConnectDefault1``, one field per column in order) and ``encode(row) -> bytes``."""

    def __init__(self, names: Sequence[str], types: Sequence[SqlType]) -> None:
        self.schema = proto_schema_for([Column(n, t) for n, t in zip(names, types)], None, None,
                                       map_entries=True)
        self._fields = tuple(_Field(i, t) for i, t in enumerate(types, 1))

    def encode(self, row: Sequence[Any]) -> bytes:
        return b"".join(field.write(v) for field, v in zip(self._fields, row))

"""Protobuf messages printed in text format exactly as protobuf-java's ``TextFormat`` prints
them (``TextFormat.printer().printToString(message)``), for the REST cases' ``queryProto``
rows, which list what ksqlDB's Java test executor printed.

Python's ``text_format`` differs in the details that matter here: non-ASCII text (Java
escapes its UTF-8 bytes in octal), and floating-point numbers (Java's ``Double.toString``:
``1.0E20``, ``100.0``). Fields are printed in field-number order, set fields only (as
``getAllFields``), map fields sorted by key (as Java's printer sorts map entries), nested
messages indented by two spaces.

    proto_text(schema_text, data) -> "ID: 1\\nNAME: \\"a\\"\\n"
"""
from __future__ import annotations

import functools
import math
import struct
from decimal import Decimal
from typing import Any

from streamsql.casts import java_double_str as java_double  # Java's Double.toString

__all__ = ["proto_text", "message_class", "print_message", "java_double", "java_float"]


def proto_text(schema: str, data: bytes) -> str:
    """``data`` decoded as the first message type of ``schema`` (.proto text), printed."""
    message = message_class(schema)()
    message.ParseFromString(data)
    return print_message(message)


@functools.lru_cache(maxsize=64)
def message_class(schema: str) -> Any:
    """The message class of the first message type declared in ``schema``."""
    from google.protobuf import message_factory

    from streamsql.schemaregistry.protoparse import build_pool

    pool, parsed = build_pool(schema, "rqtt_row.proto", lambda name: None)
    first = parsed.first_message()
    if first is None:
        raise ValueError("the schema declares no message")
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(first.full_name))


def print_message(message: Any, indent: int = 0) -> str:
    """``message`` in Java's text format."""
    out: list[str] = []
    _print(message, indent, out)
    return "".join(out)


def _print(message: Any, indent: int, out: list[str]) -> None:
    pad = " " * indent
    for field, value in message.ListFields():
        if _is_map(field):
            entry_class = value.GetEntryClass()
            values = [entry_class(key=k, value=value[k]) for k in sorted(value)]
        elif field.is_repeated:
            values = list(value)
        else:
            values = [value]
        for v in values:
            if field.cpp_type == field.CPPTYPE_MESSAGE:
                out.append(f"{pad}{field.name} {{\n")
                _print(v, indent + 2, out)
                out.append(f"{pad}}}\n")
            else:
                out.append(f"{pad}{field.name}: {_scalar(field, v)}\n")


def _is_map(field: Any) -> bool:
    return (field.cpp_type == field.CPPTYPE_MESSAGE and field.is_repeated
            and field.message_type.GetOptions().map_entry)


def _scalar(field: Any, value: Any) -> str:
    kind = field.cpp_type
    if kind == field.CPPTYPE_STRING:
        data = value if isinstance(value, bytes) else value.encode("utf-8")
        return '"' + escape_bytes(data) + '"'
    if kind == field.CPPTYPE_BOOL:
        return "true" if value else "false"
    if kind == field.CPPTYPE_ENUM:
        found = field.enum_type.values_by_number.get(value)
        return found.name if found is not None else str(value)
    if kind == field.CPPTYPE_DOUBLE:
        return java_double(value)
    if kind == field.CPPTYPE_FLOAT:
        return java_float(value)
    return str(value)


_ESCAPES = {0x07: "\\a", 0x08: "\\b", 0x0C: "\\f", 0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t",
            0x0B: "\\v", 0x5C: "\\\\", 0x27: "\\'", 0x22: '\\"'}


def escape_bytes(data: bytes) -> str:
    """Java's ``TextFormat.escapeBytes``: C escapes, printable ASCII as is, other bytes in
    three octal digits."""
    out = []
    for b in data:
        if b in _ESCAPES:
            out.append(_ESCAPES[b])
        elif 0x20 <= b < 0x7F:
            out.append(chr(b))
        else:
            out.append(f"\\{b:03o}")
    return "".join(out)


def java_float(value: float) -> str:
    """Java's ``Float.toString`` (the shortest digits that read back as the 32-bit value)."""
    if math.isnan(value) or math.isinf(value):
        return _java_format(value, "")
    single = struct.unpack("<f", struct.pack("<f", value))[0]
    for digits in range(1, 10):
        text = f"{single:.{digits}g}"
        if struct.unpack("<f", struct.pack("<f", float(text)))[0] == single:
            return _java_format(single, text)
    return _java_format(single, repr(single))


def _java_format(value: float, shortest: str) -> str:
    """Java's Float.toString layout of ``shortest`` (the float's shortest digits)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    sign, digits, exponent = Decimal(shortest).normalize().as_tuple()
    text = "".join(map(str, digits))
    assert isinstance(exponent, int)
    point = len(text) + exponent  # digits before the decimal point
    minus = "-" if sign else ""
    if 1e-3 <= abs(value) < 1e7:
        if point <= 0:
            return f"{minus}0.{'0' * -point}{text}"
        if point >= len(text):
            return f"{minus}{text}{'0' * (point - len(text))}.0"
        return f"{minus}{text[:point]}.{text[point:]}"
    mantissa = text[0] + "." + (text[1:] or "0")
    return f"{minus}{mantissa}E{point - 1}"

"""JSON that keeps numbers as written: ``1.50`` stays ``1.50``, ``2.0`` stays ``2.0``.

The REST query-validation cases (../shared/rqtt) compare numbers as ksqlDB's Java client
reads them (``1`` is not ``1.0``, ``1.5`` is not ``1.50``), so both the server's answers and
the cases' expectations are read with every number kept as its text in a ``JsonNumber``.

- ``loads(text)``: a JSON document, numbers as ``JsonNumber``.
- ``dumps(obj, indent)``: back to text, ``JsonNumber`` written as its text (the standard
  encoder cannot do this: it writes int and float subclasses through their base type).
- ``array_items(text)``: the complete values of a JSON array that may be cut short (a
  streamed ``/query`` response closed before its end).
- ``plain(obj)``: the same value with Python ints and floats instead of ``JsonNumber``.
"""
from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = ["JsonNumber", "loads", "dumps", "array_items", "plain"]


class JsonNumber:
    """A JSON number as written. Equal to another with the same text (the comparison module
    decides what counts as the same number for a case)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    @property
    def is_integral(self) -> bool:
        """Written without a fraction or exponent (Jackson reads it as an integer)."""
        return not any(c in self.text for c in ".eE") and self.text not in _CONSTANTS

    def value(self) -> int | float:
        """The number as Python reads JSON (int, or float)."""
        if self.is_integral:
            return int(self.text)
        return float(self.text)

    def decimal(self) -> Decimal | None:
        """The number as a Decimal with the scale it was written with (Java's BigDecimal
        of the text); None for NaN and the infinities."""
        try:
            return Decimal(self.text)
        except InvalidOperation:
            return None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JsonNumber) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return self.text


_CONSTANTS = ("NaN", "Infinity", "-Infinity")
_DECODER = json.JSONDecoder(parse_float=JsonNumber, parse_int=JsonNumber, parse_constant=JsonNumber)


def loads(text: str | bytes) -> Any:
    """Parse a JSON document; numbers become ``JsonNumber``."""
    if isinstance(text, (bytes, bytearray)):
        text = text.decode("utf-8")
    return _DECODER.decode(text)


def array_items(text: str) -> tuple[list[Any], bool]:
    """The complete values of the JSON array ``text`` starts with (whitespace allowed around
    them), and whether the array was complete. A value cut short ends the list: a streamed
    response closed early keeps what had fully arrived. ValueError if ``text`` is not an
    array at all."""
    pos = _skip_ws(text, 0)
    if pos >= len(text) or text[pos] != "[":
        raise ValueError("not a JSON array")
    pos = _skip_ws(text, pos + 1)
    items: list[Any] = []
    if pos < len(text) and text[pos] == "]":
        return items, True
    while pos < len(text):
        try:
            value, pos = _DECODER.raw_decode(text, pos)
        except json.JSONDecodeError:
            return items, False
        items.append(value)
        pos = _skip_ws(text, pos)
        if pos >= len(text):
            return items, False
        if text[pos] == "]":
            return items, True
        if text[pos] != ",":
            raise ValueError(f"unexpected {text[pos]!r} at {pos} in a JSON array")
        pos = _skip_ws(text, pos + 1)
    return items, False


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def dumps(obj: Any, indent: int | None = None) -> str:
    """JSON text of ``obj`` (dicts, lists, strings, numbers, ``JsonNumber``, booleans, None;
    anything else as its ``str``), with ``indent`` spaces per level when given."""
    out: list[str] = []
    _write(obj, out, indent, 0)
    return "".join(out)


def _write(obj: Any, out: list[str], indent: int | None, level: int) -> None:
    if isinstance(obj, JsonNumber):
        out.append(obj.text)
    elif obj is None or isinstance(obj, (bool, int, float, str)):
        out.append(json.dumps(obj, ensure_ascii=False))
    elif isinstance(obj, Decimal):
        out.append(str(obj))
    elif isinstance(obj, dict):
        if not obj:
            out.append("{}")
            return
        out.append("{")
        for i, (k, v) in enumerate(obj.items()):
            if i:
                out.append(",")
            _newline(out, indent, level + 1)
            out.append(json.dumps(str(k), ensure_ascii=False))
            out.append(": " if indent is not None else ":")
            _write(v, out, indent, level + 1)
        _newline(out, indent, level)
        out.append("}")
    elif isinstance(obj, (list, tuple)):
        if not obj:
            out.append("[]")
            return
        out.append("[")
        for i, v in enumerate(obj):
            if i:
                out.append(",")
            _newline(out, indent, level + 1)
            _write(v, out, indent, level + 1)
        _newline(out, indent, level)
        out.append("]")
    else:
        out.append(json.dumps(str(obj), ensure_ascii=False))


def _newline(out: list[str], indent: int | None, level: int) -> None:
    if indent is not None:
        out.append("\n" + " " * (indent * level))


def plain(obj: Any) -> Any:
    """``obj`` with each ``JsonNumber`` replaced by the int or float Python's json reads."""
    if isinstance(obj, JsonNumber):
        return obj.value()
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [plain(v) for v in obj]
    return obj

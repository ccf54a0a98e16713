"""JSON functions: EXTRACTJSONFIELD, IS_JSON_STRING, JSON_ARRAY_CONTAINS, JSON_ARRAY_LENGTH,
JSON_CONCAT, JSON_ITEMS, JSON_KEYS, JSON_RECORDS and TO_JSON_STRING.

ksqlDB reads JSON with Jackson, configured to keep decimal numbers exact and to ignore anything
after the first value; it writes JSON compactly with Jackson's escapes. ``parse_json`` and
``render_json`` reproduce that: numbers with a fraction or exponent are parsed as Decimal so
they print back exactly as written ("1.23450" stays "1.23450").
"""
from __future__ import annotations

import base64
import json as _json
import math
import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from functools import lru_cache
from typing import Any, Callable

import orjson

from streamsql.functions.registry import udf
from streamsql.types import ArrayType, BaseType, MapType, SqlType, StructType

# ---------------------------------------------------------------------------------- parsing
_MISSING = object()  # Jackson's MissingNode: the document was empty
_JSON_WS = " \t\n\r"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"Non-standard token '{name}'")


_DECODER = _json.JSONDecoder(parse_float=Decimal, parse_constant=_reject_constant)
_FLOAT_DECODER = _json.JSONDecoder(parse_constant=_reject_constant)


def parse_json(text: str, decoder: _json.JSONDecoder = _DECODER) -> Any:
    """Parse the first JSON value in ``text`` as Jackson's readTree does; ``_MISSING`` for an
    empty document. Raises ValueError for invalid JSON."""
    start = 0
    n = len(text)
    while start < n and text[start] in _JSON_WS:
        start += 1
    if start == n:
        return _MISSING
    value, end = decoder.raw_decode(text, start)
    # Jackson requires a root-level scalar to be followed by whitespace (or nothing).
    if end < n and not isinstance(value, (dict, list, str)) and text[end] not in _JSON_WS:
        if not (value is None or isinstance(value, bool)) or text[end].isalnum() or text[end] == "_":
            raise ValueError(f"Unexpected character after root-level value: {text[end]!r}")
    return value


# -------------------------------------------------------------------------------- rendering
_ESCAPES = {i: f"\\u{i:04X}" for i in range(0x20)}
_ESCAPES.update({ord('"'): '\\"', ord("\\"): "\\\\", 0x08: "\\b", 0x09: "\\t", 0x0A: "\\n",
                 0x0C: "\\f", 0x0D: "\\r"})


def quote(text: str) -> str:
    """A JSON string literal as Jackson writes it (non-ASCII kept, control chars escaped)."""
    return '"' + text.translate(_ESCAPES) + '"'


def render_json(node: Any) -> str:
    """Compact JSON for a parsed document (Jackson's JsonNode.toString())."""
    if isinstance(node, str):
        return quote(node)
    if node is None:
        return "null"
    if node is True:
        return "true"
    if node is False:
        return "false"
    if isinstance(node, dict):
        return "{" + ",".join(quote(k) + ":" + render_json(v) for k, v in node.items()) + "}"
    if isinstance(node, list):
        return "[" + ",".join(render_json(v) for v in node) + "]"
    return str(node)  # int, or Decimal (whose str() is Java's BigDecimal.toString())


def java_double_str(value: float) -> str:
    """Java's Double.toString: plain for 1e-3 <= |x| < 1e7, else computerized scientific
    notation ("1.0E10"), always with a fractional digit."""
    if value != value:
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    magnitude = abs(value)
    text = repr(value)
    if 1e-3 <= magnitude < 1e7:
        return text  # repr is plain and has a '.0' in this range
    sign, digits, exponent = Decimal(text).as_tuple()
    digit_str = "".join(map(str, digits)).rstrip("0") or "0"
    sci_exponent = len(digits) - 1 + exponent  # type: ignore[operator]
    mantissa = digit_str[0] + "." + (digit_str[1:] or "0")
    return ("-" if sign else "") + mantissa + "E" + str(sci_exponent)


# ---------------------------------------------------------------------- EXTRACTJSONFIELD
@lru_cache(maxsize=256)
def _path_tokens(path: str) -> tuple[str, ...]:
    """Split a JSONPath such as $.a.b[0]['c d'] into its keys and indexes."""
    if not path.startswith("$"):
        raise ValueError(f"Invalid JSON path: {path}")
    tokens: list[str] = []
    i, n = 1, len(path)
    while i < n:
        c = path[i]
        if c == ".":
            j = i + 1
            while j < n and path[j] not in ".[":
                j += 1
            if j == i + 1:
                raise ValueError(f"Invalid JSON path: {path}")
            tokens.append(path[i + 1:j])
            i = j
        elif c == "[":
            if i + 1 < n and path[i + 1] in "'\"":
                close = path.find(path[i + 1] + "]", i + 2)
                if close < 0:
                    raise ValueError(f"Invalid JSON path: {path}")
                tokens.append(path[i + 2:close])
                i = close + 2
            else:
                close = path.find("]", i + 1)
                if close < 0:
                    raise ValueError(f"Invalid JSON path: {path}")
                tokens.append(path[i + 1:close].strip())
                i = close + 1
        else:
            raise ValueError(f"Invalid JSON path: {path}")
    return tuple(tokens)


@udf("EXTRACTJSONFIELD", "STRING", [("input", "STRING"), ("path", "STRING")])
def extractjsonfield(text: str | None, path: str | None) -> str | None:
    """The value at a JSONPath ($.a.b, $.a[0], $['a']) in a JSON string: strings without
    quotes, anything else as compact JSON; NULL if the path does not exist."""
    if text is None or path is None:
        return None
    tokens = _path_tokens(path)
    node = parse_json(text)
    for token in tokens:
        if isinstance(node, list):
            try:
                index = int(token)
            except ValueError:
                return None
            if not 0 <= index < len(node):
                return None
            node = node[index]
        elif isinstance(node, dict):
            node = node.get(token, _MISSING)
            if node is _MISSING:
                return None
        else:
            return None
    if node is _MISSING:
        return None
    return node if isinstance(node, str) else render_json(node)


# --------------------------------------------------------------------------- other readers
@udf("IS_JSON_STRING", "BOOLEAN", [("input", "STRING")])
def is_json_string(text: str | None) -> bool:
    """Whether the string is valid JSON."""
    if text is None:
        return False
    try:
        return parse_json(text) is not _MISSING
    except ValueError:
        return False


_INT_TYPES = (BaseType.INTEGER, BaseType.BIGINT)


@udf("JSON_ARRAY_CONTAINS", "BOOLEAN", [("jsonArray", "STRING"), ("val", "ANY")], factory=True)
def json_array_contains(arg_types: list[SqlType], return_type: SqlType) -> Callable[[Any, Any], Any]:
    """Whether a JSON array contains a value (compared with its JSON type: integers match
    JSON integers, DOUBLEs match JSON decimals, and so on); false for invalid JSON."""
    base = arg_types[1].base

    if base in _INT_TYPES:
        def matches(element: Any, val: Any) -> bool:
            return type(element) is int and element == val
    elif base is BaseType.DOUBLE:
        def matches(element: Any, val: Any) -> bool:
            return type(element) is float and (element == val or element != element and val != val)
    elif base is BaseType.STRING:
        def matches(element: Any, val: Any) -> bool:
            return type(element) is str and element == val
    elif base is BaseType.BOOLEAN:
        def matches(element: Any, val: Any) -> bool:
            return type(element) is bool and element == val
    elif base is BaseType.NULL:
        def matches(element: Any, val: Any) -> bool:
            return element is None
    else:
        def matches(element: Any, val: Any) -> bool:
            return False

    def impl(text: str | None, val: Any) -> bool | None:
        if text is None:
            return None
        try:
            doc = parse_json(text, _FLOAT_DECODER)
        except ValueError:
            return False
        if not isinstance(doc, list):
            return False
        if val is None:
            return any(e is None for e in doc)
        return any(matches(e, val) for e in doc)

    return impl


def _parse_or_missing(text: str) -> Any:
    try:
        return parse_json(text)
    except ValueError as exc:
        raise ValueError(f"Invalid JSON format: {text}") from exc


@udf("JSON_ARRAY_LENGTH", "INTEGER", [("jsonArray", "STRING")])
def json_array_length(text: str | None) -> int | None:
    """The number of elements of a JSON array; NULL if the input is not a JSON array."""
    if text is None:
        return None
    doc = _parse_or_missing(text)
    return len(doc) if isinstance(doc, list) else None


@udf("JSON_KEYS", "ARRAY<STRING>", [("jsonObject", "STRING")])
def json_keys(text: str | None) -> list[str] | None:
    """The keys of a JSON object; NULL if the input is not a JSON object."""
    if text is None:
        return None
    doc = _parse_or_missing(text)
    return list(doc) if isinstance(doc, dict) else None


@udf("JSON_RECORDS", "MAP<STRING, STRING>", [("jsonObject", "STRING")])
def json_records(text: str | None) -> dict[str, str] | None:
    """The key/value pairs of a JSON object, each value as a JSON string; NULL if the input is
    not a JSON object."""
    if text is None:
        return None
    doc = _parse_or_missing(text)
    if not isinstance(doc, dict):
        return None
    return {k: render_json(v) for k, v in doc.items()}


@udf("JSON_ITEMS", "ARRAY<STRING>", [("jsonArray", "STRING")])
def json_items(text: str | None) -> list[str] | None:
    """The elements of a JSON array, each as a JSON string; NULL if the input is not a JSON
    array."""
    if text is None:
        return None
    doc = _parse_or_missing(text)
    if not isinstance(doc, list):
        return None
    return [render_json(v) for v in doc]


@udf("JSON_CONCAT", "STRING", [("jsonStrings", "STRING")], variadic=True)
def json_concat(*texts: str | None) -> str | None:
    """Merges JSON objects (later keys win), or else concatenates the inputs as arrays (a
    non-array input counts as a one-element array); NULL if any input is NULL or empty."""
    if not texts:
        return None
    docs = []
    for text in texts:
        if text is None:
            return None
        doc = _parse_or_missing(text)
        if doc is _MISSING:
            return None
        docs.append(doc)
    if all(isinstance(d, dict) for d in docs):
        merged: dict[str, Any] = {}
        for d in docs:
            merged.update(d)
        return render_json(merged)
    if len(docs) == 1:
        return render_json(docs[0])
    items: list[Any] = []
    for d in docs:
        if isinstance(d, list):
            items.extend(d)
        else:
            items.append(d)
    return render_json(items)


# --------------------------------------------------------------------------- TO_JSON_STRING
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_FAST_BASES = frozenset({BaseType.INTEGER, BaseType.BIGINT, BaseType.BOOLEAN, BaseType.NULL})


def _orjson_safe(type_: SqlType) -> bool:
    """Whether orjson writes values of this type exactly as Jackson does."""
    if isinstance(type_, ArrayType):
        return _orjson_safe(type_.item)
    if isinstance(type_, StructType):
        return all(_orjson_safe(f.type) for f in type_.fields)
    return type_.base in _FAST_BASES


def _double_json(value: float) -> str:
    text = java_double_str(value)
    # Jackson quotes the non-numeric doubles.
    return '"' + text + '"' if text[-1] in "Ny" else text


def _date_json(days: int) -> str:
    d = _EPOCH + timedelta(days=days)
    return f'"{d.year:04d}-{d.month:02d}-{d.day:02d}"'


def _time_json(ms: int) -> str:
    # java.sql.Time.toString(): HH:mm:ss, milliseconds dropped.
    seconds = ms // 1000
    return f'"{seconds // 3600 % 24:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"'


def _timestamp_json(ms: int) -> str:
    m = _EPOCH + timedelta(milliseconds=ms)
    return (f'"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:'
            f'{m.second:02d}.{ms % 1000:03d}"')


def _bytes_json(value: bytes) -> str:
    return '"' + base64.b64encode(value).decode("ascii") + '"'


_SCALAR_RENDERERS: dict[BaseType, Callable[[Any], str]] = {
    BaseType.BOOLEAN: lambda v: "true" if v else "false",
    BaseType.INTEGER: str,
    BaseType.BIGINT: str,
    BaseType.DOUBLE: _double_json,
    BaseType.DECIMAL: str,
    BaseType.STRING: quote,
    BaseType.BYTES: _bytes_json,
    BaseType.DATE: _date_json,
    BaseType.TIME: _time_json,
    BaseType.TIMESTAMP: _timestamp_json,
    BaseType.NULL: lambda v: "null",
}


def json_renderer(type_: SqlType) -> Callable[[Any], str]:
    """A function writing values of ``type_`` as ksqlDB's TO_JSON_STRING does (built once
    per call site)."""
    if _orjson_safe(type_):
        dumps = orjson.dumps

        def fast(value: Any) -> str:
            return dumps(value).decode()

        return fast
    if isinstance(type_, ArrayType):
        item = json_renderer(type_.item)

        def array(value: list[Any] | None) -> str:
            if value is None:
                return "null"
            return "[" + ",".join("null" if v is None else item(v) for v in value) + "]"

        return array
    if isinstance(type_, MapType):
        val = json_renderer(type_.value)

        def mapping(value: dict[Any, Any] | None) -> str:
            if value is None:
                return "null"
            return "{" + ",".join(quote(str(k)) + ":" + ("null" if v is None else val(v))
                                  for k, v in value.items()) + "}"

        return mapping
    if isinstance(type_, StructType):
        fields = [(f.name, quote(f.name) + ":", json_renderer(f.type)) for f in type_.fields]

        def struct(value: dict[str, Any] | None) -> str:
            if value is None:
                return "null"
            parts = []
            for name, prefix, render in fields:
                v = value.get(name)
                parts.append(prefix + ("null" if v is None else render(v)))
            return "{" + ",".join(parts) + "}"

        return struct
    scalar = _SCALAR_RENDERERS.get(type_.base)
    if scalar is None:
        raise ValueError(f"TO_JSON_STRING does not support {type_}")

    def render(value: Any) -> str:
        return "null" if value is None else scalar(value)

    return render


@udf("TO_JSON_STRING", "STRING", [("input", "T")], factory=True)
def to_json_string(arg_types: list[SqlType], return_type: SqlType) -> Callable[[Any], str]:
    """The JSON text of any value (NULL gives 'null'); dates, times and timestamps are
    written as quoted ISO strings, BYTES as base64."""
    return json_renderer(arg_types[0])

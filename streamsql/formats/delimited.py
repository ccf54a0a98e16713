"""The DELIMITED format: one CSV record per payload, as ksqlDB reads and writes it with Apache
Commons CSV (``CSVFormat.DEFAULT`` with the configured delimiter).

- Only primitive types; one field per column, in column order; the field count must match.
- An empty field (quoted or not) is NULL. A NULL is written as an empty field.
- Numbers are Java's text: ``Integer.parseInt``/``Double.parseDouble`` on the way in,
  ``Double.toString`` (``1.0E10``) and ``BigDecimal.toPlainString`` (scale kept) on the way
  out. BOOLEAN is ``Boolean.parseBoolean`` (anything but "true" is false). BYTES are base64.
  DATE, TIME and TIMESTAMP are their numbers (days, ms of day, epoch ms).
- Quoting is Commons CSV's MINIMAL mode: a field is quoted when it contains the delimiter, a
  quote or a line break, starts with a character up to '#', ends with a character up to space,
  or, as the first field of the record, starts with anything but an ASCII letter or digit
  (so ``"-1",a,1``). Quotes inside are doubled.
- The delimiter is one character, or 'TAB' or 'SPACE' (see ``parse_delimiter``).
"""
from __future__ import annotations

from decimal import Decimal
from typing import Any, Callable, Sequence

from streamsql.errors import KsqlException
from streamsql.formats.base import Codec, Format, FormatOptions, SerdeError
from streamsql.formats.common import (
    JAVA_WHITESPACE,
    CoercionError,
    b64decode,
    b64encode,
    check_no_map_keys,
    check_wrapping,
    decimal_fitter,
    decimal_plain,
    deserialize_prefix,
    java_double_str,
    parse_java_decimal,
    parse_java_double,
    parse_java_int,
    parse_java_long,
    schema_not_supported,
    serialize_prefix,
    topic_of,
)
from streamsql.schema import Column
from streamsql.types import BaseType, DecimalType, SqlType

_NAMED_DELIMITERS = {"TAB": "\t", "SPACE": " "}
_BAD_DATA = (CoercionError, ValueError, TypeError, OverflowError, ArithmeticError)


def parse_delimiter(value: str, property_name: str = "VALUE_DELIMITER") -> str:
    """The delimiter character for a KEY_DELIMITER/VALUE_DELIMITER property value, or
    KsqlException with ksqlDB's message. (ksqlDB's statement preparation prefixes these with
    'Failed to prepare statement: '.)"""
    if not value.strip(JAVA_WHITESPACE):
        reason = ("Delimiter cannot be empty, if you meant to have a tab or space for delimiter, "
                  "please use the special values 'TAB' or 'SPACE'")
    elif len(value) == 1:
        return value
    elif value in _NAMED_DELIMITERS:
        return _NAMED_DELIMITERS[value]
    else:
        reason = (f"Invalid delimiter value: '{value}'. Delimiter must be a single character or "
                  f"{','.join(_NAMED_DELIMITERS)}")
    raise KsqlException(f"Configuration {property_name} is invalid: {reason}\n"
                        "Example valid value: ';'")


# -- CSV record parsing --------------------------------------------------------------------------

def parse_record(text: str, delim: str) -> list[str] | None:
    """The fields of the first CSV record in ``text`` (None if there is none), as Commons
    CSV's DEFAULT format reads them: '"' quotes with "" escaping, empty lines skipped."""
    if '"' not in text and "\n" not in text and "\r" not in text:
        return text.split(delim) if text else None
    n = len(text)
    i = 0
    while i < n and text[i] in "\r\n":  # empty lines are ignored
        i += 1
    if i >= n:
        return None
    fields: list[str] = []
    while True:
        if i < n and text[i] == '"':
            i += 1
            buf: list[str] = []
            while True:
                j = text.find('"', i)
                if j < 0:
                    raise CoercionError("EOF reached before encapsulated token finished")
                buf.append(text[i:j])
                if j + 1 < n and text[j + 1] == '"':
                    buf.append('"')
                    i = j + 2
                    continue
                i = j + 1
                break
            # Only whitespace may sit between a closing quote and the delimiter.
            while i < n and text[i] != delim and text[i] not in "\r\n":
                if not text[i].isspace():
                    raise CoercionError("invalid char between encapsulated token and delimiter")
                i += 1
            fields.append("".join(buf))
        else:
            j = i
            while j < n and text[j] != delim and text[j] not in "\r\n":
                j += 1
            fields.append(text[i:j])
            i = j
        if i >= n or text[i] in "\r\n":
            return fields
        i += 1  # past the delimiter; a trailing one yields a last empty field


# -- CSV field writing ---------------------------------------------------------------------------

def _first_needs_quote(c: str) -> bool:
    # Commons CSV quotes a record's first field unless it starts with an ASCII letter/digit.
    return not ("0" <= c <= "9" or "A" <= c <= "Z" or "a" <= c <= "z")


def quote_field(s: str, delim: str, first: bool) -> str:
    """A field as Commons CSV's MINIMAL quote mode prints it."""
    if not s:
        return '""' if first else ""
    c = s[0]
    if (first and _first_needs_quote(c)) or c <= "#":
        quote = True
    else:
        quote = ('"' in s or delim in s or "\n" in s or "\r" in s) or s[-1] <= " "
    if quote:
        return '"' + s.replace('"', '""') + '"'
    return s


def _text_writer(t: SqlType) -> Callable[[Any], str]:
    """Non-null value of ``t`` to its unquoted text."""
    base = t.base
    if base is BaseType.BOOLEAN:
        return lambda v: "true" if v else "false"
    if base in (BaseType.INTEGER, BaseType.BIGINT, BaseType.DATE, BaseType.TIME,
                BaseType.TIMESTAMP):
        return str
    if base is BaseType.DOUBLE:
        return java_double_str
    if base is BaseType.DECIMAL:
        return decimal_plain
    if base is BaseType.STRING:
        return _identity
    if base is BaseType.BYTES:
        return lambda v: b64encode(bytes(v))
    raise KsqlException(f"The 'DELIMITED' format does not support type '{base.value}'")


def _identity(v: Any) -> Any:
    return v


def _field_writer(t: SqlType, delim: str, first: bool) -> Callable[[Any], str]:
    """Non-null value of ``t`` to its CSV field, quoting decided by what the type can
    produce."""
    text = _text_writer(t)
    base = t.base
    if base is BaseType.BOOLEAN and delim not in "truefals":
        return text  # true/false: never quoted
    if base in (BaseType.INTEGER, BaseType.BIGINT, BaseType.DATE, BaseType.TIME,
                BaseType.TIMESTAMP, BaseType.DOUBLE, BaseType.DECIMAL) \
            and delim not in "-.E0123456789NaInfity":
        if not first:
            return text  # digits, sign, point, exponent: nothing to quote mid-record
        return lambda v: quote_field(text(v), delim, True)
    return lambda v: quote_field(text(v), delim, first)


# -- field parsing ---------------------------------------------------------------------------------

def _parse_boolean(s: str) -> bool:
    return s.lower() == "true"


def _field_parser(t: SqlType) -> Callable[[str], Any]:
    base = t.base
    if base is BaseType.BOOLEAN:
        return _parse_boolean
    if base is BaseType.INTEGER:
        return parse_java_int
    if base in (BaseType.BIGINT, BaseType.TIMESTAMP, BaseType.TIME, BaseType.DATE):
        return parse_java_long
    if base is BaseType.DOUBLE:
        return parse_java_double
    if base is BaseType.STRING:
        return _identity
    if base is BaseType.BYTES:
        return b64decode
    if isinstance(t, DecimalType):
        fit = decimal_fitter(t)
        return lambda s: fit(parse_java_decimal(s))
    raise KsqlException(f"The 'DELIMITED' format does not support type '{base.value}'")


class DelimitedCodec(Codec):
    """DELIMITED codec for one list of primitive columns."""

    def __init__(self, columns: Sequence[Column], delimiter: str, is_key: bool,
                 topic: str | None = None) -> None:
        self.columns = tuple(columns)
        self.delimiter = delimiter
        self._parsers = tuple(_field_parser(c.type) for c in columns)
        self._writers = tuple(_field_writer(c.type, delimiter, i == 0)
                              for i, c in enumerate(columns))
        self._n = len(columns)
        self._topic = topic
        self._de_prefix = deserialize_prefix(is_key, topic)
        self._ser_prefix = serialize_prefix(is_key, topic)

    def decode(self, data: bytes | None) -> tuple | None:
        if data is None:
            return None
        try:
            # Java decodes invalid UTF-8 as replacement characters rather than failing.
            fields = parse_record(data.decode("utf-8", "replace"), self.delimiter)
            if not fields:
                raise CoercionError("No fields in record")
            if len(fields) != self._n:
                raise CoercionError(
                    "Column count mismatch on deserialization. "
                    + (f"topic: {self._topic}, " if self._topic is not None else "")
                    + f"expected: {self._n}, got: {len(fields)}")
            return tuple([None if not f else p(f) for p, f in zip(self._parsers, fields)])
        except _BAD_DATA as e:
            raise SerdeError(f"{self._de_prefix}Error deserializing delimited: {e}") from e

    def encode(self, values: tuple | None) -> bytes | None:
        if values is None:
            return None
        try:
            return self.delimiter.join(
                ["" if v is None else w(v) for w, v in zip(self._writers, values)]
            ).encode("utf-8")
        except _BAD_DATA as e:
            raise SerdeError(self._ser_prefix + str(e)) from e

    def to_json_form(self, data: bytes | None) -> Any:
        return None if data is None else data.decode("utf-8", "replace")

    def from_json_form(self, obj: Any) -> bytes | None:
        if obj is None:
            return None
        if isinstance(obj, str):
            return obj.encode("utf-8")
        if isinstance(obj, bool):
            return b"true" if obj else b"false"
        if isinstance(obj, float):
            return java_double_str(obj).encode("utf-8")
        if isinstance(obj, Decimal):
            return decimal_plain(obj).encode("utf-8")
        return str(obj).encode("utf-8")


class DelimitedFormat(Format):
    """ksqlDB's DELIMITED format."""

    name = "DELIMITED"
    supports_wrapping = False

    def supports_type(self, type_: SqlType) -> bool:
        return type_.is_primitive and type_.base not in (BaseType.NULL, BaseType.LAMBDA)

    def delimiter(self, options: FormatOptions, is_key: bool) -> str:
        """The delimiter character, accepting 'TAB' and 'SPACE' as ksqlDB does."""
        return parse_delimiter(options.delimiter, "KEY_DELIMITER" if is_key else "VALUE_DELIMITER")

    def validate(self, columns: Sequence[Column], options: FormatOptions, is_key: bool) -> None:
        if is_key:
            check_no_map_keys(columns)
        else:
            check_wrapping(self.name, columns, options.wrap_single_value, False, True)
        self.delimiter(options, is_key)
        for c in columns:
            if not self.supports_type(c.type):
                raise schema_not_supported(
                    self.name, columns, (), is_key,
                    f"The 'DELIMITED' format does not support type '{c.type.base.value}', "
                    f"column: `{c.name}`")

    def codec(self, columns: Sequence[Column], options: FormatOptions, is_key: bool) -> Codec:
        return DelimitedCodec(columns, self.delimiter(options, is_key), is_key,
                              topic_of(options.extra))

"""Helpers shared by the built-in formats: Java-compatible number parsing and printing,
ksqlDB's decimal fitting, and the validation messages every format words the same way.

ksqlDB runs on the JVM, so what it accepts and writes for numbers is Java's
(``Integer.parseInt``, ``Double.toString``, ``BigDecimal``); the formats mirror that here so
that payloads decode and encode exactly as ksqlDB's do.
"""
from __future__ import annotations

import base64
import binascii
import math
import re
from decimal import Context, Decimal, InvalidOperation
from typing import Any, Callable, Sequence

from streamsql.errors import KsqlException
from streamsql.schema import Column
from streamsql.types import DECIMAL_CONTEXT, DecimalType, MapType, SqlType, any_type

INT_MIN, INT_MAX = -(2**31), 2**31 - 1
LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1

# java.math.BigDecimal(String): sign, digits with an optional point, optional exponent.
_JAVA_DECIMAL_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# java.lang.Double.parseDouble (decimal form; surrounding whitespace is trimmed first).
_JAVA_DOUBLE_RE = re.compile(
    r"[+-]?(?:NaN|Infinity|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?[fFdD]?)")
_JAVA_HEX_DOUBLE_RE = re.compile(r"[+-]?0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)"
                                 r"[pP][+-]?[0-9]+[fFdD]?")


# What Java's String.trim removes: every char up to and including space.
JAVA_WHITESPACE = "".join(chr(i) for i in range(33))


class CoercionError(ValueError):
    """A single value could not be converted; the message is ksqlDB's reason."""


# -- Java number parsing ------------------------------------------------------------------------

def parse_java_int(text: str) -> int:
    """``Integer.parseInt``: ASCII digits with an optional sign, 32-bit range."""
    if text.isascii() and (text.isdigit() or (text[1:].isdigit() and text[0] in "+-")):
        v = int(text)
        if INT_MIN <= v <= INT_MAX:
            return v
    raise CoercionError(f'For input string: "{text}"')


def parse_java_long(text: str) -> int:
    """``Long.parseLong``: ASCII digits with an optional sign, 64-bit range."""
    if text.isascii() and (text.isdigit() or (text[1:].isdigit() and text[0] in "+-")):
        v = int(text)
        if LONG_MIN <= v <= LONG_MAX:
            return v
    raise CoercionError(f'For input string: "{text}"')


def parse_java_double(text: str) -> float:
    """``Double.parseDouble``: trims ASCII control/space, accepts NaN, Infinity, an f/d
    suffix and hex floats."""
    if text.isascii() and "_" not in text:
        # Python's float() grammar is Java's for finite decimal numbers (minus underscores
        # and its own spellings of NaN/infinity, which the checked path below handles).
        try:
            v = float(text)
            if v - v == 0:
                return v
        except ValueError:
            pass
    s = text.strip(JAVA_WHITESPACE)
    if _JAVA_DOUBLE_RE.fullmatch(s):
        if s[-1] in "fFdD" and not s.endswith("Infinity"):
            s = s[:-1]
        return float(s)
    if _JAVA_HEX_DOUBLE_RE.fullmatch(s):
        if s[-1] in "fFdD":
            s = s[:-1]
        return float.fromhex(s)
    raise CoercionError(f'For input string: "{text}"' if s else "empty String")


def parse_java_decimal(text: str) -> Decimal:
    """``new BigDecimal(String)``."""
    if _JAVA_DECIMAL_RE.fullmatch(text):
        return Decimal(text)
    raise CoercionError(f"Invalid decimal: '{text}'")


def wrap_int32(v: int) -> int:
    """Java's narrowing of a long to an int (low 32 bits, two's complement)."""
    v &= 0xFFFFFFFF
    return v - 0x100000000 if v > INT_MAX else v


def wrap_int64(v: int) -> int:
    """Java's narrowing of a BigInteger to a long (low 64 bits, two's complement)."""
    v &= 0xFFFFFFFFFFFFFFFF
    return v - 0x10000000000000000 if v > LONG_MAX else v


# -- Java number printing -----------------------------------------------------------------------

def java_double_str(f: float) -> str:
    """``Double.toString``: plain between 1e-3 and 1e7, else computerized scientific
    notation (``1.0E10``, ``4.9E-324``), shortest round-tripping digits."""
    r = repr(f)
    if 1e-3 <= abs(f) < 1e7:
        return r  # Python's repr is Java's here: plain, shortest digits, at least "x.0"
    if f != f:
        return "NaN"
    if f in (math.inf, -math.inf):
        return "Infinity" if f > 0 else "-Infinity"
    if f == 0.0:
        return "-0.0" if math.copysign(1.0, f) < 0 else "0.0"
    sign, digits, exp = Decimal(r).as_tuple()
    if len(digits) == 1:
        # Java never settles for one digit: it takes the two-digit decimal closest to the
        # exact value that still reads back as f (Double.MIN_VALUE is 4.9E-324, not 5E-324).
        two = DECIMAL_CONTEXT.create_decimal(Decimal(f)).normalize(Context(prec=2))
        if float(two) == f:
            sign, digits, exp = two.as_tuple()
    ds = "".join(map(str, digits)).rstrip("0") or "0"
    # Exponent of the first significant digit.
    sci = len(digits) + int(exp) - 1
    prefix = "-" if sign else ""
    return f"{prefix}{ds[0]}.{ds[1:] or '0'}E{sci}"


def decimal_plain(d: Decimal) -> str:
    """``BigDecimal.toPlainString`` (no exponent; Java has no negative zero)."""
    if not d:
        d = abs(d)
    return format(d, "f")


# -- decimals -----------------------------------------------------------------------------------

def ensure_fit(value: Decimal, precision: int, scale: int) -> Decimal:
    """ksqlDB's ``DecimalUtil.ensureFit``: reject values too large for the type, then set the
    scale exactly (no rounding)."""
    digits = precision - scale
    if abs(value) >= Decimal(1).scaleb(digits):
        raise CoercionError(
            f"Numeric field overflow: A field with precision {precision} and scale {scale} "
            f"must round to an absolute value less than 10^{digits}. Got {decimal_plain(value)}")
    try:
        fitted = value.quantize(Decimal(1).scaleb(-scale), context=DECIMAL_CONTEXT)
    except InvalidOperation:
        fitted = None
    if fitted is None or fitted != value:
        t = value.as_tuple()
        req_precision = len(t.digits)
        req_scale = -int(t.exponent)
        raise CoercionError(
            f"Cannot fit decimal '{decimal_plain(value)}' into DECIMAL({precision}, {scale}) "
            f"without rounding. (Requires {req_precision},{req_scale})")
    return fitted


def decimal_fitter(t: DecimalType) -> Callable[[Decimal], Decimal]:
    """A function fitting a Decimal to ``t`` (precision and scale bound once)."""
    precision, scale = t.precision, t.scale
    limit = Decimal(1).scaleb(precision - scale)
    quantum = Decimal(1).scaleb(-scale)

    def fit(value: Decimal) -> Decimal:
        # Fast path: in range and already at the right scale (the common case).
        if -limit < value < limit:
            if value.as_tuple().exponent == -scale:
                return value
            try:
                fitted = value.quantize(quantum, context=DECIMAL_CONTEXT)
                if fitted == value:
                    return fitted
            except InvalidOperation:
                pass
        return ensure_fit(value, precision, scale)

    return fit


# -- bytes --------------------------------------------------------------------------------------

def b64encode(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def b64decode(s: str) -> bytes:
    """``Base64.getDecoder().decode``: standard alphabet, padding optional."""
    try:
        pad = -len(s) % 4
        if pad == 3:
            raise binascii.Error("bad length")
        return base64.b64decode(s + "=" * pad, validate=True)
    except (binascii.Error, ValueError) as e:
        raise CoercionError(f"Value is not a valid Base64 encoded string: {s}") from e


# -- validation messages ------------------------------------------------------------------------

def column_list(columns: Sequence[Column], is_key: bool) -> str:
    """Columns as ksqlDB prints a list of them: ``[`A` INTEGER, `B` STRING KEY]``."""
    suffix = " KEY" if is_key else ""
    return "[" + ", ".join(f"`{c.name}` {c.type}{suffix}" for c in columns) + "]"


def schema_not_supported(format_name: str, columns: Sequence[Column], features: Sequence[str],
                         is_key: bool, reason: str) -> KsqlException:
    """ksqlDB's wrapper around a format's refusal of a schema (GenericSerdeFactory)."""
    target = "Key" if is_key else "Value"
    schema = f"Persistence{{columns={column_list(columns, is_key)}, features=[{', '.join(features)}]}}"
    return KsqlException(f"{target} format does not support schema.\nformat: {format_name}\n"
                         f"schema: {schema}\nreason: {reason}")


def contains_map(t: SqlType) -> bool:
    """Whether ``t`` is or holds a MAP (ksqlDB refuses those as key columns)."""
    return any_type(t, lambda x: isinstance(x, MapType))


def check_no_map_keys(columns: Sequence[Column]) -> None:
    """ksqlDB refuses key columns of (or containing) MAP type, whatever the format."""
    for c in columns:
        if contains_map(c.type):
            raise KsqlException(
                "Map keys, including types that contain maps, are not supported as they may "
                "lead to unexpected behavior due to inconsistent serialization. Key column name: "
                f"`{c.name}`. Column type: {c.type}. See "
                "https://github.com/confluentinc/ksql/issues/6621 for more.")


def check_wrapping(format_name: str, columns: Sequence[Column], wrap: bool | None,
                   supports_wrap: bool, supports_unwrap: bool) -> None:
    """WRAP_SINGLE_VALUE checks for a value schema (ksqlDB's SerdeFeaturesFactory)."""
    if wrap is None:
        return
    if len(columns) != 1:
        raise KsqlException("'WRAP_SINGLE_VALUE' is only valid for single-field value schemas")
    if (wrap and not supports_wrap) or (not wrap and not supports_unwrap):
        raise KsqlException(f"Format '{format_name}' does not support 'WRAP_SINGLE_VALUE' set to "
                            f"'{'true' if wrap else 'false'}'.")


def topic_of(extra: tuple[tuple[str, Any], ...]) -> str | None:
    """The topic a codec serves, when the caller passed it (``KAFKA_TOPIC`` in
    ``FormatOptions.extra``); used only in error messages."""
    for k, v in extra:
        if k == "KAFKA_TOPIC":
            return str(v)
    return None


def deserialize_prefix(is_key: bool, topic: str | None) -> str:
    target = "key" if is_key else "value"
    return (f"Failed to deserialize {target} from topic: {topic}. " if topic is not None
            else f"Failed to deserialize {target}. ")


def serialize_prefix(is_key: bool, topic: str | None) -> str:
    target = "key" if is_key else "value"
    return (f"Failed to serialize {target} to topic: {topic}. " if topic is not None
            else f"Failed to serialize {target}. ")


"""CAST semantics: which casts ksqlDB allows and the conversion function for each.

``cast_function(src, dst)`` is called once at compile time and returns a plain function
applied to non-null values per record (NULL casts to NULL without calling it). Conversions
that fail on a value raise; the engine turns that into a NULL column and a processing-log
entry, as ksqlDB does.

Also here: the text forms ksqlDB uses for DOUBLE (Java's ``Double.toString``), DATE, TIME and
TIMESTAMP, shared by CAST and the formats.
"""
from __future__ import annotations

import datetime as _dt
import decimal
import math
import re
from decimal import Decimal
from typing import Any, Callable

from streamsql import types as t
from streamsql.types import ArrayType, BaseType, DecimalType, MapType, SqlType, StructType

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
_EPOCH_DATE = _dt.date(1970, 1, 1)
MS_PER_DAY = 86_400_000


# ------------------------------------------------------------------------------- text forms
def java_double_str(d: float) -> str:
    """Java's Double.toString: shortest round-trip digits, scientific outside [1e-3, 1e7)."""
    if math.isnan(d):
        return "NaN"
    if math.isinf(d):
        return "Infinity" if d > 0 else "-Infinity"
    if d == 0:
        return "-0.0" if math.copysign(1.0, d) < 0 else "0.0"
    a = abs(d)
    if 1e-3 <= a < 1e7:
        s = repr(d)
        if "e" in s or "E" in s:
            s = format(Decimal(s), "f")
        if "." not in s:
            s += ".0"
        return s
    digits, exp = _shortest_digits(a)
    mantissa = digits[0] + "." + (digits[1:] or "0")
    return ("-" if d < 0 else "") + f"{mantissa}E{exp}"


def _shortest_digits(a: float) -> tuple[str, int]:
    s = repr(a)
    dec = Decimal(s)
    sign, digits, exponent = dec.as_tuple()
    ds = "".join(map(str, digits)).rstrip("0") or "0"
    exp10 = len(digits) + int(exponent) - 1
    return ds, exp10


def date_str(days: int) -> str:
    return (_EPOCH_DATE + _dt.timedelta(days=days)).isoformat()


def time_str(ms: int) -> str:
    h, rem = divmod(ms, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s, milli = divmod(rem, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}" + (f".{milli:03d}" if milli else "")


def timestamp_str(ms: int) -> str:
    """ksqlDB's TIMESTAMP text: ISO-8601 local form in UTC with milliseconds."""
    dt = _EPOCH + _dt.timedelta(milliseconds=ms)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}"


_END_OF_DAY = re.compile(r"T24(?=(?::00(?::00(?:\.0+)?)?)?(?:[+-]|$))")
_PARTIAL_DATE = re.compile(r"(\d{4})(?:-(\d{2}))?")


def _complete_date(text: str) -> str:
    """ksqlDB parses dates partially: ``2017`` is 2017-01-01 and ``2017-11`` 2017-11-01."""
    m = _PARTIAL_DATE.fullmatch(text)
    if m is None:
        return text
    return f"{m.group(1)}-{m.group(2) or '01'}-01"


def parse_date(s: str) -> int:
    return (_dt.date.fromisoformat(_complete_date(s.strip())[:10]) - _EPOCH_DATE).days


def parse_time(s: str) -> int:
    tm = _dt.time.fromisoformat(s.strip())
    return ((tm.hour * 60 + tm.minute) * 60 + tm.second) * 1000 + tm.microsecond // 1000


def parse_timestamp(s: str) -> int:
    """ISO-8601 timestamp text (date, date+time, optional offset) to epoch ms (UTC default)."""
    text = s.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    if len(text) <= 10:
        dt = _dt.datetime.fromisoformat(_complete_date(text))
    else:
        text = text.replace(" ", "T", 1)
        # Hour 24 (with nothing after it but zeros) is the next day's midnight, as Java's
        # resolver reads it ('2020-02-24T24' is a day's end in ksqlDB's window bounds).
        end_of_day = _END_OF_DAY.search(text) if "T24" in text else None
        if end_of_day is not None:
            text = text[:end_of_day.start()] + "T00" + text[end_of_day.end():]
        dt = _dt.datetime.fromisoformat(text)
        if end_of_day is not None:
            dt += _dt.timedelta(days=1)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=_dt.timezone.utc)
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def parse_temporal(value: str | None, kind: str) -> int | None:
    """A string compared with a DATE/TIME/TIMESTAMP column, converted to that type."""
    if value is None:
        return None
    if kind == "DATE":
        return parse_date(value)
    if kind == "TIME":
        return parse_time(value)
    return parse_timestamp(value)


def date_to_timestamp(days: int | None) -> int | None:
    return None if days is None else days * MS_PER_DAY


def value_to_string(value: Any, type_: SqlType) -> str:
    """ksqlDB's string form of a value (CAST(x AS STRING))."""
    b = type_.base
    if b is BaseType.BOOLEAN:
        return "true" if value else "false"
    if b is BaseType.DOUBLE:
        return java_double_str(float(value))
    if b is BaseType.DECIMAL:
        return format(value, "f")
    if b is BaseType.DATE:
        return date_str(value)
    if b is BaseType.TIME:
        return time_str(value)
    if b is BaseType.TIMESTAMP:
        return timestamp_str(value)
    if b is BaseType.BYTES:
        import base64
        return base64.b64encode(value).decode()
    if isinstance(type_, ArrayType):
        return "[" + ", ".join("null" if v is None else value_to_string(v, type_.item) for v in value) + "]"
    if isinstance(type_, MapType):
        return "{" + ", ".join(
            f"{'null' if k is None else value_to_string(k, type_.key)}="
            f"{'null' if v is None else value_to_string(v, type_.value)}" for k, v in value.items()) + "}"
    if isinstance(type_, StructType):
        return "Struct{" + ",".join(
            f"{f.name}={value_to_string(value[f.name], f.type)}" for f in type_.fields
            if value.get(f.name) is not None) + "}"
    return str(value)


# ------------------------------------------------------------------------------------ casts
def _to_int_from_string(s: str) -> int:
    v = int(s.strip())
    if not t.INT_MIN <= v <= t.INT_MAX:
        raise ValueError(f"out of INTEGER range: {s}")
    return v


def _to_bigint_from_string(s: str) -> int:
    v = int(s.strip())
    if not t.BIGINT_MIN <= v <= t.BIGINT_MAX:
        raise ValueError(f"out of BIGINT range: {s}")
    return v


def _java_int_trunc(v: float | Decimal, bits: int) -> int:
    """Java's (int)/(long) narrowing of a floating value: truncation, NaN to 0, saturation."""
    if isinstance(v, float):
        if math.isnan(v):
            return 0
        if math.isinf(v):
            return (2 ** (bits - 1) - 1) if v > 0 else -(2 ** (bits - 1))
    iv = int(v)
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    if bits == 32 and isinstance(v, Decimal):
        # BigDecimal.intValue(): wraps (low 32 bits of the long value).
        return ((iv + 2**31) % 2**32) - 2**31
    return max(lo, min(hi, iv))


def _to_boolean_from_string(s: str) -> bool:
    v = s.strip().lower()
    if v in ("true", "t", "yes", "y", "1"):
        return True
    if v in ("false", "f", "no", "n", "0"):
        return False
    raise ValueError(f"invalid boolean: {s}")


def decimal_caster(dst: DecimalType) -> Callable[[Any], Decimal]:
    """Round to the scale (HALF_UP) and reject values whose digits exceed the precision."""
    quantum = Decimal(1).scaleb(-dst.scale)
    limit = Decimal(10) ** (dst.precision - dst.scale)
    ctx = decimal.Context(prec=100, rounding=decimal.ROUND_HALF_UP)

    def cast(v: Any) -> Decimal:
        if isinstance(v, float):
            if math.isnan(v) or math.isinf(v):
                raise ValueError(f"Cannot cast {v} to DECIMAL")
            d = Decimal(repr(v))
        elif isinstance(v, str):
            d = Decimal(v.strip())
        else:
            d = Decimal(v)
        q = d.quantize(quantum, context=ctx)
        if abs(q) >= limit:
            raise ValueError(f"Numeric field overflow: A field with precision {dst.precision} and "
                             f"scale {dst.scale} must round to an absolute value less than 10^"
                             f"{dst.precision - dst.scale}. Got {d}")
        return q

    return cast


def cast_function(src: SqlType, dst: SqlType) -> Callable[[Any], Any] | None:
    """See the module docstring."""
    sb, db = src.base, dst.base
    if src == dst:
        return lambda v: v
    if db is BaseType.STRING:
        if sb is BaseType.STRING:
            return lambda v: v
        return lambda v: value_to_string(v, src)
    if sb is BaseType.STRING:
        return {
            BaseType.INTEGER: _to_int_from_string,
            BaseType.BIGINT: _to_bigint_from_string,
            BaseType.DOUBLE: lambda v: float(v.strip()),
            BaseType.BOOLEAN: _to_boolean_from_string,
            BaseType.DATE: parse_date,
            BaseType.TIME: parse_time,
            BaseType.TIMESTAMP: parse_timestamp,
            BaseType.DECIMAL: decimal_caster(dst) if isinstance(dst, DecimalType) else None,
            BaseType.BYTES: None,
        }.get(db)
    if src.is_numeric and dst.is_numeric:
        if db is BaseType.INTEGER:
            if sb is BaseType.BIGINT:
                return lambda v: ((v + 2**31) % 2**32) - 2**31
            return lambda v: _java_int_trunc(v, 32)
        if db is BaseType.BIGINT:
            if sb is BaseType.INTEGER:
                return lambda v: v
            return lambda v: _java_int_trunc(v, 64)
        if db is BaseType.DOUBLE:
            return float
        if isinstance(dst, DecimalType):
            return decimal_caster(dst)
    if sb is BaseType.BOOLEAN and dst.is_numeric:
        return None
    if sb is BaseType.TIMESTAMP and db is BaseType.DATE:
        return lambda v: v // MS_PER_DAY
    if sb is BaseType.TIMESTAMP and db is BaseType.TIME:
        return lambda v: v % MS_PER_DAY
    if sb is BaseType.DATE and db is BaseType.TIMESTAMP:
        return lambda v: v * MS_PER_DAY
    if isinstance(src, ArrayType) and isinstance(dst, ArrayType):
        inner = cast_function(src.item, dst.item) if not src.item.is_null else (lambda v: v)
        if inner is None:
            return None
        return lambda v: [None if x is None else inner(x) for x in v]
    if isinstance(src, MapType) and isinstance(dst, MapType):
        kf = cast_function(src.key, dst.key) if not src.key.is_null else (lambda v: v)
        vf = cast_function(src.value, dst.value) if not src.value.is_null else (lambda v: v)
        if kf is None or vf is None:
            return None
        return lambda v: {(None if k is None else kf(k)): (None if x is None else vf(x)) for k, x in v.items()}
    if isinstance(src, StructType) and isinstance(dst, StructType):
        plan = []
        for f in dst.fields:
            sf = src.field(f.name)
            if sf is None:
                plan.append((f.name, None, None))
                continue
            fn = cast_function(sf.type, f.type) if not sf.type.is_null else (lambda v: v)
            if fn is None:
                return None
            plan.append((f.name, sf.name, fn))
        return lambda v: {name: (None if sname is None or v.get(sname) is None else fn(v[sname]))
                          for name, sname, fn in plan}
    if src.is_null:
        return lambda v: None
    return None

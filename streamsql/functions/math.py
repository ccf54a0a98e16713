"""Mathematical functions: ABS, CEIL, FLOOR, ROUND, TRUNC, SIGN, SQRT, CBRT, EXP, LN, LOG, POWER,
RANDOM, DEGREES, RADIANS, PI, the trigonometric and hyperbolic functions, GREATEST, LEAST,
GEO_DISTANCE and GENERATE_SERIES.

DOUBLE results follow java.lang.Math: domain errors give NaN and overflows give +/-Infinity
rather than exceptions. DECIMAL rounding is done with an explicit wide context so that 38-digit
values are never rounded by Python's default 28-digit context.
"""
from __future__ import annotations

import decimal
import math
import random
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any, Callable

from streamsql import types as t
from streamsql.errors import KsqlStatementException
from streamsql.functions.registry import MAX_RESULT_SIZE, udf
from streamsql.types import BaseType, DecimalType, SqlType

_INF = float("inf")
_NAN = float("nan")

# Wide enough for any DECIMAL(38, s) and for doubles written out in full; read-only.
_CTX = decimal.Context(prec=1200, Emax=999_999, Emin=-999_999)
_ONE = Decimal(1)


# ----------------------------------------------------------------------------- type helpers
def _as_decimal_type(type_: SqlType) -> DecimalType:
    """The DECIMAL an argument bound to a DECIMAL parameter is treated as."""
    if isinstance(type_, DecimalType):
        return type_
    if type_.is_integral:
        return t.decimal_for_integral(type_)
    # A NULL literal: any DECIMAL will do, the result is NULL. (Return type providers run for
    # every candidate overload during resolution, so they must not raise.)
    return t.decimal_for_integral(t.BIGINT)


def _same_decimal(arg_types: list[SqlType]) -> SqlType:
    """Return type provider: the first argument's DECIMAL type."""
    return _as_decimal_type(arg_types[0])


def _whole_decimal(arg_types: list[SqlType]) -> SqlType:
    """Return type provider: the first argument's integer digits, scale 0."""
    dt = _as_decimal_type(arg_types[0])
    return DecimalType(max(dt.precision - dt.scale, 1), 0)


def _exponent(scale: int) -> Decimal:
    return Decimal((0, (1,), -scale))


def _decimal_converter(type_: SqlType) -> Callable[[Any], Decimal]:
    """Per-record conversion of an argument bound to a DECIMAL parameter."""
    if type_.base is BaseType.DECIMAL:
        return lambda v: v
    return lambda v: Decimal(v)


# ------------------------------------------------------------------------------------- ABS
@udf("ABS", "INTEGER", [("value", "INTEGER")])
def abs_int(value: int | None) -> int | None:
    """The absolute value of a number."""
    if value is None:
        return None
    # Java's Math.abs(Integer.MIN_VALUE) overflows back to MIN_VALUE.
    return -value if value < 0 and value != t.INT_MIN else value


@udf("ABS", "BIGINT", [("value", "BIGINT")])
def abs_bigint(value: int | None) -> int | None:
    """The absolute value of a number."""
    if value is None:
        return None
    return -value if value < 0 and value != t.BIGINT_MIN else value


@udf("ABS", "DOUBLE", [("value", "DOUBLE")])
def abs_double(value: float | None) -> float | None:
    """The absolute value of a number."""
    return None if value is None else math.fabs(value)


@udf("ABS", _same_decimal, [("value", "DECIMAL")])
def abs_decimal(value: Decimal | None) -> Decimal | None:
    """The absolute value of a number."""
    if value is None:
        return None
    return value.copy_abs() if isinstance(value, Decimal) else Decimal(abs(value))


# ------------------------------------------------------------------------------ CEIL, FLOOR
def _identity_int(value: int | None) -> int | None:
    return value


def _java_ceil(value: float) -> float:
    if math.isinf(value) or math.isnan(value):
        return value
    result = float(math.ceil(value))
    return -0.0 if result == 0.0 and value < 0 else result


def _java_floor(value: float) -> float:
    if math.isinf(value) or math.isnan(value):
        return value
    return float(math.floor(value))


def _decimal_rounder(mode: str) -> Callable[[list[SqlType], SqlType], Callable[[Any], Any]]:
    """A factory rounding a DECIMAL argument to an integer value with ``mode``, returning it at
    the return type's scale."""

    def factory(arg_types: list[SqlType], return_type: SqlType) -> Callable[[Any], Any]:
        conv = _decimal_converter(arg_types[0])
        out = _exponent(_as_decimal_type(return_type).scale)

        def impl(value: Any) -> Decimal | None:
            if value is None:
                return None
            d = conv(value).quantize(_ONE, rounding=mode, context=_CTX)
            return d.quantize(out, context=_CTX)

        return impl

    return factory


@udf("CEIL", "INTEGER", [("value", "INTEGER")])
@udf("CEIL", "BIGINT", [("value", "BIGINT")])
def ceil_integral(value: int | None) -> int | None:
    """The smallest integer value that is greater than or equal to the argument."""
    return value


@udf("CEIL", "DOUBLE", [("value", "DOUBLE")])
def ceil_double(value: float | None) -> float | None:
    """The smallest integer value that is greater than or equal to the argument."""
    return None if value is None else _java_ceil(value)


ceil_decimal = udf(
    "CEIL", _same_decimal, [("value", "DECIMAL")], factory=True,
    description="The smallest integer value that is greater than or equal to the argument.",
)(_decimal_rounder(decimal.ROUND_CEILING))


@udf("FLOOR", "INTEGER", [("value", "INTEGER")])
@udf("FLOOR", "BIGINT", [("value", "BIGINT")])
def floor_integral(value: int | None) -> int | None:
    """The largest integer value that is less than or equal to the argument."""
    return value


@udf("FLOOR", "DOUBLE", [("value", "DOUBLE")])
def floor_double(value: float | None) -> float | None:
    """The largest integer value that is less than or equal to the argument."""
    return None if value is None else _java_floor(value)


floor_decimal = udf(
    "FLOOR", _same_decimal, [("value", "DECIMAL")], factory=True,
    description="The largest integer value that is less than or equal to the argument.",
)(_decimal_rounder(decimal.ROUND_FLOOR))


# ------------------------------------------------------------------------------ ROUND, TRUNC
def _java_math_round(value: float) -> int:
    """java.lang.Math.round(double): nearest long, ties towards positive infinity."""
    if math.isnan(value):
        return 0
    if math.isinf(value):
        return t.BIGINT_MAX if value > 0 else t.BIGINT_MIN
    floor = math.floor(value)
    result = floor + 1 if value - floor >= 0.5 else floor
    return max(t.BIGINT_MIN, min(t.BIGINT_MAX, result))


def _java_long_cast(value: float) -> int:
    """Java's (long) cast of a double: truncation, NaN to 0, saturating."""
    if math.isnan(value):
        return 0
    if math.isinf(value):
        return t.BIGINT_MAX if value > 0 else t.BIGINT_MIN
    return max(t.BIGINT_MIN, min(t.BIGINT_MAX, math.trunc(value)))


def _round_mode(d: Decimal) -> str:
    # ksqlDB rounds ties towards positive infinity: HALF_UP above zero, HALF_DOWN below.
    return decimal.ROUND_HALF_DOWN if d.is_signed() else decimal.ROUND_HALF_UP


def _round_decimal_places(d: Decimal, places: int, mode: str | None) -> Decimal:
    return d.quantize(_exponent(places), rounding=mode or _round_mode(d), context=_CTX)


def _double_places(value: float, places: int, mode: str | None) -> float:
    """Round a double as ksqlDB does: via BigDecimal.valueOf(value) (its shortest decimal form)."""
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"Cannot round {value}")
    return float(_round_decimal_places(Decimal(repr(value)), places, mode))


def _decimal_places_factory(mode: str | None) -> Callable[[list[SqlType], SqlType], Callable[..., Any]]:
    """A factory rounding DECIMAL to a number of places, keeping the argument's scale."""

    def factory(arg_types: list[SqlType], return_type: SqlType) -> Callable[..., Any]:
        conv = _decimal_converter(arg_types[0])
        out = _exponent(_as_decimal_type(return_type).scale)

        def impl(value: Any, places: int | None) -> Decimal | None:
            if value is None or places is None:
                return None
            return _round_decimal_places(conv(value), places, mode).quantize(out, context=_CTX)

        return impl

    return factory


def _decimal_whole_factory(mode: str | None) -> Callable[[list[SqlType], SqlType], Callable[..., Any]]:
    """A factory rounding DECIMAL to an integral DECIMAL (scale 0)."""

    def factory(arg_types: list[SqlType], return_type: SqlType) -> Callable[..., Any]:
        conv = _decimal_converter(arg_types[0])

        def impl(value: Any) -> Decimal | None:
            if value is None:
                return None
            return _round_decimal_places(conv(value), 0, mode)

        return impl

    return factory


_ROUND_DOC = ("Rounds a value to the given number of decimal places (default 0); negative places "
              "round to the left of the decimal point. Ties round towards positive infinity.")


@udf("ROUND", "BIGINT", [("value", "INTEGER")], description=_ROUND_DOC)
@udf("ROUND", "BIGINT", [("value", "BIGINT")], description=_ROUND_DOC)
def round_integral(value: int | None) -> int | None:
    return value


@udf("ROUND", "BIGINT", [("value", "DOUBLE")], description=_ROUND_DOC)
def round_double(value: float | None) -> int | None:
    return None if value is None else _java_math_round(value)


@udf("ROUND", "DOUBLE", [("value", "DOUBLE"), ("decimalPlaces", "INTEGER")], description=_ROUND_DOC)
def round_double_places(value: float | None, places: int | None) -> float | None:
    if value is None or places is None:
        return None
    return _double_places(value, places, None)


round_decimal = udf("ROUND", _whole_decimal, [("value", "DECIMAL")], factory=True,
                    description=_ROUND_DOC)(_decimal_whole_factory(None))
round_decimal_places = udf("ROUND", _same_decimal, [("value", "DECIMAL"), ("decimalPlaces", "INTEGER")],
                           factory=True, description=_ROUND_DOC)(_decimal_places_factory(None))

_TRUNC_DOC = ("Truncates a value to the given number of decimal places (default 0), rounding "
              "towards zero; negative places truncate to the left of the decimal point.")


@udf("TRUNC", "BIGINT", [("value", "INTEGER")], description=_TRUNC_DOC)
@udf("TRUNC", "BIGINT", [("value", "BIGINT")], description=_TRUNC_DOC)
def trunc_integral(value: int | None) -> int | None:
    return value


@udf("TRUNC", "BIGINT", [("value", "DOUBLE")], description=_TRUNC_DOC)
def trunc_double(value: float | None) -> int | None:
    return None if value is None else _java_long_cast(value)


@udf("TRUNC", "DOUBLE", [("value", "DOUBLE"), ("decimalPlaces", "INTEGER")], description=_TRUNC_DOC)
def trunc_double_places(value: float | None, places: int | None) -> float | None:
    if value is None or places is None:
        return None
    return _double_places(value, places, decimal.ROUND_DOWN)


trunc_decimal = udf("TRUNC", _whole_decimal, [("value", "DECIMAL")], factory=True,
                    description=_TRUNC_DOC)(_decimal_whole_factory(decimal.ROUND_DOWN))
trunc_decimal_places = udf("TRUNC", _same_decimal, [("value", "DECIMAL"), ("decimalPlaces", "INTEGER")],
                           factory=True, description=_TRUNC_DOC)(
    _decimal_places_factory(decimal.ROUND_DOWN))


# -------------------------------------------------------------------------------------- SIGN
@udf("SIGN", "INTEGER", [("value", "INTEGER")])
@udf("SIGN", "INTEGER", [("value", "BIGINT")])
@udf("SIGN", "INTEGER", [("value", "DOUBLE")])
@udf("SIGN", "INTEGER", [("value", "DECIMAL")])
def sign(value: Any) -> int | None:
    """The sign of a value: -1, 0 or 1 (0 for NaN)."""
    if value is None:
        return None
    return 1 if value > 0 else -1 if value < 0 else 0


# ------------------------------------------------------------------- exponentials and roots
@udf("SQRT", "DOUBLE", [("value", "DOUBLE")])
def sqrt(value: float | None) -> float | None:
    """The square root of a value (NaN for negative values)."""
    if value is None:
        return None
    return _NAN if value < 0 else math.sqrt(value)


@udf("CBRT", "DOUBLE", [("value", "DOUBLE")])
def cbrt(value: float | None) -> float | None:
    """The cube root of a value."""
    return None if value is None else math.cbrt(value)


@udf("EXP", "DOUBLE", [("exponent", "DOUBLE")])
def exp(value: float | None) -> float | None:
    """e raised to the power of the argument."""
    if value is None:
        return None
    try:
        return math.exp(value)
    except OverflowError:
        return _INF


def _java_ln(value: float) -> float:
    if value > 0:
        return math.log(value)
    if value == 0:
        return -_INF
    return _NAN  # negative or NaN


@udf("LN", "DOUBLE", [("value", "DOUBLE")])
def ln(value: float | None) -> float | None:
    """The natural logarithm of a value (-Infinity for 0, NaN for negative values)."""
    return None if value is None else _java_ln(value)


def _java_divide(a: float, b: float) -> float:
    try:
        return a / b
    except ZeroDivisionError:
        if a == 0 or math.isnan(a):
            return _NAN
        return math.copysign(_INF, a) * math.copysign(1.0, b)


@udf("LOG", "DOUBLE", [("value", "DOUBLE")])
def log(value: float | None) -> float | None:
    """The natural logarithm of a value (-Infinity for 0, NaN for negative values)."""
    return None if value is None else _java_ln(value)


@udf("LOG", "DOUBLE", [("base", "DOUBLE"), ("value", "DOUBLE")])
def log_base(base: float | None, value: float | None) -> float | None:
    """The logarithm of value in the given base."""
    if base is None or value is None:
        return None
    return _java_divide(_java_ln(value), _java_ln(base))


def _is_odd_integer(x: float) -> bool:
    return math.isfinite(x) and x == math.floor(x) and math.fmod(x, 2.0) != 0


@udf("POWER", "DOUBLE", [("base", "DOUBLE"), ("exponent", "DOUBLE")])
def power(base: float | None, exponent: float | None) -> float | None:
    """base raised to the power of exponent (java.lang.Math.pow)."""
    if base is None or exponent is None:
        return None
    try:
        return math.pow(base, exponent)
    except ZeroDivisionError:
        pass
    except ValueError:
        if base != 0:
            return _NAN  # negative base with a fractional exponent
    except OverflowError:
        pass
    # Zero to a negative power, or an overflow: an infinity whose sign Java derives this way.
    negative = math.copysign(1.0, base) < 0 and _is_odd_integer(exponent)
    return -_INF if negative else _INF


@udf("RANDOM", "DOUBLE")
def random_double() -> float:
    """A random DOUBLE between 0.0 (inclusive) and 1.0 (exclusive)."""
    return random.random()


# ----------------------------------------------------------------------------- trigonometry
def _java_double_fn(fn: Callable[[float], float], doc: str) -> Callable[[float | None], float | None]:
    """Wrap a math function so that domain errors give NaN, as java.lang.Math does."""

    def impl(value: float | None) -> float | None:
        if value is None:
            return None
        try:
            return fn(value)
        except ValueError:
            return _NAN

    impl.__doc__ = doc
    return impl


def _sinh(x: float) -> float:
    try:
        return math.sinh(x)
    except OverflowError:
        return math.copysign(_INF, x)


def _cosh(x: float) -> float:
    try:
        return math.cosh(x)
    except OverflowError:
        return _INF


def _cot(x: float) -> float:
    return _java_divide(1.0, math.tan(x))


def _declare_double_fn(name: str, fn: Callable[[float], float], doc: str,
                       param: str = "value") -> Callable[[float | None], float | None]:
    impl = _java_double_fn(fn, doc)
    return udf(name, "DOUBLE", [(param, "DOUBLE")])(impl)


def _to_degrees(x: float) -> float:
    return x * 180.0 / math.pi


def _to_radians(x: float) -> float:
    # The operation order of Java 8's Math.toRadians; ksqlDB's expected outputs depend on it.
    return x / 180.0 * math.pi


degrees = _declare_double_fn("DEGREES", _to_degrees, "Converts radians to degrees.")
radians = _declare_double_fn("RADIANS", _to_radians, "Converts degrees to radians.")
sin = _declare_double_fn("SIN", math.sin, "The sine of an angle in radians.")
cos = _declare_double_fn("COS", math.cos, "The cosine of an angle in radians.")
tan = _declare_double_fn("TAN", math.tan, "The tangent of an angle in radians.")
cot = _declare_double_fn("COT", _cot, "The cotangent of an angle in radians.")
asin = _declare_double_fn("ASIN", math.asin, "The inverse sine (arcsine) of a value, in radians.")
acos = _declare_double_fn("ACOS", math.acos, "The inverse cosine (arccosine) of a value, in radians.")
atan = _declare_double_fn("ATAN", math.atan, "The inverse tangent (arctangent) of a value, in radians.")
sinh = _declare_double_fn("SINH", _sinh, "The hyperbolic sine of a value.")
cosh = _declare_double_fn("COSH", _cosh, "The hyperbolic cosine of a value.")
tanh = _declare_double_fn("TANH", math.tanh, "The hyperbolic tangent of a value.")


@udf("ATAN2", "DOUBLE", [("y", "DOUBLE"), ("x", "DOUBLE")])
def atan2(y: float | None, x: float | None) -> float | None:
    """The angle theta of the polar coordinates (r, theta) of the point (x, y), in radians."""
    if y is None or x is None:
        return None
    return math.atan2(y, x)


@udf("PI", "DOUBLE")
def pi() -> float:
    """The value of pi."""
    return math.pi


# ------------------------------------------------------------------------- GREATEST, LEAST
_NUMERIC_ORDER = {BaseType.INTEGER: 0, BaseType.BIGINT: 1, BaseType.DECIMAL: 2, BaseType.DOUBLE: 3}
_COMPARABLE = (BaseType.INTEGER, BaseType.BIGINT, BaseType.DOUBLE, BaseType.DECIMAL,
               BaseType.STRING, BaseType.BYTES, BaseType.DATE, BaseType.TIME, BaseType.TIMESTAMP)
_TEMPORAL = (BaseType.DATE, BaseType.TIME, BaseType.TIMESTAMP)
_PRIMITIVE_BY_BASE = {b: t.PRIMITIVES_BY_NAME[b.value] for b in _COMPARABLE
                      if b is not BaseType.DECIMAL}


def _implicitly_casts(src: BaseType, dst: BaseType) -> bool:
    """ksqlDB's SqlBaseType.canImplicitlyCast, as function resolution uses it."""
    if src is dst:
        return True
    if src in _NUMERIC_ORDER and dst in _NUMERIC_ORDER:
        return _NUMERIC_ORDER[src] <= _NUMERIC_ORDER[dst]
    return src is BaseType.STRING and dst in _TEMPORAL


def _describe_types(arg_types: list[SqlType]) -> str:
    return ", ".join("null" if a.is_null else str(a) for a in arg_types)


def _extreme_return_type(name: str) -> Callable[[list[SqlType]], SqlType]:
    """The return type provider of GREATEST / LEAST, resolving the way ksqlDB's overloads
    (one per comparable type) resolve: exact type first, else the single overload every
    argument implicitly casts to; ambiguity and mismatch are errors."""

    def provider(arg_types: list[SqlType]) -> SqlType:
        present = [a for a in arg_types if not a.is_null]
        if not present:
            raise KsqlStatementException(
                f"Function '{name.lower()}' cannot be resolved due to ambiguous method "
                f"parameters ({_describe_types(arg_types)}).")
        bases = {a.base for a in present}
        if len(bases) == 1 and present[0].base in _COMPARABLE:
            candidates = [present[0].base]
        else:
            candidates = [b for b in _COMPARABLE if all(_implicitly_casts(s, b) for s in bases)]
        if len(candidates) > 1:
            raise KsqlStatementException(
                f"Function '{name.lower()}' cannot be resolved due to ambiguous method "
                f"parameters ({_describe_types(arg_types)}).")
        if not candidates:
            alternatives = "\n".join(f"{name}({b.value}, {b.value}[])" for b in _COMPARABLE)
            raise KsqlStatementException(
                f"Function '{name.lower()}' does not accept parameters "
                f"({_describe_types(arg_types)}).\nValid alternatives are:\n{alternatives}")
        target = candidates[0]
        if target is BaseType.DECIMAL:
            result = _as_decimal_type(present[0])
            for a in present[1:]:
                result = t.common_numeric(result, _as_decimal_type(a))  # type: ignore[assignment]
            return result
        return _PRIMITIVE_BY_BASE[target]

    return provider


def _epoch_days(text: str) -> int:
    return (date.fromisoformat(text.strip()) - date(1970, 1, 1)).days


def _time_ms(text: str) -> int:
    v = time.fromisoformat(text.strip())
    return ((v.hour * 60 + v.minute) * 60 + v.second) * 1000 + v.microsecond // 1000


def _epoch_ms(text: str) -> int:
    v = datetime.fromisoformat(text.strip())
    if v.tzinfo is None:
        v = v.replace(tzinfo=timezone.utc)
    return (v - _EPOCH) // _MILLI


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MILLI = timedelta(milliseconds=1)
_STRING_TO_TEMPORAL = {BaseType.DATE: _epoch_days, BaseType.TIME: _time_ms,
                       BaseType.TIMESTAMP: _epoch_ms}
# Java's ByteBuffer.compareTo compares bytes as signed values.
_SIGNED_BYTES = bytes(b ^ 0x80 for b in range(256))


def _signed_key(value: bytes) -> bytes:
    return value.translate(_SIGNED_BYTES)


def _arg_converter(src: SqlType, dst: SqlType) -> Callable[[Any], Any] | None:
    """How to bring an argument of ``src`` to the resolved ``dst`` (None: as it is)."""
    if src.is_null or src.base is dst.base and dst.base is not BaseType.DECIMAL:
        return None
    if dst.base is BaseType.DOUBLE:
        return float
    if dst.base is BaseType.DECIMAL:
        return None if src.base is BaseType.DECIMAL else Decimal
    if src.base is BaseType.STRING and dst.base in _STRING_TO_TEMPORAL:
        return _STRING_TO_TEMPORAL[dst.base]
    return None


def _extreme_factory(pick: Callable[..., Any]) -> Callable[[list[SqlType], SqlType], Callable[..., Any]]:
    def factory(arg_types: list[SqlType], return_type: SqlType) -> Callable[..., Any]:
        converters = [_arg_converter(a, return_type) for a in arg_types]
        key = _signed_key if return_type.base is BaseType.BYTES else None
        out = (_exponent(return_type.scale) if isinstance(return_type, DecimalType) else None)
        if any(c is not None for c in converters):
            pairs = list(zip(converters, range(len(converters))))

            def impl(*args: Any) -> Any:
                values = [args[i] if c is None else c(args[i])
                          for c, i in pairs if args[i] is not None]
                if not values:
                    return None
                result = pick(values, key=key)
                return result if out is None else result.quantize(out, context=_CTX)
        else:
            def impl(*args: Any) -> Any:
                values = [a for a in args if a is not None]
                if not values:
                    return None
                result = pick(values, key=key)
                return result if out is None else result.quantize(out, context=_CTX)

        return impl

    return factory


greatest = udf(
    "GREATEST", _extreme_return_type("GREATEST"), [("val", "ANY"), ("vals", "ANY")],
    variadic=True, factory=True,
    description="The greatest of the arguments, ignoring NULLs (NULL if all are NULL). "
                "Accepts numbers, strings, bytes, dates, times and timestamps.",
)(_extreme_factory(max))
least = udf(
    "LEAST", _extreme_return_type("LEAST"), [("val", "ANY"), ("vals", "ANY")],
    variadic=True, factory=True,
    description="The least of the arguments, ignoring NULLs (NULL if all are NULL). "
                "Accepts numbers, strings, bytes, dates, times and timestamps.",
)(_extreme_factory(min))


# ---------------------------------------------------------------------------- GEO_DISTANCE
_EARTH_RADIUS = {"KM": 6371.0, "KILOMETERS": 6371.0, "MI": 3959.0, "MILES": 3959.0}


def _haversin(x: float) -> float:
    return math.pow(math.sin(x / 2), 2)


@udf("GEO_DISTANCE", "DOUBLE", [("lat1", "DOUBLE"), ("lon1", "DOUBLE"),
                                ("lat2", "DOUBLE"), ("lon2", "DOUBLE")])
@udf("GEO_DISTANCE", "DOUBLE", [("lat1", "DOUBLE"), ("lon1", "DOUBLE"),
                                ("lat2", "DOUBLE"), ("lon2", "DOUBLE"), ("units", "STRING")])
def geo_distance(lat1: float | None, lon1: float | None, lat2: float | None,
                 lon2: float | None, units: str | None = None) -> float | None:
    """The great-circle distance between two lat/long points, in KM (default) or MI."""
    if lat1 is None or lon1 is None or lat2 is None or lon2 is None:
        return None
    for lat in (lat1, lat2):
        if not -90 <= lat <= 90:
            raise ValueError("valid latitude values for GeoDistance function are in the range "
                             "of -90 to 90 decimal degrees")
    for lon in (lon1, lon2):
        if not -180 <= lon <= 180:
            raise ValueError("valid longitude values for GeoDistance function are in the range "
                             "of -180 to +180 decimal degrees")
    if units is None:
        radius = 6371.0
    else:
        radius = _EARTH_RADIUS.get(units.strip().upper(), 0.0)
        if not radius:
            raise ValueError("GeoDistance function units parameter must be one of "
                             "MI, MILES, KM, KILOMETERS")
    a = (_haversin(_to_radians(lat2 - lat1))
         + _haversin(_to_radians(lon2 - lon1))
         * math.cos(_to_radians(lat1)) * math.cos(_to_radians(lat2)))
    return 2 * math.asin(math.sqrt(a)) * radius


# ------------------------------------------------------------------------- GENERATE_SERIES
def _series(start: int, end: int, step: int) -> list[int]:
    diff = end - start
    if diff > 0 and step < 0 or diff < 0 and step > 0:
        raise ValueError("GENERATE_SERIES step has wrong sign")
    values = range(start, end + (1 if step > 0 else -1), step)
    if len(values) > MAX_RESULT_SIZE:
        raise ValueError(f"GENERATE_SERIES of {len(values)} values is over the limit of "
                         f"{MAX_RESULT_SIZE}")
    return list(values)


@udf("GENERATE_SERIES", "ARRAY<INTEGER>", [("start", "INTEGER"), ("end", "INTEGER")])
@udf("GENERATE_SERIES", "ARRAY<BIGINT>", [("start", "BIGINT"), ("end", "BIGINT")])
def generate_series(start: int | None, end: int | None) -> list[int] | None:
    """An array of the values from start to end inclusive, counting up or down by 1."""
    if start is None or end is None:
        return None
    return _series(start, end, 1 if end >= start else -1)


@udf("GENERATE_SERIES", "ARRAY<INTEGER>", [("start", "INTEGER"), ("end", "INTEGER"),
                                           ("step", "INTEGER")])
@udf("GENERATE_SERIES", "ARRAY<BIGINT>", [("start", "BIGINT"), ("end", "BIGINT"),
                                          ("step", "INTEGER")])
def generate_series_step(start: int | None, end: int | None, step: int | None) -> list[int] | None:
    """An array of the values from start to end inclusive, step apart."""
    if start is None or end is None or step is None:
        return None
    if step == 0:
        raise ValueError("GENERATE_SERIES step cannot be zero")
    return _series(start, end, step)

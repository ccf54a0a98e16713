"""SQL types: the type tree shared by the parser, analyzer, codegen, functions and formats.

Types are small frozen dataclasses. ``str(t)`` renders a type the way ksqlDB prints it in
messages and DESCRIBE output (``INTEGER``, ``DECIMAL(4, 2)``, ``ARRAY<STRING>``,
``STRUCT<`F` DOUBLE>``), because error messages are part of the interface.

Runtime representation of values (one Python value per SQL value, ``None`` is NULL):

=========== ==============================================================
BOOLEAN     bool
INTEGER     int (32-bit range)
BIGINT      int (64-bit range)
DOUBLE      float
DECIMAL     decimal.Decimal, quantized to the type's scale
STRING      str
BYTES       bytes
DATE        int, days since 1970-01-01
TIME        int, milliseconds since midnight
TIMESTAMP   int, milliseconds since the epoch (UTC)
ARRAY       list
MAP         dict
STRUCT      dict keyed by field name in declared order (all fields present)
=========== ==============================================================
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Context
from enum import Enum
from typing import Callable


class BaseType(Enum):
    """The kind of a type, irrespective of its parameters."""

    BOOLEAN = "BOOLEAN"
    INTEGER = "INTEGER"
    BIGINT = "BIGINT"
    DOUBLE = "DOUBLE"
    DECIMAL = "DECIMAL"
    STRING = "STRING"
    BYTES = "BYTES"
    DATE = "DATE"
    TIME = "TIME"
    TIMESTAMP = "TIMESTAMP"
    ARRAY = "ARRAY"
    MAP = "MAP"
    STRUCT = "STRUCT"
    # The type of a bare NULL literal: it widens to whatever it meets.
    NULL = "NULL"
    # Only ever the type of a lambda parameter or function argument during resolution.
    LAMBDA = "LAMBDA"
    # Interval units in DATEADD-style calls and WINDOW clauses are not values; no INTERVAL type.


@dataclass(frozen=True)
class SqlType:
    """Base of all SQL types."""

    base: BaseType

    def __str__(self) -> str:
        return self.base.value

    # -- classification helpers used throughout the analyzer ---------------------------------
    @property
    def is_numeric(self) -> bool:
        return self.base in _NUMERIC

    @property
    def is_integral(self) -> bool:
        return self.base in (BaseType.INTEGER, BaseType.BIGINT)

    @property
    def is_primitive(self) -> bool:
        return self.base not in (BaseType.ARRAY, BaseType.MAP, BaseType.STRUCT, BaseType.LAMBDA)

    @property
    def is_null(self) -> bool:
        return self.base is BaseType.NULL


_NUMERIC = frozenset({BaseType.INTEGER, BaseType.BIGINT, BaseType.DOUBLE, BaseType.DECIMAL})


# The largest precision a DECIMAL type may be declared with. ksqlDB's own arithmetic stops at
# 38 digits, but it accepts wider declared types (QTT: DECIMAL(50, 30) is a valid column);
# past this bound there is no sensible use and the decimal machinery's contexts overflow.
DECIMAL_MAX_PRECISION = 1000


def decimal_parameters_problem(precision: int, scale: int) -> str | None:
    """ksqlDB's message for DECIMAL(precision, scale) it refuses (DecimalUtil's checks), or
    None for a valid pair."""
    shown = f"DECIMAL({precision},{scale})"
    if precision < 1:
        return f"DECIMAL precision must be >= 1: {shown}"
    if scale < 0:
        return f"DECIMAL scale must be >= 0: {shown}"
    if precision > DECIMAL_MAX_PRECISION:
        return f"DECIMAL precision must be <= {DECIMAL_MAX_PRECISION}: {shown}"
    if scale > precision:
        return f"DECIMAL precision must be >= scale: {shown}"
    return None


# Decimal arithmetic wide enough for any DECIMAL (up to 38 digits; Python's default context
# holds 28): quantizing to a type's scale, summing.
DECIMAL_CONTEXT = Context(prec=200)


@dataclass(frozen=True)
class DecimalType(SqlType):
    """DECIMAL(precision, scale)."""

    precision: int = 10
    scale: int = 0

    def __init__(self, precision: int, scale: int) -> None:
        object.__setattr__(self, "base", BaseType.DECIMAL)
        object.__setattr__(self, "precision", precision)
        object.__setattr__(self, "scale", scale)

    def __str__(self) -> str:
        return f"DECIMAL({self.precision}, {self.scale})"


@dataclass(frozen=True)
class ArrayType(SqlType):
    """ARRAY<item>."""

    item: SqlType = None  # type: ignore[assignment]

    def __init__(self, item: SqlType) -> None:
        object.__setattr__(self, "base", BaseType.ARRAY)
        object.__setattr__(self, "item", item)

    def __str__(self) -> str:
        return f"ARRAY<{self.item}>"


@dataclass(frozen=True)
class MapType(SqlType):
    """MAP<key, value>."""

    key: SqlType = None  # type: ignore[assignment]
    value: SqlType = None  # type: ignore[assignment]

    def __init__(self, key: SqlType, value: SqlType) -> None:
        object.__setattr__(self, "base", BaseType.MAP)
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "value", value)

    def __str__(self) -> str:
        return f"MAP<{self.key}, {self.value}>"


@dataclass(frozen=True)
class Field:
    """A named field of a STRUCT."""

    name: str
    type: SqlType

    def __str__(self) -> str:
        return f"`{self.name}` {self.type}"


@dataclass(frozen=True)
class StructType(SqlType):
    """STRUCT<`A` type, ...>; field names keep their declared case."""

    fields: tuple[Field, ...] = ()

    def __init__(self, fields: tuple[Field, ...] | list[Field]) -> None:
        object.__setattr__(self, "base", BaseType.STRUCT)
        object.__setattr__(self, "fields", tuple(fields))

    def __str__(self) -> str:
        return "STRUCT<" + ", ".join(str(f) for f in self.fields) + ">"

    def field(self, name: str) -> Field | None:
        """Find a field by exact name, then case-insensitively (as ksqlDB resolves `->`)."""
        for f in self.fields:
            if f.name == name:
                return f
        upper = name.upper()
        for f in self.fields:
            if f.name.upper() == upper:
                return f
        return None


@dataclass(frozen=True)
class LambdaType(SqlType):
    """The type of a lambda argument once resolved: parameter types and the body's type."""

    params: tuple[SqlType, ...] = ()
    result: SqlType | None = None

    def __init__(self, params: tuple[SqlType, ...], result: SqlType | None) -> None:
        object.__setattr__(self, "base", BaseType.LAMBDA)
        object.__setattr__(self, "params", tuple(params))
        object.__setattr__(self, "result", result)

    def __str__(self) -> str:
        return "LAMBDA"


@dataclass(frozen=True)
class NamedType(SqlType):
    """A custom type name written in DDL (``address ADDRESS``), as the parser sees it.

    Resolved by the analyzer against the types registered with CREATE TYPE; never the type of
    a value. ``base`` is STRUCT only as a placeholder (custom types are usually structs); code
    must resolve a NamedType before looking at its base.
    """

    name: str = ""

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "base", BaseType.STRUCT)
        object.__setattr__(self, "name", name)

    def __str__(self) -> str:
        return self.name


BOOLEAN = SqlType(BaseType.BOOLEAN)
INTEGER = SqlType(BaseType.INTEGER)
BIGINT = SqlType(BaseType.BIGINT)
DOUBLE = SqlType(BaseType.DOUBLE)
STRING = SqlType(BaseType.STRING)
BYTES = SqlType(BaseType.BYTES)
DATE = SqlType(BaseType.DATE)
TIME = SqlType(BaseType.TIME)
TIMESTAMP = SqlType(BaseType.TIMESTAMP)
NULL = SqlType(BaseType.NULL)

# Names accepted in DDL for the primitive types (VARCHAR is STRING, INT is INTEGER).
PRIMITIVES_BY_NAME: dict[str, SqlType] = {
    "BOOLEAN": BOOLEAN,
    "INT": INTEGER,
    "INTEGER": INTEGER,
    "BIGINT": BIGINT,
    "DOUBLE": DOUBLE,
    "STRING": STRING,
    "VARCHAR": STRING,
    "BYTES": BYTES,
    "DATE": DATE,
    "TIME": TIME,
    "TIMESTAMP": TIMESTAMP,
}

INT_MIN, INT_MAX = -(2**31), 2**31 - 1
BIGINT_MIN, BIGINT_MAX = -(2**63), 2**63 - 1


def any_type(t: SqlType, predicate: "Callable[[SqlType], bool]") -> bool:
    """Whether ``t`` or any type nested in it (array items, map keys and values, struct
    fields) satisfies ``predicate``."""
    if predicate(t):
        return True
    if isinstance(t, ArrayType):
        return any_type(t.item, predicate)
    if isinstance(t, MapType):
        return any_type(t.key, predicate) or any_type(t.value, predicate)
    if isinstance(t, StructType):
        return any(any_type(f.type, predicate) for f in t.fields)
    return False


def decimal_for_integral(t: SqlType) -> DecimalType:
    """The decimal that holds every value of an integral type, as ksqlDB widens them."""
    if t.base is BaseType.INTEGER:
        return DecimalType(10, 0)
    if t.base is BaseType.BIGINT:
        return DecimalType(19, 0)
    raise ValueError(f"not integral: {t}")


_WIDENING = {BaseType.INTEGER: 0, BaseType.BIGINT: 1, BaseType.DECIMAL: 2, BaseType.DOUBLE: 3}


def common_numeric(a: SqlType, b: SqlType) -> SqlType:
    """The type two numeric operands widen to (INTEGER < BIGINT < DECIMAL < DOUBLE)."""
    if a.base is BaseType.DECIMAL and b.base is BaseType.DECIMAL:
        assert isinstance(a, DecimalType) and isinstance(b, DecimalType)
        scale = max(a.scale, b.scale)
        whole = max(a.precision - a.scale, b.precision - b.scale)
        return DecimalType(min(whole + scale, 38), scale)
    if a.base is BaseType.DECIMAL and b.is_integral:
        return common_numeric(a, decimal_for_integral(b))
    if b.base is BaseType.DECIMAL and a.is_integral:
        return common_numeric(decimal_for_integral(a), b)
    return a if _WIDENING[a.base] >= _WIDENING[b.base] else b


def can_implicitly_cast(src: SqlType, dst: SqlType) -> bool:
    """Whether a value of ``src`` is accepted where ``dst`` is expected (function arguments,
    INSERT VALUES, CASE branches): NULL to anything, numeric widening, and structurally for
    collections."""
    if src.is_null or src == dst:
        return True
    if src.is_numeric and dst.is_numeric:
        if dst.base is BaseType.DOUBLE:
            return True
        if dst.base is BaseType.DECIMAL:
            return src.base is not BaseType.DOUBLE
        return _WIDENING[src.base] <= _WIDENING[dst.base]
    if isinstance(src, ArrayType) and isinstance(dst, ArrayType):
        return can_implicitly_cast(src.item, dst.item)
    if isinstance(src, MapType) and isinstance(dst, MapType):
        return can_implicitly_cast(src.key, dst.key) and can_implicitly_cast(src.value, dst.value)
    if isinstance(src, StructType) and isinstance(dst, StructType):
        return src == dst
    return False

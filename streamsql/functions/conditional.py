"""Conditional functions: COALESCE, IFNULL, NULLIF and AS_VALUE.

All are generic in their argument type. When arguments of different numeric types meet, the
result is the widest of them (as the registry binds generics) and the implementation converts
the chosen value to it, so a DOUBLE result is always a float and a DECIMAL one a Decimal.
"""
from __future__ import annotations

from decimal import Decimal
from typing import Any, Callable

from streamsql import types as t
from streamsql.errors import KsqlStatementException
from streamsql.functions.registry import udf
from streamsql.types import DECIMAL_CONTEXT, BaseType, DecimalType, SqlType



def _bound_type(arg_types: list[SqlType]) -> SqlType:
    """The type a generic T binds to over these arguments: the widest non-NULL one."""
    bound: SqlType | None = None
    for a in arg_types:
        if a.is_null:
            continue
        if bound is None:
            bound = a
        elif a == bound:
            continue
        elif a.is_numeric and bound.is_numeric:
            bound = t.common_numeric(bound, a)
        elif t.can_implicitly_cast(bound, a):
            bound = a
    return t.NULL if bound is None else bound


def _converter(src: SqlType, dst: SqlType) -> Callable[[Any], Any] | None:
    """Per-value conversion from ``src`` to ``dst`` (None when values need none)."""
    if src == dst or src.is_null or not (src.is_numeric and dst.is_numeric):
        return None
    if dst.base is BaseType.DOUBLE:
        return float
    if isinstance(dst, DecimalType):
        exp = Decimal((0, (1,), -dst.scale))
        return lambda v: Decimal(v).quantize(exp, context=DECIMAL_CONTEXT)
    return None  # integral widening keeps the Python int


def _coalesce_type(arg_types: list[SqlType]) -> SqlType:
    if not arg_types:
        # ksqlDB names this function in upper case in its message.
        raise KsqlStatementException("Function 'COALESCE' does not accept parameters ().")
    return _bound_type(arg_types)


def _first_non_null(*args: Any) -> Any:
    for a in args:
        if a is not None:
            return a
    return None


@udf("COALESCE", _coalesce_type, [("values", "T")], variadic=True, factory=True)
def coalesce(arg_types: list[SqlType], return_type: SqlType) -> Callable[..., Any]:
    """The first non-NULL argument, or NULL if all are NULL."""
    converters = [_converter(a, return_type) for a in arg_types]
    if all(c is None for c in converters):
        return _first_non_null
    pairs = list(zip(range(len(converters)), converters))

    def impl(*args: Any) -> Any:
        for i, conv in pairs:
            value = args[i]
            if value is not None:
                return value if conv is None else conv(value)
        return None

    return impl


@udf("IFNULL", _bound_type, [("expression", "T"), ("altValue", "T")],
     factory=True)
def ifnull(arg_types: list[SqlType], return_type: SqlType) -> Callable[[Any, Any], Any]:
    """expression if it is not NULL, otherwise altValue."""
    first = _converter(arg_types[0], return_type)
    second = _converter(arg_types[1], return_type)
    if first is None and second is None:
        return lambda value, alt: alt if value is None else value

    def impl(value: Any, alt: Any) -> Any:
        if value is None:
            return None if alt is None or second is None else second(alt)
        return value if first is None else first(value)

    return impl


@udf("NULLIF", "T", [("expression1", "T"), ("expression2", "T")])
def nullif(expr1: Any, expr2: Any) -> Any:
    """NULL if expression1 equals expression2, otherwise expression1."""
    if expr1 is None or expr1 == expr2:
        return None
    return expr1


@udf("AS_VALUE", "T", [("source", "T")])
def as_value(source: Any) -> Any:
    """Copies a key column into the value of the result."""
    return source

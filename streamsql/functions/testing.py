"""The test-only functions of ksqlDB's functional test suite (TEST_UDF, TEST_UDTF, BAD_UDF,
WHENCONDITION, WHENRESULT, THROWING_UDTF), with the behaviour ksqlDB's test jar gives them.

They are not part of the built-in library: only the QTT test runner's registry
(``streamsql.functions.test_registry``) loads this module.
"""
from __future__ import annotations

import itertools
from decimal import Decimal
from typing import Any, Callable

from streamsql import types as t
from streamsql.casts import value_to_string
from streamsql.functions.registry import udf, udtf
from streamsql.types import SqlType, StructType


@udf("TEST_UDF", "STRING", ["INTEGER", "STRING"])
def test_udf_int_string(i: int | None, s: str | None) -> str:
    return "doStuffIntString"


@udf("TEST_UDF", "STRING", ["BIGINT", "STRING"])
def test_udf_long_string(i: int | None, s: str | None) -> str:
    return "doStuffLongString"


@udf("TEST_UDF", "STRING", ["STRUCT"])
def test_udf_struct(s: dict | None) -> str | None:
    """Returns the struct's field A."""
    return None if s is None else s.get("A")


@udf("TEST_UDF", lambda _: StructType((t.Field("A", t.STRING),)), [])
def test_udf_make_struct() -> dict:
    """Returns STRUCT<A STRING> with A = 'foo'."""
    return {"A": "foo"}


def _when(value: Any, should_be_evaluated: bool | None) -> Any:
    if not should_be_evaluated:
        raise RuntimeError("This function should not have been evaluated")
    return value


@udf("WHENCONDITION", "BOOLEAN", ["BOOLEAN", "BOOLEAN"])
def when_condition(value: bool | None, should_be_evaluated: bool | None) -> bool | None:
    return _when(value, should_be_evaluated)


@udf("WHENRESULT", "INTEGER", ["INTEGER", "BOOLEAN"])
def when_result(value: int | None, should_be_evaluated: bool | None) -> int | None:
    return _when(value, should_be_evaluated)


@udf("BAD_UDF", "STRING", ["STRING"], factory=True)
def bad_udf_string(arg_types: list[SqlType], return_type: SqlType) -> Callable[[str | None], str | None]:
    """Throws on every other call (ksqlDB's BadUdf)."""
    calls = itertools.count()

    def blow_up(s: str | None) -> str | None:
        if next(calls) % 2 == 0:
            raise RuntimeError("boom")
        return s

    return blow_up


@udf("BAD_UDF", "INTEGER", ["INTEGER"])
def bad_udf_int(i: int | None) -> int:
    raise RuntimeError("boom")


@udf("BAD_UDF", "INTEGER", ["BOOLEAN"])
def bad_udf_boolean(should_throw: bool | None) -> int:
    if should_throw:
        raise RuntimeError("boom")
    return 0


def _java_string(value: Any, type_: SqlType) -> str:
    if value is None:
        raise TypeError("null argument")
    if isinstance(value, Decimal):
        return format(value, "f")
    return value_to_string(value, type_)


_STANDARD = ["INTEGER", "BIGINT", "DOUBLE", "BOOLEAN", "STRING", "DECIMAL", "STRUCT"]


@udtf("TEST_UDTF", "STRING", _STANDARD, factory=True)
def test_udtf_standard(arg_types: list[SqlType], return_type: SqlType) -> Callable[..., list[str]]:
    """One row per argument, as its string form."""
    def explode(*args: Any) -> list[str]:
        return [_java_string(a, ty) for a, ty in zip(args, arg_types)]
    return explode


@udtf("TEST_UDTF", "STRING", [f"ARRAY<{s}>" if s not in ("DECIMAL", "STRUCT") else
                              ("ARRAY<DECIMAL>" if s == "DECIMAL" else "ARRAY<T>") for s in _STANDARD],
      factory=True)
def test_udtf_arrays(arg_types: list[SqlType], return_type: SqlType) -> Callable[..., list[str]]:
    """One row per element of every array argument, as its string form."""
    def explode(*args: Any) -> list[str]:
        out = []
        for arr, ty in zip(args, arg_types):
            for item in arr or ():
                out.append(_java_string(item, ty.item))  # type: ignore[attr-defined]
        return out
    return explode


@udtf("TEST_UDTF", "INTEGER", ["INTEGER"])
def test_udtf_int(i: int | None) -> list[int]:
    if i is None:
        raise TypeError("null argument for a primitive int parameter")
    return [i]


@udtf("THROWING_UDTF", "BOOLEAN", ["BOOLEAN"])
def throwing_udtf(should_throw: bool | None) -> list[bool]:
    if should_throw:
        raise RuntimeError("boom")
    return [bool(should_throw)]

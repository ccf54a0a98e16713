"""The test-only functions of ksqlDB's functional test suite (TEST_UDF, TEST_UDTF, BAD_UDF,
WHENCONDITION, WHENRESULT, THROWING_UDTF, and the aggregates VAR_ARG, MID_VAR_ARG, MULTI_ARG,
FOUR_ARG, FIVE_ARG, OBJ_COL_ARG, GENERIC_VAR_ARG, SUM_LIST), with the behaviour ksqlDB's test
jar gives them.

They are not part of the built-in library: only the QTT test runner's registry
(``streamsql.functions.test_registry``) loads this module.
"""
from __future__ import annotations

import itertools
from decimal import Decimal
from typing import Any, Callable

from streamsql import types as t
from streamsql.casts import value_to_string
from streamsql.functions.aggregates import codec_or_identity
from streamsql.functions.registry import Aggregator, udaf, udf, udtf
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


# ============================================================================ test UDAFs
# The aggregate functions of ksqlDB's functional tests, their behaviour read off the cases that
# use them (variadic-udaf.json, middle-variadic-udaf.json, multi-arg-udaf.json,
# generic-variadic-udaf.json, obj-var-col-arg-udaf.json, sum.json).

class _LengthSum(Aggregator):
    """A BIGINT sum of the number arguments and the lengths of the string arguments (NULL
    counts 0), starting from a value computed from the init arguments."""

    def __init__(self, start: int, arg_types: list[SqlType]) -> None:
        self._start = start
        # Decided once: which argument positions are strings (their length is added).
        self._is_string = tuple(a.base is t.BaseType.STRING for a in arg_types)

    def initialize(self) -> int:
        return self._start

    def _amount(self, values: tuple[Any, ...]) -> int:
        total = 0
        for v, is_string in zip(values, self._is_string):
            if v is not None:
                total += len(v) if is_string else v
        return total

    def add(self, acc: int, *values: Any) -> int:
        return acc + self._amount(values)

    def undo(self, acc: int, *values: Any) -> int:
        return acc - self._amount(values)

    def merge(self, a: int, b: int) -> int:
        return a + b - self._start


def _init_amount(init_args: tuple[Any, ...]) -> int:
    """The starting value: init numbers added, init strings by length, NULLs as 0."""
    return sum(0 if a is None else (len(a) if isinstance(a, str) else int(a)) for a in init_args)


def _value_args(arg_types: list[SqlType], init_args: tuple[Any, ...]) -> list[SqlType]:
    return list(arg_types[:len(arg_types) - len(init_args)])


@udaf("VAR_ARG", "BIGINT", [("first", "BIGINT"), ("rest", "STRING")], variadic=True)
def var_arg_udaf(arg_types: list[SqlType], return_type: SqlType, init_args: tuple[Any, ...]) -> Aggregator:
    """Sums the first argument and the lengths of the others."""
    return _LengthSum(0, _value_args(arg_types, init_args))


@udaf("MID_VAR_ARG", "BIGINT", [("first", "BIGINT"), ("rest", "STRING"), ("init1", "INTEGER"),
                                ("init2", "INTEGER")], variadic=True, init_params=2)
def mid_var_arg_udaf(arg_types: list[SqlType], return_type: SqlType, init_args: tuple[Any, ...]) -> Aggregator:
    """VAR_ARG starting from the sum of its two literal arguments."""
    return _LengthSum(_init_amount(init_args), _value_args(arg_types, init_args))


_INITS = [("i", "INTEGER"), ("s1", "STRING"), ("s2", "STRING"), ("s3", "STRING")]


@udaf("MULTI_ARG", "BIGINT", [("first", "BIGINT"), ("second", "STRING"), *_INITS], init_params=4)
@udaf("FOUR_ARG", "BIGINT", [("first", "BIGINT"), ("second", "STRING"), ("third", "STRING"),
                             ("fourth", "STRING"), *_INITS], init_params=4)
@udaf("FIVE_ARG", "BIGINT", [("first", "BIGINT"), ("second", "STRING"), ("third", "STRING"),
                             ("fourth", "STRING"), ("fifth", "INTEGER"), *_INITS], init_params=4)
def multi_arg_udaf(arg_types: list[SqlType], return_type: SqlType, init_args: tuple[Any, ...]) -> Aggregator:
    """Sums the number arguments and the lengths of the string ones, starting from the
    literal int plus the lengths of the three literal strings."""
    return _LengthSum(_init_amount(init_args), _value_args(arg_types, init_args))


class _CollectFirstIfComplete(Aggregator):
    """Collects the first argument of every record none of whose arguments is NULL."""

    supports_undo = False

    def __init__(self, first: SqlType) -> None:
        self._enc, self._dec = codec_or_identity(first)

    def initialize(self) -> list[Any]:
        return []

    def add(self, acc: list[Any], *values: Any) -> list[Any]:
        if None not in values:
            acc.append(values[0])
        return acc

    def merge(self, a: list[Any], b: list[Any]) -> list[Any]:
        return a + b

    def result(self, acc: list[Any]) -> list[Any]:
        return list(acc)

    def to_state(self, acc: list[Any]) -> list[Any]:
        return [self._enc(v) for v in acc]

    def from_state(self, data: list[Any]) -> list[Any]:
        return [self._dec(v) for v in data]


@udaf("OBJ_COL_ARG", "ARRAY<INTEGER>", [("first", "INTEGER"), ("rest", "ANY")], variadic=True)
def obj_col_arg_udaf(arg_types: list[SqlType], return_type: SqlType, init_args: tuple[Any, ...]) -> Aggregator:
    """Collects the first argument when no argument (of any type) is NULL."""
    return _CollectFirstIfComplete(arg_types[0])


@udaf("GENERIC_VAR_ARG", "ARRAY<T>", [("first", "T"), ("second", "INTEGER"), ("rest", "U")], variadic=True)
def generic_var_arg_udaf(arg_types: list[SqlType], return_type: SqlType, init_args: tuple[Any, ...]) -> Aggregator:
    """Collects the first argument when no argument is NULL."""
    return _CollectFirstIfComplete(arg_types[0])


class _SumList(Aggregator):
    """Sums the non-NULL elements of every list."""

    def __init__(self, zero: Any) -> None:
        self._zero = zero

    def initialize(self) -> Any:
        return self._zero

    def add(self, acc: Any, values: list[Any] | None) -> Any:
        if values:
            acc += sum(v for v in values if v is not None)
        return acc

    def undo(self, acc: Any, values: list[Any] | None) -> Any:
        if values:
            acc -= sum(v for v in values if v is not None)
        return acc

    def merge(self, a: Any, b: Any) -> Any:
        return a + b


@udaf("SUM_LIST", "DOUBLE", [("list", "ARRAY<DOUBLE>")])
@udaf("SUM_LIST", "BIGINT", [("list", "ARRAY<BIGINT>")])
@udaf("SUM_LIST", "INTEGER", [("list", "ARRAY<INTEGER>")])
def sum_list_udaf(arg_types: list[SqlType], return_type: SqlType, init_args: tuple[Any, ...]) -> Aggregator:
    """Sums the elements of the lists."""
    return _SumList(0.0 if return_type.base is t.BaseType.DOUBLE else 0)

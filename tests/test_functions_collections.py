"""Array and map functions, lambda functions (TRANSFORM, FILTER, REDUCE) and the table
functions EXPLODE and CUBE_EXPLODE, resolved through the registry as the expression compiler
does. Expected values come from ksqlDB's QTT cases (array-min-max-sort, array-remove,
array-set-functions, arrayjoin, array, create_map, slice, transform-*, filter, reduce-*,
table-functions, cube)."""
from __future__ import annotations

import math
from decimal import Decimal
from typing import Any, Callable

import pytest

from streamsql import types as t
from streamsql.errors import FunctionError
from streamsql.functions import default_registry
from streamsql.functions.collections import java_hash_order, java_string_hash, table_size_for
from streamsql.types import ArrayType, DecimalType, Field, MapType, StructType

S, I, B, DB, BOOL = t.STRING, t.INTEGER, t.BIGINT, t.DOUBLE, t.BOOLEAN
DEC = DecimalType(2, 1)


def A(item: t.SqlType) -> ArrayType:
    return ArrayType(item)


def resolve(name: str, arg_types: list[t.SqlType | None], bodies: list[t.SqlType] | None = None,
            kind: str = "scalar") -> Any:
    """Resolve ``name``; lambda arguments (None) get body types from ``bodies`` in order."""
    lambda_bodies = iter(bodies or [])
    body_by_index: dict[int, t.SqlType] = {}

    def typer(i: int, params: tuple[t.SqlType, ...]) -> t.SqlType:
        if i not in body_by_index:
            body_by_index[i] = next(lambda_bodies)
        return body_by_index[i]
    return default_registry().resolve(name, arg_types, lambda_typer=typer, kind=kind)


def impl(name: str, arg_types: list[t.SqlType | None], bodies: list[t.SqlType] | None = None,
         kind: str = "scalar") -> Callable[..., Any]:
    return resolve(name, arg_types, bodies, kind).implementation()


def d(*xs: str | None) -> list[Decimal | None]:
    return [None if x is None else Decimal(x) for x in xs]


# ----------------------------------------------------------------------- min / max / sort
ROW1 = {BOOL: [False, True, False], I: [0, 0, 1, 0, -1], B: [234, -123, 345],
        DB: [0.0, 0.1, -12345.678, 0.2, 0.3], S: ["foo", "bar"],
        DEC: d("1.0", "1.1", "1.2", "-0.2", "1.9", "9.0", "-9.9", "1.5")}
ROW2 = {BOOL: [None, False, True], I: [0, None, 1, 0, -1], B: [None, -123, 345],
        DB: [0.0, 0.1, -12345.678, None, 0.3], S: ["foo", "fo", "Food", None, "F", "food"],
        DEC: d("1.0", "1.1", "1.2", "-0.2", None, "9.0")}


@pytest.mark.parametrize("item,row1_min,row2_min", [
    (BOOL, False, False), (I, -1, -1), (B, -123, -123), (DB, -12345.678, -12345.678),
    (S, "bar", "F"), (DEC, Decimal("-9.9"), Decimal("-0.2")),
])
def test_array_min(item: t.SqlType, row1_min: Any, row2_min: Any) -> None:
    r = resolve("ARRAY_MIN", [A(item)])
    assert r.return_type == item
    f = r.implementation()
    assert f(ROW1[item]) == row1_min
    assert f(ROW2[item]) == row2_min
    assert f([]) is None
    assert f(None) is None


def test_array_max() -> None:
    assert impl("ARRAY_MAX", [A(I)])([123, 452, 451, None]) == 452
    assert impl("ARRAY_MAX", [A(S)])(["foo", "fo", "Food", None, "F", "food"]) == "food"
    assert impl("ARRAY_MAX", [A(BOOL)])([False, None]) is False
    assert impl("ARRAY_MAX", [A(I)])([None, None]) is None


def test_double_ordering_follows_double_compare_to() -> None:
    assert math.isnan(impl("ARRAY_MAX", [A(DB)])([1.0, float("nan"), 2.0]))
    assert impl("ARRAY_SORT", [A(DB)])([0.0, float("inf"), -0.0, 1.0])[:3] == [-0.0, 0.0, 1.0]
    assert str(impl("ARRAY_SORT", [A(DB)])([0.0, -0.0])[0]) == "-0.0"


def test_strings_compare_by_utf16_code_unit() -> None:
    # U+FF01 sorts after the surrogate pair of U+1F600 in Java, before it by code point
    assert impl("ARRAY_MIN", [A(S)])(["\uff01", "\U0001F600"]) == "\U0001F600"
    assert impl("ARRAY_SORT", [A(S)])(["\uff01", "b", "\U0001F600"]) == ["b", "\U0001F600", "\uff01"]


def test_array_sort_ascending_puts_nulls_last() -> None:
    sort = impl("ARRAY_SORT", [A(S)])
    assert sort(["foo", "fo", "Food", None, "F", "food"]) == ["F", "Food", "fo", "foo", "food", None]
    assert impl("ARRAY_SORT", [A(BOOL)])([None, False, True]) == [False, True, None]
    assert impl("ARRAY_SORT", [A(DEC)])(ROW2[DEC]) == d("-0.2", "1.0", "1.1", "1.2", "9.0", None)
    assert impl("ARRAY_SORT", [A(I)])([0, None, 1, 0, -1]) == [-1, 0, 0, 1, None]
    assert sort([]) == []
    assert sort(None) is None


def test_array_sort_with_direction() -> None:
    sort = impl("ARRAY_SORT", [A(I), S])
    assert sort([3, None, 1, 2], "desc") == [3, 2, 1, None]
    assert sort([3, None, 1, 2], "DESCENDING") == [3, 2, 1, None]
    assert sort([3, 1], "Ascending") == [1, 3]
    assert sort([3, 1], "sideways") is None
    assert sort([3, 1], None) is None


def test_ordering_structured_elements_is_an_error() -> None:
    with pytest.raises(FunctionError):
        impl("ARRAY_SORT", [A(A(I))])([[2], [1]])


# ---------------------------------------------------------------------- remove / contains
def test_array_remove_primitives() -> None:
    assert impl("ARRAY_REMOVE", [A(BOOL), BOOL])([False, True, False], True) == [False, False]
    assert impl("ARRAY_REMOVE", [A(B), B])([345, -123, 345], 345) == [-123]
    assert impl("ARRAY_REMOVE", [A(DB), DB])([0.3, -12345.678, None, 0.3], 0.3) == [-12345.678, None]
    assert impl("ARRAY_REMOVE", [A(DEC), DEC])(d("1.0", "-0.2", "1.0", "-9.9"), Decimal("-0.2")) == \
        d("1.0", "1.0", "-9.9")
    # NULL removes the NULLs
    assert impl("ARRAY_REMOVE", [A(S), S])(["foo", "Food", None, "food"], None) == ["foo", "Food", "food"]
    assert impl("ARRAY_REMOVE", [A(I), I])(None, -1) is None
    assert resolve("ARRAY_REMOVE", [A(I), I]).return_type == A(I)


def test_array_remove_structured() -> None:
    lists = impl("ARRAY_REMOVE", [A(A(S)), A(S)])
    assert lists([None, ["foo"], ["foo", "bar"]], ["foo"]) == [None, ["foo", "bar"]]
    maps = impl("ARRAY_REMOVE", [A(MapType(S, I)), MapType(S, I)])
    assert maps([{"apple": 1, "banana": 2}, {"apple": 3, "banana": 4}, None],
                {"apple": 1, "banana": 2}) == [{"apple": 3, "banana": 4}, None]


def test_array_contains() -> None:
    contains = impl("ARRAY_CONTAINS", [A(S), S])
    assert resolve("ARRAY_CONTAINS", [A(S), S]).return_type == BOOL
    assert contains(["Pink", None], "Pink") is True
    assert contains(["Red", "Green"], "Pink") is False
    assert contains(None, "Pink") is False
    assert contains(["a", None], None) is True
    # an INTEGER value is widened to the BIGINT element type
    assert resolve("ARRAY_CONTAINS", [A(B), I]).param_types[1] == B


# -------------------------------------------------------------------------- set functions
def test_array_set_functions() -> None:
    a, b = [0, 0, 1, 0, -1], [1, -2, 0]
    assert impl("ARRAY_INTERSECT", [A(I), A(I)])(a, b) == [0, 1]
    assert impl("ARRAY_INTERSECT", [A(S), A(S)])(["foo", "bar", "foo"], ["foo", "baz"]) == ["foo"]
    assert impl("ARRAY_INTERSECT", [A(I), A(I)])(a, [3, 4]) == []
    assert impl("ARRAY_UNION", [A(I), A(I)])(a, b) == [0, 1, -1, -2]
    assert impl("ARRAY_UNION", [A(I), A(I)])(a, [3, 4]) == [0, 1, -1, 3, 4]
    assert impl("ARRAY_UNION", [A(I), A(I)])([], [1, -2]) == [1, -2]
    assert impl("ARRAY_EXCEPT", [A(I), A(I)])([1, 2, 2, 3, None, None], [3]) == [1, 2, None]
    assert impl("ARRAY_DISTINCT", [A(S)])(["a", None, "b", "a", None]) == ["a", None, "b"]
    for name in ("ARRAY_INTERSECT", "ARRAY_UNION", "ARRAY_EXCEPT"):
        f = impl(name, [A(I), A(I)])
        assert f(None, [1]) is None
        assert f([1], None) is None
    assert impl("ARRAY_DISTINCT", [A(I)])(None) is None


def test_set_functions_on_structured_elements() -> None:
    assert impl("ARRAY_DISTINCT", [A(A(I))])([[1], [2], [1]]) == [[1], [2]]
    assert impl("ARRAY_UNION", [A(A(I)), A(A(I))])([[1]], [[2], [1]]) == [[1], [2]]
    assert impl("ARRAY_INTERSECT", [A(A(I)), A(A(I))])([[1], [3]], [[3]]) == [[3]]


def test_array_concat() -> None:
    concat = impl("ARRAY_CONCAT", [A(I), A(I)])
    assert concat([0, 0, 1, 0, -1], [1, -2, 0]) == [0, 0, 1, 0, -1, 1, -2, 0]
    assert concat(None, [1, -2]) == [1, -2]
    assert concat([0, 3, 2], None) == [0, 3, 2]
    assert concat(None, None) is None


# --------------------------------------------------------------------- length/slice/join
def test_array_length() -> None:
    assert impl("ARRAY_LENGTH", [A(DEC)])(d("1.0", "1.1")) == 2
    assert impl("ARRAY_LENGTH", [A(A(BOOL))])([[]]) == 1
    assert impl("ARRAY_LENGTH", [A(I)])(None) is None
    assert resolve("ARRAY_LENGTH", [A(S)]).return_type == I


def test_slice() -> None:
    f = impl("SLICE", [A(A(S)), I, I])
    assert f([["a"], ["b"], ["c"], ["d"]], 2, 3) == [["b"], ["c"]]
    assert f([["a"], ["b"]], None, None) == [["a"], ["b"]]
    assert f([["a"], ["b"]], 0, 1) is None
    assert f([["a"], ["b"]], 1, 3) is None
    assert f(None, 1, 1) is None


def test_array_join() -> None:
    assert impl("ARRAY_JOIN", [A(BOOL), S])([True, None, False], "") == "truenullfalse"
    assert impl("ARRAY_JOIN", [A(I), t.NULL])([1, 23, -42, 0], None) == "123-420"
    assert impl("ARRAY_JOIN", [A(B), S])([-4294967297, 8589934592], "") == "-42949672978589934592"
    assert impl("ARRAY_JOIN", [A(DB), S])([1.23, -23.42, 0.0], None) == "1.23-23.420.0"
    assert impl("ARRAY_JOIN", [A(DecimalType(5, 2)), S])(d("123.45", "987.65"), "") == "123.45987.65"
    assert impl("ARRAY_JOIN", [A(S), S])(["Hello", "From", "", "Ksqldb", "Udf"], None) == "HelloFromKsqldbUdf"
    assert impl("ARRAY_JOIN", [A(DB)])([1e7, None]) == "1.0E7,null"
    assert impl("ARRAY_JOIN", [A(I)])(None) is None
    with pytest.raises(FunctionError):
        impl("ARRAY_JOIN", [A(A(I))])([[1]])


# ----------------------------------------------------------------------------------- maps
def test_as_map() -> None:
    r = resolve("AS_MAP", [A(S), A(I)])
    assert r.return_type == MapType(S, I)
    f = r.implementation()
    assert f(["a", "b"], [1, 2]) == {"a": 1, "b": 2}
    assert f(["a", "b"], [1, 2, 3]) == {"a": 1, "b": 2}
    assert f(["a", "b", "c"], [1, 2]) == {"a": 1, "b": 2, "c": None}
    assert f(None, [1]) is None


def test_map_keys_values_union() -> None:
    m = {"apple": 1, "banana": 2}
    assert resolve("MAP_KEYS", [MapType(S, I)]).return_type == A(S)
    assert impl("MAP_KEYS", [MapType(S, I)])(m) == ["apple", "banana"]
    assert resolve("MAP_VALUES", [MapType(S, I)]).return_type == A(I)
    assert impl("MAP_VALUES", [MapType(S, I)])(m) == [1, 2]
    assert impl("MAP_VALUES", [MapType(S, I)])(None) is None
    union = impl("MAP_UNION", [MapType(S, I), MapType(S, I)])
    assert union(m, {"banana": 3, "cherry": 4}) == {"apple": 1, "banana": 3, "cherry": 4}
    assert union(None, m) == m
    assert union(None, None) is None


def test_entries() -> None:
    r = resolve("ENTRIES", [MapType(S, I), BOOL])
    assert r.return_type == A(StructType((Field("K", S), Field("V", I))))
    f = r.implementation()
    assert f({"K2": 2, "K1": 1, "K3": 3}, True) == [
        {"K": "K1", "V": 1}, {"K": "K2", "V": 2}, {"K": "K3", "V": 3}]
    assert f({"K2": 2, "K1": 1}, False) == [{"K": "K2", "V": 2}, {"K": "K1", "V": 1}]
    assert f(None, True) is None


def test_java_hashmap_iteration_order() -> None:
    assert java_string_hash("hello") == 99162322  # "hello".hashCode()
    assert java_string_hash("\U0001F600") == (0xD83D * 31 + 0xDE00)
    # new HashMap<>(3) iterates these by bucket of a 4-slot table, not by insertion
    m = {"yes, thanks": 3.5, "nope": 7.3, "sure, yeah": 2.1}
    assert list(java_hash_order(m, java_string_hash, table_size_for(3))) == [
        "yes, thanks", "sure, yeah", "nope"]
    assert list(java_hash_order(m, java_string_hash)) == ["yes, thanks", "nope", "sure, yeah"]


# -------------------------------------------------------------------------------- lambdas
def test_transform_array() -> None:
    r = resolve("TRANSFORM", [A(A(I)), None], [I])
    assert r.return_type == A(I)
    f = r.implementation()
    assert f([[5, 7, 1], [3, 6, 1]], lambda x: max(x)) == [7, 6]
    assert f(None, lambda x: x) is None


def test_transform_map() -> None:
    r = resolve("TRANSFORM", [MapType(S, DecimalType(4, 2)), None, None], [S, DecimalType(3, 0)])
    assert r.return_type == MapType(S, DecimalType(3, 0))
    f = r.implementation()
    up, rnd = (lambda k, v: k.upper()), (lambda k, v: round(v))
    assert f({"test": Decimal("3.21"), "hello": Decimal("4.49")}, up, rnd) == {"TEST": 3, "HELLO": 4}
    assert f(None, up, rnd) is None
    with pytest.raises(FunctionError, match="Duplicate key"):
        f({"a": Decimal(1), "A": Decimal(2)}, up, rnd)
    with pytest.raises(FunctionError):
        f({"a": Decimal(1)}, up, lambda k, v: None)


def test_filter_array() -> None:
    r = resolve("FILTER", [A(DecimalType(4, 2)), None], [BOOL])
    assert r.return_type == A(DecimalType(4, 2))
    f = r.implementation()

    def pred(x: Decimal | None) -> bool | None:
        return None if x is None else round(x) >= 10
    assert f(d("9.22", "9.56", "10.63", "7.32"), pred) == d("9.56", "10.63")
    assert f(d("10.55", None, "10.45"), pred) == d("10.55", "10.45")
    assert f(None, pred) is None


def test_filter_map() -> None:
    r = resolve("FILTER", [MapType(S, A(I)), None], [BOOL])
    assert r.return_type == MapType(S, A(I))
    f = r.implementation()

    def pred(x: str, y: list[int]) -> bool:
        return "e" in x and min(y) < 12
    assert f({"yes": [2, 14, 25], "no": [-4, 35]}, pred) == {"yes": [2, 14, 25]}
    assert f({"okey": [1]}, lambda x, y: False) == {}
    assert f(None, pred) is None
    with pytest.raises(FunctionError):  # a kept NULL value, as Collectors.toMap refuses
        impl("FILTER", [MapType(S, I), None], [BOOL])({"a": None}, lambda x, y: True)


def test_reduce_array() -> None:
    r = resolve("REDUCE", [A(I), I, None], [I])
    assert r.return_type == I
    assert [p for p in r.param_types[2].params] == [I, I]
    f = r.implementation()

    def add(s: int | None, x: int | None) -> int | None:
        return None if s is None or x is None else s + x
    assert f([3, 6], 2, add) == 11
    assert f([5, None], 2, add) is None
    assert f(None, 2, add) == 2
    assert f([1], None, add) is None


def test_reduce_map_follows_java_map_order() -> None:
    r = resolve("REDUCE", [MapType(S, DB), DB, None], [DB])
    assert r.return_type == DB
    assert list(r.param_types[2].params) == [DB, S, DB]
    f = r.implementation()

    def step(s: float, x: str, y: float) -> float:
        return float(math.ceil(y * s)) if "ye" in x else float(math.floor(s * y))
    # as ksqlDB's JSON deserializer builds it: new HashMap<>(3)
    m = java_hash_order({"yes, thanks": 3.5, "nope": 7.3, "sure, yeah": 2.1}, java_string_hash,
                        table_size_for(3))
    assert f(m, 3.2, step) == 189.0
    assert f(None, 3.2, step) == 3.2


def test_lambda_overloads_pick_by_collection_kind() -> None:
    with pytest.raises(Exception, match="does not accept parameters"):
        resolve("TRANSFORM", [MapType(S, I), None], [I])
    assert resolve("FILTER", [A(I), None], [BOOL]).return_type == A(I)
    assert resolve("FILTER", [MapType(S, I), None], [BOOL]).return_type == MapType(S, I)


# ------------------------------------------------------------------------ table functions
def test_explode() -> None:
    r = resolve("EXPLODE", [A(B)], kind="table")
    assert r.return_type == B
    f = r.implementation()
    assert f([1, 2]) == [1, 2]
    assert f(None) == []
    assert default_registry().is_table_function("explode")


def test_cube_explode() -> None:
    r = resolve("CUBE_EXPLODE", [A(I)], kind="table")
    assert r.return_type == A(I)
    f = r.implementation()
    assert f([1, 2]) == [[None, None], [None, 2], [1, None], [1, 2]]
    assert f([1, None]) == [[None, None], [1, None]]
    assert f(["one", "two"]) == [[None, None], [None, "two"], ["one", None], ["one", "two"]]
    assert f(None) == []

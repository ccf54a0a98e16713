"""Higher-order functions over arrays and maps: TRANSFORM, FILTER and REDUCE (ksqlDB's lambda
UDFs). Lambda arguments arrive as plain Python callables, one positional argument per lambda
parameter.

Maps are rebuilt the way ksqlDB's ``Collectors.toMap`` does, so a NULL value or a duplicate
key in the result is an error (the engine then emits NULL and logs it), exactly as in ksqlDB.
A FILTER predicate that evaluates to NULL drops the element, as ksqlDB's comparisons with
NULL are false.
"""
from __future__ import annotations

from typing import Any, Callable

from streamsql.errors import FunctionError
from streamsql.functions.collections import java_hash_order, java_key_hasher
from streamsql.functions.registry import udf
from streamsql.types import MapType, SqlType

_Impl = Callable[..., Any]


def _hasher(t: SqlType) -> Callable[[Any], int] | None:
    return java_key_hasher(t.key) if isinstance(t, MapType) else None


def _to_map(pairs: Any) -> dict[Any, Any]:
    """Collectors.toMap: no NULL values, no duplicate keys (a default HashMap, so the caller
    puts the result in Java's iteration order)."""
    out: dict[Any, Any] = {}
    for k, v in pairs:
        if v is None:
            raise FunctionError("Map values must not be null")
        if k in out:
            raise FunctionError(f"Duplicate key {k} (attempted merging values {out[k]} and {v})")
        out[k] = v
    return out


@udf("TRANSFORM", "ARRAY<U>", [("array", "ARRAY<T>"), ("function", "FUNCTION(T)->U")])
def transform_array(array: list[Any] | None, fn: Callable[[Any], Any]) -> list[Any] | None:
    """Applies a function to each element of an array, returning the array of results."""
    if array is None:
        return None
    return [fn(x) for x in array]


@udf("TRANSFORM", "MAP<K1, V1>", [("map", "MAP<K, V>"), ("key_function", "FUNCTION(K, V)->K1"),
                                  ("value_function", "FUNCTION(K, V)->V1")], factory=True)
def transform_map(arg_types: list[SqlType], return_type: SqlType) -> _Impl:
    """Applies a key function and a value function to each entry of a map, returning the
    map of the results. Duplicate resulting keys or NULL resulting values are an error."""
    hasher = _hasher(return_type)

    def impl(m: dict[Any, Any] | None, key_fn: Callable[[Any, Any], Any],
             value_fn: Callable[[Any, Any], Any]) -> dict[Any, Any] | None:
        if m is None:
            return None
        out = _to_map((key_fn(k, v), value_fn(k, v)) for k, v in m.items())
        return java_hash_order(out, hasher)
    return impl


@udf("FILTER", "ARRAY<T>", [("array", "ARRAY<T>"), ("function", "FUNCTION(T)->BOOLEAN")])
def filter_array(array: list[Any] | None, fn: Callable[[Any], Any]) -> list[Any] | None:
    """Returns the elements of an array for which the predicate is true."""
    if array is None:
        return None
    return [x for x in array if fn(x)]


@udf("FILTER", "MAP<K, V>", [("map", "MAP<K, V>"), ("function", "FUNCTION(K, V)->BOOLEAN")],
     factory=True)
def filter_map(arg_types: list[SqlType], return_type: SqlType) -> _Impl:
    """Returns the entries of a map for which the predicate is true. A kept entry with a
    NULL value is an error."""
    hasher = _hasher(return_type)

    def impl(m: dict[Any, Any] | None, fn: Callable[[Any, Any], Any]) -> dict[Any, Any] | None:
        if m is None:
            return None
        return java_hash_order(_to_map((k, v) for k, v in m.items() if fn(k, v)), hasher)
    return impl


@udf("REDUCE", "S", [("array", "ARRAY<T>"), ("initialState", "S"),
                     ("function", "FUNCTION(S, T)->S")])
def reduce_array(array: list[Any] | None, state: Any, fn: Callable[[Any, Any], Any]) -> Any:
    """Folds an array into a single value: the function combines the state with each
    element in turn, starting from the initial state. A NULL array gives the initial state;
    a NULL initial state gives NULL."""
    if state is None:
        return None
    if array is None:
        return state
    for x in array:
        state = fn(state, x)
    return state


@udf("REDUCE", "S", [("map", "MAP<K, V>"), ("initialState", "S"),
                     ("function", "FUNCTION(S, K, V)->S")])
def reduce_map(m: dict[Any, Any] | None, state: Any, fn: Callable[[Any, Any, Any], Any]) -> Any:
    """Folds a map into a single value: the function combines the state with each key and
    value in turn, starting from the initial state. A NULL map gives the initial state; a
    NULL initial state gives NULL."""
    if state is None:
        return None
    if m is None:
        return state
    for k, v in m.items():
        state = fn(state, k, v)
    return state

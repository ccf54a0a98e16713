"""Array and map functions (ksqlDB's collection UDFs).

Semantics follow ksqlDB's Java implementations: set-like functions keep first-occurrence
order (LinkedHashSet), ordering functions use Java's natural ordering (Double.compareTo puts
NaN last and -0.0 before 0.0; strings compare by UTF-16 code unit; BYTES compare as signed
bytes) with NULL elements skipped or sorted last, and NULL arguments give what the Java code
gives (often NULL, sometimes an empty result or an error).

Map values keep java.util.HashMap iteration order (see ``java_hash_order``): functions that
build maps put their result in the order the Java map would iterate, and functions that walk
maps (MAP_KEYS, ENTRIES, REDUCE...) simply follow dict order.

Functions whose algorithm depends on the element type (hashing vs. scanning, the sort key)
are factories: the choice is made once per call site, never per record.
"""
from __future__ import annotations

import math
from typing import Any, Callable

from streamsql import types as t
from streamsql.casts import java_double_str
from streamsql.errors import FunctionError
from streamsql.functions.registry import udf
from streamsql.types import ArrayType, BaseType, Field, MapType, SqlType, StructType

_Impl = Callable[..., Any]


# ----------------------------------------------------------------------- Java map ordering
# ksqlDB's maps are java.util.HashMaps, whose iteration order (bucket by key hash, then
# insertion) shows in MAP_KEYS, ENTRIES, REDUCE and any lambda over a map. Map values here
# keep that order: dict order is the order the Java HashMap would iterate.
def java_string_hash(s: str) -> int:
    """String.hashCode as an unsigned 32-bit value (over UTF-16 code units)."""
    h = 0
    if s.isascii():
        for c in s.encode():
            h = (31 * h + c) & 0xFFFFFFFF
    else:
        b = s.encode("utf-16-be", "surrogatepass")
        for i in range(0, len(b), 2):
            h = (31 * h + (b[i] << 8 | b[i + 1])) & 0xFFFFFFFF
    return h


def _long_hash(v: int) -> int:
    u = v & 0xFFFFFFFFFFFFFFFF
    return (u ^ (u >> 32)) & 0xFFFFFFFF


_KEY_HASHERS: dict[BaseType, Callable[[Any], int]] = {
    BaseType.STRING: java_string_hash,
    BaseType.INTEGER: lambda v: v & 0xFFFFFFFF,
    BaseType.BIGINT: _long_hash,
    BaseType.BOOLEAN: lambda v: 1231 if v else 1237,
}


def java_key_hasher(key_type: SqlType) -> Callable[[Any], int] | None:
    """hashCode of the Java value for a map key type, or None when not modelled."""
    return _KEY_HASHERS.get(key_type.base)


def table_size_for(n: float) -> int:
    """HashMap.tableSizeFor: the power of two at or above ``n`` (at least 1)."""
    size = 1
    while size < n:
        size *= 2
    return size


def java_hash_order(m: dict[Any, Any], hasher: Callable[[Any], int] | None,
                    initial_capacity: int = 16) -> dict[Any, Any]:
    """``m`` reordered as a java.util.HashMap created with ``initial_capacity`` iterates
    after ``m``'s entries were put into it in ``m``'s order."""
    n = len(m)
    if n < 2 or hasher is None:
        return m
    cap = initial_capacity
    while n > int(cap * 0.75):  # resized whenever size exceeds the 0.75 load factor
        cap *= 2
    mask = cap - 1

    def bucket(item: tuple[Any, Any]) -> int:
        k = item[0]
        if k is None:
            return 0
        h = hasher(k)
        return (h ^ (h >> 16)) & mask
    return dict(sorted(m.items(), key=bucket))




# ------------------------------------------------------------------------- element ordering
def _double_key(x: float) -> tuple[int, float, float]:
    """Double.compareTo: NaN above everything, -0.0 below 0.0."""
    if x != x:
        return (1, 0.0, 0.0)
    return (0, x, math.copysign(1.0, x))


_SIGNED = bytes((b + 128) % 256 for b in range(256))


def _bytes_key(b: bytes) -> bytes:
    """ByteBuffer.compareTo compares bytes as signed values."""
    return b.translate(_SIGNED)


def _utf16_key(s: str) -> bytes:
    return s.encode("utf-16-be", "surrogatepass")


def _sort_strings(items: list[str], reverse: bool = False) -> list[str]:
    """String.compareTo order: by UTF-16 code unit, which differs from code point order only
    when characters outside the BMP meet ones above U+E000."""
    if all(map(str.isascii, items)):
        return sorted(items, reverse=reverse)
    return sorted(items, key=_utf16_key, reverse=reverse)


def _item_type(arg_types: list[SqlType], i: int = 0) -> SqlType:
    a = arg_types[i]
    return a.item if isinstance(a, ArrayType) else t.NULL


def _is_hashable(item: SqlType) -> bool:
    return item.base not in (BaseType.ARRAY, BaseType.MAP, BaseType.STRUCT)


def _sort_key(item: SqlType) -> Callable[[Any], Any] | None | str:
    """The key giving Java's natural order for ``item`` values: None for Python's own
    order, 'string' for strings, or an error message for types Java cannot compare."""
    base = item.base
    if base is BaseType.DOUBLE:
        return _double_key
    if base is BaseType.BYTES:
        return _bytes_key
    if base is BaseType.STRING:
        return "string"
    if base in (BaseType.ARRAY, BaseType.MAP, BaseType.STRUCT):
        return f"Cannot compare values of type {item}"
    return None


def _sorter(item: SqlType) -> Callable[[list[Any], bool], list[Any]]:
    """A function sorting non-null ``item`` values in Java's natural (or reverse) order."""
    key = _sort_key(item)
    if isinstance(key, str):
        if key == "string":
            return _sort_strings
        message = key

        def fail(items: list[Any], reverse: bool = False) -> list[Any]:
            raise FunctionError(message)
        return fail
    if key is None:
        return lambda items, reverse=False: sorted(items, reverse=reverse)
    k = key
    return lambda items, reverse=False: sorted(items, key=k, reverse=reverse)


# ----------------------------------------------------------------------------- array basics
@udf("ARRAY_LENGTH", "INTEGER", [("array", "ARRAY<T>")])
def array_length(array: list[Any] | None) -> int | None:
    """Returns the length of an array; NULL for a NULL array."""
    return None if array is None else len(array)


@udf("ARRAY_CONTAINS", "BOOLEAN", [("array", "ARRAY<T>"), ("val", "T")])
def array_contains(array: list[Any] | None, val: Any) -> bool:
    """Returns whether an array contains a value (which may be NULL); false for a NULL
    array."""
    return array is not None and val in array


@udf("ARRAY_REMOVE", "ARRAY<T>", [("array", "ARRAY<T>"), ("victim", "T")])
def array_remove(array: list[Any] | None, victim: Any) -> list[Any] | None:
    """Removes all elements equal to the given value (NULL removes NULLs)."""
    if array is None:
        return None
    if victim is None:
        return [x for x in array if x is not None]
    return [x for x in array if x is None or x != victim]


@udf("ARRAY_CONCAT", "ARRAY<T>", [("left", "ARRAY<T>"), ("right", "ARRAY<T>")])
def array_concat(left: list[Any] | None, right: list[Any] | None) -> list[Any] | None:
    """Concatenates two arrays, keeping duplicates; a NULL array counts as empty, and two
    NULL arrays give NULL."""
    if left is None:
        return None if right is None else list(right)
    if right is None:
        return list(left)
    return left + right


@udf("SLICE", "ARRAY<T>", [("array", "ARRAY<T>"), ("from", "INTEGER"), ("to", "INTEGER")])
def slice_(array: list[Any] | None, start: int | None, end: int | None) -> list[Any] | None:
    """Returns the elements from position ``from`` to ``to`` inclusive (1-based); NULL bounds
    mean the array's ends; out-of-range bounds give NULL."""
    if array is None:
        return None
    lo = 0 if start is None else start - 1
    hi = len(array) if end is None else end
    if lo < 0 or hi > len(array) or lo > hi:
        return None
    return array[lo:hi]


# ------------------------------------------------------------------------ set-like functions
def _distinct_hashed(items: list[Any]) -> list[Any]:
    return list(dict.fromkeys(items))


def _distinct_scanned(items: list[Any]) -> list[Any]:
    out: list[Any] = []
    for x in items:
        if x not in out:
            out.append(x)
    return out


def _distinct_for(arg_types: list[SqlType]) -> Callable[[list[Any]], list[Any]]:
    return _distinct_hashed if _is_hashable(_item_type(arg_types)) else _distinct_scanned


@udf("ARRAY_DISTINCT", "ARRAY<T>", [("array", "ARRAY<T>")], factory=True)
def array_distinct(arg_types: list[SqlType], return_type: SqlType) -> _Impl:
    """Returns an array of the distinct values of the input, in order of first occurrence."""
    distinct = _distinct_for(arg_types)

    def impl(array: list[Any] | None) -> list[Any] | None:
        return None if array is None else distinct(array)
    return impl


@udf("ARRAY_UNION", "ARRAY<T>", [("left", "ARRAY<T>"), ("right", "ARRAY<T>")], factory=True)
def array_union(arg_types: list[SqlType], return_type: SqlType) -> _Impl:
    """Returns the distinct elements of both arrays, in order of first occurrence; NULL if
    either array is NULL."""
    distinct = _distinct_for(arg_types)

    def impl(left: list[Any] | None, right: list[Any] | None) -> list[Any] | None:
        if left is None or right is None:
            return None
        return distinct(left + right)
    return impl


@udf("ARRAY_INTERSECT", "ARRAY<T>", [("left", "ARRAY<T>"), ("right", "ARRAY<T>")], factory=True)
def array_intersect(arg_types: list[SqlType], return_type: SqlType) -> _Impl:
    """Returns the distinct elements of the left array that are also in the right one; NULL
    if either array is NULL."""
    hashed = _is_hashable(_item_type(arg_types))
    distinct = _distinct_for(arg_types)

    def impl(left: list[Any] | None, right: list[Any] | None) -> list[Any] | None:
        if left is None or right is None:
            return None
        keep = set(right) if hashed else right
        return distinct([x for x in left if x in keep])
    return impl


@udf("ARRAY_EXCEPT", "ARRAY<T>", [("left", "ARRAY<T>"), ("right", "ARRAY<T>")], factory=True)
def array_except(arg_types: list[SqlType], return_type: SqlType) -> _Impl:
    """Returns the distinct elements of the left array that are not in the right one; NULL
    if either array is NULL."""
    hashed = _is_hashable(_item_type(arg_types))
    distinct = _distinct_for(arg_types)

    def impl(left: list[Any] | None, right: list[Any] | None) -> list[Any] | None:
        if left is None or right is None:
            return None
        drop = set(right) if hashed else right
        return distinct([x for x in left if x not in drop])
    return impl


# ------------------------------------------------------------------------------- ordering
def _extreme(arg_types: list[SqlType], want_max: bool) -> _Impl:
    item = _item_type(arg_types)
    key = _sort_key(item)
    pick = max if want_max else min
    if key == "string":
        def strings(array: list[Any] | None) -> Any:
            if array is None:
                return None
            values = [x for x in array if x is not None]
            if not values:
                return None
            return pick(values) if all(map(str.isascii, values)) else pick(values, key=_utf16_key)
        return strings
    if isinstance(key, str):
        message = key

        def fail(array: list[Any] | None) -> Any:
            if not array:
                return None
            raise FunctionError(message)
        return fail

    def impl(array: list[Any] | None) -> Any:
        if array is None:
            return None
        values = [x for x in array if x is not None]
        if not values:
            return None
        return pick(values, key=key) if key is not None else pick(values)
    return impl


@udf("ARRAY_MAX", "T", [("array", "ARRAY<T>")], factory=True)
def array_max(arg_types: list[SqlType], return_type: SqlType) -> _Impl:
    """Returns the maximum value of an array, ignoring NULLs; NULL for an empty or NULL
    array. Strings compare case-sensitively, booleans false < true."""
    return _extreme(arg_types, True)


@udf("ARRAY_MIN", "T", [("array", "ARRAY<T>")], factory=True)
def array_min(arg_types: list[SqlType], return_type: SqlType) -> _Impl:
    """Returns the minimum value of an array, ignoring NULLs; NULL for an empty or NULL
    array. Strings compare case-sensitively, booleans false < true."""
    return _extreme(arg_types, False)


_ASC = frozenset({"ASC", "ASCENDING"})
_DESC = frozenset({"DESC", "DESCENDING"})


def _array_sort_impl(arg_types: list[SqlType]) -> Callable[[list[Any] | None, str | None], Any]:
    sort = _sorter(_item_type(arg_types))

    def impl(array: list[Any] | None, direction: str | None = "ASC") -> list[Any] | None:
        if array is None or direction is None:
            return None
        d = direction.upper()
        if d in _ASC:
            reverse = False
        elif d in _DESC:
            reverse = True
        else:
            return None
        values = [x for x in array if x is not None]
        nulls = len(array) - len(values)
        out = sort(values, reverse) if values else values
        return out + [None] * nulls if nulls else out
    return impl


@udf("ARRAY_SORT", "ARRAY<T>", [("array", "ARRAY<T>")], factory=True)
def array_sort(arg_types: list[SqlType], return_type: SqlType) -> _Impl:
    """Sorts an array in ascending order, NULLs last."""
    impl = _array_sort_impl(arg_types)
    return lambda array: impl(array, "ASC")


@udf("ARRAY_SORT", "ARRAY<T>", [("array", "ARRAY<T>"), ("direction", "STRING")], factory=True)
def array_sort_direction(arg_types: list[SqlType], return_type: SqlType) -> _Impl:
    """Sorts an array in the given direction (ASC/ASCENDING or DESC/DESCENDING, any case),
    NULLs last; an unknown direction gives NULL."""
    return _array_sort_impl(arg_types)


# ------------------------------------------------------------------------------ array_join
_JOIN_FORMATTERS: dict[BaseType, Callable[[Any], str]] = {
    BaseType.BOOLEAN: lambda v: "true" if v else "false",
    BaseType.INTEGER: str,
    BaseType.BIGINT: str,
    BaseType.DOUBLE: java_double_str,
    BaseType.DECIMAL: str,  # Decimal's to-scientific-string is BigDecimal.toString
    BaseType.STRING: str,
}


def _array_join_impl(arg_types: list[SqlType]) -> Callable[[list[Any] | None, str | None], Any]:
    item = _item_type(arg_types)
    fmt = _JOIN_FORMATTERS.get(item.base)
    if fmt is None and not item.is_null:
        message = f"error: hit element of type {item} which is currently not supported"

        def fail(array: list[Any] | None, delimiter: str | None) -> str | None:
            if array is None:
                return None
            if any(x is not None for x in array):
                raise FunctionError(message)
            return (delimiter or "").join(["null"] * len(array))
        return fail
    f = fmt or str

    def impl(array: list[Any] | None, delimiter: str | None) -> str | None:
        if array is None:
            return None
        return (delimiter or "").join(["null" if x is None else f(x) for x in array])
    return impl


@udf("ARRAY_JOIN", "STRING", [("array", "ARRAY<T>")], factory=True)
def array_join(arg_types: list[SqlType], return_type: SqlType) -> _Impl:
    """Creates a flat string representation of the elements of a primitive array, separated
    by commas; NULL elements print as 'null'."""
    impl = _array_join_impl(arg_types)
    return lambda array: impl(array, ",")


@udf("ARRAY_JOIN", "STRING", [("array", "ARRAY<T>"), ("delimiter", "STRING")], factory=True)
def array_join_delimiter(arg_types: list[SqlType], return_type: SqlType) -> _Impl:
    """Creates a flat string representation of the elements of a primitive array, separated
    by the given delimiter (a NULL delimiter is empty)."""
    return _array_join_impl(arg_types)


# ----------------------------------------------------------------------------------- maps
@udf("AS_MAP", "MAP<STRING, T>", [("keys", "ARRAY<STRING>"), ("values", "ARRAY<T>")])
def as_map(keys: list[str | None] | None, values: list[Any] | None) -> dict[Any, Any] | None:
    """Constructs a map from a list of keys and a list of values; a key without a value maps
    to NULL and extra values are ignored."""
    if keys is None or values is None:
        return None
    n = len(values)
    out = {k: (values[i] if i < n else None) for i, k in enumerate(keys)}
    return java_hash_order(out, java_string_hash, table_size_for(len(keys)))


@udf("MAP_KEYS", "ARRAY<K>", [("map", "MAP<K, V>")])
def map_keys(m: dict[Any, Any] | None) -> list[Any] | None:
    """Returns an array of the keys of a map."""
    return None if m is None else list(m)


@udf("MAP_VALUES", "ARRAY<V>", [("map", "MAP<K, V>")])
def map_values(m: dict[Any, Any] | None) -> list[Any] | None:
    """Returns an array of the values of a map."""
    return None if m is None else list(m.values())


@udf("MAP_UNION", "MAP<K, V>", [("map1", "MAP<K, V>"), ("map2", "MAP<K, V>")], factory=True)
def map_union(arg_types: list[SqlType], return_type: SqlType) -> _Impl:
    """Returns a new map with the entries of both maps; on a key in both, the second map's
    value wins. NULL maps are ignored; two NULL maps give NULL."""
    hasher = java_key_hasher(return_type.key) if isinstance(return_type, MapType) else None

    def impl(a: dict[Any, Any] | None, b: dict[Any, Any] | None) -> dict[Any, Any] | None:
        if a is None and b is None:
            return None
        first = a if a else b or {}
        # new HashMap<>() then putAll: the first non-empty putAll sizes the table
        cap = table_size_for(len(first) / 0.75 + 1) if first else 16
        return java_hash_order({**(a or {}), **(b or {})}, hasher, cap)
    return impl


def _entries_type(arg_types: list[SqlType]) -> SqlType:
    m = arg_types[0]
    key, value = (m.key, m.value) if isinstance(m, MapType) else (t.STRING, t.STRING)
    return ArrayType(StructType((Field("K", key), Field("V", value))))


@udf("ENTRIES", _entries_type, [("map", "MAP<K, V>"), ("sorted", "BOOLEAN")], factory=True)
def entries(arg_types: list[SqlType], return_type: SqlType) -> _Impl:
    """Constructs an array of structs with fields K and V from the entries of a map,
    sorted by key when ``sorted`` is true."""
    m = arg_types[0]
    key_type = m.key if isinstance(m, MapType) else t.STRING
    sort = _sorter(key_type)

    def impl(mp: dict[Any, Any] | None, by_key: bool | None) -> list[dict[str, Any]] | None:
        if mp is None:
            return None
        if by_key is None:  # a primitive boolean parameter in ksqlDB
            raise FunctionError("sorted must not be null")
        if not by_key:
            return [{"K": k, "V": v} for k, v in mp.items()]
        keys = list(mp)
        if None in keys:
            raise FunctionError("Cannot sort a map with a NULL key")
        ordered = sort(keys, False)
        return [{"K": k, "V": mp[k]} for k in ordered]
    return impl

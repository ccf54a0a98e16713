"""ksqlDB's collection-building and positional aggregate functions (UDAFs): COLLECT_LIST,
COLLECT_SET, EARLIEST_BY_OFFSET, LATEST_BY_OFFSET, TOPK, TOPKDISTINCT, HISTOGRAM and ATTR.

As in ``aggregates``, every factory specialises its Aggregator once for the argument types.
Accumulators that are lists are mutated in place by ``add`` (the engine keeps one per group);
``result`` and ``to_state`` always hand out copies, so an emitted row or a state snapshot never
changes under a later ``add``.

Query properties read: ``ksql.functions.collect_list.limit`` and
``ksql.functions.collect_set.limit`` (default 1000; a negative value means no limit), the most
values COLLECT_LIST / COLLECT_SET keep; later values are silently dropped, as in ksqlDB.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable, Mapping

from streamsql import types as t
from streamsql.errors import KsqlStatementException
from streamsql.functions.aggregates import (_SIGNED, codec_or_identity, config_int, list_codec,
                                            overloads, value_codec)
from streamsql.functions.registry import Aggregator, udaf
from streamsql.types import ArrayType, BaseType, Field, MapType, SqlType, StructType

COLLECT_LIST_LIMIT = "ksql.functions.collect_list.limit"
COLLECT_SET_LIMIT = "ksql.functions.collect_set.limit"
DEFAULT_COLLECT_LIMIT = 1000
_NO_LIMIT = 2**31 - 1


def _collect_limit(config: Mapping[str, Any] | None, key: str) -> int:
    limit = config_int(config, key, DEFAULT_COLLECT_LIMIT)
    return _NO_LIMIT if limit < 0 else limit


# ========================================================================== COLLECT_LIST
class _CollectList(Aggregator):
    """COLLECT_LIST: every value, NULLs included, in arrival order, up to the limit. Undo
    removes the last occurrence of the value (ksqlDB cannot know which one it was either)."""

    def __init__(self, type_: SqlType, limit: int) -> None:
        self.intermediate_type = ArrayType(type_)
        self._limit = limit
        self.to_state, self.from_state = list_codec(type_)  # type: ignore[method-assign]

    def initialize(self) -> list[Any]:
        return []

    def add(self, acc: list[Any], v: Any) -> list[Any]:
        if len(acc) < self._limit:
            acc.append(v)
        return acc

    def undo(self, acc: list[Any], v: Any) -> list[Any]:
        for i in range(len(acc) - 1, -1, -1):
            if acc[i] == v:
                del acc[i]
                break
        return acc

    def merge(self, a: list[Any], b: list[Any]) -> list[Any]:
        a.extend(b[:max(0, self._limit - len(a))])
        return a

    def result(self, acc: list[Any]) -> list[Any]:
        return list(acc)


@udaf("COLLECT_LIST", "ARRAY<T>", [("col", "T")])
def collect_list(arg_types: list[SqlType], return_type: SqlType, init_args: tuple[Any, ...],
                 config: Mapping[str, Any] | None = None) -> Aggregator:
    """Gathers all the values of a column, NULLs included, into an array (at most
    ksql.functions.collect_list.limit of them, 1000 by default)."""
    return _CollectList(arg_types[0], _collect_limit(config, COLLECT_LIST_LIMIT))


# =========================================================================== COLLECT_SET
class _CollectSet(_CollectList):
    """COLLECT_SET: the distinct values, NULL included, in order of first arrival."""

    def add(self, acc: list[Any], v: Any) -> list[Any]:
        if len(acc) < self._limit and v not in acc:
            acc.append(v)
        return acc

    def undo(self, acc: list[Any], v: Any) -> list[Any]:
        if v in acc:
            acc.remove(v)
        return acc

    def merge(self, a: list[Any], b: list[Any]) -> list[Any]:
        for v in b:
            if len(a) >= self._limit:
                break
            if v not in a:
                a.append(v)
        return a


@udaf("COLLECT_SET", "ARRAY<T>", [("col", "T")])
def collect_set(arg_types: list[SqlType], return_type: SqlType, init_args: tuple[Any, ...],
                config: Mapping[str, Any] | None = None) -> Aggregator:
    """Gathers the distinct values of a column, NULL included, into an array (at most
    ksql.functions.collect_set.limit of them, 1000 by default)."""
    return _CollectSet(arg_types[0], _collect_limit(config, COLLECT_SET_LIMIT))


# ============================================================ EARLIEST / LATEST_BY_OFFSET
class _ByOffset(Aggregator):
    """The value of the first (earliest) or last (latest) record. The accumulator is
    [sequence, value] or None, like ksqlDB's STRUCT<SEQ, VAL>: merging two session windows
    keeps the entry with the lower (higher) sequence number.

    Sequence numbers come from a per-query counter that starts at the wall clock in
    nanoseconds and never falls behind a number read back by ``from_state``, so entries
    written before a restart still order before new ones.
    """

    supports_undo = False

    def __init__(self, type_: SqlType, ignore_nulls: bool, latest: bool) -> None:
        self.intermediate_type = StructType((Field("SEQ", t.BIGINT), Field("VAL", type_)))
        self._ignore_nulls = ignore_nulls
        self._seq = time.time_ns()
        self._enc, self._dec = codec_or_identity(type_)
        if latest:
            self.add = self._add_latest  # type: ignore[method-assign]
            self.merge = self._merge_latest  # type: ignore[method-assign]

    def initialize(self) -> list[Any] | None:
        return None

    def add(self, acc: list[Any] | None, v: Any) -> list[Any] | None:
        if acc is not None or (v is None and self._ignore_nulls):
            return acc
        self._seq += 1
        return [self._seq, v]

    def _add_latest(self, acc: list[Any] | None, v: Any) -> list[Any] | None:
        if v is None and self._ignore_nulls:
            return acc
        self._seq += 1
        return [self._seq, v]

    def merge(self, a: list[Any] | None, b: list[Any] | None) -> list[Any] | None:
        if a is None:
            return b
        if b is None:
            return a
        return a if a[0] < b[0] else b

    def _merge_latest(self, a: list[Any] | None, b: list[Any] | None) -> list[Any] | None:
        if a is None:
            return b
        if b is None:
            return a
        return a if a[0] > b[0] else b

    def result(self, acc: list[Any] | None) -> Any:
        return None if acc is None else acc[1]

    def to_state(self, acc: list[Any] | None) -> Any:
        return None if acc is None else [acc[0], self._enc(acc[1])]

    def from_state(self, data: Any) -> list[Any] | None:
        if data is None:
            return None
        if data[0] > self._seq:
            self._seq = data[0]
        return [data[0], self._dec(data[1])]


class _ByOffsetN(Aggregator):
    """The values of the first (earliest) or last (latest) n records, oldest first, as a
    list of [sequence, value] (ksqlDB's ARRAY<STRUCT<SEQ, VAL>>)."""

    supports_undo = False

    def __init__(self, type_: SqlType, n: int, ignore_nulls: bool, latest: bool) -> None:
        self.intermediate_type = ArrayType(StructType((Field("SEQ", t.BIGINT), Field("VAL", type_))))
        self._n = n
        self._ignore_nulls = ignore_nulls
        self._latest = latest
        self._seq = time.time_ns()
        self._enc, self._dec = codec_or_identity(type_)
        if latest:
            self.add = self._add_latest  # type: ignore[method-assign]

    def initialize(self) -> list[list[Any]]:
        return []

    def add(self, acc: list[list[Any]], v: Any) -> list[list[Any]]:
        if len(acc) >= self._n or (v is None and self._ignore_nulls):
            return acc
        self._seq += 1
        acc.append([self._seq, v])
        return acc

    def _add_latest(self, acc: list[list[Any]], v: Any) -> list[list[Any]]:
        if v is None and self._ignore_nulls:
            return acc
        self._seq += 1
        acc.append([self._seq, v])
        if len(acc) > self._n:
            del acc[0]
        return acc

    def merge(self, a: list[list[Any]], b: list[list[Any]]) -> list[list[Any]]:
        merged = sorted(a + b, key=_first)
        return merged[-self._n:] if self._latest else merged[:self._n]

    def result(self, acc: list[list[Any]]) -> list[Any]:
        return [e[1] for e in acc]

    def to_state(self, acc: list[list[Any]]) -> list[list[Any]]:
        enc = self._enc
        return [[e[0], enc(e[1])] for e in acc]

    def from_state(self, data: list[list[Any]]) -> list[list[Any]]:
        dec = self._dec
        if data and data[-1][0] > self._seq:
            self._seq = max(e[0] for e in data)
        return [[e[0], dec(e[1])] for e in data]


def _first(entry: list[Any]) -> Any:
    return entry[0]


def _by_offset(name: str, arg_types: list[SqlType], init_args: tuple[Any, ...],
               latest: bool) -> Aggregator:
    type_ = arg_types[0]
    n: int | None = None
    ignore_nulls = True
    params = arg_types[len(arg_types) - len(init_args):]
    for p, value in zip(params, init_args):
        if p.base is BaseType.BOOLEAN:
            ignore_nulls = bool(value)
        else:
            n = value
    if n is None:
        return _ByOffset(type_, ignore_nulls, latest)
    if n < 1:
        raise KsqlStatementException(f"{'latestN' if latest else 'earliestN'} must be 1 or greater")
    return _ByOffsetN(type_, n, ignore_nulls, latest)


def _array_of_first(types: list[SqlType]) -> SqlType:
    return ArrayType(types[0])


@udaf("EARLIEST_BY_OFFSET", _array_of_first,
      [("col", "T"), ("earliestN", "INTEGER"), ("ignoreNulls", "BOOLEAN")], init_params=2)
@udaf("EARLIEST_BY_OFFSET", _array_of_first, [("col", "T"), ("earliestN", "INTEGER")], init_params=1)
@udaf("EARLIEST_BY_OFFSET", "T", [("col", "T"), ("ignoreNulls", "BOOLEAN")], init_params=1)
@udaf("EARLIEST_BY_OFFSET", "T", [("col", "T")])
def earliest_by_offset(arg_types: list[SqlType], return_type: SqlType,
                       init_args: tuple[Any, ...]) -> Aggregator:
    """The value of the earliest record (or an array of the earliest N); NULLs are ignored
    unless ignoreNulls is false."""
    return _by_offset("EARLIEST_BY_OFFSET", arg_types, init_args, latest=False)


@udaf("LATEST_BY_OFFSET", _array_of_first,
      [("col", "T"), ("latestN", "INTEGER"), ("ignoreNulls", "BOOLEAN")], init_params=2)
@udaf("LATEST_BY_OFFSET", _array_of_first, [("col", "T"), ("latestN", "INTEGER")], init_params=1)
@udaf("LATEST_BY_OFFSET", "T", [("col", "T"), ("ignoreNulls", "BOOLEAN")], init_params=1)
@udaf("LATEST_BY_OFFSET", "T", [("col", "T")])
def latest_by_offset(arg_types: list[SqlType], return_type: SqlType,
                     init_args: tuple[Any, ...]) -> Aggregator:
    """The value of the latest record (or an array of the latest N, oldest first); NULLs are
    ignored unless ignoreNulls is false."""
    return _by_offset("LATEST_BY_OFFSET", arg_types, init_args, latest=True)


# ============================================================================ TOPK(DISTINCT)
_TOPK_TYPES = ["INTEGER", "BIGINT", "DOUBLE", "STRING", "DECIMAL", "BYTES", "DATE", "TIME", "TIMESTAMP"]


def _double_key(x: float) -> tuple[bool, float, float]:
    # Double.compareTo's order: -0.0 < 0.0, NaN above everything (and equal to itself).
    return x != x, x, math.copysign(1.0, x)


def _bytes_key(b: bytes) -> bytes:
    return b.translate(_SIGNED)


def _order_key(type_: SqlType) -> Callable[[Any], Any] | None:
    """A sort key giving Java's order where Python's differs, else None."""
    if type_.base is BaseType.DOUBLE:
        return _double_key
    if type_.base is BaseType.BYTES:
        return _bytes_key
    return None


class _TopK(Aggregator):
    """TOPK(col, k): the k largest non-NULL values, largest first; among equal values the
    earlier one comes first (ksqlDB's stable sort)."""

    supports_undo = False

    def __init__(self, type_: SqlType, k: int) -> None:
        self.intermediate_type = ArrayType(type_)
        self._k = k
        self.to_state, self.from_state = list_codec(type_)  # type: ignore[method-assign]

    def initialize(self) -> list[Any]:
        return []

    def add(self, acc: list[Any], v: Any) -> list[Any]:
        if v is None:
            return acc
        n = len(acc)
        if n >= self._k and (n == 0 or not v > acc[-1]):
            return acc
        i = 0
        while i < n and not acc[i] < v:
            i += 1
        acc.insert(i, v)
        if n >= self._k:
            acc.pop()
        return acc

    def merge(self, a: list[Any], b: list[Any]) -> list[Any]:
        return sorted(a + b, reverse=True)[:self._k]

    def result(self, acc: list[Any]) -> list[Any]:
        return list(acc)


class _TopKKeyed(_TopK):
    """TOPK comparing by a key: the sort column of struct entries, Java's order of doubles
    or of signed bytes."""

    def __init__(self, type_: SqlType, k: int, key: Callable[[Any], Any]) -> None:
        super().__init__(type_, k)
        self._key = key

    def add(self, acc: list[Any], v: Any) -> list[Any]:
        if v is None:
            return acc
        key = self._key
        kv = key(v)
        n = len(acc)
        if n >= self._k and (n == 0 or not kv > key(acc[-1])):
            return acc
        i = 0
        while i < n and not key(acc[i]) < kv:
            i += 1
        acc.insert(i, v)
        if n >= self._k:
            acc.pop()
        return acc

    def merge(self, a: list[Any], b: list[Any]) -> list[Any]:
        return sorted(a + b, key=self._key, reverse=True)[:self._k]


class _TopKStruct(_TopKKeyed):
    """TOPK(col, other..., k): entries {sort_col, col0, col1, ...} ordered by sort_col."""

    def __init__(self, type_: StructType, k: int, key: Callable[[Any], Any]) -> None:
        super().__init__(type_, k, key)
        self._names = [f.name for f in type_.fields]

    def add(self, acc: list[Any], v: Any, *others: Any) -> list[Any]:  # type: ignore[override]
        if v is None:
            return acc
        return super().add(acc, dict(zip(self._names, (v, *others))))


def _topk_return(types: list[SqlType]) -> SqlType:
    if len(types) <= 2:
        return ArrayType(types[0])
    return ArrayType(_topk_struct(types[:-1]))


def _topk_struct(types: list[SqlType]) -> StructType:
    return StructType((Field("sort_col", types[0]),
                       *(Field(f"col{i}", ty) for i, ty in enumerate(types[1:]))))


def _topk_k(init_args: tuple[Any, ...]) -> int:
    k = init_args[-1]
    return 0 if k is None else max(int(k), 0)


def _topk_signatures(fn: Callable[..., Any]) -> Callable[..., Any]:
    for ty in _TOPK_TYPES:
        fn = udaf("TOPK", _topk_return, [("col", ty), ("otherCols", "ANY"), ("k", "INTEGER")],
                  init_params=1, variadic=True)(fn)
    return fn


@_topk_signatures
def topk(arg_types: list[SqlType], return_type: SqlType, init_args: tuple[Any, ...]) -> Aggregator:
    """The k largest values of a column, largest first. With other columns,
    TOPK(col, other..., k) returns structs {sort_col, col0, ...} ordered by col."""
    type_ = arg_types[0]
    k = _topk_k(init_args)
    key = _order_key(type_)
    if len(arg_types) > 2:
        struct_type = _topk_struct(arg_types[:-1])
        sort_key = (lambda e: key(e["sort_col"])) if key else (lambda e: e["sort_col"])
        return _TopKStruct(struct_type, k, sort_key)
    return _TopKKeyed(type_, k, key) if key else _TopK(type_, k)


class _Distinct:
    """Makes a TOPK aggregator keep each value once (TOPKDISTINCT)."""

    def add(self, acc: list[Any], v: Any) -> list[Any]:
        if v is None or v in acc:
            return acc
        return super().add(acc, v)  # type: ignore[misc]

    def merge(self, a: list[Any], b: list[Any]) -> list[Any]:
        return super().merge(a, [v for v in b if v not in a])  # type: ignore[misc]


class _TopKDistinct(_Distinct, _TopK):
    """TOPKDISTINCT: the k largest distinct non-NULL values, largest first."""


class _TopKDistinctKeyed(_Distinct, _TopKKeyed):
    """TOPKDISTINCT of DOUBLE or BYTES (Java's order)."""


@overloads("TOPKDISTINCT", _TOPK_TYPES, _array_of_first, init_params=1, extra=(("k", "INTEGER"),))
def topk_distinct(arg_types: list[SqlType], return_type: SqlType, init_args: tuple[Any, ...]) -> Aggregator:
    """The k largest distinct values of a column, largest first."""
    type_ = arg_types[0]
    k = _topk_k(init_args)
    key = _order_key(type_)
    return _TopKDistinctKeyed(type_, k, key) if key else _TopKDistinct(type_, k)


# ============================================================================= HISTOGRAM
HISTOGRAM_LIMIT = 1000


class _Histogram(Aggregator):
    """HISTOGRAM: value -> number of occurrences, for at most 1000 distinct values (later
    new values are ignored). NULLs are not counted."""

    def __init__(self, type_: SqlType) -> None:
        self.intermediate_type = MapType(type_, t.BIGINT)
        codec = value_codec(type_)
        if type_.base is not BaseType.STRING or codec is not None:
            enc, dec = codec or (_same, _same)
            # JSON object keys are strings: other keys travel as [key, count] pairs.
            self.to_state = lambda acc: [[enc(k), c] for k, c in acc.items()]  # type: ignore[method-assign]
            self.from_state = lambda data: {dec(k): c for k, c in data}  # type: ignore[method-assign]

    def initialize(self) -> dict[Any, int]:
        return {}

    def add(self, acc: dict[Any, int], v: Any) -> dict[Any, int]:
        if v is None:
            return acc
        c = acc.get(v)
        if c is not None:
            acc[v] = c + 1
        elif len(acc) < HISTOGRAM_LIMIT:
            acc[v] = 1
        return acc

    def undo(self, acc: dict[Any, int], v: Any) -> dict[Any, int]:
        c = acc.get(v)
        if c is not None:
            if c <= 1:
                del acc[v]
            else:
                acc[v] = c - 1
        return acc

    def merge(self, a: dict[Any, int], b: dict[Any, int]) -> dict[Any, int]:
        for v, c in b.items():
            old = a.get(v)
            if old is not None:
                a[v] = old + c
            elif len(a) < HISTOGRAM_LIMIT:
                a[v] = c
        return a

    def result(self, acc: dict[Any, int]) -> dict[Any, int]:
        return dict(acc)

    def to_state(self, acc: dict[Any, int]) -> Any:
        return dict(acc)

    def from_state(self, data: Any) -> dict[Any, int]:
        return dict(data)


def _same(v: Any) -> Any:
    return v


@overloads("HISTOGRAM", ["STRING", "BOOLEAN", "INTEGER", "BIGINT", "DOUBLE", "DECIMAL"],
           lambda types: MapType(types[0], t.BIGINT))
def histogram(arg_types: list[SqlType], return_type: SqlType, init_args: tuple[Any, ...]) -> Aggregator:
    """A map from each distinct value of a column to how many times it occurs (at most 1000
    distinct values are counted)."""
    return _Histogram(arg_types[0])


# ================================================================================== ATTR
class _Attr(Aggregator):
    """ATTR: the value when every value of the group is the same, else NULL. Keeps
    [value, count] for each distinct value, NULL included (a NULL among other values makes
    the result NULL), so undo can drop values again."""

    def __init__(self, type_: SqlType) -> None:
        self.intermediate_type = ArrayType(StructType((Field("VALUE", type_), Field("COUNT", t.INTEGER))))
        self._enc, self._dec = codec_or_identity(type_)

    def initialize(self) -> list[list[Any]]:
        return []

    def add(self, acc: list[list[Any]], v: Any) -> list[list[Any]]:
        for entry in acc:
            if entry[0] == v:
                entry[1] += 1
                return acc
        acc.append([v, 1])
        return acc

    def undo(self, acc: list[list[Any]], v: Any) -> list[list[Any]]:
        for i, entry in enumerate(acc):
            if entry[0] == v:
                if entry[1] <= 1:
                    del acc[i]
                else:
                    entry[1] -= 1
                break
        return acc

    def merge(self, a: list[list[Any]], b: list[list[Any]]) -> list[list[Any]]:
        for v, c in b:
            for entry in a:
                if entry[0] == v:
                    entry[1] += c
                    break
            else:
                a.append([v, c])
        return a

    def result(self, acc: list[list[Any]]) -> Any:
        return acc[0][0] if len(acc) == 1 else None

    def to_state(self, acc: list[list[Any]]) -> list[list[Any]]:
        enc = self._enc
        return [[enc(v), c] for v, c in acc]

    def from_state(self, data: list[list[Any]]) -> list[list[Any]]:
        dec = self._dec
        return [[dec(v), c] for v, c in data]


@udaf("ATTR", "T", [("col", "T")])
def attr(arg_types: list[SqlType], return_type: SqlType, init_args: tuple[Any, ...]) -> Aggregator:
    """The value of a column if it is the same in every record of the group, else NULL."""
    return _Attr(arg_types[0])

"""The aggregate functions (UDAFs), driven directly through the registry with the inputs and
expected outputs of ksqlDB's QTT cases (count.json, sum.json, average-udaf.json, ...).

Every accumulator here is written to JSON and read back after each record, as a persistent
state store would, so each case also checks the ``to_state`` / ``from_state`` round trip.
"""
from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any, Iterable

import orjson
import pytest

from streamsql import types as t
from streamsql.errors import KsqlStatementException
from streamsql.functions import default_registry
from streamsql.functions import test_registry as qtt_registry
from streamsql.functions.aggregates import AggregateFunctionError
from streamsql.functions.registry import Aggregator, Resolved
from streamsql.types import ArrayType, DecimalType, Field, MapType, SqlType, StructType

D = Decimal


def resolve(name: str, *arg_types: SqlType, test_udafs: bool = False) -> Resolved:
    reg = qtt_registry() if test_udafs else default_registry()
    return reg.resolve(name, list(arg_types), kind="aggregate")


def make(name: str, *arg_types: SqlType, init: Iterable[Any] = (), config: dict | None = None,
         test_udafs: bool = False) -> Aggregator:
    """The Aggregator a query would use for ``name(args..., init...)``."""
    res = resolve(name, *arg_types, test_udafs=test_udafs)
    if config is None:
        return res.signature.impl(res.param_types, res.return_type, tuple(init))
    return res.aggregator(tuple(init), config)


def state_json(agg: Aggregator, acc: Any) -> str:
    """acc's state as strict JSON text; the state stores' orjson must read it the same way
    (orjson rejects non-string keys and would write NaN as null)."""
    data = agg.to_state(acc)
    text = json.dumps(data, allow_nan=False)
    assert orjson.loads(orjson.dumps(data)) == json.loads(text)
    return text


def through_json(agg: Aggregator, acc: Any) -> Any:
    """acc after a trip through strict JSON, as a state store keeps it."""
    return agg.from_state(json.loads(state_json(agg, acc)))


class Groups:
    """Accumulators by group key, stored as JSON between records."""

    def __init__(self, agg: Aggregator) -> None:
        self.agg = agg
        self.state: dict[Any, str] = {}

    def _load(self, key: Any) -> Any:
        if key not in self.state:
            return self.agg.initialize()
        return self.agg.from_state(json.loads(self.state[key]))

    def _store(self, key: Any, acc: Any) -> Any:
        self.state[key] = state_json(self.agg, acc)
        return self.agg.result(acc)

    def add(self, key: Any, *values: Any) -> Any:
        return self._store(key, self.agg.add(self._load(key), *values))

    def undo(self, key: Any, *values: Any) -> Any:
        return self._store(key, self.agg.undo(self._load(key), *values))

    def feed(self, rows: Iterable[tuple[Any, ...]]) -> list[Any]:
        """Add each (key, value...) row; the results after each."""
        return [self.add(key, *values) for key, *values in rows]


class Table:
    """A table aggregation: each source row replaces the previous row of its primary key
    (undo the old values, add the new), as GROUP BY over a TABLE does."""

    def __init__(self, agg: Aggregator) -> None:
        assert agg.supports_undo
        self.groups = Groups(agg)
        self.rows: dict[Any, tuple[Any, tuple[Any, ...]]] = {}

    def upsert(self, pk: Any, group: Any, *values: Any) -> list[Any]:
        out = []
        old = self.rows.pop(pk, None)
        if old is not None:
            out.append(self.groups.undo(old[0], *old[1]))
        if group is not None:
            self.rows[pk] = (group, values)
            out.append(self.groups.add(group, *values))
        return out


def session_merge(agg: Aggregator, *sessions: Any) -> Any:
    """Merged sessions, as Kafka Streams folds them: into a fresh accumulator, in order."""
    acc = agg.initialize()
    for s in sessions:
        acc = agg.merge(acc, through_json(agg, s))
    return acc


def single(agg: Aggregator, *values: Any) -> Any:
    """The accumulator of one session holding one record."""
    return agg.add(agg.initialize(), *values)


# ================================================================================= COUNT
def test_count_star_counts_every_row_and_counts_back_to_zero_on_a_table() -> None:
    table = Table(make("COUNT"))
    assert table.upsert("1", 3) == [1]
    assert table.upsert("2", 3) == [2]
    assert table.upsert("1", None) == [1]
    assert table.upsert("2", None) == [0]


def test_count_column_skips_nulls() -> None:
    groups = Groups(make("COUNT", t.STRING))
    assert groups.feed([(1, "a"), (1, None), (1, "b")]) == [1, 1, 2]
    assert make("COUNT", t.STRING).undo(2, None) == 2


def test_count_resolves_without_arguments_and_with_any_type() -> None:
    assert resolve("COUNT").return_type == t.BIGINT
    assert resolve("COUNT", ArrayType(t.STRING)).return_type == t.BIGINT


def test_count_distinct_counts_distinct_non_null_values() -> None:
    groups = Groups(make("COUNT_DISTINCT", t.STRING))
    rows = [("foo", "one"), ("foo", "two"), ("foo", "one"), ("foo", "two"), ("bar", "one"), ("foo", None)]
    assert groups.feed(rows) == [1, 2, 2, 2, 1, 2]
    assert not make("COUNT_DISTINCT", t.STRING).supports_undo


def test_count_distinct_is_a_close_estimate_for_many_values() -> None:
    agg = make("COUNT_DISTINCT", t.BIGINT)
    acc = agg.initialize()
    for i in range(20000):
        acc = agg.add(acc, i % 5000)
    assert abs(agg.result(acc) - 5000) < 5000 * 0.05
    assert agg.result(through_json(agg, acc)) == agg.result(acc)
    a = agg.initialize()
    b = agg.initialize()
    for i in range(100):
        a = agg.add(a, i)
        b = agg.add(b, i + 50)
    assert 145 <= agg.result(agg.merge(a, b)) <= 155


# =================================================================================== SUM
def test_sum_int_of_nulls_is_zero_and_follows_table_updates() -> None:
    # sum.json "sum int left join of table": the right side's TOTAL is NULL until it exists.
    table = Table(make("SUM", t.INTEGER))
    assert table.upsert(0, 0, None) == [0]
    assert table.upsert(1, 1, None) == [0]
    assert table.upsert(0, 0, 5) == [0, 5]
    assert table.upsert(0, 0, 20) == [0, 20]
    assert table.upsert(0, 0, None) == [0, 0]


def test_sum_types_follow_the_argument() -> None:
    assert resolve("SUM", t.INTEGER).return_type == t.INTEGER
    assert resolve("SUM", t.BIGINT).return_type == t.BIGINT
    assert resolve("SUM", t.DOUBLE).return_type == t.DOUBLE
    assert resolve("SUM", DecimalType(4, 1)).return_type == DecimalType(4, 1)


def test_sum_decimal_keeps_the_scale_and_fails_on_overflow() -> None:
    groups = Groups(make("SUM", DecimalType(4, 1)))
    results = groups.feed([(0, D("5.4")), (0, D("100.1")), (100, D("500.9")), (100, D("300.8"))])
    assert results == [D("5.4"), D("105.5"), D("500.9"), D("801.7")]
    assert [str(r) for r in results] == ["5.4", "105.5", "500.9", "801.7"]
    with pytest.raises(AggregateFunctionError, match="Numeric field overflow"):
        groups.add(100, D("400.8"))
    assert str(make("SUM", DecimalType(4, 2)).result(make("SUM", DecimalType(4, 2)).initialize())) == "0.00"


def test_sum_double_and_constants() -> None:
    assert Groups(make("SUM", t.DOUBLE)).feed([(0, 10.0)] * 3) == [10.0, 20.0, 30.0]
    assert Groups(make("SUM", t.INTEGER)).feed([(0, 2)] * 3) == [2, 4, 6]


def test_sum_int_and_bigint_wrap_around_like_java() -> None:
    agg = make("SUM", t.INTEGER)
    assert agg.add(t.INT_MAX, 1) == t.INT_MIN
    agg = make("SUM", t.BIGINT)
    assert agg.add(t.BIGINT_MAX, 2) == t.BIGINT_MIN + 1
    assert agg.undo(t.BIGINT_MIN, 1) == t.BIGINT_MAX


def test_sum_rejects_types_it_cannot_take_listing_the_signatures() -> None:
    with pytest.raises(KsqlStatementException) as err:
        resolve("SUM", t.STRING)
    message = str(err.value)
    assert message.startswith("Function 'SUM' does not accept parameters (STRING).")
    for sig in ("SUM(INTEGER)", "SUM(BIGINT)", "SUM(DOUBLE)", "SUM(DECIMAL)"):
        assert sig in message


# =================================================================================== AVG
def test_avg_of_bigint_is_a_double_and_skips_nulls() -> None:
    groups = Groups(make("AVG", t.BIGINT))
    rows = [("alice", -1), ("bob", 2), ("alice", 9223372036854775807), ("alice", 1),
            ("bob", -2), ("bob", 0), ("alice", None)]
    assert groups.feed(rows) == [-1.0, 2.0, 4.611686018427388e+18, 3.0744573456182584e+18,
                                 0.0, 0.0, 3.0744573456182584e+18]
    assert resolve("AVG", t.INTEGER).return_type == t.DOUBLE


def test_avg_on_a_table_undoes_replaced_rows() -> None:
    table = Table(make("AVG", t.INTEGER))
    assert table.upsert("alice", "a", 1) == [1.0]
    assert table.upsert("bob", "a", 2) == [1.5]
    assert table.upsert("alice", "a", None) == [2.0, 2.0]
    assert table.upsert("alice", "a", 4) == [2.0, 3.0]


def test_avg_of_nothing_is_zero_and_its_accumulator_is_a_struct() -> None:
    agg = make("AVG", t.DOUBLE)
    assert agg.result(agg.initialize()) == 0.0
    assert agg.intermediate_type == StructType((Field("SUM", t.DOUBLE), Field("COUNT", t.BIGINT)))
    merged = agg.merge(single(agg, 1.0), single(agg, 4.0))
    assert agg.result(merged) == 2.5


# ============================================================================= MIN / MAX
MIN_MAX_KEYS = [1, 0, 0, 0, 100, 100, 100, 0, 0]


def test_min_integer() -> None:
    values = [None, -2147483647, 5, None, 100, 6, 300, 2000, 100]
    assert Groups(make("MIN", t.INTEGER)).feed(zip(MIN_MAX_KEYS, values)) == [
        None, -2147483647, -2147483647, -2147483647, 100, 6, 6, -2147483647, -2147483647]


def test_min_string_and_bytes() -> None:
    keys = [1, 0, 0, 0, 0, 100, 100, 100, 0, 0]
    values = [None, None, "B", "A", None, "E", "C", "G", "F", "D"]
    expected = [None, None, "B", "A", "A", "E", "C", "C", "A", "A"]
    assert Groups(make("MIN", t.STRING)).feed(zip(keys, values)) == expected
    as_bytes = [None if v is None else v.encode() for v in values]
    assert Groups(make("MIN", t.BYTES)).feed(zip(keys, as_bytes)) == [
        None if v is None else v.encode() for v in expected]


def test_max_decimal_date_and_string() -> None:
    keys = [1, 0, 0, 0, 0, 0, 100, 100, 100, 0, 0]
    values = [None, None, D("-10.12"), D("0.00"), D("5.10"), None, D("10.10"), D("6.40"),
              D("30.80"), D("20.99"), D("10.11")]
    assert Groups(make("MAX", DecimalType(4, 2))).feed(zip(keys, values)) == [
        None, None, D("-10.12"), D("0.00"), D("5.10"), D("5.10"), D("10.10"), D("10.10"),
        D("30.80"), D("20.99"), D("20.99")]
    keys = [1, 0, 0, 0, 0, 100, 100, 100, 0, 0]
    dates = [None, None, -100, 5, None, 100, 6, 110, 1000, 100]
    assert Groups(make("MAX", t.DATE)).feed(zip(keys, dates)) == [
        None, None, -100, 5, 5, 100, 100, 110, 1000, 1000]
    strings = [None, None, "B", "A", None, "E", "C", "G", "F", "D"]
    assert Groups(make("MAX", t.STRING)).feed(zip(keys, strings)) == [
        None, None, "B", "B", "B", "E", "E", "G", "F", "F"]


def test_min_max_keep_the_argument_type() -> None:
    for ty in (t.INTEGER, t.BIGINT, t.DOUBLE, DecimalType(4, 2), t.STRING, t.BYTES, t.DATE,
               t.TIME, t.TIMESTAMP):
        assert resolve("MIN", ty).return_type == ty
        assert resolve("MAX", ty).return_type == ty


def test_min_max_order_bytes_as_signed_like_java() -> None:
    assert make("MIN", t.BYTES).add(b"\x01", b"\x80") == b"\x80"
    assert make("MAX", t.BYTES).add(b"\x80", b"\x01") == b"\x01"


def test_min_max_order_doubles_like_java() -> None:
    mn, mx = make("MIN", t.DOUBLE), make("MAX", t.DOUBLE)
    assert math.isnan(mx.add(1.0, math.nan))
    assert mn.add(math.nan, 1.0) == 1.0
    assert mn.add(1.0, math.nan) == 1.0
    assert math.copysign(1.0, mn.add(0.0, -0.0)) == -1.0
    assert math.copysign(1.0, mx.add(-0.0, 0.0)) == 1.0
    assert math.isnan(through_json(mx, math.nan))


def test_min_max_reject_booleans_and_cannot_undo() -> None:
    with pytest.raises(KsqlStatementException, match="MIN\\(TIMESTAMP\\)"):
        resolve("MIN", t.BOOLEAN)
    assert not make("MIN", t.INTEGER).supports_undo
    assert not make("MAX", t.INTEGER).supports_undo


def test_min_max_merge_sessions() -> None:
    agg = make("MAX", t.INTEGER)
    assert agg.result(session_merge(agg, single(agg, 3), agg.initialize(), single(agg, 7))) == 7


# ======================================================================= COLLECT_LIST/SET
def test_collect_list_keeps_everything_in_order_with_nulls() -> None:
    groups = Groups(make("COLLECT_LIST", t.STRING))
    rows = [(0, "foo"), (100, "baz"), (0, "bar"), (100, "baz"), (100, "foo"), (100, None)]
    assert groups.feed(rows) == [["foo"], ["baz"], ["foo", "bar"], ["baz", "baz"],
                                 ["baz", "baz", "foo"], ["baz", "baz", "foo", None]]


def test_collect_list_of_structs_arrays_and_bytes() -> None:
    struct = StructType((Field("A", t.STRING), Field("B", t.BIGINT)))
    assert resolve("COLLECT_LIST", struct).return_type == ArrayType(struct)
    groups = Groups(make("COLLECT_LIST", struct))
    assert groups.feed([(0, {"A": "Record0", "B": 1}), (0, {"A": "Record1", "B": 100})])[-1] == [
        {"A": "Record0", "B": 1}, {"A": "Record1", "B": 100}]
    groups = Groups(make("COLLECT_LIST", t.BYTES))
    assert groups.feed([(0, b"a"), (0, b"b")]) == [[b"a"], [b"a", b"b"]]


def test_collect_list_on_a_table_follows_updates() -> None:
    table = Table(make("COLLECT_LIST", t.BIGINT))
    assert table.upsert(0, 0, 2147483648) == [[2147483648]]
    assert table.upsert(0, 0, 100) == [[], [100]]


def test_collect_list_undo_removes_the_last_occurrence() -> None:
    agg = make("COLLECT_LIST", t.INTEGER)
    assert agg.undo([1, 2, 1, 3], 1) == [1, 2, 3]
    assert agg.undo([1, 2], 5) == [1, 2]


def test_collect_limits_come_from_the_query_properties() -> None:
    agg = make("COLLECT_LIST", t.INTEGER, config={"ksql.functions.collect_list.limit": 1})
    assert Groups(agg).feed([(0, 0), (0, 100)]) == [[0], [0]]
    agg = make("COLLECT_SET", t.INTEGER, config={"ksql.functions.collect_set.limit": "2"})
    assert Groups(agg).feed([(0, 1), (0, 2), (0, 3)]) == [[1], [1, 2], [1, 2]]
    assert agg.merge([1], [2, 3]) == [1, 2]
    unlimited = make("COLLECT_LIST", t.INTEGER, config={"ksql.functions.collect_list.limit": -1})
    acc = unlimited.initialize()
    for i in range(1500):
        acc = unlimited.add(acc, i)
    assert len(acc) == 1500


def test_collect_list_default_limit_is_1000() -> None:
    agg = make("COLLECT_LIST", t.INTEGER)
    acc = agg.initialize()
    for i in range(1200):
        acc = agg.add(acc, i)
    assert agg.result(acc) == list(range(1000))


def test_collect_set_keeps_first_arrivals_nulls_included() -> None:
    groups = Groups(make("COLLECT_SET", t.STRING))
    rows = [(0, "foo"), (100, "baz"), (0, "bar"), (100, "baz"), (100, "foo"), (100, None)]
    assert groups.feed(rows) == [["foo"], ["baz"], ["foo", "bar"], ["baz"], ["baz", "foo"],
                                 ["baz", "foo", None]]


def test_collect_set_of_nested_values() -> None:
    item = StructType((Field("A", t.STRING), Field("M", MapType(t.STRING, t.DOUBLE)),
                       Field("D", DecimalType(4, 1))))
    agg = make("COLLECT_SET", ArrayType(item))
    v1 = [{"A": "Later0", "M": {"Early0": 3.45}, "D": None}]
    v2 = [{"A": "Later0", "M": {"Early0": 3.45}, "D": D("0.1")}]
    results = Groups(agg).feed([(1, v1), (1, v2), (1, v1), (1, [None]), (1, None)])
    assert results[-1] == [v1, v2, [None], None]
    assert results[2] == [v1, v2]


def test_collect_set_undo_and_merge() -> None:
    table = Table(make("COLLECT_SET", t.STRING))
    table.upsert("a", 0, "x")
    table.upsert("b", 0, "x")
    assert table.upsert("a", None) == [[]]
    agg = make("COLLECT_SET", t.INTEGER)
    assert agg.merge([1, 2], [2, 3]) == [1, 2, 3]


def test_collect_results_are_snapshots() -> None:
    agg = make("COLLECT_LIST", t.INTEGER)
    acc = agg.add(agg.initialize(), 1)
    emitted = agg.result(acc)
    state = agg.to_state(acc)
    agg.add(acc, 2)
    assert emitted == [1] and state == [1]


# ============================================================ EARLIEST / LATEST_BY_OFFSET
def test_earliest_by_offset_keeps_the_first_value_of_any_type() -> None:
    struct = StructType((Field("A", t.STRING), Field("B", t.BIGINT)))
    for ty, first, later in [(t.INTEGER, 12, 21), (t.DOUBLE, 1.23, 2.23), (t.BYTES, b"a", b"b"),
                             (struct, {"A": "Early0", "B": 1}, {"A": "Later0", "B": 3}),
                             (MapType(t.STRING, t.DOUBLE), {"Early0": 1.234}, {"Later0": 3.6789})]:
        assert resolve("EARLIEST_BY_OFFSET", ty).return_type == ty
        assert Groups(make("EARLIEST_BY_OFFSET", ty)).feed([(0, first), (0, later)]) == [first, first]


def test_latest_by_offset_keeps_the_last_value() -> None:
    groups = Groups(make("LATEST_BY_OFFSET", ArrayType(t.INTEGER)))
    assert groups.feed([(0, [0, 0, 1]), (0, [1, 2, 3])]) == [[0, 0, 1], [1, 2, 3]]
    groups = Groups(make("LATEST_BY_OFFSET", DecimalType(3, 2), t.BOOLEAN, init=[True]))
    assert groups.feed([(0, D("3.40")), (0, D("8.90"))]) == [D("3.40"), D("8.90")]


def test_by_offset_null_handling() -> None:
    # earliest-offset-udaf.json / latest-offset-udaf.json
    def feed(name: str, init: list[Any], values: list[Any]) -> list[Any]:
        types = [t.INTEGER] + [t.BOOLEAN if isinstance(v, bool) else t.INTEGER for v in init]
        return Groups(make(name, *types, init=init)).feed((0, v) for v in values)

    assert feed("EARLIEST_BY_OFFSET", [True], [None, 13]) == [None, 13]
    assert feed("EARLIEST_BY_OFFSET", [2, False], [None, 13]) == [[None], [None, 13]]
    assert feed("EARLIEST_BY_OFFSET", [2], [12, None, 13]) == [[12], [12], [12, 13]]
    assert feed("EARLIEST_BY_OFFSET", [False], [12, None, 13]) == [12, 12, 12]
    assert feed("EARLIEST_BY_OFFSET", [2, False], [12, None, 13]) == [[12], [12, None], [12, None]]
    assert feed("EARLIEST_BY_OFFSET", [], [None, None]) == [None, None]
    assert feed("EARLIEST_BY_OFFSET", [2], [None, None]) == [[], []]
    assert feed("LATEST_BY_OFFSET", [2, True], [12, None, 13]) == [[12], [12], [12, 13]]
    assert feed("LATEST_BY_OFFSET", [2, False], [12, None, 13]) == [[12], [12, None], [None, 13]]
    assert feed("LATEST_BY_OFFSET", [2], [12, None]) == [[12], [12]]
    assert feed("LATEST_BY_OFFSET", [], [None, None]) == [None, None]
    assert feed("LATEST_BY_OFFSET", [2], [21, 31, 41]) == [[21], [21, 31], [31, 41]]


def test_by_offset_n_returns_an_array() -> None:
    assert resolve("EARLIEST_BY_OFFSET", t.STRING, t.INTEGER).return_type == ArrayType(t.STRING)
    assert resolve("LATEST_BY_OFFSET", t.STRING, t.INTEGER, t.BOOLEAN).return_type == ArrayType(t.STRING)
    with pytest.raises(KsqlStatementException, match="earliestN must be 1 or greater"):
        make("EARLIEST_BY_OFFSET", t.STRING, t.INTEGER, init=[0])


def test_by_offset_session_merges_pick_by_sequence() -> None:
    # Records at 0 and 1500 make two sessions; one at 700 merges them, then is added.
    agg = make("LATEST_BY_OFFSET", t.INTEGER)
    s0, s1500 = single(agg, 1), single(agg, None)
    assert agg.result(agg.add(session_merge(agg, s0, s1500), 2)) == 2
    agg = make("LATEST_BY_OFFSET", t.INTEGER)
    s0 = single(agg, 1)
    assert agg.result(agg.add(session_merge(agg, s0), None)) == 1
    agg = make("LATEST_BY_OFFSET", t.INTEGER, t.BOOLEAN, init=[False])
    s0, s1500 = single(agg, 1), single(agg, None)
    assert agg.result(session_merge(agg, s0, s1500)) is None
    assert agg.result(session_merge(agg, s1500, s0)) is None
    agg = make("LATEST_BY_OFFSET", t.INTEGER, t.INTEGER, t.BOOLEAN, init=[2, False])
    s0, s1500 = single(agg, None), single(agg, None)
    assert agg.result(agg.add(session_merge(agg, s0, s1500), None)) == [None, None]
    agg = make("EARLIEST_BY_OFFSET", t.INTEGER, t.INTEGER, t.BOOLEAN, init=[2, False])
    s0, s1500 = single(agg, None), single(agg, 1)
    assert agg.result(agg.add(session_merge(agg, s1500, s0), None)) == [None, 1]
    agg = make("EARLIEST_BY_OFFSET", t.INTEGER, t.INTEGER, t.BOOLEAN, init=[2, True])
    s0, s1500 = single(agg, None), single(agg, 1)
    assert agg.result(agg.add(session_merge(agg, s0, s1500), None)) == [1]
    agg = make("EARLIEST_BY_OFFSET", t.INTEGER)
    s0, s1500 = single(agg, 5), single(agg, 6)
    assert agg.result(session_merge(agg, s1500, s0)) == 5


def test_by_offset_sequence_survives_a_restart() -> None:
    before = make("LATEST_BY_OFFSET", t.INTEGER)
    saved = json.dumps(before.to_state(single(before, 1)))
    after = make("LATEST_BY_OFFSET", t.INTEGER)
    after._seq = 0  # a clock that went backwards must not matter
    old = after.from_state(json.loads(saved))
    assert after.result(after.merge(old, single(after, 2))) == 2


def test_by_offset_cannot_undo_and_declares_a_struct_accumulator() -> None:
    agg = make("EARLIEST_BY_OFFSET", t.INTEGER)
    assert not agg.supports_undo
    assert agg.intermediate_type == StructType((Field("SEQ", t.BIGINT), Field("VAL", t.INTEGER)))


# ================================================================================== TOPK
def test_topk_long_ties_and_ignores_small_values() -> None:
    agg = make("TOPK", t.BIGINT, t.INTEGER, init=[3])
    values = [2147483648, 100, 99, 7, 100]
    assert Groups(agg).feed((0, v) for v in values) == [
        [2147483648], [2147483648, 100], [2147483648, 100, 99], [2147483648, 100, 99],
        [2147483648, 100, 100]]
    assert resolve("TOPK", t.BIGINT, t.INTEGER).return_type == ArrayType(t.BIGINT)


def test_topk_string_and_double() -> None:
    agg = make("TOPK", t.STRING, t.INTEGER, init=[3])
    assert Groups(agg).feed((0, v) for v in "abcbd") == [
        ["a"], ["b", "a"], ["c", "b", "a"], ["c", "b", "b"], ["d", "c", "b"]]
    agg = make("TOPK", t.DOUBLE, t.INTEGER, init=[2])
    assert Groups(agg).feed([(0, 0.0), (0, 100.0), (0, math.nan)]) [:2] == [[0.0], [100.0, 0.0]]


def test_topk_with_other_columns_returns_structs_ordered_by_the_first() -> None:
    res = resolve("TOPK", t.INTEGER, t.STRING, t.INTEGER)
    assert res.return_type == ArrayType(StructType((Field("sort_col", t.INTEGER), Field("col0", t.STRING))))
    agg = make("TOPK", t.INTEGER, t.STRING, t.INTEGER, init=[3])
    rows = [(0, 0, "zero"), (0, 100, "one"), (0, 99, "two"), (0, None, "three"), (0, 100, None)]
    results = Groups(agg).feed(rows)
    assert results[2] == [{"sort_col": 100, "col0": "one"}, {"sort_col": 99, "col0": "two"},
                          {"sort_col": 0, "col0": "zero"}]
    assert results[3] == results[2]
    assert results[4] == [{"sort_col": 100, "col0": "one"}, {"sort_col": 100, "col0": None},
                          {"sort_col": 99, "col0": "two"}]


def test_topk_merges_and_cannot_undo() -> None:
    agg = make("TOPK", t.INTEGER, t.INTEGER, init=[2])
    assert agg.merge([5, 1], [3]) == [5, 3]
    assert not agg.supports_undo


def test_topkdistinct_decimal_bytes_time() -> None:
    agg = make("TOPKDISTINCT", DecimalType(2, 1), t.INTEGER, init=[3])
    values = [D("9.8"), D("8.9"), None, D("7.8"), D("6.5"), D("9.9")]
    assert Groups(agg).feed((0, v) for v in values) == [
        [D("9.8")], [D("9.8"), D("8.9")], [D("9.8"), D("8.9")], [D("9.8"), D("8.9"), D("7.8")],
        [D("9.8"), D("8.9"), D("7.8")], [D("9.9"), D("9.8"), D("8.9")]]
    agg = make("TOPKDISTINCT", t.BYTES, t.INTEGER, init=[3])
    values = [b"B", b"F", b"G", None, b"A", b"F"]
    assert Groups(agg).feed((0, v) for v in values)[-1] == [b"G", b"F", b"B"]
    agg = make("TOPKDISTINCT", t.TIME, t.INTEGER, init=[3])
    values = [0, 100, 99, None, 7, 100]
    assert Groups(agg).feed((0, v) for v in values) == [
        [0], [100, 0], [100, 99, 0], [100, 99, 0], [100, 99, 7], [100, 99, 7]]
    assert agg.merge([100, 7], [100, 99]) == [100, 99, 7]


# ============================================================================= HISTOGRAM
def test_histogram_counts_values_and_undoes() -> None:
    assert resolve("HISTOGRAM", t.STRING).return_type == MapType(t.STRING, t.BIGINT)
    table = Table(make("HISTOGRAM", t.STRING))
    table.upsert(1, "g", "a")
    table.upsert(2, "g", "b")
    assert table.upsert(3, "g", "a") == [{"a": 2, "b": 1}]
    assert table.upsert(2, "g", None) == [{"a": 2}, {"a": 2}]


def test_histogram_limits_distinct_values_to_1000() -> None:
    agg = make("HISTOGRAM", t.INTEGER)
    acc = agg.initialize()
    for i in range(1100):
        acc = agg.add(acc, i)
    acc = agg.add(acc, 5)
    assert len(acc) == 1000 and acc[5] == 2 and 1050 not in acc
    assert through_json(agg, acc) == acc


# ================================================================================== ATTR
def test_attr_returns_the_value_only_while_all_agree() -> None:
    agg = make("ATTR", t.STRING)
    assert Groups(agg).feed([(1, "1"), (1, None), (1, "1")]) == ["1", None, None]
    struct = StructType((Field("A", t.STRING), Field("B", t.INTEGER)))
    assert Groups(make("ATTR", struct)).feed([(1, {"A": "a", "B": 1})] * 2) == [{"A": "a", "B": 1}] * 2


def test_attr_on_a_table_with_tombstones() -> None:
    table = Table(make("ATTR", t.STRING))
    out = []
    for pk, group, value in [(1, 1, "1"), (2, 1, "1"), (1, None, None), (2, None, None),
                             (1, 1, "2"), (2, 1, "3"), (2, None, None)]:
        out += table.upsert(pk, group, value)
    assert out == ["1", "1", "1", None, "2", None, "2"]


# ======================================================================== STDDEV / CORR
def test_stddev_sample_matches_ksqldb_to_the_last_bit() -> None:
    agg = make("STDDEV_SAMPLE", t.INTEGER)
    rows = [(0, 0), (0, 10), (100, 50), (100, 10), (0, 7), (100, 3), (100, None), (0, 6)]
    assert Groups(agg).feed(rows) == [0.0, 7.0710678118654755, 0.0, 28.284271247461902,
                                      5.131601439446884, 25.357444666211933, 25.357444666211933,
                                      4.193248541803041]
    agg = make("STDDEV_SAMP", t.BIGINT)
    rows = [(0, 2147483648), (0, 100), (100, 500), (100, 100), (0, -2), (100, 0), (100, -6), (0, None)]
    assert Groups(agg).feed(rows) == [0.0, 1518500179.2773468, 0.0, 282.842712474619,
                                      1239850233.9629574, 264.5751311064591, 239.32335169528832,
                                      1239850233.9629574]
    agg = make("STDDEV_SAMPLE", t.DOUBLE)
    assert Groups(agg).feed((0, v) for v in [10.0, 12.0, 13.0, 14.0, 16.0]) == [
        0.0, 1.4142135623730951, 1.5275252316519465, 1.707825127659933, 2.23606797749979]


def test_stddev_undo_and_merge() -> None:
    agg = make("STDDEV_SAMP", t.DOUBLE)
    acc = agg.initialize()
    for v in [10.0, 12.0, 13.0, 14.0]:
        acc = agg.add(acc, v)
    acc = agg.undo(acc, 12.0)
    assert agg.result(acc) == pytest.approx(2.0816659994661326)
    a = agg.add(agg.add(agg.initialize(), 10.0), 13.0)
    b = agg.add(agg.initialize(), 14.0)
    assert agg.result(agg.merge(a, b)) == pytest.approx(2.0816659994661326)
    assert agg.result(agg.undo(agg.add(agg.initialize(), 1.0), 1.0)) == 0.0


def test_correlation() -> None:
    agg = make("CORRELATION", t.DOUBLE, t.DOUBLE)
    rows = [("alice", 1.0, 8.0), ("bob", -3.0, -2.0), ("alice", -1.0, -2.0), ("alice", -4.0, -1.0),
            ("bob", 13.0, None), ("bob", 3.0, 11.0), ("alice", None, -6.0)]
    results = Groups(agg).feed(rows)
    assert math.isnan(results[0]) and math.isnan(results[1]) and math.isnan(results[4])
    assert results[2] == 1.0 and results[5] == 1.0
    assert results[3] == results[6] == 0.7455284088780169
    assert resolve("CORRELATION", t.INTEGER, t.INTEGER).return_type == t.DOUBLE
    acc = agg.add(agg.add(agg.initialize(), 1.0, 2.0), 2.0, 4.0)
    assert agg.result(agg.undo(agg.add(acc, 3.0, 0.0), 3.0, 0.0)) == 1.0


# ======================================================================= every function
ROUND_TRIPS = [
    ("COUNT", [], [], [(), (), ()]),
    ("COUNT", [t.STRING], [], [("a",), (None,)]),
    ("COUNT_DISTINCT", [t.DOUBLE], [], [(1.5,), (2.5,), (1.5,)]),
    ("SUM", [t.INTEGER], [], [(1,), (None,), (2,)]),
    ("SUM", [t.BIGINT], [], [(1,), (2,)]),
    ("SUM", [t.DOUBLE], [], [(1.5,), (math.inf,)]),
    ("SUM", [DecimalType(10, 2)], [], [(D("1.25"),), (D("2.50"),)]),
    ("AVG", [t.INTEGER], [], [(1,), (2,)]),
    ("AVG", [t.DOUBLE], [], [(1.5,), (math.nan,)]),
    ("MIN", [DecimalType(4, 2)], [], [(D("1.25"),), (D("-2.50"),)]),
    ("MAX", [t.BYTES], [], [(b"\x00\xff",), (b"\x01",)]),
    ("MAX", [t.DOUBLE], [], [(-math.inf,), (1.0,)]),
    ("COLLECT_LIST", [MapType(t.STRING, t.BYTES)], [], [({"a": b"x"},), (None,)]),
    ("COLLECT_SET", [DecimalType(3, 1)], [], [(D("1.5"),), (D("1.5"),), (None,)]),
    ("EARLIEST_BY_OFFSET", [t.BYTES], [], [(b"x",), (b"y",)]),
    ("EARLIEST_BY_OFFSET", [DecimalType(3, 1), t.INTEGER], [2], [(D("1.5"),), (D("2.5"),)]),
    ("LATEST_BY_OFFSET", [t.DOUBLE, t.BOOLEAN], [False], [(math.nan,), (None,)]),
    ("LATEST_BY_OFFSET", [t.BYTES, t.INTEGER, t.BOOLEAN], [2, False], [(b"a",), (b"b",), (b"c",)]),
    ("TOPK", [DecimalType(3, 1), t.INTEGER], [2], [(D("1.5"),), (D("2.5"),)]),
    ("TOPK", [t.BYTES, t.BYTES, t.INTEGER], [2], [(b"a", b"x"), (b"b", None)]),
    ("TOPKDISTINCT", [t.DOUBLE, t.INTEGER], [2], [(1.5,), (math.inf,)]),
    ("HISTOGRAM", [t.STRING], [], [("a",), ("a",), ("b",)]),
    ("HISTOGRAM", [DecimalType(3, 1)], [], [(D("1.5"),), (D("1.5"),)]),
    ("HISTOGRAM", [t.BOOLEAN], [], [(True,), (False,), (True,)]),
    ("STDDEV_SAMP", [t.DOUBLE], [], [(1.5,), (2.5,)]),
    ("STDDEV_SAMPLE", [t.BIGINT], [], [(1,), (4,)]),
    ("CORRELATION", [t.DOUBLE, t.DOUBLE], [], [(1.0, 2.0), (2.0, 3.5)]),
    ("ATTR", [ArrayType(DecimalType(3, 1))], [], [([D("1.5")],), ([D("1.5")],)]),
]


def _same_value(a: Any, b: Any) -> bool:
    # repr: NaN equals NaN, and a Decimal's scale counts.
    return repr(a) == repr(b)


@pytest.mark.parametrize("name, types, init, rows", ROUND_TRIPS,
                         ids=[f"{r[0]}-{'-'.join(map(str, r[1]))}" for r in ROUND_TRIPS])
def test_accumulators_round_trip_through_json(name: str, types: list[SqlType], init: list[Any],
                                              rows: list[tuple[Any, ...]]) -> None:
    agg = make(name, *types, init=init)
    acc = agg.initialize()
    for values in rows:
        acc = agg.add(acc, *values)
        data = json.loads(state_json(agg, acc))
        back = agg.from_state(data)
        assert _same_value(agg.result(back), agg.result(acc))
        # A restored accumulator carries on exactly like the original.
        assert _same_value(agg.result(agg.add(back, *values)),
                           agg.result(agg.add(agg.from_state(data), *values)))
        acc = through_json(agg, acc)
    assert _same_value(agg.result(through_json(agg, agg.initialize())), agg.result(agg.initialize()))


UNDO = {"COUNT": True, "SUM": True, "AVG": True, "MIN": False, "MAX": False, "COLLECT_LIST": True,
        "COLLECT_SET": True, "HISTOGRAM": True, "ATTR": True, "STDDEV_SAMP": True,
        "STDDEV_SAMPLE": True, "CORRELATION": True, "TOPK": False, "TOPKDISTINCT": False,
        "EARLIEST_BY_OFFSET": False, "LATEST_BY_OFFSET": False, "COUNT_DISTINCT": False}


def test_every_builtin_aggregate_is_covered_and_declares_undo_support() -> None:
    assert set(default_registry().aggregates) == set(UNDO) == {r[0] for r in ROUND_TRIPS}
    for name, types, init, _ in ROUND_TRIPS:
        agg = make(name, *types, init=init)
        assert agg.supports_undo is UNDO[name], name
        # The engine checks the value format can hold the accumulator.
        assert agg.intermediate_type is not None, name


def test_topk_describes_its_middle_variadic_parameter() -> None:
    sigs = default_registry().aggregates["TOPK"]
    assert "(STRING, ANY[], INTEGER)" in [s.describe_params() for s in sigs]
    assert all(s.init_params == 1 for s in sigs)


# ===================================================================== registry / seam
def test_middle_variadic_and_init_params_bind() -> None:
    res = resolve("MID_VAR_ARG", t.BIGINT, t.STRING, t.STRING, t.INTEGER, t.INTEGER, test_udafs=True)
    assert res.signature.init_params == 2
    assert res.signature.describe_params() == "(BIGINT, STRING[], INTEGER, INTEGER)"
    assert resolve("MID_VAR_ARG", t.BIGINT, t.INTEGER, t.INTEGER, test_udafs=True).return_type == t.BIGINT
    with pytest.raises(KsqlStatementException):
        resolve("MID_VAR_ARG", t.BIGINT, t.INTEGER, test_udafs=True)


def test_resolved_aggregator_passes_config_only_to_factories_that_read_it() -> None:
    agg = resolve("COLLECT_LIST", t.INTEGER).aggregator((), {"ksql.functions.collect_list.limit": 2})
    assert Groups(agg).feed([(0, 1), (0, 2), (0, 3)])[-1] == [1, 2]
    assert resolve("SUM", t.INTEGER).aggregator((), {"x": 1}).add(1, 2) == 3


# ====================================================================== test-only UDAFs
FIRST = [6, 2, None, 5, 5, 3, 2, 21, None, 3, 6]
SECOND = ["hi", "a", "hello", "world", None, "test", "testing", "aggregate", "function", "ksql", "test"]
IDS = [0, 100, 0, 100, 0, 100, 100, 0, 100, 100, 100]


def test_var_arg_udafs() -> None:
    agg = make("VAR_ARG", t.BIGINT, *[t.STRING] * 5, test_udafs=True)
    rows = [(k, f, "hello", "10", "20", s, "3") for k, f, s in zip(IDS, FIRST, SECOND)]
    assert Groups(agg).feed(rows) == [18, 13, 33, 33, 48, 50, 69, 88, 87, 104, 124]
    for bad in ([t.STRING, t.STRING], [t.BIGINT, t.INTEGER]):
        with pytest.raises(KsqlStatementException, match=r"Function 'VAR_ARG' does not accept parameters \("):
            resolve("VAR_ARG", *bad, test_udafs=True)

    agg = make("MID_VAR_ARG", t.BIGINT, *[t.STRING] * 5, t.INTEGER, t.INTEGER, init=[7, 3], test_udafs=True)
    assert Groups(agg).feed(rows) == [28, 23, 43, 43, 58, 60, 79, 98, 97, 114, 134]
    agg = make("MID_VAR_ARG", t.BIGINT, t.INTEGER, t.INTEGER, init=[7, 3], test_udafs=True)
    assert Groups(agg).feed((k, f) for k, f in zip(IDS, FIRST)) == [16, 12, 16, 17, 21, 20, 22, 42, 22, 25, 31]


def test_multi_arg_udafs() -> None:
    init = [5, "10", "20", "3"]
    agg = make("MULTI_ARG", t.BIGINT, t.STRING, t.INTEGER, t.STRING, t.STRING, t.STRING,
               init=init, test_udafs=True)
    assert Groups(agg).feed(zip(IDS, FIRST, SECOND)) == [18, 13, 23, 23, 28, 30, 39, 58, 47, 54, 64]
    third = ["apples", "oranges", "bananas", "peaches", "grapes", None, "strawberries", "avocados",
             "pears", "plums", "oranges"]
    fourth = [None, "Mercury", "Venus", "Earth", "Mars", "Asteroid Belt", "Jupiter", "Saturn",
              "Uranus", "Neptune", "Pluto"]
    agg = make("FOUR_ARG", t.BIGINT, t.STRING, t.STRING, t.STRING, t.INTEGER, t.STRING, t.STRING,
               t.STRING, init=init, test_udafs=True)
    assert Groups(agg).feed(zip(IDS, FIRST, SECOND, third, fourth)) == [
        24, 27, 41, 49, 56, 69, 97, 100, 116, 135, 157]
    fifth = [9, None, 1, 200, -4, 1, 10, 2, 123, 45, -2]
    agg = make("FIVE_ARG", t.BIGINT, t.STRING, t.STRING, t.STRING, t.INTEGER, t.INTEGER, t.STRING,
               t.STRING, t.STRING, init=init, test_udafs=True)
    assert Groups(agg).feed(zip(IDS, FIRST, SECOND, third, fourth, fifth)) == [
        33, 27, 51, 249, 62, 270, 308, 108, 450, 514, 534]


def test_collecting_variadic_udafs() -> None:
    first = [6, 2, None, 5, 5, 3, 2, 21, None, 3, 6]
    third = [True, False, True, None, True, False, True, None, True, False, False]
    fourth = [3.2, 1.44, 12.34, 0.9, 1.2, None, 9.8, 5.0, None, 4.3, 4.9]
    second = [5, 1, 5, 3, None, 7, 2, 10, 20, 2, 1]
    fifth = [7, 8, 1, 2, 6, 8, None, 2, 3, 4, 10]
    sixth = [[3, 5], [8, 1], [7], [1], [5], [10, None], [8], [11], [2], [0, 0], None]
    agg = make("OBJ_COL_ARG", t.INTEGER, t.BIGINT, t.BOOLEAN, t.DOUBLE, t.INTEGER,
               ArrayType(t.INTEGER), test_udafs=True)
    assert Groups(agg).feed(zip(IDS, first, second, third, fourth, fifth, sixth)) == [
        [6], [2], [6], [2], [6], [2], [2], [6], [2], [2, 3], [2, 3]]
    agg = make("OBJ_COL_ARG", t.INTEGER, test_udafs=True)
    assert Groups(agg).feed(zip(IDS, first))[-1] == [2, 5, 3, 2, 3, 6]

    res = resolve("GENERIC_VAR_ARG", DecimalType(2, 1), t.INTEGER, t.DOUBLE, t.DOUBLE, test_udafs=True)
    assert res.return_type == ArrayType(DecimalType(2, 1))
    third = [100.4, 1.2, 1.6, 9.1, 14.1, 7.6, 9.0, None, 3.8, 9.6, 10.0]
    fourth = [3.2, 1.44, 12.34, 0.9, 1.2, None, 9.8, 5.0, None, 4.3, 4.9]
    fifth = [7.0, 8.9, 1.1, 2.5, 6.7, 8.1, None, 2.3, 3.3, 4.7, 10.4]
    agg = make("GENERIC_VAR_ARG", DecimalType(2, 1), t.INTEGER, t.DOUBLE, t.DOUBLE, t.DOUBLE,
               test_udafs=True)
    rows = [(k, D("6.1"), *r) for k, *r in zip(IDS, second, third, fourth, fifth)]
    assert [len(r) for r in Groups(agg).feed(rows)] == [1, 1, 2, 2, 2, 2, 2, 2, 2, 3, 4]


def test_sum_list() -> None:
    agg = make("SUM_LIST", ArrayType(t.INTEGER), test_udafs=True)
    assert resolve("SUM_LIST", ArrayType(t.BIGINT), test_udafs=True).return_type == t.BIGINT
    rows = [("a", [1, 1]), ("a", [2, 2]), ("a", [100, 100]), ("a", [100, 100, None])]
    assert Groups(agg).feed(rows) == [2, 6, 206, 406]

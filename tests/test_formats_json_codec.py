"""The JSON codec's generated hot path (streamsql/formats/json_codegen.py) against its exact
path: on every input both must give the same row (same Python types, same order) or the same
error, and write the same bytes. Tricky inputs first, then a seeded differential fuzz."""
from __future__ import annotations

import json
import math
import random
import types
from decimal import Decimal

import pytest

from streamsql.formats.base import FormatOptions, SerdeError
from streamsql.formats.json import JsonCodec
from streamsql.formats.registry import get_format
from streamsql.schema import Column
from streamsql.types import (
    BIGINT,
    BOOLEAN,
    BYTES,
    DATE,
    DOUBLE,
    INTEGER,
    STRING,
    TIME,
    TIMESTAMP,
    ArrayType,
    DecimalType,
    Field,
    MapType,
    StructType,
)

UNWRAPPED = FormatOptions(wrap_single_value=False)
TOPIC = FormatOptions(extra=(("KAFKA_TOPIC", "t"),))

STRUCT = StructType([Field("A", INTEGER), Field("b", STRING), Field("C", ArrayType(DOUBLE))])
PRIMITIVES = [Column("S", STRING), Column("B", BOOLEAN), Column("I", INTEGER), Column("L", BIGINT),
              Column("D", DOUBLE), Column("Y", BYTES), Column("DT", DATE), Column("TM", TIME),
              Column("TS", TIMESTAMP)]
CONTAINERS = [Column("AR", ArrayType(BIGINT)), Column("M", MapType(STRING, INTEGER)),
              Column("ST", STRUCT), Column("AS", ArrayType(STRING))]
DECIMALS = [Column("DEC", DecimalType(6, 2)), Column("D", DOUBLE), Column("A", ArrayType(STRING))]
ODD_NAMES = [Column("lower", STRING), Column("with space", BIGINT), Column("ÜML", STRING)]
SCHEMAS = {"primitives": PRIMITIVES, "containers": CONTAINERS, "decimals": DECIMALS,
           "odd names": ODD_NAMES, "bench": [Column("PAGE", STRING), Column("MS", BIGINT)]}


def dumps(obj) -> bytes:
    """JSON text of ``obj``, integers beyond 64 bits included (orjson refuses those)."""
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


def make(columns, options=TOPIC, is_key=False) -> JsonCodec:
    f = get_format("JSON")
    f.validate(columns, options, is_key)
    return f.codec(columns, options, is_key)


def outcome(fn, arg):
    """What ``fn(arg)`` gives, typed: repr of the result, or the error's class and message."""
    try:
        return repr(fn(arg))
    except Exception as e:  # noqa: BLE001 - whatever it is, both paths must agree
        return f"{type(e).__name__}: {e}"


def same_decode(c: JsonCodec, data) -> str:
    got, want = outcome(c.decode, data), outcome(c.decode_exact, data)
    assert got == want, data
    return got


def same_encode(c: JsonCodec, row) -> str:
    got, want = outcome(c.encode, row), outcome(c.encode_exact, row)
    assert got == want, row
    return got


TRICKY_VALUES = [
    None, True, False, 0, 1, -1, 12, 2**31 - 1, 2**31, -2**31 - 1, 2**63 - 1, 2**63, 2**64,
    -2**63 - 1, 10**30, 1.0, 1.5, -0.0, 1e16, 1e300, "", "12", " 12", "1.5", "abc", "true",
    "YWJj", "YWJ", "!!", "2021-01-01", "NaN", "Infinity", "é€😀\u2028\x00", [], [1, None],
    [1.5], ["a", 1], {}, {"a": 1}, {"A": 1, "b": "x", "c": [1.5, 2]}, {"a": 1.5},
]
RAW_PAYLOADS = [
    b"", b"null", b" null ", b"{}", b"[]", b'"x"', b"12", b"{not json", b'{"S": "a"} x',
    b'\xef\xbb\xbf{"S": "a"}', b'{"S": NaN}', b'{"D": 1e400}', b'{"D": -1e400}',
    b'{"S": "\\ud800"}', b'{"S": "a", "S": "b"}', b'{"s": "a", "S": "b"}', b'{"S": "b", "s": "a"}',
    b'{"s": "lower wins only without an exact match"}', b'{"L": 123456789012345678901234567890}',
    b'{"L": 1.0}', b'{"L": 1.9}', b'{"L": -1.9}', b'{"D": 1}', b'{"D": 12345678901234567890123}',
    b'{"I": 1e2}', b'{"DEC": 1.50}', b'{"DEC": 1.505}', b'{"DEC": "1.5"}', b'{"DEC": 12345}',
    b'{"DEC": 1e2}', b'{"DEC": -0.0}', b'{"DEC": "NaN"}', b'{"DEC": " 1.5"}', b'{"DEC": true}',
    b'{"A": [1.50, 1e2, "x", null]}', b'{"a": [1.5]}', b'{"Y": "YWJjZA"}', b'{"Y": "YWJjZA=="}',
    b'{"Y": "Y"}', b'{"Y": 12}', b'{"ST": {"a": 1, "B": "x", "c": [1, 2.5]}}',
    b'{"ST": {"A": "7", "b": 1.25}}', b'{"M": {"k": 1, "j": null, "z": "3"}}', b'{"M": {"k": 1.5}}',
    b'{"M": []}', b'{"AR": [1, "2", null, 2.9]}', b'{"AS": [1.5, {"x": 1.0}, [1, 2]]}',
    b'{"with space": 4, "LOWER": "no", "\xc3\x9cml": "u"}', b'{"lower": "yes", "WITH SPACE": 5}',
    b'{"PAGE": "/page/12", "MS": 57}', b'{"page": "/page/12", "ms": 57}',
    b'{"PAGE": 12, "MS": "57"}',
    b'[{"PAGE": "/p"}]', b'{"PAGE": "/p", "MS": 9223372036854775808}',
] + [b"[" * 2000 + b"]" * 2000, b'{"S": ' + b"[" * 2000 + b"]" * 2000 + b"}"]


@pytest.mark.parametrize("schema", SCHEMAS)
def test_decode_of_raw_payloads_is_the_exact_paths(schema):
    c = make(SCHEMAS[schema])
    for data in RAW_PAYLOADS:
        same_decode(c, data)
    assert c.decode(None) is None


@pytest.mark.parametrize("schema", SCHEMAS)
def test_decode_of_every_tricky_value_in_every_column_is_the_exact_paths(schema):
    columns = SCHEMAS[schema]
    c = make(columns)
    for col in columns:
        for v in TRICKY_VALUES:
            for name in (col.name, col.name.lower(), col.name.upper()):
                same_decode(c, dumps({name: v}))
                full = {x.name: None for x in columns}
                full[name] = v
                same_decode(c, dumps(full))


@pytest.mark.parametrize("col", PRIMITIVES + CONTAINERS + DECIMALS[:1], ids=str)
def test_unwrapped_values_and_single_keys_are_the_exact_paths(col):
    for c in (make([col], UNWRAPPED), make([Column(col.name, col.type, "KEY")], is_key=True)
              if not isinstance(col.type, MapType) else make([col], UNWRAPPED)):
        for v in TRICKY_VALUES:
            if not same_decode(c, dumps(v)).startswith(("SerdeError", "None")):
                same_encode(c, c.decode_exact(dumps(v)))  # a row of the column's type
        for data in RAW_PAYLOADS[:12]:
            same_decode(c, data)


def test_common_records_never_take_the_exact_path():
    c = make(SCHEMAS["bench"])

    def boom(_):
        raise AssertionError("exact path taken")
    # The generated function again, with its fallback swapped for one that fails.
    c.decode = types.FunctionType(c.decode.__code__, {**c.decode.__globals__, "_slow": boom})
    assert c.decode(b'{"PAGE": "/page/12", "MS": 57}') == ("/page/12", 57)
    assert c.decode(b'{"MS": null, "X": [1.5], "PAGE": null}') == (None, None)
    # A case-insensitive match: the exact path's object matching, not the whole exact path.
    assert c.decode(b'{"page": "/page/12", "MS": 57}') == ("/page/12", 57)
    with pytest.raises(AssertionError):
        c.decode(b'{"PAGE": "/page/12", "MS": "57"}')  # a coercion: the exact path


def test_errors_keep_ksqldb_messages():
    c = make(PRIMITIVES)
    with pytest.raises(SerdeError, match="Failed to deserialize value from topic: t. Can't convert "
                                         "type. sourceType: TextNode, requiredType: BOOLEAN"):
        c.decode(b'{"B": "true"}')
    with pytest.raises(SerdeError, match="Value is not a valid Base64 encoded string: Y"):
        c.decode(b'{"Y": "Y"}')
    with pytest.raises(SerdeError, match="Can't coerce string to type. targetType: INTEGER"):
        c.decode(b'{"I": "x"}')


ENCODE_VALUES = {
    STRING: ["", "a\"\\/\n\x00\x1f\x7f", "é€😀\u2028", "\ud800"],
    BOOLEAN: [True, False],
    INTEGER: [0, -2**31, 2**31 - 1],
    BIGINT: [2**63 - 1, -2**63, 2**64, -10**30],
    DOUBLE: [0.0, -0.0, 1.5, 1e15, 9.999999999999998e15, 1e16, -1e16, 1e300, 5e-324, 1e-7,
             math.nan, math.inf, -math.inf, 12],
    BYTES: [b"", b"\x00\xff", bytearray(b"ab")],
    DecimalType(6, 2): [Decimal("1.50"), Decimal("-0.00"), Decimal("0.00"), Decimal("9999.99"),
                        Decimal("-1.00")],
    DecimalType(20, 10): [Decimal("1E-10"), Decimal("0.0000001000")],
    ArrayType(DOUBLE): [[1.5, None, math.nan, 1e20]],
    ArrayType(STRING): [["a", None], [], ["\ud800"]],
    ArrayType(BYTES): [[b"\x00", None, bytearray(b"xy")]],
    MapType(STRING, STRING): [{"a": "x", "b": None}, {None: "n"}, {}],
    StructType([Field("s", STRING), Field("B", BOOLEAN)]): [{"s": "x", "B": True}],
    MapType(STRING, BIGINT): [{"a": 1, "b": None}, {None: 1}, {}],
    StructType([Field("X", DecimalType(4, 1))]): [{"X": Decimal("1.0")}, {"X": None}],
    STRUCT: [{"A": 1, "b": "x", "C": [math.inf]}, {"A": None, "b": None, "C": None}],
}


@pytest.mark.parametrize("type_", ENCODE_VALUES, ids=str)
def test_encode_writes_the_exact_paths_bytes(type_):
    wrapped = make([Column("K0", INTEGER), Column("V", type_), Column("W", DOUBLE)])
    unwrapped = make([Column("V", type_)], UNWRAPPED)
    for v in ENCODE_VALUES[type_] + [None]:
        for w in (None, 2.5, math.nan, 1e17):
            same_encode(wrapped, (1, v, w))
        same_encode(unwrapped, (v,))
    same_encode(wrapped, None)
    same_encode(wrapped, (1, None))  # wrong arity: the exact path's error


def test_encode_of_the_bench_row_and_no_columns():
    c = make(SCHEMAS["bench"])
    assert c.encode(("/page/12", 57)) == b'{"PAGE":"/page/12","MS":57}'
    assert make([]).encode(()) == b"{}" == make([]).encode_exact(())
    assert make([]).decode(b'{"x": 1}') == ()
    keyless = make([], is_key=True)
    assert keyless.decode(b"whatever") == () and keyless.encode(()) is None


def test_duplicate_column_names_take_the_exact_path():
    c = JsonCodec([Column("A", STRING), Column("A", STRING)], unwrapped=False, is_key=False)
    assert c.decode(b'{"a": "x"}') == ("x", "x") == c.decode_exact(b'{"a": "x"}')
    assert c.encode(("x", "y")) == c.encode_exact(("x", "y"))


def test_names_with_quotes_backslashes_or_control_characters_take_the_exact_path():
    # Quoted identifiers may hold them (`AS "x\ny"`); msgspec's renamed fields may not.
    c = make([Column('it"s', STRING), Column("x\ny", BIGINT), Column("a\\b", STRING)])
    assert same_decode(c, b'{"it\\"s": "q", "x\\ny": 2, "a\\\\b": "s"}') == "('q', 2, 's')"
    assert same_encode(c, ("q", 2, "s")) == repr(b'{"it\\"s":"q","x\\ny":2,"a\\\\b":"s"}')


def test_json_sr_value_bodies_go_through_the_same_codec():
    c = make(SCHEMAS["bench"])
    assert c.decode(memoryview(b'{"PAGE": "/p", "MS": 1}')) == ("/p", 1)
    assert c.decode(bytearray(b'{"PAGE": "/p", "MS": 1}')) == ("/p", 1)


def _random_value(rnd: random.Random, depth: int = 0):
    kind = rnd.randrange(12 if depth < 2 else 8)
    if kind == 0:
        return None
    if kind == 1:
        return rnd.choice([True, False])
    if kind == 2:
        return rnd.choice([0, 1, -7, 2**31, 2**63, -2**63 - 1, rnd.randrange(-10**6, 10**6)])
    if kind == 3:
        return rnd.choice([0.5, -0.0, 1e16, 1e-9, rnd.uniform(-1e6, 1e6),
                           round(rnd.uniform(0, 99), 2)])
    if kind in (4, 5):
        return rnd.choice(["", "12", "x", "1.5", "YWJj", "true", "é", " 3 "])
    if kind in (6, 7):
        return rnd.randrange(-1000, 1000)
    if kind in (8, 9):
        return [_random_value(rnd, depth + 1) for _ in range(rnd.randrange(3))]
    keys = ["A", "a", "b", "B", "C", "k"]
    return {rnd.choice(keys): _random_value(rnd, depth + 1) for _ in range(rnd.randrange(4))}


@pytest.mark.parametrize("schema", SCHEMAS)
def test_differential_fuzz(schema):
    columns = SCHEMAS[schema]
    c = make(columns)
    rnd = random.Random(16)
    names = [n for col in columns for n in (col.name, col.name.lower(), col.name.upper())] + ["X"]
    for _ in range(3000):
        width = rnd.randrange(len(columns) + 2)
        obj = {rnd.choice(names): _random_value(rnd) for _ in range(width)}
        row = same_decode(c, dumps(obj))
        if not row.startswith("SerdeError"):
            same_encode(c, c.decode_exact(dumps(obj)))

"""JsonConverter's column writer (``_JsonColumns``: a batch of a flat STRUCT's rows, what the
JDBC source hands the worker, converted by C loops and encoded in one call) writes exactly
the bytes Connect's per-record conversion (``from_connect_data``) writes, for every column
type, with and without schemas and with NUMERIC decimals; a batch it cannot write the same
way (a value of another type, a null where none is allowed, an integer past 64 bits) goes to
the record-by-record writer, whose errors stay Connect's."""
from __future__ import annotations

import datetime
import random
import zlib
from decimal import Decimal

import pytest

from streamsql.runtime.connect.api import (
    BOOLEAN, BYTES, DATE, DECIMAL, FLOAT32, FLOAT64, INT8, INT16, INT32, INT64, STRING, STRUCT, TIME, TIMESTAMP,
    Field, Schema, Struct)
from streamsql.runtime.connect.converters import DataException, JsonConverter, _JsonColumns

UTC = datetime.timezone.utc
PLUS_2 = datetime.timezone(datetime.timedelta(hours=2))

# Every type a flat row can hold, each both required and optional (the optional ones hold nulls).
TYPES = [
    ("i8", Schema(INT8)), ("i16", Schema(INT16)), ("i32", Schema(INT32)), ("i64", Schema(INT64)),
    ("f32", Schema(FLOAT32)), ("f64", Schema(FLOAT64)), ("flag", Schema(BOOLEAN)), ("text", Schema(STRING)),
    ("raw", Schema(BYTES)),
    ("price", Schema(BYTES, name=DECIMAL, version=1, parameters=(("scale", "2"),))),
    ("big", Schema(BYTES, name=DECIMAL, version=1, parameters=(("scale", "0"),))),
    ("day", Schema(INT32, name=DATE, version=1)), ("at_time", Schema(INT32, name=TIME, version=1)),
    ("at", Schema(INT64, name=TIMESTAMP, version=1)),
]
TEXTS = ["", "plain", 'quote " and \\ backslash', "new\nline\ttab\r\x00\x01\x1f\x7f", "é ü 😀 \u2028\u2029",
         "}\n{", "/ <script>"]


def schema_of(optional: bool) -> Schema:
    fields = []
    for i, (name, s) in enumerate(TYPES):
        fields.append(Field(name, 2 * i, s))
        fields.append(Field(name + "_opt", 2 * i + 1, Schema(s.type, optional=True, name=s.name, version=s.version,
                                                              parameters=s.parameters)))
    return Schema(STRUCT, optional=optional, name="every.type", fields=tuple(fields))


def value(rng: random.Random, name: str) -> object:
    if name == "i8":
        return rng.choice([0, -128, 127, rng.randint(-128, 127)])
    if name == "i16":
        return rng.randint(-(1 << 15), (1 << 15) - 1)
    if name == "i32":
        return rng.choice([-(1 << 31), (1 << 31) - 1, rng.randint(-1000, 1000)])
    if name == "i64":
        return rng.choice([-(1 << 63), (1 << 63) - 1, rng.randint(-(1 << 63), (1 << 63) - 1)])
    if name in ("f32", "f64"):
        return rng.choice([0.0, -0.0, 0.1, 1e20, 1e-7, 3.4028234663852886e38, 123456.789, rng.uniform(-1e6, 1e6)])
    if name == "flag":
        return rng.random() < 0.5
    if name == "text":
        return rng.choice(TEXTS) + str(rng.randint(0, 99))
    if name == "raw":
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 9)))
    if name == "price":
        return Decimal(rng.randint(-10**6, 10**6)).scaleb(-2) if rng.random() < 0.8 else \
            rng.choice([Decimal("0.005"), Decimal("1.0"), Decimal("-0.01"), Decimal("12.345")])
    if name == "big":
        return Decimal(rng.randint(-10**30, 10**30))
    if name == "day":
        return datetime.date(1970, 1, 1) + datetime.timedelta(days=rng.randint(-719_000, 2_900_000))
    if name == "at_time":
        return datetime.time(rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59), rng.randint(0, 999_999))
    assert name == "at"
    micros = rng.randint(-6 * 10**16, 2 * 10**17)
    at = datetime.datetime(1970, 1, 1, tzinfo=UTC) + datetime.timedelta(microseconds=micros)
    return at if rng.random() < 0.8 else at.astimezone(PLUS_2)


def rows_of(seed: int, n: int, nulls: bool) -> list[tuple]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        row = []
        for name, _s in TYPES:
            row.append(value(rng, name))
            row.append(None if nulls and rng.random() < 0.3 else value(rng, name))
        rows.append(tuple(row))
    return rows


def converter(**configs: str) -> JsonConverter:
    c = JsonConverter()
    c.configure(configs, False)
    return c


CONFIGS = [{}, {"schemas.enable": "false"}, {"decimal.format": "NUMERIC"},
           {"decimal.format": "NUMERIC", "schemas.enable": "false"}]


@pytest.mark.parametrize("configs", CONFIGS)
@pytest.mark.parametrize("nulls", [False, True])
def test_columns_write_connects_bytes_for_every_type(configs, nulls):
    conv = converter(**configs)
    schema = schema_of(optional=False)
    rows = rows_of(7 + nulls, 300, nulls)
    columns = _JsonColumns.build(conv, schema)
    assert columns is not None
    got = columns(rows)
    assert got is not None  # written by the columns, not handed on
    expected = [conv.from_connect_data("t", schema, Struct(schema, r)) for r in rows]
    assert got == expected
    assert conv.writer("t", schema, rows=True)(rows) == expected  # what the worker calls
    assert columns(rows[:1]) == expected[:1] and columns([]) == []


def test_naive_timestamps_and_a_timestamp_column_mixing_them_are_connects():
    conv = converter(**{"schemas.enable": "false"})
    schema = Schema(STRUCT, name="r", fields=(Field("at", 0, Schema(INT64, name=TIMESTAMP, version=1)),))
    rows = [(datetime.datetime(1969, 12, 31, 23, 59, 59, 999_500),), (datetime.datetime(2024, 1, 1, tzinfo=UTC),),
            (datetime.datetime(2024, 1, 1, 2, tzinfo=PLUS_2),)]
    assert conv.writer("t", schema, rows=True)(rows) == [b'{"at":-1}', b'{"at":1704067200000}', b'{"at":1704067200000}']


def test_batches_the_columns_do_not_write_are_written_or_refused_record_by_record():
    conv = converter(**{"schemas.enable": "false"})
    schema = Schema(STRUCT, name="r", fields=(Field("id", 0, Schema(INT64)), Field("name", 1, Schema(STRING, optional=True))))
    columns = _JsonColumns.build(conv, schema)
    assert columns is not None
    write = conv.writer("t", schema, rows=True)
    # An integer past 64 bits: msgspec would write it, Connect's writer refuses it.
    assert columns([(1 << 64, "a")]) is None
    with pytest.raises(Exception):
        write([(1 << 64, "a")])
    # A null where the schema allows none, a bool for an INT64: Connect's errors.
    assert columns([(None, "a")]) is None
    with pytest.raises(DataException, match="null value for field that is required"):
        write([(1, "a"), (None, "b")])
    with pytest.raises(DataException, match="Invalid Java object for schema type INT64: bool"):
        write([(True, "a")])
    # A str subclass is not a str to the columns; the record writer takes it as Connect would.
    class Name(str):
        pass
    assert columns([(1, Name("x"))]) is None
    assert write([(1, Name("x")), (2, None)]) == [b'{"id":1,"name":"x"}', b'{"id":2,"name":null}']


def test_schemas_the_columns_leave_to_the_record_writer():
    conv = converter()
    nested = Schema(STRUCT, name="n", fields=(Field("inner", 0, Schema(STRUCT, fields=(Field("x", 0, Schema(INT32)),))),))
    defaulted = Schema(STRUCT, name="d", fields=(Field("x", 0, Schema(INT32, optional=True, default=5)),))
    quoted = Schema(STRUCT, name="q", fields=(Field('a"b', 0, Schema(INT32)),))
    for schema in (nested, defaulted, quoted):
        assert _JsonColumns.build(conv, schema) is None
    row = (None,)
    assert conv.writer("t", defaulted, rows=True)([row]) == [conv.from_connect_data("t", defaulted, Struct(defaulted, row))]
    assert conv.writer("t", quoted, rows=True)([(1,)]) == [conv.from_connect_data("t", quoted, Struct(quoted, (1,)))]


def test_the_logs_crc_is_zlibs():
    """Segments are framed with zlib-ng's CRC-32: the same values as zlib's, so segments
    written before read as they did."""
    from streamsql.runtime.log import segment

    rng = random.Random(3)
    for n in (0, 1, 7, 28, 480, 5000):
        data = bytes(rng.randrange(256) for _ in range(n))
        start = rng.randrange(1 << 32)
        assert segment.crc32(data) == zlib.crc32(data)
        assert segment.crc32(data, start) == zlib.crc32(data, start)

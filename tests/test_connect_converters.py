"""Connect's converters: the bytes Kafka Connect's JsonConverter, StringConverter and
ByteArrayConverter write (the expected texts are Connect's own output), what they read back,
and how a connector's ``key.converter``/``value.converter`` keys choose and configure them."""
from __future__ import annotations

import datetime
from decimal import Decimal

import pytest

from streamsql.runtime.connect.api import (
    BYTES, DATE, DECIMAL, FLOAT32, FLOAT64, INT32, INT64, MAP, STRING, STRUCT, ConnectException, Field, Schema,
    Struct)
from streamsql.runtime.connect.converters import (
    ByteArrayConverter, DataException, JsonConverter, StringConverter, make_converter)


def json_converter(**configs: str) -> JsonConverter:
    c = JsonConverter()
    c.configure(configs, False)
    return c


def test_a_string_line_is_written_as_connect_writes_it():
    assert json_converter().from_connect_data("t", Schema(STRING), "first message") == \
        b'{"schema":{"type":"string","optional":false},"payload":"first message"}'
    assert json_converter(**{"schemas.enable": "false"}).from_connect_data("t", Schema(STRING), "first message") == \
        b'"first message"'
    # A null key without a schema is no bytes at all, as in Connect.
    assert json_converter().from_connect_data("t", None, None) is None


def test_struct_schemas_keep_connects_key_order_and_number_forms():
    inner = Schema(MAP, optional=True, key_schema=Schema(STRING), value_schema=Schema(INT32))
    schema = Schema(STRUCT, name="row", fields=(
        Field("id", 0, Schema(INT64)), Field("price", 1, Schema(BYTES, name=DECIMAL,
                                                                parameters=(("scale", "2"),))),
        Field("ratio", 2, Schema(FLOAT64, optional=True)), Field("f", 3, Schema(FLOAT32)),
        Field("day", 4, Schema(INT32, name=DATE)), Field("tags", 5, inner)))
    value = Struct(schema, (7, Decimal("12.34"), 1e20, 0.1, datetime.date(1970, 1, 11), {"a": 1}))
    assert json_converter().from_connect_data("t", schema, value).decode() == (
        '{"schema":{"type":"struct","fields":['
        '{"type":"int64","optional":false,"field":"id"},'
        '{"type":"bytes","optional":false,"name":"org.apache.kafka.connect.data.Decimal",'
        '"parameters":{"scale":"2"},"field":"price"},'
        '{"type":"double","optional":true,"field":"ratio"},'
        '{"type":"float","optional":false,"field":"f"},'
        '{"type":"int32","optional":false,"name":"org.apache.kafka.connect.data.Date","field":"day"},'
        '{"type":"map","keys":{"type":"string","optional":false},"values":{"type":"int32","optional":false},'
        '"optional":true,"field":"tags"}],"optional":false,"name":"row"},'
        '"payload":{"id":7,"price":"BNI=","ratio":1.0E20,"f":0.1,"day":10,"tags":{"a":1}}}')


def test_json_reads_back_what_it_wrote_and_refuses_plain_json_with_schemas():
    c = json_converter()
    schema = Schema(STRUCT, fields=(Field("n", 0, Schema(INT32)), Field("s", 1, Schema(STRING, optional=True))))
    data = c.from_connect_data("t", schema, Struct(schema, (5, None)))
    read_schema, value = c.to_connect_data("t", data)
    assert read_schema == schema and value == Struct(schema, (5, None))
    with pytest.raises(DataException, match='requires "schema" and "payload" fields'):
        c.to_connect_data("t", b'{"LINE":"x"}')
    assert json_converter(**{"schemas.enable": "false"}).to_connect_data("t", b'{"LINE":"x"}') == (None, {"LINE": "x"})
    with pytest.raises(DataException, match="Conversion error: null value for field that is required"):
        c.from_connect_data("t", Schema(STRING), None)


def test_string_and_byte_array_converters():
    s = StringConverter()
    s.configure({}, False)
    assert s.from_connect_data("t", None, "héllo") == "héllo".encode()
    assert s.to_connect_data("t", b"x") == (Schema(STRING, optional=True), "x")
    b = ByteArrayConverter()
    b.configure({}, True)
    assert b.from_connect_data("t", None, b"\x00\x01") == b"\x00\x01"
    with pytest.raises(DataException):
        b.from_connect_data("t", Schema(STRING), "x")


def test_converters_are_chosen_and_configured_by_connects_keys():
    worker = {"value.converter": "org.apache.kafka.connect.json.JsonConverter",
              "value.converter.schemas.enable": "false"}
    # The connector's own converter and sub-keys win; without one the worker's, with its keys.
    own = make_converter({"value.converter": "org.apache.kafka.connect.json.JsonConverter",
                          "value.converter.schemas.enable": "true"}, worker, "value")
    assert isinstance(own, JsonConverter) and own.schemas_enabled
    inherited = make_converter({}, worker, "value")
    assert isinstance(inherited, JsonConverter) and not inherited.schemas_enabled
    assert isinstance(make_converter({"key.converter": "org.apache.kafka.connect.storage.StringConverter"},
                                     worker, "key"), StringConverter)
    with pytest.raises(ConnectException, match='Missing required configuration "schema.registry.url"'):
        make_converter({"value.converter": "io.confluent.connect.avro.AvroConverter"}, {}, "value")
    with pytest.raises(ConnectException, match="Class com.example.Nope could not be found"):
        make_converter({"value.converter": "com.example.Nope"}, {}, "value")


def test_the_writer_made_per_schema_writes_the_same_bytes_as_one_record_at_a_time():
    """The compiled batch writer (what the worker uses) against Connect's bytes: logical
    types to the millisecond, defaults, bytes, floats, NUMERIC decimals, and values of the
    wrong type rejected with Connect's error, not written."""
    from streamsql.runtime.connect.api import BOOLEAN, INT8, TIME, TIMESTAMP

    schema = Schema(STRUCT, name="r", fields=(
        Field("at", 0, Schema(INT64, optional=True, name=TIMESTAMP, version=1)),
        Field("t", 1, Schema(INT32, name=TIME, version=1)),
        Field("raw", 2, Schema(BYTES, optional=True)),
        Field("f", 3, Schema(FLOAT32)),
        Field("flag", 4, Schema(BOOLEAN, optional=True, default=True)),
        Field("price", 5, Schema(BYTES, name=DECIMAL, parameters=(("scale", "2"),))),
        Field("tiny", 6, Schema(INT8))))
    utc = datetime.timezone.utc
    rows = [(datetime.datetime(2024, 1, 1, 0, 0, 1, 123000, tzinfo=utc), datetime.time(1, 2, 3, 4999),
             b"\xff\x00", 0.1, None, Decimal("-0.01"), -3),
            (datetime.datetime(1969, 12, 31, 23, 59, 59, 999000), datetime.time(0), None, 3.4028234663852886e38,
             False, Decimal("12.345"), 127)]
    payloads = [b'{"at":1704067201123,"t":3723004,"raw":"/wA=","f":0.1,"flag":true,"price":"/w==","tiny":-3}',
                b'{"at":-1,"t":0,"raw":null,"f":3.4028235E38,"flag":false,"price":"BNI=","tiny":127}']
    plain = json_converter(**{"schemas.enable": "false"})
    assert plain.writer("t", schema, rows=True)(rows) == payloads
    assert plain.writer("t", schema)([Struct(schema, r) for r in rows]) == payloads
    assert [plain.from_connect_data("t", schema, Struct(schema, r)) for r in rows] == payloads
    numeric = json_converter(**{"decimal.format": "NUMERIC", "schemas.enable": "false"})
    assert numeric.writer("t", schema, rows=True)(rows[:1]) == [payloads[0].replace(b'"/w=="', b"-0.01")]
    enveloped = json_converter()
    assert enveloped.writer("t", schema, rows=True)(rows)[1] == enveloped.from_connect_data(
        "t", schema, Struct(schema, rows[1]))
    # A bool where an INT8 goes, a missing required value: Connect's errors, naming the topic.
    with pytest.raises(DataException, match="failed due to serialization error of topic t: Invalid Java "
                                            "object for schema type INT8: bool"):
        plain.writer("t", schema, rows=True)([rows[0][:6] + (True,)])
    with pytest.raises(DataException, match="null value for field that is required"):
        plain.writer("t", schema, rows=True)([(None, None) + rows[0][2:]])

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
    with pytest.raises(ConnectException, match="needs a schema registry and is not built into streamsql yet"):
        make_converter({"value.converter": "io.confluent.connect.avro.AvroConverter"}, {}, "value")
    with pytest.raises(ConnectException, match="Class com.example.Nope could not be found"):
        make_converter({"value.converter": "com.example.Nope"}, {}, "value")

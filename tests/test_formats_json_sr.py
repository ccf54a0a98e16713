"""JSON_SR: Confluent framing around JSON, Connect-style JSON schemas, inference."""
from __future__ import annotations

import json
import struct
from decimal import Decimal

import pytest

from streamsql.formats.base import CodecContext, FormatOptions, SerdeError
from streamsql.formats.registry import get_format
from streamsql.schema import Column
from streamsql.schemaregistry.ksql import infer_columns
from streamsql.schemaregistry.store import SchemaStore
from streamsql.types import (
    BIGINT,
    BOOLEAN,
    DATE,
    DOUBLE,
    INTEGER,
    STRING,
    ArrayType,
    DecimalType,
    Field,
    MapType,
    StructType,
)

JSON_SR = get_format("JSON_SR")


def codec(columns, registry, topic="t", is_key=False, **options):
    return JSON_SR.codec(columns, FormatOptions(**options), is_key, context=CodecContext(topic, registry))


def test_payload_is_header_then_json_and_schema_is_connects():
    reg = SchemaStore()
    c = codec([Column("FOO", INTEGER), Column("BAR", DecimalType(4, 2))], reg)
    data = c.encode((10, Decimal("1.50")))
    sid = reg.get_latest("t-value").schema_id
    assert data == b"\x00" + struct.pack(">I", sid) + b'{"FOO":10,"BAR":1.50}'
    assert json.loads(reg.get_latest("t-value").schema) == {"type": "object", "properties": {
        "FOO": {"connect.index": 0, "oneOf": [{"type": "null"}, {"type": "integer", "connect.type": "int32"}]},
        "BAR": {"connect.index": 1, "oneOf": [{"type": "null"}, {
            "type": "number", "title": "org.apache.kafka.connect.data.Decimal", "connect.version": 1,
            "connect.type": "bytes", "connect.parameters": {"scale": "2", "connect.decimal.precision": "4"}}]}}}
    assert c.decode(data) == (10, Decimal("1.50"))


def test_decoding_coerces_as_json_does():
    reg = SchemaStore()
    sid = reg.register("t-value", "JSON", json.dumps({"type": "object"}))
    c = codec([Column("FOO", STRING), Column("N", BIGINT)], reg)
    assert c.decode(b"\x00" + struct.pack(">I", sid) + b'{"foo": 10, "n": "12"}') == ("10", 12)


def test_single_keys_are_bare():
    reg = SchemaStore()
    c = codec([Column("K", ArrayType(STRING), "KEY")], reg, is_key=True)
    data = c.encode((["a", None],))
    assert data[5:] == b'["a",null]'
    assert json.loads(reg.get_latest("t-key").schema) == {
        "oneOf": [{"type": "null"}, {"type": "array", "items": {"oneOf": [{"type": "null"}, {"type": "string"}]}}]}


@pytest.mark.parametrize("payload, reason", [
    (b'{"FOO": 1}', "magic byte"),
    (b"\x00\x00\x00\x00\x09{}", "id 9"),
])
def test_bad_payloads_are_serde_errors(payload, reason):
    with pytest.raises(SerdeError, match=reason):
        codec([Column("FOO", INTEGER)], SchemaStore()).decode(payload)


def test_inference_from_json_schemas():
    reg = SchemaStore()
    reg.register("t-value", "JSON", json.dumps({"type": "object", "properties": {
        "b": {"connect.index": 3, "type": "boolean"},
        "i": {"connect.index": 0, "type": "integer"},
        "i32": {"connect.index": 1, "oneOf": [{"type": "null"}, {"type": "integer", "connect.type": "int32"}]},
        "d": {"connect.index": 2, "type": "number"},
        "dt": {"connect.index": 4, "type": "integer", "title": "org.apache.kafka.connect.data.Date"},
        "m": {"connect.index": 5, "type": "object", "additionalProperties": {"type": "number"}},
        "s": {"connect.index": 6, "type": "object", "properties": {"x": {"type": "string"}}},
        "a": {"connect.index": 7, "type": "array", "items": {"$ref": "#/definitions/n"}}},
        "definitions": {"n": {"type": "integer"}}}))
    cols = infer_columns(JSON_SR, reg, "t-value", False)
    assert [(c.name, c.type) for c in cols] == [
        ("I", BIGINT), ("I32", INTEGER), ("D", DOUBLE), ("B", BOOLEAN), ("DT", DATE),
        ("M", MapType(STRING, DOUBLE)), ("S", StructType([Field("X", STRING)])), ("A", ArrayType(BIGINT))]
    reg.register("t-key", "JSON", json.dumps({"oneOf": [{"type": "null"}, {"type": "integer", "connect.type": "int32"}]}))
    assert [(c.name, c.type) for c in infer_columns(JSON_SR, reg, "t-key", True)] == [("ROWKEY", INTEGER)]


def test_json_form_round_trip_uses_the_registered_schema_id():
    reg = SchemaStore()
    sid = reg.register("t-value", "JSON", json.dumps({"type": "object", "properties": {"A": {"type": "string"}}}))
    c = codec([Column("A", STRING)], reg)
    data = c.from_json_form({"A": "x"})
    assert data[1:5] == struct.pack(">I", sid)
    assert c.to_json_form(data) == {"A": "x"}
    assert c.decode(data) == ("x",)

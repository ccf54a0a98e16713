"""PROTOBUF and PROTOBUF_NOSR: Confluent framing with message indexes, ksqlDB's generated
schemas, proto3 defaults and nullable representations, well-known types, the .proto parser."""
from __future__ import annotations

import struct
from decimal import Decimal

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from streamsql.errors import KsqlException
from streamsql.formats.base import CodecContext, FormatOptions, SerdeError
from streamsql.formats.protobuf import decode_indexes, encode_indexes
from streamsql.formats.registry import get_format
from streamsql.schema import Column
from streamsql.schemaregistry.ksql import infer_columns
from streamsql.schemaregistry.protoparse import parse_proto
from streamsql.schemaregistry.store import SchemaStore
from streamsql.types import (
    BIGINT,
    BOOLEAN,
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

PROTOBUF = get_format("PROTOBUF")
NOSR = get_format("PROTOBUF_NOSR")


def codec(fmt, columns, registry, topic="t", is_key=False, **options):
    return fmt.codec(columns, FormatOptions(**options), is_key, context=CodecContext(topic, registry))


def independent_class(fields: list[tuple[str, int, int]], name: str = "M"):
    """A message class built without streamsql's parser: (name, number, FieldDescriptorProto type)."""
    fdp = descriptor_pb2.FileDescriptorProto(name="independent.proto", syntax="proto3")
    msg = fdp.message_type.add(name=name)
    for fname, number, ftype in fields:
        msg.field.add(name=fname, number=number, type=ftype,
                      label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(name))


FD = descriptor_pb2.FieldDescriptorProto
COLUMNS = [Column("I", INTEGER), Column("L", BIGINT), Column("D", DOUBLE), Column("B", BOOLEAN), Column("S", STRING)]


@pytest.mark.parametrize("path, encoded", [([0], b"\x00"), ([1], b"\x02\x02"), ([0, 2], b"\x04\x00\x04")])
def test_message_indexes(path, encoded):
    assert encode_indexes(path) == encoded
    assert decode_indexes(b"\x00" * 5 + encoded + b"rest", 5) == (path, 5 + len(encoded))


def test_writes_ksqldbs_schema_and_confluents_bytes():
    reg = SchemaStore()
    c = codec(PROTOBUF, COLUMNS, reg)
    data = c.encode((1, 2, 3.5, True, "x"))
    registered = reg.get_latest("t-value")
    assert registered.schema_type == "PROTOBUF"
    assert "message ConnectDefault1 {" in registered.schema and "int32 I = 1;" in registered.schema
    cls = independent_class([("I", 1, FD.TYPE_INT32), ("L", 2, FD.TYPE_INT64), ("D", 3, FD.TYPE_DOUBLE),
                             ("B", 4, FD.TYPE_BOOL), ("S", 5, FD.TYPE_STRING)])
    expected = cls(I=1, L=2, D=3.5, B=True, S="x").SerializeToString()
    assert data == b"\x00" + struct.pack(">I", registered.schema_id) + b"\x00" + expected
    assert c.decode(data) == (1, 2, 3.5, True, "x")


def test_proto3_nulls_read_back_as_defaults():
    reg = SchemaStore()
    c = codec(PROTOBUF, COLUMNS + [Column("A", ArrayType(STRING)), Column("ST", StructType([Field("F", INTEGER)]))], reg)
    assert c.decode(c.encode((None,) * 7)) == (0, 0, 0.0, False, "", [], None)
    assert c.decode(c.encode((None, None, None, None, None, None, {"F": None}))) == (0, 0, 0.0, False, "", [], {"F": 0})


def test_wrapper_representation_keeps_nulls():
    reg = SchemaStore()
    opts = {"extra": (("NULLABLE_REPRESENTATION", "WRAPPER"),)}
    c = codec(PROTOBUF, COLUMNS, reg, **opts)
    assert c.decode(c.encode((None, 0, None, False, None))) == (None, 0, None, False, None)
    assert "google.protobuf.Int32Value I = 1;" in reg.get_latest("t-value").schema
    o = codec(PROTOBUF, COLUMNS, reg, topic="o", extra=(("NULLABLE_REPRESENTATION", "OPTIONAL"),))
    assert o.decode(o.encode((None, 0, None, False, ""))) == (None, 0, None, False, "")


def test_well_known_types_round_trip():
    reg = SchemaStore()
    cols = [Column("DEC", DecimalType(6, 2)), Column("DT", DATE), Column("TM", TIME), Column("TS", TIMESTAMP),
            Column("M", MapType(STRING, StructType([Field("X", BIGINT)]))), Column("A", ArrayType(DOUBLE))]
    c = codec(PROTOBUF, cols, reg)
    row = (Decimal("-1234.50"), 19000, 45_296_789, 1_600_000_000_123, {"k": {"X": 5}}, [1.5, 2.0])
    assert c.decode(c.encode(row)) == row
    schema = reg.get_latest("t-value").schema
    for text in ("confluent.type.Decimal DEC = 1", "google.type.Date DT = 2", "google.type.TimeOfDay TM = 3",
                 "google.protobuf.Timestamp TS = 4", "map<string, ConnectDefault2> M = 5", "repeated double A = 6"):
        assert text in schema
    # Inference reads the decimal's precision and scale back from the field options.
    assert [str(c.type) for c in infer_columns(PROTOBUF, reg, "t-value", False)][0] == "DECIMAL(6, 2)"


def test_reads_other_writers_messages_and_schema_full_names():
    reg = SchemaStore()
    text = ('syntax = "proto3"; package acme; message First { uint32 k1 = 1; } '
            'message Second { float c1 = 1; uint32 c2 = 2; enum E { A = 0; B = 1; } E e = 3; }')
    sid = reg.register("t-value", "PROTOBUF", text)
    opts = dict(schema_name="acme.Second")
    cols = infer_columns(PROTOBUF, reg, "t-value", False, FormatOptions(**opts))
    assert [(c.name, c.type) for c in cols] == [("C1", DOUBLE), ("C2", BIGINT), ("E", STRING)]
    c = codec(PROTOBUF, cols, reg, **opts)
    fdp = descriptor_pb2.FileDescriptorProto(name="x.proto", package="acme", syntax="proto3")
    fdp.message_type.add(name="First")
    m = fdp.message_type.add(name="Second")
    m.field.add(name="c1", number=1, type=FD.TYPE_FLOAT, label=FD.LABEL_OPTIONAL)
    m.field.add(name="c2", number=2, type=FD.TYPE_UINT32, label=FD.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    cls = message_factory.GetMessageClass(pool.FindMessageTypeByName("acme.Second"))
    payload = b"\x00" + struct.pack(">I", sid) + b"\x02\x02" + cls(c1=1.25, c2=4000000000).SerializeToString()
    assert c.decode(payload) == (1.25, 4000000000, "A")
    assert c.to_json_form(payload) == {"c1": 1.25, "c2": 4000000000, "e": "A"}


def test_bad_payloads_are_serde_errors():
    reg = SchemaStore()
    c = codec(PROTOBUF, COLUMNS, reg)
    good = c.encode((1, 2, 3.0, True, "x"))
    with pytest.raises(SerdeError, match="magic byte"):
        c.decode(b"\x05" + good[1:])
    with pytest.raises(SerdeError, match="id 77"):
        c.decode(b"\x00\x00\x00\x00\x4d\x00")
    with pytest.raises(SerdeError):
        c.decode(good[:6] + b"\x0a\xff")  # a truncated length-delimited field


def test_protobuf_has_no_unwrapped_values_and_only_string_map_keys():
    with pytest.raises(KsqlException, match="Format 'PROTOBUF' does not support 'WRAP_SINGLE_VALUE' set to 'false'"):
        PROTOBUF.validate([Column("V", INTEGER)], FormatOptions(wrap_single_value=False), False)
    with pytest.raises(KsqlException, match="PROTOBUF format only supports MAP types with STRING keys"):
        PROTOBUF.validate([Column("V", MapType(INTEGER, INTEGER))], FormatOptions(), False)


def test_keys_are_messages():
    reg = SchemaStore()
    c = codec(PROTOBUF, [Column("F1", INTEGER, "KEY"), Column("F2", STRING, "KEY")], reg, is_key=True)
    assert c.decode(c.encode((1, "a"))) == (1, "a")
    reg.register("k-key", "PROTOBUF", 'syntax = "proto3"; message K { int32 F1 = 1; }')
    assert [(c.name, c.namespace) for c in infer_columns(PROTOBUF, reg, "k-key", True)] == [("F1", "KEY")]


def test_nosr_is_bare_protobuf_without_a_registry():
    c = NOSR.codec(COLUMNS, FormatOptions(), False, context=CodecContext("t", None))
    data = c.encode((1, None, 2.5, None, "s"))
    cls = independent_class([("I", 1, FD.TYPE_INT32), ("L", 2, FD.TYPE_INT64), ("D", 3, FD.TYPE_DOUBLE),
                             ("B", 4, FD.TYPE_BOOL), ("S", 5, FD.TYPE_STRING)])
    assert data == cls(I=1, D=2.5, S="s").SerializeToString()
    assert c.decode(data) == (1, 0, 2.5, False, "s")
    assert c.from_json_form({"i": 3}) == cls(I=3).SerializeToString()
    assert not NOSR.supports_inference


def test_proto_parser_reads_the_declarations_that_carry_data():
    pf = parse_proto("""
        // comment
        syntax = "proto3";
        package a.b;
        import "google/protobuf/wrappers.proto";
        option java_package = "x";
        message Outer {
          message Inner { int32 x = 1; }
          enum Color { RED = 0; GREEN = 1; }
          reserved 9;
          Inner inner = 1;
          repeated string tags = 2 [packed = true];
          map<string, Inner> by_name = 3;
          oneof choice { string s = 4; int64 n = 5; }
          optional bool flag = 6;
          /* block */ Color color = 7;
        }
        service S { rpc Call (Outer) returns (Outer); }
    """)
    outer = pf.first_message()
    assert (pf.package, outer.full_name) == ("a.b", "a.b.Outer")
    assert [(f.name, f.label, f.is_map) for f in outer.fields] == [
        ("inner", "", False), ("tags", "repeated", False), ("by_name", "repeated", True), ("s", "", False),
        ("n", "", False), ("flag", "optional", False), ("color", "", False)]
    assert outer.oneofs == ["choice"] and pf.message_path("a.b.Outer.Inner") == [0, 0]

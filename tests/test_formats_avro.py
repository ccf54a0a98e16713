"""The AVRO format: Confluent's wire format byte for byte, ksqlDB's schemas and type mapping,
reading data of other writers' schemas, bad payloads, inference, and the engine end to end."""
from __future__ import annotations

import asyncio
import io
import json
import struct
from decimal import Decimal
from pathlib import Path

import fastavro
import orjson
import pytest

from streamsql.engine import PROCESSING_LOG_TOPIC, Engine
from streamsql.errors import KsqlStatementException
from streamsql.formats.base import CodecContext, FormatOptions, SerdeError
from streamsql.formats.registry import get_format
from streamsql.runtime.log.base import ProducerRecord
from streamsql.runtime.log.embedded import EmbeddedLog
from streamsql.schema import Column
from streamsql.schemaregistry.ksql import infer_columns
from streamsql.schemaregistry.store import SchemaStore
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

AVRO = get_format("AVRO")


def codec(columns, registry, topic="t", is_key=False, **options):
    return AVRO.codec(columns, FormatOptions(**options), is_key, context=CodecContext(topic, registry))


def confluent(schema_id: int, schema, datum) -> bytes:
    """What Confluent's KafkaAvroSerializer writes: magic 0, id, schemaless Avro."""
    bio = io.BytesIO()
    fastavro.schemaless_writer(bio, fastavro.parse_schema(schema), datum)
    return b"\x00" + struct.pack(">I", schema_id) + bio.getvalue()


def read_confluent(registry, data: bytes):
    assert data[0] == 0
    (schema_id,) = struct.unpack(">I", data[1:5])
    schema = fastavro.parse_schema(json.loads(registry.get_by_id(schema_id).schema))
    return fastavro.schemaless_reader(io.BytesIO(data[5:]), schema, None)


COLUMNS = [Column("ID", BIGINT), Column("NAME", STRING), Column("OK", BOOLEAN)]


def test_writes_ksqldbs_schema_and_confluents_bytes():
    reg = SchemaStore()
    c = codec(COLUMNS, reg)
    data = c.encode((7, "seven", None))
    schema = json.loads(reg.get_latest("t-value").schema)
    assert schema == {"type": "record", "name": "KsqlDataSourceSchema", "namespace": "io.confluent.ksql.avro_schemas",
                      "fields": [{"name": "ID", "type": ["null", "long"], "default": None},
                                 {"name": "NAME", "type": ["null", "string"], "default": None},
                                 {"name": "OK", "type": ["null", "boolean"], "default": None}]}
    sid = reg.get_latest("t-value").schema_id
    assert data == confluent(sid, schema, {"ID": 7, "NAME": "seven", "OK": None})
    assert c.decode(data) == (7, "seven", None)
    assert read_confluent(reg, data) == {"ID": 7, "NAME": "seven", "OK": None}


def test_reads_records_of_an_evolved_writer_schema():
    reg = SchemaStore()
    writer = {"type": "record", "name": "Other", "namespace": "com.acme", "fields": [
        {"name": "name", "type": "string"},
        {"name": "id", "type": "int"},  # int read as BIGINT
        {"name": "extra", "type": "double"}]}
    sid = reg.register("t-value", "AVRO", json.dumps(writer))
    c = codec(COLUMNS, reg)
    # Fields match by name (case-insensitively), not position; OK is missing, so NULL.
    assert c.decode(confluent(sid, writer, {"name": "n", "id": 3, "extra": 1.5})) == (3, "n", None)


def test_type_mapping_round_trips():
    reg = SchemaStore()
    cols = [Column("D", DecimalType(4, 2)), Column("DT", DATE), Column("TM", TIME), Column("TS", TIMESTAMP),
            Column("B", BYTES), Column("A", ArrayType(INTEGER)), Column("M", MapType(STRING, DOUBLE)),
            Column("S", StructType([Field("X", INTEGER), Field("Y", ArrayType(STRING))]))]
    c = codec(cols, reg)
    row = (Decimal("12.34"), 19000, 3_600_000, 1_600_000_000_123, b"\x01\x02", [1, None, 3],
           {"a": 1.5, "b": None}, {"X": 1, "Y": ["p"]})
    data = c.encode(row)
    assert c.decode(data) == row
    schema = json.loads(reg.get_latest("t-value").schema)
    types = {f["name"]: f["type"][1] for f in schema["fields"]}
    assert types["D"]["logicalType"] == "decimal" and (types["D"]["precision"], types["D"]["scale"]) == (4, 2)
    assert (types["DT"]["logicalType"], types["TM"]["logicalType"], types["TS"]["logicalType"]) == \
        ("date", "time-millis", "timestamp-millis")
    # Maps are written as ksqlDB writes them: arrays of key/value records.
    assert types["M"]["type"] == "array"
    assert types["M"]["items"]["connect.internal.type"] == "MapEntry"
    assert [f["name"] for f in types["M"]["items"]["fields"]] == ["key", "value"]
    assert types["S"]["name"] == "KsqlDataSourceSchema_S"
    raw = read_confluent(reg, data)
    assert raw["M"] == [{"key": "a", "value": 1.5}, {"key": "b", "value": None}]
    assert raw["D"] == Decimal("12.34")


def test_avro_maps_and_enums_of_other_writers():
    reg = SchemaStore()
    writer = {"type": "record", "name": "W", "fields": [
        {"name": "M", "type": {"type": "map", "values": "long"}},
        {"name": "E", "type": {"type": "enum", "name": "Suit", "symbols": ["SPADES", "HEARTS"]}},
        {"name": "F", "type": {"type": "fixed", "name": "md5", "size": 2}}]}
    sid = reg.register("t-value", "AVRO", json.dumps(writer))
    c = codec([Column("M", MapType(STRING, BIGINT)), Column("E", STRING), Column("F", BYTES)], reg)
    assert c.decode(confluent(sid, writer, {"M": {"k": 1}, "E": "HEARTS", "F": b"ab"})) == ({"k": 1}, "HEARTS", b"ab")


def test_single_keys_and_unwrapped_values_are_bare():
    reg = SchemaStore()
    key = codec([Column("K", BIGINT, "KEY")], reg, is_key=True)
    data = key.encode((998877665544332211,))
    assert json.loads(reg.get_latest("t-key").schema) == ["null", "long"]
    assert read_confluent(reg, data) == 998877665544332211
    assert key.decode(data) == (998877665544332211,)
    value = codec([Column("V", STRING)], reg, wrap_single_value=False)
    assert read_confluent(reg, value.encode(("x",))) == "x"
    assert value.encode((None,)) is None  # a null unwrapped value is a tombstone


def test_schema_full_name_names_the_record():
    reg = SchemaStore()
    codec(COLUMNS, reg, schema_name="com.acme.Thing").encode((1, "a", True))
    schema = json.loads(reg.get_latest("t-value").schema)
    assert (schema["namespace"], schema["name"]) == ("com.acme", "Thing")


def test_writing_with_a_schema_id_uses_that_schema():
    reg = SchemaStore()
    physical = {"type": "record", "name": "P", "fields": [
        {"name": "name", "type": "string"}, {"name": "count", "type": "int", "default": 0}]}
    sid = reg.register("other-value", "AVRO", json.dumps(physical))
    c = codec([Column("NAME", STRING), Column("COUNT", INTEGER)], reg, schema_id=sid)
    data = c.encode(("x", None))
    assert data[1:5] == struct.pack(">I", sid)
    assert read_confluent(reg, data) == {"name": "x", "count": 0}  # NULL into a non-null field: its default


@pytest.mark.parametrize("payload, reason", [
    (b"\x01\x00\x00\x00\x01\x02", "magic byte"),
    (b"\x00\x00\x00\x00\x63\x02", "id 99"),
    (b"\x00", "too short"),
])
def test_bad_payloads_are_serde_errors(payload, reason):
    reg = SchemaStore()
    reg.register("t-value", "AVRO", json.dumps({"type": "record", "name": "R", "fields": [
        {"name": "ID", "type": "long"}]}))
    with pytest.raises(SerdeError, match=reason):
        codec(COLUMNS, reg).decode(payload)


def test_undecodable_bytes_are_serde_errors():
    reg = SchemaStore()
    sid = reg.register("t-value", "AVRO", json.dumps({"type": "record", "name": "R", "fields": [
        {"name": "NAME", "type": "string"}]}))
    with pytest.raises(SerdeError, match=f"id {sid}"):
        codec(COLUMNS, reg).decode(b"\x00" + struct.pack(">I", sid) + b"\x7f")  # string of length -64


def test_map_keys_must_be_strings():
    with pytest.raises(Exception, match="Avro only supports MAPs with STRING keys"):
        AVRO.validate([Column("M", MapType(INTEGER, DOUBLE))], FormatOptions(), False)


def test_inference_names_columns_as_ksqldb_does():
    reg = SchemaStore()
    schema = {"type": "record", "name": "R", "fields": [
        {"name": "c1", "type": ["null", "int"]}, {"name": "from", "type": "string"},
        {"name": "nested", "type": {"type": "record", "name": "N", "fields": [{"name": "f1", "type": "long"}]}},
        {"name": "m", "type": {"type": "map", "values": "double"}}]}
    sid = reg.register("t-value", "AVRO", json.dumps(schema))
    by_subject = infer_columns(AVRO, reg, "t-value", False)
    assert [(c.name, str(c.type)) for c in by_subject] == [
        ("C1", "INTEGER"), ("from", "STRING"), ("NESTED", "STRUCT<`F1` BIGINT>"), ("M", "MAP<STRING, DOUBLE>")]
    by_id = infer_columns(AVRO, reg, sid, False, topic="t")
    assert [c.name for c in by_id] == ["c1", "from", "nested", "m"]  # an explicit id keeps the names
    reg.register("t-key", "AVRO", '"string"')
    assert [(c.name, c.type) for c in infer_columns(AVRO, reg, "t-key", True)] == [("ROWKEY", STRING)]


# ------------------------------------------------------------------------------------ engine
async def _records(log: EmbeddedLog, topic: str) -> list:
    out = []
    for partition, end in enumerate(await log.end_offsets(topic)):
        batch = await log.fetch(topic, partition, 0, end)
        out += list(zip(batch.keys, batch.values))
    return out


async def _wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.02)


def test_engine_reads_foreign_avro_and_writes_avro_others_can_read(tmp_path: Path) -> None:
    async def main() -> None:
        log = EmbeddedLog(tmp_path)
        engine = Engine(log, {"auto.offset.reset": "earliest"})
        await engine.start()
        reg = engine.schema_registry
        writer = {"type": "record", "name": "Click", "namespace": "com.acme", "fields": [
            {"name": "user", "type": "string"}, {"name": "ms", "type": "long"}]}
        sid = reg.register("clicks-value", "AVRO", json.dumps(writer))
        await reg.flush()
        await log.create_topic("clicks", 1)
        # A stream declared with no columns: they come from the registered schema.
        await engine.execute("CREATE STREAM clicks WITH (kafka_topic='clicks', value_format='AVRO');")
        assert [(c.name, c.type) for c in engine.catalog.sources["CLICKS"].schema.value] == \
            [("USER", STRING), ("MS", BIGINT)]
        await engine.execute("CREATE STREAM slow AS SELECT user, ms * 2 AS ms2 FROM clicks WHERE ms > 100;")
        await log.produce("clicks", [
            ProducerRecord(None, confluent(sid, writer, {"user": "u1", "ms": 500}), 1),
            ProducerRecord(None, b"\x00\x00\x00\x03\xe7garbage", 2),  # unknown schema id 999
            ProducerRecord(None, confluent(sid, writer, {"user": "u2", "ms": 5}), 3),
            ProducerRecord(None, confluent(sid, writer, {"user": "u3", "ms": 200}), 4)])

        async def done() -> bool:
            return len(await _records(log, "SLOW")) == 2 and len(await _records(log, PROCESSING_LOG_TOPIC)) == 1
        await _wait_for(done)
        rows = [read_confluent(reg, v) for _, v in await _records(log, "SLOW")]
        assert rows == [{"USER": "u1", "MS2": 1000}, {"USER": "u3", "MS2": 400}]
        [(_, entry)] = await _records(log, PROCESSING_LOG_TOPIC)
        assert "999" in orjson.loads(entry)["MESSAGE"]["ERRORMESSAGE"]
        await engine.close()
        await log.close()

        # After a restart the registry (and so the inferred stream) come back from the log.
        log = EmbeddedLog(tmp_path)
        engine = Engine(log, {"auto.offset.reset": "earliest"})
        await engine.start()
        assert "SLOW-value" in engine.schema_registry.subjects()
        assert [c.name for c in engine.catalog.sources["CLICKS"].schema.value] == ["USER", "MS"]
        await engine.close()
        await log.close()
    asyncio.run(main())


def test_incompatible_sink_schema_is_rejected_with_the_registrys_reason() -> None:
    async def main() -> None:
        log = EmbeddedLog(None)
        engine = Engine(log, {"auto.offset.reset": "earliest"})
        await engine.start()
        engine.schema_registry.register("OUT-value", "AVRO", json.dumps({
            "type": "record", "name": "KsqlDataSourceSchema", "namespace": "io.confluent.ksql.avro_schemas",
            "fields": [{"name": "V", "type": "boolean"}]}))
        await engine.execute("CREATE STREAM s (v STRING) WITH (kafka_topic='s', value_format='AVRO', partitions=1);")
        with pytest.raises(KsqlStatementException, match="Could not register schema for topic: .*incompatible"):
            await engine.execute("CREATE STREAM out AS SELECT * FROM s;")
        assert "OUT" not in engine.catalog.sources
        await engine.close()
    asyncio.run(main())


def test_create_contradicting_the_registered_schema_is_rejected() -> None:
    async def main() -> None:
        log = EmbeddedLog(None)
        engine = Engine(log, {"auto.offset.reset": "earliest"})
        await engine.start()
        engine.schema_registry.register("s-value", "AVRO", json.dumps({
            "type": "record", "name": "R", "fields": [{"name": "v", "type": "string"}]}))
        with pytest.raises(KsqlStatementException, match="do not match the schema registered for subject 's-value'"):
            await engine.execute("CREATE STREAM s (v BIGINT) WITH (kafka_topic='s', value_format='AVRO', partitions=1);")
        # Compatible declarations are fine (a STRING column reads anything).
        await engine.execute("CREATE STREAM s2 (v STRING, w INT) WITH (kafka_topic='s', value_format='AVRO');")
        await engine.close()
    asyncio.run(main())


def test_missing_subject_fails_inference_with_ksqldbs_message() -> None:
    async def main() -> None:
        engine = Engine(EmbeddedLog(None))
        await engine.start()
        with pytest.raises(KsqlStatementException,
                           match="Schema for message values on topic 'nope' does not exist in the Schema Registry"):
            await engine.execute("CREATE STREAM s WITH (kafka_topic='nope', value_format='AVRO', partitions=1);")
        await engine.close()
    asyncio.run(main())


def test_generated_codec_agrees_with_fastavro_byte_for_byte():
    # A schema exercising every Avro type the generated reader/writer handles.
    schema = {"type": "record", "name": "All", "namespace": "x", "fields": [
        {"name": "b", "type": "boolean"}, {"name": "i", "type": "int"}, {"name": "l", "type": "long"},
        {"name": "f", "type": "float"}, {"name": "d", "type": "double"}, {"name": "s", "type": "string"},
        {"name": "by", "type": "bytes"},
        {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["A", "B", "C"]}},
        {"name": "fx", "type": {"type": "fixed", "name": "F4", "size": 4}},
        {"name": "n", "type": ["null", "long"]}, {"name": "n2", "type": ["string", "null"]},
        {"name": "u", "type": ["null", "int", "string"]},
        {"name": "a", "type": {"type": "array", "items": ["null", "string"]}},
        {"name": "m", "type": {"type": "map", "values": "int"}},
        {"name": "r", "type": {"type": "record", "name": "Sub", "fields": [{"name": "x", "type": "long"}]}},
        {"name": "dec", "type": {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 3}},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}}]}
    reg = SchemaStore()
    sid = reg.register("t-value", "AVRO", json.dumps(schema))
    c = codec([], reg)
    compiled = c.compiled(sid)
    datum = {"b": True, "i": -2_000_000_000, "l": 9_000_000_000_000_000_000, "f": 1.5, "d": -0.25, "s": "héllo",
             "by": b"\x00\xff", "e": "C", "fx": b"abcd", "n": None, "n2": "x", "u": "str",
             "a": ["p", None, "q" * 200], "m": {"k": -1, "z": 300}, "r": {"x": -64},
             "dec": Decimal("-12345.678"), "ts": 1_600_000_000_123}
    independent = confluent(sid, {**schema, "fields": [
        f if f["name"] != "ts" else {"name": "ts", "type": "long"} for f in schema["fields"]]}, datum)
    row = compiled.read(independent)
    assert row == (True, -2_000_000_000, 9_000_000_000_000_000_000, 1.5, -0.25, "héllo", b"\x00\xff", "C", b"abcd",
                   None, "x", {"int": None, "string": "str"}, ["p", None, "q" * 200], {"k": -1, "z": 300},
                   {"x": -64}, Decimal("-12345.678"), 1_600_000_000_123)
    assert compiled.write(row) == independent

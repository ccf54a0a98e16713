"""Confluent's AvroConverter, ProtobufConverter and JsonSchemaConverter against the built-in
schema registry: a JDBC source (SQLite) run by ``streamsql server`` with each converter,
``value.converter.schema.registry.url`` pointing at the server's own ``/schema-registry``;
the schema registered under ``<topic>-value`` as Confluent's converters do (AvroData's Avro
schema, text for text), and a stream declared over the topic with ``value_format='AVRO'``
(``PROTOBUF``, ``JSON_SR``) and no columns reading the rows back, its columns inferred from the
registry. Also the converters on their own: logical types, what they read back, their config
errors."""
from __future__ import annotations

import datetime
import io
import json
import sqlite3
import urllib.request
from decimal import Decimal

import fastavro
import pytest

from streamsql.runtime.connect.api import (
    BYTES, DECIMAL, INT16, INT32, INT64, STRING, STRUCT, TIMESTAMP, ConnectException, Field, Schema, Struct)
from streamsql.runtime.connect.converters import make_converter
from streamsql.schemaregistry.store import SchemaStore
from streamsql.server.testing import NodeProcess
from tests.test_connect_file import eventually, ok

AVRO = "io.confluent.connect.avro.AvroConverter"
PROTOBUF = "io.confluent.connect.protobuf.ProtobufConverter"
JSON_SCHEMA = "io.confluent.connect.json.JsonSchemaConverter"


def get(url: str) -> object:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return json.loads(resp.read())


def push_rows(url: str, sql: str, limit: int) -> list[list[object]]:
    body = {"ksql": sql, "streamsProperties": {"auto.offset.reset": "earliest"}}
    req = urllib.request.Request(url + "/query", json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        items = json.loads(resp.read())
    rows = [i["row"]["columns"] for i in items if "row" in i]
    assert len(rows) == limit, items
    return rows


@pytest.mark.timeout(240)
def test_jdbc_rows_through_each_registry_converter_read_by_a_stream_without_columns(tmp_path):
    db = tmp_path / "shop.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE items (id INTEGER PRIMARY KEY NOT NULL, name TEXT NOT NULL, qty INTEGER)")
    con.executemany("INSERT INTO items VALUES (?, ?, ?)", [(1, "apple", 3), (2, "pear", None), (3, "plum", 7)])
    con.commit()
    con.close()
    with NodeProcess(tmp_path / "data") as node:
        url = node.url
        registry = f"{url}/schema-registry"
        for prefix, converter in (("avro-", AVRO), ("proto-", PROTOBUF), ("jsr-", JSON_SCHEMA)):
            ok(url, f"CREATE SOURCE CONNECTOR {prefix[:-1]}_items WITH ("
                    f"'connector.class'='io.confluent.connect.jdbc.JdbcSourceConnector', "
                    f"'connection.url'='jdbc:sqlite:{db}', 'mode'='incrementing', "
                    f"'incrementing.column.name'='id', 'topic.prefix'='{prefix}', "
                    f"'value.converter'='{converter}', 'value.converter.schema.registry.url'='{registry}');")
        eventually(lambda: {"avro-items-value", "proto-items-value", "jsr-items-value"} <= set(get(
            f"{registry}/subjects")), what="the three subjects registered")

        # AvroData's schema, as Confluent's AvroConverter registers it for this table (SQLite's
        # INTEGER is Connect's INT32, as Confluent's JDBC source maps it).
        latest = get(f"{registry}/subjects/avro-items-value/versions/latest")
        assert json.loads(latest["schema"]) == {
            "type": "record", "name": "items", "fields": [
                {"name": "id", "type": "int"}, {"name": "name", "type": "string"},
                {"name": "qty", "type": ["null", "int"], "default": None}],
            "connect.name": "items"}
        assert get(f"{registry}/subjects/proto-items-value/versions/latest")["schemaType"] == "PROTOBUF"
        assert get(f"{registry}/subjects/jsr-items-value/versions/latest")["schemaType"] == "JSON"

        for prefix, fmt in (("avro-", "AVRO"), ("proto-", "PROTOBUF"), ("jsr-", "JSON_SR")):
            stream = f"{prefix[:-1]}_stream"
            ok(url, f"CREATE STREAM {stream} WITH (kafka_topic='{prefix}items', value_format='{fmt}');")
            described = ok(url, f"DESCRIBE {stream};")[0]["sourceDescription"]
            assert [(f["name"], f["schema"]["type"]) for f in described["fields"]] == [
                ("ID", "INTEGER"), ("NAME", "STRING"), ("QTY", "INTEGER")]
            rows = push_rows(url, f"SELECT id, name, qty FROM {stream} EMIT CHANGES LIMIT 3;", 3)
            # proto3 has no nulls: a NULL scalar reads back as its default, as in ksqlDB.
            assert rows == [[1, "apple", 3], [2, "pear", 0 if fmt == "PROTOBUF" else None], [3, "plum", 7]]


def _avro_converter(registry: SchemaStore, **extra: str):
    config = {"value.converter": AVRO, "value.converter.schema.registry.url": "http://localhost:8088/schema-registry",
              **extra}
    return make_converter(config, {}, "value", lambda url: registry)


def test_avro_converter_writes_avrodata_schemas_and_logical_types_and_reads_them_back():
    registry = SchemaStore()
    converter = _avro_converter(registry)
    schema = Schema(STRUCT, name="shop.orders", fields=(
        Field("id", 0, Schema(INT64)), Field("amount", 1, Schema(BYTES, True, DECIMAL, 1, parameters=(("scale", "2"),))),
        Field("at", 2, Schema(INT64, name=TIMESTAMP, version=1)), Field("n", 3, Schema(INT16)),
        Field("note", 4, Schema(STRING, optional=True))))
    rows = [(7, Decimal("12.34"), datetime.datetime(2024, 1, 1, 0, 0, 1, 123000), 3, None),
            (8, None, datetime.datetime(1969, 12, 31, 23, 59, 59), -2, "x")]
    data = converter.writer("orders", schema, rows=True)(rows)
    # The same bytes one record at a time, and through Structs.
    assert data == [converter.from_connect_data("orders", schema, Struct(schema, r)) for r in rows]
    latest = registry.latest_or_none("orders-value")
    assert latest is not None and json.loads(latest.schema) == {
        "type": "record", "name": "orders", "namespace": "shop", "fields": [
            {"name": "id", "type": "long"},
            {"name": "amount", "type": ["null", {
                "type": "bytes", "scale": 2, "precision": 64, "connect.version": 1,
                "connect.parameters": {"scale": "2"}, "connect.name": "org.apache.kafka.connect.data.Decimal",
                "logicalType": "decimal"}], "default": None},
            {"name": "at", "type": {"type": "long", "connect.version": 1,
                                    "connect.name": "org.apache.kafka.connect.data.Timestamp",
                                    "logicalType": "timestamp-millis"}},
            {"name": "n", "type": {"type": "int", "connect.type": "int16"}},
            {"name": "note", "type": ["null", "string"], "default": None}],
        "connect.name": "shop.orders"}
    # Confluent's wire format: magic byte, the registered id, Avro binary any reader reads.
    assert data[0][:5] == b"\x00" + latest.schema_id.to_bytes(4, "big")
    parsed = fastavro.parse_schema(json.loads(latest.schema))
    assert fastavro.schemaless_reader(io.BytesIO(data[0][5:]), parsed) == {
        "id": 7, "amount": Decimal("12.34"), "n": 3, "note": None,
        "at": datetime.datetime(2024, 1, 1, 0, 0, 1, 123000, tzinfo=datetime.timezone.utc)}
    read_schema, value = converter.to_connect_data("orders", data[1])
    assert [f.name for f in read_schema.fields] == ["id", "amount", "at", "n", "note"]
    assert value.values == (8, None, datetime.datetime(1969, 12, 31, 23, 59, 59), -2, "x")
    # A plain string (a file source's line) is registered as the Avro "string"; null stays null.
    assert converter.from_connect_data("lines", Schema(STRING), "first") == \
        b"\x00" + registry.latest_or_none("lines-value").schema_id.to_bytes(4, "big") + b"\nfirst"
    assert registry.latest_or_none("lines-value").schema == '"string"'
    assert converter.from_connect_data("lines", Schema(STRING, optional=True), None) is None
    assert converter.to_connect_data("lines", None) == (None, None)


def test_registry_converters_config_errors():
    with pytest.raises(ConnectException, match='Missing required configuration "schema.registry.url"'):
        make_converter({"value.converter": PROTOBUF}, {}, "value")
    registry = SchemaStore()
    converter = _avro_converter(registry, **{"value.converter.auto.register.schemas": "false"})
    schema = Schema(STRUCT, name="t", fields=(Field("n", 0, Schema(INT32)),))
    with pytest.raises(ConnectException, match="Subject 'nothing-value' not found"):
        converter.from_connect_data("nothing", schema, Struct(schema, (1,)))

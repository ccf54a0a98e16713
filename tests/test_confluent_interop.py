"""Confluent interoperability of the AVRO format and the built-in schema registry.

An independent Confluent-format Avro serializer (confluent-kafka's ``AvroSerializer``) writes
records against the engine's built-in registry, served over HTTP by ``SchemaRegistryServer``;
a stream declared with no columns reads them, and what streamsql writes is read back by
confluent-kafka's ``AvroDeserializer``. Nothing is mocked: real HTTP on 127.0.0.1, an on-disk
embedded log, the engine in service mode.

confluent-kafka is in the ``[test]`` extra; in CI (``CI`` set) a missing install is an error,
not a skip.
"""
from __future__ import annotations

import asyncio
import json
import os
import socket
import urllib.error
import urllib.request
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest

try:
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
    from confluent_kafka.schema_registry.error import SchemaRegistryError as ConfluentError
    from confluent_kafka.serialization import MessageField, SerializationContext
except ImportError:  # pragma: no cover - only without the [test] extra, never in CI
    if os.environ.get("CI"):
        raise
    pytest.skip("confluent-kafka[avro,schemaregistry] is not installed (pip install -e '.[test]')",
                allow_module_level=True)

from streamsql.engine import Engine
from streamsql.runtime.log.base import ProducerRecord
from streamsql.runtime.log.embedded import EmbeddedLog
from streamsql.schemaregistry.server import SchemaRegistryServer
from streamsql.schemaregistry.store import SCHEMAS_TOPIC, SchemaStore
from streamsql.types import BIGINT, DOUBLE, STRING, TIMESTAMP, ArrayType, DecimalType

pytestmark = pytest.mark.timeout(30)

ORDER_SCHEMA = {"type": "record", "name": "Order", "namespace": "com.acme", "fields": [
    {"name": "id", "type": "long"},
    {"name": "item", "type": "string"},
    {"name": "price", "type": "double"},
    {"name": "note", "type": ["null", "string"], "default": None},
    {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}},
    {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "tags", "type": {"type": "array", "items": "string"}},
]}


def _ts(second: int) -> datetime:
    return datetime(2024, 1, 2, 3, 4, second, tzinfo=timezone.utc)


ORDERS = [
    {"id": 1, "item": "apple", "price": 1.5, "note": None, "amount": Decimal("12.34"), "ts": _ts(5),
     "tags": ["fruit", "red"]},
    {"id": 2, "item": "pear", "price": -0.25, "note": "ripe", "amount": Decimal("-0.01"), "ts": _ts(6),
     "tags": []},
    {"id": 3, "item": "fig ☃", "price": 1e300, "note": "", "amount": Decimal("99999999.99"), "ts": _ts(7),
     "tags": ["x"]},
]


async def _topic_values(log: EmbeddedLog, topic: str) -> list[bytes]:
    out: list[bytes] = []
    for partition, end in enumerate(await log.end_offsets(topic)):
        if end:
            out += (await log.fetch(topic, partition, 0, end)).values
    return out


async def _wait_for_records(log: EmbeddedLog, topic: str, count: int, timeout: float = 8.0) -> list[bytes]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if await log.describe_topic(topic) is not None:
            values = await _topic_values(log, topic)
            if len(values) >= count:
                return values
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {count} records in {topic}")
        await asyncio.sleep(0.02)


def test_confluent_avro_serializer_and_deserializer_interoperate(tmp_path: Path) -> None:
    async def main() -> None:
        log = EmbeddedLog(tmp_path)
        engine = Engine(log, {"auto.offset.reset": "earliest"})  # service mode, built-in registry on the log's _schemas topic
        await engine.start()
        # The registry is served on the engine's loop, so the (synchronous) Confluent client
        # is called from worker threads while the loop keeps serving.
        with SchemaRegistryServer(engine.schema_registry, loop=asyncio.get_running_loop()) as server:
            client = SchemaRegistryClient({"url": server.url})
            serializer = AvroSerializer(client, json.dumps(ORDER_SCHEMA))
            ctx = SerializationContext("t", MessageField.VALUE)
            payloads = [await asyncio.to_thread(serializer, order, ctx) for order in ORDERS]

            # The serializer registered its schema under t-value through the HTTP endpoint, and
            # the write is already in the registry's compacted topic.
            latest = await asyncio.to_thread(client.get_latest_version, "t-value")
            assert json.loads(latest.schema.schema_str) == ORDER_SCHEMA
            assert all(p[0] == 0 and int.from_bytes(p[1:5], "big") == latest.schema_id for p in payloads)
            persisted = [json.loads(v) for v in await _topic_values(log, SCHEMAS_TOPIC)]
            assert [(v["subject"], v["id"]) for v in persisted] == [("t-value", latest.schema_id)]

            await log.create_topic("t", 1)
            await log.produce("t", [ProducerRecord(None, p, 1_000 + i) for i, p in enumerate(payloads)])

            # No columns: they are inferred from the registered schema, names upper-cased.
            await engine.execute("CREATE STREAM s WITH (kafka_topic='t', value_format='AVRO');")
            expected_columns = [("ID", BIGINT), ("ITEM", STRING), ("PRICE", DOUBLE), ("NOTE", STRING),
                                ("AMOUNT", DecimalType(10, 2)), ("TS", TIMESTAMP), ("TAGS", ArrayType(STRING))]
            assert [(c.name, c.type) for c in engine.catalog.sources["S"].schema.value] == expected_columns
            [described] = await engine.execute("DESCRIBE s;")
            assert described.rows == [("ID", "BIGINT"), ("ITEM", "VARCHAR(STRING)"), ("PRICE", "DOUBLE"),
                                      ("NOTE", "VARCHAR(STRING)"), ("AMOUNT", "DECIMAL(10, 2)"),
                                      ("TS", "TIMESTAMP"), ("TAGS", "ARRAY<VARCHAR(STRING)>")]

            # A push query reads the Confluent-serialized records.
            [push] = await engine.execute("SELECT id, item, amount, tags FROM s EMIT CHANGES LIMIT 3;",
                                          {"auto.offset.reset": "earliest"})
            rows = [row async for row in push.stream]
            assert rows == [(o["id"], o["item"], o["amount"], o["tags"]) for o in ORDERS]

            # Two sinks: one with ksqlDB's own schema (registered under OUT-value), one written
            # with the producer's schema by id.
            await engine.execute("CREATE STREAM out AS SELECT * FROM s;")
            await engine.execute(
                f"CREATE STREAM same_schema WITH (value_schema_id={latest.schema_id}) AS SELECT * FROM s;")
            out_values = await _wait_for_records(log, "OUT", len(ORDERS))
            same_values = await _wait_for_records(log, "SAME_SCHEMA", len(ORDERS))

            # A fresh client, so everything is fetched over HTTP, not from the serializer's cache.
            reader = SchemaRegistryClient({"url": server.url})
            deserializer = AvroDeserializer(reader)
            out_rows = [await asyncio.to_thread(deserializer, v, SerializationContext("OUT", MessageField.VALUE))
                        for v in out_values]
            assert out_rows == [{k.upper(): v for k, v in o.items()} for o in ORDERS]
            sink_schema = json.loads((await asyncio.to_thread(reader.get_latest_version, "OUT-value"))
                                     .schema.schema_str)
            assert sink_schema["name"] == "KsqlDataSourceSchema"
            same_rows = [await asyncio.to_thread(deserializer, v,
                                                 SerializationContext("SAME_SCHEMA", MessageField.VALUE))
                         for v in same_values]
            assert same_rows == ORDERS
            assert sorted(await asyncio.to_thread(reader.get_subjects)) == ["OUT-value", "t-value"]
            reader.close()
            client.close()
        await engine.close()
        await log.close()

    asyncio.run(main())


def _get(url: str) -> tuple[int, object]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback test server
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_server_binds_loopback_answers_confluent_errors_and_stops() -> None:
    store = SchemaStore()  # no loop given: the server runs the registry on a loop of its own
    server = SchemaRegistryServer(store).start()
    url = server.url
    host, port = url.removeprefix("http://").split(":")
    assert host == "127.0.0.1" and int(port) > 0
    client = SchemaRegistryClient({"url": url})
    try:
        sid = client.register_schema("k-value", Schema('"string"', "AVRO"))
        assert store.get_latest("k-value").schema_id == sid
        with pytest.raises(ConfluentError) as err:
            client.register_schema("k-value", Schema('"long"', "AVRO"))  # BACKWARD refuses it
        assert err.value.http_status_code == 409
        assert _get(f"{url}/schemas/ids/{sid + 40}")[1]["error_code"] == 40403
        assert _get(f"{url}/no/such/endpoint")[0] == 404
    finally:
        client.close()
        server.stop()
    server.stop()  # idempotent
    # The port is released: nothing answers there any more.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", int(port)), timeout=1).close()

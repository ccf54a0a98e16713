"""The schema registry: the built-in store on a Log, compatibility rules, the REST dispatcher,
the HTTP client, and the engine using an external registry through ksql.schema.registry.url."""
from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import pytest

from streamsql.runtime.log.embedded import EmbeddedLog
from streamsql.schemaregistry import rest
from streamsql.schemaregistry.client import (
    IncompatibleSchemaError,
    InvalidSchemaError,
    SchemaNotFoundError,
    SchemaReference,
    SubjectNotFoundError,
)
from streamsql.schemaregistry.http import HttpSchemaRegistryClient
from streamsql.schemaregistry.store import SchemaStore


def avro(fields: list, name: str = "R") -> str:
    return json.dumps({"type": "record", "name": name, "fields": fields})


A1 = avro([{"name": "a", "type": "int"}])
A2 = avro([{"name": "a", "type": "long"}, {"name": "b", "type": ["null", "string"], "default": None}])
A_BAD = avro([{"name": "a", "type": "string"}])
A_NO_DEFAULT = avro([{"name": "a", "type": "int"}, {"name": "c", "type": "int"}])


def run(coro):
    return asyncio.run(coro)


# --------------------------------------------------------------------------------- the store
def test_register_is_idempotent_and_versions_grow():
    s = SchemaStore()
    first = s.register("t-value", "AVRO", A1)
    assert s.register("t-value", "AVRO", json.dumps(json.loads(A1), indent=2)) == first
    second = s.register("t-value", "AVRO", A2)
    assert second != first
    assert s.versions("t-value") == [1, 2]
    latest = s.get_latest("t-value")
    assert (latest.schema_id, latest.version, latest.subject) == (second, 2, "t-value")
    assert s.get_version("t-value", 1).schema_id == first
    # The same schema under another subject keeps its global id.
    assert s.register("u-value", "AVRO", A1) == first
    assert s.subjects() == ["t-value", "u-value"]
    assert s.lookup("t-value", "AVRO", A2).version == 2


def test_backward_compatibility_is_the_default():
    s = SchemaStore()
    s.register("t-value", "AVRO", A1)
    with pytest.raises(IncompatibleSchemaError, match="t-value"):
        s.register("t-value", "AVRO", A_BAD)
    with pytest.raises(IncompatibleSchemaError, match="READER_FIELD_MISSING_DEFAULT_VALUE"):
        s.register("t-value", "AVRO", A_NO_DEFAULT)
    assert s.test_compatibility("t-value", "AVRO", A2) == []
    assert s.get_compatibility("t-value") == "BACKWARD"


def test_compatibility_levels():
    s = SchemaStore()
    s.register("t-value", "AVRO", A1)
    s.set_compatibility("NONE", "t-value")
    s.register("t-value", "AVRO", A_BAD)  # anything goes
    assert s.get_compatibility("t-value") == "NONE"
    assert s.get_compatibility() == "BACKWARD"
    s.set_compatibility("FORWARD")
    s.register("f-value", "AVRO", A2)
    # FORWARD: the old schema must read the new one's data; dropping the defaulted field is fine.
    s.register("f-value", "AVRO", avro([{"name": "a", "type": "long"}]))
    with pytest.raises(IncompatibleSchemaError):
        s.register("f-value", "AVRO", avro([{"name": "z", "type": "long"}]))


def test_transitive_checks_every_version():
    s = SchemaStore()
    s.set_compatibility("BACKWARD_TRANSITIVE")
    s.register("t-value", "AVRO", avro([{"name": "a", "type": "int"}]))
    s.register("t-value", "AVRO", avro([{"name": "a", "type": "int"}, {"name": "b", "type": "int", "default": 0}]))
    # Reads version 2 (b has a default) but not version 1 (no b at all, and no default).
    with pytest.raises(IncompatibleSchemaError):
        s.register("t-value", "AVRO", avro([{"name": "a", "type": "int"}, {"name": "b", "type": "int"}]))


def test_invalid_schemas_are_refused():
    s = SchemaStore()
    with pytest.raises(InvalidSchemaError):
        s.register("t-value", "AVRO", '{"type": "record", "name": "R", "fields": [{"name": "a", "type": "nope"}]}')
    with pytest.raises(InvalidSchemaError):
        s.register("t-value", "PROTOBUF", "message {")
    with pytest.raises(InvalidSchemaError):
        s.register("t-value", "PROTOBUF", 'syntax = "proto3"; message M { Unknown u = 1; }')


def test_json_and_protobuf_compatibility():
    s = SchemaStore()
    s.register("j-value", "JSON", json.dumps({"type": "object", "properties": {"a": {"type": "integer"}}}))
    s.register("j-value", "JSON", json.dumps({"type": "object", "properties": {"a": {"type": "number"}}}))
    with pytest.raises(IncompatibleSchemaError):
        s.register("j-value", "JSON", json.dumps({"type": "object", "properties": {"a": {"type": "string"}}}))
    s.register("p-value", "PROTOBUF", 'syntax = "proto3"; message M { int32 a = 1; }')
    s.register("p-value", "PROTOBUF", 'syntax = "proto3"; message M { int64 a = 1; string b = 2; }')
    with pytest.raises(IncompatibleSchemaError):
        s.register("p-value", "PROTOBUF", 'syntax = "proto3"; message M { string a = 1; }')


def test_protobuf_references_resolve_through_subjects():
    s = SchemaStore()
    s.register("event.proto", "PROTOBUF", 'syntax = "proto3"; message Event { int64 ts = 1; }')
    sid = s.register("t-value", "PROTOBUF", 'syntax = "proto3"; import "event.proto"; message L { Event e = 1; }',
                     (SchemaReference("event.proto", "event.proto", 1),))
    assert s.get_by_id(sid).references[0].subject == "event.proto"
    with pytest.raises(InvalidSchemaError):
        s.register("u-value", "PROTOBUF", 'syntax = "proto3"; import "missing.proto"; message L { Event e = 1; }')


def test_explicit_ids_and_deletes():
    s = SchemaStore()
    assert s.register("t-value", "AVRO", A1, schema_id=101) == 101
    assert s.register("u-value", "AVRO", '"string"') == 102
    with pytest.raises(InvalidSchemaError):
        s.register("v-value", "AVRO", '"long"', schema_id=101)
    assert s.delete_subject("t-value") == [1]
    with pytest.raises(SubjectNotFoundError):
        s.get_latest("t-value")
    assert s.get_by_id(101).schema_type == "AVRO"  # ids outlive soft-deleted versions
    with pytest.raises(SchemaNotFoundError):
        s.get_by_id(7)


def test_store_state_survives_a_restart_through_its_topic(tmp_path):
    async def scenario():
        log = EmbeddedLog(str(tmp_path))
        s = SchemaStore(log)
        await s.start()
        one = s.register("t-value", "AVRO", A1)
        two = s.register("t-value", "AVRO", A2)
        s.set_compatibility("FULL", "t-value")
        s.register("gone-value", "AVRO", '"int"')
        s.delete_subject("gone-value")
        await s.flush()
        info = await log.describe_topic("_schemas")
        await log.close()
        log2 = EmbeddedLog(str(tmp_path))
        s2 = SchemaStore(log2)
        await s2.start()
        out = (one, two, s2.versions("t-value"), s2.get_latest("t-value").schema_id, s2.get_compatibility("t-value"),
               s2.subjects(), s2.register("x-value", "AVRO", '"string"'), dict(info.config))
        await log2.close()
        return out

    one, two, versions, latest, level, subjects, next_id, config = run(scenario())
    assert versions == [1, 2] and latest == two and level == "FULL"
    assert subjects == ["t-value"]
    assert next_id == max(one, two) + 2  # ids continue after the deleted subject's id
    assert config.get("cleanup.policy") == "compact"


def test_schemas_topic_uses_confluents_record_layout():
    async def scenario():
        log = EmbeddedLog(None)
        s = SchemaStore(log)
        await s.start()
        s.register("t-value", "PROTOBUF", 'syntax = "proto3"; message M { int32 a = 1; }')
        await s.flush()
        batch = await log.fetch("_schemas", 0, 0)
        return json.loads(batch.keys[0]), json.loads(batch.values[0])

    key, value = run(scenario())
    assert key == {"keytype": "SCHEMA", "subject": "t-value", "version": 1, "magic": 1}
    assert value["schemaType"] == "PROTOBUF" and value["id"] == 1 and value["deleted"] is False


# ------------------------------------------------------------------------------------- REST
def test_rest_dispatch_follows_confluents_api():
    s = SchemaStore()
    status, body = rest.handle(s, "POST", "/subjects/t-value/versions", {}, {"schema": A1})
    assert (status, body) == (200, {"id": 1})
    assert rest.handle(s, "GET", "/subjects", {}, None) == (200, ["t-value"])
    status, body = rest.handle(s, "GET", "/subjects/t-value/versions/latest", {}, None)
    assert body["version"] == 1 and body["id"] == 1 and "schemaType" not in body
    status, body = rest.handle(s, "POST", "/subjects/t-value/versions", {}, {"schema": A_BAD})
    assert status == 409 and body["error_code"] == 409
    status, body = rest.handle(s, "GET", "/schemas/ids/99", {}, None)
    assert status == 404 and body["error_code"] == 40403
    status, body = rest.handle(s, "POST", "/compatibility/subjects/t-value/versions/latest", {"verbose": "true"},
                               {"schema": A_BAD})
    assert body["is_compatible"] is False and body["messages"]
    assert rest.handle(s, "PUT", "/config", {}, {"compatibility": "none"}) == (200, {"compatibility": "NONE"})
    assert rest.handle(s, "GET", "/config", {}, None) == (200, {"compatibilityLevel": "NONE"})


class _Handler(BaseHTTPRequestHandler):
    registry: SchemaStore

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        status, out = rest.handle(self.registry, self.command, parts.path, dict(parse_qsl(parts.query)), body)
        data = json.dumps(out).encode()
        self.send_response(status)
        self.send_header("Content-Type", rest.CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = _serve

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def registry_server():
    store = SchemaStore()
    handler = type("H", (_Handler,), {"registry": store})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield store, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_http_client_speaks_the_rest_api(registry_server):
    store, url = registry_server
    c = HttpSchemaRegistryClient(url)
    sid = c.register("t-value", "AVRO", A1)
    assert store.get_by_id(sid).schema == A1
    assert c.get_by_id(sid).schema_type == "AVRO"
    assert c.register("t-value", "AVRO", A2) == 2
    assert c.versions("t-value") == [1, 2]
    assert c.get_latest("t-value").version == 2
    assert c.subjects() == ["t-value"]
    assert c.lookup("t-value", "AVRO", A1).version == 1
    assert c.test_compatibility("t-value", "AVRO", A_BAD)
    with pytest.raises(IncompatibleSchemaError):
        c.register("t-value", "AVRO", A_BAD)
    with pytest.raises(SchemaNotFoundError):
        c.get_by_id(404)
    with pytest.raises(SubjectNotFoundError):
        c.get_latest("nope-value")
    c.set_compatibility("NONE", "t-value")
    assert c.get_compatibility("t-value") == "NONE"
    pid = c.register("p-value", "PROTOBUF", 'syntax = "proto3"; message M { int32 a = 1; }')
    assert c.get_by_id(pid).schema_type == "PROTOBUF"
    assert c.delete_subject("p-value") == [1]


def test_engine_uses_an_external_registry_when_configured(registry_server):
    from streamsql.engine import Engine

    store, url = registry_server

    async def scenario():
        engine = Engine(EmbeddedLog(None), config={"ksql.schema.registry.url": url}, mode="test",
                        auto_create_topics=True)
        await engine.start()
        await engine.execute("CREATE STREAM S (K STRING KEY, V INT) WITH (kafka_topic='s', value_format='AVRO', "
                             "partitions=1);")
        await engine.execute("CREATE STREAM T AS SELECT * FROM S;")
        await engine.close()

    run(scenario())
    assert store.subjects() == ["T-value", "s-value"]
    schema = json.loads(store.get_latest("T-value").schema)
    assert schema["name"] == "KsqlDataSourceSchema" and schema["namespace"] == "io.confluent.ksql.avro_schemas"
    assert schema["fields"] == [{"name": "V", "type": ["null", "int"], "default": None}]


def test_unreachable_registry_is_an_error():
    from streamsql.schemaregistry.client import SchemaRegistryError

    c = HttpSchemaRegistryClient("http://127.0.0.1:9", timeout=1)
    with pytest.raises(SchemaRegistryError, match="unreachable"):
        c.subjects()

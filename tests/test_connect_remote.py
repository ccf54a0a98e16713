"""Connectors streamsql does not build in go to a real Kafka Connect cluster (``ksql.connect.url``,
as ksqlDB): a real broker, Apache Kafka's own distributed Connect worker from kafka/connect-lib
(``make connect-jars``) and a streamsql server node, one of each for the module.

The remote class is MirrorMaker 2's ``MirrorSourceConnector`` (connect-mirror, on the worker's
classpath as in Kafka's distribution): it needs nothing but Kafka, copying a topic of the test
broker to ``src.<topic>`` byte for byte. CREATE/SHOW/DESCRIBE/DROP CONNECTOR reach it, the copied
records are read with kcat and with a streamsql query, Connect's refusals come back quoted as
ksqlDB quotes them, and a Connect cluster that is down fails only what needs it.
"""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from streamsql.testing.connect import ConnectWorker, connect_unavailable_reason
from streamsql.testing.kafka import free_ports, kcat_consume, kcat_produce
from streamsql.testing.nodes import Node, wait_for

pytestmark = pytest.mark.timeout(300)

MIRROR = "org.apache.kafka.connect.mirror.MirrorSourceConnector"
BYTES = "org.apache.kafka.connect.converters.ByteArrayConverter"


def _require_connect() -> None:
    reason = connect_unavailable_reason()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail(f"{reason}; under CI the Kafka Connect tests must run", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def connect(kafka, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConnectWorker]:
    """A distributed Connect worker on the session's broker, a group and topics of its own."""
    _require_connect()
    suffix = uuid.uuid4().hex[:8]
    worker = ConnectWorker(tmp_path_factory.mktemp("connect-"), kafka.bootstrap_servers,
                           group_id=f"connect-{suffix}", topic_prefix=f"connect-{suffix}",
                           die_with_parent=True)
    worker.start()
    try:
        yield worker
    finally:
        worker.kill()


def _node(kafka, base: Path, name: str, config: dict[str, str]) -> Node:
    return Node(name, kafka.bootstrap_servers, "svc_" + uuid.uuid4().hex[:8], base, config).start()


@pytest.fixture(scope="module")
def node(kafka, kcat, connect, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """A streamsql server sending the connectors it does not build in to ``connect``."""
    n = _node(kafka, tmp_path_factory.mktemp("nodes-"), "node-remote",
              # A loaded test machine may take Connect more than ksqlDB's 5 s to answer.
              {"ksql.connect.url": connect.url, "ksql.connect.request.timeout.ms": "60000",
               "connect.offset.flush.interval.ms": "300"})
    try:
        yield n
    finally:
        n.stop()


def ksql(node: Node, sql: str) -> tuple[int, Any]:
    """``POST /ksql``: the status and the parsed body, errors included."""
    resp = httpx.post(node.url + "/ksql", json={"ksql": sql, "streamsProperties": {}}, timeout=60)
    return resp.status_code, resp.json()


def ok(node: Node, sql: str) -> list[dict[str, Any]]:
    status, body = ksql(node, sql)
    assert status == 200, body
    return body


def mirror_config(kafka, topic: str, **extra: str) -> str:
    config = {"connector.class": MIRROR, "source.cluster.alias": "src", "target.cluster.alias": "dst",
              "source.cluster.bootstrap.servers": kafka.bootstrap_servers,
              "target.cluster.bootstrap.servers": kafka.bootstrap_servers,
              "topics": topic, "tasks.max": "1", "key.converter": BYTES, "value.converter": BYTES,
              # One broker: the topics it creates get one replica; no ACLs to copy.
              "replication.factor": "1", "offset-syncs.topic.replication.factor": "1",
              "sync.topic.acls.enabled": "false", **extra}
    return ", ".join(f"'{k}'='{v}'" for k, v in config.items())


def remote_names(connect: ConnectWorker) -> list[str]:
    return httpx.get(connect.url + "/connectors", timeout=10).json()


def test_a_connector_that_is_not_built_in_runs_on_kafka_connect(kafka, connect, node, unique_topic, tmp_path):
    topic = unique_topic("orders")
    name = "MIRROR_" + uuid.uuid4().hex[:6].upper()
    ok(node, f"CREATE STREAM orders (item STRING) WITH (kafka_topic='{topic}', "
             "value_format='JSON', partitions=1);")
    kcat_produce(kafka.bootstrap_servers, topic,
                 [(None, json.dumps({"ITEM": f"item-{i}"})) for i in range(3)])

    (created,) = ok(node, f"CREATE SOURCE CONNECTOR {name} WITH ({mirror_config(kafka, topic)});")
    assert created["@type"] == "connector_info"
    assert created["info"]["name"] == name and created["info"]["type"] == "source"
    assert created["info"]["config"]["connector.class"] == MIRROR
    assert name in remote_names(connect)  # on the Connect cluster, not in the node

    # MirrorMaker copies the topic to src.<topic>, records unchanged.
    copied = f"src.{topic}"
    got = wait_for("the copied records", lambda: [r.value for r in kcat_consume(
        kafka.bootstrap_servers, copied, timeout=10)] if copied in _topics(kafka) else None, timeout=120)
    assert got == [json.dumps({"ITEM": f"item-{i}"}) for i in range(3)]

    # ... and read with streamsql.
    ok(node, f"CREATE STREAM copied (item STRING) WITH (kafka_topic='{copied}', value_format='JSON');")
    rows = node.query_stream("SELECT item FROM copied EMIT CHANGES LIMIT 3;", {"auto.offset.reset": "earliest"})
    assert [r for r in rows[1:] if isinstance(r, list)] == [[f"item-{i}"] for i in range(3)], rows

    # A built-in connector beside it, in the node's own worker.
    local = "LOCAL_" + uuid.uuid4().hex[:6].upper()
    (tmp_path / "in.txt").write_text("")
    ok(node, f"CREATE SOURCE CONNECTOR {local} WITH ('connector.class'='FileStreamSource', "
             f"'file'='{tmp_path / 'in.txt'}', 'topic'='{unique_topic('lines')}');")
    assert local not in remote_names(connect)

    def listed() -> dict[str, dict[str, Any]] | None:
        (entity,) = ok(node, "SHOW CONNECTORS;")
        found = {c["name"]: c for c in entity["connectors"]}
        states = {found.get(n, {}).get("state") for n in (name, local)}
        return found if states == {"RUNNING (1/1 tasks RUNNING)"} else None

    found = wait_for("both connectors running", listed, timeout=90)
    assert found[name] == {"name": name, "type": "source", "className": MIRROR,
                           "state": "RUNNING (1/1 tasks RUNNING)"}
    assert found[local]["className"] == "FileStreamSource"
    (sinks,) = ok(node, "SHOW SINK CONNECTORS;")
    assert name not in {c["name"] for c in sinks["connectors"]}

    (desc,) = ok(node, f"DESCRIBE CONNECTOR {name};")
    assert desc["@type"] == "connector_description"
    assert desc["connectorClass"] == MIRROR
    assert desc["status"]["name"] == name and desc["status"]["type"] == "source"
    assert desc["status"]["connector"] == {"state": "RUNNING", "worker_id": f"127.0.0.1:{connect.port}"}
    assert [(t["id"], t["state"]) for t in desc["status"]["tasks"]] == [(0, "RUNNING")]
    assert copied in desc["topics"]
    assert [s["name"] for s in desc["sources"]] == ["COPIED"]

    (plugins,) = ok(node, "SHOW CONNECTOR PLUGINS;")
    classes = {p["className"] for p in plugins["connectorPlugins"]}
    assert {MIRROR, "org.apache.kafka.connect.file.FileStreamSourceConnector"} <= classes

    (dropped,) = ok(node, f"DROP CONNECTOR {name};")
    assert dropped["@type"] == "drop_connector" and dropped["connectorName"] == name
    assert name not in remote_names(connect)
    (entity,) = ok(node, "SHOW CONNECTORS;")
    assert [c["name"] for c in entity["connectors"] if c["name"] in (name, local)] == [local]
    ok(node, f"DROP CONNECTOR {local};")

    assert ksql(node, f"DROP CONNECTOR {name};") == (404, {
        "@type": "generic_error", "error_code": 40400,
        "message": f'Failed to drop connector: {{"error_code":404,"message":"Connector {name} not found"}}'})
    (warned,) = ok(node, f"DROP CONNECTOR IF EXISTS {name};")
    assert warned["@type"] == "warning_entity"
    assert warned["message"] == f"Connector '{name}' does not exist."
    status, body = ksql(node, f"DESCRIBE CONNECTOR {name};")
    assert status == 404
    assert body["message"] == ('Failed to query connector status: {"error_code":404,'
                               f'"message":"No status found for connector {name}"}}')


def _topics(kafka) -> set[str]:
    from streamsql.testing.kafka import kcat_metadata

    return {t["topic"] for t in kcat_metadata(kafka.bootstrap_servers).get("topics", [])}


def test_what_kafka_connect_refuses_is_quoted(kafka, connect, node, unique_topic):
    # A class neither streamsql nor the Connect cluster has: Connect's 500, quoted.
    status, body = ksql(node, "CREATE SOURCE CONNECTOR nope WITH ('connector.class'='com.example.NoSuchConnector');")
    assert status == 500, body
    assert body["message"].startswith(
        'Failed to create connector: {"error_code":500,"message":"Failed to find any class that implements '
        'Connector and which name matches com.example.NoSuchConnector')

    # A config Connect's validation refuses: its 400 with the errors it found.
    topic = unique_topic("bad")
    status, body = ksql(node, f"CREATE SOURCE CONNECTOR bad WITH ({mirror_config(kafka, topic, **{'tasks.max': '0'})});")
    assert status == 400, body
    assert body["message"].startswith('Failed to create connector: {"error_code":400,"message":"Connector '
                                      'configuration is invalid and contains the following 1 error(s):')
    assert "tasks.max" in body["message"]
    assert "BAD" not in remote_names(connect)

    # One that exists: Connect's 409; IF NOT EXISTS only warns.
    name = "TWICE_" + uuid.uuid4().hex[:6].upper()
    statement = f"CREATE SOURCE CONNECTOR {{}} {name} WITH ({mirror_config(kafka, unique_topic('twice'))});"
    ok(node, statement.format(""))
    try:
        assert ksql(node, statement.format("")) == (409, {
            "@type": "generic_error", "error_code": 40900,
            "message": f'Failed to create connector: {{"error_code":409,"message":"Connector {name} already exists"}}'})
        (warned,) = ok(node, statement.format("IF NOT EXISTS"))
        assert warned["@type"] == "warning_entity" and warned["message"] == f"Connector {name} already exists"
    finally:
        ok(node, f"DROP CONNECTOR {name};")


def test_a_kafka_connect_cluster_that_is_down_fails_only_what_needs_it(kafka, kcat, connect, unique_topic, tmp_path):
    (port,) = free_ports(1)  # nothing listens there
    url = f"http://127.0.0.1:{port}"
    down = _node(kafka, tmp_path, "node-down", {"ksql.connect.url": url})
    try:
        status, body = ksql(down, f"CREATE SOURCE CONNECTOR m WITH ({mirror_config(kafka, unique_topic('x'))});")
        assert status == 503, body
        assert body["message"].startswith(
            f"Failed to create connector: Could not reach the Kafka Connect cluster at {url} (ksql.connect.url): ")
        assert "M" not in remote_names(connect)

        # The node's own connectors, streams and queries carry on.
        (tmp_path / "in.txt").write_text("hello\n")
        lines = unique_topic("lines")
        ok(down, f"CREATE SOURCE CONNECTOR here WITH ('connector.class'='FileStreamSource', "
                 f"'file'='{tmp_path / 'in.txt'}', 'topic'='{lines}', "
                 "'value.converter'='org.apache.kafka.connect.storage.StringConverter');")
        got = wait_for("the file's line", lambda: [r.value for r in kcat_consume(
            kafka.bootstrap_servers, lines, timeout=10)] if lines in _topics(kafka) else None, timeout=60)
        assert got == ["hello"]
        (listed,) = ok(down, "SHOW CONNECTORS;")
        assert [c["name"] for c in listed["connectors"]] == ["HERE"]
        (warning,) = listed["warnings"]
        assert warning["message"].startswith("Could not list the connectors of the Kafka Connect cluster: "
                                             f"Could not reach the Kafka Connect cluster at {url} ")
        (desc,) = ok(down, "DESCRIBE CONNECTOR here;")
        assert desc["status"]["connector"]["state"] == "RUNNING"
        ok(down, f"CREATE STREAM lines (line STRING) WITH (kafka_topic='{lines}', value_format='KAFKA');")
        rows = down.query_stream("SELECT line FROM lines EMIT CHANGES LIMIT 1;", {"auto.offset.reset": "earliest"})
        assert [r for r in rows[1:] if isinstance(r, list)] == [["hello"]], rows

        # A name neither has: DESCRIBE and DROP need the cluster, and say so.
        status, body = ksql(down, "DROP CONNECTOR elsewhere;")
        assert status == 503 and body["message"].startswith("Failed to drop connector: Could not reach")
        status, body = ksql(down, "DESCRIBE CONNECTOR elsewhere;")
        assert status == 503 and body["message"].startswith("Failed to query connector status: Could not reach")
    finally:
        down.stop()


def test_with_builtin_connectors_off_every_connector_goes_to_kafka_connect(kafka, kcat, connect, unique_topic,
                                                                          tmp_path):
    # As ksqlDB: FileStreamSource too runs on the Connect cluster (connect-file from its
    # plugin.path), with Connect's own JsonConverter.
    remote_only = _node(kafka, tmp_path, "node-all-remote",
                        {"ksql.connect.url": connect.url, "streamsql.connect.builtin.enabled": "false",
                         "ksql.connect.request.timeout.ms": "60000"})
    try:
        (tmp_path / "in.txt").write_text("first message\n")
        lines = unique_topic("lines")
        name = "FILE_" + uuid.uuid4().hex[:6].upper()
        ok(remote_only, f"CREATE SOURCE CONNECTOR {name} WITH ('connector.class'='FileStreamSource', "
                        f"'file'='{tmp_path / 'in.txt'}', 'topic'='{lines}', "
                        # The brokers create no topics on their own: Connect does (KIP-158).
                        "'topic.creation.default.replication.factor'='1', "
                        "'topic.creation.default.partitions'='1');")
        assert name in remote_names(connect)
        got = wait_for("the file's line", lambda: [r.value for r in kcat_consume(
            kafka.bootstrap_servers, lines, timeout=10)] if lines in _topics(kafka) else None, timeout=90)
        assert got == ['{"schema":{"type":"string","optional":false},"payload":"first message"}']
        (desc,) = ok(remote_only, f"DESCRIBE CONNECTOR {name};")
        assert desc["connectorClass"] == "FileStreamSource"
        assert desc["status"]["connector"]["worker_id"] == f"127.0.0.1:{connect.port}"
        assert desc["topics"] == [lines]
        ok(remote_only, f"DROP CONNECTOR {name};")
        assert name not in remote_names(connect)
    finally:
        remote_only.stop()

"""A connector's secrets stay out of every statement text, as ksqlDB's QueryMask keeps them out:
a ``CREATE SOURCE CONNECTOR ... 'connection.password'='...'`` comes back over HTTP with the
password masked (``'[string]'``), in errors too, the command log on disk holds the masked text
and the server's log none of it; the password is only in the worker's configs topic, from which
the restarted node runs the connector with it. Which values are masked: those of keys naming a
secret (every PASSWORD key of the built-in plugins among them) and those holding one."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import pytest

from streamsql.masking import mask_statement
from streamsql.runtime.connect.plugins import default_registry
from streamsql.server.testing import NodeProcess
from tests.test_connect_file import NODE_ARGS, eventually, ksql, ok, query

pytestmark = pytest.mark.timeout(180)

SECRET = "pa55-w0rd-never-shown"
ARGS = (*NODE_ARGS, "--log-level", "INFO")


def _files_holding(root: Path, needle: bytes) -> set[str]:
    """The data directory's files (relative paths) that hold ``needle``."""
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()}


def test_a_connectors_password_is_masked_in_statement_texts_and_kept_in_the_configs_topic(tmp_path):
    db = tmp_path / "shop.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
    con.execute("INSERT INTO items (name) VALUES ('first')")
    con.commit()
    create = (f"CREATE SOURCE CONNECTOR shop WITH ('connector.class'='JdbcSourceConnector', "
              f"'connection.url'='jdbc:sqlite:{db}', 'connection.user'='app', 'connection.password'='{SECRET}', "
              "'mode'='incrementing', 'incrementing.column.name'='id', 'topic.prefix'='shop-', "
              "'poll.interval.ms'='200', 'value.converter'='org.apache.kafka.connect.json.JsonConverter', "
              "'value.converter.schemas.enable'='false');")
    masked = create.replace(SECRET, "[string]")
    data = tmp_path / "data"
    with NodeProcess(data, ARGS) as node:
        ok(node.url, "CREATE STREAM items (id INT, name STRING) WITH (kafka_topic='shop-items', "
                     "value_format='JSON', partitions=1);")
        entity = ok(node.url, create)[0]
        assert entity["@type"] == "connector_info" and entity["statementText"] == masked
        assert entity["info"]["config"]["connection.password"] == SECRET  # (Connect's own answer: the config)
        # Errors quote the statement masked too: a second CREATE, and one that does not parse.
        status, body = ksql(node.url, create)
        assert status == 409 and SECRET not in str(body)
        status, body = ksql(node.url, f"CREATE SOURCE CONNECTOR bad WITH ('connection.password'='{SECRET}' 'x'='y');")
        assert status == 400 and SECRET not in str(body)
        # The connector runs, with its password.
        eventually(lambda: [r[1] for r in query(node.url, "SELECT * FROM items;")] == ["first"],
                   what="the first row")
        with httpx.Client(timeout=30) as http:
            assert http.get(f"{node.url}/connectors/SHOP/config").json()["connection.password"] == SECRET
    assert not any(SECRET in line for line in node.stderr_lines), "the password is in the server's log"
    # On disk: the command log has the masked statement; only the configs topic the password.
    assert _files_holding(data, masked.encode())
    holding = _files_holding(data, SECRET.encode())
    assert holding and all(p.startswith("topics/_streamsql_default_connect-configs/") for p in holding), holding

    con.execute("INSERT INTO items (name) VALUES ('second')")
    con.commit()
    with NodeProcess(data, ARGS) as node:
        with httpx.Client(timeout=30) as http:
            assert http.get(f"{node.url}/connectors/SHOP/config").json()["connection.password"] == SECRET
        eventually(lambda: [r[1] for r in query(node.url, "SELECT * FROM items;")] == ["first", "second"],
                   what="the row inserted while the node was down")
        listed = ok(node.url, "SHOW CONNECTORS;")[0]["connectors"]
        assert [(c["name"], c["state"]) for c in listed] == [("SHOP", "RUNNING (1/1 tasks RUNNING)")]
    assert not any(SECRET in line for line in node.stderr_lines)


def test_the_values_that_may_be_secrets_are_masked_and_only_those():
    text = ("CREATE SINK CONNECTOR `my sink` WITH ('connector.class'='JdbcSink', \"topics\"='orders', "
            "'connection.url'='jdbc:postgresql://db:5432/shop?user=app&password=pw1', "
            "'value.converter.basic.auth.user.info'='fred:pw2', 'ssl.truststore.password'='pw3', "
            "'aws.secret.access.key'='pw4', 'url'='jdbc:mysql://app:pw5@db/shop', 'tasks.max'=2, "
            "-- a comment: 'x'='y'\n 'batch.size'='10')")
    masked = mask_statement(text)
    assert not any(f"pw{i}" in masked for i in range(1, 6)), masked
    assert masked.count("'[string]'") == 5
    for kept in ("'connector.class'='JdbcSink'", "\"topics\"='orders'", "'tasks.max'=2", "'batch.size'='10'",
                 "-- a comment: 'x'='y'"):
        assert kept in masked
    # Every key the built-in plugins type PASSWORD.
    for plugin in default_registry().plugins():
        for key in plugin.connector().config():
            if key.type == "PASSWORD":
                statement = f"CREATE SOURCE CONNECTOR c WITH ('{key.name}'='hunter2')"
                assert "hunter2" not in mask_statement(statement), key.name
    assert mask_statement("CREATE STREAM s (v STRING) WITH (kafka_topic='password', value_format='JSON')") == \
        "CREATE STREAM s (v STRING) WITH (kafka_topic='password', value_format='JSON')"

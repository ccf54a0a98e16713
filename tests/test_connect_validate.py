"""``PUT /connector-plugins/{plugin}/config/validate`` over HTTP, as Kafka Connect answers it:
one entry per key of the plugin's ConfigDef (its definition and its value), each error on the
key it is about, ``error_count`` counting them, passwords hidden; and the plugin's definitions
from ``GET /connector-plugins/{plugin}/config``."""
from __future__ import annotations

import httpx
import pytest

from streamsql.server.testing import NodeProcess
from tests.test_connect_file import NODE_ARGS

pytestmark = pytest.mark.timeout(120)

DEFINITION_KEYS = {"name", "type", "required", "default_value", "importance", "documentation", "group", "order",
                   "width", "display_name", "dependents"}


def test_validate_answers_each_key_of_the_jdbc_source_with_its_value_and_errors(tmp_path):
    with NodeProcess(tmp_path / "data", NODE_ARGS) as node, httpx.Client(base_url=node.url, timeout=30) as http:
        plugin_keys = [d["name"] for d in http.get("/connector-plugins/JdbcSourceConnector/config").json()]
        assert {"connection.url", "connection.password", "mode", "topic.prefix", "poll.interval.ms"} <= \
            set(plugin_keys)

        response = http.put("/connector-plugins/JdbcSourceConnector/config/validate", json={
            "connector.class": "io.confluent.connect.jdbc.JdbcSourceConnector", "name": "shop",
            "connection.password": "secret", "mode": "sometimes", "poll.interval.ms": "soon", "tasks.max": "0",
            "errors.tolerance": "some"})
        assert response.status_code == 200
        infos = response.json()
        by_key = {c["value"]["name"]: c for c in infos["configs"]}
        # Every key the plugin defines, and Connect's common ones, each once.
        assert set(plugin_keys) | {"name", "connector.class", "tasks.max"} <= set(by_key)
        assert len(by_key) == len(infos["configs"])
        assert all(set(c["definition"]) == DEFINITION_KEYS for c in infos["configs"])
        errors = {k: c["value"]["errors"] for k, c in by_key.items() if c["value"]["errors"]}
        assert errors == {
            "tasks.max": ["Invalid value 0 for configuration tasks.max: Value must be at least 1"],
            "connection.url": ['Missing required configuration "connection.url" which has no default value.'],
            "topic.prefix": ['Missing required configuration "topic.prefix" which has no default value.'],
            "mode": ["Invalid value sometimes for configuration mode: String must be one of: , bulk, timestamp, "
                     "incrementing, timestamp+incrementing"],
            "poll.interval.ms": ["Invalid value soon for configuration poll.interval.ms: Not a number of type INT"],
            "errors.tolerance": ["Invalid value some for configuration errors.tolerance: String must be one of: "
                                 "none, all"],
        }
        assert infos["error_count"] == 6
        assert infos["groups"][:2] == ["Common", "Error Handling"]
        assert "Database" in infos["groups"] and "Mode" in infos["groups"]
        assert by_key["errors.tolerance"]["value"]["recommended_values"] == ["none", "all"]

        password = by_key["connection.password"]
        assert password["value"]["value"] == "[hidden]"  # ConfigDef's Password.toString
        assert (password["definition"]["type"], password["definition"]["display_name"],
                password["definition"]["group"], password["definition"]["order"]) == \
            ("PASSWORD", "JDBC Password", "Database", 3)
        mode = by_key["mode"]
        assert mode["value"]["recommended_values"] == ["", "bulk", "timestamp", "incrementing",
                                                       "timestamp+incrementing"]
        assert mode["definition"]["dependents"] == ["incrementing.column.name", "timestamp.column.name",
                                                    "validate.non.null"]
        # Unset keys show their defaults; required ones none.
        assert by_key["batch.max.rows"]["value"]["value"] == "100"
        assert by_key["connection.url"]["definition"]["required"] is True
        assert by_key["connection.url"]["value"]["value"] is None

        valid = http.put("/connector-plugins/JdbcSource/config/validate", json={
            "connector.class": "JdbcSource", "name": "shop", "connection.url": "jdbc:sqlite:/tmp/x.db",
            "mode": "incrementing", "incrementing.column.name": "id", "topic.prefix": "shop-"}).json()
        assert valid["error_count"] == 0
        assert not any(c["value"]["errors"] for c in valid["configs"])

        # The same errors refuse a connector made with them, all listed.
        refused = http.post("/connectors", json={"name": "shop", "config": {
            "connector.class": "JdbcSource", "connection.url": "jdbc:sqlite:/tmp/x.db", "topic.prefix": "p-",
            "poll.interval.ms": "soon"}})
        assert refused.status_code == 400
        assert "Invalid value soon for configuration poll.interval.ms: Not a number of type INT" in \
            refused.json()["message"]

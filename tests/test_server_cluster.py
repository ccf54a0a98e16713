"""Pull queries in a cluster: two ``streamsql server`` processes on a real Kafka broker share a
table's partitions; scans and key lookups sent to either node answer from both; with one node
killed the answer says which partitions are missing, and once Kafka has handed them to the
survivor (restored from the changelog) the answers are whole again.
"""
from __future__ import annotations

import json
import urllib.request
import uuid

import pytest

from streamsql.testing.nodes import Node, spread, wait_for

pytestmark = pytest.mark.timeout(300)

USERS = [f"user{i}" for i in range(24)]


def query_stream(node: Node, sql: str) -> list:
    return node.query_stream(sql)


def scan(node: Node, table: str) -> dict[str, list] | None:
    """The whole table from ``node``, or None when the answer says something is missing."""
    header, *rest = query_stream(node, f"SELECT * FROM {table};")
    if rest and isinstance(rest[-1], dict):
        return None
    return {row[0]: row[1:] for row in rest}


def test_pull_queries_gather_from_every_node(kafka, tmp_path):
    service = "svc_" + uuid.uuid4().hex[:8]
    a = Node("node-a", kafka.bootstrap_servers, service, tmp_path).start()
    b = Node("node-b", kafka.bootstrap_servers, service, tmp_path).start()
    try:
        table = f"totals_{service}"
        a.ksql(f"CREATE STREAM orders (user STRING KEY, amount BIGINT) WITH (kafka_topic='orders_{service}', "
               f"partitions=4, value_format='JSON');"
               f"CREATE TABLE {table} AS SELECT user, COUNT(*) AS n, SUM(amount) AS total "
               "FROM orders GROUP BY user;")
        spread([a, b], "ORDERS", f"CTAS_{table.upper()}", {"node-a": 2, "node-b": 2})
        rows = "".join(json.dumps({"USER": u, "AMOUNT": amount}) + "\n"
                       for amount in (1, 10) for u in USERS)
        req = urllib.request.Request(a.url + "/inserts-stream", ('{"target":"ORDERS"}\n' + rows).encode())
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.read().count(b'"ok"') == 2 * len(USERS)
        expected = {u: [2, 11] for u in USERS}

        # Both nodes answer with the whole table (each holds half of it).
        wait_for("node-a to see the whole table", lambda: scan(a, table) == expected, timeout=60)
        assert scan(b, table) == expected
        for user in USERS[:8]:
            for node in (a, b):
                assert query_stream(node, f"SELECT n, total FROM {table} WHERE user = '{user}';")[1:] == [[2, 11]]
        assert query_stream(a, f"SELECT * FROM {table} WHERE user = 'nobody';")[1:] == []
        assert len(query_stream(b, f"SELECT * FROM {table} LIMIT 5;")) == 1 + 5

        # /clusterStatus on either node: both nodes, alive, each with its share of the query.
        status = json.loads(urllib.request.urlopen(b.url + "/clusterStatus", timeout=30).read())["clusterStatus"]
        hosts = {a.url.split("://")[1]: "node-a", b.url.split("://")[1]: "node-b"}
        assert set(status) == set(hosts) and all(s["hostAlive"] for s in status.values())
        held = {hosts[h]: {(p["topic"], p["partition"]) for q, share in s["activeStandbyPerQuery"].items()
                           if q.startswith(f"CTAS_{table.upper()}") for p in share["activePartitions"]}
                for h, s in status.items()}
        orders = [{p for t, p in parts if t == f"orders_{service}"} for parts in held.values()]
        assert sorted(map(len, orders)) == [2, 2] and orders[0] | orders[1] == {0, 1, 2, 3}

        # node-b dies: node-a answers with what it has and says what is missing.
        b.kill()
        status = json.loads(urllib.request.urlopen(a.url + "/clusterStatus", timeout=30).read())["clusterStatus"]
        assert {hosts[h]: s["hostAlive"] for h, s in status.items()} == {"node-a": True, "node-b": False}
        header, *rest = query_stream(a, f"SELECT * FROM {table};")
        assert isinstance(rest[-1], dict) and rest[-1]["@type"] == "generic_error"
        assert "node-b" in rest[-1]["message"] and "This answer lacks partitions" in rest[-1]["message"]
        assert 0 < len(rest) - 1 < len(USERS)

        # Kafka hands node-b's partitions to node-a, which restores them: whole again.
        wait_for("node-a to hold the whole table again", lambda: scan(a, table) == expected, timeout=120)
    finally:
        b.stop()
        a.stop()


def test_pull_query_with_kafka_unreachable_is_an_error_not_a_wait(kafka_lib, tmp_path):
    """Which node holds which partition is Kafka's to say: with the (only) broker stopped, a
    pull query is answered within seconds with HTTP 503 naming the cause, not left waiting."""
    import time
    import urllib.error

    from streamsql.testing.kafka import KafkaCluster

    broker = KafkaCluster(tmp_path / "kafka", brokers=1, die_with_parent=True).start()
    service = "svc_" + uuid.uuid4().hex[:8]
    node = Node("node-a", broker.bootstrap_servers, service, tmp_path).start()
    try:
        table = f"totals_{service}"
        node.ksql(f"CREATE STREAM orders (user STRING KEY, amount BIGINT) WITH (kafka_topic='orders_{service}', "
                  f"partitions=2, value_format='JSON');"
                  f"CREATE TABLE {table} AS SELECT user, COUNT(*) AS n FROM orders GROUP BY user;")
        req = urllib.request.Request(node.url + "/inserts-stream",
                                     ('{"target":"ORDERS"}\n' + '{"USER": "u1", "AMOUNT": 1}\n').encode())
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert b'"ok"' in resp.read()
        wait_for("the row", lambda: node.query_stream(f"SELECT * FROM {table};")[1:] == [["u1", 1]])

        broker.kill()
        time.sleep(3)  # (what the node knows of the group is reused for 2 s)
        started = time.monotonic()
        with pytest.raises(urllib.error.HTTPError) as failed:
            node.query_stream(f"SELECT * FROM {table};")
        assert failed.value.code == 503
        assert "which node holds" in json.loads(failed.value.read())["message"]
        assert time.monotonic() - started < 25
    finally:
        node.kill()
        broker.kill()

"""A cluster of streamsql nodes on real Apache Kafka brokers: the scaling story users are
promised, a node killed mid-aggregation, a broker stopped under load.

Nodes are ``streamsql server`` processes (``streamsql/testing/nodes.py``); records go in with kcat
and the tables are read back with kcat; the only thing asked of the nodes is what a user
would ask: statements and DESCRIBE EXTENDED over the REST API.
"""
from __future__ import annotations

import json
import random
import time
import uuid
from collections import Counter

import pytest

from streamsql.testing.kafka import kcat_produce
from streamsql.testing.nodes import Node, spread, table_rows, wait_for

pytestmark = pytest.mark.timeout(600)


def _records(n: int, users: int, seed: int) -> list[tuple[str, dict]]:
    """``n`` records of ``users`` keys, one a second of event time ending about now: recent,
    because the broker deletes records older than a topic's retention (7 days by default)
    from a table's topic, windowed by these times."""
    rnd = random.Random(seed)
    ts0 = (int(time.time()) - n - 60) // 60 * 60 * 1000
    return [(f"user{rnd.randrange(users)}", {"AMOUNT": rnd.randrange(1, 100), "TS": ts0 + i * 1000})
            for i in range(n)]


def _produce(bootstrap: str, topic: str, records: list[tuple[str, dict]]) -> None:
    kcat_produce(bootstrap, topic, [(k, json.dumps(v)) for k, v in records])


def _totals(records: list[tuple[str, dict]]) -> dict[str, tuple[int, int]]:
    count: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for user, v in records:
        count[user] += 1
        total[user] += v["AMOUNT"]
    return {u: (count[u], total[u]) for u in count}


def test_scaling_2_1_5_nodes_exactly_once(kafka, cluster):
    """10 partitions on 2 nodes: 5 each; one stops: the survivor takes 10; 4 join: 2 each.
    Records keep coming throughout; under exactly_once_v2 the final table is exactly the
    one computed from the input."""
    eos = {"processing.guarantee": "exactly_once_v2"}
    a = cluster("node-a", **eos)
    b = cluster("node-b", **eos)
    topic = f"clicks_{cluster.service}"
    a.ksql(f"CREATE STREAM clicks (user STRING KEY, amount BIGINT, ts BIGINT) WITH "
           f"(kafka_topic='{topic}', partitions=10, value_format='JSON');"
           f"CREATE TABLE totals_{cluster.service} AS SELECT user, COUNT(*) AS n, "
           "SUM(amount) AS total FROM clicks GROUP BY user EMIT CHANGES;")
    spread([a, b], "CLICKS", "CTAS_TOTALS", {"node-a": 5, "node-b": 5})

    sent = _records(3000, 200, seed=1)
    _produce(kafka.bootstrap_servers, topic, sent[:1000])
    b.stop()
    spread([a], "CLICKS", "CTAS_TOTALS", {"node-a": 10})
    _produce(kafka.bootstrap_servers, topic, sent[1000:2000])
    more = [cluster(f"node-{x}", **eos) for x in "cdef"]
    spread([a] + more, "CLICKS", "CTAS_TOTALS", {f"node-{x}": 2 for x in "acdef"})
    _produce(kafka.bootstrap_servers, topic, sent[2000:])

    expected = _totals(sent)
    got = wait_for("every record in the table",
                   lambda: _complete(kafka.bootstrap_servers, f"TOTALS_{cluster.service.upper()}", expected),
                   timeout=240)
    assert got == expected


def _complete(bootstrap: str, topic: str, expected: dict[str, tuple[int, int]]) -> dict | None:
    """The table's (count, total) per user, once every user has at least its expected count
    (then the test compares exactly)."""
    rows = {k: (v["N"], v["TOTAL"]) for k, v in table_rows(bootstrap, topic).items()}
    if rows.keys() != expected.keys() or any(rows[u][0] < expected[u][0] for u in expected):
        return None
    return rows


def test_kill_9_node_mid_windowed_aggregation(kafka, cluster):
    """A node killed with SIGKILL while a windowed aggregation runs: its partitions move to
    the survivor, which rebuilds their state from the changelog topics; the windowed table
    ends up exactly as computed from the input (exactly_once_v2)."""
    eos = {"processing.guarantee": "exactly_once_v2"}
    a = cluster("node-a", **eos)
    b = cluster("node-b", **eos)
    topic = f"clicks_{cluster.service}"
    a.ksql(f"CREATE STREAM clicks (user STRING KEY, amount BIGINT, ts BIGINT) WITH "
           f"(kafka_topic='{topic}', partitions=6, value_format='JSON', timestamp='ts');"
           f"CREATE TABLE per_minute_{cluster.service} AS SELECT user, AS_VALUE(user) AS u, WINDOWSTART AS ws, "
           "COUNT(*) AS n, SUM(amount) AS total FROM clicks WINDOW TUMBLING (SIZE 1 MINUTE) "
           "GROUP BY user EMIT CHANGES;")
    spread([a, b], "CLICKS", "CTAS_PER_MINUTE", {"node-a": 3, "node-b": 3})
    sent = _records(6000, 50, seed=2)
    _produce(kafka.bootstrap_servers, topic, sent[:3000])
    # Mid-stream: some of the first records are in the table, not all.
    wait_for("the aggregation to be under way",
             lambda: table_rows(kafka.bootstrap_servers, f"PER_MINUTE_{cluster.service.upper()}"), timeout=60, every=0.2)
    b.kill()
    _produce(kafka.bootstrap_servers, topic, sent[3000:])
    spread([a], "CLICKS", "CTAS_PER_MINUTE", {"node-a": 6})

    expected: dict[tuple[str, int], tuple[int, int]] = {}
    for user, v in sent:
        key = (user, v["TS"] - v["TS"] % 60_000)
        n, total = expected.get(key, (0, 0))
        expected[key] = (n + 1, total + v["AMOUNT"])

    def complete() -> dict | None:
        rows = {(r["U"], r["WS"]): (r["N"], r["TOTAL"])
                for r in table_rows(kafka.bootstrap_servers, f"PER_MINUTE_{cluster.service.upper()}", windowed=True).values()}
        if rows.keys() != expected.keys() or any(rows[k][0] < expected[k][0] for k in expected):
            return None
        return rows
    assert wait_for("every record in the windowed table", complete, timeout=240) == expected


def test_scaling_at_least_once_loses_nothing(kafka, cluster):
    """The default guarantee, at_least_once: through a node joining and one leaving, no
    record is missing from the table (a record may be counted twice, never zero times)."""
    a = cluster("node-a")
    topic = f"clicks_{cluster.service}"
    a.ksql(f"CREATE STREAM clicks (user STRING KEY, amount BIGINT, ts BIGINT) WITH "
           f"(kafka_topic='{topic}', partitions=4, value_format='JSON');"
           f"CREATE TABLE totals_{cluster.service} AS SELECT user, COUNT(*) AS n, "
           "SUM(amount) AS total FROM clicks GROUP BY user EMIT CHANGES;")
    sent = _records(2000, 100, seed=3)
    _produce(kafka.bootstrap_servers, topic, sent[:700])
    b = cluster("node-b")
    spread([a, b], "CLICKS", "CTAS_TOTALS", {"node-a": 2, "node-b": 2})
    _produce(kafka.bootstrap_servers, topic, sent[700:1400])
    a.stop()
    spread([b], "CLICKS", "CTAS_TOTALS", {"node-b": 4})
    _produce(kafka.bootstrap_servers, topic, sent[1400:])
    expected = _totals(sent)
    got = wait_for("every record in the table",
                   lambda: _complete(kafka.bootstrap_servers, f"TOTALS_{cluster.service.upper()}", expected),
                   timeout=240)
    assert all(got[u][0] >= expected[u][0] and got[u][1] >= expected[u][1] for u in expected)


def test_broker_stopped_queries_keep_running(kafka3, tmp_path):
    """Replication factor 3, one of the three brokers stopped mid-stream: the query keeps
    running and nothing is lost (exactly_once_v2: nothing counted twice either)."""
    service = "svc_" + uuid.uuid4().hex[:8]
    node = Node("node-a", kafka3.bootstrap_servers, service, tmp_path,
                {"processing.guarantee": "exactly_once_v2",
                 "ksql.internal.topic.replicas": "3"}).start()
    topic = f"clicks_{service}"
    try:
        node.ksql(f"CREATE STREAM clicks (user STRING KEY, amount BIGINT, ts BIGINT) WITH "
                  f"(kafka_topic='{topic}', partitions=3, replicas=3, value_format='JSON');"
                  f"CREATE TABLE totals_{service} AS SELECT user, COUNT(*) AS n, SUM(amount) AS total "
                  "FROM clicks GROUP BY user EMIT CHANGES;")
        sink = f"TOTALS_{service.upper()}"
        sent = _records(3000, 100, seed=4)
        _produce(kafka3.bootstrap_servers, topic, sent[:1500])
        wait_for("the query to be under way", lambda: table_rows(kafka3.bootstrap_servers, sink))
        kafka3.stop_broker(0)
        try:
            # (kcat is pointed at the live brokers: it reports a dead bootstrap as an error.)
            live = ",".join(f"127.0.0.1:{p}" for p in kafka3.ports[1:])
            _produce(live, topic, sent[1500:])
            expected = _totals(sent)
            got = wait_for("every record in the table",
                           lambda: _complete(live, sink, expected), timeout=240)
            assert got == expected
        finally:
            kafka3.start_broker(0)
    finally:
        node.stop()

"""Kafka Streams' high-availability model on a real broker, with ``streamsql server`` nodes as
processes: standby replicas (``num.standby.replicas``) keep warm copies of a table's state on
other nodes, a task moves only to a node that has caught up on it (KIP-441 warm-ups), and a
killed node's tasks are taken over by their standbys, which replay only the last records of
the changelog instead of all of it. While nodes join one by one (1 -> 5), every pull-query
answer is whole or an error naming what it lacks.
"""
from __future__ import annotations

import json
import random
import re
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from streamsql.testing.kafka import kcat_produce
from streamsql.testing.nodes import Node, spread, wait_for

pytestmark = pytest.mark.timeout(600)


def _cluster_status(node: Node) -> dict[str, Any]:
    with urllib.request.urlopen(node.url + "/clusterStatus", timeout=30) as resp:
        return json.loads(resp.read())["clusterStatus"]


def _tasks(node: Node, query_prefix: str) -> dict[str, tuple[set[int], set[int]]]:
    """Per host: the (active, standby) tasks of the query's stage that has standbys (its
    partitions of the topic that stage reads), as /clusterStatus says."""
    status = _cluster_status(node)
    shares = [share for s in status.values() for q, share in s["activeStandbyPerQuery"].items()
              if q.startswith(query_prefix)]
    topics = {p["topic"] for share in shares for p in share["standByPartitions"]}
    assert len(topics) <= 1, topics
    out: dict[str, tuple[set[int], set[int]]] = {}
    for host, s in status.items():
        active: set[int] = set()
        standby: set[int] = set()
        for query, share in s["activeStandbyPerQuery"].items():
            if query.startswith(query_prefix):
                active |= {p["partition"] for p in share["activePartitions"] if p["topic"] in topics}
                standby |= {p["partition"] for p in share["standByPartitions"]}
        out[host] = (active, standby)
    return out


def _replayed(node: Node, query: str) -> dict[int, int]:
    """Changelog records each active task of the query's stage with state replayed when it
    was last opened, as the node's log says."""
    text = (node.dir / "node.log").read_text(errors="replace")
    found: dict[int, int] = {}
    for m in re.finditer(rf"{re.escape(query)}\S*: task (\d+) opened: (.*)", text):
        found[int(m.group(1))] = sum(int(n) for n in re.findall(r"\((\d+) replayed\)", m.group(2)))
    return found


def _count_rows(node: Node, table: str, properties: dict[str, str] | None = None
                ) -> dict[str, int] | None:
    header, *rest = node.query_stream(f"SELECT * FROM {table};", properties)
    if rest and isinstance(rest[-1], dict):
        return None
    return {row[0]: row[1] for row in rest}


STANDBY_READS = {"ksql.query.pull.enable.standby.reads": "true"}


def _counts_table(kafka: Any, node: Node, service: str, stream: str, partitions: int,
                  count: int) -> tuple[str, str, list[str]]:
    """A stream ``stream`` of ``partitions`` partitions, a table ``counts_<service>`` counting
    its records per user, and one record for each of ``count`` users, counted: (the
    stream's topic, the table, the users)."""
    topic, table = f"{stream}_{service}", f"counts_{service}"
    node.ksql(f"CREATE STREAM {stream} (user STRING KEY, amount BIGINT) WITH (kafka_topic='{topic}', "
              f"partitions={partitions}, value_format='JSON');"
              f"CREATE TABLE {table} AS SELECT user, COUNT(*) AS n FROM {stream} GROUP BY user;")
    users = [f"user{i}" for i in range(count)]
    kcat_produce(kafka.bootstrap_servers, topic, [(u, '{"AMOUNT": 1}') for u in users])
    wait_for("the table", lambda: _count_rows(node, table) == dict.fromkeys(users, 1), timeout=120)
    return topic, table, users


def test_a_killed_nodes_tasks_restore_from_their_standbys(kafka, cluster):
    """Two nodes with one standby replica each: node-b joins with no state and gets the
    table's tasks only once it has caught up (warm-ups), keeps the others warm; node-a is
    killed and node-b takes its tasks over replaying only what was written since its
    standbys last caught up, and answers with the whole table."""
    ha = {"num.standby.replicas": "1", "acceptable.recovery.lag": "100"}
    a = cluster("node-a", **ha)
    topic, table, users = _counts_table(kafka, a, cluster.service, "orders", 4, 8000)

    b = cluster("node-b", **ha)
    query = f"CTAS_{table.upper()}"
    # node-b warms up first (no task moves to it before it has caught up), then takes half.
    spread([a, b], "ORDERS", query, {"node-a": 2, "node-b": 2}, timeout=180)
    hosts = {a.url.split("://")[1]: "node-a", b.url.split("://")[1]: "node-b"}

    def standbys_everywhere() -> bool:
        tasks = {hosts[h]: t for h, t in _tasks(a, query).items()}
        return (len(tasks) == 2 and all(len(act) == 2 and standby == {0, 1, 2, 3} - act
                                        for act, standby in tasks.values()))
    wait_for("each task with a standby on the other node", standbys_everywhere, timeout=60)
    # The first tasks node-b ran came from warm state: it replayed no whole changelog.
    first = wait_for("node-b's tasks to open", lambda: len(_replayed(b, query)) == 2 and _replayed(b, query))
    assert all(n <= 100 for n in first.values()), first

    # More updates reach the standbys of node-a's tasks on node-b...
    kcat_produce(kafka.bootstrap_servers, topic, [(u, '{"AMOUNT": 1}') for u in users[:2000]])
    expected = {u: (2 if i < 2000 else 1) for i, u in enumerate(users)}
    wait_for("the updates in the table", lambda: _count_rows(b, table) == expected, timeout=120)
    time.sleep(2)  # (a standby pass or two)
    a_tasks = {t for h, (act, _) in _tasks(b, query).items() if hosts[h] == "node-a" for t in act}
    assert len(a_tasks) == 2
    # node-b reports its stores' lags, active and standby alike: every partition, caught up.
    b_lags = _cluster_status(b)[b.url.split("://")[1]]["hostStoreLags"]["stateStoreLags"]
    assert b_lags and all(set(store["lagByPartition"]) == {"0", "1", "2", "3"} and all(
        p["offsetLag"] <= 100 and p["endOffsetPosition"] > 0 for p in store["lagByPartition"].values())
        for store in b_lags.values()), b_lags
    a.kill()
    # Until the group notices (its session timeout, 10 s), node-a's partitions have no
    # active anywhere: a pull query says so (after trying for 5 s), unless it may read
    # standbys (ksqlDB's standby reads) close enough to their active's: those answer whole.
    # (Asked at once, all within the session timeout.)
    with ThreadPoolExecutor(3) as pool:
        plain, standby, too_far = pool.map(lambda props: _count_rows(b, table, props), [
            None, STANDBY_READS, {**STANDBY_READS, "ksql.query.pull.max.allowed.offset.lag": "-1"}])
    assert standby == expected
    assert plain is None and too_far is None

    # ... which take over: node-b has every task, having replayed only the tail.
    spread([b], "ORDERS", query, {"node-b": 4}, timeout=120)
    wait_for("node-b to answer with the whole table", lambda: _count_rows(b, table) == expected,
             timeout=120)
    replayed = _replayed(b, query)
    changelog_records = len(users) // 4
    for task in a_tasks:
        assert replayed[task] < changelog_records // 4, (task, replayed)


def test_pull_answers_stay_whole_while_nodes_join_one_by_one(kafka, cluster):
    """1 -> 5 nodes with num.standby.replicas=1 while clients ask pull queries of every
    node (half of them allowed to read standbys): each answer has every row or says which
    partitions it lacks; at the end the tasks are spread 2/2/2/2/2 with one standby each, on
    another node."""
    ha = {"num.standby.replicas": "1"}
    first = cluster("node-1", **ha)
    topic, table, users = _counts_table(kafka, first, cluster.service, "clicks", 10, 3000)
    expected = dict.fromkeys(users, 1)

    nodes = [first]
    answers: list[str] = []
    stop = threading.Event()

    def ask() -> None:
        rnd = random.Random(7)
        while not stop.is_set():
            node = rnd.choice(list(nodes))
            # Every other query may read standbys (for partitions with no active just now).
            props = STANDBY_READS if len(answers) % 2 else None
            try:
                header, *rest = node.query_stream(f"SELECT * FROM {table};", props)
            except (urllib.error.URLError, OSError) as exc:
                answers.append(f"unreachable: {exc}")
                continue
            if rest and isinstance(rest[-1], dict):
                message = rest[-1].get("message", "")
                answers.append("error" if "lacks partitions" in message else f"bad error: {message}")
            else:
                got = {row[0]: row[1] for row in rest}
                answers.append("whole" if got == expected else
                               f"partial: {len(got)} of {len(expected)} rows")
            time.sleep(0.1)

    asker = threading.Thread(target=ask, daemon=True)
    asker.start()
    try:
        query = f"CTAS_{table.upper()}"
        for n in range(2, 6):
            nodes.append(cluster(f"node-{n}", **ha))
            balanced = sorted(10 // n + (1 if i < 10 % n else 0) for i in range(n))
            wait_for(f"10 partitions spread over {n} nodes", lambda: sorted(
                len(p) for p in first.partitions_by_node("CLICKS", query).values()) == balanced,
                timeout=240)
    finally:
        stop.set()
        asker.join(60)
    bad = [a for a in answers if a not in ("whole", "error")]
    assert not bad, bad[:5]
    assert answers.count("whole") >= 10, {a: answers.count(a) for a in set(answers)}

    def one_standby_each() -> bool:
        tasks = _tasks(first, query)
        actives = [t for act, _ in tasks.values() for t in act]
        standbys = [t for _, sb in tasks.values() for t in sb]
        return (sorted(actives) == list(range(10)) and sorted(standbys) == list(range(10))
                and all(not act & sb for act, sb in tasks.values()))
    wait_for("one standby per task, never beside its active", one_standby_each, timeout=60)

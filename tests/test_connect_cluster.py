"""One connector's tasks spread over the nodes of a cluster on Kafka, as Kafka Connect spreads
them: a JDBC source over SQLite with two tables and ``tasks.max=2`` runs one task on each of two
nodes (statuses say where, from either node). While rows are being inserted, one node is killed
with SIGKILL and the other takes its task over; started again it gets a task back, and is then
frozen (SIGSTOP) until the other has taken its task over again, and woken as a zombie. Every
row reaches its topic exactly once: a task taken over fences the old owner's transactional id
(the zombie's next transaction is refused) and goes on from the committed offsets."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest

from streamsql.exec.connectors import description_text
from streamsql.testing.kafka import kcat_consume
from streamsql.testing.nodes import wait_for

pytestmark = pytest.mark.timeout(400)

TABLES = ("alpha", "beta")


def _database(path: Path, rows: int) -> None:
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")  # the nodes read while the test writes
    for table in TABLES:
        con.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
        con.executemany(f"INSERT INTO {table} (v) VALUES (?)", [(f"{table} {i}",) for i in range(1, rows + 1)])
    con.commit()
    con.close()


def test_a_connectors_tasks_run_on_two_nodes_and_a_killed_nodes_task_is_taken_over(kafka, kcat, cluster, tmp_path):
    db = tmp_path / "shop.db"
    _database(db, 20)
    nodes = {"node-a": cluster("node-a"), "node-b": cluster("node-b")}
    service = cluster.service
    name = f"SHOP_{service.upper()}"
    prefix = f"{service}-"
    nodes["node-a"].ksql(
        f"CREATE SOURCE CONNECTOR {name} WITH ('connector.class'='JdbcSourceConnector', "
        f"'connection.url'='jdbc:sqlite:{db}', 'mode'='incrementing', 'incrementing.column.name'='id', "
        f"'topic.prefix'='{prefix}', 'tasks.max'='2', 'poll.interval.ms'='100', 'table.poll.interval.ms'='1000', "
        "'value.converter'='org.apache.kafka.connect.json.JsonConverter', "
        "'value.converter.schemas.enable'='false');")

    def tasks_on(asked: str) -> dict[int, str] | None:
        """Task id -> worker id, as DESCRIBE CONNECTOR on ``asked`` says, once both run."""
        status = nodes[asked].ksql(f"DESCRIBE CONNECTOR {name};")[0]["status"]
        tasks = status["tasks"]
        if status["connector"]["state"] != "RUNNING" or len(tasks) != 2 or \
                any(t["state"] != "RUNNING" for t in tasks):
            return None
        return {t["id"]: t["worker_id"] for t in tasks}

    def spread() -> dict[int, str] | None:
        found = tasks_on("node-b")
        return found if found and set(found.values()) == {"node-a", "node-b"} else None

    # One task each (node-b joins the workers' group a moment after node-a started both).
    placed = wait_for("the two tasks running on the two nodes", spread, timeout=120)
    assert wait_for("node-a saying the same", lambda: tasks_on("node-a") == placed and placed, timeout=30)
    # The shell's DESCRIBE CONNECTOR says where each task runs.
    shown = description_text(nodes["node-a"].ksql(f"DESCRIBE CONNECTOR {name};")[0])
    assert "Worker ID" in shown and "node-a" in shown and "node-b" in shown
    # Connect's REST status says the same, per task, from either node.
    with httpx.Client(timeout=30) as http:
        for node in nodes.values():
            status = http.get(f"{node.url}/connectors/{name}/status").json()
            assert {t["id"]: t["worker_id"] for t in status["tasks"]} == placed
            tasks = http.get(f"{node.url}/connectors/{name}/tasks").json()
            # Each task has its table (Connect's groupPartitions over the two tables).
            tables = sorted(t["config"]["tables"] for t in tasks)
            assert len(tables) == 2 and "alpha" in tables[0] and "beta" in tables[1], tables

    def ids(table: str) -> list[int]:
        return [json.loads(r.value)["id"] for r in kcat_consume(kafka.bootstrap_servers, prefix + table,
                                                                 timeout=30)]

    for table in TABLES:
        wait_for(f"{table}'s first rows", lambda t=table: ids(t) == list(range(1, 21)), timeout=60)

    # A new table: the connector (on one node) asks for new task configs, commits them, and
    # the tasks start again with them wherever they run; the new table's rows flow too.
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE gamma (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    con.executemany("INSERT INTO gamma (v) VALUES (?)", [(f"gamma {i}",) for i in range(1, 6)])
    con.commit()
    con.close()

    def tables_of_tasks() -> list[str] | None:
        tasks = httpx.get(f"{nodes['node-b'].url}/connectors/{name}/tasks", timeout=30).json()
        return sorted(t["config"]["tables"] for t in tasks) if len(tasks) == 2 else None
    wait_for("the new table in a task's config", lambda: "gamma" in "".join(tables_of_tasks() or []), timeout=60)
    wait_for("gamma's rows", lambda: ids("gamma") == list(range(1, 6)), timeout=60)
    placed = wait_for("the two tasks running on the two nodes again", spread, timeout=60)

    # Rows keep coming while a node is killed (SIGKILL: no goodbye, a transaction maybe open).
    inserted = {t: 20 for t in TABLES}
    stop = threading.Event()

    def writer() -> None:
        con = sqlite3.connect(db, timeout=30)
        while not stop.is_set():
            for table in TABLES:
                con.execute(f"INSERT INTO {table} (v) VALUES ('more')")
                con.commit()
                inserted[table] += 1
            time.sleep(0.02)
        con.close()

    def running_only_on(node: str) -> bool:
        found = tasks_on(node)
        return bool(found) and set(found.values()) == {node}

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        time.sleep(2.0)
        nodes["node-b"].kill()
        killed = time.monotonic()
        # The group notices the dead member after its session timeout (10 s), then rebalances.
        wait_for("node-a running both tasks", lambda: running_only_on("node-a"), timeout=90)
        took = time.monotonic() - killed
        assert took < 90

        # Back, node-b gets a task again; then it is frozen (SIGSTOP) until node-a has taken
        # its task over, and woken: for a moment a zombie still running the task, whose next
        # transaction is refused (node-a's task fenced its transactional id).
        nodes["node-b"].start()
        wait_for("the tasks spread again", spread, timeout=120)
        proc = nodes["node-b"].proc
        assert proc is not None
        os.killpg(proc.pid, signal.SIGSTOP)
        try:
            wait_for("node-a running both tasks again", lambda: running_only_on("node-a"), timeout=90)
            time.sleep(1.0)
        finally:
            os.killpg(proc.pid, signal.SIGCONT)
        time.sleep(5.0)  # the zombie's moment
    finally:
        stop.set()
        thread.join(10)
    for table in TABLES:
        want = list(range(1, inserted[table] + 1))

        def complete(t: str = table, want: list[int] = want) -> list[int] | None:
            got = ids(t)
            assert len(got) == len(set(got)), f"{t}: {len(got) - len(set(got))} rows published twice"
            return got if len(got) >= len(want) else None
        got = wait_for(f"every row of {table}", complete, timeout=120)
        assert got == want  # every row, once, in order
    assert ids("gamma") == list(range(1, 6))

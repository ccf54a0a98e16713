"""Connectors on a cluster of streamsql nodes on Kafka: each connector runs on exactly one
node (the workers' consumer group spreads them), any node describes any connector, and when
a node is killed with SIGKILL its connectors are taken over by the others, going on after the
last line they published."""
from __future__ import annotations

from pathlib import Path

import pytest

from streamsql.testing.kafka import consume_committed, kcat_consume
from streamsql.testing.nodes import wait_for

pytestmark = pytest.mark.timeout(300)


def _append(path: Path, *lines: str) -> None:
    with open(path, "a") as f:
        f.write("".join(line + "\n" for line in lines))


def test_connectors_spread_over_the_nodes_and_a_killed_nodes_are_taken_over(kafka, kcat, cluster, tmp_path):
    config = {"connect.offset.flush.interval.ms": "300"}
    a = cluster("node-a", **config)
    b = cluster("node-b", **config)
    service = cluster.service
    names = [f"SRC{i}_{service.upper()}" for i in range(8)]
    files = {n: tmp_path / f"{n}.txt" for n in names}
    for n in names:
        _append(files[n], *(f"{n} {j}" for j in range(3)))
        a.ksql(f"CREATE SOURCE CONNECTOR {n} WITH ('connector.class'='FileStreamSource', "
               f"'file'='{files[n]}', 'topic'='{n}', "
               "'value.converter'='org.apache.kafka.connect.storage.StringConverter');")

    # A sink too: a file of the first connector's lines, through the group connect-<name>.
    sink_file, sink = tmp_path / "sink.txt", f"SNK_{service.upper()}"
    a.ksql(f"CREATE SINK CONNECTOR {sink} WITH ('connector.class'='FileStreamSink', 'file'='{sink_file}', "
           f"'topics'='{names[0]}', 'value.converter'='org.apache.kafka.connect.storage.StringConverter');")
    names_and_sink = names + [sink]

    def sunk() -> list[str]:
        return sink_file.read_text().splitlines() if sink_file.exists() else []

    def published(n: str) -> list[str]:
        return [r.value for r in kcat_consume(kafka.bootstrap_servers, n, timeout=20)]

    def exactly(n: str, want: list[str]) -> bool:
        got = published(n)
        assert got == want[:len(got)], got  # in order, nothing twice (fails at once)
        return got == want

    def workers() -> dict[str, str] | None:
        found = {}
        for n in names_and_sink:
            status = b.ksql(f"DESCRIBE CONNECTOR {n};")[0]["status"]
            tasks = status["tasks"]
            if status["connector"]["state"] != "RUNNING" or [t["state"] for t in tasks] != ["RUNNING"]:
                return None
            found[n] = status["connector"]["worker_id"]
        return found

    # Described from either node: each connector runs on one of them, and both have some.
    # (Eventually: node-b's worker joins the group a moment after node-a started them all,
    # and the statuses show the move once the moved tasks run on node-b.)
    def spread() -> dict[str, str] | None:
        found = workers()
        return found if found and set(found.values()) == {"node-a", "node-b"} else None
    placed = wait_for("every connector running, on both nodes", spread, timeout=90)
    assert set(placed.values()) == {"node-a", "node-b"}
    for n in names:
        wait_for(f"{n}'s lines", lambda n=n: exactly(n, [f"{n} {j}" for j in range(3)]), timeout=60)

    wait_for("the sink's lines", lambda: sunk() == [f"{names[0]} {j}" for j in range(3)], timeout=60)

    b.kill()
    for n in names:
        _append(files[n], f"{n} 3", f"{n} 4")

    def all_on_a() -> bool:
        status = a.ksql("SHOW CONNECTORS;")[0]["connectors"]
        if any(c["state"] != "RUNNING (1/1 tasks RUNNING)" for c in status):
            return False
        return all(a.ksql(f"DESCRIBE CONNECTOR {n};")[0]["status"]["connector"]["worker_id"] == "node-a"
                   for n in names_and_sink)
    wait_for("node-a running every connector", all_on_a, timeout=120)
    for n in names:
        want = [f"{n} {j}" for j in range(5)]
        # Nothing lost; a line published twice only if the kill fell between its write and
        # its offset's (the lines here were all published long before it).
        wait_for(f"{n}'s lines after the kill", lambda n=n, want=want: exactly(n, want), timeout=90)
    # The sink: every line, in order (again after the kill at most what it had not committed).
    want = [f"{names[0]} {j}" for j in range(5)]
    wait_for("the sink's lines after the kill", lambda: list(dict.fromkeys(sunk())) == want, timeout=90)


def test_a_file_source_killed_again_and_again_publishes_every_line_exactly_once(kafka, cluster, tmp_path):
    # Exactly-once source tasks on Kafka: each batch (its lines and its offsets) is one
    # transaction. The node running the connector is killed (SIGKILL) at random moments while
    # the source publishes a growing file, in several rounds, and started again; the
    # connector goes on on one node or the other. A reader (read_committed, as Kafka's
    # clients are by default) then sees every line exactly once, in order.
    import random
    import threading
    import time

    config = {"connect.offset.flush.interval.ms": "300"}
    nodes = {"node-a": cluster("node-a", **config), "node-b": cluster("node-b", **config)}
    name = f"EOS_{cluster.service.upper()}"
    path = tmp_path / "eos.txt"
    written = [f"early {i}" for i in range(500)]
    _append(path, *written)
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set():
            batch = [f"line {n + i}" for i in range(10)]
            _append(path, *batch)
            written.extend(batch)
            n += 10
            time.sleep(0.05)

    nodes["node-a"].ksql(
        f"CREATE SOURCE CONNECTOR {name} WITH ('connector.class'='FileStreamSource', 'file'='{path}', "
        f"'topic'='{name}', 'batch.size'='10', "
        "'value.converter'='org.apache.kafka.connect.storage.StringConverter');")

    def published() -> list[str]:
        # (Not kcat -e: it never sees the end of a topic that transactions keep writing to.)
        return [r.value for r in consume_committed(kafka.bootstrap_servers, name, timeout=30)]

    def running_on(alive: str) -> str | None:
        status = nodes[alive].ksql(f"DESCRIBE CONNECTOR {name};")[0]["status"]
        if status["connector"]["state"] != "RUNNING" or [t["state"] for t in status["tasks"]] != ["RUNNING"]:
            return None
        return status["tasks"][0]["worker_id"]

    rng = random.Random()
    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        seen = 0
        for round_ in range(3):
            # Publishing (more lines than before), then killed at a random moment of it.
            seen = wait_for(f"round {round_}: publishing", lambda s=seen: (n := len(published())) > s and n,
                            timeout=120)
            victim = wait_for("the connector running", lambda: running_on("node-a") or running_on("node-b"),
                              timeout=120)
            time.sleep(rng.uniform(0.2, 1.5))
            nodes[victim].kill()
            nodes[victim].start()
    finally:
        stop.set()
        thread.join(5)
    want = list(written)
    # Once as many lines as were written are there (sooner, with any twice): exactly those.

    def enough() -> list[str] | None:
        got = published()
        return got if len(got) >= len(want) else None
    got = wait_for("every line", enough, timeout=180)
    assert len(got) == len(want), f"{len(got) - len(want)} lines published twice"
    assert got == want


def test_a_zombie_worker_is_fenced_and_publishes_nothing_twice(kafka, cluster, tmp_path):
    # A node frozen (SIGSTOP) while its file source publishes: the workers' group drops it
    # and the other node takes the connector over from the committed offsets. Woken up
    # (SIGCONT), the frozen node still runs its task for a moment: a zombie, whose next
    # transaction is refused (the new owner has initialized the task's transactional id).
    # Every line is published once, and the connector's status is the new owner's.
    import os
    import signal
    import threading
    import time

    config = {"connect.offset.flush.interval.ms": "300"}
    nodes = {"node-a": cluster("node-a", **config), "node-b": cluster("node-b", **config)}
    name = f"ZOMBIE_{cluster.service.upper()}"
    path = tmp_path / "zombie.txt"
    written = [f"early {i}" for i in range(200)]
    _append(path, *written)
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set():
            batch = [f"line {n + i}" for i in range(10)]
            _append(path, *batch)
            written.extend(batch)
            n += 10
            time.sleep(0.05)

    nodes["node-a"].ksql(
        f"CREATE SOURCE CONNECTOR {name} WITH ('connector.class'='FileStreamSource', 'file'='{path}', "
        f"'topic'='{name}', 'batch.size'='10', "
        "'value.converter'='org.apache.kafka.connect.storage.StringConverter');")

    def published() -> list[str]:
        # (Not kcat -e: it never sees the end of a topic that transactions keep writing to.)
        return [r.value for r in consume_committed(kafka.bootstrap_servers, name, timeout=30)]

    def running_on(asked: str) -> str | None:
        status = nodes[asked].ksql(f"DESCRIBE CONNECTOR {name};")[0]["status"]
        if status["connector"]["state"] != "RUNNING" or [t["state"] for t in status["tasks"]] != ["RUNNING"]:
            return None
        return status["tasks"][0]["worker_id"]

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        wait_for("publishing", lambda: len(published()) > 200, timeout=120)
        zombie = wait_for("the connector running", lambda: running_on("node-a"), timeout=120)
        other = "node-b" if zombie == "node-a" else "node-a"
        proc = nodes[zombie].proc
        assert proc is not None
        os.killpg(proc.pid, signal.SIGSTOP)
        try:
            wait_for("the other node running the connector", lambda: running_on(other) == other, timeout=120)
            n = len(published())
            wait_for("the other node publishing", lambda: len(published()) > n, timeout=60)
        finally:
            os.killpg(proc.pid, signal.SIGCONT)
        time.sleep(5.0)  # the zombie's moment
    finally:
        stop.set()
        thread.join(5)
    want = list(written)

    def enough() -> list[str] | None:
        got = published()
        return got if len(got) >= len(want) else None
    got = wait_for("every line", enough, timeout=180)
    assert len(got) == len(want), f"{len(got) - len(want)} lines published twice"
    assert got == want
    # The status is a running task's (on either node: the woken one may get it back in the
    # rebalance that follows), not a failure the zombie wrote over it.
    assert wait_for("the connector running", lambda: running_on(other), timeout=60) in nodes

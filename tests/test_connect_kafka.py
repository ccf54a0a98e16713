"""Connectors on a cluster of streamsql nodes on Kafka: each connector runs on exactly one
node (the workers' consumer group spreads them), any node describes any connector, and when
a node is killed with SIGKILL its connectors are taken over by the others, going on after the
last line they published."""
from __future__ import annotations

from pathlib import Path

import pytest

from streamsql.testing.kafka import kcat_consume
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
    placed = wait_for("every connector running", workers, timeout=90)
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

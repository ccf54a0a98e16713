"""Connectors end to end, as a user runs them: Kafka's file connector walkthrough through a
real ``streamsql server`` over HTTP (a file source into ``connect-test``, a stream and a
persistent query over it, a file sink out of the query's result), lines appended while it
runs and while it is down, a restart on the same data directory with nothing lost or
published twice; bad connectors (an unknown class, a missing key) beside good ones; DROP.
The file source's truncation and rotation are checked on the worker over the embedded log."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import threading
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

import pytest

from streamsql.server.testing import NodeProcess

pytestmark = pytest.mark.timeout(240)

SOURCE = "org.apache.kafka.connect.file.FileStreamSourceConnector"
# Sinks flush (and commit) every 300 ms instead of Connect's 10 s: the tests wait less.
NODE_ARGS = ("--config", "connect.offset.flush.interval.ms=300")


def ksql(url: str, sql: str, props: dict[str, Any] | None = None) -> tuple[int, Any]:
    body = {"ksql": sql, "streamsProperties": props or {}}
    req = urllib.request.Request(url + "/ksql", json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def ok(url: str, sql: str, props: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    status, body = ksql(url, sql, props)
    assert status == 200, body
    return body


def query(url: str, sql: str) -> list[Any]:
    """A pull query's rows (the /query endpoint's ``row`` objects)."""
    req = urllib.request.Request(url + "/query", json.dumps({"ksql": sql, "streamsProperties": {}}).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        items = json.loads(resp.read())
    return [i["row"]["columns"] for i in items if "row" in i]


def eventually(check: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (AssertionError, OSError) as exc:
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout} s: {what} (last: {last!r})")


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def append(path: Path, *new: str) -> None:
    with open(path, "a") as f:
        f.write("".join(line + "\n" for line in new))


def test_the_file_walkthrough_survives_a_restart_with_nothing_lost_or_twice(tmp_path):
    source_file, sink_file = tmp_path / "test.txt", tmp_path / "test.sink.txt"
    append(source_file, "first message", "second message")
    data = tmp_path / "data"
    earliest = {"auto.offset.reset": "earliest"}
    with NodeProcess(data, NODE_ARGS) as node:
        url = node.url
        created = ok(url, f"CREATE SOURCE CONNECTOR file_source WITH ('connector.class'='FileStreamSource', "
                          f"'file'='{source_file}', 'topic'='connect-test');")[0]
        assert created["@type"] == "connector_info"
        assert created["info"] == {"name": "FILE_SOURCE", "type": "source",
                                   "tasks": [{"connector": "FILE_SOURCE", "task": 0}],
                                   "config": {"connector.class": "FileStreamSource", "file": str(source_file),
                                              "topic": "connect-test", "name": "FILE_SOURCE"}}
        ok(url, "CREATE STREAM lines (payload STRING) WITH (kafka_topic='connect-test', value_format='JSON', "
                "partitions=1);", earliest)
        ok(url, "CREATE STREAM shouted WITH (kafka_topic='shouted', value_format='KAFKA') AS "
                "SELECT UCASE(payload) AS line FROM lines EMIT CHANGES;", earliest)
        ok(url, f"CREATE SINK CONNECTOR file_sink WITH ('connector.class'='{SINK_CLASS}', "
                f"'file'='{sink_file}', 'topics'='shouted', "
                "'value.converter'='org.apache.kafka.connect.storage.StringConverter');")
        eventually(lambda: lines(sink_file) == ["FIRST MESSAGE", "SECOND MESSAGE"], what="the first two lines")

        # What Connect's JsonConverter writes (schemas.enable=true), byte for byte.
        req = urllib.request.Request(url + "/query", json.dumps(
            {"ksql": "PRINT 'connect-test' FROM BEGINNING LIMIT 1;"}).encode(), {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            printed = resp.read().decode()
        assert '{"schema":{"type":"string","optional":false},"payload":"first message"}' in printed

        append(source_file, "third message")
        eventually(lambda: lines(sink_file)[-1:] == ["THIRD MESSAGE"], what="a line appended while running")

        described = ok(url, "DESCRIBE CONNECTOR file_source;")[0]
        assert described["@type"] == "connector_description"
        assert described["connectorClass"] == "FileStreamSource"
        assert described["status"]["connector"]["state"] == "RUNNING"
        assert [(t["id"], t["state"]) for t in described["status"]["tasks"]] == [(0, "RUNNING")]
        assert described["topics"] == ["connect-test"]
        assert [s["name"] for s in described["sources"]] == ["LINES"]
        listed = ok(url, "SHOW CONNECTORS;")[0]
        assert listed["@type"] == "connector_list"
        assert sorted((c["name"], c["type"], c["state"]) for c in listed["connectors"]) == [
            ("FILE_SINK", "sink", "RUNNING (1/1 tasks RUNNING)"),
            ("FILE_SOURCE", "source", "RUNNING (1/1 tasks RUNNING)")]
        assert [c["name"] for c in ok(url, "SHOW SINK CONNECTORS;")[0]["connectors"]] == ["FILE_SINK"]

    # Lines written while the node is down are published once it is back, after the ones
    # published before, and none of those again.
    append(source_file, "fourth message")
    with NodeProcess(data, NODE_ARGS) as node:
        url = node.url
        eventually(lambda: lines(sink_file)[-1:] == ["FOURTH MESSAGE"], what="the line written while down")
        append(source_file, "fifth message")
        eventually(lambda: lines(sink_file)[-1:] == ["FIFTH MESSAGE"], what="a line after the restart")
        time.sleep(1.0)  # anything published twice would have arrived by now
        expected = ["FIRST MESSAGE", "SECOND MESSAGE", "THIRD MESSAGE", "FOURTH MESSAGE", "FIFTH MESSAGE"]
        assert lines(sink_file) == expected
        assert [r[0] for r in query(url, "SELECT payload FROM lines;")] == [x.lower() for x in expected]
        assert {c["name"] for c in ok(url, "SHOW CONNECTORS;")[0]["connectors"]} == {"FILE_SOURCE", "FILE_SINK"}

        # The shell, as a client of the node, prints ksqlDB's tables.
        shell = subprocess.run([sys.executable, "-m", "streamsql", "--server", url, "-e",
                                "SHOW CONNECTORS; DESCRIBE CONNECTOR file_source;"],
                               capture_output=True, text=True, timeout=60)
        assert shell.returncode == 0, shell.stderr
        out = shell.stdout
        assert " Connector Name | Type   | Class            | Status" in out
        assert " FILE_SOURCE    | SOURCE | FileStreamSource | RUNNING (1/1 tasks RUNNING)" in out
        assert "Name                 : FILE_SOURCE" in out and "State                : RUNNING" in out
        assert " 0       | RUNNING |" in out and " Related Topics" in out and " connect-test" in out
        assert " LINES            | connect-test | STREAM" in out


SINK_CLASS = "FileStreamSink"


def test_bad_connectors_fail_alone_and_drop_stops_a_connector(tmp_path):
    good_file, orphan = tmp_path / "good.txt", tmp_path / "never.txt"
    append(good_file, "a")
    with NodeProcess(tmp_path / "data", NODE_ARGS) as node:
        url = node.url
        ok(url, f"CREATE SOURCE CONNECTOR good WITH ('connector.class'='{SOURCE}', 'file'='{good_file}', "
                "'topic'='good', 'value.converter'='org.apache.kafka.connect.storage.StringConverter');")
        ok(url, "CREATE STREAM good_lines (line STRING) WITH (kafka_topic='good', value_format='KAFKA', "
                "partitions=1);", {"auto.offset.reset": "earliest"})
        ok(url, "CREATE STREAM good_copy AS SELECT line FROM good_lines EMIT CHANGES;",
           {"auto.offset.reset": "earliest"})

        # An unknown class: Connect's error, nothing created.
        status, body = ksql(url, "CREATE SOURCE CONNECTOR nope WITH ('connector.class'='com.example.NoSuchConnector');")
        # (ksqlDB answers with its Connect cluster's status, in a generic_error.)
        assert status == 500 and body["@type"] == "generic_error" and body["error_code"] == 50000
        assert body["message"].startswith('Failed to create connector: {"error_code":500,"message":"Failed to find '
                                          'any class that implements Connector and which name matches '
                                          'com.example.NoSuchConnector, available connectors are: ')
        # A missing required key Connect validates (topic): refused with Connect's message.
        status, body = ksql(url, f"CREATE SOURCE CONNECTOR no_topic WITH ('connector.class'='FileStreamSource', "
                                 f"'file'='{orphan}');")
        assert status == 400 and body["error_code"] == 40000
        assert 'Missing required configuration \\"topic\\" which has no default value.' in body["message"]
        # Without a file the task fails: its trace says why, and nothing else stops.
        ok(url, "CREATE SOURCE CONNECTOR no_file WITH ('connector.class'='FileStreamSource', 'topic'='x');")

        def failed_task() -> dict[str, Any] | None:
            task = ok(url, "DESCRIBE CONNECTOR no_file;")[0]["status"]["tasks"][0]
            return task if task["state"] == "FAILED" else None
        task = eventually(failed_task, what="the task without a file failing")
        assert task["trace"].startswith("streamsql.runtime.connect.api.ConnectException: Missing required "
                                        "configuration \"file\"")
        # Records that do not convert (plain text read with JsonConverter's envelope): the
        # sink's task fails with Connect's DataException, nothing is committed past them.
        ok(url, f"CREATE SINK CONNECTOR wrong_format WITH ('connector.class'='FileStreamSink', "
                f"'file'='{tmp_path / 'never.sink'}', 'topics'='good');")

        def failed_sink() -> dict[str, Any] | None:
            task = ok(url, "DESCRIBE CONNECTOR wrong_format;")[0]["status"]["tasks"][0]
            return task if task["state"] == "FAILED" else None
        task = eventually(failed_sink, what="the sink that cannot convert failing")
        assert task["trace"].startswith("streamsql.runtime.connect.converters.DataException: Converting byte[] "
                                        "to Kafka Connect data failed due to serialization error")
        assert not (tmp_path / "never.sink").read_text()
        assert {c["name"]: c["state"] for c in ok(url, "SHOW CONNECTORS;")[0]["connectors"]} == {
            "GOOD": "RUNNING (1/1 tasks RUNNING)", "NO_FILE": "RUNNING (0/1 tasks RUNNING)",
            "WRONG_FORMAT": "RUNNING (0/1 tasks RUNNING)"}
        ok(url, "DROP CONNECTOR wrong_format;")

        append(good_file, "b")
        eventually(lambda: [r[0] for r in query(url, "SELECT line FROM good_copy;")] == ["a", "b"],
                   what="the good connector and the query going on")

        # DROP stops it: lines appended afterwards stay in the file.
        dropped = ok(url, "DROP CONNECTOR good;")[0]
        assert dropped == {"@type": "drop_connector", "statementText": "DROP CONNECTOR good;",
                           "connectorName": "GOOD", "warnings": []}
        append(good_file, "c")
        time.sleep(1.5)
        assert [r[0] for r in query(url, "SELECT line FROM good_lines;")] == ["a", "b"]
        assert [c["name"] for c in ok(url, "SHOW CONNECTORS;")[0]["connectors"]] == ["NO_FILE"]
        status, body = ksql(url, "DROP CONNECTOR good;")
        assert (status, body) == (404, {"@type": "generic_error", "error_code": 40400, "message":
                                         'Failed to drop connector: {"error_code":404,"message":"Connector GOOD '
                                         'not found"}'})
        assert ok(url, "DROP CONNECTOR IF EXISTS good;")[0]["message"] == "Connector 'GOOD' does not exist."
        plugins = ok(url, "SHOW CONNECTOR PLUGINS;")[0]
        assert {"className": SOURCE, "type": "source", "version": "3.9.0"} in plugins["connectorPlugins"]

    # The drop is in the command log: a restarted node does not bring the connector back.
    with NodeProcess(tmp_path / "data", NODE_ARGS) as node:
        assert [c["name"] for c in ok(node.url, "SHOW CONNECTORS;")[0]["connectors"]] == ["NO_FILE"]


# ----------------------------------------------------------- the file source, on the worker
async def _worker_run(tmp_path: Path, body: Callable[..., Any]) -> None:
    from streamsql.runtime.connect.worker import Worker
    from streamsql.runtime.log.embedded import EmbeddedLog

    log = EmbeddedLog(tmp_path / "data")
    worker = Worker(log, "test_", "127.0.0.1:0", {"value.converter": "org.apache.kafka.connect.storage.StringConverter"})
    await worker.start()

    async def published() -> list[str]:
        if await log.describe_topic("t") is None:
            return []
        return [v.decode() for v in (await log.fetch("t", 0, 0)).values]

    async def until(want: list[str]) -> None:
        for _ in range(150):
            if await published() == want:
                return
            await asyncio.sleep(0.1)
        assert await published() == want

    try:
        await body(worker, until, published)
    finally:
        await worker.close()
        await log.close()


def test_the_file_source_reads_a_truncated_file_again_from_its_start(tmp_path):
    path = tmp_path / "app.log"
    append(path, "one", "two")

    async def body(worker, until, published):
        await worker.create("src", {"connector.class": SOURCE, "file": str(path), "topic": "t"})
        await until(["one", "two"])
        path.write_text("")          # truncated (logrotate's copytruncate)
        await asyncio.sleep(1.2)
        append(path, "three")
        await until(["one", "two", "three"])
        # The position stored is the byte after the last line published from the new start.
        assert worker.storage.offset("src", {"filename": str(path)}) == {"position": 6}
    asyncio.run(_worker_run(tmp_path, body))


def test_the_file_source_finishes_a_rotated_file_then_reads_the_new_one(tmp_path):
    path = tmp_path / "app.log"
    append(path, "one")

    async def body(worker, until, published):
        await worker.create("src", {"connector.class": SOURCE, "file": str(path), "topic": "t"})
        await until(["one"])
        with open(path, "a") as old:
            os.rename(path, tmp_path / "app.log.1")
            old.write("two\n")      # written to the old file after it was moved
        append(path, "three")         # the new file
        await until(["one", "two", "three"])
        append(path, "four")
        await until(["one", "two", "three", "four"])
    asyncio.run(_worker_run(tmp_path, body))


def test_a_partial_last_line_waits_for_its_end_and_crlf_ends_lines(tmp_path):
    path = tmp_path / "in.txt"
    path.write_bytes(b"a\r\nb\rc")

    async def body(worker, until, published):
        await worker.create("src", {"connector.class": SOURCE, "file": str(path), "topic": "t", "batch.size": "1"})
        await until(["a", "b"])
        with open(path, "ab") as f:
            f.write("d é\n".encode())
        await until(["a", "b", "cd é"])
        assert worker.storage.offset("src", {"filename": str(path)}) == {"position": len(b"a\r\nb\rcd \xc3\xa9\n")}
    asyncio.run(_worker_run(tmp_path, body))


def test_kill_9_loses_no_line_of_a_file_source_or_sink(tmp_path):
    source_file, sink_file = tmp_path / "in.txt", tmp_path / "out.txt"
    source_file.write_text("")
    data = tmp_path / "data"
    written: list[str] = []
    stop = threading.Event()

    def writer() -> None:
        # A file that keeps growing, across the kill and the restart.
        n = 0
        while not stop.is_set():
            batch = [f"line {n + i}" for i in range(20)]
            append(source_file, *batch)
            written.extend(batch)
            n += 20
            time.sleep(0.01)

    node = NodeProcess(data, NODE_ARGS).start()
    thread = threading.Thread(target=writer, daemon=True)
    try:
        ok(node.url, f"CREATE SOURCE CONNECTOR src WITH ('connector.class'='FileStreamSource', 'file'='{source_file}', "
                     "'topic'='kill-test', 'batch.size'='50');")
        ok(node.url, f"CREATE SINK CONNECTOR snk WITH ('connector.class'='FileStreamSink', 'file'='{sink_file}', "
                     "'topics'='kill-test');")
        thread.start()
        eventually(lambda: len(lines(sink_file)) > 200, what="the sink writing")
        assert node.proc is not None
        node.proc.kill()              # kill -9: no flush, no commit, no goodbye
        node.proc.wait(10)
        time.sleep(0.5)
        node = NodeProcess(data, NODE_ARGS).start()
        time.sleep(1.0)
    finally:
        stop.set()
        thread.join(5)
    try:
        ok(node.url, "CREATE STREAM killed (payload STRING) WITH (kafka_topic='kill-test', value_format='JSON');")
        total = len(written)
        eventually(lambda: len(set(lines(sink_file))) >= total, timeout=60, what="every line in the sink")
        published = [r[0] for r in query(node.url, "SELECT payload FROM killed;")]
        # The source is exactly-once: every line once, in the file's order. The sink is at
        # least once: every line, in order once lines written again are dropped.
        assert published == written
        assert list(dict.fromkeys(lines(sink_file))) == written
    finally:
        node.stop()


def test_kill_9_at_random_points_of_a_file_sources_publishing_publishes_every_line_once(tmp_path):
    # Several rounds of a node killed (SIGKILL) while its file source publishes a growing
    # file in small batches, at random moments: a kill can fall between a batch's records
    # and its offsets. Then every line is in the topic exactly once, in order. (Where it
    # falls is luck: tests/test_connect_exactly_once.py kills at chosen writes.)
    import random

    source_file = tmp_path / "in.txt"
    pad = "x" * 100
    written = [f"early {i} {pad}" for i in range(5000)]
    append(source_file, *written)
    data = tmp_path / "data"
    stop = threading.Event()
    args = NODE_ARGS + EXTRA_ARGS

    def writer() -> None:
        n = 0
        while not stop.is_set():
            batch = [f"line {n + i} {pad}" for i in range(20)]
            append(source_file, *batch)
            written.extend(batch)
            n += 20
            time.sleep(0.005)

    rng = random.Random()
    thread = threading.Thread(target=writer, daemon=True)
    node = NodeProcess(data, args).start()
    try:
        ok(node.url, f"CREATE SOURCE CONNECTOR src WITH ('connector.class'='FileStreamSource', "
                     f"'file'='{source_file}', 'topic'='kill-rounds', 'batch.size'='20');")
        thread.start()
        for _ in range(KILL_ROUNDS):
            time.sleep(rng.uniform(0.3, 1.5))
            assert node.proc is not None
            node.proc.kill()
            node.proc.wait(10)
            node = NodeProcess(data, args).start()
    finally:
        stop.set()
        thread.join(5)
    try:
        ok(node.url, "CREATE STREAM rounds (payload STRING) WITH (kafka_topic='kill-rounds', value_format='JSON');")
        total = len(written)

        def published() -> list[str]:
            return [r[0] for r in query(node.url, "SELECT payload FROM rounds;")]
        eventually(lambda: len(published()) >= total, timeout=90, what="every line published")
        time.sleep(1.0)  # anything published twice would have arrived by now
        got = published()
        assert len(got) == total, f"{len(got) - total} lines published twice"
        assert got == written
    finally:
        node.stop()


KILL_ROUNDS = 6
# (``("--config", "connect.exactly.once.source.support=disabled")`` runs the test on Connect's
# at-least-once, which it should then fail now and then.)
EXTRA_ARGS: tuple[str, ...] = ()


def test_the_file_source_waits_for_its_file_to_be_created(tmp_path):
    path = tmp_path / "later.txt"

    async def body(worker, until, published):
        await worker.create("src", {"connector.class": SOURCE, "file": str(path), "topic": "t"})
        await asyncio.sleep(0.5)
        assert worker.status("src").tasks[0].state == "RUNNING" and await published() == []
        append(path, "at last")
        await until(["at last"])
    asyncio.run(_worker_run(tmp_path, body))


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs (test_disk_full's drill): yields (path, grow), grow() makes it 64 MiB."""
    from tests.test_disk_full import _mount

    disk = tmp_path / "disk"
    disk.mkdir()
    try:
        _mount(disk, "4m")
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {exc}")
    try:
        yield disk, lambda: _mount(disk, "64m", remount=True)
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False, capture_output=True)


def test_a_full_disk_holds_the_file_source_back_until_there_is_space(small_disk, tmp_path):
    disk, grow = small_disk
    path = tmp_path / "big.txt"  # the file read is elsewhere: only the log's disk fills up
    pad = "x" * 900
    want = [f"{i} {pad}" for i in range(8000)]  # ~7 MB: more than the 4 MiB disk
    append(path, *want)

    async def main() -> None:
        from streamsql.runtime.connect.worker import Worker
        from streamsql.runtime.log.embedded import EmbeddedLog

        log = EmbeddedLog(disk / "data")
        worker = Worker(log, "test_", "127.0.0.1:0",
                        {"value.converter": "org.apache.kafka.connect.storage.StringConverter"})
        await worker.start()
        try:
            await worker.create("src", {"connector.class": SOURCE, "file": str(path), "topic": "t",
                                        "batch.size": "200"})

            async def count() -> int:
                return (await log.end_offsets("t"))[0] if await log.describe_topic("t") else 0
            # The disk fills: writing stops short of the file's end, the task keeps trying.
            stalled, same = -1, 0
            for _ in range(300):
                n = await count()
                same = same + 1 if n == stalled else 0
                stalled = n
                if same >= 10:
                    break
                await asyncio.sleep(0.1)
            assert 0 < stalled < len(want)
            assert worker.status("src").tasks[0].state == "RUNNING"
            grow()
            for _ in range(300):
                if await count() >= len(want):
                    break
                await asyncio.sleep(0.1)
            got: list[str] = []
            while len(got) < await count():
                got += [v.decode() for v in (await log.fetch("t", 0, len(got))).values]
            assert got == want  # every line once, in order
        finally:
            await worker.close()
            await log.close()
    asyncio.run(main())

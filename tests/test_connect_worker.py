"""The Connect worker's Python API on the embedded log (what the statements and Connect's REST
API use): statuses with traces, pause/resume/stop, restarts of connectors and tasks, configs
and target states kept across a new worker on the same data directory, sink commits only
after flush, Connect's errors."""
from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any, Mapping, Sequence

import pytest

from streamsql.runtime.connect.api import (
    STRING, ConnectException, Plugin, Schema, SinkConnector, SinkRecord, SinkTask, SourceConnector,
    SourceRecord, SourceTask, Task)
from streamsql.runtime.connect.plugins import PluginRegistry
from streamsql.runtime.connect.worker import ConnectRestError, Worker
from streamsql.runtime.log.base import ProducerRecord
from streamsql.runtime.log.embedded import EmbeddedLog

pytestmark = pytest.mark.timeout(120)

FILE_SOURCE = "org.apache.kafka.connect.file.FileStreamSourceConnector"


class CountingSource(SourceConnector):
    """Counts from where it stopped; fails on the number in ``fail.at``, once per process
    unless ``fail.always``."""

    def start(self, props: Mapping[str, str]) -> None:
        self.props = dict(props)

    def task_class(self) -> type[Task]:
        return CountingTask

    def task_configs(self, max_tasks: int) -> list[dict[str, str]]:
        return [{"task.id": str(i)} for i in range(max_tasks)]


class CountingTask(SourceTask):
    failed: set[str] = set()

    def start(self, props: Mapping[str, str]) -> None:
        self.props = props
        self.part = {"task": props["task.id"]}
        stored = self.context.offset(self.part)
        self.n = stored["n"] if stored else 0
        self.stopped = threading.Event()

    def poll(self) -> Sequence[SourceRecord] | None:
        if self.stopped.wait(0.05):
            return None
        fail_at = int(self.props.get("fail.at", "-1"))
        key = f"{self.props['name']}-{self.part['task']}"
        if self.n == fail_at and key not in CountingTask.failed:
            CountingTask.failed.add(key)
            raise ConnectException(f"cannot count past {self.n}")
        self.n += 1
        return [SourceRecord(self.part, {"n": self.n}, self.props["topic"], value_schema=Schema(STRING),
                             value=f"{self.part['task']}:{self.n}")]

    def stop(self) -> None:
        self.stopped.set()


class GrowingSource(SourceConnector):
    """Has ``tasks`` tasks; once ``grown`` is set it asks for a reconfiguration (as the JDBC
    source does when a table appears), from a thread of its own."""

    tasks = 1
    grown = threading.Event()

    def start(self, props: Mapping[str, str]) -> None:
        self.props = dict(props)
        threading.Thread(target=self._monitor, daemon=True).start()

    def _monitor(self) -> None:
        if GrowingSource.grown.wait(30):
            self.context.request_task_reconfiguration()

    def task_class(self) -> type[Task]:
        return CountingTask

    def task_configs(self, max_tasks: int) -> list[dict[str, str]]:
        return [{"task.id": str(i)} for i in range(min(GrowingSource.tasks, max_tasks))]


class StuckSource(SourceConnector):
    """Its task's poll ignores stop until ``release`` is set (a driver hung in a query)."""

    release = threading.Event()

    def start(self, props: Mapping[str, str]) -> None:
        pass

    def task_class(self) -> type[Task]:
        return StuckTask

    def task_configs(self, max_tasks: int) -> list[dict[str, str]]:
        return [{}]


class StuckTask(SourceTask):
    stopped = threading.Event()

    def start(self, props: Mapping[str, str]) -> None:
        pass

    def poll(self) -> Sequence[SourceRecord] | None:
        StuckSource.release.wait(60)
        return None

    def stop(self) -> None:
        StuckTask.stopped.set()


class RecordingSink(SinkConnector):
    def start(self, props: Mapping[str, str]) -> None:
        self.props = dict(props)

    def task_class(self) -> type[Task]:
        return RecordingSinkTask

    def task_configs(self, max_tasks: int) -> list[dict[str, str]]:
        return [dict(self.props)]


class RecordingSinkTask(SinkTask):
    """Keeps what it was given; ``durable`` is what it was given up to its last flush."""

    given: list[Any] = []
    durable: list[Any] = []

    def start(self, props: Mapping[str, str]) -> None:
        self.pending: list[Any] = []

    def put(self, records: Sequence[SinkRecord]) -> None:
        self.pending += [r.value for r in records]
        RecordingSinkTask.given += [r.value for r in records]

    def flush(self, offsets: Mapping[tuple[str, int], int]) -> None:
        RecordingSinkTask.durable += self.pending
        self.pending = []

    def stop(self) -> None:
        pass


def registry() -> PluginRegistry:
    reg = PluginRegistry()
    reg.add(Plugin("test.CountingSource", CountingSource, "1.0", ("CountingSource",)))
    reg.add(Plugin("test.RecordingSink", RecordingSink, "1.0", ("RecordingSink",)))
    reg.add(Plugin("test.GrowingSource", GrowingSource, "1.0", ("GrowingSource",)))
    reg.add(Plugin("test.StuckSource", StuckSource, "1.0", ("StuckSource",)))
    return reg


async def values(log: EmbeddedLog, topic: str) -> list[str]:
    if await log.describe_topic(topic) is None:
        return []
    out: list[str] = []
    for p, end in enumerate(await log.end_offsets(topic)):
        pos = 0
        while pos < end:
            batch = await log.fetch(topic, p, pos)
            out += [v.decode() for v in batch.values]
            pos = batch.offsets[-1] + 1
    return out


async def until(check, timeout: float = 15.0) -> Any:
    for _ in range(int(timeout / 0.05)):
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {timeout} s")


def new_worker(path: Path, **config: str) -> tuple[EmbeddedLog, Worker]:
    log = EmbeddedLog(path)
    return log, Worker(log, "t_", "127.0.0.1:8083", {"value.converter": "org.apache.kafka.connect.storage.StringConverter",
                                                     "offset.flush.interval.ms": "100", **config}, registry())


def test_a_failing_task_is_failed_with_its_trace_and_the_others_go_on(tmp_path):
    CountingTask.failed = set()

    async def main() -> None:
        log, worker = new_worker(tmp_path / "data")
        await worker.start()
        try:
            await worker.create("flaky", {"connector.class": "CountingSource", "topic": "a", "tasks.max": "2",
                                          "fail.at": "3"})
            await worker.create("steady", {"connector.class": "test.CountingSource", "topic": "b"})

            async def failed() -> bool:
                return [t.state for t in worker.status("flaky").tasks] == ["FAILED", "FAILED"]
            await until(failed)
            task = worker.task_status("flaky", 0)
            assert task.trace.startswith("streamsql.runtime.connect.api.ConnectException: cannot count past 3\n")
            assert task.to_json()["worker_id"] == "127.0.0.1:8083"
            assert worker.status("flaky").state == "RUNNING"   # the connector itself is fine, as in Connect
            seen = len(await values(log, "b"))
            await until(lambda: _more(log, "b", seen))

            # Restarting the failed tasks: they go on after the last record they published.
            await worker.restart("flaky", include_tasks=True, only_failed=True)
            await until(lambda: _has(log, "a", "0:6"))
            a = await values(log, "a")
            assert [v for v in a if v.startswith("0:")][:6] == ["0:1", "0:2", "0:3", "0:4", "0:5", "0:6"]
            assert worker.status("flaky").to_json()["tasks"][0] == {"id": 0, "state": "RUNNING",
                                                                     "worker_id": "127.0.0.1:8083"}
        finally:
            await worker.close()
            await log.close()
    asyncio.run(main())


async def _more(log: EmbeddedLog, topic: str, than: int) -> bool:
    return len(await values(log, topic)) > than


async def _has(log: EmbeddedLog, topic: str, value: str) -> bool:
    return value in await values(log, topic)


def test_pause_resume_stop_and_a_new_worker_keeps_configs_states_and_offsets(tmp_path):
    async def main() -> None:
        log, worker = new_worker(tmp_path / "data")
        await worker.start()
        await worker.create("c", {"connector.class": "CountingSource", "topic": "c"})
        await until(lambda: _more(log, "c", 2))
        await worker.pause("c")
        status = worker.status("c")
        await until(lambda: _all(worker, "c", "PAUSED"))
        assert status.state == "PAUSED"
        paused_at = len(await values(log, "c"))
        await asyncio.sleep(0.4)
        assert len(await values(log, "c")) == paused_at
        await worker.close()
        await log.close()

        # A new worker on the same data: the connector is there, still paused.
        log, worker = new_worker(tmp_path / "data")
        await worker.start()
        try:
            assert worker.connectors() == ["c"]
            await until(lambda: _all(worker, "c", "PAUSED"))
            await worker.resume("c")
            await until(lambda: _more(log, "c", paused_at + 2))
            published = await values(log, "c")
            # Counting went on from the stored offset: no number twice, none skipped.
            assert published == [f"0:{i}" for i in range(1, len(published) + 1)]

            await worker.stop_connector("c")
            assert worker.status("c").state == "STOPPED" and worker.status("c").tasks == ()
            await worker.resume("c")
            await until(lambda: _all(worker, "c", "RUNNING"))

            with pytest.raises(ConnectRestError) as err:
                await worker.create("c", {"connector.class": "CountingSource", "topic": "c"})
            assert (err.value.status, err.value.message) == (409, "Connector c already exists")
            with pytest.raises(ConnectRestError) as err:
                worker.status("nope")
            assert err.value.body() == {"error_code": 404, "message": "Connector nope not found"}
            with pytest.raises(ConnectRestError) as err:
                await worker.create("x", {"topic": "c"})
            assert err.value.status == 400 and err.value.message.startswith("Connector config {topic=c, name=x}")
            created, info = await worker.put_config("c", {"connector.class": "CountingSource", "topic": "c2"})
            assert not created and info.config["topic"] == "c2" and info.tasks == (0,)
            await until(lambda: _more(log, "c2", 0))
            # Connect's active topics: every topic used since creation, until a reset.
            assert worker.topics("c") == ["c", "c2"]
            await worker.reset_topics("c")
            assert worker.topics("c") == []
            await worker.delete("c")
            assert worker.connectors() == []
        finally:
            await worker.close()
            await log.close()
    asyncio.run(main())


async def _all(worker: Worker, name: str, state: str) -> bool:
    status = worker.status(name)
    return status.state == state and all(t.state == state for t in status.tasks)


def test_a_sink_commits_only_what_it_flushed(tmp_path):
    RecordingSinkTask.given, RecordingSinkTask.durable = [], []

    async def main() -> None:
        log, worker = new_worker(tmp_path / "data", **{"offset.flush.interval.ms": "60000"})
        await log.create_topic("in", 1)
        await log.produce("in", [ProducerRecord(None, f"v{i}".encode(), 0) for i in range(5)])
        await worker.start()
        try:
            await worker.create("s", {"connector.class": "RecordingSink", "topics": "in"})
            await until(lambda: _given(5))
            # Given but not flushed (the interval is a minute): nothing committed.
            assert await log.committed("connect-s", "in") == {}
            await worker.close()   # stopping flushes and commits
            assert RecordingSinkTask.durable == [f"v{i}" for i in range(5)]
            assert await log.committed("connect-s", "in") == {0: 5}
            with pytest.raises(ConnectRestError) as err:
                await worker.create("bad", {"connector.class": "RecordingSink"})
            assert "Must configure one of topics or topics.regex" in err.value.message
        finally:
            await worker.close()
            await log.close()
    asyncio.run(main())


async def _given(n: int) -> bool:
    return len(RecordingSinkTask.given) >= n


def test_a_file_source_connector_restarted_alone_keeps_its_task(tmp_path):
    path = tmp_path / "in.txt"
    path.write_text("a\n")

    async def main() -> None:
        log, worker = new_worker(tmp_path / "data")
        await worker.start()
        try:
            await worker.create("f", {"connector.class": FILE_SOURCE, "file": str(path), "topic": "f"})
            await until(lambda: _has(log, "f", "a"))
            await worker.restart("f")
            await worker.restart_task("f", 0)
            with open(path, "a") as f:
                f.write("b\n")
            await until(lambda: _has(log, "f", "b"))
            assert await values(log, "f") == ["a", "b"]
            with pytest.raises(ConnectRestError) as err:
                await worker.restart_task("f", 3)
            assert err.value.status == 404
        finally:
            await worker.close()
            await log.close()
    asyncio.run(main())


def test_a_paused_sink_takes_nothing_until_resumed(tmp_path):
    RecordingSinkTask.given, RecordingSinkTask.durable = [], []

    async def main() -> None:
        log, worker = new_worker(tmp_path / "data")
        await log.create_topic("in", 1)
        await worker.start()
        try:
            await worker.create("s", {"connector.class": "RecordingSink", "topics": "in"})
            await log.produce("in", [ProducerRecord(None, b"a", 0)])
            await until(lambda: _given(1))
            await worker.pause("s")
            await until(lambda: _all(worker, "s", "PAUSED"))
            await log.produce("in", [ProducerRecord(None, b"b", 0)])
            await asyncio.sleep(0.8)
            assert RecordingSinkTask.given == ["a"]
            await worker.resume("s")
            await until(lambda: _given(2))
            assert RecordingSinkTask.given == ["a", "b"]
            assert worker.status("s").to_json()["tasks"][0]["state"] == "RUNNING"
        finally:
            await worker.close()
            await log.close()
    asyncio.run(main())


def test_the_worker_config_comes_from_a_properties_file_under_the_engines_connect_keys(tmp_path):
    from streamsql.runtime.connect.worker import worker_for

    props = tmp_path / "worker.properties"
    props.write_text("# Connect's worker file\nvalue.converter=org.apache.kafka.connect.storage.StringConverter\n"
                     "offset.flush.interval.ms: 2000\n! comment\n")
    log = EmbeddedLog(None)
    worker = worker_for(log, {"ksql.connect.worker.config": str(props), "connect.offset.flush.interval.ms": "500",
                              "ksql.service.id": "svc_", "streamsql.node.name": "http://10.0.0.1:8088"})
    assert worker.worker_config["value.converter"] == "org.apache.kafka.connect.storage.StringConverter"
    assert worker.flush_interval_s == 0.5
    assert worker.worker_id == "10.0.0.1:8088"
    assert worker.storage.configs_topic == "_streamsql_svc_connect-configs"


def test_errors_tolerance_all_skips_what_does_not_convert_into_the_dead_letter_queue(tmp_path):
    RecordingSinkTask.given, RecordingSinkTask.durable = [], []

    async def main() -> None:
        log, worker = new_worker(tmp_path / "data")
        await log.create_topic("in", 1)
        good = b'{"schema":{"type":"string","optional":false},"payload":"fine"}'
        await log.produce("in", [ProducerRecord(b"k", b"not json", 7), ProducerRecord(None, good, 8)])
        await worker.start()
        try:
            json = "org.apache.kafka.connect.json.JsonConverter"
            strings = "org.apache.kafka.connect.storage.StringConverter"
            await worker.create("strict", {"connector.class": "RecordingSink", "topics": "in", "value.converter": json,
                                           "key.converter": strings})
            await worker.create("tolerant", {
                "connector.class": "RecordingSink", "topics": "in", "value.converter": json, "key.converter": strings,
                "errors.tolerance": "all", "errors.log.enable": "true",
                "errors.deadletterqueue.topic.name": "dlq", "errors.deadletterqueue.context.headers.enable": "true"})
            await until(lambda: _given(1))
            await until(lambda: _task_failed(worker, "strict"))
            assert "Converting byte[] to Kafka Connect data failed" in worker.task_status("strict", 0).trace
            assert RecordingSinkTask.given == ["fine"]      # the tolerant one's: the bad record skipped
            assert worker.status("tolerant").tasks[0].state == "RUNNING"
            dead = await log.fetch("dlq", 0, 0)
            assert (dead.keys, dead.values, dead.timestamps) == ([b"k"], [b"not json"], [7])
            headers = dict(dead.headers[0])
            assert headers["__connect.errors.topic"] == b"in" and headers["__connect.errors.offset"] == b"0"
            assert headers["__connect.errors.stage"] == b"VALUE_CONVERTER"
            assert headers["__connect.errors.class.name"] == json.encode()
            assert headers["__connect.errors.connector.name"] == b"tolerant"
        finally:
            await worker.close()
            await log.close()
    asyncio.run(main())


async def _task_failed(worker: Worker, name: str) -> bool:
    return worker.task_status(name, 0).state == "FAILED"


def test_a_connector_asking_for_reconfiguration_gets_its_new_tasks(tmp_path):
    GrowingSource.tasks = 1
    GrowingSource.grown.clear()

    async def main() -> None:
        log, worker = new_worker(tmp_path / "data")
        await worker.start()
        try:
            await worker.create("g", {"connector.class": "GrowingSource", "topic": "g", "tasks.max": "4"})
            await until(lambda: _all(worker, "g", "RUNNING"))
            assert worker.info("g").tasks == (0,)
            GrowingSource.tasks = 2
            GrowingSource.grown.set()

            async def two() -> bool:
                return [t.state for t in worker.status("g").tasks] == ["RUNNING", "RUNNING"]
            await until(two)
            await until(lambda: _has(log, "g", "1:1"))
            # Task 0 went on from its stored offset: no number of it twice.
            zeros = [v for v in await values(log, "g") if v.startswith("0:")]
            assert zeros == [f"0:{i}" for i in range(1, len(zeros) + 1)]
        finally:
            await worker.close()
            await log.close()
    asyncio.run(main())


def test_a_malformed_record_in_the_configs_topic_is_skipped(tmp_path):
    async def main() -> None:
        log, worker = new_worker(tmp_path / "data")
        await worker.start()
        await worker.create("ok", {"connector.class": "CountingSource", "topic": "ok"})
        await worker.close()
        await log.produce(worker.storage.configs_topic, [ProducerRecord(b"connector-junk", b"{not json", 0)])
        await log.close()
        log, worker = new_worker(tmp_path / "data")
        await worker.start()
        try:
            assert worker.connectors() == ["ok"]
            await until(lambda: _all(worker, "ok", "RUNNING"))
        finally:
            await worker.close()
            await log.close()
    asyncio.run(main())


def test_a_task_that_will_not_stop_is_given_up_on_after_the_graceful_timeout(tmp_path):
    StuckSource.release.clear()
    StuckTask.stopped.clear()

    async def main() -> None:
        log, worker = new_worker(tmp_path / "data", **{"task.shutdown.graceful.timeout.ms": "300"})
        await worker.start()
        try:
            await worker.create("stuck", {"connector.class": "StuckSource"})
            await worker.create("c", {"connector.class": "CountingSource", "topic": "c"})
            await until(lambda: _all(worker, "stuck", "RUNNING"))
            loop = asyncio.get_running_loop()
            began = loop.time()
            await worker.delete("stuck")
            assert loop.time() - began < 3 and StuckTask.stopped.is_set()
            assert worker.connectors() == ["c"]
            seen = len(await values(log, "c"))
            await until(lambda: _more(log, "c", seen))
        finally:
            StuckSource.release.set()
            await worker.close()
            await log.close()
    asyncio.run(main())


def test_a_topics_regex_sink_takes_up_topics_created_later(tmp_path):
    RecordingSinkTask.given, RecordingSinkTask.durable = [], []

    async def main() -> None:
        log, worker = new_worker(tmp_path / "data")
        await log.create_topic("orders-eu", 1)
        await log.create_topic("other", 1)
        await log.produce("orders-eu", [ProducerRecord(None, b"eu", 0)])
        await log.produce("other", [ProducerRecord(None, b"no", 0)])
        await worker.start()
        try:
            await worker.create("s", {"connector.class": "RecordingSink", "topics.regex": "orders-.*"})
            await until(lambda: _given(1))
            await log.create_topic("orders-us", 1)
            await log.produce("orders-us", [ProducerRecord(None, b"us", 0)])
            await until(lambda: _given(2), timeout=20)
            assert RecordingSinkTask.given == ["eu", "us"]
            assert worker.topics("s") == ["orders-eu", "orders-us"]
        finally:
            await worker.close()
            await log.close()
    asyncio.run(main())

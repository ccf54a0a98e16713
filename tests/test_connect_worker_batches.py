"""The worker's batched source path on the embedded log: a task that returns its records as a
``SourceRecordBatch`` (columns, as the JDBC source does) has them converted and produced in
one go, several polls at a time; a poll that fails after others returned records has those
written (and their offset stored) first, so a restarted task goes on after them with nothing
lost or twice; a row that does not convert fails the task, or is skipped under
``errors.tolerance=all``; what is written is what the converter writes a record at a time."""
from __future__ import annotations

import asyncio
import json
import threading
from typing import Any, Mapping, Sequence

import pytest

from streamsql.runtime.connect.api import (
    INT64, STRING, STRUCT, ConnectException, Field, Plugin, Schema, SourceConnector, SourceRecord,
    SourceRecordBatch, SourceTask, Struct, Task)
from streamsql.runtime.connect.converters import JsonConverter
from streamsql.runtime.connect.plugins import PluginRegistry
from streamsql.runtime.connect.worker import Worker
from streamsql.runtime.log.embedded import EmbeddedLog
from tests.test_connect_worker import until

pytestmark = pytest.mark.timeout(120)

SCHEMA = Schema(STRUCT, name="rows", fields=(Field("id", 0, Schema(INT64)), Field("name", 1, Schema(STRING))))


class BatchSource(SourceConnector):
    """Rows 1..``total``, 50 a poll, as one SourceRecordBatch; ``fail.poll``: the poll (from
    the task's start) that fails, once per connector; ``bad``: the id whose name is not a
    string."""

    def start(self, props: Mapping[str, str]) -> None:
        self.props = dict(props)

    def task_class(self) -> type[Task]:
        return BatchTask

    def task_configs(self, max_tasks: int) -> list[dict[str, str]]:
        return [{}]


class BatchTask(SourceTask):
    failed: set[str] = set()

    def start(self, props: Mapping[str, str]) -> None:
        self.props = props
        self.part = {"table": "rows"}
        stored = self.context.offset(self.part)
        self.n = stored["id"] if stored else 0
        self.polls = 0
        self.stopped = threading.Event()

    def poll(self) -> Sequence[SourceRecord] | None:
        total = int(self.props["total"])
        if self.n >= total:
            self.stopped.wait(0.05)
            return None
        self.polls += 1
        if str(self.polls) == self.props.get("fail.poll") and self.props["name"] not in BatchTask.failed:
            BatchTask.failed.add(self.props["name"])
            raise ConnectException("the database went away")
        bad = int(self.props.get("bad", "-1"))
        rows = [(i, f"v{i}" if i != bad else i) for i in range(self.n + 1, min(self.n + 50, total) + 1)]
        self.n = rows[-1][0]
        return SourceRecordBatch(self.part, self.props["topic"], SCHEMA, rows, lambda row: {"id": row[0]},
                                 more=self.n < total)

    def stop(self) -> None:
        self.stopped.set()


def new_worker(path: Any) -> tuple[EmbeddedLog, Worker]:
    reg = PluginRegistry()
    reg.add(Plugin("test.BatchSource", BatchSource, "1.0", ("BatchSource",)))
    log = EmbeddedLog(path)
    return log, Worker(log, "t_", "127.0.0.1:8083", {"offset.flush.interval.ms": "100"}, reg)


async def payloads(log: EmbeddedLog, topic: str) -> list[bytes]:
    if await log.describe_topic(topic) is None:
        return []
    out: list[bytes] = []
    pos, end = 0, (await log.end_offsets(topic))[0]
    while pos < end:
        batch = await log.fetch(topic, 0, pos)
        out += batch.values
        pos = batch.offsets[-1] + 1
    return out


def ids(values: list[bytes]) -> list[int]:
    return [json.loads(v)["payload"]["id"] for v in values]


def test_a_batch_source_is_written_whole_and_resumes_after_a_failed_poll(tmp_path):
    BatchTask.failed = set()

    async def main() -> None:
        log, worker = new_worker(tmp_path / "data")
        await worker.start()
        try:
            await worker.create("rows", {"connector.class": "BatchSource", "topic": "rows", "total": "500",
                                         "fail.poll": "4"})
            await until(lambda: _failed(worker, "rows"))
            assert "the database went away" in worker.task_status("rows", 0).trace
            # The three polls before the failing one were written, and their offset stored.
            assert ids(await payloads(log, "rows")) == list(range(1, 151))
            await worker.restart("rows", include_tasks=True, only_failed=True)
            await until(lambda: _count(log, "rows", 500))
            written = await payloads(log, "rows")
            assert ids(written) == list(range(1, 501))
            # Byte for byte what JsonConverter writes a record at a time.
            one = JsonConverter()
            one.configure({}, False)
            assert written[41] == one.from_connect_data("rows", SCHEMA, Struct(SCHEMA, (42, "v42")))
        finally:
            await worker.close()
            await log.close()
    asyncio.run(main())


def test_a_row_that_does_not_convert_fails_the_task_or_is_skipped_if_tolerated(tmp_path):
    BatchTask.failed = set()

    async def main() -> None:
        log, worker = new_worker(tmp_path / "data")
        await worker.start()
        try:
            await worker.create("strict", {"connector.class": "BatchSource", "topic": "strict", "total": "300",
                                           "bad": "120"})
            await worker.create("tolerant", {"connector.class": "BatchSource", "topic": "tolerant", "total": "300",
                                             "bad": "120", "errors.tolerance": "all"})
            await until(lambda: _failed(worker, "strict"))
            assert "Invalid Java object for schema type STRING: int" in worker.task_status("strict", 0).trace
            written = ids(await payloads(log, "strict"))
            assert written == list(range(1, len(written) + 1)) and len(written) < 120
            await until(lambda: _count(log, "tolerant", 299))
            assert ids(await payloads(log, "tolerant")) == [i for i in range(1, 301) if i != 120]
            assert worker.task_status("tolerant", 0).state == "RUNNING"
        finally:
            await worker.close()
            await log.close()
    asyncio.run(main())


async def _failed(worker: Worker, name: str) -> bool:
    return worker.task_status(name, 0).state == "FAILED"


async def _count(log: EmbeddedLog, topic: str, n: int) -> bool:
    return len(await payloads(log, topic)) >= n

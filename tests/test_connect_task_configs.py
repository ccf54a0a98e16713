"""Task configs in the configs topic, as Kafka Connect keeps them: a connector's instance
commits its tasks' configs (``task-<name>-<id>`` records, then ``commit-<name>`` with the
count), a reconfiguration and a config change commit a new set and the tasks run again with
it, a stopped connector has an empty set, and another worker on the same log reads the set
back before any connector runs (it is what runs a task wherever it is placed)."""
from __future__ import annotations

import asyncio

import orjson
import pytest

from streamsql.runtime.log.embedded import EmbeddedLog
from tests.test_connect_worker import GrowingSource, new_worker, until, values

pytestmark = pytest.mark.timeout(120)


async def records(log: EmbeddedLog, topic: str) -> list[tuple[str, object]]:
    """The configs topic's task and commit records, in order: (key, properties or count)."""
    out: list[tuple[str, object]] = []
    pos, end = 0, (await log.end_offsets(topic))[0]
    while pos < end:
        batch = await log.fetch(topic, 0, pos)
        for k, v in zip(batch.keys, batch.values):
            key = bytes(k).decode()
            if key.startswith("task-"):
                out.append((key, orjson.loads(v)["properties"]["task.id"]))
            elif key.startswith("commit-"):
                out.append((key, orjson.loads(v)["tasks"]))
        pos = batch.offsets[-1] + 1
    return out


def test_task_configs_are_committed_to_the_configs_topic_and_read_back(tmp_path):
    GrowingSource.tasks = 2
    GrowingSource.grown.clear()

    async def main() -> None:
        log, worker = new_worker(tmp_path / "data")
        await worker.start()
        try:
            await worker.create("g", {"connector.class": "GrowingSource", "topic": "g", "tasks.max": "4"})
            topic = worker.storage.configs_topic
            assert await records(log, topic) == [("task-g-0", "0"), ("task-g-1", "1"), ("commit-g", 2)]
            # Each task runs with its committed config: the connector's, with its own keys.
            assert [c["task.id"] for c in worker.task_configs("g")] == ["0", "1"]
            assert all(c["topic"] == "g" and c["tasks.max"] == "4" for c in worker.task_configs("g"))
            await until(lambda: asyncio.sleep(0, [t.state for t in worker.status("g").tasks] == ["RUNNING"] * 2))

            # The connector asks for new task configs: a new set, and the new task runs.
            GrowingSource.tasks = 3
            GrowingSource.grown.set()
            await until(lambda: asyncio.sleep(0, [t.state for t in worker.status("g").tasks] == ["RUNNING"] * 3))
            assert (await records(log, topic))[3:] == [("task-g-0", "0"), ("task-g-1", "1"), ("task-g-2", "2"),
                                                       ("commit-g", 3)]

            async def third_publishes() -> bool:
                return any(v.startswith("2:") for v in await values(log, "g"))
            await until(third_publishes)

            # A config change: a new set (over the new config); a stop: an empty one.
            await worker.put_config("g", {"connector.class": "GrowingSource", "topic": "g", "tasks.max": "1"})
            assert (await records(log, topic))[-2:] == [("task-g-0", "0"), ("commit-g", 1)]
            assert [c["tasks.max"] for c in worker.task_configs("g")] == ["1"]
            await worker.stop_connector("g")
            assert (await records(log, topic))[-1] == ("commit-g", 0)
            assert worker.status("g").tasks == () and worker.info("g").tasks == ()
            await worker.resume("g")
            assert (await records(log, topic))[-2:] == [("task-g-0", "0"), ("commit-g", 1)]
        finally:
            await worker.close()
            await log.close()

        # Another worker on the log: the committed set is read back before anything runs.
        log, worker = new_worker(tmp_path / "data")
        await worker.load()
        try:
            assert [c["task.id"] for c in worker.task_configs("g")] == ["0"]
            assert worker.info("g").tasks == (0,)
        finally:
            await log.close()
    asyncio.run(main())

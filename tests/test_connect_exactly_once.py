"""Exactly-once source connectors with the kill at chosen points, on the embedded log and on
Kafka: a worker process whose log SIGKILLs it right before or right after one of its data
writes (a source batch that writes to two topics: the kill can leave it whole, cut short, or
not begun), then a second worker on the same data directory (the same Kafka service) runs the
connector to its end. Every record is in its topic exactly once: a batch cut short is taken
back (embedded) or aborted (Kafka) and published again, a whole one is kept. With
``exactly.once.source.support=disabled`` (Connect's at-least-once) the same kills publish
records twice, which is what the test is there to catch."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

N = 60  # records per topic

CHILD = textwrap.dedent('''
    import asyncio, os, signal, sys, time
    from streamsql.runtime.connect.api import SourceConnector, SourceRecord, SourceTask
    from streamsql.runtime.connect.plugins import PluginRegistry, plugin
    from streamsql.runtime.connect.worker import Worker
    from streamsql.runtime.log.embedded import EmbeddedLog

    data, mode, kill_at, eos, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
    A, B = sys.argv[6], sys.argv[7]  # the two topics
    PARTITION = {"source": "counter"}

    class CounterTask(SourceTask):
        """Per poll: 5 records to topic a, then their 5 twins to topic b (two writes)."""
        def start(self, props):
            offset = self.context.offset(PARTITION)
            self.next = offset["next"] if offset else 0
        def poll(self):
            if self.next >= n:
                time.sleep(0.05)
                return None
            i, self.next = self.next, self.next + 5
            return ([SourceRecord(PARTITION, {"next": j + 1}, A, value=f"a{j}") for j in range(i, i + 5)] +
                    [SourceRecord(PARTITION, {"next": j + 1}, B, value=f"b{j}") for j in range(i, i + 5)])
        def stop(self):
            pass

    class CounterConnector(SourceConnector):
        def start(self, props):
            pass
        def task_class(self):
            return CounterTask
        def task_configs(self, max_tasks):
            return [{}]

    writes = 0

    async def crashing(produce, topic, records):
        """A write to A or B, the process killed (SIGKILL) before or after the kill_at-th."""
        global writes
        if topic not in (A, B):
            return await produce(topic, records)
        writes += 1
        if writes == kill_at and mode == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        out = await produce(topic, records)
        if writes == kill_at and mode == "after":
            os.kill(os.getpid(), signal.SIGKILL)
        return out

    class CrashingLog(EmbeddedLog):
        async def produce(self, topic, records):
            return await crashing(super().produce, topic, records)

    def kafka_log(bootstrap):
        from streamsql.runtime.log.kafka import KafkaLog, KafkaTransaction

        class CrashingTransaction(KafkaTransaction):
            async def produce(self, topic, records):
                return await crashing(super().produce, topic, records)

        class CrashingKafkaLog(KafkaLog):
            async def produce(self, topic, records):
                return await crashing(super().produce, topic, records)
            def transactional(self, transactional_id):
                return CrashingTransaction(self, transactional_id)

        return CrashingKafkaLog(bootstrap, {"ksql.service.id": sys.argv[8]})

    async def main():
        log = kafka_log(data[len("kafka:"):]) if data.startswith("kafka:") else CrashingLog(data)
        plugins = PluginRegistry()
        plugins.add(plugin("test.CounterSourceConnector", CounterConnector, "1.0"))
        string = "org.apache.kafka.connect.storage.StringConverter"
        worker = Worker(log, sys.argv[8], "w", {"key.converter": string, "value.converter": string,
                                            "exactly.once.source.support": eos}, plugins=plugins)
        await worker.load()  # as the engine's start: before anything else reads or writes
        await worker.start()
        if "counter" not in worker.storage.configs:
            await worker.create("counter", {"connector.class": "CounterSource"})
        while (worker.storage.offset("counter", PARTITION) or {}).get("next") != n:
            await asyncio.sleep(0.05)
        await worker.close()
        await log.close()

    asyncio.run(main())
''')


def _run(tmp_path: Path, mode: str, kill_at: int, eos: str, data: str = "", topics: tuple[str, str] = ("a", "b"),
         service: str = "test_") -> int:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    proc = subprocess.run([sys.executable, str(script), data or str(tmp_path / "data"), mode, str(kill_at), eos,
                           str(N), *topics, service], capture_output=True, text=True, timeout=150)
    if proc.returncode not in (0, -9):
        print(proc.stderr[-3000:])
    return proc.returncode


def _published(tmp_path: Path) -> dict[str, list[str]]:
    import asyncio

    from streamsql.runtime.log.embedded import EmbeddedLog

    async def read() -> dict[str, list[str]]:
        log = EmbeddedLog(tmp_path / "data")
        try:
            out = {}
            for topic in ("a", "b"):
                values: list[str] = []
                end = (await log.end_offsets(topic))[0]
                pos = 0
                while pos < end:
                    batch = await log.fetch(topic, 0, pos)
                    values += [v.decode() for v in batch.values]
                    pos = batch.offsets[-1] + 1
                out[topic] = values
            return out
        finally:
            await log.close()
    return asyncio.run(read())


# (mode, kill_at): before write 7 (a batch's first write: nothing of it written), before
# write 8 (its write to a done, to b not: cut short), after write 7 (the same, killed later),
# after write 8 (the whole batch written, its end not acknowledged).
KILLS = [("before", 7), ("before", 8), ("after", 7), ("after", 8)]


@pytest.mark.parametrize("mode,kill_at", KILLS)
def test_a_source_batch_is_published_exactly_once_whatever_write_the_kill_interrupts(tmp_path, mode, kill_at):
    assert _run(tmp_path, mode, kill_at, "enabled") == -9  # killed where asked
    assert _run(tmp_path, "none", 0, "enabled") == 0       # then runs to its end
    published = _published(tmp_path)
    assert published["a"] == [f"a{j}" for j in range(N)]
    assert published["b"] == [f"b{j}" for j in range(N)]


def test_at_least_once_when_disabled_publishes_a_batch_twice(tmp_path):
    # Connect's default: the records are written before their offsets, so a kill between
    # the two publishes the batch again. (What exactly-once is there to prevent.)
    assert _run(tmp_path, "after", 8, "disabled") == -9
    assert _run(tmp_path, "none", 0, "disabled") == 0
    published = _published(tmp_path)
    assert published["a"] != [f"a{j}" for j in range(N)]
    assert sorted(set(published["a"]), key=lambda v: int(v[1:])) == [f"a{j}" for j in range(N)]


def _kafka_published(bootstrap: str, topics: tuple[str, str]) -> dict[str, list[str]]:
    from streamsql.testing.kafka import kcat_consume

    # kcat reads committed records only (librdkafka's default isolation), as Kafka's clients.
    return {name: [r.value for r in kcat_consume(bootstrap, topic, timeout=30)]
            for name, topic in zip(("a", "b"), topics)}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("mode,kill_at", [("before", 8), ("after", 8)])
def test_on_kafka_a_source_batch_is_one_transaction(kafka, kcat, unique_topic, tmp_path, mode, kill_at):
    # Killed with the batch's write to a done (and to b not, or done too): the transaction is
    # open, the next worker's task (the same transactional id) aborts it and goes on from
    # the offsets committed with the last batch.
    topics = (unique_topic("a"), unique_topic("b"))
    service = "eos_" + topics[0][-8:]
    data = "kafka:" + kafka.bootstrap_servers
    assert _run(tmp_path, mode, kill_at, "enabled", data, topics, service) == -9
    assert _run(tmp_path, "none", 0, "enabled", data, topics, service) == 0
    published = _kafka_published(kafka.bootstrap_servers, topics)
    assert published["a"] == [f"a{j}" for j in range(N)]
    assert published["b"] == [f"b{j}" for j in range(N)]


@pytest.mark.timeout(300)
def test_on_kafka_at_least_once_when_disabled_publishes_a_batch_twice(kafka, kcat, unique_topic, tmp_path):
    topics = (unique_topic("a"), unique_topic("b"))
    service = "alo_" + topics[0][-8:]
    data = "kafka:" + kafka.bootstrap_servers
    assert _run(tmp_path, "after", 8, "disabled", data, topics, service) == -9
    assert _run(tmp_path, "none", 0, "disabled", data, topics, service) == 0
    published = _kafka_published(kafka.bootstrap_servers, topics)
    assert published["a"] != [f"a{j}" for j in range(N)]
    assert list(dict.fromkeys(published["a"])) == [f"a{j}" for j in range(N)]

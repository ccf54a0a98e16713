"""Stage runners of one consumer group on a real broker while partitions move between them:
whatever the schedule, every input record is processed once (at least once: no batch is
written twice because its partitions moved while it was in flight)."""
from __future__ import annotations

import asyncio
from collections import Counter
from typing import Sequence

import pytest

from streamsql.runtime.log.base import LogView, ProducerRecord, RecordBatch
from streamsql.runtime.log.kafka import KafkaLog
from streamsql.runtime.query import StageRunner

pytestmark = pytest.mark.timeout(180)


class CopyStage:
    """A stateless stage writing, for each input record, its topic-partition-offset."""

    def __init__(self, source: str, sink: str) -> None:
        self.name = "copy"
        self.source_topic = source
        self.sink_topic = sink

    def process(self, batch: RecordBatch) -> list[ProducerRecord]:
        return [ProducerRecord(k, f"{batch.partition}:{o}".encode(), ts)
                for k, o, ts in zip(batch.keys, batch.offsets, batch.timestamps)]


class SlowSink(LogView):
    """The node's log, but writing a batch takes ``delay`` seconds (a loaded broker)."""

    def __init__(self, inner: KafkaLog, delay: float) -> None:
        super().__init__(inner)
        self.delay = delay
        self.writing = asyncio.Event()

    async def produce(self, topic: str, records: Sequence[ProducerRecord]) -> list[tuple[int, int]]:
        self.writing.set()
        await asyncio.sleep(self.delay)
        return await self.inner.produce(topic, records)

    async def close(self) -> None:
        """The view does not own the log."""


async def _read_all(log: KafkaLog, topic: str, partitions: int) -> list[bytes]:
    values: list[bytes] = []
    for p, end in enumerate(await log.end_offsets(topic)):
        off = 0
        while off < end:
            batch = await log.fetch(topic, p, off, 10000)
            values += [v for v in batch.values if v is not None]
            off = batch.offsets[-1] + 1
    return values


def test_stateless_stage_finishes_its_batch_before_giving_up_partitions(kafka, unique_topic):
    """A node joins while the first node's batch is being written: the first node finishes
    and commits that batch before its partitions go, so the newcomer does not write it too."""
    source, sink, group = unique_topic("src"), unique_topic("sink"), unique_topic("group")

    async def main() -> None:
        log = KafkaLog(kafka.bootstrap_servers, {"linger.ms": 0})
        try:
            await log.create_topic(source, 4)
            await log.create_topic(sink, 1)
            for p in range(4):
                await log.produce(source, [ProducerRecord(b"k%d" % i, b"v", 1000 + i, (), p)
                                           for i in range(100)])
            slow = SlowSink(log, 4.0)
            first = StageRunner(CopyStage(source, sink), group, slow)
            first.start()
            await asyncio.wait_for(slow.writing.wait(), 60)
            # The first batch (every record) is being written: a second node joins.
            second = StageRunner(CopyStage(source, sink), group, log)
            second.start()
            for _ in range(240):
                if len(first.assignment()) == 2 and len(second.assignment()) == 2:
                    break
                await asyncio.sleep(0.25)
            assert len(second.assignment()) == 2, "the partitions did not spread"
            # Both have processed what they own (the sink has at least every record).
            for _ in range(120):
                if len(await _read_all(log, sink, 1)) >= 400:
                    break
                await asyncio.sleep(0.25)
            await asyncio.sleep(2.0)  # a late duplicate would land now
            await second.stop()
            await first.stop()
            seen = Counter(await _read_all(log, sink, 1))
            assert len(seen) == 400, f"{400 - len(seen)} records missing"
            twice = sorted(v.decode() for v, n in seen.items() if n > 1)
            assert not twice, f"{len(twice)} records written twice, e.g. {twice[:5]}"
        finally:
            await log.close()
    asyncio.run(main())

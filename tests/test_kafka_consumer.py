"""Group consumers of ``KafkaLog`` on a real broker: what the rebalance listener can rely on.

aiokafka calls the listener in the background, concurrently with ``poll``; a stage restores
its tasks and seeks its partitions there. Records of a newly assigned partition must come
only from where the listener put it, and only after it returned.
"""
from __future__ import annotations

import asyncio

import pytest

from streamsql.runtime.log.base import ProducerRecord
from streamsql.runtime.log.kafka import KafkaLog

pytestmark = pytest.mark.timeout(120)


def test_new_partitions_are_read_only_from_where_the_listener_sought(kafka, unique_topic):
    topic, group = unique_topic(), unique_topic("group")

    async def main() -> None:
        log = KafkaLog(kafka.bootstrap_servers, {"linger.ms": 0})
        events: list[str] = []

        class Listener:
            async def assigned(self, partitions: set[tuple[str, int]]) -> None:
                events.append("assigning")
                await asyncio.sleep(1.5)  # a restore: the consumer's fetcher runs meanwhile
                for t, p in partitions:
                    consumer.seek(t, p, 5)
                events.append("assigned")

            async def revoked(self, partitions: set[tuple[str, int]]) -> None:
                events.append("revoked")

        try:
            await log.create_topic(topic, 2)
            for p in range(2):
                await log.produce(topic, [ProducerRecord(b"k%d" % i, b"v%d" % i, None, (), p)
                                          for i in range(10)])
            consumer = log.consumer(group, [topic], Listener())
            got: dict[int, list[int]] = {0: [], 1: []}
            for _ in range(40):
                for batch in await consumer.poll(timeout=0.25):
                    assert events[-1] == "assigned", "records handed out before the listener returned"
                    got[batch.partition] += batch.offsets
                if all(len(v) == 5 for v in got.values()):
                    break
            assert got == {0: [5, 6, 7, 8, 9], 1: [5, 6, 7, 8, 9]}
            await consumer.close()
        finally:
            await log.close()
    asyncio.run(main())

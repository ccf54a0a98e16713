"""A test driver in the manner of Kafka Streams' TopologyTestDriver.

``DrivingLog`` wraps a real Log backend; every record produced through it (a test input,
an INSERT VALUES, a query's output) is delivered at once, one record at a time and depth
first, to the persistent queries that read its topic, so every intermediate update is
visible and outputs come in a deterministic order. It also records every write, which is
what test runners compare.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from streamsql.runtime.log.base import (Consumer, Log, ProducerRecord, RebalanceListener,
                                        RecordBatch, TopicInfo)


@dataclass
class Written:
    """One record written to a topic, in write order."""

    topic: str
    partition: int
    offset: int
    record: ProducerRecord


class DrivingLog(Log):
    """See the module docstring. ``subscribers`` maps a topic to the stages of persistent
    queries (``process(batch)``, ``sink_topic``) that consume it; the engine fills it."""

    def __init__(self, inner: Log) -> None:
        self.inner = inner
        self.subscribers: dict[str, list] = {}
        self.written: list[Written] = []
        self.max_depth = 64

    async def create_topic(self, name: str, partitions: int = 1, replicas: int = 1,
                           config: dict[str, str] | None = None) -> TopicInfo:
        return await self.inner.create_topic(name, partitions, replicas, config)

    async def delete_topic(self, name: str) -> None:
        await self.inner.delete_topic(name)

    async def list_topics(self) -> dict[str, TopicInfo]:
        return await self.inner.list_topics()

    async def describe_topic(self, name: str) -> TopicInfo | None:
        return await self.inner.describe_topic(name)

    async def fetch(self, topic: str, partition: int, offset: int, max_records: int = 10000) -> RecordBatch:
        return await self.inner.fetch(topic, partition, offset, max_records)

    async def end_offsets(self, topic: str) -> list[int]:
        return await self.inner.end_offsets(topic)

    async def begin_offsets(self, topic: str) -> list[int]:
        return await self.inner.begin_offsets(topic)

    async def committed(self, group: str, topic: str) -> dict[int, int]:
        return await self.inner.committed(group, topic)

    def consumer(self, group: str, topics: Iterable[str], listener: RebalanceListener | None = None,
                 reset: str = "earliest") -> Consumer:
        return self.inner.consumer(group, topics, listener, reset)

    async def produce(self, topic: str, records: Sequence[ProducerRecord], _depth: int = 0) -> list[tuple[int, int]]:
        placed = await self.inner.produce(topic, records)
        for (partition, offset), rec in zip(placed, records):
            self.written.append(Written(topic, partition, offset, rec))
            for stage in list(self.subscribers.get(topic, ())):
                batch = RecordBatch(topic, partition, [offset], [rec.timestamp], [rec.key], [rec.value],
                                    [rec.headers] if rec.headers else None)
                out = stage.process(batch)
                if out and _depth < self.max_depth:
                    await self.produce(stage.sink_topic, out, _depth + 1)
        return placed

    async def close(self) -> None:
        await self.inner.close()

"""A test driver in the manner of Kafka Streams' TopologyTestDriver.

``DrivingLog`` wraps a real Log backend; every record produced through it (a test input,
an INSERT VALUES, a query's output) is delivered at once, one record at a time and depth
first, to the persistent queries that read its topic, so every intermediate update is
visible and outputs come in a deterministic order. It also records every write, which is
what test runners compare.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from streamsql.runtime.log.base import Log, LogView, ProducerRecord, RecordBatch


@dataclass
class Written:
    """One record written to a topic, in write order."""

    topic: str
    partition: int
    offset: int
    record: ProducerRecord


class DrivingLog(LogView):
    """See the module docstring. ``subscribers`` maps a topic to the stages of persistent
    queries (``process(batch)``, ``sink_topic``) that consume it; the engine fills it."""

    def __init__(self, inner: Log) -> None:
        super().__init__(inner)
        self.subscribers: dict[str, list] = {}
        self.written: list[Written] = []
        self.max_depth = 64

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

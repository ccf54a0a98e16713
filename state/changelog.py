"""Changelog topics: writing a store's changes, reading them back for restore.

A store's changelog is a ``cleanup.policy=compact`` topic with as many partitions as the
task's source; task ``p`` writes and restores partition ``p``. A record's key is the store key
(for windowed stores the ``streamsql.state.keys`` layout), its value the stored bytes, a null
value a delete (tombstone). Compaction therefore leaves exactly one record per live key, and
replaying a partition in offset order rebuilds the store.

These are the Log-facing helpers; when to flush, restore or revert is decided by
``streamsql.state.task.TaskState``.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import AsyncIterator, Iterable, Sequence

from streamsql.runtime.log.base import (Log, ProducerRecord, RecordBatch, TopicExistsError,
                                        TopicInfo)

__all__ = ["ChangelogPartition", "RESTORE_CHUNK", "ensure_changelog_topic"]

logger = logging.getLogger(__name__)

RESTORE_CHUNK = 50_000  # records fetched (and written to RocksDB) per restore step
PRODUCE_CHUNK = 50_000  # records per produce call when re-publishing or reverting


async def ensure_changelog_topic(log: Log, topic: str, partitions: int,
                                 partition: int = 0) -> TopicInfo:
    """Create ``topic`` as a compacted changelog with ``partitions`` partitions unless it
    exists (an existing topic is used as it is; a non-compacted one is logged). Raises
    ValueError if the topic has no partition ``partition``."""
    info = await log.describe_topic(topic)
    if info is None:
        try:
            info = await log.create_topic(topic, partitions,
                                          config={"cleanup.policy": "compact"})
        except TopicExistsError:
            # Created concurrently (another node opening the same task): its metadata may
            # take a moment to reach the broker answering.
            for _ in range(100):
                info = await log.describe_topic(topic)
                if info is not None:
                    break
                await asyncio.sleep(0.1)
            else:
                raise
    if "compact" not in dict(info.config).get("cleanup.policy", ""):
        logger.warning("changelog topic %s does not have cleanup.policy=compact", topic)
    if not 0 <= partition < info.partitions:
        raise ValueError(f"changelog topic {topic} has {info.partitions} partitions, "
                         f"no partition {partition}")
    return info


@dataclass(frozen=True)
class ChangelogPartition:
    """One partition of a changelog topic, on a Log."""

    log: Log
    topic: str
    partition: int

    async def end(self) -> int:
        """The offset the next record will get."""
        return (await self.log.end_offsets(self.topic))[self.partition]

    async def begin(self) -> int:
        return (await self.log.begin_offsets(self.topic))[self.partition]

    async def produce(self, keys: Sequence[bytes], values: Sequence[bytes | None],
                      timestamp: int | None = None) -> int:
        """Append one record per (key, value) in ONE produce call; returns the offset after
        the last (the new changelog position). Nothing to append: returns -1."""
        if not keys:
            return -1
        ts = time.time_ns() // 1_000_000 if timestamp is None else timestamp
        p = self.partition
        records = [ProducerRecord(k, v, ts, (), p) for k, v in zip(keys, values)]
        result = await self.log.produce(self.topic, records)
        return result[-1][1] + 1

    async def produce_chunked(self, items: Iterable[tuple[bytes, bytes | None]]) -> int:
        """Append (key, value) pairs in produce calls of ``PRODUCE_CHUNK``; returns the new
        position, or -1 if there was nothing."""
        pos = -1
        keys: list[bytes] = []
        values: list[bytes | None] = []
        for k, v in items:
            keys.append(k)
            values.append(v)
            if len(keys) >= PRODUCE_CHUNK:
                pos = await self.produce(keys, values)
                keys, values = [], []
        if keys:
            pos = await self.produce(keys, values)
        return pos

    async def read(self, start: int, end: int,
                   chunk: int | None = None) -> AsyncIterator[RecordBatch]:
        """Batches of up to ``chunk`` (default ``RESTORE_CHUNK``) records with ``start <=
        offset < end`` (compaction may have removed some: offsets have gaps)."""
        chunk = chunk or RESTORE_CHUNK
        offset = start
        while offset < end:
            batch = await self.log.fetch(self.topic, self.partition, offset,
                                         min(chunk, end - offset))
            if not batch.offsets:
                return  # the rest of the range was compacted away
            if batch.offsets[-1] >= end:
                cut = next(i for i, o in enumerate(batch.offsets) if o >= end)
                del batch.offsets[cut:], batch.timestamps[cut:], batch.keys[cut:]
                del batch.values[cut:]
                if batch.headers is not None:
                    del batch.headers[cut:]
                if not batch.offsets:
                    return
            offset = batch.offsets[-1] + 1
            yield batch

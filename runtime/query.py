"""Running persistent queries: a compiled pipeline between a source topic and a sink topic.

``PersistentQuery.process(batch)`` runs the pipeline over one batch and returns the records
to produce. Two drivers use it: ``QueryRunner`` (service mode: an asyncio task that consumes
the source topic as a consumer group, produces to the sink and commits offsets after the
sink write, so nothing is lost) and the test driver (one record at a time, depth first, as
Kafka Streams' TopologyTestDriver does).
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from streamsql.catalog import DataSource
from streamsql.runtime.log.base import Log, ProducerRecord, RecordBatch
from streamsql.runtime.pipeline import Outputs, Pipeline

log = logging.getLogger(__name__)


@dataclass
class PersistentQuery:
    """A query's runtime part: id, source, sink and the compiled pipeline."""

    query_id: str
    source: DataSource
    sink: DataSource
    pipeline: Pipeline
    outputs: Outputs = field(default_factory=Outputs)

    @property
    def group(self) -> str:
        return f"_streamsql_query_{self.query_id}"

    def process(self, batch: RecordBatch) -> list[ProducerRecord]:
        out = self.outputs
        out.clear()
        self.pipeline.process(batch, out)
        return [ProducerRecord(k, v, ts, h or ()) for k, v, ts, h in
                zip(out.keys, out.values, out.timestamps, out.headers)]


class QueryRunner:
    """Service-mode driver of one persistent query (at-least-once on the embedded log:
    offsets are committed only after the sink records are durable)."""

    def __init__(self, query: PersistentQuery, log_: Log, reset: str = "earliest",
                 after_batch: Callable[[], Awaitable[None]] | None = None) -> None:
        self.query = query
        self.log = log_
        self.reset = reset
        # Called after each committed batch (the engine flushes the processing log there).
        self.after_batch = after_batch
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.processed = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"query-{self.query.query_id}")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass

    async def _run(self) -> None:
        q = self.query
        if self.reset == "latest":
            committed = await self.log.committed(q.group, q.source.topic)
            if not committed:
                ends = await self.log.end_offsets(q.source.topic)
                consumer0 = self.log.consumer(q.group, [q.source.topic])
                await consumer0.commit({(q.source.topic, p): o for p, o in enumerate(ends)})
                await consumer0.close()
        consumer = self.log.consumer(q.group, [q.source.topic])
        try:
            while not self._stopping.is_set():
                batches = await consumer.poll(max_records=5000, timeout=0.5)
                if not batches:
                    continue
                commits = {}
                for batch in batches:
                    records = q.process(batch)
                    if records:
                        await self.log.produce(q.sink.topic, records)
                    self.processed += len(batch)
                    commits[(batch.topic, batch.partition)] = batch.offsets[-1] + 1
                await consumer.commit(commits)
                if self.after_batch is not None:
                    await self.after_batch()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("query %s failed", q.query_id)
        finally:
            await consumer.close()

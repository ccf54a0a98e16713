"""Running persistent queries: sub-topologies ("stages") between topics.

A persistent query is one or more stages, each reading one topic and writing another: a
stateless query is one fused pipeline stage from the source to the sink; an aggregation is a
pipeline stage that re-keys into an internal repartition topic followed by an aggregate stage
that writes the table. ``Stage.process(batch)`` returns the records to produce.

Two drivers run stages: ``StageRunner`` (service mode: an asyncio task consuming the stage's
input topic as a consumer group, producing to its output and committing offsets after the
output is written, so nothing is lost) and the test driver (one record at a time, depth
first, as Kafka Streams' TopologyTestDriver does).
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Protocol

from streamsql.catalog import DataSource
from streamsql.runtime.log.base import Log, ProducerRecord, RecordBatch
from streamsql.runtime.pipeline import Outputs, Pipeline

log = logging.getLogger(__name__)


class Stage(Protocol):
    """One sub-topology: reads ``source_topic``, writes ``sink_topic``."""

    name: str
    source_topic: str
    sink_topic: str

    def process(self, batch: RecordBatch) -> list[ProducerRecord]: ...


@dataclass
class PipelineStage:
    """A fused stateless pipeline (filter, flat map, project, re-key) as a stage."""

    name: str
    source_topic: str
    sink_topic: str
    pipeline: Pipeline
    outputs: Outputs = field(default_factory=Outputs)

    def process(self, batch: RecordBatch) -> list[ProducerRecord]:
        out = self.outputs
        out.clear()
        self.pipeline.process(batch, out)
        return [ProducerRecord(k, v, ts, h or ()) for k, v, ts, h in
                zip(out.keys, out.values, out.timestamps, out.headers)]


class MaterializingStage:
    """Wraps a table's last stage and keeps the table's current rows (key bytes -> (value
    bytes, timestamp)) in a store, which is what pull queries read."""

    def __init__(self, inner: Stage, store: Any) -> None:
        self.inner = inner
        self.store = store
        self.name = inner.name
        self.source_topic = inner.source_topic
        self.sink_topic = inner.sink_topic

    @property
    def pipeline(self) -> Pipeline | None:
        return getattr(self.inner, "pipeline", None)

    def process(self, batch: RecordBatch) -> list[ProducerRecord]:
        out = self.inner.process(batch)
        store = self.store
        for rec in out:
            if rec.key is None:
                continue
            if rec.value is None:
                store.delete(rec.key)
            else:
                store.put(rec.key, (rec.value, rec.timestamp))
        return out


@dataclass
class PersistentQuery:
    """A query's runtime part: id, the source and sink it connects, and its stages in order."""

    query_id: str
    source: DataSource
    sink: DataSource
    stages: list[Stage]

    @property
    def pipeline(self) -> Pipeline | None:
        """The first stage's generated pipeline (what EXPLAIN shows)."""
        first = self.stages[0]
        return getattr(first, "pipeline", None)

    @property
    def materialized(self) -> Any:
        """The store of the table's rows, when this query materializes a table."""
        return getattr(self.stages[-1], "store", None) if isinstance(self.stages[-1], MaterializingStage) else None

    def group(self, index: int) -> str:
        return f"_streamsql_query_{self.query_id}" + (f"_{index}" if index else "")


class StageRunner:
    """Service-mode driver of one stage (at-least-once on the embedded log: offsets are
    committed only after the stage's output records are durable)."""

    def __init__(self, stage: Stage, group: str, log_: Log, reset: str = "earliest",
                 after_batch: Callable[[], Awaitable[None]] | None = None) -> None:
        self.stage = stage
        self.group = group
        self.log = log_
        self.reset = reset
        # Called after each committed batch (the engine flushes the processing log there).
        self.after_batch = after_batch
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.processed = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"stage-{self.stage.name}")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass

    async def _run(self) -> None:
        stage = self.stage
        if self.reset == "latest":
            committed = await self.log.committed(self.group, stage.source_topic)
            if not committed:
                ends = await self.log.end_offsets(stage.source_topic)
                first = self.log.consumer(self.group, [stage.source_topic])
                await first.commit({(stage.source_topic, p): o for p, o in enumerate(ends)})
                await first.close()
        consumer = self.log.consumer(self.group, [stage.source_topic])
        try:
            while not self._stopping.is_set():
                batches = await consumer.poll(max_records=5000, timeout=0.5)
                if not batches:
                    continue
                commits = {}
                for batch in batches:
                    records = stage.process(batch)
                    if records:
                        await self.log.produce(stage.sink_topic, records)
                    self.processed += len(batch)
                    commits[(batch.topic, batch.partition)] = batch.offsets[-1] + 1
                await consumer.commit(commits)
                if self.after_batch is not None:
                    await self.after_batch()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("stage %s failed", stage.name)
        finally:
            await consumer.close()

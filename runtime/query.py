"""Running persistent queries: sub-topologies ("stages") between topics.

A persistent query is one or more stages, each reading one topic and writing another: a
stateless query is one fused pipeline stage from the source to the sink; an aggregation is a
pipeline stage that re-keys into an internal repartition topic followed by an aggregate stage
that writes the table. ``Stage.process(batch)`` returns the records to produce.

Two drivers run stages: ``StageRunner`` (service mode: an asyncio task consuming the stage's
input topic, producing to its output and committing; exactly-once for stateful queries on the
embedded log, at-least-once otherwise, see ``streamsql.runtime.task``) and the test driver
(one record at a time, depth first, as Kafka Streams' TopologyTestDriver does).

Stages keep their state in the stores ``Engine.new_store`` gives them: RocksDB stores split by
input partition in service mode (bound to the right task by the runner before each batch),
``MemoryStore`` in test mode. A stage may also define ``task_extra(partition)`` (JSON committed
with each of its batches) and ``task_opened(partition, extra)`` (called when a task's state is
opened, with the last committed extra), and sets ``exactly_once = True`` when all of its state
is in its stores and those hooks.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterator, Protocol

from streamsql.catalog import DataSource
from streamsql.runtime.log.base import Log, ProducerRecord, RecordBatch
from streamsql.runtime.pipeline import Outputs, Pipeline

log = logging.getLogger(__name__)


class Stage(Protocol):
    """One sub-topology: reads ``source_topic``, writes ``sink_topic``. A stage reading
    several topics (a join step) also has ``source_topics``; its runner consumes them all,
    and a partition number is one task across them (they are co-partitioned)."""

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
    # A pure function of its input: it can take part in exactly-once processing.
    exactly_once = True

    def process(self, batch: RecordBatch) -> list[ProducerRecord]:
        out = self.outputs
        out.clear()
        self.pipeline.process(batch, out)
        return [ProducerRecord(k, v, ts, h or ()) for k, v, ts, h in
                zip(out.keys, out.values, out.timestamps, out.headers)]


class MaterializingStage:
    """Wraps a table's last stage and keeps the table's current rows (key bytes -> (value
    bytes, timestamp)) in a store, which is what pull queries read (``table_row``,
    ``table_rows``): in service mode a RocksDB ``TableStore`` per task, committed with the
    stage's batches."""

    def __init__(self, inner: Stage, store: Any) -> None:
        self.inner = inner
        self.store = store
        self.name = inner.name
        self.source_topic = inner.source_topic
        self.source_topics: tuple[str, ...] = tuple(getattr(inner, "source_topics", None)
                                                    or (inner.source_topic,))
        self.sink_topic = inner.sink_topic
        # A stage with several inputs sends them all through its wrapper (a join in test mode).
        wrapped_by = getattr(inner, "wrapped_by", None)
        if wrapped_by is not None:
            wrapped_by(self)

    @property
    def pipeline(self) -> Pipeline | None:
        return getattr(self.inner, "pipeline", None)

    @property
    def exactly_once(self) -> bool:
        return bool(getattr(self.inner, "exactly_once", False))

    def task_extra(self, partition: int) -> Any:
        extra = getattr(self.inner, "task_extra", None)
        return extra(partition) if extra is not None else None

    def task_opened(self, partition: int, extra: Any) -> None:
        opened = getattr(self.inner, "task_opened", None)
        if opened is not None:
            opened(partition, extra)

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
    """Service-mode driver of one stage.

    With ``tasks`` (a stage of a stateful query on the embedded log: see
    ``streamsql.runtime.task``) processing is exactly-once: each batch's state, input offset
    and output end offsets are committed together, and a restart resumes from that commit.
    Without, it is at-least-once: group offsets are committed only after the stage's output
    records are written, so a crash may write a batch's output again.

    With ``fences``, records of a topic written by an exactly-once stage are read only up to
    that stage's last commit (read_committed).
    """

    def __init__(self, stage: Stage, group: str, log_: Log, reset: str = "earliest",
                 after_batch: Callable[[], Awaitable[None]] | None = None,
                 tasks: Any = None, fences: Any = None) -> None:
        self.stage = stage
        self.group = group
        self.log = log_
        self.reset = reset
        # Called after each committed batch (the engine flushes the processing log there).
        self.after_batch = after_batch
        self.tasks = tasks
        self.fences = fences
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.processed = 0
        # Set once the stage has opened (restored) its state and is consuming.
        self.ready = asyncio.Event()
        if tasks is not None:
            tasks.claim_outputs()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"stage-{self.stage.name}")

    @property
    def started(self) -> bool:
        return self._task is not None

    async def stop(self) -> None:
        """Stop consuming. A batch in flight is abandoned (an exactly-once stage takes it up
        again at its next start)."""
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        elif self.tasks is not None:
            self.tasks.release()

    @property
    def topics(self) -> tuple[str, ...]:
        """The topics the stage reads."""
        return tuple(getattr(self.stage, "source_topics", None) or (self.stage.source_topic,))

    async def _positions(self) -> dict[tuple[str, int], int]:
        """Where to start reading, for the at-least-once runner."""
        if self.reset == "latest":
            for topic in self.topics:
                committed = await self.log.committed(self.group, topic)
                if not committed:
                    ends = await self.log.end_offsets(topic)
                    positions = {(topic, p): o for p, o in enumerate(ends)}
                    first = self.log.consumer(self.group, [topic])
                    await first.commit(positions)
                    await first.close()
        return {}

    async def _run(self) -> None:
        stage = self.stage
        tasks = self.tasks
        fences = self.fences
        consumer = None
        try:
            if tasks is not None:
                positions = await tasks.open(self.reset)
            else:
                positions = await self._positions()
            consumer = self.log.consumer(self.group, list(self.topics))
            seek = getattr(consumer, "seek", None)
            for (topic, p), off in positions.items():
                assert seek is not None, "exactly-once needs a consumer that can seek"
                seek(topic, p, off)
            fenced = fences is not None and seek is not None
            self.ready.set()
            while not self._stopping.is_set():
                batches = await consumer.poll(max_records=5000, timeout=0.5)
                if fenced:
                    batches, waits = fences.cut(batches, seek)
                    if waits and not batches:
                        # Everything available is past the writer's last commit.
                        await _wait_any(waits, 0.5)
                        continue
                if not batches:
                    continue
                commits = {}
                for batch in batches:
                    if tasks is not None:
                        tasks.bind(batch.partition)
                    records = stage.process(batch)
                    if records:
                        await self.log.produce(stage.sink_topic, records)
                    self.processed += len(batch)
                    if tasks is not None:
                        await tasks.commit(batch)
                    commits[(batch.topic, batch.partition)] = batch.offsets[-1] + 1
                await consumer.commit(commits)
                if self.after_batch is not None:
                    await self.after_batch()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("stage %s failed", stage.name)
        finally:
            self.ready.set()
            if consumer is not None:
                await consumer.close()
            if tasks is not None:
                tasks.close()
                tasks.release()


async def _wait_any(events: list[asyncio.Event], timeout: float) -> None:
    waiters = [asyncio.ensure_future(ev.wait()) for ev in dict.fromkeys(events)]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


def table_row(store: Any, key: bytes) -> tuple[bytes, int] | None:
    """A materialized table's (value, timestamp) for ``key`` (RocksDB or in-memory store)."""
    row = getattr(store, "row", None)
    if row is not None:
        return row(key)
    return store.get(key)


def table_rows(store: Any, prefix: bytes | None = None) -> Iterator[tuple[bytes, bytes, int]]:
    """A materialized table's (key, value, timestamp) rows, lazily (keys starting with
    ``prefix`` when given)."""
    rows = getattr(store, "rows", None)
    if rows is not None:
        yield from rows(prefix)
        return
    for k, (v, ts) in list(store.items()):
        if prefix is None or k.startswith(prefix):
            yield k, v, ts

"""Running persistent queries: sub-topologies ("stages") between topics.

A persistent query is one or more stages, each reading one topic and writing another: a
stateless query is one fused pipeline stage from the source to the sink; an aggregation is a
pipeline stage that re-keys into an internal repartition topic followed by an aggregate stage
that writes the table (or, grouped by its source stream's key, the aggregate stage alone).
``Stage.process(batch)`` returns the records to produce.

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
import json
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable, Iterator, Protocol

from streamsql.catalog import DataSource
from streamsql.runtime.log.base import (Log, ProducerBatch, ProducerRecord, RecordBatch,
                                        TaskPlacement)
from streamsql.runtime.ordering import OrderedInputs
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

    def process(self, batch: RecordBatch) -> ProducerBatch:
        # Fresh output lists each call: they become the records' columns, not copied.
        out = self.outputs = Outputs()
        self.pipeline.process(batch, out)
        wlen = self.pipeline.window_len
        headers = [h or () for h in out.headers] if any(out.headers) else None
        # Windowed keys are partitioned by the key without its window.
        pkeys = [None if k is None else k[:-wlen] for k in out.keys] if wlen else None
        return ProducerBatch(out.keys, out.values, out.timestamps, headers, pkeys)


class MaterializingStage:
    """Wraps a table's last stage and keeps the table's current rows (key bytes -> (value
    bytes, timestamp)) in a store, which is what pull queries read (``table_row``,
    ``table_rows``): in service mode a RocksDB ``TableStore`` per task, committed with the
    stage's batches; for an aggregation a view of its own store (``derived``: nothing is
    written, see ``streamsql.runtime.aggregate.AggregateTableView``)."""

    def __init__(self, inner: Stage, store: Any) -> None:
        self.inner = inner
        self.store = store
        self.name = inner.name
        self.source_topic = inner.source_topic
        self.source_topics: tuple[str, ...] = tuple(getattr(inner, "source_topics", None)
                                                    or (inner.source_topic,))
        self.sink_topic = inner.sink_topic
        # A table read from the inner stage's own state (an aggregation's) keeps no rows.
        self._derived = bool(getattr(store, "derived", False))
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

    @property
    def purged_inputs(self) -> tuple[str, ...]:
        return tuple(getattr(self.inner, "purged_inputs", ()))

    def task_extra(self, partition: int) -> Any:
        extra = getattr(self.inner, "task_extra", None)
        return extra(partition) if extra is not None else None

    def input_key(self, key: tuple) -> bytes | None:
        """The key bytes of the table row ``key``'s input records, where the stage knows
        them (their partition is where the row is kept); else None."""
        find = getattr(self.inner, "input_key", None)
        return find(key) if find is not None else None

    def task_opened(self, partition: int, extra: Any) -> None:
        opened = getattr(self.inner, "task_opened", None)
        if opened is not None:
            opened(partition, extra)

    def committable(self, partition: int, offsets: dict[tuple[str, int], int]
                    ) -> dict[tuple[str, int], int]:
        """What the inner stage lets its task commit (see ``AggregateStage.committable``)."""
        inner = getattr(self.inner, "committable", None)
        return inner(partition, offsets) if inner is not None else offsets

    def due(self, force: bool = False) -> list[int]:
        """The inner stage's tasks due a flush (see ``AggregateStage.due``)."""
        inner = getattr(self.inner, "due", None)
        return inner(force) if inner is not None else []

    def process(self, batch: RecordBatch) -> list[ProducerRecord]:
        out = self.inner.process(batch)
        if self._derived:
            return out
        store = self.store
        for rec in out:
            if rec.key is None:
                continue
            if rec.value is None:
                store.delete(rec.key)
            else:
                store.put(rec.key, (rec.value, rec.timestamp))
        return out


class SourceTableStage(MaterializingStage):
    """A source table's materialization (``CREATE SOURCE TABLE``, ksqlDB 0.22+'s ``CST_``
    query): its topic's records are the table's rows, kept in ``store`` as they come (key
    bytes -> (value bytes, timestamp), a null value deletes) for pull queries to read. It
    writes no topic: ``process`` returns nothing to produce. Keys are stored as the table's
    key codec writes them (what a key lookup encodes); a key it cannot read is skipped."""

    exactly_once = False  # its sink is its source topic: nothing of it may be fenced

    def __init__(self, name: str, topic: str, store: Any, key_codec: Any) -> None:
        self.inner = self  # type: ignore[assignment]
        self.store = store
        self.name = name
        self.source_topic = topic
        self.source_topics = (topic,)
        self.sink_topic = topic
        self._key_codec = key_codec

    @property
    def pipeline(self) -> Pipeline | None:
        return None

    @property
    def purged_inputs(self) -> tuple[str, ...]:
        return ()

    def task_extra(self, partition: int) -> Any:
        return None

    def task_opened(self, partition: int, extra: Any) -> None:
        return None

    def committable(self, partition: int, offsets: dict[tuple[str, int], int]
                    ) -> dict[tuple[str, int], int]:
        return offsets

    def due(self, force: bool = False) -> list[int]:
        return []

    def input_key(self, key: tuple) -> bytes | None:
        try:
            return self._key_codec.encode(key)
        except Exception:  # noqa: BLE001 - an unencodable key has no partition
            return None

    def _stored_key(self, raw: bytes) -> bytes | None:
        try:
            key = self._key_codec.decode(raw)
            return None if key is None else self._key_codec.encode(key)
        except Exception:  # noqa: BLE001 - a key the table cannot read is not a row
            return None

    def process(self, batch: RecordBatch) -> list[ProducerRecord]:
        store = self.store
        for raw, value, ts in zip(batch.keys, batch.values, batch.timestamps):
            if raw is None:
                continue
            key = self._stored_key(raw)
            if key is None:
                continue
            if value is None:
                store.delete(key)
            else:
                store.put(key, (value, ts))
        return []


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


# A task's runs worked out under exactly-once (``StageRunner._outputs``): its partition,
# the records read per topic, the records to write and the next input offsets.
_Output = tuple[int, tuple[tuple[str, int], ...], Any, dict[tuple[str, int], int]]


@dataclass
class _OpenTransaction:
    """A stage's Kafka transaction spanning polls (see ``StageRunner._transact``):
    the group member that read its input, when it began, and what it holds."""

    member: Any
    began: float
    commits: dict[tuple[str, int], int] = field(default_factory=dict)
    done: list[tuple[int, dict[tuple[str, int], int]]] = field(default_factory=list)
    acks: list[Awaitable[None]] = field(default_factory=list)
    published: list[tuple[int, Any]] = field(default_factory=list)
    processed: int = 0
    produced: int = 0


class StageRunner:
    """Service-mode driver of one stage: a member of the stage's consumer group.

    The consumer tells the runner (a ``RebalanceListener``) which input partitions it owns;
    with ``tasks`` (a stateful stage, see ``streamsql.runtime.task``) it opens and restores
    their state on assignment and closes it on revocation, after the batch in flight is
    committed. Batches of a partition no longer owned are dropped (the new owner reads them).

    Guarantees, by backend:

    * embedded log with ``tasks`` declared exactly-once: each batch's state, input offset and
      output end offsets are committed together, a restart resumes from that commit;
    * ``transaction`` (Kafka, ``processing.guarantee=exactly_once_v2``): one transaction
      over the polls of ``commit_interval_ms`` (Kafka Streams' ``commit.interval.ms``, 100 ms
      under exactly-once) holds the output records, the changelog records and the input
      offsets; the local state is written (as of the transaction's end) once it committed.
      It commits in the background: the next polls are worked out meanwhile, their output
      and changelog records held for the next transaction (see ``_transact``);
    * otherwise at-least-once: group offsets are committed after the output is written, so a
      crash may write a batch's output again. On Kafka, a stage without tasks does not wait
      for the acknowledgements before its next poll: up to ``IN_FLIGHT`` polls are in
      flight, each committed in order once its output is acknowledged (``_send``).

    With ``fences``, records of a topic written by an exactly-once stage are read only up to
    that stage's last commit (read_committed on the embedded log).

    A stage reading several topics (a join) gets their records in timestamp order per task,
    waiting for an input that has records on their way, or for ``idle_ms``
    (``max.task.idle.ms``) for one that is caught up: see ``streamsql.runtime.ordering``.

    A failure (a lost broker, say) is logged and the stage starts over, from its last commit,
    after a backoff: it never silently stops. ``state`` says so meanwhile (ksqlDB's query
    states: ERROR from a failure until a batch goes through again, REBALANCING while Kafka
    moves partitions, else RUNNING), ``errors`` the last failures.
    """

    # Polls of a pipelined stage whose output may be unacknowledged at once (see ``_send``).
    IN_FLIGHT = 4
    # Polls worked out while the last transaction commits, their output held for the next
    # (see ``_transact``); and how long a poll waits for records meanwhile (seconds). A
    # commit takes several round trips to the coordinator, and the output it flushes: on
    # a busy node that is the time to work out some 10 polls of a stage without state,
    # which are then not waited for. A stage with state holds fewer: its held polls' state
    # writes and changelog records go into the next transaction too, which must commit
    # well within the transaction timeout.
    DEFERRED = 16
    DEFERRED_STATEFUL = 4
    DEFERRED_POLL = 0.005
    # A commit in flight this long (seconds) with polls waiting for it is logged.
    SLOW_COMMIT = 1.0

    def __init__(self, stage: Stage, group: str, log_: Log, reset: str = "earliest",
                 after_batch: Callable[[], Awaitable[None]] | None = None,
                 tasks: Any = None, fences: Any = None, transaction: Any = None,
                 idle_ms: int = 0, placement: TaskPlacement | None = None,
                 purge_interval_ms: int = 0, commit_interval_ms: int = 100) -> None:
        self.stage = stage
        # How a cluster's group places the stage's tasks (standbys, warm-ups): read by the
        # consumer (see ``RebalanceListener``).
        self.placement = placement
        self.group = group
        self.log = log_
        self.reset = reset
        # Called after each committed batch (the engine flushes the processing log there).
        self.after_batch = after_batch
        self.tasks = tasks
        self.fences = fences
        self.transaction = transaction
        # What a task commits beside its state (its stream time...): on Kafka it also goes
        # with the task's offsets, as their metadata, to the partitions' next owner.
        self._task_extra = getattr(stage, "task_extra", None) if log_.distributed else None
        # Records of a multi-input stage wait here for their turn in timestamp order.
        self.inputs = OrderedInputs(self.topics, idle_ms) if len(self.topics) > 1 else None
        self._paused: set[tuple[str, int]] = set()
        # PAUSE (``halt``): nothing is processed, partitions, positions and state are kept.
        self.halted = False
        self._failed = False
        self._rebalancing = False
        # The last failures: (epoch ms, what).
        self.errors: deque[tuple[int, str]] = deque(maxlen=10)
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._lock = asyncio.Lock()
        self._consumer: Any = None
        # Bumped at every revocation: batches polled before one are stale (see ``revoked``).
        self._generation = 0
        # An assignment that could not be taken up (see ``assigned``), or output in flight
        # that failed while partitions were revoked: the stage starts over.
        self._assign_failure: Exception | None = None
        # Polls whose output is on its way, oldest first (see ``_send``).
        self._in_flight: deque[asyncio.Task[None]] = deque()
        # The stage's transaction open over several polls, and for how long at most (see
        # ``_transact``).
        self._open: _OpenTransaction | None = None
        # The stage's last transaction, committing while its next polls are worked out
        # (see ``_commit_due``), and their task runs' output, held for the next transaction
        # (see ``_outputs``).
        self._committing: asyncio.Task[None] | None = None
        self._deferred: list[_Output] = []
        self._deferred_polls = 0
        # When the committing transaction began to commit, and whether its slowness was
        # logged (see ``_slow_commit``).
        self._committing_since = 0.0
        self._slow_said = False
        # (Bounded well below KafkaLog's transaction timeout, 10 s.)
        self.commit_interval = min(commit_interval_ms, 5_000) / 1000
        self.processed = 0
        # Records read by input topic, and written to the stage's output (added per task run;
        # read by GET /metrics).
        self.read: dict[str, int] = {}
        self.produced = 0
        # Scalable push queries reading this stage's output as it is produced (see
        # ``streamsql.exec.push.ScalablePushQuery``): each has ``offer(partition, records)``,
        # called once per committed task run. Empty (one check per run) when none listens.
        self.subscribers: list[Any] = []
        # Kafka Streams' repartition.purge.interval.ms: how often consumed repartition
        # records are deleted (see ``_purge``).
        self.purge_interval = purge_interval_ms / 1000
        self._purged_at = -float("inf")
        # Throughput: processed count at the start of the current measuring interval.
        self._rate_mark = (time.monotonic(), 0)
        self._rate = 0.0
        # Set once the stage has had its first assignment (and restored its state).
        self.ready = asyncio.Event()
        if tasks is not None:
            tasks.claim_outputs()
            if tasks.standby is not None:
                # Warm-ups caught up: ask the group for the follow-up assignment.
                tasks.standby.on_warm = self._rejoin

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"stage-{self.stage.name}")

    @property
    def started(self) -> bool:
        return self._task is not None

    async def stop(self, grace: float = 5.0) -> None:
        """Stop consuming: the batch in flight is finished and committed first (given up
        after ``grace`` seconds: an exactly-once stage takes it up again at its next start,
        an at-least-once one may write its output again)."""
        self._stopping.set()
        for sub in list(self.subscribers):  # their rows end with the query
            sub.source_stopped(f"The query {self.stage.name} was stopped.")
        self.subscribers.clear()
        if self.tasks is not None and self.tasks.standby is not None:
            await self.tasks.standby.close()
        wakeup = getattr(self._consumer, "wakeup", None)
        if wakeup is not None:
            wakeup()  # a poll waiting for records returns now
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), grace)
            except (asyncio.TimeoutError, asyncio.CancelledError, Exception):
                pass
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        elif self.tasks is not None:
            self.tasks.release()

    def halt(self, halted: bool) -> None:
        """Stop processing (ksqlDB's PAUSE) or go on (RESUME) from where it stopped."""
        self.halted = halted
        consumer = self._consumer
        if consumer is not None and not halted:
            consumer.resume(consumer.assignment() - self._paused)

    @property
    def topics(self) -> tuple[str, ...]:
        """The topics the stage reads."""
        return tuple(getattr(self.stage, "source_topics", None) or (self.stage.source_topic,))

    def assignment(self) -> set[tuple[str, int]]:
        """The input partitions this runner owns now."""
        return self._consumer.assignment() if self._consumer is not None else set()

    def lags(self) -> dict[tuple[str, int], int]:
        """Each owned input partition's lag (records on the log not polled yet), where
        known; read at scrape time by ``GET /metrics``, on the engine's loop."""
        if self._consumer is None:
            return {}
        out: dict[tuple[str, int], int] = {}
        for topic, partition in self.assignment():
            lag = self._lag(topic, partition)
            if lag is not None:
                out[(topic, partition)] = lag
        return out

    def _measure(self) -> None:
        t0, n0 = self._rate_mark
        now = time.monotonic()
        if now - t0 >= 1.0:
            self._rate = (self.processed - n0) / (now - t0)
            self._rate_mark = (now, self.processed)

    @property
    def state(self) -> str:
        """ERROR, REBALANCING or RUNNING (see the class docstring)."""
        if self._failed:
            return "ERROR"
        return "REBALANCING" if self._rebalancing else "RUNNING"

    def messages_per_sec(self) -> float:
        """Records processed per second over the last interval of a second or more (0 when
        idle since)."""
        t0, n0 = self._rate_mark
        if time.monotonic() - t0 > 5.0:
            return 0.0
        return self._rate

    # -- RebalanceListener --------------------------------------------------------------

    async def assigned(self, partitions: set[tuple[str, int]]) -> None:
        try:
            await self._assigned(partitions)
        finally:
            self._rebalancing = False

    async def _assigned(self, partitions: set[tuple[str, int]]) -> None:
        await self._assigned_active(partitions)
        standby = self.tasks.standby if self.tasks is not None else None
        consumer = self._consumer
        if standby is not None and consumer is not None:
            # After the active tasks opened: one that was a standby here has been released.
            active = {p for _, p in partitions}
            warm, warmup = consumer.standbys()
            await standby.assign(warm - active, warmup - active)
            if warm or warmup:
                log.info("%s: standby tasks %s, warm-up tasks %s", self.stage.name,
                         sorted(warm - active) or "none", sorted(warmup - active) or "none")

    def _rejoin(self) -> None:
        if self._consumer is not None:
            self._consumer.rejoin()

    async def _assigned_active(self, partitions: set[tuple[str, int]]) -> None:
        if partitions:
            try:
                async with self._lock:
                    self._drop_buffered(partitions)
                    positions = await self._resume_positions(partitions)
            except Exception as exc:
                # (Raised here it would only be logged by the consumer.) The stage starts
                # over: reading the partitions from unchecked positions could count twice.
                self._assign_failure = exc
                raise
            consumer = self._consumer
            if consumer is None:
                return  # the stage stopped meanwhile
            for (topic, p), off in positions.items():
                consumer.seek(topic, p, off)
        log.info("%s: assigned %s", self.stage.name, _partitions(partitions))
        self.ready.set()

    async def _resume_positions(self, partitions: set[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """Where to read each newly assigned partition from. On Kafka, every one of them:
        the consumer's own positions may come from offsets fetched before the previous
        owner's last transaction landed, and batches polled before a revocation are dropped
        (see ``revoked``). (On the embedded log, only where a task's state says so: the
        group's offsets are always current.)"""
        positions: dict[tuple[str, int], int] = {}
        group: dict[str, dict[int, int]] | None = None
        metadata: dict[tuple[str, int], str] = {}
        if self.log.distributed:
            # The group's offsets once the previous owner's last transaction has landed: the
            # consumer's own fetch of them may predate it (and so read its input again).
            by_topic: dict[str, list[int]] = {}
            for topic, p in partitions:
                by_topic.setdefault(topic, []).append(p)
            group = {}
            for topic, parts in by_topic.items():
                found = await self.log.stable_committed_metadata(self.group, topic, parts)
                offsets = group[topic] = {p: off for p, (off, _) in found.items()}
                metadata.update(((topic, p), meta) for p, (_, meta) in found.items() if meta)
                positions.update(((topic, p), off) for p, off in offsets.items())
                if any(p not in offsets for p in parts):  # none committed: the reset policy
                    fresh = await (self.log.end_offsets(topic) if self.reset == "latest"
                                   else self.log.begin_offsets(topic))
                    positions.update(((topic, p), fresh[p]) for p in parts if p not in offsets)
        if self.tasks is not None:
            positions.update(await self.tasks.open({p for _, p in partitions}, self.reset, group,
                                                   metadata))
        return positions

    async def revoked(self, partitions: set[tuple[str, int]]) -> None:
        # A batch polled before this (waiting for the lock now) is dropped: processed and
        # committed during the rebalance, it could be read again by the partition's next
        # owner, which may already have fetched the offsets. (If this node gets the
        # partition back, ``assigned`` seeks it to the committed offset: nothing is lost.)
        # The batch in flight, though, in every kind of stage, is finished and committed
        # first (the lock): committed after the next owner fetched the offsets, it would
        # be written twice.
        self._generation += 1
        self._rebalancing = self.log.distributed  # (until the group's next assignment)
        log.info("%s: revoked %s", self.stage.name, _partitions(partitions))
        async with self._lock:
            if (self._in_flight or self._open is not None or self._committing is not None
                    or self._deferred):
                # Their offsets are committed before the partitions go.
                try:
                    await self._settle_in_flight()
                    await self._commit_open()
                except Exception as exc:  # noqa: BLE001 - the stage restarts from its last commit
                    log.warning("%s: output in flight failed before a revocation: %s",
                                self.stage.name, exc)
                    self._assign_failure = exc
            self._drop_buffered(partitions)
            if self.tasks is not None:
                self.tasks.close({p for _, p in partitions})
            # Again once they are closed: work the loop found while this waited for the
            # lock (the tasks it found due) was found with them open.
            self._generation += 1

    def _drop_buffered(self, partitions: set[tuple[str, int]] | None = None) -> None:
        """Forget the records a multi-input stage holds of ``partitions`` (all when None):
        the consumer reads them again from the committed offsets."""
        if self.inputs is not None:
            self.inputs.drop(partitions)
            self._paused = set() if partitions is None else self._paused - partitions

    # -- the loop -----------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = 0.5
        try:
            while not self._stopping.is_set():
                try:
                    await self._consume()
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.exception("stage %s failed; restarting from its last commit in %.1fs",
                                  self.stage.name, backoff)
                    self._failed = True
                    self.errors.append((int(time.time() * 1000), f"{type(exc).__name__}: {exc}"))
                    if self.transaction is not None:
                        # A transactional producer in a fatal state cannot begin again: the
                        # restart makes a new one (which fences the old).
                        await self.transaction.close()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
        finally:
            self.ready.set()
            if self.tasks is not None:
                self.tasks.release()
            if self.transaction is not None:
                await self.transaction.close()

    async def _consume(self) -> None:
        tasks = self.tasks
        fences = self.fences
        txn = self.transaction
        inputs = self.inputs
        self._assign_failure = None  # (one from before a restart is dealt with)
        self._drop_buffered()
        consumer = self._consumer = self.log.consumer(self.group, list(self.topics),
                                                      listener=self, reset=self.reset)
        loop = asyncio.get_running_loop()
        timeout = 0.5
        # At least once on Kafka, state-less: the next poll is processed while the last
        # ones' acknowledgements and offset commits are on their way (``_send``).
        pipelined = txn is None and tasks is None and self.log.distributed
        # Exactly once: a transaction spans the polls of a commit interval.
        spanning = txn is not None
        try:
            # (On Kafka no topic is fenced: the broker's read_committed does it.)
            fenced = fences is not None
            while not self._stopping.is_set():
                wait = timeout
                if self._open is not None:  # (woken in time to commit it)
                    wait = min(wait, max(self._open.began + self.commit_interval - loop.time(), 0.0))
                if self._deferred:  # (output held: looked at again soon)
                    wait = min(wait, self.DEFERRED_POLL)
                batches = await consumer.poll(max_records=5000, timeout=wait)
                # Taken before anything is awaited: a revocation from here on (the steps
                # below wait for the lock, and a revocation may hold it) makes this poll's
                # work stale. (One that ran during the poll came before its records:
                # aiokafka returns none while one is under way, and none of newly assigned
                # partitions before the listener has sought them.)
                generation = self._generation
                in_flight = self._in_flight
                while in_flight and in_flight[0].done():
                    await in_flight.popleft()  # (raises what failed it, even when idle)
                if self._committing is not None and self._committing.done():
                    # (Raises what failed it, even when idle.) Output held meanwhile goes
                    # into the next transaction.
                    async with self._lock:
                        await self._resume()
                elif self._deferred:
                    self._slow_commit()
                if self._open is not None and loop.time() - self._open.began >= self.commit_interval:
                    async with self._lock:
                        await self._commit_due()
                if self.halted:
                    # Paused: what the poll got is read again after RESUME.
                    for b in batches:
                        consumer.seek(b.topic, b.partition, b.offsets[0])
                    consumer.pause(consumer.assignment())
                    continue
                if self._assign_failure is not None:
                    failure, self._assign_failure = self._assign_failure, None
                    raise failure
                if fenced:
                    batches, waits = fences.cut(batches, consumer.seek)
                    if waits and not batches:
                        # Everything available is past the writer's last commit.
                        await _wait_any(waits, 0.5)
                        continue
                if not batches and inputs is None:
                    batches = self._held()
                    if not batches:
                        continue
                async with self._lock:
                    if generation != self._generation:
                        # Partitions were revoked since the poll, or are being revoked:
                        # its batches, and the tasks ``_held`` found due, may be of tasks
                        # closed now (see ``revoked``).
                        continue
                    owned = consumer.assignment()
                    batches = [b for b in batches if (b.topic, b.partition) in owned]
                    if inputs is None:
                        work = [[b] for b in batches]
                    else:
                        work, timeout = self._ordered(inputs, batches, owned, loop.time())
                    if not work:
                        continue
                    if spanning:
                        # (A turn for the transaction's requests and the producer between
                        # reading a poll and working it out: they wait for one at each step.)
                        await asyncio.sleep(0)
                        await self._transact(work)
                    elif pipelined:
                        await self._send(work)
                    else:
                        await self._batches(work)
                self._failed = False
                self._measure()
                if self.after_batch is not None:
                    await self.after_batch()
                # A poll of buffered records returns without giving the loop a turn: the
                # client's tasks (sends, acks, a commit in the background) get one here.
                await asyncio.sleep(0)
            generation = self._generation
            held = self._held(force=True)  # stopping: flush what a cached stage holds
            if held and not self.halted:
                async with self._lock:
                    # (Not after a revocation meanwhile: they went with their tasks.)
                    owned = consumer.assignment() if generation == self._generation else set()
                    work = [[b] for b in held if (b.topic, b.partition) in owned]
                    if work:
                        await (self._transact(work) if spanning else self._batches(work))
            if pipelined:
                await self._settle_in_flight()  # stopping: commit what is acknowledged
            async with self._lock:
                await self._commit_open()  # stopping: commit the open transaction
        finally:
            committing, self._committing = self._committing, None
            if committing is not None:  # (a failure: what it held is read again)
                committing.cancel()
                try:
                    await committing
                except BaseException:  # noqa: BLE001 - the failure is already being handled
                    pass
            if self._open is not None:  # (a failure: its input is read again)
                self._open = None
                await txn.abort()
            # (A failure: polls worked out after the last commit are read again; their
            # writes go with their tasks' uncommitted batches, closed below.)
            self._deferred = []
            self._deferred_polls = 0
            self._consumer = None
            for t in self._in_flight:  # (left only on a failure: read again, at least once)
                if t.done() and not t.cancelled():
                    t.exception()  # (the failure that stopped the stage, logged by ``_run``)
                t.cancel()
            self._in_flight.clear()
            if tasks is not None:
                tasks.close()
            await consumer.close()

    def _held(self, force: bool = False) -> list[RecordBatch]:
        """Empty batches for the tasks of a stage with a record cache that hold updates
        past their commit interval (all that hold any, with ``force``): processing one
        flushes the task and commits it."""
        due = getattr(self.stage, "due", None)
        if due is None:
            return []
        return [RecordBatch(self.stage.source_topic, p) for p in due(force)]

    def _ordered(self, inputs: OrderedInputs, batches: list[RecordBatch],
                 owned: set[tuple[str, int]], now: float) -> tuple[list[list[RecordBatch]], float]:
        """A multi-input stage's work: ``batches`` buffered, and the runs its tasks can
        process now in timestamp order; also how long the next poll may wait (until a task
        waiting for a caught-up input stops waiting). Partitions with too much buffered
        are paused until their task has caught up with them."""
        for b in batches:
            inputs.add(b)
        work, wake = inputs.take(owned, self._lag, now)
        consumer = self._consumer
        full = inputs.full()
        if full != self._paused:
            consumer.resume(self._paused - full)
            consumer.pause(full - self._paused)
            self._paused = full
        return work, 0.5 if wake is None else min(0.5, max(wake - now, 0.0))

    def _lag(self, topic: str, partition: int) -> int | None:
        """Records of an input partition on the log not polled yet (None: not known yet);
        on the embedded log only up to the writer's last commit (read_committed)."""
        got = self._consumer.progress(topic, partition)
        if got is None:
            return None
        position, end = got
        if self.fences is not None:
            limit = self.fences.limit(topic, partition)
            if limit is not None:
                if limit < 0:
                    return None  # its writer has not opened yet
                end = min(end, limit)
        return max(end - position, 0)

    def _offset_metadata(self, done: list[tuple[int, dict[tuple[str, int], int]]]
                         ) -> dict[tuple[str, int], str] | None:
        """The metadata of the offsets of ``done`` tasks (their extra as JSON, as Kafka
        Streams commits a task's stream time with its offsets), on Kafka."""
        extra = self._task_extra
        if extra is None:
            return None
        meta: dict[tuple[str, int], str] = {}
        for p, offsets in done:
            text = json.dumps(extra(p), separators=(",", ":"))
            for tp in offsets:
                meta[tp] = text
        return meta

    async def _batches(self, work: list[list[RecordBatch]]) -> None:
        """Process, write and commit (at least once, or exactly once on the embedded log)
        ``work``: per task, its input records as one or more runs, in order."""
        stage, tasks = self.stage, self.tasks
        commits: dict[tuple[str, int], int] = {}
        done: list[tuple[int, dict[tuple[str, int], int]]] = []
        if tasks is not None and not tasks.outputs and self.log.distributed:
            await self._batches_sent(work)
            return
        for runs in work:
            p = runs[0].partition
            if tasks is not None:
                tasks.bind(p)
            records, offsets = _process(stage, runs)
            if records:
                if tasks is not None:
                    tasks.writing()
                await self.log.produce(stage.sink_topic, records)
                self.produced += len(records)
            await self._task_done(p, runs, records, offsets, commits, done)
        if commits:
            await self._consumer.commit(commits, self._offset_metadata(done))
            await self._purge(commits)

    async def _task_done(self, p: int, runs: list[RecordBatch], records: Any,
                         offsets: dict[tuple[str, int], int], commits: dict[tuple[str, int], int],
                         done: list[tuple[int, dict[tuple[str, int], int]]]) -> None:
        """A task's runs once its output is written: counted, its state committed, its
        output shown to push subscribers, its offsets kept for the group's commit."""
        self.processed += self._count((run.topic, len(run)) for run in runs)
        if self.tasks is not None and offsets:
            await self.tasks.commit(p, offsets)
        if self.subscribers and records:
            self._publish(p, records)
        commits.update(offsets)
        done.append((p, offsets))

    async def _batches_sent(self, work: list[list[RecordBatch]]) -> None:
        """``_batches`` of a stage with tasks on Kafka (at least once): every task's output
        is sent before any is waited for, then each task commits its state once its own
        output is acknowledged (the state never runs ahead of the output: a task resumes
        from its state's offsets where they are further than the group's), then the
        group's offsets. (Not on the embedded log, whose exactly-once commit takes the
        outputs' end offsets: only one task's output may be uncommitted there.)"""
        stage, tasks = self.stage, self.tasks
        sent: list[tuple[list[RecordBatch], Any, dict[tuple[str, int], int], Any]] = []
        for runs in work:
            tasks.bind(runs[0].partition)
            records, offsets = _process(stage, runs)
            acks = await self.log.send(stage.sink_topic, records) if records else None
            sent.append((runs, records, offsets, acks))
        commits: dict[tuple[str, int], int] = {}
        done: list[tuple[int, dict[tuple[str, int], int]]] = []
        for runs, records, offsets, acks in sent:
            p = runs[0].partition
            if acks is not None:
                await acks
                self.produced += len(records)
            await self._task_done(p, runs, records, offsets, commits, done)
        if commits:
            await self._consumer.commit(commits, self._offset_metadata(done))
            await self._purge(commits)

    async def _send(self, work: list[list[RecordBatch]]) -> None:
        """``_batches`` pipelined (at least once, without tasks): the output is handed to
        the producer and the offsets are committed by a task of their own once it is
        acknowledged, while the next poll is processed. Polls commit in order, each after
        the one before it (so an offset is never committed before the output of every
        record before it is durable); at most ``IN_FLIGHT`` polls are pending, the next
        waits for the oldest. A failed send or commit fails the stage at its next poll
        (it restarts from the last commit); ``revoked`` and a stop wait for them all."""
        stage = self.stage
        commits: dict[tuple[str, int], int] = {}
        done: list[tuple[int, dict[tuple[str, int], int]]] = []
        acks: list[Awaitable[None]] = []
        published: list[tuple[int, Any]] = []
        processed = produced = 0
        for runs in work:
            p = runs[0].partition
            records, offsets = _process(stage, runs)
            if records:
                acks.append(await self.log.send(stage.sink_topic, records))
                produced += len(records)
                if self.subscribers:
                    published.append((p, records))
            processed += self._count((run.topic, len(run)) for run in runs)
            commits.update(offsets)
            done.append((p, offsets))
        meta = self._offset_metadata(done)
        in_flight = self._in_flight
        previous = in_flight[-1] if in_flight else None
        in_flight.append(asyncio.create_task(self._settle(
            self._consumer, previous, acks, commits, meta, processed, produced, published)))
        while in_flight and (in_flight[0].done() or len(in_flight) > self.IN_FLIGHT):
            await in_flight.popleft()  # (raises what failed it)

    async def _settle(self, consumer: Any, previous: "asyncio.Task[None] | None",
                      acks: list[Awaitable[None]],
                      commits: dict[tuple[str, int], int],
                      meta: dict[tuple[str, int], str] | None, processed: int, produced: int,
                      published: list[tuple[int, Any]]) -> None:
        """One poll of ``_send``: its acknowledgements, then (after the poll before it has
        committed) its offsets."""
        try:
            for a in acks:
                await a
        finally:
            if previous is not None:
                await previous  # (its failure is this one's too: nothing after it commits)
        await consumer.commit(commits, meta)
        self.processed += processed
        self.produced += produced
        for p, records in published:
            self._publish(p, records)
        await self._purge(commits)

    async def _settle_in_flight(self) -> None:
        """Wait until every poll in flight has committed (or raise what failed one)."""
        in_flight = self._in_flight
        while in_flight:
            await in_flight.popleft()

    async def _purge(self, commits: dict[tuple[str, int], int]) -> None:
        """Delete what this stage has read and committed of the repartition topics it alone
        reads (Kafka Streams purges them so after each commit): nothing will read it again."""
        purged = getattr(self.stage, "purged_inputs", ())
        if not purged:
            return
        now = time.monotonic()
        if now - self._purged_at < self.purge_interval:
            return
        self._purged_at = now
        by_topic: dict[str, dict[int, int]] = {}
        for (topic, p), offset in commits.items():
            if topic in purged:
                by_topic.setdefault(topic, {})[p] = offset
        for topic, offsets in by_topic.items():
            try:
                await self.log.delete_records(topic, offsets)
            except Exception:  # noqa: BLE001 - purging is housekeeping: the next commit retries
                log.warning("%s: could not purge %s", self.stage.name, topic, exc_info=True)

    async def _transact(self, work: list[list[RecordBatch]]) -> None:
        """Process ``work`` in a Kafka transaction open over the polls of a commit interval
        (Kafka Streams' ``commit.interval.ms``): begun at the first poll, as the group
        member that read it; output sent without waiting for acks, each task's changelog
        records flushed into it after its run; committed with every input offset read in
        it once ``commit_interval`` has passed, in the background (see ``_commit_due``;
        also before partitions are revoked and when the stage stops).

        While a transaction commits, up to ``DEFERRED`` polls (``DEFERRED_STATEFUL`` for a
        stage with tasks) are worked out meanwhile:
        their state writes go into their tasks' next batches (the committing one's were
        sealed), their output and changelog records are held and go into the next
        transaction once the last one has committed (``_resume``)."""
        outputs = self._outputs(work)
        if self._committing is not None:
            self._deferred += outputs
            self._deferred_polls += 1
            limit = self.DEFERRED if self.tasks is None else self.DEFERRED_STATEFUL
            if not self._committing.done() and self._deferred_polls < limit:
                return
            await self._resume()
            return
        await self._put(outputs)
        t = self._open
        if t is not None and asyncio.get_running_loop().time() - t.began >= self.commit_interval:
            await self._commit_due()

    async def _put(self, outputs: Iterable[_Output]) -> None:
        """Put task runs' output into the open transaction (begun first if none is):
        their records sent, each task's changelog records flushed after its run."""
        stage, tasks, txn = self.stage, self.tasks, self.transaction
        t = self._open
        if t is None:
            # Who reads the input: its offsets are committed as that member, so that the
            # group refuses them once a rebalance has given the partitions to another.
            # (Asked at commit time instead, a member the coordinator has just dropped
            # would have no generation yet, and a commit without one is not checked.)
            member = self._consumer.group_metadata()
            if member is None and self.log.distributed:
                raise NotAMember(f"{stage.name}: not a current member of group {self.group} "
                                 "(dropped by its coordinator): reading again from the last commit")
            await txn.begin(self.group)
            t = self._open = _OpenTransaction(member, asyncio.get_running_loop().time())
        try:
            for i, (p, counts, records, offsets) in enumerate(outputs):
                if i:
                    # (Output held over several polls goes in at once: the transaction's
                    # requests and the producer get turns of the loop meanwhile.)
                    await asyncio.sleep(0)
                if records:
                    acks = await txn.send(stage.sink_topic, records)
                    if not t.acks or t.acks[-1] is not acks:  # (one for all sends, on Kafka)
                        t.acks.append(acks)
                    t.produced += len(records)
                    if self.subscribers:
                        t.published.append((p, records))
                if tasks is not None:
                    await tasks.prepare(p)
                t.processed += self._count(counts)
                t.commits.update(offsets)
                t.done.append((p, offsets))
        except BaseException:
            # The stores hold the aborted transaction's writes: the stage restarts from
            # the last commit (tasks reopened, restored from the committed changelog).
            self._open = None
            await txn.abort()
            raise

    def _outputs(self, work: list[list[RecordBatch]]) -> list[_Output]:
        """Each task's runs of ``work`` through the stage (its stores bound to the task):
        (task, records read per topic, records to write, next input offsets). (Not the
        runs themselves: output held for a later transaction keeps no input alive.) All
        worked out before anything is awaited, while the poll that read them is the
        current one: each run binds its task with nothing run on the loop in between."""
        tasks = self.tasks
        out: list[_Output] = []
        for runs in work:
            p = runs[0].partition
            if tasks is not None:
                tasks.bind(p)
            records, offsets = _process(self.stage, runs)
            out.append((p, tuple((run.topic, len(run)) for run in runs), records, offsets))
        return out

    async def _commit_due(self) -> None:
        """The open transaction's commit interval is over: commit it in the background
        while the next polls are worked out (``_transact``). Its tasks' batches and the
        offsets' metadata are taken now: what comes after belongs to the next
        transaction. Called with the lock held."""
        t, self._open = self._open, None
        if t is not None:
            sealed, metadata = self._seal(t)
            await self._committed()  # (none: ``t`` began after it; commits stay in order)
            self._committing = asyncio.create_task(self._commit(t, sealed, metadata))
            self._committing_since = asyncio.get_running_loop().time()
            self._slow_said = False

    def _slow_commit(self) -> None:
        """Say (once per transaction) that the last transaction has been committing for
        ``SLOW_COMMIT`` seconds or more while polls worked out since wait for it (a broker
        slow to answer, or gone)."""
        committing = self._committing
        if (self._slow_said or not self._deferred_polls or committing is None
                or committing.done()):
            return
        took = asyncio.get_running_loop().time() - self._committing_since
        if took >= self.SLOW_COMMIT:
            self._slow_said = True
            log.info("%s: the last transaction has been committing for %.1fs; %d polls "
                     "worked out since wait for it", self.stage.name, took, self._deferred_polls)

    async def _committed(self) -> None:
        """Wait for the transaction committing in the background (raise what failed it)."""
        committing, self._committing = self._committing, None
        if committing is not None:
            await committing

    async def _resume(self) -> None:
        """Wait for the transaction committing in the background (raise what failed it),
        then put the output of the polls worked out meanwhile into the next one. Called
        with the lock held."""
        committing = self._committing
        while committing is not None and not committing.done() and self._deferred_polls:
            await asyncio.wait([committing], timeout=self.SLOW_COMMIT)
            self._slow_commit()
        await self._committed()
        deferred, self._deferred = self._deferred, []
        self._deferred_polls = 0
        if deferred:
            await self._put(deferred)

    async def _commit_open(self) -> None:
        """Commit the open transaction of ``_transact`` (nothing if none is open), after
        the one committing in the background and with what was held meanwhile; on a
        failure it is aborted and the failure raised (the stage restarts from the last
        commit). Called with the lock held."""
        await self._resume()
        t, self._open = self._open, None
        if t is not None:
            await self._commit(t, *self._seal(t))

    def _seal(self, t: _OpenTransaction
              ) -> tuple[dict[int, Any], dict[tuple[str, int], str] | None]:
        """What ``t`` commits besides its offsets, as of now (its end): each of its tasks'
        sealed batch (see ``StageTasks.seal``) and the offsets' metadata."""
        tasks = self.tasks
        sealed: dict[int, Any] = {}
        if tasks is not None:
            for p in dict.fromkeys(p for p, _ in t.done):
                sealed[p] = tasks.seal(p)
        return sealed, self._offset_metadata(t.done)

    async def _commit(self, t: _OpenTransaction, sealed: dict[int, Any],
                      metadata: dict[tuple[str, int], str] | None) -> None:
        """Commit ``t``: its offsets (with ``metadata``), then the transaction; then its
        tasks' ``sealed`` batches locally, the counts and the subscribers."""
        txn = self.transaction
        try:
            await txn.commit(self.group, t.commits, member=t.member, metadata=metadata)
            for a in t.acks:  # (done: the commit waited for them)
                await a
        except BaseException:
            await txn.abort()
            raise
        self.processed += t.processed
        self.produced += t.produced
        tasks = self.tasks
        if tasks is not None:  # the local state follows the committed transaction
            by_task: dict[int, dict[tuple[str, int], int]] = {}
            for p, offsets in t.done:
                by_task.setdefault(p, {}).update(offsets)
            for p, offsets in by_task.items():
                if offsets:
                    tasks.commit_sealed(p, sealed[p], offsets)
        for p, records in t.published:
            self._publish(p, records)
        await self._purge(t.commits)

    def _count(self, counts: Iterable[tuple[str, int]]) -> int:
        """Count a task's input by topic ((topic, records) of each run); returns how many
        records it was."""
        read = self.read
        n = 0
        for topic, k in counts:
            read[topic] = read.get(topic, 0) + k
            n += k
        return n

    def _publish(self, partition: int, records: list[ProducerRecord]) -> None:
        """Hand a committed task run's output records to the scalable push queries
        subscribed (each only queues them: a slow one drops itself, see ``offer``)."""
        for sub in list(self.subscribers):
            try:
                sub.offer(partition, records)
            except Exception:  # noqa: BLE001 - a subscriber never fails the query
                log.warning("%s: a push query subscriber failed", self.stage.name, exc_info=True)
                if sub in self.subscribers:
                    self.subscribers.remove(sub)


class NotAMember(Exception):
    """A stage's consumer is not a member of its group right now (the coordinator dropped
    it): what it polled may belong to another member already."""


def _process(stage: Stage, runs: list[RecordBatch]
             ) -> tuple[list[ProducerRecord], dict[tuple[str, int], int]]:
    """One task's runs through ``stage``: the records to write and the next input offset
    of each topic read."""
    records: list[ProducerRecord] = []
    offsets: dict[tuple[str, int], int] = {}
    for run in runs:
        records += stage.process(run)
        if run.offsets:  # (an empty run flushes a cached stage, see ``_held``)
            offsets[(run.topic, run.partition)] = run.offsets[-1] + 1
    committable = getattr(stage, "committable", None)
    if committable is not None:
        # A stage with a record cache commits nothing of updates it holds unflushed.
        offsets = committable(runs[0].partition, offsets)
    return records, offsets


def _partitions(partitions: set[tuple[str, int]]) -> str:
    return ", ".join(f"{t}-{p}" for t, p in sorted(partitions)) or "nothing"


async def _wait_any(events: list[asyncio.Event], timeout: float) -> None:
    waiters = [asyncio.ensure_future(ev.wait()) for ev in dict.fromkeys(events)]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


def table_row(store: Any, key: bytes, partitions: set[int] | None = None) -> tuple[bytes, int] | None:
    """A materialized table's (value, timestamp) for ``key`` (RocksDB or in-memory store;
    of the tasks of ``partitions`` only, where the store has tasks)."""
    row = getattr(store, "row", None)
    if row is not None:
        return row(key, partitions)
    return store.get(key)


def table_rows(store: Any, prefix: bytes | None = None, partitions: set[int] | None = None
               ) -> Iterator[tuple[bytes, bytes, int]]:
    """A materialized table's (key, value, timestamp) rows, lazily (keys starting with
    ``prefix`` when given; of the tasks of ``partitions`` only, where the store has tasks)."""
    rows = getattr(store, "rows", None)
    if rows is not None:
        yield from rows(prefix, partitions)
        return
    for k, (v, ts) in list(store.items()):
        if prefix is None or k.startswith(prefix):
            yield k, v, ts

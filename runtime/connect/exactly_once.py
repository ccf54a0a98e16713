"""Exactly-once source tasks (Kafka Connect's KIP-618, ``exactly.once.source.support=enabled``):
a batch's records and its source offsets are written atomically, so that no record is
published twice across a restart, ``kill -9`` included.

The worker collects a batch's records (``SourceBatchWriter.add``) and hands its source offsets
to ``commit``, which writes both at once. How depends on the Log:

- **Kafka** (``_KafkaWriter``): one Kafka transaction per batch, the records to their topics
  and the offsets records to the offsets topic; every reader of the Log reads committed. The
  transactional id is ``<workers' group>-<connector>-<task>``: a task that starts on another
  worker (after a rebalance or a crash) initializes the id, which aborts the old owner's open
  transaction and fences it (its next commit raises), and only then reads its offsets.
- **The embedded log** (``_EmbeddedWriter``) has no transactions and appends to one topic
  partition at a time. The engine's exactly-once stages cut their output topics back to the
  end offsets of their last commit (``streamsql.runtime.task``), which is safe only because
  nothing else writes those topics; a connector's topic is shared (other connectors,
  ``INSERT INTO``, ``INSERT VALUES``), so cutting back to the last commit could remove records
  others appended since. Instead each batch is a redo/undo record: first, in ONE write to the
  offsets topic, a *pending batch* record (the task's key, see ``pending_key``) holding the new
  offsets, the ones they replace and, per topic partition, where the batch's records will
  start and how many there are, followed by the new offsets records; then the records. All of
  it runs without yielding to the event loop, so no other writer or reader of the process
  comes in between. After a crash (``recover``, before anything else writes or reads:
  ``Worker.load`` at the engine's start) a batch whose records all landed keeps its new
  offsets; one cut short is removed (only its own records can follow its start: the crash
  came before anything else could write) and the old offsets are written back. A write that
  fails in the process (a full disk) is undone the same way at once.

Sink tasks keep at-least-once delivery (their writes, the JDBC sink's upserts, are idempotent).
"""
from __future__ import annotations

import logging
import time
from typing import Any, Mapping, Sequence

import orjson

from streamsql.runtime.log.base import Log, Partitioner, ProducerRecord, RecordColumns, Transaction

log = logging.getLogger(__name__)

_PENDING = "streamsql.pending.batch"


class Fenced(Exception):
    """A zombie task's transaction was refused: its transactional id has a newer owner (the
    task runs on another worker now). The task stops without a word to the status topic."""


def pending_key(connector: str, task: int) -> bytes:
    """The offsets topic's key of a task's pending-batch record (the embedded log). It starts
    as the connector's offsets keys do, so deleting a connector's offsets deletes it too."""
    return orjson.dumps([connector, task, _PENDING])


def is_pending_key(key: bytes) -> bool:
    return key.endswith(b'"' + _PENDING.encode() + b'"]')


def enabled(worker_config: Mapping[str, str]) -> bool:
    """Whether source tasks run exactly-once (Connect's worker property; streamsql's default
    is ``enabled``, ``disabled`` gives Connect's at-least-once)."""
    return str(worker_config.get("exactly.once.source.support", "enabled")).strip().lower() == "enabled"


class SourceBatchWriter:
    """Writes a source task's batches: ``begin``; ``add`` (records of a topic, in order);
    ``commit`` (their source offsets; the batch is then written, records and offsets at
    once); ``close``. A commit that fails keeps the batch's records for the next one (the
    worker tries again after a failed write). See the module docstring."""

    writes: list[tuple[str, Sequence[ProducerRecord]]]

    async def open(self) -> None:
        """Before the task reads its offsets (Kafka: fence the task's previous owner)."""

    def add(self, topic: str, records: Sequence[ProducerRecord]) -> None:
        self.writes.append((topic, records))

    async def commit(self, offsets: Mapping[bytes, Mapping[str, Any]]) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        return None


def writer_for(log_: Log, storage: Any, group: str, connector: str, task: int) -> SourceBatchWriter | None:
    """The exactly-once writer of a source task on ``log_``; None where the Log can do
    neither (source tasks then write at least once)."""
    txn = log_.transactional(f"{group}-{connector}-{task}") if log_.distributed else None
    if txn is not None:
        return _KafkaWriter(txn, storage)
    if not log_.distributed and callable(getattr(log_, "truncate", None)):
        return _EmbeddedWriter(log_, storage, connector, task)
    log.warning("connector %s task %d: the log has neither transactions nor truncation; "
                "its records are written at least once", connector, task)
    return None


class _KafkaWriter(SourceBatchWriter):
    def __init__(self, txn: Transaction, storage: Any) -> None:
        self.writes = []
        self.txn = txn
        self.storage = storage
        self.open_txn = False

    async def open(self) -> None:
        # Initializing the transactional id aborts what a previous owner left open and
        # fences it; the offsets are read after that, committed ones only.
        await self.txn.begin()
        self.open_txn = True
        await self.storage.refresh_offsets(settle=True)

    async def commit(self, offsets: Mapping[bytes, Mapping[str, Any]]) -> None:
        txn = self.txn
        if not self.open_txn:
            await txn.begin()
            self.open_txn = True
        try:
            for topic, records in self.writes:
                await txn.produce(topic, records)
            if offsets:
                now = int(time.time() * 1000)
                await txn.produce(self.storage.offsets_topic,
                                  [ProducerRecord(k, orjson.dumps(v), now) for k, v in offsets.items()])
            await txn.commit("", {})
        except BaseException as exc:
            self.open_txn = False
            try:
                await txn.abort()
            except Exception:  # noqa: BLE001 - a fenced producer cannot even abort: the failure is exc
                log.debug("aborting a source batch's transaction failed", exc_info=True)
            if _fenced(exc):
                raise Fenced(f"{getattr(txn, 'transactional_id', '')}: another worker runs this task now") from exc
            raise
        self.writes = []
        self.open_txn = False
        self.storage.offsets_written(offsets)

    async def close(self) -> None:
        if self.open_txn:
            self.open_txn = False
            try:
                await self.txn.abort()
            except Exception:  # noqa: BLE001 - closing anyway
                log.debug("aborting an idle transaction failed", exc_info=True)
        await self.txn.close()


def _fenced(exc: BaseException) -> bool:
    """Whether a transaction failed because another producer took its transactional id
    (aiokafka's ProducerFenced, or the broker's INVALID_PRODUCER_EPOCH; by name: the Kafka
    client is the Log backend's business)."""
    while exc is not None:
        if type(exc).__name__ in ("ProducerFenced", "InvalidProducerEpoch", "InvalidProducerEpochError"):
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False


class _EmbeddedWriter(SourceBatchWriter):
    def __init__(self, log_: Log, storage: Any, connector: str, task: int) -> None:
        self.writes = []
        self.log = log_
        self.storage = storage
        self.key = pending_key(connector, task)
        self.partitioners: dict[str, Partitioner] = {}

    async def commit(self, offsets: Mapping[bytes, Mapping[str, Any]]) -> None:
        writes = self.writes
        if not writes and not offsets:
            return
        lg = self.log
        # From here to the end nothing awaited suspends (the embedded log's calls do not):
        # no other writer or reader of the process runs in between.
        counts: dict[tuple[str, int], int] = {}
        for i, (topic, records) in enumerate(writes):
            n = (await lg.describe_topic(topic)).partitions  # type: ignore[union-attr]
            if n == 1:
                counts[(topic, 0)] = counts.get((topic, 0), 0) + len(records)
                continue
            if isinstance(records, RecordColumns):  # record objects, to hold the partitions chosen
                records = list(records)
                writes[i] = (topic, records)
            # Partitions chosen here, so that the pending record can say where each goes.
            parts = self.partitioners.setdefault(topic, Partitioner()).assign(records, n)
            for r, p in zip(records, parts):
                r.partition = p
                counts[(topic, p)] = counts.get((topic, p), 0) + 1
        ends: dict[str, list[int]] = {}
        for topic, _ in counts:
            if topic not in ends:
                ends[topic] = await lg.end_offsets(topic)
        plan = [[t, p, ends[t][p], c] for (t, p), c in counts.items()]
        before = {k.decode(): self.storage.offsets.get(k) for k in offsets}
        pending = {"offsets": {k.decode(): v for k, v in offsets.items()}, "before": before, "writes": plan}
        now = int(time.time() * 1000)
        otopic = self.storage.offsets_topic
        start = (await lg.end_offsets(otopic))[0]
        marks = [(otopic, 0, start)] + [(t, p, s) for t, p, s, _ in plan]
        try:
            await lg.produce(otopic, [ProducerRecord(self.key, orjson.dumps(pending), now)] +
                             [ProducerRecord(k, orjson.dumps(v), now) for k, v in offsets.items()])
            for topic, records in writes:
                await lg.produce(topic, records)
        except BaseException:
            # Not written whole (a full disk): what was is taken back, the offsets record
            # first written included, as if nothing had been.
            for topic, p, at in marks:
                await lg.truncate(topic, p, at)  # type: ignore[attr-defined]
            raise
        self.writes = []
        self.storage.offsets_written(offsets)


async def recover(log_: Log, storage: Any) -> None:
    """Settle the pending batches a crash left (the embedded log; see the module docstring):
    called once the offsets topic is read, before anything else writes or reads."""
    truncate = getattr(log_, "truncate", None)
    if log_.distributed or truncate is None:
        return
    for key, pending in list(storage.pending.items()):
        topics = await log_.list_topics()
        landed = True
        for topic, p, start, count in pending.get("writes", ()):
            if topic not in topics:
                continue  # deleted since: nothing of it to keep or remove
            if (await log_.end_offsets(topic))[p] - start < count:
                landed = False
        now = int(time.time() * 1000)
        if landed:
            chosen = pending.get("offsets", {})
        else:
            removed = 0
            for topic, p, start, count in pending.get("writes", ()):
                if topic in topics:
                    removed += await truncate(topic, p, start)
            log.warning("connect: removing %d records of a source batch written before a crash "
                        "(%s); its source offsets are the previous ones", removed, key.decode())
            chosen = pending.get("before", {})
        records = [ProducerRecord(k.encode(), None if v is None else orjson.dumps(v), now)
                   for k, v in chosen.items()]
        # The pending record goes (a tombstone): it is settled.
        await log_.produce(storage.offsets_topic, records + [ProducerRecord(key, None, now)])
        for k, v in chosen.items():
            storage._apply_offset(k.encode(), None if v is None else orjson.dumps(v))
        storage.pending.pop(key, None)

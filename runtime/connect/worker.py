"""The Connect worker: runs connectors and their tasks on the Log, as Kafka Connect's worker.

- A **source** task's ``poll()`` runs on a thread of its own (several polls a call while it has
  records at once; polling on, a batch or two ahead, while what it read is written, unless
  the task has a ``commit()`` of its own: ``_Reader``); its records are converted (the
  connector's key/value converters, by writers compiled once per schema, a run of records at
  a time; a ``SourceRecordBatch`` as columns, without record objects, on the task's thread
  where the converters allow it, so that one thread reads and converts while the loop
  writes; produced as ``RecordColumns``: a column of values the embedded log frames as one
  batch) and produced on the event loop with their source offsets, atomically
  (``exactly_once``: a Kafka transaction per batch, or the embedded log's pending batch
  records; KIP-618's ``exactly.once.source.support=enabled``, the default). With
  ``disabled``, only once the Log has them are their source offsets written to the offsets
  topic (at least once: a crash between the two publishes the last batch again, never loses
  it). Then ``commit()``.
- A **sink** task consumes the connector's ``topics`` as the consumer group ``connect-<name>``
  (Connect's name; from the earliest offset where the group has none, as Connect's sink
  consumers), ``put()``s converted records, and every ``offset.flush.interval.ms`` calls
  ``flush()`` and commits the offsets of what it flushed, and only that.
- A task that raises goes to FAILED with its trace in its status; the other tasks, the other
  connectors and every query keep running. States are Connect's: UNASSIGNED, RUNNING, PAUSED,
  FAILED, STOPPED. A record that does not convert fails its task unless ``errors.tolerance``
  is ``all`` (``_Tolerance``: skipped, logged, a sink's sent to its dead letter queue); a Log
  write that fails (a full disk) is tried again until it succeeds or the task stops.

Configs, offsets and statuses live in compacted topics (``streamsql.runtime.connect.storage``),
so a restarted worker runs the same connectors, paused ones paused, and a file source goes on
after the last line it published. As in Kafka Connect, a connector's instance computes its
task configs and writes them to the configs topic (``task-<name>-<id>`` records and a
``commit-<name>``); each task runs from its stored config wherever it is placed, and is started
again when a new set is committed with its config changed (a reconfiguration, a new connector
config). On a Log shared by several nodes (Kafka) the workers of a service form a consumer
group over a placement topic (``_place``): a connector's instance runs on the worker owning the
partition its name hashes to, and its task ``i`` of ``n`` on the owner of that partition plus
``i * partitions / n`` (``owns_task``), so the group's range assignment puts a connector's tasks
on as many workers as it has (two tasks on two nodes: one each). The workers follow the topics
for statuses and changes, and a worker that leaves or dies has its connectors and tasks taken
over (an exactly-once source task fences the old owner's transactional id first).

The Python API (``create``, ``put_config``, ``connectors``, ``info``, ``status``, ``pause``,
``resume``, ``stop_connector``, ``restart``, ``restart_task``, ``delete``, ``topics``,
``validate``, ``plugins``) is what the statements and Connect's REST API are built on; its
errors are ``ConnectRestError`` with Connect's HTTP status and message.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
import traceback
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence, TypeVar

from streamsql.runtime.connect.api import (
    ConfigKey, Connector, ConnectorContext, ConnectException, RetriableException, SinkRecord, SinkTask, SourceRecord,
    SourceRecordBatch, SourceTask, SourceTaskContext, Task)
from streamsql.runtime.connect import exactly_once
from streamsql.runtime.connect.converters import Converter, make_converter
from streamsql.runtime.connect.plugins import PluginRegistry, default_registry
from streamsql.runtime.connect.storage import ConnectStorage, offset_key
from streamsql.runtime.log.base import Log, PackedValues, ProducerRecord, RecordColumns, TopicExistsError, murmur2

log = logging.getLogger(__name__)

T = TypeVar("T")

UNASSIGNED, RUNNING, PAUSED, FAILED, STOPPED = "UNASSIGNED", "RUNNING", "PAUSED", "FAILED", "STOPPED"
# Target states, as Connect's config topic has them.
TARGET_STARTED, TARGET_PAUSED, TARGET_STOPPED = "STARTED", "PAUSED", "STOPPED"

# Connect's worker defaults (connect-standalone.properties' offset flush: 10 s).
DEFAULT_WORKER_CONFIG: dict[str, str] = {
    "key.converter": "org.apache.kafka.connect.json.JsonConverter",
    "value.converter": "org.apache.kafka.connect.json.JsonConverter",
    "offset.flush.interval.ms": "10000",
    "task.shutdown.graceful.timeout.ms": "5000",
}
_SINK_MAX_POLL_RECORDS = 500       # Connect's sink consumers: max.poll.records
_RETRY_BACKOFF_S = 1.0             # after a RetriableException
_COALESCE_RECORDS = 8000           # a source's polls written together (see _TaskRunner._poll),
_COALESCE_S = 0.02                 # at most, and for at most this long
_REGEX_REFRESH_S = 2.0             # how often a topics.regex sink looks for new topics
_INTERNAL_TOPICS = ("__", "_streamsql_", "_schemas")

# Connect's ConnectorConfig and SinkConnectorConfig error-handling keys that ``_Tolerance``
# reads: validated with every connector's config and listed by the validate endpoint.
_EH = "Error Handling"
ERROR_KEYS: tuple[ConfigKey, ...] = (
    ConfigKey("errors.retry.timeout", "LONG", 0, False, "MEDIUM",
              "The maximum duration in milliseconds that a failed operation will be reattempted. The default "
              "is 0, which means no retries will be attempted. Use -1 for infinite retries.", _EH, 1, "MEDIUM",
              "Retry Timeout for Errors"),
    ConfigKey("errors.retry.delay.max.ms", "LONG", 60000, False, "MEDIUM",
              "The maximum duration in milliseconds between consecutive retry attempts. Jitter will be added to "
              "the delay once this limit is reached to prevent thundering herd issues.", _EH, 2, "MEDIUM",
              "Maximum Delay Between Retries for Errors"),
    ConfigKey("errors.tolerance", "STRING", "none", False, "MEDIUM",
              "Behavior for tolerating errors during connector operation. 'none' is the default value and signals "
              "that any error will result in an immediate connector task failure; 'all' changes the behavior to "
              "skip over problematic records.", _EH, 3, "SHORT", "Error Tolerance", valid_values=("none", "all")),
    ConfigKey("errors.log.enable", "BOOLEAN", False, False, "MEDIUM",
              "If true, write each error and the details of the failed operation and problematic record to the "
              "Connect application log. This is 'false' by default, so that only errors that are not tolerated "
              "are reported.", _EH, 4, "SHORT", "Log Errors"),
    ConfigKey("errors.log.include.messages", "BOOLEAN", False, False, "MEDIUM",
              "Whether to include in the log the Connect record that resulted in a failure. This is 'false' by "
              "default, which will prevent record keys, values, and headers from being written to log files.",
              _EH, 5, "SHORT", "Log Error Details"),
)
SINK_ERROR_KEYS: tuple[ConfigKey, ...] = (
    ConfigKey("errors.deadletterqueue.topic.name", "STRING", "", False, "MEDIUM",
              "The name of the topic to be used as the dead letter queue (DLQ) for messages that result in an "
              "error when processed by this sink connector, or its transformations or converters. The topic name "
              "is blank by default, which means that no messages are to be recorded in the DLQ.", _EH, 6,
              "MEDIUM", "Dead Letter Queue Topic Name"),
    ConfigKey("errors.deadletterqueue.context.headers.enable", "BOOLEAN", False, False, "MEDIUM",
              "If true, add headers containing error context to the messages written to the dead letter queue. "
              "To avoid clashing with headers from the original record, all error context header keys, all "
              "error context header keys will start with <code>__connect.errors.</code>", _EH, 8, "SHORT",
              "Enable Error Context Headers"),
)


class ConnectRestError(Exception):
    """A request the worker refuses, as Connect's REST API answers it: ``status`` (400, 404,
    409, 500) and ``message``; ``body()`` is Connect's error JSON."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def body(self) -> dict[str, Any]:
        return {"error_code": self.status, "message": self.message}


@dataclass(frozen=True)
class TaskState:
    """One task's status (Connect's ``TaskState``)."""

    id: int
    state: str
    worker_id: str
    trace: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "state": self.state, "worker_id": self.worker_id}
        if self.trace:
            out["trace"] = self.trace
        return out


@dataclass(frozen=True)
class ConnectorStatus:
    """A connector's status and its tasks' (Connect's ``ConnectorStateInfo``)."""

    name: str
    type: str
    state: str
    worker_id: str
    trace: str | None
    tasks: tuple[TaskState, ...]

    def to_json(self) -> dict[str, Any]:
        connector: dict[str, Any] = {"state": self.state, "worker_id": self.worker_id}
        if self.trace:
            connector["trace"] = self.trace
        return {"name": self.name, "connector": connector, "tasks": [t.to_json() for t in self.tasks],
                "type": self.type}


@dataclass(frozen=True)
class ConnectorInfo:
    """A connector's config and task ids (Connect's ``ConnectorInfo``)."""

    name: str
    config: dict[str, str]
    tasks: tuple[int, ...]
    type: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "config": dict(self.config),
                "tasks": [{"connector": self.name, "task": t} for t in self.tasks], "type": self.type}


def _trace(exc: BaseException) -> str:
    """A failure as Connect shows it: the exception's class and message first, then where
    (the connector's frames: the worker's thread hand-off says nothing to a user)."""
    cls = type(exc)
    head = f"{cls.__module__}.{cls.__qualname__}: {exc}"
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if f.filename != __file__ and "/concurrent/" not in f.filename and "/asyncio/" not in f.filename]
    tb = "".join(traceback.format_list(frames))
    cause = exc.__cause__ or exc.__context__
    tail = f"\nCaused by: {type(cause).__module__}.{type(cause).__qualname__}: {cause}" if cause else ""
    return head + "\n" + tb + tail


def _int(config: Mapping[str, str], key: str, default: int) -> int:
    try:
        return int(str(config.get(key, default)).strip())
    except ValueError:
        raise ConnectException(f"Invalid value {config.get(key)} for configuration {key}: "
                               "Not a number of type INT") from None


class _Thread:
    """A task's or connector's own thread: its blocking calls run there, one at a time."""

    def __init__(self, name: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._closed = False

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:  # (a task's stop after its thread was given up on: a thread of its own)
            return await asyncio.to_thread(fn, *args)
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def start(self, fn: Callable[..., T], *args: Any) -> "asyncio.Future[T]":
        """``call``, handed to the thread now (not once the loop next runs a task): what
        runs meanwhile on the loop without yielding overlaps it."""
        if self._closed:
            return asyncio.ensure_future(asyncio.to_thread(fn, *args))
        return asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        # Not waiting: a call stuck in a driver must not hold the worker's loop.
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)


class _TaskContext(SourceTaskContext):
    def __init__(self, storage: ConnectStorage, connector: str) -> None:
        self._storage = storage
        self._connector = connector

    def offset(self, source_partition: Mapping[str, Any]) -> Mapping[str, Any] | None:
        return self._storage.offset(self._connector, source_partition)


class _ConnectorContext(ConnectorContext):
    def __init__(self, worker: "Worker", name: str, loop: asyncio.AbstractEventLoop) -> None:
        self._worker = worker
        self._name = name
        self._loop = loop

    def request_task_reconfiguration(self) -> None:
        # Called from the connector's thread: the new task configs are taken on the loop.
        self._loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._worker._reconfigure(self._name)))

    def raise_error(self, error: Exception) -> None:
        def fail() -> None:
            c = self._worker._connectors.get(self._name)
            if c is not None:
                c.state, c.trace = FAILED, _trace(error)
                asyncio.ensure_future(self._worker._save_status(c))
        self._loop.call_soon_threadsafe(fail)


class _TaskRunner:
    """One task of a connector: its thread, its driver coroutine and its status."""

    def __init__(self, worker: "Worker", connector: "_Connector", task_id: int, config: dict[str, str]) -> None:
        self.worker = worker
        self.connector = connector
        self.id = task_id
        self.config = config
        self.state = UNASSIGNED
        self.trace: str | None = None
        self.thread = _Thread(f"connect-{connector.name}-{task_id}")
        self.task: Task | None = None
        self.driver: asyncio.Task[None] | None = None
        self.stopping = False
        self.resumed = asyncio.Event()
        self.resumed.set()
        self.stop_called = False
        self.started = False  # task.start returned: stop() is due
        self.errors = _Tolerance(worker, connector.name, task_id, config)
        self.deferred: Exception | None = None  # a poll's failure, for the next call (``_poll``)
        # A source task's converters where they may run on its thread (``Converter.thread_safe``).
        self.converters: tuple[Converter, Converter] | None = None
        # A source task's batches, records and offsets at once (``exactly_once``); None: at least once.
        self.writer: exactly_once.SourceBatchWriter | None = None

    @property
    def status_key(self) -> str:
        return f"status-task-{self.connector.name}-{self.id}"

    def start(self, paused: bool) -> None:
        if paused:
            self.resumed.clear()
        kind = self.connector.plugin.type
        run = self._run_source if kind == "source" else self._run_sink
        self.driver = asyncio.create_task(run(), name=f"connect-{self.connector.name}-{self.id}")

    async def _set(self, state: str, trace: str | None = None) -> None:
        self.state, self.trace = state, trace
        await self.worker._save(self.status_key, state, trace)

    def pause(self) -> None:
        self.resumed.clear()

    def resume(self) -> None:
        self.resumed.set()

    async def stop(self) -> None:
        """Stop the task and wait for it (at most ``task.shutdown.graceful.timeout.ms``)."""
        self.stopping = True
        self.resumed.set()
        task = self.task
        if isinstance(task, SourceTask) and self.started and not self.stop_called:
            # From another thread than poll's, as Connect does: poll may be waiting in it.
            self.stop_called = True
            try:
                await asyncio.to_thread(task.stop)
            except Exception:  # noqa: BLE001 - a failing stop must not keep the others running
                log.exception("stopping task %s-%d failed", self.connector.name, self.id)
        if self.driver is not None:
            timeout = self.worker.graceful_timeout_s
            done, _ = await asyncio.wait({self.driver}, timeout=timeout)
            if not done:
                log.warning("task %s-%d did not stop within %.1f s; abandoning its thread",
                            self.connector.name, self.id, timeout)
                self.driver.cancel()
        self.thread.close()
        if self.state not in (FAILED,):
            self.state = UNASSIGNED

    async def _start_task(self, cls: type[Task]) -> tuple[Converter, Converter]:
        keys = make_converter(self.config, self.worker.worker_config, "key", self.worker.registry_for)
        values = make_converter(self.config, self.worker.worker_config, "value", self.worker.registry_for)
        task = cls()
        if isinstance(task, SourceTask):
            task.initialize(_TaskContext(self.worker.storage, self.connector.name))
        self.task = task
        await self.thread.call(task.start, dict(self.config))
        self.started = True
        return keys, values

    async def _wait_resumed(self) -> None:
        if not self.resumed.is_set():
            await self._set(PAUSED)
            await self.resumed.wait()
            if not self.stopping:
                await self._set(RUNNING)

    # --------------------------------------------------------------------------- source
    async def _run_source(self) -> None:
        started = False
        reader: _Reader | None = None
        try:
            if exactly_once.enabled(self.worker.worker_config):
                # Before the task reads its offsets: on Kafka this fences its last owner.
                self.writer = exactly_once.writer_for(
                    self.worker.log, self.worker.storage, self.worker.placement_group, self.connector.name, self.id)
                if self.writer is not None:
                    await self.writer.open()
            keys, values = await self._start_task(self.connector.plugin.connector_task_class)
            started = True
            task = self.task
            assert isinstance(task, SourceTask)
            if keys.thread_safe and values.thread_safe:
                self.converters = (keys, values)
            await self._set(RUNNING if self.resumed.is_set() else PAUSED)
            # A task without a commit of its own polls on, on its thread, while what it read
            # is written (``_Reader``). One with a commit is told after each write, before it
            # polls again.
            commits = type(task).commit is not SourceTask.commit
            if not commits:
                reader = _Reader(self, task)
            while not self.stopping:
                await self._wait_resumed()
                if self.stopping:
                    break
                try:
                    records = await (reader.next() if reader is not None else self.thread.call(self._poll, task))
                except RetriableException as exc:
                    log.warning("task %s-%d: %s; retrying", self.connector.name, self.id, exc)
                    await asyncio.sleep(_RETRY_BACKOFF_S)
                    continue
                if not records:
                    continue
                if not await self._send(records, keys, values):
                    break
                if commits:
                    await self.thread.call(task.commit)
        except asyncio.CancelledError:
            raise
        except exactly_once.Fenced as exc:
            if await self._still_owned():
                # Not a zombie (its transaction timed out, say): a failure, as in Connect.
                log.error("task %s-%d failed: %s", self.connector.name, self.id, exc)
                await self._set(FAILED, _trace(exc))
            else:
                # A zombie: the task runs elsewhere now, whose status is the one that counts.
                log.warning("task %s-%d stopped: %s", self.connector.name, self.id, exc)
                self.state = UNASSIGNED
        except Exception as exc:  # noqa: BLE001 - a task's failure is its status, not the worker's
            log.error("task %s-%d failed: %s", self.connector.name, self.id, exc)
            await self._set(FAILED, _trace(exc))
        finally:
            if reader is not None:
                # Stopped (or failed) with batches read ahead: not written, so their offsets
                # are not stored either, and they are read again next time.
                reader.close()
            if self.writer is not None:
                try:
                    await self.writer.close()
                except Exception:  # noqa: BLE001 - stopping anyway
                    log.exception("closing the writer of task %s-%d failed", self.connector.name, self.id)
            if started and not self.stop_called and self.task is not None:
                self.stop_called = True
                try:
                    await self.thread.call(self.task.stop)
                except Exception:  # noqa: BLE001
                    log.exception("stopping task %s-%d failed", self.connector.name, self.id)

    async def _still_owned(self, wait_s: float = 3.0) -> bool:
        """Whether this worker still runs the task once the group had a moment
        to tell it otherwise (a fenced task is most likely a zombie about to be revoked)."""
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if self.stopping or not self.worker.owns_task(self.connector.name, self.id):
                return False
            await asyncio.sleep(0.2)
        return not self.stopping and self.worker.owns_task(self.connector.name, self.id)

    def _poll(self, task: SourceTask) -> list[Sequence[SourceRecord]] | None:
        """On the task's thread: ``poll()``, and again while it says it has more records at
        once (a ``SourceRecordBatch`` with ``more``; up to ``_COALESCE_RECORDS`` records or
        ``_COALESCE_S``): the worker's costs per write (a thread hop, a produce, an offsets
        write) are paid per few thousand records instead of per ``batch.max.rows``; a poll
        that might wait is never called while records wait. A poll that fails after others
        returned records fails the next call instead, so those are written first."""
        failed, self.deferred = self.deferred, None
        if failed is not None:
            raise failed
        last = task.poll()
        if not last:
            return None
        out = [last]
        n = len(last)
        deadline = time.monotonic() + _COALESCE_S
        while isinstance(last, SourceRecordBatch) and last.more and n < _COALESCE_RECORDS and \
                not self.stopping and time.monotonic() < deadline:
            try:
                last = task.poll()
            except Exception as exc:  # noqa: BLE001 - raised by the next call, after these are written
                self.deferred = exc
                break
            if not last:
                break
            out.append(last)
            n += len(last)
        return self._convert(out) if self.converters is not None else out

    def _convert(self, polled: list[Sequence[SourceRecord]]) -> list[Sequence[SourceRecord]]:
        """On the task's thread: its batches (``_merged``) converted there, beside its reads,
        rather than on the event loop: one thread reads and converts while the loop only
        writes, instead of both contending for the GIL (the driver lets go of it per row).
        A batch that does not convert is left as it is, for ``_send`` to convert a record at
        a time (``errors.tolerance`` judges each there)."""
        assert self.converters is not None
        keys, values = self.converters
        runs = _merged(polled)
        for i, run in enumerate(runs):
            if isinstance(run, SourceRecordBatch) and run.topic:
                try:
                    key, converted = self.worker._convert_batch(run, keys, values)
                except Exception:  # noqa: BLE001 - converted again on the loop, where failures are handled
                    continue
                runs[i] = _Converted(run, key, converted)
        return runs

    async def _send(self, records: list[Sequence[SourceRecord]], keys: Converter, values: Converter) -> bool:
        """Write polls' records (and then their offsets), trying again while the Log refuses
        the write (a full disk: the embedded log takes nothing of a failed write, and goes on
        once there is space) from the run that failed: the runs written are not written
        again. False if the task is stopped meanwhile: the records were not written whole,
        and their offsets not stored, so they are read again next time."""
        runs = _merged(records)
        offsets: dict[bytes, Mapping[str, Any]] = {}
        while True:
            try:
                await self.worker._send(self, runs, keys, values, offsets)
                return True
            except OSError as exc:
                log.warning("task %s-%d: writing to the log failed (%s); trying again",
                            self.connector.name, self.id, exc)
                await asyncio.sleep(_RETRY_BACKOFF_S)
                if self.stopping:
                    return False

    # ----------------------------------------------------------------------------- sink
    async def _run_sink(self) -> None:
        consumer = None
        started = False
        pending: dict[tuple[str, int], int] = {}
        try:
            topics = await self.worker._sink_topics(self.config)
            keys, values = await self._start_task(self.connector.plugin.connector_task_class)
            started = True
            task = self.task
            assert isinstance(task, SinkTask)
            for t in topics:
                await self.worker._note_topic(self.connector, t, self.id)
            consumer = self.worker.log.consumer(f"connect-{self.connector.name}", topics, reset="earliest")
            await self._set(RUNNING if self.resumed.is_set() else PAUSED)
            interval = self.worker.flush_interval_s
            last_flush = last_match = time.monotonic()
            regex = bool(str(self.config.get("topics.regex", "")).strip())
            while not self.stopping:
                if not self.resumed.is_set():
                    # Paused: the partitions are, but the consumer keeps polling, so it stays
                    # in its group (Kafka drops a member that stops polling).
                    consumer.pause(consumer.assignment())
                    if self.state != PAUSED:
                        await self._set(PAUSED)
                    for b in await consumer.poll(_SINK_MAX_POLL_RECORDS, timeout=0.5):
                        # Fetched as the pause came: read again once resumed, not skipped.
                        consumer.seek(b.topic, b.partition, b.offsets[0])
                    continue
                if self.state == PAUSED:
                    consumer.resume(consumer.assignment())
                    await self._set(RUNNING)
                batches = await consumer.poll(_SINK_MAX_POLL_RECORDS, timeout=0.5)
                records: list[SinkRecord] = []
                for b in batches:
                    headers = b.headers
                    for i, off in enumerate(b.offsets):
                        try:
                            stage = "KEY_CONVERTER"
                            ks, k = keys.to_connect_data(b.topic, b.keys[i])
                            stage = "VALUE_CONVERTER"
                            vs, v = values.to_connect_data(b.topic, b.values[i])
                        except Exception as exc:  # noqa: BLE001 - errors.tolerance decides
                            await self.errors.tolerate(exc, stage, keys if stage == "KEY_CONVERTER" else values,
                                                       b, i)
                            continue
                        records.append(SinkRecord(b.topic, b.partition, ks, k, vs, v, off, b.timestamps[i],
                                                  headers[i] if headers else ()))
                if records:
                    await self.thread.call(task.put, records)
                for b in batches:  # (records skipped by errors.tolerance are done with too)
                    pending[(b.topic, b.partition)] = b.offsets[-1] + 1
                if pending and time.monotonic() - last_flush >= interval:
                    await self._flush(task, consumer, pending)
                    pending = {}
                    last_flush = time.monotonic()
                if regex and time.monotonic() - last_match >= _REGEX_REFRESH_S:
                    last_match = time.monotonic()
                    matched = await self.worker._sink_topics(self.config)
                    if matched != topics:
                        # New topics match topics.regex: the group consumer is made again over
                        # them (the group's commits say where each topic goes on).
                        if pending:
                            await self._flush(task, consumer, pending)
                            pending = {}
                        await consumer.close()
                        topics = matched
                        for t in topics:
                            await self.worker._note_topic(self.connector, t, self.id)
                        consumer = self.worker.log.consumer(f"connect-{self.connector.name}", topics,
                                                            reset="earliest")
            if pending:
                await self._flush(task, consumer, pending)
                pending = {}
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a task's failure is its status, not the worker's
            log.error("task %s-%d failed: %s", self.connector.name, self.id, exc)
            await self._set(FAILED, _trace(exc))
        finally:
            if consumer is not None:
                await consumer.close()
            if started and self.task is not None and not self.stop_called:
                self.stop_called = True
                try:
                    await self.thread.call(self.task.stop)
                except Exception:  # noqa: BLE001
                    log.exception("stopping task %s-%d failed", self.connector.name, self.id)

    async def _flush(self, task: SinkTask, consumer: Any, pending: dict[tuple[str, int], int]) -> None:
        # The offsets are committed only once the task says what it was given is durable.
        await self.thread.call(task.flush, dict(pending))
        await consumer.commit(dict(pending))


class _Tolerance:
    """Connect's error handling for records that do not convert: with ``errors.tolerance``
    ``none`` (the default) the task fails; with ``all`` the record is skipped, logged with
    ``errors.log.enable`` (its key and value too with ``errors.log.include.messages``) and, for
    a sink, written as it was read to ``errors.deadletterqueue.topic.name``, with Connect's
    ``__connect.errors.*`` headers if ``errors.deadletterqueue.context.headers.enable``."""

    def __init__(self, worker: "Worker", connector: str, task_id: int, config: Mapping[str, str]) -> None:
        self.worker = worker
        self.connector = connector
        self.task_id = task_id
        self.tolerate_all = config.get("errors.tolerance", "none").strip().lower() == "all"
        self.log_errors = config.get("errors.log.enable", "false").strip().lower() == "true"
        self.log_messages = config.get("errors.log.include.messages", "false").strip().lower() == "true"
        self.dlq = config.get("errors.deadletterqueue.topic.name", "").strip()
        self.dlq_headers = config.get("errors.deadletterqueue.context.headers.enable",
                                      "false").strip().lower() == "true"

    async def tolerate(self, exc: Exception, stage: str, component: Any, batch: Any = None, i: int = 0) -> None:
        """Raise ``exc`` unless tolerated; else report the record (``batch``'s ``i``th, for a
        sink) that ``component`` (the converter) failed on, as configured."""
        if not self.tolerate_all:
            raise exc
        if self.log_errors:
            where = f" of {batch.topic}-{batch.partition}@{batch.offsets[i]}" if batch is not None else ""
            what = f" key {batch.keys[i]!r} value {batch.values[i]!r}" if batch is not None and self.log_messages else ""
            log.error("Error encountered in task %s-%d at stage %s%s:%s %s", self.connector, self.task_id,
                      stage, where, what, exc)
        if batch is None or not self.dlq:
            return
        headers = list(batch.headers[i]) if batch.headers else []
        if self.dlq_headers:
            cls = type(exc)
            context = {"topic": batch.topic, "partition": str(batch.partition), "offset": str(batch.offsets[i]),
                       "connector.name": self.connector, "task.id": str(self.task_id), "stage": stage,
                       "class.name": _connect_class(component), "exception.class.name": f"{cls.__module__}.{cls.__qualname__}",
                       "exception.message": str(exc), "exception.stacktrace": _trace(exc)}
            headers += [(f"__connect.errors.{k}", v.encode()) for k, v in context.items()]
        await self.worker._ensure_topic(self.dlq)
        await self.worker.log.produce(self.dlq, [ProducerRecord(batch.keys[i], batch.values[i], batch.timestamps[i],
                                                                tuple(headers))])


def _connect_class(component: Any) -> str:
    """The Connect class name of a converter (its Python class's where it has none)."""
    from streamsql.runtime.connect.converters import CONVERTERS

    cls = type(component)
    return next((n for n, c in CONVERTERS.items() if c is cls), f"{cls.__module__}.{cls.__qualname__}")


@dataclass
class _Connector:
    """A connector whose instance this worker runs (its config, instance and state), or, with
    no instance, the connector side of a task it runs (its name, plugin and topics)."""

    name: str
    config: dict[str, str]
    plugin: Any
    state: str = UNASSIGNED
    trace: str | None = None
    instance: Connector | None = None
    thread: _Thread | None = None
    topics: set[str] = field(default_factory=set)


class _PluginView:
    """A plugin with its task class resolved lazily (the connector's, once started)."""

    def __init__(self, plugin: Any, instance: Connector | None) -> None:
        self.plugin = plugin
        self.instance = instance
        self.class_name = plugin.class_name
        self.type = plugin.type

    @property
    def connector_task_class(self) -> type[Task]:
        assert self.instance is not None
        return self.instance.task_class()


class Worker:
    """See the module docstring. ``worker_id`` names this worker in statuses (Connect's
    host:port); ``config`` is the worker's config (converters, ``offset.flush.interval.ms``)."""

    def __init__(self, log_: Log, service_id: str, worker_id: str, config: Mapping[str, str] | None = None,
                 plugins: PluginRegistry | None = None, replicas: int = 1, schema_registry: Any = None,
                 registry_urls: Sequence[str] = ()) -> None:
        self.log = log_
        # The engine's schema registry, and the URLs that name it (see ``registry_for``).
        self.schema_registry = schema_registry
        self._registry_urls = {u.strip().rstrip("/") for u in registry_urls if u.strip()}
        self._registries: dict[str, Any] = {}
        self.worker_id = worker_id
        self.worker_config = {**DEFAULT_WORKER_CONFIG, **{k: str(v) for k, v in (config or {}).items()}}
        self.registry = plugins or default_registry()
        self.storage = ConnectStorage(log_, service_id, replicas)
        self.flush_interval_s = _int(self.worker_config, "offset.flush.interval.ms", 10000) / 1000
        self.graceful_timeout_s = _int(self.worker_config, "task.shutdown.graceful.timeout.ms", 5000) / 1000
        # The connectors whose instance runs here, and the tasks that run here (of any
        # connector, by (name, id)): on a cluster the two are placed independently.
        self._connectors: dict[str, _Connector] = {}
        self._tasks: dict[tuple[str, int], _TaskRunner] = {}
        # Per connector, the last restart request (``ConnectStorage.restarts``) acted on.
        self._restarts_seen: dict[str, int] = {}
        self._known_topics: set[str] = set()
        self._lock = asyncio.Lock()
        self.running = False
        self.service_id = service_id
        # Connector statements replayed from the command log, last one per name (a config
        # for CREATE, None for DROP): see ``note_replayed``.
        self._replayed: dict[str, dict[str, str] | None] = {}
        self._replayed_masked: set[str] = set()
        # On a Log shared by several nodes: the placement partitions this worker owns, and
        # the loops that keep it in its group and follow the other workers' writes.
        self.distributed = bool(getattr(log_, "distributed", False))
        self._owned: set[int] = set()
        self._background: list[asyncio.Task[None]] = []
        self._joined = False

    @property
    def placement_group(self) -> str:
        """The workers' consumer group (Connect's ``group.id``)."""
        return f"_streamsql_{self.service_id}connect-workers"

    def registry_for(self, url: str) -> Any:
        """The schema registry client of a converter's ``schema.registry.url``: the engine's
        own registry (in process) for a URL ending in ``/schema-registry``, where
        ``streamsql server`` serves it, or for the engine's ``ksql.schema.registry.url``;
        else a client of that Confluent Schema Registry over HTTP (one per URL)."""
        from streamsql.runtime.connect.registry_converters import BUILTIN_REGISTRY_PATH

        url = url.strip().rstrip("/")
        if self.schema_registry is not None and (url.endswith(BUILTIN_REGISTRY_PATH) or url in self._registry_urls):
            return self.schema_registry
        client = self._registries.get(url)
        if client is None:
            from streamsql.schemaregistry.http import HttpSchemaRegistryClient

            client = self._registries[url] = HttpSchemaRegistryClient(url)
        return client

    # ------------------------------------------------------------------------ lifecycle
    async def load(self) -> None:
        """Read the stored configs and offsets (once), where there are any; nothing runs
        yet. The topics are made by the first connector created (``_activate``)."""
        await self.storage.start(create=False)

    async def _activate(self) -> None:
        """The storage topics exist and, on a shared Log, this worker is in the group."""
        await self.storage.start(create=True)
        if self.running and self.distributed:
            self._join()

    def _join(self) -> None:
        if self._joined:
            return
        self._joined = True
        self._background += [asyncio.create_task(self._place(), name="connect-placement"),
                             asyncio.create_task(self._follow(), name="connect-follow")]

    def note_replayed(self, name: str, config: Mapping[str, str] | None) -> None:
        """A CREATE (``config``) or DROP (None) CONNECTOR replayed from the command log.
        ``start`` creates the connectors whose last statement is a CREATE and that the
        configs topic has no record of (lost, or never written): otherwise the configs topic
        is right, whatever changed it since (Connect's REST API included)."""
        self._replayed[name] = dict(config) if config is not None else None

    def note_replayed_masked(self, name: str) -> None:
        """A CREATE CONNECTOR replayed from the command log whose text has masked secrets
        (``streamsql.masking``): its config is only in the configs topic, so nothing is
        created from it (``start`` says so if that topic has no record of it)."""
        self._replayed.pop(name, None)
        self._replayed_masked.add(name)

    async def start(self) -> None:
        """Run every stored connector (in its target state); later ones run as created. On
        a shared Log the connectors are spread over the workers of the service by a
        consumer group (see ``_Placement``), and each follows the others' writes."""
        await self.storage.start(create=any(c is not None for c in self._replayed.values()))
        for name, config in sorted(self._replayed.items()):
            if config is not None and name not in self.storage.seen:
                try:
                    await self.storage.put_connector(name, self.check_config(name, config))
                except ConnectRestError as exc:
                    log.warning("connector %s of the command log not created: %s", name, exc.message)
        for name in sorted(self._replayed_masked - set(self._replayed) - self.storage.seen):
            log.warning("connector %s of the command log not created: its secrets are masked there, and "
                        "the configs topic has no record of it", name)
        self._replayed.clear()
        self._replayed_masked.clear()
        self._restarts_seen = {name: n for name, (n, _, _) in self.storage.restarts.items()}
        async with self._lock:
            self.running = True
            if not self.distributed:
                for name in sorted(self.storage.configs):
                    if name not in self._connectors:
                        await self._start_connector(name)
                await self._reconcile_tasks()
                return
        if self.storage.started:
            self._join()
        else:
            self._background = [asyncio.create_task(self._wake(), name="connect-wake")]

    async def _wake(self) -> None:
        """Without connectors yet, on a shared Log: join the workers once another node made
        the first one (its configs topic appears)."""
        while not self._joined and not await self.storage.start(create=False):
            await asyncio.sleep(5.0)
        self._restarts_seen = {name: n for name, (n, _, _) in self.storage.restarts.items()}
        self._join()

    async def close(self) -> None:
        """Stop every connector and task (their configs and offsets stay)."""
        for task in self._background:
            task.cancel()
        for task in self._background:
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - stopping anyway
                pass
        self._background = []
        self._joined = False
        async with self._lock:
            self.running = False
            await asyncio.gather(*(t.stop() for t in list(self._tasks.values())))
            self._tasks.clear()
            await asyncio.gather(*(self._stop_connector(c) for c in list(self._connectors.values())))
            self._connectors.clear()

    # ------------------------------------------------------------------------- cluster
    PLACEMENT_PARTITIONS = 32

    def owns(self, name: str) -> bool:
        """Whether this worker runs connector ``name``'s instance (every one, on an unshared
        Log)."""
        if not self.distributed:
            return True
        return self._partition(name, 0, 1) in self._owned

    def owns_task(self, name: str, task_id: int, count: int | None = None) -> bool:
        """Whether this worker runs task ``task_id`` of connector ``name`` (of ``count``
        tasks; by default as many as its committed task configs)."""
        if not self.distributed:
            return True
        if count is None:
            count = len(self.storage.task_configs.get(name, ()))
        return self._partition(name, task_id, max(count, task_id + 1)) in self._owned

    def _partition(self, name: str, task_id: int, count: int) -> int:
        """The placement partition of a connector's task (task 0's is the instance's): the
        tasks as far apart as they can be, so that contiguous ranges of partitions (the
        group's range assignment) hold one task each when there are as many workers."""
        p = self.PLACEMENT_PARTITIONS
        return ((murmur2(name.encode()) & 0x7FFFFFFF) % p + task_id * p // count) % p

    async def _place(self) -> None:
        """Stay in the workers' consumer group over the placement topic: a partition's owner
        runs the connectors that hash to it, and a worker that leaves (or dies) has its
        partitions, hence its connectors, taken over by the others."""
        topic = f"_streamsql_{self.service_id}connect-placement"
        if await self.log.describe_topic(topic) is None:
            try:
                await self.log.create_topic(topic, self.PLACEMENT_PARTITIONS, self.storage.replicas)
            except TopicExistsError:
                pass
        consumer = self.log.consumer(self.placement_group, [topic],
                                     _Placement(self), reset="latest")
        try:
            while True:
                await consumer.poll(100, timeout=1.0)
        finally:
            await consumer.close()

    async def _follow(self) -> None:
        """Apply what the other workers wrote: new, changed, paused and deleted connectors."""
        while True:
            await asyncio.sleep(1.0)
            try:
                async with self._lock:
                    await self.storage.refresh()
                    await self._reconcile()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the next round tries again
                log.exception("following the connect topics failed")

    async def _reconcile(self) -> None:
        """Run exactly the connector instances and tasks this worker owns, with their stored
        configs and target states (called with the lock held)."""
        if not self.running:
            return
        for name, c in list(self._connectors.items()):
            config = self.storage.configs.get(name)
            if config is None or not self.owns(name) or config != c.config:
                del self._connectors[name]
                await self._stop_connector(c)
        for name in sorted(self.storage.configs):
            if not self.owns(name):
                continue
            c = self._connectors.get(name)
            target = self.storage.target_states.get(name, TARGET_STARTED)
            if c is None:
                await self._start_connector(name)
            elif (target == TARGET_STOPPED) != (c.state == STOPPED):
                del self._connectors[name]
                await self._stop_connector(c)
                await self._start_connector(name)
            elif c.state != FAILED and c.state != STOPPED:
                want = PAUSED if target == TARGET_PAUSED else RUNNING
                if c.state != want:
                    c.state = want
                    await self._save_status(c)
        await self._reconcile_tasks()

    async def _reconcile_tasks(self, only: str | None = None) -> None:
        """Run exactly the tasks this worker owns (of connector ``only``, or all), each with
        its committed config and in its connector's target state; start again those whose
        config changed and those a restart request names (called with the lock held)."""
        if not self.running:
            return
        storage = self.storage
        want: dict[tuple[str, int], dict[str, str]] = {}
        for name, configs in storage.task_configs.items():
            if (only is not None and name != only) or name not in storage.configs or \
                    storage.target_states.get(name) == TARGET_STOPPED:
                continue
            for i, config in enumerate(configs):
                if self.owns_task(name, i, len(configs)):
                    want[(name, i)] = config
        gone = [key for key, t in self._tasks.items()
                if (only is None or key[0] == only) and want.get(key) != t.config]
        if gone:
            await asyncio.gather(*(self._tasks.pop(key).stop() for key in gone))
        for key, config in sorted(want.items()):
            paused = storage.target_states.get(key[0]) == TARGET_PAUSED
            t = self._tasks.get(key)
            if t is None:
                self._start_task(key[0], key[1], config, paused)
            elif paused:
                t.pause()
            else:
                t.resume()
        for name, (n, include_tasks, only_failed) in list(storage.restarts.items()):
            if (only is not None and name != only) or n <= self._restarts_seen.get(name, 0):
                continue
            self._restarts_seen[name] = n
            if include_tasks:
                for key, t in sorted(self._tasks.items()):
                    if key[0] == name and (not only_failed or t.state == FAILED):
                        await self._restart_task(t)

    async def _assigned(self, partitions: set[int]) -> None:
        async with self._lock:
            self._owned |= partitions
            # The last owner's offsets and statuses: read them before going on from them.
            await self.storage.refresh()
            await self._reconcile()

    async def _revoked(self, partitions: set[int]) -> None:
        async with self._lock:
            self._owned -= partitions
            await self._reconcile()

    # ---------------------------------------------------------------------------- reads
    def plugins(self) -> list[Any]:
        return self.registry.plugins()

    def connectors(self) -> list[str]:
        return sorted(self.storage.configs)

    def has(self, name: str) -> bool:
        return name in self.storage.configs

    def config(self, name: str) -> dict[str, str]:
        self._check(name)
        return dict(self.storage.configs[name])

    def connector_type(self, name: str) -> str:
        try:
            return self.registry.find(self.storage.configs[name].get("connector.class", "")).type
        except ConnectException:
            return "unknown"

    def info(self, name: str) -> ConnectorInfo:
        self._check(name)
        tasks = tuple(range(len(self._committed(name))))
        return ConnectorInfo(name, self.config(name), tasks, self.connector_type(name))

    def _committed(self, name: str) -> list[dict[str, str]]:
        """The connector's committed task configs (none while it is stopped)."""
        if self.storage.target_states.get(name) == TARGET_STOPPED:
            return []
        return self.storage.task_configs.get(name, [])

    def status(self, name: str) -> ConnectorStatus:
        """The connector's status and each of its tasks', from where they run: this
        worker's own, the others' as they wrote them to the status topic (a task no worker
        has reported on yet is left out, as in Connect)."""
        self._check(name)
        statuses = self.storage.statuses
        c = self._connectors.get(name)
        if c is not None:
            kind, state, worker_id, trace = c.plugin.type, c.state, self.worker_id, c.trace
        else:
            own = statuses.get(f"status-connector-{name}")
            kind = self.connector_type(name)
            state, worker_id, trace = (UNASSIGNED, self.worker_id, None) if own is None else \
                (own["state"], own.get("worker_id", ""), own.get("trace"))
        tasks = []
        for i in range(len(self._committed(name))):
            t = self._tasks.get((name, i))
            if t is not None:
                tasks.append(TaskState(i, t.state, self.worker_id, t.trace))
            elif (stored := statuses.get(f"status-task-{name}-{i}")) is not None:
                tasks.append(TaskState(i, stored["state"], stored.get("worker_id", ""), stored.get("trace")))
        return ConnectorStatus(name, kind, state, worker_id, trace, tuple(tasks))

    def task_status(self, name: str, task_id: int) -> TaskState:
        for t in self.status(name).tasks:
            if t.id == task_id:
                return t
        raise ConnectRestError(404, f"No status found for task {name}-{task_id}")

    def task_configs(self, name: str) -> list[dict[str, str]]:
        """The committed task configs (as the configs topic has them, on any worker)."""
        self._check(name)
        return [dict(t) for t in self._committed(name)]

    def topics(self, name: str) -> list[str]:
        """The topics the connector has used since it was created (or its topics reset),
        on whichever worker it ran."""
        self._check(name)
        return self.storage.topics(name)

    def _check(self, name: str) -> None:
        if name not in self.storage.configs:
            raise ConnectRestError(404, f"Connector {name} not found")

    # --------------------------------------------------------------------------- writes
    def validate(self, config: Mapping[str, str]) -> list[str]:
        """Connect's validation of a connector config: the errors (empty if none). An unknown
        class or none raises ``ConnectRestError`` as Connect answers it."""
        return [e for errors in self.validate_keys(config).values() for e in errors]

    def validate_keys(self, config: Mapping[str, str]) -> dict[str, list[str]]:
        """``validate``'s errors by the config key each is about (Connect's ConfigValues:
        a sink's topics errors on both ``topics`` and ``topics.regex``, counted once in
        ``validate``)."""
        cls_name = config.get("connector.class")
        if not cls_name:
            raise ConnectRestError(400, f"Connector config {_java_map(config)} contains no connector type")
        try:
            plugin = self.registry.find(cls_name)
        except ConnectException as exc:
            raise ConnectRestError(500, str(exc)) from None
        errors: dict[str, list[str]] = {}
        raw = config.get("tasks.max", "1")
        try:
            if int(str(raw).strip()) < 1:
                errors["tasks.max"] = [f"Invalid value {raw} for configuration tasks.max: Value must be at least 1"]
        except ValueError:
            errors["tasks.max"] = [f"Invalid value {raw} for configuration tasks.max: Not a number of type INT"]
        for which in ("key", "value"):
            if config.get(f"{which}.converter"):
                try:
                    make_converter(config, self.worker_config, which, self.registry_for)
                except ConnectException as exc:
                    errors.setdefault(f"{which}.converter", []).append(str(exc))
        if plugin.type == "sink":
            has_topics = bool(str(config.get("topics", "")).strip())
            has_regex = bool(str(config.get("topics.regex", "")).strip())
            if has_topics and has_regex:
                errors["topics"] = ["topics and topics.regex are mutually exclusive options, but both are set."]
            elif not has_topics and not has_regex:
                errors["topics"] = ["Must configure one of topics or topics.regex"]
        error_keys = ERROR_KEYS + (SINK_ERROR_KEYS if plugin.type == "sink" else ())
        for key in (*error_keys, *plugin.connector().config()):
            found = key.validate_value(config.get(key.name))
            if found:
                errors.setdefault(key.name, []).extend(found)
        return errors

    async def create(self, name: str, config: Mapping[str, str]) -> ConnectorInfo:
        """Create and start a connector (Connect's POST /connectors); 409 if it exists."""
        await self._activate()
        async with self._lock:
            if name in self.storage.configs:
                raise ConnectRestError(409, f"Connector {name} already exists")
            await self._put(name, config)
        return self.info(name)

    async def create_in_state(self, name: str, config: Mapping[str, str], target: str) -> ConnectorInfo:
        """``create`` with Connect 3.5's ``initial_state`` (``TARGET_PAUSED``,
        ``TARGET_STOPPED``): the target state is stored first, so the tasks never poll."""
        await self._activate()
        async with self._lock:
            if name in self.storage.configs:
                raise ConnectRestError(409, f"Connector {name} already exists")
            config = self.check_config(name, config)  # (before any write: nothing left if invalid)
            await self.storage.put_target_state(name, target)
            await self._put(name, config)
        return self.info(name)

    async def put_config(self, name: str, config: Mapping[str, str]) -> tuple[bool, ConnectorInfo]:
        """Create or reconfigure a connector (Connect's PUT /connectors/{name}/config);
        returns whether it was created."""
        await self._activate()
        async with self._lock:
            created = name not in self.storage.configs
            await self._put(name, config)
        return created, self.info(name)

    def check_config(self, name: str, config: Mapping[str, str]) -> dict[str, str]:
        """The config a connector ``name`` would run with (``name`` added, as Connect does),
        or the ``ConnectRestError`` Connect answers an invalid one with."""
        if not name or not name.strip():
            raise ConnectRestError(400, "Connector name is required")
        config = {str(k): str(v) for k, v in config.items()}
        config["name"] = name
        errors = self.validate(config)
        if errors:
            raise ConnectRestError(400, "Connector configuration is invalid and contains the following "
                                        f"{len(errors)} error(s):\n" + "\n".join(errors) + "\nYou can also "
                                        "find the above list of errors at the endpoint "
                                        "`/connector-plugins/{connectorType}/config/validate`")
        return config

    async def _put(self, name: str, config: Mapping[str, str]) -> None:
        config = self.check_config(name, config)
        old = self._connectors.pop(name, None)
        if old is not None:
            await self._stop_connector(old)
        await self.storage.put_connector(name, config)
        if self.running and self.owns(name):
            await self._start_connector(name)

    async def delete(self, name: str) -> None:
        """Stop and forget a connector (Connect's DELETE); its source offsets stay, as in
        Connect, so a connector created again under the name resumes where it was."""
        await self.load()
        async with self._lock:
            self._check(name)
            c = self._connectors.pop(name, None)
            keys = [f"status-connector-{name}"]
            keys += [k for k in self.storage.statuses if k.startswith(f"status-task-{name}-")]
            if c is not None:
                await self._stop_connector(c)
            tasks = [self._tasks.pop(k) for k in sorted(self._tasks) if k[0] == name]
            await asyncio.gather(*(t.stop() for t in tasks))
            keys += [t.status_key for t in tasks if t.status_key not in keys]
            await self.storage.delete_connector(name)
            await self.storage.delete_statuses(keys)
            await self.storage.delete_topics(name)

    async def pause(self, name: str) -> None:
        await self._target(name, TARGET_PAUSED)

    async def resume(self, name: str) -> None:
        await self._target(name, TARGET_STARTED)

    async def stop_connector(self, name: str) -> None:
        """Connect's PUT /connectors/{name}/stop: connector and tasks shut down, config kept."""
        await self._target(name, TARGET_STOPPED)

    async def _target(self, name: str, target: str) -> None:
        await self.load()
        async with self._lock:
            self._check(name)
            previous = self.storage.target_states.get(name, TARGET_STARTED)
            await self.storage.put_target_state(name, target)
            if target == TARGET_STOPPED and previous != TARGET_STOPPED:
                # As Connect 3.5: a stopped connector has no tasks (an empty set is committed;
                # its instance computes them again once started).
                await self._publish_tasks(name, [])
            c = self._connectors.get(name)
            if c is not None and self.running:
                if target == TARGET_STOPPED or previous == TARGET_STOPPED:
                    del self._connectors[name]
                    await self._stop_connector(c)
                    await self._start_connector(name)
                elif c.state != FAILED:
                    c.state = PAUSED if target == TARGET_PAUSED else RUNNING
                    await self._save_status(c)
            await self._reconcile_tasks(name)  # (paused or resumed here; the others follow)

    async def restart(self, name: str, include_tasks: bool = False, only_failed: bool = False) -> ConnectorStatus:
        """Connect's POST /connectors/{name}/restart: the connector (and, with
        ``include_tasks``, its tasks; with ``only_failed``, only those FAILED)."""
        await self.load()
        async with self._lock:
            self._check(name)
            c = self._connectors.get(name)
            if c is not None and self.running:
                if c.state == FAILED:
                    # A failed connector has nothing worth keeping: start it afresh.
                    del self._connectors[name]
                    await self._stop_connector(c)
                    await self._start_connector(name)
                elif not only_failed:
                    await self._restart_instance(c)
            if include_tasks:
                # Its tasks run wherever they were placed: each worker restarts its own on
                # reading the request (this one at once).
                await self.storage.put_restart(name, include_tasks, only_failed)
                await self.storage.refresh()
                await self._reconcile_tasks(name)
        return self.status(name)

    async def restart_task(self, name: str, task_id: int) -> None:
        """Connect's POST /connectors/{name}/tasks/{id}/restart."""
        await self.load()
        async with self._lock:
            self._check(name)
            task = self._tasks.get((name, task_id))
            if task is None:
                raise ConnectRestError(404, f"Task {name}-{task_id} not found")
            await self._restart_task(task)

    async def reset_topics(self, name: str) -> None:
        """Connect's PUT /connectors/{name}/topics/reset."""
        self._check(name)
        await self.storage.delete_topics(name)
        for (connector, _), t in self._tasks.items():
            if connector == name:
                t.connector.topics.clear()  # (noted again as its tasks use them)

    # ------------------------------------------------------------------------ internals
    async def _save(self, key: str, state: str, trace: str | None) -> None:
        try:
            await self.storage.put_status(key, state, trace, self.worker_id)
        except Exception:  # noqa: BLE001 - a status that cannot be written must not fail the task
            log.exception("writing status %s failed", key)

    async def _save_status(self, c: _Connector) -> None:
        await self._save(f"status-connector-{c.name}", c.state, c.trace)

    async def _start_connector(self, name: str) -> None:
        """Start the connector's instance here, which commits its task configs, then run
        those of its tasks this worker owns."""
        await self._start_instance(name)
        await self._reconcile_tasks(name)

    async def _start_instance(self, name: str) -> None:
        config = dict(self.storage.configs[name])
        target = self.storage.target_states.get(name, TARGET_STARTED)
        try:
            plugin = self.registry.find(config.get("connector.class", ""))
        except ConnectException as exc:
            c = _Connector(name, config, _Unknown(), FAILED, _trace(exc))
            self._connectors[name] = c
            await self._save_status(c)
            return
        instance = plugin.connector()
        view = _PluginView(plugin, instance)
        c = _Connector(name, config, view, instance=instance, thread=_Thread(f"connect-{name}"))
        self._connectors[name] = c
        if target == TARGET_STOPPED:
            c.state = STOPPED
            await self._save_status(c)
            return
        try:
            instance.initialize(_ConnectorContext(self, name, asyncio.get_running_loop()))
            await c.thread.call(instance.start, config)
            configs = await self._task_configs_of(c)
        except Exception as exc:  # noqa: BLE001 - a connector's failure is its status
            log.error("connector %s failed to start: %s", name, exc)
            c.state, c.trace = FAILED, _trace(exc)
            await self._save_status(c)
            return
        c.state = PAUSED if target == TARGET_PAUSED else RUNNING
        await self._save_status(c)
        await self._publish_tasks(name, configs)

    async def _task_configs_of(self, c: _Connector) -> list[dict[str, str]]:
        """The running instance's task configs, each over the connector's config (what a
        task runs with: converters, error handling, the connector's own keys)."""
        assert c.instance is not None and c.thread is not None
        configs = await c.thread.call(c.instance.task_configs, _int(c.config, "tasks.max", 1))
        return [{**c.config, **{str(k): str(v) for k, v in t.items()}} for t in configs]

    async def _publish_tasks(self, name: str, configs: list[dict[str, str]]) -> None:
        """Commit a connector's task configs, if they changed (the workers running its tasks
        start them again); the statuses of tasks that are no more go."""
        if configs == self.storage.task_configs.get(name):
            return
        await self.storage.put_task_configs(name, configs)
        prefix = f"status-task-{name}-"
        gone = [k for k in self.storage.statuses
                if k.startswith(prefix) and k[len(prefix):].isdigit() and int(k[len(prefix):]) >= len(configs)]
        await self.storage.delete_statuses(gone)

    async def _stop_connector(self, c: _Connector) -> None:
        """Stop the connector's instance (its tasks are stopped apart: they may run elsewhere)."""
        if c.instance is not None and c.thread is not None and c.state != FAILED:
            try:
                await asyncio.wait_for(c.thread.call(c.instance.stop), self.graceful_timeout_s)
            except Exception:  # noqa: BLE001
                log.exception("stopping connector %s failed", c.name)
        if c.thread is not None:
            c.thread.close()

    async def _restart_instance(self, c: _Connector) -> None:
        """Restart the connector instance alone; its tasks go on unless its task configs
        changed, when they are started again with the new ones."""
        assert c.instance is not None and c.thread is not None
        if c.state == STOPPED:
            return
        try:
            await asyncio.wait_for(c.thread.call(c.instance.stop), self.graceful_timeout_s)
        except Exception:  # noqa: BLE001
            log.exception("stopping connector %s failed", c.name)
        try:
            await c.thread.call(c.instance.start, dict(c.config))
            configs = await self._task_configs_of(c)
        except Exception as exc:  # noqa: BLE001 - a connector's failure is its status
            c.state, c.trace = FAILED, _trace(exc)
            await self._save_status(c)
            return
        await self._publish_tasks(c.name, configs)
        await self._reconcile_tasks(c.name)

    async def _reconfigure(self, name: str) -> None:
        """A connector asked for new task configs (a table appeared): as Connect, ask it for
        them and, if they changed, commit them (its tasks start again with the new ones)."""
        async with self._lock:
            c = self._connectors.get(name)
            if c is None or c.instance is None or c.thread is None or c.state in (FAILED, STOPPED):
                return
            try:
                configs = await self._task_configs_of(c)
            except Exception as exc:  # noqa: BLE001 - a connector's failure is its status
                c.state, c.trace = FAILED, _trace(exc)
                await self._save_status(c)
                return
            await self._publish_tasks(name, configs)
            await self._reconcile_tasks(name)

    def _start_task(self, name: str, task_id: int, config: dict[str, str], paused: bool) -> None:
        """Run a task here from its committed config (with the connector's instance if it
        runs here, else a connector object of its class, unstarted, for its task class)."""
        c = self._connectors.get(name)
        if c is None or c.instance is None:
            try:
                plugin = self.registry.find(config.get("connector.class", ""))
            except ConnectException:
                log.warning("task %s-%d: its connector class is not here", name, task_id)
                return
            c = _Connector(name, config, _PluginView(plugin, plugin.connector()))
        else:
            c = _Connector(name, config, c.plugin)  # (a task's topics are its own to note)
        runner = _TaskRunner(self, c, task_id, config)
        self._tasks[(name, task_id)] = runner
        runner.start(paused)

    async def _restart_task(self, t: _TaskRunner) -> None:
        await t.stop()
        runner = _TaskRunner(self, t.connector, t.id, t.config)
        self._tasks[(t.connector.name, t.id)] = runner
        runner.start(self.storage.target_states.get(t.connector.name) == TARGET_PAUSED)

    async def _ensure_topic(self, topic: str) -> None:
        # Kafka creates a topic a producer writes to (auto.create.topics.enable); Connect's
        # file source relies on it. One partition, Kafka's num.partitions default.
        if topic in self._known_topics:
            return
        if await self.log.describe_topic(topic) is None:
            try:
                await self.log.create_topic(topic, 1)
            except TopicExistsError:
                pass
        self._known_topics.add(topic)

    async def _note_topic(self, c: _Connector, topic: str, task_id: int) -> None:
        # ``c.topics``: this run's, so that the check stays off the storage per batch.
        if topic not in c.topics:
            c.topics.add(topic)
            if topic in self.storage.topics(c.name):
                return
            try:
                await self.storage.put_topic(c.name, topic, task_id)
            except Exception:  # noqa: BLE001 - bookkeeping only
                log.exception("recording topic %s of %s failed", topic, c.name)

    async def _send(self, runner: _TaskRunner, runs: list[Sequence[SourceRecord]], keys: Converter,
                    values: Converter, offsets: dict[bytes, Mapping[str, Any]]) -> None:
        """Produce a source task's records (its polls' results, ``_merged``, in order), then
        store their offsets. Each run's records are converted by the converters' writers,
        made once per schema, a run of consecutive records of one topic and the same key and
        value schema objects at a time, and produced in one write; a run that does not
        convert is done again a record at a time, for ``errors.tolerance`` to judge each.
        ``runs`` loses each run once written, and ``offsets`` gains its offsets, so a call
        again after a failed write goes on from there."""
        now = int(time.time() * 1000)
        while runs:
            await self._send_run(runner, runs[0], keys, values, now, offsets)
            del runs[0]
        if runner.writer is not None:
            await runner.writer.commit(offsets)  # the records (held by the writer) and offsets at once
        elif offsets:
            await self.storage.put_offsets(runner.connector.name, offsets)

    def _convert_batch(self, batch: SourceRecordBatch, keys: Converter, values: Converter
                       ) -> tuple[bytes | None, Sequence[bytes | None]]:
        """A source batch's key (one for all: it has none) and its values' bytes, as this
        worker's Log takes them (Kafka's batches take bytes objects one by one: packed
        values are unpacked for it). Pure computation: runs on a task's thread too."""
        key = keys.writer(batch.topic, None)([None])[0]
        converted = values.writer(batch.topic, batch.value_schema, rows=True)(batch.rows)
        if self.log.distributed and isinstance(converted, PackedValues):
            converted = list(converted)
        return key, converted

    async def _send_run(self, runner: _TaskRunner, records: Sequence[SourceRecord], keys: Converter,
                        values: Converter, now: int, offsets: dict[bytes, Mapping[str, Any]]) -> None:
        name = runner.connector.name
        if isinstance(records, _Converted):  # (converted on the task's thread)
            batch = records.batch
            await self._produce(runner, batch.topic, RecordColumns(records.values, now, records.key))
            last = batch.last_offset
            if last is not None:
                offsets[offset_key(name, batch.source_partition)] = last
        elif isinstance(records, SourceRecordBatch):
            # Columns from the task (one partition, topic and value schema, no keys): no
            # record objects at all on the way.
            topic = records.topic
            if not topic:
                raise ConnectException("A source record has no topic")
            try:
                key, converted = self._convert_batch(records, keys, values)
            except Exception:  # noqa: BLE001 - one at a time: errors.tolerance decides
                await self._send_each(runner, list(records), keys, values, now, offsets)
            else:
                if keys.pending or values.pending:
                    await keys.flush()
                    await values.flush()
                await self._produce(runner, topic, RecordColumns(converted, now, key))
                last = records.last_offset
                if last is not None:
                    offsets[offset_key(name, records.source_partition)] = last
        else:
            i, n = 0, len(records)
            while i < n:
                first = records[i]
                topic, ks, vs = first.topic, first.key_schema, first.value_schema
                j = i + 1
                while j < n and (r := records[j]).topic == topic and r.key_schema is ks and r.value_schema is vs:
                    j += 1
                run = records[i:j]
                i = j
                if not topic:
                    raise ConnectException("A source record has no topic")
                try:
                    converted_keys = keys.writer(topic, ks)([r.key for r in run])
                    converted = values.writer(topic, vs)([r.value for r in run])
                except Exception:  # noqa: BLE001 - one at a time: errors.tolerance decides
                    await self._send_each(runner, run, keys, values, now, offsets)
                    continue
                if keys.pending or values.pending:
                    await keys.flush()
                    await values.flush()
                await self._produce(runner, topic, [
                    ProducerRecord(k, v, now if r.timestamp is None else r.timestamp, tuple(r.headers), r.partition)
                    for r, k, v in zip(run, converted_keys, converted)])
                self._note_offsets(name, run, offsets)

    @staticmethod
    def _note_offsets(name: str, records: Sequence[SourceRecord], offsets: dict[bytes, Mapping[str, Any]]) -> None:
        """The last offset of each source partition among ``records`` into ``offsets``."""
        last_partition: Mapping[str, Any] | None = None
        last_key = b""
        for r in records:
            if r.source_partition is not None and r.source_offset is not None:
                if r.source_partition is not last_partition:  # (tasks mostly share one dict)
                    last_partition, last_key = r.source_partition, offset_key(name, r.source_partition)
                offsets[last_key] = r.source_offset

    async def _send_each(self, runner: _TaskRunner, records: Sequence[SourceRecord], keys: Converter,
                         values: Converter, now: int, offsets: dict[bytes, Mapping[str, Any]]) -> None:
        """``_send`` a record at a time: a record that does not convert fails the task, or is
        skipped under ``errors.tolerance=all`` (its offset stored with the others')."""
        run_topic: str | None = None
        run: list[ProducerRecord] = []
        for r in records:
            if not r.topic:
                raise ConnectException("A source record has no topic")
            try:
                stage = "KEY_CONVERTER"
                key = keys.from_connect_data(r.topic, r.key_schema, r.key)
                stage = "VALUE_CONVERTER"
                value = values.from_connect_data(r.topic, r.value_schema, r.value)
            except Exception as exc:  # noqa: BLE001 - errors.tolerance decides
                await runner.errors.tolerate(exc, stage, keys if stage == "KEY_CONVERTER" else values)
                continue  # (skipped, and done with: its offset is stored with the others')
            if keys.pending or values.pending:
                await keys.flush()
                await values.flush()
            if r.topic != run_topic and run:
                await self._produce(runner, run_topic, run)  # type: ignore[arg-type]
                run = []
            run_topic = r.topic
            run.append(ProducerRecord(key, value, r.timestamp if r.timestamp is not None else now,
                                      tuple(r.headers), r.partition))
        if run:
            await self._produce(runner, run_topic, run)  # type: ignore[arg-type]
        self._note_offsets(runner.connector.name, records, offsets)

    async def _produce(self, runner: _TaskRunner, topic: str, records: Sequence[ProducerRecord]) -> None:
        await self._ensure_topic(topic)
        await self._note_topic(runner.connector, topic, runner.id)
        if runner.writer is not None:
            runner.writer.add(topic, records)  # written with the batch's offsets (``_send``)
            return
        await self.log.produce(topic, records)

    async def _sink_topics(self, config: Mapping[str, str]) -> list[str]:
        topics = [t.strip() for t in str(config.get("topics", "")).split(",") if t.strip()]
        regex = str(config.get("topics.regex", "")).strip()
        if regex:
            import re

            # Internal topics (the engine's, the registry's, Kafka's) are never a sink's:
            # Connect's consumers leave internal topics out of their patterns too.
            pattern = re.compile(regex)
            topics = sorted(t for t in await self.log.list_topics()
                            if pattern.fullmatch(t) and not t.startswith(_INTERNAL_TOPICS))
        return topics


def _ignore_result(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved: a read-ahead poll's failure says nothing more


class _Reader:
    """A source task's polls (``_TaskRunner._poll``) run one after the other on its thread, in
    one long call, ahead of the writes on the loop: the thread goes on with its next poll at
    once instead of waiting for the loop to ask for it (on a loaded machine the loop's turn
    may come milliseconds later, a thread hop per batch), with at most ``depth`` results
    read and not yet taken. A poll's failure comes in order after the results before it and
    ends the run, as a pause, a stop or ``close`` do; ``next`` starts a run again."""

    def __init__(self, runner: _TaskRunner, task: SourceTask, depth: int = 2) -> None:
        self.runner = runner
        self.task = task
        self.loop = asyncio.get_running_loop()
        # (records, None), (None, failure), or None: the run ended. Appended on the task's
        # thread, taken on the loop (a deque's ends are thread-safe).
        self.items: deque[tuple[Any, BaseException | None] | None] = deque()
        self.space = threading.Semaphore(depth)  # a result holds a slot until it is taken
        self.ready = asyncio.Event()
        self.run: asyncio.Future[None] | None = None
        self.closed = False

    def _pump(self) -> None:
        """On the task's thread: poll until paused, stopped, closed or failed."""
        runner = self.runner
        try:
            while not (self.closed or runner.stopping) and runner.resumed.is_set():
                if not self.space.acquire(timeout=0.1):
                    continue
                try:
                    out = runner._poll(self.task)
                except BaseException as exc:  # noqa: BLE001 - the loop raises it, in order
                    self._put((None, exc))
                    return
                if out:
                    self._put((out, None))
                else:
                    self.space.release()
        finally:
            self._put(None)

    def _put(self, item: tuple[Any, BaseException | None] | None) -> None:
        self.items.append(item)
        try:
            self.loop.call_soon_threadsafe(self.ready.set)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass

    async def next(self) -> list[Sequence[SourceRecord]] | None:
        """The next polls' records; None where the run ended (paused, stopped); a poll's
        failure is raised."""
        while True:
            if self.items:
                item = self.items.popleft()
                if item is None:
                    self.run = None
                    return None
                self.space.release()
                out, exc = item
                if exc is not None:
                    raise exc
                return out  # type: ignore[no-any-return]
            if self.run is None:
                if self.closed:
                    return None
                self.run = self.runner.thread.start(self._pump)
                self.run.add_done_callback(_ignore_result)
            self.ready.clear()
            if not self.items:
                await self.ready.wait()

    def close(self) -> None:
        """The run ends after the poll under way (whose records are dropped, not written)."""
        self.closed = True


class _Converted(Sequence[SourceRecord]):
    """A source task's batch converted on its thread (``_TaskRunner._convert``): its key's
    and its values' bytes, ready to be produced."""

    __slots__ = ("batch", "key", "values")

    def __init__(self, batch: SourceRecordBatch, key: bytes | None, values: Sequence[bytes | None]) -> None:
        self.batch = batch
        self.key = key
        self.values = values

    def __len__(self) -> int:
        return len(self.batch)

    def __getitem__(self, i: Any) -> Any:
        return self.batch[i]


def _merged(polled: Sequence[Sequence[SourceRecord]]) -> list[Sequence[SourceRecord]]:
    """Polls' results with consecutive batches of one source partition, topic and schema
    joined into one (the last one's offsets are theirs too: one querier's)."""
    groups: list[list[Sequence[SourceRecord]]] = []
    for records in polled:
        last = groups[-1][-1] if groups else None
        if isinstance(records, SourceRecordBatch) and isinstance(last, SourceRecordBatch) and \
                records.source_partition is last.source_partition and records.topic == last.topic and \
                records.value_schema is last.value_schema:
            groups[-1].append(records)
        else:
            groups.append([records])
    out: list[Sequence[SourceRecord]] = []
    for group in groups:
        if len(group) == 1:
            out.append(group[0])
            continue
        first, last = group[0], group[-1]
        assert isinstance(first, SourceRecordBatch) and isinstance(last, SourceRecordBatch)
        rows: list[tuple] = []
        for b in group:
            rows += b.rows  # type: ignore[attr-defined]
        out.append(SourceRecordBatch(first.source_partition, first.topic, first.value_schema, rows, last.offset_of))
    return out


class _Placement:
    """The placement consumer's rebalance listener: partition numbers to the worker."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    async def assigned(self, partitions: set[tuple[str, int]]) -> None:
        await self.worker._assigned({p for _, p in partitions})

    async def revoked(self, partitions: set[tuple[str, int]]) -> None:
        await self.worker._revoked({p for _, p in partitions})


class _Unknown:
    """The plugin of a stored connector whose class is not (or no longer) there."""

    class_name = ""
    type = "unknown"


def _java_map(config: Mapping[str, str]) -> str:
    return "{" + ", ".join(f"{k}={v}" for k, v in config.items()) + "}"


__all__ = ["ConnectRestError", "ConnectorInfo", "ConnectorStatus", "TaskState", "Worker", "worker_for"]


def worker_for(log_: Log, config: Mapping[str, Any], schema_registry: Any = None) -> Worker:
    """The worker of an engine with ``config``: its service id, its node's name as worker id
    (Connect's host:port), the worker config from the file ``ksql.connect.worker.config``
    names (as ksqlDB's embedded Connect) under the engine's ``connect.<key>`` properties, and
    the engine's schema registry (for the registry converters)."""
    worker_config: dict[str, str] = {}
    path = config.get("ksql.connect.worker.config")
    if path:
        worker_config.update(_read_properties(str(path)))
    worker_config.update({k[len("connect."):]: str(v) for k, v in config.items() if k.startswith("connect.")})
    node = str(config.get("streamsql.node.name") or "localhost")
    worker_id = node.split("://", 1)[-1].rstrip("/")
    return Worker(log_, str(config.get("ksql.service.id", "default_")), worker_id, worker_config,
                  replicas=int(config.get("ksql.internal.topic.replicas", 1)), schema_registry=schema_registry,
                  registry_urls=str(config.get("ksql.schema.registry.url") or "").split(","))


def _read_properties(path: str) -> dict[str, str]:
    """A Java .properties file's keys and values (``key=value`` or ``key: value``; ``#`` and
    ``!`` comments)."""
    out: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line[0] in "#!":
                continue
            sep = min((i for i in (line.find("="), line.find(":")) if i >= 0), default=-1)
            if sep < 0:
                out[line] = ""
            else:
                out[line[:sep].strip()] = line[sep + 1:].strip()
    return out

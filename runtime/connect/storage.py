"""The worker's state on the Log: connector configs, source offsets and statuses, each in a
compacted topic, as Kafka Connect keeps them (``config.storage.topic``,
``offset.storage.topic``, ``status.storage.topic``), with Connect's keys and JSON values:

- configs: ``connector-<name>`` -> ``{"properties": {...}}`` (a tombstone once deleted),
  ``target-state-<name>`` -> ``{"state": "PAUSED", "state.v2": "PAUSED"}``, the task configs
  the connector computed, ``task-<name>-<id>`` -> ``{"properties": {...}}``, each set ended
  by ``commit-<name>`` -> ``{"tasks": N}`` (task records count only once committed, so a
  reader never sees half a set), and ``restart-connector-<name>`` -> ``{"include-tasks": b,
  "only-failed": b}`` (a restart the workers running its tasks act on);
- offsets: ``["<connector>", {source partition}]`` -> ``{source offset}``;
- status: ``status-connector-<name>`` / ``status-task-<name>-<id>`` -> ``{"state", "trace",
  "worker_id", "generation"}``, ``topic-<topic>-<name>`` -> ``{"topic": {...}}``.

The topics are named ``_streamsql_<service id>connect-configs`` (``-offsets``, ``-status``),
not Connect's default ``connect-configs``: a real Kafka Connect cluster on the same brokers
keeps its own connectors there, and sharing the topics would have each cluster start (or
choke on) the other's connectors. The service id keeps two streamsql clusters apart too, and
the leading underscore keeps the topics out of SHOW TOPICS, as the other internal topics.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Mapping

import orjson

from streamsql.runtime.connect.exactly_once import is_pending_key, recover
from streamsql.runtime.log.base import Log, ProducerRecord, TopicExistsError

log = logging.getLogger(__name__)

_COMPACT = {"cleanup.policy": "compact"}
# The configs topic keeps a deleted connector's tombstone for a century rather than Kafka's
# default day: replaying the command log recreates only connectors the topic never heard of
# (``ConnectStorage.seen``), so a deletion must stay visible.
_CONFIGS = {**_COMPACT, "delete.retention.ms": str(100 * 365 * 24 * 3600 * 1000)}


def offset_key(connector: str, partition: Mapping[str, Any]) -> bytes:
    """The offsets topic's key of a source partition (sorted keys: one key per partition
    however its dict was built, so compaction keeps only the latest)."""
    return orjson.dumps([connector, partition], option=orjson.OPT_SORT_KEYS)


class ConnectStorage:
    """Reads the three topics at ``start`` and writes every change to them."""

    def __init__(self, log_: Log, service_id: str, replicas: int = 1) -> None:
        self.log = log_
        prefix = f"_streamsql_{service_id}connect-"
        self.configs_topic = prefix + "configs"
        self.offsets_topic = prefix + "offsets"
        self.status_topic = prefix + "status"
        self.replicas = replicas
        # Connector configs and target states, as last written.
        self.configs: dict[str, dict[str, str]] = {}
        self.target_states: dict[str, str] = {}
        # Every connector name the configs topic has a record of, deleted ones included.
        self.seen: set[str] = set()
        # Committed task configs by connector (what each task runs with, wherever it runs),
        # the task records read since a connector's last commit, and restart requests read
        # (by connector: a counter that grows with each, and the last one's flags).
        self.task_configs: dict[str, list[dict[str, str]]] = {}
        self._task_records: dict[str, dict[int, dict[str, str]]] = {}
        self.restarts: dict[str, tuple[int, bool, bool]] = {}
        self.offsets: dict[bytes, dict[str, Any]] = {}
        # Source batches of exactly-once tasks written but maybe not whole, by the task's key
        # (the embedded log: ``streamsql.runtime.connect.exactly_once``).
        self.pending: dict[bytes, dict[str, Any]] = {}
        self._read_lock: asyncio.Lock | None = None
        # Statuses by key (``status-connector-<name>``, ``status-task-<name>-<id>``), as the
        # worker running each wrote them.
        self.statuses: dict[str, dict[str, Any]] = {}
        # The topics each connector used (``topic-<topic>-<connector>`` records), by key.
        self.topic_records: dict[str, tuple[str, str]] = {}
        self._positions: dict[tuple[str, int], int] = {}
        self._started = False

    @property
    def started(self) -> bool:
        return self._started

    async def start(self, create: bool = True) -> bool:
        """Create the topics where missing and read them to their end; without ``create``,
        only if the configs topic exists (a service without connectors gets no topics).
        Whether the storage is started."""
        if self._started:
            return True
        if not create and await self.log.describe_topic(self.configs_topic) is None:
            return False
        # Connect's partition counts on a shared Log (offsets and statuses are written by every
        # task); one each on the embedded log, where nothing reads them in parallel.
        many = bool(getattr(self.log, "distributed", False))
        for topic, partitions, config in ((self.configs_topic, 1, _CONFIGS),
                                          (self.offsets_topic, 25 if many else 1, _COMPACT),
                                          (self.status_topic, 5 if many else 1, _COMPACT)):
            if await self.log.describe_topic(topic) is None:
                try:
                    await self.log.create_topic(topic, partitions, self.replicas, dict(config))
                except TopicExistsError:
                    pass
        await self.refresh()
        # Before anything runs: a batch a crash cut short is settled (the embedded log).
        await recover(self.log, self)
        self._started = True
        return True

    async def refresh(self) -> None:
        """Read what was written to the three topics since the last read (by this worker or
        another of the cluster). A record that is not what it should be is skipped and
        logged: one bad record must not keep the node from starting."""
        for topic, apply in ((self.configs_topic, self._apply_config), (self.offsets_topic, self._apply_offset),
                             (self.status_topic, self._apply_status)):
            await self._apply(topic, apply)

    async def refresh_offsets(self, settle: bool = False) -> None:
        """Read what was written to the offsets topic since the last read; with ``settle``
        once no transaction is open on it (an exactly-once task taking over on Kafka)."""
        if settle:
            # A partition at a time: each needs one moment with no transaction open (all
            # those open before have ended: the last stable offset is past what they wrote),
            # and busy tasks of other connectors seldom leave all of them closed at once.
            for p in range(len(await self.log.end_offsets(self.offsets_topic))):
                await self.log.settle(self.offsets_topic, [p])
        await self._apply(self.offsets_topic, self._apply_offset)

    async def _apply(self, topic: str, apply: Any) -> None:
        if self._read_lock is None:
            self._read_lock = asyncio.Lock()
        # One reader at a time: a slower one would apply older records over newer ones.
        async with self._read_lock:
            async for key, value in self._read(topic):
                try:
                    apply(key, value)
                except (ValueError, KeyError, TypeError, AttributeError) as exc:
                    log.warning("skipping a malformed record of %s (key %r): %s", topic, key, exc)

    def _apply_offset(self, key: bytes, value: bytes | None) -> None:
        if is_pending_key(key):
            if value is None:
                self.pending.pop(key, None)
            else:
                self.pending[key] = orjson.loads(value)
        elif value is None:
            self.offsets.pop(key, None)
        else:
            self.offsets[key] = orjson.loads(value)

    def _apply_status(self, key: bytes, value: bytes | None) -> None:
        text = key.decode("utf-8", "replace")
        if value is None:
            self.statuses.pop(text, None)
            self.topic_records.pop(text, None)
        elif text.startswith("status-"):
            self.statuses[text] = orjson.loads(value)
        elif text.startswith("topic-"):
            topic = orjson.loads(value)["topic"]
            self.topic_records[text] = (topic["connector"], topic["name"])

    async def _read(self, topic: str):
        ends = await self.log.end_offsets(topic)
        begins = await self.log.begin_offsets(topic)
        for p, end in enumerate(ends):
            pos = max(self._positions.get((topic, p), 0), begins[p])
            while pos < end:
                batch = await self.log.fetch(topic, p, pos)
                if not len(batch):
                    break
                for k, v in zip(batch.keys, batch.values):
                    if k is not None:
                        yield bytes(k), v
                pos = batch.offsets[-1] + 1
            self._positions[(topic, p)] = pos

    def _apply_config(self, key: bytes, value: bytes | None) -> None:
        text = key.decode("utf-8", "replace")
        if text.startswith("connector-"):
            name = text[len("connector-"):]
            self.seen.add(name)
            if value is None:
                self.configs.pop(name, None)
                self.target_states.pop(name, None)
                # As Connect's KafkaConfigBackingStore: a deleted connector's tasks go with it.
                self.task_configs.pop(name, None)
                self._task_records.pop(name, None)
            else:
                self.configs[name] = {str(k): str(v) for k, v in orjson.loads(value)["properties"].items()}
        elif text.startswith("target-state-"):
            name = text[len("target-state-"):]
            if value is None:
                self.target_states.pop(name, None)
            else:
                body = orjson.loads(value)
                self.target_states[name] = body.get("state.v2") or body.get("state") or "STARTED"
        elif text.startswith("task-") and value is not None:
            name, _, task = text[len("task-"):].rpartition("-")
            self._task_records.setdefault(name, {})[int(task)] = {
                str(k): str(v) for k, v in orjson.loads(value)["properties"].items()}
        elif text.startswith("commit-") and value is not None:
            name = text[len("commit-"):]
            count = int(orjson.loads(value)["tasks"])
            records = self._task_records.pop(name, {})
            previous = self.task_configs.get(name, [])
            # (A task missing from the set kept its config: Connect writes each set whole.)
            self.task_configs[name] = [records.get(i) or (previous[i] if i < len(previous) else {})
                                       for i in range(count)]
        elif text.startswith("restart-connector-") and value is not None:
            name = text[len("restart-connector-"):]
            body = orjson.loads(value)
            n = self.restarts.get(name, (0, False, False))[0] + 1
            self.restarts[name] = (n, bool(body.get("include-tasks")), bool(body.get("only-failed")))

    async def _write(self, topic: str, records: list[tuple[bytes, bytes | None]]) -> None:
        now = int(time.time() * 1000)
        await self.log.produce(topic, [ProducerRecord(k, v, now) for k, v in records])

    # -------------------------------------------------------------------------- configs
    async def put_connector(self, name: str, config: Mapping[str, str]) -> None:
        await self._write(self.configs_topic, [(f"connector-{name}".encode(),
                                                orjson.dumps({"properties": dict(config)}))])
        self.configs[name] = dict(config)
        self.seen.add(name)

    async def delete_connector(self, name: str) -> None:
        await self._write(self.configs_topic, [(f"connector-{name}".encode(), None),
                                               (f"target-state-{name}".encode(), None)])
        self.configs.pop(name, None)
        self.target_states.pop(name, None)
        self.task_configs.pop(name, None)
        self._task_records.pop(name, None)

    async def put_task_configs(self, name: str, configs: list[dict[str, str]]) -> None:
        """A connector's task configs, as one set: the task records, then the commit record,
        in one write."""
        records: list[tuple[bytes, bytes | None]] = [
            (f"task-{name}-{i}".encode(), orjson.dumps({"properties": dict(c)})) for i, c in enumerate(configs)]
        records.append((f"commit-{name}".encode(), orjson.dumps({"tasks": len(configs)})))
        await self._write(self.configs_topic, records)
        self.task_configs[name] = [dict(c) for c in configs]
        self._task_records.pop(name, None)

    async def put_restart(self, name: str, include_tasks: bool, only_failed: bool) -> None:
        """Ask every worker running tasks of ``name`` to restart them (read back by all,
        this worker included, at their next ``refresh``)."""
        await self._write(self.configs_topic, [(f"restart-connector-{name}".encode(), orjson.dumps(
            {"include-tasks": include_tasks, "only-failed": only_failed}))])

    async def put_target_state(self, name: str, state: str) -> None:
        await self._write(self.configs_topic, [(f"target-state-{name}".encode(),
                                                orjson.dumps({"state": state, "state.v2": state}))])
        self.target_states[name] = state

    # -------------------------------------------------------------------------- offsets
    def offset(self, connector: str, partition: Mapping[str, Any]) -> dict[str, Any] | None:
        return self.offsets.get(offset_key(connector, partition))

    async def put_offsets(self, connector: str, offsets: Mapping[bytes, Mapping[str, Any]]) -> None:
        """Store source offsets (by ``offset_key``) once the records they follow are written."""
        await self._write(self.offsets_topic, [(k, orjson.dumps(v)) for k, v in offsets.items()])
        for k, v in offsets.items():
            self.offsets[k] = dict(v)

    def offsets_written(self, offsets: Mapping[bytes, Mapping[str, Any]]) -> None:
        """Offsets an exactly-once task's batch wrote with its records (see ``exactly_once``)."""
        for k, v in offsets.items():
            self.offsets[k] = dict(v)

    async def delete_offsets(self, connector: str) -> None:
        prefix = orjson.dumps([connector])[:-1] + b","
        keys = [k for k in [*self.offsets, *self.pending] if k.startswith(prefix)]
        if keys:
            await self._write(self.offsets_topic, [(k, None) for k in keys])
            for k in keys:
                self.offsets.pop(k, None)
                self.pending.pop(k, None)

    # ------------------------------------------------------------------------- statuses
    async def put_status(self, key: str, state: str, trace: str | None, worker_id: str) -> None:
        status = {"state": state, "trace": trace, "worker_id": worker_id, "generation": 0}
        await self._write(self.status_topic, [(key.encode(), orjson.dumps(status))])
        self.statuses[key] = status

    def topics(self, connector: str) -> list[str]:
        return sorted(t for c, t in self.topic_records.values() if c == connector)

    async def put_topic(self, connector: str, topic: str, task: int) -> None:
        key = f"topic-{topic}-{connector}"
        await self._write(self.status_topic, [(key.encode(), orjson.dumps(
            {"topic": {"name": topic, "connector": connector, "task": task,
                       "discoverTimestamp": int(time.time() * 1000)}}))])
        self.topic_records[key] = (connector, topic)

    async def delete_topics(self, connector: str) -> None:
        keys = [k for k, (c, _) in self.topic_records.items() if c == connector]
        if keys:
            await self._write(self.status_topic, [(k.encode(), None) for k in keys])
            for k in keys:
                del self.topic_records[k]

    async def delete_statuses(self, keys: list[str]) -> None:
        if keys:
            await self._write(self.status_topic, [(k.encode(), None) for k in keys])
            for k in keys:
                self.statuses.pop(k, None)

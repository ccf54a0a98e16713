"""The Log seam on Apache Kafka, through aiokafka: the only module that imports it (with
``kafka_protocol``, the requests aiokafka lacks).

One ``KafkaLog`` per node holds:

* an admin client (create/delete/describe topics, group offsets: ``stable_committed`` asks
  for them with KIP-447's ``require_stable``, so that a partition's new owner never reads
  offsets from before its previous owner's last transaction);
* one idempotent producer (acks=all, batching, lz4; internal topics uncompressed) for ordinary
  produce calls. Records are put into aiokafka ``BatchBuilder``s per partition by this module
  (one produce call of N records is a few batches, not N ``send`` coroutines; columnar
  records column by column); a record without a partition goes where Kafka's Java client
  would put it (murmur2 of the key); ``send`` returns before the acknowledgements;
* readers for ``fetch`` (restore, PRINT, push queries, the command topic): one assigned
  consumer per topic-partition, kept while used, that continues where the last fetch ended
  and seeks otherwise;
* group consumers (``consumer``): subscribed with a rebalance listener, Range assignment (a
  stage reading co-partitioned topics gets partition p of each on one node), manual commits;
  newly assigned partitions stay paused until the listener has taken them up;
* transactional producers (``transactional``) for ``processing.guarantee=exactly_once_v2``.
  A transaction commits its input offsets as the group member that read them (KIP-447:
  TxnOffsetCommit v3 with the member's generation, ``kafka_protocol``): after a rebalance
  the group coordinator refuses a stale member's offsets (``FencedMemberError``), so a node
  that lost its partitions cannot also commit them.

Every reader uses ``read_committed``: records of aborted transactions are never seen, and
the end offsets it reports are the last stable offsets (``settle`` waits until they are the
high watermarks: no transaction open). Kafka's own topics (``__...``) are not listed.

A node that cannot reach Kafka waits: calls retry with backoff (logged) instead of failing.
"""
from __future__ import annotations

import asyncio
import bisect
import collections
import itertools
import logging
import os
import socket
import time
from typing import Any, Awaitable, Callable, Iterable, Iterator, Sequence, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic, RecordsToDelete
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.client import ConnectionGroup, CoordinationType
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import (CommitFailedError, GroupCoordinatorNotAvailableError,
                             GroupLoadInProgressError, KafkaConnectionError, KafkaError,
                             NodeNotReadyError, NotCoordinatorForGroupError, ProducerFenced,
                             RequestTimedOutError)
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.producer.sender import AddOffsetsToTxnHandler
from aiokafka.producer.transaction_manager import TransactionState

from .base import (Consumer, GroupMetadata, Log, LogView, MemberTasks, Partitioner,
                   ProducerBatch, ProducerRecord, RebalanceListener, RecordBatch, RecordColumns,
                   TopicExistsError, TopicInfo, UnknownTopicError)
from .kafka_assignor import TaskAssignor, decode_assignment
from .kafka_protocol import UNSTABLE_OFFSET_COMMIT, DeleteGroups, MemberTxnOffsetCommit, StableOffsetFetch

log = logging.getLogger(__name__)

T = TypeVar("T")

# Errors worth waiting out: the cluster (or a broker of it) is not reachable right now, or a
# group's coordinator is moving or starting (a new cluster's offsets topic is made on demand).
_TRANSIENT = (KafkaConnectionError, NodeNotReadyError, RequestTimedOutError, ConnectionError,
              asyncio.TimeoutError, GroupCoordinatorNotAvailableError, GroupLoadInProgressError,
              NotCoordinatorForGroupError)
_TOPIC_ALREADY_EXISTS = 36
_UNKNOWN_TOPIC = 3
_MAX_READERS = 64
_BATCH_BYTES = 1024 * 1024
# Group coordinator moving or loading: ask again.
_COORDINATOR_MOVING = (14, 15, 16)
# DeleteGroups: the group is gone already; how long a group still emptying is asked again.
_GROUP_ID_NOT_FOUND = 69
_DELETE_GROUP_SECONDS = 5.0
# How long a topic this node knows may be missing from a broker's metadata.
_METADATA_LAG = 10.0
# How long a task's opening waits for a pending transaction (a killed node's is aborted
# after ``transaction_timeout_ms``, then the coordinator's next check: up to ~20 s).
_STABLE_WAIT = 60.0
# TxnOffsetCommit answers. The member is not the group's current one (KIP-447): the
# transaction can only be aborted.
_ILLEGAL_GENERATION, _UNKNOWN_MEMBER_ID, _FENCED_INSTANCE_ID = 22, 25, 82
_STALE_MEMBER = {_ILLEGAL_GENERATION: "ILLEGAL_GENERATION", _UNKNOWN_MEMBER_ID: "UNKNOWN_MEMBER_ID",
                 _FENCED_INSTANCE_ID: "FENCED_INSTANCE_ID"}
# Worth asking again: the group's coordinator moved or is not ready (the ones marked "look
# up" are asked where it is now first), the offsets partition is loading, the transaction
# coordinator is busy, or the broker's metadata lags behind a new topic.
_REQUEST_TIMED_OUT, _COORDINATOR_LOAD_IN_PROGRESS, _COORDINATOR_NOT_AVAILABLE = 7, 14, 15
_NOT_COORDINATOR, _CONCURRENT_TRANSACTIONS = 16, 51
# How soon a request refused while the last transaction ends is asked again.
_BETWEEN_TRANSACTIONS = 0.02
_LOOK_UP_COORDINATOR = {_REQUEST_TIMED_OUT, _COORDINATOR_NOT_AVAILABLE, _NOT_COORDINATOR}
_TXN_COMMIT_RETRIABLE = _LOOK_UP_COORDINATOR | {_COORDINATOR_LOAD_IN_PROGRESS,
                                               _CONCURRENT_TRANSACTIONS, _UNKNOWN_TOPIC}
# The producer's epoch is stale: another producer with its transactional id took over (or
# the transaction timed out).
_PRODUCER_FENCED = {47, 90}
# How long a transaction's offset commit retries before giving up (the transaction itself
# times out after ``transaction_timeout_ms`` anyway).
_TXN_COMMIT_WAIT = 30.0
# Records an open transaction's output may queue for the producer before ``send`` waits for
# it (a few polls' output: in normal running the producer keeps up, see ``_Outbox``).
_OUTBOX_RECORDS = 100_000
# Records put into a batch between two turns of the event loop (see ``_Outbox``).
_OUTBOX_STEP = 2_000


def _codec(name: str) -> int:
    """aiokafka's codec number of a ``compression.type`` (none, gzip, snappy, lz4, zstd)."""
    if name == "none":
        return 0
    try:
        return AIOKafkaProducer._COMPRESSORS[name][1]
    except KeyError:
        raise ValueError(f"Invalid value {name} for configuration compression.type: String "
                         "must be one of: none, gzip, snappy, lz4, zstd") from None


async def _closed_quietly(close: Callable[[], Awaitable[Any]], what: str) -> None:
    """Close an aiokafka client, logging (not raising) what goes wrong: the node is shutting
    down. With its broker gone, aiokafka 0.14's consumer ``stop`` lets the CancelledError of
    a fetch it cancelled itself (one waiting out its retry backoff) escape: swallowed here
    unless this task is itself being cancelled."""
    try:
        await close()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        log.debug("closing %s: aiokafka let a cancelled request of its own escape", what)
    except Exception:  # closing: nothing left to do about it
        log.debug("closing %s failed", what, exc_info=True)


class _AddOffsetsToTxn(AddOffsetsToTxnHandler):
    """aiokafka's AddOffsetsToTxn, asked again after 20 ms (not ``retry_backoff_ms``) while
    the coordinator still ends the previous transaction (CONCURRENT_TRANSACTIONS), as its
    AddPartitionsToTxn and Kafka's Java client do: ``begin`` adds the group right after
    the last commit."""

    def handle_response(self, resp: Any) -> float | None:
        if resp.error_code == _CONCURRENT_TRANSACTIONS:
            return _BETWEEN_TRANSACTIONS
        return super().handle_response(resp)


class FencedMemberError(KafkaError):
    """The group coordinator refused a transaction's offsets: the consumer that read them
    is no longer a current member of its group (a rebalance since gave its partitions to
    another, or it was removed; KIP-447). The transaction must be aborted; the partitions'
    new owner processes those records."""


class KafkaLog(Log):
    """See the module docstring. ``config`` keys (ksqlDB's names where there is one):
    ``ksql.service.id`` (client ids), ``ksql.internal.topic.replicas`` (replication of
    ``_streamsql...`` topics, default 1), ``compression.type`` or
    ``ksql.streams.producer.compression.type`` (default lz4; internal topics:
    ``ksql.internal.topic.compression.type``, default none),
    ``linger.ms`` (default 5), ``streamsql.node.name`` (this node's client id)."""

    distributed = True

    def __init__(self, bootstrap_servers: str, config: dict[str, Any] | None = None) -> None:
        config = config or {}
        self.bootstrap_servers = bootstrap_servers
        self.service_id = str(config.get("ksql.service.id", "streamsql"))
        # How this node is named to the group coordinator (DESCRIBE EXTENDED shows it).
        self.node_name = str(config.get("streamsql.node.name") or f"{socket.gethostname()}-{os.getpid()}")
        self.internal_replicas = int(config.get("ksql.internal.topic.replicas", 1))
        self.compression = str(config.get("ksql.streams.producer.compression.type")
                               or config.get("compression.type", "lz4"))
        if self.compression == "none":
            self.compression = None  # type: ignore[assignment]
        # Internal topics (changelogs, repartition topics: ``_...``) are written and read by
        # the engine alone: uncompressed by default (Kafka Streams' producer default), which
        # spares the CPU of compressing and decompressing every record twice.
        internal = str(config.get("ksql.internal.topic.compression.type", "none"))
        self._internal_codec = _codec(internal) if internal != (self.compression or "none") else None
        self.linger_ms = int(config.get("linger.ms", 5))
        self._admin: AIOKafkaAdminClient | None = None
        self._producer: AIOKafkaProducer | None = None
        self._offsets: AIOKafkaConsumer | None = None
        self._watermarks: AIOKafkaConsumer | None = None
        self._readers: collections.OrderedDict[tuple[str, int], _Reader] = collections.OrderedDict()
        self._partitions: dict[str, int] = {}
        self._start_lock = asyncio.Lock()
        self._reader_lock = asyncio.Lock()
        self._partitioners: dict[str, Partitioner] = {}
        self._closed = False

    # -- connections ------------------------------------------------------------------

    async def _retry(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """``call()``, retried with backoff while Kafka is unreachable."""
        delay = 0.2
        waited = 0.0
        while True:
            try:
                return await call()
            except _TRANSIENT as exc:
                if self._closed:
                    raise
                if waited == 0 or delay >= 5:
                    log.warning("Kafka at %s not reachable (%s: %s); retrying",
                                self.bootstrap_servers, what, exc or type(exc).__name__)
                await asyncio.sleep(delay)
                waited += delay
                delay = min(delay * 2, 5.0)

    async def _start(self) -> None:
        if self._admin is not None:
            return
        async with self._start_lock:
            if self._admin is not None:
                return
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers,
                                        client_id=f"{self.service_id}-admin")
            await self._retry("connect", admin.start)
            producer = self.new_producer()
            await self._retry("producer", producer.start)
            offsets = AIOKafkaConsumer(bootstrap_servers=self.bootstrap_servers,
                                       client_id=f"{self.service_id}-offsets",
                                       enable_auto_commit=False,
                                       isolation_level="read_committed")
            await self._retry("offsets reader", offsets.start)
            # The high watermarks (ends counting open transactions): ``settle`` compares them.
            watermarks = AIOKafkaConsumer(bootstrap_servers=self.bootstrap_servers,
                                          client_id=f"{self.service_id}-watermarks",
                                          enable_auto_commit=False,
                                          isolation_level="read_uncommitted")
            await self._retry("watermarks reader", watermarks.start)
            self._producer, self._offsets, self._watermarks = producer, offsets, watermarks
            self._admin = admin

    def new_producer(self, transactional_id: str | None = None) -> AIOKafkaProducer:
        """An idempotent producer (transactional with an id) on this cluster."""
        return AIOKafkaProducer(
            bootstrap_servers=self.bootstrap_servers,
            client_id=f"{self.service_id}-producer",
            acks="all", enable_idempotence=True, transactional_id=transactional_id,
            compression_type=self.compression, linger_ms=self.linger_ms,
            max_batch_size=_BATCH_BYTES, max_request_size=4 * _BATCH_BYTES,
            request_timeout_ms=30000,
            # A transaction left open by a killed node blocks read_committed readers until it
            # times out (unless the node comes back and fences it): keep that short.
            transaction_timeout_ms=10000)

    async def close(self) -> None:
        self._closed = True
        for reader in self._readers.values():
            await reader.close()
        self._readers.clear()
        for client in (self._producer, self._offsets, self._watermarks, self._admin):
            if client is not None:
                await _closed_quietly(client.close if isinstance(client, AIOKafkaAdminClient)
                                      else client.stop, "a Kafka client")
        self._producer = self._offsets = self._watermarks = self._admin = None

    # -- topics -----------------------------------------------------------------------

    async def create_topic(self, name: str, partitions: int = 1, replicas: int = 1,
                           config: dict[str, str] | None = None) -> TopicInfo:
        await self._start()
        assert self._admin is not None
        if name.startswith("_"):
            replicas = max(replicas, self.internal_replicas)
        topic = NewTopic(name, partitions, replicas, topic_configs=dict(config or {}))
        resp = await self._retry("create topic", lambda: self._admin.create_topics([topic]))
        for entry in resp.topic_errors:
            code = entry[1]
            if code == _TOPIC_ALREADY_EXISTS:
                raise TopicExistsError(name)
            if code:
                message = entry[2] if len(entry) > 2 else ""
                raise KafkaError(f"cannot create topic {name}: error {code} {message}")
        await self._wait_for_leaders(name, partitions)
        self._partitions[name] = partitions
        return TopicInfo(name, partitions, replicas, tuple(sorted((config or {}).items())))

    async def delete_topic(self, name: str) -> None:
        await self._start()
        assert self._admin is not None
        resp = await self._retry("delete topic", lambda: self._admin.delete_topics([name]))
        for entry in resp.topic_error_codes:
            if entry[1] == _UNKNOWN_TOPIC:
                raise UnknownTopicError(name)
            if entry[1]:
                raise KafkaError(f"cannot delete topic {name}: error {entry[1]}")
        self._partitions.pop(name, None)
        for tp in [tp for tp in self._readers if tp[0] == name]:
            await self._readers.pop(tp).close()

    async def delete_group(self, group: str) -> None:
        """DeleteGroups at the group's coordinator (a finished transient query's group), best
        effort: a group whose members have not yet left (NON_EMPTY_GROUP) or whose
        coordinator is moving is asked again for a few seconds, then left to Kafka's own
        expiry of empty groups' offsets."""
        await self._start()
        admin = self._admin
        assert admin is not None
        deadline = time.monotonic() + _DELETE_GROUP_SECONDS
        while True:
            try:
                coordinator = await admin.find_coordinator(group)
                resp = await admin._send_request(DeleteGroups([group]), coordinator)
                code = next((c for g, c in resp.results if g == group), 0)
            except Exception as exc:  # noqa: BLE001 - best effort: the group expires anyway
                log.debug("group %s: delete failed: %s", group, exc)
                code = -1
            if code in (0, _GROUP_ID_NOT_FOUND):
                return
            if time.monotonic() >= deadline:
                log.info("group %s left behind (error %s); Kafka expires its offsets", group, code)
                return
            await asyncio.sleep(0.2)

    async def delete_records(self, topic: str, offsets: dict[int, int]) -> None:
        """Kafka's DeleteRecords: the partitions' log start offsets move to ``offsets``."""
        await self._start()
        assert self._admin is not None
        request = {TopicPartition(topic, p): RecordsToDelete(before_offset=offset)
                   for p, offset in offsets.items()}
        await self._admin.delete_records(request)

    async def _metadata(self, names: list[str] | None) -> list[dict]:
        assert self._admin is not None
        return await self._retry("metadata", lambda: self._admin.describe_topics(names))

    @staticmethod
    def _info(t: dict) -> TopicInfo | None:
        """A topic's info from metadata (a partition without a leader, its broker down, is
        still a partition of the topic)."""
        if t["error_code"] or not t["partitions"]:
            return None
        parts = t["partitions"]
        return TopicInfo(t["topic"], len(parts), max(len(p["replicas"]) for p in parts))

    async def _wait_for_leaders(self, name: str, partitions: int) -> None:
        """Until every partition of a new topic has a leader: produce and fetch need one."""
        for _ in range(200):
            found = await self._metadata([name])
            if found and not found[0]["error_code"] and len(found[0]["partitions"]) == partitions \
                    and all(p["leader"] >= 0 for p in found[0]["partitions"]):
                return
            await asyncio.sleep(0.05)
        log.warning("topic %s: not every partition has a leader yet", name)

    async def list_topics(self) -> dict[str, TopicInfo]:
        await self._start()
        out: dict[str, TopicInfo] = {}
        for t in await self._metadata(None):
            if t["topic"].startswith("__") or t.get("is_internal"):
                continue
            info = self._info(t)
            if info is not None:
                out[info.name] = info
                self._partitions[info.name] = info.partitions
        return out

    async def _describe(self, name: str) -> TopicInfo | None:
        deadline = time.monotonic() + _METADATA_LAG
        while True:
            found = await self._metadata([name])
            info = self._info(found[0]) if found else None
            if info is not None or name not in self._partitions:
                return info
            if time.monotonic() > deadline:
                self._partitions.pop(name, None)  # deleted (by another node, say)
                return None
            # A topic this node created or has seen: a broker whose metadata lags behind the
            # one that answered before says it does not exist yet (a CREATE ... AS SELECT
            # would then size its sink with defaults, not the source's partitions).
            await asyncio.sleep(0.1)

    async def describe_topic(self, name: str) -> TopicInfo | None:
        await self._start()
        info = await self._describe(name)
        if info is None:
            return None
        self._partitions[name] = info.partitions
        return TopicInfo(info.name, info.partitions, info.replicas, await self._configs(name))

    async def _configs(self, name: str) -> tuple[tuple[str, str], ...]:
        assert self._admin is not None
        try:
            resps = await self._retry("describe configs", lambda: self._admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, name)]))
        except KafkaError:
            return ()
        out = []
        for resp in resps:
            for resource in resp.resources:
                for entry in resource[4]:
                    key, value, is_default = entry[0], entry[1], entry[3] if len(entry) > 3 else False
                    if value is not None and (key == "cleanup.policy" or not is_default):
                        out.append((key, value))
        return tuple(sorted(out))

    async def _assign(self, topic: str, records: Sequence[ProducerRecord]) -> list[int]:
        """Each record's partition, placed as Kafka's Java client places it."""
        partitioner = self._partitioners.get(topic)
        if partitioner is None:
            partitioner = self._partitioners[topic] = Partitioner()
        return partitioner.assign(records, await self._partition_count(topic))

    async def _partition_count(self, topic: str) -> int:
        n = self._partitions.get(topic)
        if n is None:
            info = await self._describe(topic)
            if info is None:
                raise UnknownTopicError(topic)
            n = self._partitions[topic] = info.partitions
        return n

    # -- produce ----------------------------------------------------------------------

    def codec(self, topic: str) -> int | None:
        """The compression of batches for ``topic``: None for the producers' own
        (``compression.type``), else an aiokafka codec (internal topics)."""
        return self._internal_codec if topic.startswith("_") else None

    async def produce(self, topic: str, records: Sequence[ProducerRecord]) -> list[tuple[int, int]]:
        await self._start()
        assert self._producer is not None
        return await produce_records(self._producer, topic, records,
                                     await self._assign(topic, records), self.codec(topic))

    async def send(self, topic: str, records: Sequence[ProducerRecord]) -> Awaitable[None]:
        """See ``Log.send``: the records are in the producer's batches when it returns."""
        await self._start()
        assert self._producer is not None
        _, sent = await send_records(self._producer, topic, records,
                                     await self._assign(topic, records), self.codec(topic))
        return asyncio.gather(*(f for _, futs in sent for f, _ in futs))

    # -- reading ----------------------------------------------------------------------

    async def fetch(self, topic: str, partition: int, offset: int,
                    max_records: int = 10000) -> RecordBatch:
        await self._start()
        tp = (topic, partition)
        async with self._reader_lock:  # only to find or make the reader
            reader = self._readers.get(tp)
            if reader is None:
                await self._partition_count(topic)
                reader = _Reader(self, topic, partition)
                await self._retry("reader", reader.start)
                self._readers[tp] = reader
                while len(self._readers) > _MAX_READERS:
                    _, old = self._readers.popitem(last=False)
                    await old.close()
            else:
                self._readers.move_to_end(tp)
        async with reader.lock:
            return await reader.read(offset, max_records)

    async def _offsets_of(self, topic: str, beginning: bool) -> list[int]:
        await self._start()
        assert self._offsets is not None
        n = await self._partition_count(topic)
        tps = [TopicPartition(topic, p) for p in range(n)]
        call = self._offsets.beginning_offsets if beginning else self._offsets.end_offsets
        got = await self._retry("list offsets", lambda: call(tps))
        return [got[tp] for tp in tps]

    async def end_offsets(self, topic: str) -> list[int]:
        return await self._offsets_of(topic, False)

    async def begin_offsets(self, topic: str) -> list[int]:
        return await self._offsets_of(topic, True)

    async def committed(self, group: str, topic: str) -> dict[int, int]:
        await self._start()
        assert self._admin is not None
        got = await self._retry("group offsets",
                                lambda: self._admin.list_consumer_group_offsets(group))
        return {tp.partition: meta.offset for tp, meta in got.items()
                if tp.topic == topic and meta.offset >= 0}

    async def stable_committed(self, group: str, topic: str,
                               partitions: Iterable[int]) -> dict[int, int]:
        """OffsetFetch with ``require_stable`` (see ``kafka_protocol``), asked again while
        a transaction committing one of the offsets is pending: a killed node's is aborted
        when it times out, so this waits up to about twice ``transaction_timeout_ms``; past
        ``_STABLE_WAIT`` it gives up (the stage restarts and asks again)."""
        found = await self.stable_committed_metadata(group, topic, partitions)
        return {p: offset for p, (offset, _meta) in found.items()}

    async def stable_committed_metadata(self, group: str, topic: str, partitions: Iterable[int]
                                        ) -> dict[int, tuple[int, str]]:
        """``stable_committed`` with the metadata committed with each offset."""
        await self._start()
        admin = self._admin
        assert admin is not None
        request = StableOffsetFetch(group, [(topic, sorted(partitions))])
        started = time.monotonic()
        warned = started
        while True:
            coordinator = await self._retry("group coordinator",
                                            lambda: admin.find_coordinator(group))
            # (``_send_request``: aiokafka's own way to send a request to one broker.)
            resp = await self._retry("group offsets",
                                     lambda: admin._send_request(request, coordinator))
            found: dict[int, tuple[int, str]] = {}
            pending: list[int] = []
            retry = resp.error_code in _COORDINATOR_MOVING
            if resp.error_code and not retry:
                raise KafkaError(f"group {group}: offset fetch failed: error {resp.error_code}")
            for _name, parts, _tags in resp.topics:
                for p, offset, _epoch, meta, error, _ in parts:
                    if error == UNSTABLE_OFFSET_COMMIT:
                        pending.append(p)
                    elif error in _COORDINATOR_MOVING:
                        retry = True
                    elif error:
                        raise KafkaError(f"group {group}: offset of {topic}-{p}: error {error}")
                    elif offset >= 0:
                        found[p] = (offset, meta or "")
            if not pending and not retry:
                return found
            now = time.monotonic()
            if now - started > _STABLE_WAIT:
                raise KafkaError(f"group {group}: offsets of {topic} {sorted(pending)} still "
                                 f"wait for a transaction after {_STABLE_WAIT:.0f}s")
            if now - warned > 5.0:
                warned = now
                log.info("group %s: waiting for the transaction pending on %s %s", group,
                         topic, sorted(pending))
            await asyncio.sleep(0.05)

    async def settle(self, topic: str, partitions: Iterable[int]) -> None:
        """Until no transaction is open on these partitions: their last stable offset is
        their high watermark. (Right after a transaction commits, its markers reach the
        partitions one by one: a restore reading to the stable end before the marker
        arrived would leave out what the transaction wrote.)"""
        await self._start()
        committed, uncommitted = self._offsets, self._watermarks
        assert committed is not None and uncommitted is not None
        tps = [TopicPartition(topic, p) for p in partitions]
        if not tps:
            return
        try:
            await self._partition_count(topic)
        except UnknownTopicError:
            return  # not created yet: nothing written, nothing open
        started = time.monotonic()
        while True:
            stable = await self._retry("list offsets", lambda: committed.end_offsets(tps))
            ends = await self._retry("list offsets", lambda: uncommitted.end_offsets(tps))
            open_ = [tp.partition for tp in tps if stable[tp] < ends[tp]]
            if not open_:
                return
            if time.monotonic() - started > _STABLE_WAIT:
                raise KafkaError(f"{topic} {open_}: a transaction is still open after "
                                 f"{_STABLE_WAIT:.0f}s")
            await asyncio.sleep(0.05)

    def consumer(self, group: str, topics: Iterable[str], listener: RebalanceListener | None = None,
                 reset: str = "earliest") -> "KafkaConsumer":
        return KafkaConsumer(self, group, list(dict.fromkeys(topics)), listener, reset)

    async def group_members(self, group: str) -> dict[str, set[tuple[str, int]]] | None:
        """The group's members (their client ids: ``<service>-<node>``) and the partitions
        each is assigned, as the group coordinator knows them."""
        tasks = await self.group_tasks(group)
        return None if tasks is None else {name: set(t.active) for name, t in tasks.items()}

    async def group_tasks(self, group: str) -> dict[str, MemberTasks] | None:
        await self._start()
        assert self._admin is not None
        try:
            resps = await self._retry("describe group",
                                      lambda: self._admin.describe_consumer_groups([group]))
        except KafkaError:
            return None
        out: dict[str, MemberTasks] = {}
        for resp in resps:
            for g in resp.groups:
                for member in g[5]:
                    client_id, raw = member[1], member[4]
                    got = decode_assignment(raw) if raw else MemberTasks()
                    had = out.get(client_id)
                    if had is not None:  # (a node's stale and new member, briefly)
                        got = MemberTasks(had.active | got.active, had.standby | got.standby,
                                          had.warmup | got.warmup)
                    out[client_id] = got
        return out

    def transactional(self, transactional_id: str) -> "KafkaTransaction":
        return KafkaTransaction(self, transactional_id)


# The record builder wants a list of headers; one shared empty one (it only reads it).
_NO_HEADERS: list = []


def _builder(producer: AIOKafkaProducer, compression: int | None) -> BatchBuilder:
    """An empty batch for ``producer``, compressed with its own codec (``compression``
    None) or with ``compression`` (an aiokafka codec number: 0 is none)."""
    if compression is None:
        return producer.create_batch()
    acc = producer._message_accumulator
    txn = producer._txn_manager
    return BatchBuilder(acc._batch_size, compression,
                        is_transactional=txn is not None and txn.transactional_id is not None)


def _record_columns(records: Sequence[ProducerRecord]
                    ) -> tuple[Sequence[Any], Sequence[Any], Sequence[int], Sequence[Any] | None]:
    """(keys, values, timestamps, headers or None) of ``records``, read column by column
    from the columnar kinds (``ProducerBatch``, ``RecordColumns``)."""
    kind = type(records)
    if kind is ProducerBatch:
        return records.keys, records.values, records.timestamps, records.headers
    if kind is RecordColumns:  # (one key and one timestamp for all)
        values = records.values
        return [records.key] * len(values), values, [records.timestamp] * len(values), None
    return ([r.key for r in records], [r.value for r in records], [r.timestamp for r in records],
            [r.headers for r in records] if any(r.headers for r in records) else None)


def _by_partition(partitions: Sequence[int]) -> dict[int, list[int]]:
    """Each partition's record indexes, in order (one pass)."""
    by_partition: dict[int, list[int]] = {}
    for i, p in enumerate(partitions):
        idx = by_partition.get(p)
        if idx is None:
            by_partition[p] = [i]
        else:
            idx.append(i)
    return by_partition


async def send_records(producer: AIOKafkaProducer, topic: str,
                       records: Sequence[ProducerRecord], partitions: Sequence[int],
                       compression: int | None = None
                       ) -> tuple[dict[int, list[int]], list[tuple[int, list[tuple[Awaitable, int]]]]]:
    """Queue ``records`` for their ``partitions`` in aiokafka batches built here (a produce
    call of N records is a few batches, not N ``send`` coroutines): returns once every batch
    is handed to the producer, with each partition's record indexes in order and the
    futures of its batches with their record counts (acknowledged in order). Columnar
    records (``ProducerBatch``, ``RecordColumns``) are read column by column, without a
    ProducerRecord each."""
    keys, values, timestamps, headers = _record_columns(records)
    by_partition = _by_partition(partitions)
    sent: list[tuple[int, list[tuple[Awaitable, int]]]] = []
    for p, idx in by_partition.items():
        futs: list[tuple[Awaitable, int]] = []
        b = _builder(producer, compression)
        append = b._builder.append
        rel = 0
        for i in idx:
            h = _NO_HEADERS if headers is None or not headers[i] else list(headers[i])
            if append(rel, timestamps[i], keys[i], values[i], h) is None:  # full: send it
                b._relative_offset = rel
                b.close()
                futs.append((await producer.send_batch(b, topic, partition=p), rel))
                b = _builder(producer, compression)
                append = b._builder.append
                rel = 0
                if append(rel, timestamps[i], keys[i], values[i], h) is None:
                    # (an empty batch takes any one record; never silently drop one)
                    raise ValueError(f"a record for {topic} does not fit in a batch")
            rel += 1
        b._relative_offset = rel
        futs.append((await producer.send_batch(b, topic, partition=p), rel))
        sent.append((p, futs))
    return by_partition, sent


async def produce_records(producer: AIOKafkaProducer, topic: str,
                          records: Sequence[ProducerRecord], partitions: Sequence[int],
                          compression: int | None = None) -> list[tuple[int, int]]:
    """Produce ``records`` to their ``partitions`` (``send_records``); returns (partition,
    offset) per record once acknowledged."""
    by_partition, sent = await send_records(producer, topic, records, partitions, compression)
    out: list[tuple[int, int]] = [(0, 0)] * len(records)
    for p, futs in sent:
        metas = await asyncio.gather(*(f for f, _ in futs))
        idx = iter(by_partition[p])
        # A partition's batches hold its records in order: consecutive offsets per batch.
        for meta, (_, count) in zip(metas, futs):
            for offset in range(meta.offset, meta.offset + count):
                out[next(idx)] = (p, offset)
    return out


class _Reader:
    """An assigned (group-less) consumer of one topic-partition for ``fetch``."""

    def __init__(self, log_: KafkaLog, topic: str, partition: int) -> None:
        self.tp = TopicPartition(topic, partition)
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=log_.bootstrap_servers, client_id=f"{log_.service_id}-reader",
            enable_auto_commit=False, isolation_level="read_committed",
            auto_offset_reset="earliest", max_partition_fetch_bytes=4 * _BATCH_BYTES,
            fetch_max_wait_ms=100)
        self.next: int | None = None
        # One read at a time: a read seeks, then polls, the consumer.
        self.lock = asyncio.Lock()

    async def start(self) -> None:
        await self.consumer.start()
        self.consumer.assign([self.tp])

    async def read(self, offset: int, max_records: int, stall: float = 30.0) -> RecordBatch:
        """Records from ``offset`` on; empty at the end of the partition (its last stable
        offset, asked afresh: a stale one would end a restore early), or when the position
        has not moved for ``stall`` seconds short of the end (only transaction markers are
        left there, which the client does not always step over)."""
        c = self.consumer
        tp = self.tp
        if self.next != offset:
            c.seek(tp, offset)
        self.next = offset
        last = (offset, time.monotonic())
        while True:
            got = await fetched_batches(c, max_records, 0.1, (tp,))
            if got:
                batch = got[0]
                # Skip what a seek to a compacted/aborted range may return before ``offset``.
                if batch.offsets[0] < offset:
                    batch = _from(batch, offset)
                    if not batch.offsets:
                        continue
                self.next = batch.offsets[-1] + 1
                return batch
            position = await c.position(tp)
            now = time.monotonic()
            if position != last[0]:
                last = (position, now)
            known = c.last_stable_offset(tp)
            if known is not None and position < known and now - last[1] < stall:
                continue  # records (or markers) are there: keep fetching
            if position >= (await c.end_offsets([tp]))[tp] or now - last[1] >= stall:
                self.next = position
                return RecordBatch(tp.topic, tp.partition)

    async def close(self) -> None:
        await _closed_quietly(self.consumer.stop, "a reader")


# -- columnar fetch ------------------------------------------------------------------------
#
# aiokafka's getmany makes a ConsumerRecord (a Python dataclass of 11 fields) per record out
# of the record objects its Cython decoder yields, and RecordBatch then takes them apart again.
# ``fetched_batches`` drains the consumer's fetched responses into columns directly, a Kafka
# record batch at a time (the decoder's record objects are the only per-record objects), with
# aiokafka's own read_committed filtering and position bookkeeping (``PartitionRecords``).
# It relies on aiokafka 0.14's fetcher internals; ``_COLUMNAR`` says whether they are there
# (else getmany and ``to_batch``).

try:
    from aiokafka.consumer.fetcher import READ_COMMITTED, FetchResult
    from aiokafka.errors import ConsumerStoppedError
    _COLUMNAR = all(hasattr(FetchResult, a) for a in ("check_assignment", "_update_position"))
except ImportError:  # pragma: no cover - another aiokafka
    _COLUMNAR = False


def _columns(pr: Any) -> Iterator[tuple[tuple[list, list, list, list, list | None], int]]:
    """The records of a ``PartitionRecords`` (its fetch response of one partition) as
    (offsets, timestamps, keys, values, headers or None) per Kafka record batch, with the
    offset after the batch; skipping control batches, aborted transactions (read_committed)
    and records before the fetch offset, as its own record iterator does
    (``pr.next_fetch_offset`` moves past what is skipped)."""
    records = pr._records
    read_committed = pr._isolation_level == READ_COMMITTED
    while records.has_next():
        batch = records.next_batch()
        if pr._check_crcs and not batch.validate_crc():
            raise KafkaError(f"Invalid CRC - {pr._tp}")
        if read_committed and batch.producer_id is not None:
            pr._consume_aborted_up_to(batch.base_offset)
            if batch.is_control_batch and pr._contains_abort_marker(batch):
                pr._aborted_producers.discard(batch.producer_id)
            if batch.is_transactional and batch.producer_id in pr._aborted_producers:
                pr.next_fetch_offset = batch.next_offset
                continue
        if batch.is_control_batch:
            pr.next_fetch_offset = batch.next_offset
            continue
        recs = list(batch)
        if recs and recs[0].offset < pr.next_fetch_offset:
            # (A compressed legacy message set, or a seek into the middle of a batch.)
            start = pr.next_fetch_offset
            recs = [r for r in recs if r.offset >= start]
        if not recs:
            # Compaction may have emptied a batch: its next offset still moves the position on.
            pr.next_fetch_offset = batch.next_offset
            continue
        headers: list | None = [r.headers for r in recs]
        if not any(headers):  # type: ignore[arg-type]
            headers = None
        else:
            headers = [tuple(h) for h in headers]  # type: ignore[union-attr]
        first, last = recs[0].offset, recs[-1].offset
        # Offsets without gaps (not compacted): a range, not an attribute read per record.
        offsets = (list(range(first, last + 1)) if last - first + 1 == len(recs)
                   else [r.offset for r in recs])
        yield ((offsets, [r.timestamp for r in recs], [r.key for r in recs],
                [r.value for r in recs], headers), batch.next_offset)


def _drain(res: Any, tp: TopicPartition, max_records: int) -> RecordBatch | None:
    """Up to ``max_records`` of a ``FetchResult`` as one RecordBatch (the rest of a Kafka
    record batch cut short waits on the result for the next call); None when it has none
    to give (its partition was paused, revoked or sought meanwhile)."""
    if not res.check_assignment(tp) or not res.has_more():
        return None
    pr = res._partition_records
    columns = getattr(res, "_streamsql_columns", None)
    if columns is None:
        columns = res._streamsql_columns = _columns(pr)
    rest = getattr(res, "_streamsql_rest", None)
    res._streamsql_rest = None
    out = RecordBatch(tp.topic, tp.partition)
    n = 0
    for chunk, after in itertools.chain((rest,) if rest is not None else (), columns):
        room = max_records - n
        if len(chunk[0]) > room:  # the rest of this Kafka batch goes to the next call
            res._streamsql_rest = (tuple(None if c is None else c[room:] for c in chunk), after)
            chunk = tuple(None if c is None else c[:room] for c in chunk)
            after = chunk[0][-1] + 1
        offsets, timestamps, keys, values, headers = chunk
        if headers is not None or out.headers is not None:
            if out.headers is None:
                out.headers = [()] * n
            out.headers.extend(headers if headers is not None else [()] * len(offsets))
        out.offsets += offsets
        out.timestamps += timestamps
        out.keys += keys
        out.values += values
        n += len(offsets)
        # Where this partition is read on from (and what ``check_assignment`` expects).
        pr.next_fetch_offset = after
        if n >= max_records:
            res._update_position()
            return out
    res._update_position()
    res._partition_records = None
    return out if n else None


async def fetched_batches(c: AIOKafkaConsumer, max_records: int, timeout: float,
                          partitions: Sequence[TopicPartition] = ()) -> list[RecordBatch]:
    """``c.getmany(*partitions, ...)`` (aiokafka 0.14's ``Fetcher.fetched_records``), with
    records as RecordBatches built column by column (see ``_columns``)."""
    if not _COLUMNAR:
        got = await c.getmany(*partitions, timeout_ms=int(timeout * 1000), max_records=max_records)
        return [to_batch(tp.topic, tp.partition, recs) for tp, recs in got.items() if recs]
    if c._closed:
        raise ConsumerStoppedError()
    c._coordinator.check_errors()
    fetcher, subscription = c._fetcher, c._subscription
    wanted = set(partitions)
    with subscription.fetch_context():
        while True:
            # Records of partitions being reassigned may not be this member's any more.
            if fetcher._subscriptions.reassignment_in_progress:
                await fetcher._subscriptions.wait_for_assignment()
            started = time.monotonic()
            out: list[RecordBatch] = []
            left = max_records
            for tp in list(fetcher._records):
                if wanted and tp not in wanted:
                    if not fetcher._subscriptions.is_assigned(tp):
                        del fetcher._records[tp]
                    continue
                res = fetcher._records[tp]
                if type(res) is FetchResult:
                    batch = _drain(res, tp, left)
                    if not res.has_more():
                        del fetcher._records[tp]  # all taken: fetch this partition again
                        fetcher._notify(fetcher._wait_consume_future)
                    if batch is None:
                        continue
                    out.append(batch)
                    left -= len(batch)
                    if left <= 0:
                        break
                elif out:
                    return out  # (the error is raised at the next call)
                else:
                    del fetcher._records[tp]
                    fetcher._notify(fetcher._wait_consume_future)
                    res.check_raise()
            if out or not timeout:
                return out
            waiter = fetcher._create_fetch_waiter()
            done, pending = await asyncio.wait([waiter], timeout=timeout)
            if not done or fetcher._closed:
                for fut in pending:
                    fut.cancel()
                return []
            waiter.result()  # (authorization errors)
            timeout = max(0.0, timeout - (time.monotonic() - started))


def _from(batch: RecordBatch, offset: int) -> RecordBatch:
    """The records of ``batch`` from ``offset`` on."""
    i = bisect.bisect_left(batch.offsets, offset)
    return RecordBatch(batch.topic, batch.partition, batch.offsets[i:], batch.timestamps[i:],
                       batch.keys[i:], batch.values[i:],
                       None if batch.headers is None else batch.headers[i:])


def to_batch(topic: str, partition: int, recs: list) -> RecordBatch:
    """aiokafka's records of one partition as a columnar batch."""
    headers = None
    if any(r.headers for r in recs):
        headers = [tuple((k, v) for k, v in r.headers) for r in recs]
    return RecordBatch(topic, partition, [r.offset for r in recs], [r.timestamp for r in recs],
                       [r.key for r in recs], [r.value for r in recs], headers)


class _Listener(ConsumerRebalanceListener):
    def __init__(self, owner: "KafkaConsumer") -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        parts = {(tp.topic, tp.partition) for tp in revoked}
        if parts and self.owner.listener is not None:
            await self.owner.listener.revoked(parts)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        parts = {(tp.topic, tp.partition) for tp in assigned}
        consumer = self.owner._consumer
        if self.owner.listener is None or consumer is None:
            return
        # aiokafka runs this in the background, concurrently with ``getmany``, and would
        # hand out records of the new partitions as soon as their positions are known:
        # they wait until the listener has restored their tasks and sought.
        consumer.pause(*assigned)
        try:
            await self.owner.listener.assigned(parts)
        finally:
            mine = consumer.assignment()
            consumer.resume(*(tp for tp in assigned if tp in mine))


class KafkaConsumer(Consumer):
    """A member of a Kafka consumer group (see ``KafkaLog.consumer``). The group is joined
    at the first poll; the listener hears of every assignment and revocation."""

    def __init__(self, log_: KafkaLog, group: str, topics: list[str],
                 listener: RebalanceListener | None, reset: str) -> None:
        self.log = log_
        self.group = group
        self.topics = topics
        self.listener = listener
        self.reset = "latest" if reset == "latest" else "earliest"
        self._consumer: AIOKafkaConsumer | None = None
        placement = getattr(listener, "placement", None)
        # Tasks placed by their state (Kafka Streams' assignor), else by ranges of partitions.
        self.assignor = TaskAssignor(log_.node_name, placement) if placement is not None else None

    async def _ensure(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            c = AIOKafkaConsumer(
                bootstrap_servers=self.log.bootstrap_servers, group_id=self.group,
                client_id=self.log.node_name, enable_auto_commit=False,
                auto_offset_reset=self.reset, isolation_level="read_committed",
                # One strategy only: aiokafka (0.14) sends a JoinGroup per strategy listed,
                # the second in the middle of the rebalance the first started, and the
                # coordinator then rebalances again (and again, with several members).
                partition_assignment_strategy=(
                    (self.assignor,) if self.assignor is not None else (RangePartitionAssignor,)),
                max_partition_fetch_bytes=4 * _BATCH_BYTES, fetch_max_wait_ms=100,
                session_timeout_ms=10000, heartbeat_interval_ms=1000,
                # The members of a rebalance get as long to rejoin as Java clients give
                # them (max.poll.interval.ms, not aiokafka's session timeout): a member
                # finishes and commits its batch in flight before it gives partitions up.
                max_poll_interval_ms=300000, rebalance_timeout_ms=300000,
                # Partitions added to (or topics created for) the subscription are noticed soon.
                metadata_max_age_ms=5000)
            await self.log._retry("group consumer", c.start)
            # Join only once this client's metadata has every topic: the group leader would
            # otherwise assign a just-created topic's partitions to nobody.
            # (The consumer's own metadata is what the leader assigns from: it is refreshed
            # here rather than waiting for ``metadata_max_age_ms``.)
            client = c._client
            for t in self.topics:
                client.add_topic(t)
            for _ in range(100):
                await client.force_metadata_update()
                if all(c.partitions_for_topic(t) for t in self.topics):
                    break
                await asyncio.sleep(0.1)
            c.subscribe(self.topics, listener=_Listener(self))
            self._consumer = c
        return self._consumer

    async def poll(self, max_records: int = 10000, timeout: float = 0.5) -> list[RecordBatch]:
        c = await self._ensure()
        return await fetched_batches(c, max_records, timeout)

    async def commit(self, offsets: dict[tuple[str, int], int],
                     metadata: dict[tuple[str, int], str] | None = None) -> None:
        c = await self._ensure()
        meta = metadata or {}
        try:
            await c.commit({TopicPartition(t, p): (o, meta.get((t, p), ""))
                            for (t, p), o in offsets.items()})
        except CommitFailedError as exc:
            # The group rebalanced: the partitions' new owner reads them again (at least once).
            log.warning("group %s: commit failed after a rebalance: %s", self.group, exc)

    def seek(self, topic: str, partition: int, offset: int) -> None:
        assert self._consumer is not None
        self._consumer.seek(TopicPartition(topic, partition), offset)

    def assignment(self) -> set[tuple[str, int]]:
        if self._consumer is None:
            return set()
        return {(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    def progress(self, topic: str, partition: int) -> tuple[int, int] | None:
        c = self._consumer
        if c is None:
            return None
        # aiokafka's own state: the position moves as poll returns records (and past the
        # transaction markers after them), the last stable offset with each fetch response.
        assignment = c._subscription.subscription and c._subscription.subscription.assignment
        if assignment is None:
            return None
        state = assignment.state_value(TopicPartition(topic, partition))
        if state is None or not state.has_valid_position or state.lso is None or state.lso < 0:
            return None
        return state.position, state.lso

    def pause(self, partitions: Iterable[tuple[str, int]]) -> None:
        if self._consumer is not None:
            mine = self._consumer.assignment()
            self._consumer.pause(*(tp for tp in (TopicPartition(t, p) for t, p in partitions)
                                   if tp in mine))

    def resume(self, partitions: Iterable[tuple[str, int]]) -> None:
        if self._consumer is not None:
            mine = self._consumer.assignment()
            self._consumer.resume(*(tp for tp in (TopicPartition(t, p) for t, p in partitions)
                                    if tp in mine))

    def group_metadata(self) -> GroupMetadata | None:
        """The generation and member id aiokafka's group coordinator client holds now (set
        when the JoinGroup answer arrives, before the listener hears of the assignment)."""
        coordinator = getattr(self._consumer, "_coordinator", None)
        generation = getattr(coordinator, "generation", -1)
        member_id = getattr(coordinator, "member_id", "")
        if generation < 0 or not member_id:
            return None  # not joined (yet, or again after the coordinator forgot it)
        return GroupMetadata(generation, member_id, getattr(coordinator, "_group_instance_id", None))

    def standbys(self) -> tuple[set[int], set[int]]:
        a = self.assignor
        if a is None or self._consumer is None:
            return set(), set()
        return set(a.standby), set(a.warmup)

    def rejoin(self) -> None:
        coordinator = getattr(self._consumer, "_coordinator", None)
        if coordinator is not None:
            coordinator.request_rejoin()

    async def close(self) -> None:
        c, self._consumer = self._consumer, None
        if c is not None:
            await _closed_quietly(c.stop, f"group consumer {self.group}")


class KafkaTransaction:
    """A transactional producer for one stage on one node: ``begin``; ``produce`` (outputs
    and changelogs) or ``send`` (outputs, handed over in the background: ``_Outbox``);
    ``commit(group, offsets, member=..., metadata=...)`` sends the input offsets inside the
    transaction and commits it; ``abort``; ``close``. ``log`` is a Log whose ``produce``
    goes into the open transaction (what the stage's state writes its changelogs through).
    Made on a running loop, it starts its producer at once (see ``_start``).

    ``commit`` does what aiokafka's ``send_offsets_to_transaction`` does, except that the
    offsets go in a TxnOffsetCommit v3 carrying the group member (aiokafka sends v0): the
    group is added to the transaction by aiokafka's own request handler, then this module
    sends the offsets to the group's coordinator, then aiokafka commits the transaction."""

    def __init__(self, log_: KafkaLog, transactional_id: str) -> None:
        self.base = log_
        self.transactional_id = transactional_id
        self._producer: AIOKafkaProducer | None = None
        self.log = _TransactionalLog(self)
        # The coordinator (broker id) of each group this transaction committed offsets to.
        self._group_coordinators: dict[str, int] = {}
        # The group ``begin`` is adding to the open transaction, and the task adding it.
        self._adding: tuple[str, asyncio.Task[None]] | None = None
        # The open transaction's output on its way to the producer (made at its first send).
        self._outbox: _Outbox | None = None
        # The partitions the last committed transaction wrote to (see ``begin``); none
        # after an abort (a partition gone since would hold every later transaction up).
        self._written: set[TopicPartition] = set()
        # The producer starting, made at once when there is a running loop (see ``_start``).
        self._starting: asyncio.Task[AIOKafkaProducer] | None = None
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            self._starting = asyncio.create_task(self._start())

    async def _start(self) -> AIOKafkaProducer:
        """A started producer with its producer id and epoch (InitProducerId, which fences
        an earlier producer with this transactional id and ends its open transaction). Made
        when the transaction is (Kafka Streams' initTransactions, at the stream thread's
        start): the stage's consumer joins its group meanwhile, rather than its first
        transaction waiting for it."""
        await self.base._start()
        p = self.base.new_producer(self.transactional_id)
        try:
            await self.base._retry("transactional producer", p.start)
            await p._txn_manager.wait_for_pid()
        except BaseException:
            await p.stop()
            raise
        return p

    async def _ensure(self) -> AIOKafkaProducer:
        if self._producer is None:
            # One producer, whoever asks first (a second one with the transactional id
            # would fence the first): callers meanwhile wait for the same start.
            starting = self._starting
            if starting is None:
                starting = self._starting = asyncio.create_task(self._start())
            p = await asyncio.shield(starting)
            if self._starting is starting:
                self._starting = None
                self._producer = p
            elif self._producer is None:  # (closed meanwhile)
                raise KafkaError(f"transaction {self.transactional_id}: closed")
        return self._producer

    async def begin(self, group: str | None = None) -> None:
        """Begin a transaction; with ``group`` (whose offsets ``commit`` will send), the
        group is added to it at once, in the background, rather than at commit time (one
        round trip less there)."""
        p = await self._ensure()
        state = p._txn_manager.state
        if state in (TransactionState.COMMITTING_TRANSACTION, TransactionState.ABORTING_TRANSACTION):
            # The last one's end is still on its way (whoever waited for it was cancelled):
            # a transaction begins once it is ended.
            await asyncio.shield(p._txn_manager.wait_for_transaction_end())
        await p.begin_transaction()
        self._adding = None
        self._drop_outbox()
        if group is not None:
            self._adding = (group, asyncio.create_task(self._add_group(p, group)))
        # The partitions the last transaction wrote to are added to this one at once, not
        # when its first batches come (the next transaction of a stage usually writes
        # where the last did): the coordinator's answer is not waited for later, with
        # the output held meanwhile. (One it does not write to is only marked at the end.)
        txn = p._txn_manager
        for tp in self._written:
            txn.maybe_add_partition_to_txn(tp)

    async def _added(self, p: AIOKafkaProducer, group: str) -> None:
        """``group`` is part of the open transaction (added now, or by ``begin``)."""
        adding, self._adding = self._adding, None
        if adding is not None:
            await adding[1]
            if adding[0] == group:
                return
        await self._add_group(p, group)

    async def produce(self, topic: str, records: Sequence[ProducerRecord]) -> list[tuple[int, int]]:
        p = await self._ensure()
        return await produce_records(p, topic, records, await self.base._assign(topic, records),
                                     self.base.codec(topic))

    async def send(self, topic: str, records: Sequence[ProducerRecord]) -> Awaitable[None]:
        """``produce`` without waiting: the records are queued for the producer and handed
        over in the background, after those of the transaction's earlier sends (see
        ``_Outbox``: the caller goes on while the coordinator adds the partitions to the
        transaction). Returns the transaction's acknowledgements, to await once it has
        committed (the same object for every send of a transaction). ``commit`` hands
        everything over first (and aiokafka flushes the batches before it ends the
        transaction). A topic is written either by ``send`` or by ``produce`` within a
        transaction (the two are not ordered)."""
        p = await self._ensure()
        partitions = await self.base._assign(topic, records)
        outbox = self._outbox
        if outbox is None:
            outbox = self._outbox = _Outbox(p, self.base.codec)
        await outbox.put(topic, records, partitions)
        return outbox.acknowledged

    async def _handed(self) -> None:
        """Every ``send`` of the open transaction has handed its batches to the producer
        (raises what failed one)."""
        outbox = self._outbox
        if outbox is not None:
            await outbox.close()

    def _drop_outbox(self) -> None:
        outbox, self._outbox = self._outbox, None
        if outbox is None:
            return
        if not outbox.task.done():
            outbox.cancel()
        elif not outbox.task.cancelled():
            outbox.task.exception()  # (a failure the transaction's end has reported)

    async def commit(self, group: str, offsets: dict[tuple[str, int], int], *,
                     member: GroupMetadata | None = None,
                     metadata: dict[tuple[str, int], str] | None = None) -> None:
        """Commit ``offsets`` (with ``metadata``) to ``group`` as ``member``, then the
        transaction. Raises ``FencedMemberError`` when the group has moved past ``member``
        (and ProducerFenced when another producer took over the transactional id); the
        transaction is then left open for the caller to ``abort``. Without ``member`` the
        group checks no member (as before KIP-447)."""
        p = await self._ensure()
        # The output's hand-over goes on meanwhile (it does not wait for the offsets).
        handed = asyncio.ensure_future(self._handed())
        try:
            if offsets:
                await self._added(p, group)
                await self._commit_offsets(p, group, offsets, member, metadata or {})
            else:
                adding, self._adding = self._adding, None
                if adding is not None:  # (never under the transaction's end)
                    await adding[1]
        except BaseException:
            handed.cancel()
            raise
        await handed  # (batches handed over later would not be in the transaction)
        self._written = set(p._txn_manager.txn_partitions)
        await p.commit_transaction()

    async def _add_group(self, p: AIOKafkaProducer, group: str) -> None:
        """AddOffsetsToTxn: the transaction coordinator will write the transaction's end to
        the group's offsets partition too. aiokafka's handler sends it (retrying where it
        can) and records in its transaction manager that the transaction is not empty, so
        ``commit_transaction`` and ``abort_transaction`` end it at the coordinator even when
        it produced nothing."""
        sender, txn = p._sender, p._txn_manager
        if not txn.is_in_transaction():
            raise KafkaError(f"transaction {self.transactional_id}: commit outside a transaction")
        started = time.monotonic()
        while True:
            node = await sender._find_coordinator(CoordinationType.TRANSACTION, self.transactional_id)
            if await _AddOffsetsToTxn(sender, group).do(node):
                break  # (a failed attempt has waited its backoff)
            if time.monotonic() - started > _TXN_COMMIT_WAIT:
                raise KafkaError(f"transaction {self.transactional_id}: cannot add group "
                                 f"{group} after {_TXN_COMMIT_WAIT:.0f}s")
        if txn.state == TransactionState.ABORTABLE_ERROR:
            # The handler reports some refusals (not authorized for the group) this way.
            txn.wait_for_transaction_end().result()

    async def _commit_offsets(self, p: AIOKafkaProducer, group: str,
                              offsets: dict[tuple[str, int], int], member: GroupMetadata | None,
                              metadata: dict[tuple[str, int], str]) -> None:
        """TxnOffsetCommit v3 to the group's coordinator, asked again (for
        ``_TXN_COMMIT_WAIT`` at most) while the coordinator moves or loads."""
        txn, client = p._txn_manager, p.client
        by_topic: dict[str, list[tuple[int, int, str]]] = {}
        for (topic, partition), offset in sorted(offsets.items()):
            by_topic.setdefault(topic, []).append(
                (partition, offset, metadata.get((topic, partition), "")))
        if member is None:  # generation -1, no member id: the coordinator checks no member
            member = GroupMetadata(-1, "")
        request = MemberTxnOffsetCommit(
            self.transactional_id, group, txn.producer_id, txn.producer_epoch,
            member.generation_id, member.member_id, member.group_instance_id, by_topic)
        started = time.monotonic()
        delay = 0.05
        while True:
            try:
                node = self._group_coordinators.get(group)
                if node is None:
                    node = await client.coordinator_lookup(CoordinationType.GROUP, group)
                    self._group_coordinators[group] = node
                resp = await client.send(node, request, group=ConnectionGroup.COORDINATION)
            except KafkaError as exc:
                if not exc.retriable:
                    raise
                self._group_coordinators.pop(group, None)
                problem = repr(exc)
            else:
                errors = {code for _name, parts, _ in resp.topics
                          for _p, code, _ in parts if code}
                if not errors:
                    return
                stale = errors & _STALE_MEMBER.keys()
                if stale:
                    code = min(stale)
                    raise FencedMemberError(
                        f"group {group}: offsets of transaction {self.transactional_id} "
                        f"refused ({_STALE_MEMBER[code]}): member {member.member_id!r} of "
                        f"generation {member.generation_id} is no longer current")
                if errors & _PRODUCER_FENCED:
                    raise ProducerFenced()
                if not errors <= _TXN_COMMIT_RETRIABLE:
                    raise KafkaError(f"group {group}: transactional offset commit failed: "
                                     f"error {sorted(errors)}")
                if errors & _LOOK_UP_COORDINATOR:
                    self._group_coordinators.pop(group, None)
                problem = f"error {sorted(errors)}"
            if time.monotonic() - started > _TXN_COMMIT_WAIT:
                raise KafkaError(f"group {group}: transactional offset commit still failing "
                                 f"after {_TXN_COMMIT_WAIT:.0f}s ({problem})")
            log.info("group %s: transactional offset commit: %s; retrying", group, problem)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def abort(self) -> None:
        self._written = set()
        outbox, self._outbox = self._outbox, None
        if outbox is not None:
            outbox.cancel()
            try:
                await outbox.task
            except BaseException:  # noqa: BLE001 - aborting anyway
                pass
        adding, self._adding = self._adding, None
        if adding is not None:
            adding[1].cancel()
            try:
                await adding[1]
            except BaseException:  # noqa: BLE001 - aborting anyway
                pass
        p = self._producer
        if p is None:
            return
        state = p._txn_manager.state
        if state in (TransactionState.IN_TRANSACTION, TransactionState.ABORTABLE_ERROR):
            try:
                await p.abort_transaction()
            except KafkaError:
                log.warning("aborting transaction %s failed", self.transactional_id, exc_info=True)
        elif state is TransactionState.COMMITTING_TRANSACTION:
            # The commit was asked for and can no longer be aborted (its waiter was cancelled,
            # a stop's grace ran out): the coordinator decides it, whole either way, and the
            # next producer of this transactional id finds it ended.
            log.info("transaction %s: its commit was under way; not aborted", self.transactional_id)

    async def close(self) -> None:
        self._written = set()
        self._drop_outbox()
        starting, self._starting = self._starting, None
        if starting is not None:
            starting.cancel()  # (nothing if it has started the producer: stopped here)
            try:
                started = await starting
            except BaseException:  # noqa: BLE001 - closing anyway
                pass
            else:
                await _closed_quietly(started.stop, "a transactional producer")
        p, self._producer = self._producer, None
        if p is not None:
            await _closed_quietly(p.stop, "a transactional producer")


class _Outbox:
    """The output records of one open transaction on their way into the producer's batches
    (``KafkaTransaction.send``): queued per partition, in order, and handed over by one task
    that puts all a partition has queued into as few batches as fit. The producer takes a
    partition's next batch only once its last one is on its way, and none before the
    coordinator has added the partition to the transaction: what comes meanwhile waits
    here and goes in one batch, not one per send (fewer, fuller produce requests, and no
    task per send that each needs turns of a busy event loop). ``close`` once nothing more
    will be sent: it returns when everything is handed over."""

    def __init__(self, producer: AIOKafkaProducer, codec: Callable[[str], int | None]) -> None:
        self.producer = producer
        self.codec = codec
        # (topic, partition) -> chunks: [keys, values, timestamps, headers, indexes, next].
        self.queued: dict[tuple[str, int], collections.deque[list[Any]]] = {}
        self.queued_records = 0
        # The batches handed over: their futures (acknowledged, or failed).
        self.futures: list[asyncio.Future[Any]] = []
        self.closing = False
        self._wake = asyncio.Event()
        # Set whenever the queue is below ``_OUTBOX_RECORDS`` (``put`` waits for it above).
        self._room = asyncio.Event()
        self._room.set()
        self.task = asyncio.create_task(self._pump())
        # What ``KafkaTransaction.send`` returns for each send of the transaction.
        self.acknowledged = _Acknowledged(self)

    async def put(self, topic: str, records: Sequence[ProducerRecord],
                  partitions: Sequence[int]) -> None:
        """Queue ``records`` for their ``partitions`` (raises what failed the hand-over)."""
        if self.task.done():
            if not self.task.cancelled():
                self.task.result()  # (raises what failed it)
            raise KafkaError("the transaction's records are no longer being sent")
        keys, values, timestamps, headers = _record_columns(records)
        queued = self.queued
        for p, idx in _by_partition(partitions).items():
            q = queued.get((topic, p))
            if q is None:
                q = queued[(topic, p)] = collections.deque()
            q.append([keys, values, timestamps, headers, idx, 0])
        self.queued_records += len(records)
        self._wake.set()
        if self.queued_records > _OUTBOX_RECORDS:
            # The producer lags far behind (a slow broker): the caller waits for it.
            self._room.clear()
            await self._room.wait()
            if self.task.done() and not self.task.cancelled():
                self.task.result()  # (raises what failed it)

    async def close(self) -> list[asyncio.Future[Any]]:
        """Hand over what is queued, then end; returns the futures of every batch."""
        self.closing = True
        self._wake.set()
        await self.task
        return self.futures

    def cancel(self) -> None:
        self.task.cancel()
        self._room.set()

    async def _pump(self) -> None:
        try:
            await self._hand_over()
        finally:
            self._room.set()  # (a sender waiting for room sees the failure)

    async def _hand_over(self) -> None:
        producer, queued = self.producer, self.queued
        while True:
            if not queued:
                if self.closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            for tp in list(queued):
                q = queued[tp]
                b = _builder(producer, self.codec(tp[0]))
                append = b._builder.append
                rel = 0
                full = False
                while q and not full:
                    chunk = q[0]
                    keys, values, timestamps, headers, idx, start = chunk
                    # (A step at a time: a full batch takes a while to build, and the
                    # producer's sender and the transaction's requests get turns between.)
                    end = min(len(idx), start + _OUTBOX_STEP)
                    for j in range(start, end):
                        i = idx[j]
                        h = _NO_HEADERS if headers is None or not headers[i] else list(headers[i])
                        if append(rel, timestamps[i], keys[i], values[i], h) is None:
                            if not rel:  # (an empty batch takes any one record)
                                raise ValueError(f"a record for {tp[0]} does not fit in a batch")
                            end, full = j, True  # the rest goes into the next batch
                            break
                        rel += 1
                    self.queued_records -= end - start
                    if end < len(idx):
                        chunk[5] = end
                        if not full:
                            await asyncio.sleep(0)
                        continue
                    q.popleft()
                if not q:
                    del queued[tp]
                b._relative_offset = rel
                b.close()
                if self.queued_records <= _OUTBOX_RECORDS:
                    self._room.set()
                self.futures.append(await producer.send_batch(b, tp[0], partition=tp[1]))
                # (``send_batch`` returns without a turn of the loop when the partition has
                # room: the producer's sender, and the transaction's requests, get one here.)
                await asyncio.sleep(0)


class _Acknowledged:
    """What ``KafkaTransaction.send`` returns: awaited once the transaction has committed,
    the acknowledgements of every batch of it (raises what failed one)."""

    __slots__ = ("outbox",)

    def __init__(self, outbox: _Outbox) -> None:
        self.outbox = outbox

    def __await__(self) -> Any:
        return self._wait().__await__()

    async def _wait(self) -> None:
        outbox = self.outbox
        if not outbox.task.done():  # (not committed yet: everything is handed over first)
            await asyncio.shield(outbox.close())
        outbox.task.result()  # (raises what failed the hand-over)
        for f in outbox.futures:
            await f


class _TransactionalLog(LogView):
    """The node's KafkaLog, except that ``produce`` writes into a transaction."""

    def __init__(self, txn: KafkaTransaction) -> None:
        super().__init__(txn.base)
        self._txn = txn

    async def produce(self, topic: str, records: Sequence[ProducerRecord]) -> list[tuple[int, int]]:
        return await self._txn.produce(topic, records)

    async def close(self) -> None:
        """Nothing: the view does not own the node's log."""

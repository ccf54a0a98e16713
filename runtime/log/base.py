"""The Log seam: partitioned topics, produce, fetch, group offsets.

Everything the engine knows about topics goes through this interface; backends are the
embedded log (segment files on local disk, one process) and, later, Kafka (aiokafka). Engine
code never imports a backend's client library.

Records move in columnar batches (``RecordBatch``: parallel lists for one topic-partition) so
the hot path iterates plain lists instead of allocating an object per record.
"""
from __future__ import annotations

import asyncio
import itertools
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable, Iterator, Mapping, Protocol, Sequence

from murmurhash2 import murmurhash2 as _murmurhash2

Headers = tuple[tuple[str, bytes | None], ...]


class TopicExistsError(Exception):
    """create_topic on a name that exists."""


class UnknownTopicError(Exception):
    """An operation on a topic that does not exist."""


@dataclass(frozen=True)
class TopicInfo:
    """A topic's name, partition count, replication factor and config
    (``cleanup.policy`` etc.)."""

    name: str
    partitions: int
    replicas: int = 1
    config: tuple[tuple[str, str], ...] = ()


@dataclass(slots=True)
class RecordBatch:
    """Records of one topic-partition, columnar. ``headers`` is None when no record in the
    batch has headers."""

    topic: str
    partition: int
    offsets: list[int] = field(default_factory=list)
    timestamps: list[int] = field(default_factory=list)
    keys: list[bytes | None] = field(default_factory=list)
    values: list[bytes | None] = field(default_factory=list)
    headers: list[Headers] | None = None

    def __len__(self) -> int:
        return len(self.offsets)

    @property
    def next_offset(self) -> int | None:
        return self.offsets[-1] + 1 if self.offsets else None


@dataclass(slots=True)
class ProducerRecord:
    """A record to produce. ``partition`` None lets the partitioner choose (murmur2 of the key,
    as Kafka's default partitioner does; round robin for a null key). ``partition_key``, when
    set, is hashed instead of the key: a windowed key's key without its window, as Kafka
    Streams' WindowedStreamPartitioner does, so all windows of a key share its partition."""

    key: bytes | None
    value: bytes | None
    timestamp: int
    headers: Headers = ()
    partition: int | None = None
    partition_key: bytes | None = None


class RecordColumns(Sequence[ProducerRecord]):
    """Records to produce held as columns: their values (bytes, or None), one key for all
    (None: null keys), one timestamp, no headers, the partitioner's choice of partition. A
    source's batch is made so, without a ProducerRecord per record. Every ``Log.produce``
    takes one (it is a sequence of ProducerRecords, made when read); the embedded log frames
    its values as they are."""

    __slots__ = ("values", "key", "timestamp")

    def __init__(self, values: Sequence[bytes | None], timestamp: int, key: bytes | None = None) -> None:
        self.values = values
        self.timestamp = timestamp
        self.key = key

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return RecordColumns(self.values[i], self.timestamp, self.key)
        return ProducerRecord(self.key, self.values[i], self.timestamp)

    def __iter__(self) -> Iterator[ProducerRecord]:
        key, ts = self.key, self.timestamp
        return (ProducerRecord(key, v, ts) for v in self.values)


class PackedValues(Sequence[bytes]):
    """A column of values (no nulls) held as their bytes back to back and their lengths
    (``array('i')``), each value being ``prefix`` + its bytes + ``suffix``: what a
    converter writes for a whole batch at once (JsonConverter's envelope around each
    payload), so that no bytes object is made per value; the embedded log frames it as it
    is (the affixes once). To anything else it is a sequence of bytes, made when asked for;
    equal to any sequence of the same values."""

    __slots__ = ("data", "lengths", "prefix", "suffix", "_starts")

    def __init__(self, data: bytes | memoryview, lengths: Any, prefix: bytes = b"", suffix: bytes = b"") -> None:
        self.data = data
        self.lengths = lengths
        self.prefix = prefix
        self.suffix = suffix
        self._starts: list[int] | None = None

    def __len__(self) -> int:
        return len(self.lengths)

    def _bounds(self) -> list[int]:
        if self._starts is None:
            self._starts = list(itertools.accumulate(self.lengths, initial=0))
        return self._starts

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self.lengths)))]
        if i < 0:
            i += len(self.lengths)
        if not 0 <= i < len(self.lengths):
            raise IndexError(i)
        starts = self._bounds()
        return b"".join((self.prefix, self.data[starts[i]:starts[i + 1]], self.suffix))

    def __iter__(self) -> Iterator[bytes]:
        starts, data = self._bounds(), self.data
        middles = map(data.__getitem__, map(slice, starts, itertools.islice(starts, 1, None)))
        if self.prefix or self.suffix:
            return map(b"".join, zip(itertools.repeat(self.prefix), middles, itertools.repeat(self.suffix)))
        return middles if type(data) is bytes else map(bytes, middles)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, (Sequence, PackedValues)) or isinstance(other, (str, bytes)):
            return NotImplemented
        return len(self) == len(other) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"PackedValues({list(self)!r})"


class ProducerBatch(Sequence[ProducerRecord]):
    """Records to produce, columnar, each with its own key, timestamp and headers (unlike
    ``RecordColumns``): what a fused pipeline writes (parallel lists), without a
    ProducerRecord per record. Backends that know it (Kafka) read the columns; to anything
    else it is a sequence of ProducerRecords, built when asked for. ``headers``: one tuple
    per record, or None when no record has any; ``partition_keys``: what each record's
    partition is hashed from instead of its key (windowed keys), or None."""

    __slots__ = ("keys", "values", "timestamps", "headers", "partition_keys")

    def __init__(self, keys: list[bytes | None], values: list[bytes | None], timestamps: list[int],
                 headers: list[Headers] | None = None,
                 partition_keys: list[bytes | None] | None = None) -> None:
        self.keys = keys
        self.values = values
        self.timestamps = timestamps
        self.headers = headers
        self.partition_keys = partition_keys

    def __len__(self) -> int:
        return len(self.keys)

    def _record(self, i: int) -> ProducerRecord:
        h = self.headers
        pk = self.partition_keys
        return ProducerRecord(self.keys[i], self.values[i], self.timestamps[i],
                              h[i] if h is not None else (), None,
                              pk[i] if pk is not None else None)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self._record(j) for j in range(*i.indices(len(self.keys)))]
        if i < 0:
            i += len(self.keys)
        if not 0 <= i < len(self.keys):
            raise IndexError(i)
        return self._record(i)

    def __iter__(self) -> Iterator[ProducerRecord]:
        h = self.headers
        pk = self.partition_keys
        n = len(self.keys)
        return map(ProducerRecord, self.keys, self.values, self.timestamps,
                   h if h is not None else itertools.repeat((), n), itertools.repeat(None, n),
                   pk if pk is not None else itertools.repeat(None, n))


@dataclass(frozen=True)
class GroupMetadata:
    """Who a consumer is in its group right now: the group's generation it joined and the
    member id the coordinator gave it (and its static ``group_instance_id``, if any). A
    transaction commits its input offsets as this member (``Transaction.commit``'s
    ``member``), so that the group coordinator refuses them once a rebalance made the
    member stale: a node that lost its partitions cannot commit their offsets (KIP-447)."""

    generation_id: int
    member_id: str
    group_instance_id: str | None = None


@dataclass(frozen=True)
class TaskPlacement:
    """How a group of several nodes places a stage's tasks (task p: partition p of each
    input topic) on its members, Kafka Streams' high-availability settings, and what this
    member has of them locally (``local_offsets``: task -> changelog positions its state
    covers, summed over the stage's stores; None for a stage without state). See
    ``streamsql.runtime.assignment``."""

    standby_replicas: int = 0
    max_warmup_replicas: int = 2
    acceptable_recovery_lag: int = 10_000
    local_offsets: Callable[[], Mapping[int, int]] | None = None


@dataclass(frozen=True)
class MemberTasks:
    """One group member's share, as its assignment says: active partitions (topic,
    partition), and the tasks it keeps warm (standby and warm-up tasks)."""

    active: frozenset[tuple[str, int]] = frozenset()
    standby: frozenset[int] = frozenset()
    warmup: frozenset[int] = frozenset()


class RebalanceListener(Protocol):
    """Told when a consumer's share of its group's partitions changes. ``assigned`` runs
    before records of the new partitions are polled (a stateful stage opens and restores
    their tasks there, and may ``seek``); ``revoked`` before they go to another member (it
    finishes and commits what it holds, and closes their tasks). The calls come during a
    poll or, on Kafka, concurrently with one: records polled before ``revoked`` may still
    be on their way to being processed (the stage runner drops them).

    A listener with a ``placement`` (``TaskPlacement``) has its group place tasks by it,
    where the backend has groups of several nodes (Kafka); ``Consumer.standbys`` then says
    which tasks this member is to keep warm."""

    async def assigned(self, partitions: set[tuple[str, int]]) -> None: ...

    async def revoked(self, partitions: set[tuple[str, int]]) -> None: ...


class Consumer(ABC):
    """A group member reading its assigned partitions from the group's committed offsets
    (``reset`` where the group has none: 'earliest' or 'latest')."""

    @abstractmethod
    async def poll(self, max_records: int = 10000, timeout: float = 0.5) -> list[RecordBatch]:
        """Batches available now, waiting up to ``timeout`` seconds for the first record."""

    @abstractmethod
    async def commit(self, offsets: dict[tuple[str, int], int],
                     metadata: dict[tuple[str, int], str] | None = None) -> None:
        """Commit the next offsets to read, per (topic, partition), each with its
        ``metadata`` string where given (``Log.stable_committed_metadata`` reads it back;
        backends that keep none ignore it)."""

    @abstractmethod
    def assignment(self) -> set[tuple[str, int]]: ...

    def seek(self, topic: str, partition: int, offset: int) -> None:
        """Read an assigned partition from ``offset`` at the next poll."""
        raise NotImplementedError

    def progress(self, topic: str, partition: int) -> tuple[int, int] | None:
        """An assigned partition's (next offset a poll returns, end offset as last heard
        from the log: the last stable offset on Kafka); None while not known yet. Their
        difference is the partition's lag: records on the log not polled yet."""
        return None

    def pause(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Polls return no records of ``partitions`` until they are resumed (or reassigned)."""

    def resume(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Undo ``pause``."""

    def group_metadata(self) -> GroupMetadata | None:
        """This member's current generation and member id, for ``Transaction.commit``; None
        before it joined the group, or where the backend has no generations (embedded)."""
        return None

    def standbys(self) -> tuple[set[int], set[int]]:
        """The tasks the group's latest assignment gives this member to keep warm: its
        standby tasks and its warm-up tasks (see ``TaskPlacement``); none by default."""
        return set(), set()

    def rejoin(self) -> None:
        """Ask the group for a new assignment (a member whose warm-up tasks caught up)."""

    @abstractmethod
    async def close(self) -> None: ...


class Log(ABC):
    """A backend of partitioned, append-only topics. ``distributed``: several nodes share
    it (Kafka), so the consumer groups' committed offsets, not a node's local state, say
    where processing resumes."""

    distributed = False

    @abstractmethod
    async def create_topic(self, name: str, partitions: int = 1, replicas: int = 1,
                           config: dict[str, str] | None = None) -> TopicInfo:
        """Create a topic; raises TopicExistsError if it exists."""

    @abstractmethod
    async def delete_topic(self, name: str) -> None: ...

    @abstractmethod
    async def list_topics(self) -> dict[str, TopicInfo]: ...

    async def describe_topic(self, name: str) -> TopicInfo | None:
        return (await self.list_topics()).get(name)

    @abstractmethod
    async def produce(self, topic: str, records: Sequence[ProducerRecord]) -> list[tuple[int, int]]:
        """Append records; returns (partition, offset) for each, once durable as configured."""

    async def send(self, topic: str, records: Sequence[ProducerRecord]) -> Awaitable[None]:
        """``produce``, split in two: returns once the records are handed to the backend
        (in order with every earlier ``send`` and ``produce`` to the same partitions), with
        an awaitable that completes once they are durable as configured (or raises). A
        caller goes on with its next batch while the acknowledgements come back. By default
        (a backend that acknowledges as it writes): ``produce``, then a completed one."""
        await self.produce(topic, records)
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    @abstractmethod
    async def fetch(self, topic: str, partition: int, offset: int,
                    max_records: int = 10000) -> RecordBatch:
        """Records from ``offset`` on (fewer, or none, at the end of the partition)."""

    @abstractmethod
    async def end_offsets(self, topic: str) -> list[int]:
        """Per partition: the offset the next record will get."""

    @abstractmethod
    async def begin_offsets(self, topic: str) -> list[int]: ...

    async def delete_records(self, topic: str, offsets: dict[int, int]) -> None:
        """Records before ``offsets[p]`` of each partition may go (Kafka's DeleteRecords):
        a query's repartition topic once its reader has committed past them. Backends that
        cannot keep them until retention does (the default)."""
        return None

    @abstractmethod
    async def committed(self, group: str, topic: str) -> dict[int, int]:
        """The group's committed next-offsets for a topic, by partition."""

    async def stable_committed(self, group: str, topic: str,
                               partitions: Iterable[int]) -> dict[int, int]:
        """``committed`` for ``partitions``, once no transaction committing one of them is
        pending: where a partition's new owner reads on, consistent with what the last
        transaction wrote elsewhere. (Backends whose transactions are never seen half-done:
        ``committed``.)"""
        wanted = set(partitions)
        return {p: o for p, o in (await self.committed(group, topic)).items() if p in wanted}

    async def stable_committed_metadata(self, group: str, topic: str, partitions: Iterable[int]
                                        ) -> dict[int, tuple[int, str]]:
        """``stable_committed`` with each offset's metadata string (what
        ``Transaction.commit`` stored with it; "" where none). (Backends that keep no
        metadata: "" for all.)"""
        return {p: (o, "") for p, o in (await self.stable_committed(group, topic, partitions)).items()}

    async def settle(self, topic: str, partitions: Iterable[int]) -> None:
        """Return once no transaction is open on these partitions, so reading them to their
        end reads everything committed so far. (Nothing to wait for without transactions.)"""
        return None

    @abstractmethod
    def consumer(self, group: str, topics: Iterable[str], listener: RebalanceListener | None = None,
                 reset: str = "earliest") -> Consumer:
        """A group consumer over ``topics``; ``listener`` hears of (re)assignments."""

    async def group_members(self, group: str) -> dict[str, set[tuple[str, int]]] | None:
        """A consumer group's members (by name) and their partitions; None where the backend
        does not know (the embedded log: one process is the only member)."""
        return None

    async def group_tasks(self, group: str) -> dict[str, MemberTasks] | None:
        """``group_members`` with each member's standby and warm-up tasks."""
        members = await self.group_members(group)
        if members is None:
            return None
        return {name: MemberTasks(frozenset(parts)) for name, parts in members.items()}

    async def delete_group(self, group: str) -> None:
        """Forget a consumer group and its committed offsets (a finished transient query's);
        nothing where the backend cannot (Kafka expires an empty group's offsets itself)."""
        return None

    def transactional(self, transactional_id: str) -> "Transaction | None":
        """A producer of atomic transactions (exactly_once_v2), None where the backend has
        none (the embedded log commits exactly-once its own way, ``streamsql.runtime.task``)."""
        return None

    async def close(self) -> None:
        return None


class LogView(Log):
    """A Log forwarding every call to ``inner``: the base of wrappers that change one or two
    of them (the test driver's produce, a transaction's produce). ``send`` is not
    forwarded: it goes through the view's own ``produce``."""

    def __init__(self, inner: Log) -> None:
        self.inner = inner

    @property  # type: ignore[override]
    def distributed(self) -> bool:
        return self.inner.distributed

    async def create_topic(self, name: str, partitions: int = 1, replicas: int = 1,
                           config: dict[str, str] | None = None) -> TopicInfo:
        return await self.inner.create_topic(name, partitions, replicas, config)

    async def delete_topic(self, name: str) -> None:
        await self.inner.delete_topic(name)

    async def list_topics(self) -> dict[str, TopicInfo]:
        return await self.inner.list_topics()

    async def describe_topic(self, name: str) -> TopicInfo | None:
        return await self.inner.describe_topic(name)

    async def produce(self, topic: str, records: Sequence[ProducerRecord]) -> list[tuple[int, int]]:
        return await self.inner.produce(topic, records)

    async def fetch(self, topic: str, partition: int, offset: int,
                    max_records: int = 10000) -> RecordBatch:
        return await self.inner.fetch(topic, partition, offset, max_records)

    async def end_offsets(self, topic: str) -> list[int]:
        return await self.inner.end_offsets(topic)

    async def begin_offsets(self, topic: str) -> list[int]:
        return await self.inner.begin_offsets(topic)

    async def delete_records(self, topic: str, offsets: dict[int, int]) -> None:
        await self.inner.delete_records(topic, offsets)

    async def committed(self, group: str, topic: str) -> dict[int, int]:
        return await self.inner.committed(group, topic)

    async def stable_committed(self, group: str, topic: str,
                               partitions: Iterable[int]) -> dict[int, int]:
        return await self.inner.stable_committed(group, topic, partitions)

    async def stable_committed_metadata(self, group: str, topic: str, partitions: Iterable[int]
                                        ) -> dict[int, tuple[int, str]]:
        return await self.inner.stable_committed_metadata(group, topic, partitions)

    async def settle(self, topic: str, partitions: Iterable[int]) -> None:
        await self.inner.settle(topic, partitions)

    def consumer(self, group: str, topics: Iterable[str], listener: RebalanceListener | None = None,
                 reset: str = "earliest") -> Consumer:
        return self.inner.consumer(group, topics, listener, reset)

    async def group_members(self, group: str) -> dict[str, set[tuple[str, int]]] | None:
        return await self.inner.group_members(group)

    async def group_tasks(self, group: str) -> dict[str, MemberTasks] | None:
        return await self.inner.group_tasks(group)

    async def delete_group(self, group: str) -> None:
        await self.inner.delete_group(group)

    def transactional(self, transactional_id: str) -> "Transaction | None":
        return self.inner.transactional(transactional_id)

    async def close(self) -> None:
        await self.inner.close()


class Transaction(Protocol):
    """Atomic writes across topics with the input offsets (Kafka transactions). ``log`` is a
    view of the Log whose ``produce`` writes into the open transaction.

    ``commit`` commits ``offsets`` (the next offsets to read, per input partition) to the
    consumer group ``group`` inside the transaction, then the transaction. With ``member``
    (the group consumer's ``group_metadata()``) the group refuses the offsets if that
    member is no longer current (a rebalance gave its partitions to another): ``commit``
    raises and the caller aborts. ``metadata``: a string per partition stored with its
    offset (``Log.stable_committed_metadata`` reads it back)."""

    log: Log

    async def begin(self, group: str | None = None) -> None:
        """Begin a transaction (``group``: the consumer group ``commit`` will send offsets
        to, if known, which a backend may add to the transaction at once)."""
        ...

    async def produce(self, topic: str, records: Sequence[ProducerRecord]) -> list[tuple[int, int]]: ...

    async def send(self, topic: str, records: Sequence[ProducerRecord]) -> Awaitable[None]:
        """``produce`` without waiting for the acknowledgements (see ``Log.send``): ``commit``
        waits for every record of the transaction."""
        ...

    async def commit(self, group: str, offsets: dict[tuple[str, int], int], *,
                     member: GroupMetadata | None = None,
                     metadata: dict[tuple[str, int], str] | None = None) -> None: ...

    async def abort(self) -> None: ...

    async def close(self) -> None: ...


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash (as its Java client computes it: MurmurHash2, seed 0x9747b28c), as
    a signed 32-bit int. (A compiled MurmurHash2, ~9x the pure-Python one: that was most of
    the cost of partitioning a batch whose keys were new to the partitioner's cache.)"""
    h = _murmurhash2(data if type(data) is bytes else bytes(data), 0x9747B28C)
    return h - 0x100000000 if h & 0x80000000 else h


class Partitioner:
    """Kafka's default partitioner for one topic: a record's own partition if it has one,
    else murmur2 of its key (as Kafka's Java client computes it), else round robin for a null
    key. Key -> partition is cached (a dict lookup is cheaper still than murmur2's call);
    the cache is bounded, and dropped when the topic's partition count changes."""

    CACHE_LIMIT = 65536

    __slots__ = ("_counter", "_cache", "_partitions")

    def __init__(self) -> None:
        self._counter = itertools.count()
        self._cache: dict[bytes, int] = {}
        self._partitions = 0

    def assign(self, records: Sequence["ProducerRecord"], partitions: int) -> list[int]:
        """The partition of each record; ValueError for a record's own partition out of range."""
        cache = self._cache
        if partitions != self._partitions:
            cache.clear()
            self._partitions = partitions
        if type(records) is ProducerBatch:
            return self._assign_keys(records.keys if records.partition_keys is None
                                     else records.partition_keys, partitions)
        counter = self._counter
        out: list[int] = []
        ap = out.append
        for r in records:
            p = r.partition
            if p is None:
                k = r.key if r.partition_key is None else r.partition_key
                if k is None:
                    p = next(counter) % partitions
                else:
                    try:
                        p = cache.get(k)
                    except TypeError:  # an unhashable buffer (bytearray): hash its bytes
                        k = bytes(k)
                        p = cache.get(k)
                    if p is None:
                        p = (murmur2(k) & 0x7FFFFFFF) % partitions
                        if len(cache) >= self.CACHE_LIMIT:
                            cache.clear()
                        # A right-sized copy: keys from orjson.dumps pin ~4 KiB buffers each.
                        cache[bytes(memoryview(k))] = p
            elif not 0 <= p < partitions:
                raise ValueError(f"Invalid partition given with record: {p} is not in the "
                                 f"range [0...{partitions}).")
            ap(p)
        return out

    def _assign_keys(self, keys: list[bytes | None], partitions: int) -> list[int]:
        """The partition of each key: one dict lookup per key (a C loop), murmur2 only for
        keys not seen before (once per key per batch), round robin for null keys."""
        cache = self._cache
        try:
            out = list(map(cache.get, keys))
        except TypeError:  # an unhashable buffer (bytearray): as bytes
            keys = [k if k is None else bytes(k) for k in keys]
            out = list(map(cache.get, keys))
        if None not in out:
            return out  # type: ignore[return-value]
        counter = self._counter
        for i, p in enumerate(out):
            if p is None:
                k = keys[i]
                if k is None:
                    out[i] = next(counter) % partitions
                    continue
                p = cache.get(k)
                if p is None:
                    p = (murmur2(k) & 0x7FFFFFFF) % partitions
                    if len(cache) >= self.CACHE_LIMIT:
                        cache.clear()
                    cache[bytes(memoryview(k))] = p
                out[i] = p
        return out  # type: ignore[return-value]

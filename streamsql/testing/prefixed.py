"""A namespace on a shared Log: ``PrefixedLog(inner, prefix)``.

Tests that run many independent scenarios on one real backend (QTT cases on one Kafka
broker, which reuse topic names such as ``test_topic`` or ``OUTPUT``) give each scenario a
prefix. On the way in, topic names, consumer group names and transactional ids get the
prefix; on the way out (``TopicInfo.name``, ``RecordBatch.topic``, assignments, listener
calls) it is taken off again, so the engine above never sees it. Listing topics shows only
the namespace's own.

``truncate`` and ``compact`` (embedded-log extras the engine looks for with ``hasattr``) are
offered exactly when the inner log has them; ``distributed``, ``path`` and ``node_name`` are
the inner log's.
"""
from __future__ import annotations

from typing import Any, Awaitable, Iterable, Sequence, TypeVar

from streamsql.runtime.log.base import (Consumer, GroupMetadata, Log, ProducerRecord,
                                        RebalanceListener, RecordBatch, TopicInfo)

__all__ = ["PrefixedLog"]

T = TypeVar("T")

# Inner-log extras forwarded with their first argument (a topic name) prefixed.
_TOPIC_METHODS = ("truncate", "compact")
# Inner-log attributes forwarded as they are.
_PLAIN_ATTRIBUTES = ("path", "node_name", "bootstrap_servers")


class PrefixedLog(Log):
    """See the module docstring. ``close_inner``: whether ``close`` closes the inner log
    (off when several namespaces share one inner log)."""

    def __init__(self, inner: Log, prefix: str, close_inner: bool = True) -> None:
        self.inner = inner
        self.prefix = prefix
        self.close_inner = close_inner
        self.distributed = bool(getattr(inner, "distributed", False))

    # -- names ------------------------------------------------------------------------

    def wrap(self, name: str) -> str:
        """The inner log's name of topic (or group, or transactional id) ``name``."""
        return self.prefix + name

    def unwrap(self, name: str) -> str:
        """This namespace's name of the inner log's ``name``."""
        return name[len(self.prefix):] if name.startswith(self.prefix) else name

    def _info(self, info: TopicInfo) -> TopicInfo:
        return TopicInfo(self.unwrap(info.name), info.partitions, info.replicas, info.config)

    def _batch(self, b: RecordBatch) -> RecordBatch:
        # A new batch (the inner log may keep the one it returned): only the topic differs.
        return RecordBatch(self.unwrap(b.topic), b.partition, b.offsets, b.timestamps, b.keys,
                           b.values, b.headers)

    def _parts_in(self, parts: Iterable[tuple[str, int]]) -> set[tuple[str, int]]:
        return {(self.wrap(t), p) for t, p in parts}

    def _parts_out(self, parts: Iterable[tuple[str, int]]) -> set[tuple[str, int]]:
        return {(self.unwrap(t), p) for t, p in parts}

    def _offsets_in(self, offsets: dict[tuple[str, int], T]) -> dict[tuple[str, int], T]:
        """Per-partition values (offsets, offset metadata) keyed by the inner topic names."""
        return {(self.wrap(t), p): o for (t, p), o in offsets.items()}

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes not found normally: the inner log's optional extras.
        if name in _TOPIC_METHODS:
            method = getattr(self.__dict__["inner"], name)

            async def forward(topic: str, *args: Any, **kwargs: Any) -> Any:
                return await method(self.wrap(topic), *args, **kwargs)
            return forward
        if name in _PLAIN_ATTRIBUTES:
            return getattr(self.__dict__["inner"], name)
        raise AttributeError(name)

    # -- topics -----------------------------------------------------------------------

    async def create_topic(self, name: str, partitions: int = 1, replicas: int = 1,
                           config: dict[str, str] | None = None) -> TopicInfo:
        return self._info(await self.inner.create_topic(self.wrap(name), partitions, replicas, config))

    async def delete_topic(self, name: str) -> None:
        await self.inner.delete_topic(self.wrap(name))

    async def list_topics(self) -> dict[str, TopicInfo]:
        return {self.unwrap(name): self._info(info)
                for name, info in (await self.inner.list_topics()).items()
                if name.startswith(self.prefix)}

    async def describe_topic(self, name: str) -> TopicInfo | None:
        info = await self.inner.describe_topic(self.wrap(name))
        return None if info is None else self._info(info)

    # -- records ----------------------------------------------------------------------

    async def produce(self, topic: str, records: Sequence[ProducerRecord]) -> list[tuple[int, int]]:
        return await self.inner.produce(self.wrap(topic), records)

    async def fetch(self, topic: str, partition: int, offset: int,
                    max_records: int = 10000) -> RecordBatch:
        return self._batch(await self.inner.fetch(self.wrap(topic), partition, offset, max_records))

    async def end_offsets(self, topic: str) -> list[int]:
        return await self.inner.end_offsets(self.wrap(topic))

    async def begin_offsets(self, topic: str) -> list[int]:
        return await self.inner.begin_offsets(self.wrap(topic))

    # -- groups -----------------------------------------------------------------------

    async def committed(self, group: str, topic: str) -> dict[int, int]:
        return await self.inner.committed(self.wrap(group), self.wrap(topic))

    async def stable_committed(self, group: str, topic: str,
                               partitions: Iterable[int]) -> dict[int, int]:
        return await self.inner.stable_committed(self.wrap(group), self.wrap(topic), partitions)

    async def stable_committed_metadata(self, group: str, topic: str, partitions: Iterable[int]
                                        ) -> dict[int, tuple[int, str]]:
        return await self.inner.stable_committed_metadata(self.wrap(group), self.wrap(topic),
                                                          partitions)

    async def settle(self, topic: str, partitions: Iterable[int]) -> None:
        await self.inner.settle(self.wrap(topic), partitions)

    def consumer(self, group: str, topics: Iterable[str], listener: RebalanceListener | None = None,
                 reset: str = "earliest") -> Consumer:
        inner_listener = None if listener is None else _PrefixedListener(self, listener)
        return _PrefixedConsumer(self, self.inner.consumer(
            self.wrap(group), [self.wrap(t) for t in topics], inner_listener, reset))

    async def group_members(self, group: str) -> dict[str, set[tuple[str, int]]] | None:
        members = await self.inner.group_members(self.wrap(group))
        if members is None:
            return None
        return {member: self._parts_out(parts) for member, parts in members.items()}

    def transactional(self, transactional_id: str) -> "_PrefixedTransaction | None":
        txn = self.inner.transactional(self.wrap(transactional_id))
        return None if txn is None else _PrefixedTransaction(self, txn)

    async def close(self) -> None:
        if self.close_inner:
            await self.inner.close()


class _PrefixedListener:
    """Hands the inner consumer's (prefixed) partitions to the engine's listener unprefixed."""

    def __init__(self, owner: PrefixedLog, listener: RebalanceListener) -> None:
        self.owner = owner
        self.listener = listener

    async def assigned(self, partitions: set[tuple[str, int]]) -> None:
        await self.listener.assigned(self.owner._parts_out(partitions))

    async def revoked(self, partitions: set[tuple[str, int]]) -> None:
        await self.listener.revoked(self.owner._parts_out(partitions))


class _PrefixedConsumer(Consumer):
    """A group consumer of the inner log, seen through the namespace."""

    def __init__(self, owner: PrefixedLog, inner: Consumer) -> None:
        self.owner = owner
        self.inner = inner

    async def poll(self, max_records: int = 10000, timeout: float = 0.5) -> list[RecordBatch]:
        return [self.owner._batch(b) for b in await self.inner.poll(max_records, timeout)]

    async def commit(self, offsets: dict[tuple[str, int], int],
                     metadata: dict[tuple[str, int], str] | None = None) -> None:
        await self.inner.commit(self.owner._offsets_in(offsets),
                                None if metadata is None else self.owner._offsets_in(metadata))

    def assignment(self) -> set[tuple[str, int]]:
        return self.owner._parts_out(self.inner.assignment())

    def seek(self, topic: str, partition: int, offset: int) -> None:
        self.inner.seek(self.owner.wrap(topic), partition, offset)

    def progress(self, topic: str, partition: int) -> tuple[int, int] | None:
        return self.inner.progress(self.owner.wrap(topic), partition)

    def pause(self, partitions: Iterable[tuple[str, int]]) -> None:
        self.inner.pause((self.owner.wrap(t), p) for t, p in partitions)

    def resume(self, partitions: Iterable[tuple[str, int]]) -> None:
        self.inner.resume((self.owner.wrap(t), p) for t, p in partitions)

    def group_metadata(self) -> GroupMetadata | None:
        return self.inner.group_metadata()

    async def close(self) -> None:
        await self.inner.close()


class _PrefixedTransaction:
    """The inner log's transaction; ``log`` is the namespace over the transaction's view."""

    def __init__(self, owner: PrefixedLog, inner: Any) -> None:
        self.owner = owner
        self.inner = inner
        self.log = PrefixedLog(inner.log, owner.prefix, close_inner=False)

    async def begin(self, group: str | None = None) -> None:
        await self.inner.begin(None if group is None else self.owner.wrap(group))

    async def produce(self, topic: str, records: Sequence[ProducerRecord]) -> list[tuple[int, int]]:
        return await self.inner.produce(self.owner.wrap(topic), records)

    async def send(self, topic: str, records: Sequence[ProducerRecord]) -> Awaitable[None]:
        return await self.inner.send(self.owner.wrap(topic), records)

    async def commit(self, group: str, offsets: dict[tuple[str, int], int], *,
                     member: GroupMetadata | None = None,
                     metadata: dict[tuple[str, int], str] | None = None) -> None:
        await self.inner.commit(
            self.owner.wrap(group), self.owner._offsets_in(offsets), member=member,
            metadata=None if metadata is None else self.owner._offsets_in(metadata))

    async def abort(self) -> None:
        await self.inner.abort()

    async def close(self) -> None:
        await self.inner.close()


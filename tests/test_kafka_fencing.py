"""Zombie fencing of transactional offset commits (KIP-447) on a real broker.

A stage's transaction commits its input offsets as the group member that read them
(``KafkaTransaction.commit(..., member=consumer.group_metadata())``). Once a rebalance has
moved the group on, a node still holding the old member's identity (a "zombie": it lost its
partitions but has not noticed yet) must not get its offsets or its output committed: the
commit raises ``FencedMemberError``, the caller aborts, and neither the offsets nor the
records of that transaction are ever seen.
"""
from __future__ import annotations

import asyncio
from typing import Callable

import pytest

from streamsql.runtime.log.base import Consumer, GroupMetadata, Log, ProducerRecord
from streamsql.runtime.log.kafka import FencedMemberError, KafkaLog
from streamsql.testing.prefixed import PrefixedLog

pytestmark = pytest.mark.timeout(120)


def _records(n: int, tag: str) -> list[ProducerRecord]:
    return [ProducerRecord(b"k%d" % i, f"{tag}-{i}".encode(), 1000 + i) for i in range(n)]


async def _values(log: Log, topic: str, partition: int = 0) -> list[str]:
    """Every value a read_committed reader sees in the partition, in offset order."""
    out: list[str] = []
    offset, end = 0, (await log.end_offsets(topic))[partition]
    while offset < end:
        batch = await log.fetch(topic, partition, offset)
        if not batch.offsets:
            break
        out += [v.decode() for v in batch.values if v is not None]
        offset = batch.offsets[-1] + 1
    return out


async def _until(consumers: list[Consumer], done: Callable[[], bool], what: str) -> None:
    """Poll every consumer (a member rejoins a rebalance as it polls) until ``done()``."""
    for _ in range(120):
        for c in consumers:
            await c.poll(timeout=0.1)
        if done():
            return
    raise AssertionError(f"timed out waiting for {what}")


def test_a_transaction_commits_offsets_and_metadata_as_the_current_member(kafka, unique_topic):
    """The group's offsets and each offset's metadata string are the committed ones; through
    a namespace (``PrefixedLog``) as well, which prefixes the metadata's partitions too."""
    namespace = unique_topic() + "-"

    async def main() -> None:
        log = PrefixedLog(KafkaLog(kafka.bootstrap_servers, {"linger.ms": 0}), namespace)
        txn = log.transactional("task-0")
        assert txn is not None
        consumer = log.consumer("group", ["src"])
        try:
            await log.create_topic("src", 2)
            await log.create_topic("sink", 1)
            await _until([consumer], lambda: consumer.assignment() == {("src", 0), ("src", 1)},
                          "the assignment")
            member = consumer.group_metadata()
            assert isinstance(member, GroupMetadata) and member.generation_id >= 0 and member.member_id
            await txn.begin()
            await txn.produce("sink", _records(2, "out"))
            await txn.commit("group", {("src", 0): 3, ("src", 1): 5}, member=member,
                             metadata={("src", 0): "stream-time=1234"})
            assert await log.stable_committed("group", "src", [0, 1]) == {0: 3, 1: 5}
            assert await log.committed("group", "src") == {0: 3, 1: 5}
            assert await log.stable_committed_metadata("group", "src", [0, 1]) == {
                0: (3, "stream-time=1234"), 1: (5, "")}
            assert await _values(log, "sink") == ["out-0", "out-1"]
        finally:
            await consumer.close()
            await txn.close()
            await log.close()
    asyncio.run(main())


def test_a_member_fenced_by_a_rebalance_cannot_commit(kafka, unique_topic):
    """After a second member joined (a new generation), a commit as the first member's old
    generation is refused: FencedMemberError; after the abort the group's offsets are
    unchanged and the transaction's records are invisible. The current generation commits."""
    source, sink, group = unique_topic("src"), unique_topic("sink"), unique_topic("group")

    async def main() -> None:
        log = KafkaLog(kafka.bootstrap_servers, {"linger.ms": 0})
        txn = log.transactional(unique_topic("txn"))
        first = log.consumer(group, [source])
        second = log.consumer(group, [source])
        try:
            await log.create_topic(source, 2)
            await log.create_topic(sink, 1)
            await _until([first], lambda: len(first.assignment()) == 2, "the first assignment")
            old = first.group_metadata()
            assert old is not None
            await txn.begin()
            await txn.produce(sink, _records(1, "before"))
            await txn.commit(group, {(source, 0): 3, (source, 1): 3}, member=old,
                             metadata={(source, 0): "t=1", (source, 1): "t=1"})

            # The second member joins: both rejoin, in a new generation, one partition each.
            await _until([first, second],
                         lambda: len(first.assignment()) == 1 and len(second.assignment()) == 1,
                         "the rebalance")
            current = first.group_metadata()
            assert current is not None and current.generation_id > old.generation_id

            # A zombie commits as the first member of the old generation.
            await txn.begin()
            await txn.produce(sink, _records(1, "zombie"))
            with pytest.raises(FencedMemberError):
                await txn.commit(group, {(source, 0): 9, (source, 1): 9}, member=old,
                                 metadata={(source, 0): "t=9", (source, 1): "t=9"})
            await txn.abort()
            assert await log.stable_committed(group, source, [0, 1]) == {0: 3, 1: 3}
            assert await log.stable_committed_metadata(group, source, [0, 1]) == {
                0: (3, "t=1"), 1: (3, "t=1")}
            assert await _values(log, sink) == ["before-0"]

            # The same member in the current generation commits (the producer is still usable).
            (mine,) = first.assignment()
            await txn.begin()
            await txn.produce(sink, _records(1, "after"))
            await txn.commit(group, {mine: 4}, member=current)
            expected = {0: 3, 1: 3}
            expected[mine[1]] = 4
            assert await log.stable_committed(group, source, [0, 1]) == expected
            assert await _values(log, sink) == ["before-0", "after-0"]
        finally:
            await first.close()
            await second.close()
            await txn.close()
            await log.close()
    asyncio.run(main())


def test_a_commit_without_a_member_still_works(kafka, unique_topic):
    """``member=None`` (generation -1, no member id): the group checks no member, even while
    the group has members of its own."""
    source, sink, group = unique_topic("src"), unique_topic("sink"), unique_topic("group")

    async def main() -> None:
        log = KafkaLog(kafka.bootstrap_servers, {"linger.ms": 0})
        txn = log.transactional(unique_topic("txn"))
        consumer = log.consumer(group, [source])
        try:
            await log.create_topic(source, 1)
            await log.create_topic(sink, 1)
            # Without members first, then with one.
            for offset, members in ((2, []), (5, [consumer])):
                if members:
                    await _until(members, lambda: bool(consumer.assignment()), "the assignment")
                await txn.begin()
                await txn.produce(sink, _records(1, f"at-{offset}"))
                await txn.commit(group, {(source, 0): offset})
                assert await log.stable_committed(group, source, [0]) == {0: offset}
                assert await log.stable_committed_metadata(group, source, [0]) == {0: (offset, "")}
            assert await _values(log, sink) == ["at-2-0", "at-5-0"]
        finally:
            await consumer.close()
            await txn.close()
            await log.close()
    asyncio.run(main())

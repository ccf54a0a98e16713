"""Exactly-once output on Kafka (issue 16): what a stage sends into its transaction is queued
and handed to the producer in as few batches as fit, in the background, while the stage
works on (``KafkaTransaction.send``); the partitions the last transaction wrote to are added
to the next one as it begins. On a real broker, read back with read_committed."""
from __future__ import annotations

import asyncio
import random
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from streamsql.runtime.log.base import ProducerRecord
from streamsql.runtime.log.kafka import KafkaLog

pytestmark = pytest.mark.timeout(180)


def test_transaction_sends_arrive_once_in_order_and_aborted_ones_never(kafka, unique_topic) -> None:
    """Transactions of many sends of every size (one record; tens of thousands, more than a
    batch holds per partition; some with headers), one aborted and one begun right after
    it, one writing only to a partition no transaction before it wrote to: read with
    read_committed, each partition holds every record of the committed transactions, once,
    in the order sent, and none of the aborted one."""
    topic, group = unique_topic(), unique_topic("group")
    rnd = random.Random(16)
    seq = 0

    def records(n: int, partitions: list[int]) -> list[ProducerRecord]:
        nonlocal seq
        out = []
        for _ in range(n):
            headers = (("n", b"%d" % seq),) if seq % 97 == 0 else ()
            out.append(ProducerRecord(b"k%d" % seq, b"v%d:" % seq + b"x" * rnd.randrange(0, 300),
                                      1_000_000 + seq, headers, rnd.choice(partitions)))
            seq += 1
        return out

    plan = [("commit", [0, 1, 2]), ("abort", [0, 1, 2]), ("commit", [0, 1, 2]),
            ("commit", [3]), ("commit", [0, 3])]
    sizes = [1, 7_000, 3, 25_000, 500, 1, 12_000]

    async def main() -> dict[int, list[tuple]]:
        log = KafkaLog(kafka.bootstrap_servers, {"linger.ms": 0})
        txn = log.transactional(f"t-{uuid.uuid4().hex[:8]}")
        want: dict[int, list[tuple]] = {p: [] for p in range(4)}
        try:
            await log.create_topic(topic, 4)
            for n, (outcome, partitions) in enumerate(plan):
                await txn.begin(group)
                sent: list[ProducerRecord] = []
                acks = []
                for size in sizes:
                    batch = records(size, partitions)
                    acks.append(await txn.send(topic, batch))
                    sent += batch
                    await asyncio.sleep(0)  # (the hand-over goes on between sends)
                if outcome == "abort":
                    await txn.abort()
                    continue
                await txn.commit(group, {(topic, 0): n + 1})
                for a in acks:
                    await a
                for r in sent:
                    want[r.partition].append((r.key, r.value, r.timestamp, tuple(r.headers)))
        finally:
            await txn.close()
            await log.close()
        return want

    async def read() -> dict[int, list[tuple]]:
        consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap_servers,
                                    isolation_level="read_committed", enable_auto_commit=False)
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(4)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            got: dict[int, list[tuple]] = {p: [] for p in range(4)}
            for _ in range(600):
                if all([await consumer.position(tp) >= ends[tp] for tp in tps]):
                    break
                for tp, recs in (await consumer.getmany(timeout_ms=200, max_records=50_000)).items():
                    got[tp.partition] += [(r.key, r.value, r.timestamp, tuple(r.headers))
                                          for r in recs]
            return got
        finally:
            await consumer.stop()

    want = asyncio.run(main())
    assert sum(map(len, want.values())) == 4 * sum(sizes)
    got = asyncio.run(read())
    for p in range(4):
        assert len(got[p]) == len(want[p]), p
        assert got[p] == want[p], p


def test_a_commit_whose_waiter_is_cancelled_is_not_aborted_and_the_next_transaction_waits_for_it(
        kafka, unique_topic) -> None:
    """A stop whose grace runs out cancels a stage while it waits for its commit: the commit
    is on its way and can no longer be aborted. The stage's abort then leaves it be (it
    raised aiokafka's 'Invalid state transition' and the stage failed), and the next
    transaction begins once it has ended: both are read whole with read_committed."""
    topic, group = unique_topic(), unique_topic("group")

    async def main() -> None:
        from aiokafka.producer.transaction_manager import TransactionState

        log = KafkaLog(kafka.bootstrap_servers, {"linger.ms": 0})
        txn = log.transactional(f"t-{uuid.uuid4().hex[:8]}")
        try:
            await log.create_topic(topic, 1)
            await txn.begin(group)
            await (await txn.send(topic, [ProducerRecord(b"k", b"first", 1, (), 0)]))
            committing = asyncio.create_task(txn.commit(group, {(topic, 0): 1}))
            producer = txn._producer
            while producer is None or producer._txn_manager.state is not TransactionState.COMMITTING_TRANSACTION:
                await asyncio.sleep(0)
                producer = txn._producer
            committing.cancel()
            with pytest.raises(asyncio.CancelledError):
                await committing
            await txn.abort()  # (as the stage's failure path does)
            await txn.begin(group)
            await (await txn.send(topic, [ProducerRecord(b"k", b"second", 2, (), 0)]))
            await txn.commit(group, {(topic, 0): 2})
        finally:
            await txn.close()
            await log.close()

    async def read() -> list[bytes]:
        consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap_servers,
                                    isolation_level="read_committed", enable_auto_commit=False)
        await consumer.start()
        try:
            tp = TopicPartition(topic, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            end = (await consumer.end_offsets([tp]))[tp]
            got: list[bytes] = []
            for _ in range(100):
                if await consumer.position(tp) >= end:
                    break
                for recs in (await consumer.getmany(timeout_ms=200)).values():
                    got += [r.value for r in recs]
            return got
        finally:
            await consumer.stop()

    asyncio.run(main())
    assert asyncio.run(read()) == [b"first", b"second"]

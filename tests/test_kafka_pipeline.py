"""The Kafka I/O cycle's fast paths (issue 16): columnar records from the fetch response to
the produce request, partitions picked once per key per batch, internal topics uncompressed,
and at-least-once output pipelined (the next poll is processed while the last one's acks and
offset commit are on their way). Unit tests first, then against a real broker."""
from __future__ import annotations

import asyncio
import random
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streamsql.runtime.log.base import Partitioner, ProducerRecord, ProducerBatch, murmur2
from streamsql.runtime.log.kafka import KafkaLog

pytestmark = pytest.mark.timeout(120)


# -- no broker --------------------------------------------------------------------------------

def test_record_columns_are_a_sequence_of_producer_records() -> None:
    cols = ProducerBatch([b"a", None, b"c"], [b"1", b"2", None], [10, 20, 30],
                         [(), (("h", b"x"),), ()], [b"a0", None, b"c0"])
    assert len(cols) == 3
    assert list(cols) == [ProducerRecord(b"a", b"1", 10, (), None, b"a0"),
                          ProducerRecord(None, b"2", 20, (("h", b"x"),), None, None),
                          ProducerRecord(b"c", None, 30, (), None, b"c0")]
    assert cols[-1] == ProducerRecord(b"c", None, 30, (), None, b"c0")
    assert cols[1:] == list(cols)[1:]
    assert list(ProducerBatch([b"k"], [b"v"], [1])) == [ProducerRecord(b"k", b"v", 1)]
    with pytest.raises(IndexError):
        cols[3]


def test_columnar_partitions_are_the_java_clients() -> None:
    keys = [f"user-{i % 300}".encode() for i in range(2000)] + [bytearray(b"user-7"), b""]
    expected = [(murmur2(bytes(k)) & 0x7FFFFFFF) % 7 for k in keys]
    columnar = Partitioner().assign(ProducerBatch(keys, [None] * len(keys), [0] * len(keys)), 7)
    assert columnar == expected
    # Warm cache, and per record: the same answers.
    p = Partitioner()
    assert p.assign([ProducerRecord(k, None, 0) for k in keys], 7) == expected
    assert p.assign(ProducerBatch(keys, [None] * len(keys), [0] * len(keys)), 7) == expected
    # Windowed keys: the partition of the key without its window.
    windowed = ProducerBatch([k + b"\0" * 8 for k in keys[:50]], [None] * 50, [0] * 50,
                             partition_keys=keys[:50])
    assert Partitioner().assign(windowed, 7) == expected[:50]
    # Null keys: round robin over every partition.
    assert sorted(Partitioner().assign(ProducerBatch([None] * 7, [b"v"] * 7, [0] * 7), 7)) == list(range(7))


@pytest.mark.parametrize("data", [b"", b"a", b"ab", b"abc", b"abcd", b"abcde", bytes(range(256)) * 2])
def test_murmur2_unpacking_words_matches_the_bytewise_definition(data: bytes) -> None:
    def reference(data: bytes) -> int:  # Kafka's Utils.murmur2, byte by byte
        m, length = 0x5BD1E995, len(data)
        h = (0x9747B28C ^ length) & 0xFFFFFFFF
        for i in range(length // 4):
            k = int.from_bytes(data[i * 4:i * 4 + 4], "little")
            k = (k * m) & 0xFFFFFFFF
            k ^= k >> 24
            k = (k * m) & 0xFFFFFFFF
            h = ((h * m) & 0xFFFFFFFF) ^ k
        rest, index = length % 4, length & ~3
        if rest == 3:
            h ^= data[index + 2] << 16
        if rest >= 2:
            h ^= data[index + 1] << 8
        if rest >= 1:
            h ^= data[index]
            h = (h * m) & 0xFFFFFFFF
        h ^= h >> 13
        h = (h * m) & 0xFFFFFFFF
        h ^= h >> 15
        return h - 0x100000000 if h & 0x80000000 else h

    assert murmur2(data) == reference(data)
    assert murmur2(bytearray(data)) == reference(data)
    # Every length's tail, and the sign of the result, over random keys.
    rng = random.Random(len(data))
    for n in range(2000):
        key = rng.randbytes(n % 67)
        assert murmur2(key) == reference(key)


def test_internal_topics_are_uncompressed_by_default() -> None:
    log = KafkaLog("127.0.0.1:1", {})
    assert log.codec("_streamsql_x_query_CSAS_1-Aggregate-changelog") == 0
    assert log.codec("PAGEVIEWS") is None  # the producer's own: lz4
    lz4 = KafkaLog("127.0.0.1:1", {"ksql.internal.topic.compression.type": "lz4"})
    assert lz4.codec("_streamsql_x-repartition") is None
    zstd = KafkaLog("127.0.0.1:1", {"ksql.internal.topic.compression.type": "zstd",
                                    "ksql.streams.producer.compression.type": "none"})
    assert zstd.compression is None and zstd.codec("_x") not in (None, 0)
    with pytest.raises(ValueError, match="compression.type"):
        KafkaLog("127.0.0.1:1", {"ksql.internal.topic.compression.type": "brotli"})


# -- on a broker ------------------------------------------------------------------------------

def test_columnar_fetch_reads_what_getmany_reads(kafka, unique_topic) -> None:
    """Headers, null keys and values, aborted transactions and their markers, a compacted
    start: polled as columns, the same records as aiokafka's own records."""
    topic, group = unique_topic(), unique_topic("group")

    async def main() -> None:
        log = KafkaLog(kafka.bootstrap_servers, {"linger.ms": 0})
        txn = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers,
                               transactional_id=f"t-{uuid.uuid4().hex[:6]}")
        try:
            await log.create_topic(topic, 2)
            await log.produce(topic, [ProducerRecord(b"k%d" % i, b"v%d" % i, 1000 + i, (), i % 2)
                                      for i in range(10)])
            await txn.start()
            await txn.begin_transaction()  # aborted: never read
            for i in range(5):
                await txn.send(topic, b"aborted", key=b"x", partition=i % 2)
            await txn.abort_transaction()
            await log.produce(topic, [ProducerRecord(None, None, 2000, (("h", b"1"), ("n", None)), 0),
                                      ProducerRecord(b"last", b"", 2001, (), 1)])
            expected: dict[int, list[tuple]] = {0: [], 1: []}
            raw = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap_servers,
                                   isolation_level="read_committed", enable_auto_commit=False)
            await raw.start()
            tps = [TopicPartition(topic, p) for p in range(2)]
            raw.assign(tps)
            await raw.seek_to_beginning(*tps)
            for _ in range(20):
                for tp, recs in (await raw.getmany(timeout_ms=200)).items():
                    expected[tp.partition] += [(r.offset, r.timestamp, r.key, r.value,
                                                tuple(r.headers)) for r in recs]
            await raw.stop()
            assert sum(map(len, expected.values())) == 12
            consumer = log.consumer(group, [topic])
            got: dict[int, list[tuple]] = {0: [], 1: []}
            for _ in range(40):
                polled = await consumer.poll(max_records=3, timeout=0.25)
                assert sum(map(len, polled)) <= 3  # (a Kafka batch cut short: its rest next)
                for b in polled:
                    headers = b.headers or [()] * len(b)
                    got[b.partition] += list(zip(b.offsets, b.timestamps, b.keys, b.values, headers))
                if sum(map(len, got.values())) == 12:
                    break
            assert got == expected
            await consumer.close()
            # ``fetch`` (restores, PRINT) from an offset inside a batch.
            batch = await log.fetch(topic, 0, 3)
            rest = [o for o, *_ in expected[0] if o >= 3]
            assert batch.offsets and batch.offsets == rest[:len(batch.offsets)]
        finally:
            await txn.stop()
            await log.close()

    asyncio.run(main())


def test_pipelined_stage_commits_only_acknowledged_output_in_order(kafka, unique_topic) -> None:
    """A stateless CSAS on Kafka (at least once, pipelined): every input record's output is
    written exactly once in a run without failures, and the group's committed offsets are
    the input's end once it stops: nothing in flight was left uncommitted."""
    from streamsql.engine import Engine

    src = unique_topic("src").replace("-", "_").upper()
    service = f"pipe_{uuid.uuid4().hex[:6]}"

    async def main() -> None:
        log = KafkaLog(kafka.bootstrap_servers, {"ksql.service.id": service})
        engine = Engine(log, {"ksql.service.id": service, "auto.offset.reset": "earliest"})
        try:
            await engine.start()
            await log.create_topic(src, 3)
            n = 30_000
            await log.produce(src, [ProducerRecord(b"k%d" % (i % 1000), b'{"V":%d}' % i, i)
                                    for i in range(n)])
            await engine.execute(f"CREATE STREAM s (k STRING KEY, v BIGINT) WITH "
                                 f"(kafka_topic='{src}', value_format='JSON');"
                                 f"CREATE STREAM out_{service} AS SELECT k, v * 2 AS w FROM s "
                                 f"WHERE v % 3 <> 0;")
            runner = next(iter(engine.runners.values()))[0]
            for _ in range(600):
                if runner.processed >= n:
                    break
                await asyncio.sleep(0.1)
            assert runner.processed == n
            group = runner.group
            await engine.close()
            committed = await log.committed(group, src)
            assert sum(committed.values()) == n
            sink = f"OUT_{service.upper()}"
            assert sum(await log.end_offsets(sink)) == sum(1 for i in range(n) if i % 3)
        finally:
            await log.close()
    asyncio.run(main())


# -- the pipelined runner, on a stand-in log whose acks come when the test says -----------------

class _Log:
    """A distributed Log stand-in: ``send`` hands back a future the test resolves; the
    consumer polls the batches given and records the commits."""

    distributed = True

    def __init__(self, polls: list[list]) -> None:
        self.polls = polls
        self.acks: list[asyncio.Future] = []
        self.commits: list[dict] = []
        self.sent: list[int] = []

    async def send(self, topic: str, records) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        self.acks.append(fut)
        self.sent.append(len(records))
        return fut

    def consumer(self, group, topics, listener=None, reset="earliest"):
        log = self

        class Consumer:
            async def poll(self, max_records=10000, timeout=0.5):
                if log.polls:
                    return log.polls.pop(0)
                await asyncio.sleep(0.01)
                return []

            async def commit(self, offsets, metadata=None):
                log.commits.append(dict(offsets))

            def assignment(self):
                return {("in", 0), ("in", 1)}

            def group_metadata(self):
                return "member-1"

            async def close(self):
                pass

        return Consumer()


class _Stage:
    name = "s"
    source_topic = "in"
    sink_topic = "out"

    def process(self, batch):
        return [ProducerRecord(k, v, t) for k, v, t in zip(batch.keys, batch.values, batch.timestamps)]


def _batch(partition: int, first: int, n: int):
    from streamsql.runtime.log.base import RecordBatch
    offsets = list(range(first, first + n))
    return RecordBatch("in", partition, offsets, offsets, [b"k"] * n, [b"v"] * n)


def test_pipelined_commits_wait_for_acks_and_go_in_order() -> None:
    """Acks that come back out of order: no poll's offsets are committed before its own
    output and every earlier poll's is acknowledged; a failed ack commits nothing after."""
    from streamsql.runtime.query import StageRunner

    async def main() -> None:
        log = _Log([[_batch(0, 0, 3)], [_batch(1, 0, 2)], [_batch(0, 3, 4)]])
        runner = StageRunner(_Stage(), "g", log)  # type: ignore[arg-type]
        runner.start()
        for _ in range(100):
            if len(log.acks) == 3:
                break
            await asyncio.sleep(0.01)
        assert log.sent == [3, 2, 4] and log.commits == []  # all three in flight
        log.acks[2].set_result(None)
        log.acks[1].set_result(None)
        await asyncio.sleep(0.05)
        assert log.commits == [] and runner.processed == 0  # the first is not acknowledged
        log.acks[0].set_result(None)
        await asyncio.sleep(0.05)
        assert log.commits == [{("in", 0): 3}, {("in", 1): 2}, {("in", 0): 7}]
        assert runner.processed == 9
        # A failed send: its offsets and every later poll's stay uncommitted.
        log.polls += [[_batch(1, 2, 1)], [_batch(0, 7, 1)]]
        for _ in range(100):
            if len(log.acks) == 5:
                break
            await asyncio.sleep(0.01)
        log.acks[4].set_result(None)
        log.acks[3].set_exception(OSError("broker gone"))
        await asyncio.sleep(0.1)
        assert len(log.commits) == 3
        assert runner.errors and "broker gone" in runner.errors[-1][1]
        await runner.stop(grace=0.5)

    asyncio.run(main())


def test_pipelined_stop_commits_what_is_in_flight() -> None:
    from streamsql.runtime.query import StageRunner

    async def main() -> None:
        log = _Log([[_batch(0, 0, 5), _batch(1, 0, 5)]])
        runner = StageRunner(_Stage(), "g", log)  # type: ignore[arg-type]
        runner.start()
        for _ in range(100):
            if log.acks:
                break
            await asyncio.sleep(0.01)
        stopping = asyncio.create_task(runner.stop(grace=2.0))
        await asyncio.sleep(0.05)
        assert log.commits == []
        for a in log.acks:
            a.set_result(None)
        await stopping
        assert log.commits == [{("in", 0): 5, ("in", 1): 5}]

    asyncio.run(main())


class _Txn:
    """A transaction stand-in: what was begun, sent and committed, in order."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    async def begin(self, group=None) -> None:
        self.events.append(("begin",))

    async def send(self, topic, records):
        self.events.append(("send", len(records)))
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    async def commit(self, group, offsets, *, member=None, metadata=None) -> None:
        self.events.append(("commit", dict(offsets)))

    async def abort(self) -> None:
        self.events.append(("abort",))

    async def close(self) -> None:
        pass


def test_exactly_once_transaction_spans_the_commit_interval() -> None:
    """Polls within ``commit.interval.ms`` share one transaction (offsets of all of them
    committed in it); a revocation commits the open one before the partitions go."""
    from streamsql.runtime.query import StageRunner

    async def main() -> None:
        log = _Log([[_batch(0, 0, 3)], [_batch(1, 0, 2)], [_batch(0, 3, 4)]])
        txn = _Txn()
        runner = StageRunner(_Stage(), "g", log, transaction=txn,  # type: ignore[arg-type]
                             commit_interval_ms=300)
        runner.start()
        for _ in range(100):
            if sum(1 for e in txn.events if e[0] == "send") == 3:
                break
            await asyncio.sleep(0.01)
        assert txn.events == [("begin",), ("send", 3), ("send", 2), ("send", 4)]
        assert runner.processed == 0  # counted once committed
        for _ in range(100):
            if txn.events[-1][0] == "commit":
                break
            await asyncio.sleep(0.01)
        assert txn.events[-1] == ("commit", {("in", 0): 7, ("in", 1): 2})
        assert runner.processed == 9
        log.polls.append([_batch(1, 2, 5)])
        for _ in range(100):
            if txn.events[-1][0] == "send":
                break
            await asyncio.sleep(0.01)
        await runner.revoked({("in", 1)})
        assert txn.events[-3:] == [("begin",), ("send", 5), ("commit", {("in", 1): 7})]
        await runner.stop(grace=1.0)
        assert "abort" not in [e[0] for e in txn.events]

    asyncio.run(main())


# -- exactly once: a kill -9 while a transaction commits and later polls are held -------------

@pytest.mark.timeout(600)
def test_exactly_once_kill_9_while_a_commit_is_in_flight_with_later_polls_held(
        kafka, kcat, cluster) -> None:
    """Under exactly_once_v2 a stage works out its next polls while its last transaction
    commits, holding their output (and changelog records) for the next transaction, and
    commits its state locally as of the transaction's end. Here the broker is paused
    (SIGSTOP) under a backlog: the stream-table join's commit stays in flight with polls
    worked out after it (the node says so in its log), the GROUP BY's transaction open;
    the node is then killed (-9), the broker resumed and the node restarted on the same
    state: read with read_committed, the join has each input record's result exactly once
    and the table each user's exact count and sum."""
    import json
    import os
    import random
    import signal

    from streamsql.testing.kafka import kcat_consume, kcat_produce
    from streamsql.testing.nodes import table_rows, wait_for

    eos = {"processing.guarantee": "exactly_once_v2"}
    svc = cluster.service
    node = cluster("node-a", **eos)
    node.ksql(f"CREATE TABLE users (id STRING PRIMARY KEY, name STRING) WITH "
              f"(kafka_topic='users_{svc}', partitions=4, value_format='JSON');"
              f"CREATE STREAM events (user STRING KEY, seq BIGINT, amount BIGINT) WITH "
              f"(kafka_topic='events_{svc}', partitions=4, value_format='JSON');")
    rnd = random.Random(16)
    users = [f"u{i}" for i in range(300)]
    kcat_produce(kafka.bootstrap_servers, f"users_{svc}",
                 [(u, json.dumps({"NAME": u.upper()})) for u in users])
    n = 200_000
    events = [(rnd.choice(users), i, rnd.randrange(1, 100)) for i in range(n)]
    kcat_produce(kafka.bootstrap_servers, f"events_{svc}",
                 [(u, json.dumps({"SEQ": i, "AMOUNT": a})) for u, i, a in events], timeout=120)
    node.ksql(f"CREATE STREAM enriched_{svc} AS SELECT e.user AS user, e.seq AS seq, "
              "e.amount AS amount, u.name AS name FROM events e JOIN users u ON e.user = u.id;"
              f"CREATE TABLE totals_{svc} AS SELECT user, COUNT(*) AS n, SUM(amount) AS total "
              "FROM events GROUP BY user EMIT CHANGES;")
    enriched, totals = f"ENRICHED_{svc.upper()}", f"TOTALS_{svc.upper()}"

    # Under way (some of it committed), far from done: then the broker stops answering.
    wait_for("the join under way",
             lambda: kcat_consume(kafka.bootstrap_servers, enriched, 1, timeout=5,
                                  isolation="read_committed"), timeout=120, every=0.05)
    broker = kafka.pids()[0]
    assert broker is not None
    os.kill(broker, signal.SIGSTOP)
    try:
        def holding() -> bool:
            return any(enriched in line and "polls worked out since wait for it" in line
                       for line in node.tail(400).splitlines())
        wait_for("the join to hold polls worked out while its commit is in flight",
                 holding, timeout=60, every=0.2)
        node.kill()
    finally:
        os.kill(broker, signal.SIGCONT)
    cluster("node-a", **eos)

    def joined() -> list | None:
        recs = kcat_consume(kafka.bootstrap_servers, enriched, None, isolation="read_committed")
        return recs if len(recs) >= n else None
    recs = wait_for("every event joined", joined, timeout=300, every=1.0)
    seqs = [json.loads(r.value)["SEQ"] for r in recs]
    assert len(seqs) == n and set(seqs) == set(range(n))  # each once
    for r in recs:
        v = json.loads(r.value)
        u, i, a = events[v["SEQ"]]
        assert (r.key, v["AMOUNT"], v["NAME"]) == (u, a, u.upper())

    want: dict[str, tuple[int, int]] = {}
    for u, _, a in events:
        c, s = want.get(u, (0, 0))
        want[u] = (c + 1, s + a)

    def counted() -> dict | None:
        rows = {k: (v["N"], v["TOTAL"]) for k, v in table_rows(kafka.bootstrap_servers, totals).items()}
        return rows if sum(c for c, _ in rows.values()) >= n else None
    assert wait_for("every event counted", counted, timeout=300, every=1.0) == want

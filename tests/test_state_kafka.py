"""Task state on Kafka: changelogs written and restored through ``KafkaLog``, and engines
(service mode) closed and opened again on the same or an empty state directory.

The Kafka twins of tests/test_state_changelog.py, test_state_engine.py and
test_join_restart.py. On Kafka another node may own a task between two runs of this one, so
changelog records past a local checkpoint are replayed, not reverted
(``uncommitted_tail="replay"``), and the consumer groups' committed offsets say where input
resumes; a transaction's aborted writes never reach a restoring reader. What is specific to
the embedded log's exactly-once by truncation has no twin here. Each test works in a
namespace of its own on the session's broker (``PrefixedLog``) or with topics of its own.
"""
from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest

from streamsql.engine import Engine
from streamsql.runtime.log.base import Log, ProducerRecord
from streamsql.runtime.log.kafka import KafkaLog
from streamsql.state import KeyValueStoreSpec, SessionStoreSpec, TaskState, WindowStoreSpec
from streamsql.testing.prefixed import PrefixedLog
from tests.test_join_restart import SCENARIOS

pytestmark = pytest.mark.timeout(180)

KV = KeyValueStoreSpec("agg", changelog="q1-agg-changelog")
REPLAY = "replay"


@pytest.fixture
def namespace(unique_topic: Callable[..., str]) -> str:
    """A topic prefix no other test uses."""
    return unique_topic() + "-"


def _kafka(kafka: Any, namespace: str, log_class: type[PrefixedLog] = PrefixedLog) -> PrefixedLog:
    return log_class(KafkaLog(kafka.bootstrap_servers, {"linger.ms": 0}), namespace)


async def _records(log: Log, topic: str, partition: int = 0) -> list[tuple[bytes | None, bytes | None]]:
    """Every (key, value) of a partition, in offset order."""
    out: list[tuple[bytes | None, bytes | None]] = []
    offset, end = 0, (await log.end_offsets(topic))[partition]
    while offset < end:
        b = await log.fetch(topic, partition, offset)
        if not b.offsets:
            break
        out += list(zip(b.keys, b.values))
        offset = b.offsets[-1] + 1
    return out


def _contents(st: TaskState) -> list[tuple[bytes, Any]]:
    return list(st.kv("agg").range())


async def _write_batches(st: TaskState, batches: int, start: int = 0) -> None:
    kv = st.kv("agg")
    for i in range(batches):
        for k in range(20):
            key = b"key-%02d" % ((i * 7 + k) % 50)
            kv.put(key, (kv.get(key) or 0) + 1)
        kv.delete(b"key-%02d" % (i % 50))
        await st.commit({("src", 0): start + i + 1})


# --- TaskState on a Kafka changelog ------------------------------------------------------

class _CountingLog(PrefixedLog):
    """Counts produce calls per topic."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.produce_calls: dict[str, int] = {}

    async def produce(self, topic, records):  # type: ignore[no-untyped-def]
        self.produce_calls[topic] = self.produce_calls.get(topic, 0) + 1
        return await super().produce(topic, records)


def test_changelog_on_kafka_written_per_flush_with_tombstones(kafka, namespace, tmp_path):
    async def main() -> None:
        log = _kafka(kafka, namespace, _CountingLog)
        try:
            st = await TaskState.open(tmp_path / "t", [KV], log=log, partition=2, partitions=3,
                                      uncommitted_tail=REPLAY)
            info = await log.describe_topic("q1-agg-changelog")
            assert info is not None and info.partitions == 3
            assert dict(info.config)["cleanup.policy"] == "compact"
            kv = st.kv("agg")
            kv.put(b"a", 1)
            kv.put(b"b", 2)
            kv.put(b"a", 3)  # only the latest value of a key goes out
            kv.delete(b"b")
            kv.put(b"c", {"x": [1]})
            assert await _records(log, "q1-agg-changelog", 2) == []  # buffered until flush
            await st.flush()
            assert log.produce_calls == {"q1-agg-changelog": 1}
            assert await _records(log, "q1-agg-changelog", 2) == [
                (b"a", b"3"), (b"b", None), (b"c", b'{"x":[1]}')]
            assert await _records(log, "q1-agg-changelog", 0) == []  # the task's partition only
            kv.put(b"d", 4)
            await st.commit({("src", 2): 10})
            assert (await _records(log, "q1-agg-changelog", 2))[3:] == [(b"d", b"4")]
            assert st.changelog_positions() == {"agg": 4}
            await st.commit({("src", 2): 11})  # nothing written: nothing produced
            assert log.produce_calls == {"q1-agg-changelog": 2}
            st.close()
        finally:
            await log.close()
    asyncio.run(main())


def test_restore_from_kafka_changelog_into_empty_dir(kafka, namespace, tmp_path):
    async def main() -> None:
        log = _kafka(kafka, namespace)
        specs = [KV, WindowStoreSpec("w", 10_000, "w-cl"), SessionStoreSpec("s", 10_000, "s-cl")]
        try:
            st = await TaskState.open(tmp_path / "t", specs, log=log, uncommitted_tail=REPLAY)
            await _write_batches(st, 30)
            w, s = st.window("w"), st.session("s")
            for t in range(0, 5000, 1000):
                w.put(b"k", t, t)
            s.put(b"k", 10, 20, "s")
            s.put(b"j", 30, 40, "t")
            await st.commit({("src", 0): 31})
            want = (_contents(st), list(w.fetch_all(0, 10_000)), list(s.fetch_all(0, 10_000)))
            assert len(want[0]) > 20
            st.destroy()
            assert not (tmp_path / "t").exists()
            st = await TaskState.open(tmp_path / "t", specs, log=log, uncommitted_tail=REPLAY)
            stats = st.restore_stats["agg"]
            assert stats.from_offset == 0 and stats.replayed == stats.to_offset > 0
            w, s = st.window("w"), st.session("s")
            # The time indexes and observed stream times are rebuilt too.
            assert (_contents(st), list(w.fetch_all(0, 10_000)), list(s.fetch_all(0, 10_000))) == want
            assert (w.observed_stream_time, s.observed_stream_time) == (4000, 40)
            # Source offsets live in the local RocksDB only: a rebuilt task has none.
            assert st.committed_offsets() == {}
            st.close()
        finally:
            await log.close()
    asyncio.run(main())


def test_stale_local_copy_catches_up_from_the_kafka_changelog(kafka, namespace, tmp_path):
    """Another node owned the task meanwhile: the records past the local checkpoint are
    replayed, and only those."""
    async def main() -> None:
        log = _kafka(kafka, namespace)
        try:
            st = await TaskState.open(tmp_path / "t", [KV], log=log, uncommitted_tail=REPLAY)
            await _write_batches(st, 10)
            st.snapshot(tmp_path / "snap")
            pos = st.changelog_positions()["agg"]
            await _write_batches(st, 10, start=10)
            end = st.changelog_positions()["agg"]
            want = _contents(st)
            st.close()
            shutil.rmtree(tmp_path / "t")
            shutil.copytree(tmp_path / "snap", tmp_path / "t")
            st = await TaskState.open(tmp_path / "t", [KV], log=log, uncommitted_tail=REPLAY)
            stats = st.restore_stats["agg"]
            assert (stats.from_offset, stats.to_offset, stats.replayed) == (pos, end, end - pos)
            assert _contents(st) == want
            assert st.committed_offsets() == {("src", 0): 10}  # the copy's own commit
            st.close()
            st = await TaskState.open(tmp_path / "t", [KV], log=log, uncommitted_tail=REPLAY)
            assert st.restore_stats["agg"].replayed == 0  # at the end: nothing to restore
            assert _contents(st) == want
            st.close()
        finally:
            await log.close()
    asyncio.run(main())


def test_flushed_but_uncommitted_batch_is_replayed_from_kafka(kafka, namespace, tmp_path):
    """At least once on Kafka: a batch whose changelog records were acknowledged counts,
    committed locally or not; a rebuild from the changelog alone agrees."""
    async def main() -> None:
        log = _kafka(kafka, namespace)
        try:
            st = await TaskState.open(tmp_path / "t", [KV], log=log, uncommitted_tail=REPLAY)
            kv = st.kv("agg")
            kv.put(b"a", 1)
            kv.put(b"b", 1)
            await st.commit({("src", 0): 1})
            kv.put(b"a", 2)
            kv.delete(b"b")
            kv.put(b"c", 2)
            await st.flush()
            st.close()  # a crash before the local commit
            st = await TaskState.open(tmp_path / "t", [KV], log=log, uncommitted_tail=REPLAY)
            assert _contents(st) == [(b"a", 2), (b"c", 2)]
            assert st.restore_stats["agg"].replayed == 3
            assert st.committed_offsets() == {("src", 0): 1}
            st.destroy()
            st = await TaskState.open(tmp_path / "t", [KV], log=log, uncommitted_tail=REPLAY)
            assert _contents(st) == [(b"a", 2), (b"c", 2)]
            st.close()
        finally:
            await log.close()
    asyncio.run(main())


def test_aborted_transaction_never_reaches_the_restored_state(kafka, namespace, tmp_path):
    """exactly_once_v2's premise for replaying tails: a restoring reader (read_committed)
    never sees the changelog records of an aborted transaction."""
    async def main() -> None:
        log = _kafka(kafka, namespace)
        txn = log.transactional("task-0")
        assert txn is not None
        try:
            st = await TaskState.open(tmp_path / "t", [KV], log=txn.log, uncommitted_tail=REPLAY)
            kv = st.kv("agg")
            await txn.begin()
            kv.put(b"a", 1)
            await st.prepare_commit()
            await txn.commit("group", {})
            await st.commit({("src", 0): 1})
            await txn.begin()
            kv.put(b"a", 2)
            kv.put(b"b", 2)
            await st.prepare_commit()
            await txn.abort()
            st.close()  # the batch failed: its state is discarded with the transaction
            for _ in range(2):  # with the local checkpoint, then from the changelog alone
                st = await TaskState.open(tmp_path / "t", [KV], log=log, uncommitted_tail=REPLAY)
                assert _contents(st) == [(b"a", 1)]
                assert st.restore_stats["agg"].replayed in (0, 1)
                st.destroy()
            # The aborted records are in the partition, hidden: only the committed one reads.
            assert await _records(log, "q1-agg-changelog") == [(b"a", b"1")]
        finally:
            await txn.close()
            await log.close()
    asyncio.run(main())


def test_a_new_owner_waits_for_the_last_owners_transaction_to_land(kafka, namespace, tmp_path):
    """A partition's new owner reads the group's offsets and restores the changelog only
    once the previous owner's last transaction (changelog records plus offsets) has landed:
    read in between, the offsets could predate the transaction while the restored state
    already had it (its input counted twice), or the other way round."""
    from aiokafka import AIOKafkaProducer, TopicPartition

    async def main() -> None:
        log = KafkaLog(kafka.bootstrap_servers, {"linger.ms": 0})
        group, source, changelog = namespace + "group", namespace + "src", namespace + "cl"
        await log.create_topic(source, 1)
        await log.create_topic(changelog, 1, config={"cleanup.policy": "compact"})
        # The previous owner, on a client of its own, is in the middle of committing.
        other = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers,
                                 transactional_id=namespace + "other")
        await other.start()
        try:
            await other.begin_transaction()
            await other.send_and_wait(changelog, b"7", key=b"k", partition=0)
            await other.send_offsets_to_transaction({TopicPartition(source, 0): 42}, group)
            offsets = asyncio.ensure_future(log.stable_committed(group, source, [0]))
            settled = asyncio.ensure_future(log.settle(changelog, [0]))
            await asyncio.sleep(1.5)
            assert not offsets.done() and not settled.done()
            # What a reader that does not wait sees meanwhile: neither the offset nor the record.
            assert await log.committed(group, source) == {}
            assert (await log.end_offsets(changelog)) == [0]
            await other.commit_transaction()
            assert await asyncio.wait_for(offsets, 10) == {0: 42}
            await asyncio.wait_for(settled, 10)
            batch = await log.fetch(changelog, 0, 0)
            assert list(zip(batch.keys, batch.values)) == [(b"k", b"7")]
            # Nothing pending: both answer at once.
            assert await asyncio.wait_for(log.stable_committed(group, source, [0]), 2) == {0: 42}
            await asyncio.wait_for(log.settle(changelog, [0]), 2)
        finally:
            await other.stop()
            await log.close()
    asyncio.run(main())


class _FailingFetchLog(PrefixedLog):
    """Fetch fails after ``fetches`` calls (a crash mid-restore)."""

    fetches = -1

    async def fetch(self, *args: Any, **kwargs: Any):  # type: ignore[no-untyped-def]
        if self.fetches == 0:
            raise OSError("network gone")
        self.fetches -= 1
        return await super().fetch(*args, **kwargs)


def test_interrupted_restore_from_kafka_resumes(kafka, namespace, tmp_path, monkeypatch):
    monkeypatch.setattr("streamsql.state.changelog.RESTORE_CHUNK", 7)

    async def main() -> None:
        log = _kafka(kafka, namespace, _FailingFetchLog)
        try:
            st = await TaskState.open(tmp_path / "t", [KV], log=log, uncommitted_tail=REPLAY)
            await _write_batches(st, 10)
            want = _contents(st)
            end = st.changelog_positions()["agg"]
            st.destroy()
            log.fetches = 3
            with pytest.raises(OSError):
                await TaskState.open(tmp_path / "t", [KV], log=log, uncommitted_tail=REPLAY)
            log.fetches = -1
            st = await TaskState.open(tmp_path / "t", [KV], log=log, uncommitted_tail=REPLAY)
            stats = st.restore_stats["agg"]
            assert (stats.from_offset, stats.to_offset, stats.replayed) == (21, end, end - 21)
            assert _contents(st) == want
            st.close()
        finally:
            await log.close()
    asyncio.run(main())


def test_checkpoint_past_a_recreated_kafka_changelog_wipes_and_restores(kafka, namespace, tmp_path):
    async def main() -> None:
        log = _kafka(kafka, namespace)
        try:
            st = await TaskState.open(tmp_path / "t", [KV], log=log, uncommitted_tail=REPLAY)
            await _write_batches(st, 5)
            st.close()
            await log.delete_topic("q1-agg-changelog")
            st = await TaskState.open(tmp_path / "t", [KV], log=log, uncommitted_tail=REPLAY)
            assert st.restore_stats["agg"].wiped
            assert _contents(st) == []
            st.close()
        finally:
            await log.close()
    asyncio.run(main())


# --- engines on Kafka, closed and opened again -------------------------------------------
# An engine (re)start on Kafka mostly waits for the broker (consumer groups joining): the
# scenarios of one test run side by side, each with its own service id and topics.

async def _eventually(fn: Callable[[], Awaitable[Any]], expected: Any, timeout: float = 30.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        got = await fn()
        if got == expected or asyncio.get_running_loop().time() > deadline:
            return got
        await asyncio.sleep(0.05)


async def _rows(engine: Engine, sql: str) -> list[tuple]:
    [result] = await engine.execute(sql)
    return sorted(result.rows)


class Node:
    """An engine in service mode on the session's Kafka broker, with one service id and a
    state directory, opened and closed in turn; ``namespace`` prefixes its topics."""

    def __init__(self, kafka: Any, namespace: str | None = None, **config: Any) -> None:
        self.bootstrap = kafka.bootstrap_servers
        self.config = {"auto.offset.reset": "earliest", "ksql.service.id": "svc_" + uuid.uuid4().hex[:10], "linger.ms": 0, **config}
        self.namespace = namespace
        self.engine: Engine | None = None

    async def open(self, state_dir: Path) -> Engine:
        log: Log = KafkaLog(self.bootstrap, self.config)
        if self.namespace is not None:
            log = PrefixedLog(log, self.namespace)
        self.engine = Engine(log, self.config, state_dir=state_dir)
        await self.engine.start()
        return self.engine

    async def produce(self, topic: str, rows: list[tuple[str, dict | None, int]]) -> None:
        assert self.engine is not None
        await self.engine.log.produce(topic, [
            ProducerRecord(k.encode(), json.dumps(v).encode() if v is not None else None, ts)
            for k, v, ts in rows])

    async def settled(self, timeout: float = 60) -> None:
        """Every stage has read and committed all its input: no record after its group's
        committed offset (under exactly_once_v2 a transaction's commit marker may follow the
        last record: the committed offset can stay one short of the end)."""
        engine = self.engine
        assert engine is not None
        # Every stage has had its partitions and restored its state (a node just opened
        # has committed offsets at the end before it has read its changelogs).
        await asyncio.wait_for(asyncio.gather(*(r.ready.wait() for runners in engine.runners.values()
                                                for r in runners)), timeout)
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            behind = []
            for runners in engine.runners.values():
                for runner in runners:
                    for topic in runner.topics:
                        committed = await engine.log.committed(runner.group, topic)
                        for p, end in enumerate(await engine.log.end_offsets(topic)):
                            at = committed.get(p, 0)
                            if at < end and (await engine.log.fetch(topic, p, at, 1)).offsets:
                                behind.append((runner.group, topic, p, at, end))
            if not behind:
                return
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"queries behind (group, topic, partition, committed, end): {behind}")
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        if self.engine is not None:
            engine, self.engine = self.engine, None
            await engine.close()
            await engine.log.close()


async def _tables(kafka: Any, tmp_path: Path, guarantee: str) -> None:
    """CTAS aggregations (counts, tumbling windows, EMIT FINAL) on Kafka: the same tables
    after reopening on the same state directory, then on an empty one."""
    node = Node(kafka, f"{uuid.uuid4().hex[:10]}-", **{"processing.guarantee": guarantee})
    views = [(f"u{i}", 10) for i in range(5)]
    windows = [(f"u{i}", 0, 10) for i in range(5)]  # every record in the first minute

    async def check(engine: Engine, views: list, windows: list, final: list) -> None:
        got = await _eventually(lambda: _rows(engine, "SELECT * FROM views;"), views)
        assert got == views, guarantee
        got = await _eventually(lambda: _rows(engine, "SELECT user_id, WINDOWSTART, n FROM per_minute;"), windows)
        assert got == windows, guarantee
        await node.settled()
        assert await _rows(engine, "SELECT id, WINDOWSTART, n FROM final;") == final, guarantee

    try:
        engine = await node.open(tmp_path / guarantee / "a")
        await engine.execute(
            "CREATE STREAM pv (user_id STRING KEY, page STRING) "
            "WITH (kafka_topic='pv', value_format='JSON', partitions=2);"
            "CREATE TABLE views AS SELECT user_id, COUNT(*) AS n FROM pv GROUP BY user_id;"
            "CREATE TABLE per_minute AS SELECT user_id, COUNT(*) AS n FROM pv "
            "WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY user_id;"
            "CREATE STREAM ev (id STRING KEY, x INT) "
            "WITH (kafka_topic='ev', value_format='JSON', partitions=1);"
            "CREATE TABLE final AS SELECT id, COUNT(*) AS n FROM ev "
            "WINDOW TUMBLING (SIZE 10 SECONDS, GRACE PERIOD 5 SECONDS) GROUP BY id EMIT FINAL;")
        await node.produce("pv", [(f"u{i % 5}", {"PAGE": "/"}, i * 1000) for i in range(50)])
        await node.produce("ev", [("a", {}, 1000), ("a", {}, 2000), ("a", {}, 3000)])
        await check(engine, views, windows, [])  # the final window is still open
        await node.close()

        # The same state directory: what it has, and what the changelogs have beyond it.
        engine = await node.open(tmp_path / guarantee / "a")
        await check(engine, views, windows, [])
        await node.produce("pv", [("u1", {"PAGE": "/"}, 100_000)])
        await node.produce("ev", [("a", {}, 15000)])  # the window closes: emitted once
        views = [(f"u{i}", 11 if i == 1 else 10) for i in range(5)]
        windows = sorted(windows + [("u1", 60000, 1)])
        await check(engine, views, windows, [("a", 0, 3)])
        await node.close()

        # An empty state directory (another machine): restored from the changelogs only, and
        # counting goes on from there.
        engine = await node.open(tmp_path / guarantee / "b")
        await check(engine, views, windows, [("a", 0, 3)])
        await node.produce("pv", [("u2", {"PAGE": "/"}, 101_000)])
        await node.produce("ev", [("a", {}, 25000)])  # closes the window of 15000 (not a jump past it)
        views = [(f"u{i}", 11 if i in (1, 2) else 10) for i in range(5)]
        windows = sorted(windows + [("u2", 60000, 1)])
        await check(engine, views, windows, [("a", 0, 3), ("a", 10000, 1)])
    finally:
        await node.close()


def test_tables_on_kafka_same_after_reopening_on_the_same_or_an_empty_state_dir(kafka, tmp_path):
    async def main() -> None:
        await asyncio.gather(*(_tables(kafka, tmp_path, g) for g in ("at_least_once", "exactly_once_v2")))
    asyncio.run(main())


async def _join_scenario(kafka: Any, tmp_path: Path, name: str) -> list:
    """A tests/test_join_restart.py scenario on Kafka; restarts alternate between a new
    (empty) state directory and the previous one."""
    setup, steps, _ = SCENARIOS[name]
    # (No record cache: the scenarios list every record their sink gets.)
    node = Node(kafka, f"{uuid.uuid4().hex[:10]}-", **{"cache.max.bytes.buffering": 0})
    dirs = [tmp_path / "a", tmp_path / "b"]
    restarts = 0
    try:
        engine = await node.open(dirs[0])
        for sql in setup:
            await engine.execute(sql)
        for step in steps:
            if step == "restart":
                await node.close()
                restarts += 1
                engine = await node.open(dirs[restarts % 2])
                continue
            topic, records = step
            await node.produce(topic, records)
            await node.settled()
        assert restarts
        assert any("join" in p.name for p in dirs[restarts % 2].glob("*/*")), name
        out = []
        for p in range(len(await engine.log.end_offsets("J"))):
            for k, v in await _records(engine.log, "J", p):
                assert k is not None
                out.append((k.decode(), json.loads(v) if v is not None else None))
        return out
    finally:
        await node.close()


def test_each_kind_of_join_on_kafka_keeps_its_state_across_restarts(kafka, tmp_path):
    names = list(SCENARIOS)

    async def main() -> list[list]:
        return list(await asyncio.gather(*(
            _join_scenario(kafka, tmp_path / str(i), name) for i, name in enumerate(names))))
    for name, got in zip(names, asyncio.run(main())):
        expected = SCENARIOS[name][2]
        if name == "foreign-key":
            # Two partitions in the sink: order is per key.
            got.sort(key=lambda r: r[0])
            expected = sorted(expected, key=lambda r: r[0])
        assert got == expected, name

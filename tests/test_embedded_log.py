"""The embedded log backend: round trips, partitioning, persistence, crash recovery, groups,
consumers, topic deletion and compaction."""
from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from streamsql.runtime.log.base import (ProducerRecord, TopicExistsError, UnknownTopicError,
                                        murmur2)
from streamsql.runtime.log.embedded import EmbeddedLog, InvalidTopicError
from streamsql.runtime.log.segment import CorruptRecordError

LOGGER = "streamsql.runtime.log.embedded"


def run(coro):
    return asyncio.run(coro)


@pytest.fixture(params=["memory", "disk"])
def make_log(request, tmp_path):
    """Builds logs of the parametrized kind (each call on disk reopens the same path)."""
    def make(**kw):
        return EmbeddedLog(None if request.param == "memory" else tmp_path / "log", **kw)
    return make


def rec(key, value, ts=1000, headers=(), partition=None):
    return ProducerRecord(key, value, ts, headers, partition)


def segment_files(root: Path, topic: str, partition: int = 0) -> list[Path]:
    return sorted((root / "topics" / topic / str(partition)).glob("*.log"))


async def fetch_all(log, topic, partition=0, offset=0, step=10_000):
    offs, keys, vals = [], [], []
    while True:
        b = await log.fetch(topic, partition, offset, step)
        if not b.offsets:
            return offs, keys, vals
        offs += b.offsets
        keys += b.keys
        vals += b.values
        offset = b.offsets[-1] + 1


# --- round trip ----------------------------------------------------------------------

def test_round_trip_keys_values_headers_nulls(make_log):
    async def go():
        log = make_log()
        await log.create_topic("t")
        records = [
            rec(b"k1", b"v1", 10),
            rec(None, b"v2", 11),
            rec(b"k3", None, 12),
            rec(None, None, 13),
            rec(b"", b"", 14),
            rec(b"k6", b"v6", 15, headers=(("a", b"1"), ("b", None), ("\u00e9", b""))),
        ]
        assert await log.produce("t", records) == [(0, i) for i in range(6)]
        b = await log.fetch("t", 0, 0)
        assert (b.topic, b.partition) == ("t", 0)
        assert b.offsets == [0, 1, 2, 3, 4, 5]
        assert b.timestamps == [10, 11, 12, 13, 14, 15]
        assert b.keys == [b"k1", None, b"k3", None, b"", b"k6"]
        assert b.values == [b"v1", b"v2", None, None, b"", b"v6"]
        assert b.headers == [(), (), (), (), (), (("a", b"1"), ("b", None), ("\u00e9", b""))]
        assert b.next_offset == 6
        # A batch without any header has headers None.
        assert (await log.fetch("t", 0, 0, 5)).headers is None
        await log.close()
    run(go())


def test_offsets_are_consecutive_and_fetch_respects_position_and_limit(make_log):
    async def go():
        log = make_log(index_interval=8)
        await log.create_topic("t")
        for start in range(0, 1000, 100):
            res = await log.produce("t", [rec(b"k", b"%d" % i) for i in range(start, start + 100)])
            assert [o for _, o in res] == list(range(start, start + 100))
        assert await log.end_offsets("t") == [1000]
        assert await log.begin_offsets("t") == [0]
        b = await log.fetch("t", 0, 437, 25)
        assert b.offsets == list(range(437, 462))
        assert b.values == [b"%d" % i for i in range(437, 462)]
        assert (await log.fetch("t", 0, 995, 100)).offsets == list(range(995, 1000))
        assert len(await log.fetch("t", 0, 1000)) == 0
        assert len(await log.fetch("t", 0, 5000)) == 0
        await log.close()
    run(go())


def test_missing_timestamp_takes_current_time(make_log):
    async def go():
        log = make_log()
        await log.create_topic("t")
        before = int(time.time() * 1000)
        await log.produce("t", [ProducerRecord(b"k", b"v", None)])
        after = int(time.time() * 1000)
        (ts,) = (await log.fetch("t", 0, 0)).timestamps
        assert before <= ts <= after
        await log.close()
    run(go())


def test_large_record_beyond_fetch_byte_limit_is_still_returned(make_log):
    async def go():
        log = make_log(max_fetch_bytes=1024)
        await log.create_topic("t")
        big = bytes(range(256)) * 40
        await log.produce("t", [rec(b"a", b"x"), rec(b"b", big), rec(b"c", b"y")])
        offs, _, vals = await fetch_all(log, "t")
        assert offs == [0, 1, 2]
        assert vals == [b"x", big, b"y"]
        await log.close()
    run(go())


# --- topics --------------------------------------------------------------------------

def test_topic_admin(make_log):
    async def go():
        log = make_log()
        info = await log.create_topic("a", 3, 1, {"cleanup.policy": "compact"})
        assert (info.name, info.partitions, info.replicas) == ("a", 3, 1)
        assert dict(info.config) == {"cleanup.policy": "compact"}
        await log.create_topic("b")
        with pytest.raises(TopicExistsError):
            await log.create_topic("a")
        for bad in ["", ".", "..", "has space", "x" * 250, "semi;colon"]:
            with pytest.raises(InvalidTopicError):
                await log.create_topic(bad)
        assert set(await log.list_topics()) == {"a", "b"}
        assert await log.describe_topic("a") == info
        assert await log.describe_topic("nope") is None
        with pytest.raises(UnknownTopicError):
            await log.produce("nope", [rec(b"k", b"v")])
        with pytest.raises(UnknownTopicError):
            await log.fetch("nope", 0, 0)
        with pytest.raises(UnknownTopicError):
            await log.fetch("a", 3, 0)
        await log.close()
    run(go())


def test_delete_topic_removes_data_and_files(make_log, tmp_path):
    async def go():
        log = make_log()
        await log.create_topic("t", 2)
        await log.create_topic("keep")
        await log.produce("t", [rec(b"k%d" % i, b"v") for i in range(10)])
        c = log.consumer("g", ["t"])
        await c.commit({("t", 0): 3})
        await log.delete_topic("t")
        assert set(await log.list_topics()) == {"keep"}
        with pytest.raises(UnknownTopicError):
            await log.fetch("t", 0, 0)
        with pytest.raises(UnknownTopicError):
            await log.delete_topic("t")
        if log.path is not None:
            assert not (log.path / "topics" / "t").exists()
            assert list((log.path / "trash").iterdir()) == []
        # A new topic of the same name starts empty, without the old group offsets.
        await log.create_topic("t", 1)
        assert await log.end_offsets("t") == [0]
        assert await log.committed("g", "t") == {}
        await c.close()
        await log.close()
        if log.path is not None:
            log2 = make_log()
            assert set(await log2.list_topics()) == {"t", "keep"}
            assert (await log2.describe_topic("t")).partitions == 1
            await log2.close()
    run(go())


# --- partitioning --------------------------------------------------------------------

@pytest.mark.parametrize("data,expected", [
    # Kafka's own test vectors for Utils.murmur2 (UtilsTest.testMurmur2).
    (b"21", -973932308),
    (b"foobar", -790332482),
    (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (b"abc", 479470107),
])
def test_murmur2_matches_kafka(data, expected):
    assert murmur2(data) == expected


def test_a_record_for_a_partition_the_topic_lacks_is_refused(make_log):
    async def go():
        log = make_log()
        await log.create_topic("t", 2)
        bad = ProducerRecord(b"k", b"v", 0, (), 2)
        with pytest.raises(ValueError, match=r"Invalid partition given with record: 2 is not in the range \[0...2\)"):
            await log.produce("t", [rec(b"a", b"v"), bad])
        # Nothing of the refused call was written.
        assert (await log.end_offsets("t")) == [0, 0]
        await log.close()
    asyncio.run(go())


def test_keyed_records_go_to_murmur2_partition(make_log):
    async def go():
        log = make_log()
        await log.create_topic("t", 5)
        keys = [b"21", b"foobar", b"abc", b"a-little-bit-long-string", b"21"]
        res = await log.produce("t", [rec(k, b"v") for k in keys])
        expected = [(murmur2(k) & 0x7FFFFFFF) % 5 for k in keys]
        assert [p for p, _ in res] == expected
        # b"21" -> -973932308 & 0x7fffffff = 1173551340, % 5 = 0 (Kafka's partition for it).
        assert res[0][0] == 0 and res[4] == (0, 1)
        for p in range(5):
            b = await log.fetch("t", p, 0)
            assert b.keys == [k for k, e in zip(keys, expected) if e == p]
        await log.close()
    run(go())


def test_null_keys_round_robin_and_explicit_partition(make_log):
    async def go():
        log = make_log()
        await log.create_topic("t", 3)
        res = await log.produce("t", [rec(None, b"%d" % i) for i in range(6)])
        assert sorted(p for p, _ in res) == [0, 0, 1, 1, 2, 2]
        res = await log.produce("t", [rec(b"whatever", b"x", partition=2)])
        assert res == [(2, 2)]
        with pytest.raises(ValueError):
            await log.produce("t", [rec(None, b"ok"), rec(None, b"bad", partition=3)])
        assert await log.end_offsets("t") == [2, 2, 3]  # the failed call wrote nothing
        await log.close()
    run(go())


# --- persistence and recovery --------------------------------------------------------

def test_restart_sees_everything(tmp_path):
    async def go():
        log = EmbeddedLog(tmp_path, segment_bytes=2000)
        await log.create_topic("t", 2, config={"retention.ms": "100"})
        await log.create_topic("u")
        for i in range(20):
            await log.produce("t", [rec(b"k%d" % j, b"v%d-%d" % (i, j), 5) for j in range(10)])
        await log.produce("u", [rec(None, None, 7, headers=(("h", b"1"),))])
        before = [await fetch_all(log, "t", p) for p in range(2)]
        ends = await log.end_offsets("t")
        await log.close()
        assert len(segment_files(tmp_path, "t", 0)) > 1  # rolled

        log = EmbeddedLog(tmp_path, segment_bytes=2000)
        assert set(await log.list_topics()) == {"t", "u"}
        assert dict((await log.describe_topic("t")).config) == {"retention.ms": "100"}
        assert await log.end_offsets("t") == ends
        assert [await fetch_all(log, "t", p) for p in range(2)] == before
        b = await log.fetch("u", 0, 0)
        assert (b.keys, b.values, b.headers) == ([None], [None], [(("h", b"1"),)])
        # Producing continues the offsets.
        res = await log.produce("t", [rec(None, b"new", partition=1)])
        assert res == [(1, ends[1])]
        await log.close()
    run(go())


def test_segments_roll_and_are_named_by_base_offset(tmp_path):
    async def go():
        log = EmbeddedLog(tmp_path, segment_bytes=1000, index_interval=4)
        await log.create_topic("t")
        for i in range(50):
            await log.produce("t", [rec(b"k", b"value-%03d" % i)])
        files = segment_files(tmp_path, "t")
        assert len(files) > 2
        bases = [int(f.stem) for f in files]
        assert bases[0] == 0 and bases == sorted(bases)
        # Each segment starts with the record whose offset is its name.
        for f, base in zip(files, bases):
            b = await log.fetch("t", 0, base, 1)
            assert b.offsets == [base]
        assert (await fetch_all(log, "t"))[2] == [b"value-%03d" % i for i in range(50)]
        # Reads spanning segments in one fetch.
        b = await log.fetch("t", 0, bases[1] - 2, 5)
        assert b.offsets == list(range(bases[1] - 2, bases[1] + 3))
        await log.close()
        # Reopen without the sidecar indexes: sealed segments are rescanned.
        for idx in (tmp_path / "topics" / "t" / "0").glob("*.index"):
            idx.write_bytes(b"garbage")
        log = EmbeddedLog(tmp_path, segment_bytes=1000, index_interval=4)
        assert (await fetch_all(log, "t"))[2] == [b"value-%03d" % i for i in range(50)]
        assert (await log.fetch("t", 0, 33, 2)).offsets == [33, 34]
        await log.close()
    run(go())


async def _three_records(path: Path) -> None:
    log = EmbeddedLog(path)
    await log.create_topic("t")
    await log.produce("t", [rec(b"k0", b"first"), rec(b"k1", b"second")])
    await log.produce("t", [rec(b"k2", b"third-record-value")])
    await log.close()


def test_torn_tail_is_truncated_and_logged(tmp_path, caplog):
    run(_three_records(tmp_path))
    (seg,) = segment_files(tmp_path, "t")
    full = seg.stat().st_size
    with open(seg, "r+b") as f:  # power loss mid-write: the last record is cut short
        f.truncate(full - 5)

    async def go():
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            log = EmbeddedLog(tmp_path)
        assert (await fetch_all(log, "t"))[2] == [b"first", b"second"]
        assert await log.end_offsets("t") == [2]
        # The next record takes the lost record's offset and the file is clean again.
        assert await log.produce("t", [rec(b"k2", b"again")]) == [(0, 2)]
        await log.close()
        log = EmbeddedLog(tmp_path)
        assert (await fetch_all(log, "t"))[2] == [b"first", b"second", b"again"]
        await log.close()

    run(go())
    third = 8 + 28 + len(b"k2") + len(b"third-record-value")  # framing + fixed + key + value
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == LOGGER]
    assert len(warnings) == 1
    msg = warnings[0].getMessage()
    assert "topic t partition 0" in msg
    # What survived of the torn record was cut: its size minus the 5 lost bytes.
    assert f"{third - 5} bytes cut" in msg
    assert seg.stat().st_size == full - third + (8 + 28 + len(b"k2") + len(b"again"))


def test_corrupt_tail_is_truncated_and_logged(tmp_path, caplog):
    run(_three_records(tmp_path))
    (seg,) = segment_files(tmp_path, "t")
    data = bytearray(seg.read_bytes())
    data[-3] ^= 0xFF  # a flipped byte inside the last record's value
    seg.write_bytes(bytes(data))

    async def go():
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            log = EmbeddedLog(tmp_path)
        offs, keys, vals = await fetch_all(log, "t")
        assert (offs, vals) == ([0, 1], [b"first", b"second"])
        await log.close()

    run(go())
    msgs = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(msgs) == 1 and "CRC mismatch" in msgs[0] and "partition 0" in msgs[0]
    # 8 bytes of framing + 28 fixed + key + value
    assert f"{8 + 28 + 2 + len(b'third-record-value')} bytes cut" in msgs[0]
    assert seg.stat().st_size == len(data) - (8 + 28 + 2 + len(b"third-record-value"))


def test_garbage_appended_after_last_record_is_cut(tmp_path, caplog):
    run(_three_records(tmp_path))
    (seg,) = segment_files(tmp_path, "t")
    good = seg.stat().st_size
    with open(seg, "ab") as f:
        f.write(b"\xff\xff\xff\x7f" + b"\x00" * 10)  # absurd length, short body

    async def go():
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            log = EmbeddedLog(tmp_path)
        assert (await fetch_all(log, "t"))[2] == [b"first", b"second", b"third-record-value"]
        await log.close()

    run(go())
    assert seg.stat().st_size == good
    assert any("14 bytes cut" in r.getMessage() for r in caplog.records)


def test_check_crcs_catches_corruption_in_sealed_segment(tmp_path):
    async def go():
        log = EmbeddedLog(tmp_path, segment_bytes=300)
        await log.create_topic("t")
        for i in range(20):
            await log.produce("t", [rec(b"k", b"payload-%02d" % i)])
        await log.close()
        first = segment_files(tmp_path, "t")[0]
        data = bytearray(first.read_bytes())
        data[-2] ^= 0x01  # the value of the sealed segment's last record
        first.write_bytes(bytes(data))
        log = EmbeddedLog(tmp_path, segment_bytes=300, check_crcs=True)
        with pytest.raises(CorruptRecordError):
            await fetch_all(log, "t")
        await log.close()
    run(go())


def test_second_instance_on_same_path_is_refused(tmp_path):
    async def go():
        log = EmbeddedLog(tmp_path)
        with pytest.raises(RuntimeError):
            EmbeddedLog(tmp_path)
        await log.close()
        EmbeddedLog(tmp_path)  # free again after close
    run(go())


# --- groups and consumers ------------------------------------------------------------

def test_group_offsets_commit_and_restore(make_log):
    async def go():
        log = make_log()
        await log.create_topic("t", 2)
        await log.produce("t", [rec(None, b"%d" % i, partition=i % 2) for i in range(10)])
        assert await log.committed("g", "t") == {}
        c = log.consumer("g", ["t"])
        assert c.assignment() == {("t", 0), ("t", 1)}
        batches = await c.poll(timeout=0)
        assert sorted((b.partition, b.offsets) for b in batches) == [
            (0, [0, 1, 2, 3, 4]), (1, [0, 1, 2, 3, 4])]
        await c.commit({("t", 0): 5, ("t", 1): 3})
        assert await log.committed("g", "t") == {0: 5, 1: 3}
        assert await log.committed("other", "t") == {}
        await c.close()
        await log.close()
        if log.path is None:
            return
        log = make_log()
        assert await log.committed("g", "t") == {0: 5, 1: 3}
        c = log.consumer("g", ["t"])
        batches = await c.poll(timeout=0)
        assert [(b.partition, b.offsets) for b in batches] == [(1, [3, 4])]
        await c.close()
        await log.close()
    run(go())


def test_consumer_starts_earliest_or_at_committed_position(make_log):
    async def go():
        log = make_log()
        await log.create_topic("t")
        await log.produce("t", [rec(None, b"%d" % i) for i in range(5)])
        c = log.consumer("fresh", ["t"])
        assert [b.offsets for b in await c.poll(timeout=0)] == [[0, 1, 2, 3, 4]]
        assert await c.poll(timeout=0) == []
        await c.close()
        # "latest": commit the end offset before the first poll.
        c = log.consumer("late", ["t"])
        await c.commit({("t", 0): (await log.end_offsets("t"))[0]})
        assert await c.poll(timeout=0) == []
        await log.produce("t", [rec(None, b"new")])
        assert [b.values for b in await c.poll(timeout=0)] == [[b"new"]]
        await c.close()
        await log.close()
    run(go())


def test_poll_respects_max_records(make_log):
    async def go():
        log = make_log()
        await log.create_topic("t", 2)
        await log.produce("t", [rec(None, b"x", partition=i % 2) for i in range(100)])
        c = log.consumer("g", ["t"])
        seen = 0
        while True:
            batches = await c.poll(max_records=7, timeout=0)
            if not batches:
                break
            n = sum(len(b) for b in batches)
            assert n <= 7
            seen += n
        assert seen == 100
        await c.close()
        await log.close()
    run(go())


def test_poll_wakes_on_produce_without_waiting_out_the_timeout(make_log):
    async def go():
        log = make_log()
        await log.create_topic("t")
        c = log.consumer("g", ["t"])

        async def produce_later():
            await asyncio.sleep(0.05)
            await log.produce("t", [rec(b"k", b"hello")])

        t0 = time.monotonic()
        task = asyncio.create_task(produce_later())
        batches = await c.poll(timeout=10)
        elapsed = time.monotonic() - t0
        await task
        assert [b.values for b in batches] == [[b"hello"]]
        assert elapsed < 2
        # Nothing new: poll waits about its timeout and returns nothing.
        t0 = time.monotonic()
        assert await c.poll(timeout=0.1) == []
        assert 0.09 <= time.monotonic() - t0 < 2
        await c.close()
        await log.close()
    run(go())


def test_consumer_picks_up_topic_created_later(make_log):
    async def go():
        log = make_log()
        c = log.consumer("g", ["later"])
        assert c.assignment() == set()

        async def create_and_produce():
            await asyncio.sleep(0.05)
            await log.create_topic("later", 2)
            await log.produce("later", [rec(None, b"v", partition=1)])

        task = asyncio.create_task(create_and_produce())
        batches = await c.poll(timeout=5)
        await task
        assert c.assignment() == {("later", 0), ("later", 1)}
        assert [(b.topic, b.partition, b.values) for b in batches] == [("later", 1, [b"v"])]
        await c.close()
        await log.close()
    run(go())


# --- compaction ----------------------------------------------------------------------

def test_compaction_keeps_latest_per_key_offsets_and_tombstones(make_log):
    async def go():
        log = make_log(segment_bytes=200, index_interval=2)
        await log.create_topic("c", 1, config={"cleanup.policy": "compact"})
        records = [rec(b"a", b"a1"), rec(b"b", b"b1"), rec(b"a", b"a2"), rec(b"c", b"c1"),
                   rec(b"b", None), rec(None, b"nokey"), rec(b"a", b"a3"), rec(b"d", b"d1"),
                   rec(b"c", b"c2", headers=(("h", b"1"),))]
        for r in records:
            await log.produce("c", [r])
        assert await log.compact("c") == 4
        b = await log.fetch("c", 0, 0)
        assert b.offsets == [4, 5, 6, 7, 8]
        assert b.keys == [b"b", None, b"a", b"d", b"c"]
        assert b.values == [None, b"nokey", b"a3", b"d1", b"c2"]
        assert b.headers == [(), (), (), (), (("h", b"1"),)]
        assert await log.end_offsets("c") == [9]
        # Fetching from a removed offset starts at the next surviving record.
        assert (await log.fetch("c", 0, 1, 2)).offsets == [4, 5]
        assert (await log.fetch("c", 0, 7, 100)).offsets == [7, 8]
        # Offsets continue after compaction; compacting again is a no-op.
        assert await log.produce("c", [rec(b"a", b"a4")]) == [(0, 9)]
        assert await log.compact("c") == 1
        assert await log.compact("c") == 0
        expected = ([4, 5, 7, 8, 9], [b"b", None, b"d", b"c", b"a"])
        assert (await fetch_all(log, "c", step=2))[:2] == expected
        await log.close()
        if log.path is not None:
            log = make_log(segment_bytes=200, index_interval=2)
            assert (await fetch_all(log, "c"))[:2] == expected
            assert await log.produce("c", [rec(b"e", b"e1")]) == [(0, 10)]
            await log.close()
    run(go())


def test_compaction_needs_compact_policy(make_log):
    async def go():
        log = make_log()
        await log.create_topic("d")
        with pytest.raises(ValueError):
            await log.compact("d")
        await log.close()
    run(go())


def test_fsync_mode_and_odd_group_names_survive_restart(tmp_path):
    async def go():
        log = EmbeddedLog(tmp_path, fsync=True, segment_bytes=150)
        await log.create_topic("t", 2)
        for i in range(6):
            await log.produce("t", [rec(b"k%d" % i, b"v%d" % i)])
        c = log.consumer("query/1 \u00fc", ["t"])
        await c.commit({("t", 0): 1, ("t", 1): 2})
        await c.close()
        ends = await log.end_offsets("t")
        await log.close()
        log = EmbeddedLog(tmp_path, fsync=True, segment_bytes=150)
        assert await log.end_offsets("t") == ends
        assert await log.committed("query/1 \u00fc", "t") == {0: 1, 1: 2}
        await log.close()
    run(go())


def test_consumer_position_and_seek(make_log):
    async def go():
        log = make_log()
        await log.create_topic("t")
        await log.produce("t", [rec(None, b"%d" % i) for i in range(10)])
        c = log.consumer("g", ["t"])
        assert c.position("t", 0) == 0
        await c.poll(max_records=4, timeout=0)
        assert c.position("t", 0) == 4
        c.seek("t", 0, 8)
        assert [b.offsets for b in await c.poll(timeout=0)] == [[8, 9]]
        assert c.position("t", 0) == 10
        await c.close()
        await log.close()
    run(go())


# --- a failing disk -------------------------------------------------------------------

class FullDisk:
    """A write fault at the write call, as a full disk gives it: the first ``short`` bytes of
    the next write land in the file, then ENOSPC (what ``os.write`` does on a filesystem that
    fills up part way). Further writes fail outright while ``full`` is set."""

    def __init__(self, monkeypatch, short: int = 100) -> None:
        import errno
        import os

        from streamsql.runtime.log import segment

        self.full = False
        real_write = os.write

        def write(fd, data):
            if not self.full:
                return real_write(fd, data)
            if self.short:
                n = real_write(fd, bytes(data[:self.short]))
                self.short = 0
                return n
            raise OSError(errno.ENOSPC, "No space left on device")

        self.short = short
        monkeypatch.setattr(segment.os, "write", write)


@pytest.mark.parametrize("partitions", [1, 3])
def test_a_write_that_fails_part_way_leaves_nothing_behind(tmp_path, monkeypatch, caplog,
                                                            partitions):
    """A full disk in the middle of a produce: the produce fails, nothing of it stays (not
    even in the partitions whose write succeeded), and everything acknowledged before and
    after the failure is there after a restart, with no tail cut."""
    disk = FullDisk(monkeypatch)

    async def go():
        log = EmbeddedLog(tmp_path / "log", segment_bytes=4096)
        await log.create_topic("t", partitions)
        acked = []

        async def produce(i):
            batch = [rec(b"k%d-%d" % (i, j), b"v" * 200, 10) for j in range(5)]
            await log.produce("t", batch)
            acked.extend(r.key for r in batch)

        for i in range(20):
            await produce(i)
        for i in range(20, 25):
            disk.full = True
            disk.short = 100
            with pytest.raises(OSError):
                await produce(i)
        disk.full = False
        for i in range(25, 45):  # space is back: writing resumes without a restart
            await produce(i)
        live = sorted([k for p in range(partitions) for k in (await fetch_all(log, "t", p))[1]])
        await log.close()
        return acked, live

    acked, live = run(go())
    assert len(acked) == 200 and live == sorted(acked)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        async def reopen():
            log = EmbeddedLog(tmp_path / "log")
            keys = sorted([k for p in range(partitions) for k in (await fetch_all(log, "t", p))[1]])
            await log.close()
            return keys
        assert run(reopen()) == sorted(acked)
    assert "truncated" not in caplog.text


def test_a_failed_fsync_takes_the_write_back(tmp_path, monkeypatch):
    """With fsync on, a produce is acknowledged only once it is on disk: a failed fsync fails
    the produce and the records are not in the log (Linux may drop pages it could not write,
    so they must not be read either)."""
    import errno

    from streamsql.runtime.log import segment

    async def go():
        log = EmbeddedLog(tmp_path / "log", fsync=True)
        await log.create_topic("t")
        await log.produce("t", [rec(b"a", b"1")])
        real = segment.os.fsync

        def failing(fd):
            raise OSError(errno.EIO, "Input/output error")
        monkeypatch.setattr(segment.os, "fsync", failing)
        with pytest.raises(OSError):
            await log.produce("t", [rec(b"b", b"2")])
        monkeypatch.setattr(segment.os, "fsync", real)
        await log.produce("t", [rec(b"c", b"3")])
        offs, keys, _ = await fetch_all(log, "t")
        await log.close()
        return offs, keys

    assert run(go()) == ([0, 1], [b"a", b"c"])


# --- retention ------------------------------------------------------------------------

async def _fill(log, topic, n, ts, size=100, key=b"k"):
    """``n`` records stamped ``ts``, five a write (a write goes to one segment)."""
    for i in range(0, n, 5):
        await log.produce(topic, [rec(key, b"v" * size, ts) for _ in range(min(5, n - i))])


def test_time_retention_deletes_closed_segments_past_retention_ms(tmp_path, caplog):
    """retention.ms by the records' timestamps: closed segments whose newest record is older
    go; the active segment and newer segments stay; the log start offset moves; a restart
    keeps it so."""
    now = 10_000_000

    async def go():
        log = EmbeddedLog(tmp_path, segment_bytes=1000)
        await log.create_topic("t", config={"retention.ms": "60000"})
        await _fill(log, "t", 30, now - 120_000)   # old
        await _fill(log, "t", 30, now - 1_000)     # recent
        segs_before = len(segment_files(tmp_path, "t"))
        with caplog.at_level(logging.INFO, logger=LOGGER):
            deleted = await log.apply_retention(now)
        offs, _, _ = await fetch_all(log, "t")
        begin = (await log.begin_offsets("t"))[0]
        await log.close()
        return segs_before, deleted, offs, begin

    segs_before, deleted, offs, begin = run(go())
    assert deleted == 3 and len(segment_files(tmp_path, "t")) == segs_before - 3
    # Exactly the old segments went: every recent record is still there, from the new start.
    assert begin == 30 and offs == list(range(30, 60))
    assert "log start offset" in caplog.text

    async def reopen():
        log = EmbeddedLog(tmp_path)
        b = (await log.begin_offsets("t"))[0]
        await log.close()
        return b
    assert run(reopen()) == begin


def test_size_retention_keeps_the_partition_under_retention_bytes(make_log):
    async def go():
        log = make_log(segment_bytes=1000)
        await log.create_topic("t", config={"retention.bytes": "3000"})
        for _ in range(10):
            await _fill(log, "t", 10, 1)
        await log.apply_retention()
        part = log.partitions_of("t")[0]
        size = sum(s.size for s in part.segments)
        oldest = part.segments[0].size
        offs, _, _ = await fetch_all(log, "t")
        await log.close()
        return size, oldest, offs

    size, oldest, offs = run(go())
    # Kafka's rule: the oldest segments go while the rest would still hold retention.bytes.
    assert size >= 3000 > size - oldest
    assert offs[-1] == 99 and offs[0] > 0


def test_compact_only_and_unlimited_topics_are_never_deleted(make_log):
    async def go():
        log = make_log(segment_bytes=500)
        await log.create_topic("c", config={"cleanup.policy": "compact", "retention.ms": "1"})
        await log.create_topic("d")  # no retention set: kept forever (the log's default)
        for topic in ("c", "d"):
            await _fill(log, topic, 30, 1)
        deleted = await log.apply_retention(10**12)
        ends = [(await log.begin_offsets(t))[0] for t in ("c", "d")]
        await log.close()
        return deleted, ends

    assert run(go()) == (0, [0, 0])


def test_broker_defaults_apply_to_topics_without_their_own(make_log):
    async def go():
        log = make_log(segment_bytes=500, defaults={"log.retention.ms": "1000"})
        await log.create_topic("t")
        await log.create_topic("kept", config={"retention.ms": "-1"})
        for topic in ("t", "kept"):
            await _fill(log, topic, 30, 1)
        await log.apply_retention(10**12)
        begins = [(await log.begin_offsets(t))[0] for t in ("t", "kept")]
        await log.close()
        return begins

    t_begin, kept_begin = run(go())
    assert t_begin > 0 and kept_begin == 0


@pytest.mark.parametrize("reset", ["earliest", "latest"])
def test_a_consumer_whose_position_was_deleted_resumes_per_auto_offset_reset(make_log, reset):
    async def go():
        log = make_log(segment_bytes=500)
        await log.create_topic("t", config={"retention.ms": "1000"})
        await _fill(log, "t", 5, 1)
        log.commit_offsets("g", {("t", 0): 2})  # the group stopped at offset 2
        await _fill(log, "t", 40, 1)
        await _fill(log, "t", 5, 10**12)
        await log.apply_retention(10**12)
        begin = (await log.begin_offsets("t"))[0]
        consumer = log.consumer("g", ["t"], reset=reset)
        got = []
        for _ in range(5):
            for b in await consumer.poll(timeout=0.05):
                got += b.offsets
        await consumer.close()
        await log.close()
        return begin, got

    begin, got = run(go())
    assert begin > 2
    if reset == "earliest":
        assert got == list(range(begin, 50))
    else:
        assert got == []


def test_segment_ms_rolls_a_slowly_written_segment_so_retention_reaches_it(tmp_path):
    async def go():
        log = EmbeddedLog(tmp_path, retention_check_ms=None)
        await log.create_topic("t", config={"segment.ms": "0", "retention.ms": "1000"})
        await _fill(log, "t", 1, 1)
        await _fill(log, "t", 1, 1)  # segment.ms 0: each write after the first rolls
        await _fill(log, "t", 1, 10**12)
        n = await log.apply_retention(10**12)
        offs, _, _ = await fetch_all(log, "t")
        await log.close()
        return n, offs

    assert run(go()) == (2, [2])


def test_the_cleaner_runs_in_the_background(tmp_path):
    async def go():
        log = EmbeddedLog(tmp_path, segment_bytes=500, retention_check_ms=50)
        await log.create_topic("t", config={"retention.ms": "1000"})
        await _fill(log, "t", 30, 1)
        for _ in range(100):
            if (await log.begin_offsets("t"))[0] > 0:
                break
            await asyncio.sleep(0.05)
        begin = (await log.begin_offsets("t"))[0]
        await log.close()
        return begin

    assert run(go()) > 0


# --- compaction in the background -----------------------------------------------------

def _latest(offs, keys, vals):
    out = {}
    for o, k, v in zip(offs, keys, vals):
        out[k] = (o, v)
    return out


async def _updates(log, topic, rounds, keys=5, ts=1):
    for r in range(rounds):
        await log.produce(topic, [rec(b"k%d" % i, b"r%d" % r, ts) for i in range(keys)])


def test_the_cleaner_compacts_closed_segments_keeping_the_latest_per_key(make_log):
    async def go():
        log = make_log(segment_bytes=300)
        await log.create_topic("c", config={"cleanup.policy": "compact"})
        await _updates(log, "c", 40)
        before = await fetch_all(log, "c")
        removed = await log.apply_retention(10**12) or 0
        part = log.partitions_of("c")[0]
        after = await fetch_all(log, "c")
        again = await LogCleaner(log).compact(part, part.policy, 10**12)
        await log.close()
        return before, after, again

    from streamsql.runtime.log.cleaner import LogCleaner
    before, after, again = run(go())
    assert len(after[0]) < len(before[0]) / 3
    # What a reader of the whole log ends with is unchanged, offsets included.
    assert _latest(*after) == _latest(*before)
    assert after[0] == sorted(after[0])
    assert again == 0  # nothing new since: below min.cleanable.dirty.ratio


def test_compact_delete_topics_are_compacted_and_their_old_segments_deleted(make_log):
    """``cleanup.policy=compact,delete``: compacted (the latest record of each key kept),
    and whole segments past retention.ms deleted, latest records or not."""
    now = 10_000_000

    async def go():
        log = make_log(segment_bytes=300)
        await log.create_topic("cd", config={"cleanup.policy": "compact,delete",
                                             "retention.ms": "60000",
                                             "min.cleanable.dirty.ratio": "0"})
        await _updates(log, "cd", 40, ts=now - 1_000)
        before = await fetch_all(log, "cd")
        await log.apply_retention(now)
        compacted = await fetch_all(log, "cd")
        compacted_begin = (await log.begin_offsets("cd"))[0]
        # An hour later every closed segment is past retention: only the active one stays.
        await log.apply_retention(now + 3_600_000)
        part = log.partitions_of("cd")[0]
        after = await fetch_all(log, "cd")
        begin = (await log.begin_offsets("cd"))[0]
        active = part.segments[-1].base
        await log.close()
        return before, compacted, compacted_begin, after, begin, active

    before, compacted, compacted_begin, after, begin, active = run(go())
    assert len(compacted[0]) < len(before[0]) / 3 and compacted_begin == 0
    assert {k: v for k, (_, v) in _latest(*compacted).items()} == {b"k%d" % i: b"r39" for i in range(5)}
    assert len(after[0]) > 0 and begin == active > 0 and after[0][0] >= active


def test_compaction_merges_segments_so_a_long_lived_table_keeps_few_files(make_log):
    """Compacted segments shrink; merged (up to segment.bytes) they stay few: a table of 5
    keys updated 400 times keeps a handful of segment files, not one per segment rolled."""
    async def go():
        log = make_log(segment_bytes=400)
        await log.create_topic("c", config={"cleanup.policy": "compact"})
        part = log.partitions_of("c")[0]
        cleaner = LogCleaner(log)
        most = 0
        for r in range(400):
            await log.produce("c", [rec(b"k%d" % i, b"r%d" % r, 1) for i in range(5)])
            if r % 20 == 19:
                await cleaner.compact(part, part.policy, 10**12)
                most = max(most, len(part.segments))
        rolled = 400 * 5 * 40 // 400  # about as many segments as were ever rolled
        latest = _latest(*(await fetch_all(log, "c")))
        await log.close()
        return most, rolled, latest

    from streamsql.runtime.log.cleaner import LogCleaner
    most, rolled, latest = run(go())
    assert most <= 30 < rolled
    assert {k: v for k, (_, v) in latest.items()} == {b"k%d" % i: b"r399" for i in range(5)}


@pytest.mark.parametrize("crash_at", ["deleting the old segments", "renaming the swap"])
def test_a_crash_during_a_compaction_swap_is_finished_at_open(tmp_path, monkeypatch, crash_at):
    """The merged segment is renamed to ``.swap`` before the segments it replaces go: a
    crash after that point leaves the swap, which the next open puts in place (deleting
    whichever replaced segments are left), so no offset is read twice or lost."""
    import os as os_module

    from streamsql.runtime.log import embedded as embedded_module
    from streamsql.runtime.log.cleaner import LogCleaner

    class Crash(BaseException):
        pass

    async def crash_mid_swap():
        log = EmbeddedLog(tmp_path, segment_bytes=300, retention_check_ms=None)
        await log.create_topic("c", config={"cleanup.policy": "compact"})
        await _updates(log, "c", 30)
        before = _latest(*(await fetch_all(log, "c")))
        part = log.partitions_of("c")[0]
        real_replace = os_module.replace
        if crash_at == "renaming the swap":
            def replace(src, dst):
                if str(src).endswith(".swap"):
                    raise Crash()
                return real_replace(src, dst)
            monkeypatch.setattr(embedded_module.os, "replace", replace)
        else:
            real_unlink = Path.unlink

            def unlink(self, missing_ok=False):
                if self.suffix == ".log" and any(p.name.endswith(".swap") for p in self.parent.iterdir()):
                    raise Crash()
                return real_unlink(self, missing_ok=missing_ok)
            monkeypatch.setattr(Path, "unlink", unlink)
        with pytest.raises(Crash):
            await LogCleaner(log).compact(part, part.policy, 10**12, force=True)
        monkeypatch.undo()
        swaps = list((tmp_path / "topics" / "c" / "0").glob("*.swap"))
        await log.close()  # (releases the directory lock; the files stay as the crash left them)
        return before, swaps

    before, swaps = run(crash_mid_swap())
    assert len(swaps) == 1

    async def reopen():
        log = EmbeddedLog(tmp_path, retention_check_ms=None)
        offs, keys, vals = await fetch_all(log, "c")
        await log.close()
        return offs, keys, vals

    offs, keys, vals = run(reopen())
    assert offs == sorted(set(offs))  # no offset twice, in order
    assert _latest(offs, keys, vals) == before
    assert not list((tmp_path / "topics" / "c" / "0").glob("*.swap"))


def test_tombstones_stay_for_delete_retention_ms_then_go(make_log):
    async def go():
        log = make_log(segment_bytes=300)
        await log.create_topic("c", config={"cleanup.policy": "compact",
                                            "delete.retention.ms": "3600000"})
        await _updates(log, "c", 5)
        await log.produce("c", [rec(b"k0", None, 1)])  # k0 deleted
        for r in range(20):  # the others go on, so the tombstone's segment closes
            await log.produce("c", [rec(b"k%d" % i, b"s%d" % r, 1) for i in range(1, 5)])
        part = log.partitions_of("c")[0]
        cleaner = LogCleaner(log)
        now = part.segments[0].created_ms + 1000  # the segments are young
        await cleaner.compact(part, part.policy, now, force=True)
        young = _latest(*(await fetch_all(log, "c")))
        await cleaner.compact(part, part.policy, now + 3_600_000 + 1, force=True)
        old = await fetch_all(log, "c")
        await log.close()
        return young, old

    from streamsql.runtime.log.cleaner import LogCleaner
    young, old = run(go())
    assert young[b"k0"][1] is None  # the delete is still there to be read
    assert b"k0" not in old[1]  # and gone, with every earlier k0, after delete.retention.ms
    assert {k: v for k, (_, v) in _latest(*old).items()} == {b"k%d" % i: b"s19" for i in range(1, 5)}


def test_a_cut_back_during_compaction_discards_it(make_log, monkeypatch):
    """An exactly-once restart cuts a changelog back while the cleaner works on it: the
    cleaner's idea of each key's latest record may be gone, so nothing is swapped in."""
    from streamsql.runtime.log import cleaner as cleaner_module

    async def go():
        log = make_log(segment_bytes=300)
        await log.create_topic("c", config={"cleanup.policy": "compact"})
        await _updates(log, "c", 10)
        part = log.partitions_of("c")[0]
        real = asyncio.to_thread

        async def then_truncate(fn, *args):
            result = await real(fn, *args)
            if fn is cleaner_module._rewrite:
                await log.truncate("c", 0, part.end - 5)  # the newest round is gone
            return result
        monkeypatch.setattr(cleaner_module.asyncio, "to_thread", then_truncate)
        removed = await cleaner_module.LogCleaner(log).compact(part, part.policy, 10**12,
                                                                force=True)
        offs, keys, vals = await fetch_all(log, "c")
        await log.close()
        return removed, _latest(offs, keys, vals)

    removed, latest = run(go())
    assert removed == 0
    assert {k: v for k, (_, v) in latest.items()} == {b"k%d" % i: b"r8" for i in range(5)}


_COMPACTING_CHILD = r"""
import asyncio, sys
from streamsql.runtime.log.base import ProducerRecord
from streamsql.runtime.log.cleaner import LogCleaner
from streamsql.runtime.log.embedded import EmbeddedLog

async def main(path):
    log = EmbeddedLog(path, segment_bytes=2000, retention_check_ms=None)
    if "c" not in await log.list_topics():
        await log.create_topic("c", config={"cleanup.policy": "compact", "delete.retention.ms": "0"})
    part = log.partitions_of("c")[0]
    cleaner = LogCleaner(log)
    r = int(sys.argv[2])
    while True:
        await log.produce("c", [ProducerRecord(b"k%d" % i, b"r%d" % r, 1) for i in range(20)])
        print(r, flush=True)  # acknowledged
        r += 1
        await cleaner.compact(part, part.policy, 10**12, force=True)

asyncio.run(main(sys.argv[1]))
"""


def test_kill_9_during_compaction_loses_nothing_acknowledged(tmp_path):
    """A process compacting in a loop is killed at random moments: reopened, the log
    reads to its end, and every key's latest value is at least the last acknowledged one."""
    import random
    import signal
    import subprocess
    import sys

    rnd = random.Random(13)
    next_round = 0
    for _ in range(6):
        child = subprocess.Popen([sys.executable, "-c", _COMPACTING_CHILD, str(tmp_path),
                                  str(next_round)], stdout=subprocess.PIPE, text=True)
        acked = []
        deadline = time.monotonic() + rnd.uniform(0.3, 1.2)
        while time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            acked.append(int(line))
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert acked, "the child acknowledged nothing"

        async def latest():
            log = EmbeddedLog(tmp_path, retention_check_ms=None)
            offs, keys, vals = await fetch_all(log, "c")
            await log.close()
            return offs, _latest(offs, keys, vals)
        offs, state = run(latest())
        assert offs == sorted(offs)
        rounds = {int(v[1:]) for _, v in state.values()}
        assert len(state) == 20 and min(rounds) >= acked[-1], (acked[-1], rounds)
        next_round = max(rounds) + 1


def test_a_segment_closed_while_timestamps_are_read_waits_for_the_next_round(tmp_path, monkeypatch):
    """Retention reads closed segments' timestamps on a thread; a segment that closes
    meanwhile has none yet and must not pass for an empty one (and be deleted)."""
    from streamsql.runtime.log import cleaner as cleaner_module

    async def go():
        log = EmbeddedLog(tmp_path, segment_bytes=500, retention_check_ms=None)
        await log.create_topic("t", config={"retention.ms": "1000"})
        await _fill(log, "t", 20, 1)  # old
        real = asyncio.to_thread

        async def then_write(fn, *args):
            result = await real(fn, *args)
            await _fill(log, "t", 20, 10**12)  # new records close the active segment
            return result
        monkeypatch.setattr(cleaner_module.asyncio, "to_thread", then_write)
        await log.apply_retention(10**12)
        offs, _, _ = await fetch_all(log, "t")
        await log.close()
        return offs

    offs = run(go())
    assert offs[-20:] == list(range(20, 40))  # every new record is still there

"""Records produced as columns (``RecordColumns``, a source's batch): the embedded log frames
them without a record object each, and what is read back (after a restart too) is what the
same records produced one by one give."""
from __future__ import annotations

import asyncio
import random
from array import array

import pytest

from streamsql.runtime.log.base import PackedValues, ProducerRecord, RecordColumns
from streamsql.runtime.log.embedded import EmbeddedLog
from streamsql.runtime.log.segment import decode, encode_records, encode_values


def run(coro):
    return asyncio.run(coro)


async def read_all(log, topic, partition=0):
    out = []
    offset = 0
    while True:
        b = await log.fetch(topic, partition, offset, 500)
        if not len(b):
            return out
        out += list(zip(b.offsets, b.timestamps, b.keys, b.values))
        offset = b.offsets[-1] + 1


@pytest.mark.parametrize("key", [None, b"", b"k1"])
def test_a_batch_reads_back_as_the_same_records_one_by_one_give(key):
    rng = random.Random(7)
    for _ in range(60):
        n, interval = rng.randint(1, 120), rng.choice([1, 3, 32])
        countdown = rng.randrange(interval)
        middles = [bytes(rng.randrange(256) for _ in range(rng.randint(0, 40))) for _ in range(n)]
        values = [b'{"schema":{},"payload":' + m + b"}" for m in middles]
        packed = PackedValues(b"".join(values), array("i", map(len, values)))
        # (a Connect envelope around each: stored once)
        affixed = PackedValues(b"".join(middles), array("i", map(len, middles)), b'{"schema":{},"payload":', b"}")
        assert packed == values and affixed == values and affixed[-1] == values[-1]
        idx1, pos1 = array("q"), array("q")
        data1, _, left1 = encode_records([ProducerRecord(key, v, 42) for v in values], 900, 1, 0,
                                         countdown, interval, idx1, pos1)
        for given in (values, packed, affixed):
            idx2, pos2 = array("q"), array("q")
            data2, left2 = encode_values(given, key, 42, 900, 0, countdown, interval, idx2, pos2)
            assert left2 == left1 and (len(data2) < len(data1) or n < 3)
            if given is affixed and n > 1:
                assert len(data2) < len(encode_values(packed, key, 42, 900, 0, 0, 1, array("q"), array("q"))[0])
            assert list(idx2) == ([900] if countdown < n else []) and list(pos2) == [0] * len(idx2)
            got, want = [[], [], [], []], [[], [], [], []]
            assert decode(data2, 0, n, *got, None) == (len(data2), None)
            decode(data1, 0, n, *want, None)
            assert got == want
            # From an offset inside the batch, a few at a time: where to go on is the batch.
            some = [[], [], [], []]
            assert decode(data2, 0, 2, *some, None, 900 + n // 2)[0] == (0 if n // 2 + 2 < n else len(data2))
            assert some == [col[n // 2:n // 2 + 2] for col in want]


def test_a_batch_is_fetched_from_any_offset_in_it_and_a_few_records_at_a_time(tmp_path):
    async def go():
        log = EmbeddedLog(tmp_path / "log", index_interval=4)
        await log.create_topic("t", 1)
        values = [b"v%d" % i for i in range(1000)]
        await log.produce("t", RecordColumns(values[:10], 5))
        await log.produce("t", [ProducerRecord(b"k", b"one", 6, (("h", b"x"),))])
        await log.produce("t", RecordColumns(PackedValues(b"".join(values[10:]), array("i", map(len, values[10:]))), 7,
                                             key=b"key"))
        expected = [(i, 5, None, values[i]) for i in range(10)] + [(10, 6, b"k", b"one")] + \
            [(11 + i, 7, b"key", v) for i, v in enumerate(values[10:])]
        for size in (1, 7, 500):  # fetches of a few records resume inside a batch
            got, offset = [], 0
            while True:
                b = await log.fetch("t", 0, offset, size)
                if not len(b):
                    break
                got += list(zip(b.offsets, b.timestamps, b.keys, b.values))
                offset = b.offsets[-1] + 1
            assert got == expected
        for offset in (0, 3, 9, 10, 11, 12, 500, 1000):  # any offset, through the index
            b = await log.fetch("t", 0, offset, 3)
            assert b.offsets == [o for o, *_ in expected[offset:offset + 3]]
            assert b.values == [v for *_, v in expected[offset:offset + 3]]
        b = await log.fetch("t", 0, 8, 4)
        assert b.headers == [(), (), (("h", b"x"),), ()]
        await log.close()
        log = EmbeddedLog(tmp_path / "log", index_interval=4)  # the scan at open reads batches too
        assert await read_all(log, "t") == expected
        await log.close()
    run(go())


@pytest.mark.parametrize("damage", ["torn", "corrupt"])
def test_a_torn_or_corrupt_batch_at_the_tail_is_cut_off_at_open(tmp_path, damage):
    async def go():
        log = EmbeddedLog(tmp_path / "log")
        await log.create_topic("t", 1)
        await log.produce("t", RecordColumns([b"a", b"b"], 1))
        await log.produce("t", RecordColumns([b"c" * 100, b"d" * 100], 2))
        await log.close()
        f = next((tmp_path / "log").rglob("*.log"))
        data = f.read_bytes()
        if damage == "torn":
            f.write_bytes(data[:-50])
        else:
            f.write_bytes(data[:-50] + bytes([data[-50] ^ 1]) + data[-49:])
        log = EmbeddedLog(tmp_path / "log")
        assert await read_all(log, "t") == [(0, 1, None, b"a"), (1, 1, None, b"b")]
        assert (await log.produce("t", RecordColumns([b"e"], 3))) == [(0, 2)]  # goes on after the good ones
        assert [v for *_, v in await read_all(log, "t")] == [b"a", b"b", b"e"]
        await log.close()
    run(go())


@pytest.mark.parametrize("path", [True, False])
def test_truncating_inside_a_batch_keeps_the_records_before_the_cut(tmp_path, path):
    async def go():
        log = EmbeddedLog(tmp_path / "log" if path else None, index_interval=2)
        await log.create_topic("t", 1)
        await log.produce("t", RecordColumns([b"%d" % i for i in range(10)], 1, key=b"k"))
        await log.produce("t", RecordColumns([b"x", b"y"], 2))
        assert await log.truncate("t", 0, 4) == 8
        assert await log.end_offsets("t") == [4]
        assert await read_all(log, "t") == [(i, 1, b"k", b"%d" % i) for i in range(4)]
        await log.produce("t", RecordColumns([b"z"], 3))
        expected = [(i, 1, b"k", b"%d" % i) for i in range(4)] + [(4, 3, None, b"z")]
        assert await read_all(log, "t") == expected
        await log.close()
        if path:
            log = EmbeddedLog(tmp_path / "log", index_interval=2)
            assert await read_all(log, "t") == expected
            await log.close()
    run(go())


def test_batches_are_compacted_and_aged_as_records(tmp_path):
    async def go():
        log = EmbeddedLog(tmp_path / "log", segment_bytes=200)
        await log.create_topic("c", 1, config={"cleanup.policy": "compact"})
        await log.produce("c", RecordColumns([b"old-%d" % i for i in range(5)], 1, key=b"a"))
        await log.produce("c", [ProducerRecord(b"b", b"bee", 2)])
        await log.produce("c", RecordColumns([b"new"], 3, key=b"a"))
        await log.produce("c", [ProducerRecord(b"z", b"last", 4)])  # (the active segment is left alone)
        assert await log.compact("c") == 5
        assert await read_all(log, "c") == [(5, 2, b"b", b"bee"), (6, 3, b"a", b"new"), (7, 4, b"z", b"last")]
        seg = log.partitions_of("c")[0].segments[0]
        assert seg.scan_max_timestamp() is not None
        await log.close()
    run(go())


def test_columns_read_back_and_survive_a_restart(tmp_path):
    async def go():
        log = EmbeddedLog(tmp_path / "log", segment_bytes=4000)  # several segments
        await log.create_topic("t", 1)
        await log.produce("t", [ProducerRecord(b"a", b"first", 5)])
        values = [f"value-{i}".encode() * (i % 7) for i in range(300)]
        got = await log.produce("t", RecordColumns(values, 1234))
        assert got == [(0, o) for o in range(1, 301)]
        assert len(got) == 300 and got[-1] == (0, 300) and got[:2] == [(0, 1), (0, 2)] and list(got)[5] == (0, 6)
        await log.produce("t", RecordColumns([b"x", None, b"y"], 99, key=b"k"))  # a tombstone among them
        expected = [(0, 5, b"a", b"first")] + [(1 + i, 1234, None, v) for i, v in enumerate(values)] + \
            [(301, 99, b"k", b"x"), (302, 99, b"k", None), (303, 99, b"k", b"y")]
        assert await read_all(log, "t") == expected
        await log.close()
        log = EmbeddedLog(tmp_path / "log", segment_bytes=4000)
        assert await read_all(log, "t") == expected
        assert (await log.fetch("t", 0, 150, 2)).offsets == [150, 151]  # the index finds them
        await log.close()
    run(go())


def test_columns_to_several_partitions_are_spread_as_records():
    async def go():
        log = EmbeddedLog(None)
        await log.create_topic("t", 3)
        await log.produce("t", RecordColumns([b"%d" % i for i in range(30)], 7))
        counts = [len(await read_all(log, "t", p)) for p in range(3)]
        assert counts == [10, 10, 10]  # null keys: round robin
        await log.close()
    run(go())


def test_a_record_columns_sequence_is_its_records():
    cols = RecordColumns([b"a", b"b", None], 77, key=b"k")
    assert len(cols) == 3
    assert list(cols) == [ProducerRecord(b"k", b"a", 77), ProducerRecord(b"k", b"b", 77), ProducerRecord(b"k", None, 77)]
    assert cols[1] == ProducerRecord(b"k", b"b", 77)
    assert list(cols[1:]) == list(cols)[1:]


def test_packed_values_are_a_sequence_of_their_values():
    values = [b"<a>", b"<>", b"<ccc>"]
    for packed in (PackedValues(b"<a><><ccc>", array("i", [3, 2, 5])),
                   PackedValues(memoryview(b"accc!!")[:4], array("i", [1, 0, 3]), b"<", b">")):
        assert len(packed) == 3 and list(packed) == values and packed == values and packed == tuple(values)
        assert packed[0] == b"<a>" and packed[-1] == b"<ccc>" and packed[1:] == values[1:]
        assert packed != values[:2] and packed != [b"<a>", b"<>", b"<cc>"]
        with pytest.raises(IndexError):
            packed[3]
        assert list(RecordColumns(packed, 5)) == [ProducerRecord(None, v, 5) for v in values]

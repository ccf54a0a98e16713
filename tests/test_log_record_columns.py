"""Records produced as columns (``RecordColumns``, a source's batch): the embedded log frames
them without a record object each, and what is read back (after a restart too) is what the
same records produced one by one give."""
from __future__ import annotations

import asyncio
import random
from array import array

import pytest

from streamsql.runtime.log.base import ProducerRecord, RecordColumns
from streamsql.runtime.log.embedded import EmbeddedLog
from streamsql.runtime.log.segment import encode_records, encode_values


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
def test_framing_is_the_same_as_record_by_record(key):
    rng = random.Random(7)
    for _ in range(60):
        n, interval = rng.randint(1, 120), rng.choice([1, 3, 32])
        countdown = rng.randrange(interval)
        values = [bytes(rng.randrange(256) for _ in range(rng.randint(0, 40))) for _ in range(n)]
        idx1, pos1, idx2, pos2 = array("q"), array("q"), array("q"), array("q")
        data1, _, left1 = encode_records([ProducerRecord(key, v, 42) for v in values], 900, 1, 64,
                                         countdown, interval, idx1, pos1)
        data2, left2 = encode_values(values, key, 42, 900, 64, countdown, interval, idx2, pos2)
        assert (data2, left2, idx2, pos2) == (data1, left1, idx1, pos1)


def test_columns_read_back_and_survive_a_restart(tmp_path):
    async def go():
        log = EmbeddedLog(tmp_path / "log", segment_bytes=4000)  # several segments
        await log.create_topic("t", 1)
        await log.produce("t", [ProducerRecord(b"a", b"first", 5)])
        values = [f"value-{i}".encode() * (i % 7) for i in range(300)]
        got = await log.produce("t", RecordColumns(values, 1234))
        assert got == [(0, o) for o in range(1, 301)]
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

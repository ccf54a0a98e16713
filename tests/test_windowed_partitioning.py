"""Windowed keys are partitioned by the key without its window, as Kafka Streams'
WindowedStreamPartitioner does for ksqlDB's windowed sinks: every window of a key lands in the
partition a plain record with that key lands in (ksqlDB's REST case "windowed join - with
rowpartition" reads ROWPARTITION 0 for all windows of key 1). Checked on the embedded log for
a windowed aggregation and for a stateless query over the windowed result."""
from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path

from streamsql.engine import Engine
from streamsql.runtime.log.embedded import EmbeddedLog

PARTITIONS = 4
KEYS = range(12)
WINDOWS = (0, 1500, 3000)  # three tumbling windows of one second


async def _records(log: EmbeddedLog, topic: str) -> list[tuple[int, bytes]]:
    """(partition, key bytes) of every record of ``topic``."""
    out = []
    for p, end in enumerate(await log.end_offsets(topic)):
        offset = 0
        while offset < end:
            batch = await log.fetch(topic, p, offset)
            out += [(p, k) for k in batch.keys]
            offset += len(batch.keys)
    return out


async def _wait_for(log: EmbeddedLog, topic: str, count: int) -> list[tuple[int, bytes]]:
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        records = await _records(log, topic) if topic in await log.list_topics() else []
        if len(records) >= count or asyncio.get_running_loop().time() > deadline:
            return records
        await asyncio.sleep(0.05)


def _partitions_by_key(records: list[tuple[int, bytes]], window_len: int) -> dict[bytes, set[int]]:
    by_key: dict[bytes, set[int]] = defaultdict(set)
    for p, k in records:
        by_key[k[:-window_len] if window_len else k].add(p)
    return by_key


def test_every_window_of_a_key_is_in_the_partition_of_the_key(tmp_path: Path) -> None:
    async def main() -> None:
        log = EmbeddedLog(tmp_path)
        engine = Engine(log, {"auto.offset.reset": "earliest"})
        await engine.start()
        try:
            await engine.execute(f"CREATE STREAM s (k INT KEY, v INT) WITH (kafka_topic='s', "
                                 f"value_format='JSON', partitions={PARTITIONS});")
            for ts in WINDOWS:
                for k in KEYS:
                    await engine.execute(f"INSERT INTO s (ROWTIME, k, v) VALUES ({ts}, {k}, 1);")
            await engine.execute("CREATE TABLE counts AS SELECT k, COUNT(*) AS n FROM s "
                                 "WINDOW TUMBLING (SIZE 1 SECOND) GROUP BY k;")
            inputs = _partitions_by_key(await _records(log, "s"), 0)
            assert all(len(ps) == 1 for ps in inputs.values())
            assert len({p for ps in inputs.values() for p in ps}) > 1  # keys spread over partitions
            windows = len(KEYS) * len(WINDOWS)
            counted = _partitions_by_key(await _wait_for(log, "COUNTS", windows), 8)
            assert counted == inputs
            # A stateless query over the windowed table's topic writes its keys as they come.
            await engine.execute("CREATE STREAM w (k INT KEY, n BIGINT) WITH (kafka_topic='COUNTS', "
                                 "value_format='JSON', window_type='TUMBLING', window_size='1 SECOND');"
                                 "CREATE STREAM copied AS SELECT * FROM w WHERE n > 0;")
            copied = _partitions_by_key(await _wait_for(log, "COPIED", windows), 8)
            assert copied == inputs
        finally:
            await engine.close()
            await log.close()
    asyncio.run(main())

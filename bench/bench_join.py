"""Benchmark: a stream-table join in service mode (embedded log on disk, RocksDB state).

Writes a table of T JSON rows and starts

    CREATE STREAM enriched AS SELECT c.user_id AS user_id, c.page, u.name, u.region
      FROM clicks c JOIN users u ON c.user_id = u.id EMIT CHANGES;

and times how long the query takes to load the table into the join's state (re-key stage,
then the join stage's RocksDB store and changelog). The engine is then closed, N stream
records are written (not timed), the engine is started again (the join's state is restored
from RocksDB, not rebuilt) and the time to join every record is measured: the stream's re-key
stage (fetch, JSON decode, re-key, write the repartition topic) and the join stage (fetch,
RocksDB lookup of the table row, projection, JSON encode, write the sink), each committing
exactly-once per batch.

    python bench/bench_join.py [--records 1000000] [--table-rows 100000] [--partitions 1] [--on key|value]

``--on value`` joins on a value column instead (``ON c.uid = u.id``, UID holding the same
user): as ksqlDB, only the stream is re-keyed (a re-key stage writing a repartition topic,
read by the join stage), the table is read as it is. ``--on key`` (the default) joins on both
sides' keys: one stage, no repartition topic.

Prints records per second for the table load and for the stream records, and the process's
CPU seconds per million stream records.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import orjson

from streamsql.engine import Engine
from streamsql.runtime.log.base import Log, ProducerRecord
from streamsql.runtime.log.embedded import EmbeddedLog

SETUP = [
    "CREATE TABLE users (id STRING PRIMARY KEY, name STRING, region STRING) "
    "WITH (kafka_topic='users', value_format='JSON', partitions={p});",
    "CREATE STREAM clicks (user_id STRING KEY, uid STRING, page STRING) "
    "WITH (kafka_topic='clicks', value_format='JSON', partitions={p});",
    "CREATE STREAM enriched AS SELECT c.user_id AS user_id, c.page, u.name, u.region "
    "FROM clicks c JOIN users u ON c.user_id = u.id EMIT CHANGES;",
]
ON_VALUE = ("CREATE STREAM enriched AS SELECT c.uid AS uid, c.page, u.name, u.region "
            "FROM clicks c JOIN users u ON c.uid = u.id EMIT CHANGES;")


async def _produce(log: Log, topic: str, records: int, make: Callable[[int], ProducerRecord]) -> None:
    batch = []
    for i in range(records):
        batch.append(make(i))
        if len(batch) == 10000:
            await log.produce(topic, batch)
            batch = []
    if batch:
        await log.produce(topic, batch)


async def _consumed(engine: Engine, log: Log, timeout: float) -> None:
    """Wait until every stage of every query has committed all of its input."""
    deadline = time.monotonic() + timeout
    last = time.monotonic()
    while time.monotonic() < deadline:
        left = 0
        for runners in engine.runners.values():
            for runner in runners:
                for topic in runner.topics:
                    committed = await log.committed(runner.group, topic)
                    ends = await log.end_offsets(topic)
                    left += sum(max(end - committed.get(p, 0), 0) for p, end in enumerate(ends))
        if not left:
            return
        if time.monotonic() - last >= 10:
            last = time.monotonic()
            sys.stderr.write(f"  {left:,} records still to consume\n")
        await asyncio.sleep(0.01)
    raise TimeoutError("the join did not finish")


async def run(records: int, table_rows: int, partitions: int, on: str = "key") -> None:
    with tempfile.TemporaryDirectory() as tmp:
        log = EmbeddedLog(Path(tmp))
        engine = Engine(log, {"auto.offset.reset": "earliest"})  # (the tables were written first)
        await engine.start()
        await engine.execute(SETUP[0].format(p=partitions) + SETUP[1].format(p=partitions))
        await _produce(log, "users", table_rows, lambda i: ProducerRecord(
            f"user-{i}".encode(), orjson.dumps({"NAME": f"user number {i}", "REGION": f"region-{i % 10}"}), i))

        start = time.perf_counter()
        await engine.execute(SETUP[2] if on == "key" else ON_VALUE)
        stages = sum(len(q.stages) for q in engine.queries.values())
        await _consumed(engine, log, 600)
        table_s = time.perf_counter() - start
        await engine.close()
        await log.close()

        log = EmbeddedLog(Path(tmp))
        await _produce(log, "clicks", records, lambda i: ProducerRecord(
            f"user-{(i * 7919) % table_rows}".encode(),
            orjson.dumps({"UID": f"user-{(i * 7919) % table_rows}", "PAGE": f"/page/{i % 97}"}),
            table_rows + i))
        engine = Engine(log, {"auto.offset.reset": "earliest"})  # (the tables were written first)
        start = time.perf_counter()
        cpu = time.process_time()
        await engine.start()  # replays the query; its join state is restored from RocksDB
        await _consumed(engine, log, 1200)
        stream_s = time.perf_counter() - start
        stream_cpu = time.process_time() - cpu
        written = sum(await log.end_offsets("ENRICHED"))
        await engine.close()
        await log.close()
    assert written == records, (written, records)
    sys.stdout.write(
        f"stream-table JOIN on the {on}, {stages} stage(s), {partitions} partition(s), service mode, "
        "RocksDB state, exactly-once:\n"
        f"  table load: {table_rows:,} rows in {table_s:.1f}s = {table_rows / table_s:,.0f} rows/s\n"
        f"  stream:     {records:,} records joined against {table_rows:,} rows in {stream_s:.1f}s "
        f"= {records / stream_s:,.0f} records/s, {stream_cpu * 1e6 / records:.1f} CPU s per million\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--table-rows", type=int, default=100_000)
    ap.add_argument("--partitions", type=int, default=1)
    ap.add_argument("--on", choices=("key", "value"), default="key")
    args = ap.parse_args()
    asyncio.run(run(args.records, args.table_rows, args.partitions, args.on))


if __name__ == "__main__":
    main()

"""Benchmark: a windowed GROUP BY COUNT in service mode (embedded log on disk, RocksDB state).

Writes N JSON records over K keys to a source topic (not timed), starts

    CREATE TABLE counts AS SELECT user_id, COUNT(*) AS n FROM pageviews
      WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY user_id EMIT CHANGES;

and times how long the query takes to consume all of them. Grouped by the stream's key, it is
one stage (as ksqlDB's groupByKey): fetch, JSON decode, RocksDB read and write of the window's
accumulator and its changelog, JSON encode, write the table's topic, committing
exactly-once at each flush of its record cache (ksqlDB's defaults: every 2 s, or when its
10 MB are full). ``--repartition`` runs the two-stage plan instead (a group-by stage
writing a repartition topic, the aggregate stage reading it), for an A/B comparison.

    python bench/bench_aggregate.py [--records 1000000] [--keys 100000] [--partitions 1] [--repartition]

Prints records per second (of the source; each record is one table update) and the process's
CPU seconds per million records (the steadier figure on a shared machine).
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import orjson

from streamsql.engine import Engine
from streamsql.runtime.log.base import ProducerRecord
from streamsql.runtime.log.embedded import EmbeddedLog


async def _committed(engine: Engine, log: EmbeddedLog, runners: list, records: int) -> bool:
    """Whether the last stage has processed and committed every record it reads."""
    last = runners[-1]
    if last.processed < records:
        return False
    topic = last.stage.source_topic
    committed = await log.committed(last.group, topic)
    return sum(committed.values()) >= sum(await log.end_offsets(topic))


async def run(records: int, keys: int, partitions: int, window: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        log = EmbeddedLog(Path(tmp))
        engine = Engine(log)
        await engine.start()
        await engine.execute(
            "CREATE STREAM pageviews (user_id STRING KEY, page STRING) "
            f"WITH (kafka_topic='pageviews', value_format='JSON', partitions={partitions});")
        batch = []
        for i in range(records):
            # Keys spread over the run; 1000 records per second of event time (17 windows per
            # million records, so most updates go to a window seen before).
            batch.append(ProducerRecord(f"user-{(i * 7919) % keys}".encode(),
                                        orjson.dumps({"PAGE": f"/page/{i % 97}"}), i))
            if len(batch) == 10000:
                await log.produce("pageviews", batch)
                batch = []
        if batch:
            await log.produce("pageviews", batch)

        start = time.perf_counter()
        cpu_start = time.process_time()
        clause = "WINDOW TUMBLING (SIZE 1 MINUTE) " if window else ""
        # The records are already there: read them from the start (the default is 'latest').
        await engine.execute(f"CREATE TABLE counts AS SELECT user_id, COUNT(*) AS n FROM pageviews "
                             f"{clause}GROUP BY user_id EMIT CHANGES;", {"auto.offset.reset": "earliest"})
        runners = next(iter(engine.runners.values()))
        last = time.perf_counter()
        # Done once every input record is committed: counted, and flushed from the record
        # cache (at most one commit interval after the last one was counted).
        while not await _committed(engine, log, runners, records):
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            if now - last >= 10:
                last = now
                sys.stderr.write(f"  {runners[0].processed:,} grouped, {runners[-1].processed:,} "
                                 f"aggregated after {now - start:.0f}s\n")
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu_start
        # What the query's plan was: its stages and whether it made a repartition topic.
        stages = len(runners)
        repartitions = [t for t in await log.list_topics() if t.endswith("-repartition")]
        written = sum(await log.end_offsets("COUNTS"))
        [rows] = await engine.execute("SELECT * FROM counts WHERE user_id = 'user-1';")
        await engine.close()
        await log.close()
    # The record cache forwards each key's latest result per commit interval: at most one
    # update per record, at least one per (key, window).
    assert 0 < written <= records, (written, records)
    assert rows.rows, "key lookup found nothing"
    kind = "windowed (TUMBLING 1 MINUTE)" if window else "unwindowed"
    sys.stdout.write(
        f"{kind} GROUP BY COUNT, {keys:,} keys, {partitions} partition(s), service mode, RocksDB "
        f"state, exactly-once, {stages} stage(s), {len(repartitions)} repartition topic(s): "
        f"{records:,} records in {elapsed:.1f}s = {records / elapsed:,.0f} records/s, "
        f"{cpu * 1e6 / records:.1f} CPU s per million records\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--partitions", type=int, default=1)
    ap.add_argument("--no-window", action="store_true", help="GROUP BY without a window")
    ap.add_argument("--repartition", action="store_true",
                    help="re-key through a repartition topic though the GROUP BY is the stream's key "
                         "(the plan before groupByKey, for an A/B comparison)")
    args = ap.parse_args()
    if args.repartition:
        import streamsql.runtime.aggregate as aggregate

        aggregate.groups_by_source_key = lambda plan, key_format=None: False
    asyncio.run(run(args.records, args.keys, args.partitions, not args.no_window))


if __name__ == "__main__":
    main()

"""Benchmark: a stateless JSON filter + project CSAS on the embedded log (one process).

Writes N JSON records to a source topic (not timed), starts
``CREATE STREAM slow AS SELECT user_id, UCASE(page) AS page, ms FROM pageviews WHERE ms > 100``
and times how long the running query takes to consume all of them: fetch from the segment
files, JSON decode, filter, project, JSON encode, produce to the sink topic, commit offsets.

    python bench/bench_stateless.py [--records 500000] [--partitions 1]

Prints records per second. Run it pinned to one core (``taskset -c 0``) to measure one core.
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


async def run(records: int, partitions: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        log = EmbeddedLog(Path(tmp))
        engine = Engine(log)
        await engine.start()
        await engine.execute(
            "CREATE STREAM pageviews (user_id STRING KEY, page STRING, ms BIGINT) "
            f"WITH (kafka_topic='pageviews', value_format='JSON', partitions={partitions});")
        batch = []
        for i in range(records):
            batch.append(ProducerRecord(f"u{i % 1000}".encode(),
                                        orjson.dumps({"PAGE": f"/page/{i % 97}", "MS": i % 200}), i))
            if len(batch) == 5000:
                await log.produce("pageviews", batch)
                batch = []
        if batch:
            await log.produce("pageviews", batch)
        expected = sum(1 for i in range(records) if i % 200 > 100)

        start = time.perf_counter()
        cpu_start = time.process_time()
        # The input was written before the query starts: read it from the start.
        await engine.execute("CREATE STREAM slow AS SELECT user_id, UCASE(page) AS page, ms "
                             "FROM pageviews WHERE ms > 100;", {"auto.offset.reset": "earliest"})
        runner = next(iter(engine.runners.values()))[0]
        while runner.processed < records:
            await asyncio.sleep(0.005)
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu_start
        written = sum(await log.end_offsets("SLOW"))
        await engine.close()
        await log.close()
    assert written == expected, (written, expected)
    sys.stdout.write(
        f"stateless JSON filter+project CSAS, embedded log: {records} records in {elapsed:.2f}s = "
        f"{records / elapsed:,.0f} records/s ({written} written); {cpu:.2f} CPU s = "
        f"{records / cpu:,.0f} records per CPU second\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=500_000)
    ap.add_argument("--partitions", type=int, default=1)
    args = ap.parse_args()
    asyncio.run(run(args.records, args.partitions))


if __name__ == "__main__":
    main()

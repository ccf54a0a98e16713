"""Benchmark: a transient push aggregation left running while N records arrive, and its memory.

Starts, on an embedded log on disk (service mode),

    SELECT user_id, COUNT(*) AS n FROM pageviews
      WINDOW TUMBLING (SIZE 10 SECONDS, GRACE PERIOD 10 SECONDS) GROUP BY user_id EMIT CHANGES;

reads its rows as a client would, and writes N JSON records over K keys to the source while it
runs (event time 1 ms per record: a new window every 10,000 records). After every tenth of the
records has been aggregated it prints the process's resident memory, the windows the query's
state holds and the rows read so far. A transient query's state is in memory; windows past
size + grace are dropped as they close, so the state and the memory stay flat however long
the query runs (without that, 1M records over 10k keys leave 1M windows behind).

    python bench/bench_push_aggregate.py [--records 1000000] [--keys 10000]
"""
from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import tempfile
import time
from pathlib import Path

import orjson

from streamsql.engine import Engine
from streamsql.runtime.log.base import ProducerRecord
from streamsql.runtime.log.embedded import EmbeddedLog

QUERY = ("SELECT user_id, COUNT(*) AS n FROM pageviews "
         "WINDOW TUMBLING (SIZE 10 SECONDS, GRACE PERIOD 10 SECONDS) GROUP BY user_id EMIT CHANGES;")


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def windows_held(engine: Engine, query_id: str) -> int:
    transient = engine.transient_queries[query_id]
    stage = transient.runners[-1].stage
    return len(stage.inner.store._data)


async def run(records: int, keys: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        log = EmbeddedLog(Path(tmp))
        engine = Engine(log)
        await engine.start()
        await engine.execute("CREATE STREAM pageviews (user_id STRING KEY, page STRING) "
                             "WITH (kafka_topic='pageviews', value_format='JSON', partitions=1);")
        result = (await engine.execute(QUERY))[-1]
        query_id = result.query_id
        aggregate = engine.transient_queries[query_id].runners[-1]
        rows = 0

        async def client() -> None:
            nonlocal rows
            async for _ in result.stream:
                rows += 1
        reader = asyncio.create_task(client())
        print(f"{'records':>10} {'RSS MB':>8} {'windows held':>13} {'rows read':>10} {'rec/s':>8}")
        step = records // 10
        start = time.perf_counter()
        for i0 in range(0, records, 10_000):
            await log.produce("pageviews", [
                ProducerRecord(f"user-{(i * 7919) % keys}".encode(),
                               orjson.dumps({"PAGE": f"/page/{i % 97}"}), i)
                for i in range(i0, min(i0 + 10_000, records))])
            done = i0 + 10_000
            if done % step == 0 or done >= records:
                while aggregate.processed < min(done, records):
                    await asyncio.sleep(0.01)
                elapsed = time.perf_counter() - start
                print(f"{min(done, records):>10,} {rss_mb():>8.0f} {windows_held(engine, query_id):>13,} "
                      f"{rows:>10,} {min(done, records) / elapsed:>8,.0f}", flush=True)
        await result.stream.aclose()
        reader.cancel()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS {peak:.0f} MB; after close: {len(engine.transient_queries)} transient queries, "
              f"{len([t for t in await log.list_topics() if 'transient' in t])} transient topics")
        await engine.close()
        await log.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=10_000)
    args = parser.parse_args(argv)
    asyncio.run(run(args.records, args.keys))
    return 0


if __name__ == "__main__":
    sys.exit(main())

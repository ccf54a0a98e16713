"""Benchmark: pull-query key lookups on a materialized table (service mode, RocksDB).

Builds ``CREATE TABLE views AS SELECT user_id, COUNT(*) ... GROUP BY user_id`` over K keys (not
timed), then times random key lookups two ways:

* whole statements, ``engine.execute("SELECT * FROM views WHERE user_id = '...';")``: parse,
  analyze, generate the row pipeline, RocksDB read, decode and project (what a client gets);
* the table store alone (``TableStore.row``): the RocksDB read a lookup costs.

    python bench/bench_pull.py [--keys 100000] [--lookups 5000]

Prints lookups per second.
"""
from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

import orjson

from streamsql.engine import Engine
from streamsql.runtime.log.base import ProducerRecord
from streamsql.runtime.log.embedded import EmbeddedLog


async def run(keys: int, lookups: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        log = EmbeddedLog(Path(tmp))
        engine = Engine(log)
        await engine.start()
        await engine.execute(
            "CREATE STREAM pageviews (user_id STRING KEY, page STRING) "
            "WITH (kafka_topic='pageviews', value_format='JSON', partitions=2);"
            "CREATE TABLE views AS SELECT user_id, COUNT(*) AS n, LATEST_BY_OFFSET(page) AS page "
            "FROM pageviews GROUP BY user_id;")
        records = 2 * keys
        for start in range(0, records, 10000):
            await log.produce("pageviews", [
                ProducerRecord(f"user-{i % keys}".encode(), orjson.dumps({"PAGE": f"/p/{i}"}), i)
                for i in range(start, min(start + 10000, records))])
        runners = next(iter(engine.runners.values()))
        while runners[-1].processed < records:
            await asyncio.sleep(0.05)
        query = next(iter(engine.queries.values()))
        table = query.materialized
        rng = random.Random(7)
        wanted = [f"user-{rng.randrange(keys)}" for _ in range(lookups)]

        start = time.perf_counter()
        for user in wanted:
            [result] = await engine.execute(f"SELECT * FROM views WHERE user_id = '{user}';")
            assert len(result.rows) == 1 and result.rows[0][1] == 2, result.rows
        statements = lookups / (time.perf_counter() - start)

        key_bytes = [u.encode() for u in wanted] * 20
        start = time.perf_counter()
        for kb in key_bytes:
            assert table.row(kb) is not None
        raw = len(key_bytes) / (time.perf_counter() - start)
        await engine.close()
        await log.close()
    sys.stdout.write(
        f"pull queries on a RocksDB table of {keys:,} keys (2 partitions): "
        f"{statements:,.0f} key-lookup statements/s (parse to rows); "
        f"{raw:,.0f} store lookups/s\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--lookups", type=int, default=5_000)
    args = ap.parse_args()
    asyncio.run(run(args.keys, args.lookups))


if __name__ == "__main__":
    main()

"""Throughput of the embedded log: produce 1M small records in batches of 1000, read them
back with fetch, and print records/s for each (on disk and in memory).

Run: ``python bench/bench_log.py [--records N] [--batch N] [--fetch N] [--fsync]``.
Record construction happens before the clock starts; what is timed is ``produce`` and
``fetch`` (a consumer's hot path).
"""
from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from streamsql.runtime.log.base import ProducerRecord
from streamsql.runtime.log.embedded import EmbeddedLog


def make_batches(n: int, batch: int, keyed: bool) -> list[list[ProducerRecord]]:
    ts = 1_700_000_000_000
    records = [ProducerRecord(b"key-%d" % (i % 10_000) if keyed else None,
                              b'{"id":%d,"name":"n%d","amount":12.5}' % (i, i % 97), ts + i)
               for i in range(n)]
    return [records[i:i + batch] for i in range(0, n, batch)]


async def run(log: EmbeddedLog, label: str, batches: list[list[ProducerRecord]],
              partitions: int, fetch_size: int) -> None:
    n = sum(len(b) for b in batches)
    await log.create_topic("bench", partitions)
    t0 = time.perf_counter()
    for b in batches:
        await log.produce("bench", b)
    t_produce = time.perf_counter() - t0

    t0 = time.perf_counter()
    got = 0
    for p in range(partitions):
        offset = 0
        while True:
            rb = await log.fetch("bench", p, offset, fetch_size)
            if not rb.offsets:
                break
            got += len(rb.offsets)
            offset = rb.offsets[-1] + 1
    t_fetch = time.perf_counter() - t0
    assert got == n, (got, n)
    print(f"{label:<34} produce {n / t_produce:>10,.0f} rec/s   "
          f"fetch {n / t_fetch:>10,.0f} rec/s")
    await log.delete_topic("bench")


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--fetch", type=int, default=10_000, help="max_records per fetch")
    ap.add_argument("--fsync", action="store_true", help="fsync every produce call")
    args = ap.parse_args()
    unkeyed = make_batches(args.records, args.batch, keyed=False)
    keyed = make_batches(args.records, args.batch, keyed=True)
    with tempfile.TemporaryDirectory() as d:
        log = EmbeddedLog(Path(d), fsync=args.fsync)
        await run(log, "disk, 1 partition", unkeyed, 1, args.fetch)
        await run(log, "disk, 4 partitions, murmur2 keys", keyed, 4, args.fetch)
        await log.close()
    log = EmbeddedLog(None)
    await run(log, "memory, 1 partition", unkeyed, 1, args.fetch)
    await log.close()


if __name__ == "__main__":
    asyncio.run(main())

"""Throughput and memory of the RocksDB state stores.

Writes ``--keys`` distinct keys through a KeyValueStore (JSON accumulators, a commit every
``--batch`` puts, changelog on an on-disk embedded log), then reads them back, then restores
the store from its changelog into an empty directory. Prints puts/s, gets/s, updates/s
(read-modify-write per key, and batched as the aggregate stage does: ``get_many_raw``,
``put_many_raw``), range scan
rows/s, restore records/s, and the Python heap (allocated blocks) and RSS as the key count
grows: the heap must stay flat, RSS is bounded by RocksDB's memtables and block cache.

Run: ``python bench/bench_state.py [--keys N] [--batch N] [--no-changelog]``.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from streamsql.runtime.log.embedded import EmbeddedLog
from streamsql.state import KeyValueStoreSpec, TaskState, WindowStoreSpec


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def key(i: int) -> bytes:
    return b"user-%012d" % i


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=10_000, help="puts per commit")
    ap.add_argument("--gets", type=int, default=500_000)
    ap.add_argument("--no-changelog", action="store_true")
    ap.add_argument("--dir", default=None, help="work directory (default: a temp dir)")
    args = ap.parse_args()
    root = Path(args.dir or tempfile.mkdtemp(prefix="bench_state_"))
    n, batch = args.keys, args.batch
    changelog = None if args.no_changelog else "bench-kv-changelog"
    log = EmbeddedLog(root / "log")
    spec = KeyValueStoreSpec("kv", changelog=changelog)
    try:
        st = await TaskState.open(root / "state", [spec], log=log)
        kv = st.kv("kv")
        put = kv.put
        print(f"{n:,} distinct keys, commit every {batch:,}, changelog: {bool(changelog)}")
        marks = {n // 10, n // 2, n}
        t_put = 0.0
        t_commit = 0.0
        t0 = time.perf_counter()
        for lo in range(0, n, batch):
            t1 = time.perf_counter()
            for i in range(lo, min(lo + batch, n)):
                put(key(i), {"count": i, "sum": i * 0.5})
            t2 = time.perf_counter()
            await st.commit({("src", 0): i + 1})
            t3 = time.perf_counter()
            t_put += t2 - t1
            t_commit += t3 - t2
            if i + 1 in marks or (lo + batch >= n and n not in marks):
                print(f"  after {i + 1:>11,} keys: python heap {sys.getallocatedblocks():>9,} "
                      f"blocks, RSS {rss_mb():7.1f} MB")
        total = time.perf_counter() - t0
        print(f"put+commit   {n / total:>12,.0f} keys/s   (put {n / t_put:,.0f}/s in the batch, "
              f"commit incl. changelog flush {n / t_commit:,.0f}/s)")

        get = kv.get
        step = max(1, n // args.gets)
        probe = [key(i) for i in range(0, n, step)][:args.gets]
        t0 = time.perf_counter()
        for k in probe:
            get(k)
        dt = time.perf_counter() - t0
        print(f"get (hit)    {len(probe) / dt:>12,.0f} gets/s")
        miss = [b"nope-%012d" % i for i in range(len(probe))]
        t0 = time.perf_counter()
        for k in miss:
            get(k)
        dt = time.perf_counter() - t0
        print(f"get (miss)   {len(miss) / dt:>12,.0f} gets/s")
        del probe, miss
        # The aggregate pattern: read the accumulator, write it back, in one batch.
        m = min(n, 200_000)
        t0 = time.perf_counter()
        for i in range(m):
            k = key(i)
            acc = get(k)
            acc["count"] += 1
            put(k, acc)
        await st.commit({("src", 0): n + 1})
        dt = time.perf_counter() - t0
        print(f"get+put+commit {m / dt:>10,.0f} updates/s")
        # The same through the batch calls the aggregate stage uses (issue 16): one multi-get
        # per batch of keys, values decoded and encoded by the caller, one write per key.
        import orjson
        t0 = time.perf_counter()
        for lo in range(0, m, batch):
            keys = [key(i) for i in range(lo, min(lo + batch, m))]
            accs = [orjson.loads(v) for v in kv.get_many_raw(keys)]
            for acc in accs:
                acc["count"] += 1
            kv.put_many_raw(keys, [orjson.dumps(a) for a in accs])
            await st.commit({("src", 0): n + 2 + lo})
        dt = time.perf_counter() - t0
        print(f"batched get+put+commit {m / dt:>10,.0f} updates/s (multi-get, one write per key)")
        t0 = time.perf_counter()
        rows = sum(1 for _ in kv.range())
        dt = time.perf_counter() - t0
        print(f"range scan   {rows / dt:>12,.0f} rows/s")

        wst = await TaskState.open(root / "wstate", [WindowStoreSpec("w", 3_600_000)])
        w = wst.window("w")
        m = min(n, 200_000)
        t0 = time.perf_counter()
        for i in range(m):
            w.put(key(i % 1000), (i // 1000) * 1000, i)
        dt_put = time.perf_counter() - t0
        t0 = time.perf_counter()
        got = 0
        for i in range(0, 1000):
            for _ in w.fetch(key(i), 0, 10**9):
                got += 1
        dt_fetch = time.perf_counter() - t0
        print(f"window put   {m / dt_put:>12,.0f} puts/s   fetch (one key, all windows) "
              f"{got / dt_fetch:,.0f} rows/s")
        wst.close()

        if changelog:
            st.destroy()
            t0 = time.perf_counter()
            st = await TaskState.open(root / "state", [spec], log=log)
            dt = time.perf_counter() - t0
            stats = st.restore_stats["kv"]
            print(f"restore      {stats.replayed / dt:>12,.0f} records/s   "
                  f"({stats.replayed:,} changelog records into an empty dir in {dt:.1f} s)")
            assert st.kv("kv").get(key(n - 1)) == {"count": n - 1, "sum": (n - 1) * 0.5}
            print(f"  after restore: python heap {sys.getallocatedblocks():,} blocks, "
                  f"RSS {rss_mb():.1f} MB")
        st.close()
    finally:
        await log.close()
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())

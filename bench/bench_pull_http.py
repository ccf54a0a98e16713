"""Benchmark: pull-query key lookups over HTTP against one ``streamsql server`` node.

Starts a node (child process, embedded log on disk, RocksDB state), loads
``CREATE TABLE views AS SELECT user_id, COUNT(*) ... GROUP BY user_id`` over K keys through
``/inserts-stream`` (not timed), then runs C concurrent clients, each on its own keep-alive
HTTP/1.1 connection, sending ``POST /query-stream`` with
``SELECT * FROM views WHERE user_id = '<random key>';`` one after another for D seconds.
Every answer is checked (one row, the key's count). Prints lookups per second and the p50,
p90 and p99 latency of a request (send to last byte), next to the same clients' rate on the
node's most trivial endpoint (``GET /info``: the HTTP server's own cost per request, the
limit a lookup can reach), the server's CPU time per request of each (read from /proc: the
ratio that holds when other processes share the machine), and the rate of a pull table scan of every row
(``SELECT * FROM views;``, rows per second, checked complete).

The clients are a minimal asyncio HTTP/1.1 client in this process, so that the load
generator costs little next to the server; ``--pin`` puts the server on CPU 0 and the
clients on CPU 1.

    python bench/bench_pull_http.py [--keys 100000] [--clients 16] [--seconds 10] [--pin]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import orjson

from streamsql.server.testing import NodeProcess


class Connection:
    """One keep-alive HTTP/1.1 connection sending JSON POSTs with Content-Length answers."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader = reader
        self.writer = writer
        self.host = host.encode()

    @classmethod
    async def open(cls, url: str) -> "Connection":
        parts = urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        return cls(reader, writer, parts.netloc)

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        self.writer.write(b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (path.encode(), self.host, len(body), body))
        return await self._answer()

    async def get(self, path: str) -> tuple[int, bytes]:
        self.writer.write(b"GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (path.encode(), self.host))
        return await self._answer()

    async def _answer(self) -> tuple[int, bytes]:
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = None
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length is None:
            raise RuntimeError(f"expected a Content-Length answer, got {head!r}")
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def load(url: str, keys: int) -> None:
    conn = await Connection.open(url)
    try:
        status, body = await conn.post("/ksql", orjson.dumps({"ksql": (
            "CREATE STREAM pageviews (user_id STRING KEY, page STRING) "
            "WITH (kafka_topic='pageviews', value_format='JSON', partitions=1);"
            "CREATE TABLE views AS SELECT user_id, COUNT(*) AS n, LATEST_BY_OFFSET(page) AS page "
            "FROM pageviews GROUP BY user_id;")}))
        assert status == 200, body
    finally:
        conn.close()
    # Rows through /inserts-stream, 20k a request: each key twice.
    reader, writer = await asyncio.open_connection(urlsplit(url).hostname, urlsplit(url).port)
    try:
        total = 2 * keys
        for start in range(0, total, 20_000):
            lines = [b'{"target":"PAGEVIEWS"}']
            lines += [orjson.dumps({"USER_ID": f"user-{i % keys}", "PAGE": f"/p/{i}"})
                      for i in range(start, min(start + 20_000, total))]
            body = b"\n".join(lines) + b"\n"
            writer.write(b"POST /inserts-stream HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                         % (len(body), body))
            await reader.readuntil(b"\r\n\r\n")
            acks = 0
            while True:  # chunked acks up to the last chunk
                size = int(await reader.readline(), 16)
                chunk = await reader.readexactly(size + 2)
                acks += chunk.count(b'"ok"')
                if size == 0:
                    break
            assert acks == len(lines) - 1, acks
    finally:
        writer.close()
    # Wait until the table has every record: the last key's count reaches 2.
    conn = await Connection.open(url)
    try:
        last = f"user-{(2 * keys - 1) % keys}"
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            _, body = await conn.post("/query-stream", orjson.dumps(
                {"sql": f"SELECT n FROM views WHERE user_id = '{last}';"}))
            if body.splitlines()[1:] == [b"[2]"]:
                return
            await asyncio.sleep(0.2)
        raise RuntimeError("the table did not catch up")
    finally:
        conn.close()


async def client(url: str, keys: int, until: float, seed: int, latencies: list[float]) -> None:
    rng = random.Random(seed)
    conn = await Connection.open(url)
    try:
        while time.perf_counter() < until:
            user = f"user-{rng.randrange(keys)}"
            body = orjson.dumps({"sql": f"SELECT * FROM views WHERE user_id = '{user}';"})
            start = time.perf_counter()
            status, answer = await conn.post("/query-stream", body)
            latencies.append(time.perf_counter() - start)
            lines = answer.splitlines()
            if status != 200 or len(lines) != 2 or orjson.loads(lines[1])[:2] != [user, 2]:
                raise RuntimeError(f"bad answer for {user}: {status} {answer[:300]!r}")
    finally:
        conn.close()


async def trivial_client(url: str, until: float, latencies: list[float]) -> None:
    conn = await Connection.open(url)
    try:
        while time.perf_counter() < until:
            start = time.perf_counter()
            status, answer = await conn.get("/info")
            latencies.append(time.perf_counter() - start)
            if status != 200 or b"KsqlServerInfo" not in answer:
                raise RuntimeError(f"bad /info answer: {status} {answer[:300]!r}")
    finally:
        conn.close()


async def scan(url: str, keys: int) -> float:
    """Seconds for ``SELECT * FROM views;`` to answer every row (read to the last byte)."""
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=600) as http:
        start = time.perf_counter()
        answer = await http.post("/query-stream", json={"sql": "SELECT * FROM views;"})
        elapsed = time.perf_counter() - start
    rows = answer.content.splitlines()[1:]
    if answer.status_code != 200 or len(rows) != keys:
        raise RuntimeError(f"scan answered {answer.status_code}, {len(rows)} rows of {keys}")
    return elapsed


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process ``pid`` has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _figures(latencies: list[float], elapsed: float) -> tuple[float, list[float]]:
    latencies.sort()
    return len(latencies) / elapsed, statistics.quantiles(latencies, n=100)


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        node = NodeProcess(Path(tmp) / "data")
        if args.pin:
            node.args = ["taskset", "-c", "0", *node.args]
            os.sched_setaffinity(0, {1})
        with node:
            started = time.perf_counter()
            await load(node.url, args.keys)
            loaded = time.perf_counter() - started
            # Warm-up: connections, caches, generated pipeline.
            await asyncio.gather(*(client(node.url, args.keys, time.perf_counter() + 1, 1000 + i, [])
                                   for i in range(args.clients)))
            assert node.proc is not None
            pid = node.proc.pid
            latencies: list[float] = []
            cpu = cpu_seconds(pid)
            started = time.perf_counter()
            until = started + args.seconds
            await asyncio.gather(*(client(node.url, args.keys, until, i, latencies) for i in range(args.clients)))
            elapsed = time.perf_counter() - started
            lookup_cpu = (cpu_seconds(pid) - cpu) / len(latencies)
            trivial: list[float] = []
            cpu = cpu_seconds(pid)
            started = time.perf_counter()
            until = started + args.seconds
            await asyncio.gather(*(trivial_client(node.url, until, trivial) for _ in range(args.clients)))
            trivial_elapsed = time.perf_counter() - started
            trivial_cpu = (cpu_seconds(pid) - cpu) / len(trivial)
            scan_seconds = await scan(node.url, args.keys)
    rate, q = _figures(latencies, elapsed)
    trivial_rate, tq = _figures(trivial, trivial_elapsed)
    sys.stdout.write(
        f"pull queries over HTTP/1.1 (/query-stream), {args.clients} concurrent clients, one node, "
        f"table of {args.keys:,} keys (loaded in {loaded:.1f} s):\n"
        f"  {len(latencies):,} lookups in {elapsed:.1f} s = {rate:,.0f} lookups/s; "
        f"latency p50 {q[49] * 1000:.2f} ms, p90 {q[89] * 1000:.2f} ms, p99 {q[98] * 1000:.2f} ms, "
        f"max {latencies[-1] * 1000:.1f} ms\n"
        f"  the trivial request (GET /info), same clients: {trivial_rate:,.0f} requests/s; "
        f"p50 {tq[49] * 1000:.2f} ms, p99 {tq[98] * 1000:.2f} ms: a lookup costs "
        f"{trivial_rate / rate:.2f}x the trivial request\n"
        f"  the server's CPU per request: lookup {lookup_cpu * 1e6:.0f} us, trivial "
        f"{trivial_cpu * 1e6:.0f} us: {lookup_cpu / trivial_cpu:.2f}x (the same ratio, unaffected by "
        f"other load on the machine)\n"
        f"  table scan (SELECT * FROM views;): {args.keys:,} rows in {scan_seconds:.2f} s = "
        f"{args.keys / scan_seconds:,.0f} rows/s\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--pin", action="store_true", help="server on CPU 0, clients on CPU 1")
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()

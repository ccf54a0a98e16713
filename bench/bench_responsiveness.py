"""How responsive the HTTP server stays while queries run flat out.

A server (embedded log, a child process) with 8 persistent queries (projections, filters,
aggregations, a join) over a backlog large enough to keep them busy for the whole
measurement, plus a push query with a catastrophic regular expression
(``REGEXP_EXTRACT('(a+)+$', S)``) over values built to trigger it. Meanwhile a client asks
``GET /info`` every 20 ms and records each answer's latency.

    python bench/bench_responsiveness.py [--records 400000] [--seconds 20]

Prints p50 / p99 / max of /info and how many records the queries processed meanwhile.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from streamsql.server.testing import NodeProcess  # noqa: E402

QUERIES = [
    "CREATE STREAM P1 AS SELECT ID, UCASE(S) AS U, N * 2 AS N2 FROM SRC WHERE N % 3 <> 0;",
    "CREATE STREAM P2 AS SELECT ID, CONCAT(S, '-', CAST(N AS STRING)) AS C FROM SRC;",
    "CREATE STREAM P3 WITH (VALUE_FORMAT='AVRO') AS SELECT * FROM SRC;",
    "CREATE STREAM P4 AS SELECT ID, LEN(S) AS L FROM SRC WHERE N > 10;",
    "CREATE TABLE A1 AS SELECT G, COUNT(*) AS C, SUM(N) AS S FROM SRC GROUP BY G;",
    "CREATE TABLE A2 AS SELECT G, MAX(N) AS M FROM SRC WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY G;",
    "CREATE TABLE A3 AS SELECT ID, LATEST_BY_OFFSET(S) AS S FROM SRC GROUP BY ID;",
    "CREATE STREAM J1 AS SELECT SRC.G, SRC.N, DIM.NAME FROM SRC LEFT JOIN DIM ON SRC.G = DIM.G;",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=400_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--interval", type=float, default=0.02)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        node = NodeProcess(Path(d) / "data").start()
        try:
            return run(node.url, args)
        finally:
            node.stop()


def ksql(client: httpx.Client, url: str, sql: str) -> None:
    r = client.post(f"{url}/ksql", json={"ksql": sql,
                                          "streamsProperties": {"auto.offset.reset": "earliest"}})
    if r.status_code != 200:
        raise SystemExit(f"{sql}\n-> {r.status_code} {r.text}")


def run(url: str, args: argparse.Namespace) -> int:
    client = httpx.Client(timeout=60)
    ksql(client, url, "CREATE STREAM SRC (ID INT KEY, G INT, N BIGINT, S STRING) WITH "
                      "(KAFKA_TOPIC='src', PARTITIONS=4, VALUE_FORMAT='JSON');"
                      "CREATE TABLE DIM (G INT PRIMARY KEY, NAME STRING) WITH "
                      "(KAFKA_TOPIC='dim', PARTITIONS=4, VALUE_FORMAT='JSON');")
    rows = [orjson.dumps({"target": "DIM"})]
    rows += [orjson.dumps({"G": g, "NAME": f"g{g}"}) for g in range(100)]
    client.post(f"{url}/inserts-stream", content=b"\n".join(rows))
    # The backlog, loaded before the queries start so they all run flat out at once. Every
    # 50th value is the regex's worst case: 'a' * 26 + '!'.
    t0 = time.monotonic()
    step = 5000
    for first in range(0, args.records, step):
        rows = [orjson.dumps({"target": "SRC"})]
        rows += [orjson.dumps({"ID": i % 100_000, "G": i % 100, "N": i,
                               "S": "a" * 26 + "!" if i % 50 == 0 else f"s{i % 997}"})
                 for i in range(first, min(first + step, args.records))]
        r = client.post(f"{url}/inserts-stream", content=b"\n".join(rows))
        r.raise_for_status()
    print(f"loaded {args.records} records in {time.monotonic() - t0:.1f}s")
    for q in QUERIES:
        ksql(client, url, q)

    stop = threading.Event()

    def hostile() -> None:
        body = {"sql": "SELECT ID, REGEXP_EXTRACT('(a+)+$', S) AS X FROM SRC EMIT CHANGES;",
                "properties": {"auto.offset.reset": "earliest"}}
        with httpx.Client(timeout=None) as c:
            try:
                with c.stream("POST", f"{url}/query-stream", json=body) as resp:
                    for _ in resp.iter_raw():
                        if stop.is_set():
                            return
            except httpx.HTTPError:
                return
    threading.Thread(target=hostile, daemon=True).start()

    latencies: list[float] = []
    t_end = time.monotonic() + args.seconds
    with httpx.Client(timeout=60) as probe:
        while time.monotonic() < t_end:
            t = time.monotonic()
            probe.get(f"{url}/info").raise_for_status()
            latencies.append((time.monotonic() - t) * 1000)
            time.sleep(max(0.0, args.interval - (time.monotonic() - t)))
    stop.set()
    processed = processed_records(client, url)
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(f"/info over {args.seconds:.0f}s with 8 persistent queries and a hostile-regex push query:")
    print(f"  requests {len(latencies)}  p50 {statistics.median(latencies):.1f} ms  "
          f"p99 {p99:.1f} ms  max {latencies[-1]:.1f} ms")
    print(f"  records the persistent queries read meanwhile: {processed} "
          f"({processed / args.seconds:,.0f}/s)")
    return 0


def processed_records(client: httpx.Client, url: str) -> int:
    """Records the queries have read of SRC so far (DESCRIBE EXTENDED's counter)."""
    r = client.post(f"{url}/ksql", json={"ksql": "DESCRIBE SRC EXTENDED;"})
    stats = r.json()[0]["sourceDescription"].get("statistics", "")
    for part in stats.split():
        if part.isdigit():  # the number after "consumer-total-messages:"
            return int(part)
    return 0


if __name__ == "__main__":
    sys.exit(main())

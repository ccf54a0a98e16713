"""Benchmark: a stream-table join started over a backlog (issue 12's case): the table's
topic and the stream's topic are both full when the query starts, each stream record stamped
after its key's table row. Counts how many stream records were joined (all of them, when the
join reads its inputs in timestamp order) and how fast.

    python bench/bench_join_backlog.py [--records 1000000] [--partitions 4]
                                       [--backend embedded|kafka|both]
                                       [--guarantee at_least_once|exactly_once_v2]

On Kafka it starts a 1-broker KRaft cluster of its own (``streamsql.testing.kafka``); without
java and the broker jars that part says so and is skipped. Prints joined/records, seconds
and records per second per backend.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson

from streamsql.engine import Engine
from streamsql.runtime.log.base import Log, ProducerRecord

SETUP = ("CREATE TABLE users (id STRING PRIMARY KEY, name STRING) "
         "WITH (kafka_topic='{ns}users', value_format='JSON', partitions={p});"
         "CREATE STREAM clicks (id STRING KEY, n BIGINT) "
         "WITH (kafka_topic='{ns}clicks', value_format='JSON', partitions={p});")
QUERY = ("CREATE STREAM enriched AS SELECT c.id AS id, c.n AS n, u.name AS name "
         "FROM clicks c JOIN users u ON c.id = u.id EMIT CHANGES;")


async def _fill(log: Log, ns: str, records: int) -> None:
    # Event times end about now: a broker deletes records older than its retention (7 days
    # by default) from the topics while the query reads them.
    base = int(time.time() * 1000) - 2 * records - 60_000
    for start in range(0, records, 10_000):
        end = min(records, start + 10_000)
        await log.produce(f"{ns}users", [ProducerRecord(f"u{i}".encode(), orjson.dumps({"NAME": f"n{i}"}),
                                                        base + 2 * i) for i in range(start, end)])
        await log.produce(f"{ns}clicks", [ProducerRecord(f"u{i}".encode(), orjson.dumps({"N": i}),
                                                         base + 1 + 2 * i) for i in range(start, end)])


async def _sink_count(log: Log, topic: str) -> int:
    return sum(await log.end_offsets(topic))


async def run(log: Log, config: dict, state: Path, records: int, partitions: int, ns: str) -> tuple[int, float]:
    engine = Engine(log, config, state_dir=state)
    await engine.start()
    try:
        await engine.execute(SETUP.format(ns=ns, p=partitions))
        await _fill(log, ns, records)
        t0 = time.perf_counter()
        await engine.execute(QUERY)
        sink = engine.catalog.source("ENRICHED").topic
        last, still = -1, 0.0
        while True:
            await asyncio.sleep(0.5)
            n = await _sink_count(log, sink)
            if n != last:
                last, still = n, time.perf_counter()
            elif n and time.perf_counter() - still > 30:  # nothing new for 30 s: done
                break
            elif time.perf_counter() - t0 > 300:
                break  # nothing at all
        # Under exactly_once_v2 each transaction leaves a marker in the sink's offsets.
        joined = last
        if log.distributed:
            joined = await _committed_records(log, sink)
        return joined, still - t0
    finally:
        await engine.close()
        await log.close()


async def _committed_records(log: Log, topic: str) -> int:
    n = 0
    for p, end in enumerate(await log.end_offsets(topic)):
        off = 0
        while off < end:
            b = await log.fetch(topic, p, off, 50_000)
            if not b.offsets:
                break
            n += len(b.offsets)
            off = b.offsets[-1] + 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--backend", choices=("embedded", "kafka", "both"), default="both")
    ap.add_argument("--guarantee", default="at_least_once")
    args = ap.parse_args()
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-backlog-") as tmp:
        if args.backend in ("embedded", "both"):
            from streamsql.runtime.log.embedded import EmbeddedLog
            joined, secs = asyncio.run(run(EmbeddedLog(Path(tmp) / "data"), {}, Path(tmp) / "state-e",
                                           args.records, args.partitions, ""))
            results.append(("embedded log", joined, secs))
        if args.backend in ("kafka", "both"):
            from streamsql.testing.kafka import KafkaCluster, kafka_unavailable_reason
            reason = kafka_unavailable_reason()
            if reason:
                sys.stdout.write(f"kafka: skipped: {reason}\n")
            else:
                from streamsql.runtime.log.kafka import KafkaLog
                cluster = KafkaCluster(Path(tmp) / "kafka", brokers=1, die_with_parent=True)
                cluster.start()
                try:
                    config = {"processing.guarantee": args.guarantee,
                              "ksql.service.id": "bench_" + uuid.uuid4().hex[:6]}
                    joined, secs = asyncio.run(run(KafkaLog(cluster.bootstrap_servers, config), config,
                                                   Path(tmp) / "state-k", args.records, args.partitions,
                                                   "b" + uuid.uuid4().hex[:6] + "_"))
                    results.append((f"kafka, {args.guarantee}", joined, secs))
                finally:
                    cluster.stop()
    sys.stdout.write(f"stream-table JOIN over a backlog: {args.records:,} table rows and "
                     f"{args.records:,} stream records already on {args.partitions} partitions\n")
    for name, joined, secs in results:
        sys.stdout.write(f"  {name:28s} joined {joined:,} of {args.records:,} in {secs:.1f}s "
                         f"= {args.records / secs:,.0f} records/s\n")


if __name__ == "__main__":
    main()

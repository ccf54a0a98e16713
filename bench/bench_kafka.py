"""Benchmark: streamsql on a real Apache Kafka broker, next to the client's own limit.

Starts a 1-broker KRaft cluster in a temp dir (``streamsql.testing.kafka.KafkaCluster``,
stopped at the end), pre-loads one input topic with N JSON records over P partitions (through
``KafkaLog.produce``, timed and shown), then measures on that broker and those records:

* raw aiokafka, no SQL and no decoding: consume only; a pipelined consume-and-produce loop
  (``getmany`` -> ``send_batch``, acks awaited only at the end: the client's limit); and the
  same loop in the shape of an at-least-once processor (per poll: produce, await the acks,
  commit the group's offsets), which is what the SQL node does around its work;
* the stateless CSAS of bench_stateless.py (JSON filter + project) on one node, with
  ``processing.guarantee`` at_least_once and exactly_once_v2;
* the GROUP BY COUNT of bench_aggregate.py (windowed, TUMBLING 1 MINUTE) on one node, with
  ``processing.guarantee`` at_least_once and exactly_once_v2;
* the stateless CSAS on two nodes (two processes in one consumer group), total and per node.
  Its input (the same records, in a topic of their own) is written in a transaction left
  open until both nodes have their partitions, then committed: both start at once, instead
  of the first working alone until the second joins.

A node is an ``Engine(KafkaLog(...))`` in a worker process of its own (this script run with
``worker``): what ``streamsql server`` runs, without its REST API. Records per second are
counted from the moment the query's first stage is assigned its partitions (the group join,
topic creation etc. before it are shown as "start") to the moment the last output record is
acknowledged (the last stage's count of input records processed reaches N; its output is
then checked); on two nodes, from the commit that releases the input. CPU seconds of the node process(es) and of the broker over each run are shown
too: on a shared machine they say more than wall time does.

Records: key ``user-{(i * 7919) % keys}``, value ``{"PAGE": "/page/{i % 97}", "MS": i % 200}``,
timestamp base + i ms (1000 records per second of event time, ``base`` a recent minute):
bench_aggregate.py's keys and windows, bench_stateless.py's value (49.5% pass ``ms > 100``).

    python bench/bench_kafka.py [--records 200000] [--partitions 4] [--keys 20000]
                                [--skip-two-nodes] [--jvm-opts "-XX:TieredStopAtLevel=4 -Xmx1g"]
                                [--only raw,stateless,aggregate,two-nodes] [--profile DIR]

``--profile DIR`` runs each node under ``py-spy record -f raw`` (files in DIR; the node CPU
figures are then py-spy's, not the node's).

Needs java and the broker jars (``make kafka-jars``); without them it says so and exits 0.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

SOURCE = "pageviews"
STATELESS = ("CREATE STREAM {sink} AS SELECT user_id, UCASE(page) AS page, ms "
             "FROM pageviews WHERE ms > 100;")
AGGREGATE = ("CREATE TABLE {sink} AS SELECT user_id, COUNT(*) AS n FROM pageviews "
             "WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY user_id EMIT CHANGES;")
DECLARE = "CREATE STREAM pageviews (user_id STRING KEY, page STRING, ms BIGINT) " \
          "WITH (kafka_topic='{topic}', value_format='JSON');"
GATED = "pageviews_gated"
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process so far (0 when it is gone)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def loadavg() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


@dataclass(frozen=True)
class Row:
    """One line of the table."""

    what: str
    records: int
    seconds: float
    start: float | None = None
    node_cpu: float | None = None
    broker_cpu: float | None = None
    note: str = ""
    load: float = field(default_factory=lambda: os.getloadavg()[0])

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class Bench:
    """The cluster, the data, and the rows measured so far."""

    bootstrap: str
    broker_pid: int | None
    base: Path
    records: int
    partitions: int
    keys: int
    rows: list[Row] = field(default_factory=list)
    # Where py-spy profiles of the nodes go (``--profile``); None: not profiled.
    profile: Path | None = None

    def add(self, row: Row) -> None:
        self.rows.append(row)
        sys.stderr.write(f"  {row.what}: {row.records:,} in {row.seconds:.2f}s = "
                         f"{row.rate:,.0f}/s {row.note} (load {loadavg()})\n")


# -- data -------------------------------------------------------------------------------------

def time_base(records: int) -> int:
    """The first record's timestamp: on a minute boundary (so windows fall as in
    bench_aggregate.py, whose timestamps start at 0) and recent. Not 0: the broker deletes
    segments whose records are older than retention.ms (7 days) within seconds of rolling them,
    and rolls them at once when their first record is that old; internal repartition topics
    too. All records are in the past."""
    minute = 60_000
    return (int(time.time() * 1000) // minute - records // minute - 1) * minute


def record(i: int, keys: int, base: int) -> tuple[bytes, bytes, int]:
    return (f"user-{(i * 7919) % keys}".encode(),
            orjson.dumps({"PAGE": f"/page/{i % 97}", "MS": i % 200}), base + i)


async def preload(b: Bench) -> None:
    from streamsql.runtime.log.base import ProducerRecord
    from streamsql.runtime.log.kafka import KafkaLog

    log = KafkaLog(b.bootstrap, {"ksql.service.id": "bench-loader"})
    await log.create_topic(SOURCE, b.partitions)
    for name in ("raw_pipelined", "raw_acked"):
        await log.create_topic(name, b.partitions)
    base = time_base(b.records)
    recs = [ProducerRecord(*record(i, b.keys, base)) for i in range(b.records)]
    cpu0 = time.process_time()
    broker0 = cpu_seconds(b.broker_pid)
    start = time.perf_counter()
    # Several produce calls in flight: each awaits its acks, the producer batches them together.
    step = 10_000
    await asyncio.gather(*(log.produce(SOURCE, recs[i:i + step])
                           for i in range(0, len(recs), step)))
    elapsed = time.perf_counter() - start
    assert sum(await log.end_offsets(SOURCE)) == b.records
    b.add(Row("pre-load: KafkaLog.produce (10k-record calls, concurrent)", b.records, elapsed, None,
              time.process_time() - cpu0, cpu_seconds(b.broker_pid) - broker0))
    await log.close()


# -- raw aiokafka -----------------------------------------------------------------------------

def _consumer(bootstrap: str, group: str | None = None) -> Any:
    from aiokafka import AIOKafkaConsumer

    # As KafkaLog's consumers are configured.
    return AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                            auto_offset_reset="earliest", isolation_level="read_committed",
                            max_partition_fetch_bytes=4 * 1024 * 1024, fetch_max_wait_ms=100)


def raw_runs(b: Bench, mode: str, runs: int = 3) -> None:
    """``runs`` runs of a raw loop (they are short: one alone is at the mercy of the other
    processes on the machine); adds the median run."""
    rows = sorted((asyncio.run(raw(b, mode, i)) for i in range(runs)), key=lambda r: r.rate)
    mid = rows[len(rows) // 2]
    b.add(Row(mid.what, mid.records, mid.seconds, None, mid.node_cpu, mid.broker_cpu,
              f"median of {runs}: " + ", ".join(f"{r.rate / 1000:,.0f}k" for r in rows)))


async def raw(b: Bench, mode: str, run: int) -> Row:
    """``consume``: getmany only; ``pipelined``: getmany -> send_batch, acks awaited at the
    end; ``acked``: per poll send_batch, await the acks, commit the group's offsets."""
    from aiokafka import TopicPartition

    from streamsql.runtime.log.kafka import KafkaLog

    log = KafkaLog(b.bootstrap, {"ksql.service.id": f"bench-raw-{mode}"})
    producer = log.new_producer()  # KafkaLog's producer settings: idempotent, acks=all, lz4
    await producer.start()
    group = f"bench-raw-{mode}-{run}" if mode == "acked" else None
    consumer = _consumer(b.bootstrap, group)
    await consumer.start()
    tps = [TopicPartition(SOURCE, p) for p in range(b.partitions)]
    if group is None:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
    else:
        consumer.subscribe([SOURCE])
    out = f"raw_{mode}"
    written = sum(await log.end_offsets(out)) if mode != "consume" else 0
    pending: list[Any] = []
    n = 0
    cpu0 = time.process_time()
    broker0 = cpu_seconds(b.broker_pid)
    start = first = time.perf_counter()
    started = False
    while n < b.records:
        got = await consumer.getmany(timeout_ms=500, max_records=5000)
        if got and not started:
            started = True
            if group is not None:  # time from the assignment on, as for the SQL nodes
                first = time.perf_counter()
        sent = []
        for tp, recs in got.items():
            n += len(recs)
            if mode == "consume":
                continue
            batch = producer.create_batch()
            for r in recs:
                if batch.append(timestamp=r.timestamp, key=r.key, value=r.value, headers=[]) is None:
                    sent.append(await producer.send_batch(batch, out, partition=tp.partition))
                    batch = producer.create_batch()
                    batch.append(timestamp=r.timestamp, key=r.key, value=r.value, headers=[])
            sent.append(await producer.send_batch(batch, out, partition=tp.partition))
        if mode == "acked":
            await asyncio.gather(*sent)
            await consumer.commit({tp: recs[-1].offset + 1 for tp, recs in got.items() if recs})
        else:
            pending.extend(sent)
    await asyncio.gather(*pending)
    elapsed = time.perf_counter() - (first if group is not None else start)
    node_cpu = time.process_time() - cpu0
    broker_cpu = cpu_seconds(b.broker_pid) - broker0
    await consumer.stop()
    await producer.stop()
    if mode != "consume":
        assert sum(await log.end_offsets(out)) == written + b.records
    await log.close()
    what = {"consume": "raw aiokafka: consume only (getmany, assigned)",
            "pipelined": "raw aiokafka: consume -> send_batch, pipelined",
            "acked": "raw aiokafka: consume -> send_batch, await acks + commit per poll"}[mode]
    return Row(what, b.records, elapsed, None, node_cpu, broker_cpu)


# -- SQL nodes (worker processes) -------------------------------------------------------------

class Worker:
    """A node: this script run as ``worker`` in a process of its own, driven over its stdin
    (one command per line) and reporting on its stdout (one JSON object per line)."""

    def __init__(self, b: Bench, name: str, service: str, guarantee: str) -> None:
        self.name = name
        self.dir = b.base / service / name
        self.dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, __file__, "worker", "--bootstrap", b.bootstrap,
               "--service-id", service, "--name", name, "--state-dir", str(self.dir / "state"),
               "--guarantee", guarantee]
        if b.profile is not None:  # (its CPU figures are then py-spy's own)
            b.profile.mkdir(parents=True, exist_ok=True)
            out = b.profile / f"{service}-{name}-{guarantee}.txt"
            cmd = ["py-spy", "record", "-f", "raw", "-r", "200", "-o", str(out), "--", *cmd]
        self.log_path = self.dir / "node.log"
        with open(self.log_path, "ab") as err:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=err)

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        while line and not line.startswith(b"{"):  # (py-spy's own lines, under --profile)
            line = self.proc.stdout.readline()
        if not line:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"node {self.name} exited:\n{tail}")
        return json.loads(line)

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def finish(self) -> dict[str, Any]:
        self.send("stop")
        stats = self.read()
        self.proc.wait(60)
        return stats


class Gate:
    """The input of a multi-node run, written in a transaction left open until every node has
    its partitions: read_committed consumers see none of it, then all of it at once. (Started
    on readable records, the first node would work alone until the others joined.)"""

    def __init__(self, b: Bench) -> None:
        self.b = b
        self.loop = asyncio.new_event_loop()
        self.producer: Any = None

    def load(self) -> None:
        self.loop.run_until_complete(self._load())

    async def _load(self) -> None:
        from aiokafka import AIOKafkaProducer

        from streamsql.runtime.log.base import ProducerRecord
        from streamsql.runtime.log.kafka import KafkaLog, produce_records

        b = self.b
        log = KafkaLog(b.bootstrap, {"ksql.service.id": "bench-gate"})
        await log.create_topic(GATED, b.partitions)
        await log.close()
        self.producer = AIOKafkaProducer(
            bootstrap_servers=b.bootstrap, acks="all", enable_idempotence=True,
            transactional_id=f"bench-gate-{uuid.uuid4().hex[:6]}", compression_type="lz4",
            linger_ms=5, max_batch_size=1024 * 1024, max_request_size=4 * 1024 * 1024,
            transaction_timeout_ms=600_000)
        await self.producer.start()
        await self.producer.begin_transaction()
        base = time_base(b.records)
        recs = [ProducerRecord(*record(i, b.keys, base)) for i in range(b.records)]
        await produce_records(self.producer, GATED, recs, [i % b.partitions for i in range(len(recs))])

    def open(self) -> float:
        """Commits the transaction; returns the time it was asked to."""
        now = time.monotonic()
        self.loop.run_until_complete(self.producer.commit_transaction())
        return now

    def close(self) -> None:
        if self.producer is not None:
            self.loop.run_until_complete(self.producer.stop())
        self.loop.close()


def run_nodes(b: Bench, what: str, sql: str, nodes: int, guarantee: str, done: Any,
              gate: Gate | None = None) -> None:
    """Start ``nodes`` workers of one service, run ``sql`` on the first, wait until
    ``done(progress)`` (progress: the nodes' count of input records through the query's
    last stage), and add a row (and one per node when there are several). With a ``gate``
    (the input held back in a transaction), the gate is opened once every node has
    partitions, and the time counts from then."""
    service = f"bench_{uuid.uuid4().hex[:6]}"
    workers = [Worker(b, f"node-{i + 1}", service, guarantee) for i in range(nodes)]
    try:
        for w in workers:
            assert w.read()["started"]
        cpu0 = sum(w.cpu() for w in workers)
        broker0 = cpu_seconds(b.broker_pid)
        go = time.monotonic()
        topic = GATED if gate is not None else SOURCE
        workers[0].send("sql " + DECLARE.format(topic=topic) + " " + sql)
        assert workers[0].read()["executed"]
        for w in workers:
            w.send("watch")
        opened = None
        while True:
            progress = []
            for w in workers:
                w.send("progress")
                progress.append(w.read())
            if gate is not None and opened is None:
                owned = [p["partitions"] for p in progress]
                if all(owned) and sum(owned) == b.partitions:
                    opened = gate.open()
                    assigned = time.monotonic() - go
            elif done(sum(p["processed"] for p in progress)):
                break
            time.sleep(0.2 if opened is not None or gate is None else 0.05)
        node_cpu = sum(w.cpu() for w in workers) - cpu0
        broker_cpu = cpu_seconds(b.broker_pid) - broker0
        stats = [w.finish() for w in workers]
    finally:
        for w in workers:
            if w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait()
    last = max(s["last"] for s in stats if s["last"] is not None)
    processed = sum(s["processed"] for s in stats)
    note = f"{guarantee}, {nodes} node{'s' if nodes > 1 else ''}"
    if processed != b.records:
        note += f", {processed - b.records:+,} records processed twice"
    if opened is None:
        ready = min(s["ready"] for s in stats if s["ready"] is not None)
        b.add(Row(what, b.records, last - ready, ready - go, node_cpu, broker_cpu, note))
        return
    b.add(Row(what, b.records, last - opened, assigned, node_cpu, broker_cpu,
              note + "; input released once all had partitions"))
    for w, s in zip(workers, stats):
        b.add(Row(f"  {w.name} (partitions {','.join(map(str, s['partitions']))})", s["processed"],
                  (s["last"] or opened) - opened, None, None, None, "its share"))


async def output_count(b: Bench, topic: str, expected: int) -> int:
    """Records in ``topic`` read with read_committed (transaction markers take offsets, so
    end offsets do not count them): reads until ``expected`` are read or none come for 10 s.
    (A transaction's markers are written after its commit returns: the last ones may take a
    moment to become readable.)"""
    from aiokafka import TopicPartition

    consumer = _consumer(b.bootstrap)
    await consumer.start()
    tps = [TopicPartition(topic, p) for p in range(b.partitions)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    n = 0
    deadline = time.monotonic() + 10
    while n < expected and time.monotonic() < deadline:
        got = await consumer.getmany(timeout_ms=500, max_records=50_000)
        if got:
            n += sum(len(r) for r in got.values())
            deadline = time.monotonic() + 10
    await consumer.stop()
    return n


async def end_total(b: Bench, topic: str) -> int:
    from streamsql.runtime.log.kafka import KafkaLog

    log = KafkaLog(b.bootstrap, {"ksql.service.id": "bench-check"})
    try:
        return sum(await log.end_offsets(topic))
    except Exception:  # not created yet
        return 0
    finally:
        await log.close()


def sql_benchmarks(b: Bench, two_nodes: bool, only: set[str]) -> None:
    selected = sum(1 for i in range(b.records) if i % 200 > 100)

    def stateless(sink: str, nodes: int, gate: Gate | None = None) -> None:
        # At-least-once with no failure: the sink's end offset is exactly the records written.
        run_nodes(b, f"stateless CSAS (filter+project, JSON), {nodes} node{'s' if nodes > 1 else ''}",
                  STATELESS.format(sink=sink), nodes, "at_least_once",
                  lambda n: n >= b.records and asyncio.run(end_total(b, sink.upper())) >= selected,
                  gate)
        written = asyncio.run(end_total(b, sink.upper()))
        assert written == selected, (written, selected)

    if "stateless" in only:
        stateless("slow_1", 1)
        # Exactly once: counted as its transactions commit.
        run_nodes(b, "stateless CSAS (filter+project, JSON), 1 node", STATELESS.format(sink="slow_eos"),
                  1, "exactly_once_v2", lambda n: n >= b.records)
        written = asyncio.run(output_count(b, "SLOW_EOS", selected))
        assert written == selected, ("exactly_once_v2", written, selected)
    for guarantee in ("at_least_once", "exactly_once_v2") if "aggregate" in only else ():
        sink = f"counts_{guarantee[:3]}"
        run_nodes(b, "windowed GROUP BY COUNT (by the key: 1 stage, RocksDB), 1 node",
                  AGGREGATE.format(sink=sink), 1, guarantee, lambda n: n >= b.records)
        written = asyncio.run(output_count(b, sink.upper(), b.records))
        assert written == b.records, (guarantee, written, b.records)
    if two_nodes and "two-nodes" in only:
        gate = Gate(b)
        try:
            gate.load()
            stateless("slow_2", 2, gate)
        finally:
            gate.close()


async def worker(args: argparse.Namespace) -> None:
    """One node: an Engine on KafkaLog; commands on stdin, answers on stdout."""
    from streamsql.engine import Engine
    from streamsql.runtime.log.kafka import KafkaLog

    logging.basicConfig(level=os.environ.get("BENCH_KAFKA_LOG", "WARNING"), stream=sys.stderr)
    # The input is written before the query starts: read it from the start (default: latest).
    config = {"ksql.service.id": args.service_id, "streamsql.node.name": args.name,
              "processing.guarantee": args.guarantee, "auto.offset.reset": "earliest"}
    log = KafkaLog(args.bootstrap, config)
    engine = Engine(log, config, state_dir=args.state_dir)
    await engine.start()

    def say(**kw: Any) -> None:
        sys.stdout.write(json.dumps(kw) + "\n")
        sys.stdout.flush()

    say(started=True)
    stats: dict[str, Any] = {"ready": None, "first": None, "last": None, "processed": 0}
    watcher: asyncio.Task[None] | None = None

    async def watch() -> None:
        # The query's runners appear once the statement is applied here (on a second node
        # through the command topic).
        while not engine.runners:
            await asyncio.sleep(0.005)
        runners = next(iter(engine.runners.values()))
        await runners[0].ready.wait()
        stats["ready"] = time.monotonic()
        last = runners[-1]
        seen = 0
        while True:
            if last.processed != seen:
                seen = stats["processed"] = last.processed
                stats["last"] = time.monotonic()
                if stats["first"] is None:
                    stats["first"] = stats["last"]
            await asyncio.sleep(0.005)

    while True:
        line = (await asyncio.to_thread(sys.stdin.readline)).strip()
        if line.startswith("sql "):
            await engine.execute(line[4:])
            say(executed=True)
        elif line == "watch":
            watcher = asyncio.create_task(watch())
        elif line == "progress":
            runners = next(iter(engine.runners.values()), [])
            say(processed=stats["processed"],
                partitions=len(runners[0].assignment()) if runners else 0)
        else:  # "stop", or the parent is gone
            if watcher is not None:
                watcher.cancel()
            runners = next(iter(engine.runners.values()), [])
            stats["partitions"] = sorted(p for _, p in runners[0].assignment()) if runners else []
            say(**stats)
            await engine.close()
            await log.close()
            return


# -- main -------------------------------------------------------------------------------------

def table(b: Bench, started: str, jvm: str) -> str:
    out = [f"streamsql on Apache Kafka: {b.records:,} records, {b.partitions} partitions, "
           f"{b.keys:,} keys, 1 broker (KRaft, 127.0.0.1; JVM {jvm})",
           f"machine: {os.cpu_count()} cores, {platform.python_implementation()} "
           f"{platform.python_version()}, load average (1/5/15 min) at start {started}, "
           f"at end {loadavg()}; nothing pinned",
           "",
           f"{'what':<66} {'records/s':>10} {'secs':>7} {'start s':>7} {'node cpu':>8} "
           f"{'cpu s/M':>7} {'broker cpu':>10} {'load':>5}  notes"]
    for r in b.rows:
        start = f"{r.start:.2f}" if r.start is not None else ""
        node = f"{r.node_cpu:.2f}" if r.node_cpu is not None else ""
        per_m = f"{r.node_cpu / r.records * 1e6:.2f}" if r.node_cpu is not None and r.records else ""
        broker = f"{r.broker_cpu:.1f}" if r.broker_cpu is not None else ""
        out.append(f"{r.what:<66} {r.rate:>10,.0f} {r.seconds:>7.2f} {start:>7} {node:>8} "
                   f"{per_m:>7} {broker:>10} {r.load:>5.2f}  {r.note}")
    out += ["",
            "records/s: input records over the time from the first stage's assignment (2 nodes: from",
            "the input's release) to the last output acknowledged (raw loops: from the first",
            "getmany); 'start s': statement to assignment; cpu: CPU seconds of the node process(es)",
            "(also per million input records) and of the broker over the run; load: 1-minute load average at the end of the run.",
            "Nodes: an Engine on KafkaLog in a process of its own each (streamsql server without",
            "its REST API), one run each; raw loops: aiokafka in the benchmark's process, the",
            "median of 3 runs."]
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command")
    w = sub.add_parser("worker", help="(internal) one node, driven by the benchmark")
    w.add_argument("--bootstrap", required=True)
    w.add_argument("--service-id", required=True)
    w.add_argument("--name", required=True)
    w.add_argument("--state-dir", required=True)
    w.add_argument("--guarantee", default="at_least_once")
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--keys", type=int, default=20_000)
    ap.add_argument("--skip-two-nodes", action="store_true")
    ap.add_argument("--only", default="raw,stateless,aggregate,two-nodes",
                    help="which runs, comma-separated (default: all)")
    ap.add_argument("--profile", type=Path, default=None,
                    help="run the nodes under py-spy, raw profiles into this folder")
    ap.add_argument("--jvm-opts", default="-XX:TieredStopAtLevel=4 -Xmx1g",
                    help="broker JVM options after the defaults (full JIT, more heap)")
    args = ap.parse_args()
    if args.command == "worker":
        asyncio.run(worker(args))
        return

    from streamsql.testing.kafka import DEFAULT_JVM_OPTIONS, KafkaCluster, kafka_unavailable_reason

    reason = kafka_unavailable_reason()
    if reason:
        sys.stdout.write(f"bench_kafka: skipped: {reason}\n")
        return
    started = loadavg()
    # aiokafka logs a group's first coordinator lookup as an error; the checks below would
    # catch a real failure.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory(prefix="bench-kafka-") as tmp:
        jvm = (*DEFAULT_JVM_OPTIONS, *args.jvm_opts.split())
        cluster = KafkaCluster(Path(tmp) / "kafka", brokers=1, jvm_options=jvm,
                               die_with_parent=True)
        t = time.perf_counter()
        cluster.start()
        sys.stderr.write(f"broker up in {time.perf_counter() - t:.1f}s at {cluster.bootstrap_servers}\n")
        try:
            b = Bench(cluster.bootstrap_servers, cluster.pids()[0], Path(tmp), args.records,
                      args.partitions, args.keys, profile=args.profile)
            only = set(args.only.split(","))
            asyncio.run(preload(b))
            for mode in ("consume", "pipelined", "acked") if "raw" in only else ():
                raw_runs(b, mode)
            sql_benchmarks(b, not args.skip_two_nodes, only)
        finally:
            cluster.stop()
    sys.stdout.write(table(b, started, f"{' '.join(DEFAULT_JVM_OPTIONS[:4])} then {args.jvm_opts}"))


if __name__ == "__main__":
    main()

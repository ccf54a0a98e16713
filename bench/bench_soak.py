"""Soak: does the disk a node uses level off, and does a restore cost keys or updates?

One Engine in service mode (what ``streamsql server`` runs, without its REST API), on the
embedded log in a data directory (``DATA/topics``: the log; ``DATA/state``: RocksDB), or with
``--kafka`` on a 1-broker Kafka cluster the script starts (``streamsql.testing.kafka``). One
source stream ``S`` (key ``SRC``, 997 values; value ``K``, ``V``, ``G``) and three queries
run together:

    CREATE TABLE T AS SELECT k, COUNT(*) AS n, SUM(v) AS total FROM S GROUP BY k;
    CREATE TABLE W AS SELECT k, COUNT(*) AS n FROM S
      WINDOW TUMBLING (SIZE 1 MINUTE, GRACE PERIOD 1 MINUTE) GROUP BY k;
    CREATE STREAM R AS SELECT * FROM S PARTITION BY g;

``K`` runs over ``--keys`` keys (every key once per ``--keys`` updates), ``G`` over 1000
values. ``S`` is not keyed by ``K``, so both GROUP BYs re-key through a repartition topic of
their own (purged behind the aggregation's commits); R's PARTITION BY writes its re-keyed rows
straight to ``R`` (as in ksqlDB: a stateless CSAS has no internal topic). ``--updates``
records are produced to ``S`` in batches (``Log.produce``), their timestamps spread evenly
over ``--event-minutes`` of event time (an hour: 60 windows of W come and go), ending about
now. The feeder waits whenever a stage is more than ``--max-lag`` records behind, so the
queries keep up and the figures are those of a node in a steady state.

Printed every ``--report-every`` updates (so that "levels off" can be seen):

* ``secs``, ``updates`` (produced), ``upd/s`` (records through the slowest stage per second
  since the last line), ``event`` (minutes of event time fed);
* ``total MB``: the data directory's size on disk (allocated blocks, as ``du``), split into
  ``log MB`` (embedded: ``DATA/topics`` and the group offsets; Kafka: the broker's log dir)
  by kind of topic: ``src`` (S), ``sinks`` (T, W, R), ``repart`` (the two repartition topics),
  ``chlog`` (the four changelogs: T's and W's aggregate and materialized stores), ``other``
  (command topic, processing log, schemas; Kafka's own internal topics); and ``state MB``
  (RocksDB, by query; ``WAL``: of it, RocksDB's write-ahead logs, ``*.log``);
* ``files``: files in the data directory; ``fds``: file descriptors the bench's process has
  open, ``(log)`` those on the embedded log's segment files;
* ``repart start``: the repartition topics' log start offsets (summed over partitions): they
  advance when the topics are purged.

What bounds each part: ``src`` and ``sinks`` by retention (the bench sets
``log.retention.bytes``: the embedded log keeps records forever by default); ``repart`` by
the purge; ``chlog`` by compaction (a key's older records go; the expired windows'
tombstones after ``log.cleaner.delete.retention.ms``, which the bench lowers from Kafka's
day); ``state`` by RocksDB (T: one row per key; W: the windows within retention, size +
grace), its WAL files by ``max_total_wal_size`` (64 MB per task; RocksDB's default, 4 times
the memtables of all column families, let them grow to about 1 GB per task). Segments roll
at ``log.segment.bytes`` (a few MiB here, not 1 GiB, so that the cleaner has closed segments
to work on within minutes), and the embedded log's cleaner looks every
``--cleaner-interval-s`` (``log.retention.check.interval.ms``; the embedded default is 60 s).

At the end, once the queries have caught up: every topic's size, segments, offsets and (on
the embedded log) the records it still holds; T's changelogs' records next to ``--keys`` and
``--updates``. Then the restore: the engine is stopped, T's aggregation state directory
(``DATA/state/<query>/aggregate``, both of T's stores) is deleted, the engine is started
again, and the time until T's task has restored it from the changelogs (the stage is ready)
is printed with the records replayed; a pull query then checks three keys' COUNT and SUM
against the truth. A restore proportional to the keys replays about two records per key
(two stores), plus what compaction has not reached yet (the active segment, and up to
``min.cleanable.dirty.ratio`` of the log), however many updates there were.

    python bench/bench_soak.py [--updates 20000000] [--keys 100000] [--partitions 1]
                               [--segment-mb 4] [--retention-mb 16] [--kafka]

Throughput on 2 shared cores (five stages per record: two re-keys, two aggregations, the
CSAS): 11k updates/s over 500k updates on a quiet machine, 6-8k/s over 3-5M (the machine
shared), so the 20M default takes 35-55 minutes; ``--updates 3000000`` (under 10 minutes)
shows the same shape, ``--updates 500000`` (about a minute) its start. ``--kafka`` runs at
4-8k/s; use ``--segment-mb 1`` there (records are lz4-compressed, so 4 MiB segments roll
late).
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from math import gcd
from pathlib import Path
from typing import Any

import orjson

from streamsql.engine import Engine
from streamsql.runtime.log.base import Log, ProducerRecord

SOURCE = "soak_source"
SINKS = ("T", "W", "R")
SOURCES = 997  # values of S's key
GROUPS = 1000  # values of G (R's new key)
BATCH = 10_000
MIB = 1024 * 1024

DECLARE = ("CREATE STREAM S (src STRING KEY, k STRING, v BIGINT, g STRING) "
           "WITH (kafka_topic='{topic}', value_format='JSON', partitions={partitions});")
QUERIES = {
    "T": "CREATE TABLE T AS SELECT k, COUNT(*) AS n, SUM(v) AS total FROM S GROUP BY k;",
    "W": ("CREATE TABLE W AS SELECT k, COUNT(*) AS n FROM S "
          "WINDOW TUMBLING (SIZE 1 MINUTE, GRACE PERIOD 1 MINUTE) GROUP BY k;"),
    "R": "CREATE STREAM R AS SELECT * FROM S PARTITION BY g;",
}


# -- the records -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Feed:
    """Record ``i`` of ``n``: key ``K`` = ``k{(i * mult) % keys}`` (a permutation of the keys
    every ``keys`` records, so each key's truth is known without keeping counts), ``V`` =
    ``i % 100``, timestamps ``span_ms`` apart over the run, the last one about now."""

    n: int
    keys: int
    span_ms: int
    base_ms: int
    mult: int

    @classmethod
    def of(cls, n: int, keys: int, event_minutes: float) -> "Feed":
        span = int(event_minutes * 60_000)
        minute = 60_000
        base = (int(time.time() * 1000) // minute) * minute - span
        mult = 7919
        while gcd(mult, keys) != 1:
            mult += 2
        return cls(n, keys, span, base, mult)

    def timestamp(self, i: int) -> int:
        return self.base_ms + i * self.span_ms // self.n

    def batch(self, lo: int, hi: int) -> list[ProducerRecord]:
        keys, mult = self.keys, self.mult
        out = []
        for i in range(lo, hi):
            value = orjson.dumps({"K": f"k{(i * mult) % keys}", "V": i % 100,
                                  "G": f"g{i % GROUPS}"})
            out.append(ProducerRecord(f"s{i % SOURCES}".encode(), value, self.timestamp(i)))
        return out

    def truth(self, key: int) -> tuple[int, int]:
        """(COUNT, SUM(v)) of key ``k{key}`` after all ``n`` records."""
        i = key * pow(self.mult, -1, self.keys) % self.keys
        count = total = 0
        while i < self.n:
            count += 1
            total += i % 100
            i += self.keys
        return count, total


# -- sizes on disk ---------------------------------------------------------------------------

def du(path: Path) -> tuple[int, int]:
    """Bytes allocated on disk (as ``du``) and files under ``path``."""
    size = files = 0
    for root, _, names in os.walk(path):
        for name in names:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue  # deleted meanwhile
            size += st.st_blocks * 512
            files += 1
    return size, files


def topic_kind(topic: str) -> str:
    if topic == SOURCE:
        return "src"
    if topic in SINKS:
        return "sinks"
    if topic.endswith("-repartition"):
        return "repart"
    if topic.endswith("-changelog"):
        return "chlog"
    return "other"


KINDS = ("src", "sinks", "repart", "chlog", "other")


@dataclass
class Layout:
    """Where a run keeps its data: the log (embedded: ``data/topics``; Kafka: the broker's
    log dir) and the state (``state``), and the query ids by table."""

    data: Path
    state: Path
    broker_dir: Path | None = None
    query_ids: dict[str, str] = field(default_factory=dict)

    def log_sizes(self) -> tuple[dict[str, int], int]:
        """Bytes by kind of topic, and files, of the log."""
        sizes = dict.fromkeys(KINDS, 0)
        files = 0
        if self.broker_dir is None:
            for tdir in (self.data / "topics").iterdir():
                size, n = du(tdir)
                sizes[topic_kind(tdir.name)] += size
                files += n
            for sub in ("groups", "trash"):
                size, n = du(self.data / sub)
                sizes["other"] += size
                files += n
        else:
            for entry in self.broker_dir.iterdir():
                size, n = du(entry) if entry.is_dir() else (entry.stat().st_blocks * 512, 1)
                topic = entry.name.rsplit("-", 1)[0] if entry.is_dir() else ""
                sizes[topic_kind(topic)] += size
                files += n
        return sizes, files

    def state_sizes(self) -> tuple[dict[str, int], int, int]:
        """Bytes of RocksDB state by table (T, W, R), of it the bytes of RocksDB's
        write-ahead logs (``*.log``), and files."""
        sizes = dict.fromkeys(SINKS, 0)
        files = wal = 0
        for name, qid in self.query_ids.items():
            size, n = du(self.state / qid)
            sizes[name] += size
            files += n
            for f in (self.state / qid).rglob("*.log"):
                try:
                    wal += f.stat().st_blocks * 512
                except OSError:
                    pass
        return sizes, wal, files


def mb(n: float) -> str:
    return f"{n / MIB:7.1f}"


# -- the run ---------------------------------------------------------------------------------

@dataclass
class Options:
    updates: int
    keys: int
    partitions: int
    event_minutes: float
    segment_mb: float
    retention_mb: float
    delete_retention_ms: int
    cleaner_interval_s: float
    report_every: int
    max_lag: int
    kafka: bool


def server_config(o: Options) -> dict[str, str]:
    """The ``log.*`` settings the bench gives the node (embedded) or the broker (Kafka)."""
    return {
        "log.segment.bytes": str(int(o.segment_mb * MIB)),
        # Source and sinks: kept by size (the embedded log's default is forever; Kafka's a
        # week). The repartition topics would be too, but the purge keeps them far smaller.
        "log.retention.bytes": str(int(o.retention_mb * MIB)),
        # Tombstones of expired windows go after this (Kafka's default: a day).
        "log.cleaner.delete.retention.ms": str(o.delete_retention_ms),
        "log.retention.check.interval.ms": str(int(o.cleaner_interval_s * 1000)),
    }


def kafka_broker_config(o: Options) -> dict[str, str]:
    return {**server_config(o),
            "log.cleaner.backoff.ms": str(int(o.cleaner_interval_s * 1000)),
            "log.segment.delete.delay.ms": "1000"}


def open_embedded(data: Path, config: dict[str, str]) -> Log:
    """The embedded log as ``streamsql server`` opens it (``open_log``), the cleaner's
    interval included (``log.retention.check.interval.ms``)."""
    from streamsql.runtime.log import open_log

    return open_log(None, data, config)


class Node:
    """The engine and its log, (re)started on the same directories."""

    def __init__(self, o: Options, layout: Layout, config: dict[str, str],
                 bootstrap: str | None) -> None:
        self.o = o
        self.layout = layout
        self.config = config
        self.bootstrap = bootstrap
        self.log: Any = None
        self.engine: Engine | None = None

    async def start(self) -> Engine:
        if self.bootstrap is None:
            self.log = open_embedded(self.layout.data, self.config)
        else:
            from streamsql.runtime.log.kafka import KafkaLog

            self.log = KafkaLog(self.bootstrap, self.config)
        self.engine = Engine(self.log, self.config, state_dir=self.layout.state)
        await self.engine.start()
        return self.engine

    async def stop(self) -> None:
        if self.engine is not None:
            await self.engine.close()
        if self.log is not None:
            await self.log.close()
        self.engine = self.log = None


def repartition_topics(engine: Engine) -> dict[str, str]:
    """The repartition topic of each GROUP BY table (T, W), by the table."""
    topics = {}
    for name, qid in _query_ids(engine).items():
        for runner in engine.runners.get(qid, []):
            for topic in getattr(runner.stage, "purged_inputs", ()):
                topics[name] = topic
    return topics


def _query_ids(engine: Engine) -> dict[str, str]:
    return {info.sink: qid for qid, info in engine.catalog.queries.items() if info.sink in SINKS}


def slowest(engine: Engine) -> int:
    """Records processed by the stage furthest behind (every stage sees each record once)."""
    counts = [r.processed for rs in engine.runners.values() for r in rs]
    return min(counts) if counts else 0


def open_fds(under: Path | None) -> tuple[int, int]:
    """File descriptors this process has open, and how many of them are files under
    ``under`` (the embedded log's topics: it keeps a descriptor open on every segment it has
    read or written)."""
    total = inside = 0
    prefix = str(under) + os.sep if under is not None else None
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return -1, -1
    for name in names:
        total += 1
        if prefix is None:
            continue
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith(prefix):
                inside += 1
        except OSError:
            pass
    return total, inside


@dataclass
class Reporter:
    node: Node
    layout: Layout
    feed: Feed
    start: float = field(default_factory=time.monotonic)
    last: tuple[float, int] = (0.0, 0)
    repartition: dict[str, str] = field(default_factory=dict)
    header_done: bool = False

    async def line(self, updates: int) -> None:
        """One line of figures; ``upd/s``: records through the slowest stage per second since
        the last line."""
        assert self.node.engine is not None and self.node.log is not None
        now = time.monotonic() - self.start
        done = slowest(self.node.engine)
        t0, n0 = self.last
        rate = (done - n0) / (now - t0) if now > t0 else 0.0
        self.last = (now, done)
        logs, log_files = self.layout.log_sizes()
        states, wal, state_files = self.layout.state_sizes()
        log_total, state_total = sum(logs.values()), sum(states.values())
        fds, log_fds = open_fds(None if self.layout.broker_dir else self.layout.data / "topics")
        starts = []
        for name, topic in sorted(self.repartition.items()):
            starts.append(f"{name} {sum(await self.node.log.begin_offsets(topic)):,}")
        if not self.header_done:
            self.header_done = True
            out(f"{'secs':>6} {'updates':>11} {'upd/s':>6} {'event':>6} | {'total MB':>8} | "
                f"{'log MB':>7} = {'src':>7} {'sinks':>7} {'repart':>7} {'chlog':>7} "
                f"{'other':>7} | {'state MB':>8} = {'T':>7} {'W':>7} {'R':>7} ({'WAL':>7}) | "
                f"{'files':>6} {'fds':>5} {'(log)':>5} | repart start")
        event = self.feed.timestamp(updates) - self.feed.base_ms if updates else 0
        out(f"{now:6.0f} {updates:11,} {rate:6.0f} {event / 60_000:5.1f}m | "
            f"{mb(log_total + state_total):>8} | {mb(log_total)} = "
            + " ".join(mb(logs[k]) for k in KINDS) + f" | {mb(state_total):>8} = "
            + " ".join(mb(states[k]) for k in SINKS) + f" ({mb(wal)})"
            + f" | {log_files + state_files:6,} {fds:5} {log_fds:5} | " + ", ".join(starts))


def out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


async def soak(o: Options, layout: Layout, config: dict[str, str], bootstrap: str | None) -> None:
    node = Node(o, layout, config, bootstrap)
    engine = await node.start()
    feed = Feed.of(o.updates, o.keys, o.event_minutes)
    await engine.execute(DECLARE.format(topic=SOURCE, partitions=o.partitions))
    for name in SINKS:
        [result] = await engine.execute(QUERIES[name])
        layout.query_ids[name] = result.query_id
    rep = Reporter(node, layout, feed)
    rep.repartition = repartition_topics(engine)
    log_ = node.log
    out("queries: " + "; ".join(f"{n} = {layout.query_ids[n]}" for n in SINKS)
        + "; repartition topics: "
        + ", ".join(f"{n}: {t}" for n, t in sorted(rep.repartition.items())))
    await rep.line(0)
    produced = 0
    next_report = o.report_every
    waited = 0.0
    while produced < o.updates:
        hi = min(produced + BATCH, o.updates)
        await log_.produce(SOURCE, feed.batch(produced, hi))
        produced = hi
        t = time.monotonic()
        while slowest(engine) < produced - o.max_lag:
            await asyncio.sleep(0.01)
        waited += time.monotonic() - t
        if produced >= next_report or produced == o.updates:
            await rep.line(produced)
            next_report += o.report_every
    while slowest(engine) < o.updates:
        await asyncio.sleep(0.05)
    elapsed = time.monotonic() - rep.start
    out(f"fed {o.updates:,} updates in {elapsed:.0f}s = {o.updates / elapsed:,.0f} updates/s "
        f"(every query caught up; {o.max_lag:,} records of lag allowed, the feeder waited "
        f"{waited:.0f}s for them)")
    # What the cleaner does with the last segments: a round or two more, without input.
    settle = 2 * o.cleaner_interval_s + 1
    await asyncio.sleep(settle)
    await rep.line(o.updates)
    out(f"  (the line above: {settle:.0f}s after the last update, the cleaner having looked again)")
    await summary(node, layout, feed)
    await node.stop()
    await restore(node, layout, feed)


async def summary(node: Node, layout: Layout, feed: Feed) -> None:
    """Every topic: size, segments, offsets, records held; T's changelogs against the keys."""
    log_ = node.log
    topics = sorted(await log_.list_topics())
    out("")
    out(f"{'topic':<62} {'MB':>7} {'segs':>5} {'empty':>5} {'start':>11} {'end':>11} "
        f"{'records':>11}")
    held: dict[str, int | None] = {}
    for topic in topics:
        begins, ends = await log_.begin_offsets(topic), await log_.end_offsets(topic)
        if node.bootstrap is None:
            parts = log_.partitions_of(topic)
            segs = sum(len(p.segments) for p in parts)
            empty = str(sum(1 for p in parts for s in p.segments if s.count == 0))
            records: int | None = sum(s.count for p in parts for s in p.segments)
            size = du(layout.data / "topics" / topic)[0]
        else:
            segs = 0
            size = 0
            empty = ""
            for p in range(len(ends)):
                d = layout.broker_dir / f"{topic}-{p}" if layout.broker_dir else None
                if d is not None and d.is_dir():
                    size += du(d)[0]
                    segs += sum(1 for f in d.iterdir() if f.suffix == ".log")
            records = None  # (compaction leaves holes: end - start is an upper bound)
        held[topic] = records
        out(f"{topic:<62} {mb(size)} {segs:>5} {empty:>5} {sum(begins):>11,} {sum(ends):>11,} "
            f"{records if records is not None else sum(ends) - sum(begins):>11,}"
            + ("" if records is not None else " (end - start)"))
    qid = layout.query_ids["T"]
    out("")
    for store in ("aggregate", "materialized"):
        topic = next(t for t in topics if t.endswith(f"{qid}-{store}-changelog"))
        b, e = sum(await log_.begin_offsets(topic)), sum(await log_.end_offsets(topic))
        n = held[topic]
        what = f"{n:,} records held" if n is not None else f"at most {e - b:,} records held"
        out(f"T's {store} changelog: {e:,} records written, {what}, for {feed.keys:,} keys and "
            f"{feed.n:,} updates")


async def restore(node: Node, layout: Layout, feed: Feed) -> None:
    """Delete T's aggregation state, start again, time the restore; check three keys."""
    qid = layout.query_ids["T"]
    stage_dir = layout.state / qid / "aggregate"
    size, _ = du(stage_dir)
    shutil.rmtree(stage_dir)
    out("")
    out(f"restore: deleted {stage_dir} ({size / MIB:.1f} MB), starting again")
    t0 = time.monotonic()
    engine = await node.start()
    runners = engine.runners[qid]
    aggregate = next(r for r in runners if r.tasks is not None and r.tasks.specs)
    await asyncio.wait_for(aggregate.ready.wait(), 3600)
    ready = time.monotonic() - t0
    replayed = 0
    seconds = 0.0
    for p, state in sorted(aggregate.tasks.tasks.items()):
        for st in state.restore_stats.values():
            out(f"  task {p} store {st.store}: changelog {st.from_offset:,} -> {st.to_offset:,}, "
                f"{st.replayed:,} replayed in {st.seconds:.2f}s")
            replayed += st.replayed
            seconds += st.seconds
    out(f"restore of T: {replayed:,} changelog records replayed in {seconds:.2f}s "
        f"({replayed / feed.keys:.2f} per key; {feed.n / max(replayed, 1):,.1f} updates per "
        f"record replayed); engine start to T ready {ready:.2f}s")
    out(f"  ({feed.keys:,} keys, {feed.n:,} updates: replaying every update at the same rate "
        f"would take ~{seconds * feed.n / max(replayed, 1):.0f}s)")
    # The restored table answers with the truth (keys 0, 1 and the last one).
    for key in (0, 1, feed.keys - 1):
        rows = []
        for _ in range(300):
            [res] = await engine.execute(f"SELECT k, n, total FROM T WHERE k = 'k{key}';")
            rows = res.rows
            if rows and tuple(rows[0][1:]) == feed.truth(key):
                break
            await asyncio.sleep(0.1)
        got = tuple(rows[0][1:]) if rows else None
        verdict = "ok" if got == feed.truth(key) else "WRONG"
        out(f"  pull k{key}: (count, sum) {got} expected {feed.truth(key)}: {verdict}")
    await node.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--updates", type=int, default=20_000_000)
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--partitions", type=int, default=1,
                    help="of the source (and so of every topic)")
    ap.add_argument("--event-minutes", type=float, default=60.0,
                    help="event time the updates span (default an hour)")
    ap.add_argument("--segment-mb", type=float, default=4.0, help="log.segment.bytes, in MiB")
    ap.add_argument("--retention-mb", type=float, default=16.0,
                    help="log.retention.bytes (per partition), in MiB")
    ap.add_argument("--delete-retention-ms", type=int, default=60_000,
                    help="log.cleaner.delete.retention.ms: how long tombstones stay")
    ap.add_argument("--cleaner-interval-s", type=float, default=10.0,
                    help="how often the cleaner looks (embedded: the log's retention check; "
                         "Kafka: log.retention.check.interval.ms and log.cleaner.backoff.ms)")
    ap.add_argument("--report-every", type=int, default=0,
                    help="updates between lines (default: --updates / 20)")
    ap.add_argument("--max-lag", type=int, default=50_000,
                    help="records the slowest stage may be behind before the feeder waits")
    ap.add_argument("--kafka", action="store_true", help="on a 1-broker Kafka cluster of its own")
    ap.add_argument("--dir", help="keep the data here (default: a temporary directory)")
    a = ap.parse_args()
    every = a.report_every or max(BATCH, a.updates // 20 // BATCH * BATCH)
    o = Options(a.updates, a.keys, a.partitions, a.event_minutes, a.segment_mb, a.retention_mb,
                a.delete_retention_ms, a.cleaner_interval_s, every, a.max_lag, a.kafka)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    if a.dir:
        Path(a.dir).mkdir(parents=True, exist_ok=True)
        run(o, Path(a.dir).resolve())
    else:
        with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
            run(o, Path(tmp))


def run(o: Options, base: Path) -> None:
    config = server_config(o)
    out(f"soak: {o.updates:,} updates over {o.keys:,} keys, {o.event_minutes:g} minutes of event "
        f"time, {o.partitions} partition(s), on "
        f"{'Kafka (1 broker)' if o.kafka else 'the embedded log'}; "
        f"{os.cpu_count()} cores, load {'/'.join(f'{x:.2f}' for x in os.getloadavg())}")
    if not o.kafka:
        out("node config: " + ", ".join(f"{k}={v}" for k, v in config.items()))
        layout = Layout(base / "data", base / "data" / "state")
        asyncio.run(soak(o, layout, config, None))
        return
    from streamsql.testing.kafka import KafkaCluster, kafka_unavailable_reason

    reason = kafka_unavailable_reason()
    if reason:
        out(f"bench_soak --kafka: skipped: {reason}")
        return
    broker = kafka_broker_config(o)
    out("broker config: " + ", ".join(f"{k}={v}" for k, v in broker.items()))
    cluster = KafkaCluster(base / "kafka", brokers=1, config=broker, die_with_parent=True)
    cluster.start()
    try:
        layout = Layout(base / "kafka", base / "state", broker_dir=cluster.nodes[0].data_dir)
        engine_config = {"ksql.service.id": "soak_"}
        asyncio.run(soak(o, layout, engine_config, cluster.bootstrap_servers))
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()

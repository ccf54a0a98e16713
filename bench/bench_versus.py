"""Benchmark: streamsql side by side with its peers, on one Kafka broker and the same data.

Starts a 1-broker KRaft cluster (``streamsql.testing.kafka.KafkaCluster``, in a temp dir,
stopped at the end), pre-loads N JSON records over K keys into a 4-partition topic and a table
topic of K rows, once, and runs three workloads on them, the same logic written for each
contender:

* W1 filter + project:  ``SELECT user_id, UCASE(page) AS page, ms FROM pageviews WHERE ms > 100``
* W2 tumbling COUNT + SUM per key:  ``SELECT user_id, COUNT(*) AS n, SUM(ms) AS total FROM
  pageviews WINDOW TUMBLING (SIZE 5 MINUTES) GROUP BY user_id`` (the source's message key)
* W3 stream-table join on the key:  ``SELECT p.user_id, p.page, p.ms, u.name, u.region FROM
  pageviews p JOIN users u ON p.user_id = u.id`` (the table's rows are older than the stream's)

Contenders, each a process of its own (its CPU seconds, user + system from /proc, and its
peak RSS, VmHWM, are its own):

* ``sql-alos``, ``sql-eos``: streamsql on Kafka, an ``Engine(KafkaLog(...))`` (what
  ``streamsql server`` runs, without its REST API), processing.guarantee at_least_once and
  exactly_once_v2;
* ``embedded``: streamsql on its embedded log, the same records written into it first (not
  timed), in a process of its own that times itself the same way;
* ``raw``: an aiokafka loop, consume -> Python logic (a dict for state) -> produce, commits
  each poll's offsets once its sends are acknowledged, never waiting for them: the client's limit;
* ``kstreams``, ``kstreams-eos``: Kafka Streams 3.9 (bench/kstreams, jars from Maven
  Central), 1 stream thread, JSON through Jackson, ksqlDB's defaults for its Streams apps:
  commit.interval.ms=2000, a 10 MB record cache, topology.optimization=all; JVM defaults;
* ``quix``: Quix Streams 3.28 (from PyPI, in its own venv bench/.venv-peers), RocksDB state,
  its defaults (commit_interval 5 s, at-least-once); W3 is its ``join_asof``;
* ``bytewax``: Bytewax 0.21 (from PyPI, in bench/.venv-peers), one worker, state in memory,
  W1 and W2 only (no table state to join to); its source reads to the topic's end and stops,
  which closes its last windows (it writes each window once, closed). Not in the default
  contenders: its W2 output is right on 100k records but WRONG on 1M (windows missing; not
  looked into yet).

Timing: from the moment the contender says it is consuming (its partitions assigned: streamsql's
first stage ``ready``, Kafka Streams' first RUNNING, Quix's partition assignment, the raw loop's
first assignment) to the last change of the output topic's end offsets (polled every 50 ms;
the last-stable offset for the transactional runs). Once they have not moved for 2 s the output
is read (read_committed) and CHECKED: W1 the exact multiset of (key, PAGE, MS); W2 the last
(N, TOTAL) per (key, window start) equal to the counts computed here (output keys are the key's
bytes + the window start, 8 bytes big-endian: Kafka Streams' windowed key, as ksqlDB writes
it); W3 the exact multiset of (key, PAGE, MS, NAME, REGION), one per stream record. A wrong
output is reported WRONG, not timed. CPU seconds are taken at the output's last change.

Rounds are interleaved (the contenders' order rotated each round); the table shows the median
records/s (of the N input records), the median CPU seconds per million records and the peak
RSS. Then the issue's "Done when" ratios with pass/fail, from this one run, with the load
average, and (``--memory``) streamsql W2's peak RSS with 100k vs 1M keys.

    python bench/bench_versus.py [--records 1000000] [--keys 100000] [--rounds 3]
        [--workloads W1,W2,W3] [--contenders sql-alos,sql-eos,embedded,raw,kstreams,quix]
        [--skip-build] [--memory]

``make bench-versus`` fetches the broker's jars, builds the Kafka Streams app, makes the Quix
venv and runs this. A contender whose program is missing (no bench/kstreams/classes, no
bench/.venv-peers) is skipped with a note; without java or the broker's jars the whole
benchmark says so and exits 0.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
import os
import platform
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable

import orjson

HERE = Path(__file__).resolve().parent
KSTREAMS = HERE / "kstreams"
PEERS_PY = HERE / ".venv-peers" / "bin" / "python"
SOURCE = "pageviews"
TABLE = "users"
PARTITIONS = 4
WINDOW_MS = 5 * 60_000
SETTLE = 2.0
"""Seconds the output must stay unchanged before it is read and checked."""
STALL = 60.0
"""Seconds without output change (and no correct output) after which a run is WRONG."""
FIRST_OUTPUT = 600.0
"""Seconds to wait for the first output record (Bytewax writes its windows only as they close:
in W2 most at the end of the input)."""
POLL = 0.05
_CLK_TCK = os.sysconf("SC_CLK_TCK")

DECLARE = [
    "CREATE STREAM pageviews (user_id STRING KEY, page STRING, ms BIGINT) "
    "WITH (kafka_topic='{source}', value_format='JSON'{p});",
    "CREATE TABLE users (id STRING PRIMARY KEY, name STRING, region STRING) "
    "WITH (kafka_topic='users', value_format='JSON'{p});",
]
SQL = {
    "W1": "CREATE STREAM {sink} AS SELECT user_id, UCASE(page) AS page, ms FROM pageviews "
          "WHERE ms > 100;",
    "W2": "CREATE TABLE {sink} AS SELECT user_id, COUNT(*) AS n, SUM(ms) AS total FROM pageviews "
          "WINDOW TUMBLING (SIZE 5 MINUTES) GROUP BY user_id EMIT CHANGES;",
    "W3": "CREATE STREAM {sink} AS SELECT p.user_id AS user_id, p.page AS page, p.ms AS ms, "
          "u.name AS name, u.region AS region FROM pageviews p JOIN users u ON p.user_id = u.id;",
}
TITLES = {"W1": "W1 filter + project", "W2": "W2 tumbling COUNT+SUM per key",
          "W3": "W3 stream-table join"}
CONTENDERS = ("sql-alos", "sql-eos", "embedded", "raw", "kstreams", "kstreams-eos", "quix",
              "bytewax")
WORKLOADS_OF = {"bytewax": ("W1", "W2")}
"""Contenders that run only some workloads (the others: "—" in the table)."""
HEADINGS = {"sql-alos": "streamsql (Kafka)", "sql-eos": "streamsql (Kafka, EOS v2)",
            "embedded": "embedded", "raw": "raw aiokafka loop", "kstreams": "Kafka Streams 3.9 (1 thread)",
            "kstreams-eos": "Kafka Streams (EOS v2)", "quix": "Quix Streams 3.28",
            "bytewax": "Bytewax 0.21"}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its reaped children so far (0 when gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / _CLK_TCK


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set size (VmHWM) in MiB (0 when gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def loadavg() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


# -- data and the expected outputs --------------------------------------------------------------

def time_base(records: int) -> int:
    """The first record's timestamp: on a window boundary and recent (the broker deletes
    segments older than its 7-day retention), all records in the past."""
    return (int(time.time() * 1000) // WINDOW_MS - records // WINDOW_MS - 2) * WINDOW_MS


def stream_record(i: int, keys: int, base: int) -> tuple[bytes, bytes, int]:
    """Record i: key ``user-{(i * 7919) % keys}`` (keys spread over the run), 1000 records per
    second of event time, ``MS`` = i % 200 (49.5% pass ``ms > 100``)."""
    return (f"user-{(i * 7919) % keys}".encode(),
            orjson.dumps({"PAGE": f"/page/{i % 97}", "MS": i % 200}), base + i)


def table_record(j: int, base: int) -> tuple[bytes, bytes, int]:
    """Table row j, a minute older than every stream record (so joins find it)."""
    return (f"user-{j}".encode(),
            orjson.dumps({"NAME": f"user number {j}", "REGION": f"region-{j % 10}"}), base - 60_000)


def multiset(items: Iterable[tuple[Any, ...]]) -> tuple[int, int]:
    """(count, sum of hashes mod 2**64): equal for equal multisets (up to a 2**-64 chance),
    without holding a million tuples."""
    n = total = 0
    for t in items:
        n += 1
        total += hash(t)
    return n, total & 0xFFFF_FFFF_FFFF_FFFF


def expected(workload: str, records: int, keys: int) -> Any:
    """What the workload's output must hold, as ``check`` compares it."""
    if workload == "W1":
        return multiset((f"user-{(i * 7919) % keys}", f"/PAGE/{i % 97}", i % 200)
                        for i in range(records) if i % 200 > 100)
    if workload == "W2":
        acc: dict[tuple[str, int], list[int]] = {}
        for i in range(records):
            slot = acc.setdefault((f"user-{(i * 7919) % keys}", i // WINDOW_MS), [0, 0])
            slot[0] += 1
            slot[1] += i % 200
        return {k: tuple(v) for k, v in acc.items()}
    return multiset(_w3_row(f"user-{(i * 7919) % keys}", f"/page/{i % 97}", i % 200)
                    for i in range(records))


def _w3_row(key: str, page: str, ms: int) -> tuple[str, str, int, str, str]:
    j = int(key[5:])
    return key, page, ms, f"user number {j}", f"region-{j % 10}"


def check(workload: str, want: Any, output: list[tuple[bytes | None, bytes | None]],
          base: int) -> str | None:
    """None when ``output`` (key, value) is exactly what the workload must write; else what
    is wrong, in a few words."""
    try:
        if workload == "W1":
            got = multiset((k.decode(), (v := orjson.loads(val))["PAGE"], v["MS"])
                           for k, val in output)
            return None if got == want else f"{got[0]:,} rows, want {want[0]:,} (or other rows)"
        if workload == "W3":
            got = multiset((k.decode(), (v := orjson.loads(val))["PAGE"], v["MS"], v["NAME"],
                            v["REGION"]) for k, val in output)
            return None if got == want else f"{got[0]:,} rows, want {want[0]:,} (or other rows)"
        last: dict[tuple[str, int], tuple[int, int]] = {}
        for k, val in output:
            start = struct.unpack(">q", k[-8:])[0]
            v = orjson.loads(val)
            last[(k[:-8].decode(), (start - base) // WINDOW_MS)] = (v["N"], v["TOTAL"])
        if last == want:
            return None
        wrong = sum(1 for k, v in want.items() if last.get(k) != v)
        return f"{wrong:,} of {len(want):,} windows wrong or missing, {len(last) - len(want):+,} extra"
    except Exception as e:  # a record of another shape: wrong, say how
        return f"unreadable output: {e!r}"[:200]


# -- measuring a run ----------------------------------------------------------------------------

@dataclass
class Result:
    """One run of one contender on one workload."""

    contender: str
    workload: str
    records: int
    seconds: float = 0.0
    cpu: float = 0.0
    rss_mb: float = 0.0
    wrong: str | None = None
    load: float = field(default_factory=lambda: os.getloadavg()[0])

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0

    @property
    def cpu_per_m(self) -> float:
        return self.cpu * 1e6 / self.records

    def to_json(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "cpu": self.cpu, "rss_mb": self.rss_mb, "wrong": self.wrong}


async def watch(ends: Callable[[], Awaitable[int]], read_all: Callable[[], Awaitable[list[Any]]],
                cpu: Callable[[], float], alive: Callable[[], bool], minimum: int,
                verdict: Callable[[list[Any]], str | None], ready: float, cpu0: float,
                result: Result) -> Result:
    """Poll ``ends()`` (the output's end offsets, summed) until the output is complete and
    checked; fill ``result`` (seconds from ``ready``, wall clock, to the last change; CPU
    since ``ready`` to then). The output is read and checked whenever it has been still for
    SETTLE seconds with at least ``minimum`` records; still wrong after STALL seconds without
    a change, or with the contender gone: WRONG. ``cpu0``: its CPU seconds when it was ready."""
    seen, changed, cpu_at = -1, time.time(), cpu0
    checked_at = -1
    wrong = "no output"
    while True:
        n = await ends()
        now = time.time()
        if n != seen:
            seen, changed, cpu_at = n, now, cpu()
        elif now - changed >= SETTLE and n >= minimum and checked_at != n:
            checked_at = n
            wrong = verdict(await read_all())
            if wrong is None:
                result.seconds, result.cpu = changed - ready, cpu_at - cpu0
                return result
        if (now - changed >= (STALL if n else FIRST_OUTPUT)) or not alive():
            if alive() or n != checked_at:
                wrong = verdict(await read_all()) if n > 0 else wrong
                if wrong is None:
                    result.seconds, result.cpu = changed - ready, cpu_at - cpu0
                    return result
            result.wrong = wrong if alive() else f"exited: {wrong}"
            return result
        await asyncio.sleep(POLL)


class KafkaOutput:
    """The harness's view of an output topic on the broker: end offsets (read_committed, so
    the last stable offset under transactions) and a full read_committed read."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.consumer: Any = None
        self.tps: list[Any] = []

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False,
            isolation_level="read_committed", auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 * 1024 * 1024, fetch_max_wait_ms=100)
        await self.consumer.start()
        self.tps = [TopicPartition(self.topic, p) for p in range(PARTITIONS)]

    async def ends(self) -> int:
        try:
            return sum((await self.consumer.end_offsets(self.tps)).values())
        except Exception:  # the topic is not there yet (streamsql creates its sink)
            return 0

    async def read_all(self) -> list[tuple[bytes | None, bytes | None]]:
        self.consumer.assign(self.tps)
        await self.consumer.seek_to_beginning(*self.tps)
        ends = await self.consumer.end_offsets(self.tps)
        out: list[tuple[bytes | None, bytes | None]] = []
        while await behind(self.consumer, self.tps, ends):
            got = await self.consumer.getmany(timeout_ms=500, max_records=50_000)
            for recs in got.values():
                out.extend((r.key, r.value) for r in recs)
        return out

    async def stop(self) -> None:
        await self.consumer.stop()


async def behind(consumer: Any, tps: list[Any], ends: dict[Any, int]) -> bool:
    """Whether an assigned consumer has yet to read up to ``ends`` on some partition."""
    for tp in tps:
        if await consumer.position(tp) < ends[tp]:
            return True
    return False


# -- the contenders -----------------------------------------------------------------------------

@dataclass
class Bench:
    """The broker, the data, and the expected outputs."""

    bootstrap: str
    base_dir: Path
    records: int
    keys: int
    base: int
    want: dict[str, Any] = field(default_factory=dict)
    source: str = SOURCE
    """The stream's topic (the memory runs' have other keys; only sql-alos reads them)."""


def available(contender: str) -> str | None:
    """Why a contender cannot run here, or None."""
    if contender.startswith("kstreams") and not (KSTREAMS / "classes").is_dir():
        return "bench/kstreams not built (make bench-versus builds it)"
    if contender == "quix" and not PEERS_PY.exists():
        return "no bench/.venv-peers (make bench-versus makes it)"
    if contender == "bytewax" and not list(PEERS_PY.parent.parent.glob("lib/python*/site-packages/bytewax")):
        return "bytewax is not installed in bench/.venv-peers (make bench-versus installs it)"
    return None


def command(b: Bench, contender: str, workload: str, run: str, out: str) -> list[str]:
    """The contender's command line: it prints ``ready <ms>`` (or a JSON line) once consuming."""
    work = b.base_dir / run
    work.mkdir(parents=True, exist_ok=True)
    common = ["--bootstrap", b.bootstrap, "--workload", workload, "--output", out,
              "--run-id", run, "--dir", str(work)]
    if contender in ("sql-alos", "sql-eos"):
        guarantee = "exactly_once_v2" if contender == "sql-eos" else "at_least_once"
        return [sys.executable, __file__, "sql-worker", *common, "--guarantee", guarantee,
                "--source", b.source]
    if contender == "embedded":
        return [sys.executable, __file__, "embedded-worker", *common, "--records", str(b.records),
                "--keys", str(b.keys), "--base", str(b.base)]
    if contender == "raw":
        return [sys.executable, __file__, "raw-worker", *common]
    if contender.startswith("kstreams"):
        guarantee = "exactly_once_v2" if contender.endswith("eos") else "at_least_once"
        return ["java", "-cp", f"{KSTREAMS / 'classes'}:{KSTREAMS / 'lib'}/*",
                "streamsql.bench.VersusApp", workload, b.bootstrap, SOURCE, TABLE, out,
                guarantee, f"ks-{run}", str(work / "state")]
    if contender in ("quix", "bytewax"):
        return [str(PEERS_PY), str(HERE / f"versus_{contender}.py"), *common]
    raise ValueError(contender)


def minimum_output(b: Bench, workload: str) -> int:
    """Records the output holds at least once complete (W2: one per window, as caches merge
    updates)."""
    if workload == "W1":
        return b.want["W1"][0]
    if workload == "W2":
        return len(b.want["W2"])
    return b.want["W3"][0]


async def run_one(b: Bench, contender: str, workload: str, tag: str) -> Result:
    """One timed, checked run of ``contender`` on ``workload`` in a fresh output topic."""
    run = f"{contender}-{workload}-{tag}-{uuid.uuid4().hex[:4]}".replace("-", "_")
    result = Result(contender, workload, b.records)
    if contender in ("sql-alos", "sql-eos"):
        out = f"OUT_{run}".upper()  # the CSAS's sink topic: its name, upper-cased
    else:
        out = f"out_{run}"
        await create_topic(b.bootstrap, out)
    work = b.base_dir / run
    work.mkdir(parents=True, exist_ok=True)
    with open(work / "stderr.log", "wb") as err:
        proc = subprocess.Popen(command(b, contender, workload, run, out), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=err, cwd=work)
    try:
        assert proc.stdout is not None
        line = (await asyncio.to_thread(proc.stdout.readline)).decode().strip()
        if contender == "embedded":  # it measured itself
            if not line.startswith("{"):
                result.wrong = "exited: " + tail(work / "stderr.log")
                return result
            got = json.loads(line)
            result.seconds, result.cpu, result.wrong = got["seconds"], got["cpu"], got["wrong"]
            result.rss_mb = peak_rss_mb(proc.pid)
            return result
        if not line.startswith("ready "):
            result.wrong = "exited: " + tail(work / "stderr.log")
            return result
        ready = int(line.split()[1]) / 1000
        cpu0 = cpu_seconds(proc.pid)
        output = KafkaOutput(b.bootstrap, out)
        await output.start()
        try:
            await watch(output.ends, output.read_all, lambda: cpu_seconds(proc.pid),
                        lambda: proc.poll() is None, minimum_output(b, workload),
                        lambda recs: check(workload, b.want[workload], recs, b.base), ready, cpu0,
                        result)
        finally:
            await output.stop()
        result.rss_mb = peak_rss_mb(proc.pid)
        result.load = os.getloadavg()[0]
        return result
    finally:
        if proc.poll() is None:
            try:
                assert proc.stdin is not None
                proc.stdin.write(b"stop\n")
                proc.stdin.close()
                await asyncio.to_thread(proc.wait, 60)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()


def tail(path: Path, chars: int = 400) -> str:
    try:
        return path.read_text(errors="replace")[-chars:].replace("\n", " | ")
    except OSError:
        return "?"


async def create_topic(bootstrap: str, name: str, partitions: int = PARTITIONS) -> None:
    from streamsql.runtime.log.kafka import KafkaLog

    log = KafkaLog(bootstrap, {"ksql.service.id": "bench-versus"})
    try:
        await log.create_topic(name, partitions)
    finally:
        await log.close()


async def preload(b: Bench, table: bool = True) -> float:
    """Writes the stream and the table topic (KafkaLog.produce: its partitioner is the Java
    client's, murmur2 of the key, so every contender sees the same partitions); returns the
    seconds it took."""
    from streamsql.runtime.log.base import ProducerRecord
    from streamsql.runtime.log.kafka import KafkaLog

    log = KafkaLog(b.bootstrap, {"ksql.service.id": "bench-loader"})
    start = time.perf_counter()
    await log.create_topic(b.source, PARTITIONS)
    if table:
        await log.create_topic(TABLE, PARTITIONS)
    step = 10_000
    loads = [(b.source, b.records, lambda i: stream_record(i, b.keys, b.base))]
    if table:
        loads.insert(0, (TABLE, b.keys, lambda j: table_record(j, b.base)))
    for topic, count, make in loads:
        for lo in range(0, count, step * 8):
            recs = [ProducerRecord(*make(i)) for i in range(lo, min(lo + step * 8, count))]
            await asyncio.gather(*(log.produce(topic, recs[i:i + step])
                                   for i in range(0, len(recs), step)))
        assert sum(await log.end_offsets(topic)) == count
    await log.close()
    return time.perf_counter() - start


# -- workers (this script in a process of its own) ----------------------------------------------

def say_ready() -> None:
    sys.stdout.write(f"ready {int(time.time() * 1000)}\n")
    sys.stdout.flush()


async def wait_for_stop() -> None:
    """Until the harness says "stop" or goes away."""
    while True:
        line = await asyncio.to_thread(sys.stdin.readline)
        if not line or line.strip() == "stop":
            return


def declarations(partitions: int | None = None, source: str = SOURCE) -> str:
    p = f", partitions={partitions}" if partitions else ""
    return " ".join(d.format(p=p, source=source) for d in DECLARE)


async def sql_worker(args: argparse.Namespace) -> None:
    """streamsql on Kafka: the workload's CSAS on an Engine(KafkaLog); says ready when its
    first stage has its partitions."""
    from streamsql.engine import Engine
    from streamsql.runtime.log.kafka import KafkaLog

    config = {"ksql.service.id": f"versus_{args.run_id}", "processing.guarantee": args.guarantee,
              "auto.offset.reset": "earliest"}
    log = KafkaLog(args.bootstrap, config)
    engine = Engine(log, config, state_dir=str(Path(args.dir) / "state"))
    await engine.start()
    await engine.execute(declarations(source=args.source))
    await engine.execute(SQL[args.workload].format(sink=args.output))
    runners = next(iter(engine.runners.values()))
    await runners[0].ready.wait()
    say_ready()
    await wait_for_stop()
    await engine.close()
    await log.close()


async def embedded_worker(args: argparse.Namespace) -> None:
    """streamsql on its embedded log: writes the same records (not timed), runs the CSAS and
    times and checks itself as the harness does, then prints the result as a JSON line."""
    from streamsql.engine import Engine
    from streamsql.runtime.log.base import ProducerRecord
    from streamsql.runtime.log.embedded import EmbeddedLog

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    log = EmbeddedLog(Path(args.dir) / "log")
    engine = Engine(log, {"auto.offset.reset": "earliest"})
    await engine.start()
    await engine.execute(declarations(PARTITIONS))
    step = 10_000
    for topic, count, make in ((TABLE, args.keys, lambda j: table_record(j, args.base)),
                               (SOURCE, args.records,
                                lambda i: stream_record(i, args.keys, args.base))):
        for lo in range(0, count, step):
            await log.produce(topic, [ProducerRecord(*make(i))
                                      for i in range(lo, min(lo + step, count))])
    want = expected(args.workload, args.records, args.keys)
    b = Bench("", Path(args.dir), args.records, args.keys, args.base, {args.workload: want})
    sink = args.output.upper()

    async def ends() -> int:
        try:
            return sum(await log.end_offsets(sink))
        except Exception:  # not created yet
            return 0

    async def read_all() -> list[tuple[bytes | None, bytes | None]]:
        out = []
        for p, end in enumerate(await log.end_offsets(sink)):
            offset = 0
            while offset < end:
                batch = await log.fetch(sink, p, offset, 50_000)
                if not len(batch):
                    break
                out.extend(zip(batch.keys, batch.values))
                offset = batch.offsets[-1] + 1
        return out

    result = Result("embedded", args.workload, args.records)
    ready, cpu0 = time.time(), time.process_time()
    await engine.execute(SQL[args.workload].format(sink=args.output))
    await watch(ends, read_all, time.process_time, lambda: True, minimum_output(b, args.workload),
                lambda recs: check(args.workload, want, recs, args.base), ready, cpu0, result)
    sys.stdout.write(json.dumps(result.to_json()) + "\n")
    sys.stdout.flush()
    await engine.close()
    await log.close()
    await wait_for_stop()


async def raw_worker(args: argparse.Namespace) -> None:
    """The aiokafka loop: getmany -> the workload in plain Python (dicts for state) ->
    send_batch per partition; a poll's offsets are committed once its sends are acknowledged
    (at-least-once), checked after each poll but never waited for: producing, acknowledging
    and consuming overlap. W2 writes each
    changed window once per poll (a cache of one poll); W3 first reads the table into a dict."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    from aiokafka.abc import ConsumerRebalanceListener

    assigned = asyncio.Event()

    class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
        def on_partitions_revoked(self, revoked: Any) -> None:
            pass

        def on_partitions_assigned(self, got: Any) -> None:
            if got:
                assigned.set()

    # As KafkaLog configures its clients.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=args.bootstrap, group_id=f"raw-{args.run_id}", enable_auto_commit=False,
        auto_offset_reset="earliest", isolation_level="read_committed",
        max_partition_fetch_bytes=4 * 1024 * 1024, fetch_max_wait_ms=100)
    producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap, acks="all",
                                enable_idempotence=True, compression_type="lz4", linger_ms=5,
                                max_batch_size=1024 * 1024, max_request_size=4 * 1024 * 1024)
    await producer.start()
    await consumer.start()
    consumer.subscribe([SOURCE], listener=Listener())
    poll = asyncio.create_task(consumer.getmany(timeout_ms=0))
    await assigned.wait()
    say_ready()
    first = await poll
    table: dict[bytes, tuple[str, str]] = {}
    if args.workload == "W3":
        loader = AIOKafkaConsumer(bootstrap_servers=args.bootstrap, enable_auto_commit=False,
                                  auto_offset_reset="earliest",
                                  max_partition_fetch_bytes=4 * 1024 * 1024)
        await loader.start()
        tps = [TopicPartition(TABLE, p) for p in range(PARTITIONS)]
        loader.assign(tps)
        ends = await loader.end_offsets(tps)
        while await behind(loader, tps, ends):
            for recs in (await loader.getmany(timeout_ms=500, max_records=50_000)).values():
                for r in recs:
                    v = orjson.loads(r.value)
                    table[r.key] = (v["NAME"], v["REGION"])
        await loader.stop()
    windows: dict[tuple[bytes, int], list[int]] = {}
    # Polls whose sends are not all acknowledged yet, oldest first: (futures, offsets).
    pending: collections.deque[tuple[list[Any], dict[Any, int]]] = collections.deque()
    stop = asyncio.create_task(wait_for_stop())
    got = first
    while not stop.done():
        sends = []
        for tp, recs in got.items():
            batch = producer.create_batch()

            def emit(key: bytes, value: bytes, ts: int) -> None:
                nonlocal batch
                if batch.append(timestamp=ts, key=key, value=value, headers=[]) is None:
                    sends.append(producer.send_batch(batch, args.output, partition=tp.partition))
                    batch = producer.create_batch()
                    batch.append(timestamp=ts, key=key, value=value, headers=[])

            if args.workload == "W1":
                for r in recs:
                    v = orjson.loads(r.value)
                    if v["MS"] > 100:
                        emit(r.key, orjson.dumps({"PAGE": v["PAGE"].upper(), "MS": v["MS"]}),
                             r.timestamp)
            elif args.workload == "W2":
                dirty: dict[tuple[bytes, int], int] = {}
                for r in recs:
                    v = orjson.loads(r.value)
                    start = r.timestamp - r.timestamp % WINDOW_MS
                    slot = windows.get((r.key, start))
                    if slot is None:
                        slot = windows[(r.key, start)] = [0, 0]
                    slot[0] += 1
                    slot[1] += v["MS"]
                    dirty[(r.key, start)] = r.timestamp
                for (key, start), ts in dirty.items():
                    n, total = windows[(key, start)]
                    emit(key + struct.pack(">q", start), orjson.dumps({"N": n, "TOTAL": total}), ts)
            else:
                for r in recs:
                    row = table.get(r.key)
                    if row is not None:
                        v = orjson.loads(r.value)
                        emit(r.key, orjson.dumps({"PAGE": v["PAGE"], "MS": v["MS"],
                                                  "NAME": row[0], "REGION": row[1]}), r.timestamp)
            sends.append(producer.send_batch(batch, args.output, partition=tp.partition))
        pending.append(([await s for s in sends],
                        {tp: recs[-1].offset + 1 for tp, recs in got.items() if recs}))
        # Commit what is acknowledged, never waiting for it: consuming goes on meanwhile.
        offsets: dict[Any, int] = {}
        while pending and all(f.done() for f in pending[0][0]):
            for f in pending[0][0]:
                f.result()  # a failed send fails the loop
            offsets.update(pending.popleft()[1])
        if offsets:
            await consumer.commit(offsets)
        got = await consumer.getmany(timeout_ms=100, max_records=10_000)
    await consumer.stop()
    await producer.stop()


def worker_main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("kind")
    ap.add_argument("--bootstrap", default="")
    ap.add_argument("--workload", required=True)
    ap.add_argument("--output", required=True)
    ap.add_argument("--run-id", required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--guarantee", default="at_least_once")
    ap.add_argument("--source", default=SOURCE)
    ap.add_argument("--records", type=int, default=0)
    ap.add_argument("--keys", type=int, default=0)
    ap.add_argument("--base", type=int, default=0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    # aiokafka logs a group's first coordinator lookup as an error: the checks catch real ones.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    run = {"sql-worker": sql_worker, "embedded-worker": embedded_worker,
           "raw-worker": raw_worker}[args.kind]
    asyncio.run(run(args))


# -- the report ---------------------------------------------------------------------------------

@dataclass
class Summary:
    """The medians of a contender's rounds on a workload (None: WRONG or not run)."""

    rate: float | None
    cpu_per_m: float | None
    rss_mb: float | None
    note: str = ""


def summarize(results: list[Result]) -> Summary:
    if not results:
        return Summary(None, None, None, "—")
    wrong = [r for r in results if r.wrong]
    if wrong:
        return Summary(None, None, None, f"WRONG ({wrong[0].wrong})")
    return Summary(statistics.median(r.rate for r in results),
                   statistics.median(r.cpu_per_m for r in results),
                   max(r.rss_mb for r in results))


def cell(s: Summary) -> str:
    if s.rate is None:
        return s.note[:40]
    rate = f"{s.rate / 1000:.1f}k/s" if s.rate < 100_000 else f"{s.rate / 1000:.0f}k/s"
    return f"{rate}, {s.cpu_per_m:.1f} CPU s, {s.rss_mb:.0f} MB"


def criteria(summaries: dict[tuple[str, str], Summary], workloads: list[str],
             memory: tuple[float, float] | None) -> list[str]:
    """The issue's "Done when" criteria as ratios from this run, each with PASS/FAIL."""
    lines = []

    def ratio(w: str, a: str, b: str) -> tuple[float, float] | None:
        """(records/s of a / of b, CPU s per million of a / of b), or None (a line says why)."""
        x, y = summaries.get((a, w)), summaries.get((b, w))
        if x is None or y is None or x.rate is None or y.rate is None:
            why = "; ".join(f"{c}: {s.note if s else 'not run'}" for c, s in ((a, x), (b, y))
                            if s is None or s.rate is None)
            lines.append(f"  {w}: {a} vs {b}: n/a ({why})")
            return None
        assert x.cpu_per_m is not None and y.cpu_per_m is not None
        return x.rate / y.rate, x.cpu_per_m / y.cpu_per_m

    def line(w: str, text: str, value: float, bound: float, higher: bool = True) -> None:
        ok = value >= bound if higher else value <= bound
        lines.append(f"  {w}: {text} = {value:.2f} ({'>=' if higher else '<='} {bound}): "
                     f"{'PASS' if ok else 'FAIL'}")

    for w in workloads:
        if w == "W1":
            if r := ratio(w, "sql-alos", "kstreams"):
                line(w, "streamsql (Kafka) / Kafka Streams, records/s", r[0], 1.0)
            if r := ratio(w, "sql-alos", "raw"):
                line(w, "streamsql (Kafka) / raw aiokafka loop, records/s", r[0], 0.5)
        else:
            if r := ratio(w, "sql-alos", "kstreams"):
                line(w, "streamsql (Kafka) / Kafka Streams, CPU s per million", r[1], 1.0, False)
            if r := ratio(w, "sql-alos", "quix"):
                line(w, "streamsql (Kafka) / Quix Streams, records/s", r[0], 2.0)
        if r := ratio(w, "sql-eos", "sql-alos"):
            line(w, "exactly_once_v2 / at_least_once, records/s", r[0], 0.9)
        if r := ratio(w, "embedded", "sql-alos"):
            line(w, "embedded / Kafka, records/s", r[0], 1.0)
    if memory is not None:
        small, big = memory
        line("W2", f"streamsql peak RSS, 1M keys / 100k keys ({big:.0f} / {small:.0f} MB)",
             big / small, 1.25, False)
    return lines


def report(b: Bench, results: list[Result], contenders: list[str], workloads: list[str],
           rounds: int, started: str, preload_s: float, skipped: dict[str, str],
           memory: tuple[float, float] | None) -> str:
    summaries = {(c, w): summarize([r for r in results if r.contender == c and r.workload == w])
                 for c in contenders for w in workloads}
    out = [f"streamsql versus its peers: {b.records:,} JSON records, {b.keys:,} keys, "
           f"{PARTITIONS} partitions, 1 broker (KRaft, 127.0.0.1), {rounds} interleaved round(s)",
           f"machine: {os.cpu_count()} cores, {platform.python_implementation()} "
           f"{platform.python_version()}; load average (1/5/15 min) at start {started}, at end "
           f"{loadavg()}; pre-load {preload_s:.1f}s",
           "cells: median records/s, median CPU seconds per million records (the contender's "
           "process), peak RSS", ""]
    cols = [c for c in contenders]
    widths = [31] + [max(30, len(HEADINGS[c])) for c in cols]
    out.append(" | ".join(["workload".ljust(widths[0])]
                          + [HEADINGS[c].ljust(w) for c, w in zip(cols, widths[1:])]))
    out.append("-+-".join("-" * w for w in widths))
    for w in workloads:
        out.append(" | ".join([TITLES[w].ljust(widths[0])]
                              + [cell(summaries[(c, w)]).ljust(x) for c, x in zip(cols, widths[1:])]))
    out += ["", "every run (records/s, CPU s per million, load at its end):"]
    for r in results:
        fig = f"WRONG: {r.wrong}" if r.wrong else f"{r.rate:,.0f}/s, {r.cpu_per_m:.1f} CPU s/M, {r.rss_mb:.0f} MB"
        out.append(f"  {r.workload} {r.contender:<13} {fig} (load {r.load:.2f})")
    for c, why in skipped.items():
        out.append(f"  {c}: skipped: {why}")
    out += ["", "Done when (ratios from this run):", *criteria(summaries, workloads, memory)]
    return "\n".join(out) + "\n"


async def memory_run(b: Bench, keys: int) -> Result:
    """streamsql (Kafka, at_least_once) on W2 over the same number of records with ``keys``
    keys, in a topic of its own: the run, whose peak RSS is the figure."""
    mem = Bench(b.bootstrap, b.base_dir, b.records, keys, b.base, source=f"{SOURCE}_k{keys}")
    await preload(mem, table=False)
    mem.want["W2"] = expected("W2", mem.records, keys)
    return await run_one(mem, "sql-alos", "W2", f"mem{keys}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1].endswith("-worker"):
        worker_main(sys.argv[1:])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workloads", default="W1,W2,W3")
    ap.add_argument("--contenders", default="sql-alos,sql-eos,embedded,raw,kstreams,kstreams-eos,quix")
    ap.add_argument("--memory", action="store_true",
                    help="also run streamsql W2 with 100k and with 1M keys: is its peak RSS flat?")
    ap.add_argument("--skip-build", action="store_true",
                    help="(for make bench-versus) do not build the Kafka Streams app here")
    ap.add_argument("--jvm-opts", default="-XX:TieredStopAtLevel=4 -Xmx1g",
                    help="broker JVM options after the defaults (full JIT, more heap)")
    args = ap.parse_args()
    workloads = [w.strip().upper() for w in args.workloads.split(",") if w.strip()]
    contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]
    for c in contenders:
        if c not in CONTENDERS:
            ap.error(f"unknown contender {c}: one of {', '.join(CONTENDERS)}")
    if not args.skip_build and any(c.startswith("kstreams") for c in contenders):
        build_kstreams()

    from streamsql.testing.kafka import DEFAULT_JVM_OPTIONS, KafkaCluster, kafka_unavailable_reason

    reason = kafka_unavailable_reason()
    if reason:
        sys.stdout.write(f"bench_versus: skipped: {reason}\n")
        return
    skipped = {c: why for c in contenders if (why := available(c))}
    contenders = [c for c in contenders if c not in skipped]
    started = loadavg()
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory(prefix="bench-versus-") as tmp:
        jvm = (*DEFAULT_JVM_OPTIONS, *args.jvm_opts.split())
        cluster = KafkaCluster(Path(tmp) / "kafka", brokers=1, jvm_options=jvm,
                               die_with_parent=True)
        cluster.start()
        try:
            b = Bench(cluster.bootstrap_servers, Path(tmp), args.records, args.keys,
                      time_base(args.records))
            preload_s = asyncio.run(preload(b))
            sys.stderr.write(f"pre-loaded {args.records:,} records + {args.keys:,} table rows in "
                             f"{preload_s:.1f}s (load {loadavg()})\n")
            for w in workloads:
                b.want[w] = expected(w, args.records, args.keys)
            memory = None
            if args.memory:  # first: a run cut short still has it
                runs = [asyncio.run(memory_run(b, keys)) for keys in (100_000, 1_000_000)]
                for keys, r in zip((100_000, 1_000_000), runs):
                    fig = f"WRONG: {r.wrong}" if r.wrong else f"{r.rate:,.0f}/s, peak RSS {r.rss_mb:.0f} MB"
                    sys.stderr.write(f"  memory: W2 sql-alos, {keys:,} keys: {fig} (load {loadavg()})\n")
                if not any(r.wrong for r in runs):
                    memory = (runs[0].rss_mb, runs[1].rss_mb)
            results: list[Result] = []
            try:
                for rnd in range(args.rounds):
                    order = contenders[rnd % len(contenders):] + contenders[:rnd % len(contenders)]
                    for w in workloads:
                        for c in order:
                            if w not in WORKLOADS_OF.get(c, (w,)):
                                continue
                            r = asyncio.run(run_one(b, c, w, f"r{rnd}"))
                            results.append(r)
                            fig = (f"WRONG: {r.wrong}" if r.wrong else
                                   f"{r.rate:,.0f}/s, {r.cpu_per_m:.1f} CPU s/M, {r.rss_mb:.0f} MB")
                            sys.stderr.write(f"  round {rnd + 1} {w} {c}: {fig} (load {loadavg()})\n")
            except KeyboardInterrupt:  # Ctrl-C: report the runs so far
                sys.stderr.write("interrupted: the table covers the runs finished so far\n")
        finally:
            cluster.stop()
    sys.stdout.write(report(b, results, contenders, workloads, args.rounds, started, preload_s,
                            skipped, memory))


def build_kstreams() -> None:
    """Fetch Kafka Streams' jars (Maven) and compile the app (javac), when not done yet."""
    if (KSTREAMS / "classes" / "streamsql" / "bench" / "VersusApp.class").exists():
        return
    try:
        if not (KSTREAMS / "lib").is_dir():
            subprocess.run(["mvn", "-B", "-q", "-f", str(KSTREAMS / "pom.xml"),
                            "dependency:copy-dependencies", "-DoutputDirectory=lib"], check=True)
        subprocess.run(["javac", "-cp", f"{KSTREAMS / 'lib'}/*", "-d", str(KSTREAMS / "classes"),
                        *map(str, (KSTREAMS / "src/main/java/streamsql/bench").glob("*.java"))],
                       check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        sys.stderr.write(f"bench_versus: cannot build bench/kstreams ({e}): Kafka Streams skipped\n")


if __name__ == "__main__":
    main()

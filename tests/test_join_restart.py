"""Kill -9 in the middle of a stream-stream join, start again: no match lost, none made twice.

A driver process (this file, run as a script) opens an engine on a data directory, declares
two streams and ``CREATE STREAM j AS SELECT ... FROM l JOIN r WITHIN 1 SECOND ON l.id = r.id``
and produces records to both streams in alternating batches while the join consumes them. The
test kills it with SIGKILL at random moments, restarts it each time, lets the last run finish
and compares the sink's records, as a multiset, with a run that was never killed and with the
pairs the data says must join. A second test checks that each kind of join keeps its state in
RocksDB across a clean restart (service mode, on-disk log).
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

N = 10_000  # records per side
KEYS = 13
BATCH = 30
PACE = 0.002  # seconds between batches: the join is busy most of the time
WITHIN_MS = 1000
KILLS = 6
SETUP = [
    "CREATE STREAM IF NOT EXISTS l (id STRING KEY, n BIGINT) "
    "WITH (kafka_topic='l', value_format='JSON', partitions=2);",
    "CREATE STREAM IF NOT EXISTS r (id STRING KEY, n BIGINT) "
    "WITH (kafka_topic='r', value_format='JSON', partitions=2);",
    "CREATE STREAM IF NOT EXISTS j AS SELECT l.id AS id, l.n AS ln, r.n AS rn FROM l "
    "JOIN r WITHIN 1 SECOND ON l.id = r.id EMIT CHANGES;",
]


def _record(side: str, i: int) -> tuple[bytes, bytes, int]:
    key = f"k{i % KEYS}".encode()
    ts = 1_000_000 + i * 40 + (17 if side == "r" else 0)
    return key, json.dumps({"N": i}).encode(), ts


def _expected_pairs() -> Counter:
    """(key, left n, right n) of every pair of records of one key within the window."""
    pairs: Counter = Counter()
    reach = WITHIN_MS // 40 + 1
    for i in range(N):
        kl, _, tl = _record("l", i)
        for j in range(max(i - reach, 0), min(i + reach + 1, N)):
            kr, _, tr = _record("r", j)
            if kl == kr and abs(tl - tr) <= WITHIN_MS:
                pairs[(kl.decode(), i, j)] += 1
    return pairs


# ------------------------------------------------------------------------------ the driver
async def _present(log, topic: str) -> set[int]:
    present: set[int] = set()
    for p, end in enumerate(await log.end_offsets(topic)):
        off = 0
        while off < end:
            b = await log.fetch(topic, p, off, 5000)
            present.update(json.loads(v)["N"] for v in b.values)
            off = b.offsets[-1] + 1
    return present


async def _sink(log) -> list[list]:
    rows = []
    for p, end in enumerate(await log.end_offsets("J")):
        off = 0
        while off < end:
            b = await log.fetch("J", p, off, 5000)
            for k, v in zip(b.keys, b.values):
                value = json.loads(v)
                rows.append([k.decode(), value["LN"], value["RN"]])
            off = b.offsets[-1] + 1
    return rows


async def _drive(data_dir: Path, mode: str, expected: int) -> None:
    from streamsql.engine import Engine
    from streamsql.runtime.log.base import ProducerRecord
    from streamsql.runtime.log.embedded import EmbeddedLog

    log = EmbeddedLog(data_dir)
    engine = Engine(log, {"auto.offset.reset": "earliest"})
    await engine.start()
    for sql in SETUP:
        await engine.execute(sql)
    print("STARTED", flush=True)
    # Records already in a topic (a killed produce may have written only some partitions of a
    # batch): write the missing ones, in order, so each partition gets its records in the
    # same order as an uninterrupted run.
    todo = {}
    for side in ("l", "r"):
        present = await _present(log, side)
        todo[side] = [i for i in range(N) if i not in present]
    for start in range(0, N, BATCH):
        for side in ("l", "r"):
            recs = [ProducerRecord(*_record(side, i)) for i in todo[side][start:start + BATCH]]
            if recs:
                await log.produce(side, recs)
        if mode == "run":
            await asyncio.sleep(PACE)  # the join consumes meanwhile; kills land mid-input
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline and sum(await log.end_offsets("J")) < expected:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # anything written twice would show up by now
    print("RESULT " + json.dumps(await _sink(log)), flush=True)
    print("DONE", flush=True)
    await engine.close()
    await log.close()


# ------------------------------------------------------------------------------- the test
def _start(data_dir: Path, mode: str, expected: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # stderr to a file: a pipe nobody reads would block the driver once full.
    errors = open(data_dir.parent / f"{data_dir.name}.stderr", "a")  # noqa: SIM115 - the child's
    try:
        return subprocess.Popen([sys.executable, __file__, str(data_dir), mode, str(expected)],
                                stdout=subprocess.PIPE, stderr=errors, text=True, env=env)
    finally:
        errors.close()


def _wait_for(proc: subprocess.Popen, word: str, timeout: float = 60) -> list[str]:
    lines = []
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if line.startswith(word):
            return lines
    proc.kill()
    raise AssertionError(f"driver did not say {word}: {[x[:200] for x in lines]}")


def _run_to_end(data_dir: Path, mode: str, expected: int) -> Counter:
    proc = _start(data_dir, mode, expected)
    lines = _wait_for(proc, "DONE")
    assert proc.wait(30) == 0, f"driver failed, see {data_dir}.stderr"
    [line] = [x for x in lines if x.startswith("RESULT ")]
    return Counter(tuple(x) for x in json.loads(line[len("RESULT "):]))


def _output_count(data_dir: Path) -> int:
    """Records in the join's output (committed or not)."""
    from streamsql.runtime.log.embedded import EmbeddedLog

    async def count() -> int:
        log = EmbeddedLog(data_dir)
        try:
            return sum(await log.end_offsets("J")) if await log.describe_topic("J") else 0
        finally:
            await log.close()
    return asyncio.run(count())


def test_kill_9_during_stream_stream_join_loses_and_repeats_no_match(tmp_path: Path) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    pairs = _expected_pairs()
    total = sum(pairs.values())
    assert total > 2 * N  # each record has several partners: the join has work to lose

    expected = _run_to_end(tmp_path / "reference", "fast", total)
    assert expected == pairs

    killed = tmp_path / "killed"
    kills_mid_input = 0
    for _ in range(KILLS):
        proc = _start(killed, "run", total)
        _wait_for(proc, "STARTED")
        time.sleep(rng.uniform(0.05, 0.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        kills_mid_input += _output_count(killed) < total
    got = _run_to_end(killed, "run", total)
    # The test means something only if the process died while there was work left.
    assert kills_mid_input >= 2, f"seed {seed}: only {kills_mid_input} kills before the join was done"
    missing = expected - got
    twice = got - expected
    assert not missing and not twice, \
        f"seed {seed}: {sum(missing.values())} matches lost, {sum(twice.values())} extra: " \
        f"{list(missing)[:5]} {list(twice)[:5]}"


# -------------------------------------------------------- each kind of join, across a restart
# Scenarios: statements, then steps (produce records to a topic, or restart the engine); the
# join's output, in order, must be what the whole input gives, as if the engine had not stopped.
SCENARIOS = {
    "stream-table": (
        ["CREATE TABLE t (id STRING PRIMARY KEY, name STRING) WITH (kafka_topic='t', value_format='JSON', partitions=1);",
         "CREATE STREAM s (id STRING KEY, x BIGINT) WITH (kafka_topic='s', value_format='JSON', partitions=1);",
         "CREATE STREAM j AS SELECT s.id AS id, x, name FROM s LEFT JOIN t ON s.id = t.id;"],
        [("t", [("a", {"NAME": "A"}, 1), ("b", {"NAME": "B"}, 2), ("c", {"NAME": "C"}, 3), ("c", None, 4)]),
         "restart",
         ("s", [("a", {"X": 1}, 10), ("b", {"X": 2}, 11), ("c", {"X": 3}, 12)])],
        [("a", {"X": 1, "NAME": "A"}), ("b", {"X": 2, "NAME": "B"}), ("c", {"X": 3, "NAME": None})]),
    "table-table": (
        ["CREATE TABLE l (id STRING PRIMARY KEY, v BIGINT) WITH (kafka_topic='l', value_format='JSON', partitions=1);",
         "CREATE TABLE r (id STRING PRIMARY KEY, w BIGINT) WITH (kafka_topic='r', value_format='JSON', partitions=1);",
         "CREATE TABLE j AS SELECT l.id AS id, v, w FROM l JOIN r ON l.id = r.id;"],
        [("l", [("a", {"V": 1}, 1), ("b", {"V": 2}, 2)]),
         ("r", [("a", {"W": 10}, 3)]),
         "restart",
         ("r", [("b", {"W": 20}, 4)]),
         ("l", [("a", None, 5)])],
        [("a", {"V": 1, "W": 10}), ("b", {"V": 2, "W": 20}), ("a", None)]),
    "foreign-key": (
        ["CREATE TABLE c (cid STRING PRIMARY KEY, name STRING) WITH (kafka_topic='c', value_format='JSON', partitions=2);",
         "CREATE TABLE o (oid STRING PRIMARY KEY, cid STRING, amount BIGINT) WITH (kafka_topic='o', value_format='JSON', partitions=2);",
         "CREATE TABLE j AS SELECT oid, amount, name FROM o JOIN c ON o.cid = c.cid;"],
        [("c", [("c1", {"NAME": "Ann"}, 1), ("c2", {"NAME": "Cy"}, 1)]),
         ("o", [("o1", {"CID": "c1", "AMOUNT": 5}, 2), ("o2", {"CID": "c1", "AMOUNT": 7}, 3),
                ("o3", {"CID": "c2", "AMOUNT": 9}, 3)]),
         "restart",
         ("c", [("c1", {"NAME": "Bob"}, 4)]),
         ("o", [("o3", {"CID": "c1", "AMOUNT": 9}, 5)]),
         "restart",
         ("c", [("c2", {"NAME": "Dee"}, 6), ("c1", None, 7)])],
        [("o1", {"AMOUNT": 5, "NAME": "Ann"}), ("o2", {"AMOUNT": 7, "NAME": "Ann"}),
         ("o3", {"AMOUNT": 9, "NAME": "Cy"}),
         ("o1", {"AMOUNT": 5, "NAME": "Bob"}), ("o2", {"AMOUNT": 7, "NAME": "Bob"}),
         ("o3", {"AMOUNT": 9, "NAME": "Bob"}),
         ("o1", None), ("o2", None), ("o3", None)]),
    "group by over table-table": (
        ["CREATE TABLE l (id STRING PRIMARY KEY, g STRING) WITH (kafka_topic='l', value_format='JSON', partitions=1);",
         "CREATE TABLE r (id STRING PRIMARY KEY, w BIGINT) WITH (kafka_topic='r', value_format='JSON', partitions=1);",
         "CREATE TABLE j AS SELECT l.g, SUM(r.w) AS s FROM l LEFT JOIN r ON l.id = r.id GROUP BY l.g;"],
        [("l", [("a", {"G": "g1"}, 1), ("b", {"G": "g1"}, 2)]),
         ("r", [("a", {"W": 10}, 3)]),
         "restart",
         ("r", [("b", {"W": 20}, 4)]),
         "restart",
         # a moves to g2: its contribution leaves g1 (the group-by's and aggregate's state).
         ("l", [("a", {"G": "g2"}, 5)])],
        [("g1", {"S": 0}), ("g1", {"S": 0}), ("g1", {"S": 10}), ("g1", {"S": 30}),
         ("g1", {"S": 20}), ("g2", {"S": 10})]),
    "stream-stream outer with grace": (
        ["CREATE STREAM l (id STRING KEY, v BIGINT) WITH (kafka_topic='l', value_format='JSON', partitions=1);",
         "CREATE STREAM r (id STRING KEY, w BIGINT) WITH (kafka_topic='r', value_format='JSON', partitions=1);",
         "CREATE STREAM j AS SELECT l.id AS id, v, w FROM l LEFT JOIN r "
         "WITHIN 1 SECOND GRACE PERIOD 500 MILLISECONDS ON l.id = r.id;"],
        [("l", [("a", {"V": 1}, 1000), ("b", {"V": 2}, 1000)]),
         "restart",
         ("r", [("a", {"W": 10}, 1500)]),
         "restart",
         # Stream time passes b's window end + grace: b is emitted unmatched, once.
         ("l", [("x", {"V": 3}, 2600)]),
         "restart",
         ("l", [("y", {"V": 4}, 2700)])],
        [("a", {"V": 1, "W": 10}), ("b", {"V": 2, "W": None})]),
}


async def _settled(engine, log, timeout: float = 20) -> None:
    """Wait until every stage of every query has consumed (and committed) all its input."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        behind = False
        for runners in engine.runners.values():
            for runner in runners:
                for topic in runner.topics:
                    committed = await log.committed(runner.group, topic)
                    ends = await log.end_offsets(topic)
                    behind |= any(committed.get(p, 0) < end for p, end in enumerate(ends))
        if not behind:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the queries did not catch up")


async def _scenario(data_dir: Path, name: str) -> list:
    from streamsql.engine import Engine
    from streamsql.runtime.log.base import ProducerRecord
    from streamsql.runtime.log.embedded import EmbeddedLog

    setup, steps, _ = SCENARIOS[name]
    # Every update forwarded (no record cache, as ksqlDB's tests run): the scenarios list
    # every record their sink gets.
    config = {"auto.offset.reset": "earliest", "cache.max.bytes.buffering": 0}
    log = EmbeddedLog(data_dir)
    engine = Engine(log, config)
    await engine.start()
    for sql in setup:
        await engine.execute(sql)
    restarts = 0
    for step in steps:
        if step == "restart":
            await engine.close()
            await log.close()
            log = EmbeddedLog(data_dir)
            engine = Engine(log, config)
            await engine.start()
            restarts += 1
            continue
        topic, records = step
        await log.produce(topic, [ProducerRecord(k.encode(), json.dumps(v).encode() if v is not None else None, ts)
                                  for k, v, ts in records])
        await _settled(engine, log)
    # Each join step keeps its state in RocksDB: the stages' state directories exist.
    state = data_dir / "state"
    assert any("join" in p.name for p in state.glob("*/*")), list(state.glob("*/*"))
    out = []
    for p, end in enumerate(await log.end_offsets("J")):
        b = await log.fetch("J", p, 0, end) if end else None
        for k, v in zip(b.keys if b else (), b.values if b else ()):
            out.append((k.decode(), json.loads(v) if v is not None else None))
    await engine.close()
    await log.close()
    assert restarts
    return out


def test_each_kind_of_join_keeps_its_state_across_restarts(tmp_path: Path) -> None:
    for name, (_, _, expected) in SCENARIOS.items():
        got = asyncio.run(_scenario(tmp_path / name.replace(" ", "-"), name))
        if name == "foreign-key":
            # Two partitions in the sink: order is per key.
            got.sort(key=lambda r: r[0])
            expected = sorted(expected, key=lambda r: r[0])
        assert got == expected, name


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    asyncio.run(_drive(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])))

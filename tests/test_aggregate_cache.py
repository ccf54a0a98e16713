"""The aggregate stage's record cache on RocksDB (issue 16): one multi-get per batch and one
write per key per flush, compact binary state, ksqlDB's ``cache.max.bytes.buffering`` and
``commit.interval.ms`` semantics for emission (0: every update; else, by default 10 MB, each
key's latest result once per commit interval or when the cache is full), a cache bounded by
its size, and state that is exact after kill -9 and after a restore from the changelog with
the cache on."""
from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from streamsql.engine import Engine
from streamsql.functions.aggregates import _AvgDouble, _CountRows, _SumDouble, _SumInt
from streamsql.runtime.aggregate import AggregateStage
from streamsql.runtime.log.base import ProducerRecord
from streamsql.runtime.log.embedded import EmbeddedLog
from streamsql.runtime.task import AggregateStore, _acc_dumps

STREAM = ("CREATE STREAM pv (user_id STRING KEY, amount BIGINT) "
          "WITH (kafka_topic='pv', value_format='JSON', partitions=1);")
TABLE = "CREATE TABLE totals AS SELECT user_id, COUNT(*) AS n, SUM(amount) AS s FROM pv GROUP BY user_id;"
WINDOWED = ("CREATE TABLE per_second AS SELECT user_id, COUNT(*) AS n FROM pv "
            "WINDOW TUMBLING (SIZE 1 SECOND) GROUP BY user_id;")
HOPPING = ("CREATE TABLE hopping AS SELECT user_id, COUNT(*) AS n, SUM(amount) AS s FROM pv "
           "WINDOW HOPPING (SIZE 2 SECONDS, ADVANCE BY 1 SECOND) GROUP BY user_id;")


# ------------------------------------------------------------------------- the state codec
def test_binary_state_round_trips_and_json_state_is_still_read() -> None:
    store = AggregateStore("x")
    store.set_aggregators([_CountRows(), _SumInt(-2**63, 2**63 - 1, lambda v: v), _AvgDouble(),
                           _SumDouble()])
    data = store.encode([3, -7, (1.5, 2), float("inf")], 1_700_000_000_000, True)
    assert data[0] == 1 and len(data) < 60
    assert store.decode(data) == [[3, -7, (1.5, 2), float("inf")], 1_700_000_000_000, True]
    # State written before the binary form (and by aggregators without one) is JSON.
    old = _acc_dumps(([3, -7, [1.5, 2], "Infinity"], 5, False))
    assert store.decode(old) == [[3, -7, (1.5, 2), float("inf")], 5, False]
    # A value the layout cannot hold is kept as before (JSON, else pickle), and read back.
    big = store.encode([2**70, 0, (0.0, 0), 0.0], 5, False)
    assert big[0] != 1 and store.decode(big)[0][0] == 2**70
    assert store.decode(store.encode([1.5, 0, (0.0, 0), 0.0], 5, False))[0][0] == 1.5


# ---------------------------------------------------------------------------- engine runs
async def _engine(path: Path, props: dict[str, Any] | None = None) -> tuple[Engine, EmbeddedLog]:
    log = EmbeddedLog(path)
    engine = Engine(log, {"auto.offset.reset": "earliest", **(props or {})})
    await engine.start()
    return engine, log


async def _produce(log: EmbeddedLog, rows: list[tuple[str, int, int]]) -> None:
    await log.produce("pv", [ProducerRecord(k.encode(), json.dumps({"AMOUNT": a}).encode(), ts)
                             for k, a, ts in rows])


async def _wait_processed(engine: Engine, n: int, timeout: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if all(r[-1].processed >= n for r in engine.runners.values()):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the queries did not process the input")


async def _pull(engine: Engine, sql: str, rows: int, timeout: float = 10,
                counted: int | None = None, col: int = 1) -> list[tuple]:
    """A pull query's rows, once it has ``rows`` of them (and, given ``counted``, their
    column ``col`` sums to it): its table is read committed, and a batch counted as
    processed may not have committed yet."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        [r] = await engine.execute(sql)
        done = len(r.rows) >= rows and (counted is None or sum(x[col] for x in r.rows) == counted)
        if done or asyncio.get_running_loop().time() > deadline:
            return sorted(r.rows)
        await asyncio.sleep(0.02)


async def _updates(log: EmbeddedLog, topic: str) -> list[tuple[bytes, Any]]:
    out = []
    for p, end in enumerate(await log.end_offsets(topic)):
        off = 0
        while off < end:
            b = await log.fetch(topic, p, off, 5000)
            out += [(k, json.loads(v) if v is not None else None) for k, v in zip(b.keys, b.values)]
            off = b.offsets[-1] + 1
    return out


def _stage(engine: Engine) -> AggregateStage:
    [runners] = engine.runners.values()
    stage = runners[-1].stage
    return getattr(stage, "inner", stage)


ROWS = [(f"u{i % 10}", i, 1000 + i) for i in range(200)]


@pytest.mark.parametrize("setting, every_update", [(None, False), (0, True), (10_000_000, False)])
def test_emission_follows_cache_max_bytes_buffering(tmp_path: Path, setting: int | None,
                                                    every_update: bool) -> None:
    async def main() -> None:
        props = {} if setting is None else {"cache.max.bytes.buffering": setting}
        engine, log = await _engine(tmp_path, props)
        await engine.execute(STREAM)
        # Every record is there before the query starts: its first batch holds them all.
        await _produce(log, ROWS)
        await engine.execute(TABLE)
        await _wait_processed(engine, len(ROWS))
        rows = await _pull(engine, "SELECT * FROM totals;", 10, counted=len(ROWS))
        updates = await _updates(log, "TOTALS")
        stage = _stage(engine)
        await engine.close()
        await log.close()
        assert stage._batched
        if every_update:
            assert len(updates) == len(ROWS)
            assert [u[1]["N"] for u in updates if u[0] == b"u3"] == list(range(1, 21))
        else:
            # One batch: each key's latest result only, as a cache forwards at its flush.
            assert sorted(k for k, _ in updates) == sorted(f"u{i}".encode() for i in range(10))
        want = sorted((f"u{k}", 20, sum(i for i in range(200) if i % 10 == k)) for k in range(10))
        assert rows == want
        latest = {k: v for k, v in updates}
        assert sorted((k.decode(), v["N"], v["S"]) for k, v in latest.items()) == want
    asyncio.run(main())


async def _wait_updates(log: EmbeddedLog, topic: str, want: int, timeout: float = 30
                        ) -> list[tuple[bytes, Any]]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        updates = await _updates(log, topic)
        if len(updates) >= want or asyncio.get_running_loop().time() > deadline:
            return updates
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("setting", [None, 0])
def test_a_burst_within_a_commit_interval_is_one_update(tmp_path: Path, setting: int | None) -> None:
    """ksqlDB's record cache: updates of a key that arrive in separate polls within one
    commit interval reach the table's topic (and pull queries) as one record holding the
    final values, when the interval ends; with ``cache.max.bytes.buffering=0`` every update."""
    interval_ms = 3000
    bursts, per_burst = 5, 4

    async def main() -> None:
        props: dict[str, Any] = {"commit.interval.ms": interval_ms}
        if setting is not None:
            props["cache.max.bytes.buffering"] = setting
        engine, log = await _engine(tmp_path, props)
        await engine.execute(STREAM + TABLE)
        loop = asyncio.get_running_loop()
        started = loop.time()
        for b in range(bursts):  # (each burst its own poll)
            await _produce(log, [(k, b * per_burst + i, 1000 + b) for k in ("a", "b")
                                 for i in range(per_burst)])
            await _wait_processed(engine, (b + 1) * 2 * per_burst)
        produced_in = loop.time() - started
        held = await _updates(log, "TOTALS")
        want = bursts * per_burst * 2 if setting == 0 else 2
        updates = await _wait_updates(log, "TOTALS", want)
        rows = await _pull(engine, "SELECT * FROM totals;", 2, counted=bursts * per_burst * 2)
        await asyncio.sleep(interval_ms / 1000 + 1)  # (nothing more comes: the input is idle)
        again = await _updates(log, "TOTALS")
        await engine.close()
        await log.close()
        total = sum(range(bursts * per_burst))
        assert rows == [("a", bursts * per_burst, total), ("b", bursts * per_burst, total)]
        assert again == updates
        if setting == 0:
            assert [u[1]["N"] for u in updates if u[0] == b"a"] == list(range(1, bursts * per_burst + 1))
            return
        assert produced_in < interval_ms / 1000, "the bursts took longer than the commit interval"
        assert held == []  # (before the interval was over: nothing forwarded yet)
        assert sorted((k, v["N"], v["S"]) for k, v in updates) == [
            (b"a", bursts * per_burst, total), (b"b", bursts * per_burst, total)]
    asyncio.run(main())


def test_cache_is_bounded_by_its_size_and_state_is_right_past_it(tmp_path: Path) -> None:
    limit = 20_000
    keys = 2_000

    async def main() -> None:
        engine, log = await _engine(tmp_path, {"cache.max.bytes.buffering": limit})
        await engine.execute(STREAM + TABLE)
        stage = _stage(engine)
        sizes = []
        for round_ in range(3):
            await _produce(log, [(f"k{i:05d}", 1, round_ * keys + i) for i in range(keys)])
            await _wait_processed(engine, (round_ + 1) * keys)
            sizes.append((stage.cache_bytes, sum(len(c.cache) for c in stage._contexts.values())))
        await _pull(engine, "SELECT * FROM totals;", keys, counted=3 * keys)
        [r] = await engine.execute("SELECT user_id, n, s FROM totals WHERE user_id = 'k00007';")
        await engine.close()
        await log.close()
        assert r.rows == [("k00007", 3, 3)]
        for counted, entries in sizes:
            assert counted <= limit
            assert 0 < entries < keys // 10  # (each entry counts > 160 bytes)
    asyncio.run(main())


def test_state_restored_from_the_changelog_equals_the_cached_run(tmp_path: Path) -> None:
    async def main() -> None:
        engine, log = await _engine(tmp_path)
        await engine.execute(STREAM + TABLE + WINDOWED + HOPPING)
        await _produce(log, ROWS)
        hop = "SELECT * FROM hopping;"  # (user_id, WINDOWSTART, WINDOWEND, n, s)
        assert await _pull(engine, hop, 20, counted=2 * len(ROWS), col=3) == sorted(
            (f"u{k}", start, start + 2000, 20, sum(i for i in range(200) if i % 10 == k))
            for k in range(10) for start in (0, 1000))
        await _wait_processed(engine, len(ROWS))
        before = [await _pull(engine, "SELECT * FROM totals;", 10, counted=len(ROWS)),
                  await _pull(engine, "SELECT user_id, n FROM per_second;", 20, counted=len(ROWS))]
        await engine.close()
        await log.close()
        # No local state: every store comes back from its changelog (binary states).
        shutil.rmtree(tmp_path / "state")
        engine, log = await _engine(tmp_path)
        await _produce(log, [("u1", 1000, 5000)])
        after = [await _pull(engine, "SELECT * FROM totals;", 10, counted=len(ROWS) + 1),
                 await _pull(engine, "SELECT user_id, n FROM per_second;", 21, counted=len(ROWS) + 1)]
        hopped = await _pull(engine, hop, 22, counted=2 * len(ROWS) + 2, col=3)
        await engine.close()
        await log.close()
        want_totals = [r if r[0] != "u1" else (r[0], r[1] + 1, r[2] + 1000) for r in before[0]]
        assert after[0] == want_totals
        assert after[1] == sorted(before[1] + [("u1", 1)])
        assert [r for r in hopped if r[1] >= 4000] == [("u1", 4000, 6000, 1, 1000),
                                                       ("u1", 5000, 7000, 1, 1000)]
    asyncio.run(main())


# --------------------------------------------------------------------------------- kill -9
N = 2000
KEYS = 23


async def _drive(data_dir: Path, mode: str) -> None:
    """Run as a script: the tables over a stream fed in small batches (``run``) or at once
    (``fast``), with the cache forwarding latest results; prints the final state."""
    engine, log = await _engine(data_dir, {"cache.max.bytes.buffering": 10_000_000})
    for sql in ("CREATE STREAM IF NOT EXISTS pv (user_id STRING KEY, id BIGINT, amount BIGINT) "
                "WITH (kafka_topic='pv', value_format='JSON', partitions=2);",
                "CREATE TABLE IF NOT EXISTS totals AS SELECT user_id, COUNT(*) AS n, "
                "SUM(amount) AS s, AVG(amount) AS a FROM pv GROUP BY user_id;",
                "CREATE TABLE IF NOT EXISTS per_second AS SELECT user_id, COUNT(*) AS n FROM pv "
                "WINDOW TUMBLING (SIZE 1 SECOND) GROUP BY user_id;"):
        await engine.execute(sql)
    print("STARTED", flush=True)
    present: set[int] = set()
    for p, end in enumerate(await log.end_offsets("pv")):
        off = 0
        while off < end:
            b = await log.fetch("pv", p, off, 5000)
            present.update(json.loads(v)["ID"] for v in b.values)
            off = b.offsets[-1] + 1
    todo = [i for i in range(N) if i not in present]
    step = 25 if mode == "run" else N
    for start in range(0, len(todo), step):
        await log.produce("pv", [ProducerRecord(f"user-{i % KEYS}".encode(),
                                                json.dumps({"ID": i, "AMOUNT": i % 13}).encode(),
                                                1_000_000 + i * 3) for i in todo[start:start + step]])
        if mode == "run":
            await asyncio.sleep(0.03)
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        [r] = await engine.execute("SELECT n FROM totals;")
        [w] = await engine.execute("SELECT n FROM per_second;")
        if sum(x[0] for x in r.rows) >= N and sum(x[0] for x in w.rows) >= N:
            break
        await asyncio.sleep(0.05)
    result = {}
    for name, q in (("totals", "SELECT * FROM totals;"),
                    ("windows", "SELECT user_id, WINDOWSTART, n FROM per_second;")):
        [r] = await engine.execute(q)
        result[name] = sorted(list(x) for x in r.rows)
    for topic in ("TOTALS", "PER_SECOND"):
        result[topic] = sorted([k.hex(), v] for k, v in {k: v for k, v in await _updates(log, topic)}.items())
    print("RESULT " + json.dumps(result), flush=True)
    await engine.close()
    await log.close()


def _start(data_dir: Path, mode: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, str(data_dir), mode], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _read_until(proc: subprocess.Popen, word: str, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith(word):
            return line
    proc.kill()
    raise AssertionError(f"driver did not say {word}: {proc.stderr.read() if proc.stderr else ''}")


def _run_to_end(data_dir: Path, mode: str) -> dict:
    proc = _start(data_dir, mode)
    line = _read_until(proc, "RESULT ")
    assert proc.wait(30) == 0, proc.stderr.read() if proc.stderr else ""
    return json.loads(line[len("RESULT "):])


def _source_count(data_dir: Path) -> int:
    async def count() -> int:
        log = EmbeddedLog(data_dir)
        try:
            return sum(await log.end_offsets("pv"))
        finally:
            await log.close()
    return asyncio.run(count())


def test_kill_9_with_the_cache_on_leaves_exact_state(tmp_path: Path) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    expected = _run_to_end(tmp_path / "reference", "fast")
    assert sum(r[1] for r in expected["totals"]) == N
    killed = tmp_path / "killed"
    kills_mid_input = 0
    for _ in range(4):
        proc = _start(killed, "run")
        _read_until(proc, "STARTED")
        time.sleep(rng.uniform(0.1, 0.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        kills_mid_input += _source_count(killed) < N
    got = _run_to_end(killed, "run")
    # The test means something only if the process died while there was work left.
    assert kills_mid_input >= 1, f"seed {seed}: no kill before the input ended"
    # Pull queries (the materialized tables) and each key's latest row in the output topics:
    # what the committed input implies, however many updates the cache folded together.
    for name in ("totals", "windows", "TOTALS", "PER_SECOND"):
        assert got[name] == expected[name], f"seed {seed}: {name}"


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    asyncio.run(_drive(Path(sys.argv[1]), sys.argv[2]))

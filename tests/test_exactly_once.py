"""Kill -9 while aggregating, start again: the tables end as if the engine had never stopped.

A driver process (this file, run as a script) opens an engine on a data directory, declares a
stream and two GROUP BY tables (one windowed) and produces N keyed records in batches while
the queries consume them. The test kills it with SIGKILL at random moments, restarts it each
time, lets the last run finish, and compares with a run that was never killed: the latest
row per key of each sink topic, every key's sequence of updates (a batch processed twice
would repeat an update, one lost would skip one), and pull queries.
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

N = 3000  # records
KEYS = 37
BATCH = 40
SETUP = [
    "CREATE STREAM IF NOT EXISTS pv (user_id STRING KEY, id BIGINT, amount BIGINT) "
    "WITH (kafka_topic='pv', value_format='JSON', partitions=2);",
    "CREATE TABLE IF NOT EXISTS totals AS SELECT user_id, COUNT(*) AS n, SUM(amount) AS total, "
    "LATEST_BY_OFFSET(id) AS last_id FROM pv GROUP BY user_id EMIT CHANGES;",
    "CREATE TABLE IF NOT EXISTS per_second AS SELECT user_id, COUNT(*) AS n FROM pv "
    "WINDOW TUMBLING (SIZE 1 SECOND) GROUP BY user_id EMIT CHANGES;",
]


def _record(i: int) -> tuple[bytes, bytes, int]:
    key = f"user-{i % KEYS}".encode()
    return key, json.dumps({"ID": i, "AMOUNT": i % 11}).encode(), 1_000_000 + i * 7


# ------------------------------------------------------------------------------ the driver
async def _drive(data_dir: Path, mode: str) -> None:
    from streamsql.engine import Engine
    from streamsql.runtime.log.base import ProducerRecord
    from streamsql.runtime.log.embedded import EmbeddedLog

    log = EmbeddedLog(data_dir)
    # Every update forwarded (no record cache, as ksqlDB's tests run): the test compares each
    # key's whole sequence of updates (the cache's flushes are test_aggregate_cache's).
    engine = Engine(log, {"auto.offset.reset": "earliest", "cache.max.bytes.buffering": 0})
    await engine.start()
    for sql in SETUP:
        await engine.execute(sql)
    print("STARTED", flush=True)
    if mode in ("run", "fast"):
        # Ids already in the topic (a killed produce may have written only some partitions
        # of a batch): write the missing ones, in order, so each partition gets its records
        # in the same order as an uninterrupted run.
        present: set[int] = set()
        ends = await log.end_offsets("pv")
        for p, end in enumerate(ends):
            off = 0
            while off < end:
                b = await log.fetch("pv", p, off, 5000)
                present.update(json.loads(v)["ID"] for v in b.values)
                off = b.offsets[-1] + 1
        todo = [i for i in range(N) if i not in present]
        for start in range(0, len(todo), BATCH):
            recs = [ProducerRecord(*_record(i)) for i in todo[start:start + BATCH]]
            await log.produce("pv", recs)
            if mode == "run":
                await asyncio.sleep(0.04)  # the queries consume meanwhile; kills land mid-input
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        [r] = await engine.execute("SELECT n FROM totals;")
        [w] = await engine.execute("SELECT n FROM per_second;")
        if sum(x[0] for x in r.rows) >= N and sum(x[0] for x in w.rows) >= N:
            break
        await asyncio.sleep(0.05)
    print("RESULT " + json.dumps(await _dump(engine, log)), flush=True)
    print("DONE", flush=True)
    await engine.close()
    await log.close()


async def _dump(engine, log) -> dict:
    out: dict = {}
    for topic, windowed in (("TOTALS", False), ("PER_SECOND", True)):
        updates: dict[str, list] = {}
        for p, end in enumerate(await log.end_offsets(topic)):
            off = 0
            while off < end:
                b = await log.fetch(topic, p, off, 5000)
                for k, v in zip(b.keys, b.values):
                    name = k[:-8].decode() + "@" + str(struct.unpack(">q", k[-8:])[0]) if windowed \
                        else k.decode()
                    updates.setdefault(name, []).append(json.loads(v) if v is not None else None)
                off = b.offsets[-1] + 1
        out[topic] = updates
    [r] = await engine.execute("SELECT * FROM totals;")
    out["pull_totals"] = sorted(list(x) for x in r.rows)
    [r] = await engine.execute("SELECT user_id, WINDOWSTART, n FROM per_second;")
    out["pull_per_second"] = sorted(list(x) for x in r.rows)
    [r] = await engine.execute("SELECT * FROM totals WHERE user_id = 'user-5';")
    out["pull_one"] = [list(x) for x in r.rows]
    return out


# ------------------------------------------------------------------------------- the test
def _start(data_dir: Path, mode: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, __file__, str(data_dir), mode], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


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
    raise AssertionError(f"driver did not say {word}: {lines}\n{proc.stderr.read() if proc.stderr else ''}")


def _run_to_end(data_dir: Path, mode: str) -> dict:
    """Run the driver until the tables have every record; what they hold then."""
    proc = _start(data_dir, mode)
    lines = _wait_for(proc, "DONE")
    assert proc.wait(30) == 0, proc.stderr.read() if proc.stderr else ""
    [line] = [x for x in lines if x.startswith("RESULT ")]
    return json.loads(line[len("RESULT "):])


def _source_count(data_dir: Path) -> int:
    from streamsql.runtime.log.embedded import EmbeddedLog

    async def count() -> int:
        log = EmbeddedLog(data_dir)
        try:
            return sum(await log.end_offsets("pv"))
        finally:
            await log.close()
    return asyncio.run(count())


def test_kill_9_while_aggregating_ends_as_if_never_stopped(tmp_path: Path) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    reference = tmp_path / "reference"
    expected = _run_to_end(reference, "fast")
    assert sum(v[-1]["N"] for v in expected["TOTALS"].values()) == N

    killed = tmp_path / "killed"
    kills_mid_input = 0
    for _ in range(5):
        proc = _start(killed, "run")
        _wait_for(proc, "STARTED")
        time.sleep(rng.uniform(0.1, 0.6))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        kills_mid_input += _source_count(killed) < N
    got = _run_to_end(killed, "run")
    # The test means something only if the process died while there was work left.
    assert kills_mid_input >= 2, f"seed {seed}: only {kills_mid_input} kills before the input ended"
    for name in ("TOTALS", "PER_SECOND"):
        assert got[name].keys() == expected[name].keys(), f"seed {seed}"
        for key, updates in expected[name].items():
            assert got[name][key] == updates, f"seed {seed}: {name} updates of {key} differ"
    assert got["pull_totals"] == expected["pull_totals"], f"seed {seed}"
    assert got["pull_per_second"] == expected["pull_per_second"], f"seed {seed}"
    assert got["pull_one"] == expected["pull_one"] and len(got["pull_one"]) == 1


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    asyncio.run(_drive(Path(sys.argv[1]), sys.argv[2]))

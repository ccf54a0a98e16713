"""Query state in service mode: RocksDB stores per stage and partition, changelogs, restarts,
restore from changelogs, pull queries over RocksDB, and a Python heap that does not grow with
the number of keys."""
from __future__ import annotations

import asyncio
import json
import shutil
import tracemalloc
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest

from streamsql.engine import Engine
from streamsql.runtime.aggregate import AggregateTableView
from streamsql.runtime.log.base import ProducerRecord, RecordBatch
from streamsql.runtime.log.embedded import EmbeddedLog
from streamsql.runtime.task import OutputFences

STREAM = ("CREATE STREAM pv (user_id STRING KEY, page STRING) "
          "WITH (kafka_topic='pv', value_format='JSON', partitions=2);")


async def _eventually(fn: Callable[[], Awaitable[Any]], expected: Any, timeout: float = 10.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        got = await fn()
        if got == expected or asyncio.get_running_loop().time() > deadline:
            return got
        await asyncio.sleep(0.02)


async def _rows(engine: Engine, sql: str) -> list[tuple]:
    [result] = await engine.execute(sql)
    return sorted(result.rows)


async def _produce(log: EmbeddedLog, topic: str, rows: list[tuple[str, dict, int]]) -> None:
    await log.produce(topic, [ProducerRecord(k.encode(), json.dumps(v).encode(), ts) for k, v, ts in rows])


class Running:
    """An engine in service mode on an on-disk embedded log, opened and closed in turn."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.log: EmbeddedLog | None = None
        self.engine: Engine | None = None

    async def open(self) -> Engine:
        self.log = EmbeddedLog(self.path)
        self.engine = Engine(self.log, {"auto.offset.reset": "earliest"})
        await self.engine.start()
        return self.engine

    async def close(self) -> None:
        assert self.engine is not None and self.log is not None
        await self.engine.close()
        await self.log.close()


def test_state_lives_in_rocksdb_with_changelogs_and_survives_restarts(tmp_path: Path) -> None:
    async def main() -> None:
        run = Running(tmp_path)
        engine = await run.open()
        await engine.execute(STREAM + "CREATE TABLE views AS SELECT user_id, COUNT(*) AS n FROM pv GROUP BY user_id;")
        [qid] = engine.queries
        await _produce(run.log, "pv", [(f"u{i % 5}", {"PAGE": "/"}, i) for i in range(50)])
        want = [(f"u{i}", 10) for i in range(5)]
        assert await _eventually(lambda: _rows(engine, "SELECT * FROM views;"), want) == want
        # Per stage and input partition, one RocksDB instance; changelogs named and compacted.
        # (Grouped by the stream's key: one stage, aggregating where the records are.)
        assert sorted(p.name for p in (tmp_path / "state" / qid).iterdir()) == ["aggregate"]
        assert sorted(p.name for p in (tmp_path / "state" / qid / "aggregate").iterdir()) == ["0", "1"]
        assert (tmp_path / "state" / qid / "aggregate" / "0" / "CURRENT").exists()
        topics = await run.log.list_topics()
        info = topics[f"_streamsql_default_query_{qid}-aggregate-changelog"]
        assert info.partitions == 2 and dict(info.config)["cleanup.policy"] == "compact"
        # As ksqlDB's, the table is read from the aggregation's own store: one store, one
        # changelog (each update written once).
        assert f"_streamsql_default_query_{qid}-materialized-changelog" not in topics
        # What the query holds is in RocksDB, not in the stage.
        table = engine.queries[qid].materialized
        assert isinstance(table, AggregateTableView) and sorted(table.tasks) == [0, 1]
        await run.close()

        engine = await run.open()
        assert await _eventually(lambda: _rows(engine, "SELECT * FROM views;"), want) == want
        await _produce(run.log, "pv", [("u1", {"PAGE": "/"}, 100)])
        want = [(f"u{i}", 11 if i == 1 else 10) for i in range(5)]
        assert await _eventually(lambda: _rows(engine, "SELECT * FROM views;"), want) == want
        await run.close()

        # Local state gone: restored from the changelogs, and counting goes on from there.
        shutil.rmtree(tmp_path / "state")
        engine = await run.open()
        assert await _eventually(lambda: _rows(engine, "SELECT * FROM views;"), want) == want
        await _produce(run.log, "pv", [("u2", {"PAGE": "/"}, 101)])
        want = [(f"u{i}", 11 if i in (1, 2) else 10) for i in range(5)]
        assert await _eventually(lambda: _rows(engine, "SELECT * FROM views;"), want) == want

        await engine.execute(f"TERMINATE {qid};")
        assert not (tmp_path / "state" / qid).exists()
        await run.close()
    asyncio.run(main())


def test_pull_queries_read_rocksdb_by_key_window_and_scan(tmp_path: Path) -> None:
    async def main() -> None:
        run = Running(tmp_path)
        engine = await run.open()
        await engine.execute(STREAM + """
            CREATE TABLE views AS SELECT user_id, COUNT(*) AS n FROM pv GROUP BY user_id;
            CREATE TABLE per_minute AS SELECT user_id, COUNT(*) AS n FROM pv
              WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY user_id;""")
        # "u1" is a prefix of "u10": a windowed lookup of u1 must not return u10's windows.
        await _produce(run.log, "pv", [("u1", {}, 1000), ("u1", {}, 61000), ("u10", {}, 2000),
                                       ("u2", {}, 3000)] + [(f"x{i}", {}, 4000) for i in range(2000)])
        want = [("u1", 2)]
        assert await _eventually(lambda: _rows(engine, "SELECT * FROM views WHERE user_id = 'u1';"), want) == want

        async def count_all() -> int:
            return len(await _rows(engine, "SELECT * FROM per_minute;"))
        assert await _eventually(count_all, 2004) == 2004
        assert await _rows(engine, "SELECT user_id, WINDOWSTART, n FROM per_minute WHERE user_id = 'u1';") == \
            [("u1", 0, 1), ("u1", 60000, 1)]
        assert await _rows(engine, "SELECT * FROM views WHERE user_id = 'nobody';") == []
        assert await _rows(engine, "SELECT * FROM views WHERE user_id = 'u1' AND n > 5;") == []
        assert len(await _rows(engine, "SELECT * FROM views LIMIT 3;")) == 3
        assert len(await _rows(engine, "SELECT * FROM views WHERE n = 1;")) == 2002
        await run.close()
    asyncio.run(main())


def test_emit_final_windows_and_stream_time_survive_a_restart(tmp_path: Path) -> None:
    async def main() -> None:
        run = Running(tmp_path)
        engine = await run.open()
        await engine.execute(STREAM + """CREATE TABLE final AS SELECT user_id, COUNT(*) AS n FROM pv
            WINDOW TUMBLING (SIZE 10 SECONDS, GRACE PERIOD 5 SECONDS) GROUP BY user_id EMIT FINAL;""")
        await _produce(run.log, "pv", [("a", {}, 1000), ("a", {}, 2000), ("a", {}, 3000)])
        await asyncio.sleep(0.3)
        assert await _rows(engine, "SELECT * FROM final;") == []  # the window is still open
        await run.close()

        engine = await run.open()
        # Same key, so the same partition and task: its stream time passes the window's end.
        await _produce(run.log, "pv", [("a", {}, 15000)])
        want = [("a", 3)]
        assert await _eventually(lambda: _rows(engine, "SELECT user_id, n FROM final;"), want) == want
        # Stream time came back too: a record for the closed window is late and dropped.
        await _produce(run.log, "pv", [("a", {}, 4000), ("a", {}, 16000)])
        await asyncio.sleep(0.3)
        assert await _rows(engine, "SELECT user_id, n FROM final;") == want
        await run.close()
    asyncio.run(main())


def test_table_aggregation_and_sessions_across_restarts(tmp_path: Path) -> None:
    async def main() -> None:
        run = Running(tmp_path)
        engine = await run.open()
        await engine.execute("""
            CREATE TABLE users (id STRING PRIMARY KEY, region STRING) WITH (kafka_topic='users', value_format='JSON', partitions=2);
            CREATE TABLE per_region AS SELECT region, COUNT(*) AS n FROM users GROUP BY region;
            """ + STREAM + """
            CREATE TABLE sessions AS SELECT user_id, COUNT(*) AS n FROM pv WINDOW SESSION (10 SECONDS) GROUP BY user_id;""")
        await _produce(run.log, "users", [("alice", {"REGION": "eu"}, 1), ("bob", {"REGION": "eu"}, 2)])
        await _produce(run.log, "pv", [("a", {}, 1000), ("a", {}, 5000)])
        want = [("eu", 2)]
        assert await _eventually(lambda: _rows(engine, "SELECT * FROM per_region;"), want) == want
        want = [("a", 2)]
        assert await _eventually(lambda: _rows(engine, "SELECT user_id, n FROM sessions;"), want) == want
        await run.close()

        engine = await run.open()
        # Bob moves: the restored source row retracts his old region.
        await _produce(run.log, "users", [("bob", {"REGION": "us"}, 3)])
        want = [("eu", 1), ("us", 1)]
        assert await _eventually(lambda: _rows(engine, "SELECT * FROM per_region WHERE n > 0;"), want) == want
        # A record within the gap merges into the restored session.
        await _produce(run.log, "pv", [("a", {}, 12000)])
        want = [("a", 1000, 12000, 3)]
        got = await _eventually(lambda: _rows(engine, "SELECT user_id, WINDOWSTART, WINDOWEND, n FROM sessions;"), want)
        assert got == want
        await run.close()
    asyncio.run(main())


def test_python_heap_does_not_grow_with_the_number_of_groups(tmp_path: Path) -> None:
    warm, traced = 4_000, 8_000
    CACHE = 100_000  # noqa: N806 - a constant of the test

    async def main() -> tuple[Any, Any]:
        run = Running(tmp_path)
        engine = await run.open()
        # One partition: the log's partitioner cache (keys it has seen) stays out of the way.
        # The record cache holds states in Python up to its size (ksqlDB's 10 MB by default):
        # a small one here, so that the test sees past it.
        await engine.execute(STREAM.replace("partitions=2", "partitions=1")
                             + "CREATE TABLE views AS SELECT user_id, COUNT(*) AS n FROM pv GROUP BY user_id;",
                             {"cache.max.bytes.buffering": CACHE})
        [runners] = engine.runners.values()

        async def feed(start: int, n: int) -> None:
            await _produce(run.log, "pv", [(f"user-{i:09d}", {"PAGE": "/"}, i) for i in range(start, start + n)])
            deadline = asyncio.get_running_loop().time() + 60
            while runners[-1].processed < start + n and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.01)
            assert runners[-1].processed == start + n

        await feed(0, warm)
        tracemalloc.start(1)
        try:
            # Both snapshots after a run of new keys: transient per-batch memory is in both.
            await feed(warm, warm)
            early = tracemalloc.take_snapshot()
            await feed(2 * warm, traced)
            late = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
        assert await _rows(engine, "SELECT * FROM views WHERE user_id = 'user-000000007';") == [("user-000000007", 1)]
        await run.close()
        return early, late

    early, late = asyncio.run(main())
    # The embedded log keeps a sparse offset index per segment (not state).
    not_log = [tracemalloc.Filter(False, "*/runtime/log/*")]
    diff = late.filter_traces(not_log).compare_to(early.filter_traces(not_log), "lineno")
    grown = sum(s.size_diff for s in diff)
    # Holding anything per group in Python (even its key bytes) beyond the cache would cost
    # > 50 bytes a key, 400 kB here. The cache's size counts its entries' bytes, not its
    # dicts' tables, which double as they grow: a snapshot just after a flush and one just
    # before the next may differ by up to about twice the cache's size.
    assert grown < traced * 5 + 2 * CACHE, (grown, [str(s) for s in diff[:8]])


def test_output_fences_hold_back_records_past_the_last_commit() -> None:
    fences = OutputFences()
    batch = RecordBatch("t", 0, [5, 6, 7, 8], [0] * 4, [b"k"] * 4, [b"v"] * 4)
    seeks: list[tuple[str, int, int]] = []
    # Not fenced: everything goes through.
    assert fences.cut([batch], lambda *a: seeks.append(a))[0] == [batch]
    fences.claim("t")  # the writer has not opened yet: nothing is readable
    out, waits = fences.cut([batch], lambda *a: seeks.append(a))
    assert out == [] and len(waits) == 1 and seeks == [("t", 0, 5)]
    fences.advance("t", [7])
    assert waits[0].is_set()
    # The writer between batches: all of it is committed (records of other writers too).
    assert fences.cut([batch], lambda *a: seeks.append(a))[0] == [batch]
    # While it writes a batch, what follows its last commit is held back until the next.
    fences.writing("t")
    out, waits = fences.cut([batch], lambda *a: seeks.append(a))
    assert [b.offsets for b in out] == [[5, 6]] and seeks[-1] == ("t", 0, 7)
    fences.advance("t", [9])
    assert waits[0].is_set()
    assert fences.cut([batch], lambda *a: seeks.append(a))[0] == [batch]
    fences.release("t")
    assert fences.cut([batch], lambda *a: seeks.append(a))[0] == [batch]


@pytest.mark.parametrize("on_disk", [True, False])
def test_truncate_cuts_a_partition_back(tmp_path: Path, on_disk: bool) -> None:
    async def main() -> None:
        path = tmp_path if on_disk else None
        log = EmbeddedLog(path, segment_bytes=2000, index_interval=4)
        await log.create_topic("t", 2)
        for i in range(100):
            await log.produce("t", [ProducerRecord(b"k", b"v%d" % i, i, (), 0)])
        await log.produce("t", [ProducerRecord(b"k", b"other", 0, (), 1)])
        assert await log.truncate("t", 0, 57) == 43  # across several segments
        assert await log.truncate("t", 0, 80) == 0
        assert await log.end_offsets("t") == [57, 1]
        await log.produce("t", [ProducerRecord(b"k", b"new", 1, (), 0)])
        batch = await log.fetch("t", 0, 50, 100)
        assert batch.offsets == list(range(50, 58)) and batch.values[-2:] == [b"v56", b"new"]
        with pytest.raises(ValueError):
            await log.truncate("t", 0, -1)
        await log.close()
        if on_disk:
            log = EmbeddedLog(path)
            assert await log.end_offsets("t") == [58, 1]
            batch = await log.fetch("t", 0, 0, 1000)
            assert batch.values == [b"v%d" % i for i in range(57)] + [b"new"]
            assert await log.truncate("t", 0, 0) == 58
            assert (await log.fetch("t", 0, 0)).offsets == []
            await log.close()
    asyncio.run(main())


def test_repartition_records_are_deleted_once_the_aggregation_committed_them(tmp_path: Path) -> None:
    """Kafka Streams purges a repartition topic behind its reader's commits: so does the
    embedded log (whole segments), and the table comes out the same, before and after a
    restart."""
    async def main() -> None:
        log = EmbeddedLog(tmp_path, segment_bytes=2000)
        engine = Engine(log, {"auto.offset.reset": "earliest"})
        await engine.start()
        await engine.execute(STREAM + "CREATE TABLE views AS SELECT page, COUNT(*) AS n FROM pv GROUP BY page;")
        [topic] = [t for t in await log.list_topics() if t.endswith("-repartition")]
        for i in range(20):
            await _produce(log, "pv", [(f"u{j}", {"PAGE": f"p{j % 4}"}, 1000 + i) for j in range(20)])
        want = [(f"p{k}", 100) for k in range(4)]
        assert await _eventually(lambda: _rows(engine, "SELECT * FROM views;"), want) == want
        begins = await log.begin_offsets(topic)
        ends = await log.end_offsets(topic)
        assert sum(ends) == 400 and all(b > 0 for b, e in zip(begins, ends) if e > 100)
        await engine.close()
        await log.close()
        # Restarted, the aggregation goes on from its commits: nothing it needs was deleted.
        log = EmbeddedLog(tmp_path, segment_bytes=2000)
        engine = Engine(log, {"auto.offset.reset": "earliest"})
        await engine.start()
        await _produce(log, "pv", [("u1", {"PAGE": "p0"}, 5000)])
        want = [("p0", 101)] + [(f"p{k}", 100) for k in range(1, 4)]
        assert await _eventually(lambda: _rows(engine, "SELECT * FROM views;"), want) == want
        await engine.close()
        await log.close()
    asyncio.run(main())


def test_windowed_tables_drop_windows_past_retention_with_their_changelog(tmp_path: Path) -> None:
    """A windowed table keeps each window for its RETENTION (else size + grace): older
    windows leave the table that pull queries read, the aggregation's store and both
    changelogs (tombstones, then compaction), and stay gone after a restore."""
    async def main() -> None:
        run = Running(tmp_path)
        engine = await run.open()
        # One partition: with no grace, records must reach the aggregation in time order.
        await engine.execute(STREAM.replace("partitions=2", "partitions=1") + """
            CREATE TABLE per_minute AS SELECT user_id, COUNT(*) AS n FROM pv
              WINDOW TUMBLING (SIZE 1 MINUTE, RETENTION 3 MINUTES, GRACE PERIOD 0 SECONDS)
              GROUP BY user_id;
            CREATE TABLE per_session AS SELECT user_id, COUNT(*) AS n FROM pv
              WINDOW SESSION (10 SECONDS, GRACE PERIOD 0 SECONDS) GROUP BY user_id;""")
        minute = 60_000
        # An hour of event time: one record per key and minute.
        for m in range(60):
            await _produce(run.log, "pv", [(k, {}, m * minute) for k in ("a", "b", "c", "d")])

        async def windows(key: str) -> list[tuple]:
            return await _rows(engine, f"SELECT user_id, WINDOWSTART, n FROM per_minute WHERE user_id = '{key}';")
        want = [("a", m * minute, 1) for m in (57, 58, 59)]
        assert await _eventually(lambda: windows("a"), want) == want
        # A scan and a session table alike: only what is within retention.

        async def count_all() -> int:
            return len(await _rows(engine, "SELECT * FROM per_minute;"))
        assert await _eventually(count_all, 12) == 12
        want_sessions = [("a", 59 * minute, 1)]
        assert await _eventually(lambda: _rows(engine, "SELECT user_id, WINDOWSTART, n FROM per_session "
                                                       "WHERE user_id = 'a';"), want_sessions) == want_sessions
        # The aggregation's own store forgot the old windows too (what restores replay).
        qids = sorted(engine.queries)
        await run.close()
        for qid in qids:
            shutil.rmtree(tmp_path / "state" / qid)
        engine = await run.open()
        assert await _eventually(lambda: windows("a"), want) == want
        assert await _eventually(count_all, 12) == 12
        # Compacted, the table's changelog is its 12 live windows (and the expired ones'
        # tombstones until delete.retention.ms), not the 240 windows ever opened.
        [table_qid] = [q for q in qids if engine.queries[q].sink.name == "PER_MINUTE"]
        changelog = f"_streamsql_default_query_{table_qid}-aggregate-changelog"
        await run.log.compact(changelog)
        batch = await run.log.fetch(changelog, 0, 0, 100_000)
        assert len([v for v in batch.values if v is not None]) == 12
        await run.close()
    asyncio.run(main())


def test_a_retention_shorter_than_size_plus_grace_is_refused(tmp_path: Path) -> None:
    async def main() -> None:
        run = Running(tmp_path)
        engine = await run.open()
        await engine.execute(STREAM)
        with pytest.raises(Exception, match=r"retention period of the window store must be no smaller "
                                            r"than its window size plus the grace period"):
            await engine.execute("CREATE TABLE t AS SELECT user_id, COUNT(*) AS n FROM pv WINDOW TUMBLING "
                                 "(SIZE 1 MINUTE, RETENTION 30 SECONDS, GRACE PERIOD 0 SECONDS) GROUP BY user_id;")
        await run.close()
    asyncio.run(main())


def test_select_star_on_a_windowed_table_shows_the_window_as_ksqldb(tmp_path: Path) -> None:
    """Pull and push queries: ``SELECT *`` over a windowed table gives the key, WINDOWSTART,
    WINDOWEND, then the values, so two windows of one key are two distinct rows."""
    async def main() -> None:
        run = Running(tmp_path)
        engine = await run.open()
        await engine.execute(STREAM + "CREATE TABLE w AS SELECT user_id, COUNT(*) AS n FROM pv "
                                      "WINDOW TUMBLING (SIZE 1 SECOND) GROUP BY user_id;")
        await _produce(run.log, "pv", [("u", {}, 1500), ("u", {}, 2500)])
        want = [("u", 1000, 2000, 1), ("u", 2000, 3000, 1)]
        assert await _eventually(lambda: _rows(engine, "SELECT * FROM w WHERE user_id = 'u';"), want) == want
        [pull] = await engine.execute("SELECT * FROM w;")
        assert pull.columns == ("USER_ID", "WINDOWSTART", "WINDOWEND", "N")
        [push] = await engine.execute("SELECT * FROM w EMIT CHANGES LIMIT 2;")
        assert push.columns == pull.columns and sorted([r async for r in push.stream]) == want
        await run.close()
    asyncio.run(main())

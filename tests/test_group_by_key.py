"""A GROUP BY on a stream's own key is aggregated where the records are, as ksqlDB (Kafka
Streams' groupByKey): no repartition topic, one stage, the same results as a re-keyed
aggregation. Grouping by anything else, a table, or a result key format other than the
source's still goes through a repartition topic; a query planned with one keeps it."""
from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest

from streamsql.engine import Engine
from streamsql.runtime.log.base import ProducerRecord
from streamsql.runtime.log.embedded import EmbeddedLog

# Each record carries its key in a value column too (UID): grouping by UID re-keys through a
# repartition topic and must agree with grouping by the key, update for update.
STREAM = ("CREATE STREAM pv (user_id STRING KEY, uid STRING, amount INT) "
          "WITH (kafka_topic='pv', value_format='JSON', partitions=3);")
BY_KEY = ("CREATE TABLE by_key AS SELECT user_id, COUNT(*) AS n, SUM(amount) AS total FROM pv "
          "WHERE amount >= 0 GROUP BY user_id;")
BY_VALUE = ("CREATE TABLE by_value AS SELECT uid, COUNT(*) AS n, SUM(amount) AS total FROM pv "
            "WHERE amount >= 0 GROUP BY uid;")
WINDOWED = ("CREATE TABLE per_minute AS SELECT user_id, COUNT(*) AS n FROM pv "
            "WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY user_id;")


def _records(start: int, count: int) -> list[ProducerRecord]:
    out = []
    for i in range(start, start + count):
        user = f"u{i % 7}"
        # Every 10th record is filtered out by the WHERE.
        amount = -1 if i % 10 == 9 else i % 5
        out.append(ProducerRecord(user.encode(), json.dumps({"UID": user, "AMOUNT": amount}).encode(),
                                  i * 1000))
    return out


def _expected(count: int) -> dict[str, tuple[int, int]]:
    want: dict[str, tuple[int, int]] = {}
    for r in _records(0, count):
        amount = json.loads(r.value)["AMOUNT"]
        if amount >= 0:
            n, total = want.get(r.key.decode(), (0, 0))
            want[r.key.decode()] = (n + 1, total + amount)
    return want


async def _eventually(fn: Callable[[], Awaitable[Any]], expected: Any, timeout: float = 20.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        got = await fn()
        if got == expected or asyncio.get_running_loop().time() > deadline:
            return got
        await asyncio.sleep(0.05)


async def _table(engine: Engine, name: str) -> dict[str, tuple[int, int]]:
    [result] = await engine.execute(f"SELECT * FROM {name};")
    return {row[0]: tuple(row[1:]) for row in result.rows}


async def _repartition_topics(engine: Engine) -> list[str]:
    """What an operator sees: the internal repartition topics SHOW ALL TOPICS lists."""
    [result] = await engine.execute("SHOW ALL TOPICS;")
    return [row[0] for row in result.rows if row[0].endswith("-repartition")]


async def _updates(log: EmbeddedLog, topic: str) -> dict[str, list[bytes]]:
    """Each key's sequence of updates in a sink topic."""
    got: dict[str, list[bytes]] = {}
    for p, end in enumerate(await log.end_offsets(topic)):
        offset = 0
        while offset < end:
            batch = await log.fetch(topic, p, offset)
            for k, v in zip(batch.keys, batch.values):
                got.setdefault(k.decode(), []).append(v)
            offset = batch.offsets[-1] + 1
    return got


def _query_of(engine: Engine, sink: str) -> str:
    [qid] = [q for q, info in engine.catalog.queries.items() if info.sink == sink]
    return qid


async def _open(path: Path) -> tuple[EmbeddedLog, Engine]:
    log = EmbeddedLog(path)
    # Every update forwarded (no record cache, as ksqlDB's tests run): the tests compare
    # each key's whole sequence of updates between the two plans.
    engine = Engine(log, {"auto.offset.reset": "earliest", "cache.max.bytes.buffering": 0})
    await engine.start()
    return log, engine


async def _close(log: EmbeddedLog, engine: Engine) -> None:
    await engine.close()
    await log.close()


def test_group_by_the_stream_key_needs_no_repartition_and_agrees_with_a_rekeyed_one(tmp_path: Path) -> None:
    async def main() -> None:
        log, engine = await _open(tmp_path)
        await engine.execute(STREAM + BY_KEY + BY_VALUE + WINDOWED)
        by_key, by_value, windowed = (_query_of(engine, s) for s in ("BY_KEY", "BY_VALUE", "PER_MINUTE"))
        await log.produce("pv", _records(0, 300))
        want = _expected(300)
        assert await _eventually(lambda: _table(engine, "by_key"), want) == want
        assert await _eventually(lambda: _table(engine, "by_value"), want) == want
        # Only the GROUP BY of a value column made a repartition topic.
        assert await _repartition_topics(engine) == [
            f"{engine.internal_name(by_value)}-Aggregate-GroupBy-repartition"]
        # One stage reading the source for the key's groupings, two for the value's.
        for qid, topology in ((by_key, ["pv"]), (windowed, ["pv"]),
                              (by_value, ["pv", f"{engine.internal_name(by_value)}-Aggregate-GroupBy-repartition"])):
            [explained] = await engine.execute(f"EXPLAIN {qid};")
            stages = explained.entity["queryDescription"]["topology"].split("\n\n")
            assert [s.split(") ", 1)[1].split(" -> ")[0] for s in stages] == topology, qid
            assert ("(KeyedAggregateStage, materialized)" in stages[0]) == (qid != by_value)
        # The same updates, in the same order per key, as the re-keyed aggregation wrote: one
        # per record the WHERE keeps (a table's rows are kept before its topic is written).
        kept = sum(n for n, _ in want.values())

        async def written(topic: str) -> int:
            return sum(await log.end_offsets(topic))
        for topic in ("BY_KEY", "BY_VALUE"):
            assert await _eventually(lambda: written(topic), kept) == kept
        keyed = await _updates(log, "BY_KEY")
        assert keyed and keyed == await _updates(log, "BY_VALUE")
        # The aggregate's changelog is there, as before.
        topics = await log.list_topics()
        assert f"{engine.internal_name(by_key)}-aggregate-changelog" in topics
        # The windowed table: every record (WHERE-free) counted in its minute.
        minutes: dict[int, int] = {}
        for i in range(0, 300, 7):
            minutes[i * 1000 // 60_000 * 60_000] = minutes.get(i * 1000 // 60_000 * 60_000, 0) + 1

        async def windows() -> list[tuple[int, int]]:
            [rows] = await engine.execute("SELECT user_id, windowstart, n FROM per_minute WHERE user_id = 'u0';")
            return sorted((r[1], r[2]) for r in rows.rows)
        assert await _eventually(windows, sorted(minutes.items())) == sorted(minutes.items())
        await _close(log, engine)

    asyncio.run(main())


def test_keyed_aggregation_restores_from_its_changelog(tmp_path: Path) -> None:
    async def main() -> None:
        log, engine = await _open(tmp_path)
        await engine.execute(STREAM + BY_KEY)
        await log.produce("pv", _records(0, 200))
        want = _expected(200)
        assert await _eventually(lambda: _table(engine, "by_key"), want) == want
        await _close(log, engine)
        # Another machine: no local state, rebuilt from the changelog; then more records.
        shutil.rmtree(tmp_path / "state")
        log, engine = await _open(tmp_path)
        assert await _eventually(lambda: _table(engine, "by_key"), want) == want
        await log.produce("pv", _records(200, 100))
        want = _expected(300)
        assert await _eventually(lambda: _table(engine, "by_key"), want) == want
        assert await _repartition_topics(engine) == []
        await _close(log, engine)

    asyncio.run(main())


@pytest.mark.parametrize("statements", [
    # A table re-groups: an update must take the row's old value out of its group.
    ["CREATE TABLE users (id STRING PRIMARY KEY, region STRING) "
     "WITH (kafka_topic='users', value_format='JSON', partitions=2);",
     "CREATE TABLE per_user AS SELECT id, COUNT(*) AS n FROM users GROUP BY id;"],
    # A result key format other than the source's.
    [STREAM, "CREATE TABLE per_user WITH (key_format='JSON') AS SELECT user_id, COUNT(*) AS n "
             "FROM pv GROUP BY user_id;"],
    # Not the key columns in order.
    ["CREATE STREAM two (a INT KEY, b INT KEY, v INT) WITH (kafka_topic='two', format='JSON', partitions=2);",
     "CREATE TABLE per_user AS SELECT b, a, COUNT(*) AS n FROM two GROUP BY b, a;"],
    # An expression over the key.
    [STREAM, "CREATE TABLE per_user AS SELECT UCASE(user_id) AS u, COUNT(*) AS n FROM pv GROUP BY UCASE(user_id);"],
])
def test_other_groupings_still_repartition(tmp_path: Path, statements: list[str]) -> None:
    async def main() -> None:
        log, engine = await _open(tmp_path)
        await engine.execute("".join(statements))
        qid = _query_of(engine, "PER_USER")
        assert await _repartition_topics(engine) == [
            f"{engine.internal_name(qid)}-Aggregate-GroupBy-repartition"]
        assert len(engine.queries[qid].stages) == 2
        await _close(log, engine)

    asyncio.run(main())


def test_a_query_planned_with_a_repartition_topic_keeps_it(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A query an earlier version started with a repartition topic (its statement replayed
    at start) keeps its two stages: records still in that topic are counted once."""
    async def main() -> None:
        import streamsql.runtime.aggregate as aggregate

        with monkeypatch.context() as m:
            m.setattr(aggregate, "groups_by_source_key", lambda plan, fmt=None: False)
            log, engine = await _open(tmp_path)
            await engine.execute(STREAM + BY_KEY)
            qid = _query_of(engine, "BY_KEY")
            await log.produce("pv", _records(0, 200))
            want = _expected(200)
            assert await _eventually(lambda: _table(engine, "by_key"), want) == want
            await _close(log, engine)
        log, engine = await _open(tmp_path)
        assert len(engine.queries[qid].stages) == 2
        await log.produce("pv", _records(200, 100))
        want = _expected(300)
        assert await _eventually(lambda: _table(engine, "by_key"), want) == want
        await _close(log, engine)

    asyncio.run(main())


def test_a_push_aggregation_by_the_stream_key_needs_no_repartition(tmp_path: Path) -> None:
    async def main() -> None:
        log, engine = await _open(tmp_path)
        await engine.execute(STREAM)
        await log.produce("pv", _records(0, 14))
        result = (await engine.execute("SELECT user_id, COUNT(*) AS n FROM pv WHERE amount >= 0 "
                                       "GROUP BY user_id EMIT CHANGES LIMIT 13;"))[-1]
        assert result.query_id in engine.transient_queries
        assert await _repartition_topics(engine) == []
        rows = [r async for r in result.stream]
        # Each key's running count, in order (record 9 is filtered out).
        counts: dict[str, list[int]] = {}
        for user, n in rows:
            counts.setdefault(user, []).append(n)
        assert counts == {f"u{i}": [1] if i == 2 else [1, 2] for i in range(7)}
        await _close(log, engine)

    asyncio.run(main())

"""A join whose ON expression is each side's key reads both sources in one stage, as ksqlDB
does: no repartition topic, the same results as a join that re-keys. Only a side joined on
something other than its key (or in another key format) is re-keyed, into the other side's
partitions. Sources with different partition counts are refused with ksqlDB's error."""
from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest

from streamsql.engine import Engine
from streamsql.errors import KsqlStatementException
from streamsql.runtime.log.base import Log, ProducerRecord
from streamsql.runtime.log.embedded import EmbeddedLog

USERS = 20
# Each record carries its key in a value column too (UID): joining on UID re-keys through a
# repartition topic and must agree with joining on the key.
SOURCES = (
    "CREATE STREAM clicks (user_id STRING KEY, uid STRING, page STRING) "
    "WITH (kafka_topic='clicks', value_format='JSON', partitions=3);"
    "CREATE STREAM views (user_id STRING KEY, uid STRING, ms INT) "
    "WITH (kafka_topic='views', value_format='JSON', partitions=3);"
    "CREATE TABLE users (id STRING PRIMARY KEY, name STRING) "
    "WITH (kafka_topic='users', value_format='JSON', partitions=3);"
    "CREATE TABLE regions (id STRING PRIMARY KEY, region STRING) "
    "WITH (kafka_topic='regions', value_format='JSON', partitions=3);")
ST_KEY = ("CREATE STREAM st_key AS SELECT c.user_id AS user_id, c.page, u.name FROM clicks c "
          "JOIN users u ON c.user_id = u.id;")
ST_VALUE = ("CREATE STREAM st_value AS SELECT c.uid AS uid, c.page, u.name FROM clicks c "
            "JOIN users u ON c.uid = u.id;")
SS_KEY = ("CREATE STREAM ss_key AS SELECT c.user_id AS user_id, c.page, v.ms FROM clicks c "
          "JOIN views v WITHIN 1 HOUR ON c.user_id = v.user_id;")
SS_VALUE = ("CREATE STREAM ss_value AS SELECT c.uid AS uid, c.page, v.ms FROM clicks c "
            "JOIN views v WITHIN 1 HOUR ON c.uid = v.uid;")
TT_KEY = ("CREATE TABLE tt_key AS SELECT u.id AS id, u.name, r.region FROM users u "
          "LEFT JOIN regions r ON u.id = r.id;")


def _tables() -> dict[str, list[ProducerRecord]]:
    # Every third user has no region (the LEFT JOIN gives NULL); user 7 has no row at all.
    users = [ProducerRecord(f"u{i}".encode(), json.dumps({"NAME": f"name {i}"}).encode(), i)
             for i in range(USERS) if i != 7]
    regions = [ProducerRecord(f"u{i}".encode(), json.dumps({"REGION": f"r{i % 4}"}).encode(), i)
               for i in range(USERS) if i % 3]
    return {"users": users, "regions": regions}


def _streams(count: int) -> dict[str, list[ProducerRecord]]:
    """Clicks, and a view of every fifth user; event times after the tables' rows."""
    clicks, views = [], []
    for i in range(count):
        user = f"u{(i * 7) % USERS}"
        clicks.append(ProducerRecord(user.encode(), json.dumps({"UID": user, "PAGE": f"/p{i}"}).encode(),
                                     1000 + i))
    for i in range(0, USERS, 5):
        user = f"u{i}"
        views.append(ProducerRecord(user.encode(), json.dumps({"UID": user, "MS": i}).encode(), 1000))
    return {"clicks": clicks, "views": views}


def _expected(count: int) -> dict[str, Any]:
    """What each query gives, from the inputs alone: rows per key, in order."""
    st: dict[str, list] = {}
    ss: dict[str, list] = {}
    for r in _streams(count)["clicks"]:
        user, page = r.key.decode(), json.loads(r.value)["PAGE"]
        n = int(user[1:])
        if n != 7:
            st.setdefault(user, []).append([page, f"name {n}"])
        if n % 5 == 0:
            ss.setdefault(user, []).append([page, n])
    tt = {f"u{i}": [f"name {i}", f"r{i % 4}" if i % 3 else None] for i in range(USERS) if i != 7}
    return {"st": st, "ss": ss, "tt": tt}


async def _eventually(fn: Callable[[], Awaitable[Any]], expected: Any, timeout: float = 30.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        got = await fn()
        if got == expected or asyncio.get_running_loop().time() > deadline:
            return got
        await asyncio.sleep(0.1)


async def _rows(log: Log, topic: str) -> dict[str, list]:
    """Each key's values in a sink topic, in order (a key's records are in one partition)."""
    got: dict[str, list] = {}
    for p, end in enumerate(await log.end_offsets(topic)):
        offset = 0
        while offset < end:
            batch = await log.fetch(topic, p, offset)
            for k, v in zip(batch.keys, batch.values):
                got.setdefault(k.decode(), []).append(list(json.loads(v).values()))
            offset = batch.offsets[-1] + 1
    return got


async def _table(engine: Engine, name: str) -> dict[str, list]:
    [result] = await engine.execute(f"SELECT * FROM {name};")
    return {row[0]: list(row[1:]) for row in result.rows}


async def _repartition_topics(engine: Engine, qid: str) -> list[str]:
    """What an operator sees: the query's repartition topics among SHOW ALL TOPICS."""
    [result] = await engine.execute("SHOW ALL TOPICS;")
    prefix = engine.internal_name(qid) + "-"
    return sorted(row[0][len(prefix):] for row in result.rows
                  if row[0].startswith(prefix) and row[0].endswith("-repartition"))


async def _stages(engine: Engine, qid: str) -> list[str]:
    """EXPLAIN's topology: each stage's kind and what it reads."""
    [explained] = await engine.execute(f"EXPLAIN {qid};")
    stages = explained.entity["queryDescription"]["topology"].split("\n\n")
    return [s.split("\n")[0].split(" ", 3)[3].split(" -> ")[0].replace(", materialized", "")
            for s in stages]


def _query_of(engine: Engine, sink: str) -> str:
    [qid] = [q for q, info in engine.catalog.queries.items() if info.sink == sink]
    return qid


async def _produce(log: Log, records: dict[str, list[ProducerRecord]]) -> None:
    for topic, batch in records.items():
        await log.produce(topic, batch)


async def _loaded(engine: Engine, log: Log, topics: tuple[str, ...]) -> None:
    """Wait until every query reading ``topics`` has committed all of their records (so that
    stream records, written next, find the tables' rows)."""
    for _ in range(600):
        left = 0
        for runners in engine.runners.values():
            for runner in runners:
                for topic in set(runner.topics) & set(topics):
                    committed = await log.committed(runner.group, topic)
                    left += sum(max(end - committed.get(p, 0), 0)
                                for p, end in enumerate(await log.end_offsets(topic)))
        if not left:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError("the tables were not loaded")


async def _open(path: Path) -> tuple[EmbeddedLog, Engine]:
    log = EmbeddedLog(path)
    engine = Engine(log, {"auto.offset.reset": "earliest"})
    await engine.start()
    return log, engine


async def _close(log: Log, engine: Engine) -> None:
    await engine.close()
    await log.close()


def test_joins_on_the_key_read_both_sources_in_one_stage_and_agree_with_rekeyed_ones(tmp_path: Path) -> None:
    async def main() -> None:
        log, engine = await _open(tmp_path)
        await engine.execute(SOURCES)
        await _produce(log, _tables())
        await engine.execute(ST_KEY + ST_VALUE + SS_KEY + SS_VALUE + TT_KEY)
        qids = {s: _query_of(engine, s) for s in ("ST_KEY", "ST_VALUE", "SS_KEY", "SS_VALUE", "TT_KEY")}
        await _loaded(engine, log, ("users", "regions"))
        await _produce(log, _streams(200))
        want = _expected(200)

        # On the key: no repartition topic, one join stage reading both sources.
        for sink, sources in (("ST_KEY", "clicks"), ("SS_KEY", "clicks"), ("TT_KEY", "users")):
            assert await _repartition_topics(engine, qids[sink]) == [], sink
            assert await _stages(engine, qids[sink]) == [f"(JoinStage) {sources}"], sink
            assert len(engine.runners[qids[sink]]) == 1
        # On a value column: only that side is re-keyed (the table is read as it is) ...
        assert await _repartition_topics(engine, qids["ST_VALUE"]) == ["Join-0-Left-repartition"]
        left = f"{engine.internal_name(qids['ST_VALUE'])}-Join-0-Left-repartition"
        assert await _stages(engine, qids["ST_VALUE"]) == ["(SideRekeyStage) clicks", f"(JoinStage) {left}"]
        # ... or both, when neither joins on its key.
        assert await _repartition_topics(engine, qids["SS_VALUE"]) == [
            "Join-0-Left-repartition", "Join-0-Right-repartition"]

        # The same rows either way.
        for sink, expected in (("ST_KEY", want["st"]), ("ST_VALUE", want["st"]),
                               ("SS_KEY", want["ss"]), ("SS_VALUE", want["ss"])):
            assert await _eventually(lambda: _rows(log, sink), expected) == expected, sink
        assert await _eventually(lambda: _table(engine, "tt_key"), want["tt"]) == want["tt"]
        await _close(log, engine)

        # After a restart, more records: the state (the table rows, the stream windows) was
        # kept, and the plans too.
        log, engine = await _open(tmp_path)
        assert await _stages(engine, qids["ST_KEY"]) == ["(JoinStage) clicks"]
        more = _streams(300)
        await _produce(log, {"clicks": more["clicks"][200:]})
        want = _expected(300)
        for sink, expected in (("ST_KEY", want["st"]), ("ST_VALUE", want["st"]),
                               ("SS_KEY", want["ss"]), ("SS_VALUE", want["ss"])):
            assert await _eventually(lambda: _rows(log, sink), expected) == expected, sink
        await _close(log, engine)

    asyncio.run(main())


def test_a_key_format_mismatch_rekeys_the_right_side_only(tmp_path: Path) -> None:
    """ksqlDB re-keys the right side into the left's key format (its
    ``Join-right-repartition``); the left is read as it is."""
    async def main() -> None:
        log, engine = await _open(tmp_path)
        await engine.execute(
            "CREATE STREAM s1 (id INT KEY, foo INT) WITH (kafka_topic='s1', key_format='DELIMITED', "
            "value_format='JSON', partitions=2);"
            "CREATE STREAM s2 (id INT KEY, val STRING) WITH (kafka_topic='s2', key_format='KAFKA', "
            "value_format='JSON', partitions=2);"
            "CREATE STREAM output AS SELECT s1.id, s2.val FROM s1 JOIN s2 WITHIN 10 SECONDS ON s1.id = s2.id;")
        qid = _query_of(engine, "OUTPUT")
        assert await _repartition_topics(engine, qid) == ["Join-0-Right-repartition"]
        for i in range(10):
            await engine.execute(f"INSERT INTO s2 (id, val, rowtime) VALUES ({i}, 'v{i}', {i * 100});"
                                 f"INSERT INTO s1 (id, foo, rowtime) VALUES ({i}, {i}, {i * 100 + 1});")
        want = {str(i): [[f"v{i}"]] for i in range(10)}
        assert await _eventually(lambda: _rows(log, "OUTPUT"), want) == want
        await _close(log, engine)

    asyncio.run(main())


def test_sources_with_different_partition_counts_are_refused_as_ksqldb_does(tmp_path: Path) -> None:
    async def main() -> None:
        log, engine = await _open(tmp_path)
        await engine.execute(
            "CREATE STREAM s (id STRING KEY, fk STRING) WITH (kafka_topic='s', value_format='JSON', partitions=2);"
            "CREATE TABLE t (id STRING PRIMARY KEY, v STRING) WITH (kafka_topic='t', value_format='JSON', partitions=1);"
            "CREATE TABLE o (id STRING PRIMARY KEY, fk STRING) WITH (kafka_topic='o', value_format='JSON', partitions=2);")
        message = ("Can't join `S` with `T` since the number of partitions don't match. `S` partitions = 2; "
                   "`T` partitions = 1. Please repartition either one so that the number of partitions match.")
        # On the key or not (a repartition topic takes its source's count), persistent or push.
        for sql in ("CREATE STREAM j AS SELECT s.id, t.v FROM s JOIN t ON s.id = t.id;",
                    "CREATE STREAM j AS SELECT s.fk, t.v FROM s JOIN t ON s.fk = t.id;",
                    "SELECT s.id, t.v FROM s JOIN t ON s.id = t.id EMIT CHANGES;"):
            with pytest.raises(KsqlStatementException) as err:
                await engine.execute(sql)
            assert str(err.value) == message, sql
        mine = ("CREATE STREAM x AS SELECT a.id, b.v FROM s a LEFT JOIN t b ON a.id = b.id;")
        with pytest.raises(KsqlStatementException, match="Can't join `A` with `B` .* `A` partitions = 2; "
                                                         "`B` partitions = 1"):
            await engine.execute(mine)
        # Nothing was made: no sink topic, no query.
        [topics] = await engine.execute("SHOW ALL TOPICS;")
        assert not {"J", "X"} & {row[0] for row in topics.rows}
        assert not engine.catalog.queries
        # A foreign-key join needs no co-partitioning (ksqlDB's rule).
        await engine.execute("CREATE TABLE fk AS SELECT o.id, t.v FROM o JOIN t ON o.fk = t.id;")
        await _close(log, engine)

    asyncio.run(main())


def test_a_join_on_the_key_on_kafka_needs_no_repartition(kafka, unique_topic, tmp_path: Path) -> None:
    from streamsql.runtime.log.kafka import KafkaLog

    clicks, users, sink = unique_topic("clicks"), unique_topic("users"), unique_topic("enriched")

    async def main() -> None:
        cfg = {"auto.offset.reset": "earliest", "ksql.service.id": "svc_" + uuid.uuid4().hex[:8],
               "linger.ms": 1}
        log = KafkaLog(kafka.bootstrap_servers, cfg)
        engine = Engine(log, cfg, state_dir=tmp_path / "state")
        await engine.start()
        try:
            await engine.execute(
                f"CREATE STREAM clicks (user_id STRING KEY, uid STRING, page STRING) "
                f"WITH (kafka_topic='{clicks}', value_format='JSON', partitions=3);"
                f"CREATE TABLE users (id STRING PRIMARY KEY, name STRING) "
                f"WITH (kafka_topic='{users}', value_format='JSON', partitions=3);")
            await log.produce(users, _tables()["users"])
            await engine.execute(ST_KEY.replace("AS SELECT", f"WITH (kafka_topic='{sink}') AS SELECT"))
            qid = _query_of(engine, "ST_KEY")
            assert await _stages(engine, qid) == [f"(JoinStage) {clicks}"]
            assert not [t for t in await log.list_topics()
                        if t.startswith(engine.internal_name(qid)) and t.endswith("-repartition")]
            await _loaded(engine, log, (users,))
            await log.produce(clicks, _streams(60)["clicks"])
            want = _expected(60)["st"]
            assert await _eventually(lambda: _rows(log, sink), want, 60) == want
        finally:
            await _close(log, engine)

    asyncio.run(main())



def test_a_group_by_over_a_join_groups_the_joined_rows_in_the_join_stage(tmp_path: Path) -> None:
    """The joined rows go straight to the GROUP BY's repartition topic (ksqlDB's plan), with no
    internal topic of joined rows in between."""
    async def main() -> None:
        log, engine = await _open(tmp_path)
        try:
            await engine.execute(SOURCES)
            await _produce(log, _tables())
            await engine.execute("CREATE TABLE per_name AS SELECT u.name, COUNT(*) AS n FROM clicks c "
                                 "JOIN users u ON c.user_id = u.id GROUP BY u.name;")
            qid = _query_of(engine, "PER_NAME")
            await _loaded(engine, log, ("users",))
            await _produce(log, _streams(200))
            want: dict[str, list] = {}
            for user, rows in _expected(200)["st"].items():
                want[f"name {user[1:]}"] = [len(rows)]
            assert await _eventually(lambda: _table(engine, "per_name"), want) == want
            [result] = await engine.execute("SHOW ALL TOPICS;")
            prefix = engine.internal_name(qid) + "-"
            internal = sorted(row[0][len(prefix):] for row in result.rows
                              if row[0].startswith(prefix) and not row[0].endswith("-changelog"))
            assert internal == ["Aggregate-GroupBy-repartition"]
            assert await _stages(engine, qid) == [
                "(JoinGroupByStage) clicks",
                f"(AggregateStage) {prefix}Aggregate-GroupBy-repartition"]
        finally:
            await _close(log, engine)

    asyncio.run(main())


def test_a_join_planned_with_both_sides_repartitioned_keeps_its_plan(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A query an earlier version started re-keying both sides (its statement replayed at
    start) keeps its repartition topics: records still in them are its."""
    async def main() -> None:
        import streamsql.runtime.join as join

        async def both_rekeyed(*args: Any) -> tuple[bool, bool]:
            return False, False

        with monkeypatch.context() as m:
            m.setattr(join, "_direct_sides", both_rekeyed)
            log, engine = await _open(tmp_path)
            await engine.execute(SOURCES + ST_VALUE)
            qid = _query_of(engine, "ST_VALUE")
            await _produce(log, _tables())
            await _loaded(engine, log, ("users",) + tuple(
                f"{engine.internal_name(qid)}-Join-0-{s}-repartition" for s in ("Left", "Right")))
            await _produce(log, {"clicks": _streams(100)["clicks"]})
            want = _expected(100)["st"]
            assert await _eventually(lambda: _rows(log, "ST_VALUE"), want) == want
            await _close(log, engine)
        log, engine = await _open(tmp_path)
        try:
            assert await _repartition_topics(engine, qid) == ["Join-0-Left-repartition", "Join-0-Right-repartition"]
            assert len(engine.queries[qid].stages) == 3
            await _produce(log, {"clicks": _streams(150)["clicks"][100:]})
            want = _expected(150)["st"]
            assert await _eventually(lambda: _rows(log, "ST_VALUE"), want) == want
        finally:
            await _close(log, engine)

    asyncio.run(main())

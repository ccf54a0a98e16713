"""Tables, aggregations and pull queries on the embedded engine (service mode)."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from streamsql.engine import Engine
from streamsql.errors import KsqlStatementException
from streamsql.runtime.log.embedded import EmbeddedLog

SETUP = """
CREATE STREAM pageviews (user_id STRING KEY, page STRING, ms BIGINT)
  WITH (kafka_topic='pageviews', value_format='JSON', partitions=2);
CREATE TABLE views AS SELECT user_id, COUNT(*) AS n, LATEST_BY_OFFSET(page) AS last_page
  FROM pageviews GROUP BY user_id HAVING COUNT(*) > 1 EMIT CHANGES;
CREATE TABLE per_minute AS SELECT user_id, COUNT(*) AS n FROM pageviews
  WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY user_id EMIT CHANGES;
"""


async def _pull(engine: Engine, sql: str) -> list[tuple]:
    [result] = await engine.execute(sql)
    assert result.kind == "rows"
    return result.rows


async def _eventually(fn, expected, timeout: float = 5.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        got = await fn()
        if got == expected or asyncio.get_running_loop().time() > deadline:
            return got
        await asyncio.sleep(0.02)


def test_aggregation_and_pull_queries(tmp_path: Path) -> None:
    async def main() -> None:
        log = EmbeddedLog(tmp_path)
        engine = Engine(log, {"auto.offset.reset": "earliest"})
        await engine.start()
        await engine.execute(SETUP)
        for user, page, ts in [("u1", "/a", 1000), ("u1", "/b", 2000), ("u2", "/c", 3000), ("u1", "/d", 61000)]:
            await engine.execute(
                f"INSERT INTO pageviews (ROWTIME, user_id, page, ms) VALUES ({ts}, '{user}', '{page}', 5);")

        async def lookup():
            return await _pull(engine, "SELECT * FROM views WHERE user_id = 'u1';")
        assert await _eventually(lookup, [("u1", 3, "/d")]) == [("u1", 3, "/d")]
        # u2 has one view: HAVING keeps it out of the table.
        assert await _pull(engine, "SELECT user_id, n FROM views;") == [("u1", 3)]

        async def windows():
            return sorted(await _pull(engine, "SELECT user_id, WINDOWSTART, n FROM per_minute;"))
        assert await _eventually(windows, [("u1", 0, 2), ("u1", 60000, 1), ("u2", 0, 1)]) == \
            [("u1", 0, 2), ("u1", 60000, 1), ("u2", 0, 1)]
        rows = await _pull(engine, "SELECT n FROM per_minute WHERE user_id = 'u1' AND WINDOWSTART >= 60000;")
        assert rows == [(1,)]
        await engine.close()
        await log.close()
    asyncio.run(main())


def test_pull_query_errors_say_what_can_be_queried(tmp_path: Path) -> None:
    async def main() -> None:
        log = EmbeddedLog(tmp_path)
        engine = Engine(log, {"auto.offset.reset": "earliest"})
        await engine.start()
        await engine.execute(SETUP + "CREATE TABLE users (id STRING PRIMARY KEY, name STRING) "
                             "WITH (kafka_topic='users', value_format='JSON', partitions=1);")
        # A pull query over a stream reads it (ksqlDB 0.23+); what only a push query does
        # says so.
        with pytest.raises(KsqlStatementException, match="GROUP BY.*\n.*EMIT CHANGES"):
            await engine.execute("SELECT user_id, COUNT(*) FROM pageviews GROUP BY user_id;")
        with pytest.raises(KsqlStatementException, match="isn't queryable.*CREATE TABLE QUERYABLE_USERS"):
            await engine.execute("SELECT * FROM users WHERE id = 'x';")
        with pytest.raises(KsqlStatementException, match="(?s)does not accept parameters.*Valid alternatives.*SUM\\(BIGINT\\)"):
            await engine.execute("CREATE TABLE bad AS SELECT user_id, SUM(page) FROM pageviews GROUP BY user_id;")
        await engine.close()
        await log.close()
    asyncio.run(main())


def test_pull_query_of_some_partitions_says_which_are_not_here(tmp_path: Path) -> None:
    """What a node answers for the partitions another node asks it for (a cluster's pull
    query): rows of those partitions only, and the ones it holds no task of named."""
    from streamsql.parser import parse

    async def main() -> None:
        log = EmbeddedLog(tmp_path)
        engine = Engine(log, {"auto.offset.reset": "earliest"})
        await engine.start()
        try:
            await engine.execute(SETUP)
            users = [f"u{i}" for i in range(20)]
            for u in users:
                await engine.execute(f"INSERT INTO pageviews (user_id, page, ms) VALUES ('{u}', '/a', 1);"
                                     f"INSERT INTO pageviews (user_id, page, ms) VALUES ('{u}', '/b', 2);")
            for _ in range(250):
                if len(await _pull(engine, "SELECT * FROM views;")) == 20:
                    break
                await asyncio.sleep(0.02)
            [stmt] = parse("SELECT user_id FROM views;")
            whole, none_missing = await engine.pull(stmt, engine.session, {0, 1})
            assert sorted(whole.rows) == sorted((u,) for u in users) and none_missing == set()
            first, _ = await engine.pull(stmt, engine.session, {0})
            second, _ = await engine.pull(stmt, engine.session, {1})
            assert 0 < len(first.rows) < 20 and sorted(first.rows + second.rows) == sorted(whole.rows)
            _, missing = await engine.pull(stmt, engine.session, {1, 5})
            assert missing == {5}
            # A key lookup goes to the partition that holds the key (a cluster asks only
            # that partition's node): there it is found, elsewhere not.
            views = engine.catalog.source("VIEWS")
            for u in users:
                [lookup] = parse(f"SELECT user_id FROM views WHERE user_id = '{u}';")
                p = engine.pull_partition(views, lookup.query.where, 2)
                assert p in (0, 1)
                assert (await engine.pull(lookup, engine.session, {p}))[0].rows == [(u,)]
                assert (await engine.pull(lookup, engine.session, {1 - p}))[0].rows == []
            [scan] = parse("SELECT user_id FROM views WHERE n > 1;")
            assert engine.pull_partition(views, scan.query.where, 2) is None
        finally:
            await engine.close()
            await log.close()
    asyncio.run(main())


def test_pull_queries_read_committed_rows_only(tmp_path: Path) -> None:
    """A table's rows written by the batch in flight are not what pull queries see until
    that batch commits: under exactly_once_v2 its transaction may yet abort (its node killed
    mid-commit), and an answer that had them would be contradicted by the next."""
    from streamsql.runtime.task import TableStore
    from streamsql.state import TaskState

    async def main() -> None:
        table = TableStore("materialized")
        state = await TaskState.open(tmp_path / "task", [table.spec(None)])
        table.attach(0, state)
        table.bind(state)
        table.put(b"k1", (b"v1", 1))
        await state.commit({})
        table.put(b"k1", (b"v1-new", 2))  # the batch in flight
        table.put(b"k2", (b"v2", 2))
        assert table.get(b"k2") == (b"v2", 2)  # (the stage reads its own writes)
        assert table.row(b"k1") == (b"v1", 1) and table.row(b"k2") is None
        assert list(table.rows()) == [(b"k1", b"v1", 1)]
        await state.commit({})
        assert table.row(b"k2") == (b"v2", 2)
        assert list(table.rows()) == [(b"k1", b"v1-new", 2), (b"k2", b"v2", 2)]
        assert list(table.rows(b"k2")) == [(b"k2", b"v2", 2)]
        state.close()
    asyncio.run(main())


def test_group_by_over_a_stream_table_join_counts_per_joined_column(tmp_path: Path) -> None:
    """GROUP BY over a join aggregates the joined rows (ksqlDB re-keys the join's result by the
    grouping expressions): orders counted and summed per region of their user."""
    async def main() -> None:
        log = EmbeddedLog(tmp_path)
        engine = Engine(log, {"auto.offset.reset": "earliest"})
        await engine.start()
        await engine.execute(
            "CREATE STREAM orders (oid STRING KEY, user_id STRING, amount INT) "
            "  WITH (kafka_topic='orders', value_format='JSON', partitions=2);"
            "CREATE TABLE users (id STRING PRIMARY KEY, region STRING) "
            "  WITH (kafka_topic='users', value_format='JSON', partitions=2);")
        for user, region in [("u1", "eu"), ("u2", "us"), ("u3", "eu")]:
            await engine.execute(f"INSERT INTO users (id, region) VALUES ('{user}', '{region}');")
        for i, (user, amount) in enumerate([("u1", 5), ("u2", 7), ("u3", 1), ("u1", 2), ("nobody", 9)]):
            await engine.execute(
                f"INSERT INTO orders (oid, user_id, amount) VALUES ('o{i}', '{user}', {amount});")
        # From the topics' start: the join reads both in time order, the users first.
        await engine.execute(
            "CREATE TABLE per_region AS SELECT u.region, COUNT(*) AS n, SUM(o.amount) AS total "
            "  FROM orders o JOIN users u ON o.user_id = u.id GROUP BY u.region;",
            {"auto.offset.reset": "earliest"})

        async def rows():
            return sorted(await _pull(engine, "SELECT * FROM per_region;"))
        expected = [("eu", 3, 8), ("us", 1, 7)]
        assert await _eventually(rows, expected) == expected
        [desc] = await engine.execute("DESCRIBE per_region;")
        assert desc.rows == [("REGION", "VARCHAR(STRING)  (primary key)"), ("N", "BIGINT"),
                             ("TOTAL", "INTEGER")]
        await engine.close()
        await log.close()
    asyncio.run(main())


def test_group_by_over_a_table_table_join_follows_updates(tmp_path: Path) -> None:
    """An aggregation over a table-table join retracts a joined row's old contribution when
    either side changes."""
    async def main() -> None:
        log = EmbeddedLog(tmp_path)
        engine = Engine(log, {"auto.offset.reset": "earliest"})
        await engine.start()
        await engine.execute(
            "CREATE TABLE t1 (id BIGINT PRIMARY KEY, grp STRING) "
            "  WITH (kafka_topic='t1', value_format='JSON', partitions=2);"
            "CREATE TABLE t2 (id BIGINT PRIMARY KEY, total INT) "
            "  WITH (kafka_topic='t2', value_format='JSON', partitions=2);")
        changes = [("t1", "grp", 1, "'a'"), ("t1", "grp", 2, "'a'"), ("t2", "total", 1, "10"),
                   ("t2", "total", 2, "5"), ("t2", "total", 1, "20"), ("t1", "grp", 2, "'b'")]
        for ts, (table, column, key, value) in enumerate(changes, 1):
            await engine.execute(
                f"INSERT INTO {table} (ROWTIME, id, {column}) VALUES ({ts}, {key}, {value});")
        await engine.execute(
            "CREATE TABLE sums AS SELECT t1.grp, SUM(t2.total) AS s FROM t1 LEFT JOIN t2 ON t1.id = t2.id "
            "  GROUP BY t1.grp;", {"auto.offset.reset": "earliest"})

        async def rows():
            return sorted(await _pull(engine, "SELECT * FROM sums;"))
        expected = [("a", 20), ("b", 5)]
        assert await _eventually(rows, expected) == expected
        await engine.close()
        await log.close()
    asyncio.run(main())

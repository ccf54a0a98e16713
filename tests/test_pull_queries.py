"""Pull queries as ksqlDB answers them: over streams (a bounded read of the topic), over
source tables (materialized by their CST_ query), and the checks a pull query passes first
(ksqlDB's PullQueryValidator and the WHERE rules of its QueryFilterNode), with ksqlDB's
messages."""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from streamsql.engine import Engine
from streamsql.errors import StreamSqlError
from streamsql.exec.pull import LIMIT_REACHED, PULL_QUERY_SYNTAX_HELP, QUERY_COMPLETED
from streamsql.runtime.log.base import ProducerRecord
from streamsql.runtime.log.embedded import EmbeddedLog
from tests.test_state_engine import _eventually as eventually


def run(tmp_path: Path, body: Any) -> None:
    async def main() -> None:
        log = EmbeddedLog(tmp_path)
        engine = Engine(log, {"auto.offset.reset": "earliest"})
        await engine.start()
        try:
            await body(engine)
        finally:
            await engine.close()
            await log.close()
    asyncio.run(main())


async def one(engine: Engine, sql: str, **props: Any) -> Any:
    [result] = await engine.execute(sql, props or None)
    return result


async def refused(engine: Engine, sql: str, **props: Any) -> str:
    with pytest.raises(StreamSqlError) as info:
        await engine.execute(sql, props or None)
    return str(info.value)


# ------------------------------------------------------------------------------ streams
def test_pull_query_over_a_stream_reads_what_the_topic_holds(tmp_path: Path) -> None:
    async def body(engine: Engine) -> None:
        await engine.execute("CREATE STREAM s (k INT KEY, v INT, name STRING) "
                             "WITH (kafka_topic='s', value_format='JSON', partitions=3);")
        empty = await one(engine, "SELECT * FROM s;")
        assert empty.kind == "rows" and empty.rows == [] and empty.final_message == QUERY_COMPLETED
        for i in range(10):
            await engine.execute(f"INSERT INTO s (k, v, name) VALUES ({i}, {i * 10}, 'n{i}');")
        every = await one(engine, "SELECT * FROM s;")
        assert every.columns == ("K", "V", "NAME")
        assert sorted(every.rows) == [(i, i * 10, f"n{i}") for i in range(10)]
        assert every.final_message == QUERY_COMPLETED
        # Columns in SELECT order, expressions, WHERE.
        some = await one(engine, "SELECT name, k, v * 2 AS twice FROM s WHERE v >= 70;")
        assert some.columns == ("NAME", "K", "TWICE")
        assert sorted(some.rows) == [("n7", 7, 140), ("n8", 8, 160), ("n9", 9, 180)]
        # LIMIT ends the read; LIMIT 0 reads nothing; a LIMIT above the rows completes.
        limited = await one(engine, "SELECT k FROM s LIMIT 4;")
        assert len(limited.rows) == 4 and limited.final_message == LIMIT_REACHED
        zero = await one(engine, "SELECT k FROM s LIMIT 0;")
        assert zero.rows == [] and zero.final_message == LIMIT_REACHED
        above = await one(engine, "SELECT k FROM s LIMIT 25;")
        assert len(above.rows) == 10 and above.final_message == QUERY_COMPLETED
        # A push query is still a push query.
        push = await one(engine, "SELECT k FROM s EMIT CHANGES LIMIT 2;")
        assert push.kind == "stream"
        await push.stream.aclose()
    run(tmp_path, body)


def test_pull_query_over_a_stream_stops_at_the_end_offsets_it_started_with(tmp_path: Path) -> None:
    """Records written while the query reads are not part of its answer."""
    from streamsql.exec import pull as pull_exec
    from streamsql.parser import parse

    async def body(engine: Engine) -> None:
        await engine.execute("CREATE STREAM s (k INT KEY, v INT) "
                             "WITH (kafka_topic='s', value_format='JSON', partitions=1);")
        for i in range(3):
            await engine.execute(f"INSERT INTO s (k, v) VALUES ({i}, {i});")
        [stmt] = parse("SELECT * FROM s;")
        plan = engine.analyzer(engine.config).analyze(stmt.query, None, persistent=False)
        ends = await engine.log.end_offsets("s")
        real_end_offsets = engine.log.end_offsets

        async def ends_then_more(topic: str) -> list[int]:
            # The query takes the topic's end offsets; then more records arrive.
            await engine.execute("INSERT INTO s (k, v) VALUES (99, 99);")
            return ends
        engine.log.end_offsets = ends_then_more  # type: ignore[method-assign]
        try:
            rows, final = await pull_exec.stream_pull(engine, plan, None)
        finally:
            engine.log.end_offsets = real_end_offsets  # type: ignore[method-assign]
        assert sorted(rows) == [(0, 0), (1, 1), (2, 2)] and final == QUERY_COMPLETED
        assert len((await one(engine, "SELECT * FROM s;")).rows) == 4
    run(tmp_path, body)


def test_pull_query_over_a_stream_over_http(tmp_path: Path) -> None:
    """/query: no KEY in the header (as a push query's), then the rows and a finalMessage."""
    import httpx

    from streamsql.server.testing import node_in_process

    async def body() -> None:
        async with node_in_process(tmp_path / "data") as (url, _app), \
                httpx.AsyncClient(base_url=url) as c:
            r = await c.post("/ksql", json={"ksql": "CREATE STREAM s (k INT KEY, v INT) WITH "
                                            "(kafka_topic='s', value_format='JSON', partitions=1);"
                                            "INSERT INTO s (k, v) VALUES (1, 10);"
                                            "INSERT INTO s (k, v) VALUES (2, 20);"})
            assert r.status_code == 200, r.text
            answer = (await c.post("/query", json={"ksql": "SELECT v, k FROM s;"})).json()
            assert answer[0]["header"]["schema"] == "`V` INTEGER, `K` INTEGER"
            assert sorted(x["row"]["columns"] for x in answer[1:3]) == [[10, 1], [20, 2]]
            assert answer[3:] == [{"finalMessage": "Query Completed"}]
            limited = (await c.post("/query", json={"ksql": "SELECT * FROM s LIMIT 1;"})).json()
            assert len(limited) == 3 and limited[2] == {"finalMessage": "Limit Reached"}
    asyncio.run(body())


# ------------------------------------------------------------------------ source tables
def test_source_table_is_materialized_for_pull_queries(tmp_path: Path) -> None:
    async def body(engine: Engine) -> None:
        await engine.execute(
            "CREATE SOURCE TABLE users (id INT PRIMARY KEY, name STRING) "
            "WITH (kafka_topic='users', value_format='JSON', partitions=2);"
            "CREATE STREAM users_in (id INT KEY, name STRING) WITH (kafka_topic='users', value_format='JSON');")
        for i, name in [(1, "a"), (2, "b"), (3, "c"), (1, "a2")]:
            await engine.execute(f"INSERT INTO users_in (id, name) VALUES ({i}, '{name}');")

        async def scan() -> list:
            return sorted((await one(engine, "SELECT * FROM users;")).rows)
        assert await eventually(scan, [(1, "a2"), (2, "b"), (3, "c")]) == [(1, "a2"), (2, "b"), (3, "c")]
        lookup = await one(engine, "SELECT * FROM users WHERE id = 2;")
        assert lookup.columns == ("ID", "NAME") and lookup.rows == [(2, "b")]
        assert (await one(engine, "SELECT name FROM users WHERE id IN (1, 3);")).rows in \
            ([("a2",), ("c",)], [("c",), ("a2",)])
        # A tombstone deletes the row.
        key = engine.codec(engine.catalog.source("USERS"), "key").encode((3,))
        await engine.log.produce("users", [ProducerRecord(key, None, 0)])
        assert await eventually(scan, [(1, "a2"), (2, "b")]) == [(1, "a2"), (2, "b")]
        # The materialization is internal: no query to list or terminate; a source table
        # stays read-only.
        queries = await one(engine, "SHOW QUERIES;")
        assert not any("CST_" in str(q) for q in (queries.rows or [])) and \
            "CST_" not in str(queries.entity)
        assert any(qid.startswith("CST_USERS_") for qid in engine.queries)
        assert "read-only" in await refused(engine, "INSERT INTO users (id, name) VALUES (9, 'z');")
        # DROP stops it.
        await engine.execute("DROP STREAM users_in;")
        await engine.execute("DROP TABLE users;")
        assert not any(qid.startswith("CST_") for qid in engine.queries)
        assert not any(qid.startswith("CST_") for qid in engine.runners)
    run(tmp_path, body)


def test_source_table_materialization_comes_back_after_a_restart(tmp_path: Path) -> None:
    async def first(engine: Engine) -> None:
        await engine.execute(
            "CREATE SOURCE TABLE users (id STRING PRIMARY KEY, n INT) "
            "WITH (kafka_topic='users', value_format='JSON', partitions=1);"
            "CREATE STREAM users_in (id STRING KEY, n INT) WITH (kafka_topic='users', value_format='JSON');"
            "INSERT INTO users_in (id, n) VALUES ('x', 1);"
            "INSERT INTO users_in (id, n) VALUES ('y', 2);")

        async def scan() -> list:
            return sorted((await one(engine, "SELECT * FROM users;")).rows)
        assert await eventually(scan, [("x", 1), ("y", 2)]) == [("x", 1), ("y", 2)]

    async def second(engine: Engine) -> None:
        async def lookup() -> list:
            return (await one(engine, "SELECT n FROM users WHERE id = 'y';")).rows
        assert await eventually(lookup, [(2,)]) == [(2,)]

    run(tmp_path, first)
    run(tmp_path, second)


def test_plain_table_is_still_not_queryable(tmp_path: Path) -> None:
    async def body(engine: Engine) -> None:
        await engine.execute("CREATE TABLE t (id INT PRIMARY KEY, v INT) "
                             "WITH (kafka_topic='t', value_format='JSON', partitions=1);")
        assert await refused(engine, "SELECT * FROM t WHERE id = 1;") == (
            "The `T` table isn't queryable. To derive a queryable table, you can do "
            "'CREATE TABLE QUERYABLE_T AS SELECT * FROM T'." + PULL_QUERY_SYNTAX_HELP)
    run(tmp_path, body)


# ---------------------------------------------------------------------------- validation
AGG = ("CREATE STREAM input (id INT KEY, col INT, name STRING) "
       "WITH (kafka_topic='input', format='JSON', partitions=1);"
       "CREATE TABLE agg AS SELECT id, COUNT(1) AS count FROM input GROUP BY id;"
       "CREATE TABLE agg2 AS SELECT id, col, COUNT(1) AS count FROM input GROUP BY id, col;"
       "CREATE TABLE sagg AS SELECT name, COUNT(1) AS count FROM input GROUP BY name;"
       "CREATE TABLE wagg AS SELECT id, COUNT(1) AS count FROM input "
       "WINDOW TUMBLING (SIZE 1 SECOND) GROUP BY id;")
NO_SCAN = {"ksql.query.pull.table.scan.enabled": False}


def test_pull_query_clauses_are_refused_as_ksqldb_does(tmp_path: Path) -> None:
    async def body(engine: Engine) -> None:
        await engine.execute(AGG)
        for sql, what in [("SELECT id, COUNT(*) FROM input GROUP BY id;", "GROUP BY clauses"),
                          ("SELECT * FROM input WINDOW TUMBLING (SIZE 1 SECOND);", "WINDOW clauses"),
                          ("SELECT * FROM input PARTITION BY col;", "PARTITION BY clauses"),
                          ("SELECT * FROM agg LIMIT -1;", "negative integers in the LIMIT clause")]:
            message = await refused(engine, sql)
            assert message == f"Pull queries don't support {what}.{PULL_QUERY_SYNTAX_HELP}", sql
        message = await refused(engine, "SELECT * FROM input LIMIT 3;",
                                **{"ksql.query.pull.limit.clause.enabled": False})
        assert message.startswith("LIMIT clause in pull queries is currently disabled.")
        assert (await refused(engine, "SELECT id, ROWPARTITION FROM input;")) == \
            "Pull queries don't support the following columns in SELECT clauses: `ROWPARTITION`"
        assert (await refused(engine, "SELECT * FROM agg WHERE id = 1 AND ROWOFFSET < 3;")) == \
            "Pull queries don't support the following columns in WHERE clauses: `ROWOFFSET`"
        # Not a pull query: the rules do not apply.
        push = await one(engine, "SELECT id, ROWPARTITION FROM input EMIT CHANGES LIMIT 1;")
        await push.stream.aclose()
    run(tmp_path, body)


def test_limit_must_be_an_integer_and_persistent_queries_have_none(tmp_path: Path) -> None:
    async def body(engine: Engine) -> None:
        await engine.execute(AGG)
        assert "Failed to prepare statement: Value must be integer for command: LIMIT" in \
            await refused(engine, "SELECT * FROM input LIMIT 2.5;")
        assert "CREATE STREAM AS SELECT statements don't support LIMIT clause." in \
            await refused(engine, "CREATE STREAM s2 AS SELECT * FROM input LIMIT 5;")
        assert "CREATE TABLE AS SELECT statements don't support LIMIT clause." in \
            await refused(engine, "CREATE TABLE t2 AS SELECT id, COUNT(*) AS c FROM input GROUP BY id LIMIT 5;")
        assert engine.catalog.source("S2") is None and engine.catalog.source("T2") is None
    run(tmp_path, body)


def test_where_errors_of_pull_queries(tmp_path: Path) -> None:
    async def body(engine: Engine) -> None:
        await engine.execute(AGG)
        # Types: the WHERE is quoted, as ksqlDB's FilterTypeValidator does.
        assert await refused(engine, "SELECT * FROM agg WHERE id = '10';") == (
            "Error in WHERE expression: Cannot compare ID (INTEGER) to '10' (STRING) with EQUAL."
            "\nStatement: (ID = '10')")
        assert await refused(engine, "SELECT * FROM agg WHERE id = NULL;") == (
            "Error in WHERE expression: Comparison with NULL not supported: INTEGER = NULL\n"
            "Use 'IS NULL' or 'IS NOT NULL' instead.\nStatement: (ID = null)")
        assert await refused(engine, "SELECT * FROM wagg WHERE id IN ('10', 8);") == \
            "'10' can not be converted to the type of the key column: ID INTEGER KEY"
        assert await refused(engine, "SELECT * FROM agg WHERE id LIKE '1%';") == \
            "The column type for Like condition must be VARCHAR. The column type is INTEGER"
        # Table scans on (ksqlDB's default): anything goes.
        for sql in ["SELECT * FROM agg WHERE id != 1;", "SELECT * FROM agg WHERE id + 10 = 20;",
                    "SELECT * FROM agg WHERE id = count - 1;", "SELECT * FROM agg2 WHERE id = 10;",
                    "SELECT * FROM agg WHERE count > 1;", "SELECT * FROM agg;",
                    "SELECT * FROM agg WHERE id >= 12;"]:
            assert (await one(engine, sql)).kind == "rows", sql
        # Table scans off: the WHERE must pin the key.
        cases = [
            ("SELECT * FROM sagg WHERE name != '100';",
             "Bound on key columns '[`NAME` STRING KEY]' must currently be '='. \n"),
            ("SELECT * FROM agg WHERE id + 10 = 20;", "A comparison must directly reference a key column."),
            ("SELECT * FROM agg WHERE id = count - 1;",
             "A comparison must be between a key column and a resolvable expression."),
            ("SELECT * FROM agg WHERE id IN (2, count + 1, 3);",
             "A comparison must be between a key column and a resolvable expression."),
            ("SELECT * FROM agg2 WHERE id = 10;",
             "Multi-column sources must specify every key in the WHERE clause."),
            ("SELECT * FROM agg WHERE count > 1;", "WHERE clause missing key column for disjunct: (COUNT > 1)"),
            ("SELECT * FROM agg WHERE id = 1 OR count > 1;", "WHERE clause missing key column for disjunct"),
            ("SELECT * FROM agg;", "Missing WHERE clause"),
            ("SELECT * FROM agg WHERE id >= 12;", "Query requires table scan to be enabled"),
        ]
        for sql, message in cases:
            assert message in await refused(engine, sql, **NO_SCAN), sql
        # What needs no scan is answered.
        for sql in ["SELECT * FROM agg WHERE id = 1;", "SELECT * FROM agg WHERE id IN (1, 2) AND count > 1;",
                    "SELECT * FROM agg2 WHERE id = 1 AND col = 2;", "SELECT * FROM sagg WHERE name >= 'a';",
                    "SELECT * FROM wagg WHERE id = 1 AND WINDOWSTART >= 1000;",
                    "SELECT * FROM agg WHERE id = 1 OR id = 2;"]:
            assert (await one(engine, sql, **NO_SCAN)).kind == "rows", sql
    run(tmp_path, body)


def test_comparison_with_a_bare_null_is_refused_everywhere(tmp_path: Path) -> None:
    async def body(engine: Engine) -> None:
        await engine.execute(AGG)
        message = await refused(engine, "CREATE STREAM s3 AS SELECT * FROM input WHERE col = NULL;")
        assert message.startswith("Error in WHERE expression: Comparison with NULL not supported: "
                                  "INTEGER = NULL\nUse 'IS NULL' or 'IS NOT NULL' instead.")
        message = await refused(engine, "CREATE STREAM s3 AS SELECT id, NULL <> NULL AS x FROM input;")
        assert message.startswith("Comparison with NULL not supported: NULL <> NULL")
        # IS [NOT] DISTINCT FROM is how to compare with NULL.
        await engine.execute("CREATE STREAM s4 AS SELECT * FROM input WHERE col IS DISTINCT FROM NULL;")
    run(tmp_path, body)

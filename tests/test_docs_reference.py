"""The examples of ksqlDB 0.29's SQL reference pages, walked statement by statement, in order,
on a fresh server over HTTP (the real server on a loopback socket, ``/ksql``, ``/query`` and
``/query-stream`` as ksqlDB's clients use them). Each statement either works, checked by what a
user would look at (its rows, the source's columns, the records a query wrote, a query's
state), or fails with ksqlDB's own message.

The pages cannot be fetched from here: the examples are written from the pages as published
for ksqlDB 0.29 (docs/developer-guide/ksqldb-reference/), kept as close to their text as known.
The pages show statements, not data: the CREATE and INSERT statements marked ``# data`` give
each example something to answer and are not part of the page. Blocks, by page:

* ``SELECT (Pull Query)`` (select-pull-query.md): the windowed ``pageviews_by_region`` lookups
  with WINDOWSTART/WINDOWEND bounds as epoch milliseconds, as ISO-8601 strings and with a time
  zone, with no bounds, one window by its start; the ``GRADES``/``TOP_TEN_RANKS`` table (key
  lookup, table scan, range scan, IN list, LIMIT); the ``STUDENTS`` stream (a pull query on a
  stream); pseudo columns and a plain (not materialized) table refused.
* ``SELECT (Push Query)`` (select-push-query.md): ``pageviews`` with ROWTIME bounds as numbers,
  as strings and with a time zone, ROWPARTITION/ROWOFFSET, LIMIT; the WINDOW TUMBLING, HOPPING
  and SESSION examples and the CASE example on ``orders``; LIKE on ``users``; BETWEEN on
  ``events``.
* ``ALTER STREAM`` / ``ALTER TABLE`` (alter-stream.md, alter-table.md): ADD [COLUMN], several at
  once, the new columns written and read; ALTER of a CREATE ... AS source, of a table as a
  stream and of an existing column refused.
* ``ALTER SYSTEM`` (alter-system.md): ``ALTER SYSTEM 'auto.offset.reset'='earliest';``, seen by
  the next push query.
* ``ASSERT TOPIC`` (assert-topic.md) and ``ASSERT SCHEMA`` (assert-schema.md): existing and
  missing topics and subjects, WITH properties, NOT EXISTS, TIMEOUT.
* ``PAUSE`` / ``RESUME`` (pause.md, resume.md): one query by id, then ALL.
* ``INSERT VALUES`` (insert-values.md): the page's four statements into ``foo`` (ROWTIME given,
  all columns without a column list, a column list, a missing column), a STRUCT value, and a
  column list that does not match the values.
"""
from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest

from streamsql.server.testing import node_in_process

pytestmark = pytest.mark.timeout(240)

EARLIEST = {"auto.offset.reset": "earliest"}


# ============================================================================ the walker
@dataclass(frozen=True)
class Ok:
    """The statement works; ``check`` looks at its /ksql entities."""

    check: Callable[[list[dict[str, Any]]], Any] | None = None


@dataclass(frozen=True)
class Fails:
    """The statement is refused with ksqlDB's message (``message`` is all of it) and HTTP
    status (417 Expectation Failed for a failed ASSERT)."""

    message: str
    status: int = 400


@dataclass(frozen=True)
class Rows:
    """A pull query's rows (in any order), and its columns when given."""

    rows: list[list[Any]]
    columns: str | None = None


@dataclass(frozen=True)
class Push:
    """A push query's rows (in any order): read until they came (and no other), then closed. With
    ``final`` (the number of leading columns naming a row's key and window): the last row
    of each key and window instead, as an aggregation's changes end (ksqlDB may or may not
    show the updates before, depending on its cache)."""

    rows: list[list[Any]]
    properties: dict[str, Any] | None = None
    final: int = 0


def _last_per_key(rows: list[list[Any]], width: int) -> list[list[Any]]:
    """The last row per key and window; a row whose aggregate is NULL deletes its window (a
    session merged into a longer one)."""
    last: dict[str, list[Any]] = {}
    for row in rows:
        if row[-1] is None:
            last.pop(repr(row[:width]), None)
        else:
            last[repr(row[:width])] = row
    return sorted(last.values(), key=repr)


Step = tuple[str, Any]


async def _ksql(c: httpx.AsyncClient, sql: str) -> httpx.Response:
    return await c.post("/ksql", json={"ksql": sql, "streamsProperties": {}})


async def _pull(c: httpx.AsyncClient, sql: str, want: Rows) -> None:
    # A table's rows arrive asynchronously: ask again until they are all there.
    deadline = time.monotonic() + 20
    while True:
        r = await c.post("/query", json={"ksql": sql, "streamsProperties": {}})
        assert r.status_code == 200, (sql, r.text)
        answer = r.json()
        rows = [x["row"]["columns"] for x in answer if "row" in x]
        if sorted(map(repr, rows)) == sorted(map(repr, want.rows)) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert sorted(rows, key=repr) == sorted(want.rows, key=repr), sql
    if want.columns is not None:
        assert answer[0]["header"]["schema"] == want.columns, sql


async def _push(c: httpx.AsyncClient, sql: str, want: Push) -> None:
    rows: list[Any] = []

    async def read() -> None:
        async with c.stream("POST", "/query-stream",
                            json={"sql": sql, "properties": want.properties or {}}) as r:
            assert r.status_code == 200, (sql, await r.aread())
            async for line in r.aiter_lines():
                if not line.strip():
                    continue
                item = json.loads(line)
                if isinstance(item, dict):  # the header (an error would be one too)
                    assert "queryId" in item, (sql, item)
                    continue
                rows.append(item)
                if seen() == expected:
                    return  # the user has seen enough: the query is closed

    def seen() -> list[Any]:
        return _last_per_key(rows, want.final) if want.final else sorted(rows, key=repr)
    expected = sorted(want.rows, key=repr)
    try:
        await asyncio.wait_for(read(), 20)
    except asyncio.TimeoutError:
        pass
    assert seen() == expected, sql


async def walk(c: httpx.AsyncClient, steps: list[Step]) -> None:
    for sql, want in steps:
        if isinstance(want, Rows):
            await _pull(c, sql, want)
        elif isinstance(want, Push):
            await _push(c, sql, want)
        elif isinstance(want, Fails):
            endpoint = "/query" if sql.lstrip().upper().startswith("SELECT") else "/ksql"
            body = {"ksql": sql, "streamsProperties": {}}
            r = await c.post(endpoint, json=body)
            assert r.status_code == want.status, (sql, r.text)
            assert r.json()["message"] == want.message, sql
        else:
            r = await _ksql(c, sql)
            assert r.status_code == 200, (sql, r.text)
            if want is not None and want.check is not None:
                want.check(r.json())


def run_page(tmp_path: Path, steps: Callable[[httpx.AsyncClient], Any], config: dict | None = None) -> None:
    async def main() -> None:
        async with node_in_process(tmp_path / "data", config) as (url, _app), \
                httpx.AsyncClient(base_url=url, timeout=60) as c:
            await steps(c)
    asyncio.run(main())


async def _described(c: httpx.AsyncClient, source: str) -> list[tuple[str, str]]:
    r = await _ksql(c, f"DESCRIBE {source};")
    assert r.status_code == 200, r.text
    return [(f["name"], f["schema"]["type"]) for f in r.json()[0]["sourceDescription"]["fields"]]


async def _query_id(c: httpx.AsyncClient, sink: str) -> str:
    r = await _ksql(c, "SHOW QUERIES;")
    [query] = [q for q in r.json()[0]["queries"] if sink in q["sinks"]]
    return query["id"]


async def _state(c: httpx.AsyncClient, query_id: str) -> str:
    r = await _ksql(c, "SHOW QUERIES;")
    [query] = [q for q in r.json()[0]["queries"] if q["id"] == query_id]
    return query["state"]


def _status(*texts: str) -> Callable[[list[dict[str, Any]]], None]:
    def check(entities: list[dict[str, Any]]) -> None:
        assert [e["commandStatus"]["message"] for e in entities] == list(texts)
    return check


# ====================================================================== SELECT (Pull Query)
# 2019-10-03T10:00:00Z and 2019-10-02T20:00:00Z: inside and outside the page's bounds (both
# within the windows' retention, one hour plus the default grace of a day).
IN_BOUNDS, OUT_OF_BOUNDS, HOUR = 1570096800000, 1570046400000, 3_600_000


def test_select_pull_query_page(tmp_path: Path) -> None:
    # (in time order: a record two days late would be past the windows' grace period)
    views = [("Region_1", OUT_OF_BOUNDS), ("Region_1", IN_BOUNDS), ("Region_1", IN_BOUNDS + 60_000),
             ("Region_2", IN_BOUNDS)]
    region_1 = ["Region_1", IN_BOUNDS, IN_BOUNDS + HOUR, 2]

    async def steps(c: httpx.AsyncClient) -> None:
        await walk(c, [
            ("CREATE STREAM pageviews (viewtime BIGINT, userid VARCHAR, pageid VARCHAR, regionid VARCHAR) "
             "WITH (kafka_topic='pageviews', value_format='JSON', partitions=2);", Ok()),  # data
            ("CREATE TABLE pageviews_by_region AS SELECT regionid, COUNT(*) AS numusers FROM pageviews "
             "WINDOW TUMBLING (SIZE 1 HOUR) GROUP BY regionid EMIT CHANGES;", Ok()),  # data
            # (after the query: it reads from 'latest', ksqlDB's default)
            *[(f"INSERT INTO pageviews (ROWTIME, viewtime, userid, pageid, regionid) VALUES "
               f"({t}, {t}, 'User_{i}', 'Page_{i}', '{r}');", Ok()) for i, (r, t) in enumerate(views)],  # data
            # The page's examples.
            ("SELECT * FROM pageviews_by_region WHERE regionId = 'Region_1' "
             "AND 1570051876000 <= WINDOWSTART AND WINDOWEND <= 1570138276000;",
             Rows([region_1], "`REGIONID` STRING KEY, `WINDOWSTART` BIGINT KEY, `WINDOWEND` BIGINT KEY, "
                              "`NUMUSERS` BIGINT")),
            ("SELECT * FROM pageviews_by_region WHERE regionId = 'Region_1' "
             "AND '2019-10-02T21:31:16' <= WINDOWSTART AND WINDOWEND <= '2019-10-03T21:31:16';", Rows([region_1])),
            ("SELECT * FROM pageviews_by_region WHERE regionId = 'Region_1' "
             "AND '2019-10-02T18:01:16-0330' <= WINDOWSTART AND WINDOWEND <= '2019-10-03T18:01:16-0330';",
             Rows([region_1])),
            ("SELECT * FROM pageviews_by_region WHERE regionId = 'Region_1';",
             Rows([region_1, ["Region_1", OUT_OF_BOUNDS, OUT_OF_BOUNDS + HOUR, 1]])),
            # One window by its start.
            (f"SELECT * FROM pageviews_by_region WHERE regionId = 'Region_1' AND WINDOWSTART = {IN_BOUNDS};",
             Rows([region_1])),
            ("SELECT * FROM pageviews_by_region WHERE regionId = 'Region_3';", Rows([])),
            ("CREATE TABLE GRADES (ID INT PRIMARY KEY, GRADE STRING, RANK INT) "
             "WITH (kafka_topic = 'test_topic', value_format = 'JSON', partitions = 4);", Ok()),
            ("CREATE TABLE TOP_TEN_RANKS AS SELECT ID, RANK FROM GRADES WHERE RANK <= 10;", Ok()),
            *[(f"INSERT INTO GRADES (ID, GRADE, RANK) VALUES ({i}, '{g}', {r});", Ok())  # data
              for i, g, r in [(1, "A", 1), (5, "B", 5), (8, "C", 8), (11, "D", 11)]],
            ("SELECT * FROM TOP_TEN_RANKS;", Rows([[1, 1], [5, 5], [8, 8]], "`ID` INTEGER KEY, `RANK` INTEGER")),
            ("SELECT * FROM TOP_TEN_RANKS WHERE ID = 5;", Rows([[5, 5]])),
            ("SELECT * FROM TOP_TEN_RANKS WHERE RANK < 6;", Rows([[1, 1], [5, 5]])),
            ("SELECT * FROM TOP_TEN_RANKS WHERE ID IN (1, 8);", Rows([[1, 1], [8, 8]])),
            ("SELECT * FROM TOP_TEN_RANKS WHERE ID < 6;", Rows([[1, 1], [5, 5]])),
            ("SELECT ID FROM TOP_TEN_RANKS WHERE ID >= 5 AND ID <= 8;", Rows([[5], [8]])),
            # Pull queries on streams (0.23+): a scan of the topic.
            ("CREATE STREAM STUDENTS (ID STRING KEY, SCORE INT) "
             "WITH (kafka_topic='students_topic', value_format='JSON', partitions=4);", Ok()),
            ("INSERT INTO STUDENTS (ID, SCORE) VALUES ('ann', 91);"
             "INSERT INTO STUDENTS (ID, SCORE) VALUES ('bob', 75);"
             "INSERT INTO STUDENTS (ID, SCORE) VALUES ('cid', 82);", Ok()),  # data
            ("SELECT * FROM STUDENTS WHERE SCORE > 80;", Rows([["ann", 91], ["cid", 82]],
                                                               "`ID` STRING, `SCORE` INTEGER")),
            ("SELECT * FROM pageviews WHERE regionid = 'Region_2';",
             Rows([[IN_BOUNDS, "User_3", "Page_3", "Region_2"]])),
            # Pseudo columns a table's row does not keep.
            ("SELECT ROWPARTITION, * FROM TOP_TEN_RANKS WHERE ID = 5;",
             Fails("Pull queries don't support the following columns in SELECT clauses: `ROWPARTITION`")),
            # Only tables a query materializes are queryable.
            ("SELECT * FROM GRADES WHERE ID = 5;", Fails(
                "The `GRADES` table isn't queryable. To derive a queryable table, you can do "
                "'CREATE TABLE QUERYABLE_GRADES AS SELECT * FROM GRADES'. See https://cnfl.io/queries "
                "for more info.\nAdd EMIT CHANGES if you intended to issue a push query.")),
        ])
        # LIMIT: any two of the three rows (a table's answer has no finalMessage, a stream's has).
        r = await c.post("/query", json={"ksql": "SELECT * FROM TOP_TEN_RANKS LIMIT 2;"})
        rows = [x["row"]["columns"] for x in r.json() if "row" in x]
        assert len(rows) == 2 and all(row in [[1, 1], [5, 5], [8, 8]] for row in rows)
        r = await c.post("/query", json={"ksql": "SELECT * FROM pageviews LIMIT 3;"})
        answer = r.json()
        assert len([x for x in answer if "row" in x]) == 3 and answer[-1] == {"finalMessage": "Limit Reached"}
    run_page(tmp_path, steps)


# ====================================================================== SELECT (Push Query)
# 2017-11-17T12:53:45Z (the page's number), then 04:53:46Z and 08:23:46Z (04:53:46-0330).
AT = 1510923225000
AT_UTC_TEXT = 1510894426000
AT_NEWFOUNDLAND = 1510907026000


def test_select_push_query_page(tmp_path: Path) -> None:
    times = [AT, AT + 1000, AT + 5000, AT_UTC_TEXT, AT_NEWFOUNDLAND]

    def view(t: int) -> list[Any]:
        return [t, f"User_{t % 7}", f"Page_{t % 5}"]

    async def steps(c: httpx.AsyncClient) -> None:
        await walk(c, [
            ("CREATE STREAM pageviews (viewtime BIGINT, userid VARCHAR, pageid VARCHAR) "
             "WITH (kafka_topic='pageviews', value_format='JSON', partitions=1);", Ok()),  # data
            *[(f"INSERT INTO pageviews (ROWTIME, viewtime, userid, pageid) VALUES "
               f"({t}, {t}, 'User_{t % 7}', 'Page_{t % 5}');", Ok()) for t in times],  # data
            ("SELECT * FROM pageviews EMIT CHANGES;", Push([view(t) for t in times], EARLIEST)),
            ("SELECT ROWPARTITION, ROWOFFSET, pageid FROM pageviews EMIT CHANGES;",
             Push([[0, i, view(t)[2]] for i, t in enumerate(times)], EARLIEST)),
            ("SELECT * FROM pageviews WHERE ROWTIME >= 1510923225000 AND ROWTIME <= 1510923228000 "
             "EMIT CHANGES;", Push([view(AT), view(AT + 1000)], EARLIEST)),
            ("SELECT * FROM pageviews WHERE ROWTIME >= '2017-11-17T04:53:45' "
             "AND ROWTIME <= '2017-11-17T04:53:48' EMIT CHANGES;", Push([view(AT_UTC_TEXT)], EARLIEST)),
            ("SELECT * FROM pageviews WHERE ROWTIME >= '2017-11-17T04:53:45-0330' "
             "AND ROWTIME <= '2017-11-17T04:53:48-0330' EMIT CHANGES;", Push([view(AT_NEWFOUNDLAND)], EARLIEST)),
            # (one orders stream with the columns of the page's two orders examples)
            ("CREATE STREAM orders (orderid INT KEY, itemid VARCHAR, orderunits DOUBLE, item_id VARCHAR, "
             "quantity INT) WITH (kafka_topic='orders', value_format='JSON', partitions=1);", Ok()),  # data
            ("INSERT INTO orders (ROWTIME, orderid, itemid, orderunits, item_id, quantity) "
             "VALUES (1000, 1, 'Item_1', 1.5, 'apple', 2);"
             "INSERT INTO orders (ROWTIME, orderid, itemid, orderunits, item_id, quantity) "
             "VALUES (2000, 2, 'Item_2', 3.0, 'pear', 1);"
             "INSERT INTO orders (ROWTIME, orderid, itemid, orderunits, item_id, quantity) "
             "VALUES (12000, 3, 'Item_3', 4.0, 'apple', 5);"
             "INSERT INTO orders (ROWTIME, orderid, item_id, quantity) VALUES (25000, 4, 'apple', 1);", Ok()),  # data
            ("SELECT windowstart, windowend, item_id, SUM(quantity) FROM orders "
             "WINDOW TUMBLING (SIZE 20 SECONDS) GROUP BY item_id EMIT CHANGES;",
             Push([[0, 20_000, "apple", 7], [0, 20_000, "pear", 1], [20_000, 40_000, "apple", 1]], EARLIEST, 3)),
            # A record is in every 20 s window starting at a multiple of 5 s before it (none before 0).
            ("SELECT windowstart, windowend, item_id, SUM(quantity) FROM orders "
             "WINDOW HOPPING (SIZE 20 SECONDS, ADVANCE BY 5 SECONDS) GROUP BY item_id EMIT CHANGES;",
             Push([[0, 20_000, "apple", 7], [5_000, 25_000, "apple", 5], [10_000, 30_000, "apple", 6],
                   [15_000, 35_000, "apple", 1], [20_000, 40_000, "apple", 1], [25_000, 45_000, "apple", 1],
                   [0, 20_000, "pear", 1]], EARLIEST, 3)),
            # apple's gaps (11 s, 13 s) are under 20 s: one session.
            ("SELECT windowstart, windowend, item_id, SUM(quantity) FROM orders "
             "WINDOW SESSION (20 SECONDS) GROUP BY item_id EMIT CHANGES;",
             Push([[1_000, 25_000, "apple", 8], [2_000, 2_000, "pear", 1]], EARLIEST, 3)),
            ("SELECT orderid, itemid, CASE WHEN orderunits < 2.0 THEN 'small' WHEN orderunits < 4.0 THEN 'medium' "
             "ELSE 'large' END AS case_result FROM orders EMIT CHANGES;",
             Push([[1, "Item_1", "small"], [2, "Item_2", "medium"], [3, "Item_3", "large"],
                   [4, None, "large"]], EARLIEST)),
            ("CREATE STREAM users (user_id VARCHAR, name VARCHAR) "
             "WITH (kafka_topic='users', value_format='JSON', partitions=1);", Ok()),  # data
            ("INSERT INTO users (user_id, name) VALUES ('santa_1', 'Nick');"
             "INSERT INTO users (user_id, name) VALUES ('elf_2', 'Buddy');"
             "INSERT INTO users (user_id, name) VALUES ('santaclaus', 'Kris');", Ok()),  # data
            ("SELECT user_id FROM users WHERE user_id LIKE 'santa%' EMIT CHANGES;",
             Push([["santa_1"], ["santaclaus"]], EARLIEST)),
            ("CREATE STREAM events (event_id INT, event VARCHAR) "
             "WITH (kafka_topic='events', value_format='JSON', partitions=1);", Ok()),  # data
            (";".join(f"INSERT INTO events (event_id, event) VALUES ({i}, 'e{i}')" for i in (5, 10, 15, 20, 25))
             + ";", Ok()),  # data
            ("SELECT event FROM events WHERE event_id BETWEEN 10 AND 20 EMIT CHANGES;",
             Push([["e10"], ["e15"], ["e20"]], EARLIEST)),
        ])
        # LIMIT ends the query by itself, with the rows asked for.
        r = await c.post("/query", json={"ksql": "SELECT pageid FROM pageviews EMIT CHANGES LIMIT 2;",
                                         "streamsProperties": EARLIEST})
        answer = r.json()
        assert [x["row"]["columns"] for x in answer if "row" in x] == [[view(AT)[2]], [view(AT + 1000)[2]]]
        assert answer[-1] == {"finalMessage": "Limit Reached"}
    run_page(tmp_path, steps)


# ============================================================================ ALTER STREAM/TABLE
def test_alter_stream_and_alter_table_pages(tmp_path: Path) -> None:
    async def steps(c: httpx.AsyncClient) -> None:
        await walk(c, [
            ("CREATE STREAM my_stream (id INT KEY, col1 VARCHAR) "
             "WITH (kafka_topic='my_stream', value_format='JSON', partitions=1);", Ok()),  # data
            ("ALTER STREAM my_stream ADD COLUMN col2 INT;", Ok(_status("Source MY_STREAM has been altered."))),
            ("ALTER STREAM my_stream ADD COLUMN col3 VARCHAR, ADD col4 BIGINT;", Ok()),
            ("CREATE TABLE my_table (id INT PRIMARY KEY, col1 VARCHAR) "
             "WITH (kafka_topic='my_table', value_format='JSON', partitions=1);", Ok()),  # data
            ("ALTER TABLE my_table ADD COLUMN col2 INT;", Ok(_status("Source MY_TABLE has been altered."))),
        ])
        assert await _described(c, "my_stream") == [("ID", "INTEGER"), ("COL1", "STRING"), ("COL2", "INTEGER"),
                                                     ("COL3", "STRING"), ("COL4", "BIGINT")]
        assert await _described(c, "my_table") == [("ID", "INTEGER"), ("COL1", "STRING"), ("COL2", "INTEGER")]
        await walk(c, [
            ("INSERT INTO my_stream (id, col1, col2, col3, col4) VALUES (1, 'a', 2, 'c', 4);", Ok()),  # data
            ("SELECT * FROM my_stream;", Rows([[1, "a", 2, "c", 4]])),
            ("CREATE STREAM derived AS SELECT * FROM my_stream;", Ok()),  # data
            ("ALTER STREAM derived ADD COLUMN col5 INT;",
             Fails("ALTER command is not supported for CREATE ... AS statements.")),
            ("ALTER STREAM my_table ADD COLUMN col3 INT;",
             Fails("Incompatible data source type is TABLE, but statement was ALTER STREAM")),
            ("ALTER STREAM my_stream ADD COLUMN col1 INT;",
             Fails("Cannot add column `COL1` to schema. A column with the same name already exists.")),
        ])
    run_page(tmp_path, steps)


# =================================================================================== ALTER SYSTEM
def test_alter_system_page(tmp_path: Path) -> None:
    async def steps(c: httpx.AsyncClient) -> None:
        await walk(c, [
            ("CREATE STREAM s (id INT KEY, v VARCHAR) "
             "WITH (kafka_topic='s', value_format='JSON', partitions=1);", Ok()),  # data
            ("INSERT INTO s (id, v) VALUES (1, 'before');", Ok()),  # data
            ("ALTER SYSTEM 'auto.offset.reset'='earliest';",
             Ok(_status("System property auto.offset.reset was set to earliest."))),
            # The next push query (no property of its own) reads from the start.
            ("SELECT * FROM s EMIT CHANGES;", Push([[1, "before"]])),
        ])
    run_page(tmp_path, steps)


# ===================================================================== ASSERT TOPIC / ASSERT SCHEMA
def test_assert_topic_and_assert_schema_pages(tmp_path: Path) -> None:
    def exists(kind: str, value: bool) -> Ok:
        def check(entities: list[dict[str, Any]]) -> None:
            assert [(e["@type"], e["exists"]) for e in entities] == [(kind, value)]
        return Ok(check)

    async def steps(c: httpx.AsyncClient) -> None:
        await walk(c, [("CREATE STREAM s (id INT KEY, v VARCHAR) "
                        "WITH (kafka_topic='my_topic', value_format='AVRO', partitions=3);", Ok())])  # data
        # The id the CREATE registered its value schema under, as the schema registry says.
        r = await c.get("/schema-registry/subjects/my_topic-value/versions/latest")
        assert r.status_code == 200, r.text
        schema_id = r.json()["id"]
        await walk(c, [
            ("ASSERT TOPIC my_topic;", exists("assert_topic", True)),
            ("ASSERT TOPIC my_topic WITH (PARTITIONS=3, REPLICAS=3) TIMEOUT 1 SECONDS;",
             Fails("Mismatched configuration for topic my_topic: For config replicas, expected 3 got 1", 417)),
            ("ASSERT TOPIC my_topic WITH (PARTITIONS=3, REPLICAS=1) TIMEOUT 2 SECONDS;",
             exists("assert_topic", True)),
            ("ASSERT TOPIC my_topic WITH (PARTITIONS=1) TIMEOUT 1 SECONDS;",
             Fails("Mismatched configuration for topic my_topic: For config partitions, expected 1 got 3", 417)),
            ("ASSERT NOT EXISTS TOPIC other_topic;", exists("assert_topic", False)),
            ("ASSERT TOPIC other_topic TIMEOUT 1 SECONDS;", Fails("Topic other_topic does not exist", 417)),
            ("ASSERT NOT EXISTS TOPIC my_topic TIMEOUT 1 SECONDS;", Fails("Topic my_topic exists", 417)),
            ("ASSERT SCHEMA SUBJECT 'my_topic-value' TIMEOUT 2 SECONDS;", exists("assert_schema", True)),
            ("ASSERT NOT EXISTS SCHEMA SUBJECT 'other_topic-value';", exists("assert_schema", False)),
            ("ASSERT SCHEMA SUBJECT 'other_topic-value' TIMEOUT 1 SECONDS;",
             Fails("Schema with subject other_topic-value does not exist", 417)),
            (f"ASSERT SCHEMA SUBJECT 'my_topic-value' ID {schema_id} TIMEOUT 5 SECONDS;",
             exists("assert_schema", True)),
            (f"ASSERT SCHEMA ID {schema_id};", exists("assert_schema", True)),
            ("ASSERT NOT EXISTS SCHEMA ID 1000;", exists("assert_schema", False)),
            ("ASSERT SCHEMA ID 1000 TIMEOUT 1 SECONDS;", Fails("Schema with id 1000 does not exist", 417)),
        ])
    run_page(tmp_path, steps)


# =================================================================================== PAUSE / RESUME
def test_pause_and_resume_pages(tmp_path: Path) -> None:
    async def steps(c: httpx.AsyncClient) -> None:
        await walk(c, [
            ("CREATE STREAM orders (id INT KEY, amount INT) "
             "WITH (kafka_topic='orders', value_format='JSON', partitions=1);", Ok()),  # data
            ("CREATE STREAM big_orders AS SELECT * FROM orders WHERE amount > 10;", Ok()),  # data
            ("INSERT INTO orders (id, amount) VALUES (1, 11);", Ok()),  # data
            ("SELECT * FROM big_orders;", Rows([[1, 11]])),
        ])
        query_id = await _query_id(c, "BIG_ORDERS")
        await walk(c, [(f"PAUSE {query_id};", Ok(_status("Query paused.")))])
        assert await _state(c, query_id) == "PAUSED"
        await walk(c, [("INSERT INTO orders (id, amount) VALUES (2, 12);", Ok())])  # data
        await asyncio.sleep(1)
        await walk(c, [("SELECT * FROM big_orders;", Rows([[1, 11]]))])  # nothing while paused
        await walk(c, [(f"RESUME {query_id};", Ok(_status("Query resumed."))),
                       ("SELECT * FROM big_orders;", Rows([[1, 11], [2, 12]]))])
        assert await _state(c, query_id) == "RUNNING"
        await walk(c, [("PAUSE ALL;", Ok(_status("Query paused.")))])
        assert await _state(c, query_id) == "PAUSED"
        await walk(c, [("RESUME ALL;", Ok(_status("Query resumed."))),
                       ("PAUSE not_a_query;", Fails("Unknown queryId: NOT_A_QUERY"))])
        assert await _state(c, query_id) == "RUNNING"
    run_page(tmp_path, steps)


# ==================================================================================== INSERT VALUES
def test_insert_values_page(tmp_path: Path) -> None:
    async def steps(c: httpx.AsyncClient) -> None:
        await walk(c, [
            ("CREATE STREAM foo (KEY_COL VARCHAR KEY, COL_A VARCHAR) "
             "WITH (kafka_topic='foo', value_format='JSON', partitions=1);", Ok()),  # data
            # The page's four statements: ROWTIME given, then the current time.
            ("INSERT INTO foo (ROWTIME, KEY_COL, COL_A) VALUES (1510923225000, 'key', 'A');", Ok()),
            ("INSERT INTO foo VALUES ('key', 'A');", Ok()),
            ("INSERT INTO foo (KEY_COL, COL_A) VALUES ('key', 'A');", Ok()),
            ("INSERT INTO foo (KEY_COL) VALUES ('key');", Ok()),
            ("SELECT KEY_COL, COL_A FROM foo;", Rows([["key", "A"], ["key", "A"], ["key", "A"], ["key", None]])),
        ])
        r = await c.post("/query", json={"ksql": "SELECT ROWTIME FROM foo;"})
        times = [x["row"]["columns"][0] for x in r.json() if "row" in x]
        assert times[0] == 1510923225000 and all(abs(t - time.time() * 1000) < 60_000 for t in times[1:])
        await walk(c, [
            ("CREATE STREAM bar (ID BIGINT KEY, S STRUCT<C BIGINT, D VARCHAR>) "
             "WITH (kafka_topic='bar', value_format='JSON', partitions=1);", Ok()),  # data
            ("INSERT INTO bar (ID, S) VALUES (1, STRUCT(C := 5, D := 'x'));", Ok()),
            ("SELECT ID, S->C, S->D FROM bar;", Rows([[1, 5, "x"]])),
            ("INSERT INTO foo (KEY_COL, COL_A) VALUES ('key4');",
             Fails("Failed to prepare statement: Expected number columns and values to match: 2, 1")),
        ])
        # ROWTIME is a BIGINT: text is refused as for any BIGINT column (it once failed with a
        # bare Python error).
        r = await _ksql(c, "INSERT INTO foo (ROWTIME, KEY_COL, COL_A) VALUES ('2017-11-17', 'key', 'A');")
        assert r.status_code == 400 and r.json()["message"].startswith("Expected type BIGINT for field ROWTIME")
    run_page(tmp_path, steps)

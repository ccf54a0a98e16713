"""Push queries as ksqlDB shapes them: columns in SELECT order (the HTTP header marks none
KEY), a table's deletes as tombstone rows, and transient aggregations (GROUP BY, windows,
HAVING, aggregates alone), which run as real topologies with their own state and leave
nothing behind when they end (topics, consumer groups, state, running stages)."""
from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from streamsql.engine import Engine
from streamsql.errors import KsqlStatementException
from streamsql.results import Tombstone
from streamsql.runtime.log.base import ProducerRecord
from streamsql.runtime.log.embedded import EmbeddedLog

from tests.test_server_api import ksql, wait_until, with_node

pytestmark = pytest.mark.timeout(120)

STREAM = ("CREATE STREAM s (k INT KEY, id INT) "
          "WITH (kafka_topic='s', value_format='JSON', partitions=4);")


async def _open(path: Path) -> tuple[EmbeddedLog, Engine]:
    log = EmbeddedLog(path)
    engine = Engine(log, {"auto.offset.reset": "earliest"}, mode="service")
    await engine.start()
    return log, engine


async def _close(log: EmbeddedLog, engine: Engine) -> None:
    await engine.close()
    await log.close()


async def _rows(engine: Engine, sql: str) -> tuple[tuple[str, ...], list[tuple]]:
    result = (await engine.execute(sql))[-1]
    assert result.kind == "stream"
    rows = [row async for row in result.stream]
    return result.columns, rows


def _stage_tasks() -> list[asyncio.Task]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("stage-transient")]


async def _leftovers(log: EmbeddedLog, engine: Engine) -> dict[str, Any]:
    topics = [t for t in await log.list_topics() if "transient" in t]
    groups = [g for g in log._groups if "transient" in g]
    state = [p for p in (engine.state_dir.rglob("*transient*") if engine.state_dir and
                         engine.state_dir.exists() else [])]
    return {"topics": topics, "groups": groups, "state": state,
            "queries": list(engine.transient_queries), "tasks": _stage_tasks()}


def test_queries_read_from_latest_by_default(tmp_path: Path) -> None:
    """ksqlDB's default auto.offset.reset is 'latest': a push query, and a persistent query,
    see the rows written after they start (a row written as soon as CREATE answers is the
    query's); 'earliest', as a session or request property, under either of its names,
    reads the topic from its start."""
    async def main() -> None:
        log = EmbeddedLog(tmp_path)
        engine = Engine(log, mode="service")
        await engine.start()
        try:
            await engine.execute(STREAM)
            await engine.execute("INSERT INTO s (k, id) VALUES (1, 1);")
            result = (await engine.execute("SELECT k, id FROM s EMIT CHANGES LIMIT 1;"))[-1]
            await engine.execute("INSERT INTO s (k, id) VALUES (2, 2);")
            assert await asyncio.wait_for(_collect(result.stream), 10) == [(2, 2)]
            await engine.execute("CREATE STREAM out AS SELECT * FROM s;")
            await engine.execute("INSERT INTO s (k, id) VALUES (3, 3);")
            result = (await engine.execute("SELECT k, id FROM out EMIT CHANGES LIMIT 1;",
                                           {"auto.offset.reset": "earliest"}))[-1]
            assert await asyncio.wait_for(_collect(result.stream), 10) == [(3, 3)]
            result = (await engine.execute("SELECT k, id FROM s EMIT CHANGES LIMIT 3;",
                                           {"ksql.streams.auto.offset.reset": "earliest"}))[-1]
            assert sorted(await asyncio.wait_for(_collect(result.stream), 10)) == [(1, 1), (2, 2), (3, 3)]
        finally:
            await _close(log, engine)

    asyncio.run(main())


def test_push_query_on_a_stream_whose_topic_is_gone_is_an_error(tmp_path: Path) -> None:
    async def main() -> None:
        log, engine = await _open(tmp_path)
        try:
            await engine.execute(STREAM)
            await log.delete_topic("s")
            with pytest.raises(KsqlStatementException, match="Kafka topic does not exist: s"):
                await engine.execute("SELECT * FROM s EMIT CHANGES;")
        finally:
            await _close(log, engine)

    asyncio.run(main())


def test_push_columns_in_select_order(tmp_path: Path) -> None:
    async def main() -> None:
        log, engine = await _open(tmp_path)
        try:
            await engine.execute("CREATE STREAM t (k STRING KEY, id INT) "
                                 "WITH (kafka_topic='t', value_format='JSON', partitions=1);")
            await engine.execute("INSERT INTO t (k, id, rowtime) VALUES ('a', 1, 5);")
            columns, rows = await _rows(engine, "SELECT ROWTIME, k, id FROM t EMIT CHANGES LIMIT 1;")
            assert columns == ("ROWTIME", "K", "ID")
            assert rows == [(5, "a", 1)]
            columns, rows = await _rows(engine, "SELECT id, k FROM t EMIT CHANGES LIMIT 1;")
            assert (columns, rows) == (("ID", "K"), [(1, "a")])
        finally:
            await _close(log, engine)

    asyncio.run(main())


def test_push_aggregations_give_ksqldb_rows(tmp_path: Path) -> None:
    async def main() -> None:
        log, engine = await _open(tmp_path)
        try:
            await engine.execute(STREAM)
            await engine.execute("INSERT INTO s (k, id, rowtime) VALUES (0, 2, 10345);"
                                 "INSERT INTO s (k, id, rowtime) VALUES (1, 2, 13251);")
            assert await _rows(engine, "SELECT id, COUNT(*) AS c FROM s GROUP BY id EMIT CHANGES LIMIT 2;") \
                == (("ID", "C"), [(2, 1), (2, 2)])
            # The grouping key left out of the SELECT, a window's bounds, aggregates alone.
            assert await _rows(engine, "SELECT COUNT(1) AS c FROM s GROUP BY id EMIT CHANGES LIMIT 2;") \
                == (("C",), [(1,), (2,)])
            columns, rows = await _rows(
                engine, "SELECT windowstart, windowend, COUNT(1) AS c FROM s "
                        "WINDOW TUMBLING (SIZE 1 SECOND) GROUP BY k EMIT CHANGES LIMIT 2;")
            assert columns == ("WINDOWSTART", "WINDOWEND", "C")
            assert sorted(rows) == [(10000, 11000, 1), (13000, 14000, 1)]
            assert await _rows(engine, "SELECT COUNT(*) AS c FROM s EMIT CHANGES LIMIT 2;") \
                == (("C",), [(1,), (2,)])
            # HAVING: no row until it holds; a row it no longer holds for is a tombstone.
            await engine.execute("INSERT INTO s (k, id, rowtime) VALUES (0, 2, 13253);")
            assert await _rows(engine, "SELECT k FROM s GROUP BY k HAVING COUNT(k) > 1 "
                                       "EMIT CHANGES LIMIT 1;") == (("K",), [(0,)])
            await engine.execute("CREATE STREAM v (k INT KEY, val INT) "
                                 "WITH (kafka_topic='v', value_format='JSON', partitions=1);")
            await engine.execute("INSERT INTO v (k, val, rowtime) VALUES (11, 10, 1);"
                                 "INSERT INTO v (k, val, rowtime) VALUES (11, -20, 2);"
                                 "INSERT INTO v (k, val, rowtime) VALUES (11, 21, 3);")
            columns, rows = await _rows(engine, "SELECT k, SUM(val) AS total FROM v GROUP BY k "
                                                "HAVING SUM(val) > 0 EMIT CHANGES LIMIT 3;")
            assert rows == [(11, 10), (11, None), (11, 11)]
            assert type(rows[1]) is Tombstone and type(rows[0]) is tuple
            assert (await _leftovers(log, engine)) == {"topics": [], "groups": [], "state": [],
                                                       "queries": [], "tasks": []}
        finally:
            await _close(log, engine)

    asyncio.run(main())


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_two_hundred_push_aggregations_leave_nothing_behind(tmp_path: Path) -> None:
    async def main() -> None:
        log, engine = await _open(tmp_path)
        try:
            await engine.execute(STREAM)
            await engine.execute("INSERT INTO s (k, id) VALUES (0, 2);")
            before = set(await log.list_topics())
            threads, fds = threading.active_count(), _open_fds()
            for i in range(200):
                result = (await engine.execute(
                    "SELECT id, COUNT(*) AS c FROM s WINDOW TUMBLING (SIZE 1 SECOND) "
                    "GROUP BY id EMIT CHANGES" + (" LIMIT 1;" if i % 3 == 0 else ";")))[-1]
                assert result.query_id in engine.transient_queries
                assert any(t.startswith(engine.internal_name(result.query_id)) for t in await log.list_topics())
                if i % 3 == 0:  # to its LIMIT
                    assert [r async for r in result.stream] == [(2, 1)]
                elif i % 3 == 1:  # closed after a row
                    assert await result.stream.__anext__() == (2, 1)
                    await result.stream.aclose()
                else:  # closed before reading anything
                    await result.stream.aclose()
            assert set(await log.list_topics()) == before
            assert (await _leftovers(log, engine)) == {"topics": [], "groups": [], "state": [],
                                                       "queries": [], "tasks": []}
            assert not any("transient" in str(k[3]) for k in engine._codecs)
            assert threading.active_count() <= threads
            assert _open_fds() <= fds + 2  # (a segment file the log opened meanwhile)
            # An open one is closed with the engine.
            result = (await engine.execute("SELECT id, COUNT(*) FROM s GROUP BY id EMIT CHANGES;"))[-1]
            assert await result.stream.__anext__() == (2, 1)
        finally:
            await _close(log, engine)
        assert not engine.transient_queries and not _stage_tasks()

    asyncio.run(main())


def test_push_joins_of_every_kind(tmp_path: Path) -> None:
    """Push queries over stream-table, stream-stream (inner and outer) and table-table
    joins, including one that re-keys a side: rows in SELECT order, and nothing left
    behind once they end."""
    async def main() -> None:
        log, engine = await _open(tmp_path)
        try:
            for sql in [
                    STREAM,
                    "CREATE TABLE t (k INT PRIMARY KEY, name STRING) "
                    "WITH (kafka_topic='t', value_format='JSON', partitions=4);",
                    "CREATE STREAM s2 (k INT KEY, v STRING) "
                    "WITH (kafka_topic='s2', value_format='JSON', partitions=4);",
                    "CREATE TABLE u (k INT PRIMARY KEY, score INT) "
                    "WITH (kafka_topic='u', value_format='JSON', partitions=4);",
                    # (A stream row joins the table as of its time: the tables come first.)
                    "INSERT INTO t (k, name, rowtime) VALUES (1, 'one', 0);",
                    "INSERT INTO t (k, name, rowtime) VALUES (2, 'two', 0);",
                    "INSERT INTO u (k, score, rowtime) VALUES (2, 7, 10);",
                    "INSERT INTO s (k, id, rowtime) VALUES (1, 2, 1000);",
                    "INSERT INTO s (k, id, rowtime) VALUES (3, 1, 2000);",
                    "INSERT INTO s2 (k, v, rowtime) VALUES (1, 'x', 1500);"]:
                await engine.execute(sql)
            before = set(await log.list_topics())

            async def rows(sql: str, n: int) -> tuple[tuple[str, ...], list[tuple]]:
                result = (await engine.execute(sql))[-1]
                got = []
                async for row in result.stream:
                    got.append(row)
                    if len(got) == n:
                        await result.stream.aclose()
                return result.columns, got

            assert await rows("SELECT t.name, s.id, s.k FROM s JOIN t ON s.k = t.k EMIT CHANGES LIMIT 1;", 1) \
                == (("NAME", "ID", "S_K"), [("one", 2, 1)])
            # Left join: the unmatched row too; the join key of a re-keyed side.
            cols, got = await rows("SELECT s.id, t.name FROM s LEFT JOIN t ON s.id = t.k EMIT CHANGES;", 2)
            assert cols == ("ID", "NAME") and sorted(got) == [(1, "one"), (2, "two")]
            assert await rows("SELECT * FROM s JOIN s2 WITHIN 1 SECOND ON s.k = s2.k EMIT CHANGES;", 1) \
                == (("S_K", "S_ID", "S2_K", "S2_V"), [(1, 2, 1, "x")])
            # Table-table: every update of either side (key 2 first without, then with u's row).
            cols, got = await rows("SELECT t.k, name, score FROM t LEFT JOIN u ON t.k = u.k EMIT CHANGES;", 3)
            assert cols == ("T_K", "NAME", "SCORE")
            assert sorted(got, key=repr) == [(1, "one", None), (2, "two", 7), (2, "two", None)]
            assert got.index((2, "two", None)) < got.index((2, "two", 7))
            # GROUP BY over a join (a windowed one) and PARTITION BY over a join.
            cols, got = await rows("SELECT name, COUNT(*) AS n FROM s JOIN t ON s.k = t.k "
                                   "WINDOW TUMBLING (SIZE 1 HOUR) GROUP BY name EMIT CHANGES;", 1)
            assert (cols, got) == (("NAME", "N"), [("one", 1)])
            cols, got = await rows("SELECT t.name AS name, s.id AS id FROM s JOIN t ON s.k = t.k "
                                   "PARTITION BY t.name EMIT CHANGES;", 1)
            assert (cols, got) == (("NAME", "ID"), [("one", 2)])
            # A row arriving after the query started is joined too.
            result = (await engine.execute("SELECT s.k AS k, name FROM s JOIN t ON s.k = t.k EMIT CHANGES;"))[-1]
            assert await result.stream.__anext__() == (1, "one")
            await engine.execute("INSERT INTO s (k, id, rowtime) VALUES (2, 5, 3000);")
            assert await asyncio.wait_for(result.stream.__anext__(), 10) == (2, "two")
            await result.stream.aclose()
            assert set(await log.list_topics()) == before
            assert (await _leftovers(log, engine)) == {"topics": [], "groups": [], "state": [],
                                                       "queries": [], "tasks": []}
        finally:
            await _close(log, engine)

    asyncio.run(main())


def test_push_queries_over_http(tmp_path: Path) -> None:
    async def test(url: str, app: Any) -> None:
        props = {"streamsProperties": {"auto.offset.reset": "earliest"}}
        async with httpx.AsyncClient(base_url=url, timeout=30) as c:
            await ksql(c, "CREATE TABLE t (k INT PRIMARY KEY, id INT) "
                          "WITH (kafka_topic='t', value_format='JSON', partitions=1);")
            await ksql(c, STREAM)
            await ksql(c, "INSERT INTO t (k, id) VALUES (10, 110);")
            # A delete of the table's row 10 (a KAFKA-format INT key).
            await app.engine.log.produce("t", [ProducerRecord(b"\x00\x00\x00\x0a", None, 2)])
            await ksql(c, "INSERT INTO s (k, id, rowtime) VALUES (0, 2, 10345);"
                          "INSERT INTO s (k, id, rowtime) VALUES (1, 2, 13251);")
            r = await c.post("/query", json={"ksql": "SELECT id, k FROM t EMIT CHANGES LIMIT 2;", **props})
            body = orjson.loads(r.content)
            assert body[0]["header"]["schema"] == "`ID` INTEGER, `K` INTEGER"
            assert body[1:] == [{"row": {"columns": [110, 10]}},
                                {"row": {"columns": [None, 10], "tombstone": True}},
                                {"finalMessage": "Limit Reached"}]
            r = await c.post("/query", json={"ksql": "SELECT id, COUNT(*) AS c FROM s "
                                                     "GROUP BY id EMIT CHANGES LIMIT 2;", **props})
            body = orjson.loads(r.content)
            assert body[0]["header"]["schema"] == "`ID` INTEGER, `C` BIGINT"
            assert body[0]["header"]["queryId"].startswith("transient_S_")
            assert body[1:] == [{"row": {"columns": [2, 1]}}, {"row": {"columns": [2, 2]}},
                                {"finalMessage": "Limit Reached"}]
            # A client that goes away mid-stream ends the query and its topology.
            async with c.stream("POST", "/query-stream", json={
                    "sql": "SELECT id, COUNT(*) AS c FROM s GROUP BY id EMIT CHANGES;",
                    "properties": {"auto.offset.reset": "earliest"}}) as stream:
                lines = stream.aiter_lines()
                header = orjson.loads(await lines.__anext__())
                assert header["columnNames"] == ["ID", "C"]
                assert orjson.loads(await lines.__anext__()) == [2, 1]
                assert list(app.engine.transient_queries) == [header["queryId"]]
        await wait_until(lambda: not app.engine.transient_queries and not app.push_queries.running)
        assert not [t for t in await app.engine.log.list_topics() if "transient" in t]

    with_node(tmp_path, test)


# ======================================================================= scalable push queries
# ksqlDB's ``ksql.query.push.v2.enabled``: a plain projection/filter push query, 'latest', over
# a stream or table a persistent query writes, is served from that query's output as it is
# produced (a subscriber on its runner), not by a consumer of the topic.
V2 = {"ksql.query.push.v2.enabled": "true"}
LATEST = {"auto.offset.reset": "latest"}


async def _open_v2(path: Path) -> tuple[EmbeddedLog, Engine]:
    log = EmbeddedLog(path)
    # No record cache (as ksqlDB's scalable push query tests run): each update a persistent
    # query writes is one its subscribers see.
    engine = Engine(log, config={**V2, "auto.offset.reset": "earliest",
                                 "cache.max.bytes.buffering": 0}, mode="service")
    await engine.start()
    return log, engine


def _sink_runner(engine: Engine, name: str) -> Any:
    (info,) = engine.catalog.queries_writing(name)
    return engine.runners[info.query_id][-1]


def test_scalable_push_query_is_a_subscriber_of_the_persistent_query(tmp_path: Path) -> None:
    async def main() -> None:
        log, engine = await _open_v2(tmp_path)
        try:
            await engine.execute(STREAM)
            await engine.execute("CREATE STREAM out AS SELECT * FROM s;")
            await engine.execute("INSERT INTO s (k, id, rowtime) VALUES (0, 1, 5);")  # before: not seen
            runner = _sink_runner(engine, "OUT")
            await wait_until(lambda: runner.processed == 1)
            groups = set(log._groups)
            result = (await engine.execute(
                "SELECT ROWTIME, k, id FROM out WHERE id > 1 EMIT CHANGES LIMIT 2;", LATEST))[-1]
            assert result.query_id.startswith("SCALABLE_PUSH_QUERY_")
            assert runner.subscribers == [result.stream]
            await engine.execute("INSERT INTO s (k, id, rowtime) VALUES (1, 1, 6);"
                                 "INSERT INTO s (k, id, rowtime) VALUES (2, 2, 7);"
                                 "INSERT INTO s (k, id, rowtime) VALUES (3, 3, 8);")
            rows = await asyncio.wait_for(_collect(result.stream), 10)
            assert sorted(rows) == [(7, 2, 2), (8, 3, 3)]
            # Ended at its LIMIT: unsubscribed, and it never was a consumer of the topic.
            assert runner.subscribers == []
            assert set(log._groups) == groups
            # LIMIT 0 ends at once.
            result = (await engine.execute("SELECT * FROM out EMIT CHANGES LIMIT 0;", LATEST))[-1]
            assert await _collect(result.stream) == [] and runner.subscribers == []
            # Closed by the client (before any row): unsubscribed.
            result = (await engine.execute("SELECT * FROM out EMIT CHANGES;", LATEST))[-1]
            assert runner.subscribers == [result.stream]
            await result.stream.aclose()
            assert runner.subscribers == []
        finally:
            await _close(log, engine)

    asyncio.run(main())


async def _collect(stream: Any) -> list[tuple]:
    return [row async for row in stream]


def test_scalable_push_query_over_a_windowed_table(tmp_path: Path) -> None:
    async def main() -> None:
        log, engine = await _open_v2(tmp_path)
        try:
            await engine.execute(STREAM)
            await engine.execute("CREATE TABLE agg AS SELECT k, COUNT(1) AS c FROM s "
                                 "WINDOW TUMBLING (SIZE 1 SECOND) GROUP BY k;")
            result = (await engine.execute("SELECT * FROM agg EMIT CHANGES LIMIT 2;", LATEST))[-1]
            assert result.query_id.startswith("SCALABLE_PUSH_QUERY_")
            await engine.execute("INSERT INTO s (k, id, rowtime) VALUES (11, 1, 12345);"
                                 "INSERT INTO s (k, id, rowtime) VALUES (11, 1, 12365);")
            rows = await asyncio.wait_for(_collect(result.stream), 10)
            assert rows == [(11, 12000, 13000, 1), (11, 12000, 13000, 2)]
            assert _sink_runner(engine, "AGG").subscribers == []
        finally:
            await _close(log, engine)

    asyncio.run(main())


def test_other_push_queries_keep_the_topic_path(tmp_path: Path) -> None:
    async def main() -> None:
        log, engine = await _open_v2(tmp_path)
        try:
            await engine.execute(STREAM)
            await engine.execute("CREATE STREAM out AS SELECT * FROM s;")
            await engine.execute("INSERT INTO s (k, id, rowtime) VALUES (0, 1, 5);")
            runner = _sink_runner(engine, "OUT")
            # 'earliest' reads the topic from its start.
            result = (await engine.execute("SELECT k, id FROM out EMIT CHANGES LIMIT 1;"))[-1]
            assert not str(result.query_id or "").startswith("SCALABLE")
            assert await asyncio.wait_for(_collect(result.stream), 10) == [(0, 1)]
            # A source no persistent query writes, and an aggregation: not scalable.
            result = (await engine.execute("SELECT k FROM s EMIT CHANGES LIMIT 1;", LATEST))[-1]
            assert not str(result.query_id or "").startswith("SCALABLE")
            await result.stream.aclose()
            result = (await engine.execute("SELECT k, COUNT(*) FROM out GROUP BY k EMIT CHANGES;",
                                           LATEST))[-1]
            assert result.query_id.startswith("transient_")
            await result.stream.aclose()
            assert runner.subscribers == []
        finally:
            await _close(log, engine)
        # Without ksql.query.push.v2.enabled: the topic path.
        log = EmbeddedLog(tmp_path / "v1")
        engine = Engine(log, {"auto.offset.reset": "earliest"}, mode="service")
        await engine.start()
        try:
            await engine.execute(STREAM)
            await engine.execute("CREATE STREAM out AS SELECT * FROM s;")
            result = (await engine.execute("SELECT k FROM out EMIT CHANGES;", LATEST))[-1]
            assert _sink_runner(engine, "OUT").subscribers == []
            await result.stream.aclose()
        finally:
            await _close(log, engine)

    asyncio.run(main())


def test_slow_scalable_push_query_is_dropped_not_buffered(tmp_path: Path, monkeypatch: Any) -> None:
    from streamsql.exec import push

    monkeypatch.setattr(push, "SCALABLE_QUEUE_LIMIT", 3)

    async def main() -> None:
        log, engine = await _open_v2(tmp_path)
        try:
            await engine.execute(STREAM)
            await engine.execute("CREATE STREAM out AS SELECT * FROM s;")
            runner = _sink_runner(engine, "OUT")
            result = (await engine.execute("SELECT * FROM out EMIT CHANGES;", LATEST))[-1]
            sub = result.stream
            for i in range(10):  # nobody reads: the subscriber overflows
                await engine.execute(f"INSERT INTO s (k, id) VALUES ({i}, {i});")
            await wait_until(lambda: runner.processed == 10)
            # The persistent query went on; the subscriber was dropped, holding nothing.
            assert runner.subscribers == [] and sub.pending_records == 0 and not sub.pending
            got = []
            with pytest.raises(Exception, match="fell behind"):
                async for row in sub:
                    got.append(row)
            assert len(got) <= 3
        finally:
            await _close(log, engine)

    asyncio.run(main())


def test_scalable_push_query_over_http_ends_on_disconnect(tmp_path: Path) -> None:
    async def test(url: str, app: Any) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=30) as c:
            await ksql(c, STREAM)
            await ksql(c, "CREATE STREAM out AS SELECT * FROM s;")
            runner = _sink_runner(app.engine, "OUT")
            async with c.stream("POST", "/query-stream", json={
                    "sql": "SELECT k, id FROM out EMIT CHANGES;", "properties": LATEST}) as stream:
                lines = stream.aiter_lines()
                header = orjson.loads(await lines.__anext__())
                assert header["queryId"].startswith("SCALABLE_PUSH_QUERY_")
                assert len(runner.subscribers) == 1
                await ksql(c, "INSERT INTO s (k, id) VALUES (4, 40);")
                assert orjson.loads(await lines.__anext__()) == [4, 40]
        await wait_until(lambda: not runner.subscribers and not app.push_queries.running)

    with_node(tmp_path, test, config=V2)


def test_scalable_push_query_ends_with_its_persistent_query(tmp_path: Path) -> None:
    async def main() -> None:
        log, engine = await _open_v2(tmp_path)
        try:
            await engine.execute(STREAM)
            await engine.execute("CREATE STREAM out AS SELECT * FROM s;")
            (info,) = engine.catalog.queries_writing("OUT")
            runner = _sink_runner(engine, "OUT")
            result = (await engine.execute("SELECT k FROM out EMIT CHANGES;", LATEST))[-1]
            await engine.execute("INSERT INTO s (k, id) VALUES (7, 1);")
            assert await asyncio.wait_for(result.stream.__anext__(), 10) == (7,)
            await engine.execute(f"TERMINATE {info.query_id};")
            assert runner.subscribers == []
            with pytest.raises(Exception, match="was stopped"):
                await asyncio.wait_for(result.stream.__anext__(), 10)
        finally:
            await _close(log, engine)

    asyncio.run(main())


def test_transient_session_store_expires_past_retention() -> None:
    """A push aggregation over SESSION windows keeps its sessions in memory: those ending
    more than gap + grace before the latest are dropped (as the RocksDB session store's
    segments are), so a long-running one holds flat memory; a key still in session keeps
    merging."""
    from streamsql.runtime.aggregate import MemorySessionStore

    store = MemorySessionStore(retention_ms=1_000)
    for i in range(10_000):  # a new key every 100 ms of event time
        t = i * 100
        store.replace_sessions(b"k%d" % i, [[t, t, None, t]], [], [t, t, None, t])
        # one key that never goes quiet: its session keeps growing, never expires
        sessions = store.get(b"live") or []
        merged = [s for s in sessions if s[1] + 500 >= t]
        new = [min([t] + [s[0] for s in merged]), t, None, t]
        store.replace_sessions(b"live", [s for s in sessions if s not in merged] + [new], merged, new)
        assert len(store._data) <= 13  # ~ retention / 100 ms keys, plus the live one
    assert store.get(b"live") == [[0, 999_900, None, 999_900]]
    assert store.get(b"k0") is None and store.get(b"k9999") is not None

"""The embedded engine end to end: persistent queries, restart, bad input and bad SQL."""
from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from streamsql.engine import PROCESSING_LOG_TOPIC, Engine
from streamsql.errors import KsqlStatementException, ParseError
from streamsql.runtime.log.base import ProducerRecord
from streamsql.runtime.log.embedded import EmbeddedLog

PAGEVIEWS = ("CREATE STREAM pageviews (user_id STRING KEY, page STRING, ms BIGINT) "
             "WITH (kafka_topic='pageviews', value_format='JSON', partitions=2);")
SLOW = "CREATE STREAM slow AS SELECT user_id, UCASE(page) AS page, ms FROM pageviews WHERE ms > 100;"


async def _records(log: EmbeddedLog, topic: str) -> list[tuple[bytes | None, dict | None]]:
    out = []
    for partition, end in enumerate(await log.end_offsets(topic)):
        batch = await log.fetch(topic, partition, 0, end)
        out += [(k, orjson.loads(v) if v is not None else None) for k, v in zip(batch.keys, batch.values)]
    return out


async def _wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.02)


async def _open(path: Path) -> tuple[EmbeddedLog, Engine]:
    log = EmbeddedLog(path)
    engine = Engine(log)
    await engine.start()
    return log, engine


async def _close(log: EmbeddedLog, engine: Engine) -> None:
    await engine.close()
    await log.close()


def test_persistent_query_filters_and_projects(tmp_path: Path) -> None:
    async def main() -> None:
        log, engine = await _open(tmp_path)
        await engine.execute(PAGEVIEWS + SLOW)
        await engine.execute("INSERT INTO pageviews (user_id, page, ms) VALUES ('u1', '/home', 120);"
                             "INSERT INTO pageviews (user_id, page, ms) VALUES ('u2', '/fast', 5);")

        async def done() -> bool:
            return len(await _records(log, "SLOW")) == 1
        await _wait_for(done)
        assert await _records(log, "SLOW") == [(b"u1", {"PAGE": "/HOME", "MS": 120})]
        await _close(log, engine)
    asyncio.run(main())


def test_restart_keeps_catalog_queries_and_data(tmp_path: Path) -> None:
    async def first() -> None:
        log, engine = await _open(tmp_path)
        await engine.execute(PAGEVIEWS + SLOW)
        await engine.execute("INSERT INTO pageviews (user_id, page, ms) VALUES ('u1', '/a', 150);")

        async def done() -> bool:
            return len(await _records(log, "SLOW")) == 1
        await _wait_for(done)
        await _close(log, engine)

    async def second() -> None:
        log, engine = await _open(tmp_path)
        assert {"PAGEVIEWS", "SLOW"} <= set(engine.catalog.sources)
        assert [q.sink for q in engine.catalog.queries.values()] == ["SLOW"]
        # The restarted query resumes from its committed offset: no duplicate, new rows flow.
        await engine.execute("INSERT INTO pageviews (user_id, page, ms) VALUES ('u2', '/b', 190);")

        async def done() -> bool:
            return len(await _records(log, "SLOW")) == 2
        await _wait_for(done)
        await asyncio.sleep(0.1)
        rows = await _records(log, "SLOW")
        assert sorted(r[1]["PAGE"] for r in rows) == ["/A", "/B"]
        await _close(log, engine)

    asyncio.run(first())
    asyncio.run(second())


def test_bad_record_goes_to_processing_log_and_query_keeps_running(tmp_path: Path) -> None:
    async def main() -> None:
        log, engine = await _open(tmp_path)
        await engine.execute(PAGEVIEWS + SLOW)
        await log.produce("pageviews", [
            ProducerRecord(b"u1", b"{not json", 1, partition=0),
            ProducerRecord(b"u1", b'{"PAGE": "/ok", "MS": 500}', 2, partition=0)])

        async def done() -> bool:
            return len(await _records(log, "SLOW")) == 1 and len(await _records(log, PROCESSING_LOG_TOPIC)) == 1
        await _wait_for(done)
        [(_, entry)] = await _records(log, PROCESSING_LOG_TOPIC)
        message = entry["MESSAGE"]
        assert (message["TOPIC"], message["PARTITION"], message["OFFSET"]) == ("pageviews", 0, 0)
        assert "deserialize" in message["ERRORMESSAGE"]
        # The processing log is itself a stream users can read.
        assert "KSQL_PROCESSING_LOG" in engine.catalog.sources
        await _close(log, engine)
    asyncio.run(main())


def test_a_query_that_keeps_failing_is_in_error_state_until_it_recovers(tmp_path: Path) -> None:
    """Its sink topic deleted under it, a query fails at every batch and starts over: SHOW
    QUERIES says ERROR (not RUNNING) and EXPLAIN gives the error; once the topic is back,
    the query goes on where it stopped and is RUNNING again."""
    async def main() -> None:
        log, engine = await _open(tmp_path)
        await engine.execute(PAGEVIEWS + SLOW)
        qid = next(iter(engine.catalog.queries))

        async def status() -> str:
            shown = (await engine.execute("SHOW QUERIES;"))[0]
            return shown.rows[0][2]
        assert await status() == "RUNNING:1"
        await log.delete_topic("SLOW")
        await engine.execute("INSERT INTO pageviews (user_id, page, ms) VALUES ('u1', '/a', 120);")

        async def failing() -> bool:
            return await status() == "ERROR:1"
        await _wait_for(failing)
        explained = (await engine.execute(f"EXPLAIN {qid};"))[0].entity["queryDescription"]
        assert explained["state"] == "ERROR"
        assert any("SLOW" in e["errorMessage"] for e in explained["queryErrors"])

        await log.create_topic("SLOW", 2)

        async def recovered() -> bool:
            return await status() == "RUNNING:1" and len(await _records(log, "SLOW")) == 1
        await _wait_for(recovered, timeout=20.0)
        assert await _records(log, "SLOW") == [(b"u1", {"PAGE": "/A", "MS": 120})]
        await _close(log, engine)
    asyncio.run(main())


def test_failing_expression_yields_null_and_is_logged(tmp_path: Path) -> None:
    async def main() -> None:
        log, engine = await _open(tmp_path)
        await engine.execute(
            "CREATE STREAM nums (k STRING KEY, a INT, b INT) WITH (kafka_topic='nums', value_format='JSON', partitions=1);"
            "CREATE STREAM ratios AS SELECT k, a / b AS r FROM nums;"
            "INSERT INTO nums (k, a, b) VALUES ('x', 6, 0);"
            "INSERT INTO nums (k, a, b) VALUES ('y', 6, 3);")

        async def done() -> bool:
            return len(await _records(log, "RATIOS")) == 2
        await _wait_for(done)
        assert [v for _, v in await _records(log, "RATIOS")] == [{"R": None}, {"R": 2}]
        errors = await _records(log, PROCESSING_LOG_TOPIC)
        assert len(errors) == 1 and "by zero" in errors[0][1]["MESSAGE"]["ERRORMESSAGE"]
        await _close(log, engine)
    asyncio.run(main())


def test_bad_sql_names_line_and_column_and_changes_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        log, engine = await _open(tmp_path)
        with pytest.raises(ParseError) as err:
            await engine.execute("CREATE STREAM s (a INT)\n  WITH (kafka_topic='t' value_format='JSON');")
        assert (err.value.line, err.value.column) == (2, 25)
        assert "line 2:25" in str(err.value)
        assert "S" not in engine.catalog.sources
        await _close(log, engine)
    asyncio.run(main())


def test_semantic_errors_name_what_is_wrong(tmp_path: Path) -> None:
    async def main() -> None:
        log, engine = await _open(tmp_path)
        await engine.execute(PAGEVIEWS)
        with pytest.raises(KsqlStatementException, match="column 'NOPE' cannot be resolved"):
            await engine.execute("CREATE STREAM x AS SELECT user_id, nope FROM pageviews;")
        with pytest.raises(KsqlStatementException, match="does not exist"):
            await engine.execute("CREATE STREAM x AS SELECT * FROM missing;")
        with pytest.raises(KsqlStatementException, match="Cannot compare"):
            await engine.execute("CREATE STREAM x AS SELECT * FROM pageviews WHERE ms > 'a';")
        with pytest.raises(KsqlStatementException, match="does not accept parameters"):
            await engine.execute("CREATE STREAM x AS SELECT user_id, UCASE(ms) AS u FROM pageviews;")
        assert set(engine.catalog.sources) == {"PAGEVIEWS", "KSQL_PROCESSING_LOG"}
        assert not engine.catalog.queries
        await _close(log, engine)
    asyncio.run(main())


def test_push_query_streams_new_rows(tmp_path: Path) -> None:
    async def main() -> None:
        log, engine = await _open(tmp_path)
        await engine.execute(PAGEVIEWS)
        [result] = await engine.execute("SELECT user_id, page FROM pageviews WHERE ms > 10 EMIT CHANGES LIMIT 2;")
        assert result.columns == ("USER_ID", "PAGE")

        async def insert() -> None:
            await asyncio.sleep(0.05)
            for i, ms in enumerate([50, 1, 70]):
                await engine.execute(f"INSERT INTO pageviews (user_id, page, ms) VALUES ('u{i}', '/p{i}', {ms});")
        task = asyncio.create_task(insert())
        rows = [row async for row in result.stream]
        await task
        assert sorted(rows) == [("u0", "/p0"), ("u2", "/p2")]
        await _close(log, engine)
    asyncio.run(main())


def test_a_column_name_is_text_in_generated_code_never_code(tmp_path: Path) -> None:
    """Column names are written into the generated pipeline (its processing-log messages):
    a crafted quoted name must stay a string there, not become code that runs."""
    import ast as python_ast

    alias = "x' + str(__import__('os').getpid()) + '"

    async def main() -> str:
        log, engine = await _open(tmp_path)
        await engine.execute(PAGEVIEWS + f'CREATE STREAM INJ AS SELECT user_id, ms / 0 AS "{alias}" '
                                         "FROM pageviews;")
        [runners] = [rs for qid, rs in engine.runners.items() if "INJ" in qid]
        source = runners[0].stage.pipeline.source
        await _close(log, engine)
        return source

    source = asyncio.run(main())
    names = {n.id for n in python_ast.walk(python_ast.parse(source)) if isinstance(n, python_ast.Name)}
    assert "__import__" not in names and alias in source.replace("\\'", "'")


def test_retention_ms_in_the_with_clause_becomes_the_topics_retention(tmp_path: Path) -> None:
    """ksqlDB's RETENTION_MS: the topic it creates keeps records that long; the log deletes
    older ones (whole closed segments, by record timestamp)."""
    async def main() -> tuple[dict, int]:
        log = EmbeddedLog(tmp_path, segment_bytes=500)
        engine = Engine(log)
        await engine.start()
        await engine.execute("CREATE STREAM R (A INT) WITH (KAFKA_TOPIC='r', PARTITIONS=1, "
                             "VALUE_FORMAT='JSON', RETENTION_MS=60000);")
        config = dict((await log.describe_topic("r")).config)
        for i in range(40):
            await log.produce("r", [ProducerRecord(None, b'{"A": 1}', 1000 + i)])
        await log.produce("r", [ProducerRecord(None, b'{"A": 2}', 10**12)])
        await log.apply_retention(10**12)
        begin = (await log.begin_offsets("r"))[0]
        await _close(log, engine)
        return config, begin

    config, begin = asyncio.run(main())
    assert config["retention.ms"] == "60000" and begin > 0


def test_insert_values_coerces_literals_inside_structs_arrays_and_maps(tmp_path: Path) -> None:
    """ksqlDB coerces INSERT VALUES literals to the column's type all the way down:
    ``STRUCT(c := 5)`` goes into ``STRUCT<c BIGINT>``, ``ARRAY[1, 2]`` into ``ARRAY<DOUBLE>``."""
    async def main() -> list:
        log, engine = await _open(tmp_path)
        await engine.execute(
            "CREATE STREAM n (id INT KEY, s STRUCT<c BIGINT, d DECIMAL(4, 2)>, a ARRAY<DOUBLE>, "
            "m MAP<STRING, BIGINT>) WITH (kafka_topic='n', value_format='JSON', partitions=1);")
        await engine.execute("INSERT INTO n (id, s, a, m) VALUES (1, STRUCT(c := 5), ARRAY[1, 2], MAP('k' := 3));")
        with pytest.raises(KsqlStatementException, match=r"Expected type STRUCT<`C` BIGINT, `D` DECIMAL\(4, 2\)> "
                                                         r"for field S"):
            await engine.execute("INSERT INTO n (id, s) VALUES (2, STRUCT(c := 'x'));")
        # A field the column's type lacks is dropped, as ksqlDB's coercer drops it; a NULL
        # map key is written "null", as ksqlDB's JSON.
        await engine.execute("INSERT INTO n (id, s, m) VALUES (2, STRUCT(c := 1, nope := 1), "
                             "MAP(CAST(NULL AS STRING) := 1));")
        out = await _records(log, "n")
        await _close(log, engine)
        return out

    [(_, first), (_, second)] = asyncio.run(main())
    assert first == {"S": {"C": 5, "D": None}, "A": [1.0, 2.0], "M": {"k": 3}}
    assert second == {"S": {"C": 1, "D": None}, "A": None, "M": {"null": 1}}


def test_variables_are_substituted_and_the_escape_is_kept_literal(tmp_path: Path) -> None:
    async def main() -> list:
        log, engine = await _open(tmp_path)
        await engine.execute(PAGEVIEWS + "DEFINE page = '/home';")
        [result] = await engine.execute("SELECT '${page}' AS a, '$${page}' AS b FROM pageviews EMIT CHANGES LIMIT 1;")
        await engine.execute("INSERT INTO pageviews (user_id, page, ms) VALUES ('u', '${page}', 1);")
        rows = [row async for row in result.stream]
        await _close(log, engine)
        return rows

    assert asyncio.run(main()) == [("/home", "${page}")]

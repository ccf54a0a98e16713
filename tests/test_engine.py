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
    engine = Engine(log, {"auto.offset.reset": "earliest"})
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
        engine = Engine(log, {"auto.offset.reset": "earliest"})
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


def test_partition_by_over_a_join_writes_the_new_key(tmp_path: Path) -> None:
    """PARTITION BY over a join: the joined rows are written keyed by the PARTITION BY
    expression, the rest of the projection in the value (names as ksqlDB gives them)."""
    async def main() -> None:
        log, engine = await _open(tmp_path)
        await engine.execute(
            "CREATE STREAM clicks (id STRING KEY, page STRING) "
            "  WITH (kafka_topic='clicks', value_format='JSON', partitions=2);"
            "CREATE TABLE pages (page STRING PRIMARY KEY, owner STRING) "
            "  WITH (kafka_topic='pages', value_format='JSON', partitions=2);")
        await engine.execute("INSERT INTO pages (ROWTIME, page, owner) VALUES (1, '/a', 'ann');"
                             "INSERT INTO pages (ROWTIME, page, owner) VALUES (2, '/b', 'bob');"
                             "INSERT INTO clicks (ROWTIME, id, page) VALUES (3, 'c1', '/a');"
                             "INSERT INTO clicks (ROWTIME, id, page) VALUES (4, 'c2', '/b');"
                             "INSERT INTO clicks (ROWTIME, id, page) VALUES (5, 'c3', '/a');")
        # From the topics' start: the join reads both in time order, the pages first.
        await engine.execute("CREATE STREAM by_owner AS SELECT p.owner, c.id, c.page FROM clicks c "
                             "  JOIN pages p ON c.page = p.page PARTITION BY p.owner;",
                             {"auto.offset.reset": "earliest"})

        async def done() -> bool:
            return len(await _records(log, "BY_OWNER")) == 3
        await _wait_for(done)
        got = sorted(await _records(log, "BY_OWNER"), key=lambda r: r[1]["ID"])
        assert got == [(b"ann", {"ID": "c1", "C_PAGE": "/a"}), (b"bob", {"ID": "c2", "C_PAGE": "/b"}),
                       (b"ann", {"ID": "c3", "C_PAGE": "/a"})]
        # Partitioned by the new key: one owner's records are in one partition.
        partitions = {}
        for partition, end in enumerate(await log.end_offsets("BY_OWNER")):
            for k in (await log.fetch("BY_OWNER", partition, 0, end)).keys:
                partitions.setdefault(k, set()).add(partition)
        assert all(len(p) == 1 for p in partitions.values())
        [desc] = await engine.execute("DESCRIBE by_owner;")
        assert desc.rows == [("OWNER", "VARCHAR(STRING)  (key)"), ("ID", "VARCHAR(STRING)"),
                             ("C_PAGE", "VARCHAR(STRING)")]
        await _close(log, engine)
    asyncio.run(main())


def test_invalid_statements_are_rejected_with_ksqldbs_messages(tmp_path: Path) -> None:
    """Validation rules of the analyzer, the join analyzer and DDL, each with ksqlDB's text."""
    async def main() -> None:
        log, engine = await _open(tmp_path)
        await engine.execute(
            "CREATE STREAM a (k INT KEY, foo INT, bar INT) WITH (kafka_topic='a', value_format='JSON', partitions=1);"
            "CREATE STREAM b (k INT KEY, foo INT, bar STRING) WITH (kafka_topic='b', value_format='JSON', partitions=1);"
            "CREATE STREAM ws (k INT KEY, v INT) WITH (kafka_topic='ws', value_format='JSON', partitions=1, "
            "  window_type='SESSION');"
            "CREATE STREAM wt (k INT KEY, v INT) WITH (kafka_topic='wt', value_format='JSON', partitions=1, "
            "  window_type='TUMBLING', window_size='1 SECOND');"
            "CREATE STREAM wh (k INT KEY, v INT) WITH (kafka_topic='wh', value_format='JSON', partitions=1, "
            "  window_type='HOPPING', window_size='5 SECONDS');"
            "CREATE STREAM h (k STRING KEY, h1 BYTES HEADER('abc'), v BIGINT) "
            "  WITH (kafka_topic='h', value_format='JSON', partitions=1);"
            "CREATE STREAM nh (k STRING KEY, h1 BYTES, v BIGINT) WITH (kafka_topic='nh', value_format='JSON', partitions=1);")

        async def rejected(sql: str) -> str:
            with pytest.raises(Exception) as err:
                await engine.execute(sql)
            return str(err.value)

        # A join's WHERE is checked on the joined row, whose columns are named ALIAS_COL.
        assert "Cannot compare A1_BAR (INTEGER) to B1_BAR (STRING) with GREATER_THAN." in await rejected(
            "CREATE STREAM o AS SELECT a1.foo, a1.bar, b1.bar FROM a a1 JOIN b b1 WITHIN 1 MINUTE "
            "ON a1.foo = b1.foo WHERE a1.bar > b1.bar;")
        # HAVING errors quote the aggregate as written.
        assert "Error in HAVING expression: Cannot compare SUM(FOO) (INTEGER) to '1' (STRING) with GREATER_THAN." \
            in await rejected("CREATE TABLE o AS SELECT k, SUM(foo) AS s FROM a GROUP BY k HAVING SUM(foo) > '1';")
        assert await rejected(
            "CREATE STREAM o AS SELECT a1.k, a1.ROWTIME AS ROWTIME, b1.bar FROM a a1 JOIN b b1 WITHIN 1 SECOND "
            "ON a1.k = b1.k;") == "Reserved column name in select: `ROWTIME`. Please remove or alias the column."
        assert "Reserved column name in select: `WINDOWSTART`" in await rejected(
            "CREATE TABLE o AS SELECT k, WINDOWSTART, COUNT(*) AS n FROM a GROUP BY WINDOWSTART;")
        # Joined windowed sources must be windowed alike.
        assert await rejected("CREATE STREAM o AS SELECT * FROM ws JOIN a WITHIN 1 MINUTE ON ws.k = a.k;") == (
            "Can not join windowed source to non-windowed source.\n`WS` is SESSION windowed\n`A` is not windowed")
        assert (await rejected("CREATE STREAM o AS SELECT * FROM ws JOIN wt WITHIN 1 MINUTE ON ws.k = wt.k;")
                ).startswith("Incompatible windowed sources.\nLeft source: SESSION\nRight source: TUMBLING\n")
        assert "Implicit repartitioning of windowed sources is not supported." in await rejected(
            "CREATE STREAM o AS SELECT * FROM wh JOIN wt WITHIN 1 MINUTE ON wh.k = wt.k;")
        assert await rejected("CREATE STREAM o AS SELECT * FROM a JOIN b WITHIN 1 MINUTE ON a.k = b.k "
                              "JOIN nh WITHIN 1 MINUTE ON a.k = a.k;") == (
            "Each side of the join must reference exactly one source and not the same source. "
            "Left side references `A` and right references `A`")
        # Formats: FORMAT with KEY_FORMAT; a multi-column KAFKA key quotes the rewritten statement.
        assert (await rejected("CREATE STREAM x (k INT KEY, v INT) WITH (kafka_topic='x', "
                               "key_format='KAFKA', format='JSON', partitions=1);")).startswith(
            "Cannot supply both 'KEY_FORMAT' and 'FORMAT' properties")
        assert (await rejected("CREATE TABLE o WITH (KEY_FORMAT='KAFKA') AS SELECT foo AS f, bar AS b, "
                               "COUNT(*) AS n FROM a GROUP BY foo, bar;")).endswith(
            "Statement: CREATE TABLE O WITH (KEY_FORMAT='KAFKA') AS SELECT\n  A.FOO F,\n  A.BAR B,\n"
            "  COUNT(*) N\nFROM A A\nGROUP BY A.FOO, A.BAR\nEMIT CHANGES")
        # IN lists: numbers widen the list's type; a number literal may stand in a list of strings.
        assert "Invalid Predicate: operator does not exist: STRING = INTEGER (FOO)" in await rejected(
            "CREATE STREAM o AS SELECT * FROM b WHERE bar IN (10, foo);")
        # Header columns: typed BYTES, and not written by INSERT VALUES or INSERT INTO.
        assert await rejected("CREATE STREAM x (k STRING KEY, h1 INT HEADER('key')) "
                              "WITH (kafka_topic='x', value_format='JSON', partitions=1);") == (
            "Invalid type for HEADER('key') column: expected BYTES, got INTEGER")
        assert await rejected("INSERT INTO h (h1) VALUES (null);") == "Cannot insert into HEADER columns: H1"
        assert await rejected("INSERT INTO h SELECT * FROM nh;") == (
            "Cannot insert into H because it has header columns")
        assert set(engine.catalog.sources) == {"A", "B", "WS", "WT", "WH", "H", "NH", "KSQL_PROCESSING_LOG"}
        await _close(log, engine)
    asyncio.run(main())


def test_a_decimal_sum_outgrowing_its_type_stops_the_query(tmp_path: Path) -> None:
    """ksqlDB stops a query whose UDAF fails (a KsqlFunctionException): the query shows the
    error and does not skip the record."""
    async def main() -> None:
        log, engine = await _open(tmp_path)
        await engine.execute(
            "CREATE STREAM d (id BIGINT KEY, v DECIMAL(4, 1)) WITH (kafka_topic='d', value_format='JSON', partitions=1);"
            "CREATE TABLE s AS SELECT id, SUM(v) AS total FROM d GROUP BY id;"
            "INSERT INTO d (id, v) VALUES (1, 900.1);"
            "INSERT INTO d (id, v) VALUES (1, 200.1);")
        [query_id] = list(engine.catalog.queries)

        async def failed() -> bool:
            return any("Numeric field overflow" in m for _, m in engine.query_state(query_id)[1])
        await _wait_for(failed)
        assert engine.query_state(query_id)[0] == "ERROR"
        await _close(log, engine)
    asyncio.run(main())


def test_throw_on_invalid_timestamp_stops_the_query(tmp_path: Path) -> None:
    """With ksql.timestamp.throw.on.invalid a timestamp that cannot be parsed stops the query
    (Kafka Streams' fatal TimestampExtractor error) instead of skipping the record."""
    async def main() -> None:
        log = EmbeddedLog(tmp_path)
        engine = Engine(log, config={"ksql.timestamp.throw.on.invalid": "true"})
        await engine.start()
        await engine.execute(
            "CREATE STREAM t (k STRING KEY, id BIGINT, ts STRING) WITH (kafka_topic='t', value_format='JSON', partitions=1, "
            "  timestamp='ts', timestamp_format='yy-MM-dd HH:mm:ssX');"
            "CREATE STREAM o AS SELECT k, id FROM t;"
            "INSERT INTO t (k, id, ts) VALUES ('a', 1, '!!!');")
        [query_id] = list(engine.catalog.queries)

        async def failed() -> bool:
            return any("Fatal user code error in TimestampExtractor callback" in m
                       for _, m in engine.query_state(query_id)[1])
        await _wait_for(failed)
        await _close(log, engine)
    asyncio.run(main())


def _run_case(statements: list[str], inputs: list[dict], properties: dict | None = None) -> list[dict]:
    """Run statements over input records with the QTT driver; the sinks' records (key and
    value decoded, window and timestamp)."""
    from streamsql.testing.qtt import run_case

    result = run_case({"name": "t", "statements": statements, "inputs": inputs,
                       "properties": properties or {}})
    assert result.error is None, result.error
    return result.outputs


def test_comparisons_with_a_null_operand_are_false() -> None:
    """ksqlDB's comparisons are false, not NULL, when an operand is NULL (any type); a
    string compared with a DATE is parsed as one, a partial date ('1970-01') included."""
    out = _run_case(
        ["CREATE STREAM s (id STRING KEY, d DATE, e DATE, x DECIMAL(4, 2), n INT, t STRING) "
         "WITH (kafka_topic='s', value_format='JSON');",
         "CREATE STREAM o AS SELECT id, d = e AS eq, d > '1970-01-05' AS gt, x < n AS lt, n <> n AS ne, "
         "CAST(t AS DATE) AS c FROM s;"],
        [{"topic": "s", "key": "a", "value": {"D": 10, "E": 10, "X": 1.5, "N": 2, "T": "1970-01"}},
         {"topic": "s", "key": "b", "value": {"D": None, "E": 10, "X": None, "N": None, "T": "foo"}}])
    assert [r["value"] for r in out] == [
        {"EQ": True, "GT": True, "LT": True, "NE": False, "C": 0},
        {"EQ": False, "GT": False, "LT": False, "NE": False, "C": None}]


def test_null_arithmetic_in_a_lambda_makes_the_call_null() -> None:
    """Arithmetic on a NULL inside a lambda fails the function given the lambda (ksqlDB's
    generated Java unboxes the operands): FILTER and REDUCE return NULL for that record."""
    out = _run_case(
        ["CREATE STREAM s (id STRING KEY, m MAP<STRING, INT>) WITH (kafka_topic='s', value_format='JSON');",
         "CREATE STREAM o AS SELECT id, FILTER(m, (k, v) => v % 5 = 0) AS f, "
         "REDUCE(m, 0, (s, k, v) => s + v) AS r FROM s;"],
        [{"topic": "s", "key": "a", "value": {"M": {"x": 10, "y": 3}}},
         {"topic": "s", "key": "b", "value": {"M": {"x": None, "y": 25}}}])
    assert [r["value"] for r in out] == [{"F": {"x": 10}, "R": 13}, {"F": None, "R": None}]


def test_struct_literals_widen_to_one_struct_type_in_lists() -> None:
    """In an IN list or an ARRAY constructor, structs take one type with every field met;
    a missing field is NULL, and field names are case-sensitive."""
    out = _run_case(
        ["CREATE STREAM s (v STRUCT<A BIGINT, B BIGINT>, n INT) WITH (kafka_topic='s', format='JSON');",
         "CREATE STREAM o AS SELECT v, ARRAY[STRUCT(x := n), STRUCT(y := n)] AS arr FROM s "
         "WHERE v IN (STRUCT(A := 1, B := 2, C := 3), STRUCT(A := 5), STRUCT(`a` := 6), STRUCT(A := '7', B := 2));"],
        [{"topic": "s", "value": {"V": {"A": 1, "B": 2}, "N": 1}},
         {"topic": "s", "value": {"V": {"A": 5}, "N": 2}},
         {"topic": "s", "value": {"V": {"A": 6}, "N": 3}},
         {"topic": "s", "value": {"V": {"A": 7, "B": 2}, "N": 4}}])
    assert [r["value"] for r in out] == [
        {"V": {"A": 5, "B": None}, "ARR": [{"X": 2, "Y": None}, {"X": None, "Y": 2}]},
        {"V": {"A": 7, "B": 2}, "ARR": [{"X": 4, "Y": None}, {"X": None, "Y": 4}]}]


def test_partition_by_rowtime_of_a_tombstone_is_null() -> None:
    """A PARTITION BY expression that reads more than the key is NULL for a record with no
    value (ROWTIME too: ksqlDB computes it from the value)."""
    out = _run_case(
        ["CREATE STREAM s (k STRING KEY, id BIGINT) WITH (kafka_topic='s', format='JSON');",
         "CREATE STREAM o AS SELECT * FROM s PARTITION BY id, ROWTIME;"],
        [{"topic": "s", "value": {"ID": 22}, "timestamp": 10},
         {"topic": "s", "value": None, "timestamp": 12}])
    assert [(r["key"], r["value"]) for r in out] == [
        ({"ID": 22, "ROWTIME": 10}, {"K": None}), ({"ID": None, "ROWTIME": None}, None)]


def test_a_joins_results_carry_the_headers_of_the_record_that_made_them() -> None:
    """As Kafka Streams forwards the triggering record's context: a stream-table join's
    result has the stream record's headers (re-keyed by a column first, too), a table-table
    join's those of the update that made it, and an unmatched record of a left join emitted
    when its window closes those of the record whose time closed it."""
    def h(key: str, value: str) -> list[dict]:
        return [{"KEY": key, "VALUE": value}]
    out = _run_case(
        ["CREATE STREAM s (id INT KEY, fk INT, v INT) WITH (kafka_topic='s', value_format='JSON');",
         "CREATE TABLE t (id INT PRIMARY KEY, w INT) WITH (kafka_topic='t', value_format='JSON');",
         "CREATE STREAM st AS SELECT s.fk, s.v, t.w FROM s JOIN t ON s.fk = t.id;",
         "CREATE TABLE t2 (id INT PRIMARY KEY, x INT) WITH (kafka_topic='t2', value_format='JSON');",
         "CREATE TABLE tt AS SELECT t.id, t.w, t2.x FROM t JOIN t2 ON t.id = t2.id;",
         "CREATE STREAM s2 (id INT KEY, u INT) WITH (kafka_topic='s2', value_format='JSON');",
         "CREATE STREAM ss AS SELECT s.id, s.v, s2.u FROM s LEFT JOIN s2 WITHIN 1 SECOND GRACE PERIOD 0 SECONDS "
         "ON s.id = s2.id;"],
        [{"topic": "t", "key": 1, "value": {"W": 10}, "timestamp": 0, "headers": h("a", "AQ==")},
         {"topic": "t2", "key": 1, "value": {"X": 20}, "timestamp": 1, "headers": h("b", "Ag==")},
         {"topic": "s", "key": 5, "value": {"FK": 1, "V": 7}, "timestamp": 2, "headers": h("c", "Aw==")},
         {"topic": "s", "key": 6, "value": {"FK": 1, "V": 8}, "timestamp": 5000, "headers": h("d", "BA==")}])
    got = [(r["topic"], r["value"], r.get("headers")) for r in out]
    assert sorted(got, key=repr) == [
        ("SS", {"V": 7, "U": None}, h("d", "BA==")),
        ("ST", {"V": 7, "W": 10}, h("c", "Aw==")),
        ("ST", {"V": 8, "W": 10}, h("d", "BA==")),
        ("TT", {"W": 10, "X": 20}, h("b", "Ag=="))]


def test_a_session_is_final_only_once_no_record_can_join_it() -> None:
    """A session closes once stream time passes its end + grace + gap (Kafka Streams' close
    time for sessions): EMIT FINAL emits it then, once, and a record within the gap of it
    before that still joins it (it was emitted early, with a later record merged after)."""
    out = _run_case(
        ["CREATE STREAM s (id STRING KEY, v INT) WITH (kafka_topic='s', value_format='JSON');",
         "CREATE TABLE c AS SELECT id, COUNT(*) AS n FROM s "
         "WINDOW SESSION (5 MILLISECONDS, GRACE PERIOD 0 MILLISECONDS) GROUP BY id EMIT FINAL;"],
        [{"topic": "s", "key": "a", "value": {"V": 1}, "timestamp": t} for t in (0, 3, 8, 20)],
        {"ksql.streams.__emit.interval.ms.kstreams.windowed.aggregation__": 0})
    assert [(r["value"], r["window"]) for r in out] == [({"N": 3}, {"start": 0, "end": 8, "type": "session"})]


def test_a_row_with_any_grouping_expression_null_is_left_out_of_the_table() -> None:
    """GROUP BY over several expressions: a row where any of them is NULL has no key (ksqlDB's
    grouper gives none) and is left out, not grouped under a key with a NULL part."""
    out = _run_case(
        ["CREATE STREAM s (f1 INT KEY, f2 INT) WITH (kafka_topic='s', format='JSON');",
         "CREATE TABLE t AS SELECT f1, f2, COUNT(*) AS n FROM s GROUP BY f1, f2;"],
        [{"topic": "s", "key": 1, "value": {"F2": 2}}, {"topic": "s", "key": 1, "value": {"F2": None}},
         {"topic": "s", "key": None, "value": {"F2": 2}}, {"topic": "s", "key": 1, "value": {"F2": 2}}])
    assert [(r["key"], r["value"]) for r in out] == [({"F1": 1, "F2": 2}, {"N": 1}), ({"F1": 1, "F2": 2}, {"N": 2})]


def test_joins_of_keyless_and_windowed_and_multi_key_sources() -> None:
    """A join of keyless streams has the default key format; windowed streams with a
    schema-registry key format join on key and window (the result keeps the left's window);
    a foreign-key join of a table with two key columns is keyed by both."""
    out = _run_case(
        ["CREATE STREAM s1 (id INT, v INT) WITH (kafka_topic='s1', key_format='NONE', value_format='JSON');",
         "CREATE STREAM s2 (id INT, w STRING) WITH (kafka_topic='s2', key_format='NONE', value_format='JSON');",
         "CREATE STREAM o AS SELECT s1.id, s2.w FROM s1 JOIN s2 WITHIN 10 SECONDS ON s1.id = s2.id;"],
        [{"topic": "s1", "value": {"ID": 10, "V": 1}}, {"topic": "s2", "value": {"ID": 10, "W": "x"}}],
        {"ksql.persistence.default.format.key": "DELIMITED"})
    assert [(r["key"], r["value"]) for r in out] == [("10", {"W": "x"})]

    out = _run_case(
        ["CREATE STREAM w1 (id INT KEY, v INT) WITH (kafka_topic='w1', key_format='JSON_SR', "
         "value_format='JSON', window_type='HOPPING', window_size='5 SECONDS');",
         "CREATE STREAM w2 (id INT KEY, v INT) WITH (kafka_topic='w2', key_format='JSON_SR', "
         "value_format='JSON', window_type='TUMBLING', window_size='2 SECONDS');",
         "CREATE STREAM o AS SELECT * FROM w1 JOIN w2 WITHIN 1 MINUTE ON w1.id = w2.id;"],
        [{"topic": "w1", "key": 1, "value": {"V": 1}, "timestamp": 0, "window": {"start": 0, "end": 5000}},
         {"topic": "w1", "key": 1, "value": {"V": 2}, "timestamp": 1000, "window": {"start": 1000, "end": 6000}},
         {"topic": "w2", "key": 1, "value": {"V": 3}, "timestamp": 1000, "window": {"start": 1000, "end": 3000}}])
    assert [(r["key"], r["window"], r["value"]) for r in out] == [
        (1, {"start": 1000, "end": 6000, "type": "time"},
         {"W1_WINDOWSTART": 1000, "W1_WINDOWEND": 6000, "W1_V": 2, "W2_ID": 1,
          "W2_WINDOWSTART": 1000, "W2_WINDOWEND": 3000, "W2_V": 3})]

    out = _run_case(
        ["CREATE TABLE l (a BIGINT PRIMARY KEY, fk BIGINT PRIMARY KEY, name STRING) "
         "WITH (kafka_topic='l', format='JSON');",
         "CREATE TABLE r (id BIGINT PRIMARY KEY, f STRING) WITH (kafka_topic='r', format='JSON');",
         "CREATE TABLE o AS SELECT a, fk, name, f FROM l JOIN r ON fk = id;"],
        [{"topic": "r", "key": 0, "value": {"F": "x"}},
         {"topic": "l", "key": {"A": 1, "FK": 0}, "value": {"NAME": "p"}},
         {"topic": "l", "key": {"A": 2, "FK": 0}, "value": {"NAME": "q"}}])
    assert [(r["key"], r["value"]) for r in out] == [
        ({"A": 1, "FK": 0}, {"NAME": "p", "F": "x"}), ({"A": 2, "FK": 0}, {"NAME": "q", "F": "x"})]

"""SHOW, DESCRIBE, EXPLAIN and PRINT through ``Engine.execute`` on an embedded log on disk,
checked for what a user reads in them."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from streamsql.engine import Engine
from streamsql.errors import KsqlStatementException
from streamsql.runtime.log.base import ProducerRecord
from streamsql.runtime.log.embedded import EmbeddedLog
from streamsql.shell import render_result

pytestmark = pytest.mark.timeout(60)

SETUP = """
CREATE STREAM pageviews (user_id STRING KEY, page STRING, ms BIGINT)
  WITH (kafka_topic='pageviews', value_format='JSON', partitions=4);
INSERT INTO pageviews (user_id, page, ms) VALUES ('u1', '/home', 120);
INSERT INTO pageviews (user_id, page, ms) VALUES ('u2', '/fast', 7);
CREATE STREAM slow AS SELECT user_id, UCASE(page) AS page FROM pageviews WHERE ms > 100 EMIT CHANGES;
"""


def run(path: Path, body) -> None:
    """Open an engine on ``path``, run SETUP, then ``await body(engine)``; always close."""
    async def main() -> None:
        log = EmbeddedLog(path)
        engine = Engine(log, {"auto.offset.reset": "earliest"})
        try:
            await engine.start()
            await engine.execute(SETUP)
            await body(engine)
        finally:
            await engine.close()
            await log.close()

    asyncio.run(main())


async def one(engine: Engine, sql: str):
    results = await engine.execute(sql)
    assert len(results) == 1
    return results[0]


async def query_id(engine: Engine) -> str:
    (qid,) = [q for q in engine.catalog.queries if q.startswith("CSAS_SLOW_")]
    return qid


async def wait_processed(engine: Engine, qid: str, n: int) -> None:
    for _ in range(200):
        runners = engine.runners.get(qid) or []
        if runners and runners[0].processed >= n:
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"{qid} did not process {n} records")


async def collect(result, n: int, timeout: float = 10.0) -> list:
    rows = []

    async def take() -> None:
        async for row in result.stream:
            rows.append(row)
            if len(rows) >= n:
                break

    try:
        await asyncio.wait_for(take(), timeout)
    finally:
        await result.stream.aclose()
    return rows


def test_show_lists_sources_queries_and_topics(tmp_path):
    async def body(engine: Engine) -> None:
        streams = await one(engine, "SHOW STREAMS;")
        assert streams.kind == "streams"
        assert streams.columns[:2] == ("Stream Name", "Kafka Topic")
        by_name = {r[0]: r for r in streams.rows}
        assert by_name["PAGEVIEWS"] == ("PAGEVIEWS", "pageviews", "KAFKA", "JSON", "false")
        assert by_name["SLOW"][1] == "SLOW"

        tables = await one(engine, "LIST TABLES;")
        assert tables.kind == "tables" and tables.rows == []

        qid = await query_id(engine)
        queries = await one(engine, "SHOW QUERIES;")
        assert queries.kind == "queries"
        (row,) = [r for r in queries.rows if r[0] == qid]
        assert row[1:5] == ("PERSISTENT", "RUNNING:1", "SLOW", "SLOW")
        assert row[5].startswith("CREATE STREAM slow AS SELECT")

        topics = await one(engine, "SHOW TOPICS;")
        names = [r[0] for r in topics.rows]
        assert "pageviews" in names and "SLOW" in names
        assert not any(n.startswith("_") for n in names)  # internal topics are hidden
        assert dict((r[0], r[1]) for r in topics.rows)["pageviews"] == 4
        all_topics = await one(engine, "SHOW ALL TOPICS EXTENDED;")
        assert any(r[0].startswith("_") for r in all_topics.rows)
        consumers = {r[0]: r[3] for r in all_topics.rows}
        assert consumers["pageviews"] == 1 and consumers["SLOW"] == 0

    run(tmp_path, body)


def test_show_functions_properties_types_variables(tmp_path):
    async def body(engine: Engine) -> None:
        functions = await one(engine, "SHOW FUNCTIONS;")
        assert functions.kind == "function_names"
        cats = dict(functions.rows)
        assert cats["UCASE"] == "STRING"
        assert [r[0] for r in functions.rows] == sorted(r[0] for r in functions.rows)

        await engine.execute("SET 'auto.offset.reset'='earliest';")
        props = await one(engine, "SHOW PROPERTIES;")
        assert props.kind == "properties"
        assert ("auto.offset.reset", "SESSION", "earliest") in props.rows

        await engine.execute("CREATE TYPE address AS STRUCT<street STRING, zip INT>;")
        types = await one(engine, "SHOW TYPES;")
        assert types.kind == "type_list"
        assert [r[0] for r in types.rows] == ["ADDRESS"]
        assert "STRUCT<" in types.rows[0][1]

        await engine.execute("DEFINE region = 'eu';")
        variables = await one(engine, "SHOW VARIABLES;")
        assert variables.kind == "variables"
        assert variables.rows == [("region", "eu")]

    run(tmp_path, body)


def test_describe_source_and_extended(tmp_path):
    async def body(engine: Engine) -> None:
        desc = await one(engine, "DESCRIBE pageviews;")
        assert desc.kind == "sourceDescription"
        assert desc.rows == [("USER_ID", "VARCHAR(STRING)  (key)"), ("PAGE", "VARCHAR(STRING)"),
                             ("MS", "BIGINT")]
        text = render_result(desc)
        assert "Name                 : PAGEVIEWS" in text and "EXTENDED" in text

        qid = await query_id(engine)
        await wait_processed(engine, qid, 2)
        ext = await one(engine, "DESCRIBE pageviews EXTENDED;")
        entity = ext.entity["sourceDescription"]
        assert entity["topic"] == "pageviews" and entity["partitions"] == 4
        assert entity["keyFormat"] == "KAFKA" and entity["valueFormat"] == "JSON"
        assert [q["id"] for q in entity["readQueries"]] == [qid]
        assert entity["writeQueries"] == []
        assert "consumer-total-messages: 2" in entity["statistics"]
        text = render_result(ext)
        assert "Kafka topic          : pageviews (partitions: 4, replication: 1)" in text
        assert "Timestamp field      : Not set - using <ROWTIME>" in text
        assert f"{qid} (RUNNING) : CREATE STREAM slow" in text

        sink = await one(engine, "DESCRIBE slow EXTENDED;")
        assert [q["id"] for q in sink.entity["sourceDescription"]["writeQueries"]] == [qid]

        listing = await one(engine, "DESCRIBE STREAMS;")
        names = [d["name"] for d in listing.entity["sourceDescriptions"]]
        assert "PAGEVIEWS" in names and "SLOW" in names

        with pytest.raises(KsqlStatementException, match="Could not find STREAM/TABLE 'NOPE' in the Metastore"):
            await engine.execute("DESCRIBE nope;")

    run(tmp_path, body)


def test_describe_function(tmp_path):
    async def body(engine: Engine) -> None:
        fn = await one(engine, "DESCRIBE FUNCTION ucase;")
        assert fn.kind == "describe_function"
        assert fn.entity["name"] == "UCASE" and fn.entity["type"] == "SCALAR"
        (variation,) = fn.entity["functions"]
        assert variation["returnType"] == "STRING"
        assert [a["type"] for a in variation["arguments"]] == ["STRING"]
        text = render_result(fn)
        assert "Type        : SCALAR" in text and "Returns     : STRING" in text

        concat = await one(engine, "DESCRIBE FUNCTION CONCAT;")
        assert any(a["isVariadic"] for f in concat.entity["functions"] for a in f["arguments"])

        total = await one(engine, "DESCRIBE FUNCTION sum;")
        assert total.entity["type"] == "AGGREGATE"
        assert any(r[0].startswith("SUM(") and r[0].endswith(" BIGINT)") and r[1] == "BIGINT"
                   for r in total.rows)

        with pytest.raises(KsqlStatementException, match="Can't find any functions with the name 'NOPE'"):
            await engine.execute("DESCRIBE FUNCTION nope;")

    run(tmp_path, body)


def test_explain_running_query_and_statement(tmp_path):
    async def body(engine: Engine) -> None:
        qid = await query_id(engine)
        explained = await one(engine, f"EXPLAIN {qid};")
        desc = explained.entity["queryDescription"]
        assert desc["id"] == qid and desc["queryType"] == "PERSISTENT"
        assert desc["statementText"].startswith("CREATE STREAM slow AS SELECT")
        assert desc["sources"] == ["PAGEVIEWS"] and desc["sinks"] == ["SLOW"]
        assert "def process" in desc["topology"]  # the generated pipeline
        assert "FILTER" in desc["executionPlan"] and "(MS > 100)" in desc["executionPlan"]
        assert explained.rows == [("USER_ID", "VARCHAR(STRING)  (key)"), ("PAGE", "VARCHAR(STRING)")]
        text = render_result(explained)
        assert "Sources that this query reads from" in text and "Generated pipeline" in text

        with pytest.raises(KsqlStatementException, match="Query with id:NOPE_1 does not exist"):
            await engine.execute("EXPLAIN NOPE_1;")

        before = set(engine.queries)
        plan = await one(engine, "EXPLAIN CREATE STREAM other AS SELECT user_id, page FROM pageviews;")
        pdesc = plan.entity["queryDescription"]
        assert pdesc["sinks"] == ["OTHER"] and "def process" in pdesc["topology"]
        push = await one(engine, "EXPLAIN SELECT page, ms * 2 AS ms2 FROM pageviews EMIT CHANGES;")
        assert push.entity["queryDescription"]["queryType"] == "PUSH"
        assert push.rows == [("PAGE", "VARCHAR(STRING)"), ("MS2", "BIGINT")]
        # Explaining runs nothing and creates nothing.
        assert set(engine.queries) == before and engine.catalog.source("OTHER") is None
        with pytest.raises(KsqlStatementException, match="does not run a ksql query"):
            await engine.execute("EXPLAIN SHOW STREAMS;")

    run(tmp_path, body)


@pytest.mark.parametrize("fmt", ["AVRO", "PROTOBUF", "JSON_SR"])
def test_print_decodes_schema_registry_records_and_names_formats_as_ksqldb(tmp_path, fmt):
    """PRINT finds the schema-registry frame in the bytes and shows the record decoded with
    its registered schema; KAFKA keys are named by what their bytes can be."""
    async def body(engine: Engine) -> None:
        await engine.execute(f"CREATE STREAM sr (id INT KEY, name STRING, n BIGINT) WITH "
                             f"(kafka_topic='sr', value_format='{fmt}', partitions=1);"
                             "INSERT INTO sr (id, name, n) VALUES (7, 'a', 5);")
        lines = [r[0] for r in await collect(await one(engine, "PRINT 'sr' FROM BEGINNING LIMIT 1;"), 4)]
        assert lines[0] == "Key format: KAFKA_INT or KAFKA_STRING"
        assert lines[1].split(" or ")[0] == f"Value format: {fmt}"
        assert ", key: 7, value: {\"NAME\":\"a\",\"N\":5}, partition: 0" in lines[3]

    run(tmp_path, body)


def test_print_topic(tmp_path):
    async def body(engine: Engine) -> None:
        qid = await query_id(engine)
        await wait_processed(engine, qid, 2)
        result = await one(engine, "PRINT 'SLOW' FROM BEGINNING LIMIT 1;")
        assert result.kind == "stream"
        lines = [r[0] for r in await collect(result, 10)]
        assert lines[:3] == ["Key format: KAFKA_STRING", "Value format: JSON or KAFKA_STRING", "Log start offsets: 0:0, 1:0, 2:0, 3:0"]
        assert len(lines) == 4  # LIMIT 1 ends the stream after one record
        assert lines[3].startswith("rowtime: ") and lines[3].endswith(" Z, key: u1, value: {\"PAGE\":\"/HOME\"}, partition: "
                                                                      + lines[3].rsplit(" ", 1)[-1])
        # An unquoted name matches the topic regardless of case; INTERVAL skips records.
        every_other = await one(engine, "PRINT pageviews FROM BEGINNING INTERVAL 2 LIMIT 1;")
        assert len([r for r in await collect(every_other, 10) if r[0].startswith("rowtime")]) == 1

        # Without FROM BEGINNING printing starts at the end: only records produced later.
        tail = await one(engine, "PRINT pageviews LIMIT 1;")
        got = asyncio.ensure_future(collect(tail, 3))
        await asyncio.sleep(0.3)
        await engine.execute("INSERT INTO pageviews (user_id, page, ms) VALUES ('u9', '/new', 1);")
        lines = [r[0] for r in await got]
        # Printing from the end: no log start offsets line, the record follows the formats.
        assert len(lines) == 3 and "key: u9" in lines[2] and '"/new"' in lines[2]

        with pytest.raises(KsqlStatementException, match="Could not find topic 'nope'"):
            await engine.execute("PRINT 'nope';")

    run(tmp_path, body)


# ======================================================================= log start offsets
EVENTS = "CREATE STREAM events (k STRING KEY, n INT) WITH (kafka_topic='events', value_format='JSON');"


async def fill_events(engine: Engine, per_partition: int, ts: int = 1000, **config: str) -> None:
    """Topic 'events' (2 partitions) whose every write of five records is a segment of its own
    (segment.bytes=1 rolls before each write), record ``i`` of a partition valued ``{"N":i}``;
    and stream EVENTS over it."""
    await engine.log.create_topic("events", 2, config={"segment.bytes": "1", **config})
    for p in (0, 1):
        for base in range(0, per_partition, 5):
            await engine.log.produce("events", [
                ProducerRecord(f"k{i}".encode(), b'{"N":%d}' % i, ts, partition=p)
                for i in range(base, base + 5)])
    await engine.execute(EVENTS)


def test_describe_extended_and_print_show_the_log_start_offsets(tmp_path):
    """Once the oldest segments of a partition are deleted its first offset moves: DESCRIBE
    EXTENDED shows each partition's log start (text and entity), plain DESCRIBE does not, and
    PRINT FROM BEGINNING says where it starts and prints from there."""
    async def body(engine: Engine) -> None:
        await fill_events(engine, 50)
        fresh = await one(engine, "DESCRIBE events EXTENDED;")
        assert fresh.entity["sourceDescription"]["logStartOffsets"] == {"0": 0, "1": 0}

        await engine.log.delete_records("events", {0: 20})  # segments 0-4 .. 15-19 of partition 0
        ext = await one(engine, "DESCRIBE events EXTENDED;")
        entity = ext.entity["sourceDescription"]
        assert entity["logStartOffsets"] == {"0": 20, "1": 0}
        assert entity["partitions"] == 2 and entity["topic"] == "events"  # ksqlDB's fields as before
        lines = render_result(ext).splitlines()
        i = lines.index("Kafka topic          : events (partitions: 2, replication: 1)")
        assert lines[i + 1] == "Log start offsets    : 0:20, 1:0"
        assert lines[i + 2].startswith("Statement            : CREATE STREAM events")

        # The listing of every stream, extended, shows it per stream too.
        listing = await one(engine, "DESCRIBE STREAMS EXTENDED;")
        by_name = {d["name"]: d for d in listing.entity["sourceDescriptions"]}
        assert by_name["EVENTS"]["logStartOffsets"] == {"0": 20, "1": 0}
        assert "Log start offsets    : 0:20, 1:0" in render_result(listing)

        plain = await one(engine, "DESCRIBE events;")
        assert plain.entity["sourceDescription"]["logStartOffsets"] is None
        assert "Log start offsets" not in render_result(plain)

        printed = await one(engine, "PRINT 'events' FROM BEGINNING LIMIT 80;")
        lines = [r[0] for r in await collect(printed, 83)]
        assert lines[:3] == ["Key format: KAFKA_STRING", "Value format: JSON or KAFKA_STRING", "Log start offsets: 0:20, 1:0"]
        records = lines[3:]
        assert len(records) == 80  # 30 left in partition 0, all 50 of partition 1
        first = [r for r in records if r.endswith("partition: 0")]
        assert len(first) == 30 and 'key: k20, value: {"N":20}' in first[0]
        assert len([r for r in records if r.endswith("partition: 1")]) == 50

    run(tmp_path, body)


def test_retention_moves_the_log_start_describe_extended_shows(tmp_path):
    """Time retention (retention.ms) deleting a partition's old segments shows in DESCRIBE
    EXTENDED as it does for DeleteRecords, on every partition it touched."""
    now = 10_000_000

    async def body(engine: Engine) -> None:
        await fill_events(engine, 15, ts=now - 120_000, **{"retention.ms": "60000"})
        await engine.log.produce("events", [ProducerRecord(b"new", b'{"N":15}', now, partition=p)
                                            for p in (0, 1)])
        await engine.log.apply_retention(now)
        ext = await one(engine, "DESCRIBE events EXTENDED;")
        assert ext.entity["sourceDescription"]["logStartOffsets"] == {"0": 15, "1": 15}
        assert "Log start offsets    : 0:15, 1:15" in render_result(ext)
        printed = await one(engine, "PRINT events FROM BEGINNING LIMIT 2;")
        lines = [r[0] for r in await collect(printed, 5)]
        assert lines[2] == "Log start offsets: 0:15, 1:15"
        assert all('key: new, value: {"N":15}' in line for line in lines[3:]) and len(lines) == 5

    run(tmp_path, body)

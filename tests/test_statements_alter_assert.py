"""ALTER STREAM/TABLE, ALTER SYSTEM, ASSERT TOPIC/SCHEMA and PAUSE/RESUME, as a user sees them
through the embedded engine (ksqlDB 0.29's statements, entities and error texts)."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest

from streamsql.engine import Engine
from streamsql.errors import KsqlStatementException, ParseError
from streamsql.runtime.log.embedded import EmbeddedLog
from tests.test_engine import _close, _open, _wait_for

ORDERS = ("CREATE STREAM orders (id STRING KEY, amount INT) "
          "WITH (kafka_topic='orders', value_format='JSON', partitions=1);")


async def _values(log: EmbeddedLog, topic: str) -> list[dict | None]:
    end = (await log.end_offsets(topic))[0]
    batch = await log.fetch(topic, 0, 0, end)
    return [orjson.loads(v) if v is not None else None for v in batch.values]


async def _error(engine: Engine, sql: str) -> str:
    with pytest.raises(KsqlStatementException) as err:
        await engine.execute(sql)
    return str(err.value)


# ================================================================================== ALTER
def test_alter_adds_value_columns_that_survive_a_restart(tmp_path: Path) -> None:
    async def main() -> None:
        log, engine = await _open(tmp_path)
        await engine.execute(ORDERS)
        [res] = await engine.execute("ALTER STREAM orders ADD COLUMN note STRING, ADD COLUMN qty BIGINT;")
        assert (res.kind, res.message) == ("currentStatus", "Source ORDERS has been altered.")
        assert str(engine.catalog.source("ORDERS").schema) == \
            "`ID` STRING KEY, `AMOUNT` INTEGER, `NOTE` STRING, `QTY` BIGINT"
        # The new columns can be written and read by new queries.
        await engine.execute("INSERT INTO orders (id, amount, note, qty) VALUES ('a', 1, 'x', 7);")
        assert await _values(log, "orders") == [{"AMOUNT": 1, "NOTE": "x", "QTY": 7}]
        await _close(log, engine)
        log, engine = await _open(tmp_path)
        assert [c.name for c in engine.catalog.source("ORDERS").schema.value] == ["AMOUNT", "NOTE", "QTY"]
        await _close(log, engine)
    asyncio.run(main())


def test_alter_is_refused_as_ksqldb_refuses_it(tmp_path: Path) -> None:
    async def main() -> None:
        log, engine = await _open(tmp_path)
        await engine.execute(ORDERS + "CREATE STREAM big AS SELECT * FROM orders WHERE amount > 10;"
                             "CREATE SOURCE TABLE t (id STRING PRIMARY KEY, v INT) "
                             "WITH (kafka_topic='t', value_format='JSON', partitions=1);")
        assert await _error(engine, "ALTER STREAM orders ADD COLUMN amount BIGINT;") == \
            "Cannot add column `AMOUNT` to schema. A column with the same name already exists."
        assert await _error(engine, "ALTER STREAM big ADD COLUMN x INT;") == \
            "ALTER command is not supported for CREATE ... AS statements."
        assert await _error(engine, "ALTER TABLE orders ADD COLUMN x INT;") == \
            "Incompatible data source type is STREAM, but statement was ALTER TABLE"
        assert await _error(engine, "ALTER STREAM nope ADD COLUMN x INT;") == "Source NOPE does not exist."
        assert await _error(engine, "ALTER TABLE t ADD COLUMN x INT;") == \
            "Cannot alter table 'T': ALTER operations are not supported on source tables."
        # A refused ALTER changes nothing.
        assert [c.name for c in engine.catalog.source("ORDERS").schema.value] == ["AMOUNT"]
        await _close(log, engine)
    asyncio.run(main())


# ================================================================================= ASSERT
def test_assert_topic_checks_existence_partitions_and_replicas(tmp_path: Path) -> None:
    async def main() -> None:
        log, engine = await _open(tmp_path)
        await engine.execute(ORDERS)
        [res] = await engine.execute("ASSERT TOPIC orders WITH (PARTITIONS=1, REPLICAS=1);")
        assert res.entity == {"@type": "assert_topic", "statementText": res.statement,
                              "topicName": "orders", "exists": True, "warnings": []}
        assert res.message == "Topic orders exists."
        [res] = await engine.execute("ASSERT NOT EXISTS TOPIC `Orders` TIMEOUT 0 SECONDS;")
        assert (res.entity["topicName"], res.entity["exists"]) == ("Orders", False)
        started = time.monotonic()
        assert await _error(engine, "ASSERT TOPIC missing;") == "Topic missing does not exist"
        assert time.monotonic() - started >= 0.9  # waited ksql.assert.topic.default.timeout.ms
        assert await _error(engine, "ASSERT NOT EXISTS TOPIC orders TIMEOUT 100 MILLISECONDS;") == \
            "Topic orders exists"
        assert await _error(engine, "ASSERT TOPIC orders WITH (PARTITIONS=3, FOO='x') TIMEOUT 0 SECONDS;") == (
            "Mismatched configuration for topic orders: For config partitions, expected 3 got 1\n"
            "Cannot assert unknown topic property: FOO")
        await _close(log, engine)
    asyncio.run(main())


def test_assert_topic_waits_for_a_topic_made_meanwhile(tmp_path: Path) -> None:
    async def main() -> None:
        log, engine = await _open(tmp_path)

        async def create_later() -> None:
            await asyncio.sleep(0.3)
            await log.create_topic("late", 2)
        maker = asyncio.create_task(create_later())
        [res] = await engine.execute("ASSERT TOPIC late WITH (partitions=2) TIMEOUT 5 SECONDS;")
        assert res.entity["exists"] is True
        await maker
        await _close(log, engine)
    asyncio.run(main())


def test_assert_schema_by_subject_and_id(tmp_path: Path) -> None:
    async def main() -> None:
        log, engine = await _open(tmp_path)
        schema = '{"type": "record", "name": "R", "fields": [{"name": "A", "type": "int"}]}'
        schema_id = engine.schema_registry.register("s-value", "AVRO", schema)
        [res] = await engine.execute(f"ASSERT SCHEMA SUBJECT 's-value' ID {schema_id};")
        assert res.entity == {"@type": "assert_schema", "statementText": res.statement, "subject": "s-value",
                              "id": schema_id, "exists": True, "warnings": []}
        await engine.execute(f"ASSERT SCHEMA ID {schema_id}; ASSERT NOT EXISTS SCHEMA SUBJECT other TIMEOUT 0 SECONDS;")
        assert await _error(engine, f"ASSERT SCHEMA SUBJECT other ID {schema_id} TIMEOUT 0 SECONDS;") == \
            f"Schema with subject other id {schema_id} does not exist"
        assert await _error(engine, "ASSERT NOT EXISTS SCHEMA SUBJECT 's-value' TIMEOUT 0 SECONDS;") == \
            "Schema with subject s-value exists"
        with pytest.raises(Exception, match="ASSERT SCHEMA statements much include a subject name or an id"):
            await engine.execute("ASSERT SCHEMA TIMEOUT 1 SECOND;")
        await _close(log, engine)
    asyncio.run(main())


def test_assert_values_is_not_a_statement_of_the_server(tmp_path: Path) -> None:
    async def main() -> None:
        log, engine = await _open(tmp_path)
        with pytest.raises(ParseError, match="Syntax error at or near 'VALUES' at line 1:8"):
            await engine.execute("ASSERT VALUES foo (id INT) VALUES (123);")
        await _close(log, engine)
    asyncio.run(main())


# =========================================================================== ALTER SYSTEM
def test_alter_system_sets_a_cluster_property_kept_over_a_restart(tmp_path: Path) -> None:
    async def main() -> None:
        log, engine = await _open(tmp_path)
        [res] = await engine.execute("ALTER SYSTEM 'ksql.assert.topic.default.timeout.ms'='0';")
        assert res.message == "System property ksql.assert.topic.default.timeout.ms was set to 0."
        started = time.monotonic()
        await _error(engine, "ASSERT TOPIC missing;")
        assert time.monotonic() - started < 0.5  # the new default timeout applies
        await _close(log, engine)
        log, engine = await _open(tmp_path)
        assert engine.config["ksql.assert.topic.default.timeout.ms"] == "0"
        await _close(log, engine)
    asyncio.run(main())


def test_alter_system_refuses_denied_properties(tmp_path: Path) -> None:
    async def main() -> None:
        log = EmbeddedLog(tmp_path)
        engine = Engine(log, {"ksql.properties.overrides.denylist": "ksql.service.id"})
        await engine.start()
        assert await _error(engine, "ALTER SYSTEM 'ksql.service.id'='x';") == \
            "Cannot override property 'ksql.service.id'"
        await _close(log, engine)
    asyncio.run(main())


# ========================================================================== PAUSE/RESUME
def test_pause_stops_processing_and_resume_goes_on_where_it_stopped(tmp_path: Path) -> None:
    async def main() -> None:
        log, engine = await _open(tmp_path)
        await engine.execute(ORDERS + "CREATE STREAM big AS SELECT * FROM orders WHERE amount > 10;")
        [query_id] = engine.catalog.queries
        await engine.execute("INSERT INTO orders (id, amount) VALUES ('a', 11);")

        async def outputs(n: int):
            async def check() -> bool:
                return len(await _values(log, "BIG")) == n
            return check
        await _wait_for(await outputs(1))
        [res] = await engine.execute(f"PAUSE {query_id};")
        assert res.message == "Query paused."
        [shown] = await engine.execute("SHOW QUERIES;")
        assert shown.rows[0][2] == "PAUSED:1"
        [desc] = await engine.execute("DESCRIBE big EXTENDED;")
        assert orjson.dumps(desc.entity).count(b'"PAUSED"') >= 1
        await engine.execute("INSERT INTO orders (id, amount) VALUES ('b', 12);")
        await asyncio.sleep(0.5)
        assert len(await _values(log, "BIG")) == 1  # nothing processed while paused
        # Paused survives a restart.
        await _close(log, engine)
        log, engine = await _open(tmp_path)
        [shown] = await engine.execute("SHOW QUERIES;")
        assert shown.rows[0][2] == "PAUSED:1"
        await asyncio.sleep(0.3)
        assert len(await _values(log, "BIG")) == 1
        [res] = await engine.execute("RESUME ALL;")
        assert res.message == "Query resumed."
        await _wait_for(await outputs(2))
        assert await _values(log, "BIG") == [{"AMOUNT": 11}, {"AMOUNT": 12}]
        [shown] = await engine.execute("SHOW QUERIES;")
        assert shown.rows[0][2] == "RUNNING:1"
        assert await _error(engine, "PAUSE nope;") == "Unknown queryId: NOPE"
        await _close(log, engine)
    asyncio.run(main())


def test_records_written_while_a_new_query_is_paused_are_processed_on_resume(tmp_path: Path) -> None:
    async def main() -> None:
        log, engine = await _open(tmp_path)
        await engine.execute(ORDERS + "CREATE STREAM big AS SELECT * FROM orders WHERE amount > 10;")
        [query_id] = engine.catalog.queries
        await engine.execute(f"PAUSE {query_id}; INSERT INTO orders (id, amount) VALUES ('a', 11);")
        await engine.execute(f"RESUME {query_id};")

        async def written() -> bool:
            return await _values(log, "BIG") == [{"AMOUNT": 11}]
        await _wait_for(written)
        await _close(log, engine)
    asyncio.run(main())


def test_a_paused_aggregation_keeps_its_state_for_pull_queries(tmp_path: Path) -> None:
    async def main() -> None:
        log, engine = await _open(tmp_path)
        await engine.execute(ORDERS + "CREATE TABLE totals AS SELECT id, SUM(amount) AS total FROM orders GROUP BY id;")
        [query_id] = engine.catalog.queries
        await engine.execute("INSERT INTO orders (id, amount) VALUES ('a', 1);")

        async def total(n: int):
            async def check() -> bool:
                [res] = await engine.execute("SELECT total FROM totals WHERE id = 'a';")
                return res.rows == [(n,)]
            return check
        await _wait_for(await total(1))
        await engine.execute(f"PAUSE {query_id}; INSERT INTO orders (id, amount) VALUES ('a', 2);")
        await asyncio.sleep(0.5)
        assert await (await total(1))()  # still answered, not updated
        await engine.execute(f"RESUME {query_id};")
        await _wait_for(await total(3))
        await _close(log, engine)
    asyncio.run(main())

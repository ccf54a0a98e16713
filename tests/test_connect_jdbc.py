"""The JDBC source and sink connectors against real databases: a private MariaDB and PostgreSQL
started by the session (tests/conftest.py), and SQLite files.

A small harness plays the worker: it starts the connector, asks for task configs, starts the
tasks with a SourceTaskContext over an offset store, polls, stores each returned record's offset
(as the worker does once the record is written), and restarts tasks from the stored offsets.
The sink's tasks are given SinkRecords directly. At the end, the same connectors run by the
Connect worker on the embedded log (MariaDB -> topic -> PostgreSQL, a table created later) and
by ``CREATE SOURCE CONNECTOR`` on a ``streamsql server`` (the four modes, a connector refused
its credentials).
"""
from __future__ import annotations

import datetime
import decimal
import json
import sqlite3
import time
from typing import Any, Mapping

import pytest

from streamsql.runtime.connect.api import (
    DATE, DECIMAL, INT32, INT64, STRING, STRUCT, TIMESTAMP, ConnectException, RetriableException, Schema,
    SinkRecord, SourceRecord, SourceTaskContext, Struct)
from streamsql.runtime.connect.jdbc import PLUGINS, JdbcSinkConnector, JdbcSinkTask, JdbcSourceConnector, JdbcSourceTask
from streamsql.runtime.connect.jdbc.source import group_partitions
from streamsql.testing.kafka import free_ports

pytestmark = pytest.mark.timeout(120)

UTC = datetime.timezone.utc


class OffsetStore(SourceTaskContext):
    """The worker's offset store: partition -> last stored offset."""

    def __init__(self) -> None:
        self.offsets: dict[str, Mapping[str, Any]] = {}

    @staticmethod
    def _key(partition: Mapping[str, Any]) -> str:
        return json.dumps(partition, sort_keys=True)

    def offset(self, source_partition: Mapping[str, Any]) -> Mapping[str, Any] | None:
        return self.offsets.get(self._key(source_partition))

    def store(self, record: SourceRecord) -> None:
        if record.source_offset is not None:
            self.offsets[self._key(record.source_partition)] = dict(record.source_offset)


class SourceHarness:
    """Runs a source connector's tasks as a worker would, in the test's thread."""

    def __init__(self, config: dict[str, str], max_tasks: int = 1, store: OffsetStore | None = None) -> None:
        self.config = {"poll.interval.ms": "50", "connection.attempts": "1", **config}
        self.max_tasks = max_tasks
        self.store = store or OffsetStore()
        self.connector = JdbcSourceConnector()
        self.tasks: list[JdbcSourceTask] = []
        self.task_configs: list[dict[str, str]] = []

    def __enter__(self) -> "SourceHarness":
        self.connector.start(self.config)
        self.task_configs = self.connector.task_configs(self.max_tasks)
        self._start_tasks()
        return self

    def _start_tasks(self) -> None:
        self.tasks = []
        for cfg in self.task_configs:
            task = JdbcSourceTask()
            task.initialize(self.store)
            task.start(cfg)
            self.tasks.append(task)

    def restart(self) -> None:
        """Stops the tasks and starts new ones from the stored offsets (a worker restart)."""
        for t in self.tasks:
            t.stop()
        self._start_tasks()

    def poll(self, min_records: int = 1, timeout: float = 10.0, settle: float = 0.3) -> list[SourceRecord]:
        """Polls every task until at least ``min_records`` came and nothing more for ``settle``
        seconds (or ``timeout``); stores each record's offset."""
        out: list[SourceRecord] = []
        deadline = time.monotonic() + timeout
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            got = False
            for task in self.tasks:
                records = task.poll() or []
                for r in records:
                    self.store.store(r)
                out.extend(records)
                got = got or bool(records)
            if got:
                quiet_since = time.monotonic()
            elif len(out) >= min_records and time.monotonic() - quiet_since >= settle:
                break
        return out

    def __exit__(self, *exc: object) -> None:
        for t in self.tasks:
            t.stop()
        self.connector.stop()


def rows(records: list[SourceRecord], *fields: str) -> list[tuple]:
    return [tuple(r.value.get(f) for f in fields) for r in records]


# -- MariaDB: the four modes ---------------------------------------------------------------

USERS = ("CREATE TABLE users (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(40) NOT NULL, "
         "score DECIMAL(10,2), born DATE, updated DATETIME(3) NOT NULL)")


def _seed_users(db: Any) -> None:
    db.execute(USERS, "INSERT INTO users (name, score, born, updated) VALUES "
                      "('alice', 1.50, '1990-05-01', NOW(3) - INTERVAL 50 SECOND), "
                      "('bob', NULL, NULL, NOW(3) - INTERVAL 40 SECOND), "
                      "('carol', 3.00, '2001-01-31', NOW(3) - INTERVAL 30 SECOND)")


def test_bulk_reads_every_row_each_time(mariadb):
    _seed_users(mariadb)
    config = {**mariadb.connector_config(), "mode": "bulk", "topic.prefix": "mdb-", "poll.interval.ms": "1000"}
    with SourceHarness(config) as h:
        first = h.poll(3)
        assert sorted(rows(first, "id", "name")) == [(1, "alice"), (2, "bob"), (3, "carol")]
        assert {r.topic for r in first} == {"mdb-users"}
        assert {json.dumps(r.source_partition) for r in first} == {'{"table": "users"}'}
        assert all(r.source_offset is None and r.key is None for r in first)
        mariadb.execute("UPDATE users SET name = 'ALICE' WHERE id = 1", "INSERT INTO users (name, updated) "
                        "VALUES ('dave', NOW(3))")
        again = h.poll(4)  # the next turn reads the whole table again
        latest = {r.value.get("id"): r.value.get("name") for r in again}
        assert latest == {1: "ALICE", 2: "bob", 3: "carol", 4: "dave"}


def test_incrementing_reads_new_ids_only_with_confluents_schema_and_offsets(mariadb):
    _seed_users(mariadb)
    # No incrementing.column.name: the AUTO_INCREMENT column is found, as Confluent does.
    config = {**mariadb.connector_config(), "mode": "incrementing", "topic.prefix": "mdb-"}
    with SourceHarness(config) as h:
        first = h.poll(3)
        assert rows(first, "id", "name", "score", "born") == [
            (1, "alice", decimal.Decimal("1.50"), datetime.date(1990, 5, 1)),
            (2, "bob", None, None), (3, "carol", decimal.Decimal("3.00"), datetime.date(2001, 1, 31))]
        partition = {"protocol": "1", "table": f"{mariadb.name}.users"}
        assert [dict(r.source_partition) for r in first] == [partition] * 3
        assert [dict(r.source_offset) for r in first] == [{"incrementing": 1}, {"incrementing": 2}, {"incrementing": 3}]
        schema = first[0].value_schema
        assert schema.type == STRUCT and schema.name == "users" and not schema.optional
        by_name = {f.name: f.schema for f in schema.fields}
        assert [f.name for f in schema.fields] == ["id", "name", "score", "born", "updated"]
        assert (by_name["id"].type, by_name["id"].optional) == (INT32, False)
        assert (by_name["name"].type, by_name["name"].optional) == (STRING, False)
        assert (by_name["score"].name, by_name["score"].optional, dict(by_name["score"].parameters)) == \
            (DECIMAL, True, {"scale": "2"})
        assert (by_name["born"].name, by_name["born"].type, by_name["born"].optional) == (DATE, INT32, True)
        assert (by_name["updated"].name, by_name["updated"].type) == (TIMESTAMP, INT64)
        assert first[0].value.get("updated").tzinfo is not None

        mariadb.execute("UPDATE users SET name = 'ALICE' WHERE id = 1",
                        "INSERT INTO users (name, updated) VALUES ('dave', NOW(3)), ('erin', NOW(3))")
        second = h.poll(2)
        assert rows(second, "id", "name") == [(4, "dave"), (5, "erin")]  # the update is not seen
        assert dict(second[-1].source_offset) == {"incrementing": 5}


def test_incrementing_resumes_from_stored_offsets_after_a_restart(mariadb):
    _seed_users(mariadb)
    config = {**mariadb.connector_config(), "mode": "incrementing", "incrementing.column.name": "id",
              "topic.prefix": "mdb-", "batch.max.rows": "2"}
    with SourceHarness(config) as h:
        first = h.poll(3)
        assert [r.value.get("id") for r in first] == [1, 2, 3]
        assert h.store.offset({"protocol": "1", "table": f"{mariadb.name}.users"}) == {"incrementing": 3}
        h.restart()
        mariadb.execute("INSERT INTO users (name, updated) VALUES ('dave', NOW(3))")
        assert [r.value.get("id") for r in h.poll(1)] == [4]

    # An offset stored under the older partition ({"table": "users"}) is honoured too.
    store = OffsetStore()
    store.offsets[OffsetStore._key({"table": "users"})] = {"incrementing": 2}
    with SourceHarness(config, store=store) as h:
        assert [r.value.get("id") for r in h.poll(2)] == [3, 4]


def test_timestamp_mode_sees_updates_but_not_rows_ahead_of_the_database_clock(mariadb):
    _seed_users(mariadb)
    config = {**mariadb.connector_config(), "mode": "timestamp", "timestamp.column.name": "updated",
              "topic.prefix": "mdb-"}
    with SourceHarness(config) as h:
        first = h.poll(3)
        assert rows(first, "id", "name") == [(1, "alice"), (2, "bob"), (3, "carol")]
        last = first[-1]
        ts = last.value.get("updated")
        assert dict(last.source_offset) == {"timestamp": int(ts.timestamp() * 1000),
                                            "timestamp_nanos": ts.microsecond * 1000}
        # An update moves the row's timestamp: it is read again; a row stamped an hour ahead waits.
        mariadb.execute("UPDATE users SET name = 'ALICE', updated = NOW(3) - INTERVAL 5 SECOND WHERE id = 1",
                        "INSERT INTO users (name, updated) VALUES ('future', NOW(3) + INTERVAL 1 HOUR)")
        second = h.poll(1)
        assert rows(second, "id", "name") == [(1, "ALICE")]


def test_timestamp_delay_holds_rows_back_until_they_are_old_enough(mariadb):
    mariadb.execute("CREATE TABLE ev (id INT PRIMARY KEY, at TIMESTAMP(3) NOT NULL)",
                    "INSERT INTO ev VALUES (1, NOW(3) - INTERVAL 1 HOUR), (2, NOW(3) - INTERVAL 10 SECOND)")
    config = {**mariadb.connector_config(), "mode": "timestamp", "timestamp.column.name": "at",
              "topic.prefix": "mdb-", "timestamp.delay.interval.ms": "60000"}
    with SourceHarness(config) as h:
        assert [r.value.get("id") for r in h.poll(1)] == [1]


def test_timestamp_initial_current_time_skips_the_rows_already_there(mariadb):
    mariadb.execute("CREATE TABLE ev (id INT PRIMARY KEY, at DATETIME(3) NOT NULL)",
                    "INSERT INTO ev VALUES (1, NOW(3) - INTERVAL 1 HOUR)")
    config = {**mariadb.connector_config(), "mode": "timestamp", "timestamp.column.name": "at",
              "topic.prefix": "i-", "timestamp.initial": "-1"}
    with SourceHarness(config) as h:
        assert h.poll(0, timeout=0.5) == []
        time.sleep(1.0)  # past the second of the first query: MariaDB's CURRENT_TIMESTAMP has seconds
        mariadb.execute("INSERT INTO ev VALUES (2, NOW(3))")
        assert [r.value.get("id") for r in h.poll(1)] == [2]


def test_timestamp_incrementing_sees_new_rows_and_updates_once(mariadb):
    _seed_users(mariadb)
    # Two rows on the same timestamp: the id orders them, and neither is read twice.
    mariadb.execute("UPDATE users SET updated = (SELECT u FROM (SELECT updated AS u FROM users WHERE id = 3) x) "
                    "WHERE id = 2")
    config = {**mariadb.connector_config(), "mode": "timestamp+incrementing", "timestamp.column.name": "updated",
              "incrementing.column.name": "id", "topic.prefix": "mdb-"}
    with SourceHarness(config) as h:
        first = h.poll(3)
        assert [r.value.get("id") for r in first] == [1, 2, 3]
        assert set(first[-1].source_offset) == {"incrementing", "timestamp", "timestamp_nanos"}
        assert first[-1].source_offset["incrementing"] == 3
        mariadb.execute("UPDATE users SET name = 'BOB', updated = NOW(3) - INTERVAL 3 SECOND WHERE id = 2",
                        "INSERT INTO users (name, updated) VALUES ('dave', NOW(3) - INTERVAL 2 SECOND)")
        second = h.poll(2)
        assert rows(second, "id", "name") == [(2, "BOB"), (4, "dave")]
        h.restart()
        mariadb.execute("INSERT INTO users (name, updated) VALUES ('erin', NOW(3) - INTERVAL 1 SECOND)")
        assert rows(h.poll(1), "id", "name") == [(5, "erin")]


def test_timestamp_columns_are_coalesced_in_order_and_each_records_offset_is_its_rows(mariadb):
    # timestamp.column.name with two columns: a row's timestamp is the first that is not
    # NULL; a batch whose first column is never NULL and one where it is give the same offsets.
    mariadb.execute(
        "CREATE TABLE docs (id INT PRIMARY KEY, modified DATETIME(3) NULL, created DATETIME(3) NOT NULL)",
        "INSERT INTO docs VALUES (1, NULL, '2024-01-01 00:00:01.000'), (2, '2024-01-01 00:00:05.000', "
        "'2024-01-01 00:00:02.000'), (3, NULL, '2024-01-01 00:00:03.000')")
    config = {**mariadb.connector_config(), "mode": "timestamp+incrementing", "incrementing.column.name": "id",
              "timestamp.column.name": "modified,created", "topic.prefix": "d-"}
    with SourceHarness(config) as h:
        got = h.poll(3)
        assert [(r.value.get("id"), dict(r.source_offset)) for r in got] == [
            (1, {"incrementing": 1, "timestamp": 1704067201000, "timestamp_nanos": 0}),
            (3, {"incrementing": 3, "timestamp": 1704067203000, "timestamp_nanos": 0}),
            (2, {"incrementing": 2, "timestamp": 1704067205000, "timestamp_nanos": 0})]
        mariadb.execute("UPDATE docs SET modified = '2024-01-01 00:00:06.250' WHERE id IN (1, 3)")
        again = h.poll(2)
        assert [(r.value.get("id"), dict(r.source_offset)) for r in again] == [
            (1, {"incrementing": 1, "timestamp": 1704067206250, "timestamp_nanos": 250000000}),
            (3, {"incrementing": 3, "timestamp": 1704067206250, "timestamp_nanos": 250000000})]
        h.restart()
        assert h.poll(0, timeout=1.0) == []  # resumed after the last offset stored


def test_query_mode_appends_the_criteria_to_the_query(mariadb):
    _seed_users(mariadb)
    config = {**mariadb.connector_config(), "mode": "incrementing", "incrementing.column.name": "id",
              "query": "SELECT id, UPPER(name) AS shout FROM users", "topic.prefix": "shouts"}
    with SourceHarness(config) as h:
        assert len(h.task_configs) == 1
        first = h.poll(3)
        assert rows(first, "id", "shout") == [(1, "ALICE"), (2, "BOB"), (3, "CAROL")]
        assert {r.topic for r in first} == {"shouts"}
        assert dict(first[0].source_partition) == {"query": "query"}
        assert first[0].value_schema.name is None  # a query's struct is unnamed, as Confluent's
        mariadb.execute("INSERT INTO users (name, updated) VALUES ('dave', NOW(3))")
        assert rows(h.poll(1), "id", "shout") == [(4, "DAVE")]


def test_whitelist_blacklist_and_tasks_max_spread_tables_as_connect(mariadb):
    names = ["t_a", "t_b", "t_c", "t_d", "t_e"]
    mariadb.execute(*[f"CREATE TABLE {n} (id INT PRIMARY KEY)" for n in names],
                    *[f"INSERT INTO {n} VALUES (1)" for n in names])
    base = {**mariadb.connector_config(), "mode": "bulk", "topic.prefix": "p-", "poll.interval.ms": "5000"}
    with SourceHarness(base, max_tasks=2) as h:
        assert [c["tables"].count("`.`") for c in h.task_configs] == [3, 2]
        assert {r.topic for r in h.poll(5)} == {f"p-{n}" for n in names}
    with SourceHarness({**base, "table.whitelist": f"t_b,{mariadb.name}.t_d"}, max_tasks=4) as h:
        assert len(h.task_configs) == 2  # never more tasks than tables
        assert {r.topic for r in h.poll(2)} == {"p-t_b", "p-t_d"}
    with SourceHarness({**base, "table.blacklist": "t_a,t_e"}) as h:
        assert {r.topic for r in h.poll(3)} == {"p-t_b", "p-t_c", "p-t_d"}
    with pytest.raises(ConnectException, match="table.whitelist and table.blacklist are exclusive"):
        JdbcSourceConnector().start({**base, "table.whitelist": "t_a", "table.blacklist": "t_b"})
    assert group_partitions(list(range(7)), 3) == [[0, 1, 2], [3, 4], [5, 6]]


def test_source_errors_are_clear(mariadb, tmp_path):
    _seed_users(mariadb)
    base = {**mariadb.connector_config(), "mode": "incrementing", "incrementing.column.name": "id",
            "topic.prefix": "e-", "connection.attempts": "1"}
    with pytest.raises(ConnectException, match="Access denied") as denied:
        JdbcSourceConnector().start({**base, "connection.password": "wrong"})
    assert not isinstance(denied.value, RetriableException)
    # user and password may come in the URL's query string instead
    in_url = {k: v for k, v in base.items() if k not in ("connection.user", "connection.password")}
    in_url["connection.url"] = f"{mariadb.url}?user={mariadb.user}&password={mariadb.password}"
    with SourceHarness(in_url) as h:
        assert len(h.poll(3)) == 3
    down = f"jdbc:mariadb://127.0.0.1:{free_ports(1)[0]}/{mariadb.name}"
    with pytest.raises(RetriableException, match="Could not connect to jdbc:mariadb://127.0.0.1"):
        JdbcSourceConnector().start({**base, "connection.url": down})
    with pytest.raises(ConnectException, match='Missing required configuration "topic.prefix"'):
        JdbcSourceConnector().start({k: v for k, v in base.items() if k != "topic.prefix"})
    mariadb.execute("CREATE TABLE loose (id INT NULL)")
    with pytest.raises(ConnectException, match="Cannot make incremental queries using incrementing column id "
                                               f"on {mariadb.name}.loose because this column is nullable"):
        with SourceHarness({**base, "table.whitelist": "loose"}):
            pass
    # A table dropped under a running task: the task fails naming it.
    with SourceHarness({**base, "table.whitelist": "users"}) as h:
        assert len(h.poll(3)) == 3
        mariadb.execute("DROP TABLE users")
        with pytest.raises(ConnectException, match=r"table .*users.*does not exist"):
            for _ in range(50):
                h.tasks[0].poll()


def test_a_database_going_down_is_retriable_and_the_task_resumes(tmp_path):
    # A server of its own, to stop and start under the task.
    from streamsql.testing.databases import MariaDBServer

    server = MariaDBServer(tmp_path / "own", die_with_parent=True).start()
    try:
        db = server.new_database()
        _seed_users(db)
        config = {**db.connector_config(), "mode": "incrementing", "incrementing.column.name": "id",
                  "topic.prefix": "d-"}
        with SourceHarness(config) as h:
            assert len(h.poll(3)) == 3
            server.stop()
            with pytest.raises(RetriableException):
                for _ in range(50):
                    h.tasks[0].poll()
            server.start()  # the same data directory and port
            db.execute("INSERT INTO users (name, updated) VALUES ('dave', NOW(3))")
            assert rows(h.poll(1), "id", "name") == [(4, "dave")]
    finally:
        server.kill()


def test_mariadb_column_types_map_as_confluents(mariadb):
    mariadb.execute(
        "CREATE TABLE kinds (id INT PRIMARY KEY, b1 TINYINT(1) NOT NULL, i8 TINYINT, u8 TINYINT UNSIGNED, "
        "u16 SMALLINT UNSIGNED, i24 MEDIUMINT, u32 INT UNSIGNED, i64 BIGINT, f FLOAT, d DOUBLE, n DECIMAL(5,0), "
        "bit1 BIT(1), bit8 BIT(8), c CHAR(3), t TEXT, j JSON, e ENUM('a','b'), bl BLOB, vb VARBINARY(4), "
        "dt DATE, tm TIME(3), dtm DATETIME(6), ts TIMESTAMP NULL, y YEAR)",
        "INSERT INTO kinds VALUES (1, 1, -5, 200, 60000, -7, 4000000000, 9000000000, 1.5, 2.25, 12345, b'1', "
        "b'10000001', 'abc', 'long text', '{\"k\": [1, 2]}', 'b', x'00ff', x'0102', '2024-02-29', "
        "'23:59:58.125', '2024-02-29 12:00:00.123456', '2024-03-01 00:00:01', 2024)")
    config = {**mariadb.connector_config(), "mode": "incrementing", "incrementing.column.name": "id",
              "topic.prefix": "k-"}
    with SourceHarness(config) as h:
        (record,) = h.poll(1)
    types = {f.name: (f.schema.name.rsplit(".", 1)[-1] if f.schema.name else f.schema.type, f.schema.optional)
             for f in record.value_schema.fields}
    assert types == {
        "id": ("int32", False), "b1": ("int8", False), "i8": ("int8", True), "u8": ("int16", True),
        "u16": ("int32", True), "i24": ("int32", True), "u32": ("int64", True), "i64": ("int64", True),
        "f": ("float", True), "d": ("double", True), "n": ("Decimal", True), "bit1": ("int8", True),
        "bit8": ("bytes", True), "c": ("string", True), "t": ("string", True), "j": ("string", True),
        "e": ("string", True), "bl": ("bytes", True), "vb": ("bytes", True), "dt": ("Date", True),
        "tm": ("Time", True), "dtm": ("Timestamp", True), "ts": ("Timestamp", True), "y": ("Date", True)}
    v = record.value
    assert (v.get("b1"), v.get("u8"), v.get("u32"), v.get("n"), v.get("bit1"), v.get("bit8")) == \
        (1, 200, 4000000000, decimal.Decimal("12345"), 1, b"\x81")
    assert (v.get("j"), v.get("e"), v.get("bl"), v.get("vb")) == ('{"k": [1, 2]}', "b", b"\x00\xff", b"\x01\x02")
    assert (v.get("dt"), v.get("tm"), v.get("y")) == (datetime.date(2024, 2, 29), datetime.time(23, 59, 58, 125000),
                                                      datetime.date(2024, 1, 1))
    assert v.get("dtm") == datetime.datetime(2024, 2, 29, 12, 0, 0, 123456, tzinfo=UTC)
    assert v.get("ts") == datetime.datetime(2024, 3, 1, 0, 0, 1, tzinfo=UTC)


@pytest.mark.parametrize("zone", ["UTC", "Europe/Berlin"])
def test_mariadb_dates_and_timestamps_with_nulls_and_zero_dates_in_one_batch(mariadb, zone):
    # A batch of rows is converted a column at a time: NULLs, zero dates (NULL, as MySQLdb
    # reads them), every fraction width and a db.timezone other than UTC, side by side.
    mariadb.execute(
        "SET SESSION sql_mode = ''",
        "CREATE TABLE moments (id INT PRIMARY KEY, d DATE NULL, dt0 DATETIME NULL, dt3 DATETIME(3) NULL, "
        "dt6 DATETIME(6) NULL)",
        "INSERT INTO moments VALUES (1, '2024-02-29', '2024-03-31 01:30:00', '2024-10-27 02:30:00.5', "
        "'1999-12-31 23:59:59.000001'), (2, NULL, NULL, NULL, NULL), "
        "(3, '0000-00-00', '0000-00-00 00:00:00', '2024-01-01 00:00:00.123', NULL), "
        "(4, '1000-01-01', '9999-12-31 23:59:59', '1970-01-01 00:00:00', '2038-01-19 03:14:07.999999')")
    config = {**mariadb.connector_config(), "mode": "incrementing", "incrementing.column.name": "id",
              "topic.prefix": "m-", "db.timezone": zone}
    with SourceHarness(config) as h:
        got = h.poll(4)
    tz = datetime.timezone.utc if zone == "UTC" else __import__("zoneinfo").ZoneInfo(zone)

    def at(*parts: int) -> datetime.datetime:
        return datetime.datetime(*parts, tzinfo=tz).astimezone(UTC)
    assert rows(got, "id", "d", "dt0", "dt3", "dt6") == [
        (1, datetime.date(2024, 2, 29), at(2024, 3, 31, 1, 30), at(2024, 10, 27, 2, 30, 0, 500000),
         at(1999, 12, 31, 23, 59, 59, 1)),
        (2, None, None, None, None),
        (3, None, None, at(2024, 1, 1, 0, 0, 0, 123000), None),
        (4, datetime.date(1000, 1, 1), at(9999, 12, 31, 23, 59, 59), at(1970, 1, 1),
         at(2038, 1, 19, 3, 14, 7, 999999))]
    assert all(v.tzinfo is UTC for r in got for v in rows([r], "dt0", "dt3", "dt6")[0] if v is not None)


def test_a_batch_with_a_value_that_does_not_convert_names_its_column():
    # The column-at-once path gives up on the batch; the row path then names the column.
    from streamsql.runtime.connect.jdbc.dialects import ResultColumn
    from streamsql.runtime.connect.jdbc.schema import ConversionError, map_columns, rows_converter

    columns = [ResultColumn("id", "int32", False, driver="mysql"),
               ResultColumn("at", "timestamp", True, driver="mysql"),
               ResultColumn("d", "date", True, driver="mysql")]
    _, mappings = map_columns(columns, "t", "none", UTC)
    convert = rows_converter(mappings, 3, "t", columns)
    good = [(1, "2024-01-01 00:00:00.250", "2024-01-02"), (2, None, "0000-00-00")]
    assert convert(good) == [(1, datetime.datetime(2024, 1, 1, 0, 0, 0, 250000, tzinfo=UTC), datetime.date(2024, 1, 2)),
                             (2, None, None)]
    with pytest.raises(ConversionError, match="Cannot convert column 'at' of table 't' to Timestamp"):
        convert([*good, (3, 20240101, None)])


class _Reconfigurations:
    """A ConnectorContext that records the connector's calls."""

    def __init__(self) -> None:
        self.requests = 0
        self.errors: list[Exception] = []

    def request_task_reconfiguration(self) -> None:
        self.requests += 1

    def raise_error(self, error: Exception) -> None:
        self.errors.append(error)


def test_new_and_dropped_tables_ask_for_new_task_configs(mariadb):
    mariadb.execute("CREATE TABLE first_t (id INT PRIMARY KEY)")
    connector = JdbcSourceConnector()
    context = _Reconfigurations()
    connector.initialize(context)  # type: ignore[arg-type]
    connector.start({**mariadb.connector_config(), "mode": "bulk", "topic.prefix": "m-",
                     "table.poll.interval.ms": "100"})
    try:
        assert [c["tables"] for c in connector.task_configs(4)] == [f"`{mariadb.name}`.`first_t`"]
        mariadb.execute("CREATE TABLE second_t (id INT PRIMARY KEY)")
        deadline = time.monotonic() + 5
        while context.requests == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert context.requests == 1
        assert len(connector.task_configs(4)) == 2
        mariadb.execute("DROP TABLE first_t")
        while context.requests == 1 and time.monotonic() < deadline + 5:
            time.sleep(0.05)
        assert [c["tables"] for c in connector.task_configs(4)] == [f"`{mariadb.name}`.`second_t`"]
    finally:
        connector.stop()


# -- PostgreSQL and SQLite -----------------------------------------------------------------

def test_postgres_incrementing_and_timestamp(postgres):
    postgres.execute("CREATE TABLE orders (id SERIAL PRIMARY KEY, item TEXT NOT NULL, qty SMALLINT, "
                     "price NUMERIC(8,2), ok BOOLEAN, at TIMESTAMPTZ NOT NULL)",
                     "INSERT INTO orders (item, qty, price, ok, at) VALUES "
                     "('pen', 2, 1.25, true, now() - interval '20 seconds'), "
                     "('ink', NULL, NULL, NULL, now() - interval '10 seconds')")
    base = {**postgres.connector_config(), "topic.prefix": "pg-"}
    with pytest.raises(ConnectException, match="password authentication failed") as denied:
        JdbcSourceConnector().start({**base, "mode": "bulk", "connection.password": "wrong",
                                     "connection.attempts": "1"})
    assert not isinstance(denied.value, RetriableException)
    with SourceHarness({**base, "mode": "incrementing"}) as h:  # SERIAL: found as auto-incrementing
        first = h.poll(2)
        assert rows(first, "id", "item", "qty", "price", "ok") == [
            (1, "pen", 2, decimal.Decimal("1.25"), True), (2, "ink", None, None, None)]
        assert dict(first[0].source_partition) == {"protocol": "1", "table": "public.orders"}
        fields = {f.name: f.schema for f in first[0].value_schema.fields}
        assert (fields["id"].type, fields["id"].optional, fields["qty"].type, fields["qty"].optional) == \
            ("int32", False, "int16", True)
        assert (fields["price"].name, fields["ok"].type, fields["at"].name) == (DECIMAL, "boolean", TIMESTAMP)
        postgres.execute("INSERT INTO orders (item, at) VALUES ('pad', now())")
        assert rows(h.poll(1), "id", "item") == [(3, "pad")]
    with SourceHarness({**base, "mode": "timestamp", "timestamp.column.name": "at",
                        "numeric.mapping": "best_fit"}) as h:
        first = h.poll(3)
        assert [r.value.get("id") for r in first] == [1, 2, 3]
        assert first[0].value.get("price") == 1.25  # best_fit: NUMERIC(8,2) -> FLOAT64
        postgres.execute("UPDATE orders SET item = 'PEN', at = now() WHERE id = 1",
                         "INSERT INTO orders (item, at) VALUES ('later', now() + interval '1 hour')")
        assert rows(h.poll(1), "id", "item") == [(1, "PEN")]
    # Tables of every user schema, unless schema.pattern says which
    postgres.execute("CREATE SCHEMA other", "CREATE TABLE other.orders (id SERIAL PRIMARY KEY)")
    with SourceHarness({**base, "mode": "bulk", "poll.interval.ms": "5000"}) as h:
        assert [c["tables"] for c in h.task_configs] == ['"other"."orders","public"."orders"']
    with SourceHarness({**base, "mode": "bulk", "schema.pattern": "pub%"}) as h:
        assert [c["tables"] for c in h.task_configs] == ['"public"."orders"']


def test_sqlite_incrementing_and_timestamp(tmp_path):
    path = tmp_path / "shop.db"
    con = sqlite3.connect(path)
    con.executescript("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price REAL, "
                      "at TIMESTAMP NOT NULL);"
                      "INSERT INTO items (name, price, at) VALUES ('a', 1.5, '2024-01-01 00:00:00.000'), "
                      "('b', NULL, '2024-01-02 00:00:00.000');")
    con.commit()
    base = {"connection.url": f"jdbc:sqlite:{path}", "topic.prefix": "lite-"}
    with SourceHarness({**base, "mode": "incrementing"}) as h:  # INTEGER PRIMARY KEY: the rowid
        first = h.poll(2)
        assert rows(first, "id", "name", "price") == [(1, "a", 1.5), (2, "b", None)]
        assert dict(first[0].source_partition) == {"protocol": "1", "table": "items"}
        con.execute("INSERT INTO items (name, at) VALUES ('c', '2024-01-03 00:00:00.000')")
        con.commit()
        assert rows(h.poll(1), "id", "name") == [(3, "c")]
    with SourceHarness({**base, "mode": "timestamp", "timestamp.column.name": "at"}) as h:
        first = h.poll(3)
        assert [r.value.get("at") for r in first][:2] == [datetime.datetime(2024, 1, 1, tzinfo=UTC),
                                                          datetime.datetime(2024, 1, 2, tzinfo=UTC)]
        con.execute("UPDATE items SET name = 'A', at = '2024-02-01 00:00:00.000' WHERE id = 1")
        con.execute("INSERT INTO items (name, at) VALUES ('future', '2999-01-01 00:00:00.000')")
        con.commit()
        assert rows(h.poll(1), "id", "name") == [(1, "A")]
    # A value that does not convert: the error names the table and the column.
    con.execute("CREATE TABLE bad (id INTEGER PRIMARY KEY, n INT NOT NULL)")
    con.execute("INSERT INTO bad VALUES (1, 'not a number')")
    con.commit()
    with SourceHarness({**base, "mode": "incrementing", "table.whitelist": "bad"}) as h:
        with pytest.raises(ConnectException, match="column 'n' of table 'bad'"):
            h.tasks[0].poll()
    con.close()


# -- the sink -----------------------------------------------------------------------------

def _struct_schema(name: str, *fields: tuple[str, Schema]) -> Schema:
    from streamsql.runtime.connect.api import Field

    return Schema(STRUCT, name=name, fields=tuple(Field(n, i, s) for i, (n, s) in enumerate(fields)))


ID_KEY = _struct_schema("key", ("id", Schema(INT64)))
USER_V1 = _struct_schema("user", ("id", Schema(INT64)), ("name", Schema(STRING)),
                         ("joined", Schema(INT64, name=TIMESTAMP, version=1)))
USER_V2 = _struct_schema("user", ("id", Schema(INT64)), ("name", Schema(STRING)),
                         ("joined", Schema(INT64, name=TIMESTAMP, version=1)),
                         ("score", Schema("bytes", optional=True, name=DECIMAL, version=1,
                                          parameters=(("scale", "2"),))))


def _rec(topic: str, offset: int, key: Any, value: Any, value_schema: Schema | None = USER_V1) -> SinkRecord:
    key_struct = Struct(ID_KEY, (key,)) if key is not None else None
    return SinkRecord(topic, 0, ID_KEY if key is not None else None, key_struct,
                      value_schema if value is not None else None,
                      Struct(value_schema, value) if value is not None else None, offset)


JOINED = datetime.datetime(2024, 3, 1, 12, 30, 0, 250000, tzinfo=UTC)


def _sink(config: dict[str, str]) -> JdbcSinkTask:
    connector = JdbcSinkConnector()
    connector.start(config)
    task = JdbcSinkTask()
    task.start(connector.task_configs(1)[0])
    return task


@pytest.mark.parametrize("db_kind", ["mariadb", "postgres", "sqlite"])
def test_sink_insert_upsert_update_auto_create_evolve_and_delete(db_kind, request, tmp_path):
    if db_kind == "sqlite":
        path = tmp_path / "sink.db"
        config = {"connection.url": f"jdbc:sqlite:{path}"}

        def query(sql: str) -> list[tuple]:
            con = sqlite3.connect(path)
            try:
                return con.execute(sql).fetchall()
            finally:
                con.close()
    else:
        db = request.getfixturevalue(db_kind)
        config = db.connector_config()

        def query(sql: str) -> list[tuple]:
            return db.execute(sql)

    q = '"' if db_kind != "mariadb" else "`"
    base = {**config, "topics": "people", "auto.create": "true", "pk.mode": "record_key", "pk.fields": "id"}

    # insert + auto.create: the table is made from the record schema, the key as primary key
    task = _sink({**base, "insert.mode": "insert"})
    task.put([_rec("people", 0, 1, (1, "ann", JOINED)), _rec("people", 1, 2, (2, "ben", JOINED))])
    task.flush({})
    assert query(f"SELECT {q}id{q}, {q}name{q} FROM {q}people{q} ORDER BY 1") == [(1, "ann"), (2, "ben")]
    (joined,) = query(f"SELECT {q}joined{q} FROM {q}people{q} WHERE {q}id{q} = 1")[0]
    if db_kind == "sqlite":
        assert joined.startswith("2024-03-01 12:30:00.250")
    else:
        assert joined.replace(tzinfo=None) == datetime.datetime(2024, 3, 1, 12, 30, 0, 250000)
    with pytest.raises(ConnectException):  # a second insert of the same key fails (no upsert)
        task.put([_rec("people", 2, 1, (1, "ann again", JOINED))])
    task.stop()

    # upsert + auto.evolve: a new optional field becomes a column; existing keys are updated
    task = _sink({**base, "insert.mode": "upsert", "auto.evolve": "true", "delete.enabled": "true"})
    task.put([_rec("people", 3, 1, (1, "ANN", JOINED, decimal.Decimal("9.50")), USER_V2),
              _rec("people", 4, 3, (3, "cat", JOINED, None), USER_V2),
              _rec("people", 5, 2, None),                      # a tombstone: deletes id 2
              _rec("people", 6, 3, (3, "CAT", JOINED, decimal.Decimal("1.25")), USER_V2)])
    got = query(f"SELECT {q}id{q}, {q}name{q}, {q}score{q} FROM {q}people{q} ORDER BY 1")
    assert [(i, n, decimal.Decimal(str(s)) if s is not None else None) for i, n, s in got] == \
        [(1, "ANN", decimal.Decimal("9.5")), (3, "CAT", decimal.Decimal("1.25"))]
    task.stop()

    # update: only existing rows change
    task = _sink({**base, "insert.mode": "update", "auto.create": "false"})
    task.put([_rec("people", 7, 3, (3, "cathy", JOINED, None), USER_V2),
              _rec("people", 8, 9, (9, "nobody", JOINED, None), USER_V2)])
    assert query(f"SELECT {q}id{q}, {q}name{q} FROM {q}people{q} ORDER BY 1") == [(1, "ANN"), (3, "cathy")]
    task.stop()

    # Confluent's errors
    task = _sink({**base, "topics": "ghosts", "auto.create": "false"})
    with pytest.raises(ConnectException, match="is missing and auto-creation is disabled"):
        task.put([_rec("ghosts", 0, 1, (1, "x", JOINED))])
    task.stop()
    task = _sink({**base, "insert.mode": "upsert"})
    with pytest.raises(ConnectException, match=r"is missing fields \(extra\) and auto-evolution is disabled"):
        task.put([_rec("people", 9, 1, (1, "x", JOINED, 5), _struct_schema(
            "user", ("id", Schema(INT64)), ("name", Schema(STRING)), ("joined", Schema(INT64, name=TIMESTAMP)),
            ("extra", Schema(INT32, optional=True))))])
    task.stop()
    with pytest.raises(ConnectException, match="Primary key mode must be 'record_key' when delete support"):
        JdbcSinkConnector().start({**config, "topics": "x", "delete.enabled": "true", "pk.mode": "record_value"})


def test_sink_pk_modes_kafka_and_record_value_and_none(tmp_path):
    path = tmp_path / "pk.db"
    base = {"connection.url": f"jdbc:sqlite:{path}", "topics": "ev", "auto.create": "true"}
    task = _sink({**base, "pk.mode": "kafka", "table.name.format": "kafka_${topic}"})
    task.put([_rec("ev", 41, 1, (1, "a", JOINED)), _rec("ev", 42, 2, (2, "b", JOINED))])
    task.stop()
    task = _sink({**base, "pk.mode": "record_value", "pk.fields": "id", "insert.mode": "upsert",
                  "table.name.format": "value_${topic}"})
    task.put([_rec("ev", 1, None, (1, "a", JOINED)), _rec("ev", 2, None, (1, "A", JOINED))])
    task.stop()
    task = _sink({**base, "pk.mode": "none", "table.name.format": "none_${topic}"})
    task.put([_rec("ev", 1, None, (1, "a", JOINED)), _rec("ev", 2, None, (1, "a", JOINED))])
    task.stop()
    con = sqlite3.connect(path)
    assert con.execute('SELECT "__connect_topic", "__connect_partition", "__connect_offset", "name" '
                       'FROM "kafka_ev" ORDER BY 3').fetchall() == [("ev", 0, 41, "a"), ("ev", 0, 42, "b")]
    pk = [r[1] for r in con.execute('PRAGMA table_info("kafka_ev")') if r[5]]
    assert pk == ["__connect_topic", "__connect_partition", "__connect_offset"]
    assert con.execute('SELECT "id", "name" FROM "value_ev"').fetchall() == [(1, "A")]
    assert con.execute('SELECT COUNT(*) FROM "none_ev"').fetchall() == [(2,)]
    con.close()


def test_plugins_carry_connects_names():
    names = {p.class_name: p for p in PLUGINS}
    assert names["io.confluent.connect.jdbc.JdbcSourceConnector"].aliases == ("JdbcSourceConnector", "JdbcSource")
    assert names["io.confluent.connect.jdbc.JdbcSinkConnector"].type == "sink"
    keys = {k.name for k in JdbcSourceConnector().config()}
    assert {"connection.url", "mode", "incrementing.column.name", "timestamp.column.name", "query",
            "topic.prefix", "poll.interval.ms", "batch.max.rows", "timestamp.delay.interval.ms"} <= keys


# -- end to end through the worker: MariaDB -> topic (JSON with schema) -> PostgreSQL ------------

def test_mariadb_to_topic_to_postgres_through_the_worker(mariadb, postgres, tmp_path):
    import asyncio

    worker_module = pytest.importorskip("streamsql.runtime.connect.worker")  # built alongside
    from streamsql.runtime.log.embedded import EmbeddedLog

    mariadb.execute("CREATE TABLE accounts (id INT AUTO_INCREMENT PRIMARY KEY, owner VARCHAR(20) NOT NULL, "
                    "balance DECIMAL(9,2), opened DATETIME(3) NOT NULL, day DATE)",
                    "INSERT INTO accounts (owner, balance, opened, day) VALUES "
                    "('ann', 10.25, '2024-05-01 10:00:00.500', '2024-05-01'), ('bob', NULL, '2024-05-02 11:00:00', NULL)")

    async def main() -> None:
        log = EmbeddedLog(tmp_path / "data")
        worker = worker_module.Worker(log, "jdbc_", "127.0.0.1:8083", {"offset.flush.interval.ms": "100"})
        await worker.start()
        try:
            await worker.create("from-maria", {
                "connector.class": "io.confluent.connect.jdbc.JdbcSourceConnector", **mariadb.connector_config(),
                "mode": "incrementing", "incrementing.column.name": "id", "topic.prefix": "maria-",
                "poll.interval.ms": "100"})
            for _ in range(200):
                if await log.describe_topic("maria-accounts") is not None and \
                        (await log.end_offsets("maria-accounts"))[0] >= 2:
                    break
                await asyncio.sleep(0.05)
            batch = await log.fetch("maria-accounts", 0, 0)
            first = json.loads(batch.values[0])
            # What Confluent's connector writes with Connect's JsonConverter (schemas.enable)
            assert first == {
                "schema": {"type": "struct", "fields": [
                    {"type": "int32", "optional": False, "field": "id"},
                    {"type": "string", "optional": False, "field": "owner"},
                    {"type": "bytes", "optional": True, "name": "org.apache.kafka.connect.data.Decimal",
                     "version": 1, "parameters": {"scale": "2"}, "field": "balance"},
                    {"type": "int64", "optional": False, "name": "org.apache.kafka.connect.data.Timestamp",
                     "version": 1, "field": "opened"},
                    {"type": "int32", "optional": True, "name": "org.apache.kafka.connect.data.Date",
                     "version": 1, "field": "day"}],
                    "optional": False, "name": "accounts"},
                "payload": {"id": 1, "owner": "ann", "balance": "BAE=", "opened": 1714557600500, "day": 19844}}
            assert batch.keys[0] is None

            await worker.create("to-pg", {
                "connector.class": "JdbcSink", **postgres.connector_config(), "topics": "maria-accounts",
                "table.name.format": "copy_${topic}", "auto.create": "true", "pk.mode": "record_value",
                "pk.fields": "id", "insert.mode": "upsert"})
            table = '"copy_maria-accounts"'
            for _ in range(200):
                try:
                    if len(postgres.execute(f"SELECT id FROM {table}")) == 2:
                        break
                except Exception:  # noqa: BLE001 - not created yet
                    pass
                await asyncio.sleep(0.05)
            got = postgres.execute(f"SELECT id, owner, balance, opened, day FROM {table} ORDER BY id")
            assert got == [(1, "ann", decimal.Decimal("10.25"), datetime.datetime(2024, 5, 1, 10, 0, 0, 500000),
                            datetime.date(2024, 5, 1)),
                           (2, "bob", None, datetime.datetime(2024, 5, 2, 11, 0), None)]
            assert [t.state for t in worker.status("to-pg").tasks] == ["RUNNING"]
        finally:
            await worker.close()
            await log.close()

    asyncio.run(main())


# -- as a user runs it: statements on a streamsql server ----------------------------------------

def test_the_four_modes_from_mariadb_through_create_source_connector(mariadb, tmp_path):
    import urllib.request

    from streamsql.server.testing import NodeProcess

    def ksql(url: str, sql: str) -> list[dict[str, Any]]:
        body = json.dumps({"ksql": sql, "streamsProperties": {"auto.offset.reset": "earliest"}}).encode()
        req = urllib.request.Request(url + "/ksql", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read())

    def pull(url: str, sql: str) -> list[list[Any]]:
        body = json.dumps({"ksql": sql, "streamsProperties": {}}).encode()
        req = urllib.request.Request(url + "/query", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            return [i["row"]["columns"] for i in json.loads(resp.read()) if "row" in i]

    def eventually(check: Any, what: str, timeout: float = 30.0) -> Any:
        deadline, last = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            last = check()
            if last:
                return last
            time.sleep(0.2)
        raise AssertionError(f"not within {timeout} s: {what} (last: {last!r})")

    mariadb.execute("CREATE TABLE items (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(20) NOT NULL, "
                    "updated TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3))",
                    "INSERT INTO items (name, updated) VALUES ('pen', NOW(3) - INTERVAL 9 SECOND), "
                    "('ink', NOW(3) - INTERVAL 8 SECOND)")
    url_cfg = (f"'connection.url'='{mariadb.url}', 'connection.user'='{mariadb.user}', "
               f"'connection.password'='{mariadb.password}', "
               "'value.converter'='org.apache.kafka.connect.json.JsonConverter', 'value.converter.schemas.enable'='false', "
               "'poll.interval.ms'='200'")
    modes = {"bulk": "", "incrementing": ", 'incrementing.column.name'='id'",
             "timestamp": ", 'timestamp.column.name'='updated'",
             "timestamp+incrementing": ", 'incrementing.column.name'='id', 'timestamp.column.name'='updated'"}
    with NodeProcess(tmp_path / "data", ("--config", "connect.offset.flush.interval.ms=300")) as node:
        for i, (mode, extra) in enumerate(modes.items()):
            ksql(node.url, f"CREATE SOURCE CONNECTOR src{i} WITH ('connector.class'='JdbcSourceConnector', "
                           f"{url_cfg}, 'mode'='{mode}', 'topic.prefix'='m{i}-'{extra});")
            eventually(lambda: ksql(node.url, "SHOW TOPICS;")[0]["topics"] and any(
                t["name"] == f"m{i}-items" for t in ksql(node.url, "SHOW TOPICS;")[0]["topics"]), f"topic m{i}-items")
            ksql(node.url, f"CREATE STREAM s{i} (`id` INT, `name` STRING) WITH (kafka_topic='m{i}-items', "
                           "value_format='JSON');")
        ksql(node.url, "CREATE SOURCE CONNECTOR denied WITH ('connector.class'='JdbcSource', "
                       f"'connection.url'='{mariadb.url}', 'connection.user'='{mariadb.user}', "
                       "'connection.password'='wrong', 'mode'='bulk', 'topic.prefix'='x-', "
                       "'connection.attempts'='1');")
        for i in range(4):
            eventually(lambda: [tuple(r) for r in pull(node.url, f"SELECT `id`, `name` FROM s{i};")][:2] ==
                       [(1, "pen"), (2, "ink")], f"the first rows through mode {list(modes)[i]}")
        # An update and a new row, now: each mode sees what Confluent's would.
        mariadb.execute("UPDATE items SET name = 'PEN', updated = NOW(3) WHERE id = 1",
                        "INSERT INTO items (name) VALUES ('pad')")
        time.sleep(1.2)  # rows are read once the database's clock (seconds) has passed them
        want = {0: {(1, "PEN"), (3, "pad")},            # bulk: the whole table again
                1: {(3, "pad")},                        # incrementing: the new id only
                2: {(1, "PEN"), (3, "pad")},            # timestamp: the update and the new row
                3: {(1, "PEN"), (3, "pad")}}            # both
        for i in range(4):
            def after_first(i: int = i) -> list[tuple]:
                got = [tuple(r) for r in pull(node.url, f"SELECT `id`, `name` FROM s{i};")]
                return got[2:] if want[i] <= set(got[2:]) else []
            later = eventually(after_first, f"the changes through mode {list(modes)[i]}")
            if i != 0:
                assert set(later) == want[i], (list(modes)[i], later)
        described = ksql(node.url, "DESCRIBE CONNECTOR denied;")[0]
        status = json.dumps(described)
        assert "Access denied" in status and "FAILED" in status, status
        shown = {c["name"]: c for c in ksql(node.url, "SHOW CONNECTORS;")[0]["connectors"]}
        assert shown["SRC1"]["className"] == "JdbcSourceConnector"
        assert shown["SRC1"]["state"] == "RUNNING (1/1 tasks RUNNING)"


def test_sink_retries_a_failing_write_then_fails_the_task(tmp_path):
    path = tmp_path / "retry.db"
    con = sqlite3.connect(path)
    con.execute('CREATE TABLE "people" ("id" INTEGER PRIMARY KEY, "name" TEXT CHECK (length("name") < 5), '
                '"joined" NUMERIC)')
    con.commit()
    task = _sink({"connection.url": f"jdbc:sqlite:{path}", "topics": "people", "pk.mode": "record_key",
                  "pk.fields": "id", "max.retries": "1"})
    bad = [_rec("people", 0, 1, (1, "ok", JOINED)), _rec("people", 1, 2, (2, "far too long", JOINED))]
    with pytest.raises(RetriableException, match="CHECK constraint failed"):
        task.put(bad)
    assert con.execute('SELECT COUNT(*) FROM "people"').fetchone() == (0,)  # the batch was rolled back
    with pytest.raises(ConnectException, match="after 1 retries") as final:
        task.put(bad)  # the worker delivers the same records again
    assert not isinstance(final.value, RetriableException)
    task.put([_rec("people", 0, 1, (1, "ok", JOINED))])  # a good batch afterwards goes through
    assert con.execute('SELECT "id", "name" FROM "people"').fetchall() == [(1, "ok")]
    task.stop()
    con.close()


def test_a_table_created_later_is_copied_through_the_worker(mariadb, tmp_path):
    import asyncio

    worker_module = pytest.importorskip("streamsql.runtime.connect.worker")  # built alongside
    from streamsql.runtime.log.embedded import EmbeddedLog

    mariadb.execute("CREATE TABLE early (id INT AUTO_INCREMENT PRIMARY KEY, v INT)", "INSERT INTO early (v) VALUES (1)")

    async def published(log: Any, topic: str, count: int) -> bool:
        for _ in range(200):
            if await log.describe_topic(topic) is not None and sum(await log.end_offsets(topic)) >= count:
                return True
            await asyncio.sleep(0.05)
        return False

    async def main() -> None:
        log = EmbeddedLog(tmp_path / "data")
        worker = worker_module.Worker(log, "jdbc_", "127.0.0.1:8083", {"offset.flush.interval.ms": "100"})
        await worker.start()
        try:
            await worker.create("tables", {
                "connector.class": "JdbcSource", **mariadb.connector_config(), "mode": "incrementing",
                "topic.prefix": "t-", "poll.interval.ms": "100", "table.poll.interval.ms": "200", "tasks.max": "2"})
            assert await published(log, "t-early", 1)
            assert len(worker.status("tables").tasks) == 1
            mariadb.execute("CREATE TABLE later (id INT AUTO_INCREMENT PRIMARY KEY, v INT)",
                            "INSERT INTO later (v) VALUES (1), (2)", "INSERT INTO early (v) VALUES (2)")
            assert await published(log, "t-later", 2)
            assert await published(log, "t-early", 2)
            # two tables, tasks.max 2: a task each, the early table's resumed after its first row
            assert [t.state for t in worker.status("tables").tasks] == ["RUNNING", "RUNNING"]
            values = [json.loads(v)["payload"] for v in (await log.fetch("t-early", 0, 0)).values]
            assert [v["id"] for v in values] == [1, 2]
        finally:
            await worker.close()
            await log.close()

    asyncio.run(main())

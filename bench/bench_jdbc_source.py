"""The JDBC source against MariaDB: 1,000,000 rows in incrementing mode, rows/s through the source
task's poll loop and the conversion of every row to a Connect record (Struct + SourceRecord with
its offset), next to a plain ``SELECT`` of the same rows with the same driver (mysqlclient), which
is the limit: the target is at least 50% of it.

Run: ``python bench/bench_jdbc_source.py [--rows N] [--batch-max-rows N ...]``. It starts a
private MariaDB (streamsql.testing.databases; needs Debian's mariadb-server) on a free port,
fills a table (BIGINT id, VARCHAR, DECIMAL, DATETIME(3), INT) with the Sequence engine, then
times, each on a fresh connection: the plain SELECT (``cursor.execute`` + ``fetchall``, and
streamed with ``SSCursor.fetchmany``; with MySQLdb's value converters and with the C-parsed
DATETIME/DATE ones the connector installs, the fastest being the limit), and the source task reading the table from offset -1 to
its end for each ``batch.max.rows`` asked for (100 is Confluent's default); then, where the
Connect worker is there, the connector run by the worker into a topic of the embedded log with
Connect's JsonConverter (with and without schemas), until the topic has every row.
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamsql.runtime.connect.api import SourceTaskContext  # noqa: E402
from streamsql.runtime.connect.jdbc import JdbcSourceConnector, JdbcSourceTask  # noqa: E402
from streamsql.testing.databases import MariaDBServer, mariadb_unavailable_reason  # noqa: E402


class _NoOffsets(SourceTaskContext):
    def offset(self, source_partition: Mapping[str, Any]) -> Mapping[str, Any] | None:
        return None


def fill(db: Any, rows: int) -> None:
    db.execute("CREATE TABLE bench (id BIGINT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(32) NOT NULL, "
               "amount DECIMAL(10,2), created DATETIME(3) NOT NULL, qty INT)",
               "INSERT INTO bench (name, amount, created, qty) SELECT CONCAT('user-', seq), (seq % 10000) / 100, "
               f"TIMESTAMP'2024-01-01 00:00:00' + INTERVAL seq SECOND, seq % 97 FROM seq_1_to_{rows}")


def plain_select(db: Any, rows: int, connector_conversions: bool = False) -> tuple[float, float]:
    """(fetchall, streamed) seconds of ``SELECT * FROM bench``, with MySQLdb's own value
    converters or with the ones the connector installs (C-parsed DATETIME/DATE)."""
    import MySQLdb.cursors

    if connector_conversions:
        from streamsql.runtime.connect.jdbc.dialects import ConnectionConfig, dialect_for

        conn = dialect_for(ConnectionConfig(db.url, db.user, db.password)).connect()
    else:
        conn = db.connect()
    try:
        t0 = time.perf_counter()
        cur = conn.cursor()
        cur.execute("SELECT * FROM bench")
        got = len(cur.fetchall())
        buffered = time.perf_counter() - t0
        assert got == rows, got
        cur.close()
        t0 = time.perf_counter()
        cur = conn.cursor(MySQLdb.cursors.SSCursor)
        cur.execute("SELECT * FROM bench")
        got = 0
        while True:
            batch = cur.fetchmany(10_000)
            if not batch:
                break
            got += len(batch)
        streamed = time.perf_counter() - t0
        assert got == rows, got
        cur.close()
        return buffered, streamed
    finally:
        conn.close()


def source(db: Any, rows: int, batch_max_rows: int) -> float:
    config = {**db.connector_config(), "mode": "incrementing", "incrementing.column.name": "id",
              "topic.prefix": "bench-", "batch.max.rows": str(batch_max_rows), "poll.interval.ms": "60000"}
    connector = JdbcSourceConnector()
    connector.start(config)
    task = JdbcSourceTask()
    task.initialize(_NoOffsets())
    task.start(connector.task_configs(1)[0])
    try:
        t0 = time.perf_counter()
        got, last = 0, None
        while got < rows:
            records = task.poll()
            if records:
                got += len(records)
                last = records[-1]
        elapsed = time.perf_counter() - t0
        assert last is not None and last.source_offset == {"incrementing": rows}, last
        assert last.value.get("name") == f"user-{rows}"
        return elapsed
    finally:
        task.stop()
        connector.stop()


def into_topic(db: Any, rows: int, converter: dict[str, str], base: Path) -> float | None:
    """Seconds for the connector, run by the Connect worker on the embedded log, to publish
    every row into its topic (None where the worker is not there)."""
    import asyncio

    try:
        from streamsql.runtime.connect.worker import Worker
    except ImportError:
        return None
    from streamsql.runtime.log.embedded import EmbeddedLog

    async def run() -> float:
        log = EmbeddedLog(base)
        worker = Worker(log, "bench_", "localhost", {"offset.flush.interval.ms": "1000", **converter})
        await worker.start()
        try:
            t0 = time.perf_counter()
            await worker.create("jdbc", {"connector.class": "io.confluent.connect.jdbc.JdbcSourceConnector",
                                         **db.connector_config(), "mode": "incrementing",
                                         "incrementing.column.name": "id", "topic.prefix": "bench-",
                                         "poll.interval.ms": "60000"})
            while await log.describe_topic("bench-bench") is None or \
                    sum(await log.end_offsets("bench-bench")) < rows:
                await asyncio.sleep(0.02)
            return time.perf_counter() - t0
        finally:
            await worker.close()
            await log.close()

    return asyncio.run(run())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--batch-max-rows", type=int, nargs="+", default=[100, 10_000])
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    reason = mariadb_unavailable_reason()
    if reason:
        print(f"skipped: {reason}")
        return
    with tempfile.TemporaryDirectory(prefix="bench-jdbc-") as tmp:
        server = MariaDBServer(tmp, die_with_parent=True).start()
        try:
            db = server.new_database("bench")
            t0 = time.perf_counter()
            fill(db, args.rows)
            print(f"MariaDB {db.url}: {args.rows:,} rows loaded in {time.perf_counter() - t0:.1f}s")
            timings = []
            for label, fast in (("", False), (", connector's converters", True)):
                buffered, streamed = plain_select(db, args.rows, fast)
                timings += [buffered, streamed]
                print(f"{'plain SELECT, fetchall' + label:<64} {args.rows / buffered:>10,.0f} rows/s")
                print(f"{'plain SELECT, SSCursor.fetchmany(10000)' + label:<64} {args.rows / streamed:>10,.0f} rows/s")
            limit = min(timings)
            for n in args.batch_max_rows:
                elapsed = source(db, args.rows, n)
                print(f"{f'JdbcSourceTask.poll, batch.max.rows={n}':<64} {args.rows / elapsed:>10,.0f} rows/s"
                      f"   {limit / elapsed:>5.0%} of the fastest plain SELECT")
            for label, conv in (("JsonConverter", {}),
                                ("JsonConverter, schemas.enable=false", {"value.converter.schemas.enable": "false"})):
                topic_s = into_topic(db, args.rows, conv, Path(tmp) / f"log-{len(label)}")
                if topic_s is None:
                    print("into a topic: the Connect worker is not there (streamsql.runtime.connect.worker)")
                    break
                print(f"{'worker -> topic, ' + label:<64} {args.rows / topic_s:>10,.0f} rows/s"
                      f"   {limit / topic_s:>5.0%} of the fastest plain SELECT")
        finally:
            server.stop()


if __name__ == "__main__":
    main()

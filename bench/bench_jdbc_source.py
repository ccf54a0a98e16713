"""The JDBC source against MariaDB: 1,000,000 rows in incrementing mode, rows/s through the source
task's poll loop and the conversion of every row to a Connect record (Struct + SourceRecord with
its offset), next to a plain ``SELECT`` of the same rows with the same driver (mysqlclient), which
is the limit: the target is at least 50% of it.

Run: ``python bench/bench_jdbc_source.py [--rows N] [--batch-max-rows N ...]``. It starts a
private MariaDB (streamsql.testing.databases; needs Debian's mariadb-server) on a free port,
fills a table (BIGINT id, VARCHAR, DECIMAL, DATETIME(3), INT) with the Sequence engine, then
times, each on a fresh connection: the plain SELECT (``cursor.execute`` + ``fetchall``, and
streamed with ``SSCursor.fetchmany``), with MySQLdb's value converters and with C-parsed
per-value DATETIME/DATE converters (the fastest conversion the driver can be given per value),
the fastest of these being the limit; the same SELECT on the connector's own connection,
which hands DATETIME over as text for the connector to parse a column at once, is printed
for what it says (the share of a read that is the driver's parse) but is not a limit: it
makes no DATETIME values. Then the source task reading the table from offset -1 to
its end for each ``batch.max.rows`` asked for (100 is Confluent's default); then, where the
Connect worker is there, the connector run by the worker into a topic of the embedded log with
Connect's JsonConverter (with and without schemas), until the topic has every row.

Each figure is printed as rows per wall-clock second and as rows per CPU-second (this
process's CPU plus the MariaDB server's, read from /proc: steadier than wall time on a
shared machine), with the ratio to the fastest plain SELECT in both. ``--repeat N`` runs
the plain SELECTs and the worker N times and keeps the best of each.
"""
from __future__ import annotations

import argparse
import datetime
import logging
import os
import shutil
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


_SERVER_PID: int | None = None  # the MariaDB server's, whose CPU counts too


def cpu_seconds() -> float:
    """This process's CPU seconds and the MariaDB server's (both do the work of a read)."""
    total = time.process_time()
    if _SERVER_PID is not None:
        try:
            with open(f"/proc/{_SERVER_PID}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
        except OSError:
            pass
    return total


class Timing:
    """Wall-clock and CPU seconds of a run (``cpu_seconds``)."""

    def __init__(self) -> None:
        self.t0, self.c0 = time.perf_counter(), cpu_seconds()
        self.wall = self.cpu = 0.0

    def stop(self) -> "Timing":
        self.wall, self.cpu = time.perf_counter() - self.t0, cpu_seconds() - self.c0
        return self


def _per_value_conversions() -> dict[Any, Any]:
    """DATETIME/TIMESTAMP/DATE converters that parse a value by the C ``fromisoformat`` into
    what a Connect record holds (aware, UTC): the fastest conversion the driver can be given
    per value (its own parse is Python code)."""
    from MySQLdb.constants import FIELD_TYPE

    fromiso, dfromiso, utc = datetime.datetime.fromisoformat, datetime.date.fromisoformat, datetime.timezone.utc

    def to_datetime(text: str) -> Any:
        try:
            return fromiso(text).replace(tzinfo=utc)
        except ValueError:
            return None

    def to_date(text: str) -> Any:
        try:
            return dfromiso(text)
        except ValueError:
            return None

    return {FIELD_TYPE.DATETIME: to_datetime, FIELD_TYPE.TIMESTAMP: to_datetime, FIELD_TYPE.DATE: to_date,
            14: to_date}  # 14: NEWDATE


def plain_select(db: Any, rows: int, conversions: str) -> tuple[Timing, Timing]:
    """(fetchall, streamed) timings of ``SELECT * FROM bench``: with MySQLdb's own value
    converters ("driver"), with C-parsed per-value DATETIME/DATE converters ("per-value"), or
    on the connector's own connection, which hands DATETIME over as text for the connector
    to parse a column at once ("text": not a limit, no DATETIME values are made)."""
    import MySQLdb.cursors

    if conversions == "text":
        from streamsql.runtime.connect.jdbc.dialects import ConnectionConfig, dialect_for

        conn = dialect_for(ConnectionConfig(db.url, db.user, db.password)).connect()
    else:
        conn = db.connect()
        if conversions == "per-value":
            conn.converter.update(_per_value_conversions())
    try:
        t = Timing()
        cur = conn.cursor()
        cur.execute("SELECT * FROM bench")
        got = cur.fetchall()
        buffered = t.stop()
        assert len(got) == rows, len(got)
        want = str if conversions == "text" else datetime.datetime
        assert isinstance(got[-1][3], want) and isinstance(got[-1][1], str), got[-1]
        assert conversions != "per-value" or got[-1][3].tzinfo is datetime.timezone.utc, got[-1]
        del got
        cur.close()
        t = Timing()
        cur = conn.cursor(MySQLdb.cursors.SSCursor)
        cur.execute("SELECT * FROM bench")
        n = 0
        while True:
            batch = cur.fetchmany(10_000)
            if not batch:
                break
            n += len(batch)
        streamed = t.stop()
        assert n == rows, n
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


def into_topic(db: Any, rows: int, converter: dict[str, str], base: Path) -> Timing | None:
    """The time the connector, run by the Connect worker on the embedded log, takes to
    publish every row into its topic (None where the worker is not there)."""
    import asyncio

    try:
        from streamsql.runtime.connect.worker import Worker
    except ImportError:
        return None
    from streamsql.runtime.log.embedded import EmbeddedLog

    async def run() -> Timing:
        log = EmbeddedLog(base)
        worker = Worker(log, "bench_", "localhost", {"offset.flush.interval.ms": "1000", **converter})
        await worker.start()
        try:
            t = Timing()
            await worker.create("jdbc", {"connector.class": "io.confluent.connect.jdbc.JdbcSourceConnector",
                                         **db.connector_config(), "mode": "incrementing",
                                         "incrementing.column.name": "id", "topic.prefix": "bench-",
                                         "poll.interval.ms": "60000"})
            # Looked at often near the end only: each look takes the GIL from the task's
            # thread (a watcher outside the process, as a user's, would not).
            while True:
                got = sum(await log.end_offsets("bench-bench")) if await log.describe_topic("bench-bench") else 0
                if got >= rows:
                    return t.stop()
                failed = [t for t in worker.status("jdbc").tasks if t.state == "FAILED"]
                if failed:
                    raise RuntimeError(f"the connector's task failed: {failed[0].trace}")
                elapsed = time.perf_counter() - t.t0
                left = (rows - got) * elapsed / got if got else 0.2  # at the rate so far
                await asyncio.sleep(min(0.2, max(0.002, left / 4)))
        finally:
            await worker.close()
            await log.close()
            shutil.rmtree(base, ignore_errors=True)  # (~560 MB a run)

    return asyncio.run(run())


def _best(timings: list[Timing]) -> Timing:
    out = Timing()
    out.wall, out.cpu = min(t.wall for t in timings), min(t.cpu for t in timings)
    return out


def main() -> None:
    global _SERVER_PID
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--batch-max-rows", type=int, nargs="*", default=[100, 10_000],
                    help="JdbcSourceTask.poll alone for each (none: skipped)")
    ap.add_argument("--repeat", type=int, default=1, help="runs of the plain SELECTs and the worker; the best counts")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    reason = mariadb_unavailable_reason()
    if reason:
        print(f"skipped: {reason}")
        return
    rows = args.rows

    def line(label: str, t: Timing, limit: Timing | None = None) -> None:
        text = f"{label:<64} {rows / t.wall:>9,.0f} rows/s {rows / t.cpu:>9,.0f} rows/cpu-s"
        if limit is not None:
            text += f"   {limit.wall / t.wall:>4.0%} / {limit.cpu / t.cpu:>4.0%} of the plain SELECT"
        print(text, flush=True)

    with tempfile.TemporaryDirectory(prefix="bench-jdbc-") as tmp:
        server = MariaDBServer(tmp, die_with_parent=True).start()
        _SERVER_PID = server.pid
        try:
            db = server.new_database("bench")
            t0 = time.perf_counter()
            fill(db, rows)
            print(f"MariaDB {db.url}: {rows:,} rows loaded in {time.perf_counter() - t0:.1f}s; "
                  f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
            print(f"{'':<64} {'wall':>16} {'CPU (this process + MariaDB)':>28}")
            variants: dict[str, list[Timing]] = {}
            unparsed: dict[str, list[Timing]] = {}  # the connector's connection: no DATETIME values
            topic: dict[str, list[Timing]] = {}
            converters = (("JsonConverter", {}),
                          ("JsonConverter, schemas.enable=false", {"value.converter.schemas.enable": "false"}))
            for r in range(args.repeat):
                for label, conversions in (("", "driver"), (", per-value C parse", "per-value"),
                                           (", DATETIME as text", "text")):
                    buffered, streamed = plain_select(db, rows, conversions)
                    group = variants if conversions != "text" else unparsed
                    group.setdefault("plain SELECT, fetchall" + label, []).append(buffered)
                    group.setdefault("plain SELECT, SSCursor.fetchmany(10000)" + label, []).append(streamed)
                for label, conv in converters:
                    got = into_topic(db, rows, conv, Path(tmp) / f"log-{r}-{len(label)}")
                    if got is None:
                        print("into a topic: the Connect worker is not there (streamsql.runtime.connect.worker)")
                        break
                    topic.setdefault("worker -> topic, " + label, []).append(got)
            best = {label: _best(ts) for label, ts in variants.items()}
            for label, t in best.items():
                line(label, t)
            # The limit: the fastest plain SELECT variant, by wall and by CPU each.
            limit = Timing()
            limit.wall = min(t.wall for t in best.values())
            limit.cpu = min(t.cpu for t in best.values())
            for label, ts in unparsed.items():
                line(label, _best(ts))
            print("  (DATETIME as text: the connector's own connection, which parses a column at once; not a "
                  "limit: no DATETIME values are made)")
            for n in args.batch_max_rows:
                elapsed = source(db, rows, n)
                print(f"{f'JdbcSourceTask.poll, batch.max.rows={n}':<64} {rows / elapsed:>9,.0f} rows/s"
                      f"{'':>20}   {limit.wall / elapsed:>4.0%} of the plain SELECT")
            for label, ts in topic.items():
                line(label, _best(ts), limit)
            schemas = topic.get("worker -> topic, JsonConverter")
            if schemas:
                got = _best(schemas)
                print(f"summary: into a topic with JsonConverter at {limit.wall / got.wall:.0%} of the plain SELECT's "
                      f"rate by wall clock, {limit.cpu / got.cpu:.0%} by CPU (target: 50%); load average now "
                      f"{os.getloadavg()[0]:.1f}")
        finally:
            server.stop()


if __name__ == "__main__":
    main()

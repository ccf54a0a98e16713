"""The JDBC source: ``io.confluent.connect.jdbc.JdbcSourceConnector`` and its task.

The connector lists the tables to copy (``table.whitelist``/``table.blacklist``, ``table.types``),
watches for tables appearing or going (``table.poll.interval.ms``), and spreads them over
``tasks.max`` tasks as Connect's ``ConnectorUtils.groupPartitions`` does (contiguous groups, the
first ones one larger); with ``query`` there is one task. Each task runs one querier per table
(or the query), as Confluent's ``TableQuerier``s:

- ``bulk``: ``SELECT * FROM t`` every ``poll.interval.ms``, every row, no offset.
- ``incrementing``: ``... WHERE id > ? ORDER BY id ASC``; offset ``{"incrementing": id}``.
- ``timestamp``: ``... WHERE ts > ? AND ts < ? ORDER BY ts ASC``, the upper bound being the
  database's clock minus ``timestamp.delay.interval.ms`` (a row stamped ahead of it waits);
  offset ``{"timestamp": millis, "timestamp_nanos": nanos}``.
- ``timestamp+incrementing``: ``... WHERE ts < ? AND ((ts = ? AND id > ?) OR ts > ?) ORDER BY
  ts, id ASC``: new rows and updates, none twice.

Several ``timestamp.column.name``s are COALESCE'd. A ``query`` gets the same WHERE clause
appended to its text, as Confluent does (a query with a WHERE of its own must be wrapped in a
subquery by its author, as Confluent's documentation says). Source partitions are Confluent's:
``{"protocol": "1", "table": "db.t"}`` for incremental tables (offsets stored under the older
``{"table": "t"}`` are read too), ``{"table": "t"}`` in bulk mode, ``{"query": "query"}`` for a
query. A result set stays open across polls, ``batch.max.rows`` rows a poll, streamed from the
server; a query that has been read to its end is committed and its table waits for its next
turn.
"""
from __future__ import annotations

import datetime
import logging
import threading
import time
from functools import partial
from operator import itemgetter
from typing import Any, Mapping, Sequence

from streamsql.runtime.connect.api import (
    ConfigKey, ConnectException, RetriableException, Schema, SourceConnector, SourceRecord, SourceRecordBatch,
    SourceTask, Struct, Task)
from streamsql.runtime.connect.jdbc.config import SOURCE_KEYS, Config, ConfigException
from streamsql.runtime.connect.jdbc.dialects import (
    CachedConnection, DatabaseDialect, TableId, dialect_for)
from streamsql.runtime.connect.jdbc.schema import (
    EPOCH, NUMERIC_MAPPINGS, ConversionError, map_columns, rows_converter)

log = logging.getLogger(__name__)

BULK, TIMESTAMP, INCREMENTING, TIMESTAMP_INCREMENTING = "bulk", "timestamp", "incrementing", "timestamp+incrementing"
MODES = ("", BULK, TIMESTAMP, INCREMENTING, TIMESTAMP_INCREMENTING)
TABLES_CONFIG = "tables"
"""The task config key listing the task's tables (Confluent's JdbcSourceTaskConfig.TABLES_CONFIG)."""

_ONE_MS = datetime.timedelta(milliseconds=1)


def group_partitions(elements: Sequence[Any], num_groups: int) -> list[list[Any]]:
    """Connect's ConnectorUtils.groupPartitions: ``num_groups`` contiguous groups, sizes
    differing by at most one, the larger ones first."""
    if num_groups <= 0:
        raise ValueError("Number of groups must be positive.")
    per, leftover = divmod(len(elements), num_groups)
    out, at = [], 0
    for g in range(num_groups):
        n = per + 1 if g < leftover else per
        out.append(list(elements[at:at + n]))
        at += n
    return out


def _split_list(text: str) -> list[str]:
    """A LIST config value of quoted identifiers: commas outside quotes separate."""
    parts, cur, quote = [], "", None
    for ch in text:
        if quote:
            cur += ch
            if ch == quote:
                quote = None
        elif ch in "`\"":
            quote = ch
            cur += ch
        elif ch == ",":
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur.strip())
    return [p for p in parts if p]


class _SourceConfig:
    """The source's configuration, validated as Confluent's connector and task do."""

    def __init__(self, props: Mapping[str, str]) -> None:
        self.config = c = Config(SOURCE_KEYS, props)
        self.connection = c.connection()
        self.mode = c.choice("mode", MODES)
        self.numeric_mapping = c.choice("numeric.mapping", NUMERIC_MAPPINGS)
        self.query = c["query"] or ""
        self.whitelist = c["table.whitelist"]
        self.blacklist = c["table.blacklist"]
        if self.whitelist and self.blacklist:
            raise ConfigException("table.whitelist and table.blacklist are exclusive.")
        self.incrementing_column = c["incrementing.column.name"] or ""
        self.timestamp_columns = [t for t in c["timestamp.column.name"] if t]
        self.topic_prefix = c["topic.prefix"]
        self.poll_interval_ms = int(c["poll.interval.ms"])
        self.batch_max_rows = max(1, int(c["batch.max.rows"]))
        self.delay_ms = int(c["timestamp.delay.interval.ms"])
        self.timestamp_initial = c["timestamp.initial"]
        self.validate_non_null = bool(c["validate.non.null"])
        self.query_suffix = c["query.suffix"] or ""
        self.table_types = c["table.types"] or ["TABLE"]
        self.table_poll_interval_ms = int(c["table.poll.interval.ms"])
        if self.mode in (TIMESTAMP, TIMESTAMP_INCREMENTING) and not self.timestamp_columns:
            raise ConfigException(f"Mode {self.mode} requires timestamp.column.name to be set")


# -- the connector ---------------------------------------------------------------------------

class JdbcSourceConnector(SourceConnector):
    """Copies tables (or a query's result) of a database into topics; see the module doc."""

    def __init__(self) -> None:
        self._props: dict[str, str] = {}
        self._cfg: _SourceConfig | None = None
        self._dialect: DatabaseDialect | None = None
        self._tables: list[TableId] | None = None
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None
        self._lock = threading.Lock()

    def version(self) -> str:
        from streamsql.runtime.connect.jdbc import VERSION

        return VERSION

    def config(self) -> Sequence[ConfigKey]:
        return SOURCE_KEYS

    def task_class(self) -> type[Task]:
        return JdbcSourceTask

    def start(self, props: Mapping[str, str]) -> None:
        self._props = {str(k): str(v) for k, v in props.items()}
        self._cfg = cfg = _SourceConfig(self._props)
        if not cfg.mode:
            raise ConfigException("Query mode must be specified")
        self._dialect = dialect_for(cfg.connection)
        self._stop.clear()
        conn = CachedConnection(self._dialect, cfg.connection.attempts, cfg.connection.backoff_ms, self._stop)
        try:
            conn.get()  # fails the connector now on a wrong URL, a database down, bad credentials
            if not cfg.query:
                self._tables = self._list_tables(conn)
        finally:
            conn.close()
        if not cfg.query:
            self._monitor = threading.Thread(target=self._watch_tables, name="jdbc-table-monitor", daemon=True)
            self._monitor.start()

    def _list_tables(self, conn: CachedConnection) -> list[TableId]:
        assert self._cfg is not None and self._dialect is not None
        try:
            c = self._cfg.config
            tables = self._dialect.list_tables(conn.get(), self._cfg.table_types, c["catalog.pattern"] or None,
                                               c["schema.pattern"] or None)
        except ConnectException:
            raise
        except Exception as exc:  # noqa: BLE001 - a driver error
            conn.invalidate()
            raise ConnectException(f"Failed to list the tables of {self._dialect.url.url}: "
                                   f"{self._dialect.error_text(exc)}") from exc

        def named(t: TableId, names: Sequence[str]) -> bool:
            return any(n in (t.fqn(), t.table) or self._dialect.parse_table_id(n) == t for n in names)  # type: ignore[union-attr]

        if self._cfg.whitelist:
            tables = [t for t in tables if named(t, self._cfg.whitelist)]
        elif self._cfg.blacklist:
            tables = [t for t in tables if not named(t, self._cfg.blacklist)]
        return tables

    def _watch_tables(self) -> None:
        """Confluent's TableMonitorThread: new or dropped tables mean new task configs."""
        assert self._cfg is not None and self._dialect is not None
        conn = CachedConnection(self._dialect, 1, 0, self._stop)
        try:
            while not self._stop.wait(self._cfg.table_poll_interval_ms / 1000):
                try:
                    tables = self._list_tables(conn)
                except ConnectException as exc:
                    conn.invalidate()
                    log.warning("Could not list the tables of %s: %s", self._dialect.url.url, exc)
                    continue
                with self._lock:
                    changed = tables != self._tables
                    if changed:
                        log.info("The tables to copy changed: %s", [t.fqn() for t in tables])
                        self._tables = tables
                ctx = getattr(self, "context", None)
                if changed and ctx is not None:
                    ctx.request_task_reconfiguration()
        finally:
            conn.close()

    def tables(self) -> list[TableId]:
        with self._lock:
            return list(self._tables or [])

    def task_configs(self, max_tasks: int) -> list[dict[str, str]]:
        assert self._cfg is not None and self._dialect is not None
        if self._cfg.query:
            return [{**self._props, TABLES_CONFIG: ""}]
        tables = self.tables()
        if not tables:
            log.warning("No tasks will be run because no tables were found")
            return []
        configs = []
        for group in group_partitions(tables, min(len(tables), max(1, max_tasks))):
            configs.append({**self._props, TABLES_CONFIG: ",".join(self._dialect.table_sql(t) for t in group)})
        return configs

    def stop(self) -> None:
        self._stop.set()
        if self._monitor is not None:
            self._monitor.join(timeout=10)
            self._monitor = None


# -- the task and its queriers -----------------------------------------------------------------

class _Querier:
    """One table (or the query) of a task: Confluent's TableQuerier."""

    def __init__(self, task: "JdbcSourceTask", table: TableId | None) -> None:
        cfg, d = task.cfg, task.dialect
        self.task, self.dialect, self.table = task, d, table
        self.name = table.fqn() if table is not None else "query"
        self.topic = cfg.topic_prefix + (table.table if table is not None else "")
        self.schema_name = table.table if table is not None else None
        self.base_sql = f"SELECT * FROM {d.table_sql(table)}" if table is not None else cfg.query
        self.cursor: Any = None
        self.last_update = 0.0
        self._shape: Any = None
        self._schema: Schema | None = None
        self._convert: Any = None

    @property
    def querying(self) -> bool:
        return self.cursor is not None

    def sql_and_params(self, conn: Any) -> tuple[str, Sequence[Any]]:
        return self._with_suffix(self.base_sql), ()  # no parameters: the text goes as it is

    def _escaped_base(self) -> str:
        return self.dialect.escape_query_text(self.base_sql) if self.table is None else self.base_sql

    def _with_suffix(self, sql: str) -> str:
        suffix = self.task.cfg.query_suffix
        return f"{sql} {suffix}" if suffix else sql

    def start_query(self, conn: Any) -> None:
        if self._shape is None:
            self.dialect.before_query(conn, self.table)
        sql, params = self.sql_and_params(conn)
        log.debug("%s: %s %s", self.name, sql, params)
        cur = self.dialect.stream_cursor(conn)
        try:
            cur.execute(sql, params if params else None)
        except BaseException:
            _close_quietly(cur)
            raise
        self.cursor = cur
        shape = tuple(tuple(d[:6]) for d in cur.description or ())
        if shape != self._shape:
            # A new result shape (first query, or the table changed): map its columns anew.
            columns = self.dialect.result_columns(conn, cur, self.table, self.base_sql)
            self._schema, mappings = map_columns(columns, self.schema_name, self.task.cfg.numeric_mapping,
                                                 self.dialect.timezone)
            self._convert = rows_converter(mappings, len(columns), self.name if self.table else None, columns)
            self._shape = shape
            self.on_new_schema()

    def on_new_schema(self) -> None:
        pass

    def read(self, max_rows: int) -> tuple[list[SourceRecord], bool]:
        """Up to ``max_rows`` records of the open result; whether the result is exhausted."""
        rows = self.cursor.fetchmany(max_rows)
        if not rows:
            return [], True
        records, exhausted = self.records(rows), len(rows) < max_rows
        if isinstance(records, SourceRecordBatch):
            records.more = not exhausted  # the worker may poll again at once
        return records, exhausted

    def records(self, rows: Sequence[Sequence[Any]]) -> list[SourceRecord]:
        raise NotImplementedError

    def reset(self, conn: Any, now: float) -> None:
        """The result is read (or failed): close it, end the transaction, wait for the next turn."""
        cur, self.cursor = self.cursor, None
        if cur is not None:
            _close_quietly(cur)
        if conn is not None:
            try:
                conn.commit()
            except Exception:  # noqa: BLE001 - the connection may be gone
                log.debug("commit failed", exc_info=True)
        self.last_update = now


def _no_offset(values: tuple) -> None:
    return None


def _timestamp_offset(ts_at: int, inc_at: int | None, values: tuple) -> dict[str, Any]:
    """The offset of a row of the timestamp modes whose timestamp column has a value (as
    ``_IncrementalQuerier.records`` makes it row by row)."""
    offset: dict[str, Any] = {}
    if inc_at is not None:
        offset["incrementing"] = int(values[inc_at])
    ts = values[ts_at]
    offset["timestamp"] = (ts - EPOCH) // _ONE_MS
    offset["timestamp_nanos"] = ts.microsecond * 1000
    return offset


def _close_quietly(cur: Any) -> None:
    try:
        cur.close()
    except Exception:  # noqa: BLE001
        log.debug("closing a cursor failed", exc_info=True)


_new = object.__new__
_set = object.__setattr__


class _RecordFactory:
    """Makes the records of one result shape. The records are ordinary frozen SourceRecords
    and Structs, equal to ones made by their constructors, but filled in from a template
    dict: the frozen dataclasses' ``__init__`` (a guarded setattr per field) cost three times
    as much, a third of a row's whole budget on the hot path."""

    def __init__(self, partition: Mapping[str, Any], topic: str, schema: Schema) -> None:
        self.schema = schema
        self.template = {"source_partition": partition, "source_offset": None, "topic": topic, "partition": None,
                         "key_schema": None, "key": None, "value_schema": schema, "value": None,
                         "timestamp": None, "headers": ()}

    def __call__(self, offset: Mapping[str, Any] | None, values: tuple) -> SourceRecord:
        value = _new(Struct)
        _set(value, "__dict__", {"schema": self.schema, "values": values})
        fields = self.template.copy()
        fields["source_offset"] = offset
        fields["value"] = value
        record = _new(SourceRecord)
        _set(record, "__dict__", fields)
        return record


class _BulkQuerier(_Querier):
    """Every row, every time (Confluent's BulkTableQuerier): no offset."""

    def __init__(self, task: "JdbcSourceTask", table: TableId | None) -> None:
        super().__init__(task, table)
        self.partition = {"table": table.table} if table is not None else {"query": "query"}

    def records(self, rows: Sequence[Sequence[Any]]) -> Sequence[SourceRecord]:
        assert self._schema is not None
        return SourceRecordBatch(self.partition, self.topic, self._schema, self._convert(rows),
                                 _no_offset)


class _IncrementalQuerier(_Querier):
    """Confluent's TimestampIncrementingTableQuerier with its TimestampIncrementingCriteria."""

    def __init__(self, task: "JdbcSourceTask", table: TableId | None, incrementing: str | None,
                 timestamps: Sequence[str], stored: Mapping[str, Any] | None) -> None:
        super().__init__(task, table)
        cfg = task.cfg
        if table is not None:
            self.partition: dict[str, Any] = {"protocol": "1", "table": table.fqn()}
        else:
            self.partition = {"query": "query"}
        self.incrementing = incrementing or None
        self.timestamps = list(timestamps)
        # The offset of the last record handed out; None: nothing read yet.
        self.last_inc: int | None = None
        self.last_ts: datetime.datetime | None = None
        if stored:
            inc = stored.get("incrementing")
            self.last_inc = int(inc) if inc is not None else None
            ms = stored.get("timestamp")
            if ms is not None:
                nanos = stored.get("timestamp_nanos")
                secs, rem_ms = divmod(int(ms), 1000)
                micros = int(nanos) // 1000 if nanos is not None else rem_ms * 1000
                self.last_ts = EPOCH + datetime.timedelta(seconds=secs, microseconds=micros)
        self.initial_ms = None if stored or cfg.timestamp_initial is None else int(cfg.timestamp_initial)

    def _col(self, name: str) -> str:
        return self.dialect.column_sql(self.table, name)

    def _coalesced(self) -> str:
        cols = [self._col(c) for c in self.timestamps]
        return self.dialect.timestamp_expression(cols[0] if len(cols) == 1 else f"COALESCE({','.join(cols)})")

    def sql_and_params(self, conn: Any) -> tuple[str, Sequence[Any]]:
        d = self.dialect
        base = self._escaped_base()
        params: list[Any] = []
        if self.timestamps:
            now = d.current_time(conn)
            end = now - datetime.timedelta(milliseconds=self.task.cfg.delay_ms)
            begin = self.last_ts
            if begin is None:
                if self.initial_ms == -1:
                    # timestamp.initial=-1: rows from the first query's time on
                    self.initial_ms = (now - EPOCH) // _ONE_MS
                if self.initial_ms is not None:
                    begin = EPOCH + datetime.timedelta(milliseconds=self.initial_ms)
                else:
                    begin = EPOCH
            ts = self._coalesced()
            if self.incrementing:
                inc = self._col(self.incrementing)
                where = (f" WHERE {ts} < {d.placeholder} AND (({ts} = {d.placeholder} AND {inc} > {d.placeholder})"
                         f" OR {ts} > {d.placeholder}) ORDER BY {ts},{inc} ASC")
                params = [d.timestamp_param(end), d.timestamp_param(begin),
                          self.last_inc if self.last_inc is not None else -1, d.timestamp_param(begin)]
            else:
                where = f" WHERE {ts} > {d.placeholder} AND {ts} < {d.placeholder} ORDER BY {ts} ASC"
                params = [d.timestamp_param(begin), d.timestamp_param(end)]
        else:
            assert self.incrementing
            inc = self._col(self.incrementing)
            where = f" WHERE {inc} > {d.placeholder} ORDER BY {inc} ASC"
            params = [self.last_inc if self.last_inc is not None else -1]
        return self._with_suffix(base + where), params

    def on_new_schema(self) -> None:
        assert self._schema is not None
        where = f"table {self.name}" if self.table is not None else "the query's result"
        self._inc_at: int | None = None
        if self.incrementing:
            f = self._schema.field(self.incrementing)
            if f is None:
                raise ConnectException(f"Incrementing column {self.incrementing} is not in {where}")
            if f.schema.type not in ("int8", "int16", "int32", "int64") and not (
                    f.schema.name and f.schema.name.endswith("Decimal")):
                raise ConnectException(f"Invalid type for incrementing column: {f.schema.type.upper()}")
            self._inc_at = f.index
        self._ts_at: list[int] = []
        for name in self.timestamps:
            f = self._schema.field(name)
            if f is None:
                raise ConnectException(f"Timestamp column {name} is not in {where}")
            self._ts_at.append(f.index)

    def records(self, rows: Sequence[Sequence[Any]]) -> list[SourceRecord]:
        assert self._schema is not None
        inc_at, ts_at = self._inc_at, self._ts_at
        converted = self._convert(rows)
        incs = list(map(itemgetter(inc_at), converted)) if inc_at is not None else None
        if incs is not None and None in incs:
            raise ConversionError(f"Null value for incrementing column {self.incrementing} of {self.name}")
        # Each row's timestamp is the first timestamp column's where it has a value in every
        # row (else the row path below coalesces the columns): then the batch is handed out
        # as it is, its records and offsets made only if read.
        stamps = list(map(itemgetter(ts_at[0]), converted)) if ts_at else None
        if stamps is None or None not in stamps:
            if incs is not None:
                self.last_inc = incs[-1] if type(incs[-1]) is int else int(incs[-1])  # (a DECIMAL(p,0) id)
            if stamps is None:
                return SourceRecordBatch(self.partition, self.topic, self._schema, converted,
                                         lambda values: {"incrementing": values[inc_at]})
            self.last_ts = stamps[-1]
            return SourceRecordBatch(self.partition, self.topic, self._schema, converted,
                                     partial(_timestamp_offset, ts_at[0], inc_at))
        make = _RecordFactory(self.partition, self.topic, self._schema)
        last_inc, last_ts = self.last_inc, self.last_ts
        out = []
        append = out.append
        for values in converted:
            offset: dict[str, Any] = {}
            if inc_at is not None:
                last_inc = int(values[inc_at])
                offset["incrementing"] = last_inc
            if ts_at:
                ts = None
                for i in ts_at:
                    ts = values[i]
                    if ts is not None:
                        break
                if ts is not None:
                    last_ts = ts
                if last_ts is not None:
                    offset["timestamp"] = (last_ts - EPOCH) // _ONE_MS
                    offset["timestamp_nanos"] = last_ts.microsecond * 1000
            append(make(offset, values))
        # The position moves only once the whole batch is made: a batch that fails is read again.
        self.last_inc, self.last_ts = last_inc, last_ts
        return out


class _TaskContextOffsets:
    """Looks a table's stored offset up under Confluent's partitions, newest protocol first."""

    def __init__(self, context: Any) -> None:
        self.context = context

    def for_table(self, table: TableId) -> Mapping[str, Any] | None:
        if self.context is None:
            return None
        for partition in ({"protocol": "1", "table": table.fqn()}, {"table": table.table}):
            found = self.context.offset(partition)
            if found:
                return found
        return None

    def for_query(self) -> Mapping[str, Any] | None:
        return self.context.offset({"query": "query"}) if self.context is not None else None


class JdbcSourceTask(SourceTask):
    """Polls its tables (or the query) in turn; see the module doc."""

    def __init__(self) -> None:
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._queriers: list[_Querier] = []
        self._conn: CachedConnection | None = None

    def version(self) -> str:
        from streamsql.runtime.connect.jdbc import VERSION

        return VERSION

    def start(self, props: Mapping[str, str]) -> None:
        self.cfg = cfg = _SourceConfig(props)
        if not cfg.mode:
            raise ConfigException("Query mode must be specified")
        self.dialect = dialect_for(cfg.connection)
        self._stopping.clear()
        self._conn = CachedConnection(self.dialect, cfg.connection.attempts, cfg.connection.backoff_ms,
                                      self._stopping)
        offsets = _TaskContextOffsets(getattr(self, "context", None))
        tables = [self.dialect.parse_table_id(t) for t in _split_list(str(props.get(TABLES_CONFIG, "")))]
        if cfg.query and tables:
            raise ConnectException("Invalid configuration: each JdbcSourceTask must have at least one table "
                                   "assigned to it or one query specified")
        incremental = cfg.mode != BULK
        inc_col = cfg.incrementing_column if cfg.mode in (INCREMENTING, TIMESTAMP_INCREMENTING) else ""
        ts_cols = cfg.timestamp_columns if cfg.mode in (TIMESTAMP, TIMESTAMP_INCREMENTING) else []
        if cfg.query:
            if not incremental:
                self._queriers = [_BulkQuerier(self, None)]
            else:
                if cfg.mode in (INCREMENTING, TIMESTAMP_INCREMENTING) and not inc_col:
                    raise ConfigException("incrementing.column.name must be set to use a query in "
                                          f"{cfg.mode} mode")
                self._queriers = [_IncrementalQuerier(self, None, inc_col, ts_cols, offsets.for_query())]
            return
        queriers: list[_Querier] = []
        for table in tables:
            if not incremental:
                queriers.append(_BulkQuerier(self, table))
                continue
            column = inc_col
            if incremental and cfg.mode in (INCREMENTING, TIMESTAMP_INCREMENTING):
                column = column or self._auto_increment_column(table)
            if cfg.validate_non_null:
                self._validate_non_nullable(table, column, ts_cols)
            queriers.append(_IncrementalQuerier(self, table, column, ts_cols, offsets.for_table(table)))
        self._queriers = queriers

    def _describe(self, table: TableId) -> dict[str, Any]:
        assert self._conn is not None
        try:
            return self.dialect.describe_columns(self._conn.get(), table)
        except ConnectException:
            raise
        except Exception as exc:  # noqa: BLE001 - a driver error
            self._conn.invalidate()
            raise ConnectException(f"Failed to describe table {table.fqn()}: {self.dialect.error_text(exc)}") from exc

    def _auto_increment_column(self, table: TableId) -> str:
        for col in self._describe(table).values():
            if col.auto_increment:
                return col.name
        raise ConnectException(f"Cannot find an auto-incrementing column in table {table.fqn()}: set "
                               "incrementing.column.name")

    def _validate_non_nullable(self, table: TableId, incrementing: str, timestamps: Sequence[str]) -> None:
        """Confluent's JdbcSourceTask.validateNonNullable, with its messages."""
        columns = self._describe(table)
        if not columns:
            raise ConnectException(f"Table {table.fqn()} does not exist")
        by_lower = {n.lower(): c for n, c in columns.items()}
        if incrementing and incrementing.lower() not in by_lower:
            raise ConnectException(f"Incrementing column: {incrementing} does not exist.")
        if timestamps and not all(t.lower() in by_lower for t in timestamps):
            raise ConnectException(f"Timestamp columns: {', '.join(timestamps)} do not exist.")
        if incrementing and by_lower[incrementing.lower()].nullable:
            raise ConnectException(f"Cannot make incremental queries using incrementing column {incrementing} "
                                   f"on {table.fqn()} because this column is nullable.")
        if timestamps and all(by_lower[t.lower()].nullable for t in timestamps):
            raise ConnectException(f"Cannot make incremental queries using timestamp columns "
                                   f"{','.join(timestamps)} on {table.fqn()} because all of these columns nullable.")

    def poll(self) -> Sequence[SourceRecord] | None:
        """The next records of the table whose turn it is; None when no table is due within
        0.1 s or the table that ran had nothing new."""
        with self._lock:
            interval = self.cfg.poll_interval_ms / 1000
            while not self._stopping.is_set():
                if not self._queriers:
                    self._stopping.wait(min(interval, 1.0))
                    return None
                querier = self._head()
                if not querier.querying:
                    wait = querier.last_update + interval - time.time()
                    if wait > 0:
                        # Nothing due: a short wait, then back to the worker (which may stop us).
                        if self._stopping.wait(min(wait, 0.1)) or wait > 0.1:
                            return None
                        continue
                return self._poll_querier(querier)
            return None

    def _head(self) -> _Querier:
        # The querier in the middle of a result goes on; else the one waiting longest.
        for q in self._queriers:
            if q.querying:
                return q
        return min(self._queriers, key=lambda q: q.last_update)

    def _poll_querier(self, querier: _Querier) -> list[SourceRecord] | None:
        assert self._conn is not None
        conn = None
        try:
            conn = self._conn.get()
            if not querier.querying:
                querier.start_query(conn)
            records, exhausted = querier.read(self.cfg.batch_max_rows)
            if exhausted or not records:
                querier.reset(conn, time.time())
            return records or None
        except ConnectException:
            querier.reset(conn, time.time())
            raise
        except Exception as exc:  # noqa: BLE001 - driver errors, mapped below
            querier.reset(None, time.time())
            raise self._failure(querier, exc) from exc

    def _failure(self, querier: _Querier, exc: BaseException) -> ConnectException:
        assert self._conn is not None
        text = self.dialect.error_text(exc)
        what = f"table {querier.name}" if querier.table is not None else "the query"
        if self.dialect.is_connection_error(exc):
            self._conn.invalidate()
            return RetriableException(f"Lost the connection to {self.dialect.url.url} while querying {what}: {text}")
        self._conn.invalidate()  # the transaction is in an unknown state: start afresh
        if self.dialect.is_missing_table(exc):
            return ConnectException(f"Failed to query {what}: it does not exist (anymore): {text}")
        return ConnectException(f"Failed to query {what}: {text}")

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:  # an in-flight poll returns first: the connection is not shared
            # Closing the connection ends an open result too; closing a streaming cursor
            # first would read the rest of its rows.
            if self._conn is not None:
                self._conn.close()
            for q in self._queriers:
                q.cursor = None


__all__ = ["JdbcSourceConnector", "JdbcSourceTask", "group_partitions"]

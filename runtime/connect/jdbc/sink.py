"""The JDBC sink: ``io.confluent.connect.jdbc.JdbcSinkConnector`` and its task.

As Confluent's JdbcSinkTask/JdbcDbWriter/BufferedRecords: records go to the table named by
``table.name.format`` (``${topic}`` replaced by the record's topic), buffered per table up to
``batch.size`` and written with one statement per run of records (``executemany``): ``INSERT``,
an upsert (MySQL ``ON DUPLICATE KEY UPDATE``, PostgreSQL and SQLite ``ON CONFLICT (...) DO
UPDATE``) or ``UPDATE ... WHERE key``; with ``delete.enabled`` a tombstone (null value) deletes
its key's row, in order with the writes around it. Every ``put`` ends with a commit, so a
``flush`` has nothing left to do and the worker commits the consumer offsets of written rows only.

The primary key comes from ``pk.mode``: ``none``, ``kafka`` (``__connect_topic``,
``__connect_partition``, ``__connect_offset``), ``record_key`` (a primitive key -> one column
named by ``pk.fields``; a struct key -> its fields, or those ``pk.fields`` names) or
``record_value`` (fields of the value). A record whose schema differs from the previous
record's flushes the buffer and is checked against the table: ``auto.create`` creates a missing
table, ``auto.evolve`` adds missing columns (optional or defaulted fields only), both with
Confluent's column types per database; otherwise Confluent's errors. A database that is down,
or a statement that fails, is retried ``max.retries`` times (RetriableException: the worker
delivers the same records again) before the task fails.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from streamsql.runtime.connect.api import (
    BOOLEAN, BYTES, DATE, DECIMAL, FLOAT32, FLOAT64, INT8, INT16, INT32, INT64, STRING, STRUCT, TIME,
    TIMESTAMP, ConfigKey, ConnectException, RetriableException, Schema, SinkConnector, SinkRecord, SinkTask,
    Struct, Task)
from streamsql.runtime.connect.jdbc.config import SINK_KEYS, Config, ConfigException
from streamsql.runtime.connect.jdbc.dialects import (
    CachedConnection, DatabaseDialect, SinkColumn, TableId, dialect_for)
from streamsql.runtime.connect.jdbc.schema import bind_value

log = logging.getLogger(__name__)

INSERT_MODES = ("insert", "upsert", "update")
PK_MODES = ("none", "kafka", "record_key", "record_value")
KAFKA_PK_FIELDS = (("__connect_topic", Schema(STRING)), ("__connect_partition", Schema(INT32)),
                   ("__connect_offset", Schema(INT64)))
_PRIMITIVES = (INT8, INT16, INT32, INT64, FLOAT32, FLOAT64, BOOLEAN, STRING, BYTES)


class _SinkConfig:
    """The sink's configuration, validated as Confluent's JdbcSinkConfig."""

    def __init__(self, props: Mapping[str, str]) -> None:
        self.config = c = Config(SINK_KEYS, props)
        self.connection = c.connection()
        self.insert_mode = c.choice("insert.mode", INSERT_MODES)
        self.pk_mode = c.choice("pk.mode", PK_MODES)
        self.pk_fields = list(c["pk.fields"])
        self.whitelist = set(c["fields.whitelist"])
        self.delete_enabled = bool(c["delete.enabled"])
        self.auto_create = bool(c["auto.create"])
        self.auto_evolve = bool(c["auto.evolve"])
        self.table_format = c["table.name.format"] or "${topic}"
        self.batch_size = max(1, int(c["batch.size"]))
        self.max_retries = int(c["max.retries"])
        self.retry_backoff_ms = int(c["retry.backoff.ms"])
        if self.delete_enabled and self.pk_mode != "record_key":
            raise ConfigException("Primary key mode must be 'record_key' when delete support is enabled")


class JdbcSinkConnector(SinkConnector):
    """Writes topics into database tables; see the module doc."""

    def __init__(self) -> None:
        self._props: dict[str, str] = {}

    def version(self) -> str:
        from streamsql.runtime.connect.jdbc import VERSION

        return VERSION

    def config(self) -> Sequence[ConfigKey]:
        return SINK_KEYS

    def task_class(self) -> type[Task]:
        return JdbcSinkTask

    def start(self, props: Mapping[str, str]) -> None:
        self._props = {str(k): str(v) for k, v in props.items()}
        _SinkConfig(self._props)

    def task_configs(self, max_tasks: int) -> list[dict[str, str]]:
        return [dict(self._props) for _ in range(max(1, max_tasks))]


# -- fields of a record: which are the key, which the rest ------------------------------------

@dataclass(frozen=True)
class FieldsMetadata:
    """Confluent's FieldsMetadata: the key fields (in key order) and the other fields (in the
    value schema's order), each with its Connect schema."""

    key_fields: tuple[tuple[str, Schema], ...]
    value_fields: tuple[tuple[str, Schema], ...]

    @property
    def key_names(self) -> list[str]:
        return [n for n, _ in self.key_fields]

    @property
    def value_names(self) -> list[str]:
        return [n for n, _ in self.value_fields]


def extract_fields(table: str, cfg: _SinkConfig, key_schema: Schema | None,
                   value_schema: Schema | None) -> FieldsMetadata:
    if value_schema is not None and value_schema.type != STRUCT:
        raise ConnectException(f"Value schema must be of type Struct, not {value_schema.type.upper()}")
    keys: list[tuple[str, Schema]] = []
    mode, pk = cfg.pk_mode, cfg.pk_fields
    if mode == "kafka":
        if pk and len(pk) != 3:
            raise ConnectException("PK mode for table '%s' is KAFKA so there should either be no field names "
                                   "defined for defaults %s to be applicable, or exactly 3, defined fields "
                                   "are: %s" % (table, [n for n, _ in KAFKA_PK_FIELDS], pk))
        names = pk or [n for n, _ in KAFKA_PK_FIELDS]
        keys = [(n, s) for n, (_, s) in zip(names, KAFKA_PK_FIELDS)]
    elif mode == "record_key":
        if key_schema is None:
            raise ConnectException(f"PK mode for table '{table}' is RECORD_KEY, but record key schema is missing")
        if key_schema.type in _PRIMITIVES:
            if len(pk) != 1:
                raise ConnectException("Need exactly one PK column defined since the key schema for records is a "
                                       f"primitive type, defined columns are: {pk}")
            keys = [(pk[0], key_schema)]
        elif key_schema.type == STRUCT:
            names = pk or [f.name for f in key_schema.fields]
            for n in names:
                f = key_schema.field(n)
                if f is None:
                    raise ConnectException(f"PK mode for table '{table}' is RECORD_KEY with configured PK fields "
                                           f"{pk}, but record key schema does not contain field: {n}")
                keys.append((n, f.schema))
        else:
            raise ConnectException(f"Key schema must be primitive type or Struct, but is of type: "
                                   f"{key_schema.type.upper()}")
    elif mode == "record_value":
        if value_schema is None:
            raise ConnectException(f"PK mode for table '{table}' is RECORD_VALUE, but record value schema is missing")
        names = pk or [f.name for f in value_schema.fields]
        for n in names:
            f = value_schema.field(n)
            if f is None:
                raise ConnectException(f"PK mode for table '{table}' is RECORD_VALUE with configured PK fields "
                                       f"{pk}, but record value schema does not contain field: {n}")
            keys.append((n, f.schema))
    key_names = {n for n, _ in keys}
    values: list[tuple[str, Schema]] = []
    if value_schema is not None:
        for f in value_schema.fields:
            if f.name in key_names or (cfg.whitelist and f.name not in cfg.whitelist):
                continue
            values.append((f.name, f.schema))
    if not keys and not values:
        raise ConnectException(f"No fields found using key and value schemas for table: {table}")
    return FieldsMetadata(tuple(keys), tuple(values))


def _logical(schema: Schema) -> str | None:
    return {DECIMAL: "decimal", DATE: "date", TIME: "time", TIMESTAMP: "timestamp"}.get(schema.name or "")


def sink_column(dialect: DatabaseDialect, name: str, schema: Schema, is_key: bool) -> SinkColumn:
    if schema.type not in _PRIMITIVES and _logical(schema) is None:
        raise ConnectException(f"{dialect.name.replace('DatabaseDialect', '')} does not support type "
                               f"{schema.type.upper()} (field {name})")
    scale = int(dict(schema.parameters).get("scale", 0))
    sql_type = dialect.sql_type(schema.type, _logical(schema), scale, is_key)
    return SinkColumn(name, sql_type, schema.optional and not is_key, schema.default)


# -- per-table buffers ---------------------------------------------------------------------

class _TableWriter:
    """Confluent's BufferedRecords for one table: statements for the current schemas."""

    def __init__(self, task: "JdbcSinkTask", table: TableId) -> None:
        self.task, self.table = task, table
        self.key_schema: Schema | None = None
        self.value_schema: Schema | None = None
        self.fields: FieldsMetadata | None = None
        self.buffer: list[SinkRecord] = []

    def add(self, record: SinkRecord) -> None:
        cfg = self.task.cfg
        tombstone = record.value is None
        if tombstone and not cfg.delete_enabled:
            raise ConnectException(
                f"Sink connector '{self.task.name}' is configured with 'delete.enabled=false' and 'pk.mode="
                f"{cfg.pk_mode}' and therefore requires records with a non-null Struct value and non-null Struct "
                f"schema, but found record at (topic='{record.topic}',partition={record.partition},offset="
                f"{record.offset},timestamp={record.timestamp}) with a null value and "
                f"{'null' if record.value_schema is None else 'non-null'} value schema.")
        if not tombstone and not isinstance(record.value, Struct):
            raise ConnectException(
                f"Sink connector '{self.task.name}' is configured with 'delete.enabled={str(cfg.delete_enabled).lower()}'"
                f" and 'pk.mode={cfg.pk_mode}' and therefore requires records with a non-null Struct value and "
                f"non-null Struct schema, but found record at (topic='{record.topic}',partition={record.partition},"
                f"offset={record.offset},timestamp={record.timestamp}) with a {type(record.value).__name__} value "
                f"and {'null' if record.value_schema is None else 'non-null'} value schema.")
        value_schema = record.value_schema if not tombstone else self.value_schema
        # Identity first: converters hand out one schema object per shape, and comparing
        # frozen schemas field by field for every record would cost more than the write.
        ks, vs = record.key_schema, value_schema
        if (ks is not self.key_schema and ks != self.key_schema) or \
                (vs is not self.value_schema and vs is not None and vs != self.value_schema):
            self.flush()
            self._prepare(record.key_schema, value_schema)
        self.buffer.append(record)
        if len(self.buffer) >= cfg.batch_size:
            self.flush()

    def _prepare(self, key_schema: Schema | None, value_schema: Schema | None) -> None:
        self.key_schema, self.value_schema = key_schema, value_schema
        d, cfg = self.task.dialect, self.task.cfg
        self.fields = fields = extract_fields(self.table.fqn(), cfg, key_schema, value_schema)
        self.task.structure.create_or_amend(self.table, fields)
        keys, others = fields.key_names, fields.value_names
        if cfg.insert_mode == "insert":
            self.write_sql = d.insert_sql(self.table, keys, others)
            self.write_params = self._key_then_value
        elif cfg.insert_mode == "upsert":
            if not keys:
                raise ConnectException(f"Write to table '{self.table.fqn()}' in UPSERT mode requires key field "
                                       "names to be known, check the primary key configuration")
            self.write_sql = d.upsert_sql(self.table, keys, others)
            self.write_params = self._key_then_value
        else:
            if not keys:
                raise ConnectException(f"Write to table '{self.table.fqn()}' in UPDATE mode requires key field "
                                       "names to be known, check the primary key configuration")
            self.write_sql = d.update_sql(self.table, keys, others)
            self.write_params = self._value_then_key
        self.delete_sql = d.delete_sql(self.table, keys) if cfg.delete_enabled and keys else None
        self._key_getters = self._getters_for_keys()
        self._value_getters = self._getters_for(value_schema, fields.value_fields)

    def _binder(self, schema: Schema) -> Callable[[Any], Any]:
        d = self.task.dialect
        return lambda v: bind_value(schema, v, d.name, d.timezone)

    def _getters_for(self, struct_schema: Schema | None, wanted: Sequence[tuple[str, Schema]]) -> list[Callable[[Any], Any]]:
        getters = []
        for name, schema in wanted:
            f = struct_schema.field(name) if struct_schema is not None else None
            if f is None:
                raise ConnectException(f"Field {name} is not in the record's schema")
            bind, i = self._binder(schema), f.index
            getters.append(lambda s, bind=bind, i=i: bind(s.values[i]))
        return getters

    def _getters_for_keys(self) -> list[Callable[[SinkRecord], Any]]:
        assert self.fields is not None
        mode = self.task.cfg.pk_mode
        if mode == "kafka":
            return [lambda r: r.topic, lambda r: r.partition, lambda r: r.offset]
        if mode == "record_key":
            ks = self.key_schema
            assert ks is not None
            if ks.type != STRUCT:
                bind = self._binder(ks)
                return [lambda r, bind=bind: bind(r.key)]
            inner = self._getters_for(ks, self.fields.key_fields)
            return [lambda r, g=g: g(r.key) for g in inner]
        if mode == "record_value":
            inner = self._getters_for(self.value_schema, self.fields.key_fields)
            return [lambda r, g=g: g(r.value) for g in inner]
        return []

    def _keys(self, r: SinkRecord) -> list[Any]:
        return [g(r) for g in self._key_getters]

    def _values(self, r: SinkRecord) -> list[Any]:
        return [g(r.value) for g in self._value_getters]

    def _key_then_value(self, r: SinkRecord) -> list[Any]:
        return self._keys(r) + self._values(r)

    def _value_then_key(self, r: SinkRecord) -> list[Any]:
        return self._values(r) + self._keys(r)

    def flush(self) -> None:
        """Writes the buffer: runs of writes and of deletes, in the records' order."""
        if not self.buffer:
            return
        records, self.buffer = self.buffer, []
        conn = self.task.connection.get()
        cur = conn.cursor()
        try:
            run: list[list[Any]] = []
            deleting = None
            for r in records:
                is_delete = r.value is None
                if deleting is not None and is_delete != deleting:
                    self._execute(cur, deleting, run)
                    run = []
                deleting = is_delete
                run.append(self._keys(r) if is_delete else self.write_params(r))
            if run:
                self._execute(cur, bool(deleting), run)
        finally:
            try:
                cur.close()
            except Exception:  # noqa: BLE001
                log.debug("closing a cursor failed", exc_info=True)

    def _execute(self, cur: Any, deleting: bool, rows: list[list[Any]]) -> None:
        if deleting:
            assert self.delete_sql is not None
            cur.executemany(self.delete_sql, rows)
            return
        cur.executemany(self.write_sql, rows)
        mode = self.task.cfg.insert_mode
        count = cur.rowcount
        if mode == "insert" and count is not None and count >= 0 and count != len(rows):
            raise ConnectException(f"Update count ({count}) did not sum up to total number of records inserted "
                                   f"({len(rows)})")


class DbStructure:
    """Confluent's DbStructure: creates or amends a table to take the records' fields."""

    def __init__(self, task: "JdbcSinkTask") -> None:
        self.task = task
        self._known: dict[TableId, set[str]] = {}

    def create_or_amend(self, table: TableId, fields: FieldsMetadata) -> None:
        d, cfg = self.task.dialect, self.task.cfg
        conn = self.task.connection.get()
        columns = d.describe_columns(conn, table)
        all_fields = [(n, s, True) for n, s in fields.key_fields] + [(n, s, False) for n, s in fields.value_fields]
        if not columns:
            if not cfg.auto_create:
                raise ConnectException(f"Table {d.table_sql(table)} is missing and auto-creation is disabled")
            sql = d.create_table_sql(table, [sink_column(d, n, s, k) for n, s, k in all_fields], fields.key_names)
            log.info("Creating table with sql: %s", sql)
            self._run(conn, [sql])
            return
        present = {c.lower() for c in columns}
        missing = [(n, s, k) for n, s, k in all_fields if n.lower() not in present]
        if not missing:
            return
        if not cfg.auto_evolve:
            raise ConnectException(f"Table {d.table_sql(table)} is missing fields "
                                   f"({', '.join(sorted(n for n, _, _ in missing))}) and auto-evolution is disabled")
        for n, s, k in missing:
            if not s.optional and s.default is None:
                raise ConnectException(f"Cannot ALTER TABLE {d.table_sql(table)} to add missing field {n}, as the "
                                       "field is not optional and does not have a default value")
        statements = d.alter_table_sql(table, [sink_column(d, n, s, False) for n, s, _ in missing])
        log.info("Amending table to add missing fields: %s", statements)
        self._run(conn, statements)

    def _run(self, conn: Any, statements: Sequence[str]) -> None:
        cur = conn.cursor()
        try:
            for sql in statements:
                cur.execute(sql)
        finally:
            cur.close()
        conn.commit()


class JdbcSinkTask(SinkTask):
    """Writes records into their tables and commits at the end of each ``put``."""

    name = "jdbc-sink"

    def version(self) -> str:
        from streamsql.runtime.connect.jdbc import VERSION

        return VERSION

    def start(self, props: Mapping[str, str]) -> None:
        self.cfg = _SinkConfig(props)
        self.name = str(props.get("name", self.name))
        self.dialect = dialect_for(self.cfg.connection)
        self._stopping = threading.Event()
        self.connection = CachedConnection(self.dialect, self.cfg.connection.attempts,
                                           self.cfg.connection.backoff_ms, self._stopping)
        self.structure = DbStructure(self)
        self._writers: dict[TableId, _TableWriter] = {}
        self._retries_left = self.cfg.max_retries

    def _table_for(self, topic: str) -> TableId:
        return self.dialect.parse_table_id(self.cfg.table_format.replace("${topic}", topic))

    def put(self, records: Sequence[SinkRecord]) -> None:
        if not records:
            return
        try:
            used: list[_TableWriter] = []
            for r in records:
                table = self._table_for(r.topic)
                w = self._writers.get(table)
                if w is None:
                    w = self._writers[table] = _TableWriter(self, table)
                if w not in used:
                    used.append(w)
                w.add(r)
            for w in used:
                w.flush()
            self.connection.get().commit()
            self._retries_left = self.cfg.max_retries
        except ConnectException:
            self._abort()
            raise
        except Exception as exc:  # noqa: BLE001 - driver errors: retried, then fatal
            self._abort()
            text = self.dialect.error_text(exc)
            if self.dialect.is_connection_error(exc) or self._retries_left > 0:
                self._retries_left -= 1
                raise RetriableException(f"Failed to write to {self.dialect.url.url}: {text} "
                                         f"({max(0, self._retries_left)} retries left)") from exc
            raise ConnectException(f"Failed to write to {self.dialect.url.url} after {self.cfg.max_retries} "
                                   f"retries: {text}") from exc

    def _abort(self) -> None:
        """Rolls the batch back and forgets table schemas: the worker delivers it again."""
        for w in self._writers.values():
            w.buffer = []
        self._writers = {}
        self.connection.rollback()

    def flush(self, offsets: Mapping[tuple[str, int], int]) -> None:
        """Nothing to do: every ``put`` commits what it wrote."""

    def stop(self) -> None:
        self._stopping.set()
        self.connection.close()

"""Database dialects: JDBC URLs, Python drivers, and the SQL each database speaks.

As kafka-connect-jdbc's ``DatabaseDialect`` (Generic/MySql/PostgreSql/SqliteDatabaseDialect):
the dialect is picked from the URL's subprotocol (``jdbc:mysql:``/``jdbc:mariadb:`` ->
MySQL through mysqlclient, ``jdbc:postgresql:`` -> psycopg 3, ``jdbc:sqlite:`` -> the stdlib's
sqlite3), or named by ``dialect.name``. It opens connections, lists tables and columns, reads
the database's clock, describes a result's columns for the schema mapping, and writes the SQL
the connectors issue.

That SQL is built with sqlglot's expression trees wherever the statement's shape differs per
database: identifier quoting and escaping, ``INSERT ... ON DUPLICATE KEY UPDATE`` vs
``ON CONFLICT (...) DO UPDATE``, ``CREATE TABLE`` and ``ALTER TABLE ... ADD`` (one column per
statement on SQLite). One tree, three generators: no hand-written quoting rules to get wrong
per database. A user's ``query`` is never re-generated: Confluent appends its WHERE clause to
the text as written, and so do we (``TableQuerier`` semantics), so the query runs as the user
wrote it for their database.
"""
from __future__ import annotations

import datetime
import logging
import re
import sqlite3
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Mapping, Sequence
from urllib.parse import parse_qsl, unquote

import sqlglot.expressions as exp

from streamsql.runtime.connect.api import ConnectException, RetriableException

log = logging.getLogger(__name__)

UTC = datetime.timezone.utc


# -- URLs ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class JdbcUrl:
    """A parsed ``jdbc:`` URL: host/port/database for servers, ``path`` for SQLite, and the
    query string's properties (``user``, ``password``, ...)."""

    url: str
    subprotocol: str
    host: str | None = None
    port: int | None = None
    database: str | None = None
    path: str | None = None
    properties: tuple[tuple[str, str], ...] = ()

    def prop(self, name: str) -> str | None:
        for k, v in self.properties:
            if k == name:
                return v
        return None


_SERVER_URL = re.compile(r"^jdbc:(?P<sub>[a-z0-9]+)://(?P<hosts>[^/?]*)(?:/(?P<db>[^?;]*))?(?:[?;](?P<qs>.*))?$",
                         re.IGNORECASE)
_DEFAULT_PORTS = {"mysql": 3306, "mariadb": 3306, "postgresql": 5432}


def parse_url(url: str) -> JdbcUrl:
    """Parses the URLs of the three supported databases; anything else is a ConnectException."""
    text = (url or "").strip()
    low = text.lower()
    if low.startswith("jdbc:sqlite:"):
        rest = text[len("jdbc:sqlite:"):]
        path, _, qs = rest.partition("?")
        return JdbcUrl(text, "sqlite", path=path or ":memory:", properties=tuple(parse_qsl(qs)))
    m = _SERVER_URL.match(text)
    if m is None:
        if low.startswith("jdbc:postgresql:"):
            # jdbc:postgresql:database (localhost, default port), as pgJDBC accepts
            db, _, qs = text[len("jdbc:postgresql:"):].partition("?")
            return JdbcUrl(text, "postgresql", "localhost", 5432, db, properties=tuple(parse_qsl(qs)))
        raise ConnectException(f"Not a valid JDBC URL: {text!r} (expected jdbc:mysql://, jdbc:mariadb://, "
                               "jdbc:postgresql:// or jdbc:sqlite:)")
    sub = m.group("sub").lower()
    if sub not in _DEFAULT_PORTS:
        raise ConnectException(f"No suitable dialect for {text!r}: the built-in JDBC connectors support "
                               "jdbc:mysql:, jdbc:mariadb:, jdbc:postgresql: and jdbc:sqlite:")
    first = m.group("hosts").split(",")[0]
    if "@" in first:  # user:password@host, as some drivers accept
        first = first.rsplit("@", 1)[1]
    host, port = first, _DEFAULT_PORTS[sub]
    if first.startswith("["):
        host, _, rest = first[1:].partition("]")
        if rest.startswith(":") and rest[1:].isdigit():
            port = int(rest[1:])
    elif ":" in first:
        host, _, p = first.rpartition(":")
        if not p.isdigit():
            raise ConnectException(f"Not a valid JDBC URL: {text!r} (bad port {p!r})")
        port = int(p)
    qs = m.group("qs") or ""
    props = tuple(parse_qsl(qs.replace(";", "&"), keep_blank_values=True))
    return JdbcUrl(text, sub, host or "localhost", port, unquote(m.group("db") or "") or None, properties=props)


def redact(url: str) -> str:
    """The URL without a password in its query string (for error messages and logs)."""
    return re.sub(r"(?i)(password=)[^&;]*", r"\1****", url)


# -- identifiers and result metadata ---------------------------------------------------------

@dataclass(frozen=True)
class TableId:
    """A table: catalog (MySQL's database), schema (PostgreSQL's), name."""

    catalog: str | None
    schema: str | None
    table: str

    def fqn(self) -> str:
        """The unquoted, dot-separated name Confluent's offsets and whitelists use."""
        return ".".join(p for p in (self.catalog, self.schema, self.table) if p)


@dataclass(frozen=True)
class ColumnInfo:
    """A table column as the catalog describes it."""

    name: str
    type_name: str
    nullable: bool
    auto_increment: bool = False
    primary_key: bool = False


@dataclass(frozen=True)
class ResultColumn:
    """A result column, in dialect-neutral terms for the schema mapping: ``kind`` is one of
    bool, bit, int8..int64 (``unsigned`` widens as Connect does), float32, float64, numeric
    (numeric.mapping applies), decimal, string, bytes, date, time, timestamp, year, or None for
    a type Confluent skips (with a warning)."""

    name: str
    kind: str | None
    nullable: bool
    precision: int = 0
    scale: int = 0
    unsigned: bool = False
    type_name: str = ""
    driver: str = ""   # how the driver hands values over: "mysql", "postgresql", "sqlite"


# -- errors ----------------------------------------------------------------------------------

class AuthenticationError(ConnectException):
    """The database refused the credentials (or the database does not exist): retrying
    will not help."""


def connection_failure(dialect: "DatabaseDialect", exc: BaseException) -> ConnectException:
    """A driver's connect error as Connect's exception: refused credentials and unknown
    databases are final, anything else (down, unreachable) retriable."""
    message = f"Could not connect to {redact(dialect.url.url)} as user {dialect.user!r}: {dialect.error_text(exc)}"
    if dialect.is_auth_error(exc):
        return AuthenticationError(message)
    return RetriableException(message)


# -- the dialects -----------------------------------------------------------------------------

@dataclass(frozen=True)
class SinkColumn:
    """A column the sink creates or adds: its name, SQL type, nullability and default."""

    name: str
    sql_type: str
    nullable: bool
    default: Any = None


class DatabaseDialect(ABC):
    """What the JDBC connectors need from a database; one subclass per database."""

    name = "GenericDatabaseDialect"
    sqlglot_dialect = ""
    placeholder = "?"

    def __init__(self, url: JdbcUrl, user: str | None, password: str | None, db_timezone: str = "UTC") -> None:
        self.url = url
        self.user = user if user else url.prop("user")
        self.password = password if password else url.prop("password")
        self.timezone = _zone(db_timezone)

    # connections
    @abstractmethod
    def connect(self) -> Any:
        """A new connection (autocommit off); ConnectException/RetriableException on failure."""

    def is_auth_error(self, exc: BaseException) -> bool:
        return False

    def error_text(self, exc: BaseException) -> str:
        return str(exc).strip() or type(exc).__name__

    def is_connection_error(self, exc: BaseException) -> bool:
        """Whether ``exc`` means the connection is gone (reconnect and retry)."""
        return False

    def is_missing_table(self, exc: BaseException) -> bool:
        return False

    # identifiers
    def quote(self, name: str) -> str:
        return exp.to_identifier(name, quoted=True).sql(self.sqlglot_dialect)

    def table_expr(self, table: TableId) -> exp.Table:
        return exp.Table(this=exp.to_identifier(table.table, quoted=True),
                         db=exp.to_identifier(table.schema, quoted=True) if table.schema else None,
                         catalog=exp.to_identifier(table.catalog, quoted=True) if table.catalog else None)

    def table_sql(self, table: TableId) -> str:
        return self.table_expr(table).sql(self.sqlglot_dialect)

    def column_sql(self, table: TableId | None, column: str) -> str:
        """A column, qualified with its table in table mode, as Confluent's ColumnId."""
        if table is None:
            return self.quote(column)
        return f"{self.table_sql(table)}.{self.quote(column)}"

    @abstractmethod
    def parse_table_id(self, text: str) -> TableId:
        """A table named in config (``users``, ``db.users``), quoted or not."""

    # catalog
    @abstractmethod
    def list_tables(self, conn: Any, table_types: Sequence[str], catalog_pattern: str | None = None,
                    schema_pattern: str | None = None) -> list[TableId]:
        """The tables (of ``table.types``) to copy, sorted as JDBC's getTables: MySQL's of the
        URL's database (or ``catalog.pattern``), PostgreSQL's of every user schema (or
        ``schema.pattern``), SQLite's of its file."""

    @abstractmethod
    def describe_columns(self, conn: Any, table: TableId) -> dict[str, ColumnInfo]:
        """The table's columns in order; empty when the table does not exist."""

    # time
    @abstractmethod
    def current_time(self, conn: Any) -> datetime.datetime:
        """The database's clock, as an aware datetime."""

    def timestamp_param(self, instant: datetime.datetime) -> Any:
        """An instant as a query parameter: naive, in ``db.timezone`` (as Connect binds a
        Timestamp with the db.timezone calendar)."""
        return instant.astimezone(self.timezone).replace(tzinfo=None)

    def timestamp_expression(self, sql: str) -> str:
        """The (coalesced) timestamp columns as the criteria compare them."""
        return sql

    # queries
    def escape_query_text(self, sql: str) -> str:
        """A user's query text made safe for the driver's parameter syntax."""
        return sql

    def stream_cursor(self, conn: Any) -> Any:
        """A cursor that fetches rows as they are read rather than all at once."""
        return conn.cursor()

    def before_query(self, conn: Any, table: TableId | None) -> None:
        """Called before a table's result is first described: a dialect may look the table's
        columns up (a streaming result blocks the connection until it is read)."""

    @abstractmethod
    def result_columns(self, conn: Any, cursor: Any, table: TableId | None, base_sql: str) -> list[ResultColumn]:
        """The columns of ``cursor``'s result (just executed); ``base_sql`` is the query
        before the connector's WHERE clause."""

    # sink SQL
    def _placeholders(self, n: int) -> list[exp.Expression]:
        # A Var renders verbatim: the driver's own parameter marker, whatever the dialect.
        return [exp.var(self.placeholder) for _ in range(n)]

    def _insert(self, table: TableId, columns: Sequence[str]) -> exp.Insert:
        return exp.Insert(this=exp.Schema(this=self.table_expr(table),
                                          expressions=[exp.to_identifier(c, quoted=True) for c in columns]),
                          expression=exp.Values(expressions=[exp.Tuple(expressions=self._placeholders(len(columns)))]))

    def insert_sql(self, table: TableId, keys: Sequence[str], others: Sequence[str]) -> str:
        return self._insert(table, [*keys, *others]).sql(self.sqlglot_dialect)

    @abstractmethod
    def upsert_sql(self, table: TableId, keys: Sequence[str], others: Sequence[str]) -> str: ...

    def update_sql(self, table: TableId, keys: Sequence[str], others: Sequence[str]) -> str:
        sets = [exp.EQ(this=exp.column(c, quoted=True), expression=exp.var(self.placeholder)) for c in others]
        return exp.Update(this=self.table_expr(table), expressions=sets,
                          where=self._key_where(keys)).sql(self.sqlglot_dialect)

    def delete_sql(self, table: TableId, keys: Sequence[str]) -> str:
        return exp.Delete(this=self.table_expr(table), where=self._key_where(keys)).sql(self.sqlglot_dialect)

    def _key_where(self, keys: Sequence[str]) -> exp.Where:
        cond = exp.and_(*[exp.EQ(this=exp.column(k, quoted=True), expression=exp.var(self.placeholder))
                          for k in keys])
        return exp.Where(this=cond)

    def _column_def(self, col: SinkColumn) -> exp.ColumnDef:
        constraints = [exp.ColumnConstraint(kind=exp.NotNullColumnConstraint(allow_null=col.nullable))]
        if col.default is not None:
            constraints.append(exp.ColumnConstraint(kind=exp.DefaultColumnConstraint(this=_literal(col.default))))
        # The type is the dialect's own word (as Confluent's getSqlType): rendered verbatim.
        return exp.ColumnDef(this=exp.to_identifier(col.name, quoted=True),
                             kind=exp.DataType.build(col.sql_type, udt=True), constraints=constraints)

    def create_table_sql(self, table: TableId, columns: Sequence[SinkColumn], keys: Sequence[str]) -> str:
        items: list[exp.Expression] = [self._column_def(c) for c in columns]
        if keys:
            items.append(exp.PrimaryKey(expressions=[exp.to_identifier(k, quoted=True) for k in keys]))
        return exp.Create(kind="TABLE", this=exp.Schema(this=self.table_expr(table), expressions=items)) \
            .sql(self.sqlglot_dialect)

    def alter_table_sql(self, table: TableId, columns: Sequence[SinkColumn]) -> list[str]:
        return [exp.Alter(this=self.table_expr(table), kind="TABLE",
                          actions=[self._column_def(c) for c in columns]).sql(self.sqlglot_dialect)]

    @abstractmethod
    def sql_type(self, schema_type: str, logical: str | None, scale: int, is_key: bool) -> str:
        """The column type auto.create gives a Connect type (Confluent's getSqlType)."""


def _literal(value: Any) -> exp.Expression:
    if isinstance(value, bool):
        return exp.Literal.number(int(value))
    if isinstance(value, (int, float)):
        return exp.Literal.number(value)
    return exp.Literal.string(str(value))


def _zone(name: str) -> datetime.tzinfo:
    if not name or name.upper() in ("UTC", "Z", "GMT"):
        return UTC
    from zoneinfo import ZoneInfo

    try:
        return ZoneInfo(name)
    except Exception as exc:  # noqa: BLE001 - zoneinfo raises several kinds
        raise ConnectException(f"Invalid value {name} for configuration db.timezone: Invalid time zone identifier") from exc


def _split_qualified(text: str, quote: str) -> list[str]:
    """``a.b`` / ```a`.`b``` / ``"a"."b"`` -> parts, quotes removed."""
    parts, cur, inq, i = [], "", False, 0
    while i < len(text):
        ch = text[i]
        if ch == quote:
            if inq and i + 1 < len(text) and text[i + 1] == quote:
                cur += quote
                i += 2
                continue
            inq = not inq
        elif ch == "." and not inq:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
        i += 1
    parts.append(cur)
    return [p.strip() for p in parts]


# -- MySQL / MariaDB -----------------------------------------------------------------------

class MySqlDialect(DatabaseDialect):
    """MySQL and MariaDB, through mysqlclient (MySQLdb)."""

    name = "MySqlDatabaseDialect"
    sqlglot_dialect = "mysql"
    placeholder = "%s"

    # MySQLdb.constants.FIELD_TYPE and FLAG values (stable wire-protocol numbers).
    _KINDS = {0: "decimal", 246: "decimal", 1: "int8", 2: "int16", 3: "int32", 9: "int32", 8: "int64",
              4: "float32", 5: "float64", 7: "timestamp", 12: "timestamp", 10: "date", 14: "date",
              11: "time", 13: "year", 16: "bit", 15: "string", 253: "string", 254: "string", 247: "string",
              248: "string", 245: "string", 249: "blob", 250: "blob", 251: "blob", 252: "blob"}
    _NOT_NULL, _UNSIGNED, _BINARY = 1, 32, 128

    def __init__(self, url: JdbcUrl, user: str | None, password: str | None, db_timezone: str = "UTC") -> None:
        super().__init__(url, user, password, db_timezone)
        self._text_columns: dict[TableId, set[str]] = {}

    def connect(self) -> Any:
        import MySQLdb

        kwargs: dict[str, Any] = {"host": self.url.host or "localhost", "port": self.url.port or 3306,
                                  "charset": "utf8mb4", "connect_timeout": 10, "autocommit": False}
        if self.user:
            kwargs["user"] = self.user
        if self.password:
            kwargs["password"] = self.password
        if self.url.database:
            kwargs["database"] = self.url.database
        kwargs["conv"] = self._conversions()
        try:
            return MySQLdb.connect(**kwargs)
        except MySQLdb.Error as exc:
            raise connection_failure(self, exc) from exc

    def error_text(self, exc: BaseException) -> str:
        args = getattr(exc, "args", ())
        if len(args) == 2 and isinstance(args[0], int):
            return f"({args[0]}) {args[1]}"
        return super().error_text(exc)

    def _code(self, exc: BaseException) -> int | None:
        args = getattr(exc, "args", ())
        return args[0] if args and isinstance(args[0], int) else None

    def _conversions(self) -> dict[Any, Any]:
        """MySQLdb's converters, with DATETIME/TIMESTAMP/DATE handed over as their text (``str``:
        the driver's own C path, no call per value): the source's schema mapping parses a
        column at once (``schema._mysql_timestamps``), where MySQLdb's converters are Python
        code called per value, the largest cost of reading a table."""
        import MySQLdb.converters
        from MySQLdb.constants import FIELD_TYPE

        conv = dict(MySQLdb.converters.conversions)
        conv[FIELD_TYPE.DATETIME] = conv[FIELD_TYPE.TIMESTAMP] = conv[FIELD_TYPE.DATE] = str
        conv[14] = str  # NEWDATE
        return conv

    def before_query(self, conn: Any, table: TableId | None) -> None:
        # Result metadata flags text with a binary collation (utf8mb4_bin, MariaDB's JSON) as
        # BINARY too; the catalog's character set tells text (STRING) from bytes (BYTES).
        if table is None:
            return
        cur = conn.cursor()
        try:
            cur.execute("SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = COALESCE(%s, "
                        "DATABASE()) AND TABLE_NAME = %s AND CHARACTER_SET_NAME IS NOT NULL",
                        (table.catalog, table.table))
            self._text_columns[table] = {r[0] for r in cur.fetchall()}
        finally:
            cur.close()

    def is_auth_error(self, exc: BaseException) -> bool:
        # 1045 access denied, 1044 access to database denied, 1049 unknown database
        return self._code(exc) in (1044, 1045, 1049, 1698)

    def is_connection_error(self, exc: BaseException) -> bool:
        # 2002/2003 can't connect, 2006 gone away, 2013 lost during query, 2055 lost (ssl), 1927 killed
        return self._code(exc) in (2002, 2003, 2006, 2013, 2055, 1927, 4031)

    def is_missing_table(self, exc: BaseException) -> bool:
        return self._code(exc) == 1146

    def escape_query_text(self, sql: str) -> str:
        return sql.replace("%", "%%")  # MySQLdb formats the query with % when given parameters

    def stream_cursor(self, conn: Any) -> Any:
        import MySQLdb.cursors

        return conn.cursor(MySQLdb.cursors.SSCursor)

    def parse_table_id(self, text: str) -> TableId:
        parts = _split_qualified(text, "`")
        if len(parts) >= 2:
            return TableId(parts[-2], None, parts[-1])
        return TableId(self.url.database, None, parts[0])

    def list_tables(self, conn: Any, table_types: Sequence[str], catalog_pattern: str | None = None,
                    schema_pattern: str | None = None) -> list[TableId]:
        kinds = {"TABLE": "BASE TABLE", "VIEW": "VIEW"}
        wanted = [kinds.get(t.strip().upper(), t.strip().upper()) for t in table_types]
        cur = conn.cursor()
        try:
            cur.execute("SELECT TABLE_SCHEMA, TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE "
                        + ("TABLE_SCHEMA LIKE %s" if catalog_pattern else "TABLE_SCHEMA = DATABASE()")
                        + " ORDER BY TABLE_SCHEMA, TABLE_NAME", (catalog_pattern,) if catalog_pattern else None)
            rows = cur.fetchall()
        finally:
            cur.close()
        conn.commit()
        return [TableId(db, None, name) for db, name, kind in rows if kind in wanted]

    def describe_columns(self, conn: Any, table: TableId) -> dict[str, ColumnInfo]:
        cur = conn.cursor()
        try:
            cur.execute("SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, EXTRA, COLUMN_KEY FROM information_schema.COLUMNS "
                        "WHERE TABLE_SCHEMA = COALESCE(%s, DATABASE()) AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
                        (table.catalog, table.table))
            rows = cur.fetchall()
        finally:
            cur.close()
        conn.commit()
        return {name: ColumnInfo(name, str(ctype), nullable == "YES", "auto_increment" in (extra or "").lower(),
                                 key == "PRI") for name, ctype, nullable, extra, key in rows}

    def current_time(self, conn: Any) -> datetime.datetime:
        # Confluent's query: the server's CURRENT_TIMESTAMP (seconds), read in db.timezone.
        cur = conn.cursor()
        try:
            cur.execute("SELECT CURRENT_TIMESTAMP")
            (now,) = cur.fetchone()
        finally:
            cur.close()
        # DATETIME text (see _conversions), in db.timezone
        return datetime.datetime.fromisoformat(now).replace(tzinfo=self.timezone).astimezone(UTC)

    def result_columns(self, conn: Any, cursor: Any, table: TableId | None, base_sql: str) -> list[ResultColumn]:
        out = []
        text_columns = self._text_columns.get(table) if table is not None else None
        flags = cursor.description_flags or ()
        for i, (name, code, _display, length, _prec, scale, _null) in enumerate(cursor.description):
            f = flags[i] if i < len(flags) else 0
            kind = self._KINDS.get(code)
            unsigned = bool(f & self._UNSIGNED)
            if kind == "int8" and length == 1:
                kind = "bit"  # TINYINT(1) is BIT to Connector/J (tinyInt1isBit), as BOOLEAN
            elif kind == "bit" and (length or 1) > 1:
                kind = "bytes"
            elif kind in ("string", "blob"):
                if text_columns is not None and name in text_columns:
                    kind = "string"
                else:
                    kind = "bytes" if (f & self._BINARY) and code not in (247, 248, 245) else "string"
            out.append(ResultColumn(name, kind, not (f & self._NOT_NULL), length or 0, scale or 0, unsigned,
                                    str(code), "mysql"))
        return out

    def upsert_sql(self, table: TableId, keys: Sequence[str], others: Sequence[str]) -> str:
        ins = self._insert(table, [*keys, *others])
        updated = others or keys  # nothing but keys: a no-op update keeps the statement valid
        sets = [exp.EQ(this=exp.column(c, quoted=True),
                       expression=exp.Anonymous(this="VALUES", expressions=[exp.column(c, quoted=True)]))
                for c in updated]
        ins.set("conflict", exp.OnConflict(duplicate=True, action=exp.var("UPDATE"), expressions=sets))
        return ins.sql(self.sqlglot_dialect)

    def sql_type(self, schema_type: str, logical: str | None, scale: int, is_key: bool) -> str:
        if logical == "decimal":
            return f"DECIMAL(65,{scale})"
        if logical == "date":
            return "DATE"
        if logical == "time":
            return "TIME(3)"
        if logical == "timestamp":
            return "DATETIME(3)"
        return {"int8": "TINYINT", "int16": "SMALLINT", "int32": "INT", "int64": "BIGINT", "float": "FLOAT",
                "double": "DOUBLE", "boolean": "TINYINT",
                "string": "VARCHAR(256)" if is_key else "TEXT",
                "bytes": "VARBINARY(1024)" if is_key else "BLOB"}[schema_type]


# -- PostgreSQL ----------------------------------------------------------------------------

class PostgreSqlDialect(DatabaseDialect):
    """PostgreSQL, through psycopg 3."""

    name = "PostgreSqlDatabaseDialect"
    sqlglot_dialect = "postgres"
    placeholder = "%s"

    _KINDS = {16: "bool", 17: "bytes", 18: "string", 19: "string", 20: "int64", 21: "int16", 23: "int32",
              25: "string", 26: "int64", 114: "string", 700: "float32", 701: "float64", 1042: "string",
              1043: "string", 1082: "date", 1083: "time", 1266: "time", 1114: "timestamp", 1184: "timestamp",
              1700: "numeric", 2950: "string", 3802: "string", 1560: "bit", 1562: "bytes"}

    def connect(self) -> Any:
        import psycopg

        kwargs: dict[str, Any] = {"host": self.url.host or "localhost", "port": self.url.port or 5432,
                                  "connect_timeout": 10, "autocommit": False}
        if self.url.database:
            kwargs["dbname"] = self.url.database
        if self.user:
            kwargs["user"] = self.user
        if self.password:
            kwargs["password"] = self.password
        try:
            conn = psycopg.connect(**kwargs)
        except psycopg.Error as exc:
            raise connection_failure(self, exc) from exc
        # Naive timestamps (ours and timestamp columns) mean db.timezone's wall clock.
        conn.execute("SELECT set_config('TimeZone', %s, false)", (str(self.timezone) if self.timezone is not UTC else "UTC",))
        conn.commit()
        return conn

    def is_auth_error(self, exc: BaseException) -> bool:
        state = getattr(exc, "sqlstate", None)
        text = str(exc)
        return state in ("28P01", "28000", "3D000") or "password authentication failed" in text \
            or ("database" in text and "does not exist" in text)

    def is_connection_error(self, exc: BaseException) -> bool:
        import psycopg

        state = getattr(exc, "sqlstate", None) or ""
        return isinstance(exc, psycopg.OperationalError) and (state.startswith("08") or state.startswith("57P")
                                                             or not state)

    def is_missing_table(self, exc: BaseException) -> bool:
        return getattr(exc, "sqlstate", None) == "42P01"

    def escape_query_text(self, sql: str) -> str:
        return sql.replace("%", "%%")

    def stream_cursor(self, conn: Any) -> Any:
        # A server-side cursor: rows come as fetched, not all at once (pgJDBC's fetchSize).
        return conn.cursor(name=f"streamsql_jdbc_{id(conn):x}")

    def parse_table_id(self, text: str) -> TableId:
        parts = _split_qualified(text, '"')
        if len(parts) >= 3:
            return TableId(None, parts[-2], parts[-1])
        if len(parts) == 2:
            return TableId(None, parts[0], parts[1])
        return TableId(None, None, parts[0])

    def list_tables(self, conn: Any, table_types: Sequence[str], catalog_pattern: str | None = None,
                    schema_pattern: str | None = None) -> list[TableId]:
        kinds = {"TABLE": ("r", "p"), "VIEW": ("v",), "MATERIALIZED VIEW": ("m",)}
        wanted = sorted({k for t in table_types for k in kinds.get(t.strip().upper(), ())})
        rows = conn.execute(
            "SELECT n.nspname, c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
            "ON n.oid = c.relnamespace WHERE c.relkind = ANY(%s) AND n.nspname NOT IN ('pg_catalog', "
            "'information_schema') AND n.nspname NOT LIKE 'pg_toast%%' AND n.nspname NOT LIKE 'pg_temp%%' "
            "AND n.nspname LIKE %s ORDER BY n.nspname, c.relname", (wanted, schema_pattern or "%")).fetchall()
        conn.commit()
        return [TableId(None, schema, name) for schema, name in rows]

    def describe_columns(self, conn: Any, table: TableId) -> dict[str, ColumnInfo]:
        rows = conn.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull, "
            "COALESCE(pg_get_expr(d.adbin, d.adrelid) LIKE 'nextval(%%', false) OR a.attidentity <> '', "
            "EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary AND a.attnum = ANY(i.indkey)) "
            "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
            "WHERE c.relname = %s AND n.nspname = COALESCE(%s, current_schema()) AND a.attnum > 0 "
            "AND NOT a.attisdropped ORDER BY a.attnum", (table.table, table.schema)).fetchall()
        conn.commit()
        return {name: ColumnInfo(name, ctype, bool(nullable), bool(auto), bool(pk))
                for name, ctype, nullable, auto, pk in rows}

    def current_time(self, conn: Any) -> datetime.datetime:
        (now,) = conn.execute("SELECT CURRENT_TIMESTAMP").fetchone()
        conn.commit()  # CURRENT_TIMESTAMP is the transaction's start: end it
        return now

    def result_columns(self, conn: Any, cursor: Any, table: TableId | None, base_sql: str) -> list[ResultColumn]:
        res = cursor.pgresult
        # pgJDBC's isNullable looks up the base column's NOT NULL; so do we (expressions: nullable).
        origins = [(res.ftable(i), res.ftablecol(i)) for i in range(res.nfields)] if res is not None else []
        notnull: set[tuple[int, int]] = set()
        wanted = [o for o in origins if o[0]]
        if wanted:
            with conn.cursor() as cur:
                cur.execute("SELECT attrelid::int8, attnum::int8 FROM pg_attribute WHERE attnotnull AND "
                            "(attrelid::int8, attnum::int8) IN (SELECT * FROM unnest(%s::int8[], %s::int8[]))",
                            ([o[0] for o in wanted], [o[1] for o in wanted]))
                notnull = {(int(a), int(b)) for a, b in cur.fetchall()}
        out = []
        for i, col in enumerate(cursor.description):
            kind = self._KINDS.get(col.type_code)
            precision = col.precision or 0
            if col.type_code == 1560:
                precision = col.internal_size or 1
            if col.type_code == 1560 and precision > 1:
                kind = "bytes"
            nullable = not (i < len(origins) and origins[i] in notnull)
            out.append(ResultColumn(col.name, kind, nullable, precision, col.scale or 0, False,
                                    str(col.type_code), "postgresql"))
        return out

    def upsert_sql(self, table: TableId, keys: Sequence[str], others: Sequence[str]) -> str:
        ins = self._insert(table, [*keys, *others])
        excluded = exp.to_identifier("EXCLUDED", quoted=False)  # the pseudo-table: never quoted
        sets = [exp.EQ(this=exp.column(c, quoted=True),
                       expression=exp.Column(this=exp.to_identifier(c, quoted=True), table=excluded.copy()))
                for c in others]
        ins.set("conflict", exp.OnConflict(conflict_keys=[exp.to_identifier(k, quoted=True) for k in keys],
                                           action=exp.var("DO UPDATE" if sets else "DO NOTHING"),
                                           expressions=sets or None))
        return ins.sql(self.sqlglot_dialect)

    def sql_type(self, schema_type: str, logical: str | None, scale: int, is_key: bool) -> str:
        if logical == "decimal":
            return "DECIMAL"
        if logical in ("date", "time", "timestamp"):
            return logical.upper()
        return {"int8": "SMALLINT", "int16": "SMALLINT", "int32": "INT", "int64": "BIGINT", "float": "REAL",
                "double": "DOUBLE PRECISION", "boolean": "BOOLEAN", "string": "TEXT", "bytes": "BYTEA"}[schema_type]


# -- SQLite ------------------------------------------------------------------------------

class SqliteDialect(DatabaseDialect):
    """SQLite, through the standard library's sqlite3."""

    name = "SqliteDatabaseDialect"
    sqlglot_dialect = "sqlite"
    placeholder = "?"

    def connect(self) -> Any:
        path = self.url.path or ":memory:"
        try:
            # sqlite3's default transaction handling: a write opens a transaction (a sink's
            # batch is all or nothing), a read does not (each query sees the latest rows).
            # check_same_thread off: the worker may call a task from more than one thread
            # (never at once).
            conn = sqlite3.connect(path, check_same_thread=False, timeout=30)
            conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        except sqlite3.Error as exc:
            raise connection_failure(self, exc) from exc
        return _SqliteConnection(conn)

    def is_missing_table(self, exc: BaseException) -> bool:
        return "no such table" in str(exc)

    def is_connection_error(self, exc: BaseException) -> bool:
        return "unable to open database" in str(exc) or "database is locked" in str(exc)

    def parse_table_id(self, text: str) -> TableId:
        parts = _split_qualified(text, '"')
        return TableId(None, None, parts[-1])

    def list_tables(self, conn: Any, table_types: Sequence[str], catalog_pattern: str | None = None,
                    schema_pattern: str | None = None) -> list[TableId]:
        kinds = [t.strip().lower() for t in table_types]
        rows = conn.execute("SELECT name, type FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' "
                            "ORDER BY name").fetchall()
        return [TableId(None, None, name) for name, kind in rows if kind in kinds]

    def describe_columns(self, conn: Any, table: TableId) -> dict[str, ColumnInfo]:
        rows = conn.execute(f"PRAGMA table_info({self.quote(table.table)})").fetchall()
        pk_cols = [r for r in rows if r[5]]
        out = {}
        for _cid, name, ctype, notnull, _default, pk in rows:
            # INTEGER PRIMARY KEY is the rowid: SQLite assigns it (auto-increment to JDBC).
            auto = bool(pk) and len(pk_cols) == 1 and (ctype or "").upper() == "INTEGER"
            out[name] = ColumnInfo(name, ctype or "", not notnull and not auto, auto, bool(pk))
        return out

    def current_time(self, conn: Any) -> datetime.datetime:
        (now,) = conn.execute("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')").fetchone()
        return datetime.datetime.fromisoformat(now).replace(tzinfo=UTC)

    def timestamp_param(self, instant: datetime.datetime) -> Any:
        # SQLite compares timestamps stored as text as text: both sides in one format,
        # strftime's '%Y-%m-%d %H:%M:%f' (see timestamp_expression).
        local = instant.astimezone(self.timezone).replace(tzinfo=None)
        return local.strftime("%Y-%m-%d %H:%M:%S") + f".{local.microsecond // 1000:03d}"

    def timestamp_expression(self, sql: str) -> str:
        # '2024-01-01 00:00:00' and '2024-01-01 00:00:00.000' are one instant but not one text.
        return f"strftime('%Y-%m-%d %H:%M:%f', {sql})"

    def result_columns(self, conn: Any, cursor: Any, table: TableId | None, base_sql: str) -> list[ResultColumn]:
        declared = cursor.declared_types(table, base_sql)
        out = []
        for (name, *_rest), (decl, nullable) in zip(cursor.description, declared):
            kind, precision, scale = _sqlite_kind(decl)
            out.append(ResultColumn(name, kind, nullable, precision, scale, False, decl, "sqlite"))
        return out

    def upsert_sql(self, table: TableId, keys: Sequence[str], others: Sequence[str]) -> str:
        ins = self._insert(table, [*keys, *others])
        excluded = exp.to_identifier("excluded", quoted=False)
        sets = [exp.EQ(this=exp.column(c, quoted=True),
                       expression=exp.Column(this=exp.to_identifier(c, quoted=True), table=excluded.copy()))
                for c in others]
        ins.set("conflict", exp.OnConflict(conflict_keys=[exp.to_identifier(k, quoted=True) for k in keys],
                                           action=exp.var("DO UPDATE" if sets else "DO NOTHING"),
                                           expressions=sets or None))
        return ins.sql(self.sqlglot_dialect)

    def alter_table_sql(self, table: TableId, columns: Sequence[SinkColumn]) -> list[str]:
        # SQLite's ALTER TABLE adds one column per statement.
        return [exp.Alter(this=self.table_expr(table), kind="TABLE", actions=[self._column_def(c)])
                .sql(self.sqlglot_dialect) for c in columns]

    def sql_type(self, schema_type: str, logical: str | None, scale: int, is_key: bool) -> str:
        if logical in ("decimal", "date", "time", "timestamp"):
            return "NUMERIC"
        return {"int8": "INTEGER", "int16": "INTEGER", "int32": "INTEGER", "int64": "INTEGER", "float": "REAL",
                "double": "REAL", "boolean": "INTEGER", "string": "TEXT", "bytes": "BLOB"}[schema_type]


_SQLITE_TYPE = re.compile(r"^\s*([A-Za-z ]+?)\s*(?:\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\))?\s*$")


def _sqlite_kind(decl: str) -> tuple[str | None, int, int]:
    """A declared SQLite type as the xerial JDBC driver reports it to Confluent's mapping."""
    m = _SQLITE_TYPE.match(decl or "")
    name = (m.group(1) if m else (decl or "")).upper().strip()
    precision = int(m.group(2)) if m and m.group(2) else 0
    scale = int(m.group(3)) if m and m.group(3) else 0
    if not name:
        return "string", 0, 0
    if name == "BOOLEAN":
        return "bool", 0, 0
    if name == "TINYINT":
        return "int8", 0, 0
    if name in ("SMALLINT", "INT2"):
        return "int16", 0, 0
    if name in ("BIGINT", "INT8", "UNSIGNED BIG INT"):
        return "int64", 0, 0
    if name in ("DATE",):
        return "date", 0, 0
    if name in ("DATETIME", "TIMESTAMP"):
        return "timestamp", 0, 0
    if name == "TIME":
        return "time", 0, 0
    if "INT" in name:
        return "int32", 0, 0
    if name == "DECIMAL":
        return "decimal", precision, scale
    if name == "NUMERIC":
        return "numeric", precision, scale
    if name in ("REAL", "FLOAT"):
        return "float32" if name == "REAL" else "float64", 0, 0
    if "DOUB" in name:
        return "float64", 0, 0
    if "CHAR" in name or "CLOB" in name or "TEXT" in name:
        return "string", 0, 0
    if "BLOB" in name or "BINARY" in name:
        return "bytes", 0, 0
    return "string", 0, 0


class _SqliteConnection:
    """A sqlite3 connection with the small surface the connectors use of the others'
    (``cursor()``, ``commit()``, ``close()``, ``execute()``), plus declared column types."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.raw = conn

    def cursor(self, *_args: Any, **_kwargs: Any) -> "_SqliteCursor":
        return _SqliteCursor(self.raw)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self.raw.execute(sql, params)

    def commit(self) -> None:
        if self.raw.in_transaction:
            self.raw.commit()

    def rollback(self) -> None:
        if self.raw.in_transaction:
            self.raw.rollback()

    def close(self) -> None:
        self.raw.close()


class _SqliteCursor:
    """sqlite3's cursor, remembering its query to look up declared types (sqlite3's
    ``description`` has names only)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._cur = conn.cursor()
        self._sql = ""
        self._params: Sequence[Any] = ()

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> "_SqliteCursor":
        self._sql, self._params = sql, params or ()
        self._cur.execute(sql, self._params)
        return self

    def executemany(self, sql: str, seq: Sequence[Sequence[Any]]) -> "_SqliteCursor":
        self._cur.executemany(sql, seq)
        return self

    @property
    def description(self) -> Any:
        return self._cur.description

    @property
    def rowcount(self) -> int:
        return self._cur.rowcount

    def fetchmany(self, n: int) -> list[tuple]:
        return self._cur.fetchmany(n)

    def fetchall(self) -> list[tuple]:
        return self._cur.fetchall()

    def fetchone(self) -> tuple | None:
        return self._cur.fetchone()

    def close(self) -> None:
        self._cur.close()

    def declared_types(self, table: TableId | None, base_sql: str) -> list[tuple[str, bool]]:
        """(declared type, nullable) per result column: a table's from PRAGMA table_info, a
        query's from a temporary view over it (SQLite carries declared types through views)."""
        names = [d[0] for d in self._cur.description or ()]
        if table is not None:
            info = {r[1]: (r[2] or "", not r[3] and not r[5]) for r in
                    self._conn.execute(f'PRAGMA table_info("{table.table.replace(chr(34), chr(34) * 2)}")')}
            if all(n in info for n in names):
                return [info[n] for n in names]
        view = "streamsql_jdbc_describe"
        try:
            # A view cannot have parameters: the query before our WHERE declares the columns.
            self._conn.execute(f"DROP VIEW IF EXISTS temp.{view}")
            self._conn.execute(f"CREATE TEMP VIEW {view} AS {base_sql}")
            rows = self._conn.execute(f"PRAGMA temp.table_info({view})").fetchall()
            self._conn.execute(f"DROP VIEW IF EXISTS temp.{view}")
        except sqlite3.Error:
            rows = []
        if len(rows) == len(names):
            return [(r[2] or "", True) for r in rows]
        return [("", True) for _ in names]


# -- choosing a dialect ----------------------------------------------------------------------

DIALECTS: Mapping[str, type[DatabaseDialect]] = {
    "MySqlDatabaseDialect": MySqlDialect,
    "PostgreSqlDatabaseDialect": PostgreSqlDialect,
    "SqliteDatabaseDialect": SqliteDialect,
}
_BY_SUBPROTOCOL = {"mysql": MySqlDialect, "mariadb": MySqlDialect, "postgresql": PostgreSqlDialect,
                   "sqlite": SqliteDialect}


@dataclass(frozen=True)
class ConnectionConfig:
    """The connection keys shared by the source and the sink."""

    url: str
    user: str | None = None
    password: str | None = None
    dialect_name: str | None = None
    db_timezone: str = "UTC"
    attempts: int = 3
    backoff_ms: int = 10000


def dialect_for(config: ConnectionConfig) -> DatabaseDialect:
    """The dialect of ``dialect.name`` if set, else of the URL's subprotocol."""
    url = parse_url(config.url)
    if config.dialect_name:
        cls = DIALECTS.get(config.dialect_name)
        if cls is None:
            raise ConnectException(f"Invalid value {config.dialect_name} for configuration dialect.name: "
                                   f"must be one of {', '.join(DIALECTS)}")
    else:
        cls = _BY_SUBPROTOCOL[url.subprotocol]
    return cls(url, config.user, config.password, config.db_timezone)


class CachedConnection:
    """One connection kept open and reopened when lost (Confluent's CachedConnectionProvider):
    ``connection.attempts`` tries ``connection.backoff.ms`` apart, cut short by ``stopping``."""

    def __init__(self, dialect: DatabaseDialect, attempts: int = 3, backoff_ms: int = 10000,
                 stopping: Any = None) -> None:
        self.dialect = dialect
        self.attempts = max(1, attempts)
        self.backoff_s = max(0, backoff_ms) / 1000
        self.stopping = stopping  # a threading.Event, or None
        self._conn: Any = None

    def get(self) -> Any:
        if self._conn is not None:
            return self._conn
        for attempt in range(1, self.attempts + 1):
            try:
                self._conn = self.dialect.connect()
                return self._conn
            except AuthenticationError:
                raise
            except ConnectException as exc:
                if attempt == self.attempts:
                    raise
                log.info("Unable to connect to database on attempt %d/%d. Will retry in %d ms: %s",
                         attempt, self.attempts, int(self.backoff_s * 1000), exc)
                if self.stopping is not None and self.stopping.wait(self.backoff_s):
                    raise
                if self.stopping is None:
                    import time

                    time.sleep(self.backoff_s)
        raise AssertionError("unreachable")

    def rollback(self) -> None:
        """Rolls the open transaction back; a connection that cannot is dropped."""
        if self._conn is None:
            return
        try:
            self._conn.rollback()
        except Exception:  # noqa: BLE001 - the connection is gone
            self.invalidate()

    def invalidate(self) -> None:
        """Closes the connection (it failed, or we stop); the next ``get`` opens a new one."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - a broken connection may fail to close
                log.debug("closing a JDBC connection failed", exc_info=True)

    close = invalidate

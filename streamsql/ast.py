"""Statement AST: frozen dataclasses produced by the parser, one per kind of statement.

Every statement carries ``text``, the statement's own SQL as written (without the trailing
semicolon): it is what the command log stores, what EXPLAIN and SHOW QUERIES print, and what
error responses quote.

Identifiers follow ksqlDB's case rules: unquoted names are upper-cased by the parser, quoted
ones (backticks or double quotes) are kept verbatim. Property names in WITH clauses are
upper-cased; their values are Python values (str, int, float, Decimal, bool).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from streamsql.expressions import Expression
from streamsql.types import SqlType


@dataclass(frozen=True)
class Properties:
    """WITH (...) properties: upper-cased names to literal values, in the order written."""

    items: tuple[tuple[str, Any], ...] = ()

    def get(self, name: str, default: Any = None) -> Any:
        name = name.upper()
        for key, value in self.items:
            if key == name:
                return value
        return default

    def __contains__(self, name: str) -> bool:
        name = name.upper()
        return any(key == name for key, _ in self.items)

    def names(self) -> list[str]:
        return [key for key, _ in self.items]


@dataclass(frozen=True)
class Statement:
    """Base of statements. ``text`` is set by the parser; equality ignores it."""

    text: str = field(default="", compare=False, kw_only=True)


# ------------------------------------------------------------------------------- sources
@dataclass(frozen=True)
class TableElement:
    """A column in CREATE STREAM/TABLE.

    ``constraint`` is None for a value column, 'KEY' (stream key), 'PRIMARY KEY' (table key),
    or 'HEADERS' / 'HEADER' (with ``header_key``) for header-backed columns.
    """

    name: str
    type: SqlType
    constraint: str | None = None
    header_key: str | None = None


@dataclass(frozen=True)
class CreateSource(Statement):
    """CREATE [OR REPLACE] [SOURCE] STREAM|TABLE [IF NOT EXISTS] name (elements) WITH (...)."""

    kind: str  # 'STREAM' or 'TABLE'
    name: str
    elements: tuple[TableElement, ...]
    properties: Properties
    or_replace: bool = False
    if_not_exists: bool = False
    is_source: bool = False  # CREATE SOURCE STREAM/TABLE: read-only, materialized for pull


# ---------------------------------------------------------------------------------- queries
@dataclass(frozen=True)
class SelectItem:
    """Base of select list items."""


@dataclass(frozen=True)
class SingleColumn(SelectItem):
    """``expression [AS alias]``; alias None when not written."""

    expression: Expression
    alias: str | None = None


@dataclass(frozen=True)
class AllColumns(SelectItem):
    """``*`` or ``source.*``."""

    source: str | None = None


@dataclass(frozen=True)
class StructAllFields(SelectItem):
    """``struct_expression->*``: every field of a struct, each as its own column."""

    expression: Expression


@dataclass(frozen=True)
class Relation:
    """Base of FROM-clause relations."""


@dataclass(frozen=True)
class AliasedRelation(Relation):
    """A named stream or table, with an optional alias (upper-cased unless quoted)."""

    name: str
    alias: str | None = None


@dataclass(frozen=True)
class WithinExpression:
    """WITHIN for stream-stream joins, all in milliseconds. ``WITHIN 10 SECONDS`` sets both
    ``before`` and ``after`` to 10000; ``WITHIN (1 SECOND, 2 SECONDS)`` sets them apart."""

    before: int
    after: int
    grace: int | None = None


@dataclass(frozen=True)
class JoinClause:
    """One ``[INNER|LEFT [OUTER]|RIGHT [OUTER]|FULL [OUTER]] JOIN right [WITHIN ...] ON cond``."""

    join_type: str  # 'INNER', 'LEFT', 'RIGHT', 'FULL'
    right: AliasedRelation
    criteria: Expression
    within: WithinExpression | None = None


@dataclass(frozen=True)
class Join(Relation):
    """A left relation joined with one or more right relations in order (n-way joins)."""

    left: AliasedRelation
    joins: tuple[JoinClause, ...]


@dataclass(frozen=True)
class WindowExpression:
    """WINDOW TUMBLING|HOPPING|SESSION (...); durations in milliseconds.

    TUMBLING: ``size``. HOPPING: ``size`` and ``advance``. SESSION: ``size`` is the gap.
    """

    kind: str  # 'TUMBLING', 'HOPPING', 'SESSION'
    size: int
    advance: int | None = None
    retention: int | None = None
    grace: int | None = None


@dataclass(frozen=True)
class Query:
    """A SELECT. ``emit`` is 'CHANGES', 'FINAL' or None (a pull query when not persistent)."""

    select: tuple[SelectItem, ...]
    from_: Relation
    where: Expression | None = None
    window: WindowExpression | None = None
    group_by: tuple[Expression, ...] = ()
    partition_by: tuple[Expression, ...] = ()
    having: Expression | None = None
    emit: str | None = None
    limit: int | None = None


@dataclass(frozen=True)
class QueryStatement(Statement):
    """A bare SELECT statement: a push query (EMIT CHANGES) or a pull query."""

    query: Query


@dataclass(frozen=True)
class CreateAsSelect(Statement):
    """CREATE [OR REPLACE] STREAM|TABLE [IF NOT EXISTS] name [WITH (...)] AS SELECT ..."""

    kind: str  # 'STREAM' or 'TABLE'
    name: str
    query: Query
    properties: Properties
    or_replace: bool = False
    if_not_exists: bool = False


@dataclass(frozen=True)
class InsertInto(Statement):
    """INSERT INTO target [WITH (...)] SELECT ...

    ``target_location``: (line, column) of the target name in the parsed script, for
    ksqlDB's ``Line: L, Col: C:`` messages; not part of equality.
    """

    target: str
    query: Query
    properties: Properties = Properties()
    target_location: tuple[int, int] | None = field(default=None, compare=False, repr=False, kw_only=True)


@dataclass(frozen=True)
class InsertValues(Statement):
    """INSERT INTO target [(columns)] VALUES (values); ``columns`` empty means all, in order."""

    target: str
    columns: tuple[str, ...]
    values: tuple[Expression, ...]


# -------------------------------------------------------------------------- catalog changes
@dataclass(frozen=True)
class DropSource(Statement):
    """DROP STREAM|TABLE [IF EXISTS] name [DELETE TOPIC]."""

    kind: str
    name: str
    if_exists: bool = False
    delete_topic: bool = False


@dataclass(frozen=True)
class CreateType(Statement):
    """CREATE TYPE [IF NOT EXISTS] name AS type."""

    name: str
    type: SqlType
    if_not_exists: bool = False


@dataclass(frozen=True)
class DropType(Statement):
    """DROP TYPE [IF EXISTS] name."""

    name: str
    if_exists: bool = False


@dataclass(frozen=True)
class AlterSource(Statement):
    """ALTER STREAM|TABLE name ADD COLUMN name type [, ADD COLUMN ...]."""

    kind: str  # 'STREAM' or 'TABLE'
    name: str
    columns: tuple[TableElement, ...]


@dataclass(frozen=True)
class AlterSystem(Statement):
    """ALTER SYSTEM 'name'='value': a property of the whole cluster."""

    name: str
    value: str


@dataclass(frozen=True)
class AssertTopic(Statement):
    """ASSERT [NOT EXISTS] TOPIC name [WITH (...)] [TIMEOUT n unit]; ``timeout_ms`` None
    takes ``ksql.assert.topic.default.timeout.ms``."""

    topic: str
    properties: Properties = field(default_factory=Properties)
    timeout_ms: int | None = None
    exists: bool = True


@dataclass(frozen=True)
class AssertSchema(Statement):
    """ASSERT [NOT EXISTS] SCHEMA [SUBJECT name] [ID n] [TIMEOUT n unit]; at least one of
    subject and id (checked by the parser)."""

    subject: str | None
    schema_id: int | None
    timeout_ms: int | None = None
    exists: bool = True


@dataclass(frozen=True)
class TerminateQuery(Statement):
    """TERMINATE query_id, or TERMINATE ALL (``query_id`` None)."""

    query_id: str | None


# ----------------------------------------------------------------------- session and info
@dataclass(frozen=True)
class SetProperty(Statement):
    """SET 'name'='value'."""

    name: str
    value: str


@dataclass(frozen=True)
class UnsetProperty(Statement):
    """UNSET 'name'."""

    name: str


@dataclass(frozen=True)
class DefineVariable(Statement):
    """DEFINE name = 'value'."""

    name: str
    value: str


@dataclass(frozen=True)
class UndefineVariable(Statement):
    """UNDEFINE name."""

    name: str


@dataclass(frozen=True)
class ShowStatement(Statement):
    """SHOW|LIST STREAMS|TABLES|QUERIES|TOPICS|FUNCTIONS|PROPERTIES|TYPES|VARIABLES [EXTENDED].

    ``what`` is the upper-cased plural noun; ALL TOPICS sets ``all``.
    """

    what: str
    extended: bool = False
    all: bool = False


@dataclass(frozen=True)
class DescribeSource(Statement):
    """DESCRIBE name [EXTENDED]."""

    name: str
    extended: bool = False


@dataclass(frozen=True)
class DescribeSources(Statement):
    """DESCRIBE STREAMS|TABLES [EXTENDED]."""

    what: str
    extended: bool = False


@dataclass(frozen=True)
class DescribeFunction(Statement):
    """DESCRIBE FUNCTION name."""

    name: str


@dataclass(frozen=True)
class Explain(Statement):
    """EXPLAIN query_id, or EXPLAIN <statement> (``statement`` set, ``query_id`` None)."""

    query_id: str | None = None
    statement: Statement | None = None


@dataclass(frozen=True)
class PrintTopic(Statement):
    """PRINT topic [FROM BEGINNING] [INTERVAL n] [LIMIT n]; the topic name as written
    (quoted names keep case, unquoted identifiers are upper-cased as everywhere)."""

    topic: str
    from_beginning: bool = False
    interval: int | None = None
    limit: int | None = None


@dataclass(frozen=True)
class RunScript(Statement):
    """RUN SCRIPT 'path' (a shell command: the shell reads the file and runs its statements)."""

    path: str


@dataclass(frozen=True)
class PauseResumeQuery(Statement):
    """PAUSE|RESUME query_id|ALL."""

    action: str  # 'PAUSE' or 'RESUME'
    query_id: str | None


# ------------------------------------------------------------------------------ connectors
@dataclass(frozen=True)
class CreateConnector(Statement):
    """CREATE SOURCE|SINK CONNECTOR [IF NOT EXISTS] name WITH (...): ``config`` holds
    Kafka Connect's keys as written and the values as text."""

    name: str
    kind: str  # 'SOURCE' or 'SINK'
    config: tuple[tuple[str, str], ...]
    if_not_exists: bool = False


@dataclass(frozen=True)
class DropConnector(Statement):
    """DROP CONNECTOR [IF EXISTS] name."""

    name: str
    if_exists: bool = False


@dataclass(frozen=True)
class ListConnectors(Statement):
    """SHOW|LIST [SOURCE|SINK] CONNECTORS; ``kind`` None lists both."""

    kind: str | None = None


@dataclass(frozen=True)
class ListConnectorPlugins(Statement):
    """SHOW|LIST CONNECTOR PLUGINS."""


@dataclass(frozen=True)
class DescribeConnector(Statement):
    """DESCRIBE CONNECTOR name."""

    name: str

"""DDL: CREATE STREAM/TABLE over a topic, DROP STREAM/TABLE, ALTER STREAM/TABLE, CREATE TYPE,
DROP TYPE and ALTER SYSTEM.

Each handler validates the statement, appends it to the command log
(``Engine.record_command``) and only then changes the catalog, so a statement that fails
changes nothing and one that succeeds is replayed the same way at the next start (ksqlDB's
``DdlCommandExec``). CREATE ... AS SELECT is in ``streamsql.exec.persistent``: it starts a query.
"""
from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from streamsql import ast
from streamsql.analyzer import analyze_create_source, resolve_type
from streamsql.errors import KsqlException, KsqlStatementException
from streamsql.results import Result
from streamsql.schema import RESERVED_COLUMN_NAMES, Column, LogicalSchema
from streamsql.schemaregistry.ksql import register_source_schemas

# The properties no client may set (ksqlDB's DenyListPropertyValidator), nor ALTER SYSTEM.
OVERRIDES_DENYLIST = "ksql.properties.overrides.denylist"

if TYPE_CHECKING:  # pragma: no cover - imports only for type hints
    from streamsql.catalog import DataSource
    from streamsql.engine import Engine, Session


def check_existing(engine: Engine, stmt: ast.CreateSource | ast.CreateAsSelect
                   ) -> tuple[DataSource | None, Result | None]:
    """The source a CREATE names if it exists, and the answer when that ends the statement
    (IF NOT EXISTS); a name taken without OR REPLACE is refused, as ksqlDB does."""
    existing = engine.catalog.source(stmt.name)
    if existing is None:
        return None, None
    if stmt.if_not_exists:
        return existing, Result(stmt.text, "currentStatus", f"{stmt.kind.title()} {stmt.name} already exists")
    if not stmt.or_replace:
        kind = "table" if existing.is_table else "stream"
        raise KsqlStatementException(
            f"Cannot add {stmt.kind.lower()} '{stmt.name}': A {kind} with the same name already exists")
    return existing, None


async def create_source(engine: Engine, stmt: ast.CreateSource, props: dict[str, Any],
                        session: Session, seq: int | None) -> Result:
    existing, answer = check_existing(engine, stmt)
    if answer is not None:
        return answer
    if existing is not None:
        if existing.is_source:
            raise KsqlStatementException(
                f"Cannot add {stmt.kind.lower()} '{stmt.name}': CREATE OR REPLACE is not supported on "
                f"source {existing.kind.lower()}s.")
    source = analyze_create_source(stmt, engine.catalog, props, schema_registry=engine.schema_registry)
    partitions = await engine.ensure_topic(source.topic, source.partitions, source.replicas,
                                           must_exist=True, config=topic_config(stmt.properties))
    register_source_schemas(source, engine.schema_registry, is_sink=False)
    source = replace(source, partitions=partitions)
    query_id = None
    if source.is_table and source.is_source and source.window is None:
        from streamsql.exec.persistent import source_table_query_id

        query_id = source_table_query_id(source.name, engine.next_seq(seq))
    await engine.record_command(stmt, props, seq)
    engine.catalog.sources[source.name] = source
    if query_id is not None:
        # A source table is materialized, so pull queries can read it (ksqlDB 0.22+).
        from streamsql.exec.persistent import materialize_source_table

        materialize_source_table(engine, source, query_id, props)
    return Result(stmt.text, "currentStatus",
                  f"{'Stream' if stmt.kind == 'STREAM' else 'Table'} created")


async def drop_source(engine: Engine, stmt: ast.DropSource, props: dict[str, Any],
                      session: Session, seq: int | None) -> Result:
    source = engine.catalog.source(stmt.name)
    if source is None:
        if stmt.if_exists:
            return Result(stmt.text, "currentStatus", f"Source `{stmt.name}` does not exist.")
        raise KsqlStatementException(f"Source {stmt.name} does not exist.")
    if source.is_table != (stmt.kind == "TABLE"):
        actual = "table" if source.is_table else "stream"
        raise KsqlStatementException(
            f"Incompatible data source type is {actual.upper()}, but statement was DROP {stmt.kind}")
    if source.is_source and stmt.delete_topic:
        raise KsqlStatementException(f"Cannot delete topic for read-only source: {stmt.name}")
    readers = [q.query_id for q in engine.catalog.queries_reading(stmt.name)]
    writers = [q.query_id for q in engine.catalog.queries_writing(stmt.name)]
    if readers or writers:
        raise KsqlStatementException(
            f"Cannot drop {stmt.name}.\nThe following queries read from this source: "
            f"[{', '.join(readers)}].\nThe following queries write into this source: "
            f"[{', '.join(writers)}].\nYou need to terminate them before dropping {stmt.name}.")
    await engine.record_command(stmt, props, seq)
    del engine.catalog.sources[stmt.name]
    if source.is_source and source.is_table:
        from streamsql.exec.persistent import stop_source_table

        await stop_source_table(engine, source.name)
    if stmt.delete_topic and not any(s.topic == source.topic for s in engine.catalog.sources.values()):
        await engine.log.delete_topic(source.topic)
    return Result(stmt.text, "currentStatus", f"Source `{stmt.name}` (topic: {source.topic}) was dropped.")


async def create_type(engine: Engine, stmt: ast.CreateType, props: dict[str, Any],
                      session: Session, seq: int | None) -> Result:
    if stmt.name in engine.catalog.types:
        if stmt.if_not_exists:
            return Result(stmt.text, "currentStatus", f"Type {stmt.name} already exists")
        raise KsqlStatementException(
            f"Cannot register custom type '{stmt.name}' since it is already registered with type: "
            f"{engine.catalog.types[stmt.name]}")
    resolved = resolve_type(stmt.type, engine.catalog)
    await engine.record_command(stmt, props, seq)
    engine.catalog.types[stmt.name] = resolved
    return Result(stmt.text, "currentStatus", f"Registered custom type with name '{stmt.name}' and SQL type {resolved}")


async def drop_type(engine: Engine, stmt: ast.DropType, props: dict[str, Any],
                    session: Session, seq: int | None) -> Result:
    if stmt.name not in engine.catalog.types:
        if stmt.if_exists:
            return Result(stmt.text, "currentStatus", f"Type {stmt.name} does not exist")
        raise KsqlStatementException(f"Type {stmt.name} does not exist.")
    await engine.record_command(stmt, props, seq)
    del engine.catalog.types[stmt.name]
    return Result(stmt.text, "currentStatus", f"Dropped type '{stmt.name}'")


async def alter_source(engine: Engine, stmt: ast.AlterSource, props: dict[str, Any],
                       session: Session, seq: int | None) -> Result:
    """ALTER STREAM|TABLE ... ADD COLUMN: new value columns at the end of the value schema
    (ksqlDB's ``AlterSourceFactory`` and ``DdlCommandExec.executeAlterSource``). Running
    queries keep the schema they were built with; later statements see the new columns."""
    kind = stmt.kind.lower()
    source = engine.catalog.source(stmt.name)
    if source is not None and source.is_source:
        raise KsqlStatementException(
            f"Cannot alter {kind} '{stmt.name}': ALTER operations are not supported on source {kind}s.")
    if source is None:
        raise KsqlStatementException(f"Source {stmt.name} does not exist.")
    if source.kind != stmt.kind:
        raise KsqlStatementException(
            f"Incompatible data source type is {source.kind}, but statement was ALTER {stmt.kind}")
    if source.cas_target:
        raise KsqlStatementException("ALTER command is not supported for CREATE ... AS statements.")
    added: list[Column] = []
    for el in stmt.columns:
        if source.schema.find(el.name) is not None or any(c.name == el.name for c in added):
            raise KsqlStatementException(
                f"Cannot add column `{el.name}` to schema. A column with the same name already exists.")
        if el.name in RESERVED_COLUMN_NAMES:
            raise KsqlStatementException(
                f"'{el.name}' is a reserved column name. You cannot use it as a name for a column.")
        added.append(Column(el.name, resolve_type(el.type, engine.catalog), "VALUE"))
    schema = LogicalSchema(source.schema.key, source.schema.value + tuple(added))
    await engine.record_command(stmt, props, seq)
    # As ksqlDB's ``KsqlStream.with``: the source's statement text keeps the ALTER too.
    engine.catalog.sources[source.name] = replace(source, schema=schema, sql=f"{source.sql}\n{stmt.text}")
    return Result(stmt.text, "currentStatus", f"Source {stmt.name} has been altered.")


async def alter_system(engine: Engine, stmt: ast.AlterSystem, props: dict[str, Any],
                       session: Session, seq: int | None) -> Result:
    """ALTER SYSTEM 'name'='value': set a property for the whole cluster (ksqlDB's
    ``AlterSystemProperty``). It goes through the command log, so every node applies it and a
    restart keeps it; statements after it see the value unless a session overrides it. The
    properties no client may override (``ksql.properties.overrides.denylist``) are refused."""
    denied = {p.strip() for p in str(engine.config.get(OVERRIDES_DENYLIST) or "").split(",") if p.strip()}
    if stmt.name in denied or stmt.name == OVERRIDES_DENYLIST:
        raise KsqlStatementException(f"Cannot override property '{stmt.name}'")
    await engine.record_command(stmt, props, seq)
    engine.config[stmt.name] = stmt.value
    return Result(stmt.text, "currentStatus", f"System property {stmt.name} was set to {stmt.value}.")


def topic_config(properties: ast.Properties) -> dict[str, str] | None:
    """The config of a topic a statement creates: ksqlDB's ``RETENTION_MS`` as the topic's
    ``retention.ms`` (the log deletes older records), else the log's defaults. Also the
    config of a CREATE ... AS SELECT's sink topic (``streamsql.exec.persistent``)."""
    retention = properties.get("RETENTION_MS")
    if retention is None:
        return None
    try:
        millis = int(retention)
    except (TypeError, ValueError):
        raise KsqlException(f"Invalid value {retention} for property RETENTION_MS: "
                            "Not a number of type BIGINT") from None
    return {"retention.ms": str(millis)}

"""SHOW/LIST, DESCRIBE, EXPLAIN and PRINT: statements that read what the engine knows and
change nothing (none goes to the command log).

The handlers are thin: ``streamsql.describe`` builds the results in ksqlDB's shapes. What
they add is what only a running engine knows, such as where DESCRIBE EXTENDED's queries run
(``Engine.query_runtime``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from streamsql import ast, describe
from streamsql.results import Result

if TYPE_CHECKING:  # pragma: no cover - imports only for type hints
    from streamsql.engine import Engine, Session


async def show(engine: Engine, stmt: ast.ShowStatement, props: dict[str, Any],
               session: Session, seq: int | None) -> Result:
    return await describe.show(engine, stmt, props, session)


async def describe_source(engine: Engine, stmt: ast.DescribeSource, props: dict[str, Any],
                          session: Session, seq: int | None) -> Result:
    runtime = None
    if stmt.extended:
        source = engine.catalog.source(stmt.name)
        if source is not None:
            ids = [q.query_id for q in engine.catalog.queries_reading(source.name)]
            ids += [q.query_id for q in engine.catalog.queries_writing(source.name)
                    if q.query_id not in ids]
            runtime = [r for r in [await engine.query_runtime(q) for q in ids] if r]
    return await describe.describe_source(engine, stmt, runtime)


async def describe_sources(engine: Engine, stmt: ast.DescribeSources, props: dict[str, Any],
                           session: Session, seq: int | None) -> Result:
    return await describe.describe_sources(engine, stmt)


async def describe_function(engine: Engine, stmt: ast.DescribeFunction, props: dict[str, Any],
                            session: Session, seq: int | None) -> Result:
    return describe.describe_function(engine, stmt)


async def explain(engine: Engine, stmt: ast.Explain, props: dict[str, Any],
                  session: Session, seq: int | None) -> Result:
    return describe.explain(engine, stmt, props)


async def print_topic(engine: Engine, stmt: ast.PrintTopic, props: dict[str, Any],
                      session: Session, seq: int | None) -> Result:
    return await describe.print_topic(engine, stmt, props)

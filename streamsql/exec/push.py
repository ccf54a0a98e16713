"""Transient queries: a SELECT statement is a pull query (answered once from a table's state,
``streamsql.exec.pull``) unless it says EMIT CHANGES, which makes it a push query: rows
stream to the client as records arrive, from the start of the source's topic or its end
(``auto.offset.reset``), until its LIMIT or until the client goes. Push queries keep no
state: joins and aggregations are refused (create them with CREATE ... AS SELECT and query
the result).
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, AsyncIterator

from streamsql import ast
from streamsql.analyzer import AggregatePlan, QueryPlan
from streamsql.errors import KsqlStatementException
from streamsql.exec.pull import pull_query
from streamsql.join_analyzer import JoinPlan
from streamsql.results import Result
from streamsql.runtime.pipeline import Outputs, build_pipeline

if TYPE_CHECKING:  # pragma: no cover - imports only for type hints
    from streamsql.engine import Engine, Session


async def query_statement(engine: Engine, stmt: ast.QueryStatement, props: dict[str, Any],
                          session: Session, seq: int | None) -> Result:
    query = stmt.query
    plan = engine.analyzer(props).analyze(query, None, persistent=False)
    columns = tuple(c.name for c in plan.key) + tuple(c.name for c in plan.value)
    if query.emit is None:
        rows, _ = pull_query(engine, plan, query.limit)
        return Result(stmt.text, "rows", columns=columns, rows=rows)
    if isinstance(plan, JoinPlan):
        raise KsqlStatementException(
            "Push queries with JOIN are not supported yet: create the join with "
            "CREATE STREAM/TABLE ... AS SELECT and query it.")
    if isinstance(plan, AggregatePlan):
        raise KsqlStatementException(
            "Push queries with GROUP BY are not supported yet: create the table with "
            "CREATE TABLE ... AS SELECT and query it.")
    # The engine's default is 'earliest' (a session may SET 'auto.offset.reset'='latest').
    reset = str(props.get("auto.offset.reset", "earliest"))
    return Result(stmt.text, "stream", columns=columns,
                  stream=_push_query(engine, plan, reset, query.limit))


async def _push_query(engine: Engine, plan: QueryPlan, reset: str, limit: int | None) -> AsyncIterator[tuple]:
    pipeline = build_pipeline(plan, engine.registry, engine.codec(plan.source, "key"),
                              engine.codec(plan.source, "value"), None, None,
                              engine._processing_logger("transient"), rows=True,
                              timestamp_parser=engine._timestamp_parser(plan.source))
    topic = plan.source.topic
    if reset == "earliest":
        positions = await engine.log.begin_offsets(topic)
    else:
        positions = await engine.log.end_offsets(topic)
    out = Outputs()
    emitted = 0
    while True:
        got = False
        for p, off in enumerate(positions):
            batch = await engine.log.fetch(topic, p, off, 1000)
            if not len(batch):
                continue
            got = True
            positions[p] = batch.offsets[-1] + 1
            out.clear()
            pipeline.process(batch, out)
            for row in out.rows:
                yield row
                emitted += 1
                if limit is not None and emitted >= limit:
                    return
        if not got:
            await asyncio.sleep(0.1)

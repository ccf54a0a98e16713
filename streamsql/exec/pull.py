"""Pull queries: a SELECT without EMIT CHANGES, answered once from a table's materialized
state (the store of the query that builds the table, ``Engine.materializing``).

A WHERE that pins the key (``key = literal``) reads one row, or one key's windows, instead of
scanning; the rows go through the plan's generated pipeline (cached per plan) in chunks, so
nothing holds the whole table and LIMIT stops the read. On a cluster each node answers from
its own tasks' partitions (``pull``), or from its standby copies, and says which partitions
it lacks; ``streamsql.server.cluster`` routes a key lookup to the node holding its partition
(``pull_partition``). ``streamsql.exec.push`` decides between a pull and a push query.
"""
from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from streamsql import ast
from streamsql import expressions as e
from streamsql.analyzer import AggregatePlan, QueryPlan
from streamsql.catalog import DataSource
from streamsql.errors import KsqlStatementException
from streamsql.results import Result
from streamsql.runtime.log.base import RecordBatch, murmur2
from streamsql.runtime.pipeline import Outputs, build_pipeline
from streamsql.runtime.query import table_row, table_rows
from streamsql.types import BaseType

if TYPE_CHECKING:  # pragma: no cover - imports only for type hints
    from streamsql.engine import Engine, Session


async def pull(engine: Engine, stmt: ast.QueryStatement, session: Session, partitions: set[int],
               standby_lag: int | None = None) -> tuple[Result, set[int]]:
    """A pull query answered from this node's tasks of ``partitions`` only (in a cluster,
    the partitions the consumer group gives this node: see ``streamsql.server.cluster``),
    and which of them have no task open here (moved, or not restored yet). With
    ``standby_lag``, from this node's standby copies of those partitions instead, those
    within ``standby_lag`` changelog records of their active task's."""
    props = {**engine.config, **session.properties}
    try:
        plan = engine.analyzer(props).analyze(stmt.query, None, persistent=False)
        columns = tuple(c.name for c in plan.key) + tuple(c.name for c in plan.value)
        store = None
        if standby_lag is not None:
            store = await _standby_view(engine, plan.source, partitions, standby_lag)
        rows, missing = pull_query(engine, plan, stmt.query.limit, partitions, store)
    except KsqlStatementException as exc:
        if not exc.statement:
            exc.statement = stmt.text
        raise
    return Result(stmt.text, "rows", columns=columns, rows=rows), missing


async def _standby_view(engine: Engine, source: DataSource, partitions: set[int], max_lag: int) -> Any:
    """The rows of table ``source`` that this node's standby tasks of ``partitions`` keep,
    of those within ``max_lag`` records of their changelogs' ends (ksqlDB's
    ``ksql.query.pull.max.allowed.offset.lag``), as a store pull queries read."""
    query_id = engine.materializing(source.name)
    if query_id is None:
        return None
    runners = engine.runners.get(query_id) or []
    standby = getattr(runners[-1].tasks, "standby", None) if runners else None
    view = engine.queries[query_id].materialized.detached()
    if standby is not None:
        lags = await standby.lags()
        view.tasks = {p: standby.open[p] for p in partitions
                      if p in standby.open and lags.get(p, max_lag + 1) <= max_lag}
    return view


def pull_query(engine: Engine, plan: QueryPlan, limit: int | None, partitions: set[int] | None = None,
               store: Any = None) -> tuple[list[tuple], set[int]]:
    """Rows of a materialized table, filtered and projected by ``plan`` (from the tasks
    of ``partitions`` only, when given; of ``store`` instead of the table's own when
    given), and the partitions of those with no open task."""
    source = plan.source
    if isinstance(plan, AggregatePlan):
        raise KsqlStatementException(
            "Pull queries don't support GROUP BY clauses: query the table the aggregation builds.")
    if not source.is_table:
        raise KsqlStatementException(
            f"Pull queries are not supported on streams: {source.name} is a stream. Use a push "
            f"query instead: SELECT ... FROM {source.name} EMIT CHANGES;")
    if store is None:
        query_id = engine.materializing(source.name)
        store = engine.queries[query_id].materialized if query_id is not None else None
    if store is None:
        raise KsqlStatementException(
            f"The {source.name} table isn't queryable: it is not materialized. Pull queries read "
            "tables built by CREATE TABLE ... AS SELECT. Query it with a push query "
            f"(SELECT ... FROM {source.name} EMIT CHANGES;), or make a queryable copy: "
            f"CREATE TABLE {source.name}_QUERYABLE AS SELECT * FROM {source.name};")
    missing: set[int] = set()
    if partitions is not None:
        missing = partitions - set(getattr(store, "tasks", partitions))
    # The pipeline applies the WHERE; a key lookup only narrows what it reads.
    key, rest = _pull_key(engine, source, plan.where)
    if key is not None and source.window is None:
        # An exact key read makes the key condition true: without it the plan (and its
        # generated pipeline, cached) is the same for every key.
        plan = replace(plan, where=rest)
    pipeline = _pull_pipeline(engine, plan)
    if key is None:
        rows: Any = table_rows(store, None, partitions)
    elif source.window is not None:
        rows = table_rows(store, key, partitions)  # the key's windows: key bytes || window
    else:
        found = table_row(store, key, partitions)
        rows = [(key, found[0], found[1])] if found is not None else []
    out = Outputs()
    batch = RecordBatch(source.topic, 0)
    # Chunks through the pipeline: nothing holds the whole table, LIMIT stops the read.
    for i, (k, value, ts) in enumerate(rows):
        batch.offsets.append(i)
        batch.keys.append(k)
        batch.values.append(value)
        batch.timestamps.append(ts)
        if len(batch.offsets) >= 1024:
            pipeline.process(batch, out)
            batch = RecordBatch(source.topic, 0)
            if limit is not None and len(out.rows) >= limit:
                break
    else:
        if batch.offsets:
            pipeline.process(batch, out)
    return (out.rows[:limit] if limit is not None else out.rows), missing


def _pull_pipeline(engine: Engine, plan: QueryPlan) -> Any:
    """The row pipeline of a pull query's plan, generated once per distinct plan."""
    cache = engine.pull_pipelines
    try:
        pipeline = cache.get(plan)
    except TypeError:  # an unhashable plan: not cached
        cache, pipeline = {}, None
    if pipeline is None:
        source = plan.source
        pipeline = build_pipeline(plan, engine.registry, engine.codec(source, "key"),
                                  engine.codec(source, "value"), None, None,
                                  engine._processing_logger("pull"), rows=True)
        if len(cache) >= 256:
            cache.pop(next(iter(cache)))
        cache[plan] = pipeline
    return pipeline


def pull_partition(engine: Engine, source: DataSource, where: e.Expression | None,
                   partitions: int) -> int | None:
    """The partition of its table's state that holds the row a pull query's WHERE pins
    (``key = literal``; Kafka's default partitioner over the key of the table's input
    records), when the query and the stage keeping the table say; else None."""
    key = pull_key(engine, source, where)
    query_id = engine.materializing(source.name)
    if key is None or query_id is None or partitions <= 0:
        return None
    decoded = engine.codec(source, "key").decode(key)
    raw = engine.queries[query_id].stages[-1].input_key(decoded) if decoded is not None else None
    return None if raw is None else (murmur2(raw) & 0x7FFFFFFF) % partitions


def pull_key(engine: Engine, source: DataSource, where: e.Expression | None) -> bytes | None:
    """The key bytes a pull query's WHERE pins (a key lookup: the rows it asks for are
    in one partition), or None (see ``_pull_key``)."""
    return _pull_key(engine, source, where)[0]


def _pull_key(engine: Engine, source: DataSource, where: e.Expression | None
              ) -> tuple[bytes | None, e.Expression | None]:
    """The key bytes a pull query's WHERE pins (``key = literal``, alone or AND-ed with
    other conditions) for a single STRING or integer key column, and the WHERE without
    that condition; (None, where) otherwise."""
    if where is None or len(source.schema.key) != 1:
        return None, where
    col = source.schema.key[0]
    base = col.type.base
    if base is BaseType.STRING:
        wanted: tuple[type, ...] = (e.StringLiteral,)
    elif base in (BaseType.INTEGER, BaseType.BIGINT):
        wanted = (e.IntegerLiteral,)
    else:
        return None, where
    conjuncts: list[e.Expression] = []
    todo = [where]
    while todo:
        x = todo.pop()
        if isinstance(x, e.And):
            todo += [x.right, x.left]
        else:
            conjuncts.append(x)
    for i, x in enumerate(conjuncts):
        if not (isinstance(x, e.Comparison) and x.op == "="):
            continue
        for ref, lit in ((x.left, x.right), (x.right, x.left)):
            if isinstance(ref, e.ColumnRef) and ref.name == col.name and isinstance(lit, wanted):
                try:
                    key = engine.codec(source, "key").encode((lit.value,))
                except Exception:  # noqa: BLE001 - fall back to a scan
                    return None, where
                rest: e.Expression | None = None
                for other in conjuncts[:i] + conjuncts[i + 1:]:
                    rest = other if rest is None else e.And(rest, other)
                return key, rest
    return None, where

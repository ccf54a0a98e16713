"""Pull queries: a SELECT without EMIT CHANGES, answered once from a table's materialized
state (the store of the query that builds the table, ``Engine.materializing``: a CREATE
TABLE ... AS SELECT, or a CREATE SOURCE TABLE's ``CST_`` query), or, over a stream, by
reading its topic from the beginning up to the end offsets it has when the query starts
(ksqlDB 0.23+'s bounded stream pull queries, ``stream_pull``).

Before anything is read, a pull query is checked as ksqlDB checks one: its clauses
(``check_pull_query``: no GROUP BY, WINDOW, PARTITION BY, HAVING, negative LIMIT, no
ROWPARTITION/ROWOFFSET), and over a table its WHERE (``check_pull_where``: what it asks of
the key, and, with ``ksql.query.pull.table.scan.enabled=false``, that it needs no scan).

A WHERE that pins the key (``key = literal``) reads one row, or one key's windows, instead of
scanning; the rows go through the plan's generated pipeline (cached per plan) in chunks, so
nothing holds the whole table and LIMIT stops the read. On a cluster each node answers from
its own tasks' partitions (``pull``), or from its standby copies, and says which partitions
it lacks; ``streamsql.server.cluster`` routes a key lookup to the node holding its partition
(``pull_partition``). ``streamsql.exec.push`` decides between a pull and a push query.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from streamsql import ast
from streamsql import expressions as e
from streamsql.analyzer import AggregatePlan, QueryPlan, source_scope
from streamsql.catalog import DataSource
from streamsql.codegen import ExpressionCompiler
from streamsql.errors import KsqlStatementException
from streamsql.results import Result
from streamsql.runtime.log.base import RecordBatch, murmur2
from streamsql.runtime.pipeline import Outputs, build_pipeline
from streamsql.runtime.query import table_row, table_rows
from streamsql.types import INT_MAX, INT_MIN, BaseType

# ksqlDB's PullQueryValidator.PULL_QUERY_SYNTAX_HELP, after each of its rules' messages.
PULL_QUERY_SYNTAX_HELP = (" See https://cnfl.io/queries for more info.\n"
                          "Add EMIT CHANGES if you intended to issue a push query.")
# Pseudo columns a pull query may not use (ksqlDB's SystemColumns: they name where a record
# was read, which a table's row or a bounded read does not keep).
_DISALLOWED_PSEUDO = ("ROWPARTITION", "ROWOFFSET")
# Completions of a stream pull query (its /query response's "finalMessage").
LIMIT_REACHED = "Limit Reached"
QUERY_COMPLETED = "Query Completed"

if TYPE_CHECKING:  # pragma: no cover - imports only for type hints
    from streamsql.engine import Engine, Session


def _flag(props: dict[str, Any], name: str, default: bool) -> bool:
    value = props.get(name, default)
    return value if isinstance(value, bool) else str(value).strip().lower() == "true"


async def pull_statement(engine: Engine, stmt: ast.QueryStatement, props: dict[str, Any]) -> Result:
    """A pull query (a SELECT without EMIT CHANGES) answered whole: over a table from its
    materialized state, over a stream by a bounded read of its topic."""
    query = stmt.query
    key = _kept_key(engine, query, props)
    kept = engine.pull_plans.get(key) if key is not None else None
    # (a kept plan's query passed these checks but for its WHERE and LIMIT)
    check_pull_query(query, props, select_checked=kept is not None)
    _check_like(engine, query)
    plan, kept = _pull_plan(engine, query, props, key, kept)
    if not isinstance(plan, AggregatePlan) and not getattr(plan.source, "is_table", True):
        columns = tuple(c.name for c in plan.select_columns())
        rows, final = await stream_pull(engine, plan, query.limit)
        return Result(stmt.text, "rows", columns=columns, rows=rows, final_message=final)
    if isinstance(plan, QueryPlan):
        check_pull_where(plan.source, plan.alias, plan.where, props)
    columns = tuple(c.name for c in plan.key) + tuple(c.name for c in plan.value)
    rows, _ = pull_query(engine, plan, query.limit, kept=kept)
    return Result(stmt.text, "rows", columns=columns, rows=rows)


@dataclass(slots=True)
class _KeptPlan:
    """A pull query's plan without WHERE and LIMIT, kept for the queries that differ only in
    those (see ``_pull_plan``), with what is derived from it once: the scope the WHERE is
    checked in, and the pipeline of a key lookup (whose WHERE the key read replaces)."""

    plan: QueryPlan
    source: DataSource
    select: Any  # (held: the key uses its id)
    relation: Any
    scope: Any = None
    lookup_pipeline: Any = None


def _kept_key(engine: Engine, query: ast.Query, props: dict[str, Any]) -> Any:
    """The key of a plain pull query's kept plan (``_pull_plan``), or None when it has none.

    The projection and relation are keyed by identity, not value (hashing them costs more
    than the rest of a lookup): the server's statement cache hands every lookup of one
    template the same objects. The kept entry holds them, so their ids stay theirs."""
    rel = query.from_
    if not isinstance(rel, ast.AliasedRelation) or query.group_by or query.window is not None \
            or query.having is not None:
        return None
    source = engine.catalog.source(rel.name)
    if source is None:
        return None
    key = (id(source), id(query.select), id(rel), query.partition_by, query.emit,
           tuple(engine.catalog.types.items()), tuple(sorted(props.items())))
    try:
        hash(key)
    except TypeError:  # something unhashable in the properties: not kept
        return None
    return key


def _pull_plan(engine: Engine, query: ast.Query, props: dict[str, Any], key: Any,
               kept: _KeptPlan | None) -> tuple[Any, _KeptPlan | None]:
    """The analyzed plan of a pull query, and its kept part (None on the first query of a
    kind, and for queries whose plan is not kept).

    The analysis of a plain (not aggregating, not joining) query takes its WHERE and LIMIT as
    they are, once the WHERE is checked (``QueryAnalyzer.analyze``): so its plan is kept per
    projection, source entry, custom types and properties (``_kept_key``), and a query that
    differs only in those (key lookups, one per key) has just its WHERE checked and put in.
    Errors are the same as a full analysis's: the kept part passed it once.
    """
    if kept is None:
        plan = engine.analyzer(props).analyze(query, None, persistent=False)
        if key is None or type(plan) is not QueryPlan:
            return plan, None
        if len(engine.pull_plans) >= 256:
            engine.pull_plans.pop(next(iter(engine.pull_plans)))
        engine.pull_plans[key] = _KeptPlan(e.evolve(plan, where=None, limit=None), plan.source,
                                           query.select, query.from_)
        return plan, None
    if query.where is not None:
        if kept.scope is None:
            kept.scope = source_scope(kept.source, kept.plan.alias)[0]
        ExpressionCompiler(engine.registry, kept.scope, clause="WHERE").compile_predicate(query.where, "WHERE")
    return e.evolve(kept.plan, where=query.where, limit=query.limit), kept


def check_pull_query(query: ast.Query, props: dict[str, Any], select_checked: bool = False) -> None:
    """ksqlDB's PullQueryValidator: the clauses a pull query may not have, the LIMIT
    setting, and the pseudo columns it may not use. Runs before the query is analyzed.
    ``select_checked``: the SELECT list passed before (a kept plan's)."""
    rules = (
        (bool(query.group_by), "Pull queries don't support GROUP BY clauses."),
        (bool(query.partition_by), "Pull queries don't support PARTITION BY clauses."),
        (query.having is not None, "Pull queries don't support HAVING clauses."),
        (query.limit is not None and query.limit < 0,
         "Pull queries don't support negative integers in the LIMIT clause."),
        (query.window is not None, "Pull queries don't support WINDOW clauses."),
    )
    for broken, message in rules:
        if broken:
            raise KsqlStatementException(message + PULL_QUERY_SYNTAX_HELP)
    if query.limit is not None and not _flag(props, "ksql.query.pull.limit.clause.enabled", True):
        raise KsqlStatementException(
            "LIMIT clause in pull queries is currently disabled. You can enable them by setting "
            "ksql.query.pull.limit.clause.enabled=true." + PULL_QUERY_SYNTAX_HELP)
    selected = [] if select_checked else [
        x for item in query.select if isinstance(item, (ast.SingleColumn, ast.StructAllFields))
        for x in item.expression.walk()]
    for clause, nodes in (("SELECT", selected), ("WHERE", list(query.where.walk()) if query.where else [])):
        used = [n for n in _DISALLOWED_PSEUDO
                if any(isinstance(x, e.ColumnRef) and x.name == n for x in nodes)]
        if used:
            raise KsqlStatementException(
                f"Pull queries don't support the following columns in {clause} clauses: "
                + ", ".join(f"`{n}`" for n in used))


def _check_like(engine: Engine, query: ast.Query) -> None:
    """ksqlDB's pull-query WHERE takes LIKE on a string column only (before typing)."""
    rel = query.from_
    if query.where is None or not isinstance(rel, ast.AliasedRelation):
        return
    source = engine.catalog.source(rel.name)
    if source is None:
        return
    for x in query.where.walk():
        if isinstance(x, e.Like) and isinstance(x.value, e.ColumnRef):
            col = _column(source, rel.alias or rel.name, x.value)
            if col is not None and col.type.base is not BaseType.STRING:
                raise KsqlStatementException(
                    "The column type for Like condition must be VARCHAR. The column type is "
                    f"{col.type}")


def _column(source: DataSource, alias: str, ref: e.Expression) -> Any:
    """The column of ``source`` that ``ref`` names (key or value), or None."""
    if not isinstance(ref, e.ColumnRef) or ref.source not in (None, source.name, alias):
        return None
    return next((c for c in source.schema.columns if c.name == ref.name), None)


def _resolvable(x: e.Expression) -> bool:
    """An expression that names no column: its value is known before anything is read."""
    return not any(isinstance(n, e.ColumnRef) for n in x.walk())


def _literal_fits(lit: e.Expression, col: Any) -> bool:
    """Whether a literal converts to key column ``col``'s type without loss (ksqlDB's
    strict coercion of a key value); other expressions are the analyzer's concern."""
    base = col.type.base
    if isinstance(lit, e.NullLiteral) or not isinstance(lit, e.Literal):
        return True
    if base is BaseType.STRING:
        return isinstance(lit, e.StringLiteral)
    if base is BaseType.INTEGER:
        return isinstance(lit, e.IntegerLiteral) and INT_MIN <= lit.value <= INT_MAX
    if base is BaseType.BIGINT:
        return isinstance(lit, e.IntegerLiteral)
    if base in (BaseType.DOUBLE, BaseType.DECIMAL):
        return isinstance(lit, (e.IntegerLiteral, e.DecimalLiteral, e.DoubleLiteral))
    if base is BaseType.BOOLEAN:
        return isinstance(lit, e.BooleanLiteral)
    return True


def _invalid_where(message: str) -> KsqlStatementException:
    """ksqlDB's QueryFilterNode.invalidWhereClauseException."""
    return KsqlStatementException(
        f"{message}. \nPull queries require a WHERE clause that:\n"
        " - includes a key equality expression, e.g. `SELECT * FROM X WHERE <key-column>=Y;`.\n"
        " - in the case of a multi-column key, is a conjunction of equality expressions that "
        "cover all key columns.\n"
        "If more flexible queries are needed, table scans can be enabled by setting "
        "ksql.query.pull.table.scan.enabled=true.")


def _split(x: e.Expression, kind: type) -> list[e.Expression]:
    out: list[e.Expression] = []
    todo = [x]
    while todo:
        node = todo.pop()
        if isinstance(node, kind):
            todo += [node.right, node.left]  # type: ignore[attr-defined]
        else:
            out.append(node)
    return out


def check_pull_where(source: DataSource, alias: str, where: e.Expression | None,
                     props: dict[str, Any]) -> None:
    """ksqlDB's checks of a table pull query's WHERE (its QueryFilterNode): key values must
    convert to the key's type; and with ``ksql.query.pull.table.scan.enabled=false`` every
    disjunct must pin the whole key (``=``/IN of values, or a range of a STRING key with
    ``ksql.query.pull.range.scan.enabled``), as what a scan would answer is refused."""
    scans = _flag(props, "ksql.query.pull.table.scan.enabled", True)
    ranges = _flag(props, "ksql.query.pull.range.scan.enabled", True)
    key_cols = source.schema.key

    def scan_or(error: KsqlStatementException) -> None:
        if not scans:
            raise error

    if where is None:
        scan_or(_invalid_where("Missing WHERE clause"))
        return
    needs_scan = False
    for disjunct in _split(where, e.Or):
        keyed: set[str] = set()
        for c in _split(disjunct, e.And):
            if isinstance(c, e.Comparison):
                left_col = _column(source, alias, c.left)
                if isinstance(c.left, e.ColumnRef) or not isinstance(c.right, e.ColumnRef):
                    ref, other = c.left, c.right
                else:
                    ref, other = c.right, c.left
                if not isinstance(ref, e.ColumnRef):
                    scan_or(_invalid_where("A comparison must directly reference a key column"))
                    continue
                if ref.name in ("WINDOWSTART", "WINDOWEND") and source.window is not None:
                    continue
                col = left_col if ref is c.left else _column(source, alias, ref)
                if col is None or col.namespace != "KEY":
                    continue  # a filter on what the key lookup reads
                if not _resolvable(other):
                    scan_or(_invalid_where("A comparison must be between a key column and a "
                                           "resolvable expression"))
                    continue
                if c.op == "=":
                    if not _literal_fits(other, col):
                        raise KsqlStatementException(
                            f"{other} can not be converted to the type of the key column: "
                            f"{col.name} {col.type} KEY")
                    keyed.add(col.name)
                elif c.op in ("<", "<=", ">", ">=") and ranges:
                    keyed.add(col.name)
                    if col.type.base is not BaseType.STRING:
                        needs_scan = True  # ranges of STRING keys only
                else:
                    shown = ", ".join(f"`{k.name}` {k.type} KEY" for k in key_cols)
                    scan_or(_invalid_where(f"Bound on key columns '[{shown}]' must currently be '='"))
            elif isinstance(c, e.InList) and not c.negated:
                col = _column(source, alias, c.value)
                if not isinstance(c.value, e.ColumnRef):
                    scan_or(_invalid_where("A comparison must directly reference a key column"))
                    continue
                if col is None or col.namespace != "KEY":
                    continue  # a filter on what the key lookup reads
                if not all(_resolvable(item) for item in c.items):
                    scan_or(_invalid_where("A comparison must be between a key column and a "
                                           "resolvable expression"))
                    continue
                for item in c.items:
                    if not _literal_fits(item, col):
                        raise KsqlStatementException(
                            f"{item} can not be converted to the type of the key column: "
                            f"{col.name} {col.type} KEY")
                keyed.add(col.name)
            elif any(_column(source, alias, x) is not None and _column(source, alias, x).namespace == "KEY"
                     for x in c.walk()):
                # Only '=', IN and ranges read the key; anything else over it is a scan.
                scan_or(_invalid_where(f"Unsupported expression in WHERE clause: {c}"))
        if not keyed:
            scan_or(_invalid_where(f"WHERE clause missing key column for disjunct: {disjunct}"))
        elif len(keyed) < len(key_cols):
            scan_or(_invalid_where("Multi-column sources must specify every key in the WHERE clause"))
    if needs_scan and not scans:
        raise KsqlStatementException(
            "Query requires table scan to be enabled. Table scans can be enabled by setting "
            "ksql.query.pull.table.scan.enabled=true")


async def stream_pull(engine: Engine, plan: QueryPlan, limit: int | None) -> tuple[list[tuple], str]:
    """A pull query over a stream: its topic's records from the beginning up to the end
    offsets the topic has now (records written after the query starts are not read), in
    SELECT order; with the message it ends with (LIMIT reached, or the read completed)."""
    source = plan.source
    if limit == 0:
        return [], LIMIT_REACHED
    pipeline = build_pipeline(plan, engine.registry, engine.codec(source, "key"),
                              engine.codec(source, "value"), None, None,
                              engine._processing_logger("pull"), rows=True, push=True,
                              timestamp_parser=engine._timestamp_parser(source))
    topic = source.topic
    ends = await engine.log.end_offsets(topic)
    starts = await engine.log.begin_offsets(topic)
    rows: list[tuple] = []
    out = Outputs()
    for p, end in enumerate(ends):
        position = starts[p] if p < len(starts) else 0
        while position < end:
            batch = await engine.log.fetch(topic, p, position, 1000)
            if not len(batch):
                break
            if batch.offsets[-1] >= end:  # written after the query started
                n = next(i for i, off in enumerate(batch.offsets) if off >= end)
                batch = RecordBatch(topic, p, batch.offsets[:n], batch.timestamps[:n],
                                    batch.keys[:n], batch.values[:n],
                                    batch.headers[:n] if batch.headers is not None else None)
                if not len(batch):
                    break
            position = batch.offsets[-1] + 1
            out.clear()
            pipeline.process(batch, out)
            rows += out.rows
            if limit is not None and len(rows) >= limit:
                return rows[:limit], LIMIT_REACHED
    return rows, QUERY_COMPLETED


async def pull(engine: Engine, stmt: ast.QueryStatement, session: Session, partitions: set[int],
               standby_lag: int | None = None) -> tuple[Result, set[int]]:
    """A pull query answered from this node's tasks of ``partitions`` only (in a cluster,
    the partitions the consumer group gives this node: see ``streamsql.server.cluster``),
    and which of them have no task open here (moved, or not restored yet). With
    ``standby_lag``, from this node's standby copies of those partitions instead, those
    within ``standby_lag`` changelog records of their active task's."""
    props = {**engine.config, **session.properties}
    try:
        check_pull_query(stmt.query, props)
        _check_like(engine, stmt.query)
        plan = engine.analyzer(props).analyze(stmt.query, None, persistent=False)
        if isinstance(plan, QueryPlan) and plan.source.is_table:
            check_pull_where(plan.source, plan.alias, plan.where, props)
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
               store: Any = None, kept: _KeptPlan | None = None) -> tuple[list[tuple], set[int]]:
    """Rows of a materialized table, filtered and projected by ``plan`` (from the tasks
    of ``partitions`` only, when given; of ``store`` instead of the table's own when
    given), and the partitions of those with no open task. ``kept``: the plan's kept part
    (``_pull_plan``), whose key-lookup pipeline is reused."""
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
        # (ksqlDB's EngineExecutor.notMaterializedException, word for word)
        raise KsqlStatementException(
            f"The `{source.name}` table isn't queryable. To derive a queryable table, you can do "
            f"'CREATE TABLE QUERYABLE_{source.name} AS SELECT * FROM {source.name}'."
            + PULL_QUERY_SYNTAX_HELP)
    missing: set[int] = set()
    if partitions is not None:
        missing = partitions - set(getattr(store, "tasks", partitions))
    # The pipeline applies the WHERE; a key lookup only narrows what it reads.
    key, rest = _pull_key(engine, source, plan.where)
    if key is not None and source.window is None:
        # An exact key read makes the key condition true: without it the plan (and its
        # generated pipeline, cached) is the same for every key.
        plan = e.evolve(plan, where=rest)
    if kept is not None and key is not None and rest is None and plan.limit is None \
            and source.window is None:
        # A key lookup and nothing else: the plan is the kept one (looked up by value,
        # the pipeline cache would hash the whole plan for every lookup).
        if kept.lookup_pipeline is None:
            kept.lookup_pipeline = _pull_pipeline(engine, kept.plan)
        pipeline = kept.lookup_pipeline
    else:
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

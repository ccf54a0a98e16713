"""SHOW, DESCRIBE, EXPLAIN and PRINT: what the engine knows, in ksqlDB's shapes.

Each function returns a ``Result`` whose ``columns``/``rows`` hold the table the shell prints
and whose ``entity`` holds the same information in the shape of ksqlDB's REST entity (camel
case keys, as ``/ksql`` returns them), so the shell and a REST layer can share it.

Error messages for unknown names follow ksqlDB's wording ("Could not find STREAM/TABLE 'X' in
the Metastore", "Can't find any functions with the name 'X'", ...).
"""
from __future__ import annotations

import asyncio
import datetime as _dt
import logging
from typing import TYPE_CHECKING, Any, AsyncIterator, Mapping, Sequence

from streamsql import ast
from streamsql.catalog import DataSource, QueryInfo
from streamsql.errors import KsqlStatementException
from streamsql.results import Result
from streamsql.runtime.log.base import UnknownTopicError
from streamsql.schema import Column
from streamsql.types import ArrayType, BaseType, MapType, SqlType, StructType

if TYPE_CHECKING:  # pragma: no cover - imports only for type hints
    from streamsql.engine import Engine, Session
    from streamsql.functions.registry import Signature

logger = logging.getLogger(__name__)

# Internal topics (the command log, changelogs of a later issue) start with this; SHOW TOPICS
# hides them unless ALL is given, as ksqlDB hides its own.
_INTERNAL_PREFIX = "_"


# ============================================================================== type text
def type_text(t: SqlType) -> str:
    """A type as ksqlDB's CLI prints it in DESCRIBE (``VARCHAR(STRING)``, ``ARRAY<INTEGER>``,
    ``STRUCT<A VARCHAR(STRING)>``)."""
    if t.base is BaseType.STRING:
        return "VARCHAR(STRING)"
    if isinstance(t, ArrayType):
        return f"ARRAY<{type_text(t.item)}>"
    if isinstance(t, MapType):
        return f"MAP<{type_text(t.key)}, {type_text(t.value)}>"
    if isinstance(t, StructType):
        return "STRUCT<" + ", ".join(f"{f.name} {type_text(f.type)}" for f in t.fields) + ">"
    return str(t)


def schema_json(t: SqlType) -> dict[str, Any]:
    """A type as ksqlDB's REST API describes it: ``{"type", "fields", "memberSchema"}``."""
    if isinstance(t, ArrayType):
        return {"type": "ARRAY", "fields": None, "memberSchema": schema_json(t.item)}
    if isinstance(t, MapType):
        return {"type": "MAP", "fields": None, "memberSchema": schema_json(t.value)}
    if isinstance(t, StructType):
        return {"type": "STRUCT", "memberSchema": None,
                "fields": [{"name": f.name, "schema": schema_json(f.type)} for f in t.fields]}
    return {"type": t.base.value, "fields": None, "memberSchema": None}


def _field_json(col: Column, is_table: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"name": col.name, "schema": schema_json(col.type)}
    if col.namespace == "KEY":
        out["type"] = "KEY"
    elif col.namespace in ("HEADERS", "HEADER"):
        out["type"] = "HEADER"
        if col.header_key is not None:
            out["headerKey"] = col.header_key
    return out


def _field_row(col: Column, is_table: bool) -> tuple[str, str]:
    marker = ""
    if col.namespace == "KEY":
        marker = "  (primary key)" if is_table else "  (key)"
    elif col.namespace == "HEADERS":
        marker = "  (headers)"
    elif col.namespace == "HEADER":
        marker = f"  (header('{col.header_key}'))"
    return col.name, type_text(col.type) + marker


# ================================================================================== SHOW
async def show(engine: "Engine", stmt: ast.ShowStatement, props: dict[str, Any],
               session: "Session") -> Result:
    """SHOW|LIST STREAMS, TABLES, QUERIES, TOPICS, FUNCTIONS, PROPERTIES, TYPES, VARIABLES."""
    what = stmt.what
    if what in ("STREAMS", "TABLES"):
        kind = "STREAM" if what == "STREAMS" else "TABLE"
        if stmt.extended:
            return await _source_descriptions(engine, stmt.text, kind, extended=True)
        return _list_sources(engine, stmt.text, kind)
    if what == "QUERIES":
        return _list_queries(engine, stmt.text, stmt.extended)
    if what == "TOPICS":
        return await _list_topics(engine, stmt)
    if what == "FUNCTIONS":
        return _list_functions(engine, stmt.text)
    if what == "PROPERTIES":
        return _list_properties(engine, stmt.text, session)
    if what == "TYPES":
        rows = [(name, str(t)) for name, t in sorted(engine.catalog.types.items())]
        return Result(stmt.text, "type_list", columns=("Type Name", "Schema"), rows=rows,
                      entity={"@type": "type_list", "statementText": stmt.text,
                              "types": {name: schema_json(t) for name, t in engine.catalog.types.items()}})
    if what == "VARIABLES":
        rows = sorted(session.variables.items())
        return Result(stmt.text, "variables", columns=("Variable Name", "Value"), rows=rows,
                      entity={"@type": "variables", "statementText": stmt.text,
                              "variables": [{"name": n, "value": v} for n, v in rows]})
    raise KsqlStatementException(f"SHOW {what} is not supported.")


def _format_name(source: DataSource, which: str) -> str:
    return (source.key_format if which == "key" else source.value_format).name


def _list_sources(engine: "Engine", text: str, kind: str) -> Result:
    sources = sorted((s for s in engine.catalog.sources.values() if s.kind == kind), key=lambda s: s.name)
    label = "Stream Name" if kind == "STREAM" else "Table Name"
    rows = [(s.name, s.topic, _format_name(s, "key"), _format_name(s, "value"),
             "true" if s.window is not None else "false") for s in sources]
    plural = "streams" if kind == "STREAM" else "tables"
    entity = {"@type": plural, "statementText": text, plural: [
        {"type": s.kind, "name": s.name, "topic": s.topic, "keyFormat": _format_name(s, "key"),
         "valueFormat": _format_name(s, "value"), "isWindowed": s.window is not None}
        for s in sources]}
    return Result(text, plural, columns=(label, "Kafka Topic", "Key Format", "Value Format", "Windowed"),
                  rows=rows, entity=entity)


def _query_json(engine: "Engine", q: QueryInfo) -> dict[str, Any]:
    sink = engine.catalog.source(q.sink) if q.sink else None
    state, _ = engine.query_state(q.query_id)
    return {"queryString": q.sql, "sinks": [q.sink] if q.sink else [],
            "sinkKafkaTopics": [sink.topic] if sink else [], "id": q.query_id,
            "statusCount": {state: 1}, "queryType": "PERSISTENT", "state": state}


def _list_queries(engine: "Engine", text: str, extended: bool) -> Result:
    queries = sorted(engine.catalog.queries.values(), key=lambda q: q.query_id)
    rows = []
    for q in queries:
        sink = engine.catalog.source(q.sink) if q.sink else None
        rows.append((q.query_id, "PERSISTENT", f"{engine.query_state(q.query_id)[0]}:1", q.sink or "",
                     sink.topic if sink else "",
                     " ".join(q.sql.split()) + ";"))
    return Result(text, "queries",
                  columns=("Query ID", "Query Type", "Status", "Sink Name", "Sink Kafka Topic", "Query String"),
                  rows=rows, entity={"@type": "queries", "statementText": text,
                                     "queries": [_query_json(engine, q) for q in queries]})


async def _list_topics(engine: "Engine", stmt: ast.ShowStatement) -> Result:
    topics = await engine.log.list_topics()
    names = sorted(n for n in topics if stmt.all or not n.startswith(_INTERNAL_PREFIX))
    readers: dict[str, int] = {}
    for q in engine.queries.values():
        # Each stage of a query consumes its input topic as its own group.
        for stage in getattr(q, "stages", None) or ():
            topic = getattr(stage, "source_topic", None)
            if topic is not None:
                readers[topic] = readers.get(topic, 0) + 1
    infos = []
    for n in names:
        info = topics[n]
        entry: dict[str, Any] = {"name": n, "replicaInfo": [info.replicas] * info.partitions}
        if stmt.extended:
            # One consumer group per persistent query reading the topic (embedded: one member).
            entry["consumerCount"] = readers.get(n, 0)
            entry["consumerGroupCount"] = readers.get(n, 0)
        infos.append(entry)
    columns: tuple[str, ...] = ("Kafka Topic", "Partitions", "Partition Replicas")
    if stmt.extended:
        columns += ("Consumers", "ConsumerGroups")
        rows = [(n, topics[n].partitions, topics[n].replicas, readers.get(n, 0), readers.get(n, 0))
                for n in names]
    else:
        rows = [(n, topics[n].partitions, topics[n].replicas) for n in names]
    kind = "kafka_topics_extended" if stmt.extended else "kafka_topics"
    return Result(stmt.text, "kafka_topics", columns=columns, rows=rows,
                  entity={"@type": kind, "statementText": stmt.text, "topics": infos})


def _function_category(sig: "Signature") -> str:
    if sig.kind == "table":
        return "TABLE"
    # Functions are grouped in modules by family (streamsql.functions.string, ...).
    module = getattr(sig.impl, "__module__", "") or ""
    family = module.rsplit(".", 1)[-1].upper()
    return {"MATH": "MATHEMATICAL", "DATETIME": "DATE / TIME", "COLLECTIONS": "ARRAY",
            "LAMBDAS": "LAMBDA", "STRUCTS": "STRUCT", "URL": "URL", "JSON": "JSON",
            "CONDITIONAL": "CONDITIONAL"}.get(family, family or "OTHER")


def _list_functions(engine: "Engine", text: str) -> Result:
    reg = engine.registry
    entries: dict[str, tuple[str, str]] = {}
    for name, sigs in reg.scalars.items():
        entries[name] = ("SCALAR", _function_category(sigs[0]))
    for name, sigs in reg.tables.items():
        entries[name] = ("TABLE", "TABLE")
    for name in reg.aggregates:
        entries[name] = ("AGGREGATE", "AGGREGATE")
    rows = [(name, category) for name, (_, category) in sorted(entries.items())]
    return Result(text, "function_names", columns=("Function Name", "Category"), rows=rows,
                  entity={"@type": "function_names", "statementText": text, "functions": [
                      {"name": n, "type": ftype, "category": cat} for n, (ftype, cat) in sorted(entries.items())]})


def _list_properties(engine: "Engine", text: str, session: "Session") -> Result:
    merged = {**engine.config, **session.properties}
    rows = [(name, "SESSION" if name in session.properties else "SERVER", str(value))
            for name, value in sorted(merged.items())]
    return Result(text, "properties", columns=("Property", "Level", "Effective Value"), rows=rows,
                  entity={"@type": "properties", "statementText": text,
                          "properties": [{"name": n, "scope": "KSQL", "level": lvl, "value": v}
                                         for n, lvl, v in rows],
                          "overwrittenProperties": sorted(session.properties)})


# ============================================================================== DESCRIBE
def _not_found(name: str) -> KsqlStatementException:
    return KsqlStatementException(f"Could not find STREAM/TABLE '{name}' in the Metastore")


def _consumed(engine: "Engine", query_id: str) -> int:
    """Records a running query has read from its source (its first stage's counter)."""
    runners = engine.runners.get(query_id)
    if runners is None:
        return 0
    if isinstance(runners, (list, tuple)):
        return runners[0].processed if runners else 0
    return int(getattr(runners, "processed", 0))


def offsets_text(offsets: Mapping[Any, int] | Sequence[int]) -> str:
    """Per-partition offsets as one line, ``0:1200, 1:1180`` (partition:offset, by partition);
    ``offsets`` is a list indexed by partition or a mapping from partition (int or its text,
    as a JSON entity has it)."""
    pairs = (sorted((int(p), o) for p, o in offsets.items()) if isinstance(offsets, Mapping)
             else list(enumerate(offsets)))
    return ", ".join(f"{p}:{o}" for p, o in pairs)


async def log_start_offsets(engine: "Engine", topic: str) -> dict[str, int] | None:
    """The first offset still in the log of each partition of ``topic`` (retention and
    DeleteRecords move it; on Kafka the broker's log start offset), keyed by the partition
    number as text so the embedded result and the REST entity's JSON are alike; None when
    the topic does not exist (any more)."""
    try:
        begins = await engine.log.begin_offsets(topic)
    except UnknownTopicError:
        # A source outlives its topic when the topic was deleted behind its back; DESCRIBE
        # still describes the source rather than failing.
        logger.debug("log start offsets of %s: no such topic", topic)
        return None
    return {str(p): off for p, off in enumerate(begins)}


def source_description(engine: "Engine", source: DataSource, extended: bool,
                       runtime: list[dict[str, Any]] | None = None,
                       log_start: dict[str, int] | None = None) -> dict[str, Any]:
    """ksqlDB's ``sourceDescription`` for one stream or table; ``runtime``: its queries'
    ``Engine.query_runtime`` (partitions per node, lag, throughput), for EXTENDED;
    ``log_start``: its topic's ``log_start_offsets``, for EXTENDED."""
    reads = [_query_json(engine, q) for q in engine.catalog.queries_reading(source.name)]
    writes = [_query_json(engine, q) for q in engine.catalog.queries_writing(source.name)]
    fields = [_field_json(c, source.is_table) for c in source.schema.columns]
    stats = ""
    if extended:
        # A query's first stage consumes its source; its last stage writes its sink.
        consumed = sum(rs[0].processed for qid, rs in engine.runners.items()
                       if rs and qid in engine.catalog.queries and source.name in engine.catalog.queries[qid].sources)
        written = sum(rs[-1].processed for qid, rs in engine.runners.items()
                      if rs and qid in engine.catalog.queries and engine.catalog.queries[qid].sink == source.name)
        parts = []
        if reads:
            parts.append(f"consumer-total-messages: {consumed}")
        if writes:
            parts.append(f"processed-by-writing-queries: {written}")
        stats = "  ".join(parts)
        for r in runtime or ():
            nodes = "; ".join(f"{node}: {len(parts)} partitions ({', '.join(parts)})"
                              for node, parts in r["partitionsByNode"].items()) or "no node"
            stats += (f"\n{r['queryId']}: lag {r['lag']}, {r['localMessagesPerSec']} messages/s "
                      f"here; partitions by node: {nodes}")
    return {
        "name": source.name,
        "windowType": source.window.kind if source.window else None,
        "readQueries": reads,
        "writeQueries": writes,
        "fields": fields,
        "type": source.kind,
        "timestamp": source.timestamp_column or "",
        "timestampFormat": source.timestamp_format,
        "statistics": stats,
        "errorStats": "",
        "extended": extended,
        "keyFormat": source.key_format.name,
        "valueFormat": source.value_format.name,
        "topic": source.topic,
        "partitions": source.partitions,
        "replication": source.replicas,
        "statement": source.sql,
        "sourceConstraints": [],
        "isSource": source.is_source,
        # Not part of ksqlDB's entity: the rows the shell prints for the Field/Type table.
        "fieldRows": [_field_row(c, source.is_table) for c in source.schema.columns],
        # Not part of ksqlDB's entity either: where the source's queries run (EXTENDED).
        "queryRuntime": list(runtime or ()),
        # Nor this: the first offset still in each partition's log (EXTENDED; null otherwise),
        # so a user sees how much of the topic retention has already deleted.
        "logStartOffsets": log_start if extended else None,
    }


async def describe_source(engine: "Engine", stmt: ast.DescribeSource,
                          runtime: list[dict[str, Any]] | None = None) -> Result:
    """DESCRIBE name [EXTENDED]."""
    source = engine.catalog.source(stmt.name)
    if source is None:
        raise _not_found(stmt.name)
    log_start = await log_start_offsets(engine, source.topic) if stmt.extended else None
    desc = source_description(engine, source, stmt.extended, runtime, log_start)
    return Result(stmt.text, "sourceDescription", columns=("Field", "Type"), rows=list(desc["fieldRows"]),
                  entity={"@type": "sourceDescription", "statementText": stmt.text, "sourceDescription": desc})


async def _source_descriptions(engine: "Engine", text: str, kind: str, extended: bool) -> Result:
    sources = sorted((s for s in engine.catalog.sources.values() if s.kind == kind), key=lambda s: s.name)
    descs = [source_description(engine, s, extended, None,
                                await log_start_offsets(engine, s.topic) if extended else None)
             for s in sources]
    return Result(text, "sourceDescriptionList", columns=("Field", "Type"),
                  entity={"@type": "sourceDescriptionList", "statementText": text, "sourceDescriptions": descs})


async def describe_sources(engine: "Engine", stmt: ast.DescribeSources) -> Result:
    """DESCRIBE STREAMS|TABLES [EXTENDED]: every stream (table) described."""
    kind = "STREAM" if stmt.what == "STREAMS" else "TABLE"
    return await _source_descriptions(engine, stmt.text, kind, stmt.extended)


def _return_text(sig: "Signature") -> str:
    from streamsql.functions.registry import Spec

    if isinstance(sig.returns, Spec):
        return str(sig.returns)
    # A computed return type: concrete when every parameter is a concrete type.
    params = [p.spec.type for p in sig.params if p.spec.kind == "type" and p.spec.type is not None]
    if len(params) == len(sig.params):
        try:
            return str(sig.returns(params))
        except Exception:  # some need argument details (a DECIMAL's scale); fall through
            pass
    return "(depends on the arguments)"


def describe_function(engine: "Engine", stmt: ast.DescribeFunction) -> Result:
    """DESCRIBE FUNCTION name: kind, and each overload's parameters and return type."""
    reg = engine.registry
    name = stmt.name.upper()
    sigs = [s for s in reg.describe(name) if hasattr(s, "params")]
    if not sigs:
        raise KsqlStatementException(f"Can't find any functions with the name '{name}'")
    kind = {"table": "TABLE", "aggregate": "AGGREGATE"}.get(sigs[0].kind, "SCALAR")
    overview = next((s.description for s in sigs if s.description), "")
    functions = []
    rows = []
    for sig in sigs:
        args = []
        for i, p in enumerate(sig.params):
            variadic = sig.variadic and i == len(sig.params) - 1
            args.append({"name": p.name, "type": str(p.spec) + ("[]" if variadic else ""),
                         "description": p.description, "isVariadic": variadic})
        ret = _return_text(sig)
        functions.append({"arguments": args, "returnType": ret, "description": sig.description,
                          "argumentTypes": [a["type"] for a in args]})
        variation = f"{name}(" + ", ".join(f"{a['name']} {a['type']}" for a in args) + ")"
        rows.append((variation, ret, sig.description))
    entity = {"@type": "describe_function", "statementText": stmt.text, "name": name,
              "description": overview, "author": "streamsql", "version": "", "path": "internal",
              "functions": functions, "type": kind}
    return Result(stmt.text, "describe_function", columns=("Variation", "Returns", "Description"),
                  rows=rows, entity=entity)


# =============================================================================== EXPLAIN
def _plan_text(plan: Any, sink: DataSource | None) -> str:
    """A short, readable execution plan (ksqlDB's step tree, sink first)."""
    from streamsql.formatter import format_expression

    src = plan.source
    lines = []
    depth = 0

    def step(text: str) -> None:
        nonlocal depth
        lines.append("\t" * depth + " > " + text)
        depth += 1

    if sink is not None:
        step(f"[ SINK ] | {sink.name} | Topic: {sink.topic} | Formats: key {sink.key_format.name}, "
             f"value {sink.value_format.name}")
    cols = ", ".join(f"{c.name} {c.type}" for c in tuple(plan.key) + tuple(plan.value))
    step(f"[ PROJECT ] | Schema: {cols}")
    having = getattr(plan, "having", None)
    if having is not None:
        step(f"[ FILTER (HAVING) ] | {format_expression(having)}")
    aggregates = getattr(plan, "aggregates", ())
    if aggregates or getattr(plan, "groups", ()):
        window = getattr(plan, "window", None)
        win = f" | Window: {window.kind}" if window is not None else ""
        step("[ AGGREGATE ] | " + ", ".join(format_expression(a.call) for a in aggregates) + win)
        step("[ GROUP BY ] | " + ", ".join(format_expression(g.expression) for g in plan.groups))
    if getattr(plan, "partition_by", ()):
        step("[ PARTITION BY ] | " + ", ".join(format_expression(x) for x in plan.partition_by))
    if getattr(plan, "table_functions", ()):
        step("[ FLAT MAP ] | " + ", ".join(format_expression(x) for x in plan.table_functions))
    if plan.where is not None:
        step(f"[ FILTER ] | {format_expression(plan.where)}")
    step(f"[ SOURCE ] | {src.name} | Topic: {src.topic} | Formats: key {src.key_format.name}, "
         f"value {src.value_format.name}")
    return "\n".join(lines)


def _schema_fields(plan: Any) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    cols = [Column(c.name, c.type, "KEY") for c in plan.key] + [Column(c.name, c.type) for c in plan.value]
    is_table = bool(getattr(plan, "aggregates", ())) or (plan.source.is_table and not getattr(plan, "rekeyed", False))
    return [_field_json(c, is_table) for c in cols], [_field_row(c, is_table) for c in cols]


def _stages_text(stages: list[Any]) -> str:
    """Each stage of a running query: its topics, and its generated code where it has some."""
    parts = []
    for i, stage in enumerate(stages):
        # A table's last stage is wrapped to keep its rows: the kind is the wrapped stage's.
        inner = getattr(stage, "inner", stage)
        kind = type(inner).__name__ + (", materialized" if inner is not stage else "")
        head = (f"Stage {i}: {getattr(stage, 'name', '?')} ({kind}) "
                f"{getattr(stage, 'source_topic', '?')} -> {getattr(stage, 'sink_topic', '?')}")
        pipeline = getattr(stage, "pipeline", None)
        source = getattr(pipeline, "source", None)
        parts.append(head + ("\n" + source.rstrip() if source else ""))
    return "\n\n".join(parts)


def _query_description(qid: str, sql: str, plan: Any, sink: DataSource | None, topology: str,
                       query_type: str, state: str | None) -> dict[str, Any]:
    fields, rows = _schema_fields(plan)
    window = getattr(plan, "window", None)
    return {
        "id": qid, "statementText": sql, "windowType": window.kind if window is not None else None,
        "fields": fields, "sources": [plan.source.name], "sinks": [sink.name] if sink is not None else [],
        "sinkKafkaTopics": [sink.topic] if sink is not None else [],
        "topology": topology, "executionPlan": _plan_text(plan, sink),
        "overriddenProperties": {}, "ksqlHostQueryStatus": {"embedded": state} if state else {},
        "queryType": query_type, "queryErrors": [], "state": state,
        "fieldRows": rows,
    }


def explain(engine: "Engine", stmt: ast.Explain, props: dict[str, Any]) -> Result:
    """EXPLAIN query_id (a running query) or EXPLAIN <statement> (analyzed, not run)."""
    if stmt.query_id is not None:
        qid = stmt.query_id if stmt.query_id in engine.catalog.queries else stmt.query_id.upper()
        info = engine.catalog.queries.get(qid)
        running = engine.queries.get(qid)
        if info is None or running is None:
            raise KsqlStatementException(
                f"Query with id:{stmt.query_id} does not exist, use SHOW QUERIES to view the full "
                "set of running queries.")
        plan = _reanalyze(engine, info.sql, props)
        stages = list(getattr(running, "stages", None) or [])
        topology = _stages_text(stages) if stages else getattr(getattr(running, "pipeline", None), "source", "")
        state, errors = engine.query_state(qid)
        desc = _query_description(qid, info.sql, plan, running.sink, topology, "PERSISTENT", state)
        # ksqlDB's QueryError entities.
        desc["queryErrors"] = [{"timestamp": ts, "errorMessage": message, "type": "UNKNOWN"}
                               for ts, message in errors]
    else:
        desc = _explain_statement(engine, stmt.statement, props)
    return Result(stmt.text, "queryDescription", columns=("Field", "Type"), rows=list(desc["fieldRows"]),
                  entity={"@type": "queryDescription", "statementText": stmt.text, "queryDescription": desc})


def _query_of(statement: ast.Statement | None) -> tuple[ast.Query, str | None] | None:
    if isinstance(statement, ast.QueryStatement):
        return statement.query, None
    if isinstance(statement, ast.CreateAsSelect):
        return statement.query, statement.name
    if isinstance(statement, ast.InsertInto):
        return statement.query, statement.target
    return None


def _analyzer(engine: "Engine", props: dict[str, Any]) -> Any:
    from streamsql.analyzer import QueryAnalyzer

    return QueryAnalyzer(engine.catalog, engine.registry, props)


def _reanalyze(engine: "Engine", sql: str, props: dict[str, Any]) -> Any:
    """The plan of a running query, from its SQL (the catalog keeps no plan objects).

    A CREATE ... AS SELECT's own sink is in the catalog by now; analyzing against the same
    catalog is harmless because the analyzer only reads the FROM sources."""
    from streamsql.parser import parse_statement

    found = _query_of(parse_statement(sql))
    if found is None:  # pragma: no cover - persistent queries are always CSAS/CTAS/INSERT
        raise KsqlStatementException("The provided statement does not run a ksql query")
    return _analyzer(engine, props).analyze(found[0], found[1])


def _explain_statement(engine: "Engine", statement: ast.Statement | None,
                       props: dict[str, Any]) -> dict[str, Any]:
    from streamsql.analyzer import QueryPlan, sink_source
    from streamsql.runtime.pipeline import build_pipeline

    found = _query_of(statement)
    if found is None or statement is None:
        raise KsqlStatementException("The provided statement does not run a ksql query")
    query, sink_name = found
    persistent = not isinstance(statement, ast.QueryStatement)
    plan = _analyzer(engine, props).analyze(query, sink_name, persistent=persistent)
    sink: DataSource | None = None
    if isinstance(statement, ast.CreateAsSelect):
        sink = sink_source(statement, plan, props, plan.source.partitions)
    elif isinstance(statement, ast.InsertInto):
        sink = engine.catalog.source(statement.target)
    query_type = "PERSISTENT" if persistent else "PUSH"
    topology = ""
    if type(plan) is QueryPlan:
        # Stateless: the fused pipeline is cheap to generate and shows what would run.
        # (Aggregations and joins build state stores and internal topics: not built here.)
        noop = lambda *_: None  # noqa: E731 - nothing runs, nothing to log
        if sink is not None:
            pipeline = build_pipeline(plan, engine.registry, engine.codec(plan.source, "key"),
                                      engine.codec(plan.source, "value"), engine.codec(sink, "key"),
                                      engine.codec(sink, "value"), noop, sink=sink)
        else:
            pipeline = build_pipeline(plan, engine.registry, engine.codec(plan.source, "key"),
                                      engine.codec(plan.source, "value"), None, None, noop, rows=True)
        topology = pipeline.source
    return _query_description("", statement.text, plan, sink, topology, query_type, None)


# ================================================================================= PRINT
def _resolve_topic(names: dict[str, Any], wanted: str) -> str | None:
    if wanted in names:
        return wanted
    # An unquoted name is upper-cased by the parser; accept it when it matches exactly one
    # topic ignoring case (users write PRINT pageviews for topic 'pageviews').
    matches = [n for n in names if n.lower() == wanted.lower()]
    return matches[0] if len(matches) == 1 else None


def format_rowtime(ms: int) -> str:
    """``2024/01/01 00:00:00.000 Z``, as PRINT shows a record's timestamp."""
    ts = _dt.datetime.fromtimestamp(ms / 1000, tz=_dt.timezone.utc)
    return ts.strftime("%Y/%m/%d %H:%M:%S.") + f"{ms % 1000:03d} Z"


def _declared_kafka_type(fmt: str, columns: tuple[Column, ...]) -> BaseType | None:
    """The type of a source's single KAFKA-format column (PRINT's hint for 8-byte records)."""
    if fmt == "KAFKA" and len(columns) == 1:
        return columns[0].type.base
    return None


async def print_topic(engine: "Engine", stmt: ast.PrintTopic, props: dict[str, Any]) -> Result:
    """PRINT topic [FROM BEGINNING] [INTERVAL n] [LIMIT n]: a 'stream' result whose rows are
    one-element tuples holding ksqlDB-style lines: first the detected formats (and, FROM
    BEGINNING, the log start offsets printing starts at), then one line per record."""
    topics = await engine.log.list_topics()
    name = _resolve_topic(topics, stmt.topic)
    if name is None:
        raise KsqlStatementException(
            f"Could not find topic '{stmt.topic}', or the KSQL user does not have permissions to "
            "list the topic. Topic names are case-sensitive.")
    source = next((s for s in engine.catalog.sources.values() if s.topic == name), None)
    interval = max(1, stmt.interval or 1)
    stream = _print_records(engine, name, source, stmt.from_beginning, interval, stmt.limit)
    return Result(stmt.text, "stream", columns=("PRINT",), stream=stream,
                  entity={"@type": "print", "topic": name})


async def _print_records(engine: "Engine", topic: str, source: DataSource | None, from_beginning: bool,
                         interval: int, limit: int | None) -> AsyncIterator[tuple[str]]:
    log_ = engine.log
    positions = await (log_.begin_offsets(topic) if from_beginning else log_.end_offsets(topic))
    # FROM BEGINNING starts at each partition's log start, which retention moves forward:
    # say where, so a user does not take the missing oldest records for lost ones.
    start_line = f"Log start offsets: {offsets_text(positions)}" if from_beginning else None
    from streamsql.record_formatter import RecordFormatter

    formatter = RecordFormatter(
        engine.schema_registry, topic,
        _declared_kafka_type(source.key_format.name, source.schema.key) if source else None,
        _declared_kafka_type(source.value_format.name, source.schema.value_format_columns) if source else None)
    key_text = value_text = None
    seen = printed = 0
    header_done = False
    if limit is not None and limit <= 0:
        return
    while True:
        got = False
        for p, off in enumerate(positions):
            batch = await log_.fetch(topic, p, off, 500)
            if not len(batch):
                continue
            got = True
            positions[p] = batch.offsets[-1] + 1
            for i in range(len(batch)):
                seen += 1
                if (seen - 1) % interval:
                    continue
                key, value = batch.keys[i], batch.values[i]
                if not header_done:
                    # ksqlDB's header: the formats the first record could be in.
                    yield (f"Key format: {formatter.detect(key, True).formats}",)
                    yield (f"Value format: {formatter.detect(value, False).formats}",)
                    if start_line is not None:
                        yield (start_line,)
                    header_done = True
                # Each side is rendered as its first non-null record says.
                if key_text is None and key is not None:
                    key_text = formatter.detect(key, True).text
                if value_text is None and value is not None:
                    value_text = formatter.detect(value, False).text
                shown_key = "<null>" if key is None else key_text(key)
                shown_value = "<null>" if value is None else value_text(value)
                yield (f"rowtime: {format_rowtime(batch.timestamps[i])}, "
                       f"key: {shown_key}, value: {shown_value}, partition: {p}",)
                printed += 1
                if limit is not None and printed >= limit:
                    return
        if not got:
            await asyncio.sleep(0.1)

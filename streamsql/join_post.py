"""GROUP BY and PARTITION BY over a join, planned as ksqlDB plans them.

The join's result row (every column of every source, pseudo columns included) is seen as a
source of its own, the *joined source*: its columns are named ``ALIAS_COL`` (ksqlDB's joined
schema) and its key is the join key (``ROWKEY``). The query, its column references rewritten
to those names, is then analyzed as an ordinary single-source query over it:

- GROUP BY: an ``AggregatePlan`` over the joined source, kept as the ``JoinPlan``'s ``then``.
  At run time the last join step hands its rows to the group-by (in the join stage for a
  stream join, through an internal topic for a table join), then the aggregate stage
  (``streamsql.runtime.join.build_join_stages``).
- PARTITION BY: the resulting ``QueryPlan``'s key, value and WHERE are rewritten back over
  the join's sides, and the join step projects them directly: the sink is written keyed by
  the PARTITION BY expressions (a stream re-key needs no repartition topic).

Result columns are named by ksqlDB's rules for joins: an unaliased column is ``COL`` when one
source has it, else ``ALIAS_COL``; a star expands, per source, to its value columns, its
pseudo columns and its key columns, all ``ALIAS_COL``.
"""
from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from streamsql import ast
from streamsql import expressions as e
from streamsql.catalog import DataSource
from streamsql.errors import KsqlStatementException
from streamsql.join_analyzer import _INTERNAL, SYNTHETIC_KEY, JoinPlan, JoinSide, star_targets
from streamsql.schema import PSEUDO_COLUMNS, Column, LogicalSchema
from streamsql.types import SqlType

if TYPE_CHECKING:
    from streamsql.analyzer import QueryAnalyzer

_WINDOW_BOUNDS = ("WINDOWSTART", "WINDOWEND")


def joined_source(name: str, left: JoinSide, right: JoinSide, key_type: SqlType, kind: str
                  ) -> tuple[DataSource, dict[tuple[str, str], str]]:
    """The joined source (columns in the order of the join's row: left then right, each
    side's key, value and pseudo columns) and the name of each (alias, column)."""
    names: dict[tuple[str, str], str] = {}
    value: list[Column] = []
    for alias, col in left.row + right.row:
        column = f"{alias}_{col.name}"
        names[(alias, col.name)] = column
        value.append(Column(column, col.type, "VALUE"))
    schema = LogicalSchema((Column(SYNTHETIC_KEY, key_type, "KEY"),), tuple(value))
    table = kind in ("TABLE_TABLE", "FOREIGN_KEY")
    source = DataSource(name=name, kind="TABLE" if table else "STREAM", schema=schema,
                        topic=f"<{name}>", key_format=_INTERNAL, value_format=_INTERNAL)
    return source, names


def analyze_post_join(analyzer: "QueryAnalyzer", query: ast.Query, sink_name: str | None,
                      persistent: bool, clause: ast.JoinClause, left: JoinSide, right: JoinSide,
                      kind: str, key_type: SqlType, previous: JoinPlan | None, index: int,
                      source_names: tuple[tuple[str, str], ...], qualify) -> JoinPlan:
    """The last join step of a query with GROUP BY or PARTITION BY (see the module docstring)."""
    from streamsql.analyzer import AggregatePlan, OutputColumn, QueryAnalyzer

    grouped = bool(query.group_by) or query.window is not None
    source, names = joined_source(f"{sink_name or 'QUERY'}_JOINED", left, right, key_type, kind)
    back = {n: e.ColumnRef(col, alias) for (alias, col), n in names.items()}
    aliases = dict(source_names)
    rows = left.row + right.row
    # The real (non-pseudo) columns of each source, by alias, in row order.
    cols_by_alias: dict[str, list[Column]] = {}
    for alias, col in rows:
        cols_by_alias.setdefault(alias, [])
        if col.namespace != "PSEUDO":
            cols_by_alias[alias].append(col)

    def joined(x: e.Expression) -> e.Expression:
        """``x`` (qualified) over the joined source's column names."""
        def fn(node: e.Expression) -> e.Expression | None:
            if isinstance(node, e.ColumnRef) and node.source is not None:
                found = names.get((node.source, node.name))
                if found is not None:
                    return e.ColumnRef(found, location=node.location)
            return None
        return qualify(x).transform(fn)

    def column_name(written: e.Expression, x: e.Expression) -> str | None:
        """ksqlDB's name of an unaliased column reference of a join's projection."""
        if not isinstance(written, e.ColumnRef) or not isinstance(x, e.ColumnRef) or x.source is None:
            return None
        owners = len(cols_by_alias) if x.name in PSEUDO_COLUMNS else sum(
            1 for cols in cols_by_alias.values() if any(c.name == x.name for c in cols))
        return f"{x.source}_{x.name}" if owners > 1 else x.name

    partition_by = tuple(joined(p) for p in query.partition_by)
    items: list[ast.SelectItem] = []
    for item in query.select:
        if isinstance(item, ast.AllColumns):
            targets = star_targets(item, aliases, cols_by_alias)
            if partition_by:
                # As for a single source, PARTITION BY expressions that are not columns join
                # the star's columns.
                items += [ast.SingleColumn(p) for p in partition_by if not isinstance(p, e.ColumnRef)]
            for alias in targets:
                # ksqlDB's joined schema: value columns, pseudo columns, then key columns.
                side = [(a, c) for a, c in rows if a == alias]
                ordered = [c for _, c in side if c.namespace not in ("KEY", "PSEUDO")] + \
                    [c for _, c in side if c.namespace == "PSEUDO"] + \
                    [c for _, c in side if c.namespace == "KEY"]
                items += [ast.SingleColumn(e.ColumnRef(names[(alias, c.name)])) for c in ordered]
        elif isinstance(item, ast.SingleColumn):
            x = qualify(item.expression)
            if grouped:
                for node in x.walk():
                    if isinstance(node, e.ColumnRef) and node.source is None and node.name in _WINDOW_BOUNDS:
                        # ksqlDB does not resolve window bounds over a join's aggregation
                        # (https://github.com/confluentinc/ksql/issues/5931).
                        raise KsqlStatementException(f"SELECT column '{node.name}' cannot be resolved.")
            rewritten = joined(item.expression)
            alias_name = item.alias
            if alias_name is None:
                name = column_name(item.expression, x)
                if name is not None and not (isinstance(rewritten, e.ColumnRef) and rewritten.name == name):
                    alias_name = name
            items.append(ast.SingleColumn(rewritten, alias_name))
        else:
            raise KsqlStatementException("Struct field expansion is not supported in joins yet.")
    rewritten_query = replace(
        query, select=tuple(items), from_=ast.AliasedRelation(source.name),
        where=joined(query.where) if query.where is not None else None,
        group_by=tuple(joined(g) for g in query.group_by), partition_by=partition_by,
        having=joined(query.having) if query.having is not None else None)

    class _JoinedAnalyzer(QueryAnalyzer):
        """The query's analyzer, with the joined source as the only source it reads."""

        def _source(self, name: str) -> DataSource:
            return source if name == source.name else super()._source(name)

    try:
        plan = _JoinedAnalyzer(analyzer.catalog, analyzer.registry, analyzer.config).analyze(
            rewritten_query, sink_name, persistent)
    except KsqlStatementException as exc:
        # The joined source is no source of the user's: its columns are named unqualified.
        text = str(exc)
        if f"{source.name}." in text:
            raise KsqlStatementException(text.replace(f"{source.name}.", "")) from None
        raise
    if isinstance(plan, AggregatePlan):
        return JoinPlan(left, right, clause.join_type, kind, clause.within, key_type, None, plan.key,
                        plan.value, plan.schema, query.limit, previous, index, source_names,
                        plan.projection, then=plan)

    def over_sides(x: e.Expression) -> e.Expression:
        """``x`` over the joined source rewritten back over the join's sides."""
        return x.transform(lambda n: back.get(n.name) if isinstance(n, e.ColumnRef) else None)

    def columns(cols: "tuple[OutputColumn, ...]") -> "tuple[OutputColumn, ...]":
        return tuple(OutputColumn(c.name, over_sides(c.expression), c.type) for c in cols)

    if plan.table_functions:
        raise KsqlStatementException("Table functions are not supported with joins yet.")
    where = over_sides(plan.where) if plan.where is not None else None
    return JoinPlan(left, right, clause.join_type, kind, clause.within, key_type, where,
                    columns(plan.key), columns(plan.value), plan.schema, query.limit, previous, index,
                    source_names, plan.projection)

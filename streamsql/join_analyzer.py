"""Analysis of joins: which sides, which kind of join, the join key, and the joined projection.

A two-way join ``left [type] JOIN right [WITHIN ...] ON a = b`` becomes a ``JoinPlan``:

- each side's source, alias and join-key expression (over that side alone);
- the kind: stream-stream (needs WITHIN), stream-table (joins on the table's primary key),
  table-table (on the right table's primary key; on the left's too unless it is a foreign-key
  join);
- the result's key column, named as ksqlDB names it (the left join column qualified as
  ``L_COL``, or the synthetic ``ROWKEY`` for outer joins and expression joins), and the value
  columns, with expressions over the joined row.

In joined expressions every column reference is qualified by its side's alias; ``ROWKEY`` is
the join key. Names of unaliased columns: ``ALIAS_COL`` for qualified references, ``COL`` for
unqualified ones (ksqlDB's rules).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from streamsql import ast
from streamsql import expressions as e
from streamsql.catalog import DataSource
from streamsql.codegen import ExpressionCompiler, Scope, ScopeColumn
from streamsql.errors import KsqlStatementException
from streamsql.schema import PSEUDO_COLUMNS, RESERVED_COLUMN_NAMES, Column, LogicalSchema
from streamsql.types import SqlType

if TYPE_CHECKING:
    from streamsql.analyzer import OutputColumn, QueryAnalyzer

SYNTHETIC_KEY = "ROWKEY"


@dataclass(frozen=True)
class JoinSide:
    """One input of a join: its source, alias, and join expression over its own columns."""

    source: DataSource
    alias: str
    key_expr: e.Expression

    @property
    def columns(self) -> tuple[Column, ...]:
        """The side's row as the join stage sees it: key, value and pseudo columns."""
        return self.source.schema.columns + tuple(Column(n, t, "PSEUDO") for n, t in PSEUDO_COLUMNS.items())


@dataclass(frozen=True)
class JoinPlan:
    """The typed plan of a two-way join (see the module docstring)."""

    left: JoinSide
    right: JoinSide
    join_type: str  # INNER, LEFT, RIGHT, FULL
    kind: str  # STREAM_STREAM, STREAM_TABLE, TABLE_TABLE
    within: ast.WithinExpression | None
    key_type: SqlType
    where: e.Expression | None
    key: tuple["OutputColumn", ...]
    value: tuple["OutputColumn", ...]
    schema: LogicalSchema
    limit: int | None = None

    @property
    def source(self) -> DataSource:
        """The left source: what the result inherits formats and partitions from."""
        return self.left.source

    @property
    def produces_table(self) -> bool:
        return self.kind == "TABLE_TABLE"


def joined_scope(plan_left: JoinSide, plan_right: JoinSide, key_type: SqlType | None) -> Scope:
    """Qualified columns of both sides as locals ``l{i}`` / ``r{i}``, and ROWKEY as ``jk``."""
    scope = Scope()
    for prefix, side in (("l", plan_left), ("r", plan_right)):
        for i, col in enumerate(side.columns):
            sc = ScopeColumn(f"{prefix}{i}", col.type)
            scope.qualified[(side.alias, col.name)] = sc
            if side.source.name != side.alias:
                scope.qualified[(side.source.name, col.name)] = sc
    if key_type is not None:
        scope.columns[SYNTHETIC_KEY] = ScopeColumn("jk", key_type)
    return scope


def analyze_join(analyzer: "QueryAnalyzer", query: ast.Query, sink_name: str | None,
                 persistent: bool) -> JoinPlan:
    from streamsql.analyzer import OutputColumn

    rel = query.from_
    assert isinstance(rel, ast.Join)
    if len(rel.joins) > 1:
        raise KsqlStatementException("Joins of more than two sources are not supported yet.")
    if query.group_by or query.window is not None:
        raise KsqlStatementException("GROUP BY over a join is not supported yet.")
    if query.partition_by:
        raise KsqlStatementException("PARTITION BY over a join is not supported yet.")
    clause = rel.joins[0]
    left_src = analyzer._source(rel.left.name)
    right_src = analyzer._source(clause.right.name)
    left_alias = rel.left.alias or rel.left.name
    right_alias = clause.right.alias or clause.right.name
    if left_alias == right_alias:
        raise KsqlStatementException(
            f"Can not join '{left_src.name}' to '{right_src.name}': self joins require the sources to be aliased.")
    aliases = {left_alias: left_src, right_alias: right_src}
    sides = {left_alias: left_src.schema.columns, right_alias: right_src.schema.columns}

    def check_qualifiers(x: e.Expression) -> None:
        for node in x.walk():
            if isinstance(node, e.ColumnRef) and node.source is not None and node.source not in aliases \
                    and not any(s.name == node.source for s in aliases.values()):
                raise KsqlStatementException(
                    f"Failed to prepare statement: '{node.source}' is not a valid stream/table name or alias.")

    check_qualifiers(clause.criteria)
    for item in query.select:
        if isinstance(item, ast.SingleColumn):
            check_qualifiers(item.expression)

    def qualify(x: e.Expression) -> e.Expression:
        """Every column reference qualified by its side (ambiguity is an error)."""
        def fn(node: e.Expression) -> e.Expression | None:
            if not isinstance(node, e.ColumnRef):
                return None
            if node.source is not None:
                src = node.source
                if src not in aliases:
                    src = next((a for a, s in aliases.items() if s.name == src), src)
                if src not in aliases:
                    raise KsqlStatementException(f"'{node.source}' is not a valid stream/table name or alias.")
                return e.ColumnRef(node.name, src, location=node.location)
            if node.name == SYNTHETIC_KEY:
                return node
            owners = [a for a, cols in sides.items()
                      if any(c.name == node.name for c in cols) or node.name in PSEUDO_COLUMNS]
            if len(owners) > 1:
                where = f"Line: {node.location[0]}, Col: {node.location[1]}: " if node.location else ""
                raise KsqlStatementException(
                    f"{where}Column '{node.name}' is ambiguous. Could be {owners[0]}.{node.name} or "
                    f"{owners[1]}.{node.name}.")
            if not owners:
                return node  # left for the compiler to report as unresolved
            return e.ColumnRef(node.name, owners[0], location=node.location)
        return x.transform(fn)

    # ---- kind of join and validity
    kafka = [src.name for src in (left_src, right_src) if src.value_format.name == "KAFKA"]
    if kafka:
        raise KsqlStatementException(
            f"Source(s) {', '.join(kafka)} are using the 'KAFKA' value format. This format does not yet "
            "support JOIN.")
    left_kind, right_kind = left_src.kind, right_src.kind
    shown_type = "[INNER] JOIN" if clause.join_type == "INNER" else f"[{clause.join_type}] OUTER JOIN"
    if left_kind == "TABLE" and right_kind == "STREAM":
        raise KsqlStatementException(
            "Invalid join order: table-stream joins are not supported; only stream-table joins. Got "
            f"{left_src.name} {shown_type} {right_src.name}.")
    kind = {("STREAM", "STREAM"): "STREAM_STREAM", ("STREAM", "TABLE"): "STREAM_TABLE",
            ("TABLE", "TABLE"): "TABLE_TABLE"}[(left_kind, right_kind)]
    if kind == "STREAM_TABLE" and clause.join_type not in ("INNER", "LEFT"):
        raise KsqlStatementException(
            f"Invalid join type: full-outer join not supported for stream-table join. Got "
            f"{left_src.name} {shown_type} {right_src.name}.")

    # ---- the join criteria: one equality, each side over one source
    crit = qualify(clause.criteria)
    if not isinstance(crit, e.Comparison) or crit.op != "=":
        if isinstance(crit, e.And):
            raise KsqlStatementException(
                f"Invalid join condition: joins on multiple conditions are not yet supported. Got {crit}.")
        raise KsqlStatementException(f"Unsupported join expression: {crit}")

    def side_of(x: e.Expression) -> str | None:
        refs = {c.source for c in x.walk() if isinstance(c, e.ColumnRef)}
        return refs.pop() if len(refs) == 1 else None

    a, b = crit.left, crit.right
    sa, sb = side_of(a), side_of(b)
    for x, s in ((a, sa), (b, sb)):
        if s is None:
            raise KsqlStatementException(
                f"Invalid comparison expression '{x}' in join '{crit}'. Each side of the join comparision "
                "must contain references from exactly one source.")
    if sa == sb:
        raise KsqlStatementException(
            f"Each side of the join must reference exactly one source and not the same source. "
            f"Left side references {sa} and right references {sb}")
    left_expr, right_expr = (a, b) if sa == left_alias else (b, a)
    written = f"{a} = {b}"

    def unqualified(x: e.Expression) -> e.Expression:
        return x.transform(lambda n: e.ColumnRef(n.name) if isinstance(n, e.ColumnRef) else None)

    def is_key(x: e.Expression, src: DataSource) -> bool:
        return isinstance(x, e.ColumnRef) and len(src.schema.key) == 1 and src.schema.key[0].name == x.name

    if kind == "STREAM_TABLE" and not is_key(right_expr, right_src):
        raise KsqlStatementException(
            f"Invalid join condition: stream-table joins require to join on the table's primary key. "
            f"Got {written}.")
    if kind == "TABLE_TABLE" and not (is_key(right_expr, right_src) and is_key(left_expr, left_src)):
        raise KsqlStatementException(
            "Invalid join condition: table-table joins require to join on the primary key of the right "
            f"input table. Got {written}.")

    # ---- types of the join expressions
    lscope = Scope()
    for col in JoinSide(left_src, left_alias, left_expr).columns:
        lscope.qualified[(left_alias, col.name)] = ScopeColumn("x", col.type)
    rscope = Scope()
    for col in JoinSide(right_src, right_alias, right_expr).columns:
        rscope.qualified[(right_alias, col.name)] = ScopeColumn("x", col.type)
    lt = ExpressionCompiler(analyzer.registry, lscope, clause="JOIN ON").compile(left_expr).type
    rt = ExpressionCompiler(analyzer.registry, rscope, clause="JOIN ON").compile(right_expr).type
    for side_src, x in ((left_src, left_expr), (right_src, right_expr)):
        if side_src.window is not None and not is_key(x, side_src):
            raise KsqlStatementException(
                "Implicit repartitioning of windowed sources is not supported. See "
                "https://github.com/confluentinc/ksql/issues/4385.")
    if kind == "STREAM_STREAM" and clause.within is None:
        raise KsqlStatementException(
            "Stream-Stream joins must have a WITHIN clause specified. None was provided. To learn "
            "about how to specify a WITHIN clause with a stream-stream join, please visit: "
            "https://docs.confluent.io/current/ksql/docs/syntax-reference.html#create-stream-as-select")
    if kind != "STREAM_STREAM" and clause.within is not None:
        raise KsqlStatementException(
            f"A window definition was provided for a {kind.replace('_', '-').lower()} join. Windows are "
            "only supported for stream-stream joins.")
    if lt != rt:
        raise KsqlStatementException(
            f"Invalid join condition: types don't match. Got {left_expr}{{{lt}}} = {right_expr}{{{rt}}}.")
    left = JoinSide(left_src, left_alias, unqualified(left_expr))
    right = JoinSide(right_src, right_alias, unqualified(right_expr))
    scope = joined_scope(left, right, lt)
    compiler = ExpressionCompiler(analyzer.registry, scope, clause="SELECT")

    # ---- projection
    # (alias, expression as written, expression qualified by side)
    items: list[tuple[str | None, e.Expression, e.Expression]] = []
    for item in query.select:
        if isinstance(item, ast.AllColumns):
            targets = [left_alias, right_alias] if item.source is None else []
            if item.source is not None:
                src = item.source if item.source in aliases else next(
                    (a for a, s in aliases.items() if s.name == item.source), None)
                if src is None:
                    raise KsqlStatementException(f"'{item.source}' is not a valid stream/table name or alias.")
                targets = [src]
            for t in targets:
                for col in aliases[t].schema.columns:
                    ref = e.ColumnRef(col.name, t)
                    # Columns expanded from a star are always named ALIAS_COL.
                    items.append((f"{t}_{col.name}", ref, ref))
        elif isinstance(item, ast.SingleColumn):
            items.append((item.alias, item.expression, qualify(item.expression)))
        else:
            raise KsqlStatementException("Struct field expansion is not supported in joins yet.")
    where = None
    if query.where is not None:
        where = qualify(query.where)
        ExpressionCompiler(analyzer.registry, scope, clause="WHERE").compile_predicate(where, "WHERE")
    typed: list[tuple[str, e.Expression, SqlType]] = []
    used: set[str] = set()
    for alias_name, written, x in items:
        if isinstance(written, e.ColumnRef) and written.source is None and written.name in RESERVED_COLUMN_NAMES \
                and alias_name is None and persistent:
            raise KsqlStatementException(
                f"Reserved column name in select: `{x.name}`. Please remove or alias the column.")
        ty = compiler.compile(x).type
        if alias_name is not None:
            name = alias_name
        elif isinstance(written, e.ColumnRef):
            # A column both sources have is named ALIAS_COL; any other keeps its name.
            in_both = all(any(c.name == x.name for c in cols) for cols in sides.values())
            name = f"{x.source}_{x.name}" if in_both and x.source else x.name
        elif isinstance(written, e.Dereference):
            name = written.field
        else:
            name = None  # type: ignore[assignment]
        typed.append((name, x, ty))  # type: ignore[arg-type]
        if name:
            used.add(name)
    counter = 0
    named = []
    for name, x, ty in typed:
        if name is None:
            while f"KSQL_COL_{counter}" in used:
                counter += 1
            name = f"KSQL_COL_{counter}"
            used.add(name)
        named.append((name, x, ty))
    seen: set[str] = set()
    for name, _, ty in named:
        if name in seen:
            raise KsqlStatementException(f"Duplicate value columns found in schema: `{name}` {ty}")
        seen.add(name)

    # ---- the key: the join expression as selected, or the synthetic ROWKEY
    columns = [x for x in (left_expr, right_expr) if isinstance(x, e.ColumnRef)]
    synthetic = clause.join_type == "FULL" or not columns
    key_forms = [e.ColumnRef(SYNTHETIC_KEY)] if synthetic else columns
    if clause.join_type == "RIGHT" and not synthetic:
        key_forms = list(reversed(columns))
    # The key is the first item written as the preferred join expression (the left one, for
    # all but RIGHT joins), else the first written as the other.
    preferred = next((x for _, x, _ in named if x == key_forms[0]), None)
    if preferred is None and len(key_forms) > 1:
        preferred = next((x for _, x, _ in named if x == key_forms[1]), None)
    key_col: OutputColumn | None = None
    key_expr: e.Expression | None = None
    values: list[OutputColumn] = []
    if synthetic and preferred is None and any(isinstance(i, ast.AllColumns) and i.source is None
                                               for i in query.select):
        # SELECT * of an outer join carries the synthetic key implicitly.
        key_col = OutputColumn(SYNTHETIC_KEY, e.ColumnRef(SYNTHETIC_KEY), lt)
    for name, x, ty in named:
        if preferred is not None and x == preferred:
            if key_col is not None:
                raise KsqlStatementException(
                    f"The projection contains a key column (`{key_col.name}`) more than once, aliased as: "
                    f"{' and '.join(sorted([key_col.name, name]))}.")
            # The result's key is the join key itself (a right-only row has no left column).
            key_col = OutputColumn(name, e.ColumnRef(SYNTHETIC_KEY), ty)
            key_expr = x
        else:
            values.append(OutputColumn(name, x, ty))
    if key_col is None:
        if persistent:
            shown = SYNTHETIC_KEY if synthetic else " or ".join(str(k) for k in key_forms)
            plural = "s" if len(key_forms) > 1 else ""
            hint = ("\nROWKEY was added as a synthetic key column because the join criteria did not match "
                    "any source column. This expression must be included in the projection and may be "
                    "aliased. " if synthetic else "")
            raise KsqlStatementException(
                "Key missing from projection (ie, SELECT). See https://cnfl.io/2LV7ouS.\n"
                f"The query used to build `{sink_name}` must include the join expression{plural} {shown} in "
                f"its projection (eg, SELECT {str(key_forms[0])}...).{hint}".rstrip())
        key_col = OutputColumn(SYNTHETIC_KEY, e.ColumnRef(SYNTHETIC_KEY), lt)
    if persistent and not values:
        raise KsqlStatementException("The projection contains no value columns.")
    schema = LogicalSchema((Column(key_col.name, key_col.type, "KEY"),),
                           tuple(Column(v.name, v.type, "VALUE") for v in values))
    return JoinPlan(left, right, clause.join_type, kind, clause.within, lt, where, (key_col,),
                    tuple(values), schema, query.limit)


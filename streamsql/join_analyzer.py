"""Analysis of joins: which sides, which kind of join, the join key, and the joined projection.

``a JOIN b ON ... [JOIN c ON ...]`` becomes a chain of ``JoinPlan`` steps. Each step joins a
left side with one source:

- the left side of the first step is the first source; the left side of a later step is the
  previous step's result (every column of the sources joined so far, still qualified by their
  aliases), carried through an internal topic;
- the kind: stream-stream (needs WITHIN), stream-table (joins on the table's primary key),
  table-table (on the right table's primary key);
- the last step carries the result's key column, named as ksqlDB names it (the join column as
  selected, or the synthetic ``ROWKEY`` for outer joins and expression joins), and the value
  columns, with expressions over the joined row.

In joined expressions every column reference is qualified by its source's alias; ``ROWKEY`` is
the join key. Unaliased columns are named ``ALIAS_COL`` when expanded from a star or present in
more than one source, else ``COL`` (ksqlDB's rules).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from streamsql import ast
from streamsql import expressions as e
from streamsql.catalog import DataSource, FormatInfo, WindowInfo
from streamsql.codegen import ExpressionCompiler, Scope, ScopeColumn
from streamsql.errors import KsqlStatementException
from streamsql.formats.base import FormatOptions
from streamsql.formats.common import check_no_map_keys, contains_map
from streamsql.schema import PSEUDO_COLUMNS, RESERVED_COLUMN_NAMES, Column, LogicalSchema
from streamsql.types import BIGINT, SqlType

if TYPE_CHECKING:
    from streamsql.analyzer import AggregatePlan, OutputColumn, QueryAnalyzer

SYNTHETIC_KEY = "ROWKEY"
_INTERNAL = FormatInfo("JSON", FormatOptions(wrap_single_value=True))


@dataclass(frozen=True)
class JoinSide:
    """One input of a join step.

    ``source`` is a real source, or (for the left side of a later step) the synthetic source
    of the previous step's result. ``row`` says what each position of the side's row tuple
    is: (alias, column); ``row_source_columns`` names the column of ``source`` it is read from.
    ``key_expr`` is the join expression over ``source``'s own columns.
    """

    source: DataSource
    key_expr: e.Expression
    row: tuple[tuple[str, Column], ...]
    row_source_columns: tuple[str, ...]

    @property
    def aliases(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(a for a, _ in self.row))

    @classmethod
    def of_source(cls, source: DataSource, alias: str, key_expr: e.Expression) -> "JoinSide":
        cols = source.schema.columns + tuple(Column(n, t, "PSEUDO") for n, t in PSEUDO_COLUMNS.items())
        if source.window is not None:
            # A windowed source's rows carry their window's bounds, after the key columns
            # (where ksqlDB's * puts them: ``S1_ID, S1_WINDOWSTART, S1_WINDOWEND, S1_V``).
            nkey = len(source.schema.key)
            bounds = tuple(Column(n, BIGINT, "WINDOW") for n in ("WINDOWSTART", "WINDOWEND"))
            cols = cols[:nkey] + bounds + cols[nkey:]
        return cls(source, key_expr, tuple((alias, c) for c in cols), tuple(c.name for c in cols))


@dataclass(frozen=True)
class JoinPlan:
    """One step of a join chain (see the module docstring). ``previous`` is the step whose
    result is this step's left side; only the last step has a projection (``key``/``value``)."""

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
    previous: "JoinPlan | None" = None
    index: int = 0
    # The real sources' aliases and names, for qualifier lookups.
    source_names: tuple[tuple[str, str], ...] = ()
    # SELECT order of the result's columns (indexes into key + value), as
    # ``QueryPlan.projection``: a push query shows them so; a join key it did not select is
    # left out.
    projection: tuple[int, ...] | None = None
    # GROUP BY over the join: the aggregation of the joined rows (its source is the joined
    # row, see ``streamsql.join_post``); ``key``/``value``/``schema`` are then its result's.
    then: "AggregatePlan | None" = None

    @property
    def window(self) -> "ast.WindowExpression | None":
        """The WINDOW of an aggregation over the join."""
        return self.then.window if self.then is not None else None

    @property
    def source(self) -> DataSource:
        """The first source: what the result inherits formats and partitions from."""
        step = self
        while step.previous is not None:
            step = step.previous
        return step.left.source

    @property
    def sources(self) -> tuple[DataSource, ...]:
        step, out = self, []
        while step is not None:
            out.insert(0, step.right.source)
            if step.previous is None:
                out.insert(0, step.left.source)
            step = step.previous
        return tuple(out)

    @property
    def produces_table(self) -> bool:
        return self.then is not None or self.kind in ("TABLE_TABLE", "FOREIGN_KEY")


def star_targets(item: ast.AllColumns, aliases: dict, cols_by_alias: dict) -> list[str]:
    """The aliases of the sources a ``*`` or ``X.*`` of a join's SELECT expands."""
    if item.source is None:
        return list(cols_by_alias)
    found = item.source if item.source in aliases else next(
        (a for a, n in aliases.items() if n == item.source), None)
    if found is None:
        raise KsqlStatementException(f"'{item.source}' is not a valid stream/table name or alias.")
    return [found]


def joined_scope(left: JoinSide, right: JoinSide, key_type: SqlType | None,
                 source_names: tuple[tuple[str, str], ...] = ()) -> Scope:
    """Qualified columns of both sides as locals ``l{i}`` / ``r{i}``, and ROWKEY as ``jk``."""
    scope = Scope()
    names = dict(source_names)
    for prefix, side in (("l", left), ("r", right)):
        for i, (alias, col) in enumerate(side.row):
            sc = ScopeColumn(f"{prefix}{i}", col.type)
            scope.qualified[(alias, col.name)] = sc
            if names.get(alias, alias) != alias:
                scope.qualified[(names[alias], col.name)] = sc
    if key_type is not None:
        scope.columns[SYNTHETIC_KEY] = ScopeColumn("jk", key_type)
    return scope


def analyze_join(analyzer: "QueryAnalyzer", query: ast.Query, sink_name: str | None,
                 persistent: bool) -> JoinPlan:
    rel = query.from_
    assert isinstance(rel, ast.Join)
    # GROUP BY / PARTITION BY apply to the joined rows (``streamsql.join_post``).
    grouped = bool(query.group_by) or query.window is not None
    first = analyzer._source(rel.left.name)
    aliases: dict[str, DataSource] = {rel.left.alias or rel.left.name: first}
    for clause in rel.joins:
        src = analyzer._source(clause.right.name)
        alias = clause.right.alias or clause.right.name
        if alias in aliases:
            raise KsqlStatementException(
                f"Can not join '{aliases[alias].name}' to '{src.name}': self joins require the sources "
                "to be aliased.")
        aliases[alias] = src
    kafka = [s.name for s in aliases.values() if s.value_format.name == "KAFKA"]
    if kafka:
        raise KsqlStatementException(
            f"Source(s) {', '.join(kafka)} are using the 'KAFKA' value format. This format does not yet "
            "support JOIN.")
    columns_of = {a: [c.name for c in s.schema.columns] for a, s in aliases.items()}

    def resolve_alias(name: str) -> str | None:
        if name in aliases:
            return name
        return next((a for a, s in aliases.items() if s.name == name), None)

    def check_qualifiers(x: e.Expression) -> None:
        for node in x.walk():
            if isinstance(node, e.ColumnRef) and node.source is not None and resolve_alias(node.source) is None:
                raise KsqlStatementException(
                    f"Failed to prepare statement: '{node.source}' is not a valid stream/table name or alias.")

    for clause in rel.joins:
        check_qualifiers(clause.criteria)
    for item in query.select:
        if isinstance(item, ast.SingleColumn):
            check_qualifiers(item.expression)

    def qualify(x: e.Expression) -> e.Expression:
        """Every column reference qualified by its source's alias (ambiguity is an error)."""
        def fn(node: e.Expression) -> e.Expression | None:
            if not isinstance(node, e.ColumnRef):
                return None
            if node.source is not None:
                return e.ColumnRef(node.name, resolve_alias(node.source), location=node.location)
            if node.name == SYNTHETIC_KEY:
                return node
            owners = [a for a, cols in columns_of.items() if node.name in cols or node.name in PSEUDO_COLUMNS]
            if len(owners) > 1:
                where = f"Line: {node.location[0]}, Col: {node.location[1]}: " if node.location else ""
                raise KsqlStatementException(
                    f"{where}Column '{node.name}' is ambiguous. Could be {owners[0]}.{node.name} or "
                    f"{owners[1]}.{node.name}.")
            if not owners:
                return node  # left for the compiler to report as unresolved
            return e.ColumnRef(node.name, owners[0], location=node.location)
        return x.transform(fn)

    for clause in rel.joins:
        _join_criteria(clause, clause.right.alias or clause.right.name, qualify)
    source_names = tuple((a, s.name) for a, s in aliases.items())
    left = JoinSide.of_source(first, rel.left.alias or rel.left.name, e.NullLiteral())
    left_kind = first.kind
    previous: JoinPlan | None = None
    key_forms_so_far: list[e.Expression] = []
    steps = list(rel.joins)
    for index, clause in enumerate(steps):
        right_alias = clause.right.alias or clause.right.name
        right_src = aliases[right_alias]
        step = _analyze_step(analyzer, clause, index, left, left_kind, right_src, right_alias, qualify,
                             source_names, first.window)
        crit_left, crit_right, kind, key_type, written = step
        # Which expressions stand for the join key (the key may be selected as any of them).
        columns = [x for x in (crit_left, crit_right) if isinstance(x, e.ColumnRef)]
        if kind == "FOREIGN_KEY":
            # The result is keyed like the left table.
            pk = first.schema.key[0]
            columns = [e.ColumnRef(pk.name, left.aliases[0])]
            key_type = pk.type
            key_forms_so_far = columns
        elif index > 0 and crit_left in key_forms_so_far:
            key_forms_so_far = key_forms_so_far + [crit_right]
        else:
            key_forms_so_far = columns
        right = JoinSide.of_source(right_src, right_alias, _unqualified(crit_right))
        left = JoinSide(left.source, _over_side(crit_left, left), left.row, left.row_source_columns)
        if index < len(steps) - 1:
            plan = JoinPlan(left, right, clause.join_type, kind, clause.within, key_type, None, (), (),
                            LogicalSchema(), None, previous, index, source_names)
            previous = plan
            left = _result_side(plan, sink_name or "QUERY")
            left_kind = "TABLE" if kind in ("TABLE_TABLE", "FOREIGN_KEY") else "STREAM"
            continue
        if grouped or query.partition_by:
            from streamsql.join_post import analyze_post_join

            return analyze_post_join(analyzer, query, sink_name, persistent, clause, left, right, kind,
                                     key_type, previous, index, source_names, qualify)
        return _final_step(analyzer, query, sink_name, persistent, clause, left, right, kind, key_type,
                           previous, index, source_names, qualify, key_forms_so_far, crit_left, crit_right)
    raise AssertionError("a join has at least one step")


# Key formats whose bytes carry a schema id: ksqlDB always repartitions both sides of a join
# over them (equal keys need not be equal bytes), re-keying the right side's windows as the left's.
_REGISTRY_KEY_FORMATS = frozenset({"AVRO", "JSON_SR", "PROTOBUF"})


def _check_windowing(left_name: str, left: WindowInfo | None, right_src: DataSource,
                     left_key_format: str | None = None) -> None:
    """ksqlDB joins windowed keys only to keys windowed the same way: both sides windowed or
    neither, sessions only with sessions, and time windows only with the same window (else one
    side's key would have to be re-serialized, i.e. repartitioned, which windowed sources can't)."""
    right = right_src.window
    if left is None and right is None:
        return
    if left is None or right is None:
        def describe(w: WindowInfo | None) -> str:
            return f"{w.kind} windowed" if w is not None else "not windowed"
        raise KsqlStatementException(
            f"Can not join windowed source to non-windowed source.\n`{left_name}` is {describe(left)}\n"
            f"`{right_src.name}` is {describe(right)}")
    if (left.kind == "SESSION") != (right.kind == "SESSION"):
        raise KsqlStatementException(
            f"Incompatible windowed sources.\nLeft source: {left.kind}\nRight source: {right.kind}\n"
            "Session windowed sources can only be joined to other session windowed sources, and may still "
            "not result in expected behaviour as session bounds must be an exact match for the join to "
            "work\nHopping and tumbling windowed sources can only be joined to other hopping and tumbling "
            "windowed sources")
    if left != right and not (left_key_format in _REGISTRY_KEY_FORMATS
                              and right_src.key_format.name in _REGISTRY_KEY_FORMATS):
        raise KsqlStatementException(
            "Implicit repartitioning of windowed sources is not supported. See "
            "https://github.com/confluentinc/ksql/issues/4385.")


def _system_column_exists(analyzer: "QueryAnalyzer", aliases: dict[str, str], ref: e.ColumnRef) -> bool:
    """Whether the (qualified) system column ``ref`` exists: pseudo columns always do, window
    bounds on windowed sources (an unqualified reference is checked by the compiler)."""
    if ref.name in PSEUDO_COLUMNS or ref.source is None:
        return True
    name = aliases.get(ref.source, ref.source)
    return analyzer._source(name).window is not None


def _joined_names(x: e.Expression) -> e.Expression:
    """``x`` over the joined row's column names: ksqlDB filters a join's result, whose columns
    are named ``ALIAS_COL``, so its WHERE errors quote ``I1_BAR`` for ``I1.BAR``."""
    return x.transform(lambda n: e.ColumnRef(f"{n.source}_{n.name}")
                       if isinstance(n, e.ColumnRef) and n.source is not None else None)


def _unqualified(x: e.Expression) -> e.Expression:
    return x.transform(lambda n: e.ColumnRef(n.name) if isinstance(n, e.ColumnRef) else None)


def _over_side(x: e.Expression, side: JoinSide) -> e.Expression:
    """A qualified expression rewritten over the side's own source columns."""
    positions = {(a, c.name): side.row_source_columns[i] for i, (a, c) in enumerate(side.row)}

    def fn(node: e.Expression) -> e.Expression | None:
        if isinstance(node, e.ColumnRef) and node.source is not None:
            return e.ColumnRef(positions.get((node.source, node.name), node.name))
        return None
    return x.transform(fn)


def _result_side(plan: JoinPlan, sink_name: str) -> JoinSide:
    """The synthetic source of a join step's result: its rows are both sides' rows."""
    row = plan.left.row + plan.right.row
    value = tuple(Column(f"C{i}", col.type, "VALUE") for i, (_, col) in enumerate(row))
    schema = LogicalSchema((Column("JOINKEY", plan.key_type, "KEY"),), value)
    kind = "TABLE" if plan.kind in ("TABLE_TABLE", "FOREIGN_KEY") else "STREAM"
    source = DataSource(name=f"{sink_name}_JOIN_{plan.index}", kind=kind, schema=schema,
                        topic=f"<join step {plan.index}>", key_format=_INTERNAL, value_format=_INTERNAL)
    return JoinSide(source, e.NullLiteral(), row, tuple(c.name for c in value))


def _join_criteria(clause: ast.JoinClause, right_alias: str,
                   qualify) -> tuple[e.Comparison, e.Expression, e.Expression]:
    """The criteria of a join clause, qualified, and its (left, right) expressions. ksqlDB's
    analyzer checks every clause's criteria this way before planning any join step."""
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
            f"Left side references `{sa}` and right references `{sb}`")
    if right_alias not in (sa, sb):
        left_ref, right_ref = (sa, sb)
        raise KsqlStatementException(
            f"A join criteria is expected to reference the source (`{right_alias}`) in the FROM clause, "
            f"instead the right source references `{right_ref}` and the left source references `{left_ref}`")
    left_expr, right_expr = (a, b) if sb == right_alias else (b, a)
    return crit, left_expr, right_expr


def _analyze_step(analyzer: "QueryAnalyzer", clause: ast.JoinClause, index: int, left: JoinSide,
                  left_kind: str, right_src: DataSource, right_alias: str, qualify,
                  source_names: tuple[tuple[str, str], ...], left_window: WindowInfo | None):
    """Validate one join step; returns (left expression, right expression, kind, key type,
    criteria as written), the expressions qualified. ``left_window``: how the left side's
    keys are windowed (a join result keeps its first source's windowing)."""
    names = dict(source_names)
    # A later step's left side is named by its leftmost source, as ksqlDB does.
    left_name = names.get(left.aliases[0], left.aliases[0])
    shown_type = "[INNER] JOIN" if clause.join_type == "INNER" else f"[{clause.join_type}] OUTER JOIN"
    if left_kind == "TABLE" and right_src.kind == "STREAM":
        raise KsqlStatementException(
            "Invalid join order: table-stream joins are not supported; only stream-table joins. Got "
            f"{left_name} {shown_type} {right_src.name}.")
    kind = {("STREAM", "STREAM"): "STREAM_STREAM", ("STREAM", "TABLE"): "STREAM_TABLE",
            ("TABLE", "TABLE"): "TABLE_TABLE"}[(left_kind, right_src.kind)]
    if kind == "STREAM_TABLE" and clause.join_type not in ("INNER", "LEFT"):
        raise KsqlStatementException(
            f"Invalid join type: full-outer join not supported for stream-table join. Got "
            f"{left_name} {shown_type} {right_src.name}.")
    crit, left_expr, right_expr = _join_criteria(clause, right_alias, qualify)
    a, b = crit.left, crit.right
    written = f"{a} = {b}"

    def is_key(x: e.Expression, src: DataSource | None) -> bool:
        return src is not None and isinstance(x, e.ColumnRef) and len(src.schema.key) == 1 \
            and src.schema.key[0].name == x.name

    left_src = dict((al, None) for al in left.aliases)
    first_left = left.source if index == 0 else None
    if kind == "STREAM_TABLE" and not is_key(right_expr, right_src):
        raise KsqlStatementException(
            f"Invalid join condition: stream-table joins require to join on the table's primary key. "
            f"Got {written}.")
    if kind == "TABLE_TABLE" and not is_key(right_expr, right_src):
        raise KsqlStatementException(
            "Invalid join condition: table-table joins require to join on the primary key of the right "
            f"input table. Got {written}.")
    if kind == "TABLE_TABLE" and index == 0 and not is_key(left_expr, first_left):
        if clause.join_type not in ("INNER", "LEFT"):
            raise KsqlStatementException(
                f"Invalid join type: foreign-key table-table joins only support INNER and LEFT joins. Got "
                f"{left_name} {shown_type} {right_src.name}.")
        # A left column (not the left key) joined to the right table's key: a foreign-key join.
        kind = "FOREIGN_KEY"
        if first_left.window is not None or right_src.window is not None:
            raise KsqlStatementException(
                "Foreign-key table-table joins are not supported on windowed tables.")
    del left_src
    _check_windowing(left_name, left_window, right_src,
                     first_left.key_format.name if first_left is not None else None)
    for side_src, x in ((first_left, left_expr), (right_src, right_expr)):
        if side_src is not None and side_src.window is not None and not is_key(x, side_src):
            raise KsqlStatementException(
                "Implicit repartitioning of windowed sources is not supported. See "
                "https://github.com/confluentinc/ksql/issues/4385.")
    # Types of the two join expressions, each over its own side.
    right_side = JoinSide.of_source(right_src, right_alias, e.NullLiteral())
    scope = joined_scope(left, right_side, None, source_names)
    comp = ExpressionCompiler(analyzer.registry, scope, clause="JOIN ON")
    lt = comp.compile(left_expr).type
    rt = comp.compile(right_expr).type
    if kind == "STREAM_STREAM" and clause.within is None:
        raise KsqlStatementException(
            "Stream-Stream joins must have a WITHIN clause specified. None was provided. To learn "
            "about how to specify a WITHIN clause with a stream-stream join, please visit: "
            "https://docs.confluent.io/current/ksql/docs/syntax-reference.html#create-stream-as-select")
    if kind != "STREAM_STREAM" and clause.within is not None:
        raise KsqlStatementException(
            f"A window definition was provided for a {kind.replace('_', '-').lower()} join. Windows are "
            "only supported for stream-stream joins.")
    if lt != rt and kind != "FOREIGN_KEY":
        raise KsqlStatementException(
            f"Invalid join condition: types don't match. Got {left_expr}{{{lt}}} = {right_expr}{{{rt}}}.")
    for x, ty in ((left_expr, lt), (right_expr, rt)):
        if contains_map(ty):
            # A side joined on a MAP is repartitioned by it, and a key may not hold a map; the
            # repartition key is named as the joined row names the column (L_L0).
            name = f"{x.source}_{x.name}" if isinstance(x, e.ColumnRef) and x.source else "KSQL_COL_0"
            check_no_map_keys((Column(name, ty, "KEY"),))
    return left_expr, right_expr, kind, lt, written


def _multi_key_fk_step(query: ast.Query, sink_name: str | None, persistent: bool,
                       clause: ast.JoinClause, left: JoinSide, right: JoinSide, key_type: SqlType,
                       where: e.Expression | None, named: list[tuple[str, e.Expression, SqlType]],
                       previous: JoinPlan | None, index: int,
                       source_names: tuple[tuple[str, str], ...]) -> JoinPlan:
    """The last step of a foreign-key join whose left table has several key columns: the
    result is keyed like the left table, by all of them, computed from the left row."""
    from streamsql.analyzer import OutputColumn

    pk_refs = [e.ColumnRef(c.name, left.aliases[0]) for c in left.source.schema.key]
    keys: list[OutputColumn] = []
    values: list[OutputColumn] = []
    for name, x, ty in named:
        (keys if x in pk_refs else values).append(OutputColumn(name, x, ty))
    selected = [k.expression for k in keys]
    if persistent and any(r not in selected for r in pk_refs):
        listed = ", ".join(str(r) for r in pk_refs)
        raise KsqlStatementException(
            "Key missing from projection (ie, SELECT). See https://cnfl.io/2LV7ouS.\n"
            f"The query used to build `{sink_name}` must include the key columns {listed} in "
            f"its projection (eg, SELECT {listed}...).")
    if persistent and not values:
        raise KsqlStatementException("The projection contains no value columns.")
    keys.sort(key=lambda k: pk_refs.index(k.expression))
    schema = LogicalSchema(tuple(Column(k.name, k.type, "KEY") for k in keys),
                           tuple(Column(v.name, v.type, "VALUE") for v in values))
    result = [k.name for k in keys] + [v.name for v in values]
    projection = tuple(result.index(name) for name, _, _ in named)
    return JoinPlan(left, right, clause.join_type, "FOREIGN_KEY", clause.within, key_type, where,
                    tuple(keys), tuple(values), schema, query.limit, previous, index, source_names,
                    projection)


def _final_step(analyzer: "QueryAnalyzer", query: ast.Query, sink_name: str | None, persistent: bool,
                clause: ast.JoinClause, left: JoinSide, right: JoinSide, kind: str, key_type: SqlType,
                previous: JoinPlan | None, index: int, source_names: tuple[tuple[str, str], ...], qualify,
                key_forms_so_far: list[e.Expression], crit_left: e.Expression,
                crit_right: e.Expression) -> JoinPlan:
    from streamsql.analyzer import OutputColumn

    aliases = dict(source_names)
    all_rows = left.row + right.row
    cols_by_alias: dict[str, list[Column]] = {}
    for alias, col in all_rows:
        if col.namespace != "PSEUDO":
            cols_by_alias.setdefault(alias, []).append(col)
    scope = joined_scope(left, right, key_type, source_names)
    compiler = ExpressionCompiler(analyzer.registry, scope, clause="SELECT")

    # (alias, expression as written, expression qualified by side)
    items: list[tuple[str | None, e.Expression, e.Expression]] = []
    for item in query.select:
        if isinstance(item, ast.AllColumns):
            for t in star_targets(item, aliases, cols_by_alias):
                for col in cols_by_alias.get(t, ()):
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
        ExpressionCompiler(analyzer.registry, scope, clause="WHERE",
                           display=_joined_names).compile_predicate(where, "WHERE")
    typed: list[tuple[str | None, e.Expression, SqlType]] = []
    used: set[str] = set()
    for alias_name, written, x in items:
        if persistent and isinstance(written, e.ColumnRef) and written.name in RESERVED_COLUMN_NAMES \
                and (alias_name == written.name or (alias_name is None and written.source is None)) \
                and _system_column_exists(analyzer, aliases, x):
            # A system column selected under its own name.
            raise KsqlStatementException(
                f"Reserved column name in select: `{x.name}`. Please remove or alias the column.")
        if persistent and alias_name in RESERVED_COLUMN_NAMES:
            raise KsqlStatementException(
                f"`{alias_name}` is a reserved column name. You cannot use it as an alias for a column.")
        ty = compiler.compile(x).type
        name: str | None
        if alias_name is not None:
            name = alias_name
        elif isinstance(written, e.ColumnRef):
            # A column more than one source has is named ALIAS_COL; any other keeps its name.
            # Every source has the pseudo columns (S.ROWTIME is S_ROWTIME).
            owners = len(cols_by_alias) if x.name in PSEUDO_COLUMNS else sum(
                1 for cols in cols_by_alias.values() if any(c.name == x.name for c in cols))
            name = f"{x.source}_{x.name}" if owners > 1 and x.source else x.name
        elif isinstance(written, e.Dereference):
            name = written.field
        else:
            name = None
        typed.append((name, x, ty))
        if name:
            used.add(name)
    counter = 0
    named: list[tuple[str, e.Expression, SqlType]] = []
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

    if kind == "FOREIGN_KEY" and len(left.source.schema.key) > 1:
        return _multi_key_fk_step(query, sink_name, persistent, clause, left, right, key_type, where,
                                  named, previous, index, source_names)

    # ---- the key: the join expression as selected, or the synthetic ROWKEY
    synthetic = clause.join_type == "FULL" or not key_forms_so_far
    key_forms = [e.ColumnRef(SYNTHETIC_KEY)] if synthetic else list(key_forms_so_far)
    if clause.join_type == "RIGHT" and not synthetic:
        key_forms = list(reversed(key_forms))
    # The key is the first item written as the preferred join expression (the left one, for
    # all but RIGHT joins), else as the next one.
    preferred = None
    for form in key_forms:
        preferred = next((x for _, x, _ in named if x == form), None)
        if preferred is not None:
            break
    key_col: OutputColumn | None = None
    values: list[OutputColumn] = []
    if synthetic and preferred is None and any(isinstance(i, ast.AllColumns) and i.source is None
                                               for i in query.select):
        # SELECT * of an outer join carries the synthetic key implicitly.
        key_col = OutputColumn(SYNTHETIC_KEY, e.ColumnRef(SYNTHETIC_KEY), key_type)
    implicit_key = key_col is not None
    for name, x, ty in named:
        if preferred is not None and x == preferred:
            if key_col is not None:
                raise KsqlStatementException(
                    f"The projection contains a key column (`{key_col.name}`) more than once, aliased as: "
                    f"{' and '.join(sorted([key_col.name, name]))}.")
            # The result's key is the join key itself (a right-only row has no left column).
            key_col = OutputColumn(name, e.ColumnRef(SYNTHETIC_KEY), ty)
        else:
            values.append(OutputColumn(name, x, ty))
    if key_col is None:
        if persistent:
            shown = SYNTHETIC_KEY if synthetic else (
                ", ".join(str(k) for k in key_forms[:-1]) + " or " + str(key_forms[-1])
                if len(key_forms) > 1 else str(key_forms[0]))
            plural = "s" if len(key_forms) > 1 else ""
            hint = ("\nROWKEY was added as a synthetic key column because the join criteria did not match "
                    "any source column. This expression must be included in the projection and may be "
                    "aliased." if synthetic else "")
            raise KsqlStatementException(
                "Key missing from projection (ie, SELECT). See https://cnfl.io/2LV7ouS.\n"
                f"The query used to build `{sink_name}` must include the join expression{plural} {shown} in "
                f"its projection (eg, SELECT {str(key_forms[0])}...).{hint}")
        key_col = OutputColumn(SYNTHETIC_KEY, e.ColumnRef(SYNTHETIC_KEY), key_type)
    if persistent and not values:
        raise KsqlStatementException("The projection contains no value columns.")
    schema = LogicalSchema((Column(key_col.name, key_col.type, "KEY"),),
                           tuple(Column(v.name, v.type, "VALUE") for v in values))
    result = [key_col.name] + [v.name for v in values]
    projection = tuple(result.index(name) for name, _, _ in named)
    if implicit_key:
        projection = (0,) + projection
    return JoinPlan(left, right, clause.join_type, kind, clause.within, key_type, where, (key_col,),
                    tuple(values), schema, query.limit, previous, index, source_names, projection)

"""The analyzer: validates statements against the catalog and produces typed plans.

- ``analyze_create_source`` turns CREATE STREAM/TABLE into a ``DataSource``.
- ``analyze_query`` turns a SELECT into a ``QueryPlan``: the source, the filter, the key and
  value columns of the result (names resolved as ksqlDB names them), PARTITION BY, table
  functions, and the result's ``LogicalSchema``.
- ``sink_source`` derives the sink of CREATE ... AS SELECT from a plan and WITH properties.

Messages follow ksqlDB's wording; the QTT ``expectedException`` cases check them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from streamsql import ast
from streamsql import expressions as e
from streamsql import types as t
from streamsql.catalog import Catalog, DataSource, FormatInfo, WindowInfo
from streamsql.codegen import ExpressionCompiler, Scope, ScopeColumn
from streamsql.errors import KsqlException, KsqlStatementException
from streamsql.formats.base import FormatOptions
from streamsql.formats.common import contains_map
from streamsql.formatter import format_statement
from streamsql.functions.registry import FunctionRegistry
from streamsql.schema import (PSEUDO_COLUMNS, RESERVED_COLUMN_NAMES, WINDOW_BOUNDS, Column,
                              LogicalSchema)
from streamsql.types import ArrayType, BaseType, MapType, SqlType, StructType

# The type of a HEADERS column: every header of the record, in order.
HEADERS_TYPE = ArrayType(StructType((t.Field("KEY", t.STRING), t.Field("VALUE", t.BYTES))))

SOURCE_PROPERTIES = {
    "KAFKA_TOPIC", "PARTITIONS", "REPLICAS", "KEY_FORMAT", "VALUE_FORMAT", "FORMAT",
    "WRAP_SINGLE_VALUE", "VALUE_DELIMITER", "KEY_DELIMITER", "TIMESTAMP", "TIMESTAMP_FORMAT",
    "WINDOW_TYPE", "WINDOW_SIZE", "KEY_SCHEMA_ID", "VALUE_SCHEMA_ID", "KEY_SCHEMA_FULL_NAME",
    "VALUE_SCHEMA_FULL_NAME", "VALUE_AVRO_SCHEMA_FULL_NAME", "RETENTION_MS", "SOURCE_CONNECTOR",
    "KEY_PROTOBUF_NULLABLE_REPRESENTATION", "VALUE_PROTOBUF_NULLABLE_REPRESENTATION",
}


# Topics may have at most this many partitions (the engine's property MAX_PARTITIONS_PROPERTY
# changes it). Kafka sets no limit, but each partition is a directory of the embedded log and a
# task of every stateful query reading it; ksqlDB's users rarely go past a few thousand.
DEFAULT_MAX_PARTITIONS = 10_000
MAX_PARTITIONS_PROPERTY = "streamsql.topic.max.partitions"

_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1


def int_property(props: Any, name: str, value: Any = None) -> int | None:
    """An INT-typed WITH property (or setting) of ``props`` as an int, None when absent. A
    value that is not a 32-bit integer is ksqlDB's error: Kafka's ConfigDef message, with
    "configuration" said "property" (ksqlDB's CreateSourceProperties)."""
    if value is None:
        value = props.get(name)
    if value is None:
        return None
    number: Any = value
    if isinstance(value, str):
        text = value.strip()
        number = int(text) if re.fullmatch(r"[+-]?\d{1,10}", text) else None
    elif isinstance(value, bool) or not isinstance(value, (int, Decimal)):
        number = None
    elif isinstance(value, Decimal) and not (value.is_finite() and abs(value) <= _INT_MAX
                                             and value == value.to_integral_value()):
        number = None
    if number is None or not _INT_MIN <= number <= _INT_MAX:
        raise KsqlException(f"Invalid value {value} for property {name}: Not a number of type INT")
    return int(number)


def partitions_property(props: Any, name: str, config: dict[str, Any], value: Any = None) -> int | None:
    """A partition count (``PARTITIONS``, ``ksql.sink.partitions``), refused past the
    configured maximum before any topic is created."""
    count = int_property(props, name, value)
    limit = int_property(config, MAX_PARTITIONS_PROPERTY)
    limit = DEFAULT_MAX_PARTITIONS if limit is None else limit
    if count is not None and count > limit:
        raise KsqlException(
            f"Invalid value {count} for property {name}: a topic may have at most {limit} "
            f"partitions (the '{MAX_PARTITIONS_PROPERTY}' setting)")
    return count


def check_topic_name(name: str, hint: str = "") -> None:
    """Kafka's rules for a topic name (its Topic.validate), checked before anything is created:
    a name Kafka would refuse is a statement error with Kafka's message."""
    from streamsql.runtime.log.embedded import InvalidTopicError, validate_topic_name

    try:
        validate_topic_name(name)
    except InvalidTopicError as exc:
        raise KsqlStatementException(f"{exc}{hint}") from None


# A hopping window's record falls in size / advance windows, each updated for it: past this
# many, one record would keep a query busy for minutes (Kafka Streams sets no bound).
MAX_WINDOWS_PER_RECORD = 10_000


def check_window(window: ast.WindowExpression) -> None:
    """Kafka Streams' checks of a window's size and advance (its messages), before anything
    is built: a zero size or advance would divide by zero on the first record."""
    if window.kind == "SESSION":
        if window.size <= 0:
            raise KsqlStatementException("Gap time (inactivityGapMs) cannot be zero or negative.")
        return
    if window.size <= 0:
        raise KsqlStatementException("Window size (sizeMs) must be larger than zero.")
    advance = window.advance if window.kind == "HOPPING" else window.size
    if advance is None or advance <= 0 or advance > window.size:
        raise KsqlStatementException(
            "Window advancement interval should be more than zero and less than window duration "
            f"which is {window.size} ms, but given advancement interval is: {advance} ms")
    if window.size // advance > MAX_WINDOWS_PER_RECORD:
        raise KsqlStatementException(
            f"A HOPPING window of {window.size} ms advancing by {advance} ms puts each record in "
            f"{window.size // advance} windows; at most {MAX_WINDOWS_PER_RECORD} are supported.")


# ======================================================================== CREATE STREAM/TABLE
def resolve_type(type_: SqlType, catalog: Catalog) -> SqlType:
    """Replace custom type names (CREATE TYPE) inside ``type_``."""
    name = getattr(type_, "name", None)
    if name is not None and not isinstance(type_, t.Field):
        found = catalog.types.get(name) or catalog.types.get(name.upper())
        if found is None:
            raise KsqlStatementException(f"Cannot resolve unknown type: {name}")
        return found
    if isinstance(type_, ArrayType):
        return ArrayType(resolve_type(type_.item, catalog))
    if isinstance(type_, MapType):
        return MapType(resolve_type(type_.key, catalog), resolve_type(type_.value, catalog))
    if isinstance(type_, StructType):
        return StructType(tuple(t.Field(f.name, resolve_type(f.type, catalog)) for f in type_.fields))
    return type_


def _format_options(props: ast.Properties, which: str, fmt: str, single_column: bool) -> FormatOptions:
    wrap = props.get("WRAP_SINGLE_VALUE") if which == "VALUE" else None
    if isinstance(wrap, str):
        wrap = wrap.strip().lower() == "true"
    delim = props.get(f"{which}_DELIMITER")
    delimiter = ","
    if delim is not None:
        delimiter = _delimiter(str(delim), which)
    schema_id = int_property(props, f"{which}_SCHEMA_ID")
    full_name = props.get(f"{which}_SCHEMA_FULL_NAME")
    if which == "VALUE" and full_name is None:
        full_name = props.get("VALUE_AVRO_SCHEMA_FULL_NAME")
    if full_name is not None and not isinstance(full_name, str):
        raise KsqlException(f"Invalid value {full_name} for property {which}_SCHEMA_FULL_NAME: "
                            "Expected value to be a string")
    nullable = props.get(f"{which}_PROTOBUF_NULLABLE_REPRESENTATION")
    extra = (("NULLABLE_REPRESENTATION", str(nullable).upper()),) if nullable is not None else ()
    return FormatOptions(wrap_single_value=wrap, delimiter=delimiter,
                         schema_name=full_name, schema_id=schema_id,
                         extra=extra)


def _delimiter(value: str, which: str) -> str:
    special = {"TAB": "\t", "SPACE": " "}
    if value.upper() in special:
        return special[value.upper()]
    if value == "":
        raise KsqlException(
            f"Failed to prepare statement: Configuration {which}_DELIMITER is invalid: Delimiter cannot be empty, "
            "if you meant to have a tab or space for delimiter, please use the special values 'TAB' or 'SPACE'"
            "\nExample valid value: ';'")
    if len(value) != 1:
        raise KsqlException(
            f"Failed to prepare statement: Configuration {which}_DELIMITER is invalid: Invalid delimiter value: "
            f"'{value}'. Delimiter must be a single character or TAB,SPACE\nExample valid value: ';'")
    return value


def formats_from_properties(props: ast.Properties, config: dict[str, Any],
                            default_key: str | None = None,
                            default_value: str | None = None) -> tuple[str, str]:
    """Key and value format names from FORMAT / KEY_FORMAT / VALUE_FORMAT and defaults."""
    fmt = props.get("FORMAT")
    key_fmt = props.get("KEY_FORMAT")
    value_fmt = props.get("VALUE_FORMAT")
    if fmt is not None and (key_fmt is not None or value_fmt is not None):
        # ksqlDB names the first conflicting property, checking KEY_FORMAT before VALUE_FORMAT.
        clash = "KEY_FORMAT" if key_fmt is not None else "VALUE_FORMAT"
        raise KsqlException(
            f"Cannot supply both '{clash}' and 'FORMAT' properties, "
            "as 'FORMAT' sets both key and value formats. Either use just 'FORMAT', or use "
            "'KEY_FORMAT' and 'VALUE_FORMAT'.")
    if fmt is not None:
        key_fmt = value_fmt = fmt
    key_fmt = key_fmt or default_key or config.get("ksql.persistence.default.format.key") or "KAFKA"
    value_fmt = value_fmt or default_value or config.get("ksql.persistence.default.format.value")
    if value_fmt is None:
        raise KsqlException(
            "Statement is missing the 'VALUE_FORMAT' property from the WITH clause. Either provide one or set a "
            "default via the 'ksql.persistence.default.format.value' config.")
    return str(key_fmt).upper(), str(value_fmt).upper()


def check_properties(props: ast.Properties, allowed: set[str]) -> None:
    unknown = [n for n in props.names() if n not in allowed]
    if unknown:
        raise KsqlException(f"Invalid config variable(s) in the WITH clause: {','.join(unknown)}")


def analyze_create_source(stmt: ast.CreateSource, catalog: Catalog, config: dict[str, Any],
                          schema_registry: Any = None) -> DataSource:
    """Validate CREATE STREAM/TABLE and build its DataSource; columns a schema-registry format
    does not declare are inferred from ``schema_registry``."""
    from streamsql.formats.registry import get_format

    props = stmt.properties
    check_properties(props, SOURCE_PROPERTIES)
    is_table = stmt.kind == "TABLE"
    key_cols: list[Column] = []
    value_cols: list[Column] = []
    seen: set[str] = set()
    for el in stmt.elements:
        if el.name in RESERVED_COLUMN_NAMES:
            raise KsqlStatementException(
                f"'{el.name}' is a reserved column name. You cannot use it as a name for a column.")
        if el.name in seen:
            raise KsqlStatementException(f"Duplicate column names: {el.name}")
        seen.add(el.name)
        ty = resolve_type(el.type, catalog)
        if el.constraint == "KEY":
            if is_table:
                raise KsqlStatementException(
                    f"Column `{el.name}` is a 'KEY' column: please use 'PRIMARY KEY' for tables.\n"
                    "Tables have PRIMARY KEYs, which are unique and NON NULL.\n"
                    "Streams have KEYs, which have no uniqueness or NON NULL constraints.")
            key_cols.append(Column(el.name, ty, "KEY"))
        elif el.constraint == "PRIMARY KEY":
            if not is_table:
                raise KsqlStatementException(
                    f"Column `{el.name}` is a 'PRIMARY KEY' column: please use 'KEY' for streams.\n"
                    "Tables have PRIMARY KEYs, which are unique and NON NULL.\n"
                    "Streams have KEYs, which have no uniqueness or NON NULL constraints.")
            key_cols.append(Column(el.name, ty, "KEY"))
        elif el.constraint in ("HEADERS", "HEADER"):
            # A header's value is its raw bytes; all of them, an array of key/value structs.
            if el.constraint == "HEADER" and ty != t.BYTES:
                raise KsqlException(
                    f"Invalid type for HEADER('{el.header_key}') column: expected BYTES, got {ty}")
            if el.constraint == "HEADERS" and ty != HEADERS_TYPE:
                raise KsqlException(
                    f"Invalid type for HEADERS column: expected {HEADERS_TYPE}, got {ty}")
            value_cols.append(Column(el.name, ty, el.constraint, el.header_key))
        else:
            value_cols.append(Column(el.name, ty, "VALUE"))
    if props.get("WINDOW_TYPE") is not None and not key_cols and not _infers_key(props, config):
        raise KsqlStatementException("Windowed sources require a key column.")
    if "KAFKA_TOPIC" not in props:
        raise KsqlException("Missing required property \"KAFKA_TOPIC\" which has no default value.")
    check_topic_name(str(props.get("KAFKA_TOPIC")))
    partitions = partitions_property(props, "PARTITIONS", config)
    replicas = int_property(props, "REPLICAS")
    for which in ("KEY", "VALUE"):
        if f"{which}_SCHEMA_ID" in props and (key_cols if which == "KEY" else value_cols):
            raise KsqlStatementException(
                f"Table elements and {which}_SCHEMA_ID cannot both exist for create statement.")
    key_fmt, value_fmt = formats_from_properties(props, config)
    if get_format(key_fmt).supports_inference or get_format(value_fmt).supports_inference:
        from streamsql.schemaregistry.ksql import infer_source_columns
        key_cols, value_cols = infer_source_columns(
            str(props.get("KAFKA_TOPIC")), key_fmt, _format_options(props, "KEY", key_fmt, True), value_fmt,
            _format_options(props, "VALUE", value_fmt, True), key_cols, value_cols, schema_registry)
    if is_table and not key_cols and (stmt.elements or value_cols):
        raise KsqlStatementException("Tables require a PRIMARY KEY. Please define the PRIMARY KEY.")
    schema = LogicalSchema(tuple(key_cols), tuple(value_cols))
    key_info, value_info = _validated_formats(key_fmt, value_fmt, schema, props)
    if not stmt.elements and not value_cols:
        raise KsqlStatementException(
            "The statement does not define any columns.")
    ts_col = props.get("TIMESTAMP")
    ts_fmt = props.get("TIMESTAMP_FORMAT")
    if ts_col is not None:
        ts_col = _timestamp_column(str(ts_col), schema, ts_fmt)
    window = None
    if props.get("WINDOW_TYPE") is not None:
        kind = str(props.get("WINDOW_TYPE")).upper()
        size = props.get("WINDOW_SIZE")
        window = WindowInfo(kind, _parse_window_size(str(size)) if size is not None else None)
    return DataSource(
        name=stmt.name, kind=stmt.kind, schema=schema, topic=str(props.get("KAFKA_TOPIC")),
        key_format=key_info, value_format=value_info, sql=stmt.text, timestamp_column=ts_col,
        timestamp_format=str(ts_fmt) if ts_fmt is not None else None, window=window,
        is_source=stmt.is_source, partitions=partitions if partitions is not None else 0,
        replicas=replicas if replicas is not None else 1)


_UNIT_MS = {"MILLISECOND": 1, "SECOND": 1000, "MINUTE": 60_000, "HOUR": 3_600_000, "DAY": 86_400_000}


def _infers_key(props: ast.Properties, config: dict[str, Any]) -> bool:
    """Whether the key columns come from the schema registry (checked again after inference)."""
    from streamsql.formats.registry import get_format

    try:
        return get_format(formats_from_properties(props, config)[0]).supports_inference
    except KsqlException:
        return False


def _parse_window_size(text: str) -> int:
    """WINDOW_SIZE='10 SECONDS' to milliseconds."""
    parts = text.strip().split()
    if len(parts) != 2 or not re.fullmatch("[0-9]{1,15}", parts[0]):
        raise KsqlException(f"Invalid WINDOW_SIZE property : {text}")
    unit = parts[1].upper().rstrip("S")
    if unit not in _UNIT_MS:
        raise KsqlException(f"Invalid WINDOW_SIZE property : {text}")
    return int(parts[0]) * _UNIT_MS[unit]


def _timestamp_column(name: str, schema: LogicalSchema, fmt: Any) -> str:
    col_name = name.strip()
    if col_name.startswith("`") and col_name.endswith("`"):
        col_name = col_name[1:-1]
    else:
        col_name = col_name.upper()
    col = schema.find(col_name)
    if col is None:
        raise KsqlException(f"The TIMESTAMP column set in the WITH clause does not exist in the schema: '{col_name}'")
    ok = (col.type.base in (BaseType.BIGINT, BaseType.TIMESTAMP)) or (
        col.type.base is BaseType.STRING and fmt is not None)
    if col.type.base is BaseType.STRING and fmt is None:
        raise KsqlException(
            f"Timestamp column, `{col_name}`, should be LONG(INT64), TIMESTAMP, or a String with a "
            "timestamp_format specified.")
    if not ok:
        raise KsqlException(
            f"Timestamp column, `{col_name}`, should be LONG(INT64), TIMESTAMP, or a String with a "
            "timestamp_format specified.")
    return col_name


def _validated_formats(key_fmt: str, value_fmt: str, schema: LogicalSchema,
                       props: ast.Properties) -> tuple[FormatInfo, FormatInfo]:
    from streamsql.formats.registry import get_format

    kf, vf = get_format(key_fmt), get_format(value_fmt)
    key_opts = _format_options(props, "KEY", key_fmt, len(schema.key) == 1)
    value_opts = _format_options(props, "VALUE", value_fmt, len(schema.value_format_columns) == 1)
    for f, opts in ((kf, key_opts), (vf, value_opts)):
        unsupported = [n for n, v in (("fullSchemaName", opts.schema_name), ("schemaId", opts.schema_id))
                       if v is not None and not (f.supports_schema_full_name if n == "fullSchemaName"
                                                 else f.supports_inference)]
        if unsupported:
            raise KsqlException(f"{f.name} does not support the following configs: [{', '.join(unsupported)}]")
    if value_opts.wrap_single_value is not None and len(schema.value_format_columns) != 1 and schema.value_format_columns:
        raise KsqlException("'WRAP_SINGLE_VALUE' is only valid for single-field value schemas")
    for col in schema.key:
        if contains_map(col.type):
            raise KsqlStatementException(
                "Map keys, including types that contain maps, are not supported as they may lead to unexpected "
                f"behavior due to inconsistent serialization. Key column name: `{col.name}`. Column type: "
                f"{col.type}. See https://github.com/confluentinc/ksql/issues/6621 for more.")
    kf.validate(schema.key, key_opts, True)
    vf.validate(schema.value_format_columns, value_opts, False)
    return FormatInfo(kf.name, key_opts), FormatInfo(vf.name, value_opts)


# ============================================================================ SELECT analysis
@dataclass(frozen=True)
class OutputColumn:
    """A column of a query's result and the expression that computes it."""

    name: str
    expression: e.Expression
    type: SqlType


@dataclass(frozen=True)
class QueryPlan:
    """The typed logical plan of a single-source SELECT (filter, flat map, project, re-key).

    ``key`` are the result's key columns (for PARTITION BY, the partitioning expressions);
    ``value`` its value columns; ``table_functions`` marks a flat map over UDTF calls found in
    the projection.
    """

    source: DataSource
    alias: str
    where: e.Expression | None
    key: tuple[OutputColumn, ...]
    value: tuple[OutputColumn, ...]
    schema: LogicalSchema
    partition_by: tuple[e.Expression, ...] = ()
    table_functions: tuple[e.FunctionCall, ...] = ()
    limit: int | None = None
    # Whether result rows are keyed as the source rows are (no re-keying): the sink keeps
    # partitioning and tables keep their primary key.
    rekeyed: bool = False
    # Group-by: a row whose key is NULL (or a record with no value) is skipped and logged.
    drop_null_key: bool = False
    # The result's columns in SELECT order, as indexes into ``key + value`` (a push query's
    # rows come in this order); None: key columns, then value columns.
    projection: tuple[int, ...] | None = None

    def select_columns(self) -> "tuple[OutputColumn, ...]":
        return select_columns(self)


def source_scope(source: DataSource, alias: str, include_pseudo: bool = True,
                 prefix: str = "c") -> tuple[Scope, list[str]]:
    """A Scope naming every column of ``source`` as local variable ``{prefix}{i}``; returns it
    with the local names in schema order (key, value, ROWTIME, ROWPARTITION, ROWOFFSET)."""
    scope = Scope(source_names=frozenset({source.name, alias}))
    names: list[str] = []
    cols = list(source.schema.columns)
    if include_pseudo:
        cols += [Column(n, ty, "PSEUDO") for n, ty in PSEUDO_COLUMNS.items()]
        if source.window is not None:
            cols += [Column(n, ty, "PSEUDO") for n, ty in WINDOW_BOUNDS.items()]
    for i, col in enumerate(cols):
        var = f"{prefix}{i}"
        names.append(var)
        sc = ScopeColumn(var, col.type)
        scope.columns[col.name] = sc
        scope.qualified[(alias, col.name)] = sc
        scope.qualified[(source.name, col.name)] = sc
    return scope, names


class QueryAnalyzer:
    """Analyzes a SELECT over one source (see module docstring)."""

    def __init__(self, catalog: Catalog, registry: FunctionRegistry, config: dict[str, Any]) -> None:
        self.catalog = catalog
        self.registry = registry
        self.config = config

    def _source(self, name: str) -> DataSource:
        src = self.catalog.source(name)
        if src is None:
            raise KsqlStatementException(
                f"Failed to prepare statement: {name} does not exist.")
        return src

    def analyze(self, query: ast.Query, sink_name: str | None,
                persistent: bool = True) -> "QueryPlan | AggregatePlan":
        if isinstance(query.from_, ast.Join):
            from streamsql.join_analyzer import analyze_join

            return analyze_join(self, query, sink_name, persistent)
        rel = query.from_
        assert isinstance(rel, ast.AliasedRelation)
        source = self._source(rel.name)
        alias = rel.alias or rel.name
        if query.group_by or query.window is not None or self._has_aggregates(query):
            return self._analyze_aggregate(query, source, alias, sink_name, persistent)
        if query.having is not None:
            raise KsqlStatementException("HAVING requires a GROUP BY clause.")
        scope, _ = source_scope(source, alias)
        where = None
        if query.where is not None:
            ExpressionCompiler(self.registry, scope, clause="WHERE").compile_predicate(query.where, "WHERE")
            where = query.where
        if query.partition_by and source.is_table:
            raise KsqlStatementException(
                "Invalid Partition By clause: PARTITION BY is not supported on tables.")
        items = self._expand_select(query.select, source, alias, query.partition_by,
                                    window_bounds=not persistent)
        compiler = ExpressionCompiler(self.registry, scope, clause="SELECT")
        udtfs = tuple(x for _, x in items
                      for x in x.walk()
                      if isinstance(x, e.FunctionCall) and self.registry.is_table_function(x.name))
        typed: list[tuple[str | None, e.Expression, SqlType]] = []
        for alias_name, expr in items:
            ty = self._type_select_item(compiler, expr)
            typed.append((alias_name, expr, ty))
        named = self._name_columns(typed, alias, {c.name for c in source.schema.columns})
        key_exprs = set(query.partition_by) if query.partition_by else set()
        if persistent:
            for (alias_name, _, _), (name, expr, _) in zip(typed, named):
                if name not in RESERVED_COLUMN_NAMES or expr in key_exprs:
                    continue
                # ``ROWTIME AS ROWTIME`` selects the system column under its own name.
                if alias_name is not None and not _names_itself(expr, alias_name):
                    raise KsqlStatementException(
                        f"`{name}` is a reserved column name. You cannot use it as an alias for a column.")
                raise KsqlStatementException(
                    f"Reserved column name in select: `{name}`. Please remove or alias the column.")
        key_cols, value_cols = self._split_key(named, source, alias, query.partition_by, compiler,
                                               sink_name, persistent)
        schema = LogicalSchema(
            tuple(Column(c.name, c.type, "KEY") for c in key_cols),
            tuple(Column(c.name, c.type, "VALUE") for c in value_cols))
        if persistent and not value_cols:
            raise KsqlStatementException("The projection contains no value columns.")
        return QueryPlan(source, alias, where, tuple(key_cols), tuple(value_cols), schema,
                         tuple(query.partition_by), udtfs, query.limit, bool(query.partition_by),
                         projection=_projection(named, key_cols, value_cols))

    # ------------------------------------------------------------------------ aggregation
    def _has_aggregates(self, query: ast.Query) -> bool:
        for item in query.select:
            if isinstance(item, ast.SingleColumn) and any(
                    isinstance(x, e.FunctionCall) and self.registry.is_aggregate(x.name)
                    for x in item.expression.walk()):
                return True
        return False

    def _analyze_aggregate(self, query: ast.Query, source: DataSource, alias: str,
                           sink_name: str | None, persistent: bool) -> "AggregatePlan":
        if not query.group_by:
            plain = [str(i.expression) for i in query.select if isinstance(i, ast.SingleColumn)
                     and not any(isinstance(x, e.FunctionCall) and self.registry.is_aggregate(x.name)
                                 for x in i.expression.walk())
                     and any(isinstance(x, e.ColumnRef) for x in i.expression.walk())]
            if plain:
                raise KsqlStatementException(
                    f"Non-aggregate SELECT expression(s) not part of GROUP BY: {', '.join(plain)}")
            if persistent or query.emit is None:
                raise KsqlStatementException(
                    "Aggregate functions require a GROUP BY clause (streamsql does not support a "
                    "global aggregate yet).")
        # A push query's aggregates without GROUP BY fold every record into one row (grouped
        # by a constant, as ksqlDB does).
        group_by = query.group_by or (e.IntegerLiteral(1),)
        if source.value_format.name == "KAFKA":
            raise KsqlStatementException(
                f"Source(s) {source.name} are using the 'KAFKA' value format. This format does not yet "
                "support GROUP BY.")
        if query.partition_by:
            raise KsqlStatementException("PARTITION BY is not supported with GROUP BY.")
        scope, _ = source_scope(source, alias)
        compiler = ExpressionCompiler(self.registry, scope, clause="GROUP BY")
        where = None
        if query.where is not None and source.window is None:
            # The WINDOW clause's bounds exist only after the aggregation (ksqlDB's message).
            for x in query.where.walk():
                if isinstance(x, e.ColumnRef) and x.name in ("WINDOWSTART", "WINDOWEND"):
                    raise KsqlStatementException(f"Error in WHERE expression: Unknown column {x.name}.")
        if query.where is not None:
            ExpressionCompiler(self.registry, scope, clause="WHERE").compile_predicate(query.where, "WHERE")
            where = query.where
        for item in query.select:
            if isinstance(item, ast.SingleColumn):
                for x in item.expression.walk():
                    if isinstance(x, e.FunctionCall) and self.registry.is_table_function(x.name):
                        raise KsqlStatementException("Table functions cannot be used with aggregations.")
        if persistent:
            # ksqlDB checks the projection's names before the GROUP BY: an unaliased system
            # column is rejected even where the GROUP BY is itself invalid. Only a windowed
            # aggregation may select its window bounds.
            for item in query.select:
                x = item.expression if isinstance(item, ast.SingleColumn) else None
                if isinstance(x, e.ColumnRef) and item.alias is None and x.name in RESERVED_COLUMN_NAMES \
                        and not (query.window is not None and x.name in ("WINDOWSTART", "WINDOWEND")):
                    raise KsqlStatementException(
                        f"Reserved column name in select: `{x.name}`. Please remove or alias the column.")
        # The grouping expressions, typed against the source.
        group_exprs = [_strip_qualifier(g, source, alias) for g in group_by]
        group_types = []
        for g in group_exprs:
            for x in g.walk():
                if isinstance(x, e.ColumnRef) and x.name in ("WINDOWSTART", "WINDOWEND") and \
                        source.window is None:
                    raise KsqlStatementException(
                        f"Window bounds column {x.name} can only be used in the SELECT clause of "
                        "windowed aggregations and can not be passed to aggregate functions.")
            for x in g.walk():
                if isinstance(x, e.FunctionCall) and self.registry.is_aggregate(x.name):
                    raise KsqlStatementException(
                        f"GROUP BY does not support aggregate functions: {x.name} is an aggregate function.")
            group_types.append(compiler.compile(g).type)
        # Aggregate calls anywhere in SELECT or HAVING become variables of the result row.
        calls: list[e.FunctionCall] = []

        def collect(x: e.Expression) -> None:
            for sub in x.walk():
                if isinstance(sub, e.FunctionCall) and self.registry.is_aggregate(sub.name):
                    if sub not in calls:
                        for inner in sub.args:
                            for y in inner.walk():
                                if isinstance(y, e.FunctionCall) and self.registry.is_aggregate(y.name):
                                    raise KsqlStatementException(
                                        f"Aggregate functions can not be nested: {sub.name}({y.name}())")
                                if isinstance(y, e.ColumnRef) and y.name in ("WINDOWSTART", "WINDOWEND") \
                                        and source.window is None:
                                    raise KsqlStatementException(
                                        f"Window bounds column {y.name} can only be used in the SELECT "
                                        "clause of windowed aggregations and can not be passed to "
                                        "aggregate functions.")
                        calls.append(sub)

        items = self._expand_select(query.select, source, alias, ())
        # As ksqlDB: a SELECT column that does not exist is named before any GROUP BY rule.
        select_refs = ExpressionCompiler(self.registry, compiler.scope, clause="SELECT")
        for _, x in items:
            params = {p for sub in x.walk() if isinstance(sub, e.Lambda) for p in sub.params}
            for sub in x.walk():
                if isinstance(sub, e.ColumnRef) and sub.name not in WINDOW_BOUNDS \
                        and sub.name not in params and compiler.scope.resolve(sub) is None:
                    select_refs.compile(sub)  # raises, with the column's line and column
        for _, x in items:
            collect(x)
        if query.having is not None:
            collect(query.having)
        for _, x in items:
            for sub in x.walk():
                if isinstance(sub, e.FunctionCall) and not self.registry.exists(sub.name):
                    raise KsqlStatementException(f"Can't find any functions with the name '{sub.name}'")
        if not calls and persistent:
            raise KsqlStatementException(
                "GROUP BY requires aggregate functions in either the SELECT or HAVING clause.")
        aggregates = tuple(self._aggregate_call(c, compiler) for c in calls)
        # Scope of the aggregated row: group key columns, aggregate results, window bounds.
        agg_scope = Scope(source_names=frozenset({source.name, alias}))
        for i, ty in enumerate(group_types):
            agg_scope.columns[f"KSQL_GROUPBY_{i}"] = ScopeColumn(f"g{i}", ty)
        for i, a in enumerate(aggregates):
            agg_scope.columns[f"KSQL_AGG_VARIABLE_{i}"] = ScopeColumn(f"a{i}", a.return_type)
        if query.window is not None:
            check_window(query.window)
            for name in ("WINDOWSTART", "WINDOWEND"):
                agg_scope.columns[name] = ScopeColumn(name.lower(), t.BIGINT)

        def rewrite(x: e.Expression) -> e.Expression:
            def fn(node: e.Expression) -> e.Expression | None:
                stripped = _strip_qualifier(node, source, alias)
                if stripped in group_exprs:
                    return e.ColumnRef(f"KSQL_GROUPBY_{group_exprs.index(stripped)}")
                if isinstance(node, e.FunctionCall) and node in calls:
                    return e.ColumnRef(f"KSQL_AGG_VARIABLE_{calls.index(node)}")
                return None
            # What remains refers to the aggregated row, where qualifiers mean nothing.
            return _strip_qualifier(x.transform(fn), source, alias)

        agg_compiler = ExpressionCompiler(self.registry, agg_scope, clause="SELECT")
        typed: list[tuple[str | None, e.Expression, SqlType]] = []
        bad: list[str] = []
        for alias_name, x in items:
            if query.window is None and isinstance(x, e.ColumnRef) and x.name in ("WINDOWSTART", "WINDOWEND"):
                raise KsqlStatementException(f"SELECT column '{x.name}' cannot be resolved.")
            rx = rewrite(x)
            leftovers = [c for c in rx.walk() if isinstance(c, e.ColumnRef)
                         and c.name not in agg_scope.columns]
            if leftovers:
                bad.append(str(x))
                continue
            typed.append((alias_name, x, agg_compiler.compile(rx).type))
        if bad:
            raise KsqlStatementException(
                f"Non-aggregate SELECT expression(s) not part of GROUP BY: {', '.join(bad)}")
        having = None
        if query.having is not None:
            rh = rewrite(query.having)
            leftovers = [c for c in rh.walk() if isinstance(c, e.ColumnRef) and c.name not in agg_scope.columns]
            if leftovers:
                raise KsqlStatementException(
                    f"Non-aggregate HAVING expression not part of GROUP BY: {leftovers[0]}")
            # Type errors quote the HAVING as written (SUM(VALUE)), not its aggregated-row form.
            def written(x: e.Expression) -> e.Expression:
                def fn(node: e.Expression) -> e.Expression | None:
                    if isinstance(node, e.ColumnRef) and node.source is None:
                        if node.name.startswith("KSQL_AGG_VARIABLE_"):
                            return calls[int(node.name[len("KSQL_AGG_VARIABLE_"):])]
                        if node.name.startswith("KSQL_GROUPBY_"):
                            return group_exprs[int(node.name[len("KSQL_GROUPBY_"):])]
                    return None
                return x.transform(fn)
            ExpressionCompiler(self.registry, agg_scope, clause="HAVING",
                               display=written).compile_predicate(rh, "HAVING")
            having = rh
        named = self._name_columns(typed, alias, {c.name for c in source.schema.columns})
        if persistent:
            for (alias_name, _, _), (name, x, _) in zip(typed, named):
                if name in RESERVED_COLUMN_NAMES and not (query.window is not None and alias_name is None
                                                          and name in ("WINDOWSTART", "WINDOWEND")):
                    if alias_name is not None and not _names_itself(x, alias_name):
                        raise KsqlStatementException(
                            f"`{name}` is a reserved column name. You cannot use it as an alias for a column.")
                    raise KsqlStatementException(
                        f"Reserved column name in select: `{name}`. Please remove or alias the column.")
        # Key columns: the grouping expressions, named as the projection names them.
        key_cols: list[OutputColumn | None] = [None] * len(group_exprs)
        values: list[OutputColumn] = []
        for name, x, ty in named:
            sx = _strip_qualifier(x, source, alias)
            if sx in group_exprs:
                existing = key_cols[group_exprs.index(sx)]
                if existing is not None:
                    raise KsqlStatementException(
                        f"The projection contains a key column more than once: `{existing.name}` and `{name}`.")
                key_cols[group_exprs.index(sx)] = OutputColumn(name, rewrite(x), ty)
            else:
                values.append(OutputColumn(name, rewrite(x), ty))
        missing = [i for i, k in enumerate(key_cols) if k is None]
        if missing and persistent:
            shown = [str(g) for g in group_exprs]
            listed = shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " and " + shown[-1]
            raise KsqlStatementException(
                f"The query used to build `{sink_name}` must include the grouping expression"
                f"{'s' if len(shown) > 1 else ''} {listed} in its projection (eg, SELECT "
                f"{', '.join(shown)}...).")
        # A grouping key left out of the SELECT (a transient query's) is a hidden key column,
        # named so as not to clash with a projected name.
        used = {name for name, _, _ in named}
        hidden = (f"KSQL_COL_{n}" for n in range(len(used) + len(key_cols) + 1)
                  if f"KSQL_COL_{n}" not in used)
        keys = [k if k is not None else OutputColumn(next(hidden), e.ColumnRef(f"KSQL_GROUPBY_{i}"),
                                                      group_types[i])
                for i, k in enumerate(key_cols)]
        if persistent and not values:
            raise KsqlStatementException("The projection contains no value columns.")
        schema = LogicalSchema(tuple(Column(k.name, k.type, "KEY") for k in keys),
                               tuple(Column(v.name, v.type, "VALUE") for v in values))
        groups = tuple(OutputColumn(f"KSQL_GROUPBY_{i}", g, ty)
                       for i, (g, ty) in enumerate(zip(group_exprs, group_types)))
        return AggregatePlan(source, alias, where, tuple(keys), tuple(values), schema, groups,
                             aggregates, having, query.window, query.emit == "FINAL", query.limit,
                             projection=_projection(named, keys, values))

    def _aggregate_call(self, call: e.FunctionCall, compiler: ExpressionCompiler) -> "AggregateCall":
        args = list(call.args)
        arg_types = [compiler.compile(a).type for a in args]
        resolved = self.registry.resolve(call.name, arg_types, kind="aggregate")
        n_init = resolved.signature.init_params
        value_args = tuple(args[: len(args) - n_init] if n_init else args)
        init_args = []
        for a in args[len(args) - n_init:] if n_init else ():
            try:
                init_args.append(e.literal_value(a))
            except TypeError:
                raise KsqlStatementException(
                    f"Parameter {len(value_args) + len(init_args) + 1} passed to function {call.name} "
                    f"must be a literal constant, but was expression: '{a}'") from None
        # Arguments arrive converted to the overload's parameter types (AVG(INT) takes DOUBLE...).
        coerced, types = [], []
        for x, actual, wanted in zip(value_args, arg_types, resolved.param_types):
            if wanted is not None and actual != wanted and actual.is_numeric and wanted.is_numeric:
                coerced.append(e.Cast(x, wanted))
                types.append(wanted)
            else:
                coerced.append(x)
                types.append(actual)
        return AggregateCall(call, tuple(coerced), tuple(types), tuple(init_args), resolved)

    # ------------------------------------------------------------------------- projection
    def _expand_select(self, select: tuple[ast.SelectItem, ...], source: DataSource, alias: str,
                       partition_by: tuple[e.Expression, ...], window_bounds: bool = False
                       ) -> list[tuple[str | None, e.Expression]]:
        out: list[tuple[str | None, e.Expression]] = []
        for item in select:
            if isinstance(item, ast.AllColumns):
                if item.source is not None and item.source not in (alias, source.name):
                    raise KsqlStatementException(f"Unknown source name or alias: {item.source}")
                cols = list(source.schema.key) + list(source.schema.value)
                if window_bounds and source.window is not None:
                    # A transient query's * on a windowed source shows each row's window
                    # after the key, as ksqlDB's: two windows of one key are two rows.
                    bounds = [Column(n, t.BIGINT, "KEY") for n in ("WINDOWSTART", "WINDOWEND")]
                    cols = list(source.schema.key) + bounds + list(source.schema.value)
                if partition_by:
                    # PARTITION BY moves the old key after the value columns (ksqlDB's order).
                    cols = list(source.schema.value) + list(source.schema.key)
                    parts = {p.name for p in partition_by if isinstance(p, e.ColumnRef)}
                    keys = [e.ColumnRef(p.name) for p in partition_by if isinstance(p, e.ColumnRef)]
                    # PARTITION BY NULL leaves the result keyless: no key column for *.
                    others = [p for p in partition_by
                              if not isinstance(p, (e.ColumnRef, e.NullLiteral))]
                    for k in keys:
                        out.append((None, k))
                    for p in others:
                        out.append((None, p))
                    cols = [c for c in cols if c.name not in parts]
                for c in cols:
                    out.append((None, e.ColumnRef(c.name)))
            elif isinstance(item, ast.StructAllFields):
                scope, _ = source_scope(source, alias)
                struct_type = ExpressionCompiler(self.registry, scope).compile(item.expression).type
                if not isinstance(struct_type, StructType):
                    raise KsqlStatementException(
                        f"Expected STRUCT type but got {struct_type} for {item.expression}->*")
                for f in struct_type.fields:
                    out.append((f.name, e.Dereference(item.expression, f.name)))
            else:
                assert isinstance(item, ast.SingleColumn)
                out.append((item.alias, item.expression))
        return out

    def _type_select_item(self, compiler: ExpressionCompiler, expr: e.Expression) -> SqlType:
        if isinstance(expr, e.FunctionCall) and self.registry.is_table_function(expr.name):
            return compiler.compile_call(expr, "table").type
        for sub in expr.walk():
            if isinstance(sub, e.FunctionCall) and self.registry.is_table_function(sub.name) and sub is not expr:
                raise KsqlStatementException(
                    f"Table functions cannot be nested in other expressions: {expr}")
        if isinstance(expr, e.FunctionCall) and self.registry.is_aggregate(expr.name) \
                and not self.registry.scalars.get(expr.name):
            raise KsqlStatementException(
                f"Use of aggregate function {expr.name} requires a GROUP BY clause.")
        return compiler.compile(expr).type

    def _name_columns(self, typed: list[tuple[str | None, e.Expression, SqlType]],
                      alias: str, source_names: set[str]) -> list[tuple[str, e.Expression, SqlType]]:
        explicit = {a for a, _, _ in typed if a is not None}
        names: list[str | None] = []
        for a, expr, _ in typed:
            if a is not None:
                names.append(a)
            elif isinstance(expr, e.ColumnRef):
                names.append(expr.name)
            elif isinstance(expr, e.Dereference):
                names.append(expr.field)
            else:
                names.append(None)
        # Generated KSQL_COL_n names skip every name in use, the source's columns included.
        used = {n for n in names if n is not None} | explicit | source_names
        counter = 0
        result = []
        for n, (_, expr, ty) in zip(names, typed):
            if n is None:
                while f"KSQL_COL_{counter}" in used:
                    counter += 1
                n = f"KSQL_COL_{counter}"
                used.add(n)
                counter += 1
            result.append((n, expr, ty))
        seen: set[str] = set()
        for n, _, ty in result:
            if n in seen:
                raise KsqlStatementException(f"Duplicate value columns found in schema: `{n}` {ty}")
            seen.add(n)
        return result

    def _split_key(self, named: list[tuple[str, e.Expression, SqlType]], source: DataSource,
                   alias: str, partition_by: tuple[e.Expression, ...], compiler: ExpressionCompiler,
                   sink_name: str | None, persistent: bool) -> tuple[list[OutputColumn], list[OutputColumn]]:
        """Which projected columns form the result's key, as ksqlDB decides."""

        def strip(x: e.Expression) -> e.Expression:
            # `I.COL` and `COL` denote the same column of a single source.
            if isinstance(x, e.ColumnRef) and x.source is not None:
                return e.ColumnRef(x.name)
            return x

        if partition_by:
            for p in partition_by:
                if isinstance(p, e.NullLiteral) and len(partition_by) > 1:
                    raise KsqlStatementException("Cannot PARTITION BY multiple columns including NULL")
            key_exprs = [strip(p) for p in partition_by]
        else:
            key_exprs = [e.ColumnRef(c.name) for c in source.schema.key]
            if not persistent and source.window is not None:
                # In a transient query's result the window bounds are part of the key.
                key_exprs += [e.ColumnRef("WINDOWSTART"), e.ColumnRef("WINDOWEND")]
        key_slots: list[OutputColumn | None] = [None] * len(key_exprs)
        values: list[OutputColumn] = []
        for name, expr, ty in named:
            sx = strip(expr)
            if sx in key_exprs:
                idx = key_exprs.index(sx)
                if key_slots[idx] is not None:
                    raise KsqlStatementException(
                        f"The projection contains a key column (`{key_exprs[idx].name if isinstance(key_exprs[idx], e.ColumnRef) else key_slots[idx].name}`) "
                        f"more than once, aliased as: {key_slots[idx].name} and {name}.")
                key_slots[idx] = OutputColumn(name, expr, ty)
            else:
                values.append(OutputColumn(name, expr, ty))
        missing = [i for i, s in enumerate(key_slots) if s is None]
        new_planner = str(self.config.get("ksql.new.query.planner.enabled", "false")).lower() == "true"
        if missing and persistent and not (new_planner and not partition_by):
            if partition_by:
                if all(isinstance(p, e.NullLiteral) for p in partition_by):
                    key_slots = []
                else:
                    shown = [f"{source.name}.{k.name}" if isinstance(k, e.ColumnRef) else str(k)
                             for k in key_exprs]
                    if len(shown) == 1:
                        raise KsqlStatementException(
                            f"The query used to build `{sink_name}` must include the partitioning expression "
                            f"{shown[0]} in its projection (eg, SELECT {shown[0]}...).")
                    listed = ", ".join(shown[:-1]) + " and " + shown[-1]
                    raise KsqlStatementException(
                        f"The query used to build `{sink_name}` must include the partitioning expressions "
                        f"{listed} in its projection (eg, SELECT {', '.join(shown)}...).")
            else:
                # ksqlDB names every key column when any is missing.
                names = [k.name for k in key_exprs]  # type: ignore[attr-defined]
                if len(names) == 1:
                    raise KsqlStatementException(
                        f"The query used to build `{sink_name}` must include the key column {names[0]} in its "
                        f"projection (eg, SELECT {names[0]}...).")
                listed = ", ".join(names[:-1]) + " and " + names[-1]
                raise KsqlStatementException(
                    f"The query used to build `{sink_name}` must include the key columns {listed} in its "
                    f"projection (eg, SELECT {', '.join(names)}...).")
        keys = [k for k in key_slots if k is not None]
        return keys, values


@dataclass(frozen=True)
class AggregateCall:
    """One aggregate function call: its per-record argument expressions (over the source),
    literal init arguments, and the resolved overload."""

    call: e.FunctionCall
    args: tuple[e.Expression, ...]
    arg_types: tuple[SqlType, ...]
    init_args: tuple[Any, ...]
    resolved: Any  # functions.registry.Resolved

    @property
    def return_type(self) -> SqlType:
        return self.resolved.return_type

    def aggregator(self, config: dict[str, Any] | None = None) -> Any:
        return self.resolved.aggregator(self.init_args, config)


@dataclass(frozen=True)
class AggregatePlan:
    """The typed logical plan of a GROUP BY query.

    ``groups`` are the grouping expressions over the source (``KSQL_GROUPBY_i``); ``key`` and
    ``value`` are the result's columns with expressions over the aggregated row (group
    columns, ``KSQL_AGG_VARIABLE_i`` results, WINDOWSTART/WINDOWEND); ``having`` likewise.
    """

    source: DataSource
    alias: str
    where: e.Expression | None
    key: tuple[OutputColumn, ...]
    value: tuple[OutputColumn, ...]
    schema: LogicalSchema
    groups: tuple[OutputColumn, ...]
    aggregates: tuple[AggregateCall, ...]
    having: e.Expression | None
    window: ast.WindowExpression | None
    emit_final: bool = False
    limit: int | None = None
    # As QueryPlan.projection (a grouping key left out of the SELECT is not in it).
    projection: tuple[int, ...] | None = None

    def select_columns(self) -> tuple[OutputColumn, ...]:
        return select_columns(self)


def groups_by_source_key(plan: AggregatePlan, result_key_format: FormatInfo | None = None) -> bool:
    """Whether ``plan`` aggregates its source's records in the partitions they are in, with no
    repartition (Kafka Streams' ``groupByKey``), as ksqlDB's ``SchemaKStream.groupBy``
    decides: the GROUP BY expressions are exactly the source's key columns, in order, and the
    source is a STREAM whose keys are not windowed. A TABLE source always re-groups (ksqlDB's
    ``SchemaKTable.groupBy``: an update must retract the row's old value from its group), and
    so does a windowed source (its keys carry their window). ``result_key_format``: the key
    format the result is written in (the sink's); a different one from the source's is
    re-keyed as before. None: the result keeps the source's (a push query's)."""
    source = plan.source
    if source.is_table or source.window is not None or not source.schema.key:
        return False
    if [g.expression for g in plan.groups] != [e.ColumnRef(c.name) for c in source.schema.key]:
        return False
    return result_key_format is None or result_key_format.name == source.key_format.name


def _projection(named: list[tuple[str, e.Expression, SqlType]], keys: "list[OutputColumn]",
                values: "list[OutputColumn]") -> tuple[int, ...] | None:
    """The SELECT order of a result's columns as indexes into ``keys + values`` (result
    names are unique); None when some projected name is not a result column."""
    index = {c.name: i for i, c in enumerate(list(keys) + list(values))}
    order = tuple(index.get(name, -1) for name, _, _ in named)
    return None if -1 in order else order


def select_columns(plan: Any) -> tuple[OutputColumn, ...]:
    """A plan's result columns in SELECT order (what a push query shows); key columns then
    value columns where the plan keeps no projection order (joins)."""
    columns = tuple(plan.key) + tuple(plan.value)
    order = getattr(plan, "projection", None)
    return columns if order is None else tuple(columns[i] for i in order)


def _names_itself(x: e.Expression, alias: str) -> bool:
    """Whether ``x AS alias`` is a column selected under its own name."""
    return isinstance(x, e.ColumnRef) and x.name == alias


def _strip_qualifier(x: e.Expression, source: DataSource, alias: str) -> e.Expression:
    """``I.COL`` and ``COL`` are the same column of a single source."""
    def fn(node: e.Expression) -> e.Expression | None:
        if isinstance(node, e.ColumnRef) and node.source in (alias, source.name):
            return e.ColumnRef(node.name)
        return None
    return x.transform(fn)


# ===================================================================================== sinks
SINK_PROPERTIES = {"KAFKA_TOPIC", "PARTITIONS", "REPLICAS", "KEY_FORMAT", "VALUE_FORMAT", "FORMAT",
                   "WRAP_SINGLE_VALUE", "VALUE_DELIMITER", "KEY_DELIMITER", "TIMESTAMP",
                   "TIMESTAMP_FORMAT", "KEY_SCHEMA_ID", "VALUE_SCHEMA_ID", "KEY_SCHEMA_FULL_NAME",
                   "VALUE_SCHEMA_FULL_NAME", "VALUE_AVRO_SCHEMA_FULL_NAME", "RETENTION_MS",
                   "KEY_PROTOBUF_NULLABLE_REPRESENTATION", "VALUE_PROTOBUF_NULLABLE_REPRESENTATION"}


def sanitized_statement(stmt: ast.CreateAsSelect, plan: Any) -> ast.CreateAsSelect:
    """``stmt`` as ksqlDB's AstSanitizer rewrites it before planning: the source aliased by its
    name, every column qualified by it, each select item named as its result column, and
    ``EMIT CHANGES``. Joins are left as written."""
    query = stmt.query
    if not isinstance(query.from_, ast.AliasedRelation):
        return stmt
    alias = query.from_.alias or query.from_.name

    def qualify(x: e.Expression) -> e.Expression:
        params = {p for node in x.walk() if isinstance(node, e.Lambda) for p in node.params}
        return x.transform(lambda n: e.ColumnRef(n.name, alias)
                           if isinstance(n, e.ColumnRef) and n.source is None and n.name not in params
                           else None)

    items = list(query.select)
    names = [c.name for c in select_columns(plan)]
    if all(isinstance(i, ast.SingleColumn) for i in items) and len(names) == len(items):
        items = [ast.SingleColumn(qualify(i.expression), name) for i, name in zip(items, names)]
    rewritten = replace(
        query, select=tuple(items), from_=ast.AliasedRelation(query.from_.name, alias),
        where=qualify(query.where) if query.where is not None else None,
        group_by=tuple(qualify(g) for g in query.group_by),
        partition_by=tuple(qualify(p) for p in query.partition_by),
        having=qualify(query.having) if query.having is not None else None,
        emit=query.emit or "CHANGES")
    return replace(stmt, query=rewritten)


def sink_source(stmt: ast.CreateAsSelect, plan: QueryPlan, config: dict[str, Any],
                source_partitions: int, source_replicas: int = 1) -> DataSource:
    """The DataSource a CREATE ... AS SELECT creates."""
    props = stmt.properties
    check_properties(props, SINK_PROPERTIES)
    src = plan.source
    inherited_key = src.key_format.name
    if inherited_key == "NONE" and plan.schema.key:
        # A keyless source's result that has a key (a join, PARTITION BY) takes the default
        # key format, as ksqlDB's.
        inherited_key = None
    key_fmt, value_fmt = formats_from_properties(
        props, config, default_key=None if "KEY_FORMAT" in props or "FORMAT" in props else inherited_key,
        default_value=None if "VALUE_FORMAT" in props or "FORMAT" in props else src.value_format.name)
    # A key format that cannot carry the new key (e.g. several columns in KAFKA after PARTITION
    # BY) is kept: ksqlDB only changes it when the user says so.
    inherited_props = list(props.items)
    if "VALUE_DELIMITER" not in props and value_fmt == src.value_format.name == "DELIMITED" \
            and src.value_format.options.delimiter != ",":
        inherited_props.append(("VALUE_DELIMITER", src.value_format.options.delimiter))
    if "KEY_DELIMITER" not in props and key_fmt == src.key_format.name == "DELIMITED" \
            and src.key_format.options.delimiter != ",":
        inherited_props.append(("KEY_DELIMITER", src.key_format.options.delimiter))
    sink_props = ast.Properties(tuple(inherited_props))
    if len(plan.schema.value) != 1 and props.get("WRAP_SINGLE_VALUE") is not None:
        raise KsqlException("'WRAP_SINGLE_VALUE' is only valid for single-field value schemas")
    try:
        key_info, value_info = _validated_formats(key_fmt, value_fmt, plan.schema, sink_props)
    except KsqlException as exc:
        # ksqlDB makes the sink's serdes while planning the query, and quotes the statement
        # as it rewrote it when they refuse the schema.
        if " format does not support schema." not in str(exc):
            raise
        raise KsqlStatementException(
            f"{exc}\nStatement: {format_statement(sanitized_statement(stmt, plan))}") from None
    prefix = config.get("ksql.output.topic.name.prefix", "")
    topic = str(props.get("KAFKA_TOPIC") or f"{prefix}{stmt.name}")
    check_topic_name(topic, "" if props.get("KAFKA_TOPIC") else (
        f"\nThe topic of {stmt.kind.lower()} {stmt.name} is named after it: "
        "give it a valid name with WITH (KAFKA_TOPIC='...')"))
    ts_col = props.get("TIMESTAMP")
    ts_fmt = props.get("TIMESTAMP_FORMAT")
    if ts_col is not None:
        ts_col = _timestamp_column(str(ts_col), plan.schema, ts_fmt)
    partitions = (partitions_property(props, "PARTITIONS", config)
                  or partitions_property(config, "ksql.sink.partitions", config) or source_partitions)
    # As ksqlDB: the sink is replicated like the source unless told otherwise.
    replicas = (int_property(props, "REPLICAS") or int_property(config, "ksql.sink.replicas")
                or source_replicas)
    return DataSource(
        name=stmt.name, kind=stmt.kind, schema=plan.schema, topic=topic, key_format=key_info,
        value_format=value_info, sql=stmt.text, timestamp_column=ts_col,
        timestamp_format=str(ts_fmt) if ts_fmt is not None else None, window=plan.source.window,
        partitions=partitions, replicas=replicas, cas_target=True)

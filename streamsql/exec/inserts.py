"""INSERT INTO ... VALUES: one record written to a stream's or table's topic.

The values are constant expressions, evaluated once and coerced to their columns' types as
ksqlDB's ``InsertValuesExecutor`` does (numeric widening, string literals for temporal
columns, field by field inside STRUCT/ARRAY/MAP), then serialized with the target's formats.
Nothing goes to the command log: the record itself is the change.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from streamsql import ast
from streamsql import expressions as e
from streamsql.catalog import DataSource
from streamsql.codegen import ExpressionCompiler, Scope
from streamsql.errors import KsqlStatementException, StreamSqlError, WriteFailedError
from streamsql.results import Result
from streamsql.runtime.log.base import ProducerRecord
from streamsql.types import BIGINT, BaseType

if TYPE_CHECKING:  # pragma: no cover - imports only for type hints
    from streamsql.engine import Engine, Session


async def insert_values(engine: Engine, stmt: ast.InsertValues, props: dict[str, Any],
                        session: Session, seq: int | None) -> Result:
    target = engine.catalog.source(stmt.target)
    if target is None:
        raise KsqlStatementException(
            f"Cannot insert values into an unknown stream/table: `{stmt.target}`"
            + _name_hint(engine, stmt.target))
    if target.is_source:
        raise KsqlStatementException(f"Cannot insert values into read-only {target.kind.lower()}: {target.name}")
    values, rowtime = row_values(engine, target, stmt)
    key = tuple(values.get(c.name) for c in target.schema.key)
    value = tuple(values.get(c.name) for c in target.schema.value_format_columns)
    kb = _insert_step(target, engine.codec(target, "key").encode, key) \
        if target.schema.key and any(v is not None for v in key) else None
    vb = _insert_step(target, engine.codec(target, "value").encode, value)
    ts = rowtime if rowtime is not None else _now_ms()
    if target.timestamp_column and values.get(target.timestamp_column) is not None \
            and target.timestamp_format is None:
        ts = values[target.timestamp_column]
    try:
        await engine.log.produce(target.topic, [ProducerRecord(kb, vb, ts)])
    except OSError as exc:  # the embedded log took nothing of the failed write
        raise WriteFailedError(f"Failed to insert values into '{target.name}'. "
                               f"{exc.strerror or exc}") from exc
    return Result(stmt.text, "currentStatus", None)


def row_values(engine: Engine, target: DataSource, stmt: ast.InsertValues) -> tuple[dict[str, Any], int | None]:
    """The values of INSERT VALUES by column name, coerced to the columns' types, and the
    ROWTIME it gives (None if none); also what the test runner's ASSERT VALUES expects."""
    writable = [c for c in target.schema.columns if c.namespace in ("KEY", "VALUE")]
    columns = list(stmt.columns) or [c.name for c in writable]
    if not stmt.columns and len(stmt.values) != len(writable):
        raise KsqlStatementException(
            f"Expected a value for each column. Expected Columns: {[c.name for c in writable]}. "
            f"Got {list(stmt.values)}")
    if len(columns) != len(stmt.values):
        raise KsqlStatementException("Failed to prepare statement: Expected number columns and "
                                     f"values to match: {len(columns)}, {len(stmt.values)}")
    # Header columns are read from the record's headers; INSERT VALUES writes none.
    headers = [n for n in columns if (c := target.schema.find(n)) is not None
               and c.namespace in ("HEADER", "HEADERS")]
    if headers:
        raise KsqlStatementException(f"Cannot insert into HEADER columns: {', '.join(headers)}")
    compiler = ExpressionCompiler(engine.registry, Scope())
    values: dict[str, Any] = {}
    rowtime = None
    for name, expr in zip(columns, stmt.values):
        if name == "ROWTIME":  # a BIGINT like any column (ksqlDB's coercer checks it so)
            rowtime = _insert_step(target, _coerce_value, compiler, expr, BIGINT, name)
            continue
        if name in ("ROWPARTITION", "ROWOFFSET"):  # pseudo columns the log assigns
            raise KsqlStatementException(f"Inserting into column `{name}` is not allowed.")
        col = target.schema.find(name)
        if col is None:
            raise KsqlStatementException(f"Column name {name} does not exist.")
        values[name] = _insert_step(target, _coerce_value, compiler, expr, col.type, name)
    return values, rowtime


def _name_hint(engine: Engine, name: str) -> str:
    """ksqlDB's hint when a source name differs only by case from an existing one."""
    for existing in engine.catalog.sources:
        if existing.upper() == name.upper() and existing != name:
            if existing == existing.upper():
                return f"\nDid you mean {existing}? Hint: try removing double quotes from the source name."
            return (f"\nDid you mean \"{existing}\"? Hint: wrap the source name in double quotes "
                    "to make it case-sensitive.")
    return ""


def _now_ms() -> int:
    return int(time.time() * 1000)


def _insert_step(target: DataSource, step: Any, *args: Any) -> Any:
    """``step(*args)`` of INSERT VALUES: evaluating a value, converting it to its column's
    type, serializing the row. A value that cannot be computed (``1/0``), does not fit its
    column (a DECIMAL's precision) or its format fails the statement as ksqlDB's
    InsertValuesExecutor reports it: "Failed to insert values into 'S'. <why>"."""
    try:
        return step(*args)
    except StreamSqlError:
        raise
    except (ArithmeticError, ValueError) as exc:  # decimal.InvalidOperation, OverflowError too
        raise KsqlStatementException(f"Failed to insert values into '{target.name}'. {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    """An evaluation error as ksqlDB words it (Java's ArithmeticException for a division)."""
    if isinstance(exc, ZeroDivisionError):
        return "/ by zero"
    return str(exc) or type(exc).__name__


def _eval_constant(compiler: ExpressionCompiler, expr: e.Expression, c: Any = None) -> Any:
    """A constant expression's value (``c``: its code, if compiled already); a function that
    fails on it fails the statement (in a query it would give NULL and a processing-log entry;
    here there is no record to skip)."""
    c = c if c is not None else compiler.compile(expr)
    errors = compiler.env["_errs"]
    try:
        value = eval(c.src, compiler.env)  # noqa: S307 - generated from a constant expression
    except (ArithmeticError, ValueError) as exc:
        raise ValueError(f"Error evaluating expression {expr}: {_reason(exc)}") from None
    if errors:
        what, exc = errors[0]
        errors.clear()
        raise ValueError(f"Error evaluating expression {expr}: {what}: {_reason(exc)}")
    return value


class _NotCoercible(Exception):
    """An INSERT VALUES value that its column's type cannot take."""


def _coerce_value(compiler: ExpressionCompiler, expr: e.Expression, type_, name: str) -> Any:
    """An INSERT VALUES expression converted to its column's type (numeric widening, string
    literals for temporal columns), or a ksqlDB-style error."""
    from streamsql.casts import cast_function
    from streamsql.types import ArrayType, MapType, StructType, can_implicitly_cast

    c = compiler.compile(expr)
    value = _eval_constant(compiler, expr, c)

    def coerce(v: Any, src: Any, dst: Any) -> Any:
        # Literals are coerced inside collections too (STRUCT(c := 5) into STRUCT<c BIGINT>),
        # as ksqlDB's value coercer does: field by field, item by item.
        if v is None or src == dst:
            return v
        if isinstance(src, StructType) and isinstance(dst, StructType) and isinstance(v, dict):
            fields = {f.name: f.type for f in src.fields}
            # Fields the column's type lacks are dropped and missing ones are NULL, as
            # ksqlDB's coercer (a registered schema's defaults then fill them in).
            return {f.name: coerce(v.get(f.name), fields[f.name], f.type) if f.name in fields else None
                    for f in dst.fields}
        if isinstance(src, ArrayType) and isinstance(dst, ArrayType) and isinstance(v, list):
            return [coerce(x, src.item, dst.item) for x in v]
        if isinstance(src, MapType) and isinstance(dst, MapType) and isinstance(v, dict):
            return {coerce(k, src.key, dst.key): coerce(x, src.value, dst.value) for k, x in v.items()}
        if can_implicitly_cast(src, dst) or (
                src.base is BaseType.STRING and dst.base in (BaseType.DATE, BaseType.TIME, BaseType.TIMESTAMP)) or (
                src.base is BaseType.DECIMAL and dst.base is BaseType.DECIMAL):
            fn = cast_function(src, dst)
            if fn is not None:
                return fn(v)
        raise _NotCoercible

    try:
        return coerce(value, c.type, type_)
    except _NotCoercible:
        raise KsqlStatementException(
            f"Expected type {type_} for field {name} but got {value!r}({c.type})") from None

"""Schema mapping: result columns -> Connect schemas and values (source), Connect schemas and
values -> columns and parameters (sink), as kafka-connect-jdbc's ``SchemaMapping`` and
``GenericDatabaseDialect.addFieldToSchema``/``columnConverterFor``/``bindField``.

A source record's value is a Connect STRUCT named after the table (unnamed in query mode), one
field per column under its label, optional where the column is nullable. Types follow
Confluent's mapping of the JDBC types the drivers report: TINYINT(1)/BIT -> INT8, unsigned
integers one size up, REAL -> FLOAT32, DOUBLE/FLOAT -> FLOAT64, DECIMAL -> the Decimal logical
type, NUMERIC by ``numeric.mapping`` (none, precision_only, best_fit, best_fit_eager_double),
DATE/TIME/TIMESTAMP -> Connect's logical types; types Confluent cannot map are left out, with a
warning. Values of logical types are what Connect's Java API holds, in Python:
``decimal.Decimal``, ``datetime.date``, ``datetime.time``, and an aware ``datetime.datetime``
(UTC) for a Timestamp.
"""
from __future__ import annotations

import datetime
import decimal
import logging
from dataclasses import dataclass
from functools import partial
from itertools import repeat
from operator import add, is_not
from typing import Any, Callable, Sequence

from streamsql.runtime.connect.api import (
    BOOLEAN, BYTES, DATE, DECIMAL, FLOAT32, FLOAT64, INT8, INT16, INT32, INT64, STRING, STRUCT, TIME,
    TIMESTAMP, ConnectException, Field, Schema)
from streamsql.runtime.connect.jdbc.dialects import ResultColumn

log = logging.getLogger(__name__)

UTC = datetime.timezone.utc
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=UTC)
EPOCH_DATE = datetime.date(1970, 1, 1)
MAX_INTEGER_TYPE_PRECISION = 18
NUMERIC_MAPPINGS = ("none", "precision_only", "best_fit", "best_fit_eager_double")

Converter = Callable[[Any], Any]
# A column's values at once -> theirs converted (the same values as its Converter gives one by one).
ColumnConverter = Callable[[Sequence[Any]], list[Any]]


class ConversionError(ConnectException):
    """A value of a row that does not convert to its field's type."""


def decimal_schema(scale: int, optional: bool) -> Schema:
    return Schema(BYTES, optional=optional, name=DECIMAL, version=1, parameters=(("scale", str(scale)),))


def _logical(kind: str, optional: bool) -> Schema:
    name = {"date": DATE, "time": TIME, "timestamp": TIMESTAMP}[kind]
    return Schema(INT32 if kind != "timestamp" else INT64, optional=optional, name=name, version=1)


def _int_for_precision(precision: int) -> str:
    if precision > 9:
        return INT64
    if precision > 4:
        return INT32
    if precision > 2:
        return INT16
    return INT8


def _numeric_type(col: ResultColumn, mapping: str) -> str | None:
    """The primitive type ``numeric.mapping`` gives a NUMERIC column, or None for Decimal."""
    p, s = col.precision, col.scale
    if p <= 0:
        return None  # unbounded NUMERIC: only a Decimal holds it
    if mapping == "precision_only":
        if s == 0 and p <= MAX_INTEGER_TYPE_PRECISION:
            return _int_for_precision(p)
    elif mapping == "best_fit":
        if p <= MAX_INTEGER_TYPE_PRECISION:
            if -84 <= s < 1:
                return _int_for_precision(p)
            if s > 0:
                return FLOAT64
    elif mapping == "best_fit_eager_double":
        if -84 <= s < 1:
            if p <= MAX_INTEGER_TYPE_PRECISION:
                return _int_for_precision(p)
        elif s > 0:
            return FLOAT64
    return None


@dataclass(frozen=True)
class FieldMapping:
    """A result column's field and the converter of its values (None: as the driver gives
    them); ``convert_column``, where there is one, converts a whole column the same way by C
    loops (no Python call per value)."""

    column: int
    field: Field
    convert: Converter | None
    convert_column: ColumnConverter | None = None


def map_columns(columns: Sequence[ResultColumn], schema_name: str | None, numeric_mapping: str,
                timezone: datetime.tzinfo) -> tuple[Schema, list[FieldMapping]]:
    """The record schema of a result and how to convert each column's values."""
    fields: list[Field] = []
    mappings: list[FieldMapping] = []
    for i, col in enumerate(columns):
        made = _field_schema(col, numeric_mapping)
        if made is None:
            log.warning("JDBC type %s (%s) of column '%s' not currently supported: the column is left out",
                        col.type_name, col.kind, col.name)
            continue
        schema, convert = made[0], _converter(col, made[0], timezone)
        f = Field(col.name, len(fields), schema)
        fields.append(f)
        if isinstance(convert, tuple):
            mappings.append(FieldMapping(i, f, *convert))
        else:
            mappings.append(FieldMapping(i, f, convert))
    return Schema(STRUCT, name=schema_name, fields=tuple(fields)), mappings


def _field_schema(col: ResultColumn, numeric_mapping: str) -> tuple[Schema] | None:
    opt = col.nullable
    k = col.kind
    if k is None:
        return None
    if k == "bool":
        return (Schema(BOOLEAN, optional=opt),)
    if k == "bit":
        return (Schema(INT8, optional=opt),)
    if k in ("int8", "int16", "int32", "int64"):
        t = {"int8": INT8, "int16": INT16, "int32": INT32, "int64": INT64}[k]
        if col.unsigned:
            t = {INT8: INT16, INT16: INT32, INT32: INT64, INT64: INT64}[t]
        return (Schema(t, optional=opt),)
    if k == "float32":
        return (Schema(FLOAT32, optional=opt),)
    if k == "float64":
        return (Schema(FLOAT64, optional=opt),)
    if k == "numeric":
        t = _numeric_type(col, numeric_mapping)
        if t is not None:
            return (Schema(t, optional=opt),)
        return (decimal_schema(col.scale, opt),)
    if k == "decimal":
        return (decimal_schema(col.scale, opt),)
    if k == "string":
        return (Schema(STRING, optional=opt),)
    if k == "bytes":
        return (Schema(BYTES, optional=opt),)
    if k in ("date", "year"):
        return (_logical("date", opt),)
    if k in ("time", "timestamp"):
        return (_logical(k, opt),)
    return None


# -- value converters (per field, chosen once) ------------------------------------------------

def _converter(col: ResultColumn, schema: Schema, tz: datetime.tzinfo
               ) -> Converter | tuple[Converter, ColumnConverter] | None:
    t, name, driver = schema.type, schema.name, col.driver
    if name == TIMESTAMP:
        if driver == "mysql":
            return _mysql_timestamps(tz)  # the dialect's connection hands their text over
        return _timestamp_converter(tz)
    if name == DATE:
        if col.kind == "year":
            return _year_to_date
        return _mysql_dates() if driver == "mysql" else _to_date
    if name == TIME:
        return _to_time
    if name == DECIMAL:
        scale = col.scale
        q = decimal.Decimal(1).scaleb(-scale)
        if driver == "mysql":
            return None  # MySQLdb hands DECIMAL(p,s) over as a Decimal of that scale already

        def dec(v: Any, q: decimal.Decimal = q) -> Any:
            if v is None:
                return None
            d = v if isinstance(v, decimal.Decimal) else decimal.Decimal(str(v))
            if d.as_tuple().exponent == -scale:
                return d
            fitted = d.quantize(q)
            if fitted != d:  # never round silently: the schema's scale cannot hold it
                raise ValueError(f"{d} has more than {scale} decimal places")
            return fitted
        return dec
    if col.kind == "numeric":  # mapped to a primitive by numeric.mapping
        return _to_float if t == FLOAT64 else _to_int
    if col.kind == "bit":
        return _bit_to_int8
    if t == BOOLEAN and driver != "postgresql":
        return _to_bool
    if t == BOOLEAN and col.type_name == "1560":
        return lambda v: None if v is None else str(v) == "1"
    if t == STRING:
        if driver == "postgresql" and col.type_name in ("114", "3802", "2950"):
            return _json_text
        # MySQLdb and psycopg decode text themselves (MySQL's binary text is BYTES, above)
        return _to_str if driver == "sqlite" else None
    if t == BYTES:
        return _to_bytes
    if t in (INT8, INT16, INT32, INT64) and driver == "sqlite":
        return _to_int
    if t in (FLOAT32, FLOAT64) and driver == "sqlite":
        return _to_float
    return None


def _timestamp_converter(tz: datetime.tzinfo) -> Converter:
    def conv(v: Any) -> Any:
        if v is None:
            return None
        if type(v) is datetime.datetime:
            if v.tzinfo is None:
                return v.replace(tzinfo=tz) if tz is UTC else v.replace(tzinfo=tz).astimezone(UTC)
            return v.astimezone(UTC)
        return _parse_timestamp(v, tz)
    return conv


_fromiso = datetime.datetime.fromisoformat
_date_fromiso = datetime.date.fromisoformat


def _mysql_timestamps(tz: datetime.tzinfo) -> tuple[Converter, ColumnConverter]:
    """MySQL's DATETIME/TIMESTAMP text (MySqlDialect's connection hands it over as it comes)
    -> aware datetimes in UTC, read in ``tz``; a zero date ('0000-00-00 00:00:00') is NULL, as
    MySQLdb reads it. A column at once by C loops where ``tz`` is UTC (the offset appended to
    each text, parsed by ``fromisoformat``): a Python call per value (MySQLdb's converters
    are called so) costs more than the rest of the row's read."""

    def one(v: Any) -> Any:
        if v is None:
            return None
        try:
            dt = _fromiso(v)
        except ValueError:
            return None
        return dt.replace(tzinfo=UTC) if tz is UTC else dt.replace(tzinfo=tz).astimezone(UTC)

    def many(col: Sequence[Any]) -> list[Any]:
        if tz is UTC:
            try:
                if None not in col:
                    return list(map(_fromiso, map(add, col, repeat("+00:00"))))
                parsed = map(_fromiso, map(add, filter(partial(is_not, None), col), repeat("+00:00")))
                return [v if v is None else next(parsed) for v in col]
            except (TypeError, ValueError):  # a zero date among them (or not text): one by one
                pass
        return list(map(one, col))
    return one, many


def _mysql_dates() -> tuple[Converter, ColumnConverter]:
    """MySQL's DATE text -> dates; a zero date is NULL (as MySQLdb reads it); see
    ``_mysql_timestamps``."""

    def one(v: Any) -> Any:
        if v is None:
            return None
        try:
            return _date_fromiso(v)
        except ValueError:
            return None

    def many(col: Sequence[Any]) -> list[Any]:
        try:
            if None not in col:
                return list(map(_date_fromiso, col))
        except (TypeError, ValueError):
            pass
        return list(map(one, col))
    return one, many


def _parse_timestamp(v: Any, tz: datetime.tzinfo) -> datetime.datetime:
    if isinstance(v, datetime.datetime):
        return v.replace(tzinfo=tz).astimezone(UTC) if v.tzinfo is None else v.astimezone(UTC)
    if isinstance(v, datetime.date):
        return datetime.datetime(v.year, v.month, v.day, tzinfo=tz).astimezone(UTC)
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return EPOCH + datetime.timedelta(milliseconds=v)  # SQLite JDBC's default: epoch millis
    if isinstance(v, (str, bytes)):
        text = v.decode() if isinstance(v, bytes) else v
        dt = datetime.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        return dt.replace(tzinfo=tz).astimezone(UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    raise TypeError(f"not a timestamp: {type(v).__name__}")


def _to_date(v: Any) -> Any:
    if v is None or type(v) is datetime.date:
        return v
    if isinstance(v, datetime.datetime):
        return v.date()
    if isinstance(v, (str, bytes)):
        text = v.decode() if isinstance(v, bytes) else v
        return datetime.date.fromisoformat(text.strip()[:10])
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return (EPOCH + datetime.timedelta(milliseconds=v)).date()
    raise TypeError(f"not a date: {type(v).__name__}")


def _year_to_date(v: Any) -> Any:
    return None if v is None else datetime.date(int(v), 1, 1)


def _to_time(v: Any) -> Any:
    if v is None or type(v) is datetime.time:
        return v
    if isinstance(v, datetime.timedelta):  # MySQL's TIME: a duration, possibly over a day
        micros = (v.days * 86400 + v.seconds) * 1_000_000 + v.microseconds
        micros %= 86_400_000_000
        s, us = divmod(micros, 1_000_000)
        return datetime.time(s // 3600, s // 60 % 60, s % 60, us)
    if isinstance(v, datetime.datetime):
        return v.time()
    if isinstance(v, (str, bytes)):
        text = v.decode() if isinstance(v, bytes) else v
        return datetime.time.fromisoformat(text.strip())
    raise TypeError(f"not a time: {type(v).__name__}")


def _to_int(v: Any) -> Any:
    if v is None or type(v) is int:
        return v
    if isinstance(v, float) and not v.is_integer():
        raise TypeError(f"{v!r} is not an integer")
    return int(v)


def _to_float(v: Any) -> Any:
    return v if v is None or type(v) is float else float(v)


def _to_bool(v: Any) -> Any:
    if v is None or type(v) is bool:
        return v
    return bool(int(v))


def _bit_to_int8(v: Any) -> Any:
    if v is None or type(v) is int:
        return v
    if isinstance(v, (bytes, bytearray)):
        return int.from_bytes(v, "big")
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, str):
        return int(v, 2) if set(v) <= {"0", "1"} else int(v)
    return int(v)


def _to_str(v: Any) -> Any:
    if v is None or type(v) is str:
        return v
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).decode("utf-8")
    return str(v)


def _json_text(v: Any) -> Any:
    if v is None or type(v) is str:
        return v
    import orjson

    return orjson.dumps(v).decode()


def _to_bytes(v: Any) -> Any:
    if v is None or type(v) is bytes:
        return v
    if isinstance(v, (bytearray, memoryview)):
        return bytes(v)
    if isinstance(v, str):
        return v.encode("utf-8")
    return bytes(v)


def rows_converter(mappings: Sequence[FieldMapping], width: int, table: str | None,
                   columns: Sequence[ResultColumn]) -> Callable[[Sequence[Sequence[Any]]], list[tuple]]:
    """A function from a batch of driver rows to their structs' values tuples, made once per
    result shape: the rows as they are where nothing converts; else column at a time where a
    column converts so (the batch turned into columns and back by ``zip``, C loops), else
    row at a time by one generated expression. A batch that fails is done again row at a
    time, which names the row's column and value."""
    identity = all(m.convert is None for m in mappings) and [m.column for m in mappings] == list(range(width))
    if identity:
        return _as_tuples  # the driver's rows are the values tuples already
    row = _row_converter(mappings, table, columns)
    if not any(m.convert_column is not None for m in mappings):
        return lambda rows: list(map(row, rows))
    plan = [(m.column, m.convert_column or (partial(_mapped, m.convert) if m.convert is not None else None))
            for m in mappings]

    def convert(rows: Sequence[Sequence[Any]]) -> list[tuple]:
        if not rows:
            return []
        try:
            cols = list(zip(*rows))
            return list(zip(*[col(cols[i]) if col is not None else cols[i] for i, col in plan]))
        except Exception:  # noqa: BLE001 - row at a time: the failing value is named
            return list(map(row, rows))
    return convert


def _as_tuples(rows: Sequence[Sequence[Any]]) -> list[tuple]:
    return list(rows) if not rows or type(rows[0]) is tuple else list(map(tuple, rows))


def _mapped(one: Converter, col: Sequence[Any]) -> list[Any]:
    return list(map(one, col))


def _row_converter(mappings: Sequence[FieldMapping], table: str | None,
                   columns: Sequence[ResultColumn]) -> Callable[[Sequence[Any]], tuple]:
    """A function from a driver row to the struct's values tuple (one generated expression,
    not a loop over fields per row)."""
    env: dict[str, Any] = {}
    parts = []
    for m in mappings:
        if m.convert is None:
            parts.append(f"r[{m.column}]")
        else:
            env[f"c{m.column}"] = m.convert
            parts.append(f"c{m.column}(r[{m.column}])")
    where = f"table '{table}'" if table else "the query's result"

    def explain(row: Sequence[Any], exc: Exception) -> tuple:
        # The slow path, on failure only: find the column and say which it is.
        for m in mappings:
            if m.convert is not None:
                try:
                    m.convert(row[m.column])
                except Exception as inner:  # noqa: BLE001
                    raise ConversionError(
                        f"Cannot convert column '{columns[m.column].name}' of {where} to "
                        f"{_type_text(m.field.schema)}: {inner} (value {row[m.column]!r})") from inner
        raise ConversionError(f"Cannot convert a row of {where}: {exc}") from exc

    env["explain"] = explain
    src = (f"def convert(r):\n    try:\n        return ({', '.join(parts)},)\n"
           f"    except Exception as exc:\n        return explain(r, exc)\n")
    exec(compile(src, f"<jdbc row converter {table}>", "exec"), env)  # noqa: S102 - our own source
    return env["convert"]  # type: ignore[no-any-return]


def _type_text(schema: Schema) -> str:
    return schema.name.rsplit(".", 1)[-1] if schema.name else schema.type.upper()


# -- sink: values as parameters -------------------------------------------------------------

def bind_value(schema: Schema | None, value: Any, dialect_name: str, tz: datetime.tzinfo) -> Any:
    """A Connect value as a driver parameter (Confluent's bindField): logical types from
    their Python values or the raw ints a converter reads back (days, millis)."""
    if value is None:
        return None
    name = schema.name if schema is not None else None
    if name == TIMESTAMP:
        if isinstance(value, datetime.datetime):
            inst = value if value.tzinfo else value.replace(tzinfo=UTC)
        else:
            inst = EPOCH + datetime.timedelta(milliseconds=int(value))
        local = inst.astimezone(tz).replace(tzinfo=None)
        return local.isoformat(sep=" ", timespec="milliseconds") if dialect_name == "SqliteDatabaseDialect" else local
    if name == DATE:
        d = value if isinstance(value, datetime.date) else EPOCH_DATE + datetime.timedelta(days=int(value))
        return d.isoformat() if dialect_name == "SqliteDatabaseDialect" else d
    if name == TIME:
        if isinstance(value, datetime.time):
            t = value
        else:
            ms = int(value)
            t = datetime.time(ms // 3_600_000, ms // 60_000 % 60, ms // 1000 % 60, ms % 1000 * 1000)
        return t.isoformat(timespec="milliseconds") if dialect_name == "SqliteDatabaseDialect" else t
    if name == DECIMAL:
        d = value if isinstance(value, decimal.Decimal) else decimal.Decimal(str(value))
        return str(d) if dialect_name == "SqliteDatabaseDialect" else d
    if schema is not None and schema.type == BOOLEAN and dialect_name != "PostgreSqlDatabaseDialect":
        return int(bool(value))
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    return value

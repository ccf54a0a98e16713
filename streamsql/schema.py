"""Logical schemas: the columns of a stream or table, split into key, value and header columns.

A row on the hot path is a tuple in schema order (``LogicalSchema.columns``): key columns,
then value columns, then the pseudo columns that apply. Formats see only the key or value
part.
"""
from __future__ import annotations

from dataclasses import dataclass

from streamsql.types import BIGINT, INTEGER, SqlType

# Pseudo columns every source row has, in this order, after the value columns.
ROWTIME = "ROWTIME"
ROWPARTITION = "ROWPARTITION"
ROWOFFSET = "ROWOFFSET"
WINDOWSTART = "WINDOWSTART"
WINDOWEND = "WINDOWEND"
PSEUDO_COLUMNS: dict[str, SqlType] = {ROWTIME: BIGINT, ROWPARTITION: INTEGER, ROWOFFSET: BIGINT}
WINDOW_BOUNDS: dict[str, SqlType] = {WINDOWSTART: BIGINT, WINDOWEND: BIGINT}
# Names a user may not give a column (ksqlDB: "'X' is a reserved column name.").
RESERVED_COLUMN_NAMES = frozenset({ROWTIME, ROWPARTITION, ROWOFFSET, WINDOWSTART, WINDOWEND})


@dataclass(frozen=True)
class Column:
    """A named, typed column. ``namespace`` is 'KEY', 'VALUE' or 'HEADERS'/'HEADER'
    (``header_key`` set for a single HEADER('k') column)."""

    name: str
    type: SqlType
    namespace: str = "VALUE"
    header_key: str | None = None

    def __str__(self) -> str:
        suffix = {"KEY": " KEY", "VALUE": "", "HEADERS": " HEADERS"}.get(self.namespace, "")
        if self.namespace == "HEADER":
            suffix = f" HEADER('{self.header_key}')"
        return f"`{self.name}` {self.type}{suffix}"


@dataclass(frozen=True)
class LogicalSchema:
    """Key columns and value columns (headers count as value-side columns that the value
    format does not see)."""

    key: tuple[Column, ...] = ()
    value: tuple[Column, ...] = ()

    @property
    def columns(self) -> tuple[Column, ...]:
        return self.key + self.value

    def find(self, name: str) -> Column | None:
        for c in self.key + self.value:
            if c.name == name:
                return c
        return None

    def index(self, name: str) -> int:
        for i, c in enumerate(self.key + self.value):
            if c.name == name:
                return i
        raise KeyError(name)

    @property
    def value_format_columns(self) -> tuple[Column, ...]:
        """The value columns the value format serializes (headers excluded)."""
        return tuple(c for c in self.value if c.namespace == "VALUE")

    def __str__(self) -> str:
        return ", ".join(str(c) for c in self.columns)

"""The catalog: streams, tables, custom types and persistent queries an engine knows.

The catalog is rebuilt by replaying the command log, so it holds only what statements
declare; everything in it is immutable except the maps themselves, which only the engine's
statement handlers change (``streamsql.exec.ddl`` and ``streamsql.exec.persistent``; the
engine itself declares the built-in processing-log stream).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from streamsql.formats.base import FormatOptions
from streamsql.schema import LogicalSchema
from streamsql.types import SqlType


@dataclass(frozen=True)
class FormatInfo:
    """A key or value format: its name (upper case) and options."""

    name: str
    options: FormatOptions = FormatOptions()


@dataclass(frozen=True)
class WindowInfo:
    """How the keys of a windowed source are windowed: TUMBLING, HOPPING or SESSION, with the
    window size in ms (None for SESSION)."""

    kind: str
    size: int | None = None


@dataclass(frozen=True)
class DataSource:
    """A stream or table: schema, topic, formats and timestamp extraction."""

    name: str
    kind: str  # 'STREAM' or 'TABLE'
    schema: LogicalSchema
    topic: str
    key_format: FormatInfo
    value_format: FormatInfo
    sql: str = ""
    timestamp_column: str | None = None
    timestamp_format: str | None = None
    window: WindowInfo | None = None
    is_source: bool = False
    partitions: int = 1
    replicas: int = 1
    # Created by CREATE ... AS SELECT (ksqlDB's ``isCasTarget``): ALTER refuses it.
    cas_target: bool = False

    @property
    def is_table(self) -> bool:
        return self.kind == "TABLE"


@dataclass
class QueryInfo:
    """A persistent query as the catalog records it (the runtime keeps the running part)."""

    query_id: str
    sql: str
    sink: str | None
    sources: tuple[str, ...]
    kind: str  # 'CSAS', 'CTAS', 'INSERT'
    state: str = "RUNNING"


@dataclass
class Catalog:
    """Sources by name, custom types by name, persistent queries by id."""

    sources: dict[str, DataSource] = field(default_factory=dict)
    types: dict[str, SqlType] = field(default_factory=dict)
    queries: dict[str, QueryInfo] = field(default_factory=dict)

    def source(self, name: str) -> DataSource | None:
        return self.sources.get(name)

    def queries_reading(self, name: str) -> list[QueryInfo]:
        return [q for q in self.queries.values() if name in q.sources]

    def queries_writing(self, name: str) -> list[QueryInfo]:
        return [q for q in self.queries.values() if q.sink == name]

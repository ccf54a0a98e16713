"""What executing a statement returns: one ``Result`` per statement, rendered by the shell as
a message or a table and by the REST API as ksqlDB's entities."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, AsyncIterator


class Tombstone(tuple):
    """A push query's row that says its key's row of a table was deleted (ksqlDB's
    ``"tombstone": true`` rows): the key columns, NULL elsewhere."""

    __slots__ = ()


@dataclass
class Result:
    """The outcome of one statement.

    ``kind`` names the entity (ksqlDB's ``@type`` where one exists): 'currentStatus',
    'streams', 'tables', 'queries', 'kafka_topics', 'properties', 'function_names',
    'describe_function', 'sourceDescription', 'queryDescription', 'type_list', 'rows'
    (pull query or PRINT, all rows at once) or 'stream' (push query: ``stream`` yields rows).
    """

    statement: str
    kind: str
    message: str | None = None
    columns: tuple[str, ...] = ()
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    entity: Any = None
    query_id: str | None = None
    stream: AsyncIterator[tuple[Any, ...]] | None = None
    warnings: list[str] = field(default_factory=list)
    # How a pull query over a stream ended ('Limit Reached', 'Query Completed': the
    # "finalMessage" of its /query response); None for other results.
    final_message: str | None = None

"""Engine results as ksqlDB's REST entities, and query rows as ksqlDB's JSON.

``statement_entity`` turns one statement's ``Result`` into the entity ``POST /ksql`` returns
for it (``currentStatus``, ``streams``, ``sourceDescription``, ...; None for statements
ksqlDB answers with nothing, such as INSERT VALUES or SET). ``command_id`` names the command a
catalog-changing statement is, as ksqlDB's CommandIdAssigner does (``stream/`S`/create``).

``RowEncoder`` writes query rows as JSON arrays with ksqlDB's value forms: TIMESTAMP, DATE and
TIME as ISO strings, DECIMAL as an exact number, BYTES as base64. Which columns need a
conversion is decided once per query, so a row of plain values goes straight to orjson.
"""
from __future__ import annotations

import base64
from decimal import Decimal
from typing import Any, Callable, Sequence

import orjson

from streamsql import ast
from streamsql.casts import date_str, time_str, timestamp_str
from streamsql.results import Result
from streamsql.types import ArrayType, BaseType, MapType, SqlType, StructType, any_type

# Keys of entities built for the embedded shell that are not part of ksqlDB's entities.
_SHELL_ONLY_KEYS = ("fieldRows",)
_TEMPORAL = {BaseType.TIMESTAMP: timestamp_str, BaseType.DATE: date_str, BaseType.TIME: time_str}


# ================================================================================== values
def json_default(o: Any) -> Any:
    """orjson fallback: DECIMAL as an exact number, BYTES as base64 text."""
    if isinstance(o, Decimal):
        return orjson.Fragment(format(o, "f"))
    if isinstance(o, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(o)).decode("ascii")
    raise TypeError(f"Type is not JSON serializable: {type(o).__name__}")


def dumps(obj: Any) -> bytes:
    """JSON bytes of ``obj`` (decimals exact, bytes as base64, other objects as text)."""
    try:
        return orjson.dumps(obj, default=json_default)
    except TypeError:
        return orjson.dumps(obj, default=lambda o: json_default(o) if isinstance(
            o, (Decimal, bytes, bytearray, memoryview)) else str(o))


def _converter(t: SqlType) -> Callable[[Any], Any] | None:
    """A function making a non-null value of ``t`` JSON-ready, or None when orjson (with
    ``json_default``) writes it as ksqlDB does already."""
    if not any_type(t, lambda x: x.base in _TEMPORAL):
        return None
    if t.base in _TEMPORAL:
        return _TEMPORAL[t.base]
    if isinstance(t, ArrayType):
        item = _converter(t.item)
        assert item is not None
        return lambda v: [None if x is None else item(x) for x in v]
    if isinstance(t, MapType):
        value = _converter(t.value)
        assert value is not None
        return lambda v: {k: (None if x is None else value(x)) for k, x in v.items()}
    assert isinstance(t, StructType)
    fields = tuple((f.name, _converter(f.type)) for f in t.fields)
    return lambda v: {n: (v.get(n) if c is None or v.get(n) is None else c(v[n])) for n, c in fields}


class RowEncoder:
    """Rows of one query (columns of ``types``) to JSON array bytes."""

    def __init__(self, types: Sequence[SqlType]) -> None:
        self.conversions = tuple((i, c) for i, c in ((i, _converter(t)) for i, t in enumerate(types))
                                 if c is not None)

    def values(self, row: Sequence[Any]) -> Any:
        """The row with ksqlDB's value forms (a list when something changed)."""
        if not self.conversions:
            return row
        out = list(row)
        for i, conv in self.conversions:
            v = out[i]
            if v is not None:
                out[i] = conv(v)
        return out

    def encode(self, row: Sequence[Any]) -> bytes:
        return dumps(self.values(row))


# ================================================================================= schemas
def schema_text(names: Sequence[str], types: Sequence[SqlType], keys: int) -> str:
    """The ``schema`` of a /query header: ```ID` STRING KEY, `V` BIGINT``."""
    return ", ".join(f"`{n}` {t}" + (" KEY" if i < keys else "")
                     for i, (n, t) in enumerate(zip(names, types)))


# ================================================================================ commands
def command_id(stmt: ast.Statement) -> str | None:
    """ksqlDB's command id for a statement that goes through the command log, else None."""
    if isinstance(stmt, (ast.CreateSource, ast.CreateAsSelect)):
        return f"{stmt.kind.lower()}/`{stmt.name}`/create"
    if isinstance(stmt, ast.DropSource):
        return f"{stmt.kind.lower()}/`{stmt.name}`/drop"
    if isinstance(stmt, ast.InsertInto):
        return f"stream/`{stmt.target}`/create"
    if isinstance(stmt, ast.AlterSource):
        return f"{stmt.kind.lower()}/`{stmt.name}`/alter"
    if isinstance(stmt, ast.TerminateQuery):
        return f"terminate/{stmt.query_id.upper() if stmt.query_id else 'ALL'}/execute"
    if isinstance(stmt, ast.PauseResumeQuery):
        return f"{stmt.action.lower()}/{stmt.query_id.upper() if stmt.query_id else 'ALL'}/execute"
    if isinstance(stmt, ast.AlterSystem):
        return "cluster/AlterSystemProperty/execute"
    if isinstance(stmt, ast.CreateType):
        return f"type/{stmt.name}/create"
    if isinstance(stmt, ast.DropType):
        return f"type/{stmt.name}/drop"
    if isinstance(stmt, (ast.CreateConnector, ast.DropConnector)):
        return f"connector/`{stmt.name}`/{'create' if isinstance(stmt, ast.CreateConnector) else 'drop'}"
    return None


# ================================================================================ entities
def _strip(entity: Any) -> Any:
    if isinstance(entity, dict):
        return {k: _strip(v) for k, v in entity.items() if k not in _SHELL_ONLY_KEYS}
    if isinstance(entity, list):
        return [_strip(v) for v in entity]
    return entity


def warnings_json(result: Result) -> list[dict[str, str]]:
    return [{"message": w} for w in result.warnings]


def current_status(text: str, cmd_id: str, message: str, query_id: str | None, seq: int,
                   warnings: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """ksqlDB's ``CommandStatusEntity``."""
    return {"@type": "currentStatus", "statementText": text, "commandId": cmd_id,
            "commandStatus": {"status": "SUCCESS", "message": message, "queryId": query_id},
            "commandSequenceNumber": seq, "warnings": warnings or []}


def statement_entity(result: Result, stmt: ast.Statement, seq: int) -> dict[str, Any] | None:
    """The entity ``POST /ksql`` returns for ``stmt``'s result; ``seq`` is the command's
    sequence number (for catalog-changing statements)."""
    text = stmt.text if stmt.text.rstrip().endswith(";") else stmt.text + ";"
    if isinstance(result.entity, dict) and "@type" in result.entity:
        entity = _strip(result.entity)
        entity["statementText"] = text
        entity.setdefault("warnings", warnings_json(result))
        return entity
    cmd = command_id(stmt)
    if cmd is not None:
        return current_status(text, cmd, result.message or "", result.query_id, seq, warnings_json(result))
    if result.message:
        # A statement outside the command log that still says something (IF EXISTS, ...).
        return current_status(text, "", result.message, result.query_id, seq, warnings_json(result))
    if result.warnings:
        return {"@type": "warning_entity", "statementText": text, "message": "; ".join(result.warnings),
                "warnings": warnings_json(result)}
    return None

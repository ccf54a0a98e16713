"""Compares what the server answered for a REST query-validation case with what the case
expects (the matching rules of ../shared/rqtt/README.md, as ksqlDB's RestTestExecutor
applies them).

- ``responses`` by position (the server may answer more). An expected object names only the
  fields that matter, nested objects likewise; ``"key|STARTS_WITH": "X"`` asks for a prefix.
  Lists, and objects inside lists, are compared whole.
- Values as ksqlDB's Java client reads them: numbers by the text the server wrote (``1`` is
  not ``1.0``, ``1.5`` is not ``1.50``; ``1E2`` is ``1E+2``), so both sides are read with
  ``streamsql.testing.exactjson``.
- A ``query`` has exactly as many elements as listed; its rows may come in any order unless
  ``outputConditions.verifyOrder``; the header and messages are where they are listed.
- A ``queryProto``'s rows are decoded with the listed ``protoSchema`` and printed in
  protobuf-java's text format (``streamsql.testing.prototext``), then compared with the listed strings, in any
  order.
- ``outputs``: per topic listed, exactly these records in order (``timestamp``, ``window``
  and ``headers`` only where given), values compared as the QTT comparison does.
- ``expectedError``: see ``_compare_error``.

``compare(case, result)`` is None when the result is what the case expects, else why not.
The case must be read with numbers kept (``rest.load_cases(path, exact=True)``).
"""
from __future__ import annotations

import base64
import json
import re
from decimal import Decimal
from typing import Any

from streamsql.testing import exactjson
from streamsql.testing.exactjson import JsonNumber
from streamsql.testing.prototext import proto_text
from streamsql.testing.rest import RestCaseResult

STATEMENT_ERROR_TYPE = "io.confluent.ksql.rest.entity.KsqlStatementErrorMessage"
_STARTS_WITH = "|STARTS_WITH"
_SHOWN = 1500  # characters of a value shown in a reason


def compare(case: dict[str, Any], result: RestCaseResult | dict[str, Any]) -> str | None:
    """None when ``result`` is what ``case`` expects, else a readable reason."""
    if isinstance(result, RestCaseResult):
        result = result.to_json()
    error = result.get("error")
    if error is not None and error.get("endpoint") is None:
        return f"the runner failed: {error.get('body')}"
    if "expectedError" in case:
        return _compare_error(case, result)
    if error is not None:
        return f"unexpected error from {error['endpoint']} ({error['status']}): {_show(error.get('body'))}"
    return (_compare_responses(case, result.get("responses") or [])
            or _compare_outputs(case.get("outputs"), result.get("outputs") or []))


# ========================================================================= expected errors
def _compare_error(case: dict[str, Any], result: dict[str, Any]) -> str | None:
    """A request answered with an error of the listed HTTP ``status``, whose ``message``
    contains the listed one and, for ``KsqlStatementErrorMessage``, a ``statement_error``
    whose ``statementText`` contains the case's last statement (masked as ksqlDB masks an
    INSERT VALUES). When a query failed (not the statements), the responses and outputs
    listed must hold, and no query may have succeeded."""
    expected = case["expectedError"]
    error = result.get("error")
    if error is None:
        return "expected a request to fail, but every request succeeded"
    body = error.get("body")
    status = expected.get("status")
    if status is not None and _int(status) != error.get("status"):
        return (f"expected an error with status {_int(status)}, got {error.get('status')} from "
                f"{error.get('endpoint')}: {_show(body)}")
    message = body.get("message") if isinstance(body, dict) else body
    wanted = expected.get("message")
    if wanted is not None and (not isinstance(message, str) or wanted not in message):
        return (f"error message differs:\n  expected to contain: {wanted!r}\n"
                f"  got ({error.get('endpoint')}, {error.get('status')}): {message!r}")
    if expected.get("type") == STATEMENT_ERROR_TYPE:
        if not isinstance(body, dict) or body.get("@type") != "statement_error":
            return f"expected a statement_error, got: {_show(body)}"
        statements = case.get("statements") or []
        last = mask_statement(statements[-1]) if statements else ""
        text = body.get("statementText")
        if not isinstance(text, str) or last not in text:
            return (f"statement_error's statementText differs:\n  expected to contain: {last!r}\n"
                    f"  got: {text!r}")
    if error.get("endpoint") == "/ksql":
        return None  # the case ended with its statements
    succeeded = [r for r in result.get("responses") or [] if "query" in r or "queryProto" in r]
    if succeeded:
        return f"expected the queries to fail, but one succeeded: {_show(succeeded[0])}"
    return (_compare_responses(case, result.get("responses") or [])
            or _compare_outputs(case.get("outputs"), result.get("outputs") or []))


def mask_statement(sql: str) -> str:
    """The statement as ksqlDB shows it in an error: an INSERT VALUES with its names quoted
    (unquoted ones upper-cased) and each value replaced by ``'[value]'``; any other
    statement as written."""
    tokens = _tokens(sql.strip())
    words = [t.upper() for t in tokens[:2]]
    if words != ["INSERT", "INTO"] or len(tokens) < 3:
        return sql
    pos = 2
    target = _quote(tokens[pos])
    pos += 1
    columns: list[str] | None = None
    if pos < len(tokens) and tokens[pos] == "(":
        columns, pos = _parenthesized(tokens, pos)
    if pos >= len(tokens) or tokens[pos].upper() != "VALUES" or pos + 1 >= len(tokens) \
            or tokens[pos + 1] != "(":
        return sql
    values, _ = _parenthesized(tokens, pos + 1)
    masked = ", ".join("'[value]'" for _ in values)
    names = "" if columns is None else " (" + ", ".join(_quote(c) for c in columns) + ")"
    return f"INSERT INTO {target}{names} VALUES ({masked});"


_TOKEN = re.compile(r"""\s*(`(?:[^`]|``)*`|"(?:[^"]|"")*"|'(?:[^']|'')*'|[()\[\],;]|[^\s()\[\],;'"`]+)""")


def _tokens(sql: str) -> list[str]:
    return [m.group(1) for m in _TOKEN.finditer(sql)]


def _quote(name: str) -> str:
    if name.startswith("`") or name.startswith('"'):
        return "`" + name[1:-1] + "`"
    return "`" + name.upper() + "`"


def _parenthesized(tokens: list[str], pos: int) -> tuple[list[str], int]:
    """The comma-separated items (as text) of the parentheses opening at ``pos``, and the
    position after them."""
    items: list[str] = []
    current: list[str] = []
    depth = 0
    pos += 1
    while pos < len(tokens):
        tok = tokens[pos]
        pos += 1
        if tok in ("(", "["):
            depth += 1
        elif tok == "]":
            depth -= 1
        elif tok == ")":
            if depth == 0:
                break
            depth -= 1
        elif tok == "," and depth == 0:
            items.append(" ".join(current))
            current = []
            continue
        current.append(tok)
    if current:
        items.append(" ".join(current))
    return items, pos


# ============================================================================== responses
def _compare_responses(case: dict[str, Any], actual: list[Any]) -> str | None:
    expected = case.get("responses") or []
    if len(actual) < len(expected):
        kinds = [next(iter(r), "?") for r in actual]
        return f"expected at least {len(expected)} responses, got {len(actual)}: {kinds}"
    verify_order = bool((case.get("outputConditions") or {}).get("verifyOrder"))
    for i, (exp, act) in enumerate(zip(expected, actual)):
        kind = next(iter(exp), None)
        if kind not in act:
            return f"response {i}: expected {kind!r}, got {_show(act)}"
        if kind == "admin":
            reason = mismatch(exp[kind], act[kind], f"response {i} admin")
        elif kind == "query":
            reason = _compare_query(exp[kind], act[kind], verify_order, f"response {i} query")
        elif kind == "queryProto":
            reason = _compare_query_proto(exp[kind], act[kind], f"response {i} queryProto")
        else:
            reason = mismatch(exp[kind], act[kind], f"response {i} {kind}")
        if reason:
            return reason
    return None


def _is_row(item: Any) -> bool:
    return isinstance(item, dict) and "row" in item


def _compare_query(expected: list[Any], actual: Any, verify_order: bool, where: str) -> str | None:
    """Exactly as many elements; the header and messages where listed; the rows where the
    listed rows are, in any order unless ``verify_order``."""
    row_positions, reason = _compare_frame(expected, actual, where)
    if reason:
        return reason
    exp_rows = [expected[i] for i in row_positions]
    act_rows = [actual[i] for i in row_positions]
    if verify_order:
        for i, (e, a) in enumerate(zip(exp_rows, act_rows)):
            reason = mismatch(e, a, f"{where} row {i}")
            if reason:
                return reason
        return None
    return _match_any_order(exp_rows, act_rows, lambda e, a: mismatch(e, a, "") is None, where)


def _compare_frame(expected: list[Any], actual: Any, where: str) -> tuple[list[int], str | None]:
    """What a query response and its expectation must share whatever their rows: as many
    elements, and the header and messages (every element that is not a row) matching. Returns
    the rows' positions, and why the frame does not match (None when it does)."""
    if not isinstance(actual, list) or len(actual) != len(expected):
        n = len(actual) if isinstance(actual, list) else "no"
        return [], (f"{where}: expected {len(expected)} elements (header, rows, messages), got {n}:\n"
                    f"  expected: {_show(expected)}\n  actual:   {_show(actual)}")
    row_positions = [i for i, item in enumerate(expected) if _is_row(item)]
    for i, item in enumerate(expected):
        if i not in row_positions:
            reason = mismatch(item, actual[i], f"{where}[{i}]")
            if reason:
                return row_positions, reason
    return row_positions, None


def _match_any_order(expected: list[Any], actual: list[Any], match: Any, where: str) -> str | None:
    left = list(actual)
    for e in expected:
        for j, a in enumerate(left):
            if match(e, a):
                del left[j]
                break
        else:
            return (f"{where}: no row matches {_show(e)}\n  rows not matched: {_show(left)}\n"
                    f"  expected rows:    {_show(expected)}")
    return None


def _compare_query_proto(expected: list[Any], actual: Any, where: str) -> str | None:
    """Like ``_compare_query``, but rows are text: the actual rows' ``protobufBytes``
    decoded with the listed ``protoSchema``, printed in protobuf-java's text format."""
    row_positions, reason = _compare_frame(expected, actual, where)
    if reason:
        return reason
    schema = None
    for item in expected + actual:
        header = item.get("header") if isinstance(item, dict) else None
        if isinstance(header, dict) and isinstance(header.get("protoSchema"), str):
            schema = header["protoSchema"]
            break
    texts = []
    for i in row_positions:
        row = actual[i].get("row") if isinstance(actual[i], dict) else None
        data = row.get("protobufBytes") if isinstance(row, dict) else None
        if not isinstance(data, str) or schema is None:
            return f"{where}[{i}]: expected a protobuf row (and a protoSchema), got {_show(actual[i])}"
        try:
            texts.append(proto_text(schema, base64.b64decode(data)))
        except Exception as exc:  # noqa: BLE001 - a bad row or schema is the case's failure
            return f"{where}[{i}]: cannot decode the row with the protoSchema: {type(exc).__name__}: {exc}"
    wanted = [expected[i]["row"] for i in row_positions]
    return _match_any_order(wanted, texts, lambda e, a: e == a, where)


# ========================================================================== value matching
def mismatch(expected: Any, actual: Any, where: str) -> str | None:
    """None when ``actual`` matches ``expected`` (objects: the fields ``expected`` names,
    recursively, ``|STARTS_WITH`` keys by prefix; anything else: ``values_equal``)."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return f"{where}: expected an object {_show(expected)}, got {_show(actual)}"
        for key, value in expected.items():
            if key.upper().endswith(_STARTS_WITH):
                name = key[:-len(_STARTS_WITH)]
                got = actual.get(name)
                if not isinstance(got, str) or not isinstance(value, str) or not got.startswith(value):
                    return f"{where}.{name}: expected to start with {value!r}, got {_show(got)}"
                continue
            reason = mismatch(value, actual.get(key), f"{where}.{key}")
            if reason:
                return reason
        return None
    if not values_equal(expected, actual):
        return f"{where}: expected {_show(expected)}, got {_show(actual)}"
    return None


def values_equal(a: Any, b: Any) -> bool:
    """Equality as Java's ``equals`` over what Jackson reads (objects with the same keys,
    lists element by element, integers by value, other numbers as ``BigDecimal``: same
    digits and scale)."""
    if isinstance(a, (JsonNumber, int, float)) and not isinstance(a, bool):
        return isinstance(b, (JsonNumber, int, float)) and not isinstance(b, bool) and _numbers_equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(values_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(values_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return a == b


def _numbers_equal(a: Any, b: Any) -> bool:
    x, y = _number(a), _number(b)
    if x.is_integral != y.is_integral:
        return False
    if x.is_integral:
        return int(x.text) == int(y.text)
    dx, dy = x.decimal(), y.decimal()
    if dx is None or dy is None:
        return x.text == y.text
    return dx.as_tuple() == dy.as_tuple()


def _number(v: Any) -> JsonNumber:
    return v if isinstance(v, JsonNumber) else JsonNumber(json.dumps(v))


def _int(v: Any) -> int | None:
    if isinstance(v, JsonNumber):
        return int(v.value())
    return int(v) if v is not None else None


# ================================================================================ outputs
def _compare_outputs(expected: Any, actual: list[dict[str, Any]]) -> str | None:
    """Per topic the case lists: exactly its records, in order (topics it does not list are
    not compared)."""
    from streamsql.testing.qtt import _json_equal

    if not expected:
        return None
    by_topic: dict[str, list[dict[str, Any]]] = {}
    for record in expected:
        by_topic.setdefault(record["topic"], []).append(exactjson.plain(record))
    for topic, records in by_topic.items():
        got = [exactjson.plain(r) for r in actual if r.get("topic") == topic]
        if len(got) != len(records):
            return (f"topic {topic}: expected {len(records)} records, got {len(got)}\n"
                    f"  expected: {_show(records)}\n  actual:   {_show(got)}")
        for i, (e, a) in enumerate(zip(records, got)):
            for part in ("key", "value"):
                if not _json_equal(e.get(part), a.get(part)):
                    return (f"topic {topic} record {i}: {part} {_show(a.get(part))} != expected "
                            f"{_show(e.get(part))}")
            for part in ("timestamp", "window", "headers"):
                if part in e and not _json_equal(e[part], a.get(part)):
                    return (f"topic {topic} record {i}: {part} {_show(a.get(part))} != expected "
                            f"{_show(e[part])}")
    return None


def _show(value: Any) -> str:
    text = exactjson.dumps(value) if not isinstance(value, Decimal) else str(value)
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."

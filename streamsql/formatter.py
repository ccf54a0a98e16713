"""Expression and type rendering in ksqlDB's style (its ExpressionFormatter).

Error messages quote expressions the way ksqlDB prints them, so the text is part of the
interface: ``(F1 + F2)``, ``SUBSTRING(SOURCE, 0, 1)``, ``(0 = T.ID)``, ``'100'``, ``true``,
``null``, ``ARRAY[10]``, ``MAP('a':=1)``, ``STRUCT(F:=1)``, ``(X) => (X + 1)``. Binary operators,
predicates, NOT and CASE come wrapped in parentheses; identifiers that would not read back as
the same name (lower case, reserved words, odd characters) are back-quoted.

``format_statement`` lays out CREATE ... AS SELECT, INSERT INTO and queries the way ksqlDB's
SqlFormatter does (its text appears in ``Statement:`` lines of some messages).

The output parses back (``parse_expression(format_expression(e)) == e``) except for DOUBLE
literals without an exponent, which ksqlDB prints as ``1.5`` (reading back as a DECIMAL).
"""
from __future__ import annotations

import re
from decimal import Decimal
from typing import TYPE_CHECKING, Callable

from streamsql import expressions as ex
from streamsql.types import SqlType

if TYPE_CHECKING:
    from streamsql import ast

__all__ = ["format_expression", "format_type", "format_identifier", "format_statement", "format_query",
           "RESERVED_WORDS"]

# ksqlDB's keywords that are not in its `nonReserved` rule: as names they need quotes.
RESERVED_WORDS: frozenset[str] = frozenset("""
    SELECT FROM AS ALL DISTINCT WHERE WITHIN WINDOW GROUP BY HAVING LIMIT AT OR AND IN NOT
    EXISTS BETWEEN LIKE IS NULL TRUE FALSE MILLISECOND YEARS MONTHS DAYS HOURS MINUTES SECONDS
    MILLISECONDS TUMBLING HOPPING SIZE ADVANCE RETENTION CASE WHEN THEN ELSE END JOIN FULL
    OUTER INNER LEFT RIGHT ON WITH VALUES CREATE TABLE TOPIC STREAM STREAMS INSERT DELETE INTO
    DESCRIBE EXTENDED PRINT CAST LIST TOPICS QUERY QUERIES TERMINATE PAUSE RESUME LOAD DROP TO
    RENAME SAMPLE EXPORT CATALOG PROPERTIES BEGINNING UNSET RUN SCRIPT DECIMAL CONNECTOR
    CONNECTORS NAMESPACE MATERIALIZED VIEW
""".split())

_PLAIN_IDENTIFIER = re.compile(r"[A-Z_][A-Z0-9_@]*|[0-9]+[A-Z_@][A-Z0-9_@]*")


def format_identifier(name: str) -> str:
    """A name as ksqlDB prints it: bare when it reads back unchanged, else in backticks."""
    if _PLAIN_IDENTIFIER.fullmatch(name) and name not in RESERVED_WORDS:
        return name
    return "`" + name.replace("`", "``") + "`"


def format_type(sql_type: SqlType) -> str:
    """A type as ksqlDB prints it (``DECIMAL(4, 2)``, ``STRUCT<`F` DOUBLE>``)."""
    return str(sql_type)


def format_expression(expr: ex.Expression) -> str:
    """SQL text for an expression tree, in ksqlDB's style."""
    formatter = _FORMATTERS.get(type(expr))
    if formatter is None:
        # a subclass of a known node (engines may extend nodes): use the closest ancestor
        formatter = next((_FORMATTERS[k] for k in type(expr).__mro__ if k in _FORMATTERS), None)
        if formatter is None:
            raise TypeError(f"cannot format {type(expr).__name__}")
    return formatter(expr)


def _fmt(expr: ex.Expression) -> str:
    return format_expression(expr)


def _string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _java_double(value: float) -> str:
    """Java's Double.toString: plain from 1e-3 to 1e7, else ``d.dddE[-]n``."""
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "-0.0" if str(value).startswith("-") else "0.0"
    magnitude = abs(value)
    sign = "-" if value < 0 else ""
    if 1e-3 <= magnitude < 1e7:
        text = repr(magnitude)
        if "e" in text:  # repr never does this in range, but stay safe
            text = format(Decimal(text), "f")
        return sign + (text if "." in text else text + ".0")
    digits_tuple = Decimal(repr(magnitude)).normalize().as_tuple()
    digits = "".join(str(d) for d in digits_tuple.digits)
    exponent = len(digits) - 1 + int(digits_tuple.exponent)
    mantissa = digits[0] + "." + (digits[1:] or "0")
    return f"{sign}{mantissa}E{exponent}"


def _binary(op: str, left: ex.Expression, right: ex.Expression) -> str:
    return f"({_fmt(left)} {op} {_fmt(right)})"


def _chain(expr: ex.ArithmeticChain) -> str:
    """``((A + B) - C)``: as the nested binary tree it stands for prints."""
    parts = ["(" * len(expr.rest), _fmt(expr.first)]
    parts += [f" {op} {_fmt(operand)})" for op, operand in expr.rest]
    return "".join(parts)


def _unary(expr: ex.ArithmeticUnary) -> str:
    value = _fmt(expr.operand)
    if expr.op == "-":
        # keep "- -5" from reading as a comment start "--5"
        return "-" + (" " if value.startswith("-") else "") + value
    return "+" + value


def _column(expr: ex.ColumnRef) -> str:
    if expr.source is None:
        return format_identifier(expr.name)
    return f"{format_identifier(expr.source)}.{format_identifier(expr.name)}"


def _function(expr: ex.FunctionCall) -> str:
    if expr.star:
        return f"{expr.name}(*)"
    return f"{expr.name}(" + ", ".join(_fmt(a) for a in expr.args) + ")"


def _lambda(expr: ex.Lambda) -> str:
    return "(" + ", ".join(format_identifier(p) for p in expr.params) + ") => " + _fmt(expr.body)


def _case(expr: ex.Case) -> str:
    parts = ["CASE"]
    if expr.operand is not None:
        parts.append(_fmt(expr.operand))
    for condition, result in expr.whens:
        parts.append(f"WHEN {_fmt(condition)} THEN {_fmt(result)}")
    if expr.default is not None:
        parts.append(f"ELSE {_fmt(expr.default)}")
    parts.append("END")
    return "(" + " ".join(parts) + ")"


def _like(expr: ex.Like) -> str:
    op = "NOT LIKE" if expr.negated else "LIKE"
    escape = f" ESCAPE {_string(expr.escape)}" if expr.escape is not None else ""
    return f"({_fmt(expr.value)} {op} {_fmt(expr.pattern)}{escape})"


def _between(expr: ex.Between) -> str:
    op = "NOT BETWEEN" if expr.negated else "BETWEEN"
    return f"({_fmt(expr.value)} {op} {_fmt(expr.low)} AND {_fmt(expr.high)})"


def _in_list(expr: ex.InList) -> str:
    op = "NOT IN" if expr.negated else "IN"
    return f"({_fmt(expr.value)} {op} (" + ", ".join(_fmt(i) for i in expr.items) + "))"


_COMPARISON_TEXT = {"IS_DISTINCT_FROM": "IS DISTINCT FROM", "IS_NOT_DISTINCT_FROM": "IS NOT DISTINCT FROM"}

_FORMATTERS: dict[type, Callable[..., str]] = {
    ex.NullLiteral: lambda e: "null",
    ex.BooleanLiteral: lambda e: "true" if e.value else "false",
    ex.IntegerLiteral: lambda e: str(e.value),
    ex.DecimalLiteral: lambda e: str(e.value),
    ex.DoubleLiteral: lambda e: _java_double(e.value),
    ex.StringLiteral: lambda e: _string(e.value),
    ex.IntervalUnit: lambda e: e.unit,
    ex.ColumnRef: _column,
    ex.Dereference: lambda e: f"{_fmt(e.base)}->{format_identifier(e.field)}",
    ex.Subscript: lambda e: f"{_fmt(e.base)}[{_fmt(e.index)}]",
    ex.ArithmeticUnary: _unary,
    ex.ArithmeticBinary: lambda e: _binary(e.op, e.left, e.right),
    ex.ArithmeticChain: _chain,
    ex.Comparison: lambda e: _binary(_COMPARISON_TEXT.get(e.op, e.op), e.left, e.right),
    ex.And: lambda e: _binary("AND", e.left, e.right),
    ex.Or: lambda e: _binary("OR", e.left, e.right),
    ex.Not: lambda e: f"(NOT {_fmt(e.operand)})",
    ex.IsNull: lambda e: f"({_fmt(e.operand)} IS {'NOT ' if e.negated else ''}NULL)",
    ex.Like: _like,
    ex.Between: _between,
    ex.InList: _in_list,
    ex.Case: _case,
    ex.Cast: lambda e: f"CAST({_fmt(e.operand)} AS {e.type})",
    ex.FunctionCall: _function,
    ex.Lambda: _lambda,
    ex.CreateArray: lambda e: "ARRAY[" + ", ".join(_fmt(i) for i in e.items) + "]",
    ex.CreateMap: lambda e: "MAP(" + ", ".join(f"{_fmt(k)}:={_fmt(v)}" for k, v in e.entries) + ")",
    ex.CreateStruct: lambda e: "STRUCT(" + ", ".join(f"{format_identifier(n)}:={_fmt(v)}" for n, v in e.fields) + ")",
}


# ------------------------------------------------------------------------------ statements
def format_statement(statement: "ast.Statement") -> str:
    """A statement as ksqlDB's SqlFormatter prints it, as in its ``Statement:`` lines:

    ``CREATE TABLE OUTPUT WITH (KEY_FORMAT='KAFKA') AS SELECT\\n  T.A A,\\n  COUNT(*) N\\nFROM T T\\n``
    ``GROUP BY T.A\\nEMIT CHANGES``. Handles CREATE [... AS SELECT], INSERT INTO and queries;
    other statements fall back to their own text.
    """
    from streamsql import ast

    if isinstance(statement, ast.CreateAsSelect):
        head = _create_head(statement.kind, statement.name, statement.or_replace, statement.if_not_exists)
        return head + _with(statement.properties) + " AS " + format_query(statement.query)
    if isinstance(statement, ast.InsertInto):
        return f"INSERT INTO {format_identifier(statement.target)}{_with(statement.properties)} " + format_query(statement.query)
    if isinstance(statement, ast.QueryStatement):
        return format_query(statement.query)
    if isinstance(statement, ast.CreateSource):
        kind = ("SOURCE " if statement.is_source else "") + statement.kind
        head = _create_head(kind, statement.name, statement.or_replace, statement.if_not_exists)
        elements = ", ".join(_element(e) for e in statement.elements)
        return head + (f" ({elements})" if elements else "") + _with(statement.properties)
    return statement.text


def format_query(query: "ast.Query") -> str:
    """A query in ksqlDB's SqlFormatter layout: one clause per line, several select items one
    per indented line; no trailing newline."""
    from streamsql import ast

    lines = []
    items = [_select_item(item) for item in query.select]
    lines.append("SELECT " + items[0] if len(items) == 1 else "SELECT\n  " + ",\n  ".join(items))
    relation = query.from_
    if isinstance(relation, ast.Join):
        text = _relation(relation.left)
        for join in relation.joins:
            text += f"\n{_JOIN_TEXT[join.join_type]} JOIN {_relation(join.right)}"
            if join.within is not None:
                text += _within(join.within)
            text += f" ON {format_expression(join.criteria)}"
        lines.append("FROM " + text)
    else:
        lines.append("FROM " + _relation(relation))
    if query.window is not None:
        lines.append("WINDOW " + _window(query.window))
    if query.where is not None:
        lines.append("WHERE " + format_expression(query.where))
    if query.group_by:
        lines.append("GROUP BY " + ", ".join(format_expression(e) for e in query.group_by))
    if query.partition_by:
        lines.append("PARTITION BY " + ", ".join(format_expression(e) for e in query.partition_by))
    if query.having is not None:
        lines.append("HAVING " + format_expression(query.having))
    if query.emit is not None:
        lines.append("EMIT " + query.emit)
    if query.limit is not None:
        lines.append(f"LIMIT {query.limit}")
    return "\n".join(lines)


_JOIN_TEXT = {"INNER": "INNER", "LEFT": "LEFT OUTER", "RIGHT": "RIGHT OUTER", "FULL": "FULL OUTER"}

_UNITS = (("DAYS", 86_400_000), ("HOURS", 3_600_000), ("MINUTES", 60_000), ("SECONDS", 1000))


def _duration(millis: int) -> str:
    """Milliseconds in the largest unit that holds them exactly (the unit written is not kept)."""
    for unit, size in _UNITS:
        if millis and millis % size == 0:
            return f"{millis // size} {unit}"
    return f"{millis} MILLISECONDS"


def _within(within: "ast.WithinExpression") -> str:
    if within.before == within.after:
        text = f" WITHIN {_duration(within.before)}"
    else:
        text = f" WITHIN ({_duration(within.before)}, {_duration(within.after)})"
    if within.grace is not None:
        text += f" GRACE PERIOD {_duration(within.grace)}"
    return text


def _window(window: "ast.WindowExpression") -> str:
    if window.kind == "SESSION":
        parts = [_duration(window.size)]
    else:
        parts = [f"SIZE {_duration(window.size)}"]
        if window.advance is not None:
            parts.append(f"ADVANCE BY {_duration(window.advance)}")
    if window.retention is not None:
        parts.append(f"RETENTION {_duration(window.retention)}")
    if window.grace is not None:
        parts.append(f"GRACE PERIOD {_duration(window.grace)}")
    return f"{window.kind} ( " + ", ".join(parts) + " )"


def _select_item(item: "ast.SelectItem") -> str:
    from streamsql import ast

    if isinstance(item, ast.SingleColumn):
        text = format_expression(item.expression)
        return text if item.alias is None else f"{text} {format_identifier(item.alias)}"
    if isinstance(item, ast.AllColumns):
        return "*" if item.source is None else f"{format_identifier(item.source)}.*"
    if isinstance(item, ast.StructAllFields):
        return f"{format_expression(item.expression)}->*"
    raise TypeError(f"cannot format {type(item).__name__}")


def _relation(relation: "ast.AliasedRelation") -> str:
    name = format_identifier(relation.name)
    return name if relation.alias is None else f"{name} {format_identifier(relation.alias)}"


def _create_head(kind: str, name: str, or_replace: bool, if_not_exists: bool) -> str:
    return ("CREATE " + ("OR REPLACE " if or_replace else "") + kind + " "
            + ("IF NOT EXISTS " if if_not_exists else "") + format_identifier(name))


def _with(properties: "ast.Properties") -> str:
    if not properties.items:
        return ""
    return " WITH (" + ", ".join(f"{name}={_property(value)}" for name, value in properties.items) + ")"


def _property(value: object) -> str:
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float):
        return _java_double(value)
    return str(value)


def _element(element: "ast.TableElement") -> str:
    text = f"{format_identifier(element.name)} {element.type}"
    if element.constraint == "HEADER":
        return f"{text} HEADER({_string(element.header_key or '')})"
    return text if element.constraint is None else f"{text} {element.constraint}"

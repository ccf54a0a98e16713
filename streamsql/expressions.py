"""The expression tree: small frozen dataclasses, one per kind of SQL expression.

The parser builds these; the analyzer resolves names and types over them; ``codegen`` turns
a typed tree into Python source. Nodes carry no types themselves: typing is a pass, so one
tree can be typed against different schemas (a SELECT expression against its source, the
same expression in a HAVING clause against the aggregate's output).

Identifiers are stored as ksqlDB resolves them: unquoted names upper-cased, quoted names
(backticks or double quotes) verbatim.

``str(expr)`` renders SQL text in ksqlDB's style (see ``streamsql.formatter``), which is what
error messages and DESCRIBE print.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace, field
from decimal import Decimal
from typing import Any, Callable, Iterator

from streamsql.types import SqlType


def evolve(node: Any, **changes: Any) -> Any:
    """``dataclasses.replace`` for the frozen trees (expressions, statements, plans), at a
    tenth of its cost: a copy of the node's fields with ``changes``, without calling
    ``__init__`` (which replace does for every field). Per-request code (a key lookup fills
    its key into a cached statement and plan) replaces a handful of nodes each time. A class
    with a ``__post_init__`` goes through ``replace``, which runs it."""
    cls = type(node)
    if hasattr(cls, "__post_init__") or not hasattr(node, "__dict__"):
        return replace(node, **changes)
    new = object.__new__(cls)
    state = new.__dict__
    state.update(node.__dict__)
    state.update(changes)
    return new


@dataclass(frozen=True)
class Expression:
    """Base of all expression nodes."""

    def __str__(self) -> str:
        from streamsql.formatter import format_expression

        return format_expression(self)

    def children(self) -> Iterator["Expression"]:
        """Direct sub-expressions, in source order."""
        for value in self.__dict__.values():
            if isinstance(value, Expression):
                yield value
            elif isinstance(value, tuple):
                for item in value:
                    if isinstance(item, Expression):
                        yield item
                    elif isinstance(item, tuple):
                        for sub in item:
                            if isinstance(sub, Expression):
                                yield sub

    def walk(self) -> Iterator["Expression"]:
        """This node and every node below it, depth first, pre-order (without recursion:
        a wide chain of terms costs no stack)."""
        stack: list[Expression] = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(list(node.children())))

    def transform(self, fn: "Callable[[Expression], Expression | None]") -> "Expression":
        """A copy with ``fn`` applied top-down: where ``fn`` returns a node, that node replaces
        the subtree; where it returns None, the children are transformed instead."""
        replaced = fn(self)
        if replaced is not None:
            return replaced
        changes = {}
        for f in fields(self):
            value = getattr(self, f.name)
            new = _transform_value(value, fn)
            if new is not value:
                changes[f.name] = new
        return replace(self, **changes) if changes else self


# ---------------------------------------------------------------------------------- literals
@dataclass(frozen=True)
class Literal(Expression):
    """Base of literals."""


@dataclass(frozen=True)
class NullLiteral(Literal):
    pass


@dataclass(frozen=True)
class BooleanLiteral(Literal):
    value: bool


@dataclass(frozen=True)
class IntegerLiteral(Literal):
    """A whole number: INTEGER when it fits 32 bits, else BIGINT."""

    value: int


@dataclass(frozen=True)
class DecimalLiteral(Literal):
    """A number with a point and no exponent, e.g. ``1.50``: DECIMAL(precision, scale)."""

    value: Decimal


@dataclass(frozen=True)
class DoubleLiteral(Literal):
    """A number with an exponent, e.g. ``1.5E3``: DOUBLE."""

    value: float


@dataclass(frozen=True)
class StringLiteral(Literal):
    value: str


@dataclass(frozen=True)
class IntervalUnit(Literal):
    """A time unit used as a function argument, as in ``TIMESTAMPADD(SECONDS, 5, ts)``.

    ``unit`` is the canonical plural upper-case name: MILLISECONDS, SECONDS, MINUTES, HOURS,
    DAYS (and so on), whatever singular/plural form was written.
    """

    unit: str


# ------------------------------------------------------------------------------- references
@dataclass(frozen=True)
class ColumnRef(Expression):
    """A column, optionally qualified by a source name or alias (``S.COL``).

    Inside a lambda body a ColumnRef whose name is a lambda parameter refers to that
    parameter; the analyzer resolves it.

    ``location`` is the (line, column) where the parser read the reference, 1-based within
    the parsed script, for ksqlDB's ``Line: L, Col: C:`` messages; None for built nodes.
    It takes no part in equality.
    """

    name: str
    source: str | None = None
    location: tuple[int, int] | None = field(default=None, compare=False, repr=False, kw_only=True)


@dataclass(frozen=True)
class Dereference(Expression):
    """Struct field access ``base->field``."""

    base: Expression
    field: str


@dataclass(frozen=True)
class Subscript(Expression):
    """``base[index]``: arrays are 1-based (negative counts from the end); maps by key."""

    base: Expression
    index: Expression


# ------------------------------------------------------------------------------- operators
@dataclass(frozen=True)
class ArithmeticUnary(Expression):
    """``-x`` or ``+x``."""

    op: str  # '-' or '+'
    operand: Expression


@dataclass(frozen=True)
class ArithmeticBinary(Expression):
    """``left op right`` with op one of + - * / %."""

    op: str
    left: Expression
    right: Expression


@dataclass(frozen=True)
class ArithmeticChain(Expression):
    """``first op1 x1 op2 x2 ...`` folded from the left: the same as the nested
    ``ArithmeticBinary`` tree ``((first op1 x1) op2 x2) ...`` (it prints, types and evaluates
    the same), kept flat.

    The parser builds it for long chains only (``a + b + ... + z`` over many terms): a nested
    tree one level per term would be deeper than Python can recurse through (typing, code
    generation, formatting, hashing all walk the tree), while a chain of a thousand terms is
    ordinary SQL. Short chains stay ``ArithmeticBinary``.
    """

    first: Expression
    rest: tuple[tuple[str, Expression], ...]  # (op, operand), op one of + - * / %


@dataclass(frozen=True)
class Comparison(Expression):
    """``left op right``; op is one of = <> < <= > >= IS_DISTINCT_FROM IS_NOT_DISTINCT_FROM
    (``!=`` is stored as ``<>``)."""

    op: str
    left: Expression
    right: Expression


@dataclass(frozen=True)
class And(Expression):
    left: Expression
    right: Expression


@dataclass(frozen=True)
class Or(Expression):
    left: Expression
    right: Expression


@dataclass(frozen=True)
class Not(Expression):
    operand: Expression


@dataclass(frozen=True)
class IsNull(Expression):
    """``operand IS [NOT] NULL``."""

    operand: Expression
    negated: bool = False


@dataclass(frozen=True)
class Like(Expression):
    """``value [NOT] LIKE pattern [ESCAPE 'c']``."""

    value: Expression
    pattern: Expression
    escape: str | None = None
    negated: bool = False


@dataclass(frozen=True)
class Between(Expression):
    """``value [NOT] BETWEEN low AND high``."""

    value: Expression
    low: Expression
    high: Expression
    negated: bool = False


@dataclass(frozen=True)
class InList(Expression):
    """``value [NOT] IN (items...)``."""

    value: Expression
    items: tuple[Expression, ...]
    negated: bool = False


@dataclass(frozen=True)
class Case(Expression):
    """Searched (``operand`` is None) or simple ``CASE operand WHEN ...`` expression.

    ``whens`` holds (condition-or-value, result) pairs.
    """

    operand: Expression | None
    whens: tuple[tuple[Expression, Expression], ...]
    default: Expression | None = None


@dataclass(frozen=True)
class Cast(Expression):
    operand: Expression
    type: SqlType


# ------------------------------------------------------------------------------- functions
@dataclass(frozen=True)
class FunctionCall(Expression):
    """``NAME(args...)``; ``COUNT(*)`` has ``star=True`` and no args. Names are upper-cased."""

    name: str
    args: tuple[Expression, ...] = ()
    star: bool = False


@dataclass(frozen=True)
class Lambda(Expression):
    """``x => body`` or ``(x, y) => body``; parameter names as written (upper-cased unless
    quoted)."""

    params: tuple[str, ...]
    body: Expression


# ---------------------------------------------------------------------------- constructors
@dataclass(frozen=True)
class CreateArray(Expression):
    """``ARRAY[a, b, ...]``."""

    items: tuple[Expression, ...]


@dataclass(frozen=True)
class CreateMap(Expression):
    """``MAP(k1 := v1, k2 := v2)``."""

    entries: tuple[tuple[Expression, Expression], ...]


@dataclass(frozen=True)
class CreateStruct(Expression):
    """``STRUCT(name := value, ...)``; names as written (upper-cased unless quoted)."""

    fields: tuple[tuple[str, Expression], ...]


def _transform_value(value: Any, fn: "Callable[[Expression], Expression | None]") -> Any:
    if isinstance(value, Expression):
        return value.transform(fn)
    if isinstance(value, tuple):
        items = tuple(_transform_value(v, fn) for v in value)
        return value if all(a is b for a, b in zip(items, value)) else items
    return value


def literal_value(expr: Expression) -> Any:
    """The Python value of a literal node (None for NULL); raises for non-literals."""
    if isinstance(expr, NullLiteral):
        return None
    if isinstance(expr, (BooleanLiteral, IntegerLiteral, DecimalLiteral, DoubleLiteral, StringLiteral)):
        return expr.value
    if isinstance(expr, ArithmeticUnary) and expr.op == "-":
        inner = literal_value(expr.operand)
        return -inner if inner is not None else None
    raise TypeError(f"not a literal: {expr!r}")

"""Expression compiler: a typed pass over the expression tree that emits Python source.

``ExpressionCompiler.compile(expr)`` returns ``Compiled(src, type)``: ``src`` is a Python
expression over the local variable names the ``Scope`` maps columns to, and ``type`` is the
expression's SQL type. Callers splice these sources into one generated function per
sub-topology (see ``streamsql.runtime.pipeline``), so per record there is no tree walking, no
dispatch on node kinds and no dict building: just the straight-line code below.

SQL null semantics are in the generated code, as ksqlDB's: an operator with a NULL operand
yields NULL (arithmetic inside a lambda body fails the function instead), AND and OR follow
three-valued logic, and a comparison with a NULL operand is false. Operands are evaluated once
(walrus temporaries). Values that the generated code needs (function implementations,
constants, compiled regexes) are put into the ``env`` dict that becomes the generated
function's globals.

Type errors raise ``KsqlStatementException`` with ksqlDB's wording.
"""
from __future__ import annotations

import decimal
import functools
import math
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable

from streamsql import expressions as e
from streamsql import types as t
from streamsql.errors import KsqlStatementException
from streamsql.functions.registry import INTERVAL_UNIT, FunctionRegistry
from streamsql.functions.safe_regex import SafePattern, like_pattern
from streamsql.types import ArrayType, BaseType, DecimalType, MapType, SqlType, StructType

# Source text of a literal that cannot be NULL: a number, a quoted string, True/False.
_NON_NULL_LITERAL = re.compile(r"-?\d+(\.\d*)?([eE][-+]?\d+)?|'(?:[^'\\\\]|\\\\.)*'|\"(?:[^\"\\\\]|\\\\.)*\"|True|False")

_COMPARISON_NAMES = {
    "=": "EQUAL", "<>": "NOT_EQUAL", "<": "LESS_THAN", "<=": "LESS_THAN_OR_EQUAL",
    ">": "GREATER_THAN", ">=": "GREATER_THAN_OR_EQUAL",
    "IS_DISTINCT_FROM": "IS_DISTINCT_FROM", "IS_NOT_DISTINCT_FROM": "IS_NOT_DISTINCT_FROM",
}
# A plain Python name (a column's local, a temporary, a constant in env): read without a
# temporary.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PY_COMPARE = {"=": "==", "<>": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}

# Decimal arithmetic runs in a context wide enough for DECIMAL(38) intermediates.
DECIMAL_CONTEXT = decimal.Context(prec=80, rounding=decimal.ROUND_HALF_UP)


@dataclass(frozen=True)
class Compiled:
    """Python source of an expression and its SQL type."""

    src: str
    type: SqlType


@dataclass
class ScopeColumn:
    """A column visible to expressions: the Python expression that reads it, and its type."""

    src: str
    type: SqlType


@dataclass
class Scope:
    """Names an expression may reference.

    ``columns`` maps a column name to how to read it; ``qualified`` maps (source alias, name)
    for ``S.COL`` references (joins); ``lambdas`` maps lambda parameter names in scope.
    """

    columns: dict[str, ScopeColumn] = field(default_factory=dict)
    qualified: dict[tuple[str, str], ScopeColumn] = field(default_factory=dict)
    lambdas: dict[str, ScopeColumn] = field(default_factory=dict)
    # Source names/aliases allowed as qualifiers for unqualified-style lookups (single source).
    source_names: frozenset[str] = frozenset()

    def resolve(self, ref: e.ColumnRef) -> ScopeColumn | None:
        if ref.source is None:
            if ref.name in self.lambdas:
                return self.lambdas[ref.name]
            return self.columns.get(ref.name)
        hit = self.qualified.get((ref.source, ref.name))
        if hit is None and ref.source in self.source_names:
            hit = self.columns.get(ref.name)
        return hit


class ExpressionCompiler:
    """Types expressions against a Scope and emits Python source (see module docstring)."""

    def __init__(self, registry: FunctionRegistry, scope: Scope, env: dict[str, Any] | None = None,
                 clause: str = "Select",
                 display: Callable[[e.Expression], e.Expression] | None = None) -> None:
        self.registry = registry
        self.scope = scope
        self.env: dict[str, Any] = env if env is not None else {}
        self.clause = clause
        # How operands are shown in type errors: ksqlDB checks some clauses on a rewritten row
        # (a join's ``I1_BAR``, an aggregation's ``SUM(VALUE)``) and quotes that form.
        self.display = display
        self._counter = [len(self.env)]
        install_runtime_helpers(self.env)

    # -------------------------------------------------------------------------- utilities
    def _tmp(self) -> str:
        self._counter[0] += 1
        return f"_t{self._counter[0]}"

    def _bound(self, src: str) -> tuple[str, str]:
        """(name to read a value by, expression that evaluates it once and binds the name):
        a plain name is read as it is, anything else goes through a walrus temporary (so
        generated code over names is the same text wherever it is made)."""
        if _NAME.fullmatch(src):
            return src, src
        tmp = self._tmp()
        return tmp, f"({tmp} := {src})"

    def operand(self, c: Compiled) -> tuple[str, str | None]:
        """(expression to bind the operand, null test) for a null-propagating operator; a
        non-NULL literal needs neither a temporary nor a test."""
        if _NON_NULL_LITERAL.fullmatch(c.src):
            return c.src, None
        name, binding = self._bound(c.src)
        return name, f"{binding} is None"

    def null_guarded(self, operands: list[Compiled], body: Callable[[list[str]], str],
                     when_null: str = "None") -> str:
        """``None if any operand is NULL else body(operand names)``, each evaluated once
        (``when_null`` replaces that ``None``)."""
        names, tests = [], []
        for c in operands:
            name, test = self.operand(c)
            names.append(name)
            if test is not None:
                tests.append(test)
        if not tests:
            return f"({body(names)})"
        return f"({when_null} if {' or '.join(tests)} else {body(names)})"

    def const(self, value: Any, hint: str = "c") -> str:
        """A name in env bound to ``value``."""
        self._counter[0] += 1
        name = f"_{hint}{self._counter[0]}"
        self.env[name] = value
        return name

    def guarded(self, fn: Callable[..., Any], arity: int, what: str) -> str:
        """A name in env for ``fn`` wrapped so that an exception yields NULL, as ksqlDB
        treats a failing function: the error is queued in ``_errs`` for the processing log."""
        inner = self.const(fn, "f")
        self._counter[0] += 1
        name = f"_g{self._counter[0]}"
        params = ", ".join(f"a{i}" for i in range(arity))
        src = (f"def {name}({params}):\n"
               f"    try:\n"
               f"        return {inner}({params})\n"
               f"    except Exception as exc:\n"
               f"        _errs.append(({what!r}, exc))\n"
               f"        return None\n")
        exec(compile(src, f"<guard {what}>", "exec"), self.env)  # noqa: S102 - generated wrapper
        return name

    def with_lambdas(self, params: dict[str, ScopeColumn]) -> "ExpressionCompiler":
        scope = Scope(self.scope.columns, self.scope.qualified, {**self.scope.lambdas, **params},
                      self.scope.source_names)
        child = ExpressionCompiler.__new__(ExpressionCompiler)
        child.registry, child.scope, child.env, child.clause = self.registry, scope, self.env, self.clause
        child.display = self.display
        child._counter = self._counter
        return child

    def shown(self, expr: e.Expression) -> e.Expression:
        """``expr`` as error messages quote it (see ``display``)."""
        return self.display(expr) if self.display is not None else expr

    def type_of(self, expr: e.Expression) -> SqlType:
        return self.compile(expr).type

    # ----------------------------------------------------------------------------- entry
    def compile(self, expr: e.Expression) -> Compiled:
        method = getattr(self, "_" + type(expr).__name__, None)
        if method is None:
            raise KsqlStatementException(f"Unsupported expression: {expr}")
        return method(expr)

    def compile_predicate(self, expr: e.Expression, clause: str = "WHERE") -> Compiled:
        """Compile a WHERE/HAVING condition: it must be BOOLEAN. A type error in a WHERE
        quotes the condition as ksqlDB's (``...\nStatement: (ID = '10')``)."""
        try:
            c = self.compile(expr)
        except KsqlStatementException as exc:
            text = str(exc)
            if clause == "WHERE" and text.startswith("Error in WHERE expression: ") \
                    and "\nStatement: " not in text:
                raise KsqlStatementException(f"{text}\nStatement: {self.shown(expr)}") from None
            raise
        if c.type.base is not BaseType.BOOLEAN and not c.type.is_null:
            raise KsqlStatementException(
                f"Type error in {clause} expression: Should evaluate to boolean but is "
                f"{expr} ({c.type}) instead.")
        return c

    # --------------------------------------------------------------------------- literals
    def _NullLiteral(self, expr: e.NullLiteral) -> Compiled:
        return Compiled("None", t.NULL)

    def _BooleanLiteral(self, expr: e.BooleanLiteral) -> Compiled:
        return Compiled(repr(bool(expr.value)), t.BOOLEAN)

    def _IntegerLiteral(self, expr: e.IntegerLiteral) -> Compiled:
        v = expr.value
        if t.INT_MIN <= v <= t.INT_MAX:
            return Compiled(repr(v), t.INTEGER)
        if t.BIGINT_MIN <= v <= t.BIGINT_MAX:
            return Compiled(repr(v), t.BIGINT)
        raise KsqlStatementException(f"Invalid numeric literal: {v}")

    def _DecimalLiteral(self, expr: e.DecimalLiteral) -> Compiled:
        decimal_type = decimal_type_of(expr.value)
        problem = t.decimal_parameters_problem(decimal_type.precision, decimal_type.scale)
        if problem is not None:  # more digits than any DECIMAL holds
            raise KsqlStatementException(problem)
        return Compiled(self.const(expr.value, "d"), decimal_type)

    def _DoubleLiteral(self, expr: e.DoubleLiteral) -> Compiled:
        if math.isinf(expr.value):
            raise KsqlStatementException(f"Number overflows DOUBLE: {expr.value}")
        return Compiled(repr(float(expr.value)), t.DOUBLE)

    def _StringLiteral(self, expr: e.StringLiteral) -> Compiled:
        return Compiled(repr(expr.value), t.STRING)

    def _IntervalUnit(self, expr: e.IntervalUnit) -> Compiled:
        return Compiled(repr(expr.unit), INTERVAL_UNIT)

    # ------------------------------------------------------------------------ references
    def _ColumnRef(self, expr: e.ColumnRef) -> Compiled:
        col = self.scope.resolve(expr)
        if col is None:
            shown = f"{expr.source}.{expr.name}" if expr.source else expr.name
            where = f"Line: {expr.location[0]}, Col: {expr.location[1]}: " if expr.location else ""
            raise KsqlStatementException(f"{where}{self.clause} column '{shown}' cannot be resolved.")
        return Compiled(col.src, col.type)

    def _Dereference(self, expr: e.Dereference) -> Compiled:
        base = self.compile(expr.base)
        if not isinstance(base.type, StructType):
            raise KsqlStatementException(
                f"Expected STRUCT type but got {base.type} for {expr.base}")
        f = base.type.field(expr.field)
        if f is None:
            raise KsqlStatementException(
                f"Could not find field '{expr.field}' in '{expr.base}'.")
        tmp = self._tmp()
        return Compiled(f"(None if ({tmp} := {base.src}) is None else {tmp}.get({f.name!r}))", f.type)

    def _Subscript(self, expr: e.Subscript) -> Compiled:
        base = self.compile(expr.base)
        index = self.compile(expr.index)
        if isinstance(base.type, ArrayType):
            if not (index.type.is_integral or index.type.is_null):
                raise KsqlStatementException(
                    f"Array index must be INTEGER or BIGINT but was {index.type}: {expr}")
            return Compiled(f"_array_at({base.src}, {index.src})", base.type.item)
        if isinstance(base.type, MapType):
            return Compiled(f"_map_at({base.src}, {self.coerce(index, base.type.key)})", base.type.value)
        raise KsqlStatementException(f"Subscript expected either ARRAY or MAP but got {base.type}: {expr}")

    # ------------------------------------------------------------------------ arithmetic
    def _ArithmeticUnary(self, expr: e.ArithmeticUnary) -> Compiled:
        inner = self.compile(expr.operand)
        if not (inner.type.is_numeric or inner.type.is_null):
            raise KsqlStatementException(f"Unsupported arithmetic type: {inner.type} for {expr}")
        if expr.op == "+":
            return inner
        tmp = self._tmp()
        return Compiled(f"({self._null_arithmetic()} if ({tmp} := {inner.src}) is None else -{tmp})",
                        inner.type)

    def _ArithmeticBinary(self, expr: e.ArithmeticBinary) -> Compiled:
        return self._arithmetic(expr, expr.op, self.compile(expr.left), self.compile(expr.right))

    def _ArithmeticChain(self, expr: e.ArithmeticChain) -> Compiled:
        """A long chain, typed step by step from the left as the nested binary tree would be.
        The code folds the tuple of operand values with one small function per step (nesting
        each step's code in the next would be too deep for Python to compile); so every
        operand is evaluated, where the nested form skips the rest after a NULL (the result
        is the same)."""
        operands = [self.compile(expr.first)] + [self.compile(x) for _, x in expr.rest]
        # Each step is the binary operator's code over two names: the running result, _a,
        # and the next operand, _b, as a small function; a long chain has few distinct ones.
        acc = Compiled("_a", operands[0].type)
        steps: list[Callable[[Any, Any], Any]] = []
        head, first = operands[0].src, 1  # the fold's start, the operand of its first step
        for i, (op, _) in enumerate(expr.rest, start=1):
            step = self._arithmetic(_ChainPrefix(expr, i), op, acc, Compiled("_b", operands[i].type))
            if step.src == "None":
                # NULL whatever came before (a NULL literal operand): as in the nested form,
                # the operands so far are not evaluated at all.
                steps, head, first = [], "None", i + 1
            else:
                steps.append(self._step(step.src))
            acc = Compiled("_a", step.type)
        if not steps:
            return Compiled("None", acc.type)
        values = "".join(c.src + ", " for c in operands[first:])
        return Compiled(f"_fold({self.const(tuple(steps), 'steps')}, ({head}, {values}))", acc.type)

    def _step(self, src: str) -> Callable[[Any, Any], Any]:
        """``lambda _a, _b: <src>`` over this compiler's env, one per distinct source."""
        cache = self.env.setdefault("_step_functions", {})
        fn = cache.get(src)
        if fn is None:
            fn = cache[src] = eval(f"lambda _a, _b: {src}", self.env)  # noqa: S307 - generated from a typed tree
        return fn

    def _arithmetic(self, expr: object, op: str, left: Compiled, right: Compiled) -> Compiled:
        """Code for ``left op right``; errors quote ``expr`` (its text is the operation's)."""
        lt, rt = left.type, right.type
        if lt.base is BaseType.STRING and rt.base is BaseType.STRING and op == "+":
            a, b = self._tmp(), self._tmp()
            return Compiled(f"(None if ({a} := {left.src}) is None or ({b} := {right.src}) is None else {a} + {b})", t.STRING)
        if lt.is_null or rt.is_null:
            # ksqlDB types no arithmetic with a bare NULL operand (CAST it to give it a type).
            shown = ["null" if ty.is_null else str(ty) for ty in (lt, rt)]
            raise KsqlStatementException(
                f"Error processing expression: {expr}. Arithmetic on types {shown[0]} and "
                f"{shown[1]} are not supported.")
        for ty in (lt, rt):
            if not ty.is_numeric:
                raise KsqlStatementException(
                    f"Error processing expression: {expr}. Unsupported arithmetic types. {lt} {rt}")
        result = arithmetic_result_type(op, lt, rt)
        operands = [Compiled(self.coerce(left, result, loose=True), lt),
                    Compiled(self.coerce(right, result, loose=True), rt)]
        if result.base is BaseType.DECIMAL:
            assert isinstance(result, DecimalType)
            fn = {"+": "_dec_add", "-": "_dec_sub", "*": "_dec_mul", "/": "_dec_div", "%": "_dec_mod"}[op]
            body = lambda n: f"{fn}({n[0]}, {n[1]}, {result.scale})"  # noqa: E731
        elif result.base is BaseType.DOUBLE:
            if op == "/":
                body = lambda n: f"_double_div({n[0]}, {n[1]})"  # noqa: E731
            elif op == "%":
                body = lambda n: f"_double_mod({n[0]}, {n[1]})"  # noqa: E731
            else:
                body = lambda n: f"float({n[0]} {op} {n[1]})"  # noqa: E731
        else:
            wrap = "_wrap_int" if result.base is BaseType.INTEGER else "_wrap_bigint"
            if op == "/":
                body = lambda n: f"{wrap}(_int_div({n[0]}, {n[1]}))"  # noqa: E731
            elif op == "%":
                body = lambda n: f"_int_mod({n[0]}, {n[1]})"  # noqa: E731
            else:
                body = lambda n: f"{wrap}({n[0]} {op} {n[1]})"  # noqa: E731
        return Compiled(self.null_guarded(operands, body, when_null=self._null_arithmetic()), result)

    def _null_arithmetic(self) -> str:
        """What arithmetic on a NULL operand yields: NULL, except in a lambda body, where it
        fails the function the lambda is given to (so that call is NULL): ksqlDB's generated
        Java unboxes the operands there, and the function cannot skip the failing element."""
        return "_null_operand()" if self.scope.lambdas else "None"

    # ------------------------------------------------------------------------ comparison
    def _Comparison(self, expr: e.Comparison) -> Compiled:
        left, right = self.compile(expr.left), self.compile(expr.right)
        if (left.type.is_null or right.type.is_null) \
                and expr.op not in ("IS_DISTINCT_FROM", "IS_NOT_DISTINCT_FROM"):
            # ksqlDB's ComparisonUtil: a bare NULL compares with nothing.
            shown = " ".join((left.type.base.value, expr.op,
                              right.type.base.value))
            message = (f"Comparison with NULL not supported: {shown}\n"
                       "Use 'IS NULL' or 'IS NOT NULL' instead.")
            if self.clause in ("WHERE", "HAVING"):
                message = f"Error in {self.clause} expression: {message}"
            raise KsqlStatementException(message)
        left, right = self._time_column_vs_string(expr, left, right)
        try:
            left, right = self._comparable(expr, left, right)
        except KsqlStatementException as exc:
            if self.clause in ("WHERE", "HAVING") and str(exc).startswith("Cannot compare"):
                raise KsqlStatementException(f"Error in {self.clause} expression: {exc}") from None
            raise
        if expr.op == "IS_DISTINCT_FROM":
            return Compiled(f"(({left.src}) != ({right.src}))", t.BOOLEAN)
        if expr.op == "IS_NOT_DISTINCT_FROM":
            return Compiled(f"(({left.src}) == ({right.src}))", t.BOOLEAN)
        op = _PY_COMPARE[expr.op]
        # ksqlDB's SqlToJavaVisitor guards every comparison with ``a == null || b == null ?
        # false : ...``: a NULL operand makes it false, not NULL, whatever the operand types.
        return Compiled(self.null_guarded([left, right], lambda n: f"{n[0]} {op} {n[1]}",
                                          when_null="False"), t.BOOLEAN)

    def _time_column_vs_string(self, expr: e.Comparison, left: Compiled,
                               right: Compiled) -> tuple[Compiled, Compiled]:
        """ROWTIME, WINDOWSTART and WINDOWEND compare with timestamp strings (ksqlDB parses
        the string as a timestamp)."""
        def is_time_column(x: e.Expression) -> bool:
            return isinstance(x, e.ColumnRef) and x.name in ("ROWTIME", "WINDOWSTART", "WINDOWEND")

        if is_time_column(expr.left) and right.type.base is BaseType.STRING:
            return left, Compiled(f"_parse_temporal({right.src}, 'TIMESTAMP')", t.BIGINT)
        if is_time_column(expr.right) and left.type.base is BaseType.STRING:
            return Compiled(f"_parse_temporal({left.src}, 'TIMESTAMP')", t.BIGINT), right
        return left, right

    def _comparable(self, expr: e.Expression, left: Compiled, right: Compiled,
                    op_name: str | None = None) -> tuple[Compiled, Compiled]:
        """Check two operands may be compared; coerce strings compared with temporal types."""
        lt, rt = left.type, right.type
        op = getattr(expr, "op", "=")
        if lt.is_null or rt.is_null:
            return left, right
        if lt.is_numeric and rt.is_numeric:
            if (lt.base is BaseType.DOUBLE) != (rt.base is BaseType.DOUBLE):
                # Decimal and float never compare equal in Python; ksqlDB compares as DOUBLE.
                return Compiled(self.coerce(left, t.DOUBLE), t.DOUBLE), Compiled(self.coerce(right, t.DOUBLE), t.DOUBLE)
            return left, right
        temporal = (BaseType.DATE, BaseType.TIME, BaseType.TIMESTAMP)
        if lt.base in temporal and rt.base is BaseType.STRING:
            return left, Compiled(f"_parse_temporal({right.src}, {lt.base.value!r})", lt)
        if rt.base in temporal and lt.base is BaseType.STRING:
            return Compiled(f"_parse_temporal({left.src}, {rt.base.value!r})", rt), right
        if lt.base is BaseType.TIMESTAMP and rt.base is BaseType.DATE:
            return left, Compiled(f"_date_to_ts({right.src})", t.TIMESTAMP)
        if lt.base is BaseType.DATE and rt.base is BaseType.TIMESTAMP:
            return Compiled(f"_date_to_ts({left.src})", t.TIMESTAMP), right
        if lt.base == rt.base and lt.base in (BaseType.STRING, BaseType.BOOLEAN, BaseType.BYTES,
                                               BaseType.DATE, BaseType.TIME, BaseType.TIMESTAMP):
            return left, right
        if lt.base == rt.base and lt.base in (BaseType.ARRAY, BaseType.MAP, BaseType.STRUCT) \
                and op in ("=", "<>", "IS_DISTINCT_FROM", "IS_NOT_DISTINCT_FROM") \
                and (lt == rt or _structurally_comparable(lt, rt)):
            return left, right
        lhs = _operand_text(expr, "left", self.shown)
        rhs = _operand_text(expr, "right", self.shown)
        raise KsqlStatementException(
            f"Cannot compare {lhs} ({lt}) to {rhs} ({rt}) with {_COMPARISON_NAMES.get(op, op)}.")

    # --------------------------------------------------------------------------- logical
    def _boolean_operand(self, expr: e.Expression) -> Compiled:
        c = self.compile(expr)
        if c.type.base is not BaseType.BOOLEAN and not c.type.is_null:
            raise KsqlStatementException(
                f"Logical binary expects two boolean values.  Actual {expr} ({c.type})")
        return c

    def _And(self, expr: e.And) -> Compiled:
        left, right = self._boolean_operand(expr.left), self._boolean_operand(expr.right)
        a, b = self._tmp(), self._tmp()
        return Compiled(
            f"(False if ({a} := {left.src}) is False else (False if ({b} := {right.src}) is False "
            f"else (None if {a} is None or {b} is None else True)))", t.BOOLEAN)

    def _Or(self, expr: e.Or) -> Compiled:
        left, right = self._boolean_operand(expr.left), self._boolean_operand(expr.right)
        a, b = self._tmp(), self._tmp()
        return Compiled(
            f"(True if ({a} := {left.src}) is True else (True if ({b} := {right.src}) is True "
            f"else (None if {a} is None or {b} is None else False)))", t.BOOLEAN)

    def _Not(self, expr: e.Not) -> Compiled:
        inner = self._boolean_operand(expr.operand)
        tmp = self._tmp()
        return Compiled(f"(None if ({tmp} := {inner.src}) is None else not {tmp})", t.BOOLEAN)

    def _IsNull(self, expr: e.IsNull) -> Compiled:
        inner = self.compile(expr.operand)
        return Compiled(f"(({inner.src}) is {'not ' if expr.negated else ''}None)", t.BOOLEAN)

    def _Like(self, expr: e.Like) -> Compiled:
        value, pattern = self.compile(expr.value), self.compile(expr.pattern)
        for c, side in ((value, expr.value), (pattern, expr.pattern)):
            if c.type.base is not BaseType.STRING and not c.type.is_null:
                raise KsqlStatementException(
                    f"Cannot do LIKE on non-string type {c.type}: {side}")
        neg = "not " if expr.negated else ""
        a = self._tmp()
        if isinstance(expr.pattern, e.StringLiteral):
            rx = self.const(like_regex(expr.pattern.value, expr.escape), "rx")
            return Compiled(f"(None if ({a} := {value.src}) is None else {neg}({rx}.fullmatch({a}) is not None))", t.BOOLEAN)
        b = self._tmp()
        esc = repr(expr.escape)
        return Compiled(
            f"(None if ({a} := {value.src}) is None or ({b} := {pattern.src}) is None else "
            f"{neg}(_like_regex({b}, {esc}).fullmatch({a}) is not None))", t.BOOLEAN)

    def _Between(self, expr: e.Between) -> Compiled:
        value, low, high = self.compile(expr.value), self.compile(expr.low), self.compile(expr.high)
        # The bounds are compared with the value, so ROWTIME BETWEEN '2018-...' AND ... parses them.
        value, low = self._time_column_vs_string(e.Comparison(">=", expr.value, expr.low), value, low)
        value, high = self._time_column_vs_string(e.Comparison("<=", expr.value, expr.high), value, high)
        value, low = self._comparable(e.Comparison(">=", expr.value, expr.low), value, low)
        value, high = self._comparable(e.Comparison("<=", expr.value, expr.high), value, high)
        a, b, c = self._tmp(), self._tmp(), self._tmp()
        test = f"{b} <= {a} <= {c}"
        if expr.negated:
            test = f"not ({test})"
        return Compiled(f"(None if ({a} := {value.src}) is None or ({b} := {low.src}) is None or "
                        f"({c} := {high.src}) is None else {test})", t.BOOLEAN)

    def _InList(self, expr: e.InList) -> Compiled:
        value = self.compile(expr.value)
        if value.type.base is BaseType.DECIMAL and any(
                self.compile(i).type.base is BaseType.DOUBLE for i in expr.items):
            value = Compiled(self.coerce(value, t.DOUBLE), t.DOUBLE)
        compiled_items = [self.compile(i) for i in expr.items]
        if isinstance(value.type, StructType):
            unified = self._unify_structs([expr.value, *expr.items], [value, *compiled_items],
                                          "Invalid Predicate: ")
            value, compiled_items = unified[0], unified[1:]
        items = []
        # ksqlDB types the value and the list as one list, in order: numbers widen the common
        # type as they come (DECIMAL(4, 2) and 10 make DECIMAL(12, 2)), and a later member
        # that does not fit is reported against that type.
        common = value.type
        for item, ci in zip(expr.items, compiled_items):
            ci = self._coerce_in_item(value.type, item, ci)
            try:
                self._comparable(e.Comparison("=", expr.value, item), value, ci)
            except KsqlStatementException:
                raise KsqlStatementException(
                    f"Invalid Predicate: operator does not exist: {common} = {ci.type} ({item})\n"
                    "Hint: You might need to add explicit type casts.") from None
            if common.is_numeric and ci.type.is_numeric:
                common = t.common_numeric(common, ci.type)
            items.append(ci)
        a = self._tmp()
        neg = expr.negated
        if all(_is_constant(i) for i in expr.items) and value.type.is_primitive:
            consts = [eval(i.src, self.env) for i in items]  # noqa: S307 - our own generated literal source
            has_null = any(c is None for c in consts)
            try:
                members = self.const(frozenset(c for c in consts if c is not None), "in")
            except TypeError:
                members = self.const(tuple(c for c in consts if c is not None), "in")
            if has_null:
                found = f"(True if {a} in {members} else None)"
                body = f"(None if {found} is None else {'not ' if neg else ''}{found})" if neg else found
            else:
                body = f"({a} {'not in' if neg else 'in'} {members})"
            return Compiled(f"(None if ({a} := {value.src}) is None else {body})", t.BOOLEAN)
        lst = "(" + ", ".join(i.src for i in items) + ",)"
        fn = "_not_in_list" if neg else "_in_list"
        return Compiled(f"{fn}({value.src}, {lst})", t.BOOLEAN)

    def _coerce_in_item(self, target: SqlType, item: e.Expression, c: Compiled) -> Compiled:
        """IN-list string literals are converted to the tested value's type as ksqlDB does,
        failing at statement time when they cannot be."""
        if isinstance(item, e.StringLiteral) and target.base is not BaseType.STRING and target.is_primitive:
            as_type = target
            if target.is_integral:
                as_type = t.DecimalType(38, 18)  # '4.000' is a valid BIGINT member: compare by value
            try:
                value = parse_literal_as(item.value, as_type, prefix="Invalid Predicate: ")
            except KsqlStatementException:
                parse_literal_as(item.value, target, prefix="Invalid Predicate: ")
                raise
            return Compiled(self.const(value, "lit"), as_type)
        if target.base is BaseType.STRING and isinstance(
                item, (e.IntegerLiteral, e.DecimalLiteral, e.DoubleLiteral, e.BooleanLiteral)):
            # A number or boolean literal in a list of strings stands for its text (ksqlDB
            # coerces literals leniently); a column of another type does not.
            return Compiled(self.const(str(item), "lit"), t.STRING)
        if target.base is BaseType.DOUBLE and c.type.is_numeric and c.type.base is not BaseType.DOUBLE:
            return Compiled(self.coerce(c, t.DOUBLE), t.DOUBLE)
        if c.type.base is BaseType.DOUBLE and target.base is BaseType.DECIMAL:
            return c
        if isinstance(item, e.CreateStruct) and isinstance(target, StructType):
            for name, fexpr in item.fields:
                f = target.field(name)
                if f is not None and isinstance(fexpr, e.StringLiteral) and f.type.base is not BaseType.STRING:
                    parse_literal_as(fexpr.value, f.type, prefix="Invalid Predicate: ")
        return c

    # ------------------------------------------------------------------- struct user lists
    def _unify_structs(self, exprs: list[e.Expression], compiled: list[Compiled],
                       prefix: str = "") -> list[Compiled]:
        """ksqlDB's coercion of a list of values (IN list, ARRAY/MAP constructor) holding
        structs: they take one common struct type, whose fields are all the fields met (a
        STRUCT constructor adds its new ones; fields widen as other values do), and each
        struct is converted to it, missing fields NULL. Non-struct members are left as they
        are (the caller reports them)."""
        common: StructType | None = None
        for x, c in zip(exprs, compiled):
            if isinstance(c.type, StructType):
                common = c.type if common is None else self._struct_common(x, c, common, prefix)
        if common is None:
            return compiled
        return [self._to_struct(x, c, common) if isinstance(c.type, StructType) else c
                for x, c in zip(exprs, compiled)]

    def _struct_common(self, expr: e.Expression, c: Compiled, target: StructType,
                       prefix: str) -> StructType:
        """The common type of struct ``target`` and the struct value ``expr``."""
        assert isinstance(c.type, StructType)
        if not isinstance(expr, e.CreateStruct):
            if _struct_widens(c.type, target):
                return target
            if _struct_widens(target, c.type):
                return c.type
            return target  # not comparable: the caller's type check reports it
        given = dict(expr.fields)
        fields = []
        for f in target.fields:
            fx = given.get(f.name)
            fields.append(f if fx is None else t.Field(f.name, self._field_common(fx, f.type, prefix)))
        for name, fx in expr.fields:
            if _exact_field(target, name) is None:
                ft = _exact_field(c.type, name)
                fields.append(t.Field(name, ft.type if ft is not None else t.STRING))
        return StructType(tuple(fields))

    def _field_common(self, fx: e.Expression, target: SqlType, prefix: str) -> SqlType:
        """The common type of a STRUCT constructor's field ``fx`` and a field of ``target``
        type: a string literal stands for the target's primitive type (it must parse)."""
        if isinstance(fx, e.NullLiteral):
            return target
        if isinstance(fx, e.StringLiteral) and target.is_primitive and target.base is not BaseType.STRING:
            parse_literal_as(fx.value, target, prefix=prefix)
            return target
        fc = self.compile(fx)
        if isinstance(fc.type, StructType) and isinstance(target, StructType):
            return self._struct_common(fx, fc, target, prefix)
        ct = common_type([fc.type, target])
        return target if ct is None else ct

    def _to_struct(self, expr: e.Expression, c: Compiled, target: StructType) -> Compiled:
        """``c`` (a struct) as a value of the wider struct type ``target``."""
        if c.type == target:
            return c
        if isinstance(expr, e.CreateStruct):
            given = dict(expr.fields)
            parts = []
            for f in target.fields:
                fx = given.get(f.name)
                if fx is None:
                    src = "None"
                elif isinstance(fx, e.StringLiteral) and f.type.is_primitive \
                        and f.type.base is not BaseType.STRING:
                    src = self.const(parse_literal_as(fx.value, f.type), "lit")
                else:
                    fc = self.compile(fx)
                    if isinstance(f.type, StructType) and isinstance(fc.type, StructType):
                        src = self._to_struct(fx, fc, f.type).src
                    else:
                        src = self.coerce(fc, f.type)
                parts.append(f"{f.name!r}: {src}")
            return Compiled("{" + ", ".join(parts) + "}", target)
        # Any other struct value: pick the target's fields from it at run time.
        plan = []
        for f in target.fields:
            widen = None
            source_field = _exact_field(c.type, f.name) if isinstance(c.type, StructType) else None
            if source_field is not None and source_field.type != f.type and source_field.type.is_numeric:
                widen = float if f.type.base is BaseType.DOUBLE else (
                    Decimal if f.type.base is BaseType.DECIMAL else None)
            plan.append((f.name, widen))
        return Compiled(f"_widen_struct({c.src}, {self.const(tuple(plan), 'fields')})", target)

    # ------------------------------------------------------------------------------ case
    def _Case(self, expr: e.Case) -> Compiled:
        results = [self.compile(r) for _, r in expr.whens]
        default = self.compile(expr.default) if expr.default is not None else None
        result_type = common_type([c.type for c in results] + ([default.type] if default else []))
        if result_type is None:
            raise KsqlStatementException(
                "Invalid Case expression. Type for all 'THEN' clauses should be the same."
                f"\nTHEN expression '{expr.whens[0][1]}' has type: {results[0].type}.")
        if result_type.is_null:
            raise KsqlStatementException("Invalid Case expression. All case branches have NULL type")
        parts = []
        if expr.operand is not None:
            operand = self.compile(expr.operand)
            op_tmp = self._tmp()
            first = True
            for (when, _), res in zip(expr.whens, results):
                w = self.compile(when)
                self._comparable(e.Comparison("=", expr.operand, when), operand, w)
                wt = self._tmp()
                head = f"({op_tmp} := {operand.src})" if first else op_tmp
                first = False
                cond = f"({head} is not None and ({wt} := {w.src}) is not None and {op_tmp} == {wt})"
                parts.append((cond, self.coerce(res, result_type)))
        else:
            for (when, _), res in zip(expr.whens, results):
                w = self.compile(when)
                if w.type.base is not BaseType.BOOLEAN and not w.type.is_null:
                    raise KsqlStatementException(
                        f"WHEN operand type should be boolean.\nType for '{when}' is {w.type}")
                parts.append((f"({w.src}) is True", self.coerce(res, result_type)))
        src = self.coerce(default, result_type) if default is not None else "None"
        for cond, value in reversed(parts):
            src = f"({value} if {cond} else {src})"
        return Compiled(src, result_type)

    # ------------------------------------------------------------------------------ cast
    def _Cast(self, expr: e.Cast) -> Compiled:
        inner = self.compile(expr.operand)
        target = expr.type
        if inner.type == target:
            return Compiled(inner.src, target)
        fn = cast_function(inner.type, target)
        if fn is None:
            prefix = "Invalid Select: " if self.clause == "SELECT" else ""
            raise KsqlStatementException(
                f"{prefix}Cast of {inner.type} to {target} is not supported")
        name = self.guarded(fn, 1, f"CAST AS {target}")
        tmp = self._tmp()
        return Compiled(f"(None if ({tmp} := {inner.src}) is None else {name}({tmp}))", target)

    # ------------------------------------------------------------------------- functions
    def _FunctionCall(self, expr: e.FunctionCall) -> Compiled:
        if self.registry.is_aggregate(expr.name) and not self.registry.scalars.get(expr.name):
            raise KsqlStatementException(
                f"Use of aggregate function {expr.name} requires a GROUP BY clause.")
        if self.registry.is_table_function(expr.name):
            raise KsqlStatementException(
                f"Table functions can only be used in the SELECT projection: {expr}")
        return self.compile_call(expr, "scalar")

    def compile_call(self, expr: e.FunctionCall, kind: str) -> Compiled:
        args: list[Compiled | None] = []
        for a in expr.args:
            args.append(None if isinstance(a, e.Lambda) else self.compile(a))
        lambdas: dict[int, Compiled] = {}

        def type_lambda(i: int, param_types: tuple[SqlType, ...]) -> SqlType:
            lam = expr.args[i]
            assert isinstance(lam, e.Lambda)
            if len(lam.params) != len(param_types):
                raise KsqlStatementException(
                    f"Was expecting {len(param_types)} arguments to lambda function, got {len(lam.params)}")
            names = [f"_l{self._counter[0] + j + 1}_{k}" for j, k in enumerate(range(len(lam.params)))]
            self._counter[0] += len(names)
            child = self.with_lambdas({p: ScopeColumn(n, ty) for p, n, ty in zip(lam.params, names, param_types)})
            body = child.compile(lam.body)
            lambdas[i] = Compiled(f"(lambda {', '.join(names)}: {body.src})", body.type)
            return body.type

        if self.registry.exists(expr.name) and not (self.registry.scalars.get(expr.name) or self.registry.tables.get(expr.name)):
            raise KsqlStatementException(f"Can't find any functions with the name '{expr.name}'")
        resolved = self.registry.resolve(expr.name, [a.type if a else None for a in args],
                                         type_lambda, kind=kind)
        impl = self.guarded(resolved.implementation(), len(args), expr.name)
        srcs = []
        for i, (a, pt) in enumerate(zip(args, resolved.param_types)):
            if a is None:
                srcs.append(lambdas[i].src)
            else:
                srcs.append(self.coerce(a, pt, loose=True))
        return Compiled(f"{impl}({', '.join(srcs)})", resolved.return_type)

    def _Lambda(self, expr: e.Lambda) -> Compiled:
        raise KsqlStatementException(f"Lambda expressions can only be used as function arguments: {expr}")

    # ----------------------------------------------------------------------- constructors
    def _CreateArray(self, expr: e.CreateArray) -> Compiled:
        if not expr.items:
            raise KsqlStatementException(
                "Array constructor cannot be empty. Please supply at least one element "
                "(see https://github.com/confluentinc/ksql/issues/4239).")
        items = [self.compile(i) for i in expr.items]
        item_type = self._common_or_literal(expr.items, items)
        if item_type.is_null:
            return Compiled("[" + ", ".join(i.src for i in items) + "]", ArrayType(t.NULL))
        srcs = [self._coerce_literal(x, c, item_type) for x, c in zip(expr.items, items)]
        return Compiled("[" + ", ".join(srcs) + "]", ArrayType(item_type))

    def _CreateMap(self, expr: e.CreateMap) -> Compiled:
        if not expr.entries:
            raise KsqlStatementException(
                "Map constructor cannot be empty. Please supply at least one key value pair "
                "(see https://github.com/confluentinc/ksql/issues/4239).")
        keys = [self.compile(k) for k, _ in expr.entries]
        values = [self.compile(v) for _, v in expr.entries]
        if all(k.type.is_null for k in keys):
            raise KsqlStatementException("Cannot construct a map with all NULL keys")
        kt = self._common_or_literal([k for k, _ in expr.entries], keys)
        vt = self._common_or_literal([v for _, v in expr.entries], values)
        ks = [self._coerce_literal(x, c, kt) for (x, _), c in zip(expr.entries, keys)]
        vs = [self._coerce_literal(x, c, vt) for (_, x), c in zip(expr.entries, values)]
        return Compiled("{" + ", ".join(f"{k}: {v}" for k, v in zip(ks, vs)) + "}", MapType(kt, vt))

    def _CreateStruct(self, expr: e.CreateStruct) -> Compiled:
        fields, srcs = [], []
        for name, fe in expr.fields:
            c = self.compile(fe)
            fields.append(t.Field(name, c.type if not c.type.is_null else t.STRING))
            srcs.append(f"{name!r}: {c.src}")
        return Compiled("{" + ", ".join(srcs) + "}", StructType(tuple(fields)))

    def _common_or_literal(self, exprs: list[e.Expression], compiled: list[Compiled]) -> SqlType:
        """Element type of a constructor: the common type, where string literals may stand
        for other primitives (ksqlDB converts them, failing at statement time)."""
        structs = [(x, c) for x, c in zip(exprs, compiled) if isinstance(c.type, StructType)]
        if structs and len({c.type for _, c in structs}) > 1 \
                and all(isinstance(c.type, StructType) or c.type.is_null for c in compiled):
            common: StructType = structs[0][1].type  # type: ignore[assignment]
            for x, c in structs[1:]:
                common = self._struct_common(x, c, common, "")
            return common
        non_literal = [c.type for x, c in zip(exprs, compiled) if not isinstance(x, e.StringLiteral)]
        ct = common_type(non_literal) if non_literal else None
        if ct is not None and not ct.is_null and ct.base is not BaseType.STRING:
            for x in exprs:
                if isinstance(x, e.StringLiteral):
                    parse_literal_as(x.value, ct)
            return ct
        all_types = common_type([c.type for c in compiled])
        if all_types is None:
            first = compiled[0].type
            for x, c in zip(exprs, compiled):
                if c.type != first and not c.type.is_null:
                    raise KsqlStatementException(
                        f"invalid input syntax for type {first}: \"{x}\"")
            raise KsqlStatementException("Incompatible types in constructor")
        return all_types

    def _coerce_literal(self, expr: e.Expression, c: Compiled, target: SqlType) -> str:
        if isinstance(target, StructType) and isinstance(c.type, StructType):
            return self._to_struct(expr, c, target).src
        if isinstance(expr, e.StringLiteral) and target.base is not BaseType.STRING and target.is_primitive:
            return self.const(parse_literal_as(expr.value, target), "lit")
        return self.coerce(c, target)

    # ---------------------------------------------------------------------- conversions
    def coerce(self, c: Compiled, target: SqlType, loose: bool = False) -> str:
        """Source converting ``c`` to ``target`` for implicit widening (INT to DOUBLE or
        DECIMAL, DECIMAL to DOUBLE, element-wise for collections)."""
        src_t = c.type
        if src_t == target or src_t.is_null or target.is_null or target.base is BaseType.LAMBDA:
            return c.src
        if target.base is BaseType.DOUBLE and src_t.is_numeric:
            name, binding = self._bound(c.src)
            return f"(None if {binding} is None else float({name}))"
        if target.base is BaseType.DECIMAL and src_t.is_integral:
            name, binding = self._bound(c.src)
            return f"(None if {binding} is None else _Decimal({name}))"
        if isinstance(target, ArrayType) and isinstance(src_t, ArrayType) and target.item != src_t.item \
                and target.item.base is BaseType.DOUBLE and src_t.item.is_numeric:
            tmp = self._tmp()
            return f"(None if ({tmp} := {c.src}) is None else [None if _x is None else float(_x) for _x in {tmp}])"
        return c.src


class _ChainPrefix:
    """Prints as the first ``steps`` operations of an ArithmeticChain: the sub-expression an
    error at that step quotes, as the nested binary tree would. Formatted only if printed."""

    def __init__(self, chain: e.ArithmeticChain, steps: int) -> None:
        self.chain = chain
        self.steps = steps

    def __str__(self) -> str:
        return str(e.ArithmeticChain(self.chain.first, self.chain.rest[:self.steps]))


# ==================================================================================== typing
def decimal_type_of(value: Decimal) -> DecimalType:
    """DECIMAL(p, s) of a literal as ksqlDB types it (``1.50`` is DECIMAL(3, 2))."""
    sign, digits, exponent = value.as_tuple()
    scale = max(0, -int(exponent))
    precision = max(len(digits), scale)
    if len(digits) < scale:
        precision = scale
    return DecimalType(max(precision, 1), scale)


def arithmetic_result_type(op: str, a: SqlType, b: SqlType) -> SqlType:
    """ksqlDB's result type for ``a op b`` over numeric types."""
    if a.base is BaseType.DOUBLE or b.base is BaseType.DOUBLE:
        return t.DOUBLE
    if a.base is BaseType.DECIMAL or b.base is BaseType.DECIMAL:
        da = a if isinstance(a, DecimalType) else t.decimal_for_integral(a)
        db = b if isinstance(b, DecimalType) else t.decimal_for_integral(b)
        p1, s1, p2, s2 = da.precision, da.scale, db.precision, db.scale
        if op in "+-":
            scale = max(s1, s2)
            precision = max(p1 - s1, p2 - s2) + scale + 1
        elif op == "*":
            precision, scale = p1 + p2 + 1, s1 + s2
        elif op == "/":
            scale = max(6, s1 + p2 + 1)
            precision = p1 - s1 + s2 + scale
        else:
            precision = min(p1 - s1, p2 - s2) + max(s1, s2)
            scale = max(s1, s2)
        return DecimalType(min(precision, 38), min(scale, 38))
    if a.base is BaseType.BIGINT or b.base is BaseType.BIGINT:
        return t.BIGINT
    return t.INTEGER


def common_type(types: list[SqlType]) -> SqlType | None:
    """The type all of ``types`` widen to, NULL if all are NULL, None if incompatible."""
    result: SqlType = t.NULL
    for ty in types:
        if ty.is_null:
            continue
        if result.is_null:
            result = ty
        elif result == ty:
            continue
        elif result.is_numeric and ty.is_numeric:
            result = t.common_numeric(result, ty)
        elif isinstance(result, ArrayType) and isinstance(ty, ArrayType):
            inner = common_type([result.item, ty.item])
            if inner is None:
                return None
            result = ArrayType(inner)
        elif isinstance(result, MapType) and isinstance(ty, MapType):
            k, v = common_type([result.key, ty.key]), common_type([result.value, ty.value])
            if k is None or v is None:
                return None
            result = MapType(k, v)
        else:
            return None
    return result


def _exact_field(struct: StructType, name: str) -> t.Field | None:
    """The field named exactly ``name``: struct constructors' field names are case-sensitive."""
    for f in struct.fields:
        if f.name == name:
            return f
    return None


def _struct_widens(src: StructType, dst: StructType) -> bool:
    """Whether every field of ``src`` is a field of ``dst`` whose type it widens to."""
    for f in src.fields:
        g = _exact_field(dst, f.name)
        if g is None:
            return False
        if isinstance(f.type, StructType) and isinstance(g.type, StructType):
            if not _struct_widens(f.type, g.type):
                return False
        elif not t.can_implicitly_cast(f.type, g.type):
            return False
    return True


def _widen_struct(value: dict | None, plan: tuple) -> dict | None:
    """A struct value with exactly the fields of ``plan`` ((name, widening function or None)
    pairs), missing ones NULL."""
    if value is None:
        return None
    out = {}
    for name, widen in plan:
        v = value.get(name)
        out[name] = widen(v) if widen is not None and v is not None else v
    return out


def _structurally_comparable(a: SqlType, b: SqlType) -> bool:
    """Collections whose element types differ only by numeric widening may be compared."""
    if a.is_numeric and b.is_numeric:
        return True
    if isinstance(a, ArrayType) and isinstance(b, ArrayType):
        return _structurally_comparable(a.item, b.item)
    if isinstance(a, MapType) and isinstance(b, MapType):
        return _structurally_comparable(a.key, b.key) and _structurally_comparable(a.value, b.value)
    if isinstance(a, StructType) and isinstance(b, StructType):
        return len(a.fields) == len(b.fields) and all(
            fa.name == fb.name and _structurally_comparable(fa.type, fb.type)
            for fa, fb in zip(a.fields, b.fields))
    return a == b or a.is_null or b.is_null


def _operand_text(expr: e.Expression, side: str,
                  shown: Callable[[e.Expression], e.Expression]) -> str:
    node = getattr(expr, side, None)
    return str(shown(node)) if node is not None else "?"


def _is_constant(expr: e.Expression) -> bool:
    return isinstance(expr, (e.NullLiteral, e.BooleanLiteral, e.IntegerLiteral, e.DecimalLiteral,
                             e.DoubleLiteral, e.StringLiteral)) or (
        isinstance(expr, e.ArithmeticUnary) and _is_constant(expr.operand))


def like_regex(pattern: str, escape: str | None) -> SafePattern:
    """SQL LIKE pattern (``%`` any run, ``_`` one character) compiled for ``fullmatch`` in
    linear time: with Python's re, ``'%a%a%a%a%b'`` took 103 s on 400 characters, the whole
    server blocked (see functions/safe_regex.py)."""
    return like_pattern(pattern, escape)


# ============================================================================ literal parsing
def parse_literal_as(text: str, target: SqlType, prefix: str = "") -> Any:
    """Convert a string literal to ``target`` at statement time, as ksqlDB does for IN lists
    and constructors; a bad literal fails the statement."""
    fn = cast_function(t.STRING, target)
    try:
        if fn is None:
            raise ValueError
        value = fn(text)
        if value is None and target.base is not BaseType.STRING:
            raise ValueError
        return value
    except Exception:
        raise KsqlStatementException(
            f"{prefix}invalid input syntax for type {target.base.value}: \"{text}\".") from None


# ===================================================================================== casts
def cast_function(src: SqlType, dst: SqlType) -> Callable[[Any], Any] | None:
    """A function converting a non-null value of ``src`` to ``dst``, or None if ksqlDB does
    not allow the cast. Failures at run time raise (the column becomes NULL, and the reason
    goes to the processing log)."""
    from streamsql import casts

    return casts.cast_function(src, dst)


# =========================================================================== runtime helpers
def install_runtime_helpers(env: dict[str, Any]) -> None:
    """Put the helper functions generated code calls into ``env``."""
    if "_array_at" in env:
        return
    from streamsql import casts

    env.update(
        _errs=[],
        _Decimal=Decimal,
        _array_at=_array_at,
        _map_at=_map_at,
        _int_div=_int_div,
        _int_mod=_int_mod,
        _double_div=_double_div,
        _double_mod=_double_mod,
        _wrap_int=_wrap_int,
        _wrap_bigint=_wrap_bigint,
        _dec_add=_dec_add,
        _dec_sub=_dec_sub,
        _dec_mul=_dec_mul,
        _dec_div=_dec_div,
        _dec_mod=_dec_mod,
        _like_regex=_like_regex_cached,
        _in_list=_in_list,
        _not_in_list=_not_in_list,
        _fold=_fold,
        _null_operand=_null_operand,
        _widen_struct=_widen_struct,
        _parse_temporal=casts.parse_temporal,
        _date_to_ts=casts.date_to_timestamp,
    )


def _array_at(arr: list | None, index: int | None) -> Any:
    if arr is None or index is None:
        return None
    n = len(arr)
    if index > 0:
        return arr[index - 1] if index <= n else None
    if index < 0:
        return arr[n + index] if -index <= n else None
    return None


def _map_at(m: dict | None, key: Any) -> Any:
    if m is None or key is None:
        return None
    return m.get(key)


def _int_div(a: int, b: int) -> int:
    if b == 0:
        raise ZeroDivisionError("/ by zero")
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def _int_mod(a: int, b: int) -> int:
    if b == 0:
        raise ZeroDivisionError("/ by zero")
    return int(math.fmod(a, b)) if abs(a) < 2**52 and abs(b) < 2**52 else a - b * _int_div(a, b)


def _double_div(a: float, b: float) -> float:
    a, b = float(a), float(b)
    if b == 0.0:
        if a == 0.0 or math.isnan(a):
            return math.nan
        return math.inf if (a > 0) == (math.copysign(1.0, b) > 0) else -math.inf
    return a / b


def _double_mod(a: float, b: float) -> float:
    a, b = float(a), float(b)
    if b == 0.0:
        return math.nan
    return math.fmod(a, b)


def _wrap_int(v: int) -> int:
    if -2147483648 <= v <= 2147483647:
        return v
    return ((v + 2147483648) % 4294967296) - 2147483648


def _wrap_bigint(v: int) -> int:
    if -9223372036854775808 <= v <= 9223372036854775807:
        return v
    return ((v + 9223372036854775808) % 18446744073709551616) - 9223372036854775808


_SCALES = [Decimal(1).scaleb(-s) for s in range(0, 40)]


def _quantize(v: Decimal, scale: int) -> Decimal:
    return v.quantize(_SCALES[scale], rounding=decimal.ROUND_HALF_UP, context=DECIMAL_CONTEXT)


def _dec_add(a: Any, b: Any, scale: int) -> Decimal:
    return _quantize(DECIMAL_CONTEXT.add(Decimal(a), Decimal(b)), scale)


def _dec_sub(a: Any, b: Any, scale: int) -> Decimal:
    return _quantize(DECIMAL_CONTEXT.subtract(Decimal(a), Decimal(b)), scale)


def _dec_mul(a: Any, b: Any, scale: int) -> Decimal:
    return _quantize(DECIMAL_CONTEXT.multiply(Decimal(a), Decimal(b)), scale)


def _dec_div(a: Any, b: Any, scale: int) -> Decimal:
    if b == 0:
        raise ZeroDivisionError("Division by zero")
    return _quantize(DECIMAL_CONTEXT.divide(Decimal(a), Decimal(b)), scale)


def _dec_mod(a: Any, b: Any, scale: int) -> Decimal:
    if b == 0:
        raise ZeroDivisionError("Division by zero")
    return _quantize(DECIMAL_CONTEXT.remainder(Decimal(a), Decimal(b)), scale)


@functools.lru_cache(maxsize=1024)
def _like_regex_cached(pattern: str, escape: str | None) -> SafePattern:
    return like_regex(pattern, escape)


def _null_operand() -> Any:
    raise TypeError("arithmetic on a NULL value")


def _fold(steps: tuple, values: tuple) -> Any:
    """An ArithmeticChain's value: ``steps[i](result so far, values[i + 1])`` from the left."""
    result = values[0]
    for step, value in zip(steps, values[1:]):
        result = step(result, value)
    return result


def _in_list(value: Any, items: tuple) -> bool | None:
    if value is None:
        return None
    saw_null = False
    for item in items:
        if item is None:
            saw_null = True
        elif item == value:
            return True
    return None if saw_null else False


def _not_in_list(value: Any, items: tuple) -> bool | None:
    r = _in_list(value, items)
    return None if r is None else not r

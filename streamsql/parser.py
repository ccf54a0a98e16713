"""The SQL front end: text to statement AST (``streamsql.ast``) and expression trees.

The grammar (``streamsql/grammar/streamsql.lark``) is an LALR(1) grammar for lark with the
contextual lexer; the parser is built once per process. A parse builds lark's tree and turns it
into the frozen AST with :class:`_AstBuilder`, which also does the checks ksqlDB's AstBuilder
does while building (numeric literal ranges, KEY vs PRIMARY KEY, type parameters).

Errors are :class:`streamsql.errors.ParseError` with ksqlDB-like messages, always starting
``line L:C: Syntax Error`` for syntax errors (1-based line and column, relative to the whole
script), e.g. ``line 1:33: Syntax Error\\nExpecting {'STRING', INTEGER_VALUE}``.

Limits, so that no text makes a later pass fail with something other than a ParseError or
take unbounded time: text over ``StatementLimits`` (1 MiB, 25,000 tokens by default; the
engine's and server's properties change them) is refused, past the length before lark reads
it; a lone surrogate is refused; expressions and types nest at most ``MAX_NESTING_DEPTH`` levels (every
later pass walks trees recursively, and Python's recursion is bounded); chains of one
operator (``a + b + ... + z``, ``a OR b OR ...``) are not nesting and may be as long as the
text allows: long ones are built flat (``ArithmeticChain``) or balanced (AND, OR).
"""
from __future__ import annotations

import contextvars
import dataclasses
import functools
import importlib.resources
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable

from lark import Lark, Token, Transformer, Tree, v_args
from lark.lark import PostLex
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError
from lark.lexer import PatternStr

from streamsql import ast
from streamsql import expressions as ex
from streamsql import types as t
from streamsql.errors import KsqlException, ParseError, StreamSqlError

__all__ = ["parse", "parse_statement", "parse_expression", "parse_type", "duration_millis", "check_text",
           "StatementLimits", "DEFAULT_LIMITS", "NO_LIMITS"]

_START_RULES = ["script", "expression_only", "type_only"]

# Milliseconds per window / WITHIN unit (ksqlDB's windowUnit: no weeks, months or years).
_UNIT_MILLIS = {
    "MILLISECOND": 1,
    "SECOND": 1000,
    "MINUTE": 60_000,
    "HOUR": 3_600_000,
    "DAY": 86_400_000,
}

# Expected-token sets at most this big are listed in messages ("Expecting {...}"); bigger ones
# say "Syntax error at or near 'X'" instead, as a list of 40 keywords helps nobody.
_MAX_LISTED_EXPECTED = 8

# Expected-token sets at which ANTLR is still choosing between statement alternatives that
# share their first words (ASSERT [NOT EXISTS] TOPIC|SCHEMA): a token that fits none is
# ksqlDB's "no viable alternative", "Syntax error at or near 'X'", not "Expecting {...}".
_STATEMENT_CHOICES = frozenset({frozenset({"'NOT'", "'SCHEMA'", "'TOPIC'"}),
                                frozenset({"'SCHEMA'", "'TOPIC'"})})

# Statement text longer than this many characters is refused before parsing (the engine's
# and the server's property MAX_LENGTH_PROPERTY changes it): parsing costs time and memory
# in proportion to the text, and no sensible statement comes near 1 MiB.
DEFAULT_MAX_STATEMENT_LENGTH = 1 << 20
MAX_LENGTH_PROPERTY = "streamsql.statement.max.length"
# Nor more tokens than this: parsing costs 10-20 us a token (lark's LALR parser, then the
# AST), and typing and code generation (and EXPLAIN, again) more, so a megabyte of `1+1+...`
# would take a minute; 25,000 tokens (a 6,000-term OR, 10,000 INSERT values) take a second
# or two.
DEFAULT_MAX_STATEMENT_TOKENS = 25_000
MAX_TOKENS_PROPERTY = "streamsql.statement.max.tokens"

# How deep expressions and types may nest (a function call's argument, a CASE branch, a CAST
# operand, a STRUCT<...> field type each go one level down). Every pass after the parser
# (typing, code generation, formatting, equality and hashing of the frozen nodes) recurses
# through the tree, so depth costs Python stack; 64 levels is far more than a query needs
# and well within Python's recursion limit for all of them.
MAX_NESTING_DEPTH = 64

# Rules of lark's tree that build an expression or a type nested in its parent's: each adds a
# level of nesting. Wrappers (function_arg, when_clause, struct_field, ...) add none.
_NESTING_RULES = frozenset({
    "or_", "and_", "not_", "comparison", "between", "not_between", "in_list", "not_in_list",
    "like", "not_like", "is_null", "is_not_null", "is_distinct_from", "is_not_distinct_from",
    "arithmetic_binary", "arithmetic_unary", "subscript", "dereference", "function_call",
    "simple_case", "searched_case", "cast", "create_array", "create_map", "create_struct",
    "tuple", "lambda_arg", "array_type", "map_type", "struct_type", "explain_statement",
})

# Left-deep chains of these rules (``a OR b OR c``, ``a + b - c * d``) are folded into one
# node of lark's tree before the AST is built: lark's Transformer recurses once per level.
_CHAIN_RULES = {"arithmetic_binary": "arithmetic_chain", "or_": "or_chain", "and_": "and_chain"}

# Chains of up to this many operators become the usual nested binary nodes (so that common
# statements have the AST, text and messages they always had); longer ones an ArithmeticChain
# (one level) or a balanced tree of AND / OR (log2 levels: AND and OR are associative).
_FLAT_CHAIN_OPERATORS = 8

# An integer token with more digits than this (leading zeros aside) is out of any range
# ksqlDB accepts; converting it is not even possible past 4300 digits (Python's limit).
_MAX_INTEGER_DIGITS = 19

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class StatementLimits:
    """How long a statement's text may be, in characters and in tokens (None: no limit)."""

    length: int | None = DEFAULT_MAX_STATEMENT_LENGTH
    tokens: int | None = DEFAULT_MAX_STATEMENT_TOKENS

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "StatementLimits":
        """The limits a configuration sets (MAX_LENGTH_PROPERTY, MAX_TOKENS_PROPERTY; 0 or
        less: no limit), else the defaults."""
        return cls(_limit(config, MAX_LENGTH_PROPERTY, DEFAULT_MAX_STATEMENT_LENGTH),
                   _limit(config, MAX_TOKENS_PROPERTY, DEFAULT_MAX_STATEMENT_TOKENS))


DEFAULT_LIMITS = StatementLimits()
NO_LIMITS = StatementLimits(None, None)

# The token limit of the parse running in this context, read by the post-lexer.
_TOKEN_LIMIT: contextvars.ContextVar[int | None] = contextvars.ContextVar("token_limit", default=None)


def _limit(config: dict[str, Any], name: str, default: int) -> int | None:
    value = config.get(name)
    if value is None:
        return default
    try:
        limit = int(value)
    except (TypeError, ValueError):
        raise KsqlException(f"Invalid value {value} for configuration {name}: Not a number of type INT") from None
    return limit if limit > 0 else None


class _WholeWords(PostLex):
    """Makes the contextual lexer consider IDENTIFIER in every parser state.

    Without it, a state that accepts the keyword STREAM but no identifier would lex
    ``STREAMS`` as STREAM followed by ``S``; with it, the whole word is read as an identifier
    (or as the keyword, when it is exactly one the state accepts) and rejected properly.
    """

    always_accept = ("IDENTIFIER",)

    def process(self, stream: Any) -> Any:
        limit = _TOKEN_LIMIT.get()
        return stream if limit is None else _counted(stream, limit)


def _counted(stream: Any, limit: int) -> Any:
    """The tokens of ``stream``, failing at the first one past ``limit`` (counted as lark
    reads them: a statement that is too long costs no more than the limit to refuse)."""
    for count, token in enumerate(stream, 1):
        if count > limit:
            raise ParseError(
                f"line {token.line}:{token.column}: Statement is too long: more than {limit} "
                f"tokens (the '{MAX_TOKENS_PROPERTY}' property)", token.line, token.column, str(token))
        yield token


@functools.lru_cache(maxsize=1)
def _lark() -> Lark:
    """The LALR parser, built once per process from the packaged grammar."""
    source = importlib.resources.files("streamsql.grammar").joinpath("streamsql.lark").read_text("utf-8")
    return Lark(
        source,
        parser="lalr",
        lexer="contextual",
        postlex=_WholeWords(),
        start=_START_RULES,
        propagate_positions=False,  # statement texts come from SEMI positions (see script)
        maybe_placeholders=True,
    )


# ------------------------------------------------------------------------------------ API
def parse(text: str, limits: StatementLimits = DEFAULT_LIMITS) -> list[ast.Statement]:
    """Parse a script of ``;``-separated statements (the last ``;`` is optional).

    Each statement's ``text`` is its own source, stripped, without the ``;``. Text over
    ``limits`` is refused, past the length unread (``NO_LIMITS`` for text already accepted
    once, such as the command log's).
    """
    tree = _run(text, "script", limits)
    return _build(text, tree)


def parse_statement(text: str, limits: StatementLimits = DEFAULT_LIMITS) -> ast.Statement:
    """Parse exactly one statement (a trailing ``;`` is allowed)."""
    statements = parse(text, limits)
    if len(statements) != 1:
        raise ParseError(f"Expected exactly one statement, got {len(statements)}", 1, 1)
    return statements[0]


def parse_expression(text: str) -> ex.Expression:
    """Parse a single expression, e.g. ``A + 1`` or ``X->Y[2]``."""
    return _build(text, _run(text, "expression_only"))


def parse_type(text: str) -> t.SqlType:
    """Parse a SQL type, e.g. ``ARRAY<STRUCT<A INT>>``; custom names give a NamedType."""
    return _build(text, _run(text, "type_only"))


def duration_millis(amount: int, unit: str) -> int:
    """``amount`` of a window unit (MILLISECOND(S) .. DAY(S), any case) in milliseconds."""
    unit = unit.upper()
    base = unit[:-1] if unit.endswith("S") else unit
    return amount * _UNIT_MILLIS[base]


# ------------------------------------------------------------------------------ internals
def _run(text: str, start: str, limits: StatementLimits = DEFAULT_LIMITS) -> Tree:
    check_text(text, limits.length)
    parser = _lark()
    reset = _TOKEN_LIMIT.set(limits.tokens)
    try:
        tree = parser.parse(text, start=start)
    except UnexpectedInput as err:
        raise _with_statement(_syntax_error(parser, text, err), text) from None
    finally:
        _TOKEN_LIMIT.reset(reset)
    _fold_and_measure(tree, text)
    return tree


def check_text(text: str, max_length: int | None = DEFAULT_MAX_STATEMENT_LENGTH) -> None:
    """Refuse, before lark reads it, text that is too long or is not Unicode (a lone
    surrogate, which a Python str can hold, cannot be encoded for the command log, a topic
    or a JSON answer)."""
    if max_length is not None and len(text) > max_length:
        line, column = _offset_position(text, max_length)
        raise ParseError(
            f"line {line}:{column}: Statement is too long: {len(text)} characters, more than the "
            f"limit of {max_length} (the '{MAX_LENGTH_PROPERTY}' property)", line, column)
    surrogate = _LONE_SURROGATE.search(text)
    if surrogate is not None:
        line, column = _offset_position(text, surrogate.start())
        # The message names the character by its code: it must itself be encodable.
        raise ParseError(
            f"line {line}:{column}: Invalid character U+{ord(surrogate.group()):04X} "
            "(a lone surrogate): statement text must be valid Unicode", line, column)


def _offset_position(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column of ``text[offset]``."""
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def _fold_and_measure(tree: Tree, text: str) -> None:
    """One pass over lark's tree, without recursion, before the AST is built from it.

    Folds each left-deep chain of one operator into a single node (``arithmetic_chain``:
    first, op, operand, op, operand...; ``or_chain`` / ``and_chain``: the operands), and
    refuses expressions or types nested deeper than ``MAX_NESTING_DEPTH`` with a ParseError
    at the first token of the level too many. The depth counted is that of the AST to come:
    a short chain becomes nested binary nodes, one level per operator.
    """
    stack: list[tuple[Tree, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        chain = _CHAIN_RULES.get(node.data)  # type: ignore[arg-type]
        if chain is not None:
            operators = _fold_chain(node, chain)
            depth += operators if operators <= _FLAT_CHAIN_OPERATORS else (
                1 if chain == "arithmetic_chain" else operators.bit_length())
        elif node.data in _NESTING_RULES:
            depth += 1
        if depth > MAX_NESTING_DEPTH:
            token = _first_token(node)
            line, column = (token.line, token.column) if token is not None and token.line else (1, 1)
            raise _with_statement(ParseError(
                f"line {line}:{column}: Syntax Error\nExpression too deeply nested: more than "
                f"{MAX_NESTING_DEPTH} levels", line, column, str(token) if token is not None else None), text)
        stack.extend((child, depth) for child in node.children if isinstance(child, Tree))


def _fold_chain(node: Tree, chain: str) -> int:
    """Turn the left-deep chain of ``node``'s rule below ``node`` into one ``chain`` node, in
    place; the number of operators in it."""
    rule = node.data
    tails: list[list[Any]] = []
    first: Any = node
    while isinstance(first, Tree) and first.data == rule:
        tails.append(first.children[1:])  # [op, operand] or [operand]
        first = first.children[0]
    tails.reverse()
    node.data = chain  # type: ignore[assignment]
    node.children = [first, *(item for tail in tails for item in tail)]
    return len(tails)


def _first_token(tree: Tree) -> Token | None:
    """The first token under ``tree`` (for a position), found without recursion."""
    node: Any = tree
    while isinstance(node, Tree):
        node = next((c for c in node.children if c is not None), None)
    return node if isinstance(node, Token) else None


def _build(text: str, tree: Tree) -> Any:
    builder = _AstBuilder(text)
    try:
        result = builder.transform(tree)
    except VisitError as err:
        if isinstance(err.orig_exc, ParseError):
            raise _with_statement(err.orig_exc, text) from None
        if isinstance(err.orig_exc, StreamSqlError):
            raise err.orig_exc from None
        raise
    builder.check_pending()
    return result


def _with_statement(err: ParseError, text: str) -> ParseError:
    """A syntax error quoting the statement it is in, as ksqlDB does:
    ``...\nStatement: CREATE STREAM ... ;`` (with its semicolon, when it has one)."""
    if "Syntax Error" not in str(err) or err.line is None or err.column is None:
        return err
    lines = text.split("\n")
    offset = sum(len(line) + 1 for line in lines[: err.line - 1]) + err.column - 1
    start, end = 0, len(text)
    for match in _TEXT_PIECES.finditer(text):
        if match.group() != ";":
            continue
        if match.start() < offset:
            start = match.end()
        else:
            end = match.end()
            break
    statement = _significant_text(text, start, end)
    if not statement:
        return err
    return ParseError(f"{err}\nStatement: {statement}", err.line, err.column, err.token, err.expected)


def _display_terminal(parser: Lark, name: str) -> str:
    """How ksqlDB (ANTLR) shows an expected token: keywords and punctuation quoted, token
    classes by name."""
    if name == "$END":
        return "<EOF>"
    try:
        terminal = parser.get_terminal(name)
    except KeyError:
        return name
    if isinstance(terminal.pattern, PatternStr):
        return f"'{terminal.pattern.value.upper()}'"
    return name


def _token_text(token: Token) -> str:
    return "<EOF>" if token.type == "$END" else str(token)


def _syntax_error(parser: Lark, text: str, err: UnexpectedInput) -> ParseError:
    if isinstance(err, UnexpectedToken):
        token = err.token
        line, column = _token_position(text, token)
        where = f"line {line}:{column}: Syntax Error"
        expected = tuple(sorted({_display_terminal(parser, n) for n in err.expected}))
        found = _token_text(token)
        if "'SELECT'" in expected and "'CREATE'" in expected and "IDENTIFIER" not in expected:
            # The first word of a statement: no statement starts like this.
            return ParseError(f"{where}\nUnknown statement '{found}'", line, column, found, expected)
        if len(expected) <= _MAX_LISTED_EXPECTED and frozenset(expected) not in _STATEMENT_CHOICES:
            reason = "Expecting {" + ", ".join(expected) + "}"
        else:
            reason = f"Syntax error at or near '{found}' at line {line}:{column}"
        return ParseError(f"{where}\n{reason}", line, column, found, expected)
    if isinstance(err, UnexpectedCharacters):
        line, column = err.line, err.column
        char = text[err.pos_in_stream] if 0 <= err.pos_in_stream < len(text) else ""
        return ParseError(
            f"line {line}:{column}: Syntax Error\ntoken recognition error at: '{char}'",
            line, column, char,
        )
    if isinstance(err, UnexpectedEOF):
        line, column = _end_position(text)
        expected = tuple(sorted({_display_terminal(parser, n) for n in err.expected}))
        return ParseError(
            f"line {line}:{column}: Syntax Error\nSyntax error at or near '<EOF>' at line {line}:{column}",
            line, column, "<EOF>", expected,
        )
    line = getattr(err, "line", 1) or 1
    column = getattr(err, "column", 1) or 1
    return ParseError(f"line {line}:{column}: Syntax Error", line, column)


def _token_position(text: str, token: Token) -> tuple[int, int]:
    if token.type == "$END" or token.line is None:
        return _end_position(text)
    return token.line, token.column


def _end_position(text: str) -> tuple[int, int]:
    line = text.count("\n") + 1
    column = len(text) - (text.rfind("\n") + 1) + 1
    return line, column


def _syntax_error_at(token: Token, found: str | None = None, reason: str | None = None) -> ParseError:
    """A syntax error the grammar cannot express (checked while building the AST)."""
    found = str(token) if found is None else found
    line, column = token.line or 1, token.column or 1
    reason = reason or f"Syntax error at or near '{found}' at line {line}:{column}"
    return ParseError(f"line {line}:{column}: Syntax Error\n{reason}", line, column, found)


def _name(identifier: Token) -> str:
    """A plain ``str`` for an identifier token (tokens are ``str`` subclasses with positions)."""
    return str(identifier)


@dataclasses.dataclass(frozen=True)
class _Tuple(ex.Expression):
    """``(a, b, ...)``: only valid as a whole GROUP BY / PARTITION BY list or as lambda
    parameters; never leaves the parser."""

    items: tuple[ex.Expression, ...]
    comma: Any = dataclasses.field(compare=False, repr=False)


def _reject_tuples(exprs: Any) -> None:
    """Raise the ANTLR-style error for a parenthesised list where one is not allowed."""
    items = exprs if isinstance(exprs, (list, tuple)) else (exprs,)
    for expr in items:
        if expr is None:
            continue
        for node in expr.walk():
            if isinstance(node, _Tuple):
                raise _syntax_error_at(node.comma, ",", "missing ')' at ','")


@v_args(inline=True)
class _AstBuilder(Transformer):
    """Turns lark's parse tree into ``streamsql.ast`` / ``streamsql.expressions`` nodes.

    One instance per parse: it holds the source text (for statement ``text``) and the
    literals whose validity depends on a unary minus seen later (``9223372036854775808`` is
    valid only negated).
    """

    def __init__(self, text: str) -> None:
        super().__init__()
        self._text = text
        # id(literal) -> (literal, error factory): out-of-range unless folded into a minus.
        self._pending: dict[int, tuple[ex.Literal, Callable[[str], ParseError]]] = {}

    def check_pending(self) -> None:
        for _literal, error in self._pending.values():
            raise error("")

    # ---------------------------------------------------------------------- entry points
    @v_args(inline=False)
    def script(self, children: list[Any]) -> list[ast.Statement]:
        # children alternate between statements and the SEMI tokens that end them; the
        # source between two SEMIs, less comments and blanks, is a statement's text
        statements: list[ast.Statement] = []
        start = 0
        pending: ast.Statement | None = None
        for child in children:
            if isinstance(child, Token):
                if pending is not None:
                    statements.append(self._with_text(pending, start, child.start_pos))
                    pending = None
                start = child.end_pos
            else:
                pending = child
        if pending is not None:
            statements.append(self._with_text(pending, start, len(self._text)))
        return statements

    def _with_text(self, statement: ast.Statement, start: int, end: int) -> ast.Statement:
        text = _significant_text(self._text, start, end)
        if isinstance(statement, ast.Explain) and statement.statement is not None:
            # EXPLAIN <statement>: the inner statement's text follows the keyword
            inner = _significant_text(text, len("EXPLAIN"), len(text))
            statement = dataclasses.replace(statement, statement=dataclasses.replace(statement.statement, text=inner))
        if isinstance(statement, ast.CreateConnector):
            # Its text is echoed, logged and kept in the command log: secrets masked
            # (ksqlDB's QueryMask); the config itself is the parse's.
            from streamsql.masking import mask_statement

            text = mask_statement(text)
        return dataclasses.replace(statement, text=text)

    def stmt(self, statement: ast.Statement) -> ast.Statement:
        return statement

    def expression_only(self, expr: ex.Expression) -> ex.Expression:
        _reject_tuples(expr)
        return expr

    def type_only(self, sql_type: t.SqlType) -> t.SqlType:
        return sql_type

    # ------------------------------------------------------------------------ identifiers
    def unquoted_identifier(self, token: Token) -> Token:
        return token.update(value=token.value.upper())

    def quoted_identifier(self, token: Token) -> Token:
        return token.update(value=token.value[1:-1].replace('""', '"'))

    def backquoted_identifier(self, token: Token) -> Token:
        return token.update(value=token.value[1:-1].replace("``", "`"))

    def source_name(self, identifier: Token) -> Token:
        return identifier

    # --------------------------------------------------------------------------- literals
    def null(self) -> ex.Expression:
        return ex.NullLiteral()

    def true(self) -> ex.Expression:
        return ex.BooleanLiteral(True)

    def false(self) -> ex.Expression:
        return ex.BooleanLiteral(False)

    def string(self, token: Token) -> ex.Expression:
        return ex.StringLiteral(_unquote_string(token))

    def integer(self, token: Token) -> ex.Expression:
        def error(sign: str) -> ParseError:
            return _invalid_number(token, sign)

        if _too_many_digits(token):
            raise error("")
        value = _digits_value(token)
        literal = ex.IntegerLiteral(value)
        if value > t.BIGINT_MAX:
            # valid only as the operand of a minus (-9223372036854775808)
            self._pending[id(literal)] = (literal, error)
        return literal

    def decimal(self, token: Token) -> ex.Expression:
        return ex.DecimalLiteral(Decimal(str(token)))

    def double(self, token: Token) -> ex.Expression:
        value = float(token)
        literal = ex.DoubleLiteral(value)
        if value == float("inf"):
            def error(sign: str) -> ParseError:
                # ksqlDB reports these one column to the right of the literal.
                return ParseError(
                    # ksqlDB raises this while preparing the statement, hence its prefix.
                    f"Failed to prepare statement: line {token.line}:{token.column + 1}: "
                    f"Number overflows DOUBLE: {sign}{token}",
                    token.line, token.column, str(token),
                )
            self._pending[id(literal)] = (literal, error)
        return literal

    def negative_number(self, _minus: Token, literal: ex.Literal) -> ex.Literal:
        return self._negate(literal)

    def _negate(self, literal: ex.Literal) -> ex.Literal:
        pending = self._pending.pop(id(literal), None)
        if isinstance(literal, ex.IntegerLiteral):
            if -literal.value < t.BIGINT_MIN:
                assert pending is not None
                raise pending[1]("-")
            return ex.IntegerLiteral(-literal.value)
        if pending is not None:
            raise pending[1]("-")
        if isinstance(literal, ex.DecimalLiteral):
            return ex.DecimalLiteral(-literal.value)
        if isinstance(literal, ex.DoubleLiteral):
            return ex.DoubleLiteral(-literal.value)
        raise AssertionError(literal)

    # ------------------------------------------------------------------------ expressions
    def or_chain(self, *operands: ex.Expression) -> ex.Expression:
        return _logical_chain(ex.Or, operands)

    def and_chain(self, *operands: ex.Expression) -> ex.Expression:
        return _logical_chain(ex.And, operands)

    def not_(self, operand: ex.Expression) -> ex.Expression:
        return ex.Not(operand)

    def comp_op(self, token: Token) -> str:
        op = str(token)
        return "<>" if op == "!=" else op

    def comparison(self, left: ex.Expression, op: str, right: ex.Expression) -> ex.Expression:
        return ex.Comparison(op, left, right)

    def between(self, value: ex.Expression, low: ex.Expression, high: ex.Expression) -> ex.Expression:
        return ex.Between(value, low, high)

    def not_between(self, value: ex.Expression, low: ex.Expression, high: ex.Expression) -> ex.Expression:
        return ex.Between(value, low, high, negated=True)

    def in_list(self, value: ex.Expression, *items: ex.Expression) -> ex.Expression:
        return ex.InList(value, items)

    def not_in_list(self, value: ex.Expression, *items: ex.Expression) -> ex.Expression:
        return ex.InList(value, items, negated=True)

    def like(self, value: ex.Expression, pattern: ex.Expression, escape: Token | None) -> ex.Expression:
        return ex.Like(value, pattern, _escape_char(escape))

    def not_like(self, value: ex.Expression, pattern: ex.Expression, escape: Token | None) -> ex.Expression:
        return ex.Like(value, pattern, _escape_char(escape), negated=True)

    def is_null(self, value: ex.Expression) -> ex.Expression:
        return ex.IsNull(value)

    def is_not_null(self, value: ex.Expression) -> ex.Expression:
        return ex.IsNull(value, negated=True)

    def is_distinct_from(self, left: ex.Expression, right: ex.Expression) -> ex.Expression:
        return ex.Comparison("IS_DISTINCT_FROM", left, right)

    def is_not_distinct_from(self, left: ex.Expression, right: ex.Expression) -> ex.Expression:
        return ex.Comparison("IS_NOT_DISTINCT_FROM", left, right)

    def arithmetic_chain(self, first: ex.Expression, *rest: Any) -> ex.Expression:
        pairs = tuple((str(rest[i]), rest[i + 1]) for i in range(0, len(rest), 2))
        if len(pairs) > _FLAT_CHAIN_OPERATORS:
            return ex.ArithmeticChain(first, pairs)
        result = first
        for op, operand in pairs:
            result = ex.ArithmeticBinary(op, result, operand)
        return result

    def arithmetic_unary(self, op: Token, operand: ex.Expression) -> ex.Expression:
        if str(op) == "-" and isinstance(operand, (ex.IntegerLiteral, ex.DecimalLiteral, ex.DoubleLiteral)):
            return self._negate(operand)
        return ex.ArithmeticUnary(str(op), operand)

    def subscript(self, base: ex.Expression, index: ex.Expression) -> ex.Expression:
        return ex.Subscript(base, index)

    def dereference(self, base: ex.Expression, field: Token) -> ex.Expression:
        return ex.Dereference(base, _name(field))

    def keyword_column(self, token: Token) -> Token:
        return token.update(value=token.value.upper())

    def column_ref(self, name: Token) -> ex.Expression:
        return ex.ColumnRef(_name(name), location=(name.line, name.column))

    def qualified_column_ref(self, source: Token, name: Token) -> ex.Expression:
        return ex.ColumnRef(_name(name), _name(source), location=(source.line, source.column))

    def count_star(self, name: Token, _star: Token) -> ex.Expression:
        return ex.FunctionCall(_name(name).upper(), (), star=True)

    def function_call(self, name: Token, *args: ex.Expression | None) -> ex.Expression:
        present = tuple(a for a in args if a is not None)
        return ex.FunctionCall(_name(name).upper(), present)

    def function_arg(self, expr: ex.Expression) -> ex.Expression:
        return expr

    def lambda_arg(self, params: ex.Expression, arrow: Token, body: ex.Expression) -> ex.Expression:
        names = _lambda_params(params, arrow)
        return ex.Lambda(names, body)

    def interval_arg(self, unit: str) -> ex.Expression:
        return ex.IntervalUnit(unit)

    def time_unit(self, unit: Token | str) -> str:
        return str(unit).upper()

    def plural_time_unit(self, token: Token) -> str:
        return str(token).upper()

    def simple_case(self, operand: ex.Expression, *rest: Any) -> ex.Expression:
        *whens, default = rest
        return ex.Case(operand, tuple(whens), default)

    def searched_case(self, *rest: Any) -> ex.Expression:
        *whens, default = rest
        return ex.Case(None, tuple(whens), default)

    def when_clause(self, condition: ex.Expression, result: ex.Expression) -> tuple[ex.Expression, ex.Expression]:
        return (condition, result)

    def else_clause(self, expr: ex.Expression) -> ex.Expression:
        return expr

    def cast(self, operand: ex.Expression, sql_type: t.SqlType) -> ex.Expression:
        return ex.Cast(operand, sql_type)

    def create_array(self, *items: ex.Expression | None) -> ex.Expression:
        return ex.CreateArray(tuple(i for i in items if i is not None))

    def create_map(self, *entries: tuple[ex.Expression, ex.Expression] | None) -> ex.Expression:
        return ex.CreateMap(tuple(e for e in entries if e is not None))

    def map_entry(self, key: ex.Expression, value: ex.Expression) -> tuple[ex.Expression, ex.Expression]:
        return (key, value)

    def create_struct(self, *fields: tuple[str, ex.Expression] | None) -> ex.Expression:
        return ex.CreateStruct(tuple(f for f in fields if f is not None))

    def struct_entry(self, name: Token, value: ex.Expression) -> tuple[str, ex.Expression]:
        return (_name(name), value)

    def tuple(self, first: ex.Expression, comma: Token, *rest: ex.Expression) -> ex.Expression:
        return _Tuple((first, *rest), comma)

    # ------------------------------------------------------------------------------ types
    def array_type(self, item: t.SqlType) -> t.SqlType:
        return t.ArrayType(item)

    def map_type(self, key: t.SqlType, value: t.SqlType) -> t.SqlType:
        return t.MapType(key, value)

    def struct_type(self, *fields: t.Field | None) -> t.SqlType:
        return t.StructType(tuple(f for f in fields if f is not None))

    def struct_field(self, name: Token, sql_type: t.SqlType) -> t.Field:
        return t.Field(_name(name), sql_type)

    def type_param(self, token: Token) -> Token:
        return token

    def named_type(self, name: Token, *params: Token | None) -> t.SqlType:
        given = [p for p in params if p is not None]
        upper = _name(name).upper()
        if upper == "DECIMAL" and name.type == "IDENTIFIER":
            if len(given) != 2 or any(p.type != "INTEGER_VALUE" for p in given):
                raise _syntax_error_at(given[0] if given else name, reason="DECIMAL requires a precision and a scale: DECIMAL(p, s)")
            precision, scale = _int_value(given[0]), _int_value(given[1])
            problem = t.decimal_parameters_problem(precision, scale)
            if problem is not None:
                raise ParseError(f"line {given[0].line}:{given[0].column}: {problem}",
                                 given[0].line, given[0].column, str(given[0]))
            return t.DecimalType(precision, scale)
        if upper in ("STRING", "VARCHAR") and name.type == "IDENTIFIER" and [str(p).upper() for p in given] == ["STRING"]:
            return t.STRING  # VARCHAR(STRING): ksqlDB's spelled-out form of STRING
        if given:
            # ksqlDB's grammar accepts type parameters only to reject them here.
            raise _syntax_error_at(given[0], reason=f"Type {upper} does not take parameters")
        if name.type == "IDENTIFIER":
            primitive = t.PRIMITIVES_BY_NAME.get(upper)
            if primitive is not None:
                return primitive
            if upper == "NULL":
                raise _syntax_error_at(name)
        return t.NamedType(_name(name))

    # ------------------------------------------------------------------------ statements
    def query_statement(self, query: ast.Query) -> ast.Statement:
        return ast.QueryStatement(query)

    def or_replace(self) -> bool:
        return True

    def source_kw(self) -> bool:
        return True

    def if_not_exists(self) -> bool:
        return True

    def if_exists(self) -> bool:
        return True

    def delete_topic(self) -> bool:
        return True

    def source_kind(self, token: Token) -> str:
        return str(token).upper()

    def as_query(self, query: ast.Query) -> ast.Query:
        return query

    def create_source(self, or_replace: bool | None, is_source: bool | None, kind: str,
                      if_not_exists: bool | None, name: Token, elements: list[ast.TableElement] | None,
                      props: ast.Properties | None, query: ast.Query | None) -> ast.Statement:
        properties = props if props is not None else ast.Properties()
        if query is not None:
            if is_source or elements is not None:
                raise _syntax_error_at(name, reason="CREATE ... AS SELECT takes neither SOURCE nor a column list")
            return ast.CreateAsSelect(kind, _name(name), query, properties,
                                      or_replace=bool(or_replace), if_not_exists=bool(if_not_exists))
        for element in elements or ():
            _check_key_constraint(kind, element)
        return ast.CreateSource(
            kind, _name(name), tuple(e for e, _ in elements or ()), properties,
            or_replace=bool(or_replace), if_not_exists=bool(if_not_exists), is_source=bool(is_source),
        )

    @v_args(inline=False)
    def table_elements(self, elements: list[tuple[ast.TableElement, Token]]) -> list[tuple[ast.TableElement, Token]]:
        return elements

    def table_element(self, name: Token, sql_type: t.SqlType,
                      constraint: tuple[str, str | None] | None) -> tuple[ast.TableElement, Token]:
        kind, header_key = constraint if constraint is not None else (None, None)
        return ast.TableElement(_name(name), sql_type, kind, header_key), name

    def primary_key(self) -> tuple[str, None]:
        return ("PRIMARY KEY", None)

    def key_constraint(self) -> tuple[str, None]:
        return ("KEY", None)

    def headers_constraint(self) -> tuple[str, None]:
        return ("HEADERS", None)

    def header_constraint(self, key: Token) -> tuple[str, str]:
        return ("HEADER", _unquote_string(key))

    @v_args(inline=False)
    def with_props(self, props: list[tuple[str, Any]]) -> ast.Properties:
        return ast.Properties(tuple(props))

    def property(self, name: Token, value: Any) -> tuple[str, Any]:
        key = _unquote_string(name) if name.type == "STRING" else _name(name)
        return (key.upper(), value if not isinstance(value, ex.Expression) else _property_value(value))

    def insert_into(self, target: Token, props: ast.Properties | None, query: ast.Query) -> ast.Statement:
        return ast.InsertInto(_name(target), query, props if props is not None else ast.Properties(),
                              target_location=(target.line, target.column))

    def insert_values(self, target: Token, columns: tuple[str, ...] | None, values: tuple[ex.Expression, ...]) -> ast.Statement:
        return ast.InsertValues(_name(target), columns or (), values)

    @v_args(inline=False)
    def column_list(self, names: list[Token]) -> tuple[str, ...]:
        return tuple(_name(n) for n in names)

    @v_args(inline=False)
    def value_list(self, values: list[ex.Expression | None]) -> tuple[ex.Expression, ...]:
        present = tuple(v for v in values if v is not None)
        _reject_tuples(present)
        return present

    def drop_source(self, kind: str, if_exists: bool | None, name: Token, delete_topic: bool | None) -> ast.Statement:
        return ast.DropSource(kind, _name(name), if_exists=bool(if_exists), delete_topic=bool(delete_topic))

    def create_type(self, if_not_exists: bool | None, name: Token, sql_type: t.SqlType) -> ast.Statement:
        return ast.CreateType(_name(name), sql_type, if_not_exists=bool(if_not_exists))

    def drop_type(self, if_exists: bool | None, name: Token) -> ast.Statement:
        return ast.DropType(_name(name), if_exists=bool(if_exists))

    def alter_source(self, kind: str, name: Token, *options: ast.TableElement) -> ast.Statement:
        return ast.AlterSource(kind, _name(name), tuple(options))

    def alter_option(self, name: Token, sql_type: t.SqlType) -> ast.TableElement:
        return ast.TableElement(_name(name), sql_type)

    def alter_system(self, name: Token, value: Token) -> ast.Statement:
        return ast.AlterSystem(_unquote_string(name), _unquote_string(value))

    def not_exists(self) -> bool:
        return True

    def resource_name(self, token: Token) -> str:
        # Kafka topics and registry subjects are case-sensitive: kept as written.
        if token.type == "STRING":
            return _unquote_string(token)
        if token.type == "QUOTED_IDENTIFIER":
            return str(token)[1:-1].replace('""', '"')
        if token.type == "BACKQUOTED_IDENTIFIER":
            return str(token)[1:-1].replace("``", "`")
        return str(token)

    def assert_timeout(self, millis: int) -> int:
        return millis

    def assert_subject(self, name: str) -> str:
        return name

    def assert_id(self, value: ex.Expression) -> int:
        if not isinstance(value, ex.IntegerLiteral):
            raise KsqlException("ID must be an integer")
        return int(value.value)

    def assert_topic(self, not_exists: bool | None, topic: str, props: ast.Properties | None,
                     timeout: int | None) -> ast.Statement:
        return ast.AssertTopic(topic, props if props is not None else ast.Properties(), timeout,
                               exists=not not_exists)

    def assert_schema(self, not_exists: bool | None, subject: str | None, schema_id: int | None,
                      timeout: int | None) -> ast.Statement:
        if subject is None and schema_id is None:
            # ksqlDB's AstBuilder wording, typo included.
            raise KsqlException("ASSERT SCHEMA statements much include a subject name or an id")
        return ast.AssertSchema(subject, schema_id, timeout, exists=not not_exists)

    # -------------------------------------------------------------------------- connectors
    def connector_kind(self, token: Token) -> str:
        return str(token).upper()

    @v_args(inline=False)
    def connector_props(self, props: list[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
        return tuple(props)

    def connector_property(self, name: Token, value: Any) -> tuple[str, str]:
        # Connect's keys are case-sensitive ('connector.class'); a bare word is a name as
        # ksqlDB reads one (upper-cased unless quoted).
        key = _unquote_string(name) if name.type == "STRING" else _name(name)
        value = value if not isinstance(value, ex.Expression) else _property_value(value)
        return key, ("true" if value else "false") if isinstance(value, bool) else str(value)

    def create_connector(self, kind: str, if_not_exists: bool | None, name: Token,
                         config: tuple[tuple[str, str], ...]) -> ast.Statement:
        return ast.CreateConnector(_name(name), kind, config, if_not_exists=bool(if_not_exists))

    def drop_connector(self, if_exists: bool | None, name: Token) -> ast.Statement:
        return ast.DropConnector(_name(name), if_exists=bool(if_exists))

    def show_connectors(self, kind: str | None) -> ast.Statement:
        return ast.ListConnectors(kind)

    def show_connector_plugins(self) -> ast.Statement:
        return ast.ListConnectorPlugins()

    def describe_connector(self, name: Token) -> ast.Statement:
        return ast.DescribeConnector(_name(name))

    def show(self, all_: Token | None, noun: str, extended: Token | None) -> ast.Statement:
        if all_ is not None and noun != "TOPICS":
            raise _syntax_error_at(all_, reason="ALL is only valid with TOPICS")
        return ast.ShowStatement(noun, extended=extended is not None, all=all_ is not None)

    def show_noun(self, token: Token) -> str:
        return str(token).upper()

    def describe_noun(self, token: Token) -> str:
        return str(token).upper()

    def describe_source(self, name: Token, extended: Token | None) -> ast.Statement:
        return ast.DescribeSource(_name(name), extended=extended is not None)

    def describe_sources(self, noun: str, extended: Token | None) -> ast.Statement:
        return ast.DescribeSources(noun, extended=extended is not None)

    def describe_function(self, name: Token) -> ast.Statement:
        return ast.DescribeFunction(_name(name).upper())

    def explain_query(self, query_id: Token) -> ast.Statement:
        return ast.Explain(query_id=_name(query_id))

    def explain_statement(self, statement: ast.Statement) -> ast.Statement:
        return ast.Explain(statement=statement)

    def terminate_query(self, query_id: Token) -> ast.Statement:
        return ast.TerminateQuery(_name(query_id))

    def terminate_all(self, _all: Token) -> ast.Statement:
        return ast.TerminateQuery(None)

    def pause_resume(self, action: Token, target: Token) -> ast.Statement:
        query_id = None if target.type == "ALL" else _name(target)
        return ast.PauseResumeQuery(str(action).upper(), query_id)

    def set_property(self, name: Token, value: Token) -> ast.Statement:
        return ast.SetProperty(_unquote_string(name), _unquote_string(value))

    def unset_property(self, name: Token) -> ast.Statement:
        return ast.UnsetProperty(_unquote_string(name))

    def variable_name(self, name: Token) -> str:
        return str(name)

    def define_variable(self, name: str, value: Token) -> ast.Statement:
        return ast.DefineVariable(name, _unquote_string(value))

    def undefine_variable(self, name: str) -> ast.Statement:
        return ast.UndefineVariable(name)

    def print_topic(self, topic: Token, from_beginning: bool | None, interval: int | None,
                    limit: int | None) -> ast.Statement:
        name = _unquote_string(topic) if topic.type == "STRING" else _name(topic)
        return ast.PrintTopic(name, from_beginning=bool(from_beginning), interval=interval, limit=limit)

    def from_beginning(self) -> bool:
        return True

    def print_interval(self, value: Token) -> int:
        return _int_value(value)

    def run_script(self, path: Token) -> ast.Statement:
        return ast.RunScript(_unquote_string(path))

    # ---------------------------------------------------------------------------- queries
    def query(self, items: tuple[ast.SelectItem, ...], relation: ast.Relation,
              window: ast.WindowExpression | None, where: ex.Expression | None,
              group_by: tuple[ex.Expression, ...] | None, partition_by: tuple[ex.Expression, ...] | None,
              having: ex.Expression | None, emit: str | None, limit: int | None) -> ast.Query:
        _reject_tuples(where)
        _reject_tuples(having)
        return ast.Query(
            select=items, from_=relation, where=where, window=window,
            group_by=group_by or (), partition_by=partition_by or (), having=having,
            emit=emit, limit=limit,
        )

    @v_args(inline=False)
    def select_items(self, items: list[ast.SelectItem]) -> tuple[ast.SelectItem, ...]:
        return tuple(items)

    def single_column(self, expr: ex.Expression) -> ast.SelectItem:
        _reject_tuples(expr)
        return ast.SingleColumn(expr)

    def aliased_column(self, expr: ex.Expression, alias: Token) -> ast.SelectItem:
        _reject_tuples(expr)
        return ast.SingleColumn(expr, _name(alias))

    def qualified_all_columns(self, source: Token) -> ast.SelectItem:
        return ast.AllColumns(_name(source))

    def struct_all_fields(self, expr: ex.Expression) -> ast.SelectItem:
        _reject_tuples(expr)
        return ast.StructAllFields(expr)

    def all_columns(self) -> ast.SelectItem:
        return ast.AllColumns()

    def relation(self, left: ast.AliasedRelation, *joins: ast.JoinClause) -> ast.Relation:
        if not joins:
            return left
        return ast.Join(left, tuple(joins))

    def aliased_relation(self, name: Token, alias: Token | None) -> ast.AliasedRelation:
        return ast.AliasedRelation(_name(name), _name(alias) if alias is not None else None)

    def join_clause(self, join_type: str, right: ast.AliasedRelation, within: ast.WithinExpression | None,
                    criteria: ex.Expression) -> ast.JoinClause:
        _reject_tuples(criteria)
        return ast.JoinClause(join_type, right, criteria, within)

    def inner_join(self) -> str:
        return "INNER"

    def left_join(self) -> str:
        return "LEFT"

    def right_join(self) -> str:
        return "RIGHT"

    def full_join(self) -> str:
        return "FULL"

    def within_symmetric(self, size: int, grace: int | None) -> ast.WithinExpression:
        return ast.WithinExpression(size, size, grace)

    def within_asymmetric(self, before: int, after: int, grace: int | None) -> ast.WithinExpression:
        return ast.WithinExpression(before, after, grace)

    def window_clause(self, window: ast.WindowExpression) -> ast.WindowExpression:
        return window

    def tumbling(self, size: int, options: dict[str, int]) -> ast.WindowExpression:
        return ast.WindowExpression("TUMBLING", size, None, options.get("retention"), options.get("grace"))

    def hopping(self, size: int, advance: int, options: dict[str, int]) -> ast.WindowExpression:
        return ast.WindowExpression("HOPPING", size, advance, options.get("retention"), options.get("grace"))

    def session(self, size: int, options: dict[str, int]) -> ast.WindowExpression:
        return ast.WindowExpression("SESSION", size, None, options.get("retention"), options.get("grace"))

    @v_args(inline=False)
    def window_options(self, options: list[tuple[str, int]]) -> dict[str, int]:
        return dict(options)

    def retention(self, millis: int) -> tuple[str, int]:
        return ("retention", millis)

    def window_option(self, grace: int) -> tuple[str, int]:
        return ("grace", grace)

    def grace_period(self, millis: int) -> int:
        return millis

    def duration(self, amount: Token, unit: str) -> int:
        millis = duration_millis(_int_value(amount), unit)
        if millis > t.BIGINT_MAX:
            raise _invalid_number(amount, reason=f"Duration out of range: {amount} {unit}")
        return millis

    def where_clause(self, expr: ex.Expression) -> ex.Expression:
        return expr

    def having_clause(self, expr: ex.Expression) -> ex.Expression:
        return expr

    @v_args(inline=False)
    def group_by(self, exprs: list[ex.Expression]) -> tuple[ex.Expression, ...]:
        return _grouping_list(exprs)

    @v_args(inline=False)
    def partition_by(self, exprs: list[ex.Expression]) -> tuple[ex.Expression, ...]:
        return _grouping_list(exprs)

    def emit_clause(self, _emit: Token, what: Token) -> str:
        return str(what).upper()

    def limit_clause(self, minus: Token | None, value: Token) -> int:
        # ksqlDB's grammar takes any number here; preparing the statement wants an integer
        # (a negative one is for the query's validator to refuse).
        if value.type != "INTEGER_VALUE":
            raise ParseError("Failed to prepare statement: Value must be integer for command: LIMIT",
                             value.line, value.column, str(value))
        return -_int_value(value) if minus is not None else _int_value(value)


# ------------------------------------------------------------------------------- helpers
# Pieces of SQL text, just fine enough to tell comments and blanks from everything else.
# Quoted pieces are "unrolled" (see STRING in the grammar): no backtrack entry per character.
_TEXT_PIECES = re.compile(
    r"""'[^']*(?:''[^']*)*'?|`[^`]*(?:``[^`]*)*`?|"[^"]*(?:""[^"]*)*"?|--[^\n]*|/\*.*?(?:\*/|$)|\s+|[^'`"\s/;-]+|.""",
    re.S,
)


def _significant_text(text: str, start: int, end: int) -> str:
    """``text[start:end]`` without leading and trailing blanks and comments."""
    first = last = None
    for match in _TEXT_PIECES.finditer(text, start, end):
        piece = match.group()
        if piece[0].isspace() or piece.startswith("--") or piece.startswith("/*"):
            continue
        if first is None:
            first = match.start()
        last = match.end()
    return "" if first is None else text[first:last]


def _too_many_digits(token: Token) -> bool:
    return len(str(token).lstrip("0")) > _MAX_INTEGER_DIGITS


def _invalid_number(token: Token, sign: str = "", reason: str | None = None) -> ParseError:
    """ksqlDB's "Invalid numeric literal", where the literal is (a very long one cut short)."""
    text = str(token)
    shown = text if len(text) <= 40 else f"{text[:20]}...({len(text)} digits)"
    message = reason or f"Invalid numeric literal: {sign}{shown}"
    return ParseError(f"line {token.line}:{token.column}: {message}", token.line, token.column, shown)


def _int_value(token: Token) -> int:
    """An INTEGER_VALUE token that is not an expression (LIMIT, a window size, a type's
    parameter) as an int; out of BIGINT's range is ksqlDB's "Invalid numeric literal"."""
    if _too_many_digits(token) or _digits_value(token) > t.BIGINT_MAX:
        raise _invalid_number(token)
    return _digits_value(token)


def _digits_value(token: Token) -> int:
    """The value of a token of digits (leading zeros do not count towards Python's limit on
    the digits of an int conversion)."""
    return int(str(token).lstrip("0") or "0")


def _logical_chain(kind: type, operands: tuple[ex.Expression, ...]) -> ex.Expression:
    """AND / OR over ``operands``: nested from the left as ksqlDB builds them when few, else
    a balanced tree (AND and OR are associative, in three-valued logic too), so that a long
    chain is only log2(n) levels deep. Built without recursion."""
    if len(operands) - 1 <= _FLAT_CHAIN_OPERATORS:
        result = operands[0]
        for operand in operands[1:]:
            result = kind(result, operand)
        return result
    level = list(operands)
    while len(level) > 1:
        pairs = [kind(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        level = pairs + ([level[-1]] if len(level) % 2 else [])
    return level[0]


def _unquote_string(token: Token) -> str:
    return str(token)[1:-1].replace("''", "'")


def _escape_char(token: Token | None) -> str | None:
    return None if token is None else _unquote_string(token)


def _property_value(expr: ex.Expression) -> Any:
    """WITH property values are literals: str, int, Decimal, float, bool (None for NULL)."""
    return ex.literal_value(expr)


def _grouping_list(exprs: list[ex.Expression]) -> tuple[ex.Expression, ...]:
    # GROUP BY (a, b) is the same list as GROUP BY a, b; a parenthesised list inside a
    # longer list is the syntax error ksqlDB reports.
    if len(exprs) == 1 and isinstance(exprs[0], _Tuple):
        exprs = list(exprs[0].items)
    _reject_tuples(exprs)
    return tuple(exprs)


def _lambda_params(params: ex.Expression, arrow: Token) -> tuple[str, ...]:
    items = params.items if isinstance(params, _Tuple) else (params,)
    names = []
    for item in items:
        if not isinstance(item, ex.ColumnRef) or item.source is not None:
            raise _syntax_error_at(arrow, reason="Lambda parameters must be plain names: (x, y) => ...")
        names.append(item.name)
    return tuple(names)


def _check_key_constraint(kind: str, element: tuple[ast.TableElement, Token]) -> None:
    column, token = element
    if kind == "TABLE" and column.constraint == "KEY":
        raise ParseError(
            f"Line: {token.line}, Col: {token.column}: Column `{column.name}` is a 'KEY' column: "
            "please use 'PRIMARY KEY' for tables.",
            token.line, token.column, str(token),
        )
    if kind == "STREAM" and column.constraint == "PRIMARY KEY":
        raise ParseError(
            f"Line: {token.line}, Col: {token.column}: Column `{column.name}` is a 'PRIMARY KEY' column: "
            "please use 'KEY' for streams.\n"
            "Tables have PRIMARY KEYs, which are unique and NON NULL.\n"
            "Streams have KEYs, which have no uniqueness or NON NULL constraints.",
            token.line, token.column, str(token),
        )

"""Parsing with a template cache: statements that differ only in their string and integer
literals (``... WHERE user_id = 'u1'`` / ``'u2'``) share one parse.

Parsing is the dominant cost of a key-lookup pull query. ``StatementCache.parse`` replaces
each string literal and each integer of up to 18 digits with a placeholder, parses that
template once, and fills the request's literals into a copy of the template's AST. A template
is only used when the placeholders come back as exactly that many ``StringLiteral`` and
``IntegerLiteral`` nodes (a LIMIT's number stays in the template); anything the parser
treats another way (a window size, an ESCAPE character, ...) makes the template unusable and the text is parsed as it is. Errors are
always reported from a parse of the real text.
"""
from __future__ import annotations

import dataclasses
import functools
import re
from collections import OrderedDict
from typing import Any

from streamsql import ast
from streamsql import expressions as ex
from streamsql.errors import ParseError
from streamsql.parser import DEFAULT_LIMITS, StatementLimits

# Strings, quoted identifiers and comments (kept whole), and integers outside identifiers
# and decimals.
_TOKENS = re.compile(r"""'[^']*(?:''[^']*)*'|"[^"]*"|`[^`]*`|--[^\n]*|/\*.*?\*/|(?<![\w.$])(\d{1,18})(?![\w.])""",
                     re.DOTALL)
_STRING_MARK = "__streamsql_param_{}__"
_INT_BASE = 7_355_608_000_000_000_000  # placeholders: _INT_BASE + i (BIGINT, never typed by users)
_UNUSABLE = object()


def _template(text: str) -> tuple[str, dict[str, str], dict[int, int], dict[str, str]]:
    """The template, its string and integer placeholders' values, and each placeholder's
    original token (to put the statement's text back together)."""
    strings: dict[str, str] = {}
    ints: dict[int, int] = {}
    tokens: dict[str, str] = {}

    def sub(m: re.Match[str]) -> str:
        token = m.group(0)
        if token[0] == "'":
            mark = _STRING_MARK.format(len(strings))
            strings[mark] = token[1:-1].replace("''", "'")
            tokens[f"'{mark}'"] = token
            return f"'{mark}'"
        if m.group(1) is not None and not text[:m.start()].rstrip()[-5:].upper() == "LIMIT":
            mark_int = _INT_BASE + len(ints)
            ints[mark_int] = int(token)
            tokens[str(mark_int)] = token
            return str(mark_int)
        return token

    return _TOKENS.sub(sub, text), strings, ints, tokens


_PLACEHOLDER = re.compile(r"'__streamsql_param_\d+__'|" + str(_INT_BASE)[:6] + r"\d{13}")


class _Filler:
    """Copies a template AST with its placeholders replaced; counts what it replaced.

    The first fill of a template (``paths`` None) walks the whole tree and records, for each
    node on the way to a placeholder, which of its fields (or tuple items) lead there; later
    fills follow those paths only, copying just the nodes on them."""

    def __init__(self, strings: dict[str, str], ints: dict[int, int],
                 paths: dict[int, tuple[Any, ...]] | None = None) -> None:
        # Placeholder -> the request's value, by the literal class that holds it.
        self.values: dict[type, dict[Any, Any]] = {ex.StringLiteral: strings, ex.IntegerLiteral: ints}
        self.replaced = 0
        self.probing = paths is None
        self.paths: dict[int, tuple[Any, ...]] = {} if paths is None else paths

    def fill(self, node: Any) -> Any:
        values = self.values.get(type(node))
        if values is not None:
            value = values.get(node.value)
            if value is None:
                return node
            self.replaced += 1
            return type(node)(value)
        if not self.probing:
            steps = self.paths.get(id(node))
            if steps is None:
                return node
            if isinstance(node, tuple):
                items = list(node)
                for i in steps:
                    items[i] = self.fill(items[i])
                return tuple(items)
            return ex.evolve(node, **{name: self.fill(getattr(node, name)) for name in steps})
        if isinstance(node, tuple):
            items = tuple(self.fill(x) for x in node)
            changed = tuple(i for i, (a, b) in enumerate(zip(items, node)) if a is not b)
            if not changed:
                return node
            self.paths[id(node)] = changed
            return items
        if dataclasses.is_dataclass(node) and not isinstance(node, type):
            changes = {}
            for name in _init_fields(type(node)):
                value = getattr(node, name)
                filled = self.fill(value)
                if filled is not value:
                    changes[name] = filled
            if not changes:
                return node
            self.paths[id(node)] = tuple(changes)
            return ex.evolve(node, **changes)
        return node


@functools.lru_cache(maxsize=None)
def _init_fields(cls: type) -> tuple[str, ...]:
    """The names of a node class's constructor fields (the ones a copy carries over)."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.init)


@dataclasses.dataclass(frozen=True)
class _Template:
    """A parsed template and the paths to its placeholders (``_Filler``): node ids, valid
    while the template (kept in the cache) holds its nodes."""

    stmt: ast.Statement
    paths: dict[int, tuple[Any, ...]]


class StatementCache:
    """``parse(text)`` -> one statement, reusing templates (bounded LRU of ``size``)."""

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self._templates: OrderedDict[str, Any] = OrderedDict()

    def parse(self, text: str, limits: StatementLimits = DEFAULT_LIMITS) -> ast.Statement:
        """The statement of ``text``; text over ``limits`` is refused (past the length,
        before the template is cut out of it)."""
        from streamsql.parser import check_text, parse_statement

        check_text(text, limits.length)
        template, strings, ints, tokens = _template(text)
        count = len(strings) + len(ints)
        key = (template, limits)  # (a template read under other limits is read again)
        entry = self._templates.get(key)
        if entry is None:
            if not count:  # no literal: the statement itself is its template (an error is not kept)
                entry = _Template(parse_statement(text, limits), {})
            else:
                try:
                    entry = parse_statement(template, limits)
                except ParseError:
                    entry = _UNUSABLE
                else:
                    probe = _Filler(strings, ints)
                    probe.fill(entry)
                    # The template (kept in the cache) keeps the ids of its nodes valid.
                    entry = _Template(entry, probe.paths) if probe.replaced == count else _UNUSABLE
            self._templates[key] = entry
            if len(self._templates) > self.size:
                self._templates.popitem(last=False)
        else:
            self._templates.move_to_end(key)
        if not count and entry is not _UNUSABLE:
            return entry.stmt
        if entry is _UNUSABLE:
            return parse_statement(text, limits)
        filler = _Filler(strings, ints, entry.paths)
        stmt = filler.fill(entry.stmt)
        if filler.replaced != count:  # pragma: no cover - the probe above said otherwise
            return parse_statement(text, limits)
        # The statement's own text, as the parser cut it, with the request's literals.
        own = _PLACEHOLDER.sub(lambda m: tokens.get(m.group(0), m.group(0)), entry.stmt.text)
        return ex.evolve(stmt, text=own)

"""Regular expressions that cannot freeze the server (issue 13).

Queries and the HTTP API share one event loop, so a user pattern that backtracks
catastrophically (``REGEXP_EXTRACT('(a+)+$', B)`` on a long run of ``a``, or
``B LIKE '%a%a%a%a%b'``) used to block every client: Python's ``re`` is a backtracking engine,
exponential (or high-polynomial) in the input for such patterns, it holds the GIL and cannot be
interrupted.

So user patterns are matched with RE2 (the ``google-re2`` package), an automaton whose time is
linear in the input whatever the pattern. RE2 gives the same answers as a backtracking engine
(leftmost-first, same capture groups) for everything it supports, but it has no
backreferences, lookaround, atomic groups, possessive quantifiers, comments mode, repetition
counts above 1000, and its ``$`` is only the very end of the text. Java patterns (ksqlDB's
dialect) may use all of those, and ksqlDB users do (``\\k<name>``, lookahead), so rather than
rejecting them, such patterns -- and a ``$`` pattern on a text that ends with a newline --
fall back to the ``regex`` package, a backtracking engine compatible with ``re`` that takes a
time budget (``timeout=``). Python's ``re`` cannot be given one: it has no timeout, and only a
signal handler in the main thread can interrupt it. A call that exceeds the budget fails
(the value becomes NULL and the reason goes to the processing log, like any function error),
and that pattern is then refused at once for the rest of its life in the cache, so a stream of
hostile records costs one budget, not one per record.

Known differences from the backtracking engines, all minor: RE2's ``(?i)`` folds non-ASCII
letters too (Java and ``re.ASCII`` fold ASCII only), and inline flags in the middle of a
pattern (``a(?i)b``), which Java allows and Python 3.11 rejects, work with RE2.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Protocol

import re2  # google-re2
import regex as backtracking  # only for patterns RE2 cannot run
from re2 import _re2  # the compiled extension: RE2.Match without the pure-Python wrapper

from streamsql.errors import FunctionError

FALLBACK_BUDGET_SECONDS = 0.1
"""The most one call may spend in the backtracking fallback engine."""

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # RE2 logs every pattern it rejects to stderr otherwise
# Each compiled pattern may use this much (program and DFA cache; past it RE2 matches with
# its slower, still linear, NFA). RE2's default, 8 MiB, times the hundreds of patterns the
# caches keep (patterns may come from column values) is too much to hand to user input.
_RE2_OPTIONS.max_mem = 1 << 20
_ANCHOR = _re2.RE2.Anchor

# re flags this module understands, and their spelling for the regex package and for RE2.
_FLAGS = ((re.ASCII, backtracking.ASCII, ""), (re.IGNORECASE, backtracking.IGNORECASE, "i"),
          (re.DOTALL, backtracking.DOTALL, "s"))


class Match(Protocol):
    """What callers may use of a match, whichever engine produced it."""

    def group(self, group: int = 0) -> str | None: ...
    def start(self, group: int = 0) -> int: ...
    def end(self, group: int = 0) -> int: ...
    def span(self, group: int = 0) -> tuple[int, int]: ...


class _Re2Match:
    """A match from RE2's raw API, with character offsets (RE2 reports UTF-8 byte offsets)."""

    __slots__ = ("_text", "_spans")

    def __init__(self, text: str, spans: list[tuple[int, int]]) -> None:
        self._text, self._spans = text, spans

    def group(self, group: int = 0) -> str | None:
        start, end = self._spans[group]
        return None if start < 0 else self._text[start:end]

    def start(self, group: int = 0) -> int:
        return self._spans[group][0]

    def end(self, group: int = 0) -> int:
        return self._spans[group][1]

    def span(self, group: int = 0) -> tuple[int, int]:
        return self._spans[group]


class _CharOffsets:
    """Maps increasing UTF-8 byte offsets of one text to character offsets, in one pass."""

    __slots__ = ("_data", "_byte", "_char")

    def __init__(self, data: bytes) -> None:
        self._data, self._byte, self._char = data, 0, 0

    def spans(self, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """The character spans of one match's (byte) spans."""
        chars = {-1: -1}
        for offset in sorted({o for span in spans for o in span if o >= 0}):
            if offset < self._byte:  # not reached by the callers; kept correct anyway
                self._byte = self._char = 0
            self._char += len(self._data[self._byte:offset].decode())
            self._byte = offset
            chars[offset] = self._char
        return [(chars[a], chars[b]) for a, b in spans]


def _utf8_width(lead: int) -> int:
    """Bytes in the UTF-8 sequence that starts with byte ``lead``."""
    return 1 if lead < 0x80 else 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4


def _has_end_anchor(pattern: str) -> bool:
    """Whether ``pattern`` (``re`` syntax) has a ``$`` outside character classes: the one
    assertion whose meaning differs in RE2 (end of text only) and ``re`` (also before a
    final newline)."""
    i, n, in_class = 0, len(pattern), False
    while i < n:
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
            # A ']' right after '[' or '[^' is a literal.
            if pattern.startswith("^", i + 1):
                i += 1
            if pattern.startswith("]", i + 1):
                i += 1
        elif c == "$":
            return True
        i += 1
    return False


class SafePattern:
    """A compiled pattern with the ``re.Pattern`` methods the functions use, run by RE2 where
    it can and by the budgeted backtracking engine where it cannot (see the module docstring).

    ``python`` is the pattern in ``re`` syntax (used by the fallback, and to validate);
    ``re2_pattern`` its RE2 spelling when that differs (None: the same text). ``source`` is
    what the user wrote, for error messages. ``linear_in_re`` says the caller knows ``re``
    cannot backtrack badly on this pattern (then ``re`` runs it: faster than RE2 in Python).
    """

    __slots__ = ("source", "groups", "groupindex", "_re", "_re2", "_raw", "_dollar",
                 "_python", "_flags", "_fallback", "_timed_out")

    def __init__(self, python: str, flags: int = 0, *, re2_pattern: str | None = None,
                 source: str | None = None, linear_in_re: bool = False) -> None:
        self.source = python if source is None else source
        self._python, self._flags = python, flags
        self._re: re.Pattern[str] | None = None
        self._re2: Any = None  # the re2 module's pattern, for compiling and group names
        self._raw: Any = None  # its compiled RE2 object, for matching
        self._fallback: Any = None
        self._timed_out = False
        self._dollar = False
        if linear_in_re:
            self._re = re.compile(python, flags)
            self.groups, self.groupindex = self._re.groups, dict(self._re.groupindex)
            return
        prefix = "".join(letter for flag, _, letter in _FLAGS if flags & flag and letter)
        text = python if re2_pattern is None else re2_pattern
        try:
            self._re2 = re2.compile(f"(?{prefix}){text}" if prefix else text, _RE2_OPTIONS)
        except (re2.error, UnicodeEncodeError):  # unsupported syntax, or a lone surrogate
            # Validate with re, so an invalid pattern fails with the usual message.
            compiled = re.compile(python, flags)
            self.groups, self.groupindex = compiled.groups, dict(compiled.groupindex)
            return
        self._raw = self._re2._regexp
        self._dollar = _has_end_anchor(text)
        self.groups, self.groupindex = self._re2.groups, self._re2.groupindex

    # ------------------------------------------------------------------------ matching
    def search(self, text: str) -> Match | None:
        """The first match anywhere in ``text``, or None."""
        if self._re is not None:
            return self._re.search(text)
        found = self._re2_matches(_ANCHOR.UNANCHORED, text, 1)
        if found is not None:
            return found[0] if found else None
        return self._budgeted(lambda p: p.search(text, timeout=FALLBACK_BUDGET_SECONDS))

    def fullmatch(self, text: str) -> Match | None:
        """The match of the whole of ``text``, or None."""
        if self._re is not None:
            return self._re.fullmatch(text)
        found = self._re2_matches(_ANCHOR.ANCHOR_BOTH, text, 1)
        if found is not None:
            return found[0] if found else None
        return self._budgeted(lambda p: p.fullmatch(text, timeout=FALLBACK_BUDGET_SECONDS))

    def finditer(self, text: str) -> list[Match]:
        """Every non-overlapping match, left to right (a list, so that with the fallback
        engine the whole scan is inside the time budget)."""
        if self._re is not None:
            return list(self._re.finditer(text))
        found = self._re2_matches(_ANCHOR.UNANCHORED, text, 0)
        if found is not None:
            return found
        return self._budgeted(
            lambda p: list(p.finditer(text, timeout=FALLBACK_BUDGET_SECONDS)))

    def _re2_matches(self, anchor: Any, text: str, limit: int) -> list[Match] | None:
        """Up to ``limit`` (0: all) successive matches by RE2, or None when RE2 cannot answer
        for this text (see ``_use_re2``) and the fallback must.

        RE2's raw call is used, not the ``re2`` module's wrapper, which costs ~10 us a call
        (against ~1.5 us) and repeats an empty match found after the search position.
        """
        if not self._use_re2(text):
            return None
        try:
            data = text.encode()
        except UnicodeEncodeError:  # a lone surrogate: only the fallback can read it
            return None
        # On ASCII text byte offsets are character offsets.
        offsets = None if len(data) == len(text) else _CharOffsets(data)
        n, pos = len(data), 0
        found: list[Match] = []
        while pos <= n:
            spans = self._raw.Match(anchor, data, pos, n)
            start, end = spans[0]
            if start < 0:
                break
            found.append(_Re2Match(text, spans if offsets is None else offsets.spans(spans)))
            if len(found) == limit:
                break
            # As Java's Matcher.find: go on from the match's end, or one character further
            # after an empty match.
            pos = end if end > start else end + (_utf8_width(data[end]) if end < n else 1)
        return found

    def _use_re2(self, text: str) -> bool:
        """Whether RE2 can answer for ``text``: it compiled, and a ``$`` in the pattern cannot
        mean "before the final newline" (RE2's ``$`` is the end of the text only)."""
        return self._re2 is not None and not (self._dollar and text.endswith("\n"))

    def _budgeted(self, call: Callable[[Any], Any]) -> Any:
        """Run ``call`` on the backtracking engine within the time budget."""
        if self._timed_out:
            raise FunctionError(self._too_slow())
        if self._fallback is None:
            self._fallback = backtracking.compile(self._python, self._regex_flags())
        try:
            return call(self._fallback)
        except TimeoutError:
            self._timed_out = True  # later calls fail at once: see the module docstring
            raise FunctionError(self._too_slow()) from None

    def _regex_flags(self) -> int:
        out = 0
        for flag, regex_flag, _ in _FLAGS:
            if self._flags & flag:
                out |= regex_flag
        return out

    def _too_slow(self) -> str:
        return (f"Regular expression '{self.source}' took more than "
                f"{FALLBACK_BUDGET_SECONDS:g}s to match (it backtracks too much; "
                "RE2 cannot run it because it uses backreferences or lookaround)")


def like_pattern(pattern: str, escape: str | None = None) -> SafePattern:
    """A SQL LIKE pattern (``%`` any run, ``_`` one character) compiled for ``fullmatch``.

    With at most two ``%`` the ``re`` translation cannot backtrack more than linearly, so the
    fast ``re`` runs it; with more (``%a%a%a%b`` is O(n^4) in ``re``) RE2 does.
    """
    out: list[str] = []
    wildcards = 0
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if escape is not None and ch == escape and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if ch == "%":
            wildcards += 1
            out.append(".*")
        elif ch == "_":
            out.append(".")
        else:
            out.append(re.escape(ch))
        i += 1
    return SafePattern("".join(out), re.DOTALL, source=pattern, linear_in_re=wildcards <= 2)

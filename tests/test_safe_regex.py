"""Issue 13: user patterns (REGEXP_*, LIKE, date formats) cannot freeze the server.

They run on RE2 (linear time); the Java patterns RE2 cannot run fall back to a backtracking
engine with a time budget. See streamsql/functions/safe_regex.py.
"""
from __future__ import annotations

import time

import pytest

from streamsql.errors import FunctionError
from streamsql.functions import datetime as dt
from streamsql.functions import string as s
from streamsql.functions.safe_regex import FALLBACK_BUDGET_SECONDS, SafePattern, like_pattern

HOSTILE = "(a+)+$"
VALUE = "a" * 10_000 + "!"  # '(a+)+$' backtracks 2^n times in a backtracking engine


def _elapsed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def test_hostile_pattern_on_10000_chars_answers_at_once() -> None:
    # Before: 0.1 s at 20 characters, doubling with each one (16.5 s at 28).
    assert _elapsed(lambda: s.regexp_extract(HOSTILE, VALUE)) < 0.1
    assert s.regexp_extract(HOSTILE, VALUE) is None
    assert _elapsed(lambda: s.regexp_extract_group(HOSTILE, VALUE, 1)) < 0.1
    assert _elapsed(lambda: s.regexp_extract_all(HOSTILE, VALUE)) < 0.1
    assert _elapsed(lambda: s.regexp_replace(VALUE, HOSTILE, "x")) < 0.1
    assert _elapsed(lambda: s.regexp_split_to_array(VALUE, HOSTILE)) < 0.1
    assert s.regexp_extract(HOSTILE, "b" + "a" * 10_000) == "a" * 10_000


def test_dollar_before_a_final_newline_keeps_java_meaning_and_stays_bounded() -> None:
    # RE2's $ is the end of the text only; Java's also matches before a final line break.
    assert s.regexp_extract("a$", "ba\n") == "a"
    assert s.regexp_extract(r"a\z", "ba\n") is None
    # That case runs on the budgeted engine: still bounded for the hostile pattern.
    assert _elapsed(lambda: _value_or_error(s.regexp_extract, HOSTILE, "a" * 10_000 + "!\n")) \
        < FALLBACK_BUDGET_SECONDS + 0.5


def _value_or_error(fn, *args):
    try:
        return fn(*args)
    except FunctionError as exc:
        return exc


def test_patterns_re2_lacks_run_with_a_time_budget() -> None:
    # Backreferences and lookaround are Java: they still work...
    assert s.regexp_extract(r"(?<y>\d{4})-\k<y>", "x2020-2020") == "2020-2020"
    assert s.regexp_extract(r"a(?=b)", "acab") == "a"
    assert s.regexp_replace("abab", r"(a)(?=b)", "[$1]") == "[a]b[a]b"
    # ...but a hostile one gives up after the budget, and is refused at once afterwards.
    hostile = r"(x+x+)+y(?=z)"
    first = _elapsed(lambda: _value_or_error(s.regexp_extract, hostile, "x" * 10_000))
    assert first < FALLBACK_BUDGET_SECONDS + 0.5
    with pytest.raises(FunctionError, match="took more than"):
        s.regexp_extract(hostile, "x" * 10_000)
    assert _elapsed(lambda: _value_or_error(s.regexp_extract_all, hostile, "x" * 10_000)) < 0.05


def test_java_semantics_kept_on_re2() -> None:
    # Empty matches as Java's Matcher.find: once each, one character on after an empty one.
    assert s.regexp_extract_all("a*", "baaa") == ["", "aaa", ""]
    assert s.regexp_replace("abc", "x*", "-") == "-a-b-c-"
    assert s.regexp_extract_all(r"\b", "  ab") == ["", ""]
    # Non-ASCII text: offsets are characters, \w stays ASCII as in Java.
    assert s.regexp_extract_all(r"\w+", "héllo wörld") == ["h", "llo", "w", "rld"]
    assert s.regexp_replace("aééb é", "é+", "<$0>") == "a<éé>b <é>"
    assert s.regexp_extract(r"\x{1F600}+", "a😀😀b") == "😀😀"
    # Java's \s includes VT (RE2's does not); inline flags work anywhere, as in Java.
    assert s.regexp_extract(r"\s+", "a\x0b b") == "\x0b "
    assert s.regexp_extract(r"(?i)abc", "xABC") == "ABC"
    assert s.regexp_extract(r"a(?i)b", "xaB") == "aB"
    # Replacement strings: literal text is not a Python template.
    assert s.regexp_replace("ab", "(?<g>a)", "${g}\\\\n$1é") == "a\\na\u00e9b"
    # A lone surrogate (possible in JSON text) cannot be UTF-8: the fallback reads it.
    assert s.regexp_extract("a+", "x\ud800aaa") == "aaa"


def test_like_patterns_are_linear() -> None:
    # Before: '%a%a%a%a%b' took 4 s on 200 characters and 103 s on 400 (O(n^4) in re).
    rx = like_pattern("%a%a%a%a%b")
    assert _elapsed(lambda: rx.fullmatch("a" * 10_000)) < 0.1
    assert rx.fullmatch("a" * 10_000) is None
    assert rx.fullmatch("xaaaaxb") is not None
    assert like_pattern("a_c%").fullmatch("abcdef") is not None
    assert like_pattern("a!%%", "!").fullmatch("a%b") is not None
    assert like_pattern("a!%%", "!").fullmatch("ab") is None
    assert like_pattern("%\n%").fullmatch("a\nb") is not None


def test_date_format_patterns_are_linear() -> None:
    # Adjacent variable-width fields: each \d{1,19}, so re tried 19^7 splits of the digits.
    pattern = dt.compile_pattern("yDyDyDyD")
    start = time.perf_counter()
    with pytest.raises(FunctionError, match="could not be parsed"):
        pattern.parse_fields("1" * 3000 + "x")
    assert time.perf_counter() - start < 0.1
    fields = dt.compile_pattern("yyyy-MM-dd'T'HH:mm").parse_fields("2024-01-02T03:04")
    assert fields["YearOfEra"] == 2024 and fields["MinuteOfHour"] == 4


def test_invalid_patterns_still_fail_with_re_messages() -> None:
    with pytest.raises(Exception, match="missing \\)"):
        SafePattern("(")
    with pytest.raises(Exception, match="bad escape"):
        s.java_regex(r"\C")


def test_like_operator_is_linear() -> None:
    from streamsql.codegen import like_regex

    rx = like_regex("%a%a%a%a%b", None)
    assert _elapsed(lambda: rx.fullmatch("a" * 10_000)) < 0.1

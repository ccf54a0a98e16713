"""String and BYTES scalar functions, resolved through the default registry; expected values
come from ksqlDB's QTT cases (string.json, concat.json, substring.json, split.json, ...)."""
from __future__ import annotations

import base64
import re

import pytest

from streamsql import types as t
from streamsql.errors import KsqlStatementException
from streamsql.functions import default_registry

S, I, B = t.STRING, t.INTEGER, t.BYTES


def fn(name: str, *arg_types: t.SqlType):
    """The per-record implementation of ``name`` for these argument types."""
    return default_registry().resolve(name, list(arg_types)).implementation()


def rtype(name: str, *arg_types: t.SqlType) -> t.SqlType:
    return default_registry().resolve(name, list(arg_types)).return_type


def b64(text: str) -> bytes:
    return base64.b64decode(text)


def failing(name: str, *arg_types: t.SqlType):
    """A call expected to raise (the engine turns it into NULL and a processing-log entry)."""
    impl = fn(name, *arg_types)

    def call(*args):
        with pytest.raises(Exception):
            impl(*args)

    return call


# ----------------------------------------------------------------------------- basic string
def test_case_trim_substring_as_string_json():
    lcase, ucase, trim, sub = fn("LCASE", S), fn("UCASE", S), fn("TRIM", S), fn("SUBSTRING", S, I, I)
    assert rtype("TRIM", S) == S and rtype("SUBSTRING", S, I, I) == S
    rows = {"lower": ("lower", "LOWER", "lower", "ower"),
            "MiXeD": ("mixed", "MIXED", "MiXeD", "iXeD"),
            " \t with white space \t": (" \t with white space \t", " \t WITH WHITE SPACE \t",
                                        "with white space", "\t wit"),
            "s": ("s", "S", "s", ""),
            "long enough": ("long enough", "LONG ENOUGH", "long enough", "ong e")}
    for text, expected in rows.items():
        assert (lcase(text), ucase(text), trim(text), sub(text, 2, 5)) == expected
    assert lcase(None) is None and trim(None) is None


def test_trim_strips_java_whitespace_only():
    # Java's trim() strips chars <= U+0020 (including control chars) but not U+00A0.
    assert fn("TRIM", S)("\x00\x1f a \n") == "a"
    assert fn("TRIM", S)("\xa0a\xa0") == "\xa0a\xa0"


def test_concat_skips_nulls_for_strings_and_bytes():
    concat = fn("CONCAT", S, S, S)
    assert concat("prefix-", "s1", "-postfix") == "prefix-s1-postfix"
    assert concat("'", None, "'") == "''"
    assert rtype("CONCAT", B, t.NULL, B) == B
    assert fn("CONCAT", B, t.NULL, B)(b64("eWVz"), None, b64("bm8=")) == b64("eWVzbm8=")
    assert fn("CONCAT", B, t.NULL, B)(b"", None, b64("bm8=")) == b64("bm8=")


def test_concat_ws():
    ws = fn("CONCAT_WS", S, S, S, S)
    assert ws("-", "a", None, "b") == "a-b"
    assert ws(None, "a", "b", "c") is None
    assert fn("CONCAT_WS", B, B, B)(b",", b"a", b"b") == b"a,b"


def test_len_counts_utf16_units_and_bytes():
    assert rtype("LEN", S) == I
    assert fn("LEN", S)("hello") == 5
    assert fn("LEN", S)("\U0001F600") == 2  # a surrogate pair in Java
    assert fn("LEN", B)(b"\x00\x01\x02") == 3
    assert fn("LEN", S)(None) is None


def test_substring_positions():
    sub2, sub3 = fn("SUBSTRING", S, I), fn("SUBSTRING", S, I, I)
    assert sub2("some_string", 6) == "string"
    assert sub2("some_string", None) is None
    assert sub2("abc", -2) == "bc"
    assert sub2("abc", -10) == "abc"
    assert sub3("abcdef", 0, 2) == "ab"  # position 0 behaves as 1
    assert sub3("abcdef", -3, 2) == "de"
    assert sub3("abcdef", 2, -1) == ""


def test_substring_bytes_as_substring_json():
    sub = fn("SUBSTRING", B, I)
    assert rtype("SUBSTRING", B, I) == B
    assert sub(b64("c29tZV9zdHJpbmc="), 6) == b64("c3RyaW5n")
    assert sub(b64("YW5vdGhlcg=="), 6) == b64("ZXI=")
    assert sub(b64("c2hvcnQ="), 6) == b""
    assert sub(None, 6) is None


def test_replace_as_replace_json():
    rep = fn("REPLACE", S, S, S)
    assert rep("anaconda", "a", "o") == "onocondo"
    assert rep("popcorn", "a", "o") == "popcorn"
    assert rep("anaconda", None, "o") is None
    assert rep("anaconda", "a", None) is None


# ------------------------------------------------------------------------------------ regex
def test_regexp_replace_as_replace_json():
    rr = fn("REGEXP_REPLACE", S, S, S)
    assert rr("baababaa", "(ab)+", "cat") == "bacataa"
    assert rr("baabbabaa", "(ab)+", "cat") == "bacatbcataa"
    assert rr(None, "(ab)+", "cat") is None
    assert rr("baababaa", None, "cat") is None


def test_regexp_replace_uses_java_group_references():
    rr = fn("REGEXP_REPLACE", S, S, S)
    assert rr("john smith", r"(\w+) (\w+)", "$2, $1") == "smith, john"
    assert rr("a.b", r"(?<first>a)\.", "${first}!") == "a!b"
    assert rr("cost", "cost", r"\$5") == "$5"
    # $12 with a single group is group 1 followed by a literal 2, as in Java.
    assert rr("ab", "(a)", "$12") == "a2b"
    failing("REGEXP_REPLACE", S, S, S)("ab", "(a)", "$2")
    failing("REGEXP_REPLACE", S, S, S)("ab", "(", "x")


def test_regexp_extract_as_regex_json():
    ex, ex_group = fn("REGEXP_EXTRACT", S, S), fn("REGEXP_EXTRACT", S, S, I)
    assert [ex("test.", s) for s in ("some_test_string", "anothertest", "testa", "nothing", None)] \
        == ["test_", None, "testa", None, None]
    nested = [ex(".*", ex_group("(.*) (.*)", s, 2)) for s in ("steven zhang", "agavra", None)]
    assert nested == ["zhang", None, None]


def test_regexp_extract_all_and_split_to_array():
    assert rtype("REGEXP_EXTRACT_ALL", S, S) == t.ArrayType(S)
    assert fn("REGEXP_EXTRACT_ALL", S, S)(r"\d+", "a1b22c333") == ["1", "22", "333"]
    assert fn("REGEXP_EXTRACT_ALL", S, S, I)(r"(\w)(\d)?", "a1b", 2) == ["1", None]
    assert fn("REGEXP_EXTRACT_ALL", S, S, I)(r"(\w)(\d)", "a1b2", 1) == ["a", "b"]
    split = fn("REGEXP_SPLIT_TO_ARRAY", S, S)
    assert split("a-b--c-", "-") == ["a", "b", "", "c", ""]
    assert split("abc", "") == ["a", "b", "c"]
    # Java also finds the empty match right after each digit run.
    assert split("a1b2c3", r"\d*") == ["a", "", "b", "", "c"]
    assert split(None, "-") is None


def test_java_regex_dialect():
    ex = fn("REGEXP_EXTRACT", S, S)
    assert ex(r"\p{Upper}+", "abcDEFg") == "DEF"
    assert ex(r"[\p{Digit}x]+", "ab1x2c") == "1x2"
    assert ex(r"\Qa.b\E", "xa.by") == "a.b"
    assert ex(r"\w+", "héllo") == "h"  # \w is ASCII-only in Java
    assert ex(r"(?<y>\d{4})-\k<y>", "2020-2020") == "2020-2020"
    assert ex(r"a\z", "ba") == "a"


# ------------------------------------------------------------------------------------ SPLIT
def test_split_as_split_json():
    split = fn("SPLIT", S, S)
    assert rtype("SPLIT", S, S) == t.ArrayType(S)
    assert split("a.b.c", ".") == ["a", "b", "c"]
    assert split(".abc.", ".") == ["", "abc", ""]
    assert split("..a..", ".") == ["", "", "a", "", ""]
    assert split("", ".") == [""]
    assert split("a$$b.c", "$$") == ["a", "b.c"]
    assert split("a.b", "") == ["a", ".", "b"]
    assert split("", "") == [""]


def test_split_bytes_as_split_json():
    split = fn("SPLIT", B, B)
    assert rtype("SPLIT", B, B) == t.ArrayType(B)
    assert split(b64("LmFiYy4="), b".") == [b"", b"abc", b""]
    assert split(b64("LiQkYS4u"), b"$$") == [b".", b"a.."]
    assert split(b"abc", b"") == [b"a", b"b", b"c"]
    assert split(b"", b"") == [b""]


def test_split_to_map_as_split_to_map_json():
    stm = fn("SPLIT_TO_MAP", S, S, S)
    assert rtype("SPLIT_TO_MAP", S, S, S) == t.MapType(S, S)
    text = "apple:green/banana:yellow/cherry:red"
    assert stm(text, "/", ":") == {"apple": "green", "banana": "yellow", "cherry": "red"}
    assert stm(text, "&&", ":") == {"apple": "green/banana"}
    assert stm("apple:green//banana:yellow//cherry:red/", "/", ":") == \
        {"apple": "green", "banana": "yellow", "cherry": "red"}
    assert stm(text, "/", "=") == {}
    assert [stm(text, "", ":"), stm(text, "/", ""), stm(text, None, ":"), stm(None, "/", ":")] == \
        [None, None, None, None]
    assert stm("", "/", ":") == {}


# ------------------------------------------------------------------------------- LPAD, RPAD
def test_lpad_strings_as_string_lpad_rpad_json():
    lpad = fn("LPAD", S, I, S)
    assert lpad("foo", 7, "Bar") == "BarBfoo"
    assert lpad("foo", 5, "Bar") == "Bafoo"
    assert lpad("foo", 2, "Bar") == "fo"
    assert lpad("foo", -1, "Bar") is None
    assert lpad("foo", 5, None) is None
    assert lpad("foo", None, "Bar") is None
    assert lpad(None, -5, "Bar") is None
    assert lpad("foo", 7, "") is None
    assert lpad("", 7, "Bar") == "BarBarB"


def test_rpad():
    rpad = fn("RPAD", S, I, S)
    assert rpad("foo", 7, "Bar") == "fooBarB"
    assert rpad("foo", 2, "Bar") == "fo"
    assert rpad("foo", 7, "") is None
    assert fn("RPAD", B, I, B)(b"yes", 5, b"no") == b"yesno"


def test_lpad_bytes_as_bytes_lpad_rpad_json():
    lpad = fn("LPAD", B, I, B)
    assert rtype("LPAD", B, I, B) == B
    subject, pad = b64("eWVz"), b64("bm8=")
    assert lpad(subject, 8, pad) == b64("bm9ub255ZXM=")
    assert lpad(subject, 5, pad) == b64("bm95ZXM=")
    assert lpad(subject, 3, pad) == subject
    assert lpad(subject, 2, pad) == b64("eWU=")
    assert lpad(subject, 0, pad) == b""
    assert lpad(subject, -1, pad) is None
    assert lpad(subject, 3, b"") is None
    assert lpad(None, 8, pad) is None


# ------------------------------------------------------------------------------------ INSTR
def test_instr_as_instr_json():
    instr2, instr4 = fn("INSTR", S, S), fn("INSTR", S, S, I, I)
    assert rtype("INSTR", S, S) == I
    assert [instr2(s, "or") for s in ("corporate floor", "should I stay or should I go",
                                      "short", "no substring")] == [2, 15, 3, 0]
    assert instr4("corporate floor", "or", 4, 2) == 14
    assert instr4("short", "or", 4, 2) == 0
    assert instr4("corporate floor", "or", -4, 2) == 2
    assert instr4("short", "or", -4, 2) == 0
    assert fn("INSTR", S, S, I)("corporate floor", "or", 3) == 5


# ---------------------------------------------------------------------------------- INITCAP
def test_initcap_as_initcap_json():
    initcap = fn("INITCAP", S)
    assert initcap("some_string") == "Some_string"
    assert initcap("the   Quick br0wn fOx") == "The   Quick Br0wn Fox"
    assert initcap("") == ""
    assert initcap(None) is None


# ------------------------------------------------------------------------------------- MASK
def test_mask_family():
    assert fn("MASK", S)("My Test $123") == "Xx-Xxxx--nnn"
    assert fn("MASK", S, S, S, S, S)("My Test $123", "*", None, "1", None) == "*y *est $111"
    assert fn("MASK_LEFT", S, I)("AbCd12", 3) == "XxXd12"
    assert fn("MASK_RIGHT", S, I)("AbCd12", 3) == "AbCxnn"
    assert fn("MASK_KEEP_LEFT", S, I)("AbCd12", 3) == "AbCxnn"
    assert fn("MASK_KEEP_RIGHT", S, I)("AbCd12", 3) == "XxXd12"
    assert fn("MASK_LEFT", S, I)("ab", 10) == "xx"
    assert fn("MASK", S)("Ünï") == "Xxx"
    assert fn("MASK", S)(None) is None
    failing("MASK_LEFT", S, I)("abc", -1)
    failing("MASK", S, S, S, S, S)("abc", "XX", "x", "n", "-")


# ------------------------------------------------------------------------------- CHR, misc
def test_chr_as_chr_json():
    chr_int, chr_str = fn("CHR", I), fn("CHR", S)
    assert [chr_int(c) for c in (75, 22909, -1, None)] == ["K", "\u597d", None, None]
    assert chr_int(99000) == "\U000182b8"
    concat = fn("CONCAT", S, S, S, S)
    assert concat(chr_str("\\u004b"), chr_str("\\u0053"), chr_int(81), chr_int(76)) == "KSQL"
    assert chr_str("K") is None and chr_str(None) is None


def test_uuid():
    pattern = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
    assert pattern.fullmatch(fn("UUID")())
    raw = bytes(range(16))
    assert fn("UUID", B)(raw) == "00010203-0405-0607-0809-0a0b0c0d0e0f"
    assert fn("UUID", B)(b"short") is None


def test_elt_and_field_as_elt_field_json():
    elt, field = fn("ELT", I, S, S), fn("FIELD", S, S, S)
    assert elt(2, "ignored", "something") == "something"
    assert elt(2, "ignored", None) is None
    assert elt(0, "a", "b") is None and elt(3, "a", "b") is None
    for a, b, expected in (("hello", "world", "hello"), (None, "world", None),
                           ("world", "hello", "hello"), (None, None, None)):
        assert elt(field("hello", a, b), a, b) == expected
    assert rtype("FIELD", S, S, S) == I
    assert field(None, "a") == 0


def test_encode_as_encode_json():
    enc = fn("ENCODE", S, S, S)
    assert [enc("Example!", "ascii", o) for o in ("hex", "utf8", "base64")] == \
        ["4578616d706c6521", "Example!", "RXhhbXBsZSE="]
    assert [enc("Ελλάδα", "ascii", o) for o in ("hex", "utf8", "base64")] == \
        ["3f3f3f3f3f3f", "??????", "Pz8/Pz8/"]
    assert [enc("zpXOu867zqzOtM6x", "base64", o) for o in ("hex", "utf8", "ascii")] == \
        ["ce95cebbcebbceacceb4ceb1", "Ελλάδα", "\ufffd" * 12]
    assert enc(None, "ascii", "hex") is None
    failing("ENCODE", S, S, S)("RXhhbXBsZSE=", "base64", "null")


def test_unknown_function_and_bad_arguments_are_rejected():
    with pytest.raises(KsqlStatementException, match="does not accept parameters"):
        default_registry().resolve("UCASE", [I])


def test_padding_to_a_huge_length_fails_instead_of_taking_the_memory() -> None:
    from streamsql.functions.string import lpad, rpad

    for fn in (lpad, rpad):
        with pytest.raises(ValueError, match="over the limit"):
            fn("a", 2**31 - 1, "x")
        assert fn("a", 3, "x") in ("xxa", "axx")

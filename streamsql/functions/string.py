"""String functions (with their BYTES twins where ksqlDB has them): CONCAT, CONCAT_WS, UCASE,
LCASE, TRIM, LEN, SUBSTRING, REPLACE, the REGEXP_* family, SPLIT, SPLIT_TO_MAP, LPAD, RPAD,
INSTR, INITCAP, the MASK family, CHR, UUID, ELT, FIELD and ENCODE.

Semantics follow ksqlDB's UDFs, which are Java: regular expressions are Java patterns
(translated by ``java_regex`` to RE2, which cannot backtrack catastrophically, and to Python
``re`` syntax for the few that need a backtracking engine: see ``safe_regex``), REGEXP_REPLACE
takes Java replacement strings (``$1``), TRIM strips Java's whitespace (every char <= U+0020),
LEN counts UTF-16 code units.
"""
from __future__ import annotations

import re
import unicodedata
import uuid as _uuid
from functools import lru_cache
from typing import AnyStr, Callable

from streamsql.functions.bytes import BYTES_ENCODERS, STRING_DECODERS
from streamsql.functions.registry import MAX_RESULT_SIZE, udf
from streamsql.functions.safe_regex import SafePattern

# ----------------------------------------------------------------------------- Java regexes
_POSIX_CLASSES = {
    "Lower": "a-z", "Upper": "A-Z", "ASCII": "\\x00-\\x7f", "Alpha": "a-zA-Z", "Digit": "0-9",
    "Alnum": "a-zA-Z0-9", "Punct": "!-/:-@\\[-`{-~", "Graph": "!-~", "Print": " -~",
    "Blank": " \\t", "Cntrl": "\\x00-\\x1f\\x7f", "XDigit": "0-9a-fA-F",
    "Space": " \\t\\n\\x0b\\f\\r",
}
_JAVA_ESCAPES = {
    "z": "\\Z",
    "Z": "(?=\\n?\\Z)",
    # Non-ASCII characters literally: RE2 has no \u escape.
    "h": "[ \\t\\xa0\u1680\u180e\u2000-\u200a\u202f\u205f\u3000]",
    "v": "[\\n\\x0b\\f\\r\\x85\u2028\u2029]",
    "R": "(?:\\r\\n|[\\n\\x0b\\f\\r\\x85\u2028\u2029])",
    "e": "\\x1b",
}
_INLINE_FLAGS = re.compile(r"\(\?([a-zA-Z]*(?:-[a-zA-Z]*)?)([:)])")


def _property_class(name: str) -> str:
    """The body of a character class for Java's \\p{name} (POSIX classes only)."""
    for prefix in ("Is", ""):
        if name.startswith(prefix) and name[len(prefix):] in _POSIX_CLASSES:
            return _POSIX_CLASSES[name[len(prefix):]]
    raise re.error(f"unsupported character property \\p{{{name}}}")


# RE2's \s lacks \x0b (VT), which Java's has; its POSIX class has it.
_RE2_SPACE = {"s": ("[[:space:]]", "[:space:]"), "S": ("[^[:space:]]", "[:^space:]")}


def _translate_java_regex(pattern: str, re2: bool = False) -> str:
    """Rewrite the Java-only parts of a regex into Python ``re`` syntax, or RE2's (``re2``).

    Constructs RE2 lacks (lookaround, backreferences) are left for RE2 to reject: the pattern
    then runs on the budgeted fallback engine (see ``safe_regex``).
    """
    out: list[str] = []
    i, n = 0, len(pattern)
    in_class = False
    while i < n:
        c = pattern[i]
        if c == "\\":
            if i + 1 >= n:
                raise re.error("unexpected end of pattern after \\")
            d = pattern[i + 1]
            if d == "Q":
                end = pattern.find("\\E", i + 2)
                literal = pattern[i + 2:] if end < 0 else pattern[i + 2:end]
                out.append(re.escape(literal))
                i = n if end < 0 else end + 2
                continue
            if d in "pP":
                if i + 2 >= n:
                    raise re.error("bad \\p escape")
                if pattern[i + 2] == "{":
                    end = pattern.find("}", i + 3)
                    if end < 0:
                        raise re.error("unclosed \\p{")
                    name, i = pattern[i + 3:end], end + 1
                else:
                    name, i = pattern[i + 2], i + 3
                body = _property_class(name)
                if in_class:
                    if d == "P":
                        raise re.error("\\P inside a character class is not supported")
                    out.append(body)
                else:
                    out.append(("[^" if d == "P" else "[") + body + "]")
                continue
            if d == "k" and pattern.startswith("<", i + 2):
                end = pattern.find(">", i + 3)
                if end < 0:
                    raise re.error("unclosed \\k<")
                out.append(f"(?P={pattern[i + 3:end]})")
                i = end + 1
                continue
            if d == "x" and pattern.startswith("{", i + 2):
                end = pattern.find("}", i + 3)
                if end < 0:
                    raise re.error("unclosed \\x{")
                try:
                    code = int(pattern[i + 3:end], 16)
                except ValueError:
                    raise re.error("illegal hexadecimal escape sequence") from None
                out.append(f"\\x{{{code:x}}}" if re2 else f"\\U{code:08x}")
                i = end + 1
                continue
            if d == "0":
                # Java: \0n, \0nn, \0mnn (octal); Python's \0 takes at most two more digits.
                j = i + 2
                while j < n and j < i + 5 and pattern[j] in "01234567":
                    j += 1
                digits = pattern[i + 2:j]
                if len(digits) == 3 and digits[0] > "3":
                    digits, j = digits[:2], j - 1
                if not digits:
                    raise re.error("illegal octal escape")
                out.append(f"\\x{int(digits, 8):02x}")
                i = j
                continue
            if d == "c" and i + 2 < n:
                out.append(re.escape(chr(ord(pattern[i + 2]) ^ 64)))
                i += 3
                continue
            if d == "C":  # Java has no \C; RE2's would match half a UTF-8 character
                raise re.error("bad escape \\C")
            if re2 and d == "z":
                out.append("\\z")  # Python calls the end of the text \Z, RE2 \z
            elif re2 and d in _RE2_SPACE:
                out.append(_RE2_SPACE[d][in_class])
            elif not in_class and d in _JAVA_ESCAPES:
                out.append(_JAVA_ESCAPES[d])
            else:
                out.append(c + d)
            i += 2
            continue
        if in_class:
            if c == "]":
                in_class = False
            # re reads '[' in a class as a literal, RE2 maybe as a POSIX class ([:alpha:]).
            out.append("\\[" if re2 and c == "[" else c)
            i += 1
            continue
        if c == "[":
            in_class = True
            out.append(c)
            i += 1
            # A ']' right after '[' or '[^' is a literal in both dialects.
            if i < n and pattern[i] == "^":
                out.append("^")
                i += 1
            if i < n and pattern[i] == "]":
                out.append("\\]")
                i += 1
            continue
        if c == "(" and pattern.startswith("(?", i):
            if pattern.startswith("(?<", i) and not pattern.startswith(("(?<=", "(?<!"), i):
                out.append("(?P<")
                i += 3
                continue
            m = _INLINE_FLAGS.match(pattern, i)
            if m:
                # Java-only flags: d (UNIX_LINES), u (UNICODE_CASE), U (UNICODE_CHARACTER_CLASS).
                flags = "".join(f for f in m.group(1) if f not in "duU")
                if flags.strip("-"):
                    out.append(f"(?{flags}{m.group(2)}")
                elif m.group(2) == ":":
                    out.append("(?:")
                i = m.end()
                continue
        out.append(c)
        i += 1
    return "".join(out)


@lru_cache(maxsize=512)
def java_regex(pattern: str) -> SafePattern:
    """Compile a Java regular expression (cached: patterns are usually constants).

    Compiled with re.ASCII because Java's \\w, \\d, \\s, \\b and (?i) are ASCII-only by default
    (RE2's \\w, \\d, \\s and \\b are ASCII-only too).
    """
    python = _translate_java_regex(pattern)  # raises re.error for what neither can read
    return SafePattern(python, re.ASCII, re2_pattern=_translate_java_regex(pattern, re2=True),
                       source=pattern)


@lru_cache(maxsize=512)
def _java_replacement(pattern: str, replacement: str) -> tuple[str | int, ...]:
    """Parse a Java Matcher.replaceAll replacement ($n, ${name}, \\x) into literal text (str)
    and group numbers (int)."""
    if "$" not in replacement and "\\" not in replacement:
        return (replacement,)
    compiled = java_regex(pattern)
    groups = compiled.groups
    out: list[str | int] = []
    i, n = 0, len(replacement)
    while i < n:
        c = replacement[i]
        if c == "\\":
            i += 1
            if i >= n:
                raise ValueError("character to be escaped is missing")
            out.append(replacement[i])
            i += 1
        elif c == "$":
            i += 1
            if i >= n:
                raise ValueError("Illegal group reference: group index is missing")
            if replacement[i] == "{":
                end = replacement.find("}", i)
                if end < 0:
                    raise ValueError("named capturing group is missing trailing '}'")
                name = replacement[i + 1:end]
                if name not in compiled.groupindex:
                    raise IndexError(f"No group with name {{{name}}}")
                out.append(compiled.groupindex[name])
                i = end + 1
                continue
            if not replacement[i].isdigit():
                raise ValueError("Illegal group reference")
            # Java keeps taking digits while the number still names an existing group.
            ref = int(replacement[i])
            i += 1
            while i < n and replacement[i].isdigit() and ref * 10 + int(replacement[i]) <= groups:
                ref = ref * 10 + int(replacement[i])
                i += 1
            if ref > groups:
                raise IndexError(f"No group {ref}")
            out.append(ref)
        else:
            out.append(c)
            i += 1
    return tuple(out)


def _java_replace_all(regex: SafePattern, template: tuple[str | int, ...], text: str) -> str:
    """java.util.regex.Matcher.replaceAll: each match replaced by the template's text, its
    group numbers standing for what they captured (nothing for a group that did not take
    part)."""
    out: list[str] = []
    index = 0
    for m in regex.finditer(text):
        out.append(text[index:m.start()])
        for piece in template:
            out.append(piece if isinstance(piece, str) else (m.group(piece) or ""))
        index = m.end()
    out.append(text[index:])
    return "".join(out)


def _java_split(regex: SafePattern, text: str) -> list[str]:
    """java.util.regex.Pattern.split(text) with limit 0."""
    parts: list[str] = []
    index = 0
    for m in regex.finditer(text):
        start, end = m.span()
        if index == 0 and start == 0 and end == 0:
            continue  # no leading empty string for a zero-width match at the start
        parts.append(text[index:start])
        index = end
    if index == 0:
        return [text]
    parts.append(text[index:])
    while parts and not parts[-1]:
        parts.pop()
    return parts


# ------------------------------------------------------------------------------- CONCAT & co
@udf("CONCAT", "STRING", [("inputs", "STRING")], variadic=True)
def concat(*inputs: str | None) -> str:
    """Concatenates the given strings (or BYTES); NULL inputs are skipped."""
    return "".join([s for s in inputs if s is not None])


@udf("CONCAT", "BYTES", [("inputs", "BYTES")], variadic=True)
def concat_bytes(*inputs: bytes | None) -> bytes:
    """Concatenates the given BYTES values; NULL inputs are skipped."""
    return b"".join([s for s in inputs if s is not None])


@udf("CONCAT_WS", "STRING", [("separator", "STRING"), ("inputs", "STRING")], variadic=True)
def concat_ws(separator: str | None, *inputs: str | None) -> str | None:
    """Concatenates the inputs with the separator between them; NULL inputs are skipped and a
    NULL separator gives NULL."""
    if separator is None:
        return None
    return separator.join([s for s in inputs if s is not None])


@udf("CONCAT_WS", "BYTES", [("separator", "BYTES"), ("inputs", "BYTES")], variadic=True)
def concat_ws_bytes(separator: bytes | None, *inputs: bytes | None) -> bytes | None:
    """Concatenates BYTES inputs with the separator between them; NULL inputs are skipped."""
    if separator is None:
        return None
    return separator.join([s for s in inputs if s is not None])


@udf("UCASE", "STRING", [("input", "STRING")])
def ucase(value: str | None) -> str | None:
    """Converts a string to upper case."""
    return None if value is None else value.upper()


@udf("LCASE", "STRING", [("input", "STRING")])
def lcase(value: str | None) -> str | None:
    """Converts a string to lower case."""
    return None if value is None else value.lower()


# Java's String.trim() strips every char <= U+0020, and nothing else.
_JAVA_TRIM = "".join(chr(c) for c in range(0x21))


@udf("TRIM", "STRING", [("input", "STRING")])
def trim(value: str | None) -> str | None:
    """Removes leading and trailing whitespace (control characters and spaces)."""
    return None if value is None else value.strip(_JAVA_TRIM)


@udf("LEN", "INTEGER", [("input", "STRING")])
def length(value: str | None) -> int | None:
    """The length of a string (in UTF-16 code units, as Java counts)."""
    if value is None:
        return None
    if value.isascii():
        return len(value)
    return len(value.encode("utf-16-le", "surrogatepass")) // 2


@udf("LEN", "INTEGER", [("input", "BYTES")])
def length_bytes(value: bytes | None) -> int | None:
    """The number of bytes in a BYTES value."""
    return None if value is None else len(value)


def _substring_start(size: int, pos: int) -> int:
    return min(max(pos - 1, 0), size) if pos >= 0 else max(size + pos, 0)


@udf("SUBSTRING", "BYTES", [("bytes", "BYTES"), ("pos", "INTEGER")])
@udf("SUBSTRING", "STRING", [("str", "STRING"), ("pos", "INTEGER")])
def substring(value: AnyStr | None, pos: int | None) -> AnyStr | None:
    """The part of a string (or BYTES) from 1-based position pos to the end; a negative pos
    counts from the end."""
    if value is None or pos is None:
        return None
    return value[_substring_start(len(value), pos):]


@udf("SUBSTRING", "BYTES", [("bytes", "BYTES"), ("pos", "INTEGER"), ("length", "INTEGER")])
@udf("SUBSTRING", "STRING", [("str", "STRING"), ("pos", "INTEGER"), ("length", "INTEGER")])
def substring_len(value: AnyStr | None, pos: int | None, size: int | None) -> AnyStr | None:
    """The part of a string (or BYTES) of at most length characters from 1-based position pos;
    a negative pos counts from the end."""
    if value is None or pos is None or size is None:
        return None
    total = len(value)
    start = _substring_start(total, pos)
    end = max(min(start + size, total), start)
    return value[start:end]


@udf("REPLACE", "STRING", [("str", "STRING"), ("target", "STRING"), ("replacement", "STRING")])
def replace(value: str | None, target: str | None, replacement: str | None) -> str | None:
    """Replaces every occurrence of target in str with replacement."""
    if value is None or target is None or replacement is None:
        return None
    return value.replace(target, replacement)


# ----------------------------------------------------------------------------------- REGEXP
@udf("REGEXP_EXTRACT", "STRING", [("pattern", "STRING"), ("input", "STRING")])
def regexp_extract(pattern: str | None, value: str | None) -> str | None:
    """The first substring of input that matches the (Java) regular expression, or NULL."""
    if pattern is None or value is None:
        return None
    m = java_regex(pattern).search(value)
    return None if m is None else m.group(0)


@udf("REGEXP_EXTRACT", "STRING",
     [("pattern", "STRING"), ("input", "STRING"), ("group", "INTEGER")])
def regexp_extract_group(pattern: str | None, value: str | None, group: int | None) -> str | None:
    """The given capturing group of the first match of the regular expression in input."""
    if pattern is None or value is None or group is None:
        return None
    m = java_regex(pattern).search(value)
    return None if m is None else m.group(group)


@udf("REGEXP_EXTRACT_ALL", "ARRAY<STRING>", [("pattern", "STRING"), ("input", "STRING")])
def regexp_extract_all(pattern: str | None, value: str | None) -> list[str] | None:
    """Every substring of input that matches the regular expression."""
    if pattern is None or value is None:
        return None
    return [m.group(0) for m in java_regex(pattern).finditer(value)]


@udf("REGEXP_EXTRACT_ALL", "ARRAY<STRING>",
     [("pattern", "STRING"), ("input", "STRING"), ("group", "INTEGER")])
def regexp_extract_all_group(pattern: str | None, value: str | None,
                             group: int | None) -> list[str | None] | None:
    """The given capturing group of every match of the regular expression in input."""
    if pattern is None or value is None or group is None:
        return None
    return [m.group(group) for m in java_regex(pattern).finditer(value)]


@udf("REGEXP_REPLACE", "STRING",
     [("input", "STRING"), ("regex", "STRING"), ("replacement", "STRING")])
def regexp_replace(value: str | None, regex: str | None, replacement: str | None) -> str | None:
    """Replaces every match of the regular expression in input; the replacement may refer to
    groups as $1 or ${name}."""
    if value is None or regex is None or replacement is None:
        return None
    return _java_replace_all(java_regex(regex), _java_replacement(regex, replacement), value)


@udf("REGEXP_SPLIT_TO_ARRAY", "ARRAY<STRING>", [("input", "STRING"), ("regex", "STRING")])
def regexp_split_to_array(value: str | None, regex: str | None) -> list[str] | None:
    """Splits input around matches of the regular expression, keeping empty parts."""
    if value is None or regex is None:
        return None
    compiled = java_regex(regex)
    if not regex or compiled.fullmatch("") is not None:
        # A pattern that matches the empty string splits like Java's String.split.
        return _java_split(compiled, value)
    parts: list[str] = []
    index = 0
    for m in compiled.finditer(value):
        parts.append(value[index:m.start()])
        index = m.end()
    parts.append(value[index:])
    return parts


# ------------------------------------------------------------------------------------ SPLIT
@udf("SPLIT", "ARRAY<STRING>", [("input", "STRING"), ("delimiter", "STRING")])
def split(value: str | None, delimiter: str | None) -> list[str] | None:
    """Splits input around the delimiter, keeping empty parts; an empty delimiter splits into
    characters."""
    if value is None or delimiter is None:
        return None
    if not delimiter:
        return list(value) if value else [""]
    return value.split(delimiter)


@udf("SPLIT", "ARRAY<BYTES>", [("input", "BYTES"), ("delimiter", "BYTES")])
def split_bytes(value: bytes | None, delimiter: bytes | None) -> list[bytes] | None:
    """Splits BYTES around the delimiter, keeping empty parts; an empty delimiter splits into
    single bytes."""
    if value is None or delimiter is None:
        return None
    if not delimiter:
        return [value[i:i + 1] for i in range(len(value))] if value else [b""]
    return value.split(delimiter)


@udf("SPLIT_TO_MAP", "MAP<STRING, STRING>",
     [("input", "STRING"), ("entryDelimiter", "STRING"), ("kvDelimiter", "STRING")])
def split_to_map(value: str | None, entry_delim: str | None,
                 kv_delim: str | None) -> dict[str, str] | None:
    """Splits input into entries at entryDelimiter and each entry into key and value at
    kvDelimiter; entries without kvDelimiter are dropped, later duplicate keys win."""
    if value is None or entry_delim is None or kv_delim is None:
        return None
    if not entry_delim or not kv_delim or entry_delim == kv_delim:
        return None
    result: dict[str, str] = {}
    for entry in value.split(entry_delim):
        if kv_delim in entry:
            parts = entry.split(kv_delim, 2)
            result[parts[0]] = parts[1]
    return result


# ------------------------------------------------------------------------------- LPAD, RPAD
def _pad_args_ok(value: AnyStr | None, size: int | None, padding: AnyStr | None) -> bool:
    if size is not None and size > MAX_RESULT_SIZE:
        raise ValueError(f"length {size} is over the limit of {MAX_RESULT_SIZE}")
    return value is not None and size is not None and size >= 0 and bool(padding)


@udf("LPAD", "BYTES", [("input", "BYTES"), ("length", "INTEGER"), ("padding", "BYTES")])
@udf("LPAD", "STRING", [("input", "STRING"), ("length", "INTEGER"), ("padding", "STRING")])
def lpad(value: AnyStr | None, size: int | None, padding: AnyStr | None) -> AnyStr | None:
    """Pads input on the left with padding (repeated) to length; truncates input that is longer
    than length. NULL for a negative length or empty padding."""
    if not _pad_args_ok(value, size, padding):
        return None
    missing = size - len(value)
    if missing <= 0:
        return value[:size]
    return (padding * (missing // len(padding) + 1))[:missing] + value


@udf("RPAD", "BYTES", [("input", "BYTES"), ("length", "INTEGER"), ("padding", "BYTES")])
@udf("RPAD", "STRING", [("input", "STRING"), ("length", "INTEGER"), ("padding", "STRING")])
def rpad(value: AnyStr | None, size: int | None, padding: AnyStr | None) -> AnyStr | None:
    """Pads input on the right with padding (repeated) to length; truncates input that is longer
    than length. NULL for a negative length or empty padding."""
    if not _pad_args_ok(value, size, padding):
        return None
    missing = size - len(value)
    if missing <= 0:
        return value[:size]
    return value + (padding * (missing // len(padding) + 1))[:missing]


# ------------------------------------------------------------------------------------ INSTR
@udf("INSTR", "INTEGER", [("str", "STRING"), ("substring", "STRING")])
@udf("INSTR", "INTEGER", [("str", "STRING"), ("substring", "STRING"), ("position", "INTEGER")])
@udf("INSTR", "INTEGER", [("str", "STRING"), ("substring", "STRING"), ("position", "INTEGER"),
                          ("occurrence", "INTEGER")])
def instr(value: str | None, sub: str | None, position: int = 1, occurrence: int = 1) -> int:
    """The 1-based position of the occurrence-th match of substring in str, searching from
    position (backwards from the end when position is negative); 0 when not found."""
    if value is None or sub is None:
        return 0
    if position is None or occurrence is None:
        raise ValueError("INSTR position and occurrence must not be null")
    if position < 0:
        idx = len(value) + position + 1  # one past the last start index allowed
        for _ in range(occurrence):
            if idx <= 0:
                return 0
            idx = value.rfind(sub, 0, idx - 1 + len(sub))
            if idx < 0:
                return 0
        return idx + 1
    idx = max(position - 1, 0) - 1
    for _ in range(occurrence):
        idx = value.find(sub, idx + 1)
        if idx < 0:
            return 0
    return idx + 1


# ---------------------------------------------------------------------------------- INITCAP
# Java's \s: ASCII whitespace only.
_WORD = re.compile(r"[^ \t\n\x0b\f\r]+[ \t\n\x0b\f\r]*")


@udf("INITCAP", "STRING", [("input", "STRING")])
def initcap(value: str | None) -> str | None:
    """Capitalizes the first letter of each word and lower-cases the rest (leading whitespace
    is dropped, as in ksqlDB)."""
    if value is None:
        return None
    return "".join(w[:1].upper() + w[1:] for w in _WORD.findall(value.lower()))


# ------------------------------------------------------------------------------------- MASK
_NO_MASK = None


def _mask_char(replacement: str | None, default: str) -> str | None:
    if replacement is None:
        return _NO_MASK
    if len(replacement) != 1:
        raise ValueError("Replacement strings must be exactly one character long, got: "
                         f"'{replacement}' (default is '{default}')")
    return replacement


@lru_cache(maxsize=64)
def _masker(upper: str | None, lower: str | None, digit: str | None,
            other: str | None) -> Callable[[str], str]:
    """A function masking a string with the given replacement chars (None = keep as is)."""
    up = _mask_char(upper, "X")
    lo = _mask_char(lower, "x")
    dg = _mask_char(digit, "n")
    ot = _mask_char(other, "-")
    table: dict[int, str] = {}
    for code in range(128):
        ch = chr(code)
        if "A" <= ch <= "Z":
            rep = up
        elif "a" <= ch <= "z":
            rep = lo
        elif "0" <= ch <= "9":
            rep = dg
        else:
            rep = ot
        if rep is not None:
            table[code] = rep

    def slow(ch: str) -> str:
        cat = unicodedata.category(ch)
        rep = up if cat == "Lu" else lo if cat == "Ll" else dg if cat == "Nd" else ot
        return ch if rep is None else rep

    def mask(text: str) -> str:
        if text.isascii():
            return text.translate(table)
        return "".join(slow(ch) for ch in text)

    return mask


def _check_count(fn: str, count: int | None) -> int:
    if count is None or count < 0:
        raise ValueError(f"function {fn} requires a non-negative number")
    return count


@udf("MASK", "STRING", [("input", "STRING")])
@udf("MASK", "STRING", [("input", "STRING"), ("upper", "STRING"), ("lower", "STRING"),
                        ("digit", "STRING"), ("other", "STRING")])
def mask(value: str | None, upper: str | None = "X", lower: str | None = "x",
         digit: str | None = "n", other: str | None = "-") -> str | None:
    """Masks every character: upper-case letters with 'X', lower-case with 'x', digits with
    'n', anything else with '-'; pass replacement characters to override (NULL keeps that
    kind of character unmasked)."""
    if value is None:
        return None
    return _masker(upper, lower, digit, other)(value)


@udf("MASK_KEEP_LEFT", "STRING", [("input", "STRING"), ("numChars", "INTEGER")])
@udf("MASK_KEEP_LEFT", "STRING", [("input", "STRING"), ("numChars", "INTEGER"),
                                  ("upper", "STRING"), ("lower", "STRING"),
                                  ("digit", "STRING"), ("other", "STRING")])
def mask_keep_left(value: str | None, count: int | None, upper: str | None = "X",
                   lower: str | None = "x", digit: str | None = "n",
                   other: str | None = "-") -> str | None:
    """Masks all but the first numChars characters (see MASK)."""
    if value is None:
        return None
    n = _check_count("mask_keep_left", count)
    return value[:n] + _masker(upper, lower, digit, other)(value[n:])


@udf("MASK_KEEP_RIGHT", "STRING", [("input", "STRING"), ("numChars", "INTEGER")])
@udf("MASK_KEEP_RIGHT", "STRING", [("input", "STRING"), ("numChars", "INTEGER"),
                                   ("upper", "STRING"), ("lower", "STRING"),
                                   ("digit", "STRING"), ("other", "STRING")])
def mask_keep_right(value: str | None, count: int | None, upper: str | None = "X",
                    lower: str | None = "x", digit: str | None = "n",
                    other: str | None = "-") -> str | None:
    """Masks all but the last numChars characters (see MASK)."""
    if value is None:
        return None
    n = _check_count("mask_keep_right", count)
    cut = max(len(value) - n, 0)
    return _masker(upper, lower, digit, other)(value[:cut]) + value[cut:]


@udf("MASK_LEFT", "STRING", [("input", "STRING"), ("numChars", "INTEGER")])
@udf("MASK_LEFT", "STRING", [("input", "STRING"), ("numChars", "INTEGER"),
                             ("upper", "STRING"), ("lower", "STRING"),
                             ("digit", "STRING"), ("other", "STRING")])
def mask_left(value: str | None, count: int | None, upper: str | None = "X",
              lower: str | None = "x", digit: str | None = "n",
              other: str | None = "-") -> str | None:
    """Masks the first numChars characters (see MASK)."""
    if value is None:
        return None
    n = _check_count("mask_left", count)
    return _masker(upper, lower, digit, other)(value[:n]) + value[n:]


@udf("MASK_RIGHT", "STRING", [("input", "STRING"), ("numChars", "INTEGER")])
@udf("MASK_RIGHT", "STRING", [("input", "STRING"), ("numChars", "INTEGER"),
                              ("upper", "STRING"), ("lower", "STRING"),
                              ("digit", "STRING"), ("other", "STRING")])
def mask_right(value: str | None, count: int | None, upper: str | None = "X",
               lower: str | None = "x", digit: str | None = "n",
               other: str | None = "-") -> str | None:
    """Masks the last numChars characters (see MASK)."""
    if value is None:
        return None
    n = _check_count("mask_right", count)
    cut = max(len(value) - n, 0)
    return value[:cut] + _masker(upper, lower, digit, other)(value[cut:])


# ------------------------------------------------------------------------------ CHR, UUID &c
@udf("CHR", "STRING", [("decimalCode", "INTEGER")])
def chr_code(code: int | None) -> str | None:
    """The character with the given Unicode code point; NULL for an invalid code point."""
    if code is None or not 0 <= code <= 0x10FFFF:
        return None
    return chr(code)


_JAVA_UNESCAPE = re.compile(r"\\(u+[0-9a-fA-F]{4}|u+|[0-3][0-7]{0,2}|[4-7][0-7]?|[btnfr\"'\\])")
_SIMPLE_UNESCAPES = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r",
                     '"': '"', "'": "'", "\\": "\\"}


def _unescape_one(m: re.Match[str]) -> str:
    esc = m.group(1)
    if esc[0] == "u":
        digits = esc.lstrip("u")
        if len(digits) != 4:
            raise ValueError(f"Less than 4 hex digits in unicode value: '{m.group(0)}'")
        return chr(int(digits, 16))
    if esc[0] in "01234567":
        return chr(int(esc, 8))
    return _SIMPLE_UNESCAPES[esc]


@udf("CHR", "STRING", [("utf16Code", "STRING")])
def chr_utf16(code: str | None) -> str | None:
    """The character for a UTF-16 escape such as '\\u004b' (Java escapes are unescaped);
    NULL if the input does not start with one."""
    if code is None or len(code) < 6 or not code.startswith("\\u"):
        return None
    return _JAVA_UNESCAPE.sub(_unescape_one, code)


@udf("UUID", "STRING")
def uuid() -> str:
    """A random (version 4) UUID string."""
    return str(_uuid.uuid4())


@udf("UUID", "STRING", [("bytes", "BYTES")])
def uuid_from_bytes(value: bytes | None) -> str | None:
    """The UUID string for a 16-byte BYTES value; NULL if there are fewer than 16 bytes."""
    if value is None or len(value) < 16:
        return None
    return str(_uuid.UUID(bytes=bytes(value[:16])))


@udf("ELT", "STRING", [("n", "INTEGER"), ("args", "STRING")], variadic=True)
def elt(n: int | None, *args: str | None) -> str | None:
    """The n-th (1-based) of the remaining arguments; NULL when n is out of range."""
    if n is None or n < 1 or n > len(args):
        return None
    return args[n - 1]


@udf("FIELD", "INTEGER", [("str", "STRING"), ("args", "STRING")], variadic=True)
def field(value: str | None, *args: str | None) -> int:
    """The 1-based position of str among the remaining arguments; 0 if absent or NULL."""
    if value is None:
        return 0
    for i, arg in enumerate(args):
        if arg == value:
            return i + 1
    return 0


@udf("ENCODE", "STRING",
     [("input", "STRING"), ("inputEncoding", "STRING"), ("outputEncoding", "STRING")])
def encode(value: str | None, input_encoding: str | None,
           output_encoding: str | None) -> str | None:
    """Re-encodes a string from one encoding to another; encodings are hex, utf8, ascii and
    base64."""
    if value is None or input_encoding is None or output_encoding is None:
        return None
    decoder = STRING_DECODERS.get(input_encoding.lower())
    encoder = BYTES_ENCODERS.get(output_encoding.lower())
    if decoder is None or encoder is None:
        raise ValueError("Supported input and output encodings are: hex, utf8, ascii and base64")
    out = encoder(decoder(value))
    # ksqlDB writes hex in lower case here (FROM_BYTES writes it in upper case).
    return out.lower() if output_encoding.lower() == "hex" else out

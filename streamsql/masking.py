"""Secrets out of statement texts, as ksqlDB's ``QueryMask`` keeps them out.

A ``CREATE SOURCE|SINK CONNECTOR ... WITH (...)`` carries the connector's config, passwords
included (``'connection.password'='secret'``). The text of a statement is echoed back in REST
responses (``statementText``), written to the command log and to the server's log, so it is
masked first, in ksqlDB's form: a value that may be a secret becomes ``'[string]'``; the keys,
the name and the rest of the text stay as written. A value may be a secret when its key names
one (``password``, ``secret``, ``token``, ``credentials``, ``jaas.config``, ``user.info``
(basic auth), API and private keys: every key Connect's built-in plugins and Kafka's clients
type PASSWORD) or when it holds one itself (a URL's ``user:password@`` or ``password=``).
ksqlDB's QueryMask masks every value but ``connector.class``'s; streamsql leaves the others
readable, so that the command log can still recreate a connector without secrets whose
configs topic was lost. The connector's real config is what the statement's parse holds, and
it is kept in the Connect worker's configs topic (``streamsql.runtime.connect.storage``).

A text that cannot be read to the end of its WITH list (it did not parse) has every literal
after its ``WITH`` masked instead, as ksqlDB's fallback masking does.
"""
from __future__ import annotations

import re

MASK = "'[string]'"
_SECRET_KEY = re.compile(r"password|passwd|secret|token|credential|jaas\.config|user\.info|api[._-]?key|"
                         r"private[._-]?key|access[._-]?key", re.IGNORECASE)
_SECRET_VALUE = re.compile(r"(?:password|passwd|pwd|secret|token)\s*=|://[^/@\s]*:[^/@\s]*@", re.IGNORECASE)


def is_secret(key: str, value: str) -> bool:
    """Whether a connector property's value is masked in statement texts."""
    return bool(_SECRET_KEY.search(key) or _SECRET_VALUE.search(value))

_CREATE_CONNECTOR = re.compile(r"\s*CREATE\s+(?:SOURCE\s+|SINK\s+)CONNECTOR\b", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_@$.:-]*")
_LITERAL = re.compile(r"'(?:[^']|'')*'")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def is_masked(value: str) -> bool:
    """Whether a config value read back from a masked text is the mask (its real value is
    not in the text)."""
    return value == MASK.strip("'")


def mask_statement(text: str) -> str:
    """``text`` with its connector property values masked if it is a CREATE CONNECTOR
    statement; any other statement as it is."""
    if not _CREATE_CONNECTOR.match(text):
        return text
    start = _find_with(text)
    if start is None:
        return text
    try:
        return _mask_properties(text, start)
    except ValueError:
        return text[:start] + _mask_literals(text[start:])


def mask_message(message: str, text: str) -> str:
    """An error ``message`` about statement ``text`` (a parse error quotes the statement and
    the token it stopped at) with what ``mask_statement`` masks in it masked."""
    masked = mask_statement(text)
    if masked == text:
        return message
    start = _find_with(text) or 0
    message = message.replace(text, masked)
    for literal in sorted(set(_LITERAL.findall(text, start)), key=len, reverse=True):
        if literal != MASK:
            message = message.replace(literal, MASK)
    return message


def _skip(text: str, i: int) -> int:
    """Past whitespace and comments."""
    n = len(text)
    while i < n:
        if text[i].isspace():
            i += 1
        elif text.startswith("--", i):
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
        else:
            break
    return i


def _quoted(text: str, i: int) -> int:
    """The end of the quoted token at ``i`` (its quote doubled inside it); ValueError if
    it does not end."""
    quote = text[i]
    j = i + 1
    while True:
        j = text.find(quote, j)
        if j < 0:
            raise ValueError("unterminated")
        if text.startswith(quote * 2, j):
            j += 2
            continue
        return j + 1


def _find_with(text: str) -> int | None:
    """Where the WITH keyword is (outside literals, quoted names and comments)."""
    i, n = 0, len(text)
    while i < n:
        j = _skip(text, i)
        if j != i:
            i = j
            continue
        c = text[i]
        if c in "'\"`":
            try:
                i = _quoted(text, i)
            except ValueError:
                return None
            continue
        m = _WORD.match(text, i)
        if m:
            if m.group().upper() == "WITH":
                return m.end()
            i = m.end()
            continue
        i += 1
    return None


def _token(text: str, i: int) -> tuple[int, str]:
    """The end of the key or value token at ``i``, and the token unquoted."""
    if i >= len(text):
        raise ValueError("end of text")
    c = text[i]
    if c in "'\"`":
        end = _quoted(text, i)
        return end, text[i + 1:end - 1].replace(c * 2, c)
    m = _NUMBER.match(text, i) or _WORD.match(text, i)
    if not m:
        raise ValueError(f"unexpected {c!r}")
    return m.end(), m.group()


def _mask_properties(text: str, start: int) -> str:
    i = _skip(text, start)
    if not text.startswith("(", i):
        raise ValueError("no property list")
    out = [text[:i + 1]]
    i += 1
    while True:
        j = _skip(text, i)
        end, key = _token(text, j)
        k = _skip(text, end)
        if not text.startswith("=", k):
            raise ValueError("no =")
        v = _skip(text, k + 1)
        value_end, value = _token(text, v)
        out.append(text[i:v])
        out.append(MASK if is_secret(key, value) else text[v:value_end])
        i = _skip(text, value_end)
        if text.startswith(",", i):
            out.append(text[value_end:i + 1])
            i += 1
            continue
        if text.startswith(")", i):
            out.append(text[value_end:])
            return "".join(out)
        raise ValueError("no , or )")


def _mask_literals(text: str) -> str:
    """Every string literal and number of ``text`` masked (the fallback)."""
    out: list[str] = []
    i = last = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == "'":
            try:
                end = _quoted(text, i)
            except ValueError:
                end = n
            out += [text[last:i], MASK]
            i = last = end
        elif c in "\"`":
            try:
                i = _quoted(text, i)
            except ValueError:
                i = n
        elif c.isdigit():
            m = _NUMBER.match(text, i)
            assert m is not None
            out += [text[last:i], MASK]
            i = last = m.end()
        else:
            m = _WORD.match(text, i)
            i = m.end() if m else i + 1
    out.append(text[last:])
    return "".join(out)

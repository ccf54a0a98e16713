"""URL functions: URL_ENCODE_PARAM, URL_DECODE_PARAM and the URL_EXTRACT_* family.

ksqlDB parses URLs with java.net.URI, so this module re-implements that parser's rules (RFC 2396
plus Java's deviations): the same strings are rejected (NULL result plus a processing-log entry),
a host that is not a valid server name leaves the host NULL, and path, query and fragment are
returned percent-decoded (as URI.getPath() etc. return them).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import quote_plus, unquote, unquote_plus

from streamsql.functions.registry import udf

# Character classes of java.net.URI's parser. '%' is checked separately (escape pairs), and
# "other" characters (visible non-ASCII above U+0080) are allowed wherever escapes are.
_ALNUM = "A-Za-z0-9"
_UNRESERVED = _ALNUM + r"\-_.!~*'()"
_URIC = _UNRESERVED + r";/?:@&=+$,\[\]"          # reserved | unreserved
_PATH = _UNRESERVED + r":@&=+$,;/"
_USERINFO = _UNRESERVED + r";:&=+$,"
_REG_NAME = _UNRESERVED + r"$,;:@&=+"
_SERVER = _USERINFO + _ALNUM + r"\-.:@\[\]"
_OTHER = "\u0081-\U0010ffff"  # minus the space and control chars _NON_VISIBLE finds


def _chars(allowed: str) -> re.Pattern[str]:
    return re.compile(f"(?:[{allowed}{_OTHER}]|%[0-9A-Fa-f]{{2}})*")


_URIC_RE = _chars(_URIC)
_PATH_RE = _chars(_PATH)
_USERINFO_RE = _chars(_USERINFO)
_REG_NAME_RE = _chars(_REG_NAME)
_SERVER_RE = _chars(_SERVER)
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?"
_HOSTNAME_RE = re.compile(rf"(?:{_LABEL}\.)*({_LABEL})\.?")
_IPV4_RE = re.compile(r"(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)")
_IPV6_RE = re.compile(r"\[[0-9A-Fa-f:.]+(?:%[^\]]+)?\]")
_NON_VISIBLE = re.compile(r"[\u0080-\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]")


class URISyntaxError(ValueError):
    """The string is not a URI java.net.URI accepts."""


@dataclass(frozen=True)
class ParsedURI:
    """The raw (still percent-encoded) components of a URI."""

    scheme: str | None
    host: str | None
    port: int | None
    path: str | None
    query: str | None
    fragment: str | None


def _check(text: str, pattern: re.Pattern[str], what: str, url: str) -> None:
    if not pattern.fullmatch(text) or _NON_VISIBLE.search(text):
        raise URISyntaxError(f"Illegal character in {what} at index: {url}")


def _parse_server(authority: str) -> tuple[str, int | None]:
    """Host and port of a server-based authority; raises if it is not one."""
    rest = authority
    at = rest.find("@")
    if at >= 0:
        _check(rest[:at], _USERINFO_RE, "user info", authority)
        rest = rest[at + 1:]
    m = _IPV6_RE.match(rest) or _IPV4_RE.match(rest)
    if m is None or (m.end() < len(rest) and rest[m.end()] != ":"):
        m = _HOSTNAME_RE.match(rest)
        if m is None or (m.end() < len(rest) and rest[m.end()] != ":"):
            raise URISyntaxError(f"Illegal character in hostname: {authority}")
        # In a dotted name the rightmost label must start with a letter.
        if "." in m.group(0).rstrip(".") and not m.group(1)[0].isalpha():
            raise URISyntaxError(f"Illegal character in hostname: {authority}")
    host, rest = rest[:m.end()], rest[m.end():]
    port = None
    if rest:
        digits = rest[1:]
        if digits and not digits.isdigit() or not digits.isascii():
            raise URISyntaxError(f"Expected port number: {authority}")
        if digits:
            port = int(digits)
            if port > 2**31 - 1:
                raise URISyntaxError(f"Malformed port number: {authority}")
    return host, port


@lru_cache(maxsize=256)
def parse_uri(url: str) -> ParsedURI:
    """Parse ``url`` as java.net.URI does (cached: queries often extract several parts)."""
    scheme = None
    rest = url
    m = re.match(r"[^/?#:]*:", url)
    if m:
        scheme = url[:m.end() - 1]
        if not scheme:
            raise URISyntaxError(f"Expected scheme name at index 0: {url}")
        if not _SCHEME_RE.fullmatch(scheme):
            raise URISyntaxError(f"Illegal character in scheme name: {url}")
        rest = url[m.end():]
    hash_at = rest.find("#")
    fragment = None
    if hash_at >= 0:
        fragment = rest[hash_at + 1:]
        _check(fragment, _URIC_RE, "fragment", url)
        rest = rest[:hash_at]
    if scheme is not None and not rest.startswith("/"):
        # Opaque URI (mailto:x): no authority, path or query.
        if not rest:
            raise URISyntaxError(f"Expected scheme-specific part: {url}")
        _check(rest, _URIC_RE, "opaque part", url)
        return ParsedURI(scheme, None, None, None, None, fragment)
    query = None
    q_at = rest.find("?")
    if q_at >= 0:
        query = rest[q_at + 1:]
        _check(query, _URIC_RE, "query", url)
        rest = rest[:q_at]
    host = port = None
    if rest.startswith("//"):
        end = rest.find("/", 2)
        authority, rest = (rest[2:], "") if end < 0 else (rest[2:end], rest[end:])
        if not authority and not rest and query is None and fragment is None:
            raise URISyntaxError(f"Expected authority: {url}")
        if authority:
            server_chars = bool(_SERVER_RE.fullmatch(authority))
            reg_chars = bool(_REG_NAME_RE.fullmatch(authority))
            if server_chars:
                try:
                    host, port = _parse_server(authority)
                except URISyntaxError:
                    if not reg_chars:
                        raise
            elif not reg_chars:
                raise URISyntaxError(f"Illegal character in authority: {url}")
    _check(rest, _PATH_RE, "path", url)
    return ParsedURI(scheme, host, port, rest, query, fragment)


def _decode(component: str | None) -> str | None:
    if component is None or "%" not in component:
        return component
    return unquote(component, errors="replace")


@udf("URL_EXTRACT_FRAGMENT", "STRING", [("url", "STRING")])
def url_extract_fragment(url: str | None) -> str | None:
    """The decoded fragment of a URL (after '#'), or NULL if there is none."""
    return None if url is None else _decode(parse_uri(url).fragment)


@udf("URL_EXTRACT_HOST", "STRING", [("url", "STRING")])
def url_extract_host(url: str | None) -> str | None:
    """The host of a URL, or NULL if it has none."""
    return None if url is None else parse_uri(url).host


@udf("URL_EXTRACT_PATH", "STRING", [("url", "STRING")])
def url_extract_path(url: str | None) -> str | None:
    """The decoded path of a URL."""
    return None if url is None else _decode(parse_uri(url).path)


@udf("URL_EXTRACT_PORT", "INTEGER", [("url", "STRING")])
def url_extract_port(url: str | None) -> int | None:
    """The port of a URL, or NULL if it has none."""
    return None if url is None else parse_uri(url).port


@udf("URL_EXTRACT_PROTOCOL", "STRING", [("url", "STRING")])
def url_extract_protocol(url: str | None) -> str | None:
    """The protocol (scheme) of a URL, or NULL if it has none."""
    return None if url is None else parse_uri(url).scheme


@udf("URL_EXTRACT_QUERY", "STRING", [("url", "STRING")])
def url_extract_query(url: str | None) -> str | None:
    """The decoded query string of a URL (after '?'), or NULL if there is none."""
    return None if url is None else _decode(parse_uri(url).query)


@udf("URL_EXTRACT_PARAMETER", "STRING", [("url", "STRING"), ("parameter", "STRING")])
def url_extract_parameter(url: str | None, parameter: str | None) -> str | None:
    """The value of the named query parameter of a URL ('' for a parameter without a value),
    or NULL if it is absent."""
    if url is None:
        return None
    query = _decode(parse_uri(url).query)
    if query is None:
        return None
    for pair in query.split("&"):
        key, eq, value = pair.partition("=")
        if key == parameter:
            return value if eq else ""
    return None


@udf("URL_ENCODE_PARAM", "STRING", [("input", "STRING")])
def url_encode_param(value: str | None) -> str | None:
    """Escapes a value for use as a URL query parameter (application/x-www-form-urlencoded)."""
    if value is None:
        return None
    # Java's URLEncoder keeps '*' and escapes '~', which Python always keeps.
    return quote_plus(value, safe="*").replace("~", "%7E")


_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


@udf("URL_DECODE_PARAM", "STRING", [("input", "STRING")])
def url_decode_param(value: str | None) -> str | None:
    """Unescapes a URL query parameter value ('+' is a space)."""
    if value is None:
        return None
    if _BAD_ESCAPE.search(value):
        raise ValueError(f"URLDecoder: Illegal hex characters in escape (%) pattern: {value}")
    return unquote_plus(value, errors="replace")

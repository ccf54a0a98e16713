"""The server's statement cache: statements that differ only by literals share one parse,
and the result is always the AST a plain parse gives (else the text is parsed as it is)."""
from __future__ import annotations

import pytest

from streamsql.errors import ParseError
from streamsql.parser import parse_statement
from streamsql.server.statements import StatementCache

STATEMENTS = [
    "SELECT * FROM views WHERE user_id = 'u1'",
    "SELECT * FROM views WHERE user_id = 'it''s -- not a comment'",
    "SELECT * FROM views WHERE id = 42 AND x > -7 AND y < 1.5",
    "SELECT * FROM views WHERE id = 42 LIMIT 3",
    "SELECT col1, \"Quoted 7\", `b 8` FROM t2 WHERE WINDOWSTART >= '2020-01-01T00:00:00' -- 'x' 9\n",
    "SELECT * FROM t WHERE a LIKE 'a!_%' ESCAPE '!'",
    "SELECT CAST(v AS DECIMAL(5, 2)) AS d FROM t WHERE id = 99999999999999999999",
    "SELECT * FROM s WINDOW TUMBLING (SIZE 5 SECONDS) WHERE k = 'a' EMIT CHANGES",
    "SELECT 'const' AS c, 12 AS n FROM s EMIT CHANGES LIMIT 10",
]


@pytest.mark.parametrize("text", STATEMENTS)
def test_same_ast_as_a_plain_parse(text):
    cache = StatementCache()
    for _ in range(2):  # first: builds the template; second: fills it
        try:
            expected = parse_statement(text)
        except ParseError as exc:
            with pytest.raises(ParseError, match=str(exc).split("\n")[0]):
                cache.parse(text)
            continue
        got = cache.parse(text)
        assert got == expected
        assert got.text == expected.text


def test_lookups_share_one_template():
    cache = StatementCache()
    first = cache.parse("SELECT * FROM views WHERE user_id = 'u1';")
    second = cache.parse("SELECT * FROM views WHERE user_id = 'u2';")
    assert len(cache._templates) == 1
    assert first.query.where.right.value == "u1" and second.query.where.right.value == "u2"
    assert second.text == "SELECT * FROM views WHERE user_id = 'u2'"


def test_syntax_errors_come_from_the_real_text():
    with pytest.raises(ParseError) as failed:
        StatementCache().parse("SELECT * FROM views WHERE user_id = 'u1' AND")
    with pytest.raises(ParseError) as plain:
        parse_statement("SELECT * FROM views WHERE user_id = 'u1' AND")
    assert str(failed.value) == str(plain.value)

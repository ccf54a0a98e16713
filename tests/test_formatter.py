"""Expression rendering in ksqlDB's style, and parse -> format -> parse round trips."""
from __future__ import annotations

from decimal import Decimal

import pytest

from streamsql import expressions as ex
from streamsql import types as t
from streamsql.formatter import format_expression, format_identifier, format_statement
from streamsql.parser import parse_expression, parse_statement


@pytest.mark.parametrize("sql, text", [
    # as quoted in ksqlDB's own error messages
    ("SUM(value)", "SUM(VALUE)"),
    ("substring(source, 0, 1)", "SUBSTRING(SOURCE, 0, 1)"),
    ("f1 + f2", "(F1 + F2)"),
    ("0 = t.id", "(0 = T.ID)"),
    ("'100'", "'100'"),
    ("ARRAY[10]", "ARRAY[10]"),
    ("array_length(val0)", "ARRAY_LENGTH(VAL0)"),
    ("true", "true"),
    ("null", "null"),
    # the rest of the node kinds
    ("a->b[1]", "A->B[1]"),
    ("a->`lower`", "A->`lower`"),
    ("CAST(x AS INT)", "CAST(X AS INTEGER)"),
    ("CAST(x AS STRUCT<f DOUBLE>)", "CAST(X AS STRUCT<`F` DOUBLE>)"),
    ("MAP('a' := 1)", "MAP('a':=1)"),
    ("STRUCT(f := 1)", "STRUCT(F:=1)"),
    ("transform(xs, x => x + 1)", "TRANSFORM(XS, (X) => (X + 1))"),
    ("reduce(m, 0, (s, k, v) => s + v)", "REDUCE(M, 0, (S, K, V) => (S + V))"),
    ("NOT a AND b OR c", "(((NOT A) AND B) OR C)"),
    ("a IS NOT NULL", "(A IS NOT NULL)"),
    ("a NOT BETWEEN 1 AND 2", "(A NOT BETWEEN 1 AND 2)"),
    ("a IN (1, 2)", "(A IN (1, 2))"),
    ("a LIKE 'x%' ESCAPE '!'", "(A LIKE 'x%' ESCAPE '!')"),
    ("a IS DISTINCT FROM b", "(A IS DISTINCT FROM B)"),
    ("CASE WHEN a THEN 1 ELSE 2 END", "(CASE WHEN A THEN 1 ELSE 2 END)"),
    ("CASE a WHEN 1 THEN 'x' END", "(CASE A WHEN 1 THEN 'x' END)"),
    ("count(*)", "COUNT(*)"),
    ("timestampadd(seconds, 1, ts)", "TIMESTAMPADD(SECONDS, 1, TS)"),
    ("-x", "-X"),
    ("a - -5", "(A - -5)"),
    ("1.50", "1.50"),
    ("'it''s'", "'it''s'"),
    ("`select` + `a b`", "(`select` + `a b`)"),
])
def test_ksqldb_style(sql: str, text: str) -> None:
    assert format_expression(parse_expression(sql)) == text
    assert str(parse_expression(sql)) == text


@pytest.mark.parametrize("value, text", [
    (1500.0, "1500.0"), (0.001, "0.001"), (1e7, "1.0E7"), (1.7976931348623157e308, "1.7976931348623157E308"),
    (-2.5e-5, "-2.5E-5"), (0.0, "0.0"), (123456.789, "123456.789"),
])
def test_doubles_print_as_java_does(value: float, text: str) -> None:
    assert format_expression(ex.DoubleLiteral(value)) == text


def test_identifiers() -> None:
    assert format_identifier("ABC_1") == "ABC_1"
    assert format_identifier("KEY") == "KEY"  # non-reserved in ksqlDB
    assert format_identifier("FROM") == "`FROM`"
    assert format_identifier("mixedCase") == "`mixedCase`"
    assert format_identifier("a`b") == "`a``b`"


@pytest.mark.parametrize("sql", [
    "a + b * c - d / e % f",
    "-(a + 1)",
    "NOT (a = 1 OR b <> 2) AND c >= 3",
    "s.`weird col`->field[1 + 2]['key']",
    "CASE WHEN x IS NULL THEN ARRAY[1, 2] ELSE ARRAY[3] END",
    "CASE x WHEN 1 THEN MAP('a' := STRUCT(f := 1.5)) END",
    "CAST(a AS MAP<STRING, ARRAY<DECIMAL(10, 2)>>)",
    "transform(m, (k, v) => concat(k, 'x'), (k, v) => v * 2)",
    "a NOT LIKE '%x' AND b NOT IN (1, 2, 3) AND c NOT BETWEEN -1 AND 1.5",
    "a IS NOT DISTINCT FROM b",
    "COUNT(*) + COUNT() + 9223372036854775807 + -9223372036854775808",
    "1e300 * 2.5E-10",
    "timestampadd(MILLISECONDS, 1, ts) > '2020-01-01'",
    "STRUCT()",
    "`lower`.`col` IS NULL",
])
def test_round_trip(sql: str) -> None:
    expr = parse_expression(sql)
    assert parse_expression(format_expression(expr)) == expr


def test_round_trip_of_built_nodes() -> None:
    expr = ex.Cast(ex.Subscript(ex.ColumnRef("v"), ex.IntegerLiteral(-1)), t.DecimalType(4, 2))
    assert format_expression(expr) == "CAST(`v`[-1] AS DECIMAL(4, 2))"
    assert parse_expression(format_expression(expr)) == expr
    assert format_expression(ex.DecimalLiteral(Decimal("-0.50"))) == "-0.50"


def test_statement_layout_matches_ksqldb_sql_formatter() -> None:
    # as in ksqlDB's "Statement: ..." line of group-by.json's KAFKA key format case
    stmt = parse_statement(
        "CREATE TABLE OUTPUT WITH (KEY_FORMAT='KAFKA') AS SELECT TEST.F1 K1, TEST.F2 K2, COUNT(*) TOTAL "
        "FROM TEST TEST GROUP BY TEST.F1, TEST.F2 EMIT CHANGES;"
    )
    assert format_statement(stmt) == (
        "CREATE TABLE OUTPUT WITH (KEY_FORMAT='KAFKA') AS SELECT\n  TEST.F1 K1,\n  TEST.F2 K2,\n  COUNT(*) TOTAL\n"
        "FROM TEST TEST\nGROUP BY TEST.F1, TEST.F2\nEMIT CHANGES"
    )


@pytest.mark.parametrize("sql", [
    "SELECT * FROM a JOIN b WITHIN (1 SECOND, 2 MINUTES) GRACE PERIOD 3 SECONDS ON a.id = b.id "
    "LEFT JOIN c ON a.x = c.x FULL OUTER JOIN d dd ON a.x = dd.x WHERE x > 1 EMIT CHANGES LIMIT 3",
    "CREATE OR REPLACE STREAM IF NOT EXISTS s AS SELECT v->*, a.*, x + 1 AS y FROM a "
    "WINDOW HOPPING (SIZE 1 HOUR, ADVANCE BY 10 MINUTES, RETENTION 7 DAYS, GRACE PERIOD 10 MILLISECONDS) "
    "PARTITION BY x HAVING COUNT(*) > 2",
    "SELECT k FROM t WINDOW SESSION (90 SECONDS) GROUP BY k",
    "CREATE SOURCE TABLE t (k INT PRIMARY KEY, h BYTES HEADER('a'), hs ARRAY<STRUCT<`key` STRING, `value` BYTES>> HEADERS, "
    "`v` STRING) WITH (kafka_topic='t', partitions=2, wrap_single_value=false, x=1.5E0)",
    "INSERT INTO x WITH (query_id='Q') SELECT * FROM y",
])
def test_statement_round_trip(sql: str) -> None:
    stmt = parse_statement(sql)
    assert parse_statement(format_statement(stmt)) == stmt

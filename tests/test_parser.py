"""The SQL front end: statements to AST, expressions, types, errors, and every QTT statement."""
from __future__ import annotations

import json
import os
from decimal import Decimal
from pathlib import Path

import pytest

from streamsql import ast
from streamsql import expressions as ex
from streamsql import types as t
from streamsql.errors import ParseError
from streamsql.parser import parse, parse_expression, parse_statement, parse_type

QTT_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "qtt"


def col(name: str, source: str | None = None) -> ex.ColumnRef:
    return ex.ColumnRef(name, source)


def lit(value: int) -> ex.IntegerLiteral:
    return ex.IntegerLiteral(value)


# ------------------------------------------------------------------------------ statements
def test_create_stream_with_elements_and_properties() -> None:
    stmt = parse_statement(
        "CREATE STREAM test (ID STRING KEY, `lower` INT, h BYTES HEADER('k'), hs ARRAY<STRUCT<key STRING, value BYTES>> HEADERS)"
        " WITH (kafka_topic='t', value_format='JSON', partitions=4, \"wrap_single_value\"=false, x=1.5);"
    )
    assert stmt == ast.CreateSource(
        "STREAM", "TEST",
        (
            ast.TableElement("ID", t.STRING, "KEY"),
            ast.TableElement("lower", t.INTEGER),
            ast.TableElement("H", t.BYTES, "HEADER", "k"),
            ast.TableElement("HS", t.ArrayType(t.StructType([t.Field("KEY", t.STRING), t.Field("VALUE", t.BYTES)])), "HEADERS"),
        ),
        ast.Properties((("KAFKA_TOPIC", "t"), ("VALUE_FORMAT", "JSON"), ("PARTITIONS", 4),
                        ("WRAP_SINGLE_VALUE", False), ("X", Decimal("1.5")))),
    )
    assert stmt.text.startswith("CREATE STREAM test (") and stmt.text.endswith("x=1.5)")


def test_create_source_table_or_replace_if_not_exists() -> None:
    stmt = parse_statement("create or replace source table if not exists T (K INT PRIMARY KEY, V DOUBLE) with (kafka_topic='t')")
    assert isinstance(stmt, ast.CreateSource)
    assert (stmt.kind, stmt.name, stmt.or_replace, stmt.is_source, stmt.if_not_exists) == ("TABLE", "T", True, True, True)
    assert stmt.elements[0] == ast.TableElement("K", t.INTEGER, "PRIMARY KEY")


def test_key_on_a_table_is_rejected_with_position() -> None:
    with pytest.raises(ParseError) as info:
        parse("CREATE TABLE INPUT (ID INT KEY, NAME STRING) WITH (kafka_topic='input',value_format='JSON');")
    assert str(info.value) == "Line: 1, Col: 21: Column `ID` is a 'KEY' column: please use 'PRIMARY KEY' for tables."


def test_csas_with_where_and_partition_by() -> None:
    stmt = parse_statement(
        "CREATE STREAM OUT WITH (kafka_topic='o') AS SELECT s.id, a + 1 AS b, * FROM src s WHERE a > 5 PARTITION BY b EMIT CHANGES;"
    )
    assert stmt == ast.CreateAsSelect(
        "STREAM", "OUT",
        ast.Query(
            select=(
                ast.SingleColumn(col("ID", "S")),
                ast.SingleColumn(ex.ArithmeticBinary("+", col("A"), lit(1)), "B"),
                ast.AllColumns(),
            ),
            from_=ast.AliasedRelation("SRC", "S"),
            where=ex.Comparison(">", col("A"), lit(5)),
            partition_by=(col("B"),),
            emit="CHANGES",
        ),
        ast.Properties((("KAFKA_TOPIC", "o"),)),
    )


def test_ctas_windowed_group_by_having_limit() -> None:
    stmt = parse_statement(
        "CREATE TABLE T AS SELECT k, COUNT(*) c FROM s WINDOW HOPPING (SIZE 30 SECONDS, ADVANCE BY 5 SECONDS, "
        "RETENTION 2 DAYS, GRACE PERIOD 1 MINUTE) GROUP BY (k, j) HAVING COUNT(*) > 1 EMIT FINAL LIMIT 10"
    )
    assert isinstance(stmt, ast.CreateAsSelect)
    query = stmt.query
    assert query.window == ast.WindowExpression("HOPPING", 30_000, 5_000, 2 * 86_400_000, 60_000)
    assert query.group_by == (col("K"), col("J"))
    assert query.having == ex.Comparison(">", ex.FunctionCall("COUNT", (), star=True), lit(1))
    assert query.select[1] == ast.SingleColumn(ex.FunctionCall("COUNT", (), star=True), "C")
    assert (query.emit, query.limit) == ("FINAL", 10)


@pytest.mark.parametrize("clause, expected", [
    ("TUMBLING (SIZE 1 SECOND)", ast.WindowExpression("TUMBLING", 1000)),
    ("TUMBLING (SIZE 2 MILLISECONDS, GRACE PERIOD 0 MILLISECONDS)", ast.WindowExpression("TUMBLING", 2, grace=0)),
    ("SESSION (30 SECONDS, GRACE PERIOD 1 MINUTE)", ast.WindowExpression("SESSION", 30_000, grace=60_000)),
    ("session (1 hour)", ast.WindowExpression("SESSION", 3_600_000)),
])
def test_windows(clause: str, expected: ast.WindowExpression) -> None:
    stmt = parse_statement(f"SELECT K, COUNT(*) FROM S WINDOW {clause} GROUP BY K EMIT CHANGES")
    assert isinstance(stmt, ast.QueryStatement)
    assert stmt.query.window == expected


def test_n_way_join_with_within() -> None:
    stmt = parse_statement(
        "CREATE STREAM J AS SELECT * FROM a JOIN b WITHIN 10 SECONDS ON a.id = b.id "
        "LEFT OUTER JOIN c AS cc WITHIN (1 SECOND, 2 SECONDS) GRACE PERIOD 3 SECONDS ON a.id = cc.id "
        "FULL JOIN d ON a.id = d.id RIGHT JOIN e ON a.id = e.id INNER JOIN f ON a.id = f.id"
    )
    relation = stmt.query.from_
    assert isinstance(relation, ast.Join)
    assert relation.left == ast.AliasedRelation("A")
    kinds = [(j.join_type, j.right.name, j.right.alias, j.within) for j in relation.joins]
    assert kinds == [
        ("INNER", "B", None, ast.WithinExpression(10_000, 10_000)),
        ("LEFT", "C", "CC", ast.WithinExpression(1000, 2000, 3000)),
        ("FULL", "D", None, None),
        ("RIGHT", "E", None, None),
        ("INNER", "F", None, None),
    ]
    assert relation.joins[1].criteria == ex.Comparison("=", col("ID", "A"), col("ID", "CC"))


def test_insert_values_and_insert_select() -> None:
    values = parse_statement("INSERT INTO s (k, `v`) VALUES ('a', -1.5);")
    assert values == ast.InsertValues("S", ("K", "v"), (ex.StringLiteral("a"), ex.DecimalLiteral(Decimal("-1.5"))))
    everything = parse_statement("INSERT INTO s VALUES ()")
    assert everything == ast.InsertValues("S", (), ())
    insert = parse_statement("INSERT INTO s WITH (query_id='q') SELECT * FROM t")
    assert insert == ast.InsertInto("S", ast.Query((ast.AllColumns(),), ast.AliasedRelation("T")),
                                    ast.Properties((("QUERY_ID", "q"),)))


@pytest.mark.parametrize("sql, expected", [
    ("DROP STREAM IF EXISTS s DELETE TOPIC", ast.DropSource("STREAM", "S", if_exists=True, delete_topic=True)),
    ("drop table t", ast.DropSource("TABLE", "T")),
    ("CREATE TYPE IF NOT EXISTS addr AS STRUCT<number INTEGER, `street` VARCHAR>",
     ast.CreateType("ADDR", t.StructType([t.Field("NUMBER", t.INTEGER), t.Field("street", t.STRING)]), if_not_exists=True)),
    ("CREATE TYPE person AS STRUCT<name VARCHAR, address ADDRESS>",
     ast.CreateType("PERSON", t.StructType([t.Field("NAME", t.STRING), t.Field("ADDRESS", t.NamedType("ADDRESS"))]))),
    ("DROP TYPE IF EXISTS addr", ast.DropType("ADDR", if_exists=True)),
    ("ALTER STREAM s ADD COLUMN c INT, ADD COLUMN d STRING",
     ast.AlterSource("STREAM", "S", (ast.TableElement("C", t.INTEGER), ast.TableElement("D", t.STRING)))),
    ("ALTER SYSTEM 'ksql.x'='y'", ast.AlterSystem("ksql.x", "y")),
    ("ASSERT TOPIC my_topic", ast.AssertTopic("my_topic")),
    ("ASSERT NOT EXISTS TOPIC 'a-b' WITH (partitions=2) TIMEOUT 3 SECONDS",
     ast.AssertTopic("a-b", ast.Properties((("PARTITIONS", 2),)), 3000, exists=False)),
    ("ASSERT SCHEMA SUBJECT `S-value` ID 4 TIMEOUT 10 MILLISECONDS", ast.AssertSchema("S-value", 4, 10)),
    ("ASSERT NOT EXISTS SCHEMA ID 5", ast.AssertSchema(None, 5, exists=False)),
    ("SHOW STREAMS", ast.ShowStatement("STREAMS")),
    ("list tables extended", ast.ShowStatement("TABLES", extended=True)),
    ("SHOW ALL TOPICS EXTENDED", ast.ShowStatement("TOPICS", extended=True, all=True)),
    ("SHOW QUERIES", ast.ShowStatement("QUERIES")),
    ("SHOW FUNCTIONS", ast.ShowStatement("FUNCTIONS")),
    ("SHOW PROPERTIES", ast.ShowStatement("PROPERTIES")),
    ("SHOW TYPES", ast.ShowStatement("TYPES")),
    ("SHOW VARIABLES", ast.ShowStatement("VARIABLES")),
    ("DESCRIBE s EXTENDED", ast.DescribeSource("S", extended=True)),
    ("DESCRIBE `s`", ast.DescribeSource("s")),
    ("DESCRIBE STREAMS", ast.DescribeSources("STREAMS")),
    ("DESCRIBE TABLES EXTENDED", ast.DescribeSources("TABLES", extended=True)),
    ("DESCRIBE FUNCTION substring", ast.DescribeFunction("SUBSTRING")),
    ("EXPLAIN CSAS_OUT_0", ast.Explain(query_id="CSAS_OUT_0")),
    ("TERMINATE CTAS_T_1", ast.TerminateQuery("CTAS_T_1")),
    ("TERMINATE ALL", ast.TerminateQuery(None)),
    ("PAUSE q1", ast.PauseResumeQuery("PAUSE", "Q1")),
    ("RESUME ALL", ast.PauseResumeQuery("RESUME", None)),
    ("SET 'auto.offset.reset'='earliest'", ast.SetProperty("auto.offset.reset", "earliest")),
    ("UNSET 'auto.offset.reset'", ast.UnsetProperty("auto.offset.reset")),
    ("DEFINE topic = 'it''s'", ast.DefineVariable("topic", "it's")),
    ("UNDEFINE topic", ast.UndefineVariable("topic")),
    ("PRINT 'my-topic' FROM BEGINNING INTERVAL 2 LIMIT 10",
     ast.PrintTopic("my-topic", from_beginning=True, interval=2, limit=10)),
    ("PRINT my_topic", ast.PrintTopic("MY_TOPIC")),
    ("RUN SCRIPT '/tmp/x.sql'", ast.RunScript("/tmp/x.sql")),
    ("SELECT * FROM t WHERE k = 1", ast.QueryStatement(ast.Query(
        (ast.AllColumns(),), ast.AliasedRelation("T"), where=ex.Comparison("=", col("K"), lit(1))))),
])
def test_other_statements(sql: str, expected: ast.Statement) -> None:
    assert parse_statement(sql) == expected


def test_explain_statement_keeps_its_own_text() -> None:
    stmt = parse_statement("EXPLAIN SELECT * FROM t EMIT CHANGES;")
    assert isinstance(stmt, ast.Explain) and isinstance(stmt.statement, ast.QueryStatement)
    assert stmt.statement.text == "SELECT * FROM t EMIT CHANGES"
    assert stmt.text == "EXPLAIN SELECT * FROM t EMIT CHANGES"


def test_script_texts_and_comments() -> None:
    script = (
        "-- a comment\nCREATE STREAM a (x INT) WITH (kafka_topic='a');  /* block\n comment */\n"
        "  INSERT INTO a VALUES (1) ;\nSHOW STREAMS"
    )
    statements = parse(script)
    assert [s.text for s in statements] == [
        "CREATE STREAM a (x INT) WITH (kafka_topic='a')",
        "INSERT INTO a VALUES (1)",
        "SHOW STREAMS",
    ]
    assert parse("") == [] and parse("  -- nothing\n") == []


def test_keywords_as_identifiers() -> None:
    stmt = parse_statement(
        "CREATE STREAM s (key STRING KEY, value INT, size INT, date DATE, time TIME, timestamp TIMESTAMP, type STRING, "
        "topic STRING, functions INT, map MAP<STRING, INT>, array ARRAY<INT>, struct STRUCT<`A` INT>, window INT2)"
        " WITH (kafka_topic='t', timestamp='timestamp', key_format='KAFKA')"
    )
    assert [e.name for e in stmt.elements] == ["KEY", "VALUE", "SIZE", "DATE", "TIME", "TIMESTAMP", "TYPE", "TOPIC",
                                               "FUNCTIONS", "MAP", "ARRAY", "STRUCT", "WINDOW"]
    query = parse_statement("SELECT key, value, size, date, map, filter(map, (x, y) => x = y) AS type FROM s").query
    assert query.select[4] == ast.SingleColumn(col("MAP"))
    assert query.select[5].alias == "TYPE"


def test_struct_all_fields_and_digit_identifiers() -> None:
    query = parse_statement("SELECT v1->a->*, ROUND(v, -1) AS 1R FROM s").query
    assert query.select[0] == ast.StructAllFields(ex.Dereference(col("V1"), "A"))
    assert query.select[1] == ast.SingleColumn(ex.FunctionCall("ROUND", (col("V"), lit(-1))), "1R")


# ----------------------------------------------------------------------------- expressions
@pytest.mark.parametrize("text, expected", [
    ("a OR b AND NOT c", ex.Or(col("A"), ex.And(col("B"), ex.Not(col("C"))))),
    ("1 + 2 * 3 - 4", ex.ArithmeticBinary("-", ex.ArithmeticBinary("+", lit(1), ex.ArithmeticBinary("*", lit(2), lit(3))), lit(4))),
    ("-a * b", ex.ArithmeticBinary("*", ex.ArithmeticUnary("-", col("A")), col("B"))),
    ("a != b", ex.Comparison("<>", col("A"), col("B"))),
    ("a IS NOT DISTINCT FROM b", ex.Comparison("IS_NOT_DISTINCT_FROM", col("A"), col("B"))),
    ("a IS DISTINCT FROM b", ex.Comparison("IS_DISTINCT_FROM", col("A"), col("B"))),
    ("a NOT BETWEEN 1 AND 2 + 3", ex.Between(col("A"), lit(1), ex.ArithmeticBinary("+", lit(2), lit(3)), negated=True)),
    ("a NOT IN (1, 'x')", ex.InList(col("A"), (lit(1), ex.StringLiteral("x")), negated=True)),
    ("a LIKE '%x!%' ESCAPE '!'", ex.Like(col("A"), ex.StringLiteral("%x!%"), "!")),
    ("a IS NULL = FALSE", None),  # not valid: IS NULL is not a value expression
    ("s.a->b[1]['k']", ex.Subscript(ex.Subscript(ex.Dereference(col("A", "S"), "B"), lit(1)), ex.StringLiteral("k"))),
    ("CASE x WHEN 1 THEN 'a' ELSE 'b' END", ex.Case(col("X"), ((lit(1), ex.StringLiteral("a")),), ex.StringLiteral("b"))),
    ("CASE WHEN x THEN 1 WHEN y THEN 2 END", ex.Case(None, ((col("X"), lit(1)), (col("Y"), lit(2))))),
    ("CAST(x AS ARRAY<MAP<STRING, DECIMAL(4, 2)>>)", ex.Cast(col("X"), t.ArrayType(t.MapType(t.STRING, t.DecimalType(4, 2))))),
    ("ARRAY[1, NULL]", ex.CreateArray((lit(1), ex.NullLiteral()))),
    ("MAP('a' := 1, 'b' := 2)", ex.CreateMap(((ex.StringLiteral("a"), lit(1)), (ex.StringLiteral("b"), lit(2))))),
    ("STRUCT(a := TRUE, `b` := 'x')", ex.CreateStruct((("A", ex.BooleanLiteral(True)), ("b", ex.StringLiteral("x"))))),
    ("STRUCT()", ex.CreateStruct(())),
    ("TRANSFORM(m, (k, v) => k, (k, v) => v + 1)", ex.FunctionCall("TRANSFORM", (
        col("M"), ex.Lambda(("K", "V"), col("K")), ex.Lambda(("K", "V"), ex.ArithmeticBinary("+", col("V"), lit(1)))))),
    ("filter(a, x => x > 1)", ex.FunctionCall("FILTER", (col("A"), ex.Lambda(("X",), ex.Comparison(">", col("X"), lit(1)))))),
    ("TIMESTAMPADD(SECONDS, 5, ts)", ex.FunctionCall("TIMESTAMPADD", (ex.IntervalUnit("SECONDS"), lit(5), col("TS")))),
    ("DATEADD(days, 5, d)", ex.FunctionCall("DATEADD", (ex.IntervalUnit("DAYS"), lit(5), col("D")))),
    # singular units are non-reserved words in ksqlDB: as arguments they are columns
    ("F(first, second, day)", ex.FunctionCall("F", (col("FIRST"), col("SECOND"), col("DAY")))),
    ("COUNT()", ex.FunctionCall("COUNT")),
    ("'it''s'", ex.StringLiteral("it's")),
    ("\"Quoted\" + `back``tick`", ex.ArithmeticBinary("+", col("Quoted"), col("back`tick"))),
    ("1.50", ex.DecimalLiteral(Decimal("1.50"))),
    ("1.5E3", ex.DoubleLiteral(1500.0)),
    ("-9223372036854775808", lit(-(2**63))),
    ("-1.5e-3", ex.DoubleLiteral(-0.0015)),
    ("2147483648", lit(2**31)),
])
def test_expressions(text: str, expected: ex.Expression | None) -> None:
    if expected is None:
        with pytest.raises(ParseError):
            parse_expression(text)
    else:
        assert parse_expression(text) == expected


@pytest.mark.parametrize("text, message", [
    ("9223372036854775808", "Invalid numeric literal: 9223372036854775808"),
    ("-9223372036854775809", "Invalid numeric literal: -9223372036854775809"),
    ("1 + 1.7976931348623159E308", "Number overflows DOUBLE: 1.7976931348623159E308"),
    ("-1.7976931348623160E308", "Number overflows DOUBLE: -1.7976931348623160E308"),
])
def test_numeric_literal_limits(text: str, message: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_expression(text)
    assert message in str(info.value)


@pytest.mark.parametrize("text, expected", [
    ("INT", t.INTEGER), ("integer", t.INTEGER), ("BIGINT", t.BIGINT), ("VARCHAR", t.STRING),
    ("VARCHAR(STRING)", t.STRING), ("DECIMAL(10, 3)", t.DecimalType(10, 3)), ("BYTES", t.BYTES),
    ("TIMESTAMP", t.TIMESTAMP), ("MAP<STRING, ARRAY<DATE>>", t.MapType(t.STRING, t.ArrayType(t.DATE))),
    ("STRUCT<>", t.StructType([])), ("Address", t.NamedType("ADDRESS")), ("`lower`", t.NamedType("lower")),
])
def test_types(text: str, expected: t.SqlType) -> None:
    assert parse_type(text) == expected


@pytest.mark.parametrize("text", ["ARRAY<NULL>", "STRUCT<fo NULL>", "VARCHAR(10)", "INT(KEY)", "DECIMAL", "MAP<STRING>"])
def test_bad_types(text: str) -> None:
    with pytest.raises(ParseError):
        parse_type(text)


# ---------------------------------------------------------------------------------- errors
def test_error_position_is_relative_to_the_script() -> None:
    with pytest.raises(ParseError) as info:
        parse("CREATE STREAM TEST (ID INT KEY, f3 INT) WITH (kafka_topic='t', value_format='JSON');\n"
              "CREATE TABLE OUTPUT AS SELECT f1, f2, COUNT(*) FROM TEST GROUP BY f3, (f2, f1);")
    err = info.value
    assert str(err) == (
        "line 2:74: Syntax Error\nmissing ')' at ','\n"
        "Statement: CREATE TABLE OUTPUT AS SELECT f1, f2, COUNT(*) FROM TEST GROUP BY f3, (f2, f1);"
    )
    assert (err.line, err.column, err.token) == (2, 74, ",")


def test_type_parameter_error_lists_what_was_expected() -> None:
    with pytest.raises(ParseError) as info:
        parse("CREATE STREAM INPUT (K VARCHAR (KEY)) WITH (kafka_topic='input',value_format='JSON');")
    assert str(info.value) == (
        "line 1:33: Syntax Error\nExpecting {'STRING', INTEGER_VALUE}\n"
        "Statement: CREATE STREAM INPUT (K VARCHAR (KEY)) WITH (kafka_topic='input',value_format='JSON');"
    )
    assert info.value.expected == ("'STRING'", "INTEGER_VALUE")


def test_unknown_statement() -> None:
    with pytest.raises(ParseError) as info:
        parse("SHOW STREAMS;\nFROBNICATE ALL;")
    assert str(info.value) == "line 2:1: Syntax Error\nUnknown statement 'FROBNICATE'\nStatement: FROBNICATE ALL;"


@pytest.mark.parametrize("sql", [
    "SELECT * FROM s WHERE ID IN ( )",
    "SELECT * FROM s PARTITION BY name AND age",
    "SELECT (a, b) FROM s",
    "SELECT * FROM s WINDOW TUMBLING (SIZE 1 WEEK) GROUP BY k",
    "CREATE STREAM s (a INT) AS SELECT * FROM t",
    "SELECT * FROM",
    "SELECT # FROM s",
    "SHOW ALL STREAMS",
])
def test_syntax_errors(sql: str) -> None:
    with pytest.raises(ParseError) as info:
        parse(sql)
    assert str(info.value).startswith("line 1:")
    assert "Syntax Error" in str(info.value)


def test_parse_statement_requires_exactly_one() -> None:
    with pytest.raises(ParseError):
        parse_statement("SHOW STREAMS; SHOW TABLES;")


# ------------------------------------------------------------------------------ QTT corpus
# RUN SCRIPT parses (the shell runs it); the engine rejects it outside the shell.
_REJECTED_BY_ENGINE = {("asserts.json", "should not parse RUN SCRIPT")}
# Parse failures whose message differs from ksqlDB's: ASSERT statements are QTT-only syntax.
_MESSAGE_DIFFERS = {("asserts.json", "should not parse ASSERT")}


def _qtt_cases() -> list[tuple[str, dict]]:
    if not QTT_DIR.is_dir():
        if os.environ.get("CI"):
            raise AssertionError(f"QTT cases missing at {QTT_DIR}")
        return []
    cases = []
    for path in sorted(QTT_DIR.glob("*.json")):
        for case in json.loads(path.read_text())["tests"]:
            cases.append((path.name, case))
    return cases


def _must_fail(case: dict) -> bool:
    expected = case.get("expectedException") or {}
    return expected.get("type", "").endswith("ParseFailedException") or "Syntax Error" in expected.get("message", "")


def test_every_qtt_statement_parses_or_fails_as_ksqldb_does() -> None:
    cases = _qtt_cases()
    if not cases:
        pytest.skip("no QTT cases beside the repository")
    unexpected_failures, unexpected_successes, wrong_messages = [], [], []
    for file_name, case in cases:
        text = "\n".join(case["statements"])
        for fmt in case.get("format") or [None]:
            script = text.replace("{FORMAT}", fmt) if fmt else text
            key = (file_name, case["name"])
            try:
                parse(script)
            except ParseError as err:
                if not _must_fail(case):
                    unexpected_failures.append((key, str(err)))
                elif key not in _MESSAGE_DIFFERS:
                    message = case["expectedException"]["message"]
                    message = message.removeprefix("Failed to prepare statement: ")
                    if message not in str(err):
                        wrong_messages.append((key, message, str(err)))
            else:
                if _must_fail(case) and key not in _REJECTED_BY_ENGINE:
                    unexpected_successes.append(key)
    assert unexpected_failures == []
    assert unexpected_successes == []
    assert wrong_messages == []
    assert len(cases) > 1000


def test_locations_for_ksqldb_line_col_messages() -> None:
    join, insert = parse(
        "CREATE STREAM OUTPUT as SELECT * FROM test1 t RIGHT JOIN test2 tt ON t.iid = tt.id;\n"
        "INSERT INTO UNKNOWN SELECT d1 FROM SOURCE;"
    )
    criteria = join.query.from_.joins[0].criteria
    assert criteria.left.location == (1, 70)  # ksqlDB: "Line: 1, Col: 70: JOIN ON column 'T.IID' ..."
    assert insert.target_location == (2, 13)  # ksqlDB: "Line: 2, Col: 13: Source `UNKNOWN` does not exist."
    assert insert.query.select[0].expression.location == (2, 28)

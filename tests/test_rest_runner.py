"""The REST query-validation runner (``streamsql.testing.rest``), its comparison
(``rest_compare``), exact-number JSON (``exactjson``) and Java-style protobuf text
(``prototext``), on small cases of their own (the real cases run in test_rqtt)."""
from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from streamsql.testing import exactjson
from streamsql.testing.prototext import java_double, java_float, message_class, proto_text
from streamsql.testing.rest import RestCaseResult, load_cases, run_case
from streamsql.testing.rest_compare import compare, mask_statement, mismatch, values_equal

pytestmark = pytest.mark.timeout(120)


def exact(text: str) -> object:
    return exactjson.loads(text)


# ================================================================================ exactjson
def test_exactjson_keeps_number_text() -> None:
    doc = exact('{"a": [1.50, 2.0, 3, -0.5e3], "b": "x"}')
    assert exactjson.dumps(doc) == '{"a":[1.50,2.0,3,-0.5e3],"b":"x"}'
    assert exactjson.plain(doc) == {"a": [1.5, 2.0, 3, -500.0], "b": "x"}


def test_exactjson_array_items_of_a_cut_stream() -> None:
    items, complete = exactjson.array_items('[{"header":{"x":1}},\n{"row":{"columns":[1.0]}},\n{"row":')
    assert not complete
    assert exactjson.dumps(items) == '[{"header":{"x":1}},{"row":{"columns":[1.0]}}]'
    assert exactjson.array_items("[]") == ([], True)
    with pytest.raises(ValueError):
        exactjson.array_items('{"not": "an array"}')


# =============================================================================== matching
@pytest.mark.parametrize("a, b, equal", [
    ("1", "1", True), ("1", "1.0", False), ("1.5", "1.50", False), ("10.0", "10.0", True),
    ("1E2", "1e+2", True), ("1", "true", False), ('{"A": 1}', '{"A": 1, "B": 2}', False),
    ("[1, 2]", "[2, 1]", False), ("null", "null", True), ('"1"', "1", False),
])
def test_values_compare_as_java_reads_them(a: str, b: str, equal: bool) -> None:
    assert values_equal(exact(a), exact(b)) is equal


def test_partial_objects_and_prefixes() -> None:
    actual = exact('{"@type": "currentStatus", "commandStatus": {"status": "SUCCESS", "message": "x"},'
                   ' "queryId": "SCALABLE_PUSH_QUERY_1"}')
    assert mismatch(exact('{"commandStatus": {"status": "SUCCESS"}}'), actual, "") is None
    assert mismatch(exact('{"queryId|starts_with": "SCALABLE_PUSH_QUERY"}'), actual, "") is None
    assert mismatch(exact('{"queryId|STARTS_WITH": "transient"}'), actual, "") is not None
    assert mismatch(exact('{"commandStatus": {"status": "ERROR"}}'), actual, "") is not None


def _query_case(rows: str, verify_order: bool = False) -> dict:
    case = exact('{"name": "c", "statements": ["CREATE TABLE ...;", "SELECT * FROM T;"], "responses": ['
                 '{"admin": {"@type": "currentStatus"}},'
                 '{"query": [{"header": {"schema": "`ID` INTEGER KEY, `V` DOUBLE"}}, ' + rows + ']}]}')
    assert isinstance(case, dict)
    if verify_order:
        case["outputConditions"] = {"verifyOrder": True}
    return case


def _query_result(rows: str) -> RestCaseResult:
    return RestCaseResult("c", None, exact(
        '[{"admin": {"@type": "currentStatus", "statementText": "CREATE TABLE ...;"}},'
        '{"query": [{"header": {"queryId": "q1", "schema": "`ID` INTEGER KEY, `V` DOUBLE"}}, ' + rows + ']}]'))


def test_query_rows_in_any_order_unless_verify_order() -> None:
    expected = '{"row": {"columns": [1, 1.0]}}, {"row": {"columns": [2, 2.5]}}'
    swapped = '{"row": {"columns": [2, 2.5]}}, {"row": {"columns": [1, 1.0]}}'
    assert compare(_query_case(expected), _query_result(swapped)) is None
    assert compare(_query_case(expected, verify_order=True), _query_result(swapped)) is not None
    # the digits matter: 2.50 is not 2.5, and a row fewer or more is a failure
    assert compare(_query_case(expected), _query_result(
        '{"row": {"columns": [1, 1.0]}}, {"row": {"columns": [2, 2.50]}}')) is not None
    assert compare(_query_case(expected), _query_result('{"row": {"columns": [1, 1.0]}}')) is not None


def test_expected_error_on_an_insert_values() -> None:
    case = exact('{"name": "e", "statements": ["CREATE STREAM S (K STRING KEY, ID INT) WITH (kafka_topic=\'t\', '
                 'value_format=\'JSON\');", "INSERT INTO s (K, id) VALUES (\'10\');"], "expectedError": {'
                 '"type": "io.confluent.ksql.rest.entity.KsqlStatementErrorMessage", "message": "must match", '
                 '"status": 400}}')
    body = {"@type": "statement_error", "error_code": 40001, "message": "values must match",
            "statementText": "INSERT INTO `S` (`K`, `ID`) VALUES ('[value]');", "entities": []}
    ok = RestCaseResult("e", {"endpoint": "/ksql", "status": 400, "body": body})
    assert compare(case, ok) is None
    unmasked = dict(body, statementText="INSERT INTO s (K, id) VALUES ('10');")
    assert compare(case, RestCaseResult("e", {"endpoint": "/ksql", "status": 400, "body": unmasked})) is not None
    assert compare(case, RestCaseResult("e", {"endpoint": "/ksql", "status": 500, "body": body})) is not None
    assert compare(case, RestCaseResult("e")) is not None


def test_mask_statement() -> None:
    assert mask_statement("INSERT INTO input (id, `val`) VALUES (ARRAY[1, 2], STRUCT(A:='x,y'));") == \
        "INSERT INTO `INPUT` (`ID`, `val`) VALUES ('[value]', '[value]');"
    assert mask_statement("SELECT * FROM T;") == "SELECT * FROM T;"


def test_outputs_per_topic_in_order() -> None:
    case = exact('{"name": "o", "statements": [], "outputs": [{"topic": "t", "key": "a", "value": {"V": 1.5}, '
                 '"timestamp": 7}]}')
    good = RestCaseResult("o", outputs=[{"topic": "t", "key": "a", "value": {"V": 1.5}, "timestamp": 7, "window": None},
                                        {"topic": "other", "key": None, "value": 1, "timestamp": 0, "window": None}])
    assert compare(case, good) is None
    late = RestCaseResult("o", outputs=[dict(good.outputs[0], timestamp=8)])
    assert compare(case, late) is not None


# ============================================================================ protobuf text
SCHEMA = ('syntax = "proto3";\nmessage Row {\n  int64 ID = 1;\n  repeated Entry M = 2;\n  string S = 3;\n'
          '  double D = 4;\n  map<string, int32> X = 5;\n  message Entry {\n    string key = 1;\n'
          '    int32 value = 2;\n  }\n}\n')


def test_proto_text_prints_as_protobuf_java() -> None:
    row = message_class(SCHEMA)(ID=2, S="é", D=1e20)
    row.M.add(key="Q")
    row.M.add(key="D", value=4)
    row.X["b"] = 1
    row.X["a"] = 2
    text = proto_text(SCHEMA, row.SerializeToString())
    # repeated entries in wire order, a map sorted by key, UTF-8 escaped, Java's doubles
    assert text == ('ID: 2\nM {\n  key: "Q"\n}\nM {\n  key: "D"\n  value: 4\n}\nS: "\\303\\251"\n'
                    'D: 1.0E20\nX {\n  key: "a"\n  value: 2\n}\nX {\n  key: "b"\n  value: 1\n}\n')


@pytest.mark.parametrize("value, text", [(100.0, "100.0"), (0.001, "0.001"), (1e-4, "1.0E-4"),
                                         (12345678.9, "1.23456789E7"), (-2.5, "-2.5"), (0.0, "0.0")])
def test_java_double(value: float, text: str) -> None:
    assert java_double(value) == text


def test_java_float() -> None:
    assert java_float(1.1) == "1.1"
    assert java_float(1e10) == "1.0E10"


def test_query_proto_rows_are_compared_as_text() -> None:
    schema = 'syntax = "proto3";\n\nmessage ConnectDefault1 {\n  int64 ID = 1;\n}\n'
    data = base64.b64encode(message_class(schema)(ID=5).SerializeToString()).decode()
    case = {"name": "p", "statements": ["SELECT * FROM T;"],
            "responses": [{"queryProto": [{"header": {"protoSchema": schema}}, {"row": "ID: 5\n"}]}]}
    result = RestCaseResult("p", responses=[{"queryProto": [
        {"header": {"queryId": "q", "schema": "`ID` BIGINT KEY", "protoSchema": schema}},
        {"row": {"protobufBytes": data}}]}])
    assert compare(case, result) is None
    case["responses"][0]["queryProto"][1]["row"] = "ID: 6\n"
    assert compare(case, result) is not None


# ================================================================================ the runner
CASE = {
    "name": "pull and push",
    "statements": [
        "CREATE STREAM S (ID INT KEY, V DOUBLE) WITH (kafka_topic='s', value_format='JSON', partitions=1);",
        "CREATE TABLE T AS SELECT ID, LATEST_BY_OFFSET(V) AS V FROM S GROUP BY ID;",
        "SELECT * FROM T WHERE ID = 1;",
        "SELECT ID, V FROM S EMIT CHANGES LIMIT 2;",
    ],
    "inputs": [{"topic": "s", "key": 1, "value": {"V": 2.0}, "timestamp": 5},
               {"topic": "s", "key": 2, "value": {"V": 3.5}}],
}


def test_runner_runs_a_case_on_its_own_server() -> None:
    result = run_case(CASE, query_timeout=10).to_json()
    assert result["error"] is None, result["error"]
    kinds = [next(iter(r)) for r in result["responses"]]
    assert kinds == ["admin", "admin", "query", "query"]
    pull = result["responses"][2]["query"]
    assert "header" in pull[0] and exactjson.dumps(pull[1]) == '{"row":{"columns":[1,2.0]}}'
    push = result["responses"][3]["query"]
    assert [exactjson.dumps(x) for x in push[1:]] == [
        '{"row":{"columns":[1,2.0]}}', '{"row":{"columns":[2,3.5]}}', '{"finalMessage":"Limit Reached"}']
    inputs = [r for r in result["outputs"] if r["topic"] == "s"]
    assert [(r["key"], r["value"], r["timestamp"]) for r in inputs] == [(1, {"V": 2.0}, 5), (2, {"V": 3.5}, 0)]
    assert not any(r["topic"].startswith("_") or r["topic"].endswith("-changelog") for r in result["outputs"])


def test_runner_reports_the_first_failed_request() -> None:
    case = {"name": "bad", "statements": ["CREATE STREAM S (ID INT KEY) WITH (kafka_topic='s', value_format='JSON');",
                                          "SELECT * FROM NOPE;", "SELECT * FROM S EMIT CHANGES LIMIT 0;"]}
    result = run_case(case, query_timeout=5)
    assert result.error is not None and result.error["endpoint"] == "/query"
    assert result.error["status"] == 400 and isinstance(result.error["body"], dict)


def test_cli_writes_results(tmp_path: Path) -> None:
    from streamsql.cli import main

    cases = tmp_path / "cases.json"
    cases.write_text(json.dumps({"tests": [dict(CASE, format=["JSON"], statements=[
        s.replace("'JSON'", "'{FORMAT}'") for s in CASE["statements"][:3]])]}))
    results = tmp_path / "results.json"
    assert main(["test-runner", "--rest", str(cases), "--results", str(results)]) == 0
    doc = exactjson.loads(results.read_text())
    assert [r["name"] for r in doc["results"]] == ["pull and push - JSON"]
    assert set(doc["results"][0]) == {"name", "error", "responses", "outputs"}
    assert load_cases(cases, exact=True)[0]["name"] == "pull and push - JSON"

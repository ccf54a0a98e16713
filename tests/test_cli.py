"""The ``streamsql`` command: test-runner modes, scripts (-f, stdin), the not-yet-available
modes, and the shell's statement splitting and rendering (the parts testable without a
terminal; tests/test_shell.py drives the real shell)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from streamsql.cli import main
from streamsql.results import Result
from streamsql.shell import (format_value, is_complete, render_result, script_units,
                             split_statements)

pytestmark = pytest.mark.timeout(120)

STATEMENTS = """
CREATE STREAM input (id INT KEY, name STRING, v BIGINT)
  WITH (kafka_topic='input_topic', value_format='JSON');
-- only positive values; names upper-cased
CREATE STREAM output AS SELECT id, UCASE(name) AS name, v * 2 AS v2 FROM input WHERE v > 0 EMIT CHANGES;
"""
INPUTS = {"inputs": [
    {"topic": "input_topic", "key": 1, "value": {"NAME": "a", "V": 1}, "timestamp": 0},
    {"topic": "input_topic", "key": 2, "value": {"NAME": "b", "V": -1}, "timestamp": 1},
    {"topic": "input_topic", "key": 3, "value": {"NAME": "c", "V": 5}, "timestamp": 2},
]}
OUTPUTS = {"outputs": [
    {"topic": "OUTPUT", "key": 1, "value": {"NAME": "A", "V2": 2}, "timestamp": 0},
    {"topic": "OUTPUT", "key": 3, "value": {"NAME": "C", "V2": 10}, "timestamp": 2},
]}


def write_runner_files(tmp_path: Path, outputs: dict) -> list[str]:
    (tmp_path / "statements.sql").write_text(STATEMENTS)
    (tmp_path / "input.json").write_text(json.dumps(INPUTS))
    (tmp_path / "output.json").write_text(json.dumps(outputs))
    return ["test-runner", "-s", str(tmp_path / "statements.sql"), "-i", str(tmp_path / "input.json"),
            "-o", str(tmp_path / "output.json")]


# ------------------------------------------------------------------------------ test-runner
def test_test_runner_passes_on_matching_outputs(tmp_path, capsys):
    assert main(write_runner_files(tmp_path, OUTPUTS)) == 0
    assert "Test passed" in capsys.readouterr().out


def test_test_runner_fails_with_a_readable_diff(tmp_path, capsys):
    wrong = json.loads(json.dumps(OUTPUTS))
    wrong["outputs"][1]["value"]["V2"] = 11
    assert main(write_runner_files(tmp_path, wrong)) == 1
    out = capsys.readouterr().out
    assert "Test failed" in out
    assert '-{"key": 3, "timestamp": 2, "topic": "OUTPUT", "value": {"NAME": "C", "V2": 11}}' in out
    assert '+{"key": 3, "timestamp": 2, "topic": "OUTPUT", "value": {"NAME": "C", "V2": 10}}' in out


def test_test_runner_reports_a_rejected_statement(tmp_path, capsys):
    args = write_runner_files(tmp_path, OUTPUTS)
    (tmp_path / "statements.sql").write_text("CREATE STREAM output AS SELECT * FROM nowhere;")
    assert main(args) == 1
    assert "NOWHERE" in capsys.readouterr().out


def test_test_runner_missing_file_is_an_error(tmp_path, capsys):
    args = write_runner_files(tmp_path, OUTPUTS)
    args[args.index("-i") + 1] = str(tmp_path / "missing.json")
    assert main(args) == 1
    assert "missing.json" in capsys.readouterr().out


SQL_TESTS = """
----------------------------------------------------------------------------------------------------
--@test: filter and project
----------------------------------------------------------------------------------------------------
CREATE STREAM foo (id INT KEY, col1 INT, name STRING) WITH (kafka_topic='foo', value_format='JSON');
CREATE STREAM bar AS SELECT id, col1 FROM foo WHERE col1 > 0;
CREATE TABLE t (id INT PRIMARY KEY, col1 INT) WITH (kafka_topic='t', value_format='JSON');

INSERT INTO foo (id, col1, name) VALUES (1, 0, 'x');
INSERT INTO foo (id, col1, ROWTIME) VALUES (2, 5, 1000);
ASSERT VALUES bar (id, col1) VALUES (2, 5);
ASSERT VALUES foo (id, col1, name) VALUES (1, 0, 'x');
ASSERT VALUES foo (id, col1, ROWTIME) VALUES (2, 5, 1000);
ASSERT STREAM bar (id INT KEY, col1 INT) WITH (kafka_topic='BAR', value_format='JSON');
INSERT INTO t (id, col1) VALUES (3, NULL);
ASSERT VALUES t (id) VALUES (3);

----------------------------------------------------------------------------------------------------
--@test: tombstone
----------------------------------------------------------------------------------------------------
CREATE TABLE t (id INT PRIMARY KEY, col1 INT) WITH (kafka_topic='t', value_format='JSON');
CREATE TABLE t2 AS SELECT * FROM t WHERE col1 > 0;
INSERT INTO t (id, col1) VALUES (1, 5);
INSERT INTO t (id, col1) VALUES (1, 0);
ASSERT VALUES t2 (id, col1) VALUES (1, 5);
ASSERT NULL VALUES t2 (id) KEY (1);
ASSERT TABLE t2 (id INT PRIMARY KEY, col1 INT) WITH (kafka_topic='T2', value_format='JSON');

----------------------------------------------------------------------------------------------------
--@test: expects an error
--@expected.error: io.confluent.ksql.util.KsqlException
--@expected.message: does not exist
----------------------------------------------------------------------------------------------------
CREATE STREAM bar AS SELECT * FROM nowhere;

----------------------------------------------------------------------------------------------------
--@test: wrong values
----------------------------------------------------------------------------------------------------
CREATE STREAM foo (id INT KEY, col1 INT) WITH (kafka_topic='foo', value_format='JSON');
INSERT INTO foo (id, col1) VALUES (1, 1);
ASSERT VALUES foo (id, col1) VALUES (1, 2);

----------------------------------------------------------------------------------------------------
--@test: no more records
----------------------------------------------------------------------------------------------------
CREATE STREAM foo (id INT KEY, col1 INT) WITH (kafka_topic='foo', value_format='JSON');
ASSERT VALUES foo (id, col1) VALUES (1, 2);

----------------------------------------------------------------------------------------------------
--@test: wrong schema
----------------------------------------------------------------------------------------------------
CREATE STREAM foo (id INT KEY, col1 INT) WITH (kafka_topic='foo', value_format='JSON');
ASSERT STREAM foo (id INT KEY, col1 BIGINT) WITH (kafka_topic='foo');
"""


def test_test_runner_sql_tests_assert_values_and_sources(tmp_path, capsys):
    (tmp_path / "tests.sql").write_text(SQL_TESTS)
    assert main(["test-runner", "--sql-tests", str(tmp_path / "tests.sql")]) == 1
    out = capsys.readouterr().out
    assert "Test passed: tests.sql: filter and project" in out
    assert "Test passed: tests.sql: expects an error" in out
    assert "Test passed: tests.sql: tombstone" in out
    assert ("Test failed: tests.sql: wrong values\nExpected record does not match actual. "
            "Expected: KsqlGenericRecord{key=[1], value=[2]") in out
    assert ("Test failed: tests.sql: no more records\nExpected another record "
            "(KsqlGenericRecord{key=[1], value=[2], ts=None}) for FOO but already read all records: []") in out
    assert ("Expected schema does not match actual for source FOO.\n"
            "\tExpected: `ID` INTEGER KEY, `COL1` BIGINT\n\tActual: `ID` INTEGER KEY, `COL1` INTEGER") in out
    assert out.rstrip().endswith("3 passed, 3 failed")


def test_test_runner_qtt_writes_results(tmp_path):
    cases = {"tests": [
        {"name": "project", "format": ["JSON", "DELIMITED"],
         "statements": ["CREATE STREAM TEST (ID BIGINT KEY, NAME STRING) WITH (kafka_topic='test_topic', value_format='{FORMAT}');",
                        "CREATE STREAM OUT AS SELECT ID, NAME FROM TEST;"],
         "inputs": [{"topic": "test_topic", "key": 1, "value": {"NAME": "x"}}],
         "outputs": [{"topic": "OUT", "key": 1, "value": {"NAME": "x"}}]},
        {"name": "unknown source",
         "statements": ["CREATE STREAM OUT AS SELECT * FROM MISSING;"],
         "expectedException": {"type": "io.confluent.ksql.util.KsqlStatementException"}},
    ]}
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    results_path = tmp_path / "results.json"
    # Through the real command, as a user (or CI) runs it.
    done = subprocess.run([sys.executable, "-m", "streamsql", "test-runner", "--qtt", str(tmp_path / "cases.json"),
                           "--results", str(results_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    results = json.loads(results_path.read_text())["results"]
    assert [r["name"] for r in results] == ["project - JSON", "project - DELIMITED", "unknown source"]
    json_case = results[0]
    assert json_case["error"] is None
    assert [(o["topic"], o["key"], o["value"]) for o in json_case["outputs"]] == [("OUT", 1, {"NAME": "x"})]
    assert results[2]["error"] and "MISSING" in results[2]["error"]
    assert results[2]["outputs"] == []


# --------------------------------------------------------------------------- other modes
def test_server_rejects_bad_options(capsys):
    assert main(["server", "--listeners", "localhost:8088"]) == 2
    assert "invalid listener" in capsys.readouterr().err
    assert main(["server", "--listeners", "https://127.0.0.1:0"]) == 2
    assert "--ssl-certfile" in capsys.readouterr().err


def run_cli(args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamsql", *args], input=stdin, capture_output=True,
                          text=True, timeout=60)


def test_script_file_then_stdin_on_the_same_data(tmp_path):
    data = tmp_path / "data"
    script = tmp_path / "setup.sql"
    script.write_text(
        "SET 'auto.offset.reset'='earliest';  -- the query below reads the row inserted before it\n"
        "CREATE STREAM s (id STRING KEY, v BIGINT) WITH (kafka_topic='s', value_format='JSON', partitions=2);\n"
        "INSERT INTO s (id, v) VALUES ('a', 1);  -- a comment; with a semicolon\n"
        "CREATE STREAM big AS SELECT id, v * 10 AS v10 FROM s EMIT CHANGES;\n")
    done = run_cli(["--data-dir", str(data), "-f", str(script)])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Stream created" in done.stdout and "Created query with ID CSAS_BIG_" in done.stdout

    # Statements on stdin (not a terminal): the stream and the query's output are still there.
    done = run_cli(["--data-dir", str(data)],
                   stdin="SHOW STREAMS;\nSET 'auto.offset.reset'='earliest';\nSELECT * FROM big EMIT CHANGES LIMIT 1;\n")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "BIG" in done.stdout and "|a " in done.stdout and "|10 " in done.stdout
    assert "Limit Reached" in done.stdout

    # A failing statement stops the script with its message and a non-zero exit.
    done = run_cli(["--data-dir", str(data), "-e", "DESCRIBE nope; SHOW STREAMS;"])
    assert done.returncode == 1
    assert "Could not find STREAM/TABLE 'NOPE' in the Metastore" in done.stdout
    assert "Stream Name" not in done.stdout


def test_run_script_statement(tmp_path):
    inner = tmp_path / "inner.sql"
    inner.write_text("CREATE STREAM t (id STRING KEY, v INT) WITH (kafka_topic='t', value_format='JSON', partitions=1);\n")
    done = run_cli(["--data-dir", str(tmp_path / "data"), "-e", f"RUN SCRIPT '{inner}'; SHOW STREAMS;"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Stream created" in done.stdout and " T " in done.stdout


# -------------------------------------------------------------------- splitting and display
def test_split_statements_respects_quotes_and_comments():
    text = ("INSERT INTO s VALUES ('a;b', 'it''s;');  -- c;d\n"
            "/* x; y */ SELECT `we;ird` FROM s;\n"
            "SHOW")
    statements, rest = split_statements(text)
    assert statements == ["INSERT INTO s VALUES ('a;b', 'it''s;')", "-- c;d\n/* x; y */ SELECT `we;ird` FROM s"]
    assert rest.strip() == "SHOW"


def test_is_complete_decides_what_enter_does():
    assert not is_complete("CREATE STREAM s (id INT)")
    assert not is_complete("SELECT 'a;")  # the ';' is inside an open string
    assert is_complete("SHOW STREAMS;")
    assert is_complete("SHOW STREAMS;  -- done")
    assert is_complete("exit") and is_complete("QUIT;") and is_complete("help")
    assert is_complete("")


def test_script_units_keeps_shell_commands_apart():
    assert script_units("SHOW TABLES;\nhelp\nSHOW STREAMS; exit\nSHOW TYPES") == [
        "SHOW TABLES", "help", "SHOW STREAMS", "exit", "SHOW TYPES"]


def test_rendering_of_values_and_tables():
    assert format_value(None) == "null"
    assert format_value(True) == "true"
    assert format_value([1, None, "a"]) == "[1, null, a]"
    assert format_value({"A": 1.0}) == "{A=1.0}"
    table = render_result(Result("SHOW STREAMS", "streams", columns=("Stream Name", "Kafka Topic"),
                                 rows=[("PAGEVIEWS", "pageviews"), ("S", "s")]))
    lines = table.splitlines()
    assert lines[0] == " Stream Name | Kafka Topic"
    assert lines[2] == " PAGEVIEWS   | pageviews"
    assert set(lines[1]) == {"-"} and lines[-1] == lines[1]
    status = render_result(Result("CREATE", "currentStatus", "Stream created"))
    assert " Stream created" in status.splitlines()
    assert render_result(Result("INSERT", "currentStatus", None)) == ""

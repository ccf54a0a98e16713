"""``streamsql test-runner``: ksqlDB's ``ksql-test-runner`` and the QTT file runner.

ksql-test-runner mode (``-s statements.sql -i input.json -o output.json``): run the statements
on a fresh test-mode engine, pipe the input records through, and compare what the queries
wrote with the expected outputs. Exit 0 when they match; otherwise print why, with a diff of
expected and actual records, and exit 1.

QTT mode (``--qtt CASES.json --results RESULTS.json``): run every case of the file (expanded
per format) and write ``{"results": [{"name", "error", "outputs"}]}`` without comparing.

SQL test mode (``--sql-tests FILE.sql|DIR``): ksqlDB's SQL test files, with their ASSERT
VALUES / ASSERT NULL VALUES / ASSERT STREAM|TABLE statements (``streamsql.testing.sqltests``).

REST mode (``--rest CASES.json --results RESULTS.json [--processes N]``): run every case of a
REST query-validation file through the HTTP server, each on a fresh server of its own, and
write ``{"results": [{"name", "error", "responses", "outputs"}]}`` without comparing (see
``streamsql.testing.rest``).
"""
from __future__ import annotations

import argparse
import difflib
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from streamsql.testing.qtt import CaseResult, compare, expand_cases, run_case


def _load_json(path: str, what: str, key: str) -> list[dict[str, Any]]:
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"Cannot read the {what} file {path}: {exc.strerror or exc}") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"The {what} file {path} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get(key, []), list):
        raise ValueError(f"The {what} file {path} must be a JSON object with a '{key}' list")
    return list(doc.get(key, []))


def build_case(sql_file: str, input_file: str | None, output_file: str) -> dict[str, Any]:
    """A QTT-style case from ksql-test-runner's three files."""
    try:
        statements = Path(sql_file).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"Cannot read the statements file {sql_file}: {exc.strerror or exc}") from exc
    inputs = _load_json(input_file, "input", "inputs") if input_file else []
    outputs = _load_json(output_file, "output", "outputs")
    return {"name": Path(sql_file).name, "statements": [statements], "inputs": inputs, "outputs": outputs}


def _record_lines(records: list[dict[str, Any]], topics: set[str] | None) -> list[str]:
    keys = ("topic", "key", "value", "timestamp", "window", "headers")
    return [json.dumps({k: r[k] for k in keys if k in r}, sort_keys=True)
            for r in records if topics is None or r.get("topic") in topics]


def diff_text(case: dict[str, Any], result: CaseResult) -> str:
    """A unified diff of the expected and the actual records (on the expected topics)."""
    expected = case.get("outputs", []) or []
    topics = {r.get("topic") for r in expected} or None
    # Compare only the fields the expectation gives (timestamp/window are optional there).
    given = set().union(*(r.keys() for r in expected)) if expected else {"topic", "key", "value"}
    actual = [{k: v for k, v in r.items() if k in given} for r in result.outputs]
    lines = difflib.unified_diff(_record_lines(expected, None), _record_lines(actual, topics),
                                 "expected", "actual", lineterm="", n=2)
    return "\n".join(lines)


def run_ksql_test(sql_file: str, input_file: str | None, output_file: str, out: TextIO) -> int:
    """ksql-test-runner mode; returns the exit code."""
    try:
        case = build_case(sql_file, input_file, output_file)
    except ValueError as exc:
        print(str(exc), file=out)
        return 1
    result = run_case(case)
    reason = compare(case, result)
    if reason is None:
        print("\t >>> Test passed!", file=out)
        return 0
    print(f"\t >>>>> Test failed: {reason}", file=out)
    if result.error is None:
        diff = diff_text(case, result)
        if diff:
            print("\nExpected vs actual records:", file=out)
            print(diff, file=out)
    return 1


def run_qtt(cases_file: str, results_file: str, out: TextIO) -> int:
    """QTT mode: run every case, write the results file; returns the exit code."""
    try:
        doc = json.loads(Path(cases_file).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        print(f"Cannot read the QTT file {cases_file}: {exc}", file=out)
        return 1
    results = [run_case(c).to_json() for c in expand_cases(doc)]
    Path(results_file).write_text(json.dumps({"results": results}, indent=1, default=str) + "\n",
                                  encoding="utf-8")
    errors = sum(1 for r in results if r["error"] is not None)
    print(f"{len(results)} cases run ({errors} rejected by the engine); results in {results_file}", file=out)
    return 0


def run_rest(cases_file: str, results_file: str, out: TextIO, processes: int = 1) -> int:
    """REST mode: run every case through the HTTP server, write the results file; returns
    the exit code."""
    from streamsql.testing.rest import load_cases, results_json, run_cases

    try:
        cases = load_cases(cases_file)
    except (OSError, json.JSONDecodeError) as exc:
        print(f"Cannot read the REST test file {cases_file}: {exc}", file=out)
        return 1
    results = run_cases(cases, max(processes, 1))
    Path(results_file).write_text(results_json(results), encoding="utf-8")
    errors = sum(1 for r in results if r.error is not None)
    print(f"{len(results)} cases run ({errors} with a failed request); results in {results_file}", file=out)
    return 0


def run(args: argparse.Namespace) -> int:
    """Dispatch on the parsed ``test-runner`` arguments."""
    if getattr(args, "sql_tests", None):
        from streamsql.testing.sqltests import run_sql_tests

        return run_sql_tests(args.sql_tests, sys.stdout)
    if getattr(args, "rest", None):
        if not args.results:
            print("--rest needs --results RESULTS.json", file=sys.stderr)
            return 2
        return run_rest(args.rest, args.results, sys.stdout, getattr(args, "processes", 1) or 1)
    if args.qtt:
        if not args.results:
            print("--qtt needs --results RESULTS.json", file=sys.stderr)
            return 2
        return run_qtt(args.qtt, args.results, sys.stdout)
    if not args.sql_file or not args.output_file:
        print("usage: streamsql test-runner -s statements.sql -i input.json -o output.json\n"
              "       streamsql test-runner --qtt CASES.json --results RESULTS.json\n"
              "       streamsql test-runner --rest CASES.json --results RESULTS.json\n"
              "       streamsql test-runner --sql-tests FILE.sql|DIR", file=sys.stderr)
        return 2
    return run_ksql_test(args.sql_file, args.input_file, args.output_file, sys.stdout)

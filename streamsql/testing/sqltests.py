"""SQL test files: ksqlDB's SQL-based tests (``SqlTestExecutor``), run by
``streamsql test-runner --sql-tests FILE.sql|DIR``.

A file holds tests, each starting at a ``--@test: name`` comment line, optionally followed by
``--@expected.error: <exception class>`` and ``--@expected.message: <text>``. A test's
statements run in order on a fresh test-mode engine (records go through the queries at once,
as with the QTT cases), and besides the server's statements it may say:

- ``ASSERT VALUES source [(columns)] VALUES (values);``: the next record of the source's topic
  (not yet read by an earlier ASSERT) has these values; columns not listed must be NULL, and
  ROWTIME is compared when it is listed;
- ``ASSERT NULL VALUES source [(columns)] KEY (values);``: the next record is a tombstone with
  this key;
- ``ASSERT STREAM|TABLE name (elements) [WITH (...)];``: the source exists with this kind and
  schema, and the topic, formats and timestamp column that the WITH clause gives.

Only the test runner knows these; the server's parser refuses them (``ASSERT VALUES`` is a
syntax error there, as in ksqlDB).
"""
from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from streamsql import ast
from streamsql.errors import StreamSqlError

_TEST = re.compile(r"^\s*--@test:\s*(.*?)\s*$")
_DIRECTIVE = re.compile(r"^\s*--@(expected\.error|expected\.message):\s*(.*?)\s*$")
_ASSERT_VALUES = re.compile(r"^ASSERT\s+VALUES\s+(.*)$", re.I | re.S)
_ASSERT_NULL = re.compile(r"^ASSERT\s+NULL\s+VALUES\s+(.*)\bKEY\s*(\(.*\))$", re.I | re.S)
_ASSERT_SOURCE = re.compile(r"^ASSERT\s+(STREAM|TABLE)\s+(.*)$", re.I | re.S)


@dataclass
class SqlTest:
    """One test of a file: its statements' text and what error it expects, if any."""

    name: str
    text: str = ""
    expected_error: str | None = None
    expected_message: str | None = None


class TestFailure(Exception):
    """An assertion of a test that does not hold."""


def load_tests(text: str) -> list[SqlTest]:
    """The tests of a file's text (lines before the first ``--@test:`` are ignored)."""
    tests: list[SqlTest] = []
    lines: list[str] = []
    for line in text.splitlines():
        test = _TEST.match(line)
        if test:
            if tests:
                tests[-1].text = "\n".join(lines)
            tests.append(SqlTest(test.group(1)))
            lines = []
            continue
        directive = _DIRECTIVE.match(line)
        if directive and tests and not lines:
            if directive.group(1) == "expected.error":
                tests[-1].expected_error = directive.group(2)
            else:
                tests[-1].expected_message = directive.group(2)
            continue
        if tests and (lines or line.strip() and not line.strip().startswith("--")):
            lines.append(line)
    if tests:
        tests[-1].text = "\n".join(lines)
    return tests


async def run_test(test: SqlTest) -> str | None:
    """Run one test; None when it passes, else why it failed."""
    try:
        await _run_statements(test.text)
    except (StreamSqlError, TestFailure) as exc:
        if test.expected_error is None and test.expected_message is None:
            return str(exc)
        if test.expected_message is not None and test.expected_message not in str(exc):
            return f"Expected error message containing: {test.expected_message}\nActual: {exc}"
        return None
    if test.expected_error is not None or test.expected_message is not None:
        return f"Expected test to throw {test.expected_error or 'an error'} but it passed"
    return None


async def _run_statements(text: str) -> None:
    from streamsql.engine import Engine
    from streamsql.functions import test_registry
    from streamsql.runtime.log.embedded import EmbeddedLog
    from streamsql.shell import split_statements, strip_comments
    from streamsql.testing.driver import DrivingLog
    from streamsql.variables import substitute

    driving = DrivingLog(EmbeddedLog(None))
    engine = Engine(driving, registry=test_registry(), mode="test", auto_create_topics=True)
    driving.subscribers = engine.subscribers
    reader = _Reader(engine, driving)
    try:
        await engine.start()
        pieces, rest = split_statements(text)
        if strip_comments(rest).strip():
            pieces.append(rest.strip())
        for piece in pieces:
            statement = substitute(strip_comments(piece).strip(), engine.session.variables)
            if not await reader.run_assert(statement):
                await engine.execute(piece)
    finally:
        await engine.close()


@dataclass
class _Reader:
    """Runs the ASSERT statements; remembers how far each topic's records were read."""

    engine: Any
    driving: Any
    read: dict[str, int] = field(default_factory=dict)

    async def run_assert(self, statement: str) -> bool:
        """Check ``statement`` if it is a test runner's ASSERT; False when it is not one."""
        from streamsql.parser import parse_statement

        if (m := _ASSERT_NULL.match(statement)) is not None:
            stmt = parse_statement(f"INSERT INTO {m.group(1)} VALUES {m.group(2)}")
            self._values(stmt, tombstone=True)
        elif (m := _ASSERT_VALUES.match(statement)) is not None:
            self._values(parse_statement(f"INSERT INTO {m.group(1)}"), tombstone=False)
        elif (m := _ASSERT_SOURCE.match(statement)) is not None:
            self._source(parse_statement(f"CREATE {m.group(1)} {m.group(2)}"))
        else:
            return False
        return True

    def _values(self, stmt: ast.InsertValues, tombstone: bool) -> None:
        from streamsql.exec.inserts import row_values

        source = self.engine.catalog.source(stmt.target)
        if source is None:
            raise TestFailure(f"Source {stmt.target} does not exist.")
        values, rowtime = row_values(self.engine, source, stmt)
        key = tuple(values.get(c.name) for c in source.schema.key)
        value = None if tombstone else tuple(values.get(c.name) for c in source.schema.value_format_columns)
        records = [w.record for w in self.driving.written if w.topic == source.topic]
        at = self.read.get(source.topic, 0)
        if at >= len(records):
            expected = _record_text(key, value, rowtime)
            raise TestFailure(f"Expected another record ({expected}) for {source.name} but already read "
                              f"all records: [{', '.join(self._decoded(source, r) for r in records)}]")
        self.read[source.topic] = at + 1
        actual = records[at]
        actual_key, actual_value = self._decode(source, actual)
        expected_ts = rowtime if rowtime is not None else actual.timestamp
        if (actual_key, actual_value, actual.timestamp) != (key, value, expected_ts):
            raise TestFailure(
                f"Expected record does not match actual. Expected: {_record_text(key, value, expected_ts)} "
                f"vs. Actual: {_record_text(actual_key, actual_value, actual.timestamp)}")

    def _decode(self, source: Any, record: Any) -> tuple[tuple, tuple | None]:
        """A record's key columns (all NULL for a null key) and value columns (None: a tombstone)."""
        key: tuple = tuple(None for _ in source.schema.key)
        if record.key is not None and source.schema.key:
            key = tuple(self.engine.codec(source, "key").decode(record.key) or key)
        value = self.engine.codec(source, "value").decode(record.value) if record.value is not None else None
        return key, None if value is None else tuple(value)

    def _decoded(self, source: Any, record: Any) -> str:
        return _record_text(*self._decode(source, record), record.timestamp)

    def _source(self, stmt: ast.CreateSource) -> None:
        from streamsql.analyzer import formats_from_properties, resolve_type
        from streamsql.schema import Column, LogicalSchema

        source = self.engine.catalog.source(stmt.name)
        if source is None:
            raise TestFailure(f"Source {stmt.name} does not exist.")
        keys = tuple(Column(el.name, resolve_type(el.type, self.engine.catalog), "KEY")
                     for el in stmt.elements if el.constraint in ("KEY", "PRIMARY KEY"))
        values = tuple(Column(el.name, resolve_type(el.type, self.engine.catalog), el.constraint or "VALUE",
                              el.header_key) for el in stmt.elements if el.constraint not in ("KEY", "PRIMARY KEY"))
        props = stmt.properties
        checks: list[tuple[str, Any, Any]] = [
            ("type", f"K{stmt.kind}", f"K{source.kind}"),
            ("schema", str(LogicalSchema(keys, values)), str(source.schema)),
        ]
        if "KAFKA_TOPIC" in props:
            checks.append(("kafka topic", str(props.get("KAFKA_TOPIC")), source.topic))
        if any(p in props for p in ("FORMAT", "KEY_FORMAT", "VALUE_FORMAT")):
            key_fmt, value_fmt = formats_from_properties(props, self.engine.config,
                                                         default_key=source.key_format.name,
                                                         default_value=source.value_format.name)
            checks += [("key format", key_fmt, source.key_format.name),
                       ("value format", value_fmt, source.value_format.name)]
        if "TIMESTAMP" in props:
            checks.append(("timestamp column", str(props.get("TIMESTAMP")).upper(), source.timestamp_column))
        for what, expected, actual in checks:
            if expected != actual:
                raise TestFailure(f"Expected {what} does not match actual for source {source.name}.\n"
                                  f"\tExpected: {expected}\n\tActual: {actual}")


def _record_text(key: tuple, value: tuple | None, ts: int | None) -> str:
    """A record as ksqlDB's ``KsqlGenericRecord`` prints it."""
    def row(values: tuple | None) -> str:
        if values is None:
            return "null"
        return "[" + " | ".join(f"'{v}'" if isinstance(v, str) else str(v) for v in values) + "]"
    return f"KsqlGenericRecord{{key={row(key)}, value={row(value)}, ts={ts}}}"


def run_sql_tests(path: str, out: TextIO) -> int:
    """Run the tests of a ``.sql`` file, or of every ``.sql`` file under a directory; prints
    each failure and a count. Returns the exit code (1 if any test failed)."""
    root = Path(path)
    files = sorted(root.rglob("*.sql")) if root.is_dir() else [root]
    passed = failed = 0
    for file in files:
        try:
            tests = load_tests(file.read_text(encoding="utf-8"))
        except OSError as exc:
            print(f"Cannot read the test file {file}: {exc.strerror or exc}", file=out)
            return 1
        for test in tests:
            try:
                reason = asyncio.run(run_test(test))
            except Exception as exc:  # noqa: BLE001 - a crash fails the test, not the run
                reason = f"{type(exc).__name__}: {exc}"
            if reason is None:
                passed += 1
                print(f"\t >>> Test passed: {file.name}: {test.name}", file=out)
            else:
                failed += 1
                print(f"\t >>>>> Test failed: {file.name}: {test.name}\n{reason}", file=out)
    print(f"{passed} passed, {failed} failed", file=out)
    return 1 if failed else 0

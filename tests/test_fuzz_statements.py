"""Statement fuzzing: whatever the text, a statement ends in the project's own errors.

Every statement the engine is given either works or fails with a ``StreamSqlError``
(``ParseError`` with a position, ``KsqlException``, ``KsqlStatementException``) carrying
ksqlDB's message; any other exception is a bug (the server answers it with a 500), and so is
a statement taking more than ``SLOW_SECONDS``.

Statements are ksqlDB's own QTT cases (read from ``../shared/qtt`` at test time) mutated
token by token: deleted, duplicated or swapped tokens, identifiers and literals replaced with
extreme values (huge numbers and strings, unicode, lone surrogates, empty names), keywords
inserted, text cut short, expressions nested deeply or chained long. Each round runs one
case's statements in an engine of its own (the QTT test driver's set-up: in-memory log,
records delivered synchronously) with one statement replaced by mutations of it, then feeds
the case's input records through whatever queries started, asks EXPLAIN and DESCRIBE, and now
and then restarts an engine on the same log to check the command log replays.
``GENERATED`` adds fixed statements for the known deep and huge inputs.

Seeds are fixed under CI (``CI`` set) and random elsewhere; the seed is printed, and
``STREAMSQL_FUZZ_SEED=N`` replays a run. Many more statements:

    python -m tests.test_fuzz_statements --count 100000 [--seed N] [--jobs 2]
"""
from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import json
import logging
import multiprocessing
import os
import random
import re
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from streamsql.errors import ParseError, StreamSqlError

QTT_DIR = Path(__file__).resolve().parents[2] / "shared" / "qtt"
SLOW_SECONDS = 5.0
# A statement still running after this long is interrupted (SIGALRM) and reported as a hang.
HANG_SECONDS = 30.0
CI_SEED = 20240613
CI_ROUNDS = 200  # x MUTATIONS_PER_ROUND statements: 15-30 s on a CI machine
MUTATIONS_PER_ROUND = 12


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false")


# ================================================================================ statements
_TOKEN = re.compile(r"""'[^']*(?:''[^']*)*'|"[^"]*(?:""[^"]*)*"|`[^`]*(?:``[^`]*)*`|--[^\n]*|\s+"""
                    r"""|\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+|[A-Za-z_][A-Za-z0-9_@]*"""
                    r"""|->|:=|=>|<=|>=|<>|!=|\$\{[^}]*\}|.""", re.S)
_KEYWORDS = """SELECT FROM WHERE AS AND OR NOT NULL TRUE FALSE CASE WHEN THEN ELSE END CAST
    CREATE STREAM TABLE INSERT INTO VALUES WITH DROP TERMINATE EXPLAIN DESCRIBE SHOW LIST
    EMIT CHANGES FINAL LIMIT GROUP BY PARTITION HAVING WINDOW TUMBLING HOPPING SESSION SIZE
    ADVANCE RETENTION GRACE PERIOD JOIN LEFT RIGHT FULL OUTER INNER ON WITHIN IN LIKE ESCAPE
    BETWEEN IS DISTINCT KEY PRIMARY HEADERS HEADER ARRAY MAP STRUCT TYPE IF EXISTS REPLACE
    SOURCE DELETE TOPIC PRINT BEGINNING INTERVAL SET UNSET DEFINE UNDEFINE RUN SCRIPT ALTER ADD
    COLUMN PAUSE RESUME ALL EXTENDED SECONDS MINUTE DAYS MILLISECOND INT BIGINT DOUBLE STRING
    DECIMAL BOOLEAN BYTES DATE TIME TIMESTAMP VARCHAR ROWTIME ROWPARTITION ROWOFFSET
    WINDOWSTART WINDOWEND""".split()
_PUNCTUATION = list("(),;.*+-/%<>=[]") + ["->", ":=", "=>", "<>", "!=", "'", '"', "`", "${x}", "--", "/*"]
_EXTREME_IDENTIFIERS = [
    "A" * 300, '"the key"', '"\ud800"', '"x\udfffy"', '""', '``', '"ünïcödé"', '"日本語"', '`a``b`',
    '"a/../../b"', '".."', '"' + "x" * 5000 + '"', "SELECT", "KSQL_PROCESSING_LOG", '"a\x00b"',
    "ROWTIME", "WINDOWSTART", '"' + "é" * 250 + '"', "_", "X" * 250, '"a.b"', '"-"', "`\n`",
]
_EXTREME_LITERALS = [
    "9" * 5000, "0" * 5000 + "1", "9223372036854775808", "-9223372036854775808", "-9223372036854775809",
    "2147483648", "1E400", "-1E400", "1E-400", "1.7976931348623159E308", "." + "9" * 5000,
    "9" * 5000 + ".5", "1111111111111111111111111.5", "0.00000000000000000000000000000000000000001",
    "'" + "x" * 100_000 + "'", "''", "'\ud800'", "'ünïcödé'", "'日本'", "'" + "%_" * 500 + "'",
    "'1970-01-01T00:00:00'", "'9999-99-99'", "'NaN'", "'" + "a(" * 200 + "'", "NULL", "0", "-0", "1/0",
    "0.0/0.0", "1 % 0", "'a b'", "'\\'", "'{\"a\": [1, {\"b\": null}]}'", "'\x00'", "ARRAY[]", "MAP()",
    "STRUCT()", "-2147483648", "CAST(NULL AS INT)", "'" + "'" * 2000 + "'",
]
_WRAPPERS: list[tuple[str, str]] = [
    ("ABS(", ")"), ("(", ")"), ("CAST(", " AS BIGINT)"), ("CAST(", " AS STRING)"), ("-", ""),
    ("CASE WHEN TRUE THEN ", " END"), ("CASE 1 WHEN 1 THEN ", " ELSE NULL END"), ("NOT ", ""),
    ("ARRAY[", "]"), ("STRUCT(A := ", ")"), ("COALESCE(", ", NULL)"), ("CONCAT(", ", 'x')"),
    ("MAP('k' := ", ")"), ("(", " IS NULL)"), ("TRANSFORM(ARRAY[1], X => ", ")"),
]
_TYPE_NESTERS = [("STRUCT<A ", ">"), ("ARRAY<", ">"), ("MAP<STRING, ", ">")]
_DEPTHS = [2, 10, 63, 64, 65, 100, 1000, 5000]
_CHAIN_OPS = [" + ", " - ", " * ", " / ", " % ", " OR ", " AND ", " || ", ", "]
_CHAIN_LENGTHS = [9, 100, 600, 2000, 20000]


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def _significant(toks: list[str]) -> list[int]:
    return [i for i, tok in enumerate(toks) if not tok.isspace()]


def _pick(rng: random.Random, toks: list[str], pred: Callable[[str], bool]) -> int | None:
    found = [i for i in _significant(toks) if pred(toks[i])]
    return rng.choice(found) if found else None


def _is_identifier(tok: str) -> bool:
    return tok[:1] in ('"', "`") or (tok[:1].isalpha() and tok.upper() not in _KEYWORDS)


def _is_literal(tok: str) -> bool:
    return tok[:1] == "'" or tok[:1].isdigit() or tok.upper() in ("NULL", "TRUE", "FALSE")


def _is_operand(tok: str) -> bool:
    return _is_literal(tok) or _is_identifier(tok)


# Mutations that repeat text stop at about this many characters (twice the statement length
# limit): past it they test nothing more, and mutating a mutant again could need gigabytes.
_MUTANT_BUDGET = 2 << 20


def _within_budget(count: int, piece: int) -> int:
    """``count`` repetitions of ``piece`` characters, fewer if they would pass the budget."""
    return max(1, min(count, _MUTANT_BUDGET // max(piece, 1)))


def _mutate_once(rng: random.Random, toks: list[str], donor: list[str]) -> list[str]:
    """One mutation of a statement's tokens (``donor``: another statement's, to splice)."""
    toks = list(toks)
    sig = _significant(toks)
    if not sig:
        return [rng.choice(_KEYWORDS)]
    i = rng.choice(sig)
    kind = rng.randrange(13)
    if kind == 0:
        del toks[i]
    elif kind == 1:
        toks.insert(i, toks[i] + " ")
    elif kind == 2:
        j = rng.choice(sig)
        toks[i], toks[j] = toks[j], toks[i]
    elif kind == 3:
        k = _pick(rng, toks, _is_identifier)
        toks[k if k is not None else i] = rng.choice(_EXTREME_IDENTIFIERS)
    elif kind == 4:
        k = _pick(rng, toks, _is_literal)
        toks[k if k is not None else i] = rng.choice(_EXTREME_LITERALS)
    elif kind == 5:
        toks.insert(i, f" {rng.choice(_KEYWORDS)} ")
    elif kind == 6:
        toks.insert(i, rng.choice(_PUNCTUATION))
    elif kind == 7:
        toks = toks[:i]
    elif kind == 8:
        k = _pick(rng, toks, _is_operand)
        k = i if k is None else k
        before, after = rng.choice(_WRAPPERS)
        depth = _within_budget(rng.choice(_DEPTHS), len(before) + len(after))
        toks[k] = before * depth + toks[k] + after * depth
    elif kind == 9:
        k = _pick(rng, toks, _is_operand)
        k = i if k is None else k
        op = rng.choice(_CHAIN_OPS)
        toks[k] = op.join([toks[k]] * _within_budget(rng.choice(_CHAIN_LENGTHS), len(toks[k]) + len(op)))
    elif kind == 10:
        k = _pick(rng, toks, lambda tok: tok.upper() in ("INT", "INTEGER", "BIGINT", "STRING", "VARCHAR",
                                                          "DOUBLE", "BOOLEAN", "DECIMAL"))
        if k is not None:
            before, after = rng.choice(_TYPE_NESTERS)
            depth = _within_budget(rng.choice(_DEPTHS), len(before) + len(after))
            toks[k] = before * depth + toks[k] + after * depth
        else:
            toks.insert(i, f" {rng.choice(_EXTREME_LITERALS)} ")
    elif kind == 11 and donor:
        a = rng.randrange(len(donor))
        toks[i:i] = donor[a:a + rng.randint(1, 8)]
    else:
        toks = toks[:i] + toks[i + 1:] + [toks[i]]
    return toks


def mutate(rng: random.Random, text: str, donor: str) -> str:
    """``text`` with one to three mutations."""
    toks, donor_toks = tokens(text), tokens(donor)
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        toks = _mutate_once(rng, toks, donor_toks)
    return "".join(toks)


def _nest(before: str, after: str, inner: str, depth: int) -> str:
    return before * depth + inner + after * depth


_S = "CREATE STREAM S (K STRING KEY, A INT, B STRING, D DECIMAL(4, 2)) WITH (KAFKA_TOPIC='s', VALUE_FORMAT='JSON', PARTITIONS=1);"

# Statements run after _S, each once: the inputs that took the server down or were slow.
GENERATED: list[str] = [
    "SELECT " + "+".join(["1"] * 600) + " FROM S EMIT CHANGES;",
    "CREATE STREAM SUM600 AS SELECT K, " + " + ".join(["A"] * 600) + " AS Z FROM S;",
    "CREATE STREAM MIX AS SELECT K, " + " - ".join(["A * 2"] * 600) + " AS Z FROM S;",
    "CREATE STREAM DECS AS SELECT K, " + " + ".join(["D"] * 600) + " AS Z FROM S;",
    "CREATE STREAM OR1000 AS SELECT * FROM S WHERE " + " OR ".join(["A = 1"] * 1000) + ";",
    "CREATE STREAM AND1000 AS SELECT * FROM S WHERE " + " AND ".join(["A IS NOT NULL"] * 1000) + ";",
    "CREATE TABLE AGG AS SELECT K, SUM(" + " + ".join(["A"] * 600) + ") AS Z FROM S GROUP BY K;",
    "SELECT " + _nest("ABS(", ")", "A", 1000) + " FROM S EMIT CHANGES;",
    "SELECT " + _nest("CASE WHEN A = 1 THEN ", " END", "A", 1000) + " FROM S EMIT CHANGES;",
    "SELECT " + _nest("CAST(", " AS INT)", "A", 1000) + " FROM S EMIT CHANGES;",
    "SELECT " + _nest("(", ")", "A", 5000) + " FROM S EMIT CHANGES;",
    "SELECT " + "NOT " * 1000 + "TRUE FROM S EMIT CHANGES;",
    "SELECT " + "- " * 1000 + "A FROM S EMIT CHANGES;",
    "CREATE STREAM T1 (" + _nest("A STRUCT<", ">", "A INT", 1000) + ") WITH (KAFKA_TOPIC='t1', VALUE_FORMAT='JSON', PARTITIONS=1);",
    "CREATE TYPE DEEP AS " + _nest("ARRAY<", ">", "INT", 1000) + ";",
    "EXPLAIN " * 1000 + "SELECT * FROM S;",
    "CREATE STREAM T2 (A INT) WITH (KAFKA_TOPIC='t2', VALUE_FORMAT='JSON', PARTITIONS=1);",
    "CREATE STREAM D64 AS SELECT K, " + _nest("ABS(", ")", "A", 63) + " AS Z FROM S;",
    "CREATE STREAM C64 AS SELECT K, " + _nest("CASE WHEN A = 1 THEN ", " ELSE 0 END", "A", 30) + " AS Z FROM S;",
    "SELECT " + "9" * 5000 + " FROM S EMIT CHANGES;",
    "SELECT * FROM S EMIT CHANGES LIMIT " + "9" * 5000 + ";",
    "SELECT K, COUNT(*) FROM S WINDOW TUMBLING (SIZE " + "9" * 5000 + " SECONDS) GROUP BY K EMIT CHANGES;",
    "CREATE STREAM T3 (A DECIMAL(" + "9" * 5000 + ", 2)) WITH (KAFKA_TOPIC='t3', VALUE_FORMAT='JSON', PARTITIONS=1);",
    "CREATE STREAM T4 (A INT) WITH (KAFKA_TOPIC='t4', VALUE_FORMAT='JSON', PARTITIONS=" + "9" * 5000 + ");",
    "CREATE STREAM T5 (A INT) WITH (KAFKA_TOPIC='t5', VALUE_FORMAT='JSON', PARTITIONS=1000000);",
    "CREATE STREAM T6 (A INT) WITH (KAFKA_TOPIC='t6', VALUE_FORMAT='JSON', PARTITIONS='many');",
    "CREATE STREAM T7 WITH (KAFKA_TOPIC='t7', VALUE_FORMAT='AVRO', PARTITIONS=1, VALUE_SCHEMA_ID='x');",
    "SELECT 99999999999999999999 FROM S EMIT CHANGES;",
    'CREATE STREAM "the key" AS SELECT * FROM S;',
    "CREATE STREAM " + "A" * 300 + " AS SELECT * FROM S;",
    "CREATE TABLE " + "G" * 240 + " WITH (KAFKA_TOPIC='g') AS SELECT K, COUNT(*) AS N FROM S GROUP BY K;",
    "CREATE STREAM T8 (A INT) WITH (KAFKA_TOPIC='a b', VALUE_FORMAT='JSON', PARTITIONS=1);",
    "CREATE STREAM T9 (A INT) WITH (KAFKA_TOPIC='" + "t" * 250 + "', VALUE_FORMAT='JSON', PARTITIONS=1);",
    'CREATE STREAM "a/../../b" WITH (KAFKA_TOPIC=\'ab\') AS SELECT K, A FROM S;',
    'CREATE TABLE "../../../x" WITH (KAFKA_TOPIC=\'x\') AS SELECT K, COUNT(*) AS N FROM S GROUP BY K;',
    "INSERT INTO S (K, D) VALUES ('k', 1111111111111111111111111.5);",
    "INSERT INTO S (K, A) VALUES ('k', 1/0);",
    "INSERT INTO S (K, A) VALUES ('k', 1%0);",
    "INSERT INTO S (K, D) VALUES ('k', 1.5/0);",
    "INSERT INTO S (K, B) VALUES ('k', SUBSTRING('x', 'a'));",
    'CREATE STREAM "\ud800" AS SELECT * FROM S;',
    'CREATE STREAM "x\ud800" (A INT) WITH (KAFKA_TOPIC=\'x\', VALUE_FORMAT=\'JSON\', PARTITIONS=1);',
    "INSERT INTO S (K, B) VALUES ('k', '\udc00');",
    "INSERT INTO S (K, B) VALUES ('k', '" + "x" * 1_000_000 + "');",
    "INSERT INTO S (K, B) VALUES ('k', '" + "x" * 2_000_000 + "');",
    "SELECT 1 FROM S /* " + "x" * 2_000_000 + " */;",
    "SELECT " + " OR ".join(["A=1"] * 150_000) + " FROM S EMIT CHANGES;",
    "CREATE STREAM DIV AS SELECT K, A / 0 AS Q, A % 0 AS R, D / 0 AS E FROM S;",
    # Column names end up in generated code (processing-log messages): quotes, line breaks
    # and NULs in them must stay text.
    'CREATE STREAM Q1 AS SELECT K, A / 0 AS "it\'s", A + 1 AS "x\ny", A + 2 AS "n\x00l" FROM S;',
    'CREATE TABLE Q2 AS SELECT K, SUM(A) AS "s\'um" FROM S GROUP BY K;',
    'CREATE STREAM Q3 AS SELECT K, EXPLODE(ARRAY[A]) AS "e\'x" FROM S;',
]


# ================================================================================== running
@dataclass
class Failure:
    """A statement that ended in a foreign exception, or was slow."""

    kind: str  # "foreign", "slow", "hang"
    statement: str
    error: str
    where: str
    seconds: float
    trace: str = ""

    def signature(self) -> str:
        return f"{self.kind}: {self.error.split(':')[0]} at {self.where}"

    def report(self) -> str:
        shown = self.statement if len(self.statement) <= 400 else (
            f"{self.statement[:300]!r}...({len(self.statement)} characters)...{self.statement[-60:]!r}")
        text = f"[{self.kind}] {self.error[:300]} ({self.seconds:.2f}s) at {self.where}\n    statement: {shown}"
        if self.trace and os.environ.get("STREAMSQL_FUZZ_TRACE"):
            text += "\n" + self.trace
        return text


@dataclass
class Tally:
    statements: int = 0
    rounds: int = 0
    ok: int = 0
    rejected: int = 0
    failures: list[Failure] = field(default_factory=list)

    def merge(self, other: "Tally") -> None:
        self.statements += other.statements
        self.rounds += other.rounds
        self.ok += other.ok
        self.rejected += other.rejected
        self.failures += other.failures

    @property
    def unknown(self) -> list[Failure]:
        """The failures that fail the suite (all of them)."""
        return list(self.failures)

    def summary(self) -> str:
        foreign = sum(f.kind == "foreign" for f in self.failures)
        slow = sum(f.kind in ("slow", "hang") for f in self.failures)
        lines = [f"{self.statements} statements in {self.rounds} rounds: {self.ok} ran, {self.rejected} "
                 f"rejected with StreamSqlError, {foreign} foreign exceptions, {slow} slow (> {SLOW_SECONDS} s)"]
        seen: dict[str, Failure] = {}
        for f in self.failures:
            seen.setdefault(f.signature(), f)
        lines += [f.report() for f in seen.values()]
        return "\n".join(lines)


# A statement may make the process grow by this much at most while the fuzzer runs: past it,
# allocations fail with MemoryError (reported with the statement) instead of the machine
# running out of memory.
MEMORY_HEADROOM = 4 << 30


@contextlib.contextmanager
def _memory_limit(headroom: int = MEMORY_HEADROOM) -> Iterator[None]:
    """Cap the process's address space at its current size plus ``headroom`` (Linux; a no-op
    elsewhere), restoring the previous limit afterwards."""
    try:
        import resource

        with open("/proc/self/statm") as statm:
            size = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        previous = resource.getrlimit(resource.RLIMIT_AS)
        hard = previous[1]
        cap = size + headroom if hard == resource.RLIM_INFINITY else min(size + headroom, hard)
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    except (ImportError, OSError, ValueError):
        yield
        return
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, previous)


class _Hang(BaseException):
    """Raised by the watchdog's SIGALRM into a statement running for HANG_SECONDS."""


def _alarm(_signum: int, _frame: Any) -> None:
    raise _Hang()


def _where(exc: BaseException) -> str:
    """The innermost frame of the project's own code in a traceback."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "/streamsql/" in f.filename or "/runtime/" in f.filename
            or "/server/" in f.filename] or frames
    f = ours[-1] if ours else None
    return f"{Path(f.filename).name}:{f.lineno} {f.name}" if f else "?"


class Runner:
    """Runs statements and records what is not a StreamSqlError (see the module docstring)."""

    def __init__(self, tally: Tally, verbose: bool = False) -> None:
        self.tally = tally
        self.verbose = verbose
        self.watchdog = hasattr(signal, "setitimer") and _main_thread()

    async def run(self, engine: Any, text: str, *, count: bool = True) -> bool:
        """Execute ``text``; True when it worked."""
        if count:
            self.tally.statements += 1
        start = time.monotonic()
        if self.watchdog:
            signal.setitimer(signal.ITIMER_REAL, HANG_SECONDS)
        try:
            await engine.execute(text)
            ok = True
        except StreamSqlError as exc:
            _check_error(exc)
            ok = False
        except _Hang:
            self._fail("hang", text, f"still running after {HANG_SECONDS} s", "?", start)
            return False
        except Exception as exc:  # noqa: BLE001 - what the fuzzer is looking for
            self._fail("foreign", text, f"{type(exc).__name__}: {exc}", _where(exc), start, exc)
            return False
        finally:
            if self.watchdog:
                signal.setitimer(signal.ITIMER_REAL, 0)
        seconds = time.monotonic() - start
        if seconds > SLOW_SECONDS:
            self._fail("slow", text, f"took {seconds:.1f} s", "?", start)
        if count:
            if ok:
                self.tally.ok += 1
            else:
                self.tally.rejected += 1
        return ok

    async def guarded(self, what: str, step: Callable[[], Any]) -> None:
        """Run a step other than a statement (feeding records, replaying the log)."""
        start = time.monotonic()
        if self.watchdog:
            signal.setitimer(signal.ITIMER_REAL, HANG_SECONDS)
        try:
            await step()
        except StreamSqlError:
            pass
        except _Hang:
            self._fail("hang", what, f"still running after {HANG_SECONDS} s", "?", start)
        except Exception as exc:  # noqa: BLE001 - what the fuzzer is looking for
            self._fail("foreign", what, f"{type(exc).__name__}: {exc}", _where(exc), start, exc)
        finally:
            if self.watchdog:
                signal.setitimer(signal.ITIMER_REAL, 0)

    def _fail(self, kind: str, text: str, error: str, where: str, start: float,
              exc: BaseException | None = None) -> None:
        trace = "".join(traceback.format_exception(exc)[-8:]) if exc is not None else ""
        failure = Failure(kind, text, error, where, time.monotonic() - start, trace)
        if self.verbose and failure.signature() not in {f.signature() for f in self.tally.failures}:
            print(failure.report(), flush=True)  # now: a process that dies later loses nothing
        self.tally.failures.append(failure)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _check_error(exc: StreamSqlError) -> None:
    """The project's own errors must be reportable: a message that encodes as JSON (the
    server's answer), and a position on a ParseError."""
    message = str(exc)
    message.encode("utf-8")  # raises UnicodeEncodeError (not a StreamSqlError) if it cannot
    if isinstance(exc, ParseError) and (exc.line is None or exc.column is None):
        raise AssertionError(f"ParseError without a position: {message[:200]}")


async def _new_engine(inner: Any = None) -> tuple[Any, Any, Any]:
    """An engine on a driving log as the QTT runner sets it up: (engine, driving log, inner)."""
    from streamsql.engine import Engine
    from streamsql.functions import test_registry
    from streamsql.runtime.log.embedded import EmbeddedLog
    from streamsql.testing.driver import DrivingLog

    inner = inner if inner is not None else EmbeddedLog(None)
    driving = DrivingLog(inner)
    engine = Engine(driving, registry=test_registry(), mode="test", auto_create_topics=True)
    driving.subscribers = engine.subscribers
    await engine.start()
    engine.schema_registry.set_compatibility("NONE")
    return engine, driving, inner


@contextlib.asynccontextmanager
async def _stream_s() -> Any:
    """An engine (see ``_new_engine``) with the stream ``_S``, closed afterwards."""
    engine, driving, inner = await _new_engine()
    try:
        await engine.execute(_S)
        yield engine, driving, inner
    finally:
        await engine.close()


def _encode(engine: Any, record: dict[str, Any]) -> Any:
    """A case's input record in the format of the (maybe mutated) source over its topic, as
    the QTT runner writes it; None when the test's own encoding cannot (the record does not
    fit the mutated schema): that is the harness, not the engine."""
    from streamsql.testing.qtt import encode_input

    try:
        return encode_input(engine, record)
    except Exception:  # noqa: BLE001 - see the docstring
        return None


async def _feed(engine: Any, driving: Any, case: dict[str, Any], runner: "Runner") -> None:
    """The case's first input records, through whatever queries run: a record must never
    make a query raise (it is skipped or its column NULL, and the processing log says why)."""
    for record in (case.get("inputs") or [])[:20]:
        encoded = _encode(engine, record)
        if encoded is None:
            continue
        topic = record["topic"]

        async def produce() -> None:
            if (await driving.describe_topic(topic)) is None:
                await driving.create_topic(topic, 1)
            await driving.produce(topic, [encoded])
        await runner.guarded(f"a record of {case['name']!r} on {topic}: {str(record)[:300]}", produce)


async def fuzz_round(rng: random.Random, case: dict[str, Any], donor: str, runner: Runner,
                     mutations: int = MUTATIONS_PER_ROUND) -> None:
    """One case: its statements with one of them replaced by ``mutations`` mutants."""
    from streamsql.testing.qtt import _register_topic_schemas

    statements = case["statements"]
    target = rng.randrange(len(statements))
    engine, driving, inner = await _new_engine()
    runner.tally.rounds += 1
    try:
        for topic in case.get("topics", []) or []:
            await driving.create_topic(topic["name"], int(topic.get("partitions", 1) or 1))
        try:
            _register_topic_schemas(engine.schema_registry, case.get("topics", []) or [])
            await engine.schema_registry.flush()
        except Exception:  # noqa: BLE001 - a case's schemas are set-up, not under test
            pass
        for text in statements[:target]:
            await runner.run(engine, text, count=False)
        mutants = [mutate(rng, statements[target], donor) for _ in range(mutations)]
        for text in mutants:
            await runner.run(engine, text)
            if rng.random() < 0.1:
                await runner.run(engine, "EXPLAIN " + text, count=False)
        for text in statements[target + 1:]:
            await runner.run(engine, text, count=False)
        await _feed(engine, driving, case, runner)
        for name in list(engine.catalog.sources)[:4]:
            quoted = '"' + name.replace('"', '""') + '"'
            await runner.run(engine, f"DESCRIBE {quoted} EXTENDED;", count=False)
        for query_id in list(engine.catalog.queries)[:2]:
            await runner.run(engine, f'EXPLAIN "{query_id}";', count=False)
        if rng.random() < 0.15:
            await runner.guarded(f"replaying the command log of {case['name']!r} after {mutants!r}"[:2000],
                                 lambda: _check_replay(engine, inner))
    finally:
        await engine.close()


async def _check_replay(engine: Any, inner: Any) -> None:
    """A second engine on the same log rebuilds the same catalog from the command log."""
    from streamsql.testing.driver import DrivingLog
    from streamsql.engine import Engine
    from streamsql.functions import test_registry

    driving = DrivingLog(inner)
    again = Engine(driving, registry=test_registry(), mode="test", auto_create_topics=True)
    driving.subscribers = again.subscribers
    records: list[tuple[int, str]] = []
    handler = _Collect(records)
    logging.getLogger("streamsql.engine").addHandler(handler)
    try:
        await again.start()
    finally:
        logging.getLogger("streamsql.engine").removeHandler(handler)
        await again.close()
    errors = [r for level, r in records if level >= logging.ERROR]
    if errors:
        raise AssertionError(f"replay: internal error applying a command: {errors[0][:500]}")
    if set(again.catalog.sources) != set(engine.catalog.sources) or \
            set(again.catalog.queries) != set(engine.catalog.queries):
        raise AssertionError(
            f"replay rebuilt a different catalog: sources {sorted(again.catalog.sources)} vs "
            f"{sorted(engine.catalog.sources)}, queries {sorted(again.catalog.queries)} vs "
            f"{sorted(engine.catalog.queries)}; " + " | ".join(r[:300] for _, r in records))


class _Collect(logging.Handler):
    """Keeps (level, message) of the WARNING and ERROR records logged while the command log
    is replayed (a command that failed to apply; the replay's last resort)."""

    def __init__(self, records: list[tuple[int, str]]) -> None:
        super().__init__(logging.WARNING)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        exc = f"\n{record.exc_info[1]!r}" if record.exc_info else ""
        self.records.append((record.levelno, record.getMessage() + exc))


# ================================================================================== corpus
def load_cases() -> list[dict[str, Any]]:
    """The QTT cases (one per format), with at least one statement."""
    from streamsql.testing.qtt import expand_cases

    cases = []
    for path in sorted(QTT_DIR.glob("*.json")):
        doc = json.loads(path.read_text("utf-8"))
        cases += [c for c in expand_cases(doc) if c.get("statements")]
    return cases


def seed_from_env() -> int:
    value = os.environ.get("STREAMSQL_FUZZ_SEED")
    if value:
        return int(value)
    return CI_SEED if _in_ci() else random.SystemRandom().randrange(2**31)


def fuzz(seed: int, rounds: int, cases: list[dict[str, Any]] | None = None,
         mutations: int = MUTATIONS_PER_ROUND, progress: bool = False) -> Tally:
    """``rounds`` rounds of mutations, reproducible from ``seed``."""
    cases = cases if cases is not None else load_cases()
    rng = random.Random(seed)
    tally = Tally()
    runner = Runner(tally, verbose=progress)
    previous = signal.signal(signal.SIGALRM, _alarm) if runner.watchdog else None

    async def main() -> None:
        started = time.monotonic()
        for i in range(rounds):
            case = rng.choice(cases)
            donor = rng.choice(rng.choice(cases)["statements"])
            await fuzz_round(rng, case, donor, runner, mutations)
            if progress and (i + 1) % 100 == 0:
                print(f"  seed {seed}: {i + 1} rounds, {tally.statements} statements, "
                      f"{len(tally.failures)} failures, {time.monotonic() - started:.0f} s", flush=True)
    try:
        with _memory_limit():
            asyncio.run(main())
    finally:
        if previous is not None:
            signal.signal(signal.SIGALRM, previous)
    return tally


def run_generated() -> Tally:
    """Each GENERATED statement once, after the stream they use."""
    tally = Tally()
    runner = Runner(tally)
    previous = signal.signal(signal.SIGALRM, _alarm) if runner.watchdog else None

    async def main() -> None:
        engine, driving, inner = await _new_engine()
        try:
            await runner.run(engine, _S, count=False)
            for text in GENERATED:
                await runner.run(engine, text)
                await runner.run(engine, "EXPLAIN " + text, count=False)
            await runner.run(engine, "INSERT INTO S (K, A, B, D) VALUES ('k', 1, 'b', 1.5);", count=False)
            for name in list(engine.catalog.sources):
                quoted = '"' + name.replace('"', '""') + '"'
                await runner.run(engine, f"DESCRIBE {quoted} EXTENDED;", count=False)
            await runner.guarded("replaying the command log", lambda: _check_replay(engine, inner))
        finally:
            await engine.close()
    try:
        with _memory_limit():
            asyncio.run(main())
    finally:
        if previous is not None:
            signal.signal(signal.SIGALRM, previous)
    return tally


# =================================================================================== tests
@pytest.fixture(scope="module")
def cases() -> list[dict[str, Any]]:
    if not QTT_DIR.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"no QTT cases at {QTT_DIR}")
        pytest.skip(f"no QTT cases at {QTT_DIR}")
    return load_cases()


def test_generated_statements_end_in_our_errors() -> None:
    tally = run_generated()
    print(tally.summary())
    assert not tally.unknown, tally.summary()


def test_mutated_qtt_statements_end_in_our_errors(cases: list[dict[str, Any]]) -> None:
    seed = seed_from_env()
    print(f"fuzz seed {seed} (replay with STREAMSQL_FUZZ_SEED={seed})")
    tally = fuzz(seed, CI_ROUNDS, cases)
    print(tally.summary())
    assert not tally.unknown, f"seed {seed}: " + tally.summary()


@pytest.mark.parametrize("text, message", [
    ("SELECT " + "ABS(" * 100 + "A" + ")" * 100 + " FROM S;", "Expression too deeply nested"),
    ("SELECT " + "9" * 5000 + " FROM S;", "Invalid numeric literal"),
    ("SELECT 1 FROM S LIMIT " + "9" * 30 + ";", "Invalid numeric literal"),
    ('CREATE STREAM "\ud800" AS SELECT * FROM S;', "lone surrogate"),
    ("SELECT 99999999999999999999 FROM S;", "Invalid numeric literal: 99999999999999999999"),
])
def test_parse_errors_have_a_position(text: str, message: str) -> None:
    from streamsql.parser import parse

    with pytest.raises(ParseError) as failed:
        parse(text)
    assert message in str(failed.value)
    assert failed.value.line == 1 and failed.value.column is not None and failed.value.column > 1
    assert str(failed.value).startswith(f"line 1:{failed.value.column}: ")


def test_statement_limits_are_checked_before_parsing() -> None:
    from streamsql.parser import MAX_LENGTH_PROPERTY, MAX_TOKENS_PROPERTY, NO_LIMITS, StatementLimits, parse

    text = "INSERT INTO S (B) VALUES ('" + "x" * 200 + "');"
    with pytest.raises(ParseError, match=f"Statement is too long: {len(text)} characters, more than the "
                                         f"limit of 100 \\(the '{MAX_LENGTH_PROPERTY}' property\\)") as failed:
        parse(text, StatementLimits(length=100))
    assert (failed.value.line, failed.value.column) == (1, 101)
    assert parse(text, NO_LIMITS)
    text = "SELECT " + " + ".join(["1"] * 100) + " FROM S;"
    with pytest.raises(ParseError, match=f"line 1:106: Statement is too long: more than 50 tokens "
                                         f"\\(the '{MAX_TOKENS_PROPERTY}' property\\)"):
        parse(text, StatementLimits(tokens=50))
    assert StatementLimits.from_config({MAX_TOKENS_PROPERTY: "0", MAX_LENGTH_PROPERTY: 10}) == StatementLimits(10, None)


def test_engine_statement_length_property() -> None:
    async def main() -> None:
        from streamsql.engine import Engine
        from streamsql.runtime.log.embedded import EmbeddedLog

        engine = Engine(EmbeddedLog(None), mode="test", config={"streamsql.statement.max.length": 50})
        await engine.start()
        with pytest.raises(ParseError, match="Statement is too long"):
            await engine.execute(_S)
        await engine.close()
    asyncio.run(main())


@pytest.mark.parametrize("text, message", [
    ('CREATE STREAM "the key" AS SELECT * FROM S;',
     'Topic name "the key" is illegal, it contains a character other than ASCII alphanumerics'),
    ("CREATE STREAM T (A INT) WITH (KAFKA_TOPIC='" + "t" * 250 + "', VALUE_FORMAT='JSON', PARTITIONS=1);",
     "Topic name is illegal, it can't be longer than 249 characters"),
    ("CREATE TABLE " + "G" * 220 + " WITH (KAFKA_TOPIC='g') AS SELECT K, COUNT(*) AS N FROM S GROUP BY K;",
     "is too long for a stateful query: its internal topics"),
    ("CREATE STREAM T (A INT) WITH (KAFKA_TOPIC='t', VALUE_FORMAT='JSON', PARTITIONS=10001);",
     "Invalid value 10001 for property PARTITIONS: a topic may have at most 10000 partitions"),
    ("CREATE STREAM T WITH (KAFKA_TOPIC='t', VALUE_FORMAT='AVRO', VALUE_SCHEMA_ID='x');",
     "Invalid value x for property VALUE_SCHEMA_ID: Not a number of type INT"),
    ("INSERT INTO S (K, D) VALUES ('k', 1111111111111111111111111.5);",
     "Failed to insert values into 'S'. Numeric field overflow: A field with precision 4 and scale 2"),
    ("INSERT INTO S (K, A) VALUES ('k', 1/0);",
     "Failed to insert values into 'S'. Error evaluating expression (1 / 0): / by zero"),
    ("CREATE TABLE W AS SELECT K, COUNT(*) AS N FROM S WINDOW TUMBLING (SIZE 0 SECONDS) GROUP BY K;",
     "Window size (sizeMs) must be larger than zero."),
    ("CREATE TABLE W AS SELECT K, COUNT(*) AS N FROM S WINDOW HOPPING (SIZE 1 DAY, ADVANCE BY 1 MILLISECOND) GROUP BY K;",
     "puts each record in 86400000 windows; at most 10000 are supported"),
    ("CREATE STREAM T (A DECIMAL(5, 6)) WITH (KAFKA_TOPIC='t', VALUE_FORMAT='JSON', PARTITIONS=1);",
     "line 1:28: DECIMAL precision must be >= scale: DECIMAL(5,6)"),
])
def test_rejections_carry_ksqldb_messages(text: str, message: str) -> None:
    async def main() -> None:
        async with _stream_s() as (engine, driving, inner):
            with pytest.raises(StreamSqlError) as failed:
                await engine.execute(text)
            assert message in str(failed.value)
            # Refused before any topic was made for it.
            assert not {"t", "g", "W"} & set(await inner.list_topics())
    asyncio.run(main())


def test_query_ids_are_safe_names() -> None:
    """A sink's odd name (spaces, '/', '..') never reaches a path or a topic name."""
    async def main() -> None:
        async with _stream_s() as (engine, driving, inner):
            await engine.execute('CREATE TABLE "../../x y" WITH (KAFKA_TOPIC=\'x\') AS SELECT K, COUNT(*) AS N FROM S GROUP BY K;')
            assert list(engine.catalog.queries) == ["CTAS_.._.._x_y_2"]
    asyncio.run(main())


def test_long_chains_work_end_to_end() -> None:
    """A 600-term sum and a 1000-term OR are ordinary SQL: they run and compute."""
    async def main() -> None:
        async with _stream_s() as (engine, driving, inner):
            await engine.execute("CREATE STREAM SUMS AS SELECT K, " + " + ".join(["A"] * 600) + " AS Z, "
                                 + " - ".join(["D"] * 600) + " AS W FROM S WHERE "
                                 + " OR ".join(f"A = {i}" for i in range(1000)) + ";")
            await engine.execute("INSERT INTO S (K, A, D) VALUES ('k', 3, 0.5); INSERT INTO S (K, A, D) VALUES ('k', 5000, 0.5);")
            written = [w for w in driving.written if w.topic == "SUMS"]
            assert [json.loads(w.record.value) for w in written] == [{"Z": 1800, "W": -299.0}]
    asyncio.run(main())


def test_division_by_zero_in_a_query_is_null_and_logged() -> None:
    """As in ksqlDB: the record's column is NULL and the processing log says why."""
    async def main() -> None:
        async with _stream_s() as (engine, driving, inner):
            await engine.execute("CREATE STREAM DIV AS SELECT K, A / 0 AS Q, A % 0 AS R, D / 0 AS E, A / 2 AS H FROM S;")
            await engine.execute("INSERT INTO S (K, A, D) VALUES ('k', 7, 1.5);")
            written = [json.loads(w.record.value) for w in driving.written if w.topic == "DIV"]
            assert written == [{"Q": None, "R": None, "E": None, "H": 3}]
            assert len(engine._processing_errors) == 3
    asyncio.run(main())


def test_server_answers_bad_statements_with_400(tmp_path: Path) -> None:
    """Over real HTTP: ksqlDB's statement_error body with 400, never a 500."""
    import httpx

    from tests.test_server_api import with_node

    bad = [
        ("SELECT 1 FROM S EMIT CHANGES;".replace("1", "+".join(["1"] * 600)), 40002),
        ('CREATE STREAM "the key" AS SELECT * FROM S;', 40001),
        ("CREATE STREAM T (A " + "STRUCT<A " * 1000 + "INT" + ">" * 1000 + ") WITH (KAFKA_TOPIC='t', "
         "VALUE_FORMAT='JSON', PARTITIONS=1);", 40001),
        ("INSERT INTO S (K, D) VALUES ('k', 1111111111111111111111111.5);", 40001),
        ("INSERT INTO S (K, A) VALUES ('k', 1/0);", 40001),
        ("CREATE STREAM T (A INT) WITH (KAFKA_TOPIC='t', VALUE_FORMAT='JSON', PARTITIONS=1000000);", 40001),
        ("CREATE STREAM T WITH (KAFKA_TOPIC='t', VALUE_FORMAT='AVRO', VALUE_SCHEMA_ID='x');", 40001),
        ("SELECT " + "9" * 5000 + " FROM S;", 40001),
        ("INSERT INTO S (K, B) VALUES ('k', '" + "x" * (1 << 20) + "');", 40001),
    ]

    async def test(url: str, app: Any) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            response = await client.post("/ksql", json={"ksql": _S})
            assert response.status_code == 200, response.text
            for text, code in bad:
                response = await client.post("/ksql", json={"ksql": text})
                assert response.status_code == 400, (text[:100], response.status_code, response.text[:300])
                body = response.json()
                assert body["@type"] == "statement_error" and body["error_code"] == code, body
                assert body["message"] and "Internal error" not in body["message"]
            # A lone surrogate cannot reach the engine over JSON: the body is refused as such.
            response = await client.post("/ksql", content=b'{"ksql": "CREATE STREAM \\"\\ud800\\" AS SELECT * FROM S;"}',
                                         headers={"content-type": "application/json"})
            assert response.status_code == 400 and response.json()["error_code"] == 40000
    with_node(tmp_path, test)


# ===================================================================================== CLI
def _job(args: tuple[int, int, int]) -> Tally:
    seed, rounds, mutations = args
    return fuzz(seed, rounds, mutations=mutations, progress=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fuzz the engine with mutated QTT statements.")
    parser.add_argument("--count", type=int, default=10_000, help="mutated statements to run")
    parser.add_argument("--seed", type=int, default=None, help="seed (default: $STREAMSQL_FUZZ_SEED or random)")
    parser.add_argument("--jobs", type=int, default=1, help="processes (each with seed + its index)")
    parser.add_argument("--mutations", type=int, default=MUTATIONS_PER_ROUND, help="mutants per round")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else seed_from_env()
    rounds = max(1, args.count // args.mutations)
    print(f"fuzz seed {seed}, {rounds} rounds of {args.mutations} in {args.jobs} process(es)", flush=True)
    started = time.monotonic()
    total = run_generated()
    shares = [(seed + i, rounds // args.jobs + (i < rounds % args.jobs), args.mutations) for i in range(args.jobs)]
    if args.jobs == 1:
        total.merge(_job(shares[0]))
    else:
        # (ProcessPoolExecutor, not Pool: a worker that dies fails the run instead of hanging it)
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
            for tally in pool.map(_job, shares):
                total.merge(tally)
    print(total.summary())
    print(f"{time.monotonic() - started:.0f} s")
    return 1 if total.unknown else 0


if __name__ == "__main__":
    sys.exit(main())

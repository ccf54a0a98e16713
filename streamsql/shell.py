"""The interactive shell (and the script runner behind ``streamsql -f``).

One asyncio loop runs everything: the engine's persistent queries are asyncio tasks, so the
shell waits for input with ``PromptSession.prompt_async`` (inside ``patch_stdout``) and the
queries keep running meanwhile. A statement ends at a ``;`` outside quotes and comments;
Enter on an unfinished statement starts a new line.

Push queries (and PRINT) stream rows as they arrive until their LIMIT or Ctrl-C; Ctrl-C stops
the query, never the shell: the shell owns SIGINT for its whole life and cancels only the
query in the foreground. Errors are printed and the shell goes on.

Rendering of results is done by pure functions (``render_result``, ``RowPrinter``) so that
tests can check them without a terminal.

The shell talks to a *backend*: ``execute(text) -> list[Result]`` and ``completion_words()``.
``EmbeddedBackend`` wraps an in-process engine; ``streamsql.server.client.RemoteBackend``
sends statements to a server's REST API (``streamsql --server URL``). Everything else (input,
rendering, push queries, Ctrl-C) is the same code for both.
"""
from __future__ import annotations

import asyncio
import base64
import logging
import re
import shutil
import signal
import sys
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable, TextIO

from streamsql import __version__
from streamsql.errors import StreamSqlError
from streamsql.results import Result

log = logging.getLogger(__name__)

PROMPT = "streamsql> "
CONTINUATION = "         > "
SHELL_COMMANDS = ("EXIT", "QUIT", "HELP", "CLEAR", "VERSION", "HISTORY", "SPOOL", "OUTPUT", "SERVER")
# The shell commands that take an argument (``SPOOL <file>|OFF``, ``OUTPUT JSON|TABULAR``,
# ``SERVER [url]``); the others are a word alone.
_COMMANDS_WITH_ARGUMENT = ("SPOOL", "OUTPUT", "SERVER")
MAX_SCRIPT_DEPTH = 8

KEYWORDS = (
    "SELECT", "FROM", "WHERE", "EMIT", "CHANGES", "FINAL", "LIMIT", "CREATE", "STREAM", "TABLE",
    "STREAMS", "TABLES", "AS", "WITH", "KEY", "PRIMARY", "INSERT", "INTO", "VALUES", "DROP",
    "DELETE", "TOPIC", "TOPICS", "SHOW", "LIST", "DESCRIBE", "EXTENDED", "EXPLAIN", "PRINT",
    "BEGINNING", "INTERVAL", "TERMINATE", "QUERIES", "FUNCTIONS", "FUNCTION", "PROPERTIES",
    "TYPES", "TYPE", "VARIABLES", "SET", "UNSET", "DEFINE", "UNDEFINE", "RUN", "SCRIPT", "PARTITION",
    "BY", "GROUP", "HAVING", "WINDOW", "TUMBLING", "HOPPING", "SESSION", "SIZE", "ADVANCE",
    "GRACE", "PERIOD", "JOIN", "LEFT", "INNER", "OUTER", "FULL", "ON", "WITHIN", "AND", "OR",
    "NOT", "NULL", "IS", "IN", "LIKE", "BETWEEN", "CASE", "WHEN", "THEN", "ELSE", "END", "CAST",
    "TRUE", "FALSE", "IF", "EXISTS", "REPLACE", "ALL", "STRING", "VARCHAR", "INT", "INTEGER",
    "BIGINT", "DOUBLE", "BOOLEAN", "DECIMAL", "BYTES", "DATE", "TIME", "TIMESTAMP", "ARRAY",
    "MAP", "STRUCT", "KAFKA_TOPIC", "VALUE_FORMAT", "KEY_FORMAT", "FORMAT", "PARTITIONS",
    "REPLICAS", "TIMESTAMP_FORMAT", "WRAP_SINGLE_VALUE", "EXIT", "QUIT", "HELP", "CONNECTOR",
    "CONNECTORS", "PLUGINS", "SOURCE", "SINK", "SPOOL", "OFF", "OUTPUT", "JSON", "TABULAR", "VERSION",
    "HISTORY", "SERVER",
)

HELP = """\
Statements end with ';' and may span several lines. Some to try:

  SET 'auto.offset.reset'='earliest';      -- queries read topics from the start (default: latest)
  CREATE STREAM s (id STRING KEY, v BIGINT) WITH (kafka_topic='s', value_format='JSON', partitions=1);
  INSERT INTO s (id, v) VALUES ('a', 1);
  CREATE STREAM big AS SELECT id, v * 10 AS v10 FROM s WHERE v > 0 EMIT CHANGES;
  SELECT * FROM big EMIT CHANGES;          -- streams rows; Ctrl-C stops the query
  SELECT id, COUNT(*) FROM s WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY id EMIT CHANGES;
  SELECT * FROM s;                         -- a pull query: the stream's rows so far
  PRINT 'BIG' FROM BEGINNING LIMIT 1;
  SHOW STREAMS;  SHOW TABLES;  SHOW QUERIES;  SHOW TOPICS;  SHOW FUNCTIONS;  SHOW PROPERTIES;
  DESCRIBE big EXTENDED;  DESCRIBE FUNCTION ucase;  EXPLAIN <query id>;
  TERMINATE <query id>;  DROP STREAM big DELETE TOPIC;
  RUN SCRIPT '/path/to/file.sql';          -- runs the statements of a file
  CREATE SOURCE CONNECTOR f WITH ('connector.class'='FileStreamSource', 'file'='/tmp/in.txt', 'topic'='lines');
  SHOW CONNECTORS;  DESCRIBE CONNECTOR f;  SHOW CONNECTOR PLUGINS;  DROP CONNECTOR f;

Shell commands (no ';' needed): help, clear, exit, quit (Ctrl-D also quits),
  version, history, spool <file> | spool off (also write the session to a file),
  output json | output tabular (how results are printed), server [url] (show or switch).
Tab completes keywords and the names of streams, tables, queries and functions.
"""


# ============================================================================ statements
# What split_statements looks at: quoted text and comments (skipped whole, unterminated ones
# to the end) and semicolons. The regex engine skips everything else, so a 10 MB request of
# statements splits in C, not a Python step per character.
_SPLIT_MARKS = re.compile(r"""'[^']*(?:''[^']*)*'?|"[^"]*"?|`[^`]*`?|--[^\n]*|/\*.*?(?:\*/|\Z)|;""", re.S)


def split_statements(text: str) -> tuple[list[str], str]:
    """Split ``text`` at semicolons outside quotes and comments.

    Returns the complete statements (without their ``;``, whitespace-stripped, comment-only
    pieces dropped) and the unfinished remainder after the last ``;``.
    """
    statements: list[str] = []
    start = 0
    for mark in _SPLIT_MARKS.finditer(text):
        if mark.group() != ";":
            continue
        piece = text[start:mark.start()].strip()
        if strip_comments(piece).strip():
            statements.append(piece)
        start = mark.end()
    return statements, text[start:]


def script_units(text: str) -> list[str]:
    """The statements of a script, in order, and its shell commands: a line holding only
    ``help``/``exit``/... between statements is a command even without ``;``."""
    units: list[str] = []
    pending = ""
    for line in text.splitlines(keepends=True):
        if not strip_comments(pending).strip() and _shell_command(line):
            units.append(line.strip())
            pending = ""
            continue
        pending += line
        statements, pending = split_statements(pending)
        units += statements
        if pending.endswith("\n") and _shell_command(pending):  # "SHOW TABLES; exit"
            units.append(pending.strip())
            pending = ""
    if strip_comments(pending).strip():
        units.append(pending.strip())  # a last statement without ';' still runs
    return units


def strip_comments(text: str) -> str:
    """``text`` without ``--`` and ``/* */`` comments (quotes respected)."""
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c in ("'", '"', "`"):
            j = text.find(c, i + 1)
            j = n if j < 0 else j + 1
            out.append(text[i:j])
            i = j
        elif text.startswith("--", i):
            nl = text.find("\n", i)
            i = n if nl < 0 else nl
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _shell_command(text: str) -> str | None:
    word, _ = _shell_command_args(text)
    return word


def _shell_command_args(text: str) -> tuple[str | None, str]:
    """The shell command ``text`` is (upper case) and its argument, or ``(None, "")``."""
    body = strip_comments(text).strip().rstrip(";").strip()
    word, _, rest = body.partition(" ")
    word = word.upper()
    rest = rest.strip()
    if "\n" in body or word not in SHELL_COMMANDS or (rest and word not in _COMMANDS_WITH_ARGUMENT):
        return None, ""
    return word, rest


def is_complete(text: str) -> bool:
    """Whether Enter should run the buffer: every statement is ended by ``;`` (or the buffer
    holds only a shell command, or nothing at all)."""
    if _shell_command(text):
        return True
    _, rest = split_statements(text)
    return not strip_comments(rest).strip()


_RUN_SCRIPT = re.compile(r"^\s*RUN\s+SCRIPT\s+'((?:[^']|'')*)'\s*$", re.IGNORECASE | re.DOTALL)


# ============================================================================ rendering
def format_value(value: Any) -> str:
    """A column value as ksqlDB's CLI shows it (``null``, ``true``, ``[1, 2]``, ``{A=1}``)."""
    from streamsql.formats.common import java_double_str

    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return java_double_str(value)
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, list):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{format_value(k)}={format_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def render_table(columns: Iterable[str], rows: Iterable[Iterable[Any]], width: int = 0) -> str:
    """ksqlDB's listing style: `` A | B `` header, a dashed rule, rows, a closing rule.

    A table wider than the terminal (``width``, the terminal's own when 0) has its widest
    columns narrowed until it fits; their long values wrap inside their cell, at spaces where
    they can, so the columns stay in line instead of running off the screen."""
    cols = list(columns)
    body = [[format_value(v) if not isinstance(v, str) else v for v in row] for row in rows]
    widths = [len(c) for c in cols]
    for row in body:
        for i, v in enumerate(row):
            widths[i] = max(widths[i], max((len(x) for x in v.split("\n")), default=0))
    total = width or shutil.get_terminal_size((120, 24)).columns
    widths = _fitted(widths, [len(c) for c in cols], total - (3 * len(widths) - 1))

    def line(values: list[str]) -> str:
        # A value over several lines (EXPLAIN's plans, wrapped values) continues under its column.
        parts = [_wrap_words(v, w) for v, w in zip(values, widths)]
        height = max((len(p) for p in parts), default=1)
        return "\n".join("|".join(f" {(p[i] if i < len(p) else '').ljust(w)} " for p, w in zip(parts, widths)).rstrip()
                         for i in range(height))

    rule = "-" * (sum(widths) + 3 * len(widths) - 1)
    out = [line(cols), rule]
    out += [line(r) for r in body]
    out.append(rule)
    return "\n".join(out)


_MIN_COLUMN = 12  # a narrowed column keeps at least this many characters (or its header's)


def _fitted(widths: list[int], headers: list[int], budget: int) -> list[int]:
    """``widths`` with the widest capped at one common width so that they sum to at most
    ``budget`` (no column narrower than its header or ``_MIN_COLUMN``): the narrow columns
    keep their width, only the long ones wrap."""
    if sum(widths) <= budget:
        return widths
    floors = [min(w, max(h, _MIN_COLUMN)) for w, h in zip(widths, headers)]
    lo, hi = 0, max(widths)
    while lo < hi:  # the largest cap that fits
        cap = (lo + hi + 1) // 2
        if sum(max(f, min(w, cap)) for w, f in zip(widths, floors)) <= budget:
            lo = cap
        else:
            hi = cap - 1
    return [max(f, min(w, lo)) for w, f in zip(widths, floors)]


def _wrap_words(text: str, width: int) -> list[str]:
    """``text`` in lines of at most ``width`` characters, broken at spaces where a line has
    one (at its own newlines too), else cut."""
    out: list[str] = []
    for part in text.split("\n"):
        part = part.replace("\t", " ")
        while len(part) > width:
            cut = part.rfind(" ", 1, width + 1)
            if cut <= 0:
                out.append(part[:width])
                part = part[width:]
            else:
                out.append(part[:cut])
                part = part[cut + 1:]
        out.append(part)
    return out


def _message_box(message: str) -> str:
    return render_table(["Message"], [[message]])


def _source_text(desc: dict[str, Any]) -> str:
    extended = desc.get("extended")
    kind = desc.get("type", "")
    out = ["", f"{'Name':<21}: {desc['name']}"]
    if extended:
        ts = desc.get("timestamp") or ""
        out += [
            f"{'Type':<21}: {kind}" + (" (read-only source)" if desc.get("isSource") else ""),
            f"{'Timestamp field':<21}: " + (ts if ts else "Not set - using <ROWTIME>"),
            f"{'Key format':<21}: {desc['keyFormat']}",
            f"{'Value format':<21}: {desc['valueFormat']}",
            f"{'Kafka topic':<21}: {desc['topic']} (partitions: {desc['partitions']}, "
            f"replication: {desc['replication']})",
        ]
        if desc.get("logStartOffsets") is not None:
            from streamsql.describe import offsets_text

            # Beside the topic: where each partition's log starts once retention deleted
            # its oldest segments (0 everywhere until then).
            out.append(f"{'Log start offsets':<21}: {offsets_text(desc['logStartOffsets'])}")
        out += [f"{'Statement':<21}: {desc.get('statement') or ''}", ""]
        if desc.get("windowType"):
            out.insert(3, f"{'Window type':<21}: {desc['windowType']}")
    out.append(render_table(["Field", "Type"], desc.get("fieldRows", [])))
    if not extended:
        out.append("For runtime statistics and query details run: DESCRIBE <Stream,Table> EXTENDED;")
        return "\n".join(out)
    for title, key in (("read from", "readQueries"), ("write into", "writeQueries")):
        queries = desc.get(key) or []
        if not queries:
            continue
        header = f"Queries that {title} this {kind}"
        out += ["", header, "-" * len(header)]
        out += [f"{q['id']} ({q['state']}) : {q['queryString']};" for q in queries]
        out += ["", "For query topology and execution plan please run: EXPLAIN <QueryId>"]
    out += ["", "Local runtime statistics", "------------------------",
            desc.get("statistics") or "(no queries have processed records of this source yet)",
            f"(Statistics of the local streamsql engine's interaction with the topic {desc['topic']})"]
    return "\n".join(out)


def _function_text(entity: dict[str, Any]) -> str:
    out = ["", f"{'Name':<12}: {entity['name']}", f"{'Author':<12}: {entity.get('author', '')}",
           f"{'Overview':<12}: {entity.get('description', '')}", f"{'Type':<12}: {entity['type']}",
           f"{'Jar':<12}: {entity.get('path', 'internal')}", f"{'Variations':<12}: ", ""]
    for fn in entity.get("functions", []):
        args = ", ".join(f"{a['name']} {a['type']}" for a in fn["arguments"])
        out.append(f"\t{'Variation':<12}: {entity['name']}({args})")
        out.append(f"\t{'Returns':<12}: {fn['returnType']}")
        if fn.get("description"):
            out.append(f"\t{'Description':<12}: {fn['description']}")
        for a in fn["arguments"]:
            if a.get("description"):
                out.append(f"\t{a['name']:<12}: {a['description']}")
        out.append("")
    return "\n".join(out)


def _query_text(desc: dict[str, Any]) -> str:
    out = [""]
    if desc.get("id"):
        out.append(f"{'ID':<21}: {desc['id']}")
    out += [f"{'Query Type':<21}: {desc.get('queryType', '')}",
            f"{'SQL':<21}: {desc.get('statementText', '')}"]
    status = desc.get("ksqlHostQueryStatus") or {}
    if status:
        out.append(f"{'Host Query Status':<21}: {{" + ", ".join(f"{k}={v}" for k, v in status.items()) + "}")
    out += ["", render_table(["Field", "Type"], desc.get("fieldRows", []))]
    out += ["", "Sources that this query reads from: ", "-----------------------------------"]
    out += list(desc.get("sources", []))
    out += ["", "For source description please run: DESCRIBE [EXTENDED] <SourceId>"]
    if desc.get("sinks"):
        out += ["", "Sinks that this query writes to: ", "-----------------------------------"]
        out += list(desc["sinks"])
        out += ["", "For sink description please run: DESCRIBE [EXTENDED] <SinkId>"]
    out += ["", "Execution plan", "--------------", desc.get("executionPlan", "")]
    if desc.get("topology"):
        out += ["", "Generated pipeline (Python)", "---------------------------", desc["topology"].rstrip()]
    return "\n".join(out)


def render_result(result: Result) -> str:
    """Text for a non-streaming result ('' when there is nothing to show)."""
    kind = result.kind
    entity = result.entity if isinstance(result.entity, dict) else {}
    if kind == "currentStatus":
        text = _message_box(result.message) if result.message else ""
    elif kind == "sourceDescription" and entity:
        text = _source_text(entity["sourceDescription"])
    elif kind == "sourceDescriptionList" and entity:
        descs = entity.get("sourceDescriptions", [])
        text = "\n".join(_source_text(d) for d in descs) if descs else "(none)"
    elif kind == "describe_function" and entity:
        text = _function_text(entity)
    elif kind == "queryDescription" and entity:
        text = _query_text(entity["queryDescription"])
    elif kind == "connector_description" and entity:
        from streamsql.exec.connectors import description_text

        text = description_text(entity)
    elif kind == "rows":
        text = RowPrinter(result.columns).whole(result.rows)
    elif result.columns:
        text = render_table(result.columns, result.rows)
    else:
        text = result.message or ""
    for w in result.warnings:
        text += f"\nWARNING: {w}"
    return text


@dataclass
class RowPrinter:
    """Rows of a push or pull query in ksqlDB's boxed style, one line per row as it comes."""

    columns: tuple[str, ...]
    terminal_width: int = 0
    widths: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = max(1, len(self.columns))
        total = self.terminal_width or shutil.get_terminal_size((120, 24)).columns
        budget = max(10, min(40, (total - 1) // n - 1))
        self.widths = [max(len(c), budget) for c in self.columns]

    def rule(self) -> str:
        return "+" + "+".join("-" * w for w in self.widths) + "+"

    def header(self) -> str:
        return "\n".join([self.rule(), self.line(self.columns), self.rule()])

    def line(self, values: Iterable[Any]) -> str:
        """One row; a value longer than its column wraps onto further lines inside its cell
        (as ksqlDB's CLI does), so the columns stay in line."""
        cells = [v if isinstance(v, str) and not isinstance(v, bool) else format_value(v) for v in values]
        pieces = [_wrap_cell(c, w) for c, w in zip(cells, self.widths)]
        height = max((len(p) for p in pieces), default=1)
        lines = []
        for i in range(height):
            lines.append("|" + "|".join((p[i] if i < len(p) else "").ljust(w)
                                        for p, w in zip(pieces, self.widths)) + "|")
        return "\n".join(lines)

    def row(self, row: tuple[Any, ...]) -> str:
        return self.line(format_value(v) for v in row)

    def whole(self, rows: Iterable[tuple[Any, ...]]) -> str:
        body = [self.row(r) for r in rows]
        return "\n".join([self.header(), *body, self.rule()])


def _wrap_cell(text: str, width: int) -> list[str]:
    """``text`` cut into lines of at most ``width`` characters (at its own newlines too)."""
    out: list[str] = []
    for part in text.split("\n"):
        part = part.replace("\t", " ")
        out += [part[i:i + width] for i in range(0, len(part), width)] or [""]
    return out


_LIMIT = re.compile(r"\bLIMIT\s+(\d+)\s*;?\s*$", re.IGNORECASE)


def _limit_of(statement: str) -> int | None:
    """The LIMIT a push query or PRINT ends with, if any."""
    match = _LIMIT.search(strip_comments(statement).strip())
    return int(match.group(1)) if match else None


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def result_entity(result: Result) -> dict[str, Any] | None:
    """The REST entity of a non-streaming result (what ``POST /ksql`` answers for it), as
    ksqlDB's CLI prints under ``OUTPUT JSON``; None for a statement that says nothing."""
    text = result.statement if result.statement.rstrip().endswith(";") else result.statement + ";"
    warnings = [{"message": w} for w in result.warnings]
    if isinstance(result.entity, dict) and "@type" in result.entity:
        entity = _strip_shell_keys(result.entity)
        entity.setdefault("statementText", text)
        entity.setdefault("warnings", warnings)
        return entity
    if result.kind == "currentStatus":
        if not result.message:
            return None
        return {"@type": "currentStatus", "statementText": text,
                "commandStatus": {"status": "SUCCESS", "message": result.message, "queryId": result.query_id},
                "warnings": warnings}
    if result.columns:  # a listing without an entity of its own
        return {"@type": result.kind, "statementText": text,
                "rows": [dict(zip(result.columns, r)) for r in result.rows], "warnings": warnings}
    if result.message:
        return {"@type": "warning_entity", "statementText": text, "message": result.message,
                "warnings": warnings}
    return None


def _strip_shell_keys(value: Any) -> Any:
    # "fieldRows" is the shell's own rendering aid, not part of the REST entity.
    if isinstance(value, dict):
        return {k: _strip_shell_keys(v) for k, v in value.items() if k != "fieldRows"}
    if isinstance(value, list):
        return [_strip_shell_keys(v) for v in value]
    return value


# ============================================================================== backends
class EmbeddedBackend:
    """The shell's statements run by an engine in this process."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    async def execute(self, text: str) -> list[Result]:
        return await self.engine.execute(text)

    def completion_words(self) -> list[str]:
        """Names in the catalog and function registry (read at each completion, so new
        names appear at once)."""
        eng = self.engine
        names = list(eng.catalog.sources) + list(eng.catalog.queries) + list(eng.catalog.types)
        names += list(eng.registry.scalars) + list(eng.registry.tables) + list(eng.registry.aggregates)
        return names


def as_backend(engine_or_backend: Any) -> Any:
    """A backend as is; an engine wrapped in ``EmbeddedBackend``."""
    if hasattr(engine_or_backend, "completion_words"):
        return engine_or_backend
    return EmbeddedBackend(engine_or_backend)


# ============================================================================ completion
def _completer_class():
    from prompt_toolkit.completion import Completer, Completion

    class SqlCompleter(Completer):
        """Keywords, and the names of streams, tables, queries and functions the backend
        knows."""

        def __init__(self, backend: Any) -> None:
            self.backend = backend

        def words(self) -> list[str]:
            return self.backend.completion_words()

        def get_completions(self, document, complete_event):
            word = document.get_word_before_cursor(WORD=False)
            if not word or not (word[0].isalpha() or word[0] == "_"):
                return
            upper = word.upper()
            lower = word.islower()
            seen = set()
            for kw in sorted(k for k in set(KEYWORDS) if k.startswith(upper) and k != upper):
                seen.add(kw)
                yield Completion(kw.lower() if lower else kw, -len(word), display_meta="keyword")
            for name in sorted(n for n in set(self.words()) if n.upper().startswith(upper) and n != word):
                if name not in seen:
                    yield Completion(name, -len(word))

    return SqlCompleter


# ================================================================================= shell
class QuitShell(Exception):
    """``exit`` / ``quit`` was entered."""


class Shell:
    """Runs statements on a backend (an engine, or a server) and prints their results to
    ``out``.

    ``run_interactive`` is the prompt loop; ``run_text`` runs a script (``-f``, piped stdin,
    RUN SCRIPT). Both need to run inside the asyncio loop that runs the engine. ``location``
    names where statements go when there is no data directory (a server's URL);
    ``history_path`` is where the prompt keeps its history (default: in the data directory).
    """

    def __init__(self, engine: Any, data_dir: Path | None = None, out: TextIO | None = None,
                 mode_label: str = "embedded", location: str | None = None,
                 history_path: Path | None = None) -> None:
        self.engine = engine
        self.backend = as_backend(engine)
        self.data_dir = data_dir
        self._out = out
        self.mode_label = mode_label
        self.location = location
        self.history_path = history_path or (data_dir / ".streamsql_history" if data_dir is not None else None)
        self._foreground: asyncio.Task[Any] | None = None
        self._main_task: asyncio.Task[Any] | None = None
        self._interactive = False
        self._script_depth = 0
        self._spool: TextIO | None = None  # SPOOL <file>: everything shown is written there too
        self.output_format = "TABULAR"  # OUTPUT JSON|TABULAR
        self._session: Any = None  # the prompt session (HISTORY reads its history)

    # -- output ---------------------------------------------------------------------------
    def echo(self, text: str = "") -> None:
        stream = self._out or sys.stdout
        stream.write(text + "\n")
        stream.flush()
        if self._spool is not None:
            self._spool.write(text + "\n")
            self._spool.flush()

    def echo_json(self, value: Any) -> None:
        """``value`` as ksqlDB's CLI prints entities under OUTPUT JSON: indented JSON."""
        import json

        self.echo(json.dumps(value, indent=2, default=_json_default, ensure_ascii=False))

    def banner(self) -> str:
        where = ""
        if self.data_dir is not None:
            shown = str(self.data_dir)
            if not self.data_dir.is_absolute() and not shown.startswith("."):
                shown = f"./{shown}"
            where = f" (data in {shown})"
        elif self.location:
            where = f" ({self.location})"
        return (f"streamsql {__version__} - ksqlDB-compatible streaming SQL, {self.mode_label} mode{where}\n"
                "Type 'help' for help; 'exit', 'quit' or Ctrl-D to quit. End statements with ';'.\n")

    # -- SIGINT ---------------------------------------------------------------------------
    def _install_sigint(self) -> None:
        loop = asyncio.get_running_loop()
        self._main_task = asyncio.current_task()
        try:
            loop.add_signal_handler(signal.SIGINT, self._on_sigint)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread / platform
            log.debug("cannot install a SIGINT handler; Ctrl-C keeps its default behaviour")

    def _on_sigint(self) -> None:
        if self._foreground is not None and not self._foreground.done():
            self._foreground.cancel()
        elif not self._interactive and self._main_task is not None:
            self._main_task.cancel()

    # -- running statements ---------------------------------------------------------------
    async def run_text(self, text: str) -> bool:
        """Run every statement of ``text``; stops at the first error. True when all ran."""
        for stmt in script_units(text):
            if not await self.run_statement(stmt):
                return False
        return True

    async def run_statement(self, text: str) -> bool:
        """Run one statement (or shell command) and print its result. True on success."""
        command, argument = _shell_command_args(text)
        if command in ("EXIT", "QUIT"):
            raise QuitShell()
        if command == "HELP":
            self.echo(HELP)
            return True
        if command == "CLEAR":
            self.echo("\x1b[2J\x1b[H")
            return True
        if command is not None:
            return await self._command(command, argument)
        match = _RUN_SCRIPT.match(strip_comments(text))
        if match:
            return await self._run_script(match.group(1).replace("''", "'"))
        try:
            results = await self.backend.execute(text)
        except StreamSqlError as exc:
            self._echo_error(exc, text)
            return False
        except Exception as exc:  # an engine bug must not kill the shell
            log.exception("internal error executing %r", text)
            self._echo_error(exc, text, f"Internal error: {type(exc).__name__}: {exc}")
            return False
        for result in results:
            if result.kind == "stream" and result.stream is not None:
                if not await self.stream(result):
                    return False
            elif self.output_format == "JSON":
                self._echo_result_json(result)
            else:
                rendered = render_result(result)
                if rendered:
                    self.echo(rendered)
        return True

    async def _command(self, command: str, argument: str) -> bool:
        """The shell's own commands besides help/clear/exit (as ksqlDB's CLI has them)."""
        if command == "VERSION":
            self.echo(f"Version: {__version__}")
            return True
        if command == "HISTORY":
            entries = list(self._session.history.get_strings()) if self._session is not None else []
            for i, entry in enumerate(entries, 1):
                self.echo(f"{i:>5}  {entry}")
            return True
        if command == "OUTPUT":
            if not argument:
                self.echo(f"Current output format: {self.output_format}")
                return True
            wanted = argument.strip("'\"").upper()
            if wanted not in ("JSON", "TABULAR"):
                self.echo(f"Invalid output format: '{argument}' (valid formats: JSON, TABULAR)")
                return False
            self.output_format = wanted
            self.echo(f"Output format set to {wanted}")
            return True
        if command == "SPOOL":
            return self._spool_command(argument.strip("'\""))
        if command == "SERVER":
            return await self._server_command(argument.strip("'\""))
        return False

    def _spool_command(self, target: str) -> bool:
        if not target:
            self.echo("Usage: SPOOL <file> | SPOOL OFF")
            return False
        if target.upper() == "OFF":
            if self._spool is None:
                self.echo("Not spooling")
                return True
            name = self._spool.name
            self._spool.close()
            self._spool = None
            self.echo(f"Spool written to {name}")
            return True
        if self._spool is not None:
            self.echo(f"Already spooling to {self._spool.name}: SPOOL OFF first")
            return False
        try:
            self._spool = open(Path(target).expanduser(), "a", encoding="utf-8")
        except OSError as exc:
            self.echo(f"Cannot spool to {target}: {exc.strerror or exc}")
            return False
        self.echo(f"Session will be spooled to {target}")
        self.echo("Enter SPOOL OFF to disable")
        return True

    async def _server_command(self, url: str) -> bool:
        client = getattr(self.backend, "client", None)
        if client is None:
            if url:
                self.echo("This shell runs the embedded engine; start it with a server URL "
                          "(streamsql http://host:8088) to talk to a server")
                return False
            self.echo("Embedded engine" + (f" (data in {self.data_dir})" if self.data_dir else ""))
            return True
        if not url:
            self.echo(f"Server: {client.url}")
            return True
        from streamsql.server.client import RemoteBackend, RemoteError

        try:
            new_client = client.with_url(url)
        except Exception as exc:  # httpx refuses the URL itself
            self.echo(f"Cannot connect to the server at {url}: {exc}")
            return False
        try:
            info = await new_client.info()
        except RemoteError as exc:
            await new_client.aclose()
            self.echo(f"Cannot connect to the server at {url}: {exc}")
            return False
        backend = RemoteBackend(new_client)
        backend.properties.update(self.backend.properties)
        backend.variables.update(self.backend.variables)
        await backend.refresh_completions()
        old = self.backend
        self.backend = self.engine = backend
        if self._session is not None and self._session.completer is not None:
            self._session.completer.backend = backend
        await old.client.aclose()
        version = info.get("streamsqlVersion") or info.get("version") or "?"
        self.location = f"{new_client.url}, server version {version}"
        self.echo(f"Server now: {new_client.url} (server version {version})")
        return True

    async def _run_script(self, path: str) -> bool:
        if self._script_depth >= MAX_SCRIPT_DEPTH:
            self.echo(f"RUN SCRIPT nested more than {MAX_SCRIPT_DEPTH} deep; stopping.")
            return False
        try:
            text = Path(path).expanduser().read_text(encoding="utf-8")
        except OSError as exc:
            self.echo(f"Failed to read file {path}: {exc.strerror or exc}")
            return False
        self._script_depth += 1
        try:
            return await self.run_text(text)
        finally:
            self._script_depth -= 1

    def _echo_error(self, exc: BaseException, statement: str, message: str | None = None) -> None:
        """An error as text, or under OUTPUT JSON as the REST API's error entity (the server's
        own body when it sent one), so a script reading JSON gets JSON for failures too."""
        message = message or str(exc)
        if self.output_format != "JSON":
            self.echo(message)
            return
        from streamsql.server.errors import BAD_STATEMENT, SERVER_ERROR, statement_error

        body = getattr(exc, "body", None)
        if not isinstance(body, dict):
            code = BAD_STATEMENT if isinstance(exc, StreamSqlError) else SERVER_ERROR
            text = statement.strip()
            body = statement_error(message, text if text.endswith(";") else text + ";", error_code=code)
        self.echo_json(body)

    def _echo_result_json(self, result: Result) -> None:
        if result.kind == "rows":  # a pull query: its header and rows, as /query answers
            self.echo_json([{"header": {"queryId": result.query_id, "columnNames": list(result.columns)}},
                            *({"row": {"columns": list(r)}} for r in result.rows)])
            return
        entity = result_entity(result)
        if entity is not None:
            self.echo_json([entity])

    async def stream(self, result: Result) -> bool:
        """Print the rows of a push query or PRINT until it ends or Ctrl-C stops it."""
        is_print = isinstance(result.entity, dict) and result.entity.get("@type") == "print"
        as_json = self.output_format == "JSON" and not is_print
        printer = RowPrinter(result.columns)
        limit = _limit_of(result.statement)
        reached = False  # the stream ended by itself (not Ctrl-C)
        count = 0

        async def consume() -> None:
            nonlocal reached, count
            self.echo("Press CTRL-C to interrupt")
            if as_json:
                self.echo_json({"header": {"queryId": result.query_id, "columnNames": list(result.columns)}})
            elif not is_print:
                self.echo(printer.header())
            async for row in result.stream:  # type: ignore[union-attr]
                count += 1
                if as_json:
                    self.echo_json({"row": {"columns": list(row)}})
                else:
                    self.echo(row[0] if is_print else printer.row(row))
            reached = True

        task = asyncio.ensure_future(consume())
        self._foreground = task
        ok = True
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():  # we were cancelled ourselves
                task.cancel()
                raise
            self.echo()  # past the ^C the terminal echoed
        except StreamSqlError as exc:
            self._echo_error(exc, result.statement)
            ok = False
        except Exception as exc:
            log.exception("push query failed")
            self._echo_error(exc, result.statement, f"Query failed: {type(exc).__name__}: {exc}")
            ok = False
        finally:
            self._foreground = None
            aclose = getattr(result.stream, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except Exception:  # the generator may already be closed or broken
                    log.debug("closing the push query failed", exc_info=True)
        # "Limit Reached" only when the rows reached the LIMIT: a stream that ends before that
        # was ended by the other side (a server that closed the connection, a TERMINATE).
        limit_reached = reached and limit is not None and count >= limit
        ended_early = reached and ok and not limit_reached
        remote = getattr(self.backend, "client", None) is not None
        if is_print:
            if not reached:
                self.echo("Topic printing ceased")
            elif ended_early and remote:
                self.echo("The server closed the connection")
        else:
            if reached and not as_json:
                self.echo(printer.rule())
            if limit_reached:
                self.echo("Limit Reached")
            elif ended_early:
                self.echo("The server closed the connection" if remote else "The query ended")
            self.echo("Query terminated")
        return ok

    # -- the prompt loop --------------------------------------------------------------------
    async def run_interactive(self) -> None:
        """The prompt loop; returns on exit/quit/Ctrl-D."""
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import FileHistory, InMemoryHistory
        from prompt_toolkit.key_binding import KeyBindings
        from prompt_toolkit.patch_stdout import patch_stdout

        self._interactive = True
        self._install_sigint()
        bindings = KeyBindings()

        @bindings.add("enter")
        def _enter(event) -> None:  # noqa: ANN001 - prompt_toolkit's event type
            buf = event.current_buffer
            if is_complete(buf.text):
                buf.validate_and_handle()
            else:
                buf.insert_text("\n")

        history = (FileHistory(str(self.history_path)) if self.history_path is not None else InMemoryHistory())
        session: PromptSession[str] = PromptSession(
            history=history, completer=_completer_class()(self.backend), complete_while_typing=False,
            multiline=True, key_bindings=bindings,
            prompt_continuation=lambda width, line_number, wrap_count: CONTINUATION)
        self._session = session
        self.echo(self.banner())
        with patch_stdout(raw=True):
            while True:
                try:
                    # The shell owns SIGINT (see _on_sigint); at the prompt the terminal is
                    # raw, so Ctrl-C arrives as a key anyway.
                    text = await session.prompt_async(PROMPT, handle_sigint=False)
                except KeyboardInterrupt:
                    continue  # Ctrl-C at the prompt clears the line
                except EOFError:
                    break
                if not text.strip():
                    continue
                if self._spool is not None:  # the spool file shows what was typed, as the screen does
                    self._spool.write(PROMPT + text.replace("\n", "\n" + CONTINUATION) + "\n")
                try:
                    await self.run_text(text)
                except QuitShell:
                    break
        self.echo("Exiting streamsql.")
        if self._spool is not None:
            self._spool.close()
            self._spool = None

    async def run_script(self, text: str) -> bool:
        """Run a whole script non-interactively (Ctrl-C stops a push query, or the script)."""
        self._install_sigint()
        try:
            return await self.run_text(text)
        except QuitShell:
            return True

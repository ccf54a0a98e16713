"""The shell's own commands as ksqlDB's CLI has them, driven in a real terminal (tmux): long
values wrapping inside their cell, SPOOL, OUTPUT JSON|TABULAR, VERSION, HISTORY, SERVER,
``--define``, the Ctrl-C hint of push queries; against a server: the URL as the positional
argument, SERVER switching, and a push query whose server goes away (no "Limit Reached")."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streamsql import __version__
from streamsql.server.testing import NodeProcess
from tests.test_shell import Terminal

pytestmark = pytest.mark.timeout(240)


class CommandTerminal(Terminal):
    """The shell started with ``args`` in its own tmux server; HOME is private (history)."""

    def __init__(self, args: str, home: Path, width: int = 120) -> None:  # noqa: D107 - see the class
        self._start("cmd", args, home, width, HOME=str(home))


@pytest.fixture
def terminal(tmp_path):
    opened: list[Terminal] = []

    def open_terminal(args: str, width: int = 120) -> Terminal:
        term = CommandTerminal(args, tmp_path, width)
        opened.append(term)
        return term

    yield open_terminal
    for term in opened:
        term.close()


def table_lines(screen: str, header: str) -> list[str]:
    """The lines of the last boxed table whose header line starts with ``header``."""
    lines = screen.splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith(header)) - 1
    end = start + 2
    while not lines[end + 1].startswith("+"):
        end += 1
    return lines[start:end + 2]


def json_after(screen: str, marker: str) -> object:
    """The JSON document printed after the last line holding ``marker``."""
    lines = screen.splitlines()
    start = max(i for i, line in enumerate(lines) if marker in line) + 1
    decoder = json.JSONDecoder()
    value, _ = decoder.raw_decode("\n".join(lines[start:]).lstrip())
    return value


def test_wrapping_spool_output_json_and_commands(terminal, tmp_path):
    spool = tmp_path / "session.txt"
    term = terminal(f"--data-dir {tmp_path / 'data'} --define greeting=hello", width=100)
    term.wait_for("streamsql>")
    term.line("VERSION")
    term.wait_for(f"Version: {__version__}")
    term.line("SERVER")
    term.wait_for("Embedded engine")

    term.line("SET 'auto.offset.reset'='earliest';")
    term.wait_for("Successfully changed local property")
    term.line("CREATE STREAM notes (id STRING KEY, body STRING, n INT) "
              "WITH (kafka_topic='notes', value_format='JSON', partitions=1);")
    term.wait_for("Stream created")
    long_body = "the quick brown fox jumps over the lazy dog " * 3  # 132 characters
    term.line(f"INSERT INTO notes (id, body, n) VALUES ('a', '{long_body}', 7);")
    term.line("INSERT INTO notes (id, body, n) VALUES ('b', '${greeting}', 8);")  # --define'd

    # A long value wraps inside its cell: every line of the table has its bars in the same
    # places, and the value reads whole down its column.
    term.line("SELECT * FROM notes;")
    screen = term.wait_for("|hello")
    table = table_lines(screen, "|ID")
    assert len({len(line) for line in table}) == 1, "\n".join(table)
    assert len(table) <= 100 and len(table[0]) <= 100
    bars = [i for i, c in enumerate(table[1]) if c == "|"]
    for line in table:
        if not line.startswith("+"):
            assert [i for i, c in enumerate(line) if c == "|"] == bars, "\n".join(table)
    body_cells = [line[bars[1] + 1:bars[2]] for line in table[3:-1]]
    assert "".join(body_cells).replace(" ", "") == (long_body + "hello").replace(" ", "")
    assert len([line for line in table[3:-1] if line[bars[0] + 1:bars[1]].strip() == ""]) >= 3
    assert "|7" in screen and "|8" in screen

    # SPOOL: what is typed and shown goes to the file too, until SPOOL OFF.
    term.line(f"SPOOL {spool}")
    term.wait_for(f"Session will be spooled to {spool}")
    term.line("SHOW STREAMS;")
    term.wait_for(" NOTES ")
    term.line("SELECT * FROM notes EMIT CHANGES LIMIT 2;")
    term.wait_for("Limit Reached")
    term.line("SPOOL OFF")
    term.wait_for(f"Spool written to {spool}")
    term.line("SHOW TOPICS;")
    term.wait_for(" Kafka Topic ")
    spooled = spool.read_text()
    assert "streamsql> SHOW STREAMS;" in spooled and " NOTES " in spooled
    assert "streamsql> SELECT * FROM notes EMIT CHANGES LIMIT 2;" in spooled
    assert "Press CTRL-C to interrupt" in spooled and "|hello" in spooled and "Limit Reached" in spooled
    assert "SHOW TOPICS" not in spooled and "Partition Replicas" not in spooled  # after SPOOL OFF

    # OUTPUT JSON: results are the REST API's entities, as ksqlDB's CLI prints them.
    term.line("OUTPUT JSON")
    term.wait_for("Output format set to JSON")
    term.line("SHOW STREAMS;")
    term.wait_for('"@type": "streams"')
    time.sleep(0.5)
    listing = json_after(term.screen(), "streamsql> SHOW STREAMS;")
    assert isinstance(listing, list) and listing[0]["@type"] == "streams"
    notes = [s for s in listing[0]["streams"] if s["name"] == "NOTES"]
    assert notes == [{"type": "STREAM", "name": "NOTES", "topic": "notes", "keyFormat": "KAFKA",
                      "valueFormat": "JSON", "isWindowed": False}]
    term.line("CREATE STREAM more_notes AS SELECT * FROM notes;")
    term.wait_for('"@type": "currentStatus"')
    time.sleep(0.5)
    created = json_after(term.screen(), "streamsql> CREATE STREAM more_notes")
    assert created[0]["commandStatus"]["status"] == "SUCCESS"
    assert created[0]["commandStatus"]["message"].startswith("Created query with ID CSAS_MORE_NOTES_")
    # An error is JSON too: the REST API's error entity, with the line and column.
    term.line("SELEKT id FROM notes;")
    term.wait_for('"@type": "statement_error"')
    time.sleep(0.5)
    error = json_after(term.screen(), "streamsql> SELEKT id FROM notes;")
    assert error["error_code"] == 40001 and error["message"].startswith("line 1:1:"), error
    assert error["statementText"] == "SELEKT id FROM notes;"
    term.line("SELECT id, n FROM notes EMIT CHANGES LIMIT 1;")
    term.wait_for('"columnNames"')
    term.wait_for("Limit Reached", count=2)
    answer = term.screen()
    answer = answer[answer.rindex("streamsql> SELECT id, n FROM notes"):]
    assert '"row": {' in answer and '"a",' in answer and "+---" not in answer
    term.line("OUTPUT TABULAR")
    term.wait_for("Output format set to TABULAR")
    term.line("SELECT id, n FROM notes WHERE id = 'b';")
    term.wait_for("|b ")

    # A listing wider than the terminal narrows its widest column, whose values wrap inside
    # it: SHOW QUERIES' query text reads down its column, the other columns stay in line.
    term.line("SHOW QUERIES;")
    term.wait_for(" Query String")
    time.sleep(0.5)
    lines = term.screen().splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith(" Query ID"))
    end = next(i for i in range(start + 2, len(lines)) if lines[i].startswith("---"))
    listing = lines[start:end + 1]
    assert all(len(line) <= 100 for line in listing), "\n".join(listing)
    column = listing[0].index("| Query String") + 2
    rows = listing[2:-1]
    assert len(rows) >= 2, "\n".join(listing)  # the query text took several lines
    assert all(line[column - 2:column] == "| " for line in rows), "\n".join(listing)
    text = " ".join(line[column:].strip() for line in rows)
    assert text == "CREATE STREAM more_notes AS SELECT * FROM notes;", text

    # A push query says how to stop it; Ctrl-C stops it without "Limit Reached".
    term.line("SELECT * FROM notes EMIT CHANGES;")
    term.wait_for("Press CTRL-C to interrupt", count=2)
    term.wait_for("|hello", count=3)
    time.sleep(0.3)
    term.key("C-c")
    term.wait_for("Query terminated", count=3)
    assert term.screen().count("Limit Reached") == 2

    # HISTORY lists what was typed, oldest first.
    term.line("HISTORY")
    screen = term.wait_for("HISTORY", count=2)
    time.sleep(0.3)
    screen = term.screen()
    listed = screen[screen.rindex("streamsql> HISTORY"):]
    assert listed.index("VERSION") < listed.index("OUTPUT JSON") < listed.index("SELECT * FROM notes EMIT CHANGES;")
    term.line("exit")
    term.wait_for("SHELL-EXITED-0")


def test_server_as_positional_argument_and_switching(terminal, tmp_path):
    with NodeProcess(tmp_path / "node") as node:
        port = node.url.rsplit(":", 1)[1]
        term = terminal(node.url)  # as ksqlDB's `ksql http://host:8088`
        term.wait_for("streamsql>")
        assert f"server mode ({node.url}" in term.screen()
        term.line("SERVER")
        term.wait_for(f"Server: {node.url}")
        other = f"http://localhost:{port}"
        term.line(f"SERVER {other}")
        term.wait_for(f"Server now: {other}")
        term.line("SERVER http://127.0.0.1:1")
        term.wait_for("Cannot connect to the server at http://127.0.0.1:1")
        term.line("SERVER")
        term.wait_for(f"Server: {other}")  # a failed switch keeps the server

        term.line("CREATE STREAM s (id STRING KEY, v INT) WITH (kafka_topic='s', value_format='JSON', partitions=1);")
        term.wait_for("Stream created")
        term.line("INSERT INTO s (id, v) VALUES ('a', 1);")
        term.line("SET 'auto.offset.reset'='earliest';")
        term.wait_for("Successfully changed local property")
        # The server goes away under a push query with a LIMIT it has not reached: the shell
        # says so, and not "Limit Reached".
        term.line("SELECT * FROM s EMIT CHANGES LIMIT 5;")
        term.wait_for("|a ")
        node.stop()
        screen = term.wait_for("Query terminated")
        tail = screen[screen.rindex("LIMIT 5;"):]
        assert "Limit Reached" not in tail
        assert "The server closed the connection" in tail or "The connection to the server broke" in tail
        term.line("exit")
        term.wait_for("SHELL-EXITED-0")

    down = subprocess.run([sys.executable, "-m", "streamsql", "http://127.0.0.1:1", "-e", "SHOW STREAMS;"],
                          capture_output=True, text=True, timeout=60)
    assert down.returncode == 1
    # One message, naming the server once.
    assert down.stderr.strip().count("\n") == 0 and down.stderr.count("http://127.0.0.1:1") == 1, down.stderr

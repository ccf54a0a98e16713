"""The shell as a client (``streamsql --server URL``), driven in a real terminal (tmux)
against a real ``streamsql server`` process: a script of statements (RUN SCRIPT), a pull
query, a push query stopped with Ctrl-C (the shell stays, the server closes the query),
completion of names the server knows, errors, and the non-interactive forms (-f, stdin).
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from streamsql.server.testing import NodeProcess
from tests.test_shell import Terminal

pytestmark = pytest.mark.timeout(120)

SCRIPT = """\
-- a script of statements, run with RUN SCRIPT
SET 'auto.offset.reset'='earliest';  -- the table counts the rows inserted before it
CREATE STREAM pageviews (user_id STRING KEY, page STRING, ms BIGINT)
  WITH (kafka_topic='pageviews', value_format='JSON', partitions=2);
INSERT INTO pageviews (user_id, page, ms) VALUES ('u1', '/home', 120);
INSERT INTO pageviews (user_id, page, ms) VALUES ('u2', '/fast', 5);
INSERT INTO pageviews (user_id, page, ms) VALUES ('u1', '/about', 300);
CREATE TABLE views AS SELECT user_id, COUNT(*) AS n, SUM(ms) AS total_ms
  FROM pageviews GROUP BY user_id;
"""


class RemoteTerminal(Terminal):
    """The shell connected to ``url``, in its own tmux server; HOME is private (history)."""

    def __init__(self, url: str, home: Path) -> None:  # noqa: D107 - see the class
        self._start("remote", f"--server {url}", home, HOME=str(home))


@pytest.fixture
def node(tmp_path):
    with NodeProcess(tmp_path / "data") as running:
        yield running


def push_queries(url: str) -> list[str]:
    entities = httpx.post(f"{url}/ksql", json={"ksql": "SHOW QUERIES;"}).json()
    return [q["id"] for q in entities[0]["queries"] if q["queryType"] == "PUSH"]


def test_shell_against_a_server_in_a_terminal(node, tmp_path):
    (tmp_path / "script.sql").write_text(SCRIPT)
    term = RemoteTerminal(node.url, tmp_path)
    try:
        term.wait_for("streamsql>")
        assert f"server mode ({node.url}" in term.screen()  # the banner says where

        term.line(f"RUN SCRIPT '{tmp_path / 'script.sql'}';")
        term.wait_for("Created query with ID CTAS_VIEWS_")
        assert term.screen().count("Stream created") == 1

        # A pull query (retried until the table has caught up with the three rows).
        deadline = time.monotonic() + 20
        while True:
            shown = term.screen().count("|USER_ID")
            term.line("SELECT * FROM views WHERE user_id = 'u1';")
            screen = term.wait_for("|USER_ID", count=shown + 1)
            time.sleep(0.2)  # the rows follow the header
            answer = term.screen()
            answer = answer[answer.rindex("|USER_ID"):]
            if "|u1" in answer:
                assert "|2 " in answer and "|420 " in answer
                break
            assert time.monotonic() < deadline, screen
            time.sleep(0.3)

        # A push query: rows stream in; Ctrl-C stops the query, not the shell.
        term.line("SET 'auto.offset.reset'='earliest';")
        term.wait_for("Successfully changed local property")
        term.line("SELECT user_id, page FROM pageviews EMIT CHANGES;")
        term.wait_for("/about")
        assert len(push_queries(node.url)) == 1
        time.sleep(0.3)
        term.key("C-c")
        term.wait_for("Query terminated")
        deadline = time.monotonic() + 10
        while push_queries(node.url):  # the server closed it when the shell let go
            assert time.monotonic() < deadline, "the push query still runs on the server"
            time.sleep(0.1)

        # The shell goes on: errors from the server, then completion of a server-side name.
        term.line("DESCRIBE nope;")
        term.wait_for("Could not find STREAM/TABLE 'NOPE' in the Metastore")
        term.type("DESCRIBE pagev")
        term.key("Tab")
        term.wait_for("DESCRIBE PAGEVIEWS")
        term.line(";")
        term.wait_for("VARCHAR(STRING)  (key)")
        term.line("exit")
        term.wait_for("SHELL-EXITED-0")
    finally:
        term.close()


def test_script_and_stdin_against_a_server(node, tmp_path):
    script = tmp_path / "script.sql"
    script.write_text(SCRIPT + "SHOW STREAMS;\n")
    run = subprocess.run([sys.executable, "-m", "streamsql", "--server", node.url, "-f", str(script)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "Stream created" in run.stdout and "PAGEVIEWS" in run.stdout

    piped = subprocess.run([sys.executable, "-m", "streamsql", "--server", node.url],
                           input="SET 'auto.offset.reset'='earliest';\n"
                                 "SELECT page FROM pageviews EMIT CHANGES LIMIT 2;\nDROP STREAM nope;\n",
                           capture_output=True, text=True, timeout=60)
    assert piped.returncode == 1  # the failing statement
    assert "Limit Reached" in piped.stdout and "/home" in piped.stdout
    assert "Source NOPE does not exist." in piped.stdout

    down = subprocess.run([sys.executable, "-m", "streamsql", "--server", "http://127.0.0.1:1", "-e", "SHOW STREAMS;"],
                          capture_output=True, text=True, timeout=60)
    assert down.returncode == 1 and "Cannot reach the server at http://127.0.0.1:1" in down.stderr
    assert down.stderr.count("http://127.0.0.1:1") == 1  # one message, not one inside another

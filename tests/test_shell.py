"""The interactive shell, driven as a person would: in a real terminal (tmux), typing
statements and reading the screen. Covers multi-line input, push queries with and without
LIMIT (Ctrl-C stops the query, not the shell), completion, errors, quitting, and that
streams, queries and data survive a restart on the same data directory."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(240)

if shutil.which("tmux") is None:
    if os.environ.get("CI"):
        pytest.fail("tmux is required for the shell tests in CI (make test installs it)", pytrace=False)
    pytest.skip("tmux is not installed", allow_module_level=True)


class Terminal:
    """One shell process in its own tmux server (a private socket, so nothing else is touched)."""

    def __init__(self, data_dir: Path, cwd: Path) -> None:
        self._start("test", f"--data-dir {data_dir}", cwd)

    def _start(self, kind: str, args: str, cwd: Path, width: int = 200, **env: str) -> None:
        """``streamsql args`` in a new tmux server of its own, in a ``width`` x 50 pane."""
        self.socket = f"streamsql-{kind}-{uuid.uuid4().hex[:8]}"
        self.name = "shell"
        cmd = f"{sys.executable} -m streamsql {args}; echo SHELL-EXITED-$?; sleep 600"
        # The shell sizes its tables from the terminal, as in a person's: COLUMNS and LINES
        # (which a test runner may set, pytest-xdist's workers do) would override the pane's.
        environ = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        self._tmux("new-session", "-d", "-s", self.name, "-x", str(width), "-y", "50", "-c", str(cwd), cmd,
                   env={**environ, "TERM": "xterm", **env})

    def _tmux(self, *args: str, env: dict[str, str] | None = None) -> str:
        done = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True,
                              timeout=30, env=env)
        assert done.returncode == 0, f"tmux {args[0]} failed: {done.stderr}"
        return done.stdout

    def type(self, text: str) -> None:
        """Type ``text`` literally (no Enter). tmux reads a trailing ';' as a command separator."""
        if text.endswith(";"):
            text = text[:-1] + "\\;"
        self._tmux("send-keys", "-t", self.name, "-l", text)

    def line(self, text: str) -> None:
        self.type(text)
        self.key("Enter")

    def key(self, key: str) -> None:
        self._tmux("send-keys", "-t", self.name, key)

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-J", "-t", self.name, "-S", "-3000")

    def wait_for(self, text: str, count: int = 1, timeout: float = 30.0) -> str:
        """Wait until ``text`` appears at least ``count`` times on the screen (and scrollback)."""
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if screen.count(text) >= count:
                return screen
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {text!r} x{count}; screen:\n{screen}")

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=30)


@pytest.fixture
def terminals(tmp_path):
    opened: list[Terminal] = []

    def open_terminal() -> Terminal:
        term = Terminal(tmp_path / "data", tmp_path)
        opened.append(term)
        return term

    yield open_terminal
    for term in opened:
        term.close()


def test_session_survives_ctrl_c_and_restart(terminals, tmp_path):
    term = terminals()
    term.wait_for("streamsql>")
    screen = term.screen()
    assert "streamsql 0." in screen and "help" in screen  # the banner

    # A statement over two lines: Enter on an unfinished statement continues it.
    # Queries read from the start of their topics (ksqlDB's default is the end: 'latest').
    term.line("SET 'auto.offset.reset'='earliest';")
    term.wait_for("Successfully changed local property")
    term.line("CREATE STREAM pageviews (user_id STRING KEY, page STRING, ms BIGINT)")
    term.line("  WITH (kafka_topic='pageviews', value_format='JSON', partitions=4);")
    term.wait_for("Stream created")
    term.line("INSERT INTO pageviews (user_id, page, ms) VALUES ('u1', '/home', 120);")
    term.line("INSERT INTO pageviews (user_id, page, ms) VALUES ('u2', '/fast', 5);")
    term.line("CREATE STREAM slow AS SELECT user_id, UCASE(page) AS page FROM pageviews "
              "WHERE ms > 100 EMIT CHANGES;")
    term.wait_for("Created query with ID CSAS_SLOW_")

    # Push query with LIMIT: rows on screen, then it ends by itself.
    term.line("SELECT * FROM slow EMIT CHANGES LIMIT 1;")
    screen = term.wait_for("Limit Reached")
    assert "|u1" in screen and "/HOME" in screen
    assert "/FAST" not in screen  # filtered out by the persistent query

    # Push query without LIMIT: runs until Ctrl-C, which stops the query and not the shell.
    term.line("SELECT user_id, page FROM slow EMIT CHANGES;")
    term.wait_for("|USER_ID", count=2)
    term.wait_for("/HOME", count=2)  # its row (the first query showed the other one)
    time.sleep(0.5)
    term.key("C-c")
    term.wait_for("Query terminated", count=2)
    term.line("SHOW STREAMS;")
    screen = term.wait_for(" Stream Name")
    listing = screen[screen.rindex(" Stream Name"):]
    assert "PAGEVIEWS" in listing and "SLOW" in listing and "pageviews" in listing

    # Errors are printed with their position and the shell goes on.
    term.line("SELEC * FROM slow;")
    term.wait_for("line 1:1")
    # Tab completes names from the catalog.
    term.type("DESCRIBE pagev")
    term.key("Tab")
    term.wait_for("DESCRIBE PAGEVIEWS")
    term.line(" EXTENDED;")
    screen = term.wait_for("Kafka topic          : pageviews (partitions: 4")
    assert "CSAS_SLOW_" in screen[screen.rindex("Name                 : PAGEVIEWS"):]

    term.line("exit")
    term.wait_for("SHELL-EXITED-0")

    # Start again on the same data: streams, the running query and the data are all there.
    term2 = terminals()
    term2.wait_for("streamsql>")
    term2.line("SHOW STREAMS;")
    screen = term2.wait_for(" Stream Name")
    assert "PAGEVIEWS" in screen and "SLOW" in screen
    term2.line("SHOW QUERIES;")
    screen = term2.wait_for(" Query ID")
    assert "CSAS_SLOW_" in screen and "RUNNING" in screen
    term2.line("PRINT 'SLOW' FROM BEGINNING LIMIT 1;")
    screen = term2.wait_for("partition: ")
    assert 'key: u1, value: {"PAGE":"/HOME"}' in screen
    # The persistent query resumed: a new input row reaches the sink.
    term2.line("INSERT INTO pageviews (user_id, page, ms) VALUES ('u3', '/later', 500);")
    term2.line("PRINT 'SLOW' FROM BEGINNING LIMIT 2;")
    screen = term2.wait_for('value: {"PAGE":"/LATER"}')
    assert "u3" in screen
    term2.key("C-d")
    term2.wait_for("SHELL-EXITED-0")

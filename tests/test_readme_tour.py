"""The README's "A short tour", typed statement by statement into a fresh shell in a real
terminal (tmux), as a newcomer would after ``make run``: every statement runs without an
error, push queries without a LIMIT stream their rows until Ctrl-C, and the output the README
shows is what the shell prints."""
from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.test_shell import Terminal

pytestmark = pytest.mark.timeout(240)

README = Path(__file__).resolve().parent.parent / "README.md"
PROMPT = "streamsql> "
CONTINUATION = "         > "
# What the shell prints when a statement failed (the tour has no failing statement).
ERRORS = re.compile(r"Syntax Error|^line \d+:\d+|Could not find|does not exist|^Internal error|"
                    r"^Query failed|^Traceback|^Cannot ", re.MULTILINE)


def tour() -> list[tuple[str, list[str]]]:
    """The tour's statements (comments dropped) and the output lines the README shows after each."""
    text = README.read_text(encoding="utf-8")
    block = text[text.index("## A short tour"):]
    block = block[block.index("```sql\n") + 7:]
    block = block[:block.index("```")]
    steps: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith(PROMPT) or line.startswith(CONTINUATION):
            code = re.sub(r"\s+--.*$", "", line[len(PROMPT):]).strip()
            if line.startswith(PROMPT):
                steps.append((code, []))
            else:
                steps[-1] = (steps[-1][0] + " " + code, steps[-1][1])
        elif line.strip():
            steps[-1][1].append(line)
    return steps


def is_unlimited_push(statement: str) -> bool:
    return "EMIT CHANGES" in statement.upper() and not statement.upper().startswith("CREATE") \
        and "LIMIT" not in statement.upper()


def test_the_readme_tour_runs_as_written(tmp_path):
    steps = tour()
    assert len(steps) >= 15 and any(s.startswith("PRINT") for s, _ in steps)
    term = Terminal(tmp_path / "data", tmp_path)
    try:
        term.wait_for(PROMPT.rstrip())
        for statement, shown in steps:
            before = term.screen()
            start = before.rstrip().rfind("\n") + 1  # the prompt line the statement is typed on
            term.line(statement)
            if is_unlimited_push(statement):
                # Streams its rows so far, then waits for more: Ctrl-C stops it.
                term.wait_for("Press CTRL-C to interrupt", count=before.count("Press CTRL-C to interrupt") + 1)
                term.wait_for("|u1", count=before.count("|u1") + 1)
                time.sleep(0.3)
                term.key("C-c")
            deadline = time.monotonic() + 30
            while True:  # done when the prompt is back, empty, below the statement
                screen = term.screen()
                output = screen[start:]
                if output.rstrip().endswith(PROMPT.rstrip()) and output.count(PROMPT.rstrip()) >= 2:
                    break
                assert time.monotonic() < deadline, f"{statement!r} did not finish:\n{output}"
                time.sleep(0.2)
            assert not ERRORS.search(output), f"{statement!r} failed:\n{output}"
            for line in shown:
                if line.startswith("rowtime: "):  # the record's time is now, not the README's
                    line = line[line.index(", key: "):]
                assert line.rstrip() in output, f"{statement!r}: the README shows {line!r}; the shell:\n{output}"
        term.line("exit")
        term.wait_for("SHELL-EXITED-0")
    finally:
        term.close()

"""Shared pytest configuration: prints the QTT pass rates at the end of a run."""
from __future__ import annotations

import pytest


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    from tests.test_qtt import SUMMARY

    summary = config.stash.get(SUMMARY, None)
    if summary:
        terminalreporter.write_sep("=", "QTT cases passing")
        terminalreporter.write_line(summary)

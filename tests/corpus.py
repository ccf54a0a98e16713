"""What the ratcheted corpus tests (``test_qtt``: ksqlDB's query-validation cases,
``test_rqtt``: its REST cases) share: the ratchet file (case ids known to pass, one a line)
and the session-wide run of a corpus folder, whose summary conftest prints at the end."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import pytest


def read_ratchet(path: Path) -> list[str]:
    """The case ids listed in a ratchet file (none when it does not exist)."""
    if not path.exists():
        return []
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def run_corpus(request: pytest.FixtureRequest, folder: Path, what: str,
               run_folder: Callable[[Path], list[Any]], summarize: Callable[[list[Any]], str],
               key: pytest.StashKey[str]) -> dict[str, Any]:
    """Every case of ``folder`` run once, by id; fails under CI (skips elsewhere) when the
    folder is missing, so a CI run never passes without its cases."""
    if not folder.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{what} not found at {folder}")
        pytest.skip(f"{what} not found at {folder}")
    results = run_folder(folder)
    request.config.stash[key] = summarize(results)
    return {o.id: o for o in results}

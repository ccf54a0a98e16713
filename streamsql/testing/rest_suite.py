"""Runs a folder of REST query-validation files (../shared/rqtt), compares each case with its
expectations and reports per file; used by the test suite (the ratchet) and by developers::

    python -m streamsql.testing.rest_suite ../shared/rqtt             # summary per file
    python -m streamsql.testing.rest_suite ../shared/rqtt --failures  # and why each case failed
    python -m streamsql.testing.rest_suite ../shared/rqtt --file push-queries.json --failures
    python -m streamsql.testing.rest_suite ../shared/rqtt --write-ratchet tests/rqtt_ratchet.txt

Each case runs on a node of its own (``streamsql.testing.rest``), several at a time in worker
processes: most of a case's time is spent waiting (for a query to stream, for a persistent
query to catch up), so more workers than cores pay off.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamsql.testing.rest import QUERY_TIMEOUT, load_cases, run_cases
from streamsql.testing.rest_compare import compare
from streamsql.testing.suite import pass_table

# Cases mostly wait (for a query to stream, for a persistent query to catch up): several per
# core keep the cores busy. Each worker holds one node at a time (~80 MB).
DEFAULT_PROCESSES = min(4 * (os.cpu_count() or 1), 16)


@dataclass
class Outcome:
    """One case's result against its expectations."""

    file: str
    name: str
    expects_error: bool
    passed: bool
    reason: str | None
    seconds: float

    @property
    def id(self) -> str:
        return f"{self.file}::{self.name}"


def collect(folder: Path, only_file: str | None = None) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(file name, case as the runner reads it, case with exact numbers) for every enabled
    case of the folder's files, in order."""
    work = []
    for path in sorted(folder.glob("*.json")):
        if only_file is not None and path.name != only_file:
            continue
        for case, exact in zip(load_cases(path), load_cases(path, exact=True)):
            if case.get("enabled") is False:
                continue
            work.append((path.name, case, exact))
    return work


def run_folder(folder: Path, processes: int | None = None, only_file: str | None = None,
               query_timeout: float = QUERY_TIMEOUT) -> list[Outcome]:
    """Every enabled case of the folder's files (of ``only_file`` alone when given), run
    ``processes`` at a time and compared with its expectations."""
    work = collect(folder, only_file)
    results = run_cases([case for _, case, _ in work], processes or DEFAULT_PROCESSES, query_timeout)
    outcomes = []
    for (file, case, exact), result in zip(work, results):
        reason = compare(exact, result)
        outcomes.append(Outcome(file, case["name"], "expectedError" in case, reason is None, reason,
                                result.seconds))
    return outcomes


def summarize(outcomes: list[Outcome]) -> str:
    """Per file and in total: cases with outputs passing, cases expecting an error passing."""
    return pass_table((((o.file, "all"), o.expects_error, o.passed) for o in outcomes), 58,
                      order=lambda k: (k == "all", k))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--failures", action="store_true", help="say why each failing case failed")
    ap.add_argument("--file", help="only this file name")
    ap.add_argument("--write-ratchet", type=Path, help="write the ids of the passing cases here")
    ap.add_argument("--processes", type=int, help=f"cases at a time (default {DEFAULT_PROCESSES})")
    ap.add_argument("--slowest", type=int, default=0, metavar="N", help="list the N slowest cases")
    args = ap.parse_args(argv)
    started = time.monotonic()
    outcomes = run_folder(args.folder, args.processes, args.file)
    if args.failures:
        for o in outcomes:
            if not o.passed:
                sys.stdout.write(f"FAIL {o.id}\n    {o.reason}\n")
    for o in sorted(outcomes, key=lambda o: -o.seconds)[:args.slowest]:
        sys.stdout.write(f"{o.seconds:6.1f}s {o.id}\n")
    sys.stdout.write(summarize(outcomes) + "\n")
    sys.stdout.write(f"{len(outcomes)} cases in {time.monotonic() - started:.0f} s\n")
    if args.write_ratchet:
        args.write_ratchet.write_text("\n".join(sorted(o.id for o in outcomes if o.passed)) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Runs a folder of QTT files, compares with their expectations and reports by category.

Used by the test suite (the ratchet) and by developers::

    python -m streamsql.testing.suite ../shared/qtt            # summary per category
    python -m streamsql.testing.suite ../shared/qtt --failures # and why each case failed
    python -m streamsql.testing.suite ../shared/qtt --write-ratchet tests/qtt_ratchet.txt
    python -m streamsql.testing.suite ../shared/qtt --kafka 127.0.0.1:19092  # on Kafka

The categories follow the issues that own them; a file not named here counts as stateless.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from streamsql.testing.qtt import compare, expand_cases, run_case

AGGREGATION = {
    "average-udaf", "collect-list", "collect-set", "correlation-udaf", "count-distinct", "count",
    "earliest-offset-udaf", "latest-offset-udaf", "generic-variadic-udaf", "group-by", "having",
    "max-group-by", "min-group-by", "middle-variadic-udaf", "multi-arg-udaf", "obj-var-col-arg-udaf",
    "standarddeviation", "sum", "topk-distinct", "topk-group-by", "udaf", "variadic-udaf", "attr",
    "histogram", "table", "source-table",
}
WINDOW = {"hopping-windows", "session-windows", "tumbling-windows", "window-bounds", "suppress"}
JOIN = {"joins", "fk-join", "fk-n-way-join", "multi-joins", "stream-table-join", "table-table-join",
        "join-with-custom-timestamp"}
FORMAT = {"avro", "protobuf", "json_sr", "serdes", "key-schemas", "formats", "none", "kafka",
          "delimited", "json", "headers", "multiple-avro-maps"}
SCHEMA_REGISTRY_FORMATS = ("AVRO", "PROTOBUF", "PROTOBUF_NOSR", "JSON_SR")


def category(file_name: str) -> str:
    stem = Path(file_name).stem
    if stem in AGGREGATION or stem in WINDOW:
        return "stateful"
    if stem in JOIN:
        return "join"
    if stem in FORMAT:
        return "format"
    return "stateless"


@dataclass
class Outcome:
    """One case's result against its expectation."""

    file: str
    name: str
    expects_error: bool
    passed: bool
    reason: str | None
    uses_registry_format: bool

    @property
    def id(self) -> str:
        return f"{self.file}::{self.name}"


def _uses_registry_format(case: dict) -> bool:
    text = json.dumps(case.get("statements", [])).upper()
    return any(f"'{f}'" in text for f in SCHEMA_REGISTRY_FORMATS) or bool(
        [t for t in case.get("topics", []) or [] if t.get("valueSchema") or t.get("keySchema")])


def _run_one(args: tuple[str, dict, str | None]) -> Outcome:
    file, case, kafka = args
    result = run_case(case, kafka)
    reason = compare(case, result)
    return Outcome(file, case["name"], "expectedException" in case, reason is None, reason,
                   _uses_registry_format(case))


def collect(folder: Path) -> list[tuple[str, dict]]:
    work = []
    for path in sorted(folder.glob("*.json")):
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
        for case in expand_cases(doc):
            if case.get("enabled") is False:
                continue
            work.append((path.name, case))
    return work


def run_folder(folder: Path, processes: int | None = None, kafka: str | None = None) -> list[Outcome]:
    """Every enabled case of the folder's files; ``kafka``: bootstrap servers of a Kafka
    cluster to run them on instead of the embedded log."""
    work = [(file, case, kafka) for file, case in collect(folder)]
    processes = processes or min(2, os.cpu_count() or 1)
    if processes <= 1:
        return [_run_one(w) for w in work]
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(processes) as pool:
        return pool.map(_run_one, work, chunksize=8)


def pass_table(results: Iterable[tuple[Sequence[str], bool, bool]], width: int,
               order: Callable[[str], Any] | None = None) -> str:
    """One line per group: cases with outputs passing, cases expecting an error passing.
    ``results``: (the groups a case counts in, whether it expects an error, whether it
    passed); groups are listed in ``order`` (default: by name)."""
    rows: dict[str, list[int]] = {}
    for keys, expects_error, passed in results:
        for k in keys:
            r = rows.setdefault(k, [0, 0, 0, 0])
            if expects_error:
                r[2] += 1
                r[3] += passed
            else:
                r[0] += 1
                r[1] += passed
    lines = []
    for k in sorted(rows, key=order):
        out_total, out_pass, err_total, err_pass = rows[k]
        lines.append(f"{k:{width}s} outputs {out_pass:4d}/{out_total:<4d} ({100 * out_pass / max(out_total, 1):5.1f}%)"
                     f"   errors {err_pass:4d}/{err_total:<4d} ({100 * err_pass / max(err_total, 1):5.1f}%)")
    return "\n".join(lines)


def summarize(outcomes: list[Outcome]) -> str:
    """Per category (and stateless cases without a schema-registry format) and in total."""
    def groups(o: Outcome) -> list[str]:
        cat = category(o.file)
        keys = [cat, "all"]
        if cat == "stateless" and not o.uses_registry_format:
            keys.append("stateless (no schema-registry format)")
        return keys

    return pass_table(((groups(o), o.expects_error, o.passed) for o in outcomes), 42)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--failures", action="store_true")
    ap.add_argument("--file", help="only this file name")
    ap.add_argument("--write-ratchet", type=Path)
    ap.add_argument("--processes", type=int)
    ap.add_argument("--kafka", metavar="BOOTSTRAP_SERVERS",
                    help="run the cases on this Kafka cluster (each in a namespace of its own)")
    args = ap.parse_args(argv)
    outcomes = run_folder(args.folder, args.processes, args.kafka)
    if args.file:
        outcomes = [o for o in outcomes if o.file == args.file]
    if args.failures:
        for o in outcomes:
            if not o.passed:
                sys.stdout.write(f"FAIL {o.id}\n    {o.reason}\n")
    sys.stdout.write(summarize(outcomes) + "\n")
    if args.write_ratchet:
        args.write_ratchet.write_text("\n".join(sorted(o.id for o in outcomes if o.passed)) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

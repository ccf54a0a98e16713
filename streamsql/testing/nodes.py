"""streamsql nodes as real processes, for the Kafka cluster tests and benchmarks.

A ``Node`` is ``streamsql server --bootstrap-servers ... --service-id ...`` in its own process
(so it can be stopped with SIGTERM or killed with SIGKILL); tests talk to it over its REST API
and read what it writes with kcat.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

from streamsql.testing.kafka import kcat_consume


class Node:
    """One streamsql server process of a cluster."""

    def __init__(self, name: str, bootstrap: str, service_id: str, base: Path,
                 config: dict[str, str] | None = None) -> None:
        self.name = name
        self.bootstrap = bootstrap
        self.service_id = service_id
        self.dir = base / name
        self.dir.mkdir(parents=True, exist_ok=True)
        # Queries read their topics from the start (ksqlDB's test harness does so too): a
        # cluster test's records are not lost to a partition's first owner resetting to the
        # end while another node had it.
        self.config = {"streamsql.node.name": name, "auto.offset.reset": "earliest", **(config or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, timeout: float = 60.0) -> "Node":
        cmd = [sys.executable, "-m", "streamsql", "server", "--bootstrap-servers", self.bootstrap,
               "--service-id", self.service_id, "--listeners", "http://127.0.0.1:0",
               "--data-dir", str(self.dir / "data"), "--state-dir", str(self.dir / "state")]
        for k, v in self.config.items():
            cmd += ["--config", f"{k}={v}"]
        self.log_file = open(self.dir / "node.log", "ab")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log_file,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline().decode()
            if not line:
                raise AssertionError(f"node {self.name} exited: {self.tail()}")
            if "listening on" in line:
                self.url = line.rsplit(" ", 1)[1].strip()
                return self
        raise AssertionError(f"node {self.name} did not start: {self.tail()}")

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join((self.dir / "node.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """A clean stop (SIGTERM): the node leaves its consumer groups."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """kill -9: no goodbye to the group, transactions left open."""
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def ksql(self, sql: str) -> list[dict[str, Any]]:
        body = json.dumps({"ksql": sql, "streamsProperties": {}}).encode()
        req = urllib.request.Request(self.url + "/ksql", body,
                                     {"Content-Type": "application/vnd.ksql.v1+json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read())

    def query_stream(self, sql: str, properties: dict[str, str] | None = None) -> list:
        """``/query-stream``'s answer: the header, then rows (arrays), then maybe an error."""
        body = {"sql": sql, "properties": properties or {}}
        req = urllib.request.Request(self.url + "/query-stream", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return [json.loads(line) for line in resp.read().splitlines() if line.strip()]

    def partitions_by_node(self, source: str, query_prefix: str) -> dict[str, list[str]]:
        """What DESCRIBE EXTENDED says of the source's query (the first whose id starts with
        ``query_prefix``): partitions by node."""
        desc = self.ksql(f"DESCRIBE {source} EXTENDED;")[0]["sourceDescription"]
        for r in desc.get("queryRuntime", []):
            if r["queryId"].startswith(query_prefix):
                return r["partitionsByNode"]
        return {}


def wait_for(what: str, check: Callable[[], Any], timeout: float = 90.0, every: float = 0.5) -> Any:
    """Poll ``check`` until it returns something truthy; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:  # a node still starting, a topic not there yet
            last = exc
        else:
            if last:
                return last
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def spread(nodes: list[Node], source: str, query_prefix: str, expected: dict[str, int],
           timeout: float = 180.0) -> dict[str, list[str]]:
    """Wait until the query's source partitions are spread as ``expected`` (node -> count)."""
    def check() -> dict[str, list[str]] | None:
        got = nodes[0].partitions_by_node(source, query_prefix)
        counts = {n: len(p) for n, p in got.items()}
        return got if counts == expected else None
    return wait_for(f"partitions spread as {expected}", check, timeout)


def table_rows(bootstrap: str, topic: str, windowed: bool = False) -> dict[Any, dict]:
    """A table's topic read with kcat (read_committed) to its end: the last value per key
    (a tombstone deletes it), values parsed as JSON. A windowed table's key is its key and
    its window (kcat gives the raw key bytes: the window start is in them)."""
    rows: dict[Any, dict] = {}
    for rec in kcat_consume(bootstrap, topic, None, isolation="read_committed"):
        key = (rec.partition, rec.key) if windowed else rec.key
        if rec.value is None:
            rows.pop(key, None)
        else:
            rows[key] = json.loads(rec.value)
    return rows

"""A real Apache Kafka Connect worker (distributed mode) for development and tests.

The worker's jars come from Maven Central into ``kafka/connect-lib`` (``make connect-jars``, see
``kafka/connect-pom.xml``), or from ``$STREAMSQL_CONNECT_LIB``; connect-file is in
``<lib>/plugins/connect-file``, the worker's ``plugin.path``. ``ConnectWorker`` writes a worker
``.properties`` (bootstrap servers, group id, the three storage topics with replication factor
1, ``plugin.path``, a listener) and a ``log4j.properties`` under its directory, starts
``java -cp 'kafka/connect-lib/*' org.apache.kafka.connect.cli.ConnectDistributed
worker.properties`` in its own process group and returns once its REST API answers
``GET /connectors`` (the worker has joined its group and read its config topic)::

    with ConnectWorker(tmp_dir, kafka.bootstrap_servers) as worker:
        worker.url                     # "http://127.0.0.1:41233"

The worker logs to ``<dir>/connect.log`` (the JVM's own output to ``stdout.log``).

The command line, used by ``make connect-up`` / ``make connect-down``::

    python -m streamsql.testing.connect up   [--dir .kafka/connect] [--port 8083]
                                              [--bootstrap-servers 127.0.0.1:19092,...]
    python -m streamsql.testing.connect status [--dir .kafka/connect]
    python -m streamsql.testing.connect down [--dir .kafka/connect]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Sequence

from streamsql.testing.kafka import (
    DEFAULT_PORTS, KafkaError, _die_with_parent, _port_free, _tail, free_ports, jar_dir,
    java_executable, pid_runs)

log = logging.getLogger(__name__)

DEFAULT_PORT = 8083
"""Connect's REST port (``make connect-up``'s)."""

DEFAULT_GROUP = "streamsql-connect"

MAIN_CLASS = "org.apache.kafka.connect.cli.ConnectDistributed"

DEFAULT_JVM_OPTIONS = (
    # As the test brokers: a small heap, serial GC, C1 only (two cores are shared by brokers,
    # workers and the tests themselves).
    "-Xms64m", "-Xmx384m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
    "-Djava.awt.headless=true", "-Djava.net.preferIPv4Stack=true",
)

_HOST = "127.0.0.1"
_LAYOUT_FILE = "connect.json"


class ConnectError(KafkaError):
    """A Connect worker could not be set up, started or reached."""


def connect_lib_dir() -> Path:
    """Where the worker's jars are: ``$STREAMSQL_CONNECT_LIB``, else ``kafka/connect-lib``."""
    return jar_dir("STREAMSQL_CONNECT_LIB", "connect-lib")


def connect_unavailable_reason(lib_dir: Path | None = None) -> str | None:
    """Why a Connect worker cannot be started here (None when it can): no java, or no jars."""
    if java_executable() is None:
        return "java is not installed (Kafka Connect needs Java 17+)"
    lib = lib_dir or connect_lib_dir()
    if not any(lib.glob("connect-runtime-*.jar")):
        return f"the Kafka Connect worker's jars are missing from {lib} (run `make connect-jars`)"
    return None


def http_get(url: str, timeout: float = 2.0) -> tuple[int, object] | None:
    """``(status, parsed JSON body)`` of a GET, None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            body = json.loads(exc.read() or b"null")
        except ValueError:
            body = None
        return exc.code, body
    except (OSError, ValueError):
        return None


class ConnectWorker:
    """One distributed Connect worker under ``base_dir``, against ``bootstrap_servers``.

    ``port`` is its REST port (a free one when None, unless ``base_dir`` already holds a worker,
    whose port is kept); ``group_id`` and the storage topics' ``topic_prefix`` tell workers of
    different Connect clusters on the same brokers apart. ``die_with_parent`` (tests; Linux):
    the kernel kills the worker when the thread that started it ends.
    """

    def __init__(self, base_dir: str | os.PathLike[str], bootstrap_servers: str, port: int | None = None, *,
                 group_id: str = DEFAULT_GROUP, topic_prefix: str = "connect",
                 lib_dir: str | os.PathLike[str] | None = None,
                 jvm_options: Sequence[str] = DEFAULT_JVM_OPTIONS, config: dict[str, str] | None = None,
                 start_timeout: float = 120.0, die_with_parent: bool = False) -> None:
        self.base_dir = Path(base_dir).resolve()
        self.bootstrap_servers = bootstrap_servers
        self.lib_dir = Path(lib_dir) if lib_dir else connect_lib_dir()
        self.group_id = group_id
        self.topic_prefix = topic_prefix
        self.jvm_options = tuple(jvm_options)
        self.extra_config = dict(config or {})
        self.start_timeout = start_timeout
        self._preexec = _die_with_parent() if die_with_parent and sys.platform == "linux" else None
        stored = self._read_layout()
        if port is None:
            port = stored["port"] if stored else free_ports(1)[0]
        self.port = port
        self._proc: subprocess.Popen[bytes] | None = None

    # -- files -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The worker's REST API, ``http://127.0.0.1:<port>``."""
        return f"http://{_HOST}:{self.port}"

    @property
    def properties_file(self) -> Path:
        return self.base_dir / "worker.properties"

    @property
    def pid_file(self) -> Path:
        return self.base_dir / "pid"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "connect.log"

    @property
    def stdout_log(self) -> Path:
        return self.base_dir / "stdout.log"

    def _read_layout(self) -> dict | None:
        try:
            return json.loads((self.base_dir / _LAYOUT_FILE).read_text())
        except FileNotFoundError:
            return None

    def worker_config(self) -> dict[str, str]:
        """The worker's ``.properties`` (``config`` given to the worker overrides)."""
        prefix = self.topic_prefix
        config = {
            "bootstrap.servers": self.bootstrap_servers,
            "group.id": self.group_id,
            "key.converter": "org.apache.kafka.connect.json.JsonConverter",
            "value.converter": "org.apache.kafka.connect.json.JsonConverter",
            "config.storage.topic": f"{prefix}-configs",
            "offset.storage.topic": f"{prefix}-offsets",
            "status.storage.topic": f"{prefix}-status",
            "config.storage.replication.factor": "1",
            "offset.storage.replication.factor": "1",
            "status.storage.replication.factor": "1",
            # Fewer partitions than Connect's 25/5: created on the worker's first start.
            "offset.storage.partitions": "5",
            "status.storage.partitions": "1",
            "listeners": f"http://{_HOST}:{self.port}",
            "rest.advertised.host.name": _HOST,
            "rest.advertised.port": str(self.port),
            "plugin.path": str(self.lib_dir / "plugins"),
            # Kafka's own jars list their plugins in service manifests: no classpath scan
            # (seconds of CPU at every start).
            "plugin.discovery": "service_load",
            "offset.flush.interval.ms": "1000",
            # A worker joining a group it was alone in takes its place at once.
            "scheduled.rebalance.max.delay.ms": "0",
        }
        config.update(self.extra_config)
        return config

    def _log4j_config(self) -> str:
        return "\n".join([
            "log4j.rootLogger=INFO, file",
            "log4j.appender.file=org.apache.log4j.RollingFileAppender",
            f"log4j.appender.file.File={self.log_file}",
            "log4j.appender.file.MaxFileSize=50MB",
            "log4j.appender.file.MaxBackupIndex=2",
            "log4j.appender.file.layout=org.apache.log4j.PatternLayout",
            "log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n",
            "log4j.logger.org.reflections=ERROR",
            "log4j.logger.org.apache.kafka.clients=WARN",
            "",
        ])

    def _write_configs(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        (self.base_dir / _LAYOUT_FILE).write_text(json.dumps({"port": self.port}) + "\n")
        self.properties_file.write_text("".join(f"{k}={v}\n" for k, v in self.worker_config().items()))
        (self.base_dir / "log4j.properties").write_text(self._log4j_config())

    # -- process ---------------------------------------------------------------------------

    def pid(self) -> int | None:
        """The worker's pid (started here or by an earlier ``up``), None when it is not running."""
        if self._proc is not None:
            return self._proc.pid if self._proc.poll() is None else None
        try:
            pid = int(self.pid_file.read_text())
        except (OSError, ValueError):
            return None
        return pid if pid_runs(pid, MAIN_CLASS, self.properties_file) else None

    def start(self) -> ConnectWorker:
        """Writes the configuration and starts the worker unless it runs; returns once its
        REST API answers. On failure a worker started here is killed."""
        reason = connect_unavailable_reason(self.lib_dir)
        if reason:
            raise ConnectError(reason)
        java = java_executable()
        assert java is not None
        if self.pid() is None:
            if not _port_free(self.port):
                raise ConnectError(f"port {self.port} of the Connect worker is in use on {_HOST}")
            self._write_configs()
            env_options = os.environ.get("STREAMSQL_CONNECT_JVM_OPTS", "").split()
            cmd = [java, *self.jvm_options, *env_options,
                   f"-Dlog4j.configuration=file:{self.base_dir / 'log4j.properties'}",
                   f"-Dkafka.logs.dir={self.base_dir}",
                   "-cp", f"{self.lib_dir}/*", MAIN_CLASS, str(self.properties_file)]
            with open(self.stdout_log, "ab") as out:
                # Its own session: Ctrl-C in the terminal of `make connect-up` or pytest does
                # not reach it; stop() signals it alone.
                self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                              stderr=subprocess.STDOUT, cwd=self.base_dir,
                                              start_new_session=True, preexec_fn=self._preexec)
            self.pid_file.write_text(f"{self._proc.pid}\n")
            log.info("started a Kafka Connect worker on %s (pid %d)", self.url, self._proc.pid)
        try:
            self.wait_ready()
        except BaseException:
            self.kill()
            raise
        return self

    def wait_ready(self, timeout: float | None = None) -> None:
        """Waits until ``GET /`` and ``GET /connectors`` answer 200 (the second only once the
        worker has joined its group); ConnectError with its log on timeout or exit."""
        began = time.monotonic()
        deadline = began + (self.start_timeout if timeout is None else timeout)
        while True:
            if self.pid() is None:
                raise self._failure("the Kafka Connect worker exited while starting")
            root = http_get(self.url + "/", timeout=1.0)
            if root is not None and root[0] == 200:
                listed = http_get(self.url + "/connectors", timeout=5.0)
                if listed is not None and listed[0] == 200:
                    log.info("Kafka Connect worker ready on %s in %.1f s", self.url, time.monotonic() - began)
                    return
            if time.monotonic() > deadline:
                raise self._failure(f"the Kafka Connect worker did not answer on {self.url} "
                                    f"within {timeout or self.start_timeout:g} s")
            time.sleep(0.2)

    def _failure(self, message: str) -> ConnectError:
        return ConnectError(f"{message}\n--- {self.log_file} (tail) ---\n{_tail(self.log_file)}"
                            f"\n--- {self.stdout_log} (tail) ---\n{_tail(self.stdout_log, 10)}")

    def _stop(self, sig: signal.Signals, timeout: float) -> None:
        pid = self.pid()
        if pid is not None:
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + timeout
            while self.pid() is not None and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.pid() is not None:
                log.warning("the Kafka Connect worker did not stop within %.0f s: killing it", timeout)
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                if self._proc is not None:
                    self._proc.wait(10)
        self._proc = None
        self.pid_file.unlink(missing_ok=True)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (the worker leaves its group), SIGKILL after ``timeout`` s."""
        self._stop(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL at once: the quick end of a throwaway worker."""
        self._stop(signal.SIGKILL, 10.0)

    def __enter__(self) -> ConnectWorker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"ConnectWorker({str(self.base_dir)!r}, url={self.url!r})"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m streamsql.testing.connect up|down|status``; see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m streamsql.testing.connect",
                                     description="Run a local Kafka Connect worker (distributed mode) "
                                                 "from kafka/connect-lib.")
    parser.add_argument("action", choices=("up", "down", "status"))
    parser.add_argument("--dir", default=".kafka/connect", help="configuration and logs (default: .kafka/connect)")
    parser.add_argument("--port", type=int, default=None,
                        help=f"REST port (default: {DEFAULT_PORT}, or the port of the worker in --dir)")
    parser.add_argument("--bootstrap-servers", default=",".join(f"{_HOST}:{p}" for p in DEFAULT_PORTS),
                        help="the Kafka brokers (default: make kafka-up's)")
    parser.add_argument("--group-id", default=DEFAULT_GROUP)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the worker")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    base = Path(args.dir)
    has_worker = (base / _LAYOUT_FILE).exists()
    if args.action != "up" and not has_worker:
        print(f"no Kafka Connect worker in {base}")
        return 0 if args.action == "down" else 1
    port = args.port if args.port or has_worker else DEFAULT_PORT
    try:
        worker = ConnectWorker(base, args.bootstrap_servers, port, group_id=args.group_id,
                               start_timeout=args.timeout)
        if args.action == "up":
            worker.start()
            print(f"Kafka Connect is up: {worker.url} (log in {worker.log_file}; "
                  f"stop with `make connect-down`)")
        elif args.action == "down":
            pid = worker.pid()
            worker.stop()
            print(f"stopped the Kafka Connect worker (pid {pid})" if pid else "no worker was running")
        else:
            pid = worker.pid()
            answer = http_get(worker.url + "/") if pid else None
            state = ("answering" if answer else "not answering") if pid else "stopped"
            print(f"Kafka Connect worker: {worker.url} {state}{f' (pid {pid})' if pid else ''}")
            return 0 if answer else 1
    except KafkaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

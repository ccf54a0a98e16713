"""Real Apache Kafka brokers (KRaft, combined broker+controller nodes) for development and tests.

The broker's jars come from Maven Central into ``kafka/lib`` (``make kafka-jars``, see
``kafka/pom.xml``), or from ``$STREAMSQL_KAFKA_LIB``; all that is needed besides is ``java``
(17+). ``KafkaCluster`` writes each node's ``server.properties`` and ``log4j.properties`` under
``<base_dir>/broker-<id>/``, formats the KRaft storage, starts every node as
``java -cp 'kafka/lib/*' kafka.Kafka server.properties`` in its own process group and returns
once every broker answers a Metadata request listing all the running brokers::

    with KafkaCluster(tmp_dir, brokers=3) as cluster:
        cluster.bootstrap_servers          # "127.0.0.1:41231,127.0.0.1:39877,127.0.0.1:45011"
        cluster.stop_broker(1)             # SIGTERM (controlled shutdown), then restart it:
        cluster.start_broker(1)

Broker logs go to ``<base_dir>/broker-<id>/server.log`` (the JVM's own output to
``stdout.log``). ``make kafka-jars`` also builds a class-data-sharing archive of the
broker's classes (``kafka-broker.jsa`` beside the jars, see ``build_cds_archive``): with it a
broker starts in about half the time. ``$STREAMSQL_KAFKA_JVM_OPTS`` adds JVM options (after
the defaults, so ``-Xmx1g -XX:TieredStopAtLevel=4`` override them for a benchmark).
``kcat_produce`` and ``kcat_consume`` drive kcat (librdkafka), a client that
shares no code with streamsql, for tests.

The command line, used by ``make kafka-up`` / ``make kafka-down``::

    python -m streamsql.testing.kafka up     [--dir .kafka] [--ports 19092,29092,39092]
    python -m streamsql.testing.kafka status [--dir .kafka]
    python -m streamsql.testing.kafka down   [--dir .kafka]
    python -m streamsql.testing.kafka cds    # (re)build the class-data-sharing archive

``up`` leaves the brokers running detached (their pids in ``<dir>/broker-<id>/pid``) and
returns once they answer; ``down`` stops them and removes nothing.
"""
from __future__ import annotations

import argparse
import base64
import ctypes
import ctypes.util
import json
import logging
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

log = logging.getLogger(__name__)

DEFAULT_PORTS = (19092, 29092, 39092)
"""The client ports of ``make kafka-up``'s cluster (and of docker-compose.yml)."""

DEFAULT_JVM_OPTIONS = (
    # Small heap, serial GC and the C1 compiler only: several brokers and a test suite share two
    # cores, and a broker carrying test traffic needs neither a big heap nor C2's peak speed.
    "-Xms64m", "-Xmx384m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
    "-XX:MaxDirectMemorySize=128m", "-Djava.awt.headless=true", "-Djava.net.preferIPv4Stack=true",
)

CDS_ARCHIVE = "kafka-broker.jsa"
"""The class-data-sharing archive's file name, in the jars' directory."""

_HOST = "127.0.0.1"
_LAYOUT_FILE = "cluster.json"
_CLIENT_ID = b"streamsql-testing"


class KafkaError(RuntimeError):
    """A broker could not be set up, started or reached."""


def jar_dir(env_var: str, folder: str) -> Path:
    """Where a Java program's jars are: ``$env_var`` when set, else ``kafka/<folder>`` in the
    repo (where the Makefile fetches them)."""
    env = os.environ.get(env_var)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "kafka" / folder


def kafka_lib_dir() -> Path:
    """Where the broker jars are: ``$STREAMSQL_KAFKA_LIB``, else ``kafka/lib`` in the repo."""
    return jar_dir("STREAMSQL_KAFKA_LIB", "lib")


def java_executable() -> str | None:
    """``$JAVA_HOME/bin/java`` when set, else ``java`` on the PATH (None when neither)."""
    home = os.environ.get("JAVA_HOME")
    if home and os.access(Path(home) / "bin" / "java", os.X_OK):
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


def kafka_unavailable_reason(lib_dir: Path | None = None) -> str | None:
    """Why brokers cannot be started here (None when they can): no java, or no jars."""
    if java_executable() is None:
        return "java is not installed (Kafka's broker needs Java 17+)"
    lib = lib_dir or kafka_lib_dir()
    if not any(lib.glob("kafka_2.13-*.jar")):
        return f"the Kafka broker jars are missing from {lib} (run `make kafka-jars`)"
    return None


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports the kernel reports free on 127.0.0.1 (all sockets are held
    open together so no port is handed out twice)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((_HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the broker binds it
        try:
            s.bind((_HOST, port))
        except OSError:
            return False
    return True


def _new_cluster_id() -> str:
    # Kafka's Uuid string form: 16 random bytes, URL-safe base64 without padding; like
    # Uuid.randomUuid() it avoids a leading '-' (read as an option on command lines).
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):
            return text


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    buf = bytearray()
    while len(buf) < size:
        chunk = sock.recv(size - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by the broker")
        buf += chunk
    return bytes(buf)


def metadata_broker_ids(port: int, host: str = _HOST, timeout: float = 2.0) -> set[int] | None:
    """The ids of the brokers that the broker on ``host:port`` reports alive, from a Metadata
    (v4, no topics) request; None when it does not answer. A KRaft broker only serves requests
    once it has caught up with the metadata log and been unfenced, so an answer means ready."""
    header = struct.pack(">hhih", 3, 4, 1, len(_CLIENT_ID)) + _CLIENT_ID  # api key, version, corr id
    body = struct.pack(">ib", 0, 0)  # topics: an empty array (none); allow_auto_topic_creation
    request = header + body
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(struct.pack(">i", len(request)) + request)
            (size,) = struct.unpack(">i", _recv_exact(sock, 4))
            data = _recv_exact(sock, size)
    except (OSError, ConnectionError):
        return None
    # correlation id, throttle_time_ms, then brokers: [node_id, host, port, rack]
    _corr, _throttle, count = struct.unpack_from(">iii", data, 0)
    offset, ids = 12, set()
    for _ in range(count):
        (node_id, host_len) = struct.unpack_from(">ih", data, offset)
        offset += 6 + host_len + 4
        (rack_len,) = struct.unpack_from(">h", data, offset)
        offset += 2 + max(rack_len, 0)
        ids.add(node_id)
    return ids


def _die_with_parent() -> Callable[[], None]:
    """A ``preexec_fn`` asking Linux to SIGKILL the child when the thread that started it ends
    (prctl PR_SET_PDEATHSIG), so a test run that is itself killed leaves no broker behind."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    prctl = libc.prctl  # looked up now: between fork and exec nothing may import or lock
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, signal.SIGKILL)

    return preexec


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no {path})"
    return "\n".join(text.splitlines()[-lines:])


def pid_runs(pid: int, main_class: str, props: Path) -> bool:
    """Whether ``pid`` is (still) the Java program ``main_class`` started with ``props``: a
    pid file may outlive its process, and the pid be reused by another."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z" and main_class.encode() in cmdline and str(props).encode() in cmdline


def _pid_is_broker(pid: int, props: Path) -> bool:
    return pid_runs(pid, "kafka.Kafka", props)


def rss_bytes(pid: int) -> int | None:
    """Resident memory of a process (from /proc), None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


@dataclass(frozen=True)
class BrokerNode:
    """One KRaft node (broker and controller in one process): where its files are."""

    node_id: int
    port: int
    controller_port: int
    directory: Path

    @property
    def properties_file(self) -> Path:
        return self.directory / "server.properties"

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def pid_file(self) -> Path:
        return self.directory / "pid"

    @property
    def server_log(self) -> Path:
        return self.directory / "server.log"

    @property
    def stdout_log(self) -> Path:
        return self.directory / "stdout.log"


class KafkaCluster:
    """A cluster of ``brokers`` KRaft nodes (each a broker and a controller) under ``base_dir``.

    ``ports`` are the client ports (one per broker, their count is the broker count);
    ``controller_ports`` default to port + 1 for given ports. Without ports, free ones are
    picked, unless ``base_dir`` already holds a cluster, whose ports are kept (its metadata log
    records them). Brokers are addressed by index (0-based; node id = index + 1).
    ``die_with_parent`` (for tests; Linux) has the kernel kill the brokers when the thread that
    started them ends, even by SIGKILL: a killed test run leaves no broker running.
    """

    def __init__(self, base_dir: str | os.PathLike[str], ports: Sequence[int] | None = None,
                 brokers: int = 1, *, controller_ports: Sequence[int] | None = None,
                 lib_dir: str | os.PathLike[str] | None = None,
                 jvm_options: Sequence[str] = DEFAULT_JVM_OPTIONS,
                 config: dict[str, str] | None = None, start_timeout: float = 90.0,
                 die_with_parent: bool = False) -> None:
        self.base_dir = Path(base_dir).resolve()
        self.lib_dir = Path(lib_dir) if lib_dir else kafka_lib_dir()
        self.jvm_options = tuple(jvm_options)
        self.extra_config = dict(config or {})
        self.start_timeout = start_timeout
        self.use_cds = True
        self._preexec = _die_with_parent() if die_with_parent and sys.platform == "linux" else None
        stored = self._read_layout()
        if ports is not None:
            if brokers not in (1, len(ports)):
                raise ValueError(f"{len(ports)} ports given for {brokers} brokers")
            ports = list(ports)
            controller_ports = list(controller_ports) if controller_ports else [p + 1 for p in ports]
        elif stored is not None:
            ports, controller_ports = stored["ports"], stored["controller_ports"]
            if brokers not in (1, len(ports)):
                raise KafkaError(f"{self.base_dir} holds a cluster of {len(ports)} brokers, not {brokers}")
        else:
            picked = free_ports(2 * brokers)
            ports, controller_ports = picked[:brokers], picked[brokers:]
        if len(controller_ports) != len(ports) or len(set(ports) | set(controller_ports)) != 2 * len(ports):
            raise ValueError(f"need distinct client and controller ports, got {ports} and {controller_ports}")
        if stored is not None and (stored["ports"], stored["controller_ports"]) != (ports, controller_ports):
            raise KafkaError(
                f"{self.base_dir} holds a cluster on ports {stored['ports']} (controllers "
                f"{stored['controller_ports']}), not {ports}: use those ports or remove the directory")
        self.cluster_id: str = stored["cluster_id"] if stored else _new_cluster_id()
        self.nodes = [BrokerNode(i + 1, p, c, self.base_dir / f"broker-{i + 1}")
                      for i, (p, c) in enumerate(zip(ports, controller_ports))]
        self._procs: list[subprocess.Popen[bytes] | None] = [None] * len(self.nodes)

    # -- addresses -------------------------------------------------------------------------

    @property
    def ports(self) -> list[int]:
        return [n.port for n in self.nodes]

    @property
    def bootstrap_servers(self) -> str:
        """``"127.0.0.1:p1,127.0.0.1:p2,..."``, every broker's client address."""
        return ",".join(f"{_HOST}:{n.port}" for n in self.nodes)

    def __repr__(self) -> str:
        return f"KafkaCluster({str(self.base_dir)!r}, ports={self.ports})"

    # -- configuration ---------------------------------------------------------------------

    def _read_layout(self) -> dict | None:
        try:
            return json.loads((self.base_dir / _LAYOUT_FILE).read_text())
        except FileNotFoundError:
            return None

    def _write_layout(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        layout = {"cluster_id": self.cluster_id, "ports": self.ports,
                  "controller_ports": [n.controller_port for n in self.nodes]}
        (self.base_dir / _LAYOUT_FILE).write_text(json.dumps(layout) + "\n")

    def broker_config(self, node: BrokerNode) -> dict[str, str]:
        """The ``server.properties`` of a node (``config`` given to the cluster overrides)."""
        count = len(self.nodes)
        replicas = min(count, 3)
        voters = ",".join(f"{n.node_id}@{_HOST}:{n.controller_port}" for n in self.nodes)
        config = {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://{_HOST}:{node.port},CONTROLLER://{_HOST}:{node.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{_HOST}:{node.port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(node.data_dir),
            "num.partitions": "1",
            "auto.create.topics.enable": "false",
            # Internal topics replicated over the cluster, and writable with one broker down
            # (1 broker: 1/1/1; 3: 3/3/2).
            "offsets.topic.replication.factor": str(replicas),
            "transaction.state.log.replication.factor": str(replicas),
            "transaction.state.log.min.isr": str(max(1, min(replicas - 1, 2))),
            # Few partitions for internal topics: created on a test's first group or
            # transaction, 50 each (the defaults) cost seconds and file handles.
            "offsets.topic.num.partitions": "5",
            "transaction.state.log.num.partitions": "5",
            "group.initial.rebalance.delay.ms": "0",
            "group.min.session.timeout.ms": "1000",
            # Threads and buffers for a laptop, not a data centre (the cleaner's dedupe buffer
            # is 128 MiB by default, a third of the heap).
            "num.network.threads": "2",
            "num.io.threads": "4",
            "background.threads": "4",
            "num.recovery.threads.per.data.dir": "1",
            "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
            # A killed broker is fenced (its partitions' leadership moved) after 6 s, not 9.
            "broker.session.timeout.ms": "6000",
            "broker.heartbeat.interval.ms": "1000",
        }
        config.update(self.extra_config)
        return config

    def _log4j_config(self, node: BrokerNode) -> str:
        return "\n".join([
            "log4j.rootLogger=INFO, file",
            "log4j.appender.file=org.apache.log4j.RollingFileAppender",
            f"log4j.appender.file.File={node.server_log}",
            "log4j.appender.file.MaxFileSize=50MB",
            "log4j.appender.file.MaxBackupIndex=2",
            "log4j.appender.file.layout=org.apache.log4j.PatternLayout",
            "log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n",
            "log4j.logger.kafka.request.logger=WARN",
            "log4j.logger.kafka.log.LogCleaner=WARN",
            "log4j.logger.state.change.logger=WARN",
            "",
        ])

    def _write_configs(self) -> None:
        self._write_layout()
        for node in self.nodes:
            node.directory.mkdir(parents=True, exist_ok=True)
            props = "".join(f"{k}={v}\n" for k, v in self.broker_config(node).items())
            node.properties_file.write_text(props)
            (node.directory / "log4j.properties").write_text(self._log4j_config(node))

    def _java_command(self, node: BrokerNode, main: str, *args: str) -> list[str]:
        java = java_executable()
        if java is None:
            raise KafkaError("java is not installed (Kafka's broker needs Java 17+)")
        archive = self.lib_dir / CDS_ARCHIVE
        # A stale archive (other jars, another JDK) is only a warning in stdout.log: the JVM
        # then loads the classes from the jars.
        cds = [f"-XX:SharedArchiveFile={archive}"] if self.use_cds and archive.exists() else []
        env_options = os.environ.get("STREAMSQL_KAFKA_JVM_OPTS", "").split()
        return [java, *self.jvm_options, *cds, *env_options,
                f"-Dlog4j.configuration=file:{node.directory / 'log4j.properties'}",
                f"-Dkafka.logs.dir={node.directory}",
                "-cp", f"{self.lib_dir}/*", main, *args]

    def _format(self, nodes: Iterable[BrokerNode]) -> None:
        """Formats the storage of the nodes that have none yet, all at once (a JVM each)."""
        todo = [n for n in nodes if not (n.data_dir / "meta.properties").exists()]
        procs = [(n, subprocess.Popen(
            self._java_command(n, "kafka.tools.StorageTool", "format", "--ignore-formatted",
                               "-t", self.cluster_id, "-c", str(n.properties_file)),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)) for n in todo]
        for node, proc in procs:
            out, _ = proc.communicate()
            if proc.returncode != 0:
                raise KafkaError(f"formatting the storage of broker {node.node_id} failed "
                                 f"(exit {proc.returncode}):\n{out.decode(errors='replace')}")

    # -- processes -------------------------------------------------------------------------

    def _pid(self, index: int) -> int | None:
        """The pid of a running node (started here, or by an earlier ``up``), else None."""
        proc = self._procs[index]
        if proc is not None:
            return proc.pid if proc.poll() is None else None
        node = self.nodes[index]
        try:
            pid = int(node.pid_file.read_text())
        except (OSError, ValueError):
            return None
        return pid if _pid_is_broker(pid, node.properties_file) else None

    def is_running(self, index: int) -> bool:
        """Whether broker ``index``'s process is alive (answering or not)."""
        return self._pid(index) is not None

    def pids(self) -> list[int | None]:
        """The pid of each broker, None for a stopped one."""
        return [self._pid(i) for i in range(len(self.nodes))]

    def _launch(self, index: int) -> None:
        node = self.nodes[index]
        for port in (node.port, node.controller_port):
            if not _port_free(port):
                raise KafkaError(f"port {port} of broker {node.node_id} is in use on {_HOST}")
        with open(node.stdout_log, "ab") as out:
            # Its own session (and process group): Ctrl-C in a terminal running `make
            # kafka-up` or pytest does not reach it, and stop() signals it alone.
            proc = subprocess.Popen(self._java_command(node, "kafka.Kafka", str(node.properties_file)),
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    cwd=node.directory, start_new_session=True,
                                    preexec_fn=self._preexec)
        self._procs[index] = proc
        node.pid_file.write_text(f"{proc.pid}\n")
        log.info("started Kafka broker %d on %s:%d (pid %d)", node.node_id, _HOST, node.port, proc.pid)

    def _failure(self, message: str, index: int) -> KafkaError:
        node = self.nodes[index]
        return KafkaError(f"{message}\n--- {node.server_log} (tail) ---\n{_tail(node.server_log)}"
                          f"\n--- {node.stdout_log} (tail) ---\n{_tail(node.stdout_log, 10)}")

    def wait_ready(self, indices: Iterable[int] | None = None, timeout: float | None = None) -> None:
        """Waits until each broker of ``indices`` (default: all running) answers a Metadata
        request listing every running broker; raises KafkaError with its log on timeout or
        when its process dies."""
        pending = set(range(len(self.nodes)) if indices is None else indices)
        deadline = time.monotonic() + (self.start_timeout if timeout is None else timeout)
        while pending:
            running = {self.nodes[i].node_id for i in range(len(self.nodes)) if self.is_running(i)}
            for index in sorted(pending):
                node = self.nodes[index]
                if node.node_id not in running:
                    raise self._failure(f"Kafka broker {node.node_id} exited while starting", index)
                alive = metadata_broker_ids(node.port, timeout=1.0)
                if alive is not None and running <= alive:
                    pending.discard(index)
            if not pending:
                return
            if time.monotonic() > deadline:
                index = min(pending)
                raise self._failure(f"Kafka broker {self.nodes[index].node_id} did not answer on "
                                    f"{_HOST}:{self.nodes[index].port} within {timeout or self.start_timeout:g} s",
                                    index)
            time.sleep(0.1)

    def start(self) -> KafkaCluster:
        """Writes the configuration, formats new storage and starts every broker that is not
        running; returns once all answer. On failure the brokers it started are stopped."""
        reason = kafka_unavailable_reason(self.lib_dir)
        if reason:
            raise KafkaError(reason)
        began = time.monotonic()
        self._write_configs()
        self._format(self.nodes)
        started = []
        try:
            for index in range(len(self.nodes)):
                if not self.is_running(index):
                    self._launch(index)
                    started.append(index)
            self.wait_ready()
        except BaseException:
            self._stop(started, signal.SIGKILL, 10.0)
            raise
        log.info("Kafka cluster of %d broker(s) ready in %.1f s: %s", len(self.nodes),
                 time.monotonic() - began, self.bootstrap_servers)
        return self

    def start_broker(self, index: int, timeout: float | None = None) -> None:
        """Starts a stopped broker again and waits until it answers."""
        if not self.is_running(index):
            self._write_configs()
            self._format([self.nodes[index]])
            self._launch(index)
        self.wait_ready([index], timeout)

    def _stop(self, indices: Iterable[int], sig: signal.Signals, timeout: float) -> None:
        """Sends ``sig`` to the brokers together, waits, and SIGKILLs what is left after
        ``timeout`` seconds."""
        pids = {i: pid for i in indices if (pid := self._pid(i)) is not None}
        for pid in pids.values():
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        for index, pid in pids.items():
            if not self._wait_gone(index, max(0.0, deadline - time.monotonic())):
                log.warning("Kafka broker %d did not stop within %.0f s: killing it",
                            self.nodes[index].node_id, timeout)
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self._wait_gone(index, 10.0)
        for index in pids:
            self._procs[index] = None
            self.nodes[index].pid_file.unlink(missing_ok=True)

    def _wait_gone(self, index: int, timeout: float) -> bool:
        proc = self._procs[index]
        if proc is not None:
            try:
                proc.wait(timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + timeout
        while self._pid(index) is not None:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def stop_broker(self, index: int, timeout: float = 30.0) -> None:
        """Stops one broker: SIGTERM (a controlled shutdown: its partitions' leadership moves
        to other brokers first), SIGKILL when it is still running after ``timeout`` s."""
        self._stop([index], signal.SIGTERM, timeout)

    def kill_broker(self, index: int) -> None:
        """Kills one broker at once (SIGKILL), as a crash would."""
        self._stop([index], signal.SIGKILL, 10.0)

    def stop(self, timeout: float = 30.0) -> None:
        """Stops every broker (SIGTERM to all at once, SIGKILL after ``timeout`` s). Their data
        stays: ``start()`` brings the same cluster back."""
        self._stop(range(len(self.nodes)), signal.SIGTERM, timeout)

    def kill(self) -> None:
        """Kills every broker at once (SIGKILL): the quick end of a throwaway cluster (a clean
        stop of a whole KRaft quorum waits ~5 s for its leader to hand over to no one)."""
        self._stop(range(len(self.nodes)), signal.SIGKILL, 10.0)

    def __enter__(self) -> KafkaCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def build_cds_archive(lib_dir: Path | None = None, timeout: float = 120.0) -> Path:
    """Builds ``<lib_dir>/kafka-broker.jsa``, a dynamic class-data-sharing archive of the
    classes a broker loads to start (JDK 13+): a broker is started in a scratch directory with
    ``-XX:ArchiveClassesAtExit``, stopped, and the JVM writes the archive as it exits."""
    import tempfile

    lib = lib_dir or kafka_lib_dir()
    target = lib / CDS_ARCHIVE
    scratch = Path(tempfile.mkdtemp(prefix="streamsql-kafka-cds-"))
    partial = scratch / CDS_ARCHIVE
    try:
        cluster = KafkaCluster(scratch / "cluster", lib_dir=lib, start_timeout=timeout)
        cluster.use_cds = False  # archive afresh, from the jars
        cluster.jvm_options += (f"-XX:ArchiveClassesAtExit={partial}",)
        cluster.start()
        cluster.stop(timeout)  # a clean exit: a killed JVM writes no archive
        if not partial.exists():
            raise KafkaError(f"the JVM wrote no archive (see {cluster.nodes[0].stdout_log})")
        os.replace(partial, target)  # atomic: a broker starting now sees all of it or nothing
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


# -- kcat: a second, independent client for tests -------------------------------------------

@dataclass(frozen=True)
class KcatRecord:
    """A record as kcat consumed it; key and value are UTF-8 text (undecodable bytes kept as
    surrogate escapes), None for a null key or value."""

    partition: int
    offset: int
    key: str | None
    value: str | None
    timestamp: int = -1  # ms (as the record has it)


def kcat_executable() -> str | None:
    """kcat on the PATH (Debian's ``kcat`` package), or its old name ``kafkacat``."""
    return shutil.which("kcat") or shutil.which("kafkacat")


def _kcat() -> str:
    kcat = kcat_executable()
    if kcat is None:
        raise KafkaError("kcat is not installed (apt-get install kcat; `make kcat`)")
    return kcat


def _encode(text: str | bytes) -> bytes:
    return text if isinstance(text, bytes) else text.encode("utf-8", "surrogateescape")


_KEY_DELIM = b"\x1f"  # ASCII unit and record separators: found in no test's keys or values
_MSG_DELIM = b"\x1e"


def kcat_produce(bootstrap: str, topic: str, records: Iterable[tuple[str | bytes | None, str | bytes | None]],
                 partition: int | None = None, timeout: float = 30.0) -> None:
    """Produces ``(key, value)`` records with kcat (acks=all), in order. None is a null key
    or value (a tombstone); kcat then sends every empty key or value as null, so a call cannot
    mix None with empty strings. Without ``partition`` the key picks it as Java clients (and
    Kafka Streams, ksqlDB) do: murmur2."""
    records = list(records)
    parts = [(b"" if k is None else _encode(k), b"" if v is None else _encode(v)) for k, v in records]
    if any(_KEY_DELIM in k or _MSG_DELIM in k or _MSG_DELIM in v for k, v in parts):
        raise ValueError("kcat_produce: keys cannot hold \\x1e or \\x1f, nor values \\x1e")
    nulls = any(k is None or v is None for k, v in records)
    if nulls and any(x is not None and not x for record in records for x in record):
        raise ValueError("kcat_produce: empty and null keys or values cannot be sent in one call")
    payload = b"".join(k + _KEY_DELIM + v + _MSG_DELIM for k, v in parts)
    cmd = [_kcat(), "-b", bootstrap, "-t", topic, "-P", "-K", r"\x1f", "-D", r"\x1e",
           "-X", "acks=all", "-X", "topic.partitioner=murmur2_random",
           # librdkafka waits 5 minutes for a missing topic by default: give up in time instead
           "-X", f"message.timeout.ms={max(1, int(timeout * 1000) - 2000)}"]
    if nulls:
        cmd.append("-Z")  # empty keys and values are sent as null
    if partition is not None:
        cmd += ["-p", str(partition)]
    try:
        done = subprocess.run(cmd, input=payload, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise KafkaError(f"kcat could not produce to {topic} within {timeout} s: "
                         f"{(exc.stderr or b'').decode(errors='replace').strip()}") from None
    # kcat also prints transient errors (a broker down, while others take over): only failed
    # deliveries count.
    if done.returncode != 0 or b"Delivery failed" in done.stderr:
        hint = " (does the topic exist?)" if b"timed out" in done.stderr else ""
        raise KafkaError(f"kcat could not produce to {topic} (exit {done.returncode}): "
                         f"{done.stderr.decode(errors='replace').strip()}{hint}")


def kcat_consume(bootstrap: str, topic: str, count: int | None = None, timeout: float = 30.0,
                 partition: int | None = None, offset: str = "beginning",
                 isolation: str | None = None) -> list[KcatRecord]:
    """Reads ``count`` records of a topic with kcat, from ``offset`` (``beginning``, ``end``,
    a number...) of every partition (or of ``partition``); with ``count`` None, every record
    up to the end of each partition. ``isolation`` is ``read_committed`` (librdkafka's
    default: records of open or aborted transactions are not read) or ``read_uncommitted``.
    Raises TimeoutError (holding what was read in its ``records`` attribute) when ``count``
    records do not come within ``timeout`` s."""
    # Each record: "partition:offset:timestamp:keylen:valuelen:" then the raw key and value
    # (length -1 for null), so any bytes come back intact.
    # -u: unbuffered, so what was read before a timeout is not lost with the killed process
    cmd = [_kcat(), "-b", bootstrap, "-t", topic, "-C", "-q", "-u", "-o", offset, "-f", "%p:%o:%T:%K:%S:%k%s"]
    if count is not None:
        cmd += ["-c", str(count)]
    else:
        cmd.append("-e")
    if partition is not None:
        cmd += ["-p", str(partition)]
    if isolation is not None:  # read_committed: records of aborted transactions are skipped
        cmd += ["-X", f"isolation.level={isolation}"]
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        got = _parse_kcat(exc.stdout or b"")
        err = TimeoutError(f"kcat read {len(got)} of {count} records from {topic} in {timeout} s: "
                           f"{(exc.stderr or b'').decode(errors='replace').strip()}")
        err.records = got  # type: ignore[attr-defined]
        raise err from None
    if done.returncode != 0:
        raise KafkaError(f"kcat could not consume {topic} (exit {done.returncode}): "
                         f"{done.stderr.decode(errors='replace').strip()}")
    return _parse_kcat(done.stdout)


def consume_committed(bootstrap: str, topic: str, timeout: float = 30.0) -> list[KcatRecord]:
    """Every committed record of ``topic`` up to each partition's last stable offset as of
    the call, partition by partition, as ``kcat_consume`` gives them. For a topic that
    transactions keep writing to: a read_committed ``kcat -e`` never ends there (librdkafka
    sees the end of a partition only in an empty fetch, and each fetch waits for the next
    transaction to land). Raises TimeoutError after ``timeout`` s."""
    import asyncio

    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def read() -> list[KcatRecord]:
        c = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed",
                             enable_auto_commit=False, auto_offset_reset="earliest")
        await c.start()
        try:
            client = c._client  # (a consumer given partitions, not a topic, has no metadata of it)
            client.add_topic(topic)
            await client.force_metadata_update()
            partitions = c.partitions_for_topic(topic)
            if not partitions:
                return []  # (not there yet)
            tps = [TopicPartition(topic, p) for p in sorted(partitions)]
            c.assign(tps)
            ends = await c.end_offsets(tps)  # (read_committed: the last stable offsets)
            await c.seek_to_beginning(*tps)
            got: dict[TopicPartition, list[KcatRecord]] = {tp: [] for tp in tps}
            pending = [tp for tp in tps if await c.position(tp) < ends[tp]]
            while pending:
                for tp, recs in (await c.getmany(*pending, timeout_ms=500)).items():
                    got[tp] += [KcatRecord(r.partition, r.offset, _text(r.key), _text(r.value), r.timestamp)
                                for r in recs if r.offset < ends[tp]]
                pending = [tp for tp in pending if await c.position(tp) < ends[tp]]
            return [r for tp in tps for r in got[tp]]
        finally:
            await c.stop()
    return asyncio.run(asyncio.wait_for(read(), timeout))


def _text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode("utf-8", "surrogateescape")


def kcat_metadata(bootstrap: str, topic: str | None = None, timeout: float = 30.0) -> dict:
    """The cluster's metadata as kcat sees it (``kcat -L -J``): ``brokers`` and ``topics``,
    each partition with its ``leader``, ``replicas`` and ``isrs`` (``[{"id": n}]``)."""
    cmd = [_kcat(), "-b", bootstrap, "-L", "-J", "-q"] + (["-t", topic] if topic else [])
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise KafkaError(f"kcat -L got no metadata from {bootstrap} within {timeout} s") from None
    if done.returncode != 0:
        raise KafkaError(f"kcat -L failed (exit {done.returncode}): {done.stderr.decode(errors='replace').strip()}")
    return json.loads(done.stdout)


def _parse_kcat(out: bytes) -> list[KcatRecord]:
    records, pos = [], 0
    while pos < len(out):
        fields = []
        for _ in range(5):
            end = out.find(b":", pos)
            if end < 0:  # a record cut short by a timeout
                return records
            fields.append(int(out[pos:end]))
            pos = end + 1
        part, off, ts, key_len, value_len = fields
        if pos + max(key_len, 0) + max(value_len, 0) > len(out):
            return records
        key = value = None
        if key_len >= 0:
            key = out[pos:pos + key_len].decode("utf-8", "surrogateescape")
            pos += key_len
        if value_len >= 0:
            value = out[pos:pos + value_len].decode("utf-8", "surrogateescape")
            pos += value_len
        records.append(KcatRecord(part, off, key, value, ts))
    return records


# -- command line ---------------------------------------------------------------------------

def _parse_ports(text: str) -> list[int]:
    return [int(p) for p in text.split(",") if p.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m streamsql.testing.kafka up|down|status``; see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m streamsql.testing.kafka",
                                     description="Run a local Apache Kafka cluster (KRaft) from kafka/lib.")
    parser.add_argument("action", choices=("up", "down", "status", "cds"))
    parser.add_argument("--dir", default=".kafka", help="data, configuration and logs (default: .kafka)")
    parser.add_argument("--ports", type=_parse_ports, default=None,
                        help="client ports, one per broker (default: 19092,29092,39092, or the "
                             "ports of the cluster already in --dir); controllers listen on port+1")
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for the brokers")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    base = Path(args.dir)
    if args.action == "cds":
        try:
            began = time.monotonic()
            path = build_cds_archive(timeout=args.timeout)
        except KafkaError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"built {path} in {time.monotonic() - began:.1f} s")
        return 0
    has_cluster = (base / _LAYOUT_FILE).exists()
    if args.action != "up" and not has_cluster:
        print(f"no Kafka cluster in {base}")
        return 0 if args.action == "down" else 1
    ports = args.ports if args.ports or has_cluster else list(DEFAULT_PORTS)
    try:
        cluster = KafkaCluster(base, ports=ports, start_timeout=args.timeout)
        if args.action == "up":
            cluster.start()
            # Detached: the brokers outlive this command (their own sessions); `down` finds
            # them by their pid files.
            print(f"Kafka is up: bootstrap servers {cluster.bootstrap_servers} "
                  f"(logs in {base}/broker-*/server.log; stop with `make kafka-down`)")
        elif args.action == "down":
            running = [n.node_id for n, pid in zip(cluster.nodes, cluster.pids()) if pid]
            cluster.stop()
            print(f"stopped broker(s) {running}" if running else "no broker was running")
        else:
            status = 0
            for node, pid in zip(cluster.nodes, cluster.pids()):
                alive = metadata_broker_ids(node.port) if pid else None
                rss = rss_bytes(pid) if pid else None
                state = ("answering" if alive is not None else "not answering") if pid else "stopped"
                status |= alive is None
                mem = f", {rss / 2**20:.0f} MiB resident" if rss else ""
                print(f"broker {node.node_id}: {_HOST}:{node.port} {state}"
                      f"{f' (pid {pid}{mem})' if pid else ''}")
            return status
    except KafkaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Shared pytest configuration: prints the QTT and REST query-validation pass rates at the end
of a run (gathered from pytest-xdist's workers when they ran the corpora); fixtures for tests against real Kafka brokers (``kafka``, ``kafka3``, ``kafka_lib``,
``kcat``, ``unique_topic``) and clusters of streamsql nodes on them (``cluster``); private
MariaDB and PostgreSQL servers for the JDBC connectors (``mariadb_server``/``postgres_server``,
and a fresh database on them per test: ``mariadb``, ``postgres``)."""
from __future__ import annotations

import os
import re
import uuid
from pathlib import Path
from typing import Callable, Iterator

import pytest

from streamsql.testing.kafka import KafkaCluster, KafkaError, kafka_lib_dir, kafka_unavailable_reason, kcat_executable


def _summaries() -> tuple[tuple[pytest.StashKey[str], str], ...]:
    from tests.test_qtt import SUMMARY
    from tests.test_rqtt import SUMMARY as RQTT_SUMMARY

    return ((SUMMARY, "QTT cases passing"), (RQTT_SUMMARY, "REST query-validation cases passing"))


def pytest_sessionfinish(session: pytest.Session) -> None:
    # A pytest-xdist worker ran the corpus: its pass rates go to the controller, which prints.
    output = getattr(session.config, "workeroutput", None)
    if output is not None:
        for key, title in _summaries():
            if key in session.config.stash:
                output[title] = session.config.stash[key]


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: object, error: object) -> None:
    config = node.config  # type: ignore[attr-defined]
    output = getattr(node, "workeroutput", {})
    for key, title in _summaries():
        if title in output:
            config.stash[key] = output[title]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    for key, title in _summaries():
        summary = config.stash.get(key, None)
        if summary:
            terminalreporter.write_sep("=", title)
            terminalreporter.write_line(summary)


# -- Kafka: real brokers (streamsql.testing.kafka) ------------------------------------------

def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false")


def _require(reason: str | None) -> None:
    """Skips the test for a missing tool, or fails it in CI (where the Kafka tests must run:
    `make test` fetches the jars and installs kcat first)."""
    if reason is None:
        return
    if _in_ci():
        pytest.fail(f"{reason}; under CI the Kafka tests must run", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def kafka_lib() -> Path:
    """The Kafka broker jars' directory, for tests that start brokers of their own; skipped
    without java or the jars, a failure under CI."""
    _require(kafka_unavailable_reason())
    return kafka_lib_dir()


# Test data has fixed event times, mostly long past (QTT cases, the join scenarios): the
# default 7-day retention would delete such records at the broker's first retention check,
# 30 s after it starts, whenever that falls in the middle of a test.
_TEST_BROKER_CONFIG = {"log.retention.ms": "-1"}


def _kafka_cluster(tmp_path_factory: pytest.TempPathFactory, brokers: int) -> Iterator[KafkaCluster]:
    _require(kafka_unavailable_reason())
    for attempt in range(3):
        # die_with_parent: a test run killed outright leaves no broker running
        cluster = KafkaCluster(tmp_path_factory.mktemp(f"kafka{brokers}-"), brokers=brokers,
                               die_with_parent=True, config=_TEST_BROKER_CONFIG)
        try:
            cluster.start()
            break
        except KafkaError as exc:
            # Free ports are picked before the brokers bind them: another process may be quicker.
            if "in use" not in str(exc) or attempt == 2:
                raise
    try:
        yield cluster
    finally:
        cluster.kill()  # its data is thrown away: no need for a clean (slower) stop


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """A 1-broker Kafka cluster (KRaft) on free ports, shared by the session's tests: give
    each test its own topics (``unique_topic``). Skipped without java or the broker jars, a
    failure under CI."""
    yield from _kafka_cluster(tmp_path_factory, 1)


@pytest.fixture(scope="session")
def kafka3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """A 3-broker Kafka cluster for replication tests, started by the first test asking for
    it. A test that stops or kills a broker starts it again before it ends, from its own
    (main) thread: brokers die with the thread that started them (``die_with_parent``)."""
    yield from _kafka_cluster(tmp_path_factory, 3)


@pytest.fixture(scope="session")
def kcat() -> str:
    """kcat's path (a second Kafka client); skipped when missing, a failure under CI."""
    path = kcat_executable()
    _require(None if path else "kcat is not installed (apt-get install kcat; `make kcat`)")
    assert path is not None
    return path


@pytest.fixture
def unique_topic(request: pytest.FixtureRequest) -> Callable[..., str]:
    """Makes topic names no other test uses (the Kafka fixtures are shared by the session):
    ``unique_topic()`` or ``unique_topic("orders")`` -> ``test_x-orders-1f3a9c2e``."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name).strip("-")[:120]

    def make(suffix: str = "") -> str:
        return f"{base}{'-' + suffix if suffix else ''}-{uuid.uuid4().hex[:8]}"

    return make


@pytest.fixture
def cluster(kafka, tmp_path):
    """``streamsql server`` nodes on the session's broker, one service id per test: start
    them with ``cluster(name, **config)``; all are stopped at the end."""
    from streamsql.testing.nodes import Node

    service = "svc_" + uuid.uuid4().hex[:8]
    nodes: list[Node] = []

    def start(name: str, **config: str) -> Node:
        node = Node(name, kafka.bootstrap_servers, service, tmp_path, config).start()
        nodes.append(node)
        return node

    start.service = service  # type: ignore[attr-defined]
    yield start
    for node in nodes:
        node.stop()


# -- Databases: private MariaDB and PostgreSQL servers (streamsql.testing.databases) ----------

@pytest.fixture(scope="session")
def mariadb_server(tmp_path_factory: pytest.TempPathFactory):
    """A MariaDB server of the session's own on a free port; skipped without mariadb-server or
    mysqlclient, a failure under CI (`make test` installs them)."""
    from streamsql.testing.databases import MariaDBServer, mariadb_unavailable_reason

    _require(mariadb_unavailable_reason())
    server = MariaDBServer(tmp_path_factory.mktemp("mariadb-"), die_with_parent=True).start()
    try:
        yield server
    finally:
        server.kill()  # its data is thrown away


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory):
    """A PostgreSQL server of the session's own on a free port (run as ``postgres`` under
    root); skipped without postgresql or psycopg, a failure under CI."""
    from streamsql.testing.databases import PostgresServer, postgres_unavailable_reason

    _require(postgres_unavailable_reason())
    server = PostgresServer(tmp_path_factory.mktemp("postgres-"), die_with_parent=True).start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def mariadb(mariadb_server):
    """A fresh database (and user) on the session's MariaDB server, for one test."""
    return mariadb_server.new_database()


@pytest.fixture
def postgres(postgres_server):
    """A fresh database (and user) on the session's PostgreSQL server, for one test."""
    return postgres_server.new_database()

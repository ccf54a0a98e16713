"""Real, private database servers for the JDBC connectors' tests and benchmarks.

``MariaDBServer`` runs Debian's ``mariadbd`` on a data directory of its own (made by
``mariadb-install-db``), ``PostgresServer`` runs ``postgres`` on one made by ``initdb``; each
listens on a free loopback port and a unix socket in its directory, and is stopped (and its
directory removed) by ``stop()``. Neither touches a system-wide server or its files::

    with MariaDBServer(tmp_dir) as server:
        db = server.new_database()          # a fresh database and user for one test
        db.url                              # "jdbc:mariadb://127.0.0.1:40123/t_1f3a9c2e"
        with db.connect() as conn: ...      # a driver connection (MySQLdb / psycopg)

PostgreSQL refuses to run as root: under root the server runs as the ``postgres`` user (the
Debian package creates it), in a directory under the system's temp dir that this user owns.
``die_with_parent`` has the kernel kill a server when the thread that started it ends, so a test
run that is itself killed leaves no database behind (as the Kafka brokers of the tests).
"""
from __future__ import annotations

import glob
import importlib.util
import logging
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from streamsql.testing.kafka import _die_with_parent, _tail, free_ports

log = logging.getLogger(__name__)

_HOST = "127.0.0.1"
PASSWORD = "streamsql-test-pw"
"""The password of every user the servers here create (they listen on loopback only)."""


class DatabaseError(RuntimeError):
    """A database server could not be set up, started or reached."""


def mariadb_unavailable_reason() -> str | None:
    """Why a MariaDB server cannot be started here (None when it can)."""
    if not (shutil.which("mariadbd") or os.access("/usr/sbin/mariadbd", os.X_OK)):
        return "mariadbd is not installed (apt-get install mariadb-server; `make databases`)"
    if not shutil.which("mariadb-install-db"):
        return "mariadb-install-db is not installed (apt-get install mariadb-server; `make databases`)"
    if importlib.util.find_spec("MySQLdb") is None:
        return "the mysqlclient driver is not installed (pip install mysqlclient)"
    return None


def _postgres_bin() -> Path | None:
    # Debian installs the server outside the PATH, one directory per major version.
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    path = shutil.which("postgres")
    return Path(path).parent if path else None


def postgres_unavailable_reason() -> str | None:
    """Why a PostgreSQL server cannot be started here (None when it can)."""
    bindir = _postgres_bin()
    if bindir is None or not (bindir / "initdb").exists():
        return "PostgreSQL's server is not installed (apt-get install postgresql; `make databases`)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root, and there is no 'postgres' user to run PostgreSQL as"
    if importlib.util.find_spec("psycopg") is None:
        return "the psycopg driver is not installed (pip install 'psycopg[binary]')"
    return None


@dataclass(frozen=True)
class Database:
    """One database on a server, with a user that owns it: what a connector's config names."""

    kind: str            # "mariadb" or "postgresql"
    host: str
    port: int
    name: str
    user: str
    password: str

    @property
    def url(self) -> str:
        """The JDBC URL, as a Kafka Connect config would carry it."""
        return f"jdbc:{self.kind}://{self.host}:{self.port}/{self.name}"

    def connector_config(self) -> dict[str, str]:
        """``connection.url``/``connection.user``/``connection.password`` for this database."""
        return {"connection.url": self.url, "connection.user": self.user, "connection.password": self.password}

    def connect(self, autocommit: bool = True) -> Any:
        """A driver connection (MySQLdb or psycopg) as this database's user."""
        if self.kind == "mariadb":
            import MySQLdb

            conn = MySQLdb.connect(host=self.host, port=self.port, user=self.user, password=self.password,
                                   database=self.name, charset="utf8mb4")
            conn.autocommit(autocommit)
            return conn
        import psycopg

        return psycopg.connect(host=self.host, port=self.port, user=self.user, password=self.password,
                               dbname=self.name, autocommit=autocommit)

    def execute(self, *statements: str, params: Any = None) -> list[tuple]:
        """Runs statements in one connection (autocommit); the rows of the last one."""
        conn = self.connect()
        try:
            cur = conn.cursor()
            rows: list[tuple] = []
            for sql in statements:
                cur.execute(sql, params)
                rows = list(cur.fetchall()) if cur.description else []
            return rows
        finally:
            conn.close()


class _Server:
    """A database server process of its own, on a free loopback port."""

    kind = ""

    def __init__(self, base_dir: str | os.PathLike[str], die_with_parent: bool = False) -> None:
        self.base_dir = Path(base_dir)
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._preexec: Callable[[], None] | None = (
            _die_with_parent() if die_with_parent and sys.platform == "linux" else None)

    @property
    def log_file(self) -> Path:
        return self.base_dir / "server.log"

    def _spawn(self, argv: list[str], **kwargs: Any) -> None:
        with open(self.log_file, "ab") as out:
            # Its own session: Ctrl-C in the terminal running pytest does not reach it.
            self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                          start_new_session=True, preexec_fn=self._preexec, **kwargs)

    def _wait_ready(self, ping: Callable[[], None], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                raise DatabaseError(f"{self.kind} exited with code {self._proc.returncode}\n"
                                    f"--- {self.log_file} (tail) ---\n{_tail(self.log_file)}")
            try:
                ping()
                return
            except Exception as exc:  # noqa: BLE001 - any driver error means "not yet"
                if time.monotonic() > deadline:
                    raise DatabaseError(f"{self.kind} did not answer within {timeout:.0f}s: {exc}\n"
                                        f"--- {self.log_file} (tail) ---\n{_tail(self.log_file)}") from exc
            time.sleep(0.05)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def stop(self, timeout: float = 30.0) -> None:
        """A clean shutdown (SIGTERM), SIGKILL if it takes longer than ``timeout``."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """SIGKILL: for a test's end, where the data is thrown away."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def __enter__(self) -> "_Server":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 60.0) -> "_Server":
        raise NotImplementedError

    def new_database(self, prefix: str = "t") -> Database:
        raise NotImplementedError


class MariaDBServer(_Server):
    """A private MariaDB server (``mariadbd``), a small InnoDB buffer pool, no fsync per commit."""

    kind = "mariadb"

    @property
    def socket(self) -> Path:
        return self.base_dir / "mysqld.sock"

    def start(self, timeout: float = 60.0) -> "MariaDBServer":
        self.base_dir.mkdir(parents=True, exist_ok=True)
        data = self.base_dir / "data"
        if not data.exists():
            user = ["--user=root"] if os.geteuid() == 0 else []
            out = subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={data}", *user,
                                  "--auth-root-authentication-method=socket", "--skip-test-db"],
                                 capture_output=True, text=True)
            if out.returncode != 0:
                raise DatabaseError(f"mariadb-install-db failed: {out.stdout}{out.stderr}")
        self.port = self.port or free_ports(1)[0]  # a restart keeps its port
        mariadbd = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
        argv = [mariadbd, "--no-defaults", f"--datadir={data}", f"--socket={self.socket}",
                f"--port={self.port}", f"--bind-address={_HOST}", f"--pid-file={self.base_dir / 'mysqld.pid'}",
                f"--log-error={self.log_file}", "--skip-name-resolve", "--skip-log-bin",
                # Tests and benchmarks: durability across a machine crash is not wanted here.
                "--innodb-buffer-pool-size=256M", "--innodb-flush-log-at-trx-commit=0",
                "--innodb-doublewrite=0", "--character-set-server=utf8mb4"]
        if os.geteuid() == 0:
            argv.append("--user=root")
        self._spawn(argv)
        self._wait_ready(lambda: self._root().close(), timeout)
        log.info("started MariaDB on %s:%d (pid %s)", _HOST, self.port, self.pid)
        return self

    def _root(self) -> Any:
        import MySQLdb

        return MySQLdb.connect(unix_socket=str(self.socket), user="root", charset="utf8mb4")

    def root_execute(self, *statements: str) -> None:
        """Runs statements as the server's root user (over its unix socket)."""
        conn = self._root()
        try:
            cur = conn.cursor()
            for sql in statements:
                cur.execute(sql)
        finally:
            conn.close()

    def new_database(self, prefix: str = "t") -> Database:
        """A new database and a user (password ``PASSWORD``) with every right on it."""
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        self.root_execute(f"CREATE DATABASE `{name}`",
                          f"CREATE USER '{name}'@'%' IDENTIFIED BY '{PASSWORD}'",
                          f"GRANT ALL ON `{name}`.* TO '{name}'@'%'")
        return Database("mariadb", _HOST, self.port, name, name, PASSWORD)


class PostgresServer(_Server):
    """A private PostgreSQL server (``postgres``), fsync off; run as ``postgres`` under root."""

    kind = "postgresql"

    def __init__(self, base_dir: str | os.PathLike[str], die_with_parent: bool = False) -> None:
        super().__init__(base_dir, die_with_parent)
        self._owned_dir: Path | None = None
        self._as: dict[str, Any] = {}

    def start(self, timeout: float = 60.0) -> "PostgresServer":
        bindir = _postgres_bin()
        if bindir is None:
            raise DatabaseError("PostgreSQL's server is not installed")
        if os.geteuid() == 0:
            # The server's files and the directories above them must be the postgres user's:
            # pytest's tmp dirs are root's alone (mode 700), so a dir of its own under /tmp.
            pw = pwd.getpwnam("postgres")
            self._owned_dir = Path(tempfile.mkdtemp(prefix="streamsql-pg-"))
            os.chown(self._owned_dir, pw.pw_uid, pw.pw_gid)
            self._as = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
            self.base_dir = self._owned_dir
        self.base_dir.mkdir(parents=True, exist_ok=True)
        data = self.base_dir / "data"
        if not data.exists():
            out = subprocess.run([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-E", "UTF8",
                                  "--locale=C", "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync"],
                                 capture_output=True, text=True, cwd=self.base_dir, **self._as)
            if out.returncode != 0:
                raise DatabaseError(f"initdb failed: {out.stdout}{out.stderr}")
        self.port = self.port or free_ports(1)[0]
        argv = [str(bindir / "postgres"), "-D", str(data), "-k", str(self.base_dir), "-p", str(self.port),
                "-c", f"listen_addresses={_HOST}", "-c", "fsync=off", "-c", "synchronous_commit=off",
                "-c", "full_page_writes=off", "-c", "TimeZone=UTC"]
        self._spawn(argv, cwd=self.base_dir, **self._as)
        self._wait_ready(lambda: self._superuser().close(), timeout)
        log.info("started PostgreSQL on %s:%d (pid %s)", _HOST, self.port, self.pid)
        return self

    def _superuser(self, dbname: str = "postgres") -> Any:
        import psycopg

        return psycopg.connect(host=str(self.base_dir), port=self.port, user="postgres", dbname=dbname,
                               autocommit=True)

    def superuser_execute(self, *statements: str, dbname: str = "postgres") -> None:
        """Runs statements as the ``postgres`` superuser (over the unix socket)."""
        with self._superuser(dbname) as conn:
            for sql in statements:
                conn.execute(sql)  # type: ignore[arg-type]

    def new_database(self, prefix: str = "t") -> Database:
        """A new database owned by a new user (password ``PASSWORD``)."""
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        self.superuser_execute(f"CREATE ROLE {name} LOGIN PASSWORD '{PASSWORD}'",
                               f"CREATE DATABASE {name} OWNER {name}")
        return Database("postgresql", _HOST, self.port, name, name, PASSWORD)

    def _remove(self) -> None:
        if self._owned_dir is not None:
            shutil.rmtree(self._owned_dir, ignore_errors=True)
            self._owned_dir = None

    def stop(self, timeout: float = 30.0) -> None:
        # SIGTERM is postgres' "smart" shutdown (waits for clients); SIGINT is "fast".
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        super().stop(timeout)
        self._remove()

    def kill(self) -> None:
        super().kill()
        self._remove()

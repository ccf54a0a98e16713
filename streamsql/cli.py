"""The ``streamsql`` command.

``streamsql``                   the interactive shell on the embedded engine (data dir ``./data``,
                                ``$STREAMSQL_DATA_DIR`` or ``--data-dir``); ``-f FILE`` or piped
                                stdin run statements non-interactively, ``-e SQL`` runs one string.
``streamsql test-runner ...``   ksqlDB's ``ksql-test-runner`` (``-s -i -o``) and QTT files
                                (``--qtt CASES --results RESULTS``), REST query-validation files
                                through the HTTP server (``--rest CASES --results RESULTS``);
                                see ``streamsql.testing.runner_cli``.
``streamsql --server URL``      the same shell, on a running server (its REST API); ``--user``/
                                ``--password`` for basic auth, ``--ca-file`` to trust a TLS server.
``streamsql URL``               the same as ``--server URL`` (as ksqlDB's ``ksql http://host:8088``).
``--define NAME=VALUE``         a session variable (as ``DEFINE``), in either shell; repeatable.
``streamsql server ...``        run a node: the engine and its ksqlDB-compatible REST API
                                (see ``streamsql.server.main``).
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from streamsql import __version__

log = logging.getLogger(__name__)

DEFAULT_DATA_DIR = "./data"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamsql",
        description="ksqlDB-compatible stream processing SQL. With no command: the interactive shell "
                    "on the embedded engine (no Kafka needed); `streamsql http://host:8088` is the same "
                    "as --server http://host:8088.")
    parser.add_argument("--version", action="version", version=f"streamsql {__version__}")
    parser.add_argument("--data-dir", help=f"where the embedded engine keeps its topics and command "
                        f"log (default: $STREAMSQL_DATA_DIR or {DEFAULT_DATA_DIR})")
    parser.add_argument("-f", "--file", help="run the statements of this file and exit")
    parser.add_argument("-e", "--execute", help="run these statements and exit")
    parser.add_argument("--server", metavar="URL", help="use a running streamsql (or ksqlDB) server at URL, "
                        "e.g. http://localhost:8088, instead of the embedded engine")
    parser.add_argument("--define", action="append", default=[], metavar="NAME=VALUE",
                        help="define a variable for the session (as DEFINE name='value'); may be repeated")
    parser.add_argument("-u", "--user", help="user name for the server's basic authentication")
    parser.add_argument("-p", "--password", help="password for --user (asked for when missing and the "
                        "shell is interactive; else $STREAMSQL_PASSWORD)")
    parser.add_argument("--ca-file", help="PEM file of the certificate authority that signed an https server's certificate")
    sub = parser.add_subparsers(dest="command", metavar="{test-runner,server}")

    runner = sub.add_parser("test-runner", help="run SQL against inputs and check the outputs "
                            "(ksql-test-runner compatible), or run QTT case files")
    runner.add_argument("-s", "--sql-file", help="the statements (ksql-test-runner mode)")
    runner.add_argument("-i", "--input-file", help="input records: {\"inputs\": [...]}")
    runner.add_argument("-o", "--output-file", help="expected output records: {\"outputs\": [...]}")
    runner.add_argument("-e", "--extension-dir", help="accepted for compatibility; ignored")
    runner.add_argument("--qtt", metavar="CASES.json", help="run every case of a QTT file")
    runner.add_argument("--rest", metavar="CASES.json",
                        help="run every case of a REST query-validation file through the HTTP server")
    runner.add_argument("--sql-tests", metavar="FILE.sql|DIR",
                        help="run ksqlDB's SQL test files (--@test: blocks with ASSERT VALUES, ...)")
    runner.add_argument("--results", metavar="RESULTS.json", help="where --qtt/--rest write what happened")
    runner.add_argument("--processes", type=int, default=1, metavar="N",
                        help="--rest: run N cases at a time, each on a server of its own (default 1)")

    server = sub.add_parser("server", help="run a node: the engine and its ksqlDB-compatible REST API",
                            description="Run a streamsql node: the engine (embedded log in --data-dir, or "
                                        "Kafka with --bootstrap-servers) and the ksqlDB-compatible REST API.")
    from streamsql.server.main import add_arguments

    add_arguments(server)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``streamsql`` command; returns the exit code."""
    args = _parser().parse_args(_server_url_as_option(sys.argv[1:] if argv is None else argv))
    if args.command == "test-runner":
        from streamsql.testing.runner_cli import run as run_test_runner

        return run_test_runner(args)
    if args.command == "server":
        from streamsql.server.main import run as run_server

        return run_server(args)
    if args.server:
        return _run_remote(args)
    return _run_shell(args)


# The options whose value is the next argument (a URL there is not the positional server).
_VALUE_OPTIONS = ("--server", "-e", "--execute", "-f", "--file", "--data-dir", "-u", "--user", "-p",
                  "--password", "--ca-file", "--define")


def _server_url_as_option(argv: list[str]) -> list[str]:
    """``streamsql http://host:8088`` as ``--server http://host:8088`` (ksqlDB's CLI takes the
    server as its positional argument; argparse cannot mix one with the subcommands)."""
    for i, arg in enumerate(argv):
        if arg in ("test-runner", "server"):
            break
        if arg.lower().startswith(("http://", "https://")) and (i == 0 or argv[i - 1] not in _VALUE_OPTIONS):
            return [*argv[:i], "--server", arg, *argv[i + 1:]]
    return argv


def _definitions(args: argparse.Namespace) -> str:
    """``--define name=value`` options as DEFINE statements, run before anything else."""
    out = []
    for item in args.define:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise SystemExit(f"streamsql: --define wants NAME=VALUE, not {item!r}")
        out.append(f"DEFINE {name.strip()}='{value.replace(chr(39), chr(39) * 2)}';")
    return "\n".join(out)


def _setup_logging(data_dir: Path, interactive: bool) -> None:
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    handler = logging.FileHandler(data_dir / "streamsql.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    if not interactive:
        # Scripts have no screen to keep tidy: warnings go to stderr as well.
        err = logging.StreamHandler(sys.stderr)
        err.setLevel(logging.WARNING)
        root.addHandler(err)


class _NoScript(Exception):
    """The script file could not be read (the message was printed)."""


def _script(args: argparse.Namespace) -> str | None:
    """The statements to run non-interactively (-e, -f, piped stdin), or None."""
    if args.execute is not None:
        return args.execute
    if args.file is not None:
        try:
            return Path(args.file).read_text(encoding="utf-8")
        except OSError as exc:
            print(f"Failed to read file {args.file}: {exc.strerror or exc}", file=sys.stderr)
            raise _NoScript() from None
    if not sys.stdin.isatty():
        return sys.stdin.read()
    return None


def _run_shell(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir or os.environ.get("STREAMSQL_DATA_DIR") or DEFAULT_DATA_DIR)
    try:
        script = _script(args)
    except _NoScript:
        return 1
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"Cannot create the data directory {data_dir}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    _setup_logging(data_dir, interactive=script is None)
    try:
        return asyncio.run(_shell_main(data_dir, script, _definitions(args)))
    except (KeyboardInterrupt, asyncio.CancelledError):  # Ctrl-C stopped a script
        return 130


async def _shell_main(data_dir: Path, script: str | None, defines: str = "") -> int:
    from streamsql.engine import Engine
    from streamsql.runtime.log.embedded import EmbeddedLog
    from streamsql.shell import Shell

    try:
        log_ = EmbeddedLog(data_dir)
    except RuntimeError as exc:
        print(f"Cannot open the data directory {data_dir}: {exc}", file=sys.stderr)
        return 1
    engine = Engine(log_)
    try:
        await engine.start()
        shell = Shell(engine, data_dir)
        if defines and not await shell.run_script(defines):
            return 1
        if script is not None:
            return 0 if await shell.run_script(script) else 1
        await shell.run_interactive()
        return 0
    finally:
        await engine.close()
        await log_.close()


def _run_remote(args: argparse.Namespace) -> int:
    try:
        script = _script(args)
    except _NoScript:
        return 1
    password = args.password
    if args.user and password is None:
        password = os.environ.get("STREAMSQL_PASSWORD")
        if password is None and script is None and sys.stdin.isatty():
            import getpass

            password = getpass.getpass(f"Password for {args.user}: ")
    root = logging.getLogger()
    if script is None:
        root.addHandler(logging.NullHandler())  # nothing may scribble over the prompt
    else:
        err = logging.StreamHandler(sys.stderr)
        err.setLevel(logging.WARNING)
        root.addHandler(err)
    try:
        return asyncio.run(_remote_main(args.server, args.user, password, args.ca_file, script,
                                        _definitions(args)))
    except (KeyboardInterrupt, asyncio.CancelledError):
        return 130


async def _remote_main(url: str, user: str | None, password: str | None, ca_file: str | None,
                       script: str | None, defines: str = "") -> int:
    from streamsql.server.client import RemoteBackend, RemoteError, RestClient
    from streamsql.shell import Shell

    client = RestClient(url, user=user, password=password, ca_file=ca_file)
    try:
        try:
            info = await client.info()
        except RemoteError as exc:
            # One message: an unreachable server's error already names the URL.
            message = str(exc)
            if url.rstrip("/") not in message:
                message = f"Cannot connect to the server at {url}: {message}"
            print(message, file=sys.stderr)
            return 1
        backend = RemoteBackend(client)
        version = info.get("streamsqlVersion") or info.get("version") or "?"
        shell = Shell(backend, None, mode_label="server", location=f"{url}, server version {version}",
                      history_path=Path.home() / ".streamsql_history")
        if defines and not await shell.run_script(defines):
            return 1
        if script is not None:
            return 0 if await shell.run_script(script) else 1
        await backend.refresh_completions()
        await shell.run_interactive()
        return 0
    finally:
        await client.aclose()

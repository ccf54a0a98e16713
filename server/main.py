"""Run one streamsql node: the engine on its Log, and the REST API on hypercorn.

``streamsql server`` parses its options with ``add_arguments`` and calls ``run``. The engine,
its persistent queries and the HTTP server share one asyncio loop. The Log is
``open_log(bootstrap_servers, data_dir, config)``: the embedded log in ``--data-dir`` unless
``--bootstrap-servers`` names a Kafka cluster.

Once listening, the node prints ``streamsql server listening on URL`` (one line per listener,
with the actual port when 0 was asked for) on stdout; SIGINT or SIGTERM stop it: push queries
are closed, then the engine and the Log.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from streamsql.server.auth import BasicAuth

log = logging.getLogger(__name__)

DEFAULT_LISTENER = "http://0.0.0.0:8088"
# The line printed per Connect listener once bound, before the "listening on" lines (and
# without those words: readers of the first "listening on" line get a ksqlDB listener).
CONNECT_READY = "streamsql server: Kafka Connect REST API at "


@dataclass(frozen=True)
class NodeOptions:
    """Everything ``streamsql server`` is told."""

    listeners: tuple[str, ...] = (DEFAULT_LISTENER,)
    data_dir: Path = Path("./data")
    state_dir: Path | None = None
    bootstrap_servers: str | None = None
    service_id: str = "default_"
    config: dict[str, Any] = field(default_factory=dict)
    auth: BasicAuth | None = None
    certfile: str | None = None
    keyfile: str | None = None
    max_request_bytes: int = 10 * 1024 * 1024
    advertised_listener: str | None = None
    ssl_ca_file: str | None = None
    # Listeners serving Kafka Connect's REST API alone (``GET /`` included), as a Connect worker.
    connect_listeners: tuple[str, ...] = ()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``streamsql server``."""
    parser.add_argument("--listeners", default=None,
                        help=f"comma-separated URLs to listen on, http:// or https:// (ksqlDB's "
                             f"'listeners'; default {DEFAULT_LISTENER}; port 0 picks a free port)")
    parser.add_argument("--connect-listeners", default=None, metavar="URLS",
                        help="comma-separated URLs serving Kafka Connect's REST API on listeners of its own, "
                             "e.g. http://0.0.0.0:8083 (Connect's port); /connectors is on --listeners too")
    parser.add_argument("--data-dir", dest="node_data_dir", help="the embedded log's directory (default: $STREAMSQL_DATA_DIR or ./data)")
    parser.add_argument("--state-dir", help="where queries keep their RocksDB state (default: DATA_DIR/state)")
    parser.add_argument("--bootstrap-servers", help="run on Apache Kafka at HOST:PORT,... instead of the embedded log")
    parser.add_argument("--service-id", default="default_", help="ksql.service.id (default: default_)")
    parser.add_argument("--config", action="append", default=[], metavar="KEY=VALUE",
                        help="an engine property (repeatable), e.g. --config auto.offset.reset=latest")
    parser.add_argument("--basic-auth", action="append", default=[], metavar="USER:PASSWORD",
                        help="require HTTP basic authentication with these credentials (repeatable)")
    parser.add_argument("--basic-auth-file", metavar="FILE",
                        help="require HTTP basic authentication; users in FILE as 'user: password[,roles]'")
    parser.add_argument("--ssl-certfile", help="PEM certificate (chain) for https:// listeners")
    parser.add_argument("--ssl-keyfile", help="PEM private key for https:// listeners")
    parser.add_argument("--advertised-listener", help="the URL other nodes and /clusterStatus use for this node")
    parser.add_argument("--ssl-ca-file", help="PEM file of the CA that signed the other nodes' certificates "
                                              "(for pull queries forwarded between nodes over https)")
    parser.add_argument("--max-request-bytes", type=int, default=10 * 1024 * 1024,
                        help="largest request body (and inserts-stream row) accepted (default 10 MiB)")
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")


def options_from_args(args: argparse.Namespace) -> NodeOptions:
    """NodeOptions from parsed arguments; ValueError with a message for bad ones."""
    listeners = tuple(u.strip() for u in (args.listeners or DEFAULT_LISTENER).split(",") if u.strip())
    connect_listeners = tuple(u.strip() for u in (getattr(args, "connect_listeners", None) or "").split(",")
                              if u.strip())
    for url in listeners + connect_listeners:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.port is None:
            raise ValueError(f"invalid listener {url!r}: expected http://HOST:PORT or https://HOST:PORT")
    secure = any(u.startswith("https://") for u in listeners + connect_listeners)
    if secure and not (args.ssl_certfile and args.ssl_keyfile):
        raise ValueError("https:// listeners need --ssl-certfile and --ssl-keyfile")
    config: dict[str, Any] = {}
    for item in args.config:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--config expects KEY=VALUE, got {item!r}")
        config[key.strip()] = value.strip()
    auth = None
    if args.basic_auth_file:
        auth = BasicAuth.from_file(args.basic_auth_file)
    if args.basic_auth:
        extra = BasicAuth.from_pairs(args.basic_auth)
        auth = BasicAuth((auth.users if auth else ()) + extra.users)
    data_dir = Path(getattr(args, "node_data_dir", None) or getattr(args, "data_dir", None) or os.environ.get("STREAMSQL_DATA_DIR") or "./data")
    return NodeOptions(listeners=listeners, data_dir=data_dir,
                       state_dir=Path(args.state_dir) if args.state_dir else None,
                       bootstrap_servers=args.bootstrap_servers, service_id=args.service_id,
                       config=config, auth=auth, certfile=args.ssl_certfile, keyfile=args.ssl_keyfile,
                       max_request_bytes=args.max_request_bytes,
                       advertised_listener=args.advertised_listener, ssl_ca_file=args.ssl_ca_file,
                       connect_listeners=connect_listeners)


class StartupError(Exception):
    """The node cannot start, for a reason its message tells in one line (no traceback)."""


def run(args: argparse.Namespace) -> int:
    """``streamsql server``: returns the exit code."""
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        options = options_from_args(args)
    except (ValueError, OSError) as exc:
        print(f"streamsql server: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(options))
    except StartupError as exc:
        print(f"streamsql server: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"streamsql server: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def _hypercorn_config(options: NodeOptions) -> Any:
    from hypercorn.config import Config

    config = Config()
    secure = [u for u in options.listeners if u.startswith("https://")]
    plain = [u for u in options.listeners if u.startswith("http://")]

    def bind(url: str) -> str:
        parts = urlsplit(url)
        host = parts.hostname or "0.0.0.0"
        return f"[{host}]:{parts.port}" if ":" in host else f"{host}:{parts.port}"

    if secure:
        config.certfile = options.certfile
        config.keyfile = options.keyfile
        config.bind = [bind(u) for u in secure]
        config.insecure_bind = [bind(u) for u in plain]
    else:
        config.bind = [bind(u) for u in plain]
    config.accesslog = None
    config.include_server_header = False
    config.errorlog = logging.getLogger("hypercorn.error")
    # Long-lived keep-alive connections (benchmarks, clients with pools) are welcome.
    config.keep_alive_max_requests = 10_000_000
    config.keep_alive_timeout = 75
    config.graceful_timeout = 3
    return config


def _urls(sockets: Any) -> list[str]:
    urls = []
    for scheme, socks in (("https", sockets.secure_sockets), ("http", sockets.insecure_sockets)):
        for sock in socks:
            host, port = sock.getsockname()[:2]
            urls.append(f"{scheme}://{'[' + host + ']' if ':' in host else host}:{port}")
    return urls


async def serve(options: NodeOptions, on_ready: Callable[[list[str], Any], None] | None = None,
                stop: asyncio.Event | None = None) -> None:
    """Run a node until ``stop`` is set (or SIGINT/SIGTERM when ``stop`` is None).
    ``on_ready(urls, app)`` is called once the listeners are bound (``app`` is the KsqlApp)."""
    from streamsql.engine import Engine
    from streamsql.runtime.log import open_log
    from streamsql.server.app import KsqlApp, ServerSettings

    hconfig = _hypercorn_config(options)
    # Bound first: a port in use fails before the engine starts, and port 0 becomes the real
    # port the node is known by.
    sockets = hconfig.create_sockets()
    urls = _urls(sockets)
    try:
        sockets, connect_urls, connect_addresses = _with_connect_sockets(options, hconfig, sockets)
    except BaseException:
        for sock in sockets.secure_sockets + sockets.insecure_sockets:
            sock.close()
        raise
    all_sockets = sockets.secure_sockets + sockets.insecure_sockets
    advertised = options.advertised_listener or _advertised(urls[0])
    # The node's name in its consumer groups is its URL, as Kafka Streams' application.server:
    # whoever sees a group's members knows where to reach each of them.
    config = {"ksql.service.id": options.service_id, "streamsql.node.name": advertised, **options.config}
    app = None
    try:
        options.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            log_ = open_log(options.bootstrap_servers, options.data_dir, config)
        except RuntimeError as exc:  # the embedded log's lock: another node or shell has it
            raise StartupError(f"Cannot open the data directory {options.data_dir}: {exc}") from None
        state_dir = options.state_dir or options.data_dir / "state"
        engine = Engine(log_, config, state_dir=state_dir)
        directory = router = None
        try:
            await engine.start()
            if options.bootstrap_servers:
                from streamsql.server.cluster import NodeDirectory, PullRouter

                directory = NodeDirectory(log_, options.service_id, engine.node_name, advertised,
                                          int(config.get("ksql.internal.topic.replicas", 1)))
                await directory.start()
                router = PullRouter(engine, directory, options.ssl_ca_file)
            app = KsqlApp(engine, ServerSettings(
                max_request_bytes=options.max_request_bytes, auth=options.auth, advertised_url=advertised,
                cluster_id="streamsql-kafka" if options.bootstrap_servers else "streamsql-embedded"), router)
            for sock in all_sockets:
                # Listening before the server loop starts: clients told the URL queue, not fail.
                sock.listen(hconfig.backlog)
            stop = stop or _signal_event()
            for url in connect_urls:  # (first: a reader of the lines below may stop at the first)
                sys.stdout.write(f"{CONNECT_READY}{url}\n")
            for url in urls:
                sys.stdout.write(f"streamsql server listening on {url}\n")
            sys.stdout.flush()
            log.info("streamsql server listening on %s (data in %s)", ", ".join(urls), options.data_dir)
            if on_ready is not None:
                on_ready(urls, app)

            app.connect_api.ca_file = options.ssl_ca_file  # (requests forwarded to other nodes)
            served_app: Any = app
            if connect_addresses:
                from streamsql.server.connect_api import ByListener, ConnectApp

                served_app = ByListener(app, ConnectApp(app.connect_api, options.auth), connect_addresses)
            await _serve_http(served_app, hconfig, sockets, stop, app.push_queries.close_all)
        finally:
            if app is not None:
                app.push_queries.close_all()
            if router is not None:
                await router.close()
            if directory is not None:
                await directory.close()
            await engine.close()
            await log_.close()
    finally:
        for sock in all_sockets:
            sock.close()


async def _serve_http(app: Any, hconfig: Any, sockets: Any, stop: asyncio.Event,
                      close_streams: Callable[[], None]) -> None:
    """Serve ``app`` with hypercorn on a thread and event loop of its own (see ``bridge``)
    until ``stop`` is set; returns once the HTTP server has shut down. ``close_streams``
    ends the open push queries (they would hold the graceful shutdown)."""
    from hypercorn.asyncio.run import worker_serve
    from hypercorn.utils import wrap_app

    from streamsql.server.bridge import LoopBridge
    from streamsql.server.http import fix_hypercorn_h11_reason_phrase, fix_hypercorn_h2_flow_control

    fix_hypercorn_h2_flow_control()  # (else a stalled HTTP/2 client is buffered without bound)
    fix_hypercorn_h11_reason_phrase()
    # The HTTP thread waits for the GIL at most this long while queries compute (Python's
    # default is 5 ms; each request needs it a few times).
    sys.setswitchinterval(0.001)
    engine_loop = asyncio.get_running_loop()
    bridge = LoopBridge(app, engine_loop, frozenset({"/info"}), close_streams)
    http_loop = asyncio.new_event_loop()
    http_stop = asyncio.Event()

    async def shutdown_trigger() -> None:
        await http_stop.wait()

    served: asyncio.Future[None] = engine_loop.create_future()

    def done(error: BaseException | None) -> None:
        if served.done():
            return
        if error is None:
            served.set_result(None)
        else:
            served.set_exception(error)

    def http_main() -> None:
        asyncio.set_event_loop(http_loop)
        error: BaseException | None = None
        try:
            http_loop.run_until_complete(worker_serve(
                wrap_app(bridge, hconfig.wsgi_max_body_size, "asgi"), hconfig, sockets=sockets,
                shutdown_trigger=shutdown_trigger))
        except BaseException as exc:  # noqa: BLE001 - handed to the engine's loop
            error = exc
        finally:
            http_loop.close()
            engine_loop.call_soon_threadsafe(done, error)

    threading.Thread(target=http_main, name="streamsql-http", daemon=True).start()
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([served, stopping], return_when=asyncio.FIRST_COMPLETED)
        if not served.done():
            close_streams()  # open streams would hold the graceful shutdown
            http_loop.call_soon_threadsafe(http_stop.set)
        await served
    finally:
        stopping.cancel()
        if not served.done():
            # Cancelled: the HTTP thread stops too (without waiting for it; its loop may
            # have closed meanwhile).
            with contextlib.suppress(RuntimeError):
                http_loop.call_soon_threadsafe(http_stop.set)


def _with_connect_sockets(options: NodeOptions, hconfig: Any,
                          sockets: Any) -> tuple[Any, list[str], set[tuple[str, int]]]:
    """The sockets with the Connect listeners' added (bound now, as the others), their URLs,
    and their addresses (to tell their requests apart, see ``ByListener``)."""
    if not options.connect_listeners:
        return sockets, [], set()
    from dataclasses import replace

    from hypercorn.config import Sockets

    extra = _hypercorn_config(replace(options, listeners=options.connect_listeners)).create_sockets()
    if extra.secure_sockets:  # TLS for them even when the ksqlDB listeners are plain http
        hconfig.certfile, hconfig.keyfile = options.certfile, options.keyfile
    addresses = {tuple(s.getsockname()[:2]) for s in extra.secure_sockets + extra.insecure_sockets}
    merged = Sockets(sockets.secure_sockets + extra.secure_sockets, sockets.insecure_sockets + extra.insecure_sockets,
                     sockets.quic_sockets + extra.quic_sockets)
    return merged, _urls(extra), addresses  # type: ignore[return-value]


def _advertised(url: str) -> str:
    parts = urlsplit(url)
    if parts.hostname in ("0.0.0.0", "::"):
        import socket

        return f"{parts.scheme}://{socket.gethostname()}:{parts.port}"
    return url


def _signal_event() -> asyncio.Event:
    """Set on SIGINT or SIGTERM. (SIGUSR1 logs what every task of the node is waiting for:
    for a node that seems stuck.)"""
    event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig, handler in ((signal.SIGINT, event.set), (signal.SIGTERM, event.set),
                         (signal.SIGUSR1, _log_tasks)):
        try:
            loop.add_signal_handler(sig, handler)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
            pass
    return event


def _log_tasks() -> None:
    for task in asyncio.all_tasks():
        # The chain of awaits, outermost first (a suspended task's own stack is one frame).
        where = []
        coro: Any = task.get_coro()
        while coro is not None:
            frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
            if frame is not None:
                where.append(f"{frame.f_code.co_name} "
                             f"({frame.f_code.co_filename.rsplit('/', 1)[-1]}:{frame.f_lineno})")
            coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
        log.warning("task %s: %s", task.get_name(), " -> ".join(where) or "(done)")

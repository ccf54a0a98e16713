"""A small HTTP server for a schema registry: Confluent's REST API over ``rest.handle``.

``SchemaRegistryServer(registry, loop=...)`` serves any ``SchemaRegistryClient`` (usually an
engine's built-in ``SchemaStore``) on ``http://127.0.0.1:<free port>`` so that Confluent's
own clients and serializers (and ``HttpSchemaRegistryClient``) can use it. It is stdlib
``ThreadingHTTPServer`` in a background thread; the real ``streamsql server`` mounts the same
``rest.handle`` dispatcher under its own web server.

Threading: the registry is not thread safe and the built-in store persists its writes with
``await flush()`` on the engine's Log, so every request is run on one asyncio event loop:
the engine's, when ``loop`` is given (then the registry is only ever touched from that
loop's thread, and a write is in the ``_schemas`` topic before it is acknowledged), else a
private loop the server runs in a thread of its own. A caller on the engine's loop must
therefore reach the server from another thread (``asyncio.to_thread``), never block the
loop on an HTTP call to it.

    with SchemaRegistryServer(engine.schema_registry, loop=asyncio.get_running_loop()) as srv:
        ... srv.url ...
"""
from __future__ import annotations

import asyncio
import json
import logging
import threading
from concurrent.futures import TimeoutError as FutureTimeout
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from streamsql.schemaregistry import rest
from streamsql.schemaregistry.client import SchemaRegistryClient

log = logging.getLogger(__name__)

_WRITES = frozenset({"POST", "PUT", "DELETE"})


class SchemaRegistryServer:
    """See the module docstring. ``start()`` binds and serves (returns self), ``stop()``
    stops; both are idempotent, and the server is a context manager."""

    def __init__(self, registry: SchemaRegistryClient, *, host: str = "127.0.0.1", port: int = 0,
                 loop: asyncio.AbstractEventLoop | None = None, request_timeout: float = 30.0) -> None:
        self.registry = registry
        self._host = host
        self._port = port
        self._loop = loop
        self._own_loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._timeout = request_timeout

    # ------------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        """The base URL clients are given (``http://127.0.0.1:<port>``)."""
        if self._httpd is None:
            raise RuntimeError("schema registry server is not started")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "SchemaRegistryServer":
        if self._httpd is not None:
            return self
        if self._loop is None:
            self._own_loop = asyncio.new_event_loop()
            self._loop_thread = threading.Thread(target=self._own_loop.run_forever,
                                                 name="schema-registry-loop", daemon=True)
            self._loop_thread.start()
        handler = type("_BoundHandler", (_Handler,), {"server_ref": self})
        self._httpd = ThreadingHTTPServer((self._host, self._port), handler)
        # Short poll so stop() returns quickly; handler threads are daemons (not joined).
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="schema-registry-http", daemon=True)
        self._thread.start()
        log.info("schema registry serving on %s", self.url)
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        own, self._own_loop = self._own_loop, None
        if own is not None:
            own.call_soon_threadsafe(own.stop)
            if self._loop_thread is not None:
                self._loop_thread.join()
                self._loop_thread = None
            own.close()

    def __enter__(self) -> "SchemaRegistryServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------------- requests
    def answer(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        """Answer one request on the registry's loop (called from an HTTP handler thread)."""
        loop = self._loop or self._own_loop
        if loop is None or loop.is_closed():
            return 503, {"error_code": 50003, "message": "Schema registry is not running"}
        future = asyncio.run_coroutine_threadsafe(self._answer(method, path, query, body), loop)
        try:
            return future.result(self._timeout)
        except FutureTimeout:
            future.cancel()
            return 504, {"error_code": 50002, "message": "Schema registry operation timed out"}

    async def _answer(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        try:
            status, out = rest.handle(self.registry, method, path, query, body)
            if method in _WRITES and status < 300:
                # Acknowledge a write only once it is in the registry's topic.
                await self.registry.flush()
            return status, out
        except Exception as exc:  # noqa: BLE001 - a request must get an answer, not a dropped socket
            log.exception("schema registry request %s %s failed", method, path)
            return 500, {"error_code": 50001, "message": f"Error in the backend data store: {exc}"}


class _Handler(BaseHTTPRequestHandler):
    """One HTTP request -> ``SchemaRegistryServer.answer`` -> a JSON response."""

    server_ref: SchemaRegistryServer
    server_version = "streamsql-schema-registry"

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw.strip() else None
        except ValueError as exc:
            status, out = 400, {"error_code": 400, "message": f"Unexpected character: {exc}"}
        else:
            status, out = self.server_ref.answer(self.command, parts.path, dict(parse_qsl(parts.query)), body)
        data = json.dumps(out).encode()
        self.send_response(status)
        self.send_header("Content-Type", rest.CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's signature
        log.debug("%s - %s", self.address_string(), format % args)

"""Minimal ASGI plumbing: one ``Exchange`` per request (headers, body with a size limit,
JSON responses, streamed bodies) so the endpoints read like the protocol they implement.

Streaming responses rely on the ASGI server's flow control: ``chunk`` returns only once the
server has taken the bytes, and hypercorn blocks there while the socket (HTTP/1.1) or the
stream's flow-control window (HTTP/2) is full, so a slow reader stops the producer instead of
growing a buffer (over HTTP/2 only with ``fix_hypercorn_h2_flow_control``, which ``serve``
applies).

But hypercorn's send does not suspend while the socket takes the bytes, nor once the
connection is lost (it drops them, and never raises): so ``chunk`` yields to the event loop
every few milliseconds, for other requests to run and for the task watching for the client's
disconnect (``wait_disconnect``) to see it, and raises ``Disconnected`` once it has. Without
that, a push query whose client closed its socket streamed the rest of its topic into the
dead socket, holding the event loop all the while (issue 13).
"""
from __future__ import annotations

import asyncio
import logging
import time
from http import HTTPStatus
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit

import orjson

from streamsql.server.entities import dumps
from streamsql.server.errors import HttpError, bad_request, too_large

log = logging.getLogger(__name__)

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

JSON = b"application/json"
# An oversized body still being sent is read and dropped up to this much before answering 413.
_DRAIN_LIMIT = 64 * 1024 * 1024
# An error answered before the body was read (401, 404, 405) waits for the rest of the body,
# up to this much and this long (see Exchange.error).
_ERROR_DRAIN_LIMIT = 16 * 1024 * 1024
_ERROR_DRAIN_SECONDS = 5.0
# The longest a streamed response runs without letting the event loop run other tasks.
_YIELD_EVERY_SECONDS = 0.005


def _origin_path(target: str) -> str:
    """The path of a request target: an absolute-form target (``POST http://host:8088/query``,
    which HTTP/1.1 servers must accept, RFC 9112 3.2.2) comes as the whole URL."""
    if target.startswith("/"):
        return target
    if "://" in target:
        path = urlsplit(target).path
        return path if path.startswith("/") else "/" + path
    return target


class Disconnected(Exception):
    """The client went away (before its request body was read, or during a streamed
    response)."""


class Exchange:
    """One HTTP request and its response."""

    __slots__ = ("scope", "_receive", "_send", "method", "path", "headers", "started", "finished",
                 "_disconnected", "_yielded_at", "_body_taken", "status")

    def __init__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        self.scope = scope
        self._receive = receive
        self._send = send
        self.method: str = scope["method"]
        self.path: str = _origin_path(scope["path"])
        self.headers: dict[bytes, bytes] = {k.lower(): v for k, v in scope["headers"]}
        self.started = False
        self.status = 0  # the response's, once started (counted by GET /metrics)
        self.finished = False
        self._disconnected = False
        self._yielded_at = 0.0  # when chunk() last let the event loop run
        # The handler read the request body, or began to (then it answers as it sees fit).
        self._body_taken = False

    @property
    def http2(self) -> bool:
        return self.scope.get("http_version") == "2"

    # ----------------------------------------------------------------------- request
    async def body(self, limit: int) -> bytes:
        """The whole request body; 413 past ``limit`` bytes."""
        declared = self.headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise too_large(limit)
        self._body_taken = True
        parts: list[bytes] = []
        size = 0
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self._disconnected = True
                raise Disconnected()
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    await self._discard(message, _DRAIN_LIMIT)
                    raise too_large(limit)
                parts.append(chunk)
            if not message.get("more_body", False):
                return b"".join(parts)

    async def _discard(self, message: dict[str, Any], budget: int) -> None:
        """Read and drop the rest of an oversized body (up to ``budget`` bytes), so that a
        client still sending it gets to read the 413 instead of a reset connection."""
        while message.get("more_body", False) and budget > 0:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self._disconnected = True
                raise Disconnected()
            budget -= len(message.get("body", b""))

    async def json_body(self, limit: int) -> dict[str, Any]:
        """The body as a JSON object; ksqlDB's 400 for anything else."""
        raw = await self.body(limit)
        return parse_json_object(raw)

    async def receive(self) -> dict[str, Any]:
        """The next ASGI message (body chunks, then ``http.disconnect``)."""
        if self._disconnected:
            return {"type": "http.disconnect"}
        self._body_taken = True
        message = await self._receive()
        if message["type"] == "http.disconnect":
            self._disconnected = True
        return message

    async def wait_disconnect(self) -> None:
        """Return once the client has gone (the request body must have been read)."""
        while (await self.receive())["type"] != "http.disconnect":
            pass

    # ---------------------------------------------------------------------- response
    async def start(self, status: int, content_type: bytes,
                    headers: tuple[tuple[bytes, bytes], ...] = (), length: int | None = None) -> None:
        out = [(b"content-type", content_type), *headers]
        if length is not None:
            out.append((b"content-length", str(length).encode()))
        self.started = True
        self.status = status
        await self._send({"type": "http.response.start", "status": status, "headers": out})

    async def chunk(self, data: bytes) -> None:
        """Send part of a streamed body (waits while the client is not reading); raises
        ``Disconnected`` once the client is known to be gone (see the module docstring)."""
        if self._disconnected:
            raise Disconnected()
        await self._send({"type": "http.response.body", "body": data, "more_body": True})
        now = time.monotonic()
        if now - self._yielded_at >= _YIELD_EVERY_SECONDS:
            await asyncio.sleep(0)
            self._yielded_at = time.monotonic()

    async def end(self, data: bytes = b"") -> None:
        self.finished = True
        await self._send({"type": "http.response.body", "body": data, "more_body": False})

    async def respond(self, status: int, body: bytes, content_type: bytes = JSON,
                      headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        await self.start(status, content_type, headers, len(body))
        await self.end(body)

    async def json(self, status: int, obj: Any, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        await self.respond(status, dumps(obj), self.json_type(), headers)

    async def error(self, exc: HttpError) -> None:
        """Answer ``exc`` (before anything else was sent), once the request body is in."""
        await self._drain_body()
        await self.respond(exc.status, dumps(exc.body), self.json_type(), exc.headers)

    async def _drain_body(self) -> None:
        """Read and drop a request body the handler did not touch (bounded in bytes and time).

        An answer sent before the body was read (a 401 is decided on the headers) often did
        not reach the client: over HTTP/2 hypercorn drops the whole connection when body data
        arrives for a stream already answered (a KeyError in its event handler), and an
        HTTP/1.1 client still sending gets a reset. A request without a body costs one
        receive, which returns at once.
        """
        if self._body_taken or self._disconnected:
            return
        budget = _ERROR_DRAIN_LIMIT

        async def drain() -> None:
            nonlocal budget
            while budget > 0:
                message = await self.receive()
                if message["type"] == "http.disconnect" or not message.get("more_body", False):
                    return
                budget -= len(message.get("body", b""))

        try:
            await asyncio.wait_for(drain(), _ERROR_DRAIN_SECONDS)
        except asyncio.TimeoutError:
            pass  # a client this slow gets the answer now, whatever becomes of its body

    def json_type(self) -> bytes:
        """ksqlDB answers in the media type the client asked for (v1 or plain JSON)."""
        accept = self.headers.get(b"accept", b"")
        return b"application/vnd.ksql.v1+json" if b"application/vnd.ksql.v1+json" in accept else JSON


def parse_json_object(raw: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(raw) if raw.strip() else None
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"Invalid JSON in request: {exc}") from None
    if not isinstance(value, dict):
        raise bad_request("Invalid JSON in request: expected a JSON object")
    return value


async def first_done(*tasks: asyncio.Task[Any]) -> set[asyncio.Task[Any]]:
    """Wait for the first of ``tasks``; cancel and reap the others."""
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    for task in pending:
        try:
            await task
        except BaseException:  # noqa: BLE001 - a cancelled helper's outcome does not matter
            pass
    return done


def fix_hypercorn_h2_flow_control() -> None:
    """Make hypercorn's HTTP/2 responses wait for a client that does not read.

    hypercorn (0.17, 0.18) parks an HTTP/2 response's producer while the stream's send buffer
    is above a high-water mark, and resumes it whenever its sender pops less than the
    low-water mark *from* the buffer -- which includes popping nothing at all because the
    client's flow-control window is closed. So a client that stops reading made the server
    buffer everything the app sent: a push query stalled over HTTP/2 pulled its whole topic
    into memory (issue 13). Fixed here by resuming only once the buffer itself is below the
    low-water mark. Idempotent; leaves hypercorn alone if its buffer is not the one expected.
    """
    from hypercorn.protocol import h2 as hypercorn_h2

    buffer_class = getattr(hypercorn_h2, "StreamBuffer", None)
    low_water = getattr(hypercorn_h2, "BUFFER_LOW_WATER", None)
    if buffer_class is None or low_water is None or not hasattr(buffer_class, "pop"):
        log.warning("hypercorn's HTTP/2 StreamBuffer changed: its flow control is not patched")
        return
    if getattr(buffer_class, "_streamsql_flow_control", False):
        return

    async def pop(self: Any, max_length: int) -> bytes:
        length = min(len(self.buffer), max_length)
        data = bytes(self.buffer[:length])
        del self.buffer[:length]
        if len(self.buffer) < low_water:  # hypercorn tests len(data) here
            await self._paused.set()
        if not self.buffer:
            await self._is_empty.set()
        return data

    buffer_class.pop = pop
    buffer_class._streamsql_flow_control = True


def fix_hypercorn_h11_reason_phrase() -> None:
    """Give HTTP/1.1 status lines their reason phrase (``HTTP/1.1 200 OK``, as ksqlDB's
    server writes them): hypercorn sends ``HTTP/1.1 200 `` (ASGI has no reason field), which
    some clients and proxies log as malformed. Idempotent."""
    import h11
    from hypercorn.protocol import h11 as hypercorn_h11

    protocol = getattr(hypercorn_h11, "H11Protocol", None)
    send_event = getattr(protocol, "_send_h11_event", None)
    if send_event is None:
        log.warning("hypercorn's H11Protocol changed: status lines keep an empty reason phrase")
        return
    if getattr(protocol, "_streamsql_reason_phrase", False):
        return

    async def _send_h11_event(self: Any, event: Any) -> None:
        if isinstance(event, (h11.Response, h11.InformationalResponse)) and not event.reason:
            try:
                phrase = HTTPStatus(event.status_code).phrase.encode()
            except ValueError:
                phrase = b""
            if phrase:
                event = type(event)(status_code=event.status_code, headers=list(event.headers),
                                    http_version=event.http_version, reason=phrase)
        await send_event(self, event)

    protocol._send_h11_event = _send_h11_event
    protocol._streamsql_reason_phrase = True

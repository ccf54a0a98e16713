"""Minimal ASGI plumbing: one ``Exchange`` per request (headers, body with a size limit,
JSON responses, streamed bodies) so the endpoints read like the protocol they implement.

Streaming responses rely on the ASGI server's flow control: ``chunk`` returns only once the
server has taken the bytes, and hypercorn blocks there while the socket (HTTP/1.1) or the
stream's flow-control window (HTTP/2) is full, so a slow reader stops the producer instead of
growing a buffer.
"""
from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

import orjson

from streamsql.server.entities import dumps
from streamsql.server.errors import HttpError, bad_request, too_large

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

JSON = b"application/json"
# An oversized body still being sent is read and dropped up to this much before answering 413.
_DRAIN_LIMIT = 64 * 1024 * 1024


class Disconnected(Exception):
    """The client went away before the request body was read."""


class Exchange:
    """One HTTP request and its response."""

    __slots__ = ("scope", "_receive", "_send", "method", "path", "headers", "started", "finished",
                 "_disconnected")

    def __init__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        self.scope = scope
        self._receive = receive
        self._send = send
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.headers: dict[bytes, bytes] = {k.lower(): v for k, v in scope["headers"]}
        self.started = False
        self.finished = False
        self._disconnected = False

    @property
    def http2(self) -> bool:
        return self.scope.get("http_version") == "2"

    # ----------------------------------------------------------------------- request
    async def body(self, limit: int) -> bytes:
        """The whole request body; 413 past ``limit`` bytes."""
        declared = self.headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise too_large(limit)
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
        await self._send({"type": "http.response.start", "status": status, "headers": out})

    async def chunk(self, data: bytes) -> None:
        """Send part of a streamed body (waits while the client is not reading)."""
        await self._send({"type": "http.response.body", "body": data, "more_body": True})

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
        await self.respond(exc.status, dumps(exc.body), self.json_type(), exc.headers)

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

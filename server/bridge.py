"""The HTTP listener on a thread of its own, the engine on the main event loop.

Queries run on the engine's event loop, and a batch of records is processed without
yielding: sharing one loop with HTTP, a busy query (or a slow statement) delayed every
request, even ``GET /info``. So hypercorn serves on its own thread and loop, and
``LoopBridge`` (the ASGI app it serves) runs each request's handler on the engine's loop,
where everything the handlers touch lives, with the request's ``receive``/``send`` carried
back to the HTTP loop. Requests that need nothing of the engine's running state (``/info``)
are answered on the HTTP loop itself: they stay quick however busy the engine is.

Why a thread, not a process: one process keeps the engine and the handlers together (a
handler reads the catalog, starts push queries, writes the log) with no serialization in
between; the GIL hands the HTTP thread the interpreter at least every switch interval
(5 ms), which is what an answer within milliseconds needs. Measured in
``bench/bench_responsiveness.py``.

Each hop between the loops costs a wake-up of the other thread (a write to its self-pipe, a
GIL hand-over). Carried one message at a time, a pull query's request and answer took about
ten, and a key lookup cost 3x a trivial request. So a request body of a declared length up
to ``_PREREAD_BYTES`` is read on the HTTP loop before the handler starts, and the answer's
messages go back through an ``_Outbox``: queued in order, sent by one flusher on the HTTP
loop that is woken once per burst, with the handler held back only while ``_OUTBOX_BYTES``
wait for a client that is not reading, and the handler's end carried with its answer. A key
lookup crosses twice (``bench/bench_pull_http.py``).
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
from typing import Any, Awaitable, Callable, Coroutine, TypeVar

T = TypeVar("T")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

# Read ahead of the handler: a statement or query request fits; a larger body (an insert
# stream) is read by the handler as it goes, so memory stays bounded.
_PREREAD_BYTES = 64 * 1024
# Answer bytes queued for the HTTP loop before the handler waits for the client to read.
_OUTBOX_BYTES = 32 * 1024


async def run_on(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
    """Await ``coro`` on another thread's ``loop``; cancelling the caller cancels it there."""
    future = asyncio.run_coroutine_threadsafe(coro, loop)
    try:
        return await asyncio.wrap_future(future)
    except asyncio.CancelledError:
        future.cancel()
        raise


class LoopBridge:
    """An ASGI app, served on the HTTP thread's loop, that runs ``app`` on ``engine_loop``
    (``local_paths`` excepted: those run where they arrive). Lifespan events stay here;
    ``on_shutdown`` runs on the engine's loop when the server shuts down."""

    def __init__(self, app: App, engine_loop: asyncio.AbstractEventLoop,
                 local_paths: frozenset[str] = frozenset(),
                 on_shutdown: Callable[[], None] | None = None) -> None:
        self.app = app
        self.engine_loop = engine_loop
        self.local_paths = local_paths
        self.on_shutdown = on_shutdown

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope.get("path") in self.local_paths:
            await self.app(scope, receive, send)
            return
        here = asyncio.get_running_loop()
        early = await _preread(scope, receive)

        async def receive_here() -> dict[str, Any]:
            if early:
                return early.popleft()
            return await run_on(here, receive())

        outbox = _Outbox(here, self.engine_loop, send)

        async def handle() -> None:
            error: BaseException | None = None
            try:
                await self.app(scope, receive_here, outbox.put)
            except BaseException as exc:  # noqa: BLE001 - carried to the HTTP loop by close()
                error = exc
            outbox.close(error)

        # The handler's end travels with its answer (close() above): no hop of its own, and
        # no concurrent future to chain (run_coroutine_threadsafe's costs a hop more).
        started: list[asyncio.Task[None]] = []

        def start() -> None:
            started.append(self.engine_loop.create_task(handle()))

        self.engine_loop.call_soon_threadsafe(start)
        try:
            await outbox.closed()
        except asyncio.CancelledError:
            def cancel() -> None:  # (queued after start(): the task exists by then)
                if started:
                    started[0].cancel()
            with contextlib.suppress(RuntimeError):  # the engine's loop has ended
                self.engine_loop.call_soon_threadsafe(cancel)
            raise

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.on_shutdown is not None:
                    with contextlib.suppress(RuntimeError):  # the engine's loop has ended
                        self.engine_loop.call_soon_threadsafe(self.on_shutdown)
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _preread(scope: Scope, receive: Receive) -> collections.deque[dict[str, Any]]:
    """The request's body messages, when it declares a length of at most ``_PREREAD_BYTES``
    (so they are on their way now: a body of unknown length may be a stream the client
    feeds slowly, such as an insert stream, and is left to the handler)."""
    early: collections.deque[dict[str, Any]] = collections.deque()
    if scope.get("type") != "http":
        return early
    length = next((value for name, value in scope.get("headers", ()) if name == b"content-length"), None)
    if length is None or not length.isdigit() or int(length) > _PREREAD_BYTES:
        return early
    while True:
        message = await receive()
        early.append(message)
        if message["type"] != "http.request" or not message.get("more_body", False):
            return early


class _Outbox:
    """A response's ASGI messages from the engine's loop (``put``, then ``close``) to the HTTP
    loop, in order.

    One flusher task on the HTTP loop sends what is queued; ``put`` wakes the HTTP loop only
    when no flusher is running, so a burst of messages costs one wake-up. A send that fails
    (the client went away) fails the next ``put``, as awaiting the send itself did. ``close``
    marks the handler's end (with its exception, if it raised), which ``closed`` returns (or
    raises) on the HTTP loop once everything before it was sent.
    """

    def __init__(self, here: asyncio.AbstractEventLoop, engine_loop: asyncio.AbstractEventLoop,
                 send: Send) -> None:
        self._here = here
        self._engine_loop = engine_loop
        self._send = send
        self._lock = threading.Lock()
        self._queue: collections.deque[dict[str, Any]] = collections.deque()
        self._queued_bytes = 0
        self._flushing = False
        self._space: asyncio.Future[None] | None = None  # the handler waiting for room
        self._send_error: BaseException | None = None
        self._closed = False
        self._handler_error: BaseException | None = None
        self._done: asyncio.Future[None] = here.create_future()

    async def put(self, message: dict[str, Any]) -> None:
        """Queue ``message`` (on the engine's loop); waits while the client is not reading."""
        if self._send_error is not None:
            raise self._send_error
        size = len(message.get("body", b""))
        space: asyncio.Future[None] | None = None
        with self._lock:
            self._queue.append(message)
            self._queued_bytes += size
            wake = not self._flushing
            self._flushing = True
            if self._queued_bytes > _OUTBOX_BYTES:
                space = self._space = self._engine_loop.create_future()
        if wake:
            self._here.call_soon_threadsafe(self._start_flusher)
        if space is not None:
            await space
            if self._send_error is not None:
                raise self._send_error

    def close(self, error: BaseException | None) -> None:
        """The handler has ended (on the engine's loop), raising ``error`` if not None."""
        with self._lock:
            self._closed = True
            self._handler_error = error
            wake = not self._flushing
            self._flushing = True
        if wake:
            self._here.call_soon_threadsafe(self._start_flusher)

    async def closed(self) -> None:
        """Wait (on the HTTP loop) for the handler's end and its answer's last message."""
        await self._done

    def _start_flusher(self) -> None:
        self._here.create_task(self._flush())

    async def _flush(self) -> None:
        while True:
            with self._lock:
                if not self._queue:
                    self._flushing = False
                    if self._closed:
                        self._finish()
                    return
                message = self._queue.popleft()
                self._queued_bytes -= len(message.get("body", b""))
                space = None
                if self._space is not None and self._queued_bytes <= _OUTBOX_BYTES:
                    space, self._space = self._space, None
            if space is not None:
                self._engine_loop.call_soon_threadsafe(_resolve, space)
            try:
                await self._send(message)
            except Exception as exc:  # the client is gone: the handler learns it on its next put
                with self._lock:
                    self._send_error = exc
                    self._queue.clear()
                    self._queued_bytes = 0
                    space, self._space = self._space, None
                if space is not None:
                    self._engine_loop.call_soon_threadsafe(_resolve, space)

    def _finish(self) -> None:
        if self._done.done():
            return
        if isinstance(self._handler_error, asyncio.CancelledError):
            self._done.cancel()
        elif self._handler_error is not None:
            self._done.set_exception(self._handler_error)
        else:
            self._done.set_result(None)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)

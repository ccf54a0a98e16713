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
"""
from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Awaitable, Callable, Coroutine, TypeVar

T = TypeVar("T")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


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

        async def receive_here() -> dict[str, Any]:
            return await run_on(here, receive())

        async def send_here(message: dict[str, Any]) -> None:
            await run_on(here, send(message))

        await run_on(self.engine_loop, self.app(scope, receive_here, send_here))

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

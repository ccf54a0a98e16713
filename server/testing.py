"""A streamsql node for tests and benchmarks, on a free loopback port.

``NodeProcess``: in a child process, its URL read from the line it prints once listening,
stopped with SIGTERM (then SIGKILL)::

    with NodeProcess(tmp_path / "data") as node:
        ... node.url ...

``node_in_process``: in the running event loop, as ``streamsql server`` runs it (the engine on
this loop, the HTTP server on a thread of its own), for a test that also needs the engine::

    async with node_in_process(tmp_path / "data", {"auto.offset.reset": "earliest"}) as (url, app):
        ... url ... app.engine ...
"""
from __future__ import annotations

import asyncio
import contextlib
import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, AsyncIterator, Sequence

_READY = "streamsql server listening on "
# Printed per --connect-listeners URL, before the lines above.
_CONNECT_READY = "streamsql server: Kafka Connect REST API at "


class NodeProcess:
    """``streamsql server`` with ``--listeners`` on port 0 of the loopback interface."""

    def __init__(self, data_dir: str | Path, extra_args: Sequence[str] = (), *, scheme: str = "http",
                 env: dict[str, str] | None = None, startup_timeout: float = 30.0) -> None:
        self.data_dir = Path(data_dir)
        self.args = [sys.executable, "-m", "streamsql", "server", "--listeners", f"{scheme}://127.0.0.1:0",
                     "--data-dir", str(self.data_dir), "--log-level", "WARNING", *extra_args]
        self.env = {**os.environ, **(env or {})}
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.connect_url = ""  # the first --connect-listeners URL, if any was given
        self.stderr_lines: list[str] = []

    def start(self) -> "NodeProcess":
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=self.env)
        # stderr is drained in the background so a chatty node never blocks on a full pipe.
        threading.Thread(target=self._drain, args=(self.proc.stderr, self.stderr_lines), daemon=True).start()
        deadline = time.monotonic() + self.startup_timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            if line.startswith(_CONNECT_READY) and not self.connect_url:
                self.connect_url = line[len(_CONNECT_READY):].strip()
            if line.startswith(_READY):
                self.url = line[len(_READY):].strip()
                threading.Thread(target=self._drain, args=(self.proc.stdout, []), daemon=True).start()
                return self
        self.stop()
        raise RuntimeError("streamsql server did not start:\n" + "".join(self.stderr_lines[-50:]))

    @staticmethod
    def _drain(stream, sink: list[str]) -> None:  # noqa: ANN001 - a text pipe
        for line in stream:
            sink.append(line)

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after 10 s; the exit code."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        return proc.returncode

    def __enter__(self) -> "NodeProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.asynccontextmanager
async def node_in_process(data_dir: str | Path, config: dict[str, Any] | None = None,
                          startup_timeout: float = 30.0) -> AsyncIterator[tuple[str, Any]]:
    """A node listening on a free loopback port, served in the running event loop; yields its
    URL and its ``KsqlApp`` (``app.engine`` is the engine) and stops it on exit. ``config``:
    engine properties, as ``--config`` gives them. The "listening on" line ``serve`` prints
    is kept off stdout (a runner of many nodes would print one per node)."""
    from streamsql.server.main import NodeOptions, serve

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[tuple[str, Any]] = loop.create_future()
    options = NodeOptions(listeners=("http://127.0.0.1:0",), data_dir=Path(data_dir),
                          config=dict(config or {}))
    with contextlib.redirect_stdout(io.StringIO()):
        node = asyncio.ensure_future(serve(
            options, on_ready=lambda urls, app: ready.done() or ready.set_result((urls[0], app)),
            stop=stop))
        done, _ = await asyncio.wait({node, ready}, timeout=startup_timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
    if not done:
        stop.set()
        node.cancel()
        raise RuntimeError(f"streamsql node did not start within {startup_timeout} s")
    if not ready.done():
        node.result()  # raises what stopped it
        raise RuntimeError("streamsql node stopped before it was ready")
    url, app = ready.result()
    try:
        yield url, app
    finally:
        stop.set()
        await asyncio.wait_for(node, 30)

"""Standby tasks: warm copies of a stage's task state on nodes that do not run the task.

Kafka Streams' high-availability model (``num.standby.replicas``, KIP-441). A stage's tasks
run on the node the consumer group gives them to (the *active*); their state is in RocksDB
there and in the stores' changelog topics. Another node may keep a copy of a task's state
by following its changelogs (a *standby*), so that when the task moves there (its active
node left or died, or the group moved it to even out the load) it replays only the last few
records instead of the whole changelog. A *warm-up* is a standby given to a node that is to
receive the task once caught up: the assignment keeps the task where its state is until
then (``streamsql.runtime.assignment``), and the warm node asks for a new assignment
(``Consumer.rejoin``) once every warm-up of it has caught up.

A standby task's state is the same RocksDB directory the task would have as an active here
(``<stage dir>/<partition>``), written only by replaying the changelogs: promoting it is
closing it here and opening it as an active task, which replays what it lacks.

``StandbyTasks`` keeps a stage's standbys up to date: one pass every ``interval`` seconds
reads each changelog partition from the standby's position to its end (the last stable
offset on Kafka: an open transaction is read once it committed).
"""
from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Awaitable, Callable

from streamsql.runtime.log.base import Log
from streamsql.state import RocksDBConfig, StoreSpec, TaskState, read_positions

log = logging.getLogger(__name__)


class StandbyTasks:
    """The standby and warm-up tasks of one stage on this node (see the module docstring).

    ``offsets()`` is what the node reports of its local state when the group assigns tasks:
    per task, the changelog positions (summed over the stage's stores) its state covers, for
    open standbys, for tasks this node ran (``remember``), and for directories left by an
    earlier run of the node."""

    def __init__(self, log_: Log, path: Path, specs: list[StoreSpec], name: str,
                 task_count: Callable[[], Awaitable[int]], config: RocksDBConfig | None = None,
                 acceptable_lag: int = 10_000, interval: float = 0.5,
                 probe_interval: float = 5.0) -> None:
        self.log = log_
        self.path = path
        self.specs = specs
        self.name = name
        self.config = config
        # How many tasks the stage has (the changelogs' partition count, if they are made here).
        self.task_count = task_count
        self.acceptable_lag = acceptable_lag
        self.interval = interval
        self.open: dict[int, TaskState] = {}
        self.wanted: set[int] = set()
        self.warmups: set[int] = set()
        # Called once every warm-up has caught up: the node asks the group for the tasks.
        self.on_warm: Callable[[], None] | None = None
        self._warm_reported = False
        self._offsets: dict[int, int] = self._scan()
        self._locks: dict[int, asyncio.Lock] = {}
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        # When this node last asked for a new assignment: at most one such rebalance every
        # ``probe_interval`` seconds (writes racing ahead of a warm-up must not make the
        # group rebalance in a loop).
        self._probed = -1e9
        self.probe_interval = probe_interval

    def _scan(self) -> dict[int, int]:
        found: dict[int, int] = {}
        if not self.path.is_dir():
            return found
        names = {s.name for s in self.specs if s.changelog is not None}
        for child in self.path.iterdir():
            if not child.name.isdigit():
                continue
            try:
                positions = read_positions(child)
            except Exception as exc:  # noqa: BLE001 - an unreadable directory is no state
                log.warning("%s: cannot read the checkpoint in %s: %s", self.name, child, exc)
                continue
            if positions is not None:
                found[int(child.name)] = sum(v for k, v in positions.items() if k in names)
        return found

    def offsets(self) -> dict[int, int]:
        """Task -> changelog positions (summed) of the state this node has of it."""
        for p, state in self.open.items():
            self._offsets[p] = sum(state.changelog_positions().values())
        return dict(self._offsets)

    def remember(self, partition: int, state: TaskState) -> None:
        """Note the positions of a task's state as it is closed (it stays on disk)."""
        self._offsets[partition] = sum(state.changelog_positions().values())

    def _lock(self, partition: int) -> asyncio.Lock:
        lock = self._locks.get(partition)
        if lock is None:
            lock = self._locks[partition] = asyncio.Lock()
        return lock

    async def release(self, partitions: set[int]) -> None:
        """Stop following ``partitions`` and close their state (they become active here: the
        active task opens the same directory). Waits for a restore under way to finish."""
        for p in sorted(partitions & (set(self.open) | self.wanted)):
            self.wanted.discard(p)
            self.warmups.discard(p)
            async with self._lock(p):
                state = self.open.pop(p, None)
                if state is not None:
                    self.remember(p, state)
                    state.close()

    async def assign(self, standby: set[int], warmup: set[int]) -> None:
        """Follow exactly these tasks from now on (the group's latest assignment)."""
        if self._closed:
            return  # (the stage stopped)
        wanted = standby | warmup
        await self.release(set(self.open) - wanted)
        self.wanted = set(wanted)
        self.warmups = set(warmup)
        self._warm_reported = False
        if wanted and self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"standby-{self.name}")

    async def _run(self) -> None:
        while True:
            try:
                await self.catch_up()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s: standby tasks failed to catch up; trying again", self.name)
            await asyncio.sleep(self.interval)

    async def catch_up(self) -> int:
        """One pass: open the standbys not open yet (restoring them), and bring each up to
        its changelogs' ends. Returns how many changelog records were applied."""
        applied = 0
        for p in sorted(self.wanted):
            async with self._lock(p):
                if p not in self.wanted:
                    continue  # released meanwhile
                state = self.open.get(p)
                if state is None:
                    state = await TaskState.open(self.path / str(p), self.specs, log=self.log,
                                                 partition=p, partitions=await self.task_count(),
                                                 uncommitted_tail="replay", config=self.config)
                    self.open[p] = state
                    n = sum(st.replayed for st in state.restore_stats.values())
                    log.info("%s: standby task %d opened (%d changelog records replayed)",
                             self.name, p, n)
                else:
                    n = await state.catch_up()
                applied += n
        if (self.warmups and not self._warm_reported and self.on_warm is not None
                and time.monotonic() - self._probed >= self.probe_interval):
            if await self._warm():
                self._warm_reported = True
                self._probed = time.monotonic()
                log.info("%s: warm-up tasks %s caught up: asking the group to move them here",
                         self.name, sorted(self.warmups))
                self.on_warm()
        return applied

    async def _warm(self) -> bool:
        """Whether every warm-up is open and within ``acceptable_lag`` of its changelogs."""
        if any(p not in self.open for p in self.warmups):
            return False
        lags = await self.lags()
        return all(lags[p] <= self.acceptable_lag for p in self.warmups)

    async def lags(self) -> dict[int, int]:
        """Open standby -> changelog records (summed over its stores) it lacks now."""
        ends = {spec.changelog: await self.log.end_offsets(spec.changelog)
                for spec in self.specs if spec.changelog is not None}
        out: dict[int, int] = {}
        for p, state in self.open.items():
            positions = state.changelog_positions()
            out[p] = sum(max(0, ends[spec.changelog][p] - positions.get(spec.name, 0))
                         for spec in self.specs if spec.changelog is not None)
        return out

    async def close(self) -> None:
        """Stop following and close every standby (their directories stay)."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self.wanted.clear()
        self.warmups.clear()
        for p, state in list(self.open.items()):
            self.remember(p, state)
            state.close()
        self.open.clear()

    def __repr__(self) -> str:  # (logs)
        return f"StandbyTasks({self.name}, open={sorted(self.open)})"

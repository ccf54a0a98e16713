"""The records of a multi-input task in timestamp order (Kafka Streams' ``PartitionGroup``).

A stage reading several co-partitioned topics (a join step) has one task per partition
number, fed by partition p of each topic. Reading each topic as fast as it comes would let a
backlog on one side run ahead of the other: a stream whose records are already on the log
when the query starts would look up a table whose rows, stamped earlier, have not been read
yet, and miss them. So, as Kafka Streams does, records are buffered per input partition and a
task always processes the buffered record with the smallest timestamp next (on a tie, the
input listed later: the table side of a stream-table join, so that a row and a stream record
of one instant meet). A task whose input partition has nothing buffered waits for it:

* while the log is known to hold records of that partition not read yet (lag), however long
  fetching them takes;
* otherwise (the input is caught up) for ``idle_ms`` (``max.task.idle.ms``, 0 by default:
  not at all) from the moment the task found itself waiting, then goes on without it.

A partition with more than ``max_buffered`` records buffered is paused at the consumer until
its task has used them up, so waiting for one input never buffers the other without bound.

The buffered records are the runner's: on a revocation or a new assignment they are dropped
(the consumer reads again from the committed offsets). What ``take`` hands out is a list of
*runs* per task, each a slice of one input partition's records, to be processed in order; the
offsets to commit follow from the last record of each topic's runs.
"""
from __future__ import annotations

from collections import deque
from typing import Callable, Iterable

from streamsql.runtime.log.base import RecordBatch

Partition = tuple[str, int]

# Sorts after any timestamp: an input with nothing buffered bounds nothing.
_NO_BOUND = (float("inf"), 0)


class _Buffer:
    """One input partition's records not processed yet: batches with a cursor into the first."""

    __slots__ = ("batches", "start", "count")

    def __init__(self) -> None:
        self.batches: deque[RecordBatch] = deque()
        self.start = 0
        self.count = 0

    def head_ts(self) -> int:
        return self.batches[0].timestamps[self.start]

    def take_until(self, bound: tuple[float, int], rank: int) -> RecordBatch:
        """The longest run from the head whose records sort before ``bound`` (timestamp,
        -rank of the input it came from); at least the head record (the caller picked it)."""
        b = self.batches[0]
        ts = b.timestamps
        i, n = self.start, len(ts)
        limit, other = bound
        # (t, -rank) < (limit, other): t < limit, or t == limit and -rank < other.
        if limit == _NO_BOUND[0] or max(ts[i:] if i else ts) < limit:
            i = n  # the whole rest, without a loop in Python (the common case)
        elif -rank < other:
            while i < n and ts[i] <= limit:
                i += 1
        else:
            while i < n and ts[i] < limit:
                i += 1
        i = max(i, self.start + 1)
        if self.start == 0 and i == n:
            run = b
        else:
            s = self.start
            run = RecordBatch(b.topic, b.partition, b.offsets[s:i], ts[s:i], b.keys[s:i],
                              b.values[s:i], b.headers[s:i] if b.headers is not None else None)
        if i == n:
            self.batches.popleft()
            self.start = 0
        else:
            self.start = i
        self.count -= len(run.offsets)
        return run


class OrderedInputs:
    """The buffered records of a multi-input stage's tasks (see the module docstring).
    ``topics`` are the stage's inputs in order (a later one wins timestamp ties)."""

    def __init__(self, topics: Iterable[str], idle_ms: int = 0, max_buffered: int = 10000) -> None:
        self.topics = tuple(topics)
        self.rank = {t: i for i, t in enumerate(self.topics)}
        self.idle_ms = idle_ms
        self.max_buffered = max_buffered
        self._buffers: dict[Partition, _Buffer] = {}
        # Task -> when it first waited for a caught-up input (the max.task.idle.ms clock).
        self._idle_since: dict[int, float] = {}

    def add(self, batch: RecordBatch) -> None:
        """Buffer a polled batch (of one of the stage's topics)."""
        buf = self._buffers.get((batch.topic, batch.partition))
        if buf is None:
            buf = self._buffers[(batch.topic, batch.partition)] = _Buffer()
        buf.batches.append(batch)
        buf.count += len(batch.offsets)

    def drop(self, partitions: Iterable[Partition] | None = None) -> None:
        """Forget the buffered records of ``partitions`` (all when None)."""
        if partitions is None:
            self._buffers.clear()
            self._idle_since.clear()
            return
        for tp in partitions:
            self._buffers.pop(tp, None)
            self._idle_since.pop(tp[1], None)

    def full(self) -> set[Partition]:
        """The input partitions with more buffered than ``max_buffered`` (pause them)."""
        return {tp for tp, b in self._buffers.items() if b.count > self.max_buffered}

    def buffered(self) -> int:
        """How many records are buffered in all."""
        return sum(b.count for b in self._buffers.values())

    def take(self, assignment: set[Partition], lag: Callable[[str, int], int | None],
             now: float) -> tuple[list[list[RecordBatch]], float | None]:
        """The runs each task can process now, in timestamp order (a list per task), and
        the time (``now``'s clock) at which a task waiting for a caught-up input stops
        waiting, if any does. ``lag(topic, partition)`` is how many records of an input the
        log holds that were not polled yet (None: not known yet)."""
        work: list[list[RecordBatch]] = []
        wake: float | None = None
        idle_s = self.idle_ms / 1000
        for p in sorted({p for (_, p), b in self._buffers.items() if b.count}):
            inputs = [(t, p) for t in self.topics if (t, p) in assignment]
            since = self._idle_since.get(p)
            idle_over = idle_s <= 0 or (since is not None and now - since >= idle_s)
            runs, met_idle = self._merge(inputs, lag, idle_over)
            if runs:
                work.append(runs)
            if not met_idle:
                self._idle_since.pop(p, None)
            elif not idle_over:
                if since is None:
                    since = self._idle_since[p] = now
                due = since + idle_s
                wake = due if wake is None else min(wake, due)
        return work, wake

    def _merge(self, inputs: list[Partition], lag: Callable[[str, int], int | None],
               idle_over: bool) -> tuple[list[RecordBatch], bool]:
        """One task's runs in timestamp order until an input it must wait for runs dry;
        also whether it met a caught-up input with nothing buffered (what max.task.idle.ms
        is about): with ``idle_over`` it went on without such an input, else it stopped."""
        runs: list[RecordBatch] = []
        buffers = self._buffers
        rank = self.rank
        met_idle = False
        while True:
            heads: list[tuple[tuple[float, int], Partition]] = []
            for tp in inputs:
                buf = buffers.get(tp)
                if buf is not None and buf.count:
                    heads.append(((buf.head_ts(), -rank[tp[0]]), tp))
                    continue
                behind = lag(*tp)
                if behind is None or behind > 0:
                    return runs, met_idle  # records are on their way: wait for them
                met_idle = True
                if not idle_over:
                    return runs, True
            if not heads:
                return runs, met_idle
            heads.sort()
            _, tp = heads[0]
            bound = heads[1][0] if len(heads) > 1 else _NO_BOUND
            runs.append(buffers[tp].take_until(bound, rank[tp[0]]))

"""The embedded log's cleaner: time and size retention, with Kafka's configuration names.

A topic's ``cleanup.policy`` says what happens to old records. With ``delete`` (or
``compact,delete``), whole closed segments go once they are past the topic's retention:

* ``retention.ms``: a segment whose largest record timestamp is older than this (Kafka's
  rule: by the records' timestamps, not by when the file was written);
* ``retention.bytes``: the oldest segments go while the partition is larger than this even
  without them.

``-1`` is no limit. The active segment (the one written to) is never deleted; a topic that
is written to slowly gets its segments closed by ``segment.ms``, so that time retention
reaches its records too. Topic settings come from the topic's own config, else from the log's
defaults (the ``log.``-prefixed broker settings: ``log.retention.ms``, ...); unlike Kafka, the
embedded log keeps records forever by default (``log.retention.ms`` -1, not 7 days): it is the
only copy of a single node's data, and tests feed it records stamped in 1970.

Consumers whose position was deleted resume at the log start (``auto.offset.reset=earliest``)
or at its end (``latest``), as Kafka's do after an out-of-range fetch.

Deleting a segment is an unlink on the event loop (short); finding a closed segment's largest
timestamp means reading it once, which happens on a worker thread, so the cleaner never holds
up producers or the HTTP server.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

from .segment import Segment, decode, encode_columns

if TYPE_CHECKING:
    from .embedded import EmbeddedLog, _Partition

logger = logging.getLogger(__name__)

# How often the cleaner looks (Kafka's log.retention.check.interval.ms is 5 minutes).
DEFAULT_CHECK_INTERVAL_MS = 60_000
NO_LIMIT = -1


@dataclass(frozen=True)
class TopicPolicy:
    """What a topic's config says about keeping its records."""

    delete: bool = False
    compact: bool = False
    retention_ms: int = NO_LIMIT
    retention_bytes: int = NO_LIMIT
    segment_bytes: int | None = None  # None: the log's own default
    segment_ms: int = NO_LIMIT
    min_cleanable_dirty_ratio: float = 0.5
    min_compaction_lag_ms: int = 0
    delete_retention_ms: int = 86_400_000

    @classmethod
    def of(cls, config: Mapping[str, str], defaults: Mapping[str, str] | None = None
           ) -> "TopicPolicy":
        """The policy of a topic with ``config``, the rest from ``defaults`` (broker-style
        ``log.`` names). Unreadable numbers count as unset."""
        defaults = defaults or {}

        def setting(name: str, default_name: str) -> str | None:
            value = config.get(name)
            return value if value is not None else defaults.get(default_name)

        def number(name: str, default_name: str) -> int | None:
            value = setting(name, default_name)
            if value is None:
                return None
            try:
                return int(str(value).strip())
            except ValueError:
                logger.warning("ignoring %s=%r: not a number", name, value)
                return None

        def duration(name: str, default_name: str, default: int) -> int:
            value = number(name, default_name)
            return default if value is None or value < 0 else value

        def limit(name: str, default_name: str) -> int:
            value = number(name, default_name)
            return NO_LIMIT if value is None or value < 0 else value

        policy = {p.strip() for p in (setting("cleanup.policy", "log.cleanup.policy")
                                      or "delete").split(",")}
        segment_bytes = number("segment.bytes", "log.segment.bytes")
        ratio = setting("min.cleanable.dirty.ratio", "log.cleaner.min.cleanable.ratio")
        try:
            dirty_ratio = min(max(float(ratio), 0.0), 1.0) if ratio is not None else 0.5
        except ValueError:
            dirty_ratio = 0.5
        return cls(delete="delete" in policy, compact="compact" in policy,
                   retention_ms=limit("retention.ms", "log.retention.ms"),
                   retention_bytes=limit("retention.bytes", "log.retention.bytes"),
                   segment_bytes=segment_bytes if segment_bytes and segment_bytes > 0 else None,
                   segment_ms=limit("segment.ms", "log.roll.ms"),
                   min_cleanable_dirty_ratio=dirty_ratio,
                   min_compaction_lag_ms=duration("min.compaction.lag.ms",
                                                  "log.cleaner.min.compaction.lag.ms", 0),
                   delete_retention_ms=duration("delete.retention.ms",
                                                "log.cleaner.delete.retention.ms", 86_400_000))

    @property
    def retains(self) -> bool:
        """Whether retention can delete anything of the topic."""
        return self.delete and (self.retention_ms >= 0 or self.retention_bytes >= 0)


def expired_prefix(sizes: Sequence[int], max_timestamps: Sequence[int | None], total: int,
                   now_ms: int, policy: TopicPolicy) -> int:
    """How many of a partition's oldest closed segments retention deletes. ``sizes`` and
    ``max_timestamps`` are those closed segments' (oldest first; a timestamp is None when the
    segment is empty), ``total`` the partition's size with its active segment."""
    n = 0
    remaining = total
    for size, max_ts in zip(sizes, max_timestamps):
        by_size = policy.retention_bytes >= 0 and remaining - size >= policy.retention_bytes
        by_time = policy.retention_ms >= 0 and (max_ts is None
                                                or max_ts < now_ms - policy.retention_ms)
        if not (by_size or by_time):
            break  # Kafka deletes a prefix of the log only: the log start moves forward
        remaining -= size
        n += 1
    return n


class LogCleaner:
    """Applies retention to an embedded log every ``interval_ms`` (``run``), or once
    (``clean``)."""

    def __init__(self, log: "EmbeddedLog", interval_ms: int = DEFAULT_CHECK_INTERVAL_MS) -> None:
        self.log = log
        self.interval_ms = interval_ms

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_ms / 1000)
            try:
                await self.clean()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the next round tries again
                logger.exception("embedded log: retention check failed")

    async def clean(self, now_ms: int | None = None) -> int:
        """Compact the compacted topics whose dirty share is high enough, then delete every
        segment past its topic's retention; returns how many segments were deleted."""
        log = self.log
        now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        for name, policy in log.topic_policies().items():
            if policy.compact:
                for part in log.partitions_of(name):
                    await self.compact(part, policy, now)
        deleted = 0
        for name, policy in log.topic_policies().items():
            if not policy.retains:
                continue
            for part in log.partitions_of(name):
                closed = part.segments[:-1]
                if not closed:
                    continue
                if policy.retention_ms >= 0:
                    unknown = [s for s in closed if not s.timestamps_known]
                    if unknown:
                        # Reading a segment's timestamps is I/O: off the event loop.
                        await asyncio.to_thread(lambda: [s.scan_max_timestamp() for s in unknown])
                closed = part.segments[:-1]  # (the loop ran meanwhile)
                if policy.retention_ms >= 0:
                    closed = _read(closed)
                n = expired_prefix([s.size for s in closed], [s.max_timestamp for s in closed],
                                   sum(s.size for s in part.segments), now, policy)
                if n:
                    deleted += part.delete_oldest(closed[:n])
        return deleted

    # -- compaction -------------------------------------------------------------------

    async def compact(self, part: "_Partition", policy: TopicPolicy, now: int,
                      force: bool = False) -> int:
        """Compact ``part``'s closed segments, keeping the latest record of each key (as of
        everything written so far, the active segment included), when the share of bytes
        written since its last compaction is at least ``min.cleanable.dirty.ratio`` (always
        with ``force``). Tombstones go once their segment is ``delete.retention.ms`` old;
        segments with records younger than ``min.compaction.lag.ms`` wait. Returns the
        number of records removed.

        The reading and rewriting happen on a worker thread, each rewritten segment into a
        file beside it; the swap (a rename per segment) happens here on the loop, and only
        if nothing cut the partition back meanwhile (an exactly-once restart truncating a
        changelog would make "latest" wrong). A crash leaves every segment either as it
        was or compacted, both correct: a dropped record has a newer version after it, and
        a leftover temporary file is removed at open."""
        closed = part.segments[:-1]
        if not closed:
            return 0
        total = sum(s.size for s in part.segments)
        dirty = sum(s.size for s in part.segments if s.base >= part.cleaned_upto)
        if not force and (total == 0 or dirty / total < policy.min_cleanable_dirty_ratio):
            return 0
        unknown = [s for s in closed if not s.timestamps_known]
        if unknown:
            await asyncio.to_thread(lambda: [s.scan_max_timestamp() for s in unknown])
        closed = _read(part.segments[:-1])
        # Only a prefix of the log is cleaned: from the first segment too young, none are.
        lag_cutoff = now - policy.min_compaction_lag_ms
        cleanable: list[Segment] = []
        for seg in closed:
            if seg.max_timestamp is not None and seg.max_timestamp > lag_cutoff:
                break
            cleanable.append(seg)
        if not cleanable:
            return 0
        generation = part.generation
        everything = list(part.segments)
        active_size = everything[-1].size  # what the thread may read of the active segment
        interval = self.log._index_interval
        tombstone_cutoff = now - policy.delete_retention_ms
        fsync = self.log._fsync
        max_bytes = policy.segment_bytes or self.log._segment_bytes
        groups = await asyncio.to_thread(_rewrite, everything, active_size, cleanable,
                                         tombstone_cutoff, interval, fsync, max_bytes)
        removed = 0
        if part.generation != generation:
            _discard([r for _, _, r in groups])
            logger.info("embedded log: %s-%d was cut back during compaction; will retry",
                        part.topic, part.index)
            return 0
        for start, end, result in groups:
            if result is None:
                continue
            olds = cleanable[start:end]
            if not part.replace_segments(olds, result):
                _discard([result])
                continue
            removed += sum(seg.count for seg in olds) - result.count
        part.cleaned_upto = max(part.cleaned_upto, cleanable[-1].next_offset)
        if removed:
            logger.info("embedded log: compacted %s-%d: %d records removed", part.topic,
                        part.index, removed)
        return removed


def _read(segments: list[Segment]) -> list[Segment]:
    """The leading ``segments`` whose timestamps have been read: a segment closed while the
    others were being read is left for the next round (its None timestamp would pass for an
    empty segment's)."""
    for i, seg in enumerate(segments):
        if not seg.timestamps_known:
            return segments[:i]
    return segments


@dataclass
class Rewritten:
    """A segment's compacted bytes (in ``path``, or in ``data`` for in-memory logs), with
    their index; what ``_Partition.replace_segment`` swaps in."""

    count: int
    size: int
    idx_off: array
    idx_pos: array
    countdown: int
    path: Path | None
    data: bytes | None


# Per-record bytes a segment spends besides the key and value (an estimate: for grouping).
_RECORD_OVERHEAD = 40


def _rewrite(segments: list[Segment], active_size: int, cleanable: list[Segment],
             tombstone_cutoff: int, interval: int, fsync: bool, max_bytes: int
             ) -> list[tuple[int, int, Rewritten | None]]:
    """On a worker thread: the latest offset of every key, then the cleanable segments
    without their superseded records, consecutive ones merged while the result stays under
    ``max_bytes`` (Kafka's cleaner groups segments the same way: compacted segments shrink,
    and without merging a long-lived table's changelog would keep one ever emptier file per
    segment ever rolled). Returns ``(start, end, result)`` per group of ``cleanable[start:
    end]``; result None where the group is one segment and nothing of it goes."""
    latest: dict[bytes, int] = {}
    last = len(segments) - 1
    for i, seg in enumerate(segments):
        offs: list[int] = []
        keys: list[bytes | None] = []
        buf = seg.storage.read(0, active_size if i == last else seg.size)
        decode(buf, 0, len(buf), offs, [], keys, [], None)
        for k, off in zip(keys, offs):
            if k is not None:
                latest[k] = off
    kept: list[tuple[list, list, list, list, list | None, bool, int]] = []
    for seg in cleanable:
        offs, tss, keys, vals = [], [], [], []
        buf = seg.storage.read(0, seg.size)
        _, hdrs = decode(buf, 0, len(buf), offs, tss, keys, vals, None)
        # A tombstone is kept delete.retention.ms from its segment's creation, so that a
        # reader part way through the log still sees the delete.
        drop_tombstones = seg.created_ms <= tombstone_cutoff
        keep = [j for j, (k, off) in enumerate(zip(keys, offs))
                if k is None or (latest[k] == off and not (drop_tombstones and vals[j] is None))]
        estimate = sum(len(keys[j] or b"") + len(vals[j] or b"") + _RECORD_OVERHEAD for j in keep)
        kept.append(([offs[j] for j in keep], [tss[j] for j in keep], [keys[j] for j in keep],
                     [vals[j] for j in keep], [hdrs[j] for j in keep] if hdrs is not None else None,
                     len(keep) != len(offs), estimate))
    out: list[tuple[int, int, Rewritten | None]] = []
    start = 0
    while start < len(cleanable):
        end, size = start + 1, kept[start][6]
        while end < len(cleanable) and size + kept[end][6] <= max_bytes:
            size += kept[end][6]
            end += 1
        group = kept[start:end]
        if end - start == 1 and not group[0][5]:
            out.append((start, end, None))
            start = end
            continue
        offs = [o for g in group for o in g[0]]
        with_headers = any(g[4] is not None for g in group)
        hdrs = [h for g in group for h in (g[4] if g[4] is not None else [()] * len(g[0]))] \
            if with_headers else None
        idx_off, idx_pos = array("q"), array("q")
        data = encode_columns(offs, [t for g in group for t in g[1]], [k for g in group for k in g[2]],
                              [v for g in group for v in g[3]], hdrs, interval, idx_off, idx_pos)
        first = cleanable[start]
        path = None
        if first.path is not None:
            path = first.path.with_name(first.path.name + ".cleaned.tmp")
            with open(path, "wb") as f:
                f.write(data)
                if fsync:
                    f.flush()
                    os.fsync(f.fileno())
        out.append((start, end, Rewritten(len(offs), len(data), idx_off, idx_pos,
                                          (-len(offs)) % interval, path,
                                          None if path is not None else data)))
        start = end
    return out


def _discard(results: list[Rewritten | None]) -> None:
    for r in results:
        if r is not None and r.path is not None:
            r.path.unlink(missing_ok=True)

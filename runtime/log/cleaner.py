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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

if TYPE_CHECKING:
    from .embedded import EmbeddedLog

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

        def limit(name: str, default_name: str) -> int:
            value = number(name, default_name)
            return NO_LIMIT if value is None or value < 0 else value

        policy = {p.strip() for p in (setting("cleanup.policy", "log.cleanup.policy")
                                      or "delete").split(",")}
        segment_bytes = number("segment.bytes", "log.segment.bytes")
        return cls(delete="delete" in policy, compact="compact" in policy,
                   retention_ms=limit("retention.ms", "log.retention.ms"),
                   retention_bytes=limit("retention.bytes", "log.retention.bytes"),
                   segment_bytes=segment_bytes if segment_bytes and segment_bytes > 0 else None,
                   segment_ms=limit("segment.ms", "log.roll.ms"))

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
        """Delete every segment past its topic's retention; returns how many were."""
        import time

        log = self.log
        now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
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
                n = expired_prefix([s.size for s in closed], [s.max_timestamp for s in closed],
                                   sum(s.size for s in part.segments), now, policy)
                if n:
                    deleted += part.delete_oldest(closed[:n])
        return deleted

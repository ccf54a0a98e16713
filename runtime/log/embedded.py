"""The embedded Log backend: partitioned topics in segment files on local disk (or in memory).

It is the default backend of a single-process streamsql. Layout under ``path``::

    topics/<topic>/meta.json                  partitions, replicas, config (atomic rename)
    topics/<topic>/<partition>/<base>.log     segments, named by their base offset (20 digits)
    topics/<topic>/<partition>/<base>.index   sparse index of a sealed segment
    groups/<group>.json                       a consumer group's committed offsets
    trash/                                    deleted topics on their way out

With ``path=None`` the same structures live in memory (same framing, same semantics).

Durability: ``produce`` writes each partition's share of a call with one ``os.write`` (so it
is with the OS when ``produce`` returns) and, with ``fsync=True``, fsyncs before returning.
On open, the last segment of every partition is scanned and a torn or corrupt tail is cut
back to the last good record (logged as a warning).

Consumers: a group consumer is assigned every partition of its topics (one process, one
member). A partition's start position is fixed at the first ``poll`` that reads it: the
group's committed offset, or the earliest offset if the group has none ("no committed offset
-> earliest"). To start elsewhere (auto.offset.reset=latest), commit the wanted position
before the first poll, or ``seek``.
"""
from __future__ import annotations

import asyncio
import fcntl
import hashlib
import itertools
import json
import logging
import os
import re
import shutil
import time
import uuid
from array import array
from bisect import bisect_right
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence
from urllib.parse import quote

from .base import (Consumer, Headers, Log, Partitioner, ProducerRecord, RebalanceListener, RecordColumns,
                   RecordBatch, TopicExistsError, TopicInfo, UnknownTopicError)
from .cleaner import DEFAULT_CHECK_INTERVAL_MS, LogCleaner, Rewritten, TopicPolicy
from .segment import (DEFAULT_INDEX_INTERVAL, DEFAULT_MAX_FETCH_BYTES, FileStorage,
                      MemoryStorage, Segment, atomic_write, encode_columns, fsync_dir, read_file,
                      scan)

logger = logging.getLogger(__name__)

DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
_LEGAL_TOPIC = re.compile(r"[a-zA-Z0-9._-]+")


class InvalidTopicError(ValueError):
    """A topic name Kafka would refuse (the message is Kafka's)."""


def validate_topic_name(name: str) -> None:
    """Kafka's topic name rules: 1-249 characters of ASCII alphanumerics, '.', '_', '-'."""
    if not name:
        raise InvalidTopicError("Topic name is illegal, it can't be empty")
    if name in (".", ".."):
        raise InvalidTopicError('Topic name cannot be "." or ".."')
    if len(name) > 249:
        raise InvalidTopicError(
            f"Topic name is illegal, it can't be longer than 249 characters, topic name: {name}")
    if not _LEGAL_TOPIC.fullmatch(name):
        raise InvalidTopicError(
            f'Topic name "{name}" is illegal, it contains a character other than ASCII '
            "alphanumerics, '.', '_' and '-'")


def _segment_name(base: int) -> str:
    return f"{base:020d}"


class _Partition:
    """One partition: its segments (the last one is active) and its end offset."""

    __slots__ = ("topic", "index", "dir", "segments", "bases", "end", "log", "policy",
                 "generation", "cleaned_upto")

    def __init__(self, log: "EmbeddedLog", topic: str, index: int, directory: Path | None,
                 policy: TopicPolicy = TopicPolicy()) -> None:
        self.log = log
        self.topic = topic
        self.index = index
        self.dir = directory
        self.segments: list[Segment] = []
        self.bases: list[int] = []
        self.end = 0
        self.policy = policy
        self.generation = 0  # bumped when records are cut off the end (see compaction)
        self.cleaned_upto = 0  # offsets below this were compacted (the cleaner's dirty ratio)

    # -- opening ----------------------------------------------------------------------

    def load(self) -> None:
        """Open the partition's segments from disk, repairing a torn tail."""
        assert self.dir is not None
        for stray in self.dir.glob("*.tmp"):
            stray.unlink()
        for swap in sorted(self.dir.glob("*.swap")):
            self._finish_swap(swap)
        files = sorted(self.dir.glob("*.log"))
        for i, f in enumerate(files):
            try:
                base = int(f.stem)
            except ValueError:
                logger.warning("ignoring stray file %s", f)
                continue
            stat = f.stat()
            seg = Segment(base, FileStorage(f), f, int(stat.st_mtime * 1000))
            last = i == len(files) - 1
            size = stat.st_size
            if last or not seg.load_index(f.with_suffix(".index"), size):
                self._scan(seg, f, size, last)
            self.segments.append(seg)
            self.bases.append(base)
            self.end = max(self.end, seg.next_offset)

    def _finish_swap(self, swap: Path) -> None:
        """Complete a compaction swap a crash interrupted (see ``replace_segments``): the
        swap file holds everything of offsets ``[base, end)`` that survived the cleaning,
        so the segments in that range go, whichever of them were already deleted."""
        assert self.dir is not None
        try:
            base_text, _, end_text, _ = swap.name.split(".")
            base, end = int(base_text), int(end_text)
        except ValueError:
            logger.warning("ignoring stray file %s", swap)
            return
        for f in self.dir.glob("*.log"):
            try:
                b = int(f.stem)
            except ValueError:
                continue
            if base <= b < end:
                f.unlink()
                f.with_suffix(".index").unlink(missing_ok=True)
        os.replace(swap, self.dir / (base_text + ".log"))
        logger.info("embedded log: %s-%d: finished the compaction swap %s after a restart",
                    self.topic, self.index, swap.name)

    def _scan(self, seg: Segment, f: Path, size: int, last: bool) -> None:
        data = read_file(f)
        res = scan(data, seg.base, self.log._index_interval, seg.idx_off, seg.idx_pos)
        if res.problem is not None:
            cut = len(data) - res.good_size
            logger.warning(
                "embedded log: %s tail in topic %s partition %d segment %s (%s): truncated "
                "to the last good record, %d bytes cut", "torn or corrupt" if last else
                "corrupt", self.topic, self.index, f.name, res.problem, cut)
            os.truncate(f, res.good_size)
            if self.log._fsync:
                fd = os.open(f, os.O_RDWR)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        seg.size = res.good_size
        seg.count = res.count
        seg.next_offset = max(res.next_offset, seg.base)
        seg.countdown = res.countdown
        if not last:
            seg.write_index(f.with_suffix(".index"), self.log._fsync)

    # -- writing ----------------------------------------------------------------------

    def _new_segment(self, base: int, now_ms: int) -> Segment:
        if self.dir is None:
            seg = Segment(base, MemoryStorage(), None, now_ms)
        else:
            f = self.dir / (_segment_name(base) + ".log")
            seg = Segment(base, FileStorage(f), f, now_ms)
            seg.storage._open()  # the file exists from now on, even while empty
            if self.log._fsync:
                fsync_dir(self.dir)
        self.segments.append(seg)
        self.bases.append(base)
        return seg

    def append(self, records: Sequence[ProducerRecord], now_ms: int) -> int:
        """Append records in one write; returns the offset of the first."""
        log = self.log
        if not self.segments:
            seg = self._new_segment(self.end, now_ms)
        else:
            seg = self.segments[-1]
            policy = self.policy
            if seg.size >= (policy.segment_bytes or log._segment_bytes) or (
                    policy.segment_ms >= 0 and seg.count
                    and now_ms - seg.created_ms >= policy.segment_ms):
                if seg.path is not None:
                    seg.write_index(seg.path.with_suffix(".index"), log._fsync)
                seg = self._new_segment(self.end, now_ms)
        base = self.end
        if type(records) is RecordColumns:
            try:
                n = seg.append_values(records.values, records.key, records.timestamp, base, log._index_interval)
            except TypeError:  # a None value (a tombstone) among them: record by record
                n = seg.append(records, base, now_ms, log._index_interval)
        else:
            n = seg.append(records, base, now_ms, log._index_interval)
        self.end = base + n
        return base

    def delete_oldest(self, segments: list[Segment]) -> int:
        """Delete ``segments`` if they are still the partition's oldest and closed (retention);
        the log start moves to the next segment's base. Returns how many were deleted."""
        n = len(segments)
        if n >= len(self.segments) or any(a is not b for a, b in zip(segments, self.segments)):
            return 0
        for seg in segments:
            seg.storage.close()
            if seg.path is not None:
                seg.path.unlink(missing_ok=True)
                seg.path.with_suffix(".index").unlink(missing_ok=True)
        del self.segments[:n]
        del self.bases[:n]
        if self.log._fsync and self.dir is not None:
            fsync_dir(self.dir)
        logger.info("embedded log: deleted %d segment(s) of %s-%d; log start offset %d",
                    n, self.topic, self.index, self.begin)
        return n

    def replace_segments(self, olds: list[Segment], new: "Rewritten") -> bool:
        """Swap consecutive closed segments for their compacted (and merged) bytes, named as
        the first of them; False if they are no longer consecutive closed segments of the
        partition.

        On disk, as Kafka's cleaner: the new file is renamed to ``<first>.log.<end>.swap``
        (complete, so a crash from here on is finished at the next open: ``load`` deletes the
        segments the swap covers, offsets ``[first base, end)``, and renames it into place),
        then the old segments are deleted and the swap is renamed to ``<first>.log``."""
        try:
            i = next(i for i, s in enumerate(self.segments) if s is olds[0])
        except StopIteration:
            return False
        n = len(olds)
        if i + n >= len(self.segments) or any(a is not b for a, b in zip(olds, self.segments[i:i + n])):
            return False
        first, end = olds[0], olds[-1].next_offset
        created = max(s.created_ms for s in olds)
        seg = Segment(first.base, MemoryStorage(new.data or b""), None, created)
        if first.path is not None:
            assert new.path is not None and self.dir is not None
            swap = first.path.with_name(f"{first.path.name}.{end}.swap")
            os.replace(new.path, swap)
            if self.log._fsync:
                fsync_dir(self.dir)
            for old in olds:
                old.storage.close()
                assert old.path is not None
                old.path.unlink(missing_ok=True)
                old.path.with_suffix(".index").unlink(missing_ok=True)
            os.replace(swap, first.path)
            if self.log._fsync:
                fsync_dir(self.dir)
            seg = Segment(first.base, FileStorage(first.path), first.path, created)
        seg.idx_off, seg.idx_pos = new.idx_off, new.idx_pos
        seg.size, seg.count, seg.countdown = new.size, new.count, new.countdown
        seg.next_offset = end  # the segment still covers the offset range of all it replaced
        known = all(s.timestamps_known for s in olds)
        stamps = [s.max_timestamp for s in olds if s.max_timestamp is not None]
        seg.max_timestamp = max(stamps) if known and stamps else None
        seg.timestamps_known = known
        if seg.path is not None:
            seg.write_index(seg.path.with_suffix(".index"), self.log._fsync)
        self.segments[i:i + n] = [seg]
        self.bases[i:i + n] = [seg.base]
        return True

    def mark(self) -> tuple[int, int, tuple[int, int, int, int, int] | None]:
        """Where the partition ends now, for ``rollback``."""
        return len(self.segments), self.end, self.segments[-1].mark() if self.segments else None

    def rollback(self, mark: tuple[int, int, tuple[int, int, int, int, int] | None]) -> None:
        """Undo every append since ``mark``: segments rolled since are removed, the segment
        that was active is cut back. Used when a produce fails part way (a full disk, a
        failed fsync), so nothing of it stays behind and later records follow the last good
        one."""
        count, end, last = mark
        while len(self.segments) > count:
            seg = self.segments.pop()
            self.bases.pop()
            seg.storage.close()
            if seg.path is not None:
                seg.path.unlink(missing_ok=True)
        if last is not None:
            seg = self.segments[-1]
            seg.rollback(last)
            if seg.path is not None:  # written when the next segment was rolled
                seg.path.with_suffix(".index").unlink(missing_ok=True)
        self.end = end

    def sync(self) -> None:
        if self.segments:
            self.segments[-1].storage.sync()

    def truncate(self, offset: int) -> int:
        """Remove every record at or after ``offset`` (the end becomes ``offset``); returns
        how many records were removed."""
        log = self.log
        self.generation += 1
        removed = 0
        while self.segments and self.bases[-1] >= offset and len(self.segments) > 1:
            seg = self.segments.pop()
            self.bases.pop()
            removed += seg.count
            seg.storage.close()
            if seg.path is not None:
                seg.path.unlink(missing_ok=True)
                seg.path.with_suffix(".index").unlink(missing_ok=True)
        if self.segments:
            seg = self.segments[-1]
            # (A batch holding ``offset`` keeps the records before it: framed again and
            # written back after the cut. Rare: writers cut where their batches begin.)
            pos, kept = seg.cut(offset)
            before = seg.count
            if seg.path is not None:
                seg.storage.close()
                os.truncate(seg.path, pos)
                seg.path.with_suffix(".index").unlink(missing_ok=True)
                if kept:
                    seg.storage.append(kept)
                    seg.storage.close()
                data = read_file(seg.path)
            else:
                assert isinstance(seg.storage, MemoryStorage)
                del seg.storage.data[pos:]
                seg.storage.data += kept
                data = bytes(seg.storage.data)
            # Rebuild the segment's index and counters from what is left.
            seg.idx_off = array("q")
            seg.idx_pos = array("q")
            res = scan(data, seg.base, log._index_interval, seg.idx_off, seg.idx_pos)
            seg.size = res.good_size
            seg.count = res.count
            seg.countdown = res.countdown
            seg.next_offset = max(offset, seg.base)
            seg.cur_off = -1
            seg.cur_pos = 0
            removed += before - res.count
            if log._fsync and seg.path is not None:
                seg.storage.sync()
                fsync_dir(seg.path.parent)
        self.end = offset
        return removed

    # -- reading ----------------------------------------------------------------------

    @property
    def begin(self) -> int:
        return self.bases[0] if self.bases else self.end

    def read(self, offset: int, max_records: int) -> RecordBatch:
        offs: list[int] = []
        tss: list[int] = []
        keys: list[bytes | None] = []
        vals: list[bytes | None] = []
        hdrs: list[Headers] | None = None
        if offset < self.end and max_records > 0:
            segs = self.segments
            i = bisect_right(self.bases, offset) - 1
            if i < 0:
                i = 0
            log = self.log
            budget = log._max_fetch_bytes
            while i < len(segs) and len(offs) < max_records and budget > 0:
                seg = segs[i]
                if offset >= seg.next_offset:
                    i += 1
                    continue
                before = len(offs)
                hdrs, used = seg.read(offset, max_records - before, budget, log._check_crcs,
                                      offs, tss, keys, vals, hdrs)
                if len(offs) == before:
                    i += 1  # compaction removed the segment's last records
                else:
                    offset = offs[-1] + 1
                    budget -= used
        return RecordBatch(self.topic, self.index, offs, tss, keys, vals, hdrs)

    def close(self) -> None:
        for seg in self.segments:
            seg.storage.close()


class _Placed(Sequence[tuple[int, int]]):
    """Where ``produce`` put ``n`` records on partition 0 from offset ``base`` on: the list
    of (partition, offset) it returns, each pair made only when read."""

    __slots__ = ("base", "n")

    def __init__(self, base: int, n: int) -> None:
        self.base = base
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [(0, self.base + j) for j in range(*i.indices(self.n))]
        if i < 0:
            i += self.n
        if not 0 <= i < self.n:
            raise IndexError(i)
        return 0, self.base + i

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return zip(itertools.repeat(0, self.n), range(self.base, self.base + self.n))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, (str, bytes)):
            return NotImplemented
        return len(other) == self.n and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]

    def __add__(self, other: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
        return list(self) + list(other)

    def __repr__(self) -> str:
        return repr(list(self))


class _Topic:
    """A topic's metadata, partitions and partitioner state."""

    __slots__ = ("info", "partitions", "dir", "partitioner", "policy")

    def __init__(self, info: TopicInfo, partitions: list[_Partition], directory: Path | None,
                 policy: TopicPolicy) -> None:
        self.info = info
        self.partitions = partitions
        self.dir = directory
        self.partitioner = Partitioner()
        self.policy = policy


class EmbeddedLog(Log):
    """Partitioned, append-only topics in one process, on disk under ``path`` or in memory
    (``path=None``). See the module docstring for layout and guarantees.

    ``segment_bytes``: roll to a new segment file past this size. ``index_interval``: one
    sparse index entry per that many records. ``check_crcs``: also verify record CRCs on every
    fetch (the open scan always verifies the last segment). ``max_fetch_bytes``: the most one
    segment read brings in at once.
    """

    def __init__(self, path: Path | str | None, fsync: bool = False, *,
                 segment_bytes: int = DEFAULT_SEGMENT_BYTES,
                 index_interval: int = DEFAULT_INDEX_INTERVAL,
                 check_crcs: bool = False,
                 max_fetch_bytes: int = DEFAULT_MAX_FETCH_BYTES,
                 defaults: Mapping[str, str] | None = None,
                 retention_check_ms: int | None = DEFAULT_CHECK_INTERVAL_MS) -> None:
        self._path = Path(path) if path is not None else None
        # Broker-level topic defaults (log.retention.ms, log.cleanup.policy, ...).
        self._defaults = dict(defaults or {})
        self._cleaner = LogCleaner(self, retention_check_ms) if retention_check_ms else None
        self._cleaning: asyncio.Task | None = None
        self._fsync = fsync
        self._segment_bytes = segment_bytes
        self._index_interval = index_interval
        self._check_crcs = check_crcs
        self._max_fetch_bytes = max_fetch_bytes
        self._topics: dict[str, _Topic] = {}
        self._groups: dict[str, dict[str, dict[int, int]]] = {}
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._version = 0  # bumped when topics appear or vanish (consumers re-assign)
        self._closed = False
        self._broken: str | None = None  # why the log refuses writes until reopened
        self._lock_fd = -1
        if self._path is not None:
            self._open_dir(self._path)

    @property
    def path(self) -> Path | None:
        return self._path

    # -- opening ----------------------------------------------------------------------

    def _open_dir(self, path: Path) -> None:
        for sub in ("topics", "groups", "trash"):
            (path / sub).mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(path / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = -1
            raise RuntimeError(f"embedded log at {path} is open in another process or instance")
        for leftover in (path / "trash").iterdir():
            shutil.rmtree(leftover, ignore_errors=True)
        for tdir in sorted((path / "topics").iterdir()):
            if not tdir.is_dir():
                continue
            meta = tdir / "meta.json"
            try:
                m = json.loads(read_file(meta))
                info = TopicInfo(m["name"], int(m["partitions"]), int(m["replicas"]),
                                 tuple((str(k), str(v)) for k, v in m["config"]))
            except (OSError, ValueError, KeyError, TypeError) as e:
                # A create that died before its metadata was written: nothing was acked.
                logger.warning("embedded log: dropping topic directory %s without valid "
                               "metadata (%s)", tdir, e)
                self._trash(tdir)
                continue
            parts = []
            policy = self._policy(info)
            for p in range(info.partitions):
                pdir = tdir / str(p)
                pdir.mkdir(exist_ok=True)
                part = _Partition(self, info.name, p, pdir, policy)
                part.load()
                parts.append(part)
            self._topics[info.name] = _Topic(info, parts, tdir, policy)
        for gfile in (path / "groups").glob("*.json"):
            try:
                g = json.loads(read_file(gfile))
                offsets: dict[str, dict[int, int]] = {}
                for topic, p, off in g["offsets"]:
                    offsets.setdefault(str(topic), {})[int(p)] = int(off)
                self._groups[str(g["group"])] = offsets
            except (OSError, ValueError, KeyError, TypeError) as e:
                logger.warning("embedded log: ignoring unreadable group file %s (%s)", gfile, e)

    def _trash(self, directory: Path) -> None:
        assert self._path is not None
        target = self._path / "trash" / f"{directory.name}.{uuid.uuid4().hex}"
        os.replace(directory, target)
        if self._fsync:
            fsync_dir(directory.parent)
        shutil.rmtree(target, ignore_errors=True)

    # -- topics -----------------------------------------------------------------------

    def _policy(self, info: TopicInfo) -> TopicPolicy:
        return TopicPolicy.of(dict(info.config), self._defaults)

    def topic_policies(self) -> dict[str, TopicPolicy]:
        """Each topic's retention and cleanup settings (for the cleaner)."""
        return {name: t.policy for name, t in self._topics.items()}

    def partitions_of(self, topic: str) -> list[_Partition]:
        t = self._topics.get(topic)
        return list(t.partitions) if t is not None else []

    async def delete_records(self, topic: str, offsets: dict[int, int]) -> None:
        """Delete the closed segments wholly before ``offsets[p]`` (Kafka's DeleteRecords,
        by whole segments: the log start moves to the first segment still needed)."""
        self._check_open()
        t = self._topics.get(topic)
        if t is None:
            return
        for p, offset in offsets.items():
            if not 0 <= p < len(t.partitions):
                continue
            part = t.partitions[p]
            closed = part.segments[:-1]
            n = 0
            while n < len(closed) and closed[n].next_offset <= offset:
                n += 1
            if n:
                part.delete_oldest(closed[:n])

    async def apply_retention(self, now_ms: int | None = None) -> int:
        """Delete the segments past their topic's retention now (the cleaner does it every
        ``retention_check_ms``); returns how many were deleted."""
        self._check_open()
        return await LogCleaner(self).clean(now_ms)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("embedded log is closed")

    def _topic(self, name: str) -> _Topic:
        t = self._topics.get(name)
        if t is None:
            raise UnknownTopicError(name)
        return t

    def _partition(self, topic: str, partition: int) -> _Partition:
        parts = self._topic(topic).partitions
        if not 0 <= partition < len(parts):
            raise UnknownTopicError(f"{topic}-{partition}")
        return parts[partition]

    async def create_topic(self, name: str, partitions: int = 1, replicas: int = 1,
                           config: dict[str, str] | None = None) -> TopicInfo:
        self._check_open()
        if name in self._topics:
            raise TopicExistsError(f"Topic '{name}' already exists.")
        validate_topic_name(name)
        if partitions < 1:
            raise ValueError("Number of partitions must be larger than 0.")
        if replicas < 1:
            raise ValueError("Replication factor must be larger than 0.")
        info = TopicInfo(name, partitions, replicas,
                         tuple(sorted((str(k), str(v)) for k, v in (config or {}).items())))
        tdir = None
        if self._path is not None:
            tdir = self._path / "topics" / name
            if tdir.exists():  # leftovers of a create that died before writing metadata
                shutil.rmtree(tdir)
            for p in range(partitions):
                (tdir / str(p)).mkdir(parents=True)
            meta = {"name": name, "partitions": partitions, "replicas": replicas,
                    "config": [list(kv) for kv in info.config]}
            atomic_write(tdir / "meta.json", json.dumps(meta).encode(), self._fsync)
            if self._fsync:
                fsync_dir(tdir.parent)
        policy = self._policy(info)
        parts = [_Partition(self, name, p, tdir / str(p) if tdir is not None else None, policy)
                 for p in range(partitions)]
        self._topics[name] = _Topic(info, parts, tdir, policy)
        self._version += 1
        self._wake(name)
        return info

    async def delete_topic(self, name: str) -> None:
        self._check_open()
        t = self._topic(name)
        for part in t.partitions:
            part.close()
        del self._topics[name]
        if t.dir is not None:
            self._trash(t.dir)
        # Offsets of a deleted topic must not apply to a new topic of the same name.
        for group, offsets in self._groups.items():
            if offsets.pop(name, None) is not None:
                self._save_group(group)
        self._version += 1
        self._wake(name)

    async def list_topics(self) -> dict[str, TopicInfo]:
        return {name: t.info for name, t in self._topics.items()}

    async def describe_topic(self, name: str) -> TopicInfo | None:
        t = self._topics.get(name)
        return t.info if t is not None else None

    # -- produce / fetch --------------------------------------------------------------

    async def produce(self, topic: str, records: Sequence[ProducerRecord]
                      ) -> list[tuple[int, int]]:
        self._check_open()
        if self._broken is not None:
            raise OSError(f"embedded log refuses writes: {self._broken}; restart the server")
        if self._cleaner is not None and (self._cleaning is None or self._cleaning.done()):
            # Started with the first write (again in a new event loop: asyncio.run cancels
            # what was left of the last one): the log has no start of its own.
            self._cleaning = asyncio.get_running_loop().create_task(self._cleaner.run())
        t = self._topic(topic)
        n = len(records)
        if not n:
            return []
        now_ms = time.time_ns() // 1_000_000
        parts = t.partitions
        if len(parts) == 1:
            if type(records) is not RecordColumns:  # (which have no partitions of their own)
                for r in records:
                    if r.partition:
                        raise ValueError(f"Invalid partition given with record: {r.partition} "
                                         "is not in the range [0...1).")
            part = parts[0]
            mark = part.mark()
            try:
                base = part.append(records, now_ms)
                if self._fsync:
                    part.sync()
            except BaseException:
                self._undo(t, [(part, mark)])
                raise
            # (A source's batch of thousands: its writer seldom looks at where each went, and
            # a tuple per record would cost more than framing them.)
            result = _Placed(base, n) if type(records) is RecordColumns else \
                list(zip(itertools.repeat(0, n), range(base, base + n)))
        else:
            assigned = t.partitioner.assign(records, len(t.partitions))
            groups: list[list[ProducerRecord]] = [[] for _ in parts]
            for r, p in zip(records, assigned):
                groups[p].append(r)
            nexts = [0] * len(parts)
            marks = [(parts[p], parts[p].mark()) for p, g in enumerate(groups) if g]
            try:
                for p, g in enumerate(groups):
                    if g:
                        nexts[p] = parts[p].append(g, now_ms)
                if self._fsync:
                    for p, g in enumerate(groups):
                        if g:
                            parts[p].sync()
            except BaseException:
                self._undo(t, marks)
                raise
            result = []
            ap = result.append
            for p in assigned:
                ap((p, nexts[p]))
                nexts[p] += 1
        self._wake(topic)
        return result

    def _undo(self, topic: _Topic, marks: list[tuple[_Partition, tuple]]) -> None:
        """A produce failed: take back what it wrote to every partition, so a produce is
        all or nothing (no consumer ran in between: produce does not yield) and the client's
        error means the records are not in the log. With fsync on, a failed fsync counts as
        a failed write: Linux may have dropped the dirty pages it could not write."""
        for part, mark in marks:
            try:
                part.rollback(mark)
            except OSError:
                # The segment cannot even be cut back: close the log rather than append
                # after a torn record (the scan at the next open cuts the tail off again).
                logger.exception("embedded log: cannot roll back a failed write to %s-%d; "
                                 "refusing further writes", topic.info.name, part.index)
                self._broken = f"a failed write to {topic.info.name}-{part.index} could not be rolled back"
                raise

    def _wake(self, topic: str) -> None:
        waiters = self._waiters.get(topic)
        if waiters:
            for ev in waiters:
                ev.set()

    async def fetch(self, topic: str, partition: int, offset: int,
                    max_records: int = 10000) -> RecordBatch:
        self._check_open()
        return self._partition(topic, partition).read(offset, max_records)

    async def end_offsets(self, topic: str) -> list[int]:
        return [p.end for p in self._topic(topic).partitions]

    async def begin_offsets(self, topic: str) -> list[int]:
        return [p.begin for p in self._topic(topic).partitions]

    async def truncate(self, topic: str, partition: int, offset: int) -> int:
        """Cut a partition back so that its end offset is ``offset``: records at or after
        it are removed and the next record produced gets ``offset``. Returns how many were
        removed (0 when the partition already ends at or before ``offset``).

        An exactly-once writer uses it when it restarts, to drop output of a batch that never
        committed (see ``streamsql.runtime.task``); readers positioned past ``offset`` would
        miss what is written again there, so such topics are read only up to committed
        offsets. Raises ValueError for an offset before the partition's first record."""
        self._check_open()
        part = self._partition(topic, partition)
        if offset >= part.end:
            return 0
        if offset < part.begin:
            raise ValueError(f"cannot truncate {topic}-{partition} to {offset}: it begins at "
                             f"{part.begin}")
        removed = part.truncate(offset)
        logger.info("embedded log: truncated %s-%d to offset %d (%d records removed)",
                    topic, partition, offset, removed)
        return removed

    # -- compaction -------------------------------------------------------------------

    async def compact(self, topic: str) -> int:
        """Rewrite a ``cleanup.policy=compact`` topic keeping the latest record of each key
        (tombstones included; records with null keys are kept), offsets unchanged. Returns
        the number of records removed."""
        self._check_open()
        t = self._topic(topic)
        if "compact" not in dict(t.info.config).get("cleanup.policy", ""):
            raise ValueError(f"Topic '{topic}' does not have cleanup.policy=compact")
        removed = 0
        for part in t.partitions:
            removed += self._compact_partition(part)
        return removed

    def _read_segment(self, part: _Partition, seg: Segment) -> RecordBatch:
        b = RecordBatch(part.topic, part.index)
        b.headers = seg.read_all(b.offsets, b.timestamps, b.keys, b.values)
        return b

    def _compact_partition(self, part: _Partition) -> int:
        latest: dict[bytes, int] = {}
        for seg in part.segments:
            b = self._read_segment(part, seg)
            for k, off in zip(b.keys, b.offsets):
                if k is not None:
                    latest[k] = off
        removed = 0
        interval = self._index_interval
        last_i = len(part.segments) - 1
        for i, seg in enumerate(part.segments):
            b = self._read_segment(part, seg)
            keep = [j for j, (k, off) in enumerate(zip(b.keys, b.offsets))
                    if k is None or latest[k] == off]
            if len(keep) == len(b.offsets):
                continue
            removed += len(b.offsets) - len(keep)
            hdrs = [b.headers[j] for j in keep] if b.headers is not None else None
            new = Segment(seg.base, seg.storage, seg.path)
            data = encode_columns([b.offsets[j] for j in keep], [b.timestamps[j] for j in keep],
                                  [b.keys[j] for j in keep], [b.values[j] for j in keep],
                                  hdrs, interval, new.idx_off, new.idx_pos)
            new.size = len(data)
            new.count = len(keep)
            new.next_offset = seg.next_offset  # the segment still covers its offset range
            new.countdown = (-len(keep)) % interval
            if seg.path is None:
                new.storage = MemoryStorage(data)
            else:
                # Per segment atomic: a crash leaves each segment either old or compacted,
                # and either is correct because dropped records have newer versions.
                atomic_write(seg.path, data, self._fsync)
                seg.storage.close()
                new.storage = FileStorage(seg.path)
                if i != last_i:
                    new.write_index(seg.path.with_suffix(".index"), self._fsync)
            part.segments[i] = new
        return removed

    # -- groups -----------------------------------------------------------------------

    async def committed(self, group: str, topic: str) -> dict[int, int]:
        return dict(self._groups.get(group, {}).get(topic, {}))

    def _group_file(self, group: str) -> Path:
        assert self._path is not None
        name = quote(group, safe="")
        if len(name) > 200 or name.startswith("."):
            name = "g-" + hashlib.sha256(group.encode()).hexdigest()
        return self._path / "groups" / (name + ".json")

    def _save_group(self, group: str) -> None:
        if self._path is None:
            return
        offsets = self._groups.get(group, {})
        doc = {"group": group,
               "offsets": [[t, p, o] for t, po in sorted(offsets.items())
                           for p, o in sorted(po.items())]}
        atomic_write(self._group_file(group), json.dumps(doc).encode(), self._fsync)

    async def delete_group(self, group: str) -> None:
        self._check_open()
        if self._groups.pop(group, None) is not None and self._path is not None:
            self._group_file(group).unlink(missing_ok=True)

    def commit_offsets(self, group: str, offsets: dict[tuple[str, int], int]) -> None:
        """Commit next-offsets for a group (what ``Consumer.commit`` does)."""
        self._check_open()
        g = self._groups.setdefault(group, {})
        for (topic, p), off in offsets.items():
            g.setdefault(topic, {})[p] = off
        self._save_group(group)

    def consumer(self, group: str, topics: Iterable[str], listener: RebalanceListener | None = None,
                 reset: str = "earliest") -> "EmbeddedConsumer":
        self._check_open()
        return EmbeddedConsumer(self, group, topics, listener, reset)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        cleaning = self._cleaning
        if cleaning is not None and not cleaning.done() and not cleaning.get_loop().is_closed():
            cleaning.cancel()
        for t in self._topics.values():
            for part in t.partitions:
                part.close()
        for waiters in self._waiters.values():
            for ev in waiters:
                ev.set()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = -1


class EmbeddedConsumer(Consumer):
    """The single member of a group: assigned every partition of its topics (re-assigned
    when topics are created or deleted), polling them round robin. The listener hears of
    (re)assignments at the poll that first sees them."""

    def __init__(self, log: EmbeddedLog, group: str, topics: Iterable[str],
                 listener: RebalanceListener | None = None, reset: str = "earliest") -> None:
        self._log = log
        self._group = group
        self._listener = listener
        self._latest = reset == "latest"
        self._notified: set[tuple[str, int]] = set()
        self._first_assignment = True
        self._woken = False
        self._topics = tuple(dict.fromkeys(topics))
        self._event = asyncio.Event()
        self._positions: dict[tuple[str, int], int] = {}
        self._assigned: list[tuple[tuple[str, int], _Partition]] = []
        self._version = -1
        self._rr = 0
        self._closed = False
        self._paused: set[tuple[str, int]] = set()
        for t in self._topics:
            log._waiters.setdefault(t, set()).add(self._event)

    def _refresh(self) -> None:
        log = self._log
        if self._version == log._version:
            return
        self._version = log._version
        assigned = []
        for name in self._topics:
            t = log._topics.get(name)
            if t is not None:
                for part in t.partitions:
                    assigned.append(((name, part.index), part))
        self._assigned = assigned
        live = {tp for tp, _ in assigned}
        for tp in [tp for tp in self._positions if tp not in live]:
            del self._positions[tp]
        self._paused &= live

    def assignment(self) -> set[tuple[str, int]]:
        self._refresh()
        return {tp for tp, _ in self._assigned}

    def position(self, topic: str, partition: int) -> int:
        """The next offset this consumer will read from a partition."""
        self._refresh()
        return self._position((topic, partition), self._log._partition(topic, partition))

    def seek(self, topic: str, partition: int, offset: int) -> None:
        """Read a partition from ``offset`` on at the next poll."""
        self._positions[(topic, partition)] = offset

    def progress(self, topic: str, partition: int) -> tuple[int, int] | None:
        part = self._log._topics.get(topic)
        if part is None or partition >= len(part.partitions):
            return None
        p = part.partitions[partition]
        return self._position((topic, partition), p), p.end

    def pause(self, partitions: Iterable[tuple[str, int]]) -> None:
        self._paused.update(partitions)

    def resume(self, partitions: Iterable[tuple[str, int]]) -> None:
        self._paused.difference_update(partitions)
        self._event.set()  # a poll waiting now may have records to return

    def _position(self, tp: tuple[str, int], part: _Partition) -> int:
        pos = self._positions.get(tp)
        if pos is None:
            pos = self._log._groups.get(self._group, {}).get(tp[0], {}).get(tp[1])
            if pos is None:
                pos = part.end if self._latest else part.begin
            self._positions[tp] = pos
        return pos

    def _collect(self, max_records: int) -> list[RecordBatch]:
        self._refresh()
        assigned = self._assigned
        n = len(assigned)
        batches: list[RecordBatch] = []
        remaining = max_records
        positions = self._positions
        paused = self._paused
        for i in range(n):
            tp, part = assigned[(self._rr + i) % n]
            if paused and tp in paused:
                continue
            pos = positions.get(tp)
            if pos is None:
                pos = self._position(tp, part)
            if pos < part.begin:
                # Retention deleted the records at the position: auto.offset.reset says
                # where to go on, as after Kafka's out-of-range fetch.
                pos = positions[tp] = part.end if self._latest else part.begin
                logger.info("group %s: offset of %s-%d deleted by retention; resetting to %d",
                            self._group, tp[0], tp[1], pos)
            if pos >= part.end:
                continue
            b = part.read(pos, remaining)
            if b.offsets:
                batches.append(b)
                positions[tp] = b.offsets[-1] + 1
                remaining -= len(b.offsets)
                if remaining <= 0:
                    break
        if n:
            self._rr = (self._rr + 1) % n
        return batches

    async def poll(self, max_records: int = 10000, timeout: float = 0.5) -> list[RecordBatch]:
        if self._closed:
            raise RuntimeError("consumer is closed")
        self._log._check_open()
        if self._listener is not None:
            await self._notify()
        batches = self._collect(max_records)
        if batches or timeout <= 0:
            return batches
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            # No await between the empty collect and clear(): a produce cannot slip between.
            self._event.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            try:
                await asyncio.wait_for(self._event.wait(), remaining)
            except TimeoutError:
                return []
            if self._closed or self._log._closed or self._woken:
                self._woken = False
                return []
            if self._listener is not None:
                await self._notify()
            batches = self._collect(max_records)
            if batches:
                return batches

    async def _notify(self) -> None:
        assert self._listener is not None
        now = self.assignment()
        gone = self._notified - now
        new = now - self._notified
        if gone:
            self._notified -= gone
            await self._listener.revoked(gone)
        if new or self._first_assignment:
            # An empty first assignment is reported too: the stage is ready, with nothing.
            self._first_assignment = False
            self._notified |= new
            await self._listener.assigned(new)

    def wakeup(self) -> None:
        """Make a waiting ``poll`` return (with what it has: nothing)."""
        self._woken = True
        self._event.set()

    async def commit(self, offsets: dict[tuple[str, int], int],
                     metadata: dict[tuple[str, int], str] | None = None) -> None:
        # (No metadata: on one process a task's own state carries what it would say.)
        self._log.commit_offsets(self._group, offsets)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for t in self._topics:
            waiters = self._log._waiters.get(t)
            if waiters is not None:
                waiters.discard(self._event)
                if not waiters:
                    del self._log._waiters[t]
        self._event.set()

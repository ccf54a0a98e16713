"""A task's state: one RocksDB instance holding its stores, their changelogs, and commits.

Life of a task (one query, one source partition)::

    state = await TaskState.open(dir, [KeyValueStoreSpec("agg", changelog=...)],
                                 log=log, partition=p, partitions=n)
    offsets = state.committed_offsets()        # where to resume the source
    ... per batch:
        store = state.kv("agg"); store.get(...); store.put(...)     # read-your-writes
        await state.commit({(topic, p): next_offset}, extra={...})
    state.close()

``commit`` is the exactly-once point: it (1) expires windows past retention, (2) sends every
store's batch writes to its changelog, one produce call per changelog, and waits for the Log's
acknowledgement, then (3) writes, in ONE RocksDB WriteBatch, the state changes, each store's
changelog position, the source offsets, the caller's extra data and a commit number. A crash
anywhere leaves RocksDB at the previous commit or at this one, never in between.

A crash between (2) and (3) leaves records in the changelog past the committed position. What
they mean depends on who owns the truth (``uncommitted_tail``):

* ``"revert"`` (the embedded log; the default): the local RocksDB commit is the commit point,
  so those records belong to a batch that never committed and will be processed again. On
  open they are reverted: for each key they touch, the committed value (or a tombstone) is
  appended, so the changelog again describes the committed state (and a later restore from
  offset 0, or compaction, agrees with it).
* ``"replay"`` (Kafka, where transactions hide aborted writes from the restoring reader, or
  at-least-once): records past the local checkpoint are valid, written e.g. by another node
  that owned the task meanwhile; on open they are replayed into the store.

Under a Kafka transaction spanning several batches, ``seal`` takes the batch as of the
transaction's end (its changelog records flushed into it) and ``commit_sealed`` writes just
that once the transaction committed: what the task processed meanwhile (the next
transaction's) stays in the batch.

Restore on open, per store with a changelog: no local checkpoint (new or deleted directory):
replay the partition from its beginning; checkpoint behind the changelog end: revert or replay
the tail as above (a local checkpoint means the restore skips what it already has);
checkpoint past the changelog end (topic recreated or truncated): "revert" re-publishes the
local state, "replay" wipes the store and restores from the beginning. Restore writes RocksDB
in chunks, each with its new position, so an interrupted restore resumes where it stopped.
"""
from __future__ import annotations

import asyncio
import logging
import shutil
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Mapping, Sequence

import orjson
import rocksdict

from streamsql.runtime.log.base import Log

from .changelog import ChangelogPartition, ensure_changelog_topic
from .checkpoint import (COMMIT_KEY, EXTRA_KEY, META_CF, OFFSETS_KEY, encode_offsets,
                         encode_u64, position_key, read_checkpoint, restoring_key, snapshot,
                         stream_time_key)
from .keys import encode_ts
from .rocksdb import (RocksDBKeyValueStore, RocksDBSessionStore, RocksDBWindowStore, _Store,
                      _TimedStore, column_families, make_store)
from .store import StateStore, StoreSpec

__all__ = ["RestoreStats", "RocksDBConfig", "SealedBatch", "TaskState", "UncommittedTail"]

logger = logging.getLogger(__name__)

UncommittedTail = Literal["revert", "replay"]


@dataclass(frozen=True)
class RocksDBConfig:
    """RocksDB tuning for one task's instance. ``block_cache``: a ``rocksdict.Cache`` to share
    among tasks (else each task gets its own of ``block_cache_bytes``). ``sync``: fsync the
    WAL at every commit (survives power loss; kill -9 is survived either way, the WAL is
    written before ``commit`` returns). ``max_total_wal_bytes``: the WAL size past which the
    column families holding old WAL files are flushed, so the WAL stays bounded."""

    write_buffer_bytes: int = 16 * 1024 * 1024
    max_write_buffers: int = 3
    block_cache_bytes: int = 32 * 1024 * 1024
    block_cache: rocksdict.Cache | None = None
    bloom_bits_per_key: int = 10
    sync: bool = False
    max_total_wal_bytes: int = 64 * 1024 * 1024
    # Bounds the memtables of every instance given it (charged to the block cache when made
    # with it): else each instance's grow with the keys written, up to its write buffers.
    write_buffer_manager: rocksdict.WriteBufferManager | None = None


    def options(self, cache: rocksdict.Cache) -> rocksdict.Options:
        o = rocksdict.Options(raw_mode=True)
        o.create_if_missing(True)
        o.create_missing_column_families(True)
        o.set_write_buffer_size(self.write_buffer_bytes)
        o.set_max_write_buffer_number(self.max_write_buffers)
        if self.write_buffer_manager is not None:
            o.set_write_buffer_manager(self.write_buffer_manager)
        # A task's stores are column families of one instance sharing one WAL, and a WAL file
        # goes only once every family has flushed what it holds: a family written rarely (the
        # meta family, a small store) kept every WAL file alive, growing the state directory
        # by the whole write volume (measured: 1.7 GB of WAL after 5M updates for 10 MB of
        # data). Past this size RocksDB flushes the families holding the oldest WAL back.
        o.set_max_total_wal_size(self.max_total_wal_bytes)
        # Expiry and tombstone-heavy stores: compact files that are mostly deletes.
        o.add_compact_on_deletion_collector_factory(1000, 500, 0.5)
        t = rocksdict.BlockBasedOptions()
        t.set_block_cache(cache)
        if self.bloom_bits_per_key > 0:
            t.set_bloom_filter(self.bloom_bits_per_key, False)
        o.set_block_based_table_factory(t)
        return o


@dataclass(frozen=True)
class SealedBatch:
    """A task's batch as of ``TaskState.seal``: each store's writes (primary key -> stored
    bytes, None deleted), changelog position and observed stream time then."""

    state: "TaskState"
    writes: dict[str, dict[bytes, bytes | None]]
    positions: dict[str, int]
    stream_times: dict[str, int]


@dataclass(frozen=True)
class RestoreStats:
    """What opening did to one store: ``replayed`` changelog records applied from offset
    ``from_offset`` to ``to_offset``; ``reverted`` compensating records appended for an
    uncommitted tail; ``republished`` local records appended to a changelog that was behind;
    ``wiped`` whether local state was thrown away first."""

    store: str
    from_offset: int
    to_offset: int
    replayed: int = 0
    reverted: int = 0
    republished: int = 0
    wiped: bool = False
    seconds: float = 0.0


class TaskState:
    """The stores of one task in one RocksDB instance, with their changelogs and commits.
    Build it with ``await TaskState.open(...)``; see the module docstring."""

    def __init__(self, path: Path, db: rocksdict.Rdict, cache: rocksdict.Cache,
                 stores: dict[str, _Store], changelogs: dict[str, ChangelogPartition],
                 log: Log | None, partition: int, config: RocksDBConfig) -> None:
        self._path = path
        self._db = db
        self._cache = cache
        self._stores = stores
        self._changelogs = changelogs
        self._timed = [s for s in stores.values() if isinstance(s, _TimedStore)]
        self._log = log
        self._partition = partition
        self._config = config
        self._meta = db.get_column_family(META_CF)
        self._meta_handle = db.get_column_family_handle(META_CF)
        self._write_opts = rocksdict.WriteOptions()
        self._write_opts.sync = config.sync
        ck = read_checkpoint(self._meta, list(stores))
        self._commit_id = ck.commit_id
        self._offsets: dict[tuple[str, int], int] = dict(ck.source_offsets)
        self._extra: Any = ck.extra
        self._checkpointed = dict(ck.changelog_positions)
        for name, s in stores.items():
            s.position = ck.changelog_positions.get(name, 0)
            if isinstance(s, _TimedStore):
                s.set_observed(ck.stream_times[name])
        self.restore_stats: dict[str, RestoreStats] = {}
        # Told (store, from offset, offset restored up to, end offset) as a restore goes,
        # once per chunk (see ``open``).
        self._on_restore: Callable[[str, int, int, int], None] | None = None
        self._closed = False

    # -- opening ----------------------------------------------------------------------

    @classmethod
    async def open(cls, path: str | Path, stores: Sequence[StoreSpec], *,
                   log: Log | None = None, partition: int = 0, partitions: int = 1,
                   uncommitted_tail: UncommittedTail = "revert",
                   config: RocksDBConfig | None = None,
                   on_restore: Callable[[str, int, int, int], None] | None = None) -> "TaskState":
        """Open (creating as needed) the task's RocksDB instance at ``path`` with ``stores``,
        create missing changelog topics (``partitions`` partitions, compacted) and restore
        from them (see the module docstring). ``log`` None: stores with a changelog are kept
        locally only. ``on_restore(store, from, at, end)`` is called as a store's restore
        starts and after each chunk of it (the progress ``GET /metrics`` shows)."""
        if uncommitted_tail not in ("revert", "replay"):
            raise ValueError(f"uncommitted_tail must be 'revert' or 'replay', "
                             f"not {uncommitted_tail!r}")
        config = config or RocksDBConfig()
        names = [s.name for s in stores]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate store names in {names}")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        cache = config.block_cache or rocksdict.Cache(config.block_cache_bytes)
        cfs = {META_CF}
        for spec in stores:
            cfs.update(column_families(spec))
        if (path / "CURRENT").exists():
            # RocksDB must open every column family it has, wanted or not.
            cfs.update(n for n in rocksdict.Rdict.list_cf(str(path)) if n != "default")
        db = rocksdict.Rdict(str(path), config.options(cache),
                             column_families={n: config.options(cache) for n in sorted(cfs)})
        objs: dict[str, _Store] = {}
        try:
            for spec in stores:
                objs[spec.name] = make_store(spec, db)
            changelogs: dict[str, ChangelogPartition] = {}
            if log is not None:
                for spec in stores:
                    if spec.changelog is not None:
                        await ensure_changelog_topic(log, spec.changelog, partitions,
                                                     partition)
                        changelogs[spec.name] = ChangelogPartition(log, spec.changelog,
                                                                   partition)
            state = cls(path, db, cache, objs, changelogs, log, partition, config)
            state._on_restore = on_restore
        except BaseException as e:
            # Every column family handle must go before RocksDB (and its LOCK) is released,
            # including those the traceback's frames hold: the directory is reopened later.
            for obj in objs.values():
                obj.close()
            objs.clear()
            db.close()
            traceback.clear_frames(e.__traceback__)
            raise
        try:
            await state._recover(uncommitted_tail)
            state._on_restore = None  # (restored: the caller's callback is not kept)
        except BaseException as e:
            state.close()
            # The traceback's frames hold column family handles, which keep RocksDB (and
            # its LOCK) alive; drop them so the directory can be reopened.
            traceback.clear_frames(e.__traceback__)
            raise
        return state

    async def _recover(self, policy: UncommittedTail) -> None:
        for name, cl in self._changelogs.items():
            store = self._stores[name]
            t0 = time.perf_counter()
            end = await cl.end()
            pos = self._checkpointed.get(name)
            if pos is None:
                stats = await self._replay(store, cl, await cl.begin(), end)
            elif self._meta.get(restoring_key(name)) is not None and pos <= end:
                stats = await self._replay(store, cl, pos, end)  # an interrupted restore
            elif pos == end:
                stats = RestoreStats(name, pos, end)
            elif pos < end:
                if policy == "revert":
                    stats = await self._revert_tail(store, cl, pos, end)
                else:
                    stats = await self._replay(store, cl, pos, end)
            elif policy == "revert":
                logger.warning("changelog %s partition %d ends at %d, before the local "
                               "checkpoint %d: re-publishing the local state of store %s",
                               cl.topic, cl.partition, end, pos, name)
                count = [0]
                new = await cl.produce_chunked(_counting(store.committed_items(), count))
                store.position = new if new >= 0 else end
                self._write_position(store)
                stats = RestoreStats(name, pos, store.position, republished=count[0])
            else:
                logger.warning("changelog %s partition %d ends at %d, before the local "
                               "checkpoint %d: wiping store %s and restoring it from the "
                               "changelog", cl.topic, cl.partition, end, pos, name)
                store.wipe()
                st = await self._replay(store, cl, await cl.begin(), end)
                stats = RestoreStats(name, st.from_offset, st.to_offset, replayed=st.replayed,
                                     wiped=True)
            self.restore_stats[name] = replace(stats, seconds=time.perf_counter() - t0)
            if stats.replayed or stats.reverted or stats.republished:
                logger.info("store %s: %s", name, self.restore_stats[name])

    async def _replay(self, store: _Store, cl: ChangelogPartition, start: int,
                      end: int) -> RestoreStats:
        """Apply changelog records [start, end) to the store, one WriteBatch per chunk."""
        n = 0
        mh = self._meta_handle
        pkey = position_key(store.name)
        rkey = restoring_key(store.name)
        wb = rocksdict.WriteBatch(raw_mode=True)
        wb.put(rkey, encode_u64(end), mh)
        self._db.write(wb, self._write_opts)
        progress = self._on_restore
        if progress is not None:
            progress(store.name, start, start, end)
        async for batch in cl.read(start, end):
            wb = rocksdict.WriteBatch(raw_mode=True)
            n += store.apply_changelog(wb, batch.keys, batch.values)
            wb.put(pkey, encode_u64(batch.offsets[-1] + 1), mh)
            self._db.write(wb, self._write_opts)
            if progress is not None:
                progress(store.name, start, batch.offsets[-1] + 1, end)
        store.position = end
        if isinstance(store, _TimedStore):
            store.observe_restored()
        self._write_position(store, restored=True)
        return RestoreStats(store.name, start, end, replayed=n)

    async def _revert_tail(self, store: _Store, cl: ChangelogPartition, start: int,
                           end: int) -> RestoreStats:
        """Append the committed value (or a tombstone) of every key the uncommitted records
        [start, end) touched."""
        keys: dict[bytes, None] = {}
        async for batch in cl.read(start, end):
            keys.update(dict.fromkeys(k for k in batch.keys if k is not None))
        logger.warning("changelog %s partition %d: %d records past the committed position "
                       "%d were never committed; reverting %d keys", cl.topic, cl.partition,
                       end - start, start, len(keys))
        new = await cl.produce_chunked((k, store.committed_raw(k)) for k in keys)
        store.position = new if new >= 0 else end
        self._write_position(store)
        return RestoreStats(store.name, start, store.position, reverted=len(keys))

    def _write_position(self, store: _Store, restored: bool = False) -> None:
        wb = rocksdict.WriteBatch(raw_mode=True)
        if restored:
            wb.delete(restoring_key(store.name), self._meta_handle)
        wb.put(position_key(store.name), encode_u64(store.position), self._meta_handle)
        if isinstance(store, _TimedStore):
            wb.put(stream_time_key(store.name), encode_ts(store.observed_stream_time),
                   self._meta_handle)
        self._db.write(wb, self._write_opts)
        self._checkpointed[store.name] = store.position

    # -- stores -----------------------------------------------------------------------

    def store(self, name: str) -> StateStore:
        """The store called ``name`` (KeyError if there is none)."""
        return self._stores[name]

    def kv(self, name: str) -> RocksDBKeyValueStore:
        """The key-value store called ``name``."""
        s = self._stores[name]
        if not isinstance(s, RocksDBKeyValueStore):
            raise TypeError(f"store {name} is not a key-value store")
        return s

    def window(self, name: str) -> RocksDBWindowStore:
        """The window store called ``name``."""
        s = self._stores[name]
        if not isinstance(s, RocksDBWindowStore):
            raise TypeError(f"store {name} is not a window store")
        return s

    def session(self, name: str) -> RocksDBSessionStore:
        """The session store called ``name``."""
        s = self._stores[name]
        if not isinstance(s, RocksDBSessionStore):
            raise TypeError(f"store {name} is not a session store")
        return s

    @property
    def stores(self) -> Mapping[str, StateStore]:
        return self._stores

    @property
    def path(self) -> Path:
        return self._path

    @property
    def partition(self) -> int:
        return self._partition

    # -- batches ----------------------------------------------------------------------

    async def flush(self) -> None:
        """Send every store's writes since the last flush to its changelog (latest value per
        key, tombstones for deletes), one produce call per changelog; returns once the Log
        acknowledged them. ``commit`` calls it; calling it earlier only sends sooner."""
        self._check_open()
        calls = []
        for name, cl in self._changelogs.items():
            store = self._stores[name]
            if store.has_unflushed:
                keys, values = store.take_unflushed()
                store.flushed_in_batch = True
                calls.append(self._produce(store, cl, keys, values))
        if len(calls) == 1:
            await calls[0]
        elif calls:
            await asyncio.gather(*calls)

    @staticmethod
    async def _produce(store: _Store, cl: ChangelogPartition, keys: list[bytes],
                       values: list[bytes | None]) -> None:
        store.position = await cl.produce(keys, values)

    async def prepare_commit(self) -> None:
        """Expire windows and flush changelogs: all of ``commit`` that writes to the Log
        (under Kafka transactions: what goes into the transaction before it commits)."""
        self._check_open()
        for s in self._timed:
            s.expire()
        await self.flush()

    async def commit(self, source_offsets: Mapping[tuple[str, int], int],
                     extra: Any = None) -> None:
        """Commit the batch: expire windows, flush changelogs, then write the state changes,
        changelog positions, ``source_offsets`` ((topic, partition) -> next offset to read;
        merged into the committed ones) and ``extra`` (JSON-compatible; None keeps the
        previous) in one atomic RocksDB write. If it raises, close the state and reopen it."""
        await self.prepare_commit()
        wb = rocksdict.WriteBatch(raw_mode=True)
        for s in self._stores.values():
            s.write_batch(wb)
        self._write_commit(wb, {s.name: s.position for s in self._stores.values()},
                           {s.name: s.observed_stream_time for s in self._timed},
                           source_offsets, extra)
        for s in self._stores.values():
            s.reset_batch()

    def seal(self) -> SealedBatch:
        """The batch as of now, for ``commit_sealed``: under a Kafka transaction, what the
        transaction that is ending holds, while the task goes on processing into its next
        batch (the next transaction's). The changelogs must be flushed (``prepare_commit``)."""
        self._check_open()
        changelogs = self._changelogs
        return SealedBatch(self, {n: s.seal(n in changelogs) for n, s in self._stores.items()},
                           {n: s.position for n, s in self._stores.items()},
                           {s.name: s.observed_stream_time for s in self._timed})

    def commit_sealed(self, sealed: SealedBatch, source_offsets: Mapping[tuple[str, int], int],
                      extra: Any = None) -> None:
        """``commit`` of the batch ``sealed`` (its changelog records already written):
        writes made since the seal stay in the batch, for a later commit."""
        self._check_open()
        if sealed.state is not self:
            raise ValueError("a batch sealed by another task state")
        wb = rocksdict.WriteBatch(raw_mode=True)
        for name, writes in sealed.writes.items():
            self._stores[name].write_batch(wb, writes)
        self._write_commit(wb, sealed.positions, sealed.stream_times, source_offsets, extra)
        for name, writes in sealed.writes.items():
            self._stores[name].forget_sealed(writes)

    def _write_commit(self, wb: rocksdict.WriteBatch, positions: Mapping[str, int],
                      stream_times: Mapping[str, int],
                      source_offsets: Mapping[tuple[str, int], int], extra: Any) -> None:
        """Write ``wb`` (the batch's state changes) with the changelog ``positions``, the
        ``stream_times``, offsets, extra and the next commit number, atomically."""
        mh = self._meta_handle
        for name in self._changelogs:
            wb.put(position_key(name), encode_u64(positions[name]), mh)
        for name, ts in stream_times.items():
            wb.put(stream_time_key(name), encode_ts(ts), mh)
        offsets = self._offsets
        if source_offsets:
            offsets = {**offsets, **source_offsets}
            wb.put(OFFSETS_KEY, encode_offsets(offsets), mh)
        if extra is not None:
            wb.put(EXTRA_KEY, orjson.dumps(extra), mh)
        wb.put(COMMIT_KEY, encode_u64(self._commit_id + 1), mh)
        self._db.write(wb, self._write_opts)
        # Committed: only now does the in-memory view move on.
        self._commit_id += 1
        self._offsets = offsets
        if extra is not None:
            self._extra = extra
        for name in self._changelogs:
            self._checkpointed[name] = positions[name]

    async def abort(self) -> None:
        """Discard the batch. Changelog records it already flushed are reverted (their keys'
        committed values appended), so the changelog still matches the committed state."""
        self._check_open()
        # Windowed stores' observed time may have moved with the discarded writes.
        ck = read_checkpoint(self._meta, [s.name for s in self._timed])
        for s in self._timed:
            s.reset_observed(ck.stream_times[s.name])
        for name, cl in self._changelogs.items():
            store = self._stores[name]
            if store.flushed_in_batch:
                keys = store.batch_keys()
                new = await cl.produce_chunked((k, store.committed_raw(k)) for k in keys)
                if new >= 0:
                    store.position = new
                    self._write_position(store)
            else:
                store.position = self._checkpointed.get(name, store.position)
        for s in self._stores.values():
            s.reset_batch()

    async def catch_up(self) -> int:
        """Apply what the changelogs gained since this state's position (a standby task
        following its active owner, which writes them: this state writes nothing); returns
        how many records were applied. A changelog that ends before the position (recreated)
        is restored afresh. Kafka's changelog end is its last stable offset: records of an
        open transaction wait for its commit."""
        self._check_open()
        applied = 0
        for name, cl in self._changelogs.items():
            store = self._stores[name]
            end = await cl.end()
            pos = self._checkpointed.get(name, 0)
            if pos == end:
                continue
            if pos > end:
                logger.warning("changelog %s partition %d ends at %d, before the standby's "
                               "position %d: wiping store %s and restoring it", cl.topic,
                               cl.partition, end, pos, name)
                store.wipe()
                pos = await cl.begin()
            applied += (await self._replay(store, cl, pos, end)).replayed
        return applied

    # -- committed data ---------------------------------------------------------------

    def committed_offsets(self) -> dict[tuple[str, int], int]:
        """(topic, partition) -> next source offset to read, as of the last commit."""
        return dict(self._offsets)

    def committed_extra(self) -> Any:
        """The ``extra`` of the last commit that gave one (None if none did)."""
        return self._extra

    def changelog_positions(self) -> dict[str, int]:
        """Store name -> the changelog offset its committed state covers up to (exclusive)."""
        return dict(self._checkpointed)

    @property
    def commit_id(self) -> int:
        """How many commits this task's state has had (0: none)."""
        return self._commit_id

    def snapshot(self, path: str | Path) -> None:
        """Copy the committed state to ``path`` (a new RocksDB directory, hard-linked)."""
        self._check_open()
        snapshot(self._db, path)

    # -- closing ----------------------------------------------------------------------

    def store_sizes(self) -> dict[str, tuple[int, int]]:
        """Each store's size as RocksDB estimates it: (keys, bytes in SST files and
        memtables), summed over its column families; empty once closed. Cheap property
        reads, for ``GET /metrics``."""
        if self._closed:
            return {}
        out: dict[str, tuple[int, int]] = {}
        for name, store in self._stores.items():
            keys = size = 0
            for cf, _ in store._column_families():
                keys += cf.property_int_value("rocksdb.estimate-num-keys") or 0
                size += (cf.property_int_value("rocksdb.total-sst-files-size") or 0) + \
                    (cf.property_int_value("rocksdb.cur-size-all-mem-tables") or 0)
            out[name] = (keys, size)
        return out

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("task state is closed")

    def close(self) -> None:
        """Close RocksDB. An uncommitted batch is discarded (as a crash would)."""
        if self._closed:
            return
        self._closed = True
        for s in self._stores.values():
            s.close()
        self._meta.close()
        self._meta = None  # type: ignore[assignment]
        self._meta_handle = None
        self._db.close()
        self._db = None  # type: ignore[assignment]

    def destroy(self) -> None:
        """Close and delete the task's RocksDB directory (changelog topics are kept)."""
        self.close()
        destroy_state_dir(self._path)


def _counting(items: Iterator[tuple[bytes, bytes]], count: list[int]
              ) -> Iterator[tuple[bytes, bytes]]:
    for item in items:
        count[0] += 1
        yield item


def destroy_state_dir(path: str | Path) -> None:
    """Delete a (closed) task state directory."""
    path = Path(path)
    if (path / "CURRENT").exists():
        try:
            rocksdict.Rdict.destroy(str(path), rocksdict.Options(raw_mode=True))
        except Exception as e:  # noqa: BLE001 - rmtree below removes whatever is left
            logger.debug("Rdict.destroy(%s): %s", path, e)
    shutil.rmtree(path, ignore_errors=True)

"""RocksDB-backed stores (rocksdict, raw mode: bytes keys and values as they are).

Each store owns one column family of its task's RocksDB instance (windowed stores own a second
one, their time index). Column families rather than key prefixes because: a store's keys are
the operator's own bytes (no prefix to build per call and strip per result); a WriteBatch still
spans all of them atomically (one WAL); each store can be dropped, compacted and tuned on its
own; and a scan of one store never walks another's tombstones.

Writes of the current batch live in a Python overlay (``key -> stored bytes``, None for a
delete) that every read consults first, so the operator reads its own writes; ``commit``
(``streamsql.state.task.TaskState``) moves the overlay into one WriteBatch and clears it. The
overlay is bounded by the batch, RocksDB holds everything else: nothing here keeps a Python
object per stored key.

Operators that work a batch at a time (the aggregate stage's record cache) read the keys
of a batch with ``get_many_raw`` (overlay first, then ONE RocksDB multi-get) and write
already-serialized bytes with ``put_many_raw``: each key is serialized once per batch, and
its changelog record at commit is those same bytes.

Range reads merge a RocksDB iterator with the overlay's keys in that range (kept sorted
lazily: the overlay only ever grows within a batch, so the keys added since the last range
read are the dict's tail).
"""
from __future__ import annotations

import struct
from bisect import bisect_left
from itertools import islice
from typing import Any, Iterator

import rocksdict

from .keys import MAX_TS, MIN_TS, encode_ts
from .store import (KeyValueStore, KeyValueStoreSpec, SessionStore, SessionStoreSpec,
                    StoreSpec, WindowStore, WindowStoreSpec)

__all__ = ["RocksDBKeyValueStore", "RocksDBSessionStore", "RocksDBWindowStore",
           "column_families"]


_MISSING = object()
_TS = struct.Struct(">Q")
_pack = _TS.pack
_unpack_from = _TS.unpack_from
_BIAS = 1 << 63
_SESSION_HI = b"\xff" * 16 + b"\x00"  # exclusive bound above every key || end || start


def column_families(spec: StoreSpec) -> tuple[str, ...]:
    """The column families a store uses (primary first)."""
    if isinstance(spec, KeyValueStoreSpec):
        return ("kv/" + spec.name,)
    if isinstance(spec, WindowStoreSpec):
        return ("window/" + spec.name, "window/" + spec.name + "/index")
    if isinstance(spec, SessionStoreSpec):
        return ("session/" + spec.name, "session/" + spec.name + "/index")
    raise TypeError(f"not a store spec: {spec!r}")


def _next_prefix(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with ``prefix`` (None: none is)."""
    p = prefix.rstrip(b"\xff")
    if not p:
        return None
    return p[:-1] + bytes((p[-1] + 1,))


def _db_items(cf: rocksdict.Rdict, lo: bytes | None, hi: bytes | None,
              reverse: bool) -> Iterator[tuple[bytes, bytes]]:
    """RocksDB (key, value) for lo <= key < hi."""
    if not reverse:
        if hi is None:
            return cf.items(from_key=lo)
        # Only the upper bound goes in ReadOptions: rocksdict 0.3's set_iterate_lower_bound
        # sets the upper bound instead; the lower bound is the seek.
        ro = rocksdict.ReadOptions()
        ro.set_iterate_upper_bound(hi)
        return _holding(cf.items(from_key=lo, read_opt=ro), ro)
    return _db_reverse(cf, lo, hi)


def _holding(it: Iterator[Any], ro: rocksdict.ReadOptions) -> Iterator[Any]:
    """``it``, keeping ``ro`` alive: a rocksdict iterator points into its ReadOptions' bound
    buffer without holding a reference (freed ReadOptions = garbage bound)."""
    yield from it


def _db_reverse(cf: rocksdict.Rdict, lo: bytes | None, hi: bytes | None
                ) -> Iterator[tuple[bytes, bytes]]:
    it = cf.items(backwards=True, from_key=hi) if hi is not None else cf.items(backwards=True)
    for k, v in it:
        if hi is not None and k >= hi:
            continue  # seek_for_prev lands on ``hi`` itself when it exists
        if lo is not None and k < lo:
            return
        yield k, v


def _merge(db_it: Iterator[tuple[bytes, bytes]], okeys: list[bytes],
           ov: dict[bytes, bytes | None]) -> Iterator[tuple[bytes, bytes]]:
    """Forward merge of RocksDB items with sorted overlay keys; the overlay wins, None in the
    overlay hides the key. Overlay values are read when yielded, so updates and deletes made
    while iterating are seen for keys not reached yet (keys inserted meanwhile may not be)."""
    oi = 0
    n = len(okeys)
    get = ov.get
    missing = _MISSING
    for k, v in db_it:
        while oi < n and okeys[oi] < k:
            ok = okeys[oi]
            oi += 1
            ovv = get(ok)
            if ovv is not None:
                yield ok, ovv
        if oi < n and okeys[oi] == k:
            oi += 1
        ovv = get(k, missing)
        if ovv is missing:
            yield k, v
        elif ovv is not None:
            yield k, ovv
    while oi < n:
        ok = okeys[oi]
        oi += 1
        ovv = get(ok)
        if ovv is not None:
            yield ok, ovv


def _merge_reverse(db_it: Iterator[tuple[bytes, bytes]], okeys: list[bytes],
                   ov: dict[bytes, bytes | None]) -> Iterator[tuple[bytes, bytes]]:
    """``_merge`` for descending streams (``okeys`` descending)."""
    oi = 0
    n = len(okeys)
    get = ov.get
    missing = _MISSING
    for k, v in db_it:
        while oi < n and okeys[oi] > k:
            ok = okeys[oi]
            oi += 1
            ovv = get(ok)
            if ovv is not None:
                yield ok, ovv
        if oi < n and okeys[oi] == k:
            oi += 1
        ovv = get(k, missing)
        if ovv is missing:
            yield k, v
        elif ovv is not None:
            yield k, ovv
    while oi < n:
        ok = okeys[oi]
        oi += 1
        ovv = get(ok)
        if ovv is not None:
            yield ok, ovv


class _Store:
    """A column family plus the current batch: the overlay and the keys not yet sent to the
    changelog. ``position`` is the next changelog offset this store's committed state
    covers (maintained by the task)."""

    __slots__ = ("spec", "_db", "_cf", "_cf_get", "_handle", "_overlay", "_unflushed",
                 "_sorted", "_dumps", "_loads", "position", "flushed_in_batch")

    def __init__(self, spec: StoreSpec, db: rocksdict.Rdict) -> None:
        self.spec = spec
        self._db = db
        self._overlay: dict[bytes, bytes | None] = {}
        self._unflushed: list[bytes] = []
        self._sorted: list[bytes] = []
        self._dumps = spec.values.dumps
        self._loads = spec.values.loads
        self.position = 0
        self.flushed_in_batch = False
        self._open_cfs()

    def _open_cfs(self) -> None:
        name = column_families(self.spec)[0]
        self._cf = self._db.get_column_family(name)
        self._cf_get = self._cf.get
        self._handle = self._db.get_column_family_handle(name)

    # -- batch ------------------------------------------------------------------------

    def _sorted_keys(self) -> list[bytes]:
        s = self._sorted
        ov = self._overlay
        n = len(s)
        if n != len(ov):
            # Keys are never removed from the overlay within a batch (a delete stores None),
            # so the keys added since the last sort are the dict's tail.
            s.extend(islice(ov, n, None))
            s.sort()
        return s

    def _iter_raw(self, lo: bytes | None, hi: bytes | None,
                  reverse: bool = False) -> Iterator[tuple[bytes, bytes]]:
        """(key, stored bytes) for lo <= key < hi, batch writes included."""
        db_it = _db_items(self._cf, lo, hi, reverse)
        ov = self._overlay
        if not ov:
            # Still merged: deletes and updates made while iterating must hide or replace
            # the keys not reached yet (a session merge removes what it finds).
            return _merge_reverse(db_it, [], ov) if reverse else _merge(db_it, [], ov)
        keys = self._sorted_keys()
        i = 0 if lo is None else bisect_left(keys, lo)
        j = len(keys) if hi is None else bisect_left(keys, hi)
        if i >= j:
            return _merge(db_it, [], ov) if not reverse else _merge_reverse(db_it, [], ov)
        okeys = keys[i:j]
        if reverse:
            okeys.reverse()
            return _merge_reverse(db_it, okeys, ov)
        return _merge(db_it, okeys, ov)

    # -- batched raw access (operators that touch RocksDB once per key per batch) ------

    def get_many_raw(self, pks: list[bytes]) -> list[bytes | None]:
        """The stored bytes of each primary key in ``pks`` (None: absent), batch writes
        included: the keys the batch has not written are read in ONE RocksDB multi-get."""
        ov = self._overlay
        if not ov:
            return self._cf_get(pks)
        missing = _MISSING
        got = [ov.get(k, missing) for k in pks]
        absent = [k for k, v in zip(pks, got) if v is missing]
        if not absent:
            return got
        found = iter(self._cf_get(absent))
        return [next(found) if v is missing else v for v in got]

    def put_many_raw(self, pks: list[bytes], values: list[bytes | None]) -> None:
        """Set each primary key to its already-serialized bytes (None deletes), in one call."""
        ov = self._overlay
        for k, v in zip(pks, values):
            ov[k] = v
        self._unflushed += pks

    def take_unflushed(self) -> tuple[list[bytes], list[bytes | None]]:
        """The changelog records owed since the last flush: the latest value of each key
        written (None for a delete), in first-write order; forgets them."""
        keys = list(dict.fromkeys(self._unflushed))
        self._unflushed = []
        ov = self._overlay
        return keys, [ov[k] for k in keys]

    @property
    def has_unflushed(self) -> bool:
        return bool(self._unflushed)

    def batch_keys(self) -> list[bytes]:
        """Every key written in the current batch."""
        return list(self._overlay)

    def committed_raw(self, key: bytes) -> bytes | None:
        """The committed stored bytes of a (primary) key, ignoring the batch."""
        return self._cf_get(key)

    def committed_items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every committed (primary key, stored bytes)."""
        return self._cf.items()

    # Readers outside the task (pull queries of a table computed from this store's states)
    # read its committed bytes, entries past retention left out (``_TimedStore``).

    def committed_bytes(self, pk: bytes) -> bytes | None:
        """The committed stored bytes of primary key ``pk`` (None: absent)."""
        return self._cf_get(pk)

    def committed_bytes_prefix(self, prefix: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        """Committed (primary key, stored bytes) of the keys starting with ``prefix`` (all
        when None), in key order."""
        return _db_items(self._cf, prefix or None, _next_prefix(prefix) if prefix else None, False)

    def write_batch(self, wb: rocksdict.WriteBatch,
                    writes: dict[bytes, bytes | None] | None = None) -> None:
        """Add the batch's writes (or ``writes``, a sealed batch's) to ``wb``."""
        h = self._handle
        for k, v in (self._overlay if writes is None else writes).items():
            if v is None:
                wb.delete(k, h)
            else:
                wb.put(k, v, h)

    def seal(self, changelog: bool) -> dict[bytes, bytes | None]:
        """The batch's writes as of now (a copy: later writes go on into the batch), for a
        commit of just these (``TaskState.seal``). With a ``changelog``, its records must
        have been flushed; without, there are none to owe."""
        if not changelog:
            self._unflushed = []
        elif self._unflushed:
            raise RuntimeError(f"store {self.spec.name}: sealing a batch with unflushed writes")
        return dict(self._overlay)

    def forget_sealed(self, sealed: dict[bytes, bytes | None]) -> None:
        """``sealed`` is committed to RocksDB: drop from the batch the writes it holds that
        were not made again since (reads find the same in RocksDB now)."""
        ov = self._overlay
        again = set(self._unflushed)  # (written since the seal)
        missing = _MISSING
        for k, v in sealed.items():
            if ov.get(k, missing) is v and k not in again:
                del ov[k]
        self._sorted = []  # (keys were removed: sorted again when next needed)

    def reset_batch(self) -> None:
        self._overlay = {}
        self._unflushed = []
        self._sorted = []
        self.flushed_in_batch = False

    def apply_changelog(self, wb: rocksdict.WriteBatch, keys: list[bytes | None],
                        values: list[bytes | None]) -> int:
        """Add restored changelog records to ``wb``; returns how many were applied."""
        h = self._handle
        n = 0
        for k, v in zip(keys, values):
            if k is None:
                continue
            if v is None:
                wb.delete(k, h)
            else:
                wb.put(k, v, h)
            n += 1
        return n

    def _column_families(self) -> list[tuple[rocksdict.Rdict, Any]]:
        return [(self._cf, self._handle)]

    def wipe(self) -> None:
        """Delete every committed entry (the batch must be empty)."""
        for cf, h in self._column_families():
            wb = rocksdict.WriteBatch(raw_mode=True)
            for k in cf.keys():
                wb.delete(k, h)
                if wb.len() >= 10000:
                    self._db.write(wb)
                    wb = rocksdict.WriteBatch(raw_mode=True)
            if not wb.is_empty():
                self._db.write(wb)

    def close(self) -> None:
        self._cf.close()
        self._cf = None  # type: ignore[assignment]
        self._cf_get = None  # type: ignore[assignment]
        self._handle = None
        self.reset_batch()


class RocksDBKeyValueStore(_Store, KeyValueStore):
    """A ``KeyValueStore`` in one column family; keys kept as given, values serialized by
    the spec's serde."""

    __slots__ = ()

    def get(self, key: bytes) -> Any | None:
        v = self._overlay.get(key, _MISSING)
        if v is _MISSING:
            v = self._cf_get(key)
        return None if v is None else self._loads(v)

    def put(self, key: bytes, value: Any) -> None:
        self._overlay[key] = None if value is None else self._dumps(value)
        self._unflushed.append(key)

    def delete(self, key: bytes) -> None:
        self._overlay[key] = None
        self._unflushed.append(key)

    def range(self, start: bytes | None = None, end: bytes | None = None,
              reverse: bool = False) -> Iterator[tuple[bytes, Any]]:
        loads = self._loads
        for k, v in self._iter_raw(start, end, reverse):
            yield k, loads(v)

    def prefix(self, prefix: bytes) -> Iterator[tuple[bytes, Any]]:
        return self.range(prefix or None, _next_prefix(prefix))

    # Readers outside the task (pull queries) see committed state only: a batch's writes
    # may still be rolled back (its transaction aborted, its node killed mid-commit).

    def committed_get(self, key: bytes) -> Any | None:
        """The committed value of ``key`` (the current batch's writes not included)."""
        v = self._cf_get(key)
        return None if v is None else self._loads(v)

    def committed_prefix(self, prefix: bytes | None) -> Iterator[tuple[bytes, Any]]:
        """Committed (key, value) of the keys starting with ``prefix`` (all when None), in
        key order."""
        loads = self._loads
        for k, v in _db_items(self._cf, prefix or None, _next_prefix(prefix) if prefix else None,
                              False):
            yield k, loads(v)


class _TimedStore(_Store):
    """Common to window and session stores: primary keys ``key || suffix`` whose suffix
    starts with the retention time (window start, session end), a local index CF of
    ``suffix || key``, observed stream time and expiry."""

    __slots__ = ("_idx", "_idx_handle", "_retention", "_observed", "_cutoff", "_expired_to",
                 "expired_dropped")

    SUFFIX = 8  # bytes of suffix after the user key

    def __init__(self, spec: WindowStoreSpec | SessionStoreSpec, db: rocksdict.Rdict) -> None:
        self._retention = spec.retention_ms
        self._observed = MIN_TS
        self._cutoff = MIN_TS - spec.retention_ms + 1
        self._expired_to = MIN_TS  # index keys below this were already expired
        self.expired_dropped = 0  # puts dropped because their time was already expired
        super().__init__(spec, db)

    def _open_cfs(self) -> None:
        super()._open_cfs()
        name = column_families(self.spec)[1]
        self._idx = self._db.get_column_family(name)
        self._idx_handle = self._db.get_column_family_handle(name)

    @property
    def observed_stream_time(self) -> int:
        return self._observed

    def set_observed(self, ts: int) -> None:
        """Set observed stream time (from a checkpoint or a restore)."""
        if ts > self._observed:
            self._observed = ts
            self._cutoff = ts - self._retention + 1

    def reset_observed(self, ts: int) -> None:
        """Put observed stream time back (to a committed value)."""
        self._observed = ts
        self._cutoff = ts - self._retention + 1

    def _observe(self, ts: int) -> None:
        self._observed = ts
        self._cutoff = ts - self._retention + 1

    def _time_of(self, pk: bytes) -> int:
        """The retention time of a primary key."""
        n = len(pk) - self.SUFFIX
        return _unpack_from(pk, n)[0] - _BIAS

    def get_many_raw(self, pks: list[bytes]) -> list[bytes | None]:
        # An entry past retention is not there (it is deleted at the next commit).
        got = _Store.get_many_raw(self, pks)
        cutoff = self._cutoff
        n = self.SUFFIX
        return [None if v is None or _unpack_from(k, len(k) - n)[0] - _BIAS < cutoff else v
                for k, v in zip(pks, got)]

    def put_many_raw(self, pks: list[bytes], values: list[bytes | None]) -> None:
        # Observed stream time advances to the latest time put; a write to an entry already
        # past retention is dropped, as ``put`` drops it (Kafka Streams' behaviour).
        n = self.SUFFIX
        times = [_unpack_from(k, len(k) - n)[0] - _BIAS for k in pks]
        latest = max(times, default=MIN_TS)
        if latest > self._observed:
            self._observe(latest)
        cutoff = self._cutoff
        if times and min(times) < cutoff:
            kept = [(k, v) for k, v, t in zip(pks, values, times) if t >= cutoff]
            self.expired_dropped += len(pks) - len(kept)
            pks = [k for k, _ in kept]
            values = [v for _, v in kept]
        _Store.put_many_raw(self, pks, values)

    def write_batch(self, wb: rocksdict.WriteBatch,
                    writes: dict[bytes, bytes | None] | None = None) -> None:
        h = self._handle
        ih = self._idx_handle
        s = self.SUFFIX
        for k, v in (self._overlay if writes is None else writes).items():
            ik = k[-s:] + k[:-s]
            if v is None:
                wb.delete(k, h)
                wb.delete(ik, ih)
            else:
                wb.put(k, v, h)
                wb.put(ik, b"", ih)

    def apply_changelog(self, wb: rocksdict.WriteBatch, keys: list[bytes | None],
                        values: list[bytes | None]) -> int:
        h = self._handle
        ih = self._idx_handle
        s = self.SUFFIX
        n = 0
        for k, v in zip(keys, values):
            if k is None or len(k) < s:
                continue
            ik = k[-s:] + k[:-s]
            if v is None:
                wb.delete(k, h)
                wb.delete(ik, ih)
            else:
                wb.put(k, v, h)
                wb.put(ik, b"", ih)
            n += 1
        return n

    def observe_restored(self) -> None:
        """After a restore: observed stream time is at least the latest live entry's time
        (not the latest restored record's: that one may have been deleted or reverted)."""
        for ik in self._idx.keys(backwards=True):
            self.set_observed(_unpack_from(ik, 0)[0] - _BIAS)
            break

    def expire(self) -> int:
        """Delete (with changelog tombstones) every entry whose time is before the cutoff
        (observed stream time - retention + 1); returns how many. Runs at commit."""
        cutoff = self._cutoff
        if cutoff <= self._expired_to or self._observed == MIN_TS:
            return 0
        ce = encode_ts(max(cutoff, MIN_TS))
        s = self.SUFFIX
        ov = self._overlay
        unflushed = self._unflushed
        n = 0
        ro = rocksdict.ReadOptions()
        ro.set_iterate_upper_bound(ce)
        start = encode_ts(self._expired_to) if self._expired_to > MIN_TS else None
        for ik in self._idx.keys(from_key=start, read_opt=ro):
            pk = ik[s:] + ik[:s]
            if ov.get(pk, _MISSING) is not None:
                ov[pk] = None
                unflushed.append(pk)
                n += 1
        # Entries created in this batch are not in the index yet. Only values change here,
        # so iterating the dict while assigning is safe.
        for pk, v in ov.items():
            if v is not None and pk[len(pk) - s:len(pk) - s + 8] < ce:
                ov[pk] = None
                unflushed.append(pk)
                n += 1
        self._expired_to = cutoff
        return n

    def _column_families(self) -> list[tuple[rocksdict.Rdict, Any]]:
        return [(self._cf, self._handle), (self._idx, self._idx_handle)]

    # Readers outside the task (pull queries) see committed state only, and never an entry
    # past retention (it is deleted at the next commit).

    def committed_get_raw(self, pk: bytes) -> Any | None:
        """The committed value of primary key ``pk`` (None when absent or expired)."""
        if len(pk) < self.SUFFIX or self._time_of(pk) < self._cutoff:
            return None
        v = self._cf_get(pk)
        return None if v is None else self._loads(v)

    def committed_bytes(self, pk: bytes) -> bytes | None:
        if len(pk) < self.SUFFIX or self._time_of(pk) < self._cutoff:
            return None
        return self._cf_get(pk)

    def committed_bytes_prefix(self, prefix: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        cutoff = self._cutoff
        s = self.SUFFIX
        time_of = self._time_of
        for k, v in _Store.committed_bytes_prefix(self, prefix):
            if len(k) >= s and time_of(k) >= cutoff:
                yield k, v

    def committed_prefix_raw(self, prefix: bytes | None) -> Iterator[tuple[bytes, Any]]:
        """Committed (primary key, value) of the primary keys starting with ``prefix`` (all
        when None), in key order, expired entries left out."""
        loads = self._loads
        cutoff = self._cutoff
        s = self.SUFFIX
        time_of = self._time_of
        for k, v in _db_items(self._cf, prefix or None, _next_prefix(prefix) if prefix else None,
                              False):
            if len(k) >= s and time_of(k) >= cutoff:
                yield k, loads(v)

    def wipe(self) -> None:
        super().wipe()
        self._observed = MIN_TS
        self._cutoff = MIN_TS - self._retention + 1
        self._expired_to = MIN_TS

    def close(self) -> None:
        self._idx.close()
        self._idx = None  # type: ignore[assignment]
        self._idx_handle = None
        super().close()

    def _index_scan(self, lo: bytes, hi: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        """(primary key, stored bytes) in index order for lo <= index key < hi, batch writes
        included."""
        s = self.SUFFIX
        ov = self._overlay
        cf_get = self._cf_get
        if hi is None:
            db_keys = self._idx.keys(from_key=lo)
        else:
            ro = rocksdict.ReadOptions()
            ro.set_iterate_upper_bound(hi)
            db_keys = self._idx.keys(from_key=lo, read_opt=ro)
        if not ov:
            for ik in db_keys:
                pk = ik[s:] + ik[:s]
                v = cf_get(pk)
                if v is not None:
                    yield pk, v
            return
        # Batch writes in this index range, as index keys, sorted.
        okeys = []
        for pk in ov:
            ik = pk[-s:] + pk[:-s]
            if ik >= lo and (hi is None or ik < hi):
                okeys.append(ik)
        okeys.sort()
        oi = 0
        n = len(okeys)
        missing = _MISSING
        for ik in db_keys:
            while oi < n and okeys[oi] < ik:
                ok = okeys[oi]
                oi += 1
                pk = ok[s:] + ok[:s]
                v = ov.get(pk)
                if v is not None:
                    yield pk, v
            if oi < n and okeys[oi] == ik:
                oi += 1
            pk = ik[s:] + ik[:s]
            v = ov.get(pk, missing)
            if v is missing:
                v = cf_get(pk)
            if v is not None:
                yield pk, v
        while oi < n:
            ok = okeys[oi]
            oi += 1
            pk = ok[s:] + ok[:s]
            v = ov.get(pk)
            if v is not None:
                yield pk, v


class RocksDBWindowStore(_TimedStore, WindowStore):
    """A ``WindowStore``: primary key ``key || ts(start)`` (see ``streamsql.state.keys``)."""

    __slots__ = ()

    SUFFIX = 8

    def get(self, key: bytes, start: int) -> Any | None:
        if start < self._cutoff:
            return None
        pk = key + _pack(start + _BIAS)
        v = self._overlay.get(pk, _MISSING)
        if v is _MISSING:
            v = self._cf_get(pk)
        return None if v is None else self._loads(v)

    def put(self, key: bytes, start: int, value: Any) -> None:
        if start > self._observed:
            self._observe(start)
        elif start < self._cutoff:
            self.expired_dropped += 1  # as Kafka Streams: a write to an expired window is dropped
            return
        pk = key + _pack(start + _BIAS)
        self._overlay[pk] = None if value is None else self._dumps(value)
        self._unflushed.append(pk)

    def delete(self, key: bytes, start: int) -> None:
        pk = key + _pack(start + _BIAS)
        self._overlay[pk] = None
        self._unflushed.append(pk)

    def fetch(self, key: bytes, time_from: int, time_to: int,
              reverse: bool = False) -> Iterator[tuple[int, Any]]:
        low = max(time_from, self._cutoff, MIN_TS)
        if low > time_to:
            return
        loads = self._loads
        n = len(key) + 8
        lo = key + _pack(low + _BIAS)
        hi = key + _pack(min(time_to, MAX_TS) + _BIAS) + b"\x00"
        for pk, v in self._iter_raw(lo, hi, reverse):
            if len(pk) == n:
                yield _unpack_from(pk, n - 8)[0] - _BIAS, loads(v)

    def fetch_all(self, time_from: int, time_to: int) -> Iterator[tuple[bytes, int, Any]]:
        low = max(time_from, self._cutoff, MIN_TS)
        if low > time_to:
            return
        loads = self._loads
        hi = None if time_to >= MAX_TS else _pack(time_to + 1 + _BIAS)
        for pk, v in self._index_scan(_pack(low + _BIAS), hi):
            yield pk[:-8], _unpack_from(pk, len(pk) - 8)[0] - _BIAS, loads(v)

    def all(self) -> Iterator[tuple[bytes, int, Any]]:
        loads = self._loads
        cutoff = self._cutoff
        for pk, v in self._iter_raw(None, None):
            if len(pk) < 8:
                continue
            t = _unpack_from(pk, len(pk) - 8)[0] - _BIAS
            if t >= cutoff:
                yield pk[:-8], t, loads(v)


class RocksDBSessionStore(_TimedStore, SessionStore):
    """A ``SessionStore``: primary key ``key || ts(end) || ts(start)`` (see
    ``streamsql.state.keys``)."""

    __slots__ = ()

    SUFFIX = 16

    def get(self, key: bytes, start: int, end: int) -> Any | None:
        if end < self._cutoff:
            return None
        pk = key + _pack(end + _BIAS) + _pack(start + _BIAS)
        v = self._overlay.get(pk, _MISSING)
        if v is _MISSING:
            v = self._cf_get(pk)
        return None if v is None else self._loads(v)

    def put(self, key: bytes, start: int, end: int, value: Any) -> None:
        if end > self._observed:
            self._observe(end)
        elif end < self._cutoff:
            self.expired_dropped += 1
            return
        pk = key + _pack(end + _BIAS) + _pack(start + _BIAS)
        self._overlay[pk] = None if value is None else self._dumps(value)
        self._unflushed.append(pk)

    def remove(self, key: bytes, start: int, end: int) -> None:
        pk = key + _pack(end + _BIAS) + _pack(start + _BIAS)
        self._overlay[pk] = None
        self._unflushed.append(pk)

    def find_sessions(self, key: bytes, earliest_end: int,
                      latest_start: int) -> Iterator[tuple[int, int, Any]]:
        low = max(earliest_end, self._cutoff, MIN_TS)
        if low > MAX_TS:
            return
        loads = self._loads
        n = len(key) + 16
        for pk, v in self._iter_raw(key + _pack(low + _BIAS), key + _SESSION_HI):
            if len(pk) == n:
                start = _unpack_from(pk, n - 8)[0] - _BIAS
                if start <= latest_start:
                    yield start, _unpack_from(pk, n - 16)[0] - _BIAS, loads(v)

    def fetch(self, key: bytes) -> Iterator[tuple[int, int, Any]]:
        return self.find_sessions(key, MIN_TS, MAX_TS)

    def fetch_all(self, earliest_end: int, latest_start: int
                  ) -> Iterator[tuple[bytes, int, int, Any]]:
        low = max(earliest_end, self._cutoff, MIN_TS)
        if low > MAX_TS:
            return
        loads = self._loads
        for pk, v in self._index_scan(_pack(low + _BIAS), None):
            n = len(pk)
            start = _unpack_from(pk, n - 8)[0] - _BIAS
            if start <= latest_start:
                yield pk[:-16], start, _unpack_from(pk, n - 16)[0] - _BIAS, loads(v)

    def all(self) -> Iterator[tuple[bytes, int, int, Any]]:
        loads = self._loads
        cutoff = self._cutoff
        for pk, v in self._iter_raw(None, None):
            n = len(pk)
            if n < 16:
                continue
            end = _unpack_from(pk, n - 16)[0] - _BIAS
            if end >= cutoff:
                yield pk[:-16], _unpack_from(pk, n - 8)[0] - _BIAS, end, loads(v)


def make_store(spec: StoreSpec, db: rocksdict.Rdict) -> _Store:
    """The store object for a spec, over its (existing) column families in ``db``."""
    if isinstance(spec, KeyValueStoreSpec):
        return RocksDBKeyValueStore(spec, db)
    if isinstance(spec, WindowStoreSpec):
        return RocksDBWindowStore(spec, db)
    if isinstance(spec, SessionStoreSpec):
        return RocksDBSessionStore(spec, db)
    raise TypeError(f"not a store spec: {spec!r}")

"""Segments of the embedded log: record framing, encode/decode, storage and sparse index.

A segment holds the records of one partition from a base offset on, as a sequence of frames,
each a single record or a batch of records::

    record = u32 body_length | u32 crc32(body) | body
    body   = i64 offset | i64 timestamp | i32 key_len | i32 value_len | u32 header_count
             | key | value | header*
    header = u16 name_len | i32 value_len | name (utf-8) | value

    batch  = u32 body_length | 0x80000000 | u32 crc32(body) | body
    body   = i64 base_offset | i64 timestamp | i32 key_len | u32 count | key
             | i32 value_len * count | values

A length of -1 stands for a null key, value or header value. All integers are little endian.
The CRC covers the whole body, so a torn or corrupt frame is detected by the scan at open.
A batch (what ``append_values`` writes: a source's batch, one key and one timestamp for all,
no headers, no null values) holds records with consecutive offsets from its base; it costs
one CRC and one header for all its records, and is read back by C loops (no Python code per
record). The top bit of the length tells the two apart, so segments of either or both kinds
read alike (segments written before batches existed hold records only; segments holding
batches do not read with versions before them).

Each segment keeps a sparse in-memory index: the (offset, file position) of every
``interval``-th record (of the frame holding it: a batch's first offset and position), in
two ``array('q')`` (16 bytes per ``interval`` records, so memory stays small for millions of
records). Offsets inside a segment increase but may have gaps (after compaction), so lookups
bisect the index instead of doing arithmetic.

A segment's bytes live in a ``Storage``: a file (``FileStorage``) or a bytearray
(``MemoryStorage``, the in-memory mode); both are append-only except for truncation at
recovery and wholesale replacement by compaction.
"""
from __future__ import annotations

import os
import struct
import sys
from array import array
from bisect import bisect_left, bisect_right
from itertools import accumulate, repeat
from pathlib import Path
from typing import Iterable, Protocol, Sequence

# zlib-ng's CRC-32 is zlib's (the same values: segments written with either read with either),
# computed with carry-less multiplication: ~3x zlib's on records of a few hundred bytes.
from zlib_ng.zlib_ng import crc32

from .base import Headers, ProducerRecord

RECORD = struct.Struct("<IIqqiiI")
"""The fixed part of a framed record: body length, crc, offset, timestamp, key length,
value length, header count."""
RECORD_SIZE = RECORD.size  # 36
PREFIX = struct.Struct("<II")
PREFIX_SIZE = PREFIX.size  # 8
BODY_FIXED = struct.Struct("<qqiiI")
BODY_FIXED_SIZE = BODY_FIXED.size  # 28
LEN_OFFSET = struct.Struct("<I4xq")  # body length and offset: all a position walk needs
LEN_TS = struct.Struct("<I4x8xq")  # body length and timestamp: all a retention check needs
HEADER = struct.Struct("<Hi")
BATCH = 0x80000000  # the top bit of a frame's length: a batch of records
LENGTH = 0x7FFFFFFF
BATCH_FIXED = struct.Struct("<qqiIii")  # base offset, timestamp, key length, count, affix lengths
BATCH_FIXED_SIZE = BATCH_FIXED.size  # 32
BATCH_COUNT = struct.Struct("<I")  # at a batch frame's position + 28
_BIG_ENDIAN = sys.byteorder == "big"  # array('i') is in the machine's order; frames little endian
INDEX_HEADER = struct.Struct("<8sqqqqq")  # magic, segment size, base, next offset, count, entries
INDEX_MAGIC = b"SSQIDX01"

DEFAULT_INDEX_INTERVAL = 32
DEFAULT_MAX_FETCH_BYTES = 8 * 1024 * 1024


class CorruptRecordError(Exception):
    """A segment's bytes do not parse as framed records where the index says they should."""


# --- encoding ----------------------------------------------------------------------------

def _encode_headers(headers: Headers) -> bytes:
    out = []
    for name, value in headers:
        nb = name.encode("utf-8")
        if value is None:
            out.append(HEADER.pack(len(nb), -1) + nb)
        else:
            out.append(HEADER.pack(len(nb), len(value)) + nb + value)
    return b"".join(out)


def _body(offset: int, ts: int, key: bytes | None, value: bytes | None,
          headers: Headers) -> bytes:
    """The general (slow) body encoder: any nulls, any headers."""
    kl = -1 if key is None else len(key)
    vl = -1 if value is None else len(value)
    body = BODY_FIXED.pack(offset, ts, kl, vl, len(headers)) + (key or b"") + (value or b"")
    if headers:
        body += _encode_headers(headers)
    return body


def encode_records(records: Iterable[ProducerRecord], offset: int, now_ms: int, pos: int,
                   countdown: int, interval: int, idx_off: array, idx_pos: array
                   ) -> tuple[bytes, int, int]:
    """Frame ``records`` with consecutive offsets from ``offset``, to be appended at file
    position ``pos``. Appends index entries (every ``interval``-th record of the segment;
    ``countdown`` records remain before the next one) to ``idx_off``/``idx_pos``.

    Returns (bytes, number of records, new countdown).
    """
    parts: list[bytes] = []
    ap = parts.append
    fixed = BODY_FIXED.pack
    prefix = PREFIX.pack
    first = offset
    for r in records:
        k = r.key
        v = r.value
        ts = r.timestamp
        if ts is None:
            ts = now_ms
        if r.headers:
            body = _body(offset, ts, k, v, r.headers)
        elif k is not None and v is not None:
            body = fixed(offset, ts, len(k), len(v), 0) + k + v
        elif k is None and v is not None:  # (null keys: what Connect sources mostly write)
            body = fixed(offset, ts, -1, len(v), 0) + v
        else:
            body = _body(offset, ts, k, v, ())
        ln = len(body)
        if not countdown:
            idx_off.append(offset)
            idx_pos.append(pos)
            countdown = interval
        countdown -= 1
        pos += 8 + ln
        ap(prefix(ln, crc32(body)))
        ap(body)
        offset += 1
    return b"".join(parts), offset - first, countdown


def frame_values(values: Sequence[bytes], key: bytes | None, ts: int, offset: int, pos: int,
                 countdown: int, interval: int, idx_off: array, idx_pos: array
                 ) -> tuple[list, int, int]:
    """``values`` (no None among them), one key (or None) and one timestamp for all, with
    consecutive offsets from ``offset``, framed as one batch to be appended at ``pos``: one
    header, one CRC, the values' lengths as an array and the values as they are: no Python
    code runs per record. A ``PackedValues`` is framed with no copy of its bytes, and its
    prefix and suffix (bytes every value starts and ends with: a Connect envelope) are
    stored once. Where an index entry falls in the batch (``countdown`` records remain
    before the next one) it points at the batch. Returns (the frame's parts, its size, the
    new countdown); a None value raises TypeError before anything is appended to the index."""
    n = len(values)
    packed = getattr(values, "lengths", None)
    if packed is not None:
        lens = packed if type(packed) is array and packed.typecode == "i" else array("i", packed)
        data = values.data  # type: ignore[attr-defined]
        prefix: bytes = values.prefix  # type: ignore[attr-defined]
        suffix: bytes = values.suffix  # type: ignore[attr-defined]
    else:
        lens = array("i", map(len, values))
        data = b"".join(values)
        prefix = suffix = b""
    if not n:
        return [], 0, countdown
    kl = -1 if key is None else len(key)
    if _BIG_ENDIAN:
        lens = array("i", lens)
        lens.byteswap()
    fixed = BATCH_FIXED.pack(offset, ts, kl, n, len(prefix), len(suffix))
    body_len = BATCH_FIXED_SIZE + max(kl, 0) + len(prefix) + len(suffix) + 4 * n + len(data)
    if body_len > LENGTH:
        raise ValueError(f"a batch of {body_len} bytes is too large for one frame")
    parts = [b"", fixed]
    if key:
        parts.append(key)
    if prefix:
        parts.append(prefix)
    if suffix:
        parts.append(suffix)
    parts.append(lens)
    parts.append(data)
    crc = 0
    for part in parts:
        crc = crc32(part, crc)
    parts[0] = PREFIX.pack(body_len | BATCH, crc)
    if countdown < n:
        idx_off.append(offset)
        idx_pos.append(pos)
        countdown = (countdown - n) % interval
    else:
        countdown -= n
    return parts, 8 + body_len, countdown


def encode_values(values: Sequence[bytes], key: bytes | None, ts: int, offset: int, pos: int,
                  countdown: int, interval: int, idx_off: array, idx_pos: array
                  ) -> tuple[bytes, int]:
    """``frame_values`` as one bytes object: (the frame, the new countdown)."""
    parts, _, countdown = frame_values(values, key, ts, offset, pos, countdown, interval, idx_off, idx_pos)
    return b"".join(parts), countdown


def _decode_batch(buf: bytes, pos: int, first: int, limit: int, offs: list[int], tss: list[int],
                  keys: list[bytes | None], vals: list[bytes | None], hdrs: list[Headers] | None
                  ) -> tuple[int, bool]:
    """The records of the batch frame at ``pos`` from offset ``first`` on, at most ``limit``,
    onto the columns (C loops only). Returns (records taken, whether the batch is done)."""
    base, ts, kl, count, pl, sl = BATCH_FIXED.unpack_from(buf, pos + 8)
    p = pos + 8 + BATCH_FIXED_SIZE
    key = None
    if kl >= 0:
        key = buf[p:p + kl]
        p += kl
    skip = first - base if first > base else 0
    take = min(count - skip, limit)
    if take <= 0:  # (``limit`` is at least 1: nothing of the batch is from ``first`` on)
        return 0, True
    prefix = buf[p:p + pl]
    p += pl
    suffix = buf[p:p + sl]
    p += sl
    lens = array("i")
    lens.frombytes(buf[p:p + 4 * count])
    if _BIG_ENDIAN:
        lens.byteswap()
    bounds = list(accumulate(lens, initial=p + 4 * count))
    middles = map(buf.__getitem__, map(slice, bounds[skip:skip + take], bounds[skip + 1:skip + take + 1]))
    if pl or sl:  # each value is the prefix, its own bytes, the suffix
        vals.extend(map(b"".join, zip(repeat(prefix), middles, repeat(suffix))))
    else:
        vals.extend(middles)
    offs.extend(range(base + skip, base + skip + take))
    tss.extend(repeat(ts, take))
    keys.extend(repeat(key, take))
    if hdrs is not None:
        hdrs.extend(repeat((), take))
    return take, skip + take >= count


def encode_columns(offsets: Sequence[int], timestamps: Sequence[int],
                   keys: Sequence[bytes | None], values: Sequence[bytes | None],
                   headers: Sequence[Headers] | None, interval: int,
                   idx_off: array, idx_pos: array) -> bytes:
    """Frame records with given offsets (compaction rewrites keep the original offsets) into
    a fresh segment body, filling its index."""
    parts: list[bytes] = []
    pos = 0
    for i, off in enumerate(offsets):
        body = _body(off, timestamps[i], keys[i], values[i], headers[i] if headers else ())
        if i % interval == 0:
            idx_off.append(off)
            idx_pos.append(pos)
        pos += 8 + len(body)
        parts.append(PREFIX.pack(len(body), crc32(body)))
        parts.append(body)
    return b"".join(parts)


# --- decoding ----------------------------------------------------------------------------

def _decode_headers(buf: bytes, p: int, count: int) -> Headers:
    out = []
    unpack = HEADER.unpack_from
    for _ in range(count):
        nl, vl = unpack(buf, p)
        p += 6
        name = buf[p:p + nl].decode("utf-8")
        p += nl
        if vl < 0:
            out.append((name, None))
        else:
            out.append((name, buf[p:p + vl]))
            p += vl
    return tuple(out)


def decode(buf: bytes, pos: int, max_n: int, offs: list[int], tss: list[int],
           keys: list[bytes | None], vals: list[bytes | None],
           hdrs: list[Headers] | None, first: int = 0) -> tuple[int, list[Headers] | None]:
    """Decode up to ``max_n`` whole records of ``buf`` from ``pos``, appending to the column
    lists; a batch's records before offset ``first`` are skipped. A partial frame at the end
    of ``buf`` is left alone. Returns (where to go on: after the last frame read whole, or at
    the batch read in part; the header column: None while no record so far had headers)."""
    end = len(buf)
    unpack = RECORD.unpack_from
    ao = offs.append
    at = tss.append
    ak = keys.append
    av = vals.append
    n = 0
    if hdrs is None:
        # Fast loop: no headers seen yet. Leaves on the first record that has some.
        while n < max_n and pos + 36 <= end:
            ln, _crc, off, ts, kl, vl, hn = unpack(buf, pos)
            if ln & BATCH:
                nxt = pos + 8 + (ln & LENGTH)
                if nxt > end:
                    return pos, None
                took, done = _decode_batch(buf, pos, first, max_n - n, offs, tss, keys, vals, None)
                n += took
                if not done:
                    return pos, None
                pos = nxt
                continue
            nxt = pos + 8 + ln
            if nxt > end:
                return pos, None
            if hn:
                break
            p = pos + 36
            if kl >= 0:
                q = p + kl
                ak(buf[p:q])
                p = q
            else:
                ak(None)
            av(buf[p:p + vl] if vl >= 0 else None)
            ao(off)
            at(ts)
            pos = nxt
            n += 1
        else:
            return pos, None
        hdrs = [()] * len(offs)  # (a record with headers is next, whole)
    ah = hdrs.append
    while n < max_n and pos + 36 <= end:
        ln, _crc, off, ts, kl, vl, hn = unpack(buf, pos)
        if ln & BATCH:
            nxt = pos + 8 + (ln & LENGTH)
            if nxt > end:
                break
            took, done = _decode_batch(buf, pos, first, max_n - n, offs, tss, keys, vals, hdrs)
            n += took
            if not done:
                break
            pos = nxt
            continue
        nxt = pos + 8 + ln
        if nxt > end:
            break
        p = pos + 36
        if kl >= 0:
            q = p + kl
            ak(buf[p:q])
            p = q
        else:
            ak(None)
        if vl >= 0:
            q = p + vl
            av(buf[p:q])
            p = q
        else:
            av(None)
        ah(_decode_headers(buf, p, hn) if hn else ())
        ao(off)
        at(ts)
        pos = nxt
        n += 1
    return pos, hdrs


def frame_end(buf: bytes, pos: int) -> int:
    """Where the frame at ``pos`` of ``buf`` ends (its length read from ``buf``)."""
    return pos + 8 + (PREFIX.unpack_from(buf, pos)[0] & LENGTH)


def check_crcs(buf: bytes, start: int, end: int) -> None:
    """Verify the CRC of every whole record in ``buf[start:end]``; raise CorruptRecordError."""
    mv = memoryview(buf)
    try:
        pos = start
        while pos < end:
            ln, crc = PREFIX.unpack_from(buf, pos)
            nxt = pos + 8 + (ln & LENGTH)
            if crc32(mv[pos + 8:nxt]) != crc:
                raise CorruptRecordError(f"CRC mismatch in record at position {pos}")
            pos = nxt
    finally:
        mv.release()


class ScanResult:
    """What a validating scan of a segment found."""

    __slots__ = ("good_size", "count", "next_offset", "problem", "countdown")

    def __init__(self, good_size: int, count: int, next_offset: int, problem: str | None,
                 countdown: int) -> None:
        self.good_size = good_size
        self.count = count
        self.next_offset = next_offset
        self.problem = problem
        self.countdown = countdown


def scan(buf: bytes, base: int, interval: int, idx_off: array, idx_pos: array) -> ScanResult:
    """Validate every record of a segment (framing, CRC, increasing offsets not below
    ``base``) and build its index. Stops at the first bad record: ``good_size`` is where the
    valid prefix ends and ``problem`` says what was wrong (None if the whole buffer is good).
    """
    size = len(buf)
    mv = memoryview(buf)
    pos = 0
    count = 0
    last = base - 1
    problem = None
    countdown = 0
    prefix = PREFIX.unpack_from
    fixed = BODY_FIXED.unpack_from
    try:
        while pos < size:
            if pos + 8 > size:
                problem = "torn record header"
                break
            ln, crc = prefix(buf, pos)
            batch = ln & BATCH
            ln &= LENGTH
            if ln < (BATCH_FIXED_SIZE + 4 if batch else BODY_FIXED_SIZE):
                problem = f"bad {'batch' if batch else 'record'} length {ln}"
                break
            nxt = pos + 8 + ln
            if nxt > size:
                problem = "torn batch" if batch else "torn record"
                break
            if crc32(mv[pos + 8:nxt]) != crc:
                problem = "CRC mismatch"
                break
            if batch:
                off, _ts, kl, n, pl, sl = BATCH_FIXED.unpack_from(buf, pos + 8)
                head = BATCH_FIXED_SIZE + max(kl, 0) + pl + sl + 4 * n
                lens = array("i")
                if kl >= -1 and pl >= 0 and sl >= 0 and n and head <= ln:
                    p = pos + 8 + head - 4 * n
                    lens.frombytes(mv[p:p + 4 * n])
                    if _BIG_ENDIAN:
                        lens.byteswap()
                if not lens or min(lens) < 0 or head + sum(lens) != ln:
                    problem = "inconsistent batch lengths"
                    break
            else:
                off, _ts, kl, vl, hn = fixed(buf, pos + 8)
                payload = max(kl, 0) + max(vl, 0)
                if kl < -1 or vl < -1 or BODY_FIXED_SIZE + payload + 6 * hn > ln or (
                        hn == 0 and BODY_FIXED_SIZE + payload != ln):
                    problem = "inconsistent record lengths"
                    break
                n = 1
            if off <= last:
                problem = f"offset {off} out of order"
                break
            # An index entry every ``interval`` records, at the frame holding that record.
            if countdown < n:
                idx_off.append(off)
                idx_pos.append(pos)
                countdown = (countdown - n) % interval
            else:
                countdown -= n
            last = off + n - 1
            pos = nxt
            count += n
    finally:
        mv.release()
    return ScanResult(pos, count, last + 1, problem, countdown)


# --- storage -----------------------------------------------------------------------------

class Storage(Protocol):
    """The bytes of one segment."""

    def append(self, data: bytes) -> None: ...

    def append_parts(self, parts: Sequence[bytes], size: int) -> None:
        """``append`` of the parts' concatenation (``size`` bytes), without making it."""

    def truncate(self, size: int) -> None: ...

    def read(self, pos: int, n: int) -> bytes: ...

    def sync(self) -> None: ...

    def close(self) -> None: ...


class MemoryStorage:
    """A segment held in a bytearray (in-memory mode)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes = b"") -> None:
        self.data = bytearray(data)

    def append(self, data: bytes) -> None:
        self.data += data

    def append_parts(self, parts: Sequence[bytes], size: int) -> None:
        for part in parts:
            self.data += part

    def truncate(self, size: int) -> None:
        del self.data[size:]

    def read(self, pos: int, n: int) -> bytes:
        return bytes(self.data[pos:pos + n])

    def sync(self) -> None:
        return None

    def close(self) -> None:
        return None


class FileStorage:
    """A segment file. Writes go straight to the OS (unbuffered ``os.write``), reads use
    ``os.pread`` on the same descriptor, opened on first use."""

    __slots__ = ("path", "fd")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = -1

    def _open(self) -> int:
        if self.fd < 0:
            self.fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                              0o644)
        return self.fd

    def append(self, data: bytes) -> None:
        fd = self._open()
        n = os.write(fd, data)
        if n != len(data):  # regular files write everything, but never assume it
            view = memoryview(data)
            while n < len(data):
                n += os.write(fd, view[n:])

    def append_parts(self, parts: Sequence[bytes], size: int) -> None:
        # One system call for all of them (a source's batch: its header, the values' lengths
        # and their bytes, no copy made to join them).
        fd = self._open()
        n = os.writev(fd, parts)
        if n != size:
            rest = memoryview(b"".join(parts))
            while n < size:
                n += os.write(fd, rest[n:])

    def truncate(self, size: int) -> None:
        # Shrinking never needs space, so this works on a full disk too.
        os.ftruncate(self._open(), size)

    def read(self, pos: int, n: int) -> bytes:
        fd = self._open()
        data = os.pread(fd, n, pos)
        if len(data) < n:
            parts = [data]
            got = len(data)
            while got < n:
                more = os.pread(fd, n - got, pos + got)
                if not more:
                    break
                parts.append(more)
                got += len(more)
            data = b"".join(parts)
        return data

    def sync(self) -> None:
        if self.fd >= 0:
            os.fsync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def read_file(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


# --- segment -----------------------------------------------------------------------------

class Segment:
    """Records of one partition from ``base`` on, with their sparse index and a read cursor
    (the position after the last read), so sequential fetches start without a lookup."""

    __slots__ = ("base", "next_offset", "count", "size", "storage", "idx_off", "idx_pos",
                 "countdown", "cur_off", "cur_pos", "path", "created_ms", "max_timestamp",
                 "timestamps_known")

    def __init__(self, base: int, storage: Storage, path: Path | None,
                 created_ms: int = 0) -> None:
        self.base = base
        self.next_offset = base  # offset after the last record (base when empty)
        self.count = 0
        self.size = 0
        self.storage = storage
        self.idx_off = array("q")
        self.idx_pos = array("q")
        self.countdown = 0  # records left before the next index entry
        self.cur_off = -1
        self.cur_pos = 0
        self.path = path
        self.created_ms = created_ms  # when it was rolled (segment.ms rolls it again)
        # The largest record timestamp (retention.ms), known once a closed segment is read.
        self.max_timestamp: int | None = None
        self.timestamps_known = False

    def append(self, records: Sequence[ProducerRecord], offset: int, now_ms: int,
               interval: int) -> int:
        """Append records with offsets from ``offset`` in one write; returns the count.

        A write that fails (a full disk, an I/O error) leaves nothing behind: the bytes that
        made it to the file are cut off again and the index is as before, so the next append
        lands where this one should have (no torn record in the middle of the segment, which
        the scan at open would take for the end of the log) and the error propagates."""
        mark = self.mark()
        data, n, self.countdown = encode_records(records, offset, now_ms, self.size,
                                                 self.countdown, interval,
                                                 self.idx_off, self.idx_pos)
        try:
            self.storage.append(data)
        except BaseException:
            self.rollback(mark)
            raise
        self.size += len(data)
        self.count += n
        self.next_offset = offset + n
        return n

    def append_values(self, values: Sequence[bytes], key: bytes | None, ts: int, offset: int,
                      interval: int) -> int:
        """``append`` for a column of values (``encode_values``): one key and timestamp for
        all, no headers. TypeError (nothing written) where a value is None."""
        mark = self.mark()
        try:
            parts, size, self.countdown = frame_values(values, key, ts, offset, self.size, self.countdown,
                                                       interval, self.idx_off, self.idx_pos)
            self.storage.append_parts(parts, size)
        except BaseException:
            self.rollback(mark)
            raise
        n = len(values)
        self.size += size
        self.count += n
        self.next_offset = offset + n
        return n

    def scan_max_timestamp(self) -> int | None:
        """Read the segment once for its largest record timestamp (None when empty). For
        closed segments only (they no longer change); safe on a worker thread."""
        buf = self.storage.read(0, self.size)
        unpack = LEN_TS.unpack_from
        pos, end, largest = 0, len(buf), None
        while pos + 24 <= end:
            ln, ts = unpack(buf, pos)
            if largest is None or ts > largest:
                largest = ts
            pos += 8 + (ln & LENGTH)
        self.max_timestamp = largest
        self.timestamps_known = True
        return largest

    def mark(self) -> tuple[int, int, int, int, int]:
        """Where the segment ends now, for ``rollback``."""
        return self.size, self.count, self.next_offset, len(self.idx_off), self.countdown

    def rollback(self, mark: tuple[int, int, int, int, int]) -> None:
        """Cut the segment back to a ``mark`` (undoing appends that are not to stay)."""
        size, self.count, self.next_offset, entries, self.countdown = mark
        self.storage.truncate(size)
        self.size = size
        del self.idx_off[entries:]
        del self.idx_pos[entries:]
        if self.cur_pos > size:
            self.cur_off = -1
            self.cur_pos = 0

    def locate(self, offset: int) -> int:
        """Position of the first record with an offset >= ``offset`` (``size`` if none)."""
        if offset == self.cur_off:
            return self.cur_pos
        idx_off = self.idx_off
        j = bisect_right(idx_off, offset) - 1
        if j < 0:
            return 0
        pos = self.idx_pos[j]
        if idx_off[j] == offset:
            return pos
        stop = self.idx_pos[j + 1] if j + 1 < len(idx_off) else self.size
        read = self.storage.read
        if stop - pos <= 1 << 20:
            # One read for the (at most ``interval``) records up to the next index entry.
            buf = read(pos, stop - pos)
            p = 0
            unpack = LEN_OFFSET.unpack_from
            while p < len(buf):
                ln, off = unpack(buf, p)
                if ln & BATCH:  # the batch holding ``offset``, or the first after it
                    ln &= LENGTH
                    if off + BATCH_COUNT.unpack_from(buf, p + 28)[0] > offset:
                        break
                elif off >= offset:
                    break
                p += 8 + ln
            return pos + p
        while pos < stop:  # large records: read just their headers
            head = read(pos, 32)
            ln, off = LEN_OFFSET.unpack_from(head)
            if ln & BATCH:
                ln &= LENGTH
                if off + BATCH_COUNT.unpack_from(head, 28)[0] > offset:
                    break
            elif off >= offset:
                break
            pos += 8 + ln
        return pos

    def read(self, offset: int, max_n: int, max_bytes: int, verify: bool,
             offs: list[int], tss: list[int], keys: list[bytes | None],
             vals: list[bytes | None], hdrs: list[Headers] | None
             ) -> tuple[list[Headers] | None, int]:
        """Append up to ``max_n`` records from ``offset`` on to the column lists (at least one
        record if there is any, even one larger than ``max_bytes``; fewer than ``max_n`` if the
        segment has gaps or the bytes run out). Returns (header column, bytes consumed)."""
        if offset >= self.next_offset or max_n <= 0:
            return hdrs, 0
        start = self.locate(offset)
        size = self.size
        if start >= size:
            return hdrs, 0
        # The read window ends at the index entry at or after the last wanted offset (a few
        # records too many at most), capped at max_bytes.
        k = bisect_left(self.idx_off, offset + max_n)
        end = self.idx_pos[k] if k < len(self.idx_pos) else size
        if end - start > max_bytes:
            end = start + max_bytes
        buf = self.storage.read(start, end - start)
        before = len(offs)
        pos, hdrs = decode(buf, 0, max_n, offs, tss, keys, vals, hdrs, offset)
        if len(offs) == before:
            # The first frame alone exceeds the window: read exactly that frame.
            if len(buf) < 8:
                buf = self.storage.read(start, 8)
            buf = self.storage.read(start, frame_end(buf, 0))
            pos, hdrs = decode(buf, 0, max_n if PREFIX.unpack_from(buf, 0)[0] & BATCH else 1,
                               offs, tss, keys, vals, hdrs, offset)
            if len(offs) == before:
                raise CorruptRecordError(
                    f"cannot decode record at position {start} of segment {self.base}")
        # A batch read in part (max_n reached in it): read again from its start next time.
        read_to = frame_end(buf, pos) if pos + 16 <= len(buf) and offs[-1] + 1 > LEN_OFFSET.unpack_from(
            buf, pos)[1] else pos
        if verify:
            check_crcs(buf, 0, read_to)
        self.cur_off = offs[-1] + 1
        self.cur_pos = start + pos
        return hdrs, read_to

    def cut(self, offset: int) -> tuple[int, bytes]:
        """Where to cut the segment so that it ends before ``offset``, and what to write
        back there: the records of a batch holding ``offset`` that come before it, framed
        again as a batch of their own (nothing where ``offset`` starts a frame)."""
        pos = self.locate(offset) if offset > self.base else 0
        if pos >= self.size:
            return pos, b""
        head = self.storage.read(pos, 32)
        ln, base = LEN_OFFSET.unpack_from(head)
        if not ln & BATCH or base >= offset:
            return pos, b""
        buf = self.storage.read(pos, 8 + (ln & LENGTH))
        offs: list[int] = []
        tss: list[int] = []
        keys: list[bytes | None] = []
        vals: list[bytes | None] = []
        decode(buf, 0, offset - base, offs, tss, keys, vals, None)
        data, _ = encode_values(vals, keys[0], tss[0], base, pos, 1, 1, array("q"), array("q"))  # type: ignore[arg-type]
        return pos, data

    def read_all(self, offs: list[int], tss: list[int], keys: list[bytes | None],
                 vals: list[bytes | None]) -> list[Headers] | None:
        """Every record of the segment (compaction reads whole segments)."""
        buf = self.storage.read(0, self.size)
        pos, hdrs = decode(buf, 0, len(buf), offs, tss, keys, vals, None)
        if pos != len(buf):
            raise CorruptRecordError(f"segment {self.base} does not decode to its end")
        return hdrs

    def write_index(self, path: Path, fsync: bool) -> None:
        """Write the index beside a sealed segment (so reopening need not rescan it)."""
        n = len(self.idx_off)
        data = (INDEX_HEADER.pack(INDEX_MAGIC, self.size, self.base, self.next_offset,
                                  self.count, n)
                + self.idx_off.tobytes() + self.idx_pos.tobytes())
        data += crc32(data).to_bytes(4, "little")
        atomic_write(path, data, fsync)

    def load_index(self, path: Path, file_size: int) -> bool:
        """Load a sidecar index if it is intact and matches the segment file's size."""
        try:
            data = read_file(path)
        except OSError:
            return False
        if len(data) < INDEX_HEADER.size + 4:
            return False
        if crc32(data[:-4]) != int.from_bytes(data[-4:], "little"):
            return False
        magic, size, base, next_offset, count, n = INDEX_HEADER.unpack_from(data, 0)
        if (magic != INDEX_MAGIC or size != file_size or base != self.base
                or len(data) != INDEX_HEADER.size + 16 * n + 4):
            return False
        p = INDEX_HEADER.size
        self.idx_off = array("q", data[p:p + 8 * n])
        self.idx_pos = array("q", data[p + 8 * n:p + 16 * n])
        self.size = size
        self.next_offset = next_offset
        self.count = count
        return True


def atomic_write(path: Path, data: bytes, fsync: bool) -> None:
    """Replace ``path`` with ``data`` atomically (temp file + rename)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        if fsync:
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if fsync:
        fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (new or renamed files) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

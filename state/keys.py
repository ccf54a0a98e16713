"""Byte layouts of windowed store keys (these are also the changelog record keys).

Times are 8 bytes big-endian of ``ms + 2**63`` so that bytewise order is numeric order,
negative times included.

* window key:  ``key || ts(start)``              -> one key's windows are a contiguous range,
  in start order.
* session key: ``key || ts(end) || ts(start)``   -> one key's sessions are a contiguous range,
  in end order (Kafka Streams' session key schema), so "sessions ending at or after t" is a
  range scan from ``key || ts(t)``.

Keys have variable length, so the range of ``key`` can also hold entries of a longer key that
starts with ``key``; readers drop entries whose length is not ``len(key) + suffix``. That test
is exact: an entry of the right length inside ``[key || a, key || b]`` must start with ``key``.

Windowed stores also keep a local time index (never changelogged, rebuilt on restore) whose
keys are the suffix moved to the front: ``suffix || key``, for retention and time-ordered
scans.
"""
from __future__ import annotations

import struct

__all__ = [
    "MAX_TS", "MIN_TS", "decode_ts", "encode_ts", "session_key", "split_session_key",
    "split_window_key", "window_key",
]

_TS = struct.Struct(">Q")
_BIAS = 1 << 63
MIN_TS = -(1 << 63)
MAX_TS = (1 << 63) - 1
TS_LEN = 8


def encode_ts(ts: int) -> bytes:
    """8 bytes whose bytewise order is the numeric order of ``ts``."""
    return _TS.pack(ts + _BIAS)


def decode_ts(data: bytes, offset: int = 0) -> int:
    """The time encoded at ``data[offset:offset + 8]``."""
    return _TS.unpack_from(data, offset)[0] - _BIAS


def window_key(key: bytes, start: int) -> bytes:
    """The store (and changelog) key of ``key``'s window starting at ``start``."""
    return key + _TS.pack(start + _BIAS)


def split_window_key(data: bytes) -> tuple[bytes, int]:
    """(key, start) of a window store key."""
    return data[:-8], _TS.unpack_from(data, len(data) - 8)[0] - _BIAS


def session_key(key: bytes, start: int, end: int) -> bytes:
    """The store (and changelog) key of ``key``'s session [start, end]."""
    return key + _TS.pack(end + _BIAS) + _TS.pack(start + _BIAS)


def split_session_key(data: bytes) -> tuple[bytes, int, int]:
    """(key, start, end) of a session store key."""
    n = len(data)
    return (data[:-16], _TS.unpack_from(data, n - 8)[0] - _BIAS,
            _TS.unpack_from(data, n - 16)[0] - _BIAS)

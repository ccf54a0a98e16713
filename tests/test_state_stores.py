"""State stores as an operator uses them: key-value, window and session stores on RocksDB,
reads of the batch's own writes, ordering, iteration, retention."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from streamsql.runtime.log.embedded import EmbeddedLog
from streamsql.state import (BYTES, KeyValueStoreSpec, SessionStoreSpec, TaskState,
                             WindowStoreSpec, split_session_key, split_window_key)


def run(coro):
    return asyncio.run(coro)


def open_state(path: Path, *specs, log=None, **kw) -> TaskState:
    return run(TaskState.open(path, list(specs), log=log, **kw))


@pytest.fixture
def kv_state(tmp_path):
    st = open_state(tmp_path / "t", KeyValueStoreSpec("kv"), KeyValueStoreSpec("raw", values=BYTES))
    yield st
    st.close()


# --- key-value ---------------------------------------------------------------------------

@pytest.mark.parametrize("committed", [False, True])
def test_kv_put_get_delete(kv_state, committed):
    kv = kv_state.kv("kv")
    kv.put(b"a", {"sum": 1, "list": [1, "x", None], "f": 1.5})
    kv.put(b"b", 2)
    kv.put(b"c", "three")
    kv.delete(b"b")
    kv.put(b"c", None)  # put None deletes
    kv.put(b"d", [])
    if committed:
        run(kv_state.commit({}))
    assert kv.get(b"a") == {"sum": 1, "list": [1, "x", None], "f": 1.5}
    assert kv.get(b"b") is None
    assert kv.get(b"c") is None
    assert kv.get(b"d") == []
    assert kv.get(b"zz") is None


def test_kv_raw_bytes_values(kv_state):
    raw = kv_state.kv("raw")
    raw.put(b"k", b"\x00\xffbytes")
    assert raw.get(b"k") == b"\x00\xffbytes"
    run(kv_state.commit({}))
    assert raw.get(b"k") == b"\x00\xffbytes"
    # Stores are separate: the same key in another store is another entry.
    assert kv_state.kv("kv").get(b"k") is None


def test_kv_range_is_bytewise_and_merges_batch_writes(kv_state):
    kv = kv_state.kv("kv")
    for k in (b"\x00", b"a", b"ab", b"b", b"\xff", b"\xff\xff"):
        kv.put(k, k.hex())
    run(kv_state.commit({}))
    # Uncommitted: one new key, one changed, one deleted.
    kv.put(b"aa", "new")
    kv.put(b"b", "changed")
    kv.delete(b"ab")
    expected = [(b"\x00", "00"), (b"a", "61"), (b"aa", "new"), (b"b", "changed"),
                (b"\xff", "ff"), (b"\xff\xff", "ffff")]
    for _ in range(2):  # before and after commit
        assert list(kv.range()) == expected
        assert list(kv.all()) == expected
        assert list(kv.range(b"a", b"b")) == expected[1:3]
        assert list(kv.range(b"a", b"b", reverse=True)) == expected[1:3][::-1]
        assert list(kv.range(None, b"aa")) == expected[:2]
        assert list(kv.range(b"aa", None)) == expected[2:]
        assert list(kv.range(reverse=True)) == expected[::-1]
        assert list(kv.range(b"\xff", reverse=True)) == expected[:3:-1]
        assert list(kv.prefix(b"a")) == expected[1:3]
        assert list(kv.prefix(b"\xff")) == expected[4:]
        assert list(kv.prefix(b"")) == expected
        assert list(kv.range(b"c", b"d")) == []
        run(kv_state.commit({}))


def test_kv_iterators_are_lazy(kv_state):
    kv = kv_state.kv("kv")
    for i in range(1000):
        kv.put(b"%04d" % i, i)
    run(kv_state.commit({}))
    it = kv.range()
    assert iter(it) is it  # an iterator, not a list
    assert next(it) == (b"0000", 0)
    assert next(it) == (b"0001", 1)


def test_kv_writes_while_iterating_are_seen_for_keys_not_reached(kv_state):
    kv = kv_state.kv("kv")
    for k in (b"a", b"b", b"c", b"d"):
        kv.put(k, 1)
    run(kv_state.commit({}))
    seen = []
    for k, v in kv.range():
        seen.append((k, v))
        if k == b"a":
            kv.delete(b"c")
            kv.put(b"d", 2)
    assert seen == [(b"a", 1), (b"b", 1), (b"d", 2)]


# --- window ------------------------------------------------------------------------------

@pytest.fixture
def win_state(tmp_path):
    st = open_state(tmp_path / "t", WindowStoreSpec("w", retention_ms=10_000),
                    SessionStoreSpec("s", retention_ms=10_000))
    yield st
    st.close()


@pytest.mark.parametrize("committed", [False, True])
def test_window_fetch_in_start_order(win_state, committed):
    w = win_state.window("w")
    for start in (3000, 1000, 2000, 0, 4000):
        w.put(b"k", start, start // 1000)
    w.put(b"j", 2000, "other key")
    # A longer key starting with b"k" (the next byte would look like a time prefix).
    w.put(b"k\x80", 2000, "longer key")
    if committed:
        run(win_state.commit({}))
    assert list(w.fetch(b"k", 1000, 3000)) == [(1000, 1), (2000, 2), (3000, 3)]
    assert list(w.fetch(b"k", 1000, 3000, reverse=True)) == [(3000, 3), (2000, 2), (1000, 1)]
    assert list(w.fetch(b"k", 1001, 2999)) == [(2000, 2)]
    assert list(w.fetch(b"k", 5000, 9000)) == []
    assert list(w.fetch(b"k\x80", 0, 9000)) == [(2000, "longer key")]
    assert list(w.fetch(b"j", 0, 9000)) == [(2000, "other key")]
    assert w.get(b"k", 2000) == 2
    assert w.get(b"k", 2500) is None
    assert list(w.fetch_all(2000, 3000)) == [(b"j", 2000, "other key"), (b"k", 2000, 2),
                                              (b"k\x80", 2000, "longer key"), (b"k", 3000, 3)]
    assert sorted(w.all()) == sorted([(b"k", t, t // 1000) for t in range(0, 5000, 1000)]
                                     + [(b"j", 2000, "other key"), (b"k\x80", 2000, "longer key")])


def test_window_batch_writes_merge_with_committed(win_state):
    w = win_state.window("w")
    w.put(b"k", 1000, "a")
    w.put(b"k", 2000, "b")
    run(win_state.commit({}))
    w.put(b"k", 1500, "new")
    w.put(b"k", 2000, "changed")
    w.delete(b"k", 1000)
    assert list(w.fetch(b"k", 0, 5000)) == [(1500, "new"), (2000, "changed")]
    assert list(w.fetch_all(0, 5000)) == [(b"k", 1500, "new"), (b"k", 2000, "changed")]
    run(win_state.commit({}))
    assert list(w.fetch(b"k", 0, 5000)) == [(1500, "new"), (2000, "changed")]
    assert list(w.fetch_all(0, 5000)) == [(b"k", 1500, "new"), (b"k", 2000, "changed")]


def test_window_negative_and_extreme_times(win_state):
    w = win_state.window("w")
    w.put(b"k", -5000, "neg")
    w.put(b"k", 0, "zero")
    assert list(w.fetch(b"k", -2**63, 2**63 - 1)) == [(-5000, "neg"), (0, "zero")]
    assert split_window_key(b"k" + bytes(8)) == (b"k", -2**63)


def test_window_retention(tmp_path):
    log = EmbeddedLog(None)
    st = open_state(tmp_path / "t", WindowStoreSpec("w", retention_ms=1000, changelog="w-cl"),
                    log=log)
    w = st.window("w")
    w.put(b"a", 0, "old")
    w.put(b"b", 500, "mid")
    run(st.commit({}))
    w.put(b"c", 1000, "new")  # observed stream time 1000: windows at or before 0 expire
    assert w.observed_stream_time == 1000
    assert w.get(b"a", 0) is None
    assert list(w.fetch(b"a", 0, 2000)) == []
    assert [k for k, _, _ in w.fetch_all(0, 2000)] == [b"b", b"c"]
    w.put(b"a", 0, "too late")  # dropped: the window is past retention
    assert w.expired_dropped == 1
    run(st.commit({}))
    assert sorted(k for k, _, _ in w.all()) == [b"b", b"c"]
    # Expiry deleted the window for good (tombstone in the changelog too).
    batch = run(log.fetch("w-cl", 0, 0))
    assert (split_window_key(batch.keys[-1]), batch.values[-1]) == ((b"a", 0), None)
    # Expiry also covers windows created and expired within one batch.
    w.put(b"d", 1100, "x")
    w.put(b"e", 5000, "far")
    run(st.commit({}))
    assert [k for k, _, _ in w.all()] == [b"e"]
    st.close()
    run(log.close())


# --- session -----------------------------------------------------------------------------

@pytest.mark.parametrize("committed", [False, True])
def test_session_find_overlapping(win_state, committed):
    s = win_state.session("s")
    s.put(b"k", 0, 100, "s1")
    s.put(b"k", 1000, 1500, "s2")
    s.put(b"k", 3000, 3000, "s3")
    s.put(b"j", 1000, 1500, "other")
    if committed:
        run(win_state.commit({}))
    gap = 500
    # A record at 1800 merges with s2 only (s2 ends 1500 >= 1300; s3 starts 3000 > 2300).
    assert list(s.find_sessions(b"k", 1800 - gap, 1800 + gap)) == [(1000, 1500, "s2")]
    # With a gap of 800, a record at 2200 bridges s2 and s3.
    assert [v for _, _, v in s.find_sessions(b"k", 2200 - 800, 2200 + 800)] == ["s2", "s3"]
    # Boundaries are inclusive.
    assert [v for _, _, v in s.find_sessions(b"k", 100, 0)] == ["s1"]
    assert list(s.find_sessions(b"k", 101, 999)) == []
    assert [v for _, _, v in s.fetch(b"k")] == ["s1", "s2", "s3"]
    assert s.get(b"k", 1000, 1500) == "s2"
    assert s.get(b"k", 1000, 1501) is None
    assert list(s.fetch_all(1500, 1000)) == [(b"j", 1000, 1500, "other"),
                                             (b"k", 1000, 1500, "s2")]


def test_session_merge_pattern(win_state):
    """What a session-window aggregate does per record: find, remove, put the merged one."""
    s = win_state.session("s")
    s.put(b"k", 0, 100, 1)
    s.put(b"k", 600, 700, 1)
    run(win_state.commit({}))
    t, gap = 350, 300
    start, end, total = t, t, 1
    for ss, se, v in s.find_sessions(b"k", t - gap, t + gap):
        s.remove(b"k", ss, se)
        start, end, total = min(start, ss), max(end, se), total + v
    s.put(b"k", start, end, total)
    assert list(s.fetch(b"k")) == [(0, 700, 3)]
    run(win_state.commit({}))
    assert list(s.fetch(b"k")) == [(0, 700, 3)]
    assert split_session_key(next(iter(s._cf.keys()))) == (b"k", 0, 700)


def test_session_retention(win_state):
    s = win_state.session("s")
    s.put(b"k", 0, 100, "old")
    s.put(b"k", 5000, 20_000, "new")  # observed 20000, retention 10000: ends < 10001 expire
    assert list(s.fetch(b"k")) == [(5000, 20_000, "new")]
    assert s.get(b"k", 0, 100) is None
    run(win_state.commit({}))
    assert list(s.all()) == [(b"k", 5000, 20_000, "new")]


def test_store_accessors_check_kinds(win_state):
    with pytest.raises(TypeError):
        win_state.kv("w")
    with pytest.raises(TypeError):
        win_state.session("w")
    with pytest.raises(KeyError):
        win_state.store("nope")
    assert win_state.store("s").name == "s"

"""Changelogs, commits, restore and crash recovery of task state (on the embedded log)."""
from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from streamsql.runtime.log.embedded import EmbeddedLog
from streamsql.state import KeyValueStoreSpec, SessionStoreSpec, TaskState, WindowStoreSpec

REPO = Path(__file__).resolve().parents[1]


def run(coro):
    return asyncio.run(coro)


class CountingLog(EmbeddedLog):
    """An embedded log that counts produce calls per topic."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.produce_calls: dict[str, int] = {}

    async def produce(self, topic, records):
        self.produce_calls[topic] = self.produce_calls.get(topic, 0) + 1
        return await super().produce(topic, records)


def changelog(log, topic, partition=0):
    """All (key, value) records of a changelog partition, in offset order."""
    async def go():
        out, offset = [], 0
        while True:
            b = await log.fetch(topic, partition, offset)
            if not b.offsets:
                return out
            out += list(zip(b.keys, b.values))
            offset = b.offsets[-1] + 1
    return run(go())


KV = KeyValueStoreSpec("agg", changelog="q1-agg-changelog")


def open_kv(path, log, **kw):
    return run(TaskState.open(path, [KV], log=log, **kw))


def contents(st):
    return list(st.kv("agg").range())


# --- writing the changelog ---------------------------------------------------------------

def test_changelog_written_per_flush_with_tombstones(tmp_path):
    log = CountingLog(None)
    st = run(TaskState.open(tmp_path / "t", [KV], log=log, partition=2, partitions=3))
    info = run(log.describe_topic("q1-agg-changelog"))
    assert info.partitions == 3
    assert dict(info.config)["cleanup.policy"] == "compact"
    kv = st.kv("agg")
    kv.put(b"a", 1)
    kv.put(b"b", 2)
    kv.put(b"a", 3)  # only the latest value of a key goes out
    kv.delete(b"b")
    kv.put(b"c", {"x": [1]})
    assert changelog(log, "q1-agg-changelog", 2) == []  # buffered until flush
    run(st.flush())
    assert log.produce_calls == {"q1-agg-changelog": 1}  # one produce call per flush
    assert changelog(log, "q1-agg-changelog", 2) == [(b"a", b"3"), (b"b", None),
                                                    (b"c", b'{"x":[1]}')]
    assert changelog(log, "q1-agg-changelog", 0) == []  # the task's partition only
    kv.put(b"d", 4)
    run(st.commit({("src", 2): 10}))
    assert log.produce_calls == {"q1-agg-changelog": 2}
    assert changelog(log, "q1-agg-changelog", 2)[3:] == [(b"d", b"4")]
    assert st.changelog_positions() == {"agg": 4}
    run(st.commit({("src", 2): 11}))  # nothing written: nothing produced
    assert log.produce_calls == {"q1-agg-changelog": 2}
    st.close()


def test_store_without_changelog_or_log(tmp_path):
    log = CountingLog(None)
    st = run(TaskState.open(tmp_path / "t", [KeyValueStoreSpec("local"), KV], log=log))
    st.kv("local").put(b"k", 1)
    run(st.commit({}))
    assert log.produce_calls == {}
    st.close()
    st = run(TaskState.open(tmp_path / "t", [KV]))  # no log: local only
    st.kv("agg").put(b"k", 1)
    run(st.commit({}))
    assert contents(st) == [(b"k", 1)]
    st.close()


# --- commits -----------------------------------------------------------------------------

def test_commit_atomicity_uncommitted_batch_is_lost(tmp_path):
    log = EmbeddedLog(tmp_path / "log")
    st = open_kv(tmp_path / "t", log)
    kv = st.kv("agg")
    kv.put(b"a", 1)
    kv.put(b"b", 1)
    run(st.commit({("src", 0): 5, ("other", 1): 7}, extra={"sink_end": {"out": 3}}))
    kv.put(b"a", 2)
    kv.delete(b"b")
    kv.put(b"c", 2)
    assert contents(st) == [(b"a", 2), (b"c", 2)]
    st.close()  # a crash: no commit
    st = open_kv(tmp_path / "t", log)
    assert contents(st) == [(b"a", 1), (b"b", 1)]
    assert st.committed_offsets() == {("src", 0): 5, ("other", 1): 7}
    assert st.committed_extra() == {"sink_end": {"out": 3}}
    assert st.commit_id == 1
    # Offsets merge; extra None keeps the previous extra.
    run(st.commit({("src", 0): 9}))
    assert st.committed_offsets() == {("src", 0): 9, ("other", 1): 7}
    assert st.committed_extra() == {"sink_end": {"out": 3}}
    st.close()
    run(log.close())


def test_flushed_but_uncommitted_batch_is_reverted(tmp_path):
    log = EmbeddedLog(tmp_path / "log")
    st = open_kv(tmp_path / "t", log)
    kv = st.kv("agg")
    kv.put(b"a", 1)
    kv.put(b"b", 1)
    run(st.commit({("src", 0): 1}))
    kv.put(b"a", 2)
    kv.delete(b"b")
    kv.put(b"c", 2)
    run(st.flush())  # the changelog has the batch; RocksDB does not
    st.close()
    st = open_kv(tmp_path / "t", log)
    assert contents(st) == [(b"a", 1), (b"b", 1)]
    assert st.committed_offsets() == {("src", 0): 1}
    assert st.restore_stats["agg"].reverted == 3
    # The changelog was repaired: compacted or not, it rebuilds the committed state.
    st.destroy()
    for compact in (False, True):
        if compact:
            run(log.compact("q1-agg-changelog"))
        st = open_kv(tmp_path / "t", log)
        assert contents(st) == [(b"a", 1), (b"b", 1)]
        st.destroy()
    run(log.close())


def test_abort_discards_batch_and_reverts_changelog(tmp_path):
    log = EmbeddedLog(None)
    st = run(TaskState.open(tmp_path / "t", [KV, WindowStoreSpec("w", 100, "w-cl")], log=log))
    kv, w = st.kv("agg"), st.window("w")
    kv.put(b"a", 1)
    w.put(b"k", 50, "x")
    run(st.commit({("src", 0): 1}))
    kv.put(b"a", 2)
    w.put(b"k", 500, "y")
    run(st.flush())
    run(st.abort())
    assert contents(st) == [(b"a", 1)]
    assert w.observed_stream_time == 50
    assert list(w.all()) == [(b"k", 50, "x")]
    kv.put(b"b", 3)
    run(st.commit({("src", 0): 2}))
    st.destroy()
    st = run(TaskState.open(tmp_path / "t", [KV, WindowStoreSpec("w", 100, "w-cl")], log=log))
    assert contents(st) == [(b"a", 1), (b"b", 3)]
    assert list(st.window("w").all()) == [(b"k", 50, "x")]
    st.close()


# --- restore -----------------------------------------------------------------------------

def write_batches(st, batches, start=0):
    kv = st.kv("agg")
    for i in range(batches):
        for k in range(20):
            key = b"key-%02d" % ((i * 7 + k) % 50)
            kv.put(key, (kv.get(key) or 0) + 1)
        kv.delete(b"key-%02d" % (i % 50))
        run(st.commit({("src", 0): start + i + 1}))


def test_restore_from_changelog_into_empty_dir(tmp_path):
    log = EmbeddedLog(tmp_path / "log")
    specs = [KV, WindowStoreSpec("w", 10_000, "w-cl"), SessionStoreSpec("s", 10_000, "s-cl")]
    st = run(TaskState.open(tmp_path / "t", specs, log=log))
    write_batches(st, 30)
    w, s = st.window("w"), st.session("s")
    for t in range(0, 5000, 1000):
        w.put(b"k", t, t)
    s.put(b"k", 10, 20, "s")
    s.put(b"j", 30, 40, "t")
    run(st.commit({("src", 0): 31}))
    want = (contents(st), list(w.fetch_all(0, 10_000)), list(s.fetch_all(0, 10_000)))
    assert len(want[0]) > 20
    st.destroy()
    assert not (tmp_path / "t").exists()
    for compact in (False, True):
        if compact:
            assert run(log.compact("q1-agg-changelog")) > 0
        st = run(TaskState.open(tmp_path / "t", specs, log=log))
        assert st.restore_stats["agg"].from_offset == 0
        assert st.restore_stats["agg"].replayed > 0
        w, s = st.window("w"), st.session("s")
        # The time indexes and observed stream times are rebuilt too.
        assert (contents(st), list(w.fetch_all(0, 10_000)),
                list(s.fetch_all(0, 10_000))) == want
        assert (w.observed_stream_time, s.observed_stream_time) == (4000, 40)
        # Source offsets live in the local RocksDB only: a rebuilt task has none.
        assert st.committed_offsets() == {}
        st.destroy()
    run(log.close())


def test_restore_skips_checkpointed_part(tmp_path):
    """A stale local copy (a checkpoint taken earlier) catches up from its position only."""
    log = EmbeddedLog(tmp_path / "log")
    st = open_kv(tmp_path / "t", log)
    write_batches(st, 10)
    st.snapshot(tmp_path / "snap")
    pos = st.changelog_positions()["agg"]
    write_batches(st, 10, start=10)
    end = st.changelog_positions()["agg"]
    want = contents(st)
    st.close()
    shutil.rmtree(tmp_path / "t")
    shutil.copytree(tmp_path / "snap", tmp_path / "t")
    st = open_kv(tmp_path / "t", log, uncommitted_tail="replay")
    stats = st.restore_stats["agg"]
    assert (stats.from_offset, stats.to_offset, stats.replayed) == (pos, end, end - pos)
    assert contents(st) == want
    assert st.committed_offsets() == {("src", 0): 10}  # the copy's own commit
    st.close()
    # Reopened at the end: nothing to restore.
    st = open_kv(tmp_path / "t", log)
    assert st.restore_stats["agg"].replayed == 0
    assert contents(st) == want
    st.close()
    run(log.close())


class FailingFetchLog(EmbeddedLog):
    """An embedded log whose fetch fails after ``fetches`` calls (a crash mid-restore)."""

    fetches = -1

    async def fetch(self, *a, **kw):
        if self.fetches == 0:
            raise OSError("disk gone")
        self.fetches -= 1
        return await super().fetch(*a, **kw)


def test_interrupted_restore_resumes_and_is_not_taken_for_a_tail(tmp_path, monkeypatch):
    monkeypatch.setattr("streamsql.state.changelog.RESTORE_CHUNK", 7)
    log = FailingFetchLog(tmp_path / "log")
    st = open_kv(tmp_path / "t", log)
    write_batches(st, 10)
    want = contents(st)
    end = st.changelog_positions()["agg"]
    st.destroy()
    log.fetches = 3
    with pytest.raises(OSError):
        open_kv(tmp_path / "t", log)
    log.fetches = -1
    st = open_kv(tmp_path / "t", log)  # policy "revert", yet nothing is reverted
    stats = st.restore_stats["agg"]
    assert (stats.from_offset, stats.to_offset, stats.reverted) == (21, end, 0)
    assert stats.replayed == end - 21
    assert contents(st) == want
    st.destroy()
    st = open_kv(tmp_path / "t", log)  # and the changelog is intact
    assert contents(st) == want
    st.close()
    run(log.close())


@pytest.mark.parametrize("policy", ["revert", "replay"])
def test_checkpoint_past_changelog_end(tmp_path, policy):
    """The changelog topic was recreated: replay rebuilds from it, revert re-publishes."""
    log = EmbeddedLog(None)
    st = open_kv(tmp_path / "t", log)
    write_batches(st, 5)
    want = contents(st)
    st.close()
    run(log.delete_topic("q1-agg-changelog"))
    st = open_kv(tmp_path / "t", log, uncommitted_tail=policy)
    if policy == "replay":
        assert st.restore_stats["agg"].wiped
        assert contents(st) == []
    else:
        assert st.restore_stats["agg"].republished == len(want)
        assert contents(st) == want
        st.destroy()
        st = open_kv(tmp_path / "t", log)
        assert contents(st) == want
    st.close()


# --- kill -9 -----------------------------------------------------------------------------

CHILD = textwrap.dedent("""
    import asyncio, os, signal, sys
    from streamsql.runtime.log.embedded import EmbeddedLog
    from streamsql.state import KeyValueStoreSpec, TaskState

    async def main(root, mode):
        log = EmbeddedLog(root + "/log")
        st = await TaskState.open(root + "/state", [KeyValueStoreSpec("agg", "cl")], log=log)
        kv = st.kv("agg")
        n = st.committed_offsets().get(("src", 0), 0)
        while True:
            for k in range(200):
                key = b"key-%03d" % k
                kv.put(key, (kv.get(key) or 0) + 1)
            if mode == "flush-then-die" and n == 5:
                await st.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            n += 1
            await st.commit({("src", 0): n}, extra={"n": n})
            if n == 1:
                print("ready", flush=True)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
""")


def spawn(root: Path, mode: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, str(root), mode],
                            stdout=subprocess.PIPE, cwd=REPO)


def check_consistent(root: Path) -> int:
    """Reopen after a kill: every counter equals the committed source offset and extra; a
    rebuild from the changelog alone agrees. Returns the committed batch count."""
    log = EmbeddedLog(root / "log")
    spec = KeyValueStoreSpec("agg", "cl")
    st = run(TaskState.open(root / "state", [spec], log=log))
    n = st.committed_offsets()[("src", 0)]
    assert st.committed_extra() == {"n": n}
    values = [v for _, v in st.kv("agg").range()]
    assert values == [n] * 200
    st.destroy()
    st = run(TaskState.open(root / "state", [spec], log=log))
    assert [v for _, v in st.kv("agg").range()] == [n] * 200
    st.close()
    run(log.close())
    return n


def test_kill_9_after_flush_before_commit(tmp_path):
    p = spawn(tmp_path, "flush-then-die")
    p.wait(timeout=60)
    assert p.returncode == -signal.SIGKILL
    assert check_consistent(tmp_path) == 5


def test_kill_9_at_a_random_point(tmp_path):
    p = spawn(tmp_path, "loop")
    try:
        assert p.stdout.readline() == b"ready\n"
        time.sleep(0.5)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=60)
    assert check_consistent(tmp_path) >= 1


def test_a_task_whose_changelog_cannot_be_made_can_be_opened_again(tmp_path):
    """Creating the changelog topic fails (another node made it a moment ago and the broker
    asked does not know it yet, say): the open fails, and the task's directory is not left
    locked: the stage's next attempt opens it."""
    from streamsql.runtime.log.base import LogView

    class Failing(LogView):
        failures = 1

        async def create_topic(self, name, partitions=1, replicas=1, config=None):
            if self.failures:
                self.failures -= 1
                raise RuntimeError("broker not available")
            return await self.inner.create_topic(name, partitions, replicas, config)

    async def go():
        log = Failing(EmbeddedLog(tmp_path / "log"))
        with pytest.raises(RuntimeError, match="broker not available") as failed:
            await TaskState.open(tmp_path / "task", [KV], log=log)
        # (The error is still held, as the stage runner holds it until it starts over.)
        st = await TaskState.open(tmp_path / "task", [KV], log=log)
        assert failed.value is not None
        st.kv("agg").put(b"k", 1)
        await st.commit({})
        assert list(st.kv("agg").all()) == [(b"k", 1)]
        st.close()
        await log.inner.close()
    run(go())


def test_the_wal_stays_bounded_when_one_column_family_is_rarely_written(tmp_path):
    """A task's stores share one WAL, and a WAL file can only go once every column family
    has flushed what it holds: a store written once (here ``rare``) used to keep every WAL
    file, so the state directory grew by the whole write volume (1.7 GB after a 5M-update
    soak). With the default config the WAL stays near ``max_total_wal_bytes``."""
    from streamsql.state import BYTES, RocksDBConfig

    busy = KeyValueStoreSpec("busy", values=BYTES)
    rare = KeyValueStoreSpec("rare", values=BYTES)
    config = RocksDBConfig()
    value = b"v" * 1000

    async def go() -> tuple[int, int]:
        st = await TaskState.open(tmp_path / "t", [busy, rare], config=config)
        st.kv("rare").put(b"k", b"once")
        await st.commit({("in", 0): 0})
        written = 0
        for batch in range(200):  # 200 MB through the busy store, 1 MB a commit
            store = st.kv("busy")
            for i in range(1000):
                store.put(b"%d" % (batch * 1000 + i), value)
            written += 1000 * len(value)
            await st.commit({("in", 0): batch + 1})
        # Measured open: closing flushes every family and drops the WAL.
        wal = sum(p.stat().st_size for p in (tmp_path / "t").glob("*.log"))
        st.close()
        return written, wal

    written, wal = run(go())
    assert written >= 200 * 1024 * 1024 * 0.95
    assert wal <= 2 * config.max_total_wal_bytes, f"WAL holds {wal / 1e6:.0f} MB"

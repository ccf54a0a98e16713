"""Sealed commits of task state (``TaskState.seal`` / ``commit_sealed``): under a Kafka
transaction that commits while the task goes on processing, the local commit holds exactly
what the transaction held, and what came after stays in the batch for the next commit. On
real RocksDB and the embedded log's changelogs."""
from __future__ import annotations

import asyncio

import pytest

from streamsql.runtime.log.embedded import EmbeddedLog
from streamsql.state import KeyValueStoreSpec, TaskState, WindowStoreSpec

KV = KeyValueStoreSpec("agg", changelog="q-agg-changelog")
WIN = WindowStoreSpec("w", 10_000, "q-w-changelog")
LOCAL = KeyValueStoreSpec("local", changelog=None)


async def _changelog(log: EmbeddedLog, topic: str) -> list[tuple[bytes, bytes | None]]:
    out: list[tuple[bytes, bytes | None]] = []
    offset = 0
    while True:
        b = await log.fetch(topic, 0, offset)
        if not b.offsets:
            return out
        out += list(zip(b.keys, b.values))
        offset = b.offsets[-1] + 1


def test_commit_sealed_writes_the_sealed_batch_and_keeps_what_came_after(tmp_path) -> None:
    log = EmbeddedLog(tmp_path / "log")

    async def first_run() -> None:
        st = await TaskState.open(tmp_path / "t", [KV, WIN, LOCAL], log=log)
        kv, w, local = st.kv("agg"), st.window("w"), st.kv("local")
        kv.put(b"a", 1)
        kv.put(b"b", 1)
        w.put(b"a", 1000, "w1")
        local.put(b"x", 1)
        await st.prepare_commit()  # (the transaction's changelog records)
        sealed = st.seal()
        # The next transaction's work, before the last one has committed.
        kv.put(b"a", 2)
        kv.delete(b"b")
        kv.put(b"c", 1)
        w.put(b"a", 5000, "w5")
        local.put(b"x", 2)
        st.commit_sealed(sealed, {("in", 0): 10}, {"seq": 1})
        # Read committed: the sealed batch only.
        assert st.committed_offsets() == {("in", 0): 10}
        assert kv.committed_get(b"a") == 1 and kv.committed_get(b"b") == 1
        assert kv.committed_get(b"c") is None
        # The task itself reads its own writes, those after the seal included.
        assert (kv.get(b"a"), kv.get(b"b"), kv.get(b"c")) == (2, None, 1)
        assert [k for k, _ in kv.range()] == [b"a", b"c"]
        assert w.get(b"a", 5000) == "w5" and w.get(b"a", 1000) == "w1"
        assert local.get(b"x") == 2
        # Only the writes after the seal are owed to the changelog now.
        before = len(await _changelog(log, "q-agg-changelog"))
        await st.commit({("in", 0): 20}, {"seq": 2})
        assert (await _changelog(log, "q-agg-changelog"))[before:] == [
            (b"a", st.kv("agg")._dumps(2)), (b"b", None), (b"c", st.kv("agg")._dumps(1))]
        st.close()

    asyncio.run(first_run())

    async def reopened() -> None:
        st = await TaskState.open(tmp_path / "t", [KV, WIN, LOCAL], log=log)
        kv = st.kv("agg")
        assert st.committed_offsets() == {("in", 0): 20}
        assert (kv.get(b"a"), kv.get(b"b"), kv.get(b"c")) == (2, None, 1)
        assert st.window("w").get(b"a", 5000) == "w5"
        assert st.kv("local").get(b"x") == 2
        st.close()

    asyncio.run(reopened())


def test_a_crash_after_a_sealed_commit_loses_only_what_came_after(tmp_path) -> None:
    """The local state after a sealed commit is the transaction's, exactly: writes made
    after the seal (the next transaction's, which a crash aborts) are not in it."""
    log = EmbeddedLog(tmp_path / "log")

    async def run() -> None:
        st = await TaskState.open(tmp_path / "t", [KV], log=log, uncommitted_tail="replay")
        kv = st.kv("agg")
        kv.put(b"a", 1)
        await st.prepare_commit()
        sealed = st.seal()
        kv.put(b"a", 2)  # never flushed nor committed: the process dies
        st.commit_sealed(sealed, {("in", 0): 1})
        st.close()  # (as a crash: the batch is discarded)
        st = await TaskState.open(tmp_path / "t", [KV], log=log, uncommitted_tail="replay")
        assert st.kv("agg").get(b"a") == 1
        assert st.committed_offsets() == {("in", 0): 1}
        st.close()

    asyncio.run(run())


def test_sealing_with_changelog_records_owed_is_refused(tmp_path) -> None:
    log = EmbeddedLog(tmp_path / "log")

    async def run() -> None:
        st = await TaskState.open(tmp_path / "t", [KV], log=log)
        st.kv("agg").put(b"a", 1)
        with pytest.raises(RuntimeError, match="unflushed"):
            st.seal()
        st.close()

    asyncio.run(run())

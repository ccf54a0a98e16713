"""State is bounded by RocksDB, not by Python memory: writing more distinct keys through a
store does not grow the Python heap."""
from __future__ import annotations

import asyncio
import tracemalloc

from streamsql.runtime.log.embedded import EmbeddedLog
from streamsql.state import KeyValueStoreSpec, TaskState, WindowStoreSpec

KEYS = 60_000
BATCH = 5_000


def test_python_heap_does_not_grow_with_key_count(tmp_path):
    async def go():
        log = EmbeddedLog(tmp_path / "log")
        st = await TaskState.open(tmp_path / "state",
                                  [KeyValueStoreSpec("kv", changelog="kv-cl"),
                                   WindowStoreSpec("w", 10**12, changelog="w-cl")], log=log)
        kv, w = st.kv("kv"), st.window("w")
        tracemalloc.start(1)
        try:
            early = late = None
            for i in range(KEYS):
                key = b"key-%012d" % i
                kv.put(key, {"count": i, "sum": i * 1.5, "name": "x" * 20})
                if i % 4 == 0:
                    w.put(key, i, [i])
                if (i + 1) % BATCH == 0:
                    await st.commit({("src", 0): i + 1})
                    if i + 1 == 4 * BATCH:
                        early = tracemalloc.take_snapshot()
            late = tracemalloc.take_snapshot()
            # Reads over everything must not accumulate either.
            assert sum(1 for _ in kv.range()) == KEYS
            assert kv.get(b"key-%012d" % 7) == {"count": 7, "sum": 10.5, "name": "x" * 20}
        finally:
            tracemalloc.stop()
        st.close()
        await log.close()
        return early, late

    early, late = asyncio.run(go())
    # The embedded log keeps a sparse offset index per segment (not this module's memory).
    not_log = [tracemalloc.Filter(False, "*/runtime/log/*")]
    grown = sum(s.size_diff for s in late.filter_traces(not_log).compare_to(
        early.filter_traces(not_log), "filename"))
    grown_all = sum(s.size_diff for s in late.compare_to(early, "filename"))
    keys_written = KEYS - 4 * BATCH
    # Keeping even the key bytes objects alive would cost > 50 bytes per key.
    print(f"python heap growth over {keys_written:,} keys: {grown:,} bytes "
          f"({grown_all:,} with the log's index)")
    assert grown < 64 * 1024, grown
    assert grown_all < keys_written * 5, grown_all

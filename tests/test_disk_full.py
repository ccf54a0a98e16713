"""The disk-full drill: a server whose data directory is on a small tmpfs is written until the
disk is full, then the disk grows and writing goes on. Nothing acknowledged may be lost, the
client must see errors (never an ack, never a silent empty answer) while the disk is full,
and writing must resume without a restart.

The tmpfs needs root (CI runs as root); where it cannot be mounted the drill is skipped, saying
why, and the same failure injected at the write call (test_embedded_log.py) still runs.
"""
from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import httpx
import orjson
import pytest

from streamsql.runtime.log.embedded import EmbeddedLog
from streamsql.server.testing import NodeProcess

pytestmark = pytest.mark.timeout(300)

PAD = "x" * 900  # ~1 KB a row: a 4 MiB disk holds a few thousand


def _mount(path: Path, size: str, remount: bool = False) -> None:
    opts = f"remount,size={size}" if remount else f"size={size}"
    subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], check=True,
                   capture_output=True)


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs; yields (path, grow) where grow() makes it 64 MiB."""
    disk = tmp_path / "disk"
    disk.mkdir()
    try:
        _mount(disk, "4m")
    except (OSError, subprocess.CalledProcessError) as exc:
        # (The same failure injected at the write call runs everywhere: test_embedded_log.)
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {exc}")
    try:
        yield disk, lambda: _mount(disk, "64m", remount=True)
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False, capture_output=True)


def _insert(client: httpx.Client, url: str, first: int, n: int) -> tuple[list[int], list[dict]]:
    """Rows ``first``..``first+n-1`` in one /inserts-stream request: (acked ids, error rows)."""
    lines = [orjson.dumps({"target": "S"})]
    lines += [orjson.dumps({"ID": i, "PAD": PAD}) for i in range(first, first + n)]
    resp = client.post(f"{url}/inserts-stream", content=b"\n".join(lines) + b"\n")
    assert resp.status_code == 200, resp.text
    answers = [orjson.loads(line) for line in resp.content.splitlines() if line.strip()]
    assert answers, "an /inserts-stream answer with neither an ack nor an error"
    acked = [first + a["seq"] for a in answers if a["status"] == "ok"]
    errors = [a for a in answers if a["status"] == "error"]
    return acked, errors


def _push_ids(url: str, source: str, n: int) -> list[int]:
    """The first ``n`` IDs of ``source`` (a stream, with a WHERE clause perhaps), from a push
    query from its beginning: a client's view (it times out if fewer ever arrive)."""
    body = {"sql": f"SELECT ID FROM {source} EMIT CHANGES LIMIT {n};",
            "properties": {"auto.offset.reset": "earliest"}}
    with httpx.Client(timeout=90) as client:
        r = client.post(f"{url}/query-stream", json=body)
    assert r.status_code == 200, r.text
    lines = [orjson.loads(line) for line in r.content.splitlines()[1:] if line.strip()]
    return [row[0] for row in lines if isinstance(row, list)]


def _ids_in_topic(data_dir: Path, topic: str) -> list[int]:
    async def read() -> list[int]:
        log = EmbeddedLog(data_dir)
        try:
            ids, offset = [], 0
            while True:
                batch = await log.fetch(topic, 0, offset, 10_000)
                if not batch.offsets:
                    return ids
                ids += [orjson.loads(v)["ID"] for v in batch.values]
                offset = batch.offsets[-1] + 1
        finally:
            await log.close()
    return asyncio.run(read())


def test_a_full_disk_loses_nothing_acknowledged_and_writing_resumes(small_disk):
    disk, grow = small_disk
    data = disk / "data"
    acked: list[int] = []
    node = NodeProcess(data).start()
    try:
        with httpx.Client(timeout=30) as client:
            r = client.post(f"{node.url}/ksql", json={"ksql": (
                "CREATE STREAM S (ID INT, PAD STRING) WITH (KAFKA_TOPIC='S', PARTITIONS=1, "
                "VALUE_FORMAT='JSON');"
                # A query writing to the same disk: it must wait out the full disk too.
                "CREATE STREAM T AS SELECT ID FROM S;")})
            assert r.status_code == 200, r.text
            # Fill the disk: batches of 50 rows until the server says it cannot write, then
            # single rows until not even one fits.
            next_id = 0
            for batch in (50, 1):
                errors = []
                while not errors:
                    got, errors = _insert(client, node.url, next_id, batch)
                    acked += got
                    next_id += batch
                    assert next_id < 100_000, "the disk never filled up"
            assert errors[0]["error_code"] == 50000
            assert "No space left on device" in errors[0]["message"]
            # While the disk is full every write is refused, with an error the client sees.
            for _ in range(3):
                got, errors = _insert(client, node.url, next_id, 50)
                assert not got and errors
                next_id += 50
            r = client.post(f"{node.url}/ksql", json={
                "ksql": f"INSERT INTO S (ID, PAD) VALUES ({next_id}, '{PAD}');"})
            assert r.status_code >= 500 and "No space left on device" in r.json()["message"]
            next_id += 1
            # Space returns: writing resumes with no restart, each row acknowledged.
            grow()
            for _ in range(5):
                got, errors = _insert(client, node.url, next_id, 50)
                assert not errors and len(got) == 50
                acked += got
                next_id += 50
            r = client.post(f"{node.url}/ksql", json={
                "ksql": f"INSERT INTO S (ID, PAD) VALUES ({next_id}, '{PAD}');"})
            assert r.status_code == 200, r.text
            acked.append(next_id)
    finally:
        node.proc.kill()  # no clean shutdown: what is acknowledged must already be safe
        node.proc.wait()
    node = NodeProcess(data).start()  # the restart repairs the log as it opens
    try:
        # The query went on once the disk had room: it reaches the last acknowledged row.
        assert _push_ids(node.url, f"T WHERE ID = {acked[-1]}", 1) == [acked[-1]]
    finally:
        node.stop()
    assert sorted(_ids_in_topic(data, "S")) == sorted(acked)
    # Every acknowledged row, and nothing else, went through the query (a stateless query
    # is at-least-once on the embedded log: a batch whose commit failed may be written twice).
    assert set(_ids_in_topic(data, "T")) == set(acked)
    assert not any("bytes cut" in line for line in node.stderr_lines), node.stderr_lines

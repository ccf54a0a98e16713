"""The file connectors' throughput on the embedded log: a FileStreamSource publishing a file
of N lines into a topic (Connect's default JsonConverter with schemas, and StringConverter),
then a FileStreamSink writing the topic back to a file; lines/s of each, beside the rate the
same lines are produced straight to the log in batches of 2,000 (the source's batch.size).

    python bench/bench_connect_file.py [--lines 200000]
"""
from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from streamsql.runtime.connect.worker import Worker
from streamsql.runtime.log.base import ProducerRecord
from streamsql.runtime.log.embedded import EmbeddedLog

SOURCE = "org.apache.kafka.connect.file.FileStreamSourceConnector"
SINK = "org.apache.kafka.connect.file.FileStreamSinkConnector"


async def run(lines: int, converter: str, base: Path) -> tuple[float, float]:
    src, out = base / "in.txt", base / "out.txt"
    log = EmbeddedLog(base / "data")
    worker = Worker(log, "bench_", "localhost", {"value.converter": converter, "offset.flush.interval.ms": "1000"})
    await worker.start()
    try:
        t0 = time.perf_counter()
        await worker.create("src", {"connector.class": SOURCE, "file": str(src), "topic": "lines"})
        while await log.describe_topic("lines") is None or (await log.end_offsets("lines"))[0] < lines:
            await asyncio.sleep(0.01)
        source_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        await worker.create("snk", {"connector.class": SINK, "file": str(out), "topics": "lines"})
        while (await log.committed("connect-snk", "lines")).get(0, 0) < lines:
            await asyncio.sleep(0.01)
        sink_s = time.perf_counter() - t0
        assert out.read_text().count("\n") == lines
        return lines / source_s, lines / sink_s
    finally:
        await worker.close()
        await log.close()


async def produce_only(base: Path) -> float:
    lines = (base / "in.txt").read_bytes().splitlines()
    log = EmbeddedLog(base / "raw")
    await log.create_topic("raw", 1)
    t0 = time.perf_counter()
    for i in range(0, len(lines), 2000):
        await log.produce("raw", [ProducerRecord(None, v, 0) for v in lines[i:i + 2000]])
    rate = len(lines) / (time.perf_counter() - t0)
    await log.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=200_000)
    args = parser.parse_args()
    for converter in ("org.apache.kafka.connect.json.JsonConverter",
                      "org.apache.kafka.connect.storage.StringConverter"):
        with tempfile.TemporaryDirectory() as tmp:
            base = Path(tmp)
            (base / "in.txt").write_text("".join(f"line {i} of the file, some text to carry\n"
                                                 for i in range(args.lines)))
            limit = asyncio.run(produce_only(base))
            source, sink = asyncio.run(run(args.lines, converter, base))
            print(f"{converter.rsplit('.', 1)[1]:<16} source {source:>10,.0f} lines/s   "
                  f"sink {sink:>10,.0f} lines/s   (the lines produced straight to the log: {limit:,.0f}/s)")


if __name__ == "__main__":
    main()

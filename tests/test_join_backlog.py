"""Joins started over a backlog: both inputs already full when the query starts (a table
loaded yesterday, a day of events). Records are joined in timestamp order across the
inputs, as if they had arrived in real time (Kafka Streams' semantics), whatever order the
topics are read in: every stream record meets the table row stamped before it, and not the
one stamped after.

Each test fills both topics, then starts the query on an engine in service mode (RocksDB
state) and reads the sink topic back once the query has consumed its input: on the embedded
log on disk, and the stream-table and stream-stream joins also on a Kafka broker, at least
once and exactly once (a namespace of topics of their own on the session's broker).
"""
from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Callable

import pytest

from streamsql.engine import Engine
from streamsql.runtime.log.base import Log, ProducerRecord
from streamsql.runtime.log.embedded import EmbeddedLog
from streamsql.runtime.log.kafka import KafkaLog
from streamsql.testing.prefixed import PrefixedLog

pytestmark = pytest.mark.timeout(300)

N = 6000  # records per side: several poll batches of each


async def _fill(log: Log, topic: str, records: list[tuple[str, dict | None, int]]) -> None:
    for i in range(0, len(records), 1000):
        await log.produce(topic, [ProducerRecord(k.encode(), None if v is None else json.dumps(v).encode(), ts)
                                  for k, v, ts in records[i:i + 1000]])


async def _drained(engine: Engine, log: Log, timeout: float = 180.0) -> None:
    """Until every stage of every query has committed all of its input (but a transaction
    marker: under exactly_once_v2 the committed offset stops before the last one)."""
    slack = 1 if log.distributed else 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        left = 0
        for runners in engine.runners.values():
            for runner in runners:
                for topic in runner.topics:
                    committed = await log.committed(runner.group, topic)
                    ends = await log.end_offsets(topic)
                    left += sum(max(e - committed.get(p, 0) - slack, 0) for p, e in enumerate(ends))
        if not left:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the query did not consume its input")


async def _sink(log: Log, topic: str) -> list[tuple[str, dict | None, int]]:
    out = []
    for p, end in enumerate(await log.end_offsets(topic)):
        off = 0
        while off < end:
            b = await log.fetch(topic, p, off, 10000)
            if not b.offsets:
                break  # a transaction's marker ends the partition
            out += [(k.decode(), None if v is None else json.loads(v), ts)
                    for k, v, ts in zip(b.keys, b.values, b.timestamps)]
            off = b.offsets[-1] + 1
    return out


@pytest.fixture(params=["embedded", "kafka-at_least_once", "kafka-exactly_once_v2"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], tuple[Log, dict]]:
    """Makes the log the engine runs on, with the engine's config (the queries join the
    backlog written before them: from the topics' start)."""
    if request.param == "embedded":
        return lambda: (EmbeddedLog(tmp_path / "data"), {"auto.offset.reset": "earliest"})
    kafka = request.getfixturevalue("kafka")
    namespace = request.getfixturevalue("unique_topic")() + "-"
    config = {"auto.offset.reset": "earliest", "processing.guarantee": request.param.split("-", 1)[1],
              "linger.ms": 1}
    return lambda: (PrefixedLog(KafkaLog(kafka.bootstrap_servers, config), namespace), config)


def _run(backend: Callable[[], tuple[Log, dict]], tmp_path: Path, setup: str,
         inputs: dict[str, list], query: str, sink: str) -> list:
    async def main() -> list:
        log, config = backend()
        engine = Engine(log, config, state_dir=tmp_path / "state")
        await engine.start()
        try:
            await engine.execute(setup)
            for topic, records in inputs.items():
                await _fill(log, topic, records)
            await engine.execute(query)
            await _drained(engine, log)
            return await _sink(log, sink)
        finally:
            await engine.close()
            await log.close()
    return asyncio.run(main())


def _embedded(tmp_path: Path) -> Callable[[], tuple[Log, dict[str, Any]]]:
    return lambda: (EmbeddedLog(tmp_path / "data"), {"auto.offset.reset": "earliest"})


TABLE_AND_STREAM = (
    "CREATE TABLE users (id STRING PRIMARY KEY, name STRING) "
    "WITH (kafka_topic='users', value_format='JSON', partitions=2);"
    "CREATE STREAM clicks (id STRING KEY, n BIGINT) "
    "WITH (kafka_topic='clicks', value_format='JSON', partitions=2);")


def test_stream_table_join_over_a_backlog_joins_every_record(backend, tmp_path):
    """Each click is stamped after its user's row: all N are joined."""
    users = [(f"u{i}", {"NAME": f"name{i}"}, 1000 + 2 * i) for i in range(N)]
    clicks = [(f"u{i}", {"N": i}, 1001 + 2 * i) for i in range(N)]
    out = _run(backend, tmp_path, TABLE_AND_STREAM, {"users": users, "clicks": clicks},
               "CREATE STREAM enriched AS SELECT c.id AS id, c.n AS n, u.name AS name "
               "FROM clicks c JOIN users u ON c.id = u.id EMIT CHANGES;", "ENRICHED")
    assert len(out) == N
    assert all(v["NAME"] == f"name{v['N']}" for _, v, _ in out)


def test_stream_table_left_join_sees_only_rows_stamped_before(tmp_path):
    """Even users' rows are stamped before their click, odd ones after: a LEFT JOIN gives
    the name for even clicks and NULL for odd ones (the row did not exist yet)."""
    users = [(f"u{i}", {"NAME": f"name{i}"}, 1000 + 2 * i + (2 if i % 2 else 0)) for i in range(N)]
    clicks = [(f"u{i}", {"N": i}, 1001 + 2 * i) for i in range(N)]
    out = _run(_embedded(tmp_path), tmp_path, TABLE_AND_STREAM, {"users": users, "clicks": clicks},
               "CREATE STREAM enriched AS SELECT c.id AS id, c.n AS n, u.name AS name "
               "FROM clicks c LEFT JOIN users u ON c.id = u.id EMIT CHANGES;", "ENRICHED")
    assert len(out) == N
    wrong = [v for _, v, _ in out if v["NAME"] != (None if v["N"] % 2 else f"name{v['N']}")]
    assert not wrong, f"{len(wrong)} clicks joined a row of the wrong time, e.g. {wrong[:3]}"


def test_stream_stream_join_over_a_backlog_drops_nothing_as_late(backend, tmp_path):
    """Orders and shipments one second apart, a window of 2 s with no grace: read one
    topic to its end first and the other's records would all be late (stream time past
    them); in timestamp order every order meets its shipment."""
    setup = ("CREATE STREAM orders (id STRING KEY, n BIGINT) "
             "WITH (kafka_topic='orders', value_format='JSON', partitions=2);"
             "CREATE STREAM shipments (id STRING KEY, n BIGINT) "
             "WITH (kafka_topic='shipments', value_format='JSON', partitions=2);")
    orders = [(f"o{i}", {"N": i}, 1_000_000 + 1000 * i) for i in range(N)]
    shipments = [(f"o{i}", {"N": i}, 1_001_000 + 1000 * i) for i in range(N)]
    out = _run(backend, tmp_path, setup, {"orders": orders, "shipments": shipments},
               "CREATE STREAM shipped AS SELECT o.id AS id, o.n AS o, s.n AS s FROM orders o "
               "JOIN shipments s WITHIN 2 SECONDS GRACE PERIOD 0 SECONDS ON o.id = s.id "
               "EMIT CHANGES;", "SHIPPED")
    assert sorted(v["O"] for _, v, _ in out) == list(range(N))
    assert all(v["O"] == v["S"] for _, v, _ in out)


def test_table_table_left_join_over_a_backlog_emits_changes_in_time_order(tmp_path):
    """Each left row is stamped before its right row: the joined table's changelog has,
    per key, the row without its right side and then the row with it, as in real time."""
    setup = ("CREATE TABLE a (id STRING PRIMARY KEY, x BIGINT) "
             "WITH (kafka_topic='a', value_format='JSON', partitions=2);"
             "CREATE TABLE b (id STRING PRIMARY KEY, y BIGINT) "
             "WITH (kafka_topic='b', value_format='JSON', partitions=2);")
    a = [(f"k{i}", {"X": i}, 1000 + 2 * i) for i in range(N)]
    b = [(f"k{i}", {"Y": i}, 1001 + 2 * i) for i in range(N)]
    out = _run(_embedded(tmp_path), tmp_path, setup, {"a": a, "b": b},
               "CREATE TABLE ab AS SELECT a.id AS id, a.x AS x, b.y AS y FROM a "
               "LEFT JOIN b ON a.id = b.id EMIT CHANGES;", "AB")
    per_key: dict[str, list] = {}
    for k, v, _ in out:
        per_key.setdefault(k, []).append(v["Y"] if v else "tombstone")
    assert len(per_key) == N
    wrong = {k: ys for k, ys in per_key.items() if ys != [None, int(k[1:])]}
    assert not wrong, f"{len(wrong)} keys out of time order, e.g. {list(wrong.items())[:3]}"

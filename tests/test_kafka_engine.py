"""The engine on a real Kafka broker, in process: topics, PRINT, INSERT and push queries read
and written by kcat too, a node that starts before its broker waits for it, and one stopped
while its broker is down exits cleanly."""
from __future__ import annotations

import asyncio
import json
import random
import signal
import socket
import subprocess
import time
import uuid

import pytest
from aiokafka.errors import KafkaError

from streamsql.engine import Engine
from streamsql.runtime.log.base import ProducerRecord
from streamsql.runtime.log.kafka import KafkaLog
from streamsql.testing.kafka import KafkaCluster, kcat_consume, kcat_produce
from streamsql.testing.nodes import Node

pytestmark = pytest.mark.timeout(180)


def _engine(bootstrap: str, tmp_path, **config: str) -> Engine:
    cfg = {"auto.offset.reset": "earliest", "ksql.service.id": "svc_" + uuid.uuid4().hex[:8], "linger.ms": 1, **config}
    return Engine(KafkaLog(bootstrap, cfg), cfg, state_dir=tmp_path / "state")


async def _closing(engine: Engine):
    await engine.close()
    await engine.log.close()


async def _wait_no_transient_groups(bootstrap: str, service_id: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        deadline = asyncio.get_running_loop().time() + 15
        while True:
            groups = [g[0] for g in await admin.list_consumer_groups()
                      if service_id in g[0] and "transient" in g[0]]
            if not groups:
                return
            assert asyncio.get_running_loop().time() < deadline, f"groups left behind: {groups}"
            await asyncio.sleep(0.5)
    finally:
        await admin.close()


def test_describe_extended_and_print_show_the_brokers_log_start_offsets(kafka, unique_topic, tmp_path):
    """On Kafka the log start offsets DESCRIBE EXTENDED and PRINT FROM BEGINNING show are the
    broker's: DeleteRecords moves them to the exact offset asked for."""
    topic = unique_topic("trimmed")

    async def main() -> None:
        engine = _engine(kafka.bootstrap_servers, tmp_path)
        await engine.start()
        try:
            await engine.execute(f"CREATE STREAM trimmed (k STRING KEY, n INT) WITH "
                                 f"(kafka_topic='{topic}', partitions=2, value_format='JSON');")
            await engine.log.produce(topic, [ProducerRecord(f"k{i}".encode(), b'{"N":%d}' % i, 1000, partition=0)
                                             for i in range(5)])
            await engine.log.delete_records(topic, {0: 3})
            ext = (await engine.execute("DESCRIBE trimmed EXTENDED;"))[0]
            assert ext.entity["sourceDescription"]["logStartOffsets"] == {"0": 3, "1": 0}
            printed = (await engine.execute(f"PRINT '{topic}' FROM BEGINNING LIMIT 2;"))[0]
            lines = [line async for (line,) in printed.stream]
            assert lines[2] == "Log start offsets: 0:3, 1:0"
            assert 'key: k3, value: {"N":3}' in lines[3] and 'key: k4' in lines[4]
        finally:
            await _closing(engine)

    asyncio.run(main())


def test_show_topics_print_insert_and_push_query_on_kafka(kafka, kcat, unique_topic, tmp_path):
    topic = unique_topic("orders")

    async def main() -> None:
        engine = _engine(kafka.bootstrap_servers, tmp_path)
        await engine.start()
        try:
            await engine.execute(f"CREATE STREAM orders (id STRING KEY, qty INT) WITH "
                                 f"(kafka_topic='{topic}', partitions=3, value_format='JSON');")
            shown = (await engine.execute("SHOW TOPICS;"))[0]
            assert (topic, 3) in [(r[0], r[1]) for r in shown.rows]

            # Written by kcat, read by streamsql (PRINT and a push query).
            await asyncio.to_thread(kcat_produce, kafka.bootstrap_servers, topic,
                                    [("a", '{"QTY": 1}'), ("b", '{"QTY": 2}'), ("c", '{"QTY": 3}')])
            printed = (await engine.execute(f"PRINT '{topic}' FROM BEGINNING LIMIT 3;"))[0]
            text = "\n".join([line async for (line,) in printed.stream])
            for key, qty in (("a", 1), ("b", 2), ("c", 3)):
                assert f"key: {key}" in text and f'"QTY":{qty}' in text.replace(" ", "")
            push = (await engine.execute("SELECT id, qty * 10 AS q10 FROM orders EMIT CHANGES LIMIT 3;"))[0]
            rows = [row async for row in push.stream]
            assert sorted(rows) == [("a", 10), ("b", 20), ("c", 30)]
            # A push aggregation runs as a topology of consumer groups: once it has ended they
            # are deleted on the broker (DeleteGroups), not left for an operator to find in
            # kafka-consumer-groups --list.
            push = (await engine.execute("SELECT id, COUNT(*) AS n FROM orders GROUP BY id "
                                         "EMIT CHANGES LIMIT 3;"))[0]
            rows = [row async for row in push.stream]
            assert sorted(rows) == [("a", 1), ("b", 1), ("c", 1)]
            await _wait_no_transient_groups(kafka.bootstrap_servers, engine.service_id)

            # Written by streamsql, read by kcat.
            await engine.execute("INSERT INTO orders (id, qty) VALUES ('d', 4);")
            got = await asyncio.to_thread(kcat_consume, kafka.bootstrap_servers, topic, 4)
            assert ("d", {"QTY": 4}) in [(r.key, json.loads(r.value)) for r in got]
        finally:
            await _closing(engine)

    asyncio.run(main())


def test_table_on_kafka_restores_on_a_new_node(kafka, unique_topic, tmp_path):
    """A CTAS on Kafka: its pull query answers; a second engine with an empty state
    directory (another machine) takes over and rebuilds the table from the changelog."""
    topic = unique_topic("clicks")

    async def main() -> None:
        first = _engine(kafka.bootstrap_servers, tmp_path / "a",
                        **{"repartition.purge.interval.ms": "0"})
        service = first.service_id
        await first.start()
        await first.execute(f"CREATE STREAM clicks (user STRING KEY, n INT) WITH "
                            f"(kafka_topic='{topic}', partitions=2, value_format='JSON');"
                            "CREATE TABLE counts AS SELECT user, COUNT(*) AS c FROM clicks "
                            "GROUP BY user EMIT CHANGES;"
                            "CREATE TABLE parities AS SELECT n % 2 AS parity, COUNT(*) AS c FROM clicks "
                            "GROUP BY n % 2 EMIT CHANGES;")
        for i in range(30):
            await first.execute(f"INSERT INTO clicks (user, n) VALUES ('u{i % 3}', {i});")

        async def table(engine: Engine, sql: str = "SELECT user, c FROM counts;",
                        want: dict | None = None) -> dict:
            want = want or {"u0": 10, "u1": 10, "u2": 10}
            for _ in range(100):
                rows = dict((await engine.execute(sql))[0].rows)
                if rows == want:
                    break
                await asyncio.sleep(0.2)
            return rows
        assert await table(first) == {"u0": 10, "u1": 10, "u2": 10}
        parities = ("SELECT parity, c FROM parities;", {0: 15, 1: 15})
        assert await table(first, *parities) == {0: 15, 1: 15}
        by_sink = {q.sink: qid for qid, q in first.catalog.queries.items()}
        topics = await first.log.list_topics()
        # Grouped by the stream's key: aggregated where the records are, no repartition.
        assert not [t for t in topics if t.startswith(first.internal_name(by_sink["COUNTS"]) + "-")
                    and t.endswith("-repartition")]
        # Grouped by a value: the repartition topic is purged behind the aggregation's
        # commits (DeleteRecords).
        [repartition] = [t for t in topics if t.startswith(first.internal_name(by_sink["PARITIES"]) + "-")
                         and t.endswith("-repartition")]
        for _ in range(100):
            if sum(await first.log.begin_offsets(repartition)) == 30:
                break
            await asyncio.sleep(0.2)
        assert sum(await first.log.begin_offsets(repartition)) == 30
        await _closing(first)

        second = _engine(kafka.bootstrap_servers, tmp_path / "b", **{"ksql.service.id": service})
        await second.start()
        try:
            assert list(second.catalog.queries) == list(first.catalog.queries)
            assert await table(second) == {"u0": 10, "u1": 10, "u2": 10}
            assert await table(second, *parities) == {0: 15, 1: 15}
        finally:
            await _closing(second)

    asyncio.run(main())


def _free_port_below_ephemeral_range() -> int:
    """A free port (and the next, the controller's) outside the ephemeral range: a client
    retrying a connection to a port in that range can end up connected to itself (TCP
    simultaneous open), which would hold the port the broker is about to listen on."""
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    rnd = random.Random()
    for _ in range(200):
        port = rnd.randrange(20000, low - 2)
        if all(_bindable(p) for p in (port, port + 1)):
            return port
    raise RuntimeError("no free port")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_node_waits_for_kafka_to_come_up(kafka_lib, tmp_path):
    """A node started before its broker neither exits nor spins: it waits, and works once
    the broker is there."""
    port = _free_port_below_ephemeral_range()

    async def main() -> None:
        engine = _engine(f"127.0.0.1:{port}", tmp_path)
        starting = asyncio.create_task(engine.start())
        await asyncio.sleep(3)
        assert not starting.done()
        # Started from this (the main) thread: the brokers die with the thread that started them.
        cluster = KafkaCluster(tmp_path / "kafka", ports=[port], die_with_parent=True).start()
        try:
            await asyncio.wait_for(starting, 60)
            await engine.execute("CREATE STREAM s (id STRING KEY, v INT) WITH "
                                 "(kafka_topic='late', partitions=1, value_format='JSON');")
            await engine.execute("INSERT INTO s (id, v) VALUES ('x', 1);")
            printed = (await engine.execute("PRINT 'late' FROM BEGINNING LIMIT 1;"))[0]
            assert "key: x" in "\n".join([line async for (line,) in printed.stream])
            await _closing(engine)
        finally:
            cluster.kill()

    asyncio.run(main())


def test_node_stopped_while_its_broker_is_down_exits_cleanly(kafka_lib, tmp_path):
    """SIGTERM to a node whose only broker is gone (an exactly-once aggregation running): it
    exits with status 0 within the stop's bounds, its Kafka clients closed (aiokafka's
    consumer let a fetch it cancelled itself escape as a CancelledError: exit status 1)."""
    cluster = KafkaCluster(tmp_path / "kafka", die_with_parent=True).start()
    node = None
    try:
        node = Node("n1", cluster.bootstrap_servers, "down", tmp_path,
                    {"processing.guarantee": "exactly_once_v2"}).start()
        node.ksql("CREATE STREAM s (k VARCHAR KEY, v INT) WITH "
                  "(kafka_topic='s', value_format='JSON', partitions=2);")
        node.ksql("CREATE TABLE t AS SELECT k, COUNT(*) AS c FROM s GROUP BY k;")
        node.ksql("INSERT INTO s (k, v) VALUES ('a', 1);")
        time.sleep(3)
        cluster.kill_broker(0)
        time.sleep(2)
        assert node.proc is not None
        began = time.monotonic()
        node.proc.send_signal(signal.SIGTERM)
        try:
            status = node.proc.wait(60)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running 60 s after SIGTERM:\n{node.tail()}") from None
        took = time.monotonic() - began
        text = (node.dir / "node.log").read_text(errors="replace")
        assert status == 0, f"exit status {status} after {took:.1f}s:\n{node.tail(60)}"
        assert "Unclosed AIOKafka" not in text, node.tail(60)
    finally:
        if node is not None and node.proc is not None and node.proc.poll() is None:
            node.kill()
        cluster.kill()


class _OffsetsFailOnce(KafkaLog):
    """A KafkaLog whose first stable offset fetch fails (a broker gone at that moment)."""

    failures = 1

    async def stable_committed_metadata(self, group, topic, partitions):  # type: ignore[no-untyped-def]
        if self.failures:
            self.failures -= 1
            raise KafkaError("the group coordinator went away")
        return await super().stable_committed_metadata(group, topic, partitions)


def test_a_stage_that_cannot_take_up_its_partitions_starts_over(kafka, kcat, unique_topic, tmp_path, caplog):
    """aiokafka only logs what the rebalance listener raises: the stage must not then read
    its partitions from unchecked positions, but start over (and get them again)."""
    source, sink = unique_topic("in"), unique_topic("out")

    async def main() -> None:
        cfg = {"auto.offset.reset": "earliest", "ksql.service.id": "svc_" + uuid.uuid4().hex[:8], "linger.ms": 1}
        log_ = _OffsetsFailOnce(kafka.bootstrap_servers, cfg)
        engine = Engine(log_, cfg, state_dir=tmp_path / "state")
        await engine.start()
        try:
            await engine.execute(f"CREATE STREAM s (id STRING KEY, n INT) WITH (kafka_topic='{source}', "
                                 f"partitions=2, value_format='JSON');"
                                 f"CREATE STREAM t WITH (kafka_topic='{sink}') AS SELECT id, n * 2 AS n2 FROM s;")
            await asyncio.to_thread(kcat_produce, kafka.bootstrap_servers, source,
                                    [(f"k{i}", f'{{"N": {i}}}') for i in range(6)])
            got = await asyncio.to_thread(kcat_consume, kafka.bootstrap_servers, sink, 6)
            assert sorted((r.key, json.loads(r.value)["N2"]) for r in got) == \
                [(f"k{i}", 2 * i) for i in range(6)]
            assert log_.failures == 0
        finally:
            await _closing(engine)
        assert any("restarting from its last commit" in r.getMessage() for r in caplog.records
                   if r.name == "streamsql.runtime.query")

    asyncio.run(main())


def test_closed_windows_stay_closed_when_a_task_moves(kafka, unique_topic, tmp_path):
    """GRACE PERIOD 0: once stream time has passed a window, a late record is dropped. A
    node taking the task over with none of the old node's state (another machine) resumes
    with the stream time the old node committed with its offsets (Kafka Streams keeps it in
    the offsets' metadata), and drops the late record too."""
    topic = unique_topic("clicks")
    minute = 60_000

    async def main() -> None:
        first = _engine(kafka.bootstrap_servers, tmp_path / "a", **{"processing.guarantee": "exactly_once_v2"})
        service = first.service_id
        await first.start()
        await first.execute(f"CREATE STREAM clicks (user STRING KEY, n INT) WITH "
                            f"(kafka_topic='{topic}', partitions=2, value_format='JSON');"
                            "CREATE TABLE per_minute AS SELECT user, AS_VALUE(user) AS u, "
                            "WINDOWSTART AS ws, COUNT(*) AS c FROM clicks "
                            "WINDOW TUMBLING (SIZE 1 MINUTE, GRACE PERIOD 0 SECONDS) "
                            "GROUP BY user EMIT CHANGES;")
        sink = first.catalog.source("PER_MINUTE").topic
        log = first.log
        # u0 and u1 (one partition each, likely) in minutes 0..5: stream time reaches 5 min.
        await log.produce(topic, [ProducerRecord(f"u{i % 2}".encode(), b'{"N": 1}', m * minute + i)
                                  for m in range(6) for i in range(4)])

        async def windows() -> dict[tuple[str, int], int]:
            rows: dict[tuple[str, int], int] = {}
            for p, end in enumerate(await log.end_offsets(sink)):
                off = 0
                while off < end:
                    b = await log.fetch(sink, p, off, 1000)
                    if not b.offsets:
                        break
                    for v in b.values:
                        if v is not None:
                            row = json.loads(v)
                            rows[(row["U"], row["WS"])] = row["C"]
                    off = b.offsets[-1] + 1
            return rows

        async def until(check) -> dict:
            for _ in range(200):
                got = await windows()
                if check(got):
                    return got
                await asyncio.sleep(0.2)
            return got

        before = await until(lambda w: len(w) == 12)
        assert before == {(f"u{i}", m * minute): 2 for i in range(2) for m in range(6)}
        await _closing(first)

        second = _engine(kafka.bootstrap_servers, tmp_path / "b",
                         **{"ksql.service.id": service, "processing.guarantee": "exactly_once_v2"})
        await second.start()
        log = second.log
        try:
            # Late for minute 0 (stream time is past it), then on time for minute 6.
            await log.produce(topic, [ProducerRecord(b"u0", b'{"N": 1}', 30_000),
                                      ProducerRecord(b"u1", b'{"N": 1}', 30_000),
                                      ProducerRecord(b"u0", b'{"N": 1}', 6 * minute),
                                      ProducerRecord(b"u1", b'{"N": 1}', 6 * minute)])
            after = await until(lambda w: len(w) == 14)
            assert after[("u0", 6 * minute)] == after[("u1", 6 * minute)] == 1
            assert after[("u0", 0)] == after[("u1", 0)] == 2, "a closed window was updated after the task moved"
        finally:
            await _closing(second)

    asyncio.run(main())

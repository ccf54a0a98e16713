"""The Kafka test infrastructure (streamsql.testing.kafka) against real brokers: kcat and
aiokafka, two independent clients, agree on what a started cluster holds; a 3-broker cluster
keeps serving a replicated topic with a broker stopped or killed, and takes it back; the
command line starts a detached cluster and stops it; a broker that does not come up is
reported with its log."""
from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import DefaultPartitioner

from streamsql.testing.kafka import (KafkaCluster, KafkaError, free_ports, kcat_consume, kcat_metadata,
                                     kcat_produce, metadata_broker_ids)

pytestmark = pytest.mark.timeout(180)


def create_topic(bootstrap: str, name: str, partitions: int, replicas: int) -> None:
    """kcat cannot create topics (and the brokers do not auto-create them): aiokafka's admin."""
    async def run() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(name, partitions, replicas)])
        finally:
            await admin.close()
    asyncio.run(run())


def aiokafka_read(bootstrap: str, topic: str, partitions: int) -> list[tuple[int, int, bytes | None, bytes | None]]:
    """Every record of the topic, read with aiokafka to the end of each partition."""
    async def run() -> list[tuple[int, int, bytes | None, bytes | None]]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            out = []
            while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
                for tp, recs in (await consumer.getmany(timeout_ms=1000)).items():
                    out += [(tp.partition, r.offset, r.key, r.value) for r in recs]
            return out
        finally:
            await consumer.stop()
    return asyncio.run(run())


def test_kcat_round_trip_keyed_records(kafka, kcat, unique_topic):
    topic = unique_topic()
    create_topic(kafka.bootstrap_servers, topic, partitions=3, replicas=1)
    sent = [(f"user{i % 5}", f'{{"n":{i}}}') for i in range(20)] + [("user1", None), (None, "no key")]
    kcat_produce(kafka.bootstrap_servers, topic, sent)

    got = kcat_consume(kafka.bootstrap_servers, topic, count=len(sent), timeout=30)
    assert sorted((r.key or "", r.value or "") for r in got) == sorted((k or "", v or "") for k, v in sent)
    by_key = {}
    for r in got:
        by_key.setdefault(r.key, []).append(r)
    # A key's records stay in one partition, in the order sent; that partition is the one
    # Java clients (murmur2) pick, which is what streamsql's own producer must match.
    partitioner = DefaultPartitioner()
    for key in (f"user{i}" for i in range(5)):
        recs = by_key[key]
        assert {r.partition for r in recs} == {partitioner(key.encode(), [0, 1, 2], [0, 1, 2])}
        assert [r.value for r in sorted(recs, key=lambda r: r.offset)] == [v for k, v in sent if k == key]
    assert by_key["user1"][-1].value is None  # the tombstone
    assert by_key[None][0].value == "no key"
    assert len({r.partition for r in got}) > 1

    # aiokafka (the Kafka backend's client) reads the same records at the same offsets.
    mine = sorted((r.partition, r.offset, r.key, r.value) for r in got)
    theirs = sorted((p, o, k and k.decode(), v and v.decode())
                    for p, o, k, v in aiokafka_read(kafka.bootstrap_servers, topic, 3))
    assert theirs == mine


def test_kcat_consume_times_out_with_what_it_read(kafka, kcat, unique_topic):
    topic = unique_topic()
    create_topic(kafka.bootstrap_servers, topic, partitions=1, replicas=1)
    kcat_produce(kafka.bootstrap_servers, topic, [("k", "v1"), ("k", "v2")])
    with pytest.raises(TimeoutError, match="read 2 of 5 records") as info:
        kcat_consume(kafka.bootstrap_servers, topic, count=5, timeout=4)
    assert [r.value for r in info.value.records] == ["v1", "v2"]  # type: ignore[attr-defined]
    with pytest.raises(KafkaError, match="does the topic exist"):
        kcat_produce(kafka.bootstrap_servers, unique_topic("missing"), [("k", "v")], timeout=3)


def _isr_sizes(bootstrap: str, topic: str) -> list[int]:
    meta = kcat_metadata(bootstrap, topic)
    return [len(p["isrs"]) for t in meta["topics"] if t["topic"] == topic for p in t["partitions"]]


def _wait(what: str, check, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_replicated_topic_survives_a_broker_down(kafka3, kcat, unique_topic, how):
    topic = unique_topic()
    create_topic(kafka3.bootstrap_servers, topic, partitions=3, replicas=3)
    # Asked of each broker: one whose metadata lags tells a producer the topic does not exist.
    _wait("every replica in sync", lambda: all(_isr_sizes(f"127.0.0.1:{port}", topic) == [3, 3, 3]
                                               for port in kafka3.ports))
    first = [(f"k{i}", f"a{i}") for i in range(30)]
    kcat_produce(kafka3.bootstrap_servers, topic, first)

    down = 1  # broker 2: a voter of the controller quorum too; 2 of 3 keep the quorum
    (kafka3.stop_broker if how == "stop" else kafka3.kill_broker)(down)
    try:
        assert not kafka3.is_running(down)
        live = ",".join(f"127.0.0.1:{p}" for i, p in enumerate(kafka3.ports) if i != down)
        # Leadership has moved off the stopped broker (a killed one is fenced after the
        # broker session timeout, 6 s) and acks=all produces still succeed on 2 replicas.
        second = [(f"k{i}", f"b{i}") for i in range(30)]
        kcat_produce(live, topic, second, timeout=30)
        meta = kcat_metadata(live, topic)
        leaders = {p["leader"] for t in meta["topics"] for p in t["partitions"]}
        assert down + 1 not in leaders
        got = kcat_consume(live, topic, count=60, timeout=30)
        assert sorted(r.value for r in got) == sorted(v for _, v in first + second)
    finally:
        kafka3.start_broker(down)

    # Back: it answers, catches up and rejoins every ISR; clients can use it alone.
    assert metadata_broker_ids(kafka3.ports[down]) == {1, 2, 3}
    _wait("the restarted broker back in sync", lambda: _isr_sizes(kafka3.bootstrap_servers, topic) == [3, 3, 3])
    alone = f"127.0.0.1:{kafka3.ports[down]}"
    kcat_produce(alone, topic, [("k0", "c0")])
    assert len(kcat_consume(alone, topic, count=61, timeout=30)) == 61


def _port_pair() -> int:
    """A free port whose next port is free too."""
    for port in free_ports(20):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise AssertionError("no free pair of ports")


def test_cli_up_status_down(kafka_lib, tmp_path):
    base = tmp_path / "cluster"
    ports = [_port_pair()]  # the CLI's controllers listen on port + 1
    cli = [sys.executable, "-m", "streamsql.testing.kafka"]
    opts = ["--dir", str(base), "--ports", ",".join(map(str, ports))]
    up = subprocess.run([*cli, "up", *opts], capture_output=True, text=True, timeout=120)
    try:
        assert up.returncode == 0, up.stderr
        assert f"127.0.0.1:{ports[0]}" in up.stdout
        # Detached: the brokers outlive the command that started them.
        assert metadata_broker_ids(ports[0]) == {1}
        status = subprocess.run([*cli, "status", "--dir", str(base)], capture_output=True, text=True, timeout=30)
        assert status.returncode == 0 and "answering" in status.stdout, status.stdout
        assert (base / "broker-1" / "server.log").stat().st_size > 0
    finally:
        down = subprocess.run([*cli, "down", "--dir", str(base)], capture_output=True, text=True, timeout=60)
    assert down.returncode == 0 and "stopped broker(s) [1]" in down.stdout, down.stdout + down.stderr
    assert metadata_broker_ids(ports[0]) is None
    assert not (base / "broker-1" / "pid").exists()
    assert (base / "broker-1" / "data" / "meta.properties").exists()  # down keeps the data
    status = subprocess.run([*cli, "status", "--dir", str(base)], capture_output=True, text=True, timeout=30)
    assert status.returncode == 1 and "stopped" in status.stdout


def test_broker_that_does_not_answer_is_reported_with_its_log(kafka_lib, tmp_path):
    cluster = KafkaCluster(tmp_path, start_timeout=0.2)  # a broker takes a second to start
    with pytest.raises(KafkaError) as info:
        cluster.start()
    message = str(info.value)
    assert f"did not answer on 127.0.0.1:{cluster.ports[0]}" in message
    assert "server.log (tail)" in message
    assert cluster.pids() == [None]  # what start() started, it stopped


def test_ports_in_use_and_layout_mismatch_are_refused(kafka_lib, tmp_path):
    port, controller = free_ports(2)
    with socket.socket() as held:
        held.bind(("127.0.0.1", port))
        held.listen()
        with pytest.raises(KafkaError, match=f"port {port} of broker 1 is in use"):
            KafkaCluster(tmp_path / "a", ports=[port], controller_ports=[controller]).start()
    # A directory keeps its cluster's ports (its metadata log records them).
    KafkaCluster(tmp_path / "b", ports=[port], controller_ports=[controller])._write_layout()
    assert KafkaCluster(tmp_path / "b").ports == [port]
    with pytest.raises(KafkaError, match="holds a cluster on ports"):
        KafkaCluster(tmp_path / "b", ports=[controller], controller_ports=[port])

"""Restore time of moved tasks, with and without standby replicas (num.standby.replicas).

A 1-broker KRaft cluster of its own (``streamsql.testing.kafka``) and ``streamsql server``
nodes as processes. Per setting (0 and 1 standby replicas): one node builds a table of
``--keys`` keys on ``--partitions`` partitions (a GROUP BY: two stores, two changelogs), then
nodes join one by one up to ``--nodes`` (each join waits until the tasks are spread evenly),
then one node is killed (-9) and the survivors take its tasks over. Printed per setting:

* scale-out: the changelog records replayed and the seconds spent by each task as a node
  started it (read from the nodes' logs: ``task N opened: ... (R replayed) in S s``), and
  how long each join took until the spread was even;
* failover: the same for the tasks the killed node had, and the seconds from the kill until
  a pull query (``SELECT * FROM t``) answers with every row again.

Updates to the table's keys keep coming at ``--rate`` per second from the first join on, so
the state a node keeps of a task it no longer runs ages unless a standby follows it.

Without standbys a node joining still warms tasks up before it takes them (KIP-441), so
scale-out replays little either way; the kill is where standbys count.
"""
from __future__ import annotations

import argparse
import json
import logging
import random
import re
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

_OPENED = re.compile(r"(\S+): task (\d+) opened: (.*)")
_STORE = re.compile(r"\((\d+) replayed\) in ([0-9.]+)s")


def _opened(node_log: Path, since: int) -> list[tuple[int, int, float]]:
    """(task, records replayed, seconds) of each stateful task opened after byte ``since``."""
    text = node_log.read_bytes()[since:].decode(errors="replace")
    out = []
    for m in _OPENED.finditer(text):
        stores = _STORE.findall(m.group(3))
        if stores:
            out.append((int(m.group(2)), sum(int(r) for r, _ in stores),
                        sum(float(s) for _, s in stores)))
    return out


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def run(bootstrap: str, base: Path, standbys: int, keys: int, partitions: int,
        nodes_max: int, rate: int) -> dict:
    from streamsql.testing.kafka import kcat_produce
    from streamsql.testing.nodes import Node, wait_for

    service = "bench_" + uuid.uuid4().hex[:6]
    config = {"num.standby.replicas": str(standbys)}
    topic, table = f"clicks_{service}", f"counts_{service}"
    nodes: list[Node] = []

    def start(i: int) -> Node:
        node = Node(f"node-{i}", bootstrap, service, base / f"s{standbys}", config).start()
        nodes.append(node)
        return node

    def rows(node: Node) -> int | None:
        header, *rest = node.query_stream(f"SELECT * FROM {table};")
        if rest and isinstance(rest[-1], dict):
            return None
        return len(rest)

    def spread_even(n: int) -> bool:
        """Whether the aggregation's tasks (partitions of the topic it reads, the re-keyed
        one, not the source) are spread evenly over ``n`` nodes, as /clusterStatus says."""
        with urllib.request.urlopen(nodes[0].url + "/clusterStatus", timeout=30) as resp:
            status = json.loads(resp.read())["clusterStatus"]
        counts = sorted((sum(1 for share in s["activeStandbyPerQuery"].values()
                             for p in share["activePartitions"] if p["topic"] != topic)
                         for s in status.values() if s["hostAlive"]), reverse=True)
        return len(counts) == n and counts[0] - counts[-1] <= 1 and sum(counts) == partitions

    report: dict = {"joins": [], "scale_out": [], "failover": []}
    feeding = threading.Event()
    try:
        first = start(1)
        first.ksql(f"CREATE STREAM clicks (user STRING KEY, amount BIGINT) WITH (kafka_topic='{topic}', "
                   f"partitions={partitions}, value_format='JSON');"
                   f"CREATE TABLE {table} AS SELECT user, COUNT(*) AS n FROM clicks GROUP BY user;")
        step = 50_000
        for lo in range(0, keys, step):
            kcat_produce(bootstrap, topic, [(f"user{i}", '{"AMOUNT": 1}')
                                            for i in range(lo, min(keys, lo + step))], timeout=300)
        wait_for("the table", lambda: rows(first) == keys, timeout=900, every=2.0)
        # Updates keep coming (to keys the table has), so state left behind on a node ages.

        def feed() -> None:
            rnd = random.Random(1)
            while not feeding.is_set():
                kcat_produce(bootstrap, topic, [(f"user{rnd.randrange(keys)}", '{"AMOUNT": 1}')
                                                for _ in range(rate // 4)])
                time.sleep(0.25)
        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        for i in range(2, nodes_max + 1):
            marks = [_size(n.dir / "node.log") for n in nodes]
            t0 = time.monotonic()
            start(i)
            wait_for(f"an even spread over {i} nodes", lambda: spread_even(i), timeout=900, every=1.0)
            time.sleep(2)  # (the tasks just assigned open)
            report["joins"].append(time.monotonic() - t0)
            for node, mark in zip(nodes, marks + [0]):
                report["scale_out"] += _opened(node.dir / "node.log", mark)
        victim = nodes[1]
        marks = [_size(n.dir / "node.log") for n in nodes]
        t0 = time.monotonic()
        victim.kill()
        survivors = [n for n in nodes if n is not victim]
        wait_for("a whole answer", lambda: rows(survivors[0]) == keys, timeout=900, every=0.2)
        report["answer_after_kill"] = time.monotonic() - t0
        time.sleep(2)
        for node, mark in zip(nodes, marks):
            if node is not victim:
                report["failover"] += _opened(node.dir / "node.log", mark)
    finally:
        feeding.set()
        for node in nodes:
            node.stop()
    return report


def _summary(opened: list[tuple[int, int, float]]) -> str:
    if not opened:
        return "no task opened"
    replayed = sorted(r for _, r, _ in opened)
    secs = sorted(s for _, _, s in opened)
    return (f"{len(opened)} tasks opened, replayed max {replayed[-1]:,} / total {sum(replayed):,} "
            f"records, restore max {secs[-1]:.2f}s / total {sum(secs):.2f}s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keys", type=int, default=200_000)
    ap.add_argument("--partitions", type=int, default=10)
    ap.add_argument("--nodes", type=int, default=5)
    ap.add_argument("--rate", type=int, default=2000, help="updates per second during the moves")
    ap.add_argument("--standbys", default="0,1", help="settings to compare, e.g. 0,1")
    args = ap.parse_args()
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    from streamsql.testing.kafka import KafkaCluster, kafka_unavailable_reason

    reason = kafka_unavailable_reason()
    if reason:
        sys.stdout.write(f"standby bench: skipped: {reason}\n")
        return
    with tempfile.TemporaryDirectory(prefix="bench-standby-") as tmp:
        cluster = KafkaCluster(Path(tmp) / "kafka", brokers=1, die_with_parent=True)
        cluster.start()
        try:
            results = {int(s): run(cluster.bootstrap_servers, Path(tmp), int(s), args.keys,
                                   args.partitions, args.nodes, args.rate)
                       for s in args.standbys.split(",")}
        finally:
            cluster.stop()
    sys.stdout.write(f"moving a GROUP BY table's tasks: {args.keys:,} keys on {args.partitions} "
                     f"partitions (2 stores), 1 -> {args.nodes} nodes, then one node killed; "
                     f"{args.rate:,} updates/s meanwhile\n")
    for standbys, r in results.items():
        sys.stdout.write(f"  num.standby.replicas={standbys}\n")
        sys.stdout.write(f"    scale-out: joins took {', '.join(f'{t:.1f}s' for t in r['joins'])}; "
                         f"{_summary(r['scale_out'])}\n")
        sys.stdout.write(f"    failover:  whole pull answer {r['answer_after_kill']:.1f}s after the "
                         f"kill; {_summary(r['failover'])}\n")


if __name__ == "__main__":
    main()

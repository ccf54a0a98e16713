"""The exactly-once soak test of issue 12: a cluster of streamsql nodes under chaos, checked
record by record against the truth read back from the source topic.

One run (``run_soak(seed, duration, ...)``):

* a 10-partition source topic (``EVENTS``: key ``USER``, JSON value with a unique ``SEQ`` and
  an ``AMOUNT``) and a 10-partition table topic (``USERS``, one row per user, loaded before
  the queries start);
* three persistent queries under ``processing.guarantee=exactly_once_v2``: a GROUP BY table
  (``COUNT(*)``, ``SUM(AMOUNT)``, ``MAX(SEQ)`` per user), a CSAS (``SEQ``, ``AMOUNT * 2`` where
  ``AMOUNT > 20``) and a stream-table join CSAS (``EVENTS JOIN USERS``);
* a feeder thread producing with kcat in small chunks at a steady rate (unique SEQs, keys
  over every partition) and a prober thread asking random live nodes ``SELECT * FROM
  TOTALS;`` (an answer with no error that lacks users is *silently partial*);
* a chaos schedule drawn from the seed: 2 nodes at first, then nodes join (up to
  ``max_nodes``), leave (SIGTERM), are killed (-9) and are restarted on their own data and
  state directories; with ``broker_chaos`` one of three brokers is stopped or killed for a
  while too. At least one node is alive at the end. With ``standbys`` the nodes keep that
  many standby replicas of every task (the 1-broker variant in pytest keeps one);
* at the end the feeding stops, the truth is read back from the source topic, and once the
  outputs are complete (bounded wait) they are compared with it: the table topic
  (read_committed, last value per key) has exactly the count, sum and last SEQ of each user
  and no user's count ever goes down in it, each sink holds every expected SEQ exactly once
  with the right values, and a pull query to every live node answers exactly the truth.

A failure says the seed (a run is replayed with the same seed: the same schedule, the same
records; the timing is the machine's), what was lost or duplicated with where it sits in the
sink topic (partition/offset ranges, and the earliest time the copy can have been written),
the duplicates in the queries' repartition topics, how much of a miscount the GROUP BY's
re-key stage made (records in its repartition topic) and how much the aggregation itself,
the first wrong update of each miscounted user, and the chaos events and partition moves
(from the nodes' logs) around each of them, so that a failure can be tied to an event. The
whole report is also written to ``soak-report.txt`` in the run's directory, beside each
node's ``node.log``.

In pytest (part of the normal run; Kafka fixtures as the other cluster tests: they fail
rather than skip under CI): the seeds are fixed under ``CI=true`` and random otherwise;
``SOAK_SEED``, ``SOAK_DURATION`` (seconds of feeding), ``SOAK_RATE`` (records/s) and
``SOAK_RUNS`` (runs per variant) override, and ``SOAK_DIR`` keeps the runs' directories
(node logs) there instead of in pytest's temp dir. A run takes 1-1.5 minutes on two cores
(45 s of feeding). From a shell, a loop with its own brokers::

    python -m tests.test_kafka_soak --runs 10 --brokers 1 --standbys 1   # random seeds
    python -m tests.test_kafka_soak --runs 5 --brokers 3 --broker-chaos
    python -m tests.test_kafka_soak --seed 1234 --duration 60      # replay one seed
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

from streamsql.testing.kafka import (KafkaCluster, KcatRecord, kcat_consume, kcat_metadata,
                                     kcat_produce)
from streamsql.testing.nodes import Node, wait_for

pytestmark = pytest.mark.timeout(900)

PARTITIONS = 10
USERS = 60
REGIONS = 7
MIN_AMOUNT_DOUBLED = 20  # the CSAS keeps records with AMOUNT > this
FIRST_NODES = 2
# The check of the pull answers during the run (the prober's).
LIVE_PULLS = "pull (during run)"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false")


# -- kcat ---------------------------------------------------------------------------------

Rec = KcatRecord  # (partition, offset, key, value, timestamp)


def read_topic(bootstrap: str, topic: str, isolation: str = "read_committed",
               timeout: float = 120.0) -> list[Rec]:
    """Every record of ``topic`` up to the end of each partition, with its timestamp."""
    return kcat_consume(bootstrap, topic, None, timeout=timeout, isolation=isolation)


class Timeline:
    """Times relative to the start of feeding (t=0), and the chaos events as they happened."""

    def __init__(self) -> None:
        self.t0 = time.time()
        self.events: list[tuple[float, str]] = []
        self.lock = threading.Lock()

    def now(self) -> float:
        return time.time() - self.t0

    def at(self, epoch_ms: float) -> float:
        return epoch_ms / 1000.0 - self.t0

    def log(self, what: str, t: float | None = None) -> None:
        with self.lock:
            self.events.append((self.now() if t is None else t, what))
            self.events.sort()

    def around(self, t: float, before: float = 15.0, after: float = 3.0) -> str:
        """The last two chaos events up to ``before`` s before ``t`` and the first up to
        ``after`` s after it."""
        with self.lock:
            chaos = [(te, what.split(" [")[0]) for te, what in self.events if not what.startswith("feed")]
        near = [e for e in chaos if t - before <= e[0] <= t][-2:] + [e for e in chaos if t < e[0] <= t + after][:1]
        return "; ".join(f"{what} at t={te:.1f}s ({te - t:+.1f}s)" for te, what in near) or "no chaos event near"

    def render(self) -> str:
        return "\n".join(f"  t={t:7.1f}s  {what}" for t, what in self.events)


class Handovers:
    """Partitions changing hands, from the nodes' logs (``<stage>: assigned|revoked
    <topic>-<partition>, ...`` lines of ``streamsql.runtime.query``), on the run's clock."""

    LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) \w+ streamsql\.runtime\.query: "
                      r"(\S+): (assigned|revoked) (.*)$")

    def __init__(self, base: Path, nodes: list[str], timeline: Timeline) -> None:
        self.by_partition: dict[str, list[tuple[float, str, str, str]]] = defaultdict(list)
        for node in nodes:
            try:
                text = (base / node / "node.log").read_text(errors="replace")
            except OSError:
                continue
            for line in text.splitlines():
                m = self.LINE.match(line)
                if not m:
                    continue
                t = time.mktime(time.strptime(m[1], "%Y-%m-%d %H:%M:%S")) + int(m[2]) / 1000 - timeline.t0
                for tp in m[5].split(","):
                    self.by_partition[tp.strip()].append((t, node, m[3], m[4]))

    def near(self, topic: str, partitions: list[int], query: str, t: float,
             before: float = 20.0, after: float = 8.0) -> str:
        """What happened to ``topic``'s ``partitions`` (a topic whose name ends with
        ``topic``) in ``query``'s stages around ``t``."""
        items = sorted((te, p, node, stage, verb) for p in partitions
                       for tp, events in self.by_partition.items() if tp.endswith(f"{topic}-{p}")
                       for te, node, stage, verb in events
                       if stage.startswith(query) and t - before <= te <= t + after)
        if not items:
            return ""
        items = items[-8:]
        return "; moves: " + ", ".join(f"p{p} {verb} {node} ({stage.split('-', 1)[1] if '-' in stage else 'stage'}) "
                                       f"t={te:.1f}" for te, p, node, stage, verb in items)


# -- the chaos schedule ---------------------------------------------------------------------

@dataclass(frozen=True)
class Action:
    t: float
    kind: str      # join | leave | kill | restart | broker-stop | broker-kill | broker-start
    target: str    # node name, or broker index


def plan_chaos(seed: int, duration: float, max_nodes: int, broker_chaos: bool) -> list[Action]:
    """The schedule of a run, from its seed alone: node actions every 4-10 s from t=4 s to
    8 s before the end of feeding, never fewer than one live node; with ``broker_chaos`` one
    broker stopped (or killed) for 8-20 s somewhere in the middle."""
    rnd = random.Random(f"chaos-{seed}")
    live = [f"node-{i}" for i in range(1, FIRST_NODES + 1)]
    down: list[str] = []
    fresh = [f"node-{i}" for i in range(FIRST_NODES + 1, max_nodes + 1)]
    plan: list[Action] = []
    t = rnd.uniform(3.0, 7.0)
    while t < duration - 8.0:
        kinds: list[tuple[str, float]] = []
        if len(live) < max_nodes and fresh:
            kinds.append(("join", 3.0))
        if len(live) < max_nodes and down:
            kinds.append(("restart", 3.0))
        if len(live) > 1:
            kinds += [("leave", 2.0), ("kill", 3.0)]
        kind = rnd.choices([k for k, _ in kinds], [w for _, w in kinds])[0]
        if kind == "join":
            target = fresh.pop(0)
            live.append(target)
        elif kind == "restart":
            target = down.pop(rnd.randrange(len(down)))
            live.append(target)
        else:
            target = live.pop(rnd.randrange(len(live)))
            down.append(target)
        plan.append(Action(round(t, 1), kind, target))
        t += rnd.uniform(4.0, 10.0)
    if broker_chaos:
        t_down = rnd.uniform(0.2, 0.45) * duration
        t_up = min(t_down + rnd.uniform(8.0, 20.0), duration - 4.0)
        broker = rnd.randrange(3)
        plan.append(Action(round(t_down, 1), rnd.choice(["broker-stop", "broker-kill"]), str(broker)))
        plan.append(Action(round(t_up, 1), "broker-start", str(broker)))
    plan.sort(key=lambda a: a.t)
    return plan


# -- feeding --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Event:
    seq: int
    user: str
    amount: int


def user_name(i: int) -> str:
    return f"u{i:03d}"


def region_of(user: str) -> str:
    return f"r{int(user[1:]) % REGIONS}"


class Feeder(threading.Thread):
    """Produces ``rate`` records a second with kcat, in chunks every ``period`` s (catching up
    after a slow chunk). The first ``USERS`` records give every user a row in the table;
    after that users are drawn at random. ``fed[seq]`` is when a record was handed to kcat."""

    def __init__(self, seed: int, bootstrap: Callable[[], str], topic: str, rate: float,
                 timeline: Timeline, until: float, period: float = 0.25, max_chunk: int = 500) -> None:
        super().__init__(name="soak-feeder", daemon=True)
        self.rnd = random.Random(f"feed-{seed}")
        self.bootstrap = bootstrap
        self.topic = topic
        self.rate = rate
        self.timeline = timeline
        self.period = period
        self.until = until
        self.max_chunk = max_chunk
        self.stopping = threading.Event()
        self.sent: list[Event] = []
        self.fed: dict[int, float] = {}
        self.errors: list[tuple[float, str]] = []

    def next_event(self) -> Event:
        seq = len(self.sent) + 1
        user = user_name(seq - 1) if seq <= USERS else user_name(self.rnd.randrange(USERS))
        ev = Event(seq, user, self.rnd.randrange(1, 101))
        self.sent.append(ev)
        return ev

    def run(self) -> None:
        start = time.monotonic()
        while not self.stopping.is_set() and self.timeline.now() < self.until:
            due = int((time.monotonic() - start) * self.rate) - len(self.sent)
            if due <= 0:
                self.stopping.wait(self.period)
                continue
            chunk = [self.next_event() for _ in range(min(due, self.max_chunk))]
            t = self.timeline.now()
            for ev in chunk:
                self.fed[ev.seq] = t
            try:
                kcat_produce(self.bootstrap(), self.topic,
                             [(ev.user, json.dumps({"SEQ": ev.seq, "AMOUNT": ev.amount})) for ev in chunk],
                             timeout=40)
            except Exception as exc:  # noqa: BLE001 - what reached the topic is the truth anyway
                self.errors.append((t, f"SEQ {chunk[0].seq}-{chunk[-1].seq}: {str(exc)[:300]}"))
            self.stopping.wait(self.period)
        self.timeline.log(f"feeding stopped ({len(self.sent)} records sent)")


# -- pull queries ---------------------------------------------------------------------------

def pull(node_url: str, sql: str, timeout: float = 15.0, keys: list[str] | None = None
         ) -> tuple[dict[str, list] | None, str | None]:
    """A pull query's rows by key, and the error the answer ends with (or why there is no
    answer: HTTP error, timeout). ``keys`` gets every row's key, as they came (a key twice
    is a row read from two places)."""
    req = urllib.request.Request(node_url + "/query-stream", json.dumps({"sql": sql}).encode(),
                                 {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            lines = [json.loads(line) for line in resp.read().splitlines() if line.strip()]
    except urllib.error.HTTPError as exc:
        return None, f"HTTP {exc.code}: {exc.read()[:300].decode(errors='replace')}"
    except Exception as exc:  # noqa: BLE001 - timeout, connection refused (a node going away)
        return None, f"{type(exc).__name__}: {exc}"
    if not lines or not isinstance(lines[0], dict) or "columnNames" not in lines[0]:
        return None, f"unexpected answer: {str(lines)[:300]}"
    rows: dict[str, list] = {}
    error = None
    for line in lines[1:]:
        if isinstance(line, dict):
            error = line.get("message") or json.dumps(line)
        else:
            rows[line[0]] = line[1:]
            if keys is not None:
                keys.append(line[0])
    return rows, error


class Prober(threading.Thread):
    """Asks a random live node for the whole table every ``every`` s. Once some answer has
    had every user, an answer without error that lacks users is silently partial."""

    def __init__(self, table: str, live: Callable[[], list[tuple[str, str]]], timeline: Timeline,
                 seed: int, every: float = 1.0) -> None:
        super().__init__(name="soak-prober", daemon=True)
        self.table = table
        self.live = live
        self.timeline = timeline
        self.rnd = random.Random(f"probe-{seed}")
        self.every = every
        self.stopping = threading.Event()
        self.answers: Counter[str] = Counter()
        # t asked, seconds to answer, node, distinct rows, rows, users missing
        self.partial: list[tuple[float, float, str, int, int, list[str]]] = []
        self.errors: list[tuple[float, str, str]] = []
        self.seen_whole = False

    def run(self) -> None:
        while not self.stopping.wait(self.every):
            nodes = self.live()
            if not nodes:
                continue
            name, url = self.rnd.choice(nodes)
            t = self.timeline.now()
            keys: list[str] = []
            rows, error = pull(url, f"SELECT * FROM {self.table};", keys=keys)
            took = self.timeline.now() - t
            if rows is None or error:
                self.answers["error"] += 1
                self.errors.append((t, name, (error or "")[:200]))
            elif len(rows) >= USERS:
                self.answers["whole"] += 1
                self.seen_whole = True
            elif self.seen_whole:
                self.answers["silently partial"] += 1
                missing = sorted({user_name(i) for i in range(USERS)} - set(rows))
                self.partial.append((t, took, name, len(rows), len(keys), missing[:5]))
            else:
                self.answers["before the table was whole"] += 1


# -- the run --------------------------------------------------------------------------------

@dataclass
class SoakResult:
    seed: int
    variant: str
    ok: bool
    checks: dict[str, str]         # check -> "ok" or a one-line summary of what is wrong
    report: str
    seconds: float
    directory: Path
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def exactly_once(self) -> bool:
        """Every check but the pull answers during the run: nothing lost or counted twice
        in the table, the sinks, and the pull answers at the end."""
        return all(v == "ok" for k, v in self.checks.items() if k != LIVE_PULLS)

    def line(self) -> str:
        bad = {k: v for k, v in self.checks.items() if v != "ok"}
        status = "PASS" if self.ok else "FAIL " + "; ".join(f"{k}: {v}" for k, v in bad.items())
        return f"seed={self.seed} {self.variant} {self.seconds:.0f}s {status}"


class Cluster:
    """The run's nodes; ``live()`` is what the prober may ask."""

    def __init__(self, kafka: KafkaCluster, service: str, base: Path, config: dict[str, str],
                 timeline: Timeline) -> None:
        self.kafka = kafka
        self.service = service
        self.base = base
        self.config = config
        self.timeline = timeline
        self.nodes: dict[str, Node] = {}
        self.lock = threading.Lock()
        self.node_locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
        self.up: set[str] = set()
        self.broker_down: int | None = None

    def bootstrap_live(self) -> str:
        down = self.broker_down
        return ",".join(f"127.0.0.1:{p}" for i, p in enumerate(self.kafka.ports) if i != down)

    def live(self) -> list[tuple[str, str]]:
        return [(n.name, n.url) for n in self.live_nodes()]

    def live_nodes(self) -> list[Node]:
        """The nodes up (listening, not being stopped) and still running."""
        with self.lock:
            return [n for n in self.nodes.values()
                    if n.name in self.up and n.proc is not None and n.proc.poll() is None]

    def start(self, name: str) -> Node:
        with self.lock:
            node = self.nodes.setdefault(
                name, Node(name, self.kafka.bootstrap_servers, self.service, self.base, self.config))
        node.start(timeout=120)
        with self.lock:
            self.up.add(name)
        return node

    def run_node_action(self, action: Action) -> None:
        """A node's action, in a thread of its own (a node takes seconds to start: the other
        actions keep their times); one node's actions run in their planned order."""
        with self.node_locks[action.target]:
            began = self.timeline.now()
            try:
                what = self.apply(action)
            except Exception as exc:  # noqa: BLE001 - a node that does not come up is a finding too
                what = f"{action.kind} {action.target} FAILED: {str(exc)[:300]}"
            self.timeline.log(f"{what} [planned t={action.t}, began t={began:.1f}]")

    def apply(self, action: Action) -> str:
        kind, target = action.kind, action.target
        if kind in ("join", "restart"):
            self.timeline.log(f"{target} {'joins' if kind == 'join' else 'restarts'}: process started")
            t = self.timeline.now()
            self.start(target)
            how = "new node" if kind == "join" else "restarted on its old dirs"
            return f"{target} up ({how}; listening after {self.timeline.now() - t:.1f}s)"
        if kind in ("leave", "kill"):
            node = self.nodes[target]
            with self.lock:
                self.up.discard(target)
            if kind == "kill":
                node.kill()
                return f"{target} killed (-9)"
            t = self.timeline.now()
            node.stop()
            return f"{target} left (SIGTERM, gone in {self.timeline.now() - t:.1f}s)"
        index = int(target)
        if kind == "broker-stop":
            self.broker_down = index
            self.kafka.stop_broker(index)
            return f"broker {index + 1} stopped (SIGTERM)"
        if kind == "broker-kill":
            self.broker_down = index
            self.kafka.kill_broker(index)
            return f"broker {index + 1} killed (-9)"
        self.kafka.start_broker(index)
        self.broker_down = None
        return f"broker {index + 1} started again"

    def teardown(self) -> None:
        for node in list(self.nodes.values()):
            node.kill()  # the run's data is thrown away: no need to wait for clean stops
        if self.broker_down is not None:
            self.kafka.start_broker(self.broker_down)
            self.broker_down = None


def run_soak(kafka: KafkaCluster, base: Path, seed: int, duration: float = 50.0, rate: float = 200.0,
             max_nodes: int = 5, broker_chaos: bool = False, settle: float = 150.0,
             variant: str = "", standbys: int = 0) -> SoakResult:
    """One soak run against ``kafka`` (its own service id and topics, so runs can share a
    cluster); node directories and the report under ``base``."""
    began = time.monotonic()
    base.mkdir(parents=True, exist_ok=True)
    replicas = 3 if len(kafka.ports) >= 3 else 1
    service = f"soak{seed}_{uuid.uuid4().hex[:6]}"
    config = {"processing.guarantee": "exactly_once_v2", "ksql.internal.topic.replicas": str(replicas),
              "num.standby.replicas": str(standbys)}
    events_topic, users_topic = f"events_{service}", f"users_{service}"
    totals_topic, doubled_topic, enriched_topic = (f"{x}_{service}" for x in ("totals", "doubled", "enriched"))
    plan = plan_chaos(seed, duration, max_nodes, broker_chaos)
    timeline = Timeline()
    cluster = Cluster(kafka, service, base, config, timeline)
    variant = variant or f"{len(kafka.ports)} broker(s){', broker chaos' if broker_chaos else ''}"
    header = (f"soak seed={seed} ({variant}; duration {duration:.0f}s at {rate:.0f} records/s, up to "
              f"{max_nodes} nodes; replay: SOAK_SEED={seed} or `python -m tests.test_kafka_soak --seed {seed}"
              f" --duration {duration:.0f} --rate {rate:.0f} --brokers {len(kafka.ports)} --standbys {standbys}"
              f"{' --broker-chaos' if broker_chaos else ''}`)\nrun directory: {base}")
    feeder: Feeder | None = None
    prober: Prober | None = None
    try:
        # -- set up: two nodes, the topics, the users, the three queries -----------------------
        first = [cluster.start(f"node-{i}") for i in range(1, FIRST_NODES + 1)]
        a = first[0]
        a.ksql(f"CREATE TABLE users (id STRING PRIMARY KEY, region STRING) WITH (kafka_topic='{users_topic}', "
               f"partitions={PARTITIONS}, replicas={replicas}, value_format='JSON');"
               f"CREATE STREAM events (user STRING KEY, seq BIGINT, amount BIGINT) WITH "
               f"(kafka_topic='{events_topic}', partitions={PARTITIONS}, replicas={replicas}, value_format='JSON');")
        kcat_produce(kafka.bootstrap_servers, users_topic,
                     [(user_name(i), json.dumps({"REGION": region_of(user_name(i))})) for i in range(USERS)])
        a.ksql(f"CREATE TABLE totals WITH (kafka_topic='{totals_topic}') AS SELECT user, COUNT(*) AS n, "
               "SUM(amount) AS total, MAX(seq) AS last_seq FROM events GROUP BY user EMIT CHANGES;"
               f"CREATE STREAM doubled WITH (kafka_topic='{doubled_topic}') AS SELECT user, seq, "
               f"amount * 2 AS amount2 FROM events WHERE amount > {MIN_AMOUNT_DOUBLED} EMIT CHANGES;"
               f"CREATE STREAM enriched WITH (kafka_topic='{enriched_topic}') AS SELECT e.user AS user, "
               "e.seq AS seq, e.amount AS amount, u.region AS region FROM events e JOIN users u "
               "ON e.user = u.id EMIT CHANGES;")
        # The queries run on both nodes, and the join has read the users table (issue 12 is
        # about moving work; a join racing its table at start is issue 6's backlog case).
        for prefix in ("CTAS_TOTALS", "CSAS_DOUBLED", "CSAS_ENRICHED"):
            def spread_ok(prefix: str = prefix) -> bool:
                got = a.partitions_by_node("EVENTS", prefix)
                # (The join's first stage reads the users topic too.)
                return sorted(len([x for x in p if x.startswith(events_topic + "-")]) for p in got.values()) \
                    == [PARTITIONS // 2, PARTITIONS // 2]
            wait_for(f"{prefix} spread over the first two nodes", spread_ok, timeout=120)
        wait_for("the join to hold every user", lambda: _join_table_loaded(kafka.bootstrap_servers, service),
                 timeout=120)
        setup_s = time.monotonic() - began

        # -- feed and chaos ------------------------------------------------------------------
        timeline = cluster.timeline = Timeline()
        timeline.log(f"feeding starts ({', '.join(n.name for n in first)} running)")
        feeder = Feeder(seed, cluster.bootstrap_live, events_topic, rate, timeline, until=duration)
        prober = Prober("totals", cluster.live, timeline, seed)
        feeder.start()
        prober.start()
        # Each node action in a thread of its own (a node takes seconds to start; one node's
        # actions in order), started on time by a dispatcher; broker actions in this thread
        # (a broker dies with the thread that started it).
        actors: list[threading.Thread] = []

        def dispatch() -> None:
            for action in plan:
                if action.kind.startswith("broker"):
                    continue
                wait = action.t - timeline.now()
                if wait > 0:
                    time.sleep(wait)
                actor = threading.Thread(target=cluster.run_node_action, args=(action,), daemon=True)
                actor.start()
                actors.append(actor)
        dispatcher = threading.Thread(target=dispatch, name="soak-chaos", daemon=True)
        dispatcher.start()
        for action in plan:
            if not action.kind.startswith("broker"):
                continue
            wait = action.t - timeline.now()
            if wait > 0:
                time.sleep(wait)
            action_began = timeline.now()
            try:
                what = cluster.apply(action)
            except Exception as exc:  # noqa: BLE001
                what = f"{action.kind} {action.target} FAILED: {str(exc)[:300]}"
            timeline.log(f"{what} [planned t={action.t}, began t={action_began:.1f}]")
        rest = duration - timeline.now()
        if rest > 0:
            time.sleep(rest)
        feeder.stopping.set()
        feeder.join(60)
        dispatcher.join(60)
        for actor in list(actors):
            actor.join(180)
        if cluster.broker_down is not None:  # a schedule cut short by slow actions
            timeline.log(cluster.apply(Action(timeline.now(), "broker-start", str(cluster.broker_down))))
        if not cluster.live_nodes():
            raise AssertionError(f"{header}\n\nno node is running at the end:\n{timeline.render()}")

        # -- the truth, and the outputs once complete ----------------------------------------
        bs = kafka.bootstrap_servers
        source = read_topic(bs, events_topic, isolation="read_uncommitted")
        truth = Truth(source)
        settle_began = timeline.now()
        outputs = wait_complete(bs, truth, totals_topic, doubled_topic, enriched_topic, settle)
        timeline.log(f"outputs {'complete' if outputs.complete else 'NOT complete'} after "
                     f"{timeline.now() - settle_began:.1f}s")
        prober.stopping.set()
        prober.join(30)
        pulls = final_pulls(cluster, truth, timeline, timeout=60.0)

        # -- compare --------------------------------------------------------------------------
        checks: dict[str, str] = {}
        sections: list[str] = []
        handovers = Handovers(base, sorted(cluster.nodes), timeline)

        def moves(query: str) -> Callable[[list[int], float], str]:
            return lambda partitions, t: handovers.near(events_topic, partitions, query, t)

        def groupby_repartition() -> list[Rec]:
            topics = [t["topic"] for t in kcat_metadata(bs)["topics"]]
            return [r for t in topics if service in t and "CTAS_TOTALS" in t and t.endswith("GroupBy-repartition")
                    for r in read_topic(bs, t)]

        check_table(outputs.totals, truth, timeline, feeder.fed, checks, sections, moves("CTAS_TOTALS"),
                    groupby_repartition,
                    lambda partitions, t: handovers.near("GroupBy-repartition", partitions, "CTAS_TOTALS", t))
        check_table_history(outputs.totals, timeline, feeder.fed, checks, sections)
        check_sink("doubled", outputs.doubled, truth, truth.doubled_expected(), timeline, feeder.fed,
                   checks, sections, _doubled_value_ok, moves("CSAS_DOUBLED"))
        check_sink("enriched", outputs.enriched, truth, truth.all_expected(), timeline, feeder.fed,
                   checks, sections, _enriched_value_ok, moves("CSAS_ENRICHED"))
        check_stage_failures(base, sorted(cluster.nodes), timeline, checks, sections)
        checks["pull (end)"] = pulls[0]
        if pulls[1]:
            sections.append(pulls[1])
        checks[LIVE_PULLS] = "ok" if not prober.partial else (
            f"{len(prober.partial)} silently partial answer(s) of {sum(prober.answers.values())}")
        if prober.partial:
            sections.append("silently partial pull answers during the run (t asked, node, users of "
                            f"{USERS}):\n" + "\n".join(
                                f"  t={t:.1f}s (answered in {took:.1f}s) {n}: {r} users in {raw} rows, "
                                f"missing {', '.join(missing)}  <- {timeline.around(t, 10, 1)}"
                                for t, took, n, r, raw, missing in prober.partial[:15]))
        ok = all(v == "ok" for v in checks.values())
        if not ok:
            sections.append(repartition_report(bs, service, truth, timeline, feeder.fed, handovers, events_topic))
        stats = {"sent": len(feeder.sent), "in source": len(source), "setup s": round(setup_s, 1),
                 "pull answers": dict(prober.answers), "feed errors": len(feeder.errors)}
        notes = []
        if truth.source_duplicates:
            notes.append(f"note: {len(truth.source_duplicates)} SEQ(s) are in the source topic more than "
                         f"once (kcat retries): expected that many times in the outputs")
        lost_in_feed = len({e.seq for e in feeder.sent} - set(truth.by_seq))
        if lost_in_feed:
            notes.append(f"note: {lost_in_feed} record(s) sent by the feeder never reached the source topic "
                         "(kcat delivery failures; not the engine's)")
        if feeder.errors:
            notes.append("feeder errors:\n" + "\n".join(f"  t={t:.1f}s {e}" for t, e in feeder.errors[:5]))
        if prober.errors:
            notes.append(f"pull errors during the run ({len(prober.errors)}, answers {dict(prober.answers)}); first:\n"
                         + "\n".join(f"  t={t:.1f}s {n}: {e}" for t, n, e in prober.errors[:5]))
        report = "\n\n".join([
            header,
            "checks:\n" + "\n".join(f"  {k}: {v}" for k, v in checks.items()),
            f"stats: {json.dumps(stats)}",
            *sections, *notes,
            f"chaos events (t from the start of feeding, t=0 at "
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(timeline.t0))},{int(timeline.t0 % 1 * 1000):03d} "
            "in the node logs' clock):\n" + timeline.render(),
            "node logs: " + ", ".join(str(base / n / "node.log") for n in sorted(cluster.nodes)),
        ])
        (base / "soak-report.txt").write_text(report + "\n")
        return SoakResult(seed, variant, ok, checks, report, time.monotonic() - began, base, stats)
    finally:
        if feeder is not None:
            feeder.stopping.set()
        if prober is not None:
            prober.stopping.set()
        cluster.teardown()


def _join_table_loaded(bootstrap: str, service: str) -> bool:
    topics = [t["topic"] for t in kcat_metadata(bootstrap)["topics"]]
    changelog = [t for t in topics if service in t and "CSAS_ENRICHED" in t and t.endswith("changelog")]
    return bool(changelog) and len({r.key for r in read_topic(bootstrap, changelog[0])}) >= USERS


# -- truth and outputs ----------------------------------------------------------------------

class Truth:
    """What the source topic holds: every SEQ with its user, amount and place."""

    def __init__(self, source: list[Rec]) -> None:
        self.by_seq: dict[int, Event] = {}
        self.where: dict[int, tuple[int, int]] = {}
        self.multiplicity: Counter[int] = Counter()
        self.per_user: dict[str, list[Event]] = defaultdict(list)
        for rec in sorted(source, key=lambda r: (r.partition, r.offset)):
            v = json.loads(rec.value or "{}")
            ev = Event(v["SEQ"], rec.key or "", v["AMOUNT"])
            self.multiplicity[ev.seq] += 1
            self.by_seq.setdefault(ev.seq, ev)
            self.where.setdefault(ev.seq, (rec.partition, rec.offset))
            self.per_user[ev.user].append(ev)  # in source order: one user, one partition
        self.source_duplicates = [s for s, n in self.multiplicity.items() if n > 1]

    def totals(self) -> dict[str, tuple[int, int, int]]:
        return {u: (len(evs), sum(e.amount for e in evs), max(e.seq for e in evs)) for u, evs in self.per_user.items()}

    def all_expected(self) -> Counter[int]:
        return Counter(self.multiplicity)

    def doubled_expected(self) -> Counter[int]:
        return Counter({s: n for s, n in self.multiplicity.items() if self.by_seq[s].amount > MIN_AMOUNT_DOUBLED})


@dataclass
class Outputs:
    complete: bool
    totals: list[Rec]
    doubled: list[Rec]
    enriched: list[Rec]


def _seqs(recs: list[Rec]) -> Counter[int]:
    return Counter(json.loads(r.value)["SEQ"] for r in recs if r.value)


def wait_complete(bs: str, truth: Truth, totals_topic: str, doubled_topic: str, enriched_topic: str,
                  timeout: float) -> Outputs:
    """Reads the outputs until each has everything expected (a table: every user's count at
    least the truth's), at most ``timeout`` s; then once more 3 s later (late copies)."""
    expected_totals = truth.totals()
    doubled_exp, all_exp = set(truth.doubled_expected()), set(truth.all_expected())
    deadline = time.monotonic() + timeout
    def read() -> Outputs:
        return Outputs(False, read_topic(bs, totals_topic), read_topic(bs, doubled_topic),
                       read_topic(bs, enriched_topic))

    while True:
        out = read()
        latest = _latest(out.totals)
        out.complete = (all(u in latest and latest[u]["N"] >= c for u, (c, _, _) in expected_totals.items())
                        and doubled_exp <= set(_seqs(out.doubled)) and all_exp <= set(_seqs(out.enriched)))
        if out.complete or time.monotonic() > deadline:
            break
        time.sleep(2.0)
    if out.complete:
        time.sleep(3.0)
        out = read()
        out.complete = True
    return out


def _latest(recs: list[Rec]) -> dict[str, dict]:
    rows: dict[str, dict] = {}
    for r in sorted(recs, key=lambda r: (r.partition, r.offset)):
        if r.value is None:
            rows.pop(r.key or "", None)
        else:
            rows[r.key or ""] = json.loads(r.value)
    return rows


# -- checks and diagnostics -----------------------------------------------------------------

def _ranges(points: list[tuple[int, int]]) -> list[tuple[int, int, int, int]]:
    """(partition, offset) points -> (partition, first, last, count) runs of nearby offsets
    (gaps of up to 3 offsets, e.g. transaction markers, join a run)."""
    out: list[tuple[int, int, int, int]] = []
    for p, o in sorted(points):
        if out and out[-1][0] == p and o - out[-1][2] <= 3:
            q, first, _, n = out[-1]
            out[-1] = (q, first, o, n + 1)
        else:
            out.append((p, o, o, 1))
    return out


def _written_after(recs_by_part: dict[int, list[Rec]], fed_at: Callable[[Rec], float | None],
                   partition: int, offset: int) -> float | None:
    """The earliest time a record at ``partition/offset`` can have been written: every record
    before it in the partition was written before it, and each after its SEQ was fed."""
    times = [t for r in recs_by_part.get(partition, []) if r.offset < offset and (t := fed_at(r)) is not None]
    return max(times) if times else None


def check_sink(name: str, recs: list[Rec], truth: Truth, expected: Counter[int], timeline: Timeline,
               fed: dict[int, float], checks: dict[str, str], sections: list[str],
               value_ok: Callable[[Rec, Event], bool], moves: Callable[[list[int], float], str]) -> None:
    where: dict[int, list[Rec]] = defaultdict(list)
    for r in sorted(recs, key=lambda r: (r.partition, r.offset)):
        if r.value:
            where[json.loads(r.value)["SEQ"]].append(r)
    missing = sorted(s for s in expected if len(where.get(s, ())) < expected[s])
    duplicated = sorted(s for s, rs in where.items() if len(rs) > expected.get(s, 0) and s in expected)
    unexpected = sorted(s for s in where if s not in expected)
    wrong = sorted(s for s, rs in where.items()
                   if s in truth.by_seq and not all(value_ok(r, truth.by_seq[s]) for r in rs))
    extra = sum(len(where[s]) - expected[s] for s in duplicated)
    problems = []
    if missing:
        problems.append(f"{len(missing)} lost")
    if duplicated:
        problems.append(f"{len(duplicated)} SEQs duplicated ({extra} extra records)")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected SEQs")
    if wrong:
        problems.append(f"{len(wrong)} with wrong values")
    checks[name] = "ok" if not problems else ", ".join(problems) + f" (of {sum(expected.values())} expected)"
    if not problems:
        return
    lines = [f"{name}: {checks[name]}"]
    by_part: dict[int, list[Rec]] = defaultdict(list)
    for r in recs:
        by_part[r.partition].append(r)

    def fed_at(r: Rec) -> float | None:
        return fed.get(json.loads(r.value)["SEQ"]) if r.value else None

    if missing:
        lines.append("  lost, by source partition/offset range (SEQs, when fed, chaos around):")
        for p, o1, o2, n in _ranges([truth.where[s] for s in missing])[:12]:
            seqs = [s for s in missing if truth.where[s][0] == p and o1 <= truth.where[s][1] <= o2]
            t1, t2 = fed.get(seqs[0], float("nan")), fed.get(seqs[-1], float("nan"))
            lines.append(f"    source p{p} offsets {o1}-{o2}: {n} SEQs {seqs[:6]}{'...' if n > 6 else ''} "
                         f"fed t={t1:.1f}-{t2:.1f}s  <- {timeline.around(t1, 15, max(3.0, t2 - t1 + 3))}"
                         f"{moves([p], t1)}")
    if duplicated:
        later = [(rs[i].partition, rs[i].offset) for s in duplicated for rs in [where[s]]
                 for i in range(expected[s], len(rs))]
        lines.append("  second copies, by sink partition/offset range (first copies; SEQs; earliest write "
                     "time of the copies; chaos around it):")
        for p, o1, o2, n in _ranges(later)[:12]:
            copies = [r for r in by_part[p] if o1 <= r.offset <= o2]
            seqs = [json.loads(r.value)["SEQ"] for r in copies if r.value]
            seqs = [s for s in seqs if s in duplicated]
            firsts = _ranges([(where[s][0].partition, where[s][0].offset) for s in seqs])
            after = _written_after(by_part, fed_at, p, o1)
            first_txt = ", ".join(f"p{q} {a}-{b}" for q, a, b, _ in firsts[:3])
            t_txt = f"t>={after:.1f}s" if after is not None else "t=?"
            src = sorted({truth.where[s][0] for s in seqs})
            more = "..." if len(seqs) > 5 else ""
            lines.append(f"    sink p{p} offsets {o1}-{o2}: {n} copies of SEQs {seqs[:5]}{more} "
                         f"(source p{','.join(map(str, src))}; first copies at {first_txt}; SEQs fed "
                         f"t={fed.get(seqs[0], float('nan')):.1f}s); written "
                         f"{t_txt}  <- {timeline.around(after, 20, 3) if after is not None else ''}"
                         f"{moves(src, after) if after is not None else ''}")
    if unexpected:
        lines.append(f"  unexpected SEQs (not in the source or filtered out): {unexpected[:10]}")
    if wrong:
        s = wrong[0]
        lines.append(f"  wrong values, e.g. SEQ {s} ({truth.by_seq[s]}): {[(r.key, r.value) for r in where[s]][:3]}")
    sections.append("\n".join(lines))


def _doubled_value_ok(r: Rec, ev: Event) -> bool:
    v = json.loads(r.value or "{}")
    return r.key == ev.user and v.get("AMOUNT2") == 2 * ev.amount


def _enriched_value_ok(r: Rec, ev: Event) -> bool:
    v = json.loads(r.value or "{}")
    return r.key == ev.user and v.get("AMOUNT") == ev.amount and v.get("REGION") == region_of(ev.user)


def check_table(recs: list[Rec], truth: Truth, timeline: Timeline, fed: dict[int, float],
                checks: dict[str, str], sections: list[str], moves: Callable[[list[int], float], str],
                repartition: Callable[[], list[Rec]], agg_moves: Callable[[list[int], float], str]) -> None:
    """The table's last row per user against the truth; for each miscounted user, how many
    of its records the GROUP BY's repartition topic holds (so a miscount is put down to the
    re-key stage or to the aggregation), and the first update that no prefix of the user's
    records explains (when it can have been written, the chaos and partition moves then:
    ``moves`` of the source partition, ``agg_moves`` of the user's repartition partition)."""
    expected = truth.totals()
    latest = _latest(recs)
    over, under, other = [], [], []
    for u, (n, total, last) in sorted(expected.items()):
        row = latest.get(u)
        got = (row["N"], row["TOTAL"], row["LAST_SEQ"]) if row else None
        if got == (n, total, last):
            continue
        if got is None or got[0] < n:
            under.append(u)
        elif got[0] > n:
            over.append(u)
        else:
            other.append(u)
    unexpected = sorted(set(latest) - set(expected))
    if not (over or under or other or unexpected):
        checks["totals"] = "ok"
        return

    def extra(u: str) -> int:
        return latest[u]["N"] - expected[u][0]

    parts = []
    if over:
        parts.append(f"{len(over)} users counted too often (+{sum(extra(u) for u in over)} counts)")
    if under:
        missing = sum(-extra(u) if u in latest else expected[u][0] for u in under)
        parts.append(f"{len(under)} users missing counts ({missing} counts)")
    if other:
        parts.append(f"{len(other)} users with the right count but a wrong sum/last SEQ")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys")
    records = sum(c for c, _, _ in expected.values())
    checks["totals"] = ", ".join(parts) + f" (of {records} records, {len(expected)} users)"
    in_repartition: Counter[str] = Counter()
    rep_partition: dict[str, int] = {}
    for r in repartition():
        try:
            key = json.loads(r.key or "")
            user = next(iter(key.values())) if isinstance(key, dict) else str(key)
        except (ValueError, StopIteration):
            user = r.key or ""
        in_repartition[user] += 1
        rep_partition[user] = r.partition
    bad_users = over + under + other
    by_rekey = sum(in_repartition[u] - expected[u][0] for u in bad_users)
    by_agg = sum((latest[u]["N"] if u in latest else 0) - in_repartition[u] for u in bad_users)
    lines = [f"totals: {checks['totals']}",
             f"  of the miscounts of these users, {by_rekey:+d} are records the re-key stage wrote to the repartition "
             f"topic too often/never, {by_agg:+d} the aggregation's own (repartition topic count vs table count)",
             "  per user (got N/TOTAL/LAST_SEQ vs truth, [records in the repartition topic]; first update no prefix of "
             "the user's records explains: where, written when, chaos and moves around):"]
    by_user: dict[str, list[Rec]] = defaultdict(list)
    by_part: dict[int, list[Rec]] = defaultdict(list)
    for r in sorted(recs, key=lambda r: (r.partition, r.offset)):
        by_user[r.key or ""].append(r)
        by_part[r.partition].append(r)

    def fed_at(r: Rec) -> float | None:
        return fed.get(json.loads(r.value)["LAST_SEQ"]) if r.value else None

    firsts: list[float] = []
    for u in (over + under + other)[:15]:
        evs = truth.per_user[u]
        prefix_sum = [0]
        prefix_max = [0]
        for e in evs:
            prefix_sum.append(prefix_sum[-1] + e.amount)
            prefix_max.append(max(prefix_max[-1], e.seq))
        bad = None
        for r in by_user[u]:
            v = json.loads(r.value) if r.value else None
            if v is None:
                continue
            n = v["N"]
            if not (0 < n <= len(evs) and v["TOTAL"] == prefix_sum[n] and v["LAST_SEQ"] == prefix_max[n]):
                bad = (r, v)
                break
        row = latest.get(u)
        got = f"{row['N']}/{row['TOTAL']}/{row['LAST_SEQ']}" if row else "no row"
        e = expected[u]
        line = f"    {u} (source p{truth.where[evs[0].seq][0]}): {got} vs {e[0]}/{e[1]}/{e[2]} [{in_repartition[u]}]"
        if bad:
            r, v = bad
            after = _written_after(by_part, fed_at, r.partition, r.offset)
            if after is not None:
                firsts.append(after)
            line += (f"; first wrong update p{r.partition} offset {r.offset} {v} (LAST_SEQ fed "
                     f"t={fed.get(v['LAST_SEQ'], float('nan')):.1f}s), written "
                     f"{f't>={after:.1f}s' if after is not None else 't=?'}")
            if after is not None:
                line += (f"  <- {timeline.around(after, 20, 3)}{moves([truth.where[evs[0].seq][0]], after)}"
                         f"{agg_moves([rep_partition[u]], after) if u in rep_partition else ''}")
        lines.append(line)
    if unexpected:
        lines.append(f"  unexpected keys: {unexpected[:10]}")
    sections.append("\n".join(lines))


# What a stage may fail with while brokers and nodes come and go (it restarts from its last
# commit): the broker's refusals and the network's. Anything else is the engine's own mistake
# (a task worked on after it was closed, say), even when the restart happens to repair it.
_ENGINE_ERRORS = ("KeyError", "IndexError", "AttributeError", "TypeError", "AssertionError",
                  "UnboundLocalError", "NameError", "ValueError", "ZeroDivisionError")
_STAGE_FAILED = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ERROR streamsql\.runtime\.query: "
                           r"stage (\S+) failed; restarting")
_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")


def check_stage_failures(base: Path, nodes: list[str], timeline: Timeline, checks: dict[str, str],
                         sections: list[str]) -> None:
    """No stage failed with an error of the engine's own (see ``_ENGINE_ERRORS``), from the
    tracebacks in the nodes' logs."""
    found: list[tuple[float, str, str, str]] = []
    for node in nodes:
        try:
            lines = (base / node / "node.log").read_text(errors="replace").splitlines()
        except OSError:
            continue
        for i, line in enumerate(lines):
            m = _STAGE_FAILED.match(line)
            if not m:
                continue
            last = ""
            for follow in lines[i + 1:]:
                if _LOG_LINE.match(follow):
                    break
                if follow.strip() and not follow.startswith(" "):
                    last = follow.strip()
            if last.split(":", 1)[0].rsplit(".", 1)[-1] in _ENGINE_ERRORS:
                t = time.mktime(time.strptime(m[1], "%Y-%m-%d %H:%M:%S")) + int(m[2]) / 1000 - timeline.t0
                found.append((t, node, m[3], last))
    if not found:
        checks["stage failures"] = "ok"
        return
    checks["stage failures"] = f"{len(found)} stage failure(s) with the engine's own errors"
    sections.append("stage failures with the engine's own errors (t, node, stage, error):\n" + "\n".join(
        f"  t={t:.1f}s {node} {stage}: {error}  <- {timeline.around(t, 10, 2)}"
        for t, node, stage, error in sorted(found)[:10]))


def check_table_history(recs: list[Rec], timeline: Timeline, fed: dict[int, float],
                        checks: dict[str, str], sections: list[str]) -> None:
    """A committed COUNT never goes down: an update with a smaller N than the key's previous
    one means records were processed (and committed) twice, even if the last value is right."""
    last: dict[str, tuple[Rec, dict]] = {}
    rewinds: list[tuple[str, Rec, dict, Rec, dict]] = []
    by_part: dict[int, list[Rec]] = defaultdict(list)
    for r in sorted(recs, key=lambda r: (r.partition, r.offset)):
        by_part[r.partition].append(r)
        if not r.value:
            continue
        v = json.loads(r.value)
        prev = last.get(r.key or "")
        if prev is not None and v["N"] < prev[1]["N"]:
            rewinds.append((r.key or "", prev[0], prev[1], r, v))
        last[r.key or ""] = (r, v)
    if not rewinds:
        checks["totals (history)"] = "ok"
        return
    users = sorted({u for u, *_ in rewinds})
    checks["totals (history)"] = f"{len(rewinds)} updates go back in count ({len(users)} users)"

    def fed_at(r: Rec) -> float | None:
        return fed.get(json.loads(r.value)["LAST_SEQ"]) if r.value else None

    lines = [f"totals (history): {checks['totals (history)']}, e.g.:"]
    for u, pr, pv, r, v in rewinds[:8]:
        after = _written_after(by_part, fed_at, r.partition, r.offset)
        when = f"t>={after:.1f}s  <- {timeline.around(after, 20, 3)}" if after is not None else "t=?"
        lines.append(f"    {u}: p{pr.partition} offset {pr.offset} N={pv['N']}, "
                     f"then offset {r.offset} N={v['N']} written {when}")
    sections.append("\n".join(lines))


def repartition_report(bs: str, service: str, truth: Truth, timeline: Timeline, fed: dict[int, float],
                       handovers: Handovers, events_topic: str) -> str:
    """Duplicates in the queries' repartition topics (read_committed): the same value twice.
    The SEQ is found as the value field that holds, for every record, a SEQ of the source."""
    topics = sorted(t["topic"] for t in kcat_metadata(bs)["topics"]
                    if service in t["topic"] and t["topic"].endswith("-repartition"))
    lines = ["repartition topics (read_committed; a value written twice is a duplicate):"]
    for topic in topics:
        recs = read_topic(bs, topic)
        values = [json.loads(r.value) if r.value else None for r in recs]
        seq_field = None
        sample = [v for v in values if isinstance(v, dict)][:500]
        for f in (sample[0].keys() if sample else []):
            if all(isinstance(v.get(f), int) and v.get(f) in truth.by_seq for v in sample) and \
                    len({v.get(f) for v in sample}) >= 0.9 * len(sample):
                seq_field = f
                break
        # A SEQ the source holds twice (a kcat retry) is rightly there twice.
        seen: dict[str, list[Rec]] = defaultdict(list)
        dups: list[tuple[Rec, Rec]] = []
        for r, v in sorted(zip(recs, values), key=lambda rv: (rv[0].partition, rv[0].offset)):
            ident = f"{r.key}|{r.value}"
            allowed = truth.multiplicity.get(v.get(seq_field), 1) if seq_field and isinstance(v, dict) else 1
            if len(seen[ident]) >= allowed:
                dups.append((seen[ident][0], r))
            seen[ident].append(r)
        short = topic.split("query_", 1)[-1]
        if not dups:
            lines.append(f"  {short}: {len(recs)} records, no duplicates")
            continue
        if seq_field is None:  # the users table's re-key: upserts, a copy changes nothing
            lines.append(f"  {short}: {len(recs)} records, {len(dups)} written twice at "
                         + ", ".join(f"p{p} {o1}-{o2}" for p, o1, o2, _ in
                                     _ranges([(b.partition, b.offset) for _, b in dups])[:10]))
            continue
        query = short.split("-", 1)[0].rsplit("_", 1)[0]
        lines.append(f"  {short}: {len(recs)} records, {len(dups)} written twice (SEQ in {seq_field}):")
        by_part: dict[int, list[Rec]] = defaultdict(list)
        for r in recs:
            by_part[r.partition].append(r)

        def fed_at(r: Rec) -> float | None:
            if seq_field is None or not r.value:
                return None
            return fed.get(json.loads(r.value).get(seq_field))

        for p, o1, o2, n in _ranges([(b.partition, b.offset) for _, b in dups])[:10]:
            pairs = [(a, b) for a, b in dups if b.partition == p and o1 <= b.offset <= o2]
            firsts = _ranges([(a.partition, a.offset) for a, _ in pairs])
            seqs = [json.loads(b.value).get(seq_field) for _, b in pairs]
            src = sorted({truth.where[s][0] for s in seqs if s in truth.where})
            after = _written_after(by_part, fed_at, p, o1)
            lines.append(f"    p{p} offsets {o1}-{o2}: {n} copies (first copies at "
                         f"{', '.join(f'p{q} {a}-{b}' for q, a, b, _ in firsts[:3])}; SEQs {seqs[:4]} from "
                         f"source p{','.join(map(str, src))}, fed t={fed.get(seqs[0], float('nan')):.1f}s); written "
                         + (f"t>={after:.1f}s  <- {timeline.around(after, 20, 3)}"
                            f"{handovers.near(events_topic, src, query, after)}" if after is not None else "t=?"))
    return "\n".join(lines)


def final_pulls(cluster: Cluster, truth: Truth, timeline: Timeline, timeout: float) -> tuple[str, str]:
    """``SELECT * FROM totals;`` on every live node, until its answer is whole (no error and
    every user at its expected count or beyond) or ``timeout`` s have passed since the first
    question; then: exactly the truth?"""
    expected = {u: [n, total, last] for u, (n, total, last) in truth.totals().items()}
    bad: list[str] = []
    deadline = time.monotonic() + timeout  # for all the nodes together
    for node in cluster.live_nodes():
        while True:
            rows, error = pull(node.url, "SELECT * FROM totals;")
            whole = rows is not None and not error and all(
                u in rows and rows[u][0] >= c[0] for u, c in expected.items())
            if whole or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        if rows == expected and not error:
            continue
        if rows is None or error:
            bad.append(f"{node.name}: {'error' if rows is not None else 'no answer'} after {timeout:.0f}s: "
                       f"{(error or '')[:200]} ({len(rows or {})} rows)")
            continue
        diff = [u for u in expected if rows.get(u) != expected[u]] + [u for u in rows if u not in expected]
        over = sum(rows[u][0] - expected[u][0] for u in diff if u in rows and u in expected)
        bad.append(f"{node.name}: {len(diff)} users differ (count {over:+d}), e.g. "
                   + ", ".join(f"{u}: {rows.get(u)} vs {expected.get(u)}" for u in diff[:3]))
    if not bad:
        return "ok", ""
    return f"{len(bad)} node(s) answer wrong", "pull queries at the end:\n" + "\n".join("  " + b for b in bad)


# -- pytest ---------------------------------------------------------------------------------

_RUNS = int(os.environ.get("SOAK_RUNS", "1"))


def _seed(ci_seed: int, run: int) -> int:
    if os.environ.get("SOAK_SEED"):
        return int(os.environ["SOAK_SEED"]) + run
    if _in_ci():
        return ci_seed + run
    return random.SystemRandom().randrange(1, 1_000_000)


def _run_dir(tmp_path: Path, variant: str, seed: int) -> Path:
    """Under ``$SOAK_DIR`` when set (pytest keeps only its last few temp dirs), else tmp_path."""
    root = os.environ.get("SOAK_DIR")
    return Path(root) / f"{variant}-seed-{seed}-{uuid.uuid4().hex[:4]}" if root else tmp_path / "soak"


def _params() -> dict[str, float]:
    return {"duration": float(os.environ.get("SOAK_DURATION", "45")),
            "rate": float(os.environ.get("SOAK_RATE", "200"))}


def _assert(result: SoakResult) -> None:
    assert result.exactly_once, result.report
    assert result.ok, result.report  # and no pull answer during the run was silently partial


@pytest.mark.parametrize("run", range(_RUNS))
def test_soak_exactly_once_nodes_join_leave_die(kafka, kcat, tmp_path, run):
    """2 nodes, then joins, leaves, kill -9 and restarts up to 5 nodes on one broker, with a
    standby replica of every task: the GROUP BY table, the CSAS, the join and every node's
    pull answer are exactly the truth."""
    seed = _seed(120001, run)
    result = run_soak(kafka, _run_dir(tmp_path, "1broker", seed), seed, max_nodes=5,
                      variant="1 broker, 1 standby replica", standbys=1, **_params())
    print(result.line())
    _assert(result)


@pytest.mark.parametrize("run", range(_RUNS))
def test_soak_exactly_once_with_a_broker_down(kafka3, kcat, tmp_path, run):
    """As above on three brokers (replication 3), one of them stopped or killed for a while."""
    seed = _seed(120003, run)
    result = run_soak(kafka3, _run_dir(tmp_path, "3brokers", seed), seed, max_nodes=4, broker_chaos=True,
                      variant="3 brokers, one down for a while", **_params())
    print(result.line())
    _assert(result)


# -- the loop -------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.test_kafka_soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=None, help="first seed (then +1 per run); default random")
    parser.add_argument("--seed-random", action="store_true", help="a random seed per run (the default)")
    parser.add_argument("--duration", type=float, default=45.0, help="seconds of feeding and chaos")
    parser.add_argument("--rate", type=float, default=200.0, help="records per second")
    parser.add_argument("--brokers", type=int, choices=(1, 3), default=1)
    parser.add_argument("--broker-chaos", action="store_true", help="stop or kill one broker (needs --brokers 3)")
    parser.add_argument("--max-nodes", type=int, default=None)
    parser.add_argument("--standbys", type=int, default=0, help="num.standby.replicas of the nodes")
    parser.add_argument("--dir", default=None, help="where runs and brokers live (default: a new temp dir)")
    args = parser.parse_args(argv)
    if args.broker_chaos and args.brokers != 3:
        parser.error("--broker-chaos needs --brokers 3")
    base = Path(args.dir or tempfile.mkdtemp(prefix="streamsql-soak-"))
    base.mkdir(parents=True, exist_ok=True)
    print(f"runs and brokers under {base}", flush=True)
    kafka = KafkaCluster(base / "kafka", brokers=args.brokers, die_with_parent=True,
                         config={"log.retention.ms": "-1"}).start()
    results: list[SoakResult] = []
    try:
        for i in range(args.runs):
            seed = args.seed + i if args.seed is not None else random.SystemRandom().randrange(1, 1_000_000)
            max_nodes = args.max_nodes or (4 if args.broker_chaos else 5)
            result = run_soak(kafka, base / f"run-{i + 1}-seed-{seed}", seed, duration=args.duration,
                              rate=args.rate, max_nodes=max_nodes, broker_chaos=args.broker_chaos,
                              standbys=args.standbys)
            results.append(result)
            print(f"[{i + 1}/{args.runs}] {result.line()}", flush=True)
            if not result.ok:
                print(result.report, flush=True)
    finally:
        kafka.kill()
    passed = sum(r.ok for r in results)
    print(f"{passed} of {len(results)} runs passed; reports in {base}/run-*/soak-report.txt")
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())

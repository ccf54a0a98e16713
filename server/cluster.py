"""Pull queries across the nodes of a cluster (nodes on one Kafka cluster with one service id).

A table's state is spread over the nodes: each holds the partitions its consumer group
assigned it, and may keep standby copies of others (``Log.group_tasks``). A pull query sent
to any node is answered from every partition of the table, each by the node the group gives
it to now (``PullRouter.owners``): this node reads its own partitions, and asks every other
holder for exactly its partitions (``/query-stream`` with ``X-Streamsql-Partitions``). A
node reads only the partitions it is asked for, and says which of them it has no open task
for (moved away, or still being restored). So an answer is never silently partial, nor has a
row twice (the old and the new owner of a moving partition are not both read): while some
partition is not open on the node that should hold it, or held by no node (a rebalance under
way), or a node does not answer, the query is asked again for a few seconds, and then
answered with an error after the rows naming what it lacks. With ksqlDB's standby reads
(``ksql.query.pull.enable.standby.reads``) such partitions are read from a standby copy close
enough to its active (``X-Streamsql-Standby-Lag``). A key lookup is asked of the node holding
the key's partition first (where the engine knows it: ``Engine.pull_partition``), and one
found anywhere is complete: a key lives in one partition. Kafka not saying in time which
node holds what is an error (HTTP 503), not a wait without end.

Forwarded requests are ordinary ``/query-stream`` requests carrying ``X-Streamsql-Forwarded``
(answered from local state only, never forwarded again) and the client's credentials.

Where nodes are: ``NodeDirectory`` keeps node name -> URL in a compacted topic that every node
writes its own entry to when it starts (the node name is the consumer groups' client id).
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from streamsql import ast
from streamsql.runtime.log.base import MemberTasks, ProducerRecord, TopicExistsError

log = logging.getLogger(__name__)

FORWARDED_HEADER = "x-streamsql-forwarded"
# A forwarded pull query to be answered from the node's standby copies of the partitions
# asked, those at most this many changelog records behind.
STANDBY_HEADER = "x-streamsql-standby-lag"
# The partitions a forwarded pull query is to be answered from (the node's own, as the
# consumer group said to the node that forwarded it).
PARTITIONS_HEADER = "x-streamsql-partitions"
_MEMBERS_TTL = 2.0  # seconds a group's membership is reused between pull queries


class NodeDirectory:
    """Node name -> URL for the nodes of one service, from ``_streamsql_<service>_nodes``."""

    def __init__(self, log_: Any, service_id: str, node_name: str, url: str, replicas: int = 1) -> None:
        self.log = log_
        self.topic = f"_streamsql_{service_id}_nodes"
        self.node_name = node_name
        self.url = url
        self.replicas = replicas
        self.urls: dict[str, str] = {node_name: url}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        try:
            await self.log.create_topic(self.topic, 1, self.replicas, config={"cleanup.policy": "compact"})
        except TopicExistsError:
            pass
        await self.log.produce(self.topic, [ProducerRecord(
            self.node_name.encode(), orjson.dumps({"url": self.url}), int(time.time() * 1000), (), 0)])
        self._task = asyncio.ensure_future(self._follow())

    async def _follow(self) -> None:
        offset = 0
        while True:
            try:
                batch = await self.log.fetch(self.topic, 0, offset, 1000)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the log may be unreachable for a while
                log.warning("reading the node directory failed; retrying", exc_info=True)
                await asyncio.sleep(2)
                continue
            if not len(batch):
                await asyncio.sleep(0.5)
                continue
            for key, value in zip(batch.keys, batch.values):
                if key is not None and value is not None:
                    self.urls[key.decode()] = orjson.loads(value)["url"]
            offset = batch.offsets[-1] + 1

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass


@dataclass
class Owners:
    """Which node holds which partition of a table, as its consumer group says now
    (partition numbers of the topic(s) the table's last stage reads)."""

    mine: set[int]
    others: dict[str, set[int]]
    unowned: set[int]
    count: int = 0  # partitions in all
    # Node -> partitions it keeps standby copies of ("" for this node).
    standbys: dict[str, set[int]] = field(default_factory=dict)

    def holder(self, partition: int) -> str | None:
        """The node holding ``partition`` ("" for this node; None: no node now)."""
        if partition in self.mine:
            return ""
        return next((node for node, parts in self.others.items() if partition in parts), None)


@dataclass
class ClusterAnswer:
    """A pull query's answer in a cluster: the rows found here (a Result), the rows other
    nodes sent (JSON array lines, as they came), and what is missing (None: nothing)."""

    result: Any
    remote_rows: list[bytes] = field(default_factory=list)
    missing: str | None = None


class PullUnavailable(Exception):
    """Kafka could not say in time which node holds which partition."""


class PullRouter:
    """Answers pull queries from every partition of a table (see the module docstring)."""

    def __init__(self, engine: Any, directory: NodeDirectory, ca_file: str | None = None,
                 timeout: float = 10.0, settle: float = 5.0) -> None:
        import ssl

        self.engine = engine
        self.directory = directory
        self.timeout = timeout
        # How long an answer with partitions missing is asked again (a rebalance settling)
        # before it goes out with an error naming them.
        self.settle = settle
        verify: Any = ssl.create_default_context(cafile=ca_file) if ca_file else True
        self._http = httpx.AsyncClient(verify=verify, timeout=httpx.Timeout(timeout, connect=2.0))
        self._members: dict[str, tuple[float, dict[str, MemberTasks]]] = {}
        # Partition counts of the tables' input topics (asked again with fresh membership).
        self._counts: dict[str, int] = {}

    async def close(self) -> None:
        await self._http.aclose()

    def _table_runner(self, source_name: str) -> Any:
        """The runner of the stage that materializes table ``source_name`` (None: not here)."""
        query_id = self.engine.materializing(source_name)
        runners = self.engine.runners.get(query_id) if query_id is not None else None
        return runners[-1] if runners else None

    async def _members_of(self, group: str, fresh: bool) -> dict[str, MemberTasks] | None:
        cached = self._members.get(group)
        if not fresh and cached is not None and time.monotonic() - cached[0] < _MEMBERS_TTL:
            return cached[1]
        try:
            members = await asyncio.wait_for(self.engine.log.group_tasks(group), self.timeout)
        except asyncio.TimeoutError:
            raise PullUnavailable(f"Kafka did not say within {self.timeout:.0f}s which node holds "
                                  "which partition of the table (is it reachable?)") from None
        if members is not None:
            self._members[group] = (time.monotonic(), members)
        return members

    async def owners(self, runner: Any, fresh: bool = False) -> Owners:
        """Which node holds which partition of the table ``runner`` materializes."""
        members = await self._members_of(runner.group, fresh)
        if members is None:
            raise PullUnavailable("Kafka could not describe the table's consumer group")
        topics = set(runner.topics)
        count = 0
        for topic in topics:
            if fresh or topic not in self._counts:
                info = await self.engine.log.describe_topic(topic)
                self._counts[topic] = info.partitions if info is not None else 0
            count = max(count, self._counts[topic])
        held: dict[str, set[int]] = {}
        standbys: dict[str, set[int]] = {}
        for node, tasks in members.items():
            ps = {p for t, p in tasks.active if t in topics}
            if ps:
                held[node] = ps
            if tasks.standby or tasks.warmup:
                standbys["" if node == self.engine.node_name else node] = set(tasks.standby | tasks.warmup)
        owned = set().union(*held.values()) if held else set()
        mine = held.pop(self.engine.node_name, set())
        return Owners(mine, held, set(range(count)) - owned, count, standbys)

    async def answer(self, stmt: ast.QueryStatement, session: Any, authorization: bytes | None
                     ) -> ClusterAnswer | None:
        """Pull query ``stmt`` answered from every partition of its table: this node's own,
        the others' asked of their nodes. While a partition is not open anywhere (a node
        joined or left and the group is moving it), the query is asked again, for up to
        ``settle`` seconds; then it goes out with an error saying what it lacks. None: not a
        table materialized in this cluster (answer it locally)."""
        rel = stmt.query.from_
        source = self.engine.catalog.source(rel.name) if isinstance(rel, ast.AliasedRelation) else None
        runner = self._table_runner(source.name) if source is not None else None
        if runner is None:
            return None
        deadline = time.monotonic() + self.settle
        fresh = False
        key_lookup = self.engine.pull_key(source, stmt.query.where) is not None
        while True:
            owners = await self.owners(runner, fresh)
            partition = self.engine.pull_partition(source, stmt.query.where, owners.count)
            if partition is not None:
                found = await self._key_owner(stmt, session, authorization, owners, partition)
                if found is not None:
                    return found
            result, not_open = await self.engine.pull(stmt, session, owners.mine)
            if result.rows and not not_open and key_lookup:
                return ClusterAnswer(result)  # a key lives in one partition: found
            answer = RemoteAnswer()
            await asyncio.gather(*(self._ask(node, parts, stmt.text, session, authorization, answer)
                                   for node, parts in owners.others.items()))
            unowned = set(owners.unowned)
            lag = _standby_lag(self.engine.config, session.properties)
            if lag is not None and (unowned or answer.failed):
                # ksqlDB's standby reads: what no active task could give, a standby may.
                served = await self._from_standbys(stmt, session, authorization, owners,
                                                   unowned | set(answer.failed), lag, result, answer)
                unowned -= served
                for p in served:
                    answer.failed.pop(p, None)
            lacks = list(answer.missing) + answer.failures()
            if not_open:
                lacks.append(f"partitions {_numbers(not_open)} of node {self.engine.node_name} "
                             "(not open there: being moved or restored)")
            if unowned:
                lacks.append(f"partitions {_numbers(unowned)} (no node holds them: "
                             "the cluster is rebalancing)")
            if not lacks:
                return ClusterAnswer(result, answer.rows)
            if time.monotonic() >= deadline:
                return ClusterAnswer(result, answer.rows, "This answer lacks " + "; ".join(lacks))
            self._members.clear()
            fresh = True
            await asyncio.sleep(0.25)

    async def _from_standbys(self, stmt: ast.QueryStatement, session: Any,
                             authorization: bytes | None, owners: Owners, wanted: set[int],
                             lag: int, result: Any, answer: RemoteAnswer) -> set[int]:
        """Rows of ``wanted`` partitions read from standby copies within ``lag`` records of
        their active's (this node's into ``result``, other nodes' into ``answer``); returns
        the partitions served."""
        served: set[int] = set()
        for node, parts in sorted(owners.standbys.items()):
            ask = (parts & wanted) - served
            if not ask:
                continue
            if node == "":
                local, not_there = await self.engine.pull(stmt, session, ask, standby_lag=lag)
                result.rows.extend(local.rows)
                served |= ask - not_there
                continue
            extra = RemoteAnswer()
            await self._ask(node, ask, stmt.text, session, authorization, extra, standby_lag=lag)
            if not extra.failed and not extra.missing:
                answer.rows += extra.rows
                served |= ask
        return served

    async def _key_owner(self, stmt: ast.QueryStatement, session: Any,
                         authorization: bytes | None, owners: Owners, partition: int
                         ) -> ClusterAnswer | None:
        """A key lookup asked of the node holding the key's partition only, if the key is
        found there; None: not found (no such key, or records not partitioned by Kafka's
        default partitioner), and every node is asked."""
        node = owners.holder(partition)
        if node is None:
            return None
        result, not_open = await self.engine.pull(stmt, session, {partition} if node == "" else set())
        if node == "":
            return ClusterAnswer(result) if result.rows and not not_open else None
        answer = RemoteAnswer()
        await self._ask(node, {partition}, stmt.text, session, authorization, answer)
        if answer.rows and not answer.missing:
            return ClusterAnswer(result, answer.rows)
        return None

    async def cluster_status(self, timeout: float = 2.0) -> dict[str, Any]:
        """ksqlDB's ``/clusterStatus`` body for the whole cluster: every node the directory knows
        (by ``host:port``), whether it answers ``/healthcheck`` now, and per persistent query the
        partitions and stores its consumer groups give it, active and standby (a task kept
        warm is shown as its partitions of the stage's input topics; warm-ups count as
        standbys)."""
        now = int(time.time() * 1000)
        per_node = await active_standby_per_node(self.engine, timeout)

        async def alive(node: str, url: str | None) -> bool:
            if node == self.engine.node_name:
                return True
            if url is None:
                return False
            try:
                response = await self._http.get(f"{url}/healthcheck", timeout=timeout)
            except httpx.HTTPError:
                return False
            return response.status_code < 500  # (401: alive, asking for credentials)

        urls = dict(self.directory.urls)
        nodes = sorted(set(urls) | set(per_node))
        states = await asyncio.gather(*(alive(n, urls.get(n)) for n in nodes))
        try:
            mine = await asyncio.wait_for(self._store_lags(), timeout)
        except asyncio.TimeoutError:
            mine = {}
        return {"clusterStatus": {
            (urls[n].split("://", 1)[-1] if n in urls else n): {
                "hostAlive": up, "lastStatusUpdateMs": now,
                "activeStandbyPerQuery": per_node.get(n, {}),
                # (Each node knows its own stores' lags: the node asked reports its own.)
                "hostStoreLags": {"stateStoreLags": mine if n == self.engine.node_name else {},
                                  "updateTimeMs": now}}
            for n, up in zip(nodes, states)}}

    async def _store_lags(self) -> dict[str, Any]:
        """ksqlDB's ``stateStoreLags`` of this node: per query and store (``<query
        application id>#<store>``), per partition of its active and standby tasks here, the
        changelog offset its state covers, the changelog's end and the difference."""
        out: dict[str, Any] = {}
        for query_id, runners in self.engine.runners.items():
            for runner in runners:
                tasks = runner.tasks
                if tasks is None:
                    continue
                states = dict(tasks.tasks)
                if tasks.standby is not None:
                    states.update((p, st) for p, st in tasks.standby.open.items() if p not in states)
                for spec in tasks.specs:
                    if spec.changelog is None or not states:
                        continue
                    ends = await self.engine.log.end_offsets(spec.changelog)
                    by_partition: dict[str, Any] = {}
                    for p, state in sorted(states.items()):
                        position = state.changelog_positions().get(spec.name, 0)
                        end = ends[p] if p < len(ends) else position
                        by_partition[str(p)] = {"currentOffsetPosition": position,
                                                "endOffsetPosition": end,
                                                "offsetLag": max(0, end - position)}
                    out[f"{self.engine.internal_name(query_id)}#{spec.name}"] = {
                        "lagByPartition": by_partition}
        return out

    async def _ask(self, node: str, parts: set[int], text: str, session: Any,
                   authorization: bytes | None, answer: RemoteAnswer,
                   standby_lag: int | None = None) -> None:
        """``text`` asked of ``node`` for ``parts`` (of its standby copies, with
        ``standby_lag``). A node that gives nothing goes to ``answer.failed`` (another node's
        standby may serve those partitions); one that sends rows then an error, to
        ``answer.missing``."""
        url = self.directory.urls.get(node)
        held = _numbers(parts)
        if url is None:
            answer.fail(parts, f"of node {node} (its address is unknown)")
            return
        headers = {FORWARDED_HEADER: "1", PARTITIONS_HEADER: ",".join(map(str, sorted(parts))),
                   "Accept": "application/vnd.ksqlapi.delimited.v1"}
        if standby_lag is not None:
            headers[STANDBY_HEADER] = str(standby_lag)
        if authorization:
            headers["Authorization"] = authorization.decode("latin-1")
        try:
            response = await self._http.post(f"{url}/query-stream", headers=headers, content=orjson.dumps(
                {"sql": text, "properties": session.properties, "sessionVariables": session.variables}))
        except httpx.HTTPError as exc:
            answer.fail(parts, f"of node {node} at {url} ({type(exc).__name__}: {exc or 'no answer'})")
            return
        lines = [line for line in response.content.split(b"\n") if line.strip()]
        if response.status_code != 200 or not lines:
            answer.fail(parts, f"of node {node} at {url} (HTTP {response.status_code}: "
                               f"{response.text[:200]})")
            return
        for line in lines[1:]:
            if line.startswith(b"{"):  # an error the node sent after its rows
                answer.missing.append(f"partitions {held} of node {node} at {url} "
                                      f"({orjson.loads(line).get('message')})")
            else:
                answer.rows.append(line)


@dataclass
class RemoteAnswer:
    """Rows other nodes sent (JSON array lines, as they came) and what could not be had:
    partitions of nodes that sent nothing (``failed``: partition -> whose and why), and the
    errors of nodes that sent some of their rows (``missing``)."""

    rows: list[bytes] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)

    def fail(self, partitions: set[int], why: str) -> None:
        for p in partitions:
            self.failed[p] = why

    def failures(self) -> list[str]:
        """``failed`` as messages, one per node and reason."""
        by_why: dict[str, set[int]] = {}
        for p, why in self.failed.items():
            by_why.setdefault(why, set()).add(p)
        return [f"partitions {_numbers(ps)} {why}" for why, ps in sorted(by_why.items())]


def _standby_lag(config: dict[str, Any], properties: dict[str, Any]) -> int | None:
    """How far behind (changelog records) a standby copy may be to answer a pull query, when
    ``ksql.query.pull.enable.standby.reads`` is on (ksqlDB's default: off); None: standbys
    are not read."""
    props = {**config, **properties}
    if str(props.get("ksql.query.pull.enable.standby.reads", "false")).lower() != "true":
        return None
    return int(props.get("ksql.query.pull.max.allowed.offset.lag", 2**63 - 1))


def partitions_asked(header: bytes | None) -> set[int] | None:
    """The partitions a forwarded pull query is to be answered from (``PARTITIONS_HEADER``)."""
    if header is None:
        return None
    return {int(p) for p in header.decode().split(",") if p.strip()}


def _numbers(partitions: set[int]) -> str:
    return ", ".join(map(str, sorted(partitions)))


async def active_standby_per_node(engine: Any, timeout: float = 2.0) -> dict[str, dict[str, Any]]:
    """ksqlDB's ``activeStandbyPerQuery`` of ``/clusterStatus`` for every member of the
    persistent queries' consumer groups, by member name: per query the partitions and stores
    its groups give the member, active and standby (a task kept warm is shown as its
    partitions of the stage's input topics; warm-ups count as standbys)."""
    per_node: dict[str, dict[str, Any]] = {}
    for query_id, runners in engine.runners.items():
        for runner in runners:
            try:
                members = await asyncio.wait_for(engine.log.group_tasks(runner.group), timeout)
            except asyncio.TimeoutError:
                continue
            if members is None:  # a Log without groups (embedded): this node is the only member
                members = {engine.node_name: MemberTasks(frozenset(runner.assignment()))}
            stores = [s.name for s in getattr(runner.tasks, "stores", ())]
            for node, tasks in members.items():
                entry = per_node.setdefault(node, {}).setdefault(query_id, {
                    "activeStores": [], "activePartitions": [], "standByStores": [], "standByPartitions": []})
                entry["activePartitions"] += [{"topic": t, "partition": p} for t, p in sorted(tasks.active)]
                if tasks.active:
                    entry["activeStores"] = sorted(set(entry["activeStores"]) | set(stores))
                warm = sorted(tasks.standby | tasks.warmup)
                entry["standByPartitions"] += [{"topic": t, "partition": p}
                                               for p in warm for t in runner.topics]
                if warm:
                    entry["standByStores"] = sorted(set(entry["standByStores"]) | set(stores))
    return per_node

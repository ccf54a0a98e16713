"""Pull queries across the nodes of a cluster (nodes on one Kafka cluster with one service id).

A table's state is spread over the nodes: each holds the partitions its consumer group
assigned it (``Log.group_members``: node name -> partitions). A pull query sent to any node
is answered from all of it:

* a key lookup (``WHERE <key column> = <literal>``) answered here is complete: a key lives in
  one partition. Otherwise, and for any other pull query, the query is sent to every other
  node holding partitions of the table, and the rows are gathered.

Routing a key lookup straight to its owner needs the partition of the key in the topic the
table's last stage reads, and that topic's key bytes are the engine's business (a GROUP BY's
repartition topic has a key encoding of its own): until the engine can say where a key is,
a lookup not answered here asks every other node (one request each, in parallel).

Forwarded requests are ordinary ``/query-stream`` requests carrying ``X-Streamsql-Forwarded``
(answered from local state only, never forwarded again) and the client's credentials. A node
that does not answer is skipped; there are no standby replicas, so its partitions are then
missing, and the answer says which (a ``generic_error`` after the rows).

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
from streamsql import expressions as ex
from streamsql.runtime.log.base import ProducerRecord, TopicExistsError

log = logging.getLogger(__name__)

FORWARDED_HEADER = "x-streamsql-forwarded"
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
class RemoteAnswer:
    """Rows other nodes sent (JSON array lines, as they came) and what could not be had."""

    rows: list[bytes] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


class PullRouter:
    """Answers the parts of a pull query that other nodes hold (see the module docstring)."""

    def __init__(self, engine: Any, directory: NodeDirectory, ca_file: str | None = None,
                 timeout: float = 10.0) -> None:
        import ssl

        self.engine = engine
        self.directory = directory
        verify: Any = ssl.create_default_context(cafile=ca_file) if ca_file else True
        self._http = httpx.AsyncClient(verify=verify, timeout=httpx.Timeout(timeout, connect=2.0))
        self._members: dict[str, tuple[float, dict[str, set[tuple[str, int]]]]] = {}

    async def close(self) -> None:
        await self._http.aclose()

    def _table_group(self, source_name: str) -> str | None:
        """The consumer group of the stage that materializes table ``source_name``."""
        for query_id, query in self.engine.queries.items():
            if query.sink.name == source_name and getattr(query, "materialized", None) is not None:
                runners = self.engine.runners.get(query_id)
                return runners[-1].group if runners else None
        return None

    async def _members_of(self, group: str) -> dict[str, set[tuple[str, int]]] | None:
        cached = self._members.get(group)
        if cached is not None and time.monotonic() - cached[0] < _MEMBERS_TTL:
            return cached[1]
        members = await self.engine.log.group_members(group)
        if members is not None:
            self._members[group] = (time.monotonic(), members)
        return members

    @staticmethod
    def _is_key_lookup(source: Any, where: ex.Expression | None) -> bool:
        """Whether WHERE pins the table's single key column to a literal."""
        if where is None or len(source.schema.key) != 1:
            return False
        column = source.schema.key[0].name
        todo = [where]
        while todo:
            x = todo.pop()
            if isinstance(x, ex.And):
                todo += [x.left, x.right]
            elif isinstance(x, ex.Comparison) and x.op == "=":
                for ref, lit in ((x.left, x.right), (x.right, x.left)):
                    if isinstance(ref, ex.ColumnRef) and ref.name == column and isinstance(lit, ex.Literal):
                        return True
        return False

    async def remote(self, stmt: ast.QueryStatement, text: str, properties: dict[str, Any],
                     variables: dict[str, str], local_rows: int, authorization: bytes | None) -> RemoteAnswer:
        """What the other nodes hold of pull query ``stmt`` (``local_rows`` rows were found here)."""
        answer = RemoteAnswer()
        rel = stmt.query.from_
        source = self.engine.catalog.source(rel.name) if isinstance(rel, ast.AliasedRelation) else None
        group = self._table_group(source.name) if source is not None else None
        if group is None or (local_rows and self._is_key_lookup(source, stmt.query.where)):
            return answer
        members = await self._members_of(group)
        if not members:
            return answer
        me = self.engine.node_name
        others = {name: parts for name, parts in members.items() if name != me and parts}
        if not others:
            return answer
        await asyncio.gather(*(self._ask(name, parts, text, properties, variables, authorization, answer)
                               for name, parts in others.items()))
        return answer

    async def _ask(self, node: str, parts: set[tuple[str, int]], text: str, properties: dict[str, Any],
                   variables: dict[str, str], authorization: bytes | None, answer: RemoteAnswer) -> None:
        url = self.directory.urls.get(node)
        held = ", ".join(f"{t}-{p}" for t, p in sorted(parts))
        if url is None:
            answer.missing.append(f"partitions {held} of node {node} (its address is unknown)")
            return
        headers = {FORWARDED_HEADER: "1", "Accept": "application/vnd.ksqlapi.delimited.v1"}
        if authorization:
            headers["Authorization"] = authorization.decode("latin-1")
        try:
            response = await self._http.post(f"{url}/query-stream", headers=headers, content=orjson.dumps(
                {"sql": text, "properties": properties, "sessionVariables": variables}))
        except httpx.HTTPError as exc:
            self._members.clear()  # membership is probably changing: ask again next time
            answer.missing.append(f"partitions {held} of node {node} at {url} ({type(exc).__name__}: "
                                  f"{exc or 'no answer'})")
            return
        lines = [line for line in response.content.split(b"\n") if line.strip()]
        if response.status_code != 200 or not lines:
            answer.missing.append(f"partitions {held} of node {node} at {url} (HTTP {response.status_code}: "
                                  f"{response.text[:200]})")
            return
        for line in lines[1:]:
            if line.startswith(b"{"):  # an error the node sent after its rows
                answer.missing.append(f"partitions {held} of node {node} at {url} "
                                      f"({orjson.loads(line).get('message')})")
            else:
                answer.rows.append(line)

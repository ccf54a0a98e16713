"""The console's pages and the JSON endpoints it needs beyond ksqlDB's REST API.

``GET /`` (and ``/console``)           the page (``static/index.html``)
``GET /console/assets/<file>``        its scripts and styles (hashed names: cached for good)
``GET /console/api/topics``           topics, their partitions' log start and end offsets,
                                      and the streams and tables declared over each
``GET /console/api/topics/<t>/messages``  a page of one partition's records, key and value
                                      decoded as PRINT decodes them (schema-registry formats
                                      included) with their headers: ``partition``, ``from``
                                      (``beginning``, ``end``, ``offset``, ``timestamp``),
                                      ``offset``, ``timestamp`` (epoch ms), ``limit``
``GET /console/api/groups``           each persistent query's consumer groups: committed
                                      offset, end offset and lag per partition, and (on
                                      Kafka) the members with their active and standby tasks
``GET /console/api/queries/<id>/topology``  a persistent query's stages and topics as a graph

Everything reads the ``Log`` seam, so it answers the same on the embedded log and on Kafka.
The handlers run on the engine's loop (the bridge carries them there), where the runners
and the log live; they read only.
"""
from __future__ import annotations

import asyncio
import logging
import re
from importlib import resources
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import parse_qsl

from streamsql.server.errors import METHOD_NOT_ALLOWED, HttpError, bad_request, generic_error, not_found
from streamsql.server.http import Exchange

log = logging.getLogger(__name__)

PREFIX = "/console"
_ASSET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_TYPES = {".js": b"text/javascript; charset=utf-8", ".css": b"text/css; charset=utf-8",
          ".html": b"text/html; charset=utf-8", ".svg": b"image/svg+xml", ".png": b"image/png",
          ".ico": b"image/x-icon", ".woff2": b"font/woff2", ".map": b"application/json"}
MAX_PAGE = 500
# Topics whose offsets are asked at the same time for the topics listing.
OFFSET_REQUESTS = 32
# A page of records is never asked of the log in one piece larger than this.
_FETCH = 500


class Console:
    """Serves the console's page, assets and JSON endpoints for one engine."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.static = resources.files("streamsql.server.console") / "static"

    @staticmethod
    def handles(path: str) -> bool:
        """Whether ``path`` (without its trailing ``/``) is the console's."""
        return path == "/" or path == PREFIX or path.startswith(PREFIX + "/")

    async def handle(self, ex: Exchange, path: str) -> None:
        """Answer a request ``handles`` accepted."""
        if ex.method not in ("GET", "HEAD"):
            raise HttpError(405, generic_error(METHOD_NOT_ALLOWED, f"Method {ex.method} is not allowed on {path}; use GET"),
                            ((b"allow", b"GET"),))
        if path in ("/", PREFIX):
            await self._file(ex, "index.html", cache=b"no-cache")
            return
        rest = path[len(PREFIX) + 1:]
        if rest.startswith("assets/"):
            name = rest[len("assets/"):]
            if not _ASSET_NAME.match(name):
                raise not_found(f"Unknown endpoint: {ex.method} {ex.path}")
            await self._file(ex, f"assets/{name}", cache=b"public, max-age=31536000, immutable")
            return
        if rest.startswith("api/"):
            await self._api(ex, rest[len("api/"):])
            return
        raise not_found(f"Unknown endpoint: {ex.method} {ex.path}")

    # --------------------------------------------------------------------------- files
    async def _file(self, ex: Exchange, name: str, cache: bytes) -> None:
        item = self.static.joinpath(*PurePosixPath(name).parts)
        if not item.is_file():
            if name == "index.html":
                raise not_found("The web console is not built: run `make console`")
            raise not_found(f"Unknown endpoint: {ex.method} {ex.path}")
        body = item.read_bytes()
        kind = _TYPES.get(PurePosixPath(name).suffix, b"application/octet-stream")
        await ex.respond(200, body, kind, ((b"cache-control", cache),))

    # ----------------------------------------------------------------------------- api
    async def _api(self, ex: Exchange, rest: str) -> None:
        query = dict(parse_qsl(ex.scope.get("query_string", b"").decode("latin-1")))
        # (the path is decoded already; topic names and query ids hold no '/')
        parts = rest.split("/")
        if parts == ["topics"]:
            await ex.json(200, await self.topics())
        elif len(parts) == 3 and parts[0] == "topics" and parts[2] == "messages":
            await ex.json(200, await self.messages(parts[1], query))
        elif parts == ["groups"]:
            await ex.json(200, await self.groups())
        elif len(parts) == 3 and parts[0] == "queries" and parts[2] == "topology":
            await ex.json(200, self.topology(parts[1]))
        else:
            raise not_found(f"Unknown endpoint: {ex.method} {ex.path}")

    async def topics(self) -> dict[str, Any]:
        """Every topic with its partitions' offsets and the sources declared over it."""
        log_ = self.engine.log
        sources: dict[str, list[dict[str, str]]] = {}
        for source in self.engine.catalog.sources.values():
            sources.setdefault(source.topic, []).append({"name": source.name, "type": source.kind})
        topics = sorted((await log_.list_topics()).items())
        # Asked all at once (a broker shared by many services has hundreds of topics: one
        # after the other, their round trips add up to longer than a page load should take).
        slots = asyncio.Semaphore(OFFSET_REQUESTS)

        async def offsets(name: str) -> tuple[list[int], list[int]]:
            async with slots:
                return await log_.begin_offsets(name), await log_.end_offsets(name)
        found = await asyncio.gather(*(offsets(name) for name, _ in topics))
        out = []
        for (name, info), (begins, ends) in zip(topics, found):
            partitions = [{"partition": p, "beginOffset": b, "endOffset": e, "records": max(e - b, 0)}
                          for p, (b, e) in enumerate(zip(begins, ends))]
            out.append({"name": name, "partitions": partitions, "replicas": info.replicas,
                        "config": dict(info.config), "sources": sources.get(name, []),
                        "internal": name.startswith("_"),
                        "records": sum(p["records"] for p in partitions)})
        return {"topics": out}

    async def messages(self, topic: str, query: dict[str, str]) -> dict[str, Any]:
        """A page of one partition's records (see the module docstring)."""
        log_ = self.engine.log
        info = await log_.describe_topic(topic)
        if info is None:
            raise not_found(f"Topic {topic} does not exist")
        partition = _int(query, "partition", 0)
        if not 0 <= partition < info.partitions:
            raise bad_request(f"Topic {topic} has no partition {partition} (it has {info.partitions})")
        limit = min(max(_int(query, "limit", 50), 1), MAX_PAGE)
        begin = (await log_.begin_offsets(topic))[partition]
        end = (await log_.end_offsets(topic))[partition]
        start_from = query.get("from", "beginning")
        if start_from == "beginning":
            start = begin
        elif start_from == "end":
            start = max(begin, end - limit)
        elif start_from == "offset":
            start = min(max(_int(query, "offset", begin), begin), end)
        elif start_from == "timestamp":
            start = await self._offset_for_time(topic, partition, begin, end, _int(query, "timestamp", 0))
        else:
            raise bad_request(f"from must be beginning, end, offset or timestamp, not {start_from!r}")
        records = await self._read(topic, partition, start, end, limit)
        last = records[-1]["offset"] + 1 if records else start
        return {"topic": topic, "partition": partition, "partitions": info.partitions,
                "beginOffset": begin, "endOffset": end, "startOffset": start, "limit": limit,
                "nextOffset": last if last < end else None,
                "previousOffset": max(begin, start - limit) if start > begin else None,
                "records": records}

    async def _offset_for_time(self, topic: str, partition: int, begin: int, end: int, ts: int) -> int:
        """The first offset whose timestamp is at least ``ts`` (Kafka's ListOffsets by time),
        or the end: records are scanned, as the embedded log keeps no time index."""
        at = begin
        while at < end:
            batch = await self.engine.log.fetch(topic, partition, at, _FETCH)
            if not len(batch):
                break
            for offset, stamp in zip(batch.offsets, batch.timestamps):
                if stamp >= ts:
                    return offset
            at = batch.offsets[-1] + 1
        return end

    async def _read(self, topic: str, partition: int, start: int, end: int, limit: int) -> list[dict[str, Any]]:
        from streamsql.record_formatter import RecordFormatter

        formatter = RecordFormatter(self.engine.schema_registry, topic)
        out: list[dict[str, Any]] = []
        at = start
        while at < end and len(out) < limit:
            batch = await self.engine.log.fetch(topic, partition, at, min(_FETCH, limit - len(out)))
            if not len(batch):
                break
            for i in range(len(batch)):
                key, value = batch.keys[i], batch.values[i]
                out.append({"offset": batch.offsets[i], "timestamp": batch.timestamps[i],
                            **_side("key", formatter, key, True), **_side("value", formatter, value, False),
                            "headers": [{"key": k, "value": _header_text(v)}
                                        for k, v in (batch.headers[i] if batch.headers else ())]})
                if len(out) >= limit:
                    break
            at = batch.offsets[-1] + 1
        return out

    async def groups(self) -> dict[str, Any]:
        """Each running persistent query's consumer groups, one per stage group, with
        per-partition committed offsets and lag (end - committed; a partition nothing was
        committed for counts from its log start), and the members where the log knows them."""
        engine = self.engine
        log_ = engine.log
        out = []
        seen: set[str] = set()
        for query_id, runners in sorted(engine.runners.items()):
            for runner in runners:
                if runner.group in seen:
                    continue
                seen.add(runner.group)
                partitions = []
                for topic in runner.topics:
                    committed = await log_.committed(runner.group, topic)
                    begins = await log_.begin_offsets(topic)
                    for p, end in enumerate(await log_.end_offsets(topic)):
                        at = committed.get(p)
                        partitions.append({"topic": topic, "partition": p, "committedOffset": at,
                                           "endOffset": end, "lag": max(end - (begins[p] if at is None else at), 0)})
                tasks = await log_.group_tasks(runner.group)
                members = ({name: {"active": sorted(f"{t}-{p}" for t, p in m.active),
                                   "standby": sorted(m.standby | m.warmup)}
                            for name, m in sorted(tasks.items())} if tasks is not None else
                           {engine.node_name: {"active": sorted(f"{t}-{p}" for t, p in runner.assignment()),
                                               "standby": []}})
                out.append({"group": runner.group, "queryId": query_id, "state": runner.state,
                            "topics": list(runner.topics), "partitions": partitions,
                            "lag": sum(p["lag"] for p in partitions), "members": members})
        return {"groups": out}

    def topology(self, query_id: str) -> dict[str, Any]:
        """A persistent query as a graph: topic nodes (kind ``source``, ``repartition``,
        ``changelog``, ``sink`` or ``topic``), stage nodes, and edges from what each stage
        reads to it and from it to what it writes (its sink and its stores' changelogs)."""
        engine = self.engine
        info = engine.catalog.queries.get(query_id) or engine.catalog.queries.get(query_id.upper())
        if info is None:
            raise not_found(f"Query {query_id} does not exist")
        runners = engine.runners.get(info.query_id, [])
        source_topics = {s.topic: s.name for s in (engine.catalog.sources.get(n) for n in info.sources) if s}
        sink = engine.catalog.sources.get(info.sink) if info.sink else None
        nodes: dict[str, dict[str, Any]] = {}
        edges: list[dict[str, Any]] = []

        def topic_node(topic: str, kind: str | None = None) -> str:
            node_id = "topic:" + topic
            if node_id not in nodes:
                if kind is None:
                    kind = ("source" if topic in source_topics else "sink" if sink is not None and topic == sink.topic
                            else "repartition" if topic.endswith("-repartition") else "topic")
                label = source_topics.get(topic) or (sink.name if sink is not None and topic == sink.topic else None)
                nodes[node_id] = {"id": node_id, "kind": kind, "label": topic, "source": label}
            return node_id

        for i, runner in enumerate(runners):
            stage = runner.stage
            inner = getattr(stage, "inner", stage)
            stage_id = f"stage:{i}"
            nodes[stage_id] = {"id": stage_id, "kind": "stage", "label": f"Stage {i}: {type(inner).__name__}",
                               "source": getattr(stage, "name", None), "state": runner.state}
            for topic in runner.topics:
                edges.append({"from": topic_node(topic), "to": stage_id})
            sink_topic = getattr(stage, "sink_topic", None)
            if sink_topic:
                edges.append({"from": stage_id, "to": topic_node(sink_topic)})
            for spec in getattr(runner.tasks, "specs", ()) or ():
                if spec.changelog:
                    edges.append({"from": stage_id, "to": topic_node(spec.changelog, "changelog"),
                                  "label": spec.name})
        return {"queryId": info.query_id, "sql": info.sql, "nodes": list(nodes.values()), "edges": edges}


def _side(name: str, formatter: Any, data: bytes | None, is_key: bool) -> dict[str, Any]:
    if data is None:
        return {name: None, name + "Format": None}
    try:
        rendering = formatter.detect(data, is_key)
        return {name: rendering.text(data), name + "Format": rendering.formats}
    except Exception:  # noqa: BLE001 - a record the formatter chokes on is shown raw, not a 500
        log.debug("console: cannot decode a record's %s", name, exc_info=True)
        return {name: data.hex(), name + "Format": "BYTES (hex)"}


def _header_text(value: bytes | None) -> str | None:
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return "0x" + value.hex()


def _int(query: dict[str, str], key: str, default: int) -> int:
    raw = query.get(key)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise bad_request(f"{key} must be an integer, not {raw!r}") from None

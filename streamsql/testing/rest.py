"""Runs ksqlDB's REST query-validation cases (../shared/rqtt) through the project's HTTP server.

Each case (see ../shared/rqtt/README.md, "How the project runs them") gets a fresh node of its
own, served on a loopback port in this process (``streamsql.server.testing.node_in_process``)
with an empty data directory, configured as ksqlDB's REST test server is. The runner creates
the case's topics and registers its schemas, sends the statements before the first query in
one ``POST /ksql``, produces the inputs (serialized as the QTT runner does:
``streamsql.testing.qtt.encode_input``), waits for the persistent queries to process them,
sends each query as ``POST /query`` (and, with ``testPullWithProtoFormat``, once more as a
protobuf ``POST /query-stream``), and finally reads every non-internal topic from the start.

What the server answered is kept as it was written: responses are parsed with
``streamsql.testing.exactjson`` (numbers keep their text). The runner never looks at the
expectations; ``streamsql.testing.rest_compare`` does.
"""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

from streamsql.testing import exactjson

log = logging.getLogger(__name__)

# ksqlDB's REST test server runs with these on (RestTestExecutor / its server config).
SERVER_CONFIG: dict[str, str] = {
    "ksql.query.pull.table.scan.enabled": "true",
    "ksql.query.push.v2.enabled": "true",
    "ksql.headers.columns.enabled": "true",
    # Its cases' queries read their inputs from the start (those of scalable push queries
    # ask for 'latest' themselves).
    "auto.offset.reset": "earliest",
    # No record cache (RestQueryTranslationTest's server sets it so): the cases expect
    # every update of an aggregation.
    "ksql.streams.cache.max.bytes.buffering": "0",
}
QUERY_TIMEOUT = 30.0          # a query still streaming after this long is closed
CATCH_UP_TIMEOUT = 10.0       # how long to wait for persistent queries to process inputs
DEFAULT_PARTITIONS = 4        # topics of CREATE without PARTITIONS, and of inputs
PROTOBUF_ACCEPT = "application/vnd.ksql.v1+protobuf"


@dataclass
class RestCaseResult:
    """What the server answered for one case (the README's result shape)."""

    name: str
    # None, or the first request answered with a status other than 200:
    # {"endpoint", "status", "body"}; a failure of the runner itself has endpoint None.
    error: dict[str, Any] | None = None
    responses: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    # How long the case took (not part of the results file).
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "error": self.error, "responses": self.responses,
                "outputs": self.outputs}


# ============================================================================ the cases
def load_cases(path: str | Path, exact: bool = False) -> list[dict[str, Any]]:
    """The cases of a file, expanded per format as the QTT runner expands them
    (``streamsql.testing.qtt.expand_cases``). ``exact``: numbers as ``JsonNumber`` (for
    comparing; the runner itself reads plain JSON, as the QTT runner does)."""
    from streamsql.testing.qtt import expand_cases

    text = Path(path).read_text(encoding="utf-8")
    if not exact:
        return expand_cases(json.loads(text))
    # expand_cases round-trips through the standard json module, which cannot carry
    # JsonNumber: expand on the exact text the same way.
    out = []
    for case in exactjson.loads(text).get("tests", []):
        formats = case.get("format")
        if not formats:
            out.append(case)
            continue
        for fmt in formats:
            expanded = exactjson.loads(exactjson.dumps(case).replace("{FORMAT}", fmt))
            expanded.pop("format", None)
            expanded["name"] = f"{case['name']} - {fmt}"
            out.append(expanded)
    return out


def split_statements(case: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The case's statements before its queries, and its queries (statements that start
    with ``SELECT `` in upper case, as ksqlDB's REST test executor tells them apart)."""
    statements = list(case.get("statements", []) or [])
    admin = [s for s in statements if not s.startswith("SELECT ")]
    queries = [s for s in statements if s.startswith("SELECT ")]
    return admin, queries


# ============================================================================ running
def run_case(case: dict[str, Any], query_timeout: float = QUERY_TIMEOUT) -> RestCaseResult:
    """Run one (expanded) case on a fresh node; see the module docstring."""
    return asyncio.run(run_case_async(case, query_timeout))


async def run_case_async(case: dict[str, Any], query_timeout: float = QUERY_TIMEOUT) -> RestCaseResult:
    """``run_case`` in the running event loop (the node runs on it too)."""
    from streamsql.server.testing import node_in_process

    result = RestCaseResult(case.get("name", ""))
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="rqtt-") as tmp:
        try:
            async with node_in_process(Path(tmp) / "data", SERVER_CONFIG) as (url, app):
                await _CaseRun(case, result, url, app, query_timeout).run()
        except Exception as exc:  # a crash is reported as the case's error, not raised
            log.debug("case %s crashed", result.name, exc_info=True)
            if result.error is None:
                result.error = {"endpoint": None, "status": None,
                                "body": f"runner failure: {type(exc).__name__}: {exc}"}
    result.seconds = time.monotonic() - started
    return result


class _CaseRun:
    """One case against one node: the steps of the README, in order."""

    def __init__(self, case: dict[str, Any], result: RestCaseResult, url: str, app: Any,
                 query_timeout: float) -> None:
        self.case = case
        self.result = result
        self.url = url
        self.app = app  # the server's KsqlApp
        self.engine = app.engine
        self.query_timeout = query_timeout
        self.properties = dict(case.get("properties") or {})
        self.inputs_produced = False

    async def run(self) -> None:
        import httpx

        admin, queries = split_statements(self.case)
        await self._create_topics(admin)
        # No client timeout: a query's own cap (``query_timeout``) decides when to stop.
        async with httpx.AsyncClient(base_url=self.url, timeout=None) as client:
            if admin:
                response = await client.post("/ksql", json={
                    "ksql": "\n".join(admin), "streamsProperties": self.properties})
                body = _parse_body(response.content)
                if response.status_code != 200:
                    self._failed("/ksql", response.status_code, body)
                    return  # the case ends with its statements
                for entity in body if isinstance(body, list) else [body]:
                    self.result.responses.append({"admin": entity})
            await self._wait_ready()
            conditions = self.case.get("inputConditions") or {}
            wait_for_push = bool(conditions.get("waitForActivePushQuery")) and len(queries) == 1
            if not wait_for_push:
                await self._produce_inputs()
            for sql in queries:
                on_header = self._produce_inputs if wait_for_push else None
                await self._query(client, "/query", {"ksql": sql, "streamsProperties": self.properties},
                                  {}, "query", on_header)
            if self.case.get("testPullWithProtoFormat"):
                for sql in queries:
                    await self._query(client, "/query-stream", {"sql": sql, "properties": self.properties},
                                      {"Accept": PROTOBUF_ACCEPT}, "queryProto", None)
        await self._wait_caught_up()
        self.result.outputs = await read_outputs(self.engine)

    def _failed(self, endpoint: str, status: int, body: Any) -> None:
        if self.result.error is None:
            self.result.error = {"endpoint": endpoint, "status": status, "body": body}

    # -------------------------------------------------------------------------- topics
    async def _create_topics(self, admin: list[str]) -> None:
        """Step 2: the case's topics (and their schemas), those of CREATE with columns (and
        the schemas their columns imply), those of the inputs."""
        from streamsql.testing.qtt import _register_topic_schemas

        engine = self.engine
        topics = self.case.get("topics", []) or []
        for topic in topics:
            await _ensure_topic(engine, topic["name"], int(topic.get("partitions", 1) or 1))
        # As ksqlDB's REST tests, over a registry that enforces no compatibility rules.
        engine.schema_registry.set_compatibility("NONE")
        _register_topic_schemas(engine.schema_registry, topics)
        for sql in admin:
            await self._create_source_topic(sql)
        for record in self.case.get("inputs", []) or []:
            await _ensure_topic(engine, record["topic"], DEFAULT_PARTITIONS)
        await engine.schema_registry.flush()

    async def _create_source_topic(self, sql: str) -> None:
        """The topic of a CREATE STREAM/TABLE that declares columns, with the partitions its
        WITH clause gives (else 4), and, for schema-registry formats, the schema its columns
        imply registered (the engine's own derivation)."""
        from streamsql import ast
        from streamsql.analyzer import analyze_create_source
        from streamsql.catalog import Catalog
        from streamsql.parser import parse_statement
        from streamsql.schemaregistry.ksql import register_source_schemas

        try:
            stmt = parse_statement(sql)
        except Exception:  # noqa: BLE001 - the server will say what is wrong with it
            return
        if not isinstance(stmt, ast.CreateSource) or not stmt.elements:
            return
        try:
            source = analyze_create_source(stmt, Catalog(), self.engine.config)
        except Exception:  # noqa: BLE001 - e.g. a type the case creates first: the server decides
            log.debug("cannot analyze %r before running it", sql, exc_info=True)
            return
        await _ensure_topic(self.engine, source.topic, source.partitions or DEFAULT_PARTITIONS)
        try:
            register_source_schemas(source, self.engine.schema_registry, is_sink=False)
        except Exception:  # noqa: BLE001 - a schema the case registered itself may disagree
            log.debug("no schema registered for %r", sql, exc_info=True)

    # -------------------------------------------------------------------------- inputs
    async def _produce_inputs(self) -> None:
        """Step 4: the inputs in the order listed, then wait until the queries have them."""
        from streamsql.testing.qtt import encode_input

        if self.inputs_produced:
            return
        self.inputs_produced = True
        for record in self.case.get("inputs", []) or []:
            await self.engine.log.produce(record["topic"], [encode_input(self.engine, record)])
        await self._wait_caught_up()

    async def _wait_ready(self) -> None:
        """Every persistent query's stages have their partitions (a query reading from the
        latest offset would otherwise miss inputs produced before it started)."""
        runners = [r for rs in list(self.engine.runners.values()) for r in rs]
        try:
            await asyncio.wait_for(asyncio.gather(*(r.ready.wait() for r in runners)), CATCH_UP_TIMEOUT)
        except asyncio.TimeoutError:
            log.warning("%s: persistent queries not started after %.0f s", self.result.name, CATCH_UP_TIMEOUT)

    async def _wait_caught_up(self) -> None:
        if not await wait_caught_up(self.engine, CATCH_UP_TIMEOUT):
            log.warning("%s: persistent queries still behind after %.0f s", self.result.name, CATCH_UP_TIMEOUT)

    # ------------------------------------------------------------------------- queries
    async def _query(self, client: Any, path: str, body: dict[str, Any], headers: dict[str, str],
                     kind: str, on_header: Callable[[], Awaitable[None]] | None) -> None:
        """Step 5: one query request read to its end (or closed after ``query_timeout``)."""
        status, raw = await _stream(client, path, body, headers, self.query_timeout,
                                    self._header_callback(on_header) if on_header else None)
        text = raw.decode("utf-8", errors="replace")
        if status != 200:
            self._failed(path, status, _parse_body(raw))
            return
        self.result.responses.append({kind: _parse_stream(text)})

    def _header_callback(self, produce: Callable[[], Awaitable[None]]
                         ) -> Callable[[bytes], Awaitable[bool]]:
        """For ``waitForActivePushQuery``: once the response holds its first complete value
        (the header), the push query runs on the server: produce the inputs then."""
        async def check(received: bytes) -> bool:
            try:
                items, _ = exactjson.array_items(received.decode("utf-8", errors="replace"))
            except ValueError:
                items = []
            if not items:
                return False
            await self._push_query_running(items[0])
            await produce()
            return True
        return check

    async def _push_query_running(self, first: Any) -> None:
        """Wait until the push query whose header is ``first`` is listed as running by the
        server, then let the server's loop (this one) take a few turns: the server picks
        the query's start position just after it has sent the header, and a record produced
        before that would be skipped by a query reading from the latest offset."""
        header = first.get("header") if isinstance(first, dict) else None
        query_id = header.get("queryId") if isinstance(header, dict) else None
        running = getattr(getattr(self.app, "push_queries", None), "running", None)
        deadline = time.monotonic() + CATCH_UP_TIMEOUT
        while isinstance(running, dict) and query_id not in running and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)


async def _ensure_topic(engine: Any, name: str, partitions: int) -> None:
    from streamsql.runtime.log.base import TopicExistsError

    if await engine.log.describe_topic(name) is not None:
        return
    try:
        await engine.log.create_topic(name, max(partitions, 1))
    except TopicExistsError:
        pass


async def _stream(client: Any, path: str, body: dict[str, Any], headers: dict[str, str],
                  cap: float, on_received: Callable[[bytes], Awaitable[bool]] | None) -> tuple[int, bytes]:
    """POST and read the response until it ends or ``cap`` seconds have passed (then the
    request is closed and what came so far is kept). ``on_received(body so far)`` is called
    after each chunk until it returns True."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + cap
    received = bytearray()
    status = 0
    try:
        async with asyncio.timeout_at(deadline):
            async with client.stream("POST", path, json=body, headers=headers) as response:
                status = response.status_code
                watching = on_received is not None and status == 200
                async for chunk in response.aiter_bytes():
                    received += chunk
                    if watching:
                        assert on_received is not None
                        watching = not await on_received(bytes(received))
    except TimeoutError:
        log.debug("%s closed after %.0f s", path, cap)
    return status, bytes(received)


def _parse_body(raw: bytes) -> Any:
    """A response body as the server sent it: JSON (numbers kept), else its text."""
    text = raw.decode("utf-8", errors="replace")
    try:
        return exactjson.loads(text)
    except ValueError:
        return text


def _parse_stream(text: str) -> list[Any]:
    """The JSON values of a query response: a JSON array (``/query``, ksqlDB's protobuf
    answers), possibly cut short, or one value per line (``/query-stream``'s delimited
    format); a part that is not JSON is kept as its text."""
    try:
        items, _ = exactjson.array_items(text)
        return items
    except ValueError:
        pass
    items = []
    for line in text.splitlines():
        if line.strip():
            try:
                items.append(exactjson.loads(line))
            except ValueError:
                items.append(line)
    return items


# ======================================================================== waiting, outputs
async def query_lag(engine: Any) -> int:
    """Records of the persistent queries' input topics (repartition topics included) that
    their consumer groups have not committed yet."""
    lag = 0
    for runners in list(engine.runners.values()):
        for runner in runners:
            for topic in runner.topics:
                committed = await engine.log.committed(runner.group, topic)
                begins = await engine.log.begin_offsets(topic)
                for p, end in enumerate(await engine.log.end_offsets(topic)):
                    lag += max(end - committed.get(p, begins[p]), 0)
    return lag


async def wait_caught_up(engine: Any, timeout: float) -> bool:
    """Wait until the persistent queries have committed everything of their inputs, twice
    in a row (a stage's output is the next stage's input); False after ``timeout``."""
    deadline = time.monotonic() + timeout
    settled = 0
    while True:
        if await query_lag(engine) == 0:
            settled += 1
            if settled >= 2:
                return True
        else:
            settled = 0
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)


def is_internal_topic(name: str) -> bool:
    """The server's own topics: command topic, schemas, changelogs, repartitions, the
    processing log."""
    from streamsql.engine import PROCESSING_LOG_TOPIC

    return (name.startswith("_") or name.endswith("-changelog") or name.endswith("-repartition")
            or name == PROCESSING_LOG_TOPIC)


async def read_outputs(engine: Any) -> list[dict[str, Any]]:
    """Step 6: every record of every non-internal topic, per topic (by name) and partition
    in offset order, decoded to the cases' JSON form through the stream or table over the
    topic (JSON, else text, where there is none)."""
    from streamsql.testing.qtt import _source_for_topic

    outputs: list[dict[str, Any]] = []
    topics = await engine.log.list_topics()
    for name in sorted(topics):
        if is_internal_topic(name):
            continue
        source = _source_for_topic(engine, name)
        begins = await engine.log.begin_offsets(name)
        ends = await engine.log.end_offsets(name)
        for p, end in enumerate(ends):
            offset = begins[p]
            while offset < end:
                batch = await engine.log.fetch(name, p, offset)
                if not len(batch):
                    break
                for i in range(len(batch)):
                    headers = batch.headers[i] if batch.headers is not None else ()
                    outputs.append(_decode_record(engine, source, name, batch.keys[i], batch.values[i],
                                                  batch.timestamps[i], headers))
                offset = batch.offsets[-1] + 1
    return outputs


def _decode_record(engine: Any, source: Any, topic: str, key: bytes | None, value: bytes | None,
                   timestamp: int, headers: Any) -> dict[str, Any]:
    from streamsql.testing.qtt import _split_window

    window = None
    if source is not None:
        try:
            key_bytes, window = _split_window(source, key)
        except Exception as exc:  # noqa: BLE001 - e.g. a windowed topic's key without a window
            key_bytes, window = None, None
            key_json: Any = f"<undecodable key: {type(exc).__name__}: {exc}>"
        else:
            key_json = _decode(lambda b: engine.codec(source, "key").to_json_form(b), key_bytes, "key")
        value_json = _decode(lambda b: engine.codec(source, "value").to_json_form(b), value, "value")
    else:
        key_json = _decode(_bytes_json_form, key, "key")
        value_json = _decode(_bytes_json_form, value, "value")
    out: dict[str, Any] = {"topic": topic, "key": key_json, "value": value_json,
                           "timestamp": timestamp, "window": window}
    if headers:
        out["headers"] = [{"KEY": k, "VALUE": None if v is None else base64.b64encode(v).decode()}
                          for k, v in headers]
    return out


def _decode(decode: Callable[[bytes], Any], data: bytes | None, what: str) -> Any:
    if data is None:
        return None
    try:
        return decode(data)
    except Exception as exc:  # noqa: BLE001 - undecodable output is shown, not hidden
        return f"<undecodable {what}: {exc}>"


def _bytes_json_form(data: bytes) -> Any:
    """A record part of a topic no stream or table reads: its JSON, else its text."""
    text = data.decode("utf-8")
    try:
        return json.loads(text)
    except ValueError:
        return text


# ============================================================================== files
def run_file(path: str | Path, processes: int = 1, query_timeout: float = QUERY_TIMEOUT
             ) -> list[RestCaseResult]:
    """Run every case of a file, ``processes`` at a time (each case on a node of its own, in
    a worker process of its own); results in the file's order."""
    cases = load_cases(path)
    return run_cases(cases, processes, query_timeout)


def run_cases(cases: list[dict[str, Any]], processes: int = 1, query_timeout: float = QUERY_TIMEOUT
              ) -> list[RestCaseResult]:
    """Run cases, ``processes`` at a time (each in a worker process of its own, on a node of
    its own); results in the cases' order. With more than one process, the calling
    program's main module must guard its work with ``if __name__ == "__main__":`` (the
    workers import it, as multiprocessing's spawn and forkserver methods do)."""
    work = [(case, query_timeout) for case in cases]
    if processes <= 1 or len(work) <= 1:
        return [_run_one(w) for w in work]
    import multiprocessing

    # Workers are forked from a fork server (a fresh interpreter), not from this process:
    # RocksDB, once used here (a case run in this process, a test before), is not safe to
    # use in a forked child (its locks and threads do not survive the fork: a store's close
    # hangs). The server imports and builds what cases need first (``rest_worker``).
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["streamsql.testing.rest_worker"])
    # One case per task: a case waiting out a 30 s query must not hold others back.
    with ctx.Pool(min(processes, len(work))) as pool:
        return pool.map(_run_one, work, chunksize=1)


def preload() -> None:
    """Import what every case needs (engine, server, HTTP client and server, formats) and
    build the statement parser: done once by the worker pool's fork server, instead of
    once per worker."""
    import httpx  # noqa: F401
    import hypercorn.asyncio.run  # noqa: F401

    import streamsql.engine  # noqa: F401
    import streamsql.server.app  # noqa: F401
    import streamsql.server.main  # noqa: F401
    import streamsql.testing.qtt  # noqa: F401
    from streamsql.formats.registry import get_format
    from streamsql.parser import parse_statement

    parse_statement("SELECT * FROM T;")  # builds the LALR tables (a second or so)

    for name in ("JSON", "AVRO", "PROTOBUF", "JSON_SR", "KAFKA", "DELIMITED"):
        get_format(name)


def _run_one(work: tuple[dict[str, Any], float]) -> RestCaseResult:
    case, query_timeout = work
    return run_case(case, query_timeout)


def results_json(results: list[RestCaseResult]) -> str:
    """The results file's text (numbers as the server wrote them)."""
    return exactjson.dumps({"results": [r.to_json() for r in results]}, indent=1) + "\n"

"""A client of the REST API (``RestClient``) and the shell's backend over it (``RemoteBackend``).

``streamsql --server URL`` runs the same shell as embedded mode; only where statements go
differs. As ksqlDB's CLI does, the backend keeps SET and DEFINE on the client side and sends
them with every request (``streamsProperties``, ``sessionVariables``); SELECT goes to
``/query-stream`` (delimited rows), PRINT to ``/query``, everything else to ``/ksql``. The
entities the server returns are turned back into ``Result`` objects, so the shell renders
them exactly as it renders the embedded engine's.

A push query's rows are read as they arrive; closing it (Ctrl-C in the shell) closes the
HTTP response, which the server sees as a disconnect and closes the query.
"""
from __future__ import annotations

import logging
import re
import ssl
from typing import Any

import httpx
import orjson

from streamsql.errors import StreamSqlError
from streamsql.results import Result

log = logging.getLogger(__name__)

_STRING_LITERAL = re.compile(r"'(?:[^']|'')*'")
_EMIT = re.compile(r"\bEMIT\s+(CHANGES|FINAL)\b", re.IGNORECASE)
_LOCAL = ("SET", "UNSET", "DEFINE", "UNDEFINE")


class RemoteError(StreamSqlError):
    """The server refused a request (its ``message``), or could not be reached."""

    def __init__(self, message: str, status: int | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


def _error_of(status: int, raw: bytes) -> RemoteError:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    if status == 401:
        return RemoteError("Unauthorized: the server needs a valid user and password (--user, --password)",
                           status, body)
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return RemoteError(body["message"], status, body)
    text = raw.decode("utf-8", "replace").strip()
    return RemoteError(f"Server error {status}: {text or 'no details'}", status)


# ================================================================================== client
class RestClient:
    """Async client of a streamsql (or ksqlDB) server's REST API."""

    def __init__(self, url: str, *, user: str | None = None, password: str | None = None,
                 ca_file: str | None = None, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        # Kept so that the shell's SERVER <url> can open a client like this one elsewhere.
        self._options: dict[str, Any] = {"user": user, "password": password, "ca_file": ca_file,
                                         "timeout": timeout}
        verify: Any = True
        if ca_file:
            verify = ssl.create_default_context(cafile=ca_file)
        auth = (user, password or "") if user else None
        self._http = httpx.AsyncClient(base_url=self.url, auth=auth, verify=verify,
                                       timeout=httpx.Timeout(timeout),
                                       headers={"Accept": "application/vnd.ksql.v1+json, application/json"})

    def with_url(self, url: str) -> "RestClient":
        """A new client of the server at ``url``, with this one's credentials and TLS trust."""
        return RestClient(url, **self._options)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        try:
            response = await self._http.post(path, content=orjson.dumps(body),
                                             headers={"Content-Type": "application/vnd.ksql.v1+json"})
        except httpx.HTTPError as exc:
            raise RemoteError(f"Cannot reach the server at {self.url}: {exc or type(exc).__name__}") from None
        if response.status_code != 200:
            raise _error_of(response.status_code, response.content)
        return response.json() if response.content else None

    async def info(self) -> dict[str, Any]:
        try:
            response = await self._http.get("/info")
        except httpx.HTTPError as exc:
            raise RemoteError(f"Cannot reach the server at {self.url}: {exc or type(exc).__name__}") from None
        if response.status_code != 200:
            raise _error_of(response.status_code, response.content)
        return response.json().get("KsqlServerInfo", {})

    async def ksql(self, text: str, properties: dict[str, Any] | None = None,
                   variables: dict[str, str] | None = None) -> list[dict[str, Any]]:
        """``POST /ksql``: the entities of the statements."""
        return await self._post("/ksql", {"ksql": text, "streamsProperties": properties or {},
                                          "sessionVariables": variables or {}}) or []

    async def close_query(self, query_id: str) -> None:
        await self._post("/close-query", {"queryId": query_id})

    async def _open(self, path: str, body: dict[str, Any], accept: str) -> httpx.Response:
        request = self._http.build_request(
            "POST", path, content=orjson.dumps(body),
            headers={"Content-Type": "application/json", "Accept": accept},
            # A push query may wait for rows as long as it likes.
            timeout=httpx.Timeout(self._http.timeout.connect, read=None))
        try:
            response = await self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise RemoteError(f"Cannot reach the server at {self.url}: {exc or type(exc).__name__}") from None
        if response.status_code != 200:
            raw = await response.aread()
            await response.aclose()
            raise _error_of(response.status_code, raw)
        return response

    async def query(self, sql: str, properties: dict[str, Any] | None = None,
                    variables: dict[str, str] | None = None) -> "QueryStream":
        """``POST /query-stream`` (delimited): the header is read before this returns."""
        response = await self._open("/query-stream", {"sql": sql, "properties": properties or {},
                                                      "sessionVariables": variables or {}},
                                    "application/vnd.ksqlapi.delimited.v1")
        stream = QueryStream(response)
        try:
            await stream.read_header()
        except BaseException:
            await stream.aclose()
            raise
        return stream

    async def print_topic(self, sql: str, properties: dict[str, Any] | None = None,
                          variables: dict[str, str] | None = None) -> "PrintStream":
        """``POST /query`` with a PRINT statement: its text lines."""
        response = await self._open("/query", {"ksql": sql, "streamsProperties": properties or {},
                                               "sessionVariables": variables or {}}, "text/plain")
        return PrintStream(response)


class QueryStream:
    """The rows of a ``/query-stream`` response, as tuples; ``aclose`` ends the query."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()
        self.header: dict[str, Any] = {}

    @property
    def query_id(self) -> str | None:
        return self.header.get("queryId")

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(self.header.get("columnNames") or ())

    async def read_header(self) -> None:
        value = await self._next_value()
        if not isinstance(value, dict):
            raise RemoteError("The server's answer has no header")
        self.header = value

    async def _next_value(self) -> Any:
        while True:
            try:
                line = await self._lines.__anext__()
            except httpx.HTTPError as exc:
                raise RemoteError(f"The connection to the server broke: {exc or type(exc).__name__}") from None
            if line.strip():
                return orjson.loads(line)

    def __aiter__(self) -> "QueryStream":
        return self

    async def __anext__(self) -> tuple[Any, ...]:
        value = await self._next_value()
        if isinstance(value, dict):  # an error object ends the stream
            raise RemoteError(str(value.get("message", value)))
        return tuple(value)

    async def aclose(self) -> None:
        await self.response.aclose()


class PrintStream:
    """The lines of a PRINT, as one-element tuples (what the shell's PRINT printing takes)."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()

    def __aiter__(self) -> "PrintStream":
        return self

    async def __anext__(self) -> tuple[str]:
        try:
            line = await self._lines.__anext__()
        except httpx.HTTPError as exc:
            raise RemoteError(f"The connection to the server broke: {exc or type(exc).__name__}") from None
        return (line,)

    async def aclose(self) -> None:
        await self.response.aclose()


# ============================================================================ entities
def _schema_text(schema: dict[str, Any] | None, describe: bool) -> str:
    """A REST schema (``{"type", "fields", "memberSchema"}``) as DESCRIBE prints it
    (``describe``) or as SQL (``STRUCT<`A` STRING>``)."""
    if not schema:
        return ""
    t = schema.get("type", "")
    if t == "STRING" and describe:
        return "VARCHAR(STRING)"
    if t == "ARRAY":
        return f"ARRAY<{_schema_text(schema.get('memberSchema'), describe)}>"
    if t == "MAP":
        return f"MAP<{'VARCHAR(STRING)' if describe else 'STRING'}, {_schema_text(schema.get('memberSchema'), describe)}>"
    if t == "STRUCT":
        fields = schema.get("fields") or []
        if describe:
            return "STRUCT<" + ", ".join(f"{f['name']} {_schema_text(f['schema'], True)}" for f in fields) + ">"
        return "STRUCT<" + ", ".join(f"`{f['name']}` {_schema_text(f['schema'], False)}" for f in fields) + ">"
    return str(t)


def _field_rows(fields: list[dict[str, Any]], is_table: bool) -> list[tuple[str, str]]:
    rows = []
    for f in fields:
        marker = ""
        if f.get("type") == "KEY":
            marker = "  (primary key)" if is_table else "  (key)"
        elif f.get("type") == "HEADER":
            marker = f"  (header('{f['headerKey']}'))" if f.get("headerKey") else "  (headers)"
        rows.append((f["name"], _schema_text(f.get("schema"), True) + marker))
    return rows


def _with_field_rows(desc: dict[str, Any]) -> dict[str, Any]:
    return {**desc, "fieldRows": _field_rows(desc.get("fields") or [], desc.get("type") == "TABLE")}


def result_of(entity: dict[str, Any]) -> Result:
    """A REST entity as the ``Result`` the embedded engine would have returned."""
    kind = entity.get("@type", "")
    text = entity.get("statementText", "")
    warnings = [w.get("message", "") for w in entity.get("warnings") or []]

    def res(**kw: Any) -> Result:
        return Result(text, kw.pop("kind", kind), warnings=warnings, entity=entity, **kw)

    if kind == "currentStatus":
        status = entity.get("commandStatus") or {}
        return res(message=status.get("message"), query_id=status.get("queryId"))
    if kind in ("streams", "tables"):
        label = "Stream Name" if kind == "streams" else "Table Name"
        return res(columns=(label, "Kafka Topic", "Key Format", "Value Format", "Windowed"),
                   rows=[(s["name"], s["topic"], s["keyFormat"], s["valueFormat"],
                          "true" if s.get("isWindowed") else "false") for s in entity.get(kind, [])])
    if kind == "queries":
        rows = []
        for q in entity.get("queries", []):
            status = ", ".join(f"{k}:{v}" for k, v in (q.get("statusCount") or {}).items())
            sql = " ".join(q.get("queryString", "").split()).rstrip(";") + ";"
            rows.append((q["id"], q.get("queryType", ""), status, (q.get("sinks") or [""])[0],
                         (q.get("sinkKafkaTopics") or [""])[0], sql))
        return res(columns=("Query ID", "Query Type", "Status", "Sink Name", "Sink Kafka Topic", "Query String"),
                   rows=rows)
    if kind in ("kafka_topics", "kafka_topics_extended"):
        extended = kind == "kafka_topics_extended"
        columns: tuple[str, ...] = ("Kafka Topic", "Partitions", "Partition Replicas")
        rows = []
        for t in entity.get("topics", []):
            replicas = t.get("replicaInfo") or [1]
            row: tuple[Any, ...] = (t["name"], len(replicas), replicas[0])
            if extended:
                row += (t.get("consumerCount", 0), t.get("consumerGroupCount", 0))
            rows.append(row)
        if extended:
            columns += ("Consumers", "ConsumerGroups")
        return res(kind="kafka_topics", columns=columns, rows=rows)
    if kind == "properties":
        return res(columns=("Property", "Level", "Effective Value"),
                   rows=[(p["name"], p.get("level", "SERVER"), str(p.get("value"))) for p in entity.get("properties", [])])
    if kind == "function_names":
        return res(columns=("Function Name", "Category"),
                   rows=[(f["name"], f.get("category", "")) for f in entity.get("functions", [])])
    if kind == "type_list":
        return res(columns=("Type Name", "Schema"),
                   rows=[(n, _schema_text(s, False)) for n, s in sorted((entity.get("types") or {}).items())])
    if kind == "variables":
        return res(columns=("Variable Name", "Value"),
                   rows=[(v["name"], v["value"]) for v in entity.get("variables", [])])
    if kind == "sourceDescription":
        desc = _with_field_rows(entity["sourceDescription"])
        return Result(text, kind, entity={**entity, "sourceDescription": desc}, warnings=warnings)
    if kind == "sourceDescriptionList":
        descs = [_with_field_rows(d) for d in entity.get("sourceDescriptions", [])]
        return Result(text, kind, entity={**entity, "sourceDescriptions": descs}, warnings=warnings)
    if kind == "queryDescription":
        desc = entity["queryDescription"]
        desc = {**desc, "fieldRows": _field_rows(desc.get("fields") or [], False)}
        return Result(text, kind, entity={**entity, "queryDescription": desc}, warnings=warnings)
    if kind == "describe_function":
        return res()
    if kind == "assert_topic":
        state = "exists" if entity.get("exists") else "does not exist"
        return res(message=f"Topic {entity.get('topicName')} {state}.")
    if kind == "assert_schema":
        what = "Schema with" + (f" subject {entity['subject']}" if entity.get("subject") is not None else "") \
            + (f" id {entity['id']}" if entity.get("id") is not None else "")
        return res(message=f"{what} {'exists' if entity.get('exists') else 'does not exist'}.")
    if kind == "connector_info":
        return res(message=f"Created connector {(entity.get('info') or {}).get('name', '')}")
    if kind == "drop_connector":
        return res(message=f'Dropped connector "{entity.get("connectorName", "")}"')
    if kind == "connector_list":
        return res(columns=("Connector Name", "Type", "Class", "Status"),
                   rows=[(c["name"], str(c.get("type", "")).upper(), c.get("className", ""), c.get("state", ""))
                         for c in entity.get("connectors", [])])
    if kind == "connector_plugins_list":
        return res(columns=("Class", "Type", "Version"),
                   rows=[(p["className"], str(p.get("type", "")).upper(), p.get("version", ""))
                         for p in entity.get("connectorPlugins", [])])
    if kind == "connector_description":
        return res()
    if kind == "warning_entity":
        return res(kind="currentStatus", message=entity.get("message"))
    # An entity this client does not know: show it as it came.
    return res(kind="currentStatus", message=orjson.dumps(entity, option=orjson.OPT_INDENT_2).decode())


# ============================================================================== backend
def _first_word(text: str) -> str:
    from streamsql.shell import strip_comments

    words = strip_comments(text).split(None, 1)
    return words[0].upper() if words else ""


def is_push_query(text: str) -> bool:
    """Whether a SELECT is a push query (EMIT CHANGES/FINAL outside string literals)."""
    from streamsql.shell import strip_comments

    return _EMIT.search(_STRING_LITERAL.sub("''", strip_comments(text))) is not None


class RemoteBackend:
    """The shell's statements sent to a server (see the module docstring)."""

    def __init__(self, client: RestClient) -> None:
        self.client = client
        self.properties: dict[str, Any] = {}
        self.variables: dict[str, str] = {}
        self._words: list[str] = []

    def completion_words(self) -> list[str]:
        return self._words

    async def refresh_completions(self) -> None:
        """Names of streams, tables, queries, types and functions, for Tab completion."""
        try:
            entities = await self.client.ksql("SHOW STREAMS; SHOW TABLES; SHOW QUERIES; SHOW TYPES; SHOW FUNCTIONS;")
        except StreamSqlError:
            return
        words: list[str] = []
        for e in entities:
            for key in ("streams", "tables", "queries", "functions"):
                words += [x.get("name") or x.get("id") or "" for x in e.get(key, [])]
            words += list((e.get("types") or {}).keys())
        self._words = [w for w in words if w]

    async def execute(self, text: str) -> list[Result]:
        """Run the statements of ``text``; raises the first failure (earlier ones ran)."""
        from streamsql.server.app import split_text

        results: list[Result] = []
        changed = False
        for piece in split_text(text):
            word = _first_word(piece)
            if word in _LOCAL:
                results.append(self._local(piece))
            elif word == "SELECT":
                results.append(await self._query(piece))
            elif word == "PRINT":
                stream = await self.client.print_topic(piece + ";", self.properties, self.variables)
                results.append(Result(piece, "stream", columns=("PRINT",), stream=stream,
                                      entity={"@type": "print"}))
            else:
                entities = await self.client.ksql(piece + ";", self.properties, self.variables)
                results += [result_of(e) for e in entities]
                changed = changed or word not in ("SHOW", "LIST", "DESCRIBE", "EXPLAIN")
        if changed:
            await self.refresh_completions()
        return results

    def _local(self, piece: str) -> Result:
        """SET/UNSET/DEFINE/UNDEFINE: kept here and sent with every request."""
        from streamsql import ast
        from streamsql.parser import parse_statement
        from streamsql.variables import substitute

        stmt = parse_statement(substitute(piece, self.variables))
        if isinstance(stmt, ast.SetProperty):
            self.properties[stmt.name] = stmt.value
            return Result(stmt.text, "currentStatus",
                          f"Successfully changed local property '{stmt.name}' to '{stmt.value}'.")
        if isinstance(stmt, ast.UnsetProperty):
            self.properties.pop(stmt.name, None)
            return Result(stmt.text, "currentStatus", f"Successfully unset local property '{stmt.name}'.")
        if isinstance(stmt, ast.DefineVariable):
            self.variables[stmt.name] = stmt.value
        elif isinstance(stmt, ast.UndefineVariable):
            self.variables.pop(stmt.name, None)
        return Result(stmt.text, "currentStatus", None)

    async def _query(self, piece: str) -> Result:
        stream = await self.client.query(piece + ";", self.properties, self.variables)
        if is_push_query(piece):
            return Result(piece, "stream", columns=stream.columns, stream=stream, query_id=stream.query_id)
        rows: list[tuple[Any, ...]] = []
        warnings: list[str] = []
        try:
            async for row in stream:
                rows.append(row)
        except RemoteError as exc:  # rows, then what is missing (a node of a cluster is down)
            if not rows:
                raise
            warnings.append(str(exc))
        finally:
            await stream.aclose()
        return Result(piece, "rows", columns=stream.columns, rows=rows, query_id=stream.query_id,
                      warnings=warnings)


"""Kafka Connect's REST API over the engine's Connect worker (``engine.connect_worker``).

Paths, bodies, status codes and error bodies are Apache Kafka 3.9's ``ConnectorsResource``,
``ConnectorPluginsResource`` and ``RootResource``, message for message:

``GET /``                                        version, commit, kafka_cluster_id
``GET /health``                                  the worker's health
``GET|POST /connectors``                         names (``?expand=status&expand=info``); create -> 201
                                                 (``initial_state``: RUNNING, PAUSED, STOPPED)
``GET|DELETE /connectors/{c}``                   info; delete -> 204
``GET|PUT /connectors/{c}/config``               config; create (201) or update (200)
``PATCH /connectors/{c}/config``                 update some keys (null removes one)
``GET /connectors/{c}/status``                   connector and task states
``POST /connectors/{c}/restart``                 204; with ``includeTasks``/``onlyFailed``, 202 + status
``PUT /connectors/{c}/pause|resume|stop``        202, 202, 204
``GET /connectors/{c}/tasks``                    task ids and configs
``GET /connectors/{c}/tasks/{t}/status``         a task's state
``POST /connectors/{c}/tasks/{t}/restart``       204
``GET /connectors/{c}/offsets``                  ``{"offsets": [{"partition": ..., "offset": ...}]}``
``GET /connectors/{c}/topics``                   ``{"c": {"topics": [...]}}``
``PUT /connectors/{c}/topics/reset``             202
``GET /connector-plugins``                       ``?connectorsOnly=false`` adds the converters
``GET /connector-plugins/{p}/config``            the plugin's config definitions
``PUT /connector-plugins/{p}/config/validate``   ConfigInfos

Errors are Connect's ``{"error_code": N, "message": "..."}``; each endpoint answers an unknown
connector with the words Connect's herder uses there ("Connector x not found", "No status
found for connector x", "Unknown connector x", ...). Path segments are percent-decoded one by
one, so a name may hold any character, ``/`` included. In a cluster (Kafka), what only the
node running a connector or task can do (restart it) is forwarded to that node, with
Connect's ``forward=false``.

Connectors made here are the worker's, the same ones ``CREATE SOURCE CONNECTOR`` makes: the
worker's configs topic on the Log is their record (``streamsql.exec.connectors``), so they show
in ``SHOW CONNECTORS`` and run again after a restart. ``KsqlApp`` serves the ``/connectors``
and ``/connector-plugins`` paths on the ksqlDB listeners; ``ConnectApp`` serves the whole API
on listeners of its own (``streamsql server --connect-listeners``), as a Connect worker does.
"""
from __future__ import annotations

import asyncio
import logging
import re
from typing import Any, Awaitable, Callable, Mapping, Sequence
from urllib.parse import parse_qs, quote, unquote

import httpx
import orjson

from streamsql import __version__
from streamsql.runtime.connect.api import ConnectException
from streamsql.runtime.connect.converters import CONVERTERS
from streamsql.runtime.connect.worker import (ERROR_KEYS, SINK_ERROR_KEYS, TARGET_PAUSED, TARGET_STOPPED,
                                              ConnectRestError)
from streamsql.server.auth import BasicAuth
from streamsql.server.errors import HttpError
from streamsql.server.http import Disconnected, Exchange, Receive, Send

log = logging.getLogger(__name__)

# Connect's words (HerderRequestHandler) for a request whose target moved in a rebalance.
_REBALANCING = "Cannot complete request because of a conflicting operation (e.g. worker rebalance)"

# The Kafka Connect release whose REST API this is (``GET /``'s version).
CONNECT_VERSION = "3.9.1"
JSON = b"application/json"

Params = dict[str, str]
Query = dict[str, list[str]]
Handler = Callable[["ConnectApi", Exchange, Params, Query, bytes], Awaitable[None]]


def is_connect_path(path: str) -> bool:
    """Whether ``path`` is one of Connect's that the ksqlDB listeners serve too."""
    for root in ("/connectors", "/connector-plugins"):
        if path == root or path.startswith(root + "/"):
            return True
    return False


def _segments(ex: Exchange) -> list[str]:
    # The raw path, split before decoding: a name's %2F is part of the name, not a separator.
    raw = ex.scope.get("raw_path")
    text = raw.decode("latin-1").split("?", 1)[0] if raw else quote(ex.path)
    if "://" in text:  # an absolute-form target
        text = "/" + text.split("://", 1)[1].partition("/")[2]
    return [unquote(s) for s in text.strip("/").split("/")] if text.strip("/") else []


def _flag(query: Query, name: str) -> bool:
    # JAX-RS' Boolean parameters: "true" in any case, anything else false.
    values = query.get(name)
    return bool(values) and values[0].strip().lower() == "true"


def _http_error(status: int, phrase: str) -> ConnectRestError:
    # What Jersey's own exceptions (no route, wrong method, bad parameter) become in Connect.
    return ConnectRestError(status, f"HTTP {status} {phrase}")


def _config_body(raw: bytes, what: str = "config") -> dict[str, str]:
    """A JSON object of strings, as Connect's ``Map<String, String>`` bodies (Jackson makes
    numbers and booleans text)."""
    value = _json(raw)
    if not isinstance(value, dict):
        raise ConnectRestError(400, f"The connector {what} must be a JSON object")
    return _strings(value, what)


def _json(raw: bytes) -> Any:
    if not raw.strip():
        raise _http_error(400, "Bad Request")  # Jersey's answer to an empty entity
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        # Connect answers Jackson's parse errors with 500 and Jackson's words (its exception
        # mapper treats them as any other exception); the message here is orjson's.
        raise ConnectRestError(500, f"Unexpected character in JSON: {exc}") from None


def _strings(value: Mapping[str, Any], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in value.items():
        if v is None:
            raise ConnectRestError(400, f"Null value can not be supplied as the configuration value of {k}.")
        if isinstance(v, bool):
            out[str(k)] = "true" if v else "false"
        elif isinstance(v, (str, int, float)):
            out[str(k)] = str(v)
        else:
            raise ConnectRestError(400, f"The value of {k} in the connector {what} must be a string")
    return out


def _check_name(name: str, config: dict[str, str]) -> None:
    """Connect's ``checkAndPutConnectorConfigName``: the config's ``name``, if any, is the
    connector's; else it is added."""
    included = config.get("name")
    if included is None:
        config["name"] = name
    elif included != name:
        raise ConnectRestError(400, f"Connector name configuration ({included}) doesn't match connector "
                                    f"name in the URL ({name})")


# Connect's ConnectorConfig definitions (group, order, width, display name), listed first by
# the validate endpoint, as Connect does.
_COMMON: tuple[tuple[str, str, str | None, bool, str, str, str, int, str, str], ...] = (
    ("name", "STRING", None, True, "HIGH", "Globally unique name to use for this connector.",
     "Common", 1, "MEDIUM", "Connector name"),
    ("connector.class", "STRING", None, True, "HIGH",
     "Name or alias of the class for this connector. Must be a subclass of org.apache.kafka.connect.connector."
     "Connector. If the connector is org.apache.kafka.connect.file.FileStreamSinkConnector, you can either "
     "specify this full name,  or use \"FileStreamSink\" or \"FileStreamSinkConnector\" to make the "
     "configuration a bit shorter", "Common", 2, "LONG", "Connector class"),
    ("tasks.max", "INT", "1", False, "HIGH", "Maximum number of tasks to use for this connector.",
     "Common", 3, "SHORT", "Tasks max"),
    ("key.converter", "CLASS", None, False, "LOW",
     "Converter class used to convert between Kafka Connect format and the serialized form that is written "
     "to Kafka. This controls the format of the keys in messages written to or read from Kafka, and since "
     "this is independent of connectors it allows any connector to work with any serialization format. "
     "Examples of common formats include JSON and Avro.", "Common", 5, "SHORT", "Key converter class"),
    ("value.converter", "CLASS", None, False, "LOW",
     "Converter class used to convert between Kafka Connect format and the serialized form that is written "
     "to Kafka. This controls the format of the values in messages written to or read from Kafka, and since "
     "this is independent of connectors it allows any connector to work with any serialization format. "
     "Examples of common formats include JSON and Avro.", "Common", 6, "SHORT", "Value converter class"),
)
_SINK: tuple[tuple[str, str, str | None, bool, str, str, str, int, str, str], ...] = (
    ("topics", "LIST", "", False, "HIGH", "List of topics to consume, separated by commas", "Common", 4,
     "LONG", "Topics"),
    ("topics.regex", "STRING", "", False, "HIGH",
     "Regular expression giving topics to consume. Under the hood, the regex is compiled to a "
     "<code>java.util.regex.Pattern</code>. Only one of topics or topics.regex should be specified.",
     "Common", 4, "LONG", "Topics regex"),
)


def _definition(name: str, type_: str, default: str | None, required: bool, importance: str, doc: str,
                group: str | None, order: int, width: str, display: str,
                dependents: Sequence[str] = ()) -> dict[str, Any]:
    # Connect's ConfigKeyInfo as Jackson writes it (its getter names the order "order").
    return {"name": name, "type": type_, "required": required, "default_value": None if required else default,
            "importance": importance, "documentation": doc, "group": group, "width": width,
            "display_name": display, "dependents": list(dependents), "order": order}


def _as_text(value: Any, type_: str) -> str | None:
    # ConfigDef.convertToString
    if value is None:
        return None
    if type_ == "PASSWORD":
        return "[hidden]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def _plugin_definitions(plugin: Any) -> list[dict[str, Any]]:
    """The definitions of a plugin's own keys (its ConfigDef)."""
    return _key_definitions(plugin.connector().config())


def _key_definitions(keys: Sequence[Any]) -> list[dict[str, Any]]:
    out = []
    for key in keys:
        out.append(_definition(key.name, key.type, _as_text(key.default, "STRING"), key.required, key.importance,
                               key.documentation, key.group, key.order_in_group, key.width,
                               key.display_name or key.name, key.dependents))
    return out


def config_infos(worker: Any, plugin: Any, config: Mapping[str, str]) -> dict[str, Any]:
    """Connect's ``ConfigInfos`` for ``config``: for each key the plugin's ConfigDef has (the
    common definitions, the sink ones for a sink, the plugin's own), its definition and its
    value (as ConfigDef parsed it: the default where unset, ``[hidden]`` for a password;
    recommended values; the errors found on it); keys with errors but no definition last;
    ``error_count`` the errors of every key."""
    sink = plugin.type == "sink"
    errors: dict[str, list[str]] = {}
    name = config.get("name")
    if name is None:
        errors["name"] = ['Missing required configuration "name" which has no default value.']
    elif not name.strip():
        errors["name"] = [f"Invalid value {name} for configuration name: String may not be empty"]
    for key, messages in worker.validate_keys(config).items():
        errors.setdefault(key, []).extend(messages)
    if sink and "topics" in errors:
        errors["topics.regex"] = list(errors["topics"])  # Connect puts the topics errors on both keys
    definitions = [_definition(*d) for d in _COMMON + (_SINK if sink else ())]
    error_keys = ERROR_KEYS + (SINK_ERROR_KEYS if sink else ())
    definitions += _key_definitions(error_keys)
    seen = {d["name"] for d in definitions}
    definitions += [d for d in _plugin_definitions(plugin) if d["name"] not in seen]
    recommended = {k.name: list(k.valid_values) for k in (*error_keys, *plugin.connector().config())}
    configs = []
    for d in definitions:
        value = config.get(d["name"], d["default_value"])
        if d["type"] == "PASSWORD":
            value = _as_text(value, "PASSWORD")
        configs.append({"definition": d, "value": {"name": d["name"], "value": value,
                                                   "recommended_values": recommended.get(d["name"], []),
                                                   "errors": errors.pop(d["name"], []), "visible": True}})
    for key, messages in errors.items():  # errors about keys without a definition here
        configs.append({"definition": None, "value": {"name": key, "value": config.get(key),
                                                      "recommended_values": [], "errors": messages,
                                                      "visible": True}})
    groups = list(dict.fromkeys(d["group"] for d in definitions if d["group"]))
    count = sum(len(c["value"]["errors"]) for c in configs)
    return {"name": config.get("connector.class", plugin.class_name), "error_count": count, "groups": groups,
            "configs": configs}


class ConnectApi:
    """The routes and handlers; ``handle`` answers one request (see the module docstring).
    ``root`` says whether ``GET /`` and ``GET /health`` are Connect's (on a Connect listener)."""

    def __init__(self, engine: Any, cluster_id: str, max_request_bytes: int = 10 * 1024 * 1024,
                 router: Any = None) -> None:
        self.engine = engine
        self.cluster_id = cluster_id
        self.max_request_bytes = max_request_bytes
        # In a cluster: its PullRouter, whose node directory says where the other nodes are
        # (requests about a connector another node runs are forwarded there, as Connect does).
        self.router = router
        self.ca_file: str | None = None  # trusted for forwarding to https nodes

    @property
    def worker(self) -> Any:
        return self.engine.connect_worker

    async def handle(self, ex: Exchange, root: bool = False) -> None:
        """Answer ``ex``: Connect's answer, or Connect's error body."""
        try:
            # Read first: an answer sent before the body is read may not reach the client.
            raw = await ex.body(self.max_request_bytes)
            segments = _segments(ex)
            route = self._route(segments, root)
            if route is None:
                raise _http_error(404, "Not Found")
            methods, params = route
            handler = methods.get(ex.method)
            if handler is None:
                raise _http_error(405, "Method Not Allowed")
            if raw.strip() and ex.method in ("POST", "PUT", "PATCH"):
                kind = ex.headers.get(b"content-type", JSON).split(b";", 1)[0].strip().lower()
                if kind != JSON and not kind.endswith(b"+json"):
                    raise _http_error(415, "Unsupported Media Type")  # Connect's @Consumes
            query = parse_qs(ex.scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
            await self.worker.load()
            await handler(self, ex, params, query, raw)
        except ConnectRestError as exc:
            if not ex.started:
                await self._json(ex, exc.status, exc.body())
        except HttpError as exc:  # the body's size limit: its status, in Connect's error shape
            if not ex.started:
                await self._json(ex, exc.status, {"error_code": exc.status, "message": exc.body.get("message")})
        except Disconnected:
            raise
        except Exception as exc:  # noqa: BLE001 - Connect answers anything else with 500 and its message
            log.exception("%s %s failed", ex.method, ex.path)
            if not ex.started:
                await self._json(ex, 500, {"error_code": 500, "message": str(exc) or type(exc).__name__})

    def _route(self, segments: Sequence[str], root: bool) -> tuple[dict[str, Handler], Params] | None:
        for pattern, methods, needs_root in _ROUTES:
            if needs_root and not root or len(pattern) != len(segments):
                continue
            params: Params = {}
            for want, got in zip(pattern, segments):
                if want.startswith("{"):
                    params[want[1:-1]] = got
                elif want != got:
                    break
            else:
                return methods, params
        return None

    # ------------------------------------------------------------------------- helpers
    @staticmethod
    async def _json(ex: Exchange, status: int, body: Any, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        await ex.respond(status, orjson.dumps(body), JSON, headers)

    @staticmethod
    async def _empty(ex: Exchange, status: int) -> None:
        await ex.respond(status, b"", JSON)

    def _known(self, name: str, message: str) -> None:
        """404 with ``message`` (Connect's words for this endpoint) unless ``name`` exists."""
        if not self.worker.has(name):
            raise ConnectRestError(404, message)

    def _owner_url(self, name: str, query: Query, task: int | None = None) -> str | None:
        """The URL of the node that runs connector ``name`` (its task ``task``), when that is
        another node and the request may be forwarded (not already forwarded: Connect's
        ``forward=false``)."""
        worker = self.worker
        if self.router is None or not getattr(worker, "distributed", False):
            return None
        if (query.get("forward") or [""])[0].strip().lower() == "false":
            return None
        status = worker.status(name)
        owner = status.worker_id if task is None else \
            next((t.worker_id for t in status.tasks if t.id == task), status.worker_id)
        if not owner or owner == worker.worker_id:
            return None
        for node, url in self.router.directory.urls.items():
            # Node names are the Log's; worker ids the same without a scheme.
            if node == owner or node.split("://", 1)[-1].rstrip("/") == owner:
                return str(url)
        raise ConnectRestError(409, f"{_REBALANCING}: the node {owner} that runs {name} is not known here")

    async def _forward(self, ex: Exchange, base: str, query: Query, raw: bytes) -> None:
        """Ask the node at ``base`` the same request (with ``forward=false``); its answer is
        the answer."""
        params = [(k, v) for k, values in query.items() if k != "forward" for v in values] + [("forward", "false")]
        headers = {k: ex.headers[k.encode()].decode("latin-1") for k in ("authorization", "content-type")
                   if k.encode() in ex.headers}
        raw_path = ex.scope.get("raw_path") or quote(ex.path).encode()
        path = raw_path.decode("latin-1").split("?", 1)[0]
        try:
            async with httpx.AsyncClient(verify=self.ca_file or True, timeout=60.0) as client:
                answer = await client.request(ex.method, base.rstrip("/") + path, params=params, headers=headers,
                                              content=raw or None)
        except httpx.HTTPError as exc:
            # Connect's RestClient words for a forward that failed.
            raise ConnectRestError(500, f"IO Error trying to forward REST request: {exc}") from None
        await ex.respond(answer.status_code, answer.content,
                         answer.headers.get("content-type", "application/json").encode())

    def _task(self, params: Params) -> int:
        try:
            return int(params["task"])
        except ValueError:
            raise _http_error(404, "Not Found") from None  # Jersey: an Integer path parameter

    # ------------------------------------------------------------------------ handlers
    async def server_info(self, ex: Exchange, params: Params, query: Query, raw: bytes) -> None:
        await self._json(ex, 200, {"version": CONNECT_VERSION, "commit": f"streamsql-{__version__}",
                                   "kafka_cluster_id": self.cluster_id})

    async def health(self, ex: Exchange, params: Params, query: Query, raw: bytes) -> None:
        try:  # the worker's state is on the Log: healthy while the Log answers
            await asyncio.wait_for(self.engine.log.list_topics(), 10)
        except Exception as exc:  # noqa: BLE001 - any failure to reach the Log is "unhealthy"
            log.warning("Connect health check: the log is unreachable: %s", exc)
            await self._json(ex, 500, {"status": "unhealthy", "message": "Worker was unable to handle this request "
                                                                         "and may be unable to handle other requests."})
            return
        await self._json(ex, 200, {"status": "healthy",
                                   "message": "Worker has completed startup and is ready to handle requests."})

    async def list_connectors(self, ex: Exchange, params: Params, query: Query, raw: bytes) -> None:
        worker = self.worker
        if "expand" not in query:
            await self._json(ex, 200, worker.connectors())
            return
        out: dict[str, dict[str, Any]] = {}
        for name in worker.connectors():
            try:
                expansions: dict[str, Any] = {}
                for expansion in query["expand"]:
                    if expansion == "status":
                        expansions["status"] = worker.status(name).to_json()
                    elif expansion == "info":
                        expansions["info"] = worker.info(name).to_json()
                out[name] = expansions
            except ConnectRestError:  # deleted meanwhile: left out, as Connect does
                continue
        await self._json(ex, 200, out)

    async def create_connector(self, ex: Exchange, params: Params, query: Query, raw: bytes) -> None:
        body = _json(raw)
        if not isinstance(body, dict):
            raise ConnectRestError(400, "The request must be a JSON object with \"name\" and \"config\"")
        name = body.get("name")
        name = name.strip() if isinstance(name, str) else ""
        config = body.get("config")
        if not isinstance(config, dict):
            raise ConnectRestError(400, "Connector config is missing or not a JSON object")
        config = _strings(config, "config")
        _check_name(name, config)
        initial = str(body.get("initial_state") or "RUNNING").strip().upper()
        if initial not in ("RUNNING", "PAUSED", "STOPPED"):
            raise ConnectRestError(400, f"Invalid initial state {body.get('initial_state')}: must be one of "
                                        "RUNNING, PAUSED, STOPPED")
        if initial == "RUNNING":
            info = await self.worker.create(name, config)
        else:  # Connect 3.5's initial_state, the target state of the configs topic
            target = TARGET_PAUSED if initial == "PAUSED" else TARGET_STOPPED
            info = await self.worker.create_in_state(name, config, target)
        location = b"/connectors/" + quote(name, safe="").encode()
        await self._json(ex, 201, info.to_json(), ((b"location", location),))

    async def get_connector(self, ex: Exchange, params: Params, query: Query, raw: bytes) -> None:
        name = params["connector"]
        self._known(name, f"Connector {name} not found")
        await self._json(ex, 200, self.worker.info(name).to_json())

    async def get_config(self, ex: Exchange, params: Params, query: Query, raw: bytes) -> None:
        name = params["connector"]
        self._known(name, f"Connector {name} not found")
        await self._json(ex, 200, self.worker.config(name))

    async def put_config(self, ex: Exchange, params: Params, query: Query, raw: bytes) -> None:
        name = params["connector"]
        config = _config_body(raw)
        _check_name(name, config)
        created, info = await self.worker.put_config(name, config)
        if created:
            location = b"/connectors/" + quote(name, safe="").encode()
            await self._json(ex, 201, info.to_json(), ((b"location", location),))
        else:
            await self._json(ex, 200, info.to_json())

    async def patch_config(self, ex: Exchange, params: Params, query: Query, raw: bytes) -> None:
        name = params["connector"]
        patch = _json(raw)
        if not isinstance(patch, dict):
            raise ConnectRestError(400, "The connector config patch must be a JSON object")
        self._known(name, f"Connector {name} not found")
        # ConnectUtils.patchConfig: a null removes the key, anything else sets it.
        config = self.worker.config(name)
        for key, value in _strings({k: v for k, v in patch.items() if v is not None}, "config patch").items():
            config[key] = value
        for key in [k for k, v in patch.items() if v is None]:
            config.pop(key, None)
        _, info = await self.worker.put_config(name, config)
        await self._json(ex, 200, info.to_json())

    async def delete_connector(self, ex: Exchange, params: Params, query: Query, raw: bytes) -> None:
        name = params["connector"]
        self._known(name, f"Connector {name} not found")
        await self.worker.delete(name)
        await self._empty(ex, 204)

    async def get_status(self, ex: Exchange, params: Params, query: Query, raw: bytes) -> None:
        name = params["connector"]
        self._known(name, f"No status found for connector {name}")
        await self._json(ex, 200, self.worker.status(name).to_json())

    async def restart(self, ex: Exchange, params: Params, query: Query, raw: bytes) -> None:
        name = params["connector"]
        self._known(name, f"Unknown connector: {name}")
        owner = self._owner_url(name, query)
        if owner is not None:
            await self._forward(ex, owner, query, raw)
            return
        include_tasks, only_failed = _flag(query, "includeTasks"), _flag(query, "onlyFailed")
        status = await self.worker.restart(name, include_tasks=include_tasks, only_failed=only_failed)
        if not include_tasks and not only_failed:
            await self._empty(ex, 204)  # Connect's older API: the connector alone, no body
        else:
            await self._json(ex, 202, status.to_json())

    async def pause(self, ex: Exchange, params: Params, query: Query, raw: bytes) -> None:
        name = params["connector"]
        self._known(name, f"Unknown connector {name}")
        await self.worker.pause(name)
        await self._empty(ex, 202)

    async def resume(self, ex: Exchange, params: Params, query: Query, raw: bytes) -> None:
        name = params["connector"]
        self._known(name, f"Unknown connector {name}")
        await self.worker.resume(name)
        await self._empty(ex, 202)

    async def stop(self, ex: Exchange, params: Params, query: Query, raw: bytes) -> None:
        name = params["connector"]
        self._known(name, f"Unknown connector {name}")
        await self.worker.stop_connector(name)
        await self._empty(ex, 204)  # a void resource method in Connect: 204

    async def tasks(self, ex: Exchange, params: Params, query: Query, raw: bytes) -> None:
        name = params["connector"]
        self._known(name, f"Connector {name} not found")
        # (The committed task configs: every worker reads them from the configs topic.)
        await self._json(ex, 200, [{"id": {"connector": name, "task": i}, "config": config}
                                   for i, config in enumerate(self.worker.task_configs(name))])

    async def task_status(self, ex: Exchange, params: Params, query: Query, raw: bytes) -> None:
        name, task = params["connector"], self._task(params)
        message = f"No status found for task {name}-{task}"
        self._known(name, message)
        try:
            state = self.worker.task_status(name, task)
        except ConnectRestError:
            raise ConnectRestError(404, message) from None
        await self._json(ex, 200, state.to_json())

    async def restart_task(self, ex: Exchange, params: Params, query: Query, raw: bytes) -> None:
        name, task = params["connector"], self._task(params)
        self._known(name, f"Unknown connector: {name}")
        distributed = getattr(self.worker, "distributed", False)
        # A task is known by its config (as Connect's configs snapshot has it); on a cluster
        # its status may not have reached this node yet.
        known = range(len(self.worker.task_configs(name))) if distributed else \
            {t.id for t in self.worker.status(name).tasks}
        if task not in known:
            raise ConnectRestError(404, f"Unknown task: {name}-{task}")
        owner = self._owner_url(name, query, task)
        if owner is not None:
            await self._forward(ex, owner, query, raw)
            return
        try:
            await self.worker.restart_task(name, task)
        except ConnectRestError as exc:
            if exc.status == 404 and distributed:
                # The statuses say the task runs here (or say nothing yet), but it does not:
                # they are behind a rebalance that moved it. Connect answers so too (a request
                # that does not find its target within two hops); the client asks again.
                raise ConnectRestError(409, _REBALANCING) from None
            raise ConnectRestError(exc.status, f"Unknown task: {name}-{task}") if exc.status == 404 else exc
        await self._empty(ex, 204)

    async def offsets(self, ex: Exchange, params: Params, query: Query, raw: bytes) -> None:
        """Connect 3.5's ``ConnectorOffsets``: a source's offsets as its tasks stored them; a
        sink's, its consumer group's commits (``kafka_topic``/``kafka_partition`` ->
        ``kafka_offset``)."""
        name = params["connector"]
        self._known(name, f"Connector {name} not found")
        worker = self.worker
        out: list[dict[str, Any]] = []
        if worker.connector_type(name) == "sink":
            config = worker.config(name)
            topics = [t.strip() for t in config.get("topics", "").split(",") if t.strip()]
            regex = config.get("topics.regex", "").strip()
            if regex:
                pattern = re.compile(regex)
                topics = sorted(t for t in await worker.log.list_topics() if pattern.fullmatch(t))
            for topic in topics:
                committed = await worker.log.committed(f"connect-{name}", topic)
                out += [{"partition": {"kafka_topic": topic, "kafka_partition": p}, "offset": {"kafka_offset": o}}
                        for p, o in sorted(committed.items())]
        else:
            for key, offset in worker.storage.offsets.items():
                connector, partition = orjson.loads(key)  # (the offsets topic's key: [name, partition])
                if connector == name:
                    out.append({"partition": partition, "offset": offset})
        await self._json(ex, 200, {"offsets": out})

    async def topics(self, ex: Exchange, params: Params, query: Query, raw: bytes) -> None:
        name = params["connector"]
        # Connect answers an unknown connector with no topics, not 404.
        topics = self.worker.topics(name) if self.worker.has(name) else []
        await self._json(ex, 200, {name: {"topics": list(topics)}})

    async def reset_topics(self, ex: Exchange, params: Params, query: Query, raw: bytes) -> None:
        name = params["connector"]
        if self.worker.has(name):
            await self.worker.reset_topics(name)
        await self._empty(ex, 202)  # Connect: Response.accepted()

    async def plugins(self, ex: Exchange, params: Params, query: Query, raw: bytes) -> None:
        values = query.get("connectorsOnly")
        connectors_only = not values or values[0].strip().lower() == "true"  # default true
        plugins = self.worker.plugins()
        # Connect lists sinks, then sources, then (connectorsOnly=false) the other plugins.
        out = [{"class": p.class_name, "type": p.type, "version": p.version}
               for kind in ("sink", "source") for p in plugins if p.type == kind]
        if not connectors_only:
            out += [{"class": c, "type": "converter", "version": CONNECT_VERSION} for c in sorted(CONVERTERS)]
        await self._json(ex, 200, out)

    def _plugin(self, name: str) -> Any:
        try:
            return self.worker.registry.find(name)
        except ConnectException:
            raise ConnectRestError(404, f"Unknown plugin {name}.") from None

    async def plugin_config(self, ex: Exchange, params: Params, query: Query, raw: bytes) -> None:
        plugin = self._plugin(params["plugin"])
        await self._json(ex, 200, _plugin_definitions(plugin))

    async def validate(self, ex: Exchange, params: Params, query: Query, raw: bytes) -> None:
        name = params["plugin"]
        config = _config_body(raw)
        included = config.get("connector.class")
        if included is not None and not _normalized(included).endswith(_normalized(name)):
            raise ConnectRestError(400, f"Included connector type {included} does not match request type {name}")
        self.worker.validate_keys(config)  # Connect's 400 (no connector.class) or 500 (unknown class)
        plugin = self.worker.registry.find(config["connector.class"])
        await self._json(ex, 200, config_infos(self.worker, plugin, config))


def _normalized(name: str) -> str:
    # ConnectorPluginsResource.normalizedPluginName: the alias without "Connector".
    return name[:-len("Connector")] if name.endswith("Connector") and len(name) > len("Connector") else name


_C = "{connector}"
# (path segments, handlers by method, only on a Connect listener)
_ROUTES: tuple[tuple[tuple[str, ...], dict[str, Handler], bool], ...] = (
    ((), {"GET": ConnectApi.server_info}, True),
    (("health",), {"GET": ConnectApi.health}, True),
    (("connectors",), {"GET": ConnectApi.list_connectors, "POST": ConnectApi.create_connector}, False),
    (("connectors", _C), {"GET": ConnectApi.get_connector, "DELETE": ConnectApi.delete_connector}, False),
    (("connectors", _C, "config"), {"GET": ConnectApi.get_config, "PUT": ConnectApi.put_config,
                                    "PATCH": ConnectApi.patch_config}, False),
    (("connectors", _C, "status"), {"GET": ConnectApi.get_status}, False),
    (("connectors", _C, "restart"), {"POST": ConnectApi.restart}, False),
    (("connectors", _C, "pause"), {"PUT": ConnectApi.pause}, False),
    (("connectors", _C, "resume"), {"PUT": ConnectApi.resume}, False),
    (("connectors", _C, "stop"), {"PUT": ConnectApi.stop}, False),
    (("connectors", _C, "tasks"), {"GET": ConnectApi.tasks}, False),
    (("connectors", _C, "tasks", "{task}", "status"), {"GET": ConnectApi.task_status}, False),
    (("connectors", _C, "tasks", "{task}", "restart"), {"POST": ConnectApi.restart_task}, False),
    (("connectors", _C, "offsets"), {"GET": ConnectApi.offsets}, False),
    (("connectors", _C, "topics"), {"GET": ConnectApi.topics}, False),
    (("connectors", _C, "topics", "reset"), {"PUT": ConnectApi.reset_topics}, False),
    (("connector-plugins",), {"GET": ConnectApi.plugins}, False),
    (("connector-plugins", "{plugin}", "config"), {"GET": ConnectApi.plugin_config}, False),
    (("connector-plugins", "{plugin}", "config", "validate"), {"PUT": ConnectApi.validate}, False),
)


class ConnectApp:
    """The ASGI app of a Connect listener (``--connect-listeners``): the whole API, ``GET /``
    included, behind the server's basic authentication (answered as Connect's
    ``BasicAuthSecurityRestExtension`` does)."""

    def __init__(self, api: ConnectApi, auth: BasicAuth | None = None) -> None:
        self.api = api
        self.auth = auth

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        ex = Exchange(scope, receive, send)
        try:
            if self.auth is not None and self.auth.check(ex.headers.get(b"authorization")) is None:
                try:  # read first: an answer sent before the body is read may not reach the client
                    await ex.body(self.api.max_request_bytes)
                except HttpError:
                    pass
                await ex.respond(401, b"User cannot access the resource.", b"text/plain",
                                 ((b"www-authenticate", b'Basic realm="connect"'),))
                return
            await self.api.handle(ex, root=True)
        except Disconnected:
            pass


_WILDCARDS = ("0.0.0.0", "::")


class ByListener:
    """An ASGI app that hands a request to ``connect`` when it came in on one of the Connect
    listeners' addresses (bound ``(host, port)``s), to ``main`` otherwise."""

    def __init__(self, main: Any, connect: Any, addresses: set[tuple[str, int]]) -> None:
        self.main = main
        self.connect = connect
        self.addresses = addresses

    def _is_connect(self, server: Any) -> bool:
        # The scope's server is the connection's local address: a listener bound to a
        # wildcard host is told by its port alone.
        if not server or len(server) < 2:
            return False
        host, port = server[0], server[1]
        return (host, port) in self.addresses or any((w, port) in self.addresses for w in _WILDCARDS)

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self._is_connect(scope.get("server")):
            await self.connect(scope, receive, send)
        else:
            await self.main(scope, receive, send)

"""CREATE/DROP/DESCRIBE CONNECTOR, SHOW [SOURCE|SINK] CONNECTORS, SHOW CONNECTOR PLUGINS:
ksqlDB's connector statements, on the engine's Connect worker
(``streamsql.runtime.connect.worker``).

The entities are ksqlDB's (``connector_info``, ``connector_list``, ``connector_description``,
``drop_connector``, ``connector_plugins_list``, ``warning_entity``), and so are the errors:
what the worker refuses is "Failed to create connector: " followed by Connect's error body,
as ksqlDB passes on what its Connect cluster answered.

CREATE and DROP go to the command log, so a restarted node (or a new node of a cluster)
ends up with the same connectors. A CREATE's text has its secrets masked as ksqlDB's QueryMask masks
them (``streamsql.masking``: ``'connection.password'='[string]'``) wherever it shows, the
command log and REST responses included; the real config is written to the worker's configs
topic before the statement is logged, and a replayed CREATE with masked values creates
nothing (``Worker.note_replayed_masked``). The worker's configs topic is the record of what exists
(Connect's REST API changes it too, without SQL); from the command log the worker creates
only the connectors whose last statement is a CREATE and that the configs topic never heard
of (``Worker.note_replayed``). The other nodes of a cluster learn of a connector from the
configs topic, not from the command topic.

A real Kafka Connect cluster runs the rest, as ksqlDB's connectors all run: with
``ksql.connect.url`` set, CREATE sends a connector whose class streamsql does not build in to
that cluster's REST API (``streamsql.runtime.connect.remote``), and with
``streamsql.connect.builtin.enabled=false`` every connector, as ksqlDB does. SHOW CONNECTORS lists
the node's and the cluster's together, DESCRIBE and DROP find a connector in either (the node's
first). Those statements are not in the command log: the Connect cluster keeps its connectors
(ksqlDB does not log them either). A cluster that does not answer fails the statements that need
it with "Could not reach the Kafka Connect cluster at ..." (status 503) and is only a warning in
SHOW CONNECTORS and SHOW CONNECTOR PLUGINS; nothing else depends on it.
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, AsyncIterator

import orjson

from streamsql import ast
from streamsql.errors import ServiceRestError
from streamsql.masking import is_masked
from streamsql.results import Result
from streamsql.runtime.connect.api import ConnectException
from streamsql.runtime.connect.remote import ConnectClient, ConnectUnreachableError, RemoteConnectError
from streamsql.runtime.connect.worker import ConnectRestError

if TYPE_CHECKING:  # pragma: no cover - imports only for type hints
    from streamsql.engine import Engine, Session

def _failed(what: str, exc: ConnectRestError) -> ServiceRestError:
    # ksqlDB quotes its Connect cluster's error body after its own words, and answers with
    # Connect's status (a remote cluster's body as it sent it; no body when it did not answer).
    body = exc.body()
    quoted = body if isinstance(body, str) else orjson.dumps(body).decode()
    return ServiceRestError(exc.status, f"Failed to {what}: " + quoted)


# -------------------------------------------------------------- a real Kafka Connect cluster
def _connect_url(engine: Engine) -> str | None:
    url = str(engine.config.get("ksql.connect.url") or "").strip()
    return url or None


@contextlib.asynccontextmanager
async def _remote(engine: Engine) -> AsyncIterator[ConnectClient]:
    url = _connect_url(engine)
    assert url is not None
    timeout_ms = float(engine.config.get("ksql.connect.request.timeout.ms", 5000))
    client = ConnectClient(url, timeout=timeout_ms / 1000)
    try:
        yield client
    finally:
        await client.close()


def _goes_remote(engine: Engine, config: dict[str, Any]) -> bool:
    """Whether CREATE sends this connector to the Connect cluster: only with
    ``ksql.connect.url``, and then every connector with ``streamsql.connect.builtin.enabled``
    false (as ksqlDB), else those whose class is not built in."""
    if _connect_url(engine) is None:
        return False
    if str(engine.config.get("streamsql.connect.builtin.enabled", "true")).strip().lower() == "false":
        return True
    cls = str(config.get("connector.class") or "").strip()
    if not cls:
        return False  # the node's worker answers Connect's own 400 for it
    try:
        engine.connect_worker.registry.find(cls)
    except ConnectException:
        return True
    return False


def _warning_json(messages: list[str]) -> list[dict[str, str]]:
    return [{"message": m} for m in messages]


async def _create_remote(engine: Engine, stmt: ast.CreateConnector, config: dict[str, Any]) -> Result:
    async with _remote(engine) as client:
        try:
            info = await client.create(stmt.name, {str(k): str(v) for k, v in config.items()})
        except ConnectRestError as exc:
            if stmt.if_not_exists and exc.status == 409 and not isinstance(exc, ConnectUnreachableError):
                return _warning(stmt.text, f"Connector {stmt.name} already exists")
            raise _failed("create connector", exc) from None
    return Result(stmt.text, "connector_info", message=f"Created connector {info.get('name', stmt.name)}",
                  entity={"@type": "connector_info", "statementText": stmt.text, "info": info,
                          "warnings": []})


async def _drop_remote(engine: Engine, stmt: ast.DropConnector) -> Result:
    async with _remote(engine) as client:
        try:
            await client.delete(stmt.name)
        except RemoteConnectError as exc:
            if stmt.if_exists and exc.status == 404:
                return _warning(stmt.text, f"Connector '{stmt.name}' does not exist.")
            raise _failed("drop connector", exc) from None
        except ConnectRestError as exc:
            raise _failed("drop connector", exc) from None
    return Result(stmt.text, "drop_connector", message=f'Dropped connector "{stmt.name}"',
                  entity={"@type": "drop_connector", "statementText": stmt.text,
                          "connectorName": stmt.name, "warnings": []})


def _warning(text: str, message: str) -> Result:
    return Result(text, "warning_entity", message=message,
                  entity={"@type": "warning_entity", "statementText": text, "message": message})


async def create_connector(engine: Engine, stmt: ast.CreateConnector, props: dict[str, Any],
                           session: Session, seq: int | None) -> Result:
    worker = engine.connect_worker
    await worker.load()
    config = dict(stmt.config)
    if seq is not None:  # from the command log: see the module docstring
        if engine.replaying:
            if any(is_masked(v) for v in config.values()):
                # Its text was masked (see below): the configs topic alone has the config.
                worker.note_replayed_masked(stmt.name)
            else:
                worker.note_replayed(stmt.name, config)
        return Result(stmt.text, "connector_info", message=f"Created connector {stmt.name}")
    if worker.has(stmt.name):
        if stmt.if_not_exists:
            return _warning(stmt.text, f"Connector {stmt.name} already exists")
        raise _failed("create connector", ConnectRestError(409, f"Connector {stmt.name} already exists"))
    if _goes_remote(engine, config):
        return await _create_remote(engine, stmt, config)
    try:
        worker.check_config(stmt.name, config)
    except ConnectRestError as exc:
        raise _failed("create connector", exc) from None
    # The config (its secrets) goes to the configs topic first; the command log has the
    # statement's text, masked (``streamsql.masking``: the parser masked it).
    try:
        info = await worker.create(stmt.name, config)
    except ConnectRestError as exc:
        raise _failed("create connector", exc) from None
    await engine.record_command(stmt, props, seq)
    return Result(stmt.text, "connector_info", message=f"Created connector {info.name}",
                  entity={"@type": "connector_info", "statementText": stmt.text, "info": info.to_json(),
                          "warnings": []})


async def drop_connector(engine: Engine, stmt: ast.DropConnector, props: dict[str, Any],
                         session: Session, seq: int | None) -> Result:
    worker = engine.connect_worker
    await worker.load()
    if seq is not None:
        if engine.replaying:
            worker.note_replayed(stmt.name, None)
        return Result(stmt.text, "drop_connector", message=f'Dropped connector "{stmt.name}"')
    if not worker.has(stmt.name):
        if _connect_url(engine) is not None:
            return await _drop_remote(engine, stmt)
        if stmt.if_exists:
            return _warning(stmt.text, f"Connector '{stmt.name}' does not exist.")
        raise _failed("drop connector", ConnectRestError(404, f"Connector {stmt.name} not found"))
    await engine.record_command(stmt, props, seq)
    try:
        await worker.delete(stmt.name)
    except ConnectRestError as exc:
        raise _failed("drop connector", exc) from None
    return Result(stmt.text, "drop_connector", message=f'Dropped connector "{stmt.name}"',
                  entity={"@type": "drop_connector", "statementText": stmt.text,
                          "connectorName": stmt.name, "warnings": []})


def summarize_state(status: dict[str, Any]) -> str:
    """The Status column of SHOW CONNECTORS, as ksqlDB's ListConnectorsExecutor writes it:
    the connector's state, and how many of its tasks run when it runs."""
    state = status["connector"]["state"]
    if state != "RUNNING":
        return state
    tasks = status.get("tasks") or []
    running = sum(1 for t in tasks if t.get("state") == "RUNNING")
    return f"RUNNING ({running}/{len(tasks)} tasks RUNNING)" if tasks else "RUNNING"


async def list_connectors(engine: Engine, stmt: ast.ListConnectors, props: dict[str, Any],
                          session: Session, seq: int | None) -> Result:
    worker = engine.connect_worker
    await worker.load()
    infos = []
    for name in worker.connectors():
        status = worker.status(name)
        ctype = worker.connector_type(name)
        if stmt.kind is not None and ctype.upper() != stmt.kind:
            continue
        infos.append({"name": name, "type": ctype, "className": worker.config(name).get("connector.class", ""),
                      "state": summarize_state(status.to_json())})
    warnings: list[str] = []
    if _connect_url(engine) is not None:
        infos += await _remote_infos(engine, stmt, warnings)
    rows = [(i["name"], i["type"].upper(), i["className"], i["state"]) for i in infos]
    return Result(stmt.text, "connector_list", columns=("Connector Name", "Type", "Class", "Status"), rows=rows,
                  entity={"@type": "connector_list", "statementText": stmt.text,
                          "warnings": _warning_json(warnings), "connectors": infos},
                  warnings=warnings)


async def _remote_infos(engine: Engine, stmt: ast.ListConnectors, warnings: list[str]) -> list[dict[str, Any]]:
    """The Connect cluster's connectors, as SHOW CONNECTORS lists them; a cluster that does
    not answer is a warning (the node's own connectors are listed all the same)."""
    try:
        async with _remote(engine) as client:
            listed = await client.connectors()
    except ConnectRestError as exc:
        warnings.append(f"Could not list the connectors of the Kafka Connect cluster: {exc.message}")
        return []
    infos = []
    for name in sorted(listed):
        entry = listed[name] or {}
        info, status = entry.get("info") or {}, entry.get("status") or {}
        ctype = str(info.get("type") or status.get("type") or "unknown")
        if stmt.kind is not None and ctype.upper() != stmt.kind:
            continue
        state = summarize_state(status) if status.get("connector") else "UNASSIGNED"
        infos.append({"name": name, "type": ctype,
                      "className": (info.get("config") or {}).get("connector.class", ""), "state": state})
    return infos


async def list_connector_plugins(engine: Engine, stmt: ast.ListConnectorPlugins, props: dict[str, Any],
                                 session: Session, seq: int | None) -> Result:
    plugins = [{"className": p.class_name, "type": p.type, "version": p.version}
               for p in engine.connect_worker.plugins()]
    warnings: list[str] = []
    if _connect_url(engine) is not None:
        # The Connect cluster's classes too, those the node does not run itself.
        try:
            async with _remote(engine) as client:
                remote = await client.plugins()
        except ConnectRestError as exc:
            warnings.append(f"Could not list the plugins of the Kafka Connect cluster: {exc.message}")
            remote = []
        known = {p["className"] for p in plugins}
        plugins += [{"className": p["class"], "type": p.get("type", ""), "version": p.get("version", "")}
                    for p in remote if p.get("class") and p["class"] not in known]
    rows = [(p["className"], p["type"].upper(), p["version"]) for p in plugins]
    return Result(stmt.text, "connector_plugins_list", columns=("Class", "Type", "Version"), rows=rows,
                  entity={"@type": "connector_plugins_list", "statementText": stmt.text,
                          "warnings": _warning_json(warnings), "connectorPlugins": plugins},
                  warnings=warnings)


async def describe_connector(engine: Engine, stmt: ast.DescribeConnector, props: dict[str, Any],
                             session: Session, seq: int | None) -> Result:
    from streamsql.describe import source_description

    worker = engine.connect_worker
    await worker.load()
    warnings: list[str] = []
    if worker.has(stmt.name):
        status = worker.status(stmt.name).to_json()
        topics = worker.topics(stmt.name)
        connector_class = worker.config(stmt.name).get("connector.class", "")
    elif _connect_url(engine) is not None:
        # As ksqlDB's DescribeConnectorExecutor: the status, then the config, then the topics
        # (those only a warning when the cluster does not give them).
        async with _remote(engine) as client:
            try:
                status = await client.status(stmt.name)
            except ConnectRestError as exc:
                raise _failed("query connector status", exc) from None
            try:
                info = await client.info(stmt.name)
            except ConnectRestError as exc:
                raise _failed("describe connector", exc) from None
            try:
                topics = await client.topics(stmt.name)
            except ConnectRestError as exc:
                warnings.append(f"Could not list the connector's topics: {exc.message}")
                topics = []
        connector_class = (info.get("config") or {}).get("connector.class", "")
    else:
        raise _failed("query connector status",
                      ConnectRestError(404, f"No status found for connector {stmt.name}"))
    sources = [source_description(engine, s, False) for s in sorted(engine.catalog.sources.values(),
                                                                      key=lambda s: s.name)
               if s.topic in topics]
    entity = {"@type": "connector_description", "statementText": stmt.text,
              "connectorClass": connector_class,
              "status": status, "sources": sources, "topics": topics, "warnings": _warning_json(warnings)}
    return Result(stmt.text, "connector_description", entity=entity, warnings=warnings)


def description_text(entity: dict[str, Any]) -> str:
    """DESCRIBE CONNECTOR as ksqlDB's shell prints it."""
    from streamsql.shell import render_table

    status = entity.get("status") or {}
    connector = status.get("connector") or {}
    out = ["", f"{'Name':<20} : {status.get('name', '')}", f"{'Class':<20} : {entity.get('connectorClass', '')}",
           f"{'Type':<20} : {status.get('type', '')}", f"{'State':<20} : {connector.get('state', '')}",
           f"{'WorkerId':<20} : {connector.get('worker_id', '')}"]
    if connector.get("trace"):
        out.append(f"{'Trace':<20} : {connector['trace']}")
    tasks = status.get("tasks") or []
    if tasks and any(t.get("worker_id", "") != connector.get("worker_id", "") for t in tasks):
        # Tasks spread over a cluster's nodes: where each runs (ksqlDB's table has no column
        # for it, its tasks being where its Connect cluster put them).
        out += ["", render_table(["Task ID", "State", "Worker ID", "Error Trace"],
                                 [(str(t.get("id")), t.get("state", ""), t.get("worker_id", ""), t.get("trace") or "")
                                  for t in tasks])]
    elif tasks:
        out += ["", render_table(["Task ID", "State", "Error Trace"],
                                 [(str(t.get("id")), t.get("state", ""), t.get("trace") or "") for t in tasks])]
    sources = entity.get("sources") or []
    if sources:
        out += ["", render_table(["KSQL Source Name", "Kafka Topic", "Type"],
                                 [(s.get("name", ""), s.get("topic", ""), s.get("type", "")) for s in sources])]
    topics = entity.get("topics") or []
    if topics:
        out += ["", render_table(["Related Topics"], [(t,) for t in topics])]
    return "\n".join(out)

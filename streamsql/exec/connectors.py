"""CREATE/DROP/DESCRIBE CONNECTOR, SHOW [SOURCE|SINK] CONNECTORS, SHOW CONNECTOR PLUGINS:
ksqlDB's connector statements, on the engine's Connect worker
(``streamsql.runtime.connect.worker``).

The entities are ksqlDB's (``connector_info``, ``connector_list``, ``connector_description``,
``drop_connector``, ``connector_plugins_list``, ``warning_entity``), and so are the errors:
what the worker refuses is "Failed to create connector: " followed by Connect's error body,
as ksqlDB passes on what its Connect cluster answered.

CREATE and DROP go to the command log, so a restarted node (or a new node of a cluster)
ends up with the same connectors. The worker's configs topic is the record of what exists
(Connect's REST API changes it too, without SQL); from the command log the worker creates
only the connectors whose last statement is a CREATE and that the configs topic never heard
of (``Worker.note_replayed``). The other nodes of a cluster learn of a connector from the
configs topic, not from the command topic.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from streamsql import ast
from streamsql.errors import ServiceRestError
from streamsql.results import Result
from streamsql.runtime.connect.worker import ConnectRestError

if TYPE_CHECKING:  # pragma: no cover - imports only for type hints
    from streamsql.engine import Engine, Session

def _failed(what: str, exc: ConnectRestError) -> ServiceRestError:
    # ksqlDB quotes its Connect cluster's error body after its own words, and answers with
    # Connect's status.
    return ServiceRestError(exc.status, f"Failed to {what}: " + orjson.dumps(exc.body()).decode())


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
            worker.note_replayed(stmt.name, config)
        return Result(stmt.text, "connector_info", message=f"Created connector {stmt.name}")
    if worker.has(stmt.name):
        if stmt.if_not_exists:
            return _warning(stmt.text, f"Connector {stmt.name} already exists")
        raise _failed("create connector", ConnectRestError(409, f"Connector {stmt.name} already exists"))
    try:
        worker.check_config(stmt.name, config)
    except ConnectRestError as exc:
        raise _failed("create connector", exc) from None
    await engine.record_command(stmt, props, seq)
    try:
        info = await worker.create(stmt.name, config)
    except ConnectRestError as exc:
        raise _failed("create connector", exc) from None
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
    rows = [(i["name"], i["type"].upper(), i["className"], i["state"]) for i in infos]
    return Result(stmt.text, "connector_list", columns=("Connector Name", "Type", "Class", "Status"), rows=rows,
                  entity={"@type": "connector_list", "statementText": stmt.text, "warnings": [],
                          "connectors": infos})


async def list_connector_plugins(engine: Engine, stmt: ast.ListConnectorPlugins, props: dict[str, Any],
                                 session: Session, seq: int | None) -> Result:
    plugins = [{"className": p.class_name, "type": p.type, "version": p.version}
               for p in engine.connect_worker.plugins()]
    rows = [(p["className"], p["type"].upper(), p["version"]) for p in plugins]
    return Result(stmt.text, "connector_plugins_list", columns=("Class", "Type", "Version"), rows=rows,
                  entity={"@type": "connector_plugins_list", "statementText": stmt.text, "warnings": [],
                          "connectorPlugins": plugins})


async def describe_connector(engine: Engine, stmt: ast.DescribeConnector, props: dict[str, Any],
                             session: Session, seq: int | None) -> Result:
    from streamsql.describe import source_description

    worker = engine.connect_worker
    await worker.load()
    if not worker.has(stmt.name):
        raise _failed("query connector status",
                      ConnectRestError(404, f"No status found for connector {stmt.name}"))
    status = worker.status(stmt.name).to_json()
    topics = worker.topics(stmt.name)
    sources = [source_description(engine, s, False) for s in sorted(engine.catalog.sources.values(),
                                                                      key=lambda s: s.name)
               if s.topic in topics]
    entity = {"@type": "connector_description", "statementText": stmt.text,
              "connectorClass": worker.config(stmt.name).get("connector.class", ""),
              "status": status, "sources": sources, "topics": topics, "warnings": []}
    return Result(stmt.text, "connector_description", entity=entity)


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
    if tasks:
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

"""Statement execution, split by statement family as ksqlDB splits its engine (its DDL
commands, ``DdlCommandExec``, apart from the ``CustomExecutors`` of the other statements):

- ``ddl``: CREATE STREAM/TABLE over a topic, DROP STREAM/TABLE, ALTER STREAM/TABLE,
  CREATE/DROP TYPE, ALTER SYSTEM;
- ``persistent``: CREATE ... AS SELECT, INSERT INTO ... SELECT, TERMINATE, PAUSE/RESUME, and
  building, running and stopping persistent queries;
- ``inserts``: INSERT INTO ... VALUES;
- ``push``: transient SELECTs, pull or push (EMIT CHANGES); ``pull`` answers pull queries;
- ``listings``: SHOW/LIST, DESCRIBE, EXPLAIN, PRINT (over ``streamsql.describe``);
- ``session``: SET/UNSET, DEFINE/UNDEFINE, RUN SCRIPT;
- ``asserts``: ASSERT [NOT EXISTS] TOPIC/SCHEMA;
- ``connectors``: CREATE/DROP/DESCRIBE CONNECTOR, SHOW CONNECTORS, SHOW CONNECTOR PLUGINS.

``HANDLERS`` maps each statement type to its handler, ``async def handler(engine, stmt,
props, session, seq) -> Result``: ``props`` are the engine's config under the session's and
the request's properties, ``seq`` the statement's command-log sequence when it is replayed
from the log (None when a client sent it). Adding a statement is one handler and one line
here; a statement type with no line is refused as unsupported.
``streamsql.engine.Engine`` dispatches through the table and owns the state the
handlers change (catalog, running queries, command log); the handlers reach it through the
engine passed to them, and the modules import the engine only for type hints, so nothing
here imports it back.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Awaitable, Callable

from streamsql import ast
from streamsql.exec import asserts, connectors, ddl, inserts, listings, persistent, push, session

if TYPE_CHECKING:  # pragma: no cover - imports only for type hints
    from streamsql.engine import Engine, Session
    from streamsql.results import Result

# (engine, statement, props, session, seq) -> Result; the statement's type is the key's.
Handler = Callable[["Engine", Any, dict[str, Any], "Session", "int | None"], Awaitable["Result"]]

HANDLERS: dict[type[ast.Statement], Handler] = {
    # DDL: recorded in the command log, change the catalog.
    ast.CreateSource: ddl.create_source,
    ast.DropSource: ddl.drop_source,
    ast.AlterSource: ddl.alter_source,
    ast.AlterSystem: ddl.alter_system,
    ast.CreateType: ddl.create_type,
    ast.DropType: ddl.drop_type,
    # Persistent queries: recorded in the command log, start or stop queries.
    ast.CreateAsSelect: persistent.create_as_select,
    ast.InsertInto: persistent.insert_into,
    ast.TerminateQuery: persistent.terminate_query,
    ast.PauseResumeQuery: persistent.pause_resume_query,
    # Writes one record.
    ast.InsertValues: inserts.insert_values,
    # Transient queries.
    ast.QueryStatement: push.query_statement,
    # Read what the engine knows.
    ast.ShowStatement: listings.show,
    ast.DescribeSource: listings.describe_source,
    ast.DescribeSources: listings.describe_sources,
    ast.DescribeFunction: listings.describe_function,
    ast.Explain: listings.explain,
    ast.PrintTopic: listings.print_topic,
    # Check the outside world, change nothing.
    ast.AssertTopic: asserts.assert_topic,
    ast.AssertSchema: asserts.assert_schema,
    # Connectors: CREATE/DROP recorded in the command log, run by the engine's Connect worker.
    ast.CreateConnector: connectors.create_connector,
    ast.DropConnector: connectors.drop_connector,
    ast.ListConnectors: connectors.list_connectors,
    ast.ListConnectorPlugins: connectors.list_connector_plugins,
    ast.DescribeConnector: connectors.describe_connector,
    # Per-client state.
    ast.SetProperty: session.set_property,
    ast.UnsetProperty: session.unset_property,
    ast.DefineVariable: session.define_variable,
    ast.UndefineVariable: session.undefine_variable,
    ast.RunScript: session.run_script,
}

__all__ = ["HANDLERS", "Handler"]

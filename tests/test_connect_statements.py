"""ksqlDB's connector statements: the grammar (keys keep their case, names follow ksqlDB's
identifier rules, values become Connect's text), IF [NOT] EXISTS, the entities over /ksql,
and the command log: a connector created with SQL comes back after a restart, where an
IF NOT EXISTS re-run does not duplicate it."""
from __future__ import annotations

import asyncio

import pytest

from streamsql import ast
from streamsql.errors import ParseError
from streamsql.parser import parse
from streamsql.server.testing import NodeProcess
from tests.test_connect_file import NODE_ARGS, append, eventually, ksql, ok

pytestmark = pytest.mark.timeout(120)


def one(sql: str) -> ast.Statement:
    (stmt,) = parse(sql)
    return stmt


def test_connector_statements_parse_as_ksqldb_reads_them():
    stmt = one("CREATE SOURCE CONNECTOR jdbc_source WITH ('connector.class'='FileStreamSource', "
               "'tasks.max'=2, 'schemas.enable'=false, topic='x', \"Case\"='y')")
    assert stmt == ast.CreateConnector("JDBC_SOURCE", "SOURCE", (
        ("connector.class", "FileStreamSource"), ("tasks.max", "2"), ("schemas.enable", "false"),
        ("TOPIC", "x"), ("Case", "y")))
    assert one('CREATE SINK CONNECTOR IF NOT EXISTS "quoted" WITH (\'a\'=\'b\')') == \
        ast.CreateConnector("quoted", "SINK", (("a", "b"),), if_not_exists=True)
    assert one("DROP CONNECTOR IF EXISTS c") == ast.DropConnector("C", if_exists=True)
    assert one("drop connector `c`") == ast.DropConnector("c")
    assert one("SHOW CONNECTORS") == ast.ListConnectors(None)
    assert one("LIST SOURCE CONNECTORS") == ast.ListConnectors("SOURCE")
    assert one("show sink connectors") == ast.ListConnectors("SINK")
    assert one("SHOW CONNECTOR PLUGINS") == ast.ListConnectorPlugins()
    assert one("DESCRIBE CONNECTOR c") == ast.DescribeConnector("C")
    for bad in ("CREATE SOURCE CONNECTOR c", "CREATE CONNECTOR c WITH ('a'='b')",
                "SHOW SOURCE CONNECTOR", "DESCRIBE CONNECTOR"):
        with pytest.raises(ParseError):
            parse(bad)


def test_if_not_exists_warns_and_the_command_log_brings_connectors_back(tmp_path):
    source = tmp_path / "in.txt"
    append(source, "x")
    create = (f"CREATE SOURCE CONNECTOR IF NOT EXISTS s WITH ('connector.class'='FileStreamSource', "
              f"'file'='{source}', 'topic'='s');")
    with NodeProcess(tmp_path / "data", NODE_ARGS) as node:
        assert ok(node.url, create)[0]["@type"] == "connector_info"
        again = ok(node.url, create)[0]
        assert again["@type"] == "warning_entity" and again["message"] == "Connector S already exists"
        status, body = ksql(node.url, create.replace(" IF NOT EXISTS", ""))
        assert (status, body["error_code"]) == (409, 40900)
        assert body["message"] == 'Failed to create connector: {"error_code":409,"message":"Connector S already exists"}'
        # Statements before a failing one stay applied, as for every statement.
        ok(node.url, "CREATE STREAM s_lines (payload STRING) WITH (kafka_topic='s', value_format='JSON', partitions=1);")
    with NodeProcess(tmp_path / "data", NODE_ARGS) as node:
        listed = ok(node.url, "SHOW SOURCE CONNECTORS;")[0]["connectors"]
        assert [(c["name"], c["className"]) for c in listed] == [("S", "FileStreamSource")]
        assert ok(node.url, "SHOW SINK CONNECTORS;")[0]["connectors"] == []
        eventually(lambda: ok(node.url, "DESCRIBE CONNECTOR s;")[0]["status"]["tasks"][0]["state"] == "RUNNING")
        ok(node.url, "DROP CONNECTOR s;")
        assert ok(node.url, "SHOW CONNECTORS;")[0]["connectors"] == []


def test_the_command_log_recreates_connectors_the_configs_topic_lost(tmp_path):
    from streamsql.engine import Engine
    from streamsql.runtime.log.embedded import EmbeddedLog

    source = tmp_path / "in.txt"
    append(source, "x")
    create = "CREATE SOURCE CONNECTOR {} WITH ('connector.class'='FileStreamSource', 'file'='%s', 'topic'='t');" % source

    async def main() -> None:
        log = EmbeddedLog(tmp_path / "data")
        engine = Engine(log)
        await engine.start()
        await engine.execute(create.format("keep") + create.format("gone") + "DROP CONNECTOR gone;")
        configs = engine.connect_worker.storage.configs_topic
        await engine.close()
        await log.delete_topic(configs)
        await log.close()

        log = EmbeddedLog(tmp_path / "data")
        engine = Engine(log)
        await engine.start()
        try:
            assert engine.connect_worker.connectors() == ["KEEP"]
            for _ in range(100):
                if [t.state for t in engine.connect_worker.status("KEEP").tasks] == ["RUNNING"]:
                    break
                await asyncio.sleep(0.05)
            assert [t.state for t in engine.connect_worker.status("KEEP").tasks] == ["RUNNING"]
        finally:
            await engine.close()
            await log.close()
    asyncio.run(main())

"""The REST API over real sockets: a node served by hypercorn in the test's event loop, reached
with httpx (HTTP/1.1 and HTTP/2 with prior knowledge) and raw sockets where the test needs
to control the client exactly (disconnects, a client that stops reading).

Covers ksqlDB's entities and error bodies for /ksql, /query, /query-stream (delimited and
JSON), /close-query, /inserts-stream, /info, /healthcheck, /clusterStatus, /status, the
mounted schema registry, and bad input: malformed JSON, unknown endpoints, oversized bodies,
a statement failing half way through a request, a client that disconnects mid-stream and a
client too slow to read.
"""
from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit

import httpx
import orjson
import pytest

from streamsql.runtime.log.base import ProducerRecord
from streamsql.server.main import NodeOptions, serve

pytestmark = pytest.mark.timeout(60)

CREATE = ("CREATE STREAM s (id STRING KEY, v BIGINT, ts TIMESTAMP, d DECIMAL(5, 2)) "
          "WITH (kafka_topic='s', value_format='JSON', partitions=1);")


def with_node(tmp_path: Path, test: Callable[[str, Any], Awaitable[None]], **options: Any) -> None:
    """Run ``test(url, app)`` against a node listening on a free loopback port. Its queries
    read topics from the start unless ``config`` says otherwise (as ksqlDB's REST test
    server's: the tests insert rows before they query them)."""
    options.setdefault("config", {"auto.offset.reset": "earliest"})

    async def main() -> None:
        stop = asyncio.Event()
        ready: asyncio.Future = asyncio.get_running_loop().create_future()
        node = asyncio.ensure_future(serve(
            NodeOptions(listeners=("http://127.0.0.1:0",), data_dir=tmp_path / "data", **options),
            on_ready=lambda urls, app: ready.set_result((urls[0], app)), stop=stop))
        done, _ = await asyncio.wait({node, ready}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        if node in done:
            node.result()  # raises what stopped it
        url, app = ready.result()
        try:
            await test(url, app)
        finally:
            stop.set()
            await asyncio.wait_for(node, 30)

    asyncio.run(main())


async def ksql(client: httpx.AsyncClient, text: str, **extra: Any) -> httpx.Response:
    return await client.post("/ksql", json={"ksql": text, **extra})


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def pull_rows(client: httpx.AsyncClient, sql: str, count: int) -> list[list[Any]]:
    deadline = time.monotonic() + 10
    while True:
        r = await client.post("/query-stream", json={"sql": sql})
        lines = [orjson.loads(x) for x in r.text.splitlines()]
        if len(lines) - 1 >= count or time.monotonic() > deadline:
            return lines[1:]
        await asyncio.sleep(0.05)


# ================================================================================= /ksql
def test_ksql_entities(tmp_path):
    async def test(url: str, app: Any) -> None:
        async with httpx.AsyncClient(base_url=url) as c:
            r = await ksql(c, CREATE + "CREATE TABLE t AS SELECT id, COUNT(*) AS n FROM s GROUP BY id;"
                              "INSERT INTO s (id, v) VALUES ('a', 1);")
            assert r.status_code == 200
            created, ctas = r.json()  # INSERT VALUES answers with nothing, as in ksqlDB
            assert created == {"@type": "currentStatus", "statementText": CREATE, "commandId": "stream/`S`/create",
                               "commandStatus": {"status": "SUCCESS", "message": "Stream created", "queryId": None},
                               "commandSequenceNumber": 1, "warnings": []}
            assert ctas["commandId"] == "table/`T`/create" and ctas["commandSequenceNumber"] == 2
            assert ctas["commandStatus"]["queryId"] == "CTAS_T_2"

            r = await ksql(c, "SHOW STREAMS; LIST TABLES; SHOW QUERIES; SHOW TOPICS; SHOW PROPERTIES; "
                              "SHOW FUNCTIONS; DESCRIBE s; DESCRIBE FUNCTION ucase; EXPLAIN CTAS_T_2;",
                           streamsProperties={"auto.offset.reset": "latest"})
            kinds = [e["@type"] for e in r.json()]
            assert kinds == ["streams", "tables", "queries", "kafka_topics", "properties", "function_names",
                             "sourceDescription", "describe_function", "queryDescription"]
            streams, tables, queries, topics, props, functions, desc, function, explain = r.json()
            assert {"type": "STREAM", "name": "S", "topic": "s", "keyFormat": "KAFKA", "valueFormat": "JSON",
                    "isWindowed": False} in streams["streams"]
            assert tables["statementText"] == "LIST TABLES;"
            assert [q["id"] for q in queries["queries"]] == ["CTAS_T_2"]
            assert {"name": "s", "replicaInfo": [1]} in topics["topics"]
            reset = next(p for p in props["properties"] if p["name"] == "auto.offset.reset")
            assert reset["value"] == "latest" and props["overwrittenProperties"] == ["auto.offset.reset"]
            assert {"name": "UCASE", "type": "SCALAR", "category": "STRING"} in functions["functions"]
            assert desc["sourceDescription"]["fields"][0] == {
                "name": "ID", "schema": {"type": "STRING", "fields": None, "memberSchema": None}, "type": "KEY"}
            assert "fieldRows" not in desc["sourceDescription"]  # the shell's extra, not ksqlDB's
            assert function["name"] == "UCASE"
            assert explain["queryDescription"]["id"] == "CTAS_T_2"

            assert (await c.get("/status/stream/`S`/create")).json() == {"status": "SUCCESS",
                                                                        "message": "Stream created"}
            missing = await c.get("/status/stream/`NOPE`/create")
            assert missing.status_code == 404 and missing.json()["error_code"] == 40400

    with_node(tmp_path, test)


def test_log_start_offsets_in_describe_extended_and_print(tmp_path):
    """After the oldest segments of a partition are deleted, /ksql's DESCRIBE EXTENDED entity
    has each partition's log start offset and /query's PRINT FROM BEGINNING says where it
    starts, then prints from there."""
    async def test(url: str, app: Any) -> None:
        log = app.engine.log
        # segment.bytes=1: every write of five records is a segment of its own.
        await log.create_topic("events", 2, config={"segment.bytes": "1"})
        for base in range(0, 20, 5):
            await log.produce("events", [ProducerRecord(f"k{i}".encode(), b'{"N":%d}' % i, 1000, partition=0)
                                         for i in range(base, base + 5)])
        await log.produce("events", [ProducerRecord(b"p1", b'{"N":0}', 1000, partition=1)])
        await log.delete_records("events", {0: 10})
        async with httpx.AsyncClient(base_url=url) as c:
            r = await ksql(c, "CREATE STREAM events (k STRING KEY, n INT) "
                              "WITH (kafka_topic='events', value_format='JSON');")
            assert r.status_code == 200
            (desc,) = (await ksql(c, "DESCRIBE events EXTENDED;")).json()
            assert desc["sourceDescription"]["logStartOffsets"] == {"0": 10, "1": 0}
            assert desc["sourceDescription"]["partitions"] == 2
            (plain,) = (await ksql(c, "DESCRIBE events;")).json()
            assert plain["sourceDescription"]["logStartOffsets"] is None

            r = await c.post("/query", json={"ksql": "PRINT 'events' FROM BEGINNING LIMIT 11;"})
            lines = r.text.splitlines()
            assert lines[:3] == ["Key format: KAFKA_STRING", "Value format: JSON or KAFKA_STRING", "Log start offsets: 0:10, 1:0"]
            assert 'key: k10, value: {"N":10}, partition: 0' in lines[3]
            assert len([x for x in lines if x.startswith("rowtime: ")]) == 11

    with_node(tmp_path, test)


def test_failing_statement_half_way_keeps_earlier_ones(tmp_path):
    async def test(url: str, app: Any) -> None:
        async with httpx.AsyncClient(base_url=url) as c:
            r = await ksql(c, CREATE + "\nDROP STREAM nope;\nCREATE STREAM later (x INT) "
                                       "WITH (kafka_topic='later', value_format='JSON', partitions=1);")
            assert r.status_code == 400
            body = r.json()
            assert body["@type"] == "statement_error" and body["error_code"] == 40001
            assert body["message"] == "Source NOPE does not exist."
            assert body["statementText"] == "DROP STREAM nope;"
            assert [e["commandId"] for e in body["entities"]] == ["stream/`S`/create"]
            names = [s["name"] for s in (await ksql(c, "SHOW STREAMS;")).json()[0]["streams"]]
            assert "S" in names and "LATER" not in names

            # A syntax error in a later statement: the earlier one ran, the error says where.
            r = await ksql(c, "DEFINE t = 'x'; SHOW STREAMS; SELEC 1;")
            assert r.status_code == 400
            assert r.json()["message"].startswith("line 1:1: Syntax Error")
            assert r.json()["statementText"] == "SELEC 1;"
            assert [e["@type"] for e in r.json()["entities"]] == ["streams"]

            # Queries belong on /query: ksqlDB's 40002.
            r = await ksql(c, "SELECT * FROM s EMIT CHANGES;")
            assert r.status_code == 400 and r.json()["error_code"] == 40002

            # Variables: sent along, and DEFINEd earlier in the same request.
            r = await ksql(c, "DEFINE topic = 's'; DESCRIBE ${src};", sessionVariables={"src": "S"})
            assert r.json()[0]["sourceDescription"]["topic"] == "s"

    with_node(tmp_path, test)


def test_alter_and_assert_entities(tmp_path):
    async def test(url: str, app: Any) -> None:
        async with httpx.AsyncClient(base_url=url) as c:
            r = await ksql(c, CREATE + "ALTER STREAM s ADD COLUMN note STRING;"
                                       "ASSERT TOPIC s WITH (PARTITIONS=1); ASSERT NOT EXISTS SCHEMA ID 77;")
            assert r.status_code == 200, r.text
            alter, topic, schema = r.json()[1:]
            assert alter["commandId"] == "stream/`S`/alter"
            assert alter["commandStatus"]["message"] == "Source S has been altered."
            assert topic == {"@type": "assert_topic", "statementText": "ASSERT TOPIC s WITH (PARTITIONS=1);",
                             "topicName": "s", "exists": True, "warnings": []}
            assert schema == {"@type": "assert_schema", "statementText": "ASSERT NOT EXISTS SCHEMA ID 77;",
                              "subject": None, "id": 77, "exists": False, "warnings": []}
            # A failed assertion: HTTP 417, ksqlDB's 41700.
            r = await ksql(c, "ASSERT TOPIC nope TIMEOUT 200 MILLISECONDS;")
            assert r.status_code == 417
            assert r.json()["error_code"] == 41700 and r.json()["message"] == "Topic nope does not exist"

    with_node(tmp_path, test)


def test_bad_requests_get_ksqldb_error_bodies(tmp_path):
    async def test(url: str, app: Any) -> None:
        async with httpx.AsyncClient(base_url=url) as c:
            r = await c.post("/ksql", content=b'{"ksql": "SHOW STREAMS;"')
            assert r.status_code == 400
            assert r.json()["@type"] == "generic_error" and r.json()["error_code"] == 40000
            assert r.json()["message"].startswith("Invalid JSON in request")
            r = await c.post("/ksql", content=b"[1, 2]")
            assert r.status_code == 400 and r.json()["error_code"] == 40000
            r = await c.post("/ksql", json={"streamsProperties": {}})
            assert r.status_code == 400 and "ksql" in r.json()["message"]
            r = await c.post("/query-stream", json={"properties": {}})
            assert r.status_code == 400 and r.json()["message"] == "No sql in arguments"

            r = await c.get("/no/such/endpoint")
            assert r.status_code == 404
            assert r.json() == {"@type": "generic_error", "error_code": 40400,
                                "message": "Unknown endpoint: GET /no/such/endpoint"}
            r = await c.get("/ksql")
            assert r.status_code == 405 and r.json()["error_code"] == 40500

            big = {"ksql": "SHOW STREAMS; -- " + "x" * 5000}
            r = await c.post("/ksql", json=big)
            assert r.status_code == 413 and r.json()["error_code"] == 41300

            async def chunked():  # no Content-Length: the limit holds while reading
                for _ in range(10):
                    yield b" " * 1000
                yield b'{"ksql": "SHOW STREAMS;"}'

            r = await c.post("/ksql", content=chunked())
            assert r.status_code == 413

            r = await c.post("/query-stream", json={"sql": "SELECT * FROM nowhere EMIT CHANGES;"})
            assert r.status_code == 400
            assert r.json()["@type"] == "statement_error" and r.json()["error_code"] == 40001
            r = await c.post("/query-stream", json={"sql": "SHOW STREAMS; SHOW TABLES;"})
            assert r.status_code == 400 and "exactly one" in r.json()["message"]
            r = await c.post("/close-query", json={"queryId": "transient_X_1"})
            assert r.status_code == 400 and r.json()["message"] == "No query with id transient_X_1"

    with_node(tmp_path, test, max_request_bytes=4096)


# =============================================================================== queries
def test_query_formats_over_http1_and_http2(tmp_path):
    async def test(url: str, app: Any) -> None:
        async with httpx.AsyncClient(base_url=url) as c:
            await ksql(c, CREATE + "CREATE TABLE t AS SELECT id, SUM(v) AS total FROM s GROUP BY id;"
                                   "INSERT INTO s (id, v, ts, d) VALUES ('a', 1, '2021-01-01T00:00:00', 1.5);"
                                   "INSERT INTO s (id, v) VALUES ('b', 2);")
            # /query: ksqlDB's StreamedRow array; TIMESTAMP as text, DECIMAL exact.
            r = await c.post("/query", json={"ksql": "SELECT * FROM s EMIT CHANGES LIMIT 2;"})
            assert r.headers["content-type"] == "application/json"
            answer = r.json()
            # (A push query's header marks no column KEY, as ksqlDB's.)
            assert answer[0]["header"]["schema"] == "`ID` STRING, `V` BIGINT, `TS` TIMESTAMP, `D` DECIMAL(5, 2)"
            assert answer[0]["header"]["queryId"].startswith("transient_S_")
            assert answer[1:] == [{"row": {"columns": ["a", 1, "2021-01-01T00:00:00.000", 1.5]}},
                                  {"row": {"columns": ["b", 2, None, None]}},
                                  {"finalMessage": "Limit Reached"}]
            assert '"2021-01-01T00:00:00.000",1.50]' in r.text
            assert await pull_rows(c, "SELECT * FROM t;", 2)
            r = await c.post("/query", json={"ksql": "SELECT * FROM t WHERE id = 'b';"})
            assert r.json()[1:] == [{"row": {"columns": ["b", 2]}}]

            # /query-stream: delimited by default, a JSON array when asked for.
            r = await c.post("/query-stream", json={"sql": "SELECT id, v FROM s EMIT CHANGES LIMIT 2;"})
            assert r.headers["content-type"] == "application/vnd.ksqlapi.delimited.v1"
            header, *rows = [orjson.loads(x) for x in r.text.splitlines()]
            assert header["columnNames"] == ["ID", "V"] and header["columnTypes"] == ["STRING", "BIGINT"]
            assert rows == [["a", 1], ["b", 2]]
            r = await c.post("/query-stream", json={"sql": "SELECT * FROM t WHERE id = 'a';"},
                             headers={"Accept": "application/json"})
            assert r.json()[1:] == [["a", 1]]

            # PRINT goes to /query as text lines.
            r = await c.post("/query", json={"ksql": "PRINT 's' FROM BEGINNING LIMIT 1;"})
            assert r.headers["content-type"].startswith("text/plain")
            assert r.text.splitlines()[:3] == ["Key format: KAFKA_STRING", "Value format: JSON or KAFKA_STRING", "Log start offsets: 0:0"]
            assert "key: a" in r.text.splitlines()[3]

        async with httpx.AsyncClient(base_url=url, http1=False, http2=True) as h2:
            r = await h2.post("/query-stream", json={"sql": "SELECT id FROM s EMIT CHANGES LIMIT 2;"})
            assert r.http_version == "HTTP/2"
            assert [orjson.loads(x) for x in r.text.splitlines()][1:] == [["a"], ["b"]]
            r = await h2.post("/query-stream", json={"sql": "SELECT * FROM t WHERE id = 'a';"})
            assert r.text.splitlines()[1:] == ['["a",1]']
            r = await h2.post("/ksql", json={"ksql": "SHOW TABLES;"})
            assert r.json()[0]["tables"][0]["name"] == "T"
            r = await h2.post("/inserts-stream", content=b'{"target":"S"}\n{"ID":"c","V":3}\n')
            assert r.text == '{"status":"ok","seq":0}\n'

    with_node(tmp_path, test)


async def open_push(url: str, sql: str, rcvbuf: int | None = None
                    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, dict[str, Any]]:
    """POST /query-stream on a raw HTTP/1.1 connection; returns it after the header line."""
    import socket

    parts = urlsplit(url)
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (parts.hostname, parts.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    body = orjson.dumps({"sql": sql, "properties": {"auto.offset.reset": "earliest"}})
    writer.write(b"POST /query-stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Connection: close\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    size = int(await reader.readline(), 16)  # the first chunk is the header line
    header = orjson.loads(await reader.readexactly(size))
    await reader.readline()
    return reader, writer, header


def test_disconnect_mid_stream_closes_the_query(tmp_path):
    async def test(url: str, app: Any) -> None:
        async with httpx.AsyncClient(base_url=url) as c:
            await ksql(c, CREATE)
            _, writer, header = await open_push(url, "SELECT * FROM s EMIT CHANGES;")
            qid = header["queryId"]
            assert list(app.push_queries.running) == [qid]
            shown = [q["id"] for q in (await ksql(c, "SHOW QUERIES;")).json()[0]["queries"]]
            assert shown == [qid]
            writer.close()  # the client goes away while the query waits for rows
            await wait_until(lambda: not app.push_queries.running)
            assert (await ksql(c, "SHOW QUERIES;")).json()[0]["queries"] == []
            # The same for a query terminated by TERMINATE <id>.
            _, writer, header = await open_push(url, "SELECT * FROM s EMIT CHANGES;")
            r = await ksql(c, f"TERMINATE {header['queryId']};")
            assert r.json()[0]["commandStatus"]["message"] == "Query terminated."
            await wait_until(lambda: not app.push_queries.running)
            writer.close()

    with_node(tmp_path, test)


def test_a_slow_client_holds_the_query_back(tmp_path):
    """A client that does not read makes the server stop producing (bounded buffering);
    once it reads, every row arrives."""
    rows = 20_000
    payload = "x" * 1000

    async def test(url: str, app: Any) -> None:
        async with httpx.AsyncClient(base_url=url) as c:
            await ksql(c, "CREATE STREAM big (id INT KEY, pad STRING) "
                          "WITH (kafka_topic='big', value_format='JSON', partitions=1);")
        for start in range(0, rows, 5000):
            await app.engine.log.produce("big", [
                ProducerRecord(None, orjson.dumps({"PAD": payload}), 0) for _ in range(start, start + 5000)])
        reader, writer, header = await open_push(url, f"SELECT pad FROM big EMIT CHANGES LIMIT {rows};",
                                                 rcvbuf=4096)
        handle = app.push_queries.running[header["queryId"]]
        deadline = time.monotonic() + 20
        while True:  # until the query stops sending: two samples half a second apart agree
            before = handle.rows_sent
            await asyncio.sleep(0.5)
            if handle.rows_sent == before:
                break
            assert time.monotonic() < deadline, "the query never stopped for the slow client"
        # ~20 MB of rows are waiting; what left the server fits the socket buffers.
        assert 0 < handle.rows_sent < rows // 2
        received = await reader.read()  # now read it all (the response ends at the LIMIT)
        assert received.count(payload.encode()) == rows
        writer.close()

    with_node(tmp_path, test)


# ========================================================================= inserts-stream
def test_inserts_stream(tmp_path):
    async def test(url: str, app: Any) -> None:
        async with httpx.AsyncClient(base_url=url) as c:
            await ksql(c, CREATE)
            body = (b'{"target": "s"}\n{"ID": "a", "V": 1, "TS": "2021-01-01T00:00:00", "D": 2.5}\n'
                    b'{"id": "b", "v": 2}\n{"ID": "c", "V": "not a number"}\n{"ID": "d", "V": 4}\n')
            r = await c.post("/inserts-stream", content=body)
            assert r.status_code == 200
            acks = [orjson.loads(x) for x in r.text.splitlines()]
            assert acks[:2] == [{"status": "ok", "seq": 0}, {"status": "ok", "seq": 1}]
            assert acks[2]["status"] == "error" and acks[2]["seq"] == 2 and acks[2]["error_code"] == 40000
            assert "BIGINT" in acks[2]["message"] and len(acks) == 3  # the request ends at the error
            r = await c.post("/query-stream", json={"sql": "SELECT * FROM s EMIT CHANGES LIMIT 2;"})
            assert r.text.splitlines()[1:] == ['["a",1,"2021-01-01T00:00:00.000",2.50]', '["b",2,null,null]']

            r = await c.post("/inserts-stream", content=b'{"nothing": 1}\n')
            assert r.status_code == 400 and r.json()["message"] == "No target in arguments"
            r = await c.post("/inserts-stream", content=b'{"target": "nope"}\n{"X": 1}\n')
            assert r.status_code == 400 and r.json()["@type"] == "statement_error"
            r = await c.post("/inserts-stream", content=b'{"target": \n')
            assert r.status_code == 400 and r.json()["message"].startswith("Invalid JSON in request")

    with_node(tmp_path, test)


# ============================================================================ server info
def test_info_health_cluster_and_schema_registry(tmp_path):
    async def test(url: str, app: Any) -> None:
        async with httpx.AsyncClient(base_url=url) as c:
            info = (await c.get("/info")).json()["KsqlServerInfo"]
            assert info["serverStatus"] == "RUNNING" and info["ksqlServiceId"] == "svc_"
            health = await c.get("/healthcheck")
            assert health.status_code == 200 and health.json()["isHealthy"] is True
            status = (await c.get("/clusterStatus")).json()["clusterStatus"]
            host = urlsplit(url).netloc
            assert status[host]["hostAlive"] is True
            await ksql(c, "CREATE STREAM a (id INT KEY, v STRING) "
                          "WITH (kafka_topic='a', value_format='AVRO', partitions=1);")
            subjects = (await c.get("/schema-registry/subjects")).json()
            assert "a-value" in subjects
            # One node runs every task of a query: /clusterStatus lists them as its active ones.
            await ksql(c, "CREATE STREAM b AS SELECT * FROM a;")
            query = next(q for q in (await ksql(c, "SHOW QUERIES;")).json()[0]["queries"] if q["sinks"] == ["B"])
            for _ in range(100):
                shares = (await c.get("/clusterStatus")).json()["clusterStatus"][host]["activeStandbyPerQuery"]
                if shares.get(query["id"], {}).get("activePartitions"):
                    break
                await asyncio.sleep(0.1)
            assert shares[query["id"]]["activePartitions"] == [{"topic": "a", "partition": 0}]
            assert shares[query["id"]]["standByPartitions"] == []
            schema = (await c.get("/schema-registry/subjects/a-value/versions/latest")).json()
            assert schema["subject"] == "a-value" and schema["version"] == 1

    with_node(tmp_path, test, service_id="svc_")

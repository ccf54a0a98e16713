"""ksqlDB's smaller REST endpoints and HTTP details, over real sockets: ``GET
/is_valid_property/{name}`` (what ksqlDB's CLI asks before each SET), ``POST /ksql/terminate``
(cluster termination), status lines with their reason phrase, and absolute-form request
targets (``POST http://host:port/query``)."""
from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest

from tests.test_server_api import CREATE, ksql, with_node

pytestmark = pytest.mark.timeout(60)


async def raw_request(url: str, request: bytes) -> tuple[bytes, bytes]:
    """Send ``request`` as written on a plain socket; the status line and the body."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), None)
    body = await reader.readexactly(length) if length is not None else b""
    writer.close()
    return head.split(b"\r\n", 1)[0], body


def test_is_valid_property_and_the_overrides_denylist(tmp_path):
    async def test(url: str, app: Any) -> None:
        async with httpx.AsyncClient(base_url=url) as c:
            ok = await c.get("/is_valid_property/auto.offset.reset")
            assert ok.status_code == 200 and ok.json() is True
            denied = await c.get("/is_valid_property/ksql.streams.num.stream.threads")
            assert denied.status_code == 400
            assert denied.json()["message"] == "Cannot override property 'ksql.streams.num.stream.threads'"
            # The same list holds for the properties a request sends.
            r = await ksql(c, "SHOW STREAMS;", streamsProperties={"num.stream.threads": 4})
            assert r.status_code == 400 and "Cannot override property 'num.stream.threads'" in r.json()["message"]

    with_node(tmp_path, test, config={"ksql.properties.overrides.denylist": "num.stream.threads, other"})


def test_terminate_cluster_stops_queries_drops_sources_and_deletes_matching_topics(tmp_path):
    async def test(url: str, app: Any) -> None:
        async with httpx.AsyncClient(base_url=url) as c:
            r = await ksql(c, CREATE + "CREATE TABLE counts AS SELECT id, COUNT(*) AS n FROM s GROUP BY id;"
                              "CREATE STREAM kept (id STRING KEY, v BIGINT) "
                              "WITH (kafka_topic='kept', value_format='JSON', partitions=1);")
            assert r.status_code == 200
            before = {t["name"] for t in (await ksql(c, "SHOW ALL TOPICS;")).json()[0]["topics"]}
            assert any(t.endswith("-changelog") for t in before)

            # Bad input changes nothing: a pattern that is no regular expression, a list of
            # something else.
            for bad in ({"deleteTopicList": ["("]}, {"deleteTopicList": "s"}):
                r = await c.post("/ksql/terminate", json=bad)
                assert r.status_code == 400 and r.json()["error_code"] == 40000
            assert [q["id"] for q in (await ksql(c, "SHOW QUERIES;")).json()[0]["queries"]]

            r = await c.post("/ksql/terminate", json={"deleteTopicList": ["s", "COUNT.*"]})
            assert r.status_code == 200
            [status] = r.json()
            assert status["@type"] == "currentStatus" and status["statementText"] == "TERMINATE CLUSTER;"
            assert status["commandStatus"]["status"] == "SUCCESS"

            streams, tables, queries = (await ksql(c, "SHOW STREAMS; SHOW TABLES; SHOW QUERIES;")).json()
            assert [s["name"] for s in streams["streams"] if not s["name"].startswith("KSQL_")] == []
            assert tables["tables"] == [] and queries["queries"] == []
            after = {t["name"] for t in (await ksql(c, "SHOW ALL TOPICS;")).json()[0]["topics"]}
            # The matching topics and every query's internal topics are gone; 'kept' stays.
            assert "kept" in after and "s" not in after and "COUNTS" not in after
            assert not any(t.endswith(("-changelog", "-repartition")) for t in after)

    with_node(tmp_path, test)


def test_status_lines_have_reason_phrases_and_absolute_targets_are_served(tmp_path):
    async def test(url: str, app: Any) -> None:
        host = urlsplit(url).netloc.encode()
        line, body = await raw_request(url, b"GET /info HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
        assert line == b"HTTP/1.1 200 OK"
        line, _ = await raw_request(url, b"GET /nowhere HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
        assert line == b"HTTP/1.1 404 Not Found"
        # Absolute form (RFC 9112 3.2.2), as proxies and some clients send it.
        sql = orjson.dumps({"ksql": "SHOW STREAMS;"})
        line, body = await raw_request(
            url, b"POST http://" + host + b"/ksql HTTP/1.1\r\nHost: " + host
            + b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(sql)).encode()
            + b"\r\n\r\n" + sql)
        assert line == b"HTTP/1.1 200 OK" and orjson.loads(body)[0]["@type"] == "streams"

    with_node(tmp_path, test)


def test_inserts_stream_answers_one_json_array_to_json_clients_and_print_streams(tmp_path):
    async def test(url: str, app: Any) -> None:
        async with httpx.AsyncClient(base_url=url) as c:
            await ksql(c, CREATE)
            body = b'{"target": "s"}\n{"ID": "a", "V": 1}\n{"ID": "b", "V": 2}\n{"ID": "c", "V": "x"}\n'
            r = await c.post("/inserts-stream", content=body, headers={"Accept": "application/json"})
            assert r.status_code == 200 and r.headers["content-type"] == "application/json"
            acks = r.json()  # one JSON document, whatever chunks it came in
            assert acks[:2] == [{"status": "ok", "seq": 0}, {"status": "ok", "seq": 1}]
            assert acks[2]["status"] == "error" and len(acks) == 3
            r = await c.post("/inserts-stream", content=b'{"target": "s"}\n',
                             headers={"Accept": "application/json"})
            assert r.json() == []
            # PRINT over /query-stream: the lines PRINT shows on /query.
            r = await c.post("/query-stream", json={"sql": "PRINT 's' FROM BEGINNING LIMIT 2;"})
            lines = r.text.splitlines()
            assert r.status_code == 200 and lines[0] == "Key format: KAFKA_STRING"
            assert [line.split(", key: ")[1] for line in lines if line.startswith("rowtime")] == [
                'a, value: {"V":1,"TS":null,"D":null}, partition: 0',
                'b, value: {"V":2,"TS":null,"D":null}, partition: 0']

    with_node(tmp_path, test)

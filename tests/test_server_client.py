"""A third-party ksqlDB client, unchanged, against a real ``streamsql server`` process.

The client is ``ksqldb`` from PyPI (``from ksqldb import KSQLdbClient``), used as its README
shows: ``ksql()`` for statements, ``inserts_stream()`` (HTTP/2), ``query_sync()`` for pull
queries and ``query_async()`` for push queries (HTTP/2, ``/query-stream``), ``close_query()``
and ``get_properties()``. (ksql-python's last release no longer installs with current pip,
and its fork ksql-python-ng calls httpx with arguments httpx 0.28 removed.)
"""
from __future__ import annotations

import asyncio
import time

import pytest

ksqldb = pytest.importorskip("ksqldb", reason="the ksqldb client is a test dependency")
import requests  # noqa: E402  (ksqldb's own dependency; its ksql() raises requests' errors)
from ksqldb import KSQLdbClient  # noqa: E402

from streamsql.server.testing import NodeProcess  # noqa: E402

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with NodeProcess(tmp_path_factory.mktemp("node") / "data") as node:
        api = KSQLdbClient(node.url)
        api.ksql("CREATE STREAM orders (id VARCHAR KEY, customer VARCHAR, amount DOUBLE) "
                 "WITH (kafka_topic='orders', value_format='JSON', partitions=1);")
        yield api


def running_push_queries(client: KSQLdbClient) -> list[str]:
    return [q["id"] for q in client.ksql("SHOW QUERIES;")[0]["queries"] if q["queryType"] == "PUSH"]


def pull_until(client: KSQLdbClient, sql: str, rows: int, timeout: float = 20.0) -> list:
    deadline = time.monotonic() + timeout
    answer: list = []
    while time.monotonic() < deadline:
        answer = client.query_sync(sql)
        if len(answer) - 1 >= rows:
            return answer
        time.sleep(0.1)
    raise AssertionError(f"{sql!r} answered {answer} after {timeout}s")


def test_create_insert_push_and_pull(client):
    streams = client.ksql("show streams;")[0]["streams"]
    assert "ORDERS" in [s["name"] for s in streams]

    acks = client.inserts_stream("ORDERS", [
        {"ID": "o1", "CUSTOMER": "alice", "AMOUNT": 10.5},
        {"ID": "o2", "CUSTOMER": "bob", "AMOUNT": 3.0},
    ])
    assert acks == [{"status": "ok", "seq": 0}, {"status": "ok", "seq": 1}]
    assert client.ksql("INSERT INTO orders (id, customer, amount) VALUES ('o3', 'alice', 1.5);") == []

    async def push(sql: str, stop_after: int | None = None) -> list:
        got = []
        async for x in client.query_async(sql, stream_properties={"ksql.streams.auto.offset.reset": "earliest"},
                                          timeout=None):
            got.append(x)
            if stop_after is not None and len(got) > stop_after:
                break  # what a user does to stop reading
        return got

    # A push query with a LIMIT ends by itself.
    header, *rows = asyncio.run(push("select * from ORDERS emit changes limit 3;"))
    assert header["columnNames"] == ["ID", "CUSTOMER", "AMOUNT"]
    assert header["columnTypes"] == ["STRING", "STRING", "DOUBLE"]
    assert rows == [["o1", "alice", 10.5], ["o2", "bob", 3.0], ["o3", "alice", 1.5]]

    # One without: the client stops reading and, as the README asks for async queries,
    # closes it.
    header, *rows = asyncio.run(push("select id from ORDERS emit changes;", stop_after=2))
    assert rows == [["o1"], ["o2"]]
    assert header["queryId"] in running_push_queries(client)
    assert client.close_query(header["queryId"]) is True
    assert header["queryId"] not in running_push_queries(client)

    # A table and pull queries on it (query_sync is the README's way for pull queries).
    # (It counts the rows inserted above: from the topic's start.)
    status = client.ksql("CREATE TABLE totals AS SELECT customer, COUNT(*) AS n, SUM(amount) AS total "
                         "FROM orders GROUP BY customer;",
                         stream_properties={"ksql.streams.auto.offset.reset": "earliest"})[0]
    assert status["commandStatus"]["status"] == "SUCCESS"
    assert status["commandStatus"]["queryId"].startswith("CTAS_TOTALS")
    header, *rows = pull_until(client, "select * from TOTALS where customer = 'alice';", 1)
    assert header["columnNames"] == ["CUSTOMER", "N", "TOTAL"]
    assert rows == [["alice", 2, 12.0]]
    header, *rows = pull_until(client, "select customer, n from TOTALS;", 2)
    assert sorted(rows) == [["alice", 2], ["bob", 1]]


def test_close_query_ends_a_push_query(client):
    async def run() -> tuple[list, bool, bool]:
        got = []
        closed = again = None
        async for x in client.query_async("select id from ORDERS emit changes;",
                                          stream_properties={"auto.offset.reset": "latest"}, timeout=None):
            got.append(x)
            if len(got) == 1:  # the header: the query runs; insert a row it must see
                assert x["queryId"] in running_push_queries(client)
                client.inserts_stream("ORDERS", [{"ID": "late", "CUSTOMER": "carol", "AMOUNT": 1.0}])
            elif len(got) == 2:
                closed = client.close_query(x and got[0]["queryId"])
        # The server ended the response: the loop above finished without a break.
        again = client.close_query(got[0]["queryId"])
        return got, closed, again

    got, closed, again = asyncio.run(asyncio.wait_for(run(), 20))
    assert got[1:] == [["late"]]
    assert closed is True and again is False  # a closed query is gone
    assert got[0]["queryId"] not in running_push_queries(client)


def test_properties_and_errors(client):
    names = [p["name"] for p in client.get_properties()]
    assert "auto.offset.reset" in names
    with pytest.raises(requests.HTTPError) as failed:
        client.ksql("describe no_such_stream;")
    body = failed.value.response.json()
    assert failed.value.response.status_code == 400
    assert body["@type"] == "statement_error" and body["error_code"] == 40001
    assert body["message"] == "Could not find STREAM/TABLE 'NO_SUCH_STREAM' in the Metastore"
    assert body["statementText"] == "describe no_such_stream;"

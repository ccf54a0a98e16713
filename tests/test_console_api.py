"""The web console's server side over real sockets, no browser: the page and its assets at
``/`` and ``/console/assets/``, behind the node's authentication, and the console's JSON
endpoints (``streamsql.server.console.api``) against a real node on the embedded log:
topics with their offsets, the message browser's paging from the beginning, the end, an
offset and a timestamp with keys, values (JSON and AVRO through the schema registry) and
headers decoded, consumer groups with their lag, and a query's topology.
"""
from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from streamsql.runtime.log.base import ProducerRecord
from streamsql.server.testing import NodeProcess, node_in_process

pytestmark = pytest.mark.timeout(90)


async def ok(client: httpx.AsyncClient, text: str) -> list[dict[str, Any]]:
    response = await client.post("/ksql", json={"ksql": text})
    assert response.status_code == 200, response.text
    return response.json()


async def eventually(check, timeout: float = 20.0) -> Any:  # noqa: ANN001 - an async predicate
    deadline = time.monotonic() + timeout
    while True:
        found = await check()
        if found or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.1)


def test_page_and_assets_are_served(tmp_path: Path) -> None:
    async def main() -> None:
        async with node_in_process(tmp_path / "data") as (url, _), httpx.AsyncClient(base_url=url) as http:
            page = await http.get("/")
            assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
            scripts = re.findall(r'src="(/console/assets/[^"]+\.js)"', page.text)
            styles = re.findall(r'href="(/console/assets/[^"]+\.css)"', page.text)
            assert scripts and styles, page.text
            script = await http.get(scripts[0])
            assert script.status_code == 200 and "javascript" in script.headers["content-type"]
            assert "immutable" in script.headers["cache-control"]
            assert (await http.get(styles[0])).headers["content-type"].startswith("text/css")
            # Nothing but the built files: no way out of the assets directory.
            for bad in ("/console/assets/..%2f..%2fapi.py", "/console/assets/.hidden", "/console/nope"):
                assert (await http.get(bad)).status_code == 404, bad
            assert (await http.post("/", content=b"x")).status_code == 405
            # The REST API is where it was.
            assert (await http.get("/info")).json()["KsqlServerInfo"]["serverStatus"] == "RUNNING"

    asyncio.run(main())


def test_console_needs_the_nodes_credentials(tmp_path: Path) -> None:
    with NodeProcess(tmp_path / "data", ["--basic-auth", "fred:secret"]) as node:
        page = httpx.get(node.url + "/")
        assert page.status_code == 401 and page.headers["www-authenticate"].startswith("Basic")
        assert httpx.get(node.url + "/console/api/topics").status_code == 401
        assert httpx.get(node.url + "/", auth=("fred", "wrong")).status_code == 401
        page = httpx.get(node.url + "/", auth=("fred", "secret"))
        assert page.status_code == 200 and "<!doctype html>" in page.text.lower()
        script = re.search(r'src="(/console/assets/[^"]+)"', page.text).group(1)
        assert httpx.get(node.url + script).status_code == 401
        assert httpx.get(node.url + script, auth=("fred", "secret")).status_code == 200
        topics = httpx.get(node.url + "/console/api/topics", auth=("fred", "secret")).json()["topics"]
        assert "_streamsql_default__command_topic" in {t["name"] for t in topics}


def test_topics_and_message_browser(tmp_path: Path) -> None:
    async def main() -> None:
        async with node_in_process(tmp_path / "data") as (url, app), httpx.AsyncClient(base_url=url) as http:
            await ok(http, "CREATE STREAM s (id STRING KEY, v BIGINT) "
                           "WITH (kafka_topic='s', value_format='JSON', partitions=2);")
            base = 1_700_000_000_000
            await app.engine.log.produce("s", [
                ProducerRecord(f"k{i}".encode(), orjson.dumps({"V": i}), base + 1000 * i,
                               headers=(("trace", f"t{i}".encode()), ("bin", b"\xff\x00")), partition=0)
                for i in range(30)])
            await app.engine.log.produce("s", [ProducerRecord(None, None, base, partition=1)])

            topics = {t["name"]: t for t in (await http.get("/console/api/topics")).json()["topics"]}
            s = topics["s"]
            assert [(p["partition"], p["beginOffset"], p["endOffset"]) for p in s["partitions"]] == [(0, 0, 30), (1, 0, 1)]
            assert s["sources"] == [{"name": "S", "type": "STREAM"}] and s["records"] == 31 and not s["internal"]
            assert topics["_streamsql_default__command_topic"]["internal"]

            async def page(**params: Any) -> dict[str, Any]:
                response = await http.get("/console/api/topics/s/messages", params=params)
                assert response.status_code == 200, response.text
                return response.json()

            first = await page(partition=0, limit=10)
            assert [r["offset"] for r in first["records"]] == list(range(10))
            assert (first["nextOffset"], first["previousOffset"]) == (10, None)
            r3 = first["records"][3]
            assert (r3["key"], r3["keyFormat"], r3["timestamp"]) == ("k3", "KAFKA_STRING", base + 3000)
            assert orjson.loads(r3["value"]) == {"V": 3} and "JSON" in r3["valueFormat"]
            assert r3["headers"] == [{"key": "trace", "value": "t3"}, {"key": "bin", "value": "0xff00"}]
            second = await page(partition=0, limit=10, **{"from": "offset", "offset": first["nextOffset"]})
            assert [r["offset"] for r in second["records"]] == list(range(10, 20))
            assert second["previousOffset"] == 0
            last = await page(partition=0, limit=10, **{"from": "end"})
            assert [r["offset"] for r in last["records"]] == list(range(20, 30)) and last["nextOffset"] is None
            at = await page(partition=0, limit=3, **{"from": "timestamp", "timestamp": base + 14_500})
            assert [r["offset"] for r in at["records"]] == [15, 16, 17]
            after = await page(partition=0, **{"from": "timestamp", "timestamp": base + 10**9})
            assert after["records"] == [] and after["startOffset"] == 30
            tomb = (await page(partition=1))["records"][0]
            assert (tomb["key"], tomb["value"], tomb["headers"]) == (None, None, [])

            bad = await http.get("/console/api/topics/s/messages", params={"partition": 2})
            assert bad.status_code == 400 and "no partition 2" in bad.json()["message"]
            assert (await http.get("/console/api/topics/s/messages", params={"from": "middle"})).status_code == 400
            assert (await http.get("/console/api/topics/nope/messages")).status_code == 404

    asyncio.run(main())


def test_schema_registry_formats_are_decoded(tmp_path: Path) -> None:
    async def main() -> None:
        async with node_in_process(tmp_path / "data") as (url, _), httpx.AsyncClient(base_url=url) as http:
            await ok(http, "CREATE STREAM a (id STRING KEY, n INT, name STRING) "
                           "WITH (kafka_topic='a', value_format='AVRO', partitions=1);")
            await ok(http, "INSERT INTO a (id, n, name) VALUES ('x', 7, 'seven');")
            records = (await http.get("/console/api/topics/a/messages")).json()["records"]
            assert len(records) == 1 and records[0]["key"] == "x"
            assert "AVRO" in records[0]["valueFormat"]
            assert orjson.loads(records[0]["value"]) == {"N": 7, "NAME": "seven"}

    asyncio.run(main())


def test_consumer_groups_lag_and_topology(tmp_path: Path) -> None:
    async def main() -> None:
        async with node_in_process(tmp_path / "data", {"auto.offset.reset": "earliest"}) as (url, app), \
                httpx.AsyncClient(base_url=url) as http:
            await ok(http, "CREATE STREAM s (id STRING KEY, v BIGINT) "
                           "WITH (kafka_topic='s', value_format='JSON', partitions=2);")
            await ok(http, "CREATE TABLE t AS SELECT v, COUNT(*) AS n FROM s GROUP BY v;")
            query_id = (await ok(http, "SHOW QUERIES;"))[0]["queries"][0]["id"]
            for i in range(4):
                await ok(http, f"INSERT INTO s (id, v) VALUES ('k{i}', {i});")

            async def groups() -> list[dict[str, Any]]:
                return (await http.get("/console/api/groups")).json()["groups"]

            async def caught_up() -> bool:
                found = await groups()
                return len(found) == 2 and all(g["lag"] == 0 for g in found) and \
                    sum(p["committedOffset"] or 0 for g in found for p in g["partitions"] if p["topic"] == "s") == 4
            assert await eventually(caught_up), await groups()
            await ok(http, f"PAUSE {query_id};")
            for i in range(5):
                await ok(http, f"INSERT INTO s (id, v) VALUES ('p{i}', {i});")
            found = {g["topics"][0]: g for g in await groups()}
            source_group = found["s"]
            assert source_group["queryId"] == query_id and source_group["lag"] == 5
            ends = await app.engine.log.end_offsets("s")
            assert [p["endOffset"] for p in source_group["partitions"]] == ends
            assert [p["lag"] for p in source_group["partitions"]] == \
                [e - (p["committedOffset"] or 0) for e, p in zip(ends, source_group["partitions"])]
            assert source_group["members"] == {"local": {"active": ["s-0", "s-1"], "standby": []}}
            await ok(http, f"RESUME {query_id};")
            assert await eventually(lambda: _no_lag(http)), await groups()

            graph = (await http.get(f"/console/api/queries/{query_id}/topology")).json()
            kinds = {n["id"]: n["kind"] for n in graph["nodes"]}
            assert kinds["topic:s"] == "source" and kinds["topic:T"] == "sink"
            # (One changelog: the aggregation's store, which the table is read from.)
            assert sorted(k for k in kinds.values()) == \
                ["changelog", "repartition", "sink", "source", "stage", "stage"]
            edges = {(e["from"], e["to"]) for e in graph["edges"]}
            repartition = next(n for n, k in kinds.items() if k == "repartition")
            assert {("topic:s", "stage:0"), ("stage:0", repartition), (repartition, "stage:1"),
                    ("stage:1", "topic:T")} <= edges
            assert (await http.get("/console/api/queries/NOPE/topology")).status_code == 404

    asyncio.run(main())


async def _no_lag(http: httpx.AsyncClient) -> bool:
    return all(g["lag"] == 0 for g in (await http.get("/console/api/groups")).json()["groups"])


def test_on_kafka_groups_show_each_nodes_partitions(cluster, unique_topic) -> None:  # noqa: ANN001 - fixtures
    """The same endpoints on a two-node cluster on a real broker: a topic's offsets and
    records from Kafka, and a query's group with each node's share and no lag once caught up."""
    a = cluster("node-a")
    b = cluster("node-b")
    topic = unique_topic("orders")
    a.ksql(f"CREATE STREAM orders (user STRING KEY, amount BIGINT) "
           f"WITH (kafka_topic='{topic}', partitions=4, value_format='JSON');"
           "CREATE TABLE totals AS SELECT user, SUM(amount) AS total FROM orders GROUP BY user;")
    query_id = next(q["id"] for q in a.ksql("SHOW QUERIES;")[0]["queries"] if q["sinks"] == ["TOTALS"])

    def groups(node: Any) -> list[dict[str, Any]]:
        return httpx.get(node.url + "/console/api/groups", timeout=30).json()["groups"]

    def spread() -> bool:
        found = [g for g in groups(b) if g["queryId"] == query_id and g["topics"] == [topic]]
        return bool(found) and sorted(len(m["active"]) for m in found[0]["members"].values()) == [2, 2]
    deadline = time.monotonic() + 90
    while not spread() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert spread(), groups(b)
    rows = "".join(orjson.dumps({"USER": f"u{i}", "AMOUNT": i}).decode() + "\n" for i in range(20))
    inserted = httpx.post(a.url + "/inserts-stream", content='{"target":"ORDERS"}\n' + rows, timeout=30)
    assert inserted.text.count('"ok"') == 20

    described = {t["name"]: t for t in httpx.get(b.url + "/console/api/topics", timeout=30).json()["topics"]}[topic]
    assert len(described["partitions"]) == 4 and described["records"] == 20
    seen = []
    for p in described["partitions"]:
        page = httpx.get(b.url + f"/console/api/topics/{topic}/messages",
                         params={"partition": p["partition"], "limit": 100}, timeout=30).json()
        assert [r["offset"] for r in page["records"]] == list(range(p["beginOffset"], p["endOffset"]))
        seen += [(r["key"], orjson.loads(r["value"])["AMOUNT"]) for r in page["records"]]
    assert sorted(seen) == sorted((f"u{i}", i) for i in range(20))

    def caught_up() -> dict[str, Any] | None:
        group = next(g for g in groups(a) if g["queryId"] == query_id and g["topics"] == [topic])
        return group if group["lag"] == 0 and sum(p["endOffset"] for p in group["partitions"]) == 20 else None
    deadline = time.monotonic() + 60
    while not caught_up() and time.monotonic() < deadline:
        time.sleep(0.5)
    group = caught_up()
    assert group is not None, groups(a)
    assert [p["committedOffset"] for p in group["partitions"]] == [p["endOffset"] for p in group["partitions"]]
    owned = sorted(part for m in group["members"].values() for part in m["active"])
    assert owned == sorted(f"{topic}-{p}" for p in range(4))

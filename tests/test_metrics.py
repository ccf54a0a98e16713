"""``GET /metrics``: a real node on a loopback port, scraped and parsed with Prometheus' own
text-format parser (``prometheus_client.parser``), its numbers checked against what was
produced, queried and answered."""
from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from streamsql.runtime.log.base import ProducerRecord
from streamsql.server.auth import basic_header
from streamsql.server.testing import NodeProcess, node_in_process

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(c: httpx.AsyncClient) -> Samples:
    r = await c.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


async def ksql(c: httpx.AsyncClient, sql: str) -> list[dict[str, Any]]:
    r = await c.post("/ksql", json={"ksql": sql})
    assert r.status_code == 200, r.text
    return r.json()


async def end_total(app: Any, topic: str) -> int:
    return sum(await app.engine.log.end_offsets(topic))


async def caught_up(c: httpx.AsyncClient, app: Any, queries: dict[str, tuple[str, int]]) -> Samples:
    """The scrape once every query (id -> its sink topic, the records it is to read) has read
    them all and counts as written what its sink topic holds (nothing else writes there), and
    has written something (an aggregation writes its updates at its commit interval's end)."""
    deadline = time.monotonic() + 60
    while True:
        samples = await scrape(c)
        ends = {q: await end_total(app, topic) for q, (topic, _) in queries.items()}
        if all(value(samples, "streamsql_query_records_in_total", query_id=q) == records
               and value(samples, "streamsql_query_records_out_total", query_id=q) == ends[q] > 0
               for q, (_, records) in queries.items()):
            return samples
        assert time.monotonic() < deadline, samples
        await asyncio.sleep(0.2)


def test_metrics_count_records_errors_lag_stores_pull_latency_and_requests(tmp_path: Path) -> None:
    async def first_run() -> None:
        async with node_in_process(tmp_path / "data", {"auto.offset.reset": "earliest"}) as (url, app), \
                httpx.AsyncClient(base_url=url, timeout=30) as c:
            await ksql(c, "CREATE STREAM src (id INT KEY, v INT) WITH "
                          "(kafka_topic='src', value_format='JSON', partitions=2);")
            [csas] = await ksql(c, "CREATE STREAM positive AS SELECT id, v FROM src WHERE v > 0;")
            [ctas] = await ksql(c, "CREATE TABLE totals AS SELECT id, COUNT(*) AS n, SUM(v) AS s "
                                   "FROM src GROUP BY id;")
            await ksql(c, "CREATE TABLE names (id INT PRIMARY KEY, name STRING) WITH "
                          "(kafka_topic='names', value_format='JSON', partitions=2);"
                          "INSERT INTO names (id, name) VALUES (0, 'zero');"
                          "INSERT INTO names (id, name) VALUES (1, 'one');")
            [join] = await ksql(c, "CREATE STREAM named AS SELECT src.id, v, name FROM src "
                                   "JOIN names ON src.id = names.id;")
            queries = [q["commandStatus"]["queryId"] for q in (csas, ctas, join)]
            await ksql(c, "".join(f"INSERT INTO src (id, v) VALUES ({i % 3}, {v});"
                                  for i, v in enumerate([5, 7, -1, 3, 2, 8])))
            # A record whose value is not JSON: skipped by every query, to the processing log.
            await app.engine.log.produce("src", [ProducerRecord(None, b"not json", int(time.time() * 1000))])
            assert (await c.post("/ksql", json={"ksql": "CREATE STREAM oops;"})).status_code == 400
            assert (await c.get("/no/such/path/42")).status_code == 404

            # In: six rows and the bad record (and the join: the two names too); out: what each
            # wrote into its sink topic.
            samples = await caught_up(c, app, {queries[0]: ("POSITIVE", 7), queries[1]: ("TOTALS", 7),
                                               queries[2]: ("NAMED", 9)})
            assert value(samples, "streamsql_query_records_out_total", query_id=queries[0]) == 5  # v > 0
            assert value(samples, "streamsql_query_records_out_total", query_id=queries[1]) > 0
            assert value(samples, "streamsql_query_records_out_total", query_id=queries[2]) == 4  # ids 0, 1
            for q in queries:
                assert value(samples, "streamsql_query_processing_errors_total", query_id=q) == 1
                # Caught up: nothing of the source's two partitions is left to read.
                assert value(samples, "streamsql_query_lag_records", query_id=q, topic="src", partition="0") == 0
                assert value(samples, "streamsql_query_lag_records", query_id=q, topic="src", partition="1") == 0
            assert value(samples, "streamsql_persistent_queries") == 3
            # The table's aggregate is kept in RocksDB: three keys over the tasks' stores.
            assert total(samples, "streamsql_state_store_estimated_keys", query_id=queries[1]) >= 3
            assert total(samples, "streamsql_state_store_size_bytes", query_id=queries[1]) > 0

            pulls = [await c.post("/query-stream", json={"sql": "SELECT * FROM totals WHERE id = 0;"}),
                     await c.post("/query", json={"ksql": "SELECT * FROM totals WHERE id = 1;"}),
                     await c.post("/query-stream", json={"sql": "SELECT * FROM totals;"})]
            assert [r.status_code for r in pulls] == [200, 200, 200]
            assert "[0,2,8]" in pulls[0].text.replace(" ", "")

            samples = await scrape(c)
            assert value(samples, "streamsql_pull_query_latency_seconds_count") == 3
            assert value(samples, "streamsql_pull_query_latency_seconds_sum") > 0
            assert value(samples, "streamsql_pull_query_latency_seconds_bucket", le="+Inf") == 3
            requests = "streamsql_http_requests_total"
            assert value(samples, requests, endpoint="/ksql", status="200") == 6
            assert value(samples, requests, endpoint="/ksql", status="400") == 1
            assert value(samples, requests, endpoint="/query-stream", status="200") == 2
            assert value(samples, requests, endpoint="/query", status="200") == 1
            assert value(samples, requests, endpoint="other", status="404") == 1  # not the raw path
            assert value(samples, requests, endpoint="/metrics", status="200") >= 1  # (the earlier scrapes)

    asyncio.run(first_run())
    # The table's state lost: a restart restores its stores from their changelogs.
    shutil.rmtree(tmp_path / "data" / "state")

    async def second_run() -> None:
        async with node_in_process(tmp_path / "data", {"auto.offset.reset": "earliest"}) as (url, app), \
                httpx.AsyncClient(base_url=url, timeout=30) as c:
            query = app.engine.materializing("TOTALS")
            deadline = time.monotonic() + 60
            while True:
                samples = await scrape(c)
                restored = total(samples, "streamsql_state_restore_records", query_id=query)
                if restored > 0:
                    break
                assert time.monotonic() < deadline, samples
                await asyncio.sleep(0.2)
            # Every key's latest state came back: each of the three ids at least once.
            assert restored >= 3
            ends = total(samples, "streamsql_state_restore_end_offset", query_id=query)
            assert ends >= restored
            r = await c.post("/query", json={"ksql": "SELECT n, s FROM totals WHERE id = 0;"})
            assert [x["row"]["columns"] for x in r.json()[1:2]] == [[2, 8]]

    asyncio.run(second_run())


def test_metrics_need_the_same_credentials_as_the_rest(tmp_path: Path) -> None:
    with NodeProcess(tmp_path / "data", ["--basic-auth", "ops:s3cret"]) as node:
        with httpx.Client(base_url=node.url, timeout=30) as c:
            assert c.get("/metrics").status_code == 401
            assert c.get("/metrics", headers={"Authorization": basic_header("ops", "wrong")}).status_code == 401
            r = c.get("/metrics", headers={"Authorization": basic_header("ops", "s3cret")})
            assert r.status_code == 200
            samples = {(s.name, frozenset(s.labels.items())): s.value
                       for family in text_string_to_metric_families(r.text) for s in family.samples}
            assert samples[("streamsql_http_requests_total",
                            frozenset({("endpoint", "/metrics"), ("status", "401")}))] == 2
            assert samples[("streamsql_persistent_queries", frozenset())] == 0


def test_restore_progress_is_told_per_chunk_until_nothing_is_left(tmp_path: Path, monkeypatch: Any) -> None:
    """What ``streamsql_state_restore_remaining_records`` shows while a task restores: the
    store's restore reports where it is after every chunk, down to its end."""
    from streamsql.runtime.log.embedded import EmbeddedLog
    from streamsql.state import KeyValueStoreSpec, TaskState

    monkeypatch.setattr("streamsql.state.changelog.RESTORE_CHUNK", 10)
    spec = KeyValueStoreSpec("agg", changelog="q-agg-changelog")

    async def main() -> None:
        log = EmbeddedLog(tmp_path / "log")
        st = await TaskState.open(tmp_path / "t", [spec], log=log)
        for i in range(35):
            st.kv("agg").put(b"k%d" % i, i)
            await st.commit({("src", 0): i + 1})
        st.destroy()
        told: list[tuple[str, int, int, int]] = []
        st = await TaskState.open(tmp_path / "t", [spec], log=log,
                                  on_restore=lambda *progress: told.append(progress))
        assert told == [("agg", 0, at, 35) for at in (0, 10, 20, 30, 35)]
        assert st.restore_stats["agg"].replayed == 35
        st.close()
        await log.close()

    asyncio.run(main())


def test_metrics_on_kafka_exactly_once(kafka: Any, cluster: Any) -> None:
    """On a real broker, under exactly_once_v2 (records out counted as their transaction
    commits), with the lag read from the Kafka consumer's positions and last stable offsets."""
    from streamsql.testing.nodes import wait_for

    node = cluster("node-a", **{"processing.guarantee": "exactly_once_v2"})
    svc = cluster.service
    node.ksql(f"CREATE STREAM src_{svc} (id INT KEY, v INT) WITH "
              f"(kafka_topic='src_{svc}', value_format='JSON', partitions=2);"
              f"CREATE STREAM pos_{svc} AS SELECT id, v FROM src_{svc} WHERE v > 0;")
    query = next(q["id"] for q in node.ksql("SHOW QUERIES;")[0]["queries"] if q["id"].startswith("CSAS_POS"))
    node.ksql("".join(f"INSERT INTO src_{svc} (id, v) VALUES ({i}, {v});" for i, v in enumerate([4, -2, 9, 1])))

    def scraped() -> Samples | None:
        r = httpx.get(node.url + "/metrics", timeout=30)
        assert r.status_code == 200
        samples = {(s.name, frozenset(s.labels.items())): s.value
                   for family in text_string_to_metric_families(r.text) for s in family.samples}
        lags = [value(samples, "streamsql_query_lag_records", query_id=query, topic=f"src_{svc}", partition=p)
                for p in ("0", "1")]
        done = value(samples, "streamsql_query_records_out_total", query_id=query) == 3 and lags == [0, 0]
        return samples if done else None

    samples = wait_for("the query's metrics", scraped, timeout=120)
    assert value(samples, "streamsql_query_records_in_total", query_id=query) == 4

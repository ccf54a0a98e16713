"""The web console in a real browser: Debian's chromium, headless, driven by Playwright from
pytest against a real ``streamsql server`` (a child process, embedded log) on a free port.

What a user does and sees: the page loads; a script (CREATE STREAM, INSERTs, a pull query)
runs and its rows show in a table; a push query streams rows inserted after it started and
stops on Stop; a bad statement's line:column is underlined in the editor; streams, queries
and a query's topology; topics with their offsets and the message browser paging (next and
previous page, from a timestamp); consumer groups with their lag; connectors and the schema
registry. A screenshot of each page is kept in ``tests/artifacts/console/`` (or
``$STREAMSQL_ARTIFACTS/console/``) to be looked at.

Chromium comes from `make chromium` (apt-get); without it the tests skip, and fail under CI.
"""
from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest

from streamsql.server.testing import NodeProcess

pytestmark = pytest.mark.timeout(180)

CHROMIUM = "/usr/bin/chromium"
# Debian's chromium as Playwright's browser: nothing downloaded, nothing phoned home.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(os.environ.get("STREAMSQL_ARTIFACTS") or Path(__file__).parent / "artifacts") / "console"
WAIT_MS = 20_000


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false")


def _require(reason: str | None) -> None:
    """Skip for a missing browser, or fail under CI (where `make test` installs it)."""
    if reason is None:
        return
    if _in_ci():
        pytest.fail(f"{reason}; under CI the browser tests must run", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    with NodeProcess(tmp_path_factory.mktemp("console") / "data") as running:
        yield running


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    _require(None if Path(CHROMIUM).exists() else f"{CHROMIUM} not found (`make chromium` installs it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _require("the playwright package is missing (`make setup` installs the test extras)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    profile = tmp_path_factory.mktemp("chromium-profile")  # a new, empty user-data-dir
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True,
            viewport={"width": 1400, "height": 900})
        try:
            yield browser
        finally:
            browser.close()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture()
def page(context: Any, node: NodeProcess) -> Iterator[Any]:
    tab = context.new_page()
    tab.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.goto(node.url + "/")
    tab.wait_for_selector("[data-testid=editor] .cm-content")
    yield tab
    tab.close()
    assert errors == [], f"errors in the page: {errors}"


def ksql(node: NodeProcess, text: str) -> list[dict[str, Any]]:
    response = httpx.post(node.url + "/ksql", json={"ksql": text}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def eventually(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def shot(tab: Any, name: str) -> None:
    tab.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def write_sql(tab: Any, text: str) -> None:
    """Replace the editor's text as a user pasting it would."""
    tab.click("[data-testid=editor] .cm-content")
    tab.keyboard.press("Control+A")
    tab.keyboard.press("Delete")
    tab.keyboard.insert_text(text)
    assert tab.evaluate("() => window.__consoleEditor.state.doc.toString()") == text


def table_rows(tab: Any, selector: str) -> list[list[str]]:
    return tab.eval_on_selector_all(
        f"{selector} tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.innerText))")


def go(tab: Any, node: NodeProcess, hash_: str) -> None:
    tab.goto(f"{node.url}/#{hash_}")


def test_a_script_runs_and_its_rows_show(page: Any, node: NodeProcess) -> None:
    assert page.title() == "streamsql console"
    write_sql(page, "CREATE STREAM pageviews (user_id STRING KEY, page STRING, ms BIGINT)\n"
                    "  WITH (kafka_topic='pageviews', value_format='JSON', partitions=1);\n"
                    "INSERT INTO pageviews (user_id, page, ms) VALUES ('u1', '/home', 10);\n"
                    "INSERT INTO pageviews (user_id, page, ms) VALUES ('u2', '/cart', 20);\n"
                    "SELECT user_id, page, ms FROM pageviews WHERE ms > 5;\n")
    page.keyboard.press("Control+Enter")
    page.wait_for_function("() => document.querySelectorAll('[data-testid=result]').length === 4 && "
                           "document.querySelectorAll('[data-testid=result]')[3].querySelector('tbody tr')")
    statuses = page.eval_on_selector_all("[data-testid=status]", "e => e.map(x => x.innerText)")
    assert statuses[0] == "Stream created"
    page.wait_for_function("() => !document.querySelector('[data-testid=live]')")
    rows = table_rows(page, "[data-testid=result]:nth-child(4) [data-testid=rows]")
    assert sorted(rows) == [["u1", "/home", "10"], ["u2", "/cart", "20"]]
    headers = page.eval_on_selector_all("[data-testid=result]:nth-child(4) th", "e => e.map(x => x.innerText)")
    assert [h.split()[0] for h in headers] == ["USER_ID", "PAGE", "MS"]
    shot(page, "sql-editor")


def test_a_push_query_streams_new_rows_until_stopped(page: Any, node: NodeProcess) -> None:
    ksql(node, "CREATE STREAM clicks (user_id STRING KEY, url STRING) "
               "WITH (kafka_topic='clicks', value_format='JSON', partitions=1);")
    ksql(node, "INSERT INTO clicks (user_id, url) VALUES ('old', '/before');")
    write_sql(page, "SELECT user_id, url FROM clicks EMIT CHANGES;")
    page.click("[data-testid=run]")
    page.wait_for_selector("[data-testid=live]")
    page.wait_for_selector("text=Waiting for rows")
    assert eventually(lambda: any(q["queryType"] == "PUSH" for q in ksql(node, "SHOW QUERIES;")[0]["queries"]))
    for i in range(3):
        ksql(node, f"INSERT INTO clicks (user_id, url) VALUES ('u{i}', '/p{i}');")
        page.wait_for_function(f"() => document.querySelectorAll('[data-testid=rows] tbody tr').length === {i + 1}")
    # Only what came after the query started (auto.offset.reset=latest, the default).
    assert table_rows(page, "[data-testid=rows]") == [["u0", "/p0"], ["u1", "/p1"], ["u2", "/p2"]]
    shot(page, "sql-push-query")
    page.click("[data-testid=stop]")
    page.wait_for_selector("[data-testid=live]", state="detached")
    assert eventually(lambda: not any(q["queryType"] == "PUSH" for q in ksql(node, "SHOW QUERIES;")[0]["queries"]))
    ksql(node, "INSERT INTO clicks (user_id, url) VALUES ('late', '/after');")
    time.sleep(0.5)
    assert len(table_rows(page, "[data-testid=rows]")) == 3
    assert page.is_enabled("[data-testid=run]")


def test_a_bad_statement_is_marked_at_its_line_and_column(page: Any, node: NodeProcess) -> None:
    bad = "SELECT user_id,\n  page\n  FROMM pageviews;"
    write_sql(page, "SHOW STREAMS;\n\n" + bad)
    page.click("[data-testid=run]")
    message = page.inner_text("[data-testid=statement-error]", timeout=WAIT_MS)
    found = re.search(r"line (\d+):(\d+)", message)
    assert found, message
    line, column = int(found.group(1)), int(found.group(2))
    # The token the server names, found in the statement it was sent...
    bad_line = bad.split("\n")[line - 1]
    token = re.match(r"[\w$]+|.", bad_line[column - 1:]).group()
    marked = page.wait_for_selector(".cm-lintRange-error")
    assert marked.inner_text() == token
    # ...on the editor's line of it (the statement starts on the editor's third line).
    editor_line = page.evaluate(
        "el => [...document.querySelectorAll('.cm-line')].indexOf(el.closest('.cm-line')) + 1", marked)
    assert editor_line == 2 + line
    assert page.locator("[data-testid=result]").count() == 2  # SHOW STREAMS ran, then the error
    shot(page, "sql-error")


def test_streams_queries_and_a_topology(page: Any, node: NodeProcess) -> None:
    ksql(node, "CREATE STREAM orders (id STRING KEY, item STRING, qty INT) "
               "WITH (kafka_topic='orders', value_format='JSON', partitions=2);")
    ksql(node, "CREATE TABLE per_item AS SELECT item, SUM(qty) AS total FROM orders GROUP BY item;")
    query_id = next(q["id"] for q in ksql(node, "SHOW QUERIES;")[0]["queries"] if q["sinks"] == ["PER_ITEM"])
    go(page, node, "/sources")
    page.wait_for_selector("[data-testid=streams] >> text=ORDERS")
    assert "PER_ITEM" in page.inner_text("[data-testid=tables]")
    shot(page, "streams-and-tables")
    page.click("[data-testid=streams] >> text=ORDERS")
    facts = page.inner_text("[data-testid=source-facts]")
    assert "orders" in facts and "JSON" in facts and "Partitions\t2" in facts.replace("\n", "\t")
    assert [r[0] for r in table_rows(page, "[data-testid=fields]")] == ["ID", "ITEM", "QTY"]
    shot(page, "stream-orders")
    go(page, node, "/queries")
    page.click(f"[data-testid=queries] >> text={query_id}")
    page.wait_for_selector("[data-testid=topology]")
    kinds = page.eval_on_selector_all("[data-testid=topology] g.node", "e => e.map(x => x.dataset.kind).sort()")
    # (One changelog: the aggregation's store is also the table's, as in ksqlDB.)
    assert kinds == ["changelog", "repartition", "sink", "source", "stage", "stage"]
    assert page.inner_text("[data-testid=query-state]") == "RUNNING"
    shot(page, "query-topology")
    go(page, node, "/queries")
    page.wait_for_selector(f"[data-testid=queries] >> text={query_id}")
    shot(page, "queries")


def test_topics_and_the_message_browser(page: Any, node: NodeProcess) -> None:
    ksql(node, "CREATE STREAM readings (sensor STRING KEY, temp DOUBLE) "
               "WITH (kafka_topic='readings', value_format='JSON', partitions=1);")
    base = 1_700_000_000_000
    ksql(node, "".join(f"INSERT INTO readings (ROWTIME, sensor, temp) VALUES ({base + 1000 * i}, 's{i}', {i}.5);"
                       for i in range(25)))
    go(page, node, "/topics")
    page.wait_for_selector("[data-testid=topics] >> text=readings")
    row = next(r for r in table_rows(page, "[data-testid=topics]") if r[0] == "readings")
    assert row[1:4] == ["1", "25", "0: 0–25"]
    shot(page, "topics")
    page.click("[data-testid=topics] >> text=readings")
    page.wait_for_selector("[data-testid=partitions] tbody tr")
    assert table_rows(page, "[data-testid=partitions]") == [["0", "0", "25", "25"]]
    page.fill("[data-testid=limit]", "10")
    page.click("[data-testid=view]")

    def offsets() -> list[int]:
        page.wait_for_selector("[data-testid=messages] tbody tr")
        return [int(r[0]) for r in table_rows(page, "[data-testid=messages]")]

    assert offsets() == list(range(10))
    first = table_rows(page, "[data-testid=messages]")[3]
    assert first[1] == "2023-11-14 22:13:23.000 Z"  # base + 3 s
    assert first[2].startswith("s3") and "KAFKA_STRING" in first[2]
    assert '{"TEMP":3.5}' in first[3] and "JSON" in first[3]
    page.click("[data-testid=next]")
    page.wait_for_function("() => document.querySelector('[data-testid=messages] td').innerText === '10'")
    assert offsets() == list(range(10, 20))
    page.click("[data-testid=next]")
    page.wait_for_function("() => document.querySelector('[data-testid=messages] td').innerText === '20'")
    assert offsets() == list(range(20, 25)) and page.is_disabled("[data-testid=next]")
    page.click("[data-testid=previous]")
    page.wait_for_function("() => document.querySelector('[data-testid=messages] td').innerText === '10'")
    page.select_option("[data-testid=from]", "timestamp")
    stamp = dt.datetime.fromtimestamp((base + 12_500) / 1000, dt.timezone.utc).isoformat(timespec="milliseconds")
    page.fill("[data-testid=timestamp]", stamp.replace("+00:00", "Z"))
    page.fill("[data-testid=limit]", "5")
    page.click("[data-testid=view]")
    page.wait_for_function("() => document.querySelector('[data-testid=messages] td').innerText === '13'")
    assert offsets() == [13, 14, 15, 16, 17]
    shot(page, "topic-messages")


def test_consumer_groups_show_their_lag(page: Any, node: NodeProcess) -> None:
    ksql(node, "CREATE STREAM events (id STRING KEY, kind STRING) "
               "WITH (kafka_topic='events', value_format='JSON', partitions=1);")
    ksql(node, "CREATE TABLE event_counts AS SELECT id, COUNT(*) AS n FROM events GROUP BY id;")
    query_id = next(q["id"] for q in ksql(node, "SHOW QUERIES;")[0]["queries"] if q["sinks"] == ["EVENT_COUNTS"])
    ksql(node, f"PAUSE {query_id};")
    for i in range(3):
        ksql(node, f"INSERT INTO events (id, kind) VALUES ('e{i}', 'big');")
    go(page, node, "/groups")
    group = page.locator("[data-testid=group]", has_text=query_id)
    assert group.locator("[data-testid=group-lag]").inner_text() == "3"
    assert table_rows(page, f"[data-testid=group]:has-text('{query_id}') [data-testid=group-partitions]") == \
        [["events", "0", "null", "3", "3"]]
    assert table_rows(page, "[data-testid=nodes]")[0][1] == "true"
    shot(page, "consumer-groups")
    ksql(node, f"RESUME {query_id};")
    page.reload()
    page.wait_for_selector("[data-testid=group]")
    assert eventually(lambda: (page.reload(), page.locator("[data-testid=group]", has_text=query_id)
                               .locator("[data-testid=group-lag]").inner_text())[1] == "0")
    # The one node runs every task: its row lists the query's partition as active.
    assert eventually(lambda: (page.reload(), page.wait_for_selector("[data-testid=nodes]"),
                               f"{query_id}: events-0" in table_rows(page, "[data-testid=nodes]")[0][3])[2])
    shot(page, "consumer-groups")


def test_connectors_and_schema_registry(page: Any, node: NodeProcess, tmp_path: Path) -> None:
    source = tmp_path / "lines.txt"
    source.write_text("one\ntwo\n")
    ksql(node, f"CREATE SOURCE CONNECTOR lines_in WITH ('connector.class'='FileStreamSource', "
               f"'file'='{source}', 'topic'='lines');")
    ksql(node, "CREATE STREAM prices (sku STRING KEY, price DOUBLE, currency STRING) "
               "WITH (kafka_topic='prices', value_format='AVRO', partitions=1);")
    go(page, node, "/connectors")
    page.wait_for_selector("[data-testid=connectors] >> text=LINES_IN")
    row = table_rows(page, "[data-testid=connectors]")[0]
    assert row[:3] == ["LINES_IN", "source", "FileStreamSource"] and row[5] == "lines"
    shot(page, "connectors")
    go(page, node, "/schemas")
    page.click("[data-testid=subjects] >> text=prices-value")
    schema = page.inner_text("pre.json")
    assert '"PRICE"' in schema and '"CURRENCY"' in schema
    shot(page, "schema-registry")

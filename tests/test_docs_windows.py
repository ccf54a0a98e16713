"""The examples of ksqlDB's documentation page on windows ("Time and Windows in ksqlDB",
docs/concepts/time-and-windows-in-ksqldb-queries.md, 0.29), run in order on a fresh server as
push queries: over HTTP with a third-party ksqlDB client (``ksqldb`` from PyPI) and typed into
the shell in a real terminal (tmux). Each answers the rows ksqlDB would for the same input
(the windows worked out by hand below), or, for the page's one example with a typo in a
column name, ksqlDB's own error."""
from __future__ import annotations

import asyncio
import shutil

import pytest

ksqldb = pytest.importorskip("ksqldb", reason="the ksqldb client is a test dependency")
from ksqldb import KSQLdbClient  # noqa: E402

from streamsql.server.testing import NodeProcess  # noqa: E402

pytestmark = pytest.mark.timeout(240)

SOURCES = [
    "CREATE STREAM pageviews (viewtime BIGINT, userid VARCHAR, pageid VARCHAR, regionid VARCHAR, "
    "gender VARCHAR) WITH (kafka_topic='pageviews', value_format='JSON', partitions=2);",
    "CREATE STREAM orders (id INT KEY, item_id VARCHAR, quantity INT, order_total DOUBLE, "
    "order_zipcode VARCHAR, customer_name VARCHAR) "
    "WITH (kafka_topic='orders', value_format='JSON', partitions=2);",
    "CREATE STREAM shipments (id VARCHAR KEY, order_id INT, warehouse VARCHAR) "
    "WITH (kafka_topic='shipments', value_format='JSON', partitions=2);",
]
# (userid, regionid, gender, rowtime): the page's filter keeps FEMALE views of regions
# whose lower-case id is LIKE '%_6'.
VIEWS = [("u1", "Region_6", "FEMALE", 0), ("u2", "Region_6", "FEMALE", 5_000),
         ("u3", "Region_16", "female", 15_000), ("u4", "Region_5", "FEMALE", 20_000),
         ("u5", "Region_6", "MALE", 25_000), ("u6", "Region_6", "FEMALE", 70_000)]
# (id, item_id, quantity, order_total, order_zipcode, rowtime)
ORDERS = [(1, "apple", 2, 10.0, "94301", 1_000), (2, "pear", 1, 4.0, "94301", 2_000),
          (3, "apple", 5, 25.0, "10001", 12_000), (4, "apple", 1, 5.0, "94301", 25_000)]
# (id, order_id, warehouse, rowtime)
SHIPMENTS = [("s1", 1, "north", 600_000), ("s3", 3, "south", 7_300_000)]

FILTER = "WHERE UCASE(gender)='FEMALE' AND LCASE (regionid) LIKE '%_6'"
# The page's push queries, each with how many leading columns name a row's key and window
# and the rows it ends with: the last row per key and window (earlier updates come first, as
# ksqlDB's test server, with no cache, shows them); a join (0) shows every row.
EXAMPLES: list[tuple[str, int, list[list]]] = [
    # Hopping: a record is in every 30 s window starting at a multiple of 10 s before it.
    ("SELECT regionid, WINDOWSTART, COUNT(*) FROM pageviews "
     f"WINDOW HOPPING (SIZE 30 SECONDS, ADVANCE BY 10 SECONDS) {FILTER} GROUP BY regionid EMIT CHANGES;", 2,
     [["Region_16", 0, 1], ["Region_16", 10_000, 1], ["Region_6", 0, 2], ["Region_6", 50_000, 1],
      ["Region_6", 60_000, 1], ["Region_6", 70_000, 1]]),
    ("SELECT regionid, WINDOWSTART, COUNT(*) FROM pageviews "
     f"WINDOW TUMBLING (SIZE 1 MINUTE) {FILTER} GROUP BY regionid EMIT CHANGES;", 2,
     [["Region_16", 0, 1], ["Region_6", 0, 2], ["Region_6", 60_000, 1]]),
    # Sessions close after 60 s without a record: Region_6's gaps are 5, 20 and 45 s.
    ("SELECT regionid, WINDOWSTART, WINDOWEND, COUNT(*) FROM pageviews "
     "WINDOW SESSION (60 SECONDS) GROUP BY regionid EMIT CHANGES;", 3,
     [["Region_16", 15_000, 15_000, 1], ["Region_5", 20_000, 20_000, 1],
      ["Region_6", 0, 70_000, 4]]),
    ("SELECT order_zipcode, WINDOWSTART, TOPK(order_total, 5) FROM orders "
     "WINDOW TUMBLING (SIZE 1 HOUR) GROUP BY order_zipcode EMIT CHANGES;", 2,
     [["10001", 0, [25.0]], ["94301", 0, [10.0, 5.0, 4.0]]]),
    ("SELECT WINDOWSTART, WINDOWEND, item_id, SUM(quantity) FROM orders "
     "WINDOW TUMBLING (SIZE 20 SECONDS) GROUP BY item_id EMIT CHANGES;", 3,
     [[0, 20_000, "apple", 7], [0, 20_000, "pear", 1], [20_000, 40_000, "apple", 1]]),
    # The windowed join: orders shipped within an hour (order 3 shipped two hours later).
    ("SELECT o.id AS order_id, o.customer_name, s.id AS shipment_id, s.warehouse, "
     "(s.ROWTIME - o.ROWTIME) / 1000 / 60 AS ship_time FROM orders o INNER JOIN shipments s "
     "WITHIN 1 HOURS ON o.id = s.order_id EMIT CHANGES;", 0,
     [[1, "c1", "s1", "north", 9]]),
]
# The page's TOPK example names its column `orderzip_code` in the SELECT: ksqlDB's error.
TYPO = ("SELECT orderzip_code, TOPK(order_total, 5) FROM orders WINDOW TUMBLING (SIZE 1 HOUR) "
        "GROUP BY order_zipcode EMIT CHANGES;")
TYPO_ERROR = "Line: 1, Col: 8: SELECT column 'ORDERZIP_CODE' cannot be resolved."


def _inserts() -> list[str]:
    out = [f"INSERT INTO pageviews (viewtime, userid, pageid, regionid, gender, rowtime) VALUES "
           f"({t}, '{u}', 'p{u[1:]}', '{r}', '{g}', {t});" for u, r, g, t in VIEWS]
    out += [f"INSERT INTO orders (id, item_id, quantity, order_total, order_zipcode, customer_name, "
            f"rowtime) VALUES ({i}, '{item}', {q}, {total}, '{zipcode}', 'c{i}', {t});"
            for i, item, q, total, zipcode, t in ORDERS]
    out += [f"INSERT INTO shipments (id, order_id, warehouse, rowtime) VALUES ('{i}', {o}, '{w}', {t});"
            for i, o, w, t in SHIPMENTS]
    return out


def _final(rows: list[list], width: int) -> list[list]:
    """The last row of each key and window (the first ``width`` columns), as a table of the
    query's result ends: a row without its aggregate is a window's deletion (a session
    merged into a longer one)."""
    last: dict[str, list] = {}
    for row in rows:
        if row[-1] is None:
            last.pop(repr(row[:width]), None)
        else:
            last[repr(row[:width])] = row
    return sorted(last.values(), key=repr)


def test_windows_page_over_http_with_a_ksqldb_client(tmp_path):
    with NodeProcess(tmp_path / "data") as node:
        client = KSQLdbClient(node.url)
        for sql in SOURCES + _inserts():
            client.ksql(sql)

        async def push(sql: str, width: int, expected: list[list]) -> list[list]:
            rows: list[list] = []

            async def read() -> None:
                async for x in client.query_async(
                        sql, stream_properties={"ksql.streams.auto.offset.reset": "earliest"},
                        timeout=None):
                    if isinstance(x, dict):  # the header
                        assert "error_code" not in x, x
                        continue
                    rows.append(x)
                    if (_final(rows, width) if width else rows) == expected:
                        break  # what a user does to stop reading
            try:
                await asyncio.wait_for(read(), 20)
            except asyncio.TimeoutError:
                pass  # (the assertion below shows what came)
            return rows

        for sql, width, expected in EXAMPLES:
            rows = asyncio.run(push(sql, width, expected))
            assert (_final(rows, width) if width else rows) == expected, (sql, rows)

        async def answer(sql: str) -> list:
            return [x async for x in client.query_async(sql, timeout=None)]
        assert [x["message"] for x in asyncio.run(answer(TYPO))] == [TYPO_ERROR]


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_windows_page_in_the_shell(tmp_path):
    from tests.test_shell import Terminal

    term = Terminal(tmp_path / "data", tmp_path)
    try:
        term.wait_for("streamsql>")
        term.line("SET 'auto.offset.reset'='earliest';")
        term.wait_for("Successfully changed local property")
        for sql in SOURCES + _inserts():
            term.line(sql)
        term.wait_for("Stream created", count=len(SOURCES))
        # Tumbling: the screen's table shows the rows as they come; LIMIT ends the query.
        term.line(EXAMPLES[1][0].replace("EMIT CHANGES;", "EMIT CHANGES LIMIT 4;"))
        screen = term.wait_for("Limit Reached")
        table = screen[screen.rindex("|REGIONID"):]
        assert "|Region_6" in table and "|Region_16" in table and "|60000" in table
        # The session windows, until Ctrl-C.
        term.line(EXAMPLES[2][0])
        screen = term.wait_for("|70000")
        term.key("C-c")
        term.wait_for("Query terminated", count=2)
        # The join.
        term.line(EXAMPLES[5][0].replace("EMIT CHANGES;", "EMIT CHANGES LIMIT 1;"))
        screen = term.wait_for("Limit Reached", count=2)
        table = screen[screen.rindex("|ORDER_ID"):]
        assert "|north" in table and "|s1" in table and "|9 " in table
        term.line(TYPO)
        term.wait_for(TYPO_ERROR)
    finally:
        term.close()

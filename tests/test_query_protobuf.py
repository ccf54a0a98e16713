"""``POST /query`` with ``Accept: application/vnd.ksql.v1+protobuf`` (ksqlDB 0.29): a pull
query answers with ksqlDB's StreamedRow array whose header carries ``protoSchema`` and whose
rows are ``protobufBytes``, the base64 of a message of that schema. Checked over a real
server on a loopback socket, decoding the rows with the schema the header gives, as a client
does."""
from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from streamsql.server.protobuf_rows import java_hashmap_order
from streamsql.server.testing import node_in_process
from streamsql.testing.prototext import message_class

PROTOBUF = "application/vnd.ksql.v1+protobuf"


async def _ksql(c: httpx.AsyncClient, sql: str) -> None:
    r = await c.post("/ksql", json={"ksql": sql})
    assert r.status_code == 200, r.text


async def _pull(c: httpx.AsyncClient, sql: str, rows: int, accept: str = PROTOBUF,
                endpoint: str = "/query") -> list[Any]:
    """The answer of a pull query once it has ``rows`` rows (a source table fills up after
    its INSERTs are acknowledged)."""
    deadline = time.monotonic() + 20
    request = {"ksql": sql} if endpoint == "/query" else {"sql": sql}
    while True:
        r = await c.post(endpoint, json=request, headers={"Accept": accept})
        assert r.status_code == 200, r.text
        answer = r.json()
        if sum("row" in x for x in answer) >= rows or time.monotonic() > deadline:
            return answer
        await asyncio.sleep(0.1)


def _decode(answer: list[Any]) -> list[Any]:
    cls = message_class(answer[0]["header"]["protoSchema"])
    out = []
    for item in answer[1:]:
        if "row" in item:
            message = cls()
            message.ParseFromString(base64.b64decode(item["row"]["protobufBytes"]))
            out.append(message)
    return out


def test_query_stream_answers_protobuf_as_query_does(tmp_path: Path) -> None:
    """``/query-stream`` with the protobuf media type answers the same array as ``/query``
    (the endpoint ksqlDB's REST test cases ask for protobuf on)."""
    async def body() -> None:
        async with node_in_process(tmp_path / "data", {"auto.offset.reset": "earliest"}) as (url, _app), \
                httpx.AsyncClient(base_url=url) as c:
            await _ksql(c, "CREATE TABLE t (id INT PRIMARY KEY, name STRING) "
                           "WITH (kafka_topic='t', value_format='JSON', partitions=1);"
                           "CREATE TABLE m AS SELECT * FROM t;")
            await _ksql(c, "INSERT INTO t (id, name) VALUES (1, 'one'); INSERT INTO t (id, name) VALUES (2, 'two');")
            legacy = await _pull(c, "SELECT * FROM m;", 2)
            stream = await _pull(c, "SELECT * FROM m;", 2, endpoint="/query-stream")
            assert stream[0]["header"]["protoSchema"] == legacy[0]["header"]["protoSchema"]
            assert [(m.ID, m.NAME) for m in _decode(stream)] == [(1, "one"), (2, "two")]
            assert [(m.ID, m.NAME) for m in _decode(stream)] == [(m.ID, m.NAME) for m in _decode(legacy)]

    asyncio.run(body())


def test_pull_query_rows_as_protobuf_messages_of_the_header_schema(tmp_path: Path) -> None:
    async def body() -> None:
        async with node_in_process(tmp_path / "data", {"auto.offset.reset": "earliest"}) as (url, _app), \
                httpx.AsyncClient(base_url=url) as c:
            await _ksql(c, "CREATE TABLE t (id INT PRIMARY KEY, name STRING, big BIGINT, d DOUBLE, "
                           "ok BOOLEAN, price DECIMAL(5, 2), ts TIMESTAMP, day DATE, tm TIME, "
                           "tags ARRAY<INT>, counts MAP<STRING, INT>, s STRUCT<a INT, b STRING>) "
                           "WITH (kafka_topic='t', value_format='JSON', partitions=2);"
                           "CREATE TABLE m AS SELECT * FROM t;")
            await _ksql(c, "INSERT INTO t (id, name, big, d, ok, price, ts, day, tm, tags, counts, s) VALUES "
                           "(1, 'one', -5000000000, 1.5, true, 12.34, '2021-03-04T05:06:07.089', "
                           "'2021-03-04', '05:06:07.089', ARRAY[3, -1], MAP('x' := 7, 'y' := 0), "
                           "STRUCT(a := -2, b := 'bee'));"
                           "INSERT INTO t (id, name) VALUES (2, 'two');")
            answer = await _pull(c, "SELECT * FROM m;", 2)
            header = answer[0]["header"]
            assert header["schema"].startswith("`ID` INTEGER KEY, `NAME` STRING, `BIG` BIGINT")
            assert header["protoSchema"] == (
                'syntax = "proto3";\n\n'
                'import "confluent/meta.proto";\n'
                'import "confluent/type/decimal.proto";\n'
                'import "google/protobuf/timestamp.proto";\n'
                'import "google/type/date.proto";\n'
                'import "google/type/timeofday.proto";\n\n'
                "message ConnectDefault1 {\n"
                "  int32 ID = 1;\n  string NAME = 2;\n  int64 BIG = 3;\n  double D = 4;\n  bool OK = 5;\n"
                '  confluent.type.Decimal PRICE = 6 [(confluent.field_meta) = { params: [{ key: "precision", '
                'value: "5" }, { key: "scale", value: "2" }] }];\n'
                "  google.protobuf.Timestamp TS = 7;\n  google.type.Date DAY = 8;\n"
                "  google.type.TimeOfDay TM = 9;\n  repeated int32 TAGS = 10;\n"
                "  repeated ConnectDefault2Entry COUNTS = 11;\n  ConnectDefault3 S = 12;\n\n"
                "  message ConnectDefault2Entry {\n    string key = 1;\n    int32 value = 2;\n  }\n\n"
                "  message ConnectDefault3 {\n    int32 A = 1;\n    string B = 2;\n  }\n}\n")
            rows = {m.ID: m for m in _decode(answer)}
            assert sorted(rows) == [1, 2]
            one = rows[1]
            assert (one.NAME, one.BIG, one.D, one.OK) == ("one", -5000000000, 1.5, True)
            assert int.from_bytes(one.PRICE.value, "big", signed=True) == 1234 and one.PRICE.scale == 2
            assert one.TS.seconds == 1614834367 and one.TS.nanos == 89_000_000
            assert (one.DAY.year, one.DAY.month, one.DAY.day) == (2021, 3, 4)
            assert (one.TM.hours, one.TM.minutes, one.TM.seconds, one.TM.nanos) == (5, 6, 7, 89_000_000)
            assert list(one.TAGS) == [3, -1]
            assert {e.key: e.value for e in one.COUNTS} == {"x": 7, "y": 0}
            assert (one.S.A, one.S.B) == (-2, "bee")
            # NULLs are left unset (proto3 has no null): a client reads the defaults.
            two = rows[2]
            assert two.NAME == "two" and not two.HasField("S") and not two.HasField("TS")
            assert two.BIG == 0 and list(two.TAGS) == []
            # The same query without the media type is the usual JSON.
            plain = await _pull(c, "SELECT id, name FROM m WHERE id = 2;", 1, accept="application/json")
            assert "protoSchema" not in plain[0]["header"] and plain[1] == {"row": {"columns": [2, "two"]}}
            # A key lookup, a projection with an expression: the same rule.
            looked = await _pull(c, "SELECT id, UCASE(name) AS up, big * 2 AS twice FROM m WHERE id = 1;", 1)
            assert "int32 ID = 1;\n  string UP = 2;\n  int64 TWICE = 3;" in looked[0]["header"]["protoSchema"]
            [m] = _decode(looked)
            assert (m.ID, m.UP, m.TWICE) == (1, "ONE", -10000000000)
            # Maps of collections and maps with other keys are entries of their own message.
            nested = await _pull(c, "SELECT id, MAP(1 := ARRAY['a', 'b']) AS m FROM m WHERE id = 1;", 1)
            [m] = _decode(nested)
            assert [(e.key, list(e.value)) for e in m.M] == [(1, ["a", "b"])]
            # A column protobuf cannot hold: the query is refused, as a statement error.
            r = await c.post("/query", json={"ksql": "SELECT id, ARRAY[ARRAY[1]] AS a FROM m WHERE id = 1;"},
                             headers={"Accept": PROTOBUF})
            assert r.status_code == 400 and r.json()["@type"] == "statement_error"
            assert "PROTOBUF cannot hold nested collections" in r.json()["message"]
    asyncio.run(body())


def test_pull_query_over_a_stream_as_protobuf_ends_with_its_final_message(tmp_path: Path) -> None:
    async def body() -> None:
        async with node_in_process(tmp_path / "data") as (url, _app), \
                httpx.AsyncClient(base_url=url) as c:
            await _ksql(c, "CREATE STREAM s (k INT KEY, v STRING) "
                           "WITH (kafka_topic='s', value_format='JSON', partitions=1);")
            empty = await _pull(c, "SELECT * FROM s;", 0)
            assert empty[0]["header"]["protoSchema"] == (
                'syntax = "proto3";\n\nmessage ConnectDefault1 {\n  int32 K = 1;\n  string V = 2;\n}\n')
            assert empty[1:] == [{"finalMessage": "Query Completed"}]
            await _ksql(c, "INSERT INTO s (k, v) VALUES (1, 'a'); INSERT INTO s (k, v) VALUES (2, 'b');")
            answer = await _pull(c, "SELECT * FROM s;", 2)
            assert sorted((m.K, m.V) for m in _decode(answer)) == [(1, "a"), (2, "b")]
            assert answer[-1] == {"finalMessage": "Query Completed"}
            limited = await _pull(c, "SELECT * FROM s LIMIT 1;", 1)
            assert len(_decode(limited)) == 1 and limited[-1] == {"finalMessage": "Limit Reached"}
    asyncio.run(body())


def test_map_entries_come_in_java_hashmap_order() -> None:
    """ksqlDB's maps are java.util.HashMaps: entries by hash bucket, then insertion order."""
    # 'D' (68) lands in bucket 4, 'Q' (81) in bucket 1 of a 16-slot table.
    assert java_hashmap_order(["D", "Q"]) == [1, 0]
    assert java_hashmap_order(["a", "b"]) == [0, 1]
    # "Aa" and "BB" have the same String.hashCode: insertion order decides.
    assert java_hashmap_order(["BB", "Aa"]) == [0, 1]
    # 13 entries: the table has grown to 32 slots, where 'q' (113) is in bucket 17, after
    # 'b'..'m' (98..109: buckets 2..13); in 16 slots it would come first (bucket 1).
    keys = [chr(c) for c in range(ord("b"), ord("m") + 1)] + ["q"]
    assert java_hashmap_order(keys) == list(range(13))
    assert java_hashmap_order(keys[:11] + ["q"])[0] == 11


def test_rows_from_other_nodes_encode_as_local_rows() -> None:
    """In a cluster, rows other nodes send arrive as JSON (``RowEncoder``'s forms): their
    protobuf bytes are those of the same row read locally."""
    from decimal import Decimal

    from streamsql.server.entities import RowEncoder
    from streamsql.server.queries import PreparedQuery, ProtobufWriter
    from streamsql.types import (BIGINT, BYTES, DATE, DOUBLE, STRING, TIME, TIMESTAMP, ArrayType,
                                 DecimalType, Field, MapType, StructType)

    types = (BIGINT, STRING, DOUBLE, DecimalType(6, 3), TIMESTAMP, DATE, TIME, BYTES,
             ArrayType(TIMESTAMP), MapType(STRING, DOUBLE), StructType((Field("D", DATE), Field("N", BIGINT))))
    query = PreparedQuery(None, None, "query_1", tuple(f"C{i}" for i in range(len(types))), types, 1)  # type: ignore[arg-type]
    writer = ProtobufWriter(query)
    row = (7, "x", 2.5, Decimal("-12.345"), 1614834367089, 18690, 18367089, b"\x00\xff",
           [0, -1000], {"b": 1.0, "a": 0.0}, {"D": -3, "N": None})
    local = writer.pull_rows(query)(row)
    remote = writer.remote_row(query, RowEncoder(types).encode(row))
    assert remote == local
    [message] = _decode([{"header": {"protoSchema": writer.messages.schema}},
                         orjson.loads(local.lstrip(b",\n"))])
    assert (message.C0, message.C3.scale, message.C4.seconds, message.C10.D.year) == (7, 3, 1614834367, 1969)

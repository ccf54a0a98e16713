"""Micro-benchmark: the JSON value codec, CPU microseconds per record, exact path vs generated.

The exact path is ``JsonCodec.decode_exact``/``encode_exact`` (orjson to dicts, then ksqlDB's
matching and coercions; a dict handed to orjson to write); the generated one is what
``codec.decode``/``codec.encode`` are (streamsql/formats/json_codegen.py: msgspec straight
between the bytes and the row tuple). Shapes:

* ``bench``: bench_stateless.py's value ``{"PAGE": "/page/12", "MS": 57}`` (STRING, BIGINT);
* ``wide``: ten columns of every primitive kind, DECIMAL included;
* ``nested``: a STRUCT, an ARRAY<STRING> and a MAP<STRING, BIGINT>;
* ``lower``: the bench shape with lower-case field names (a case-insensitive match: the
  generated code falls back to the exact path, this is the cost of a miss).

Each figure is ``time.process_time`` over decoding (encoding) N records, best of ``--rounds``,
divided by N; the rows encoded are the ones decoded. Run on a quiet core when you can
(``taskset -c 0``); the load average is printed with the figures.

    python bench/bench_json_codec.py [--records 200000] [--rounds 3]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from decimal import Decimal
from typing import Any, Callable

import orjson

from streamsql.formats.base import FormatOptions
from streamsql.formats.registry import get_format
from streamsql.schema import Column
from streamsql.types import (
    BIGINT,
    BOOLEAN,
    BYTES,
    DOUBLE,
    INTEGER,
    STRING,
    TIMESTAMP,
    ArrayType,
    DecimalType,
    Field,
    MapType,
    StructType,
)


def _bench(i: int) -> dict:
    return {"PAGE": f"/page/{i % 97}", "MS": i % 200}


def _wide(i: int) -> dict:
    return {"ID": i, "NAME": f"user-{i % 1000}", "OK": i % 2 == 0, "SCORE": i / 7,
            "PRICE": Decimal(f"{i % 1000}.{i % 100:02d}"), "TS": 1_700_000_000_000 + i,
            "QTY": i % 50, "BLOB": "YWJjZA==", "CITY": "Zürich", "NOTE": None}


def _nested(i: int) -> dict:
    return {"USER": {"ID": i, "NAME": f"u{i % 100}"}, "TAGS": ["a", "b", str(i % 7)],
            "COUNTS": {"x": i % 3, "y": i % 5}}


def _lower(i: int) -> dict:
    return {"page": f"/page/{i % 97}", "ms": i % 200}


SHAPES: dict[str, tuple[list[Column], Callable[[int], dict]]] = {
    "bench": ([Column("PAGE", STRING), Column("MS", BIGINT)], _bench),
    "wide": ([Column("ID", BIGINT), Column("NAME", STRING), Column("OK", BOOLEAN),
              Column("SCORE", DOUBLE), Column("PRICE", DecimalType(10, 2)),
              Column("TS", TIMESTAMP), Column("QTY", INTEGER), Column("BLOB", BYTES),
              Column("CITY", STRING), Column("NOTE", STRING)], _wide),
    "nested": ([Column("USER", StructType([Field("ID", BIGINT), Field("NAME", STRING)])),
                Column("TAGS", ArrayType(STRING)), Column("COUNTS", MapType(STRING, BIGINT))],
               _nested),
    "lower": ([Column("PAGE", STRING), Column("MS", BIGINT)], _lower),
}


def _cpu_us(fn: Callable[[Any], Any], items: list, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.process_time()
        for x in items:
            fn(x)
        best = min(best, time.process_time() - t0)
    return best / len(items) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    out = sys.stdout.write
    out(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
        f"{args.records} records, best of {args.rounds}; CPU us per record\n")
    out(f"{'shape':8} {'decode exact':>13} {'decode gen':>11} {'x':>5} "
        f"{'encode exact':>13} {'encode gen':>11} {'x':>5}\n")
    for name, (columns, make) in SHAPES.items():
        codec = get_format("JSON").codec(columns, FormatOptions(), False)
        payloads = [orjson.dumps(make(i), default=str) for i in range(args.records)]
        rows = [codec.decode_exact(p) for p in payloads]
        assert [codec.decode(p) for p in payloads[:1000]] == rows[:1000]
        assert [codec.encode(r) for r in rows[:1000]] == [codec.encode_exact(r)
                                                          for r in rows[:1000]]
        d0 = _cpu_us(codec.decode_exact, payloads, args.rounds)
        d1 = _cpu_us(codec.decode, payloads, args.rounds)
        e0 = _cpu_us(codec.encode_exact, rows, args.rounds)
        e1 = _cpu_us(codec.encode, rows, args.rounds)
        out(f"{name:8} {d0:13.3f} {d1:11.3f} {d0 / d1:5.2f} {e0:13.3f} {e1:11.3f} {e0 / e1:5.2f}\n")


if __name__ == "__main__":
    main()

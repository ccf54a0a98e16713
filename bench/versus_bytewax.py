"""The Bytewax contender of bench/bench_versus.py (run with bench/.venv-peers/bin/python, where
bytewax 0.21 is installed: it imports nothing of streamsql).

W1 and W2 with Bytewax's operators, one worker (``run_main``), state in memory (no recovery
configured), JSON through orjson:

* W1: ``filter_map``: ``MS > 100`` -> ``{"PAGE": PAGE.upper(), "MS": MS}``;
* W2: ``fold_window`` with an ``EventClock`` on the record timestamps and a 5-minute
  ``TumblingWindower``, keyed by the message key; written keyed by the key's bytes + the window
  start (8 bytes big-endian) with ``{"N": n, "TOTAL": total}``. Bytewax emits a window once it
  closes (its clock is per key), and the end of input closes the last ones.

The source reads the topic to its end and stops (``tail=False``): what the benchmark pre-loaded.

W3: Bytewax has no table state to join a stream to (its joins are stream-stream): not run.
Prints ``ready <wall-clock ms>`` as the dataflow starts; stays up (for the benchmark's RSS
reading) until its standard input ends or says "stop".

    python bench/versus_bytewax.py --bootstrap HOST:PORT --workload W1 --output TOPIC --run-id ID --dir DIR
"""
from __future__ import annotations

import argparse
import struct
import sys
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import bytewax.operators as op
import bytewax.operators.windowing as win
import orjson
from bytewax.connectors.kafka import KafkaSink, KafkaSinkMessage, KafkaSource
from bytewax.dataflow import Dataflow
from bytewax.testing import run_main

WINDOW = timedelta(minutes=5)
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def w1(msg: Any) -> KafkaSinkMessage | None:
    v = orjson.loads(msg.value)
    if v["MS"] > 100:
        return KafkaSinkMessage(msg.key, orjson.dumps({"PAGE": v["PAGE"].upper(), "MS": v["MS"]}))
    return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--workload", required=True)
    ap.add_argument("--output", required=True)
    ap.add_argument("--run-id", required=True)
    ap.add_argument("--dir", required=True)
    args = ap.parse_args()
    if args.workload not in ("W1", "W2"):
        sys.exit(f"bytewax: no {args.workload}")

    flow = Dataflow(f"versus_{args.run_id}")
    msgs = op.input("in", flow, KafkaSource([args.bootstrap], ["pageviews"], tail=False,
                                            batch_size=5000))
    if args.workload == "W1":
        out = op.filter_map("w1", msgs, w1)
    else:
        keyed = op.map("parse", msgs, lambda m: (m.key.decode(),
                                                 (m.timestamp[1], orjson.loads(m.value)["MS"])))
        clock = win.EventClock(
            lambda v: datetime.fromtimestamp(v[0] / 1000, tz=timezone.utc),
            wait_for_system_duration=timedelta(0))
        windows = win.fold_window("w2", keyed, clock, win.TumblingWindower(WINDOW, EPOCH),
                                  lambda: (0, 0), lambda acc, v: (acc[0] + 1, acc[1] + v[1]),
                                  lambda a, b: (a[0] + b[0], a[1] + b[1]))
        # Window ids count windows from EPOCH: the start is id * length.
        out = op.map("fmt", windows.down, lambda kv: KafkaSinkMessage(
            kv[0].encode() + struct.pack(">q", kv[1][0] * int(WINDOW.total_seconds() * 1000)),
            orjson.dumps({"N": kv[1][1][0], "TOTAL": kv[1][1][1]})))
    op.output("out", out, KafkaSink([args.bootstrap], args.output))
    sys.stdout.write(f"ready {int(time.time() * 1000)}\n")
    sys.stdout.flush()
    run_main(flow)
    for line in sys.stdin:
        if line.strip() == "stop":
            break


if __name__ == "__main__":
    main()

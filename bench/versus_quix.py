"""The Quix Streams contender of bench/bench_versus.py (run with bench/.venv-peers/bin/python,
where quixstreams 3.28 is installed: it imports nothing of streamsql).

The benchmark's three workloads with Quix Streams' DataFrame API and its defaults
(RocksDB state, commit_interval 5 s, at-least-once):

* W1: ``filter(MS > 100)`` then ``{"PAGE": PAGE.upper(), "MS": MS}``;
* W2: ``tumbling_window(5 min).agg(n=Count(), total=Sum("MS")).current()``, written keyed by the
  key's bytes + the window start (8 bytes big-endian) with ``{"N": n, "TOTAL": total}``;
* W3: ``join_asof`` of the stream with the table topic's dataframe, by key (its stream-table
  join: the latest table row at or before the record's time).

Prints ``ready <wall-clock ms>`` once its partitions are assigned; stops when its standard
input ends or says "stop".

    python bench/versus_quix.py --bootstrap HOST:PORT --workload W1 --output TOPIC --run-id ID --dir DIR
"""
from __future__ import annotations

import argparse
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

from quixstreams import Application
from quixstreams.dataframe.windows import aggregations as agg
from quixstreams.models.serializers.json import JSONSerializer
from quixstreams.utils.json import dumps

WINDOW_MS = 5 * 60_000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--workload", required=True)
    ap.add_argument("--output", required=True)
    ap.add_argument("--run-id", required=True)
    ap.add_argument("--dir", required=True)
    args = ap.parse_args()

    app = Application(broker_address=args.bootstrap, consumer_group=f"quix-{args.run_id}",
                      auto_offset_reset="earliest", state_dir=str(Path(args.dir) / "state"),
                      loglevel="WARNING")
    said = threading.Event()
    on_assign = app._on_assign

    def assigned(consumer: Any, partitions: Any) -> None:
        # Quix has no public hook for its assignment: the benchmark's clock starts here.
        on_assign(consumer, partitions)
        if partitions and not said.is_set():
            said.set()
            sys.stdout.write(f"ready {int(time.time() * 1000)}\n")
            sys.stdout.flush()

    app._on_assign = assigned  # type: ignore[method-assign]
    source = app.topic("pageviews", key_deserializer="bytes", value_deserializer="json")
    sdf = app.dataframe(source)
    if args.workload == "W1":
        out = app.topic(args.output, key_serializer="bytes", value_serializer="json")
        sdf = sdf.filter(lambda v: v["MS"] > 100)
        sdf = sdf.apply(lambda v: {"PAGE": v["PAGE"].upper(), "MS": v["MS"]})
        sdf.to_topic(out)
    elif args.workload == "W2":
        # The value is (output key, output value): the key carries the window start.
        out = app.topic(args.output, key_serializer="bytes",
                        value_serializer=JSONSerializer(dumps=lambda pair: dumps(pair[1])))
        sdf = sdf.tumbling_window(WINDOW_MS).agg(n=agg.Count(), total=agg.Sum("MS")).current()
        sdf = sdf.apply(lambda v, key, ts, headers: (key + struct.pack(">q", v["start"]),
                                                     {"N": v["n"], "TOTAL": v["total"]}),
                        metadata=True)
        sdf.to_topic(out, key=lambda pair: pair[0])
    else:
        out = app.topic(args.output, key_serializer="bytes", value_serializer="json")
        users = app.dataframe(app.topic("users", key_deserializer="bytes",
                                        value_deserializer="json"))
        sdf = sdf.join_asof(users, how="inner")
        sdf.to_topic(out)

    def stop_on_stdin() -> None:
        for line in sys.stdin:
            if line.strip() == "stop":
                break
        app.stop()

    threading.Thread(target=stop_on_stdin, daemon=True).start()
    app.run()


if __name__ == "__main__":
    main()

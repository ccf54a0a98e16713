"""``streamsql server`` and signals: SIGUSR1 logs what every task of the node is waiting for
(for a node that seems stuck), and the node keeps serving; SIGTERM stops it cleanly."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

pytestmark = pytest.mark.timeout(120)


def test_sigusr1_logs_each_tasks_await_chain_and_the_node_keeps_serving(tmp_path):
    log_path = tmp_path / "node.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "streamsql", "server", "--listeners",
                                 "http://127.0.0.1:0", "--data-dir", str(tmp_path / "data")],
                                stdout=subprocess.PIPE, stderr=log_file)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().decode().rsplit(" ", 1)[1].strip()

        def ksql(sql: str) -> list:
            req = urllib.request.Request(url + "/ksql", json.dumps({"ksql": sql}).encode(),
                                         {"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as resp:
                return json.loads(resp.read())

        ksql("CREATE STREAM clicks (user STRING KEY, n INT) WITH (kafka_topic='clicks', "
             "partitions=1, value_format='JSON');"
             "CREATE STREAM big AS SELECT * FROM clicks WHERE n > 10;")
        proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 20
        stage = []
        while not stage and time.monotonic() < deadline:
            time.sleep(0.2)
            stage = [line for line in log_path.read_text().splitlines()
                     if "task stage-CSAS_BIG" in line]
        # The query's stage, waiting in its consumer's poll, with the chain of awaits.
        assert stage and "_consume (query.py:" in stage[0] and "poll (" in stage[0]
        assert ksql("SHOW QUERIES;")[0]["queries"][0]["id"].startswith("CSAS_BIG")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0

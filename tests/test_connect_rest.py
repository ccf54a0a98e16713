"""Kafka Connect's REST API served by ``streamsql server``, over real sockets, as a user drives
it: ``curl`` for Connect's walkthrough on the Connect listener (``--connect-listeners``),
httpx for the rest. A file source created over REST publishes into its topic (read back with
pull queries over the ksqlDB API), pauses, resumes and restarts; failing connectors answer
Connect's status and error bodies; a REST-made connector is the same as a SQL one (SHOW
CONNECTORS) and runs again after the node restarts; both listeners need the credentials."""
from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from streamsql.server.connect_api import CONNECT_VERSION
from streamsql.server.testing import NodeProcess
from tests.test_connect_file import NODE_ARGS, append, eventually, ok, query

pytestmark = pytest.mark.timeout(240)

CONNECT_ARGS = (*NODE_ARGS, "--connect-listeners", "http://127.0.0.1:0")
STRING = "org.apache.kafka.connect.storage.StringConverter"


def curl(*args: str) -> tuple[int, Any]:
    """``curl`` as a user types it; the status and the JSON body (None when empty)."""
    out = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", *args], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    body, _, code = out.rpartition("\n")
    try:
        return int(code), json.loads(body) if body.strip() else None
    except ValueError:  # not JSON (a 401 of the Connect listener is text, as Connect's)
        return int(code), body


def curl_json(method: str, url: str, body: Any) -> tuple[int, Any]:
    return curl("-X", method, "-H", "Content-Type: application/json", url, "-d", json.dumps(body))


def source_config(path: Path, topic: str) -> dict[str, str]:
    return {"connector.class": "FileStreamSource", "file": str(path), "topic": topic, "value.converter": STRING}


def rows(url: str, stream: str) -> list[str]:
    return [r[0] for r in query(url, f"SELECT line FROM {stream};")]


def states(connect: str, name: str) -> tuple[str, list[str]]:
    status = httpx.get(f"{connect}/connectors/{name}/status").json()
    return status["connector"]["state"], [t["state"] for t in status["tasks"]]


def test_the_curl_walkthrough_on_connects_port(tmp_path):
    source = tmp_path / "test.txt"
    append(source, "first message", "second message")
    with NodeProcess(tmp_path / "data", CONNECT_ARGS) as node:
        connect = node.connect_url
        assert connect and connect != node.url
        status, info = curl(connect + "/")
        assert status == 200 and set(info) == {"version", "commit", "kafka_cluster_id"}
        assert info["version"].startswith("3.")
        assert curl(connect + "/health") == (200, {
            "status": "healthy", "message": "Worker has completed startup and is ready to handle requests."})
        assert curl(node.url + "/health")[0] == 404  # Connect's root paths: on its own listener only

        status, plugins = curl(connect + "/connector-plugins")
        assert status == 200
        classes = [(p["class"], p["type"]) for p in plugins]
        assert ("org.apache.kafka.connect.file.FileStreamSourceConnector", "source") in classes
        assert ("org.apache.kafka.connect.file.FileStreamSinkConnector", "sink") in classes
        assert [t for _, t in classes] == sorted(t for _, t in classes)  # sinks, then sources, as Connect
        _, everything = curl(connect + "/connector-plugins?connectorsOnly=false")
        assert {"class": "org.apache.kafka.connect.storage.StringConverter", "type": "converter",
                "version": info["version"]} in everything

        status, created = curl_json("POST", connect + "/connectors",
                                    {"name": "local-file-source", "config": source_config(source, "connect-test")})
        assert status == 201
        assert created == {"name": "local-file-source",
                           "config": {**source_config(source, "connect-test"), "name": "local-file-source"},
                           "tasks": [{"connector": "local-file-source", "task": 0}], "type": "source"}
        assert curl_json("POST", connect + "/connectors",
                         {"name": "local-file-source", "config": source_config(source, "connect-test")}) == \
            (409, {"error_code": 409, "message": "Connector local-file-source already exists"})
        assert curl(connect + "/connectors") == (200, ["local-file-source"])

        # The records are in the topic, for the ksqlDB API on the other listener.
        ok(node.url, "CREATE STREAM lines (line STRING) WITH (kafka_topic='connect-test', value_format='KAFKA', "
                     "partitions=1);")
        eventually(lambda: rows(node.url, "lines") == ["first message", "second message"], what="the file's lines")
        append(source, "third message")
        eventually(lambda: rows(node.url, "lines")[-1:] == ["third message"], what="an appended line")
        eventually(lambda: states(connect, "local-file-source") == ("RUNNING", ["RUNNING"]))
        status, body = curl(connect + "/connectors/local-file-source/status")
        assert status == 200 and body["name"] == "local-file-source" and body["type"] == "source"
        assert body["tasks"][0]["id"] == 0 and body["tasks"][0]["worker_id"] == body["connector"]["worker_id"]

        # Paused: nothing new is published until it resumes.
        assert curl("-X", "PUT", connect + "/connectors/local-file-source/pause") == (202, None)
        eventually(lambda: states(connect, "local-file-source") == ("PAUSED", ["PAUSED"]), what="paused")
        append(source, "while paused")
        time.sleep(2.5)
        assert rows(node.url, "lines") == ["first message", "second message", "third message"]
        assert curl("-X", "PUT", connect + "/connectors/local-file-source/resume") == (202, None)
        eventually(lambda: rows(node.url, "lines")[-1:] == ["while paused"], what="published once resumed")
        eventually(lambda: states(connect, "local-file-source") == ("RUNNING", ["RUNNING"]))

        # Restarts: the connector alone (204, no body), or with its tasks (202 and the status).
        assert curl("-X", "POST", connect + "/connectors/local-file-source/restart") == (204, None)
        status, body = curl("-X", "POST", connect + "/connectors/local-file-source/restart?includeTasks=true")
        assert status == 202 and body["name"] == "local-file-source" and [t["id"] for t in body["tasks"]] == [0]
        assert curl("-X", "POST", connect + "/connectors/local-file-source/tasks/0/restart") == (204, None)
        eventually(lambda: states(connect, "local-file-source") == ("RUNNING", ["RUNNING"]))
        append(source, "after the restarts")
        eventually(lambda: rows(node.url, "lines")[-1:] == ["after the restarts"])
        assert rows(node.url, "lines") == ["first message", "second message", "third message", "while paused",
                                           "after the restarts"]  # nothing twice

        # Offsets (Connect 3.5): the source's, as it stored them; a sink's, its group's commits.
        eventually(lambda: curl(connect + "/connectors/local-file-source/offsets") == (200, {"offsets": [
            {"partition": {"filename": str(source)}, "offset": {"position": source.stat().st_size}}]}))
        sink_file = tmp_path / "sink.txt"
        assert curl_json("POST", connect + "/connectors", {"name": "sink", "config": {
            "connector.class": "FileStreamSink", "topics": "connect-test", "file": str(sink_file),
            "value.converter": STRING}})[0] == 201
        eventually(lambda: sink_file.exists() and len(sink_file.read_text().splitlines()) == 5)
        eventually(lambda: curl(connect + "/connectors/sink/offsets") == (200, {"offsets": [
            {"partition": {"kafka_topic": "connect-test", "kafka_partition": 0}, "offset": {"kafka_offset": 5}}]}))
        assert curl("-X", "DELETE", connect + "/connectors/sink") == (204, None)
        assert curl(connect + "/connectors/sink/offsets") == \
            (404, {"error_code": 404, "message": "Connector sink not found"})

        status, tasks = curl(connect + "/connectors/local-file-source/tasks")
        assert status == 200 and [t["id"] for t in tasks] == [{"connector": "local-file-source", "task": 0}]
        assert tasks[0]["config"]["file"] == str(source)
        status, task = curl(connect + "/connectors/local-file-source/tasks/0/status")
        assert status == 200 and task["id"] == 0 and task["state"] == "RUNNING"
        assert curl(connect + "/connectors/local-file-source/tasks/5/status") == \
            (404, {"error_code": 404, "message": "No status found for task local-file-source-5"})

        assert curl(connect + "/connectors/local-file-source/topics") == \
            (200, {"local-file-source": {"topics": ["connect-test"]}})
        assert curl("-X", "PUT", connect + "/connectors/local-file-source/topics/reset") == (202, None)
        assert curl(connect + "/connectors/local-file-source/topics") == (200, {"local-file-source": {"topics": []}})

        # PUT config: an update (200), then a new connector (201); GET config.
        new_config = {**source_config(source, "connect-test"), "batch.size": "10"}
        status, body = curl_json("PUT", connect + "/connectors/local-file-source/config", new_config)
        assert status == 200 and body["config"]["batch.size"] == "10"
        assert curl(connect + "/connectors/local-file-source/config") == \
            (200, {**new_config, "name": "local-file-source"})
        status, body = curl_json("PATCH", connect + "/connectors/local-file-source/config",
                                 {"batch.size": None, "tasks.max": 1})
        assert status == 200 and body["config"] == {**source_config(source, "connect-test"), "tasks.max": "1",
                                                    "name": "local-file-source"}
        other = tmp_path / "other.txt"
        append(other, "other line")
        status, body = curl_json("PUT", connect + "/connectors/other/config", source_config(other, "other"))
        assert status == 201 and body["name"] == "other"
        assert curl_json("PUT", connect + "/connectors/other/config",
                         {**source_config(other, "other"), "name": "else"}) == \
            (400, {"error_code": 400, "message": "Connector name configuration (else) doesn't match connector "
                                                 "name in the URL (other)"})

        status, expanded = curl(connect + "/connectors?expand=status&expand=info")
        assert status == 200 and sorted(expanded) == ["local-file-source", "other"]
        assert set(expanded["other"]) == {"status", "info"}
        assert expanded["other"]["info"]["config"]["file"] == str(other)
        assert expanded["other"]["status"]["connector"]["state"] in ("RUNNING", "UNASSIGNED")
        _, only_status = curl(connect + "/connectors?expand=status")
        assert set(only_status["other"]) == {"status"}

        # Stopped: no tasks, config kept; resumed: running again.
        assert curl("-X", "PUT", connect + "/connectors/other/stop") == (204, None)
        assert states(connect, "other") == ("STOPPED", [])
        assert curl(connect + "/connectors/other/config")[0] == 200
        assert curl("-X", "PUT", connect + "/connectors/other/resume") == (202, None)
        eventually(lambda: states(connect, "other") == ("RUNNING", ["RUNNING"]), what="running after stop")

        assert curl("-X", "DELETE", connect + "/connectors/other") == (204, None)
        assert curl(connect + "/connectors/other") == (404, {"error_code": 404, "message": "Connector other not found"})
        assert curl("-X", "DELETE", connect + "/connectors/other") == \
            (404, {"error_code": 404, "message": "Connector other not found"})
        assert curl("-X", "DELETE", connect + "/connectors") == \
            (405, {"error_code": 405, "message": "HTTP 405 Method Not Allowed"})
        assert curl(connect + "/nothing/here") == (404, {"error_code": 404, "message": "HTTP 404 Not Found"})

        # The same connectors for SQL.
        listed = ok(node.url, "SHOW CONNECTORS;")[0]["connectors"]
        assert [(c["name"], c["type"], c["className"]) for c in listed] == \
            [("local-file-source", "source", "FileStreamSource")]


def test_the_ksqldb_listener_serves_the_connectors_paths_with_names_url_decoded(tmp_path):
    source = tmp_path / "in.txt"
    append(source, "x")
    with NodeProcess(tmp_path / "data", NODE_ARGS) as node, httpx.Client(base_url=node.url, timeout=60) as http:
        name = "my conn/1"
        response = http.post("/connectors", json={"name": name, "config": source_config(source, "t")})
        assert response.status_code == 201
        assert response.headers["location"] == "/connectors/my%20conn%2F1"
        assert http.get("/connectors").json() == [name]
        assert http.get("/connectors/my%20conn%2F1").json()["name"] == name
        assert http.get("/connectors/my%20conn%2F1/config").json()["file"] == str(source)
        eventually(lambda: http.get("/connectors/my%20conn%2F1/status").json()["tasks"][0]["state"] == "RUNNING")
        # "/" is ksqlDB's listener's (the web console), not Connect's server info.
        root = http.get("/")
        assert root.headers["content-type"].startswith("text/html") and "kafka_cluster_id" not in root.text
        # A connector's topics are those it has written to (Connect's active topics), so the
        # first line may not be published yet when its task says RUNNING.
        described = eventually(lambda: (d := ok(node.url, "DESCRIBE CONNECTOR `my conn/1`;")[0])["topics"] and d,
                               what="the connector's topic")
        assert described["status"]["name"] == name and described["topics"] == ["t"]
        ok(node.url, "DROP CONNECTOR `my conn/1`;")
        assert http.get("/connectors").json() == []
        assert http.get("/connectors/my%20conn%2F1").status_code == 404


def test_failing_connectors_answer_connects_status_and_errors(tmp_path):
    with NodeProcess(tmp_path / "data", CONNECT_ARGS) as node, \
            httpx.Client(base_url=node.connect_url, timeout=60) as http:
        # A missing "file": the task fails, and says why in Connect's status body.
        response = http.post("/connectors", json={"name": "no-file", "config": {
            "connector.class": "FileStreamSource", "topic": "t"}})
        assert response.status_code == 201

        def failed() -> dict[str, Any] | None:
            body = http.get("/connectors/no-file/status").json()
            return body if body["tasks"] and body["tasks"][0]["state"] == "FAILED" else None

        status = eventually(failed, what="the task FAILED")
        assert status["connector"]["state"] == "RUNNING"
        assert 'Missing required configuration "file"' in status["tasks"][0]["trace"]
        task = http.get("/connectors/no-file/tasks/0/status").json()
        assert task["state"] == "FAILED" and 'configuration "file"' in task["trace"]
        restarted = http.post("/connectors/no-file/restart", params={"includeTasks": "true", "onlyFailed": "true"})
        assert restarted.status_code == 202 and restarted.json()["name"] == "no-file"
        assert restarted.json()["tasks"][0]["state"] != "FAILED"  # restarted: it fails again next
        eventually(failed, what="FAILED again after the restart")

        # A class nobody has: Connect's 500 and its words, and nothing created.
        response = http.post("/connectors", json={"name": "bad", "config": {"connector.class": "NoSuchConnector"}})
        assert response.status_code == 500 and response.json()["error_code"] == 500
        assert response.json()["message"].startswith("Failed to find any class that implements Connector and which "
                                                     "name matches NoSuchConnector, available connectors are: ")
        # A missing required key: Connect's 400 with the list of errors.
        response = http.post("/connectors", json={"name": "bad", "config": {"connector.class": "FileStreamSource"}})
        assert response.status_code == 400
        assert response.json() == {"error_code": 400, "message": (
            "Connector configuration is invalid and contains the following 1 error(s):\n"
            "Missing required configuration \"topic\" which has no default value.\n"
            "You can also find the above list of errors at the endpoint "
            "`/connector-plugins/{connectorType}/config/validate`")}
        assert http.get("/connectors").json() == ["no-file"]

        # Bodies Connect refuses.
        bad_json = http.post("/connectors", content=b"{bad", headers={"content-type": "application/json"})
        assert bad_json.status_code == 500 and bad_json.json()["error_code"] == 500
        assert http.post("/connectors", json={"name": "x"}).status_code == 400
        assert http.post("/connectors", content=b'{"name": "x", "config": {}}',
                         headers={"content-type": "text/plain"}).json() == \
            {"error_code": 415, "message": "HTTP 415 Unsupported Media Type"}
        assert http.put("/connectors/x/config", content=b"", headers={"content-type": "application/json"}).json() == \
            {"error_code": 400, "message": "HTTP 400 Bad Request"}

        # Unknown connectors, in each endpoint's words.
        for method, path, message in (
                ("GET", "/connectors/nope", "Connector nope not found"),
                ("GET", "/connectors/nope/config", "Connector nope not found"),
                ("GET", "/connectors/nope/status", "No status found for connector nope"),
                ("GET", "/connectors/nope/tasks", "Connector nope not found"),
                ("GET", "/connectors/nope/tasks/0/status", "No status found for task nope-0"),
                ("POST", "/connectors/nope/restart", "Unknown connector: nope"),
                ("POST", "/connectors/nope/tasks/0/restart", "Unknown connector: nope"),
                ("PUT", "/connectors/nope/pause", "Unknown connector nope"),
                ("PUT", "/connectors/nope/resume", "Unknown connector nope"),
                ("PUT", "/connectors/nope/stop", "Unknown connector nope"),
                ("DELETE", "/connectors/nope", "Connector nope not found")):
            response = http.request(method, path)
            assert (response.status_code, response.json()) == (404, {"error_code": 404, "message": message}), path

        # Validation: Connect's ConfigInfos.
        response = http.put("/connector-plugins/FileStreamSourceConnector/config/validate",
                            json={"connector.class": "FileStreamSource", "name": "v", "file": "/x"})
        assert response.status_code == 200
        infos = response.json()
        assert (infos["name"], infos["error_count"], infos["groups"]) == \
            ("FileStreamSource", 1, ["Common", "Error Handling"])
        by_name = {c["definition"]["name"]: c for c in infos["configs"]}
        assert by_name["topic"]["value"] == {"name": "topic", "value": None, "recommended_values": [],
                                             "errors": ['Missing required configuration "topic" which has no '
                                                        'default value.'], "visible": True}
        assert by_name["topic"]["definition"]["required"] is True
        assert by_name["file"]["value"]["value"] == "/x" and by_name["file"]["value"]["errors"] == []
        assert by_name["tasks.max"]["value"]["value"] == "1"
        valid = http.put("/connector-plugins/FileStreamSource/config/validate", json={
            "connector.class": "org.apache.kafka.connect.file.FileStreamSourceConnector", "name": "v", "topic": "t",
            "tasks.max": 2}).json()
        assert valid["error_count"] == 0
        sink = http.put("/connector-plugins/FileStreamSink/config/validate",
                        json={"connector.class": "FileStreamSink", "name": "s"}).json()
        errors = {c["definition"]["name"]: c["value"]["errors"] for c in sink["configs"]}
        assert errors["topics"] == errors["topics.regex"] == ["Must configure one of topics or topics.regex"]
        assert http.put("/connector-plugins/FileStreamSink/config/validate",
                        json={"connector.class": "FileStreamSource"}).json() == \
            {"error_code": 400, "message": "Included connector type FileStreamSource does not match request type "
                                           "FileStreamSink"}
        assert http.get("/connector-plugins/FileStreamSink/config").json()[0]["name"] == "file"


def test_a_connector_made_over_rest_runs_again_after_a_restart(tmp_path):
    source = tmp_path / "in.txt"
    append(source, "one", "two")
    data = tmp_path / "data"
    with NodeProcess(data, CONNECT_ARGS) as node:
        assert curl_json("POST", node.connect_url + "/connectors",
                         {"name": "kept", "config": source_config(source, "kept")})[0] == 201
        ok(node.url, "CREATE STREAM kept_lines (line STRING) WITH (kafka_topic='kept', value_format='KAFKA', "
                     "partitions=1);")
        eventually(lambda: rows(node.url, "kept_lines") == ["one", "two"])
        # Created paused (Connect's initial_state): nothing published, then or after the restart.
        assert curl_json("POST", node.connect_url + "/connectors", {
            "name": "paused", "config": source_config(source, "paused"), "initial_state": "PAUSED"})[0] == 201
        ok(node.url, "CREATE STREAM paused_lines (line STRING) WITH (kafka_topic='paused', value_format='KAFKA', "
                     "partitions=1);")
        eventually(lambda: states(node.connect_url, "paused") == ("PAUSED", ["PAUSED"]))
        assert curl_json("POST", node.connect_url + "/connectors", {
            "name": "bad-state", "config": source_config(source, "x"), "initial_state": "ASLEEP"})[0] == 400
        assert curl_json("POST", node.connect_url + "/connectors", {
            "name": "stopped", "config": source_config(source, "stopped"), "initial_state": "stopped"})[0] == 201
        assert states(node.connect_url, "stopped") == ("STOPPED", [])
    append(source, "three")  # while the node is down
    with NodeProcess(data, CONNECT_ARGS) as node:
        listed = ok(node.url, "SHOW CONNECTORS;")[0]["connectors"]
        assert sorted(c["name"] for c in listed) == ["kept", "paused", "stopped"]
        assert states(node.connect_url, "stopped") == ("STOPPED", [])
        eventually(lambda: states(node.connect_url, "kept") == ("RUNNING", ["RUNNING"]))
        eventually(lambda: states(node.connect_url, "paused") == ("PAUSED", ["PAUSED"]))
        eventually(lambda: rows(node.url, "kept_lines") == ["one", "two", "three"], what="after the last line")
        time.sleep(1)
        assert rows(node.url, "kept_lines") == ["one", "two", "three"]  # nothing twice
        assert rows(node.url, "paused_lines") == []
        assert curl("-X", "PUT", node.connect_url + "/connectors/paused/resume")[0] == 202
        eventually(lambda: rows(node.url, "paused_lines") == ["one", "two", "three"], what="published once resumed")


def test_both_listeners_need_the_credentials(tmp_path):
    # (the Connect listener on every interface: requests come to it on the loopback address)
    args = (*NODE_ARGS, "--connect-listeners", "http://0.0.0.0:0", "--basic-auth", "fred:secret")
    with NodeProcess(tmp_path / "data", args) as node:
        connect = node.connect_url.replace("0.0.0.0", "127.0.0.1")
        for base in (node.url, connect):
            assert curl(base + "/connectors")[0] == 401
            assert curl("-u", "fred:wrong", base + "/connectors")[0] == 401
            assert curl("-u", "fred:secret", base + "/connectors") == (200, [])
            assert curl("-u", "fred:wrong", "-X", "POST", "-H", "Content-Type: application/json",
                        base + "/connectors", "-d", '{"name": "x", "config": {}}')[0] == 401
        assert curl(connect + "/")[0] == 401
        status, root = curl("-u", "fred:secret", connect + "/")
        assert (status, root["version"], root["kafka_cluster_id"]) == (200, CONNECT_VERSION, "streamsql-embedded")
        # ksqlDB's listener: the web console, not Connect's root
        status, root = curl("-u", "fred:secret", node.url + "/")
        assert status == 200 and "<!doctype html>" in root.lower()


def test_requests_about_a_connector_another_node_runs_are_forwarded_to_it(kafka, cluster, tmp_path):
    """On Kafka, each connector runs on one node; a restart or the task list asked of another
    node is forwarded to it, as Connect's workers do."""
    a = cluster("node-a", **{"connect.offset.flush.interval.ms": "300"})
    b = cluster("node-b", **{"connect.offset.flush.interval.ms": "300"})
    topic = f"in_{cluster.service}"
    a.ksql(f"CREATE STREAM s_{cluster.service} (v STRING) WITH (kafka_topic='{topic}', value_format='KAFKA', "
           "partitions=1);")
    # Sinks into directories that do not exist yet: their tasks fail until the directory is made.
    names = [f"sink{i}" for i in range(8)]
    with httpx.Client(timeout=60) as http:
        for n in names:
            config = {"connector.class": "FileStreamSink", "topics": topic, "file": str(tmp_path / n / "out.txt")}
            assert http.post(a.url + "/connectors", json={"name": n, "config": config}).status_code == 201

        def owners() -> dict[str, str] | None:
            found = {}
            for n in names:
                status = http.get(f"{a.url}/connectors/{n}/status").json()
                if [t["state"] for t in status["tasks"]] != ["FAILED"]:
                    return None
                found[n] = status["tasks"][0]["worker_id"]
            # (once the workers' group has spread the connectors over both nodes)
            return found if set(found.values()) == {"node-a", "node-b"} else None

        placed = eventually(owners, timeout=120, what="every sink's task FAILED, on both nodes")
        nodes = {"node-a": a, "node-b": b}
        # The node running more of them (at least 4 of 8) runs them; the other one is asked.
        runner = max(nodes, key=lambda node: sum(owner == node for owner in placed.values()))
        asked = nodes["node-b" if runner == "node-a" else "node-a"].url
        first, second = [n for n in names if placed[n] == runner][:2]
        for n in names:
            (tmp_path / n).mkdir()
        # Asked of one node, done by the other: the tasks run once restarted. (While the
        # workers' group still moves tasks, the answer is Connect's 409: asked again.)
        for _ in range(60):
            answer = http.post(f"{asked}/connectors/{first}/tasks/0/restart")
            if answer.status_code != 409:
                break
            time.sleep(0.5)
        assert answer.status_code == 204, answer.text
        restarted = http.post(f"{asked}/connectors/{second}/restart",
                              params={"includeTasks": "true", "onlyFailed": "true"})
        assert restarted.status_code == 202 and restarted.json()["name"] == second
        for n in (first, second):
            eventually(lambda n=n: http.get(f"{nodes[runner].url}/connectors/{n}/status").json()["tasks"][0]["state"]
                       == "RUNNING", timeout=60, what=f"{n} running after a restart asked of the other node")
        tasks = http.get(f"{asked}/connectors/{first}/tasks").json()
        assert [t["id"] for t in tasks] == [{"connector": first, "task": 0}]
        assert tasks[0]["config"]["file"] == str(tmp_path / first / "out.txt")


def test_the_readmes_curl_walkthrough_runs_as_written(tmp_path):
    """Every ``curl`` of the README's REST API walkthrough, run by a shell against a node, with
    the status its comment says (any 2xx where it says none)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("### Kafka Connect's REST API"):]
    block = section[section.index("```sh\n") + len("```sh\n"):]
    block = block[:block.index("```")]
    commands: list[str] = []
    for line in block.splitlines():
        if line.startswith("curl "):
            commands.append(line)
        elif commands:
            commands[-1] += "\n" + line  # a command's continuation (or its JSON body)
    assert len(commands) >= 18
    source = tmp_path / "test.txt"
    append(source, "first message")
    with NodeProcess(tmp_path / "data", (*NODE_ARGS, "--connect-listeners", "http://127.0.0.1:0")) as node:
        address = node.connect_url.split("://", 1)[1]
        script = 'curl() { command curl -w "\\n<<%{http_code}>>\\n" "$@"; }\n' + "\n".join(commands)
        script = script.replace("localhost:8083", address).replace("/tmp/test.txt", str(source))
        out = subprocess.run(["bash", "-e", "-c", script], capture_output=True, text=True, timeout=120).stdout
    codes = [int(c) for c in re.findall(r"<<(\d{3})>>", out)]
    assert len(codes) == len(commands), out
    for command, code in zip(commands, codes):
        said = re.search(r"#\s*(\d{3})\b", command)
        assert code == int(said.group(1)) if said else 200 <= code < 300, (command, code, out)

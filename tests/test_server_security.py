"""Basic authentication and TLS: a server process on https with users, reached over
HTTP/1.1 and HTTP/2 (ALPN) with the test's own certificate authority, and the shell
connecting with --user/--password/--ca-file. No endpoint answers without credentials.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import subprocess
import sys

import httpx
import pytest

from streamsql.server.testing import NodeProcess

x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

pytestmark = pytest.mark.timeout(60)


def make_certificates(directory) -> tuple[str, str, str]:
    """A CA and a server certificate for 127.0.0.1 signed by it: (ca.pem, cert.pem, key.pem)."""
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "streamsql test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = (directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return tuple(str(p) for p in paths)  # type: ignore[return-value]


@pytest.fixture(scope="module")
def secure_node(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("secure")
    ca, cert, key = make_certificates(tmp)
    users = tmp / "users.txt"
    users.write_text("# Jetty-style password file, as ksqlDB's JAAS setup uses\nfred: letmein,admin\n")
    args = ["--ssl-certfile", cert, "--ssl-keyfile", key, "--basic-auth-file", str(users),
            "--basic-auth", "alice:s3cret"]
    with NodeProcess(tmp / "data", args, scheme="https") as node:
        yield node, ca


def test_every_endpoint_needs_credentials(secure_node):
    node, ca = secure_node
    assert node.url.startswith("https://127.0.0.1:")
    verify = ssl.create_default_context(cafile=ca)
    anonymous = httpx.Client(base_url=node.url, verify=verify)
    wrong = httpx.Client(base_url=node.url, verify=verify, auth=("fred", "wrong"))
    for client in (anonymous, wrong):
        for method, path in [("GET", "/info"), ("GET", "/healthcheck"), ("GET", "/clusterStatus"),
                             ("GET", "/status/x"), ("POST", "/ksql"), ("POST", "/query"),
                             ("POST", "/query-stream"), ("POST", "/close-query"), ("POST", "/inserts-stream"),
                             ("GET", "/schema-registry/subjects"), ("GET", "/no-such-endpoint")]:
            r = client.request(method, path, json={"ksql": "SHOW STREAMS;"})
            assert r.status_code == 401, (method, path)
            assert r.json() == {"@type": "generic_error", "error_code": 40100, "message": "Unauthorized"}
            assert r.headers["www-authenticate"].startswith("Basic")

    for user, password in (("fred", "letmein"), ("alice", "s3cret")):
        with httpx.Client(base_url=node.url, verify=verify, auth=(user, password)) as c:
            assert c.get("/info").json()["KsqlServerInfo"]["serverStatus"] == "RUNNING"
            assert c.post("/ksql", json={"ksql": "SHOW STREAMS;"}).status_code == 200
    with httpx.Client(base_url=node.url, verify=verify, auth=("fred", "letmein"), http1=False, http2=True) as h2:
        r = h2.get("/info")
        assert r.http_version == "HTTP/2" and r.status_code == 200  # negotiated with ALPN
    # A client that does not trust the server's CA refuses it.
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{node.url}/info", auth=("fred", "letmein"))


def test_shell_with_credentials_and_ca(secure_node, tmp_path):
    node, ca = secure_node
    base = [sys.executable, "-m", "streamsql", "--server", node.url, "--ca-file", ca]
    ok = subprocess.run([*base, "--user", "fred", "--password", "letmein", "-e",
                         "CREATE STREAM s (id INT KEY, v STRING) WITH (kafka_topic='s', value_format='JSON', "
                         "partitions=1); INSERT INTO s (id, v) VALUES (1, 'one'); "
                         "SET 'auto.offset.reset'='earliest'; SELECT * FROM s EMIT CHANGES LIMIT 1;"],
                        capture_output=True, text=True, timeout=60, env={"HOME": str(tmp_path), "PATH": ""})
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "Stream created" in ok.stdout and "|one" in ok.stdout and "Limit Reached" in ok.stdout

    refused = subprocess.run([*base, "-e", "SHOW STREAMS;"], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "Unauthorized" in refused.stderr
    from_env = subprocess.run([*base, "--user", "alice", "-e", "SHOW STREAMS;"], capture_output=True, text=True,
                              timeout=60, env={"STREAMSQL_PASSWORD": "s3cret", "HOME": str(tmp_path)})
    assert from_env.returncode == 0 and " S " in from_env.stdout

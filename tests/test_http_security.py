"""HTTPS and the bearer token on real `raftfsm node` processes: a request without the token
gets 401, followers forward over HTTPS with the token, `raftfsm kv` and `raftfsm status`
speak both, and a node that exposes its API to the network without either warns.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.cluster import LocalCluster, http_json

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "tok-3f9a1c7e5b2d4a6c8e0f1a3b5c7d9e1f"


def raftfsm(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "runtime.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("secure"), 3, fsync=False, http_tls=True,
                      http_token=TOKEN) as cluster:
        cluster.wait_until_serving(timeout=15)
        cluster.wait_for_leader(timeout=15, agreed=True)
        yield cluster
        logs = {node_id: cluster.log_path(node_id).read_text(errors="replace") for node_id in cluster.ids}
    for node_id, text in logs.items():
        assert "Traceback" not in text, f"{node_id} logged a traceback:\n{text}"


def test_every_request_needs_the_token(cluster: LocalCluster) -> None:
    context = cluster.http_context()
    for node_id in cluster.ids:
        for path in ("/status", "/kv/a", "/no/such/path"):
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                            {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": "Bearer \u00e9"}):
                code, body, got = http_json("GET", f"{cluster.http_url(node_id)}{path}", timeout=5,
                                            headers=headers, context=context)
                assert code == 401, (node_id, path, headers, body)
                assert got["WWW-Authenticate"].startswith("Bearer") and got["X-Raft-Outcome"] == "not-applied"
                assert "Authorization: Bearer" in body["error"]


def test_writes_through_followers_are_forwarded_over_https_with_the_token(cluster: LocalCluster) -> None:
    leader = cluster.wait_for_leader(timeout=10, agreed=True)
    for number, node_id in enumerate(cluster.ids):
        deadline = time.monotonic() + 10
        while (result := cluster.put(node_id, f"secure-{number}", f"value {number}"))[0] == 503:
            assert time.monotonic() < deadline, result
            time.sleep(0.05)
        assert result == (200, {"key": f"secure-{number}", "value": f"value {number}"})
    for node_id in cluster.ids:
        code, body, headers = cluster.http("GET", node_id, "/kv/secure-0")
        assert (code, body["value"], headers["X-Raft-Leader"]) == (200, "value 0", leader)
    assert "https://" in cluster.log_path(leader).read_text()


def test_plain_http_and_unverified_certificates_do_not_get_through(cluster: LocalCluster) -> None:
    address = cluster.http_addresses[cluster.ids[0]]
    with pytest.raises((OSError, urllib.error.URLError)):  # the HTTPS port does not speak plain HTTP
        http_json("GET", f"http://{address}/status", timeout=3, headers=cluster.http_headers())
    with pytest.raises(urllib.error.URLError) as caught:  # the system trust store does not know the dev CA
        http_json("GET", f"https://{address}/status", timeout=3, headers=cluster.http_headers(),
                  context=ssl.create_default_context())
    assert isinstance(caught.value.reason, ssl.SSLCertVerificationError)


def test_kv_and_status_commands_with_token_file_and_ca(cluster: LocalCluster) -> None:
    addresses = ",".join(f"https://{a}" for a in cluster.http_addresses.values())
    auth = ["--token-file", str(cluster.token_file), "--ca", str(cluster.certs_dir / "ca.pem")]
    put = raftfsm("kv", "put", "from-cli", "yes", "--cluster", addresses, *auth)
    assert (put.returncode, put.stdout.strip()) == (0, "OK"), put.stderr
    get = raftfsm("kv", "get", "from-cli", "--cluster", addresses, *auth)
    assert (get.returncode, get.stdout.strip()) == (0, "yes"), get.stderr
    status = raftfsm("status", "--cluster", addresses, *auth)
    assert status.returncode == 0, status.stdout + status.stderr
    assert sorted(row.split()[1] for row in status.stdout.splitlines()[1:]) == cluster.ids
    assert all(row.startswith("https://") for row in status.stdout.splitlines()[1:])
    no_token = raftfsm("status", "--cluster", addresses, "--ca", str(cluster.certs_dir / "ca.pem"))
    assert no_token.returncode == 1 and "HTTP 401" in no_token.stdout
    no_ca = raftfsm("kv", "get", "from-cli", "--cluster", addresses, "--token-file", str(cluster.token_file),
                    "--timeout", "1")
    assert no_ca.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in no_ca.stderr, no_ca.stderr


# -- the node's own checks --------------------------------------------------------------------------------------
def one_node(tmp_path: Path, *flags: str, token: str | None = None) -> LocalCluster:
    """A one-node LocalCluster (whatever credentials its nodes need) with `flags` appended."""
    return LocalCluster(tmp_path / "one", 1, fsync=False, node_args=flags, http_token=token)


def log_of_a_node_serving_on_all_interfaces(tmp_path: Path, token: str | None = None) -> str:
    cluster = one_node(tmp_path, token=token)
    port = cluster.http_addresses["n1"].rpartition(":")[2]
    cluster.node_args = ["--http", f"0.0.0.0:{port}"]  # the last --http wins
    with cluster:
        cluster.wait_until_serving(timeout=15)
    assert cluster.processes["n1"].returncode == 0
    return cluster.log_path("n1").read_text()


def test_a_node_warns_when_its_api_is_open_to_the_network(tmp_path: Path) -> None:
    text = log_of_a_node_serving_on_all_interfaces(tmp_path)
    assert "WARNING" in text and "without TLS or a token" in text, text


def test_no_warning_with_a_token(tmp_path: Path) -> None:
    text = log_of_a_node_serving_on_all_interfaces(tmp_path, token=TOKEN)
    assert "without TLS or a token" not in text and "bearer token required" in text, text


@pytest.mark.parametrize("flags, words", [
    (["--http-tls-cert", "cert.pem"], "go together"),
    (["--http-tls-cert", "missing.pem", "--http-tls-key", "missing.key"], "cannot load"),
    (["--http-token-file", "empty"], "printable ASCII"),
    (["--http-token-file", "missing"], "--http-token-file"),
    (["--http-max-connections", "0"], "at least 1"),
    (["--http-header-timeout", "0"], "positive"),
    (["--max-pending", "0"], "at least 1"),
])
def test_bad_http_flags_are_one_line_errors(tmp_path: Path, flags: list[str], words: str) -> None:
    (tmp_path / "empty").write_text("  \n")
    flags = [str(tmp_path / f) if f in ("empty", "missing", "missing.pem", "missing.key") else f for f in flags]
    cluster = one_node(tmp_path, *flags)
    try:
        cluster.start()
        assert cluster.processes["n1"].wait(20) == 2
    finally:
        cluster.stop()
    lines = cluster.log_path("n1").read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith("raftfsm node: ") and words in lines[0], lines

"""The networked key-value node as users run it: `raftfsm node` processes talking Raft over
TCP (or mutual TLS) on 127.0.0.1, storing on SQLite, serving the HTTP API.

No test sleeps to wait for an event: each polls with a deadline and fails with the state
it saw. Every cluster is stopped by the test (or fixture) that started it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from runtime.cluster import LocalCluster, http_json
from runtime.http import FORWARDED_HEADER, LEADER_HEADER
from runtime.transport.auth import write_secret

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def eventually(probe: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.02)


def raftfsm(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "runtime.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env)


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., LocalCluster]]:
    clusters: list[LocalCluster] = []

    def make(**options: Any) -> LocalCluster:
        cluster = LocalCluster(tmp_path / f"cluster{len(clusters)}", 3, fsync=False, **options)
        clusters.append(cluster)
        cluster.start()
        cluster.wait_until_serving(timeout=15)
        return cluster

    yield make
    for cluster in clusters:
        cluster.stop()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = LocalCluster(tmp_path_factory.mktemp("shared"), 3, fsync=False)
    try:
        cluster.start()
        cluster.wait_until_serving(timeout=15)
        cluster.wait_for_leader(timeout=15, agreed=True)
        yield cluster
    finally:
        statuses = cluster.stop()
    assert statuses == {"n1": 0, "n2": 0, "n3": 0}, "SIGTERM stops every node cleanly"


def put(cluster: LocalCluster, node_id: str, key: str, value: str) -> tuple[int, dict[str, Any]]:
    """A client's PUT: retried while the node answers 503 (nothing applied, e.g. mid-election)."""
    deadline = time.monotonic() + 5
    while True:
        code, body = cluster.put(node_id, key, value)
        if code != 503 or time.monotonic() > deadline:
            return code, body
        time.sleep(0.02)


# -- the HTTP API ------------------------------------------------------------------------------------
def test_a_write_on_the_leader_is_readable_through_every_node(shared: LocalCluster) -> None:
    leader = shared.wait_for_leader(timeout=10, agreed=True)
    assert put(shared, leader, "colour", "blue") == (200, {"key": "colour", "value": "blue"})
    for node_id in shared.ids:
        code, body, headers = http_json("GET", f"{shared.http_url(node_id)}/kv/colour")
        assert (code, body) == (200, {"key": "colour", "value": "blue"}), node_id
        assert headers[LEADER_HEADER] == leader, "a follower forwards to the leader and names it"


def test_a_follower_forwards_writes_and_json_bodies(shared: LocalCluster) -> None:
    leader = shared.wait_for_leader(timeout=10, agreed=True)
    follower = next(n for n in shared.ids if n != leader)
    body = json.dumps({"value": "from a follower"}).encode()
    code, answer, headers = http_json("PUT", f"{shared.http_url(follower)}/kv/f", body,
                                      headers={"Content-Type": "application/json"})
    assert (code, answer, headers[LEADER_HEADER]) == (200, {"key": "f", "value": "from a follower"}, leader)
    assert shared.get(leader, "f") == (200, {"key": "f", "value": "from a follower"})


def test_delete_compare_and_set_and_missing_keys(shared: LocalCluster) -> None:
    url = shared.http_url(shared.ids[0])
    json_type = {"Content-Type": "application/json"}

    def cas(expected: str | None, value: str) -> tuple[int, dict[str, Any]]:
        code, body, _ = http_json("POST", f"{url}/kv/counter/cas",
                                  json.dumps({"expected": expected, "value": value}).encode(), headers=json_type)
        return code, body

    assert cas(None, "1") == (200, {"key": "counter", "ok": True, "value": "1"})
    assert cas(None, "2") == (200, {"key": "counter", "ok": False, "value": "1"})
    assert cas("1", "2") == (200, {"key": "counter", "ok": True, "value": "2"})
    assert http_json("DELETE", f"{url}/kv/counter")[:2] == (200, {"key": "counter", "value": "2"})
    assert http_json("DELETE", f"{url}/kv/counter")[0] == 404
    assert http_json("GET", f"{url}/kv/counter")[0] == 404


def test_bad_input_gets_400_with_a_reason(shared: LocalCluster) -> None:
    url = shared.http_url(shared.ids[1])
    json_type = {"Content-Type": "application/json"}
    code, body, _ = http_json("PUT", f"{url}/kv/k", b'{"value": 3}', headers=json_type)
    assert code == 400 and "string" in body["error"]
    code, body, _ = http_json("POST", f"{url}/kv/k/cas", b"not json", headers=json_type)
    assert code == 400 and "JSON" in body["error"]
    code, body, _ = http_json("POST", f"{url}/kv/k/cas", b'{"value": "v"}', headers=json_type)
    assert code == 400 and "expected" in body["error"]


def test_a_forwarded_request_is_never_forwarded_again(shared: LocalCluster) -> None:
    leader = shared.wait_for_leader(timeout=10, agreed=True)
    follower = next(n for n in shared.ids if n != leader)
    code, body, headers = http_json("PUT", f"{shared.http_url(follower)}/kv/colour", b"red",
                                    headers={FORWARDED_HEADER: "n9", "Content-Type": "text/plain"})
    assert code == 503 and "not forwarding twice" in body["error"], body
    assert headers["Retry-After"]


def test_status_reports_role_term_and_indexes(shared: LocalCluster) -> None:
    leader = shared.wait_for_leader(timeout=10, agreed=True)
    status = shared.status(leader)
    assert status is not None
    assert status["role"] == "leader" and status["leader"] == leader and status["id"] == leader
    assert status["raft_address"] == shared.raft_addresses[leader]
    assert status["leader_address"] == shared.http_addresses[leader]


# -- the command line --------------------------------------------------------------------------------
def test_kv_put_then_get_from_the_command_line(shared: LocalCluster) -> None:
    addresses = ",".join(shared.http_addresses.values())
    put_run = raftfsm("kv", "put", "a", "1", "--cluster", addresses)
    assert (put_run.returncode, put_run.stdout.strip()) == (0, "OK"), put_run.stderr
    get_run = raftfsm("kv", "get", "a", "--cluster", addresses)
    assert (get_run.returncode, get_run.stdout.strip()) == (0, "1"), get_run.stderr
    missing = raftfsm("kv", "get", "never-written", "--cluster", addresses)
    assert missing.returncode == 1 and "not found" in missing.stderr


def test_kv_client_skips_unreachable_nodes(shared: LocalCluster) -> None:
    unreachable = "127.0.0.1:1"
    run = raftfsm("kv", "get", "a", "--cluster", f"{unreachable},{shared.http_addresses['n2']}")
    assert run.returncode == 0, run.stderr


def test_status_command_prints_a_table(shared: LocalCluster) -> None:
    leader = shared.wait_for_leader(timeout=10, agreed=True)
    run = raftfsm("status", "--cluster", ",".join(shared.http_addresses.values()))
    assert run.returncode == 0, run.stderr
    header, *rows = run.stdout.splitlines()
    assert header.split() == ["address", "id", "role", "term", "leader", "commit", "applied"]
    assert sorted(row.split()[1] for row in rows) == shared.ids
    assert [row.split()[1] for row in rows if row.split()[2] == "leader"] == [leader]


# -- failures ----------------------------------------------------------------------------------------
def test_killing_the_leader_elects_another_and_loses_no_acknowledged_write(
    make_cluster: Callable[..., LocalCluster],
) -> None:
    cluster = make_cluster()
    leader = cluster.wait_for_leader(timeout=15, agreed=True)
    acknowledged = {}
    for i in range(30):
        code, _ = put(cluster, cluster.ids[i % 3], f"k{i}", f"v{i}")
        if code == 200:
            acknowledged[f"k{i}"] = f"v{i}"
    assert len(acknowledged) == 30
    cluster.kill(leader)
    survivors = [n for n in cluster.ids if n != leader]
    new_leader = cluster.wait_for_leader(timeout=10, among=survivors)
    assert new_leader != leader
    for key, value in acknowledged.items():
        assert cluster.get(new_leader, key) == (200, {"key": key, "value": value})
    # The surviving follower still serves (by forwarding to the new leader).
    other = next(n for n in survivors if n != new_leader)
    assert eventually(lambda: cluster.get(other, "k0")[0] == 200 or None, 5, "the follower forwards")


def test_a_restarted_node_catches_up(make_cluster: Callable[..., LocalCluster]) -> None:
    cluster = make_cluster()
    leader = cluster.wait_for_leader(timeout=15, agreed=True)
    follower = next(n for n in cluster.ids if n != leader)
    cluster.kill(follower)
    for i in range(20):
        assert put(cluster, leader, f"missed{i}", str(i))[0] == 200
    cluster.start_node(follower)

    def caught_up() -> bool | None:
        # The leader may change meanwhile (the restarted node can time out before the
        # leader's link to it reconnects), so ask who leads now.
        mine = cluster.status(follower)
        current = cluster.leader()
        theirs = cluster.status(current) if current else None
        if mine is None or theirs is None:
            return None
        return True if mine["applied"] >= theirs["commit"] and mine["leader"] == current else None

    eventually(caught_up, 10, f"{follower} applies what it missed")
    assert cluster.get(follower, "missed19") == (200, {"key": "missed19", "value": "19"})


def test_write_and_read_over_mutual_tls(make_cluster: Callable[..., LocalCluster]) -> None:
    cluster = make_cluster(tls=True)
    assert (cluster.certs_dir / "ca.pem").exists()
    leader = cluster.wait_for_leader(timeout=15, agreed=True)
    assert put(cluster, leader, "secret", "over TLS") == (200, {"key": "secret", "value": "over TLS"})
    for node_id in cluster.ids:
        assert cluster.get(node_id, "secret") == (200, {"key": "secret", "value": "over TLS"})
    assert "mutual TLS" in cluster.log_path(leader).read_text()


def test_without_a_leader_requests_get_503_and_retry_after(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, 3, fsync=False)
    try:
        cluster.start_node("n1")  # alone: it can never win an election
        code, body, headers = eventually(
            lambda: _try(lambda: http_json("PUT", f"{cluster.http_url('n1')}/kv/x", b"v", timeout=1,
                                           headers={"Content-Type": "text/plain"})), 10, "n1 serves HTTP")
        assert code == 503 and body["error"] == "no leader yet" and headers["Retry-After"], body
        assert headers["X-Raft-Outcome"] == "not-applied"
        code, body, headers = http_json("GET", f"{cluster.http_url('n1')}/kv/x", timeout=2)
        assert code == 503 and "no leader is known" in body["error"] and headers["Retry-After"], body
    finally:
        assert cluster.stop() == {"n1": 0}, "SIGTERM stops a node cleanly"


def _try(call: Callable[[], T]) -> T | None:
    try:
        return call()
    except OSError:
        return None


def test_node_refuses_a_corrupt_data_directory_with_one_line(tmp_path: Path) -> None:
    data = tmp_path / "n1"
    data.mkdir()
    (data / "raft.db").write_bytes(b"this is not a database" * 100)
    secret = write_secret(tmp_path / "secret")
    run = raftfsm("node", "--id", "n1", "--listen", "127.0.0.1:0", "--peers", "n1=127.0.0.1:0",
                  "--http", "127.0.0.1:0", "--data-dir", str(data), "--secret-file", str(secret), timeout=20)
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("raftfsm node: "), run.stderr
    assert "raft.db" in run.stderr and "Traceback" not in run.stderr


def test_demo_runs_end_to_end() -> None:
    run = raftfsm("demo", timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "failover:" in run.stdout and "no acknowledged write lost" in run.stdout

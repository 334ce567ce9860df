"""Client sessions and ReadIndex reads through the HTTP API of a real 3-node cluster: a
retried write applies once, reads are served by any node without a log write."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.cluster import LocalCluster

TEXT = {"Content-Type": "text/plain"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("sessions"), 3, fsync=False) as cluster:
        cluster.wait_until_serving(timeout=15)
        cluster.wait_for_leader(timeout=15, agreed=True)
        yield cluster


def open_session(cluster: LocalCluster, node: str) -> int:
    code, body, headers = cluster.http("POST", node, "/sessions", b"")
    assert code == 201 and headers["X-Raft-Outcome"] == "applied", body
    session = body["session"]
    assert isinstance(session, int)
    return session


def session_headers(session: int, sequence: int, **extra: str) -> dict[str, str]:
    return {**TEXT, "X-Raft-Session": str(session), "X-Raft-Sequence": str(sequence), **extra}


def test_a_retried_put_applies_once_and_does_not_undo_a_later_write(cluster: LocalCluster) -> None:
    """Applied puts x=1, x=2, x=1 used to make readers see 1 -> 2 -> 1 when a client retried
    its PUT after an unknown outcome."""
    leader = cluster.wait_for_leader(timeout=10, agreed=True)
    follower = next(n for n in cluster.ids if n != leader)
    session = open_session(cluster, follower)  # through a follower: forwarded
    code, body, _ = cluster.http("PUT", follower, "/kv/x", b"1", headers=session_headers(session, 1))
    assert code == 200 and body["value"] == "1"
    assert cluster.http("PUT", leader, "/kv/x", b"2", headers=TEXT)[0] == 200  # another client's later write
    for node in (follower, leader):  # the retry, on any node
        code, body, headers = cluster.http("PUT", node, "/kv/x", b"1", headers=session_headers(session, 1))
        assert code == 200 and body["value"] == "1" and headers["X-Raft-Outcome"] == "applied", body
    assert cluster.http("GET", leader, "/kv/x")[1]["value"] == "2", "the retry was applied again"


def test_a_retried_cas_answers_its_own_success(cluster: LocalCluster) -> None:
    """A CAS retried after an unknown outcome answered ok=false with the client's own value,
    indistinguishable from losing to another writer."""
    leader = cluster.wait_for_leader(timeout=10, agreed=True)
    session = open_session(cluster, leader)
    cas = json.dumps({"expected": None, "value": "mine"}).encode()
    headers = {**session_headers(session, 1), "Content-Type": "application/json"}
    first = cluster.http("POST", leader, "/kv/lock/cas", cas, headers=headers)
    again = cluster.http("POST", leader, "/kv/lock/cas", cas, headers=headers)
    assert first[1] == again[1] == {"key": "lock", "ok": True, "value": "mine"}


def test_an_unknown_session_is_refused_as_not_applied(cluster: LocalCluster) -> None:
    leader = cluster.wait_for_leader(timeout=10, agreed=True)
    code, body, headers = cluster.http("PUT", leader, "/kv/y", b"v", headers=session_headers(987654, 1))
    assert code == 410 and headers["X-Raft-Outcome"] == "not-applied", body
    assert cluster.http("GET", leader, "/kv/y")[0] == 404
    code, body, _ = cluster.http("PUT", leader, "/kv/y", b"v", headers={**TEXT, "X-Raft-Sequence": "1"})
    assert code == 400 and "X-Raft-Session" in body["error"]


def test_reads_are_served_by_every_node_without_a_log_write(cluster: LocalCluster) -> None:
    leader = cluster.wait_for_leader(timeout=10, agreed=True)
    assert cluster.http("PUT", leader, "/kv/r", b"seen", headers=TEXT)[0] == 200
    last_index = (cluster.status(leader) or {})["last_index"]
    for node in cluster.ids:
        code, body, headers = cluster.http("GET", node, "/kv/r")
        assert code == 200 and body["value"] == "seen" and headers["X-Raft-Outcome"] == "applied", (node, body)
        assert "X-Raft-Forwarded-By" not in headers
    assert (cluster.status(leader) or {})["last_index"] == last_index, "a ReadIndex read wrote to the log"
    code, body, _ = cluster.http("GET", leader, "/kv/r?read=log")
    assert code == 200 and body["value"] == "seen"
    assert (cluster.status(leader) or {})["last_index"] == last_index + 1
    assert cluster.http("GET", leader, "/kv/r?read=maybe")[0] == 400


def test_raftfsm_kv_writes_under_a_session_of_its_own(cluster: LocalCluster, tmp_path: Path) -> None:
    addresses = ",".join(cluster.http_addresses.values())
    before = (cluster.status(cluster.wait_for_leader(timeout=10, agreed=True)) or {})["last_index"]
    run = subprocess.run([sys.executable, "-m", "runtime.cli", "kv", "put", "cli", "value", "--cluster", addresses],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.strip() == "OK", run.stderr
    after = (cluster.status(cluster.wait_for_leader(timeout=10, agreed=True)) or {})["last_index"]
    assert after - before == 2, "expected a session registration and the put"

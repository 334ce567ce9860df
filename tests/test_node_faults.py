"""Live `raftfsm node` processes meet bad things: a real full disk (RLIMIT_FSIZE on one node)
and hostile bytes on their Raft port. The node under attack logs one line per cause and
either keeps serving (bad input) or moves to the error role while the others commit
(full disk) — and its data directory restarts cleanly."""

from __future__ import annotations

import os
import socket
import ssl
import struct
import time
from pathlib import Path

import msgpack

from runtime.cluster import LocalCluster
from runtime.codec import SCHEMA_DIGEST
from runtime.transport.tcp import HELLO_MAGIC, PROTOCOL_VERSION


def poll(condition, timeout: float = 20.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        time.sleep(0.02)


def write_until_acknowledged(cluster: LocalCluster, among: list[str], key: str, value: str) -> None:
    def attempt() -> bool:
        leader = cluster.leader(among)
        return leader is not None and cluster.put(leader, key, value)[0] == 200

    poll(attempt, what=f"an acknowledged write of {key}")


def test_full_disk_sends_one_node_to_error_and_the_rest_keep_committing(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, nodes=3, log_level="warning")
    try:
        cluster.start_node("n1")
        cluster.start_node("n2")
        cluster.start_node("n3", file_size_limit=600_000)
        cluster.wait_for_leader(timeout=20, agreed=True)
        value = "x" * 10_000
        number = 0

        def n3_in_error() -> bool:
            nonlocal number
            number += 1
            leader = cluster.leader(["n1", "n2", "n3"])
            if leader is not None:
                cluster.put(leader, f"big{number}", value)
            status = cluster.status("n3")
            return status is not None and status["role"] == "error"

        poll(n3_in_error, timeout=60, what="n3 in the error role")
        status = cluster.status("n3")
        assert status is not None
        assert "file size limit" in str(status["halt_reason"]) or "disk full" in str(status["halt_reason"])
        log_text = cluster.log_path("n3").read_text()
        assert log_text.count("entering the error role") == 1, log_text[-2000:]
        # the other two still commit
        for i in range(5):
            write_until_acknowledged(cluster, ["n1", "n2"], f"after{i}", "ok")
        # a clean restart without the limit: the directory is valid and the node catches up
        cluster.stop_node("n3")
        cluster.start_node("n3")
        leader = cluster.wait_for_leader(timeout=20, among=["n1", "n2", "n3"])

        def caught_up() -> bool:
            status, leading = cluster.status("n3"), cluster.status(leader)
            return (status is not None and leading is not None and status["role"] == "follower"
                    and status["applied"] >= leading["commit"])

        poll(caught_up, what="n3 catching up after restart")
        assert cluster.get("n3", "after4")[1].get("value") == "ok"
    finally:
        cluster.stop()


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def hello(cluster_id: str, node_id: str, mode: str = "secret") -> bytes:
    nonce = os.urandom(32) if mode == "secret" else b""
    return frame(msgpack.packb([HELLO_MAGIC, PROTOCOL_VERSION, SCHEMA_DIGEST, cluster_id, node_id, mode, nonce],
                               use_bin_type=True))


def send_and_wait_for_close(address: str, payload: bytes, context: ssl.SSLContext | None = None) -> None:
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        sock: socket.socket = raw
        if context is not None:
            try:
                sock = context.wrap_socket(raw)
            except (ssl.SSLError, OSError):
                return  # refused during the TLS handshake: closed, as it should be
        try:
            sock.sendall(payload)
            while sock.recv(4096):  # the node's hello, then EOF when it closes us
                pass
        except (ssl.SSLError, OSError):
            return


def test_bad_input_on_the_raft_port_is_logged_once_closed_and_the_node_keeps_serving(tmp_path: Path) -> None:
    with LocalCluster(tmp_path / "plain", nodes=3, log_level="warning") as cluster:
        cluster.wait_for_leader(timeout=20, agreed=True)
        target = "n1"
        address = cluster.raft_addresses[target]
        attacks = {
            "garbage": b"\x00\x01GET / HTTP/1.1\r\n\r\n" * 4,
            "oversized length": struct.pack(">I", 2**31) + b"x" * 16,
            "wrong cluster id": hello("another-cluster", "n2"),
            "unknown node id": hello(cluster.cluster_id, "mallory"),
            "a frame instead of a proof": hello(cluster.cluster_id, "n2") + frame(msgpack.packb([0, "not", "a", "vote"])),
        }
        for payload in attacks.values():
            send_and_wait_for_close(address, payload)
        log_text = cluster.log_path(target).read_text()
        closed = [line for line in log_text.splitlines() if "closed connection from" in line]
        assert len(closed) >= len(attacks), log_text[-3000:]
        for line in closed:
            assert "127.0.0.1:" in line  # names the peer address
        write_until_acknowledged(cluster, cluster.ids, "still", "serving")
        assert cluster.status(target) is not None

    with LocalCluster(tmp_path / "tls", nodes=3, tls=True, log_level="warning") as cluster:
        cluster.wait_for_leader(timeout=20, agreed=True)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # an attacker without a client certificate
        send_and_wait_for_close(cluster.raft_addresses["n1"], hello(cluster.cluster_id, "n2", "tls"), context)
        poll(lambda: "TLS handshake failed" in cluster.log_path("n1").read_text()
             or "closed connection from" in cluster.log_path("n1").read_text(),
             what="a log line for the client without a certificate")
        write_until_acknowledged(cluster, cluster.ids, "still", "serving")

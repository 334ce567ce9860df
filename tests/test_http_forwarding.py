"""Forwarding from a follower to the leader: sent at most once, honest about its outcome,
and byte-exact in its path.

The first tests run a real `KVHttpApi` on 127.0.0.1 whose RaftServer is a stand-in that
always answers NotLeader, pointing at a fake leader: a raw asyncio HTTP server that records
every request it reads and can drop a connection after reading one. That is how the
reported bug is reproduced: a PUT sent to a follower got 503 ("nothing was applied") although
the leader had received it. aiohttp's client resends an idempotent request (PUT and DELETE
included) once when a reused keep-alive connection breaks; the resend could not connect and
that error was mapped to 503 — or, with the leader still listening, the write arrived twice.
The last tests send odd keys through the followers of a real 3-node cluster.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from generated.raft_fsm import Role
from runtime.cluster import LocalCluster, http_json
from runtime.errors import NotLeader
from runtime.http import KVHttpApi
from runtime.kv import KVStateMachine

OUTCOME = "X-Raft-Outcome"


class FollowerStub:
    """What KVHttpApi needs of a RaftServer that is a follower of `leader_address`."""

    def __init__(self, leader_address: str) -> None:
        self.node_id = "n2"
        self.peers = {"n1": ("127.0.0.1", 1), "n2": ("127.0.0.1", 2)}
        self.role = Role.follower
        self.core = SimpleNamespace(term=7)
        self.state_machine = KVStateMachine()
        self.leader_address = leader_address
        self.applied = 0

    async def apply(self, command: object, timeout: float = 5.0, session: object = None) -> object:
        raise NotLeader(self.node_id, "n1", self.leader_address)

    async def open_session(self, timeout: float = 5.0) -> int:
        raise NotLeader(self.node_id, "n1", self.leader_address)

    def status(self) -> dict[str, object]:
        return {"id": self.node_id, "role": "follower"}


class FakeLeader:
    """A raw HTTP/1.1 server. Every request it reads completely is appended to `requests` as
    (method, raw target, body). `drop` decides, per request, to close the connection without
    answering; `close_listener_on_drop` also stops listening first, so that a resend cannot
    connect. Otherwise it answers 200 with a JSON body and keeps the connection open."""

    def __init__(self, drop: Callable[[str, str], bool] = lambda method, target: False,
                 close_listener_on_drop: bool = False, drop_before_reading: bool = False) -> None:
        self.requests: list[tuple[str, str, bytes]] = []
        self.connections = 0
        self.drop = drop
        self.close_listener_on_drop = close_listener_on_drop
        self.drop_before_reading = drop_before_reading
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            if self.drop_before_reading:
                return
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *header_lines = head.decode("latin-1").split("\r\n")
                method, target, _ = request_line.split(" ")
                headers = {k.strip().lower(): v.strip() for k, _, v in
                           (line.partition(":") for line in header_lines if line)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.requests.append((method, target, body))
                if self.drop(method, target):
                    if self.close_listener_on_drop and self.server is not None:
                        self.server.close()
                    return
                answer = json.dumps({"key": target, "value": "ok"}).encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Raft-Outcome: applied\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(answer), answer))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def send(address: tuple[str, int], method: str, target: str, body: bytes = b"") -> tuple[int, dict[str, str],
                                                                                            dict[str, Any]]:
    """One request on a fresh connection (so the client side retries nothing); returns
    (status, headers, JSON body)."""
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(f"{method} {target} HTTP/1.1\r\nHost: test\r\nContent-Type: text/plain\r\n"
                     f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        async with asyncio.timeout(15):
            data = await reader.read()
    finally:
        writer.close()
    head, _, payload = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, json.loads(payload) if payload else {}


def with_follower(leader: FakeLeader, body: Callable[[tuple[str, int]], Awaitable[None]]) -> None:
    async def main() -> None:
        await leader.start()
        api = KVHttpApi(FollowerStub(leader.address))  # type: ignore[arg-type]
        await api.start("127.0.0.1", 0)
        try:
            assert api.address is not None
            await body(api.address)
        finally:
            await api.stop()
            await leader.stop()

    asyncio.run(main())


# -- sent at most once, and never "not applied" once it may have left --------------------------------------
@pytest.mark.parametrize("leader_gone", [True, False], ids=["leader-gone-after-reading", "leader-still-listening"])
@pytest.mark.parametrize("method", ["PUT", "DELETE"])
def test_a_request_lost_on_a_reused_connection_is_sent_once_and_reported_unknown(method: str,
                                                                                  leader_gone: bool) -> None:
    """The leader reads the forwarded write, then drops the keep-alive connection unanswered."""
    leader = FakeLeader(drop=lambda m, target: target == "/kv/lost", close_listener_on_drop=leader_gone)

    async def body(follower: tuple[str, int]) -> None:
        # warm up: the follower's client now holds a keep-alive connection to the leader
        assert (await send(follower, "PUT", "/kv/warm", b"w"))[0] == 200
        assert leader.connections == 1
        status, headers, answer = await send(follower, method, "/kv/lost", b"v" if method == "PUT" else b"")
        copies = [r for r in leader.requests if r[1] == "/kv/lost"]
        assert len(copies) == 1, f"the leader received the forwarded {method} {len(copies)} times"
        assert status != 503 and headers.get(OUTCOME) != "not-applied", (
            f"the leader received the {method}, yet the follower answered {status} {answer} "
            f"{OUTCOME}={headers.get(OUTCOME)}")
        assert (status, headers.get(OUTCOME)) == (502, "unknown"), (status, headers, answer)
        assert "Retry-After" not in headers
        assert "may or may not" in answer["error"]

    with_follower(leader, body)


def test_a_leader_that_cannot_be_reached_means_not_applied_and_retry() -> None:
    leader = FakeLeader()

    async def body(follower: tuple[str, int]) -> None:
        await leader.stop()  # nothing listens there any more: the connection cannot be made
        await asyncio.sleep(0)
        status, headers, answer = await send(follower, "PUT", "/kv/k", b"v")
        assert (status, headers.get(OUTCOME)) == (503, "not-applied"), (status, headers, answer)
        assert headers["Retry-After"] and "nothing was sent" in answer["error"]
        assert leader.requests == []

    with_follower(leader, body)


def test_a_connection_dropped_by_the_leader_before_reading_is_still_unknown() -> None:
    """The connection was made, so the request may have been written into it: the follower
    cannot prove the leader did not read it, and says so."""
    leader = FakeLeader(drop_before_reading=True)

    async def body(follower: tuple[str, int]) -> None:
        status, headers, _ = await send(follower, "DELETE", "/kv/k")
        assert (status, headers.get(OUTCOME)) == (502, "unknown")
        assert leader.connections == 1, "one attempt, no resend"

    with_follower(leader, body)


def test_the_forwarded_target_is_the_raw_path_byte_for_byte() -> None:
    targets = ["/kv/..", "/kv/.", "/kv/%2e%2e", "/kv/a%2Fb", "/kv/a%20b", "/kv/%25ff%25fe", "/kv/%C3%BC%E2%98%83",
               "/kv/a+b", "/kv/x?q=%ff", "/kv/k/cas"]

    async def body(follower: tuple[str, int]) -> None:
        for target in targets:
            # writes are forwarded (a GET is a ReadIndex read, served by the follower itself)
            method = "POST" if target.endswith("/cas") else "PUT"
            payload = b'{"expected": null, "value": "v"}' if method == "POST" else b"v"
            status, _, answer = await send(follower, method, target, payload)
            assert status == 200, (target, answer)
            assert leader.requests[-1][:2] == (method, target)

    leader = FakeLeader()
    with_follower(leader, body)


# -- odd keys through the followers of a real cluster --------------------------------------------------------
@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("odd-keys"), 3, fsync=False) as cluster:
        cluster.wait_until_serving(timeout=15)
        cluster.wait_for_leader(timeout=15, agreed=True)
        yield cluster


def request(cluster: LocalCluster, method: str, node_id: str, target: str,
            body: bytes | None = None) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Retried while the node answers 503 (nothing applied, e.g. during an election)."""
    deadline = time.monotonic() + 10
    while True:
        code, answer, headers = http_json(method, f"{cluster.http_url(node_id)}{target}", body, timeout=6,
                                          headers={"Content-Type": "text/plain; charset=utf-8"})
        if code != 503 or time.monotonic() > deadline:
            return code, answer, headers
        time.sleep(0.05)


ODD_KEYS = ["..", ".", "%ff%fe", "a%2Fb", "a/b", "a b", " ", "%", "ünïcødé ☃", "?x=1#y", "\x00"]


@pytest.mark.parametrize("key", ODD_KEYS, ids=[repr(k) for k in ODD_KEYS])
def test_an_odd_key_written_through_a_follower_is_the_same_key_everywhere(cluster: LocalCluster, key: str) -> None:
    leader = cluster.wait_for_leader(timeout=10, agreed=True)
    writer, reader = (n for n in cluster.ids if n != leader)
    target = f"/kv/{urllib.parse.quote(key, safe='')}"
    value = f"value of {key}"
    code, answer, headers = request(cluster, "PUT", writer, target, value.encode())
    assert (code, answer) == (200, {"key": key, "value": value})
    for node_id in (leader, reader, writer):
        code, answer, _ = request(cluster, "GET", node_id, target)
        assert (code, answer) == (200, {"key": key, "value": value}), node_id
    assert headers.get(OUTCOME) == "applied"


RAW_SEGMENTS = {"..": "..", "%2e%2e": "..", "%2E.": "..", "a%2Fb": "a/b", "a%20b": "a b", "%C3%BC": "ü", "a+b": "a+b"}


@pytest.mark.parametrize("segment", RAW_SEGMENTS)
def test_a_raw_path_means_the_same_key_through_a_follower_as_on_the_leader(cluster: LocalCluster,
                                                                          segment: str) -> None:
    leader = cluster.wait_for_leader(timeout=10, agreed=True)
    follower = next(n for n in cluster.ids if n != leader)
    value = f"raw {segment}"
    code, answer, _ = request(cluster, "PUT", leader, f"/kv/{segment}", value.encode())
    assert (code, answer) == (200, {"key": RAW_SEGMENTS[segment], "value": value})
    assert request(cluster, "GET", follower, f"/kv/{segment}")[:2] == (200, answer)


def test_a_key_that_is_not_utf8_is_refused_alike_by_leader_and_follower(cluster: LocalCluster) -> None:
    leader = cluster.wait_for_leader(timeout=10, agreed=True)
    for node_id in cluster.ids:
        code, answer, headers = request(cluster, "PUT", node_id, "/kv/%ff%fe", b"v")
        assert (code, headers.get(OUTCOME)) == (400, "not-applied"), (node_id, node_id == leader, answer)
        assert "UTF-8" in answer["error"]


"""Bounded resources: admission control before proposing, the connection cap, the header
timeout — and the two floods they exist for, against real 3-node clusters: 2,000 concurrent
PUTs do not depose the leader and every answer is definite or explicitly unknown; 2,000
slowloris connections are closed and the cluster keeps committing meanwhile.

The floods use one asyncio loop in this process and raw sockets (cheap on the client side);
every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import re
import resource
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from generated.raft_fsm import EntryKind
from runtime.cluster import LocalCluster
from runtime.kv import KVResult, KVStateMachine, Put
from runtime.server import RaftServer
from runtime.storage.memory import MemoryStorage

FLOOD = 2000
HEADER_TIMEOUT = 10.0
"""runtime.http.DEFAULT_HEADER_TIMEOUT (the floods run with the defaults; the constants are
repeated here so that this module also runs against code that predates them)."""
MAX_CONNECTIONS = 1000
"""runtime.http.DEFAULT_MAX_CONNECTIONS."""


@pytest.fixture(autouse=True)
def enough_file_descriptors() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 3 * FLOOD
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted if hard == resource.RLIM_INFINITY else min(wanted, hard),
                                                    hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., LocalCluster]]:
    clusters: list[LocalCluster] = []

    def make(*node_args: str) -> LocalCluster:
        extra = {"node_args": node_args} if node_args else {}
        cluster = LocalCluster(tmp_path / f"c{len(clusters)}", 3, fsync=False, **extra)
        clusters.append(cluster)
        cluster.start()
        cluster.wait_until_serving(timeout=15)
        cluster.wait_for_leader(timeout=15, agreed=True)
        return cluster

    yield make
    for cluster in clusters:
        cluster.stop()


class Answer:
    """One HTTP exchange on its own connection: `status` 0 means no answer at all."""

    def __init__(self, status: int, headers: dict[str, str], error: str = "") -> None:
        self.status, self.headers, self.error = status, headers, error

    @property
    def kind(self) -> str:
        outcome = self.headers.get("X-Raft-Outcome")
        if self.status == 200 and outcome == "applied":
            return "applied"
        if self.status == 503 and outcome == "not-applied" and self.headers.get("Retry-After"):
            return "not-applied"
        if self.status in (502, 504) and outcome == "unknown":
            return "unknown"
        return f"indefinite: {self.status} {outcome} {self.error}"


async def exchange(address: str, method: str, target: str, body: bytes = b"", timeout: float = 25.0) -> Answer:
    host, port = address.split(":")
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, int(port))
            try:
                writer.write(f"{method} {target} HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\n"
                             f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
                data = await reader.read()
            finally:
                writer.close()
    except (OSError, TimeoutError) as exc:
        return Answer(0, {}, type(exc).__name__)
    head = data.partition(b"\r\n\r\n")[0].decode("latin-1")
    match = re.match(r"HTTP/1\.1 (\d{3})", head)
    if match is None:
        return Answer(0, {}, "no status line")
    headers = dict(re.findall(r"\r\n([^:\r\n]+): ([^\r\n]*)", head))
    return Answer(int(match.group(1)), headers)


def election_lines(cluster: LocalCluster, offsets: dict[str, int]) -> list[str]:
    lines = []
    for node_id in cluster.ids:
        with open(cluster.log_path(node_id), errors="replace") as log:
            log.seek(offsets[node_id])
            lines += [line for line in log.read().splitlines() if "candidate in term" in line]
    return lines


# -- admission control ------------------------------------------------------------------------------------------
class Alone:
    """The transport of a one-node cluster: there is nobody to send to."""

    async def start(self) -> None:
        pass

    def send(self, message: object) -> None:
        raise AssertionError(f"a one-node cluster sent {message!r}")

    async def stop(self) -> None:
        pass


class GatedStorage(MemoryStorage):
    """Persisting blocks while `gate` is closed: proposals stay pending, deterministically."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()

    def persist(self, *args: object, **kwargs: object) -> None:
        assert self.gate.wait(20)
        super().persist(*args, **kwargs)  # type: ignore[arg-type]


def test_overloaded_is_raised_before_proposing_and_the_bound_is_released() -> None:
    from runtime.errors import Overloaded

    async def body() -> None:
        storage = GatedStorage()
        server: RaftServer[Put, KVResult] = RaftServer(
            "n1", {"n1": ("127.0.0.1", 0)}, KVStateMachine(), storage, cluster_id="t",  # type: ignore[arg-type]
            transport=Alone(), max_pending=3, max_pending_bytes=1 << 20)
        await server.start()
        try:
            async with asyncio.timeout(10):
                while not server.is_leader:
                    await asyncio.sleep(0.005)
                storage.gate.clear()
                pending = [asyncio.ensure_future(server.apply(Put(f"k{i}", "v"), timeout=30)) for i in range(3)]
                await asyncio.sleep(0.05)
                last_index = server.core.log.last_index
                with pytest.raises(Overloaded, match="not proposed"):
                    await server.apply(Put("refused", "v"))
                await asyncio.sleep(0.05)
                assert server.core.log.last_index == last_index, "the refused command never reached the log"
                storage.gate.set()
                assert [r.ok for r in await asyncio.gather(*pending)] == [True] * 3
                assert (await server.apply(Put("after", "v"))).ok, "answered commands free their slots"
                data = [e.data for e in server.core.log.slice(server.core.log.first_index, server.core.log.last_index + 1)
                        if e.kind is EntryKind.data]
                assert not any(b"refused" in d for d in data)
                # the byte bound: one command always fits, a second one beyond the bound does not
                server.max_pending_bytes = 100
                storage.gate.clear()
                big = asyncio.ensure_future(server.apply(Put("big", "x" * 200), timeout=30))
                await asyncio.sleep(0.05)
                with pytest.raises(Overloaded):
                    await server.apply(Put("small", "y"))
                storage.gate.set()
                assert (await big).ok
        finally:
            storage.gate.set()
            await server.stop()

    asyncio.run(body())


def test_overloaded_answers_are_503_and_their_writes_never_appear(make_cluster: Callable[..., LocalCluster]) -> None:
    cluster = make_cluster("--max-pending", "4")
    leader = cluster.wait_for_leader(timeout=10, agreed=True)
    address = cluster.http_addresses[leader]

    async def flood() -> list[Answer]:
        return await asyncio.gather(*(exchange(address, "PUT", f"/kv/o{i}", b"v") for i in range(300)))

    answers = asyncio.run(flood())
    kinds = Counter(a.kind for a in answers)
    assert set(kinds) <= {"applied", "not-applied", "unknown"}, kinds
    assert kinds["not-applied"] > 0 and kinds["applied"] > 0, kinds
    for number, answer in enumerate(answers):
        code, _ = cluster.get(leader, f"o{number}")
        if answer.kind == "applied":
            assert code == 200, number
        elif answer.kind == "not-applied":
            assert code == 404, f"o{number} was answered 503 not-applied but is stored"


# -- the connection cap and the header timeout -----------------------------------------------------------------
def test_idle_and_slow_connections_are_closed_and_the_cap_refuses_or_evicts(
        make_cluster: Callable[..., LocalCluster]) -> None:
    from runtime.http import DEFAULT_HEADER_TIMEOUT, DEFAULT_MAX_CONNECTIONS, EVICT_AFTER

    assert (DEFAULT_HEADER_TIMEOUT, DEFAULT_MAX_CONNECTIONS) == (HEADER_TIMEOUT, MAX_CONNECTIONS)
    timeout = 2.0
    cluster = make_cluster("--http-max-connections", "20", "--http-header-timeout", str(timeout))
    host, port = cluster.http_addresses["n1"].split(":")

    async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
        async with asyncio.timeout(seconds):
            return await reader.read()

    async def body() -> None:
        started = time.monotonic()
        idle = [await asyncio.open_connection(host, int(port)) for _ in range(20)]
        await asyncio.sleep(0.1)
        # 21st connection while the others have waited less than EVICT_AFTER: refused with 503
        reader, writer = await asyncio.open_connection(host, int(port))
        refused = await closed_within(reader, 3)
        writer.close()
        assert refused.startswith(b"HTTP/1.1 503") and b"X-Raft-Outcome: not-applied" in refused, refused
        assert b"Retry-After: 1" in refused
        # once the oldest has waited EVICT_AFTER, a newcomer takes its place and is served
        await asyncio.sleep(max(0.0, started + EVICT_AFTER + 0.2 - time.monotonic()))
        answer = await exchange(cluster.http_addresses["n1"], "GET", "/status")
        assert answer.status == 200, answer.error
        assert await closed_within(idle[0][0], 1) == b"", "the oldest idle connection was evicted"
        # a connection that trickles its headers is closed at the timeout all the same
        slow_reader, slow_writer = await asyncio.open_connection(host, int(port))
        slow_started = time.monotonic()
        closed = asyncio.ensure_future(closed_within(slow_reader, timeout + 3))
        for byte in b"GET /status HTTP/1.1\r\nHost: x\r\n":
            if closed.done():
                break
            slow_writer.write(bytes([byte]))
            await asyncio.sleep(0.1)
        assert await closed == b""
        assert timeout - 0.2 <= time.monotonic() - slow_started <= timeout + 2
        # the remaining idle connections are gone after the timeout
        for reader, writer in idle[1:]:
            assert await closed_within(reader, timeout + 2) == b""
            writer.close()
        # a keep-alive connection is served, then closed when idle for the timeout
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(5):
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        answered = time.monotonic()
        await closed_within(reader, timeout + 5)
        assert timeout - 0.2 <= time.monotonic() - answered <= timeout + 2
        writer.close()

    asyncio.run(body())
    log = cluster.log_path("n1").read_text()
    assert "refused 1" in log or "evicted" in log, log[-2000:]


# -- the floods -------------------------------------------------------------------------------------------------
def test_2000_concurrent_puts_do_not_depose_the_leader_and_every_answer_is_definite(
        make_cluster: Callable[..., LocalCluster]) -> None:
    cluster = make_cluster()
    leader = cluster.wait_for_leader(timeout=10, agreed=True)
    terms = {node_id: (cluster.status(node_id) or {}).get("term") for node_id in cluster.ids}
    offsets = {node_id: cluster.log_path(node_id).stat().st_size for node_id in cluster.ids}
    address = cluster.http_addresses[leader]

    async def flood() -> list[Answer]:
        return await asyncio.gather(*(exchange(address, "PUT", f"/kv/f{i}", f"v{i}".encode())
                                      for i in range(FLOOD)))

    started = time.monotonic()
    answers = asyncio.run(flood())
    took = time.monotonic() - started
    kinds = Counter(a.kind for a in answers)
    print(f"{FLOOD} concurrent PUTs in {took:.1f}s: {dict(kinds)}")
    elections = election_lines(cluster, offsets)
    assert elections == [], f"an election happened during the flood: {elections}"
    assert {node_id: (cluster.status(node_id) or {}).get("term") for node_id in cluster.ids} == terms
    assert cluster.leader() == leader
    assert set(kinds) <= {"applied", "not-applied", "unknown"}, kinds
    assert kinds["applied"] >= FLOOD // 10, kinds

    async def check() -> list[tuple[int, Answer]]:
        limit = asyncio.Semaphore(64)

        async def read(number: int) -> tuple[int, Answer]:
            async with limit:
                return number, await exchange(address, "GET", f"/kv/f{number}")

        return await asyncio.gather(*(read(number) for number, answer in enumerate(answers)
                                      if answer.kind != "unknown"))

    for number, answer in asyncio.run(check()):
        expected = 200 if answers[number].kind == "applied" else 404
        assert answer.status == expected, f"f{number}: answered {answers[number].kind}, read {answer.status}"


def test_2000_slowloris_connections_are_closed_and_the_cluster_keeps_committing(
        make_cluster: Callable[..., LocalCluster]) -> None:
    cluster = make_cluster()
    leader = cluster.wait_for_leader(timeout=10, agreed=True)
    host, port = cluster.http_addresses[leader].split(":")
    attack_over = threading.Event()
    committed: list[tuple[float, str]] = []

    def writer() -> None:
        number = 0
        while not attack_over.is_set():
            number += 1
            for node_id in cluster.ids:
                try:
                    code, _ = cluster.put(node_id, f"during-{number}-{node_id}", "v", timeout=5)
                except OSError:
                    continue
                if code == 200:
                    committed.append((time.monotonic(), node_id))
            attack_over.wait(0.05)

    async def loris(opened: list[float]) -> tuple[str, float]:
        try:
            reader, writer = await asyncio.open_connection(host, int(port))
        except OSError as exc:
            return f"connect failed: {exc}", 0.0
        opened.append(time.monotonic())
        start = time.monotonic()
        writer.write(b"PUT /kv/x HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n")  # headers never finished
        try:
            async with asyncio.timeout(HEADER_TIMEOUT + 10):
                data = await reader.read()
        except (OSError, TimeoutError) as exc:
            return type(exc).__name__, time.monotonic() - start
        finally:
            writer.close()
        return ("refused" if data.startswith(b"HTTP/1.1 503") else "closed" if not data else "answered",
                time.monotonic() - start)

    async def attack() -> tuple[list[tuple[str, float]], list[float]]:
        opened: list[float] = []
        return await asyncio.gather(*(loris(opened) for _ in range(FLOOD))), opened

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        started = time.monotonic()
        results, opened = asyncio.run(attack())
    finally:
        attack_over.set()
        thread.join(10)
    ended = time.monotonic()
    outcomes = Counter(outcome for outcome, _ in results)
    print(f"{FLOOD} slowloris connections: {dict(outcomes)}; {len(committed)} writes committed meanwhile; "
          f"the last closed after {max(t for _, t in results):.1f}s")
    assert set(outcomes) <= {"closed", "refused"}, outcomes
    assert len(opened) == FLOOD
    assert max(t for _, t in results) <= HEADER_TIMEOUT + 5
    during = [node for at, node in committed if started + 1 < at < ended - 1]
    assert len(during) >= 20 and leader in during, f"writes committed during the attack: {Counter(during)}"

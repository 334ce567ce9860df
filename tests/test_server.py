"""RaftServer in one event loop: three nodes on real TCP sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from generated.raft_fsm import Role
from runtime.errors import NodeHalted, NotLeader
from runtime.kv import CompareAndSet, Delete, Get, KVResult, KVStateMachine, Put
from runtime.server import RaftServer
from runtime.storage.faulty import FaultyStorage
from runtime.storage.memory import MemoryStorage
from runtime.storage.sqlite import SqliteStorage

IDS = ("n1", "n2", "n3")
SECRET = b"test cluster secret, not a real one"


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


def cluster(storages: dict[str, object]) -> dict[str, RaftServer[object, KVResult]]:
    peers = {node_id: ("127.0.0.1", port) for node_id, port in zip(IDS, free_ports(3), strict=True)}
    return {
        node_id: RaftServer(node_id, peers, KVStateMachine(), storages[node_id], cluster_id="test",  # type: ignore[arg-type]
                            secret=SECRET)
        for node_id in IDS
    }


def run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(body())


async def leader_of(servers: dict[str, RaftServer[object, KVResult]]) -> RaftServer[object, KVResult]:
    await until(lambda: any(s.is_leader for s in servers.values()))
    return next(s for s in servers.values() if s.is_leader)


def test_kv_operations_commit_and_apply_on_every_node() -> None:
    async def body() -> None:
        servers = cluster({n: MemoryStorage() for n in IDS})
        for server in servers.values():
            await server.start()
        try:
            leader = await leader_of(servers)
            assert await leader.apply(Put("a", "1")) == KVResult(True, "1")
            assert await leader.apply(CompareAndSet("a", "0", "2")) == KVResult(False, "1")
            assert await leader.apply(CompareAndSet("a", "1", "2")) == KVResult(True, "2")
            assert await leader.apply(Get("a")) == KVResult(True, "2")
            assert await leader.apply(Delete("a")) == KVResult(True, "2")
            assert await leader.apply(Get("a")) == KVResult(False, None)
            results = await asyncio.gather(*(leader.apply(Put(f"k{i}", str(i))) for i in range(500)))
            assert all(r.ok for r in results)
            target = leader.core.commit_index
            await until(lambda: all(s.core.last_applied >= target for s in servers.values()))
            for server in servers.values():
                assert server.state_machine.data["k499"] == "499"  # type: ignore[attr-defined]
        finally:
            for server in servers.values():
                await server.stop()

    run(body)


def test_follower_refuses_with_the_leaders_address() -> None:
    async def body() -> None:
        servers = cluster({n: MemoryStorage() for n in IDS})
        for server in servers.values():
            await server.start()
        try:
            leader = await leader_of(servers)
            follower = next(s for s in servers.values() if not s.is_leader)
            await until(lambda: follower.leader_id == leader.node_id)
            with pytest.raises(NotLeader) as info:
                await follower.apply(Put("x", "y"))
            assert info.value.leader_id == leader.node_id
            host, port = leader.peers[leader.node_id]
            assert info.value.leader_address == f"{host}:{port}"
        finally:
            for server in servers.values():
                await server.stop()

    run(body)


def test_storage_failure_halts_the_node_and_the_rest_keeps_committing() -> None:
    """Principle 4: a node whose storage fails stops acknowledging; a majority carries on."""

    async def body() -> None:
        storages = {n: FaultyStorage(MemoryStorage()) for n in IDS}
        servers = cluster(storages)  # type: ignore[arg-type]
        for server in servers.values():
            await server.start()
        try:
            leader = await leader_of(servers)
            victim = next(s for s in servers.values() if not s.is_leader)
            storages[victim.node_id].fail_next("disk_full")
            await leader.apply(Put("before", "1"))
            await until(lambda: victim.role is Role.error)
            assert "disk full" in (victim.core.record.halt_reason or "")
            with pytest.raises(NodeHalted):
                await victim.apply(Put("x", "y"))
            for i in range(20):
                assert (await leader.apply(Put(f"after{i}", "v"))).ok
            assert victim.status()["role"] == "error"
        finally:
            for server in servers.values():
                await server.stop()

    run(body)


def test_restart_on_sqlite_resumes_term_vote_log_and_state(tmp_path: Path) -> None:
    async def body() -> None:
        def storages() -> dict[str, object]:
            return {n: SqliteStorage(tmp_path / n, node_id=n, cluster_id="test", fsync=False) for n in IDS}

        servers = cluster(storages())
        peers = next(iter(servers.values())).peers
        for server in servers.values():
            await server.start()
        leader = await leader_of(servers)
        for i in range(50):
            await leader.apply(Put(f"k{i}", str(i)))
        term = leader.core.term
        # a quorum acknowledged each write; let the third node catch up before stopping
        target = leader.core.commit_index
        await until(lambda: all(s.core.last_applied >= target for s in servers.values()))
        for server in servers.values():
            await server.stop()
        restarted = {
            n: RaftServer(n, peers, KVStateMachine(), SqliteStorage(tmp_path / n, node_id=n, cluster_id="test",
                                                                      fsync=False), cluster_id="test",
                          secret=SECRET)
            for n in IDS
        }
        assert all(s.core.term >= term and s.core.log.last_index >= 50 for s in restarted.values())
        for server in restarted.values():
            await server.start()
        try:
            leader = await leader_of(restarted)
            assert await leader.apply(Get("k49")) == KVResult(True, "49")
        finally:
            for server in restarted.values():
                await server.stop()

    run(body)


def test_an_oversized_command_is_refused_before_it_is_proposed() -> None:
    """A command that could never fit an AppendEntries frame must not reach the log."""

    async def body() -> None:
        servers = cluster({n: MemoryStorage() for n in IDS})
        for server in servers.values():
            await server.start()
        try:
            leader = await leader_of(servers)
            last_index = leader.core.log.last_index
            with pytest.raises(ValueError, match="exceeds the limit"):
                await leader.apply(Put("big", "x" * (9 << 20)))
            assert leader.core.log.last_index == last_index
            assert (await leader.apply(Put("small", "ok"))).ok
        finally:
            for server in servers.values():
                await server.stop()

    run(body)

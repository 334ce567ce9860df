"""A default `Config()` elects a leader, wherever it is used.

The bug this guards against: `Config.seed` defaulted to 0, so every node drew the same
"randomized" election timeouts, timed out on the same tick, split every vote and never
elected anyone (§5.2 relies on the timeouts being different).
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from generated.raft_fsm import Role
from runtime.consensus import Config
from runtime.core import RaftCore
from runtime.errors import NoLeader, RaftError
from runtime.kv import KVStateMachine
from runtime.server import RaftServer
from runtime.sim import Simulation
from runtime.storage.memory import MemoryStorage

IDS = ("n1", "n2", "n3")
SECRET = b"test cluster secret, not a real one"


def test_default_configs_draw_different_timeouts() -> None:
    """§5.2: election timeouts are chosen at random, independently on every node."""
    cores = [RaftCore(node_id, IDS, Config()) for node_id in IDS]
    draws = [tuple(_timeouts(core, 8)) for core in cores]
    assert len(set(draws)) == len(draws), draws


def _timeouts(core: RaftCore, count: int) -> list[int]:
    consensus = core._consensus
    values = []
    for _ in range(count):
        consensus.reset_election_timer()
        values.append(consensus.randomized_timeout)
    return values


def test_raft_cores_with_the_default_config_elect_a_leader() -> None:
    """Three cores driven by hand on a synchronous network (every message sent in a round
    is delivered in the next): a leader within a few election timeouts."""
    cores = {node_id: RaftCore(node_id, IDS, Config()) for node_id in IDS}
    ticks = 20 * Config().election_ticks
    for _ in range(ticks):
        for core in cores.values():
            core.tick()
        for _ in range(10):  # rounds of message exchange within one tick
            in_flight = []
            for core in cores.values():
                while core.has_ready():
                    ready = core.ready()
                    in_flight.extend(ready.messages)
                    core.advance(ready)
            for message in in_flight:
                cores[message.receiver].step(message)
        leaders = [c.id for c in cores.values() if c.role is Role.leader]
        if leaders:
            assert len(leaders) == 1
            return
    pytest.fail(f"no leader after {ticks} ticks: {[(c.id, c.role.name, c.term) for c in cores.values()]}")


def test_simulation_with_the_default_config_elects_a_leader() -> None:
    sim = Simulation(nodes=3, seed=1, config=Config())
    for _ in range(20 * Config().election_ticks):
        sim.step_tick()
        if sim.leader() is not None:
            return
    pytest.fail("the simulation elected no leader with Config()")


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def test_raft_servers_with_the_default_config_elect_and_re_elect() -> None:
    """The README's embedding: RaftServer(..., config=Config()). A leader is elected, and
    again after the first leader stops."""

    async def body() -> None:
        peers = {node_id: ("127.0.0.1", port) for node_id, port in zip(IDS, _free_ports(3), strict=True)}
        servers = {
            node_id: RaftServer(node_id, peers, KVStateMachine(), MemoryStorage(), cluster_id="t",
                                config=Config(), secret=SECRET)
            for node_id in IDS
        }
        for server in servers.values():
            await server.start()
        try:
            first = await servers["n1"].wait_for_leader(timeout=10)
            await servers[first].stop()
            rest = [s for n, s in servers.items() if n != first]

            async def new_leader() -> None:
                while not any(s.is_leader for s in rest):
                    await asyncio.sleep(0.01)

            await asyncio.wait_for(new_leader(), timeout=10)
        finally:
            for server in servers.values():
                await server.stop()

    asyncio.run(body())


def test_wait_for_leader_says_what_it_waited_for() -> None:
    async def body() -> None:
        peers = {node_id: ("127.0.0.1", port) for node_id, port in zip(IDS, _free_ports(3), strict=True)}
        # only n1 runs: it can never win an election
        server = RaftServer("n1", peers, KVStateMachine(), MemoryStorage(), cluster_id="t", secret=SECRET)
        await server.start()
        try:
            with pytest.raises(NoLeader) as caught:
                await server.wait_for_leader(timeout=0.3)
        finally:
            await server.stop()
        assert isinstance(caught.value, RaftError) and isinstance(caught.value, TimeoutError)
        message = str(caught.value)
        assert "n1 knows no leader after 0.3 s" in message and "voters n1, n2, n3" in message

    asyncio.run(body())

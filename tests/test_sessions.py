"""Client sessions (Raft thesis §6.3) and refused commands: every command applies exactly
once however often it is retried, and a state machine's refusal is an answer, not a crash."""

from __future__ import annotations

import asyncio

import msgpack
import pytest

from generated.raft_fsm import Entry, EntryKind, Role
from runtime.applier import Applier
from runtime.errors import CommandRejected, SessionExpired, StaleCommand
from runtime.kv import CompareAndSet, KVResult, KVStateMachine, Put
from runtime.server import RaftServer
from runtime.sessions import encode_command, encode_register
from runtime.sim import ListStateMachine, Simulation
from runtime.storage.memory import MemoryStorage
from tests.test_server import free_ports


def settle(sim: Simulation, handle: object, within: int = 300) -> None:
    for _ in range(within):
        if handle.done:  # type: ignore[attr-defined]
            return
        sim.step_tick()
    raise AssertionError(f"seed {sim.seed}: {handle} not settled within {within} ticks")


# -- the session table, entry by entry ------------------------------------------------------------
def entry(index: int, payload: bytes) -> Entry:
    return Entry(1, index, EntryKind.data, payload)


def test_a_retried_command_returns_the_first_result_and_applies_once() -> None:
    applier = Applier(KVStateMachine())
    applier.apply(entry(1, encode_register(1000)))
    client = 1
    put_x1 = KVStateMachine().encode(Put("x", "1"))
    put_x2 = KVStateMachine().encode(Put("x", "2"))
    first = applier.apply(entry(2, encode_command(put_x1, 1001, client, 1)))
    assert first is not None and applier.result(first) == KVResult(True, "1")
    applier.apply(entry(3, encode_command(put_x2, 1002)))  # another client's later write, no session
    again = applier.apply(entry(4, encode_command(put_x1, 1003, client, 1)))  # the retry of x=1
    assert again is not None and applier.result(again) == KVResult(True, "1")
    assert applier.machine.data == {"x": "2"}, "the retry undid a later write"  # type: ignore[attr-defined]


def test_a_retried_cas_answers_ok_not_a_lost_race() -> None:
    applier = Applier(KVStateMachine())
    applier.apply(entry(1, encode_register(0)))
    cas = KVStateMachine().encode(CompareAndSet("k", None, "mine"))
    applier.apply(entry(2, encode_command(cas, 1, 1, 1)))
    retry = applier.apply(entry(3, encode_command(cas, 2, 1, 1)))
    assert retry is not None and applier.result(retry) == KVResult(True, "mine")


def test_unknown_expired_and_stale_sessions_are_refused_without_applying() -> None:
    applier = Applier(ListStateMachine(), session_timeout_ms=1000)
    unknown = applier.apply(entry(1, encode_command(b"a", 0, 77, 1)))
    assert unknown is not None
    with pytest.raises(SessionExpired):
        applier.result(unknown)
    applier.apply(entry(2, encode_register(0)))
    applier.apply(entry(3, encode_command(b"b", 10, 2, 1)))
    applier.apply(entry(4, encode_command(b"c", 20, 2, 2)))  # ack 2: the answer to 1 is forgotten
    stale = applier.apply(entry(5, encode_command(b"b", 30, 2, 1, 2)))
    assert stale is not None
    with pytest.raises(StaleCommand):
        applier.result(stale)
    applier.apply(entry(6, encode_register(5000)))  # the log's clock moves on: session 2 expires
    late = applier.apply(entry(7, encode_command(b"d", 5001, 2, 3)))
    assert late is not None
    with pytest.raises(SessionExpired):
        applier.result(late)
    assert applier.machine.commands == [b"b", b"c"]  # type: ignore[attr-defined]


def test_sessions_survive_a_snapshot() -> None:
    applier = Applier(KVStateMachine())
    applier.apply(entry(1, encode_register(0)))
    put = KVStateMachine().encode(Put("a", "1"))
    applier.apply(entry(2, encode_command(put, 1, 1, 1)))
    restored = Applier(KVStateMachine())
    restored.restore(applier.snapshot())
    retry = restored.apply(entry(3, encode_command(put, 2, 1, 1)))
    assert retry is not None and not retry.fresh and restored.result(retry) == KVResult(True, "1")


# -- the simulator ------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(3))
def test_simulation_a_command_proposed_twice_in_one_session_applies_once(seed: int) -> None:
    sim = Simulation(nodes=3, seed=seed, snapshot_every=5)
    sim.run(100)
    session = sim.open_session()
    settle(sim, session)
    client = session.result
    assert isinstance(client, int)
    first = sim.propose(b"once", session=(client, 1))
    settle(sim, first)
    for _ in range(10):
        sim.propose(b"filler")
    sim.run(50)
    retry = sim.propose(b"once", session=(client, 1))
    settle(sim, retry)
    assert retry.result == first.result, "the retry did not return the original result"
    sim.run(50)
    sim.check()
    for node in sim.nodes.values():
        commands = node.machine.commands  # type: ignore[attr-defined]
        assert commands.count(b"once") == 1, f"seed {seed}: {node.id} applied it {commands.count(b'once')} times"


# -- RaftServer ---------------------------------------------------------------------------------
class Account:
    """A toy state machine that refuses overdrafts (CommandRejected before any change) and
    has a bug: the command "boom" raises a plain exception."""

    def __init__(self) -> None:
        self.balance = 0

    def encode(self, command: int | str) -> bytes:
        return msgpack.packb(command)  # type: ignore[no-any-return]

    def decode(self, data: bytes) -> int | str:
        value = msgpack.unpackb(data)
        assert isinstance(value, int | str)
        return value

    def apply(self, command: int | str) -> int:
        if command == "boom":
            raise ZeroDivisionError("a bug in the state machine")
        assert isinstance(command, int)
        if self.balance + command < 0:
            raise CommandRejected(f"insufficient funds: balance {self.balance}, change {command}")
        self.balance += command
        return self.balance

    def query(self, command: int | str) -> int:
        return self.balance

    def encode_result(self, result: int) -> bytes:
        return msgpack.packb(result)  # type: ignore[no-any-return]

    def decode_result(self, data: bytes) -> int:
        value = msgpack.unpackb(data)
        assert isinstance(value, int)
        return value

    def snapshot(self) -> bytes:
        return msgpack.packb(self.balance)  # type: ignore[no-any-return]

    def restore(self, data: bytes) -> None:
        self.balance = msgpack.unpackb(data)


def _servers() -> dict[str, RaftServer[int | str, int]]:
    peers = {f"n{i + 1}": ("127.0.0.1", port) for i, port in enumerate(free_ports(3))}
    return {node_id: RaftServer(node_id, peers, Account(), MemoryStorage(), cluster_id="t", secret=b"k" * 32)
            for node_id in peers}


def test_a_refused_command_is_an_answer_and_every_node_stays_up() -> None:
    async def body() -> None:
        servers = _servers()
        for server in servers.values():
            await server.start()
        try:
            leader = servers[await servers["n1"].wait_for_leader(timeout=10)]
            assert await leader.apply(10) == 10
            with pytest.raises(CommandRejected, match="insufficient funds: balance 10, change -50"):
                await leader.apply(-50)
            assert await leader.apply(-4) == 6
            target = leader.core.commit_index
            for _ in range(500):
                if all(s.core.last_applied >= target for s in servers.values()):
                    break
                await asyncio.sleep(0.01)
            assert {s.role for s in servers.values()} <= {Role.leader, Role.follower}
            assert [s.state_machine.balance for s in servers.values()] == [6, 6, 6]  # type: ignore[attr-defined]
            # exactly once through RaftServer: the same (client, sequence) twice
            client = await leader.open_session()
            assert await leader.apply(100, session=(client, 1)) == 106
            assert await leader.apply(100, session=(client, 1)) == 106
            assert await leader.apply(1, session=(client, 2)) == 107
        finally:
            for server in servers.values():
                await server.stop()

    asyncio.run(body())


def test_a_state_machine_bug_halts_the_node_with_the_traceback_in_its_log(caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        servers = _servers()
        for server in servers.values():
            await server.start()
        try:
            leader = servers[await servers["n1"].wait_for_leader(timeout=10)]
            with pytest.raises(Exception):  # noqa: B017 - the client's error depends on timing
                await leader.apply("boom", timeout=2)
            boom = leader.core.log.last_index
            for _ in range(500):
                if leader.role is Role.error:
                    break
                await asyncio.sleep(0.01)
            # apply is deterministic: every node that learned the entry is committed stops on it;
            # one that did not learn it in time stays behind (it can never apply it)
            for server in servers.values():
                reason = server.core.record.halt_reason
                if server.core.commit_index >= boom:
                    assert server.role is Role.error, server.node_id
                if server.role is Role.error:
                    assert reason is not None and "ZeroDivisionError" in reason and f"entry {boom}" in reason, reason
                else:
                    assert server.core.last_applied < boom
            assert leader.role is Role.error
        finally:
            for server in servers.values():
                await server.stop()

    asyncio.run(body())
    assert "Traceback" in caplog.text or any(r.exc_info for r in caplog.records)

"""ReadIndex (Raft thesis §6.4) against one `RaftCore` driven by hand, and linearizable
reads through `RaftServer` on real sockets."""

from __future__ import annotations

import asyncio

import pytest

from generated.raft_fsm import AppendEntries, AppendEntriesReply, ReadIndexReply, ReadIndexRequest, Role
from runtime.errors import NotLeader
from runtime.kv import Get, KVResult, KVStateMachine, Put
from runtime.ready import ReadState
from runtime.server import RaftServer
from runtime.storage.memory import MemoryStorage
from tests.test_raft_rules import (
    append,
    core_with,
    drain_all,
    elect,
    make_leader,
    messages,
)


def reply(sender: str, term: int, match: int, read_round: int) -> AppendEntriesReply:
    return AppendEntriesReply(99, sender, "n1", term, True, match, 0, 0, 0, read_round)


def read_states(core: object) -> list[ReadState]:
    return [state for ready in drain_all(core) for state in ready.read_states]  # type: ignore[arg-type]


def test_s6_4_a_read_waits_for_one_heartbeat_round_acknowledged_by_a_quorum() -> None:
    leader = make_leader()
    commit = leader.commit_index
    leader.read(7)
    sent = messages(drain_all(leader))
    rounds = {m.receiver: m.read_round for m in sent if isinstance(m, AppendEntries)}
    assert set(rounds) == {"n2", "n3"} and len(set(rounds.values())) == 1
    assert read_states(leader) == []  # nobody answered yet
    round_ = rounds["n2"]
    leader.step(reply("n2", leader.term, commit, round_ - 1))  # an answer to an earlier message
    assert read_states(leader) == []
    leader.step(reply("n2", leader.term, commit, round_))  # n1 + n2: a quorum of 3
    assert read_states(leader) == [ReadState(7, commit)]


def test_s6_4_reads_arriving_together_share_one_round() -> None:
    leader = make_leader()
    for request_id in range(10):
        leader.read(request_id)
    sent = [m for m in messages(drain_all(leader)) if isinstance(m, AppendEntries)]
    assert len(sent) == 2, "one heartbeat per follower for ten reads"
    leader.step(reply("n3", leader.term, leader.commit_index, sent[0].read_round))
    assert [s.request_id for s in read_states(leader)] == list(range(10))


def test_s6_4_a_new_leader_answers_reads_only_after_committing_an_entry_of_its_term() -> None:
    core = core_with("n1")
    first = elect(core)
    noop = next(m for m in first.messages if isinstance(m, AppendEntries))
    core.read(1)
    sent = [m for m in messages(drain_all(core)) if isinstance(m, AppendEntries)]
    # the quorum confirms the round but has not stored the no-op yet: no answer
    core.step(reply("n2", core.term, 0, sent[-1].read_round))
    assert read_states(core) == []
    core.step(reply("n2", core.term, noop.prev_log_index + 1, sent[-1].read_round))
    assert read_states(core) == [ReadState(1, 1)]


def test_s6_4_a_leader_that_loses_office_refuses_its_pending_reads() -> None:
    leader = make_leader()
    leader.read(3)
    drain_all(leader)
    leader.step(append("n2", "n1", leader.term + 1, 0, 0))
    assert leader.role is Role.follower
    assert read_states(leader) == [ReadState(3, None)]


def test_s6_4_follower_reads_ask_the_leader_for_a_read_index() -> None:
    follower = core_with("n2", term=1)
    follower.step(append("n1", "n2", 1, 0, 0))
    drain_all(follower)
    follower.read(5)
    (request,) = [m for m in messages(drain_all(follower)) if isinstance(m, ReadIndexRequest)]
    assert (request.receiver, request.request_id) == ("n1", 5)
    leader = make_leader()
    leader.step(ReadIndexRequest(1, "n2", "n1", leader.term, 5))
    sent = [m for m in messages(drain_all(leader)) if isinstance(m, AppendEntries)]
    leader.step(reply("n3", leader.term, leader.commit_index, sent[0].read_round))
    (answer,) = [m for m in messages(drain_all(leader)) if isinstance(m, ReadIndexReply)]
    assert (answer.receiver, answer.request_id, answer.read_index, answer.success) == ("n2", 5, 1, True)
    follower.step(ReadIndexReply(2, "n1", "n2", 1, 5, 1, True))
    assert read_states(follower) == [ReadState(5, 1)]


def test_s6_4_a_node_that_knows_no_leader_refuses_reads() -> None:
    core = core_with("n2")
    with pytest.raises(NotLeader):
        core.read(1)
    not_leader = core_with("n3", term=1)
    not_leader.step(ReadIndexRequest(1, "n2", "n3", 1, 9))
    (answer,) = [m for m in messages(drain_all(not_leader)) if isinstance(m, ReadIndexReply)]
    assert not answer.success


def test_lease_reads_answer_at_once_while_a_quorum_answered_recently() -> None:
    leader = make_leader(read_mode="lease")
    leader.read(1)
    assert read_states(leader) == [ReadState(1, 1)]  # n2 and n3 answered the no-op just now
    for _ in range(leader.config.election_ticks):
        leader.tick()
        for ready in drain_all(leader):
            for message in ready.messages:
                if isinstance(message, AppendEntries) and message.receiver == "n2":
                    leader.step(reply("n2", leader.term, leader.commit_index, message.read_round))
    leader.read(2)  # n3 silent for an election timeout, n2 answering: still a quorum
    assert read_states(leader) == [ReadState(2, 1)]
    silent = make_leader(read_mode="lease")
    for _ in range(silent.config.election_ticks - silent.config.lease_drift_ticks):
        silent.tick()
        drain_all(silent)
    silent.read(3)  # nobody answered within the lease: fall back to a ReadIndex round
    assert read_states(silent) == []


def _cluster(ports: list[int]) -> dict[str, RaftServer[object, KVResult]]:
    peers = {f"n{i + 1}": ("127.0.0.1", port) for i, port in enumerate(ports)}
    return {
        node_id: RaftServer(node_id, peers, KVStateMachine(), MemoryStorage(), cluster_id="t",  # type: ignore[arg-type]
                            secret=b"s" * 32)
        for node_id in peers
    }


def test_reads_through_raft_server_on_leader_and_followers() -> None:
    """A write acknowledged by the leader is seen by a ReadIndex read on every node, and
    no read goes through the log."""
    from tests.test_server import free_ports

    async def body() -> None:
        servers = _cluster(free_ports(3))
        for server in servers.values():
            await server.start()
        try:
            leader_id = await servers["n1"].wait_for_leader(timeout=10)
            leader = servers[leader_id]
            for node in servers.values():
                await node.wait_for_leader(timeout=10)
            for number in range(20):
                await leader.apply(Put("k", str(number)))
                last_index = leader.core.log.last_index
                for node in servers.values():
                    assert await node.read(Get("k")) == KVResult(True, str(number)), node.node_id
                assert leader.core.log.last_index == last_index, "a read wrote to the log"
            results = await asyncio.gather(*(servers[n].read(Get("k")) for n in servers for _ in range(50)))
            assert set(results) == {KVResult(True, "19")}
        finally:
            for server in servers.values():
                await server.stop()

    asyncio.run(body())

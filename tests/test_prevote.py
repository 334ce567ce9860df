"""PreVote (Raft thesis §9.6): ask before campaigning, so a node cut off from the cluster
never raises its term and cannot depose a healthy leader when it returns."""

from __future__ import annotations

from generated.raft_fsm import PreVote, PreVoteReply, RequestVote, Role
from runtime.consensus import Config
from runtime.core import RaftCore
from runtime.sim import Simulation

VOTERS = ("n1", "n2", "n3")


def sent(core: RaftCore) -> list[object]:
    ready = core.ready()
    core.advance(ready)
    return list(ready.messages)


def tick_until(core: RaftCore, role: Role, limit: int = 100) -> None:
    for _ in range(limit):
        if core.role is role:
            return
        core.tick()
    raise AssertionError(f"{core.id} never became {role.name}")


def test_election_timeout_asks_first_without_taking_a_new_term() -> None:
    node = RaftCore("n1", VOTERS, Config(seed=1))
    tick_until(node, Role.pre_candidate)
    messages = sent(node)
    assert node.term == 0
    assert {type(m) for m in messages} == {PreVote}
    assert all(m.term == 1 for m in messages)  # the term it would campaign in


def test_a_quorum_of_pre_votes_starts_the_real_election() -> None:
    node = RaftCore("n1", VOTERS, Config(seed=1))
    tick_until(node, Role.pre_candidate)
    sent(node)
    node.step(PreVoteReply(1, "n2", "n1", 1, True))  # a grant carries the asked term: not adopted
    assert node.role is Role.candidate and node.term == 1
    assert {type(m) for m in sent(node)} == {RequestVote}


def test_a_refusal_with_a_higher_term_demotes_the_pre_candidate() -> None:
    node = RaftCore("n1", VOTERS, Config(seed=1))
    tick_until(node, Role.pre_candidate)
    node.step(PreVoteReply(1, "n2", "n1", 5, False))
    assert node.role is Role.follower and node.term == 5


def test_a_node_that_hears_its_leader_refuses_pre_votes_and_keeps_its_term() -> None:
    sim = Simulation(nodes=3, seed=4)
    sim.run(100)
    leader = sim.leader()
    assert leader is not None
    follower = next(n for n in sim.ids if n != leader)
    core = sim.nodes[follower].core
    term = core.term
    asker = next(n for n in sim.ids if n not in (leader, follower))
    core.step(PreVote(99, asker, follower, term + 1, asker, 10**6, term))
    replies = [m for m in sent(core) if isinstance(m, PreVoteReply)]
    assert replies and not replies[0].vote_granted and core.term == term


def test_a_partitioned_node_does_not_raise_its_term_or_disrupt_the_leader_on_return() -> None:
    sim = Simulation(nodes=3, seed=7)
    sim.run(100)
    leader = sim.leader()
    assert leader is not None
    term = sim.nodes[leader].core.term
    victim = next(n for n in sim.ids if n != leader)
    sim.isolate(victim)
    sim.run(300)  # many election timeouts for the isolated node
    assert sim.nodes[victim].core.term == term
    sim.heal()
    sim.run(100)
    assert sim.leader() == leader and sim.nodes[leader].core.term == term
    sim.check()

"""Membership changes one server at a time (Raft thesis §4.1), learners, and leadership
transfer (§3.10), against `RaftCore`s driven by hand and the simulator."""

from __future__ import annotations

import pytest

from generated.raft_fsm import AppendEntries, RequestVote, Role, TimeoutNow
from runtime.consensus import Config
from runtime.core import RaftCore
from runtime.errors import MembershipChangeRefused, NotLeader
from runtime.membership import Configuration, Member
from runtime.sim import Nemesis, Simulation
from runtime.storage.memory import MemoryStorage
from tests.test_raft_rules import Net, append_ok, core_with, drain_all, elect, make_leader, messages


def three() -> Configuration:
    return Configuration.voters_only(("n1", "n2", "n3"))


def test_s4_1_a_new_leader_changes_nothing_before_committing_an_entry_of_its_term() -> None:
    core = core_with("n1")
    elect(core)  # its no-op is not acknowledged yet
    with pytest.raises(MembershipChangeRefused, match="not committed an entry of its own term"):
        core.change_membership(three().with_learner(Member("n4")))


def test_s4_1_one_change_at_a_time_and_one_voter_at_a_time() -> None:
    leader = make_leader()
    leader.change_membership(three().with_learner(Member("n4")))
    with pytest.raises(MembershipChangeRefused, match="not committed yet; one at a time"):
        leader.change_membership(three().with_learner(Member("n4")).with_learner(Member("n5")))
    fresh = make_leader()
    two_voters = Configuration.voters_only(("n1", "n2", "n3", "n4", "n5"))
    with pytest.raises(MembershipChangeRefused, match="changes 2 voters"):
        fresh.change_membership(two_voters)
    with pytest.raises(MembershipChangeRefused, match="must join as a learner first"):
        fresh.change_membership(Configuration.voters_only(("n1", "n2", "n3", "n4")))


def test_s4_1_a_configuration_takes_effect_when_appended_not_when_committed() -> None:
    leader = make_leader()
    leader.change_membership(three().with_learner(Member("n4")))
    assert leader.configuration.learners == ("n4",) and "n4" in leader.record.peers
    sent = messages(drain_all(leader))
    assert any(isinstance(m, AppendEntries) and m.receiver == "n4" for m in sent), "the new learner gets the log"
    assert not leader.configuration_committed


def test_learners_count_toward_no_quorum_and_never_campaign() -> None:
    leader = make_leader()
    leader.change_membership(three().with_learner(Member("n4")))
    drain_all(leader)
    index = leader.log.last_index
    leader.step(append_ok("n4", "n1", leader.term, index))
    assert leader.commit_index < index, "a learner's acknowledgement counted toward a commit"
    learner = RaftCore("n4", three().with_learner(Member("n4")), Config(seed=3))
    for _ in range(100):
        learner.tick()
    assert learner.role is Role.follower and learner.term == 0
    assert not [m for m in messages(drain_all(learner)) if isinstance(m, RequestVote)]


def test_a_learner_is_promoted_only_once_caught_up() -> None:
    learner = three().with_learner(Member("n4"))
    config = Config(max_promotion_lag=2, seed=1)
    cores = {n: RaftCore(n, three() if n != "n4" else learner, config) for n in ("n1", "n2", "n3", "n4")}
    net = Net(cores.values())
    cores["n1"].campaign()
    net.pump()
    leader = cores["n1"]
    leader.change_membership(learner)
    net.pump()
    net.cores.pop("n4")  # the learner falls behind
    for number in range(5):
        leader.propose(b"x%d" % number)
    net.pump()
    with pytest.raises(MembershipChangeRefused, match="entries behind"):
        leader.change_membership(leader.configuration.promoted("n4"))
    net.cores["n4"] = cores["n4"]  # it catches up
    for _ in range(3):
        leader.tick()
        net.pump()
    leader.change_membership(leader.configuration.promoted("n4"))
    assert leader.voters == ("n1", "n2", "n3", "n4") and leader.record.peers["n4"].can_vote
    net.pump()
    assert cores["n4"].configuration.voters == ("n1", "n2", "n3", "n4")


def test_a_leader_that_removes_itself_steps_down_once_the_change_commits() -> None:
    leader = make_leader()
    leader.change_membership(three().without("n1"))
    drain_all(leader)
    index = leader.log.last_index
    leader.step(append_ok("n2", "n1", leader.term, index))
    assert leader.role is Role.leader and leader.commit_index < index, "it counted itself"
    leader.step(append_ok("n3", "n1", leader.term, index))
    assert leader.commit_index == index and leader.role is Role.follower
    for _ in range(100):
        leader.tick()
        drain_all(leader)
    assert leader.role is Role.follower, "a node outside the configuration campaigned"


def test_truncating_an_uncommitted_configuration_entry_restores_the_previous_one() -> None:
    follower = core_with("n2", term=1)
    added = three().with_learner(Member("n4"))
    from generated.raft_fsm import Entry, EntryKind

    follower.step(AppendEntries(1, "n1", "n2", 1, "n1", 0, 0,
                                (Entry(1, 1, EntryKind.configuration, added.encode()),), 0, 0))
    assert follower.configuration == added
    # the term-2 leader never had that entry: it is overwritten
    follower.step(AppendEntries(2, "n3", "n2", 2, "n3", 0, 0, (Entry(2, 1, EntryKind.noop, b""),), 1, 0))
    assert follower.configuration == three()


def test_the_configuration_survives_compaction_and_a_restart() -> None:
    sim = Simulation(nodes=3, seed=2, snapshot_every=5)
    sim.run(100)
    leader = sim.leader()
    assert leader is not None
    new = sim.add_node()
    sim.change_membership(sim.nodes[leader].core.configuration.with_learner(Member(new)))
    for number in range(30):
        sim.propose(b"x%d" % number)
        sim.run(3)
    sim.run(100)
    for node_id in sim.ids:
        sim.crash(node_id)
        sim.restart(node_id)
    sim.run(200)
    for node in sim.nodes.values():
        assert node.core.configuration.learners == (new,), node.id
        assert node.core._consensus.snapshot is not None
    sim.check()


# -- leadership transfer (thesis §3.10) ----------------------------------------------------------
def test_s3_10_the_target_campaigns_at_once_and_voters_set_stickiness_aside() -> None:
    cores = {n: RaftCore(n, ("n1", "n2", "n3"), Config(seed=i)) for i, n in enumerate(("n1", "n2", "n3"))}
    net = Net(cores.values())
    cores["n1"].campaign()
    net.pump()
    assert cores["n1"].role is Role.leader
    cores["n1"].propose(b"x")
    net.pump()
    assert cores["n1"].transfer_leadership("n2") == "n2"
    with pytest.raises(NotLeader):
        cores["n1"].propose(b"refused during the transfer")
    net.pump()
    assert any(isinstance(m, TimeoutNow) and m.receiver == "n2" for m in net.delivered)
    assert any(isinstance(m, RequestVote) and m.leadership_transfer for m in net.delivered)
    assert cores["n2"].role is Role.leader and cores["n1"].role is Role.follower
    assert cores["n2"].term == cores["n1"].term


def test_s3_10_a_transfer_that_does_not_finish_is_abandoned_after_an_election_timeout() -> None:
    leader = make_leader()
    leader.transfer_leadership("n2")
    # n2 never answers: no TimeoutNow, proposals refused, until the transfer is given up
    with pytest.raises(NotLeader):
        leader.propose(b"x")
    for _ in range(2 * leader.config.election_ticks + 1):
        leader.tick()
        for ready in drain_all(leader):
            for message in ready.messages:
                if isinstance(message, AppendEntries) and message.receiver == "n3":
                    leader.step(append_ok("n3", "n1", leader.term, message.prev_log_index + len(message.entries)))
    assert leader.role is Role.leader
    leader.propose(b"accepted again")


def test_refused_transfers_say_why() -> None:
    leader = make_leader()
    with pytest.raises(MembershipChangeRefused, match="is the leader already"):
        leader.transfer_leadership("n1")
    with pytest.raises(MembershipChangeRefused, match="is not a voter"):
        leader.transfer_leadership("n9")


# -- the simulator -------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(4))
def test_simulation_with_membership_changes_and_transfers(seed: int) -> None:
    print(f"seed {seed}")
    sim = Simulation(nodes=3, seed=seed, snapshot_every=20)
    Nemesis(sim, ("membership", "crash", "partition", "drop"), rate=0.05).run(2000)
    sim.check_liveness()


def test_replacing_a_node_in_the_simulator() -> None:
    """3 voters -> add a learner -> promote it -> remove an original voter: writes go on."""
    sim = Simulation(nodes=3, seed=9)
    sim.run(100)
    leader = sim.leader()
    assert leader is not None
    new = sim.add_node()
    sim.change_membership(sim.nodes[leader].core.configuration.with_learner(Member(new)))
    for number in range(20):
        sim.propose(b"before-%d" % number)
        sim.run(3)
    leader = sim.leader()
    assert leader is not None
    sim.change_membership(sim.nodes[leader].core.configuration.promoted(new))
    sim.run(30)
    leader = sim.leader()
    assert leader is not None
    victim = next(n for n in ("n1", "n2", "n3") if n != leader)
    sim.change_membership(sim.nodes[leader].core.configuration.without(victim))
    for number in range(20):
        sim.propose(b"after-%d" % number)
        sim.run(3)
    sim.run(50)
    leader = sim.leader()
    assert leader is not None
    assert set(sim.nodes[leader].core.voters) == ({"n1", "n2", "n3", new} - {victim})
    sim.check_liveness()
    assert MemoryStorage  # storage of the new node is an ordinary MemoryStorage

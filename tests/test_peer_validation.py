"""Trust at the peer boundary, inside the core: a message no correct peer sends is dropped
with a reason, changes nothing and never raises; the error role is for local failures only.

Each test replays an attack an outside check made against a real cluster (one frame
halted a node through an `assert`, or moved its term for good), at the level of one
`RaftCore`. The transport tests show the same frames cannot even reach the core without
credentials; these show that the core survives them anyway.
"""

from __future__ import annotations

import contextlib
import random
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from generated.raft_fsm import (
    AppendEntries,
    AppendEntriesReply,
    Entry,
    EntryKind,
    InstallSnapshot,
    InstallSnapshotReply,
    PreVote,
    PreVoteReply,
    RequestVote,
    RequestVoteReply,
    Role,
    WireMessage,
)
from runtime.codec import FrameError, decode, encode
from runtime.consensus import Config
from runtime.core import RaftCore
from runtime.forgery import STRANGER, from_stranger, impossible
from runtime.limits import MAX_TERM, MAX_WIRE_INT
from runtime.membership import Configuration
from runtime.sim import Nemesis, Simulation
from tests.test_raft_rules import (
    append,
    append_ok,
    core_with,
    drain_all,
    log_of,
    make_leader,
    messages,
    vote_req,
)

CONF3 = Configuration.voters_only(('n1', 'n2', 'n3')).encode()


def fingerprint(core: RaftCore) -> tuple[Any, ...]:
    """Everything a message could change in a node."""
    record = core.record
    consensus = core._consensus
    return (
        record.role, record.current_term, record.voted_for, record.commit_index, record.last_applied,
        record.leader_id, [(e.term, e.index, e.kind, e.data) for e in record.log.entries], record.log.offset,
        {p.id: (p.next_index, p.match_index, p.probing, p.voted, p.recent_active, p.sent_index, p.stalled,
                tuple(p.inflight)) for p in record.peers.values()},
        consensus.election_elapsed, bytes(consensus._snapshot_chunks), consensus._snapshot_stream,
    )


def follower_with_commit() -> RaftCore:
    """n2, follower of n1 in term 2, log 1@1 2@1 3@2 4@2, committed up to 3."""
    core = core_with("n2", entries=log_of(1, 1, 2, 2), term=2, commit=3)
    core.step(append("n1", "n2", 2, 4, 2, commit=3))
    drain_all(core)
    assert core.leader_id == "n1" and core.commit_index == 3
    return core


def assert_dropped(core: RaftCore, message: WireMessage, words: str) -> None:
    before = fingerprint(core)
    dropped = core.step(message)
    assert dropped is not None and dropped.invalid, dropped
    assert words in dropped.reason, dropped.reason
    assert fingerprint(core) == before, "a dropped message changed the node"
    assert not core.has_ready() or not core.ready().messages


# -- the reported attacks ---------------------------------------------------------------------------
def test_append_entries_conflicting_below_the_commit_index_is_dropped_not_asserted() -> None:
    """It used to reach `assert index > commit_index` and send the node to the error role."""
    core = follower_with_commit()
    # the frame that halted nodes: anchored at the commit index, carrying an entry for a
    # committed index with another term
    crash = append("n1", "n2", 2, 3, 2, [Entry(1, 3, EntryKind.data, b"put pwned evil")], commit=4)
    assert_dropped(core, crash, "not contiguous")
    forged = append("n1", "n2", 2, 1, 1, [Entry(2, 2, EntryKind.data, b"put pwned evil")], commit=4)
    assert_dropped(core, forged, "would overwrite a committed entry")
    assert core.role is Role.follower
    # the prev entry itself contradicting a committed one is the same lie
    assert_dropped(core, append("n1", "n2", 2, 3, 1, commit=4), "conflicts with the committed entry")


def test_append_entries_reply_acknowledging_the_future_is_dropped() -> None:
    """match_index = 10^9 used to push next_index past the log and trip an assert."""
    leader = make_leader()
    assert_dropped(leader, append_ok("n2", "n1", leader.term, 10**9), "beyond what was sent")
    reject = AppendEntriesReply(1, "n2", "n1", leader.term, False, 0, 10**9, 0, 0, 0)
    assert_dropped(leader, reject, "beyond what was sent")
    assert leader.role is Role.leader
    index, _ = leader.propose(b"still works")
    assert index == 2


def test_terms_beyond_storage_are_invalid_and_exhausted_terms_never_campaign() -> None:
    core = core_with("n1")
    assert_dropped(core, vote_req("n2", "n1", MAX_TERM + 1, 0, 0), "larger than storage can hold")
    # a node that reached the last storable term never campaigns again (it would need one more)
    exhausted = core_with("n1", term=MAX_TERM)
    for _ in range(100):
        exhausted.tick()
    assert exhausted.role is Role.follower and exhausted.term == MAX_TERM
    assert not [m for m in messages(drain_all(exhausted)) if isinstance(m, RequestVote | PreVote)]


@pytest.mark.parametrize(
    "value", [-1, MAX_WIRE_INT + 1, 2**64 - 1],
)
def test_codec_rejects_integers_outside_0_to_2_63_minus_1(value: int) -> None:
    good = encode(vote_req("n2", "n1", 1, 0, 0))
    frame = encode(RequestVote(1, "n2", "n1", 5, "n2", 0, 0)).replace(b"\x05", _packed(value), 1)
    assert decode(good)
    with pytest.raises(FrameError, match=r"outside 0\.\."):
        decode(frame)


def _packed(value: int) -> bytes:
    import msgpack

    return msgpack.packb(value)  # type: ignore[no-any-return]


def test_impossible_append_entries_are_dropped() -> None:
    core = follower_with_commit()
    entry = Entry(2, 5, EntryKind.data, b"x")
    cases = {
        "not contiguous": append("n1", "n2", 2, 4, 2, [entry, attrs.evolve(entry, index=7)]),
        "outside": append("n1", "n2", 2, 4, 2, [attrs.evolve(entry, term=9)]),
        "decrease": append("n1", "n2", 3, 4, 2, [attrs.evolve(entry, term=3), Entry(2, 6, EntryKind.data, b"")]),
        "is above the leader's term": append("n1", "n2", 2, 4, 5),
        "is impossible": append("n1", "n2", 2, 4, 0),
    }
    for words, message in cases.items():
        assert_dropped(core, message, words)
    not_the_sender = attrs.evolve(append("n1", "n2", 2, 4, 2), leader_id="n3")
    assert_dropped(core, not_the_sender, "is not the sender")


def test_impossible_snapshots_and_votes_are_dropped() -> None:
    core = follower_with_commit()
    chunk = InstallSnapshot(1, "n1", "n2", 2, "n1", 4, 2, CONF3, 1, 10, bytes(32), 0, b"data", False)
    limit = Config().max_snapshot_bytes
    assert_dropped(core, attrs.evolve(chunk, size=limit + 1), "over the limit")
    assert_dropped(core, attrs.evolve(chunk, offset=8), "beyond the snapshot's 10 bytes")
    assert_dropped(core, attrs.evolve(chunk, checksum=b"x"), "is not a SHA-256")
    assert_dropped(core, attrs.evolve(chunk, configuration=b"\x90"), "configuration is malformed")
    assert_dropped(core, attrs.evolve(chunk, last_included_term=3), "above the leader's term")
    assert_dropped(core, attrs.evolve(chunk, last_included_index=3, last_included_term=1), "conflicts")
    assert_dropped(core, attrs.evolve(vote_req("n3", "n2", 3, 4, 2), candidate_id="n1"), "is not the sender")
    assert_dropped(core, vote_req("n3", "n2", 3, 4, 4), "above the election's term")
    leader = make_leader()
    reply = InstallSnapshotReply(1, "n2", "n1", leader.term, 10**6, 1, 0, True)
    assert_dropped(leader, reply, "beyond what was sent")


def test_a_stranger_is_dropped_not_raised() -> None:
    core = follower_with_commit()
    rng = random.Random(7)
    for number in range(50):
        message = from_stranger(rng, "n2", number)
        before = fingerprint(core)
        dropped = core.step(message)
        # not "invalid": a removed member's late messages look the same; the transport keeps
        # real strangers out by authentication
        assert dropped is not None and "outside the configuration" in dropped.reason, dropped
        assert fingerprint(core) == before


# -- leader stickiness (thesis §4.2.3) and CheckQuorum -------------------------------------------
def test_a_follower_with_a_live_leader_ignores_higher_term_vote_requests() -> None:
    """A stranger-turned-member's RequestVote for term+1000 used to depose the leader in 50 ms."""
    core = follower_with_commit()
    dropped = core.step(vote_req("n3", "n2", 1002, 10, 2))
    assert dropped is not None and not dropped.invalid and "leader stickiness" in dropped.reason
    assert core.term == 2 and core.leader_id == "n1"
    assert not messages(drain_all(core))
    # once the leader is silent for an election timeout, the same request is heard
    for _ in range(Config().election_ticks):
        core.tick()
    drain_all(core)
    assert core.step(vote_req("n3", "n2", 1002, 10, 2)) is None
    assert core.term == 1002


def test_a_leader_with_check_quorum_ignores_higher_term_vote_requests() -> None:
    leader = make_leader()
    assert leader.step(vote_req("n2", "n1", leader.term + 1000, 50, 1)) is not None
    assert leader.role is Role.leader and leader.term == 1
    no_stickiness = make_leader(check_quorum=False)
    assert no_stickiness.step(vote_req("n2", "n1", 1001, 50, 1)) is None
    assert no_stickiness.role is Role.follower


def test_an_isolated_new_leader_steps_down_within_one_election_timeout() -> None:
    """CheckQuorum used to count every peer active in a new leader's first period."""
    core = core_with("n1")
    core.campaign()
    drain_all(core)
    core.step(RequestVoteReply(5, "n2", "n1", 1, True))
    assert core.role is Role.leader
    drain_all(core)
    ticks = 0
    while core.role is Role.leader and ticks < 3 * Config().election_ticks:
        core.tick()
        drain_all(core)
        ticks += 1
    assert core.role is Role.follower
    assert ticks <= Config().election_ticks


# -- bounded resources ---------------------------------------------------------------------------
def test_a_silent_follower_gets_one_probe_not_a_megabyte_per_heartbeat() -> None:
    """etcd's probe state: entries go to an unresponsive follower once; heartbeats after."""
    leader = make_leader(max_bytes_per_message=1 << 20)
    for number in range(200):
        leader.propose(bytes(10_000) + str(number).encode())
    drain_all(leader)
    # n3 is dead from now on (it answered the no-op, nothing since) and the leader has
    # gone back to probing it from there; n2 keeps answering
    leader._consensus._back_to_probe(leader.record.peers["n3"], 2)
    sent_bytes = 0
    probes = 0
    for _ in range(30 * leader.config.heartbeat_ticks):
        leader.tick()
        for ready in drain_all(leader):
            for message in ready.messages:
                if isinstance(message, AppendEntries) and message.receiver == "n3":
                    probes += bool(message.entries)
                    sent_bytes += sum(len(e.data) for e in message.entries)
                elif isinstance(message, AppendEntries):
                    leader.step(append_ok("n2", "n1", leader.term, message.prev_log_index + len(message.entries)))
    assert probes == 1, probes
    assert sent_bytes <= (1 << 20) + 10_100


def test_an_unfinished_incoming_snapshot_is_dropped_on_a_new_term_and_after_a_timeout() -> None:
    core = follower_with_commit()
    chunk = InstallSnapshot(1, "n1", "n2", 2, "n1", 40, 2, CONF3, 1, 100, bytes(32), 0, b"partial", False)
    assert core.step(chunk) is None
    assert core._consensus._snapshot_stream is not None
    core.step(append("n3", "n2", 3, 4, 2))  # a new leader, a new term
    assert core._consensus._snapshot_stream is None and not core._consensus._snapshot_chunks
    core.step(attrs.evolve(chunk, term=3, sender="n3", leader_id="n3"))
    assert core._consensus._snapshot_stream is not None
    for _ in range(4 * Config().election_ticks + 1):
        core._consensus.age_incoming_snapshot()
    assert core._consensus._snapshot_stream is None


# -- fuzzing -------------------------------------------------------------------------------------
_ids = st.sampled_from(["n1", "n2", "n3", STRANGER])
_ints = st.one_of(st.integers(0, 12), st.integers(0, MAX_WIRE_INT), st.just(MAX_WIRE_INT))
_entries = st.lists(
    st.builds(Entry, _ints, _ints, st.sampled_from([EntryKind.data, EntryKind.noop, EntryKind.configuration]),
              st.binary(max_size=8)),
    max_size=4,
).map(tuple)


def _message(receiver: str) -> st.SearchStrategy[WireMessage]:
    def envelope(kind: type, *fields: st.SearchStrategy[Any]) -> st.SearchStrategy[WireMessage]:
        return st.builds(kind, _ints, _ids, st.just(receiver), _ints, *fields)

    return st.one_of(
        envelope(RequestVote, _ids, _ints, _ints),
        envelope(RequestVoteReply, st.booleans()),
        envelope(PreVote, _ids, _ints, _ints),
        envelope(PreVoteReply, st.booleans()),
        envelope(AppendEntries, _ids, _ints, _ints, _entries, _ints, _ints),
        envelope(AppendEntriesReply, st.booleans(), _ints, _ints, _ints, _ints, _ints),
        envelope(InstallSnapshot, _ids, _ints, _ints, st.sampled_from([CONF3, b"\x90", b"junk"]), _ints, _ints,
                 st.binary(min_size=32, max_size=32), _ints, st.binary(max_size=8), st.booleans()),
        envelope(InstallSnapshotReply, _ints, _ints, _ints, st.booleans()),
    )


@settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_message("n1"), min_size=1, max_size=6), st.sampled_from(["follower", "leader"]))
def test_no_well_typed_message_makes_step_raise(batch: list[WireMessage], where: str) -> None:
    """Arbitrary well-typed messages from members and strangers: `step` never raises, an
    invalid one changes nothing, and the node never leaves for the error role."""
    core = make_leader() if where == "leader" else core_with("n1", entries=log_of(1, 1, 2), term=2, commit=2)
    for message in batch:
        before = fingerprint(core)
        dropped = core.step(message)
        if dropped is not None and dropped.invalid:
            assert fingerprint(core) == before
        for ready in drain_all(core):
            assert all(m.sender == "n1" for m in ready.messages)
        assert core.role is not Role.error


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.binary(max_size=64))
def test_codec_rejects_garbage_with_frame_error_only(data: bytes) -> None:
    with contextlib.suppress(FrameError):
        decode(data)


def test_mutated_real_messages_are_always_invalid() -> None:
    """The forger's mutations are invalid whatever the receiver's state (so the simulator
    may demand that each is dropped)."""
    rng = random.Random(11)
    core = follower_with_commit()
    leader = make_leader()
    samples: list[WireMessage] = [
        append("n1", "n2", 2, 4, 2, [Entry(2, 5, EntryKind.data, b"x")]),
        vote_req("n3", "n2", 3, 4, 2),
        InstallSnapshot(1, "n1", "n2", 2, "n1", 4, 2, CONF3, 1, 1, bytes(32), 0, b"d", True),
        PreVote(1, "n3", "n2", 3, "n3", 4, 2),
    ]
    for _ in range(200):
        original = rng.choice(samples)
        forged = impossible(rng, original)
        assert forged is not None
        before = fingerprint(core)
        dropped = core.step(forged)
        assert dropped is not None and dropped.invalid, forged
        assert fingerprint(core) == before
    reply = impossible(rng, append_ok("n2", "n1", 1, 1))
    assert reply is not None
    dropped = leader.step(reply)
    assert dropped is not None and dropped.invalid


@pytest.mark.parametrize("seed", range(6))
def test_simulator_checkers_hold_while_a_forger_injects_messages(seed: int) -> None:
    """The nemesis forges messages (strangers, and real messages in flight made impossible)
    next to crashes and partitions; the simulator demands each forged one is dropped as
    invalid, every correct one is accepted, and every safety and liveness checker holds."""
    print(f"seed {seed}")
    sim = Simulation(nodes=3, seed=seed, snapshot_every=20)
    Nemesis(sim, ("forge", "partition", "crash", "drop"), rate=0.05).run(1500)
    sim.check_liveness()
    assert sim.forged_dropped > 0


def test_drop_of_a_single_invalid_message_does_not_disturb_the_cluster() -> None:
    """A forged frame sent to every node of a healthy simulated cluster: no role, term or
    commit moves (the acceptance's 'the term does not move')."""
    sim = Simulation(nodes=3, seed=3)
    sim.run(100)
    leader = sim.leader()
    assert leader is not None
    terms = {n: sim.nodes[n].core.term for n in sim.ids}
    rng = random.Random(5)
    for tick in range(300):
        target = rng.choice(sim.ids)
        sim.inject(from_stranger(rng, target, tick))
        follower = next(n for n in sim.ids if n != leader)
        sim.inject(RequestVote(tick, follower, leader, terms[leader] + 1000, STRANGER, 0, 0))
        sim.step_tick()
    assert sim.leader() == leader
    assert {n: sim.nodes[n].core.term for n in sim.ids} == terms

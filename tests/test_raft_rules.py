"""Raft rules checked against one `RaftCore`, driven by hand.

Every test builds messages itself, feeds them through `step`/`tick`/`propose`, and looks
at what comes out of `ready()`. Section numbers refer to the extended Raft paper
(Ongaro & Ousterhout, "In Search of an Understandable Consensus Algorithm").
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence

import attrs
import pytest

from generated.raft_fsm import (
    AppendEntries,
    AppendEntriesReply,
    Entry,
    EntryKind,
    RequestVote,
    RequestVoteReply,
    Role,
    WireMessage,
)
from runtime.consensus import Config
from runtime.core import RaftCore
from runtime.errors import InvalidEvent, NotLeader
from runtime.ready import HardState, PersistentState, Ready
from runtime.storage.memory import MemoryStorage

THREE = ("n1", "n2", "n3")
FIVE = ("n1", "n2", "n3", "n4", "n5")

_ids = itertools.count(1_000_000)


# -- helpers ---------------------------------------------------------------------------------
def drain(core: RaftCore) -> Ready:
    """Run one ready() -> advance() cycle, as a driver that persists and sends everything."""
    ready = core.ready()
    core.advance(ready)
    return ready


def drain_all(core: RaftCore) -> list[Ready]:
    """Cycle until the core has nothing more to hand out."""
    readies = []
    for _ in range(100):
        if not core.has_ready():
            return readies
        readies.append(drain(core))
    raise AssertionError(f"{core.id} still has a Ready after 100 cycles")


def messages(readies: Iterable[Ready]) -> list[WireMessage]:
    return [m for r in readies for m in r.messages]


def log_of(*terms: int) -> list[Entry]:
    """A log whose entry i+1 has term terms[i]; data names the index and term."""
    return [Entry(t, i, EntryKind.data, f"{i}@{t}".encode()) for i, t in enumerate(terms, start=1)]


def core_with(
    node_id: str = "n1",
    voters: Sequence[str] = THREE,
    entries: Sequence[Entry] = (),
    term: int = 0,
    vote: str | None = None,
    commit: int = 0,
    **config: object,
) -> RaftCore:
    state = PersistentState(HardState(term, vote, commit), None, list(entries))
    # these tests drive the classic §5.2 election by hand; PreVote has its own tests
    config.setdefault("pre_vote", False)
    return RaftCore(node_id, voters, Config(**config), state)  # type: ignore[arg-type]


def vote_req(sender: str, receiver: str, term: int, last_index: int, last_term: int) -> RequestVote:
    return RequestVote(next(_ids), sender, receiver, term, sender, last_index, last_term)


def vote_reply(sender: str, receiver: str, term: int, granted: bool = True) -> RequestVoteReply:
    return RequestVoteReply(next(_ids), sender, receiver, term, granted)


def append(
    sender: str,
    receiver: str,
    term: int,
    prev_index: int,
    prev_term: int,
    entries: Sequence[Entry] = (),
    commit: int = 0,
) -> AppendEntries:
    return AppendEntries(next(_ids), sender, receiver, term, sender, prev_index, prev_term, tuple(entries), commit, 0)


def append_ok(sender: str, receiver: str, term: int, match: int) -> AppendEntriesReply:
    return AppendEntriesReply(next(_ids), sender, receiver, term, True, match, 0, 0, 0, 0)


def elect(core: RaftCore) -> Ready:
    """Campaign and feed granted votes until `core` leads; return the leader's first Ready."""
    core.campaign()
    for request in messages(drain_all(core)):
        if core.role is Role.leader:
            break
        assert isinstance(request, RequestVote)
        core.step(vote_reply(request.receiver, core.id, core.term))
    assert core.role is Role.leader, core.status()
    return drain(core)


def acknowledge(core: RaftCore, sent: Iterable[WireMessage]) -> list[Ready]:
    """Answer every AppendEntries in `sent` with success, as a follower in sync would."""
    for message in sent:
        if isinstance(message, AppendEntries):
            match = message.prev_log_index + len(message.entries)
            core.step(append_ok(message.receiver, core.id, core.term, match))
    return drain_all(core)


def make_leader(voters: Sequence[str] = THREE, **config: object) -> RaftCore:
    """n1 as the leader of term 1 whose no-op is acknowledged by every follower, so every
    follower is in the replicate (pipelined) state."""
    core = core_with("n1", voters, **config)
    first = elect(core)
    acknowledge(core, first.messages)
    assert core.commit_index == 1
    assert all(not p.probing for p in core.record.peers.values())
    return core


class Net:
    """Several cores wired together by hand: `pump` delivers every message until quiet."""

    def __init__(self, cores: Iterable[RaftCore]) -> None:
        self.cores = {c.id: c for c in cores}
        self.delivered: list[WireMessage] = []

    def pump(self, max_rounds: int = 1000) -> None:
        for _ in range(max_rounds):
            outgoing = [m for c in self.cores.values() for m in messages(drain_all(c))]
            if not outgoing:
                return
            for message in outgoing:
                target = self.cores.get(message.receiver)
                if target is not None:
                    self.delivered.append(message)
                    target.step(message)
        raise AssertionError("the network did not go quiet")


# -- §5.2 elections -------------------------------------------------------------------------
@pytest.mark.parametrize("election_ticks", [2, 5, 10, 50])
def test_s5_2_randomized_election_timeout_in_T_2T(election_ticks: int) -> None:
    """§5.2: election timeouts are chosen at random from [T, 2T) ticks, for every seed and
    for the first as well as later elections."""
    seen = set()
    for seed in range(150):
        core = core_with(election_ticks=election_ticks, heartbeat_ticks=1, seed=seed)
        for campaign in range(3):  # follower -> candidate, then two candidate re-elections
            role_before, term_before = core.role, core.term
            ticks = 0
            while core.term == term_before:
                core.tick()
                ticks += 1
                assert ticks < 2 * election_ticks, (
                    f"seed {seed}: no election after {ticks} ticks (T={election_ticks}, from {role_before.name})"
                )
            assert ticks >= election_ticks, f"seed {seed}: campaign {campaign} after {ticks} < T={election_ticks}"
            assert core.role is Role.candidate, f"seed {seed}"
            seen.add(ticks)
            drain_all(core)
    # randomized, not a constant: most values of [T, 2T) show up over 450 draws
    assert len(seen) >= min(election_ticks, 0.8 * election_ticks + 1), sorted(seen)


def test_s5_2_same_seed_same_timeouts() -> None:
    """Sans-I/O determinism (§5.2 timeouts come from the node's own seeded RNG)."""

    def ticks_to_campaign(seed: int) -> int:
        core = core_with(seed=seed)
        ticks = 0
        while core.role is Role.follower:
            core.tick()
            ticks += 1
        return ticks

    for seed in range(20):
        assert ticks_to_campaign(seed) == ticks_to_campaign(seed), f"seed {seed}"


def test_s5_2_one_vote_per_term_persisted_in_same_ready_as_grant() -> None:
    """§5.2 / Figure 2: at most one vote per term, and votedFor is persisted (hard state of
    the same Ready) before the RequestVoteReply granting it is sent."""
    core = core_with("n1")
    core.step(vote_req("n2", "n1", 1, 0, 0))
    ready = drain(core)
    replies = [m for m in ready.messages if isinstance(m, RequestVoteReply)]
    assert [(r.receiver, r.term, r.vote_granted) for r in replies] == [("n2", 1, True)]
    assert ready.hard_state == HardState(1, "n2", 0), "the vote must be persisted with the grant"

    # a second candidate of the same term is refused; the vote does not change
    core.step(vote_req("n3", "n1", 1, 0, 0))
    ready = drain(core)
    assert [(m.receiver, m.vote_granted) for m in ready.messages] == [("n3", False)]
    assert ready.hard_state is None
    assert core.record.voted_for == "n2"

    # the same candidate asking again (a retransmission) gets the same answer
    core.step(vote_req("n2", "n1", 1, 0, 0))
    assert [(m.receiver, m.vote_granted) for m in drain(core).messages] == [("n2", True)]

    # a new term frees the vote
    core.step(vote_req("n3", "n1", 2, 0, 0))
    ready = drain(core)
    assert [(m.receiver, m.term, m.vote_granted) for m in ready.messages] == [("n3", 2, True)]
    assert ready.hard_state == HardState(2, "n3", 0)


def test_s5_2_candidate_votes_for_itself_only() -> None:
    """§5.2: a candidate votes for itself, so it refuses another candidate of its term,
    and its self-vote is persisted in the Ready carrying its RequestVotes."""
    core = core_with("n1")
    core.campaign()
    ready = drain(core)
    assert ready.hard_state == HardState(1, "n1", 0)
    assert sorted((m.receiver, m.term) for m in ready.messages if isinstance(m, RequestVote)) == [
        ("n2", 1),
        ("n3", 1),
    ]
    core.step(vote_req("n2", "n1", 1, 0, 0))  # as up-to-date as ours
    assert [m.vote_granted for m in drain(core).messages] == [False]
    assert core.role is Role.candidate


def test_s5_2_candidate_needs_a_quorum() -> None:
    """§5.2: a candidate wins only with votes from a majority; refusals and duplicated
    grants from the same voter do not count."""
    core = core_with("n1", FIVE)
    core.campaign()
    drain(core)
    core.step(vote_reply("n2", "n1", 1, granted=True))
    core.step(vote_reply("n2", "n1", 1, granted=True))  # duplicate
    core.step(vote_reply("n3", "n1", 1, granted=False))
    core.step(vote_reply("n4", "n1", 1, granted=False))
    assert core.role is Role.candidate
    core.step(vote_reply("n5", "n1", 1, granted=True))
    assert core.role is Role.leader


@pytest.mark.parametrize(
    ("last_index", "last_term", "granted"),
    [
        (9, 1, False),  # older last term, even though the log is longer
        (1, 2, False),  # same last term, shorter log
        (2, 2, True),  # same last term, same length
        (3, 2, True),  # same last term, longer
        (1, 3, True),  # newer last term, even though shorter
    ],
)
def test_s5_4_1_vote_only_for_up_to_date_log(last_index: int, last_term: int, granted: bool) -> None:
    """§5.4.1 election restriction: a vote goes only to a candidate whose log is at least
    as up-to-date (compare last terms, then lengths)."""
    core = core_with("n1", entries=log_of(1, 2), term=2)
    core.step(vote_req("n2", "n1", 3, last_index, last_term))
    ready = drain(core)
    assert [(m.receiver, m.term, m.vote_granted) for m in ready.messages] == [("n2", 3, granted)]
    # the higher term is adopted either way; the vote only when granted
    assert ready.hard_state == HardState(3, "n2" if granted else None, 0)


# -- §5.3/§8 leaders ---------------------------------------------------------------------------
def test_s8_new_leader_appends_noop_of_its_term() -> None:
    """§8 (and §5.4.2): a new leader appends a no-op entry of its term and replicates it."""
    core = core_with("n1", entries=log_of(1, 1), term=1)
    ready = elect(core)
    assert core.term == 2
    assert list(ready.entries) == [Entry(2, 3, EntryKind.noop, b"")]
    appends = [m for m in ready.messages if isinstance(m, AppendEntries)]
    assert sorted(m.receiver for m in appends) == ["n2", "n3"]
    for message in appends:
        assert (message.term, message.prev_log_index, message.prev_log_term) == (2, 2, 1)
        assert [e.kind for e in message.entries] == [EntryKind.noop]
    assert ready.soft_state is not None and ready.soft_state.role is Role.leader


def test_s5_4_2_figure8_no_commit_of_earlier_term_by_counting_replicas() -> None:
    """§5.4.2 / Figure 8: a leader never commits an entry of an earlier term because a
    quorum stores it; only once an entry of its current term reaches a quorum, which then
    commits everything before it."""
    # n1 holds entries of terms 1 and 2 that were never committed; it leads term 3 of 5 voters
    core = core_with("n1", FIVE, entries=log_of(1, 2), term=2)
    elect(core)
    assert core.term == 3 and core.log.last_index == 3
    # n2, n3, n4 report that they store index 2 (term 2): 4 of 5 replicas, still no commit
    for peer in ("n2", "n3", "n4"):
        core.step(append_ok(peer, "n1", 3, 2))
        drain_all(core)
        assert core.commit_index == 0, f"index 2 (term 2) committed by counting replicas ({peer})"
    # the no-op of term 3 on n1 and n2 only: 2 of 5, no commit
    core.step(append_ok("n2", "n1", 3, 3))
    drain_all(core)
    assert core.commit_index == 0
    # ... and on n3: a quorum (n1, n2, n3) stores an entry of term 3 -> index 3 and all before
    core.step(append_ok("n3", "n1", 3, 3))
    readies = drain_all(core)
    assert core.commit_index == 3
    assert [e.index for r in readies for e in r.committed_entries] == [1, 2, 3]


def test_s5_3_leader_commits_only_what_it_persisted() -> None:
    """§5.3 + persist-before-speak: the leader counts itself only for entries the driver
    made durable (advance), so followers alone can form the quorum but not a phantom self."""
    core = make_leader()
    index, term = core.propose(b"x")
    # the entry goes out, but the leader's own write is still in progress: a driver that
    # sent the Ready's messages and has not persisted its entries yet
    core.advance(attrs.evolve(core.ready(), entries=()))
    core.step(append_ok("n2", "n1", term, index))
    core.step(append_ok("n3", "n1", term, index))
    assert core.commit_index == index  # n2 + n3 are a quorum of 3 even without n1
    core2 = make_leader(FIVE)
    index, term = core2.propose(b"y")
    unpersisted = core2.ready()
    core2.advance(attrs.evolve(unpersisted, entries=()))
    core2.step(append_ok("n2", "n1", term, index))
    core2.step(append_ok("n3", "n1", term, index))
    assert core2.commit_index == 1, "leader counted its own unpersisted entry toward a quorum of 5"
    core2.advance(attrs.evolve(unpersisted, messages=()))  # the leader's write is durable now
    assert core2.commit_index == index  # n1, n2, n3 form a quorum


# -- §5.3 AppendEntries on the follower --------------------------------------------------------
def test_s5_3_consistency_check_rejects_prev_term_mismatch_with_hints() -> None:
    """§5.3 consistency check; fast back-off hints: on a term mismatch at prev_log_index
    the follower rejects and names the conflicting term and the first index of it."""
    core = core_with("n1", entries=log_of(1, 1, 2, 2, 2), term=2)
    core.step(append("n2", "n1", 3, 5, 3, log_of(1, 1, 3, 3, 3, 3)[5:]))
    ready = drain(core)
    (reply,) = ready.messages
    assert isinstance(reply, AppendEntriesReply)
    assert (reply.success, reply.reject_index, reply.conflict_term, reply.conflict_index) == (False, 5, 2, 3)
    assert ready.entries == [] and core.log.last_index == 5


def test_s5_3_consistency_check_rejects_missing_prev_with_hint() -> None:
    """§5.3: prev_log_index beyond the follower's log is refused; the hint is the end of
    the follower's log (conflict_term 0)."""
    core = core_with("n1", entries=log_of(1, 1), term=1)
    core.step(append("n2", "n1", 1, 7, 1, [Entry(1, 8, EntryKind.data, b"8")]))
    (reply,) = drain(core).messages
    assert isinstance(reply, AppendEntriesReply)
    assert (reply.success, reply.reject_index, reply.conflict_index, reply.conflict_term) == (False, 7, 3, 0)
    assert core.log.last_index == 2


def test_s5_3_truncates_conflicting_suffix() -> None:
    """§5.3 / Figure 2 rule 3: an existing entry that conflicts with a new one (same index,
    different term) is deleted with all that follow it."""
    core = core_with("n1", entries=log_of(1, 1, 2, 2), term=2)
    new = Entry(3, 3, EntryKind.data, b"new")
    core.step(append("n2", "n1", 3, 2, 1, [new], commit=0))
    ready = drain(core)
    assert [(e.index, e.term) for e in core.log.entries] == [(1, 1), (2, 1), (3, 3)]
    assert list(ready.entries) == [new], "the driver must rewrite the log from index 3"
    (reply,) = ready.messages
    assert isinstance(reply, AppendEntriesReply) and reply.success and reply.match_index == 3


def test_s5_3_stale_matching_append_entries_does_not_truncate() -> None:
    """§5.3 / Figure 2 rule 3 ("if an existing entry conflicts"): a delayed AppendEntries
    whose entries all match, but that is shorter than the log, must NOT drop later entries."""
    entries = log_of(1, 1, 1, 1, 1)
    core = core_with("n1", entries=entries, term=1)
    core.step(append("n2", "n1", 1, 1, 1, entries[1:3], commit=0))  # delayed: indexes 2..3
    ready = drain(core)
    assert core.log.entries == entries, "later matching entries were truncated"
    assert ready.entries == []
    (reply,) = ready.messages
    assert isinstance(reply, AppendEntriesReply) and reply.success and reply.match_index == 3
    # an empty (heartbeat) AppendEntries anchored early does not truncate either
    core.step(append("n2", "n1", 1, 2, 1, (), commit=0))
    drain(core)
    assert core.log.entries == entries


def test_s5_3_follower_commit_is_min_of_leader_commit_and_last_new_entry() -> None:
    """§5.3 / Figure 2 rule 5: commitIndex = min(leaderCommit, index of last new entry),
    never past what this message verified."""
    entries = log_of(1, 1, 1, 1, 1)
    core = core_with("n1", entries=log_of(1, 1, 1, 7, 7), term=7)
    # the follower has a stale suffix; the leader of term 8 has committed index 5 of its own log
    core.step(append("n2", "n1", 8, 1, 1, entries[1:3], commit=5))
    ready = drain(core)
    assert core.commit_index == 3, "commit went past the last entry verified by this message"
    assert [e.index for e in ready.committed_entries] == [1, 2, 3]
    assert [e.term for e in core.log.entries] == [1, 1, 1, 7, 7], "unverified suffix kept until a conflict"


def test_s5_3_stale_term_append_entries_rejected() -> None:
    """§5.1: a request with a stale term is rejected and the reply carries our term."""
    core = core_with("n1", entries=log_of(1, 2), term=5)
    core.step(append("n2", "n1", 4, 2, 2, [Entry(4, 3, EntryKind.data, b"x")]))
    (reply,) = drain(core).messages
    assert isinstance(reply, AppendEntriesReply)
    assert (reply.success, reply.term) == (False, 5)
    assert core.log.last_index == 2 and core.leader_id is None


# -- leader side: back-off, batching, pipelining, heartbeats ----------------------------------
def test_s5_3_fast_backoff_over_50_divergent_entries() -> None:
    """§5.3 (the optimisation at the end of the section): with conflict hints a leader
    finds the match point with a follower diverging over 60 entries in a few round trips,
    not one per entry; afterwards the follower's log equals the leader's."""
    leader = core_with("n1", entries=log_of(*[1] * 10, *[3] * 60), term=3, seed=1)
    follower = core_with("n2", entries=log_of(*[1] * 10, *[2] * 70), term=2, seed=2)
    net = Net([leader, follower])  # n3 is down
    leader.campaign()
    net.pump()
    assert leader.role is Role.leader and leader.term == 4
    appends = [m for m in net.delivered if isinstance(m, AppendEntries) and m.receiver == "n2"]
    assert len(appends) < 10, f"{len(appends)} AppendEntries to converge"
    assert follower.log.entries == leader.log.entries
    assert leader.record.peers["n2"].match_index == leader.log.last_index == 71


def test_s5_3_fast_backoff_follower_longer_with_higher_term_suffix() -> None:
    """§5.3 back-off when the follower holds a *later* term than the leader's conflicting
    entry (Figure 7 case f-like): the conflict term is unknown to the leader, so it jumps
    to the follower's first index of that term."""
    leader = core_with("n1", entries=log_of(*[1] * 5, *[4] * 5), term=4, seed=1)
    follower = core_with("n2", entries=log_of(*[1] * 5, *[2] * 30, *[3] * 30), term=3, seed=2)
    net = Net([leader, follower])  # n3 is down
    leader.campaign()
    net.pump()
    assert leader.role is Role.leader and leader.term == 5
    appends = [m for m in net.delivered if isinstance(m, AppendEntries) and m.receiver == "n2"]
    assert len(appends) < 10, f"{len(appends)} AppendEntries to converge"
    assert follower.log.entries == leader.log.entries


def test_batching_respects_max_entries_per_message() -> None:
    """Batching: 1000 proposals leave in AppendEntries of at most
    Config.max_entries_per_message entries each, and all of them commit everywhere."""
    config = {"max_entries_per_message": 64, "max_inflight": 4}
    cores = [core_with(i, **config, seed=n) for n, i in enumerate(THREE)]
    net = Net(cores)
    leader = cores[0]
    leader.campaign()
    net.pump()
    assert leader.role is Role.leader
    for i in range(1000):
        leader.propose(f"c{i}".encode())
    net.pump()
    appends = [m for m in net.delivered if isinstance(m, AppendEntries) and m.entries]
    assert max(len(m.entries) for m in appends) == 64
    for follower in ("n2", "n3"):
        sent = [m for m in appends if m.receiver == follower]
        assert len(sent) <= math.ceil(1001 / 64) + 2, f"{len(sent)} messages to {follower}: not batched"
    assert leader.commit_index == 1001
    assert all(core.log.entries == leader.log.entries for core in cores)
    leader.tick()  # the next heartbeat carries the final commit index to the followers
    net.pump()
    for core in cores:
        assert core.commit_index == core.last_applied == 1001, core.status()


def test_pipelining_bounded_by_max_inflight() -> None:
    """Pipelining: without replies a leader has at most max_inflight AppendEntries carrying
    entries outstanding to one follower, however many proposals arrive."""
    core = make_leader(max_inflight=4, max_entries_per_message=10)
    sent: list[WireMessage] = []
    for round_ in range(5):
        core.propose_batch([f"b{round_}-{i}".encode() for i in range(30)])
        sent += messages(drain_all(core))
    for follower in ("n2", "n3"):
        carrying = [m for m in sent if isinstance(m, AppendEntries) and m.receiver == follower and m.entries]
        assert len(carrying) == 4, f"{len(carrying)} AppendEntries with entries in flight to {follower}"
        # they are consecutive batches (pipelined), not the same batch resent
        assert [m.prev_log_index for m in carrying] == [1, 11, 21, 31]
    # one reply opens the window by one message
    core.step(append_ok("n2", "n1", core.term, 11))
    more = [m for m in messages(drain_all(core)) if isinstance(m, AppendEntries) and m.receiver == "n2"]
    assert [(m.prev_log_index, len(m.entries)) for m in more] == [(41, 10)]


def test_heartbeats_every_heartbeat_ticks() -> None:
    """§5.2: a leader sends an AppendEntries to every peer each heartbeat interval."""
    core = make_leader(heartbeat_ticks=3, election_ticks=20, check_quorum=False)
    per_tick: list[list[str]] = []
    for _ in range(30):
        core.tick()
        per_tick.append(sorted(m.receiver for m in messages(drain_all(core)) if isinstance(m, AppendEntries)))
    for tick, receivers in enumerate(per_tick, start=1):
        expected = ["n2", "n3"] if tick % 3 == 0 else []
        assert receivers == expected, f"tick {tick}: heartbeats to {receivers}"


def test_s5_1_higher_term_demotes_leader_and_clears_vote() -> None:
    """§5.1: a leader that sees a higher term in any message becomes a follower of that
    term with no vote, persisted in the next hard state."""
    makers = {
        "vote reply": lambda t: vote_reply("n2", "n1", t, granted=False),
        "append reply": lambda t: AppendEntriesReply(next(_ids), "n2", "n1", t, False, 0, 0, 0, 0, 0),
        "heartbeat": lambda t: append("n2", "n1", t, 0, 0),
        "stale-log vote request": lambda t: vote_req("n2", "n1", t, 0, 0),
    }
    for name, make in makers.items():
        # a vote request is subject to leader stickiness unless CheckQuorum is off (below)
        core = make_leader(check_quorum=name != "stale-log vote request")
        assert core.record.voted_for == "n1"
        core.step(make(core.term + 3))
        ready = drain(core)
        assert core.role is Role.follower, name
        assert core.term == 4, name
        assert core.record.voted_for is None, f"{name}: vote not cleared"
        assert ready.hard_state is not None and (ready.hard_state.term, ready.hard_state.vote) == (4, None), name
        with pytest.raises(NotLeader):
            core.propose(b"late")


def test_s5_1_higher_term_demotes_candidate_and_clears_vote() -> None:
    """§5.1/§5.2: a candidate that sees a higher term returns to follower and forgets its
    self-vote; an AppendEntries of that term also names the leader."""
    for kind in ("vote reply", "heartbeat"):
        core = core_with("n1")
        core.campaign()
        drain(core)
        assert core.role is Role.candidate and core.record.voted_for == "n1"
        message = vote_reply("n3", "n1", 5, granted=False) if kind == "vote reply" else append("n3", "n1", 5, 0, 0)
        core.step(message)
        drain(core)
        assert core.role is Role.follower, kind
        assert (core.term, core.record.voted_for) == (5, None), kind
        assert core.leader_id == (None if kind == "vote reply" else "n3"), kind


def test_s5_2_candidate_follows_leader_of_same_term() -> None:
    """§5.2: a candidate that receives AppendEntries from a leader of its own term steps down."""
    core = core_with("n1")
    core.campaign()
    drain(core)
    core.step(append("n2", "n1", 1, 0, 0))
    drain(core)
    assert core.role is Role.follower and core.leader_id == "n2" and core.term == 1


def test_s5_1_stale_replies_ignored_by_leader() -> None:
    """§5.1: a reply of an older term does not move a leader's progress."""
    core = make_leader()
    core.propose(b"x")
    drain_all(core)
    core.campaign()  # no-op on a leader
    assert core.role is Role.leader
    stale = AppendEntriesReply(next(_ids), "n2", "n1", core.term - 1, True, 2, 0, 0, 0, 0)
    core.step(stale)
    assert core.record.peers["n2"].match_index == 1


# -- client interface ---------------------------------------------------------------------------
def test_s8_propose_on_follower_or_candidate_raises_not_leader_with_hint() -> None:
    """§8 client interaction: a non-leader refuses commands and names the leader it knows."""
    core = core_with("n1")
    with pytest.raises(NotLeader) as info:
        core.propose(b"x")
    assert info.value.leader_id is None
    core.step(append("n3", "n1", 1, 0, 0))
    drain(core)
    with pytest.raises(NotLeader) as info:
        core.propose(b"x")
    assert info.value.leader_id == "n3"
    with pytest.raises(NotLeader):
        core.propose_batch([b"a", b"b"])
    assert core.log.last_index == 0
    candidate = core_with("n1")
    candidate.campaign()
    with pytest.raises(NotLeader) as info:
        candidate.propose(b"x")
    assert info.value.leader_id is None


@pytest.mark.parametrize("role", ["follower", "candidate", "leader"])
def test_fatal_storage_error_moves_to_error_role_for_good(role: str) -> None:
    """Persist-before-speak: after fail("disk") the node is in the
    error role, hands out nothing but its role change, and ignores ticks and messages."""
    if role == "leader":
        core = make_leader()
        core.propose(b"pending")  # unsent entries and messages must be dropped
    else:
        core = core_with("n1")
        if role == "candidate":
            core.campaign()  # RequestVotes pending, not yet handed out
    core.fail("disk")
    assert core.role is Role.error
    assert core.record.halt_reason == "disk"
    readies = drain_all(core)
    assert readies, "the role change must be reported"
    for ready in readies:
        assert (list(ready.messages), list(ready.entries), ready.hard_state, list(ready.committed_entries)) == (
            [],
            [],
            None,
            [],
        )
    assert readies[-1].soft_state is not None and readies[-1].soft_state.role is Role.error
    assert not core.has_ready()
    term = core.term
    for _ in range(100):
        core.tick()
    core.step(vote_req("n2", "n1", term + 5, 100, 100))
    core.step(append("n3", "n1", term + 6, 0, 0, [Entry(term + 6, 1, EntryKind.data, b"z")], commit=1))
    core.step(vote_reply("n2", "n1", term))
    assert not core.has_ready()
    ready = core.ready()
    assert (list(ready.messages), list(ready.entries), ready.hard_state, list(ready.committed_entries)) == (
        [],
        [],
        None,
        [],
    )
    assert core.role is Role.error and core.term == term
    with pytest.raises(InvalidEvent):
        core.propose(b"x")
    with pytest.raises(InvalidEvent):
        core.propose_batch([b"x"])
    core.fail("again")  # idempotent
    assert core.role is Role.error


def test_single_voter_elects_itself_and_commits_after_advance() -> None:
    """§5.2 with a quorum of one: the sole voter elects itself at its first timeout and
    commits an entry as soon as the driver persisted it (not before)."""
    core = core_with("n1", ("n1",), seed=3)
    for _ in range(2 * core.config.election_ticks):
        core.tick()
        if core.role is Role.leader:
            break
    assert core.role is Role.leader and core.term == 1
    ready = drain(core)
    assert list(ready.entries) == [Entry(1, 1, EntryKind.noop, b"")]
    assert ready.messages == []
    assert core.commit_index == 1  # persisted by advance -> committed
    assert [e.index for e in drain(core).committed_entries] == [1]
    index, term = core.propose(b"x")
    assert (index, term) == (2, 1)
    assert core.commit_index == 1, "committed before the driver persisted it"
    drain(core)
    assert core.commit_index == 2
    ready = drain(core)
    assert [(e.index, e.data) for e in ready.committed_entries] == [(2, b"x")]
    assert core.last_applied == 2
    first, last, term = core.propose_batch([b"a", b"b", b"c"])
    assert (first, last, term) == (3, 5, 1)
    drain_all(core)
    assert core.commit_index == core.last_applied == 5


def test_s5_restart_from_persistent_state_resumes_term_vote_log_commit() -> None:
    """Figure 2 persistent state: a node rebuilt from what its driver persisted resumes
    its term, its vote (so it still refuses a second candidate of that term), its log and
    its commit index, and re-applies committed entries to a fresh state machine."""
    disks = {i: MemoryStorage() for i in THREE}
    cores = [core_with(i, seed=n) for n, i in enumerate(THREE)]

    def persist_all() -> None:
        for core in cores:
            while core.has_ready():
                ready = core.ready()
                disks[core.id].persist(ready.entries, ready.hard_state, ready.snapshot)
                for message in ready.messages:
                    next(c for c in cores if c.id == message.receiver).step(message)
                core.advance(ready)

    leader = cores[0]
    leader.campaign()
    for _ in range(20):
        persist_all()
    for i in range(5):
        leader.propose(f"c{i}".encode())
    for _ in range(20):
        persist_all()
    leader.tick()  # a heartbeat carries the leader's commit index
    for _ in range(5):
        persist_all()
    follower = cores[1]
    assert follower.commit_index >= 5 and follower.role is Role.follower

    state = disks["n2"].initial_state()
    reborn = RaftCore("n2", THREE, Config(seed=9, pre_vote=False), state)
    assert reborn.role is Role.follower
    assert reborn.term == follower.term == 1
    assert reborn.record.voted_for == "n1"
    assert reborn.log.entries == follower.log.entries
    assert reborn.commit_index == state.hard_state.commit >= 5
    ready = drain(reborn)
    assert [e.index for e in ready.committed_entries] == list(range(1, reborn.commit_index + 1))
    # the persisted vote still binds: n3 cannot get n2's vote in term 1
    reborn.step(vote_req("n3", "n2", 1, 100, 1))
    assert [m.vote_granted for m in drain(reborn).messages] == [False]

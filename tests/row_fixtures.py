"""Recipes that drive one real `RaftCore` through the rows of the spec, for the generated
row tests (`tests/generated/test_raft_rows.py`, written by `python -m generator`).

For every row of `fsm_spec/raft.yaml` that is not an `error` row, and every source role
of that row, the generator writes one test case: a path of rows from the initial role to
the source role (the shortest one in the table whose recipes agree with the target's
options), then the row itself. Each step runs a **recipe** of this module and checks
that the row that fired for the step's event is the expected one, from the expected role
to the expected role. After the target row, the test checks what the row's actions do
(`EFFECTS`, by action name) and that an `ignore` row changed nothing.

Which recipe a row uses: the row's `test:` key; else the recipe named after its first
condition, or `not_<name>` after its first `unless`; else the recipe named after its
event. A recipe is a function of a `Harness` whose core is in the source role: it may
arrange what the row's guards need (other messages first), then applies one last
stimulus through the core's public API (`step`, `tick`, `campaign`, `propose`, `fail`);
the test looks at the rows fired during that last stimulus. Events the core never
delivers in a role (any message once the node halted, a heartbeat timeout outside the
leader role, a higher term in the error role) are fired at the core's own dispatcher
(`Harness.dispatch`), so the row is still exercised on the real handlers.

`@recipe(options=..., unreachable=...)` declares what a recipe needs: `options` are
`Harness` arguments (cluster size, initial term, Config switches) that hold for the whole
path, and `unreachable` maps a role to the reason the recipe's row can never fire there
(an invariant of the handlers). The generator reads both, and fails with the row's
file:line when a row has no recipe or no path to its source role.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from generated.raft_fsm import (
    EVENT_OF_MESSAGE,
    AppendEntries,
    AppendEntriesReply,
    EntryKind,
    Event,
    InstallSnapshot,
    InstallSnapshotReply,
    PreVote,
    PreVoteReply,
    ReadIndexReply,
    ReadIndexRequest,
    RequestVote,
    RequestVoteReply,
    Role,
    TermNotice,
    TimeoutNow,
    WireMessage,
)
from runtime.consensus import Config
from runtime.core import Dropped, RaftCore
from runtime.errors import MembershipChangeRefused, NotLeader
from runtime.limits import MAX_TERM
from runtime.membership import Configuration, Member
from runtime.ready import HardState, PersistentState

NODE = "n1"
NAMES = ("n1", "n2", "n3", "n4", "n5")

DEFAULT_OPTIONS: Mapping[str, object] = {
    "voters": 3, "term": 2, "pre_vote": True, "check_quorum": True, "read_mode": "index", "learner": False,
}
"""`Harness` arguments a recipe gets unless it says otherwise. The initial term is 2 so
that a stale message (term 1) is possible in every role."""


# -- the harness -------------------------------------------------------------------------------
@attrs.frozen
class Fired:
    """One event the core dispatched: the role before, the spec line of the row that
    fired (0: none did), the role after."""

    source: Role
    event: Event
    line: int
    dest: Role


@attrs.frozen
class State:
    """What an `ignore` row must leave unchanged, and what effects are measured against."""

    role: Role
    term: int
    vote: str | None
    leader: str | None
    commit: int
    last_index: int
    last_term: int
    halt_reason: str | None
    status: str


class Harness:
    """One `RaftCore` (node n1 among `voters` nodes n1..nN, no I/O) whose dispatched events
    are traced. Every stimulus first forgets the previous trace, then acts, then plays the
    driver until the core has nothing more to hand out (`sent` collects the messages)."""

    def __init__(self, voters: int = 3, term: int = 2, pre_vote: bool = True, check_quorum: bool = True,
                 read_mode: str = "index", learner: bool = False) -> None:
        self.voters = NAMES[:voters]
        state = PersistentState(HardState(term, None, 0), None, [])
        config = Config(pre_vote=pre_vote, check_quorum=check_quorum, read_mode=read_mode, seed=1)
        configuration = Configuration.of(Member(n, not (learner and n == NODE)) for n in self.voters)
        self.core = RaftCore(NODE, configuration, config, state)
        self.trace: list[Fired] = []
        self.sent: list[WireMessage] = []
        self.raised: Exception | None = None
        self.dropped: Dropped | None = None
        self.direct = False
        self._ids = itertools.count(1)
        # the only private access: route the core's events through a tracer
        core: Any = self.core
        fire: Callable[..., int] = core._dispatcher.fire
        assert core._fire == fire, "RaftCore no longer fires events through _fire: update Harness"

        def traced(event: Event, payload: object = None) -> int:
            source = self.core.record.role
            try:
                line = fire(event, payload)
            except Exception as exc:
                found = [re.search(r":(\d+)$", note) for note in getattr(exc, "__notes__", [])]
                lines = [int(match.group(1)) for match in found if match is not None]
                self.trace.append(Fired(source, event, lines[-1] if lines else 0, self.core.record.role))
                raise
            self.trace.append(Fired(source, event, line, self.core.record.role))
            return line

        core._fire = traced

    # -- views ----------------------------------------------------------------------------
    @property
    def role(self) -> Role:
        return self.core.role

    @property
    def term(self) -> int:
        return self.core.term

    @property
    def peers(self) -> tuple[str, ...]:
        return tuple(v for v in self.voters if v != NODE)

    def state(self) -> State:
        record = self.core.record
        return State(record.role, record.current_term, record.voted_for, record.leader_id, record.commit_index,
                     record.log.last_index, record.log.last_term, record.halt_reason, repr(self.core.status()))

    # -- stimuli ----------------------------------------------------------------------------
    def _begin(self) -> None:
        self.trace = []
        self.sent = []
        self.raised = None
        self.dropped = None
        self.direct = False

    def _settle(self) -> None:
        for _ in range(100):
            if not self.core.has_ready():
                return
            ready = self.core.ready()
            self.sent.extend(ready.messages)
            self.core.advance(ready)
        raise AssertionError("the core still has a Ready after 100 cycles")

    def step(self, message: WireMessage) -> None:
        self._begin()
        self.dropped = self.core.step(message)
        self._settle()

    def send(self, message: WireMessage) -> None:
        """`step`, except in the error role, where RaftCore.step drops every message before
        the dispatcher: there the message's event is fired at the dispatcher directly."""
        if self.role is Role.error:
            self.dispatch(EVENT_OF_MESSAGE[type(message)], message)
        else:
            self.step(message)

    def campaign(self) -> None:
        self._begin()
        self.core.campaign()
        self._settle()

    def tick_until(self, event: Event, limit: int = 1000) -> None:
        """Tick until the core fires `event` (at most `limit` ticks)."""
        self._begin()
        for _ in range(limit):
            self.core.tick()
            self._settle()
            if any(f.event is event for f in self.trace):
                return
        raise AssertionError(f"{event.name} did not fire within {limit} ticks")

    def propose(self, command: bytes) -> None:
        self._begin()
        try:
            self.core.propose(command)
        except NotLeader as exc:
            self.raised = exc
        self._settle()

    def read(self, request_id: int) -> None:
        self._begin()
        try:
            self.core.read(request_id)
        except NotLeader as exc:
            self.raised = exc
        self._settle()

    def change_membership(self, configuration: Configuration) -> None:
        self._begin()
        try:
            self.core.change_membership(configuration)
        except (NotLeader, MembershipChangeRefused) as exc:
            self.raised = exc
        self._settle()

    def transfer(self, target: str | None) -> None:
        self._begin()
        try:
            self.core.transfer_leadership(target)
        except (NotLeader, MembershipChangeRefused) as exc:
            self.raised = exc
        self._settle()

    def fail(self, reason: str) -> None:
        self._begin()
        self.core.fail(reason)
        self._settle()

    def dispatch(self, event: Event, payload: object = None) -> None:
        """Fire `event` at the core's dispatcher, bypassing RaftCore's own filters."""
        self._begin()
        self.direct = True
        fire: Callable[..., int] = self.core._fire
        fire(event, payload)
        self._settle()

    # -- messages from peers ----------------------------------------------------------------
    def _log(self) -> tuple[int, int]:
        return self.core.log.last_index, self.core.log.last_term

    def heartbeat(self, sender: str, term: int) -> AppendEntries:
        return AppendEntries(next(self._ids), sender, NODE, term, sender, 0, 0, (), 0, 0)

    def vote_request(self, sender: str, term: int, log: tuple[int, int] | None = None) -> RequestVote:
        last_index, last_term = log or self._log()
        return RequestVote(next(self._ids), sender, NODE, term, sender, last_index, last_term)

    def vote_reply(self, sender: str, term: int, granted: bool) -> RequestVoteReply:
        return RequestVoteReply(next(self._ids), sender, NODE, term, granted)

    def pre_vote(self, sender: str, term: int, log: tuple[int, int] | None = None) -> PreVote:
        last_index, last_term = log or self._log()
        return PreVote(next(self._ids), sender, NODE, term, sender, last_index, last_term)

    def pre_vote_reply(self, sender: str, term: int, granted: bool) -> PreVoteReply:
        return PreVoteReply(next(self._ids), sender, NODE, term, granted)

    def append_reply(self, sender: str, term: int) -> AppendEntriesReply:
        """A success acknowledging everything the leader sent to `sender`."""
        peer = self.core.record.peers.get(sender)
        match = peer.sent_index if peer is not None else 0
        return AppendEntriesReply(next(self._ids), sender, NODE, term, True, match, 0, 0, 0, self.core._consensus.read_round)

    def snapshot(self, sender: str, term: int) -> InstallSnapshot:
        """A one-chunk snapshot of the first entry, made in `term`."""
        data = b"snapshot"
        configuration = Configuration.voters_only(self.voters).encode()
        return InstallSnapshot(next(self._ids), sender, NODE, term, sender, 1, term, configuration, 1, len(data),
                               hashlib.sha256(data).digest(), 0, data, True)

    def snapshot_reply(self, sender: str, term: int) -> InstallSnapshotReply:
        """A reply about no transfer in progress (stale)."""
        return InstallSnapshotReply(next(self._ids), sender, NODE, term, 0, 0, 0, False)

    # -- one step of a generated case ---------------------------------------------------------
    def run(self, step: Step) -> None:
        where = f"fsm_spec/raft.yaml:{step.line}"
        assert self.role is step.source, (
            f"before recipe {step.recipe!r} for the row at {where}: the core is {self.role.name}, "
            f"not {step.source.name}"
        )
        RECIPES[step.recipe].run(self)
        fired = [f for f in self.trace if f.event is step.event]
        assert len(fired) == 1, (
            f"recipe {step.recipe!r} for the row at {where}: expected {step.event.name} to be dispatched once, "
            f"got {fired}"
        )
        got = fired[0]
        assert (got.source, got.line, got.dest) == (step.source, step.line, step.dest), (
            f"recipe {step.recipe!r}: expected the row at {where} ({step.event.name} in {step.source.name} "
            f"-> {step.dest.name}), but the row at line {got.line} fired ({got.source.name} -> {got.dest.name})"
        )


# -- generated cases -----------------------------------------------------------------------------
@attrs.frozen
class Step:
    """Run `recipe` in role `source`; the row at spec line `line` must fire for `event`
    and leave the core in role `dest`."""

    source: Role
    recipe: str
    event: Event
    line: int
    dest: Role


@attrs.frozen
class Case:
    id: str
    options: tuple[tuple[str, object], ...]
    path: tuple[Step, ...]
    target: Step
    effects: tuple[str, ...] = ()
    ignore: bool = False


def run_case(case: Case) -> None:
    harness = Harness(**{**DEFAULT_OPTIONS, **dict(case.options)})  # type: ignore[arg-type]
    for step in case.path:
        harness.run(step)
    before = harness.state()
    harness.run(case.target)
    if case.ignore:
        assert harness.state() == before, "an ignore row changed the node"
        assert harness.sent == [], f"an ignore row sent {harness.sent}"
    for name in case.effects:
        EFFECTS[name](harness, before)


# -- recipes ---------------------------------------------------------------------------------------
@attrs.frozen
class Recipe:
    name: str
    run: Callable[[Harness], None]
    options: Mapping[str, object]
    unreachable: Mapping[str, str]


RECIPES: dict[str, Recipe] = {}


def recipe(
    options: Mapping[str, object] | None = None, unreachable: Mapping[str, str] | None = None
) -> Callable[[Callable[[Harness], None]], Callable[[Harness], None]]:
    def register(function: Callable[[Harness], None]) -> Callable[[Harness], None]:
        unknown = set(options or {}) - set(DEFAULT_OPTIONS)
        assert not unknown, f"recipe {function.__name__}: unknown options {unknown}"
        RECIPES[function.__name__] = Recipe(function.__name__, function, dict(options or {}),
                                            dict(unreachable or {}))
        return function

    return register


# terms (§5.1)
@recipe()
def higher_term(h: Harness) -> None:
    """A heartbeat from n2 for the next term: not a vote request, so stickiness does not apply."""
    if h.role is Role.error:
        h.dispatch(Event.higher_term, TermNotice(h.term + 1, "n2", False))
    else:
        h.step(h.heartbeat("n2", h.term + 1))


NO_LEADER_KNOWN = "start_pre_vote and start_election forget the leader, and nothing sets one while the role lasts"


@recipe(unreachable={"pre_candidate": NO_LEADER_KNOWN, "candidate": NO_LEADER_KNOWN})
def leader_is_live(h: Harness) -> None:
    """A RequestVote for the next term while a leader was heard from just now."""
    if h.role is Role.follower:
        h.step(h.heartbeat("n2", h.term))  # n2 leads our term
    h.step(h.vote_request("n3", h.term + 1))


# elections (§5.2)
@recipe(
    options={"term": MAX_TERM - 1},
    unreachable={"pre_candidate": "a node pre-campaigns only below MAX_TERM (the terms_exhausted row comes first) "
                                  "and its term cannot change while it stays pre_candidate"},
)
def terms_exhausted(h: Harness) -> None:
    if h.role is Role.follower:
        h.step(h.heartbeat("n2", MAX_TERM))  # adopt the last term storage can hold
    h.campaign()


SOLE_VOTER = "a single voter's election timeout takes the is_sole_voter row (only terms_exhausted comes before it)"


@recipe(options={"voters": 1}, unreachable={"pre_candidate": SOLE_VOTER, "candidate": SOLE_VOTER})
def is_sole_voter(h: Harness) -> None:
    h.campaign()


@recipe(options={"pre_vote": True})
def pre_vote_enabled(h: Harness) -> None:
    h.campaign()


@recipe(
    options={"pre_vote": False},
    unreachable={"pre_candidate": "Config.pre_vote is fixed for a node's life: with it off a node never "
                                  "becomes pre_candidate, with it on the pre_vote_enabled row fires first"},
)
def election_timeout(h: Harness) -> None:
    """Campaign; a leader first hears from every follower, so its quorum is active."""
    if h.role is Role.leader:
        for peer in h.peers:
            h.step(h.append_reply(peer, h.term))
        h.tick_until(Event.election_timeout)
    else:
        h.campaign()


@recipe()
def not_quorum_active(h: Harness) -> None:
    """A leader no follower answered for an election timeout."""
    h.tick_until(Event.election_timeout)


VOTED_FOR_ITSELF = "it voted for itself in its current term"


@recipe(unreachable={"candidate": VOTED_FOR_ITSELF, "leader": VOTED_FOR_ITSELF})
def can_grant_vote(h: Harness) -> None:
    h.send(h.vote_request("n2", h.term))


@recipe()
def request_vote(h: Harness) -> None:
    """A RequestVote of an earlier term: refused."""
    h.send(h.vote_request("n2", h.term - 1, log=(0, 0)))


@recipe()
def won_election(h: Harness) -> None:
    h.send(h.vote_reply("n2", h.term, granted=True))


@recipe()
def request_vote_reply(h: Harness) -> None:
    """A refused vote: no quorum yet (or, in other roles, a late reply)."""
    h.send(h.vote_reply("n2", h.term, granted=False))


@recipe(unreachable={"leader": "a leader counts itself as a leader heard from: its election_elapsed is reset "
                               "before it reaches the election timeout"})
def can_grant_pre_vote(h: Harness) -> None:
    h.send(h.pre_vote("n2", h.term + 1))


@recipe()
def pre_vote(h: Harness) -> None:
    """A PreVote that is not for a later term: refused."""
    h.send(h.pre_vote("n2", h.term, log=(0, 0)))


@recipe()
def won_pre_vote(h: Harness) -> None:
    h.send(h.pre_vote_reply("n2", h.term + 1, granted=True))


@recipe()
def pre_vote_reply(h: Harness) -> None:
    h.send(h.pre_vote_reply("n2", h.term, granted=False))


# replication (§5.3)
@recipe()
def heartbeat_timeout(h: Harness) -> None:
    if h.role is Role.leader:
        h.tick_until(Event.heartbeat_timeout)
    else:
        h.dispatch(Event.heartbeat_timeout)  # RaftCore.tick fires it only in the leader role


@recipe()
def from_current_leader(h: Harness) -> None:
    h.send(h.heartbeat("n2", h.term))


@recipe()
def append_entries(h: Harness) -> None:
    """A heartbeat of an earlier term."""
    h.send(h.heartbeat("n2", h.term - 1))


@recipe()
def append_entries_reply(h: Harness) -> None:
    h.send(h.append_reply("n2", h.term))


# log compaction (§7)
@recipe()
def snapshot_from_current_leader(h: Harness) -> None:
    h.send(h.snapshot("n2", h.term))


@recipe()
def install_snapshot(h: Harness) -> None:
    """A snapshot from a leader of an earlier term."""
    h.send(h.snapshot("n2", h.term - 1))


@recipe()
def install_snapshot_reply(h: Harness) -> None:
    h.send(h.snapshot_reply("n2", h.term))


@recipe()
def not_snapshot_reply_is_stale(h: Harness) -> None:
    """n2 acknowledges the no-op, the leader compacts, so n3 (silent so far) is sent the
    snapshot on the next heartbeat; n3 then reports the transfer complete."""
    h.step(h.append_reply("n2", h.term))
    h.core.compact(h.core.last_applied, b"state")
    h.tick_until(Event.heartbeat_timeout)
    chunk = next(m for m in _sent(h, InstallSnapshot) if m.receiver == "n3")
    h.step(InstallSnapshotReply(next(h._ids), "n3", NODE, h.term, chunk.last_included_index, chunk.transfer_id,
                                chunk.size, True))


# linearizable reads (thesis §6.4)
@recipe(options={"read_mode": "lease"})
def lease_valid(h: Harness) -> None:
    """The no-op committed through n2 just now: a quorum answered within the lease."""
    h.step(h.append_reply("n2", h.term))
    h.read(1)


@recipe()
def read(h: Harness) -> None:
    h.read(1)


@recipe()
def knows_leader(h: Harness) -> None:
    h.step(h.heartbeat("n2", h.term))
    h.read(1)


@recipe()
def read_index_request(h: Harness) -> None:
    h.send(ReadIndexRequest(next(h._ids), "n2", NODE, h.term, 7))


@recipe()
def read_index_reply(h: Harness) -> None:
    h.send(ReadIndexReply(next(h._ids), "n2", NODE, h.term, 7, 1, True))


# membership (thesis §4.1) and leadership transfer (thesis §3.10)
LEARNERS_NEVER_CAMPAIGN = "a learner never campaigns, so it never becomes a pre-candidate or candidate"


@recipe(options={"learner": True},
        unreachable={"pre_candidate": LEARNERS_NEVER_CAMPAIGN, "candidate": LEARNERS_NEVER_CAMPAIGN})
def cannot_campaign(h: Harness) -> None:
    h.tick_until(Event.election_timeout)


@recipe()
def change_allowed(h: Harness) -> None:
    """The no-op of this term is committed (n2 acknowledged it): a learner may be added."""
    h.step(h.append_reply("n2", h.term))
    h.change_membership(h.core.configuration.with_learner(Member("n9")))


@recipe()
def change_membership(h: Harness) -> None:
    """Right after the election nothing of this term is committed: a leader refuses."""
    h.change_membership(h.core.configuration.with_learner(Member("n9")))


@recipe()
def removed_from_voters(h: Harness) -> None:
    """The leader removes itself; the new voters n2 and n3 (without it, both are needed)
    acknowledge that entry, which commits it."""
    h.step(h.append_reply("n2", h.term))
    h.step(h.append_reply("n3", h.term))
    h.change_membership(h.core.configuration.without(NODE))
    h.step(h.append_reply("n2", h.term))
    h.step(h.append_reply("n3", h.term))


@recipe()
def configuration_committed(h: Harness) -> None:
    if h.role is Role.leader:
        h.step(h.append_reply("n2", h.term))
        h.change_membership(h.core.configuration.with_learner(Member("n9")))
        h.step(h.append_reply("n2", h.term))
    else:
        h.dispatch(Event.configuration_committed)  # the core fires it only in the leader role


@recipe()
def transfer_allowed(h: Harness) -> None:
    h.transfer("n2")


@recipe()
def transfer_leadership(h: Harness) -> None:
    """To the leader itself: refused. Elsewhere: NotLeader."""
    h.transfer(NODE)


@recipe(unreachable={"pre_candidate": NO_LEADER_KNOWN})
def from_leader_to_voter(h: Harness) -> None:
    h.step(h.heartbeat("n2", h.term))
    h.step(TimeoutNow(next(h._ids), "n2", NODE, h.term))


@recipe()
def timeout_now(h: Harness) -> None:
    """From n3, which is not our leader (or in a role that ignores it)."""
    h.send(TimeoutNow(next(h._ids), "n3", NODE, h.term))


# clients and failure
@recipe()
def not_transferring(h: Harness) -> None:
    h.propose(b"command")


@recipe()
def propose(h: Harness) -> None:
    """In the leader role, during a leadership transfer (refused); elsewhere not the leader."""
    if h.role is Role.leader:
        h.transfer("n2")
    h.propose(b"command")


@recipe()
def fatal_error(h: Harness) -> None:
    h.fail("disk full")


# -- effects of actions, checked after the target row ------------------------------------------
def _sent(h: Harness, kind: type) -> list[Any]:
    return [m for m in h.sent if type(m) is kind]


def _to_every_peer(h: Harness, kind: type) -> None:
    assert sorted(m.receiver for m in _sent(h, kind)) == sorted(h.peers), (kind.__name__, h.sent)


def _adopt_term(h: Harness, before: State) -> None:
    assert h.term > before.term


def _start_election(h: Harness, before: State) -> None:
    assert (h.term, h.core.record.voted_for) == (before.term + 1, NODE)
    _to_every_peer(h, RequestVote)


def _start_pre_vote(h: Harness, before: State) -> None:
    assert h.term == before.term
    _to_every_peer(h, PreVote)
    assert {m.term for m in _sent(h, PreVote)} <= {before.term + 1}


def _become_leader(h: Harness, before: State) -> None:
    last = h.core.log.entries[-1]
    assert h.core.leader_id == NODE and (last.kind, last.term) == (EntryKind.noop, h.term)


def _replies(granted: bool, kind: type) -> Callable[[Harness, State], None]:
    def check(h: Harness, before: State) -> None:
        assert [m.vote_granted for m in _sent(h, kind)] == [granted], h.sent

    return check


def _grant_vote(h: Harness, before: State) -> None:
    _replies(True, RequestVoteReply)(h, before)
    assert h.core.record.voted_for == "n2"


def _broadcast_heartbeat(h: Harness, before: State) -> None:
    _to_every_peer(h, AppendEntries)


def _accept_append_entries(h: Harness, before: State) -> None:
    assert [m.success for m in _sent(h, AppendEntriesReply)] == [True] and h.core.leader_id == "n2"


def _reject_stale_append_entries(h: Harness, before: State) -> None:
    assert [(m.success, m.term) for m in _sent(h, AppendEntriesReply)] == [(False, h.term)]


def _accept_snapshot(h: Harness, before: State) -> None:
    assert [m.done for m in _sent(h, InstallSnapshotReply)] == [True] and h.core.leader_id == "n2"
    assert h.core.commit_index >= 1


def _reject_stale_snapshot(h: Harness, before: State) -> None:
    assert [(m.done, m.next_offset, m.term) for m in _sent(h, InstallSnapshotReply)] == [(False, 0, h.term)]


def _append_proposal(h: Harness, before: State) -> None:
    last = h.core.log.entries[-1]
    assert (last.index, last.kind, last.data) == (before.last_index + 1, EntryKind.data, b"command")


def _refuse_proposal(h: Harness, before: State) -> None:
    assert isinstance(h.raised, NotLeader) and h.core.log.last_index == before.last_index


def _halt(h: Harness, before: State) -> None:
    assert h.core.record.halt_reason == "disk full" and h.sent == []


def _step_down(h: Harness, before: State) -> None:
    assert h.core.leader_id is None


EFFECTS: Mapping[str, Callable[[Harness, State], None]] = {
    "adopt_term": _adopt_term,
    "start_election": _start_election,
    "start_pre_vote": _start_pre_vote,
    "become_leader": _become_leader,
    "grant_vote": _grant_vote,
    "reject_vote": _replies(False, RequestVoteReply),
    "grant_pre_vote": _replies(True, PreVoteReply),
    "reject_pre_vote": _replies(False, PreVoteReply),
    "broadcast_heartbeat": _broadcast_heartbeat,
    "accept_append_entries": _accept_append_entries,
    "reject_stale_append_entries": _reject_stale_append_entries,
    "accept_snapshot": _accept_snapshot,
    "reject_stale_snapshot": _reject_stale_snapshot,
    "append_proposal": _append_proposal,
    "refuse_proposal": _refuse_proposal,
    "halt": _halt,
    "step_down": _step_down,
}
"""What an action is seen to do, by name: checked after a target row that runs it."""

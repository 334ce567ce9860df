"""`RaftCore`: one Raft node as a sans-I/O object.

It never reads a clock, sleeps, touches a socket or a file, or draws from a global RNG.
Time enters through `tick()`, messages through `step()`, commands through `propose()`;
everything the outside world must do leaves through `ready()` as a `Ready`, and the
driver confirms it with `advance()`. The driver must not call `step`/`tick`/`propose`
between `ready()` and `advance()`.
"""

from __future__ import annotations

from collections.abc import Sequence

from attrs import frozen

from generated.raft_fsm import (
    EVENT_OF_MESSAGE,
    AppendEntries,
    Event,
    FatalError,
    InstallSnapshot,
    MembershipChange,
    PreVote,
    PreVoteReply,
    Proposal,
    ReadRequest,
    RequestVote,
    Role,
    TermNotice,
    TransferRequest,
    WireMessage,
)
from runtime.consensus import Config, Consensus
from runtime.dispatch import Dispatcher
from runtime.log import RaftLog
from runtime.membership import Configuration
from runtime.ready import HardState, PersistentState, Ready, Snapshot, SoftState
from runtime.record import NodeRecord

_EVENT_OF_MESSAGE: dict[type, Event] = dict(EVENT_OF_MESSAGE)


def _prospective(message: WireMessage) -> bool:
    """A PreVote, or a granted PreVoteReply, carries the term an election *would* have;
    nobody has entered it yet, so it must not be adopted (thesis §9.6)."""
    return type(message) is PreVote or (type(message) is PreVoteReply and message.vote_granted)


@frozen
class Dropped:
    """Why `RaftCore.step` did not handle a message. `invalid` marks messages no correct
    peer sends (worth a warning); the others are expected now and then."""

    reason: str
    invalid: bool


class RaftCore:
    """A Raft node without I/O. See the module docstring for the driver contract."""

    def __init__(
        self,
        node_id: str,
        voters: Sequence[str] | Configuration,
        config: Config | None = None,
        state: PersistentState | None = None,
        handlers: type[Consensus] = Consensus,
    ) -> None:
        """`voters` (ids, or a whole `Configuration` with learners and addresses) is the
        bootstrap configuration: used only when neither `state`'s snapshot, its stored
        bootstrap configuration nor its log holds one. `handlers` lets a protocol developer
        run a subclass of the stock guards and actions (the test suite plants bugs this way).
        Raises ValueError (ConfigurationError) for a malformed configuration."""
        bootstrap = voters if isinstance(voters, Configuration) else Configuration.voters_only(voters)
        self.config = config or Config()
        record = NodeRecord(id=node_id, peers={})
        snapshot = None
        if state is not None:
            snapshot = state.snapshot
            applied, snapshot_term = (snapshot.index, snapshot.term) if snapshot else (0, 0)
            entries = state.entries
            if entries and entries[0].index <= applied:
                # a trailing log kept after the snapshot: its first entry is the anchor
                record.log = RaftLog(entries[1:], entries[0].index, entries[0].term)
            else:
                record.log = RaftLog(entries, applied, snapshot_term)
            record.current_term = state.hard_state.term
            record.voted_for = state.hard_state.vote
            record.commit_index = max(state.hard_state.commit, applied)
            record.last_applied = applied
        self.record = record
        if snapshot is not None:
            base = snapshot.configuration
        elif state is not None and state.configuration is not None:
            base = state.configuration
        else:
            base = bootstrap
        self._consensus = handlers(record, self.config, base)
        self._consensus.snapshot = snapshot
        self._consensus.apply_configuration()
        self._consensus.note_entries(record.log.entries)
        self._reported_configuration = self._consensus.configuration
        self._dispatcher = Dispatcher(record, self._consensus)
        self._fire = self._dispatcher.fire
        self._persisted = HardState(record.current_term, record.voted_for, record.commit_index)
        self._soft = SoftState(record.role, record.leader_id)

    # -- read-only views -------------------------------------------------------------------
    @property
    def id(self) -> str:
        return self.record.id

    @property
    def role(self) -> Role:
        return self.record.role

    @property
    def term(self) -> int:
        return self.record.current_term

    @property
    def leader_id(self) -> str | None:
        return self.record.leader_id

    @property
    def commit_index(self) -> int:
        return self.record.commit_index

    @property
    def last_applied(self) -> int:
        return self.record.last_applied

    @property
    def log(self) -> RaftLog:
        return self.record.log

    @property
    def voters(self) -> tuple[str, ...]:
        return self._consensus.voters

    @property
    def configuration(self) -> Configuration:
        """The configuration this node uses: the latest in its log, committed or not."""
        return self._consensus.configuration

    @property
    def configuration_committed(self) -> bool:
        """True if the configuration in use is committed (no change in flight)."""
        log = self._consensus.config_log
        return not log or log[-1][0] <= self.record.commit_index

    def status(self) -> dict[str, object]:
        record = self.record
        return {
            "id": record.id,
            "role": record.role.name,
            "term": record.current_term,
            "leader": record.leader_id,
            "commit": record.commit_index,
            "applied": record.last_applied,
            "last_index": record.log.last_index,
            "halt_reason": record.halt_reason,
            "voters": list(self._consensus.configuration.voters),
            "learners": list(self._consensus.configuration.learners),
            "peers": {
                peer.id: {
                    "match": peer.match_index,
                    "next": peer.next_index,
                    "state": "probe" if peer.probing else "replicate",
                    "inflight": len(peer.inflight),
                }
                for peer in record.peers.values()
            },
        }

    # -- inputs ----------------------------------------------------------------------------
    def tick(self) -> None:
        """Advance logical time by one tick."""
        consensus = self._consensus
        consensus.ticks += 1
        if self.record.role is Role.leader:
            consensus.election_elapsed += 1
            consensus.heartbeat_elapsed += 1
            if consensus.election_elapsed >= self.config.election_ticks:
                consensus.election_elapsed = 0
                self._fire(Event.election_timeout)
                if self.record.role is not Role.leader:
                    return
            if consensus.heartbeat_elapsed >= self.config.heartbeat_ticks:
                consensus.heartbeat_elapsed = 0
                self._fire(Event.heartbeat_timeout)
        else:
            consensus.age_incoming_snapshot()
            consensus.election_elapsed += 1
            if consensus.election_elapsed >= consensus.randomized_timeout:
                self._fire(Event.election_timeout)

    def step(self, message: WireMessage) -> Dropped | None:
        """Handle a message from a peer. A higher term is adopted first (§5.1).

        Returns None when the message was handled, or a `Dropped` saying why it was not:
        it came from outside the configuration or is impossible for a correct peer
        (`invalid`, see `runtime.consensus.validation`), or it is a vote request ignored
        for leader stickiness. A dropped message changes nothing; nothing a peer sends
        makes this raise."""
        record = self.record
        kind = type(message)
        if message.receiver != record.id:
            return Dropped(f"{kind.__name__} from {message.sender!r} is addressed to {message.receiver!r}",
                           invalid=True)
        if message.sender not in self._consensus.known_ids or message.sender == record.id:
            # not in any configuration this node has seen: a node added by an entry it has
            # not received yet, or a stranger (strangers cannot get this far: the transport
            # authenticates every peer). Messages from members of other configurations are
            # processed (thesis §4.1), so a node with a stale configuration still follows
            # the current leader.
            return Dropped(
                f"{kind.__name__} from {message.sender!r}, outside the configurations this node knows "
                f"({self._consensus.configuration.describe()})", invalid=False,
            )
        if record.role is Role.error:
            return Dropped(f"{kind.__name__} from {message.sender}: this node halted", invalid=False)
        reason = self._consensus.invalid_reason(message)
        if reason is not None:
            return Dropped(f"invalid {kind.__name__} from {message.sender}: {reason}", invalid=True)
        if message.term > record.current_term and not _prospective(message):
            leader = message.sender if kind is AppendEntries or kind is InstallSnapshot else None
            # a RequestVote the leader asked for (TimeoutNow) is not subject to stickiness
            disruptive = kind is RequestVote and not message.leadership_transfer  # type: ignore[union-attr]
            self._fire(Event.higher_term, TermNotice(message.term, leader, disruptive))
            if record.current_term < message.term:
                return Dropped(
                    f"{kind.__name__} from {message.sender} for term {message.term} ignored: the leader "
                    f"{record.leader_id} is live (leader stickiness)", invalid=False,
                )
        self._fire(_EVENT_OF_MESSAGE[kind], message)
        self._check_configuration_commit()
        return None

    def _check_configuration_commit(self) -> None:
        """Tell the leader's table when the latest configuration entry has committed."""
        consensus = self._consensus
        record = self.record
        if record.role is Role.leader and consensus.config_log:
            index = consensus.config_log[-1][0]
            if consensus.config_commit_seen < index <= record.commit_index:
                consensus.config_commit_seen = index
                self._fire(Event.configuration_committed)

    def propose(self, command: bytes) -> tuple[int, int]:
        """Append one command; return its (index, term). Raises NotLeader on a follower
        or candidate. The command is committed once a later Ready applies that index
        with that term."""
        self._fire(Event.propose, Proposal((command,)))
        first, _, term = self._consensus.last_proposal
        return first, term

    def propose_batch(self, commands: Sequence[bytes]) -> tuple[int, int, int]:
        """Append many commands at once; return (first index, last index, term)."""
        self._fire(Event.propose, Proposal(commands))
        return self._consensus.last_proposal

    def read(self, request_id: int) -> None:
        """Ask for a linearizable read (thesis §6.4). A later Ready carries a `ReadState`
        with this `request_id`: serve the read once `index` is applied, or refuse it if
        `index` is None. Raises NotLeader on a node that knows no leader."""
        self._fire(Event.read, ReadRequest(request_id))

    def change_membership(self, configuration: Configuration) -> int:
        """Switch to `configuration` (leader only; one server at a time, see
        runtime.consensus.membership); return the index of its entry. It takes effect at
        once; it is in force for good once that index is committed. Raises NotLeader or
        MembershipChangeRefused (saying why)."""
        self._fire(Event.change_membership, MembershipChange(configuration.encode()))
        return self._consensus.last_proposal[0]

    def transfer_leadership(self, target: str | None = None) -> str:
        """Hand leadership to `target` (default: the most up-to-date voter); return the
        target. The leader refuses proposals meanwhile; the transfer is abandoned after an
        election timeout. Raises NotLeader or MembershipChangeRefused."""
        self._fire(Event.transfer_leadership, TransferRequest(target))
        target_id = self._consensus.transfer_target
        assert target_id is not None
        return target_id

    def campaign(self) -> None:
        """Start an election now (as if the election timeout had elapsed)."""
        if self.record.role is not Role.leader:
            self._fire(Event.election_timeout)

    def fail(self, reason: str) -> None:
        """The driver could not persist or apply: move to the error role for good."""
        self._fire(Event.fatal_error, FatalError(reason))

    def compact(
        self, index: int, data: bytes, *, trailing: int = 0, trailing_bytes: int | None = None,
        checksum: bytes | None = None,
    ) -> Snapshot:
        """The application snapshotted its state at `index` (<= last_applied): drop the
        log up to there, keeping up to `trailing` entries (and at most `trailing_bytes` of
        their data) before `index` so that followers a little behind catch up from the log.
        The driver stores the returned snapshot with `storage.compact(snapshot, log.first_index)`.
        `checksum` (the SHA-256 of `data`) may be given when computed off the event loop."""
        record = self.record
        log = record.log
        if index > record.last_applied:
            raise ValueError(f"cannot compact to {index}: only {record.last_applied} is applied")
        term = log.term_at(index)
        if term is None or index < log.offset:
            raise ValueError(f"cannot compact to {index}: the log starts after {log.offset}")
        configuration = self._consensus.configuration_at(index)
        if checksum is None:
            snapshot = Snapshot(index, term, configuration, data)
        else:
            snapshot = Snapshot(index, term, configuration, data, checksum)
        cut = max(log.offset, index - trailing)
        if trailing_bytes is not None:
            kept = 0
            position = index
            while position > cut:
                kept += len(log.entry(position).data)
                if kept > trailing_bytes:
                    break
                position -= 1
            cut = position
        log.compact(cut)
        self._consensus.note_compaction(cut)
        self._consensus.snapshot = snapshot
        return snapshot

    # -- outputs ---------------------------------------------------------------------------
    def _hard_state(self) -> HardState | None:
        record = self.record
        persisted = self._persisted
        if (
            persisted.term == record.current_term
            and persisted.vote == record.voted_for
            and persisted.commit == record.commit_index
        ):
            return None
        return HardState(record.current_term, record.voted_for, record.commit_index)

    def _soft_state(self) -> SoftState | None:
        record = self.record
        if self._soft.role is record.role and self._soft.leader_id == record.leader_id:
            return None
        return SoftState(record.role, record.leader_id)

    def has_ready(self) -> bool:
        record = self.record
        consensus = self._consensus
        if record.role is Role.error:
            return self._soft_state() is not None
        return bool(
            consensus.outbox
            or consensus.pending_broadcast
            or record.log.stable < record.log.last_index
            or record.commit_index > record.last_applied
            or consensus.received_snapshot is not None
            or consensus.read_states
            or (consensus.read_round_wanted and record.role is Role.leader)
            or consensus.configuration is not self._reported_configuration
            or self._hard_state() is not None
            or self._soft_state() is not None
        )

    def ready(self) -> Ready:
        record = self.record
        consensus = self._consensus
        if record.role is Role.error:
            return Ready((), (), None, (), None, self._soft_state())
        if record.role is Role.leader:
            if consensus.pending_broadcast:
                consensus.flush()
            if consensus.read_round_wanted:
                consensus.start_read_round()
        log = record.log
        snapshot = consensus.received_snapshot
        apply_from = (snapshot.index if snapshot is not None else record.last_applied) + 1
        committed = log.slice(apply_from, record.commit_index + 1) if record.commit_index >= apply_from else ()
        messages = consensus.outbox
        consensus.outbox = []
        read_states = consensus.read_states
        consensus.read_states = []
        configuration = consensus.configuration
        changed = configuration if configuration is not self._reported_configuration else None
        return Ready(messages, log.unstable(), self._hard_state(), committed, snapshot, self._soft_state(),
                     read_states, changed)

    def advance(self, ready: Ready) -> None:
        """The driver persisted, sent and applied `ready`."""
        record = self.record
        consensus = self._consensus
        if ready.soft_state is not None:
            self._soft = ready.soft_state
        if ready.configuration is not None:
            self._reported_configuration = ready.configuration
        if record.role is Role.error:
            return
        if ready.entries:
            record.log.mark_stable(ready.entries[-1].index)
        if ready.hard_state is not None:
            self._persisted = ready.hard_state
        if ready.snapshot is not None:
            record.last_applied = max(record.last_applied, ready.snapshot.index)
            if consensus.received_snapshot is ready.snapshot:
                consensus.received_snapshot = None
        if ready.committed_entries:
            record.last_applied = ready.committed_entries[-1].index
        if record.role is Role.leader:
            consensus.maybe_commit()  # our own entries just became durable
            self._check_configuration_commit()

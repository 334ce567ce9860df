"""Linearizable reads without a log write: ReadIndex and leases (thesis §6.4).

ReadIndex: the leader notes its commit index (once it has committed an entry of its own
term, so that index covers everything committed before it took office), then confirms it
is still the leader with one heartbeat round, and the read is served once the state
machine has applied that index. Every AppendEntries carries the leader's current
`read_round` and every reply echoes it; a read registered now waits for the next round,
so all reads that arrive before that round goes out share it. A follower asks the leader
for a read index (`ReadIndexRequest`) and serves the read itself.

Lease (`Config.read_mode = "lease"`): a leader that heard from a quorum within
`election_ticks - lease_drift_ticks` ticks answers at once. This relies on CheckQuorum's
leader stickiness (no follower votes for another node within an election timeout of
hearing from its leader) and on clocks whose rates differ by less than the drift margin.
"""

from __future__ import annotations

from generated.raft_fsm import ReadIndexReply, ReadIndexRequest, ReadRequest
from runtime.consensus.base import ConsensusBase
from runtime.errors import NotLeader
from runtime.ready import PendingRead, ReadState


class Reads(ConsensusBase):
    """Guards and actions of the read rows of the spec."""

    # -- leader --------------------------------------------------------------------------------
    def start_read(self, message: ReadRequest, /) -> None:
        self._register_read(message.request_id, None)

    def start_remote_read(self, message: ReadIndexRequest, /) -> None:
        self._register_read(message.request_id, message.sender)

    def _register_read(self, request_id: int, origin: str | None) -> None:
        self.pending_reads.append(PendingRead(request_id, origin, None, self.read_round + 1))
        self.read_round_wanted = True

    def committed_in_term(self) -> bool:
        record = self.record
        return record.log.term_at(record.commit_index) == record.current_term

    def confirmed_round(self) -> int:
        """The highest round a quorum of voters (this leader included) has echoed."""
        rounds = sorted([p.read_round for p in self._voting_peers()] + [self.read_round] * self.self_votes,
                        reverse=True)
        return rounds[self.quorum - 1]

    def start_read_round(self) -> None:
        """Called when the Ready is built: the round the waiting reads need goes out now,
        as an empty AppendEntries to every peer."""
        self.read_round_wanted = False
        self.read_round += 1
        for peer in self.record.peers.values():
            self.replicate(peer, heartbeat=True)
        self.release_reads()

    def release_reads(self) -> None:
        """Give every read whose round is confirmed its index (the commit index, once an
        entry of this term is committed) and answer it."""
        if not self.committed_in_term():
            return
        commit = self.record.commit_index
        confirmed = self.confirmed_round()
        waiting: list[PendingRead] = []
        for read in self.pending_reads:
            if read.index is None:
                read.index = commit
            if read.round <= confirmed:
                self._answer(read.request_id, read.origin, read.index)
            else:
                waiting.append(read)
        self.pending_reads = waiting

    def abort_reads(self) -> None:
        """This node stops being the leader: every read it holds is refused (clients retry)."""
        for read in self.pending_reads:
            self._answer(read.request_id, read.origin, None)
        self.pending_reads = []
        self.read_round_wanted = False

    def _answer(self, request_id: int, origin: str | None, index: int | None) -> None:
        if origin is None:
            self.read_states.append(ReadState(request_id, index))
            return
        record = self.record
        self.outbox.append(
            ReadIndexReply(self._msg_id(), record.id, origin, record.current_term, request_id,
                           index or 0, index is not None)
        )

    # -- leases --------------------------------------------------------------------------------
    def lease_valid(self, message: ReadRequest, /) -> bool:
        config = self.config
        if config.read_mode != "lease" or not self.committed_in_term():
            return False
        lease = config.election_ticks - config.lease_drift_ticks
        heard = self.self_votes + sum(1 for p in self._voting_peers() if self.ticks - p.heard_tick < lease)
        return heard >= self.quorum

    def read_under_lease(self, message: ReadRequest, /) -> None:
        self.read_states.append(ReadState(message.request_id, self.record.commit_index))

    # -- followers -----------------------------------------------------------------------------
    def knows_leader(self, message: ReadRequest, /) -> bool:
        return self.record.leader_id is not None

    def forward_read(self, message: ReadRequest, /) -> None:
        record = self.record
        assert record.leader_id is not None, "guarded by knows_leader"
        self.outbox.append(
            ReadIndexRequest(self._msg_id(), record.id, record.leader_id, record.current_term, message.request_id)
        )

    def refuse_read(self, message: ReadRequest, /) -> None:
        raise NotLeader(self.record.id, self.record.leader_id)

    def reject_remote_read(self, message: ReadIndexRequest, /) -> None:
        record = self.record
        self.outbox.append(
            ReadIndexReply(self._msg_id(), record.id, message.sender, record.current_term, message.request_id, 0,
                           False)
        )

    def finish_remote_read(self, message: ReadIndexReply, /) -> None:
        self.read_states.append(ReadState(message.request_id, message.read_index if message.success else None))

"""Terms (§5.1), elections (§5.2, §5.4.1), PreVote (thesis §9.6) and CheckQuorum."""

from __future__ import annotations

from generated.raft_fsm import (
    Entry,
    EntryKind,
    PreVote,
    PreVoteReply,
    RequestVote,
    RequestVoteReply,
    TermNotice,
)
from runtime.consensus.base import ConsensusBase
from runtime.limits import MAX_TERM


class Election(ConsensusBase):
    """Guards and actions of the election rows of the spec."""

    def leader_is_live(self, message: TermNotice, /) -> bool:
        """Thesis §4.2.3: with CheckQuorum, a vote request is disruptive while a leader was
        heard from within the election timeout (a leader counts itself)."""
        record = self.record
        return (
            message.vote_request
            and self.config.check_quorum
            and record.leader_id is not None
            and self.election_elapsed < self.config.election_ticks
        )

    def adopt_term(self, message: TermNotice, /) -> None:
        record = self.record
        record.current_term = message.term
        record.voted_for = None
        record.leader_id = message.leader_id
        self.pending_broadcast = False
        self.drop_incoming_snapshot()
        self.abort_reads()
        self.transfer_target = None
        self.reset_election_timer()

    def terms_exhausted(self) -> bool:
        return self.record.current_term >= MAX_TERM

    def is_sole_voter(self) -> bool:
        return self.voters == (self.record.id,)

    def start_election(self) -> None:
        self.campaign()

    def campaign(self, leadership_transfer: bool = False) -> None:
        """Start a new term, vote for ourselves and ask every voter for its vote."""
        record = self.record
        record.current_term += 1
        record.voted_for = record.id
        record.leader_id = None
        self.reset_election_timer()
        last_index, last_term = record.log.last_index, record.log.last_term
        for peer in record.peers.values():
            peer.voted = False
            if peer.can_vote:
                self.outbox.append(
                    RequestVote(self._msg_id(), record.id, peer.id, record.current_term,
                                record.id, last_index, last_term, leadership_transfer)
                )

    def can_grant_vote(self, message: RequestVote, /) -> bool:
        """One vote per term (§5.2), only for a log at least as up-to-date (§5.4.1)."""
        record = self.record
        return (
            message.term == record.current_term
            and record.voted_for in (None, message.candidate_id)
            and record.log.is_up_to_date(message.last_log_index, message.last_log_term)
        )

    def grant_vote(self, message: RequestVote, /) -> None:
        record = self.record
        record.voted_for = message.candidate_id
        self.reset_election_timer()
        self._vote_reply(message, True)

    def reject_vote(self, message: RequestVote, /) -> None:
        self._vote_reply(message, False)

    def _vote_reply(self, message: RequestVote, granted: bool) -> None:
        record = self.record
        self.outbox.append(
            RequestVoteReply(self._msg_id(), record.id, message.sender, record.current_term, granted)
        )

    def record_vote(self, message: RequestVoteReply, /) -> None:
        peer = self.record.peers.get(message.sender)
        if peer is not None and message.term == self.record.current_term and message.vote_granted:
            peer.voted = True

    def won_election(self, message: RequestVoteReply, /) -> bool:
        votes = self.self_votes + sum(1 for p in self._voting_peers() if p.voted)
        return votes >= self.quorum

    def become_leader(self) -> None:
        """§5.3/§8: reset every follower's progress and append a no-op of the new term,
        so entries of earlier terms get committed through it."""
        record = self.record
        record.leader_id = record.id
        next_index = record.log.last_index + 1
        for peer in record.peers.values():
            peer.next_index = next_index
            peer.match_index = 0
            peer.probing = True
            peer.probe_sent = False
            peer.inflight.clear()
            peer.snapshot = None
            peer.stalled = False
            peer.sent_index = 0
            peer.read_round = 0
            # CheckQuorum counts only peers heard from in this leadership: an isolated new
            # leader steps down after one election timeout
            peer.recent_active = False
        self.heartbeat_elapsed = 0
        self.election_elapsed = 0
        self.transfer_target = None
        self.config_commit_seen = 0
        record.log.append(Entry(record.current_term, next_index, EntryKind.noop, b""))
        self.pending_broadcast = True

    def pre_vote_enabled(self) -> bool:
        return self.config.pre_vote

    def start_pre_vote(self) -> None:
        """Ask every voter whether it would vote for us in the next term, without taking
        that term (nothing to persist: no term, no vote changes)."""
        record = self.record
        record.leader_id = None
        self.reset_election_timer()
        last_index, last_term = record.log.last_index, record.log.last_term
        for peer in record.peers.values():
            peer.voted = False
            if peer.can_vote:
                self.outbox.append(
                    PreVote(self._msg_id(), record.id, peer.id, record.current_term + 1,
                            record.id, last_index, last_term)
                )

    def can_grant_pre_vote(self, message: PreVote, /) -> bool:
        """Only for a later term and a log at least as up-to-date (§5.4.1), and only if we
        have not heard from a leader within the election timeout (leader stickiness)."""
        record = self.record
        if message.term <= record.current_term:
            return False
        if record.leader_id is not None and self.election_elapsed < self.config.election_ticks:
            return False
        return record.log.is_up_to_date(message.last_log_index, message.last_log_term)

    def grant_pre_vote(self, message: PreVote, /) -> None:
        record = self.record
        # a grant carries the term asked about, so the asker does not mistake it for news
        self.outbox.append(PreVoteReply(self._msg_id(), record.id, message.sender, message.term, True))

    def reject_pre_vote(self, message: PreVote, /) -> None:
        record = self.record
        self.outbox.append(
            PreVoteReply(self._msg_id(), record.id, message.sender, record.current_term, False)
        )

    def record_pre_vote(self, message: PreVoteReply, /) -> None:
        peer = self.record.peers.get(message.sender)
        if peer is not None and message.vote_granted and message.term == self.record.current_term + 1:
            peer.voted = True

    def won_pre_vote(self, message: PreVoteReply, /) -> bool:
        return self.self_votes + sum(1 for p in self._voting_peers() if p.voted) >= self.quorum

    def quorum_active(self) -> bool:
        if not self.config.check_quorum:
            return True
        active = self.self_votes + sum(1 for p in self._voting_peers() if p.recent_active)
        return active >= self.quorum

    def reset_quorum_check(self) -> None:
        for peer in self.record.peers.values():
            peer.recent_active = False

    def step_down(self) -> None:
        self.record.leader_id = None
        self.pending_broadcast = False
        self.transfer_target = None
        self.abort_reads()
        self.reset_election_timer()

"""Classic Raft bugs, planted by subclassing the stock handlers (RaftCore's `handlers=`
hook). The bug-injection test proves the simulator's checkers catch every one."""

from __future__ import annotations

from generated.raft_fsm import AppendEntries, MembershipChange, RequestVote, TermNotice
from runtime.consensus import Consensus


class CommitOldTermByCounting(Consensus):
    """Figure 8: commit an entry of an earlier term by counting its replicas."""

    def maybe_commit(self) -> bool:
        record = self.record
        matches = sorted([p.match_index for p in record.peers.values()] + [record.log.stable], reverse=True)
        candidate = matches[self.quorum - 1]
        if candidate > record.commit_index:
            record.commit_index = candidate
            return True
        return False


class ForgetToPersistVote(Consensus):
    """Remember the vote only in memory: after a crash the node votes again in the same term."""

    volatile_vote: str | None = None

    def can_grant_vote(self, message: RequestVote, /) -> bool:
        record = self.record
        return (
            message.term == record.current_term
            and record.voted_for in (None, message.candidate_id)
            and self.volatile_vote in (None, message.candidate_id)
            and record.log.is_up_to_date(message.last_log_index, message.last_log_term)
        )

    def grant_vote(self, message: RequestVote, /) -> None:
        self.volatile_vote = message.candidate_id
        self.reset_election_timer()
        self._vote_reply(message, True)

    def adopt_term(self, message: TermNotice, /) -> None:
        self.volatile_vote = None
        super().adopt_term(message)


class GrantVoteWithoutUpToDateCheck(Consensus):
    """§5.4.1 skipped: vote for a candidate whose log is behind."""

    def can_grant_vote(self, message: RequestVote, /) -> bool:
        record = self.record
        return message.term == record.current_term and record.voted_for in (None, message.candidate_id)


class TruncateMatchingSuffix(Consensus):
    """Truncate everything after prev_log_index, even entries that match (a delayed or
    duplicated AppendEntries then erases acknowledged entries)."""

    def accept_append_entries(self, message: AppendEntries, /) -> None:
        log = self.record.log
        prev = message.prev_log_index
        if prev >= self.record.commit_index and log.term_at(prev) == message.prev_log_term and prev < log.last_index:
            log.truncate_after(prev)
        super().accept_append_entries(message)


class SkipNoop(Consensus):
    """A new leader does not append a no-op, so entries of earlier terms stay uncommitted."""

    def become_leader(self) -> None:
        super().become_leader()
        log = self.record.log
        log.entries.pop()
        for peer in self.record.peers.values():
            peer.next_index = log.last_index + 1


class AcceptStaleLeader(Consensus):
    """Accept AppendEntries from a leader of an older term."""

    def from_current_leader(self, message: AppendEntries, /) -> bool:
        return message.term <= self.record.current_term




class TwoChangesAtOnce(Consensus):
    """Membership: accept a configuration change while an earlier one is uncommitted (two
    changes in flight can create disjoint majorities)."""

    def _change_refusal(self, message: MembershipChange) -> str | None:
        config_log, self.config_log = self.config_log, []
        try:
            return super()._change_refusal(message)
        finally:
            self.config_log = config_log


class ChangeBeforeOwnTermCommit(Consensus):
    """Membership: a new leader changes the configuration before committing an entry of its
    own term (the bug of the original single-server algorithm)."""

    def _change_refusal(self, message: MembershipChange) -> str | None:
        record = self.record
        commit = record.commit_index
        if record.log.term_at(commit) != record.current_term:
            # pretend the newest entry is committed for the check, then restore
            record.commit_index = record.log.last_index
            try:
                return super()._change_refusal(message)
            finally:
                record.commit_index = commit
        return super()._change_refusal(message)


class CountRemovedVoter(Consensus):
    """Membership: a removed voter keeps counting toward the leader's quorums."""

    def apply_configuration(self) -> None:
        removed = {p.id: p for p in self.record.peers.values() if p.can_vote}
        super().apply_configuration()
        for peer_id, peer in removed.items():
            if peer_id not in self.record.peers and peer_id != self.record.id:
                self.record.peers[peer_id] = peer  # still replicated to, still counted


PLANTED_BUGS: dict[str, type[Consensus]] = {
    "commit_old_term_by_counting": CommitOldTermByCounting,
    "forget_to_persist_vote": ForgetToPersistVote,
    "grant_vote_without_up_to_date_check": GrantVoteWithoutUpToDateCheck,
    "truncate_matching_suffix": TruncateMatchingSuffix,
    "skip_noop": SkipNoop,
    "accept_stale_leader": AcceptStaleLeader,
    "two_membership_changes_at_once": TwoChangesAtOnce,
    "membership_change_before_own_term_commit": ChangeBeforeOwnTermCommit,
    "count_removed_voter": CountRemovedVoter,
}

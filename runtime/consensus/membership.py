"""Membership changes, one server at a time (Raft thesis §4.1), and learners.

Every node uses the latest configuration entry in its log, committed or not; truncating
that entry falls back to the one before, and a snapshot carries the configuration as of
its index. A leader accepts a change only when

- it has committed an entry of its own term (the fix to the single-server algorithm: a
  new leader could otherwise change the configuration on top of an uncommitted change of a
  previous leader and let two disjoint majorities form),
- no earlier configuration entry is still uncommitted (one change in flight),
- the new configuration differs from the current one by at most one voter (adding a
  learner, promoting one caught up within `Config.max_promotion_lag`, removing any member),
- no leadership transfer is under way.

Learners (the seed's `canVote = false`) receive the log but count toward no quorum and
never campaign. A leader that the committed configuration no longer counts as a voter
steps down (`configuration_committed`); until then it replicates without counting itself.
"""

from __future__ import annotations

from collections.abc import Sequence

from generated.raft_fsm import Entry, EntryKind, MembershipChange
from runtime.consensus.base import ConsensusBase
from runtime.errors import MembershipChangeRefused
from runtime.membership import Configuration, ConfigurationError
from runtime.record import Peer


class Membership(ConsensusBase):
    """Guards and actions of the membership rows, and the bookkeeping of configurations."""

    # -- which configuration is in force -------------------------------------------------------
    def apply_configuration(self) -> None:
        """Use the latest configuration of the log: voters, quorum and the peer table."""
        configuration = self.config_log[-1][1] if self.config_log else self.base_configuration
        self.configuration = configuration
        self.known_ids.update(configuration.ids)
        self.voters = configuration.voters
        self.quorum = len(self.voters) // 2 + 1
        record = self.record
        self.self_votes = 1 if configuration.is_voter(record.id) else 0
        peers = record.peers
        members = set(configuration.ids)
        for member in configuration.members:
            if member.id == record.id:
                continue
            peer = peers.get(member.id)
            if peer is None:
                peer = peers[member.id] = Peer(member.id)
                # a leader probes a new member from its own log's end, as for any follower
                peer.next_index = record.log.last_index + 1
            peer.can_vote = member.voter
        for peer_id in [p for p in peers if p not in members]:
            del peers[peer_id]

    def note_entries(self, entries: Sequence[Entry]) -> None:
        """Entries were appended to the log: a configuration entry takes effect now."""
        changed = False
        for entry in entries:
            if entry.kind is EntryKind.configuration:
                configuration = Configuration.decode(entry.data)
                self.config_log.append((entry.index, configuration))
                self.known_ids.update(configuration.ids)
                changed = True
        if changed:
            self.apply_configuration()

    def note_truncation(self, index: int) -> None:
        """Entries after `index` were dropped: so were their configurations."""
        if self.config_log and self.config_log[-1][0] > index:
            self.config_log = [(i, c) for i, c in self.config_log if i <= index]
            self.apply_configuration()

    def note_compaction(self, offset: int) -> None:
        """Entries up to `offset` were compacted: the latest of their configurations becomes
        the base."""
        while self.config_log and self.config_log[0][0] <= offset:
            self.base_configuration = self.config_log.pop(0)[1]

    def note_snapshot(self, configuration: Configuration) -> None:
        """The log was replaced by a snapshot taken under `configuration`."""
        self.base_configuration = configuration
        self.config_log = []
        self.apply_configuration()

    def configuration_at(self, index: int) -> Configuration:
        """The configuration in force once the log up to `index` is applied."""
        found = self.base_configuration
        for entry_index, configuration in self.config_log:
            if entry_index > index:
                break
            found = configuration
        return found

    def cannot_campaign(self) -> bool:
        return not self.self_votes

    # -- changes -----------------------------------------------------------------------------
    def _change_refusal(self, message: MembershipChange) -> str | None:
        record = self.record
        if record.log.term_at(record.commit_index) != record.current_term:
            return ("the leader has not committed an entry of its own term yet (a configuration change must "
                    "wait for it); retry shortly")
        if self.config_log and self.config_log[-1][0] > record.commit_index:
            return f"the configuration change at index {self.config_log[-1][0]} is not committed yet; one at a time"
        if self.transfer_target is not None:
            return f"a leadership transfer to {self.transfer_target} is under way"
        try:
            new = Configuration.decode(message.configuration)
        except ConfigurationError as exc:
            return str(exc)
        current = self.configuration
        if new == current:
            return "the configuration is unchanged"
        if current.voter_changes(new) > 1:
            return (f"{current.describe()} -> {new.describe()} changes {current.voter_changes(new)} voters; "
                    "change one server at a time")
        lag = self.config.max_promotion_lag
        for voter in set(new.voters) - set(current.voters):
            peer = record.peers.get(voter)
            if current.member(voter) is None:
                return f"{voter} must join as a learner first, then be promoted once it has caught up"
            if peer is not None and peer.match_index + lag < record.log.last_index:
                return (f"{voter} is {record.log.last_index - peer.match_index} entries behind (more than "
                        f"max_promotion_lag {lag}); promote it once it has caught up")
        return None

    def change_allowed(self, message: MembershipChange, /) -> bool:
        return self._change_refusal(message) is None

    def append_configuration(self, message: MembershipChange, /) -> None:
        record = self.record
        log = record.log
        entry = Entry(record.current_term, log.last_index + 1, EntryKind.configuration, message.configuration)
        log.append(entry)
        self.last_proposal = (entry.index, entry.index, entry.term)
        self.note_entries((entry,))
        self.pending_broadcast = True

    def refuse_membership_change(self, message: MembershipChange, /) -> None:
        raise MembershipChangeRefused(self._change_refusal(message) or "refused")

    def removed_from_voters(self) -> bool:
        return not self.self_votes

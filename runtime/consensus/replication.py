"""Log replication (§5.3): the leader's batching, pipelining and fast back-off, the
follower's consistency check, commitment (§5.4.2) and client proposals."""

from __future__ import annotations

from generated.raft_fsm import (
    AppendEntries,
    AppendEntriesReply,
    Entry,
    EntryKind,
    Proposal,
)
from runtime.consensus.base import ConsensusBase
from runtime.errors import NotLeader
from runtime.record import Peer


class Replication(ConsensusBase):
    """Guards and actions of the replication and client rows of the spec."""

    def broadcast_heartbeat(self) -> None:
        for peer in self.record.peers.values():
            self.replicate(peer, heartbeat=True)

    def flush(self) -> None:
        """Send what proposals appended since the last Ready: one batch per follower."""
        self.pending_broadcast = False
        for peer in self.record.peers.values():
            self.replicate(peer)

    def replicate(self, peer: Peer, heartbeat: bool = False) -> None:
        """Send `peer` what it lacks. A probing peer gets one message at a time; a
        replicating one gets batches up to the in-flight window (pipelining)."""
        log = self.record.log
        if heartbeat and peer.inflight and not peer.probing:
            # no answer for two heartbeat intervals: assume the messages were lost and
            # resume from what the follower is known to have
            if peer.stalled:
                self._back_to_probe(peer, peer.match_index + 1)
            else:
                peer.stalled = True
        if peer.next_index <= log.offset:
            self._send_snapshot(peer, heartbeat)
            return
        if peer.probing:
            # etcd's probe state: one AppendEntries with entries until the peer answers
            # anything; a peer that does not answer gets only empty heartbeats
            if peer.probe_sent:
                if heartbeat:
                    self._send_heartbeat(peer)
                return
            self._send_append(peer, peer.next_index)
            peer.probe_sent = True
            return
        if heartbeat and (peer.next_index > log.last_index or len(peer.inflight) >= self.config.max_inflight):
            self._send_heartbeat(peer)
            return
        last_index = log.last_index
        max_inflight = self.config.max_inflight
        while peer.next_index <= last_index and len(peer.inflight) < max_inflight:
            sent_to = self._send_append(peer, peer.next_index)
            peer.inflight.append(sent_to)
            peer.next_index = sent_to + 1

    def _send_append(self, peer: Peer, next_index: int) -> int:
        """Send entries from next_index on; return the index of the last entry sent."""
        record = self.record
        log = record.log
        config = self.config
        prev_index = next_index - 1
        prev_term = log.term_at(prev_index)
        assert prev_term is not None, "caller checked next_index > log.offset"
        high = min(log.last_index + 1, next_index + config.max_entries_per_message)
        entries = log.slice(next_index, high)
        if len(entries) > 1:
            budget = config.max_bytes_per_message
            size = 0
            for count, entry in enumerate(entries):
                size += len(entry.data) + 16
                if size > budget and count > 0:
                    entries = entries[:count]
                    break
        self.outbox.append(
            AppendEntries(self._msg_id(), record.id, peer.id, record.current_term, record.id,
                          prev_index, prev_term, entries, record.commit_index, self.read_round)
        )
        last = prev_index + len(entries)
        if last > peer.sent_index:
            peer.sent_index = last
        return last

    def _send_heartbeat(self, peer: Peer) -> None:
        """An empty AppendEntries anchored at what the follower is known to have, so it
        cannot be rejected because of messages still in flight."""
        record = self.record
        anchor = peer.match_index
        anchor_term = record.log.term_at(anchor)
        if anchor_term is None:
            anchor = peer.next_index - 1
            anchor_term = record.log.term_at(anchor)
            assert anchor_term is not None
        if anchor > peer.sent_index:
            peer.sent_index = anchor
        self.outbox.append(
            AppendEntries(self._msg_id(), record.id, peer.id, record.current_term, record.id,
                          anchor, anchor_term, (), record.commit_index, self.read_round)
        )

    def _back_to_probe(self, peer: Peer, next_index: int) -> None:
        peer.next_index = max(next_index, peer.match_index + 1)
        peer.probing = True
        peer.probe_sent = False
        peer.stalled = False
        peer.inflight.clear()

    def handle_append_entries_reply(self, message: AppendEntriesReply, /) -> None:
        record = self.record
        peer = record.peers.get(message.sender)
        if peer is None or message.term != record.current_term:
            return  # a reply to an earlier term
        peer.recent_active = True
        peer.heard_tick = self.ticks
        peer.probe_sent = False  # it answers: a probe may go out again
        if message.read_round > peer.read_round:
            peer.read_round = message.read_round
            if self.pending_reads:
                self.release_reads()
        if message.success:
            match = message.match_index
            if match > peer.match_index:
                peer.match_index = match
                peer.stalled = False
                inflight = peer.inflight
                while inflight and inflight[0] <= match:
                    inflight.popleft()
                if peer.next_index <= match:
                    peer.next_index = match + 1
                self.maybe_commit()
            if peer.probing and match >= peer.next_index - 1:
                peer.probing = False
                peer.probe_sent = False
                peer.snapshot = None
                peer.next_index = match + 1
                peer.inflight.clear()
            if self.transfer_target == peer.id:
                self.maybe_send_timeout_now(peer)
            self.replicate(peer)
            return
        # rejected: the follower's log does not match at reject_index
        if message.reject_index < peer.match_index:
            return  # stale: we already know it matches further on
        if peer.probing and message.reject_index != peer.next_index - 1:
            return  # an answer to an earlier probe
        next_index = message.conflict_index
        if message.conflict_term > 0:
            last_of_term = record.log.last_index_of_term(message.conflict_term)
            if last_of_term > 0:
                next_index = last_of_term + 1
        self._back_to_probe(peer, min(next_index, message.reject_index))
        self.replicate(peer)

    def maybe_commit(self) -> bool:
        """§5.3, §5.4.2: commit the highest index stored on a quorum, but only by counting
        replicas of an entry of the current term (Figure 8)."""
        record = self.record
        matches = sorted(
            [p.match_index for p in record.peers.values() if p.can_vote] + [record.log.stable] * self.self_votes,
            reverse=True,
        )
        candidate = matches[self.quorum - 1]
        if candidate > record.commit_index and record.log.term_at(candidate) == record.current_term:
            record.commit_index = candidate
            if self.pending_reads:
                self.release_reads()
            return True
        return False

    def from_current_leader(self, message: AppendEntries, /) -> bool:
        return message.term == self.record.current_term

    def accept_append_entries(self, message: AppendEntries, /) -> None:
        """§5.3: consistency check at prev_log_index, truncation of a conflicting suffix
        only, and the commit index follows the leader up to the last new entry."""
        record = self.record
        log = record.log
        record.leader_id = message.leader_id
        self.election_elapsed = 0
        prev_index = message.prev_log_index
        prev_term = message.prev_log_term
        entries = message.entries
        commit = record.commit_index
        if prev_index < commit:
            # entries up to our commit index match the leader's (Leader Completeness, Log
            # Matching): skip them and check consistency at the commit index instead
            entries = entries[commit - prev_index :]
            prev_index = commit
            committed_term = log.term_at(commit)
            assert committed_term is not None, "the commit index is never below the snapshot"
            prev_term = committed_term
        local_term = log.term_at(prev_index)
        if local_term is None or local_term != prev_term:
            if local_term is None:
                conflict_index, conflict_term = log.last_index + 1, 0
            else:
                conflict_index = max(log.first_index_of_term(prev_index), commit + 1)
                conflict_term = local_term
            self.outbox.append(
                AppendEntriesReply(self._msg_id(), record.id, message.sender, record.current_term,
                                   False, 0, message.prev_log_index, conflict_index, conflict_term,
                                   message.read_round)
            )
            return
        if entries:
            first = entries[0].index
            if first == log.last_index + 1:
                log.extend(entries)
                self.note_entries(entries)
            else:
                for position, entry in enumerate(entries):
                    index = entry.index
                    if index > log.last_index:
                        log.extend(entries[position:])
                        self.note_entries(entries[position:])
                        break
                    if log.term_at(index) != entry.term:
                        assert index > record.commit_index, "a committed entry conflicts"
                        log.truncate_after(index - 1)
                        self.note_truncation(index - 1)
                        log.extend(entries[position:])
                        self.note_entries(entries[position:])
                        break
        match = prev_index + len(entries)
        if message.leader_commit > record.commit_index:
            record.commit_index = min(message.leader_commit, match)
        self.outbox.append(
            AppendEntriesReply(self._msg_id(), record.id, message.sender, record.current_term,
                               True, match, 0, 0, 0, message.read_round)
        )

    def reject_stale_append_entries(self, message: AppendEntries, /) -> None:
        record = self.record
        self.outbox.append(
            AppendEntriesReply(self._msg_id(), record.id, message.sender, record.current_term,
                               False, 0, message.prev_log_index, 0, 0, message.read_round)
        )

    def append_proposal(self, message: Proposal, /) -> None:
        record = self.record
        log = record.log
        term = record.current_term
        first = log.last_index + 1
        index = first
        entries = log.entries
        data_kind = EntryKind.data
        size = 0
        for command in message.commands:
            entries.append(Entry(term, index, data_kind, command))
            index += 1
            size += len(command)
        log.bytes += size
        self.last_proposal = (first, index - 1, term)
        self.pending_broadcast = True

    def refuse_proposal(self) -> None:
        """Not the leader (or a leader handing over, which names no leader: the client
        retries and finds the new one)."""
        record = self.record
        raise NotLeader(record.id, None if record.leader_id == record.id else record.leader_id)

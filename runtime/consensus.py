"""Election and replication: the guards and actions of the generated `RaftHandlers`.

The dispatcher calls these; none of them changes the role (the table does). Section
numbers refer to the Raft paper (Ongaro & Ousterhout, "In Search of an Understandable
Consensus Algorithm", extended version).
"""

from __future__ import annotations

import random

from attrs import frozen

from generated.raft_fsm import (
    AppendEntries,
    AppendEntriesReply,
    Entry,
    EntryKind,
    FatalError,
    InstallSnapshot,
    InstallSnapshotReply,
    PreVote,
    PreVoteReply,
    Proposal,
    RequestVote,
    RequestVoteReply,
    TermNotice,
    WireMessage,
)
from runtime.errors import NotLeader
from runtime.ready import Snapshot
from runtime.record import NodeRecord, Peer


@frozen
class Config:
    """Tuning of one node. Times are in ticks of the driver's clock."""

    election_ticks: int = 10
    """Election timeout T: followers campaign after a random timeout in [T, 2T)."""
    heartbeat_ticks: int = 1
    """The leader sends heartbeats this often; must be well below election_ticks."""
    max_entries_per_message: int = 512
    """At most this many entries in one AppendEntries (batching)."""
    max_bytes_per_message: int = 1 << 20
    """...and at most about this many bytes of entry data (at least one entry is sent)."""
    max_inflight: int = 16
    """AppendEntries sent to one follower and not yet answered (pipelining window)."""
    check_quorum: bool = True
    """A leader that hears from no quorum for an election timeout steps down."""
    pre_vote: bool = True
    """Ask before campaigning (thesis §9.6): a node cut off from the cluster does not raise
    its term, so it cannot depose a healthy leader when it comes back."""
    seed: int = 0
    """Seed of the node's own RNG (randomized election timeouts)."""

    def __attrs_post_init__(self) -> None:
        if self.election_ticks < 2 or self.heartbeat_ticks < 1:
            raise ValueError("election_ticks must be >= 2 and heartbeat_ticks >= 1")
        if self.heartbeat_ticks >= self.election_ticks:
            raise ValueError("heartbeat_ticks must be smaller than election_ticks")
        if self.max_entries_per_message < 1 or self.max_inflight < 1:
            raise ValueError("max_entries_per_message and max_inflight must be >= 1")


class Consensus:
    """Implements every guard and action of the spec over one `NodeRecord`.

    Outgoing messages are appended to `outbox`; the core hands them out in a Ready.
    """

    def __init__(self, record: NodeRecord, config: Config, voters: tuple[str, ...]) -> None:
        self.record = record
        self.config = config
        self.voters = voters
        self.quorum = len(voters) // 2 + 1
        self.rng = random.Random(config.seed)
        self.outbox: list[WireMessage] = []
        self.next_msg_id = 1
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_timeout = 0
        self.reset_election_timer()
        self.pending_broadcast = False
        self.snapshot: Snapshot | None = None
        """The latest snapshot this node has (made locally or installed); sent to laggards."""
        self.received_snapshot: Snapshot | None = None
        """A snapshot installed from the leader and not yet handed to the driver."""
        self._snapshot_chunks = bytearray()
        self._snapshot_stream: tuple[int, int] | None = None
        """(index, term) of the snapshot whose chunks are in _snapshot_chunks."""
        self.last_proposal = (0, 0, 0)
        """(first index, last index, term) of the latest accepted proposal."""

    # -- helpers -----------------------------------------------------------------------
    def _msg_id(self) -> int:
        self.next_msg_id += 1
        return self.next_msg_id

    def reset_election_timer(self) -> None:
        """§5.2: randomized election timeouts in [T, 2T) keep split votes rare."""
        self.election_elapsed = 0
        timeout = self.config.election_ticks
        self.randomized_timeout = timeout + self.rng.randrange(timeout)

    def _voting_peers(self) -> list[Peer]:
        return [p for p in self.record.peers.values() if p.can_vote]

    # -- terms (§5.1) --------------------------------------------------------------------
    def adopt_term(self, message: TermNotice, /) -> None:
        record = self.record
        record.current_term = message.term
        record.voted_for = None
        record.leader_id = message.leader_id
        self.pending_broadcast = False
        self.reset_election_timer()

    # -- elections (§5.2, §5.4.1) --------------------------------------------------------
    def is_sole_voter(self) -> bool:
        return self.voters == (self.record.id,)

    def start_election(self) -> None:
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
                                record.id, last_index, last_term)
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
        votes = 1 + sum(1 for p in self._voting_peers() if p.voted)
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
            peer.recent_active = True
            peer.snapshot = None
            peer.stalled = False
        self.heartbeat_elapsed = 0
        self.election_elapsed = 0
        record.log.append(Entry(record.current_term, next_index, EntryKind.noop, b""))
        self.pending_broadcast = True

    # -- PreVote (Raft thesis §9.6) ----------------------------------------------------------
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
        return 1 + sum(1 for p in self._voting_peers() if p.voted) >= self.quorum

    # -- CheckQuorum -----------------------------------------------------------------------
    def quorum_active(self) -> bool:
        if not self.config.check_quorum:
            return True
        active = 1 + sum(1 for p in self._voting_peers() if p.recent_active)
        return active >= self.quorum

    def reset_quorum_check(self) -> None:
        for peer in self.record.peers.values():
            peer.recent_active = False

    def step_down(self) -> None:
        self.record.leader_id = None
        self.pending_broadcast = False
        self.reset_election_timer()

    # -- replication, leader side (§5.3) ------------------------------------------------------
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
            if peer.probe_sent and not heartbeat:
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
                          prev_index, prev_term, entries, record.commit_index)
        )
        return prev_index + len(entries)

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
        self.outbox.append(
            AppendEntries(self._msg_id(), record.id, peer.id, record.current_term, record.id,
                          anchor, anchor_term, (), record.commit_index)
        )

    def _send_snapshot(self, peer: Peer, heartbeat: bool) -> None:
        """Chunks go out in a window of max_inflight; each is answered with the offset the
        follower has reached. A repeated offset (a gap) resends that chunk once; a window
        unanswered for an election timeout is sent again."""
        if peer.snapshot is None:
            # the transfer keeps this snapshot even if we compact again meanwhile, or a
            # large snapshot would never finish under frequent compaction
            peer.snapshot = self.snapshot
            assert peer.snapshot is not None, "entries below the log offset exist only in a snapshot"
            peer.probing = True
            peer.probe_sent = True
            peer.stalled = False
            self._restart_snapshot(peer)
            return
        if heartbeat:
            peer.snapshot_wait += 1
            config = self.config
            if peer.snapshot_wait >= max(2, config.election_ticks // config.heartbeat_ticks):
                peer.snapshot_sent = peer.snapshot_acked
                peer.snapshot_resent = -1
                self._pump_snapshot(peer, force=True)

    def _restart_snapshot(self, peer: Peer) -> None:
        peer.snapshot_acked = peer.snapshot_sent = 0
        peer.snapshot_resent = -1
        self._pump_snapshot(peer, force=True)

    def _pump_snapshot(self, peer: Peer, force: bool = False) -> None:
        """Send chunks from snapshot_sent while the window allows (at least one if forced)."""
        snapshot = peer.snapshot
        assert snapshot is not None
        size = len(snapshot.data)
        chunk = max(1, self.config.max_bytes_per_message)
        window = chunk * self.config.max_inflight
        while (force or peer.snapshot_sent < size) and peer.snapshot_sent - peer.snapshot_acked < window:
            peer.snapshot_sent = self._send_chunk(peer, peer.snapshot_sent)
            force = False

    def _send_chunk(self, peer: Peer, offset: int) -> int:
        """Send the chunk at `offset`; return where it ends."""
        snapshot = peer.snapshot
        assert snapshot is not None
        record = self.record
        peer.snapshot_wait = 0
        part = snapshot.data[offset : offset + max(1, self.config.max_bytes_per_message)]
        end = offset + len(part)
        self.outbox.append(
            InstallSnapshot(self._msg_id(), record.id, peer.id, record.current_term, record.id,
                            snapshot.index, snapshot.term, snapshot.configuration, offset,
                            part, end >= len(snapshot.data))
        )
        return end

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
            [p.match_index for p in record.peers.values() if p.can_vote] + [record.log.stable],
            reverse=True,
        )
        candidate = matches[self.quorum - 1]
        if candidate > record.commit_index and record.log.term_at(candidate) == record.current_term:
            record.commit_index = candidate
            return True
        return False

    # -- replication, follower side ----------------------------------------------------------
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
                                   False, 0, message.prev_log_index, conflict_index, conflict_term)
            )
            return
        if entries:
            first = entries[0].index
            if first == log.last_index + 1:
                log.extend(entries)
            else:
                for position, entry in enumerate(entries):
                    index = entry.index
                    if index > log.last_index:
                        log.extend(entries[position:])
                        break
                    if log.term_at(index) != entry.term:
                        assert index > record.commit_index, "a committed entry conflicts"
                        log.truncate_after(index - 1)
                        log.extend(entries[position:])
                        break
        match = prev_index + len(entries)
        if message.leader_commit > record.commit_index:
            record.commit_index = min(message.leader_commit, match)
        self.outbox.append(
            AppendEntriesReply(self._msg_id(), record.id, message.sender, record.current_term,
                               True, match, 0, 0, 0)
        )

    def reject_stale_append_entries(self, message: AppendEntries, /) -> None:
        record = self.record
        self.outbox.append(
            AppendEntriesReply(self._msg_id(), record.id, message.sender, record.current_term,
                               False, 0, message.prev_log_index, 0, 0)
        )

    # -- snapshots (§7) ---------------------------------------------------------------------------
    def snapshot_from_current_leader(self, message: InstallSnapshot, /) -> bool:
        return message.term == self.record.current_term

    def accept_snapshot(self, message: InstallSnapshot, /) -> None:
        record = self.record
        record.leader_id = message.leader_id
        self.election_elapsed = 0
        index = message.last_included_index
        if index <= record.commit_index or record.log.term_at(index) == message.last_included_term:
            # we already hold everything up to the snapshot's last entry (committed here, or
            # present with its term, hence everything before it by Log Matching): keep the
            # log, including what follows, and just commit (§7). Answer once per transfer.
            record.commit_index = max(record.commit_index, index)
            self._snapshot_reply(message, message.offset + len(message.data), True)
            return
        stream = (index, message.last_included_term)
        if message.offset == 0 and stream != self._snapshot_stream:
            self._snapshot_stream = stream  # a new transfer (a repeated first chunk is a duplicate)
            self._snapshot_chunks = bytearray()
        elif stream != self._snapshot_stream:
            # a chunk of a transfer we do not hold: never splice two snapshots together
            self._snapshot_reply(message, 0, False)
            return
        elif message.offset != len(self._snapshot_chunks):
            # a duplicate, or a chunk went missing: say where we are
            self._snapshot_reply(message, len(self._snapshot_chunks), False)
            return
        self._snapshot_chunks += message.data
        if not message.done:
            self._snapshot_reply(message, len(self._snapshot_chunks), False)
            return
        snapshot = Snapshot(index, message.last_included_term, tuple(message.configuration),
                            bytes(self._snapshot_chunks))
        self._snapshot_stream = None
        self._snapshot_chunks = bytearray()
        record.log.restore(snapshot.index, snapshot.term)
        record.commit_index = snapshot.index
        self.snapshot = snapshot
        self.received_snapshot = snapshot
        self._snapshot_reply(message, len(snapshot.data), True)

    def reject_stale_snapshot(self, message: InstallSnapshot, /) -> None:
        self._snapshot_reply(message, 0, False)

    def _snapshot_reply(self, message: InstallSnapshot, next_offset: int, done: bool) -> None:
        record = self.record
        self.outbox.append(
            InstallSnapshotReply(self._msg_id(), record.id, message.sender, record.current_term,
                                 message.last_included_index, next_offset, done)
        )

    def handle_snapshot_reply(self, message: InstallSnapshotReply, /) -> None:
        record = self.record
        peer = record.peers.get(message.sender)
        if peer is None or message.term != record.current_term:
            return
        peer.recent_active = True
        index = message.last_included_index
        if message.done and index > peer.match_index:
            peer.match_index = index  # it holds everything up to the snapshot
            self.maybe_commit()
        if peer.snapshot is None or index != peer.snapshot.index:
            return  # an answer about an earlier transfer, or a duplicate
        if message.done:
            # replicate from what the follower now has
            peer.snapshot = None
            self._back_to_probe(peer, peer.match_index + 1)
            self.replicate(peer)
        elif message.next_offset == 0:
            self._restart_snapshot(peer)  # the follower lost the transfer: start over
        elif message.next_offset > peer.snapshot_acked:
            peer.snapshot_acked = message.next_offset
            peer.snapshot_sent = max(peer.snapshot_sent, message.next_offset)
            self._pump_snapshot(peer)
        elif message.next_offset == peer.snapshot_acked and peer.snapshot_resent != peer.snapshot_acked:
            peer.snapshot_resent = peer.snapshot_acked  # a gap at the follower: fill it once
            self._send_chunk(peer, peer.snapshot_acked)

    # -- clients ----------------------------------------------------------------------------------
    def append_proposal(self, message: Proposal, /) -> None:
        record = self.record
        log = record.log
        term = record.current_term
        first = log.last_index + 1
        index = first
        entries = log.entries
        data_kind = EntryKind.data
        for command in message.commands:
            entries.append(Entry(term, index, data_kind, command))
            index += 1
        self.last_proposal = (first, index - 1, term)
        self.pending_broadcast = True

    def refuse_proposal(self, message: Proposal, /) -> None:
        raise NotLeader(self.record.id, self.record.leader_id)

    # -- failure -----------------------------------------------------------------------------------
    def halt(self, message: FatalError, /) -> None:
        """Storage failed: forget everything not yet handed out and go quiet."""
        record = self.record
        record.halt_reason = message.reason
        record.leader_id = None
        self.outbox.clear()
        self.pending_broadcast = False
        self.received_snapshot = None
